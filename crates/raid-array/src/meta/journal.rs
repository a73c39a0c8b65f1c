//! The metadata journal writer, with group commit.
//!
//! Every live member holds its own copy of the journal. Appending a record
//! only encodes it into a shared in-memory batch (cheap, done while the
//! namespace lock is held, so record order = apply order). Committing makes
//! the batch durable: the first committer to arrive becomes the leader,
//! takes the whole batch, writes it to every member in parallel and
//! `fdatasync`s each; committers that arrive meanwhile wait and are served
//! by the next batch. So N concurrent committers cost about two rounds of
//! `fdatasync`, not N.
//!
//! A member whose journal write fails is reported through the failure
//! callback and dropped from the journal; a commit succeeds while at least
//! one member holds the batch durably.

use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::format::journal as fmt;
use crate::member::{Member, MemberFile};
use crate::{ArrayError, Result};

/// Directory of metadata files inside a member.
pub const META_DIR: &str = ".raidfs/meta";

/// Called with (member index, error description) when a member's journal
/// write fails.
pub type FailureHook = Arc<dyn Fn(usize, String) + Send + Sync>;

struct Segment {
    index: usize,
    member: Arc<dyn Member>,
    file: Arc<dyn MemberFile>,
    offset: u64,
}

struct State {
    pending: Vec<u8>,
    next_seq: u64,
    durable_seq: u64,
    writing: bool,
    failed: Option<String>,
    segment_first: u64,
    segment_bytes: u64,
    commits: u64,
}

/// Group-committing journal over the live members.
pub struct Journal {
    array_uuid: [u8; 16],
    state: Mutex<State>,
    cond: Condvar,
    segments: Mutex<Vec<Segment>>,
    on_failure: FailureHook,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn member_err(index: usize, member: &dyn Member, context: &str, source: io::Error) -> ArrayError {
    ArrayError::MemberIo {
        member: index,
        path: member.describe(),
        context: context.to_string(),
        source,
    }
}

/// Create (or truncate) segment `journal-<first_seq>` on a member, durably.
fn start_segment(
    index: usize,
    member: &Arc<dyn Member>,
    uuid: &[u8; 16],
    first_seq: u64,
) -> Result<Segment> {
    let path = format!("{META_DIR}/{}", fmt::segment_name(first_seq));
    let header = fmt::encode_header(uuid, first_seq);
    member
        .write_atomic(&path, &header)
        .map_err(|e| member_err(index, &**member, "create journal segment", e))?;
    let file = member
        .open(&path)
        .map_err(|e| member_err(index, &**member, "open journal segment", e))?;
    Ok(Segment {
        index,
        member: member.clone(),
        file,
        offset: header.len() as u64,
    })
}

impl Journal {
    /// Start a fresh segment whose first record will be `next_seq` on every
    /// given member. Members that fail are reported and left out; at least
    /// one must succeed.
    pub fn start(
        array_uuid: [u8; 16],
        members: &[(usize, Arc<dyn Member>)],
        next_seq: u64,
        on_failure: FailureHook,
    ) -> Result<Self> {
        let mut segments = Vec::new();
        let mut last_err = None;
        for (i, m) in members {
            match start_segment(*i, m, &array_uuid, next_seq) {
                Ok(s) => segments.push(s),
                Err(e) => {
                    on_failure(*i, e.to_string());
                    last_err = Some(e);
                }
            }
        }
        if segments.is_empty() {
            return Err(last_err.unwrap_or_else(|| {
                ArrayError::ArrayFailed("no member to hold the journal".into())
            }));
        }
        Ok(Journal {
            array_uuid,
            state: Mutex::new(State {
                pending: Vec::new(),
                next_seq,
                durable_seq: next_seq - 1,
                writing: false,
                failed: None,
                segment_first: next_seq,
                segment_bytes: 0,
                commits: 0,
            }),
            cond: Condvar::new(),
            segments: Mutex::new(segments),
            on_failure,
        })
    }

    /// A journal that writes nowhere, for a read-only array: nothing may be
    /// appended to it (a commit of an appended record fails).
    pub fn detached(array_uuid: [u8; 16], next_seq: u64, on_failure: FailureHook) -> Self {
        Journal {
            array_uuid,
            state: Mutex::new(State {
                pending: Vec::new(),
                next_seq,
                durable_seq: next_seq - 1,
                writing: false,
                failed: None,
                segment_first: next_seq,
                segment_bytes: 0,
                commits: 0,
            }),
            cond: Condvar::new(),
            segments: Mutex::new(Vec::new()),
            on_failure,
        }
    }

    /// Queue one record; returns its sequence number. Call while holding the
    /// lock that orders the operations.
    pub fn append(&self, payload: &[u8]) -> u64 {
        let mut st = lock(&self.state);
        let seq = st.next_seq;
        st.next_seq += 1;
        fmt::encode_record(&mut st.pending, seq, payload);
        seq
    }

    /// Sequence of the last appended record.
    pub fn last_seq(&self) -> u64 {
        lock(&self.state).next_seq - 1
    }

    /// Sequence of the last durable record.
    pub fn durable_seq(&self) -> u64 {
        lock(&self.state).durable_seq
    }

