//! The FUSE adapter: each `fuser::Filesystem` method is one tracing span,
//! one engine call and one reply or errno. Nothing here decides filesystem
//! semantics; the engine ([`raid_array::Array`]) does, and is tested on its
//! own.
//!
//! Kernel side: the adapter asks for 1 MiB writes, the writeback cache
//! (the kernel gathers small writes and handles `O_APPEND`), parallel
//! directory operations, readdirplus and asynchronous reads, and mounts with
//! `default_permissions` so the kernel checks mode bits, ownership for
//! chmod/chown and sticky directories against the attributes we return.
//! POSIX and BSD locks are left to the kernel (we do not negotiate
//! `FUSE_POSIX_LOCKS`/`FUSE_FLOCK_LOCKS`), which is exact for a filesystem
//! that only this machine mounts.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::nearfull::NearFull;
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    IoctlFlags, KernelConfig, LockOwner, Notifier, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyOpen,
    ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use raid_array::{Array, ArrayError, Attr, FileKind, SetAttr, TimeSet};
use tracing::{debug, warn};

/// How long the kernel may cache names and attributes by default
/// (`cache_timeout=`). The namespace only changes through this
/// mount (the members are locked while it is mounted, docs/SEMANTICS.md
/// item 24), and the kernel updates its caches on every change it sends;
/// the few attribute changes it does not see are pushed to it
/// ([`RaidFs::attributes_changed`]). So the timeout only bounds the damage
/// of a change that is missed, and it can be long: each expired name costs
/// a LOOKUP round trip (with the 1 s that libfuse uses, an `rm` of files
/// listed a second earlier sent a LOOKUP before each UNLINK).
pub const DEFAULT_CACHE_TIMEOUT: Duration = Duration::from_secs(3600);

/// Largest write the kernel sends in one request.
pub const MAX_WRITE: u32 = 1 << 20;

/// fallocate(2) modes we handle.
const FALLOC_FL_KEEP_SIZE: i32 = 0x01;
const FALLOC_FL_PUNCH_HOLE: i32 = 0x02;

/// The mounted filesystem.
pub struct RaidFs {
    array: Arc<Array>,
    read_only: bool,
    /// Whether FLUSH may be refused with ENOSYS (see [`Filesystem::flush`]).
    skip_flush: bool,
    /// How long the kernel may cache names and attributes.
    ttl: Duration,
    /// The session's channel for invalidations, set once it is mounted.
    notifier: Arc<OnceLock<Notifier>>,
    /// The kernel left clearing set-user-ID and set-group-ID bits to us
    /// (`FUSE_HANDLE_KILLPRIV_V2`, see [`Filesystem::init`]).
    clears_setid: bool,
    /// Files opened for writing near a full array bypass the page cache
    /// ([`crate::nearfull`]); only where the kernel still allows shared
    /// `mmap` of such files (`FUSE_DIRECT_IO_ALLOW_MMAP`, Linux 6.6).
    direct_when_full: bool,
    near_full: NearFull,
}

impl RaidFs {
    /// `notifier` is filled in by the caller once the session exists.
    pub fn new(
        array: Arc<Array>,
        read_only: bool,
        ttl: Duration,
        notifier: Arc<OnceLock<Notifier>>,
    ) -> Self {
        let release = rustix::system::uname()
            .release()
            .to_string_lossy()
            .into_owned();
        RaidFs {
            array,
            read_only,
            skip_flush: kernel_flushes_without_flush(&release),
            ttl,
            notifier,
            clears_setid: false,
            direct_when_full: false,
            near_full: NearFull::default(),
        }
    }

    /// How a file opened now for writing (`writing`) travels: through the
    /// page cache, which stays valid across opens (nobody else changes the
    /// array behind the kernel's back), or straight to the array when it
    /// is nearly full, so that ENOSPC reaches the `write(2)` that caused it.
    fn open_flags(&self, writing: bool) -> FopenFlags {
        if writing && self.direct_when_full && self.near_full.near_full(&self.array) {
            debug!("array nearly full: file opened for direct I/O");
            FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_DIRECT_IO
        } else {
            FopenFlags::FOPEN_KEEP_CACHE
        }
    }

