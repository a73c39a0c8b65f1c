//! Where the encryption key comes from, and the small key-parameters object
//! that lets every later run (and another machine) derive the same key and
//! recognise a wrong one before touching any data.
//!
//! - Key file: 32 raw bytes, or 64 hex digits (surrounding whitespace ignored).
//! - Passphrase: Argon2id with a random 16-byte salt; salt and cost
//!   parameters are stored in `<prefix>.raidfs-sync/keyparams` (JSON), which
//!   is created by the first encrypted sync. Without it the key cannot be
//!   derived again, so it is never deleted by a sync.
//!
//! The parameters object also holds the key's fingerprint
//! ([`Key::id`]): a mismatch is reported as a wrong passphrase or key file.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::crypt::Key;
use crate::error::{Error, Result};
use crate::s3::Bucket;

/// Name of the reserved directory under the prefix (never synced, restored
/// or reported as extra).
pub const RESERVED_DIR: &str = ".raidfs-sync";

/// How the user supplies the key.
#[derive(Debug, Clone)]
pub enum KeySource {
    KeyFile(PathBuf),
    Passphrase(String),
}

/// Contents of the key-parameters object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyParams {
    pub format: u32,
    /// `argon2id` (passphrase) or `key-file`.
    pub kdf: String,
    /// Argon2 salt (hex), memory KiB, passes, lanes.
    #[serde(default)]
    pub salt: String,
    #[serde(default)]
    pub m_cost: u32,
    #[serde(default)]
    pub t_cost: u32,
    #[serde(default)]
    pub p_cost: u32,
    pub cipher: String,
    pub key_id: String,
}

const CIPHER: &str = "xchacha20poly1305-stream-be32-64k";

/// Key of the parameters object.
pub fn params_key(prefix: &str) -> String {
    format!("{prefix}{RESERVED_DIR}/keyparams")
}

/// Whether a relative path is inside the reserved directory.
pub fn is_reserved(rel: &str) -> bool {
    rel == RESERVED_DIR || rel.starts_with(".raidfs-sync/")
}

/// Loads the key. With `create` (a sync) missing parameters are written;
/// otherwise (restore, verify, versions) a passphrase needs them.
pub async fn load_key(
    bucket: &Bucket,
    prefix: &str,
    source: &KeySource,
    create: bool,
) -> Result<Key> {
    let pkey = params_key(prefix);
    let stored = get_params(bucket, &pkey).await?;
    match (source, stored) {
        (KeySource::KeyFile(path), stored) => {
            let key = read_key_file(path)?;
            match stored {
                Some(p) if p.key_id != key.id() => Err(Error::Config(format!(
                    "wrong encryption key: {} is not the key this bucket prefix was \
                     encrypted with (fingerprint {}, expected {}). Nothing was written.",
                    path.display(),
                    key.id(),
                    p.key_id
                ))),
                Some(_) => Ok(key),
                None => {
                    if create {
                        let p = KeyParams {
                            format: 1,
                            kdf: "key-file".into(),
                            salt: String::new(),
                            m_cost: 0,
                            t_cost: 0,
                            p_cost: 0,
                            cipher: CIPHER.into(),
                            key_id: key.id().to_string(),
                        };
                        put_params(bucket, &pkey, &p).await?;
                    }
                    Ok(key)
                }
            }
        }
        (KeySource::Passphrase(pass), Some(p)) => {
            if p.kdf != "argon2id" {
                return Err(Error::Config(format!(
                    "this bucket prefix was encrypted with a key file, not a passphrase \
                     (s3://{}/{pkey}); give --encrypt-key-file",
                    bucket.name
                )));
            }
            let salt = unhex(&p.salt).ok_or_else(|| {
                Error::Config(format!("malformed salt in s3://{}/{pkey}", bucket.name))
            })?;
            let pass = pass.clone();
            let (m, t, l) = (p.m_cost, p.t_cost, p.p_cost);
            let key = tokio::task::spawn_blocking(move || derive(&pass, &salt, m, t, l))
                .await
                .map_err(|e| Error::Config(format!("key derivation: {e}")))??;
            if key.id() != p.key_id {
                return Err(Error::Config(
                    "wrong passphrase: it does not derive the key this bucket prefix was \
                     encrypted with. Nothing was written."
                        .into(),
                ));
            }
            Ok(key)
        }
        (KeySource::Passphrase(pass), None) => {
            if !create {
                return Err(Error::Config(format!(
                    "no key parameters at s3://{}/{pkey}: nothing under this prefix was \
                     synced with --encrypt-passphrase-file",
                    bucket.name
                )));
            }
            use chacha20poly1305::aead::OsRng;
            use chacha20poly1305::aead::rand_core::RngCore;
            let mut salt = [0u8; 16];
            OsRng.fill_bytes(&mut salt);
            let (m, t, l) = (
                argon2::Params::DEFAULT_M_COST,
                argon2::Params::DEFAULT_T_COST,
                argon2::Params::DEFAULT_P_COST,
            );
            let pass2 = pass.clone();
            let key = tokio::task::spawn_blocking(move || derive(&pass2, &salt, m, t, l))
                .await
                .map_err(|e| Error::Config(format!("key derivation: {e}")))??;
            let p = KeyParams {
                format: 1,
                kdf: "argon2id".into(),
                salt: salt.iter().map(|b| format!("{b:02x}")).collect(),
                m_cost: m,
                t_cost: t,
                p_cost: l,
                cipher: CIPHER.into(),
                key_id: key.id().to_string(),
            };
            put_params(bucket, &pkey, &p).await?;
            Ok(key)
        }
    }
}

