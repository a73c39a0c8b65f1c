//! Rebuild: reconstruct one member's chunks of every file onto a new
//! member (a fresh directory or a hot spare), online, then mark it active.
//!
//! The new member is in the slot in state `Rebuilding` (put there by the
//! caller) before the rebuild starts: new writes go to it, reads never come
//! from it. Each step takes a file's
//! write lock for a batch of stripes (so no write lands between a stripe's
//! reads and the write of its rebuilt chunk) and works through it in
//! sub-batches: the other members of the affected groups are read in
//! parallel (one contiguous read each) while the previous sub-batch's
//! chunks are rebuilt and written as one contiguous write, around the page
//! cache (`O_DIRECT` from an aligned buffer, see
//! [`crate::member::Member::open_direct`]; through the page cache where the
//! filesystem refuses it) with the checksums computed beside it. A flusher
//! thread writes back what still goes through the page cache (checksums,
//! or everything without `O_DIRECT`) as it goes, and rebuilt files are
//! synced before a checkpoint is saved and before the member is marked
//! active, so a resumed run never skips chunks that were lost. A surviving
//! member's block that reads bad is rebuilt and rewritten on it as a read
//! would do (where enough redundancy is left). Blocks that
//! cannot be rebuilt are written as *poisoned* (a checksum that cannot
//! match), so they read as EIO later, never as zeros.
//!
//! When another member fails under it and the target's chunks can no
//! longer be rebuilt from what is left (as md aborts a recovery when the
//! array fails), the rebuild stops with an error before it writes anything
//! of the stripes it could not rebuild: the target stays rebuilding, with a
//! checkpoint at the step that failed, and is never made active; it resumes
//! once the lost member is back. A re-add stops the same way: it never
//! writes poison over the returning member's blocks for want of sources,
//! nor keeps them (they may be older than what was written while it was
//! out).

use std::sync::Arc;
use std::time::Instant;

use tracing::{info, warn};

use crate::data::checksum::BLOCK;
use crate::data::direct::AlignedBuf;
use crate::data::layout::{Plan, Protect};
use crate::data::{DataStore, pool};
use crate::error::{ArrayError, Result};
use crate::member::{Member, MemberFile};

use super::flusher::{FLUSH_EVERY, Flusher};
use super::{Checkpoint, Progress, Throttle, sorted};

const OP: &str = "rebuild";

/// The error of a rebuild whose target failed (a write to it failed) while
/// it was being rebuilt.
fn target_failed(slot: usize) -> ArrayError {
    ArrayError::ArrayFailed(format!(
        "rebuild target slot {slot} failed during the rebuild"
    ))
}

/// The error of a rebuild stopped because members it rebuilds from failed
/// under it: what is left cannot rebuild `slot`'s chunks.
fn no_redundancy(store: &DataStore, slot: usize) -> ArrayError {
    let failed: Vec<String> = (0..store.layout.members)
        .filter(|&m| m != slot && !store.health.state(m).readable())
        .map(|m| m.to_string())
        .collect();
    let who = match failed.as_slice() {
        [one] => format!("member {one} failed"),
        many => format!("members {} failed", many.join(", ")),
    };
    ArrayError::ArrayFailed(format!(
        "rebuild of member {slot} stopped: {who}, the array no longer has the \
         redundancy to rebuild it"
    ))
}

/// Whether the chunks of `slot` can still be rebuilt from the members
/// readable now.
fn can_rebuild(store: &DataStore, slot: usize) -> bool {
    store.layout.can_rebuild(&store.health, slot)
}

/// Member bytes rebuilt per hold of a file's write lock.
const STEP_BYTES: u64 = 8 << 20;
/// Member bytes read from each survivor at a time within a step.
const SUB_BYTES: u64 = 2 << 20;

/// How to rebuild.
#[derive(Debug, Clone, Copy, Default)]
pub struct RebuildOptions {
    /// Byte rate limit over bytes written to the new member (0 = unlimited).
    pub throttle_bytes_per_sec: u64,
    /// Continue from the saved checkpoint if there is one for this slot.
    pub resume: bool,
    /// Rebuild a member coming back whole, discarding its data, even where
    /// a re-add (only the files changed since it left) would do.
    pub full: bool,
}

/// What a rebuild did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RebuildReport {
    pub files: u64,
    /// Bytes written to the new member.
    pub bytes: u64,
    /// Blocks that could not be rebuilt (poisoned: they read as EIO).
    pub unrecoverable: u64,
    /// Of `bytes`, those written around the page cache (`O_DIRECT`); 0
    /// where the new member's filesystem refuses direct I/O.
    pub direct_bytes: u64,
    /// False when stopped early through [`Progress::should_stop`].
    pub complete: bool,
    /// A re-add: the member came back with its data, and only the files
    /// changed since it left were rebuilt (`files` of them).
    pub readd: bool,
    /// Files a re-add left as the member held them.
    pub kept_files: u64,
    /// Shards of files deleted while the member was out, removed by a re-add.
    pub removed_files: u64,
}

