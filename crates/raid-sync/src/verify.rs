//! `verify`: compare every local entry with its object, by CRC-32.
//!
//! For each file the local CRC-32 is computed and compared with every
//! checksum the bucket can vouch for without a download: `x-amz-meta-crc32`
//! (written by raidfs-sync) and the server's own `x-amz-checksum-crc32` when
//! it is a whole-object checksum. If neither exists (an object written by
//! another tool), or with `--download`, the object is downloaded and its
//! CRC-32 computed. Keys in the bucket with no local entry are reported too.
//!
//! A client-side encrypted object is always downloaded and decrypted: its
//! stored CRC-32 is of the plaintext, and only decryption proves the
//! ciphertext intact. A failed authentication tag is reported as a
//! `tampered` difference.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use aws_sdk_s3::types::ChecksumMode;
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::crypt::{self, Key};
use crate::error::{Error, Result};
use crate::keys::{self, KeyPrefix};
use crate::object_meta::{Kind, ObjectMeta, crc32_from_b64};
use crate::s3::Bucket;
use crate::scan::{self, Scan};

/// One disagreement between the tree and the bucket.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Difference {
    pub path: String,
    /// `missing` (no object), `extra` (no local entry), `size`, `checksum`,
    /// `tampered` (an encrypted object failed authentication), `key` (an
    /// encrypted object and no key or another key), `skipped` (a local
    /// entry that is not mirrored: a name that is not UTF-8 or has a line
    /// break, a socket, FIFO or device, or what could not be read).
    pub kind: &'static str,
    pub detail: String,
}

/// Result of a verify run.
#[derive(Debug, Default, Clone, Serialize)]
pub struct VerifyReport {
    pub checked: u64,
    pub matched: u64,
    pub downloaded: u64,
    pub differences: Vec<Difference>,
}

/// Verifies `source` against the objects under `prefix`.
pub async fn verify(
    bucket: Arc<Bucket>,
    prefix: &KeyPrefix,
    source: &Path,
    download: bool,
    jobs: usize,
    dkey: Option<Arc<Key>>,
) -> Result<VerifyReport> {
    let src = source.to_path_buf();
    let scan: Scan = tokio::task::spawn_blocking(move || {
        let mut s = Scan::default();
        scan::scan_scope(&src, "", &mut s).map(|_| s)
    })
    .await
    .map_err(|e| Error::io("scanning", source, std::io::Error::other(e)))??;
    let mut remote: HashMap<String, u64> = bucket
        .list(prefix.as_str())
        .await?
        .into_iter()
        .filter(|o| {
            !o.key
                .strip_prefix(prefix.as_str())
                .is_some_and(crate::keysource::is_reserved)
        })
        .map(|o| (o.key, o.size))
        .collect();
    // Directories that are not empty have no marker; the manifest holds them.
    let manifest = crate::dirmeta::fetch(&bucket, prefix, None).await?;
    let mut report = VerifyReport::default();
    // Entries the mirror cannot hold, or that could not be read: the bucket
    // is not a copy of them.
    for sk in &scan.skipped {
        report.differences.push(Difference {
            path: sk.path.clone(),
            kind: "skipped",
            detail: sk.reason.clone(),
        });
    }
    let mut to_check = Vec::new();
    for (rel, e) in &scan.entries {
        if crate::keysource::is_reserved(rel) {
            continue;
        }
        report.checked += 1;
        let key = prefix.key(rel, e.kind == Kind::Dir);
        let Some(size) = remote.remove(&key) else {
            if e.kind == Kind::Dir && manifest.as_ref().is_some_and(|m| m.dirs.contains_key(rel)) {
                report.matched += 1;
                continue;
            }
            report.differences.push(Difference {
                path: rel.clone(),
                kind: "missing",
                detail: format!("no object {key}"),
            });
            continue;
        };
        match e.kind {
            Kind::Dir => report.matched += 1,
            Kind::File
                if size != e.size && !(dkey.is_some() && size == crypt::encrypted_len(e.size)) =>
            {
                report.differences.push(Difference {
                    path: rel.clone(),
                    kind: "size",
                    detail: format!("local {} bytes, object {size} bytes", e.size),
                })
            }
            _ => to_check.push((rel.clone(), key, e.clone())),
        }
    }
    for key in remote.keys() {
        report.differences.push(Difference {
            path: prefix
                .rel_of(key)
                .map(|r| r.0)
                .unwrap_or_else(|_| key.clone()),
            kind: "extra",
            detail: format!("object {key} has no local entry"),
        });
    }
    let results: Vec<(Option<Difference>, bool)> = futures::stream::iter(to_check)
        .map(|(rel, okey, e)| {
            let bucket = bucket.clone();
            let path = keys::join(source, &rel);
            let k = dkey.clone();
            async move { check_one(&bucket, &path, rel, &okey, &e, download, k.as_deref()).await }
        })
        .buffer_unordered(jobs.max(1))
        .try_collect()
        .await?;
    for (d, downloaded) in results {
        report.downloaded += u64::from(downloaded);
        match d {
            Some(d) => report.differences.push(d),
            None => report.matched += 1,
        }
    }
    report.differences.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(report)
}

