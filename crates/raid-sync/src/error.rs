//! The crate's error type: every variant names what it was working on (a path,
//! a key, an S3 operation), so a message alone tells the operator where to look.

use std::path::PathBuf;

use aws_sdk_s3::error::ErrorMetadata;

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong while syncing, restoring or verifying.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A local file or directory could not be read or written.
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An S3 request failed (after the SDK's own retries).
    #[error("S3 {op} {key}: {message}")]
    S3 {
        op: &'static str,
        key: String,
        message: String,
    },
    /// A key in the bucket cannot be turned into a path inside the target.
    #[error("unsafe key {key:?}: {reason}")]
    UnsafeKey { key: String, reason: &'static str },
    /// A local name that cannot become an S3 key (not UTF-8, or a newline).
    #[error("cannot map {path} to an S3 key: {reason}")]
    BadName { path: PathBuf, reason: &'static str },
    /// The state file is unreadable or belongs to another bucket/prefix.
    #[error("state file {path}: {message}")]
    State { path: PathBuf, message: String },
    /// Another process holds the state file's lock.
    #[error(
        "another raidfs-sync{holder} is using {path} (a daemon, or a --once run, with the same \
         state file); stop it first, or give this run a --state of its own"
    )]
    StateBusy { path: PathBuf, holder: String },
    /// Another process syncs the same source to the same bucket and prefix
    /// (with another state file).
    #[error(
        "another raidfs-sync{holder} is syncing {tree} to s3://{bucket}/{prefix} (lock \
         {lock}; a daemon, or a --once run, with another state file); stop it first"
    )]
    MirrorBusy {
        tree: PathBuf,
        bucket: String,
        prefix: String,
        lock: PathBuf,
        holder: String,
    },
    /// The bucket is not (and cannot be made) versioned.
    #[error("bucket {bucket}: {message}")]
    Versioning { bucket: String, message: String },
    /// A file changed while it was being uploaded; it is retried later.
    #[error("{path} changed while it was being uploaded; will retry")]
    Changed { path: PathBuf },
    /// A file disappeared between the scan and its upload: no failure, the
    /// next scan finds it gone.
    #[error("{path} disappeared before it was uploaded; the next scan deals with it")]
    Gone { path: PathBuf },
    /// Restore would overwrite existing files.
    #[error(
        "restore would overwrite {count} existing path(s), e.g. {example}; use --force to overwrite"
    )]
    WouldOverwrite { count: usize, example: PathBuf },
    /// A checksum did not match.
    #[error("checksum mismatch for {what}: expected {expected:08x}, got {actual:08x}")]
    Checksum {
        what: String,
        expected: u32,
        actual: u32,
    },
    /// An encrypted object could not be decrypted (tampered, truncated, or
    /// sealed with another key).
    #[error("cannot decrypt {key}: {source}")]
    Decrypt {
        key: String,
        #[source]
        source: crate::crypt::CryptError,
    },
    /// The source is not the tree that was synced (not mounted, or empty):
    /// a pass over it would delete the mirror, so it is refused.
    #[error("source {path}: {message}")]
    Source { path: PathBuf, message: String },
    /// Invalid option or argument.
    #[error("{0}")]
    Config(String),
}

impl Error {
    /// Wraps an I/O error with what was being done and to which path.
    pub fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            what,
            path: path.into(),
            source,
        }
    }

    /// [`Error::io`], or [`Error::Gone`] when `path` (or a directory above
    /// it) no longer exists.
    pub fn io_or_gone(
        what: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        match source.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory => {
                Error::Gone { path: path.into() }
            }
            _ => Error::io(what, path, source),
        }
    }

    /// Wraps an SDK error with the operation and key (see [`describe_s3`]).
    pub fn s3<E>(op: &'static str, key: impl Into<String>, err: E) -> Self
    where
        E: std::error::Error + 'static,
    {
        Error::S3 {
            op,
            key: key.into(),
            message: describe_s3(&err),
        }
    }
}

/// An SDK error for a person: the service's code and message when it sent
/// them (`NoSuchBucket: The specified bucket does not exist`), with a hint
/// for the common ones; otherwise the chain of causes. The SDK's own forms
/// are either just "service error" (Display) or that plus a dump of the
/// whole HTTP response (`DisplayErrorContext`).
pub fn describe_s3(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(m) = e.downcast_ref::<ErrorMetadata>()
            && let Some(code) = m.code()
        {
            // The service's own answer says it all.
            out = match m.message() {
                Some(msg) if !msg.is_empty() => format!("{code}: {msg}"),
                _ => code.to_string(),
            };
            break;
        }
        let s = e.to_string();
        if !s.is_empty() && s != "service error" && !out.contains(&s) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&s);
        }
        cur = e.source();
    }
    const HINTS: [(&str, &str); 4] = [
        ("NoSuchBucket", "create it, or run with --create-bucket"),
        (
            "InvalidAccessKeyId",
            "check the AWS credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or the profile",
        ),
        (
            "SignatureDoesNotMatch",
            "check the AWS credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or the profile",
        ),
        (
            "AccessDenied",
            "the credentials are not allowed this request on this bucket",
        ),
    ];
    if let Some((_, hint)) = HINTS.iter().find(|(code, _)| out.starts_with(code)) {
        out.push_str(&format!(" ({hint})"));
    }
    out
}
