//! What travels over the control socket: one JSON [`Request`] line from the
//! client, then [`Response`] lines from the daemon until the final one
//! (anything but [`Response::Progress`]).
//!
//! Paths in requests are absolute (the client canonicalizes them): the
//! daemon's working directory is not the admin's.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::cli::status::StatusJson;

/// A command for the daemon.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// The live status (allowed for every peer that can connect).
    Status,
    /// Start a scrub (or follow the one already running) and stream its
    /// progress until it ends.
    Scrub {
        repair: bool,
        throttle_bytes_per_sec: u64,
    },
    /// Stop the running scrub; its checkpoint is kept so the next one
    /// resumes.
    ScrubCancel,
    /// Rebuild `slot` onto the empty directory `path` in the background.
    Replace {
        slot: usize,
        path: PathBuf,
        throttle_bytes_per_sec: u64,
        /// Rebuild a member coming back whole instead of re-adding it.
        #[serde(default)]
        full: bool,
    },
    AddSpare {
        path: PathBuf,
    },
    RemoveSpare {
        path: PathBuf,
    },
    /// Mark an active member failed (a drill, like `mdadm --fail`).
    Fail {
        slot: usize,
    },
    /// Detach a failed or missing member.
    Remove {
        slot: usize,
    },
}

impl Request {
    /// Whether the request changes the array (and so needs root or the
    /// daemon's own uid).
    pub fn mutates(&self) -> bool {
        !matches!(self, Request::Status)
    }
}

/// What a scrub found, as sent to the client.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScrubResult {
    pub repair: bool,
    /// False when cancelled or stopped by the unmount (the next scrub
    /// resumes where it stopped).
    pub complete: bool,
    pub files: u64,
    pub bytes: u64,
    /// Blocks whose checksum failed or could not be read.
    pub mismatches: u64,
    /// Parity or mirror chunks that disagreed with their data.
    pub redundancy_mismatches: u64,
    pub repaired: u64,
    pub unrecoverable: u64,
    /// When it ended (seconds since the epoch).
    pub finished_unix: u64,
}

impl ScrubResult {
    /// Whether anything wrong was found.
    pub fn found_problems(&self) -> bool {
        self.mismatches + self.redundancy_mismatches + self.unrecoverable > 0
    }
}

/// One line from the daemon.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Response {
    Status {
        status: Box<StatusJson>,
    },
    /// `done` of `total` bytes of the running scrub.
    Progress {
        done: u64,
        total: u64,
    },
    /// Something worth telling the admin before the result (e.g. "a scrub
    /// was already running; following it").
    Note {
        message: String,
    },
    /// The scrub ended.
    ScrubDone {
        result: ScrubResult,
    },
    /// The command was carried out.
    Done {
        message: String,
    },
    /// The command was refused or failed.
    Error {
        message: String,
    },
}

impl Response {
    /// Whether more lines follow.
    pub fn is_final(&self) -> bool {
        !matches!(self, Response::Progress { .. } | Response::Note { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_as_single_json_lines() {
        for r in [
            Request::Status,
            Request::Scrub {
                repair: true,
                throttle_bytes_per_sec: 5 << 20,
            },
            Request::Replace {
                slot: 2,
                path: "/mnt/new disk".into(),
                throttle_bytes_per_sec: 0,
                full: false,
            },
            Request::Fail { slot: 1 },
        ] {
            let line = serde_json::to_string(&r).unwrap();
            assert!(!line.contains('\n'));
            assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), r);
        }
        assert!(!Request::Status.mutates());
        assert!(Request::ScrubCancel.mutates());
    }

    #[test]
    fn only_progress_and_notes_are_followed_by_more() {
        assert!(!Response::Progress { done: 1, total: 2 }.is_final());
        assert!(
            Response::Error {
                message: "x".into()
            }
            .is_final()
        );
    }
}
