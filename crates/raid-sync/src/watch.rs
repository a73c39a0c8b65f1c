//! The daemon loop: watch the tree with inotify (the `notify` crate), gather
//! changed paths until the tree has been quiet for the debounce time, then run
//! a pass over just those paths.
//!
//! Nothing is missed: the watch starts before the first pass (a full local
//! scan against the state, which covers everything that happened while the
//! daemon was down); an inotify queue overflow or watch error turns the next
//! pass into a full local scan; a failed pass keeps its paths and is retried
//! with exponential backoff and jitter, and files that failed keep their old
//! state entry, so even a restart in between retries them.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::keys;
use crate::reconcile::{Summary, Syncer};

/// Timing of the daemon.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// Quiet time after the last change before a pass starts.
    pub debounce: Duration,
    /// Longest a change waits while the tree keeps changing.
    pub max_delay: Duration,
    /// Cap of the retry backoff after failed passes.
    pub retry_max: Duration,
}

/// Told about every pass (metrics, notifications).
pub trait Observer: Send + Sync {
    fn pass_done(&self, result: &Result<Summary>);
}

/// Runs until SIGINT or SIGTERM.
pub async fn run(syncer: Arc<Syncer>, opts: DaemonOptions, observer: &dyn Observer) -> Result<()> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let _ = tx.send(res);
    })
    .map_err(|e| Error::io("watching", &syncer.source, std::io::Error::other(e)))?;
    watcher
        .watch(&syncer.source, RecursiveMode::Recursive)
        .map_err(|e| Error::io("watching", &syncer.source, std::io::Error::other(e)))?;
    tracing::info!(source = %syncer.source.display(), "watching for changes");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::io("installing signal handler", "SIGTERM", e))?;
    let mut pending: BTreeSet<String> = BTreeSet::new();
    let mut rescan = true;
    let start = Instant::now();
    let mut first_event = Some(start);
    let mut last_event = start.checked_sub(opts.debounce).unwrap_or(start);
    let mut retry_at: Option<Instant> = None;
    let mut failures: u32 = 0;

    loop {
        let ready_at = first_event.map(|first| {
            let d = (last_event + opts.debounce).min(first + opts.max_delay);
            retry_at.map_or(d, |r| d.max(r))
        });
        tokio::select! {
            ev = rx.recv() => {
                let Some(ev) = ev else { break };
                let now = Instant::now();
                let relevant = match ev {
                    Ok(ev) => note_event(&syncer, ev, &mut pending, &mut rescan),
                    Err(e) => {
                        tracing::warn!(error = %e, "watch error; next pass scans the whole tree");
                        rescan = true;
                        true
                    }
                };
                if relevant {
                    first_event.get_or_insert(now);
                    last_event = now;
                }
            }
            _ = sleep_until_opt(ready_at), if ready_at.is_some() => {
                let scopes: Vec<String> = if rescan {
                    vec![String::new()]
                } else {
                    pending.iter().cloned().collect()
                };
                tracing::debug!(?scopes, "pass");
                let result = syncer.pass(&scopes, false).await;
                observer.pass_done(&result);
                match &result {
                    Ok(s) if s.failed == 0 => {
                        failures = 0;
                        retry_at = None;
                        pending.clear();
                        rescan = false;
                        first_event = None;
                    }
                    _ => {
                        failures += 1;
                        let delay = backoff(failures, opts.retry_max);
                        tracing::warn!(failures, retry_in = ?delay, "pass failed; will retry");
                        retry_at = Some(Instant::now() + delay);
                    }
                }
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
    }
    tracing::info!("stopping; saving state");
    syncer.store.save()
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Records an event's paths; returns whether it may have changed anything.
fn note_event(
    syncer: &Syncer,
    ev: notify::Event,
    pending: &mut BTreeSet<String>,
    rescan: &mut bool,
) -> bool {
    if ev.need_rescan() {
        tracing::warn!("inotify queue overflowed; next pass scans the whole tree");
        *rescan = true;
        return true;
    }
    match ev.kind {
        // Our own reads of files during uploads show up as these.
        EventKind::Access(
            AccessKind::Open(_) | AccessKind::Read | AccessKind::Close(AccessMode::Read),
        ) => {
            return false;
        }
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => {}
        EventKind::Access(_) => return false,
        _ => {}
    }
    let mut any = false;
    for p in &ev.paths {
        if p == &syncer.source {
            continue;
        }
        match keys::rel_path(&syncer.source, p) {
            Ok(rel) => {
                pending.insert(rel);
                any = true;
            }
            Err(e) => tracing::debug!(error = %e, "ignoring event"),
        }
    }
    any
}

/// Exponential backoff with full jitter: a random delay in [d/2, d] where d
/// doubles per failure from 1 s up to `cap`.
pub fn backoff(failures: u32, cap: Duration) -> Duration {
    let base = Duration::from_secs(1)
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(cap);
    base.mul_f64(0.5 + fastrand::f64() * 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        for _ in 0..100 {
            let b1 = backoff(1, Duration::from_secs(60));
            assert!(b1 >= Duration::from_millis(500) && b1 <= Duration::from_secs(1));
            let b10 = backoff(10, Duration::from_secs(60));
            assert!(b10 >= Duration::from_secs(30) && b10 <= Duration::from_secs(60));
        }
    }
}
