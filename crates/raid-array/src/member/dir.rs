//! The real backend: a directory on an ordinary mounted filesystem, accessed
//! through a capability handle ([`cap_std::fs::Dir`]) opened once, so every
//! path resolves inside the directory that was checked at open time.

use std::io::{self, IoSliceMut};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cap_std::ambient_authority;
use cap_std::fs::{Dir, OpenOptions, OpenOptionsExt};
use std::os::unix::fs::FileExt;
use tracing::{debug, warn};

use super::reserve::{self, Reserve};
use super::{DIRECT_ALIGN, Member, MemberFile, check_relative};

/// A member stored in a directory.
#[derive(Debug)]
pub struct DirMember {
    root: Dir,
    path: PathBuf,
    /// The open directory holding this process's exclusive lock, if taken.
    held: std::sync::Mutex<Option<std::fs::File>>,
    /// The directory opened for `syncfs`, when [`syncfs_trusted`] holds.
    /// Opened once with the member: `syncfs` reports a write-back error
    /// that happened after the descriptor was opened, so one opened for
    /// each call could miss an error another `syncfs` on the same
    /// filesystem had already collected.
    syncfs: Option<std::fs::File>,
    /// Space kept back for the array's own records.
    reserve: Arc<Reserve>,
}

/// Filesystems whose `syncfs` makes every file's written data durable and
/// reports their write-back errors: disk filesystems with their own sync
/// step, on Linux 5.17 or later (5.8 began reporting data write-back
/// errors from `syncfs`, 5.17 those of the filesystem's own sync step).
/// Not FUSE (ntfs-3g, exFAT or NTFS over FUSE, sshfs...): the kernel does
/// not pass `syncfs` on to an ordinary FUSE server, so it returns success
/// having synced nothing; nor network or unknown filesystems. Those sync
/// file by file.
fn syncfs_trusted(fs_type: u64, kernel_release: &str) -> bool {
    const EXT234: u64 = 0xEF53;
    const XFS: u64 = 0x5846_5342;
    const BTRFS: u64 = 0x9123_683E;
    const F2FS: u64 = 0xF2F5_2010;
    const EXFAT: u64 = 0x2011_BAB0;
    const VFAT: u64 = 0x4D44;
    let mut version = kernel_release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let (major, minor) = (version.next().unwrap_or(0), version.next().unwrap_or(0));
    matches!(fs_type, EXT234 | XFS | BTRFS | F2FS | EXFAT | VFAT) && (major, minor) >= (5, 17)
}

/// Filesystems (`statfs` magic) whose `SEEK_DATA` counts dirty pages and
/// delayed allocations as data: ext2/3/4, XFS, Btrfs, tmpfs, F2FS, and
/// overlayfs (which asks the filesystem below, where the pages are).
const SEEK_DATA_TRUSTED: [u64; 6] = [
    0xef53,
    0x5846_5342,
    0x9123_683e,
    0x0102_1994,
    0xf2f5_2010,
    0x794c_7630,
];

/// The directory `root` opened for `syncfs` if its filesystem qualifies.
fn open_for_syncfs(root: &Dir) -> Option<std::fs::File> {
    // The root handle is a path-only descriptor, which `syncfs` refuses.
    let dir = root.open(".").ok()?.into_std();
    let fs_type = rustix::fs::fstatfs(&dir).ok()?.f_type as u64 & 0xffff_ffff;
    let uname = rustix::system::uname();
    let release = uname.release().to_string_lossy();
    syncfs_trusted(fs_type, &release).then_some(dir)
}

/// The mount `dir` is on, from `statx` with `STATX_MNT_ID` (Linux 5.8);
/// `None` on older kernels.
fn mount_id_of(dir: impl rustix::fd::AsFd) -> io::Result<Option<u64>> {
    use rustix::fs::{AtFlags, StatxFlags};
    let st = rustix::fs::statx(dir, "", AtFlags::EMPTY_PATH, StatxFlags::MNT_ID)?;
    Ok((st.stx_mask & StatxFlags::MNT_ID.bits() != 0).then_some(st.stx_mnt_id))
}

/// The mount the directory at `path` is on now (see [`Member::mount_id`]).
pub fn mount_id(path: &Path) -> io::Result<Option<u64>> {
    mount_id_of(std::fs::File::open(path)?)
}

