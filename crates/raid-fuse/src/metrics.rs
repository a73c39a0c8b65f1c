//! The Prometheus textfile (`-o metrics=PATH`): member states, error
//! counters and rebuild progress in node_exporter's textfile-collector
//! format, rewritten atomically (temporary file + rename, so the collector
//! never reads half a file) every [`INTERVAL`] and at once on every health
//! event. Metric names are constants so alert rules and docs can rely on
//! them.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use raid_array::health::MemberState;
use raid_array::{Array, Status};
use tracing::warn;

/// How often the file is rewritten without a health event.
pub const INTERVAL: Duration = Duration::from_secs(10);
/// How often the thread looks at its stop flag.
const POLL: Duration = Duration::from_millis(200);
/// Shortest time between two rewrites caused by events (a scrub that
/// repairs thousands of blocks sends thousands of events).
const MIN_GAP: Duration = Duration::from_secs(1);

pub const MOUNTED: &str = "raidfs_mounted";
pub const MEMBER_INFO: &str = "raidfs_member_info";
pub const MEMBER_STATE: &str = "raidfs_member_state";
pub const MEMBER_ERRORS: &str = "raidfs_member_errors_total";
pub const ARRAY_DEGRADED: &str = "raidfs_array_degraded";
pub const ARRAY_FAILED: &str = "raidfs_array_failed";
pub const ARRAY_CLEAN: &str = "raidfs_array_clean";
pub const ARRAY_EVENTS: &str = "raidfs_array_events";
pub const FAILURES_TOLERATED: &str = "raidfs_array_failures_tolerated";
pub const FAILURES_LEFT: &str = "raidfs_array_failures_left";
pub const REBUILD_PROGRESS: &str = "raidfs_rebuild_progress_ratio";
pub const SPARES: &str = "raidfs_spares";
pub const LAST_SCRUB_TIME: &str = "raidfs_last_scrub_timestamp_seconds";
pub const LAST_SCRUB_MISMATCHES: &str = "raidfs_last_scrub_mismatches";
pub const LAST_SCRUB_REPAIRED: &str = "raidfs_last_scrub_repaired";
pub const LAST_SCRUB_UNRECOVERABLE: &str = "raidfs_last_scrub_unrecoverable";
pub const LAST_UPDATE: &str = "raidfs_metrics_updated_timestamp_seconds";

/// Every state a member can be in: one `raidfs_member_state` sample each,
/// 1 for the current one (as node_exporter's `node_md_state`).
pub const STATES: [&str; 5] = ["active", "failed", "missing", "spare", "rebuilding"];

/// The state label of a member state.
pub fn state_label(s: MemberState) -> &'static str {
    match s {
        MemberState::Active => "active",
        MemberState::Failed => "failed",
        MemberState::Missing => "missing",
        MemberState::Spare => "spare",
        MemberState::Rebuilding { .. } => "rebuilding",
    }
}

