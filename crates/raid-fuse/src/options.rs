//! `-o` mount options, as `mount(8)` passes them to a `mount.<type>` helper
//! and as they appear in the fourth field of an `/etc/fstab` line.
//!
//! Options that belong to `mount(8)` or systemd (`defaults`, `nofail`,
//! `noauto`, `x-systemd.*`, `_netdev`, …) are accepted and ignored, as every
//! helper does; an option nobody knows is an error, so a typo in fstab is
//! reported instead of silently changing behaviour.

use std::fmt;

/// Options of one raidfs mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    /// Let users other than the mounting one access the filesystem (FUSE
    /// `allow_other`; requires root or `user_allow_other` in /etc/fuse.conf).
    pub allow_other: bool,
    /// Let the kernel check permissions from mode/uid/gid (recommended with
    /// `allow_other`).
    pub default_permissions: bool,
    /// Mount read-only: nothing is written to the members, not even the
    /// clean/dirty flag.
    pub read_only: bool,
    /// Number of threads serving FUSE requests.
    pub threads: usize,
    /// Assemble even a dirty and degraded array (like `mdadm --run --force`).
    pub force: bool,
    /// Stay in the foreground (`-f` on the command line, or `foreground`).
    pub foreground: bool,
    /// Extra candidate directories to search for members when SPEC is an
    /// array name or UUID (`members=/mnt/d1:/mnt/d2`).
    pub candidates: Vec<String>,
    /// Write the daemon's log to this file (`log=`) instead of the journal.
    pub log_file: Option<String>,
    /// Program run on member failures, rebuilds and repairs (`notify=`),
    /// as `PROGRAM EVENT ARRAY MEMBER`, like `mdadm --monitor --program`.
    pub notify_cmd: Option<String>,
    /// Prometheus textfile rewritten every 10 s and on every health event
    /// (`metrics=`), for node_exporter's textfile collector.
    pub metrics_file: Option<String>,
    /// Rate limit in MB/s for the rebuilds the array starts by itself
    /// (a spare taking over, a rebuild resumed at mount), so a Pi stays
    /// responsive while a disk is rebuilt (`rebuild_throttle=`); 0 or
    /// absent means as fast as the disks go.
    pub rebuild_throttle_mbps: u64,
    /// Re-add, in the background, a member that left the array and is
    /// listed again (its disk is back), when only the files changed since
    /// it left need rebuilding (`readd`); never a whole rebuild.
    pub readd: bool,
    /// When reads record the access time: `relatime` (default, as Linux),
    /// `strictatime`, `noatime`.
    pub atime: raid_array::AtimeMode,
    /// The kernel's read-ahead for the mount in KiB (`readahead=`, as in
    /// mergerfs); 0 leaves the kernel's 128 KiB.
    pub readahead_kib: u64,
    /// Memory in bytes for the array's own read-ahead windows (`cache=`,
    /// e.g. `cache=8M` on a small Pi); 0 turns them off.
    pub cache_bytes: u64,
    /// Seconds to wait for another process to let go of the members (a
    /// daemon still closing the array after `umount`) before refusing with
    /// EBUSY (`lock_wait=`).
    pub lock_wait_secs: u64,
    /// Seconds the kernel may cache names and attributes (`cache_timeout=`;
    /// 0 caches nothing).
    pub cache_timeout_secs: u64,
    /// Programs on the mount may not be executed (`noexec`; `exec` undoes
    /// it, as for any filesystem).
    pub noexec: bool,
    /// Symbolic links are not followed in path lookups (`nosymfollow`).
    pub nosymfollow: bool,
    /// Every namespace change is committed to the members before it
    /// returns (`sync` or `dirsync`), instead of by the periodic flusher.
    pub sync_metadata: bool,
    /// Every write is synced before it returns, as if opened `O_SYNC`
    /// (`sync`: the kernel's `MS_SYNCHRONOUS`).
    pub synchronous: bool,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            allow_other: false,
            default_permissions: false,
            read_only: false,
            threads: 4,
            force: false,
            foreground: false,
            candidates: Vec::new(),
            log_file: None,
            notify_cmd: None,
            metrics_file: None,
            rebuild_throttle_mbps: 0,
            readd: false,
            atime: raid_array::AtimeMode::Relatime,
            readahead_kib: crate::readahead::DEFAULT_KIB,
            cache_bytes: raid_array::data::readahead::DEFAULT_BUDGET,
            lock_wait_secs: raid_array::exclusive::DEFAULT_WAIT.as_secs(),
            cache_timeout_secs: crate::adapter::DEFAULT_CACHE_TIMEOUT.as_secs(),
            noexec: false,
            nosymfollow: false,
            sync_metadata: false,
            synchronous: false,
        }
    }
}

