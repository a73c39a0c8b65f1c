//! Files between the in-memory limit and the multipart threshold go in one
//! PUT streamed from the file: one object (no parts), the right bytes and
//! CRC-32, with and without a bandwidth limit pacing the stream.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_below_the_threshold_stream_in_one_put() {
    let m = moto();
    let b = bucket_name("stream");
    let c = client(&m.endpoint);
    let src = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let root = src.path();
    let plain = pattern(6 << 20, 1);
    let paced = pattern((3 << 20) + 12_345, 2);
    write(root, "plain.bin", &plain);
    let st = state.path().join("s.json");

    // Default threshold (far above 6 MiB): one streamed PUT.
    let mut k = cmd(&m.endpoint, &b);
    k.args(["--once", "--json", "--create-bucket", "--state"])
        .arg(&st)
        .arg(root);
    let o = run(k);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j = json(&o);
    assert_eq!(
        (j["uploaded"].as_u64(), j["failed"].as_u64()),
        (Some(1), Some(0)),
        "{j}"
    );
    assert_eq!(
        j["uploaded_bytes"].as_u64(),
        Some(plain.len() as u64),
        "{j}"
    );

    // Then a second file under a bandwidth limit: the paced stream still
    // carries exactly the file's bytes and matches its CRC-32 header.
    write(root, "dir/paced.bin", &paced);
    let mut k = cmd(&m.endpoint, &b);
    k.args(["--once", "--json", "--bwlimit", "8MiB", "--state"])
        .arg(&st)
        .arg(root);
    let o = run(k);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(json(&o)["uploaded"].as_u64(), Some(1));

    for (key, want) in [("plain.bin", &plain), ("dir/paced.bin", &paced)] {
        assert_eq!(&get(&c, &b, key).await, want, "{key}");
        let h = c.head_object().bucket(&b).key(key).send().await.unwrap();
        let etag = h.e_tag().unwrap_or_default();
        assert!(!etag.contains('-'), "{key} went multipart: {etag}");
        assert_eq!(
            h.metadata().unwrap()["crc32"],
            format!("{:08x}", crc32fast::hash(want)),
            "{key}"
        );
    }
    let u = c.list_multipart_uploads().bucket(&b).send().await.unwrap();
    assert!(u.uploads().is_empty(), "no multipart upload was started");
    let mut k = cmd(&m.endpoint, &b);
    k.arg("verify").arg(root);
    assert!(run(k).status.success());
}

/// A slow link: bodies go out in small pieces spread over seconds, through
/// the real SDK and server, and arrive whole (no stalled-stream abort).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_low_bandwidth_limit_paces_uploads_to_completion() {
    let m = moto();
    let b = bucket_name("slow");
    let c = client(&m.endpoint);
    let src = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let root = src.path();
    let streamed = pattern((1 << 20) + 300_000, 5);
    let small = pattern(200_000, 6);
    write(root, "streamed.bin", &streamed);
    write(root, "small.bin", &small);
    let t0 = std::time::Instant::now();
    let mut k = cmd(&m.endpoint, &b);
    k.args([
        "--once",
        "--json",
        "--create-bucket",
        "--bwlimit",
        "512K",
        "--state",
    ])
    .arg(state.path().join("s.json"))
    .arg(root);
    let o = run(k);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(json(&o)["uploaded"].as_u64(), Some(2));
    // The limit held: 1.5 MiB at 512 KiB/s cannot take less than ~2.9 s.
    assert!(
        t0.elapsed() >= std::time::Duration::from_millis(2500),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(get(&c, &b, "streamed.bin").await, streamed);
    assert_eq!(get(&c, &b, "small.bin").await, small);
}

/// Starts a paced `--once` sending `root/f.bin` in parts and kills it once
/// the server holds a part: the state records an unfinished upload.
async fn interrupt_an_upload(m: &Moto, b: &str, st: &std::path::Path, root: &std::path::Path) {
    let c = client(&m.endpoint);
    let mut k = cmd(&m.endpoint, b);
    k.args(ONCE_SMALL_PARTS)
        .args(["--bwlimit", "1MiB", "--jobs", "1", "--state"])
        .arg(st)
        .arg(root)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut d = Daemon(k.spawn().unwrap());
    wait_for(
        "a part uploaded",
        std::time::Duration::from_secs(40),
        || async {
            let Ok(u) = c.list_multipart_uploads().bucket(b).send().await else {
                return false;
            };
            let Some(id) = u.uploads().first().and_then(|u| u.upload_id()) else {
                return false;
            };
            // Listed raw, as the resume test does.
            raw_get(&m.endpoint, &format!("/{b}/f.bin?uploadId={id}")).contains("<PartNumber>")
        },
    )
    .await;
    d.0.kill().unwrap();
    d.0.wait().unwrap();
}

/// An upload interrupted while the file went in parts, then a pass with a
/// threshold above the file: the file goes in one PUT and the old upload is
/// aborted, not left on the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_no_longer_multipart_is_aborted() {
    let m = moto();
    let b = bucket_name("orphan");
    let c = client(&m.endpoint);
    let src = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let root = src.path();
    let body = pattern(6 << 20, 7);
    write(root, "f.bin", &body);
    let st = state.path().join("s.json");
    interrupt_an_upload(m, &b, &st, root).await;

    let mut k = cmd(&m.endpoint, &b);
    k.args(["--once", "--json", "--state"]).arg(&st).arg(root);
    let o = run(k);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(get(&c, &b, "f.bin").await, body);
    let u = c.list_multipart_uploads().bucket(&b).send().await.unwrap();
    assert!(
        u.uploads().is_empty(),
        "the interrupted upload was left behind"
    );
}

/// An upload interrupted, then its file removed before the next run: that
/// run aborts the upload and forgets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_whose_file_is_gone_is_aborted() {
    let m = moto();
    let b = bucket_name("orphan-gone");
    let c = client(&m.endpoint);
    let src = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let root = src.path();
    write(root, "f.bin", &pattern(6 << 20, 8));
    write(root, "keep.txt", b"stays");
    let st = state.path().join("s.json");
    interrupt_an_upload(m, &b, &st, root).await;
    assert!(
        state_json(&st)["uploads"]["f.bin"].is_object(),
        "{}",
        state_json(&st)
    );

    std::fs::remove_file(root.join("f.bin")).unwrap();
    let o = once(&m.endpoint, &b, &st, root, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let u = c.list_multipart_uploads().bucket(&b).send().await.unwrap();
    assert!(
        u.uploads().is_empty(),
        "the upload of the removed file was left behind"
    );
    assert_eq!(state_json(&st)["uploads"], serde_json::json!({}));
    assert_eq!(get(&c, &b, "keep.txt").await, b"stays");
}
