//! `restore`: rebuild the tree (or a subtree) exactly as it was at a point in
//! time, from ListObjectVersions: files deleted after that time come back,
//! files created after it are absent.
//!
//! Safety before speed: every key is checked ([`KeyPrefix::rel_of`]) and every
//! destination is checked for existing files before a single byte is written,
//! so a refused restore writes nothing. Files are written to a temporary name
//! of their own (created exclusively: never an existing file or symlink),
//! checked against their CRC-32, given mode, owner (when running as root) and
//! mtime through their descriptor, and renamed into place.
//!
//! Nothing is written through a symlink: symlinks are restored last, after
//! every file and directory, and an item below a path that is restored as a
//! file or symlink (a crafted or inconsistent bucket) is not restored but
//! listed in the summary's `refused`.
//!
//! Encrypted objects (`x-amz-meta-raidfs-enc`) are decrypted chunk by chunk
//! as they arrive; a failed authentication tag removes the temporary file.
//! The key is checked against the bucket's key parameters before anything is
//! written.
//!
//! An object that cannot be fetched, checked or written (a failed request,
//! a checksum mismatch, a failed tag) leaves nothing behind and is listed in
//! the summary's `failed`; the rest of the restore goes on, symlinks and
//! directory attributes included.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use serde::Serialize;
use tokio::io::AsyncWriteExt;

use crate::crypt::Key;
use crate::dirmeta;
use crate::error::{Error, Result};
use crate::history::{self, Version};
use crate::keys::{self, KeyPrefix};
use crate::object_meta::{Kind, ObjectMeta};
use crate::s3::Bucket;

/// What to restore, and where.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Point in time (ns since the epoch); `None` = latest.
    pub at_ns: Option<i128>,
    /// Only this subtree (relative path).
    pub path: Option<String>,
    pub target: PathBuf,
    pub force: bool,
    pub jobs: usize,
    pub progress: bool,
    /// Client-side encryption key (needed if any object is encrypted).
    pub key: Option<Arc<Key>>,
}

/// What a restore did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct RestoreSummary {
    pub files: u64,
    pub symlinks: u64,
    pub dirs: u64,
    pub bytes: u64,
    pub seconds: f64,
    /// Items not restored because a path above them is restored as a file
    /// or symlink (so they would have to be written through it), with why.
    pub refused: Vec<String>,
    /// Keys not restored because their version is archived (GLACIER or
    /// DEEP_ARCHIVE, e.g. moved by `lifecycle --glacier-after`): S3 serves
    /// them only after a restore from the archive.
    pub archived: Vec<String>,
    /// Items that could not be restored (`path: error`): the object could
    /// not be fetched, failed its checksum or decryption, or could not be
    /// written; attributes that could not be set. The rest was restored.
    pub failed: Vec<String>,
}

