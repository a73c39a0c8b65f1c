//! `--metrics-file`: a Prometheus textfile (for node_exporter's textfile
//! collector), replaced atomically after every pass. Names are constants so
//! dashboards and docs/SYNC.md cannot drift from the code.

use std::fmt::Write;
use std::path::Path;

use crate::error::Result;
use crate::reconcile::Summary;
use crate::state::{Totals, write_atomic};

pub const LAST_SUCCESS: &str = "raidfs_sync_last_success_timestamp_seconds";
pub const LAST_RUN: &str = "raidfs_sync_last_run_timestamp_seconds";
pub const LAST_RUN_OK: &str = "raidfs_sync_last_run_success";
pub const LAST_RUN_FAILED_FILES: &str = "raidfs_sync_last_run_failed_files";
pub const LAST_RUN_DEFERRED_FILES: &str = "raidfs_sync_last_run_deferred_files";
pub const SKIPPED_ENTRIES: &str = "raidfs_sync_skipped_entries";
pub const UPLOADED_BYTES: &str = "raidfs_sync_uploaded_bytes_total";
pub const UPLOADED_OBJECTS: &str = "raidfs_sync_uploaded_objects_total";
pub const COPIED_OBJECTS: &str = "raidfs_sync_copied_objects_total";
pub const DELETED_OBJECTS: &str = "raidfs_sync_deleted_objects_total";
pub const FAILED_FILES: &str = "raidfs_sync_failed_files_total";
pub const FAILED_RUNS: &str = "raidfs_sync_failed_runs_total";

/// Renders and writes the metrics for the last pass and the running totals.
pub fn write(
    path: &Path,
    bucket: &str,
    last: &Summary,
    totals: &Totals,
    now_unix: i64,
) -> Result<()> {
    let mut s = String::new();
    let l = format!("{{bucket=\"{}\"}}", bucket.replace(['"', '\\', '\n'], "_"));
    let mut metric = |name: &str, kind: &str, help: &str, value: String| {
        let _ = writeln!(
            s,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{l} {value}"
        );
    };
    metric(
        LAST_SUCCESS,
        "gauge",
        "Unix time of the last pass that completed without failures.",
        totals.last_success_unix.unwrap_or(0).to_string(),
    );
    metric(
        LAST_RUN,
        "gauge",
        "Unix time of the last pass.",
        now_unix.to_string(),
    );
    metric(
        LAST_RUN_OK,
        "gauge",
        "1 if the last pass had no failures.",
        u8::from(last.failed == 0).to_string(),
    );
    metric(
        LAST_RUN_FAILED_FILES,
        "gauge",
        "Files that failed in the last pass.",
        last.failed.to_string(),
    );
    metric(
        LAST_RUN_DEFERRED_FILES,
        "gauge",
        "Files that changed while being read in the last pass (taken again by the next).",
        last.deferred.to_string(),
    );
    metric(
        SKIPPED_ENTRIES,
        "gauge",
        "Entries of the tree not mirrored (bad names, sockets, FIFOs, devices, unreadable).",
        last.skipped_total.to_string(),
    );
    metric(
        UPLOADED_BYTES,
        "counter",
        "Bytes uploaded.",
        totals.uploaded_bytes.to_string(),
    );
    metric(
        UPLOADED_OBJECTS,
        "counter",
        "Objects uploaded.",
        totals.uploaded_objects.to_string(),
    );
    metric(
        COPIED_OBJECTS,
        "counter",
        "Server-side copies (renames, attribute changes).",
        totals.copied_objects.to_string(),
    );
    metric(
        DELETED_OBJECTS,
        "counter",
        "Delete markers written.",
        totals.deleted_objects.to_string(),
    );
    metric(
        FAILED_FILES,
        "counter",
        "File operations that failed.",
        totals.failed_files.to_string(),
    );
    metric(
        FAILED_RUNS,
        "counter",
        "Passes with at least one failure.",
        totals.failed_runs.to_string(),
    );
    write_atomic(path, s.as_bytes())
}
