//! Administering a live mounted array through the mount daemon's control
//! socket: status, scrub, fail, replace, hot spares, a rebuild that
//! survives `kill -9` of the daemon, and the errors an admin meets.
//!
//! Every wait polls the daemon's status against a generous deadline; no
//! assertion depends on how fast anything runs.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use raidfs_tests::{TestArray, hash_bytes, hash_file, pattern, run, run_ok};
use serde_json::Value;

const CHUNK: u64 = 64 << 10;
const DEADLINE: Duration = Duration::from_secs(120);

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Run and expect failure with exit code `code` and `needle` in stderr.
fn fails_with(cmd: &mut Command, code: i32, needle: &str) -> Output {
    let out = run(cmd);
    assert_eq!(
        out.status.code(),
        Some(code),
        "{cmd:?} should exit {code}:\nstdout: {}\nstderr: {}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stderr(&out).contains(needle),
        "{cmd:?}: stderr should mention {needle:?}: {}",
        stderr(&out)
    );
    out
}

/// The array names of a `status --json` list.
fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect()
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .expect("a JSON object")
        .keys()
        .cloned()
        .collect()
}

fn states(st: &Value) -> Vec<String> {
    st["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m["state"].as_str().expect("state").to_string())
        .collect()
}

/// Poll the live status until `done` holds; panic with the last status at
/// the deadline.
fn wait_status(a: &TestArray, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let st = a.live_status_json();
        if done(&st) {
            return st;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "timed out waiting for {what}; last status:\n{st:#}\nlog:\n{}",
            a.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn all_active(st: &Value) -> bool {
    st["rebuild"].is_null() && states(st).iter().all(|s| s == "active")
}

/// Files with known content, returned as (name, hash).
fn write_files(a: &TestArray, prefix: &str, n: usize, size: usize) -> Vec<(String, [u8; 32])> {
    (0..n)
        .map(|i| {
            let name = format!("{prefix}{i}");
            let data = pattern((prefix.len() * 1000 + i) as u64, size + i * 4099);
            fs::write(a.path(&name), &data).unwrap();
            (name, hash_bytes(&data))
        })
        .collect()
}

fn verify(a: &TestArray, files: &[(String, [u8; 32])]) {
    for (name, h) in files {
        let got = hash_file(&a.path(name))
            .unwrap_or_else(|e| panic!("read {name}: {e}\nlog:\n{}", a.log_text()));
        assert_eq!(&got, h, "{name} reads back different bytes");
    }
}

fn run_dir() -> PathBuf {
    std::env::var_os("RAIDFS_RUN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/raidfs"))
}

#[test]
fn status_live_from_the_daemon_and_offline_from_superblocks() {
    let mut a = TestArray::raid5();
    fs::write(a.path("f"), pattern(1, 300_000)).unwrap();
    let live = a.live_status_json();
    assert_eq!(live["live"], true);
    assert_eq!(live["name"], a.name.as_str());
    assert_eq!(live["mountpoint"], a.mnt.display().to_string().as_str());
    assert_eq!(live["pid"], a.daemon_pid().unwrap());
    assert_eq!(states(&live), vec!["active"; 4]);
    for m in live["members"].as_array().unwrap() {
        let c = &m["counters"];
        for k in [
            "read_errors",
            "write_errors",
            "checksum_errors",
            "repaired_blocks",
        ] {
            assert_eq!(c[k], 0, "fresh member counter {k}: {m}");
        }
    }
    let uuid = live["uuid"].as_str().unwrap().to_string();
    // By mount point, by UUID and by a member directory: the same array.
    for t in [
        a.mnt.display().to_string(),
        uuid.clone(),
        a.members[2].display().to_string(),
    ] {
        let out = run_ok(&mut a.raidfs(&["status", &t, "--json"]));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["uuid"], uuid.as_str(), "status {t}");
        assert_eq!(v["live"], true, "status {t}");
    }
    // Without an argument: every mounted array, ours among them.
    let out = run_ok(&mut a.raidfs(&["status", "--json"]));
    let all: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        all.as_array()
            .unwrap()
            .iter()
            .any(|s| s["uuid"] == uuid.as_str()),
        "status without arguments lists the mounted array: {all}"
    );
    let text = stdout(&run_ok(&mut a.raidfs(&["status", &a.name])));
    assert!(
        text.contains(&a.mnt.display().to_string()) && text.contains("active"),
        "{text}"
    );
    let sock = run_dir().join(format!("{uuid}.sock"));
    let record = run_dir().join(format!("{uuid}.json"));
    let mode = fs::metadata(&sock).unwrap().mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode");
    assert!(record.is_file());

    // The last scrub's summary is kept on the members: shown offline too.
    run_ok(&mut a.raidfs(&["scrub", &a.name]));
    let scrubbed = a.live_status_json()["last_scrub"].clone();
    assert_eq!(scrubbed["complete"], true, "{scrubbed}");

    a.unmount();
    assert!(!sock.exists() && !record.exists(), "unmount removes both");
    let off = a.status_json();
    assert_eq!(off["live"], false);
    assert_eq!(off["last_scrub"], scrubbed);
    assert!(off["mountpoint"].is_null() && off["pid"].is_null());
    assert!(off["members"][0]["counters"].is_null());
    assert_eq!(off["clean"], true);
    // Same keys either way, so scripts need not care.
    assert_eq!(keys(&live), keys(&off));
    assert_eq!(keys(&live["members"][0]), keys(&off["members"][0]));
    for k in [
        "name",
        "uuid",
        "level",
        "chunk_size",
        "events",
        "clean",
        "degraded",
        "failed",
        "failures_tolerated",
        "failures_left",
        "members",
        "spares",
        "rebuild",
        "last_scrub",
    ] {
        assert!(keys(&off).contains(k), "key {k} missing: {off}");
    }
    // Offline by name is refused plainly when the members cannot be found.
    fails_with(
        &mut a.raidfs(&["status", "no-such-array-anywhere"]),
        1,
        "no-such-array-anywhere",
    );
}