/// The namespace's side of a rebuild: its file list was taken when it
/// began, and files are deleted while it runs.
pub trait FileCheck: Sync {
    /// Whether `ino` is still a striped file (not deleted, nor gone from
    /// the data path, since the list was made). Asked with the file's
    /// write lock held; a file deleted is gone from the namespace before
    /// its shards are removed, so while this holds, its shards are there.
    fn striped(&self, ino: u64) -> bool;
    /// Make durable what made files found gone so (before a checkpoint
    /// passes them or the member is marked active: a crash must not bring
    /// back a file the rebuild skipped).
    fn settle(&self) -> Result<()>;
}

/// What the array tells a rebuild beyond its options.
#[derive(Clone, Copy, Default)]
pub struct RebuildTarget<'a> {
    /// The UUID of the member being rebuilt. Its checkpoints carry it, and
    /// only a checkpoint of this member (or one written before checkpoints
    /// named their member) is resumed from: never one left by an abandoned
    /// rebuild of the same slot onto another member.
    pub member_uuid: Option<[u8; 16]>,
    /// Which files of the list still exist; `None`: all of them.
    pub files: Option<&'a dyn FileCheck>,
}

/// Rebuild slot `slot` onto `new_member`, for the given files (inode, size).
///
/// The caller has put the target in the slot in state rebuilding (as a
/// replace or a spare's takeover does), so that it takes writes from then
/// on. A target that is not rebuilding any more when this starts (a write
/// to it failed meanwhile, so it missed that write) is left failed: the
/// rebuild returns the target-failed error without touching it.
pub fn rebuild(
    store: &DataStore,
    slot: usize,
    new_member: Arc<dyn Member>,
    files: impl IntoIterator<Item = (u64, u64)>,
    opts: RebuildOptions,
    progress: &dyn Progress,
) -> Result<RebuildReport> {
    let target = RebuildTarget::default();
    rebuild_onto(store, slot, new_member, files, opts, progress, &target)
}

