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

/// A `--once --json` pass with a given state file.
fn once(
    endpoint: &str,
    bucket: &str,
    st: &Path,
    root: &Path,
    extra: &[&str],
) -> std::process::Output {
    let mut k = cmd(endpoint, bucket);
    k.args(["--once", "--json", "--create-bucket", "--state"])
        .arg(st)
        .args(extra)
        .arg(root);
    run(k)
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn state_json(st: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(st).unwrap()).unwrap()
}

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
