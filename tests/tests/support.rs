//! The support tools on real arrays: the notify hook and the metrics file
//! of a mount whose member fails, the debug dumps, and `raidfs extract`
//! from an unmounted degraded array.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, UNIX_EPOCH};

use raidfs_tests::{
    TestArray, assert_same_tree, bins, make_tree, pattern, run, run_ok, snapshot, tree,
};

/// How long an asynchronous effect (hook run, metrics rewrite) may take.
const WAIT: Duration = Duration::from_secs(60);

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `raidfs_member_state{...,member="M",state="S"} V` samples → (M, S) → V.
fn member_states(prom: &str) -> BTreeMap<(String, String), u8> {
    let mut out = BTreeMap::new();
    for l in prom.lines() {
        let Some(rest) = l.strip_prefix("raidfs_member_state{") else {
            continue;
        };
        let (labels, v) = rest.rsplit_once("} ").expect("sample");
        let get = |k: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{k}=\"")))
                .map(|v| v.trim_end_matches('"').to_string())
                .expect("label")
        };
        out.insert((get("member"), get("state")), v.parse().expect("0 or 1"));
    }
    out
}

fn state_of(prom: &str, member: usize) -> String {
    let states = member_states(prom);
    let on: Vec<&String> = states
        .iter()
        .filter(|((m, _), v)| *m == member.to_string() && **v == 1)
        .map(|((_, s), _)| s)
        .collect();
    assert_eq!(on.len(), 1, "member {member} has one state:\n{prom}");
    on[0].clone()
}

fn setxattr(p: &Path, name: &str, value: &[u8]) {
    let path = CString::new(p.as_os_str().as_bytes()).unwrap();
    let name = CString::new(name).unwrap();
    // SAFETY: valid NUL-terminated strings and a live buffer of the given length.
    let r = unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(r, 0, "setxattr: {}", std::io::Error::last_os_error());
}

fn getxattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let path = CString::new(p.as_os_str().as_bytes()).unwrap();
    let name = CString::new(name).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid NUL-terminated strings and a live buffer of the given length.
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    (n >= 0).then(|| {
        buf.truncate(n as usize);
        buf
    })
}

