//! The whole mission in one test: files written to a mounted array reach
//! S3 through the `raidfs-sync` daemon watching the mount point (inotify on
//! the FUSE mount), changes follow, and a restore from the bucket gives the
//! tree back exactly. The S3 server is moto on 127.0.0.1 (`RAIDFS_MOTO`, as
//! `make test` sets it).

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use raidfs_tests::{TestArray, assert_same_tree, bins, make_tree, pattern, run, tree};

/// A moto server on a free port, stopped on drop.
struct S3 {
    child: Child,
    endpoint: String,
}

impl S3 {
    fn start() -> S3 {
        let exe = std::env::var("RAIDFS_MOTO").unwrap_or_else(|_| {
            panic!(
                "RAIDFS_MOTO is not set: this test needs a real S3-compatible server \
                 (`scripts/s3-server.sh install`; make test sets it)"
            )
        });
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(exe)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting moto_server");
        // Up to 30 s for the Python server to listen.
        let listening = (0..300).any(|_| {
            let up = TcpStream::connect(("127.0.0.1", port)).is_ok();
            if !up {
                std::thread::sleep(Duration::from_millis(100));
            }
            up
        });
        assert!(listening, "moto_server did not start");
        S3 {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `raidfs-sync` with test credentials against `s3`.
fn sync_cmd(s3: &S3, state: &Path) -> Command {
    let mut c = Command::new(&bins().sync);
    c.env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_PROFILE")
        .env("RAIDFS_RUN_DIR", state)
        .args(["--bucket", "array-backup", "--endpoint-url", &s3.endpoint])
        .arg("--state")
        .arg(state.join("state.json"));
    c
}

/// Polls `raidfs-sync verify` until the bucket matches `root`.
fn wait_until_mirrored(s3: &S3, state: &Path, root: &Path) {
    let t0 = Instant::now();
    loop {
        let out = run(sync_cmd(s3, state).arg("verify").arg(root));
        if out.status.success() {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "the bucket did not come to match the mount: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn a_mounted_array_is_mirrored_to_s3_and_restored_exactly() {
    let a = TestArray::raid5();
    let s3 = S3::start();
    let state = tempfile::tempdir().unwrap();
    let root = a.mnt.clone();
    make_tree(&root.join("photos"), 60, 300_000);
    fs::write(root.join("big.bin"), pattern(3, 3 << 20)).unwrap();
    fs::create_dir(root.join("empty")).unwrap();
    std::os::unix::fs::symlink("big.bin", root.join("link")).unwrap();

    let mut daemon = DaemonGuard(
        sync_cmd(&s3, state.path())
            .args(["--create-bucket", "--no-progress", "--debounce", "200ms"])
            .arg(&root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting raidfs-sync"),
    );
    wait_until_mirrored(&s3, state.path(), &root);

    // Changes made through the mount while the daemon watches it.
    fs::write(root.join("photos/new.txt"), b"written after the first pass").unwrap();
    fs::write(root.join("big.bin"), pattern(4, (3 << 20) + 17)).unwrap();
    fs::rename(root.join("link"), root.join("link2")).unwrap();
    fs::remove_dir_all(root.join("photos/d1")).unwrap();
    wait_until_mirrored(&s3, state.path(), &root);
    daemon.stop();

    let target = state.path().join("restored");
    let out = run(sync_cmd(&s3, state.path()).arg("restore").arg(&target));
    assert!(
        out.status.success(),
        "restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same_tree(&tree(&root), &tree(&target));
}

/// Stops the daemon with SIGTERM (as systemd does), or kills it on a panic.
struct DaemonGuard(Child);

impl DaemonGuard {
    fn stop(&mut self) {
        let pid = rustix::process::Pid::from_child(&self.0);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let status = self.0.wait().unwrap();
        assert!(status.success(), "raidfs-sync exited with {status}");
    }
}

impl Drop for DaemonGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
