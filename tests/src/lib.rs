//! Shared harness for the end-to-end tests: arrays on real member
//! directories (or small ext4 images on loop devices), mounted through FUSE
//! by the real `mount-raidfs` binary running in the foreground as a child of
//! the test, so the test owns its PID. Everything is torn down on drop, even
//! when the test panics.
//!
//! These tests need root and `/dev/fuse`; without them they fail with a
//! message saying so instead of passing silently.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// How long a mount or unmount may take before the test gives up.
const MOUNT_WAIT: Duration = Duration::from_secs(30);

/// A name no other array of this test run has: arrays are found by name
/// (`raidfs status NAME`, `mount.raidfs NAME DIR`), and the tests of one
/// binary run in parallel.
pub fn unique_name() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "e2e{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The binaries under test, built by the same cargo run.
pub struct Bins {
    pub mount: PathBuf,
    pub raidfs: PathBuf,
    pub sync: PathBuf,
}

/// Where `mount-raidfs` and `raidfs` are: next to the test executable's
/// `deps/` directory. Panics (never skips) when they are missing.
pub fn bins() -> &'static Bins {
    static BINS: OnceLock<Bins> = OnceLock::new();
    BINS.get_or_init(|| {
        let exe = std::env::current_exe().expect("current_exe");
        let dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test executable lives in <target>/<profile>/deps")
            .to_path_buf();
        let mount = dir.join("mount-raidfs");
        let raidfs = dir.join("raidfs");
        let sync = dir.join("raidfs-sync");
        for b in [&mount, &raidfs, &sync] {
            assert!(
                b.is_file(),
                "{} is missing: run `cargo build --workspace --bins` (same target dir and profile) before these tests",
                b.display()
            );
        }
        Bins {
            mount,
            raidfs,
            sync,
        }
    })
}

/// Fails the test unless it can mount FUSE filesystems.
pub fn require_root_and_fuse() {
    assert_eq!(
        rustix::process::geteuid().as_raw(),
        0,
        "the end-to-end tests mount filesystems and must run as root"
    );
    assert!(
        Path::new("/dev/fuse").exists(),
        "/dev/fuse is missing: install fuse3 and `modprobe fuse`"
    );
}

/// Is `path` (canonical) a mount point of this process's namespace?
pub fn is_mounted(path: &Path) -> bool {
    mount_entry(path).is_some()
}

/// The filesystem type and source of the last mount on `path`, from
/// `/proc/self/mountinfo` (what `findmnt` and `df -T` show).
pub fn mount_entry(path: &Path) -> Option<(String, String)> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = path.as_os_str().as_bytes();
    info.lines().rev().find_map(|l| {
        let mut fields = l.split(' ');
        if fields
            .nth(4)
            .is_none_or(|mp| unescape_mountinfo(mp).as_slice() != want)
        {
            return None;
        }
        let mut rest = fields.skip_while(|f| *f != "-").skip(1);
        Some((rest.next()?.to_string(), rest.next()?.to_string()))
    })
}

fn unescape_mountinfo(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Run a command, returning its output (never panics on a non-zero exit).
pub fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Run a command and panic with its stderr unless it succeeds.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// What members sit on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backing {
    /// Plain directories in the test's temporary directory (one filesystem).
    Dirs,
    /// One ext4 image of this many MiB per member, on a loop device.
    Loop { mib: u64 },
}

/// How to build a [`TestArray`].
#[derive(Debug, Clone)]
pub struct Builder {
    level: String,
    members: usize,
    chunk: String,
    backing: Backing,
    options: Vec<String>,
}

impl Builder {
    pub fn chunk(mut self, c: &str) -> Self {
        self.chunk = c.to_string();
        self
    }
    pub fn backing(mut self, b: Backing) -> Self {
        self.backing = b;
        self
    }
    /// Add a `-o` mount option.
    pub fn option(mut self, o: &str) -> Self {
        self.options.push(o.to_string());
        self
    }
    /// Create the members and the array, and mount it.
    pub fn mount(self) -> TestArray {
        let mut a = self.create();
        a.mount();
        a
    }
    /// Create the members and the array without mounting.
    pub fn create(self) -> TestArray {
        require_root_and_fuse();
        let b = bins();
        let tmp = tempfile::Builder::new()
            .prefix("raidfs-e2e-")
            .tempdir()
            .expect("tempdir");
        // Reachable by the unprivileged user of the permission tests.
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).expect("chmod tmp");
        let root = tmp.path().canonicalize().expect("canonical tmp");
        let mut a = TestArray {
            name: unique_name(),
            root: root.clone(),
            members: Vec::new(),
            mnt: root.join("mnt"),
            child: None,
            log: root.join("mount.log"),
            loops: Vec::new(),
            options: self.options.clone(),
            _tmp: tmp,
        };
        fs::create_dir(&a.mnt).expect("mkdir mnt");
        for i in 0..self.members {
            let member = match self.backing {
                Backing::Dirs => {
                    let d = root.join(format!("d{i}"));
                    fs::create_dir(&d).expect("mkdir member");
                    d
                }
                Backing::Loop { mib } => a.add_loop_member(i, mib),
            };
            a.members.push(member);
        }
        let mut cmd = Command::new(&b.raidfs);
        cmd.args(["create", "--level", &self.level, "--name"])
            .arg(&a.name)
            .args(["--chunk", &self.chunk, "--allow-same-fs"])
            .args(&a.members);
        run_ok(&mut cmd);
        a
    }
}

