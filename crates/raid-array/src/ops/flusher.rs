//! Background write-back of the member a rebuild writes.
//!
//! A rebuild writes the new member's chunks into the page cache far faster
//! than a disk takes them, and the kernel only starts writing them back once
//! a large share of memory is dirty. Left alone, the rebuild's computation
//! and the disk's writes then run one after the other: all of the
//! computation, then one long `fdatasync`. The flusher asks for write-back
//! of the file being rebuilt every few tens of MiB on a thread of its own,
//! so the disk writes while the next chunks are computed, and the final
//! sync (before a checkpoint or the end of the rebuild) finds little left.
//!
//! It only makes data durable earlier; it decides nothing. Durability that
//! the rebuild relies on comes from the synchronous sync it makes before it
//! saves a checkpoint or marks the member active, so an error here is only
//! logged (the synchronous sync meets it again and fails the member).

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use tracing::{debug, warn};

use crate::data::shard::{shard_path, sums_path};
use crate::member::Member;

/// Bytes written to the new member between two write-back requests.
pub(crate) const FLUSH_EVERY: u64 = 32 << 20;

/// Sender side: requests are dropped while one is still running (the
/// running one, or the next, covers what they would have).
pub(crate) struct Flusher {
    tx: SyncSender<u64>,
}

impl Flusher {
    /// Start the flusher in `scope` for files on `member`.
    pub(crate) fn start<'s>(
        scope: &'s std::thread::Scope<'s, '_>,
        member: Arc<dyn Member>,
    ) -> Self {
        let (tx, rx) = sync_channel(1);
        scope.spawn(move || run(member.as_ref(), &rx));
        Flusher { tx }
    }

    /// Ask for write-back of `ino`'s shard; never blocks.
    pub(crate) fn request(&self, ino: u64) {
        match self.tx.try_send(ino) {
            Ok(()) | Err(TrySendError::Full(_)) => {}
            Err(TrySendError::Disconnected(_)) => debug!("rebuild flusher is gone"),
        }
    }
}

fn run(member: &dyn Member, rx: &Receiver<u64>) {
    // Ends when the Flusher (the sender) is dropped.
    while let Ok(ino) = rx.recv() {
        for path in [shard_path(ino), sums_path(ino)] {
            let r = member.open(&path).and_then(|f| f.sync_data());
            if let Err(e) = r {
                warn!(ino, path, error = %e, "background write-back of the rebuilt member failed");
            }
        }
    }
}
