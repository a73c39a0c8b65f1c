//! raid-array: the raidfs engine.
//!
//! A POSIX-shaped library over N member directories: on-disk format,
//! journaled metadata, the striped data path with per-chunk checksums,
//! member health and degraded mode, rebuild, resync and scrub. It knows
//! nothing of FUSE; the FUSE adapter and the admin CLI call its API, and it
//! is tested directly.

pub mod error;
pub mod member;

pub use error::{ArrayError, Result};
pub mod format;
pub mod meta;
