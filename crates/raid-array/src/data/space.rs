//! Whether some member's disk is close to full, looked up cheaply.
//!
//! Far from full, the chunks of a write go straight to the members. Close
//! to full, each member first makes room for its part
//! ([`crate::member::MemberFile::allocate`]), so that a disk that fills up
//! refuses the whole write before any member has changed. A write cut short
//! half-way leaves new chunks beside old parity, and putting that right
//! needs space that the full disk lacks: the partly rewritten last block of
//! a file could end up unreadable, or a member be failed for being full.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Free space on a member's filesystem below which writes make room first:
/// far more than the writes in flight between two looks (a second of the
/// fastest sequential write is a few hundred MiB).
pub(crate) const LOW_WATER: u64 = 1 << 30;
/// How long one look at the members' free space is reused.
pub(crate) const RECHECK: Duration = Duration::from_millis(200);

/// A yes-or-no answer that costs system calls (free space), asked on a
/// hot path and worked out again at most once every `every`.
pub struct Recheck {
    every: Duration,
    start: Instant,
    /// Milliseconds since `start` of the last look, plus one (0: never).
    checked: AtomicU64,
    answer: AtomicBool,
}

impl Recheck {
    pub fn new(every: Duration) -> Self {
        Recheck {
            every,
            start: Instant::now(),
            checked: AtomicU64::new(0),
            answer: AtomicBool::new(false),
        }
    }

    /// The last answer of `look` if younger than `every`, else `look`'s
    /// answer now.
    pub fn get(&self, look: impl FnOnce() -> bool) -> bool {
        let now = u64::try_from(self.start.elapsed().as_millis())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1);
        let checked = self.checked.load(Ordering::Relaxed);
        if checked != 0 && now.saturating_sub(checked) < self.every.as_millis() as u64 {
            return self.answer.load(Ordering::Relaxed);
        }
        let answer = look();
        self.answer.store(answer, Ordering::Relaxed);
        self.checked.store(now, Ordering::Relaxed);
        answer
    }
}
