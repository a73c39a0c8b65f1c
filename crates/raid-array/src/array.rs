//! The public engine type, [`Array`]: an assembled array with POSIX-shaped
//! operations on inode numbers. The FUSE adapter maps each of its requests
//! to one call here and the error's `errno()` back; nothing here knows FUSE.
//!
//! Permissions are not checked here: the adapter mounts with the kernel's
//! `default_permissions`, which checks mode bits against the attributes
//! returned by this API.
//!
//! Durability: a metadata change is durable once its journal record is
//! committed. With `sync_metadata` (the default) every namespace operation
//! waits for that commit before returning; `write` never waits (its size
//! change is committed by `fsync`, by a later namespace operation or by
//! `close`). See docs/SEMANTICS.md.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::time::{Duration, SystemTime};

use raid_core::Geometry;

use crate::acl;
use crate::assemble::{self, AssembleOptions, AtimeMode};
use crate::create::{self, CreateOptions};
use crate::data::DataStore;
use crate::format::superblock::{self, MemberSlot, SlotState, Superblock, uuid_string};
use crate::health::{Health, HealthEvent, MemberCounters, MemberState};
use crate::member::Member;
use crate::meta::inode::{
    Body, FIRST_COOKIE, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG, from_system_time, now_ns,
};
use crate::meta::namespace::{Effect, Namespace};
use crate::meta::ops::Op;
use crate::meta::store::Meta;
use crate::meta::{Attr, DirEntry, FileKind};
use crate::ops::ScrubSummary;
use crate::ops::{self, Progress, RebuildOptions, ResyncReport, ScrubOptions, ScrubReport};
use crate::{ArrayError, Result};

mod members;
mod worker;
pub use worker::ReplaceKind;

/// Files up to this size keep their data inline in the metadata (replicated
/// to every member) instead of in N shard files.
pub const INLINE_MAX: u64 = 4096;

const INO_LOCKS: usize = 64;
/// How long after its last write a file is synced and its stripes leave
/// the write-intent log ([`Array::settle_data`]; md clears bitmap bits
/// after about as long).
pub const SETTLE_IDLE: Duration = Duration::from_secs(3);

/// A time to set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeSet {
    Now,
    At(SystemTime),
}

/// Attributes to change; `None` leaves a field alone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SetAttr {
    /// Permission bits (the file type cannot change).
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Truncate or extend.
    pub size: Option<u64>,
    pub atime: Option<TimeSet>,
    pub mtime: Option<TimeSet>,
    /// Clear set-user-ID, and set-group-ID if the file is group-executable,
    /// unless `mode` is given or the inode is a directory: what Linux does
    /// when an unprivileged process truncates a file or anyone changes its
    /// owner.
    pub clear_setid: bool,
    /// With `size`: only ever grow the file (`fallocate`), decided under
    /// the file's lock, so that a write extending it meanwhile is not cut.
    pub grow_only: bool,
}

/// `mode` without set-user-ID, and without set-group-ID if group-executable
/// (set-group-ID without group execute marks mandatory locking and stays),
/// as Linux clears them on a write, truncate or change of owner.
fn without_setid(mode: u32) -> u32 {
    let mut m = mode & !0o4000;
    if mode & 0o010 != 0 {
        m &= !0o2000;
    }
    m
}

/// Filesystem statistics (`statfs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatFs {
    pub bsize: u32,
    /// Total usable blocks of `bsize` bytes.
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub namelen: u32,
}

/// One member in [`Status`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberStatus {
    pub index: usize,
    pub uuid: String,
    /// Where it is (directory), if present.
    pub path: Option<String>,
    pub state: MemberState,
    pub counters: MemberCounters,
    /// The member that left this slot may come back by a re-add (only the
    /// files changed since it left rebuilt): [`Array::may_readd`].
    pub readd: bool,
    /// How the last rebuild of this slot since assembly ended: a member
    /// turns active even when some blocks could not be rebuilt, and only
    /// this tells the admin who asked for it.
    pub last_rebuild: Option<RebuildOutcome>,
}

/// The end of a rebuild (or re-add), in [`MemberStatus`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RebuildOutcome {
    /// When it ended, seconds since the Unix epoch.
    pub finished_unix: u64,
    /// False when it stopped early (the array closing).
    pub complete: bool,
    /// A re-add: only the files changed since the member left were rebuilt.
    pub readd: bool,
    /// Bytes written to the member.
    pub bytes: u64,
    /// Blocks that could not be rebuilt; they read as I/O errors.
    pub unrecoverable: u64,
}

/// A snapshot of the array for `raidfs status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub name: String,
    pub uuid: String,
    pub level: String,
    pub chunk_size: u32,
    pub members: Vec<MemberStatus>,
    pub events: u64,
    pub clean: bool,
    pub degraded: bool,
    pub failed: bool,
    pub failures_tolerated: usize,
    /// How many more member failures are always survived now, with the
    /// members that are not active gone (`None`: the array has failed).
    pub failures_left: Option<usize>,
    pub journal_seq: u64,
    pub journal_commits: u64,
    pub inodes: u64,
    /// Hot spares attached to the array.
    pub spares: Vec<SpareStatus>,
    /// The rebuild running now, if any.
    pub rebuild: Option<RebuildStatus>,
    /// The last scrub (kept on the members, so it survives a remount).
    pub last_scrub: Option<ScrubSummary>,
}

/// One hot spare in [`Status`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpareStatus {
    pub uuid: String,
    /// Its directory.
    pub path: String,
}

/// The running rebuild in [`Status`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RebuildStatus {
    /// The slot being rebuilt.
    pub slot: usize,
    /// Logical file bytes done (a resumed rebuild starts at its checkpoint).
    pub done_bytes: u64,
    /// Logical bytes of the files it walks.
    pub total_bytes: u64,
    /// When this run started, seconds since the Unix epoch.
    pub started_unix: u64,
}

struct SbState {
    template: Superblock,
    /// The health generation whose states the superblocks last recorded
    /// ([`Inner::record_failures`] compares it with the current one).
    persisted_gen: u64,
}

/// An attached hot spare.
#[derive(Clone)]
struct Spare {
    uuid: [u8; 16],
    path: PathBuf,
    member: Arc<dyn Member>,
}

struct Inner {
    geometry: Geometry,
    /// Members by slot (a replace puts a new one in).
    members: RwLock<Vec<Option<Arc<dyn Member>>>>,
    health: Arc<Health>,
    meta: Meta,
    data: DataStore,
    sb: Mutex<SbState>,
    /// What keeps an orphan (a file with no name left) alive, per inode:
    /// open handles and the kernel's references ([`Array::remember`]).
    /// It is freed when none is left.
    holds: Mutex<HashMap<u64, u64>>,
    /// Removed directories the kernel still holds ([`Array::remember`]):
    /// their last attributes, for `fstat` of a descriptor or working
    /// directory. Only in memory: the namespace no longer has them.
    removed_dirs: Mutex<HashMap<u64, Attr>>,
    ino_locks: Vec<Mutex<()>>,
    sync_metadata: bool,
    /// Nothing is written to the members ([`AssembleOptions::read_only`]).
    read_only: bool,
    /// When reads record the access time.
    atime: AtimeMode,
    /// Freed striped inodes whose shard files are still on the members, with
    /// the journal sequence of the record that frees them. The shards go
    /// only once that record is durable: before that, a crash replays a
    /// namespace in which the inode (e.g. the file a rename replaced) still
    /// exists, and its data must still be there.
    pending_free: Mutex<Vec<(u64, u64)>>,
    closed: AtomicBool,
    /// Hot spares (the template's spare table lists the same UUIDs).
    spares: Mutex<Vec<Spare>>,
    /// The background rebuild worker.
    worker: Mutex<worker::Worker>,
    /// Progress of the running rebuild, for [`Array::status`].
    rebuild_status: Mutex<Option<RebuildStatus>>,
    /// How the last rebuild of each slot ended, for [`Array::status`]. Set
    /// before `rebuild_status` is cleared, so a status without a running
    /// rebuild always has the outcome of the one that just ended.
    last_rebuilds: Mutex<Vec<Option<RebuildOutcome>>>,
    /// Close (or drop) asked the worker to stop; nothing new starts.
    stopping: AtomicBool,
    /// Assembly has resynced the stripes an unclean stop left dirty, so a
    /// rebuild may start: before that, a rebuild would take a torn
    /// stripe's stale parity for the truth and write its guess to the
    /// new member with a valid checksum.
    serving: AtomicBool,
    /// Options of the rebuilds the engine starts itself (spare takeover, resume).
    auto_rebuild: RebuildOptions,
    last_scrub: Mutex<Option<ScrubSummary>>,
}

