//! The kernel's read-ahead for the mount (`-o readahead=KiB`).
//!
//! The kernel caps a FUSE mount's read-ahead at 128 KiB whatever `init`
//! asks for, so a cold sequential reader has one or two 128 KiB requests in
//! flight and stalls on each round trip (about 390 MiB/s here, far below
//! what several disks give). Its backing device's `read_ahead_kb` in sysfs
//! can be raised after the mount, as mergerfs's `readahead=` option and md
//! (for its own devices) do: the kernel then sends larger requests and
//! several at once, which the array serves from all members in parallel.
//!
//! The device is found in `/proc/self/mountinfo`: `stat` of the mount point
//! would be a FUSE request to this very process before it serves any.

use std::path::Path;

/// Default read-ahead of a raidfs mount, in KiB.
pub const DEFAULT_KIB: u64 = 4096;

/// Sets `read_ahead_kb` of the FUSE mount on `mountpoint` (the last mount
/// there, as a later mount hides earlier ones).
pub fn apply(mountpoint: &Path, kib: u64) -> std::io::Result<()> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let dev = device_of(&info, mountpoint).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{} is not in /proc/self/mountinfo", mountpoint.display()),
        )
    })?;
    std::fs::write(
        format!("/sys/class/bdi/{dev}/read_ahead_kb"),
        kib.to_string(),
    )
}

/// The `major:minor` of the last mount on `mountpoint` in a mountinfo text.
pub(crate) fn device_of(mountinfo: &str, mountpoint: &Path) -> Option<String> {
    let want = mountpoint.to_str()?;
    mountinfo.lines().rev().find_map(|line| {
        let mut f = line.split(' ');
        let dev = f.nth(2)?;
        let point = f.nth(1)?;
        (unescape(point) == want).then(|| dev.to_string())
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\011`, `\012`,
/// `\134`).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .and_then(|d| {
                u8::try_from(d.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0'))).ok()
            });
        if b[i] == b'\\'
            && let Some(v) = octal
        {
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "\
22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
40 22 0:39 / /mnt/array rw,nosuid,nodev,relatime shared:20 - fuse.raidfs home rw,user_id=0
41 22 0:40 / /mnt/my\\040array rw,nosuid,nodev shared:21 - fuse.raidfs x rw
42 40 0:41 / /mnt/array rw,nosuid,nodev shared:22 - fuse.raidfs y rw
";

    #[test]
    fn finds_the_last_mount_on_a_path() {
        assert_eq!(
            device_of(INFO, Path::new("/mnt/array")).as_deref(),
            Some("0:41")
        );
        assert_eq!(
            device_of(INFO, Path::new("/mnt/my array")).as_deref(),
            Some("0:40")
        );
        assert_eq!(device_of(INFO, Path::new("/")).as_deref(), Some("254:1"));
        assert_eq!(device_of(INFO, Path::new("/mnt")), None);
        assert_eq!(device_of("garbage\n\n1 2\n", Path::new("/mnt")), None);
    }

    #[test]
    fn unescapes_octal_sequences_only() {
        assert_eq!(unescape("a\\040b\\011c\\134d"), "a b\tc\\d");
        assert_eq!(unescape("trailing\\04"), "trailing\\04");
        assert_eq!(unescape("not\\x41octal"), "not\\x41octal");
        assert_eq!(unescape("é\\é"), "é\\é");
    }
}
