//! The mount daemon killed with SIGKILL in the middle of a large copy: after
//! detaching the dead mount and mounting again, every file that was fsynced
//! before the kill is intact, the tree can be listed, and no file reads back
//! bytes that were never written to it (a file that was not fsynced may be
//! shorter or missing).

use std::fs::{self, File};
use std::io::Write;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use raidfs_tests::{TestArray, hash_bytes, hash_file, pattern, run_ok};

const SYNCED: usize = 40;
const BIG: usize = 4 << 20;

fn synced_seed(i: usize) -> u64 {
    1000 + i as u64
}
fn big_seed(i: usize) -> u64 {
    5000 + i as u64
}

#[test]
fn kill_9_during_copy_keeps_fsynced_files_and_consistency() {
    let mut a = TestArray::raid5();
    fs::create_dir(a.path("synced")).unwrap();
    let mut expected = Vec::new();
    for i in 0..SYNCED {
        let data = pattern(synced_seed(i), 1000 + i * 7919);
        let mut f = File::create(a.path(format!("synced/f{i}"))).unwrap();
        f.write_all(&data).unwrap();
        f.sync_all().unwrap();
        expected.push(hash_bytes(&data));
    }
    File::open(a.path("synced")).unwrap().sync_all().unwrap();

    // The large copy: big files written back to back, never fsynced.
    fs::create_dir(a.path("copy")).unwrap();
    File::open(a.path("copy")).unwrap().sync_all().unwrap();
    let started = AtomicUsize::new(0);
    let copy_dir = a.path("copy");
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            for i in 0..1000 {
                started.store(i + 1, Ordering::SeqCst);
                let data = pattern(big_seed(i), BIG);
                let Ok(mut f) = File::create(copy_dir.join(format!("big{i}"))) else {
                    return i;
                };
                for chunk in data.chunks(256 << 10) {
                    if f.write_all(chunk).is_err() {
                        return i;
                    }
                }
            }
            1000
        });
        let t = Instant::now();
        while started.load(Ordering::SeqCst) < 6 && t.elapsed() < Duration::from_secs(120) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            started.load(Ordering::SeqCst) >= 6,
            "the copy did not start"
        );
        a.kill9();
        let stopped_at = writer.join().unwrap();
        assert!(
            stopped_at < 1000,
            "the copy ran to the end despite the kill"
        );
    });

    a.mount();
    for (i, h) in expected.iter().enumerate() {
        let p = a.path(format!("synced/f{i}"));
        let got = hash_file(&p).unwrap_or_else(|e| panic!("fsynced {}: {e}", p.display()));
        assert_eq!(&got, h, "fsynced file {} changed", p.display());
    }
    run_ok(Command::new("ls").arg("-lR").arg(&a.mnt));
    let mut seen = 0;
    for e in fs::read_dir(a.path("copy")).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        let i: usize = name
            .strip_prefix("big")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected name {name} after the crash"));
        let got = fs::read(e.path()).unwrap_or_else(|err| panic!("reading {name}: {err}"));
        assert!(got.len() <= BIG, "{name} grew to {}", got.len());
        let want = pattern(big_seed(i), got.len());
        if let Some(bad) = got.iter().zip(&want).position(|(g, w)| g != w) {
            panic!(
                "{name} ({} bytes after the crash) reads wrong bytes from offset {bad}",
                got.len()
            );
        }
        seen += 1;
    }
    // The array takes writes again and closes clean.
    fs::write(a.path("after"), b"alive").unwrap();
    a.unmount();
    let st = a.status_json();
    assert_eq!(st["clean"], true, "array not clean after unmount: {st}");
    assert_eq!(st["degraded"], false, "{st}");
    a.mount();
    assert_eq!(fs::read(a.path("after")).unwrap(), b"alive");
    eprintln!("{seen} partly copied files checked after the crash");
}
