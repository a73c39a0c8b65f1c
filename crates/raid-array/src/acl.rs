//! POSIX access ACLs as Linux passes them through extended attributes
//! (`system.posix_acl_access`, the `posix_acl_xattr` format of
//! `include/uapi/linux/posix_acl_xattr.h`), kept consistent with the mode
//! bits as ext4 keeps them.
//!
//! The mount does not ask the kernel to enforce ACLs (no `FUSE_POSIX_ACL`),
//! so the kernel hands these attributes to the filesystem like any other.
//! Stored as plain bytes they would go wrong in the common case: `cp -a`,
//! `mv` across filesystems and `rsync -A` create a file with a restrictive
//! mode and then set an ACL that only restates the mode bits, which ext4
//! turns into the mode and does not store. Here the owner, group (or mask)
//! and other entries likewise become the mode bits; an ACL that says no
//! more than the mode is not stored; a richer one is stored (for `getfacl`
//! and for copies out) and kept in step with `chmod`. Only the mode bits
//! are enforced, by the kernel's `default_permissions`.

use crate::{ArrayError, Result};

/// The attribute name of a file's access ACL.
pub const ACCESS_XATTR: &[u8] = b"system.posix_acl_access";

/// The attribute name of a directory's default ACL (kept, not inherited).
pub const DEFAULT_XATTR: &[u8] = b"system.posix_acl_default";

const VERSION: u32 = 2;
const HEADER: usize = 4;
const ENTRY: usize = 8;

/// `ACL_UNDEFINED_ID`: the id of the owner, owning group, mask and other
/// entries.
const UNDEFINED_ID: u32 = u32::MAX;

const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const GROUP: u16 = 0x08;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;

/// One entry: tag, permission bits (rwx), and the uid or gid of a named
/// user or group entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    tag: u16,
    perm: u16,
    id: u32,
}

/// A validated access ACL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessAcl {
    entries: Vec<Entry>,
}

fn invalid(why: &str) -> ArrayError {
    ArrayError::Invalid(format!("POSIX ACL: {why}"))
}

impl AccessAcl {
    /// Parse and check an ACL as `posix_acl_valid` does: one owner, owning
    /// group and other entry each, a mask whenever there are named entries,
    /// permissions of at most rwx.
    pub fn parse(value: &[u8]) -> Result<Self> {
        if value.len() < HEADER || !(value.len() - HEADER).is_multiple_of(ENTRY) {
            return Err(invalid("size is not a header and whole entries"));
        }
        let version = u32::from_le_bytes([value[0], value[1], value[2], value[3]]);
        if version != VERSION {
            return Err(invalid(&format!("version {version}, expected {VERSION}")));
        }
        let entries: Vec<Entry> = value[HEADER..]
            .chunks_exact(ENTRY)
            .map(|e| Entry {
                tag: u16::from_le_bytes([e[0], e[1]]),
                perm: u16::from_le_bytes([e[2], e[3]]),
                id: u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
            })
            .collect();
        let count = |tag: u16| entries.iter().filter(|e| e.tag == tag).count();
        if entries.iter().any(|e| e.perm & !0o7 != 0) {
            return Err(invalid("permissions beyond rwx"));
        }
        if entries
            .iter()
            .any(|e| ![USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER].contains(&e.tag))
        {
            return Err(invalid("unknown entry tag"));
        }
        if count(USER_OBJ) != 1 || count(GROUP_OBJ) != 1 || count(OTHER) != 1 || count(MASK) > 1 {
            return Err(invalid(
                "needs exactly one owner, owning group and other entry",
            ));
        }
        if count(USER) + count(GROUP) > 0 && count(MASK) == 0 {
            return Err(invalid("named entries need a mask entry"));
        }
        // posix_acl_valid's order: owner, named users, owning group, named
        // groups, mask, other (tags ascending), and named entries ascending
        // by id with a real id.
        let sorted = entries
            .windows(2)
            .all(|w| (w[0].tag, w[0].id) < (w[1].tag, w[1].id));
        if !sorted {
            return Err(invalid("entries out of order"));
        }
        if entries
            .iter()
            .any(|e| matches!(e.tag, USER | GROUP) && e.id == UNDEFINED_ID)
        {
            return Err(invalid("a named entry without a uid or gid"));
        }
        Ok(AccessAcl { entries })
    }

    fn perm(&self, tag: u16) -> Option<u32> {
        self.entries
            .iter()
            .find(|e| e.tag == tag)
            .map(|e| u32::from(e.perm))
    }

    /// The permission bits (0o777) the ACL implies, as
    /// `posix_acl_equiv_mode` computes them: the group bits come from the
    /// mask when there is one.
    pub fn mode_bits(&self) -> u32 {
        let group = self.perm(MASK).or(self.perm(GROUP_OBJ)).unwrap_or(0);
        (self.perm(USER_OBJ).unwrap_or(0) << 6) | (group << 3) | self.perm(OTHER).unwrap_or(0)
    }

    /// Whether the mode bits say all the ACL says (nothing to store).
    pub fn is_mode_only(&self) -> bool {
        self.entries
            .iter()
            .all(|e| matches!(e.tag, USER_OBJ | GROUP_OBJ | OTHER))
    }

