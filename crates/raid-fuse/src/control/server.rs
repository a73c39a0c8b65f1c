//! The daemon side of the control socket: a listener thread started once
//! the mount succeeded, one short-lived thread per connection, and at most
//! one scrub worker. [`Server::stop`] ends all of them (a running scrub
//! saves its checkpoint) before the array is closed, so nothing here holds
//! the array when the mount daemon closes it.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use raid_array::Array;
use raid_array::ops::{Progress, ScrubOptions};
use tracing::{info, warn};

use super::protocol::{Request, Response, ScrubResult};
use super::record::{Record, ensure_run_dir};
use crate::cli::status::{LiveExtras, ScrubProgressJson, StatusJson};

/// How often the accept loop and the scrub streamer look at the stop flag.
const TICK: Duration = Duration::from_millis(100);
/// How often a following client gets a progress line.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// The whole request line must arrive within this, however it trickles in.
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// The longest request: a `replace` or `add-spare` path of PATH_MAX (4096)
/// bytes even if every byte were JSON-escaped (`\u00XX`), plus the rest.
const MAX_REQUEST: usize = 32 << 10;
/// The longest request of a peer that may only read the status
/// (`{"op":"status"}` takes 15 bytes).
const MAX_UNPRIVILEGED_REQUEST: usize = 1 << 10;
/// Connections served at once; more are refused with an error line.
const MAX_CONNECTIONS: usize = 16;
/// Of those, how many peers that may only read the status may hold, so
/// that they can never keep root out.
const MAX_UNPRIVILEGED: usize = 8;
// Root must always find a free connection.
const _: () = assert!(MAX_UNPRIVILEGED < MAX_CONNECTIONS);
/// At unmount, how long commands being answered (a scrub's final result)
/// get before their connections are shut down.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// A client that reads nothing this long is dropped (the scrub goes on).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A scrub running in the daemon.
struct ScrubJob {
    repair: bool,
    done: AtomicU64,
    total: AtomicU64,
    cancel: AtomicBool,
    stop_all: Arc<AtomicBool>,
    result: Mutex<Option<std::result::Result<ScrubResult, String>>>,
}

impl Progress for ScrubJob {
    fn update(&self, done: u64, total: u64) {
        self.done.store(done, Ordering::Relaxed);
        self.total.store(total, Ordering::Relaxed);
    }
    fn should_stop(&self) -> bool {
        self.cancel.load(Ordering::Relaxed) || self.stop_all.load(Ordering::Relaxed)
    }
}

struct Shared {
    array: Arc<Array>,
    record: Record,
    own_uid: u32,
    stop: Arc<AtomicBool>,
    scrub: Mutex<Option<(Arc<ScrubJob>, JoinHandle<()>)>>,
}

/// The running control server of one mount.
pub struct Server {
    shared: Arc<Shared>,
    listener: Option<JoinHandle<()>>,
    record_path: PathBuf,
}

impl Server {
    /// Bind the socket and write the record. `array` is shared with the
    /// FUSE session; [`Server::stop`] gives every clone back.
    pub fn start(array: Arc<Array>, mountpoint: &Path) -> Result<Server> {
        let st = array.status();
        let dir = super::run_dir();
        ensure_run_dir(&dir)?;
        let socket = super::socket_path(&st.uuid);
        let record_path = super::record_path(&st.uuid);
        // A socket left by a daemon killed with -9: nobody listens on it
        // (the engine's member locks keep a second live mount out).
        if socket.exists() {
            if UnixStream::connect(&socket).is_ok() {
                anyhow::bail!(
                    "{} is in use by another daemon serving array {}",
                    socket.display(),
                    st.uuid
                );
            }
            std::fs::remove_file(&socket)
                .with_context(|| format!("removing the stale socket {}", socket.display()))?;
        }
        let listener = UnixListener::bind(&socket)
            .with_context(|| format!("binding the control socket {}", socket.display()))?;
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("chmod 0600 {}", socket.display()))?;
        listener
            .set_nonblocking(true)
            .context("making the control socket non-blocking")?;
        let record = Record {
            name: st.name.clone(),
            uuid: st.uuid.clone(),
            mountpoint: mountpoint.to_path_buf(),
            pid: std::process::id(),
            socket: socket.clone(),
        };
        record.write(&record_path)?;
        let shared = Arc::new(Shared {
            array,
            record,
            own_uid: rustix::process::geteuid().as_raw(),
            stop: Arc::new(AtomicBool::new(false)),
            scrub: Mutex::new(None),
        });
        let s = Arc::clone(&shared);
        let handler: Arc<Handler> = Arc::new(move |stream, peer| {
            if let Err(e) = serve_connection(&s, stream, peer) {
                tracing::debug!(error = %format!("{e:#}"), "control connection ended");
            }
        });
        let stop = Arc::clone(&shared.stop);
        let own_uid = shared.own_uid;
        let handle = std::thread::Builder::new()
            .name("raidfs-control".into())
            .spawn(move || accept_loop(&listener, &stop, own_uid, LIMITS, &handler))
            .context("starting the control thread")?;
        info!(socket = %socket.display(), "control socket ready");
        Ok(Server {
            shared,
            listener: Some(handle),
            record_path,
        })
    }

    /// Remove the record and the socket, stop listening, end the
    /// connections and any scrub (checkpoint saved).
    pub fn stop(mut self) {
        // The record goes first, so that a command started from now on
        // finds the array unmounted instead of a socket about to close.
        self.shared.record.remove(&self.record_path);
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.listener.take() {
            let _ = h.join();
        }
        let job = lock(&self.shared.scrub).take();
        if let Some((_, h)) = job {
            let _ = h.join();
        }
    }
}