/// An assembled array.
pub struct Array {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn to_health(s: SlotState) -> MemberState {
    match s {
        SlotState::Active => MemberState::Active,
        SlotState::Failed => MemberState::Failed,
        SlotState::Spare => MemberState::Spare,
        SlotState::Rebuilding { done_bytes } => MemberState::Rebuilding { done_bytes },
    }
}

fn to_slot(s: MemberState) -> SlotState {
    match s {
        MemberState::Active => SlotState::Active,
        MemberState::Failed | MemberState::Missing => SlotState::Failed,
        MemberState::Spare => SlotState::Spare,
        MemberState::Rebuilding { done_bytes } => SlotState::Rebuilding { done_bytes },
    }
}

/// Whether an error means a member filesystem is full.
fn no_space(e: &ArrayError) -> bool {
    e.errno() == rustix::io::Errno::NOSPC.raw_os_error()
}

fn name_bytes(name: &OsStr) -> &[u8] {
    name.as_bytes()
}

fn time_ns(t: TimeSet, now: i64) -> i64 {
    match t {
        TimeSet::Now => now,
        TimeSet::At(t) => from_system_time(t),
    }
}

/// The mode and group of a node created in `parent` with `mode` by a
/// caller `uid`/`gid`: a set-group-ID directory gives its group to what is
/// created in it, and its set-group-ID bit to new directories, as Linux's
/// `inode_init_owner` does (under FUSE the filesystem decides it). A
/// group-executable file asked for with set-group-ID by someone outside
/// that group (judged by the primary group) does not get the bit, as
/// Linux's `mode_strip_sgid` decides; without group execute the bit is
/// mandatory locking's mark, and stays.
fn inherit_group(ns: &Namespace, parent: u64, mode: u32, uid: u32, gid: u32) -> (u32, u32) {
    const S_ISGID: u32 = 0o2000;
    const S_IXGRP: u32 = 0o010;
    match ns.get(parent) {
        Ok(p) if p.mode & S_ISGID != 0 => {
            let mode = if mode & S_IFMT == S_IFDIR {
                mode | S_ISGID
            } else if uid != 0 && gid != p.gid && mode & S_IXGRP != 0 {
                mode & !S_ISGID
            } else {
                mode
            };
            (mode, p.gid)
        }
        _ => (mode, gid),
    }
}

impl Array {
    /// Create a new array on empty member directories and assemble it.
    pub fn create(opts: &CreateOptions) -> Result<Array> {
        create::create(opts)?;
        let mut dirs = opts.members.clone();
        dirs.extend(opts.spares.iter().cloned());
        Array::assemble(&AssembleOptions::new(dirs))
    }

    /// Assemble an existing array from its member directories.
    pub fn assemble(opts: &AssembleOptions) -> Result<Array> {
        Array::assemble_with(opts, &assemble::open_dir)
    }

    /// [`Array::assemble`] with members opened by `open` (tests use it to
    /// put a fault-injecting member around each directory).
    pub fn assemble_with(opts: &AssembleOptions, open: assemble::Opener<'_>) -> Result<Array> {
        let a = assemble::analyze_with(opts, open)?;
        let n = a.members.len();
        let states: Vec<MemberState> = (0..n)
            .map(|i| {
                if a.members[i].is_none() && a.missing.contains(&i) {
                    MemberState::Missing
                } else {
                    to_health(a.states[i])
                }
            })
            .collect();
        let health = Arc::new(Health::new(states));
        let events_rx = health.subscribe();

        // Mark the array dirty (and record missing members as failed) before
        // anything else is written.
        let mut template = a.sb.clone();
        template.clean = opts.read_only && a.sb.clean;
        template.journal_seq = a.head;
        template.members =
            a.sb.members
                .iter()
                .zip(&a.states)
                .map(|(s, st)| MemberSlot {
                    uuid: s.uuid,
                    state: *st,
                })
                .collect();
        let spares: Vec<Spare> = a
            .spares
            .iter()
            .map(|(uuid, path, member)| Spare {
                uuid: *uuid,
                path: path.clone(),
                member: member.clone(),
            })
            .collect();
        let sb = Mutex::new(SbState {
            template,
            persisted_gen: 0,
        });
        if !opts.read_only {
            // Space kept back for the records, found or made before the
            // first of them is written (a full member stays short of space
            // until files are deleted).
            for (i, m) in a.members.iter().enumerate() {
                if let Some(m) = m
                    && health.state(i).writable()
                    && let Err(e) = m.restore_reserve()
                {
                    tracing::warn!(member = i, error = %e, "cannot keep space back for metadata");
                }
            }
            write_superblocks(&sb, &a.members, &spares, &health)?;
        }

        let meta_members: Vec<(usize, Arc<dyn Member>)> = a
            .members
            .iter()
            .enumerate()
            .filter(|(i, m)| m.is_some() && health.state(*i).writable())
            .filter_map(|(i, m)| m.clone().map(|m| (i, m)))
            .collect();
        let hook_health = health.clone();
        // Every call is a failed metadata write (journal, checkpoint, or
        // their sync): counted as the member's write error, then failed.
        let hook: crate::meta::journal::FailureHook = Arc::new(move |i, reason| {
            hook_health.count_write_error(i);
            hook_health.mark_failed(i, &format!("metadata: {reason}"));
        });
        let meta = if opts.read_only {
            Meta::open_read_only(a.sb.array_uuid, a.ns, a.head, hook)
        } else {
            Meta::open(
                a.sb.array_uuid,
                a.ns,
                a.head,
                &meta_members,
                a.needs_checkpoint,
                &a.meta_current,
                opts.checkpoint_bytes,
                hook,
            )?
        };
        let data = DataStore::with_intent(a.geometry, a.members.clone(), health.clone(), a.intent)?;
        if opts.read_only {
            data.set_read_only();
        }
        data.set_read_ahead_budget(opts.read_ahead_budget);
        // Members absent now that the array last recorded in service left
        // in sync: what changes from here on is all they will lack.
        data.cover_absent(&a.left_in_sync);
        let present: Vec<Arc<dyn Member>> = a.members.iter().flatten().cloned().collect();
        let last_scrub = ScrubSummary::load(&present);
        let inner = Arc::new(Inner {
            geometry: a.geometry,
            members: RwLock::new(a.members),
            health,
            meta,
            data,
            sb,
            holds: Mutex::new(HashMap::new()),
            removed_dirs: Mutex::new(HashMap::new()),
            ino_locks: (0..INO_LOCKS).map(|_| Mutex::new(())).collect(),
            sync_metadata: opts.sync_metadata,
            read_only: opts.read_only,
            atime: opts.atime,
            pending_free: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
            spares: Mutex::new(spares),
            worker: Mutex::new(worker::Worker::default()),
            rebuild_status: Mutex::new(None),
            last_rebuilds: Mutex::new(vec![None; a.geometry.members()]),
            stopping: AtomicBool::new(false),
            serving: AtomicBool::new(false),
            auto_rebuild: RebuildOptions {
                resume: false,
                ..opts.rebuild
            },
            last_scrub: Mutex::new(last_scrub),
        });
        spawn_health_listener(Arc::downgrade(&inner), events_rx);
        let array = Array { inner };
        // Orphans: files unlinked while open when the array stopped (or
        // whose free had not reached the journal at a crash).
        if !opts.read_only {
            let orphans = array.inner.meta.read().orphans();
            for ino in orphans {
                array.free(ino)?;
            }
            array.inner.meta.flush()?;
            array.reap();
            if !a.was_clean {
                array.sweep_shards();
            }
            // After an unclean stop the write-intent log names the stripes
            // whose redundancy may disagree with their data: bring exactly
            // those back in line before anything else writes or rebuilds
            // (cheap when the log is empty).
            let r = array.resync()?;
            if r.unrecoverable > 0 {
                tracing::warn!(
                    blocks = r.unrecoverable,
                    "blocks left unreadable by the unclean shutdown (they read as I/O errors)"
                );
            }
            array.inner.serving.store(true, Ordering::SeqCst);
            // A rebuild left in state rebuilding resumes; a failed slot
            // with a spare at hand is taken over.
            worker::kick(&array.inner);
        }
        tracing::info!(name = %a.sb.name, was_clean = a.was_clean, head = a.head, read_only = opts.read_only, "array assembled");
        Ok(array)
    }

