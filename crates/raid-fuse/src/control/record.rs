//! The record `<array-uuid>.json` a mount daemon leaves beside its socket,
//! and how the CLI tells a live one from one left by a dead daemon.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// Where a live array is served.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub name: String,
    pub uuid: String,
    pub mountpoint: PathBuf,
    pub pid: u32,
    pub socket: PathBuf,
}

/// Create the run directory (mode 0755) if needed. A directory that is
/// already there keeps its mode: `RAIDFS_RUN_DIR=/tmp` must not take the
/// sticky bit and world-write off /tmp.
pub fn ensure_run_dir(dir: &Path) -> Result<()> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    match std::fs::create_dir(dir) {
        // Exactly 0755 whatever the umask: `raidfs status` of any user
        // must find the records.
        Ok(()) => std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("chmod 0755 {}", dir.display())),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating the run directory {}", dir.display())),
    }
}

/// Connect to a daemon's socket without ever blocking: `Ok(None)` when its
/// queue of connections not yet accepted is full (a daemon that does not
/// accept), where a blocking connect would wait for ever. The stream, when
/// there is one, is non-blocking.
pub fn connect_nonblocking(socket: &Path) -> std::io::Result<Option<UnixStream>> {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )?;
    let addr = SocketAddrUnix::new(socket)?;
    match rustix::net::connect(&fd, &addr) {
        Ok(()) => Ok(Some(UnixStream::from(fd))),
        Err(rustix::io::Errno::AGAIN) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

impl Record {
    /// Write it atomically (temporary file, then rename), mode 0644 so any
    /// user's `raidfs status` can find the array.
    pub fn write(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("json.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        let body = serde_json::to_vec_pretty(self).context("encoding the array record")?;
        f.write_all(&body)
            .and_then(|()| f.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
    }

    /// Whether the daemon that wrote it still runs and listens. A socket we
    /// may not connect to (permissions) counts as live: only a refused or
    /// missing socket, or a dead PID, proves the record stale.
    pub fn is_live(&self) -> bool {
        let Some(pid) = rustix::process::Pid::from_raw(self.pid as i32) else {
            return false;
        };
        match rustix::process::test_kill_process(pid) {
            Ok(()) | Err(rustix::io::Errno::PERM) => {}
            Err(_) => return false,
        }
        // A full queue (a daemon that stopped accepting) is someone
        // listening too; a blocking connect would hang on it.
        match connect_nonblocking(&self.socket) {
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::PermissionDenied,
        }
    }

    /// Remove the record and its socket (best effort).
    pub fn remove(&self, record_path: &Path) {
        let _ = std::fs::remove_file(&self.socket);
        let _ = std::fs::remove_file(record_path);
    }
}

/// Every live array's record in `dir`, by name; stale records are removed
/// (when permissions allow) and skipped.
pub fn live(dir: &Path) -> Vec<Record> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let path = e.path();
        if path.extension().and_then(|x| x.to_str()) != Some("json") {
            continue;
        }
        let Ok(text) = std::fs::read(&path) else {
            continue;
        };
        let Ok(rec) = serde_json::from_slice::<Record>(&text) else {
            tracing::debug!(path = %path.display(), "not an array record; skipped");
            continue;
        };
        if rec.is_live() {
            out.push(rec);
        } else {
            tracing::info!(name = %rec.name, pid = rec.pid, "removing the stale record of a dead mount daemon");
            rec.remove(&path);
        }
    }
    out.sort_by(|a, b| (&a.name, &a.uuid).cmp(&(&b.name, &b.uuid)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_directory_is_chmod_ed_only_when_created_here() {
        let dir = tempfile::tempdir().unwrap();
        let tmp_like = dir.path().join("tmp");
        std::fs::create_dir(&tmp_like).unwrap();
        std::fs::set_permissions(&tmp_like, std::fs::Permissions::from_mode(0o1777)).unwrap();
        ensure_run_dir(&tmp_like).unwrap();
        let mode = std::fs::metadata(&tmp_like).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o1777, "an existing directory keeps its mode");

        let new = dir.path().join("a/b/raidfs");
        ensure_run_dir(&new).unwrap();
        let mode = std::fs::metadata(&new).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o755);
    }

    #[test]
    fn a_record_of_a_dead_daemon_is_stale_and_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("u.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let live_rec = Record {
            name: "a".into(),
            uuid: "u".into(),
            mountpoint: "/mnt".into(),
            pid: std::process::id(),
            socket: sock.clone(),
        };
        live_rec.write(&dir.path().join("u.json")).unwrap();
        let dead = Record {
            name: "b".into(),
            uuid: "v".into(),
            mountpoint: "/mnt2".into(),
            // PIDs never reach this value (pid_max is at most 2^22).
            pid: 0x7fff_fff0,
            socket: dir.path().join("v.sock"),
        };
        dead.write(&dir.path().join("v.json")).unwrap();
        assert_eq!(live(dir.path()), vec![live_rec]);
        assert!(!dir.path().join("v.json").exists());
    }
}
