//! The background rebuild worker an [`Array`] owns.
//!
//! One rebuild runs at a time. The worker thread is started on demand
//! ([`kick`]) when there is something to do:
//!
//! - a slot left in state rebuilding by the last run (resumed from its
//!   checkpoint; assemble kicks, a read-only array never does),
//! - a failed or missing slot while a hot spare is attached (the spare takes
//!   the slot: metadata copied, state rebuilding, rebuild, then active),
//! - [`Array::start_replace`] onto a new directory, or back onto the
//!   directory of the member that left the slot: a *re-add*, which keeps
//!   that member's data and rebuilds only the files changed since it left
//!   ([`crate::stale`]).
//!
//! After each rebuild the thread looks for the next job and ends when there
//! is none. [`stop`] (from `close` and drop) asks it to stop: the rebuild
//! saves its checkpoint at its next step and the thread ends; the next
//! assemble resumes from there.
//!
//! Lock order: the worker lock comes before every other lock of the array;
//! preparing a job (which writes metadata and superblocks) holds it, so two
//! jobs never prepare the same slot and the health listener never drops the
//! journal of a slot a spare has just taken.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;

use super::{Array, Inner, Spare, lock};
use crate::assemble;
use crate::create::{check_empty, check_empty_except};
use crate::format::superblock::{self, Superblock};
use crate::health::MemberState;
use crate::member::{DirMember, Member};
use crate::ops::{self, NoProgress, Progress, RebuildOptions, RebuildReport};
use crate::stale::StaleSet;
use crate::{ArrayError, Result};

use std::os::unix::fs::MetadataExt;

type Outcome = Option<Result<RebuildReport>>;

/// The worker's bookkeeping (behind `Inner::worker`).
#[derive(Default)]
pub(super) struct Worker {
    handle: Option<JoinHandle<Outcome>>,
    /// A rebuild is running, in the worker thread or in a synchronous
    /// [`Array::replace`]; nothing else starts meanwhile.
    busy: bool,
    /// The outcome of a worker run that ended before anyone waited for it.
    finished: Outcome,
}

/// One rebuild to run: the member is already in its slot, in state
/// rebuilding, and recorded so in the superblocks.
struct Job {
    slot: usize,
    member: Arc<dyn Member>,
    opts: RebuildOptions,
    /// A member coming back with its old data (`None`: an empty one).
    readd: Option<ReAdd>,
}

/// A member back in its slot with the data it had when it left.
struct ReAdd {
    /// The files changed since it left; `None` if no longer known (then
    /// every file is rebuilt, over the old data).
    changed: Option<StaleSet>,
}

/// What a validated replace puts into the slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// An empty directory (or a former member's, emptied): a full rebuild.
    Fresh,
    /// The directory of an interrupted rebuild of this slot: resumed.
    Resume,
    /// The directory of the member that left this slot in sync, kept: only
    /// the files changed since it left are rebuilt.
    ReAdd,
}

/// How [`Array::start_replace`] goes about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplaceKind {
    /// A full rebuild onto an empty directory.
    Rebuild,
    /// An interrupted rebuild continues.
    Resume,
    /// The member that left comes back: only what changed is rebuilt.
    ReAdd,
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn busy_error() -> ArrayError {
    ArrayError::Invalid(
        "a rebuild is already running; wait for it to finish (status shows its progress)".into(),
    )
}

/// Join a finished or finishing worker thread.
fn join(h: JoinHandle<Outcome>) -> Outcome {
    h.join().unwrap_or_else(|_| {
        Some(Err(ArrayError::ArrayFailed(
            "the rebuild worker panicked".into(),
        )))
    })
}

/// Start the worker if it is idle and there is work: a rebuild to resume,
/// or a failed slot and a spare.
pub(super) fn kick(inner: &Arc<Inner>) {
    if inner.read_only || inner.stopping.load(Ordering::SeqCst) {
        return;
    }
    let mut w = lock(&inner.worker);
    if w.busy {
        return;
    }
    if let Some(h) = w.handle.take()
        && let Some(r) = join(h)
    {
        w.finished = Some(r);
    }
    if let Some(job) = next_job(inner, &[]) {
        spawn(inner, &mut w, job);
    }
}

/// Ask the worker to stop and wait for it (its rebuild saves a checkpoint).
/// Nothing starts afterwards.
pub(super) fn stop(inner: &Arc<Inner>) {
    inner.stopping.store(true, Ordering::SeqCst);
    let h = lock(&inner.worker).handle.take();
    if let Some(h) = h {
        tracing::info!("stopping the rebuild worker");
        if let Some(Err(e)) = join(h) {
            tracing::warn!(error = %e, "rebuild ended with an error");
        }
    }
}

