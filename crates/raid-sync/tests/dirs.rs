//! Directory attributes travel in one manifest object instead of a marker
//! per directory; empty directories still get a marker; restore puts every
//! directory's mode and mtime back exactly.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::*;

const MANIFEST: &str = ".raidfs-sync/dirs.json";

fn set_dir(root: &Path, rel: &str, mode: u32, mtime: (i64, u32)) {
    let p = root.join(rel);
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    let t = filetime::FileTime::from_unix_time(mtime.0, mtime.1);
    filetime::set_file_times(&p, t, t).unwrap();
}

fn attrs(root: &Path, rel: &str) -> (u32, i64, i64) {
    let md = std::fs::metadata(root.join(rel)).unwrap();
    (md.mode() & 0o7777, md.mtime(), md.mtime_nsec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directories_need_no_marker_each_and_restore_exactly() {
    let m = moto();
    let b = bucket_name("dirs");
    let c = client(&m.endpoint);
    let src = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let root = src.path();
    write(root, "a/b/f.txt", b"f");
    write(root, "c/g.txt", b"g");
    std::fs::create_dir(root.join("a/empty")).unwrap();
    // Deepest first: setting a child's attributes does not touch the parent's mtime.
    set_dir(root, "a/b", 0o700, (1_600_000_000, 111_111_111));
    set_dir(root, "a/empty", 0o711, (1_600_000_100, 222_222_222));
    set_dir(root, "a", 0o750, (1_600_000_200, 333_333_333));
    set_dir(root, "c", 0o1777, (1_600_000_300, 444_444_444));
    let st = state.path().join("s.json");
    let once = |extra: &[&str]| {
        let mut k = cmd(&m.endpoint, &b);
        k.args(["--once", "--json", "--create-bucket", "--state"])
            .arg(&st)
            .args(extra)
            .arg(root);
        let o = run(k);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        json(&o)
    };

    let j = once(&[]);
    assert_eq!(j["failed"], 0, "{j}");
    assert_eq!(j["dirs_manifest"], true, "{j}");
    assert_eq!(j["dirs_in_manifest"], 3, "{j}");
    // A marker only for the empty directory; the others are in the manifest.
    assert_eq!(
        keys(&c, &b).await,
        [MANIFEST, "a/b/f.txt", "a/empty/", "c/g.txt"]
    );
    let manifest: serde_json::Value = serde_json::from_slice(&get(&c, &b, MANIFEST).await).unwrap();
    assert_eq!(manifest["dirs"]["a/b"]["mode"], (0o40700u32).to_string());
    assert_eq!(manifest["dirs"]["c"]["mtime"], "1600000300.444444444");

    let restore = |target: &Path| {
        let mut k = cmd(&m.endpoint, &b);
        k.arg("restore").arg(target);
        let o = run(k);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("r");
    restore(&target);
    for d in ["a", "a/b", "a/empty", "c"] {
        assert_eq!(attrs(&target, d), attrs(root, d), "{d}");
    }
    assert_eq!(std::fs::read(target.join("a/b/f.txt")).unwrap(), b"f");

    // Unchanged: no request at all. A directory's mode changed: one PUT
    // of the manifest, nothing else.
    assert_eq!(once(&[])["s3_requests"], 0);
    set_dir(root, "a/b", 0o705, (1_600_000_000, 111_111_111));
    let j = once(&[]);
    assert_eq!(
        (
            j["s3_requests"].as_u64(),
            j["uploaded"].as_u64(),
            j["dirs_manifest"].as_bool()
        ),
        (Some(1), Some(0), Some(true)),
        "{j}"
    );
    let target2 = out.path().join("r2");
    restore(&target2);
    assert_eq!(attrs(&target2, "a/b").0, 0o705);

    // A lost state: the full reconcile writes the manifest again and keeps
    // the empty directory's marker.
    std::fs::remove_file(&st).unwrap();
    let j = once(&[]);
    assert_eq!(j["failed"], 0, "{j}");
    assert_eq!(
        keys(&c, &b).await,
        [MANIFEST, "a/b/f.txt", "a/empty/", "c/g.txt"]
    );
}
