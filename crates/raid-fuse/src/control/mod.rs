//! The control socket of a mounted array: how `raidfs status`, `scrub`,
//! `replace` and the other admin commands reach the mount daemon that owns
//! the live [`raid_array::Array`].
//!
//! The daemon listens on `$RAIDFS_RUN_DIR/<array-uuid>.sock` (default run
//! directory `/run/raidfs`, made mode 0755 when this code creates it; the
//! socket 0600) and writes a small
//! record `<array-uuid>.json` beside it naming the array, its mount point,
//! the daemon's PID and the socket, so the CLI finds a live array by name,
//! UUID or mount point. Both go at unmount; a record whose daemon died
//! (kill -9, power loss on a tmpfs-less system) is recognised as stale and
//! removed by the next CLI that reads it.
//!
//! The protocol is JSON lines ([`protocol`]): one request line from the
//! client, then one or more response lines from the daemon.
//!
//! Permissions: the socket's mode keeps other users out; in addition the
//! daemon checks the peer's uid with `SO_PEERCRED` and lets only root (or
//! its own uid) run a command that changes the array, so loosening the
//! socket's mode never grants more than `status`. The server bounds what
//! any client can hold (request size and deadline, connections at once,
//! closing them all at unmount) and the client bounds how long it waits
//! for a daemon, so a stuck peer on either side never hangs the other.

pub mod client;
pub mod ops;
pub mod protocol;
pub mod record;
pub mod server;

use std::path::PathBuf;

/// Environment variable overriding the run directory (tests, non-root
/// setups).
pub const RUN_DIR_ENV: &str = "RAIDFS_RUN_DIR";

/// Where sockets and records live.
pub fn run_dir() -> PathBuf {
    std::env::var_os(RUN_DIR_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/raidfs"))
}

/// The socket of the array with this UUID.
pub fn socket_path(uuid: &str) -> PathBuf {
    run_dir().join(format!("{uuid}.sock"))
}

/// The record of the array with this UUID.
pub fn record_path(uuid: &str) -> PathBuf {
    run_dir().join(format!("{uuid}.json"))
}

/// Whether an I/O error on a control socket is a socket timeout running
/// out (how a read or write timeout shows: `EAGAIN` or `ETIMEDOUT`).
pub(crate) fn timed_out(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}
