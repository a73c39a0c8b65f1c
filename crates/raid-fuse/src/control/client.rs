//! The CLI side of the control socket: finding a live array by name, UUID,
//! mount point or member directory, and talking to its daemon.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::protocol::{Request, Response};
use super::record::{self, Record};

/// Every live array.
pub fn live_arrays() -> Vec<Record> {
    record::live(&super::run_dir())
}

/// The live array TARGET names: an array name, a UUID, a mount point, or a
/// member directory (its superblock names the array). `None` when the
/// array it names is not mounted (or TARGET names nothing live).
pub fn find(target: &str) -> Result<Option<Record>> {
    let live = live_arrays();
    if target.contains('/') {
        let p = Path::new(target);
        let Ok(canon) = p.canonicalize() else {
            return Ok(None);
        };
        if let Some(r) = live.iter().find(|r| r.mountpoint == canon) {
            return Ok(Some(r.clone()));
        }
        // A member directory: its superblock says which array.
        if let Ok(sb) = raid_array::assemble::read_superblock(&canon) {
            let uuid = raid_array::format::superblock::uuid_string(&sb.array_uuid);
            return Ok(live.into_iter().find(|r| r.uuid == uuid));
        }
        return Ok(None);
    }
    let want = target.to_ascii_lowercase().replace('-', "");
    if let Some(r) = live
        .iter()
        .find(|r| r.uuid.to_ascii_lowercase().replace('-', "") == want)
    {
        return Ok(Some(r.clone()));
    }
    let named: Vec<&Record> = live.iter().filter(|r| r.name == target).collect();
    match named.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some((*one).clone())),
        many => bail!(
            "{} mounted arrays are named {target:?} ({}); name one by UUID or mount point",
            many.len(),
            many.iter()
                .map(|r| format!("{} on {}", r.uuid, r.mountpoint.display()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// `write_all` without SIGPIPE: the `raidfs` command runs with SIGPIPE's
/// default action (so that `raidfs … | head` ends quietly), and a daemon
/// hanging up must be an error, not the end of the command.
fn send_all(stream: &UnixStream, mut buf: &[u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        match rustix::net::send(stream, buf, rustix::net::SendFlags::NOSIGNAL) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// How long a command tries to get through to a daemon (connecting and
/// sending the request).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a status waits for its answer: the daemon has it in memory.
const STATUS_TIMEOUT: Duration = Duration::from_secs(10);
/// How long any other command waits for each line of the answer. A member
/// command writes every member's superblock before it answers; a followed
/// scrub sends a progress line every quarter second.
const LINE_TIMEOUT: Duration = Duration::from_secs(60);
/// A longer answer line is not from a daemon.
const MAX_LINE: usize = 64 << 20;

/// Connect to the daemon of `rec`, waiting at most [`CONNECT_TIMEOUT`]
/// while it does not accept.
fn connect(rec: &Record) -> Result<UnixStream> {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    loop {
        match record::connect_nonblocking(&rec.socket) {
            Ok(Some(s)) => {
                s.set_nonblocking(false)
                    .with_context(|| format!("connecting to {}", rec.socket.display()))?;
                return Ok(s);
            }
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(None) => bail!(
                "the daemon of array {:?} does not answer: it accepts no connection on {} \
                 (waited {} s)",
                rec.name,
                rec.socket.display(),
                CONNECT_TIMEOUT.as_secs()
            ),
            Err(e) => {
                let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
                    " (the control socket is for root: run this command with sudo)"
                } else {
                    ""
                };
                return Err(anyhow::Error::new(e).context(format!(
                    "cannot reach the daemon of array {:?} at {}{hint}",
                    rec.name,
                    rec.socket.display()
                )));
            }
        }
    }
}

/// An open conversation with a daemon.
pub struct Connection {
    reader: BufReader<UnixStream>,
    socket: PathBuf,
    name: String,
    /// How long to wait for each line.
    timeout: Duration,
}

impl Connection {
    /// Connect and send `req`.
    pub fn open(rec: &Record, req: &Request) -> Result<Connection> {
        let stream = connect(rec)?;
        stream
            .set_write_timeout(Some(CONNECT_TIMEOUT))
            .with_context(|| format!("setting a timeout on {}", rec.socket.display()))?;
        let mut line = serde_json::to_vec(req).context("encoding the request")?;
        line.push(b'\n');
        let sent = send_all(&stream, &line);
        let mut c = Connection {
            reader: BufReader::new(stream),
            socket: rec.socket.clone(),
            name: rec.name.clone(),
            timeout: if matches!(req, Request::Status) {
                STATUS_TIMEOUT
            } else {
                LINE_TIMEOUT
            },
        };
        if let Err(e) = sent {
            if super::timed_out(&e) {
                bail!(
                    "the daemon of array {:?} does not answer: it takes no request on {} \
                     (waited {} s)",
                    rec.name,
                    rec.socket.display(),
                    CONNECT_TIMEOUT.as_secs()
                );
            }
            // A daemon that refuses the connection (too many) says why
            // before it hangs up.
            if let Ok(Response::Error { message }) = c.receive() {
                bail!("{message}");
            }
            return Err(e).with_context(|| format!("sending to {}", rec.socket.display()));
        }
        Ok(c)
    }

    /// The next response line, waiting at most the connection's timeout
    /// for the whole line; an error if the daemon hung up first.
    pub fn receive(&mut self) -> Result<Response> {
        let deadline = Instant::now() + self.timeout;
        let mut line = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!(
                    "the daemon of array {:?} does not answer: nothing from {} in {} s",
                    self.name,
                    self.socket.display(),
                    self.timeout.as_secs()
                );
            }
            self.reader
                .get_ref()
                .set_read_timeout(Some(left))
                .with_context(|| format!("setting a timeout on {}", self.socket.display()))?;
            let buf = match self.reader.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                // The loop reports the deadline.
                Err(e) if super::timed_out(&e) => continue,
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("reading from {}", self.socket.display()));
                }
            };
            if buf.is_empty() {
                if line.is_empty() {
                    bail!(
                        "the daemon closed {} without an answer (was the array unmounted?)",
                        self.socket.display()
                    );
                }
                break;
            }
            if let Some(i) = buf.iter().position(|&b| b == b'\n') {
                line.extend_from_slice(&buf[..i]);
                self.reader.consume(i + 1);
                break;
            }
            let n = buf.len();
            line.extend_from_slice(buf);
            self.reader.consume(n);
            if line.len() > MAX_LINE {
                bail!(
                    "the daemon sent more than {MAX_LINE} bytes on one line on {}",
                    self.socket.display()
                );
            }
        }
        let text = String::from_utf8_lossy(&line);
        serde_json::from_str(text.trim_end())
            .with_context(|| format!("malformed answer from the daemon: {}", text.trim_end()))
    }
}