    /// The ACL after a `chmod` to `mode`, as `posix_acl_chmod`: the owner,
    /// the mask (or the owning group when there is no mask) and other take
    /// the new bits; named entries stay.
    pub fn with_mode(&self, mode: u32) -> Self {
        let has_mask = self.perm(MASK).is_some();
        let mut entries = self.entries.clone();
        for e in &mut entries {
            let bits = match e.tag {
                USER_OBJ => Some(mode >> 6),
                MASK => Some(mode >> 3),
                GROUP_OBJ if !has_mask => Some(mode >> 3),
                OTHER => Some(mode),
                _ => None,
            };
            if let Some(b) = bits {
                e.perm = (b & 0o7) as u16;
            }
        }
        AccessAcl { entries }
    }

    /// The attribute's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(HEADER + ENTRY * self.entries.len());
        v.extend_from_slice(&VERSION.to_le_bytes());
        for e in &self.entries {
            v.extend_from_slice(&e.tag.to_le_bytes());
            v.extend_from_slice(&e.perm.to_le_bytes());
            v.extend_from_slice(&e.id.to_le_bytes());
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
        AccessAcl {
            entries: entries
                .iter()
                .map(|&(tag, perm, id)| Entry { tag, perm, id })
                .collect(),
        }
        .encode()
    }

    #[test]
    fn an_acl_of_the_mode_bits_alone_becomes_the_mode() {
        // What `cp -a` sets on a 0644 file (as `getfacl` shows it).
        let v = acl(&[
            (USER_OBJ, 6, UNDEFINED_ID),
            (GROUP_OBJ, 4, UNDEFINED_ID),
            (OTHER, 4, UNDEFINED_ID),
        ]);
        let a = AccessAcl::parse(&v).unwrap();
        assert_eq!(a.mode_bits(), 0o644);
        assert!(a.is_mode_only());
        assert_eq!(a.encode(), v);
    }

    #[test]
    fn named_entries_are_kept_and_the_mask_gives_the_group_bits() {
        let v = acl(&[
            (USER_OBJ, 7, UNDEFINED_ID),
            (USER, 6, 1000),
            (GROUP_OBJ, 5, UNDEFINED_ID),
            (MASK, 6, UNDEFINED_ID),
            (OTHER, 0, UNDEFINED_ID),
        ]);
        let a = AccessAcl::parse(&v).unwrap();
        assert_eq!(a.mode_bits(), 0o760);
        assert!(!a.is_mode_only());
        // chmod 0751: owner, mask and other follow; the named user and the
        // owning group (hidden behind the mask) stay.
        let b = a.with_mode(0o751);
        assert_eq!(b.mode_bits(), 0o751);
        let again = AccessAcl::parse(&b.encode()).unwrap();
        assert_eq!(again.perm(USER), Some(6));
        assert_eq!(again.perm(GROUP_OBJ), Some(5));
        assert_eq!(again.perm(MASK), Some(5));
    }

    #[test]
    fn without_a_mask_chmod_sets_the_owning_group() {
        let v = acl(&[
            (USER_OBJ, 6, UNDEFINED_ID),
            (GROUP_OBJ, 4, UNDEFINED_ID),
            (OTHER, 4, UNDEFINED_ID),
        ]);
        let a = AccessAcl::parse(&v).unwrap().with_mode(0o700);
        assert_eq!(a.mode_bits(), 0o700);
    }

    #[test]
    fn malformed_acls_are_refused() {
        let ok = [
            (USER_OBJ, 6, UNDEFINED_ID),
            (GROUP_OBJ, 4, UNDEFINED_ID),
            (OTHER, 4, UNDEFINED_ID),
        ];
        let bad: Vec<Vec<u8>> = vec![
            Vec::new(),
            vec![2, 0, 0],
            {
                let mut v = acl(&ok);
                v[0] = 1;
                v
            },
            {
                let mut v = acl(&ok);
                v.push(0);
                v
            },
            acl(&ok[..2]),
            acl(&[ok[0], ok[0], ok[1], ok[2]]),
            acl(&[ok[0], ok[1], ok[2], (USER, 6, 1000)]),
            acl(&[ok[0], ok[1], ok[2], (0x40, 6, 0)]),
            acl(&[(USER_OBJ, 8, UNDEFINED_ID), ok[1], ok[2]]),
            // Out of order, and a named user without a uid.
            acl(&[ok[1], ok[0], ok[2]]),
            acl(&[
                ok[0],
                (USER, 6, 1001),
                (USER, 6, 1000),
                ok[1],
                (MASK, 6, UNDEFINED_ID),
                ok[2],
            ]),
            acl(&[
                ok[0],
                (USER, 6, UNDEFINED_ID),
                ok[1],
                (MASK, 6, UNDEFINED_ID),
                ok[2],
            ]),
        ];
        for v in bad {
            assert!(
                matches!(AccessAcl::parse(&v), Err(ArrayError::Invalid(_))),
                "{v:?}"
            );
        }
    }
}
