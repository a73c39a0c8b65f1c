//! Bad input to `mount.raidfs` and `raidfs create`: each one exits non-zero
//! with a clear message on stderr, and writes nothing into any directory
//! involved (trees are snapshotted before and after).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use raidfs_tests::{TestArray, bins, is_mounted, run, snapshot};

/// Run mount.raidfs the way a user does (daemonizing, not `--foreground`).
fn mount_cmd(spec: &str, mnt: &Path, opts: Option<&str>) -> Output {
    let mut c = Command::new(&bins().mount);
    c.arg(spec).arg(mnt);
    if let Some(o) = opts {
        c.arg("-o").arg(o);
    }
    let out = run(&mut c);
    if out.status.success() && is_mounted(mnt) {
        // Do not leave a stray daemon behind if the refusal failed.
        let _ = run(Command::new("umount").arg(mnt));
    }
    out
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The command failed, and stderr says why, mentioning `needle`.
fn assert_refused(o: &Output, needle: &str) {
    let err = stderr(o);
    assert!(!o.status.success(), "accepted; stderr: {err}");
    assert!(
        err.to_lowercase().contains(&needle.to_lowercase()),
        "stderr does not mention {needle:?}: {err}"
    );
}

fn snapshots(dirs: &[PathBuf]) -> Vec<impl PartialEq + std::fmt::Debug> {
    dirs.iter().map(|d| (d.clone(), snapshot(d))).collect()
}

/// An array created (not mounted) on four directories plus a spare empty
/// directory that belongs to no array.
fn array_and_stranger() -> (TestArray, PathBuf) {
    let a = TestArray::builder("raid5", 4).create();
    let stranger = a.root.join("stranger");
    fs::create_dir(&stranger).unwrap();
    fs::write(stranger.join("keep.txt"), b"user data").unwrap();
    (a, stranger)
}

#[test]
fn mount_with_a_non_member_directory_is_refused() {
    let (a, stranger) = array_and_stranger();
    let mut members = a.members.clone();
    members[3] = stranger.clone();
    let spec = members
        .iter()
        .map(|m| m.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let mut all = a.members.clone();
    all.push(stranger.clone());
    let before = snapshots(&all);
    let out = mount_cmd(&spec, &a.mnt, None);
    assert_refused(&out, &stranger.display().to_string());
    assert!(!is_mounted(&a.mnt));
    assert_eq!(before, snapshots(&all), "a refused mount wrote something");
}

#[test]
fn mount_mixing_members_of_two_arrays_is_refused() {
    let a = TestArray::builder("raid5", 4).create();
    let b = TestArray::builder("raid5", 4).create();
    let mut members = a.members.clone();
    members[1] = b.members[1].clone();
    let spec = members
        .iter()
        .map(|m| m.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let mut all = a.members.clone();
    all.extend(b.members.iter().cloned());
    let before = snapshots(&all);
    let out = mount_cmd(&spec, &a.mnt, None);
    assert_refused(&out, "array");
    assert!(!is_mounted(&a.mnt));
    assert_eq!(before, snapshots(&all), "a refused mount wrote something");
}

#[test]
fn mount_on_a_missing_mountpoint_is_refused() {
    let a = TestArray::builder("raid5", 4).create();
    let missing = a.root.join("no-such-dir");
    let before = snapshots(&a.members);
    let out = mount_cmd(&a.spec(), &missing, None);
    assert_refused(&out, "does not exist");
    assert!(!missing.exists(), "the mount point was created");
    assert_eq!(before, snapshots(&a.members));
}

/// A mount point left by a daemon that died (killed, crashed) answers
/// ENOTCONN: the refusal says so and what to run, not that the directory
/// "does not exist".
#[test]
fn mount_on_a_dead_mount_says_to_unmount_it() {
    let mut a = TestArray::raid5();
    let pid = a.daemon_pid().expect("daemon pid");
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let start = std::time::Instant::now();
    while fs::metadata(&a.mnt).is_ok() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "daemon did not die"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = mount_cmd(&a.spec(), &a.mnt, None);
    assert_refused(&out, "dead mount");
    assert!(stderr(&out).contains("umount"), "{}", stderr(&out));
    a.kill9();
}

#[test]
fn mount_on_a_busy_mountpoint_is_refused() {
    let mounted = TestArray::raid5();
    fs::write(mounted.path("mine"), b"first array").unwrap();
    let other = TestArray::builder("raid5", 4).create();
    let before = snapshots(&other.members);
    let out = mount_cmd(&other.spec(), &mounted.mnt, None);
    assert_refused(&out, "busy");
    assert_eq!(before, snapshots(&other.members));
    // The first mount is untouched and still serving.
    assert_eq!(fs::read(mounted.path("mine")).unwrap(), b"first array");
}

#[test]
fn mounting_a_mounted_array_again_is_refused() {
    let a = TestArray::raid5();
    fs::write(a.path("mine"), b"still here").unwrap();
    // (The members are not compared before and after: the live daemon
    // commits to them on its own. The second process stops at the live
    // daemon's record, before it locks anything.)
    let second = a.new_dir("second-mount");
    let out = mount_cmd(&a.spec(), &second, None);
    assert_refused(&out, "is already mounted on");
    let mnt = fs::canonicalize(&a.mnt).unwrap();
    assert!(
        stderr(&out).contains(&mnt.display().to_string()),
        "the message names where: {}",
        stderr(&out)
    );
    assert!(!is_mounted(&second));
    // Should the record be gone, the member locks still refuse it.
    let out = run(Command::new(&bins().mount)
        .arg(a.spec())
        .arg(&second)
        .args(["-o", "lock_wait=0"])
        .env("RAIDFS_RUN_DIR", a.new_dir("empty-run-dir")));
    if is_mounted(&second) {
        let _ = run(Command::new("umount").arg(&second));
    }
    assert_refused(&out, "in use by another raidfs process");
    assert!(!is_mounted(&second));
    // The first mount is untouched and still serving.
    assert_eq!(fs::read(a.path("mine")).unwrap(), b"still here");
}

#[test]
fn mount_with_an_unknown_option_is_refused() {
    let a = TestArray::builder("raid5", 4).create();
    let before = snapshots(&a.members);
    let out = mount_cmd(&a.spec(), &a.mnt, Some("allow_other,no_such_option"));
    assert_refused(&out, "no_such_option");
    assert!(!is_mounted(&a.mnt));
    let out = mount_cmd(&a.spec(), &a.mnt, Some("threads=lots"));
    assert_refused(&out, "threads");
    assert_eq!(
        out.status.code(),
        Some(32),
        "mount(8)'s code for a failed mount"
    );
    let out = mount_cmd(&a.spec(), &a.mnt, Some("remount,ro"));
    assert_refused(&out, "unmount the array and mount it again");
    // `mount -s`: sloppy, unknown options are skipped.
    let out = run(Command::new(&bins().mount).arg(a.spec()).arg(&a.mnt).args([
        "-s",
        "-f",
        "-o",
        "no_such_option",
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(before, snapshots(&a.members));
}

#[test]
fn a_fake_mount_checks_everything_and_mounts_nothing() {
    let a = TestArray::builder("raid5", 4).create();
    let before = snapshots(&a.members);
    // `mount -f` (and `mount -fav`) pass -f to the helper.
    let out = run(Command::new(&bins().mount)
        .arg(a.spec())
        .arg(&a.mnt)
        .args(["-f", "-v", "-o", "noexec"]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("fake mount, nothing mounted"));
    assert!(!is_mounted(&a.mnt));
    assert_eq!(before, snapshots(&a.members));
    // What would fail still fails.
    let out = run(Command::new(&bins().mount)
        .arg(a.spec())
        .arg(a.root.join("no-such-dir"))
        .arg("-f"));
    assert_refused(&out, "does not exist");
    assert_eq!(out.status.code(), Some(32));
    // So does a member list naming a directory that is no member, or one
    // that does not exist.
    let stranger = a.root.join("stranger");
    fs::create_dir(&stranger).unwrap();
    for bad in [stranger, a.root.join("gone")] {
        let mut members = a.members.clone();
        members[3] = bad.clone();
        let spec = members
            .iter()
            .map(|m| m.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        let out = run(Command::new(&bins().mount).arg(&spec).arg(&a.mnt).arg("-f"));
        assert_refused(&out, &bad.display().to_string());
        assert_eq!(out.status.code(), Some(32));
    }
    // A wrong invocation is mount(8)'s 1; another namespace is refused.
    let out = run(Command::new(&bins().mount).arg("--no-such-flag"));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let out = run(Command::new(&bins().mount)
        .arg(a.spec())
        .arg(&a.mnt)
        .args(["-N", "/proc/1/ns/mnt"]));
    assert_refused(&out, "namespace");
    assert!(!is_mounted(&a.mnt));
}

fn create(args: &[&str], dirs: &[PathBuf]) -> Output {
    run(Command::new(&bins().raidfs)
        .arg("create")
        .args(args)
        .arg("--allow-same-fs")
        .args(dirs))
}

fn fresh_dirs(root: &Path, n: usize) -> Vec<PathBuf> {
    (0..n)
        .map(|i| {
            let d = root.join(format!("c{i}"));
            fs::create_dir(&d).unwrap();
            d
        })
        .collect()
}

#[test]
fn create_on_a_non_empty_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = fresh_dirs(tmp.path(), 4);
    fs::write(dirs[2].join("photo.jpg"), b"precious").unwrap();
    let before = snapshots(&dirs);
    let out = create(&["--level", "raid5", "--name", "x"], &dirs);
    assert_refused(&out, &dirs[2].display().to_string());
    assert_eq!(before, snapshots(&dirs), "a refused create wrote something");
}

#[test]
fn create_with_the_name_of_an_array_on_this_machine_is_refused() {
    // Members on loop devices: mounted filesystems, where `mount.raidfs
    // NAME` (and so create's check) looks for arrays.
    let a = TestArray::builder("raid1", 2)
        .backing(raidfs_tests::Backing::Loop { mib: 32 })
        .create();
    let tmp = tempfile::tempdir().unwrap();
    let dirs = fresh_dirs(tmp.path(), 3);
    let before = snapshots(&dirs);
    let out = create(&["--level", "raid5", "--name", &a.name], &dirs);
    assert_refused(&out, "already exists");
    assert!(
        stderr(&out).contains(&a.name),
        "the message names the array: {}",
        stderr(&out)
    );
    assert_eq!(before, snapshots(&dirs), "a refused create wrote something");
    let out = create(
        &["--level", "raid5", "--name", &format!("{}-b", a.name)],
        &dirs,
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn create_on_a_member_of_another_array_is_refused() {
    let a = TestArray::builder("raid5", 4).create();
    let tmp = tempfile::tempdir().unwrap();
    let mut dirs = fresh_dirs(tmp.path(), 3);
    dirs.push(a.members[0].clone());
    let before = snapshots(&dirs);
    let out = create(&["--level", "raid5", "--name", "x"], &dirs);
    assert_refused(&out, &a.members[0].display().to_string());
    assert_eq!(before, snapshots(&dirs), "a refused create wrote something");
}

#[test]
fn create_with_a_bad_level_or_chunk_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = fresh_dirs(tmp.path(), 4);
    let before = snapshots(&dirs);
    let out = create(&["--level", "raid7", "--name", "x"], &dirs);
    assert_refused(&out, "raid7");
    let out = create(&["--level", "raid5", "--name", "x", "--chunk", "3K"], &dirs);
    assert_refused(&out, "chunk");
    let out = create(
        &["--level", "raid5", "--name", "x", "--chunk", "lots"],
        &dirs,
    );
    assert_refused(&out, "lots");
    // Too few members for the level.
    let out = create(&["--level", "raid6", "--name", "x"], &dirs[..2]);
    assert!(!out.status.success(), "raid6 on 2 members accepted");
    assert!(!stderr(&out).trim().is_empty());
    let out = create(&["--level", "raid0", "--name", "x"], &dirs[..1]);
    assert_refused(&out, "at least 2 members");
    assert_eq!(before, snapshots(&dirs), "a refused create wrote something");
    // A member directory that is not there (its disk not mounted): named,
    // with what to check, and not created.
    let mut with_gone = dirs.clone();
    with_gone[3] = tmp.path().join("not-mounted");
    let out = create(&["--level", "raid5", "--name", "x"], &with_gone);
    assert_refused(&out, "is its disk mounted?");
    assert!(!with_gone[3].exists());
    assert_eq!(before, snapshots(&dirs), "a refused create wrote something");
}

/// A full array: writes fail with ENOSPC (not EIO), no member is marked
/// failed, what was written before reads back, and space comes back after
/// a delete.
#[test]
fn full_array_gives_enospc_and_loses_nothing() {
    use std::io::Write;
    let mut a = TestArray::builder("raid5", 4)
        .backing(raidfs_tests::Backing::Loop { mib: 64 })
        .mount();
    let keep = raidfs_tests::pattern(1, 3 << 20);
    fs::write(a.path("keep"), &keep).unwrap();
    let mut f = fs::File::create(a.path("filler")).unwrap();
    let block = raidfs_tests::pattern(2, 1 << 20);
    let mut written = 0u64;
    let err = loop {
        match f.write_all(&block).and_then(|_| f.sync_data()) {
            Ok(()) => written += 1,
            Err(e) => break e,
        }
        assert!(written < 400, "wrote {written} MiB into a ~170 MiB array");
    };
    drop(f);
    // Every problem is collected, so one run tells the whole story.
    let mut problems = Vec::new();
    if err.raw_os_error() != Some(libc::ENOSPC) {
        problems.push(format!(
            "a full array must say ENOSPC, got {err} after {written} MiB"
        ));
    }
    if fs::read(a.path("keep")).map(|d| d == keep).ok() != Some(true) {
        problems.push("a file written before the array filled up is unreadable or wrong".into());
    }
    // Nearly full, a file opened now bypasses the page cache: write(2)
    // itself says ENOSPC (as a shell's `echo x > f` needs to hear), and
    // the file shows what the array holds, not bytes it refused.
    let mut late = fs::File::create(a.path("late")).unwrap();
    match late.write_all(&block) {
        Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {}
        r => problems.push(format!(
            "a write into a full array must fail with ENOSPC itself, got {r:?}"
        )),
    }
    drop(late);
    let shown = fs::read(a.path("late")).unwrap();
    if shown.len() as u64 != fs::metadata(a.path("late")).unwrap().len()
        || shown[..] != block[..shown.len().min(block.len())]
    {
        problems.push(format!(
            "the refused file shows {} bytes that are not what was written",
            shown.len()
        ));
    }
    fs::remove_file(a.path("late")).unwrap();
    fs::remove_file(a.path("filler")).unwrap();
    if let Err(e) = fs::write(a.path("after"), &block) {
        problems.push(format!("no space after deleting the filler: {e}"));
    }
    a.unmount();
    let st = a.status_json();
    if st["degraded"] != false || st["failed"] != false {
        problems.push(format!("filling the array failed members: {st}"));
    }
    if !problems.is_empty() {
        eprintln!("before remount:\n{}", problems.join("\n"));
    }
    a.mount();
    if fs::read(a.path("keep")).map(|d| d == keep).ok() != Some(true) {
        problems.push("after remount, the early file is unreadable or wrong".into());
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let after = fs::read(a.path("after")).unwrap();
    assert_eq!(
        after.len(),
        block.len(),
        "size of the file written after freeing space"
    );
    if let Some(bad) = after.iter().zip(&block).position(|(x, y)| x != y) {
        panic!(
            "file written after freeing space differs from offset {bad} (byte {:#x}, want {:#x})",
            after[bad], block[bad]
        );
    }
}
