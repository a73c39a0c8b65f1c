//! Write-intent log (md-bitmap style): which stripes may have been written
//! without their redundancy being brought up to date.
//!
//! Before a stripe is written, its *region* (`ino`, `stripe >> REGION_SHIFT`)
//! is recorded as dirty in `.raidfs/intent` on every writable member and
//! made durable (`fdatasync`) — only then does the data write start. Marks
//! are batched: a region already durable costs nothing, concurrent writers
//! share one write of the log (group commit), and each write also marks a
//! few regions ahead of the writer and the first region of the next inodes,
//! so sequential writers and streams of new files rarely wait for the log.
//! Marks ahead only ever cover places that hold no data yet ([`AheadLimits`]):
//! on a degraded array a resync cannot confirm a dirty stripe and poisons
//! its parity, so a mark ahead must never reach data nobody was writing.
//! A real mark does: it dirties the whole region (`1 << REGION_SHIFT`
//! stripes) around the stripes written, and after a crash of a degraded
//! array the missing member's chunks of all of them read EIO, existing
//! data included (docs/SEMANTICS.md, item 16).
//! The members' log files stay open between writes. Clearing is lazy:
//! once a file's data is synced its regions leave the in-memory set, and the
//! next write of the log (or a clean shutdown) drops them on disk; the mount
//! syncs files a few seconds after their last write and rewrites the log
//! ([`crate::data::DataStore::settle`]), as md clears bitmap bits once
//! writes settle. After an unclean shutdown [`crate::ops::resync`] checks
//! exactly the dirty regions.
//!
//! The same records carry the set of files changed while a member is out
//! ([`crate::stale`]): a write that changes a file not yet in that set
//! waits for the record that adds it, exactly as for a region.
//!
//! # Record (`.raidfs/intent`, little-endian)
//!
//! Two slots, A at byte 0 and B at byte [`SLOT_BYTES`]; each write goes to
//! the slot `seq mod 2`, so a torn write never destroys the previous record.
//! The valid slot with the highest `seq` wins; the union over all members is
//! what needs resyncing.
//!
//! ```text
//!  0  magic    8  "RFSINTNT"
//!  8  major    2  1   (a reader refuses another major)
//! 10  minor    2  0   (a reader ignores minors it does not know)
//! 12  flags    4  bit 0: overflow, every file is dirty
//! 16  seq      8  increases by one per write
//! 24  count    4  number of entries
//! 28  shift    4  log2 stripes per region
//! 32  entries  count × 16: ino u64, region u64
//!  …  crc      4  CRC32 of every byte before it
//! ```

use std::collections::BTreeSet;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use tracing::{debug, warn};

use crate::error::{ArrayError, Result};
use crate::health::{Health, MemberState};
use crate::member::{Member, MemberFile};
use crate::stale::{self, StaleSet};

/// Path of the log on a member.
pub const INTENT_PATH: &str = ".raidfs/intent";
/// log2 of the stripes per region.
pub const REGION_SHIFT: u32 = 6;
/// Bytes of one slot.
pub const SLOT_BYTES: usize = 64 * 1024;
const MAGIC: &[u8; 8] = b"RFSINTNT";
const MAJOR: u16 = 1;
const MINOR: u16 = 0;
const HEADER: usize = 32;
/// Entries that fit in a slot; more set the overflow flag.
pub const MAX_ENTRIES: usize = (SLOT_BYTES - HEADER - 4) / 16;
const FLAG_OVERFLOW: u32 = 1;

/// A decoded log: what may be inconsistent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IntentRecord {
    /// Every file must be checked (the set did not fit, or a log was unreadable).
    pub overflow: bool,
    /// Dirty (ino, region) pairs.
    pub regions: BTreeSet<(u64, u64)>,
    /// Highest sequence number seen.
    pub seq: u64,
    /// Files changed while members were out, as written with the newest
    /// record; `None` when unknown (no such record, or a torn one).
    pub stale: Option<StaleSet>,
}

/// What to say of a member [`IntentRecord::left_unrecorded`] names.
pub const LEFT_UNRECORDED: &str = "member left while the array ran (write-intent log), but \
    the superblocks did not record it before the array stopped: it lacks changes and is \
    failed; re-add it (raidfs replace with its own directory)";

impl IntentRecord {
    /// Covered slots whose member `in_service` says is in service: each
    /// left while the array ran (the log says so) but the superblocks did
    /// not record it before the array stopped, so it lacks changes. The
    /// caller fails them.
    pub fn left_unrecorded(&self, in_service: impl Fn(usize) -> bool) -> Vec<usize> {
        self.stale
            .iter()
            .flat_map(|s| s.covered.iter().copied())
            .filter(|&k| in_service(k))
            .collect()
    }

    /// Whether nothing needs resyncing.
    pub fn is_clean(&self) -> bool {
        !self.overflow && self.regions.is_empty()
    }

    /// Stripe ranges `[first, end)` of `ino` that are dirty.
    pub fn stripes_of(&self, ino: u64) -> Vec<(u64, u64)> {
        self.regions
            .range((ino, 0)..=(ino, u64::MAX))
            .map(|&(_, r)| {
                let first = r.saturating_mul(1 << REGION_SHIFT);
                (first, first.saturating_add(1 << REGION_SHIFT))
            })
            .collect()
    }
}

fn encode(seq: u64, overflow: bool, regions: &BTreeSet<(u64, u64)>) -> Vec<u8> {
    let overflow = overflow || regions.len() > MAX_ENTRIES;
    let count = if overflow { 0 } else { regions.len() };
    let mut b = Vec::with_capacity(HEADER + count * 16 + 4);
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&MAJOR.to_le_bytes());
    b.extend_from_slice(&MINOR.to_le_bytes());
    b.extend_from_slice(&(if overflow { FLAG_OVERFLOW } else { 0 }).to_le_bytes());
    b.extend_from_slice(&seq.to_le_bytes());
    b.extend_from_slice(&(count as u32).to_le_bytes());
    b.extend_from_slice(&REGION_SHIFT.to_le_bytes());
    if !overflow {
        for &(ino, r) in regions {
            b.extend_from_slice(&ino.to_le_bytes());
            b.extend_from_slice(&r.to_le_bytes());
        }
    }
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

/// Largest widening of a record's regions into ours (log2): up to 16 of
/// ours per region read.
const MAX_WIDEN: u32 = 4;

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

