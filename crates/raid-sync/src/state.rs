//! The local state: what the bucket holds for each path, as of the last
//! successful upload, plus multipart uploads in progress and running totals.
//!
//! It lets a pass over an unchanged tree finish with `stat` calls only — no S3
//! listing, no request at all — and lets an interrupted multipart upload be
//! resumed. It is a single JSON file replaced atomically (write to a temporary
//! file, fsync, rename, fsync the directory), so a crash leaves either the old
//! or the new state, never a torn one. Losing it costs one full reconciliation
//! against the bucket, nothing more: the bucket is the truth.
//!
//! One process at a time: [`StateStore::open`] holds an exclusive `flock` on
//! the lock file beside it (`NAME.lock`) for as long as the store lives, and
//! refuses a state another process holds. Each write goes through a
//! temporary file of its own (`NAME.PID.N.tmp`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::object_meta::Kind;

/// Version of the state file layout; a different one is refused, not guessed.
pub const STATE_FORMAT: u32 = 1;

/// One tree entry as last seen (local scan) or last uploaded (state).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub kind: Kind,
    pub size: u64,
    pub mtime_sec: i64,
    pub mtime_nsec: u32,
    pub ctime_sec: i64,
    pub ctime_nsec: u32,
    pub dev: u64,
    pub ino: u64,
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    /// CRC-32 of the content (files) or of the target (symlinks); `None`
    /// until read.
    pub crc32: Option<u32>,
    /// Symlink target.
    pub target: Option<String>,
    /// Recorded from a read that began less than [`RACY_WINDOW`] after the
    /// file's mtime or ctime: a rewrite of the same size right after the
    /// read could have left the same timestamps (they move once per kernel
    /// tick), so `stat` cannot vouch for the CRC. The next pass reads the
    /// file again (see [`Entry::unchanged`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub racy: bool,
}

/// How much older than the start of a read a file's mtime and ctime must be
/// for `stat` to vouch for what was read. Kernel timestamps are taken from
/// a clock that moves once per tick (1-10 ms), and some filesystems keep
/// only seconds; two seconds cover both with room to spare.
pub const RACY_WINDOW: std::time::Duration = std::time::Duration::from_secs(2);

impl Entry {
    /// Whether a file read from `read_start` to `read_end` (wall clock)
    /// has an mtime or ctime too recent for `stat` to vouch for the content
    /// read: not at least [`RACY_WINDOW`] before the read began. A timestamp
    /// later than the end of the read (plus the window) cannot come from a
    /// write during it (a set mtime also moves the ctime to the present), so
    /// a file with an mtime in the future is not re-read forever.
    pub fn is_racy(
        &self,
        read_start: std::time::SystemTime,
        read_end: std::time::SystemTime,
    ) -> bool {
        let ns = |t: std::time::SystemTime| -> i128 {
            match t.duration_since(std::time::UNIX_EPOCH) {
                Ok(d) => d.as_nanos() as i128,
                Err(e) => -(e.duration().as_nanos() as i128),
            }
        };
        let window = RACY_WINDOW.as_nanos() as i128;
        let (lo, hi) = (ns(read_start) - window, ns(read_end) + window);
        let recent = |sec: i64, nsec: u32| {
            let t = i128::from(sec) * 1_000_000_000 + i128::from(nsec);
            t >= lo && t <= hi
        };
        self.kind == Kind::File
            && (recent(self.mtime_sec, self.mtime_nsec) || recent(self.ctime_sec, self.ctime_nsec))
    }

    /// Whether `stat` says nothing changed since `self` was recorded. Directory
    /// times are ignored: a directory's mtime moves with every child, and
    /// re-uploading its marker each time would only add versions. A file
    /// recorded as [`racy`](Entry::racy) is never unchanged: only reading it
    /// again tells.
    pub fn unchanged(&self, now: &Entry) -> bool {
        let attrs = self.kind == now.kind
            && self.perm == now.perm
            && self.uid == now.uid
            && self.gid == now.gid;
        match self.kind {
            Kind::Dir => attrs,
            Kind::Symlink => attrs && self.target == now.target,
            Kind::File => {
                attrs
                    && !self.racy
                    && self.size == now.size
                    && self.mtime_sec == now.mtime_sec
                    && self.mtime_nsec == now.mtime_nsec
                    && self.ctime_sec == now.ctime_sec
                    && self.ctime_nsec == now.ctime_nsec
                    && self.ino == now.ino
                    && self.dev == now.dev
            }
        }
    }
}

