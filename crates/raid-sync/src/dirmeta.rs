//! Directory attributes in one object: `<prefix>.raidfs-sync/dirs.json`.
//!
//! Why: a zero-byte marker object per directory costs one PUT per directory
//! in the initial sync (and one per new directory later) only to carry the
//! directory's mode, owner and mtime. One versioned object holding every
//! directory's attributes carries the same information for one PUT per pass
//! that changed any directory. Markers are still written for directories
//! that are empty when synced, so other S3 tools show them. `restore --at T`
//! takes the version of this object current at T; directories of buckets
//! written before it existed keep their attributes on their markers, which
//! restore still reads.
//!
//! Format (version 1), keys sorted: `{"version":1,"dirs":{"a/b":{META}}}`
//! where META is the same `x-amz-meta-*` map a marker carries (`mode`,
//! `uid`, `gid`, `mtime`; see docs/SYNC.md).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::history;
use crate::keys::KeyPrefix;
use crate::keysource::RESERVED_DIR;
use crate::object_meta::{Kind, ObjectMeta};
use crate::reconcile::meta_of;
use crate::s3::Bucket;
use crate::state::Entry;

/// Manifest format version.
pub const VERSION: u32 = 1;

/// The manifest's key under `prefix`.
pub fn manifest_key(prefix: &str) -> String {
    format!("{prefix}{RESERVED_DIR}/dirs.json")
}

/// Every directory's attributes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirManifest {
    pub version: u32,
    pub dirs: BTreeMap<String, BTreeMap<String, String>>,
}

impl DirManifest {
    /// The manifest of the directories among `entries` (the state).
    pub fn from_entries<'a>(entries: impl IntoIterator<Item = (&'a String, &'a Entry)>) -> Self {
        let dirs = entries
            .into_iter()
            .filter(|(_, e)| e.kind == Kind::Dir)
            .map(|(rel, e)| (rel.clone(), meta_of(e, None).to_map().into_iter().collect()))
            .collect();
        DirManifest {
            version: VERSION,
            dirs,
        }
    }

    /// Its bytes: deterministic, so equal manifests have equal CRCs.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses a manifest downloaded from `key`.
    pub fn parse(key: &str, bytes: &[u8]) -> Result<Self> {
        let m: DirManifest = serde_json::from_slice(bytes)
            .map_err(|e| Error::Config(format!("directory manifest {key} is not readable: {e}")))?;
        if m.version > VERSION {
            return Err(Error::Config(format!(
                "directory manifest {key} has version {}, newer than this raidfs-sync understands ({VERSION})",
                m.version
            )));
        }
        Ok(m)
    }

    /// One directory's attributes and whether they name an owner.
    pub fn attrs(&self, rel: &str, fallback_mtime: i64) -> Option<(ObjectMeta, bool)> {
        let m: HashMap<String, String> = self
            .dirs
            .get(rel)?
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Some((
            ObjectMeta::from_map(Some(&m), true, fallback_mtime),
            ObjectMeta::has_owner(Some(&m)),
        ))
    }
}

/// What [`fetch_at`] found.
#[derive(Debug)]
pub enum Found {
    Manifest(DirManifest),
    /// The bucket has no manifest for that time.
    None,
    /// The version is in an archive class (a lifecycle rule moved it): S3
    /// serves it only after a restore from the archive.
    Archived {
        key: String,
    },
}

/// The manifest current at `at_ns` (the latest without), if the bucket has
/// one: one ListObjectVersions and one GetObject. An archived one is an
/// error: [`fetch_at`] tells it apart.
pub async fn fetch(
    bucket: &Bucket,
    prefix: &KeyPrefix,
    at_ns: Option<i128>,
) -> Result<Option<DirManifest>> {
    match fetch_at(bucket, prefix, at_ns).await? {
        Found::Manifest(m) => Ok(Some(m)),
        Found::None => Ok(None),
        Found::Archived { key } => Err(Error::Config(format!(
            "the directory manifest {key} is archived: restore it from Glacier first"
        ))),
    }
}

/// [`fetch`], with an archived manifest told apart from other failures.
pub async fn fetch_at(bucket: &Bucket, prefix: &KeyPrefix, at_ns: Option<i128>) -> Result<Found> {
    let key = manifest_key(prefix.as_str());
    let versions = history::list_versions(bucket, &key).await?;
    let Some(v) = history::as_of(versions, at_ns).remove(&key) else {
        return Ok(Found::None);
    };
    bucket.count();
    let out = bucket
        .client
        .get_object()
        .bucket(&bucket.name)
        .key(&key)
        .set_version_id(v.version_id.clone())
        .send()
        .await;
    let out = match out {
        Err(e)
            if e.as_service_error()
                .is_some_and(|se| se.is_invalid_object_state()) =>
        {
            return Ok(Found::Archived { key });
        }
        r => r.map_err(|e| Error::s3("GetObject", &key, e))?,
    };
    let bytes = out
        .body
        .collect()
        .await
        .map_err(|e| Error::io("downloading", &key, std::io::Error::other(e)))?
        .into_bytes();
    DirManifest::parse(&key, &bytes).map(Found::Manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(perm: u32, mtime: i64) -> Entry {
        Entry {
            kind: Kind::Dir,
            size: 0,
            mtime_sec: mtime,
            mtime_nsec: 123_456_789,
            ctime_sec: 0,
            ctime_nsec: 0,
            dev: 1,
            ino: 2,
            perm,
            uid: 1000,
            gid: 100,
            crc32: None,
            target: None,
            racy: false,
        }
    }

    #[test]
    fn a_manifest_round_trips_every_directory_attribute() {
        let mut entries = BTreeMap::new();
        entries.insert("a".to_string(), dir(0o750, 1_700_000_000));
        entries.insert("a/b".to_string(), dir(0o1777, 1_600_000_000));
        let mut file = dir(0o644, 5);
        file.kind = Kind::File;
        entries.insert("a/f".to_string(), file);
        let m = DirManifest::from_entries(&entries);
        assert_eq!(m.dirs.len(), 2, "files are not in it");
        let back = DirManifest::parse("k", &m.to_bytes()).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.to_bytes(), m.to_bytes(), "deterministic bytes");
        let (meta, owner) = back.attrs("a/b", 0).unwrap();
        assert!(owner);
        assert_eq!(meta.kind, Kind::Dir);
        assert_eq!(meta.perm, 0o1777);
        assert_eq!((meta.uid, meta.gid), (1000, 100));
        assert_eq!(
            (meta.mtime_sec, meta.mtime_nsec),
            (1_600_000_000, 123_456_789)
        );
        assert!(back.attrs("a/f", 0).is_none());
        assert_eq!(manifest_key("p/"), "p/.raidfs-sync/dirs.json");
    }
}
