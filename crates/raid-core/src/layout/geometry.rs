//! [`Geometry`]: a validated level, member count and chunk size, and the
//! mapping from a file's logical bytes to member chunks.

use crate::codec::{MAX_DATA, MAX_PARITY};

use super::error::LayoutError;
use super::level::Level;
use super::map::{ChunkLocation, ChunkRole, GroupMap, Scheme, StripeMap};
use super::rotation::{Placement, Slot};
use super::{MAX_CHUNK_SIZE, MAX_MEMBERS, MIN_CHUNK_SIZE};

/// How the members of an array are split into groups and where each
/// group's chunks go. Built only by [`Geometry::new`], so every value is a
/// shape the engine and the codec can handle.
///
/// Every member holds exactly one chunk of every stripe, at byte
/// `stripe × chunk_size` of its shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Geometry {
    level: Level,
    members: usize,
    chunk_size: u32,
    /// Number of redundancy groups per stripe.
    groups: usize,
    /// Members per group.
    width: usize,
    /// Data chunks per group.
    data_per_group: usize,
    scheme: Scheme,
    placement: Placement,
    /// RAID-01 numbering: group `g`'s slot `t` is member `g + t × groups`
    /// (the two halves), instead of `g × width + t` (adjacent members).
    halves: bool,
}

/// The shape a level takes on a member count, before the chunk size is added.
struct Shape {
    groups: usize,
    width: usize,
    data_per_group: usize,
    scheme: Scheme,
    placement: Placement,
    halves: bool,
}

impl Shape {
    fn single(members: usize, k: usize, scheme: Scheme, placement: Placement) -> Shape {
        Shape {
            groups: 1,
            width: members,
            data_per_group: k,
            scheme,
            placement,
            halves: false,
        }
    }
}

fn check_chunk_size(chunk_size: u32) -> Result<(), LayoutError> {
    if chunk_size.is_power_of_two() && (MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
        Ok(())
    } else {
        Err(LayoutError::ChunkSize(chunk_size))
    }
}

/// Decide whether `level` fits `members`, and how (rules on [`Geometry::new`]).
fn shape(level: Level, n: usize) -> Result<Shape, LayoutError> {
    let too_few = |min: usize| LayoutError::TooFewMembers {
        level,
        members: n,
        min,
    };
    let too_many = |max: usize| LayoutError::TooManyMembers {
        level,
        members: n,
        max,
    };
    let indivisible = |divisor: usize, what: &'static str| LayoutError::Indivisible {
        level,
        members: n,
        divisor,
        what,
    };
    let bad =
        |what: &'static str, value: usize, expected: &'static str| LayoutError::BadParameter {
            level,
            what,
            value,
            expected,
        };
    if n > MAX_MEMBERS {
        return Err(too_many(MAX_MEMBERS));
    }
    let shape = match level {
        Level::Raid0 => Shape::single(n, n, Scheme::Stripe, Placement::Fixed),
        Level::Raid1 => {
            if n < 2 {
                return Err(too_few(2));
            }
            Shape::single(n, 1, Scheme::Mirror, Placement::Fixed)
        }
        Level::Raid4 | Level::Raid5(_) => {
            if n < 3 {
                return Err(too_few(3));
            }
            if n - 1 > MAX_DATA {
                return Err(too_many(MAX_DATA + 1));
            }
            let placement = match level {
                Level::Raid5(layout) => Placement::Raid5(layout),
                _ => Placement::Fixed,
            };
            Shape::single(n, n - 1, Scheme::Parity { k: n - 1, m: 1 }, placement)
        }
        Level::Raid6 => {
            if n < 4 {
                return Err(too_few(4));
            }
            if n - 2 > MAX_DATA {
                return Err(too_many(MAX_DATA + 2));
            }
            Shape::single(
                n,
                n - 2,
                Scheme::Parity { k: n - 2, m: 2 },
                Placement::Rotating,
            )
        }
        Level::Raid10 { copies } => {
            if copies < 2 {
                return Err(bad("copies", copies, "at least 2"));
            }
            if n < copies {
                return Err(too_few(copies));
            }
            if !n.is_multiple_of(copies) {
                return Err(indivisible(copies, "whole mirror sets of `copies` members"));
            }
            Shape {
                groups: n / copies,
                width: copies,
                data_per_group: 1,
                scheme: Scheme::Mirror,
                placement: Placement::Fixed,
                halves: false,
            }
        }
        Level::Raid01 => {
            if n < 4 {
                return Err(too_few(4));
            }
            if !n.is_multiple_of(2) {
                return Err(indivisible(2, "two equal halves"));
            }
            Shape {
                groups: n / 2,
                width: 2,
                data_per_group: 1,
                scheme: Scheme::Mirror,
                placement: Placement::Fixed,
                halves: true,
            }
        }
        Level::Raid50 { groups } | Level::Raid60 { groups } => {
            let m = if matches!(level, Level::Raid50 { .. }) {
                1
            } else {
                2
            };
            if groups < 2 {
                return Err(bad("groups", groups, "at least 2"));
            }
            let min = groups.saturating_mul(m + 2);
            if n < min {
                return Err(too_few(min));
            }
            if !n.is_multiple_of(groups) {
                return Err(indivisible(groups, "equal groups"));
            }
            // n ≤ MAX_MEMBERS and groups ≥ 2 keep w − m far below MAX_DATA.
            let w = n / groups;
            let placement = if m == 1 {
                Placement::Raid5(super::Raid5Layout::LeftSymmetric)
            } else {
                Placement::Rotating
            };
            Shape {
                groups,
                width: w,
                data_per_group: w - m,
                scheme: Scheme::Parity { k: w - m, m },
                placement,
                halves: false,
            }
        }
        Level::Erasure { k, m } => {
            if !(1..=MAX_DATA).contains(&k) {
                return Err(bad("k (data chunks)", k, "between 1 and 251"));
            }
            if m > MAX_PARITY {
                return Err(bad("m (parity chunks)", m, "between 0 and 6"));
            }
            if k + m != n {
                return Err(LayoutError::ErasureMembers {
                    k,
                    m,
                    needed: k + m,
                    members: n,
                });
            }
            // k+0 is plain striping: nothing to rotate.
            let placement = if m == 0 {
                Placement::Fixed
            } else {
                Placement::Rotating
            };
            Shape::single(n, k, Scheme::Parity { k, m }, placement)
        }
    };
    Ok(shape)
}

