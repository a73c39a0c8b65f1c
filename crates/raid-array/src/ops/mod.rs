//! Long-running operations on the data of an array — scrub, rebuild,
//! resync — each an engine function with an options struct, a [`Progress`]
//! callback and a checkpoint saved on the members so it resumes after a
//! restart. The CLI only displays what [`Progress`] reports.
//!
//! Files are visited in inode order; the checkpoint records the inode and
//! stripe reached, so a resumed run skips what is done. Each step holds the
//! file's write lock for a batch of stripes only, so reads and writes go on
//! while an operation runs (invariant 5).

mod flusher;
pub mod rebuild;
pub mod resync;
pub mod scrub;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::member::Member;

pub use rebuild::{RebuildOptions, RebuildReport, RebuildTarget, rebuild, rebuild_onto};

/// Directory of operation checkpoints and summaries on a member.
pub const OPS_DIR: &str = ".raidfs/ops";
pub use resync::{ResyncReport, resync};
pub use scrub::{ScrubOptions, ScrubReport, ScrubSummary, scrub, scrub_live};

/// How often a running operation saves its checkpoint.
pub(crate) const CHECKPOINT_EVERY: Duration = Duration::from_secs(2);

/// Receives progress of a long operation. Calls come from the thread
/// running the operation; keep them cheap.
pub trait Progress: Send + Sync {
    /// `done` of `total` logical bytes processed.
    fn update(&self, _done: u64, _total: u64) {}
    /// Whether the operation should stop now: it saves its checkpoint and
    /// returns a report with `complete == false`; the next run resumes.
    fn should_stop(&self) -> bool {
        false
    }
}

/// Progress that nobody watches.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {}

/// Sleeps to keep an operation at or under a byte rate (0 = unlimited).
#[derive(Debug)]
pub(crate) struct Throttle {
    rate: u64,
    start: Instant,
    bytes: u64,
}

impl Throttle {
    pub fn new(bytes_per_sec: u64) -> Self {
        Throttle {
            rate: bytes_per_sec,
            start: Instant::now(),
            bytes: 0,
        }
    }

    /// Count `bytes` done and sleep until the rate allows more. The sleep
    /// is cut into short slices and ends early once `progress` asks the
    /// operation to stop, so that a cancel, an unmount or a shutdown is not
    /// kept waiting by a low rate.
    pub fn account(&mut self, bytes: u64, progress: &dyn Progress) {
        self.bytes += bytes;
        if self.rate == 0 {
            return;
        }
        let due = Duration::from_secs_f64(self.bytes as f64 / self.rate as f64);
        loop {
            let spent = self.start.elapsed();
            if due <= spent || progress.should_stop() {
                return;
            }
            std::thread::sleep((due - spent).min(Self::SLICE));
        }
    }

    /// Longest sleep between two looks at [`Progress::should_stop`].
    const SLICE: Duration = Duration::from_millis(100);
}

/// Where an operation stopped. Stored at `.raidfs/ops/<op>.ckpt` on every
/// writable member (see docs/FORMAT.md, "Data path records").
///
/// ```text
///  0 magic   8  "RFSCKPT\0"
///  8 major   2  1
/// 10 minor   2  1 (0: a record that ends at byte 44, without `member`)
/// 12 target  4  member index the operation works for (rebuild), else u32::MAX
/// 16 ino     8  first inode not finished
/// 24 stripe  8  first stripe of that inode not finished
/// 32 done    8  logical bytes finished
/// 40 crc     4  CRC32 of bytes 0..40
/// 44 member 16  UUID of the member being rebuilt; zeros: not known (scrub)
/// 60 crc2    4  CRC32 of bytes 0..60
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    pub target: u32,
    pub ino: u64,
    pub stripe: u64,
    pub done: u64,
    /// The UUID of the member a rebuild works on (`None` for a scrub, and
    /// in a record written before it was kept): a rebuild onto another
    /// member of the same slot never continues from it.
    pub member: Option<[u8; 16]>,
}

const CKPT_MAGIC: &[u8; 8] = b"RFSCKPT\0";
/// Bytes of a record of minor version 0, and of one of minor version 1.
const CKPT_LEN_V0: usize = 44;
const CKPT_LEN: usize = 64;