#[test]
fn notify_hook_and_metrics_follow_a_member_failure() {
    let mut a = TestArray::builder("raid5", 4).create();
    let events = a.root.join("events.txt");
    let hook = a.root.join("hook.sh");
    fs::write(
        &hook,
        format!(
            "#!/bin/sh\necho \"$1|$2|$3|$RAIDFS_EVENT|$RAIDFS_SLOT|$RAIDFS_DETAIL\" >> {}\n",
            events.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&hook, fs::Permissions::from_mode(0o755)).unwrap();
    let prom = a.root.join("raidfs.prom");
    a.set_options(&[
        &format!("notify={}", hook.display()),
        &format!("metrics={}", prom.display()),
    ]);
    a.mount();
    let name = a.status_json()["name"].as_str().unwrap().to_string();

    // Before: the file exists at once, every member active.
    let text = fs::read_to_string(&prom).expect("metrics file written at mount");
    for m in 0..4 {
        assert_eq!(state_of(&text, m), "active", "{text}");
    }
    assert!(text.contains(&format!("raidfs_array_degraded{{array=\"{name}\"}} 0")));

    // The member's directory goes away under the mount; the next writes
    // that create shards there fail and the member is failed.
    fs::remove_dir_all(&a.members[1]).unwrap();
    for i in 0..6 {
        let p = a.path(format!("after{i}"));
        fs::write(&p, pattern(i, 512 << 10)).unwrap();
        fs::File::open(&p).unwrap().sync_all().unwrap();
    }
    wait_for("the hook to record the failure", || {
        fs::read_to_string(&events).is_ok_and(|t| t.contains("Fail|"))
    });
    let log = fs::read_to_string(&events).unwrap();
    let line = log.lines().find(|l| l.starts_with("Fail|")).unwrap();
    let f: Vec<&str> = line.split('|').collect();
    assert_eq!(f[1], name, "ARRAY argument: {line}");
    assert_eq!(
        f[2],
        a.members[1].display().to_string(),
        "MEMBER argument: {line}"
    );
    assert_eq!((f[3], f[4]), ("Fail", "1"), "environment: {line}");
    assert!(!f[5].is_empty(), "RAIDFS_DETAIL says why: {line}");

    // After: the metrics file shows the failure (rewritten on the event).
    wait_for("the metrics file to show member 1 failed", || {
        fs::read_to_string(&prom).is_ok_and(|t| state_of(&t, 1) == "failed")
    });
    let text = fs::read_to_string(&prom).unwrap();
    for m in [0, 2, 3] {
        assert_eq!(state_of(&text, m), "active", "{text}");
    }
    assert!(
        text.contains(&format!("raidfs_array_degraded{{array=\"{name}\"}} 1")),
        "{text}"
    );
    for i in 0..6 {
        assert!(fs::read(a.path(format!("after{i}"))).unwrap() == pattern(i, 512 << 10));
    }
    a.members.remove(1);
    a.unmount();
    let text = fs::read_to_string(&prom).unwrap();
    assert!(
        text.contains(&format!("raidfs_mounted{{array=\"{name}\"}} 0")),
        "the last write says unmounted:\n{text}"
    );
    let leftovers: Vec<_> = fs::read_dir(&a.root)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary metrics files left behind");
}

fn raidfs_json(args: &[&str]) -> serde_json::Value {
    let out = run_ok(Command::new(&bins().raidfs).args(args));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?} --json is not JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

#[test]
fn debug_dumps_describe_what_was_written() {
    let mut a = TestArray::raid5();
    let data = pattern(7, 300_000);
    fs::create_dir(a.path("docs")).unwrap();
    fs::write(a.path("docs/report.bin"), &data).unwrap();
    fs::set_permissions(a.path("docs/report.bin"), fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::symlink("docs/report.bin", a.path("link")).unwrap();
    fs::write(a.path("tiny"), b"hello").unwrap();
    fs::File::open(a.path("docs/report.bin"))
        .unwrap()
        .sync_all()
        .unwrap();
    // Killed, not unmounted: the journal still holds the records.
    a.kill9();
    let status = a.status_json();
    let m0 = a.members[0].display().to_string();

    let sb = raidfs_json(&["debug", "dump-superblock", &m0, "--json"]);
    assert_eq!(sb["name"], status["name"]);
    assert_eq!(sb["array_uuid"], status["uuid"]);
    assert_eq!(sb["member_index"], 0);
    assert_eq!(sb["chunk_size"], 65536);
    assert_eq!(sb["slots"].as_array().unwrap().len(), 4);
    assert!(
        sb["slots"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["state"] == "active")
    );

    let j = raidfs_json(&["debug", "dump-journal", &m0, "--json"]);
    let records: Vec<&serde_json::Value> = j["segments"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["records"].as_array().unwrap())
        .collect();
    assert!(!records.is_empty(), "{j}");
    assert!(records.iter().all(|r| r["crc_ok"] == true), "{j}");
    let seqs: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] > w[0]),
        "sequences grow: {seqs:?}"
    );
    let creates: Vec<&str> = records
        .iter()
        .filter(|r| r["kind"] == "Create" || r["kind"] == "Symlink")
        .map(|r| r["op"].as_str().unwrap())
        .collect();
    // Names are byte vectors in the operation text: look for "report.bin".
    let report: Vec<String> = b"report.bin".iter().map(|b| b.to_string()).collect();
    assert!(
        creates.iter().any(|op| op.contains(&report.join(", "))),
        "a Create record names report.bin: {creates:?}"
    );
    assert!(
        j["checkpoints"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["ok"] == true)
    );

    let spec = a.spec();
    let before = snapshot(&a.root);
    let f = raidfs_json(&["debug", "dump-inode", &spec, "/docs/report.bin", "--json"]);
    assert_eq!(f["kind"], "file");
    assert_eq!(f["size"], 300_000);
    assert_eq!(f["mode"], "0640");
    assert_eq!(f["storage"], "striped");
    assert_eq!(f["shards"].as_array().unwrap().len(), 4);
    let by_ino = raidfs_json(&[
        "debug",
        "dump-inode",
        &spec,
        &f["ino"].to_string(),
        "--json",
    ]);
    assert_eq!(by_ino["size"], 300_000);
    let l = raidfs_json(&["debug", "dump-inode", &spec, "/link", "--json"]);
    assert_eq!(
        (l["kind"].as_str(), l["target"].as_str()),
        (Some("symlink"), Some("docs/report.bin"))
    );
    let t = raidfs_json(&["debug", "dump-inode", &spec, "tiny", "--json"]);
    assert_eq!(
        (t["storage"].as_str(), t["size"].as_u64()),
        (Some("inline"), Some(5))
    );
    let d = raidfs_json(&["debug", "dump-inode", &spec, "/docs", "--json"]);
    assert_eq!(
        (d["kind"].as_str(), d["entries"].as_u64()),
        (Some("dir"), Some(1))
    );
    assert_eq!(
        before,
        snapshot(&a.root),
        "dump-inode wrote to the members (of a dirty array, too)"
    );
}

