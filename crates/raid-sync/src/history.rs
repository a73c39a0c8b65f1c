//! Reading history from S3 Versioning: every version and delete marker under
//! a prefix (ListObjectVersions), and the tree as it was at a given time.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::error::{Error, Result};
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
    /// Position in the server's listing, where the server put versions and
    /// delete markers in one sequence (S3 does: per key, newest first): it
    /// orders entries whose times tie. `None` when it could not be read.
    #[serde(skip)]
    pub listed: Option<u64>,
}

impl Version {
    /// RFC 3339 time of this version.
    pub fn time(&self) -> String {
        let t = std::time::UNIX_EPOCH
            + std::time::Duration::from_nanos(self.last_modified_ns.max(0) as u64);
        humantime::format_rfc3339_millis(t).to_string()
    }
}

fn ns(dt: Option<&aws_sdk_s3::primitives::DateTime>) -> i128 {
    dt.map(|d| d.secs() as i128 * 1_000_000_000 + d.subsec_nanos() as i128)
        .unwrap_or(0)
}

/// Keeps the raw body of a response: the SDK splits ListObjectVersions into
/// a list of versions and a list of delete markers, losing the order in
/// which the server listed them together.
#[derive(Debug, Clone, Default)]
struct RawBody(Arc<Mutex<Option<bytes::Bytes>>>);

impl aws_sdk_s3::config::Intercept for RawBody {
    fn name(&self) -> &'static str {
        "raidfs-sync listing order"
    }

    fn read_after_deserialization(
        &self,
        context: &aws_sdk_s3::config::interceptors::AfterDeserializationInterceptorContextRef<'_>,
        _components: &aws_sdk_s3::config::RuntimeComponents,
        _cfg: &mut aws_sdk_s3::config::ConfigBag,
    ) -> std::result::Result<(), aws_sdk_s3::error::BoxError> {
        let body = context
            .response()
            .body()
            .bytes()
            .map(bytes::Bytes::copy_from_slice);
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = body;
        Ok(())
    }
}

/// The `(key, version id)` of each `<Version>` and `<DeleteMarker>` of a
/// ListObjectVersions response, in document order.
fn listing_order(xml: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = xml;
    loop {
        let v = rest.find("<Version>").map(|i| (i, "</Version>"));
        let d = rest.find("<DeleteMarker>").map(|i| (i, "</DeleteMarker>"));
        let Some((start, close)) = (match (v, d) {
            (Some(a), Some(b)) => Some(if a.0 < b.0 { a } else { b }),
            (a, b) => a.or(b),
        }) else {
            break;
        };
        let Some(len) = rest[start..].find(close) else {
            break;
        };
        let elem = &rest[start..start + len];
        if let (Some(k), Some(id)) = (xml_field(elem, "Key"), xml_field(elem, "VersionId")) {
            out.push((k, id));
        }
        rest = &rest[start + len + close.len()..];
    }
    out
}

/// The text of `<name>…</name>` in `elem`, with XML escapes undone.
fn xml_field(elem: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = elem.find(&open)? + open.len();
    let len = elem[start..].find(&format!("</{name}>"))?;
    Some(xml_unescape(&elem[start..start + len]))
}

