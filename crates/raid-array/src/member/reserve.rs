//! Space a member keeps back for the array's own records.
//!
//! A full disk must not take the array down. The data path answers a full
//! member with ENOSPC and fails nobody, but the metadata journal, its
//! checkpoints, the superblocks and the write-intent log must still be
//! written on it: even the `rm` that frees space is a journal record, and
//! a member that cannot take one is dropped. So must parity rewritten to
//! match data a write left half done, and blocks a repair rewrites. So
//! every member holds a file of [`size`] bytes (as ext4 keeps blocks back
//! for root, and ZFS its slop space). When a write of the array's own
//! records finds the member full, the file is let go and the write retried;
//! from then the member is short of space and writes of file data answer
//! ENOSPC before touching any member, so the freed space stays for records. Once files are deleted and
//! the member has room again, the file is made anew
//! ([`crate::member::Member::restore_reserve`]) and writes go on.

use std::fs::File;
use std::io;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Where the reserve lives in a member directory.
pub const PATH: &str = ".raidfs/reserve";

/// The reserve for a filesystem of `total` bytes: a 64th of it, between
/// 1 and 32 MiB (the journal of a few hundred thousand operations, or the
/// checkpoint of a large namespace).
pub fn size(total: u64) -> u64 {
    (total / 64).clamp(1 << 20, 32 << 20)
}

/// Whether `e` says the filesystem is full (or the quota used up).
pub fn is_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// Whether `path` (relative to the member root) holds the array's own
/// records rather than file data, which a full member answers with ENOSPC.
pub fn is_record(path: &str) -> bool {
    !path.starts_with(".raidfs/data/") && path != PATH
}

