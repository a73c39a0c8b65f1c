//! raidfs-sync: mirror a directory tree to an S3 bucket, keep its history with
//! S3 Versioning, restore it as it was at any time, and verify it.
//!
//! The crate sees only a directory tree, like any other program: it knows
//! nothing of the RAID engine. The bucket mirrors the tree (key = prefix +
//! relative path) so that any S3 tool can read it; POSIX attributes travel in
//! object metadata ([`object_meta`]). A local state file ([`state`]) records
//! what the bucket holds, so that a pass over an unchanged tree costs only
//! `stat` calls and no S3 request at all.
//!
//! Module map: [`keys`] maps paths to keys and refuses unsafe keys;
//! [`scan`] reads the local tree; [`reconcile`] plans and applies one pass;
//! [`dirmeta`] keeps directory attributes in one object;
//! [`upload`] moves bytes (multipart, resume, checksums); [`watch`] is the
//! daemon loop; [`history`] reads versions; [`restore`], [`verify`] and
//! [`lifecycle`] are the other commands; [`crypt`] and [`keysource`] are the
//! optional client-side encryption; [`metrics`] writes the Prometheus
//! textfile; [`record`] keeps the run record `raidfs status` reads.

pub mod crypt;
pub mod dirmeta;
pub mod error;
pub mod history;
pub mod keys;
pub mod keysource;
pub mod lifecycle;
pub mod metrics;
pub mod object_meta;
pub mod ratelimit;
pub mod reconcile;
pub mod record;
pub mod restore;
pub mod s3;
pub mod scan;
pub mod state;
pub mod upload;
pub mod verify;
pub mod watch;

pub use error::{Error, Result};