/// [`rebuild`], with what the array knows of the target member.
pub fn rebuild_onto(
    store: &DataStore,
    slot: usize,
    new_member: Arc<dyn Member>,
    files: impl IntoIterator<Item = (u64, u64)>,
    opts: RebuildOptions,
    progress: &dyn Progress,
    target: &RebuildTarget<'_>,
) -> Result<RebuildReport> {
    let layout = &store.layout;
    if slot >= layout.members {
        return Err(ArrayError::Invalid(format!("no member slot {slot}")));
    }
    let files = sorted(files);
    let total: u64 = files.iter().map(|f| f.1).sum();
    let others: Vec<Arc<dyn Member>> = store.writable_members();
    let ours = |c: &Checkpoint| {
        c.target as usize == slot
            && (c.member.is_none()
                || target.member_uuid.is_none()
                || c.member == target.member_uuid)
    };
    let start = if opts.resume {
        Checkpoint::load_matching(&others, OP, ours)
    } else {
        None
    };
    let mut done = start.map_or(0, |c| c.done);
    // Only a target still rebuilding is rebuilt: one failed since it was
    // put in the slot (it missed a write) stays failed, never to be made
    // active without what it missed.
    if !store.health.advance_rebuild(slot, done) {
        return Err(target_failed(slot));
    }
    store.set_member(slot, Some(new_member.clone()));
    let mut members = others.clone();
    members.push(new_member.clone());
    let checkpoint = |ino: u64, stripe: u64, done: u64| Checkpoint {
        target: slot as u32,
        ino,
        stripe,
        done,
        member: target.member_uuid,
    };
    if start.is_none() {
        // A run from the start replaces, durably and before it writes
        // anything, whatever checkpoint an earlier run of the slot left:
        // a crash before its own first checkpoint must not resume from
        // where another run onto another member stopped.
        checkpoint(0, 0, 0).save(&members, OP);
    }
    info!(
        slot,
        files = files.len(),
        resume = start.is_some(),
        "rebuild started"
    );
    let chunk = layout.chunk;
    let per_step = (STEP_BYTES / chunk).max(1);
    let mut rep = RebuildReport::default();
    let mut throttle = Throttle::new(opts.throttle_bytes_per_sec);
    let mut trio: [Batch; 3] = Default::default();
    let mut last_save = Instant::now();
    // Files written since their last sync: synced before a checkpoint is
    // saved (a resumed run must not skip chunks lost with the page cache)
    // and before the member is marked active.
    let mut unsynced: Vec<u64> = Vec::new();
    let mut since_flush = 0u64;
    let live = |ino: u64| target.files.is_none_or(|f| f.striped(ino));
    // A file was found gone since the namespace was last made durable.
    let mut skipped = false;
    let settle = |skipped: &mut bool| -> Result<()> {
        if std::mem::take(skipped)
            && let Some(f) = target.files
        {
            f.settle()?;
        }
        Ok(())
    };
    let finished = std::thread::scope(|sc| -> Result<bool> {
        let flusher = Flusher::start(sc, new_member.clone());
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
            // Its shard is made on the new member only for a file that
            // still exists, checked under its lock (a file deleted since
            // the list was made is skipped, and no shard of it is made).
            let opened = {
                let _g = store.lock_write(ino);
                if live(ino) {
                    let direct = open_target(store, slot, &new_member, ino)?;
                    // What the file grew to by writes that did not reach
                    // the new member (they began before it took writes) is
                    // rebuilt too.
                    let stripes = layout.stripes_for(size).max(store.stored_stripes(ino));
                    Some((direct, stripes))
                } else {
                    None
                }
            };
            let Some((direct, stripes)) = opened else {
                info!(slot, ino, "file deleted since the rebuild began: skipped");
                skipped = true;
                done += size.saturating_sub(first * layout.stripe_data);
                continue;
            };
            rep.files += 1;
            unsynced.push(ino);
            let mut s = first;
            while s < stripes {
                if progress.should_stop() {
                    if !store.health.state(slot).writable() {
                        // Stopped because the target failed: nothing of
                        // this run is to be continued.
                        return Ok(false);
                    }
                    sync_files(store, &mut unsynced)?;
                    settle(&mut skipped)?;
                    checkpoint(ino, s, done).save(&members, OP);
                    return Ok(false);
                }
                if !can_rebuild(store, slot) {
                    // Members it rebuilds from failed: stopped as an
                    // interrupted run is, to resume from this step (none of
                    // whose chunks was written) once they are back.
                    sync_files(store, &mut unsynced)?;
                    settle(&mut skipped)?;
                    checkpoint(ino, s, done).save(&members, OP);
                    let e = no_redundancy(store, slot);
                    warn!(slot, ino, stripe = s, error = %e, "rebuild stopped");
                    return Err(e);
                }
                // Stripes that are holes on every readable member (never
                // written, or punched) have nothing to rebuild: the new
                // member keeps holes there too, which read as zeros as
                // theirs do. A sparse file costs what it holds, not its
                // size (a `truncate -s 1P` file took the rebuild forever).
                let next = {
                    let _g = store.lock_write(ino);
                    if live(ino) {
                        // The target too: a returning member (a re-add)
                        // keeps old bytes where the others now have holes.
                        store
                            .next_stored_stripe(ino, s, |j, _| j == slot)
                            .map_or(stripes, |n| n.min(stripes))
                    } else {
                        // Deleted: the step below removes its new shard.
                        s
                    }
                };
                if next > s {
                    done += layout.data_bytes(s, next, size);
                    if !store.health.advance_rebuild(slot, done) {
                        return Err(target_failed(slot));
                    }
                    progress.update(done, total);
                    s = next;
                    continue;
                }
                let until = (s + per_step).min(stripes);
                let lost = {
                    let _g = store.lock_write(ino);
                    if live(ino) {
                        let r = step(store, slot, ino, s..until, &mut trio, direct.as_ref());
                        match r {
                            Ok(n) => Some(n),
                            // The step stopped for want of sources: the
                            // check above stops the run at this step.
                            Err(_)
                                if store.health.state(slot).writable()
                                    && !can_rebuild(store, slot) =>
                            {
                                continue;
                            }
                            Err(e) => return Err(e),
                        }
                    } else {
                        // Deleted meanwhile: what this run wrote of it on
                        // the new member goes too.
                        if let Err(e) = store.remove_shard_locked(slot, ino) {
                            warn!(slot, ino, error = %e, "cannot remove the shard of a deleted file");
                        }
                        None
                    }
                };
                let Some(lost) = lost else {
                    info!(slot, ino, "file deleted during the rebuild: skipped");
                    skipped = true;
                    unsynced.retain(|&i| i != ino);
                    done += size.saturating_sub(s * layout.stripe_data);
                    break;
                };
                rep.unrecoverable += lost;
                let bytes = (until - s) * chunk;
                rep.bytes += bytes;
                if direct.is_direct() {
                    rep.direct_bytes += bytes;
                }
                done += layout.data_bytes(s, until, size);
                if !store.health.advance_rebuild(slot, done) {
                    return Err(target_failed(slot));
                }
                since_flush += bytes;
                if since_flush >= FLUSH_EVERY {
                    flusher.request(ino);
                    since_flush = 0;
                }
                throttle.account(bytes, progress);
                progress.update(done, total);
                s = until;
            }
            if last_save.elapsed() >= super::CHECKPOINT_EVERY {
                sync_files(store, &mut unsynced)?;
                settle(&mut skipped)?;
                checkpoint(ino + 1, 0, done).save(&members, OP);
                last_save = Instant::now();
            }
        }
        Ok(true)
    })?;
    if !finished {
        return Ok(rep);
    }
    sync_files(store, &mut unsynced)?;
    settle(&mut skipped)?;
    if !store.health.finish_rebuild(slot) {
        return Err(target_failed(slot));
    }
    store.persist_intent()?;
    Checkpoint::clear(&members, OP)?;
    if rep.unrecoverable > 0 {
        warn!(
            slot,
            blocks = rep.unrecoverable,
            "rebuild finished with unrecoverable blocks"
        );
    }
    info!(slot, bytes = rep.bytes, "rebuild finished");
    rep.complete = true;
    Ok(rep)
}

