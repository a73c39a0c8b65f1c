//! POSIX attributes in object metadata (`x-amz-meta-*`).
//!
//! The names and encodings follow s3fs-fuse, so a mirrored bucket can also be
//! mounted with s3fs and read with correct modes and owners:
//!
//! | header                 | value                                                    |
//! |------------------------|----------------------------------------------------------|
//! | `x-amz-meta-mode`      | decimal `st_mode`, including the file-type bits          |
//! | `x-amz-meta-uid`       | decimal uid                                              |
//! | `x-amz-meta-gid`       | decimal gid                                              |
//! | `x-amz-meta-mtime`     | seconds since the epoch, `SECS.NNNNNNNNN` (nanoseconds)  |
//! | `x-amz-meta-crc32`     | CRC-32 (IEEE) of the whole content, 8 lowercase hex digits |
//! | `x-amz-meta-raidfs-enc`| only on client-side encrypted objects: fingerprint of the key ([`crate::crypt`]); the CRC-32 is then of the plaintext |
//!
//! A symlink's object body is its target (as with s3fs); a directory is a
//! zero-byte `dir/` key.

use std::collections::HashMap;

/// File-type bits of `st_mode` (from `<sys/stat.h>`, identical on every Linux).
pub const S_IFMT: u32 = 0o170000;
/// Regular file.
pub const S_IFREG: u32 = 0o100000;
/// Directory.
pub const S_IFDIR: u32 = 0o040000;
/// Symbolic link.
pub const S_IFLNK: u32 = 0o120000;

/// Metadata header names (without the `x-amz-meta-` prefix the SDK adds).
pub const META_MODE: &str = "mode";
/// Owner uid.
pub const META_UID: &str = "uid";
/// Owner gid.
pub const META_GID: &str = "gid";
/// Modification time.
pub const META_MTIME: &str = "mtime";
/// Whole-content CRC-32.
pub const META_CRC32: &str = "crc32";
/// Fingerprint of the key an encrypted body was sealed with.
pub const META_ENC: &str = "raidfs-enc";

/// What kind of tree entry an object stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Kind {
    File,
    Dir,
    Symlink,
}

/// The attributes stored with each object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub kind: Kind,
    /// Permission bits (`st_mode & 0o7777`).
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_sec: i64,
    pub mtime_nsec: u32,
    /// CRC-32 of the content (files and symlink targets).
    pub crc32: Option<u32>,
    /// Key fingerprint if the body is client-side encrypted.
    pub enc: Option<String>,
}

impl ObjectMeta {
    /// The metadata map for PutObject / CreateMultipartUpload / CopyObject.
    pub fn to_map(&self) -> HashMap<String, String> {
        let type_bits = match self.kind {
            Kind::File => S_IFREG,
            Kind::Dir => S_IFDIR,
            Kind::Symlink => S_IFLNK,
        };
        let mut m = HashMap::new();
        m.insert(
            META_MODE.into(),
            (type_bits | (self.perm & 0o7777)).to_string(),
        );
        m.insert(META_UID.into(), self.uid.to_string());
        m.insert(META_GID.into(), self.gid.to_string());
        m.insert(
            META_MTIME.into(),
            format!("{}.{:09}", self.mtime_sec, self.mtime_nsec),
        );
        if let Some(c) = self.crc32 {
            m.insert(META_CRC32.into(), format!("{c:08x}"));
        }
        if let Some(k) = &self.enc {
            m.insert(META_ENC.into(), k.clone());
        }
        m
    }