#[test]
fn online_scrub_reports_bit_rot_repairs_it_then_is_clean() {
    let mut a = TestArray::raid5();
    let data = pattern(77, 2 << 20);
    fs::write(a.path("f"), &data).unwrap();
    let ino = fs::metadata(a.path("f")).unwrap().ino();
    // A clean array scrubs clean: exit 0.
    let out = run_ok(&mut a.raidfs(&["scrub", &a.name, "--json"]));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["mismatches"], 0, "{r}");
    assert_eq!(r["complete"], true, "{r}");
    a.unmount();
    // Flip bits in chunks member 0 holds as data (see bitrot.rs).
    let shard = a.members[0].join(format!(".raidfs/data/{:02x}/{:016x}", ino & 0xff, ino));
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&shard)
        .unwrap();
    let stripes: Vec<u64> = (0u64..).filter(|s| (s + ino) % 4 != 3).take(2).collect();
    for &s in &stripes {
        let off = s * CHUNK + 999;
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, off).unwrap();
        f.write_all_at(&[b[0] ^ 0x10], off).unwrap();
    }
    drop(f);
    a.mount();
    // Scrub only counts: exit 1 and a report naming mismatches.
    let out = run(&mut a.raidfs(&["scrub", &a.mnt.display().to_string(), "--json"]));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        r["mismatches"].as_u64().unwrap() >= stripes.len() as u64,
        "{r}"
    );
    assert_eq!(r["repaired"], 0, "{r}");
    assert!(stderr(&out).contains("--repair"), "{}", stderr(&out));
    // --repair fixes them (still exit 1: something was found).
    let out = run(&mut a.raidfs(&["scrub", &a.name, "--repair", "--json"]));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        r["repaired"].as_u64().unwrap() >= stripes.len() as u64,
        "{r}"
    );
    assert_eq!(r["unrecoverable"], 0, "{r}");
    // A second scrub is clean, and the status keeps the last result.
    let out = run_ok(&mut a.raidfs(&["scrub", &a.name, "--json"]));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["mismatches"], 0, "{r}");
    assert_eq!(r["redundancy_mismatches"], 0, "{r}");
    let st = a.live_status_json();
    assert_eq!(st["last_scrub"]["mismatches"], 0, "{st}");
    assert_eq!(st["last_scrub"]["complete"], true, "{st}");
    assert_eq!(hash_file(&a.path("f")).unwrap(), hash_bytes(&data));
    // Nothing is running to cancel.
    fails_with(
        &mut a.raidfs(&["scrub", "--cancel", &a.name]),
        2,
        "no scrub is running",
    );
}

#[test]
fn failure_drill_fail_write_replace_verify() {
    let mut a = TestArray::raid5();
    let mut files = write_files(&a, "before", 6, 400_000);
    let out = run_ok(&mut a.raidfs(&["fail", &a.name, "1"]));
    assert!(stdout(&out).contains("member 1"), "{}", stdout(&out));
    let st = a.live_status_json();
    assert_eq!(states(&st), vec!["active", "failed", "active", "active"]);
    assert_eq!(st["degraded"], true);
    // RAID-5 tolerates one failure; with one member failed, none more.
    assert_eq!(
        (
            st["failures_tolerated"].clone(),
            st["failures_left"].clone()
        ),
        (1.into(), 0.into())
    );
    let text = stdout(&run_ok(&mut a.raidfs(&["status", &a.name])));
    assert!(
        text.contains("tolerates: 1 failure(s) (0 more now)"),
        "{text}"
    );
    // The degraded array still serves reads and writes.
    verify(&a, &files);
    files.extend(write_files(&a, "during", 6, 300_000));
    let new = a.new_dir("new1");
    let member1 = a.members[1].display().to_string();
    let out = run_ok(&mut a.raidfs(&["replace", &a.name, &member1, new.to_str().unwrap()]));
    assert!(stdout(&out).contains("active"), "{}", stdout(&out));
    let st = a.live_status_json();
    assert!(all_active(&st), "{st:#}");
    assert_eq!(
        st["members"][1]["path"],
        new.display().to_string().as_str(),
        "{st}"
    );
    verify(&a, &files);
    // The rebuilt member is used after a remount with the new member list.
    a.members[1] = new;
    a.remount();
    verify(&a, &files);
    assert!(all_active(&a.live_status_json()));
    // And it truly holds its share: the array survives losing another one.
    run_ok(&mut a.raidfs(&["fail", &a.name, "3"]));
    verify(&a, &files);
}

#[test]
fn hot_spare_takes_over_a_failed_member() {
    let mut a = TestArray::raid5();
    let files = write_files(&a, "f", 8, 500_000);
    let spare = a.new_dir("spare");
    run_ok(&mut a.raidfs(&["add-spare", &a.name, spare.to_str().unwrap()]));
    let st = a.live_status_json();
    assert_eq!(st["spares"].as_array().unwrap().len(), 1, "{st}");
    assert_eq!(
        st["spares"][0]["path"],
        spare.display().to_string().as_str()
    );
    // A second directory can be added and removed again.
    let spare2 = a.new_dir("spare2");
    run_ok(&mut a.raidfs(&["add-spare", &a.name, spare2.to_str().unwrap()]));
    run_ok(&mut a.raidfs(&["remove-spare", &a.name, spare2.to_str().unwrap()]));
    assert_eq!(a.live_status_json()["spares"].as_array().unwrap().len(), 1);
    run_ok(&mut a.raidfs(&["fail", &a.name, "2"]));
    let st = wait_status(&a, "the spare to be rebuilt into slot 2", |st| {
        all_active(st) && st["members"][2]["path"] == spare.display().to_string().as_str()
    });
    assert!(st["spares"].as_array().unwrap().is_empty(), "{st}");
    verify(&a, &files);
    a.members[2] = spare;
    a.remount();
    verify(&a, &files);
}