/// Who is at the other end of a connection, from `SO_PEERCRED` at accept,
/// before anything is read from it.
#[derive(Clone, Copy, Debug)]
struct Peer {
    uid: u32,
    pid: i32,
    /// Root or the daemon's own uid: may change the array.
    privileged: bool,
}

/// How the accept loop bounds its connections (a type so that tests can
/// use short times).
#[derive(Clone, Copy, Debug)]
struct Limits {
    max_connections: usize,
    max_unprivileged: usize,
    stop_grace: Duration,
}

impl Limits {
    /// Whether a new peer must be refused, with `open` connections of
    /// which `unprivileged` are of peers that may only read the status.
    fn full(&self, privileged: bool, open: usize, unprivileged: usize) -> bool {
        open >= self.max_connections || (!privileged && unprivileged >= self.max_unprivileged)
    }
}

const LIMITS: Limits = Limits {
    max_connections: MAX_CONNECTIONS,
    max_unprivileged: MAX_UNPRIVILEGED,
    stop_grace: STOP_GRACE,
};

/// A connection being served: its thread, and its socket, kept to shut it
/// down at stop whatever the thread waits for.
struct Conn {
    thread: JoinHandle<()>,
    socket: UnixStream,
    privileged: bool,
}

/// What serves one accepted connection.
type Handler = dyn Fn(UnixStream, Peer) + Send + Sync;

/// Accept connections until `stop`, one thread each, at most
/// `limits.max_connections` at once (`max_unprivileged` of them for peers
/// that may only read the status, so they can never lock root out). At
/// stop, requests still arriving are cut off at once, commands being
/// answered get `stop_grace` to finish, then every socket is shut down and
/// every thread joined: no client, however slow, keeps the daemon (and so
/// the array) alive after the unmount.
fn accept_loop(
    listener: &UnixListener,
    stop: &AtomicBool,
    own_uid: u32,
    limits: Limits,
    handler: &Arc<Handler>,
) {
    let mut conns: Vec<Conn> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                conns.retain(|c| !c.thread.is_finished());
                if let Some(c) = admit(stream, own_uid, limits, &conns, handler) {
                    conns.push(c);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(TICK),
            Err(e) => {
                warn!(error = %e, "accept on the control socket failed");
                std::thread::sleep(TICK);
            }
        }
        conns.retain(|c| !c.thread.is_finished());
    }
    close_all(conns, limits.stop_grace);
}

