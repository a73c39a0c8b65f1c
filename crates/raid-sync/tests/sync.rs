//! End-to-end tests of `raidfs-sync` against a real S3-compatible server
//! (moto) on 127.0.0.1: the binary runs as a user would run it.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Stdio;
use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(40);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_sync_mirrors_the_tree_and_an_unchanged_tree_costs_no_request() {
    let m = moto();
    let b = bucket_name("initial");
    let c = client(&m.endpoint);
    let src = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let root = src.path();
    write(root, "a.txt", b"hello world");
    write(root, "dir/sub/b.bin", &vec![7u8; 100_000]);
    std::fs::create_dir(root.join("empty")).unwrap();
    std::os::unix::fs::symlink("dir/sub/b.bin", root.join("link")).unwrap();
    std::fs::set_permissions(root.join("a.txt"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let st = state.path().join("s.json");
    let once = |extra: &[&str]| {
        let mut k = cmd(&m.endpoint, &b);
        k.args(["--once", "--json", "--create-bucket", "--state"])
            .arg(&st)
            .args(extra)
            .arg(root);
        run(k)
    };

    let o = once(&[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j = json(&o);
    assert_eq!(j["full_reconcile"], true);
    assert_eq!(j["failed"], 0);
    assert_eq!(
        keys(&c, &b).await,
        // Directories with content are in the manifest, not markers.
        [
            ".raidfs-sync/dirs.json",
            "a.txt",
            "dir/sub/b.bin",
            "empty/",
            "link"
        ]
    );
    assert_eq!(get(&c, &b, "a.txt").await, b"hello world");
    assert_eq!(get(&c, &b, "link").await, b"dir/sub/b.bin");
    let h = c
        .head_object()
        .bucket(&b)
        .key("a.txt")
        .send()
        .await
        .unwrap();
    let meta = h.metadata().unwrap();
    let md = std::fs::metadata(root.join("a.txt")).unwrap();
    assert_eq!(meta["mode"], (0o100600u32).to_string());
    assert_eq!(meta["uid"], md.uid().to_string());
    assert_eq!(
        meta["mtime"],
        format!("{}.{:09}", md.mtime(), md.mtime_nsec())
    );
    assert_eq!(meta["crc32"], "0d4a1185");
    let v = raw_get(&m.endpoint, &format!("/{b}?versioning"));
    assert!(v.contains("<Status>Enabled</Status>"), "{v}");

    // Unchanged tree: nothing sent, not even a listing.
    let j = json(&once(&[]));
    assert_eq!(j["s3_requests"], 0, "{j}");
    assert_eq!(j["unchanged"], 6);

    // One change: one upload; an attribute change: a server-side copy.
    write(root, "a.txt", b"hello again");
    std::fs::set_permissions(
        root.join("dir/sub/b.bin"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    let j = json(&once(&[]));
    assert_eq!(
        (j["uploaded"].as_u64(), j["metadata_updated"].as_u64()),
        (Some(1), Some(1)),
        "{j}"
    );
    assert_eq!(get(&c, &b, "a.txt").await, b"hello again");

    // Lost state: the full reconcile adopts what is already there.
    std::fs::remove_file(&st).unwrap();
    let j = json(&once(&[]));
    assert_eq!(
        // The empty directory's marker and the symlink are sent again.
        (j["uploaded"].as_u64(), j["adopted"].as_u64()),
        (Some(2), Some(2)),
        "{j}"
    );

    let mut k = cmd(&m.endpoint, &b);
    k.arg("verify").arg(root);
    let o = run(k);
    assert!(
        o.status.success(),
        "verify: {}",
        String::from_utf8_lossy(&o.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_uploads_renames_and_deletes_while_running() {
    let m = moto();
    let b = bucket_name("daemon");
    let c = client(&m.endpoint);
    let src = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let root = src.path().to_path_buf();
    let metrics = state.path().join("sync.prom");
    let mut k = cmd(&m.endpoint, &b);
    k.args(["--create-bucket", "--debounce", "200ms", "--state"])
        .arg(state.path().join("s.json"))
        .arg("--metrics-file")
        .arg(&metrics)
        .arg(&root)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _d = Daemon(k.spawn().unwrap());

    write(&root, "docs/report.txt", &vec![b'x'; 300_000]);
    wait_for("new file uploaded", WAIT, || {
        exists(&c, &b, "docs/report.txt")
    })
    .await;

    std::fs::rename(root.join("docs/report.txt"), root.join("docs/final.txt")).unwrap();
    wait_for("rename mirrored", WAIT, || async {
        exists(&c, &b, "docs/final.txt").await && !exists(&c, &b, "docs/report.txt").await
    })
    .await;
    assert_eq!(get(&c, &b, "docs/final.txt").await, vec![b'x'; 300_000]);
    // The rename was a server-side copy, not a second upload.
    wait_for("metrics show the copy", WAIT, || async {
        copied(&s_or(&metrics)) >= 1
    })
    .await;

    std::fs::remove_file(root.join("docs/final.txt")).unwrap();
    wait_for("delete mirrored", WAIT, || async {
        !exists(&c, &b, "docs/final.txt").await
    })
    .await;
    let vs = c
        .list_object_versions()
        .bucket(&b)
        .prefix("docs/final.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(vs.delete_markers().len(), 1, "a delete is a delete marker");
    assert_eq!(vs.versions().len(), 1, "the content is kept as a version");
}

fn s_or(p: &std::path::Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

fn copied(metrics: &str) -> u64 {
    metrics
        .lines()
        .find(|l| l.starts_with("raidfs_sync_copied_objects_total{"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_multipart_upload_resumes_from_the_parts_already_sent() {
    let m = moto();
    let b = bucket_name("resume");
    let c = client(&m.endpoint);
    let src = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let root = src.path();
    let data = pattern(12 << 20, 0);
    write(root, "big.bin", &data);
    let st = state.path().join("s.json");
    let args = |k: &mut std::process::Command| {
        k.args(ONCE_SMALL_PARTS).arg("--state").arg(&st);
    };
    let mut k = cmd(&m.endpoint, &b);
    args(&mut k);
    k.args(["--bwlimit", "2MiB", "--jobs", "2"])
        .arg(root)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut d = Daemon(k.spawn().unwrap());

    // Kill it once some (not all) parts are on the server.
    let parts = std::sync::atomic::AtomicUsize::new(0);
    wait_for("some parts uploaded", WAIT, || async {
        let Ok(u) = c.list_multipart_uploads().bucket(&b).send().await else {
            return false;
        };
        let Some(up) = u.uploads().first() else {
            return false;
        };
        let l = raw_get(
            &m.endpoint,
            &format!("/{b}/big.bin?uploadId={}", up.upload_id().unwrap()),
        );
        let n = l.matches("<PartNumber>").count();
        parts.store(n, std::sync::atomic::Ordering::SeqCst);
        n >= 3
    })
    .await;
    d.0.kill().unwrap();
    d.0.wait().unwrap();
    assert!(
        parts.into_inner() < 12,
        "the upload finished before it could be interrupted"
    );

    let mut k = cmd(&m.endpoint, &b);
    args(&mut k);
    k.arg(root);
    let o = run(k);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j = json(&o);
    assert!(j["parts_reused"].as_u64().unwrap() >= 3, "{j}");
    assert_eq!(get(&c, &b, "big.bin").await, data);
    let h = c
        .head_object()
        .bucket(&b)
        .key("big.bin")
        .send()
        .await
        .unwrap();
    assert_eq!(
        h.metadata().unwrap()["crc32"],
        format!("{:08x}", crc32fast::hash(&data))
    );
    let u = c.list_multipart_uploads().bucket(&b).send().await.unwrap();
    assert!(u.uploads().is_empty(), "no upload left behind");
    let mut k = cmd(&m.endpoint, &b);
    k.arg("verify").arg(root);
    assert!(run(k).status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_at_a_time_before_and_after_a_delete() {
    let m = moto();
    let b = bucket_name("restore");
    let src = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let root = src.path();
    let st = state.path().join("s.json");
    let sync = || {
        let mut k = cmd(&m.endpoint, &b);
        k.args(["--once", "--create-bucket", "--state"])
            .arg(&st)
            .arg(root);
        let o = run(k);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    write(root, "keep.txt", b"keep");
    std::os::unix::fs::symlink("keep.txt", root.join("lnk")).unwrap();
    std::fs::create_dir(root.join("emptydir")).unwrap();
    std::fs::set_permissions(
        root.join("emptydir"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    write(root, "gone/doomed.txt", b"doomed v1");
    std::fs::set_permissions(
        root.join("gone/doomed.txt"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    let mtime = std::fs::metadata(root.join("gone/doomed.txt"))
        .unwrap()
        .mtime();
    sync();
    // S3 times have whole seconds at worst: keep a clear second between events.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before_delete = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    let next_second = 1000
        - (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_millis() as u64);
    tokio::time::sleep(Duration::from_millis(next_second + 200)).await;
    std::fs::remove_dir_all(root.join("gone")).unwrap();
    write(root, "later.txt", b"created after");
    sync();

    let restore = |at: Option<&str>, target: &std::path::Path, force: bool| {
        let mut k = cmd(&m.endpoint, &b);
        k.arg("restore");
        if let Some(at) = at {
            k.args(["--at", at]);
        }
        if force {
            k.arg("--force");
        }
        run({
            k.arg(target);
            k
        })
    };
    let t1 = out.path().join("before");
    let o = restore(Some(&before_delete), &t1, false);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read(t1.join("gone/doomed.txt")).unwrap(),
        b"doomed v1"
    );
    assert_eq!(std::fs::read(t1.join("keep.txt")).unwrap(), b"keep");
    assert!(
        !t1.join("later.txt").exists(),
        "a later file must be absent"
    );
    let md = std::fs::metadata(t1.join("gone/doomed.txt")).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o640);
    assert_eq!(md.mtime(), mtime);
    assert_eq!(
        std::fs::read_link(t1.join("lnk")).unwrap(),
        std::path::Path::new("keep.txt")
    );
    let d = std::fs::metadata(t1.join("emptydir")).unwrap();
    assert!(d.is_dir());
    assert_eq!(d.mode() & 0o7777, 0o700);

    let t2 = out.path().join("latest");
    assert!(restore(None, &t2, false).status.success());
    assert!(!t2.join("gone/doomed.txt").exists());
    assert_eq!(
        std::fs::read(t2.join("later.txt")).unwrap(),
        b"created after"
    );

    // Existing files are not overwritten without --force.
    std::fs::write(t1.join("keep.txt"), b"local edit").unwrap();
    let o = restore(Some(&before_delete), &t1, false);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--force"));
    assert_eq!(std::fs::read(t1.join("keep.txt")).unwrap(), b"local edit");
    assert!(restore(Some(&before_delete), &t1, true).status.success());
    assert_eq!(std::fs::read(t1.join("keep.txt")).unwrap(), b"keep");

    // History of one file.
    let mut k = cmd(&m.endpoint, &b);
    k.args(["versions", "gone/doomed.txt"]);
    let o = run(k);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success());
    assert_eq!(
        text.lines().filter(|l| l.contains("deleted")).count(),
        1,
        "{text}"
    );
    assert_eq!(
        text.lines().filter(|l| l.contains(" old ")).count(),
        1,
        "{text}"
    );

    // A listing into a pipe its reader has closed (`| head` done early)
    // ends as other Unix tools do, by SIGPIPE, not in a panic.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut k = cmd(&m.endpoint, &b);
    k.args(["versions", "gone/doomed.txt"]).stdout(writer);
    let o = k.output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&o.status),
        Some(13), // SIGPIPE
        "{:?} {err}",
        o.status
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_catches_a_tampered_object() {
    let m = moto();
    let b = bucket_name("verify");
    let c = client(&m.endpoint);
    let src = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let root = src.path();
    write(root, "good.txt", b"good");
    write(root, "victim.txt", b"original content");
    let mut k = cmd(&m.endpoint, &b);
    k.args(["--once", "--create-bucket", "--state"])
        .arg(state.path().join("s"))
        .arg(root);
    assert!(run(k).status.success());
    let verify = || {
        let mut k = cmd(&m.endpoint, &b);
        k.args(["verify", "--json"]).arg(root);
        run(k)
    };
    assert!(verify().status.success());

    // Same size, different bytes, even the metadata copied over.
    put_keeping_metadata(&c, &b, "victim.txt", b"tampered content".to_vec()).await;
    let o = verify();
    assert_eq!(o.status.code(), Some(1));
    let j = json(&o);
    let diffs = j["differences"].as_array().unwrap();
    assert_eq!(diffs.len(), 1, "{j}");
    assert_eq!(diffs[0]["path"], "victim.txt");
    assert_eq!(diffs[0]["kind"], "checksum");

    let mut k = cmd(&m.endpoint, &b);
    k.args(["verify", "--download", "--json"]).arg(root);
    assert_eq!(json(&run(k))["differences"].as_array().unwrap().len(), 1);
}

/// Names near NAME_MAX (255 bytes): a file and a symlink of 250 bytes sync
/// and restore (the temporary name beside each does not grow with it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_names_sync_and_restore() {
    let m = moto();
    let b = bucket_name("long-names");
    let c = client(&m.endpoint);
    let src = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let root = src.path();
    let file = format!("f{}", "x".repeat(249));
    let link = format!("l{}", "y".repeat(249));
    assert_eq!((file.len(), link.len()), (250, 250));
    write(root, &format!("d/{file}"), b"long name");
    std::os::unix::fs::symlink(&file, root.join("d").join(&link)).unwrap();
    let o = once(&m.endpoint, &b, &state.path().join("s.json"), root, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(exists(&c, &b, &format!("d/{file}")).await);
    assert!(exists(&c, &b, &format!("d/{link}")).await);

    let target = out.path().join("t");
    let mut k = cmd(&m.endpoint, &b);
    k.args(["restore", "--json"]).arg(&target);
    let o = run(k);
    assert!(o.status.success(), "{}", stderr(&o));
    let d = target.join("d");
    assert_eq!(std::fs::read(d.join(&file)).unwrap(), b"long name");
    assert_eq!(
        std::fs::read_link(d.join(&link)).unwrap(),
        std::path::Path::new(&file)
    );
    let mut names: Vec<String> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, vec![file, link], "temporary names left behind");
}

/// One local file gone and another replaced by a directory between the
/// scan and their reading (held at the listing, the first request): each
/// is a difference, the others are checked, the report is printed and the
/// exit code is 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_files_it_cannot_read_and_checks_the_rest() {
    let m = moto();
    let b = bucket_name("verify-unreadable");
    let src = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let root = src.path();
    write(root, "good.txt", b"good");
    write(root, "gone.txt", b"gone");
    write(root, "now-a-dir", b"a file when synced");
    let o = once(&m.endpoint, &b, &state.path().join("s"), root, &[]);
    assert!(o.status.success(), "{}", stderr(&o));

    let gate = Gate::new(&m.endpoint);
    let mut k = cmd(&gate.endpoint(), &b);
    k.args(["verify", "--json"])
        .arg(root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = k.spawn().unwrap();
    let listing = gate.accept();
    std::fs::remove_file(root.join("gone.txt")).unwrap();
    std::fs::remove_file(root.join("now-a-dir")).unwrap();
    std::fs::create_dir(root.join("now-a-dir")).unwrap();
    gate.open(listing);
    let o = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let j = json(&o);
    let diffs: Vec<(&str, &str)> = j["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["path"].as_str().unwrap(), d["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(
        diffs,
        [("gone.txt", "extra"), ("now-a-dir", "skipped")],
        "{j}"
    );
    assert_eq!(j["matched"], 1, "{j}");
}

/// One object that fails its checksum does not stop the restore: the other
/// files, the symlink and the directory attributes are restored, the bad
/// one is reported and the exit code is 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_reports_a_damaged_object_and_restores_the_rest() {
    let m = moto();
    let b = bucket_name("damaged");
    let c = client(&m.endpoint);
    let src = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let root = src.path();
    write(root, "a.txt", b"first file");
    write(root, "d/b.bin", &pattern(300_000, 1));
    write(root, "d/victim.txt", b"original content");
    std::os::unix::fs::symlink("a.txt", root.join("link")).unwrap();
    let d = root.join("d");
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o750)).unwrap();
    let t = filetime::FileTime::from_unix_time(1_600_000_000, 123);
    filetime::set_file_times(&d, t, t).unwrap();
    let o = once(&m.endpoint, &b, &state.path().join("s.json"), root, &[]);
    assert!(o.status.success(), "{}", stderr(&o));

    // Other bytes of the same size under the same metadata.
    put_keeping_metadata(&c, &b, "d/victim.txt", b"damaged content!".to_vec()).await;

    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("t");
    let mut k = cmd(&m.endpoint, &b);
    k.args(["restore", "--json", "--jobs", "1"]).arg(&target);
    let o = run(k);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let j = json(&o);
    let failed = j["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{j}");
    let f = failed[0].as_str().unwrap();
    assert!(
        f.starts_with("d/victim.txt: ") && f.contains("checksum"),
        "{j}"
    );
    assert!(err.contains("failed: d/victim.txt"), "{err}");
    assert_eq!(
        (j["files"].clone(), j["symlinks"].clone()),
        (2.into(), 1.into()),
        "{j}"
    );

    assert_eq!(std::fs::read(target.join("a.txt")).unwrap(), b"first file");
    assert!(std::fs::read(target.join("d/b.bin")).unwrap() == pattern(300_000, 1));
    assert_eq!(
        std::fs::read_link(target.join("link")).unwrap(),
        std::path::Path::new("a.txt")
    );
    let md = std::fs::metadata(target.join("d")).unwrap();
    assert_eq!(
        (md.mode() & 0o7777, md.mtime(), md.mtime_nsec()),
        (0o750, 1_600_000_000, 123)
    );
    // Nothing of the bad object, not even its temporary file.
    let names: Vec<String> = std::fs::read_dir(target.join("d"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["b.bin"], "{names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_refuses_keys_that_escape_the_target() {
    let m = moto();
    let b = bucket_name("escape");
    let c = client(&m.endpoint);
    c.create_bucket().bucket(&b).send().await.unwrap();
    for key in ["ok.txt", "../escaped.txt"] {
        c.put_object()
            .bucket(&b)
            .key(key)
            .body(b"x".to_vec().into())
            .send()
            .await
            .unwrap();
    }
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("t");
    let mut k = cmd(&m.endpoint, &b);
    k.arg("restore").arg(&target);
    let o = run(k);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("../escaped.txt") && err.contains("refusing"),
        "{err}"
    );
    assert!(!out.path().join("escaped.txt").exists());
    assert!(
        !target.join("ok.txt").exists(),
        "nothing is written when refusing"
    );
}

/// A version archived to Glacier (a lifecycle rule moved it) cannot be read
/// until it is restored from the archive: the restore leaves it out, names
/// it, restores everything else and exits 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_names_archived_objects_and_restores_the_rest() {
    let m = moto();
    let b = bucket_name("archived");
    let c = client(&m.endpoint);
    c.create_bucket().bucket(&b).send().await.unwrap();
    for (key, class) in [
        ("warm.txt", aws_sdk_s3::types::StorageClass::Standard),
        ("cold.txt", aws_sdk_s3::types::StorageClass::Glacier),
        ("d/colder.txt", aws_sdk_s3::types::StorageClass::DeepArchive),
    ] {
        c.put_object()
            .bucket(&b)
            .key(key)
            .storage_class(class)
            .body(b"x".to_vec().into())
            .send()
            .await
            .unwrap();
    }
    let (out, j) = restore_leaving_out(&m.endpoint, &b, &["cold.txt", "d/colder.txt"]);
    let target = out.path().join("t");
    assert_eq!(j["files"], 1, "{j}");
    assert_eq!(std::fs::read(target.join("warm.txt")).unwrap(), b"x");
    assert!(!target.join("cold.txt").exists());
}

/// S3 refuses CopyObject from an archived object (GLACIER, DEEP_ARCHIVE)
/// until it is restored: an attribute change or a rename of a file whose
/// object is archived is uploaded instead of failing on every pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attribute_changes_and_renames_of_archived_objects_are_uploaded() {
    let m = moto();
    let b = bucket_name("archived-copy");
    let c = client(&m.endpoint);
    let src = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let root = src.path();
    let st = state.path().join("s.json");
    write(root, "a.txt", b"attributes change");
    write(root, "b.txt", b"renamed");
    std::os::unix::fs::symlink("a.txt", root.join("link")).unwrap();
    let glacier = ["--storage-class", "GLACIER"];
    let o = once(&m.endpoint, &b, &st, root, &glacier);
    assert!(o.status.success(), "{}", stderr(&o));
    let h = head(&c, &b, "a.txt").await;
    assert_eq!(h.storage_class().map(|s| s.as_str()), Some("GLACIER"));

    std::fs::set_permissions(root.join("a.txt"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::rename(root.join("b.txt"), root.join("c.txt")).unwrap();
    // A symlink's attribute that counts is its owner (changing it takes
    // root: without, the symlink is left as it is).
    let link = root.join("link");
    let gid = std::fs::symlink_metadata(&link).unwrap().gid() + 1;
    let chowned = std::os::unix::fs::lchown(&link, None, Some(gid)).is_ok();
    let o = once(&m.endpoint, &b, &st, root, &glacier);
    assert!(o.status.success(), "{}", stderr(&o));
    let j = json(&o);
    assert_eq!(j["failed"], 0, "{j}");
    assert_eq!(
        (
            j["uploaded"].as_u64(),
            j["metadata_updated"].as_u64(),
            j["copied"].as_u64()
        ),
        (Some(2 + u64::from(chowned)), Some(0), Some(0)),
        "{j}"
    );
    let h = head(&c, &b, "a.txt").await;
    assert_eq!(h.metadata().unwrap()["mode"], (0o100640u32).to_string());
    assert_eq!(get_archived(&c, &b, "c.txt").await, b"renamed");
    assert!(!exists(&c, &b, "b.txt").await);
    if chowned {
        let h = head(&c, &b, "link").await;
        assert_eq!(h.metadata().unwrap()["gid"], gid.to_string());
    }

    // Nothing left to do: the next pass neither fails nor sends anything.
    let j = json(&once(&m.endpoint, &b, &st, root, &glacier));
    assert_eq!(
        (j["failed"].as_u64(), j["uploaded"].as_u64()),
        (Some(0), Some(0)),
        "{j}"
    );
}

/// A lifecycle rule may archive the directory manifest too (with
/// `--min-transition-size 0`, or a tree whose manifest is large): the
/// restore then leaves the directory attributes out, names the manifest as
/// archived, restores every file and exits 1, instead of failing outright.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_with_an_archived_directory_manifest_restores_the_files() {
    let m = moto();
    let b = bucket_name("archived-manifest");
    let c = client(&m.endpoint);
    let src = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let root = src.path();
    write(root, "d/f", b"in a directory");
    let o = once(&m.endpoint, &b, &state.path().join("s.json"), root, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    // What the lifecycle transition does to the manifest's version.
    let manifest = ".raidfs-sync/dirs.json";
    c.copy_object()
        .bucket(&b)
        .copy_source(format!("{b}/{manifest}"))
        .key(manifest)
        .storage_class(aws_sdk_s3::types::StorageClass::Glacier)
        .send()
        .await
        .unwrap();

    let (out, _) = restore_leaving_out(&m.endpoint, &b, &[manifest]);
    let target = out.path().join("t");
    assert_eq!(
        std::fs::read(target.join("d/f")).unwrap(),
        b"in a directory"
    );
}

/// A restore of bucket `b` into `t` in a new directory that leaves out the
/// `archived` keys: names each on stderr, lists them in `--json` and exits
/// 1. Returns the directory and the summary.
fn restore_leaving_out(
    endpoint: &str,
    b: &str,
    archived: &[&str],
) -> (tempfile::TempDir, serde_json::Value) {
    let out = tempfile::tempdir().unwrap();
    let mut k = cmd(endpoint, b);
    k.args(["--json", "restore"]).arg(out.path().join("t"));
    let o = run(k);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    for key in archived {
        assert!(
            err.contains(&format!(
                "archived (restore it from Glacier first, then run this again): {key}"
            )),
            "{err}"
        );
    }
    let j = json(&o);
    assert_eq!(j["archived"], serde_json::json!(archived), "{j}");
    (out, j)
}

/// The body of an archived object: restored first, as S3 requires.
async fn get_archived(c: &aws_sdk_s3::Client, b: &str, key: &str) -> Vec<u8> {
    c.restore_object()
        .bucket(b)
        .key(key)
        .restore_request(aws_sdk_s3::types::RestoreRequest::builder().days(1).build())
        .send()
        .await
        .unwrap();
    get(c, b, key).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_made_while_the_server_is_down_arrive_when_it_is_back() {
    let m = moto();
    let b = bucket_name("outage");
    let c = client(&m.endpoint);
    let mut proxy = Proxy::new(&m.endpoint);
    let src = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let root = src.path().to_path_buf();
    write(&root, "before.txt", b"before");
    let marker = state.path().join("notified");
    let mut k = cmd(&proxy.endpoint(), &b);
    k.args([
        "--create-bucket",
        "--debounce",
        "200ms",
        "--retry-max",
        "2s",
        "--retries",
        "2",
        "--state",
    ])
    .arg(state.path().join("s.json"))
    .arg("--notify-cmd")
    .arg(format!(
        "echo \"$RAIDFS_SYNC_MESSAGE\" > {}",
        marker.display()
    ))
    .arg(&root)
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let _d = Daemon(k.spawn().unwrap());
    wait_for("initial upload", WAIT, || exists(&c, &b, "before.txt")).await;

    proxy.stop();
    for i in 0..5 {
        write(
            &root,
            &format!("during/{i}.txt"),
            format!("file {i}").as_bytes(),
        );
    }
    std::fs::remove_file(root.join("before.txt")).unwrap();
    wait_for("failure notified", WAIT, || async { marker.exists() }).await;
    proxy.start();

    wait_for("everything mirrored after the outage", WAIT, || async {
        let k = keys(&c, &b).await;
        (0..5).all(|i| k.contains(&format!("during/{i}.txt")))
            && !k.contains(&"before.txt".to_string())
    })
    .await;
    assert_eq!(get(&c, &b, "during/3.txt").await, b"file 3");
}

/// `lifecycle` for one prefix replaces that prefix's rules only: the rules
/// of another prefix (also those written with the ids of older versions)
/// and other rules of the bucket are kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_of_one_prefix_keeps_the_rules_of_another() {
    use aws_sdk_s3::types::{
        BucketLifecycleConfiguration, ExpirationStatus, LifecycleExpiration, LifecycleRule,
        LifecycleRuleFilter,
    };
    let m = moto();
    let b = bucket_name("lifecycle-prefixes");
    let c = client(&m.endpoint);
    c.create_bucket().bucket(&b).send().await.unwrap();
    // Another tool's rule, and an old-style raidfs-sync rule of prefix `old`.
    let other = |id: &str, prefix: &str| {
        LifecycleRule::builder()
            .id(id)
            .status(ExpirationStatus::Enabled)
            .filter(LifecycleRuleFilter::builder().prefix(prefix).build())
            .expiration(LifecycleExpiration::builder().days(9).build())
            .build()
            .unwrap()
    };
    c.put_bucket_lifecycle_configuration()
        .bucket(&b)
        .lifecycle_configuration(
            BucketLifecycleConfiguration::builder()
                .rules(other("someone-else", "tmp/"))
                .rules(other("raidfs-sync-expire", "old/"))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let lifecycle = |prefix: &str, days: &str| {
        let mut k = cmd(&m.endpoint, &b);
        k.args([
            "--prefix",
            prefix,
            "lifecycle",
            "--glacier-after",
            "30d",
            "--expire-noncurrent-after",
            days,
        ]);
        let o = run(k);
        assert!(o.status.success(), "{}", stderr(&o));
    };
    let show = |prefix: &str| {
        let mut k = cmd(&m.endpoint, &b);
        k.args(["--prefix", prefix, "lifecycle", "--show"]);
        let o = run(k);
        assert!(o.status.success(), "{}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    lifecycle("pi", "365d");
    lifecycle("laptop", "100d");
    // Again for pi, with another period: its rules replaced, not added.
    lifecycle("pi", "200d");
    for prefix in ["pi", "laptop"] {
        let out = show(prefix);
        for id in ["raidfs-sync-archive", "raidfs-sync-expire"] {
            assert!(out.contains(&format!("\"{id}:{prefix}/\"")), "{out}");
        }
    }
    let conf = c
        .get_bucket_lifecycle_configuration()
        .bucket(&b)
        .send()
        .await
        .unwrap();
    let mut ids: Vec<&str> = conf.rules().iter().filter_map(|r| r.id()).collect();
    ids.sort();
    assert_eq!(
        ids,
        [
            "raidfs-sync-archive:laptop/",
            "raidfs-sync-archive:pi/",
            "raidfs-sync-expire",
            "raidfs-sync-expire:laptop/",
            "raidfs-sync-expire:pi/",
            "someone-else",
        ]
    );
    let expire_days = |id: &str| {
        conf.rules()
            .iter()
            .find(|r| r.id() == Some(id))
            .and_then(|r| r.noncurrent_version_expiration())
            .and_then(|e| e.noncurrent_days())
    };
    assert_eq!(expire_days("raidfs-sync-expire:pi/"), Some(200));
    assert_eq!(expire_days("raidfs-sync-expire:laptop/"), Some(100));

    // The old-style rule of `old` is replaced by `old`'s own run.
    lifecycle("old", "50d");
    let conf = c
        .get_bucket_lifecycle_configuration()
        .bucket(&b)
        .send()
        .await
        .unwrap();
    let ids: Vec<&str> = conf.rules().iter().filter_map(|r| r.id()).collect();
    assert!(!ids.contains(&"raidfs-sync-expire"), "{ids:?}");
    assert_eq!(ids.len(), 7, "{ids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_rules_state_the_transition_size_explicitly() {
    let m = moto();
    let b = bucket_name("lifecycle");
    let c = client(&m.endpoint);
    c.create_bucket().bucket(&b).send().await.unwrap();
    let mut k = cmd(&m.endpoint, &b);
    k.args([
        "--prefix",
        "pi",
        "lifecycle",
        "--glacier-after",
        "30d",
        "--expire-noncurrent-after",
        "365d",
    ]);
    let o = run(k);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let conf = c
        .get_bucket_lifecycle_configuration()
        .bucket(&b)
        .send()
        .await
        .unwrap();
    let rules = conf.rules();
    assert_eq!(rules.len(), 2);
    // (moto does not store ObjectSizeGreaterThan; the unit test of
    // lifecycle::rules checks that it is sent.)
    let archive = rules
        .iter()
        .find(|r| r.id() == Some("raidfs-sync-archive:pi/"))
        .unwrap();
    assert_eq!(
        archive.noncurrent_version_transitions()[0].noncurrent_days(),
        Some(30)
    );
    let expire = rules
        .iter()
        .find(|r| r.id() == Some("raidfs-sync-expire:pi/"))
        .unwrap();
    assert_eq!(
        expire
            .noncurrent_version_expiration()
            .unwrap()
            .noncurrent_days(),
        Some(365)
    );
}

#[test]
fn a_part_size_under_5mib_is_refused() {
    let m = moto();
    let src = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let mut k = cmd(&m.endpoint, &bucket_name("part-size"));
    k.env_remove("RAIDFS_SYNC_MIN_PART_SIZE")
        .args(["--once", "--part-size", "4MiB", "--state"])
        .arg(state.path().join("s.json"))
        .arg(src.path());
    let o = run(k);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("--part-size must be at least 5MiB"), "{err}");
}

/// A bucket that does not exist is named by the service's own words, with
/// what to do, not as a dump of the HTTP response.
#[test]
fn a_missing_bucket_is_reported_plainly() {
    let m = moto();
    let src = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let mut k = cmd(&m.endpoint, &bucket_name("no-such"));
    k.args(["--once", "--state"])
        .arg(state.path().join("s.json"))
        .arg(src.path());
    let o = run(k);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("NoSuchBucket: The specified bucket does not exist")
            && err.contains("--create-bucket"),
        "{err}"
    );
    assert!(
        !err.contains("raw: Response") && !err.contains("ServiceError("),
        "{err}"
    );
}

/// No credentials anywhere: one error that says where to put them, before
/// any request, and none of the credential chain's per-source warnings.
#[test]
fn missing_credentials_are_reported_once_with_where_to_put_them() {
    let m = moto();
    let src = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let mut k = cmd(&m.endpoint, &bucket_name("no-creds"));
    k.env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_WEB_IDENTITY_TOKEN_FILE")
        .env_remove("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        .env_remove("AWS_CONTAINER_CREDENTIALS_FULL_URI")
        .env_remove("AWS_SHARED_CREDENTIALS_FILE")
        .env_remove("AWS_CONFIG_FILE")
        .env_remove("RAIDFS_SYNC_LOG")
        .env("HOME", home.path())
        // No instance metadata service to wait for.
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .args(["--once", "--create-bucket", "--state"])
        .arg(home.path().join("s.json"))
        .arg(src.path());
    let o = run(k);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("no AWS credentials found") && err.contains("AWS_ACCESS_KEY_ID"),
        "{err}"
    );
    assert!(!err.contains("WARN"), "{err}");
}

/// Without --region or AWS_REGION the region comes from the profile, else is
/// us-east-1: the instance metadata service (seconds of timeouts off EC2)
/// is not asked.
#[test]
fn without_a_region_the_metadata_service_is_not_asked() {
    let m = moto();
    let src = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    write(src.path(), "f", b"data");
    let mut k = cmd(&m.endpoint, &bucket_name("no-region"));
    k.env_remove("AWS_REGION")
        .env_remove("AWS_DEFAULT_REGION")
        .env_remove("AWS_CONFIG_FILE")
        .env("HOME", home.path())
        .env("RAIDFS_SYNC_LOG", "info,aws_config=debug");
    let o = once_with(k, &home.path().join("s.json"), src.path(), &[]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert_eq!(json(&o)["uploaded"], 1, "{err}");
    assert!(!err.to_lowercase().contains("imds"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_deleted_and_re_created_within_a_second_is_restored() {
    let m = moto();
    let b = bucket_name("tie");
    let c = client(&m.endpoint);
    c.create_bucket().bucket(&b).send().await.unwrap();
    c.put_bucket_versioning()
        .bucket(&b)
        .versioning_configuration(
            aws_sdk_s3::types::VersioningConfiguration::builder()
                .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .unwrap();
    // Put, delete, put again: within one second (the resolution of moto's
    // times), so the delete marker and the new version tie.
    let mut tied = None;
    for attempt in 0..5 {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_millis() as u64;
        tokio::time::sleep(Duration::from_millis(1000 - ms + 20)).await;
        let key = format!("f{attempt}.txt");
        let put = |body: &'static [u8]| {
            c.put_object()
                .bucket(&b)
                .key(&key)
                .body(body.to_vec().into())
                .send()
        };
        put(b"old").await.unwrap();
        c.delete_object().bucket(&b).key(&key).send().await.unwrap();
        put(b"re-created").await.unwrap();
        let vs = c
            .list_object_versions()
            .bucket(&b)
            .prefix(&key)
            .send()
            .await
            .unwrap();
        let marker = vs.delete_markers()[0].last_modified().copied();
        let latest = vs
            .versions()
            .iter()
            .find(|v| v.is_latest() == Some(true))
            .and_then(|v| v.last_modified().copied());
        if marker.is_some() && marker == latest {
            tied = Some(key);
            break;
        }
    }
    let key = tied.expect("no delete marker and version in the same second in 5 attempts");

    let out = tempfile::tempdir().unwrap();
    let at =
        humantime::format_rfc3339_seconds(std::time::SystemTime::now() + Duration::from_secs(2))
            .to_string();
    let mut k = cmd(&m.endpoint, &b);
    k.args(["--json", "restore", "--at", &at]).arg(out.path());
    let o = run(k);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert_eq!(
        std::fs::read(out.path().join(&key)).ok().as_deref(),
        Some(&b"re-created"[..]),
        "the version after the delete marker is restored: {err}"
    );
}