/// Give `f` `len` bytes of allocated space: `fallocate`, or zeros written
/// where the filesystem does not support it (FAT before Linux 4.19).
fn allocate(f: &File, len: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    match rustix::fs::fallocate(f, rustix::fs::FallocateFlags::empty(), 0, len) {
        Ok(()) => return Ok(()),
        Err(rustix::io::Errno::OPNOTSUPP) => {}
        Err(e) => return Err(e.into()),
    }
    let zeros = vec![0u8; 1 << 20];
    let mut at = f.metadata()?.len();
    while at < len {
        let n = (len - at).min(zeros.len() as u64) as usize;
        f.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

/// Smallest piece the reserve is let go in.
const STEP: u64 = 64 << 10;

/// One member's reserve: its file, held open once found or made.
#[derive(Debug, Default)]
pub struct Reserve {
    file: Mutex<Option<File>>,
    /// Not whole (let go in part, or never made for want of room): the
    /// member is short of space.
    spent: AtomicBool,
    /// The size it is made at (0 until made).
    size: std::sync::atomic::AtomicU64,
}

impl Reserve {
    pub fn spent(&self) -> bool {
        self.spent.load(Ordering::SeqCst)
    }

    /// Held and whole: nothing to restore.
    pub fn whole(&self) -> bool {
        !self.spent()
            && self
                .file
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some()
    }

    /// Make the reserve whole, `want` bytes, if there is room: `open`
    /// opens (or creates) its file and `avail` says how much the
    /// filesystem has free. A file found at its full size is taken as it
    /// is (no room needed); one let go in part stays held for the next
    /// record to use. Returns whether the reserve is whole.
    pub fn restore(
        &self,
        want: u64,
        avail: u64,
        open: impl FnOnce() -> io::Result<File>,
    ) -> io::Result<bool> {
        // One at a time: the periodic check and a writer meeting a full
        // member may both come here.
        let mut held = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if held.is_some() && !self.spent() {
            return Ok(true);
        }
        self.size.store(want, Ordering::SeqCst);
        let f = match held.take() {
            Some(f) => f,
            None => open()?,
        };
        let have = f.metadata()?.len();
        // Room for the missing part and as much again, so that a member
        // freed of a few files does not give all of it back at once.
        let whole = have >= want
            || (avail >= (want - have) * 2
                && match allocate(&f, want) {
                    Ok(()) => true,
                    Err(e) if is_full(&e) => {
                        f.set_len(have)?;
                        false
                    }
                    Err(e) => return Err(e),
                });
        *held = Some(f);
        self.spent.store(!whole, Ordering::SeqCst);
        Ok(whole)
    }

    /// Let half of what is left go (all of the last 64 KiB) for a record
    /// that found the member full; whether anything was let go (the write
    /// is then worth a retry).
    pub fn release(&self) -> bool {
        self.release_above(0)
    }

    /// [`Reserve::release`] for a write that keeps redundancy true (parity
    /// rewritten, a block repaired), which may take at most three quarters
    /// of the reserve: the rest stays for the journal and superblock writes
    /// that keep the member in the array.
    pub fn release_for_redundancy(&self) -> bool {
        self.release_above(self.size.load(Ordering::SeqCst) / 4)
    }

    /// Let half of what is left go, unless no more than `floor` bytes are.
    fn release_above(&self, floor: u64) -> bool {
        let held = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let Some(f) = held.as_ref() else {
            return false;
        };
        let have = match f.metadata() {
            Ok(m) => m.len(),
            Err(_) => return false,
        };
        if have <= floor {
            return false;
        }
        let keep = if have > STEP {
            have / 2 / STEP * STEP
        } else {
            0
        };
        if let Err(e) = f.set_len(keep) {
            tracing::warn!(error = %e, "cannot let the metadata reserve go");
            return false;
        }
        if !self.spent.swap(true, Ordering::SeqCst) {
            tracing::warn!(
                "a member is full: the space it keeps back for metadata is in use, and writes \
                 of file data answer ENOSPC until files are deleted"
            );
        }
        true
    }

    /// Run `write` (a write of the array's own records); while the member
    /// is full and the reserve has something left, let part of it go and
    /// run it again.
    pub fn retry<T>(&self, mut write: impl FnMut() -> io::Result<T>) -> io::Result<T> {
        loop {
            match write() {
                Err(e) if is_full(&e) && self.release() => {}
                r => return r,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_a_64th_between_1_and_32_mib() {
        assert_eq!(size(0), 1 << 20);
        assert_eq!(size(640 << 20), 10 << 20);
        assert_eq!(size(4 << 40), 32 << 20);
    }

    #[test]
    fn file_data_is_not_a_record() {
        assert!(!is_record(".raidfs/data/01/0000000000000001"));
        assert!(!is_record(".raidfs/data/01/0000000000000001.crc"));
        assert!(!is_record(PATH));
        assert!(is_record(".raidfs/meta/journal-0000000000000001"));
        assert!(is_record(".raidfs/superblock.tmp"));
        assert!(is_record(".raidfs/intent"));
    }

    #[test]
    fn a_full_member_lets_the_reserve_go_half_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r");
        let r = Reserve::default();
        let open = || {
            File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
        };
        assert!(r.restore(1 << 20, 10 << 20, open).unwrap());
        assert!(!r.spent());
        let len = || std::fs::metadata(&path).unwrap().len();
        assert_eq!(len(), 1 << 20);
        // A write that needs two releases before it fits.
        let mut calls = 0;
        let full = || io::Error::new(io::ErrorKind::StorageFull, "full");
        let got = r.retry(|| {
            calls += 1;
            if calls < 3 { Err(full()) } else { Ok(calls) }
        });
        assert_eq!(got.unwrap(), 3);
        assert!(r.spent());
        assert_eq!(len(), 256 << 10);
        // Until nothing is left; the error then stands.
        let got: io::Result<()> = r.retry(|| Err(full()));
        assert!(got.is_err());
        assert_eq!(len(), 0);
        // No room to make it whole again: still short, file kept.
        assert!(!r.restore(1 << 20, 1 << 20, open).unwrap());
        assert!(r.spent());
        // Room again: whole.
        assert!(r.restore(1 << 20, 10 << 20, open).unwrap());
        assert!(!r.spent());
        assert_eq!(len(), 1 << 20);
    }

    #[test]
    fn a_reserve_found_whole_is_taken_without_room() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r");
        std::fs::write(&path, vec![0u8; 1 << 20]).unwrap();
        let r = Reserve::default();
        let open = || File::options().read(true).write(true).open(&path);
        assert!(r.restore(1 << 20, 0, open).unwrap());
        assert!(!r.spent());
    }
}
