//! The notification hook (`-o notify=PROGRAM`), in the manner of
//! `mdadm --monitor --program`: when a member fails, a rebuild starts or
//! finishes, a scrub finds errors or a block is repaired, the daemon runs
//!
//! ```text
//! PROGRAM EVENT ARRAY MEMBER
//! ```
//!
//! with `RAIDFS_EVENT`, `RAIDFS_ARRAY`, `RAIDFS_MEMBER`, `RAIDFS_SLOT`,
//! `RAIDFS_DETAIL` and `RAIDFS_MOUNTPOINT` in its environment. Every event
//! is also logged through `tracing` (the journal when daemonized), hook or
//! not.
//!
//! The hook never runs on the data path: one thread receives the events
//! ([`raid_array::health::Health::subscribe`]) and runs the program, waiting
//! at most [`HOOK_TIMEOUT`] before killing it. Events that arrive while a
//! hook runs queue up; queued repairs of one member are merged into one
//! notification, so a scrub that heals thousands of blocks does not fork
//! thousands of processes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use raid_array::Array;
use raid_array::health::{HealthEvent, MemberState};
use raid_array::ops::ScrubSummary;
use tracing::{error, info, warn};

/// Longest a hook may run before it is killed.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the notifier thread looks at its stop flag.
const POLL: Duration = Duration::from_millis(200);
/// How often it looks for a newly finished scrub.
const SCRUB_POLL: Duration = Duration::from_secs(5);

/// What happened, with the `EVENT` word the hook receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A member failed (I/O error, vanished, or failed by the admin).
    Fail { slot: usize, reason: String },
    /// A rebuild onto a member started (a replacement, or a hot spare
    /// taking over a failed member).
    RebuildStarted { slot: usize, from_spare: bool },
    /// A member finished rebuilding and is active.
    RebuildFinished { slot: usize },
    /// Some other member state change.
    StateChange {
        slot: usize,
        from: MemberState,
        to: MemberState,
    },
    /// Bad blocks on a member were rewritten from redundancy.
    Repaired { slot: usize, bytes: u64 },
    /// A scrub ended having found errors.
    ScrubErrors {
        mismatches: u64,
        repaired: u64,
        unrecoverable: u64,
    },
}

impl Event {
    /// The event name passed as the hook's first argument.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Fail { .. } => "Fail",
            Event::RebuildStarted { .. } => "RebuildStarted",
            Event::RebuildFinished { .. } => "RebuildFinished",
            Event::StateChange { .. } => "StateChange",
            Event::Repaired { .. } => "Repaired",
            Event::ScrubErrors { .. } => "ScrubErrors",
        }
    }

    /// The member slot concerned, if one is.
    pub fn slot(&self) -> Option<usize> {
        match *self {
            Event::Fail { slot, .. }
            | Event::RebuildStarted { slot, .. }
            | Event::RebuildFinished { slot }
            | Event::StateChange { slot, .. }
            | Event::Repaired { slot, .. } => Some(slot),
            Event::ScrubErrors { .. } => None,
        }
    }

    /// One line for a human (`RAIDFS_DETAIL`).
    pub fn detail(&self) -> String {
        match self {
            Event::Fail { reason, .. } => reason.clone(),
            Event::RebuildStarted { from_spare, .. } => {
                if *from_spare {
                    "a hot spare took over; rebuilding onto it".into()
                } else {
                    "rebuild started".into()
                }
            }
            Event::RebuildFinished { .. } => "rebuild finished; member active".into(),
            Event::StateChange { from, to, .. } => format!("{from:?} -> {to:?}"),
            Event::Repaired { bytes, .. } => {
                format!("{bytes} bytes rewritten from redundancy")
            }
            Event::ScrubErrors {
                mismatches,
                repaired,
                unrecoverable,
            } => format!(
                "scrub found {mismatches} mismatches, repaired {repaired}, unrecoverable {unrecoverable}"
            ),
        }
    }

    /// The notification for an engine health event.
    pub fn from_health(ev: &HealthEvent) -> Event {
        match ev {
            HealthEvent::Failed { member, reason } => Event::Fail {
                slot: *member,
                reason: reason.clone(),
            },
            HealthEvent::StateChanged { member, from, to } => match (from, to) {
                (_, MemberState::Failed) => Event::Fail {
                    slot: *member,
                    reason: format!("{from:?} -> Failed"),
                },
                (MemberState::Rebuilding { .. }, MemberState::Active) => {
                    Event::RebuildFinished { slot: *member }
                }
                (f, MemberState::Rebuilding { .. }) => Event::RebuildStarted {
                    slot: *member,
                    from_spare: *f == MemberState::Spare,
                },
                _ => Event::StateChange {
                    slot: *member,
                    from: *from,
                    to: *to,
                },
            },
            HealthEvent::Repaired { member, bytes } => Event::Repaired {
                slot: *member,
                bytes: *bytes,
            },
        }
    }
}