fn spawn(inner: &Arc<Inner>, w: &mut Worker, job: Job) {
    // Shown in status from now on, not only once the thread runs.
    announce(inner, &job, &inner.striped_files());
    let arc = inner.clone();
    let spawned = std::thread::Builder::new()
        .name("raidfs-rebuild".into())
        .spawn(move || run(arc, job));
    match spawned {
        Ok(h) => {
            w.busy = true;
            w.handle = Some(h);
        }
        Err(e) => {
            *lock(&inner.rebuild_status) = None;
            tracing::error!(error = %e, "cannot start the rebuild worker");
        }
    }
}

/// Clears `busy` if the worker thread panics.
struct PanicGuard<'a>(&'a Inner);

impl Drop for PanicGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            lock(&self.0.worker).busy = false;
        }
    }
}

/// The worker thread: run jobs until there is none left.
fn run(inner: Arc<Inner>, first: Job) -> Outcome {
    let _guard = PanicGuard(&inner);
    let mut job = first;
    // Members whose rebuild failed: not retried in this run. By member, not
    // by slot: when a spare fails during its rebuild, the next spare takes
    // the slot now (the failure's own event found the worker busy).
    let mut skip = Vec::new();
    loop {
        let r = run_rebuild(&inner, &job, &NoProgress);
        if let Err(e) = &r {
            tracing::error!(slot = job.slot, error = %e, "rebuild failed");
            skip.push(member_uuid(&inner, job.slot));
        }
        let mut w = lock(&inner.worker);
        match next_job(&inner, &skip) {
            Some(j) => job = j,
            None => {
                w.busy = false;
                return Some(r);
            }
        }
    }
}

/// Progress of a rebuild: shown in `status().rebuild`, stopped by close or
/// when its target fails.
struct StatusProgress<'a> {
    inner: &'a Inner,
    slot: usize,
    outer: &'a dyn Progress,
}

impl Progress for StatusProgress<'_> {
    fn update(&self, done: u64, total: u64) {
        if let Some(s) = lock(&self.inner.rebuild_status).as_mut() {
            s.done_bytes = done;
            s.total_bytes = total;
        }
        self.outer.update(done, total);
    }

    fn should_stop(&self) -> bool {
        self.inner.stopping.load(Ordering::SeqCst)
            || !self.inner.health.state(self.slot).writable()
            || self.outer.should_stop()
    }
}

/// Show `job` in `status().rebuild`; returns the bytes it walks.
fn announce(inner: &Inner, job: &Job, files: &[(u64, u64)]) -> u64 {
    let total: u64 = files.iter().map(|f| f.1).sum();
    let done = match inner.health.state(job.slot) {
        MemberState::Rebuilding { done_bytes } if job.opts.resume => done_bytes,
        _ => 0,
    };
    let mut g = lock(&inner.rebuild_status);
    // The same job announced again (by its thread): keep its start time.
    let started_unix = match g.as_ref() {
        Some(s) if s.slot == job.slot => s.started_unix,
        _ => now_unix(),
    };
    *g = Some(super::RebuildStatus {
        slot: job.slot,
        done_bytes: done,
        total_bytes: total,
        started_unix,
    });
    total
}