impl Geometry {
    /// Validate `level` on `members` members with chunks of `chunk_size`
    /// bytes (a power of two in 4 KiB ..= 16 MiB, at most [`MAX_MEMBERS`]
    /// members). Minimums per level, with reasons:
    ///
    /// - RAID-0 ≥ 1, RAID-1 ≥ 2 (fewer has nothing to stripe or mirror).
    /// - RAID-4/5 ≥ 3. md accepts a 2-member RAID-5, but only as a step of a
    ///   RAID-1 → RAID-5 reshape; it stores exactly what a 2-way mirror stores
    ///   while paying for parity and read-modify-write, and raidfs does not
    ///   reshape, so it is refused (erasure `1+1` remains for whoever wants it).
    /// - RAID-6 ≥ 4, as md.
    /// - RAID-10 ≥ `copies` and divisible by it (md's "near" layout with whole
    ///   mirror sets; md also allows other counts by wrapping copies around, which
    ///   would put two chunks of one stripe on a member).
    /// - RAID-01 ≥ 4 and even (two halves of at least two members each).
    /// - RAID-50/60: ≥ 2 groups of ≥ 3 (resp. 4) members, divisible by `groups`.
    /// - Parity groups hold at most 251 data chunks and erasure at most 6 parity
    ///   chunks: the codec's limits.
    pub fn new(level: Level, members: usize, chunk_size: u32) -> Result<Geometry, LayoutError> {
        check_chunk_size(chunk_size)?;
        if members == 0 {
            return Err(LayoutError::NoMembers);
        }
        let s = shape(level, members)?;
        Ok(Geometry {
            level,
            members,
            chunk_size,
            groups: s.groups,
            width: s.width,
            data_per_group: s.data_per_group,
            scheme: s.scheme,
            placement: s.placement,
            halves: s.halves,
        })
    }

    pub fn level(&self) -> Level {
        self.level
    }

    pub fn members(&self) -> usize {
        self.members
    }

    /// Bytes per chunk.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Redundancy groups per stripe (1 except RAID-10, RAID-01, RAID-50/60).
    pub fn group_count(&self) -> usize {
        self.groups
    }

    /// How every group of this geometry protects its data.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// Data chunks per stripe: the stripe's share of file data.
    pub fn data_chunks_per_stripe(&self) -> usize {
        self.groups * self.data_per_group
    }

