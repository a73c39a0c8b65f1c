//! Files known to hold nothing but zeros (or nothing at all) on every
//! member past their end.
//!
//! A write that grows a file inside a stripe computes the stripe's parity
//! with zeros for the data chunks it does not touch past the old end. A
//! crashed or failed earlier write may have left other bytes there, so by
//! default the write also writes those zeros to the members: parity and
//! members then agree. For a 16 KiB file on RAID-5 of 4 that is two more
//! members written than the data needs, and a sequential writer zeroes the
//! rest of every stripe its request ends in, only for the next request to
//! overwrite it.
//!
//! For the files listed here the members already hold zeros past the end,
//! made so by this process: shards created empty when the file left inline
//! storage, or a cut (which zeroes the rest of the end stripe and trims
//! every shard after it). Successful writes keep it so (they write whole
//! blocks, zeros past their end). A write batch that fails may have left
//! bytes past the end on some member, so it takes its file off the list; so
//! do removals and poisoned blocks. The list lives in memory only: after a
//! crash every file starts off it, and writes zero as before. Callers hold
//! the file's write lock. It is bounded: when full it is emptied, which
//! only means more zeros written.

use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard};

/// Files listed at most; a file written once since start-up is enough to
/// be listed, so the bound is what keeps a long-running mount small.
const MAX_FILES: usize = 1 << 16;

/// The files whose members hold only zeros past the end.
#[derive(Default)]
pub(crate) struct ZeroPastEnd {
    files: Mutex<HashSet<u64>>,
    /// Bumped by [`ZeroPastEnd::forget_all`] (a member came back with old
    /// data): an operation begun before must not list its file.
    epoch: std::sync::atomic::AtomicU64,
}

/// What [`ZeroPastEnd::insert`] checks: taken when the operation began.
#[derive(Clone, Copy)]
pub(crate) struct Epoch(u64);

impl ZeroPastEnd {
    fn lock(&self) -> MutexGuard<'_, HashSet<u64>> {
        self.files.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Taken before an operation that will list a file: the members it
    /// works on are the members then.
    pub fn epoch(&self) -> Epoch {
        Epoch(self.epoch.load(std::sync::atomic::Ordering::SeqCst))
    }

    /// `ino`'s members now hold only zeros past its end, as made so by an
    /// operation begun at `since`; not listed if a member came back with
    /// old data meanwhile (it may not have been among those members).
    pub fn insert(&self, ino: u64, since: Epoch) {
        let mut files = self.lock();
        if self.epoch.load(std::sync::atomic::Ordering::SeqCst) != since.0 {
            return;
        }
        if files.len() >= MAX_FILES {
            files.clear();
        }
        files.insert(ino);
    }

    /// `ino`'s members may hold other bytes past its end.
    pub fn forget(&self, ino: u64) {
        self.lock().remove(&ino);
    }

    /// No file's members are known to hold only zeros past its end (a
    /// member came back with old data), nor will be by an operation begun
    /// before.
    pub fn forget_all(&self) {
        let mut files = self.lock();
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        files.clear();
    }

    /// Whether `ino`'s members hold only zeros past its end.
    pub fn holds(&self, ino: u64) -> bool {
        self.lock().contains(&ino)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_until_forgotten_and_emptied_when_full() {
        let z = ZeroPastEnd::default();
        z.insert(7, z.epoch());
        assert!(z.holds(7));
        z.forget(7);
        assert!(!z.holds(7));
        for ino in 0..MAX_FILES as u64 {
            z.insert(ino, z.epoch());
        }
        assert!(z.holds(0));
        z.insert(u64::MAX, z.epoch());
        assert!(!z.holds(0), "a full list starts over");
        assert!(z.holds(u64::MAX));
    }

    #[test]
    fn an_operation_begun_before_a_member_came_back_lists_nothing() {
        let z = ZeroPastEnd::default();
        z.insert(1, z.epoch());
        let begun = z.epoch();
        z.forget_all();
        assert!(!z.holds(1));
        z.insert(2, begun);
        assert!(!z.holds(2), "listed by an operation that missed the member");
        z.insert(3, z.epoch());
        assert!(z.holds(3));
    }
}
