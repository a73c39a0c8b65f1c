//! Rebuild: reconstruct one member's chunks of every file onto a new
//! member (a fresh directory or a hot spare), online, then mark it active.
//!
//! The new member is put in the slot at once in state `Rebuilding`: new
//! writes go to it, reads never come from it. Each step takes a file's
//! write lock for a batch of stripes, reads the other members of the
//! affected groups in parallel (one contiguous read each), rebuilds the
//! slot's chunks and writes them as one contiguous write. Blocks that
//! cannot be rebuilt are written as *poisoned* (a checksum that cannot
//! match), so they read as EIO later, never as zeros.

use std::sync::Arc;
use std::time::Instant;

use tracing::{info, warn};

use crate::data::DataStore;
use crate::data::checksum::BLOCK;
use crate::data::layout::Protect;
use crate::error::{ArrayError, Result};
use crate::health::MemberState;
use crate::member::Member;

use super::flusher::{FLUSH_EVERY, Flusher};
use super::{Checkpoint, Progress, Throttle, sorted};

const OP: &str = "rebuild";
/// Member bytes rebuilt per hold of a file's write lock.
const STEP_BYTES: u64 = 8 << 20;

/// How to rebuild.
#[derive(Debug, Clone, Copy, Default)]
pub struct RebuildOptions {
    /// Byte rate limit over bytes written to the new member (0 = unlimited).
    pub throttle_bytes_per_sec: u64,
    /// Continue from the saved checkpoint if there is one for this slot.
    pub resume: bool,
}

/// What a rebuild did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RebuildReport {
    pub files: u64,
    /// Bytes written to the new member.
    pub bytes: u64,
    /// Blocks that could not be rebuilt (poisoned: they read as EIO).
    pub unrecoverable: u64,
    /// False when stopped early through [`Progress::should_stop`].
    pub complete: bool,
}

/// Rebuild slot `slot` onto `new_member`, for the given files (inode, size).
pub fn rebuild(
    store: &DataStore,
    slot: usize,
    new_member: Arc<dyn Member>,
    files: impl IntoIterator<Item = (u64, u64)>,
    opts: RebuildOptions,
    progress: &dyn Progress,
) -> Result<RebuildReport> {
    let layout = &store.layout;
    if slot >= layout.members {
        return Err(ArrayError::Invalid(format!("no member slot {slot}")));
    }
    let files = sorted(files);
    let total: u64 = files.iter().map(|f| f.1).sum();
    let others: Vec<Arc<dyn Member>> = store.writable_members();
    let start = if opts.resume {
        Checkpoint::load(&others, OP).filter(|c| c.target as usize == slot)
    } else {
        None
    };
    store.set_member(slot, Some(new_member.clone()));
    let mut done = start.map_or(0, |c| c.done);
    store
        .health
        .set_state(slot, MemberState::Rebuilding { done_bytes: done });
    info!(
        slot,
        files = files.len(),
        resume = start.is_some(),
        "rebuild started"
    );
    let mut members = others.clone();
    members.push(new_member.clone());
    let chunk = layout.chunk;
    let per_step = (STEP_BYTES / chunk).max(1);
    let mut rep = RebuildReport::default();
    let mut throttle = Throttle::new(opts.throttle_bytes_per_sec);
    let mut scratch: Vec<Vec<u8>> = Vec::new();
    let mut last_save = Instant::now();
    // Files written since their last sync: synced before a checkpoint is
    // saved (a resumed run must not skip chunks lost with the page cache)
    // and before the member is marked active.
    let mut unsynced: Vec<u64> = Vec::new();
    let mut since_flush = 0u64;
    let finished = std::thread::scope(|sc| -> Result<bool> {
        let flusher = Flusher::start(sc, new_member);
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
            if let Err(e) = store.ensure_shard(slot, ino) {
                store
                    .health
                    .mark_failed(slot, &format!("rebuild target: {e}"));
                return Err(ArrayError::MemberIo {
                    member: slot,
                    path: store_path(ino),
                    context: "create shard".into(),
                    source: e,
                });
            }
            unsynced.push(ino);
            let stripes = layout.stripes_for(size);
            let mut s = first;
            while s < stripes {
                if progress.should_stop() {
                    sync_files(store, &mut unsynced)?;
                    Checkpoint {
                        target: slot as u32,
                        ino,
                        stripe: s,
                        done,
                    }
                    .save(&members, OP);
                    return Ok(false);
                }
                let until = (s + per_step).min(stripes);
                {
                    let _g = store.lock_write(ino);
                    rep.unrecoverable += step(store, slot, ino, s, until, &mut scratch)?;
                }
                let bytes = (until - s) * chunk;
                rep.bytes += bytes;
                done += ((until - s) * layout.stripe_data)
                    .min(size.saturating_sub(s * layout.stripe_data));
                store
                    .health
                    .set_state(slot, MemberState::Rebuilding { done_bytes: done });
                since_flush += bytes;
                if since_flush >= FLUSH_EVERY {
                    flusher.request(ino);
                    since_flush = 0;
                }
                throttle.account(bytes);
                progress.update(done, total);
                s = until;
            }
            if last_save.elapsed() >= super::CHECKPOINT_EVERY {
                sync_files(store, &mut unsynced)?;
                Checkpoint {
                    target: slot as u32,
                    ino: ino + 1,
                    stripe: 0,
                    done,
                }
                .save(&members, OP);
                last_save = Instant::now();
            }
        }
        Ok(true)
    })?;
    if !finished {
        return Ok(rep);
    }
    sync_files(store, &mut unsynced)?;
    if !store.health.state(slot).writable() {
        return Err(ArrayError::ArrayFailed(format!(
            "rebuild target slot {slot} failed during the rebuild"
        )));
    }
    store.health.set_state(slot, MemberState::Active);
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