#[test]
fn extract_from_a_degraded_unmounted_array_is_exact_and_read_only() {
    let mut a = TestArray::raid5();
    make_tree(&a.path("tree"), 300, 3 << 20);
    // Hard links, modes, owners, times, xattrs, an empty dir, a FIFO.
    fs::hard_link(a.path("tree/d0/s0/f0.bin"), a.path("tree/hard-a")).unwrap();
    fs::hard_link(a.path("tree/d0/s0/f0.bin"), a.path("tree/d1/hard-b")).unwrap();
    fs::set_permissions(
        a.path("tree/d2/s2/f2.bin"),
        fs::Permissions::from_mode(0o4751),
    )
    .unwrap();
    std::os::unix::fs::chown(a.path("tree/d3/s3/f3.bin"), Some(1234), Some(5678)).unwrap();
    fs::create_dir(a.path("tree/empty")).unwrap();
    fs::set_permissions(a.path("tree/empty"), fs::Permissions::from_mode(0o700)).unwrap();
    setxattr(&a.path("tree/d4/s4/f4.bin"), "user.origin", b"camera-7");
    // Outside the tree: the tree comparison would open it and block.
    run_ok(Command::new("mkfifo").arg(a.path("pipe")));
    let mtime = UNIX_EPOCH + Duration::from_secs(1_500_000_000);
    fs::File::options()
        .write(true)
        .open(a.path("tree/d5/s5/f5.bin"))
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let expected = tree(&a.path("tree"));
    let meta = |root: &Path| -> BTreeMap<String, (u32, u32, u32, i64, i64)> {
        let mut m = BTreeMap::new();
        for rel in tree(root).keys() {
            let md = fs::symlink_metadata(root.join(rel)).unwrap();
            let mt = if md.is_dir() { 0 } else { md.mtime() };
            let mtn = if md.is_dir() { 0 } else { md.mtime_nsec() };
            m.insert(
                rel.display().to_string(),
                (md.mode(), md.uid(), md.gid(), mt, mtn),
            );
        }
        m
    };
    let expected_meta = meta(&a.path("tree"));
    a.unmount();

    // A dead disk: member 2's directory is gone.
    fs::remove_dir_all(&a.members[2]).unwrap();
    a.members.remove(2);
    let before: Vec<_> = a.members.iter().map(|m| snapshot(m)).collect();
    let dest = a.root.join("rescued");
    let mut cmd = Command::new(&bins().raidfs);
    cmd.arg("extract")
        .args(&a.members)
        .arg(&dest)
        .args(["--path", "/tree"]);
    let out = run_ok(&mut cmd);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("extracted"), "{stdout}");

    assert_same_tree(&expected, &tree(&dest));
    assert_eq!(expected_meta, meta(&dest), "modes, owners or mtimes differ");
    let ino = |p: &str| fs::metadata(dest.join(p)).unwrap().ino();
    assert_eq!(ino("d0/s0/f0.bin"), ino("hard-a"), "hard link kept");
    assert_eq!(ino("d0/s0/f0.bin"), ino("d1/hard-b"), "hard link kept");
    assert_eq!(fs::metadata(dest.join("d0/s0/f0.bin")).unwrap().nlink(), 3);
    assert_eq!(
        getxattr(&dest.join("d4/s4/f4.bin"), "user.origin").as_deref(),
        Some(&b"camera-7"[..])
    );
    assert_eq!(
        fs::metadata(dest.join("empty")).unwrap().mode() & 0o7777,
        0o700
    );
    // One file of the array: it lands as DEST/<name>.
    let dest2 = a.root.join("one");
    run_ok(
        Command::new(&bins().raidfs)
            .arg("extract")
            .args(&a.members)
            .arg(&dest2)
            .args(["--path", "/pipe"]),
    );
    assert!(
        fs::symlink_metadata(dest2.join("pipe"))
            .unwrap()
            .file_type()
            .is_fifo(),
        "FIFO recreated"
    );
    let after: Vec<_> = a.members.iter().map(|m| snapshot(m)).collect();
    assert!(before == after, "extract changed a member directory");

    // Again into the same place: refused without --force, nothing touched.
    let out = run(&mut cmd);
    assert!(!out.status.success(), "overwrote without --force");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    fs::write(dest.join("d0/s0/f0.bin"), b"scribbled").unwrap();
    run_ok(cmd.arg("--force"));
    assert_same_tree(&expected, &tree(&dest));
}

