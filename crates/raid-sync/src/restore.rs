//! `restore`: rebuild the tree (or a subtree) exactly as it was at a point in
//! time, from ListObjectVersions: files deleted after that time come back,
//! files created after it are absent.
//!
//! Safety before speed: every key is checked ([`KeyPrefix::rel_of`]) and every
//! destination is checked for existing files before a single byte is written,
//! so a refused restore writes nothing. Files are written to a temporary name,
//! checked against their CRC-32, given mode, owner (when running as root) and
//! mtime, and renamed into place.
//!
//! Encrypted objects (`x-amz-meta-raidfs-enc`) are decrypted chunk by chunk
//! as they arrive; a failed authentication tag removes the temporary file and
//! fails the restore. The key is checked against the bucket's key parameters
//! before anything is written.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use futures::{StreamExt, TryStreamExt};
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
    let manifest = dirmeta::fetch(&bucket, prefix, opts.at_ns).await?;
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

    // 2. Nothing existing is overwritten without --force.
    let mut dirs: BTreeSet<String> = manifest_dirs.into_iter().collect();
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
    std::fs::create_dir_all(&opts.target).map_err(|e| Error::io("creating", &opts.target, e))?;
    for d in &dirs {
        let dest = keys::join(&opts.target, d);
        if opts.force
            && let Ok(md) = std::fs::symlink_metadata(&dest)
            && !md.is_dir()
        {
            std::fs::remove_file(&dest).map_err(|e| Error::io("removing", &dest, e))?;
        }
        std::fs::create_dir_all(&dest).map_err(|e| Error::io("creating directory", &dest, e))?;
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
    let results: Vec<(Kind, u64)> = futures::stream::iter(files)
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
                r
            }
        })
        .buffer_unordered(opts.jobs.max(1))
        .try_collect()
        .await?;
    bar.finish_and_clear();
    let mut sum = RestoreSummary::default();
    for (kind, bytes) in results {
        match kind {
            Kind::Symlink => sum.symlinks += 1,
            _ => sum.files += 1,
        }
        sum.bytes += bytes;
    }
    let mut dir_list: Vec<&String> = dirs.iter().collect();
    dir_list.sort_by_key(|d| std::cmp::Reverse(d.matches('/').count()));
    for d in dir_list {
        sum.dirs += 1;
        let dest = keys::join(&opts.target, d);
        if let Some((meta, has_owner)) = manifest.as_ref().and_then(|m| m.attrs(d, 0)) {
            apply_attrs(&dest, &meta, has_owner, false)?;
            continue;
        }
        let Some((true, v)) = items.get(d.as_str()) else {
            continue;
        };
        bucket.count();
        let head = bucket
            .client
            .head_object()
            .bucket(&bucket.name)
            .key(&v.key)
            .set_version_id(v.version_id.clone())
            .send()
            .await
            .map_err(|e| Error::s3("HeadObject", &v.key, e))?;
        let fallback = (v.last_modified_ns / 1_000_000_000) as i64;
        let meta = ObjectMeta::from_map(head.metadata(), true, fallback);
        apply_attrs(&dest, &meta, ObjectMeta::has_owner(head.metadata()), false)?;
    }
    sum.seconds = t0.elapsed().as_secs_f64();
    Ok(sum)
}

async fn restore_one(
    bucket: &Bucket,
    target: &Path,
    rel: &str,
    v: &Version,
    force: bool,
    key: Option<&Key>,
) -> Result<(Kind, u64)> {
    bucket.count();
    let out = bucket
        .client
        .get_object()
        .bucket(&bucket.name)
        .key(&v.key)
        .set_version_id(v.version_id.clone())
        .send()
        .await
        .map_err(|e| Error::s3("GetObject", &v.key, e))?;
    let fallback = (v.last_modified_ns / 1_000_000_000) as i64;
    let meta = ObjectMeta::from_map(out.metadata(), false, fallback);
    let has_owner = ObjectMeta::has_owner(out.metadata());
    let key = body_key(&v.key, &meta, key)?;
    let mut dec = key.map(|k| k.decryptor());
    let decrypt_err = |source| Error::Decrypt {
        key: v.key.clone(),
        source,
    };
    let dest = keys::join(target, rel);
    let tmp = tmp_path(&dest);
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
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&t, &tmp).map_err(|e| Error::io("creating symlink", &tmp, e))?;
        len = t.len() as u64;
    } else {
        let mut f = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| Error::io("creating", &tmp, e))?;
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|e| Error::s3("GetObject", &v.key, e))?
        {
            let data: &[u8] = match dec.as_mut() {
                Some(d) => {
                    plain.clear();
                    if let Err(e) = d.push(&chunk, &mut plain) {
                        drop(f);
                        let _ = std::fs::remove_file(&tmp);
                        return Err(decrypt_err(e));
                    }
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
            if let Err(e) = d.finish(&mut plain) {
                drop(f);
                let _ = std::fs::remove_file(&tmp);
                return Err(decrypt_err(e));
            }
            hasher.update(&plain);
            len += plain.len() as u64;
            f.write_all(&plain)
                .await
                .map_err(|e| Error::io("writing", &tmp, e))?;
        }
        f.sync_all()
            .await
            .map_err(|e| Error::io("syncing", &tmp, e))?;
        drop(f);
        if let Err(e) = check_crc(&v.key, &meta, hasher.finalize()) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    }
    apply_attrs(&tmp, &meta, has_owner, meta.kind == Kind::Symlink)?;
    if force
        && let Ok(md) = std::fs::symlink_metadata(&dest)
        && md.is_dir()
    {
        std::fs::remove_dir_all(&dest).map_err(|e| Error::io("removing", &dest, e))?;
    }
    std::fs::rename(&tmp, &dest).map_err(|e| Error::io("renaming into place", &dest, e))?;
    Ok((meta.kind, len))
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
            "{object} is encrypted: give --encrypt-key-file or --encrypt-passphrase-file              (or RAIDFS_SYNC_PASSPHRASE)"
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

fn tmp_path(dest: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(".raidfs-restore.");
    name.push(dest.file_name().unwrap_or_default());
    dest.with_file_name(name)
}

/// Mode, owner (only if recorded, and only where permitted: a non-root
/// restore keeps the restoring user as owner) and mtime.
fn apply_attrs(path: &Path, meta: &ObjectMeta, has_owner: bool, symlink: bool) -> Result<()> {
    if has_owner {
        match std::os::unix::fs::lchown(path, Some(meta.uid), Some(meta.gid)) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(1) => {} // EPERM: not root
            Err(e) => return Err(Error::io("changing owner of", path, e)),
        }
    }
    let mtime = filetime::FileTime::from_unix_time(meta.mtime_sec, meta.mtime_nsec);
    if symlink {
        filetime::set_symlink_file_times(path, mtime, mtime)
            .map_err(|e| Error::io("setting times of", path, e))?;
    } else {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(meta.perm))
            .map_err(|e| Error::io("setting mode of", path, e))?;
        filetime::set_file_times(path, mtime, mtime)
            .map_err(|e| Error::io("setting times of", path, e))?;
    }
    Ok(())
}