/// Create the shard of `ino` on the target (caller holds the file's write
/// lock) and open the handle the rebuilt chunks go through: one of its own
/// that bypasses the page cache where the filesystem allows it; racing
/// writes keep using the ordinary one (the kernel keeps the two coherent,
/// and the file lock orders them). A failure fails the target.
fn open_target(
    store: &DataStore,
    slot: usize,
    new_member: &Arc<dyn Member>,
    ino: u64,
) -> Result<Arc<dyn MemberFile>> {
    store
        .ensure_shard(slot, ino)
        .and_then(|()| new_member.open_direct(&store_path(ino)))
        .map_err(|e| {
            store.health.count_write_error(slot);
            store
                .health
                .mark_failed(slot, &format!("rebuild target: {e}"));
            ArrayError::MemberIo {
                member: slot,
                path: store_path(ino),
                context: "create shard".into(),
                source: e,
            }
        })
}

/// Make the files in `inos` durable on every writable member (the new one
/// included) and empty the list.
fn sync_files(store: &DataStore, inos: &mut Vec<u64>) -> Result<()> {
    for ino in inos.drain(..) {
        store.sync(ino)?;
    }
    Ok(())
}

fn store_path(ino: u64) -> String {
    crate::data::shard::shard_path(ino)
}

/// One sub-batch of a step: the stripes, the survivors' reads and the
/// rebuilt output. Three of them rotate, so one is read while another is
/// rebuilt and the third written; every byte is overwritten before it is
/// used.
#[derive(Default)]
struct Batch {
    first: u64,
    until: u64,
    /// Plan of each stripe and the index of the group holding `slot`.
    plans: Vec<(Arc<Plan>, usize)>,
    /// One buffer per member (empty when it feeds no group here).
    bufs: Vec<Vec<u8>>,
    /// Per member: bad blocks of its read (None: unreadable or not read).
    bad: Vec<Option<Vec<usize>>>,
    /// Aligned, so its write can bypass the page cache.
    out: AlignedBuf,
    /// Byte offsets in `out` of the blocks that could not be rebuilt
    /// (zeros, to be poisoned).
    lost: Vec<usize>,
}

/// Rebuild `stripes` of `ino` on `slot`; returns blocks lost. Fails,
/// before the write of any stripe it could not rebuild, when members it
/// rebuilds from failed and what is left cannot rebuild `slot`.
/// The caller holds the file's write lock, so no write lands between the
/// reads of a stripe and the write of its rebuilt chunk. The range is done
/// in sub-batches of [`SUB_BYTES`] per member, in a pipeline of three on
/// the I/O pool (no thread is started per step): while one sub-batch is
/// written, the next is rebuilt and the one after it read. The write is
/// its own stage because a direct write returns only once the disk has the
/// data: were it behind the rebuild in one stage, the new member's disk
/// would idle while each sub-batch is computed.
fn step(
    store: &DataStore,
    slot: usize,
    ino: u64,
    stripes: std::ops::Range<u64>,
    trio: &mut [Batch; 3],
    direct: &dyn MemberFile,
) -> Result<u64> {
    let (first, until) = (stripes.start, stripes.end);
    let per_sub = (SUB_BYTES / store.layout.chunk).max(1);
    let [to_write, to_rebuild, to_read] = trio;
    // Whether `to_rebuild` holds read stripes and `to_write` rebuilt ones.
    let (mut have_rebuild, mut have_write) = (false, false);
    let mut lost = 0;
    let mut s = first;
    loop {
        let read_next = s < until;
        if !read_next && !have_rebuild && !have_write {
            return Ok(lost);
        }
        let nu = (s + per_sub).min(until);
        let (read, (rebuilt, written)) = pool::join(
            || {
                if read_next {
                    read_batch(store, slot, ino, s, nu, to_read)
                } else {
                    Ok(())
                }
            },
            || {
                pool::join(
                    || {
                        if have_rebuild {
                            rebuild_batch(store, slot, ino, to_rebuild)
                        } else {
                            Ok(())
                        }
                    },
                    || {
                        if have_write {
                            write_batch(store, slot, ino, to_write, direct)
                        } else {
                            Ok(0)
                        }
                    },
                )
            },
        );
        lost += written?;
        rebuilt?;
        read?;
        // Rebuilt -> to write, read -> to rebuild, written -> free to read.
        std::mem::swap(to_write, to_rebuild);
        std::mem::swap(to_rebuild, to_read);
        (have_write, have_rebuild) = (have_rebuild, read_next);
        s = nu;
    }
}

/// Plan stripes `first..until` and read the members that feed `slot`'s
/// groups there, in parallel (one contiguous read each), into `b`.
fn read_batch(
    store: &DataStore,
    slot: usize,
    ino: u64,
    first: u64,
    until: u64,
    b: &mut Batch,
) -> Result<()> {
    let layout = &store.layout;
    let chunk = layout.chunk as usize;
    let n = layout.members;
    let count = (until - first) as usize;
    b.first = first;
    b.until = until;
    b.plans.clear();
    let mut sources = vec![false; n];
    for st in first..until {
        let plan = layout.plan(ino, st)?;
        let gi = plan
            .groups
            .iter()
            .position(|g| g.members.contains(&slot))
            .ok_or_else(|| {
                ArrayError::Invalid(format!("slot {slot} holds no chunk of stripe {st}"))
            })?;
        for &m in &plan.groups[gi].members {
            if m != slot {
                sources[m] = true;
            }
        }
        b.plans.push((plan, gi));
    }
    let off = first * layout.chunk;
    b.bufs.resize_with(n, Vec::new);
    for (j, buf) in b.bufs.iter_mut().enumerate() {
        if sources[j] {
            buf.resize(count * chunk, 0);
        } else {
            buf.clear();
        }
    }
    b.out.resize(count * chunk);
    let bufs = &mut b.bufs;
    b.bad = pool::map(bufs.iter_mut().enumerate(), |(j, buf)| {
        if buf.is_empty() || !store.health.state(j).readable() {
            return None;
        }
        match store.read_verified(j, ino, off, buf) {
            Ok(b) => Some(b),
            Err(e) => {
                store.health.count_read_error(j);
                warn!(member = j, ino, error = %e, "read failed during rebuild");
                None
            }
        }
    });
    Ok(())
}

