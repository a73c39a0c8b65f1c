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
//! its parity, so a mark must never reach data nobody was writing.
//! The members' log files stay open between writes. Clearing is lazy:
//! once a file's data is synced its regions leave the in-memory set, and the
//! next write of the log (or a clean shutdown) drops them on disk; the mount
//! syncs files a few seconds after their last write and rewrites the log
//! ([`crate::data::DataStore::settle`]), as md clears bitmap bits once
//! writes settle. After an unclean shutdown [`crate::ops::resync`] checks
//! exactly the dirty regions.
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
use crate::health::Health;
use crate::member::{Member, MemberFile};

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
}

impl IntentRecord {
    /// Whether nothing needs resyncing.
    pub fn is_clean(&self) -> bool {
        !self.overflow && self.regions.is_empty()
    }

    /// Stripe ranges `[first, end)` of `ino` that are dirty.
    pub fn stripes_of(&self, ino: u64) -> Vec<(u64, u64)> {
        self.regions
            .range((ino, 0)..=(ino, u64::MAX))
            .map(|&(_, r)| (r << REGION_SHIFT, (r + 1) << REGION_SHIFT))
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

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

/// Decode one slot; `None` if it is empty, torn or of an unknown major.
fn decode(b: &[u8]) -> Option<IntentRecord> {
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
    for i in 0..count {
        let o = HEADER + i * 16;
        let (ino, r) = (u64_at(b, o), u64_at(b, o + 8));
        // A record written with another region size: convert to ours, conservatively.
        if shift >= REGION_SHIFT {
            let n = 1u64 << (shift - REGION_SHIFT);
            for j in 0..n {
                regions.insert((ino, (r << (shift - REGION_SHIFT)) + j));
            }
        } else {
            regions.insert((ino, r >> (REGION_SHIFT - shift)));
        }
    }
    Some(IntentRecord {
        overflow: flags & FLAG_OVERFLOW != 0,
        regions,
        seq,
    })
}

/// Read the log of every present member and return the union of their
/// newest valid slots. A member whose log exists but has no valid slot
/// makes the record `overflow` (check everything): it cannot be trusted.
pub fn load(members: &[Option<Arc<dyn Member>>]) -> IntentRecord {
    let mut out = IntentRecord::default();
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
        let a = decode(&bytes[..bytes.len().min(SLOT_BYTES)]);
        let b = if bytes.len() > SLOT_BYTES {
            decode(&bytes[SLOT_BYTES..])
        } else {
            None
        };
        let best = match (a, b) {
            (Some(a), Some(b)) => Some(if a.seq >= b.seq { a } else { b }),
            (a, b) => a.or(b),
        };
        match best {
            Some(r) => {
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
    out
}

struct State {
    regions: BTreeSet<(u64, u64)>,
    /// Regions found dirty at start-up: only a resync may clear them.
    pinned: BTreeSet<(u64, u64)>,
    pinned_overflow: bool,
    overflow: bool,
    seq: u64,
    /// What the members hold now (to skip needless writes): a superset of
    /// the regions being written, plus the speculative marks of [`ahead`].
    durable: BTreeSet<(u64, u64)>,
    durable_overflow: bool,
    /// A write of the log is in progress (its leader holds no lock while
    /// writing); others wait on [`IntentLog::done`] and are served by the
    /// next write, which carries every region added meanwhile.
    writing: bool,
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
    /// dirty until a resync clears it).
    pub fn new(loaded: &IntentRecord) -> Self {
        IntentLog {
            state: Mutex::new(State {
                regions: loaded.regions.clone(),
                pinned: loaded.regions.clone(),
                pinned_overflow: loaded.overflow,
                overflow: loaded.overflow,
                seq: loaded.seq,
                durable: loaded.regions.clone(),
                durable_overflow: loaded.overflow,
                writing: false,
            }),
            done: Condvar::new(),
            files: Mutex::new(Vec::new()),
        }
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
        loop {
            let covered = g.durable_overflow || (r0..=r1).all(|r| g.durable.contains(&(ino, r)));
            if covered {
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

    /// Forget the dirty regions of `ino` (its data is synced). Lazy: the
    /// members still list them until the next write of the log.
    pub(crate) fn clear_ino(&self, ino: u64) {
        let mut g = self.lock();
        let keys: Vec<_> = g
            .regions
            .range((ino, 0)..=(ino, u64::MAX))
            .copied()
            .collect();
        for k in keys {
            if !g.pinned.contains(&k) {
                g.regions.remove(&k);
            }
        }
    }

    /// Whether the members hold a mark ahead for `ino` in `regions` (a
    /// region marked speculatively and not written since).
    pub(crate) fn holds_ahead(&self, ino: u64, regions: std::ops::Range<u64>) -> bool {
        if regions.is_empty() {
            return false;
        }
        let g = self.lock();
        g.durable
            .range((ino, regions.start)..(ino, regions.end))
            .any(|k| !g.regions.contains(k))
    }

    /// A region left from before start-up has been resynced.
    pub(crate) fn resolved(&self, ino: u64, region: u64) {
        let mut g = self.lock();
        g.pinned.remove(&(ino, region));
        g.regions.remove(&(ino, region));
    }

    /// Every start-up region has been resynced (also ends a start-up overflow).
    pub(crate) fn resolved_all(&self) {
        let mut g = self.lock();
        let pinned = std::mem::take(&mut g.pinned);
        for k in pinned {
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
        if g.regions == g.durable && g.overflow == g.durable_overflow {
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
        drop(g);
        let res = self.write_record(seq, overflow, &set, targets, health);
        let mut g = self.lock();
        g.writing = false;
        self.done.notify_all();
        res?;
        debug!(seq, regions = set.len(), "write-intent log written");
        g.durable = set;
        g.durable_overflow = overflow;
        Ok(g)
    }

    fn write_record(
        &self,
        seq: u64,
        overflow: bool,
        set: &BTreeSet<(u64, u64)>,
        targets: &Targets,
        health: &Health,
    ) -> Result<()> {
        let rec = encode(seq, overflow, set);
        let slot = (seq % 2) * SLOT_BYTES as u64;
        let results: Vec<std::io::Result<()>> = crate::data::pool::map(targets.iter(), |(i, m)| {
            let f = self.file(*i, m)?;
            f.write_at(slot, &rec)?;
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
        Rig {
            _dirs: dirs,
            targets,
            members,
            health: Health::new(vec![MemberState::Active; n]),
            log: IntentLog::new(&IntentRecord::default()),
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
        let r = decode(&b).unwrap();
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
            log.clear_ino(ino);
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
}
