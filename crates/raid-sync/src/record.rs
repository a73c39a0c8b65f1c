//! The run record: a small JSON file a running `raidfs-sync` keeps in the
//! raidfs run directory (`/run/raidfs/`, or `$RAIDFS_RUN_DIR`), so that
//! `raidfs status` can show the sync state of an array without talking to
//! this daemon and without any S3 request.
//!
//! The file is `sync-<16 hex digits>.json`, named by a hash of the canonical
//! source path, the bucket and the prefix (two daemons mirroring one tree to
//! two buckets keep two records). It is rewritten atomically (temporary file,
//! then rename) when the daemon starts, while a pass runs (at most every few
//! seconds, when the pending counts moved), after every pass, and removed
//! when the daemon stops. A record whose `pid` is dead was left by a crash
//! and means nothing; readers skip it.
//!
//! The JSON keys are stable (only ever added to) and documented in
//! docs/SYNC.md; raid-fuse parses them with its own struct, so that it does
//! not depend on this crate.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The environment variable that moves the run directory (shared with
/// `mount.raidfs` and `raidfs`).
pub const RUN_DIR_ENV: &str = "RAIDFS_RUN_DIR";

/// Record format version; bumped only if a key changes meaning.
pub const VERSION: u32 = 1;

/// The run directory: `$RAIDFS_RUN_DIR`, else `/run/raidfs`.
pub fn run_dir() -> PathBuf {
    std::env::var_os(RUN_DIR_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/raidfs"))
}

/// What the daemon is doing.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SyncState {
    /// Started; the first pass (a scan of the whole tree) has not succeeded yet.
    InitialSync,
    /// The last pass succeeded; waiting for changes (or running a pass for them).
    Watching,
    /// The last pass failed; it is retried with backoff.
    Failed,
}

/// The record's content (keys documented in docs/SYNC.md).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct SyncRecord {
    pub version: u32,
    /// Canonical path of the mirrored tree.
    pub source: PathBuf,
    pub bucket: String,
    pub prefix: String,
    /// The daemon's PID; a dead PID makes the record stale.
    pub pid: u32,
    pub state: SyncState,
    /// When the daemon started (unix seconds).
    pub started_unix: i64,
    /// When the record was last written (unix seconds).
    pub updated_unix: i64,
    /// End of the last pass that left nothing failed (unix seconds).
    pub last_success_unix: Option<i64>,
    /// Why the last pass failed; `null` after a successful pass.
    pub last_error: Option<String>,
    /// Files the running pass still has to bring to the bucket (0 when idle).
    pub pending_files: u64,
    /// Their bytes.
    pub pending_bytes: u64,
    /// Files that failed in the last pass (retried by the next one).
    pub failed_files: u64,
    /// Files that changed while being read in the last pass.
    #[serde(default)]
    pub deferred_files: u64,
    /// Entries of the tree that are not mirrored (names that are not UTF-8
    /// or have a line break, sockets, FIFOs, devices, unreadable entries).
    #[serde(default)]
    pub skipped_entries: u64,
}

/// The record's file for this source, bucket and prefix.
pub fn record_path(dir: &Path, source: &Path, bucket: &str, prefix: &str) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let mut h = Fnv64::default();
    h.write(source.as_os_str().as_bytes());
    h.write(&[0]);
    h.write(bucket.as_bytes());
    h.write(&[0]);
    h.write(prefix.as_bytes());
    dir.join(format!("sync-{:016x}.json", h.0))
}

/// Takes the lock of one mirror (source, bucket and prefix) in the run
/// directory `dir`: `sync-<16 hex digits>.lock`, the record's name with
/// `.lock`, created if needed and never removed. One process at a time
/// syncs a source to a bucket and prefix, whatever their state files (the
/// default state path depends on the environment: the systemd unit's and a
/// root shell's differ). Held for as long as the returned file is open.
/// `Ok(None)`: the run directory cannot be made or written (a user other
/// than root beside the mount daemons' `/run/raidfs`, a read-only system)
/// or has no `flock` (logged; the state file's lock still holds).
pub fn lock_mirror(
    dir: &Path,
    source: &Path,
    bucket: &str,
    prefix: &str,
) -> Result<Option<std::fs::File>> {
    if let Err(e) = std::fs::create_dir_all(dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "creating the run directory: the mirror is not locked");
        return Ok(None);
    }
    let lock = record_path(dir, source, bucket, prefix).with_extension("lock");
    let existed = lock.exists();
    crate::state::lock_file(&lock).map_err(|busy| match busy {
        crate::state::Busy::Held(holder) => Error::MirrorBusy {
            tree: source.to_path_buf(),
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            lock,
            holder,
        },
        crate::state::Busy::Failed(e) => e,
    })
    .or_else(|e| match e {
        // One that exists but cannot be opened is another user's sync of
        // this mirror: refused, as a held lock is.
        Error::MirrorBusy { .. } => Err(e),
        _ if existed => Err(e),
        e => {
            tracing::warn!(error = %e, "the mirror is not locked (the state file's lock still holds)");
            Ok(None)
        }
    })
}

