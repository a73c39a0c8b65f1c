//! Whether some member's disk is close to full, looked up cheaply.
//!
//! Far from full, the chunks of a write go straight to the members. Close
//! to full, each member first makes room for its part
//! ([`crate::member::MemberFile::allocate`]), so that a disk that fills up
//! refuses the whole write before any member has changed. A write cut short
//! half-way leaves new chunks beside old parity, and putting that right
//! needs space that the full disk lacks: the partly rewritten last block of
//! a file could end up unreadable, or a member be failed for being full.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::member::Member;

/// Free space on a member's filesystem below which writes make room first:
/// far more than the writes in flight between two looks (a second of the
/// fastest sequential write is a few hundred MiB).
pub(crate) const LOW_WATER: u64 = 1 << 30;
/// How long one look at the members' free space is reused.
const RECHECK: Duration = Duration::from_millis(200);

pub(crate) struct LowSpace {
    start: Instant,
    /// Milliseconds since `start` of the last look, plus one (0: never).
    checked: AtomicU64,
    low: AtomicBool,
}

impl Default for LowSpace {
    fn default() -> Self {
        LowSpace {
            start: Instant::now(),
            checked: AtomicU64::new(0),
            low: AtomicBool::new(false),
        }
    }
}

impl LowSpace {
    /// Whether some member in `members` has less than [`LOW_WATER`] free
    /// (one whose space cannot be read counts as low).
    pub(crate) fn is_low<'a>(&self, members: impl Iterator<Item = &'a Arc<dyn Member>>) -> bool {
        let now = u64::try_from(self.start.elapsed().as_millis())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1);
        let checked = self.checked.load(Ordering::Relaxed);
        if checked != 0 && now.saturating_sub(checked) < RECHECK.as_millis() as u64 {
            return self.low.load(Ordering::Relaxed);
        }
        let low = members
            .into_iter()
            .any(|m| m.space().map_or(true, |(_, avail)| avail < LOW_WATER));
        self.low.store(low, Ordering::Relaxed);
        self.checked.store(now, Ordering::Relaxed);
        low
    }
}
