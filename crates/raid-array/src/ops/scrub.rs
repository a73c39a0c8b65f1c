//! Scrub: read every chunk of every file, verify every block checksum and
//! every group's redundancy, and (with `repair`) rewrite what is wrong from
//! what is right.

use std::sync::Arc;

use crate::data::DataStore;
use crate::error::Result;
use crate::member::Member;

use super::{Checkpoint, Progress, Throttle, sorted};

const OP: &str = "scrub";
/// Stripes checked per hold of a file's write lock.
const STRIPES_PER_STEP: u64 = 16;

/// How to scrub.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScrubOptions {
    /// Rewrite bad blocks and inconsistent redundancy (otherwise only count).
    pub repair: bool,
    /// Byte rate limit over member reads (0 = unlimited).
    pub throttle_bytes_per_sec: u64,
    /// Continue from the saved checkpoint if there is one.
    pub resume: bool,
}

/// What a scrub found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScrubReport {
    /// Files visited.
    pub files: u64,
    /// Logical bytes checked.
    pub bytes: u64,
    /// Blocks whose checksum failed or could not be read.
    pub mismatches: u64,
    /// Parity or mirror chunks that did not match their data.
    pub redundancy_mismatches: u64,
    /// Blocks and redundancy chunks rewritten.
    pub repaired: u64,
    /// Blocks that could not be rebuilt (their reads return EIO).
    pub unrecoverable: u64,
    /// False when stopped early through [`Progress::should_stop`].
    pub complete: bool,
}

/// Scrub the given files (inode, logical size).
pub fn scrub(
    store: &DataStore,
    files: impl IntoIterator<Item = (u64, u64)>,
    opts: ScrubOptions,
    progress: &dyn Progress,
) -> Result<ScrubReport> {
    let files = sorted(files);
    let total: u64 = files.iter().map(|f| f.1).sum();
    let members: Vec<Arc<dyn Member>> = store.writable_members();
    let start = if opts.resume {
        Checkpoint::load(&members, OP)
    } else {
        None
    };
    let mut rep = ScrubReport::default();
    let mut done = start.map_or(0, |c| c.done);
    let mut throttle = Throttle::new(opts.throttle_bytes_per_sec);
    let mut last_save = std::time::Instant::now();
    let layout = &store.layout;
    let chunk = layout.chunk as usize;
    for &(ino, size) in &files {
        let mut first = 0;
        if let Some(c) = start {
            if ino < c.ino {
                continue;
            }
            if ino == c.ino {
                first = c.stripe;
            }
        }
        rep.files += 1;
        let stripes = layout.stripes_for(size);
        let mut s = first;
        while s < stripes {
            if progress.should_stop() {
                Checkpoint {
                    target: u32::MAX,
                    ino,
                    stripe: s,
                    done,
                }
                .save(&members, OP);
                return Ok(rep);
            }
            let until = (s + STRIPES_PER_STEP).min(stripes);
            {
                let _g = store.lock_write(ino);
                for st in s..until {
                    let plan = layout.plan(ino, st)?;
                    for g in &plan.groups {
                        let scan = store.scan_group(ino, st, g, 0, chunk, opts.repair);
                        rep.mismatches += scan.mismatches;
                        rep.repaired += scan.repaired;
                        rep.unrecoverable += scan.lost.len() as u64;
                        if scan.lost.is_empty() {
                            let differ = store.fix_redundancy(ino, st, g, 0, &scan, opts.repair)?;
                            rep.redundancy_mismatches += differ.len() as u64;
                            if opts.repair {
                                rep.repaired += differ.len() as u64;
                            }
                        }
                    }
                }
            }
            let bytes =
                ((until - s) * layout.stripe_data).min(size.saturating_sub(s * layout.stripe_data));
            done += bytes;
            rep.bytes += bytes;
            throttle.account(bytes);
            progress.update(done, total);
            s = until;
        }
        if last_save.elapsed() >= super::CHECKPOINT_EVERY {
            Checkpoint {
                target: u32::MAX,
                ino: ino + 1,
                stripe: 0,
                done,
            }
            .save(&members, OP);
            last_save = std::time::Instant::now();
        }
    }
    Checkpoint::clear(&members, OP)?;
    rep.complete = true;
    Ok(rep)
}