/// Check the peer and the limits, then start serving `stream` (or refuse
/// it with an error line).
fn admit(
    stream: UnixStream,
    own_uid: u32,
    limits: Limits,
    conns: &[Conn],
    handler: &Arc<Handler>,
) -> Option<Conn> {
    let cred = match rustix::net::sockopt::socket_peercred(&stream) {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "SO_PEERCRED on a control connection failed; dropped");
            return None;
        }
    };
    let uid = cred.uid.as_raw();
    let peer = Peer {
        uid,
        pid: cred.pid.as_raw_nonzero().get(),
        privileged: uid == 0 || uid == own_uid,
    };
    let unprivileged = conns.iter().filter(|c| !c.privileged).count();
    if limits.full(peer.privileged, conns.len(), unprivileged) {
        warn!(
            uid,
            pid = peer.pid,
            open = conns.len(),
            "too many control connections; one refused"
        );
        refuse(
            &stream,
            &format!(
                "the daemon is serving {} control connections already; try again shortly",
                conns.len()
            ),
        );
        return None;
    }
    let socket = match stream.try_clone() {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "cannot keep a handle on a control connection; dropped");
            return None;
        }
    };
    let h = Arc::clone(handler);
    match std::thread::Builder::new()
        .name("raidfs-control-conn".into())
        .spawn(move || h(stream, peer))
    {
        Ok(thread) => Some(Conn {
            thread,
            socket,
            privileged: peer.privileged,
        }),
        Err(e) => {
            warn!(error = %e, "cannot start a control connection thread");
            None
        }
    }
}

/// Tell a client it is refused, without ever blocking the accept loop.
fn refuse(stream: &UnixStream, message: &str) {
    let r = Response::Error {
        message: message.to_string(),
    };
    if let Ok(mut line) = serde_json::to_vec(&r) {
        line.push(b'\n');
        // A fresh socket's buffer is empty, so this goes out whole; if
        // not, the client sees the connection closed.
        let _ = stream.set_nonblocking(true);
        let _ = (&mut &*stream).write_all(&line);
    }
}

/// End every connection at stop (see [`accept_loop`]).
fn close_all(conns: Vec<Conn>, grace: Duration) {
    // A request not read yet is cut off now: reading it returns end of
    // file. Answers being written are not affected.
    for c in &conns {
        let _ = c.socket.shutdown(Shutdown::Read);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && conns.iter().any(|c| !c.thread.is_finished()) {
        std::thread::sleep(TICK.min(grace));
    }
    for c in &conns {
        if !c.thread.is_finished() {
            let _ = c.socket.shutdown(Shutdown::Both);
        }
    }
    for c in conns {
        let _ = c.thread.join();
    }
}

/// How reading a request line ended.
#[derive(Debug, PartialEq, Eq)]
enum RequestLine {
    /// The line, without its newline.
    Line(Vec<u8>),
    /// More than the allowed bytes without a newline.
    TooLong,
    /// No whole line before the deadline.
    TimedOut,
    /// The client closed (or the daemon is stopping) before a whole line.
    Closed,
}

/// Read one request line of at most `max` bytes, all of it within
/// `deadline` (a per-read timeout would let a client sending a byte now
/// and then hold the connection for ever).
fn read_request(
    stream: &UnixStream,
    max: usize,
    deadline: Duration,
) -> std::io::Result<RequestLine> {
    let end = Instant::now() + deadline;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(RequestLine::TimedOut);
        }
        stream.set_read_timeout(Some(left))?;
        // Never more than one byte past the limit.
        let want = chunk.len().min(max + 1 - buf.len());
        let n = match (&mut &*stream).read(&mut chunk[..want]) {
            Ok(0) => return Ok(RequestLine::Closed),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if super::timed_out(&e) => return Ok(RequestLine::TimedOut),
            Err(e) => return Err(e),
        };
        let new = &chunk[..n];
        if let Some(i) = new.iter().position(|&b| b == b'\n') {
            buf.extend_from_slice(&new[..i]);
            return Ok(if buf.len() > max {
                RequestLine::TooLong
            } else {
                RequestLine::Line(buf)
            });
        }
        buf.extend_from_slice(new);
        if buf.len() > max {
            return Ok(RequestLine::TooLong);
        }
    }
}

fn send(stream: &mut UnixStream, r: &Response) -> Result<()> {
    let mut line = serde_json::to_vec(r).context("encoding a response")?;
    line.push(b'\n');
    stream.write_all(&line).context("writing to the client")
}

fn permission_denied(uid: u32) -> Response {
    Response::Error {
        message: format!(
            "permission denied: uid {uid} may only read the status; changing the array needs root"
        ),
    }
}

