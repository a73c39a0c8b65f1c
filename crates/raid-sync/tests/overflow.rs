//! The daemon's inotify queue overflows (events are lost) and every file
//! still reaches the bucket: the overflow turns the next pass into a full
//! local scan against the state.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;

const QUEUE_SYSCTL: &str = "/proc/sys/fs/inotify/max_queued_events";

/// Lowers the inotify queue limit for instances created while it is alive,
/// restoring the old value on drop (the limit is taken at inotify_init).
struct QueueLimit(Option<String>);

impl QueueLimit {
    fn lower(to: u32) -> QueueLimit {
        let old = std::fs::read_to_string(QUEUE_SYSCTL).ok();
        match old {
            Some(old) if std::fs::write(QUEUE_SYSCTL, to.to_string()).is_ok() => {
                QueueLimit(Some(old))
            }
            _ => QueueLimit(None),
        }
    }

    fn restore(&mut self) {
        if let Some(old) = self.0.take() {
            let _ = std::fs::write(QUEUE_SYSCTL, old.trim());
        }
    }
}

impl Drop for QueueLimit {
    fn drop(&mut self) {
        self.restore();
    }
}

async fn all_keys(c: &aws_sdk_s3::Client, bucket: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let o = c
            .list_objects_v2()
            .bucket(bucket)
            .set_continuation_token(token)
            .send()
            .await
            .unwrap();
        out.extend(
            o.contents()
                .iter()
                .filter_map(|o| o.key().map(String::from)),
        );
        token = o.next_continuation_token().map(String::from);
        if token.is_none() {
            return out;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_file_arrives_after_an_inotify_queue_overflow() {
    let m = moto();
    let b = bucket_name("overflow");
    let c = client(&m.endpoint);
    let src = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let root = src.path();
    write(root, "first.txt", b"first");
    // Existing, watched directories: files created in a directory the
    // watcher has not seen yet make no events at all.
    for i in 0..7 {
        std::fs::create_dir(root.join(format!("d{i}"))).unwrap();
    }
    let log = logs.path().join("daemon.log");

    // A small queue for the daemon's inotify instance only: lowered just
    // before it starts, restored as soon as it watches.
    let mut limit = QueueLimit::lower(64);
    let mut k = cmd(&m.endpoint, &b);
    k.args([
        "--create-bucket",
        "--no-progress",
        "--debounce",
        "200ms",
        "--state",
    ])
    .arg(state.path().join("s.json"))
    .arg(root)
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(&log).unwrap());
    let d = Daemon(k.spawn().unwrap());
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_for("daemon watching", Duration::from_secs(30), || async {
        read_log().contains("watching for changes")
    })
    .await;
    let queue: usize = if limit.0.is_some() {
        limit.restore();
        64
    } else {
        // Not allowed to change the limit: outgrow the system's own.
        std::fs::read_to_string(QUEUE_SYSCTL)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(16384)
    };
    wait_for("initial pass", Duration::from_secs(30), || async {
        exists(&c, &b, "first.txt").await && exists(&c, &b, "d6/").await
    })
    .await;

    // Freeze the daemon so it cannot drain the queue, then make far more
    // events (each file: create, open, modify, close) than the queue holds.
    let pid = d.0.id().to_string();
    let sig = |s: &str| {
        assert!(
            std::process::Command::new("kill")
                .args([s, &pid])
                .status()
                .unwrap()
                .success()
        )
    };
    sig("-STOP");
    let files = queue / 2 + 50;
    for i in 0..files {
        write(
            root,
            &format!("d{}/f{i}.txt", i % 7),
            format!("file {i}").as_bytes(),
        );
    }
    // A directory made while events are lost: its creation is one of them.
    write(root, "fresh/one.txt", b"one");
    sig("-CONT");

    let want = files + 1 + 7 + 1; // files, first.txt, 7 directory markers, fresh/one.txt
    wait_for(
        "every file in the bucket",
        Duration::from_secs(120),
        || async { all_keys(&c, &b).await.len() >= want },
    )
    .await;
    let keys = all_keys(&c, &b).await;
    for i in 0..files {
        let k = format!("d{}/f{i}.txt", i % 7);
        assert!(keys.contains(&k), "{k} missing");
    }
    assert!(
        read_log().contains("inotify queue overflowed"),
        "the queue did not overflow; the test proves nothing:\n{}",
        read_log()
    );
    // The directory made during the overflow is watched from then on.
    write(root, "fresh/later.txt", b"later");
    wait_for("fresh/later.txt", Duration::from_secs(30), || {
        exists(&c, &b, "fresh/later.txt")
    })
    .await;
    drop(d);
}