/// Path of inode `ino`'s shard on member directory `m` (docs/FORMAT.md).
fn shard(m: &Path, ino: u64) -> std::path::PathBuf {
    m.join(format!(".raidfs/data/{:02x}/{ino:016x}", ino & 0xff))
}

fn scribble(p: &Path, off: u64) {
    use std::os::unix::fs::FileExt;
    let f = fs::OpenOptions::new().write(true).open(p).unwrap();
    f.write_all_at(&[0xde, 0xad, 0xbe, 0xef], off).unwrap();
}

#[test]
fn scrub_that_repairs_bit_rot_runs_the_hook() {
    let mut a = TestArray::builder("raid5", 4).create();
    let events = a.root.join("events.txt");
    let hook = a.root.join("hook.sh");
    fs::write(
        &hook,
        format!(
            "#!/bin/sh\necho \"$1|$3|$RAIDFS_DETAIL\" >> {}\n",
            events.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&hook, fs::Permissions::from_mode(0o755)).unwrap();
    a.set_options(&[&format!("notify={}", hook.display())]);
    a.mount();
    fs::write(a.path("f"), pattern(3, 2 << 20)).unwrap();
    let ino = fs::metadata(a.path("f")).unwrap().ino();
    a.unmount();
    // Rot in three stripes of member 0's shard (data or parity alike: a
    // scrub checks both).
    for s in 0..3u64 {
        scribble(&shard(&a.members[0], ino), s * (64 << 10) + 1000 + s * 4096);
    }
    a.mount();
    let name = a.status_json()["name"].as_str().unwrap().to_string();
    let out = run(Command::new(&bins().raidfs).args(["scrub", "--repair", &name]));
    assert_eq!(
        out.status.code(),
        Some(1),
        "scrub exits 1 when it found mismatches: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("the hook to receive ScrubErrors", || {
        fs::read_to_string(&events).is_ok_and(|t| t.contains("ScrubErrors|-|"))
    });
    let log = fs::read_to_string(&events).unwrap();
    let m0 = a.members[0].display().to_string();
    assert!(
        log.lines()
            .any(|l| l.starts_with(&format!("Repaired|{m0}|"))),
        "a Repaired event names member 0:\n{log}"
    );
    assert!(fs::read(a.path("f")).unwrap() == pattern(3, 2 << 20));
}

#[test]
fn extract_copies_a_file_with_unrecoverable_blocks_and_says_so() {
    let mut a = TestArray::raid5();
    let data = pattern(11, 1 << 20);
    fs::write(a.path("hurt"), &data).unwrap();
    fs::write(a.path("fine"), pattern(12, 300_000)).unwrap();
    let ino = fs::metadata(a.path("hurt")).unwrap().ino();
    a.unmount();
    // The same block of one stripe rots on two members: RAID-5 cannot
    // rebuild it.
    for m in 0..2 {
        scribble(&shard(&a.members[m], ino), 2 * (64 << 10) + 100);
    }
    let before: Vec<_> = a.members.iter().map(|m| snapshot(m)).collect();
    let dest = a.root.join("rescued");
    let out = run(Command::new(&bins().raidfs)
        .arg("extract")
        .args(&a.members)
        .arg(&dest));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "exit 2 for damaged files: {stderr}"
    );
    assert!(
        stderr.contains("hurt"),
        "the damaged file is named: {stderr}"
    );
    assert!(fs::read(dest.join("fine")).unwrap() == pattern(12, 300_000));
    let got = fs::read(dest.join("hurt")).unwrap();
    assert_eq!(got.len(), data.len(), "copied at full size");
    let bad: Vec<usize> = (0..data.len() / 4096)
        .filter(|b| got[b * 4096..(b + 1) * 4096] != data[b * 4096..(b + 1) * 4096])
        .collect();
    assert!(!bad.is_empty(), "the rot was not noticed");
    for b in &bad {
        assert!(
            got[b * 4096..(b + 1) * 4096].iter().all(|&x| x == 0),
            "block {b} is neither the data nor zeros"
        );
    }
    assert!(
        stderr.contains(&format!("{} bytes unreadable", bad.len() * 4096)),
        "{} blocks differ: {stderr}",
        bad.len()
    );
    let after: Vec<_> = a.members.iter().map(|m| snapshot(m)).collect();
    assert!(before == after, "extract changed a member directory");
}
