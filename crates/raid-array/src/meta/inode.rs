//! In-memory inodes and directories, and the engine's own attribute types
//! (never FUSE's).
//!
//! Kept compact because an array may hold millions of files, all in memory:
//! times are one `i64` of nanoseconds, the file type lives in `mode`, a
//! directory stores each name once (looked up through a hash of the name),
//! extended attributes and inline data cost nothing when absent.

use std::collections::HashMap;
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

/// A directory entry as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: Box<[u8]>,
    /// 0 marks a removed entry awaiting compaction (inode 0 is never used).
    pub ino: u64,
}

/// A directory: entries in a vector ordered by readdir cookie, plus an
/// index from name hash to position.
///
/// Cookies only grow (a new entry gets `next_cookie`), so appending keeps
/// the vector sorted and `readdir` resumes by binary search; a cookie is
/// never reused within a directory, so a `readdir` resumed at an offset
/// neither skips nor repeats entries that stayed. Removal leaves a
/// tombstone; the vector is compacted (and the index rebuilt) once half of
/// it is tombstones. Each name is stored once: about 80 bytes per entry
/// with the index, which matters at a million files.
#[derive(Clone, Debug)]
pub struct Dir {
    pub parent: u64,
    pub next_cookie: u64,
    slots: Vec<(u64, Entry)>,
    live: usize,
    /// Name hash → position of the one live entry indexed under it.
    index: HashMap<u64, u32>,
    /// Positions of live entries whose hash was already indexed (rare).
    dups: Vec<u32>,
}

impl PartialEq for Dir {
    fn eq(&self, other: &Self) -> bool {
        self.parent == other.parent
            && self.next_cookie == other.next_cookie
            && self.entries_after(0).eq(other.entries_after(0))
    }
}

impl Eq for Dir {}

impl Dir {
    pub fn new(parent: u64) -> Self {
        Dir {
            parent,
            next_cookie: FIRST_COOKIE,
            slots: Vec::new(),
            live: 0,
            index: HashMap::new(),
            dups: Vec::new(),
        }
    }

    /// An empty directory that will receive `n` entries (checkpoint load).
    pub fn with_capacity(parent: u64, n: usize) -> Self {
        let mut d = Dir::new(parent);
        d.slots.reserve_exact(n);
        d.index.reserve(n);
        d
    }

    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    fn find(&self, name: &[u8]) -> Option<usize> {
        let hit = |p: usize| {
            let (_, e) = &self.slots[p];
            e.ino != 0 && &*e.name == name
        };
        if let Some(&p) = self.index.get(&name_hash(name))
            && hit(p as usize)
        {
            return Some(p as usize);
        }
        self.dups.iter().map(|&p| p as usize).find(|&p| hit(p))
    }

    /// Inode of `name`, if present.
    pub fn get(&self, name: &[u8]) -> Option<u64> {
        self.find(name).map(|p| self.slots[p].1.ino)
    }

    /// Add an entry (the caller has checked that `name` is absent) under
    /// the next cookie.
    pub fn insert(&mut self, name: &[u8], ino: u64) {
        let cookie = self.next_cookie;
        self.insert_at(cookie, name.into(), ino);
    }

    /// Add an entry under a given cookie, which must be above every cookie
    /// in the directory (checkpoint load; the loader checks the order).
    pub fn insert_at(&mut self, cookie: u64, name: Box<[u8]>, ino: u64) {
        debug_assert!(self.slots.last().is_none_or(|(c, _)| *c < cookie));
        let pos = self.slots.len() as u32;
        let h = name_hash(&name);
        self.slots.push((cookie, Entry { name, ino }));
        self.live += 1;
        self.next_cookie = self.next_cookie.max(cookie.saturating_add(1));
        match self.index.entry(h) {
            std::collections::hash_map::Entry::Occupied(_) => self.dups.push(pos),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(pos);
            }
        }
    }

    /// Highest cookie in use (0 if none).
    pub fn last_cookie(&self) -> u64 {
        self.slots.last().map_or(0, |(c, _)| *c)
    }

    /// Remove `name`; returns its inode.
    pub fn remove(&mut self, name: &[u8]) -> Option<u64> {
        let pos = self.find(name)?;
        let h = name_hash(name);
        let (_, e) = &mut self.slots[pos];
        let ino = e.ino;
        e.ino = 0;
        e.name = Box::default();
        self.live -= 1;
        if self.index.get(&h) == Some(&(pos as u32)) {
            self.index.remove(&h);
            let slots = &self.slots;
            if let Some(k) = self
                .dups
                .iter()
                .position(|&d| name_hash(&slots[d as usize].1.name) == h)
            {
                let d = self.dups.swap_remove(k);
                self.index.insert(h, d);
            }
        } else {
            self.dups.retain(|&d| d as usize != pos);
        }
        if self.slots.len() >= 64 && self.live * 2 < self.slots.len() {
            self.compact();
        }
        Some(ino)
    }

    fn compact(&mut self) {
        self.slots.retain(|(_, e)| e.ino != 0);
        self.slots.shrink_to_fit();
        self.index.clear();
        self.dups.clear();
        for (p, (_, e)) in self.slots.iter().enumerate() {
            match self.index.entry(name_hash(&e.name)) {
                std::collections::hash_map::Entry::Occupied(_) => self.dups.push(p as u32),
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(p as u32);
                }
            }
        }
        self.index.shrink_to_fit();
    }

    /// Point an existing entry at another inode (rename exchange), keeping
    /// its cookie.
    pub fn replace(&mut self, name: &[u8], ino: u64) -> bool {
        match self.find(name) {
            Some(p) => {
                self.slots[p].1.ino = ino;
                true
            }
            None => false,
        }
    }

    /// Entries with a cookie greater than `after`, in cookie order.
    pub fn entries_after(&self, after: u64) -> impl Iterator<Item = (u64, &Entry)> {
        let start = self.slots.partition_point(|(c, _)| *c <= after);
        self.slots[start..]
            .iter()
            .filter(|(_, e)| e.ino != 0)
            .map(|(c, e)| (*c, e))
    }
}