    /// Shut down cleanly: data and metadata made durable, a checkpoint
    /// written (so the next assemble replays nothing) and the superblocks
    /// marked clean.
    pub fn close(self) -> Result<()> {
        let i = &self.inner;
        // The rebuild worker saves its checkpoint and ends first.
        worker::stop(i);
        if i.read_only {
            i.closed.store(true, Ordering::SeqCst);
            return Ok(());
        }
        i.data.close()?;
        i.meta.flush()?;
        self.reap();
        let seq = i.meta.checkpoint()?;
        {
            let mut g = lock(&i.sb);
            g.template.clean = true;
            g.template.journal_seq = seq;
        }
        i.write_sbs()?;
        i.closed.store(true, Ordering::SeqCst);
        // Only now may another process assemble the array.
        for m in i.members().iter().flatten() {
            m.unlock();
        }
        for s in lock(&i.spares).iter() {
            s.member.unlock();
        }
        Ok(())
    }

    /// The array's geometry.
    pub fn geometry(&self) -> &Geometry {
        &self.inner.geometry
    }

    /// The data path (for scrub, rebuild and resync).
    pub fn data(&self) -> &DataStore {
        &self.inner.data
    }

    /// Member health.
    pub fn health(&self) -> &Arc<Health> {
        &self.inner.health
    }

    /// A snapshot for `raidfs status`.
    pub fn status(&self) -> Status {
        let i = &self.inner;
        let sb = lock(&i.sb).template.clone();
        let states = i.health.states();
        let counters = i.health.counters();
        let members = i.members();
        let unavailable: Vec<usize> = states
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.readable())
            .map(|(k, _)| k)
            .collect();
        // Read before the outcomes: see `Inner::last_rebuilds`.
        let rebuild = lock(&i.rebuild_status).clone();
        let outcomes = lock(&i.last_rebuilds).clone();
        Status {
            name: sb.name.clone(),
            uuid: uuid_string(&sb.array_uuid),
            level: i.geometry.level().to_string(),
            chunk_size: i.geometry.chunk_size(),
            members: (0..states.len())
                .map(|k| MemberStatus {
                    index: k,
                    uuid: uuid_string(&sb.members[k].uuid),
                    path: members[k].as_ref().map(|m| m.describe()),
                    state: states[k],
                    counters: counters.get(k).copied().unwrap_or_default(),
                    readd: self.may_readd(k),
                    last_rebuild: outcomes.get(k).copied().flatten(),
                })
                .collect(),
            events: sb.events,
            clean: sb.clean,
            degraded: !unavailable.is_empty(),
            failed: !i.geometry.survives(&unavailable),
            failures_tolerated: i.geometry.failures_tolerated(),
            failures_left: i.geometry.more_failures_tolerated(&unavailable),
            journal_seq: i.meta.seq(),
            journal_commits: i.meta.journal_commits(),
            inodes: i.meta.read().inodes.len() as u64,
            spares: lock(&i.spares)
                .iter()
                .map(|s| SpareStatus {
                    uuid: uuid_string(&s.uuid),
                    path: s.path.display().to_string(),
                })
                .collect(),
            rebuild,
            last_scrub: *lock(&i.last_scrub),
        }
    }

    // ---- long operations on the data ------------------------------------

    /// Every regular file whose data is striped, as (inode, size), in inode
    /// order: what scrub, resync and rebuild walk. Inline files live in the
    /// metadata and are covered by its copies on every member.
    pub fn striped_files(&self) -> Vec<(u64, u64)> {
        self.inner.striped_files()
    }

    /// Verify every checksum and parity of the striped files, repairing what
    /// redundancy allows. Its summary is kept on the members
    /// ([`Status::last_scrub`]).
    pub fn scrub(&self, opts: ScrubOptions, progress: &dyn Progress) -> Result<ScrubReport> {
        if opts.repair {
            // Nothing can be rewritten: say so rather than report repairs.
            self.writable()?;
        }
        let now = |ino: u64, _: u64| self.inner.striped_size(ino);
        let rep = ops::scrub_live(&self.inner.data, self.striped_files(), &now, opts, progress)?;
        let summary = ScrubSummary::of(&rep, opts.repair);
        if !self.inner.read_only {
            summary.save(&self.inner.data.writable_members());
        }
        *lock(&self.inner.last_scrub) = Some(summary);
        Ok(rep)
    }

    /// Check the stripes the write-intent log left dirty (after an unclean
    /// shutdown).
    pub fn resync(&self) -> Result<ResyncReport> {
        self.writable()?;
        ops::resync(&self.inner.data, self.striped_files())
    }

    // ---- metadata operations ------------------------------------------

