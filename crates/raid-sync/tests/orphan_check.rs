//! ListMultipartUploads (looking for an upload the state does not know) is
//! sent only for a file whose CreateMultipartUpload may have been
//! interrupted before its upload id was saved, not for every multipart file.

mod common;

use std::path::Path;

use common::*;

/// Runs one pass that uploads `big.bin` (three 1 MiB parts) into a bucket
/// whose state is current, optionally after marking the file as "create may
/// have been interrupted"; returns the pass's request count and the state.
fn pass_adding_a_multipart_file(
    bucket: &str,
    interrupted_create: bool,
) -> (u64, serde_json::Value) {
    let m = moto();
    let src = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let st = state.path().join("s.json");
    let root = src.path();
    write(root, "small.txt", b"small");
    let once = |root: &Path| {
        let mut k = cmd(&m.endpoint, bucket);
        k.args(ONCE_SMALL_PARTS).arg("--state").arg(&st).arg(root);
        let o = run(k);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        json(&o)
    };
    once(root);
    if interrupted_create {
        let mut s: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&st).unwrap()).unwrap();
        s["creating"] = serde_json::json!(["big.bin"]);
        std::fs::write(&st, serde_json::to_vec(&s).unwrap()).unwrap();
    }
    write(root, "big.bin", &vec![5u8; (5 << 20) / 2]);
    let j = once(root);
    assert_eq!(
        (j["uploaded"].as_u64(), j["failed"].as_u64()),
        (Some(1), Some(0)),
        "{j}"
    );
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(&st).unwrap()).unwrap();
    (j["s3_requests"].as_u64().unwrap(), s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_listed_only_after_an_interrupted_create() {
    let (plain, state) = pass_adding_a_multipart_file(&bucket_name("plain"), false);
    // CreateMultipartUpload, three parts, CompleteMultipartUpload.
    assert_eq!(plain, 5);
    assert_eq!(state["creating"], serde_json::json!([]));
    let (after_crash, state) = pass_adding_a_multipart_file(&bucket_name("crash"), true);
    assert_eq!(after_crash, plain + 1, "one ListMultipartUploads");
    assert_eq!(
        state["creating"],
        serde_json::json!([]),
        "cleared once recorded"
    );
}