    /// Bytes written to the current segment (drives checkpoints).
    pub fn segment_bytes(&self) -> u64 {
        let st = lock(&self.state);
        st.segment_bytes + st.pending.len() as u64
    }

    /// First sequence of the current segment.
    pub fn segment_first(&self) -> u64 {
        lock(&self.state).segment_first
    }

    /// Number of batches written so far (each one append + fdatasync per member).
    pub fn commits(&self) -> u64 {
        lock(&self.state).commits
    }

    /// Indices of the members still holding the journal.
    pub fn live_members(&self) -> Vec<(usize, Arc<dyn Member>)> {
        lock(&self.segments)
            .iter()
            .map(|s| (s.index, s.member.clone()))
            .collect()
    }

    /// Start writing to another member (a rebuild target) from the next
    /// record on. The caller holds the lock that orders appends and has
    /// flushed, so the member's copy (a checkpoint at `last_seq`) plus this
    /// segment hold everything.
    pub fn add_member(&self, index: usize, member: &Arc<dyn Member>) -> Result<()> {
        let next = self.last_seq() + 1;
        let mut segs = lock(&self.segments);
        segs.retain(|s| s.index != index);
        let seg = start_segment(index, member, &self.array_uuid, next)?;
        segs.push(seg);
        Ok(())
    }

    /// Stop writing to a member (it failed elsewhere).
    pub fn drop_member(&self, index: usize) {
        lock(&self.segments).retain(|s| s.index != index);
    }

    /// Wait until record `seq` is durable on the live members.
    pub fn commit(&self, seq: u64) -> Result<()> {
        let mut st = lock(&self.state);
        loop {
            if st.durable_seq >= seq {
                return Ok(());
            }
            if let Some(f) = &st.failed {
                return Err(ArrayError::ArrayFailed(f.clone()));
            }
            if st.writing {
                st = self.cond.wait(st).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            // Become the leader for everything queued so far.
            let batch = std::mem::take(&mut st.pending);
            let upto = st.next_seq - 1;
            st.writing = true;
            drop(st);
            let res = self.write_batch(&batch);
            st = lock(&self.state);
            st.writing = false;
            match res {
                Ok(()) => {
                    st.durable_seq = upto;
                    st.segment_bytes += batch.len() as u64;
                    st.commits += 1;
                }
                Err(e) => st.failed = Some(e.to_string()),
            }
            self.cond.notify_all();
        }
    }

    /// Make everything appended so far durable.
    pub fn flush(&self) -> Result<u64> {
        let seq = self.last_seq();
        self.commit(seq)?;
        Ok(seq)
    }

    fn write_batch(&self, batch: &[u8]) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut segs = lock(&self.segments);
        let results: Vec<io::Result<()>> = if segs.len() == 1 {
            let s = &segs[0];
            vec![
                s.file
                    .write_at(s.offset, batch)
                    .and_then(|()| s.file.sync_data()),
            ]
        } else {
            // On the I/O pool: a commit spawns no threads of its own.
            crate::data::pool::map(segs.iter(), |s| {
                s.file
                    .write_at(s.offset, batch)
                    .and_then(|()| s.file.sync_data())
            })
        };
        let mut kept = Vec::with_capacity(segs.len());
        let mut last_err = None;
        for (s, r) in segs.drain(..).zip(results) {
            match r {
                Ok(()) => kept.push(Segment {
                    offset: s.offset + batch.len() as u64,
                    ..s
                }),
                Err(e) => {
                    let err = member_err(s.index, &*s.member, "journal append", e);
                    tracing::error!(member = s.index, error = %err, "journal write failed; member dropped");
                    (self.on_failure)(s.index, err.to_string());
                    last_err = Some(err);
                }
            }
        }
        *segs = kept;
        if segs.is_empty() {
            return Err(last_err
                .unwrap_or_else(|| ArrayError::ArrayFailed("no member holds the journal".into())));
        }
        Ok(())
    }

    /// Flush, then switch every member to a new segment starting after the
    /// last record. The caller must hold the lock that orders appends, so
    /// that nothing is appended in between. Returns the sequence covered by
    /// the old segments (a checkpoint at that sequence makes them garbage).
    pub fn rotate(&self) -> Result<u64> {
        let upto = self.flush()?;
        let mut segs = lock(&self.segments);
        let old: Vec<(usize, Arc<dyn Member>)> =
            segs.iter().map(|s| (s.index, s.member.clone())).collect();
        let mut fresh = Vec::with_capacity(old.len());
        for (i, m) in &old {
            match start_segment(*i, m, &self.array_uuid, upto + 1) {
                Ok(s) => fresh.push(s),
                Err(e) => {
                    tracing::error!(member = i, error = %e, "cannot start journal segment; member dropped");
                    (self.on_failure)(*i, e.to_string());
                }
            }
        }
        if fresh.is_empty() {
            return Err(ArrayError::ArrayFailed(
                "no member can hold the journal".into(),
            ));
        }
        *segs = fresh;
        let mut st = lock(&self.state);
        st.segment_first = upto + 1;
        st.segment_bytes = 0;
        Ok(upto)
    }
}
