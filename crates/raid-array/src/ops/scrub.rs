//! Scrub: read every chunk of every file, verify every block checksum and
//! every group's redundancy, and (with `repair`) rewrite what is wrong from
//! what is right.

use std::sync::Arc;

use crate::data::DataStore;
use crate::error::Result;
use crate::member::Member;

use super::{Checkpoint, Progress, Throttle, sorted};

const OP: &str = "scrub";
/// Where the last scrub's summary is kept on every writable member.
pub const SUMMARY_PATH: &str = ".raidfs/ops/last-scrub";
/// What an unfinished scrub found up to its checkpoint (the same record as
/// the summary, not complete), so that a resumed run reports the whole.
pub const TALLY_PATH: &str = ".raidfs/ops/scrub.tally";
const SUMMARY_MAGIC: &[u8; 8] = b"RFSSCRUB";
const SUMMARY_LEN: usize = 76;
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

/// The outcome of the last scrub, kept on the members so that `raidfs
/// status` still shows it after a remount; also the tally of an unfinished
/// one ([`TALLY_PATH`]).
///
/// ```text
///  0 magic          8  "RFSSCRUB"
///  8 major          2  1
/// 10 minor          2  1
/// 12 flags          4  bit 0 repair, bit 1 complete
/// 16 finished_unix  8  seconds since the Unix epoch
/// 24 bytes          8
/// 32 mismatches     8
/// 40 redundancy_mismatches 8
/// 48 repaired       8
/// 56 unrecoverable  8
/// 64 files          8  files visited (minor 1; zero in minor 0)
/// 72 crc            4  CRC32 of bytes 0..72
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScrubSummary {
    pub finished_unix: u64,
    pub files: u64,
    pub repair: bool,
    pub complete: bool,
    pub bytes: u64,
    pub mismatches: u64,
    pub redundancy_mismatches: u64,
    pub repaired: u64,
    pub unrecoverable: u64,
}

impl ScrubSummary {
    /// The summary of `rep`, finished now.
    pub fn of(rep: &ScrubReport, repair: bool) -> Self {
        ScrubSummary {
            finished_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            repair,
            complete: rep.complete,
            files: rep.files,
            bytes: rep.bytes,
            mismatches: rep.mismatches,
            redundancy_mismatches: rep.redundancy_mismatches,
            repaired: rep.repaired,
            unrecoverable: rep.unrecoverable,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(SUMMARY_LEN);
        b.extend_from_slice(SUMMARY_MAGIC);
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        let flags = u32::from(self.repair) | (u32::from(self.complete) << 1);
        b.extend_from_slice(&flags.to_le_bytes());
        for v in [
            self.finished_unix,
            self.bytes,
            self.mismatches,
            self.redundancy_mismatches,
            self.repaired,
            self.unrecoverable,
            self.files,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decode; `None` for anything damaged or of another major version.
    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() != SUMMARY_LEN
            || &b[..8] != SUMMARY_MAGIC
            || u16::from_le_bytes([b[8], b[9]]) != 1
        {
            return None;
        }
        let crc = u32::from_le_bytes([b[72], b[73], b[74], b[75]]);
        if crc != crc32fast::hash(&b[..72]) {
            return None;
        }
        let u64_at = |o: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[o..o + 8]);
            u64::from_le_bytes(a)
        };
        let flags = u32::from_le_bytes([b[12], b[13], b[14], b[15]]);
        Some(ScrubSummary {
            finished_unix: u64_at(16),
            repair: flags & 1 != 0,
            complete: flags & 2 != 0,
            files: u64_at(64),
            bytes: u64_at(24),
            mismatches: u64_at(32),
            redundancy_mismatches: u64_at(40),
            repaired: u64_at(48),
            unrecoverable: u64_at(56),
        })
    }

    /// Save on every member given; failures are logged (a lost summary
    /// only hides history).
    pub fn save(&self, members: &[Arc<dyn Member>]) {
        self.save_at(members, SUMMARY_PATH);
    }

    fn save_at(&self, members: &[Arc<dyn Member>], path: &str) {
        let bytes = self.encode();
        for m in members {
            if let Err(e) = m.write_atomic(path, &bytes) {
                tracing::warn!(member = %m.describe(), error = %e, "cannot save the scrub summary");
            }
        }
    }

    /// The newest summary found on any of `members`.
    pub fn load(members: &[Arc<dyn Member>]) -> Option<Self> {
        members
            .iter()
            .filter_map(|m| m.read_all(SUMMARY_PATH).ok())
            .filter_map(|b| Self::decode(&b))
            .max_by_key(|s| s.finished_unix)
    }
}

/// Scrub the given files (inode, logical size).
pub fn scrub(
    store: &DataStore,
    files: impl IntoIterator<Item = (u64, u64)>,
    opts: ScrubOptions,
    progress: &dyn Progress,
) -> Result<ScrubReport> {
    scrub_live(store, files, &|_, size| Some(size), opts, progress)
}

