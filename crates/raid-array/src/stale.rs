//! Which files changed while a member was out, so that the member can come
//! back with a resync of those files only (md's bitmap-based `--re-add`).
//!
//! A member slot is *covered* from the moment its member, in sync until
//! then, leaves service (it fails, or it is absent at an assembly where the
//! superblocks still list it active) until the slot gets a member again
//! (a replace, a re-add or a spare). While any slot is covered, every file
//! whose data changes is added to the set before the change reaches the
//! other members (the write-intent log's group commit carries it, see
//! [`crate::intent`]), and files dirty when coverage began are added with
//! it. So for a covered slot, the files *not* in the set hold on its
//! member exactly what they held when it left: a re-add resyncs the files
//! in the set and keeps the rest.
//!
//! Inodes are kept as ranges (new files are numbered in order, so a copy
//! of many new files costs one range). More ranges than a record holds
//! make the set *overflow*: every file counts, and a re-add becomes a full
//! rebuild.
//!
//! # Record (in `.raidfs/intent`, little-endian)
//!
//! Written with every log record, with the same `seq` and made durable by
//! the same `fdatasync`: right behind the log record in its slot when both
//! fit, else in a spill slot of 64 KiB at [`OFFSET`] + (`seq mod 2`) × 64
//! KiB. A reader takes the set written with the newest valid log record; a
//! missing or torn one means "unknown": no slot is covered.
//!
//! ```text
//!  0  magic    8  "RFSSTALE"
//!  8  major    2  1   (a reader refuses another major: unknown)
//! 10  minor    2  0
//! 12  flags    4  bit 0: overflow, every file counts
//! 16  seq      8  the log record written with it
//! 24  covered 32  bitmap of covered member slots (bit k of byte k/8)
//! 56  count    4  number of ranges
//! 60  ranges   count × 16: first ino u64, last ino u64 (inclusive)
//!  …  crc      4  CRC32 of every byte before it
//! ```

use std::collections::{BTreeMap, BTreeSet};

/// Bytes of one slot.
pub const SLOT_BYTES: usize = 64 * 1024;
/// Offset of the first spill slot in the log file (after the log's two).
pub const OFFSET: u64 = 2 * crate::intent::SLOT_BYTES as u64;
const MAGIC: &[u8; 8] = b"RFSSTALE";
const MAJOR: u16 = 1;
const MINOR: u16 = 0;
const HEADER: usize = 60;
/// Ranges that fit in a slot; more make the set overflow.
pub const MAX_RANGES: usize = (SLOT_BYTES - HEADER - 4) / 16;
const FLAG_OVERFLOW: u32 = 1;
/// Member slots a record can name (the format's member limit is 255).
const MAX_SLOTS: usize = 256;

/// Files changed while the covered slots were out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StaleSet {
    /// Member slots whose member has been out since the set covers it.
    pub covered: BTreeSet<usize>,
    /// Changed inodes as ranges: first -> last (inclusive).
    ranges: BTreeMap<u64, u64>,
    /// More ranges than a record holds: every file counts.
    pub overflow: bool,
}

impl StaleSet {
    /// Whether any slot is covered (changes must be recorded).
    pub fn is_tracking(&self) -> bool {
        !self.covered.is_empty()
    }

    /// Whether `ino` counts as changed.
    pub fn contains(&self, ino: u64) -> bool {
        self.overflow
            || self
                .ranges
                .range(..=ino)
                .next_back()
                .is_some_and(|(_, &last)| last >= ino)
    }

    /// Number of inode ranges held.
    pub fn range_count(&self) -> usize {
        self.ranges.len()
    }

