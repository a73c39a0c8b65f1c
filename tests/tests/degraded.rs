//! A member disk yanked during a copy. Members are small ext4 images on
//! loop devices; "yanking" shuts that filesystem down (EXT4_IOC_SHUTDOWN:
//! every later I/O on it fails, like a disk pulled from USB) and then
//! detaches it with `umount -l`. The copy must finish, everything must read
//! back identical, and the array must record the member as failed.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use std::process::Stdio;

use raidfs_tests::{Backing, TestArray, bins, pattern, run, run_ok};

/// `_IOR('X', 125, __u32)`: shut an ext4 filesystem down.
const EXT4_IOC_SHUTDOWN: libc::c_ulong = 0x8004_587D;
/// Do not flush the journal: the disk is gone.
const EXT4_GOING_FLAGS_NOLOGFLUSH: u32 = 2;

const FILES: usize = 30;
const SIZE: usize = 1 << 20;

fn yank(fs_root: &Path) {
    let d = File::open(fs_root).unwrap();
    let flags = EXT4_GOING_FLAGS_NOLOGFLUSH;
    // SAFETY: ioctl on an open directory of the filesystem with a pointer to
    // a live u32, as EXT4_IOC_SHUTDOWN expects.
    let r = unsafe { libc::ioctl(d.as_raw_fd(), EXT4_IOC_SHUTDOWN, &flags) };
    assert_eq!(
        r,
        0,
        "EXT4_IOC_SHUTDOWN: {}",
        std::io::Error::last_os_error()
    );
    drop(d);
    run_ok(Command::new("umount").arg("-l").arg(fs_root));
}

/// Mount RAID-5 on four loop-backed members, copy `FILES` files (each
/// fsynced), yank member 2 after the eighth, and check the copy finished,
/// reads back identical, and that the array records member 2 as failed.
/// Returns the array unmounted.
fn yank_during_copy() -> TestArray {
    let mut a = TestArray::builder("raid5", 4)
        .backing(Backing::Loop { mib: 128 })
        .mount();
    let dir = a.path("copy");
    fs::create_dir(&dir).unwrap();
    let written = AtomicUsize::new(0);
    let yanked = std::sync::atomic::AtomicBool::new(false);
    let victim = a.member_fs(2).to_path_buf();
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            for i in 0..FILES {
                let mut f = File::create(dir.join(format!("f{i}")))
                    .unwrap_or_else(|e| panic!("create f{i}: {e}"));
                for chunk in pattern(i as u64, SIZE).chunks(128 << 10) {
                    f.write_all(chunk)
                        .unwrap_or_else(|e| panic!("write f{i}: {e}"));
                }
                f.sync_all().unwrap_or_else(|e| panic!("fsync f{i}: {e}"));
                written.store(i + 1, Ordering::SeqCst);
                // The rest of the copy happens with the member gone.
                while i == 7 && !yanked.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        });
        let t = Instant::now();
        while written.load(Ordering::SeqCst) < 8 && t.elapsed() < Duration::from_secs(120) {
            std::thread::sleep(Duration::from_millis(5));
        }
        yank(&victim);
        yanked.store(true, Ordering::SeqCst);
        writer
            .join()
            .expect("the copy must finish with a member gone");
    });
    // Nothing may be written where the yanked disk was mounted.
    assert!(
        fs::read_dir(&victim).unwrap().next().is_none(),
        "files appeared under the yanked member's mount point"
    );
    check(&a);
    a.unmount();
    let st = a.status_json();
    assert_eq!(st["degraded"], true, "status after the yank: {st}");
    assert_eq!(st["failed"], false, "{st}");
    assert_eq!(
        st["members"][2]["state"], "failed",
        "the survivors must record member 2 as failed: {st}"
    );
    a
}

fn check(a: &TestArray) {
    for i in 0..FILES {
        let got = fs::read(a.path(format!("copy/f{i}")))
            .unwrap_or_else(|e| panic!("read f{i} degraded: {e}"));
        assert!(got == pattern(i as u64, SIZE), "f{i} reads back wrong");
    }
}

#[test]
fn member_yanked_during_copy_then_mount_the_survivors() {
    let mut a = yank_during_copy();
    a.members.remove(2);
    a.mount();
    check(&a);
}

