//! Metadata operations: the unit of the journal. Each operation records
//! everything needed to redo it exactly (the inode number chosen, the
//! timestamp taken), so replay after a crash reproduces the same namespace
//! byte for byte; the live path and replay both go through
//! [`super::namespace::Namespace::apply`].

use serde::{Deserialize, Serialize};

/// `rename` flag: fail with `Exists` if the target exists (Linux RENAME_NOREPLACE).
pub const RENAME_NOREPLACE: u32 = 1;
/// `rename` flag: atomically swap source and target (Linux RENAME_EXCHANGE).
pub const RENAME_EXCHANGE: u32 = 2;
/// `setxattr` flag: fail with `Exists` if the attribute exists.
pub const XATTR_CREATE: u32 = 1;
/// `setxattr` flag: fail with `NoAttr` if the attribute does not exist.
pub const XATTR_REPLACE: u32 = 2;

/// One journaled metadata mutation. Times are nanoseconds since the Unix epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// A regular file, directory, device, FIFO or socket (type in `mode`).
    Create {
        parent: u64,
        name: Vec<u8>,
        ino: u64,
        mode: u32,
        uid: u32,
        gid: u32,
        rdev: u32,
        time: i64,
    },
    Symlink {
        parent: u64,
        name: Vec<u8>,
        ino: u64,
        target: Vec<u8>,
        uid: u32,
        gid: u32,
        time: i64,
    },
    Link {
        ino: u64,
        parent: u64,
        name: Vec<u8>,
        time: i64,
    },
    /// Remove a non-directory entry; an inode whose last link goes stays as
    /// an orphan until [`Op::Free`].
    Unlink {
        parent: u64,
        name: Vec<u8>,
        time: i64,
    },
    Rmdir {
        parent: u64,
        name: Vec<u8>,
        time: i64,
    },
    Rename {
        parent: u64,
        name: Vec<u8>,
        new_parent: u64,
        new_name: Vec<u8>,
        flags: u32,
        time: i64,
    },
    SetAttr {
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<i64>,
        mtime: Option<i64>,
        ctime: i64,
    },
    /// Write into an inline (small) file's data.
    WriteInline {
        ino: u64,
        offset: u64,
        data: Vec<u8>,
        time: i64,
    },
    /// A striped write ended at `end`: size = max(size, end), mtime = ctime = time.
    Extend {
        ino: u64,
        end: u64,
        time: i64,
    },
    /// The file's contents moved from the metadata to the striped data path.
    Uninline {
        ino: u64,
    },
    SetXattr {
        ino: u64,
        name: Vec<u8>,
        value: Vec<u8>,
        flags: u32,
        time: i64,
    },
    RemoveXattr {
        ino: u64,
        name: Vec<u8>,
        time: i64,
    },
    /// An orphan (no links, no longer open) is gone for good.
    Free {
        ino: u64,
    },
    /// The permission bits and the access ACL that goes with them, in one
    /// record (`setfacl`, `chmod` of a file that has an ACL), so that a
    /// crash keeps both or neither. `acl`: the ACL to store, or `None` for
    /// none (a stored one is removed). Journal minor 1.
    SetModeAcl {
        ino: u64,
        mode: u32,
        acl: Option<Vec<u8>>,
        time: i64,
    },
}