/// A multipart upload that was started and not yet completed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingUpload {
    pub key: String,
    pub upload_id: String,
    pub size: u64,
    pub mtime_sec: i64,
    pub mtime_nsec: u32,
    pub ino: u64,
    pub part_size: u64,
    /// Whether the upload was created with the FULL_OBJECT checksum type.
    pub full_object_checksum: bool,
    /// Parts the server acknowledged, by part number: used when the server
    /// cannot list them (ListParts) and to check what it lists.
    #[serde(default)]
    pub parts: BTreeMap<i32, RecordedPart>,
    /// Client-side encryption: the key fingerprint and the object's nonce
    /// prefix (hex). A resumed upload must seal the remaining parts with the
    /// same ones, so the parts already sent stay valid.
    #[serde(default)]
    pub enc_key: Option<String>,
    #[serde(default)]
    pub enc_prefix: Option<String>,
}

/// One acknowledged part of a multipart upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedPart {
    pub etag: String,
    /// Bytes sent (ciphertext when encrypted).
    pub size: u64,
    /// CRC-32 of the bytes sent.
    pub crc32: u32,
}

/// Running totals for the metrics file; they survive restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub uploaded_bytes: u64,
    pub uploaded_objects: u64,
    pub copied_objects: u64,
    pub deleted_objects: u64,
    pub failed_files: u64,
    pub failed_runs: u64,
    pub last_success_unix: Option<i64>,
}

/// The whole state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub format: u32,
    pub bucket: String,
    pub prefix: String,
    /// Set once a pass has completed against the bucket: until then the bucket
    /// contents are unknown and the first pass lists it.
    pub reconciled: bool,
    pub entries: BTreeMap<String, Entry>,
    pub uploads: BTreeMap<String, PendingUpload>,
    /// Unix time of the last check that the bucket is versioned.
    pub versioning_checked_unix: Option<i64>,
    pub totals: Totals,
    /// Fingerprint of the client-side encryption key the entries were
    /// uploaded with (`None`: plain). When it changes, the entries no longer
    /// describe what should be in the bucket and are dropped.
    #[serde(default)]
    pub enc_key: Option<String>,
    /// Files whose CreateMultipartUpload was sent but whose upload id may
    /// not be recorded yet (in `uploads`). Only for these can the server hold
    /// an upload the state does not know, so only for these is
    /// ListMultipartUploads worth a request. `None` in a state written before
    /// this was kept: then any file may have one, and the server is asked.
    #[serde(default)]
    pub creating: Option<BTreeSet<String>>,
    /// CRC-32 of the directory manifest last written to the bucket
    /// ([`crate::dirmeta`]); `None`: not written yet.
    #[serde(default)]
    pub dirs_manifest_crc: Option<u32>,
    /// Whether the source was the root of a mounted filesystem at the last
    /// successful pass (`None`: not recorded yet). A source that was one and
    /// no longer is has most likely lost its mount (the array is not
    /// mounted): passes are refused then, instead of mirroring the empty
    /// mount-point directory.
    #[serde(default)]
    pub source_mount_root: Option<bool>,
    /// Files that changed while being read, by the number of passes in a
    /// row that found them so (see [`crate::reconcile::DEFER_LIMIT`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub deferred: BTreeMap<String, u32>,
}

impl State {
    /// An empty state for a bucket and prefix.
    pub fn new(bucket: &str, prefix: &str) -> Self {
        State {
            format: STATE_FORMAT,
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            reconciled: false,
            entries: BTreeMap::new(),
            uploads: BTreeMap::new(),
            versioning_checked_unix: None,
            totals: Totals::default(),
            enc_key: None,
            creating: Some(BTreeSet::new()),
            dirs_manifest_crc: None,
            source_mount_root: None,
            deferred: BTreeMap::new(),
        }
    }

