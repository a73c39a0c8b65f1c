//! Why a level name, level code or geometry was refused.
//!
//! Every constructor in [`crate::layout`] returns one of these instead of
//! panicking: the inputs come from the command line and from superblocks read
//! off disks, and both can be wrong.

use super::level::Level;

/// A refused level name, level code or array shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// An array of zero members.
    #[error("an array needs at least one member, got none")]
    NoMembers,

    /// Fewer members than the level needs to be what it claims.
    #[error("{level} needs at least {min} members, got {members}")]
    TooFewMembers {
        level: Level,
        members: usize,
        min: usize,
    },

    /// More members than the level (or the codec behind it) can address.
    #[error("{level} allows at most {max} members, got {members}")]
    TooManyMembers {
        level: Level,
        members: usize,
        max: usize,
    },

    /// The member count must split evenly into mirrors, halves or groups.
    #[error("{level} needs a member count divisible by {divisor} ({what}), got {members}")]
    Indivisible {
        level: Level,
        members: usize,
        divisor: usize,
        what: &'static str,
    },

    /// A level parameter (copies, groups, k, m) outside its range.
    #[error("{level}: {what} must be {expected}, got {value}")]
    BadParameter {
        level: Level,
        what: &'static str,
        value: usize,
        expected: &'static str,
    },

    /// An erasure shape whose k + m is not the member count.
    #[error("erasure {k}+{m} needs k + m = {needed} members, got {members}")]
    ErasureMembers {
        k: usize,
        m: usize,
        needed: usize,
        members: usize,
    },

    /// A chunk size that is not a power of two in 4 KiB ..= 16 MiB.
    #[error(
        "chunk size {0} bytes is not a power of two between {min} and {max} bytes",
        min = super::MIN_CHUNK_SIZE,
        max = super::MAX_CHUNK_SIZE
    )]
    ChunkSize(u32),

    /// A level name that [`Level::from_str`](std::str::FromStr) does not know.
    #[error(
        "unknown RAID level {0:?} (expected raid0, raid1, raid4, raid5[-LAYOUT], raid6, \
         raid10[-nCOPIES], raid01, raid50[-gGROUPS], raid60[-gGROUPS] or K+M such as 4+2)"
    )]
    UnknownName(String),

    /// A level code (from a superblock) that [`Level::from_code`] does not know.
    #[error("unknown RAID level code {code} with parameters {params:?}")]
    UnknownCode { code: u8, params: [u32; 2] },
}
