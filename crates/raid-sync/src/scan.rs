//! Reading the local tree: `lstat` of every entry in a scope, never following
//! symlinks, skipping what S3 cannot hold (sockets, FIFOs, devices, names that
//! are not UTF-8).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::error::{Error, Result};
use crate::keys;
use crate::object_meta::Kind;
use crate::state::Entry;

/// Entries found, by relative path, and what had to be skipped.
#[derive(Debug, Default)]
pub struct Scan {
    pub entries: BTreeMap<String, Entry>,
    /// Entries skipped, with the reason (reported, never fatal).
    pub skipped: Vec<Skipped>,
    /// Relative paths whose subtree could not be read (or not wholly): what
    /// the state holds below them is kept, not taken as removed.
    pub unreadable: Vec<String>,
}

/// An entry the mirror cannot hold (or could not read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Relative path; a name that is not UTF-8 is shown with replacement
    /// characters, line breaks as `\n`.
    pub path: String,
    pub reason: String,
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

impl Skipped {
    fn new(path: impl Into<String>, reason: impl ToString) -> Self {
        Skipped {
            path: path.into(),
            reason: reason.to_string(),
        }
    }
}

/// `path` relative to `root` for messages, even when it is no valid key.
fn shown_rel(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .replace('\n', "\\n")
        .replace('\r', "\\r")
}

impl Scan {
    /// Whether `rel` is in (or is) a subtree that could not be read.
    pub fn in_unreadable(&self, rel: &str) -> bool {
        self.unreadable.iter().any(|u| keys::in_scope(rel, u))
    }
}

/// Identity of the source directory: what the daemon watches, and whether
/// it is the root of a mounted filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceRoot {
    pub dev: u64,
    pub ino: u64,
    /// Another filesystem than its parent directory's (or `/`).
    pub mount_root: bool,
}

/// Reads the identity of `root`. A mount root is told by its device
/// differing from its parent's (`..`); `/` is always one. A bind mount of a
/// directory of the same filesystem is not seen as one.
pub fn source_root(root: &Path) -> Result<SourceRoot> {
    let md = fs::metadata(root).map_err(|e| Error::io("reading source", root, e))?;
    let parent = root.join("..");
    let pmd = fs::metadata(&parent).map_err(|e| Error::io("reading", &parent, e))?;
    let is_fs_root = pmd.dev() == md.dev() && pmd.ino() == md.ino();
    Ok(SourceRoot {
        dev: md.dev(),
        ino: md.ino(),
        mount_root: is_fs_root || pmd.dev() != md.dev(),
    })
}

/// Builds an [`Entry`] from `lstat` data (CRC not yet known).
pub fn entry_of(path: &Path, md: &fs::Metadata) -> Result<Option<Entry>> {
    let ft = md.file_type();
    let (kind, target) = if ft.is_file() {
        (Kind::File, None)
    } else if ft.is_dir() {
        (Kind::Dir, None)
    } else if ft.is_symlink() {
        let t = fs::read_link(path).map_err(|e| Error::io("reading symlink", path, e))?;
        let t = t.to_str().ok_or_else(|| Error::BadName {
            path: path.to_path_buf(),
            reason: "symlink target is not valid UTF-8",
        })?;
        (Kind::Symlink, Some(t.to_string()))
    } else {
        return Ok(None);
    };
    Ok(Some(Entry {
        kind,
        size: if kind == Kind::File { md.size() } else { 0 },
        mtime_sec: md.mtime(),
        mtime_nsec: md.mtime_nsec() as u32,
        ctime_sec: md.ctime(),
        ctime_nsec: md.ctime_nsec() as u32,
        dev: md.dev(),
        ino: md.ino(),
        perm: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        crc32: None,
        target,
        racy: false,
    }))
}

/// Scans `scope` (a relative path; empty = the whole tree) under `root`. A
/// scope that no longer exists yields nothing, which the caller reads as
/// "deleted".
pub fn scan_scope(root: &Path, scope: &str, out: &mut Scan) -> Result<()> {
    let path = if scope.is_empty() {
        root.to_path_buf()
    } else {
        keys::join(root, scope)
    };
    let md = match fs::symlink_metadata(&path) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) if scope.is_empty() => return Err(Error::io("reading source", path, e)),
        Err(e) => {
            out.skipped.push(Skipped::new(scope, e));
            out.unreadable.push(scope.to_string());
            return Ok(());
        }
    };
    if scope.is_empty() {
        if !md.is_dir() {
            return Err(Error::Config(format!(
                "{} is not a directory",
                root.display()
            )));
        }
        walk_dir(root, &path, "", out)
    } else {
        visit(root, &path, scope.to_string(), &md, out)
    }
}

fn visit(root: &Path, path: &Path, rel: String, md: &fs::Metadata, out: &mut Scan) -> Result<()> {
    match entry_of(path, md) {
        Ok(Some(e)) => {
            let is_dir = e.kind == Kind::Dir;
            out.entries.insert(rel.clone(), e);
            if is_dir {
                walk_dir(root, path, &rel, out)?;
            }
        }
        Ok(None) => out.skipped.push(Skipped::new(
            rel,
            "not a file, directory or symlink (a socket, FIFO or device): not mirrored",
        )),
        Err(e) => {
            let reason = match e {
                Error::BadName { reason, .. } => reason.to_string(),
                e => e.to_string(),
            };
            out.skipped.push(Skipped::new(rel.clone(), reason));
            out.unreadable.push(rel);
        }
    }
    Ok(())
}

/// Walks the directory `dir` (relative path `dir_rel`). One that cannot be
/// listed, wholly or in part, is recorded as unreadable.
fn walk_dir(root: &Path, dir: &Path, dir_rel: &str, out: &mut Scan) -> Result<()> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) if dir == root => return Err(Error::io("reading directory", dir, e)),
        Err(e) => {
            out.skipped.push(Skipped::new(dir_rel, e));
            out.unreadable.push(dir_rel.to_string());
            return Ok(());
        }
    };
    for de in rd {
        let de = match de {
            Ok(de) => de,
            Err(e) => {
                out.skipped.push(Skipped::new(dir_rel, e));
                out.unreadable.push(dir_rel.to_string());
                continue;
            }
        };
        let path = de.path();
        let rel = match keys::rel_path(root, &path) {
            Ok(r) => r,
            Err(Error::BadName { reason, .. }) => {
                out.skipped
                    .push(Skipped::new(shown_rel(root, &path), reason));
                continue;
            }
            Err(e) => {
                out.skipped.push(Skipped::new(shown_rel(root, &path), e));
                continue;
            }
        };
        match fs::symlink_metadata(&path) {
            Ok(md) => visit(root, &path, rel, &md, out)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                out.skipped.push(Skipped::new(rel.clone(), e));
                out.unreadable.push(rel);
            }
        }
    }
    Ok(())
}