/// Restores the tree under `prefix` as of `opts.at_ns` into `opts.target`.
pub async fn restore(
    bucket: Arc<Bucket>,
    prefix: &KeyPrefix,
    opts: &RestoreOptions,
) -> Result<RestoreSummary> {
    let t0 = Instant::now();
    let sub = match &opts.path {
        Some(p) => {
            let p = p.trim_matches('/');
            if p.is_empty() {
                None
            } else {
                // Validate the sub-path exactly like a key.
                prefix.rel_of(&prefix.key(p, false))?;
                Some(p.to_string())
            }
        }
        None => None,
    };
    let list_prefix = match &sub {
        Some(s) => prefix.key(s, false),
        None => prefix.as_str().to_string(),
    };
    let versions = history::list_versions(&bucket, &list_prefix).await?;
    let chosen = history::as_of(versions, opts.at_ns);

    // 1. Every key must map to a safe path inside the target.
    let mut items: BTreeMap<String, (bool, Version)> = BTreeMap::new();
    let mut unsafe_keys = Vec::new();
    for (key, v) in chosen {
        if key
            .strip_prefix(prefix.as_str())
            .is_some_and(crate::keysource::is_reserved)
        {
            continue;
        }
        match prefix.rel_of(&key) {
            Ok((rel, is_dir)) => {
                if sub.as_ref().is_none_or(|s| keys::in_scope(&rel, s)) {
                    items.insert(rel, (is_dir, v));
                }
            }
            Err(e) => unsafe_keys.push(e),
        }
    }
    if let Some(first) = unsafe_keys.into_iter().next() {
        return Err(Error::Config(format!(
            "refusing to restore: {first}; the bucket holds a key that would land outside \
             {}. Nothing was written. Remove or rename that key, or restore a --path that \
             excludes it.",
            opts.target.display()
        )));
    }

    // Directory attributes: the manifest as it was at the time asked for
    // (buckets written before it existed have them on directory markers).
    // An archived one is left out like any archived version: directories
    // then get their markers' attributes (or none), and the restore names it
    // and exits 1.
    let (manifest, manifest_archived) = match dirmeta::fetch_at(&bucket, prefix, opts.at_ns).await?
    {
        dirmeta::Found::Manifest(m) => (Some(m), None),
        dirmeta::Found::None => (None, None),
        dirmeta::Found::Archived { key } => {
            tracing::warn!(%key, "the directory manifest is archived: directory attributes are not restored");
            (None, Some(key))
        }
    };
    let mut manifest_dirs = Vec::new();
    if let Some(m) = &manifest {
        for rel in m.dirs.keys() {
            // Validated exactly like a key.
            let rel = match prefix.rel_of(&prefix.key(rel, true)) {
                Ok((rel, _)) => rel,
                Err(e) => {
                    return Err(Error::Config(format!(
                        "refusing to restore: {e} (in the directory manifest); nothing was written"
                    )));
                }
            };
            if sub.as_ref().is_none_or(|s| keys::in_scope(&rel, s)) {
                manifest_dirs.push(rel);
            }
        }
    }

    // Nothing is restored below a path that is restored as a file or a
    // symlink: it would be written through that symlink.
    let non_dirs: BTreeSet<String> = items
        .iter()
        .filter(|(_, (d, _))| !d)
        .map(|(r, _)| r.clone())
        .collect();
    let mut refused = Vec::new();
    items.retain(|rel, _| match non_dir_ancestor(rel, &non_dirs) {
        Some(a) => {
            refused.push(format!(
                "{rel}: not restored: {a} is restored as a file or symlink, not a directory"
            ));
            false
        }
        None => true,
    });
    let mut dirs: BTreeSet<String> = BTreeSet::new();
    for d in manifest_dirs {
        if let Some(a) = non_dirs
            .contains(&d)
            .then(|| d.clone())
            .or_else(|| non_dir_ancestor(&d, &non_dirs))
        {
            refused.push(format!(
                "{d}/: directory not restored: {a} is restored as a file or symlink"
            ));
            continue;
        }
        let mut parent = Path::new(d.as_str()).parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            dirs.insert(p.to_string_lossy().into_owned());
            parent = p.parent();
        }
        dirs.insert(d);
    }

    // 2. Nothing existing is overwritten without --force.
    let mut existing = Vec::new();
    for (rel, (is_dir, _)) in &items {
        let mut parent = Path::new(rel.as_str()).parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            dirs.insert(p.to_string_lossy().into_owned());
            parent = p.parent();
        }
        if *is_dir {
            dirs.insert(rel.clone());
            continue;
        }
        let dest = keys::join(&opts.target, rel);
        if std::fs::symlink_metadata(&dest).is_ok() {
            existing.push(dest);
        }
    }
    for d in &dirs {
        let dest = keys::join(&opts.target, d);
        if let Ok(md) = std::fs::symlink_metadata(&dest)
            && !md.is_dir()
        {
            existing.push(dest);
        }
    }
    if !existing.is_empty() && !opts.force {
        return Err(Error::WouldOverwrite {
            count: existing.len(),
            example: existing[0].clone(),
        });
    }

    // 3. Directories, then files and symlinks, then directory attributes
    //    (deepest first, after their contents stopped changing their mtime).
    //    Symlinks come last of all, so that no file or directory is made
    //    through one.
    std::fs::create_dir_all(&opts.target).map_err(|e| Error::io("creating", &opts.target, e))?;
    // Sorted: a directory comes before everything below it, so each is made
    // in a real directory (never through a symlink).
    for d in &dirs {
        let dest = keys::join(&opts.target, d);
        match std::fs::symlink_metadata(&dest) {
            Ok(md) if md.is_dir() => continue,
            Ok(_) if opts.force => {
                std::fs::remove_file(&dest).map_err(|e| Error::io("removing", &dest, e))?;
            }
            Ok(_) => {
                return Err(Error::WouldOverwrite {
                    count: 1,
                    example: dest,
                });
            }
            Err(_) => {}
        }
        std::fs::create_dir(&dest).map_err(|e| Error::io("creating directory", &dest, e))?;
    }
    let files: Vec<(String, Version)> = items
        .iter()
        .filter(|(_, (d, _))| !d)
        .map(|(r, (_, v))| (r.clone(), v.clone()))
        .collect();
    let bar = if opts.progress && files.len() > 1 {
        let b = indicatif::ProgressBar::new(files.iter().map(|f| f.1.size).sum());
        if let Ok(s) = indicatif::ProgressStyle::with_template(
            "{spinner} restore {bytes}/{total_bytes} [{elapsed_precise}] {wide_bar} {bytes_per_sec} eta {eta}",
        ) {
            b.set_style(s);
        }
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let results: Vec<(String, Result<Fetched>)> = futures::stream::iter(files)
        .map(|(rel, v)| {
            let bucket = bucket.clone();
            let bar = bar.clone();
            async move {
                let r = restore_one(
                    &bucket,
                    &opts.target,
                    &rel,
                    &v,
                    opts.force,
                    opts.key.as_deref(),
                )
                .await;
                bar.inc(v.size);
                (rel, r)
            }
        })
        .buffer_unordered(opts.jobs.max(1))
        .collect()
        .await;
    bar.finish_and_clear();
    let mut sum = RestoreSummary {
        refused,
        archived: manifest_archived.into_iter().collect(),
        ..RestoreSummary::default()
    };
    let mut links = Vec::new();
    for (rel, r) in results {
        match r {
            Ok(Fetched::File { bytes }) => {
                sum.files += 1;
                sum.bytes += bytes;
            }
            Ok(Fetched::Archived { key }) => sum.archived.push(key),
            Ok(Fetched::Symlink {
                target,
                meta,
                has_owner,
            }) => links.push((rel, target, meta, has_owner)),
            Err(e) => sum.fail(&rel, &e),
        }
    }
    for (rel, target, meta, has_owner) in links {
        let dest = keys::join(&opts.target, &rel);
        match restore_symlink(&dest, &target, &meta, has_owner, opts.force) {
            Ok(bytes) => {
                sum.bytes += bytes;
                sum.symlinks += 1;
            }
            Err(e) => sum.fail(&rel, &e),
        }
    }
    let mut dir_list: Vec<&String> = dirs.iter().collect();
    dir_list.sort_by_key(|d| std::cmp::Reverse(d.matches('/').count()));
    for d in dir_list {
        sum.dirs += 1;
        let dest = keys::join(&opts.target, d);
        let attrs = match (manifest.as_ref().and_then(|m| m.attrs(d, 0)), items.get(d)) {
            (Some(attrs), _) => Ok(Some(attrs)),
            // A bucket written before the manifest: the marker's.
            (None, Some((true, v))) => history::version_meta(&bucket, v, mtime_of(v))
                .await
                .map(Some),
            _ => Ok(None),
        };
        let applied = attrs.and_then(|a| {
            a.map_or(Ok(()), |(meta, has_owner)| {
                apply_dir_attrs(&dest, &meta, has_owner)
            })
        });
        if let Err(e) = applied {
            sum.fail(d, &e);
        }
    }
    sum.seconds = t0.elapsed().as_secs_f64();
    Ok(sum)
}