/// Decode one slot: the record and its length in bytes; `None` if it is
/// empty, torn or of an unknown major.
fn decode(b: &[u8]) -> Option<(IntentRecord, usize)> {
    if b.len() < HEADER + 4 || &b[..8] != MAGIC {
        return None;
    }
    if u16::from_le_bytes([b[8], b[9]]) != MAJOR {
        return None;
    }
    let flags = u32_at(b, 12);
    let seq = u64_at(b, 16);
    let count = u32_at(b, 24) as usize;
    let shift = u32_at(b, 28);
    let end = HEADER + count.checked_mul(16)?;
    if count > MAX_ENTRIES || end + 4 > b.len() || u32_at(b, end) != crc32fast::hash(&b[..end]) {
        return None;
    }
    let mut regions = BTreeSet::new();
    let mut overflow = flags & FLAG_OVERFLOW != 0;
    for i in 0..count {
        let o = HEADER + i * 16;
        let (ino, r) = (u64_at(b, o), u64_at(b, o + 8));
        // A record written with another region size: convert to ours, conservatively.
        if shift >= REGION_SHIFT {
            // Regions more than 16 of ours each, or numbers past ours:
            // every file is checked instead (a count from disk must not
            // make an assembly insert millions of regions).
            let k = shift - REGION_SHIFT;
            let first = (k <= MAX_WIDEN).then(|| r.checked_mul(1 << k)).flatten();
            let Some(first) = first.filter(|f| f.checked_add(1 << k).is_some()) else {
                overflow = true;
                regions.clear();
                break;
            };
            for j in 0..1u64 << k {
                regions.insert((ino, first + j));
            }
        } else {
            regions.insert((ino, r >> (REGION_SHIFT - shift)));
        }
    }
    Some((
        IntentRecord {
            overflow,
            regions,
            seq,
            stale: None,
        },
        end + 4,
    ))
}

/// The bytes of record `seq` for its slot: the log record with the stale
/// set right behind it when both fit in the slot (one write; readers that
/// predate the set stop at the record's CRC), else the log record alone
/// and the set to write at its spill slot.
fn record_bytes(
    seq: u64,
    overflow: bool,
    set: &BTreeSet<(u64, u64)>,
    stale: &StaleSet,
) -> (Vec<u8>, Option<(u64, Vec<u8>)>) {
    let mut rec = encode(seq, overflow, set);
    let stale_rec = stale.encode(seq);
    if rec.len() + stale_rec.len() <= SLOT_BYTES {
        rec.extend_from_slice(&stale_rec);
        (rec, None)
    } else {
        let at = stale::OFFSET + (seq % 2) * stale::SLOT_BYTES as u64;
        (rec, Some((at, stale_rec)))
    }
}

/// Write a log that holds nothing (record 1, no slot covered) on a member
/// of a new array, durably.
pub(crate) fn write_empty(m: &dyn Member) -> std::io::Result<()> {
    let f = m.create(INTENT_PATH)?;
    let seq = 1;
    let (rec, spill) = record_bytes(seq, false, &BTreeSet::new(), &StaleSet::default());
    debug_assert!(spill.is_none());
    f.write_at((seq % 2) * SLOT_BYTES as u64, &rec)?;
    f.sync_data()
}

/// The stale set written with record `seq` (of `len` bytes, in the slot
/// at `slot_at`) in a log file's `bytes`: behind the record, or in its
/// spill slot.
fn stale_of(bytes: &[u8], seq: u64, slot_at: usize, len: usize) -> Option<StaleSet> {
    let of_seq = |b: &[u8]| match StaleSet::decode(&b[..b.len().min(stale::SLOT_BYTES)]) {
        Some((s, set)) if s == seq => Some(set),
        _ => None,
    };
    let slot_end = (slot_at + SLOT_BYTES).min(bytes.len());
    let spill = stale::OFFSET as usize + (seq % 2) as usize * stale::SLOT_BYTES;
    bytes
        .get(slot_at + len..slot_end)
        .and_then(of_seq)
        .or_else(|| bytes.get(spill..).and_then(of_seq))
}

/// Read the log of every present member and return the union of their
/// newest valid slots. A member whose log exists but has no valid slot
/// makes the record `overflow` (check everything): it cannot be trusted.
///
/// The stale set is the one written with the newest record: every record
/// goes to every writable member, so the highest `seq` is the last word
/// (members that agree on it are merged; one that lacks it makes it
/// unknown).
pub fn load(members: &[Option<Arc<dyn Member>>]) -> IntentRecord {
    let mut out = IntentRecord::default();
    let mut stale: Option<(u64, Option<StaleSet>)> = None;
    for (i, m) in members.iter().enumerate() {
        let Some(m) = m else { continue };
        let bytes = match m.read_all(INTENT_PATH) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                warn!(member = i, error = %e, "cannot read write-intent log; checking every file");
                out.overflow = true;
                continue;
            }
        };
        if bytes.is_empty() {
            continue;
        }
        // Each valid slot: its record, where the slot starts, its length.
        let a = decode(&bytes[..bytes.len().min(SLOT_BYTES)]).map(|(r, n)| (r, 0, n));
        let b = if bytes.len() > SLOT_BYTES {
            decode(&bytes[SLOT_BYTES..bytes.len().min(2 * SLOT_BYTES)])
                .map(|(r, n)| (r, SLOT_BYTES, n))
        } else {
            None
        };
        let best = match (a, b) {
            (Some(a), Some(b)) => Some(if a.0.seq >= b.0.seq { a } else { b }),
            (a, b) => a.or(b),
        };
        match best {
            Some((r, at, len)) => {
                let set = stale_of(&bytes, r.seq, at, len);
                stale = match stale {
                    Some((seq, _)) if seq > r.seq => stale,
                    Some((seq, Some(mut have))) if seq == r.seq => match set {
                        Some(s) => {
                            have.merge(&s);
                            Some((seq, Some(have)))
                        }
                        None => Some((seq, None)),
                    },
                    Some((seq, None)) if seq == r.seq => Some((seq, None)),
                    _ => Some((r.seq, set)),
                };
                out.overflow |= r.overflow;
                out.seq = out.seq.max(r.seq);
                out.regions.extend(r.regions);
            }
            None => {
                warn!(
                    member = i,
                    "write-intent log unreadable; checking every file"
                );
                out.overflow = true;
            }
        }
    }
    out.stale = stale.and_then(|(_, s)| s);
    out
}