/// Not mounted, a hot spare added to an array with a failed slot takes
/// it over before the command returns, instead of being left "rebuilding"
/// with nothing rebuilding it when the command closed the array.
#[test]
fn offline_add_spare_to_a_failed_slot_finishes_the_takeover() {
    let mut a = TestArray::raid5();
    let files = write_files(&a, "f", 4, 300_000);
    a.unmount();
    let spec = a.spec();
    run_ok(&mut a.raidfs(&["fail", &spec, "2"]));
    let spare = a.new_dir("spare");
    let out = run_ok(&mut a.raidfs(&["add-spare", &spec, spare.to_str().unwrap()]));
    a.members[2] = spare.clone();
    let st = rebuilt_offline(&mut a, &out, &files);
    assert_eq!(
        st["members"][2]["path"],
        spare.display().to_string().as_str()
    );
}

/// After an offline command that finished the rebuild of slot 2 (`out`):
/// it says so, every member is active, and once mounted the files read
/// back. Returns the offline status.
fn rebuilt_offline(a: &mut TestArray, out: &Output, files: &[(String, [u8; 32])]) -> Value {
    assert!(stdout(out).contains("member 2 rebuilt"), "{}", stdout(out));
    let st = a.status_json();
    assert!(all_active(&st), "{st:#}");
    a.mount();
    verify(a, files);
    st
}

/// A rebuild stopped by an unmount resumes when the array is assembled;
/// `raidfs replace` run again offline, as the docs say to resume it, sees
/// it to its end instead of refusing because "a rebuild is already
/// running".
#[test]
fn offline_replace_run_again_finishes_an_interrupted_rebuild() {
    let mut a = TestArray::raid5();
    let files = write_files(&a, "f", 8, 600_000);
    run_ok(&mut a.raidfs(&["fail", &a.name, "2"]));
    let new = a.new_dir("new");
    let new_s = new.to_str().unwrap().to_string();
    run_ok(&mut a.raidfs(&[
        "replace",
        &a.name,
        "2",
        &new_s,
        "--throttle",
        "1",
        "--no-wait",
    ]));
    a.unmount();
    a.members[2] = new.clone();
    let st = a.status_json();
    assert_eq!(st["members"][2]["state"], "rebuilding", "{st:#}");
    let out = run_ok(&mut a.raidfs(&["replace", &a.spec(), "2", &new_s]));
    rebuilt_offline(&mut a, &out, &files);
    // It holds its share: the array survives losing another member.
    run_ok(&mut a.raidfs(&["fail", &a.name, "0"]));
    verify(&a, &files);
}

/// `fail`, then `remove` (twice, as a script may): the member is let go,
/// the second remove has nothing left to do and is no error; a replace
/// fills the slot again.
#[test]
fn remove_detaches_a_failed_member_and_again_is_no_error() {
    let a = TestArray::raid5();
    let files = write_files(&a, "f", 3, 200_000);
    run_ok(&mut a.raidfs(&["fail", &a.name, "2"]));
    let out = run_ok(&mut a.raidfs(&["remove", &a.name, "2"]));
    assert!(
        stdout(&out).contains("member 2 removed"),
        "{}",
        stdout(&out)
    );
    let out = run_ok(&mut a.raidfs(&["remove", &a.name, "2"]));
    assert!(
        stdout(&out).contains("already detached"),
        "{}",
        stdout(&out)
    );
    let st = a.live_status_json();
    assert_eq!(states(&st), vec!["active", "active", "missing", "active"]);
    assert!(st["members"][2]["path"].is_null(), "{st}");
    let new = a.new_dir("new2");
    run_ok(&mut a.raidfs(&["replace", &a.name, "2", new.to_str().unwrap()]));
    wait_status(&a, "the rebuild to finish", all_active);
    verify(&a, &files);
}

#[test]
fn rebuild_resumes_after_kill_9_of_the_daemon() {
    let mut a = TestArray::raid5();
    let files = write_files(&a, "big", 6, 4 << 20);
    // Start from a clean array, so that the crash below interrupts only the
    // rebuild: stripes written just before a crash of a degraded array
    // cannot be checked (the RAID-5 write hole) and would be poisoned.
    a.remount();
    run_ok(&mut a.raidfs(&["fail", &a.name, "0"]));
    let new = a.new_dir("new0");
    // Slow enough to be caught in the middle (about 24 MiB of files).
    run_ok(&mut a.raidfs(&[
        "replace",
        &a.name,
        "0",
        new.to_str().unwrap(),
        "--throttle",
        "1",
        "--no-wait",
    ]));
    let st = wait_status(&a, "the rebuild to make progress", |st| {
        st["rebuild"]["done_bytes"].as_u64().unwrap_or(0) > 0
    });
    assert_eq!(st["rebuild"]["slot"], 0);
    assert!(st["rebuild"]["percent"].as_f64().unwrap() < 100.0, "{st}");
    assert_eq!(states(&st)[0], "rebuilding");
    // A second replace while one runs is refused.
    let other = a.new_dir("other");
    let out = run(&mut a.raidfs(&[
        "replace",
        &a.name,
        "0",
        other.to_str().unwrap(),
        "--no-wait",
    ]));
    assert!(!out.status.success(), "a second replace must be refused");
    assert!(!stderr(&out).is_empty(), "with a message");
    let uuid = st["uuid"].as_str().unwrap().to_string();
    a.kill9();
    // The dead daemon's record is recognised as stale.
    let out = run_ok(&mut a.raidfs(&["status", "--json"]));
    let all: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        !all.as_array()
            .unwrap()
            .iter()
            .any(|s| s["uuid"] == uuid.as_str()),
        "a killed daemon's array is not listed as mounted: {all}"
    );
    a.members[0] = new.clone();
    // Not mounted, a member being rebuilt is as unavailable as when it was.
    let off = a.status_json();
    assert_eq!(off["members"][0]["state"], "rebuilding", "{off}");
    assert_eq!(off["degraded"], true, "{off}");
    assert_eq!(off["failures_left"], 0, "{off}");
    // Killed while mounted, the array is dirty, and degraded while member 0
    // is rebuilt: like md, it starts only when told to (docs/MOUNT.md).
    a.set_options(&["force"]);
    a.mount();
    let st = wait_status(&a, "the resumed rebuild to finish", all_active);
    assert!(
        !a.log_text().contains("unrecoverable"),
        "the resumed rebuild lost data:\n{}",
        a.log_text()
    );
    assert_eq!(st["members"][0]["path"], new.display().to_string().as_str());
    verify(&a, &files);
    a.remount();
    verify(&a, &files);
}

