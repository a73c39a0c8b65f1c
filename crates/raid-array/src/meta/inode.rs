//! In-memory inodes and directories, and the engine's own attribute types
//! (never FUSE's).
//!
//! Kept compact because an array may hold millions of files, all in memory:
//! times are one `i64` of nanoseconds, the file type lives in `mode`, a
//! directory stores each name once (looked up through a hash of the name),
//! extended attributes and inline data cost nothing when absent.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const S_IFMT: u32 = 0o170000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFLNK: u32 = 0o120000;
pub const S_IFIFO: u32 = 0o010000;
pub const S_IFCHR: u32 = 0o020000;
pub const S_IFBLK: u32 = 0o060000;
pub const S_IFSOCK: u32 = 0o140000;

/// The root directory's inode number.
pub const ROOT_INO: u64 = 1;
/// Longest name of a directory entry, in bytes.
pub const NAME_MAX: usize = 255;
/// Longest symlink target, in bytes.
pub const SYMLINK_MAX: usize = 4095;
/// First readdir cookie of a real entry: 1 and 2 are "." and "..".
pub const FIRST_COOKIE: u64 = 3;

/// Type of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Fifo,
    CharDev,
    BlockDev,
    Socket,
}

impl FileKind {
    pub fn from_mode(mode: u32) -> Option<FileKind> {
        Some(match mode & S_IFMT {
            S_IFREG => FileKind::File,
            S_IFDIR => FileKind::Dir,
            S_IFLNK => FileKind::Symlink,
            S_IFIFO => FileKind::Fifo,
            S_IFCHR => FileKind::CharDev,
            S_IFBLK => FileKind::BlockDev,
            S_IFSOCK => FileKind::Socket,
            _ => return None,
        })
    }
}

/// Attributes of an inode, as returned by `getattr`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub size: u64,
    /// 512-byte blocks, rounded up from `size`.
    pub blocks: u64,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    pub kind: FileKind,
    /// Permission bits (mode & 0o7777).
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
    /// Preferred I/O size.
    pub blksize: u32,
}

/// One entry returned by `readdir`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: u64,
    /// Pass this back to `readdir` to continue after this entry.
    pub offset: u64,
    pub kind: FileKind,
    pub name: Vec<u8>,
}

/// Nanoseconds since the epoch → `SystemTime`.
pub fn to_system_time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

/// `SystemTime` → nanoseconds since the epoch (saturating).
pub fn from_system_time(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_nanos())
            .map(|n| -n)
            .unwrap_or(i64::MIN),
    }
}

/// Current time in nanoseconds since the epoch.
pub fn now_ns() -> i64 {
    from_system_time(SystemTime::now())
}

/// What an inode holds besides its attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// A regular file: `Some(bytes)` while small enough to live in the
    /// metadata (then `bytes.len() == size`), `None` once striped.
    File {
        inline: Option<Vec<u8>>,
    },
    Dir(Box<Dir>),
    Symlink(Box<[u8]>),
    /// FIFO, socket, device: attributes only.
    Special,
}

/// Extended attributes, sorted by name.
pub type Xattrs = Vec<(Box<[u8]>, Box<[u8]>)>;

/// One inode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inode {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub rdev: u32,
    pub size: u64,
    pub atime: i64,
    pub mtime: i64,
    pub ctime: i64,
    pub body: Body,
    pub xattrs: Option<Box<Xattrs>>,
}

impl Inode {
    pub fn kind(&self) -> FileKind {
        FileKind::from_mode(self.mode).unwrap_or(FileKind::File)
    }
    pub fn is_dir(&self) -> bool {
        self.mode & S_IFMT == S_IFDIR
    }
    pub fn dir(&self) -> Option<&Dir> {
        match &self.body {
            Body::Dir(d) => Some(d),
            _ => None,
        }
    }
    pub fn dir_mut(&mut self) -> Option<&mut Dir> {
        match &mut self.body {
            Body::Dir(d) => Some(d),
            _ => None,
        }
    }
    pub fn attr(&self, ino: u64) -> Attr {
        Attr {
            ino,
            size: self.size,
            blocks: self.size.div_ceil(512),
            atime: to_system_time(self.atime),
            mtime: to_system_time(self.mtime),
            ctime: to_system_time(self.ctime),
            kind: self.kind(),
            perm: (self.mode & 0o7777) as u16,
            nlink: self.nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: self.rdev,
            blksize: 4096,
        }
    }
}