/// Rebuild `slot`'s chunks of a read batch into its `out`, counting the
/// blocks that cannot be rebuilt in `lost` (they are left zero). Fails
/// when a block cannot be rebuilt because members failed and the rest
/// cannot rebuild `slot`: nothing of that batch is to be written. A
/// re-add is no exception: the returning member's own block may be older
/// than what was written while it was out, so it is neither kept (stale
/// bytes served as good) nor poisoned while its sources are merely out.
fn rebuild_batch(store: &DataStore, slot: usize, ino: u64, b: &mut Batch) -> Result<()> {
    let layout = &store.layout;
    let chunk = layout.chunk as usize;
    let first = b.first;
    let Batch {
        plans,
        bufs,
        bad,
        out,
        lost,
        ..
    } = b;
    let out = out.as_mut_slice();
    lost.clear();
    let blocks_per_chunk = chunk / BLOCK;
    for (i, (plan, gi)) in plans.iter().enumerate() {
        let g = &plan.groups[*gi];
        let r = i * chunk..(i + 1) * chunk;
        let pos = g.members.iter().position(|&m| m == slot).unwrap_or(0);
        let in_chunk = |x: &usize| *x >= i * blocks_per_chunk && *x < (i + 1) * blocks_per_chunk;
        let clean = |m: usize| bad[m].as_ref().is_some_and(|b| !b.iter().any(in_chunk));
        let missing: Vec<usize> = (0..g.width())
            .filter(|&p| p == pos || !clean(g.members[p]))
            .collect();
        // A source whose blocks here failed their checksums goes the
        // careful way, which repairs them as a read would (and counts them
        // once). One whose read failed outright was counted already and is
        // worked around while redundancy allows.
        let troubled = g
            .members
            .iter()
            .any(|&m| m != slot && bad[m].as_ref().is_some_and(|b| b.iter().any(in_chunk)));
        let fast = !troubled
            && missing.len() <= g.tolerance()
            && match &g.protect {
                Protect::None => false,
                Protect::Mirror => match (0..g.width()).find(|p| !missing.contains(p)) {
                    Some(src) => {
                        out[r.clone()].copy_from_slice(&bufs[g.members[src]][r.clone()]);
                        true
                    }
                    None => false,
                },
                Protect::Parity(codec) => {
                    let mut slots: Vec<Option<&mut [u8]>> =
                        bufs.iter_mut().map(|b| Some(b.as_mut_slice())).collect();
                    let mut target = Some(&mut out[r.clone()]);
                    let mut refs: Vec<&mut [u8]> = Vec::with_capacity(g.width());
                    for &m in &g.members {
                        if m == slot {
                            refs.push(target.take().unwrap_or_default());
                        } else {
                            match slots[m].take() {
                                Some(b) => refs.push(&mut b[r.clone()]),
                                None => refs.push(&mut []),
                            }
                        }
                    }
                    codec.reconstruct(&mut refs, &missing).is_ok()
                }
            };
        if fast {
            continue;
        }
        // Some source block is bad: the careful path, block by block (and it repairs the sources).
        let scan = store.scan_group(ino, first + i as u64, g, 0, chunk, true);
        for (p, &m) in g.members.iter().enumerate() {
            let flagged = bad[m]
                .as_ref()
                .map_or(0, |b| b.iter().filter(|x| in_chunk(x)).count());
            store.count_unrepeated(m, flagged as u64, &scan, p);
        }
        out[r.clone()].copy_from_slice(&scan.bufs[pos]);
        for &(p, b) in &scan.lost {
            if p != pos {
                continue;
            }
            let at = r.start + b * BLOCK;
            if !can_rebuild(store, slot) {
                return Err(no_redundancy(store, slot));
            }
            lost.push(at);
            out[at..at + BLOCK].fill(0);
        }
    }
    Ok(())
}