/// Argon2id of the passphrase into a 32-byte key.
pub fn derive(pass: &str, salt: &[u8], m: u32, t: u32, p: u32) -> Result<Key> {
    let params = argon2::Params::new(m, t, p, Some(32))
        .map_err(|e| Error::Config(format!("bad Argon2 parameters: {e}")))?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = [0u8; 32];
    a.hash_password_into(pass.as_bytes(), salt, &mut out)
        .map_err(|e| Error::Config(format!("key derivation: {e}")))?;
    Ok(Key::from_bytes(&out))
}

/// Reads a key file: 32 raw bytes or 64 hex digits.
pub fn read_key_file(path: &std::path::Path) -> Result<Key> {
    let data = std::fs::read(path).map_err(|e| Error::io("reading key file", path, e))?;
    let bytes: Option<[u8; 32]> = if data.len() == 32 {
        data.as_slice().try_into().ok()
    } else {
        std::str::from_utf8(&data)
            .ok()
            .and_then(|s| unhex(s.trim()))
            .and_then(|v| v.try_into().ok())
    };
    bytes.map(|b| Key::from_bytes(&b)).ok_or_else(|| {
        Error::Config(format!(
            "key file {} must hold exactly 32 bytes or 64 hex digits \
             (e.g. head -c 32 /dev/urandom > keyfile)",
            path.display()
        ))
    })
}

/// The key parameters stored under `prefix`, if a sync ever encrypted it.
pub async fn stored_params(bucket: &Bucket, prefix: &str) -> Result<Option<KeyParams>> {
    get_params(bucket, &params_key(prefix)).await
}

async fn get_params(bucket: &Bucket, key: &str) -> Result<Option<KeyParams>> {
    use aws_sdk_s3::error::ProvideErrorMetadata;
    bucket.count();
    let out = match bucket
        .client
        .get_object()
        .bucket(&bucket.name)
        .key(key)
        .send()
        .await
    {
        Ok(o) => o,
        Err(e) if e.code() == Some("NoSuchKey") => return Ok(None),
        Err(e) => {
            if let aws_sdk_s3::error::SdkError::ServiceError(s) = &e
                && s.raw().status().as_u16() == 404
            {
                return Ok(None);
            }
            return Err(Error::s3("GetObject", key, e));
        }
    };
    let body = out
        .body
        .collect()
        .await
        .map_err(|e| Error::s3("GetObject", key, e))?
        .into_bytes();
    serde_json::from_slice(&body).map(Some).map_err(|e| {
        Error::Config(format!(
            "malformed key parameters s3://{}/{key}: {e}",
            bucket.name
        ))
    })
}

async fn put_params(bucket: &Bucket, key: &str, p: &KeyParams) -> Result<()> {
    let body = serde_json::to_vec_pretty(p)
        .map_err(|e| Error::Config(format!("encoding key parameters: {e}")))?;
    bucket.count();
    bucket
        .client
        .put_object()
        .bucket(&bucket.name)
        .key(key)
        .content_type("application/json")
        .body(aws_sdk_s3::primitives::ByteStream::from(body))
        .send()
        .await
        .map_err(|e| Error::s3("PutObject", key, e))?;
    tracing::info!(key, "wrote encryption key parameters");
    Ok(())
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_raw_or_hex_give_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("raw");
        let hexf = dir.path().join("hex");
        std::fs::write(&raw, [0xabu8; 32]).unwrap();
        std::fs::write(&hexf, format!("{}\n", "ab".repeat(32))).unwrap();
        assert_eq!(
            read_key_file(&raw).unwrap().id(),
            read_key_file(&hexf).unwrap().id()
        );
        std::fs::write(&hexf, "abc").unwrap();
        assert!(read_key_file(&hexf).is_err());
    }

    #[test]
    fn passphrase_derivation_depends_on_salt_and_passphrase() {
        let a = derive("correct horse", b"0123456789abcdef", 64, 1, 1).unwrap();
        let b = derive("correct horse", b"0123456789abcdef", 64, 1, 1).unwrap();
        let c = derive("correct horsf", b"0123456789abcdef", 64, 1, 1).unwrap();
        let d = derive("correct horse", b"0123456789abcdeg", 64, 1, 1).unwrap();
        assert_eq!(a.id(), b.id());
        assert_ne!(a.id(), c.id());
        assert_ne!(a.id(), d.id());
        assert!(is_reserved(".raidfs-sync/keyparams") && !is_reserved(".raidfs-syncx"));
    }
}
