//! Turning the SPEC of `mount.raidfs SPEC DIR` into member directories.
//!
//! SPEC is either a member list (`/mnt/d1:/mnt/d2:/mnt/d3`, anything with a
//! `/`) or an array name or UUID. A name or UUID is looked up among
//! candidate directories — those given with `-o members=`, every mounted
//! filesystem's root and its immediate subdirectories — by reading
//! superblocks only; nothing is written while searching.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use raid_array::Selector;

/// Filesystem types never searched for members.
const PSEUDO_FS: &[&str] = &[
    "proc",
    "sysfs",
    "devtmpfs",
    "devpts",
    "cgroup",
    "cgroup2",
    "securityfs",
    "debugfs",
    "tracefs",
    "pstore",
    "bpf",
    "mqueue",
    "hugetlbfs",
    "configfs",
    "fusectl",
    "autofs",
    "binfmt_misc",
    "efivarfs",
    "nsfs",
    "rpc_pipefs",
];

/// Network filesystems: never searched for members (a member is a local
/// disk), and a stale server would hang the search.
const NETWORK_FS: &[&str] = &[
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "ceph", "afs", "ncpfs", "coda",
];

/// What SPEC names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spec {
    Members(Vec<PathBuf>),
    Array(Selector),
}

/// Parse SPEC.
pub fn parse(spec: &str) -> Result<Spec> {
    if spec.is_empty() {
        bail!("empty array specification");
    }
    if spec.contains('/') {
        let members: Vec<PathBuf> = spec
            .split([':', ','])
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .collect();
        return Ok(Spec::Members(members));
    }
    if let Some(uuid) = parse_uuid(spec) {
        return Ok(Spec::Array(Selector::Uuid(uuid)));
    }
    Ok(Spec::Array(Selector::Name(spec.to_string())))
}

fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Mount points from `/proc/self/mountinfo` with their filesystem types.
pub fn mounts() -> Result<Vec<(PathBuf, String)>> {
    let text =
        std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let mp = left.split(' ').nth(4)?;
            let fstype = right.split(' ').next()?;
            Some((PathBuf::from(unescape_mountinfo(mp)), fstype.to_string()))
        })
        .collect())
}

fn unescape_mountinfo(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// Whether `dir` is itself a mount point.
pub fn is_mountpoint(dir: &Path) -> Result<bool> {
    let dir = dir
        .canonicalize()
        .with_context(|| format!("{}", dir.display()))?;
    Ok(mounts()?.iter().any(|(m, _)| *m == dir))
}

/// A TARGET word without a `/` (`mnt`, `.`) that names a raidfs mount
/// point, as its canonical path: such a word is otherwise an array name,
/// and a mount point typed from its parent would not be found.
pub fn raidfs_mount_word(word: &str) -> Option<PathBuf> {
    if word.contains('/') || !Path::new(word).is_dir() {
        return None;
    }
    let dir = Path::new(word).canonicalize().ok()?;
    mounts()
        .ok()?
        .into_iter()
        .any(|(m, fstype)| m == dir && fstype == "fuse.raidfs")
        .then_some(dir)
}

/// Directories that may hold members: each of `extra` and every real
/// mounted filesystem's root, with their immediate subdirectories.
pub fn candidates(extra: &[String]) -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = Vec::new();
    for dir in extra.iter().map(PathBuf::from) {
        with_subdirs(dir, &mut out);
    }
    for (mp, fstype) in mounts()? {
        if PSEUDO_FS.contains(&fstype.as_str())
            || NETWORK_FS.contains(&fstype.as_str())
            || fstype.starts_with("fuse")
        {
            continue;
        }
        with_subdirs(mp, &mut out);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// `dir` and its immediate subdirectories.
fn with_subdirs(dir: PathBuf, out: &mut Vec<PathBuf>) {
    if let Ok(rd) = std::fs::read_dir(&dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.push(e.path());
            }
        }
    }
    out.push(dir);
}

/// The member directories SPEC stands for.
pub fn resolve(spec: &Spec, extra_candidates: &[String]) -> Result<Vec<PathBuf>> {
    match spec {
        Spec::Members(m) => Ok(m.clone()),
        Spec::Array(sel) => {
            let c = candidates(extra_candidates)?;
            let what = match sel {
                Selector::Name(n) => format!("array {n:?}"),
                Selector::Uuid(u) => {
                    format!("array {}", raid_array::format::superblock::uuid_string(u))
                }
            };
            raid_array::assemble::find_members(sel, &c).with_context(|| {
                format!(
                    "looking for the members of {what} on the mounted filesystems \
                     (are the member disks mounted? -o members=DIR:DIR searches elsewhere)"
                )
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_directories_are_searched_with_their_subdirectories() {
        let tmp = tempfile::tempdir().unwrap();
        let disk = tmp.path().join("disk1");
        std::fs::create_dir_all(disk.join("array")).unwrap();
        let c = candidates(&[disk.display().to_string()]).unwrap();
        assert!(c.contains(&disk), "{c:?}");
        assert!(c.contains(&disk.join("array")), "{c:?}");
    }

    #[test]
    fn member_lists_names_and_uuids() {
        assert_eq!(
            parse("/a:/b").unwrap(),
            Spec::Members(vec!["/a".into(), "/b".into()])
        );
        assert_eq!(
            parse("media").unwrap(),
            Spec::Array(Selector::Name("media".into()))
        );
        let u = parse("00112233-4455-6677-8899-aabbccddeeff").unwrap();
        assert!(matches!(u, Spec::Array(Selector::Uuid(b)) if b[0] == 0 && b[15] == 0xff));
        assert!(parse("").is_err());
    }
}