struct State {
    regions: BTreeSet<(u64, u64)>,
    /// Regions found dirty at start-up: only a resync may clear them.
    pinned: BTreeSet<(u64, u64)>,
    pinned_overflow: bool,
    overflow: bool,
    seq: u64,
    /// What the members held after the last write of the log (to skip
    /// needless writes): a superset of the regions being written, plus the
    /// speculative marks of [`ahead`]. While a write is in flight the
    /// members hold either this or [`State::in_flight`]; a region counts as
    /// durable only if both list it ([`State::region_durable`]).
    durable: BTreeSet<(u64, u64)>,
    durable_overflow: bool,
    /// A write of the log is in progress (its leader holds no lock while
    /// writing); others wait on [`IntentLog::done`] and are served by the
    /// next write, which carries every region added meanwhile.
    writing: bool,
    /// The record that write carries: once it lands it replaces what the
    /// members hold, so a region it lacks is not durable even if
    /// `durable` lists it (a mark ahead, or a region cleared from memory
    /// since the last write and marked again).
    in_flight: Option<Arc<Written>>,
    /// Files changed while covered members are out ([`crate::stale`]).
    stale: StaleSet,
    /// What the members hold of it.
    durable_stale: StaleSet,
    /// Slots whose member was in service when last looked at: if it leaves
    /// service, its slot becomes covered.
    watch: Vec<bool>,
    /// The health generation `watch` was brought up to date with.
    seen_generation: u64,
    /// The members held a readable stale set at start-up.
    stale_known: bool,
    /// Files whose shards are being changed outside a marked write (cut,
    /// emptied), with how many such changes are under way: should a member
    /// fail meanwhile, they join the stale set with the dirty files.
    changing: std::collections::BTreeMap<u64, u32>,
}

/// What one write of the log puts on the members.
#[derive(Debug, Clone)]
struct Written {
    regions: BTreeSet<(u64, u64)>,
    overflow: bool,
    stale: StaleSet,
}

impl State {
    /// Whether region `k` is listed by what the members hold and keep
    /// holding: by the last record written and, while a write is in
    /// flight, by that one too (it may land at any moment).
    fn region_durable(&self, k: &(u64, u64)) -> bool {
        let now = self.durable_overflow || self.durable.contains(k);
        now && self
            .in_flight
            .as_ref()
            .is_none_or(|w| w.overflow || w.regions.contains(k))
    }

    /// Bring coverage up to date with the members' health: a slot watched
    /// in service and now out becomes covered, and every file dirty now
    /// joins the stale set (its write may not have reached that member).
    /// A covered slot found in service again is no longer covered.
    fn track(&mut self, health: &Health) {
        // Called on every write: the states are copied only when they changed.
        if health.generation() == self.seen_generation {
            return;
        }
        let (generation, states) = health.snapshot();
        self.seen_generation = generation;
        self.watch.resize(states.len(), false);
        let mut newly = false;
        for (k, st) in states.iter().enumerate() {
            match st {
                MemberState::Active => {
                    self.stale.covered.remove(&k);
                    self.watch[k] = true;
                }
                MemberState::Failed | MemberState::Missing => {
                    if std::mem::take(&mut self.watch[k]) {
                        self.stale.covered.insert(k);
                        newly = true;
                    }
                }
                MemberState::Rebuilding { .. } | MemberState::Spare => self.watch[k] = false,
            }
        }
        if newly {
            self.seed_stale();
        }
        if !self.stale.is_tracking() {
            self.stale.clear_changes();
        }
    }

    /// Coverage begins: whatever may be half written joins the stale set.
    fn seed_stale(&mut self) {
        if self.overflow {
            self.stale.set_overflow();
        }
        let inos: BTreeSet<u64> = self
            .regions
            .iter()
            .map(|&(i, _)| i)
            .chain(self.changing.keys().copied())
            .collect();
        for ino in inos {
            self.stale.insert(ino);
        }
    }

    /// Record `ino` as changed if some slot is covered.
    fn note_change(&mut self, ino: u64) {
        if self.stale.is_tracking() {
            self.stale.insert(ino);
        }
    }

    /// Whether the members hold what a change of `ino` needs recorded.
    /// As for regions, a record in flight must list it too.
    fn stale_durable(&self, ino: u64) -> bool {
        !self.stale.is_tracking()
            || (self.durable_stale.contains(ino)
                && self
                    .in_flight
                    .as_ref()
                    .is_none_or(|w| w.stale.contains(ino)))
    }
}

/// A change of a file's shards outside a marked write is under way
/// ([`IntentLog::mark_changed`]); when it ends, a member that failed
/// meanwhile is noticed while the file still counts as changing.
pub(crate) struct Changing<'a> {
    log: &'a IntentLog,
    health: &'a Health,
    ino: u64,
}

impl Drop for Changing<'_> {
    fn drop(&mut self) {
        let mut g = self.log.lock();
        g.track(self.health);
        if let Some(n) = g.changing.get_mut(&self.ino) {
            *n -= 1;
            if *n == 0 {
                g.changing.remove(&self.ino);
            }
        }
    }
}

/// Where marks ahead may go: only places that hold no data yet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct AheadLimits {
    /// First region of the file wholly past its end before this write.
    pub file_end_region: u64,
    /// First inode number never allocated (numbers are never reused).
    pub unused_ino: u64,
}

/// Regions marked ahead of the next writes, so that a sequential writer and
/// a stream of new files cost one log write per several regions or files
/// instead of one each. A region marked but never written costs a resync
/// after a crash a check of stripes that hold nothing (past the file's end,
/// or of an inode that does not exist: both skipped). Marks never cover
/// existing data: a degraded resync cannot confirm such a stripe and would
/// make it unreadable although nobody was writing it.
fn ahead(ino: u64, last_region: u64, lim: AheadLimits) -> impl Iterator<Item = (u64, u64)> {
    // The next regions of this file past its end (an appending writer),
    // AHEAD_GROWTH times as many as the file already has (between the
    // bounds): a long sequential writer pays one log write each time its
    // length grows fivefold until the upper bound, then one per
    // AHEAD_REGIONS_MAX regions. Marks past the end cost a resync nothing
    // (stripes past the end are skipped), but each stays in the log until
    // the file is synced. The later log writes are the dear ones: an
    // `fdatasync` on a member waits for the data in flight before it.
    let n = lim
        .file_end_region
        .saturating_mul(AHEAD_GROWTH)
        .clamp(AHEAD_REGIONS, AHEAD_REGIONS_MAX);
    let this = (1..=n)
        .map(move |d| (ino, last_region.saturating_add(d)))
        .filter(move |&(_, r)| r >= lim.file_end_region);
    // The first region of the next inodes not yet allocated (new files are
    // numbered in order).
    let next = (1..=AHEAD_INODES)
        .map(move |d| (ino.saturating_add(d), 0))
        .filter(move |&(i, _)| i >= lim.unused_ino);
    this.chain(next)
}

/// Regions of the same file marked ahead of a write, at least and at most
/// ([`ahead`]).
const AHEAD_REGIONS: u64 = 4;
const AHEAD_REGIONS_MAX: u64 = 64;
/// Regions marked ahead per region the file already has ([`ahead`]).
const AHEAD_GROWTH: u64 = 4;
/// Following inodes whose first region is marked ahead of a write.
const AHEAD_INODES: u64 = 32;