#[test]
fn member_yanked_during_copy_then_mount_with_the_dead_member_listed() {
    // As from /etc/fstab: the list still names the dead disk's directory,
    // which no longer exists. Like `mdadm --assemble` with explicit devices,
    // an explicit list naming a non-member is refused; the message names the
    // directory and says how to start the array degraded without it.
    let a = yank_during_copy();
    let dead = a.members[2].display().to_string();
    let out = run(Command::new(&bins().mount)
        .arg(a.spec())
        .arg(&a.mnt)
        .arg("--foreground")
        .stdin(Stdio::null()));
    assert!(!out.status.success(), "a list naming a dead member mounted");
    assert!(!raidfs_tests::is_mounted(&a.mnt));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&dead),
        "the message names the directory: {err}"
    );
    assert!(err.contains("degraded"), "the message says degraded: {err}");
    assert!(
        err.contains("mount.raidfs") && err.contains("leave"),
        "the message says how to mount without it: {err}"
    );
    // Mounting by UUID (unique, where the name could match another test's
    // array) among candidate directories that include the dead one: the
    // members found assemble degraded and everything reads back.
    let uuid = a.status_json()["uuid"].as_str().unwrap().to_string();
    let candidates = a.spec();
    let log = std::fs::File::create(a.root.join("by-uuid.log")).unwrap();
    let mut child = Command::new(&bins().mount)
        .arg(&uuid)
        .arg(&a.mnt)
        .arg("--foreground")
        .arg("-o")
        .arg(format!("members={candidates}"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !raidfs_tests::is_mounted(&a.mnt) {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "mount by UUID exited ({status}):\n{}",
                fs::read_to_string(a.root.join("by-uuid.log")).unwrap_or_default()
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "mount by UUID did not appear"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    check(&a);
    // The mount says that it started degraded and what a missing member
    // needs to rejoin.
    let log = fs::read_to_string(a.root.join("by-uuid.log")).unwrap_or_default();
    assert!(
        log.contains("started DEGRADED")
            && log.contains("2 (missing)")
            && log.contains("raidfs replace"),
        "no degraded warning: {log}"
    );
    run_ok(Command::new("umount").arg(&a.mnt));
    let status = child.wait().unwrap();
    assert!(status.success(), "daemon exited with {status}");
    let st = a.status_json();
    assert_eq!(st["degraded"], true, "{st}");
    assert_eq!(st["failed"], false, "{st}");
}

/// Mounted with `readd`: a disk yanked in the middle of a copy and plugged
/// in again (mounted where it was) is re-added by the mount, with only the
/// files changed while it was out rebuilt; until it is back nothing is
/// written where it was, and afterwards it serves everything.
#[test]
fn with_readd_a_yanked_disk_plugged_in_again_is_re_added_while_mounted() {
    let mut a = TestArray::builder("raid5", 4)
        .backing(Backing::Loop { mib: 128 })
        .option("readd")
        .mount();
    let dir = a.path("copy");
    fs::create_dir(&dir).unwrap();
    let write = |i: usize| {
        let mut f = File::create(dir.join(format!("f{i}"))).unwrap();
        f.write_all(&pattern(i as u64, SIZE)).unwrap();
        f.sync_all().unwrap();
    };
    (0..8).for_each(write);
    let victim = a.member_fs(2).to_path_buf();
    yank(&victim);
    (8..FILES).for_each(write);
    let st = a.live_status_json();
    assert_eq!(st["members"][2]["state"], "failed", "{st}");
    assert_eq!(st["members"][2]["readd"], true, "{st}");
    assert_eq!(st["members"][1]["readd"], false, "{st}");
    assert!(
        fs::read_dir(&victim).unwrap().next().is_none(),
        "files appeared under the yanked member's mount point"
    );

    a.replug(2);
    let start = Instant::now();
    loop {
        let st = a.live_status_json();
        if st["degraded"] == false {
            assert_eq!(st["members"][2]["state"], "active", "{st}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "not re-added: {st}\n{}",
            a.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    check(&a);
    a.unmount();

    // It serves: without member 0 everything reads back.
    a.set_options(&[]);
    a.members.remove(0);
    a.mount();
    check(&a);
}