/// Rebuild stripes `first..until` of `ino` on `slot`; returns blocks lost.
/// `scratch` holds one buffer per member plus the output, reused across
/// steps: every byte of them is overwritten before it is used.
fn step(
    store: &DataStore,
    slot: usize,
    ino: u64,
    first: u64,
    until: u64,
    scratch: &mut Vec<Vec<u8>>,
) -> Result<u64> {
    let layout = &store.layout;
    let chunk = layout.chunk as usize;
    let n = layout.members;
    let count = (until - first) as usize;
    // Which members feed the slot's groups in this range.
    let mut plans = Vec::with_capacity(count);
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
        plans.push((plan, gi));
    }
    let off = first * layout.chunk;
    scratch.resize_with(n + 1, Vec::new);
    for (j, b) in scratch.iter_mut().enumerate() {
        if j == n || sources[j] {
            b.resize(count * chunk, 0);
        } else {
            b.clear();
        }
    }
    let (bufs, out) = scratch.split_at_mut(n);
    let out = &mut out[0];
    // Per member: bad blocks of its read (None: unreadable).
    let bad: Vec<Option<Vec<usize>>> = std::thread::scope(|sc| {
        let hs: Vec<_> = bufs
            .iter_mut()
            .enumerate()
            .map(|(j, buf)| {
                sc.spawn(move || {
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
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().ok().flatten()).collect()
    });
    let mut lost = 0;
    let blocks_per_chunk = chunk / BLOCK;
    for (i, (plan, gi)) in plans.iter().enumerate() {
        let g = &plan.groups[*gi];
        let r = i * chunk..(i + 1) * chunk;
        let pos = g.members.iter().position(|&m| m == slot).unwrap_or(0);
        let clean = |m: usize| {
            bad[m].as_ref().is_some_and(|b| {
                !b.iter()
                    .any(|&x| x >= i * blocks_per_chunk && x < (i + 1) * blocks_per_chunk)
            })
        };
        let missing: Vec<usize> = (0..g.width())
            .filter(|&p| p == pos || !clean(g.members[p]))
            .collect();
        let fast = missing.len() <= g.tolerance()
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
        out[r.clone()].copy_from_slice(&scan.bufs[pos]);
        for &(p, b) in &scan.lost {
            if p == pos {
                lost += 1;
                out[r.start + b * BLOCK..r.start + (b + 1) * BLOCK].fill(0);
            }
        }
    }
    if let Err(e) = store.write_blocks(slot, ino, off, out) {
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
    if lost > 0 {
        // Find and poison the lost blocks (rare: recompute which).
        for (i, (plan, gi)) in plans.iter().enumerate() {
            let g = &plan.groups[*gi];
            let pos = g.members.iter().position(|&m| m == slot).unwrap_or(0);
            let scan = store.scan_group(ino, first + i as u64, g, 0, chunk, false);
            for &(p, b) in &scan.lost {
                if p == pos {
                    let boff = off + (i * chunk + b * BLOCK) as u64;
                    if let Err(e) = store.poison_block(slot, ino, boff) {
                        warn!(slot, ino, error = %e, "cannot mark lost block");
                    }
                }
            }
        }
    }
    Ok(lost)
}
