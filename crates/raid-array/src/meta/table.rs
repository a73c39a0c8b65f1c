//! The inode table: inodes by number, stored in pages of 64 consecutive
//! numbers. Inode numbers are handed out in sequence and never reused, so
//! pages are dense; a page whose inodes are all gone is dropped. Compared
//! with a `HashMap<u64, Inode>` this saves the power-of-two bucket slack
//! (up to half the table) and iterates in inode order for checkpoints —
//! it is what keeps a million files well under the memory budget.

use std::collections::BTreeMap;

use super::inode::Inode;

const PAGE_BITS: u32 = 6;
const PAGE: usize = 1 << PAGE_BITS;

#[derive(Clone, Debug, PartialEq, Eq)]
struct Page {
    live: u32,
    slots: [Option<Inode>; PAGE],
}

impl Page {
    fn new() -> Box<Self> {
        Box::new(Page {
            live: 0,
            slots: std::array::from_fn(|_| None),
        })
    }
}

/// Inodes by number.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InodeTable {
    pages: BTreeMap<u64, Box<Page>>,
    len: usize,
}

fn split(ino: u64) -> (u64, usize) {
    (ino >> PAGE_BITS, (ino & (PAGE as u64 - 1)) as usize)
}

impl InodeTable {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, ino: &u64) -> Option<&Inode> {
        let (p, s) = split(*ino);
        self.pages.get(&p)?.slots[s].as_ref()
    }

    pub fn get_mut(&mut self, ino: &u64) -> Option<&mut Inode> {
        let (p, s) = split(*ino);
        self.pages.get_mut(&p)?.slots[s].as_mut()
    }

    pub fn contains_key(&self, ino: &u64) -> bool {
        self.get(ino).is_some()
    }

    /// Insert, returning the inode previously under that number.
    pub fn insert(&mut self, ino: u64, inode: Inode) -> Option<Inode> {
        let (p, s) = split(ino);
        let page = self.pages.entry(p).or_insert_with(Page::new);
        let old = page.slots[s].replace(inode);
        if old.is_none() {
            page.live += 1;
            self.len += 1;
        }
        old
    }

    pub fn remove(&mut self, ino: &u64) -> Option<Inode> {
        let (p, s) = split(*ino);
        let page = self.pages.get_mut(&p)?;
        let old = page.slots[s].take()?;
        page.live -= 1;
        self.len -= 1;
        if page.live == 0 {
            self.pages.remove(&p);
        }
        Some(old)
    }

    /// All inodes in increasing number order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &Inode)> {
        self.pages.iter().flat_map(|(p, page)| {
            page.slots
                .iter()
                .enumerate()
                .filter_map(move |(s, i)| i.as_ref().map(|i| ((p << PAGE_BITS) | s as u64, i)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::inode::{Body, S_IFREG};

    fn inode(size: u64) -> Inode {
        Inode {
            mode: S_IFREG,
            uid: 0,
            gid: 0,
            nlink: 1,
            rdev: 0,
            size,
            atime: 0,
            mtime: 0,
            ctime: 0,
            body: Body::File { inline: None },
            xattrs: None,
        }
    }

    #[test]
    fn behaves_like_a_map() {
        let mut t = InodeTable::new();
        let mut m = BTreeMap::new();
        let mut x = 12345u64;
        for _ in 0..20_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let ino = (x >> 33) % 3000;
            if x & 1 == 0 {
                assert_eq!(t.insert(ino, inode(x)), m.insert(ino, inode(x)));
            } else {
                assert_eq!(t.remove(&ino), m.remove(&ino));
            }
            assert_eq!(t.len(), m.len());
        }
        let a: Vec<(u64, &Inode)> = t.iter().collect();
        let b: Vec<(u64, &Inode)> = m.iter().map(|(k, v)| (*k, v)).collect();
        assert_eq!(a, b);
        for ino in 0..3000 {
            assert_eq!(t.get(&ino), m.get(&ino));
        }
    }
}
