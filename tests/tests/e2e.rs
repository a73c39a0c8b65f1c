//! Whole-system use of a mounted array with ordinary tools: cp, tar, make,
//! a compiler, rsync. Every copy is compared by content hash, again after a
//! remount so that the engine (not the page cache) answers.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, UNIX_EPOCH};

use raidfs_tests::{TestArray, assert_same_tree, make_tree, pattern, run, run_ok, tree};

/// cp -r a generated tree onto the array, compare, remount, compare.
fn copy_tree_and_verify(a: &mut TestArray, files: usize, max_size: usize) {
    let src = a.root.join("src");
    make_tree(&src, files, max_size);
    let expected = tree(&src);
    run_ok(Command::new("cp").arg("-r").arg(&src).arg(a.path("copy")));
    assert_same_tree(&expected, &tree(&a.path("copy")));
    a.remount();
    assert_same_tree(&expected, &tree(&a.path("copy")));
}

#[test]
fn cp_r_thousands_of_files_raid5_then_remount() {
    let mut a = TestArray::raid5();
    copy_tree_and_verify(&mut a, 2000, 3 << 20);
}

#[test]
fn cp_r_raid6_five_members() {
    let mut a = TestArray::builder("raid6", 5).mount();
    copy_tree_and_verify(&mut a, 600, 2 << 20);
}

#[test]
fn cp_r_raid10_and_raid1() {
    let mut a = TestArray::builder("raid10", 4).chunk("16K").mount();
    copy_tree_and_verify(&mut a, 300, 1 << 20);
    drop(a);
    let mut a = TestArray::builder("raid1", 2).mount();
    copy_tree_and_verify(&mut a, 300, 1 << 20);
}

const MAIN_C: &str = r#"#include <stdio.h>
#include "util.h"
int main(void) {
    printf("sum=%ld fib=%ld\n", sum_to(1000), fib(40));
    return 0;
}
"#;
const UTIL_H: &str = "long sum_to(long n);\nlong fib(int n);\n";
const SUM_C: &str = "#include \"util.h\"\nlong sum_to(long n) { long s = 0; for (long i = 1; i <= n; i++) s += i; return s; }\n";
const FIB_C: &str = "#include \"util.h\"\nlong fib(int n) { long a = 0, b = 1; while (n-- > 0) { long t = a + b; a = b; b = t; } return a; }\n";
const MAKEFILE: &str = "CC ?= cc\nCFLAGS ?= -O2 -Wall\nOBJS = main.o sum.o fib.o\n\nhello: $(OBJS)\n\t$(CC) -o $@ $(OBJS)\n\n%.o: %.c util.h\n\t$(CC) $(CFLAGS) -c -o $@ $<\n\nclean:\n\trm -f hello $(OBJS)\n";

#[test]
fn tar_extract_and_build_a_c_project() {
    let a = TestArray::raid5();
    let proj = a.root.join("proj");
    fs::create_dir(&proj).unwrap();
    for (name, body) in [
        ("main.c", MAIN_C),
        ("util.h", UTIL_H),
        ("sum.c", SUM_C),
        ("fib.c", FIB_C),
        ("Makefile", MAKEFILE),
    ] {
        fs::write(proj.join(name), body).unwrap();
    }
    let tarball = a.root.join("proj.tar");
    run_ok(
        Command::new("tar")
            .arg("cf")
            .arg(&tarball)
            .arg("-C")
            .arg(&a.root)
            .arg("proj"),
    );
    run_ok(
        Command::new("tar")
            .arg("xf")
            .arg(&tarball)
            .arg("-C")
            .arg(&a.mnt),
    );
    let built = a.path("proj");
    run_ok(Command::new("make").arg("-C").arg(&built));
    let out = run_ok(&mut Command::new(built.join("hello")));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "sum=500500 fib=102334155\n"
    );
    // Timestamps are sane: a second make has nothing to do.
    let out = run_ok(Command::new("make").arg("-C").arg(&built));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("up to date") || text.contains("Nothing to be done"),
        "second make rebuilt something:\n{text}"
    );
    // Touching a source rebuilds exactly that object and the program.
    std::thread::sleep(Duration::from_millis(20));
    fs::write(built.join("sum.c"), SUM_C).unwrap();
    let out = run_ok(Command::new("make").arg("-C").arg(&built));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("-c -o sum.o sum.c") && !text.contains("-c -o fib.o"),
        "touching sum.c must rebuild sum.o only:\n{text}"
    );
    run_ok(Command::new("make").arg("-C").arg(&built).arg("clean"));
    assert!(!built.join("hello").exists());
}

