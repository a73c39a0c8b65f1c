//! Files between the in-memory limit and the multipart threshold go in one
//! PUT streamed from the file: one object (no parts), the right bytes and
//! CRC-32, with and without a bandwidth limit pacing the stream.

mod common;

use common::*;

fn data(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_below_the_threshold_stream_in_one_put() {
    let m = moto();
    let b = bucket_name("stream");
    let c = client(&m.endpoint);
    let src = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let root = src.path();
    let plain = data(6 << 20, 1);
    let paced = data((3 << 20) + 12_345, 2);
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
