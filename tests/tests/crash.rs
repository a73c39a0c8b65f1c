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
        // Let the copy run across a few periodic metadata commits, so some
        // files are committed while their data is still being written.
        let t = Instant::now();
        while (started.load(Ordering::SeqCst) < 6 || t.elapsed() < Duration::from_millis(2500))
            && t.elapsed() < Duration::from_secs(120)
        {
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

/// The atomic-replace idiom (write a temporary file, fsync it, rename it
/// over the target) under kill -9: afterwards the target holds one complete
/// version, never a mix, an empty file or bytes of a freed file. Three
/// crash rounds, so the kill lands between a rename and the next commit
/// at least once in all likelihood.
#[test]
fn kill_9_during_atomic_replaces_leaves_a_whole_version() {
    let version = |v: u64| pattern(90_000 + v, 1_000_000 + (v as usize % 7) * 10_000);
    let mut a = TestArray::raid5();
    let target = a.path("config");
    let mut f = File::create(&target).unwrap();
    f.write_all(&version(0)).unwrap();
    f.sync_all().unwrap();
    File::open(&a.mnt).unwrap().sync_all().unwrap();
    let mut next = 1u64;
    for round in 0..3 {
        let done = AtomicUsize::new(0);
        let mnt = a.mnt.clone();
        let first = next;
        std::thread::scope(|s| {
            let writer = s.spawn(|| {
                for v in first..first + 100_000 {
                    let tmp = mnt.join(format!("config.tmp{v}"));
                    let Ok(mut f) = File::create(&tmp) else {
                        return;
                    };
                    if f.write_all(&version(v)).is_err() || f.sync_all().is_err() {
                        return;
                    }
                    drop(f);
                    if fs::rename(&tmp, mnt.join("config")).is_err() {
                        return;
                    }
                    done.store(v as usize, Ordering::SeqCst);
                }
            });
            let t = Instant::now();
            while done.load(Ordering::SeqCst) < (first + 15) as usize
                && t.elapsed() < Duration::from_secs(120)
            {
                std::thread::sleep(Duration::from_millis(3));
            }
            assert!(
                done.load(Ordering::SeqCst) >= (first + 15) as usize,
                "the replace loop did not run"
            );
            // Land somewhere inside an iteration, not right after a rename.
            std::thread::sleep(Duration::from_millis(7 * round as u64 + 3));
            a.kill9();
            writer.join().unwrap();
        });
        let last = done.load(Ordering::SeqCst) as u64;
        next = last + 2;
        a.mount();
        let got = fs::read(a.path("config")).unwrap_or_else(|e| {
            panic!(
                "round {round}: reading config after the crash (last acknowledged version {last}): {e}\ndaemon log:\n{}",
                a.log_text()
            )
        });
        let matched = (0..=last + 1).find(|&v| version(v) == got);
        assert!(
            matched.is_some(),
            "round {round}: config ({} bytes) is not any whole version 0..={}",
            got.len(),
            last + 1
        );
        // Leftover temporaries hold a prefix of their version at most.
        for e in fs::read_dir(&a.mnt).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(v) = name.strip_prefix("config.tmp") {
                let v: u64 = v.parse().unwrap();
                let data = fs::read(e.path())
                    .unwrap_or_else(|err| panic!("round {round}: reading {name}: {err}"));
                let want = version(v);
                assert!(
                    data.len() <= want.len() && data == want[..data.len()],
                    "round {round}: {name} holds wrong bytes"
                );
            }
        }
        eprintln!("round {round}: config is version {matched:?}, last acknowledged {last}");
    }
}
