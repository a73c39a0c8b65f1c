//! [`Meta`]: the namespace behind a lock, the journal that makes each
//! change durable, and checkpoints that bound the journal.
//!
//! Ordering rule: an operation is applied to the namespace and appended to
//! the journal under the namespace write lock, so journal order is apply
//! order; durability (`commit`) is waited for after the lock is released,
//! which is what lets concurrent committers share one `fdatasync`.

use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use super::checkpoint;
use super::journal::{FailureHook, Journal, META_DIR};
use super::namespace::{Effect, Namespace};
use super::ops::Op;
use crate::format::{checkpoint as cfmt, journal as jfmt};
use crate::member::Member;
use crate::{ArrayError, Result};

/// Age after which `relatime` moves the access time of a file read again.
pub const RELATIME_AGE_NS: i64 = 24 * 3600 * 1_000_000_000;

/// Default journal size after which a checkpoint is taken.
pub const DEFAULT_CHECKPOINT_BYTES: u64 = 64 << 20;

/// The metadata store of an assembled array.
pub struct Meta {
    ns: RwLock<Namespace>,
    journal: Journal,
    array_uuid: [u8; 16],
    checkpoint_lock: Mutex<()>,
    checkpoint_bytes: u64,
    on_failure: FailureHook,
}

/// Write checkpoint `seq` to every member in parallel and remove the files
/// it makes obsolete. Returns the members that failed. A full member for
/// which `may_skip` holds (its journal already has everything up to `seq`)
/// keeps its journal instead.
fn write_checkpoint(
    members: &[(usize, Arc<dyn Member>)],
    bytes: &[u8],
    seq: u64,
    on_failure: &FailureHook,
    may_skip: &dyn Fn(usize) -> bool,
) -> Vec<usize> {
    let path = format!("{META_DIR}/{}", cfmt::file_name(seq));
    // On the I/O pool: a checkpoint spawns no threads of its own.
    let results: Vec<(usize, std::io::Result<()>)> =
        crate::data::pool::map(members.iter(), |(i, m)| {
            let r = m.write_atomic(&path, bytes).and_then(|()| prune(&**m, seq));
            (*i, r)
        });
    let mut failed = Vec::new();
    for (i, r) in results {
        match r {
            // Only a new checkpoint, on a member whose journal holds
            // everything since its last one: that journal stays.
            Err(e) if may_skip(i) && crate::member::reserve::is_full(&e) => {
                tracing::warn!(
                    member = i,
                    "member full: metadata checkpoint skipped, its journal keeps everything"
                );
                continue;
            }
            Err(e) => {
                tracing::error!(member = i, error = %e, "checkpoint write failed");
                on_failure(i, format!("checkpoint write: {e}"));
                failed.push(i);
            }
            Ok(()) => {}
        }
    }
    failed
}

/// Remove journal segments and checkpoints made obsolete by checkpoint `seq`.
fn prune(m: &dyn Member, seq: u64) -> std::io::Result<()> {
    for name in m.list(META_DIR)? {
        let old = jfmt::parse_segment_name(&name).is_some_and(|f| f <= seq)
            || cfmt::parse_file_name(&name).is_some_and(|c| c < seq)
            || name.ends_with(".tmp");
        if old {
            m.remove(&format!("{META_DIR}/{name}"))?;
        }
    }
    Ok(())
}

/// Encode a whole checkpoint file for `ns` at `seq`.
fn checkpoint_bytes(uuid: &[u8; 16], ns: &Namespace, seq: u64) -> Vec<u8> {
    let (payload, inodes) = checkpoint::encode(ns);
    cfmt::encode(
        &cfmt::CheckpointHeader {
            array_uuid: *uuid,
            seq,
            inodes,
        },
        &payload,
    )
}

impl Meta {
    /// Write the initial metadata of a new array (an empty root at sequence
    /// 0) to every member.
    pub fn format(
        array_uuid: [u8; 16],
        members: &[(usize, Arc<dyn Member>)],
        ns: &Namespace,
    ) -> Result<()> {
        let bytes = checkpoint_bytes(&array_uuid, ns, 0);
        let path = format!("{META_DIR}/{}", cfmt::file_name(0));
        for (i, m) in members {
            m.write_atomic(&path, &bytes)
                .map_err(|e| ArrayError::MemberIo {
                    member: *i,
                    path: m.describe(),
                    context: "write initial checkpoint".into(),
                    source: e,
                })?;
        }
        Ok(())
    }