#[test]
fn unprivileged_peers_may_read_status_but_not_change_the_array() {
    let a = TestArray::raid5();
    let uuid = a.live_status_json()["uuid"].as_str().unwrap().to_string();
    let sock = run_dir().join(format!("{uuid}.sock"));
    let nobody = |args: &[&str]| {
        let mut c = Command::new("setpriv");
        c.args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
            .arg(&raidfs_tests::bins().raidfs)
            .args(args);
        c
    };
    // The socket's mode keeps other users out altogether.
    fails_with(&mut nobody(&["fail", &a.name, "1"]), 1, "root");
    // With the mode loosened, the daemon's own uid check still refuses.
    fs::set_permissions(&sock, fs::Permissions::from_mode(0o666)).unwrap();
    let out = run_ok(&mut nobody(&["status", &a.name, "--json"]));
    let st: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["live"], true);
    fails_with(&mut nobody(&["fail", &a.name, "1"]), 1, "permission denied");
    fails_with(&mut nobody(&["scrub", &a.name]), 2, "permission denied");
    assert!(all_active(&a.live_status_json()), "nothing changed");
    fs::set_permissions(&sock, fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn bad_input_gives_clear_errors() {
    let a = TestArray::raid5();
    let name = a.name.as_str();
    let empty = a.new_dir("empty");
    let e = empty.to_str().unwrap();
    fails_with(
        &mut a.raidfs(&["fail", "no-such-array-xyz", "0"]),
        1,
        "no-such-array-xyz",
    );
    fails_with(&mut a.raidfs(&["fail", name, "9"]), 1, "no member slot 9");
    fails_with(
        &mut a.raidfs(&["fail", name, "/no/such/dir"]),
        1,
        "/no/such/dir",
    );
    fails_with(&mut a.raidfs(&["remove", name, e]), 1, "not a member");
    fails_with(&mut a.raidfs(&["replace", name, "0", e]), 1, "active");
    fails_with(
        &mut a.raidfs(&["replace", name, "0", "/no/such/dir"]),
        1,
        "/no/such/dir",
    );
    fails_with(
        &mut a.raidfs(&["scrub", name, "--throttle", "fast"]),
        2,
        "MB/s",
    );
    fails_with(
        &mut a.raidfs(&["scrub", "no-such-array-xyz"]),
        2,
        "no-such-array-xyz",
    );
    // A directory that already belongs to an array is no spare.
    fails_with(
        &mut a.raidfs(&["add-spare", name, a.members[1].to_str().unwrap()]),
        1,
        "",
    );
    assert!(all_active(&a.live_status_json()), "nothing changed");
    assert_ne!(empty, Path::new("/"));
}

#[test]
fn offline_scrub_fail_and_replace_work_on_unmounted_members() {
    let mut a = TestArray::raid5();
    let files = write_files(&a, "f", 4, 300_000);
    a.unmount();
    let spec = a.spec();
    let out = run_ok(&mut a.raidfs(&["scrub", &spec, "--json"]));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["mismatches"], 0, "{r}");
    assert_eq!(r["complete"], true, "{r}");
    run_ok(&mut a.raidfs(&["fail", &spec, "2"]));
    let st = a.status_json();
    assert_eq!(st["live"], false);
    assert_eq!(states(&st)[2], "failed", "{st}");
    let new = a.new_dir("new2");
    run_ok(&mut a.raidfs(&["replace", &spec, "2", new.to_str().unwrap()]));
    a.members[2] = new;
    let st = a.status_json();
    assert_eq!(states(&st), vec!["active"; 4], "{st}");
    a.mount();
    verify(&a, &files);
    assert!(all_active(&a.live_status_json()));
}

#[test]
fn selftest_names_the_kernel_in_use_and_says_when_a_forced_one_is_ignored() {
    let raidfs = &raidfs_tests::bins().raidfs;
    let out = run_ok(
        Command::new(raidfs)
            .arg("selftest")
            .env_remove("RAIDFS_KERNEL"),
    );
    let text = stdout(&out);
    assert!(text.contains("scalar     ok"), "{text}");
    let active = text
        .lines()
        .find_map(|l| l.strip_prefix("in use: "))
        .unwrap_or_else(|| panic!("no kernel in use named: {text}"))
        .to_string();

    let out = run_ok(
        Command::new(raidfs)
            .arg("selftest")
            .env("RAIDFS_KERNEL", "scalar"),
    );
    assert!(
        stdout(&out).contains("in use: scalar (forced by RAIDFS_KERNEL)"),
        "{}",
        stdout(&out)
    );

    let out = run_ok(
        Command::new(raidfs)
            .arg("selftest")
            .env("RAIDFS_KERNEL", "no-such-kernel"),
    );
    assert!(
        stdout(&out).contains(&format!(
            "in use: {active} (RAIDFS_KERNEL=no-such-kernel ignored: not a kernel this CPU can run)"
        )),
        "{}",
        stdout(&out)
    );
}