    /// Reads the attributes back. `is_dir_key` is whether the key ends in `/`;
    /// missing fields (an object written by another tool) get safe defaults:
    /// mode 0644/0755, owner of whoever restores, mtime of the object.
    pub fn from_map(
        m: Option<&HashMap<String, String>>,
        is_dir_key: bool,
        fallback_mtime: i64,
    ) -> Self {
        let get = |k: &str| m.and_then(|m| m.get(k)).map(|s| s.trim());
        let mode: Option<u32> = get(META_MODE).and_then(|v| v.parse().ok());
        let kind = if is_dir_key {
            Kind::Dir
        } else {
            match mode.map(|m| m & S_IFMT) {
                Some(S_IFLNK) => Kind::Symlink,
                _ => Kind::File,
            }
        };
        let default_perm = if kind == Kind::Dir { 0o755 } else { 0o644 };
        let (mtime_sec, mtime_nsec) = get(META_MTIME)
            .and_then(parse_mtime)
            .unwrap_or((fallback_mtime, 0));
        ObjectMeta {
            kind,
            perm: mode.map(|m| m & 0o7777).unwrap_or(default_perm),
            uid: get(META_UID).and_then(|v| v.parse().ok()).unwrap_or(0),
            gid: get(META_GID).and_then(|v| v.parse().ok()).unwrap_or(0),
            mtime_sec,
            mtime_nsec,
            crc32: get(META_CRC32).and_then(|v| u32::from_str_radix(v, 16).ok()),
            enc: get(META_ENC).map(str::to_string),
        }
    }

    /// Whether the metadata carried an owner (so restore should chown).
    pub fn has_owner(m: Option<&HashMap<String, String>>) -> bool {
        m.is_some_and(|m| m.contains_key(META_UID) && m.contains_key(META_GID))
    }
}

/// Parses `SECS[.FRACTION]` (fraction of up to 9 digits).
fn parse_mtime(s: &str) -> Option<(i64, u32)> {
    let (secs, frac) = match s.split_once('.') {
        Some((a, b)) => (a, b),
        None => (s, ""),
    };
    let secs: i64 = secs.parse().ok()?;
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let nsec = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().ok()?
    };
    Some((secs, nsec))
}

/// CRC-32 in the form S3 wants in `x-amz-checksum-crc32`: base64 of the
/// big-endian 4 bytes.
pub fn crc32_b64(crc: u32) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(crc.to_be_bytes())
}

/// Parses an `x-amz-checksum-crc32` value; `None` for composite checksums
/// (`…-N`, a checksum of part checksums) and anything malformed.
pub fn crc32_from_b64(s: &str) -> Option<u32> {
    use base64::Engine;
    if s.contains('-') {
        return None;
    }
    let b = base64::engine::general_purpose::STANDARD.decode(s).ok()?;
    Some(u32::from_be_bytes(b.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips() {
        let m = ObjectMeta {
            kind: Kind::Symlink,
            perm: 0o4755,
            uid: 1000,
            gid: 100,
            mtime_sec: 1_700_000_000,
            mtime_nsec: 5,
            crc32: Some(0xdeadbeef),
            enc: Some("0011223344556677".into()),
        };
        let map = m.to_map();
        assert_eq!(map["mode"], (S_IFLNK | 0o4755).to_string());
        assert_eq!(map["mtime"], "1700000000.000000005");
        assert_eq!(ObjectMeta::from_map(Some(&map), false, 0), m);
    }

    #[test]
    fn foreign_objects_get_defaults() {
        let m = ObjectMeta::from_map(None, true, 42);
        assert_eq!((m.kind, m.perm, m.mtime_sec), (Kind::Dir, 0o755, 42));
        let mut map = HashMap::new();
        map.insert("mtime".to_string(), "12.5".to_string());
        assert_eq!(
            ObjectMeta::from_map(Some(&map), false, 0).mtime_nsec,
            500_000_000
        );
    }

    #[test]
    fn checksum_encoding_matches_s3() {
        // CRC-32 of "hello world" is 0x0d4a1185; S3 shows it as "DUoRhQ==".
        let c = crc32fast::hash(b"hello world");
        assert_eq!(c, 0x0d4a_1185);
        assert_eq!(crc32_b64(c), "DUoRhQ==");
        assert_eq!(crc32_from_b64("DUoRhQ=="), Some(c));
        assert_eq!(crc32_from_b64("DUoRhQ==-3"), None);
    }
}
