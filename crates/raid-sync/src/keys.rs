//! Mapping between relative paths and S3 keys, and the safety check that keeps
//! restore inside its target.
//!
//! A file `a/b.txt` becomes `PREFIX/a/b.txt`; a directory `a/b` becomes the
//! zero-byte marker `PREFIX/a/b/`. Restore accepts a key only if every
//! component is a plain name: no `..`, no `.`, no empty component, no NUL, not
//! absolute. A bucket is untrusted input: anyone with write access could have
//! put `../../etc/passwd` there.

use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};

/// The key prefix of one mirrored tree; empty or ending in `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPrefix(String);

impl KeyPrefix {
    /// Normalises a user-given prefix: strips leading slashes, adds a trailing one.
    pub fn new(prefix: &str) -> Result<Self> {
        let p = prefix.trim_start_matches('/');
        if p.is_empty() {
            return Ok(KeyPrefix(String::new()));
        }
        let p = format!("{}/", p.trim_end_matches('/'));
        check_components(&p[..p.len() - 1]).map_err(|reason| Error::UnsafeKey {
            key: prefix.to_string(),
            reason,
        })?;
        Ok(KeyPrefix(p))
    }

    /// The prefix as sent to S3 (empty or ending in `/`).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Key of a relative path (`/`-separated, no leading slash).
    pub fn key(&self, rel: &str, is_dir: bool) -> String {
        if is_dir {
            format!("{}{}/", self.0, rel)
        } else {
            format!("{}{}", self.0, rel)
        }
    }

    /// Relative path of a key under this prefix, and whether it is a directory
    /// marker. Refuses anything that could escape the target directory.
    pub fn rel_of(&self, key: &str) -> Result<(String, bool)> {
        let unsafe_key = |reason| Error::UnsafeKey {
            key: key.to_string(),
            reason,
        };
        let rest = key
            .strip_prefix(self.0.as_str())
            .ok_or_else(|| unsafe_key("not under the prefix"))?;
        let (rest, is_dir) = match rest.strip_suffix('/') {
            Some(r) => (r, true),
            None => (rest, false),
        };
        check_components(rest).map_err(unsafe_key)?;
        Ok((rest.to_string(), is_dir))
    }
}

/// Checks that a `/`-separated relative path has only plain components.
fn check_components(rel: &str) -> Result<(), &'static str> {
    if rel.is_empty() {
        return Err("empty path");
    }
    if rel.contains('\0') {
        return Err("contains a NUL byte");
    }
    if rel.starts_with('/') {
        return Err("absolute path");
    }
    for c in rel.split('/') {
        match c {
            "" => return Err("empty path component (`//`)"),
            "." => return Err("`.` component"),
            ".." => return Err("`..` component would escape the target"),
            _ => {}
        }
    }
    // Belt and braces: the platform's own parser must agree that every
    // component is a normal name.
    if !Path::new(rel)
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
    {
        return Err("not a plain relative path");
    }
    Ok(())
}

/// Relative path (`/`-separated UTF-8) of `path` under `root`.
pub fn rel_path(root: &Path, path: &Path) -> Result<String> {
    let rel = path.strip_prefix(root).map_err(|_| Error::BadName {
        path: path.to_path_buf(),
        reason: "outside the source directory",
    })?;
    let s = rel.to_str().ok_or_else(|| Error::BadName {
        path: path.to_path_buf(),
        reason: "name is not valid UTF-8",
    })?;
    if s.contains('\n') || s.contains('\r') {
        return Err(Error::BadName {
            path: path.to_path_buf(),
            reason: "name contains a line break",
        });
    }
    Ok(s.to_string())
}

/// Joins a checked relative path onto a target directory.
pub fn join(target: &Path, rel: &str) -> PathBuf {
    let mut p = target.to_path_buf();
    for c in rel.split('/') {
        p.push(c);
    }
    p
}

/// Whether `rel` is `scope` itself or lies below it (`scope` empty = everything).
pub fn in_scope(rel: &str, scope: &str) -> bool {
    scope.is_empty()
        || rel == scope
        || (rel.len() > scope.len()
            && rel.starts_with(scope)
            && rel.as_bytes()[scope.len()] == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_under_prefix() {
        let p = KeyPrefix::new("/backup/pi/").unwrap();
        assert_eq!(p.as_str(), "backup/pi/");
        assert_eq!(p.key("a/b.txt", false), "backup/pi/a/b.txt");
        assert_eq!(p.key("a", true), "backup/pi/a/");
        assert_eq!(
            p.rel_of("backup/pi/a/b.txt").unwrap(),
            ("a/b.txt".into(), false)
        );
        assert_eq!(p.rel_of("backup/pi/a/").unwrap(), ("a".into(), true));
    }

    #[test]
    fn escaping_keys_are_refused() {
        let p = KeyPrefix::new("").unwrap();
        for bad in [
            "../etc/passwd",
            "a/../../b",
            "/etc/passwd",
            "a//b",
            "./a",
            "a/\0b",
            "",
            "/",
        ] {
            assert!(
                matches!(p.rel_of(bad), Err(Error::UnsafeKey { .. })),
                "{bad:?} accepted"
            );
        }
        let q = KeyPrefix::new("x").unwrap();
        assert!(q.rel_of("y/a").is_err());
        assert!(q.rel_of("x/..").is_err());
        assert!(KeyPrefix::new("a/../b").is_err());
    }

    #[test]
    fn scope_matching_respects_component_boundaries() {
        assert!(in_scope("a/b", "a"));
        assert!(in_scope("a", "a"));
        assert!(!in_scope("ab", "a"));
        assert!(in_scope("anything", ""));
    }
}