#[test]
fn status_of_several_arrays_by_name_and_of_one_that_does_not_exist() {
    let a = TestArray::raid5();
    let b = TestArray::raid5();
    let raidfs = &raidfs_tests::bins().raidfs;
    let out = run_ok(Command::new(raidfs).args(["status", &a.name, &b.name, "--json"]));
    let all: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(names(&all), vec![a.name.as_str(), b.name.as_str()]);
    // One name unknown: the others are shown, the command fails and says
    // which.
    let out = fails_with(
        Command::new(raidfs).args(["status", &a.name, "no-such-array-here"]),
        1,
        "no-such-array-here",
    );
    assert!(stdout(&out).contains(&a.name), "{}", stdout(&out));
    // A path that does not exist is named as such.
    fails_with(
        Command::new(raidfs).args(["status", "/no/such/dir"]),
        1,
        "no such array, mount point or member directory",
    );
}

/// `raidfs status | head`: a reader that stops reading ends the command
/// quietly (SIGPIPE), as for other Unix tools, not with a panic; and the
/// daemon it asked is none the worse.
#[test]
fn status_into_a_closed_pipe_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let a = TestArray::raid5();
    let mut child = Command::new(&raidfs_tests::bins().raidfs)
        .args(["status", &a.name])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{out:?}");
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    assert_eq!(a.live_status_json()["name"], a.name.as_str());
}

#[test]
fn replace_and_add_spare_refuse_another_members_filesystem_unless_allowed() {
    // Members on their own ext4 images, as on separate disks.
    let a = TestArray::builder("raid5", 3)
        .backing(raidfs_tests::Backing::Loop { mib: 32 })
        .mount();
    let files = write_files(&a, "f", 2, 100_000);
    let name = a.name.clone();
    run_ok(&mut a.raidfs(&["fail", &name, "2"]));
    // On member 0's disk: refused, nothing written there.
    let on_0 = a.member_fs(0).join("second");
    fs::create_dir(&on_0).unwrap();
    let dir = on_0.to_str().unwrap();
    let out = fails_with(
        &mut a.raidfs(&["replace", &name, "2", dir]),
        1,
        "same filesystem as member 0",
    );
    assert!(stderr(&out).contains("--allow-same-fs"), "{}", stderr(&out));
    fails_with(
        &mut a.raidfs(&["add-spare", &name, dir]),
        1,
        "same filesystem as member 0",
    );
    assert!(
        fs::read_dir(&on_0).unwrap().next().is_none(),
        "a refused directory was written"
    );
    // On the failed member's own disk: fine.
    let on_2 = a.member_fs(2).join("again");
    fs::create_dir(&on_2).unwrap();
    run_ok(&mut a.raidfs(&["replace", &name, "2", on_2.to_str().unwrap()]));
    verify(&a, &files);
    // Inside the array's own mount: refused even when asked for, since the
    // daemon would wait on itself (a hang, so under `timeout`).
    let inside = a.path("inside");
    fs::create_dir(&inside).unwrap();
    run_ok(&mut a.raidfs(&["fail", &name, "1"]));
    for args in [
        vec![
            "replace",
            &name,
            "1",
            inside.to_str().unwrap(),
            "--allow-same-fs",
        ],
        vec![
            "add-spare",
            &name,
            inside.to_str().unwrap(),
            "--allow-same-fs",
        ],
    ] {
        let out = run(Command::new("timeout")
            .arg("60")
            .arg(&raidfs_tests::bins().raidfs)
            .args(&args));
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("own mount point"), "{}", stderr(&out));
    }
    run_ok(&mut a.raidfs(&["replace", &name, "1", a.members[1].to_str().unwrap()]));
    // Asked for explicitly: allowed.
    run_ok(&mut a.raidfs(&["add-spare", &name, dir, "--allow-same-fs"]));
    let st = a.live_status_json();
    assert_eq!(st["spares"].as_array().unwrap().len(), 1, "{st}");
}

