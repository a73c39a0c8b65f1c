//! The namespace: every inode, held in memory, and the one function that
//! changes it, [`Namespace::apply`]. `apply` checks everything before it
//! changes anything, so an operation either happens whole or returns an
//! error and leaves the namespace untouched; the live path journals only
//! operations that applied, and replay applies the same operations again.

use super::inode::*;
use super::ops::{Op, RENAME_EXCHANGE, RENAME_NOREPLACE, XATTR_CREATE, XATTR_REPLACE};
use super::table::InodeTable;
use crate::{ArrayError, Result};

/// What an applied operation leaves for the caller to do.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Effect {
    /// A regular file (or other non-directory) lost its last link: free it
    /// once it is no longer open.
    pub orphaned: Option<u64>,
    /// An orphan was freed: its striped data can go.
    pub freed: Option<u64>,
    /// A directory was removed (its inode is gone): what it looked like
    /// last, with no links, for whoever still holds it.
    pub removed_dir: Option<Attr>,
}

/// All inodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace {
    pub inodes: InodeTable,
    /// Next inode number to hand out (numbers are never reused).
    pub next_ino: u64,
}

fn check_name(name: &[u8]) -> Result<()> {
    if name.len() > NAME_MAX {
        return Err(ArrayError::NameTooLong);
    }
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
    {
        return Err(ArrayError::Invalid(format!(
            "invalid file name {:?}",
            String::from_utf8_lossy(name)
        )));
    }
    Ok(())
}

impl Namespace {
    /// A namespace holding only an empty root directory.
    pub fn new(uid: u32, gid: u32, time: i64) -> Self {
        let mut inodes = InodeTable::new();
        inodes.insert(
            ROOT_INO,
            Inode {
                mode: S_IFDIR | 0o755,
                uid,
                gid,
                nlink: 2,
                rdev: 0,
                size: 0,
                atime: time,
                mtime: time,
                ctime: time,
                body: Body::Dir(Box::new(Dir::new(ROOT_INO))),
                xattrs: None,
            },
        );
        Namespace {
            inodes,
            next_ino: ROOT_INO + 1,
        }
    }

    pub fn get(&self, ino: u64) -> Result<&Inode> {
        self.inodes.get(&ino).ok_or(ArrayError::NotFound)
    }

    fn get_mut(&mut self, ino: u64) -> Result<&mut Inode> {
        self.inodes.get_mut(&ino).ok_or(ArrayError::NotFound)
    }

    /// The directory `ino`, or `NotDir`/`NotFound`.
    pub fn dir(&self, ino: u64) -> Result<&Dir> {
        self.get(ino)?.dir().ok_or(ArrayError::NotDir)
    }

    fn dir_mut(&mut self, ino: u64) -> Result<&mut Dir> {
        self.get_mut(ino)?.dir_mut().ok_or(ArrayError::NotDir)
    }