/// Run one rebuild and record its outcome in the superblocks.
fn run_rebuild(inner: &Inner, job: &Job, outer: &dyn Progress) -> Result<RebuildReport> {
    let slot = job.slot;
    let mut files = inner.striped_files();
    let (mut kept, mut removed) = (0, 0);
    if let Some(readd) = &job.readd {
        removed = remove_freed_shards(inner, slot, job.member.as_ref());
        if let Some(changed) = &readd.changed {
            let all = files.len();
            files.retain(|&(ino, _)| changed.contains(ino));
            kept = (all - files.len()) as u64;
        }
        tracing::info!(
            slot,
            rebuilt = files.len(),
            kept,
            removed,
            "a member back with its old data: rebuilding the files changed since it left"
        );
    }
    let total = announce(inner, job, &files);
    tracing::info!(
        slot,
        total_bytes = total,
        resume = job.opts.resume,
        member = %job.member.describe(),
        "rebuild starting"
    );
    let progress = StatusProgress { inner, slot, outer };
    let target = ops::RebuildTarget {
        member_uuid: Some(member_uuid(inner, slot)),
        files: Some(&Namespace(inner)),
    };
    let r = ops::rebuild_onto(
        &inner.data,
        slot,
        job.member.clone(),
        files,
        job.opts,
        &progress,
        &target,
    );
    if let Ok(rep) = &r
        && let Some(o) = lock(&inner.last_rebuilds).get_mut(slot)
    {
        *o = Some(super::RebuildOutcome {
            finished_unix: now_unix(),
            complete: rep.complete,
            readd: job.readd.as_ref().is_some_and(|r| r.changed.is_some()),
            bytes: rep.bytes,
            unrecoverable: rep.unrecoverable,
        });
    }
    *lock(&inner.rebuild_status) = None;
    // The end state (active, or rebuilding with its progress) on record.
    let written = inner.write_sbs();
    let mut rep = r?;
    written?;
    rep.readd = job.readd.as_ref().is_some_and(|r| r.changed.is_some());
    rep.kept_files = kept;
    rep.removed_files = removed;
    tracing::info!(
        slot,
        complete = rep.complete,
        bytes = rep.bytes,
        unrecoverable = rep.unrecoverable,
        "rebuild ended"
    );
    Ok(rep)
}

/// What the namespace says of the files a rebuild walks.
struct Namespace<'a>(&'a Inner);

impl ops::rebuild::FileCheck for Namespace<'_> {
    fn striped(&self, ino: u64) -> bool {
        self.0.striped_size(ino).is_some()
    }

    fn settle(&self) -> Result<()> {
        self.0.meta.flush().map(drop)
    }
}

/// The UUID of the member that `slot` holds (or is being rebuilt onto).
fn member_uuid(inner: &Inner, slot: usize) -> [u8; 16] {
    lock(&inner.sb)
        .template
        .members
        .get(slot)
        .map_or([0; 16], |m| m.uuid)
}

/// The next thing to rebuild (worker lock held): a slot to resume, else a
/// failed slot a spare takes over. A rebuild onto a member in `skip` (its
/// rebuild failed in this run) is not resumed, nor one that the members
/// readable now cannot rebuild (it waits for a failed one to come back).
fn next_job(inner: &Inner, skip: &[[u8; 16]]) -> Option<Job> {
    if inner.read_only || inner.stopping.load(Ordering::SeqCst) {
        return None;
    }
    let states = inner.health.states();
    let members = inner.members();
    for (k, st) in states.iter().enumerate() {
        if let (MemberState::Rebuilding { .. }, Some(m)) = (st, &members[k])
            && !skip.contains(&member_uuid(inner, k))
            && inner.data.layout.can_rebuild(&inner.health, k)
        {
            return Some(Job {
                slot: k,
                member: m.clone(),
                opts: RebuildOptions {
                    resume: true,
                    ..inner.auto_rebuild
                },
                readd: None,
            });
        }
    }
    let unavailable: Vec<usize> = (0..states.len())
        .filter(|&k| !states[k].readable())
        .collect();
    if !inner.geometry.survives(&unavailable) {
        // Nothing to rebuild from.
        return None;
    }
    for (k, st) in states.iter().enumerate() {
        if !matches!(st, MemberState::Failed | MemberState::Missing) {
            continue;
        }
        loop {
            let spare = {
                let mut spares = lock(&inner.spares);
                if spares.is_empty() {
                    return None;
                }
                spares.remove(0)
            };
            match take_over(inner, k, &spare) {
                Ok(()) => {
                    return Some(Job {
                        slot: k,
                        member: spare.member,
                        opts: RebuildOptions {
                            resume: false,
                            ..inner.auto_rebuild
                        },
                        readd: None,
                    });
                }
                Err(e) => {
                    tracing::error!(slot = k, spare = %spare.path.display(), error = %e,
                        "spare cannot take over; it is dropped");
                    lock(&inner.sb)
                        .template
                        .spares
                        .retain(|s| s.uuid != spare.uuid);
                    if let Err(e) = inner.write_sbs() {
                        tracing::error!(error = %e, "cannot record the dropped spare");
                    }
                }
            }
        }
    }
    None
}