    fn ino_lock(&self, ino: u64) -> MutexGuard<'_, ()> {
        lock(&self.inner.ino_locks[(ino % INO_LOCKS as u64) as usize])
    }

    /// Refuse a change on a read-only array.
    fn writable(&self) -> Result<()> {
        if self.inner.read_only {
            return Err(ArrayError::ReadOnly(
                "the array was assembled read-only".into(),
            ));
        }
        Ok(())
    }

    /// Wait for `seq` if namespace operations are synchronous.
    fn settle(&self, seq: u64) -> Result<()> {
        if self.inner.sync_metadata {
            self.inner.meta.commit(seq)?;
        }
        self.inner.meta.maybe_checkpoint()?;
        self.reap();
        Ok(())
    }

    /// Delete the shard files of freed inodes whose free is durable.
    /// A failure only leaks space (the inode is gone from the namespace),
    /// so it is logged, not returned.
    fn reap(&self) {
        let durable = self.inner.meta.durable_seq();
        let ready: Vec<u64> = {
            let mut pending = lock(&self.inner.pending_free);
            if pending.is_empty() {
                return;
            }
            let (ready, keep): (Vec<_>, Vec<_>) =
                pending.drain(..).partition(|&(seq, _)| seq <= durable);
            *pending = keep;
            ready.into_iter().map(|(_, ino)| ino).collect()
        };
        for ino in ready {
            if let Err(e) = self.inner.data.remove(ino) {
                tracing::warn!(ino, error = %e, "cannot remove the data of a freed file; its space stays used");
            }
        }
    }

    fn attr_of(&self, ino: u64) -> Result<Attr> {
        match self.inner.meta.read().get(ino) {
            Ok(i) => Ok(i.attr(ino)),
            Err(ArrayError::NotFound) => lock(&self.inner.removed_dirs)
                .get(&ino)
                .cloned()
                .ok_or(ArrayError::NotFound),
            Err(e) => Err(e),
        }
    }

    /// Handle what an operation left: an orphan nothing holds is freed now.
    fn after(&self, eff: Effect) -> Result<()> {
        if let Some(ino) = eff.orphaned {
            let holds = lock(&self.inner.holds);
            if !holds.contains_key(&ino) {
                self.free_orphan(ino)?;
            }
        }
        if let Some(last) = eff.removed_dir {
            let holds = lock(&self.inner.holds);
            if holds.contains_key(&last.ino) {
                lock(&self.inner.removed_dirs).insert(last.ino, last);
            }
        }
        Ok(())
    }

    /// Free `ino` if no name is left to it; whether it did. Callers hold
    /// the table of holds, so that an unlink and the file's last
    /// release racing each other free it once, and an open racing the
    /// unlink either counts before the free or finds the file gone.
    fn free_orphan(&self, ino: u64) -> Result<bool> {
        if !self.inner.meta.read().get(ino).is_ok_and(|i| i.nlink == 0) {
            return Ok(false);
        }
        self.free(ino)?;
        Ok(true)
    }

    /// After an unclean stop, delete the shards of inodes the namespace does
    /// not hold as striped files: frees that were durable when the array
    /// stopped but whose shards were still waiting for [`Array::reap`] (and
    /// leftovers of an interrupted move out of inline storage). Only then,
    /// because it lists every shard directory of every member.
    fn sweep_shards(&self) {
        let keep: std::collections::HashSet<u64> = self
            .striped_files()
            .into_iter()
            .map(|(ino, _)| ino)
            .collect();
        let mut garbage = std::collections::BTreeSet::new();
        for (k, m) in self.inner.members().iter().enumerate() {
            let Some(m) = m else { continue };
            if !self.inner.health.state(k).writable() {
                continue;
            }
            match crate::data::shard::stored_inos(m.as_ref()) {
                Ok(inos) => garbage.extend(inos.into_iter().filter(|ino| !keep.contains(ino))),
                Err(e) => {
                    tracing::warn!(member = k, error = %e, "cannot list the data directory");
                }
            }
        }
        if !garbage.is_empty() {
            tracing::info!(
                files = garbage.len(),
                "removing the data of files freed before the unclean stop"
            );
        }
        for ino in garbage {
            if let Err(e) = self.inner.data.remove(ino) {
                tracing::warn!(ino, error = %e, "cannot remove the data of a freed file; its space stays used");
            }
        }
    }

    /// Free an orphan: the inode now, its striped data once the free is
    /// durable ([`Array::reap`]).
    fn free(&self, ino: u64) -> Result<()> {
        let striped = matches!(
            self.inner.meta.read().get(ino)?.body,
            Body::File { inline: None }
        );
        let (seq, _) = self.inner.meta.apply(&Op::Free { ino })?;
        if striped {
            lock(&self.inner.pending_free).push((seq, ino));
        }
        Ok(())
    }

    /// Look up `name` in directory `parent`.
    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<Attr> {
        let ns = self.inner.meta.read();
        let ino = ns.lookup(parent, name_bytes(name))?;
        Ok(ns.get(ino)?.attr(ino))
    }

    pub fn getattr(&self, ino: u64) -> Result<Attr> {
        self.attr_of(ino)
    }

    /// Change attributes; a size change truncates or extends the file.
    pub fn setattr(&self, ino: u64, set: &SetAttr) -> Result<Attr> {
        self.writable()?;
        let now = now_ns();
        let _g = self.ino_lock(ino);
        let mode = match set.mode {
            None if set.clear_setid => self.mode_without_setid(ino)?,
            mode => mode,
        };
        let grown;
        let set = match set.size {
            Some(size) if set.grow_only && size <= self.file_state(ino)?.0 => {
                grown = SetAttr {
                    size: None,
                    ..set.clone()
                };
                &grown
            }
            _ => set,
        };
        // A striped file that shrinks is cut only once its new size is
        // durable: cut first, a crash before the size record reached the
        // members would leave the old size over shards some members had
        // already trimmed (zeros that pass their checksums beside the old
        // bytes, and parity that matches neither). Cut after, a crash
        // leaves bytes past the new end, which every later growth clears.
        let shrink = match set.size {
            Some(new_size) => {
                let (old_size, inline) = self.file_state(ino)?;
                new_size < old_size && inline.is_none()
            }
            None => false,
        };
        if let Some(new_size) = set.size.filter(|_| !shrink) {
            self.resize_or_reclaim(ino, new_size)?;
        }
        // With an access ACL, the mode and the ACL that follows it change
        // in one record; the other attributes in their own.
        let acl = match mode {
            Some(m) => self.acl_after_chmod(ino, m)?,
            None => None,
        };
        let others = set.uid.is_some()
            || set.gid.is_some()
            || set.size.is_some()
            || set.atime.is_some()
            || set.mtime.is_some();
        let mut seq = None;
        if acl.is_none() || others {
            let op = Op::SetAttr {
                ino,
                mode: if acl.is_some() { None } else { mode },
                uid: set.uid,
                gid: set.gid,
                size: set.size,
                atime: set.atime.map(|t| time_ns(t, now)),
                mtime: set.mtime.map(|t| time_ns(t, now)),
                ctime: now,
            };
            let applied = self.inner.meta.apply(&op)?.0;
            if let Some(new_size) = set.size.filter(|_| shrink) {
                self.inner.meta.commit(applied)?;
                // The new size is durable: bytes left past it (a full
                // member refused to zero the end stripe) are cleared by
                // the file's next growth, as after a crash.
                match self.resize_or_reclaim(ino, new_size) {
                    Err(e) if no_space(&e) => {
                        tracing::warn!(
                            ino,
                            "no space to zero past the new end of a truncated file; its next growth will"
                        );
                    }
                    r => r?,
                }
            }
            seq = Some(applied);
        }
        if let (Some(mode), Some(acl)) = (mode, acl) {
            let op = Op::SetModeAcl {
                ino,
                mode,
                acl,
                time: now,
            };
            seq = Some(self.inner.meta.apply(&op)?.0);
        }
        if let Some(seq) = seq {
            self.settle(seq)?;
        }
        self.attr_of(ino)
    }

    /// The new mode of a non-directory that holds set-ID bits to clear
    /// ([`without_setid`]); `None` if nothing changes.
    fn mode_without_setid(&self, ino: u64) -> Result<Option<u32>> {
        let ns = self.inner.meta.read();
        let i = ns.get(ino)?;
        let cleared = without_setid(i.mode);
        Ok((!i.is_dir() && cleared != i.mode).then_some(cleared & 0o7777))
    }

    /// [`Array::resize`], once more after reclaiming space if the members
    /// are full (zeroing the end stripe writes).
    fn resize_or_reclaim(&self, ino: u64, new_size: u64) -> Result<()> {
        match self.resize(ino, new_size) {
            Err(e) if no_space(&e) && self.reclaim()? => self.resize(ino, new_size),
            r => r,
        }
    }

    /// Bring a file's data to `new_size` before its size is journaled
    /// (caller holds the inode lock); a striped file that shrinks, after
    /// its new size is durable ([`Array::setattr`]).
    fn resize(&self, ino: u64, new_size: u64) -> Result<()> {
        let (old_size, inline) = self.file_state(ino)?;
        match inline {
            Some(_) if new_size <= INLINE_MAX => Ok(()),
            Some(content) => {
                self.uninline(ino, &content)?;
                self.inner.data.truncate(ino, old_size, new_size)
            }
            None => self.inner.data.truncate(ino, old_size, new_size),
        }
    }

    /// (size, inline contents if inline) of a regular file.
    fn file_state(&self, ino: u64) -> Result<(u64, Option<Vec<u8>>)> {
        let ns = self.inner.meta.read();
        let i = ns.get(ino)?;
        match &i.body {
            Body::File { inline } => Ok((i.size, inline.clone())),
            Body::Dir(_) => Err(ArrayError::IsDir),
            _ => Err(ArrayError::Invalid("not a regular file".into())),
        }
    }

    /// Move an inline file's contents to the striped data path. The copy is
    /// made durable before the switch is journaled, so a crash leaves either
    /// the inline copy or a durable striped one.
    fn uninline(&self, ino: u64, content: &[u8]) -> Result<()> {
        self.inner.data.create_shards(ino)?;
        if !content.is_empty() {
            self.inner.data.write(ino, 0, content, 0)?;
        }
        self.inner.data.sync(ino)?;
        self.inner.meta.apply(&Op::Uninline { ino })?;
        Ok(())
    }

    fn make(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        rdev: u32,
        uid: u32,
        gid: u32,
    ) -> Result<Attr> {
        self.writable()?;
        let time = now_ns();
        let name = name_bytes(name).to_vec();
        let (seq, _, ino) = self.inner.meta.apply_with(|ns| {
            let ino = ns.next_ino;
            let (mode, gid) = inherit_group(ns, parent, mode, uid, gid);
            Ok((
                Op::Create {
                    parent,
                    name,
                    ino,
                    mode,
                    uid,
                    gid,
                    rdev,
                    time,
                },
                ino,
            ))
        })?;
        self.settle(seq)?;
        self.attr_of(ino)
    }

    /// Create a node of any type but symlink (`mode` holds the type bits;
    /// none means a regular file).
    pub fn mknod(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        rdev: u32,
        uid: u32,
        gid: u32,
    ) -> Result<Attr> {
        let mode = if mode & S_IFMT == 0 {
            mode | S_IFREG
        } else {
            mode
        };
        self.make(parent, name, mode, rdev, uid, gid)
    }

    /// Create and open a regular file (pair with [`Array::release`]).
    pub fn create_file(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<Attr> {
        let attr = self.make(parent, name, S_IFREG | (mode & 0o7777), 0, uid, gid)?;
        self.open(attr.ino)?;
        Ok(attr)
    }

    pub fn mkdir(&self, parent: u64, name: &OsStr, mode: u32, uid: u32, gid: u32) -> Result<Attr> {
        self.make(parent, name, S_IFDIR | (mode & 0o7777), 0, uid, gid)
    }

    pub fn symlink(
        &self,
        parent: u64,
        name: &OsStr,
        target: &OsStr,
        uid: u32,
        gid: u32,
    ) -> Result<Attr> {
        self.writable()?;
        let time = now_ns();
        let name = name_bytes(name).to_vec();
        let target = name_bytes(target).to_vec();
        let (seq, _, ino) = self.inner.meta.apply_with(|ns| {
            let ino = ns.next_ino;
            let (_, gid) = inherit_group(ns, parent, S_IFLNK, uid, gid);
            Ok((
                Op::Symlink {
                    parent,
                    name,
                    ino,
                    target,
                    uid,
                    gid,
                    time,
                },
                ino,
            ))
        })?;
        self.settle(seq)?;
        self.attr_of(ino)
    }

    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        match &self.inner.meta.read().get(ino)?.body {
            Body::Symlink(t) => Ok(t.to_vec()),
            _ => Err(ArrayError::Invalid("not a symlink".into())),
        }
    }

    /// A new name for `ino` in `parent`.
    pub fn link(&self, ino: u64, parent: u64, name: &OsStr) -> Result<Attr> {
        self.writable()?;
        let op = Op::Link {
            ino,
            parent,
            name: name_bytes(name).to_vec(),
            time: now_ns(),
        };
        let (seq, _) = self.inner.meta.apply(&op)?;
        self.settle(seq)?;
        self.attr_of(ino)
    }

    pub fn unlink(&self, parent: u64, name: &OsStr) -> Result<()> {
        self.writable()?;
        let op = Op::Unlink {
            parent,
            name: name_bytes(name).to_vec(),
            time: now_ns(),
        };
        let (seq, eff) = self.inner.meta.apply(&op)?;
        self.after(eff)?;
        self.settle(seq.max(self.inner.meta.seq()))
    }

    pub fn rmdir(&self, parent: u64, name: &OsStr) -> Result<()> {
        self.writable()?;
        let op = Op::Rmdir {
            parent,
            name: name_bytes(name).to_vec(),
            time: now_ns(),
        };
        let (seq, eff) = self.inner.meta.apply(&op)?;
        self.after(eff)?;
        self.settle(seq)
    }

    /// Rename, with Linux's `RENAME_NOREPLACE` / `RENAME_EXCHANGE` flags
    /// ([`crate::meta::ops`]); a replaced file loses a link.
    pub fn rename(
        &self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        flags: u32,
    ) -> Result<()> {
        self.writable()?;
        let op = Op::Rename {
            parent,
            name: name_bytes(name).to_vec(),
            new_parent,
            new_name: name_bytes(new_name).to_vec(),
            flags,
            time: now_ns(),
        };
        let (seq, eff) = self.inner.meta.apply(&op)?;
        self.after(eff)?;
        self.settle(seq.max(self.inner.meta.seq()))
    }

    /// Up to `max` entries of directory `ino` after `offset` (0 = from the
    /// start; "." and ".." come first at offsets 1 and 2). Offsets stay
    /// valid while the directory changes.
    pub fn readdir(&self, ino: u64, offset: u64, max: usize) -> Result<Vec<DirEntry>> {
        let ns = self.inner.meta.read();
        let dir = ns.dir(ino)?;
        let mut out = Vec::new();
        if offset < 1 && out.len() < max {
            out.push(DirEntry {
                ino,
                offset: 1,
                kind: FileKind::Dir,
                name: b".".to_vec(),
            });
        }
        if offset < 2 && out.len() < max {
            out.push(DirEntry {
                ino: dir.parent,
                offset: 2,
                kind: FileKind::Dir,
                name: b"..".to_vec(),
            });
        }
        for (cookie, e) in dir.entries_after(offset.max(FIRST_COOKIE - 1)) {
            if out.len() >= max {
                break;
            }
            let kind = ns.get(e.ino).map(|i| i.kind()).unwrap_or(FileKind::File);
            out.push(DirEntry {
                ino: e.ino,
                offset: cookie,
                kind,
                name: e.name.to_vec(),
            });
        }
        Ok(out)
    }

    /// Count an open handle: an unlinked file keeps its data until the last release.
    pub fn open(&self, ino: u64) -> Result<()> {
        let mut holds = lock(&self.inner.holds);
        self.inner.meta.read().get(ino)?;
        *holds.entry(ino).or_insert(0) += 1;
        Ok(())
    }

    /// Release an open handle.
    pub fn release(&self, ino: u64) -> Result<()> {
        if self.drop_holds(ino, 1)? {
            let seq = self.inner.meta.seq();
            self.settle(seq)?;
        }
        Ok(())
    }

    /// The kernel knows `ino` by one more reference (a FUSE reply naming
    /// it: lookup, create, mknod, mkdir, symlink, link, a readdirplus
    /// entry). Until [`Array::forget`] drops the last one, a file whose
    /// last name goes keeps its inode and data, as on a local filesystem:
    /// a path walk that found the old file of an atomic replace
    /// (`rename(tmp, f)`) still opens and stats it, and an `O_PATH`
    /// descriptor still stats it.
    pub fn remember(&self, ino: u64) {
        *lock(&self.inner.holds).entry(ino).or_insert(0) += 1;
    }

    /// The kernel dropped `n` of its references to `ino` (FUSE `FORGET`).
    /// A free this causes is not waited for even on a `sync` mount:
    /// nobody waits on a `FORGET`, and an orphan a crash leaves is freed at
    /// the next assembly.
    pub fn forget(&self, ino: u64, n: u64) -> Result<()> {
        if self.drop_holds(ino, n)? {
            self.inner.meta.maybe_checkpoint()?;
            self.reap();
        }
        Ok(())
    }

    /// Drop `n` holds (open handles, kernel references) on `ino`; an
    /// orphan left with none is freed. Whether it was.
    fn drop_holds(&self, ino: u64, n: u64) -> Result<bool> {
        let mut holds = lock(&self.inner.holds);
        let last = match holds.get_mut(&ino) {
            Some(c) if *c > n => {
                *c -= n;
                false
            }
            Some(_) => {
                holds.remove(&ino);
                lock(&self.inner.removed_dirs).remove(&ino);
                true
            }
            None => false,
        };
        Ok(last && !self.inner.read_only && self.free_orphan(ino)?)
    }

    /// Read up to `size` bytes at `offset` (fewer at end of file).
    pub fn read(&self, ino: u64, offset: u64, size: usize) -> Result<Vec<u8>> {
        let (file_size, inline) = self.file_state(ino)?;
        if offset >= file_size {
            return Ok(Vec::new());
        }
        let len = (file_size - offset).min(size as u64) as usize;
        let out = match inline {
            Some(d) => d[offset as usize..offset as usize + len].to_vec(),
            None => {
                let mut buf = vec![0u8; len];
                let n = self.inner.data.read(ino, offset, &mut buf, file_size)?;
                buf.truncate(n);
                buf
            }
        };
        // relatime (docs/SEMANTICS.md); a failure to record it fails no read.
        let strict = match self.inner.atime {
            AtimeMode::NoAtime => return Ok(out),
            AtimeMode::Strict => true,
            AtimeMode::Relatime => false,
        };
        if !self.inner.read_only
            && let Err(e) = self.inner.meta.relatime(ino, now_ns(), strict)
        {
            tracing::debug!(ino, error = %e, "cannot record the access time");
        }
        Ok(out)
    }

    /// Write `data` at `offset`; returns the bytes written.
    pub fn write(&self, ino: u64, offset: u64, data: &[u8]) -> Result<usize> {
        self.write_inner(ino, offset, data, false).map(|(n, _)| n)
    }

    /// [`Array::write`] by a process without `CAP_FSETID` (the kernel tells
    /// the mount): the file's set-user-ID bit, and its set-group-ID bit if
    /// it is group-executable, are cleared first (and settled like a
    /// `setattr`), as Linux does. Returns the bytes written and whether a
    /// bit was cleared (a cached mode is then stale).
    pub fn write_unprivileged(&self, ino: u64, offset: u64, data: &[u8]) -> Result<(usize, bool)> {
        self.write_inner(ino, offset, data, true)
    }

    fn write_inner(
        &self,
        ino: u64,
        offset: u64,
        data: &[u8],
        clear_setid: bool,
    ) -> Result<(usize, bool)> {
        self.writable()?;
        if data.is_empty() {
            // As write(2) of nothing: no change, not even to the size when
            // the offset lies past the end.
            self.file_state(ino)?;
            return Ok((0, false));
        }
        let _g = self.ino_lock(ino);
        let cleared = if clear_setid && let Some(mode) = self.mode_without_setid(ino)? {
            let (seq, _) = self.inner.meta.apply(&Op::SetAttr {
                ino,
                mode: Some(mode),
                uid: None,
                gid: None,
                size: None,
                atime: None,
                mtime: None,
                ctime: now_ns(),
            })?;
            self.settle(seq)?;
            true
        } else {
            false
        };
        let n = match self.write_locked(ino, offset, data) {
            // Space of deleted files comes back when their free is durable;
            // commit now rather than fail a write that fits after all.
            Err(e) if no_space(&e) && self.reclaim()? => self.write_locked(ino, offset, data),
            r => r,
        }?;
        Ok((n, cleared))
    }

    /// Make `len` bytes at `offset` read as zeros, the size unchanged
    /// (`fallocate(PUNCH_HOLE | KEEP_SIZE)`). The stripes wholly inside the
    /// range give their space back on every member ([`DataStore::punch`]);
    /// the bytes around them, and an inline file, are written as zeros.
    pub fn punch_hole(&self, ino: u64, offset: u64, len: u64) -> Result<()> {
        self.writable()?;
        let _g = self.ino_lock(ino);
        let (size, inline) = self.file_state(ino)?;
        let end = offset.saturating_add(len).min(size);
        if offset >= end {
            return Ok(());
        }
        let sdb = self.inner.data.layout.stripe_data;
        let (first, last) = if inline.is_some() {
            (0, 0)
        } else {
            (offset.div_ceil(sdb), end / sdb)
        };
        let zero = |from: u64, to: u64| -> Result<()> {
            let zeros = vec![0u8; (to - from).min(1 << 20) as usize];
            let mut at = from;
            while at < to {
                let n = ((to - at) as usize).min(zeros.len());
                self.write_locked(ino, at, &zeros[..n])?;
                at += n as u64;
            }
            Ok(())
        };
        if first >= last {
            return zero(offset, end);
        }
        zero(offset, first * sdb)?;
        self.inner.data.punch(ino, first, last, size)?;
        self.inner.meta.apply(&Op::Extend {
            ino,
            end: offset,
            time: now_ns(),
        })?;
        zero(last * sdb, end)
    }

    /// Commit the journal so that freed files' data can go now; returns
    /// whether any went.
    fn reclaim(&self) -> Result<bool> {
        let freed = !lock(&self.inner.pending_free).is_empty();
        if freed {
            self.inner.meta.flush()?;
            self.reap();
        }
        let restored = self.inner.data.short_of_space() && self.inner.data.restore_reserves();
        Ok(freed || restored)
    }

    /// [`Array::write`] with the inode lock held.
    fn write_locked(&self, ino: u64, offset: u64, data: &[u8]) -> Result<usize> {
        let (size, inline) = self.file_state(ino)?;
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or_else(|| ArrayError::Invalid("write past the largest file offset".into()))?;
        // A member short of space keeps what it has left for the records:
        // no file data at all until files are deleted. Not only writes that
        // grow a file or go into the journal (an inline file's bytes): one
        // into a hole of a file takes new space as well, and would take
        // what the reserve let go.
        if self.inner.data.short_of_space() {
            return Err(ArrayError::NoSpace);
        }
        let time = now_ns();
        match inline {
            Some(_) if end <= INLINE_MAX => {
                self.inner.meta.apply(&Op::WriteInline {
                    ino,
                    offset,
                    data: data.to_vec(),
                    time,
                })?;
            }
            inline => {
                self.inner
                    .data
                    .note_unused_ino(self.inner.meta.read().next_ino);
                if let Some(content) = inline {
                    self.uninline(ino, &content)?;
                }
                self.inner.data.write(ino, offset, data, size)?;
                self.inner.meta.apply(&Op::Extend { ino, end, time })?;
            }
        }
        self.inner.meta.maybe_checkpoint()?;
        Ok(data.len())
    }

    /// Make the file's data and all metadata durable. (`datasync` changes
    /// nothing: the size must be committed either way, and other attributes
    /// ride in the same journal batch.)
    pub fn fsync(&self, ino: u64, _datasync: bool) -> Result<()> {
        if self.inner.read_only {
            return Ok(());
        }
        let (_, inline) = self.file_state(ino).or_else(|e| match e {
            ArrayError::IsDir | ArrayError::Invalid(_) => Ok((0, Some(Vec::new()))),
            e => Err(e),
        })?;
        if inline.is_none() {
            self.inner.data.fsync(ino)?;
        }
        self.inner.meta.flush()?;
        self.reap();
        // A member that failed (here or earlier) is on record before the
        // caller is told its data is safe: otherwise a crash now could
        // assemble the stale member as if it held this data.
        self.inner.record_failures()
    }

    /// Sync files whose last write is [`SETTLE_IDLE`] old and shrink the
    /// write-intent log to what is still being written; the mount calls it
    /// every second ([`DataStore::settle`]).
    pub fn settle_data(&self) -> Result<()> {
        if self.inner.read_only {
            return Ok(());
        }
        // Deleted files may have made room for the space kept back for
        // metadata (and a new member has none yet).
        self.inner.data.restore_reserves();
        self.inner.data.settle(SETTLE_IDLE)
    }

    /// Make all metadata durable (`syncfs`), then delete the data of the
    /// files whose free it made durable.
    pub fn sync_metadata(&self) -> Result<()> {
        self.inner.meta.flush()?;
        self.reap();
        self.inner.record_failures()
    }

    /// Write a metadata checkpoint now.
    pub fn checkpoint(&self) -> Result<u64> {
        self.writable()?;
        let seq = self.inner.meta.checkpoint()?;
        self.reap();
        Ok(seq)
    }

    pub fn getxattr(&self, ino: u64, name: &OsStr) -> Result<Vec<u8>> {
        let ns = self.inner.meta.read();
        let x = ns.get(ino)?.xattrs.as_deref().ok_or(ArrayError::NoAttr)?;
        let name = name_bytes(name);
        x.binary_search_by(|(n, _)| (**n).cmp(name))
            .map(|p| x[p].1.to_vec())
            .map_err(|_| ArrayError::NoAttr)
    }

    /// Set an attribute; `flags` are `XATTR_CREATE` / `XATTR_REPLACE`. An
    /// access ACL sets the mode bits instead, and is stored only when it
    /// says more than they do ([`crate::acl`]); its mode change is not seen
    /// by the kernel's attribute cache by itself, so callers that cache
    /// attributes must drop them.
    pub fn setxattr(&self, ino: u64, name: &OsStr, value: &[u8], flags: u32) -> Result<()> {
        self.writable()?;
        let n = name_bytes(name);
        let known = [&b"user."[..], b"trusted.", b"security."]
            .iter()
            .any(|p| n.starts_with(p) && n.len() > p.len())
            || n == acl::ACCESS_XATTR
            || n == acl::DEFAULT_XATTR;
        if !known {
            // As ext4: no handler for any other namespace.
            return Err(ArrayError::Unsupported(format!(
                "extended attribute {:?}: only the user., trusted. and security. namespaces and POSIX ACLs",
                name
            )));
        }
        // Values go into the journal: not while a member is short of space.
        if self.inner.data.short_of_space() {
            return Err(ArrayError::NoSpace);
        }
        if name_bytes(name) == acl::ACCESS_XATTR {
            return self.set_access_acl(ino, value);
        }
        if name_bytes(name) == acl::DEFAULT_XATTR {
            // As the kernel's `set_posix_acl`: only directories have one,
            // and it follows the rules of an access ACL.
            if !self.inner.meta.read().get(ino)?.is_dir() {
                return Err(ArrayError::AccessDenied(
                    "a default ACL on anything but a directory".into(),
                ));
            }
            acl::AccessAcl::parse(value)?;
        }
        let op = Op::SetXattr {
            ino,
            name: name_bytes(name).to_vec(),
            value: value.to_vec(),
            flags,
            time: now_ns(),
        };
        let (seq, _) = self.inner.meta.apply(&op)?;
        self.settle(seq)
    }

    /// `setxattr` of the access ACL, as ext4's `ext4_set_acl`: the mode
    /// bits follow the ACL (file type and set-ID bits kept), and the ACL is
    /// stored only if it has named entries or a mask. Like the kernel's own
    /// ACL path, it ignores `XATTR_CREATE`/`XATTR_REPLACE`.
    fn set_access_acl(&self, ino: u64, value: &[u8]) -> Result<()> {
        let a = acl::AccessAcl::parse(value)?;
        let _g = self.ino_lock(ino);
        let (mode, stored) = {
            let ns = self.inner.meta.read();
            let i = ns.get(ino)?;
            if matches!(i.body, Body::Symlink(_)) {
                return Err(ArrayError::Unsupported(
                    "POSIX ACLs on a symbolic link".into(),
                ));
            }
            let stored = i.xattrs.as_deref().is_some_and(|x| {
                x.binary_search_by(|(n, _)| (**n).cmp(acl::ACCESS_XATTR))
                    .is_ok()
            });
            (i.mode, stored)
        };
        let new_mode = (mode & 0o7000) | a.mode_bits();
        // A mode-only ACL is not stored: the mode says it all.
        let acl = (!a.is_mode_only()).then(|| a.encode());
        if new_mode == mode & 0o7777 && acl.is_none() && !stored {
            return Ok(());
        }
        let op = Op::SetModeAcl {
            ino,
            mode: new_mode,
            acl,
            time: now_ns(),
        };
        let (seq, _) = self.inner.meta.apply(&op)?;
        self.settle(seq)
    }

    /// After a mode change to `mode`, the stored access ACL (if any) takes
    /// the new owner, mask and other bits, as `posix_acl_chmod` (caller
    /// holds the inode lock): `Some(acl)` to record with the mode (`None`
    /// inside: remove it), `None` when there is no ACL to change.
    fn acl_after_chmod(&self, ino: u64, mode: u32) -> Result<Option<Option<Vec<u8>>>> {
        let current = {
            let ns = self.inner.meta.read();
            let i = ns.get(ino)?;
            i.xattrs.as_deref().and_then(|x| {
                x.binary_search_by(|(n, _)| (**n).cmp(acl::ACCESS_XATTR))
                    .ok()
                    .map(|p| x[p].1.to_vec())
            })
        };
        let Some(bytes) = current else {
            return Ok(None);
        };
        let Ok(a) = acl::AccessAcl::parse(&bytes) else {
            // Stored before ACLs were understood and not valid: left alone.
            return Ok(None);
        };
        if a.is_mode_only() {
            // Says no more than the mode (stored before ACLs were
            // understood): the mode alone stands, as on ext4.
            return Ok(Some(None));
        }
        let updated = a.with_mode(mode).encode();
        Ok((updated != bytes).then_some(Some(updated)))
    }

    pub fn listxattr(&self, ino: u64) -> Result<Vec<Vec<u8>>> {
        let ns = self.inner.meta.read();
        Ok(ns
            .get(ino)?
            .xattrs
            .as_deref()
            .map(|x| x.iter().map(|(n, _)| n.to_vec()).collect())
            .unwrap_or_default())
    }

    pub fn removexattr(&self, ino: u64, name: &OsStr) -> Result<()> {
        self.writable()?;
        // The access ACL changes together with the mode under this lock.
        let _g = (name_bytes(name) == acl::ACCESS_XATTR).then(|| self.ino_lock(ino));
        let op = Op::RemoveXattr {
            ino,
            name: name_bytes(name).to_vec(),
            time: now_ns(),
        };
        let (seq, _) = self.inner.meta.apply(&op)?;
        self.settle(seq)
    }

    /// Whether some member in service has given up the space it keeps for
    /// the array's records: writes of file data are refused until
    /// files are deleted ([`crate::member::reserve`]).
    pub fn short_of_space(&self) -> bool {
        self.inner.data.short_of_space()
    }

    /// Usable capacity and use (by the geometry over the present members).
    pub fn statfs(&self) -> Result<StatFs> {
        const BSIZE: u64 = 4096;
        let i = &self.inner;
        let members = i.members();
        let mut totals = Vec::with_capacity(members.len());
        let mut avails = Vec::with_capacity(members.len());
        let mut fs_ids = Vec::with_capacity(members.len());
        for m in &members {
            let (t, a) = match m {
                Some(m) => m.space().unwrap_or((0, 0)),
                None => (0, 0),
            };
            totals.push(t);
            avails.push(a);
            fs_ids.push(m.as_ref().and_then(|m| m.filesystem_id().ok().flatten()));
        }
        // Members on one filesystem share its space: each gets an even part,
        // or the level's rule would count that space once per member.
        let mut sharing: HashMap<u64, u64> = HashMap::new();
        for id in fs_ids.iter().flatten() {
            *sharing.entry(*id).or_insert(0) += 1;
        }
        for (k, id) in fs_ids.iter().enumerate() {
            if let Some(n) = id.and_then(|id| sharing.get(&id).copied()) {
                totals[k] /= n;
                avails[k] /= n;
            }
        }
        // A missing member is assumed as large as the smallest present one,
        // so a degraded array still reports its real capacity.
        let fill = |v: &mut Vec<u64>| {
            let min = v.iter().copied().filter(|&x| x > 0).min().unwrap_or(0);
            for (k, x) in v.iter_mut().enumerate() {
                if members[k].is_none() {
                    *x = min;
                }
            }
        };
        fill(&mut totals);
        fill(&mut avails);
        let total = i.geometry.usable_capacity(&totals);
        let avail = i.geometry.usable_capacity(&avails).min(total);
        let files = i.meta.read().inodes.len() as u64;
        let ffree = u64::from(u32::MAX);
        Ok(StatFs {
            bsize: BSIZE as u32,
            blocks: total / BSIZE,
            bfree: avail / BSIZE,
            bavail: avail / BSIZE,
            files: files + ffree,
            ffree,
            namelen: crate::meta::inode::NAME_MAX as u32,
        })
    }
}