/// Escape a label value (backslash, double quote, newline).
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The textfile for one array. `now` is the time of the snapshot; `mounted`
/// is false for the last write at unmount.
pub fn render(st: &Status, now: SystemTime, mounted: bool) -> String {
    let a = esc(&st.name);
    let b = |v: bool| u8::from(v);
    let mut o = String::new();
    header(
        &mut o,
        MOUNTED,
        "gauge",
        "1 while the array is mounted by this daemon, 0 once unmounted.",
    );
    let _ = writeln!(o, "{MOUNTED}{{array=\"{a}\"}} {}", b(mounted));
    header(
        &mut o,
        ARRAY_DEGRADED,
        "gauge",
        "1 if a member is failed, missing or rebuilding.",
    );
    let _ = writeln!(o, "{ARRAY_DEGRADED}{{array=\"{a}\"}} {}", b(st.degraded));
    header(
        &mut o,
        ARRAY_FAILED,
        "gauge",
        "1 if more members are gone than the level tolerates (data unavailable).",
    );
    let _ = writeln!(o, "{ARRAY_FAILED}{{array=\"{a}\"}} {}", b(st.failed));
    header(
        &mut o,
        ARRAY_CLEAN,
        "gauge",
        "1 if the superblocks record a clean shutdown.",
    );
    let _ = writeln!(o, "{ARRAY_CLEAN}{{array=\"{a}\"}} {}", b(st.clean));
    header(
        &mut o,
        ARRAY_EVENTS,
        "gauge",
        "The superblock events counter (bumped on every membership change).",
    );
    let _ = writeln!(o, "{ARRAY_EVENTS}{{array=\"{a}\"}} {}", st.events);
    header(
        &mut o,
        FAILURES_TOLERATED,
        "gauge",
        "How many members the level can lose without losing data.",
    );
    let _ = writeln!(
        o,
        "{FAILURES_TOLERATED}{{array=\"{a}\"}} {}",
        st.failures_tolerated
    );
    header(
        &mut o,
        FAILURES_LEFT,
        "gauge",
        "How many more members the array can lose now without losing data (0: the next failure loses data; -1: it has failed).",
    );
    let left = st.failures_left.map_or(-1, |n| n as i64);
    let _ = writeln!(o, "{FAILURES_LEFT}{{array=\"{a}\"}} {left}");
    header(
        &mut o,
        MEMBER_INFO,
        "gauge",
        "Where each member slot is (directory and member UUID); always 1.",
    );
    for m in &st.members {
        let _ = writeln!(
            o,
            "{MEMBER_INFO}{{array=\"{a}\",member=\"{}\",path=\"{}\",uuid=\"{}\"}} 1",
            m.index,
            esc(m.path.as_deref().unwrap_or("")),
            esc(&m.uuid)
        );
    }
    header(
        &mut o,
        MEMBER_STATE,
        "gauge",
        "1 for the state each member is in, 0 for the others.",
    );
    for m in &st.members {
        let cur = state_label(m.state);
        for s in STATES {
            let _ = writeln!(
                o,
                "{MEMBER_STATE}{{array=\"{a}\",member=\"{}\",state=\"{s}\"}} {}",
                m.index,
                b(s == cur)
            );
        }
    }
    header(
        &mut o,
        MEMBER_ERRORS,
        "counter",
        "Errors per member since the array was assembled or a rebuild put a disk in the slot: read and write I/O errors, blocks failing their checksum, blocks rewritten from redundancy.",
    );
    for m in &st.members {
        let c = &m.counters;
        for (kind, v) in [
            ("read", c.read_errors),
            ("write", c.write_errors),
            ("checksum", c.checksum_mismatches),
            ("repaired", c.repaired_blocks),
        ] {
            let _ = writeln!(
                o,
                "{MEMBER_ERRORS}{{array=\"{a}\",member=\"{}\",kind=\"{kind}\"}} {v}",
                m.index
            );
        }
    }
    header(
        &mut o,
        REBUILD_PROGRESS,
        "gauge",
        "Fraction of the file data rebuilt onto each rebuilding member (0 to 1).",
    );
    if let Some(r) = &st.rebuild {
        let ratio = if r.total_bytes == 0 {
            1.0
        } else {
            (r.done_bytes as f64 / r.total_bytes as f64).min(1.0)
        };
        let _ = writeln!(
            o,
            "{REBUILD_PROGRESS}{{array=\"{a}\",member=\"{}\"}} {ratio:.4}",
            r.slot
        );
    }
    header(&mut o, SPARES, "gauge", "Hot spares attached to the array.");
    let _ = writeln!(o, "{SPARES}{{array=\"{a}\"}} {}", st.spares.len());
    if let Some(sc) = &st.last_scrub {
        header(
            &mut o,
            LAST_SCRUB_TIME,
            "gauge",
            "When the last scrub ended (Unix seconds).",
        );
        let _ = writeln!(
            o,
            "{LAST_SCRUB_TIME}{{array=\"{a}\",repair=\"{}\",complete=\"{}\"}} {}",
            sc.repair, sc.complete, sc.finished_unix
        );
        header(
            &mut o,
            LAST_SCRUB_MISMATCHES,
            "gauge",
            "What the last scrub found wrong: blocks failing their checksum (checksum), parity or mirror copies disagreeing with their data (redundancy).",
        );
        for (kind, v) in [
            ("checksum", sc.mismatches),
            ("redundancy", sc.redundancy_mismatches),
        ] {
            let _ = writeln!(
                o,
                "{LAST_SCRUB_MISMATCHES}{{array=\"{a}\",kind=\"{kind}\"}} {v}"
            );
        }
        header(
            &mut o,
            LAST_SCRUB_REPAIRED,
            "gauge",
            "Blocks and redundancy chunks the last scrub rewrote.",
        );
        let _ = writeln!(o, "{LAST_SCRUB_REPAIRED}{{array=\"{a}\"}} {}", sc.repaired);
        header(
            &mut o,
            LAST_SCRUB_UNRECOVERABLE,
            "gauge",
            "Blocks the last scrub found with no good copy left (their reads fail).",
        );
        let _ = writeln!(
            o,
            "{LAST_SCRUB_UNRECOVERABLE}{{array=\"{a}\"}} {}",
            sc.unrecoverable
        );
    }
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    header(
        &mut o,
        LAST_UPDATE,
        "gauge",
        "When this file was written (Unix seconds).",
    );
    let _ = writeln!(o, "{LAST_UPDATE}{{array=\"{a}\"}} {secs}");
    o
}