/// Put `spare` (already out of the spare list) into failed slot `slot`:
/// metadata first, then the superblocks saying rebuilding (spare record
/// gone), as a replace does.
fn take_over(inner: &Inner, slot: usize, spare: &Spare) -> Result<()> {
    tracing::warn!(slot, spare = %spare.path.display(), "hot spare taking over a failed member");
    inner.meta.add_member(slot, &spare.member)?;
    {
        let mut g = lock(&inner.sb);
        g.template.members[slot].uuid = spare.uuid;
        g.template.spares.retain(|s| s.uuid != spare.uuid);
    }
    // The failed disk is let go (the spare's lock moves with its handle).
    if let Some(old) = &inner.members()[slot] {
        old.unlock();
    }
    inner.set_member(slot, Some(spare.member.clone()));
    inner.data.set_member(slot, Some(spare.member.clone()));
    inner
        .health
        .set_state(slot, MemberState::Rebuilding { done_bytes: 0 });
    inner.data.take_stale(slot)?;
    inner.write_sbs()
}

impl Array {
    /// Put the empty directory `path` in place of failed or missing member
    /// `slot` and rebuild its chunks onto it, online, on the calling
    /// thread. Calling it again with the same directory resumes an
    /// interrupted rebuild.
    ///
    /// Order of writes, so that a crash at any point leaves a consistent
    /// array: the new member first receives the metadata (checkpoint and
    /// journal), then its superblock (state rebuilding: never read from,
    /// not counted as redundancy), then its chunks; only a complete rebuild
    /// marks it active in every superblock.
    pub fn replace(
        &self,
        slot: usize,
        path: &Path,
        opts: RebuildOptions,
        progress: &dyn Progress,
    ) -> Result<RebuildReport> {
        self.writable()?;
        let i = &self.inner;
        // Refused before validation, which may discard a former member's
        // old contents.
        if lock(&i.worker).busy {
            return Err(busy_error());
        }
        let (member, mode) = validate_replace(i, slot, path, opts.full, false)?;
        let readd = {
            let mut w = lock(&i.worker);
            if w.busy || !still_as_validated(i, slot, mode) {
                return Err(busy_error());
            }
            let readd = prepare_replace(i, slot, &member, mode)?;
            w.busy = true;
            readd
        };
        let job = Job {
            slot,
            member,
            opts: RebuildOptions {
                resume: mode == Mode::Resume,
                ..opts
            },
            readd,
        };
        let r = run_rebuild(i, &job, progress);
        lock(&i.worker).busy = false;
        kick(i);
        r
    }

    /// Validate now (errors are returned at once), then rebuild `slot` onto
    /// the empty directory `path` (or re-add the member that left it) in the
    /// background worker; progress shows in [`Array::status`]. Errors if a
    /// rebuild is already running.
    pub fn start_replace(
        &self,
        slot: usize,
        path: &Path,
        opts: RebuildOptions,
    ) -> Result<ReplaceKind> {
        self.start(slot, path, opts, false)
    }

    /// [`Array::start_replace`] only if `path` holds the member that left
    /// `slot` and it can be re-added (only the files changed since it left
    /// rebuilt); otherwise an error, with the directory left untouched. The
    /// mount's `readd` option calls it for a member that is back
    /// ([`Array::returned_member`]).
    pub fn start_readd(&self, slot: usize, path: &Path, opts: RebuildOptions) -> Result<()> {
        self.start(slot, path, opts, true).map(drop)
    }

    /// Whether the member that left `slot` may come back by a re-add: the
    /// slot is failed or missing and the array knows every file changed
    /// since (held in memory; nothing is read).
    pub fn may_readd(&self, slot: usize) -> bool {
        let i = &self.inner;
        slot < i.geometry.members()
            && matches!(
                i.health.state(slot),
                MemberState::Failed | MemberState::Missing
            )
            && i.data.can_readd(slot)
    }

    /// The first of `candidates` that holds the member which left `slot`,
    /// when [`Array::may_readd`] (its superblock is read; the rest is
    /// checked by [`Array::start_readd`]). With `remounted`, a directory on
    /// the very mount the member failed on does not count, only one on a
    /// mount made since: a disk that failed with I/O errors and never went
    /// away is not taken back by itself, one unplugged and mounted again
    /// is, and one detached since (`raidfs remove`) is not at all.
    pub fn returned_member(
        &self,
        slot: usize,
        candidates: &[PathBuf],
        remounted: bool,
    ) -> Option<PathBuf> {
        if !self.may_readd(slot) {
            return None;
        }
        let i = &self.inner;
        let ours = lock(&i.sb).template.clone();
        let want = ours.members.get(slot)?.uuid;
        let old_mount = match (remounted, &i.members()[slot]) {
            (false, _) => None,
            (true, Some(m)) => Some(m.mount_id()),
            // Detached since it left (`raidfs remove`): not by itself.
            (true, None) => return None,
        };
        candidates
            .iter()
            .find(|d| {
                let holds = assemble::read_superblock(d).is_ok_and(|sb| {
                    sb.array_uuid == ours.array_uuid
                        && sb.member_index as usize == slot
                        && sb.member_uuid == want
                });
                holds
                    && match &old_mount {
                        None => true,
                        Some(Ok(Some(old))) => {
                            matches!(crate::member::dir::mount_id(d), Ok(Some(now)) if now != *old)
                        }
                        // Mounts cannot be told apart: not by itself.
                        Some(_) => false,
                    }
            })
            .cloned()
    }