async fn check_one(
    bucket: &Bucket,
    path: &Path,
    rel: String,
    key: &str,
    e: &crate::state::Entry,
    download: bool,
    dkey: Option<&Key>,
) -> Result<(Option<Difference>, bool)> {
    let local = match e.kind {
        Kind::Symlink => crc32fast::hash(e.target.as_deref().unwrap_or_default().as_bytes()),
        _ => {
            let (p, r, k) = (path.to_path_buf(), rel.clone(), key.to_string());
            let local = tokio::task::spawn_blocking(move || local_crc(&p, &r, &k))
                .await
                .unwrap_or_else(|err| {
                    Err(Difference {
                        path: rel.clone(),
                        kind: "skipped",
                        detail: format!("reading {}: {err}", path.display()),
                    })
                });
            match local {
                Ok(c) => c,
                Err(d) => return Ok((Some(d), false)),
            }
        }
    };
    bucket.count();
    let head = bucket
        .client
        .head_object()
        .bucket(&bucket.name)
        .key(key)
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .map_err(|err| Error::s3("HeadObject", key, err))?;
    let meta = ObjectMeta::from_map(head.metadata(), false, 0);
    let mut claims: Vec<(&str, u32)> = Vec::new();
    if let Some(c) = meta.crc32 {
        claims.push(("x-amz-meta-crc32", c));
    }
    let dkey = match crate::restore::body_key(key, &meta, dkey) {
        Ok(k) => k,
        Err(err) => {
            return Ok((
                Some(Difference {
                    path: rel,
                    kind: "key",
                    detail: err.to_string(),
                }),
                false,
            ));
        }
    };
    // The server's checksum of an encrypted object is of the ciphertext.
    if dkey.is_none()
        && let Some(c) = head.checksum_crc32().and_then(crc32_from_b64)
    {
        claims.push(("x-amz-checksum-crc32", c));
    }
    let mut downloaded = false;
    if download || claims.is_empty() || dkey.is_some() {
        bucket.count();
        let out = bucket
            .client
            .get_object()
            .bucket(&bucket.name)
            .key(key)
            .send()
            .await
            .map_err(|err| Error::s3("GetObject", key, err))?;
        let mut body = out.body;
        let mut h = crc32fast::Hasher::new();
        let mut dec = dkey.map(|k| k.decryptor());
        let mut plain = Vec::new();
        let mut failure = None;
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|err| Error::s3("GetObject", key, err))?
        {
            match dec.as_mut() {
                Some(d) => {
                    plain.clear();
                    if let Err(err) = d.push(&chunk, &mut plain) {
                        failure = Some(err);
                        break;
                    }
                    h.update(&plain);
                }
                None => h.update(&chunk),
            }
        }
        if failure.is_none()
            && let Some(d) = dec
        {
            plain.clear();
            match d.finish(&mut plain) {
                Ok(()) => h.update(&plain),
                Err(err) => failure = Some(err),
            }
        }
        if let Some(err) = failure {
            return Ok((
                Some(Difference {
                    path: rel,
                    kind: "tampered",
                    detail: format!("object {key}: {err}"),
                }),
                true,
            ));
        }
        claims.push(("content", h.finalize()));
        downloaded = true;
    }
    let bad: Vec<String> = claims
        .iter()
        .filter(|(_, c)| *c != local)
        .map(|(what, c)| format!("{what} {c:08x}"))
        .collect();
    let diff = (!bad.is_empty()).then(|| Difference {
        path: rel,
        kind: "checksum",
        detail: format!("local crc32 {local:08x}, bucket {}", bad.join(", ")),
    });
    Ok((diff, downloaded))
}

/// The CRC-32 of the local file `path` (entry `rel`, object `key`), or the
/// difference that stands for it when it cannot be read: `extra` when the
/// file is gone since the scan (the object has no local entry), `skipped`
/// with the error otherwise (an I/O error, a file that is no longer a
/// regular file). One file that cannot be read does not stop the others.
fn local_crc(path: &Path, rel: &str, key: &str) -> std::result::Result<u32, Difference> {
    crc_of(path).map_err(|err| match err {
        Error::Gone { .. } => Difference {
            path: rel.to_string(),
            kind: "extra",
            detail: format!(
                "object {key} has no local entry ({} is gone since the scan)",
                path.display()
            ),
        },
        Error::Changed { .. } => Difference {
            path: rel.to_string(),
            kind: "skipped",
            detail: format!("{} is no longer a regular file", path.display()),
        },
        err => Difference {
            path: rel.to_string(),
            kind: "skipped",
            detail: err.to_string(),
        },
    })
}

/// The CRC-32 of a regular file, opened as [`crate::upload::open_regular`]
/// does (no symlink followed, no FIFO waited on).
fn crc_of(path: &Path) -> Result<u32> {
    use std::io::Read;
    let mut f = crate::upload::open_regular(path)?;
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| Error::io("reading", path, e))?;
        if n == 0 {
            return Ok(h.finalize());
        }
        h.update(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_cannot_be_read_is_a_difference() {
        let d = tempfile::tempdir().unwrap();
        let ok = d.path().join("ok");
        std::fs::write(&ok, b"abc").unwrap();
        assert_eq!(local_crc(&ok, "ok", "k/ok"), Ok(crc32fast::hash(b"abc")));

        let gone = local_crc(&d.path().join("gone"), "gone", "k/gone").unwrap_err();
        assert_eq!((gone.path.as_str(), gone.kind), ("gone", "extra"));
        assert!(gone.detail.contains("k/gone"), "{}", gone.detail);

        // A FIFO where the file was: not waited on.
        let fifo = d.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success(), "mkfifo");
        let f = local_crc(&fifo, "fifo", "k/fifo").unwrap_err();
        assert_eq!(f.kind, "skipped");

        // A read error (EISDIR).
        let dir = d.path().join("dir");
        std::fs::create_dir(&dir).unwrap();
        let e = local_crc(&dir, "dir", "k/dir").unwrap_err();
        assert_eq!(e.kind, "skipped");
    }
}
