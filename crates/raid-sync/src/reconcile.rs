//! One sync pass: compare the local tree (or part of it) with the state, and
//! bring the bucket in line — uploads, server-side copies for renames and
//! attribute changes, delete markers for removals.
//!
//! The state is trusted as a description of the bucket, so a pass over an
//! unchanged tree sends no request. The bucket is listed only when the state
//! has never been reconciled (first run, lost state) or `--full` asks for it;
//! then objects that already hold the right content (same size and
//! `x-amz-meta-crc32`) are adopted instead of uploaded again, and objects with
//! no local counterpart get a delete marker.
//!
//! Ordering: copies (rename targets) happen before the deletes of their
//! sources; a failed file keeps its old state entry, so the next pass retries
//! it; the state is saved every few seconds during long passes and at the end.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Serialize;

use crate::dirmeta::{self, DirManifest};
use crate::error::{Error, Result};
use crate::keys::{self, KeyPrefix};
use crate::keysource;
use crate::object_meta::{Kind, ObjectMeta};
use crate::s3::Bucket;
use crate::scan::{self, Scan};
use crate::state::{Entry, StateStore};
use crate::upload::{self, Copied, MAX_COPY_SIZE, Uploader};

/// Passes in a row in which a file changed while being read before it counts
/// as a failure (notified, in the failed count) instead of being deferred.
pub const DEFER_LIMIT: u32 = 5;

/// A request to stop (SIGTERM or SIGINT): a running pass starts no further
/// file, lets the ones in flight finish (for up to [`Syncer::stop_grace`]), saves the
/// state and returns.
#[derive(Debug, Clone)]
pub struct Stop(Arc<tokio::sync::watch::Sender<bool>>);

impl Default for Stop {
    fn default() -> Self {
        Stop(Arc::new(tokio::sync::watch::channel(false).0))
    }
}

impl Stop {
    /// Asks every holder to stop.
    pub fn request(&self) {
        self.0.send_replace(true);
    }

    /// Whether a stop was requested.
    pub fn requested(&self) -> bool {
        *self.0.borrow()
    }

    /// Returns once a stop is requested (at once if it already was).
    pub async fn wait(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|v| *v).await;
    }
}

/// How often a long pass saves the state.
const SAVE_EVERY: Duration = Duration::from_secs(5);

/// What one pass did (printed by `--json`).
#[derive(Debug, Default, Clone, Serialize)]
pub struct Summary {
    /// Whether the bucket was listed (first run, lost state or `--full`).
    pub full_reconcile: bool,
    pub scanned: u64,
    /// Entries that needed nothing: unchanged by `stat`, or read again and
    /// found to hold the recorded content and attributes.
    pub unchanged: u64,
    pub uploaded: u64,
    pub uploaded_bytes: u64,
    /// Multipart parts already on the server from an interrupted upload.
    pub parts_reused: u64,
    /// Renames done as server-side copies.
    pub copied: u64,
    /// Attribute-only changes done as server-side copies.
    pub metadata_updated: u64,
    /// Objects already in the bucket with the right content (full reconcile).
    pub adopted: u64,
    pub deleted: u64,
    /// Keys to delete (entries gone from the scan, or listed keys with no
    /// entry in it) whose path exists again by the time of the delete:
    /// created after the scan, so not deleted; the next pass takes them.
    pub kept: u64,
    /// Files that changed while being read; the next pass takes them (the
    /// daemon is woken by the change itself). Not failures.
    pub deferred: u64,
    /// Files that disappeared between the scan and their upload; the next
    /// pass deletes their objects (the daemon is woken by the removal
    /// itself). Not failures.
    pub vanished: u64,
    /// Directories recorded only in the directory manifest (not empty, so
    /// no marker object).
    pub dirs_in_manifest: u64,
    /// Whether the directory manifest was written in this pass.
    pub dirs_manifest: bool,
    /// Files read so soon after their last change that `stat` cannot vouch
    /// for what was read (see [`Entry::racy`]): the next pass reads them
    /// again (the daemon runs one for them shortly after).
    pub racy: u64,
    /// Their paths.
    #[serde(skip)]
    pub racy_paths: Vec<String>,
    pub failed: u64,
    pub failures: Vec<String>,
    /// The paths of the files among `failed` (an upload that failed, a
    /// file never still long enough): the daemon retries them on their
    /// own. Other failures (deletes, the listing, the manifest) are not here.
    #[serde(skip)]
    pub failed_paths: Vec<String>,
    /// The pass was stopped (SIGTERM, SIGINT) before it was done: files not
    /// started, deletes and the directory manifest are left to the next one.
    pub interrupted: bool,
    /// Entries skipped by this pass (`path: reason`): names that are not
    /// UTF-8 or contain a line break, sockets, FIFOs, devices, what could
    /// not be read.
    pub skipped: Vec<String>,
    /// Entries skipped in the whole tree as last seen (a daemon's pass over
    /// a few paths keeps what earlier passes found elsewhere).
    pub skipped_total: u64,
    pub s3_requests: u64,
    pub seconds: f64,
}

