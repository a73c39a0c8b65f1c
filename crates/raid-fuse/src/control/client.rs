//! The CLI side of the control socket: finding a live array by name, UUID,
//! mount point or member directory, and talking to its daemon.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

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

/// An open conversation with a daemon.
pub struct Connection {
    reader: BufReader<UnixStream>,
    socket: PathBuf,
}

impl Connection {
    /// Connect and send `req`.
    pub fn open(rec: &Record, req: &Request) -> Result<Connection> {
        let stream = UnixStream::connect(&rec.socket).map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
                " (the control socket is for root: run this command with sudo)"
            } else {
                ""
            };
            anyhow::Error::new(e).context(format!(
                "cannot reach the daemon of array {:?} at {}{hint}",
                rec.name,
                rec.socket.display()
            ))
        })?;
        let mut line = serde_json::to_vec(req).context("encoding the request")?;
        line.push(b'\n');
        send_all(&stream, &line).with_context(|| format!("sending to {}", rec.socket.display()))?;
        Ok(Connection {
            reader: BufReader::new(stream),
            socket: rec.socket.clone(),
        })
    }

    /// The next response line; an error if the daemon hung up first.
    pub fn receive(&mut self) -> Result<Response> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .with_context(|| format!("reading from {}", self.socket.display()))?;
        if n == 0 {
            bail!(
                "the daemon closed {} without an answer (was the array unmounted?)",
                self.socket.display()
            );
        }
        serde_json::from_str(line.trim_end())
            .with_context(|| format!("malformed answer from the daemon: {}", line.trim_end()))
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
