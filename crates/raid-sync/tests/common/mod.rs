//! Test harness: a real moto S3 server on 127.0.0.1 (one per test binary),
//! a TCP proxy that can take the "network" down, and helpers to run the
//! `raidfs-sync` binary.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use aws_sdk_s3::Client;

pub struct Moto {
    pub endpoint: String,
    child: Mutex<Child>,
}

static MOTO: OnceLock<Moto> = OnceLock::new();

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The moto server of this test binary, started on first use. It runs under
/// a small shell watchdog that stops it when the test process exits (statics
/// are never dropped).
pub fn moto() -> &'static Moto {
    MOTO.get_or_init(|| {
        let exe = std::env::var("RAIDFS_MOTO").unwrap_or_else(|_| {
            panic!(
                "RAIDFS_MOTO is not set: these tests need a real S3-compatible server. Run \
                 `scripts/s3-server.sh install` and set RAIDFS_MOTO=$(scripts/s3-server.sh path) \
                 (make test does this)."
            )
        });
        let mut exe = PathBuf::from(exe);
        if exe.is_dir() {
            exe = exe.join("bin/moto_server");
        }
        assert!(exe.exists(), "RAIDFS_MOTO={} does not exist", exe.display());
        let port = free_port();
        let script = format!(
            "\"{}\" -H 127.0.0.1 -p {port} >/dev/null 2>&1 & m=$!; \
             while kill -0 {} 2>/dev/null && kill -0 $m 2>/dev/null; do sleep 0.5; done; kill $m",
            exe.display(),
            std::process::id()
        );
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            // Small parts keep the multipart tests cheap.
            .env("S3_UPLOAD_PART_MIN_SIZE", "65536")
            .stdin(Stdio::null())
            .spawn()
            .expect("spawning moto_server");
        let endpoint = format!("http://127.0.0.1:{port}");
        let t0 = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "moto_server did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Moto {
            endpoint,
            child: Mutex::new(child),
        }
    })
}

static BUCKETS: AtomicU32 = AtomicU32::new(0);

/// Deterministic test bytes, different for each seed (a multiplicative
/// hash of the position: no run of equal bytes, so misplaced parts show).
pub fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect()
}

/// A fresh bucket name for one test.
pub fn bucket_name(test: &str) -> String {
    format!(
        "t{}-{}-{}",
        std::process::id(),
        BUCKETS.fetch_add(1, Ordering::Relaxed),
        test.replace('_', "-")
    )
}

/// An S3 client for checking the bucket from the test side.
pub fn client(endpoint: &str) -> Client {
    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .build();
    Client::from_conf(conf)
}

/// One pass with a JSON summary into a bucket created if needed, with parts
/// small enough that a few MiB already go multipart.
pub const ONCE_SMALL_PARTS: [&str; 7] = [
    "--once",
    "--json",
    "--create-bucket",
    "--multipart-threshold",
    "1MiB",
    "--part-size",
    "1MiB",
];

/// A `raidfs-sync` command with test credentials (moto accepts any).
pub fn cmd(endpoint: &str, bucket: &str) -> Command {
    cmd_of(
        Path::new(env!("CARGO_BIN_EXE_raidfs-sync")),
        endpoint,
        bucket,
    )
}

/// [`cmd`] running the binary at `program` (a copy of it).
pub fn cmd_of(program: &Path, endpoint: &str, bucket: &str) -> Command {
    let mut c = Command::new(program);
    c.env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL_S3")
        .env("RAIDFS_SYNC_LOG", "info,raid_sync=debug")
        // moto runs with S3_UPLOAD_PART_MIN_SIZE=64KiB: small parts keep the
        // multipart tests cheap.
        .env("RAIDFS_SYNC_MIN_PART_SIZE", "64KiB")
        // Run records of test daemons stay out of the system's run directory.
        .env("RAIDFS_RUN_DIR", test_run_dir())
        .arg("--bucket")
        .arg(bucket)
        .arg("--endpoint-url")
        .arg(endpoint);
    c
}

/// The run directory of this test process's daemons (their run records),
/// under cargo's temporary directory for tests so that nothing is left in
/// the system's `/tmp`.
pub fn test_run_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("sync-run-{}", std::process::id()))
}

/// Runs a command, returning its output (stdout, stderr, status).
pub fn run(mut c: Command) -> Output {
    c.stdin(Stdio::null())
        .output()
        .expect("running raidfs-sync")
}

/// Parses the JSON summary a `--json` run printed.
/// A `--once --json` pass with a given state file.
pub fn once(endpoint: &str, bucket: &str, st: &Path, root: &Path, extra: &[&str]) -> Output {
    once_with(cmd(endpoint, bucket), st, root, extra)
}

/// [`once`] with a command prepared by the caller (e.g. its environment).
pub fn once_with(mut k: Command, st: &Path, root: &Path, extra: &[&str]) -> Output {
    k.args(["--once", "--json", "--create-bucket", "--state"])
        .arg(st)
        .args(extra)
        .arg(root);
    run(k)
}

/// A command's stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The state file at `st`, parsed.
pub fn state_json(st: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(st).unwrap()).unwrap()
}