/// The pass engine for one source tree and one bucket prefix.
#[derive(Debug)]
pub struct Syncer {
    pub source: PathBuf,
    pub prefix: KeyPrefix,
    pub bucket: Arc<Bucket>,
    pub up: Arc<Uploader>,
    pub store: Arc<StateStore>,
    /// Show a progress bar (initial sync in a terminal).
    pub progress: bool,
    /// What the running pass still has to do (for the run record).
    pub pending: Arc<Pending>,
    /// Let a whole-tree pass that finds the source empty delete what the
    /// state or the bucket holds (`--allow-empty-source`).
    pub allow_empty_source: bool,
    /// Entries skipped in the tree as last seen (path → reason).
    pub skipped: Mutex<BTreeMap<String, String>>,
    /// Set on SIGTERM or SIGINT: the running pass stops at the next file.
    pub stop: Stop,
    /// How long transfers in flight may go on after a stop request before
    /// they are dropped (`--stop-grace`, 20 s: well within systemd's
    /// `TimeoutStopSec=60s`). A dropped multipart upload is resumed by the
    /// next run; a dropped single PUT is sent again.
    pub stop_grace: Duration,
}

/// Files and bytes a running pass still has to bring to the bucket: set
/// when the pass has planned, counted down as jobs end (done or failed).
#[derive(Debug, Default)]
pub struct Pending {
    files: AtomicU64,
    bytes: AtomicU64,
}