impl RestoreSummary {
    /// Records an item that could not be restored; the restore goes on.
    fn fail(&mut self, rel: &str, e: &Error) {
        tracing::debug!(path = %rel, error = %e, "not restored");
        self.failed.push(format!("{rel}: {e}"));
    }
}

/// What fetching one object gave: a file written in place, or a symlink
/// to make once every file is written.
enum Fetched {
    File {
        bytes: u64,
    },
    /// Archived: left out, the rest goes on.
    Archived {
        key: String,
    },
    Symlink {
        target: String,
        meta: ObjectMeta,
        has_owner: bool,
    },
}

/// A version's time in whole seconds: the mtime of an object that records
/// none (written by another tool).
fn mtime_of(v: &Version) -> i64 {
    (v.last_modified_ns / 1_000_000_000) as i64
}

/// The first proper ancestor of `rel` that is restored as a file or symlink.
fn non_dir_ancestor(rel: &str, non_dirs: &BTreeSet<String>) -> Option<String> {
    Path::new(rel)
        .ancestors()
        .skip(1)
        .filter(|p| !p.as_os_str().is_empty())
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|p| non_dirs.contains(p))
        .last()
}

async fn restore_one(
    bucket: &Bucket,
    target: &Path,
    rel: &str,
    v: &Version,
    force: bool,
    key: Option<&Key>,
) -> Result<Fetched> {
    bucket.count();
    let out = bucket
        .client
        .get_object()
        .bucket(&bucket.name)
        .key(&v.key)
        .set_version_id(v.version_id.clone())
        .send()
        .await;
    let out = match out {
        Err(e)
            if e.as_service_error()
                .is_some_and(|se| se.is_invalid_object_state()) =>
        {
            return Ok(Fetched::Archived { key: v.key.clone() });
        }
        r => r.map_err(|e| Error::s3("GetObject", &v.key, e))?,
    };
    let meta = ObjectMeta::from_map(out.metadata(), false, mtime_of(v));
    let has_owner = ObjectMeta::has_owner(out.metadata());
    let key = body_key(&v.key, &meta, key)?;
    let mut dec = key.map(|k| k.decryptor());
    let decrypt_err = |source| Error::Decrypt {
        key: v.key.clone(),
        source,
    };
    let dest = keys::join(target, rel);
    let mut body = out.body;
    let mut plain = Vec::new();
    let mut hasher = crc32fast::Hasher::new();
    let mut len = 0u64;
    if meta.kind == Kind::Symlink {
        let mut t = Vec::new();
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|e| Error::s3("GetObject", &v.key, e))?
        {
            t.extend_from_slice(&chunk);
        }
        if let Some(k) = key {
            t = k.decrypt_all(&t).map_err(decrypt_err)?;
        }
        hasher.update(&t);
        check_crc(&v.key, &meta, hasher.finalize())?;
        let t = String::from_utf8(t).map_err(|_| Error::UnsafeKey {
            key: v.key.clone(),
            reason: "symlink target is not UTF-8",
        })?;
        // Made once every file and directory is in place.
        return Ok(Fetched::Symlink {
            target: t,
            meta,
            has_owner,
        });
    }
    let (std_file, tmp) = create_tmp(&dest)?;
    // Whatever fails from here on, the temporary file goes with it.
    let written = async {
        let mut f = tokio::fs::File::from_std(std_file);
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|e| Error::s3("GetObject", &v.key, e))?
        {
            let data: &[u8] = match dec.as_mut() {
                Some(d) => {
                    plain.clear();
                    d.push(&chunk, &mut plain).map_err(decrypt_err)?;
                    &plain
                }
                None => &chunk,
            };
            hasher.update(data);
            len += data.len() as u64;
            f.write_all(data)
                .await
                .map_err(|e| Error::io("writing", &tmp, e))?;
        }
        if let Some(d) = dec.take() {
            plain.clear();
            d.finish(&mut plain).map_err(decrypt_err)?;
            hasher.update(&plain);
            len += plain.len() as u64;
            f.write_all(&plain)
                .await
                .map_err(|e| Error::io("writing", &tmp, e))?;
        }
        f.sync_all()
            .await
            .map_err(|e| Error::io("syncing", &tmp, e))?;
        check_crc(&v.key, &meta, hasher.finalize())?;
        let f = f.into_std().await;
        apply_file_attrs(&f, &tmp, &meta, has_owner)
    }
    .await;
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    replace(&tmp, &dest, force)?;
    Ok(Fetched::File { bytes: len })
}