impl Checkpoint {
    fn path(op: &str) -> String {
        format!("{OPS_DIR}/{op}.ckpt")
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(CKPT_LEN);
        b.extend_from_slice(CKPT_MAGIC);
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&self.target.to_le_bytes());
        b.extend_from_slice(&self.ino.to_le_bytes());
        b.extend_from_slice(&self.stripe.to_le_bytes());
        b.extend_from_slice(&self.done.to_le_bytes());
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b.extend_from_slice(&self.member.unwrap_or([0; 16]));
        let crc2 = crc32fast::hash(&b);
        b.extend_from_slice(&crc2.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() < CKPT_LEN_V0 || &b[..8] != CKPT_MAGIC || u16::from_le_bytes([b[8], b[9]]) != 1 {
            return None;
        }
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        if u32_at(40) != crc32fast::hash(&b[..40]) {
            return None;
        }
        let minor = u16::from_le_bytes([b[10], b[11]]);
        let member = if minor == 0 {
            None
        } else {
            // Newer minors keep this layout and may add after it.
            if b.len() < CKPT_LEN || u32_at(60) != crc32fast::hash(&b[..60]) {
                return None;
            }
            let mut u = [0u8; 16];
            u.copy_from_slice(&b[44..60]);
            (u != [0; 16]).then_some(u)
        };
        let u64_at = |o: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[o..o + 8]);
            u64::from_le_bytes(a)
        };
        Some(Checkpoint {
            target: u32_at(12),
            ino: u64_at(16),
            stripe: u64_at(24),
            done: u64_at(32),
            member,
        })
    }

    /// The checkpoint of `op` found on any of `members` (the furthest one).
    pub fn load(members: &[Arc<dyn Member>], op: &str) -> Option<Self> {
        Self::load_matching(members, op, |_| true)
    }

    /// The furthest checkpoint of `op` on any of `members` that `keep`
    /// accepts (one that belongs to another run is passed over, however
    /// far it got).
    pub fn load_matching(
        members: &[Arc<dyn Member>],
        op: &str,
        keep: impl Fn(&Self) -> bool,
    ) -> Option<Self> {
        members
            .iter()
            .filter_map(|m| m.read_all(&Self::path(op)).ok())
            .filter_map(|b| Self::decode(&b))
            .filter(|c| keep(c))
            .max_by_key(|c| (c.ino, c.stripe))
    }

    /// Save on every member in `members`; failures are logged, not fatal
    /// (a lost checkpoint only costs repeated work).
    pub fn save(&self, members: &[Arc<dyn Member>], op: &str) {
        for m in members {
            if let Err(e) = m.write_atomic(&Self::path(op), &self.encode()) {
                tracing::warn!(member = %m.describe(), error = %e, "cannot save {op} checkpoint");
            }
        }
    }

    /// Remove the checkpoint of a finished operation.
    pub fn clear(members: &[Arc<dyn Member>], op: &str) -> Result<()> {
        for m in members {
            if let Err(e) = m.remove(&Self::path(op)) {
                tracing::warn!(member = %m.describe(), error = %e, "cannot remove {op} checkpoint");
            }
        }
        Ok(())
    }
}

/// Sort and deduplicate a file list (inode, size) into the order every
/// operation walks it.
pub(crate) fn sorted(files: impl IntoIterator<Item = (u64, u64)>) -> Vec<(u64, u64)> {
    let mut v: Vec<(u64, u64)> = files.into_iter().collect();
    v.sort_unstable();
    v.dedup_by_key(|f| f.0);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Asks to stop at its `n`th look.
    struct StopAt(AtomicU32, u32);

    impl Progress for StopAt {
        fn should_stop(&self) -> bool {
            self.0.fetch_add(1, Ordering::Relaxed) + 1 >= self.1
        }
    }

    #[test]
    fn a_throttled_sleep_ends_when_the_operation_is_asked_to_stop() {
        // At one byte a second, a megabyte would be due in eleven days: the
        // test returns only because the sleep looks at the stop request.
        let mut t = Throttle::new(1);
        let stop = StopAt(AtomicU32::new(0), 3);
        t.account(1 << 20, &stop);
        assert_eq!(
            stop.0.load(Ordering::Relaxed),
            3,
            "slept past the stop request"
        );
        // Unlimited: never sleeps, never asks.
        let mut t = Throttle::new(0);
        let never = StopAt(AtomicU32::new(0), u32::MAX);
        t.account(1 << 40, &never);
        assert_eq!(never.0.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn checkpoint_round_trip_and_corruption() {
        let c = Checkpoint {
            target: 2,
            ino: 77,
            stripe: 5,
            done: 1 << 20,
            member: Some([7; 16]),
        };
        let mut b = c.encode();
        assert_eq!(b.len(), 64);
        assert_eq!(Checkpoint::decode(&b), Some(c));
        b[20] ^= 4;
        assert_eq!(Checkpoint::decode(&b), None);
        let mut b = c.encode();
        b[50] ^= 1;
        assert_eq!(Checkpoint::decode(&b), None, "member UUID corrupt");
        let none = Checkpoint { member: None, ..c };
        assert_eq!(Checkpoint::decode(&none.encode()), Some(none));
    }

    /// A record of minor version 0 (44 bytes, no member UUID), as written
    /// before the UUID was kept, still reads.
    #[test]
    fn a_checkpoint_of_minor_version_0_still_reads() {
        let mut b = Vec::new();
        b.extend_from_slice(b"RFSCKPT\0");
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&2u32.to_le_bytes());
        b.extend_from_slice(&77u64.to_le_bytes());
        b.extend_from_slice(&5u64.to_le_bytes());
        b.extend_from_slice(&(1u64 << 20).to_le_bytes());
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        let c = Checkpoint::decode(&b).expect("an old record reads");
        assert_eq!(
            c,
            Checkpoint {
                target: 2,
                ino: 77,
                stripe: 5,
                done: 1 << 20,
                member: None,
            }
        );
    }
}
