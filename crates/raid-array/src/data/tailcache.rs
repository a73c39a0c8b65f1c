//! The last, partly written stripe of recently written files, kept in
//! memory so that the next write, which usually completes it, need not read
//! its first part back from the members.
//!
//! The mount hands the engine writes of at most 1 MiB, and 1 MiB is rarely
//! a multiple of a stripe's data (192 KiB on RAID-5 of 4 with 64 KiB
//! chunks), so each request of a sequential writer ends inside a stripe and
//! the next one began by reading that stripe's old data chunks (checksums
//! verified, one pool job per member) to compute its parity. This is only a
//! copy of bytes already written through: durability, the write-intent log
//! and the members' contents do not change.
//!
//! An entry always equals the file's logical bytes of its stripe (zeros
//! past the end): the data store takes the file's entry out at the start of
//! every write batch and puts one back only after the batch's members were
//! written; cuts, truncates, removals and anything else that changes a
//! file's bytes outside the write path drop it. As a second guard an entry
//! records the file size it assumes, and is used only by a write that finds
//! the file at that size. Entries go once the file's writes settle (its
//! data is synced a few seconds after the last one), so a Pi does not hold
//! them for files nobody writes. Callers hold the file's lock.

use std::sync::Mutex;

/// Files whose last stripe is kept: a few concurrent sequential writers.
const FILES: usize = 8;
/// Stripes with more data bytes than this are not kept (wide k+m layouts
/// with large chunks): the memory would outweigh the read saved.
pub(crate) const MAX_STRIPE: u64 = 2 << 20;

/// One file's kept stripe.
pub(crate) struct Tail {
    pub ino: u64,
    pub stripe: u64,
    /// The file's size after the write that kept it: bytes past it are zero.
    pub size: u64,
    /// The stripe's data bytes in file order (`stripe_data` long).
    pub data: Vec<u8>,
}

/// The kept stripes, most recently written last.
#[derive(Default)]
pub(crate) struct TailCache {
    tails: Mutex<Vec<Tail>>,
}

impl TailCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Tail>> {
        self.tails.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Take `ino`'s entry out, whatever its stripe: the caller is about to
    /// change the file, and an entry left behind could go stale.
    pub fn take(&self, ino: u64) -> Option<Tail> {
        let mut g = self.lock();
        let i = g.iter().position(|t| t.ino == ino)?;
        Some(g.remove(i))
    }

    /// Keep `tail` (replacing the file's entry, evicting the oldest file's).
    pub fn put(&self, tail: Tail) {
        let mut g = self.lock();
        g.retain(|t| t.ino != tail.ino);
        if g.len() == FILES {
            g.remove(0);
        }
        g.push(tail);
    }

    /// Forget `ino`'s entry.
    pub fn forget(&self, ino: u64) {
        self.take(ino);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tail(ino: u64) -> Tail {
        Tail {
            ino,
            stripe: ino * 10,
            size: 0,
            data: vec![ino as u8; 4],
        }
    }

    #[test]
    fn one_entry_per_file_and_the_oldest_file_goes_first() {
        let c = TailCache::default();
        for ino in 0..FILES as u64 {
            c.put(tail(ino));
        }
        c.put(Tail {
            stripe: 7,
            ..tail(3)
        });
        c.put(tail(100));
        assert!(c.take(0).is_none(), "the oldest file was not evicted");
        let t = c.take(3).expect("replaced entry");
        assert_eq!(t.stripe, 7);
        assert!(c.take(3).is_none(), "take leaves nothing behind");
        c.forget(100);
        assert!(c.take(100).is_none());
        assert_eq!(c.take(1).map(|t| t.data), Some(vec![1; 4]));
    }
}