    fn start(
        &self,
        slot: usize,
        path: &Path,
        opts: RebuildOptions,
        readd_only: bool,
    ) -> Result<ReplaceKind> {
        self.writable()?;
        let i = &self.inner;
        if i.stopping.load(Ordering::SeqCst) {
            return Err(ArrayError::Invalid("the array is closing".into()));
        }
        if lock(&i.worker).busy {
            return Err(busy_error());
        }
        // Outside the worker lock: taking back a former member removes its
        // old contents, which may take long, and the failure listener
        // needs that lock meanwhile.
        let (member, mode) = validate_replace(i, slot, path, opts.full, readd_only)?;
        let mut w = lock(&i.worker);
        if w.busy || !still_as_validated(i, slot, mode) {
            return Err(busy_error());
        }
        if let Some(h) = w.handle.take()
            && let Some(r) = join(h)
        {
            w.finished = Some(r);
        }
        let readd = prepare_replace(i, slot, &member, mode)?;
        let kind = match (mode, &readd) {
            (Mode::Resume, _) => ReplaceKind::Resume,
            (_, Some(ReAdd { changed: Some(_) })) => ReplaceKind::ReAdd,
            _ => ReplaceKind::Rebuild,
        };
        let job = Job {
            slot,
            member,
            opts: RebuildOptions {
                // Only the same directory continues a checkpoint: one left
                // by an abandoned rebuild of this slot must not skip files.
                resume: mode == Mode::Resume,
                ..opts
            },
            readd,
        };
        spawn(i, &mut w, job);
        if !w.busy {
            return Err(ArrayError::Invalid(
                "cannot start the rebuild worker thread".into(),
            ));
        }
        tracing::info!(slot, path = %path.display(), ?kind, "replace started in the background");
        Ok(kind)
    }

    /// Block until the background rebuild (if any) ends, and return how it
    /// ended; `None` if none was running or left an outcome to collect.
    pub fn wait_rebuild(&self) -> Option<Result<RebuildReport>> {
        // Work noticed but not yet started (a failure the health listener
        // has not handled yet) starts now, so it is waited for too.
        kick(&self.inner);
        let (h, old) = {
            let mut w = lock(&self.inner.worker);
            (w.handle.take(), w.finished.take())
        };
        h.and_then(join).or(old)
    }
}

/// Whether `slot` is still as [`validate_replace`] found it (a spare may
/// have taken it over since), checked again under the worker lock.
fn still_as_validated(i: &Inner, slot: usize, mode: Mode) -> bool {
    let st = i.health.state(slot);
    !st.readable() && matches!(st, MemberState::Rebuilding { .. }) == (mode == Mode::Resume)
}

