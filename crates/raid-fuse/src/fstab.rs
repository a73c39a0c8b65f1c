//! Finding this mount in `/etc/fstab`, so that `mount /mnt/array`,
//! `mount.raidfs /mnt/array` and systemd's generated mount units work.
//!
//! A raidfs line looks like
//! `media  /mnt/array  raidfs  nofail,x-systemd.requires-mounts-for=/mnt/disk1  0 0`
//! (type `raidfs`, or `fuse.raidfs`).

use std::path::Path;

/// One fstab entry of type raidfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FstabEntry {
    pub spec: String,
    pub mountpoint: String,
    pub options: String,
}

/// Undo fstab's octal escapes (`\040` for a space).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') as u32 * 64
                + (bytes[i + 2] - b'0') as u32 * 8
                + (bytes[i + 3] - b'0') as u32;
            if let Ok(b) = u8::try_from(v) {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// All raidfs entries of an fstab text.
pub fn parse(text: &str) -> Vec<FstabEntry> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                return None;
            }
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 3 || !(f[2] == "raidfs" || f[2] == "fuse.raidfs") {
                return None;
            }
            Some(FstabEntry {
                spec: unescape(f[0]),
                mountpoint: unescape(f[1]),
                options: f
                    .get(3)
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "defaults".into()),
            })
        })
        .collect()
}

/// The raidfs entry for `mountpoint` in the fstab file at `path`.
pub fn find(path: &Path, mountpoint: &Path) -> std::io::Result<Option<FstabEntry>> {
    let text = std::fs::read_to_string(path)?;
    // fstab names mount points by absolute paths; `mount.raidfs DIR` may
    // be given a relative one (as mount(8) accepts), or one through a
    // symlink.
    let mut want = vec![normalize(mountpoint)];
    want.extend(std::path::absolute(mountpoint).ok().map(|p| normalize(&p)));
    want.extend(mountpoint.canonicalize().ok().map(|p| normalize(&p)));
    Ok(parse(&text).into_iter().find(|e| {
        let p = Path::new(&e.mountpoint);
        want.contains(&normalize(p))
            || p.canonicalize()
                .is_ok_and(|c| want.contains(&normalize(&c)))
    }))
}

fn normalize(p: &Path) -> String {
    let s = p.to_string_lossy();
    let t = s.trim_end_matches('/');
    if t.is_empty() {
        "/".into()
    } else {
        t.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relative_mount_point_finds_its_absolute_line() {
        let tmp = tempfile::tempdir().unwrap();
        let mnt = tmp.path().canonicalize().unwrap().join("array");
        std::fs::create_dir(&mnt).unwrap();
        let tab = tmp.path().join("fstab");
        std::fs::write(&tab, format!("media {} raidfs nofail 0 0\n", mnt.display())).unwrap();
        // The same directory relative to the working directory (which a
        // test must not change): up to `/`, then down to it.
        let cwd = std::env::current_dir().unwrap();
        let mut rel = std::path::PathBuf::new();
        for _ in cwd.components().skip(1) {
            rel.push("..");
        }
        rel.push(mnt.strip_prefix("/").unwrap());
        assert!(rel.is_relative());
        let e = find(&tab, &rel).unwrap().expect("found by a relative path");
        assert_eq!(e.spec, "media");
    }

    #[test]
    fn finds_raidfs_lines_only() {
        let text = "# comment\nUUID=abc / ext4 defaults 0 1\nmedia /mnt/array raidfs nofail,allow_other 0 0\n\
                    /mnt/d1:/mnt/d2 /mnt/my\\040array fuse.raidfs defaults 0 0\n";
        let e = parse(text);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].spec, "media");
        assert_eq!(e[0].options, "nofail,allow_other");
        assert_eq!(e[1].mountpoint, "/mnt/my array");
    }
}