/// Makes the symlink `dest` -> `target` (under a temporary name, then
/// renamed into place). Returns the target's length.
fn restore_symlink(
    dest: &Path,
    target: &str,
    meta: &ObjectMeta,
    has_owner: bool,
    force: bool,
) -> Result<u64> {
    let mut tries = 0;
    let tmp = loop {
        let tmp = tmp_path(dest);
        // symlink(2) never follows or replaces an existing name.
        match std::os::unix::fs::symlink(target, &tmp) {
            Ok(()) => break tmp,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && tries < 8 => tries += 1,
            Err(e) => return Err(Error::io("creating symlink", &tmp, e)),
        }
    };
    let attrs = || -> Result<()> {
        if has_owner {
            match std::os::unix::fs::lchown(&tmp, Some(meta.uid), Some(meta.gid)) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(1) => {} // EPERM: not root
                Err(e) => return Err(Error::io("changing owner of", &tmp, e)),
            }
        }
        let mtime = filetime::FileTime::from_unix_time(meta.mtime_sec, meta.mtime_nsec);
        // utimensat(AT_SYMLINK_NOFOLLOW): the link itself.
        filetime::set_symlink_file_times(&tmp, mtime, mtime)
            .map_err(|e| Error::io("setting times of", &tmp, e))
    };
    if let Err(e) = attrs() {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    replace(&tmp, dest, force)?;
    Ok(target.len() as u64)
}

/// Renames `tmp` over `dest`; with `force`, a directory at `dest` is
/// removed first (rename does not replace one).
fn replace(tmp: &Path, dest: &Path, force: bool) -> Result<()> {
    if force
        && let Ok(md) = std::fs::symlink_metadata(dest)
        && md.is_dir()
        && let Err(e) = std::fs::remove_dir_all(dest)
    {
        let _ = std::fs::remove_file(tmp);
        return Err(Error::io("removing", dest, e));
    }
    std::fs::rename(tmp, dest).map_err(|e| {
        let _ = std::fs::remove_file(tmp);
        Error::io("renaming into place", dest, e)
    })
}