/// The in-memory side of the log.
pub struct IntentLog {
    state: Mutex<State>,
    done: Condvar,
    /// Open log file per member slot, with the member it belongs to (a
    /// replaced member gets a new handle).
    files: Mutex<Vec<Option<OpenLog>>>,
}

impl std::fmt::Debug for IntentLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntentLog")
            .field("dirty", &self.lock().regions.len())
            .finish()
    }
}

/// A member and its open log file.
type OpenLog = (Arc<dyn Member>, Arc<dyn MemberFile>);

/// Members to write the log to: (index, member).
pub(crate) type Targets = Vec<(usize, Arc<dyn Member>)>;

impl IntentLog {
    /// A log continuing `loaded` (what the members held at start-up, kept
    /// dirty until a resync clears it), watching the members in service
    /// per `health`.
    pub fn new(loaded: &IntentRecord, health: &Health) -> Self {
        let (generation, states) = health.snapshot();
        let stale = loaded.stale.clone().unwrap_or_default();
        let mut state = State {
            regions: loaded.regions.clone(),
            pinned: loaded.regions.clone(),
            pinned_overflow: loaded.overflow,
            overflow: loaded.overflow,
            seq: loaded.seq,
            durable: loaded.regions.clone(),
            durable_overflow: loaded.overflow,
            writing: false,
            in_flight: None,
            durable_stale: stale.clone(),
            stale,
            watch: states.iter().map(|s| *s == MemberState::Active).collect(),
            seen_generation: generation,
            stale_known: loaded.stale.is_some(),
            changing: Default::default(),
        };
        // A covered slot whose member is being rebuilt has a new member
        // (older builds did not uncover it first). One whose member is in
        // service stays covered: that member left while the array ran and
        // the crash came before the superblocks said so
        // ([`IntentLog::left_unrecorded`]).
        state.stale.covered.retain(|&k| {
            matches!(
                states.get(k),
                Some(MemberState::Failed | MemberState::Missing | MemberState::Active)
            )
        });
        if state.stale.is_tracking() {
            state.seed_stale();
        } else {
            state.stale.clear_changes();
        }
        IntentLog {
            state: Mutex::new(state),
            done: Condvar::new(),
            files: Mutex::new(Vec::new()),
        }
    }

    /// Cover `slots`, members absent at assembly that the superblocks
    /// still list in service: they left in sync, so the files changed from
    /// now on (and those dirty at start-up) are all they lack. Only if the
    /// set written with the last record is known: one of them may have
    /// left during the last run before the superblocks said so, and then
    /// that set holds what changed since.
    pub(crate) fn cover(&self, slots: &[usize]) {
        let mut g = self.lock();
        if slots.is_empty() || !g.stale_known {
            return;
        }
        g.stale.covered.extend(slots.iter().copied());
        g.seed_stale();
    }

    /// Whether a member coming back into `slot` may be re-added: the slot
    /// is covered and the set of changed files is known.
    pub(crate) fn covers(&self, slot: usize, health: &Health) -> bool {
        let mut g = self.lock();
        g.track(health);
        g.stale.covered.contains(&slot) && !g.stale.overflow
    }