impl DirMember {
    /// Open an existing directory as a member root. The directory is held
    /// open: if its filesystem is later unmounted, operations fail instead of
    /// landing on whatever is mounted below.
    pub fn open(path: &Path) -> io::Result<Self> {
        let root = Dir::open_ambient_dir(path, ambient_authority()).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot open member directory {}: {e}", path.display()),
            )
        })?;
        Ok(DirMember {
            syncfs: open_for_syncfs(&root),
            root,
            path: path.to_path_buf(),
            held: std::sync::Mutex::new(None),
            reserve: Arc::default(),
        })
    }

    /// The reserve that writes to `path` may fall back on: for the array's
    /// own records, not for file data.
    fn reserve_for(&self, path: &str) -> Option<Arc<Reserve>> {
        reserve::is_record(path).then(|| Arc::clone(&self.reserve))
    }

    /// The directory this member was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// An open file; one holding the array's own records writes through the
/// member's reserve ([`super::reserve`]).
struct DirFile(std::fs::File, Option<Arc<Reserve>>);

impl MemberFile for DirFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match self.0.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    fn read_vectored_at(&self, offset: u64, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        // Advanced past what each call read; the caller's list stays as given.
        let mut local: Vec<IoSliceMut<'_>> = bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
        let mut bufs = &mut local[..];
        let mut done = 0;
        while !bufs.is_empty() {
            match rustix::io::preadv(&self.0, bufs, offset + done as u64) {
                Ok(0) => break,
                Ok(n) => {
                    done += n;
                    IoSliceMut::advance_slices(&mut bufs, n);
                }
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(done)
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        match &self.1 {
            Some(r) => r.retry(|| self.0.write_all_at(data, offset)),
            None => self.0.write_all_at(data, offset),
        }
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        match &self.1 {
            Some(r) => r.retry(|| self.0.set_len(len)),
            None => self.0.set_len(len),
        }
    }

    fn next_data(&self, offset: u64) -> io::Result<Option<u64>> {
        // Only where `SEEK_DATA` is known to see data still in the page
        // cache: a FUSE filesystem passes it on without writing its dirty
        // pages back first, and older ZFS could call fresh data a hole.
        let fs_type = rustix::fs::fstatfs(&self.0)?.f_type as u64 & 0xffff_ffff;
        if !SEEK_DATA_TRUSTED.contains(&fs_type) {
            return Ok(Some(offset));
        }
        match rustix::fs::seek(&self.0, rustix::fs::SeekFrom::Data(offset)) {
            Ok(at) => Ok(Some(at)),
            // Nothing but holes from `offset` to the end of the file.
            Err(rustix::io::Errno::NXIO) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        use rustix::fs::FallocateFlags;
        let flags = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
        rustix::fs::fallocate(&self.0, flags, offset, len).map_err(|e| {
            if e == rustix::io::Errno::OPNOTSUPP {
                io::ErrorKind::Unsupported.into()
            } else {
                io::Error::from(e)
            }
        })
    }

    fn allocate(&self, offset: u64, len: u64) -> io::Result<()> {
        let Some(len) = std::num::NonZeroU64::new(len) else {
            return Ok(());
        };
        match rustix::fs::fallocate(
            &self.0,
            rustix::fs::FallocateFlags::KEEP_SIZE,
            offset,
            len.get(),
        ) {
            // FAT before Linux 4.19: the write finds out.
            Err(rustix::io::Errno::OPNOTSUPP) => Ok(()),
            r => r.map_err(io::Error::from),
        }
    }

    fn write_behind(&self, upto: u64) -> io::Result<()> {
        // Linux starts write-back of the range's dirty pages (without
        // waiting) and drops its clean ones.
        let Some(len) = std::num::NonZeroU64::new(upto) else {
            return Ok(());
        };
        rustix::fs::fadvise(&self.0, 0, Some(len), rustix::fs::Advice::DontNeed)?;
        Ok(())
    }
}

/// A file opened twice: with `O_DIRECT` for aligned writes and without it
/// for everything else (reads, unaligned writes, and all writes after the
/// filesystem refused a direct one). Both descriptors refer to one inode,
/// and the kernel keeps them coherent: a direct write first writes back
/// and drops the page-cache pages of its range.
struct DirectFile {
    /// `None` when the filesystem refused `O_DIRECT` at open.
    direct: Option<std::fs::File>,
    buffered: DirFile,
    /// Cleared for good when a direct write fails with EINVAL.
    use_direct: AtomicBool,
}

fn aligned(offset: u64, data: &[u8]) -> bool {
    let a = DIRECT_ALIGN as u64;
    offset.is_multiple_of(a)
        && data.len().is_multiple_of(DIRECT_ALIGN)
        && data.as_ptr().align_offset(DIRECT_ALIGN) == 0
}

impl DirectFile {
    /// Write all of `data` (aligned) at `offset` through the direct
    /// descriptor. What the filesystem refuses (EINVAL), and the unaligned
    /// rest of a short write (e.g. near a full disk), goes through the page
    /// cache instead.
    fn write_direct(&self, f: &std::fs::File, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut done = 0;
        while done < data.len() {
            let (at, rest) = (offset + done as u64, &data[done..]);
            if !aligned(at, rest) {
                return self.buffered.write_at(at, rest);
            }
            match f.write_at(rest, at) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
                    warn!(error = %e, "direct write refused; writing through the page cache");
                    self.use_direct.store(false, Ordering::Relaxed);
                    return self.buffered.write_at(at, rest);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl MemberFile for DirectFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.buffered.read_at(offset, buf)
    }

    fn read_vectored_at(&self, offset: u64, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        self.buffered.read_vectored_at(offset, bufs)
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        match &self.direct {
            Some(f) if self.use_direct.load(Ordering::Relaxed) && aligned(offset, data) => {
                self.write_direct(f, offset, data)
            }
            _ => self.buffered.write_at(offset, data),
        }
    }

    fn sync_data(&self) -> io::Result<()> {
        self.buffered.sync_data()
    }

    fn len(&self) -> io::Result<u64> {
        self.buffered.len()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.buffered.set_len(len)
    }

    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        self.buffered.punch_hole(offset, len)
    }

    fn next_data(&self, offset: u64) -> io::Result<Option<u64>> {
        self.buffered.next_data(offset)
    }

    fn allocate(&self, offset: u64, len: u64) -> io::Result<()> {
        self.buffered.allocate(offset, len)
    }

    fn write_behind(&self, upto: u64) -> io::Result<()> {
        self.buffered.write_behind(upto)
    }

    fn is_direct(&self) -> bool {
        self.direct.is_some() && self.use_direct.load(Ordering::Relaxed)
    }
}

fn parent(path: &str) -> Option<&str> {
    path.rsplit_once('/').map(|(p, _)| p)
}

impl Member for DirMember {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn open(&self, path: &str) -> io::Result<Arc<dyn MemberFile>> {
        check_relative(path)?;
        let f = self
            .root
            .open_with(path, OpenOptions::new().read(true).write(true))?;
        Ok(Arc::new(DirFile(f.into_std(), self.reserve_for(path))))
    }

    fn open_direct(&self, path: &str) -> io::Result<Arc<dyn MemberFile>> {
        check_relative(path)?;
        let buffered = self
            .root
            .open_with(path, OpenOptions::new().read(true).write(true))?
            .into_std();
        let direct = match self.root.open_with(
            path,
            OpenOptions::new()
                .write(true)
                .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32),
        ) {
            Ok(f) => Some(f.into_std()),
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
                debug!(member = %self.path.display(), path, "no O_DIRECT here; writes go through the page cache");
                None
            }
            Err(e) => return Err(e),
        };
        let use_direct = AtomicBool::new(direct.is_some());
        Ok(Arc::new(DirectFile {
            direct,
            buffered: DirFile(buffered, None),
            use_direct,
        }))
    }

    fn create(&self, path: &str) -> io::Result<Arc<dyn MemberFile>> {
        self.create_with(path, false)
    }

    fn sync_all(&self) -> io::Result<()> {
        match &self.syncfs {
            Some(dir) => rustix::fs::syncfs(dir).map_err(io::Error::from),
            None => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "syncfs is not trusted on this filesystem or kernel",
            )),
        }
    }

    /// One `open` with `O_TRUNC`, not an open and a truncate.
    fn create_empty(&self, path: &str) -> io::Result<Arc<dyn MemberFile>> {
        self.create_with(path, true)
    }

    fn exists(&self, path: &str) -> io::Result<bool> {
        check_relative(path)?;
        self.root.try_exists(path)
    }

    fn remove(&self, path: &str) -> io::Result<()> {
        check_relative(path)?;
        match self.root.remove_file(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        check_relative(from)?;
        check_relative(to)?;
        self.root.rename(from, &self.root, to)?;
        self.sync_parent(to)
    }

    fn list(&self, path: &str) -> io::Result<Vec<String>> {
        check_relative(path)?;
        let rd = match self.root.read_dir(path) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut names = Vec::new();
        for entry in rd {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    fn write_atomic(&self, path: &str, data: &[u8]) -> io::Result<()> {
        check_relative(path)?;
        let tmp = format!("{path}.tmp");
        let write = || {
            let f = self.create(&tmp)?;
            f.set_len(0)?;
            f.write_at(0, data)?;
            f.sync_data()
        };
        let written = match self.reserve_for(path) {
            Some(r) => r.retry(write),
            None => write(),
        };
        if let Err(e) = written {
            // A half-written copy must not keep the space it took.
            let _ = self.remove(&tmp);
            return Err(e);
        }
        self.rename(&tmp, path)
    }

    fn read_all(&self, path: &str) -> io::Result<Vec<u8>> {
        check_relative(path)?;
        self.root.read(path)
    }

    fn space(&self) -> io::Result<(u64, u64)> {
        let f = self.root.open(".")?.into_std();
        let st = rustix::fs::fstatvfs(&f).map_err(io::Error::from)?;
        Ok((st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize))
    }

    /// The device number of the root: shared by every directory of one
    /// filesystem (bind mounts included).
    fn filesystem_id(&self) -> io::Result<Option<u64>> {
        let f = self.root.open(".")?.into_std();
        let st = rustix::fs::fstat(&f).map_err(io::Error::from)?;
        Ok(Some(st.st_dev))
    }

    /// Make the reserve whole if there is room ([`Reserve::restore`]).
    fn restore_reserve(&self) -> io::Result<bool> {
        if self.reserve.whole() {
            return Ok(true);
        }
        let (total, avail) = self.space()?;
        self.reserve.restore(reserve::size(total), avail, || {
            Ok(self
                .root
                .open_with(
                    reserve::PATH,
                    OpenOptions::new().read(true).write(true).create(true),
                )?
                .into_std())
        })
    }

    fn short_of_space(&self) -> bool {
        self.reserve.spent()
    }

    fn release_reserve(&self) -> bool {
        self.reserve.release_for_redundancy()
    }

    /// The mount of the root as opened: still the old one after its
    /// filesystem was unmounted lazily (the descriptor keeps it alive).
    fn mount_id(&self) -> io::Result<Option<u64>> {
        mount_id_of(&self.root)
    }

    /// An exclusive `flock` on the root, through a descriptor of its own
    /// (a lock belongs to one open file description).
    fn lock_exclusive(&self, wait: std::time::Duration) -> io::Result<bool> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if held.is_some() {
            return Ok(true);
        }
        let f = self.root.open(".")?.into_std();
        let got = crate::exclusive::lock_dir(&f, &self.path, wait)?;
        if got {
            *held = Some(f);
        }
        Ok(got)
    }

    fn unlock(&self) {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

impl DirMember {
    fn create_with(&self, path: &str, truncate: bool) -> io::Result<Arc<dyn MemberFile>> {
        check_relative(path)?;
        let mut opts = OpenOptions::new();
        opts.read(true).write(true).create(true).truncate(truncate);
        // The parent usually exists (a shard directory is made once): try
        // the file first, and make the directories only when it is missing.
        // Making them every time cost a `mkdir` per path component and a
        // `stat` for each shard file of every new file.
        let open = || match self.root.open_with(path, &opts) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Some(p) = parent(path) {
                    self.root.create_dir_all(p)?;
                }
                self.root.open_with(path, &opts)
            }
            r => r,
        };
        let reserve = self.reserve_for(path);
        let f = match &reserve {
            Some(r) => r.retry(open)?,
            None => open()?,
        };
        Ok(Arc::new(DirFile(f.into_std(), reserve)))
    }

    fn sync_parent(&self, path: &str) -> io::Result<()> {
        let dir = match parent(path) {
            Some(p) => self.root.open_dir(p)?,
            None => self.root.try_clone()?,
        };
        dir.open(".")?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(seed: u8, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect()
    }

    /// `create` makes missing directories on the way, opens an existing
    /// file without truncating it, and makes a file beside it in a
    /// directory that exists.
    #[test]
    fn create_makes_directories_only_when_missing_and_keeps_contents_unless_asked_to_empty() {
        let d = tempfile::tempdir().unwrap();
        let m = DirMember::open(d.path()).unwrap();
        let f = m.create("x/y/z/f").unwrap();
        f.write_at(0, b"kept").unwrap();
        drop(f);
        let again = m.create("x/y/z/f").unwrap();
        let mut buf = [0u8; 4];
        assert_eq!(again.read_at(0, &mut buf).unwrap(), 4);
        assert_eq!(&buf, b"kept");
        m.create("x/y/z/g").unwrap();
        assert!(d.path().join("x/y/z/g").is_file());
        assert!(m.create("../escape").is_err());
        let emptied = m.create_empty("x/y/z/f").unwrap();
        assert_eq!(emptied.len().unwrap(), 0);
        assert_eq!(m.create_empty("x/new/f").unwrap().len().unwrap(), 0);
        assert!(m.create_empty("../escape").is_err());
    }

    /// A write-back request changes no byte and needs no sync to be
    /// followed by more writes; the data reads back whole after it.
    #[test]
    fn write_behind_keeps_the_files_bytes() {
        let d = tempfile::tempdir().unwrap();
        let m = DirMember::open(d.path()).unwrap();
        let f = m.create("a/f").unwrap();
        let data = pattern(3, 3 << 20);
        f.write_at(0, &data[..2 << 20]).unwrap();
        f.write_behind(0).unwrap();
        f.write_behind(1 << 20).unwrap();
        f.write_at(2 << 20, &data[2 << 20..]).unwrap();
        f.write_behind(8 << 20).unwrap();
        let direct = m.open_direct("a/f").unwrap();
        direct.write_behind(3 << 20).unwrap();
        let mut back = vec![0u8; data.len()];
        assert_eq!(f.read_at(0, &mut back).unwrap(), data.len());
        assert!(back == data, "write-back request changed the file");
    }

    /// A vectored read fills its buffers in order from consecutive bytes,
    /// through either kind of handle, and stops short only at the end of
    /// the file, as the default (one `read_at` per buffer) does.
    #[test]
    fn vectored_reads_fill_buffers_in_order_and_stop_at_the_end() {
        let d = tempfile::tempdir().unwrap();
        let m = DirMember::open(d.path()).unwrap();
        let f = m.create("a/f").unwrap();
        let data = pattern(5, 300_000);
        f.write_at(0, &data).unwrap();
        let direct = m.open_direct("a/f").unwrap();
        for handle in [&f, &direct] {
            let (mut a, mut b, mut c) = (vec![0u8; 4096], vec![0u8; 65536], vec![1u8; 100_000]);
            let n = handle
                .read_vectored_at(
                    1000,
                    &mut [
                        IoSliceMut::new(&mut a),
                        IoSliceMut::new(&mut b),
                        IoSliceMut::new(&mut c),
                    ],
                )
                .unwrap();
            assert_eq!(n, 4096 + 65536 + 100_000);
            assert!(a == data[1000..5096] && b == data[5096..70632]);
            assert!(c == data[70632..170_632]);
            // Across the end: the second buffer is cut, the third untouched,
            // and the caller's list of buffers is left as it was given.
            let (mut a, mut b, mut c) = (vec![0u8; 8192], vec![0u8; 65536], vec![7u8; 10]);
            let at = 300_000 - 8192 - 1000;
            let mut list = [
                IoSliceMut::new(&mut a),
                IoSliceMut::new(&mut b),
                IoSliceMut::new(&mut c),
            ];
            let n = handle.read_vectored_at(at as u64, &mut list).unwrap();
            assert_eq!(list.map(|b| b.len()), [8192, 65536, 10]);
            assert_eq!(n, 8192 + 1000);
            assert!(a == data[at..at + 8192] && b[..1000] == data[at + 8192..]);
            assert!(b[1000..].iter().all(|&x| x == 0) && c == [7u8; 10]);
            let n = handle
                .read_vectored_at(400_000, &mut [IoSliceMut::new(&mut a)])
                .unwrap();
            assert_eq!(n, 0);
        }
    }

    /// Aligned writes through a direct handle, unaligned ones (buffer
    /// address, offset, length) and ordinary writes to the same file all
    /// land: reads through either handle see the last write of every byte.
    #[test]
    fn direct_handle_takes_aligned_and_unaligned_writes() {
        let d = tempfile::tempdir().unwrap();
        let m = DirMember::open(d.path()).unwrap();
        let plain = m.create("a/f").unwrap();
        let direct = m.open_direct("a/f").unwrap();
        let mut expect = vec![0u8; 5 * 65536];
        // Aligned: a window of an over-allocated buffer starting on 4 KiB.
        let mut raw = vec![0u8; 2 * 65536 + DIRECT_ALIGN];
        let at = raw.as_ptr().align_offset(DIRECT_ALIGN);
        let win = &mut raw[at..at + 2 * 65536];
        win.copy_from_slice(&pattern(1, 2 * 65536));
        direct.write_at(65536, win).unwrap();
        expect[65536..3 * 65536].copy_from_slice(win);
        // Unaligned address, then unaligned offset and length.
        let odd = &raw[at + 1..at + 1 + 8192];
        direct.write_at(0, odd).unwrap();
        expect[..8192].copy_from_slice(odd);
        let p = pattern(2, 1000);
        direct.write_at(70_001, &p).unwrap();
        expect[70_001..71_001].copy_from_slice(&p);
        // An ordinary write over part of a direct one, then a direct one
        // over part of the ordinary one.
        let q = pattern(3, 4096);
        plain.write_at(2 * 65536, &q).unwrap();
        expect[2 * 65536..2 * 65536 + 4096].copy_from_slice(&q);
        let win = &mut raw[at..at + 65536];
        win.copy_from_slice(&pattern(4, 65536));
        direct.write_at(4 * 65536, win).unwrap();
        expect[4 * 65536..].copy_from_slice(win);
        direct.sync_data().unwrap();

        for f in [&plain, &direct] {
            let mut back = vec![0u8; expect.len()];
            assert_eq!(f.read_at(0, &mut back).unwrap(), expect.len());
            assert!(back == expect, "file content differs");
        }
        assert_eq!(direct.len().unwrap(), expect.len() as u64);
        assert!(!plain.is_direct());
    }

    #[test]
    fn syncfs_is_trusted_only_on_disk_filesystems_of_recent_kernels() {
        assert!(syncfs_trusted(0xEF53, "6.1.0-18-arm64"));
        assert!(syncfs_trusted(0x5846_5342, "5.17.0"));
        assert!(syncfs_trusted(0x2011_BAB0, "6.6.31+rpt-rpi-v8"));
        assert!(!syncfs_trusted(0x6573_5546, "6.6.31"), "FUSE");
        assert!(!syncfs_trusted(0x6969, "6.6.31"), "NFS");
        assert!(!syncfs_trusted(0xEF53, "5.10.0-28-arm64"), "before 5.17");
        assert!(!syncfs_trusted(0xEF53, ""), "unknown kernel");
    }

    /// On a trusted filesystem the member syncs it whole; elsewhere it says
    /// so, and callers sync file by file.
    #[test]
    fn sync_all_syncs_the_filesystem_or_reports_unsupported() {
        let d = tempfile::tempdir().unwrap();
        let m = DirMember::open(d.path()).unwrap();
        m.create("a/f").unwrap().write_at(0, b"x").unwrap();
        match m.sync_all() {
            Ok(()) => assert!(m.syncfs.is_some()),
            Err(e) => {
                assert_eq!(e.kind(), io::ErrorKind::Unsupported);
                assert!(m.syncfs.is_none());
            }
        }
    }
}