/// Check a replace of `slot` by `path`; returns the opened member and what
/// it will be: a fresh member, the resumed target of an interrupted rebuild,
/// or (unless `full`) the member that left the slot, re-added. With
/// `readd_only`, anything but a re-add is refused before anything changes.
fn validate_replace(
    i: &Inner,
    slot: usize,
    path: &Path,
    full: bool,
    readd_only: bool,
) -> Result<(Arc<dyn Member>, Mode)> {
    let n = i.geometry.members();
    if slot >= n {
        return Err(ArrayError::Invalid(format!(
            "no member slot {slot} (the array has {n}: 0..{})",
            n - 1
        )));
    }
    let state = i.health.state(slot);
    if state.readable() {
        return Err(ArrayError::Invalid(format!(
            "member {slot} is active; only a failed or missing member is replaced \
             (fail it first to replace a working disk)"
        )));
    }
    let md = std::fs::metadata(path)
        .map_err(|e| ArrayError::Invalid(format!("{}: {e}", path.display())))?;
    if !md.is_dir() {
        return Err(ArrayError::Invalid(format!(
            "{}: not a directory",
            path.display()
        )));
    }
    // Refused before any lock is touched: nothing changes.
    if readd_only && (matches!(state, MemberState::Rebuilding { .. }) || !can_readd(i, slot, path)?)
    {
        return Err(ArrayError::Invalid(format!(
            "{} cannot be re-added to slot {slot} (not the member that left it in sync, failed \
             on purpose, or what changed since is not known); `raidfs replace` rebuilds it whole",
            path.display()
        )));
    }
    // The failed member's own directory, still open since it failed.
    let mut own = false;
    for (k, m) in i.members().iter().enumerate() {
        let Some(m) = m else { continue };
        let same = std::fs::metadata(m.describe())
            .is_ok_and(|o| o.dev() == md.dev() && o.ino() == md.ino());
        if same && k != slot {
            return Err(ArrayError::Invalid(format!(
                "{} is already member {k}",
                path.display()
            )));
        }
        own |= same;
    }
    for s in lock(&i.spares).iter() {
        let same =
            std::fs::metadata(&s.path).is_ok_and(|o| o.dev() == md.dev() && o.ino() == md.ino());
        if same {
            return Err(ArrayError::Invalid(format!(
                "{} is a spare of this array (a spare takes over a failed slot by itself)",
                path.display()
            )));
        }
    }
    let dir = DirMember::open(path)
        .map_err(|e| ArrayError::Invalid(format!("{}: {e}", path.display())))?;
    let member: Arc<dyn Member> = Arc::new(dir);
    let resuming = matches!(state, MemberState::Rebuilding { .. });
    if (resuming || own)
        && let Some(old) = &i.members()[slot]
    {
        // The same directory, opened at assembly: its lock moves to the new handle.
        old.unlock();
    }
    // Refused at once if another process holds it (another array's member).
    if !member
        .lock_exclusive(std::time::Duration::ZERO)
        .map_err(|e| ArrayError::Invalid(format!("{}: cannot lock: {e}", path.display())))?
    {
        return Err(crate::exclusive::busy(path));
    }
    if resuming {
        let sb = assemble::read_superblock(path)?;
        let ours = lock(&i.sb).template.clone();
        if sb.array_uuid != ours.array_uuid || sb.member_uuid != ours.members[slot].uuid {
            return Err(ArrayError::NotMember(format!(
                "{} is not the member being rebuilt in slot {slot}",
                path.display()
            )));
        }
        return Ok((member, Mode::Resume));
    }
    let has = member.exists(".raidfs").map_err(|e| ArrayError::MemberIo {
        member: slot,
        path: member.describe(),
        context: "check for .raidfs".into(),
        source: e,
    })?;
    if has && !full && can_readd(i, slot, path)? {
        return Ok((member, Mode::ReAdd));
    }
    if readd_only {
        // It could be re-added a moment ago; not now: left as it is.
        return Err(ArrayError::Invalid(format!(
            "{}: what changed since it left stopped being known; not re-added",
            path.display()
        )));
    }
    make_empty(i, "replacement", path, has)?;
    Ok((member, Mode::Fresh))
}

/// Whether `path` holds the member that left `slot` and may come back with
/// its data kept: the slot's own member (same member UUID, so no replace
/// began since), not used on its own since, nothing else in the directory,
/// and the array knows every file changed since it left (the slot is
/// covered, [`crate::stale`]).
fn can_readd(i: &Inner, slot: usize, path: &Path) -> Result<bool> {
    let Ok(sb) = assemble::read_superblock(path) else {
        return Ok(false);
    };
    let ours = lock(&i.sb).template.clone();
    let own = sb.array_uuid == ours.array_uuid
        && sb.member_index as usize == slot
        && ours
            .members
            .get(slot)
            .is_some_and(|m| m.uuid == sb.member_uuid)
        && matches!(
            i.health.state(slot),
            MemberState::Failed | MemberState::Missing
        );
    if !own || used_on_its_own(i, &sb).is_some() {
        return Ok(false);
    }
    if let Some(k) = other_table(&ours, &sb) {
        // A replace happened on one side only: here while it was out, or
        // there, in a history of its own (a copy assembled without this
        // one). Its blocks cannot be trusted to be this array's.
        tracing::info!(
            slot,
            other = k,
            path = %path.display(),
            "its table of members differs from the array's: rebuilt whole, not re-added"
        );
        return Ok(false);
    }
    if !i.data.can_readd(slot) {
        tracing::info!(
            slot,
            path = %path.display(),
            "the files changed since this member left are not known (or it was failed on \
             purpose): it cannot be re-added"
        );
        return Ok(false);
    }
    check_empty_except("member coming back", path, &[".raidfs"])?;
    Ok(true)
}