fn require_rsync() {
    let out = Command::new("rsync").arg("--version").output();
    assert!(
        out.is_ok_and(|o| o.status.success()),
        "rsync is missing: apt-get install rsync"
    );
}

fn set_xattr(p: &Path, name: &str, value: &[u8]) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    // SAFETY: FFI with valid NUL-terminated strings and a live value slice.
    let r = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(r, 0, "setxattr {name} on {}", p.display());
}

fn get_xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 65536];
    // SAFETY: FFI; buf is valid for its length.
    let r = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return None;
    }
    buf.truncate(r as usize);
    Some(buf)
}

/// mode, uid, gid, mtime (s, ns), size of every entry, by relative path.
fn attrs(root: &Path) -> Vec<(String, u32, u32, u32, i64, i64, u64)> {
    let mut out = Vec::new();
    for (rel, _) in tree(root) {
        let m = fs::symlink_metadata(root.join(&rel)).unwrap();
        let (mt, mtn) = if m.file_type().is_symlink() {
            (0, 0)
        } else {
            (m.mtime(), m.mtime_nsec())
        };
        // A directory's size is the filesystem's own business.
        let size = if m.is_dir() { 0 } else { m.size() };
        out.push((
            rel.display().to_string(),
            m.mode(),
            m.uid(),
            m.gid(),
            mt,
            mtn,
            size,
        ));
    }
    out
}