impl Pending {
    /// (files, bytes) still to do.
    pub fn get(&self) -> (u64, u64) {
        (
            self.files.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }

    fn set(&self, files: u64, bytes: u64) {
        self.files.store(files, Ordering::Relaxed);
        self.bytes.store(bytes, Ordering::Relaxed);
    }

    fn done(&self, bytes: u64) {
        self.files.fetch_sub(1, Ordering::Relaxed);
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// One thing to bring to the bucket.
struct Job {
    rel: String,
    now: Entry,
    old: Option<Entry>,
    /// A directory with nothing in it: it gets a marker object.
    empty_dir: bool,
}

/// A file's identity as `stat` gives it: device, inode, size, mtime.
type InodeKey = (u64, u64, u64, i64, u32);

/// Rename sources: files gone from the tree (not a path that changed kind),
/// found by inode or by size + CRC; the content (CRC) must match either way.
#[derive(Default)]
struct RenameIndex {
    /// Path and CRC of the removed file.
    by_inode: HashMap<InodeKey, (String, Option<u32>)>,
    by_crc: HashMap<(u64, u32), String>,
}

impl RenameIndex {
    /// Records a removed file as a possible rename source.
    fn add(&mut self, rel: &str, e: &Entry) {
        self.by_inode.insert(
            (e.dev, e.ino, e.size, e.mtime_sec, e.mtime_nsec),
            (rel.to_string(), e.crc32),
        );
        if let Some(c) = e.crc32 {
            self.by_crc.insert((e.size, c), rel.to_string());
        }
    }

    /// The removed file whose object holds the content of `now` (CRC
    /// `crc`). An inode match alone is not enough: a freed inode can be
    /// reused by a new file of the same size and mtime.
    fn find(&self, now: &Entry, crc: u32) -> Option<String> {
        self.by_inode
            .get(&(now.dev, now.ino, now.size, now.mtime_sec, now.mtime_nsec))
            .filter(|(_, c)| *c == Some(crc))
            .map(|(rel, _)| rel)
            .or_else(|| self.by_crc.get(&(now.size, crc)))
            .cloned()
    }
}

impl Syncer {
    /// Runs one pass over `scopes` (relative paths; `[""]` = whole tree).
    /// `full` lists the bucket and reconciles against it.
    pub async fn pass(&self, scopes: &[String], full: bool) -> Result<Summary> {
        let t0 = Instant::now();
        let root = self.check_source()?;
        let req0 = self.bucket.requests();
        let full = full || !self.store.lock().reconciled;
        let scopes: Vec<String> = if full {
            vec![String::new()]
        } else {
            minimal_scopes(scopes)
        };
        let mut sum = Summary {
            full_reconcile: full,
            ..Summary::default()
        };

        // Local side.
        let source = self.source.clone();
        let sc = scopes.clone();
        let mut scan: Scan = tokio::task::spawn_blocking(move || {
            let mut s = Scan::default();
            for scope in &sc {
                scan::scan_scope(&source, scope, &mut s)?;
            }
            Ok::<_, Error>(s)
        })
        .await
        .map_err(|e| Error::io("scanning", &self.source, std::io::Error::other(e)))??;
        sum.scanned = scan.entries.len() as u64;
        let skipped = std::mem::take(&mut scan.skipped);
        for s in &skipped {
            tracing::warn!("skipped {s}");
        }
        sum.skipped = skipped.iter().map(ToString::to_string).collect();
        {
            // What earlier passes found outside these scopes still stands.
            let mut known = self.skipped.lock().unwrap_or_else(|p| p.into_inner());
            known.retain(|path, _| !scopes.iter().any(|s| keys::in_scope(path, s)));
            for s in skipped {
                known.insert(s.path, s.reason);
            }
            sum.skipped_total = known.len() as u64;
        }

        // Remote side, only when reconciling fully.
        let remote: Option<HashMap<String, u64>> = if full {
            let listed = self.bucket.list(self.prefix.as_str()).await?;
            Some(
                listed
                    .into_iter()
                    .filter(|o| !self.is_reserved_key(&o.key))
                    .map(|o| (o.key, o.size))
                    .collect(),
            )
        } else {
            None
        };
        if scopes.iter().any(|s| s.is_empty()) {
            self.refuse_empty_source(&scan, remote.as_ref())?;
        }

        // Plan.
        let (jobs, removed) = {
            let mut st = self.store.lock();
            // Deferral counts of files gone from the scopes are dropped.
            st.deferred.retain(|rel, _| {
                !scopes.iter().any(|s| keys::in_scope(rel, s))
                    || scan.entries.get(rel).is_some_and(|e| e.kind == Kind::File)
            });
            let mut jobs = Vec::new();
            for (rel, now) in &scan.entries {
                if keysource::is_reserved(rel) {
                    continue;
                }
                let old = st.entries.get(rel);
                // A directory that could not be listed is not known empty.
                let empty_dir = now.kind == Kind::Dir
                    && is_empty_dir(&scan.entries, rel)
                    && !scan.in_unreadable(rel);
                match old {
                    Some(o) if o.unchanged(now) => {
                        // Only files, symlinks and empty directories have
                        // an object; other directories live in the manifest.
                        let present = remote.as_ref().is_none_or(|r| {
                            (o.kind == Kind::Dir && !empty_dir)
                                || r.contains_key(&self.key_of(rel, o.kind))
                        });
                        if present {
                            sum.unchanged += 1;
                            continue;
                        }
                        jobs.push(Job {
                            rel: rel.clone(),
                            now: now.clone(),
                            old: None,
                            empty_dir,
                        });
                    }
                    _ => {
                        // On a full reconcile, an old entry whose object is
                        // gone says nothing of the bucket: the file is sent
                        // even if its content is the recorded one.
                        let in_bucket = remote.as_ref().is_none_or(|r| {
                            now.kind == Kind::Dir || r.contains_key(&self.key_of(rel, now.kind))
                        });
                        jobs.push(Job {
                            rel: rel.clone(),
                            now: now.clone(),
                            old: old.filter(|o| o.kind == now.kind && in_bucket).cloned(),
                            empty_dir,
                        })
                    }
                }
            }
            let mut removed: Vec<(String, Entry)> = st
                .entries
                .iter()
                .filter(|(rel, e)| {
                    scopes.iter().any(|s| keys::in_scope(rel, s))
                        && scan.entries.get(*rel).is_none_or(|n| n.kind != e.kind)
                        // Not seen because it could not be read: kept.
                        && !scan.in_unreadable(rel)
                })
                .map(|(r, e)| (r.clone(), e.clone()))
                .collect();
            removed.sort_by(|a, b| a.0.cmp(&b.0));
            (jobs, removed)
        };

        // Rename sources: files gone from the tree. A path that changed kind
        // is no source: its key gets the new entry's object in this pass (a
        // symlink's PUT can land before a copy from that key would read it).
        let mut renames = RenameIndex::default();
        for (rel, e) in &removed {
            if e.kind == Kind::File
                && !scan.entries.contains_key(rel)
                && self.up.object_len(e.size) <= MAX_COPY_SIZE
            {
                renames.add(rel, e);
            }
        }

        let job_bytes = |j: &Job| {
            if j.now.kind == Kind::File {
                j.now.size
            } else {
                0
            }
        };
        self.pending
            .set(jobs.len() as u64, jobs.iter().map(job_bytes).sum());
        let bar = self.bar(jobs.len() as u64);
        let sum = Mutex::new(sum);
        // Keys this pass wrote: never deleted by its delete phase (a path
        // that changed between file and symlink keeps its key).
        let written: Mutex<HashSet<String>> = Mutex::new(HashSet::new());
        let written_r = &written;
        let last_save = Mutex::new(Instant::now());
        let renames = &renames;
        let remote_ref = remote.as_ref();
        let (sum_r, save_r, bar_r) = (&sum, &last_save, &bar);
        let work = futures::stream::iter(jobs)
            .map(move |job| async move {
                let rel = job.rel.clone();
                let bytes = job_bytes(&job);
                if self.stop.requested() {
                    // Stopping: no further file is started.
                    self.pending.done(bytes);
                    return;
                }
                let r = self.apply(job, renames, remote_ref).await;
                if matches!(r, Err(Error::Gone { .. })) {
                    self.drop_pending_upload(&rel, "its file is gone").await;
                }
                self.pending.done(bytes);
                bar_r.inc(1);
                let mut s = sum_r.lock().unwrap_or_else(|p| p.into_inner());
                match r {
                    Ok(done) => {
                        self.store.lock().deferred.remove(&rel);
                        done.add_to(&mut s);
                        if done.racy {
                            s.racy += 1;
                            s.racy_paths.push(rel.clone());
                        }
                        if let Some(k) = done.key {
                            written_r
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .insert(k);
                        }
                    }
                    Err(e @ Error::Changed { .. }) => {
                        let times = {
                            let mut st = self.store.lock();
                            let n = st.deferred.entry(rel.clone()).or_insert(0);
                            *n = n.saturating_add(1);
                            *n
                        };
                        s.deferred += 1;
                        if times >= DEFER_LIMIT {
                            let msg = format!(
                                "{rel}: changed while being read in {times} passes in a row; it \
                                 is never still long enough to be copied (a file written \
                                 continuously, such as a database or a log, needs a quiet \
                                 moment or a snapshot to be backed up)"
                            );
                            tracing::error!("{msg}");
                            s.failed += 1;
                            s.failures.push(msg);
                            s.failed_paths.push(rel.clone());
                        } else {
                            tracing::info!(path = %rel, times, "{e}");
                        }
                    }
                    Err(e @ Error::Gone { .. }) => {
                        self.store.lock().deferred.remove(&rel);
                        s.vanished += 1;
                        tracing::info!(path = %rel, "{e}");
                    }
                    Err(e) => {
                        tracing::warn!(path = %rel, error = %e, "upload failed");
                        s.failed += 1;
                        s.failures.push(e.to_string());
                        s.failed_paths.push(rel.clone());
                    }
                }
                drop(s);
                let due = {
                    let mut l = save_r.lock().unwrap_or_else(|p| p.into_inner());
                    let due = l.elapsed() >= SAVE_EVERY;
                    if due {
                        *l = Instant::now();
                    }
                    due
                };
                if due && let Err(e) = self.store.save_in_async() {
                    tracing::warn!(error = %e, "saving state");
                }
            })
            .buffer_unordered(self.up.jobs)
            .collect::<()>();
        let cut_short = tokio::select! {
            () = work => false,
            () = async {
                self.stop.wait().await;
                tokio::time::sleep(self.stop_grace).await;
            } => true,
        };
        if cut_short {
            tracing::warn!(
                grace = ?self.stop_grace,
                "stopping: transfers still in flight dropped (multipart uploads resume on \
                 the next run)"
            );
        }
        bar.finish_and_clear();
        self.pending.set(0, 0);
        let mut sum = sum.into_inner().unwrap_or_else(|p| p.into_inner());
        let interrupted = self.stop.requested();
        if interrupted {
            sum.interrupted = true;
            tracing::info!(
                "stopping: the rest of this pass (files not started, deletes) is left to the next run"
            );
            return self.finish_pass(sum, full, root, req0, t0);
        }

        // Deletes: removed entries, and (full) remote keys with no local
        // entry; never a key this pass wrote, nor one in a subtree that could
        // not be read.
        let written = written.into_inner().unwrap_or_else(|p| p.into_inner());
        let mut to_delete: BTreeMap<String, Option<(String, Kind)>> = removed
            .iter()
            .map(|(rel, e)| (self.key_of(rel, e.kind), Some((rel.clone(), e.kind))))
            .filter(|(key, _)| !written.contains(key))
            .collect();
        if let Some(remote) = &remote {
            let wanted: HashSet<String> = scan
                .entries
                .iter()
                .map(|(rel, e)| self.key_of(rel, e.kind))
                .collect();
            for key in remote.keys() {
                let unreadable = self
                    .prefix
                    .rel_of(key)
                    .is_ok_and(|(rel, _)| scan.in_unreadable(&rel));
                if !wanted.contains(key) && !written.contains(key) && !unreadable {
                    to_delete.entry(key.clone()).or_insert(None);
                }
            }
        }
        // The scan ran before the listing and the uploads: a path created
        // since (and perhaps sent by another process, e.g. the daemon beside
        // a `--once` with another state file) has no entry in the scan, but
        // it is live. Its key is kept; the next pass takes the path.
        to_delete.retain(|key, rel| {
            let rel = match rel {
                Some((rel, _)) => Some(rel.clone()),
                None => self.prefix.rel_of(key).ok().map(|(rel, _)| rel),
            };
            let Some(rel) = rel.filter(|r| !scan.entries.contains_key(r)) else {
                return true;
            };
            match self.exists_now(&rel) {
                Some(why) => {
                    tracing::info!("not deleting {key}: {why} (created after the scan?)");
                    sum.kept += 1;
                    false
                }
                None => true,
            }
        });
        if !to_delete.is_empty() {
            let keys: Vec<String> = to_delete.keys().cloned().collect();
            match self.bucket.delete_keys(&keys).await {
                Ok(failed) => {
                    let failed_keys: HashSet<&str> =
                        failed.iter().map(|(k, _)| k.as_str()).collect();
                    let mut st = self.store.lock();
                    for (key, rel) in &to_delete {
                        if failed_keys.contains(key.as_str()) {
                            continue;
                        }
                        sum.deleted += 1;
                        // Only the entry of the old kind: a path that became
                        // a directory (or stopped being one) has a new entry.
                        if let Some((rel, kind)) = rel
                            && st.entries.get(rel).is_some_and(|e| e.kind == *kind)
                        {
                            st.entries.remove(rel);
                        }
                    }
                    for (k, why) in failed {
                        sum.failed += 1;
                        sum.failures.push(format!("delete {k}: {why}"));
                    }
                }
                Err(e) => {
                    sum.failed += keys.len() as u64;
                    sum.failures.push(e.to_string());
                }
            }
        }

        // Multipart uploads recorded for files no longer in the tree (a run
        // stopped in the middle of one, then the file went) never complete.
        let orphans: Vec<String> = self
            .store
            .lock()
            .uploads
            .keys()
            .filter(|rel| {
                scopes.iter().any(|s| keys::in_scope(rel, s))
                    && scan.entries.get(*rel).is_none_or(|e| e.kind != Kind::File)
                    && !scan.in_unreadable(rel)
            })
            .cloned()
            .collect();
        for rel in orphans {
            self.drop_pending_upload(&rel, "its file is gone").await;
        }

        self.write_dirs_manifest(&mut sum).await;
        self.finish_pass(sum, full, root, req0, t0)
    }

    /// Adds a pass to the totals and saves the state.
    fn finish_pass(
        &self,
        mut sum: Summary,
        full: bool,
        root: scan::SourceRoot,
        req0: u64,
        t0: Instant,
    ) -> Result<Summary> {
        {
            let mut st = self.store.lock();
            let complete = sum.failed == 0 && !sum.interrupted;
            // Files that failed on their own keep their old entries, and
            // their keys were not deleted: the bucket was still compared
            // whole, so the next passes need not list it again.
            let only_files_failed = sum.failed as usize == sum.failed_paths.len();
            if full && !sum.interrupted && only_files_failed {
                st.reconciled = true;
            }
            st.totals.uploaded_bytes += sum.uploaded_bytes;
            st.totals.uploaded_objects += sum.uploaded;
            st.totals.copied_objects += sum.copied + sum.metadata_updated;
            st.totals.deleted_objects += sum.deleted;
            st.totals.failed_files += sum.failed;
            if complete {
                st.totals.last_success_unix = Some(unix_now());
                st.source_mount_root = Some(root.mount_root);
            } else if sum.failed > 0 {
                st.totals.failed_runs += 1;
            }
        }
        self.store.save_in_async()?;
        sum.s3_requests = self.bucket.requests() - req0;
        sum.seconds = t0.elapsed().as_secs_f64();
        Ok(sum)
    }

    /// Reads the identity of the source and refuses it if it was a mount
    /// point at the last successful pass and no longer is: the array is then
    /// most likely not mounted, and the directory underneath is no copy of
    /// the tree.
    pub fn check_source(&self) -> Result<scan::SourceRoot> {
        let root = scan::source_root(&self.source)?;
        if self.store.lock().source_mount_root == Some(true) && !root.mount_root {
            return Err(Error::Source {
                path: self.source.clone(),
                message: format!(
                    "is no longer a mount point, but was one when last synced: is the array \
                     mounted? Nothing is synced until it is (a pass over the bare mount-point \
                     directory would delete the mirror). If it is no longer meant to be a \
                     mount point, remove the state file {} (the next pass then reconciles \
                     against the bucket)",
                    self.store.path().display()
                ),
            });
        }
        Ok(root)
    }

    /// Refuses a whole-tree pass over an empty source when the state or the
    /// bucket holds entries (unless `--allow-empty-source`): an unmounted or
    /// wrongly given source must not empty the mirror.
    fn refuse_empty_source(
        &self,
        scan: &Scan,
        remote: Option<&HashMap<String, u64>>,
    ) -> Result<()> {
        if self.allow_empty_source || scan.entries.keys().any(|r| !keysource::is_reserved(r)) {
            return Ok(());
        }
        let held = self.store.lock().entries.len();
        let listed = remote.map_or(0, |r| r.len());
        if held == 0 && listed == 0 {
            return Ok(());
        }
        let what = if held > 0 {
            format!("the state records {held} entries")
        } else {
            format!("the bucket holds {listed} objects")
        };
        Err(Error::Source {
            path: self.source.clone(),
            message: format!(
                "is empty, but {what} under s3://{}/{}: refusing to delete them all. Is the \
                 array mounted? If the tree really was emptied, run with --allow-empty-source",
                self.bucket.name,
                self.prefix.as_str()
            ),
        })
    }

    /// Writes the directory manifest if the directories in the state differ
    /// from what it last held (one PUT; none in a pass that changed no
    /// directory).
    async fn write_dirs_manifest(&self, sum: &mut Summary) {
        let (bytes, crc, last) = {
            let st = self.store.lock();
            let bytes = DirManifest::from_entries(&st.entries).to_bytes();
            let crc = crc32fast::hash(&bytes);
            (bytes, crc, st.dirs_manifest_crc)
        };
        if last == Some(crc) {
            return;
        }
        let key = dirmeta::manifest_key(self.prefix.as_str());
        let meta = ObjectMeta {
            kind: Kind::File,
            perm: 0o644,
            uid: 0,
            gid: 0,
            mtime_sec: unix_now(),
            mtime_nsec: 0,
            crc32: Some(crc),
            enc: None,
        };
        match self.up.put_small(&key, bytes, &meta).await {
            Ok(_) => {
                self.store.lock().dirs_manifest_crc = Some(crc);
                sum.dirs_manifest = true;
            }
            Err(e) => {
                tracing::warn!(error = %e, "writing the directory manifest");
                sum.failed += 1;
                sum.failures.push(e.to_string());
            }
        }
    }

    /// Why the key of `rel`, a path with no entry in the scan, must not be
    /// deleted: the path is there now, as the scan would take it (every
    /// parent a real directory, not a symlink to one; a file, directory or
    /// symlink, not a FIFO or socket the scan skips), or cannot be told
    /// absent. `None` when it is gone.
    fn exists_now(&self, rel: &str) -> Option<String> {
        let parts: Vec<&str> = rel.split('/').collect();
        let mut at = self.source.clone();
        for (n, part) in parts.iter().enumerate() {
            at.push(part);
            match std::fs::symlink_metadata(&at) {
                Ok(md) => {
                    let t = md.file_type();
                    let last = n + 1 == parts.len();
                    if (!last && !t.is_dir())
                        || (last && !(t.is_file() || t.is_dir() || t.is_symlink()))
                    {
                        return None;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                    ) =>
                {
                    return None;
                }
                Err(e) => return Some(format!("lstat {}: {e}", at.display())),
            }
        }
        Some(format!("{} exists now", at.display()))
    }

    fn key_of(&self, rel: &str, kind: Kind) -> String {
        self.prefix.key(rel, kind == Kind::Dir)
    }

    /// Keys under `<prefix>.raidfs-sync/` hold the tool's own data (key
    /// parameters), not part of the tree.
    fn is_reserved_key(&self, key: &str) -> bool {
        key.strip_prefix(self.prefix.as_str())
            .is_some_and(keysource::is_reserved)
    }

    /// The object metadata for an entry, marked encrypted when bodies are.
    fn meta(&self, e: &Entry, crc32: Option<u32>) -> ObjectMeta {
        let mut m = meta_of(e, crc32);
        if e.kind != Kind::Dir {
            m.enc = self.up.enc_id();
        }
        m
    }

    fn bar(&self, len: u64) -> indicatif::ProgressBar {
        if !self.progress || len < 2 {
            return indicatif::ProgressBar::hidden();
        }
        let bar = indicatif::ProgressBar::new(len);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{spinner} {pos}/{len} files [{elapsed_precise}] {wide_bar} eta {eta}",
        ) {
            bar.set_style(style);
        }
        bar
    }

    /// Give `key`'s object the attributes `meta` by copying it onto itself
    /// (counted as `metadata_updated`); false when S3 refuses because the
    /// object is archived, and nothing was written: the caller uploads.
    async fn set_attributes(&self, key: &str, meta: &ObjectMeta, done: &mut Done) -> Result<bool> {
        let copied = self.up.copy(key, key, meta).await? == Copied::Done;
        done.metadata_updated = u64::from(copied);
        Ok(copied)
    }

    /// Brings one entry to the bucket and records it in the state.
    async fn apply(
        &self,
        job: Job,
        renames: &RenameIndex,
        remote: Option<&HashMap<String, u64>>,
    ) -> Result<Done> {
        let Job {
            rel,
            mut now,
            old,
            empty_dir,
        } = job;
        let path = keys::join(&self.source, &rel);
        let key = self.key_of(&rel, now.kind);
        let mut done = Done::default();
        match now.kind {
            Kind::Dir if empty_dir => {
                let meta = self.meta(&now, None);
                self.up.put_small(&key, Vec::new(), &meta).await?;
                done.uploaded = 1;
                done.key = Some(key.clone());
            }
            // Recorded in the state; the directory manifest written at the
            // end of the pass carries its attributes.
            Kind::Dir => done.dirs_in_manifest = 1,
            Kind::Symlink => {
                let target = now.target.clone().unwrap_or_default().into_bytes();
                let crc = crc32fast::hash(&target);
                now.crc32 = Some(crc);
                let meta = self.meta(&now, Some(crc));
                // Same target: only attributes changed, copied onto itself
                // unless the object is archived (S3 refuses to copy it).
                let same_target = old.as_ref().is_some_and(|o| o.target == now.target);
                if !(same_target && self.set_attributes(&key, &meta, &mut done).await?) {
                    done.uploaded_bytes = self.up.put_small(&key, target, &meta).await?;
                    done.uploaded = 1;
                }
                done.key = Some(key.clone());
            }
            Kind::File => {
                let multipart = self.up.is_multipart(now.size);
                let in_memory = !multipart && self.up.in_memory(now.size);
                let part_size = self.up.part_size_for(now.size);
                let (p, e) = (path.clone(), now.clone());
                let read_start = std::time::SystemTime::now();
                let (data, crcs) = tokio::task::spawn_blocking(move || {
                    if !in_memory {
                        upload::crc_file(&p, e.size, part_size).map(|c| (None, c))
                    } else {
                        upload::read_small(&p, &e).map(|d| {
                            let full = crc32fast::hash(&d);
                            (
                                Some(d),
                                upload::FileCrcs {
                                    full,
                                    parts: Vec::new(),
                                    part_size,
                                },
                            )
                        })
                    }
                })
                .await
                .map_err(|e| Error::io("reading", &path, std::io::Error::other(e)))??;
                let crc = crcs.full;
                now.crc32 = Some(crc);
                // Changed too recently for its stat to vouch for this read:
                // the next pass reads it again.
                now.racy = now.is_racy(read_start, std::time::SystemTime::now());
                done.racy = now.racy;
                let meta = self.meta(&now, Some(crc));
                // CopyObject takes sources up to 5 GiB: a larger object whose
                // attributes changed is sent again.
                let copy_ok = self.up.object_len(now.size) <= MAX_COPY_SIZE;
                // Whether the object is already right without sending the
                // content: unchanged, or fixed by a server-side copy. A copy
                // whose source is archived (S3 refuses it) writes nothing and
                // the file is uploaded below.
                let in_place = if let Some(o) = old
                    .as_ref()
                    .filter(|o| o.size == now.size && o.crc32 == Some(crc))
                    && (copy_ok || self.meta(o, Some(crc)) == meta)
                {
                    // Same content: only attributes (or nothing visible) changed.
                    if self.meta(o, Some(crc)) != meta {
                        self.set_attributes(&key, &meta, &mut done).await?
                    } else {
                        // Read again (racy, or only the ctime moved): the
                        // object is right as it is.
                        done.unchanged = 1;
                        true
                    }
                } else if let Some(src) = renames.find(&now, crc) {
                    let src_key = self.key_of(&src, Kind::File);
                    let copied = self.up.copy(&src_key, &key, &meta).await? == Copied::Done;
                    if copied {
                        tracing::info!(from = %src, to = %rel, "rename: server-side copy");
                    }
                    done.copied = u64::from(copied);
                    copied
                } else if remote.and_then(|r| r.get(&key)) == Some(&self.up.object_len(now.size))
                    && let Some(rm) = self.remote_meta(&key).await
                    && rm.crc32 == Some(crc)
                    && rm.enc == meta.enc
                    && (copy_ok || rm == meta)
                {
                    // Same content (and same encryption key) already there.
                    if rm != meta {
                        self.set_attributes(&key, &meta, &mut done).await?
                    } else {
                        done.adopted = 1;
                        true
                    }
                } else {
                    false
                };
                if in_place {
                    // Nothing to send.
                } else if !multipart {
                    self.drop_pending_upload(&rel, "the file now goes in one PUT")
                        .await;
                    done.uploaded_bytes = match data {
                        Some(d) => self.up.put_small(&key, d, &meta).await?,
                        None => self.up.put_file(&key, &path, &now, crc, &meta).await?,
                    };
                    done.uploaded = 1;
                } else {
                    let sent = self
                        .up
                        .put_multipart(&self.store, &rel, &path, &key, &now, &meta, &crcs)
                        .await?;
                    done.uploaded_bytes = sent.bytes;
                    done.parts_reused = sent.parts_reused;
                    done.uploaded = 1;
                }
                done.key = Some(key.clone());
            }
        }
        self.store.lock().entries.insert(rel, now);
        Ok(done)
    }

    /// Aborts a multipart upload recorded for `rel` that will not be
    /// resumed, `why`: the file now goes in one PUT (it shrank, or the
    /// threshold was raised), or it is gone. Its parts would stay on the
    /// server, billed.
    async fn drop_pending_upload(&self, rel: &str, why: &str) {
        let pending = self.store.lock().uploads.remove(rel);
        if let Some(p) = pending {
            tracing::info!(path = %rel, "aborting a multipart upload: {why}");
            self.up.abort(&p.key, &p.upload_id).await;
            let _ = self.store.save_in_async();
        }
    }

    async fn head(
        &self,
        key: &str,
    ) -> Option<aws_sdk_s3::operation::head_object::HeadObjectOutput> {
        self.bucket.count();
        self.bucket
            .client
            .head_object()
            .bucket(&self.bucket.name)
            .key(key)
            .send()
            .await
            .ok()
    }

    async fn remote_meta(&self, key: &str) -> Option<ObjectMeta> {
        let h = self.head(key).await?;
        Some(ObjectMeta::from_map(h.metadata(), key.ends_with('/'), 0))
    }
}

/// What applying one job did.
#[derive(Debug, Default)]
struct Done {
    uploaded: u64,
    uploaded_bytes: u64,
    parts_reused: u64,
    copied: u64,
    metadata_updated: u64,
    adopted: u64,
    dirs_in_manifest: u64,
    /// Read, and found to need nothing.
    unchanged: u64,
    /// The entry was recorded as racy (read again by the next pass).
    racy: bool,
    /// The key written (or left as it is), if the entry has an object.
    key: Option<String>,
}

impl Done {
    fn add_to(&self, s: &mut Summary) {
        s.uploaded += self.uploaded;
        s.uploaded_bytes += self.uploaded_bytes;
        s.parts_reused += self.parts_reused;
        s.copied += self.copied;
        s.metadata_updated += self.metadata_updated;
        s.adopted += self.adopted;
        s.dirs_in_manifest += self.dirs_in_manifest;
        s.unchanged += self.unchanged;
    }
}

/// The object metadata for an entry.
pub fn meta_of(e: &Entry, crc32: Option<u32>) -> ObjectMeta {
    ObjectMeta {
        kind: e.kind,
        perm: e.perm,
        uid: e.uid,
        gid: e.gid,
        mtime_sec: e.mtime_sec,
        mtime_nsec: e.mtime_nsec,
        crc32,
        enc: None,
    }
}

/// Whether the scanned directory `rel` has no entry below it. A scan of a
/// scope covers whole subtrees, so a directory's children are in the scan
/// whenever the directory is.
fn is_empty_dir(entries: &BTreeMap<String, Entry>, rel: &str) -> bool {
    let below = format!("{rel}/");
    entries
        .range(below.clone()..)
        .next()
        .is_none_or(|(k, _)| !k.starts_with(&below))
}

/// Sorted scopes with any scope inside another removed.
pub fn minimal_scopes(scopes: &[String]) -> Vec<String> {
    let mut v: Vec<String> = scopes.to_vec();
    v.sort();
    v.dedup();
    let mut out: Vec<String> = Vec::new();
    for s in v {
        if !out.iter().any(|o| keys::in_scope(&s, o)) {
            out.push(s);
        }
    }
    out
}

/// Seconds since the epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_minimised() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            minimal_scopes(&s(&["a/b", "a", "ab", "a/c"])),
            s(&["a", "ab"])
        );
        assert_eq!(minimal_scopes(&s(&["x", ""])), s(&[""]));
    }

