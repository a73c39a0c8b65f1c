//! What a stripe looks like: which member holds which chunk.
//!
//! These are plain values the engine reads; [`Geometry`](super::Geometry)
//! computes them.

/// How a group protects its data chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// No redundancy (RAID-0): the group's data chunks are its only copy.
    Stripe,
    /// The group has one data chunk; every redundancy member holds a
    /// byte-identical copy of it.
    Mirror,
    /// `k` data chunks protected by `m` parity chunks computed by
    /// [`Codec`](crate::Codec) (`P` = XOR, `Q` = md's RAID-6 syndrome, then
    /// Cauchy rows); any `m` of the `k + m` chunks may be lost.
    Parity { k: usize, m: usize },
}

/// One redundancy group of one stripe.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupMap {
    pub scheme: Scheme,
    /// Member index of each data chunk of this group, in logical order.
    pub data: Vec<usize>,
    /// Member index of parity row `r` (P, Q, …) for [`Scheme::Parity`], or
    /// of each further copy for [`Scheme::Mirror`]; empty for
    /// [`Scheme::Stripe`].
    pub redundancy: Vec<usize>,
    /// Index of this group's first data chunk within the stripe.
    pub first_data_index: usize,
}

impl GroupMap {
    /// Every member this group touches: data members, then redundancy.
    pub fn members(&self) -> impl Iterator<Item = usize> + '_ {
        self.data.iter().chain(self.redundancy.iter()).copied()
    }
}

/// Where every chunk of one stripe lives. Groups are in data order: group
/// `g + 1`'s data follows group `g`'s in the file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StripeMap {
    pub groups: Vec<GroupMap>,
}

impl StripeMap {
    /// Member index of each data chunk of the stripe, in logical order.
    pub fn data_members(&self) -> impl Iterator<Item = usize> + '_ {
        self.groups.iter().flat_map(|g| g.data.iter().copied())
    }
}

/// Where one byte of a file's logical data lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChunkLocation {
    /// Stripe number.
    pub stripe: u64,
    /// Index of the data chunk within the stripe (`0..data_chunks_per_stripe`).
    pub data_index: usize,
    /// Byte offset within that chunk (`0..chunk_size`).
    pub offset_in_chunk: u32,
    /// Member holding the chunk.
    pub member: usize,
    /// Byte offset within that member's shard: `stripe × chunk_size + offset_in_chunk`.
    pub member_offset: u64,
}

/// What one member holds in one stripe (the inverse of [`StripeMap`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChunkRole {
    /// Data chunk `index` of the stripe.
    Data { index: usize },
    /// Redundancy row `row` (parity row, or mirror copy number) of `group`.
    Redundancy { group: usize, row: usize },
}