/// [`scrub`] of a list taken from a namespace that changes while it runs:
/// `now(ino, listed_size)` tells, asked under the file's write lock, the
/// size of a file still striped, `None` for one deleted (or made inline)
/// since. A file deleted meanwhile is no loss, and the stripes a
/// truncation took away are not read.
pub fn scrub_live(
    store: &DataStore,
    files: impl IntoIterator<Item = (u64, u64)>,
    now: &dyn Fn(u64, u64) -> Option<u64>,
    opts: ScrubOptions,
    progress: &dyn Progress,
) -> Result<ScrubReport> {
    let files = sorted(files);
    let total: u64 = files.iter().map(|f| f.1).sum();
    let members: Vec<Arc<dyn Member>> = store.writable_members();
    let (start, mut rep) = if opts.resume {
        resume_point(&members, opts.repair)
    } else {
        (None, ScrubReport::default())
    };
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
        // Counted once its first step is done (or at once if it has no
        // stripes): a file the last part stopped inside was counted then,
        // one it stopped before was not.
        let mut counted = first > 0;
        let stripes = layout.stripes_for(size);
        if stripes == 0 {
            rep.files += 1;
            counted = true;
        }
        let mut s = first;
        while s < stripes {
            if progress.should_stop() {
                save_point(&members, &rep, opts.repair, ino, s, done);
                return Ok(rep);
            }
            // Holes on every readable member (never written, or punched)
            // hold nothing to verify: passed over, so a sparse file costs
            // what it holds, not its size.
            // (A file deleted or cut meanwhile is left to the step below.)
            let next = {
                let _g = store.lock_write(ino);
                match now(ino, size) {
                    Some(n) => store
                        .next_stored_stripe(ino, s, |_, _| false)
                        .map_or(stripes, |x| x.min(stripes))
                        .min(layout.stripes_for(n).max(s)),
                    None => s,
                }
            };
            if next > s {
                done += layout.data_bytes(s, next, size);
                if !counted {
                    rep.files += 1;
                    counted = true;
                }
                progress.update(done, total);
                s = next;
                continue;
            }
            let mut until = (s + STRIPES_PER_STEP).min(stripes);
            {
                let _g = store.lock_write(ino);
                let left = now(ino, size).map_or(0, |n| layout.stripes_for(n));
                until = until.min(left.max(s));
                for st in s..until {
                    let plan = layout.plan(ino, st)?;
                    for g in &plan.groups {
                        let scan = store.scan_group(ino, st, g, 0, chunk, opts.repair);
                        rep.mismatches += scan.mismatches;
                        rep.repaired += scan.repaired;
                        rep.unrecoverable += scan.lost.len() as u64;
                        // Row by row: a lost block leaves only its own row's
                        // redundancy unchecked.
                        let differ = store.fix_redundancy(ino, st, g, 0, &scan, opts.repair)?;
                        rep.redundancy_mismatches += differ.len() as u64;
                        if opts.repair {
                            rep.repaired += differ.len() as u64;
                        }
                    }
                }
            }
            if until <= s {
                // Deleted or truncated under the scrub: the rest of it is
                // not there to check, and counts as done.
                done += size.saturating_sub(s * layout.stripe_data);
                progress.update(done, total);
                break;
            }
            let bytes = layout.data_bytes(s, until, size);
            done += bytes;
            rep.bytes += bytes;
            if !counted {
                rep.files += 1;
                counted = true;
            }
            throttle.account(bytes, progress);
            progress.update(done, total);
            s = until;
        }
        if last_save.elapsed() >= super::CHECKPOINT_EVERY {
            save_point(&members, &rep, opts.repair, ino + 1, 0, done);
            last_save = std::time::Instant::now();
        }
    }
    Checkpoint::clear(&members, OP)?;
    for m in &members {
        if let Err(e) = m.remove(TALLY_PATH)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(member = %m.describe(), error = %e, "cannot remove the scrub tally");
        }
    }
    rep.complete = true;
    Ok(rep)
}

/// Save where the scrub stands: its tally first, then the checkpoint that
/// points past it (the tally's bytes equal the checkpoint's, which is how
/// a resume knows the two belong together).
fn save_point(
    members: &[Arc<dyn Member>],
    rep: &ScrubReport,
    repair: bool,
    ino: u64,
    stripe: u64,
    done: u64,
) {
    ScrubSummary::of(rep, repair).save_at(members, TALLY_PATH);
    Checkpoint {
        target: u32::MAX,
        ino,
        stripe,
        done,
        member: None,
    }
    .save(members, OP);
}

/// Where a resumed scrub starts, and what the earlier part found. A run
/// of the other kind (a check resumed as a repair, or the reverse) starts
/// over: a repair must visit what the check only counted, and either
/// summary must speak for the whole array. So does a checkpoint without
/// its tally.
fn resume_point(members: &[Arc<dyn Member>], repair: bool) -> (Option<Checkpoint>, ScrubReport) {
    let Some(c) = Checkpoint::load(members, OP) else {
        return (None, ScrubReport::default());
    };
    let tally = members
        .iter()
        .filter_map(|m| m.read_all(TALLY_PATH).ok())
        .filter_map(|b| ScrubSummary::decode(&b))
        .find(|t| !t.complete && t.bytes == c.done);
    match tally {
        Some(t) if t.repair == repair => (
            Some(c),
            ScrubReport {
                files: t.files,
                bytes: t.bytes,
                mismatches: t.mismatches,
                redundancy_mismatches: t.redundancy_mismatches,
                repaired: t.repaired,
                unrecoverable: t.unrecoverable,
                complete: false,
            },
        ),
        Some(_) => {
            tracing::info!(
                repair,
                "the interrupted scrub was of the other kind: starting over"
            );
            (None, ScrubReport::default())
        }
        None => {
            tracing::info!("the interrupted scrub's findings are not on record: starting over");
            (None, ScrubReport::default())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_round_trip_and_corruption() {
        let s = ScrubSummary {
            finished_unix: 1_800_000_000,
            files: 12,
            repair: true,
            complete: false,
            bytes: 1 << 33,
            mismatches: 3,
            redundancy_mismatches: 1,
            repaired: 4,
            unrecoverable: 0,
        };
        let mut b = s.encode();
        assert_eq!(b.len(), SUMMARY_LEN);
        assert_eq!(ScrubSummary::decode(&b), Some(s));
        b[30] ^= 1;
        assert_eq!(ScrubSummary::decode(&b), None);
    }
}