/// Replace `path` with `text` atomically: write a temporary file in the same
/// directory and rename it over `path`. Not fsynced: after a power cut the
/// file is rewritten within [`INTERVAL`] anyway, and a Pi's SD card is
/// spared a flush every few seconds.
pub fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    let name = path
        .file_name()
        .with_context(|| format!("{} names no file", path.display()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = match dir {
        Some(d) => d.join(&tmp_name),
        None => PathBuf::from(&tmp_name),
    };
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let written = f
        .write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", tmp.display()));
    drop(f);
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    // node_exporter usually runs as another user: make the file readable.
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644));
    std::fs::rename(&tmp, path).with_context(|| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot rename {} to {}", tmp.display(), path.display())
    })
}

fn snapshot(array: &Array, mounted: bool) -> String {
    render(&array.status(), SystemTime::now(), mounted)
}

/// The thread that keeps the textfile current.
pub struct MetricsWriter {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsWriter {
    /// Write the file once now, then keep it current from a thread.
    /// Fails if the first write fails (a wrong path is reported at mount).
    pub fn start(array: &Arc<Array>, path: PathBuf) -> Result<MetricsWriter> {
        write_atomic(&path, &snapshot(array, true))?;
        let events = array.health().subscribe();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let array = Arc::clone(array);
        let thread = std::thread::Builder::new()
            .name("raidfs-metrics".into())
            .spawn(move || {
                let mut last = Instant::now();
                let mut failing = false;
                let mut pending = false;
                loop {
                    match events.recv_timeout(POLL) {
                        Ok(_) => {
                            // Take the whole burst; one rewrite covers it.
                            while events.try_recv().is_ok() {}
                            pending = true;
                        }
                        Err(RecvTimeoutError::Timeout) => {}
                        // No more events (never while the array lives):
                        // keep the periodic rewrite without spinning.
                        Err(RecvTimeoutError::Disconnected) => std::thread::sleep(POLL),
                    }
                    let due = (pending && last.elapsed() >= MIN_GAP) || last.elapsed() >= INTERVAL;
                    let stopping = flag.load(Ordering::SeqCst);
                    if due || stopping {
                        last = Instant::now();
                        pending = false;
                        match write_atomic(&path, &snapshot(&array, !stopping)) {
                            Ok(()) => failing = false,
                            Err(e) if !failing => {
                                failing = true;
                                warn!(error = %format!("{e:#}"), "cannot update the metrics file");
                            }
                            Err(_) => {}
                        }
                    }
                    if stopping {
                        return;
                    }
                }
            })
            .context("cannot start the metrics thread")?;
        Ok(MetricsWriter {
            stop,
            thread: Some(thread),
        })
    }

    /// Write the final file (`raidfs_mounted 0`) and stop the thread; it
    /// holds a reference to the array, so this must come before closing it.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for MetricsWriter {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raid_array::array::{MemberStatus, RebuildStatus};
    use raid_array::health::MemberCounters;
    use raid_array::ops::ScrubSummary;
    use std::collections::{BTreeMap, HashSet};

    type Labels = BTreeMap<String, String>;