    fn file(ino: u64, size: u64, crc: Option<u32>) -> Entry {
        Entry {
            kind: Kind::File,
            size,
            mtime_sec: 1_700_000_000,
            mtime_nsec: 5,
            ctime_sec: 1_700_000_000,
            ctime_nsec: 5,
            dev: 7,
            ino,
            perm: 0o644,
            uid: 0,
            gid: 0,
            crc32: crc,
            target: None,
            racy: false,
        }
    }

    #[test]
    fn a_reused_inode_with_other_content_is_no_rename() {
        let mut idx = RenameIndex::default();
        idx.add("old", &file(42, 100, Some(0xAAAA)));
        // Same inode, size and mtime, other content: not the old file.
        assert_eq!(idx.find(&file(42, 100, None), 0xBBBB), None);
        // Same inode and content: a rename.
        assert_eq!(
            idx.find(&file(42, 100, None), 0xAAAA).as_deref(),
            Some("old")
        );
        // Other inode, same size and content: a copy found by CRC.
        assert_eq!(
            idx.find(&file(43, 100, None), 0xAAAA).as_deref(),
            Some("old")
        );
        // An old entry with no CRC recorded is never matched by inode alone.
        let mut idx = RenameIndex::default();
        idx.add("old", &file(42, 100, None));
        assert_eq!(idx.find(&file(42, 100, None), 0xAAAA), None);
    }
}
