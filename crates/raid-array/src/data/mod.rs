//! The data path: file contents striped over the members with redundancy
//! and a checksum per 4 KiB block.
//!
//! A file's logical bytes are cut into stripes of `data_chunks_per_stripe`
//! chunks; stripe `s` of inode `ino` uses the map `geometry.stripe(s + ino)`
//! (see [`layout`]) and every member keeps its chunk of stripe `s` at byte
//! `s × chunk_size` of its shard ([`shard`]), with checksums in a sidecar
//! ([`checksum`]).
//!
//! # Writes
//!
//! A call is cut into batches of whole stripes. Per redundancy group the
//! written column range is widened to 4 KiB blocks; data chunks the write
//! covers completely need no read, others are read (reconstruct-write), or
//! taken from the file's last written stripe when the write continues the
//! previous one ([`tailcache`]), and the new bytes laid over them; parity is
//! encoded once per group and all touched chunks go to every writable member
//! in parallel, one contiguous write per run of stripes. Bytes past the
//! file's end are zeros by invariant, so appends never read them. Before any chunk is written its
//! stripes are marked dirty in the write-intent log ([`crate::intent`]).
//!
//! # Reads
//!
//! Only the data chunks touched are read, in parallel per member, straight
//! into the caller's buffer (no intermediate copy), and every block is
//! verified. Sequential readers are served from windows of whole
//! stripes read ahead ([`readahead`]). A block that fails (I/O error, checksum mismatch,
//! member failed) is rebuilt from the rest of its group, returned, written
//! back to the member it came from, and counted in [`Health`]. What cannot
//! be rebuilt is an error (EIO), never invented bytes. On an array
//! assembled read-only after an unclean shutdown the resync has not run:
//! in the stripes the write-intent log left dirty, a chunk rebuilt from
//! parity is served only if a parity row not needed for the rebuild
//! confirms it, as the resync would have left it.
//!
//! # Invariants
//!
//! - Bytes of a shard past the file's logical end are zero or absent
//!   (`truncate` and writes past the end re-establish this with [`DataStore::cut`]).
//! - Parity of every group matches its data, except in stripes listed dirty
//!   in the write-intent log.

pub mod checksum;
pub(crate) mod direct;
pub(crate) mod layout;
pub(crate) mod pool;
pub mod readahead;
pub(crate) mod shard;
pub mod space;
pub(crate) mod tailcache;
pub(crate) mod writebehind;
pub(crate) mod zeroend;

use std::io::{self, IoSliceMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use raid_core::Geometry;
use tracing::{debug, warn};

use crate::error::{ArrayError, Result};
use crate::health::{Health, MemberState};
use crate::intent::{self, AheadLimits, IntentLog, IntentRecord, Targets};
use crate::member::Member;
use crate::stale::StaleSet;
use checksum::BLOCK;
use layout::{Group, Layout, Plan, Protect};
use shard::Handles;

/// Member buffer bytes per batch: bounds memory per call.
const BATCH_BYTES: u64 = 8 << 20;
/// Member buffers kept for reuse between calls (each at most
/// `BATCH_BYTES / members`): a Pi has little memory, so the pool stays small.
const MAX_POOLED: usize = 16;
/// Dirty regions tolerated before every dirty file is synced and the log cleared.
const MAX_DIRTY_REGIONS: usize = 2048;
/// Lock stripes for per-inode locking.
const LOCKS: usize = 256;
/// Files synced at once from which one `syncfs` per member replaces the
/// files' own syncs ([`DataStore::sync_files`]).
const SYNCFS_MIN_FILES: usize = 8;
/// Batches writing at most this many member bytes in all run on the caller
/// ([`DataStore::batch_writes`]).
const WRITE_ON_CALLER_BYTES: usize = 128 << 10;
/// Most pieces read from one member with one request (`preadv`): 8 chunks
/// of 64 KiB stay in the cache until their checksums are verified.
const MAX_READ_RUN: usize = 8;

/// The striped file store over the members of one array.
pub struct DataStore {
    pub(crate) layout: Layout,
    members: RwLock<Vec<Option<Arc<dyn Member>>>>,
    pub(crate) health: Arc<Health>,
    handles: Handles,
    locks: Vec<RwLock<()>>,
    pub(crate) intent: IntentLog,
    loaded_intent: IntentRecord,
    pool: Mutex<Vec<Vec<u8>>>,
    readahead: readahead::ReadAhead,
    /// Inodes whose shards changed (write, truncate) since their last sync,
    /// with the time of the last change ([`DataStore::settle`]).
    unsynced: Mutex<std::collections::HashMap<u64, Unsynced>>,
    /// Numbers the changes recorded in `unsynced`.
    changes: AtomicU64,
    /// First inode number the namespace has never allocated: marks ahead
    /// of the write-intent log may cover those ([`AheadLimits`]).
    unused_ino: AtomicU64,
    /// Starts write-back of large writes as they go.
    write_behind: writebehind::WriteBehind,
    /// The last, partly written stripe of recently written files.
    tails: tailcache::TailCache,
    /// Files whose members hold only zeros past their end.
    zero_past_end: zeroend::ZeroPastEnd,
    /// Whether writes make room on every member first ([`space`]):
    /// some member has less than [`space::LOW_WATER`] free.
    low_space: space::Recheck,
    /// Assembled read-only: reads heal nothing (a block that fails its
    /// checksum is still served rebuilt, but not rewritten).
    read_only: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for DataStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataStore")
            .field("geometry", &self.layout.geometry)
            .field("health", &self.health)
            .finish()
    }
}

/// One chunk range of one member in a batch.
#[derive(Debug, Clone)]
struct Seg {
    member: usize,
    /// Byte offset within the chunk.
    col: usize,
    len: usize,
    /// Offset in the member's batch buffer.
    buf: usize,
    read: bool,
    write: bool,
    /// The old bytes come from the file's kept tail stripe, not a read.
    cached: bool,
    /// The read succeeded and verified (or was not needed).
    ok: bool,
    /// Blocks whose checksum failed when read (not yet counted: the group
    /// scan that follows counts what it finds, these only if it does not).
    flagged: u64,
}

/// Segments of one member's batch list that are contiguous both on the
/// member and in its batch buffer: one request instead of one per segment.
struct Run<'a> {
    /// Their indices in the batch (a slice of the member's list).
    segs: &'a [usize],
    /// Offset on the member of the first byte.
    member_off: u64,
    /// Their bytes in the member's batch buffer.
    buf: std::ops::Range<usize>,
}

impl<'a> Run<'a> {
    /// The runs of the segments of `list` that `pick` selects, in order.
    fn merge<F: Fn(&Seg) -> bool>(
        list: &'a [usize],
        segs: &'a [Seg],
        stripes: &'a [u64],
        chunk: u64,
        pick: F,
    ) -> Runs<'a, F> {
        Runs {
            list,
            segs,
            stripes,
            chunk,
            pick,
            next: 0,
        }
    }
}

/// Iterator of [`Run::merge`].
struct Runs<'a, F> {
    list: &'a [usize],
    segs: &'a [Seg],
    stripes: &'a [u64],
    chunk: u64,
    pick: F,
    next: usize,
}

impl<'a, F: Fn(&Seg) -> bool> Iterator for Runs<'a, F> {
    type Item = Run<'a>;

    fn next(&mut self) -> Option<Run<'a>> {
        let (list, segs) = (self.list, self.segs);
        let off = |k: usize| self.stripes[list[k]] * self.chunk + segs[list[k]].col as u64;
        let i = (self.next..list.len()).find(|&k| (self.pick)(&segs[list[k]]))?;
        let s = &segs[list[i]];
        let start = off(i);
        let mut end = i + 1;
        let mut len = s.len;
        while end < list.len() {
            let t = &segs[list[end]];
            if !(self.pick)(t) || off(end) != start + len as u64 || t.buf != s.buf + len {
                break;
            }
            len += t.len;
            end += 1;
        }
        self.next = end;
        Some(Run {
            segs: &list[i..end],
            member_off: start,
            buf: s.buf..s.buf + len,
        })
    }
}

/// One group of one stripe in a batch; `segs` are its positions in order.
struct Work {
    stripe: u64,
    plan: Arc<Plan>,
    group: usize,
    lo: usize,
    hi: usize,
    segs: std::ops::Range<usize>,
}

#[derive(Default)]
struct Batch {
    segs: Vec<Seg>,
    works: Vec<Work>,
    bufs: Vec<Vec<u8>>,
    fill: Vec<usize>,
    by_member: Vec<Vec<usize>>,
}

impl Batch {
    fn seg(&mut self, member: usize, col: usize, len: usize, read: bool, write: bool) {
        let buf = self.fill[member];
        self.fill[member] += len;
        self.by_member[member].push(self.segs.len());
        self.segs.push(Seg {
            member,
            col,
            len,
            buf,
            read,
            write,
            cached: false,
            ok: !read,
            flagged: 0,
        });
    }
}

/// The part of a read that one data chunk serves ([`DataStore::read_locked`]).
struct Piece<'a> {
    stripe: u64,
    plan: Arc<Plan>,
    group: usize,
    /// Position of the chunk in its group.
    pos: usize,
    /// First byte read within the chunk (block-aligned).
    col: usize,
    /// Where the bytes go.
    dest: &'a mut [u8],
    /// When `dest` does not cover whole blocks: the offset of `dest`'s
    /// first byte in the block-aligned buffer read instead.
    bounce: Option<(usize, Vec<u8>)>,
    /// Read and verified.
    ok: bool,
    /// Blocks whose checksum failed when read (counted as for [`Seg`]).
    flagged: u64,
}

impl Piece<'_> {
    /// Bytes read from the chunk (whole blocks).
    fn len(&self) -> usize {
        self.bounce
            .as_ref()
            .map_or(self.dest.len(), |(_, v)| v.len())
    }

    /// Where the piece's first byte lies in its member's shard.
    fn shard_offset(&self, chunk: u64) -> u64 {
        self.stripe * chunk + self.col as u64
    }

    /// The buffer the member's bytes are read into.
    fn buf(&mut self) -> &mut [u8] {
        match &mut self.bounce {
            Some((_, v)) => v,
            None => self.dest,
        }
    }
}

/// The last change of a file not yet synced.
#[derive(Debug, Clone, Copy)]
struct Unsynced {
    at: Instant,
    /// Increases with every change of any file.
    number: u64,
}

/// What [`DataStore::resync_stripe`] did.
#[derive(Debug, Default)]
pub(crate) struct StripeResync {
    /// Redundancy chunks rewritten.
    pub redundancy_fixed: u64,
    /// Data blocks rebuilt and rewritten.
    pub repaired: u64,
    /// Blocks left unreadable (no consistent version survived).
    pub unrecoverable: u64,
}

/// Result of reading one group's column range from every position.
pub(crate) struct GroupScan {
    /// Contents per position (reconstructed where it was bad and could be).
    pub bufs: Vec<Vec<u8>>,
    /// Blocks found bad on readable members (real mismatches or read errors).
    pub mismatches: u64,
    /// Blocks rewritten on their member.
    pub repaired: u64,
    /// (position, block) that could not be rebuilt.
    pub lost: Vec<(usize, usize)>,
    /// Per position: whether any of its blocks was bad or unreadable.
    pub suspect: Vec<bool>,
    /// Per position: nothing was read (member not readable, or its read
    /// failed), so what it holds in `bufs` has no checksum to witness it.
    pub unread: Vec<bool>,
    /// Columns (block indices) whose poisoned block was left lost because
    /// the parity could not confirm its rebuild (none to spare in a dirty
    /// group, or a spare row that disagreed).
    pub unconfirmed: Vec<usize>,
}

fn align_down(x: usize) -> usize {
    x & !(BLOCK - 1)
}

fn align_up(x: usize) -> usize {
    x.div_ceil(BLOCK) * BLOCK
}

impl DataStore {
    /// A store over `members` (`None` = missing) laid out by `geometry`.
    /// Reads the write-intent log left by the last run; it stays dirty
    /// until [`crate::ops::resync`] has checked it.
    pub fn new(
        geometry: Geometry,
        members: Vec<Option<Arc<dyn Member>>>,
        health: Arc<Health>,
    ) -> Result<Self> {
        let loaded = intent::load(&members);
        Self::with_intent(geometry, members, health, loaded)
    }