    /// `slot` has a member again (replaced, re-added or taken by a spare;
    /// already in its slot, taking writes), or its member was failed on
    /// purpose and may only come back rebuilt whole: it is covered no longer.
    /// Returns the files changed since it left, if the slot was covered
    /// and they are known. The set is emptied once no slot is covered.
    /// Made durable by the caller ([`IntentLog::persist`]) before the slot
    /// is recorded with a new member, so no later crash can present the
    /// set as covering a member that did not leave in sync.
    pub(crate) fn take_stale(&self, slot: usize, health: &Health) -> Option<StaleSet> {
        let mut g = self.lock();
        g.track(health);
        let was = g.stale.covered.remove(&slot);
        if slot < g.watch.len() {
            g.watch[slot] = false;
        }
        let out = (was && !g.stale.overflow).then(|| g.stale.clone());
        if !g.stale.is_tracking() {
            g.stale.clear_changes();
        }
        out
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Number of dirty regions held in memory.
    pub fn dirty_regions(&self) -> usize {
        self.lock().regions.len()
    }

    /// Whether `ino` may have stripes written but not synced (or the set
    /// overflowed and every file counts).
    pub fn is_dirty(&self, ino: u64) -> bool {
        let g = self.lock();
        g.overflow || g.regions.range((ino, 0)..=(ino, u64::MAX)).next().is_some()
    }

    /// What is dirty now.
    pub fn snapshot(&self) -> IntentRecord {
        let g = self.lock();
        IntentRecord {
            overflow: g.overflow,
            regions: g.regions.clone(),
            seq: g.seq,
            stale: Some(g.stale.clone()),
        }
    }

    /// Durably record stripes `first..=last` of `ino` as dirty before they
    /// are written. Returns once every writable member holds the mark.
    /// Regions the members already hold cost nothing; concurrent callers
    /// share one write of the log (group commit).
    pub(crate) fn mark(
        &self,
        ino: u64,
        first: u64,
        last: u64,
        lim: AheadLimits,
        targets: &Targets,
        health: &Health,
    ) -> Result<()> {
        let (r0, r1) = (first >> REGION_SHIFT, last >> REGION_SHIFT);
        let mut g = self.lock();
        for r in r0..=r1 {
            g.regions.insert((ino, r));
        }
        g.track(health);
        g.note_change(ino);
        loop {
            // A write in flight without one of them would drop it from the
            // members: wait for it and write again.
            let covered = (r0..=r1).all(|r| g.region_durable(&(ino, r)));
            if covered && g.stale_durable(ino) {
                return Ok(());
            }
            if g.writing {
                g = self.done.wait(g).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            let extra: Vec<(u64, u64)> = ahead(ino, r1, lim).collect();
            g = self.write(g, &extra, targets, health)?;
        }
    }

    /// Durably record `ino` as changed, if a member is out, before its
    /// shards change otherwise than by a marked write (cut, emptied); hold
    /// the returned guard while they change. A member that fails meanwhile
    /// is seen when the guard goes, and the file joins the stale set then.
    pub(crate) fn mark_changed<'a>(
        &'a self,
        ino: u64,
        targets: &Targets,
        health: &'a Health,
    ) -> Result<Changing<'a>> {
        let mut g = self.lock();
        *g.changing.entry(ino).or_default() += 1;
        let guard = Changing {
            log: self,
            health,
            ino,
        };
        g.track(health);
        g.note_change(ino);
        loop {
            if g.stale_durable(ino) {
                return Ok(guard);
            }
            if g.writing {
                g = self.done.wait(g).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            g = self.write(g, &[], targets, health)?;
        }
    }

    /// Forget the dirty regions of `ino` (its data is synced). Lazy: the
    /// members still list them until the next write of the log. While a
    /// member is out (it may have failed in the middle of this very
    /// write), the file joins the stale set instead of being forgotten.
    pub(crate) fn clear_ino(&self, ino: u64, health: &Health) {
        let mut g = self.lock();
        g.track(health);
        let keys: Vec<_> = g
            .regions
            .range((ino, 0)..=(ino, u64::MAX))
            .copied()
            .collect();
        // Without a region, nothing was written since the last clear: a
        // sync of a file only read, or written by a rebuild onto another
        // member, changes nothing a member out has missed (noting it would
        // make that member's re-add rebuild the file from sources that may
        // not be there).
        if !keys.is_empty() {
            g.note_change(ino);
        }
        for k in keys {
            if !g.pinned.contains(&k) {
                g.regions.remove(&k);
            }
        }
    }

    /// Write the log now if the members' copy of it still lists a region
    /// of `ino` that the dirty set no longer holds ([`IntentLog::clear_ino`]
    /// is lazy); nothing otherwise. For `fsync`: after a crash, resync takes
    /// every region the members list as possibly half written, and on a
    /// degraded array it cannot confirm them, so the missing member's chunks
    /// there read as EIO, which synced data must never do.
    pub(crate) fn persist_cleared(
        &self,
        ino: u64,
        targets: &Targets,
        health: &Health,
    ) -> Result<()> {
        let mut g = self.lock();
        while g.writing {
            g = self.done.wait(g).unwrap_or_else(|e| e.into_inner());
        }
        g.track(health);
        let listed = (g.durable_overflow && !g.overflow)
            || g.durable
                .range((ino, 0)..=(ino, u64::MAX))
                .any(|k| !g.regions.contains(k));
        if !listed {
            return Ok(());
        }
        self.write(g, &[], targets, health).map(drop)
    }

    /// Whether the members hold a mark ahead for `ino` in `regions` (a
    /// region marked speculatively and not written since).
    pub(crate) fn holds_ahead(&self, ino: u64, regions: std::ops::Range<u64>) -> bool {
        if regions.is_empty() {
            return false;
        }
        let g = self.lock();
        // A write in flight may be adding marks ahead: they count too.
        let in_flight = g.in_flight.as_ref().map(|w| &w.regions);
        g.durable
            .range((ino, regions.start)..(ino, regions.end))
            .chain(
                in_flight
                    .into_iter()
                    .flat_map(|s| s.range((ino, regions.start)..(ino, regions.end))),
            )
            .any(|k| !g.regions.contains(k))
    }

    /// A region left from before start-up has been resynced.
    /// While a member is out, the file joins the stale set: the resync may
    /// have rewritten its redundancy on the others.
    pub(crate) fn resolved(&self, ino: u64, region: u64, health: &Health) {
        let mut g = self.lock();
        g.track(health);
        g.note_change(ino);
        g.pinned.remove(&(ino, region));
        g.regions.remove(&(ino, region));
    }

    /// Every start-up region has been resynced (also ends a start-up
    /// overflow); as for [`IntentLog::resolved`].
    pub(crate) fn resolved_all(&self, health: &Health) {
        let mut g = self.lock();
        g.track(health);
        if g.pinned_overflow && g.stale.is_tracking() {
            g.stale.set_overflow();
        }
        let pinned = std::mem::take(&mut g.pinned);
        for k in pinned {
            g.note_change(k.0);
            g.regions.remove(&k);
        }
        if g.pinned_overflow {
            g.pinned_overflow = false;
            g.overflow = false;
        }
    }

    /// Write the current set to the members now (e.g. clean shutdown),
    /// without marks ahead.
    pub(crate) fn persist(&self, targets: &Targets, health: &Health) -> Result<()> {
        let mut g = self.lock();
        while g.writing {
            g = self.done.wait(g).unwrap_or_else(|e| e.into_inner());
        }
        g.track(health);
        if g.regions == g.durable && g.overflow == g.durable_overflow && g.stale == g.durable_stale
        {
            return Ok(());
        }
        self.write(g, &[], targets, health).map(drop)
    }

    /// Write the dirty set plus `extra` as the next record, on every target
    /// in parallel, with the state lock released meanwhile. The caller saw
    /// `writing` false; returns the lock again.
    fn write<'a>(
        &'a self,
        mut g: MutexGuard<'a, State>,
        extra: &[(u64, u64)],
        targets: &Targets,
        health: &Health,
    ) -> Result<MutexGuard<'a, State>> {
        g.writing = true;
        g.seq += 1;
        let seq = g.seq;
        let mut set = g.regions.clone();
        if set.len() + extra.len() <= MAX_ENTRIES {
            set.extend(extra.iter().copied());
        }
        let overflow = g.overflow || set.len() > MAX_ENTRIES;
        if overflow && g.stale.is_tracking() {
            // Files may change that the log no longer names.
            g.stale.set_overflow();
        }
        if g.stale.is_tracking() {
            // Files marked ahead will be written without another record.
            let inos: BTreeSet<u64> = set.iter().map(|&(ino, _)| ino).collect();
            for ino in inos {
                g.stale.insert(ino);
            }
        }
        let rec = Arc::new(Written {
            regions: set,
            overflow,
            stale: g.stale.clone(),
        });
        g.in_flight = Some(rec.clone());
        drop(g);
        let res = self.write_record(seq, &rec, targets, health);
        let mut g = self.lock();
        g.writing = false;
        g.in_flight = None;
        self.done.notify_all();
        let rec = Arc::try_unwrap(rec).unwrap_or_else(|rec| (*rec).clone());
        if let Err(e) = res {
            // Some members may hold the new record, others the old one:
            // only what both list is surely held.
            g.durable
                .retain(|k| rec.overflow || rec.regions.contains(k));
            g.durable_overflow &= rec.overflow;
            g.durable_stale = StaleSet::default();
            return Err(e);
        }
        debug!(
            seq,
            regions = rec.regions.len(),
            stale_ranges = rec.stale.range_count(),
            "write-intent log written"
        );
        g.durable = rec.regions;
        g.durable_overflow = rec.overflow;
        g.durable_stale = rec.stale;
        Ok(g)
    }

    fn write_record(
        &self,
        seq: u64,
        w: &Written,
        targets: &Targets,
        health: &Health,
    ) -> Result<()> {
        let (rec, spill) = record_bytes(seq, w.overflow, &w.regions, &w.stale);
        let slot = (seq % 2) * SLOT_BYTES as u64;
        let results: Vec<std::io::Result<()>> = crate::data::pool::map(targets.iter(), |(i, m)| {
            let f = self.file(*i, m)?;
            f.write_at(slot, &rec)?;
            if let Some((at, bytes)) = &spill {
                f.write_at(*at, bytes)?;
            }
            f.sync_data()
        });
        let mut written = 0;
        for ((i, _), r) in targets.iter().zip(results) {
            match r {
                Ok(()) => written += 1,
                Err(e) if crate::data::is_no_space(&e) => {
                    return Err(ArrayError::NoSpace);
                }
                Err(e) => {
                    self.forget(*i);
                    health.count_write_error(*i);
                    health.mark_failed(*i, &format!("write-intent log write failed: {e}"));
                }
            }
        }
        if written == 0 {
            return Err(ArrayError::ArrayFailed(
                "write-intent log could not be written to any member".into(),
            ));
        }
        Ok(())
    }

    /// The open log file of member slot `i` (opened, or created, once).
    fn file(&self, i: usize, m: &Arc<dyn Member>) -> std::io::Result<Arc<dyn MemberFile>> {
        {
            let files = self.files.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(Some((held, f))) = files.get(i)
                && Arc::ptr_eq(held, m)
            {
                return Ok(f.clone());
            }
        }
        let f = m.create(INTENT_PATH)?;
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        if files.len() <= i {
            files.resize_with(i + 1, || None);
        }
        files[i] = Some((m.clone(), f.clone()));
        Ok(f)
    }

    fn forget(&self, i: usize) {
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = files.get_mut(i) {
            *slot = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `encode`'s record with another region size written in.
    fn with_shift(seq: u64, regions: &[(u64, u64)], shift: u32) -> Vec<u8> {
        let mut b = encode(seq, false, &regions.iter().copied().collect());
        let end = b.len() - 4;
        b[28..32].copy_from_slice(&shift.to_le_bytes());
        let crc = crc32fast::hash(&b[..end]);
        b[end..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    #[test]
    fn records_of_other_region_sizes_widen_or_check_everything() {
        // Twice our regions: each read region is two of ours.
        let (r, _) = decode(&with_shift(3, &[(7, 5)], REGION_SHIFT + 1)).unwrap();
        assert!(!r.overflow);
        assert_eq!(r.regions, [(7, 10), (7, 11)].into_iter().collect());
        // Smaller regions: the one of ours holding it.
        let (r, _) = decode(&with_shift(3, &[(7, 5)], REGION_SHIFT - 1)).unwrap();
        assert_eq!(r.regions, [(7, 2)].into_iter().collect());
        // Regions of a gigantic size, or numbers that overflow ours: no
        // millions of inserts and no panic, every file checked instead.
        for (shift, region) in [
            (REGION_SHIFT + 30, 1),
            (REGION_SHIFT + 70, 1),
            (REGION_SHIFT + 4, u64::MAX),
        ] {
            let (r, _) = decode(&with_shift(3, &[(7, region)], shift)).unwrap();
            assert!(r.overflow && r.regions.is_empty(), "shift {shift}");
        }
        // A region number at the top of the range maps to a stripe range
        // without overflow.
        let top = IntentRecord {
            regions: [(1, u64::MAX)].into_iter().collect(),
            ..Default::default()
        };
        assert_eq!(top.stripes_of(1), vec![(u64::MAX, u64::MAX)]);
    }

    /// Limits for a new file `ino`, just created and empty.
    fn fresh(ino: u64) -> AheadLimits {
        AheadLimits {
            file_end_region: 0,
            unused_ino: ino + 1,
        }
    }

    /// `n` directory members, all active, and an empty log over them.
    struct Rig {
        _dirs: Vec<tempfile::TempDir>,
        targets: Targets,
        members: Vec<Option<Arc<dyn Member>>>,
        health: Health,
        log: IntentLog,
    }

    fn rig(n: usize) -> Rig {
        use crate::health::MemberState;
        use crate::member::DirMember;
        let dirs: Vec<tempfile::TempDir> = (0..n).map(|_| tempfile::tempdir().unwrap()).collect();
        let targets: Targets = dirs
            .iter()
            .enumerate()
            .map(|(i, d)| {
                (
                    i,
                    Arc::new(DirMember::open(d.path()).unwrap()) as Arc<dyn Member>,
                )
            })
            .collect();
        let members = targets.iter().map(|(_, m)| Some(m.clone())).collect();
        let health = Health::new(vec![MemberState::Active; n]);
        let log = IntentLog::new(&IntentRecord::default(), &health);
        Rig {
            _dirs: dirs,
            targets,
            members,
            health,
            log,
        }
    }

    #[test]
    fn marks_ahead_never_cover_existing_data() {
        let lim = AheadLimits {
            file_end_region: 3,
            unused_ino: 20,
        };
        let got: BTreeSet<(u64, u64)> = ahead(10, 0, lim).collect();
        // Regions 1 and 2 of the file hold data: not marked; 3 and 4 are past its end.
        assert!(!got.contains(&(10, 1)) && !got.contains(&(10, 2)));
        assert!(got.contains(&(10, 3)) && got.contains(&(10, 4)));
        // Inodes 11..19 exist: not marked; from 20 on they are free.
        assert!((11..20).all(|i| !got.contains(&(i, 0))));
        assert!((20..=10 + AHEAD_INODES).all(|i| got.contains(&(i, 0))));
        // A long file being appended to gets more regions ahead, up to
        // the bound.
        let long = |end| AheadLimits {
            file_end_region: end,
            unused_ino: 20,
        };
        let of_file = |end| {
            let marked: Vec<u64> = ahead(10, end, long(end))
                .filter(|&(i, _)| i == 10)
                .map(|(_, r)| r)
                .collect();
            assert!(marked.iter().all(|&r| r > end), "marked inside the file");
            marked.len() as u64
        };
        assert_eq!(of_file(0), AHEAD_REGIONS);
        assert_eq!(of_file(2), 8);
        assert_eq!(of_file(10), 40);
        assert_eq!(of_file(5000), AHEAD_REGIONS_MAX);
        // An old file rewritten in place among newer files: nothing ahead.
        let old = AheadLimits {
            file_end_region: u64::MAX,
            unused_ino: 1000,
        };
        assert_eq!(ahead(10, 0, old).count(), 0);
    }

    #[test]
    fn encode_decode_round_trip_and_torn_slot_is_refused() {
        let mut set = BTreeSet::new();
        set.insert((5, 0));
        set.insert((5, 3));
        set.insert((9, 1));
        let b = encode(7, false, &set);
        let (r, len) = decode(&b).unwrap();
        assert_eq!(len, b.len());
        assert_eq!(r.regions, set);
        assert_eq!(r.seq, 7);
        assert_eq!(decode(&b[..b.len() - 3]), None);
        let mut bad = b.clone();
        bad[40] ^= 1;
        assert_eq!(decode(&bad), None);
    }

    #[test]
    fn a_mark_is_on_every_member_before_mark_returns_and_marks_ahead_spare_writes() {
        let Rig {
            _dirs,
            targets,
            members,
            health,
            log,
        } = rig(3);

        log.mark(10, 0, 3, fresh(10), &targets, &health).unwrap();
        for m in &members {
            let one = load(std::slice::from_ref(m));
            assert!(one.regions.contains(&(10, 0)), "member lacks the mark");
        }
        let seq = load(&members).seq;
        // The next file and the next region of the same file were marked ahead.
        log.mark(11, 0, 0, fresh(11), &targets, &health).unwrap();
        log.mark(
            10,
            1 << REGION_SHIFT,
            2 << REGION_SHIFT,
            fresh(11),
            &targets,
            &health,
        )
        .unwrap();
        assert_eq!(
            load(&members).seq,
            seq,
            "marks ahead should spare a log write"
        );
        assert!(log.snapshot().regions.contains(&(11, 0)));
        // A far inode needs a write of its own.
        log.mark(500, 0, 0, fresh(500), &targets, &health).unwrap();
        let rec = load(&members);
        assert_eq!(rec.seq, seq + 1);
        assert!(rec.regions.contains(&(500, 0)) && rec.regions.contains(&(11, 0)));
        // Clean: the synced set is persisted without marks ahead.
        for ino in [10, 11, 500] {
            log.clear_ino(ino, &health);
        }
        log.persist(&targets, &health).unwrap();
        assert!(load(&members).is_clean());
    }

    #[test]
    fn concurrent_marks_all_reach_the_log() {
        let Rig {
            _dirs,
            targets,
            members,
            health,
            log,
        } = rig(2);
        // Inodes far apart, so marks ahead do not cover each other.
        std::thread::scope(|s| {
            for t in 0..8u64 {
                let (log, targets, health) = (&log, &targets, &health);
                s.spawn(move || {
                    for k in 0..10u64 {
                        let ino = 1000 * (t * 10 + k + 1);
                        log.mark(ino, 0, 0, AheadLimits::default(), targets, health)
                            .unwrap();
                    }
                });
            }
        });
        let rec = load(&members);
        for i in 1..=80u64 {
            assert!(rec.regions.contains(&(1000 * i, 0)));
        }
    }

    /// Mark region 0 of `ino` through `targets` (a log write if needed).
    fn mark0(log: &IntentLog, ino: u64, targets: &Targets, health: &Health) {
        log.mark(ino, 0, 0, AheadLimits::default(), targets, health)
            .unwrap();
    }

    /// The members of `rig` still in service, as write targets.
    fn in_service(targets: &Targets, health: &Health) -> Targets {
        targets
            .iter()
            .filter(|(i, _)| health.state(*i).writable())
            .cloned()
            .collect()
    }

    #[test]
    fn files_changed_while_a_member_is_out_are_durable_before_the_write() {
        let r = rig(3);
        let (targets, members, health, log) = (&r.targets, &r.members, &r.health, &r.log);
        // Written and synced while all are in service: nothing to track.
        mark0(log, 5, targets, health);
        log.clear_ino(5, health);
        // A write in flight when member 2 fails: its file was dirty then.
        mark0(log, 9000, targets, health);
        health.mark_failed(2, "test");
        let live = in_service(targets, health);
        log.clear_ino(9000, health);
        // A write while it is out: on the survivors before mark returns.
        mark0(log, 700, &live, health);
        let rec = load(&members[..2]);
        let stale = rec.stale.expect("a stale set on the survivors");
        assert_eq!(stale.covered, BTreeSet::from([2]));
        assert!(stale.contains(700) && stale.contains(9000));
        assert!(
            !stale.contains(5),
            "a file synced before the failure counts"
        );
        // A cut or an emptied shard is recorded the same way.
        log.mark_changed(33, &live, health).unwrap();
        assert!(load(&members[..2]).stale.unwrap().contains(33));
        // The member comes back: the set is handed over, the slot is no
        // longer covered, and nothing is tracked once none is out.
        assert!(log.covers(2, health));
        health.set_state(2, MemberState::Rebuilding { done_bytes: 0 });
        let got = log.take_stale(2, health).unwrap();
        assert!(got.contains(700) && got.contains(9000) && got.contains(33));
        log.persist(targets, health).unwrap();
        let rec = load(members);
        assert!(!rec.stale.unwrap().is_tracking());
        assert!(!log.covers(2, health));
    }

    #[test]
    fn only_a_member_that_left_in_sync_is_covered() {
        let r = rig(3);
        let (targets, members, health, log) = (&r.targets, &r.members, &r.health, &r.log);
        health.mark_failed(1, "test");
        mark0(log, 40, &targets[..1].to_vec(), health);
        // Reopened with member 1 still out: the survivors' record covers it.
        let health2 = Health::new(vec![
            MemberState::Active,
            MemberState::Failed,
            MemberState::Active,
        ]);
        let again = IntentLog::new(&load(&members[..1]), &health2);
        assert!(again.covers(1, &health2));
        // A member out at start-up that no record covers is not covered,
        // nor does it become covered later.
        let unknown = IntentLog::new(&IntentRecord::default(), &health2);
        assert!(!unknown.covers(1, &health2));
        mark0(&unknown, 41, &targets[..1].to_vec(), &health2);
        assert!(!unknown.covers(1, &health2));
        // A rebuilding member that fails was never in sync: not covered.
        let health3 = Health::new(vec![
            MemberState::Active,
            MemberState::Rebuilding { done_bytes: 0 },
            MemberState::Active,
        ]);
        let log3 = IntentLog::new(&IntentRecord::default(), &health3);
        health3.mark_failed(1, "test");
        mark0(&log3, 42, &targets[..1].to_vec(), &health3);
        assert!(!log3.covers(1, &health3));
        // A record torn on the member with the newest seq: unknown.
        let mut bytes = members[0].as_ref().unwrap().read_all(INTENT_PATH).unwrap();
        let seq = load(&members[..1]).seq;
        // The set rides behind the log record in its slot.
        let slot_at = (seq % 2) as usize * SLOT_BYTES;
        let (_, len) = decode(&bytes[slot_at..]).unwrap();
        assert!(StaleSet::decode(&bytes[slot_at + len..]).is_some());
        bytes[slot_at + len + 30] ^= 0xff;
        let f = members[0].as_ref().unwrap().create(INTENT_PATH).unwrap();
        f.write_at(0, &bytes).unwrap();
        assert_eq!(load(&members[..1]).stale, None);
        let _ = log;
    }

    #[test]
    fn a_file_cut_while_a_member_fails_joins_the_stale_set() {
        let r = rig(3);
        let (targets, health, log) = (&r.targets, &r.health, &r.log);
        // A cut starts with every member in service: nothing to record yet.
        let changing = log.mark_changed(50, targets, health).unwrap();
        // Member 1 fails on its part of the cut (no write of this file
        // is in the log to seed the set with).
        health.mark_failed(1, "test");
        drop(changing);
        assert!(log.covers(1, health));
        log.persist(&in_service(targets, health), health).unwrap();
        let stale = load(&r.members[..1]).stale.unwrap();
        assert!(stale.contains(50), "the cut file is not in the set");
    }

    #[test]
    fn an_overflowing_log_makes_the_stale_set_overflow() {
        let r = rig(2);
        let (targets, health, log) = (&r.targets, &r.health, &r.log);
        health.mark_failed(1, "test");
        for ino in 0..(MAX_ENTRIES as u64 + 2) {
            mark0(log, ino * 1000, &targets[..1].to_vec(), health);
        }
        assert!(!log.covers(1, health), "an overflowed set must not re-add");
        assert_eq!(log.take_stale(1, health), None);
    }

    /// A member whose log `fdatasync` blocks while its gate is closed, so
    /// that a write of the log can be held in flight.
    mod gated {
        use super::*;
        use crate::member::DirMember;
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::time::Duration;

        #[derive(Default)]
        pub struct Gate {
            pub closed: AtomicBool,
            /// A sync is blocked at the gate.
            pub held: AtomicBool,
        }

        impl Gate {
            pub fn wait_held(&self) {
                while !self.held.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }

        struct File(Arc<dyn MemberFile>, Arc<Gate>);

        impl MemberFile for File {
            fn read_at(&self, o: u64, b: &mut [u8]) -> std::io::Result<usize> {
                self.0.read_at(o, b)
            }
            fn write_at(&self, o: u64, d: &[u8]) -> std::io::Result<()> {
                self.0.write_at(o, d)
            }
            fn sync_data(&self) -> std::io::Result<()> {
                if self.1.closed.load(Ordering::SeqCst) {
                    self.1.held.store(true, Ordering::SeqCst);
                    while self.1.closed.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
                self.0.sync_data()
            }
            fn len(&self) -> std::io::Result<u64> {
                self.0.len()
            }
            fn set_len(&self, l: u64) -> std::io::Result<()> {
                self.0.set_len(l)
            }
        }

        pub struct GatedMember(pub DirMember, pub Arc<Gate>);

        impl Member for GatedMember {
            fn describe(&self) -> String {
                self.0.describe()
            }
            fn open(&self, p: &str) -> std::io::Result<Arc<dyn MemberFile>> {
                self.0.open(p)
            }
            fn create(&self, p: &str) -> std::io::Result<Arc<dyn MemberFile>> {
                Ok(Arc::new(File(self.0.create(p)?, self.1.clone())))
            }
            fn exists(&self, p: &str) -> std::io::Result<bool> {
                self.0.exists(p)
            }
            fn remove(&self, p: &str) -> std::io::Result<()> {
                self.0.remove(p)
            }
            fn rename(&self, a: &str, b: &str) -> std::io::Result<()> {
                self.0.rename(a, b)
            }
            fn list(&self, p: &str) -> std::io::Result<Vec<String>> {
                self.0.list(p)
            }
            fn write_atomic(&self, p: &str, d: &[u8]) -> std::io::Result<()> {
                self.0.write_atomic(p, d)
            }
            fn read_all(&self, p: &str) -> std::io::Result<Vec<u8>> {
                self.0.read_all(p)
            }
            fn space(&self) -> std::io::Result<(u64, u64)> {
                self.0.space()
            }
        }
    }

    /// A region the members list (marked ahead, or cleared from memory
    /// but not yet from the log) is marked for a write while another write
    /// of the log, whose record lacks it, is in flight: the mark must not
    /// return until a record listing the region is on the members, or that
    /// write would drop it from the log while its stripes are written.
    #[test]
    fn a_mark_waits_for_a_log_write_in_flight_that_lacks_its_region() {
        use crate::member::DirMember;
        use gated::{Gate, GatedMember};
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::time::{Duration, Instant};

        // How the region comes to be listed on the members but not in memory.
        #[derive(Clone, Copy, Debug)]
        enum Listed {
            MarkedAhead,
            ClearedFromMemory,
        }
        for how in [Listed::MarkedAhead, Listed::ClearedFromMemory] {
            let d = tempfile::tempdir().unwrap();
            let gate = Arc::new(Gate::default());
            let m: Arc<dyn Member> = Arc::new(GatedMember(
                DirMember::open(d.path()).unwrap(),
                gate.clone(),
            ));
            let targets: Targets = vec![(0, m.clone())];
            let members = vec![Some(m)];
            let health = Health::new(vec![MemberState::Active]);
            let log = IntentLog::new(&IntentRecord::default(), &health);
            let region = match how {
                Listed::MarkedAhead => 1,
                Listed::ClearedFromMemory => 0,
            };
            // File 10 starts: region 0 marked, the next ones marked ahead.
            log.mark(10, 0, 0, fresh(10), &targets, &health).unwrap();
            if let Listed::ClearedFromMemory = how {
                log.clear_ino(10, &health);
            }
            assert!(load(&members).regions.contains(&(10, region)));
            gate.closed.store(true, Ordering::SeqCst);
            let returned = AtomicBool::new(false);
            std::thread::scope(|s| {
                // A far file's writer needs a log write: it is held in fdatasync,
                // its record (already written, not yet durable) lacks (10, region).
                let other = s.spawn(|| mark0(&log, 5000, &targets, &health));
                gate.wait_held();
                let writer = s.spawn(|| {
                    let at = region << REGION_SHIFT;
                    let lim = AheadLimits {
                        file_end_region: region,
                        unused_ino: 11,
                    };
                    log.mark(10, at, at, lim, &targets, &health).unwrap();
                    returned.store(true, Ordering::SeqCst);
                    // The data write may start now: the log must list the region.
                    load(&members).regions.contains(&(10, region))
                });
                let t = Instant::now();
                while !returned.load(Ordering::SeqCst) && t.elapsed() < Duration::from_millis(200) {
                    std::thread::sleep(Duration::from_millis(2));
                }
                gate.closed.store(false, Ordering::SeqCst);
                other.join().unwrap();
                assert!(
                    writer.join().unwrap(),
                    "{how:?}: mark returned while a log write lacking (10, {region}) was in flight"
                );
            });
            assert!(load(&members).regions.contains(&(10, region)), "{how:?}");
        }
    }
}
