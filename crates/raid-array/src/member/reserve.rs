//! Space a member keeps back for the array's own records.
//!
//! A full disk must not take the array down. The data path answers a full
//! member with ENOSPC and fails nobody, but the metadata journal, its
//! checkpoints, the superblocks and the write-intent log must still be
//! written on it: even the `rm` that frees space is a journal record, and
//! a member that cannot take one is dropped. So every member holds a file
//! of [`size`] bytes (as ext4 keeps blocks back for root, and ZFS its slop
//! space). When a write of the array's own records finds the member full,
//! the file is let go and the write retried; from then the member is short
//! of space and writes that grow files answer ENOSPC before touching any
//! member, so the freed space stays for records. Once files are deleted and
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
pub fn allocate(f: &File, len: u64) -> io::Result<()> {
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

/// One member's reserve: the open file while it holds its bytes.
#[derive(Debug, Default)]
pub struct Reserve {
    file: Mutex<Option<File>>,
    /// Given up (or never made for want of room): the member is short.
    spent: AtomicBool,
}

impl Reserve {
    /// Hold `file`, which holds the reserve's bytes.
    pub fn hold(&self, file: File) {
        *self.file.lock().unwrap_or_else(|p| p.into_inner()) = Some(file);
        self.spent.store(false, Ordering::SeqCst);
    }

    /// The member has no reserve and is short of space.
    pub fn mark_spent(&self) {
        self.spent.store(true, Ordering::SeqCst);
    }

    pub fn spent(&self) -> bool {
        self.spent.load(Ordering::SeqCst)
    }

    /// Whether the reserve's bytes are held.
    pub fn held(&self) -> bool {
        self.file
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Let the reserve's bytes go for a record that found the member full;
    /// whether there were any to let go (the write is then worth a retry).
    pub fn release(&self) -> bool {
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        self.spent.store(true, Ordering::SeqCst);
        match file.take() {
            Some(f) => match f.set_len(0) {
                Ok(()) => {
                    tracing::warn!(
                        "a member is full: its space kept back for metadata is in use, and writes \
                         that grow files answer ENOSPC until files are deleted"
                    );
                    true
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot let the metadata reserve go");
                    false
                }
            },
            None => false,
        }
    }

    /// Run `write` (a write of the array's own records); if the member is
    /// full, let the reserve go and run it once more.
    pub fn retry<T>(&self, mut write: impl FnMut() -> io::Result<T>) -> io::Result<T> {
        match write() {
            Err(e) if is_full(&e) && self.release() => write(),
            r => r,
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
    fn a_write_that_finds_the_member_full_is_retried_once_after_the_release() {
        let dir = tempfile::tempdir().unwrap();
        let f = File::create(dir.path().join("r")).unwrap();
        f.set_len(4096).unwrap();
        let r = Reserve::default();
        r.hold(f);
        let mut calls = 0;
        let full = || io::Error::new(io::ErrorKind::StorageFull, "full");
        let got = r.retry(|| {
            calls += 1;
            if calls == 1 { Err(full()) } else { Ok(calls) }
        });
        assert_eq!(got.unwrap(), 2);
        assert!(r.spent());
        assert_eq!(std::fs::metadata(dir.path().join("r")).unwrap().len(), 0);
        // Nothing left to let go: the error stands.
        let mut calls = 0;
        let got: io::Result<()> = r.retry(|| {
            calls += 1;
            Err(full())
        });
        assert!(got.is_err() && calls == 1);
    }
}