#[test]
fn rsync_round_trip_preserves_everything() {
    require_rsync();
    let mut a = TestArray::raid5();
    let src = a.root.join("rsrc");
    fs::create_dir_all(src.join("sub/deeper")).unwrap();
    fs::write(src.join("plain"), pattern(1, 100_000)).unwrap();
    fs::write(src.join("sub/exec"), b"#!/bin/sh\necho hi\n").unwrap();
    fs::write(src.join("sub/deeper/big"), pattern(2, 1_500_000)).unwrap();
    fs::write(src.join("empty"), b"").unwrap();
    fs::hard_link(src.join("plain"), src.join("sub/hardlink")).unwrap();
    std::os::unix::fs::symlink("../plain", src.join("sub/sym")).unwrap();
    std::os::unix::fs::symlink("dangling-target", src.join("dangling")).unwrap();
    fs::set_permissions(src.join("plain"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::set_permissions(src.join("sub/exec"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(src.join("empty"), fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(src.join("sub/exec"), Some(1000), Some(100)).unwrap();
    std::os::unix::fs::lchown(src.join("sub/sym"), Some(2000), Some(2000)).unwrap();
    set_xattr(&src.join("plain"), "user.origin", b"camera");
    set_xattr(&src.join("sub/deeper/big"), "user.blob", &pattern(3, 2000));
    set_xattr(&src.join("sub"), "user.dirattr", b"yes");
    let t = UNIX_EPOCH + Duration::new(1_234_567_890, 123_456_789);
    for p in ["plain", "sub/exec", "sub/deeper/big", "empty"] {
        fs::File::options()
            .write(true)
            .open(src.join(p))
            .unwrap()
            .set_times(fs::FileTimes::new().set_modified(t).set_accessed(t))
            .unwrap();
    }
    fs::set_permissions(src.join("sub/deeper"), fs::Permissions::from_mode(0o700)).unwrap();
    for d in ["sub/deeper", "sub", ""] {
        fs::File::open(src.join(d))
            .unwrap()
            .set_times(fs::FileTimes::new().set_modified(t))
            .unwrap();
    }

    let dst = a.path("dst");
    let rsync = |from: &Path, to: &Path| {
        run_ok(
            Command::new("rsync")
                .arg("-aHAX")
                .arg(format!("{}/", from.display()))
                .arg(to),
        );
    };
    rsync(&src, &dst);
    a.remount();
    let dst = a.path("dst");
    // A second pass finds nothing to change.
    let out = run_ok(
        Command::new("rsync")
            .args(["-aHAXn", "--itemize-changes"])
            .arg(format!("{}/", src.display()))
            .arg(&dst),
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "",
        "rsync sees differences after the round trip"
    );
    let back = a.root.join("back");
    rsync(&dst, &back);

    for root in [&dst, &back] {
        assert_same_tree(&tree(&src), &tree(root));
        assert_eq!(
            attrs(&src),
            attrs(root),
            "modes/owners/times in {}",
            root.display()
        );
        let (p, h) = (
            fs::metadata(root.join("plain")).unwrap(),
            fs::metadata(root.join("sub/hardlink")).unwrap(),
        );
        assert_eq!(p.ino(), h.ino(), "hard link kept in {}", root.display());
        assert_eq!(p.nlink(), 2);
        assert_eq!(
            get_xattr(&root.join("plain"), "user.origin").unwrap(),
            b"camera"
        );
        assert_eq!(
            get_xattr(&root.join("sub/deeper/big"), "user.blob").unwrap(),
            pattern(3, 2000)
        );
        assert_eq!(
            get_xattr(&root.join("sub"), "user.dirattr").unwrap(),
            b"yes"
        );
    }
    let out = run(&mut Command::new(dst.join("sub/exec")));
    assert_eq!(out.stdout, b"hi\n");
}

#[test]
fn daemon_mode_returns_once_mounted_and_umount_closes_clean() {
    let mut a = TestArray::builder("raid5", 4).create();
    let out = run_ok(
        Command::new(&raidfs_tests::bins().mount)
            .arg(a.spec())
            .arg(&a.mnt),
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Mounted by the time the helper returns (it waits for the daemon),
    // as a raidfs mount named after the array (what findmnt and df -T show).
    assert!(raidfs_tests::is_mounted(&a.mnt));
    let name = a.status_json()["name"].as_str().unwrap().to_string();
    assert_eq!(
        raidfs_tests::mount_entry(&a.mnt),
        Some(("fuse.raidfs".to_string(), name))
    );
    fs::write(a.path("f"), b"daemonized").unwrap();
    run_ok(Command::new("umount").arg(&a.mnt));
    // The daemon closes the array after the kernel lets go: wait for it.
    let start = std::time::Instant::now();
    loop {
        let st = a.status_json();
        if st["clean"] == true {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "array not marked clean after umount: {st}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    a.mount();
    assert_eq!(fs::read(a.path("f")).unwrap(), b"daemonized");
    // SIGTERM (systemd stopping the mount) unmounts and closes clean too.
    fs::write(a.path("g"), b"before SIGTERM").unwrap();
    a.terminate();
    assert_eq!(a.status_json()["clean"], true);
    a.mount();
    assert_eq!(fs::read(a.path("g")).unwrap(), b"before SIGTERM");
}

/// An aborted FUSE connection (`/sys/fs/fuse/connections/N/abort`, what an
/// admin does to a hung mount) ends the daemon without leaving a dead
/// "Transport endpoint is not connected" mount behind.
#[test]
fn an_aborted_connection_leaves_no_dead_mount() {
    let mut a = TestArray::raid5();
    fs::write(a.path("f"), b"before the abort").unwrap();
    let ctl = Path::new("/sys/fs/fuse/connections");
    if fs::read_dir(ctl).map_or(true, |mut d| d.next().is_none()) {
        // Not mounted yet on this machine (nothing else uses it).
        let _ = run(Command::new("mount")
            .args(["-t", "fusectl", "none"])
            .arg(ctl));
    }
    // The connection's directory is named by the mount's (anonymous, major
    // 0) device number: its minor.
    let dev = fs::metadata(&a.mnt).unwrap().dev();
    let minor = (dev & 0xff) | ((dev >> 12) & 0xfff00);
    fs::write(ctl.join(minor.to_string()).join("abort"), b"1").unwrap();
    a.wait_exit();
    assert!(!raidfs_tests::is_mounted(&a.mnt), "a dead mount was left");
    a.mount();
    assert_eq!(fs::read(a.path("f")).unwrap(), b"before the abort");
}

/// Many small overwrites of one file, flushed by the kernel as concurrent
/// WRITE requests that share stripes (read-modify-write races on parity),
/// then the file read back with each member missing in turn, so that every
/// chunk is rebuilt from parity at least once: wrong parity cannot hide.
#[test]
fn concurrent_partial_stripe_writes_keep_parity_right() {
    partial_writes_then_read_with_members_missing(TestArray::raid5(), &[&[0], &[1], &[2], &[3]]);
}

/// The same on RAID-6: two members missing, so Q is used too.
#[test]
fn concurrent_partial_stripe_writes_keep_raid6_syndromes_right() {
    partial_writes_then_read_with_members_missing(
        TestArray::builder("raid6", 5).mount(),
        &[&[0, 1], &[2, 4], &[1, 3]],
    );
}

fn partial_writes_then_read_with_members_missing(mut a: TestArray, cases: &[&[usize]]) {
    const SIZE: usize = 4 << 20;
    const PIECE: usize = 20_000;
    let p = a.path("f");
    let mut expect = pattern(20, SIZE);
    fs::write(&p, &expect).unwrap();
    let pieces = SIZE.div_ceil(PIECE);
    for round in 0..3u64 {
        let f = fs::OpenOptions::new().write(true).open(&p).unwrap();
        std::thread::scope(|s| {
            for t in 0..2usize {
                let f = &f;
                s.spawn(move || {
                    for k in (0..pieces).filter(|k| k % 3 == round as usize && k % 2 == t) {
                        let off = k * PIECE;
                        let len = PIECE.min(SIZE - off);
                        let data = pattern(1000 * round + k as u64, len);
                        std::os::unix::fs::FileExt::write_all_at(f, &data, off as u64).unwrap();
                    }
                });
            }
        });
        f.sync_all().unwrap();
        for k in (0..pieces).filter(|k| k % 3 == round as usize) {
            let off = k * PIECE;
            let len = PIECE.min(SIZE - off);
            expect[off..off + len].copy_from_slice(&pattern(1000 * round + k as u64, len));
        }
    }
    let got = fs::read(&p).unwrap();
    assert!(got == expect, "content wrong before any member is missing");
    a.unmount();
    // A degraded mount records the absent member as failed, so each case
    // starts again from a copy of the members as they were at unmount.
    let all = a.members.clone();
    let saved = a.root.join("saved");
    fs::create_dir(&saved).unwrap();
    for m in &all {
        run_ok(Command::new("cp").arg("-a").arg(m).arg(&saved));
    }
    for missing in cases {
        for m in &all {
            fs::remove_dir_all(m).unwrap();
            run_ok(
                Command::new("cp")
                    .arg("-a")
                    .arg(saved.join(m.file_name().unwrap()))
                    .arg(m),
            );
        }
        a.members = all
            .iter()
            .enumerate()
            .filter(|(i, _)| !missing.contains(i))
            .map(|(_, m)| m.clone())
            .collect();
        a.mount();
        let got = fs::read(a.path("f")).unwrap();
        if let Some(bad) = got.iter().zip(&expect).position(|(g, e)| g != e) {
            panic!(
                "without members {missing:?}: wrong bytes from offset {bad} (parity out of date)"
            );
        }
        a.unmount();
    }
}

/// The kernel's read-ahead for the mount: raised by default (its own
/// default for FUSE, 128 KiB, stalls cold sequential reads) and set by
/// `-o readahead=KiB`, with the bytes read unchanged either way.
#[test]
fn kernel_read_ahead_follows_the_readahead_option() {
    let read_ahead_kb = |a: &TestArray| -> u64 {
        let dev = fs::metadata(&a.mnt).unwrap().dev();
        let (major, minor) = (libc::major(dev), libc::minor(dev));
        fs::read_to_string(format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let mut a = TestArray::raid5();
    assert_eq!(read_ahead_kb(&a), 4096);
    let data = pattern(7, 9 << 20);
    fs::write(a.path("seq"), &data).unwrap();
    a.set_options(&["readahead=512"]);
    a.remount();
    assert_eq!(read_ahead_kb(&a), 512);
    assert!(fs::read(a.path("seq")).unwrap() == data);
}

/// `umount` returns once the kernel lets go, while the daemon is still
/// closing the array. Mounting again at once must wait for it, not find a
/// member with an older events count and start degraded.
#[test]
fn umount_then_mount_at_once_finds_the_array_whole() {
    let a = TestArray::builder("raid5", 4).create();
    let mount = || {
        run_ok(
            Command::new(&raidfs_tests::bins().mount)
                .arg(a.spec())
                .arg(&a.mnt),
        )
    };
    mount();
    for round in 0..4u8 {
        fs::write(a.path(format!("f{round}")), [round; 300_000]).unwrap();
        run_ok(Command::new("umount").arg(&a.mnt));
        mount();
        let st = a.live_status_json();
        assert_eq!(st["degraded"], false, "round {round}: {st}");
        for m in st["members"].as_array().unwrap() {
            assert_eq!(m["state"], "active", "round {round}: {st}");
        }
        for r in 0..=round {
            assert_eq!(fs::read(a.path(format!("f{r}"))).unwrap(), [r; 300_000]);
        }
    }
    run_ok(Command::new("umount").arg(&a.mnt));
}
