//! Member storage: where one member's bytes live.
//!
//! The engine never touches `std::fs` directly; it goes through [`Member`]
//! so that tests can swap in a fault-injecting backend (`faulty`) that
//! returns EIO on chosen calls, tears writes, flips bits and produces a crash
//! image holding only the bytes that were made durable.
//!
//! Paths are relative to the member root and use `/` separators
//! (e.g. `.raidfs/superblock`, `.raidfs/data/00/0000000000000042`); a
//! backend must refuse absolute paths and `..` components.
//!
//! Invariant 1 of the design lives here: a [`DirMember`] holds an open handle
//! on its root directory and resolves every path relative to it, so a USB disk
//! that disappears (or was never mounted) can never cause writes into the
//! directory underneath its mount point.

pub mod dir;
pub mod faulty;
pub mod reserve;

use std::io::{self, IoSliceMut};
use std::sync::Arc;

pub use dir::DirMember;

/// An open file on a member.
pub trait MemberFile: Send + Sync {
    /// Read up to `buf.len()` bytes at `offset`; fewer only at end of file.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
    /// Fill `bufs` one after the other from consecutive bytes starting at
    /// `offset`; fewer bytes in all only at end of file. A backend may do
    /// it in one request (`preadv`): one large copy out of the page cache
    /// costs less than several small ones. The default reads each buffer
    /// with [`MemberFile::read_at`]. The buffers themselves are left as
    /// given (only their bytes change).
    fn read_vectored_at(&self, offset: u64, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        let mut done = 0;
        for buf in bufs.iter_mut() {
            let n = self.read_at(offset + done as u64, buf)?;
            done += n;
            if n < buf.len() {
                break;
            }
        }
        Ok(done)
    }
    /// Write all of `data` at `offset`, extending the file if needed.
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Make written data and the file size durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
    /// Current length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Truncate or extend (with a hole) to `len`.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Whether writes of aligned buffers currently bypass the page cache
    /// (see [`Member::open_direct`]); false for ordinary handles.
    fn is_direct(&self) -> bool {
        false
    }
    /// Start writing the first `upto` bytes back to the disk without
    /// waiting, and let the page cache drop what is already there
    /// (`data::writebehind`). A hint: it makes nothing durable, and a
    /// backend may ignore it (the default).
    fn write_behind(&self, upto: u64) -> io::Result<()> {
        let _ = upto;
        Ok(())
    }
    /// Deallocate `len` bytes at `offset`, which then read as zeros; the
    /// length stays (`fallocate(PUNCH_HOLE | KEEP_SIZE)`). `Unsupported`
    /// where the backend cannot (the default; FAT and exFAT cannot), and
    /// the caller writes zeros instead.
    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        let _ = (offset, len);
        Err(io::ErrorKind::Unsupported.into())
    }
    /// Make sure `len` bytes at `offset` have space on the disk, without
    /// changing the contents or the length (`fallocate(KEEP_SIZE)`), so
    /// that a write there cannot meet a full disk half-way. Backends that
    /// cannot do nothing (the default), and the write finds out.
    fn allocate(&self, offset: u64, len: u64) -> io::Result<()> {
        let _ = (offset, len);
        Ok(())
    }
    /// The first offset at or after `offset` that holds data, `None` when
    /// only holes (never written or punched) follow (`SEEK_DATA`). Lets a
    /// rebuild or scrub pass over the holes of a sparse file instead of
    /// reading terabytes of zeros. The default, for backends that cannot
    /// tell, is `Some(offset)`: everything counts as data.
    fn next_data(&self, offset: u64) -> io::Result<Option<u64>> {
        Ok(Some(offset))
    }
}

