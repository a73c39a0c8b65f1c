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

/// Create the run directory (mode 0755) if needed.
pub fn ensure_run_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating the run directory {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod 0755 {}", dir.display()))
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
        match UnixStream::connect(&self.socket) {
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