/// Send `req` and return the final answer; an `Error` answer becomes an
/// error.
pub fn call(rec: &Record, req: &Request) -> Result<Response> {
    let mut c = Connection::open(rec, req)?;
    loop {
        let r = c.receive()?;
        match r {
            Response::Error { message } => bail!("{message}"),
            r if r.is_final() => return Ok(r),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_daemon_that_sends_no_whole_line_is_given_up_on() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || {
            // A byte now and then, never a newline.
            while b.write_all(b" ").is_ok() {
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let mut c = Connection {
            reader: BufReader::new(a),
            socket: "/run/raidfs/x.sock".into(),
            name: "x".into(),
            timeout: Duration::from_millis(500),
        };
        let start = Instant::now();
        let e = c.receive().unwrap_err();
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
        assert!(format!("{e:#}").contains("does not answer"), "{e:#}");
        drop(c);
        t.join().unwrap();
    }

    #[test]
    fn answers_are_read_line_by_line() {
        let (a, mut b) = UnixStream::pair().unwrap();
        b.write_all(b"{\"kind\":\"progress\",\"done\":1,\"total\":2}\n{\"kind\":\"done\",")
            .unwrap();
        b.write_all(b"\"message\":\"ok\"}\n").unwrap();
        drop(b);
        let mut c = Connection {
            reader: BufReader::new(a),
            socket: "/run/raidfs/x.sock".into(),
            name: "x".into(),
            timeout: Duration::from_secs(5),
        };
        assert_eq!(
            c.receive().unwrap(),
            Response::Progress { done: 1, total: 2 }
        );
        assert_eq!(
            c.receive().unwrap(),
            Response::Done {
                message: "ok".into()
            }
        );
        assert!(format!("{:#}", c.receive().unwrap_err()).contains("without an answer"));
    }

    #[test]
    fn a_daemon_that_accepts_nothing_is_given_up_on() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("x.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        // Fill its queue of connections not yet accepted.
        let mut held = Vec::new();
        while let Some(s) = record::connect_nonblocking(&sock).unwrap() {
            held.push(s);
            assert!(held.len() < 10_000, "the queue never fills");
        }
        let rec = Record {
            name: "x".into(),
            uuid: "u".into(),
            mountpoint: "/mnt".into(),
            pid: std::process::id(),
            socket: sock,
        };
        assert!(rec.is_live(), "a full queue is a live daemon");
        let start = Instant::now();
        let e = Connection::open(&rec, &Request::Status).err().unwrap();
        assert!(start.elapsed() < CONNECT_TIMEOUT + Duration::from_secs(5));
        assert!(format!("{e:#}").contains("does not answer"), "{e:#}");
    }
}