/// The first slot whose member `sb` (a former member's superblock) names
/// differently from the array's table.
fn other_table(ours: &Superblock, sb: &Superblock) -> Option<usize> {
    (0..ours.members.len().max(sb.members.len()))
        .find(|&k| ours.members.get(k).map(|m| m.uuid) != sb.members.get(k).map(|m| m.uuid))
}

/// The slot of a member that `sb` (a former member's superblock) records as
/// failed but that serves the array now: the former member was used on its
/// own since it left (split brain) and may hold changes the array lacks.
fn used_on_its_own(i: &Inner, sb: &Superblock) -> Option<usize> {
    let ours = lock(&i.sb).template.clone();
    sb.members.iter().position(|m| {
        m.state == superblock::SlotState::Failed
            && ours
                .members
                .iter()
                .enumerate()
                .any(|(j, o)| o.uuid == m.uuid && i.health.state(j).readable())
    })
}

/// Before a re-add: delete the member's shards of files deleted since it
/// left. Inode numbers are never reused, so a number the namespace no
/// longer holds (below its next number) never comes back, whatever writes
/// race with this. Files that exist but are no longer striped keep a
/// harmless old shard, emptied if they are striped again. Returns the
/// files removed; failures are logged (the space stays used).
fn remove_freed_shards(inner: &Inner, slot: usize, member: &dyn Member) -> u64 {
    use crate::data::shard::{shard_path, stored_inos, sums_path};
    let inos = match stored_inos(member) {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(slot, error = %e, "cannot list the returning member's data");
            return 0;
        }
    };
    let freed: Vec<u64> = {
        let ns = inner.meta.read();
        inos.into_iter()
            .filter(|&ino| ino < ns.next_ino && ns.inodes.get(&ino).is_none())
            .collect()
    };
    let mut removed = 0;
    for ino in freed {
        match member
            .remove(&shard_path(ino))
            .and_then(|()| member.remove(&sums_path(ino)))
        {
            Ok(()) => removed += 1,
            Err(e) => {
                tracing::warn!(slot, ino, error = %e, "cannot remove the shard of a deleted file")
            }
        }
    }
    removed
}

/// Leave `path` (locked by the caller, holding a `.raidfs` if `has`) empty
/// for a new member or spare (`what`): a former member's old contents are
/// discarded ([`discard_former_member`]), what an interrupted discard left
/// is finished, and anything else there refuses it untouched.
pub(super) fn make_empty(i: &Inner, what: &str, path: &Path, has: bool) -> Result<()> {
    if has {
        discard_former_member(i, what, path)?;
    } else {
        check_empty_except(what, path, &[DISCARDED])?;
        clear_interrupted_discard(path)?;
    }
    check_empty(what, path)
}

/// Where a former member's old `.raidfs` goes while it is removed: out of
/// the way at once (a crash midway leaves no half-removed member that
/// could assemble), then deleted.
const DISCARDED: &str = ".raidfs-discarded";

/// A replacement directory that still holds a `.raidfs`: accepted only if
/// it is a former member of this very array that is no longer in use (the
/// failed disk itself after a USB disconnect, or a disk replaced earlier),
/// as `mdadm --add` takes a former member back with a full resync. Its old
/// contents are discarded. Anything else is refused, naming whose it is.
fn discard_former_member(i: &Inner, what: &str, path: &Path) -> Result<()> {
    let ours = lock(&i.sb).template.clone();
    let refuse = |whose: String| {
        Err(ArrayError::Invalid(format!(
            "{} already holds a .raidfs directory: it belongs to {whose}",
            path.display()
        )))
    };
    let sb = match assemble::read_superblock(path) {
        Ok(sb) => sb,
        Err(_) => return refuse("an array (its superblock cannot be read)".into()),
    };
    if sb.array_uuid != ours.array_uuid {
        return refuse(format!(
            "array {:?} ({})",
            sb.name,
            superblock::uuid_string(&sb.array_uuid)
        ));
    }
    if let Some(k) = ours
        .members
        .iter()
        .position(|m| m.uuid == sb.member_uuid)
        .filter(|&k| i.health.state(k).writable())
    {
        return refuse(format!(
            "member {k} of this array, which is in use (a copy of its directory?)"
        ));
    }
    // Used on its own since it left (split brain): it holds changes the
    // array does not have. Not discarded silently.
    if let Some(k) = used_on_its_own(i, &sb) {
        return refuse(format!(
            "a former member of this array that was used without member {k} since it left, \
             so it may hold changes the array does not have; copy off what you need, then \
             remove its .raidfs to reuse it"
        ));
    }
    if ours.spares.iter().any(|s| s.uuid == sb.member_uuid) {
        return refuse("a hot spare of this array".into());
    }
    // Ahead of the array: it went on in a history of its own after it left
    // (the others assembled without this copy), and may hold changes this
    // one does not have. Not discarded silently either.
    if sb.events > ours.events {
        return refuse(format!(
            "a copy of this array that went on without it (its superblock is ahead: events {} \
             against {}), so it may hold changes this one does not have; copy off what you \
             need, then remove its .raidfs to reuse it",
            sb.events, ours.events
        ));
    }
    tracing::info!(
        path = %path.display(),
        former_slot = sb.member_index,
        events = sb.events,
        "reusing a former member's directory: its old contents are discarded"
    );
    let io = |what: &str, e: std::io::Error| {
        ArrayError::Invalid(format!(
            "{}: {what} the former member's old contents: {e}",
            path.display()
        ))
    };
    // Nothing else may be there: the checks after this one must not find
    // a reason to refuse once the old contents are gone.
    check_empty_except(what, path, &[".raidfs", DISCARDED])?;
    clear_interrupted_discard(path)?;
    let discarded = path.join(DISCARDED);
    std::fs::rename(path.join(".raidfs"), &discarded).map_err(|e| io("moving away", e))?;
    std::fs::remove_dir_all(&discarded).map_err(|e| io("removing", e))
}