/// Events raised outside the health channel (a scrub's result) reach the
/// running notifier through this sender.
static EXTRA: OnceLock<Mutex<Option<Sender<Event>>>> = OnceLock::new();

/// Report an event that does not come from member health (e.g. a scrub
/// that found errors) to the notifier of this process, if one runs.
pub fn emit(ev: Event) {
    let slot = EXTRA.get_or_init(|| Mutex::new(None));
    let guard = slot.lock().unwrap_or_else(|e| e.into_inner());
    match guard.as_ref() {
        Some(tx) => {
            let _ = tx.send(ev);
        }
        None => log_event(&ev, "-", "-"),
    }
}

/// Who to tell and where.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    /// The program to run; `None` only logs.
    pub program: Option<PathBuf>,
    /// The array's name (the hook's `ARRAY`).
    pub array: String,
    pub mountpoint: PathBuf,
}

/// The running notifier thread.
pub struct Notifier {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Notifier {
    /// Subscribe to `array`'s health and start the notifier thread.
    pub fn start(array: &Arc<Array>, cfg: NotifyConfig) -> std::io::Result<Notifier> {
        let health_rx = array.health().subscribe();
        let (tx, extra_rx) = std::sync::mpsc::channel();
        *EXTRA
            .get_or_init(|| Mutex::new(None))
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(tx);
        let stop = Arc::new(AtomicBool::new(false));
        // Where each member was at mount: a failed member may no longer
        // be listed with its directory, but the hook must still name it.
        let at_start: Vec<Option<String>> =
            array.status().members.into_iter().map(|m| m.path).collect();
        let array = Arc::downgrade(array);
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("raidfs-notify".into())
            .spawn(move || {
                let member_path = |slot: usize| {
                    array
                        .upgrade()
                        .and_then(|a| a.status().members.get(slot)?.path.clone())
                        .or_else(|| at_start.get(slot).cloned().flatten())
                };
                let last_scrub = || array.upgrade().and_then(|a| a.status().last_scrub);
                run(&cfg, &health_rx, &extra_rx, &flag, member_path, last_scrub)
            })?;
        Ok(Notifier {
            stop,
            thread: Some(thread),
        })
    }

