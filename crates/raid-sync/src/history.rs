//! Reading history from S3 Versioning: every version and delete marker under
//! a prefix (ListObjectVersions), and the tree as it was at a given time.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::object_meta::ObjectMeta;
use crate::s3::Bucket;

/// One version or delete marker of a key.
#[derive(Debug, Clone, Serialize)]
pub struct Version {
    pub key: String,
    pub version_id: Option<String>,
    /// Nanoseconds since the epoch (S3 reports milliseconds at best).
    pub last_modified_ns: i128,
    pub size: u64,
    pub is_latest: bool,
    pub delete_marker: bool,
}

impl Version {
    /// RFC 3339 time of this version.
    pub fn time(&self) -> String {
        let t = std::time::UNIX_EPOCH
            + std::time::Duration::from_nanos(self.last_modified_ns.max(0) as u64);
        humantime::format_rfc3339_millis(t).to_string()
    }
}

/// The attributes one version records (HeadObject), and whether they name
/// an owner; `fallback_mtime` stands in for a missing mtime.
pub async fn version_meta(
    bucket: &Bucket,
    v: &Version,
    fallback_mtime: i64,
) -> Result<(ObjectMeta, bool)> {
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
    let meta = ObjectMeta::from_map(head.metadata(), v.key.ends_with('/'), fallback_mtime);
    Ok((meta, ObjectMeta::has_owner(head.metadata())))
}

fn ns(dt: Option<&aws_sdk_s3::primitives::DateTime>) -> i128 {
    dt.map(|d| d.secs() as i128 * 1_000_000_000 + d.subsec_nanos() as i128)
        .unwrap_or(0)
}

/// Every version and delete marker whose key starts with `prefix`, in
/// listing order (per key: newest first).
pub async fn list_versions(bucket: &Bucket, prefix: &str) -> Result<Vec<Version>> {
    let mut out = Vec::new();
    let mut key_marker: Option<String> = None;
    let mut vid_marker: Option<String> = None;
    loop {
        bucket.count();
        let r = bucket
            .client
            .list_object_versions()
            .bucket(&bucket.name)
            .prefix(prefix)
            .set_key_marker(key_marker.take())
            .set_version_id_marker(vid_marker.take())
            .send()
            .await
            .map_err(|e| Error::s3("ListObjectVersions", prefix, e))?;
        for v in r.versions() {
            if let Some(k) = v.key() {
                out.push(Version {
                    key: k.to_string(),
                    version_id: v.version_id().map(str::to_string),
                    last_modified_ns: ns(v.last_modified()),
                    size: v.size().unwrap_or(0).max(0) as u64,
                    is_latest: v.is_latest().unwrap_or(false),
                    delete_marker: false,
                });
            }
        }
        for d in r.delete_markers() {
            if let Some(k) = d.key() {
                out.push(Version {
                    key: k.to_string(),
                    version_id: d.version_id().map(str::to_string),
                    last_modified_ns: ns(d.last_modified()),
                    size: 0,
                    is_latest: d.is_latest().unwrap_or(false),
                    delete_marker: true,
                });
            }
        }
        if r.is_truncated() != Some(true) {
            break;
        }
        key_marker = r.next_key_marker().map(str::to_string);
        vid_marker = r.next_version_id_marker().map(str::to_string);
        if key_marker.is_none() {
            break;
        }
    }
    Ok(out)
}

/// The objects that existed at `at_ns` (or now, for `None`): for each key
/// the newest version not later than `at_ns`, unless that is a delete marker.
pub fn as_of(versions: Vec<Version>, at_ns: Option<i128>) -> BTreeMap<String, Version> {
    let mut best: BTreeMap<String, Version> = BTreeMap::new();
    for v in versions {
        let eligible = match at_ns {
            None => v.is_latest,
            Some(t) => v.last_modified_ns <= t,
        };
        if !eligible {
            continue;
        }
        match best.get(&v.key) {
            Some(b) if !newer(&v, b) => {}
            _ => {
                best.insert(v.key.clone(), v);
            }
        }
    }
    best.retain(|_, v| !v.delete_marker);
    best
}