    /// Parity or copy chunks per stripe.
    pub fn redundancy_chunks_per_stripe(&self) -> usize {
        self.members - self.data_chunks_per_stripe()
    }

    /// File bytes per stripe: `data_chunks_per_stripe × chunk_size`.
    pub fn stripe_data_bytes(&self) -> u64 {
        self.data_chunks_per_stripe() as u64 * u64::from(self.chunk_size)
    }

    /// Stripes needed to hold `len` bytes of file data (the last one may be
    /// partial).
    pub fn stripes_for(&self, len: u64) -> u64 {
        len.div_ceil(self.stripe_data_bytes())
    }

    /// The smallest `p ≥ 1` with `stripe(s + p) == stripe(s)` for every `s`:
    /// the members per group when roles rotate (RAID-5/6/50/60, `k+m` with
    /// `m ≥ 1`), else 1. At most [`MAX_MEMBERS`]. A data path can compute
    /// one period of maps up front and index it by `s mod p`.
    pub fn rotation_period(&self) -> u64 {
        match self.placement {
            Placement::Fixed => 1,
            // A one-member group cannot rotate; none exists, but say so.
            Placement::Raid5(_) | Placement::Rotating => self.width.max(1) as u64,
        }
    }

    /// Member index of slot `slot` of group `group`.
    fn member(&self, group: usize, slot: usize) -> usize {
        if self.halves {
            group + slot * self.groups
        } else {
            group * self.width + slot
        }
    }

    /// Member holding data chunk `data_index` of `stripe`, or `None` if the
    /// index is not below [`data_chunks_per_stripe`](Self::data_chunks_per_stripe).
    pub fn data_member(&self, stripe: u64, data_index: usize) -> Option<usize> {
        if data_index >= self.data_chunks_per_stripe() {
            return None;
        }
        let group = data_index / self.data_per_group;
        let i = data_index % self.data_per_group;
        let slot = self
            .placement
            .data_slot(stripe, self.width, self.data_per_group, i);
        Some(self.member(group, slot))
    }

    /// Member holding redundancy row `row` of `group` in `stripe`, or `None`
    /// if there is no such group or row.
    pub fn redundancy_member(&self, stripe: u64, group: usize, row: usize) -> Option<usize> {
        if group >= self.groups || row >= self.width - self.data_per_group {
            return None;
        }
        let slot = self
            .placement
            .redundancy_slot(stripe, self.width, self.data_per_group, row);
        Some(self.member(group, slot))
    }

    /// What `member` holds in `stripe` (the inverse of [`stripe`](Self::stripe)),
    /// or `None` for a member index out of range. Rebuild uses this to know
    /// which chunk to recompute for a replaced member.
    pub fn role(&self, stripe: u64, member: usize) -> Option<ChunkRole> {
        if member >= self.members {
            return None;
        }
        let (group, slot) = if self.halves {
            (member % self.groups, member / self.groups)
        } else {
            (member / self.width, member % self.width)
        };
        let role = match self
            .placement
            .slot_role(stripe, self.width, self.data_per_group, slot)
        {
            Slot::Data(i) => ChunkRole::Data {
                index: group * self.data_per_group + i,
            },
            Slot::Redundancy(row) => ChunkRole::Redundancy { group, row },
        };
        Some(role)
    }

    /// Where every chunk of `stripe` lives.
    pub fn stripe(&self, stripe: u64) -> StripeMap {
        let k = self.data_per_group;
        let groups = (0..self.groups)
            .map(|g| {
                let data = (0..k)
                    .map(|i| self.member(g, self.placement.data_slot(stripe, self.width, k, i)))
                    .collect();
                let redundancy = (0..self.width - k)
                    .map(|r| {
                        self.member(g, self.placement.redundancy_slot(stripe, self.width, k, r))
                    })
                    .collect();
                GroupMap {
                    scheme: self.scheme,
                    data,
                    redundancy,
                    first_data_index: g * k,
                }
            })
            .collect();
        StripeMap { groups }
    }