    /// Inode of `name` in directory `parent`.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<u64> {
        if name.len() > NAME_MAX {
            return Err(ArrayError::NameTooLong);
        }
        let dir = self.dir(parent)?;
        match name {
            b"." => Ok(parent),
            b".." => Ok(dir.parent),
            _ => dir.get(name).ok_or(ArrayError::NotFound),
        }
    }

    /// Whether `ino` is `ancestor` or lies below it. A chain of parents
    /// longer than there are inodes is a cycle (a checkpoint a faulty build
    /// wrote, its CRC intact): counted as within, so the rename it guards
    /// is refused rather than the walk never ending.
    fn is_within(&self, mut ino: u64, ancestor: u64) -> bool {
        for _ in 0..=self.inodes.len() {
            if ino == ancestor {
                return true;
            }
            match self.inodes.get(&ino).and_then(|i| i.dir()) {
                Some(d) if d.parent != ino => ino = d.parent,
                _ => return false,
            }
        }
        true
    }

    fn touch_dir(&mut self, ino: u64, time: i64) {
        if let Some(i) = self.inodes.get_mut(&ino) {
            i.mtime = time;
            i.ctime = time;
        }
    }

    /// Apply one operation (see the module comment).
    pub fn apply(&mut self, op: &Op) -> Result<Effect> {
        let mut eff = Effect::default();
        match op {
            Op::Create {
                parent,
                name,
                ino,
                mode,
                uid,
                gid,
                rdev,
                time,
            } => {
                check_name(name)?;
                let kind = FileKind::from_mode(*mode)
                    .filter(|k| *k != FileKind::Symlink)
                    .ok_or_else(|| {
                        ArrayError::Invalid(format!("unsupported file type in mode {mode:o}"))
                    })?;
                self.check_new(*parent, name, *ino)?;
                let (body, nlink) = match kind {
                    FileKind::Dir => (Body::Dir(Box::new(Dir::new(*parent))), 2),
                    FileKind::File => (
                        Body::File {
                            inline: Some(Vec::new()),
                        },
                        1,
                    ),
                    _ => (Body::Special, 1),
                };
                let inode = Inode {
                    mode: *mode,
                    uid: *uid,
                    gid: *gid,
                    nlink,
                    rdev: *rdev,
                    size: 0,
                    atime: *time,
                    mtime: *time,
                    ctime: *time,
                    body,
                    xattrs: None,
                };
                self.add_new(*parent, name, *ino, inode, *time);
            }
            Op::Symlink {
                parent,
                name,
                ino,
                target,
                uid,
                gid,
                time,
            } => {
                check_name(name)?;
                if target.is_empty() || target.len() > SYMLINK_MAX {
                    return Err(if target.is_empty() {
                        ArrayError::Invalid("empty symlink target".into())
                    } else {
                        ArrayError::NameTooLong
                    });
                }
                self.check_new(*parent, name, *ino)?;
                let inode = Inode {
                    mode: S_IFLNK | 0o777,
                    uid: *uid,
                    gid: *gid,
                    nlink: 1,
                    rdev: 0,
                    size: target.len() as u64,
                    atime: *time,
                    mtime: *time,
                    ctime: *time,
                    body: Body::Symlink(target.as_slice().into()),
                    xattrs: None,
                };
                self.add_new(*parent, name, *ino, inode, *time);
            }
            Op::Link {
                ino,
                parent,
                name,
                time,
            } => {
                check_name(name)?;
                let target = self.get(*ino)?;
                if target.is_dir() {
                    return Err(ArrayError::NotPermitted("hard link to a directory".into()));
                }
                if target.nlink == 0 {
                    return Err(ArrayError::NotFound);
                }
                if self.dir(*parent)?.get(name).is_some() {
                    return Err(ArrayError::Exists);
                }
                self.dir_mut(*parent)?.insert(name, *ino);
                let t = self.get_mut(*ino)?;
                t.nlink += 1;
                t.ctime = *time;
                self.touch_dir(*parent, *time);
            }
            Op::Unlink { parent, name, time } => {
                let ino = self.lookup_entry(*parent, name)?;
                if self.get(ino)?.is_dir() {
                    return Err(ArrayError::IsDir);
                }
                self.dir_mut(*parent)?.remove(name);
                self.touch_dir(*parent, *time);
                eff.orphaned = self.drop_link(ino, *time);
            }
            Op::Rmdir { parent, name, time } => {
                let ino = self.lookup_entry(*parent, name)?;
                let d = self.get(ino)?.dir().ok_or(ArrayError::NotDir)?;
                if !d.is_empty() {
                    return Err(ArrayError::NotEmpty);
                }
                self.dir_mut(*parent)?.remove(name);
                eff.removed_dir = self.remove_dir(ino, *time);
                let p = self.get_mut(*parent)?;
                // Saturating: a count a faulty checkpoint left at 0 must
                // not wrap (or panic) at the next rmdir.
                p.nlink = p.nlink.saturating_sub(1);
                self.touch_dir(*parent, *time);
            }
            Op::Rename {
                parent,
                name,
                new_parent,
                new_name,
                flags,
                time,
            } => {
                eff = self.rename(*parent, name, *new_parent, new_name, *flags, *time)?;
            }
            Op::SetAttr {
                ino,
                mode,
                uid,
                gid,
                size,
                atime,
                mtime,
                ctime,
            } => {
                let i = self.get(*ino)?;
                if size.is_some() {
                    if i.is_dir() {
                        return Err(ArrayError::IsDir);
                    }
                    if !matches!(i.body, Body::File { .. }) {
                        return Err(ArrayError::Invalid("size of a non-regular file".into()));
                    }
                }
                let i = self.get_mut(*ino)?;
                if let Some(m) = mode {
                    i.mode = (i.mode & S_IFMT) | (m & 0o7777);
                }
                if let Some(u) = uid {
                    i.uid = *u;
                }
                if let Some(g) = gid {
                    i.gid = *g;
                }
                if let Some(s) = size {
                    if let Body::File { inline: Some(data) } = &mut i.body {
                        data.resize(*s as usize, 0);
                    }
                    if *s != i.size {
                        i.mtime = *ctime;
                    }
                    i.size = *s;
                }
                if let Some(a) = atime {
                    i.atime = *a;
                }
                if let Some(m) = mtime {
                    i.mtime = *m;
                }
                i.ctime = *ctime;
            }
            Op::WriteInline {
                ino,
                offset,
                data,
                time,
            } => {
                let i = self.get_mut(*ino)?;
                let Body::File { inline: Some(buf) } = &mut i.body else {
                    return Err(ArrayError::Invalid(format!(
                        "inode {ino} has no inline data"
                    )));
                };
                let off =
                    usize::try_from(*offset).map_err(|_| ArrayError::Invalid("offset".into()))?;
                let end = off + data.len();
                if buf.len() < end {
                    buf.resize(end, 0);
                }
                buf[off..end].copy_from_slice(data);
                i.size = buf.len() as u64;
                i.mtime = *time;
                i.ctime = *time;
            }
            Op::Extend { ino, end, time } => {
                let i = self.get_mut(*ino)?;
                if !matches!(i.body, Body::File { inline: None }) {
                    return Err(ArrayError::Invalid(format!(
                        "inode {ino} is not a striped file"
                    )));
                }
                i.size = i.size.max(*end);
                i.mtime = *time;
                i.ctime = *time;
            }
            Op::Uninline { ino } => {
                let i = self.get_mut(*ino)?;
                match &mut i.body {
                    Body::File { inline } => *inline = None,
                    _ => {
                        return Err(ArrayError::Invalid(format!(
                            "inode {ino} is not a regular file"
                        )));
                    }
                }
            }
            Op::SetXattr {
                ino,
                name,
                value,
                flags,
                time,
            } => {
                if name.is_empty() || name.len() > NAME_MAX {
                    return Err(if name.is_empty() {
                        ArrayError::Invalid("empty xattr name".into())
                    } else {
                        ArrayError::NameTooLong
                    });
                }
                let i = self.get_mut(*ino)?;
                let x = i.xattrs.get_or_insert_with(Default::default);
                match x.binary_search_by(|(n, _)| (**n).cmp(name.as_slice())) {
                    Ok(pos) => {
                        if flags & XATTR_CREATE != 0 {
                            return Err(ArrayError::Exists);
                        }
                        x[pos].1 = value.as_slice().into();
                    }
                    Err(pos) => {
                        if flags & XATTR_REPLACE != 0 {
                            if x.is_empty() {
                                i.xattrs = None;
                            }
                            return Err(ArrayError::NoAttr);
                        }
                        x.insert(pos, (name.as_slice().into(), value.as_slice().into()));
                    }
                }
                i.ctime = *time;
            }
            Op::RemoveXattr { ino, name, time } => {
                let i = self.get_mut(*ino)?;
                let x = i.xattrs.as_mut().ok_or(ArrayError::NoAttr)?;
                let pos = x
                    .binary_search_by(|(n, _)| (**n).cmp(name.as_slice()))
                    .map_err(|_| ArrayError::NoAttr)?;
                x.remove(pos);
                if x.is_empty() {
                    i.xattrs = None;
                }
                i.ctime = *time;
            }
            Op::SetModeAcl {
                ino,
                mode,
                acl,
                time,
            } => {
                let i = self.get_mut(*ino)?;
                i.mode = (i.mode & S_IFMT) | (mode & 0o7777);
                let name = crate::acl::ACCESS_XATTR;
                let x = i.xattrs.get_or_insert_with(Default::default);
                let at = x.binary_search_by(|(n, _)| (**n).cmp(name));
                match (at, acl) {
                    (Ok(pos), Some(v)) => x[pos].1 = v.as_slice().into(),
                    (Err(pos), Some(v)) => x.insert(pos, (name.into(), v.as_slice().into())),
                    (Ok(pos), None) => {
                        x.remove(pos);
                    }
                    (Err(_), None) => {}
                }
                if x.is_empty() {
                    i.xattrs = None;
                }
                i.ctime = *time;
            }
            Op::Free { ino } => {
                let i = self.get(*ino)?;
                if i.nlink != 0 {
                    return Err(ArrayError::Invalid(format!(
                        "inode {ino} still has {} links",
                        i.nlink
                    )));
                }
                self.inodes.remove(ino);
                eff.freed = Some(*ino);
            }
        }
        Ok(eff)
    }

    fn lookup_entry(&self, parent: u64, name: &[u8]) -> Result<u64> {
        if name.len() > NAME_MAX {
            return Err(ArrayError::NameTooLong);
        }
        if name == b"." || name == b".." {
            return Err(ArrayError::Invalid(
                "cannot remove or rename . or ..".into(),
            ));
        }
        self.dir(parent)?.get(name).ok_or(ArrayError::NotFound)
    }

    fn check_new(&self, parent: u64, name: &[u8], ino: u64) -> Result<()> {
        if self.dir(parent)?.get(name).is_some() {
            return Err(ArrayError::Exists);
        }
        if self.inodes.contains_key(&ino) || ino < ROOT_INO {
            return Err(ArrayError::Invalid(format!("inode {ino} already in use")));
        }
        Ok(())
    }

    fn add_new(&mut self, parent: u64, name: &[u8], ino: u64, inode: Inode, time: i64) {
        let is_dir = inode.is_dir();
        self.inodes.insert(ino, inode);
        self.next_ino = self.next_ino.max(ino + 1);
        if let Some(p) = self.inodes.get_mut(&parent) {
            if is_dir {
                p.nlink += 1;
            }
            p.mtime = time;
            p.ctime = time;
            if let Some(d) = p.dir_mut() {
                d.insert(name, ino);
            }
        }
    }

    /// Remove the inode of an empty directory that lost its name; returns
    /// its last attributes (no links, changed at `time`).
    fn remove_dir(&mut self, ino: u64, time: i64) -> Option<Attr> {
        let mut last = self.inodes.remove(&ino)?.attr(ino);
        last.nlink = 0;
        last.ctime = to_system_time(time);
        Some(last)
    }

    /// Drop one link of a non-directory; returns the inode if it became an orphan.
    fn drop_link(&mut self, ino: u64, time: i64) -> Option<u64> {
        let i = self.inodes.get_mut(&ino)?;
        i.nlink = i.nlink.saturating_sub(1);
        i.ctime = time;
        (i.nlink == 0).then_some(ino)
    }

    fn rename(
        &mut self,
        parent: u64,
        name: &[u8],
        new_parent: u64,
        new_name: &[u8],
        flags: u32,
        time: i64,
    ) -> Result<Effect> {
        let mut eff = Effect::default();
        check_name(new_name)?;
        if flags & !(RENAME_NOREPLACE | RENAME_EXCHANGE) != 0
            || flags == RENAME_NOREPLACE | RENAME_EXCHANGE
        {
            return Err(ArrayError::Invalid(format!("rename flags {flags:#x}")));
        }
        let src = self.lookup_entry(parent, name)?;
        self.dir(new_parent)?;
        let dst = self.dir(new_parent)?.get(new_name);
        let src_is_dir = self.get(src)?.is_dir();
        if src_is_dir && self.is_within(new_parent, src) {
            return Err(ArrayError::Invalid(
                "cannot move a directory below itself".into(),
            ));
        }
        if flags & RENAME_EXCHANGE != 0 {
            let dst = dst.ok_or(ArrayError::NotFound)?;
            let dst_is_dir = self.get(dst)?.is_dir();
            if dst_is_dir && self.is_within(parent, dst) {
                return Err(ArrayError::Invalid(
                    "cannot move a directory below itself".into(),
                ));
            }
            if parent == new_parent && name == new_name {
                return Ok(eff);
            }
            self.dir_mut(parent)?.replace(name, dst);
            self.dir_mut(new_parent)?.replace(new_name, src);
            if parent != new_parent {
                if src_is_dir {
                    self.reparent(src, new_parent);
                }
                if dst_is_dir {
                    self.reparent(dst, parent);
                }
                let delta = i64::from(dst_is_dir) - i64::from(src_is_dir);
                self.adjust_nlink(parent, delta);
                self.adjust_nlink(new_parent, -delta);
            }
            for i in [src, dst] {
                if let Some(n) = self.inodes.get_mut(&i) {
                    n.ctime = time;
                }
            }
            self.touch_dir(parent, time);
            self.touch_dir(new_parent, time);
            return Ok(eff);
        }
        if let Some(dst) = dst {
            if flags & RENAME_NOREPLACE != 0 {
                return Err(ArrayError::Exists);
            }
            if dst == src {
                // POSIX: both names are links to the same file; nothing happens.
                return Ok(eff);
            }
            let d = self.get(dst)?;
            match (src_is_dir, d.dir()) {
                (true, Some(dd)) if !dd.is_empty() => return Err(ArrayError::NotEmpty),
                (true, None) => return Err(ArrayError::NotDir),
                (false, Some(_)) => return Err(ArrayError::IsDir),
                _ => {}
            }
            // Replace: remove the target entry first.
            self.dir_mut(new_parent)?.remove(new_name);
            if src_is_dir {
                eff.removed_dir = self.remove_dir(dst, time);
                self.adjust_nlink(new_parent, -1);
            } else {
                eff.orphaned = self.drop_link(dst, time);
            }
        }
        self.dir_mut(parent)?.remove(name);
        self.dir_mut(new_parent)?.insert(new_name, src);
        if src_is_dir && parent != new_parent {
            self.reparent(src, new_parent);
            self.adjust_nlink(parent, -1);
            self.adjust_nlink(new_parent, 1);
        }
        if let Some(n) = self.inodes.get_mut(&src) {
            n.ctime = time;
        }
        self.touch_dir(parent, time);
        self.touch_dir(new_parent, time);
        Ok(eff)
    }

    fn reparent(&mut self, dir: u64, parent: u64) {
        if let Some(d) = self.inodes.get_mut(&dir).and_then(|i| i.dir_mut()) {
            d.parent = parent;
        }
    }

    fn adjust_nlink(&mut self, ino: u64, delta: i64) {
        if let Some(i) = self.inodes.get_mut(&ino) {
            i.nlink = (i64::from(i.nlink) + delta).max(0) as u32;
        }
    }

    /// Non-directories without links (left by a crash while they were open).
    pub fn orphans(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .inodes
            .iter()
            .filter(|(_, i)| i.nlink == 0 && !i.is_dir())
            .map(|(ino, _)| ino)
            .collect();
        v.sort_unstable();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(parent: u64, name: &str, ino: u64, mode: u32) -> Op {
        Op::Create {
            parent,
            name: name.as_bytes().to_vec(),
            ino,
            mode,
            uid: 0,
            gid: 0,
            rdev: 0,
            time: 1,
        }
    }

    fn sample() -> Namespace {
        let mut ns = Namespace::new(0, 0, 0);
        for op in [
            create(ROOT_INO, "d", 2, S_IFDIR | 0o755),
            create(2, "sub", 3, S_IFDIR | 0o755),
            create(ROOT_INO, "f", 4, S_IFREG | 0o644),
            create(3, "g", 5, S_IFREG | 0o644),
        ] {
            ns.apply(&op).unwrap();
        }
        ns
    }

    #[test]
    fn a_cycle_of_parents_ends_the_walk_and_refuses_the_rename() {
        let mut ns = sample();
        // d (2) and sub (3) each other's parent, as no correct build writes.
        ns.inodes.get_mut(&2).unwrap().dir_mut().unwrap().parent = 3;
        assert!(ns.is_within(2, 99));
        let op = Op::Rename {
            parent: ROOT_INO,
            name: b"f".to_vec(),
            new_parent: 3,
            new_name: b"f".to_vec(),
            flags: 0,
            time: 2,
        };
        // Whatever the answer, it comes back.
        let _ = ns.apply(&op);
    }

    /// A failing operation leaves the namespace exactly as it was.
    #[test]
    fn failed_operations_change_nothing() {
        let failing = [
            create(ROOT_INO, "f", 9, S_IFREG | 0o644),
            create(4, "x", 9, S_IFREG | 0o644),
            create(ROOT_INO, "new", 4, S_IFREG | 0o644),
            create(ROOT_INO, &"n".repeat(256), 9, S_IFREG | 0o644),
            Op::Unlink {
                parent: ROOT_INO,
                name: b"d".to_vec(),
                time: 2,
            },
            Op::Rmdir {
                parent: ROOT_INO,
                name: b"d".to_vec(),
                time: 2,
            },
            Op::Rmdir {
                parent: ROOT_INO,
                name: b"f".to_vec(),
                time: 2,
            },
            Op::Link {
                ino: 2,
                parent: ROOT_INO,
                name: b"l".to_vec(),
                time: 2,
            },
            Op::Link {
                ino: 4,
                parent: ROOT_INO,
                name: b"d".to_vec(),
                time: 2,
            },
            Op::Rename {
                parent: ROOT_INO,
                name: b"d".to_vec(),
                new_parent: 3,
                new_name: b"x".to_vec(),
                flags: 0,
                time: 2,
            },
            Op::Rename {
                parent: ROOT_INO,
                name: b"f".to_vec(),
                new_parent: ROOT_INO,
                new_name: b"d".to_vec(),
                flags: 0,
                time: 2,
            },
            Op::Rename {
                parent: ROOT_INO,
                name: b"d".to_vec(),
                new_parent: ROOT_INO,
                new_name: b"f".to_vec(),
                flags: 0,
                time: 2,
            },
            Op::Rename {
                parent: 2,
                name: b"sub".to_vec(),
                new_parent: ROOT_INO,
                new_name: b"f".to_vec(),
                flags: 3,
                time: 2,
            },
            Op::Rename {
                parent: ROOT_INO,
                name: b"f".to_vec(),
                new_parent: ROOT_INO,
                new_name: b"zz".to_vec(),
                flags: 2,
                time: 2,
            },
            Op::SetAttr {
                ino: 2,
                mode: Some(0o700),
                uid: None,
                gid: None,
                size: Some(0),
                atime: None,
                mtime: None,
                ctime: 2,
            },
            Op::RemoveXattr {
                ino: 4,
                name: b"user.none".to_vec(),
                time: 2,
            },
            Op::Free { ino: 4 },
            Op::Extend {
                ino: 4,
                end: 10,
                time: 2,
            },
        ];
        for op in &failing {
            let mut ns = sample();
            let before = ns.clone();
            assert!(ns.apply(op).is_err(), "{op:?} succeeded");
            assert_eq!(ns, before, "{op:?} changed the namespace");
        }
    }

    #[test]
    fn directory_index_survives_many_inserts_and_removes() {
        let mut d = Dir::new(ROOT_INO);
        for i in 0..5000u64 {
            d.insert(format!("n{i}").as_bytes(), i + 10);
        }
        for i in (0..5000u64).step_by(3) {
            assert_eq!(d.remove(format!("n{i}").as_bytes()), Some(i + 10));
        }
        for i in 0..5000u64 {
            let want = (i % 3 != 0).then_some(i + 10);
            assert_eq!(d.get(format!("n{i}").as_bytes()), want);
        }
        assert_eq!(d.len(), 5000 - 1667);
        assert!(d.replace(b"n1", 99));
        assert_eq!(d.get(b"n1"), Some(99));
        // Remove most of the rest: the directory compacts, cookies stay.
        let cookies: Vec<(u64, Box<[u8]>)> = d
            .entries_after(0)
            .map(|(c, e)| (c, e.name.clone()))
            .collect();
        for (k, (_, name)) in cookies.iter().enumerate() {
            if k % 10 != 0 {
                d.remove(name).unwrap();
            }
        }
        let kept: Vec<(u64, Box<[u8]>)> = cookies.iter().step_by(10).cloned().collect();
        let now: Vec<(u64, Box<[u8]>)> = d
            .entries_after(0)
            .map(|(c, e)| (c, e.name.clone()))
            .collect();
        assert_eq!(now, kept);
        assert_eq!(d.len(), kept.len());
        for (c, name) in &kept {
            assert!(d.get(name).is_some());
            // Resuming after any kept cookie yields exactly the later ones.
            let after: Vec<u64> = d.entries_after(*c).map(|(c, _)| c).collect();
            assert!(after.iter().all(|x| x > c));
            assert_eq!(after.len(), kept.iter().filter(|(k, _)| k > c).count());
        }
        d.insert(b"fresh", 7);
        assert!(d.entries_after(0).last().unwrap().0 > kept.last().unwrap().0);
    }

    #[test]
    fn nlink_bookkeeping_of_directories_and_links() {
        let mut ns = sample();
        assert_eq!(ns.get(ROOT_INO).unwrap().nlink, 3);
        ns.apply(&Op::Rename {
            parent: 2,
            name: b"sub".to_vec(),
            new_parent: ROOT_INO,
            new_name: b"sub".to_vec(),
            flags: 0,
            time: 3,
        })
        .unwrap();
        assert_eq!(ns.get(ROOT_INO).unwrap().nlink, 4);
        assert_eq!(ns.get(2).unwrap().nlink, 2);
        ns.apply(&Op::Link {
            ino: 4,
            parent: 3,
            name: b"h".to_vec(),
            time: 3,
        })
        .unwrap();
        assert_eq!(ns.get(4).unwrap().nlink, 2);
        let e = ns
            .apply(&Op::Unlink {
                parent: ROOT_INO,
                name: b"f".to_vec(),
                time: 4,
            })
            .unwrap();
        assert_eq!(e.orphaned, None);
        let e = ns
            .apply(&Op::Unlink {
                parent: 3,
                name: b"h".to_vec(),
                time: 4,
            })
            .unwrap();
        assert_eq!(e.orphaned, Some(4));
        assert_eq!(ns.orphans(), vec![4]);
        ns.apply(&Op::Free { ino: 4 }).unwrap();
        assert!(ns.orphans().is_empty());
    }
}