    /// Inodes held, as (first, last) ranges.
    pub fn ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges.iter().map(|(&f, &l)| (f, l))
    }

    /// Record `ino` as changed, merging it with adjacent ranges.
    pub fn insert(&mut self, ino: u64) {
        if self.overflow || self.contains(ino) {
            return;
        }
        let (mut first, mut last) = (ino, ino);
        if let Some((&f, &l)) = self.ranges.range(..ino).next_back()
            && l.checked_add(1) == Some(ino)
        {
            first = f;
        }
        if let Some(next) = ino.checked_add(1)
            && let Some(l) = self.ranges.remove(&next)
        {
            last = l;
        }
        self.ranges.insert(first, last);
        if self.ranges.len() > MAX_RANGES {
            self.set_overflow();
        }
    }

    /// Every file counts from now on.
    pub fn set_overflow(&mut self) {
        self.overflow = true;
        self.ranges.clear();
    }

    /// Forget every change (no slot is covered any more).
    pub fn clear_changes(&mut self) {
        self.overflow = false;
        self.ranges.clear();
    }

    /// The record of this set, written with log record `seq`.
    pub fn encode(&self, seq: u64) -> Vec<u8> {
        let count = if self.overflow { 0 } else { self.ranges.len() };
        let mut b = Vec::with_capacity(HEADER + count * 16 + 4);
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&MAJOR.to_le_bytes());
        b.extend_from_slice(&MINOR.to_le_bytes());
        let flags = if self.overflow { FLAG_OVERFLOW } else { 0 };
        b.extend_from_slice(&flags.to_le_bytes());
        b.extend_from_slice(&seq.to_le_bytes());
        let mut bitmap = [0u8; MAX_SLOTS / 8];
        for &k in self.covered.iter().filter(|&&k| k < MAX_SLOTS) {
            bitmap[k / 8] |= 1 << (k % 8);
        }
        b.extend_from_slice(&bitmap);
        b.extend_from_slice(&(count as u32).to_le_bytes());
        if !self.overflow {
            for (&first, &last) in &self.ranges {
                b.extend_from_slice(&first.to_le_bytes());
                b.extend_from_slice(&last.to_le_bytes());
            }
        }
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decode one slot: its `seq` and set; `None` if empty, torn, of an
    /// unknown major or malformed.
    pub fn decode(b: &[u8]) -> Option<(u64, StaleSet)> {
        if b.len() < HEADER + 4 || &b[..8] != MAGIC {
            return None;
        }
        if u16::from_le_bytes([b[8], b[9]]) != MAJOR {
            return None;
        }
        let flags = u32::from_le_bytes(b[12..16].try_into().ok()?);
        let seq = u64::from_le_bytes(b[16..24].try_into().ok()?);
        let count = u32::from_le_bytes(b[56..60].try_into().ok()?) as usize;
        let end = HEADER + count.checked_mul(16)?;
        if count > MAX_RANGES || end + 4 > b.len() {
            return None;
        }
        if u32::from_le_bytes(b[end..end + 4].try_into().ok()?) != crc32fast::hash(&b[..end]) {
            return None;
        }
        let mut set = StaleSet {
            covered: (0..MAX_SLOTS)
                .filter(|&k| b[24 + k / 8] & (1 << (k % 8)) != 0)
                .collect(),
            ..StaleSet::default()
        };
        if flags & FLAG_OVERFLOW != 0 {
            set.set_overflow();
            return Some((seq, set));
        }
        for i in 0..count {
            let o = HEADER + i * 16;
            let first = u64::from_le_bytes(b[o..o + 8].try_into().ok()?);
            let last = u64::from_le_bytes(b[o + 8..o + 16].try_into().ok()?);
            if last < first {
                return None;
            }
            // Merged again, so an odd record cannot leave overlaps.
            set.insert_range(first, last);
        }
        Some((seq, set))
    }

    /// Add everything `other` holds (covered slots and changes).
    pub fn merge(&mut self, other: &StaleSet) {
        self.covered.extend(other.covered.iter().copied());
        if other.overflow {
            self.set_overflow();
            return;
        }
        for (&first, &last) in &other.ranges {
            self.insert_range(first, last);
        }
    }

    /// Record inodes `first..=last` as changed.
    fn insert_range(&mut self, first: u64, last: u64) {
        if self.overflow {
            return;
        }
        // Ranges from a record are few; inserting the ends and swallowing
        // what lies between keeps the map merged.
        let overlapping: Vec<(u64, u64)> = self
            .ranges
            .range(..=last.saturating_add(1))
            .filter(|&(_, &l)| l.saturating_add(1) >= first)
            .map(|(&f, &l)| (f, l))
            .collect();
        let (mut f, mut l) = (first, last);
        for (of, ol) in overlapping {
            self.ranges.remove(&of);
            f = f.min(of);
            l = l.max(ol);
        }
        self.ranges.insert(f, l);
        if self.ranges.len() > MAX_RANGES {
            self.set_overflow();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserts_merge_into_ranges() {
        let mut s = StaleSet::default();
        for ino in [5, 7, 6, 10, 4, 11, 9] {
            s.insert(ino);
        }
        assert_eq!(s.ranges().collect::<Vec<_>>(), vec![(4, 7), (9, 11)]);
        assert!(s.contains(4) && s.contains(7) && s.contains(10));
        assert!(!s.contains(3) && !s.contains(8) && !s.contains(12));
        s.insert(8);
        assert_eq!(s.ranges().collect::<Vec<_>>(), vec![(4, 11)]);
        s.insert(u64::MAX);
        s.insert(0);
        assert!(s.contains(u64::MAX) && s.contains(0));
        let mut t = StaleSet::default();
        t.merge(&s);
        t.insert_range(2, 20);
        assert_eq!(
            t.ranges().collect::<Vec<_>>(),
            vec![(0, 0), (2, 20), (u64::MAX, u64::MAX)]
        );
    }

    #[test]
    fn too_many_ranges_overflow_and_every_file_counts() {
        let mut s = StaleSet::default();
        for i in 0..=MAX_RANGES as u64 {
            s.insert(i * 2);
        }
        assert!(s.overflow);
        assert!(s.contains(1) && s.contains(u64::MAX));
        assert_eq!(s.range_count(), 0);
    }

    #[test]
    fn encode_decode_round_trip_and_torn_slot_is_refused() {
        let mut s = StaleSet::default();
        s.covered.extend([0, 3, 254]);
        for ino in [2, 3, 4, 100, 5000] {
            s.insert(ino);
        }
        let b = s.encode(42);
        assert_eq!(StaleSet::decode(&b), Some((42, s.clone())));
        assert_eq!(StaleSet::decode(&b[..b.len() - 1]), None);
        let mut bad = b.clone();
        bad[HEADER + 3] ^= 1;
        assert_eq!(StaleSet::decode(&bad), None);
        // A full slot still fits.
        let mut full = StaleSet::default();
        for i in 0..MAX_RANGES as u64 {
            full.insert(i * 2);
        }
        assert!(!full.overflow);
        assert!(full.encode(1).len() <= SLOT_BYTES);
        let mut o = StaleSet::default();
        o.covered.insert(1);
        o.set_overflow();
        assert_eq!(StaleSet::decode(&o.encode(3)), Some((3, o)));
    }
}