    /// Where byte `offset` of a file's logical data lives: chunk
    /// `offset / chunk_size` of the file is data chunk
    /// `chunk mod data_chunks_per_stripe` of stripe
    /// `chunk / data_chunks_per_stripe`.
    pub fn locate(&self, offset: u64) -> ChunkLocation {
        let cs = u64::from(self.chunk_size);
        let chunk = offset / cs;
        let offset_in_chunk = offset % cs;
        let d = self.data_chunks_per_stripe() as u64;
        let stripe = chunk / d;
        // data_index < d ≤ MAX_MEMBERS: lossless.
        let data_index = (chunk % d) as usize;
        let group = data_index / self.data_per_group;
        let slot = self.placement.data_slot(
            stripe,
            self.width,
            self.data_per_group,
            data_index % self.data_per_group,
        );
        ChunkLocation {
            stripe,
            data_index,
            // offset_in_chunk < chunk_size, a u32.
            offset_in_chunk: offset_in_chunk as u32,
            member: self.member(group, slot),
            // stripe × cs ≤ offset / d, so the sum cannot overflow.
            member_offset: stripe * cs + offset_in_chunk,
        }
    }

    /// Members of group `group` (every slot), for tolerance checks.
    pub(super) fn group_members(&self, group: usize) -> impl Iterator<Item = usize> + '_ {
        (0..self.width).map(move |slot| self.member(group, slot))
    }

    /// How many members of one group may be lost without losing data.
    pub(super) fn group_tolerance(&self) -> usize {
        match self.scheme {
            Scheme::Stripe => 0,
            Scheme::Mirror => self.width - 1,
            Scheme::Parity { m, .. } => m,
        }
    }

    /// Usable bytes of file data on members of these capacities (bytes
    /// each, in member order). As md, every member contributes only as many
    /// whole chunks as the smallest member holds; a missing entry counts as
    /// an empty member and entries past [`members`](Self::members) are
    /// ignored. Saturates at `u64::MAX`.
    pub fn usable_capacity(&self, member_capacities: &[u64]) -> u64 {
        let smallest = (0..self.members)
            .map(|i| member_capacities.get(i).copied().unwrap_or(0))
            .min()
            .unwrap_or(0);
        let stripes = smallest / u64::from(self.chunk_size);
        let bytes = u128::from(stripes) * u128::from(self.stripe_data_bytes());
        u64::try_from(bytes).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Raid5Layout;

    #[test]
    fn raid5_left_symmetric_on_four_members_matches_the_documented_table() {
        let g = Geometry::new(Level::Raid5(Raid5Layout::LeftSymmetric), 4, 4096).unwrap();
        // Rows of the table in the module docs: member → chunk name.
        let rows = [
            ["D0", "D1", "D2", "P"],
            ["D1", "D2", "P", "D0"],
            ["D2", "P", "D0", "D1"],
            ["P", "D0", "D1", "D2"],
        ];
        for (s, row) in rows.iter().enumerate() {
            for (member, want) in row.iter().enumerate() {
                let got = match g.role(s as u64, member).unwrap() {
                    ChunkRole::Data { index } => format!("D{index}"),
                    ChunkRole::Redundancy { .. } => "P".to_string(),
                };
                assert_eq!(&got, want, "stripe {s} member {member}");
            }
        }
    }

    #[test]
    fn raid6_on_five_members_puts_q_after_p() {
        let g = Geometry::new(Level::Raid6, 5, 4096).unwrap();
        let map = g.stripe(0);
        assert_eq!(map.groups[0].redundancy, vec![4, 0]);
        assert_eq!(map.groups[0].data, vec![1, 2, 3]);
        let map = g.stripe(1);
        assert_eq!(map.groups[0].redundancy, vec![3, 4]);
        assert_eq!(map.groups[0].data, vec![0, 1, 2]);
    }

    #[test]
    fn raid01_mirrors_member_i_on_i_plus_half() {
        let g = Geometry::new(Level::Raid01, 6, 4096).unwrap();
        let map = g.stripe(7);
        let pairs: Vec<(Vec<usize>, Vec<usize>)> = map
            .groups
            .iter()
            .map(|g| (g.data.clone(), g.redundancy.clone()))
            .collect();
        assert_eq!(
            pairs,
            vec![(vec![0], vec![3]), (vec![1], vec![4]), (vec![2], vec![5])]
        );
    }

    #[test]
    fn locate_far_offsets_does_not_overflow() {
        let g = Geometry::new(Level::Raid1, 2, 4096).unwrap();
        let loc = g.locate(u64::MAX);
        assert_eq!(loc.member_offset, u64::MAX);
        let g = Geometry::new(Level::Raid6, 7, 1 << 24).unwrap();
        let loc = g.locate(u64::MAX);
        assert!(loc.member_offset <= u64::MAX / 5 + (1 << 24));
    }
}
