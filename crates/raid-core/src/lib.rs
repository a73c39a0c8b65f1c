//! raid-core: the computational heart of raidfs, with no I/O.
//!
//! - [`gf`]: GF(2⁸) arithmetic (polynomial 0x11d, generator 2, as Linux md).
//! - [`matrix`]: the encoding matrix (P, Q, then extended Cauchy rows) and
//!   Gauss–Jordan inversion.
//! - [`kernels`]: SIMD kernels, one per instruction set, chosen at start-up.
//! - [`codec`]: parity generation, reconstruction and read-modify-write
//!   updates for `k` data + `m` parity chunks.
//! - [`reference`]: naive byte-at-a-time implementations every kernel is
//!   checked against; [`selftest`] runs that check at start-up.
//! - [`layout`]: stripe geometry for RAID 0/1/4/5/6/10/01/50/60 and k+m.

pub mod codec;
pub mod gf;
pub mod kernels;
pub mod layout;
pub mod matrix;
pub mod reference;
pub mod selftest;

pub use codec::{Codec, CodecError};
pub use layout::{Geometry, LayoutError, Level};