/// A command on an array that is not mounted, given one member directory,
/// finds the others as `status` does; when a member in service is nowhere
/// to be found it is refused, rather than record that member failed.
#[test]
fn offline_commands_given_one_member_find_the_others_or_refuse() {
    let a = TestArray::builder("raid5", 4).create();
    let raidfs = &raidfs_tests::bins().raidfs;
    let one = a.members[0].display().to_string();
    // Found beside it: the scrub runs and every member stays active.
    run_ok(Command::new(raidfs).args(["scrub", &one]));
    let st = a.status_json();
    assert_eq!(states(&st), vec!["active"; 4], "{st}");
    let events = st["events"].clone();
    // Member 3 moved where nobody looks: refused, nothing recorded.
    let away = tempfile::tempdir().unwrap();
    let moved = away.path().join("moved");
    fs::rename(&a.members[3], &moved).unwrap();
    let spare = a.new_dir("spare");
    for args in [
        vec!["add-spare", &one, spare.to_str().unwrap()],
        vec!["scrub", &one],
        vec!["fail", &one, "1"],
    ] {
        let out = run(Command::new(raidfs).args(&args));
        assert!(!out.status.success(), "{args:?}: {}", stdout(&out));
        assert!(
            stderr(&out).contains("member(s) 3 of array") && stderr(&out).contains("not found"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    assert!(
        fs::read_dir(&spare).unwrap().next().is_none(),
        "the spare was written"
    );
    let others = a.members[..3].to_vec();
    let status_of = |dirs: &[PathBuf]| -> Value {
        let out = run_ok(Command::new(raidfs).arg("status").args(dirs).arg("--json"));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    assert_eq!(status_of(&others)["events"], events);
    // The member a command is about may be the missing one: replacing the
    // dead disk is what this is for.
    let new = a.new_dir("new3");
    let out = run_ok(Command::new(raidfs).args([
        "replace",
        &one,
        "3",
        new.to_str().unwrap(),
        "--allow-same-fs",
    ]));
    assert!(stdout(&out).contains("member 3"), "{}", stdout(&out));
    let mut all = others;
    all.push(new);
    let st = status_of(&all);
    assert_eq!(states(&st), vec!["active"; 4], "{st}");
}

#[test]
fn status_of_one_member_directory_finds_the_others_and_only_misses_what_is_gone() {
    let a = TestArray::builder("raid5", 4).create();
    let raidfs = &raidfs_tests::bins().raidfs;
    let one = |dir: &std::path::Path| -> Value {
        let out = run_ok(Command::new(raidfs).arg("status").arg(dir).arg("--json"));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    // `raidfs status /mnt/disk1`: the other members are found beside it.
    let st = one(&a.members[0]);
    assert_eq!(st["name"], a.name.as_str());
    assert_eq!(
        (st["degraded"].clone(), st["failed"].clone()),
        (false.into(), false.into()),
        "{st}"
    );
    for (i, m) in st["members"].as_array().unwrap().iter().enumerate() {
        assert_eq!(m["state"], "active", "{st}");
        assert_eq!(
            m["path"],
            a.members[i].display().to_string().as_str(),
            "{st}"
        );
    }
    // A member moved where nobody looks is missing, and only that one.
    let away = tempfile::tempdir().unwrap();
    let moved = away.path().join("moved");
    fs::rename(&a.members[3], &moved).unwrap();
    let st = one(&a.members[0]);
    assert_eq!(st["degraded"], true, "{st}");
    assert_eq!(st["failures_left"], 0, "{st}");
    assert_eq!(st["members"][3]["state"], "missing", "{st}");
    assert_eq!(st["members"][1]["state"], "active", "{st}");
    fs::rename(&moved, &a.members[3]).unwrap();
}

/// Started degraded with `readd`, the mount's warning says the member
/// comes back by itself, not that `raidfs replace` is needed.
#[test]
fn a_degraded_mount_with_readd_says_the_member_comes_back_by_itself() {
    let mut a = TestArray::builder("raid5", 4).create();
    a.members.truncate(3);
    a.set_options(&["readd"]);
    a.mount();
    let log = a.log_text();
    assert!(
        log.contains("started DEGRADED") && log.contains("re-adds it by itself"),
        "{log}"
    );
    assert!(!log.contains("raidfs replace"), "{log}");
    a.unmount();
}

#[test]
fn with_readd_a_disk_listed_again_is_re_added_at_mount() {
    let mut a = TestArray::builder("raid5", 4).create();
    let all = a.members.clone();
    a.mount();
    let before = write_files(&a, "before", 2, 120_000);
    a.unmount();
    // Disk 3 was not there at one mount; files changed meanwhile.
    a.members.truncate(3);
    a.mount();
    let during = write_files(&a, "during", 3, 150_000);
    a.unmount();
    // Back in the list, mounted with `readd`: the mount re-adds it.
    a.members = all.clone();
    a.set_options(&["readd"]);
    a.mount();
    let start = Instant::now();
    loop {
        let st = a.live_status_json();
        if st["degraded"] == false {
            assert_eq!(st["members"][3]["state"], "active", "{st}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "not re-added: {st}\n{}",
            a.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    a.unmount();
    // It serves: without member 0, everything reads back.
    a.set_options(&[]);
    a.members = all[1..].to_vec();
    a.mount();
    verify(&a, &before);
    verify(&a, &during);
}

#[test]
fn a_disk_back_after_a_disconnect_rejoins_by_replace_onto_its_own_directory() {
    let mut a = TestArray::builder("raid5", 4).create();
    let all = a.members.clone();
    // Disk 3 did not come up at mount: started degraded, slot 3 failed.
    a.members.truncate(3);
    a.mount();
    let files = write_files(&a, "while-out", 3, 150_000);
    let st = a.live_status_json();
    assert_eq!(st["members"][3]["readd"], true, "{st}");
    let text = stdout(&run_ok(&mut a.raidfs(&["status", &a.name])));
    assert!(text.contains("can be re-added"), "{text}");
    // It is back: `raidfs replace NAME 3 DIR` with its own directory.
    let name = a.name.clone();
    let dir = all[3].display().to_string();
    let out = run_ok(&mut a.raidfs(&["replace", &name, "3", &dir]));
    assert!(
        stdout(&out).contains("re-adding member 3") && stdout(&out).contains("member 3 is active"),
        "{}",
        stdout(&out)
    );
    let st = a.live_status_json();
    assert_eq!(st["degraded"], false, "{st}");
    assert_eq!(st["members"][3]["path"], dir.as_str(), "{st}");
    a.unmount();
    // Re-added (its old files kept, those written while it was out
    // rebuilt): without member 0, everything reads back.
    a.members = all[1..].to_vec();
    a.mount();
    verify(&a, &files);
}

/// A client sending its request a byte every two seconds (each read well
/// within any per-read timeout) must not keep the daemon, and so the
/// array's member locks, alive after `umount`.
#[test]
fn a_client_trickling_its_request_does_not_outlive_the_unmount() {
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    let mut a = TestArray::raid5();
    let uuid = a.live_status_json()["uuid"].as_str().unwrap().to_string();
    let sock = run_dir().join(format!("{uuid}.sock"));
    let mut c = UnixStream::connect(&sock).unwrap();
    let trickle = std::thread::spawn(move || {
        for b in b"{\"op\":\"status\"" {
            if c.write_all(&[*b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_secs(2));
        }
        // Then nothing more, the connection left open.
        std::thread::sleep(Duration::from_secs(120));
    });
    std::thread::sleep(Duration::from_millis(500));
    let start = Instant::now();
    // Panics if the daemon has not exited 30 s after the umount.
    a.unmount();
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "{:?}",
        start.elapsed()
    );
    drop(trickle);
}

/// Run `cmd` for at most `limit`; panic if it is still running then.
fn run_within(cmd: &mut Command, limit: Duration) -> Output {
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{cmd:?} still running after {limit:?}:\nstdout: {}\nstderr: {}",
                stdout(&out),
                stderr(&out)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// A daemon that accepts connections but never answers (hung) is reported
/// and does not keep `raidfs status` from showing the other arrays.
#[test]
fn status_reports_a_daemon_that_does_not_answer_and_shows_the_others() {
    use std::os::unix::net::UnixListener;
    let a = TestArray::raid5();
    let uuid = a.live_status_json()["uuid"].as_str().unwrap().to_string();
    // A run directory of its own, so other tests never meet the hung one.
    let dir = tempfile::tempdir().unwrap();
    fs::copy(
        run_dir().join(format!("{uuid}.json")),
        dir.path().join(format!("{uuid}.json")),
    )
    .unwrap();
    let hung_sock = dir.path().join("hung.sock");
    // Listening, so connections queue, but never accepting.
    let _hung = UnixListener::bind(&hung_sock).unwrap();
    let hung = serde_json::json!({
        "name": "hung-array",
        "uuid": "00000000-0000-0000-0000-000000000000",
        "mountpoint": "/nonexistent",
        "pid": std::process::id(),
        "socket": hung_sock,
    });
    fs::write(
        dir.path().join("00000000-0000-0000-0000-000000000000.json"),
        serde_json::to_vec(&hung).unwrap(),
    )
    .unwrap();
    let limit = Duration::from_secs(60);
    for args in [
        vec!["status"],
        vec!["status", "hung-array", a.name.as_str()],
    ] {
        let out = run_within(a.raidfs(&args).env("RAIDFS_RUN_DIR", dir.path()), limit);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("hung-array") && stderr(&out).contains("does not answer"),
            "{args:?}: {}",
            stderr(&out)
        );
        assert!(stdout(&out).contains(&a.name), "{args:?}: {}", stdout(&out));
    }
    let out = run_within(
        a.raidfs(&["status", "--json"])
            .env("RAIDFS_RUN_DIR", dir.path()),
        limit,
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let all: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(names(&all), vec![a.name.as_str()]);
}

/// Flip a bit in the first `n` chunks member 0 holds as data of the file
/// `name` (RAID-5 on four members: stripe s keeps its parity on member
/// (s + ino) % 4 == 3's turn, see `online_scrub_reports_bit_rot…`). The
/// array must not be mounted.
fn rot_member0(a: &TestArray, ino: u64, n: usize) {
    let shard = a.members[0].join(format!(".raidfs/data/{:02x}/{:016x}", ino & 0xff, ino));
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&shard)
        .unwrap();
    for s in (0u64..).filter(|s| (s + ino) % 4 != 3).take(n) {
        let off = s * CHUNK + 999;
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, off).unwrap();
        f.write_all_at(&[b[0] ^ 0x10], off).unwrap();
    }
}

/// A mounted RAID-5 holding a 1 MiB file `f` (pattern `seed`) with `n` of
/// its chunks on member 0 rotten, and member 2 failed: those blocks have
/// no good copy left.
fn rotten_and_degraded(seed: u64, n: usize) -> TestArray {
    let mut a = TestArray::raid5();
    fs::write(a.path("f"), pattern(seed, 1 << 20)).unwrap();
    let ino = fs::metadata(a.path("f")).unwrap().ino();
    a.unmount();
    rot_member0(&a, ino, n);
    a.mount();
    run_ok(&mut a.raidfs(&["fail", &a.name, "2"]));
    a
}

/// A live replace whose rebuild meets a block with no good copy left (bad
/// on a source member, the replaced one gone) says so and fails, as the
/// offline one does: the member is active, yet that block reads EIO.
#[test]
fn a_live_replace_that_cannot_rebuild_a_block_says_so_and_fails() {
    let a = rotten_and_degraded(5, 1);
    let new = a.new_dir("new2");
    let out = fails_with(
        &mut a.raidfs(&["replace", &a.name, "2", new.to_str().unwrap()]),
        2,
        "could not be rebuilt",
    );
    assert!(
        stdout(&out).contains("1 unrecoverable blocks"),
        "{}",
        stdout(&out)
    );
    let st = a.live_status_json();
    assert_eq!(states(&st)[2], "active", "{st}");
    assert_eq!(st["members"][2]["last_rebuild"]["unrecoverable"], 1, "{st}");
    assert_eq!(st["members"][2]["last_rebuild"]["complete"], true, "{st}");
    let text = stdout(&run_ok(&mut a.raidfs(&["status", &a.name])));
    assert!(text.contains("could not rebuild 1 block(s)"), "{text}");
}

/// Start a check-only scrub slow enough to be caught running (about 8 MiB
/// at 0.5 MB/s) and wait until the daemon reports it.
fn start_slow_scrub(a: &TestArray) -> std::process::Child {
    write_files(a, "slow", 4, 2 << 20);
    let child = a
        .raidfs(&["scrub", &a.name, "--throttle", "0.5"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_status(a, "the scrub to run", |st| !st["scrub"].is_null());
    child
}

/// `scrub --repair` while a check runs follows the check; with its output
/// going to a pipe (a timer's journal) it still says so, and that nothing
/// was repaired.
#[test]
fn scrub_repair_while_a_check_runs_says_it_follows_the_check() {
    let a = TestArray::raid5();
    let mut check = start_slow_scrub(&a);
    let mut repair = a.raidfs(&["scrub", &a.name, "--repair"]);
    let follower = repair
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Let it get the note, then stop the check it follows.
    std::thread::sleep(Duration::from_millis(1500));
    run_ok(&mut a.raidfs(&["scrub", "--cancel", &a.name]));
    let out = follower.wait_with_output().unwrap();
    let _ = check.wait();
    let err = stderr(&out);
    assert!(
        err.contains("a scrub is already running; following it"),
        "{err}"
    );
    assert!(err.contains("nothing was repaired"), "{err}");
    assert!(!stdout(&out).contains("scrub --repair"), "{}", stdout(&out));
    assert_eq!(out.status.code(), Some(2), "stopped: {err}");
}

/// A cancelled scrub's summary is partial: `status` says it stopped, and
/// when, not only what the part it checked found.
#[test]
fn status_shows_a_cancelled_scrub_as_stopped() {
    let a = TestArray::raid5();
    let mut check = start_slow_scrub(&a);
    run_ok(&mut a.raidfs(&["scrub", "--cancel", &a.name]));
    let _ = check.wait();
    let st = wait_status(&a, "the scrub to stop", |st| st["scrub"].is_null());
    assert_eq!(st["last_scrub"]["complete"], false, "{st}");
    let text = stdout(&run_ok(&mut a.raidfs(&["status", &a.name])));
    let line = text
        .lines()
        .find(|l| l.contains("last scrub"))
        .unwrap_or_else(|| panic!("no last scrub line: {text}"));
    assert!(
        line.contains("STOPPED before the end") && line.contains("partial"),
        "{line}"
    );
    assert!(line.contains(" ago"), "{line}");
}

/// Offline commands given member directories relative to the working
/// directory (`d0:d1/`, as typed in the disks' parent) find the others
/// without taking a given member for a second one.
#[test]
fn offline_commands_take_relative_member_paths() {
    let a = TestArray::builder("raid5", 4).create();
    let raidfs = &raidfs_tests::bins().raidfs;
    let parent = a.root.parent().unwrap();
    let base = a.root.file_name().unwrap().to_str().unwrap();
    let rel = |i: usize| format!("{base}/d{i}");
    let two = format!("{}:{}", rel(1), rel(2));
    let out = run(Command::new(raidfs)
        .args(["scrub", &two])
        .current_dir(parent));
    assert!(out.status.success(), "scrub: {}", stderr(&out));
    let out = run(Command::new(raidfs)
        .args(["fail", &two, "2"])
        .current_dir(parent));
    assert!(out.status.success(), "fail: {}", stderr(&out));
    let st = a.status_json();
    assert_eq!(states(&st), vec!["active", "active", "failed", "active"]);
}

/// Offline `remove` of a member whose disk is gone records it failed (as
/// `mdadm --remove` of a device that is gone) and says so, not that it
/// had been detached already.
#[test]
fn offline_remove_of_a_member_not_found_says_it_recorded_it_failed() {
    let a = TestArray::builder("raid5", 4).create();
    let raidfs = &raidfs_tests::bins().raidfs;
    let away = tempfile::tempdir().unwrap();
    fs::rename(&a.members[1], away.path().join("moved")).unwrap();
    let others: Vec<String> = [0, 2, 3]
        .iter()
        .map(|&i| a.members[i].display().to_string())
        .collect();
    let out = run_ok(Command::new(raidfs).args(["remove", &others.join(":"), "1"]));
    let text = stdout(&out);
    assert!(text.contains("recorded failed and removed"), "{text}");
    assert!(!text.contains("already detached"), "{text}");
    let out = run_ok(
        Command::new(raidfs)
            .arg("status")
            .args(&others)
            .arg("--json"),
    );
    let st: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["members"][1]["state"], "failed", "{st}");
}

/// A mount point typed without a `/` (`mnt` from its parent, `.` inside
/// it) is the mount point, not an array name.
#[test]
fn a_mount_point_without_a_slash_is_taken_as_the_mount_point() {
    let a = TestArray::raid5();
    let uuid = a.live_status_json()["uuid"].clone();
    for (dir, word) in [(&a.root, "mnt"), (&a.mnt, ".")] {
        let out = run(a.raidfs(&["status", word, "--json"]).current_dir(dir));
        assert!(out.status.success(), "status {word}: {}", stderr(&out));
        let st: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(st["uuid"], uuid, "status {word}");
        assert_eq!(st["live"], true, "status {word}");
    }
    let out = run(a.raidfs(&["scrub", "mnt"]).current_dir(&a.root));
    assert!(out.status.success(), "scrub mnt: {}", stderr(&out));
    // A name is still a name.
    run_ok(&mut a.raidfs(&["status", &a.name]));
}

/// Offline, an array with more members gone than it survives is failed
/// and degraded, as the live status says.
#[test]
fn offline_status_of_a_failed_array_is_degraded_too() {
    let a = TestArray::builder("raid5", 4).create();
    let away = tempfile::tempdir().unwrap();
    for i in 1..4 {
        fs::rename(&a.members[i], away.path().join(format!("m{i}"))).unwrap();
    }
    let out = run_ok(
        Command::new(&raidfs_tests::bins().raidfs)
            .arg("status")
            .arg(&a.members[0])
            .arg("--json"),
    );
    let st: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["failed"], true, "{st}");
    assert_eq!(st["degraded"], true, "{st}");
}

/// A repairing scrub that meets blocks with no good copy left (bad on one
/// member, another member failed) says how many could not be repaired
/// and what to do, not that it repaired what it found.
#[test]
fn a_repairing_scrub_that_cannot_repair_says_how_many_blocks_are_lost() {
    let a = rotten_and_degraded(6, 4);
    fails_with(
        &mut a.raidfs(&["scrub", &a.name, "--repair"]),
        1,
        "could not be repaired",
    );
}