/// Write a rebuilt batch's `out` (one contiguous write through `direct`,
/// checksums beside it, those of the blocks it lost poisoned in the same
/// write); returns their number.
fn write_batch(
    store: &DataStore,
    slot: usize,
    ino: u64,
    b: &Batch,
    direct: &dyn MemberFile,
) -> Result<u64> {
    let off = b.first * store.layout.chunk;
    if let Err(e) = store.write_blocks_direct(slot, ino, off, b.out.as_slice(), &b.lost, direct) {
        store.health.count_write_error(slot);
        store
            .health
            .mark_failed(slot, &format!("rebuild write: {e}"));
        return Err(ArrayError::MemberIo {
            member: slot,
            path: store_path(ino),
            context: "rebuild write".into(),
            source: e,
        });
    }
    Ok(b.lost.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::shard::{shard_path, sums_path};
    use crate::health::{Health, MemberState};
    use crate::member::DirMember;
    use crate::member::faulty::{Fault, FaultyMember, Op};
    use crate::ops::NoProgress;
    use raid_core::Geometry;
    use raid_core::layout::Level;

    const CHUNK: u32 = 4096;

    fn pattern(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// A file spanning several steps and sub-batches, a bad block on a
    /// survivor in a later sub-batch, and writes racing the rebuild: the
    /// rebuilt member must hold exactly the data that was written last,
    /// which a read with another member failed then shows.
    #[test]
    fn multi_step_rebuild_with_a_bad_source_and_racing_writes() {
        let dirs: Vec<_> = (0..5).map(|_| tempfile::tempdir().unwrap()).collect();
        let members = dirs
            .iter()
            .map(|d| Some(Arc::new(DirMember::open(d.path()).unwrap()) as Arc<dyn Member>))
            .collect();
        let health = Arc::new(Health::new(vec![MemberState::Active; 5]));
        // RAID-6: a bad source block with one member lost is recoverable.
        let geometry = Geometry::new(Level::Raid6, 5, CHUNK).unwrap();
        let store = DataStore::new(geometry, members, health.clone()).unwrap();
        // 3 data chunks per stripe; a little over two steps of member bytes.
        let size = (STEP_BYTES * 2 + SUB_BYTES + 3 * 4096) as usize * 3;
        let ino = 7;
        let mut data = pattern(1, size);
        store.write(ino, 0, &data, 0).unwrap();
        store.sync(ino).unwrap();
        // Flip a byte of a survivor's chunk in the second sub-batch.
        let bad_off = SUB_BYTES + 5 * u64::from(CHUNK) + 100;
        let shard = dirs[2].path().join(crate::data::shard::shard_path(ino));
        let mut raw = std::fs::read(&shard).unwrap();
        raw[bad_off as usize] ^= 0x5a;
        std::fs::write(&shard, &raw).unwrap();

        health.mark_failed(0, "test");
        let fresh = tempfile::tempdir().unwrap();
        let nm: Arc<dyn Member> = Arc::new(DirMember::open(fresh.path()).unwrap());
        start_target(&store, 0, &nm);
        let patch = pattern(2, 3 * 4096 * 5);
        let patch_at = (STEP_BYTES + SUB_BYTES / 2) * 3;
        let rep = std::thread::scope(|sc| {
            let writer = sc.spawn(|| {
                for k in 0..8u64 {
                    let at = patch_at + k * 777_777 % (size as u64 - patch_at - 60_000);
                    store.write(ino, at, &patch, size as u64).unwrap();
                }
            });
            let rep = rebuild(
                &store,
                0,
                nm,
                [(ino, size as u64)],
                RebuildOptions::default(),
                &NoProgress,
            )
            .unwrap();
            writer.join().unwrap();
            rep
        });
        for k in 0..8u64 {
            let at = (patch_at + k * 777_777 % (size as u64 - patch_at - 60_000)) as usize;
            data[at..at + patch.len()].copy_from_slice(&patch);
        }
        assert!(rep.complete);
        assert_eq!(rep.unrecoverable, 0);
        assert_eq!(health.state(0), MemberState::Active);
        // Read with member 1 failed: member 0's chunks come from the rebuild.
        health.mark_failed(1, "test");
        let mut back = vec![0u8; size];
        assert_eq!(store.read(ino, 0, &mut back, size as u64).unwrap(), size);
        assert!(back == data, "rebuilt data differs");
    }

    /// Put `nm` in failed slot `slot` as a rebuild target, as the array
    /// does before it starts a rebuild.
    fn start_target(store: &DataStore, slot: usize, nm: &Arc<dyn Member>) {
        store.set_member(slot, Some(nm.clone()));
        store
            .health
            .set_state(slot, MemberState::Rebuilding { done_bytes: 0 });
    }

    /// Asks to stop once `done` reached its limit.
    struct StopWhen(std::sync::atomic::AtomicU64, u64);

    impl Progress for StopWhen {
        fn update(&self, done: u64, _total: u64) {
            self.0.store(done, std::sync::atomic::Ordering::SeqCst);
        }
        fn should_stop(&self) -> bool {
            self.0.load(std::sync::atomic::Ordering::SeqCst) >= self.1
        }
    }

    /// The target of an interrupted rebuild fails (it misses a write to a
    /// file the rebuild had passed) after the job that resumes it was
    /// chosen: the resumed rebuild must leave it failed, never bring it
    /// back and make it active without that write.
    #[test]
    fn a_target_that_failed_before_its_rebuild_resumes_stays_failed() {
        let (_dirs, health, store) = raid5_of_four();
        let size = 3 * 4096 * 8;
        let (a, b) = (pattern(1, size), pattern(2, size));
        store.write(9, 0, &a, 0).unwrap();
        store.write(10, 0, &b, 0).unwrap();
        store.sync(9).unwrap();
        store.sync(10).unwrap();
        health.mark_failed(0, "test");
        let fresh = tempfile::tempdir().unwrap();
        let fm = FaultyMember::new(Arc::new(DirMember::open(fresh.path()).unwrap()));
        let nm: Arc<dyn Member> = Arc::new(fm.clone());
        let files = [(9u64, size as u64), (10u64, size as u64)];
        start_target(&store, 0, &nm);
        // Stopped once file 9 is done: the checkpoint is at file 10.
        let stop = StopWhen(0.into(), size as u64);
        let rep = rebuild(
            &store,
            0,
            nm.clone(),
            files,
            RebuildOptions::default(),
            &stop,
        )
        .unwrap();
        assert!(!rep.complete);
        assert!(matches!(health.state(0), MemberState::Rebuilding { .. }));
        // A write to file 9 fails on the target: it is failed, having missed it.
        fm.inject(Fault {
            op: Op::Write,
            path: shard_path(9),
            skip: 0,
            times: 1,
            kind: crate::member::faulty::FaultKind::Eio,
        });
        let newer = pattern(3, 4096 * 3);
        store.write(9, 0, &newer, size as u64).unwrap();
        assert_eq!(health.state(0), MemberState::Failed);
        fm.clear_faults();
        // The job resuming the rebuild (chosen a moment before) runs now.
        let opts = RebuildOptions {
            resume: true,
            ..Default::default()
        };
        let r = rebuild(&store, 0, nm, files, opts, &NoProgress);
        assert!(r.is_err(), "the failed target was rebuilt: {r:?}");
        assert_eq!(health.state(0), MemberState::Failed);
        // With member 1 failed too, file 9 is never served stale.
        health.mark_failed(1, "test");
        let mut back = vec![0u8; size];
        let r = store.read(9, 0, &mut back, size as u64);
        let mut want = a.clone();
        want[..newer.len()].copy_from_slice(&newer);
        assert!(r.is_err() || back == want, "file 9 reads stale data");
    }

    /// A block that cannot be rebuilt is poisoned in the same write as the
    /// checksums of the rebuilt chunks: no later write that may fail can
    /// leave it as zeros under a valid checksum.
    #[test]
    fn a_block_that_cannot_be_rebuilt_is_poisoned_in_the_checksum_write() {
        let d = degraded(3 * 4096 * 2);
        // A survivor's block of stripe 0 is bad: with member 0 gone, the
        // group's block 0 cannot be rebuilt.
        let shard = d._dirs[1].path().join(shard_path(INO));
        let mut raw = std::fs::read(&shard).unwrap();
        raw[100] ^= 0x5a;
        std::fs::write(&shard, &raw).unwrap();
        let fresh = tempfile::tempdir().unwrap();
        let fm = FaultyMember::new(Arc::new(DirMember::open(fresh.path()).unwrap()));
        // Every checksum write after the first one fails.
        fm.inject(Fault {
            op: Op::Write,
            path: sums_path(INO),
            skip: 1,
            times: u64::MAX,
            kind: crate::member::faulty::FaultKind::Eio,
        });
        let nm: Arc<dyn Member> = Arc::new(fm);
        let rep = d.rebuild_onto(nm);
        let mut buf = vec![0u8; 4096];
        let bad = d.store.read_verified(0, INO, 0, &mut buf);
        assert!(
            d.health.state(0) == MemberState::Failed || bad.as_ref().is_ok_and(|b| b.contains(&0)),
            "a lost block reads as valid zeros: {rep:?}, {bad:?}"
        );
    }

    /// A healthy RAID-5 of 4 over fresh directories: the directories, its
    /// health and its store.
    fn raid5_of_four() -> (Vec<tempfile::TempDir>, Arc<Health>, DataStore) {
        let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
        let members = dirs
            .iter()
            .map(|d| Some(Arc::new(DirMember::open(d.path()).unwrap()) as Arc<dyn Member>))
            .collect();
        let health = Arc::new(Health::new(vec![MemberState::Active; 4]));
        let level = Level::Raid5(raid_core::layout::Raid5Layout::LeftSymmetric);
        let geometry = Geometry::new(level, 4, CHUNK).unwrap();
        let store = DataStore::new(geometry, members, health.clone()).unwrap();
        (dirs, health, store)
    }

    /// A RAID-5 of 4 holding `size` bytes of inode 9, member 0 failed.
    struct Degraded {
        _dirs: Vec<tempfile::TempDir>,
        store: DataStore,
        health: Arc<Health>,
        data: Vec<u8>,
    }

    const INO: u64 = 9;

    fn degraded(size: usize) -> Degraded {
        let (dirs, health, store) = raid5_of_four();
        let data = pattern(5, size);
        store.write(INO, 0, &data, 0).unwrap();
        store.sync(INO).unwrap();
        health.mark_failed(0, "test");
        Degraded {
            _dirs: dirs,
            store,
            health,
            data,
        }
    }

    impl Degraded {
        fn rebuild_onto(&self, nm: Arc<dyn Member>) -> Result<RebuildReport> {
            start_target(&self.store, 0, &nm);
            rebuild(
                &self.store,
                0,
                nm,
                [(INO, self.data.len() as u64)],
                RebuildOptions::default(),
                &NoProgress,
            )
        }

        /// Member 0 is active and, with member 1 failed, reads give the data.
        fn check_rebuilt(&self) {
            assert_eq!(self.health.state(0), MemberState::Active);
            self.health.mark_failed(1, "test");
            let mut back = vec![0u8; self.data.len()];
            let n = self
                .store
                .read(INO, 0, &mut back, self.data.len() as u64)
                .unwrap();
            assert_eq!(n, self.data.len());
            assert!(back == self.data, "rebuilt data differs");
        }
    }

    /// Whether the filesystem of `dir` takes direct writes.
    fn takes_direct(dir: &std::path::Path) -> bool {
        let m = DirMember::open(dir).unwrap();
        m.create("probe").unwrap();
        let direct = m.open_direct("probe").unwrap().is_direct();
        m.remove("probe").unwrap();
        direct
    }

    /// The rebuilt chunks bypass the page cache where the filesystem allows
    /// it, and every byte of them (and of their checksums) is durable when
    /// the member is marked active: a crash image of the new member, built
    /// from the synced bytes only, equals its files.
    #[test]
    fn rebuilt_chunks_go_around_the_page_cache_and_are_durable_before_active() {
        let d = degraded(3 * (STEP_BYTES + SUB_BYTES / 2 + 8192) as usize);
        let fresh = tempfile::tempdir().unwrap();
        let fm = FaultyMember::new(Arc::new(DirMember::open(fresh.path()).unwrap()));
        let rep = d.rebuild_onto(Arc::new(fm.clone())).unwrap();
        assert!(rep.complete);
        if takes_direct(fresh.path()) {
            assert_eq!(rep.direct_bytes, rep.bytes);
        } else {
            assert_eq!(rep.direct_bytes, 0);
        }
        let image = tempfile::tempdir().unwrap();
        fm.crash_image(image.path(), None).unwrap();
        for path in [shard_path(INO), sums_path(INO)] {
            let live = std::fs::read(fresh.path().join(&path)).unwrap();
            let durable = std::fs::read(image.path().join(&path)).unwrap();
            assert!(!live.is_empty());
            assert!(live == durable, "{path}: bytes not durable at the end");
        }
        d.check_rebuilt();
    }

    /// On a filesystem that refuses `O_DIRECT` the rebuild writes through
    /// the page cache and the result is the same.
    #[test]
    fn rebuild_where_direct_io_is_refused_writes_through_the_page_cache() {
        let d = degraded(3 * (SUB_BYTES * 3 + 4096) as usize);
        let fresh = tempfile::tempdir().unwrap();
        let fm = FaultyMember::new(Arc::new(DirMember::open(fresh.path()).unwrap()));
        fm.refuse_direct();
        let rep = d.rebuild_onto(Arc::new(fm)).unwrap();
        assert!(rep.complete);
        assert_eq!(rep.direct_bytes, 0);
        assert!(rep.bytes > 0);
        d.check_rebuilt();
    }

    /// Faults injected on the new member hit the direct write path: the
    /// rebuilt chunks' write fails before it reaches the disk, and that
    /// fails the rebuild and the new member.
    #[test]
    fn a_failing_direct_write_fails_the_rebuild_target() {
        let d = degraded(3 * (SUB_BYTES * 3) as usize);
        let fresh = tempfile::tempdir().unwrap();
        let fm = FaultyMember::new(Arc::new(DirMember::open(fresh.path()).unwrap()));
        fm.inject(Fault::eio(Op::Write, &shard_path(INO)));
        let target: Arc<dyn Member> = Arc::new(fm);
        let err = d.rebuild_onto(target).unwrap_err();
        assert!(
            matches!(err, ArrayError::MemberIo { member: 0, .. }),
            "{err}"
        );
        assert_eq!(d.health.state(0), MemberState::Failed);
        // The injected fault stopped the direct write before the disk.
        let on_disk = std::fs::metadata(fresh.path().join(shard_path(INO))).unwrap();
        assert_eq!(on_disk.len(), 0);
    }

    /// A real filesystem without `O_DIRECT` (ramfs: open answers EINVAL)
    /// as the new member. Needs root to mount it; fails saying so.
    #[test]
    fn rebuild_onto_ramfs_falls_back_to_the_page_cache() {
        assert!(
            rustix::process::geteuid().is_root(),
            "this test needs root (to mount a ramfs)"
        );
        struct Mounted(tempfile::TempDir);
        impl Drop for Mounted {
            fn drop(&mut self) {
                let _ = std::process::Command::new("umount")
                    .arg(self.0.path())
                    .status();
            }
        }
        let mnt = Mounted(tempfile::tempdir().unwrap());
        let st = std::process::Command::new("mount")
            .args(["-t", "ramfs", "raidfs-test"])
            .arg(mnt.0.path())
            .status()
            .unwrap();
        assert!(st.success(), "mount -t ramfs failed");
        assert!(!takes_direct(mnt.0.path()), "ramfs took O_DIRECT");
        let d = degraded(3 * (SUB_BYTES * 2 + 4096) as usize);
        let nm: Arc<dyn Member> = Arc::new(DirMember::open(mnt.0.path()).unwrap());
        let rep = d.rebuild_onto(nm).unwrap();
        assert!(rep.complete);
        assert_eq!(rep.direct_bytes, 0);
        d.check_rebuilt();
    }
}
