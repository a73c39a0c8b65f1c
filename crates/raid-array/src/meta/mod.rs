//! Metadata: the namespace held in memory, made durable by a journal on
//! every member and bounded by checkpoints.
//!
//! - [`inode`]: inodes, directories and the engine's attribute types.
//! - [`ops`]: the journaled operations.
//! - [`namespace`]: applying operations to the in-memory namespace.
//! - [`journal`]: the group-committing journal writer.
//! - [`checkpoint`]: the snapshot payload.
//! - [`load`]: reading a member's metadata back (checkpoint + replay).
//! - [`table`]: the inode table.
//! - [`store`]: the three put together, as the array uses them.

pub mod checkpoint;
pub mod inode;
pub mod journal;
pub mod load;
pub mod namespace;
pub mod ops;
pub mod store;
pub mod table;

pub use inode::{Attr, DirEntry, FileKind, ROOT_INO};
pub use namespace::Namespace;
pub use ops::Op;
pub use store::Meta;