    /// Whether a truncate or `fallocate` by `req`'s caller clears set-ID
    /// bits. Linux clears them unless the caller holds `CAP_FSETID`; the
    /// kernel tells the filesystem so (`FATTR_KILL_SUIDGID`,
    /// `FUSE_OPEN_KILL_SUIDGID`), but the FUSE library does not pass that
    /// on, so root (uid 0) stands for the capability. Writes carry their
    /// own flag, which the library does pass on ([`Filesystem::write`]).
    fn truncate_clears_setid(&self, req: &Request) -> bool {
        self.clears_setid && req.uid() != 0
    }

    /// Only the owner (or root) changes a file's POSIX ACLs. Linux checks
    /// this itself from 6.2; before, without `FUSE_POSIX_ACL`, it passed
    /// `system.*` attributes through unchecked, and an ACL now sets the
    /// mode bits.
    fn may_set_acl(&self, req: &Request, ino: u64, name: &OsStr) -> Result<(), Errno> {
        let n = name.as_bytes();
        if n != raid_array::acl::ACCESS_XATTR && n != b"system.posix_acl_default" {
            return Ok(());
        }
        let owner = self.array.getattr(ino).map_err(|e| errno(&e))?.uid;
        if req.uid() == 0 || req.uid() == owner {
            Ok(())
        } else {
            Err(Errno::EPERM)
        }
    }

    /// Tell the kernel that `ino`'s attributes changed in a way its caches
    /// do not follow by themselves. The kernel drops its own copy of what
    /// its requests change (the parent directory after a create or unlink,
    /// ctime after an xattr change, the access time after a read, size and
    /// blocks after `fallocate`, the block count at `close`), and with the
    /// writeback cache it keeps size and times itself; what remains is the
    /// block count of a file that writes grew and that is `fsync`ed while
    /// open. Offset -1: attributes only, no page is touched, so this is
    /// safe from inside a request.
    fn attributes_changed(&self, ino: u64) {
        if let Some(n) = self.notifier.get()
            && let Err(e) = n.inval_inode(INodeNo(ino), -1, 0)
        {
            debug!(ino, error = %e, "cannot invalidate the kernel's attributes");
        }
    }
}

/// Whether this kernel writes a file's dirty pages back at `close` even when
/// the filesystem refused FLUSH: from Linux 5.14 ("fuse: always flush dirty
/// data on close(2)"). Before that, a refused FLUSH also skipped the
/// write-back, and with the writeback cache `close` would no longer report
/// write errors.
fn kernel_flushes_without_flush(release: &str) -> bool {
    let mut nums = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let major = nums.next().unwrap_or(0);
    let minor = nums.next().unwrap_or(0);
    (major, minor) >= (5, 14)
}

fn errno(e: &ArrayError) -> Errno {
    let n = Errno::from_i32(e.errno());
    if n == Errno::EIO {
        warn!(error = %e, "I/O error");
    } else {
        debug!(error = %e, "request failed");
    }
    n
}

fn file_type(k: FileKind) -> FileType {
    match k {
        FileKind::File => FileType::RegularFile,
        FileKind::Dir => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::CharDev => FileType::CharDevice,
        FileKind::BlockDev => FileType::BlockDevice,
        FileKind::Socket => FileType::Socket,
    }
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks,
        atime: a.atime,
        mtime: a.mtime,
        ctime: a.ctime,
        crtime: a.ctime,
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: a.blksize,
        flags: 0,
    }
}

fn time_set(t: TimeOrNow) -> TimeSet {
    match t {
        TimeOrNow::Now => TimeSet::Now,
        TimeOrNow::SpecificTime(t) => TimeSet::At(t),
    }
}

const GEN: Generation = Generation(0);

impl RaidFs {
    fn writable(&self) -> Result<(), Errno> {
        if self.read_only {
            Err(Errno::EROFS)
        } else {
            Ok(())
        }
    }