/// Whether `a` is a later state of its key than `b`. Times come to the
/// second (moto) or millisecond, so a delete and a re-creation can tie:
/// then the current version (`IsLatest`) is the newest of all, and
/// otherwise a delete marker wins, "absent" being the safer guess (the SDK
/// gives versions and delete markers as two lists, without their order).
fn newer(a: &Version, b: &Version) -> bool {
    if a.last_modified_ns != b.last_modified_ns {
        return a.last_modified_ns > b.last_modified_ns;
    }
    if a.is_latest != b.is_latest {
        return a.is_latest;
    }
    a.delete_marker && !b.delete_marker
}

/// Parses a point in time: RFC 3339 (`2026-11-20T10:00:00Z`, also without
/// seconds), a plain date (`2026-11-20`, midnight UTC), or an age such as
/// `2h` or `3days` meaning that long ago. Returns nanoseconds since the epoch.
pub fn parse_time(s: &str) -> Result<i128> {
    let s = s.trim();
    let to_ns = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(0)
    };
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return Ok(to_ns(t));
    }
    // `2026-11-20T10:00Z`: add the seconds humantime insists on.
    if let Some(stem) = s.strip_suffix('Z')
        && stem.len() == 16
        && let Ok(t) = humantime::parse_rfc3339_weak(&format!("{stem}:00Z"))
    {
        return Ok(to_ns(t));
    }
    if s.len() == 10
        && let Ok(t) = humantime::parse_rfc3339_weak(&format!("{s}T00:00:00Z"))
    {
        return Ok(to_ns(t));
    }
    let age = s.strip_suffix(" ago").unwrap_or(s);
    if let Ok(d) = humantime::parse_duration(age) {
        return Ok(to_ns(std::time::SystemTime::now()) - d.as_nanos() as i128);
    }
    Err(Error::Config(format!(
        "cannot read time {s:?}: use RFC 3339 (2026-11-20T10:00:00Z), a date, or an age (2h, 3days)"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(key: &str, t: i128, latest: bool, dm: bool) -> Version {
        Version {
            key: key.into(),
            version_id: Some(format!("{key}{t}")),
            last_modified_ns: t,
            size: 1,
            is_latest: latest,
            delete_marker: dm,
        }
    }

    #[test]
    fn a_re_creation_in_the_same_second_as_its_delete_is_the_current_version() {
        // Deleted and re-created within the second: the current version wins.
        let all = vec![v("a", 10, false, true), v("a", 10, true, false)];
        assert!(as_of(all.clone(), Some(10)).contains_key("a"));
        assert!(as_of(all, None).contains_key("a"));
        // Neither is current (changed again later): absent is the safer answer.
        let later = v("a", 20, true, false);
        let tied = vec![later, v("a", 10, false, false), v("a", 10, false, true)];
        assert!(!as_of(tied, Some(15)).contains_key("a"));
    }

    #[test]
    fn tree_at_a_time() {
        let all = vec![
            v("a", 30, true, true),
            v("a", 10, false, false),
            v("b", 20, true, false),
            v("c", 25, true, false),
            v("c", 5, false, false),
        ];
        let now = as_of(all.clone(), None);
        assert_eq!(now.keys().collect::<Vec<_>>(), ["b", "c"]);
        let t15 = as_of(all.clone(), Some(15));
        assert_eq!(t15.keys().collect::<Vec<_>>(), ["a", "c"]);
        assert_eq!(t15["c"].last_modified_ns, 5);
        assert!(as_of(all, Some(1)).is_empty());
    }

    #[test]
    fn times_parse() {
        let a = parse_time("2026-11-20T10:00Z").unwrap();
        assert_eq!(a, parse_time("2026-11-20T10:00:00Z").unwrap());
        assert_eq!(parse_time("2026-11-20").unwrap() + 36_000_000_000_000, a);
        assert!(parse_time("2h").is_ok());
        assert!(parse_time("yesterday-ish").is_err());
    }
}