impl Inner {
    fn members(&self) -> Vec<Option<Arc<dyn Member>>> {
        self.members
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_member(&self, slot: usize, member: Option<Arc<dyn Member>>) {
        if let Some(m) = self
            .members
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(slot)
        {
            *m = member;
        }
    }

    fn spares(&self) -> Vec<Spare> {
        lock(&self.spares).clone()
    }

    /// Write the superblocks of every member in service and every spare.
    fn write_sbs(&self) -> Result<()> {
        write_superblocks(&self.sb, &self.members(), &self.spares(), &self.health)
    }

    /// Return only once every failure and state change the health has
    /// seen so far is recorded in the superblocks of the members in
    /// service (written now if the listener has not got to it yet).
    fn record_failures(&self) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        // A transient write error is retried; a member failing meanwhile
        // is itself a new state to record. A few rounds settle both.
        let mut last = None;
        for _ in 0..4 {
            if self.health.generation() <= lock(&self.sb).persisted_gen {
                return Ok(());
            }
            if let Err(e) = self.write_sbs() {
                tracing::warn!(error = %e, "recording member states failed; retrying");
                last = Some(e);
            }
        }
        if self.health.generation() <= lock(&self.sb).persisted_gen {
            return Ok(());
        }
        Err(last.unwrap_or_else(|| {
            ArrayError::ArrayFailed("member states keep changing; not all are on record".into())
        }))
    }