/// FNV-1a, 64 bits: stable across releases and platforms (the std hasher is
/// not), which a file name must be.
struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv64 {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

impl SyncRecord {
    /// Writes it atomically (temporary file, then rename), mode 0644 so any
    /// user's `raidfs status` can read it.
    pub fn write(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("json.tmp");
        let body = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::io("encoding", path, std::io::Error::other(e)))?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)
            .map_err(|e| Error::io("creating", &tmp, e))?;
        f.write_all(&body)
            .map_err(|e| Error::io("writing", &tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io("renaming", &tmp, e))
    }

    /// Reads one record.
    pub fn read(path: &Path) -> Result<SyncRecord> {
        let text = std::fs::read(path).map_err(|e| Error::io("reading", path, e))?;
        serde_json::from_slice(&text)
            .map_err(|e| Error::io("parsing", path, std::io::Error::other(e)))
    }
}

/// Keeps one daemon's record up to date. Failing to write it (no run
/// directory, not root) is logged once and otherwise ignored: the record is
/// for the status display, never a reason to stop syncing.
#[derive(Debug)]
pub struct RecordWriter {
    path: PathBuf,
    /// The record, and whether it was removed (then it is never written
    /// again). Writes happen under this lock, so none can follow the removal.
    rec: Mutex<(SyncRecord, bool)>,
    warned: std::sync::atomic::AtomicBool,
}

impl RecordWriter {
    /// Creates the run directory if needed and writes the first record
    /// (`initial-sync`).
    pub fn start(
        dir: &Path,
        source: &Path,
        bucket: &str,
        prefix: &str,
        last_success_unix: Option<i64>,
    ) -> RecordWriter {
        let now = crate::reconcile::unix_now();
        let w = RecordWriter {
            path: record_path(dir, source, bucket, prefix),
            rec: Mutex::new((
                SyncRecord {
                    version: VERSION,
                    source: source.to_path_buf(),
                    bucket: bucket.to_string(),
                    prefix: prefix.to_string(),
                    pid: std::process::id(),
                    state: SyncState::InitialSync,
                    started_unix: now,
                    updated_unix: now,
                    last_success_unix,
                    last_error: None,
                    pending_files: 0,
                    pending_bytes: 0,
                    failed_files: 0,
                    deferred_files: 0,
                    skipped_entries: 0,
                },
                false,
            )),
            warned: std::sync::atomic::AtomicBool::new(false),
        };
        if let Err(e) = std::fs::create_dir_all(dir).and_then(|()| {
            // Like mount.raidfs: readable by everyone, so status works for any user.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
        }) {
            w.warn(&Error::io("creating the run directory", dir, e));
        }
        w.flush();
        w
    }

    /// Where the record lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A copy of the current content.
    pub fn snapshot(&self) -> SyncRecord {
        self.lock().0.clone()
    }

    /// Changes the record and writes it.
    pub fn update(&self, f: impl FnOnce(&mut SyncRecord)) {
        {
            let mut r = self.lock();
            f(&mut r.0);
        }
        self.flush();
    }

    /// Sets the pending counts; writes only if they changed.
    pub fn set_pending(&self, files: u64, bytes: u64) {
        {
            let r = &self.lock().0;
            if r.pending_files == files && r.pending_bytes == bytes {
                return;
            }
        }
        self.update(|r| {
            r.pending_files = files;
            r.pending_bytes = bytes;
        });
    }

    /// Removes the record (the daemon is stopping).
    pub fn remove(&self) {
        let mut g = self.lock();
        g.1 = true;
        if let Err(e) = std::fs::remove_file(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), error = %e, "removing the run record");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (SyncRecord, bool)> {
        self.rec.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn flush(&self) {
        let mut g = self.lock();
        if g.1 {
            return;
        }
        g.0.updated_unix = crate::reconcile::unix_now();
        if let Err(e) = g.0.write(&self.path) {
            drop(g);
            self.warn(&e);
        }
    }

    fn warn(&self, e: &Error) {
        if !self.warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::warn!(error = %e, "cannot keep the run record; `raidfs status` will not show this sync");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_name_depends_on_source_bucket_and_prefix() {
        let d = Path::new("/run/raidfs");
        let a = record_path(d, Path::new("/mnt/a"), "b", "");
        assert_eq!(a, record_path(d, Path::new("/mnt/a"), "b", ""));
        assert_ne!(a, record_path(d, Path::new("/mnt/a"), "c", ""));
        assert_ne!(a, record_path(d, Path::new("/mnt/a"), "b", "p/"));
        assert_ne!(a, record_path(d, Path::new("/mnt/b"), "b", ""));
        let name = a.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with("sync-") && name.ends_with(".json") && name.len() == 26);
    }

    #[test]
    fn a_written_record_reads_back_with_its_documented_keys() {
        let dir = tempfile::tempdir().unwrap();
        let w = RecordWriter::start(dir.path(), Path::new("/mnt/array"), "bk", "pre/", Some(5));
        w.set_pending(3, 300);
        let back = SyncRecord::read(w.path()).unwrap();
        assert_eq!(back, w.snapshot());
        assert_eq!(back.pending_files, 3);
        assert_eq!(back.state, SyncState::InitialSync);
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(w.path()).unwrap()).unwrap();
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "bucket",
                "deferred_files",
                "failed_files",
                "last_error",
                "last_success_unix",
                "pending_bytes",
                "pending_files",
                "pid",
                "prefix",
                "skipped_entries",
                "source",
                "started_unix",
                "state",
                "updated_unix",
                "version"
            ]
        );
        assert_eq!(v["state"], "initial-sync");
        w.remove();
        assert!(!w.path().exists());
    }
}
