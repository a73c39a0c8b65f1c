//! Stripe geometry for RAID 0/1/4/5/6/10/01/50/60 and general `k+m`.
//!
//! # Model
//!
//! A file's data is cut into chunks of `chunk_size` bytes. Chunk `c` of the
//! file is data chunk `d = c mod D` of stripe `s = c / D`, where `D` is
//! [`Geometry::data_chunks_per_stripe`]. Each stripe has exactly one chunk on
//! every member, stored at byte `s × chunk_size` of that member's shard of
//! the file, so a byte at file offset `x` lives at member offset
//! `(x / chunk_size / D) × chunk_size + x mod chunk_size`.
//!
//! The members of a stripe are split into **groups** ([`GroupMap`]); each
//! group protects its own data chunks by one [`Scheme`]: none (RAID-0),
//! mirror copies (RAID-1, RAID-10, RAID-01) or `m` parity chunks (RAID-4/5/6,
//! RAID-50/60, `k+m`). Groups keep the same members in every stripe; only
//! the roles rotate within a group.
//!
//! | level       | groups | members per group | data per group | scheme          |
//! |-------------|--------|-------------------|----------------|-----------------|
//! | RAID-0      | 1      | n                 | n              | stripe          |
//! | RAID-1      | 1      | n                 | 1              | mirror (n−1 copies) |
//! | RAID-4      | 1      | n                 | n−1            | parity k=n−1, m=1, P on member n−1 |
//! | RAID-5      | 1      | n                 | n−1            | parity m=1, rotating (4 md layouts) |
//! | RAID-6      | 1      | n                 | n−2            | parity m=2, rotating |
//! | RAID-10 (c) | n/c    | c (adjacent)      | 1              | mirror          |
//! | RAID-01     | n/2    | 2 (i and i+n/2)   | 1              | mirror          |
//! | RAID-50 (g) | g      | n/g (adjacent)    | n/g−1          | RAID-5 left-symmetric |
//! | RAID-60 (g) | g      | n/g (adjacent)    | n/g−2          | RAID-6          |
//! | k+m         | 1      | k+m               | k              | parity, rotating like RAID-6 |
//!
//! Data fills group 0's chunks first, then group 1's, and so on
//! ([`GroupMap::first_data_index`]).
//!
//! # Parity rotation
//!
//! RAID-5 follows Linux md exactly (`drivers/md/raid5.c`,
//! `raid5_compute_sector`); see [`Raid5Layout`] for all four formulas. The
//! default, left-symmetric, with `n` members: parity on member
//! `pd = n − 1 − (s mod n)`, data chunk `i` on member `(pd + 1 + i) mod n`.
//! On 4 members:
//!
//! ```text
//!             member 0  member 1  member 2  member 3
//! stripe 0      D0        D1        D2        P
//! stripe 1      D1        D2        P         D0
//! stripe 2      D2        P         D0        D1
//! stripe 3      P         D0        D1        D2
//! stripe 4      D0        D1        D2        P      (period n)
//! ```
//!
//! RAID-6 uses md's default left-symmetric RAID-6 placement: P on
//! `pd = n − 1 − (s mod n)`, Q on `(pd + 1) mod n`, data chunk `i` on
//! `(pd + 2 + i) mod n`. On 5 members stripe 0 is `Q D0 D1 D2 P`, stripe 1
//! is `D0 D1 D2 P Q`.
//!
//! Erasure `k+m` generalises that: parity row `r` (`0 ≤ r < m`; row 0 is P,
//! row 1 is Q, then the codec's Cauchy rows) on `(pd + r) mod n`, data `i`
//! on `(pd + m + i) mod n`. So `k+1` places chunks exactly as RAID-5
//! left-symmetric and `k+2` exactly as RAID-6; `k+0` does not rotate. Each
//! member thus carries parity in `m` stripes out of every `n`, which spreads
//! parity writes evenly as for RAID-5.
//!
//! RAID-4 keeps data `i` on member `i` and P on member `n − 1` (md's level 4).
//! RAID-50/60 rotate inside each group independently, by the same stripe
//! number.
//!
//! # Mirrors
//!
//! RAID-10 with `c` copies is md's "near" layout (`n2`, `n3`, …) for a
//! member count divisible by `c`: stripe data chunk `i` is on members
//! `c·i … c·i + c − 1`. RAID-01 stripes data chunk `i` over the first half
//! (member `i`) and mirrors it on the second half (member `i + n/2`).
//!
//! ```text
//! RAID-10, 6 members, 2 copies     RAID-01, 6 members
//!   m0 m1 | m2 m3 | m4 m5            m0 m1 m2 | m3 m4 m5
//!   D0 D0 | D1 D1 | D2 D2            D0 D1 D2 | D0 D1 D2
//! ```
//!
//! # Limits
//!
//! Chunk sizes are powers of two from 4 KiB to 16 MiB. At most
//! [`MAX_MEMBERS`] members (the codec's 251 data + 6 parity), parity groups
//! at most 251 data chunks. Member minimums and their reasons are on
//! [`Geometry::new`]; failure semantics (including why RAID-01 is judged per
//! chunk) on [`Geometry::survives`].

mod error;
mod geometry;
mod level;
mod map;
mod rotation;
mod tolerance;

pub use error::LayoutError;
pub use geometry::Geometry;
pub use level::{Level, LevelCode, Raid5Layout};
pub use map::{ChunkLocation, ChunkRole, GroupMap, Scheme, StripeMap};

/// Smallest chunk: one page, the unit members' filesystems write.
pub const MIN_CHUNK_SIZE: u32 = 4096;
/// Largest chunk: bounds the memory of one stripe buffer.
pub const MAX_CHUNK_SIZE: u32 = 16 << 20;
/// Most members in one array: the codec's largest stripe (251 data + 6
/// parity), which also keeps a member index within `u16`.
pub const MAX_MEMBERS: usize = crate::codec::MAX_DATA + crate::codec::MAX_PARITY;