    /// Deliver what is queued, then stop the thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(m) = EXTRA.get() {
            *m.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn run(
    cfg: &NotifyConfig,
    health: &Receiver<HealthEvent>,
    extra: &Receiver<Event>,
    stop: &AtomicBool,
    member_path: impl Fn(usize) -> Option<String>,
    last_scrub: impl Fn() -> Option<ScrubSummary>,
) {
    // The scrub result kept on the members: a new one that found errors is
    // an event (scrubs run in the daemon or in another process alike).
    let mut seen_scrub = last_scrub();
    let mut scrub_checked = Instant::now();
    loop {
        let mut batch: Vec<Event> = Vec::new();
        if scrub_checked.elapsed() >= SCRUB_POLL {
            scrub_checked = Instant::now();
            let now = last_scrub();
            if now != seen_scrub {
                if let Some(ev) = now.as_ref().and_then(scrub_event) {
                    batch.push(ev);
                }
                seen_scrub = now;
            }
        }
        match health.recv_timeout(POLL) {
            Ok(ev) => batch.push(Event::from_health(&ev)),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(POLL);
            }
        }
        batch.extend(health.try_iter().map(|ev| Event::from_health(&ev)));
        batch.extend(extra.try_iter());
        if batch.is_empty() && stop.load(Ordering::SeqCst) {
            return;
        }
        for ev in coalesce(batch) {
            let slot = ev.slot();
            let member = slot
                .map(|s| member_path(s).unwrap_or_else(|| format!("slot {s}")))
                .unwrap_or_else(|| "-".into());
            log_event(&ev, &cfg.array, &member);
            if let Some(program) = &cfg.program {
                run_hook(program, cfg, &ev, &member);
            }
        }
    }
}

/// The event for a finished scrub, if it found anything wrong.
pub fn scrub_event(s: &ScrubSummary) -> Option<Event> {
    let mismatches = s.mismatches + s.redundancy_mismatches;
    (mismatches > 0 || s.unrecoverable > 0).then_some(Event::ScrubErrors {
        mismatches,
        repaired: s.repaired,
        unrecoverable: s.unrecoverable,
    })
}

/// Merge the repairs of one member into one event (keeping order of first
/// appearance); every other event stays as it is.
pub fn coalesce(batch: Vec<Event>) -> Vec<Event> {
    let mut out: Vec<Event> = Vec::with_capacity(batch.len());
    let mut repaired: BTreeMap<usize, usize> = BTreeMap::new();
    for ev in batch {
        if let Event::Repaired { slot, bytes } = ev {
            if let Some(&i) = repaired.get(&slot)
                && let Event::Repaired { bytes: b, .. } = &mut out[i]
            {
                *b += bytes;
                continue;
            }
            repaired.insert(slot, out.len());
        }
        out.push(ev);
    }
    out
}

fn log_event(ev: &Event, array: &str, member: &str) {
    let (event, detail) = (ev.name(), ev.detail());
    match ev {
        Event::Fail { .. } => error!(event, array, member, detail, "raidfs event"),
        Event::ScrubErrors { .. } | Event::Repaired { .. } => {
            warn!(event, array, member, detail, "raidfs event")
        }
        _ => info!(event, array, member, detail, "raidfs event"),
    }
}

/// Run the hook once, killing it after [`HOOK_TIMEOUT`]; its exit status is
/// logged. Its stdout is discarded (the daemon's stdout may be the pipe that
/// reported readiness); its stderr goes where the daemon's does.
fn run_hook(program: &PathBuf, cfg: &NotifyConfig, ev: &Event, member: &str) {
    let mut cmd = Command::new(program);
    cmd.arg(ev.name())
        .arg(&cfg.array)
        .arg(member)
        .env("RAIDFS_EVENT", ev.name())
        .env("RAIDFS_ARRAY", &cfg.array)
        .env("RAIDFS_MEMBER", member)
        .env(
            "RAIDFS_SLOT",
            ev.slot().map(|s| s.to_string()).unwrap_or_default(),
        )
        .env("RAIDFS_DETAIL", ev.detail())
        .env("RAIDFS_MOUNTPOINT", &cfg.mountpoint)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            error!(program = %program.display(), event = ev.name(), error = %e, "cannot run the notify program");
            return;
        }
    };
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => {
                info!(program = %program.display(), event = ev.name(), "notify program done");
                return;
            }
            Ok(Some(status)) => {
                warn!(program = %program.display(), event = ev.name(), %status, "notify program failed");
                return;
            }
            Ok(None) if start.elapsed() > HOOK_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                warn!(program = %program.display(), event = ev.name(), timeout_s = HOOK_TIMEOUT.as_secs(), "notify program killed after the timeout");
                return;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                warn!(program = %program.display(), error = %e, "waiting for the notify program");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_events_map_to_mdadm_style_names() {
        let ev = |from, to| {
            Event::from_health(&HealthEvent::StateChanged {
                member: 2,
                from,
                to,
            })
        };
        assert_eq!(
            ev(
                MemberState::Spare,
                MemberState::Rebuilding { done_bytes: 0 }
            ),
            Event::RebuildStarted {
                slot: 2,
                from_spare: true
            }
        );
        assert_eq!(
            ev(
                MemberState::Rebuilding { done_bytes: 9 },
                MemberState::Active
            )
            .name(),
            "RebuildFinished"
        );
        assert_eq!(ev(MemberState::Active, MemberState::Failed).name(), "Fail");
        let fail = Event::from_health(&HealthEvent::Failed {
            member: 1,
            reason: "EIO".into(),
        });
        assert_eq!((fail.name(), fail.slot()), ("Fail", Some(1)));
    }

    #[test]
    fn only_a_scrub_that_found_something_is_an_event() {
        let mut s = ScrubSummary::default();
        assert_eq!(scrub_event(&s), None);
        s.redundancy_mismatches = 2;
        s.repaired = 2;
        assert_eq!(
            scrub_event(&s),
            Some(Event::ScrubErrors {
                mismatches: 2,
                repaired: 2,
                unrecoverable: 0
            })
        );
    }

    #[test]
    fn repairs_of_a_member_are_merged() {
        let out = coalesce(vec![
            Event::Repaired { slot: 1, bytes: 4 },
            Event::Fail {
                slot: 0,
                reason: "x".into(),
            },
            Event::Repaired { slot: 1, bytes: 6 },
            Event::Repaired { slot: 3, bytes: 1 },
        ]);
        assert_eq!(
            out,
            vec![
                Event::Repaired { slot: 1, bytes: 10 },
                Event::Fail {
                    slot: 0,
                    reason: "x".into()
                },
                Event::Repaired { slot: 3, bytes: 1 },
            ]
        );
    }

    #[test]
    fn hook_gets_arguments_and_environment() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let script = dir.path().join("hook.sh");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho \"$1|$2|$3|$RAIDFS_EVENT|$RAIDFS_SLOT|$RAIDFS_DETAIL\" >> {}\n",
                out.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let cfg = NotifyConfig {
            program: Some(script),
            array: "media".into(),
            mountpoint: "/mnt/media".into(),
        };
        run_hook(
            cfg.program.as_ref().unwrap(),
            &cfg,
            &Event::Fail {
                slot: 2,
                reason: "write: EIO".into(),
            },
            "/mnt/d2",
        );
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "Fail|media|/mnt/d2|Fail|2|write: EIO\n"
        );
    }
}