fn xml_unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let Some(end) = rest.find(';') else { break };
        let ent = &rest[1..end];
        let c = match ent {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => ent
                .strip_prefix("#x")
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| ent.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match c {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Every version and delete marker whose key starts with `prefix`, in
/// listing order (per key: newest first).
pub async fn list_versions(bucket: &Bucket, prefix: &str) -> Result<Vec<Version>> {
    let mut out = Vec::new();
    let mut key_marker: Option<String> = None;
    let mut vid_marker: Option<String> = None;
    // Position of each entry in the server's listing, over all pages.
    let mut seq: u64 = 0;
    loop {
        bucket.count();
        let raw = RawBody::default();
        let r = bucket
            .client
            .list_object_versions()
            .bucket(&bucket.name)
            .prefix(prefix)
            .set_key_marker(key_marker.take())
            .set_version_id_marker(vid_marker.take())
            .customize()
            .interceptor(raw.clone())
            .send()
            .await
            .map_err(|e| Error::s3("ListObjectVersions", prefix, e))?;
        let body = raw.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        let order: HashMap<(String, String), u64> = body
            .as_deref()
            .and_then(|b| std::str::from_utf8(b).ok())
            .map(listing_order)
            .unwrap_or_default()
            .into_iter()
            .map(|kv| {
                seq += 1;
                (kv, seq)
            })
            .collect();
        tracing::debug!(
            versions = r.versions().len(),
            delete_markers = r.delete_markers().len(),
            in_listing_order = order.len(),
            "ListObjectVersions page"
        );
        let listed = |k: &str, id: Option<&str>| {
            order
                .get(&(k.to_string(), id.unwrap_or("null").to_string()))
                .copied()
        };
        for v in r.versions() {
            if let Some(k) = v.key() {
                out.push(Version {
                    listed: listed(k, v.version_id()),
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
                    listed: listed(k, d.version_id()),
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
    check_listing_order(&mut out);
    Ok(out)
}

/// Drops the listing positions if they contradict the times: a server that
/// lists all versions before all delete markers (moto does) gives no order
/// between the two, and is found out by a key whose older entry it lists
/// first.
fn check_listing_order(versions: &mut [Version]) {
    let mut by_key: HashMap<&str, Vec<(u64, i128)>> = HashMap::new();
    for v in versions.iter() {
        if let Some(l) = v.listed {
            by_key
                .entry(v.key.as_str())
                .or_default()
                .push((l, v.last_modified_ns));
        }
    }
    let consistent = by_key.into_values().all(|mut l| {
        l.sort_unstable();
        l.windows(2).all(|w| w[0].1 >= w[1].1)
    });
    if !consistent {
        for v in versions.iter_mut() {
            v.listed = None;
        }
    }
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
/// second (moto) or millisecond, so a delete and a re-creation can tie; then
/// the server's order decides: the current version (`IsLatest`) is the
/// newest of all, and otherwise the entry listed first is the newer (S3
/// lists a key's versions and delete markers together, newest first). Only
/// without either does a delete marker win, "absent" being the safer guess.
fn newer(a: &Version, b: &Version) -> bool {
    if a.last_modified_ns != b.last_modified_ns {
        return a.last_modified_ns > b.last_modified_ns;
    }
    if a.is_latest != b.is_latest {
        return a.is_latest;
    }
    if let (Some(x), Some(y)) = (a.listed, b.listed)
        && x != y
    {
        return x < y;
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
            listed: None,
        }
    }

    fn listed(mut v: Version, at: u64) -> Version {
        v.listed = Some(at);
        v
    }

    #[test]
    fn a_re_creation_in_the_same_second_as_its_delete_is_ordered_by_the_server() {
        // Deleted and re-created within the second: the current version wins.
        let all = vec![v("a", 10, false, true), v("a", 10, true, false)];
        assert!(as_of(all.clone(), Some(10)).contains_key("a"));
        assert!(as_of(all, None).contains_key("a"));
        // Neither is current (changed again later): the listing order says.
        let later = v("a", 20, true, false);
        let recreated = vec![
            listed(later.clone(), 1),
            listed(v("a", 10, false, false), 2),
            listed(v("a", 10, false, true), 3),
        ];
        assert!(as_of(recreated, Some(15)).contains_key("a"));
        let deleted = vec![
            listed(later.clone(), 1),
            listed(v("a", 10, false, true), 2),
            listed(v("a", 10, false, false), 3),
        ];
        assert!(!as_of(deleted, Some(15)).contains_key("a"));
        // No order known: absent is the safer answer.
        let unknown = vec![later, v("a", 10, false, false), v("a", 10, false, true)];
        assert!(!as_of(unknown, Some(15)).contains_key("a"));
    }

    #[test]
    fn a_listing_order_that_contradicts_the_times_is_not_used() {
        // All versions, then all delete markers: the newer marker comes last.
        let mut l = vec![
            listed(v("a", 10, false, false), 1),
            listed(v("a", 20, true, true), 2),
        ];
        check_listing_order(&mut l);
        assert!(l.iter().all(|v| v.listed.is_none()));
        let mut l = vec![
            listed(v("a", 20, true, true), 1),
            listed(v("a", 10, false, false), 2),
            listed(v("b", 5, true, false), 3),
        ];
        check_listing_order(&mut l);
        assert!(l.iter().all(|v| v.listed.is_some()));
    }

    #[test]
    fn the_listing_order_is_read_from_the_xml() {
        let xml = "<ListVersionsResult><Name>b</Name>\
            <Version><Key>a&amp;b</Key><VersionId>v2</VersionId><IsLatest>true</IsLatest></Version>\
            <DeleteMarker><Key>a&amp;b</Key><VersionId>d1</VersionId></DeleteMarker>\
            <Version><Key>c&#x20;&lt;d&gt;</Key><VersionId>null</VersionId></Version>\
            </ListVersionsResult>";
        let s = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(
            listing_order(xml),
            [s("a&b", "v2"), s("a&b", "d1"), s("c <d>", "null")]
        );
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
