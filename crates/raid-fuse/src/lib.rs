//! raid-fuse: mounts a raidfs array as a POSIX filesystem and administers it.
//!
//! - [`adapter`]: the `fuser::Filesystem` implementation, a thin translation
//!   onto [`raid_array::Array`].
//! - [`mount`]: what `mount.raidfs` does, from arguments to a served mount.
//! - [`options`], [`fstab`], [`spec`]: the mount(8) helper conventions.
//! - [`kernel_mount`]: the `mount(2)` of type `fuse.raidfs`.
//! - [`readahead`]: the kernel's read-ahead for the mount.
//! - [`readd`]: the `readd` option, taking back members whose disk is back.
//! - [`daemon`]: backgrounding with a readiness report.
//! - [`control`]: the control socket the admin CLI uses on a live mount.

pub mod adapter;
pub mod cli;
pub mod control;
pub mod daemon;
pub mod fstab;
pub mod kernel_mount;
pub mod metrics;
pub mod mount;
pub mod nearfull;
pub mod notify;
pub mod options;
pub mod readahead;
pub mod readd;
pub mod spec;
