//! Resync after an unclean shutdown: bring the redundancy of exactly the
//! stripes the write-intent log lists as dirty back in line with their
//! data, then clear them.
//!
//! Per dirty stripe ([`DataStore::resync_stripe`], which a write that ran
//! out of space on some member also uses): every block is verified; a block
//! that fails is rebuilt from the rest of its group if the result matches
//! that member's own checksum (otherwise the interrupted write left no
//! consistent version of it and it stays unreadable — EIO, never guessed
//! bytes); then parity or mirror copies are recomputed from the data, row
//! by row, leaving only the rows that hold such a block.
//! Finally the bytes past each file's end are cleared again
//! ([`DataStore::cut`]) and the file synced.

use std::collections::BTreeMap;

use tracing::{info, warn};

use crate::data::DataStore;
use crate::error::Result;
use crate::intent::REGION_SHIFT;

use super::sorted;

/// What a resync did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResyncReport {
    /// Dirty regions processed.
    pub regions: u64,
    /// Stripes checked.
    pub stripes: u64,
    /// Redundancy chunks rewritten.
    pub redundancy_fixed: u64,
    /// Data blocks rebuilt and rewritten.
    pub repaired: u64,
    /// Blocks left unreadable (no consistent version survived).
    pub unrecoverable: u64,
}

/// Resync the stripes the write-intent log marks dirty. `files` lists every
/// live file (inode, logical size); it bounds the stripes checked and is
/// walked whole when the log overflowed.
pub fn resync(
    store: &DataStore,
    files: impl IntoIterator<Item = (u64, u64)>,
) -> Result<ResyncReport> {
    let files: BTreeMap<u64, u64> = sorted(files).into_iter().collect();
    let rec = store.dirty_intent();
    let mut rep = ResyncReport::default();
    if rec.is_clean() {
        return Ok(rep);
    }
    let layout = &store.layout;
    // ino -> stripe ranges to check, and whether a range is a whole file.
    let mut work: BTreeMap<u64, Vec<(u64, u64, bool)>> = BTreeMap::new();
    if rec.overflow {
        for (&ino, &size) in &files {
            work.entry(ino)
                .or_default()
                .push((0, layout.stripes_for(size), true));
        }
    }
    for &(ino, region) in &rec.regions {
        if files.contains_key(&ino) {
            work.entry(ino).or_default().push((
                region << REGION_SHIFT,
                (region + 1) << REGION_SHIFT,
                false,
            ));
        }
        rep.regions += 1;
    }
    for (ino, ranges) in work {
        let size = files.get(&ino).copied().unwrap_or(0);
        let stripes = layout.stripes_for(size);
        let _g = store.lock_write(ino);
        for (a, z, whole) in ranges {
            let z = z.min(stripes);
            let mut st = a;
            while st < z {
                if whole {
                    // A whole file (the log overflowed): its holes on every
                    // readable member were never written (or were punched)
                    // and need no resync; a sparse file of a petabyte must
                    // not keep the array from coming up.
                    // Writable members too: a rebuild target may hold the
                    // only copy of an interrupted write's bytes.
                    match store.next_stored_stripe(ino, st, |_, s| s.writable()) {
                        Some(n) if n < z => st = n,
                        _ => break,
                    }
                }
                rep.stripes += 1;
                let done = store.resync_stripe(ino, st)?;
                rep.repaired += done.repaired;
                rep.redundancy_fixed += done.redundancy_fixed;
                rep.unrecoverable += done.unrecoverable;
                st += 1;
            }
        }
        if let Err(e) = store.cut(ino, size) {
            warn!(ino, error = %e, "resync: cannot clear bytes past the end");
        }
        store.sync_locked(ino)?;
    }
    for &(ino, region) in &rec.regions {
        store.intent.resolved(ino, region, &store.health);
    }
    store.intent.resolved_all(&store.health);
    store.persist_intent()?;
    info!(?rep, "resync finished");
    Ok(rep)
}
