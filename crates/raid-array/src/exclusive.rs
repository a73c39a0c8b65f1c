//! One process per array: while an array is assembled for writing, its
//! process holds an exclusive `flock` on every member directory it uses.
//!
//! Without it, `umount /mnt/array && mount /mnt/array` could assemble the
//! array while the old daemon was still writing its clean superblocks: the
//! new one saw a member with an older events count, took it for stale and
//! started degraded. Two mounts of one array would overwrite each other's
//! metadata. So assembling waits a while for a holder to let go (a daemon
//! closing after `umount` takes a moment) and then refuses with `EBUSY`.
//!
//! The lock belongs to the member handle ([`crate::member::Member::lock_exclusive`]),
//! taken at assembly and when a directory joins (a spare added, a replace
//! target), and let go when the handle is: at `close`, when a member is
//! removed or replaced, when a spare is removed — so the disk can be
//! unmounted — and when the process ends, however it ends (no lock file to
//! clean up after a crash). Directories are locked in (device, inode) order,
//! so two processes assembling the same array cannot each hold half.
//!
//! Read-only assembles (`ro` mounts, `extract`, debug dumps) write nothing
//! and take no lock, so they work beside a live mount (and do not wait for
//! a closing one).

use std::fs::{File, TryLockError};
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::ArrayError;

/// How long assembling waits for another process to release a member.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(50);

/// Takes an exclusive lock on the open directory `f` (of `dir`), waiting up
/// to `wait` for another holder. `Ok(false)`: still held elsewhere. A
/// filesystem without `flock` gives `Ok(true)` with a warning (no
/// protection, but no reason to refuse the array either).
pub(crate) fn lock_dir(f: &File, dir: &Path, wait: Duration) -> io::Result<bool> {
    let deadline = Instant::now() + wait;
    let mut logged = false;
    loop {
        match f.try_lock() {
            Ok(()) => return Ok(true),
            Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                if !logged {
                    tracing::info!(
                        member = %dir.display(),
                        "member in use by another process; waiting for it to let go"
                    );
                    logged = true;
                }
                std::thread::sleep(POLL);
            }
            Err(TryLockError::WouldBlock) => return Ok(false),
            Err(TryLockError::Error(e)) if e.kind() == io::ErrorKind::Unsupported => {
                tracing::warn!(member = %dir.display(), error = %e, "cannot lock member directory");
                return Ok(true);
            }
            Err(TryLockError::Error(e)) => return Err(e),
        }
    }
}

/// The error for a member directory another process holds.
pub fn busy(dir: &Path) -> ArrayError {
    ArrayError::Busy(format!(
        "member directory {} is in use by another raidfs process (the array is mounted, \
         or its daemon is still closing it; `fuser -v` or /proc/locks shows which)",
        dir.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::member::Member;
    use crate::member::dir::DirMember;

    #[test]
    fn a_second_holder_waits_then_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let first = DirMember::open(d.path()).unwrap();
        let second = DirMember::open(d.path()).unwrap();
        assert!(first.lock_exclusive(Duration::ZERO).unwrap());
        // Taking it again through the same handle is a no-op.
        assert!(first.lock_exclusive(Duration::ZERO).unwrap());
        let t = Instant::now();
        assert!(!second.lock_exclusive(Duration::from_millis(120)).unwrap());
        assert!(t.elapsed() >= Duration::from_millis(120));
        first.unlock();
        assert!(second.lock_exclusive(Duration::ZERO).unwrap());
        // Dropping the handle lets go too.
        drop(second);
        assert!(first.lock_exclusive(Duration::ZERO).unwrap());
        assert_eq!(
            busy(d.path()).errno(),
            rustix::io::Errno::BUSY.raw_os_error()
        );
    }

    #[test]
    fn a_holder_that_lets_go_in_time_is_waited_for() {
        let d = tempfile::tempdir().unwrap();
        let first = DirMember::open(d.path()).unwrap();
        assert!(first.lock_exclusive(Duration::ZERO).unwrap());
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            drop(first);
        });
        let second = DirMember::open(d.path()).unwrap();
        assert!(second.lock_exclusive(Duration::from_secs(30)).unwrap());
        t.join().unwrap();
    }
}
