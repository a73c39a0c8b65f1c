//! What must never empty or corrupt the mirror: an unmounted or empty
//! source, a subtree that cannot be read, a path changing kind, an inode
//! reused by other content; and a restore from a crafted bucket that would
//! write through symlinks.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_source_is_refused_unless_allowed() {
    let m = moto();
    let b = bucket_name("empty-src");
    let c = client(&m.endpoint);
    let src = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let root = src.path();
    let st = state.path().join("s.json");
    write(root, "a.txt", b"a");
    write(root, "d/b.txt", b"b");
    let o = once(&m.endpoint, &b, &st, root, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let before = keys(&c, &b).await;
    assert!(before.contains(&"d/b.txt".to_string()), "{before:?}");

    std::fs::remove_file(root.join("a.txt")).unwrap();
    std::fs::remove_dir_all(root.join("d")).unwrap();
    let o = once(&m.endpoint, &b, &st, root, &[]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("is empty") && err.contains("--allow-empty-source"),
        "{err}"
    );
    assert_eq!(keys(&c, &b).await, before, "nothing deleted");

    // A lost state over an empty source: the bucket's objects count too.
    let o = once(&m.endpoint, &b, &state.path().join("new.json"), root, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(keys(&c, &b).await, before, "nothing deleted");

    let o = once(&m.endpoint, &b, &st, root, &["--allow-empty-source"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(json(&o)["deleted"].as_u64().unwrap() >= 2);
    assert_eq!(keys(&c, &b).await, [".raidfs-sync/dirs.json"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_was_a_mount_point_and_is_not_is_refused() {
    let m = moto();
    let b = bucket_name("was-mount");
    let c = client(&m.endpoint);
    let src = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let root = src.path();
    let st = state.path().join("s.json");
    write(root, "a.txt", b"a");
    let o = once(&m.endpoint, &b, &st, root, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(state_json(&st)["source_mount_root"], false);
    let before = keys(&c, &b).await;

    // As if the source had been a mount point at the last pass.
    let mut s = state_json(&st);
    s["source_mount_root"] = true.into();
    std::fs::write(&st, serde_json::to_vec(&s).unwrap()).unwrap();
    write(root, "new.txt", b"n");
    let o = once(&m.endpoint, &b, &st, root, &[]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&root.display().to_string()) && err.contains("is the array mounted?"),
        "{err}"
    );
    assert_eq!(keys(&c, &b).await, before, "nothing synced");
}

/// Unmounts a tmpfs when dropped.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn mount_tmpfs(at: &Path) -> Option<Mounted> {
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "raidfs-sync-test"])
        .arg(at)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then(|| Mounted(at.to_path_buf()))
}

/// `base/array`, made and with a tmpfs mounted on it as the array.
fn mounted_array(base: &Path) -> (PathBuf, Mounted) {
    let root = base.join("array");
    std::fs::create_dir(&root).unwrap();
    let mounted = mount_tmpfs(&root)
        .expect("this test mounts a tmpfs as the array: it needs root (make test runs as root)");
    (root, mounted)
}

/// The daemon syncing `root` with state `st` (100 ms debounce), its log in
/// `log`.
fn daemon_on(m: &Moto, b: &str, st: &Path, root: &Path, log: &Path, extra: &[&str]) -> Daemon {
    let mut k = cmd(&m.endpoint, b);
    k.args(extra)
        .args(["--debounce", "100ms", "--state"])
        .arg(st)
        .arg(root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    Daemon(k.spawn().unwrap())
}

/// For [`wait_for`]: whether the log at `log` says `what` yet.
fn logged(log: &Path, what: &'static str) -> impl FnMut() -> std::future::Ready<bool> {
    let log = log.to_path_buf();
    move || {
        std::future::ready(
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains(what),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmounted_array_is_waited_for_and_synced_once_mounted() {
    let m = moto();
    let b = bucket_name("unmounted");
    let c = client(&m.endpoint);
    let base = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let (root, mounted) = mounted_array(base.path());
    let st = state.path().join("s.json");
    write(&root, "a.txt", b"a");
    write(&root, "d/b.txt", b"b");
    let o = once(&m.endpoint, &b, &st, &root, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(state_json(&st)["source_mount_root"], true);
    let before = keys(&c, &b).await;
    drop(mounted);

    // Not mounted: a pass is refused, the bucket untouched.
    let o = once(&m.endpoint, &b, &st, &root, &[]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("is the array mounted?"), "{err}");
    assert_eq!(keys(&c, &b).await, before);

    // The daemon waits for it.
    let log = state.path().join("daemon.log");
    let daemon = daemon_on(m, &b, &st, &root, &log, &[]);
    wait_for(
        "the daemon to wait for the mount",
        Duration::from_secs(20),
        logged(&log, "waiting for the source to be mounted"),
    )
    .await;
    // A file in the bare mount-point directory is not synced meanwhile.
    write(&root, "underneath.txt", b"u");
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(keys(&c, &b).await, before, "nothing synced while unmounted");
    let waits = std::fs::read_to_string(&log)
        .unwrap()
        .matches("waiting for the source to be mounted")
        .count();
    assert_eq!(waits, 1, "warned once");

    // Mounted again (a fresh tmpfs: the array with one more file).
    let Some(_mounted) = mount_tmpfs(&root) else {
        panic!("mounting the tmpfs again failed");
    };
    write(&root, "a.txt", b"a");
    write(&root, "d/b.txt", b"b");
    write(&root, "new.txt", b"new");
    wait_for(
        "new.txt from the mounted array",
        Duration::from_secs(30),
        || exists(&c, &b, "new.txt"),
    )
    .await;
    // The watch follows the mounted filesystem, not the directory under it.
    write(&root, "later.txt", b"later");
    wait_for(
        "later.txt, seen by the new watch",
        Duration::from_secs(20),
        || exists(&c, &b, "later.txt"),
    )
    .await;
    drop(daemon);
    let now = keys(&c, &b).await;
    for k in &before {
        assert!(now.contains(k), "{k} kept: {now:?}");
    }
    assert!(!now.contains(&"underneath.txt".to_string()), "{now:?}");
}

/// The daemon watches a mounted array that is unmounted and mounted again.
/// The new mount can have the device and inode of the old one (a tmpfs or
/// FUSE remount often has), while the watch died with the unmount: once
/// back from waiting, the daemon watches anew and scans the whole tree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_array_mounted_again_is_watched_anew() {
    let m = moto();
    let b = bucket_name("remounted");
    let c = client(&m.endpoint);
    let base = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let (root, mounted) = mounted_array(base.path());
    let st = state.path().join("s.json");
    let id = |p: &Path| {
        let md = std::fs::metadata(p).unwrap();
        (md.dev(), md.ino())
    };
    let first = id(&root);
    write(&root, "a.txt", b"a");
    let log = state.path().join("daemon.log");
    let daemon = daemon_on(m, &b, &st, &root, &log, &["--create-bucket"]);
    wait_for("the first pass", Duration::from_secs(40), || {
        exists(&c, &b, "a.txt")
    })
    .await;

    let unmounted = Command::new("umount").arg(&root).status().unwrap();
    assert!(unmounted.success(), "umount {}", root.display());
    std::mem::forget(mounted);
    wait_for(
        "the daemon to wait for the mount",
        Duration::from_secs(20),
        logged(&log, "waiting for the source to be mounted"),
    )
    .await;
    let Some(_mounted) = mount_tmpfs(&root) else {
        panic!("mounting the tmpfs again failed");
    };
    if id(&root) != first {
        eprintln!(
            "note: the tmpfs came back with another device or inode ({:?}, was {first:?}): \
             this run does not show the reused identity",
            id(&root)
        );
    }
    // Written before the daemon looks again (every 5 s): only a scan of the
    // whole tree finds them.
    write(&root, "a.txt", b"a");
    write(&root, "back.txt", b"back");
    wait_for(
        "back.txt, found by a scan of the mounted array",
        Duration::from_secs(30),
        || exists(&c, &b, "back.txt"),
    )
    .await;
    write(&root, "later.txt", b"later");
    wait_for(
        "later.txt, seen by the new watch",
        Duration::from_secs(20),
        || exists(&c, &b, "later.txt"),
    )
    .await;
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_that_cannot_be_read_keeps_its_objects() {
    let m = moto();
    let b = bucket_name("unreadable");
    let c = client(&m.endpoint);
    let src = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let run_dir = tempfile::tempdir().unwrap();
    for d in [src.path(), state.path(), run_dir.path()] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let root = src.path();
    let st = state.path().join("s.json");
    write(root, "top.txt", b"t");
    write(root, "d/x.txt", b"x");
    write(root, "d/sub/y.txt", b"y");
    // Root reads every directory: the passes run as nobody then, from a
    // copy of the binary that nobody can reach (the checkout may be under
    // a directory closed to others, such as /root).
    let as_root = is_root();
    let bin = run_dir.path().join("raidfs-sync");
    std::fs::copy(env!("CARGO_BIN_EXE_raidfs-sync"), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let pass = |extra: &[&str]| {
        let mut k = cmd_of(&bin, &m.endpoint, &b);
        k.env("RAIDFS_RUN_DIR", run_dir.path())
            .args(["--once", "--json", "--create-bucket", "--state"])
            .arg(&st)
            .args(extra)
            .arg(root);
        if as_root {
            k.uid(65534).gid(65534);
        }
        run(k)
    };
    let o = pass(&[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let before = keys(&c, &b).await;
    assert!(before.contains(&"d/sub/y.txt".to_string()), "{before:?}");

    std::fs::set_permissions(root.join("d"), std::fs::Permissions::from_mode(0o000)).unwrap();
    for extra in [&[][..], &["--full"][..]] {
        let o = pass(extra);
        assert!(o.status.success(), "{extra:?}: {}", stderr(&o));
        let j = json(&o);
        assert_eq!(j["deleted"], 0, "{extra:?}: {j}");
        assert!(!j["skipped"].as_array().unwrap().is_empty(), "{j}");
        assert_eq!(keys(&c, &b).await, before, "{extra:?}");
        assert!(
            state_json(&st)["entries"].get("d/sub/y.txt").is_some(),
            "kept in the state"
        );
    }
    std::fs::set_permissions(root.join("d"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = pass(&[]);
    let j = json(&o);
    assert_eq!(j["uploaded"], 0, "{j}");
    assert_eq!(j["deleted"], 0, "{j}");
}

/// Whether this process runs as root (read from /proc, no libc needed).
fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

async fn mode_of(c: &aws_sdk_s3::Client, b: &str, key: &str) -> u32 {
    let h = c.head_object().bucket(b).key(key).send().await.unwrap();
    h.metadata().unwrap()["mode"].parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_changing_kind_keeps_its_new_object_and_entry() {
    let m = moto();
    let b = bucket_name("kind");
    let c = client(&m.endpoint);
    let src = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let root = src.path();
    let st = state.path().join("s.json");
    write(root, "f2l", b"a file first");
    std::os::unix::fs::symlink("target-one", root.join("l2f")).unwrap();
    write(root, "f2d", b"a file first");
    write(root, "d2f/inside", b"in a directory first");
    write(root, "keep", b"k");
    let o = once(&m.endpoint, &b, &st, root, &[]);
    assert!(o.status.success(), "{}", stderr(&o));

    std::fs::remove_file(root.join("f2l")).unwrap();
    std::os::unix::fs::symlink("keep", root.join("f2l")).unwrap();
    std::fs::remove_file(root.join("l2f")).unwrap();
    write(root, "l2f", b"now a file");
    std::fs::remove_file(root.join("f2d")).unwrap();
    write(root, "f2d/child", b"now a directory");
    std::fs::remove_dir_all(root.join("d2f")).unwrap();
    write(root, "d2f", b"now a file");
    let o = once(&m.endpoint, &b, &st, root, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ks = keys(&c, &b).await;
    for k in ["f2l", "l2f", "f2d/child", "d2f", "keep"] {
        assert!(ks.contains(&k.to_string()), "{k} in {ks:?}");
    }
    assert!(!ks.contains(&"f2d".to_string()), "{ks:?}");
    assert!(!ks.contains(&"d2f/inside".to_string()), "{ks:?}");
    assert_eq!(get(&c, &b, "f2l").await, b"keep");
    assert_eq!(mode_of(&c, &b, "f2l").await & 0o170000, 0o120000);
    assert_eq!(get(&c, &b, "l2f").await, b"now a file");
    assert_eq!(mode_of(&c, &b, "l2f").await & 0o170000, 0o100000);
    assert_eq!(get(&c, &b, "d2f").await, b"now a file");

    // The state holds the new kinds: nothing left to do.
    let o = once(&m.endpoint, &b, &st, root, &[]);
    let j = json(&o);
    assert_eq!(j["uploaded"], 0, "{j}");
    assert_eq!(j["deleted"], 0, "{j}");
    assert_eq!(j["unchanged"], j["scanned"], "{j}");
    // And the bucket agrees.
    let o = once(&m.endpoint, &b, &st, root, &["--full"]);
    let j = json(&o);
    assert_eq!(j["uploaded"], 0, "{j}");
    assert_eq!(j["deleted"], 0, "{j}");
}

/// A full reconcile scans the tree before it lists the bucket. A file
/// created after the scan and sent by another process (the daemon beside
/// an admin's `--once` with another state file) before the listing is
/// listed with no entry in the scan: it is there, so it is not deleted.
/// The listing is held (its connection accepted, not forwarded) while the
/// file is created and sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_created_after_the_scan_of_a_full_reconcile_is_not_deleted() {
    let m = moto();
    let b = bucket_name("late-file");
    let c = client(&m.endpoint);
    let src = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let root = src.path().to_path_buf();
    let st = state.path().join("s.json");
    write(&root, "a.txt", b"a");
    write(&root, "gone.txt", b"gone");
    let o = once(&m.endpoint, &b, &st, &root, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::remove_file(root.join("gone.txt")).unwrap();

    // With a current state and no --create-bucket, the listing is the
    // pass's first request: its connection means the scan is done.
    let gate = Gate::new(&m.endpoint);
    let mut k = cmd(&gate.endpoint(), &b);
    k.args(["--once", "--json", "--full", "--state"])
        .arg(&st)
        .arg(&root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = k.spawn().unwrap();
    let listing = gate.accept();

    write(&root, "late.txt", b"late");
    c.put_object()
        .bucket(&b)
        .key("late.txt")
        .body(b"late".to_vec().into())
        .send()
        .await
        .unwrap();
    gate.open(listing);
    let o = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        exists(&c, &b, "late.txt").await,
        "a live file was deleted: {}",
        stderr(&o)
    );
    assert!(!exists(&c, &b, "gone.txt").await, "a removed file was kept");
    let j = json(&o);
    assert_eq!(j["kept"], 1, "{j}");
    assert_eq!(j["deleted"], 1, "{j}");
}

/// A daemon holds its state file: a `--once` run on the same state is
/// refused at once (two processes saving one state would each drop what the
/// other recorded), and runs once the daemon has stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_on_the_same_state_is_refused() {
    let m = moto();
    let b = bucket_name("one-state");
    let c = client(&m.endpoint);
    let src = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let root = src.path();
    let st = state.path().join("s.json");
    write(root, "a.txt", b"a");
    let mut k = cmd(&m.endpoint, &b);
    k.args(["--create-bucket", "--debounce", "200ms", "--state"])
        .arg(&st)
        .arg(root)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut d = Daemon(k.spawn().unwrap());
    wait_for("the daemon's first pass", Duration::from_secs(40), || {
        exists(&c, &b, "a.txt")
    })
    .await;

    write(root, "b.txt", b"b");
    let t = std::time::Instant::now();
    let o = once(&m.endpoint, &b, &st, root, &[]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    let held = format!(
        "another raidfs-sync (pid {}) is using {}",
        d.0.id(),
        st.display()
    );
    assert!(err.contains(&held), "{err}");
    assert!(t.elapsed() < Duration::from_secs(10), "not refused at once");

    d.0.kill().unwrap();
    d.0.wait().unwrap();
    let o = once(&m.endpoint, &b, &st, root, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(exists(&c, &b, "b.txt").await);
}

/// A daemon syncs a tree: a `--once` run of the same tree, bucket and prefix
/// with another state file (the default state path of a root shell is not
/// the systemd unit's) is refused at once too, by the lock in the run
/// directory; another prefix is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_on_the_same_mirror_is_refused() {
    let m = moto();
    let b = bucket_name("one-mirror");
    let c = client(&m.endpoint);
    let src = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let root = src.path();
    write(root, "a.txt", b"a");
    let mut k = cmd(&m.endpoint, &b);
    k.args(["--create-bucket", "--debounce", "200ms", "--state"])
        .arg(state.path().join("daemon.json"))
        .arg(root)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let d = Daemon(k.spawn().unwrap());
    wait_for("the daemon's first pass", Duration::from_secs(40), || {
        exists(&c, &b, "a.txt")
    })
    .await;

    let other = state.path().join("admin.json");
    let t = std::time::Instant::now();
    let o = once(&m.endpoint, &b, &other, root, &[]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    let held = format!("another raidfs-sync (pid {}) is syncing", d.0.id());
    assert!(err.contains(&held), "{err}");
    assert!(t.elapsed() < Duration::from_secs(10), "not refused at once");
    // Its lock files are the owner's alone: anyone who can open one can
    // take its lock and keep the daemon from starting.
    let locks: Vec<PathBuf> = [test_run_dir(), state.path().to_path_buf()]
        .iter()
        .flat_map(|d| std::fs::read_dir(d).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "lock"))
        .collect();
    assert!(locks.len() >= 2, "{locks:?}");
    for l in &locks {
        let mode = std::fs::metadata(l).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", l.display());
    }

    let elsewhere = state.path().join("elsewhere.json");
    let o = once(
        &m.endpoint,
        &b,
        &elsewhere,
        root,
        &["--prefix", "elsewhere"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    drop(d);
    let o = once(&m.endpoint, &b, &other, root, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// `mv f g; ln -s g f` in one pass: `f` is a symlink now, not a file gone
/// from the tree, so it is no rename source for `g`. A copy from key `f`
/// could read the symlink's object, PUT there by the same pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_moved_aside_for_a_symlink_keeps_its_content() {
    let m = moto();
    let b = bucket_name("moved-aside");
    let c = client(&m.endpoint);
    let src = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let root = src.path();
    let st = state.path().join("s.json");
    let data = pattern(900 << 10, 3);
    write(root, "f", &data);
    let o = once(&m.endpoint, &b, &st, root, &[]);
    assert!(o.status.success(), "{}", stderr(&o));

    std::fs::rename(root.join("f"), root.join("g")).unwrap();
    std::os::unix::fs::symlink("g", root.join("f")).unwrap();
    let o = once(&m.endpoint, &b, &st, root, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(get(&c, &b, "g").await == data, "g holds f's old content");
    assert_eq!(get(&c, &b, "f").await, b"g");
    assert_eq!(mode_of(&c, &b, "f").await & 0o170000, 0o120000);
    let h = c.head_object().bucket(&b).key("g").send().await.unwrap();
    assert_eq!(
        h.metadata().unwrap()["crc32"],
        format!("{:08x}", crc32fast::hash(&data))
    );
    // Sent, not copied (whichever request would have come first).
    let j = json(&o);
    assert_eq!(j["copied"], 0, "f is no rename source: {j}");
    assert_eq!(j["uploaded"], 2, "{j}");
    assert_eq!(j["deleted"], 0, "{j}");

    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("t");
    let mut k = cmd(&m.endpoint, &b);
    k.arg("restore").arg(&target);
    let o = run(k);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::read(target.join("g")).unwrap() == data);
    assert_eq!(
        std::fs::read_link(target.join("f")).unwrap(),
        Path::new("g")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_file_rewritten_in_place_is_not_copied_from_its_old_object() {
    let m = moto();
    let b = bucket_name("inode");
    let c = client(&m.endpoint);
    let src = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let root = src.path();
    let st = state.path().join("s.json");
    write(root, "a.bin", &pattern(4096, 1));
    let md = std::fs::metadata(root.join("a.bin")).unwrap();
    let o = once(&m.endpoint, &b, &st, root, &[]);
    assert!(o.status.success(), "{}", stderr(&o));

    // Same inode, size and mtime as the old a.bin; other content.
    std::fs::rename(root.join("a.bin"), root.join("b.bin")).unwrap();
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(root.join("b.bin"))
            .unwrap();
        f.write_all(&pattern(4096, 2)).unwrap();
        let t = md.modified().unwrap();
        f.set_times(std::fs::FileTimes::new().set_modified(t).set_accessed(t))
            .unwrap();
    }
    let md2 = std::fs::metadata(root.join("b.bin")).unwrap();
    assert_eq!(
        (md2.ino(), md2.len(), md2.mtime(), md2.mtime_nsec()),
        (md.ino(), md.len(), md.mtime(), md.mtime_nsec())
    );
    let o = once(&m.endpoint, &b, &st, root, &[]);
    let j = json(&o);
    assert_eq!(j["copied"], 0, "{j}");
    assert_eq!(j["uploaded"], 1, "{j}");
    assert_eq!(get(&c, &b, "b.bin").await, pattern(4096, 2));
}

/// Puts an object with raidfs-sync's attributes (`mode` with type bits).
async fn put(c: &aws_sdk_s3::Client, b: &str, key: &str, body: &[u8], mode: u32) {
    c.put_object()
        .bucket(b)
        .key(key)
        .metadata("mode", mode.to_string())
        .body(body.to_vec().into())
        .send()
        .await
        .unwrap();
}

fn files_under(d: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(d).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_writes_nothing_through_restored_symlinks() {
    let m = moto();
    let b = bucket_name("through-links");
    let c = client(&m.endpoint);
    c.create_bucket().bucket(&b).send().await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let outside = out.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let target = out.path().join("t");
    let lnk = 0o120777;
    let reg = 0o100644;
    // A directory symlink with a file "below" it.
    put(&c, &b, "a", outside.to_str().unwrap().as_bytes(), lnk).await;
    put(&c, &b, "a/f", b"through the link", reg).await;
    // A symlink on the temporary name of a file restored beside it.
    let decoy = outside.join("decoy");
    put(
        &c,
        &b,
        ".raidfs-restore.x",
        decoy.to_str().unwrap().as_bytes(),
        lnk,
    )
    .await;
    put(&c, &b, "x", b"x data", reg).await;
    // A symlink to a directory, and a deeper file below it.
    put(&c, &b, "s", b"../outside", lnk).await;
    put(&c, &b, "s/deep/g", b"deeper", reg).await;
    put(&c, &b, "ok.txt", b"ok", reg).await;

    for force in [false, true] {
        let mut k = cmd(&m.endpoint, &b);
        k.args(["restore", "--json"]).arg(&target);
        if force {
            k.arg("--force");
        }
        let o = run(k);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "force={force}: {err}");
        let j = json(&o);
        let refused: Vec<String> = j["refused"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_string())
            .collect();
        assert_eq!(refused.len(), 2, "{refused:?}");
        assert!(refused[0].starts_with("a/f:"), "{refused:?}");
        assert!(refused[1].starts_with("s/deep/g:"), "{refused:?}");
        assert!(err.contains("refused: a/f"), "{err}");
        assert_eq!(
            files_under(&outside),
            Vec::<PathBuf>::new(),
            "force={force}"
        );
        assert!(
            std::fs::symlink_metadata(target.join("a"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read(target.join("x")).unwrap(), b"x data");
        assert_eq!(std::fs::read(target.join("ok.txt")).unwrap(), b"ok");
        assert!(
            std::fs::symlink_metadata(target.join(".raidfs-restore.x"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(j["files"], 2, "{j}");
        assert_eq!(j["symlinks"], 3, "{j}");
    }
    assert!(!decoy.exists());
}

/// One file that cannot be read (the daemon runs as nobody; the file is
/// root's, mode 0600) does not keep the daemon in a loop of whole-tree
/// scans: the passes after it take that file alone, with backoff, and a
/// change elsewhere still reaches the bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_keeps_failing_is_retried_alone() {
    assert!(
        is_root(),
        "this test runs the daemon as nobody: it needs root"
    );
    let m = moto();
    let b = bucket_name("onefails");
    let c = client(&m.endpoint);
    let src = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let run_dir = tempfile::tempdir().unwrap();
    for d in [src.path(), state.path(), run_dir.path()] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let root = src.path();
    write(root, "ok.txt", b"ok");
    write(root, "secret.txt", b"s");
    std::fs::set_permissions(
        root.join("secret.txt"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let bin = run_dir.path().join("raidfs-sync");
    std::fs::copy(env!("CARGO_BIN_EXE_raidfs-sync"), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let log = state.path().join("daemon.log");
    let hooks = state.path().join("hooks");
    let mut k = cmd_of(&bin, &m.endpoint, &b);
    k.env("RAIDFS_RUN_DIR", run_dir.path())
        .arg("--notify-cmd")
        .arg(format!(
            "echo \"$RAIDFS_SYNC_MESSAGE\" >> {}",
            hooks.display()
        ))
        .args([
            "--create-bucket",
            "--debounce",
            "100ms",
            "--retry-max",
            "2s",
            "--state",
        ])
        .arg(state.path().join("s.json"))
        .arg(root)
        .uid(65534)
        .gid(65534)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let daemon = Daemon(k.spawn().unwrap());
    wait_for("ok.txt", Duration::from_secs(40), || {
        exists(&c, &b, "ok.txt")
    })
    .await;
    let passes = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("pass") && l.contains("scopes="))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    // Retried: at least three passes after the first.
    wait_for("the retries", Duration::from_secs(40), || {
        let n = passes().len();
        async move { n >= 4 }
    })
    .await;
    write(root, "new.txt", b"n");
    wait_for("new.txt", Duration::from_secs(40), || {
        exists(&c, &b, "new.txt")
    })
    .await;
    drop(daemon);
    let all = passes();
    let later: Vec<&String> = all[1..].iter().collect();
    assert!(
        later.iter().all(|l| !l.contains("scopes=[\"\"]")),
        "a retry scanned the whole tree: {all:#?}"
    );
    assert!(
        later.iter().any(|l| l.contains("secret.txt")),
        "the failing file was not retried: {all:#?}"
    );
    // Nor did a retry list the bucket and scan the tree as a full pass:
    // the first pass compared them whole already.
    let done: Vec<String> = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("pass done"))
        .map(str::to_string)
        .collect();
    assert!(done.len() >= 4, "{done:#?}");
    assert!(
        done[1..].iter().all(|l| l.contains("full=false")),
        "{done:#?}"
    );
    // The failure hook ran once, not at every retry failing the same way.
    let ran = std::fs::read_to_string(&hooks).unwrap_or_default();
    assert_eq!(ran.lines().count(), 1, "{ran}");
    assert!(!exists(&c, &b, "secret.txt").await);
}

/// An array unmounted and mounted again between two of the daemon's looks
/// (a quick `systemctl restart` of the mount) is watched anew: the new
/// mount has another mount id even when its device number and root inode
/// are the old ones, as a FUSE or tmpfs mount's usually are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_array_mounted_again_at_once_is_watched_anew() {
    let m = moto();
    let b = bucket_name("quickremount");
    let c = client(&m.endpoint);
    let base = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let (root, mounted) = mounted_array(base.path());
    write(&root, "a.txt", b"a");
    let (st, log) = (state.path().join("s.json"), state.path().join("daemon.log"));
    let daemon = daemon_on(m, &b, &st, &root, &log, &["--create-bucket"]);
    wait_for("the first pass", Duration::from_secs(40), || {
        exists(&c, &b, "a.txt")
    })
    .await;
    drop(mounted);
    let _mounted = mount_tmpfs(&root).expect("mounting the tmpfs again");
    write(&root, "a.txt", b"a");
    write(&root, "quick.txt", b"q");
    wait_for("quick.txt", Duration::from_secs(30), || {
        exists(&c, &b, "quick.txt")
    })
    .await;
    write(&root, "then.txt", b"t");
    wait_for(
        "then.txt, seen by the new watch",
        Duration::from_secs(20),
        || exists(&c, &b, "then.txt"),
    )
    .await;
    drop(daemon);
}

/// A run directory this user cannot write (a user other than root beside
/// the mount daemons' `/run/raidfs`): the mirror goes unlocked but for its
/// state file, and the sync runs, as it does without a run directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_directory_that_cannot_be_written_does_not_stop_a_sync() {
    assert!(is_root(), "this test runs a sync as nobody: it needs root");
    let m = moto();
    let b = bucket_name("rorundir");
    let c = client(&m.endpoint);
    let src = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let run_dir = tempfile::tempdir().unwrap();
    let bin_dir = tempfile::tempdir().unwrap();
    for d in [src.path(), state.path(), bin_dir.path()] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    std::fs::set_permissions(run_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = src.path();
    write(root, "a.txt", b"a");
    let bin = bin_dir.path().join("raidfs-sync");
    std::fs::copy(env!("CARGO_BIN_EXE_raidfs-sync"), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut k = cmd_of(&bin, &m.endpoint, &b);
    k.env("RAIDFS_RUN_DIR", run_dir.path())
        .args(["--once", "--create-bucket", "--state"])
        .arg(state.path().join("s.json"))
        .arg(root)
        .uid(65534)
        .gid(65534);
    let o = run(k);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(exists(&c, &b, "a.txt").await);
}

/// A directory moved away and replaced by a symlink to it: its files' keys
/// go (the scan sees one symlink, not the files through it), rather than
/// being kept for ever because the paths still resolve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_under_a_directory_replaced_by_a_symlink_are_deleted() {
    let m = moto();
    let b = bucket_name("dirtolink");
    let c = client(&m.endpoint);
    let src = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let root = src.path();
    let st = state.path().join("s.json");
    write(root, "keep.txt", b"k");
    write(root, "photos/x.jpg", b"x");
    let o = once(&m.endpoint, &b, &st, root, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(exists(&c, &b, "photos/x.jpg").await);
    std::fs::rename(root.join("photos"), other.path().join("photos")).unwrap();
    std::os::unix::fs::symlink(other.path().join("photos"), root.join("photos")).unwrap();
    for extra in [&[][..], &["--full"][..]] {
        let o = once(&m.endpoint, &b, &st, root, extra);
        assert!(o.status.success(), "{extra:?}: {}", stderr(&o));
        assert!(
            !exists(&c, &b, "photos/x.jpg").await,
            "{extra:?}: photos/x.jpg kept"
        );
        assert!(state_json(&st)["entries"].get("photos/x.jpg").is_none());
    }
    assert!(exists(&c, &b, "keep.txt").await);
}