fn serve_connection(shared: &Arc<Shared>, mut out: UnixStream, peer: Peer) -> Result<()> {
    out.set_nonblocking(false)
        .context("making a control connection blocking")?;
    out.set_write_timeout(Some(WRITE_TIMEOUT))
        .context("setting the write timeout of a control connection")?;
    // A peer that may only read the status gets no more than a status
    // request takes; anything longer is a command it may not run.
    let max = if peer.privileged {
        MAX_REQUEST
    } else {
        MAX_UNPRIVILEGED_REQUEST
    };
    let line = match read_request(&out, max, REQUEST_DEADLINE).context("reading the request")? {
        RequestLine::Line(l) => l,
        RequestLine::Closed => return Ok(()),
        RequestLine::TimedOut => {
            return send(
                &mut out,
                &Response::Error {
                    message: format!(
                        "no complete request within {} s",
                        REQUEST_DEADLINE.as_secs()
                    ),
                },
            );
        }
        RequestLine::TooLong if !peer.privileged => {
            warn!(
                uid = peer.uid,
                pid = peer.pid,
                "refused an over-long request from an unprivileged peer"
            );
            return send(&mut out, &permission_denied(peer.uid));
        }
        RequestLine::TooLong => {
            return send(
                &mut out,
                &Response::Error {
                    message: format!("request longer than {max} bytes"),
                },
            );
        }
    };
    let req: Request = match serde_json::from_slice(line.trim_ascii_end()) {
        Ok(r) => r,
        Err(e) => {
            return send(
                &mut out,
                &Response::Error {
                    message: format!("malformed request: {e}"),
                },
            );
        }
    };
    let uid = peer.uid;
    if req.mutates() && !peer.privileged {
        warn!(uid, pid = peer.pid, request = ?req, "refused a command from an unprivileged peer");
        return send(&mut out, &permission_denied(uid));
    }
    if req.mutates() {
        info!(uid, request = ?req, "control command");
    }
    match req {
        Request::Status => send(
            &mut out,
            &Response::Status {
                status: Box::new(live_status(shared)),
            },
        ),
        Request::Scrub {
            repair,
            throttle_bytes_per_sec,
        } => follow_scrub(shared, &mut out, repair, throttle_bytes_per_sec),
        Request::ScrubCancel => {
            let r = match lock(&shared.scrub).as_ref() {
                Some((job, h)) if !h.is_finished() => {
                    job.cancel.store(true, Ordering::SeqCst);
                    Response::Done {
                        message: "scrub cancelled; the next scrub resumes where it stopped".into(),
                    }
                }
                _ => Response::Error {
                    message: "no scrub is running".into(),
                },
            };
            send(&mut out, &r)
        }
        other => {
            let r = match super::ops::apply(&shared.array, &other) {
                Ok(message) => Response::Done { message },
                Err(e) => Response::Error {
                    message: format!("{e:#}"),
                },
            };
            send(&mut out, &r)
        }
    }
}

/// The status plus what only the daemon knows.
fn live_status(shared: &Shared) -> StatusJson {
    let scrub = lock(&shared.scrub).as_ref().and_then(|(job, h)| {
        (!h.is_finished()).then(|| {
            ScrubProgressJson::new(
                job.repair,
                job.done.load(Ordering::Relaxed),
                job.total.load(Ordering::Relaxed),
            )
        })
    });
    StatusJson::live(
        &shared.array.status(),
        LiveExtras {
            mountpoint: shared.record.mountpoint.display().to_string(),
            pid: shared.record.pid,
            scrub,
        },
    )
}

/// Start a scrub unless one runs, then stream its progress and result.
fn follow_scrub(
    shared: &Arc<Shared>,
    out: &mut UnixStream,
    repair: bool,
    throttle: u64,
) -> Result<()> {
    let job = {
        let mut g = lock(&shared.scrub);
        let running = g
            .as_ref()
            .filter(|(_, h)| !h.is_finished())
            .map(|(j, _)| Arc::clone(j));
        match running {
            Some(job) => {
                send(
                    out,
                    &Response::Note {
                        message: format!(
                            "a scrub{} is already running; following it",
                            if job.repair { " --repair" } else { "" }
                        ),
                    },
                )?;
                job
            }
            None => {
                if let Some((_, h)) = g.take() {
                    let _ = h.join();
                }
                let job = Arc::new(ScrubJob {
                    repair,
                    done: AtomicU64::new(0),
                    total: AtomicU64::new(0),
                    cancel: AtomicBool::new(false),
                    stop_all: Arc::clone(&shared.stop),
                    result: Mutex::new(None),
                });
                let j = Arc::clone(&job);
                let s = Arc::clone(shared);
                let h = std::thread::Builder::new()
                    .name("raidfs-scrub".into())
                    .spawn(move || run_scrub(&s, &j, throttle))
                    .context("starting the scrub thread")?;
                *g = Some((Arc::clone(&job), h));
                job
            }
        }
    };
    loop {
        if let Some(r) = lock(&job.result).clone() {
            let resp = match r {
                Ok(result) => Response::ScrubDone { result },
                Err(message) => Response::Error { message },
            };
            return send(out, &resp);
        }
        // A client gone (Ctrl-C) ends only this stream, not the scrub.
        // Progress goes on while the worker stops at unmount, so that the
        // client never waits longer than PROGRESS_EVERY for a line.
        send(
            out,
            &Response::Progress {
                done: job.done.load(Ordering::Relaxed),
                total: job.total.load(Ordering::Relaxed),
            },
        )?;
        std::thread::sleep(PROGRESS_EVERY);
    }
}