    /// A strict reader of the text format: every sample's metric has HELP
    /// and TYPE lines before it, labels are quoted, values are numbers.
    fn parse(text: &str) -> Vec<(String, Labels, f64)> {
        let mut typed = HashSet::new();
        let mut helped = HashSet::new();
        let mut out = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                helped.insert(rest.split(' ').next().unwrap().to_string());
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut it = rest.split(' ');
                let name = it.next().unwrap().to_string();
                assert!(matches!(it.next(), Some("gauge" | "counter")), "{line}");
                typed.insert(name);
                continue;
            }
            assert!(
                !line.starts_with('#') && !line.is_empty(),
                "stray line {line:?}"
            );
            let (name, rest) = line.split_once('{').expect("labels");
            let (labels, value) = rest.rsplit_once("} ").expect("value");
            assert!(
                helped.contains(name) && typed.contains(name),
                "{name} lacks HELP/TYPE"
            );
            let mut l = Labels::new();
            for pair in labels.split("\",") {
                let (k, v) = pair.split_once("=\"").expect("k=\"v\"");
                l.insert(k.to_string(), v.trim_end_matches('"').to_string());
            }
            out.push((name.to_string(), l, value.parse::<f64>().expect("number")));
        }
        out
    }

    fn get(samples: &[(String, Labels, f64)], name: &str, want: &[(&str, &str)]) -> f64 {
        let hits: Vec<f64> = samples
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && want
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(v))
            })
            .map(|s| s.2)
            .collect();
        assert_eq!(hits.len(), 1, "{name} {want:?}: {hits:?}");
        hits[0]
    }

    #[test]
    fn textfile_parses_back_to_the_status() {
        let member = |index, state, read_errors| MemberStatus {
            index,
            uuid: format!("uuid-{index}"),
            path: Some(format!("/mnt/d{index}")),
            state,
            counters: MemberCounters {
                read_errors,
                checksum_mismatches: 3,
                repaired_blocks: 2,
                write_errors: 0,
            },
            readd: false,
            last_rebuild: None,
        };
        let st = Status {
            name: "media".into(),
            uuid: "u".into(),
            level: "raid5".into(),
            chunk_size: 65536,
            members: vec![
                member(0, MemberState::Active, 0),
                member(1, MemberState::Failed, 7),
                member(2, MemberState::Rebuilding { done_bytes: 250 }, 0),
            ],
            events: 12,
            clean: false,
            degraded: true,
            failed: false,
            failures_tolerated: 1,
            failures_left: Some(0),
            journal_seq: 5,
            journal_commits: 5,
            inodes: 9,
            spares: Vec::new(),
            rebuild: Some(RebuildStatus {
                slot: 2,
                done_bytes: 250,
                total_bytes: 1000,
                started_unix: 1,
            }),
            last_scrub: Some(ScrubSummary {
                finished_unix: 1_600_000_000,
                files: 3,
                repair: true,
                complete: true,
                bytes: 1 << 20,
                mismatches: 4,
                redundancy_mismatches: 1,
                repaired: 5,
                unrecoverable: 0,
            }),
        };
        let text = render(&st, UNIX_EPOCH + Duration::from_secs(1_700_000_000), true);
        let s = parse(&text);
        let arr = ("array", "media");
        assert_eq!(get(&s, ARRAY_DEGRADED, &[arr]), 1.0);
        assert_eq!(get(&s, ARRAY_FAILED, &[arr]), 0.0);
        assert_eq!(get(&s, MOUNTED, &[arr]), 1.0);
        for (m, cur) in [("0", "active"), ("1", "failed"), ("2", "rebuilding")] {
            for st in STATES {
                let want = if st == cur { 1.0 } else { 0.0 };
                assert_eq!(
                    get(&s, MEMBER_STATE, &[arr, ("member", m), ("state", st)]),
                    want
                );
            }
        }
        assert_eq!(
            get(&s, MEMBER_ERRORS, &[("member", "1"), ("kind", "read")]),
            7.0
        );
        assert_eq!(
            get(&s, MEMBER_ERRORS, &[("member", "0"), ("kind", "checksum")]),
            3.0
        );
        assert_eq!(
            get(&s, MEMBER_ERRORS, &[("member", "2"), ("kind", "repaired")]),
            2.0
        );
        assert_eq!(get(&s, REBUILD_PROGRESS, &[("member", "2")]), 0.25);
        assert_eq!(
            get(&s, MEMBER_INFO, &[("member", "1"), ("path", "/mnt/d1")]),
            1.0
        );
        assert_eq!(get(&s, LAST_UPDATE, &[arr]), 1_700_000_000.0);
        assert_eq!(get(&s, FAILURES_LEFT, &[arr]), 0.0);
        assert_eq!(get(&s, SPARES, &[arr]), 0.0);
        assert_eq!(
            get(&s, LAST_SCRUB_TIME, &[arr, ("repair", "true")]),
            1_600_000_000.0
        );
        assert_eq!(get(&s, LAST_SCRUB_MISMATCHES, &[("kind", "checksum")]), 4.0);
        assert_eq!(
            get(&s, LAST_SCRUB_MISMATCHES, &[("kind", "redundancy")]),
            1.0
        );
        assert_eq!(get(&s, LAST_SCRUB_REPAIRED, &[arr]), 5.0);
        assert_eq!(get(&s, LAST_SCRUB_UNRECOVERABLE, &[arr]), 0.0);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(esc("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn atomic_write_replaces_the_file_and_leaves_no_temporary() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("raidfs.prom");
        write_atomic(&p, "one\n").unwrap();
        write_atomic(&p, "two\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "two\n");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }
}
