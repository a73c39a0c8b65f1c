//! On-disk records of raidfs: the superblock, the metadata journal segment
//! header and records, and the checkpoint. Byte diagrams live in
//! `docs/FORMAT.md` and are repeated beside each encoder.
//!
//! # Compatibility rule (every record)
//!
//! Each record carries a `major.minor` version.
//! - A reader refuses a record whose **major** differs from its own: the
//!   layout changed incompatibly.
//! - A reader accepts any **minor** of its major. A newer minor may only
//!   append fields in space an older reader ignores (reserved bytes, or bytes
//!   after the fields it knows, still covered by the CRC); an older minor is
//!   read with the missing fields at their documented defaults.
//!
//! All integers are little-endian; every record ends (or, for journal
//! records, begins) with a CRC32 (IEEE, as zlib) over its other bytes.

pub mod bytes;
pub mod checkpoint;
pub mod dump;
pub mod journal;
pub mod superblock;

pub use superblock::{MemberSlot, SlotState, Superblock};

/// Check a record's version against what this build reads.
pub(crate) fn check_version(
    what: &str,
    major: u16,
    minor: u16,
    want_major: u16,
) -> crate::Result<()> {
    if major != want_major {
        return Err(crate::ArrayError::Corrupt {
            what: what.to_string(),
            detail: format!(
                "unsupported version {major}.{minor} (this build reads {want_major}.x)"
            ),
        });
    }
    Ok(())
}