/// Finish removing what an interrupted [`discard_former_member`] left.
fn clear_interrupted_discard(path: &Path) -> Result<()> {
    let discarded = path.join(DISCARDED);
    if std::fs::symlink_metadata(&discarded).is_ok_and(|m| m.is_dir()) {
        std::fs::remove_dir_all(&discarded).map_err(|e| {
            ArrayError::Invalid(format!(
                "{}: removing a former member's old contents: {e}",
                discarded.display()
            ))
        })?;
    }
    Ok(())
}

/// Put a validated replacement into `slot` (worker lock held): metadata,
/// then superblocks saying rebuilding. Returns, for a re-add, the files
/// changed since the member left.
fn prepare_replace(
    i: &Inner,
    slot: usize,
    member: &Arc<dyn Member>,
    mode: Mode,
) -> Result<Option<ReAdd>> {
    let resuming = mode == Mode::Resume;
    if mode == Mode::ReAdd {
        clear_old_records(slot, member.as_ref())?;
    }
    if !resuming {
        i.meta.add_member(slot, member)?;
        lock(&i.sb).template.members[slot].uuid = superblock::new_uuid();
    }
    if let Some(old) = &i.members()[slot]
        && !Arc::ptr_eq(old, member)
    {
        old.unlock();
    }
    i.set_member(slot, Some(member.clone()));
    i.data.set_member(slot, Some(member.clone()));
    if resuming {
        i.write_sbs()?;
        return Ok(None);
    }
    i.health
        .set_state(slot, MemberState::Rebuilding { done_bytes: 0 });
    if mode == Mode::ReAdd {
        // It may hold old bytes past the end of files changed since it
        // left: from now on no file counts as holding zeros there, and no
        // operation begun without it lists one. A write that saw such a
        // listing just before is of a changed file, whose every stripe the
        // rebuild recomputes.
        i.data.forget_zeros_past_end();
    }
    // The member takes writes now: the files changed while it was out are
    // complete from here on, and the slot stops being covered (durably,
    // before the superblocks name a new member UUID for it).
    let changed = i.data.take_stale(slot)?;
    i.write_sbs()?;
    Ok((mode == Mode::ReAdd).then_some(ReAdd { changed }))
}

/// A member coming back keeps its data, but not its old metadata, logs and
/// operation checkpoints: they are written afresh, and an old one must
/// never be taken for the array's.
fn clear_old_records(slot: usize, member: &dyn Member) -> Result<()> {
    let io = |path: &str, e: std::io::Error| ArrayError::MemberIo {
        member: slot,
        path: member.describe(),
        context: format!("removing the old {path}"),
        source: e,
    };
    for dir in [crate::meta::journal::META_DIR, crate::ops::OPS_DIR] {
        let names = match member.list(dir) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(dir, e)),
        };
        for name in names {
            let path = format!("{dir}/{name}");
            member.remove(&path).map_err(|e| io(&path, e))?;
        }
    }
    member
        .remove(crate::intent::INTENT_PATH)
        .map_err(|e| io(crate::intent::INTENT_PATH, e))
}