    /// Reply with an entry; the kernel holds a reference to it from then
    /// on, until its `FORGET` ([`Array::remember`]).
    fn entry(&self, r: raid_array::Result<Attr>, reply: ReplyEntry) {
        match r {
            Ok(a) => {
                self.array.remember(a.ino);
                reply.entry(&self.ttl, &file_attr(&a), GEN)
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn empty(r: raid_array::Result<()>, reply: ReplyEmpty) {
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }
}

impl Filesystem for RaidFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(MAX_WRITE);
        let _ = config.set_max_readahead(MAX_WRITE);
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        let wanted = [
            InitFlags::FUSE_ASYNC_READ,
            InitFlags::FUSE_BIG_WRITES,
            InitFlags::FUSE_MAX_PAGES,
            InitFlags::FUSE_WRITEBACK_CACHE,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_READDIRPLUS_AUTO,
            InitFlags::FUSE_ASYNC_DIO,
            InitFlags::FUSE_ATOMIC_O_TRUNC,
            InitFlags::FUSE_CACHE_SYMLINKS,
        ];
        for flag in wanted {
            if let Err(missing) = config.add_capabilities(flag) {
                debug!(?missing, "kernel lacks capability");
            }
        }
        // Clearing set-ID bits on write, truncate and chown is ours: the
        // kernel then marks the superblock SB_NOSEC, and stops asking for
        // `security.capability` (a GETXATTR round trip) before every
        // `write(2)` of a file it has once found without set-ID bits or
        // capabilities. Without it, writes of 4 KiB ran at a fifth of the
        // speed.
        self.clears_setid = config
            .add_capabilities(InitFlags::FUSE_HANDLE_KILLPRIV_V2)
            .is_ok();
        self.direct_when_full = config
            .add_capabilities(InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP)
            .is_ok();
        tracing::info!(abi = ?config.kernel_abi(), "FUSE session initialised");
        Ok(())
    }

    fn destroy(&mut self) {
        if let Err(e) = self.array.sync_metadata() {
            warn!(error = %e, "flushing metadata at unmount failed");
        }
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.entry(self.array.lookup(parent.0, name), reply);
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        if let Err(e) = self.array.forget(ino.0, nlookup) {
            warn!(ino = ino.0, error = %e, "freeing a forgotten orphan failed");
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.array.getattr(ino.0) {
            Ok(a) => reply.attr(&self.ttl, &file_attr(&a)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        if let Err(e) = self.writable() {
            return reply.error(e);
        }
        let set = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(time_set),
            mtime: mtime.map(time_set),
            // A change of owner clears them whoever asks, as on Linux.
            clear_setid: (size.is_some() && self.truncate_clears_setid(req))
                || (self.clears_setid && (uid.is_some() || gid.is_some())),
            grow_only: false,
        };
        match self.array.setattr(ino.0, &set) {
            Ok(a) => reply.attr(&self.ttl, &file_attr(&a)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.array.readlink(ino.0) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        if let Err(e) = self.writable() {
            return reply.error(e);
        }
        self.entry(
            self.array
                .mknod(parent.0, name, mode & !umask, rdev, req.uid(), req.gid()),
            reply,
        );
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        if let Err(e) = self.writable() {
            return reply.error(e);
        }
        self.entry(
            self.array
                .mkdir(parent.0, name, mode & !umask, req.uid(), req.gid()),
            reply,
        );
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        if let Err(e) = self.writable() {
            return reply.error(e);
        }
        Self::empty(self.array.unlink(parent.0, name), reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        if let Err(e) = self.writable() {
            return reply.error(e);
        }
        Self::empty(self.array.rmdir(parent.0, name), reply);
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        if let Err(e) = self.writable() {
            return reply.error(e);
        }
        self.entry(
            self.array.symlink(
                parent.0,
                link_name,
                target.as_os_str(),
                req.uid(),
                req.gid(),
            ),
            reply,
        );
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if let Err(e) = self.writable() {
            return reply.error(e);
        }
        if flags.contains(RenameFlags::RENAME_WHITEOUT) {
            return reply.error(Errno::EINVAL);
        }
        Self::empty(
            self.array
                .rename(parent.0, name, newparent.0, newname, flags.bits()),
            reply,
        );
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        if let Err(e) = self.writable() {
            return reply.error(e);
        }
        self.entry(self.array.link(ino.0, newparent.0, newname), reply);
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let acc = flags.0 & 0o3;
        if self.read_only && acc != 0 {
            return reply.error(Errno::EROFS);
        }
        if let Err(e) = self.array.open(ino.0) {
            return reply.error(errno(&e));
        }
        // With FUSE_ATOMIC_O_TRUNC the kernel leaves O_TRUNC to us and
        // already takes the file as empty: truncate here, or the old bytes
        // past what is written next come back.
        // Linux truncates on O_TRUNC whatever the access mode, once the
        // kernel has checked write permission.
        if (flags.0 as u32) & rustix::fs::OFlags::TRUNC.bits() != 0 {
            let clear_setid = self.truncate_clears_setid(req);
            let before = if clear_setid {
                self.array.getattr(ino.0).map(|a| a.perm).ok()
            } else {
                None
            };
            let set = SetAttr {
                size: Some(0),
                clear_setid,
                ..SetAttr::default()
            };
            match self.array.setattr(ino.0, &set) {
                // The kernel takes the file as empty by itself, but not a
                // mode the daemon changed.
                Ok(a) if before.is_some_and(|p| p != a.perm) => self.attributes_changed(ino.0),
                Ok(_) => {}
                Err(e) => {
                    let _ = self.array.release(ino.0);
                    return reply.error(errno(&e));
                }
            }
        }
        reply.opened(FileHandle(0), self.open_flags(acc != 0))
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.array.read(ino.0, offset, size as usize) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        if let Err(e) = self.writable() {
            return reply.error(e);
        }
        // The kernel flags every write it sends straight through (not from
        // its cache) for a caller without CAP_FSETID; it sends writes to a
        // file with set-ID bits that way. Its cached mode does not follow
        // what the daemon clears: tell it.
        let r = if self.clears_setid && write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID) {
            self.array
                .write_unprivileged(ino.0, offset, data)
                .map(|(n, cleared)| {
                    if cleared {
                        self.attributes_changed(ino.0);
                    }
                    n
                })
        } else {
            self.array.write(ino.0, offset, data)
        };
        match r {
            Ok(n) => reply.written(n as u32),
            Err(e) => {
                let n = errno(&e);
                if n == Errno::ENOSPC {
                    self.near_full.note_refused();
                }
                reply.error(n)
            }
        }
    }

    /// Nothing to do at close: WRITEs reach the members as they come, the
    /// kernel writes dirty pages back (and reports their errors) before it
    /// would send FLUSH (from Linux 5.14; older kernels get an answer), and
    /// POSIX locks are the kernel's own. ENOSYS tells the kernel so once,
    /// and it stops sending FLUSH: one round trip less per `close`.
    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        if self.skip_flush {
            reply.error(Errno::ENOSYS);
        } else {
            reply.ok();
        }
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        Self::empty(self.array.release(ino.0), reply);
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let r = self.array.fsync(ino.0, datasync);
        // Before the reply, so that a stat after fsync returns sees it.
        if r.is_ok() {
            self.attributes_changed(ino.0);
        }
        Self::empty(r, reply);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.array.getattr(ino.0) {
            Ok(a) if a.kind == FileKind::Dir => reply.opened(FileHandle(0), FopenFlags::empty()),
            Ok(_) => reply.error(Errno::ENOTDIR),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        match self.array.readdir(ino.0, offset, 512) {
            Ok(entries) => {
                for e in entries {
                    if reply.add(
                        INodeNo(e.ino),
                        e.offset,
                        file_type(e.kind),
                        OsStr::from_bytes(&e.name),
                    ) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        match self.array.readdir(ino.0, offset, 256) {
            Ok(entries) => {
                let mut named = Vec::with_capacity(entries.len());
                for e in entries {
                    let attr = match self.array.getattr(e.ino) {
                        Ok(a) => a,
                        // Removed between listing and stat: skip it.
                        Err(ArrayError::NotFound) => continue,
                        Err(err) => return reply.error(errno(&err)),
                    };
                    let name = OsStr::from_bytes(&e.name);
                    let attr = file_attr(&attr);
                    if reply.add(INodeNo(e.ino), e.offset, name, &self.ttl, &attr, GEN) {
                        break;
                    }
                    // The kernel takes a reference to every entry but these.
                    if name != "." && name != ".." {
                        named.push(e.ino);
                    }
                }
                // Counted once the reply cannot turn into an error.
                for ino in named {
                    self.array.remember(ino);
                }
                reply.ok();
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        Self::empty(self.array.sync_metadata(), reply);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.array.statfs() {
            Ok(s) => reply.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.bsize,
            ),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        if let Err(e) = self.writable() {
            return reply.error(e);
        }
        if let Err(e) = self.may_set_acl(req, ino.0, name) {
            return reply.error(e);
        }
        let r = self.array.setxattr(ino.0, name, value, flags as u32);
        if name.as_bytes() == raid_array::acl::ACCESS_XATTR {
            // The ACL may have changed the mode, even when a later step
            // failed; the kernel updates only the ctime it caches after a
            // setxattr.
            self.attributes_changed(ino.0);
        }
        Self::empty(r, reply);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self.array.getxattr(ino.0, name) {
            Ok(v) => xattr_reply(&v, size, reply),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.array.listxattr(ino.0) {
            Ok(names) => {
                let mut buf = Vec::new();
                for n in names {
                    buf.extend_from_slice(&n);
                    buf.push(0);
                }
                xattr_reply(&buf, size, reply);
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        if let Err(e) = self.writable() {
            return reply.error(e);
        }
        if let Err(e) = self.may_set_acl(req, ino.0, name) {
            return reply.error(e);
        }
        Self::empty(self.array.removexattr(ino.0, name), reply);
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        // Permission checks are the kernel's (default_permissions); this
        // only says whether the inode exists.
        Self::empty(self.array.getattr(ino.0).map(|_| ()), reply);
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        if let Err(e) = self.writable() {
            return reply.error(e);
        }
        match self
            .array
            .create_file(parent.0, name, mode & !umask, req.uid(), req.gid())
        {
            Ok(a) => {
                self.array.remember(a.ino);
                reply.created(
                    &self.ttl,
                    &file_attr(&a),
                    GEN,
                    FileHandle(0),
                    self.open_flags(true),
                )
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn fallocate(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        if let Err(e) = self.writable() {
            return reply.error(e);
        }
        let clear_setid = self.truncate_clears_setid(req);
        let r = fallocate(&self.array, ino.0, offset, length, mode, clear_setid).map(|cleared| {
            if cleared {
                self.attributes_changed(ino.0);
            }
        });
        Self::empty(r, reply);
    }

    /// No ioctl is supported: ENOTTY, as ext4 answers one it does not know
    /// (`isatty` on a file, `lsattr`). fuser's default answers ENOSYS with a
    /// warning, which the kernel does not remember: one log entry for every
    /// `isatty` of a file on the mount (every Python `open`).
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        reply.error(Errno::ENOTTY);
    }
}

/// `fallocate(2)`: mode 0 extends the file size as asked, never cutting
/// what a write extended meanwhile (`grow_only`), and `KEEP_SIZE` leaves it
/// (space is not reserved: members are ordinary filesystems);
/// `PUNCH_HOLE | KEEP_SIZE` makes the range read as zeros and gives the
/// space of the whole stripes in it back. Like a write, a
/// supported mode first clears the file's set-ID bits if `clear_setid`
/// (with the size change, in one record); returns whether it did.
fn fallocate(
    array: &Array,
    ino: u64,
    offset: u64,
    length: u64,
    mode: i32,
    clear_setid: bool,
) -> raid_array::Result<bool> {
    let end = offset
        .checked_add(length)
        .ok_or_else(|| ArrayError::Invalid("fallocate range overflows".into()))?;
    let punch = mode == FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
    if !(mode == 0 || mode == FALLOC_FL_KEEP_SIZE || punch) {
        return Err(ArrayError::Unsupported(format!("fallocate mode {mode:#x}")));
    }
    let attr = array.getattr(ino)?;
    let grow = mode == 0 && end > attr.size;
    let clear = clear_setid && attr.perm & 0o6000 != 0;
    let mut cleared = false;
    if grow || clear {
        let after = array.setattr(
            ino,
            &SetAttr {
                size: grow.then_some(end),
                grow_only: true,
                clear_setid: clear,
                ..SetAttr::default()
            },
        )?;
        cleared = after.perm != attr.perm;
    }
    if punch {
        array.punch_hole(ino, offset, length)?;
    }
    Ok(cleared)
}

fn xattr_reply(value: &[u8], size: u32, reply: ReplyXattr) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if (size as usize) < value.len() {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(value);
    }
}

#[cfg(test)]
mod tests {
    use super::kernel_flushes_without_flush;

    #[test]
    fn flush_is_refused_only_where_close_still_writes_back() {
        for (release, ok) in [
            ("6.1.0-28-amd64", true),
            ("6.6.51+rpt-rpi-v8", true),
            ("5.14.0-427.el9.x86_64", true),
            ("5.10.0-32-arm64", false),
            ("5.4.0-200-generic", false),
            ("4.19.0", false),
            ("", false),
            ("weird", false),
        ] {
            assert_eq!(kernel_flushes_without_flush(release), ok, "{release}");
        }
    }
}