/// One array under test: members, a mount point, the daemon.
pub struct TestArray {
    /// The array's name, unique among the arrays of this test run.
    pub name: String,
    /// Canonical temporary directory holding everything of this array.
    pub root: PathBuf,
    pub members: Vec<PathBuf>,
    pub mnt: PathBuf,
    child: Option<Child>,
    log: PathBuf,
    /// (loop device, where its filesystem is mounted)
    loops: Vec<(String, PathBuf)>,
    options: Vec<String>,
    _tmp: tempfile::TempDir,
}

impl TestArray {
    /// An array of `members` members at `level` (e.g. "raid5"), 64K chunks,
    /// plain directories.
    pub fn builder(level: &str, members: usize) -> Builder {
        Builder {
            level: level.to_string(),
            members,
            chunk: "64K".into(),
            backing: Backing::Dirs,
            options: Vec::new(),
        }
    }

    /// RAID-5 on four directories, mounted: the common case.
    pub fn raid5() -> TestArray {
        TestArray::builder("raid5", 4).mount()
    }

    fn add_loop_member(&mut self, i: usize, mib: u64) -> PathBuf {
        let img = self.root.join(format!("disk{i}.img"));
        run_ok(
            Command::new("truncate")
                .arg("-s")
                .arg(format!("{mib}M"))
                .arg(&img),
        );
        run_ok(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&img));
        let out = run_ok(Command::new("losetup").args(["--find", "--show"]).arg(&img));
        let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let at = self.root.join(format!("fs{i}"));
        fs::create_dir(&at).expect("mkdir fs");
        // Registered before mounting so drop detaches it even if mount fails.
        self.loops.push((dev.clone(), at.clone()));
        run_ok(Command::new("mount").arg(&dev).arg(&at));
        let member = at.join("member");
        fs::create_dir(&member).expect("mkdir member");
        member
    }

    /// The SPEC string: members joined with ':'.
    pub fn spec(&self) -> String {
        self.members
            .iter()
            .map(|m| m.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    }

    /// A path inside the mounted filesystem.
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.mnt.join(rel)
    }

    /// Where the loop-backed filesystem of member `i` is mounted.
    pub fn member_fs(&self, i: usize) -> &Path {
        &self.loops[i].1
    }

    /// Member `i`'s disk back after it was yanked: its image on a new loop
    /// device (the old one still belongs to the dead filesystem), mounted
    /// where it was, as a disk plugged in again is.
    pub fn replug(&mut self, i: usize) {
        let img = self.root.join(format!("disk{i}.img"));
        let out = run_ok(Command::new("losetup").args(["--find", "--show"]).arg(&img));
        let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let at = self.loops[i].1.clone();
        self.loops.push((dev.clone(), at.clone()));
        run_ok(Command::new("mount").arg(&dev).arg(&at));
    }

    /// The daemon's PID while mounted.
    pub fn daemon_pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Mount in the foreground as a child; returns once the kernel shows the
    /// mount. Panics with the daemon's log if it exits first.
    pub fn mount(&mut self) {
        assert!(self.child.is_none(), "already mounted");
        let log = fs::File::create(&self.log).expect("log file");
        let mut cmd = Command::new(&bins().mount);
        cmd.arg(self.spec()).arg(&self.mnt).arg("--foreground");
        if !self.options.is_empty() {
            cmd.arg("-o").arg(self.options.join(","));
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .env("RUST_LOG", "warn");
        let mut child = cmd.spawn().expect("spawn mount-raidfs");
        let start = Instant::now();
        while !is_mounted(&self.mnt) {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "mount-raidfs exited ({status}) before mounting:\n{}",
                    self.log_text()
                );
            }
            if start.elapsed() > MOUNT_WAIT {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "mount did not appear within {MOUNT_WAIT:?}:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // The control socket opens just after the kernel accepted the
        // mount: wait for its record so admin commands find the array.
        while !self.has_control_record(child.id()) {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("mount-raidfs exited ({status}):\n{}", self.log_text());
            }
            if start.elapsed() > MOUNT_WAIT {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the control socket's record did not appear within {MOUNT_WAIT:?}:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
    }

    /// Whether the daemon `pid` has written the record of this array in the
    /// run directory (`$RAIDFS_RUN_DIR`, default /run/raidfs).
    fn has_control_record(&self, pid: u32) -> bool {
        let dir = std::env::var_os("RAIDFS_RUN_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/run/raidfs"));
        let Ok(rd) = fs::read_dir(dir) else {
            return false;
        };
        rd.flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| fs::read(e.path()).ok())
            .filter_map(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .any(|v| v["name"] == self.name.as_str() && v["pid"] == pid)
    }

    /// Replace the `-o` options used by the next [`TestArray::mount`].
    pub fn set_options(&mut self, opts: &[&str]) {
        self.options = opts.iter().map(|o| o.to_string()).collect();
    }

    /// The daemon's log so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Unmount with `umount` and wait for the daemon to exit successfully
    /// (the array closed clean).
    pub fn unmount(&mut self) {
        let child = self.child.take().expect("not mounted");
        let start = Instant::now();
        loop {
            let out = run(Command::new("umount").arg(&self.mnt));
            if out.status.success() {
                break;
            }
            // Busy right after a close: the kernel may still hold a
            // reference for a moment.
            assert!(
                start.elapsed() < MOUNT_WAIT,
                "umount {} failed: {}",
                self.mnt.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        self.expect_clean_exit(child, "after umount");
    }

    /// Wait for the daemon to exit 0 (`when`: what ended it).
    fn expect_clean_exit(&self, child: Child, when: &str) {
        let status = self.wait_for_exit(child, when);
        assert!(
            status.success(),
            "daemon exited with {status} {when}:\n{}",
            self.log_text()
        );
    }

    /// Stop the daemon with SIGTERM (as systemd stops a mount unit): it
    /// must unmount, close the array and exit 0.
    pub fn terminate(&mut self) {
        let child = self.child.take().expect("not mounted");
        run_ok(
            Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string()),
        );
        self.expect_clean_exit(child, "on SIGTERM");
        assert!(!is_mounted(&self.mnt), "still mounted after SIGTERM");
    }

    /// Wait for the daemon to exit by itself (whatever its status).
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let child = self.child.take().expect("not mounted");
        self.wait_for_exit(child, "by itself")
    }

    /// Wait for `child` to exit (`when`: what should end it); killed, and
    /// the test failed, if it does not within [`MOUNT_WAIT`].
    fn wait_for_exit(&self, mut child: Child, when: &str) -> std::process::ExitStatus {
        wait_timeout(&mut child, MOUNT_WAIT).unwrap_or_else(|| {
            let _ = child.kill();
            let _ = child.wait();
            panic!("daemon did not exit {when}:\n{}", self.log_text())
        })
    }

    /// Unmount and mount again.
    pub fn remount(&mut self) {
        self.unmount();
        self.mount();
    }

    /// SIGKILL the daemon and detach its dead mount, as an admin would after
    /// a crash (`umount -l`, then `fusermount3 -u` if still there).
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("not mounted");
        let _ = child.kill();
        let _ = child.wait();
        self.detach_dead_mount();
    }

    fn detach_dead_mount(&self) {
        let start = Instant::now();
        while is_mounted(&self.mnt) {
            let _ = run(Command::new("umount").arg("-l").arg(&self.mnt));
            if !is_mounted(&self.mnt) {
                break;
            }
            let _ = run(Command::new("fusermount3")
                .arg("-u")
                .arg("-z")
                .arg(&self.mnt));
            if start.elapsed() > MOUNT_WAIT {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A new empty directory `rel` in this array's temporary directory
    /// (for a replacement member or a spare).
    pub fn new_dir(&self, rel: &str) -> PathBuf {
        let d = self.root.join(rel);
        fs::create_dir(&d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
        d
    }

    /// `raidfs ARGS…` (not yet run).
    pub fn raidfs(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&bins().raidfs);
        c.args(args);
        c
    }

    /// `raidfs status NAME --json`: from the daemon while mounted.
    pub fn live_status_json(&self) -> serde_json::Value {
        let out = run_ok(&mut self.raidfs(&["status", &self.name, "--json"]));
        serde_json::from_slice(&out.stdout).expect("status --json is JSON")
    }

    /// `raidfs status --json` of the members (offline; live while mounted).
    pub fn status_json(&self) -> serde_json::Value {
        let out = run_ok(
            Command::new(&bins().raidfs)
                .arg("status")
                .args(&self.members)
                .arg("--json"),
        );
        serde_json::from_slice(&out.stdout).expect("status --json is JSON")
    }
}

fn wait_timeout(child: &mut Child, t: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if start.elapsed() > t {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for TestArray {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = run(Command::new("umount").arg(&self.mnt));
            if wait_timeout(&mut child, Duration::from_secs(10)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        self.detach_dead_mount();
        for (dev, at) in self.loops.drain(..).rev() {
            if is_mounted(at.as_path()) {
                let out = run(Command::new("umount").arg(&at));
                if !out.status.success() {
                    let _ = run(Command::new("umount").arg("-l").arg(&at));
                }
            }
            let _ = run(Command::new("losetup").arg("-d").arg(&dev));
        }
    }
}

/// Deterministic pseudo-random bytes (xorshift), so data is checkable
/// without storing it.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// SHA-256 of a file's content.
pub fn hash_file(p: &Path) -> std::io::Result<[u8; 32]> {
    let mut f = fs::File::open(p)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}

pub fn hash_bytes(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// What a tree entry is, for comparing trees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    File { size: u64, hash: [u8; 32] },
    Dir,
    Symlink(PathBuf),
}

/// Every entry under `root` (relative path → node), following no symlink.
pub fn tree(root: &Path) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Node>) {
    let rd = fs::read_dir(dir).unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()));
    for e in rd {
        let e = e.expect("dir entry");
        let p = e.path();
        let rel = p.strip_prefix(root).expect("under root").to_path_buf();
        let md = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
        let ft = md.file_type();
        if ft.is_symlink() {
            out.insert(rel, Node::Symlink(fs::read_link(&p).expect("readlink")));
        } else if ft.is_dir() {
            out.insert(rel, Node::Dir);
            walk(root, &p, out);
        } else {
            let hash = hash_file(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
            out.insert(
                rel,
                Node::File {
                    size: md.size(),
                    hash,
                },
            );
        }
    }
}

/// Assert two trees are equal, naming the first differences.
pub fn assert_same_tree(expected: &BTreeMap<PathBuf, Node>, got: &BTreeMap<PathBuf, Node>) {
    if expected == got {
        return;
    }
    let mut diffs = Vec::new();
    for (k, v) in expected {
        match got.get(k) {
            None => diffs.push(format!("missing: {}", k.display())),
            Some(g) if g != v => diffs.push(format!("differs: {} ({v:?} vs {g:?})", k.display())),
            _ => {}
        }
    }
    for k in got.keys() {
        if !expected.contains_key(k) {
            diffs.push(format!("extra: {}", k.display()));
        }
    }
    let n = diffs.len();
    diffs.truncate(20);
    panic!("trees differ in {n} entries:\n{}", diffs.join("\n"));
}

/// A deterministic mixed tree: `files` files from 0 B to `max_size` (most
/// small, a few large), in nested directories, plus some symlinks.
pub fn make_tree(root: &Path, files: usize, max_size: usize) {
    fs::create_dir_all(root).expect("mkdir tree");
    for i in 0..files {
        let dir = root.join(format!("d{}/s{}", i % 13, i % 7));
        fs::create_dir_all(&dir).expect("mkdir");
        let size = match i % 100 {
            _ if i % 400 == 0 => max_size,
            1 => max_size / 5 + i,
            4..=10 => 65536 + i * 7,
            21..=25 => 0,
            _ => (i * 131) % 9000,
        };
        fs::write(dir.join(format!("f{i}.bin")), pattern(i as u64, size)).expect("write");
        if i % 250 == 0 {
            std::os::unix::fs::symlink(format!("f{i}.bin"), dir.join(format!("l{i}")))
                .expect("symlink");
        }
    }
}

/// Snapshot of a directory tree including names, sizes, modes and content
/// hashes: used to prove that a failed command wrote nothing.
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, (u32, u64, Option<[u8; 32]>)> {
    let mut out = BTreeMap::new();
    snap(root, root, &mut out);
    out
}

fn snap(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, (u32, u64, Option<[u8; 32]>)>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(md) = fs::symlink_metadata(&p) else {
            continue;
        };
        let rel = p.strip_prefix(root).unwrap_or(&p).to_path_buf();
        let hash = if md.is_file() {
            hash_file(&p).ok()
        } else {
            None
        };
        out.insert(rel, (md.mode(), md.size(), hash));
        if md.is_dir() {
            snap(root, &p, out);
        }
    }
}

/// Names in a directory.
pub fn names(dir: &Path) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| e.expect("entry").file_name().as_bytes().to_vec())
        .collect();
    v.sort();
    v
}

/// OsStr from bytes.
pub fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}