    /// One attempt to bring the superblocks up to the health generation
    /// (the listener's; [`Inner::record_failures`] retries).
    fn record_once(&self) -> Result<()> {
        if self.health.generation() <= lock(&self.sb).persisted_gen {
            return Ok(());
        }
        self.write_sbs()
    }

    /// The size of `ino` if it is a file whose data is striped (not deleted,
    /// nor inline). The namespace lock is never held while a file's lock
    /// is awaited, so a scrub or rebuild may ask under one.
    pub(crate) fn striped_size(&self, ino: u64) -> Option<u64> {
        self.meta
            .read()
            .inodes
            .get(&ino)
            .filter(|i| matches!(i.body, Body::File { inline: None }))
            .map(|i| i.size)
    }

    /// Every regular file whose data is striped, as (inode, size).
    fn striped_files(&self) -> Vec<(u64, u64)> {
        let ns = self.meta.read();
        ns.inodes
            .iter()
            .filter(|(_, i)| matches!(i.body, Body::File { inline: None }))
            .map(|(ino, i)| (ino, i.size))
            .collect()
    }
}

impl Drop for Array {
    fn drop(&mut self) {
        // Also after close: then there is nothing left to stop.
        worker::stop(&self.inner);
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if !self.closed.load(Ordering::SeqCst) {
            tracing::warn!("array dropped without close: it stays marked dirty");
        }
    }
}