    /// Loads the state, or starts an empty one if the file does not exist.
    /// A state of another bucket or prefix is refused: mixing them up would
    /// make the tool believe objects exist that do not.
    pub fn load(path: &Path, bucket: &str, prefix: &str) -> Result<Self> {
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(State::new(bucket, prefix));
            }
            Err(e) => return Err(Error::io("reading state file", path, e)),
        };
        let st: State = serde_json::from_slice(&bytes).map_err(|e| Error::State {
            path: path.to_path_buf(),
            message: format!("unreadable ({e}); delete it to rebuild it from the bucket"),
        })?;
        if st.format != STATE_FORMAT {
            return Err(Error::State {
                path: path.to_path_buf(),
                message: format!("format {} is not {STATE_FORMAT}", st.format),
            });
        }
        if st.bucket != bucket || st.prefix != prefix {
            return Err(Error::State {
                path: path.to_path_buf(),
                message: format!(
                    "belongs to s3://{}/{}, not s3://{bucket}/{prefix}; use another --state",
                    st.bucket, st.prefix
                ),
            });
        }
        Ok(st)
    }

    /// Writes the state atomically and durably.
    pub fn save(&self, path: &Path) -> Result<()> {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(|e| Error::io("creating state directory", dir, e))?;
        let json = serde_json::to_vec(self).map_err(|e| Error::State {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        write_atomic(path, &json)
    }
}

/// Replaces `path` with `data`: temporary file (a name of its own), fsync,
/// rename, fsync directory.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = tmp_name(path);
    let mut f = fs::File::create(&tmp).map_err(|e| Error::io("creating", &tmp, e))?;
    let written = f
        .write_all(data)
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io("writing", &tmp, e))
        .and_then(|()| {
            fs::rename(&tmp, path).map_err(|e| Error::io("renaming into place", path, e))
        });
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        // Durability of the rename; failure here only weakens, never corrupts.
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// `NAME.PID.N.tmp` beside `path`: no other writer, in this process or
/// another, uses the same temporary file.
fn tmp_name(path: &Path) -> PathBuf {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(
        ".{}.{}.tmp",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    path.with_file_name(name)
}

/// `NAME.lock` beside `path`.
fn lock_name(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    path.with_file_name(name)
}

/// Takes the exclusive lock on the state at `path` (its lock file, created
/// if needed, holds the PID of its holder). `None`: the filesystem has no
/// `flock`, so nothing is locked (logged).
fn lock_state(path: &Path) -> Result<Option<fs::File>> {
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|e| Error::io("creating state directory", dir, e))?;
    }
    lock_file(&lock_name(path)).map_err(|busy| match busy {
        Busy::Held(holder) => Error::StateBusy {
            path: path.to_path_buf(),
            holder,
        },
        Busy::Failed(e) => e,
    })
}

/// Why [`lock_file`] did not take its lock.
#[derive(Debug)]
pub enum Busy {
    /// Another process holds it: ` (pid N)` as its lock file says, or empty.
    Held(String),
    /// The lock file could not be opened or locked.
    Failed(Error),
}

/// Takes an exclusive `flock` on the file `lock` (created if needed; it
/// then holds this process's PID, for the message of a process refused),
/// kept for as long as the returned file is open. `None`: the filesystem
/// has no `flock`, so nothing is locked (logged).
pub fn lock_file(lock: &Path) -> std::result::Result<Option<fs::File>, Busy> {
    // Owner only: a lock file others can open, they can lock too (a
    // read-only descriptor takes an exclusive `flock`), and keep the
    // daemon from starting.
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(lock)
        .map_err(|e| Busy::Failed(Error::io("opening", lock, e)))?;
    match f.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            let holder = fs::read_to_string(lock)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
                .map_or_else(String::new, |pid| format!(" (pid {pid})"));
            return Err(Busy::Held(holder));
        }
        Err(fs::TryLockError::Error(e)) if e.kind() == std::io::ErrorKind::Unsupported => {
            tracing::warn!(lock = %lock.display(), error = %e, "cannot lock");
            return Ok(None);
        }
        Err(fs::TryLockError::Error(e)) => {
            return Err(Busy::Failed(Error::io("locking", lock, e)));
        }
    }
    // Only for the message of a process refused; the lock is what counts.
    let pid = format!("{}\n", std::process::id());
    if let Err(e) = f.set_len(0).and_then(|()| f.write_all(pid.as_bytes())) {
        tracing::debug!(lock = %lock.display(), error = %e, "writing the PID to the lock file");
    }
    Ok(Some(f))
}

/// The state shared by concurrent tasks of a pass, with its file.
#[derive(Debug)]
pub struct StateStore {
    path: PathBuf,
    state: std::sync::Mutex<State>,
    /// Serialises writers of the file (each write is a whole snapshot) and
    /// holds the ticket of the newest request the file already covers.
    writing: std::sync::Mutex<u64>,
    /// Save requests so far: a request takes a ticket after its change.
    tickets: std::sync::atomic::AtomicU64,
    /// The lock file, locked for as long as the store lives ([`Self::open`]).
    held_lock: Option<fs::File>,
}

impl StateStore {
    /// A store of `state` at `path`, without the lock (see [`Self::open`]).
    pub fn new(path: PathBuf, state: State) -> Self {
        StateStore {
            path,
            state: std::sync::Mutex::new(state),
            writing: std::sync::Mutex::new(0),
            tickets: std::sync::atomic::AtomicU64::new(0),
            held_lock: None,
        }
    }

    /// Locks the state at `path` for this process (until the store is
    /// dropped) and loads it ([`State::load`]). A state that another process
    /// holds is refused ([`Error::StateBusy`]): two processes saving one
    /// state would each drop what the other recorded.
    pub fn open(path: PathBuf, bucket: &str, prefix: &str) -> Result<Self> {
        let lock = lock_state(&path)?;
        let state = State::load(&path, bucket, prefix)?;
        let mut store = StateStore::new(path, state);
        store.held_lock = lock;
        Ok(store)
    }