/// A bad `-o` option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionError(pub String);

impl fmt::Display for OptionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OptionError {}

/// Options handled by mount(8) or systemd, which a helper accepts without
/// effect, and the kernel's `suid` and `dev`: a raidfs mount is always
/// `nosuid,nodev`, as FUSE mounts are.
const IGNORED: &[&str] = &[
    "defaults",
    "auto",
    "noauto",
    "nofail",
    "user",
    "users",
    "nouser",
    "owner",
    "group",
    "_netdev",
    "suid",
    "nosuid",
    "dev",
    "nodev",
    "nodiratime",
    "diratime",
    "comment",
    "loud",
    "silent",
    "lazytime",
];

impl MountOptions {
    /// Parse a comma-separated option string, on top of `self`.
    pub fn parse_into(&mut self, opts: &str) -> Result<(), OptionError> {
        self.parse(opts, false)
    }

    /// [`MountOptions::parse_into`]; `sloppy` (`mount -s`) skips unknown
    /// options with a warning instead of refusing them.
    pub fn parse(&mut self, opts: &str, sloppy: bool) -> Result<(), OptionError> {
        for opt in split_options(opts) {
            let (key, value) = match opt.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (opt.as_str(), None),
            };
            let flag = |name: &str| -> Result<(), OptionError> {
                match value {
                    None => Ok(()),
                    Some(_) => Err(OptionError(format!("option {name} takes no value"))),
                }
            };
            let number = |name: &str| -> Result<u64, OptionError> {
                let v = value.ok_or_else(|| {
                    OptionError(format!("option {name} needs a value, e.g. {name}=4"))
                })?;
                v.parse::<u64>()
                    .map_err(|_| OptionError(format!("option {name}={v}: not a number")))
            };
            // A number no larger than `max` (of `unit`, named in the error).
            let at_most = |name: &str, max: u64, unit: &str| -> Result<u64, OptionError> {
                let n = number(name)?;
                if n > max {
                    return Err(OptionError(format!("{name}={n}: at most {max} ({unit})")));
                }
                Ok(n)
            };
            match key {
                "allow_other" => {
                    flag(key)?;
                    self.allow_other = true;
                }
                "default_permissions" => {
                    flag(key)?;
                    self.default_permissions = true;
                }
                "ro" => {
                    flag(key)?;
                    self.read_only = true;
                }
                "rw" => {
                    flag(key)?;
                    self.read_only = false;
                }
                "noexec" | "exec" => {
                    flag(key)?;
                    self.noexec = key == "noexec";
                }
                "nosymfollow" | "symfollow" => {
                    flag(key)?;
                    self.nosymfollow = key == "nosymfollow";
                }
                "sync" | "dirsync" => {
                    flag(key)?;
                    self.sync_metadata = true;
                    self.synchronous |= key == "sync";
                }
                // As for mount(8): `async` undoes `sync`, not `dirsync`.
                "async" => {
                    flag(key)?;
                    self.synchronous = false;
                }
                "remount" => {
                    return Err(OptionError(
                        "remount is not supported: unmount the array and mount it again \
                         with the new options"
                            .into(),
                    ));
                }
                "force" => {
                    flag(key)?;
                    self.force = true;
                }
                "readd" => {
                    flag(key)?;
                    self.readd = true;
                }
                "foreground" => {
                    flag(key)?;
                    self.foreground = true;
                }
                "threads" => {
                    let n = number(key)?;
                    if !(1..=64).contains(&n) {
                        return Err(OptionError(format!(
                            "threads={n}: must be between 1 and 64"
                        )));
                    }
                    self.threads = n as usize;
                }
                "members" => {
                    let v = value.ok_or_else(|| {
                        OptionError(
                            "option members needs a value, e.g. members=/mnt/d1:/mnt/d2".into(),
                        )
                    })?;
                    self.candidates
                        .extend(v.split(':').filter(|s| !s.is_empty()).map(str::to_string));
                }
                "log" => {
                    self.log_file = Some(
                        value
                            .ok_or_else(|| OptionError("option log needs a file name".into()))?
                            .to_string(),
                    );
                }
                "notify" => {
                    self.notify_cmd = Some(non_empty(key, value, "/usr/local/bin/raidfs-alert")?);
                }
                "metrics" => {
                    let v = non_empty(key, value, "/var/lib/prometheus/node-exporter/raidfs.prom")?;
                    if !v.ends_with(".prom") {
                        return Err(OptionError(format!(
                            "metrics={v}: node_exporter reads only files ending in .prom"
                        )));
                    }
                    self.metrics_file = Some(v);
                }
                // The default of mount(8) is relatime; `atime` asks for it.
                "relatime" | "atime" => {
                    flag(key)?;
                    self.atime = raid_array::AtimeMode::Relatime;
                }
                "strictatime" | "norelatime" => {
                    flag(key)?;
                    self.atime = raid_array::AtimeMode::Strict;
                }
                "noatime" => {
                    flag(key)?;
                    self.atime = raid_array::AtimeMode::NoAtime;
                }
                "rebuild_throttle" => {
                    self.rebuild_throttle_mbps = number(key)?;
                }
                "cache" => {
                    let v = value.ok_or_else(|| {
                        OptionError("option cache needs a size, e.g. cache=16M".into())
                    })?;
                    self.cache_bytes = parse_bytes(v).ok_or_else(|| {
                        OptionError(format!("cache={v}: not a size (e.g. 8M, 1G)"))
                    })?;
                }
                "lock_wait" => self.lock_wait_secs = at_most(key, 3600, "seconds")?,
                "cache_timeout" => {
                    self.cache_timeout_secs = at_most(key, 86400, "seconds, a day")?;
                }
                "readahead" => self.readahead_kib = at_most(key, 1 << 20, "KiB, 1 GiB")?,
                k if k.starts_with("x-") || IGNORED.contains(&k) => {}
                k if k == "fsname" || k == "subtype" || k == "uhelper" || k == "helper" => {}
                _ if sloppy => tracing::warn!(option = %opt, "unknown mount option skipped"),
                _ => return Err(OptionError(format!("unknown mount option {opt:?}"))),
            }
        }
        Ok(())
    }
}

