//! The run record `raidfs status` reads: written by a running daemon with
//! the documented keys, removed when it stops.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(40);

/// The run records in `dir` (there is one per running daemon).
fn records(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with("sync-") && n.ends_with(".json")
        })
        .collect();
    v.sort();
    v
}

fn read_json(p: &Path) -> Option<serde_json::Value> {
    serde_json::from_slice(&std::fs::read(p).ok()?).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_daemon_keeps_a_run_record_and_removes_it_when_stopped() {
    let m = moto();
    let b = bucket_name("record");
    let src = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let rundir = tempfile::tempdir().unwrap();
    write(src.path(), "a/one.txt", b"one");
    write(src.path(), "two.bin", &vec![7u8; 50_000]);
    let mut k = cmd(&m.endpoint, &b);
    k.env("RAIDFS_RUN_DIR", rundir.path())
        .args([
            "--create-bucket",
            "--prefix",
            "pi/",
            "--debounce",
            "200ms",
            "--state",
        ])
        .arg(state.path().join("s.json"))
        .arg(src.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut d = Daemon(k.spawn().unwrap());
    let pid = d.0.id();

    wait_for("a record in state watching", WAIT, || async {
        records(rundir.path())
            .first()
            .and_then(|p| read_json(p))
            .is_some_and(|v| v["state"] == "watching")
    })
    .await;
    let recs = records(rundir.path());
    assert_eq!(recs.len(), 1, "one record per daemon: {recs:?}");
    let v = read_json(&recs[0]).unwrap();
    let canonical = std::fs::canonicalize(src.path()).unwrap();
    assert_eq!(v["version"], 1);
    assert_eq!(v["source"], canonical.to_str().unwrap());
    assert_eq!(v["bucket"], b.as_str());
    assert_eq!(v["prefix"], "pi/");
    assert_eq!(v["pid"], pid);
    assert!(v["last_success_unix"].as_i64().unwrap() >= v["started_unix"].as_i64().unwrap());
    assert!(v["updated_unix"].as_i64().unwrap() >= v["started_unix"].as_i64().unwrap());
    assert_eq!(v["last_error"], serde_json::Value::Null);
    assert_eq!(v["pending_files"], 0);
    assert_eq!(v["pending_bytes"], 0);
    assert_eq!(v["failed_files"], 0);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&recs[0]).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o644, "any user's raidfs status can read it");

    // SIGTERM: the daemon saves its state, removes its record and exits.
    let st = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let exit = tokio::task::spawn_blocking(move || d.0.wait().map(|s| (s, d)))
        .await
        .unwrap()
        .unwrap();
    assert!(exit.0.success(), "daemon exit: {:?}", exit.0);
    assert_eq!(
        records(rundir.path()),
        Vec::<PathBuf>::new(),
        "record removed on stop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_once_run_leaves_no_record_behind() {
    let m = moto();
    let b = bucket_name("record-once");
    let src = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let rundir = tempfile::tempdir().unwrap();
    write(src.path(), "f.txt", b"x");
    let mut k = cmd(&m.endpoint, &b);
    k.env("RAIDFS_RUN_DIR", rundir.path())
        .args(["--create-bucket", "--once", "--json", "--state"])
        .arg(state.path().join("s.json"))
        .arg(src.path());
    let o = run(k);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(json(&o)["uploaded"], 1);
    assert_eq!(records(rundir.path()), Vec::<PathBuf>::new());
}