    /// [`DataStore::new`] with the write-intent log the members hold,
    /// already read (`intent::load`).
    pub fn with_intent(
        geometry: Geometry,
        members: Vec<Option<Arc<dyn Member>>>,
        health: Arc<Health>,
        loaded_intent: IntentRecord,
    ) -> Result<Self> {
        if health.len() != members.len() {
            return Err(ArrayError::Invalid(format!(
                "{} member slots but health tracks {}",
                members.len(),
                health.len()
            )));
        }
        // Members the caller took for in service that are not there: they
        // left in sync, so the files changed from now on are all they lack.
        let mut absent = Vec::new();
        for (i, m) in members.iter().enumerate() {
            if m.is_none() && health.state(i).writable() {
                if health.state(i) == MemberState::Active {
                    absent.push(i);
                }
                health.set_state(i, MemberState::Missing);
            }
        }
        let layout = Layout::new(geometry, members.len())?;
        if !loaded_intent.is_clean() {
            warn!(
                regions = loaded_intent.regions.len(),
                overflow = loaded_intent.overflow,
                "unclean shutdown: stripes need resync"
            );
        }
        let intent = IntentLog::new(&loaded_intent, &health);
        intent.cover(&absent);
        for k in loaded_intent.left_unrecorded(|k| health.state(k) == MemberState::Active) {
            warn!(member = k, "{}", intent::LEFT_UNRECORDED);
            health.mark_failed(k, "left while the array ran (write-intent log)");
        }
        Ok(DataStore {
            layout,
            members: RwLock::new(members),
            health,
            handles: Handles::default(),
            locks: (0..LOCKS).map(|_| RwLock::new(())).collect(),
            intent,
            loaded_intent,
            pool: Mutex::new(Vec::new()),
            readahead: readahead::ReadAhead::default(),
            unsynced: Mutex::new(std::collections::HashMap::new()),
            changes: AtomicU64::new(0),
            unused_ino: AtomicU64::new(u64::MAX),
            write_behind: writebehind::WriteBehind::default(),
            tails: tailcache::TailCache::default(),
            zero_past_end: zeroend::ZeroPastEnd::default(),
            low_space: space::Recheck::new(space::RECHECK),
            read_only: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The geometry files are laid out with.
    pub fn geometry(&self) -> &Geometry {
        &self.layout.geometry
    }

    /// Member health shared with the rest of the engine.
    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// The write-intent record found at start-up (what [`crate::ops::resync`] must check).
    pub fn startup_intent(&self) -> &IntentRecord {
        &self.loaded_intent
    }

    /// What is dirty now (start-up leftovers plus unsynced writes).
    /// Write nothing from now on, not even the repairs reads would make
    /// (an array assembled read-only).
    pub fn set_read_only(&self) {
        self.read_only.store(true, Ordering::Relaxed);
    }

    pub fn dirty_intent(&self) -> IntentRecord {
        self.intent.snapshot()
    }

    /// Member in slot `i`, if present.
    pub fn member(&self, i: usize) -> Option<Arc<dyn Member>> {
        self.members
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(i)
            .cloned()
            .flatten()
    }

    /// Put `member` in slot `i` (a rebuild target) and forget open files of
    /// the old one. The caller sets the state.
    pub fn set_member(&self, i: usize, member: Option<Arc<dyn Member>>) {
        let mut g = self.members.write().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = g.get_mut(i) {
            *slot = member;
        }
        self.handles.forget_member(i);
    }

    fn lock_read(&self, ino: u64) -> RwLockReadGuard<'_, ()> {
        self.locks[(ino % LOCKS as u64) as usize]
            .read()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn lock_write(&self, ino: u64) -> RwLockWriteGuard<'_, ()> {
        self.locks[(ino % LOCKS as u64) as usize]
            .write()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn targets(&self) -> Targets {
        let g = self.members.read().unwrap_or_else(|e| e.into_inner());
        g.iter()
            .enumerate()
            .filter(|(i, _)| self.health.state(*i).writable())
            .filter_map(|(i, m)| m.clone().map(|m| (i, m)))
            .collect()
    }

    fn take_buf(&self, len: usize) -> Vec<u8> {
        let mut v = self
            .pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default();
        v.resize(len, 0);
        v
    }

    fn give_buf(&self, v: Vec<u8>) {
        let mut p = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        if p.len() < MAX_POOLED {
            p.push(v);
        }
    }

    fn fail_member(&self, i: usize, what: &str, e: &io::Error) {
        self.health.mark_failed(i, &format!("{what}: {e}"));
        self.handles.forget_member(i);
    }

    /// Refuse to write when some group has lost more members than it tolerates.
    fn check_writable(&self) -> Result<()> {
        if self.layout.survives(&self.health, MemberState::writable) {
            Ok(())
        } else {
            Err(ArrayError::ArrayFailed(format!(
                "too many members failed to write safely: {:?}",
                self.health.states()
            )))
        }
    }

    // ----- member I/O -----------------------------------------------------

    /// Read `buf.len()` (a multiple of BLOCK) bytes of `ino`'s shard at
    /// `off` on member `j` and verify them; returns the indices of bad blocks.
    pub(crate) fn read_verified(
        &self,
        j: usize,
        ino: u64,
        off: u64,
        buf: &mut [u8],
    ) -> io::Result<Vec<usize>> {
        self.read_with_sums(j, ino, off, buf).map(|(bad, _)| bad)
    }

    /// As [`DataStore::read_verified`], also returning the stored checksum entries.
    pub(crate) fn read_with_sums(
        &self,
        j: usize,
        ino: u64,
        off: u64,
        buf: &mut [u8],
    ) -> io::Result<(Vec<usize>, Vec<u8>)> {
        let member = self
            .member(j)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "member missing"))?;
        let shard = self.handles.get(j, member.as_ref(), ino, false)?;
        let n = shard.data.read_at(off, buf)?;
        buf[n..].fill(0);
        let mut sums = vec![0u8; buf.len() / BLOCK * checksum::ENTRY];
        let sn = shard
            .sums
            .read_at(off / BLOCK as u64 * checksum::ENTRY as u64, &mut sums)?;
        sums[sn..].fill(0);
        let bad = self.verify(j, ino, off, buf, &sums);
        Ok((bad, sums))
    }

    /// The blocks of `buf` (read from member `j` at `off`) that do not
    /// match their `sums`. Not counted here: a mismatch found by a read is
    /// read again by the group scan that repairs it, which counts what it
    /// finds ([`DataStore::scan_group`], [`DataStore::count_unrepeated`]),
    /// so that one bad block counts once.
    fn verify(&self, j: usize, ino: u64, off: u64, buf: &[u8], sums: &[u8]) -> Vec<usize> {
        let bad = checksum::bad_blocks(buf, sums);
        if !bad.is_empty() {
            debug!(
                member = j,
                ino,
                off,
                blocks = bad.len(),
                "checksum mismatch"
            );
        }
        bad
    }

    /// Write `data` (whole blocks) at `off` of `ino`'s shard on member `j`,
    /// then its checksums.
    pub(crate) fn write_blocks(&self, j: usize, ino: u64, off: u64, data: &[u8]) -> io::Result<()> {
        let member = self
            .member(j)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "member missing"))?;
        self.note_unsynced(ino);
        let shard = self.handles.get(j, member.as_ref(), ino, true)?;
        shard.data.write_at(off, data)?;
        let mut sums = vec![0u8; data.len() / BLOCK * checksum::ENTRY];
        checksum::encode_sums(data, &mut sums);
        shard
            .sums
            .write_at(off / BLOCK as u64 * checksum::ENTRY as u64, &sums)
    }

    /// [`DataStore::write_blocks`] for a write that keeps redundancy true
    /// (parity rewritten, a block repaired) rather than one that adds
    /// data: a full member lets part of its reserve go and the write is
    /// retried ([`crate::member::reserve`]), because failing the member for
    /// being full would leave the array degraded, and each further full
    /// member would take it closer to failed. The member is then short of
    /// space, so writes of file data answer ENOSPC.
    fn write_blocks_reserved(&self, j: usize, ino: u64, off: u64, data: &[u8]) -> io::Result<()> {
        self.using_reserve(j, || self.write_blocks(j, ino, off, data))
    }

    /// Run `write` on member `j`; while it finds the member full and the
    /// member's reserve has something left, let part go and run it again.
    fn using_reserve(&self, j: usize, mut write: impl FnMut() -> io::Result<()>) -> io::Result<()> {
        loop {
            match write() {
                Err(e)
                    if is_no_space(&e) && self.member(j).is_some_and(|m| m.release_reserve()) =>
                {
                    warn!(
                        member = j,
                        "member full: its reserve takes a write that keeps redundancy true"
                    );
                }
                r => return r,
            }
        }
    }

    /// Run the reads of a batch, one thread per member.
    fn batch_reads(&self, ino: u64, b: &mut Batch, chunk: u64, stripes: &[u64]) {
        let Batch {
            segs,
            bufs,
            by_member,
            ..
        } = b;
        let segs_ro: &Vec<Seg> = segs;
        // Members are read in parallel on the shared pool (no thread spawn per call).
        // A member with nothing to read gets no job (no thread woken for it).
        let busy = bufs
            .iter_mut()
            .enumerate()
            .filter(|(j, _)| by_member[*j].iter().any(|&i| segs_ro[i].read));
        // Per segment: the blocks that failed their checksums, or `None`
        // when the read itself failed (counted as a read error here).
        let results: Vec<Vec<(usize, Option<u64>)>> = pool::map(busy, |(j, buf)| {
            let mut out = Vec::new();
            let readable = self.health.state(j).readable();
            for run in Run::merge(&by_member[j], segs_ro, stripes, chunk, |s| s.read) {
                let res = if readable {
                    self.read_verified(j, ino, run.member_off, &mut buf[run.buf.clone()])
                } else {
                    Err(io::Error::other("member not readable"))
                };
                match res {
                    Ok(bad) => {
                        let mut base = 0;
                        for &si in run.segs {
                            let sl = segs_ro[si].len;
                            let lo = base / BLOCK;
                            let hi = (base + sl) / BLOCK;
                            let flagged = bad.iter().filter(|&&x| x >= lo && x < hi).count();
                            out.push((si, Some(flagged as u64)));
                            base += sl;
                        }
                    }
                    Err(e) => {
                        if readable {
                            self.health.count_read_error(j);
                            debug!(member = j, ino, error = %e, "read failed");
                        }
                        out.extend(run.segs.iter().map(|&si| (si, None)));
                    }
                }
            }
            out
        });
        for r in results {
            for (si, flagged) in r {
                segs[si].ok = flagged == Some(0);
                segs[si].flagged = flagged.unwrap_or(0);
            }
        }
    }

    /// Close to full ([`space`]), have each of `members` make room for its
    /// part of a batch, data and checksums, before anything is written;
    /// whether one of them is full (the batch is then refused whole, and no
    /// member has changed). Other errors are left to the writes.
    fn make_room(
        &self,
        ino: u64,
        b: &Batch,
        chunk: u64,
        stripes: &[u64],
        members: impl Iterator<Item = usize>,
    ) -> bool {
        // A member whose free space cannot be read counts as low.
        let low = self.low_space.get(|| {
            self.targets().iter().any(|(_, m)| {
                m.space()
                    .map_or(true, |(_, avail)| avail < space::LOW_WATER)
            })
        });
        if !low {
            return false;
        }
        for j in members {
            let Some(m) = self.member(j) else { continue };
            let Ok(shard) = self.handles.get(j, m.as_ref(), ino, true) else {
                continue;
            };
            for run in Run::merge(&b.by_member[j], &b.segs, stripes, chunk, |s| s.write) {
                let len = run.buf.len() as u64;
                let sums_at = run.member_off / BLOCK as u64 * checksum::ENTRY as u64;
                let sums_len = len.div_ceil(BLOCK as u64) * checksum::ENTRY as u64;
                let r = shard
                    .data
                    .allocate(run.member_off, len)
                    .and_then(|()| shard.sums.allocate(sums_at, sums_len));
                if r.is_err_and(|e| is_no_space(&e)) {
                    return true;
                }
            }
        }
        false
    }

    /// Run the writes of a batch, one thread per writable member. Members
    /// whose write fails are marked failed.
    fn batch_writes(&self, ino: u64, b: &Batch, chunk: u64, stripes: &[u64]) -> Result<()> {
        let full = std::sync::atomic::AtomicBool::new(false);
        let too_big = std::sync::atomic::AtomicBool::new(false);
        let (full_ref, too_big_ref) = (&full, &too_big);
        let Batch {
            segs,
            bufs,
            by_member,
            ..
        } = b;
        // A member with nothing to write gets no job (no thread woken for it).
        let busy = bufs.iter().enumerate().filter(|(j, _)| {
            by_member[*j].iter().any(|&i| segs[i].write) && self.health.state(*j).writable()
        });
        if self.make_room(ino, b, chunk, stripes, busy.clone().map(|(j, _)| j)) {
            return Err(ArrayError::NoSpace);
        }
        let job = |(j, buf): (usize, &Vec<u8>)| {
            // Checked again when the job runs: the member may have failed since.
            if !self.health.state(j).writable() {
                return;
            }
            for run in Run::merge(&by_member[j], segs, stripes, chunk, |s| s.write) {
                if let Err(e) = self.write_blocks(j, ino, run.member_off, &buf[run.buf]) {
                    if is_no_space(&e) {
                        // A full disk is not a broken one: report ENOSPC,
                        // fail nobody (the stripe stays dirty for resync).
                        full_ref.store(true, std::sync::atomic::Ordering::Relaxed);
                        return;
                    }
                    if e.kind() == io::ErrorKind::FileTooLarge {
                        // Past the largest file its filesystem holds (4 GiB
                        // on FAT32): the same, with EFBIG.
                        too_big_ref.store(true, std::sync::atomic::Ordering::Relaxed);
                        return;
                    }
                    self.health.count_write_error(j);
                    self.fail_member(j, "write failed", &e);
                    return;
                }
            }
        };
        // A few page-cache writes take less time than handing them to pool
        // threads and waiting for those to wake: small batches (a small
        // file, a short append) are written by the caller, member after
        // member.
        let bytes: usize = segs.iter().filter(|s| s.write).map(|s| s.len).sum();
        if bytes <= WRITE_ON_CALLER_BYTES {
            busy.for_each(job);
        } else {
            pool::map(busy, job);
        }
        if full.into_inner() {
            return Err(ArrayError::NoSpace);
        }
        if too_big.into_inner() {
            return Err(ArrayError::FileTooLarge);
        }
        Ok(())
    }

    // ----- group scan and repair (slow path, scrub, resync, rebuild) -------

    /// Count the `flagged` blocks that a first read of position `p` (member
    /// `j`) found bad, when the group scan that followed read them back
    /// good: a mismatch that did not repeat (bytes damaged on the way, a
    /// flaky cable) is still a mismatch of that member. When the scan did
    /// find the position bad, it counted the blocks itself.
    pub(crate) fn count_unrepeated(&self, j: usize, flagged: u64, scan: &GroupScan, p: usize) {
        if flagged > 0 && !scan.suspect.get(p).copied().unwrap_or(true) {
            warn!(
                member = j,
                blocks = flagged,
                "checksum mismatch that a second read did not repeat"
            );
            self.health.count_mismatch(j, flagged);
        }
    }

    /// Read column range `[lo, hi)` of every position of group `g` of stripe
    /// `stripe`, verify every block, rebuild bad blocks from the others, and
    /// (with `repair`) write rebuilt blocks back to readable members.
    pub(crate) fn scan_group(
        &self,
        ino: u64,
        stripe: u64,
        g: &Group,
        lo: usize,
        hi: usize,
        repair: bool,
    ) -> GroupScan {
        self.scan_group_as(ino, stripe, g, lo, hi, repair, false)
    }

    /// [`DataStore::scan_group`]; `dirty`: the group may hold a write a
    /// crash interrupted, so its parity may be stale. A poisoned block has
    /// no checksum to witness its rebuilt bytes; in a dirty group they are
    /// trusted only when a parity row not used to rebuild them confirms
    /// them (a block rebuilt from stale parity would otherwise be written
    /// back as guessed bytes under a fresh checksum).
    #[allow(clippy::too_many_arguments)]
    fn scan_group_as(
        &self,
        ino: u64,
        stripe: u64,
        g: &Group,
        lo: usize,
        hi: usize,
        repair: bool,
        dirty: bool,
    ) -> GroupScan {
        // Read-only, nothing is written, not even a repair.
        let repair = repair && !self.read_only.load(Ordering::Relaxed);
        let len = hi - lo;
        let nblocks = len / BLOCK;
        let w = g.width();
        let off = stripe * self.layout.chunk + lo as u64;
        let mut bufs: Vec<Vec<u8>> = vec![vec![0u8; len]; w];
        // Per position: None = nothing trustworthy was read; Some(bad blocks, stored sums).
        let reads: Vec<Option<(Vec<usize>, Vec<u8>)>> =
            pool::map(bufs.iter_mut().enumerate(), |(p, buf)| {
                let j = g.members[p];
                if !self.health.state(j).readable() {
                    return None;
                }
                match self.read_with_sums(j, ino, off, buf) {
                    Ok(r) => {
                        if !r.0.is_empty() {
                            self.health.count_mismatch(j, r.0.len() as u64);
                        }
                        Some(r)
                    }
                    Err(e) => {
                        self.health.count_read_error(j);
                        debug!(member = j, ino, error = %e, "read failed during group scan");
                        None
                    }
                }
            });
        // bad[p][b]: block b of position p is not trustworthy.
        let mut bad = vec![vec![false; nblocks]; w];
        let mut mismatches = 0;
        for p in 0..w {
            match &reads[p] {
                Some((bl, _)) => {
                    for &b in bl {
                        bad[p][b] = true;
                        mismatches += 1;
                    }
                }
                None => {
                    bad[p].fill(true);
                    if self.health.state(g.members[p]).readable() {
                        mismatches += nblocks as u64;
                    }
                }
            }
        }
        let suspect: Vec<bool> = bad.iter().map(|v| v.iter().any(|&x| x)).collect();
        let mut lost = Vec::new();
        let mut unconfirmed = Vec::new();
        let mut repaired = 0;
        let tol = g.tolerance();
        // `b` indexes a column across every position's buffers and flags.
        #[allow(clippy::needless_range_loop)]
        for b in 0..nblocks {
            let missing: Vec<usize> = (0..w).filter(|&p| bad[p][b]).collect();
            if missing.is_empty() {
                continue;
            }
            let r = b * BLOCK..(b + 1) * BLOCK;
            // Keep what the disk returned, to recognise a corrupt checksum entry.
            let before: Vec<Vec<u8>> = missing
                .iter()
                .map(|&p| bufs[p][r.clone()].to_vec())
                .collect();
            let rebuilt = missing.len() <= tol
                && match &g.protect {
                    Protect::None => false,
                    Protect::Mirror => match (0..w).find(|p| !bad[*p][b]) {
                        Some(src) => {
                            let good = bufs[src][r.clone()].to_vec();
                            for &p in &missing {
                                bufs[p][r.clone()].copy_from_slice(&good);
                            }
                            true
                        }
                        None => false,
                    },
                    Protect::Parity(codec) => {
                        let mut refs: Vec<&mut [u8]> =
                            bufs.iter_mut().map(|v| &mut v[r.clone()]).collect();
                        codec.reconstruct(&mut refs, &missing).is_ok()
                    }
                };
            if !rebuilt {
                lost.extend(missing.iter().map(|&p| (p, b)));
                continue;
            }
            // A poisoned block (zeros under the POISON entry, left by a
            // rebuild or resync that had nothing to rebuild it from) has no
            // witness of its own, like an unreadable member's.
            let poisoned = |p: usize| {
                reads[p]
                    .as_ref()
                    .is_some_and(|(_, sums)| checksum::entry(sums, b) == checksum::POISON)
            };
            // The member's own checksum is a second witness: the rebuilt
            // block must match it, or the disk's bytes must equal the
            // rebuilt ones (then only the checksum entry was bad). Neither
            // means the redundancy itself is stale (an interrupted write):
            // the block is lost rather than guessed, and a poisoned block
            // rebuilt from the same column is not trusted either.
            let witnessed: Vec<bool> = missing
                .iter()
                .enumerate()
                .map(|(mi, &p)| match &reads[p] {
                    Some((_, sums)) if !poisoned(p) => {
                        checksum::block_sum(&bufs[p][r.clone()]) == checksum::entry(sums, b)
                            || before[mi] == bufs[p][r.clone()]
                    }
                    _ => true,
                })
                .collect();
            let consistent = witnessed.iter().all(|&x| x);
            let unwitnessed_ok = consistent
                && (!missing.iter().any(|&p| poisoned(p))
                    || trust_unwitnessed(g, &bufs, r.clone(), &missing, dirty));
            if consistent && !unwitnessed_ok {
                unconfirmed.push(b);
            }
            for (mi, &p) in missing.iter().enumerate() {
                if reads[p].is_none() {
                    continue;
                }
                // Redundancy re-encoded from data that verified is right
                // whatever the member held; anything else needs a witness.
                let ok = if p >= g.data && (0..g.data).all(|q| !bad[q][b]) {
                    true
                } else if poisoned(p) {
                    unwitnessed_ok
                } else {
                    witnessed[mi]
                };
                if !ok {
                    lost.push((p, b));
                    continue;
                }
                let j = g.members[p];
                if !repair {
                    continue;
                }
                let boff = off + (b * BLOCK) as u64;
                match self.write_blocks_reserved(j, ino, boff, &bufs[p][r.clone()]) {
                    Ok(()) => {
                        repaired += 1;
                        self.health.count_repaired(j, 1, BLOCK as u64);
                    }
                    Err(e) => {
                        self.health.count_write_error(j);
                        self.fail_member(j, "repair write failed", &e);
                    }
                }
            }
        }
        // A readable member whose read failed outright (EIO, missing shard):
        // as md does, rewrite what was rebuilt; if even that fails, the
        // member is failed (a vanished disk ends here).
        if repair {
            for p in 0..w {
                let j = g.members[p];
                if reads[p].is_some()
                    || !self.health.state(j).readable()
                    || lost.iter().any(|&(lp, _)| lp == p)
                {
                    continue;
                }
                match self.write_blocks_reserved(j, ino, off, &bufs[p]) {
                    Ok(()) => {
                        repaired += nblocks as u64;
                        self.health.count_repaired(j, nblocks as u64, len as u64);
                    }
                    Err(e) => {
                        self.health.count_write_error(j);
                        self.fail_member(j, "rewrite after read error failed", &e);
                    }
                }
            }
        }
        GroupScan {
            bufs,
            mismatches,
            repaired,
            lost,
            suspect,
            unread: reads.iter().map(Option::is_none).collect(),
            unconfirmed,
        }
    }

    // ----- public API ------------------------------------------------------

    /// Write `data` at `offset` of inode `ino`, whose logical size before
    /// the write is `file_size`.
    pub fn write(&self, ino: u64, offset: u64, data: &[u8], file_size: u64) -> Result<()> {
        let r = self.write_and_settle(ino, offset, data, file_size);
        if r.is_err() {
            // The caller records no new size, but members may hold the
            // write's bytes past the end.
            self.zero_past_end.forget(ino);
        }
        r
    }

    fn write_and_settle(&self, ino: u64, offset: u64, data: &[u8], file_size: u64) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        {
            let _g = self.lock_write(ino);
            self.check_writable()?;
            if offset > file_size {
                // The hole must read as zeros: clear whatever a failed or
                // crashed write may have left past the old end.
                self.cut(ino, file_size)?;
                // The write marks its own regions for real.
                let written_from = (offset / self.layout.stripe_data) >> intent::REGION_SHIFT;
                self.unmark_ahead(ino, self.end_region(file_size)..written_from)?;
            }
            self.write_locked(ino, offset, data, file_size)?;
        }
        if self.intent.dirty_regions() > MAX_DIRTY_REGIONS {
            self.sync_all_dirty()?;
        }
        Ok(())
    }

    fn write_locked(&self, ino: u64, offset: u64, data: &[u8], file_size: u64) -> Result<()> {
        self.readahead.invalidate(ino);
        self.note_unsynced(ino);
        let sdb = self.layout.stripe_data;
        let chunk = self.layout.chunk;
        let n = self.layout.members;
        let end = offset + data.len() as u64;
        let first = offset / sdb;
        let last = (end - 1) / sdb;
        let per_batch = (BATCH_BYTES / (chunk * n as u64)).max(1);
        // Every writable member gets the shard, so a missing shard on an
        // active member later means lost data, not a hole.
        self.shards_created(
            self.targets()
                .into_iter()
                .map(|(j, m)| (j, self.handles.get(j, m.as_ref(), ino, true).map(|_| ()))),
        )?;
        let lim = AheadLimits {
            file_end_region: self.end_region(file_size),
            unused_ino: self.unused_ino.load(Ordering::Relaxed),
        };
        self.intent
            .mark(ino, first, last, lim, &self.targets(), &self.health)?;
        let mut s = first;
        while s <= last {
            let until = (s + per_batch - 1).min(last);
            if let Err(e) = self.write_batch(ino, s, until, offset, data, file_size) {
                // Some members may have taken their part past the end.
                self.zero_past_end.forget(ino);
                if matches!(e, ArrayError::NoSpace | ArrayError::FileTooLarge) {
                    self.resync_after_no_space(ino, s, until, file_size);
                }
                return Err(e);
            }
            s = until + 1;
        }
        self.check_writable()?;
        // Only for a file that grows: an appending writer will not read
        // these stripes back, while a rewrite in place may (its
        // partial-stripe reads would then go to the disks).
        if end > file_size
            && offset / writebehind::STEP != end / writebehind::STEP
            && end > writebehind::LAG
        {
            self.start_write_back(ino, end - writebehind::LAG);
        }
        Ok(())
    }

    /// A batch that ran out of space on some member left the others holding
    /// their part of it: in stripes `first..=last`, parity and data may
    /// disagree, and a member failing later would be rebuilt wrong from
    /// them. Resync, from the data as the members hold it, the rows that
    /// hold the file's bytes (it is still `size` long): those whose parity
    /// was written before, so no new space is needed and the full member is
    /// not failed for being full. Rows past the end may keep what the write
    /// left; the file is off the [`zeroend`] list, so a write that grows it
    /// there zeroes them first. Caller holds the file's write lock.
    fn resync_after_no_space(&self, ino: u64, first: u64, last: u64, size: u64) {
        let sdb = self.layout.stripe_data;
        let chunk = self.layout.chunk;
        // The stripes of the batch that hold some of the file's bytes.
        for st in first..(last + 1).min(self.layout.stripes_for(size)) {
            let rows = |group_start: u64| {
                let held = size.saturating_sub(st * sdb + group_start);
                align_up(held.min(chunk) as usize)
            };
            if let Err(e) = self.resync_stripe_rows(ino, st, rows) {
                warn!(ino, stripe = st, error = %e, "cannot resync a stripe after running out of space");
            }
        }
    }

    /// First write-intent region wholly past a file of `size` bytes.
    fn end_region(&self, size: u64) -> u64 {
        self.layout
            .stripes_for(size)
            .div_ceil(1 << intent::REGION_SHIFT)
    }

    /// Have the members start writing back `ino`'s stripes that lie wholly
    /// before file offset `before` (see [`writebehind`]).
    fn start_write_back(&self, ino: u64, before: u64) {
        let upto = before / self.layout.stripe_data * self.layout.chunk;
        let files = self
            .targets()
            .iter()
            .filter_map(|(j, _)| self.handles.cached(*j, ino))
            .map(|sh| Arc::clone(&sh.data))
            .collect();
        self.write_behind.request(files, upto);
    }

    fn write_batch(
        &self,
        ino: u64,
        first: u64,
        last: u64,
        offset: u64,
        data: &[u8],
        file_size: u64,
    ) -> Result<()> {
        let sdb = self.layout.stripe_data;
        let chunk = self.layout.chunk;
        let cs = chunk as usize;
        let n = self.layout.members;
        let end = offset + data.len() as u64;
        let mut b = Batch {
            fill: vec![0; n],
            by_member: vec![Vec::new(); n],
            ..Default::default()
        };
        // Taken out whatever its stripe: this batch changes the file.
        let mut tail = self.tails.take(ino);
        // Untouched data chunks past the old end need zeroing on the
        // members only if they may hold something else ([`zeroend`]).
        let zeroed = self.zero_past_end.holds(ino);
        let tail_first = tail
            .as_ref()
            .is_some_and(|t| t.stripe == first && t.size == file_size);
        // Stripe number of each segment, parallel to b.segs.
        let mut seg_stripe = Vec::new();
        for s in first..=last {
            let plan = self.layout.plan(ino, s)?;
            for (gi, g) in plan.groups.iter().enumerate() {
                // Column range touched in this group.
                let mut lo = usize::MAX;
                let mut hi = 0;
                for i in 0..g.data {
                    let cf = s * sdb + (g.first + i) as u64 * chunk;
                    let a = offset.max(cf);
                    let z = end.min(cf + chunk);
                    if a < z {
                        lo = lo.min(align_down((a - cf) as usize));
                        hi = hi.max(align_up((z - cf) as usize).min(cs));
                    }
                }
                if lo >= hi {
                    continue;
                }
                let start = b.segs.len();
                let parity = matches!(g.protect, Protect::Parity(_));
                for p in 0..g.width() {
                    let j = g.members[p];
                    if p < g.data {
                        let cf = s * sdb + (g.first + p) as u64 * chunk;
                        let a = offset.max(cf + lo as u64);
                        let z = end.min(cf + hi as u64);
                        let touched = a < z;
                        let covers = a <= cf + lo as u64 && z >= cf + hi as u64;
                        // Column where the file's old end falls, clamped to the range.
                        let eof = (file_size.saturating_sub(cf) as usize).clamp(lo, hi);
                        let below_uncovered = if touched {
                            // Old bytes [lo, eof) not overwritten by the new data.
                            let (ta, tz) = ((a - cf) as usize, (z - cf) as usize);
                            lo < eof && (ta > lo || tz < eof)
                        } else {
                            lo < eof
                        };
                        let read = !covers && below_uncovered && (parity || touched);
                        let write = touched || (parity && eof < hi && !zeroed);
                        let cached = read && s == first && tail_first;
                        b.seg(j, lo, hi - lo, read && !cached, write);
                        if let Some(seg) = b.segs.last_mut() {
                            seg.cached = cached;
                        }
                    } else {
                        b.seg(j, lo, hi - lo, false, true);
                    }
                    seg_stripe.push(s);
                }
                b.works.push(Work {
                    stripe: s,
                    plan: plan.clone(),
                    group: gi,
                    lo,
                    hi,
                    segs: start..b.segs.len(),
                });
            }
        }
        b.bufs = (0..n).map(|j| self.take_buf(b.fill[j])).collect();
        self.batch_reads(ino, &mut b, chunk, &seg_stripe);
        let old_tail = tail.as_ref().filter(|_| tail_first).map(|t| &t.data[..]);
        let result = self.fill_and_encode(ino, &mut b, offset, data, file_size, old_tail);
        let result = result.and_then(|()| self.batch_writes(ino, &b, chunk, &seg_stripe));
        if result.is_ok() && end.div_ceil(sdb) == last + 1 && !end.is_multiple_of(sdb) {
            let size = file_size.max(end);
            self.keep_tail(ino, last, size, &b, tail.take().map(|t| t.data));
        }
        for v in b.bufs.drain(..) {
            self.give_buf(v);
        }
        result
    }

    /// Keep the data of stripe `stripe`, which the batch `b` just wrote and
    /// the write ended inside, leaving the file `size` bytes long, for the
    /// file's next write ([`tailcache`]): only when the batch holds all of
    /// it, which is the case for parity groups written over their whole
    /// column range (every data chunk was read, taken from the previous
    /// tail, written or past the end, so zero). Mirror and plain groups read
    /// back only the blocks a write cuts, so they are not kept.
    fn keep_tail(&self, ino: u64, stripe: u64, size: u64, b: &Batch, reuse: Option<Vec<u8>>) {
        let sdb = self.layout.stripe_data;
        let cs = self.layout.chunk as usize;
        if sdb > tailcache::MAX_STRIPE {
            return;
        }
        let works: Vec<&Work> = b.works.iter().filter(|w| w.stripe == stripe).collect();
        let Some(plan) = works.first().map(|w| &w.plan) else {
            return;
        };
        let whole = works.len() == plan.groups.len()
            && works.iter().all(|w| {
                w.lo == 0
                    && w.hi == cs
                    && matches!(w.plan.groups[w.group].protect, Protect::Parity(_))
            });
        if !whole {
            return;
        }
        let mut data = reuse.unwrap_or_default();
        data.resize(sdb as usize, 0);
        for w in works {
            let g = &w.plan.groups[w.group];
            for (p, s) in b.segs[w.segs.clone()].iter().enumerate().take(g.data) {
                let at = (g.first + p) * cs;
                data[at..at + cs].copy_from_slice(&b.bufs[s.member][s.buf..s.buf + s.len]);
            }
        }
        self.tails.put(tailcache::Tail {
            ino,
            stripe,
            size,
            data,
        });
    }

    /// Rebuild unreadable old contents, take old contents kept in `tail`
    /// (the data of the batch's first stripe, [`tailcache`]), zero bytes
    /// past the old end, lay the new data over the chunks and compute
    /// redundancy.
    fn fill_and_encode(
        &self,
        ino: u64,
        b: &mut Batch,
        offset: u64,
        data: &[u8],
        file_size: u64,
        tail: Option<&[u8]>,
    ) -> Result<()> {
        let sdb = self.layout.stripe_data;
        let chunk = self.layout.chunk;
        let cs = chunk as usize;
        let end = offset + data.len() as u64;
        for w in &b.works {
            let g = &w.plan.groups[w.group];
            let segs = &b.segs[w.segs.clone()];
            if segs.iter().any(|s| s.read && !s.ok) {
                let scan = self.scan_group(ino, w.stripe, g, w.lo, w.hi, true);
                for (p, s) in segs.iter().enumerate().take(g.data) {
                    if s.read && !s.ok {
                        if scan.lost.iter().any(|&(lp, _)| lp == p) {
                            return Err(self.unrecoverable(
                                ino,
                                w.stripe,
                                "old contents needed for a partial-stripe write",
                            ));
                        }
                        b.bufs[s.member][s.buf..s.buf + s.len].copy_from_slice(&scan.bufs[p]);
                    }
                }
                for (p, s) in segs.iter().enumerate() {
                    self.count_unrepeated(s.member, s.flagged, &scan, p);
                }
            }
            for (p, s) in segs.iter().enumerate().take(g.data) {
                let cf = w.stripe * sdb + (g.first + p) as u64 * chunk;
                let buf = &mut b.bufs[s.member][s.buf..s.buf + s.len];
                let col0 = cf + s.col as u64;
                let a = offset.max(col0);
                let z = end.min(col0 + s.len as u64);
                let kept = tail.filter(|_| s.cached).map(|t| {
                    let at = (g.first + p) * cs + s.col;
                    &t[at..at + s.len]
                });
                debug_assert_eq!(kept.is_some(), s.cached);
                if let Some(old) = kept {
                    buf.copy_from_slice(old);
                }
                // Zero what was not read (unless the new data covers it all)
                // and whatever lies past the old end.
                if !s.read && !s.cached {
                    if !(a == col0 && z == col0 + s.len as u64) {
                        buf.fill(0);
                    }
                } else if file_size < col0 + s.len as u64 {
                    let from = file_size.saturating_sub(col0) as usize;
                    buf[from..].fill(0);
                }
                if a < z {
                    buf[(a - col0) as usize..(z - col0) as usize]
                        .copy_from_slice(&data[(a - offset) as usize..(z - offset) as usize]);
                }
            }
            encode_group(g, segs, &mut b.bufs)?;
        }
        Ok(())
    }

    fn unrecoverable(&self, ino: u64, stripe: u64, what: &str) -> ArrayError {
        if self.layout.survives(&self.health, MemberState::readable) {
            ArrayError::Unrecoverable(format!("inode {ino} stripe {stripe}: {what}"))
        } else {
            ArrayError::ArrayFailed(format!(
                "inode {ino} stripe {stripe}: {what}: too many members failed ({:?})",
                self.health.states()
            ))
        }
    }

    /// Bound the memory of read-ahead windows to about `bytes` (0: no
    /// read-ahead); returns how many files are followed at once.
    pub fn set_read_ahead_budget(&self, bytes: u64) -> usize {
        self.readahead.set_budget(bytes, self.read_ahead_window())
    }

    /// Bytes of one read-ahead window: whole stripes, about 1 MiB of data.
    fn read_ahead_window(&self) -> u64 {
        let sdb = self.layout.stripe_data;
        (readahead::WINDOW_BYTES / sdb).max(1) * sdb
    }

    /// Read up to `buf.len()` bytes at `offset` of inode `ino` of logical
    /// size `file_size`; returns the number of bytes read (0 at or past the end).
    pub fn read(&self, ino: u64, offset: u64, buf: &mut [u8], file_size: u64) -> Result<usize> {
        if offset >= file_size || buf.is_empty() {
            return Ok(0);
        }
        let len = (buf.len() as u64).min(file_size - offset) as usize;
        let _g = self.lock_read(ino);
        let window = self.read_ahead_window();
        let out = &mut buf[..len];
        // A read as large as a window gains nothing from one: its member
        // requests are already large, and a window would cost a copy.
        if len as u64 >= window {
            self.read_locked(ino, offset, out)?;
            return Ok(len);
        }
        let served = self
            .readahead
            .read(ino, offset, out, file_size, window, |at, b| {
                self.read_locked(ino, at, b)
            });
        if !served {
            self.read_locked(ino, offset, out)?;
        }
        Ok(len)
    }

    /// Read `out.len()` bytes at `offset` (all below the file's end) from
    /// the members straight into `out`: one request per run of a member's
    /// adjacent chunks, the members claimed one at a time by the caller and
    /// threads of the I/O pool, checksums verified in place; only blocks cut
    /// by the ends of the range go through a small buffer. Reading into
    /// member buffers first and copying out cost as much again as the read
    /// itself from the page cache.
    ///
    /// A chunk that fails (member not readable, I/O error, checksum
    /// mismatch) is counted, and its column range, and those of the
    /// member's chunks after it in this call, are rebuilt from the rest of
    /// their groups, written back and copied out ([`DataStore::scan_group`]);
    /// what cannot be rebuilt is EIO. Caller holds the inode's lock.
    fn read_locked(&self, ino: u64, offset: u64, out: &mut [u8]) -> Result<()> {
        if out.is_empty() {
            return Ok(());
        }
        let sdb = self.layout.stripe_data;
        let chunk = self.layout.chunk;
        let end = offset + out.len() as u64;
        // Per member, its pieces in shard order.
        let mut per: Vec<Vec<Piece<'_>>> = (0..self.layout.members).map(|_| Vec::new()).collect();
        let mut rest = out;
        let mut at = offset;
        let mut s = offset / sdb;
        // (file offset, group, position) of the stripe's data chunks.
        let mut chunks: Vec<(u64, usize, usize)> = Vec::new();
        while at < end {
            let plan = self.layout.plan(ino, s)?;
            chunks.clear();
            for (gi, g) in plan.groups.iter().enumerate() {
                for p in 0..g.data {
                    chunks.push((s * sdb + (g.first + p) as u64 * chunk, gi, p));
                }
            }
            chunks.sort_unstable_by_key(|c| c.0);
            for &(cf, group, pos) in &chunks {
                if cf + chunk <= at || at >= end {
                    continue;
                }
                let z = end.min(cf + chunk);
                let (dest, tail) = std::mem::take(&mut rest).split_at_mut((z - at) as usize);
                rest = tail;
                let (lo, hi) = ((at - cf) as usize, (z - cf) as usize);
                let (col, ahi) = (align_down(lo), align_up(hi).min(chunk as usize));
                let bounce = (col != lo || ahi != hi).then(|| (lo - col, vec![0u8; ahi - col]));
                per[plan.groups[group].members[pos]].push(Piece {
                    stripe: s,
                    plan: plan.clone(),
                    group,
                    pos,
                    col,
                    dest,
                    bounce,
                    ok: false,
                    flagged: 0,
                });
                at = z;
            }
            s += 1;
        }
        // Every byte of `out` has a piece: read-ahead relies on it to reuse
        // buffers without zeroing them.
        debug_assert!(rest.is_empty());
        // A member with nothing to read gets no job (no thread woken for it).
        let busy = per.iter_mut().enumerate().filter(|(_, l)| !l.is_empty());
        pool::map(busy, |(j, list)| self.read_pieces(j, ino, list));
        for piece in per.iter_mut().flatten().filter(|p| !p.ok) {
            let g = &piece.plan.groups[piece.group];
            // A stripe an unclean shutdown left dirty, not resynced: the
            // whole group is scanned and judged as the resync would have.
            let dirty = self.unresynced(ino, piece.stripe);
            let (lo, hi) = if dirty {
                (0, chunk as usize)
            } else {
                (piece.col, piece.col + piece.len())
            };
            let scan = self.scan_group_as(ino, piece.stripe, g, lo, hi, true, dirty);
            self.count_unrepeated(g.members[piece.pos], piece.flagged, &scan, piece.pos);
            // Blocks of the piece, counted from the start of the scan.
            let blocks = (piece.col - lo) / BLOCK..(piece.col - lo + piece.len()) / BLOCK;
            if scan
                .lost
                .iter()
                .any(|&(lp, b)| lp == piece.pos && blocks.contains(&b))
            {
                return Err(self.unrecoverable(
                    ino,
                    piece.stripe,
                    "data chunk cannot be read or rebuilt",
                ));
            }
            // Rebuilt whole from parity with no checksum of its own to
            // witness it: the parity must be confirmed, or the resync
            // would have poisoned it.
            if dirty
                && scan.unread[piece.pos]
                && matches!(g.protect, Protect::Parity(_))
                && !self.dirty_rebuild_confirmed(ino, piece.stripe, g, &scan)?
            {
                return Err(self.unrecoverable(
                    ino,
                    piece.stripe,
                    "data chunk rebuilt from parity an unclean shutdown may have left stale \
                     (not resynced: assembled read-only)",
                ));
            }
            let skip = piece.col - lo + piece.bounce.as_ref().map_or(0, |(k, _)| *k);
            let n = piece.dest.len();
            piece
                .dest
                .copy_from_slice(&scan.bufs[piece.pos][skip..skip + n]);
        }
        Ok(())
    }

    /// Read and verify `list` (in shard order) from member `j`, setting
    /// each piece's `ok`; read errors and bad blocks are counted.
    fn read_pieces(&self, j: usize, ino: u64, list: &mut [Piece<'_>]) {
        let (Some(first), Some(last)) = (list.first(), list.last()) else {
            return;
        };
        if !self.health.state(j).readable() {
            return;
        }
        let chunk = self.layout.chunk;
        let lo = first.stripe * chunk + first.col as u64;
        let hi = last.stripe * chunk + (last.col + last.len()) as u64;
        let read_error = |e: &io::Error| {
            self.health.count_read_error(j);
            debug!(member = j, ino, error = %e, "read failed");
        };
        let member = self
            .member(j)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "member missing"));
        let shard = match member.and_then(|m| self.handles.get(j, m.as_ref(), ino, false)) {
            Ok(sh) => sh,
            Err(e) => return read_error(&e),
        };
        // The sums of the whole range, in one request after the first
        // chunk's (those of the parity chunks between the pieces included:
        // 4 bytes per block).
        let mut sums: Option<Vec<u8>> = None;
        // Pieces that follow each other in the shard (runs between the
        // member's parity chunks) are read with one request per run, and
        // each run is verified while its bytes are still in the cache.
        // After the first failure the member's remaining pieces are left to
        // the group scan, which reads and checks them against the others.
        let mut i = 0;
        while i < list.len() {
            let mut end = i + 1;
            while end < list.len()
                && end - i < MAX_READ_RUN
                && list[end].shard_offset(chunk)
                    == list[end - 1].shard_offset(chunk) + list[end - 1].len() as u64
            {
                end += 1;
            }
            let run = &mut list[i..end];
            i = end;
            // Pieces of the run read whole by one vectored request; a run cut
            // short by the end of the shard reads the rest one by one.
            let mut whole = 0;
            if run.len() > 1 {
                let at = run[0].shard_offset(chunk);
                let mut bufs: Vec<IoSliceMut<'_>> =
                    run.iter_mut().map(|p| IoSliceMut::new(p.buf())).collect();
                let mut n = match shard.data.read_vectored_at(at, &mut bufs) {
                    Ok(n) => n,
                    Err(e) => return read_error(&e),
                };
                while whole < run.len() && n >= run[whole].len() {
                    n -= run[whole].len();
                    whole += 1;
                }
            }
            for (k, piece) in run.iter_mut().enumerate() {
                let off = piece.shard_offset(chunk);
                let len = piece.len();
                let buf = piece.buf();
                if k >= whole {
                    match shard.data.read_at(off, buf) {
                        Ok(n) => buf[n..].fill(0),
                        Err(e) => return read_error(&e),
                    }
                }
                let sums = match &mut sums {
                    Some(v) => v,
                    None => {
                        let mut v =
                            vec![0u8; ((hi - lo) / BLOCK as u64) as usize * checksum::ENTRY];
                        match shard
                            .sums
                            .read_at(lo / BLOCK as u64 * checksum::ENTRY as u64, &mut v)
                        {
                            Ok(n) => v[n..].fill(0),
                            Err(e) => return read_error(&e),
                        }
                        sums.insert(v)
                    }
                };
                let first_block = ((off - lo) / BLOCK as u64) as usize;
                let entries =
                    &sums[first_block * checksum::ENTRY..][..len / BLOCK * checksum::ENTRY];
                let bad = self.verify(j, ino, off, buf, entries);
                if !bad.is_empty() {
                    piece.flagged = bad.len() as u64;
                    return;
                }
                if let Some((skip, v)) = &piece.bounce {
                    let n = piece.dest.len();
                    piece.dest.copy_from_slice(&v[*skip..*skip + n]);
                }
                piece.ok = true;
            }
        }
    }

    /// Remember that `ino`'s shards changed since their last sync.
    fn note_unsynced(&self, ino: u64) {
        let change = Unsynced {
            at: Instant::now(),
            number: self.changes.fetch_add(1, Ordering::Relaxed) + 1,
        };
        self.unsynced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(ino, change);
    }

    /// The last change of `ino` not yet synced, if any.
    fn last_change(&self, ino: u64) -> Option<Unsynced> {
        self.unsynced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&ino)
            .copied()
    }

    /// Tell the data path the first inode number not yet allocated, so the
    /// write-intent log may mark the next new files ahead of their writes.
    /// Until told, it marks no other inode ahead.
    pub fn note_unused_ino(&self, first_unused: u64) {
        // Numbers only grow; a late caller with an older value must not
        // lower it (the inodes in between exist now).
        let cur = self.unused_ino.load(Ordering::Relaxed);
        if cur == u64::MAX {
            let _ = self.unused_ino.compare_exchange(
                u64::MAX,
                first_unused,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
        self.unused_ino.fetch_max(first_unused, Ordering::Relaxed);
    }

    /// Change the logical size of `ino` from `old_size` to `new_size`.
    pub fn truncate(&self, ino: u64, old_size: u64, new_size: u64) -> Result<()> {
        let _g = self.lock_write(ino);
        self.check_writable()?;
        // Growing exposes [old_size, new_size) as a hole: it must be zeros,
        // whatever an interrupted write left there.
        self.cut(ino, old_size.min(new_size))?;
        if new_size > old_size {
            self.unmark_ahead(ino, self.end_region(old_size)..self.end_region(new_size))?;
        }
        Ok(())
    }

    /// A file grows without being written there (a hole), and `regions`
    /// (wholly past its old end) now lie inside it: a mark ahead of an
    /// earlier writer there would, after a crash on a degraded array, make
    /// a resync that cannot confirm those stripes lose the missing member's
    /// chunks of the hole. Rewrite the log without marks ahead first (one
    /// log write, only when the members hold such a mark in `regions`).
    /// Regions the growing write itself covers are not among `regions`: it
    /// marks them for real. So writes that reach the daemon slightly out
    /// of order (the kernel's write-back requests are served by several
    /// threads) cost no log write unless a whole region is skipped.
    fn unmark_ahead(&self, ino: u64, regions: std::ops::Range<u64>) -> Result<()> {
        if self.intent.holds_ahead(ino, regions) {
            self.intent.persist(&self.targets(), &self.health)?;
        }
        Ok(())
    }

    /// Make every byte of `ino` past `size` zero or absent: zero the rest of
    /// the stripe holding `size` (through the write path, so parity follows)
    /// and cut every shard after that stripe. Caller holds the write lock.
    pub(crate) fn cut(&self, ino: u64, size: u64) -> Result<()> {
        let r = self.cut_listed(ino, size);
        if r.is_err() {
            // Cut part-way: members may hold old bytes past the new end.
            self.zero_past_end.forget(ino);
        }
        r
    }

    fn cut_listed(&self, ino: u64, size: u64) -> Result<()> {
        let since = self.zero_past_end.epoch();
        // Recorded as changed before any shard is, if a member is out.
        let health = &self.health;
        let _changing = self.intent.mark_changed(ino, &self.targets(), health)?;
        self.readahead.invalidate(ino);
        self.tails.forget(ino);
        self.note_unsynced(ino);
        let sdb = self.layout.stripe_data;
        let stripes = self.layout.stripes_for(size);
        if !size.is_multiple_of(sdb) {
            let zeros = vec![0u8; (stripes * sdb - size) as usize];
            self.write_locked(ino, size, &zeros, size)?;
        }
        let shard_len = stripes * self.layout.chunk;
        let sums_len = shard_len / BLOCK as u64 * checksum::ENTRY as u64;
        for (j, m) in self.targets() {
            let r = self.handles.get(j, m.as_ref(), ino, true).and_then(|sh| {
                if sh.data.len()? > shard_len {
                    sh.data.set_len(shard_len)?;
                }
                if sh.sums.len()? > sums_len {
                    sh.sums.set_len(sums_len)?;
                }
                Ok(())
            });
            if let Err(e) = r {
                self.health.count_write_error(j);
                self.fail_member(j, "truncate failed", &e);
            }
        }
        self.check_writable()?;
        self.zero_past_end.insert(ino, since);
        Ok(())
    }

    /// Make stripes `first..last` of `ino` (wholly inside its `file_size`)
    /// zeros and give their space back: every member's chunks of them, and
    /// their checksums (an entry of zeros is a zero block's), are punched
    /// out of its shard. Parity of zeros is zeros, so the stripes stay
    /// consistent; while the members are part-way, the write-intent log
    /// names them, as for a write. Where a member cannot punch (FAT,
    /// exFAT), zeros are written through the write path instead.
    pub fn punch(&self, ino: u64, first: u64, last: u64, file_size: u64) -> Result<()> {
        if first >= last {
            return Ok(());
        }
        let _g = self.lock_write(ino);
        self.check_writable()?;
        self.readahead.invalidate(ino);
        self.tails.forget(ino);
        self.note_unsynced(ino);
        let lim = AheadLimits {
            file_end_region: self.end_region(file_size),
            unused_ino: self.unused_ino.load(Ordering::Relaxed),
        };
        self.intent
            .mark(ino, first, last - 1, lim, &self.targets(), &self.health)?;
        let chunk = self.layout.chunk;
        let (from, to) = (first * chunk, last * chunk);
        let sums = |o: u64| o / BLOCK as u64 * checksum::ENTRY as u64;
        let results = pool::map(self.targets(), |(j, m)| {
            let r = self.handles.get(j, m.as_ref(), ino, true).and_then(|sh| {
                sh.data.punch_hole(from, to - from)?;
                sh.sums.punch_hole(sums(from), sums(to) - sums(from))
            });
            (j, r)
        });
        let (mut unsupported, mut full) = (false, false);
        for (j, r) in results {
            match r {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Unsupported => unsupported = true,
                // A punch can need space (an extent split on a full
                // filesystem): the member is full, not failing.
                Err(e) if is_no_space(&e) => full = true,
                Err(e) => {
                    self.health.count_write_error(j);
                    self.fail_member(j, "punching a hole failed", &e);
                }
            }
        }
        self.check_writable()?;
        if full {
            // Some members punched, some did not: bring the stripes'
            // redundancy back in line with the data as they hold it.
            self.resync_after_no_space(ino, first, last - 1, file_size);
            return Err(ArrayError::NoSpace);
        }
        if unsupported {
            let sdb = self.layout.stripe_data;
            let step = (BATCH_BYTES / sdb).max(1) * sdb;
            let zeros = vec![0u8; step.min((last - first) * sdb) as usize];
            let mut at = first * sdb;
            while at < last * sdb {
                let n = ((last * sdb - at) as usize).min(zeros.len());
                self.write_locked(ino, at, &zeros[..n], file_size)?;
                at += n as u64;
            }
        }
        Ok(())
    }

    /// Give `ino`, a file leaving inline storage, empty shards on every
    /// writable member. It has no shards unless an earlier move out of
    /// inline storage was interrupted; those are emptied rather than
    /// removed first, so a new file costs one open per shard file, not a
    /// removal, a failed lookup and an open.
    pub fn create_shards(&self, ino: u64) -> Result<()> {
        let _g = self.lock_write(ino);
        self.check_writable()?;
        self.readahead.invalidate(ino);
        self.tails.forget(ino);
        self.handles.forget_ino(ino);
        let since = self.zero_past_end.epoch();
        let _changing = self
            .intent
            .mark_changed(ino, &self.targets(), &self.health)?;
        // Creating a file costs a filesystem tens of microseconds (an inode
        // and a directory entry, journaled): the members do it in parallel.
        self.shards_created(pool::map(self.targets(), |(j, m)| {
            (j, self.handles.open_empty(j, m.as_ref(), ino).map(|_| ()))
        }))?;
        self.zero_past_end.insert(ino, since);
        Ok(())
    }

    /// Act on the outcome of creating a file's shard on each member: a full
    /// member is ENOSPC for the caller (nobody fails), any other error fails
    /// that member; then the array must still be writable.
    fn shards_created(
        &self,
        results: impl IntoIterator<Item = (usize, io::Result<()>)>,
    ) -> Result<()> {
        for (j, r) in results {
            if let Err(e) = r {
                if is_no_space(&e) {
                    return Err(ArrayError::NoSpace);
                }
                self.health.count_write_error(j);
                self.fail_member(j, "cannot create shard", &e);
            }
        }
        self.check_writable()
    }

    /// Remove every shard of `ino`.
    pub fn remove(&self, ino: u64) -> Result<()> {
        let _g = self.lock_write(ino);
        self.readahead.invalidate(ino);
        self.tails.forget(ino);
        self.zero_past_end.forget(ino);
        self.handles.forget_ino(ino);
        for (j, m) in self.targets() {
            let r = m
                .remove(&shard::shard_path(ino))
                .and_then(|()| m.remove(&shard::sums_path(ino)));
            if let Err(e) = r {
                self.health.count_write_error(j);
                self.fail_member(j, "remove failed", &e);
            }
        }
        self.intent.clear_ino(ino, &self.health);
        self.unsynced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&ino);
        Ok(())
    }

    /// Make the data of `ino` durable on every writable member.
    /// A file with nothing written since its last sync (and no region left
    /// dirty from before start-up) costs nothing: its shards already are
    /// durable.
    pub fn sync(&self, ino: u64) -> Result<()> {
        let _g = self.lock_read(ino);
        let written = self
            .unsynced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&ino);
        if !written && !self.intent.is_dirty(ino) {
            return Ok(());
        }
        self.sync_locked(ino)
    }

    /// [`DataStore::sync`] for `fsync`: the write-intent log on the
    /// members also stops listing the file before this returns (one more
    /// write of the log when it did). Otherwise a crash within the second
    /// before the log's next write would leave the synced stripes listed
    /// as dirty, and a resync on a degraded array (degraded before the
    /// crash or by a member missing after it) would read the missing
    /// member's chunks of them as EIO.
    pub fn fsync(&self, ino: u64) -> Result<()> {
        self.sync(ino)?;
        self.intent
            .persist_cleared(ino, &self.targets(), &self.health)
    }

    pub(crate) fn sync_locked(&self, ino: u64) -> Result<()> {
        let targets = self.targets();
        pool::map(targets.iter(), |(j, m)| {
            let r = match self.handles.cached(*j, ino) {
                Some(sh) => Ok(Some(sh)),
                None => match self.handles.get(*j, m.as_ref(), ino, false) {
                    Ok(sh) => Ok(Some(sh)),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(e),
                },
            }
            .and_then(|sh| match sh {
                Some(sh) => {
                    sh.data.sync_data()?;
                    sh.sums.sync_data()
                }
                None => Ok(()),
            });
            if let Err(e) = r {
                self.health.count_write_error(*j);
                self.fail_member(*j, "sync failed", &e);
            }
        });
        self.check_writable()?;
        self.synced(ino);
        Ok(())
    }

    /// `ino`'s data is durable: drop its regions from the write-intent log.
    fn synced(&self, ino: u64) {
        self.intent.clear_ino(ino, &self.health);
        self.unsynced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&ino);
    }

    /// Make the data of `inos` durable and drop their regions from the
    /// write-intent log. Many files at once (a copy of many small ones) are
    /// synced with one `syncfs` per member instead of an `fdatasync` of
    /// every shard and sidecar (eight per file on four members). The
    /// files' locks are not held across the `syncfs`: the number of each
    /// file's last change is read under its lock before, and a file changed
    /// since (its new bytes may have missed the sync) is synced on its own.
    fn sync_files(&self, inos: &[u64]) -> Result<()> {
        if inos.len() >= SYNCFS_MIN_FILES {
            let before: Vec<(u64, Option<u64>)> = inos
                .iter()
                .map(|&ino| {
                    let _g = self.lock_read(ino);
                    (ino, self.last_change(ino).map(|c| c.number))
                })
                .collect();
            if self.sync_members()? {
                for (ino, number) in before {
                    let _g = self.lock_read(ino);
                    if self.last_change(ino).map(|c| c.number) == number {
                        self.synced(ino);
                    } else {
                        // Changed since: synced on its own, so that every
                        // file given is clean afterwards.
                        self.sync_locked(ino)?;
                    }
                }
                return Ok(());
            }
        }
        for &ino in inos {
            let _g = self.lock_read(ino);
            self.sync_locked(ino)?;
        }
        Ok(())
    }

    /// `syncfs` on every writable member, in parallel; `false` if a member
    /// cannot (its backend has no such call): then files are synced one by
    /// one.
    fn sync_members(&self) -> Result<bool> {
        let done = pool::map(self.targets(), |(j, m)| match m.sync_all() {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::Unsupported => false,
            Err(e) => {
                self.health.count_write_error(j);
                self.fail_member(j, "sync failed", &e);
                true
            }
        });
        self.check_writable()?;
        Ok(done.into_iter().all(|d| d))
    }

    /// Sync every file with dirty regions and write the (now smaller)
    /// write-intent log. Called when the dirty set grows large and at a
    /// clean shutdown ([`DataStore::close`]).
    pub fn sync_all_dirty(&self) -> Result<()> {
        let snap = self.intent.snapshot();
        let inos: std::collections::BTreeSet<u64> = snap.regions.iter().map(|&(i, _)| i).collect();
        self.sync_files(&inos.into_iter().collect::<Vec<_>>())?;
        self.intent.persist(&self.targets(), &self.health)
    }

    /// Sync the files with dirty regions whose last write is at least
    /// `idle` old and write the log if it shrank: the mount calls it every
    /// second, so that a few seconds after writes settle the log names only
    /// stripes being written (as md clears bitmap bits). That is what a
    /// resync after a crash checks, and on a degraded array a dirty stripe
    /// cannot be confirmed and loses its missing chunks: the smaller the
    /// set, the less a crash of a degraded array costs. Regions left from
    /// before start-up stay until the resync.
    pub fn settle(&self, idle: Duration) -> Result<()> {
        let snap = self.intent.snapshot();
        let inos: std::collections::BTreeSet<u64> = snap.regions.iter().map(|&(i, _)| i).collect();
        let now = Instant::now();
        let due: Vec<u64> = inos
            .into_iter()
            .filter(|&ino| {
                self.last_change(ino)
                    .is_none_or(|c| now.saturating_duration_since(c.at) >= idle)
            })
            .collect();
        self.sync_files(&due)?;
        for ino in due {
            // Its writes have settled: the kept stripe is not needed.
            let _g = self.lock_read(ino);
            self.tails.forget(ino);
        }
        self.intent.persist(&self.targets(), &self.health)
    }

    /// Clean shutdown of the data path: sync dirty files and record the
    /// write-intent log as clean (as far as it is).
    pub fn close(&self) -> Result<()> {
        self.write_behind.stop();
        self.sync_all_dirty()
    }

    /// Mark block `off` (block-aligned) of `ino` on member `j` unreadable:
    /// zeros under a checksum entry that cannot match them, so a later read
    /// fails (EIO) instead of returning zeros as data.
    pub(crate) fn poison_block(&self, j: usize, ino: u64, off: u64) -> io::Result<()> {
        let member = self
            .member(j)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "member missing"))?;
        self.readahead.invalidate(ino);
        self.tails.forget(ino);
        self.zero_past_end.forget(ino);
        let shard = self.handles.get(j, member.as_ref(), ino, true)?;
        shard.data.write_at(off, &[0u8; BLOCK])?;
        shard.sums.write_at(
            off / BLOCK as u64 * checksum::ENTRY as u64,
            &checksum::POISON.to_le_bytes(),
        )
    }

    /// Stripes of `ino` that the members in service hold (the longest of
    /// their shards), read now: a write that began before a rebuild target
    /// took writes may have grown the file past the size the rebuild was
    /// given. Unreadable shards count as empty. Caller holds the file's
    /// write lock.
    pub(crate) fn stored_stripes(&self, ino: u64) -> u64 {
        let chunk = self.layout.chunk;
        self.targets()
            .into_iter()
            .filter(|(j, _)| self.health.state(*j).readable())
            .filter_map(|(j, m)| self.handles.get(j, m.as_ref(), ino, false).ok())
            .filter_map(|sh| sh.data.len().ok())
            .map(|len| len.div_ceil(chunk))
            .max()
            .unwrap_or(0)
    }

    /// The first stripe at or after `from` of which some readable member,
    /// or a member `also` names (a rebuild target: a returning member
    /// holds old bytes that must be overwritten, even with zeros), holds
    /// bytes of `ino` (in its shard or its checksums); `None` when
    /// from there on the shards hold only holes: stripes never written, or
    /// punched, which read as zeros on every member and have nothing to
    /// rebuild or verify. Every write puts its chunks and their redundancy
    /// on every writable member, so a stripe holding data anywhere holds
    /// some on a readable member unless more members are out than the
    /// level tolerates. A member that cannot tell (no `SEEK_DATA`, an
    /// error) counts as holding data at `from`. Caller holds the file's lock.
    pub(crate) fn next_stored_stripe(
        &self,
        ino: u64,
        from: u64,
        also: impl Fn(usize, MemberState) -> bool,
    ) -> Option<u64> {
        let chunk = self.layout.chunk;
        let sums_per_stripe = chunk / BLOCK as u64 * checksum::ENTRY as u64;
        let mut next: Option<u64> = None;
        for (j, m) in self.targets() {
            let state = self.health.state(j);
            if !state.readable() && !also(j, state) {
                continue;
            }
            let sh = match self.handles.get(j, m.as_ref(), ino, false) {
                Ok(sh) => sh,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(_) => return Some(from),
            };
            for (f, unit) in [(&sh.data, chunk), (&sh.sums, sums_per_stripe)] {
                match f.next_data(from.saturating_mul(unit)) {
                    Ok(Some(at)) => {
                        let s = (at / unit).max(from);
                        if s == from {
                            return Some(from);
                        }
                        next = Some(next.map_or(s, |n| n.min(s)));
                    }
                    Ok(None) => {}
                    Err(_) => return Some(from),
                }
            }
        }
        next
    }

    /// Remove the shard of `ino` (and its checksums) on member `j` alone: a
    /// rebuild target's shard of a file deleted while it was rebuilt.
    /// Caller holds the file's write lock.
    pub(crate) fn remove_shard_locked(&self, j: usize, ino: u64) -> io::Result<()> {
        let member = self
            .member(j)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "member missing"))?;
        self.handles.forget_ino(ino);
        member.remove(&shard::shard_path(ino))?;
        member.remove(&shard::sums_path(ino))
    }

    /// Create the (empty) shard of `ino` on member `j`.
    pub(crate) fn ensure_shard(&self, j: usize, ino: u64) -> io::Result<()> {
        let member = self
            .member(j)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "member missing"))?;
        self.handles.get(j, member.as_ref(), ino, true).map(|_| ())
    }

    /// A member comes back holding old data: past the end of the files
    /// changed since it left it may hold old bytes, so no file counts as
    /// holding only zeros there any more (a growing write then writes its
    /// zeros rather than assuming them).
    pub(crate) fn forget_zeros_past_end(&self) {
        self.zero_past_end.forget_all();
    }

    /// Cover member slots absent at assembly that the superblocks list in
    /// service ([`crate::stale`]).
    pub fn cover_absent(&self, slots: &[usize]) {
        self.intent.cover(slots);
    }

    /// The member of `slot` was failed on purpose: it may come back only by
    /// a whole rebuild (durably so).
    pub(crate) fn distrust(&self, slot: usize) -> Result<()> {
        self.take_stale(slot).map(drop)
    }

    /// Some member in service is short of space: writes of file data
    /// are refused ([`crate::member::reserve`]).
    pub fn short_of_space(&self) -> bool {
        self.targets().iter().any(|(_, m)| m.short_of_space())
    }

    /// Make the space kept back for metadata again on the members in
    /// service that lack it; whether none is short of space now.
    pub fn restore_reserves(&self) -> bool {
        let mut all = true;
        for (j, m) in self.targets() {
            match m.restore_reserve() {
                Ok(true) => {}
                Ok(false) => all = false,
                Err(e) => {
                    warn!(member = j, error = %e, "cannot keep space back for metadata");
                    all = false;
                }
            }
        }
        all
    }

    /// Whether the member that left `slot` may come back by a re-add (a
    /// resync of the files changed since it left).
    pub fn can_readd(&self, slot: usize) -> bool {
        self.intent.covers(slot, &self.health)
    }

    /// `slot` has a member again (already in place and taking writes):
    /// returns the files changed since the old one left, if known, and
    /// records durably that the slot is no longer covered.
    pub fn take_stale(&self, slot: usize) -> Result<Option<StaleSet>> {
        let set = self.intent.take_stale(slot, &self.health);
        self.persist_intent()?;
        Ok(set)
    }

    /// Members that take writes now.
    pub(crate) fn writable_members(&self) -> Vec<Arc<dyn Member>> {
        self.targets().into_iter().map(|(_, m)| m).collect()
    }

    /// Write the write-intent log as it stands now.
    pub(crate) fn persist_intent(&self) -> Result<()> {
        self.intent.persist(&self.targets(), &self.health)
    }

    /// Bring the redundancy of stripe `st` of `ino` back in line with its
    /// data, as the members hold it: after a crash (the resync of a dirty
    /// stripe) and after a write that ran out of space on some member. Per
    /// group every block is verified; a block that fails is rebuilt from the
    /// rest of its group if the result matches that member's own checksum
    /// (otherwise no consistent version of it is left and it stays
    /// unreadable: EIO, never guessed bytes); then parity or mirror copies
    /// are recomputed from the data, row by row (a row holding a lost block
    /// is left as it is, the others are not). A member that cannot take its
    /// recomputed redundancy no longer agrees with the rest and is failed.
    /// Caller holds the file's write lock.
    pub(crate) fn resync_stripe(&self, ino: u64, st: u64) -> Result<StripeResync> {
        let chunk = self.layout.chunk as usize;
        self.resync_stripe_rows(ino, st, |_| chunk)
    }

    /// [`DataStore::resync_stripe`] over the first `rows(g)` bytes of each
    /// chunk of every group `g` (given the group's first byte within the
    /// stripe's data); groups with no rows are left alone.
    fn resync_stripe_rows(
        &self,
        ino: u64,
        st: u64,
        rows: impl Fn(u64) -> usize,
    ) -> Result<StripeResync> {
        let chunk = self.layout.chunk;
        let mut done = StripeResync::default();
        let plan = self.layout.plan(ino, st)?;
        for g in &plan.groups {
            let hi = rows(g.first as u64 * chunk);
            if hi == 0 {
                continue;
            }
            let scan = self.scan_group_as(ino, st, g, 0, hi, true, true);
            done.repaired += scan.repaired;
            let data_unreadable = g.members[..g.data]
                .iter()
                .any(|&m| !self.health.state(m).readable());
            if data_unreadable && matches!(g.protect, Protect::Parity(_)) {
                // Dirty and degraded: the chunks of the missing members are
                // rebuilt from parity that an interrupted write may have
                // left stale. Trust them only if a parity row not used for
                // the rebuild confirms them; otherwise poison the parity, so
                // those chunks read as EIO instead of as guessed bytes.
                if !self.dirty_rebuild_confirmed(ino, st, g, &scan)? {
                    done.unrecoverable += self.poison_parity(ino, st, g, hi);
                }
                continue;
            }
            if !scan.lost.is_empty() {
                done.unrecoverable += scan.lost.len() as u64;
                warn!(
                    ino,
                    stripe = st,
                    blocks = scan.lost.len(),
                    "blocks without a consistent version"
                );
            }
            // A poisoned block the parity could not confirm: that parity
            // may be stale, and would rebuild the block as guessed bytes
            // once the region is clean. Poisoned too, the row reads as EIO.
            for &b in &scan.unconfirmed {
                done.unrecoverable += self.poison_parity_row(ino, st, g, b);
            }
            // Per row: rows holding a lost block are left as they are, the
            // redundancy of every other row is recomputed from its data.
            done.redundancy_fixed += self.fix_redundancy(ino, st, g, 0, &scan, true)?.len() as u64;
        }
        Ok(done)
    }

    /// Whether the chunks rebuilt by `scan` (of a dirty parity group, from
    /// its first byte) for data positions with nothing readable can be
    /// trusted: only when every block was recovered and a parity row not
    /// needed for the rebuild agrees with the data, rebuilt chunks
    /// included. The parity an interrupted write left stale rebuilds
    /// guessed bytes, and nothing else could tell. The resync poisons the
    /// parity of a group that fails this; a read-only array, which cannot,
    /// refuses to serve those chunks instead.
    fn dirty_rebuild_confirmed(
        &self,
        ino: u64,
        stripe: u64,
        g: &Group,
        scan: &GroupScan,
    ) -> Result<bool> {
        let suspects = scan.suspect.iter().filter(|&&x| x).count();
        Ok(scan.lost.is_empty()
            && g.tolerance() > suspects
            && self
                .fix_redundancy(ino, stripe, g, 0, scan, false)?
                .is_empty())
    }

    /// Whether stripe `stripe` of `ino` was left dirty by an unclean
    /// shutdown and never resynced (the array is read-only, so the resync
    /// did not run): its parity may be stale. Only reads that need a
    /// rebuild ask, and a lookup in the start-up record is cheap.
    fn unresynced(&self, ino: u64, stripe: u64) -> bool {
        let rec = &self.loaded_intent;
        self.read_only.load(Ordering::Relaxed)
            && (rec.overflow || rec.regions.contains(&(ino, stripe >> intent::REGION_SHIFT)))
    }

    /// Poison the first `rows` bytes of every writable parity chunk of a
    /// group; returns blocks poisoned.
    fn poison_parity(&self, ino: u64, stripe: u64, g: &Group, rows: usize) -> u64 {
        self.poison_parity_blocks(ino, stripe, g, 0..rows / BLOCK)
    }

    /// Poison block `b` of every writable parity chunk of a group; returns
    /// blocks poisoned.
    fn poison_parity_row(&self, ino: u64, stripe: u64, g: &Group, b: usize) -> u64 {
        self.poison_parity_blocks(ino, stripe, g, b..b + 1)
    }

    /// Poison blocks `blocks` of every writable parity chunk of a group;
    /// returns blocks poisoned.
    fn poison_parity_blocks(
        &self,
        ino: u64,
        stripe: u64,
        g: &Group,
        blocks: std::ops::Range<usize>,
    ) -> u64 {
        if !matches!(g.protect, Protect::Parity(_)) {
            return 0;
        }
        let mut n = 0;
        for &m in &g.members[g.data..] {
            if !self.health.state(m).writable() {
                continue;
            }
            for b in blocks.clone() {
                let off = stripe * self.layout.chunk + (b * BLOCK) as u64;
                match self.using_reserve(m, || self.poison_block(m, ino, off)) {
                    Ok(()) => n += 1,
                    Err(e) => {
                        // Left as it is, the stale parity would rebuild
                        // the missing chunks as guessed bytes: the member
                        // holding it is failed instead.
                        warn!(member = m, ino, error = %e, "cannot poison parity");
                        self.health.count_write_error(m);
                        self.fail_member(m, "cannot poison parity", &e);
                        break;
                    }
                }
            }
        }
        n
    }

    /// Compare the redundancy of a scanned group with what its data implies,
    /// row by row; returns the positions that differ in some row and, with
    /// `repair`, rewrites those rows on writable members. Data blocks are the
    /// authority here: they passed their checksums (or were rebuilt and
    /// matched them). A row holding a lost block is skipped: its data is not
    /// known, and skipping the whole group instead would leave the other
    /// rows' stale redundancy to rebuild guessed bytes later. With `repair`, a
    /// writable member that was not read (one being rebuilt) is given the
    /// redundancy the data implies whatever it holds: its chunk may be stale
    /// (after a crash, a write that reached the others but not it), and
    /// nothing else would tell.
    pub(crate) fn fix_redundancy(
        &self,
        ino: u64,
        stripe: u64,
        g: &Group,
        lo: usize,
        scan: &GroupScan,
        repair: bool,
    ) -> Result<Vec<usize>> {
        let w = g.width();
        let len = scan.bufs.first().map_or(0, Vec::len);
        let mut expect: Vec<Vec<u8>> = vec![vec![0u8; len]; w - g.data];
        match &g.protect {
            Protect::None => return Ok(Vec::new()),
            Protect::Mirror => {
                for e in &mut expect {
                    e.copy_from_slice(&scan.bufs[0]);
                }
            }
            Protect::Parity(codec) => {
                let data: Vec<&[u8]> = scan.bufs[..g.data].iter().map(Vec::as_slice).collect();
                let mut par: Vec<&mut [u8]> = expect.iter_mut().map(Vec::as_mut_slice).collect();
                codec.encode(&data, &mut par)?;
            }
        }
        // Rows (4 KiB columns) holding a lost block have no data to encode
        // from: left as they are. Every other row is checked on its own.
        let mut held = vec![false; len.div_ceil(BLOCK)];
        for &(_, b) in &scan.lost {
            if let Some(x) = held.get_mut(b) {
                *x = true;
            }
        }
        let mut differ = Vec::new();
        for (r, want) in expect.iter().enumerate() {
            let p = g.data + r;
            let j = g.members[p];
            let state = self.health.state(j);
            let not_read = repair && !state.readable();
            // Byte ranges to rewrite, adjacent rows merged.
            let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
            let mut differs = false;
            for (b, _) in held.iter().enumerate().filter(|(_, h)| !**h) {
                let rr = b * BLOCK..((b + 1) * BLOCK).min(len);
                let d = scan.bufs[p][rr.clone()] != want[rr.clone()];
                differs |= d;
                if !d && !not_read {
                    continue;
                }
                match runs.last_mut() {
                    Some(last) if last.end == rr.start => last.end = rr.end,
                    _ => runs.push(rr),
                }
            }
            if differs {
                differ.push(p);
            }
            if !repair || !state.writable() {
                continue;
            }
            for run in runs {
                let off = stripe * self.layout.chunk + (lo + run.start) as u64;
                if let Err(e) = self.write_blocks_reserved(j, ino, off, &want[run]) {
                    self.health.count_write_error(j);
                    self.fail_member(j, "redundancy rewrite failed", &e);
                    break;
                }
            }
        }
        Ok(differ)
    }
}