/// Write the template superblock (events + 1) to every member that is in
/// service or a spare. Members that fail the write are marked failed.
fn write_superblocks(
    sb: &Mutex<SbState>,
    members: &[Option<Arc<dyn Member>>],
    spares: &[Spare],
    health: &Health,
) -> Result<()> {
    let mut g = lock(sb);
    g.template.events += 1;
    let (generation, states) = health.snapshot();
    for (k, st) in states.iter().enumerate() {
        g.template.members[k].state = to_slot(*st);
    }
    let mut written = 0;
    let mut last_err = None;
    for (k, m) in members.iter().enumerate() {
        let Some(m) = m else { continue };
        if !(states[k].writable() || states[k] == MemberState::Spare) {
            continue;
        }
        let mut s = g.template.clone();
        s.member_index = k as u32;
        s.member_uuid = s.members[k].uuid;
        let res = s.encode().and_then(|bytes| {
            m.write_atomic(superblock::PATH, &bytes).map_err(|e| {
                // Counted, but the member stays: its copy lags behind (the
                // next write tries again, assembly catches a lagging
                // superblock up), as a transient error on a small atomic
                // rewrite should not cost a whole rebuild.
                health.count_write_error(k);
                ArrayError::MemberIo {
                    member: k,
                    path: m.describe(),
                    context: "write superblock".into(),
                    source: e,
                }
            })
        });
        match res {
            Ok(()) => written += 1,
            Err(e) => {
                tracing::error!(member = k, error = %e, "superblock write failed");
                last_err = Some(e);
            }
        }
    }
    for spare in spares {
        let mut s = g.template.clone();
        s.member_index = superblock::SPARE_INDEX;
        s.member_uuid = spare.uuid;
        let res = s.encode().and_then(|bytes| {
            spare
                .member
                .write_atomic(superblock::PATH, &bytes)
                .map_err(|e| ArrayError::Invalid(format!("{}: {e}", spare.path.display())))
        });
        if let Err(e) = res {
            tracing::error!(spare = %spare.path.display(), error = %e, "spare superblock write failed");
        }
    }
    if written == 0 {
        return Err(last_err.unwrap_or_else(|| {
            ArrayError::ArrayFailed("no member to write a superblock to".into())
        }));
    }
    g.persisted_gen = g.persisted_gen.max(generation);
    Ok(())
}