    /// Locks the in-memory state. A poisoned lock (a panic elsewhere) still
    /// holds consistent data: every update is a single insert or remove.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the current state to its file. Concurrent requests coalesce:
    /// a request whose change is already in a snapshot written meanwhile
    /// returns at once (uploads finishing together cost one write, not one
    /// each — every write serialises the whole state and fsyncs).
    pub fn save(&self) -> Result<()> {
        use std::sync::atomic::Ordering;
        let mine = self.tickets.fetch_add(1, Ordering::SeqCst) + 1;
        let mut covered = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        if *covered >= mine {
            return Ok(());
        }
        // Every request up to `upto` made its change before taking its
        // ticket, so the snapshot below holds it.
        let upto = self.tickets.load(Ordering::SeqCst);
        let snapshot = self.lock().clone();
        snapshot.save(&self.path)?;
        *covered = upto;
        Ok(())
    }

    /// [`save`](Self::save) from async code: the write and fsync run without
    /// stalling the runtime's other tasks (a multi-threaded runtime moves
    /// them to another worker).
    pub fn save_in_async(&self) -> Result<()> {
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| self.save())
            }
            _ => self.save(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_refuses_other_bucket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s/state.json");
        let mut st = State::load(&path, "b", "p/").unwrap();
        st.reconciled = true;
        st.totals.uploaded_bytes = 7;
        st.save(&path).unwrap();
        assert_eq!(State::load(&path, "b", "p/").unwrap(), st);
        assert!(matches!(
            State::load(&path, "other", "p/"),
            Err(Error::State { .. })
        ));
        fs::write(&path, b"{garbage").unwrap();
        assert!(matches!(
            State::load(&path, "b", "p/"),
            Err(Error::State { .. })
        ));
    }

    #[test]
    fn a_state_is_used_by_one_store_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s/state.json");
        let first = StateStore::open(path.clone(), "b", "").unwrap();
        first.save().unwrap();
        let busy = StateStore::open(path.clone(), "b", "").unwrap_err();
        assert!(matches!(&busy, Error::StateBusy { .. }), "{busy}");
        let msg = busy.to_string();
        let pid = format!("(pid {})", std::process::id());
        assert!(
            msg.contains("another raidfs-sync") && msg.contains(&pid),
            "{msg}"
        );
        drop(first);
        let again = StateStore::open(path.clone(), "b", "").unwrap();
        again.save().unwrap();
        // Only the state and its lock file: no temporary file left.
        let mut names: Vec<String> = fs::read_dir(dir.path().join("s"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["state.json", "state.json.lock"]);
    }

    #[test]
    fn timestamps_close_to_a_read_make_the_entry_racy() {
        use std::time::{Duration, UNIX_EPOCH};
        let file = |m: i64, c: i64| Entry {
            kind: Kind::File,
            size: 4,
            mtime_sec: m,
            mtime_nsec: 0,
            ctime_sec: c,
            ctime_nsec: 0,
            dev: 1,
            ino: 2,
            perm: 0o644,
            uid: 0,
            gid: 0,
            crc32: Some(1),
            target: None,
            racy: false,
        };
        let start = UNIX_EPOCH + Duration::from_secs(1_000);
        let end = start + Duration::from_millis(10);
        assert!(!file(990, 990).is_racy(start, end), "old enough");
        assert!(
            file(999, 990).is_racy(start, end),
            "mtime within the window"
        );
        assert!(
            file(990, 1_000).is_racy(start, end),
            "ctime in the read's tick"
        );
        assert!(
            !file(5_000, 990).is_racy(start, end),
            "an mtime in the future comes from no write during the read"
        );
        // A racy record is never unchanged, whatever stat says.
        let mut recorded = file(999, 999);
        assert!(recorded.unchanged(&file(999, 999)));
        recorded.racy = true;
        assert!(!recorded.unchanged(&file(999, 999)));
    }

    #[test]
    fn coalesced_concurrent_saves_lose_no_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let store = std::sync::Arc::new(StateStore::new(path.clone(), State::new("b", "")));
        let threads: Vec<_> = (0..8u64)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for i in 0..20u64 {
                        store.lock().totals.uploaded_objects += 1;
                        store.lock().uploads.insert(
                            format!("{t}/{i}"),
                            PendingUpload {
                                key: String::new(),
                                upload_id: String::new(),
                                size: i,
                                mtime_sec: 0,
                                mtime_nsec: 0,
                                ino: 0,
                                part_size: 0,
                                full_object_checksum: false,
                                parts: BTreeMap::new(),
                                enc_key: None,
                                enc_prefix: None,
                            },
                        );
                        store.save().unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // Every change was followed by a save that returned: the file has all.
        let on_disk = State::load(&path, "b", "").unwrap();
        assert_eq!(on_disk.totals.uploaded_objects, 160);
        assert_eq!(on_disk.uploads.len(), 160);
    }
}
