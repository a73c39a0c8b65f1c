//! One process per array: while an array is assembled for writing, its
//! process holds an exclusive `flock` on every member directory.
//!
//! Without it, `umount /mnt/array && mount /mnt/array` could assemble the
//! array while the old daemon was still writing its clean superblocks: the
//! new one saw a member with an older events count, took it for stale and
//! started degraded. Two mounts of one array would overwrite each other's
//! metadata. So assembling waits a while for a holder to let go (a daemon
//! closing after `umount` takes a moment) and then refuses with `EBUSY`.
//!
//! Read-only assembles (`ro` mounts, `extract`, debug dumps) write nothing
//! and take no lock, so they work beside a live mount. The lock is on the
//! open directory itself, released when the array is closed or the process
//! ends, however it ends: no stale lock file to clean up after a crash.

use std::collections::HashSet;
use std::fs::{File, TryLockError};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{ArrayError, Result};

/// How long assembling waits for another process to release a member.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(50);

/// Exclusive locks on member directories, released on drop.
#[derive(Debug, Default)]
pub struct MemberLocks(Vec<File>);

impl MemberLocks {
    /// How many directories are held.
    pub fn count(&self) -> usize {
        self.0.len()
    }

    /// Locks every directory of `dirs` that can be opened, each once (one
    /// that cannot be opened, or is listed twice, is left to assembly to
    /// report), waiting up to `wait` in all.
    pub fn acquire(dirs: &[PathBuf], wait: Duration) -> Result<MemberLocks> {
        let deadline = Instant::now() + wait;
        let mut held = Vec::with_capacity(dirs.len());
        let mut seen = HashSet::new();
        for dir in dirs {
            let Ok(f) = File::open(dir) else { continue };
            let Ok(md) = f.metadata() else { continue };
            if !seen.insert((md.dev(), md.ino())) {
                continue;
            }
            lock_one(&f, dir, deadline)?;
            held.push(f);
        }
        Ok(MemberLocks(held))
    }
}

fn lock_one(f: &File, dir: &Path, deadline: Instant) -> Result<()> {
    let mut logged = false;
    loop {
        match f.try_lock() {
            Ok(()) => return Ok(()),
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
            Err(TryLockError::WouldBlock) => {
                return Err(ArrayError::Busy(format!(
                    "member directory {} is in use by another raidfs process (the array is \
                     mounted, or its daemon is still closing it); unmount it first",
                    dir.display()
                )));
            }
            // A filesystem without flock support: no protection, but no
            // reason to refuse the array either.
            Err(TryLockError::Error(e)) => {
                tracing::warn!(member = %dir.display(), error = %e, "cannot lock member directory");
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_waits_then_gets_ebusy() {
        let d = tempfile::tempdir().unwrap();
        let dirs = vec![d.path().to_path_buf()];
        let first = MemberLocks::acquire(&dirs, Duration::ZERO).unwrap();
        let e = MemberLocks::acquire(&dirs, Duration::from_millis(120)).unwrap_err();
        assert!(matches!(e, ArrayError::Busy(_)), "{e}");
        assert_eq!(e.errno(), rustix::io::Errno::BUSY.raw_os_error());
        drop(first);
        MemberLocks::acquire(&dirs, Duration::ZERO).unwrap();
    }

    #[test]
    fn a_holder_that_lets_go_in_time_is_waited_for() {
        let d = tempfile::tempdir().unwrap();
        let dirs = vec![d.path().to_path_buf()];
        let first = MemberLocks::acquire(&dirs, Duration::ZERO).unwrap();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            drop(first);
        });
        MemberLocks::acquire(&dirs, Duration::from_secs(30)).unwrap();
        t.join().unwrap();
    }

    #[test]
    fn missing_and_repeated_directories_are_left_to_assembly() {
        let d = tempfile::tempdir().unwrap();
        let dirs = vec![
            d.path().join("absent"),
            d.path().to_path_buf(),
            d.path().join("."),
        ];
        let held = MemberLocks::acquire(&dirs, Duration::ZERO).unwrap();
        assert_eq!(held.count(), 1);
    }
}
