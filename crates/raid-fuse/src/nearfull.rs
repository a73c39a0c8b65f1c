//! Files opened for writing while the array is nearly full bypass the
//! kernel's page cache.
//!
//! With the writeback cache, `write(2)` only copies bytes into the kernel's
//! pages; a full array refuses them later, at write-back, and the writer
//! hears of it only at `fsync` or `close`. A shell's `echo x > f` checks
//! neither, and until the pages leave the cache the kernel shows bytes the
//! array never stored. So once the array is close to full, a file opened
//! for writing is opened for direct I/O (`FOPEN_DIRECT_IO`): each `write(2)`
//! goes to the daemon and ENOSPC comes back from the call that caused it,
//! as on a local disk. Far from full, files keep the cache and its speed.
//!
//! "Close to full" is what the kernel could still hold dirty for this mount
//! (a FUSE mount may keep about 1 % of the machine's dirty-page limit) with
//! a wide margin: less than [`MARGIN`] of usable space (a quarter of a
//! smaller array's capacity, so that a small array is not always on the
//! slow path), a member short of
//! space (its reserve given up, [`raid_array::Array::short_of_space`]), or
//! a write answered ENOSPC in the last [`ENOSPC_MEMORY`] (members of
//! uneven sizes can fill before the usable space says so).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use raid_array::Array;
use raid_array::data::space::Recheck;

/// Usable space below which files are opened for direct I/O.
pub const MARGIN: u64 = 256 << 20;
/// How long a write refused for space keeps new opens on direct I/O.
pub const ENOSPC_MEMORY: Duration = Duration::from_secs(60);
/// How long a look at the members' free space is reused: opens are
/// frequent and `statfs` asks every member.
const RECHECK: Duration = Duration::from_millis(500);

/// Whether the array is close to full, looked up cheaply.
pub struct NearFull {
    start: Instant,
    /// Whether a look at free space found less than [`MARGIN`].
    low: Recheck,
    /// Milliseconds since `start` of the last ENOSPC, plus one (0: none).
    refused: AtomicU64,
}

impl Default for NearFull {
    fn default() -> Self {
        NearFull {
            start: Instant::now(),
            low: Recheck::new(RECHECK),
            refused: AtomicU64::new(0),
        }
    }
}

impl NearFull {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1)
    }

    /// A write was refused for want of space.
    pub fn note_refused(&self) {
        self.refused.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Whether a file opened for writing now should bypass the cache.
    pub fn near_full(&self, array: &Array) -> bool {
        let refused = self.refused.load(Ordering::Relaxed);
        if refused != 0 && self.now_ms().saturating_sub(refused) < ENOSPC_MEMORY.as_millis() as u64
        {
            return true;
        }
        if array.short_of_space() {
            return true;
        }
        self.low.get(|| {
            // An array whose free space cannot be read counts as roomy:
            // this only chooses how writes travel, never whether they may.
            array
                .statfs()
                .map(|s| {
                    let bsize = u64::from(s.bsize);
                    let margin = MARGIN.min(s.blocks.saturating_mul(bsize) / 4);
                    s.bavail.saturating_mul(bsize) < margin
                })
                .unwrap_or(false)
        })
    }
}