fn run_scrub(shared: &Shared, job: &ScrubJob, throttle: u64) {
    info!(repair = job.repair, throttle, "scrub started");
    let opts = ScrubOptions {
        repair: job.repair,
        throttle_bytes_per_sec: throttle,
        resume: true,
    };
    let r = shared.array.scrub(opts, job);
    let r = match r {
        Ok(rep) => {
            let res = ScrubResult {
                repair: job.repair,
                complete: rep.complete,
                files: rep.files,
                bytes: rep.bytes,
                mismatches: rep.mismatches,
                redundancy_mismatches: rep.redundancy_mismatches,
                repaired: rep.repaired,
                unrecoverable: rep.unrecoverable,
                finished_unix: now_unix(),
            };
            if res.found_problems() {
                warn!(
                    mismatches = res.mismatches,
                    redundancy_mismatches = res.redundancy_mismatches,
                    repaired = res.repaired,
                    unrecoverable = res.unrecoverable,
                    complete = res.complete,
                    "scrub found errors"
                );
            } else {
                info!(
                    bytes = res.bytes,
                    complete = res.complete,
                    "scrub finished clean"
                );
            }
            Ok(res)
        }
        Err(e) => {
            warn!(error = %e, "scrub failed");
            Err(format!("scrub failed: {e}"))
        }
    };
    *lock(&job.result) = Some(r);
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHORT: Limits = Limits {
        max_connections: 2,
        max_unprivileged: 1,
        stop_grace: Duration::from_millis(300),
    };

    /// An accept loop on a fresh socket, serving with `handler`.
    struct Loop {
        _dir: tempfile::TempDir,
        path: PathBuf,
        stop: Arc<AtomicBool>,
        thread: Option<JoinHandle<()>>,
    }

    impl Loop {
        fn start(limits: Limits, handler: Arc<Handler>) -> Loop {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("t.sock");
            let listener = UnixListener::bind(&path).unwrap();
            listener.set_nonblocking(true).unwrap();
            let stop = Arc::new(AtomicBool::new(false));
            let st = Arc::clone(&stop);
            let thread =
                std::thread::spawn(move || accept_loop(&listener, &st, u32::MAX, limits, &handler));
            Loop {
                _dir: dir,
                path,
                stop,
                thread: Some(thread),
            }
        }

        /// Stop the loop; how long that took.
        fn stop(&mut self) -> Duration {
            let t = Instant::now();
            self.stop.store(true, Ordering::SeqCst);
            self.thread.take().unwrap().join().unwrap();
            t.elapsed()
        }
    }

    /// Serve like the daemon: read a request (with `deadline`), answer it.
    fn echo(deadline: Duration) -> Arc<Handler> {
        Arc::new(move |mut s: UnixStream, _peer: Peer| {
            let r = match read_request(&s, 1024, deadline).unwrap() {
                RequestLine::Line(l) => Response::Done {
                    message: String::from_utf8_lossy(&l).into_owned(),
                },
                other => Response::Error {
                    message: format!("{other:?}"),
                },
            };
            let _ = send(&mut s, &r);
        })
    }

    fn answer(s: &UnixStream) -> Response {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(s), &mut line).unwrap();
        serde_json::from_str(line.trim_end()).unwrap()
    }

    /// Send one byte every 100 ms until the socket fails.
    fn trickle(mut s: UnixStream) -> JoinHandle<()> {
        std::thread::spawn(move || {
            while s.write_all(b" ").is_ok() {
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    }

    #[test]
    fn a_request_trickling_in_byte_by_byte_times_out_as_a_whole() {
        let (a, b) = UnixStream::pair().unwrap();
        let t = trickle(b);
        let start = Instant::now();
        let r = read_request(&a, 1024, Duration::from_millis(500)).unwrap();
        assert_eq!(r, RequestLine::TimedOut);
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        drop(a);
        t.join().unwrap();
    }

    #[test]
    fn a_request_is_capped_in_length() {
        let (a, mut b) = UnixStream::pair().unwrap();
        b.write_all(&[b'x'; 1024]).unwrap();
        b.write_all(b"\n").unwrap();
        let r = read_request(&a, 1024, Duration::from_secs(5)).unwrap();
        assert_eq!(r, RequestLine::Line(vec![b'x'; 1024]));

        let (a, mut b) = UnixStream::pair().unwrap();
        let w = std::thread::spawn(move || {
            let _ = b.write_all(&[b'x'; 100_000]);
        });
        let r = read_request(&a, 1024, Duration::from_secs(5)).unwrap();
        assert_eq!(r, RequestLine::TooLong);
        drop(a);
        w.join().unwrap();
    }

    #[test]
    fn the_longest_legitimate_request_fits() {
        let req = Request::Replace {
            slot: usize::MAX,
            path: PathBuf::from(format!("/{}", "\u{1}".repeat(4095))),
            throttle_bytes_per_sec: u64::MAX,
            full: true,
        };
        let line = serde_json::to_vec(&req).unwrap();
        assert!(line.len() <= MAX_REQUEST, "{} bytes", line.len());
        let status = serde_json::to_vec(&Request::Status).unwrap();
        assert!(status.len() <= MAX_UNPRIVILEGED_REQUEST);
    }

    #[test]
    fn stop_cuts_off_a_client_still_sending_its_request() {
        // The handler would wait a minute for the request.
        let mut l = Loop::start(SHORT, echo(Duration::from_secs(60)));
        let c = UnixStream::connect(&l.path).unwrap();
        let t = trickle(c.try_clone().unwrap());
        std::thread::sleep(Duration::from_millis(300));
        let took = l.stop();
        assert!(took < Duration::from_secs(3), "stop took {took:?}");
        drop(c);
        t.join().unwrap();
    }

    #[test]
    fn stop_shuts_down_a_client_that_does_not_read_its_answer() {
        // A handler streaming for ever, like a scrub followed by a client
        // that stopped reading.
        let h: Arc<Handler> = Arc::new(|mut s: UnixStream, _| {
            let line = vec![b'x'; 4096];
            while s.write_all(&line).is_ok() {}
        });
        let mut l = Loop::start(SHORT, h);
        let c = UnixStream::connect(&l.path).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let took = l.stop();
        assert!(took < Duration::from_secs(3), "stop took {took:?}");
        drop(c);
    }

    #[test]
    fn stop_lets_an_answer_being_written_finish() {
        let h: Arc<Handler> = Arc::new(|mut s: UnixStream, _| {
            std::thread::sleep(Duration::from_millis(100));
            let _ = send(
                &mut s,
                &Response::Done {
                    message: "finished".into(),
                },
            );
        });
        let mut l = Loop::start(SHORT, h);
        let c = UnixStream::connect(&l.path).unwrap();
        std::thread::sleep(Duration::from_millis(150));
        l.stop();
        assert_eq!(
            answer(&c),
            Response::Done {
                message: "finished".into()
            }
        );
    }

    #[test]
    fn connections_beyond_the_limit_are_refused_with_an_answer() {
        let mut l = Loop::start(SHORT, echo(Duration::from_secs(60)));
        let held: Vec<UnixStream> = (0..SHORT.max_connections)
            .map(|_| UnixStream::connect(&l.path).unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let mut extra = UnixStream::connect(&l.path).unwrap();
        let _ = extra.write_all(b"{\"op\":\"status\"}\n");
        match answer(&extra) {
            Response::Error { message } => assert!(message.contains("try again"), "{message}"),
            other => panic!("{other:?}"),
        }
        // A connection that ends frees its place.
        drop(held);
        std::thread::sleep(Duration::from_millis(300));
        let mut again = UnixStream::connect(&l.path).unwrap();
        again.write_all(b"hello\n").unwrap();
        assert_eq!(
            answer(&again),
            Response::Done {
                message: "hello".into()
            }
        );
        l.stop();
    }

    #[test]
    fn unprivileged_peers_get_only_part_of_the_connections() {
        assert!(!SHORT.full(false, 0, 0));
        assert!(SHORT.full(false, 1, 1));
        assert!(!SHORT.full(true, 1, 1));
        assert!(SHORT.full(true, 2, 0));
    }
}