/// Creates a new temporary file beside `dest`: a name of its own, created
/// exclusively (O_EXCL: an existing file or symlink of that name is never
/// opened or followed), mode 0600 until the restored mode is set.
fn create_tmp(dest: &Path) -> Result<(std::fs::File, PathBuf)> {
    let mut tries = 0;
    loop {
        let tmp = tmp_path(dest);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
        {
            Ok(f) => return Ok((f, tmp)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && tries < 8 => tries += 1,
            Err(e) => return Err(Error::io("creating", &tmp, e)),
        }
    }
}

/// The key to decrypt an object with: `None` for a plain object; an error if
/// it is encrypted and no key (or another key) was given.
pub fn body_key<'k>(
    object: &str,
    meta: &ObjectMeta,
    key: Option<&'k Key>,
) -> Result<Option<&'k Key>> {
    match (&meta.enc, key) {
        (None, _) => Ok(None),
        (Some(id), Some(k)) if id == k.id() => Ok(Some(k)),
        (Some(id), Some(k)) => Err(Error::Config(format!(
            "{object} was encrypted with another key (fingerprint {id}, yours {})",
            k.id()
        ))),
        (Some(_), None) => Err(Error::Config(format!(
            "{object} is encrypted: give --encrypt-key-file or --encrypt-passphrase-file \
             (or RAIDFS_SYNC_PASSPHRASE)"
        ))),
    }
}

fn check_crc(key: &str, meta: &ObjectMeta, actual: u32) -> Result<()> {
    match meta.crc32 {
        Some(expected) if expected != actual => Err(Error::Checksum {
            what: key.to_string(),
            expected,
            actual,
        }),
        _ => Ok(()),
    }
}

/// A temporary name beside `dest`, unique to this call:
/// `.raidfs-restore.RANDOM` (16 hex digits). Its length does not depend on
/// `dest`'s name, which may itself be up to NAME_MAX (255) bytes long.
fn tmp_path(dest: &Path) -> PathBuf {
    dest.with_file_name(format!(".raidfs-restore.{:016x}", fastrand::u64(..)))
}

/// Owner (only if recorded, and only where permitted: a non-root restore
/// keeps the restoring user as owner), mode and mtime of an open file or
/// directory, through its descriptor (`path` is for messages).
fn apply_file_attrs(
    f: &std::fs::File,
    path: &Path,
    meta: &ObjectMeta,
    has_owner: bool,
) -> Result<()> {
    if has_owner {
        match std::os::unix::fs::fchown(f, Some(meta.uid), Some(meta.gid)) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(1) => {} // EPERM: not root
            Err(e) => return Err(Error::io("changing owner of", path, e)),
        }
    }
    f.set_permissions(std::fs::Permissions::from_mode(meta.perm))
        .map_err(|e| Error::io("setting mode of", path, e))?;
    let t = system_time(meta.mtime_sec, meta.mtime_nsec);
    f.set_times(std::fs::FileTimes::new().set_accessed(t).set_modified(t))
        .map_err(|e| Error::io("setting times of", path, e))
}

/// Attributes of a restored directory: opened, and checked to be the
/// directory at `path` itself (not something a symlink leads to) before
/// anything is changed through the descriptor.
fn apply_dir_attrs(path: &Path, meta: &ObjectMeta, has_owner: bool) -> Result<()> {
    let lmd = std::fs::symlink_metadata(path).map_err(|e| Error::io("reading", path, e))?;
    if !lmd.is_dir() {
        return Err(Error::io(
            "setting attributes of",
            path,
            std::io::Error::other("not a directory any more"),
        ));
    }
    let f = std::fs::File::open(path).map_err(|e| Error::io("opening", path, e))?;
    let md = f.metadata().map_err(|e| Error::io("reading", path, e))?;
    if (md.dev(), md.ino()) != (lmd.dev(), lmd.ino()) {
        return Err(Error::io(
            "setting attributes of",
            path,
            std::io::Error::other("replaced while restoring"),
        ));
    }
    apply_file_attrs(&f, path, meta, has_owner)
}

/// Seconds and nanoseconds since the epoch (either side of it).
fn system_time(sec: i64, nsec: u32) -> SystemTime {
    let base = if sec >= 0 {
        UNIX_EPOCH + Duration::from_secs(sec as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(sec.unsigned_abs())
    };
    base + Duration::from_nanos(u64::from(nsec.min(999_999_999)))
}