/// Persist member failures and state changes into the superblocks as they
/// happen, so that a failed member is known as failed at the next assemble.
fn spawn_health_listener(inner: Weak<Inner>, rx: std::sync::mpsc::Receiver<HealthEvent>) {
    let spawned = std::thread::Builder::new().name("raidfs-health".into()).spawn(move || {
        for ev in rx {
            let Some(i) = inner.upgrade() else { break };
            if i.read_only {
                // Failures are noticed in memory; the members stay untouched.
                if let HealthEvent::Failed { member, .. } = ev {
                    i.meta.drop_member(member);
                }
                continue;
            }
            match ev {
                HealthEvent::Failed { member, .. } => {
                    {
                        // Under the worker lock: a spare may already have
                        // taken the slot (then its journal stays).
                        let _w = lock(&i.worker);
                        if i.health.state(member) == MemberState::Failed {
                            i.meta.drop_member(member);
                        }
                    }
                    if let Err(e) = i.record_once() {
                        tracing::error!(error = %e, "cannot record member failure in superblocks");
                    }
                    // Degraded now: a crash would make every dirty stripe
                    // unreadable on the missing member, so shrink the
                    // write-intent log to what is being written.
                    if let Err(e) = i.data.settle(Duration::ZERO) {
                        tracing::warn!(error = %e, "cannot sync dirty files after a member failure");
                    }
                    // A hot spare takes over, once assembly has resynced
                    // (it kicks the worker itself then).
                    if i.serving.load(Ordering::SeqCst) {
                        worker::kick(&i);
                    }
                }
                HealthEvent::StateChanged { .. } => {
                    if let Err(e) = i.record_once() {
                        tracing::error!(error = %e, "cannot record member state in superblocks");
                    }
                }
                HealthEvent::Repaired { .. } => {}
            }
        }
    });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the health listener; failures will not reach the superblocks");
    }
}