/// A size with an optional binary suffix (`K`, `M`, `G`): `8M`, `1G`, `0`.
fn parse_bytes(v: &str) -> Option<u64> {
    let (num, shift) = match v.as_bytes().last()? {
        b'k' | b'K' => (&v[..v.len() - 1], 10),
        b'm' | b'M' => (&v[..v.len() - 1], 20),
        b'g' | b'G' => (&v[..v.len() - 1], 30),
        _ => (v, 0),
    };
    num.parse::<u64>().ok()?.checked_mul(1 << shift)
}

/// The value of a `key=value` option that needs a non-empty one.
fn non_empty(key: &str, value: Option<&str>, example: &str) -> Result<String, OptionError> {
    match value {
        Some(v) if !v.is_empty() => Ok(v.to_string()),
        _ => Err(OptionError(format!(
            "option {key} needs a value, e.g. {key}={example}"
        ))),
    }
}

/// Split on commas, honouring double quotes (systemd writes
/// `x-systemd.requires-mounts-for="/a b"`).
fn split_options(opts: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in opts.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            _ => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_and_ignores_generic_options() {
        let mut o = MountOptions::default();
        o.parse_into(
            "defaults,nofail,x-systemd.requires-mounts-for=/mnt/d1,allow_other,threads=8,ro",
        )
        .unwrap();
        assert!(o.allow_other && o.read_only);
        assert_eq!(o.threads, 8);
    }

    #[test]
    fn kernel_options_take_effect_and_the_last_one_wins() {
        let mut o = MountOptions::default();
        o.parse_into("ro,noexec,nosymfollow,dirsync").unwrap();
        assert!(o.read_only && o.noexec && o.nosymfollow && o.sync_metadata);
        assert!(!o.synchronous);
        o.parse_into("sync").unwrap();
        assert!(o.synchronous);
        o.parse_into("rw,exec,async,symfollow").unwrap();
        assert!(!o.read_only && !o.noexec && !o.synchronous && !o.nosymfollow);
        // `async` undoes `sync`, not `dirsync`.
        assert!(o.sync_metadata);
        o.parse("typo_option,noexec", true).unwrap();
        assert!(o.noexec);
        let e = o.parse_into("remount,ro").unwrap_err();
        assert!(e.0.contains("remount is not supported"), "{e}");
    }

    #[test]
    fn rejects_unknown_and_malformed_options() {
        let mut o = MountOptions::default();
        assert!(o.parse_into("alow_other").is_err());
        assert!(o.parse_into("threads=zero").is_err());
        assert!(o.parse_into("threads=0").is_err());
        assert!(o.parse_into("ro=1").is_err());
        assert!(o.parse_into("log").is_err());
    }

    #[test]
    fn quoted_values_keep_commas() {
        assert_eq!(
            split_options(r#"a,x-systemd.requires-mounts-for="/m/a,b",c"#),
            vec!["a", "x-systemd.requires-mounts-for=/m/a,b", "c"]
        );
    }

    #[test]
    fn atime_options_choose_the_mode() {
        use raid_array::AtimeMode;
        let mut o = MountOptions::default();
        assert_eq!(o.atime, AtimeMode::Relatime);
        o.parse_into("noatime").unwrap();
        assert_eq!(o.atime, AtimeMode::NoAtime);
        o.parse_into("strictatime").unwrap();
        assert_eq!(o.atime, AtimeMode::Strict);
        o.parse_into("relatime,nodiratime").unwrap();
        assert_eq!(o.atime, AtimeMode::Relatime);
        assert!(o.parse_into("noatime=1").is_err());
    }

    #[test]
    fn readahead_is_kib_with_a_default_and_a_bound() {
        let mut o = MountOptions::default();
        assert_eq!(o.readahead_kib, crate::readahead::DEFAULT_KIB);
        o.parse_into("readahead=0").unwrap();
        assert_eq!(o.readahead_kib, 0);
        o.parse_into("readahead=1024").unwrap();
        assert_eq!(o.readahead_kib, 1024);
        assert!(o.parse_into("readahead").is_err());
        assert!(o.parse_into("readahead=4M").is_err());
        assert!(o.parse_into("readahead=2000000").is_err());
    }

    /// Option `key` is a plain number of seconds: `default` unless given,
    /// `set` and 0 accepted, no value, a unit suffix and `too_big` refused.
    fn seconds_option(
        key: &str,
        get: fn(&MountOptions) -> u64,
        default: u64,
        set: u64,
        too_big: u64,
    ) {
        let mut o = MountOptions::default();
        assert_eq!(get(&o), default);
        o.parse_into(&format!("{key}={set}")).unwrap();
        assert_eq!(get(&o), set);
        o.parse_into(&format!("{key}=0")).unwrap();
        assert_eq!(get(&o), 0);
        assert!(o.parse_into(key).is_err());
        assert!(o.parse_into(&format!("{key}=1m")).is_err());
        assert!(o.parse_into(&format!("{key}=1h")).is_err());
        assert!(o.parse_into(&format!("{key}={too_big}")).is_err());
    }

    #[test]
    fn lock_wait_is_seconds() {
        seconds_option("lock_wait", |o| o.lock_wait_secs, 20, 120, 86400);
    }

    #[test]
    fn cache_timeout_is_seconds() {
        seconds_option("cache_timeout", |o| o.cache_timeout_secs, 3600, 1, 86401);
    }

    #[test]
    fn cache_is_a_size_with_suffixes() {
        let mut o = MountOptions::default();
        assert_eq!(o.cache_bytes, 56 << 20);
        o.parse_into("cache=8M").unwrap();
        assert_eq!(o.cache_bytes, 8 << 20);
        o.parse_into("cache=1g").unwrap();
        assert_eq!(o.cache_bytes, 1 << 30);
        o.parse_into("cache=0").unwrap();
        assert_eq!(o.cache_bytes, 0);
        for bad in [
            "cache",
            "cache=",
            "cache=M",
            "cache=1T",
            "cache=-1",
            "cache=99999999999G",
        ] {
            assert!(o.parse_into(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn readd_is_a_flag_and_off_by_default() {
        let mut o = MountOptions::default();
        assert!(!o.readd);
        o.parse_into("readd").unwrap();
        assert!(o.readd);
        assert!(o.parse_into("readd=1").is_err());
    }

    #[test]
    fn rebuild_throttle_is_a_number_of_mb_per_second() {
        let mut o = MountOptions::default();
        o.parse_into("rebuild_throttle=20").unwrap();
        assert_eq!(o.rebuild_throttle_mbps, 20);
        assert!(o.parse_into("rebuild_throttle").is_err());
        assert!(o.parse_into("rebuild_throttle=fast").is_err());
    }

    #[test]
    fn notify_and_metrics_take_paths() {
        let mut o = MountOptions::default();
        o.parse_into(r#"notify="/usr/local/bin/alert",metrics=/var/lib/node/raidfs.prom"#)
            .unwrap();
        assert_eq!(o.notify_cmd.as_deref(), Some("/usr/local/bin/alert"));
        assert_eq!(o.metrics_file.as_deref(), Some("/var/lib/node/raidfs.prom"));
        assert!(o.parse_into("notify").is_err());
        assert!(o.parse_into("notify=").is_err());
        assert!(o.parse_into("metrics=/tmp/raidfs.txt").is_err());
    }

    #[test]
    fn members_accumulate() {
        let mut o = MountOptions::default();
        o.parse_into("members=/a:/b,members=/c").unwrap();
        assert_eq!(o.candidates, vec!["/a", "/b", "/c"]);
    }
}
