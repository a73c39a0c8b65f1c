//! The daemon side of the control socket: a listener thread started once
//! the mount succeeded, one short-lived thread per connection, and at most
//! one scrub worker. [`Server::stop`] ends all of them (a running scrub
//! saves its checkpoint) before the array is closed, so nothing here holds
//! the array when the mount daemon closes it.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
/// A client that sends no request line this long is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
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
        let handle = std::thread::Builder::new()
            .name("raidfs-control".into())
            .spawn(move || accept_loop(&s, &listener))
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

fn accept_loop(shared: &Arc<Shared>, listener: &UnixListener) {
    let mut conns: Vec<JoinHandle<()>> = Vec::new();
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let s = Arc::clone(shared);
                match std::thread::Builder::new()
                    .name("raidfs-control-conn".into())
                    .spawn(move || {
                        if let Err(e) = serve_connection(&s, stream) {
                            tracing::debug!(error = %format!("{e:#}"), "control connection ended");
                        }
                    }) {
                    Ok(h) => conns.push(h),
                    Err(e) => warn!(error = %e, "cannot start a control connection thread"),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(TICK),
            Err(e) => {
                warn!(error = %e, "accept on the control socket failed");
                std::thread::sleep(TICK);
            }
        }
        conns.retain(|h| !h.is_finished());
    }
    for h in conns {
        let _ = h.join();
    }
}

fn send(stream: &mut UnixStream, r: &Response) -> Result<()> {
    let mut line = serde_json::to_vec(r).context("encoding a response")?;
    line.push(b'\n');
    stream.write_all(&line).context("writing to the client")
}

fn serve_connection(shared: &Arc<Shared>, stream: UnixStream) -> Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let peer = rustix::net::sockopt::socket_peercred(&stream).context("SO_PEERCRED")?;
    let mut out = stream.try_clone()?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .context("reading the request")?;
    let req: Request = match serde_json::from_str(line.trim_end()) {
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
    let uid = peer.uid.as_raw();
    if req.mutates() && uid != 0 && uid != shared.own_uid {
        warn!(uid, pid = peer.pid.as_raw_nonzero().get(), request = ?req, "refused a command from an unprivileged peer");
        return send(
            &mut out,
            &Response::Error {
                message: format!(
                    "permission denied: uid {uid} may only read the status; \
                     changing the array needs root"
                ),
            },
        );
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
        if shared.stop.load(Ordering::SeqCst) && lock(&job.result).is_none() {
            // The worker is stopping; its result follows shortly.
            std::thread::sleep(TICK);
            continue;
        }
        // A client gone (Ctrl-C) ends only this stream, not the scrub.
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
