//! Running the mount in the background the way `mount(8)` expects: the
//! command the user typed returns only once the filesystem is mounted, and
//! fails with the daemon's own error message if it could not be.
//!
//! The foreground process re-executes itself as the daemon (a new session,
//! no controlling terminal, stdin from /dev/null) with
//! [`READY_ENV`] set and its stdout connected to a pipe. The daemon writes
//! one line on that pipe — `ready` after the kernel accepted the mount, or
//! `error: <message>` — and the foreground process exits 0 or 32 (mount(8)'s
//! "mount failure") accordingly;
//! `warning: <message>` lines before it are printed on its stderr.
//! A daemon that dies before saying anything is reported too.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// Set in the daemon's environment: report readiness on stdout.
pub const READY_ENV: &str = "RAIDFS_DAEMON_READY";

/// Start the daemon (this same program with `--foreground` and `args`) and
/// wait for its verdict.
pub fn spawn_and_wait(args: &[OsString], log_file: Option<&std::path::Path>) -> Result<()> {
    let exe = std::env::current_exe()
        .context("cannot find this program's own path to start the daemon")?;
    let stderr = match log_file {
        Some(p) => Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("cannot open log file {}", p.display()))?,
        ),
        None => Stdio::null(),
    };
    let mut child = Command::new(exe)
        .arg("--foreground")
        .args(args)
        .env(READY_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .context("cannot start the mount daemon")?;
    let out = child.stdout.take().context("daemon stdout pipe missing")?;
    let mut out = BufReader::new(out);
    loop {
        let mut line = String::new();
        if out
            .read_line(&mut line)
            .context("reading the daemon's status")?
            == 0
        {
            break;
        }
        let line = line.trim_end();
        if line == "ready" {
            return Ok(());
        }
        if let Some(msg) = line.strip_prefix("error: ") {
            let _ = child.wait();
            bail!("{msg}");
        }
        if let Some(msg) = line.strip_prefix("warning: ") {
            eprintln!("mount.raidfs: warning: {msg}");
        }
    }
    let status = child.wait().context("waiting for the mount daemon")?;
    bail!("the mount daemon exited ({status}) before the filesystem was mounted")
}

/// In the daemon: detach from the terminal's session.
pub fn detach() {
    // Failing only means we already lead a session, which is fine.
    let _ = rustix::process::setsid();
}

/// Tell whoever started the mount something it should know although the
/// mount goes ahead (a degraded array): logged (stderr in the foreground),
/// and when daemonized also passed to the foreground process, which prints
/// it.
pub fn warn(msg: &str) {
    // In the foreground the log is stderr already.
    tracing::warn!("{msg}");
    if std::env::var_os(READY_ENV).is_none() {
        return;
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "warning: {}", msg.replace('\n', " "));
    let _ = out.flush();
}

/// In the daemon: tell the waiting foreground process the outcome.
pub fn report(outcome: &Result<()>) {
    if std::env::var_os(READY_ENV).is_none() {
        return;
    }
    let mut out = std::io::stdout().lock();
    let _ = match outcome {
        Ok(()) => writeln!(out, "ready"),
        Err(e) => writeln!(out, "error: {}", format!("{e:#}").replace('\n', " ")),
    };
    let _ = out.flush();
}
