//! Client-side encryption, end to end against a real S3-compatible server
//! (moto) on 127.0.0.1: what lands in the bucket, restore, verify, wrong keys.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;

const SECRET: &[u8] = b"the launch code is 0000 and nobody may read it";

fn big_data() -> Vec<u8> {
    // 3 MiB + a bit: four 1 MiB parts with the settings below.
    pattern((3 << 20) + 12_345, 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_sync_round_trips_and_the_bucket_holds_no_plaintext() {
    let m = moto();
    let b = bucket_name("enc-round");
    let c = client(&m.endpoint);
    let src = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let root = src.path();
    let big = big_data();
    write(root, "secret.txt", SECRET);
    write(root, "dir/big.bin", &big);
    write(root, "dir/empty.txt", b"");
    std::fs::create_dir(root.join("emptydir")).unwrap();
    std::os::unix::fs::symlink("dir/big.bin", root.join("link")).unwrap();
    std::fs::set_permissions(
        root.join("secret.txt"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let st = state.path().join("s.json");
    let sync = |extra: &[&str]| {
        let mut k = cmd(&m.endpoint, &b);
        k.env("RAIDFS_SYNC_PASSPHRASE", "correct horse battery staple")
            .args(ONCE_SMALL_PARTS)
            .arg("--state")
            .arg(&st)
            .args(extra)
            .arg(root);
        run(k)
    };
    let o = sync(&[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(json(&o)["failed"], 0);

    // Keys stay plain; the key parameters sit in the reserved directory.
    assert_eq!(
        keys(&c, &b).await,
        [
            ".raidfs-sync/dirs.json",
            ".raidfs-sync/keyparams",
            "dir/big.bin",
            "dir/empty.txt",
            "emptydir/",
            "link",
            "secret.txt"
        ]
    );
    let params = String::from_utf8(get(&c, &b, ".raidfs-sync/keyparams").await).unwrap();
    assert!(params.contains("argon2id"), "{params}");

    // Bodies are not the plaintext, not even in part.
    let body = get(&c, &b, "secret.txt").await;
    assert_ne!(body, SECRET);
    assert!(!body.windows(12).any(|w| w == &SECRET[..12]));
    assert_eq!(body.len(), SECRET.len() + 23 + 16);
    let big_body = get(&c, &b, "dir/big.bin").await;
    assert!(big_body.len() > big.len());
    assert!(
        !big_body
            .windows(64)
            .any(|w| w == &big[1 << 20..(1 << 20) + 64])
    );
    assert_ne!(get(&c, &b, "link").await, b"dir/big.bin");

    // The stored CRC-32 is the plaintext's; the key fingerprint is recorded.
    let h = c
        .head_object()
        .bucket(&b)
        .key("dir/big.bin")
        .send()
        .await
        .unwrap();
    let md = h.metadata().unwrap();
    assert_eq!(md["crc32"], format!("{:08x}", crc32fast::hash(&big)));
    assert_eq!(md["raidfs-enc"].len(), 16);

    // An unchanged tree sends nothing; a full reconcile adopts everything.
    let j = json(&sync(&[]));
    assert_eq!(
        (j["uploaded"].clone(), j["failed"].clone()),
        (0.into(), 0.into())
    );
    let j = json(&sync(&["--full"]));
    assert_eq!(j["uploaded"], 0, "{j}");
    assert_eq!(
        j["deleted"], 0,
        "the key parameters are not the tree's: {j}"
    );

    // Restore with the passphrase gives back the exact tree.
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("t");
    let mut k = cmd(&m.endpoint, &b);
    k.env("RAIDFS_SYNC_PASSPHRASE", "correct horse battery staple")
        .arg("restore")
        .arg(&target);
    let o = run(k);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(target.join("secret.txt")).unwrap(), SECRET);
    assert_eq!(std::fs::read(target.join("dir/big.bin")).unwrap(), big);
    assert_eq!(std::fs::read(target.join("dir/empty.txt")).unwrap(), b"");
    assert!(target.join("emptydir").is_dir());
    assert_eq!(
        std::fs::read_link(target.join("link")).unwrap(),
        std::path::Path::new("dir/big.bin")
    );
    assert_eq!(
        std::fs::metadata(target.join("secret.txt"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o600
    );
    assert!(!target.join(".raidfs-sync").exists());

    // Verify (downloads and decrypts) agrees; versions shows content sizes.
    let mut k = cmd(&m.endpoint, &b);
    k.env("RAIDFS_SYNC_PASSPHRASE", "correct horse battery staple")
        .args(["verify", "--json"])
        .arg(root);
    let o = run(k);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    let j = json(&o);
    assert!(j["downloaded"].as_u64().unwrap() >= 4, "{j}");
    let mut k = cmd(&m.endpoint, &b);
    k.env("RAIDFS_SYNC_PASSPHRASE", "correct horse battery staple")
        .args(["versions", "--json", "dir/big.bin"]);
    let j = json(&run(k));
    assert_eq!(j[0]["size"], big.len() as u64, "{j}");

    // A wrong passphrase is refused before anything is written.
    let target2 = out.path().join("t2");
    let mut k = cmd(&m.endpoint, &b);
    k.env("RAIDFS_SYNC_PASSPHRASE", "wrong horse")
        .arg("restore")
        .arg(&target2);
    let o = run(k);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("wrong passphrase"), "{err}");
    assert!(!target2.exists(), "nothing written with a wrong passphrase");
    // Nor does a sync with it touch the bucket.
    let mut k = cmd(&m.endpoint, &b);
    k.env("RAIDFS_SYNC_PASSPHRASE", "wrong horse")
        .args(["--once", "--state"])
        .arg(state.path().join("other.json"))
        .arg(root);
    let o = run(k);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("wrong passphrase"));
    // And without any key, restore says the objects are encrypted.
    let mut k = cmd(&m.endpoint, &b);
    k.arg("restore").arg(out.path().join("t3"));
    let o = run(k);
    assert_ne!(o.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("is encrypted"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_catches_a_tampered_encrypted_object() {
    let m = moto();
    let b = bucket_name("enc-tamper");
    let c = client(&m.endpoint);
    let src = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let keys_dir = tempfile::tempdir().unwrap();
    let key = keys_dir.path().join("key");
    std::fs::write(&key, [0x5au8; 32]).unwrap();
    let other = keys_dir.path().join("other");
    std::fs::write(&other, "11".repeat(32)).unwrap();
    let root = src.path();
    write(root, "good.txt", b"good");
    write(root, "victim.txt", SECRET);
    let mut k = cmd(&m.endpoint, &b);
    k.arg("--encrypt-key-file")
        .arg(&key)
        .args(["--once", "--create-bucket", "--state"])
        .arg(state.path().join("s"))
        .arg(root);
    let o = run(k);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let verify = |keyfile: &std::path::Path| {
        let mut k = cmd(&m.endpoint, &b);
        k.arg("--encrypt-key-file")
            .arg(keyfile)
            .args(["verify", "--json"])
            .arg(root);
        run(k)
    };
    assert!(verify(&key).status.success());

    // Flip one ciphertext byte, keep size and metadata: only the tag can tell.
    let mut body = get(&c, &b, "victim.txt").await;
    body[30] ^= 0x01;
    put_keeping_metadata(&c, &b, "victim.txt", body).await;
    let o = verify(&key);
    assert_eq!(o.status.code(), Some(1));
    let j = json(&o);
    let diffs = j["differences"].as_array().unwrap();
    assert_eq!(diffs.len(), 1, "{j}");
    assert_eq!(diffs[0]["path"], "victim.txt");
    assert_eq!(diffs[0]["kind"], "tampered");
    assert!(
        diffs[0]["detail"]
            .as_str()
            .unwrap()
            .contains("authentication failed"),
        "{j}"
    );

    // Restore refuses to write the tampered file, and restores the rest.
    let out = tempfile::tempdir().unwrap();
    let mut k = cmd(&m.endpoint, &b);
    k.arg("--encrypt-key-file")
        .arg(&key)
        .arg("restore")
        .arg(out.path().join("t"));
    let o = run(k);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("failed: victim.txt: cannot decrypt"));
    assert!(!out.path().join("t/victim.txt").exists());
    assert_eq!(
        std::fs::read(out.path().join("t/good.txt")).unwrap(),
        b"good"
    );

    // Another key file is refused up front.
    let o = verify(&other);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("wrong encryption key"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_encrypted_multipart_upload_resumes_and_restores_intact() {
    use std::time::Duration;
    let m = moto();
    let b = bucket_name("enc-resume");
    let c = client(&m.endpoint);
    let src = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let keys_dir = tempfile::tempdir().unwrap();
    let key = keys_dir.path().join("key");
    std::fs::write(&key, [0x33u8; 32]).unwrap();
    let root = src.path();
    let data = pattern(12 << 20, 0);
    write(root, "big.bin", &data);
    let st = state.path().join("s.json");
    let args = |k: &mut std::process::Command| {
        k.arg("--encrypt-key-file")
            .arg(&key)
            .args(ONCE_SMALL_PARTS)
            .arg("--state")
            .arg(&st);
    };
    let mut k = cmd(&m.endpoint, &b);
    args(&mut k);
    k.args(["--bwlimit", "2MiB", "--jobs", "2"])
        .arg(root)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut d = Daemon(k.spawn().unwrap());
    let parts = std::sync::atomic::AtomicUsize::new(0);
    wait_for("some parts uploaded", Duration::from_secs(40), || async {
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
    let body = get(&c, &b, "big.bin").await;
    assert_eq!(
        body.len() as u64,
        raid_sync::crypt::encrypted_len(data.len() as u64)
    );
    let u = c.list_multipart_uploads().bucket(&b).send().await.unwrap();
    assert!(u.uploads().is_empty(), "no upload left behind");

    // The parts sealed before and after the kill form one valid stream.
    let out = tempfile::tempdir().unwrap();
    let mut k = cmd(&m.endpoint, &b);
    k.arg("--encrypt-key-file")
        .arg(&key)
        .arg("restore")
        .arg(out.path().join("t"));
    let o = run(k);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(out.path().join("t/big.bin")).unwrap(), data);
    let mut k = cmd(&m.endpoint, &b);
    k.arg("--encrypt-key-file")
        .arg(&key)
        .arg("verify")
        .arg(root);
    assert!(run(k).status.success());
}

/// Keys under the prefix whose object is not sealed (no key fingerprint in
/// its metadata), the reserved directory aside.
async fn unsealed(c: &aws_sdk_s3::Client, b: &str) -> Vec<String> {
    let mut out = Vec::new();
    for k in keys(c, b).await {
        if k.starts_with(".raidfs-sync/") || k.ends_with('/') {
            continue;
        }
        let h = c.head_object().bucket(b).key(&k).send().await.unwrap();
        if !h.metadata().is_some_and(|m| m.contains_key("raidfs-enc")) {
            out.push(k);
        }
    }
    out
}

/// A mirror synced with encryption, then a sync with no key (a lost
/// passphrase variable): refused, nothing sent in plaintext, whether the
/// state or only the bucket knows it was encrypted; `--no-encryption` turns
/// it off on purpose.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_without_the_key_of_an_encrypted_mirror_is_refused() {
    let m = moto();
    let b = bucket_name("enc-nokey");
    let c = client(&m.endpoint);
    let src = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let root = src.path();
    let st = state.path().join("s.json");
    write(root, "secret.txt", SECRET);
    write(root, "d/other.txt", b"other");
    std::os::unix::fs::symlink("secret.txt", root.join("link")).unwrap();
    let mut k = cmd(&m.endpoint, &b);
    k.env("RAIDFS_SYNC_PASSPHRASE", "correct horse battery staple");
    let o = once_with(k, &st, root, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(unsealed(&c, &b).await, Vec::<String>::new());

    write(root, "new.txt", b"written while the passphrase was lost");
    let fresh = state.path().join("fresh.json");
    for (what, st) in [("the state", &st), ("the bucket", &fresh)] {
        let o = once(&m.endpoint, &b, st, root, &[]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{what}: {err}");
        assert!(
            err.contains("was synced with client-side encryption")
                && err.contains("--no-encryption"),
            "{what}: {err}"
        );
        assert_eq!(unsealed(&c, &b).await, Vec::<String>::new(), "{what}");
        assert!(!exists(&c, &b, "new.txt").await, "{what}");
    }

    // A key and --no-encryption contradict each other.
    let mut k = cmd(&m.endpoint, &b);
    k.env("RAIDFS_SYNC_PASSPHRASE", "correct horse battery staple");
    let o = once_with(k, &st, root, &["--no-encryption"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));

    // Turned off on purpose: everything is sent again in plaintext.
    let o = once(&m.endpoint, &b, &st, root, &["--no-encryption"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j = json(&o);
    assert_eq!(j["uploaded"], 4, "{j}");
    assert_eq!(get(&c, &b, "secret.txt").await, SECRET);
    assert_eq!(get(&c, &b, "link").await, b"secret.txt");
    assert_eq!(
        unsealed(&c, &b).await,
        ["d/other.txt", "link", "new.txt", "secret.txt"]
    );
    // From then on the state says the mirror is plain: no flag needed.
    let o = once(&m.endpoint, &b, &st, root, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json(&o)["uploaded"], 0);
}
