//! raid-array: the raidfs engine.
//!
//! A POSIX-shaped library over N member directories: on-disk format,
//! journaled metadata, the striped data path with per-chunk checksums,
//! member health and degraded mode, rebuild, resync and scrub. It knows
//! nothing of FUSE; the FUSE adapter and the admin CLI call its API, and it
//! is tested directly.

pub mod acl;
pub mod data;
pub mod error;
pub mod exclusive;
pub mod health;
pub mod intent;
pub mod member;
pub mod ops;
pub mod stale;

pub use error::{ArrayError, Result};
pub mod array;
pub mod assemble;
pub mod create;
pub mod format;
pub mod meta;

pub use array::{
    Array, RebuildOutcome, RebuildStatus, ReplaceKind, SetAttr, SpareStatus, StatFs, Status,
    TimeSet,
};
pub use assemble::{AssembleOptions, AtimeMode, Selector};
pub use create::CreateOptions;
pub use meta::{Attr, DirEntry, FileKind, ROOT_INO};
pub use ops::ScrubSummary;
