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
//!
//! The source may be a mount point (the array). Before each pass, and every
//! few seconds, the daemon checks that the source directory is still the one
//! it watches (device and inode): when a filesystem was mounted on it or
//! unmounted from it, the watch is made anew and the next pass scans the
//! whole tree. A source that was a mount point at the last successful pass
//! and is not one now is waited for (with one warning), not synced.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::keys;
use crate::reconcile::{Summary, Syncer};
use crate::scan;

/// How often the source's identity is checked while nothing happens, and
/// how often an unmounted source is looked at again.
const SOURCE_CHECK_EVERY: Duration = Duration::from_secs(5);

/// When files recorded as racy are read again: once their timestamps are
/// outside the window in which `stat` cannot vouch for a read.
const RACY_RECHECK: Duration =
    Duration::from_millis(crate::state::RACY_WINDOW.as_millis() as u64 + 200);

type Events = tokio::sync::mpsc::UnboundedSender<notify::Result<notify::Event>>;

/// A recursive watch of the source, its events sent to `tx`.
fn watch_source(syncer: &Syncer, tx: &Events) -> Result<notify::RecommendedWatcher> {
    let tx = tx.clone();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let _ = tx.send(res);
    })
    .map_err(|e| Error::io("watching", &syncer.source, std::io::Error::other(e)))?;
    watcher
        .watch(&syncer.source, RecursiveMode::Recursive)
        .map_err(|e| Error::io("watching", &syncer.source, std::io::Error::other(e)))?;
    Ok(watcher)
}

/// Device and inode of the source directory (`None` if it cannot be read).
fn source_id(syncer: &Syncer) -> Option<(u64, u64, u64)> {
    let r = scan::source_root(&syncer.source).ok()?;
    Some((r.dev, r.ino, mount_id(&syncer.source)))
}

/// The mount `path` is on: `statx`'s unique mount id (Linux 6.8), never
/// given to another mount, else its reusable one (5.8), else 0. A FUSE
/// array or a tmpfs mounted again can come back with the device number,
/// root inode and even reusable mount id it had.
fn mount_id(path: &std::path::Path) -> u64 {
    use rustix::fs::{AtFlags, CWD, StatxFlags};
    /// `STATX_MNT_ID_UNIQUE`, which this rustix does not name.
    const MNT_ID_UNIQUE: u32 = 0x4000;
    let want = StatxFlags::from_bits_retain(MNT_ID_UNIQUE) | StatxFlags::MNT_ID;
    rustix::fs::statx(CWD, path, AtFlags::empty(), want)
        .ok()
        .filter(|s| s.stx_mask & (MNT_ID_UNIQUE | StatxFlags::MNT_ID.bits()) != 0)
        .map_or(0, |s| s.stx_mnt_id)
}

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

