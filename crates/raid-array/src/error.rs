//! The one engine error type. Every module's failure converts into
//! [`ArrayError`], which knows the errno the FUSE layer must return, so the
//! adapter never guesses.

use std::io;

/// Errors of the engine's public API.
#[derive(Debug, thiserror::Error)]
pub enum ArrayError {
    /// I/O on one member failed; `member` is its index in the array.
    #[error("member {member} ({path}): {context}: {source}")]
    MemberIo {
        member: usize,
        path: String,
        context: String,
        #[source]
        source: io::Error,
    },
    /// More members are missing or failed than the level tolerates.
    #[error("array has failed: {0}")]
    ArrayFailed(String),
    /// Data that cannot be read back correctly (checksum mismatch with no redundancy left).
    #[error("unrecoverable data: {0}")]
    Unrecoverable(String),
    /// An on-disk record is corrupt or of an unknown version.
    #[error("corrupt {what}: {detail}")]
    Corrupt { what: String, detail: String },
    /// A directory is not a member of this array (no superblock, another array, a duplicate).
    #[error("{0}")]
    NotMember(String),
    /// Invalid arguments from the caller (level, member list, sizes).
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("no such file or directory")]
    NotFound,
    #[error("file exists")]
    Exists,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("directory not empty")]
    NotEmpty,
    #[error("file name too long")]
    NameTooLong,
    #[error("no space left on device")]
    NoSpace,
    /// A member's filesystem cannot hold a file this large (EFBIG): not a
    /// broken disk, so nobody is failed.
    #[error("file too large for a member's filesystem")]
    FileTooLarge,
    #[error("read-only array: {0}")]
    ReadOnly(String),
    #[error("no such attribute")]
    NoAttr,
    /// The operation is never allowed on this object (e.g. a hard link to a directory).
    #[error("operation not permitted: {0}")]
    NotPermitted(String),
    /// Not allowed on this kind of object (EACCES), as Linux answers a
    /// default ACL on a file.
    #[error("access denied: {0}")]
    AccessDenied(String),
    /// A valid request this engine does not implement (e.g. an fallocate mode).
    #[error("not supported: {0}")]
    Unsupported(String),
    /// A member is held by another process (the array is in use).
    #[error("{0}")]
    Busy(String),
    #[error("raid-core: {0}")]
    Codec(#[from] raid_core::CodecError),
}

impl ArrayError {
    /// The errno the filesystem layer returns for this error.
    pub fn errno(&self) -> i32 {
        use rustix::io::Errno;
        let e = match self {
            ArrayError::MemberIo { source, .. } => {
                return source
                    .raw_os_error()
                    .filter(|&n| n == Errno::NOSPC.raw_os_error())
                    .unwrap_or(Errno::IO.raw_os_error());
            }
            ArrayError::ArrayFailed(_)
            | ArrayError::Unrecoverable(_)
            | ArrayError::Corrupt { .. } => Errno::IO,
            ArrayError::NotMember(_) | ArrayError::Invalid(_) | ArrayError::Codec(_) => {
                Errno::INVAL
            }
            ArrayError::NotFound => Errno::NOENT,
            ArrayError::Exists => Errno::EXIST,
            ArrayError::NotDir => Errno::NOTDIR,
            ArrayError::IsDir => Errno::ISDIR,
            ArrayError::NotEmpty => Errno::NOTEMPTY,
            ArrayError::NameTooLong => Errno::NAMETOOLONG,
            ArrayError::NoSpace => Errno::NOSPC,
            ArrayError::FileTooLarge => Errno::FBIG,
            ArrayError::ReadOnly(_) => Errno::ROFS,
            ArrayError::NoAttr => Errno::NODATA,
            ArrayError::NotPermitted(_) => Errno::PERM,
            ArrayError::AccessDenied(_) => Errno::ACCESS,
            ArrayError::Unsupported(_) => Errno::OPNOTSUPP,
            ArrayError::Busy(_) => Errno::BUSY,
        };
        e.raw_os_error()
    }
}

/// Result alias for the engine.
pub type Result<T, E = ArrayError> = std::result::Result<T, E>;