/// ENOSPC (or EDQUOT): the member is full, not failing.
pub(crate) fn is_no_space(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// Whether blocks of column `r` rebuilt at positions `missing` (some with
/// no witness of their own: poisoned) may be trusted, every other position
/// of the column having verified. A mirror copy is a whole version of the
/// block. Parity rebuilds from parity, which a crash may have left stale:
/// with a parity row to spare, the rebuilt column must re-encode to the
/// parity that was not needed; without one, the rebuilt bytes are trusted
/// only outside a `dirty` group (parity left consistent, as a degraded read
/// trusts it).
fn trust_unwitnessed(
    g: &Group,
    bufs: &[Vec<u8>],
    r: std::ops::Range<usize>,
    missing: &[usize],
    dirty: bool,
) -> bool {
    match &g.protect {
        Protect::None => false,
        Protect::Mirror => true,
        Protect::Parity(codec) => {
            if missing.len() >= codec.parity_chunks() {
                return !dirty;
            }
            let data: Vec<&[u8]> = bufs[..g.data].iter().map(|v| &v[r.clone()]).collect();
            let mut expect = vec![vec![0u8; r.len()]; g.width() - g.data];
            let mut par: Vec<&mut [u8]> = expect.iter_mut().map(Vec::as_mut_slice).collect();
            if codec.encode(&data, &mut par).is_err() {
                return false;
            }
            (g.data..g.width())
                .filter(|p| !missing.contains(p))
                .all(|p| bufs[p][r.clone()] == expect[p - g.data])
        }
    }
}

/// Compute the redundancy positions of one group from its data positions,
/// all held in the per-member batch buffers.
fn encode_group(g: &Group, segs: &[Seg], bufs: &mut [Vec<u8>]) -> Result<()> {
    match &g.protect {
        Protect::None => Ok(()),
        Protect::Mirror => {
            let src = &segs[0];
            let (lo, len) = (src.buf, src.len);
            for s in &segs[1..] {
                let (a, b) = two_mut(bufs, src.member, s.member);
                b[s.buf..s.buf + len].copy_from_slice(&a[lo..lo + len]);
            }
            Ok(())
        }
        Protect::Parity(codec) => {
            let mut slots: Vec<Option<&mut Vec<u8>>> = bufs.iter_mut().map(Some).collect();
            let mut data: Vec<&[u8]> = Vec::with_capacity(g.data);
            let mut parity: Vec<&mut [u8]> = Vec::with_capacity(g.width() - g.data);
            for (p, s) in segs.iter().enumerate() {
                let v = slots[s.member]
                    .take()
                    .ok_or_else(|| ArrayError::Invalid("member twice in a group".into()))?;
                let sl = &mut v[s.buf..s.buf + s.len];
                if p < g.data {
                    data.push(sl);
                } else {
                    parity.push(sl);
                }
            }
            codec.encode(&data, &mut parity)?;
            Ok(())
        }
    }
}

/// Two distinct elements of a slice, one shared and one mutable.
fn two_mut(v: &mut [Vec<u8>], a: usize, b: usize) -> (&Vec<u8>, &mut Vec<u8>) {
    debug_assert_ne!(a, b);
    if a < b {
        let (x, y) = v.split_at_mut(b);
        (&x[a], &mut y[0])
    } else {
        let (x, y) = v.split_at_mut(a);
        (&y[0], &mut x[b])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::member::DirMember;
    use raid_core::layout::{Level, Raid5Layout};

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 253) as u8).collect()
    }

    fn temp_dirs(n: usize) -> Vec<tempfile::TempDir> {
        (0..n).map(|_| tempfile::tempdir().unwrap()).collect()
    }

    type Members = Vec<Option<Arc<dyn Member>>>;

    /// Members over `dirs` (opened afresh), their health (all active) and a
    /// store of `level` with 64 KiB chunks over them.
    fn open_store(dirs: &[tempfile::TempDir], level: Level) -> (Members, Arc<Health>, DataStore) {
        let members: Members = dirs
            .iter()
            .map(|d| Some(Arc::new(DirMember::open(d.path()).unwrap()) as Arc<dyn Member>))
            .collect();
        let (health, store) = store_over(members.clone(), level);
        (members, health, store)
    }

    /// A store of `level` with 64 KiB chunks over `members`, all active.
    fn store_over(members: Members, level: Level) -> (Arc<Health>, DataStore) {
        let n = members.len();
        let health = Arc::new(Health::new(vec![MemberState::Active; n]));
        let geometry = Geometry::new(level, n, 64 * 1024).unwrap();
        let store = DataStore::new(geometry, members, health.clone()).unwrap();
        (health, store)
    }

    /// A long sequential write in 1 MiB calls (each crossing of a
    /// write-back step hands earlier stripes to the write-back thread while
    /// later ones are written) reads back whole, before and after the sync
    /// and from the members after the store is reopened.
    #[test]
    fn long_sequential_write_with_write_behind_reads_back() {
        let dirs = temp_dirs(4);
        let open = || open_store(&dirs, Level::Raid5(Raid5Layout::LeftSymmetric)).2;
        let size = 3 * writebehind::STEP as usize + 12345;
        let data = pattern(size);
        let store = open();
        for (k, piece) in data.chunks(1 << 20).enumerate() {
            let off = (k << 20) as u64;
            store.write(9, off, piece, off).unwrap();
        }
        let check = |store: &DataStore| {
            let mut out = vec![0u8; size];
            assert_eq!(store.read(9, 0, &mut out, size as u64).unwrap(), size);
            assert!(out == data, "bytes differ after a write-behind write");
        };
        check(&store);
        store.sync(9).unwrap();
        check(&store);
        store.close().unwrap();
        drop(store);
        check(&open());
    }

    /// A sequential writer whose calls end inside stripes completes each
    /// stripe from the kept tail ([`tailcache`]), not by reading its first
    /// part back: with every member read failing, RAID-5, RAID-6 and RAID-50
    /// files written in calls of 1 MiB (not a multiple of their stripes)
    /// still write and read back whole. A file cut back to the boundary
    /// before the kept stripe and grown again reads zeros there, not the
    /// kept bytes.
    #[test]
    fn sequential_writes_complete_stripes_from_the_kept_tail() {
        use crate::member::faulty::{Fault, FaultyMember, Op};
        for (level, n) in [
            (Level::Raid5(Raid5Layout::LeftSymmetric), 4),
            (Level::Raid6, 5),
            (Level::Raid50 { groups: 2 }, 6),
        ] {
            let dirs = temp_dirs(n);
            let faulty: Vec<FaultyMember> = dirs
                .iter()
                .map(|d| FaultyMember::new(Arc::new(DirMember::open(d.path()).unwrap())))
                .collect();
            let members: Members = faulty
                .iter()
                .map(|f| Some(Arc::new(f.clone()) as Arc<dyn Member>))
                .collect();
            let (health, store) = store_over(members, level);
            let size = 5 * (1 << 20) + 4096;
            let data = pattern(size);
            let mut pieces = data.chunks(1 << 20).enumerate();
            let (_, first) = pieces.next().unwrap();
            store.write(9, 0, first, 0).unwrap();
            for f in &faulty {
                f.inject(Fault::eio(Op::Read, ""));
            }
            for (k, piece) in pieces {
                let off = (k << 20) as u64;
                store.write(9, off, piece, off).unwrap();
            }
            assert!(
                health.counters().iter().all(|c| c.read_errors == 0),
                "{level:?}: a sequential write read from the members"
            );
            assert!(health.states().iter().all(|s| *s == MemberState::Active));
            for f in &faulty {
                f.clear_faults();
            }
            let read_all = |len: usize| {
                let mut out = vec![0u8; len];
                assert_eq!(store.read(9, 0, &mut out, len as u64).unwrap(), len);
                out
            };
            assert!(read_all(size) == data, "{level:?}: bytes differ");
            // A file cut back to a stripe boundary and grown again: the
            // stripe kept from the first write must not come back when the
            // grown part is written (it reads as zeros).
            let sdb = store.layout.stripe_data;
            let (cut, grown) = (sdb * 5, sdb * 5 + 50 * 1024);
            // This rewrite ends inside stripe 5, past its groups' first
            // chunks, so stripe 5 is kept.
            let end = (sdb * 6 - 54 * 1024) as usize;
            store.write(9, 0, &data[..end], size as u64).unwrap();
            store.truncate(9, size as u64, cut).unwrap();
            store.truncate(9, cut, grown).unwrap();
            store.write(9, grown, &[5; 4096], grown).unwrap();
            let mut want = data[..cut as usize].to_vec();
            want.resize(grown as usize, 0);
            want.extend_from_slice(&[5; 4096]);
            assert!(read_all(want.len()) == want, "{level:?}: after truncates");
            // Writes that continue each other again, then one inside the
            // kept stripe from its start: all land.
            let len = want.len();
            let more = pattern(3 << 20);
            for (k, piece) in more.chunks(1 << 20).enumerate() {
                let off = (len + (k << 20)) as u64;
                store.write(9, off, piece, off).unwrap();
            }
            want.extend_from_slice(&more);
            let at = want.len() as u64 / sdb * sdb;
            let len = want.len() as u64;
            store.write(9, at, &[7; 4096], len).unwrap();
            want[at as usize..at as usize + 4096].fill(7);
            assert!(read_all(want.len()) == want, "{level:?}: after rewrites");
        }
    }

    /// Regions marked ahead of a writer must not end up inside a file that
    /// grows without being written there (truncate up, a write past the
    /// end): the log is rewritten without them first.
    #[test]
    fn growing_a_file_with_a_hole_drops_its_marks_ahead() {
        let dirs = temp_dirs(4);
        let (members, _, store) = open_store(&dirs, Level::Raid5(Raid5Layout::LeftSymmetric));
        let ahead_on_disk = |ino: u64| {
            intent::load(&members)
                .regions
                .iter()
                .filter(|&&(i, r)| i == ino && r >= 1)
                .count()
        };
        let region_bytes = store.layout.stripe_data << intent::REGION_SHIFT;
        let data = pattern(100_000);
        // Truncate up.
        store.write(9, 0, &data, 0).unwrap();
        assert!(ahead_on_disk(9) > 0, "the first write marked nothing ahead");
        store
            .truncate(9, data.len() as u64, 10 * region_bytes)
            .unwrap();
        assert_eq!(ahead_on_disk(9), 0, "marks ahead left inside a grown file");
        // A write past the end.
        store.write(10, 0, &data, 0).unwrap();
        assert!(ahead_on_disk(10) > 0);
        let far = 3 * region_bytes;
        store.write(10, far, &data, data.len() as u64).unwrap();
        assert!(
            intent::load(&members)
                .regions
                .iter()
                .all(|&(i, r)| i != 10 || r == 0 || r >= far / region_bytes),
            "marks ahead left inside the hole"
        );
        let mut out = vec![1u8; data.len()];
        store
            .read(10, data.len() as u64, &mut out, far + data.len() as u64)
            .unwrap();
        assert!(
            out.iter().all(|&b| b == 0),
            "the hole does not read as zeros"
        );
        // Writes arriving out of order within the marked regions (as the
        // kernel's write-back requests may, served by several threads):
        // a hole that skips no whole region costs no log write, and the
        // file reads back whole.
        let block = 1 << 20;
        store.write(11, 0, &pattern(block), 0).unwrap();
        let seq = intent::load(&members).seq;
        let late = pattern(2 * block);
        store
            .write(11, 2 * block as u64, &late[block..], block as u64)
            .unwrap();
        store
            .write(11, block as u64, &late[..block], 3 * block as u64)
            .unwrap();
        assert_eq!(
            intent::load(&members).seq,
            seq,
            "a write just past the end rewrote the log"
        );
        let mut out = vec![0u8; 3 * block];
        store.read(11, 0, &mut out, 3 * block as u64).unwrap();
        assert_eq!(&out[..block], &pattern(block)[..]);
        assert_eq!(&out[block..], &late[..]);
    }

    /// Reads that start and end inside blocks, chunks and stripes return
    /// exactly the file's bytes, healthy and with a member failed (then the
    /// cut blocks come from the group scan).
    #[test]
    fn unaligned_reads_return_the_files_bytes_healthy_and_degraded() {
        for (level, n) in [
            (Level::Raid5(Raid5Layout::LeftSymmetric), 4),
            (Level::Raid6, 6),
        ] {
            let dirs = temp_dirs(n);
            let (_, health, store) = open_store(&dirs, level);
            let size = 700_001usize;
            let data = pattern(size);
            store.write(5, 0, &data, 0).unwrap();
            let ranges = [
                (0usize, 1usize),
                (4095, 2),
                (65_535, 3),
                (3 * 65_536 - 100, 200),
                (1000, 300_000),
                (123_457, 65_536),
                (size - 10, 10),
                (size - 200_000, 200_000),
            ];
            for failed in [false, true] {
                if failed {
                    health.mark_failed(1, "test");
                }
                for &(off, len) in &ranges {
                    let mut out = vec![0xeeu8; len];
                    let got = store.read(5, off as u64, &mut out, size as u64).unwrap();
                    assert_eq!(got, len);
                    assert!(
                        out == data[off..off + len],
                        "{level:?} failed={failed}: wrong bytes for {len} at {off}"
                    );
                }
            }
        }
    }

    /// A file that left inline storage in this process holds nothing past
    /// its end (leftover shards are emptied), so growing it inside a stripe
    /// writes only the chunks that get data, and parity. After a restart nothing is known: bytes that a
    /// crashed write left past the end are zeroed by the next write there,
    /// as before, so parity agrees with every member and a failed member's
    /// chunk is rebuilt right in both cases.
    #[test]
    fn untouched_chunks_past_the_end_are_zeroed_only_when_they_may_hold_stale_bytes() {
        let dirs = temp_dirs(4);
        let level = Level::Raid5(Raid5Layout::LeftSymmetric);
        let ino = 5;
        let kib16 = 16 << 10;
        let (members, _, store) = open_store(&dirs, level);
        let plan = store.layout.plan(ino, 0).unwrap();
        let g = plan.groups[0].clone();
        let shard_bytes = |j: usize| {
            let f = members[j]
                .as_ref()
                .unwrap()
                .open(&shard::shard_path(ino))
                .unwrap();
            let mut v = vec![0u8; f.len().unwrap() as usize];
            f.read_at(0, &mut v).unwrap();
            v
        };
        let read_all = |store: &DataStore, size: usize| {
            let mut out = vec![0u8; size];
            store.read(ino, 0, &mut out, size as u64).unwrap();
            out
        };

        // Leftovers of an interrupted move out of inline storage go.
        let junk = vec![0x5a; kib16];
        for &j in &g.members {
            store.write_blocks(j, ino, 0, &junk).unwrap();
        }
        store.create_shards(ino).unwrap();
        let a = pattern(kib16);
        store.write(ino, 0, &a, 0).unwrap();
        assert_eq!(shard_bytes(g.members[0]), a);
        assert_eq!(shard_bytes(g.members[g.data]), a, "parity of one chunk");
        for p in 1..g.data {
            assert!(shard_bytes(g.members[p]).is_empty(), "chunk {p} written");
        }
        store.sync(ino).unwrap();
        drop(store);
        {
            let (_, health, store) = open_store(&dirs, level);
            health.mark_failed(g.members[0], "test");
            assert_eq!(read_all(&store, kib16), a, "rebuilt from parity and holes");
        }

        // A crashed write left bytes (with their checksums) in chunk 1 past
        // the end; a restarted store does not know, and zeroes them.
        let (_, _, store) = open_store(&dirs, level);
        store
            .write_blocks(g.members[1], ino, kib16 as u64, &junk)
            .unwrap();
        drop(store);
        let (_, health, store) = open_store(&dirs, level);
        let b = pattern(2 * kib16);
        store
            .write(ino, kib16 as u64, &b[kib16..], kib16 as u64)
            .unwrap();
        let c1 = shard_bytes(g.members[1]);
        assert!(c1[kib16..2 * kib16].iter().all(|&x| x == 0), "junk left");
        health.mark_failed(g.members[0], "test");
        let mut want = a.clone();
        want.extend_from_slice(&b[kib16..]);
        assert_eq!(read_all(&store, 2 * kib16), want);
    }

    /// Zeros under the POISON entry at shard byte `off` of `ino` in `dir`,
    /// as a rebuild leaves a block it had nothing to rebuild from.
    fn poison_at(dir: &std::path::Path, ino: u64, off: usize) {
        use std::os::unix::fs::FileExt;
        let open = |p: String| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(dir.join(p))
                .unwrap()
        };
        open(shard::shard_path(ino))
            .write_all_at(&[0u8; BLOCK], off as u64)
            .unwrap();
        open(shard::sums_path(ino))
            .write_all_at(
                &checksum::POISON.to_le_bytes(),
                (off / BLOCK * checksum::ENTRY) as u64,
            )
            .unwrap();
    }

    /// New bytes, under their own checksum, at shard byte `off` of `ino` in
    /// `dir`: a write that landed there and not on the parity.
    fn land_at(dir: &std::path::Path, ino: u64, off: usize, bytes: &[u8]) {
        use std::os::unix::fs::FileExt;
        let open = |p: String| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(dir.join(p))
                .unwrap()
        };
        open(shard::shard_path(ino))
            .write_all_at(bytes, off as u64)
            .unwrap();
        open(shard::sums_path(ino))
            .write_all_at(
                &checksum::block_sum(bytes).to_le_bytes(),
                (off / BLOCK * checksum::ENTRY) as u64,
            )
            .unwrap();
    }

    /// `data` written to inode 5 and synced, the store closed; the first
    /// group of its stripe 0.
    fn written_and_closed(dirs: &[tempfile::TempDir], level: Level, data: &[u8]) -> Group {
        let (_, _, store) = open_store(dirs, level);
        store.write(5, 0, data, 0).unwrap();
        store.sync(5).unwrap();
        let g = store.layout.plan(5, 0).unwrap().groups[0].clone();
        store.close().unwrap();
        g
    }

    /// A poisoned block heals once the rest of its column verifies: a data
    /// block rebuilt from the other data and the parity, a parity block
    /// re-encoded from the data. A repairing scan rewrites both, and the
    /// file then reads back whole from the members alone.
    #[test]
    fn poisoned_blocks_heal_when_the_rest_of_their_column_verifies() {
        let dirs = temp_dirs(3);
        let level = Level::Raid5(Raid5Layout::LeftSymmetric);
        let chunk = 64 * 1024;
        let data = pattern(2 * chunk);
        let g = written_and_closed(&dirs, level, &data);
        poison_at(dirs[g.members[0]].path(), 5, 0);
        poison_at(dirs[g.members[2]].path(), 5, BLOCK);
        let (_, _, store) = open_store(&dirs, level);
        let scan = store.scan_group(5, 0, &g, 0, chunk, true);
        assert!(scan.lost.is_empty(), "lost {:?}", scan.lost);
        assert_eq!(scan.repaired, 2);
        let scan = store.scan_group(5, 0, &g, 0, chunk, false);
        assert_eq!((scan.mismatches, scan.lost.len()), (0, 0));
        let mut out = vec![0u8; 2 * chunk];
        store.read(5, 0, &mut out, data.len() as u64).unwrap();
        assert!(out == data);
    }

    /// In a dirty stripe the parity may be stale (a write that reached a
    /// data member and not the parity), and a poisoned block has no checksum
    /// to tell: the resync trusts its rebuild only when a parity row it did
    /// not need confirms it. RAID-6 has one to spare: the block heals when
    /// the parity agrees and stays unreadable when it does not. RAID-5 has
    /// none: the block stays unreadable and its row's parity is poisoned
    /// too, so no later scan rebuilds it from that parity. Never are bytes
    /// rebuilt from stale parity returned.
    #[test]
    fn a_resync_trusts_a_poisoned_blocks_rebuild_only_when_spare_parity_confirms_it() {
        let chunk = 64 * 1024;
        for (level, n) in [
            (Level::Raid5(Raid5Layout::LeftSymmetric), 3),
            (Level::Raid6, 4),
        ] {
            for stale in [false, true] {
                let dirs = temp_dirs(n);
                let data = pattern(2 * chunk);
                let g = written_and_closed(&dirs, level, &data);
                // Row 2: D0 poisoned; with `stale`, D1 rewritten there and
                // the parity left as it was.
                poison_at(dirs[g.members[0]].path(), 5, 2 * BLOCK);
                let d1_new = vec![0xa5u8; BLOCK];
                if stale {
                    land_at(dirs[g.members[1]].path(), 5, 2 * BLOCK, &d1_new);
                }
                let (_, _, store) = open_store(&dirs, level);
                let done = store.resync_stripe(5, 0).unwrap();
                let spare = n == 4;
                let heals = spare && !stale;
                assert_eq!(
                    done.unrecoverable > 0,
                    !heals,
                    "{level:?} stale {stale}: {done:?}"
                );
                // A later, clean, scan agrees.
                let scan = store.scan_group(5, 0, &g, 0, chunk, true);
                assert_eq!(scan.lost.is_empty(), heals, "{level:?} stale {stale}");
                let mut out = vec![0u8; BLOCK];
                let r = store.read(5, 2 * BLOCK as u64, &mut out, data.len() as u64);
                if heals {
                    r.unwrap();
                    assert!(out == data[2 * BLOCK..3 * BLOCK]);
                } else {
                    assert!(r.is_err(), "{level:?} stale {stale}: guessed bytes served");
                }
                // D1's row 2 reads as it stands on its member.
                let want: &[u8] = if stale {
                    &d1_new
                } else {
                    &data[chunk + 2 * BLOCK..chunk + 3 * BLOCK]
                };
                store
                    .read(5, (chunk + 2 * BLOCK) as u64, &mut out, data.len() as u64)
                    .unwrap();
                assert!(out == want, "{level:?} stale {stale}: D1 row 2");
            }
        }
    }
}