    /// Take over a loaded namespace at sequence `head`. With `checkpoint`,
    /// first write it as a checkpoint to every member (this is how lagging
    /// members catch up and torn journal tails are retired); the journal
    /// then continues in a new segment after `head`. A full member in
    /// `current` (its journal holds every record up to `head`, untorn)
    /// keeps its journal when the checkpoint does not fit: a full array
    /// with a large namespace must still assemble after a clean stop.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        array_uuid: [u8; 16],
        ns: Namespace,
        head: u64,
        members: &[(usize, Arc<dyn Member>)],
        checkpoint: bool,
        current: &[usize],
        checkpoint_after: u64,
        on_failure: FailureHook,
    ) -> Result<Self> {
        let mut live: Vec<(usize, Arc<dyn Member>)> = members.to_vec();
        if checkpoint {
            let bytes = checkpoint_bytes(&array_uuid, &ns, head);
            let may_skip = |i: usize| current.contains(&i);
            let failed = write_checkpoint(&live, &bytes, head, &on_failure, &may_skip);
            live.retain(|(i, _)| !failed.contains(i));
            if live.is_empty() {
                return Err(ArrayError::ArrayFailed(
                    "no member accepted the metadata checkpoint".into(),
                ));
            }
        }
        let journal = Journal::start(array_uuid, &live, head + 1, on_failure.clone())?;
        Ok(Meta {
            ns: RwLock::new(ns),
            journal,
            array_uuid,
            checkpoint_lock: Mutex::new(()),
            checkpoint_bytes: checkpoint_after,
            on_failure,
        })
    }

    /// Take over a loaded namespace without writing anything: no
    /// checkpoint, no journal segment (a read-only array).
    pub fn open_read_only(
        array_uuid: [u8; 16],
        ns: Namespace,
        head: u64,
        on_failure: FailureHook,
    ) -> Self {
        Meta {
            ns: RwLock::new(ns),
            journal: Journal::detached(array_uuid, head + 1, on_failure.clone()),
            array_uuid,
            checkpoint_lock: Mutex::new(()),
            checkpoint_bytes: u64::MAX,
            on_failure,
        }
    }

    /// Read access to the namespace.
    pub fn read(&self) -> RwLockReadGuard<'_, Namespace> {
        self.ns.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Apply an operation and queue it in the journal; returns its sequence.
    /// Not durable until [`Meta::commit`].
    pub fn apply(&self, op: &Op) -> Result<(u64, Effect)> {
        let payload = postcard::to_allocvec(op)
            .map_err(|e| ArrayError::Invalid(format!("cannot encode metadata operation: {e}")))?;
        let mut ns = self.ns.write().unwrap_or_else(|p| p.into_inner());
        let eff = ns.apply(op)?;
        let seq = self.journal.append(&payload);
        Ok((seq, eff))
    }

    /// Like [`Meta::apply`], but the operation is built from the current
    /// namespace under the same lock (e.g. to allocate an inode number or
    /// to see a size that no other writer can change in between).
    pub fn apply_with<T>(
        &self,
        build: impl FnOnce(&mut Namespace) -> Result<(Op, T)>,
    ) -> Result<(u64, Effect, T)> {
        let mut ns = self.ns.write().unwrap_or_else(|p| p.into_inner());
        let (op, t) = build(&mut ns)?;
        let payload = postcard::to_allocvec(&op)
            .map_err(|e| ArrayError::Invalid(format!("cannot encode metadata operation: {e}")))?;
        let eff = ns.apply(&op)?;
        let seq = self.journal.append(&payload);
        Ok((seq, eff, t))
    }

    /// Record a read of `ino` at `now` (nanoseconds) the way Linux's
    /// `relatime` does: the access time moves only when it is not newer
    /// than the modification or change time, or is a day old, so that
    /// "read since last written" stays answerable while a file read over
    /// and over costs no metadata traffic. The change is journaled like any
    /// attribute change (not committed here) and leaves `ctime` alone.
    /// With `strict` (`strictatime`) every read moves it.
    /// Returns whether the access time moved.
    pub fn relatime(&self, ino: u64, now: i64, strict: bool) -> Result<bool> {
        let stale = |i: &super::inode::Inode| {
            strict
                || i.atime <= i.mtime
                || i.atime <= i.ctime
                || now.saturating_sub(i.atime) >= RELATIME_AGE_NS
        };
        if !stale(self.read().get(ino)?) {
            return Ok(false);
        }
        self.apply_with(|ns| {
            let ctime = ns.get(ino)?.ctime;
            let op = Op::SetAttr {
                ino,
                mode: None,
                uid: None,
                gid: None,
                size: None,
                atime: Some(now),
                mtime: None,
                ctime,
            };
            Ok((op, ()))
        })?;
        Ok(true)
    }

    /// Wait until record `seq` (and all before it) is durable.
    pub fn commit(&self, seq: u64) -> Result<()> {
        self.journal.commit(seq)
    }

    /// Make everything applied so far durable.
    pub fn flush(&self) -> Result<u64> {
        self.journal.flush()
    }

    /// Sequence of the last durable record.
    pub fn durable_seq(&self) -> u64 {
        self.journal.durable_seq()
    }

    /// Last applied sequence.
    pub fn seq(&self) -> u64 {
        self.journal.last_seq()
    }

    /// Journal batches written so far.
    pub fn journal_commits(&self) -> u64 {
        self.journal.commits()
    }

    /// Members still holding the metadata.
    pub fn live_members(&self) -> Vec<usize> {
        self.journal
            .live_members()
            .into_iter()
            .map(|(i, _)| i)
            .collect()
    }

    /// Stop writing metadata to a member that failed elsewhere.
    pub fn drop_member(&self, index: usize) {
        self.journal.drop_member(index);
    }

    /// Give a new member (a rebuild target) the whole metadata: a
    /// checkpoint of the current namespace, then every later record.
    pub fn add_member(&self, index: usize, member: &Arc<dyn Member>) -> Result<()> {
        let _one = self
            .checkpoint_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // The read lock keeps appends out until the member is in the journal.
        let ns = self.read();
        let seq = self.journal.flush()?;
        let bytes = checkpoint_bytes(&self.array_uuid, &ns, seq);
        let path = format!("{META_DIR}/{}", cfmt::file_name(seq));
        let io = |context: &str, e: std::io::Error| ArrayError::MemberIo {
            member: index,
            path: member.describe(),
            context: context.into(),
            source: e,
        };
        member
            .write_atomic(&path, &bytes)
            .map_err(|e| io("write checkpoint", e))?;
        prune(&**member, seq).map_err(|e| io("remove old metadata", e))?;
        self.journal.add_member(index, member)
    }

    /// Take a checkpoint if the journal has grown past the threshold.
    pub fn maybe_checkpoint(&self) -> Result<()> {
        if self.journal.segment_bytes() < self.checkpoint_bytes {
            return Ok(());
        }
        // One checkpoint at a time; whoever finds one running goes on.
        let Ok(_one) = self.checkpoint_lock.try_lock() else {
            return Ok(());
        };
        if self.journal.segment_bytes() >= self.checkpoint_bytes {
            self.checkpoint_locked()?;
        }
        Ok(())
    }

    /// Snapshot the namespace to every member, start a new journal segment
    /// and remove the segments and checkpoints it replaces. Returns the
    /// sequence the checkpoint covers.
    pub fn checkpoint(&self) -> Result<u64> {
        let _one = self
            .checkpoint_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        self.checkpoint_locked()
    }

    fn checkpoint_locked(&self) -> Result<u64> {
        // Readers go on; appends (which need the write lock) wait while the
        // journal rotates and the snapshot is encoded.
        let (seq, bytes) = {
            let ns = self.read();
            let seq = self.journal.rotate()?;
            (seq, checkpoint_bytes(&self.array_uuid, &ns, seq))
        };
        let members = self.journal.live_members();
        let failed = write_checkpoint(&members, &bytes, seq, &self.on_failure, &|_| true);
        for i in &failed {
            self.journal.drop_member(*i);
        }
        if failed.len() == members.len() {
            return Err(ArrayError::ArrayFailed(
                "no member accepted the metadata checkpoint".into(),
            ));
        }
        tracing::debug!(seq, bytes = bytes.len(), "metadata checkpoint written");
        Ok(seq)
    }
}
