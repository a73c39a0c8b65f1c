//! Changes `stat` alone cannot show, and files that never settle: racy
//! entries (a rewrite in the same timestamp tick as the read), entries the
//! mirror cannot hold, files that change on every read, and a daemon
//! stopped in the middle of a long pass.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(40);

/// Leaves in the state what a same-size rewrite landing in the same
/// timestamp tick as the read leaves: the entry of `rel` gets the file's
/// current stat while keeping the CRC of the content read before; `racy`
/// says whether the pass that recorded it saw the timestamps as too recent.
fn record_stat_of_current_file(st: &Path, root: &Path, rel: &str, racy: bool) {
    let md = std::fs::symlink_metadata(root.join(rel)).unwrap();
    let mut s = state_json(st);
    let e = &mut s["entries"][rel];
    assert!(e.is_object(), "no entry for {rel}: {s}");
    e["size"] = md.size().into();
    e["mtime_sec"] = md.mtime().into();
    e["mtime_nsec"] = md.mtime_nsec().into();
    e["ctime_sec"] = md.ctime().into();
    e["ctime_nsec"] = md.ctime_nsec().into();
    e["ino"] = md.ino().into();
    e["dev"] = md.dev().into();
    if racy {
        e["racy"] = true.into();
    } else if let Some(o) = e.as_object_mut() {
        o.remove("racy");
    }
    std::fs::write(st, serde_json::to_vec(&s).unwrap()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_read_right_after_a_change_is_read_again() {
    let m = moto();
    let b = bucket_name("racy-once");
    let c = client(&m.endpoint);
    let src = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let root = src.path();
    let st = state.path().join("s.json");

    write(root, "a.txt", b"AAAA");
    let o = once(&m.endpoint, &b, &st, root, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json(&o)["racy"], 1, "{}", stderr(&o));
    assert_eq!(
        state_json(&st)["entries"]["a.txt"]["racy"],
        true,
        "read within the racy window of its change"
    );

    // The rewrite after the read, in the same tick: the state holds the
    // file's present stat and the old content's CRC. The racy mark makes
    // the next pass read it and send the new content.
    write(root, "a.txt", b"BBBB");
    record_stat_of_current_file(&st, root, "a.txt", true);
    let o = once(&m.endpoint, &b, &st, root, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json(&o)["uploaded"], 1, "{}", json(&o));
    assert_eq!(get(&c, &b, "a.txt").await, b"BBBB");

    // What the mark prevents: the same state without it passes for
    // unchanged, and the new content would never be sent.
    write(root, "a.txt", b"CCCC");
    record_stat_of_current_file(&st, root, "a.txt", false);
    let o = once(&m.endpoint, &b, &st, root, &[]);
    assert_eq!(json(&o)["unchanged"].as_u64(), Some(1), "{}", json(&o));
    assert_eq!(get(&c, &b, "a.txt").await, b"BBBB");

    // Once the timestamps are out of the window, a read that finds the
    // content the state records sends nothing and clears the mark.
    write(root, "a.txt", b"DDDD");
    std::thread::sleep(Duration::from_millis(2_300));
    let o = once(&m.endpoint, &b, &st, root, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json(&o)["uploaded"], 1, "{}", json(&o));
    assert_eq!(json(&o)["racy"], 0, "{}", json(&o));
    assert_eq!(get(&c, &b, "a.txt").await, b"DDDD");
    assert!(state_json(&st)["entries"]["a.txt"].get("racy").is_none());

    let mut s = state_json(&st);
    s["entries"]["a.txt"]["racy"] = true.into();
    std::fs::write(&st, serde_json::to_vec(&s).unwrap()).unwrap();
    let o = once(&m.endpoint, &b, &st, root, &[]);
    let j = json(&o);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        (j["uploaded"].as_u64(), j["metadata_updated"].as_u64()),
        (Some(0), Some(0)),
        "read again, same CRC: nothing sent: {j}"
    );
    assert_eq!(j["s3_requests"], 0, "{j}");
    assert!(state_json(&st)["entries"]["a.txt"].get("racy").is_none());

    // A racy entry whose object is gone is sent again by a full reconcile,
    // though the content read is the one recorded.
    let mut s = state_json(&st);
    s["entries"]["a.txt"]["racy"] = true.into();
    std::fs::write(&st, serde_json::to_vec(&s).unwrap()).unwrap();
    c.delete_object()
        .bucket(&b)
        .key("a.txt")
        .send()
        .await
        .unwrap();
    let o = once(&m.endpoint, &b, &st, root, &["--full"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json(&o)["uploaded"], 1, "{}", json(&o));
    assert_eq!(get(&c, &b, "a.txt").await, b"DDDD");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_reads_racy_files_again_without_a_new_event() {
    let m = moto();
    let b = bucket_name("racy-daemon");
    let c = client(&m.endpoint);
    let src = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let root = src.path().to_path_buf();
    let st = state.path().join("s.json");
    let mut k = cmd(&m.endpoint, &b);
    k.args(["--create-bucket", "--debounce", "200ms", "--state"])
        .arg(&st)
        .arg(&root)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _d = Daemon(k.spawn().unwrap());

    write(&root, "f.txt", b"fresh");
    wait_for("file uploaded", WAIT, || exists(&c, &b, "f.txt")).await;
    // Uploaded right after it was written: recorded racy, then read again
    // by a pass of its own once out of the window, with no event at all.
    wait_for("the racy mark cleared by a second look", WAIT, || async {
        std::fs::read(&st)
            .ok()
            .and_then(|d| serde_json::from_slice::<serde_json::Value>(&d).ok())
            .is_some_and(|s| {
                s["entries"]["f.txt"].is_object() && s["entries"]["f.txt"].get("racy").is_none()
            })
    })
    .await;
    assert_eq!(get(&c, &b, "f.txt").await, b"fresh");
}

/// A metric's value in a Prometheus textfile.
fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_that_are_not_mirrored_are_counted_and_fail_verify() {
    use std::os::unix::ffi::OsStrExt;
    let m = moto();
    let b = bucket_name("skipped");
    let src = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let root = src.path();
    let st = state.path().join("s.json");
    let metrics = state.path().join("sync.prom");
    write(root, "ok.txt", b"fine");
    write(root, "d/also.txt", b"fine too");
    write(root, "line\nbreak.txt", b"x");
    std::fs::write(
        root.join(std::ffi::OsStr::from_bytes(b"d/latin1-\xe9.txt")),
        b"y",
    )
    .unwrap();
    let fifo = root.join("d/pipe");
    let ok = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(ok.success(), "mkfifo");

    let mut metrics_arg = vec!["--metrics-file", metrics.to_str().unwrap()];
    let o = once(&m.endpoint, &b, &st, root, &metrics_arg);
    assert!(o.status.success(), "{}", stderr(&o));
    let j = json(&o);
    assert_eq!(j["skipped_total"], 3, "{j}");
    assert_eq!(j["skipped"].as_array().unwrap().len(), 3, "{j}");
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert_eq!(
        metric(&text, "raidfs_sync_skipped_entries"),
        Some(3),
        "{text}"
    );
    assert_eq!(
        metric(&text, "raidfs_sync_last_run_deferred_files"),
        Some(0),
        "{text}"
    );

    // verify: the bucket is no copy of these.
    let verify = || {
        let mut k = cmd(&m.endpoint, &b);
        k.args(["--json", "verify"]).arg(root);
        run(k)
    };
    let o = verify();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let j = json(&o);
    let mut skipped: Vec<String> = j["differences"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["kind"] == "skipped")
        .map(|d| d["path"].as_str().unwrap().to_string())
        .collect();
    skipped.sort();
    assert_eq!(
        skipped,
        ["d/latin1-\u{fffd}.txt", "d/pipe", "line\\nbreak.txt"],
        "{j}"
    );
    assert_eq!(j["differences"].as_array().unwrap().len(), 3, "{j}");

    // The daemon's run record counts them.
    let rundir = tempfile::tempdir().unwrap();
    let mut k = cmd(&m.endpoint, &b);
    k.env("RAIDFS_RUN_DIR", rundir.path())
        .args(["--debounce", "200ms", "--state"])
        .arg(&st)
        .arg(root)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let d = Daemon(k.spawn().unwrap());
    let record = || {
        std::fs::read_dir(rundir.path())
            .ok()?
            .filter_map(|e| e.ok())
            .find(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .and_then(|e| std::fs::read(e.path()).ok())
            .and_then(|d| serde_json::from_slice::<serde_json::Value>(&d).ok())
    };
    wait_for("a record in state watching", WAIT, || async {
        record().is_some_and(|r| r["state"] == "watching")
    })
    .await;
    let r = record().unwrap();
    assert_eq!(r["skipped_entries"], 3, "{r}");
    assert_eq!(r["deferred_files"], 0, "{r}");
    // A pass over another path keeps the count of the whole tree.
    write(root, "new.txt", b"n");
    wait_for("the new file's pass", WAIT, || async {
        state_json(&st)["entries"]["new.txt"].is_object()
    })
    .await;
    wait_for("the record after that pass", WAIT, || async {
        record().is_some_and(|r| r["state"] == "watching" && r["skipped_entries"] == 3)
    })
    .await;
    drop(d);

    std::fs::remove_file(root.join("line\nbreak.txt")).unwrap();
    std::fs::remove_file(root.join(std::ffi::OsStr::from_bytes(b"d/latin1-\xe9.txt"))).unwrap();
    std::fs::remove_file(&fifo).unwrap();
    metrics_arg.push("--no-progress");
    let o = once(&m.endpoint, &b, &st, root, &metrics_arg);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json(&o)["skipped_total"], 0);
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert_eq!(
        metric(&text, "raidfs_sync_skipped_entries"),
        Some(0),
        "{text}"
    );
    let o = verify();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
}

/// Rewrites a byte of `path` every few milliseconds until `stop` is set.
fn keep_changing(
    path: std::path::PathBuf,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let mut i = 0u64;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            f.write_at(&[i as u8], (i * 4099) % 1_000_000).unwrap();
            i += 1;
            std::thread::sleep(Duration::from_millis(3));
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_never_settles_becomes_a_failure_after_five_passes() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let m = moto();
    let b = bucket_name("never-settles");
    let src = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let root = src.path();
    let st = state.path().join("s.json");
    let metrics = state.path().join("sync.prom");
    let notified = state.path().join("notified");
    write(root, "quiet.txt", b"q");
    // Streamed (over 1 MiB) and paced, so every upload lasts long enough to
    // see the file change.
    write(root, "busy.db", &pattern(1_500_000, 1));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = keep_changing(root.join("busy.db"), stop.clone());
    let notify = format!(
        "printf '%s' \"$RAIDFS_SYNC_MESSAGE\" > {}",
        notified.display()
    );
    let args = [
        "--bwlimit",
        "4M",
        "--metrics-file",
        metrics.to_str().unwrap(),
        "--notify-cmd",
        notify.as_str(),
    ];
    for pass in 1..=5u64 {
        let o = once(&m.endpoint, &b, &st, root, &args);
        let j = json(&o);
        assert_eq!(o.status.code(), Some(1), "pass {pass}: {}", stderr(&o));
        assert_eq!(j["deferred"], 1, "pass {pass}: {j}");
        let text = std::fs::read_to_string(&metrics).unwrap();
        assert_eq!(
            metric(&text, "raidfs_sync_last_run_deferred_files"),
            Some(1),
            "{text}"
        );
        assert_eq!(state_json(&st)["deferred"]["busy.db"], pass);
        if pass < 5 {
            assert_eq!(j["failed"], 0, "pass {pass}: deferred, not failed: {j}");
            assert!(!notified.exists(), "pass {pass}: no failure to notify");
        } else {
            assert_eq!(j["failed"], 1, "{j}");
            let f = j["failures"][0].as_str().unwrap();
            assert!(
                f.contains("busy.db") && f.contains("5 passes in a row"),
                "{f}"
            );
            assert_eq!(metric(&text, "raidfs_sync_last_run_failed_files"), Some(1));
            wait_for("--notify-cmd ran", WAIT, || async {
                std::fs::read_to_string(&notified).is_ok_and(|s| s.contains("busy.db"))
            })
            .await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    // Settled: sent, and the count is gone.
    let o = once(&m.endpoint, &b, &st, root, &args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json(&o)["uploaded"], 1);
    assert!(state_json(&st).get("deferred").is_none());
    let c = client(&m.endpoint);
    assert_eq!(
        get(&c, &b, "busy.db").await,
        std::fs::read(root.join("busy.db")).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_a_long_pass_at_the_next_file_and_saves_the_state() {
    let m = moto();
    let b = bucket_name("sigterm");
    let c = client(&m.endpoint);
    let src = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let root = src.path().to_path_buf();
    let st = state.path().join("s.json");
    const FILES: u64 = 40;
    for i in 0..FILES {
        write(&root, &format!("f{i:02}.bin"), &pattern(100_000, i as u32));
    }
    // About 40 s of transfers at 100 KB/s, two files at a time.
    let mut k = cmd(&m.endpoint, &b);
    k.args([
        "--create-bucket",
        "--bwlimit",
        "100K",
        "--jobs",
        "2",
        "--state",
    ])
    .arg(&st)
    .arg(&root)
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    let d = Daemon(k.spawn().unwrap());
    wait_for("the first file in the bucket", WAIT, || async {
        // The bucket itself is created by the daemon.
        c.list_objects_v2().bucket(&b).send().await.is_ok_and(|o| {
            o.contents()
                .iter()
                .any(|o| o.key().is_some_and(|k| k.ends_with(".bin")))
        })
    })
    .await;

    let (status, stderr_text, took) = terminate(d).await;
    assert!(status.success(), "exit {status:?}: {stderr_text}");
    assert!(
        took < Duration::from_secs(10),
        "stopped after {took:?}, not at the next file: {stderr_text}"
    );

    // The state is whole and records what was sent.
    let s = state_json(&st);
    assert_eq!(s["format"], 1, "{s}");
    let done = s["entries"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| k.ends_with(".bin"))
        .count() as u64;
    assert!(
        (1..FILES).contains(&done),
        "{done} files recorded: {stderr_text}"
    );

    // A later run finishes the job, sending only the rest.
    let o = once(&m.endpoint, &b, &st, &root, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j = json(&o);
    assert_eq!(j["uploaded"].as_u64(), Some(FILES - done), "{j}");
    for i in 0..FILES {
        assert_eq!(
            get(&c, &b, &format!("f{i:02}.bin")).await,
            pattern(100_000, i as u32)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_outlasting_the_stop_grace_is_dropped_and_resumed_later() {
    let m = moto();
    let b = bucket_name("stop-grace");
    let c = client(&m.endpoint);
    let src = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let root = src.path().to_path_buf();
    let st = state.path().join("s.json");
    let big = pattern(3 << 20, 9);
    write(&root, "big.bin", &big);
    // Three 1 MiB parts at 256 KiB/s: about 12 s, far beyond the grace.
    let mut k = cmd(&m.endpoint, &b);
    k.args([
        "--create-bucket",
        "--multipart-threshold",
        "1MiB",
        "--part-size",
        "1MiB",
        "--bwlimit",
        "256K",
        "--stop-grace",
        "1s",
        "--state",
    ])
    .arg(&st)
    .arg(&root)
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    let d = Daemon(k.spawn().unwrap());
    wait_for("the multipart upload recorded", WAIT, || async {
        std::fs::read(&st)
            .ok()
            .and_then(|d| serde_json::from_slice::<serde_json::Value>(&d).ok())
            .is_some_and(|s| s["uploads"]["big.bin"].is_object())
    })
    .await;

    let (status, stderr_text, took) = terminate(d).await;
    assert!(status.success(), "exit {status:?}: {stderr_text}");
    assert!(
        took < Duration::from_secs(6),
        "stopped after {took:?}: {stderr_text}"
    );
    assert!(
        stderr_text.contains("transfers still in flight dropped"),
        "{stderr_text}"
    );
    let s = state_json(&st);
    assert!(s["entries"].get("big.bin").is_none(), "not done: {s}");
    assert!(s["uploads"]["big.bin"].is_object(), "resumable: {s}");

    let mut k = cmd(&m.endpoint, &b);
    k.args(ONCE_SMALL_PARTS).arg("--state").arg(&st).arg(&root);
    let o = run(k);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json(&o)["uploaded"], 1, "{}", json(&o));
    assert_eq!(get(&c, &b, "big.bin").await, big);
}

/// SIGTERM to the daemon; its exit status, its stderr and how long it took
/// to exit.
async fn terminate(mut d: Daemon) -> (std::process::ExitStatus, String, Duration) {
    let t0 = std::time::Instant::now();
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &d.0.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let status = d.0.wait().unwrap();
        let mut s = String::new();
        d.0.stderr.take().unwrap().read_to_string(&mut s).unwrap();
        (status, s, t0.elapsed())
    })
    .await
    .unwrap()
}

/// Files removed after the scan, before or while they are sent: no failure
/// (the next scan deals with them), so the pass completes and a first run
/// counts as reconciled; the multipart upload of the one removed while it
/// was being sent is aborted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_removed_between_the_scan_and_their_upload_are_no_failure() {
    let m = moto();
    let b = bucket_name("vanished");
    let c = client(&m.endpoint);
    let src = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let root = src.path();
    let st = state.path().join("s.json");
    // One job at a time, in path order, and paced: while a.bin is being
    // sent, the others wait for their turn.
    write(root, "a.bin", &pattern(3 << 20, 1));
    write(root, "b.txt", b"small");
    write(root, "c.bin", &pattern(1_500_000, 2));
    write(root, "d/e.txt", b"in a directory removed whole");
    write(root, "keep.txt", b"stays");
    let out = state.path().join("out.json");
    let mut k = cmd(&m.endpoint, &b);
    k.args(ONCE_SMALL_PARTS)
        .args(["--bwlimit", "512KiB", "--jobs", "1", "--state"])
        .arg(&st)
        .arg(root)
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::null());
    let mut d = Daemon(k.spawn().unwrap());
    wait_for("a.bin being sent", WAIT, || async {
        c.list_multipart_uploads()
            .bucket(&b)
            .send()
            .await
            .is_ok_and(|u| !u.uploads().is_empty())
    })
    .await;
    for f in ["a.bin", "b.txt", "c.bin"] {
        std::fs::remove_file(root.join(f)).unwrap();
    }
    std::fs::remove_dir_all(root.join("d")).unwrap();
    let status = d.0.wait().unwrap();

    let j: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(status.code(), Some(0), "{j}");
    assert_eq!(j["failed"], 0, "{j}");
    assert_eq!(j["vanished"], 4, "{j}");
    assert_eq!(state_json(&st)["reconciled"], true);
    assert_eq!(state_json(&st)["uploads"], serde_json::json!({}));
    let u = c.list_multipart_uploads().bucket(&b).send().await.unwrap();
    assert!(
        u.uploads().is_empty(),
        "the upload of a.bin was left behind"
    );
    assert_eq!(keys(&c, &b).await, [".raidfs-sync/dirs.json", "keep.txt"]);

    // The next pass has nothing left to do but forget the directory.
    let o = once(&m.endpoint, &b, &st, root, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j = json(&o);
    assert_eq!(
        (j["uploaded"].clone(), j["failed"].clone()),
        (0.into(), 0.into()),
        "{j}"
    );
    assert!(state_json(&st)["entries"].get("d").is_none());
}