/// Runs until a stop is requested ([`Syncer::stop`]: SIGINT or SIGTERM,
/// which also make a running pass stop at the next file).
pub async fn run(syncer: Arc<Syncer>, opts: DaemonOptions, observer: &dyn Observer) -> Result<()> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut watched = source_id(&syncer);
    let mut watcher = Some(watch_source(&syncer, &tx)?);
    tracing::info!(source = %syncer.source.display(), "watching for changes");
    let mut source_check = tokio::time::interval(SOURCE_CHECK_EVERY);
    source_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Waiting for an unmounted source (warned once).
    let mut waiting = false;

    let mut pending: BTreeSet<String> = BTreeSet::new();
    let mut rescan = true;
    let start = Instant::now();
    let mut first_event = Some(start);
    let mut last_event = start.checked_sub(opts.debounce).unwrap_or(start);
    let mut retry_at: Option<Instant> = None;
    let mut failures: u32 = 0;
    // Files read too soon after a change (racy) are read again then, even
    // if nothing else happens: a same-size rewrite in the same timestamp
    // tick makes no later event.
    let mut recheck_at: Option<Instant> = None;
    // Events were lost (the queue overflowed, the watch reported an
    // error): directories made meanwhile have no watch, since the watcher
    // adds one only for a directory it sees created. Made anew before the
    // next pass, which scans the whole tree.
    let mut rewatch = false;

    loop {
        let ready_at = first_event.map(|first| {
            let d = (last_event + opts.debounce).min(first + opts.max_delay);
            retry_at.map_or(d, |r| d.max(r))
        });
        let ready_at = match (ready_at, recheck_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        tokio::select! {
            ev = rx.recv() => {
                let Some(ev) = ev else { break };
                let now = Instant::now();
                let relevant = match ev {
                    Ok(ev) => {
                        rewatch |= ev.need_rescan();
                        note_event(&syncer, ev, &mut pending, &mut rescan)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "watch error; next pass scans the whole tree");
                        rescan = true;
                        rewatch = true;
                        true
                    }
                };
                if relevant {
                    first_event.get_or_insert(now);
                    last_event = now;
                }
            }
            _ = source_check.tick() => {
                if source_id(&syncer) != watched {
                    // Mounted on, or unmounted: the next pass sees to it.
                    let now = Instant::now();
                    first_event.get_or_insert(now);
                    last_event = now;
                }
            }
            _ = sleep_until_opt(ready_at), if ready_at.is_some() => {
                match syncer.check_source() {
                    Err(e @ Error::Source { .. }) => {
                        if !waiting {
                            tracing::warn!(error = %e, "waiting for the source to be mounted");
                            observer.pass_done(&Err(e));
                            waiting = true;
                        }
                        retry_at = Some(Instant::now() + SOURCE_CHECK_EVERY);
                        if recheck_at.take().is_some() {
                            first_event.get_or_insert(Instant::now());
                        }
                        continue;
                    }
                    Err(_) => {} // the pass reports it
                    Ok(root) => {
                        // Back from an unmount: a file system mounted again
                        // can have the device and inode it had (a FUSE or
                        // tmpfs remount), while the watch died with the
                        // unmount. Watched anew and scanned whatever they are.
                        let remounted = std::mem::take(&mut waiting);
                        if remounted {
                            tracing::info!(source = %syncer.source.display(), "the source is mounted again");
                        }
                        let lost = std::mem::take(&mut rewatch);
                        let now_id = Some((root.dev, root.ino, mount_id(&syncer.source)));
                        let moved = now_id != watched;
                        // A watch that could not be made last time is tried again.
                        if remounted || moved || lost || watcher.is_none() {
                            // The watch is on the directory that was there
                            // before, or misses directories made while events
                            // were lost: make it anew, and look at everything.
                            if remounted || moved {
                                tracing::info!(
                                    source = %syncer.source.display(),
                                    "the source directory changed (mounted or unmounted); \
                                     watching it anew and scanning the whole tree"
                                );
                            } else {
                                tracing::info!(
                                    source = %syncer.source.display(),
                                    "events were lost; watching anew and scanning the whole tree"
                                );
                            }
                            // After lost events the old watch still works:
                            // kept if a new one cannot be made. After a
                            // mount change it is dead either way.
                            if remounted || moved {
                                watcher = None;
                            }
                            match watch_source(&syncer, &tx) {
                                Ok(w) => {
                                    watcher = Some(w);
                                    watched = now_id;
                                }
                                Err(e) => tracing::warn!(error = %e, "watching anew"),
                            }
                            rescan = true;
                        }
                    }
                }
                let scopes: Vec<String> = if rescan {
                    vec![String::new()]
                } else {
                    pending.iter().cloned().collect()
                };
                tracing::debug!(?scopes, "pass");
                recheck_at = None;
                let result = syncer.pass(&scopes, false).await;
                observer.pass_done(&result);
                match &result {
                    Ok(s) if s.failed == 0 && watcher.is_some() => {
                        failures = 0;
                        retry_at = None;
                        pending.clear();
                        rescan = false;
                        first_event = None;
                        if !s.racy_paths.is_empty() {
                            tracing::debug!(files = s.racy_paths.len(), "racy files: reading them again shortly");
                            pending.extend(s.racy_paths.iter().cloned());
                            recheck_at = Some(Instant::now() + RACY_RECHECK);
                        }
                    }
                    Ok(s) if s.failed as usize == s.failed_paths.len() && watcher.is_some() => {
                        // Only some files failed (unreadable, refused by the
                        // server): the rest of the tree is in sync. They are
                        // retried on their own with backoff, and changes
                        // elsewhere are not held behind them (nor does every
                        // retry scan the whole tree).
                        failures += 1;
                        let delay = backoff(failures, opts.retry_max);
                        tracing::warn!(files = s.failed, retry_in = ?delay, "files failed; will retry them");
                        retry_at = None;
                        pending.clear();
                        rescan = false;
                        first_event = None;
                        pending.extend(s.failed_paths.iter().cloned());
                        pending.extend(s.racy_paths.iter().cloned());
                        let again = if s.racy_paths.is_empty() { delay } else { delay.min(RACY_RECHECK) };
                        recheck_at = Some(Instant::now() + again);
                    }
                    _ => {
                        // Retried even if only a recheck started it.
                        first_event.get_or_insert(Instant::now());
                        failures += 1;
                        let delay = backoff(failures, opts.retry_max);
                        tracing::warn!(failures, retry_in = ?delay, "pass failed; will retry");
                        retry_at = Some(Instant::now() + delay);
                    }
                }
            }
            () = syncer.stop.wait() => break,
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