pub fn json(o: &Output) -> serde_json::Value {
    let s = String::from_utf8_lossy(&o.stdout);
    serde_json::from_str(s.trim()).unwrap_or_else(|e| {
        panic!(
            "no JSON on stdout ({e}): {s}\nstderr: {}",
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

/// Polls `f` until it is true (panics with `what` after `limit`).
pub async fn wait_for<F, Fut>(what: &str, limit: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t0 = Instant::now();
    loop {
        if f().await {
            return;
        }
        assert!(t0.elapsed() < limit, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn exists(c: &Client, bucket: &str, key: &str) -> bool {
    c.head_object().bucket(bucket).key(key).send().await.is_ok()
}

/// HeadObject of a key that must exist.
pub async fn head(
    c: &Client,
    bucket: &str,
    key: &str,
) -> aws_sdk_s3::operation::head_object::HeadObjectOutput {
    c.head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("HeadObject {key}: {e:?}"))
}

pub async fn get(c: &Client, bucket: &str, key: &str) -> Vec<u8> {
    let o = c.get_object().bucket(bucket).key(key).send().await.unwrap();
    o.body.collect().await.unwrap().into_bytes().to_vec()
}

pub async fn keys(c: &Client, bucket: &str) -> Vec<String> {
    let o = c.list_objects_v2().bucket(bucket).send().await.unwrap();
    let mut k: Vec<String> = o
        .contents()
        .iter()
        .filter_map(|o| o.key().map(String::from))
        .collect();
    k.sort();
    k
}

/// Replaces an object's body, keeping its metadata: damage that only the
/// content shows.
pub async fn put_keeping_metadata(c: &Client, bucket: &str, key: &str, body: Vec<u8>) {
    let h = c
        .head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    c.put_object()
        .bucket(bucket)
        .key(key)
        .set_metadata(h.metadata().cloned())
        .body(body.into())
        .send()
        .await
        .unwrap();
}

pub fn write(root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    let mut f = std::fs::File::create(&p).unwrap();
    f.write_all(data).unwrap();
}

/// A daemon child that is killed when dropped.
pub struct Daemon(pub Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A TCP forwarder to the S3 server that can be switched off (connection
/// refused, open connections cut) and on again on the same port.
pub struct Proxy {
    pub port: u16,
    upstream: String,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    pub fn new(upstream_endpoint: &str) -> Proxy {
        let upstream = upstream_endpoint.trim_start_matches("http://").to_string();
        let mut p = Proxy {
            port: free_port(),
            upstream,
            up: Arc::new(AtomicBool::new(false)),
            conns: Arc::new(Mutex::new(Vec::new())),
            accept: None,
        };
        p.start();
        p
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn start(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).expect("rebinding proxy port");
        self.up.store(true, Ordering::SeqCst);
        let (up, conns, upstream) = (self.up.clone(), self.conns.clone(), self.upstream.clone());
        self.accept = Some(std::thread::spawn(move || {
            for s in listener.incoming() {
                if !up.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = s else { continue };
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let mut l = conns.lock().unwrap();
                l.push(client.try_clone().unwrap());
                l.push(server.try_clone().unwrap());
                drop(l);
                pump(client.try_clone().unwrap(), server.try_clone().unwrap());
                pump(server, client);
            }
        }));
    }

    pub fn stop(&mut self) {
        self.up.store(false, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port)); // wake accept()
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A forwarder to the S3 server that holds connections until told: a
/// command's first request can be stopped at a known point (its connection
/// accepted, nothing forwarded) while the test changes the tree or the
/// bucket, then let through.
pub struct Gate {
    listener: TcpListener,
    upstream: String,
}

impl Gate {
    pub fn new(upstream_endpoint: &str) -> Gate {
        Gate {
            listener: TcpListener::bind("127.0.0.1:0").unwrap(),
            upstream: upstream_endpoint.trim_start_matches("http://").to_string(),
        }
    }

    pub fn endpoint(&self) -> String {
        format!(
            "http://127.0.0.1:{}",
            self.listener.local_addr().unwrap().port()
        )
    }

    /// Waits for the next connection and returns it, not forwarded.
    pub fn accept(&self) -> TcpStream {
        self.listener.accept().unwrap().0
    }

    /// Forwards `held` and every later connection to the server.
    pub fn open(self, held: TcpStream) {
        let upstream = self.upstream;
        let forward = move |s: TcpStream| {
            let Ok(u) = TcpStream::connect(&upstream) else {
                return;
            };
            pump(s.try_clone().unwrap(), u.try_clone().unwrap());
            pump(u, s);
        };
        forward(held);
        let listener = self.listener;
        std::thread::spawn(move || {
            for s in listener.incoming().flatten() {
                forward(s);
            }
        });
    }
}

/// Copies `from` to `to` in a thread until `from` ends, then shuts `to` for
/// writing.
pub fn pump(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

/// A plain HTTP GET to the S3 server (moto checks no signature), for the
/// few replies of moto 5.2.5 whose XML root the SDK rejects (ListParts,
/// GetBucketVersioning).
pub fn raw_get(endpoint: &str, path_and_query: &str) -> String {
    let host = endpoint.trim_start_matches("http://");
    let mut s = TcpStream::connect(host).unwrap();
    write!(s, "GET {path_and_query} HTTP/1.0\r\nHost: {host}\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}