/// Hash of a name, used to find its entry without storing the name twice.
fn name_hash(name: &[u8]) -> u64 {
    BuildHasherDefault::<DefaultHasher>::default().hash_one(name)
}

/// Cookies of the entries whose names share one hash (almost always one).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Bucket {
    One(u64),
    Many(Vec<u64>),
}

/// A directory entry as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: Box<[u8]>,
    pub ino: u64,
}

/// A directory: entries by readdir cookie (stable: a cookie is never
/// reused within a directory, so a `readdir` resumed at an offset neither
/// skips nor repeats entries that stayed), plus a name-hash index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dir {
    pub parent: u64,
    pub next_cookie: u64,
    entries: BTreeMap<u64, Entry>,
    index: HashMap<u64, Bucket>,
}

impl Dir {
    pub fn new(parent: u64) -> Self {
        Dir {
            parent,
            next_cookie: FIRST_COOKIE,
            entries: BTreeMap::new(),
            index: HashMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn find_cookie(&self, name: &[u8]) -> Option<u64> {
        let matches = |c: &u64| self.entries.get(c).is_some_and(|e| &*e.name == name);
        match self.index.get(&name_hash(name))? {
            Bucket::One(c) => Some(*c).filter(matches),
            Bucket::Many(v) => v.iter().copied().find(matches),
        }
    }

    /// Inode of `name`, if present.
    pub fn get(&self, name: &[u8]) -> Option<u64> {
        self.find_cookie(name)
            .and_then(|c| self.entries.get(&c))
            .map(|e| e.ino)
    }

    /// Add an entry (the caller has checked that `name` is absent) under
    /// the next cookie.
    pub fn insert(&mut self, name: &[u8], ino: u64) {
        let cookie = self.next_cookie;
        self.next_cookie += 1;
        self.insert_at(cookie, name.into(), ino);
    }

    /// Add an entry under a given cookie (checkpoint load).
    pub fn insert_at(&mut self, cookie: u64, name: Box<[u8]>, ino: u64) {
        let h = name_hash(&name);
        self.entries.insert(cookie, Entry { name, ino });
        self.next_cookie = self.next_cookie.max(cookie + 1);
        match self.index.get_mut(&h) {
            None => {
                self.index.insert(h, Bucket::One(cookie));
            }
            Some(b) => match b {
                Bucket::One(c) => *b = Bucket::Many(vec![*c, cookie]),
                Bucket::Many(v) => v.push(cookie),
            },
        }
    }

    /// Remove `name`; returns its inode.
    pub fn remove(&mut self, name: &[u8]) -> Option<u64> {
        let cookie = self.find_cookie(name)?;
        let h = name_hash(name);
        if let Some(b) = self.index.get_mut(&h) {
            match b {
                Bucket::One(_) => {
                    self.index.remove(&h);
                }
                Bucket::Many(v) => {
                    v.retain(|&c| c != cookie);
                    if v.len() == 1 {
                        *b = Bucket::One(v[0]);
                    }
                }
            }
        }
        self.entries.remove(&cookie).map(|e| e.ino)
    }

    /// Point an existing entry at another inode (rename exchange), keeping
    /// its cookie.
    pub fn replace(&mut self, name: &[u8], ino: u64) -> bool {
        match self
            .find_cookie(name)
            .and_then(|c| self.entries.get_mut(&c))
        {
            Some(e) => {
                e.ino = ino;
                true
            }
            None => false,
        }
    }

    /// Entries with a cookie greater than `after`, in cookie order.
    pub fn entries_after(&self, after: u64) -> impl Iterator<Item = (u64, &Entry)> {
        self.entries
            .range(after.saturating_add(1)..)
            .map(|(c, e)| (*c, e))
    }
}