/// One member's storage root.
pub trait Member: Send + Sync {
    /// Human-readable location for messages (the directory path).
    fn describe(&self) -> String;
    /// Open an existing file for reading and writing.
    fn open(&self, path: &str) -> io::Result<Arc<dyn MemberFile>>;
    /// Open a file for reading and writing, creating it (and its parent
    /// directories) if missing.
    fn create(&self, path: &str) -> io::Result<Arc<dyn MemberFile>>;
    /// As [`Member::create`], but the file is emptied if it held anything.
    fn create_empty(&self, path: &str) -> io::Result<Arc<dyn MemberFile>> {
        let f = self.create(path)?;
        if !f.is_empty()? {
            f.set_len(0)?;
        }
        Ok(f)
    }
    /// Open an existing file for large writes that bypass the page cache
    /// (`O_DIRECT`): a rebuild writes a whole member once and never reads it
    /// back soon, so copying every byte into the page cache first is pure
    /// cost on a small CPU. Writes whose buffer address, offset and length
    /// are multiples of [`DIRECT_ALIGN`] go straight to the device; any
    /// other write, and every write once the filesystem has refused direct
    /// I/O (EINVAL, as tmpfs did before Linux 6.6), goes through the page
    /// cache, so callers need no fallback of their own. Reads are buffered.
    /// Durability still needs [`MemberFile::sync_data`] (direct writes do
    /// not flush the device cache nor the file's block map). The default
    /// is an ordinary handle.
    fn open_direct(&self, path: &str) -> io::Result<Arc<dyn MemberFile>> {
        self.open(path)
    }
    /// Make everything written to the member durable, every file at once
    /// (`syncfs` of its filesystem). `Unsupported` by default: callers then
    /// sync file by file.
    fn sync_all(&self) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "no filesystem-wide sync for this member",
        ))
    }
    /// Whether `path` exists.
    fn exists(&self, path: &str) -> io::Result<bool>;
    /// Remove a file; a missing file is not an error.
    fn remove(&self, path: &str) -> io::Result<()>;
    /// Atomically replace `to` with `from` (rename(2)) and make the rename
    /// durable (fsync of the parent directory).
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Names of the entries in directory `path` (empty if it does not exist).
    fn list(&self, path: &str) -> io::Result<Vec<String>>;
    /// Write a whole small file atomically and durably: write to a temporary
    /// name, fsync, rename over `path`, fsync the directory.
    fn write_atomic(&self, path: &str, data: &[u8]) -> io::Result<()>;
    /// Read a whole small file.
    fn read_all(&self, path: &str) -> io::Result<Vec<u8>>;
    /// (total bytes, available bytes) of the filesystem holding the member.
    fn space(&self) -> io::Result<(u64, u64)>;
    /// An identifier of the filesystem holding the member (equal for two
    /// members on one filesystem), so capacity shared by several members is
    /// not counted once per member. `None` when the backend cannot tell.
    fn filesystem_id(&self) -> io::Result<Option<u64>> {
        Ok(None)
    }
    /// Keep space back for the array's own records ([`reserve`]): make the
    /// reserve if it is missing, short or spent and there is room. `Ok(false)`
    /// if there is not (the member stays short of space). Backends without a
    /// filesystem of their own keep nothing.
    fn restore_reserve(&self) -> io::Result<bool> {
        Ok(true)
    }
    /// The member is short of space: its reserve went to the array's
    /// records, so writes of file data are refused (ENOSPC) until
    /// [`Member::restore_reserve`] makes it again.
    fn short_of_space(&self) -> bool {
        false
    }
    /// Let part of the reserve go for a write that keeps the array's
    /// redundancy true (parity rewritten after a write ran out of space, a
    /// repair) and found the member full; whether anything was let go, so
    /// that the write is worth a retry. A quarter of the reserve always
    /// stays for the array's records. The member is then short of space.
    fn release_reserve(&self) -> bool {
        false
    }
    /// The mount the member's directory was opened on (`statx`
    /// `STATX_MNT_ID`). A disk unplugged and mounted again is a new mount,
    /// though it may get its device number back; `None` when the backend
    /// cannot tell.
    fn mount_id(&self) -> io::Result<Option<u64>> {
        Ok(None)
    }
    /// Hold this member for this process alone ([`crate::exclusive`]),
    /// waiting up to `wait` for another holder: `Ok(false)` if it still
    /// holds it. Held until [`Member::unlock`] or until the handle goes.
    /// Backends with nothing to lock hold nothing.
    fn lock_exclusive(&self, _wait: std::time::Duration) -> io::Result<bool> {
        Ok(true)
    }
    /// Let go of what [`Member::lock_exclusive`] took.
    fn unlock(&self) {}
}

/// Alignment of buffer addresses, offsets and lengths for direct writes:
/// the largest logical block size of common disks (4Kn drives), which also
/// satisfies 512-byte ones.
pub const DIRECT_ALIGN: usize = 4096;

/// Reject absolute paths, empty components and `..`.
pub(crate) fn check_relative(path: &str) -> io::Result<()> {
    let bad = path.is_empty()
        || path.starts_with('/')
        || path.contains('\0')
        || path
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid member path {path:?}"),
        ));
    }
    Ok(())
}
