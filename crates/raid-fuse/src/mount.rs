//! What `mount.raidfs` does once its arguments are understood: check the
//! mount point and the FUSE device, assemble the array, mount it, serve
//! requests until unmounted, then close the array clean.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use fuser::{Config, MountOption, SessionACL};
use raid_array::{Array, AssembleOptions};
use tracing::{debug, info, warn};

use crate::adapter::RaidFs;
use crate::options::MountOptions;

/// How often metadata changes are committed to the journal when nobody
/// calls fsync (like ext4's `commit=` interval).
pub const COMMIT_INTERVAL: Duration = Duration::from_secs(1);

/// Everything `mount.raidfs` needs.
#[derive(Debug, Clone)]
pub struct MountRequest {
    /// The SPEC as given (member list, name or UUID), for messages.
    pub source: String,
    pub members: Vec<PathBuf>,
    pub mountpoint: PathBuf,
    pub options: MountOptions,
}

/// Checks that need nothing written, done before anything else so a bad
/// mount point or a missing FUSE device is reported plainly.
pub fn preflight(mountpoint: &Path) -> Result<()> {
    let meta = match std::fs::metadata(mountpoint) {
        Ok(m) => m,
        // A FUSE mount whose daemon is gone (killed, crashed) answers
        // every call with ENOTCONN until it is unmounted.
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => bail!(
            "mount point {0} is a dead mount: the daemon that served it has ended; \
             unmount it first (`umount {0}`, or `umount -l {0}` if it is busy)",
            mountpoint.display()
        ),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("mount point {} does not exist", mountpoint.display()));
        }
    };
    if !meta.is_dir() {
        bail!("mount point {} is not a directory", mountpoint.display());
    }
    if crate::spec::is_mountpoint(mountpoint)? {
        bail!(
            "mount point {} is busy: something is already mounted there",
            mountpoint.display()
        );
    }
    if !Path::new("/dev/fuse").exists() {
        bail!(
            "the FUSE device /dev/fuse is missing: install fuse3 and load the fuse module (modprobe fuse)"
        );
    }
    Ok(())
}

/// Assemble the array for a mount.
pub fn assemble(req: &MountRequest) -> Result<Array> {
    if !req.options.read_only {
        refuse_if_mounted(&req.members)?;
    }
    let mut opts = AssembleOptions::new(req.members.clone());
    opts.force = req.options.force;
    // Namespace changes are committed by the periodic flusher, by fsync and
    // at unmount, as on a local filesystem, not one journal sync per create
    // (unless mounted `sync` or `dirsync`).
    opts.sync_metadata = req.options.sync_metadata;
    // A read-only mount writes nothing to the members, not even the
    // superblock's dirty flag.
    opts.read_only = req.options.read_only;
    opts.rebuild.throttle_bytes_per_sec = req.options.rebuild_throttle_mbps * 1_000_000;
    opts.atime = req.options.atime;
    opts.read_ahead_budget = req.options.cache_bytes;
    opts.lock_wait = std::time::Duration::from_secs(req.options.lock_wait_secs);
    // Assembly also resyncs the stripes an unclean shutdown left dirty,
    // before it serves or rebuilds anything.
    let array = Array::assemble(&opts).context("cannot assemble the array")?;
    Ok(array)
}

/// FUSE session configuration for these options. As root the mount itself
/// is made by [`crate::kernel_mount`], which sets the same kernel options
/// (read-only, nodev, nosuid, default_permissions, allow_other): a mount
/// option added here must be added there too.
pub fn fuse_config(req: &MountRequest, array_name: &str) -> Config {
    let o = &req.options;
    let mut mount_options = vec![
        MountOption::FSName(array_name.to_string()),
        MountOption::Subtype("raidfs".into()),
        MountOption::DefaultPermissions,
        MountOption::NoDev,
    ];
    if o.read_only {
        mount_options.push(MountOption::RO);
    }
    if o.noexec {
        mount_options.push(MountOption::NoExec);
    }
    if o.synchronous {
        mount_options.push(MountOption::Sync);
    }
    if o.nosymfollow {
        // fusermount3 of libfuse 3.10 and later knows it.
        mount_options.push(MountOption::CUSTOM("nosymfollow".into()));
    }
    let mut config = Config::default();
    config.mount_options = mount_options;
    config.acl = if o.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(o.threads);
    config.clone_fd = true;
    config
}

/// An array that a live daemon serves is refused at once, naming where it
/// is mounted, instead of waiting `lock_wait` for member locks it will not
/// get. A daemon still closing after `umount` may not have removed its
/// record yet, but its mount is gone from the mount table: that case waits
/// for the locks as it should.
fn refuse_if_mounted(members: &[std::path::PathBuf]) -> Result<()> {
    let Some(sb) = members
        .iter()
        .find_map(|m| raid_array::assemble::read_superblock(m).ok())
    else {
        return Ok(());
    };
    let uuid = raid_array::format::superblock::uuid_string(&sb.array_uuid);
    let fuse_mounts: Vec<std::path::PathBuf> = crate::spec::mounts()
        .unwrap_or_default()
        .into_iter()
        .filter(|(_, fstype)| fstype.starts_with("fuse"))
        .map(|(m, _)| m)
        .collect();
    if let Some(r) = crate::control::client::live_arrays()
        .into_iter()
        .find(|r| r.uuid == uuid && fuse_mounts.contains(&r.mountpoint))
    {
        anyhow::bail!(
            "array {} is already mounted on {} (daemon pid {})",
            r.name,
            r.mountpoint.display(),
            r.pid
        );
    }
    Ok(())
}

/// What to tell the user who mounts a degraded array, which otherwise
/// starts without a word: which members are out, how much redundancy is
/// left, and how a member absent at mount rejoins.
fn degraded_warning(st: &raid_array::Status, o: &MountOptions) -> Option<String> {
    if !st.degraded {
        return None;
    }
    let out: Vec<String> = st
        .members
        .iter()
        .filter(|m| m.state != raid_array::health::MemberState::Active)
        .map(|m| format!("{} ({})", m.index, crate::cli::status::state_name(m.state)))
        .collect();
    let left = st.failures_left.unwrap_or(0);
    let mut msg = format!(
        "array {} started DEGRADED: member(s) {} unavailable; it survives {left} more failure(s)",
        st.name,
        out.join(", ")
    );
    if st.rebuild.is_some() {
        msg.push_str("; a rebuild is running (raidfs status)");
    } else if o.readd && !o.read_only {
        msg.push_str(
            ". A member that was missing is now recorded as failed; this mount (`readd`) re-adds \
             it by itself once its disk is back, rebuilding only the files changed meanwhile",
        );
    } else if !o.read_only {
        msg.push_str(&format!(
            ". A member that was missing is now recorded as failed. When its disk is back, \
             `raidfs replace {} SLOT DIR` with its own directory re-adds it, rebuilding only \
             the files changed meanwhile; a new empty DIR (or a hot spare) is rebuilt whole",
            st.name
        ));
    }
    Some(msg)
}

/// Mount and serve until unmounted (by `umount`, `fusermount3 -u`, SIGTERM
/// or SIGINT). `ready` is called once the kernel accepted the mount.
pub fn serve(req: &MountRequest, ready: impl FnOnce(&Result<()>)) -> Result<()> {
    let array = match assemble(req) {
        Ok(a) => Arc::new(a),
        Err(e) => {
            let r = Err(e);
            ready(&r);
            return r;
        }
    };
    if let Some(msg) = degraded_warning(&array.status(), &req.options) {
        crate::daemon::warn(&msg);
    }
    let notifier = Arc::new(std::sync::OnceLock::new());
    let fs = RaidFs::new(
        Arc::clone(&array),
        req.options.read_only,
        std::time::Duration::from_secs(req.options.cache_timeout_secs),
        Arc::clone(&notifier),
    );
    let name = array.status().name;
    let config = fuse_config(req, &name);
    let opened = open_session(fs, req, &name, &config);
    let (session, mut unmounter) = match opened {
        Ok(s) => {
            let _ = notifier.set(s.0.notifier());
            s
        }
        Err(e) => {
            let r = Err(anyhow::Error::new(e)
                .context(format!("cannot mount on {}", req.mountpoint.display())));
            ready(&r);
            close(array);
            return r;
        }
    };
    info!(mountpoint = %req.mountpoint.display(), source = %req.source, "mounted");
    if req.options.readahead_kib > 0 {
        let kib = req.options.readahead_kib;
        match crate::readahead::apply(&req.mountpoint, kib) {
            Ok(()) => debug!(kib, "kernel read-ahead set"),
            Err(e) => warn!(error = %e, kib, "cannot set the kernel's read-ahead; keeping 128 KiB"),
        }
    }
    let control = start_control(&array, &req.mountpoint);
    ready(&Ok(()));

    let mountpoint = req.mountpoint.clone();
    let on_error = unmounter.for_cleanup();
    std::thread::spawn(move || {
        let Ok(mut signals) = signal_hook::iterator::Signals::new([
            signal_hook::consts::SIGTERM,
            signal_hook::consts::SIGINT,
        ]) else {
            warn!("cannot install signal handlers; unmount with umount or fusermount3 -u");
            return;
        };
        if let Some(sig) = signals.forever().next() {
            info!(signal = sig, mountpoint = %mountpoint.display(), "unmounting on signal");
            if let Err(e) = unmounter.unmount() {
                warn!(error = %e, "unmount on signal failed");
            }
        }
    });

    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let flusher = {
        let array = Arc::clone(&array);
        std::thread::spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(COMMIT_INTERVAL)
            {
                if let Err(e) = array.sync_metadata() {
                    warn!(error = %e, "periodic metadata commit failed");
                }
                // Files left alone for a few seconds are synced and leave
                // the write-intent log (what a resync after a crash checks).
                if let Err(e) = array.settle_data() {
                    warn!(error = %e, "periodic data sync failed");
                }
            }
        })
    };

    let (notifier, metrics) = start_monitoring(req, &array);
    // After the monitoring starts, so that `notify=` and the metrics see it.
    let readd = (req.options.readd && !req.options.read_only)
        .then(|| {
            crate::readd::Watcher::start(&array, req)
                .inspect_err(
                    |e| warn!(error = %e, "cannot start watching for members that are back"),
                )
                .ok()
        })
        .flatten();
    let served = session.run().context("FUSE session failed");
    // Normally the kernel ended the session by unmounting; if not (an
    // error, an aborted connection), a dead mount is not left behind.
    on_error.cleanup();
    // These hold the array: stopped before it is closed.
    if let Some(w) = readd {
        w.stop();
    }
    if let Some(m) = metrics {
        m.stop();
    }
    if let Some(n) = notifier {
        n.stop();
    }
    if let Some(c) = control {
        c.stop();
    }
    drop(stop);
    let _ = flusher.join();
    close(array);
    info!("unmounted; array closed clean");
    served
}

/// How the mount is undone on SIGTERM, by whoever made it.
enum Unmounter {
    /// Mounted by `mount(2)` here; the mount's device, once known.
    Kernel(PathBuf, Option<String>),
    /// Mounted by fuser (through `fusermount3`).
    Fuser(fuser::SessionUnmounter),
}

impl Unmounter {
    fn unmount(&mut self) -> std::io::Result<()> {
        match self {
            Unmounter::Kernel(mp, _) => crate::kernel_mount::unmount(mp, false),
            Unmounter::Fuser(u) => u.unmount(),
        }
    }

    /// What to detach if the session ends while the mount is still there
    /// (fuser's own mount cleans up after itself; without its device, a
    /// mount cannot be told from one made there since).
    fn for_cleanup(&self) -> Cleanup {
        match self {
            Unmounter::Kernel(mp, Some(dev)) => Cleanup(Some((mp.clone(), dev.clone()))),
            Unmounter::Kernel(_, None) | Unmounter::Fuser(_) => Cleanup(None),
        }
    }
}

/// A mount to detach when the session ends without the kernel having
/// unmounted it: only while the last mount there is still this one (its
/// device), never one made there since.
struct Cleanup(Option<(PathBuf, String)>);

impl Cleanup {
    fn cleanup(self) {
        let Some((mp, dev)) = self.0 else { return };
        if crate::kernel_mount::device(&mp).as_ref() != Some(&dev) {
            return;
        }
        warn!(mountpoint = %mp.display(), "the session ended with the mount still in place; detaching it");
        detach(&mp);
    }
}

/// Detach the mount on `mp` (lazily: files may still be open on it).
fn detach(mp: &Path) {
    if let Err(e) = crate::kernel_mount::unmount(mp, true) {
        warn!(error = %e, mountpoint = %mp.display(), "cannot detach the mount");
    }
}

/// Mount and start the FUSE session: by `mount(2)` with the type
/// `fuse.raidfs` where allowed (root), else through fuser and
/// `fusermount3` ([`crate::kernel_mount`]).
fn open_session(
    fs: RaidFs,
    req: &MountRequest,
    name: &str,
    config: &Config,
) -> std::io::Result<(fuser::Session<RaidFs>, Unmounter)> {
    let km = crate::kernel_mount::KernelMount {
        source: name,
        mountpoint: &req.mountpoint,
        read_only: req.options.read_only,
        allow_other: config.acl != SessionACL::Owner,
        noexec: req.options.noexec,
        nosymfollow: req.options.nosymfollow,
        synchronous: req.options.synchronous,
    };
    match km.mount()? {
        crate::kernel_mount::Outcome::Mounted(fd) => {
            match fuser::Session::from_fd(fs, fd, config.acl, config.clone()) {
                Ok(s) => {
                    let dev = crate::kernel_mount::device(&req.mountpoint);
                    Ok((s, Unmounter::Kernel(req.mountpoint.clone(), dev)))
                }
                Err(e) => {
                    // Mounted, but no session serves it.
                    detach(&req.mountpoint);
                    Err(e)
                }
            }
        }
        crate::kernel_mount::Outcome::NotPermitted => {
            let mut s = fuser::Session::new(fs, &req.mountpoint, config)?;
            let u = s.unmount_callable();
            Ok((s, Unmounter::Fuser(u)))
        }
    }
}

/// Start the event notifier (always: it logs every health event, and runs
/// the `notify=` program if one is set) and the `metrics=` textfile writer.
/// Neither failing stops the mount; both are logged.
fn start_monitoring(
    req: &MountRequest,
    array: &Arc<Array>,
) -> (
    Option<crate::notify::Notifier>,
    Option<crate::metrics::MetricsWriter>,
) {
    let cfg = crate::notify::NotifyConfig {
        program: req.options.notify_cmd.as_ref().map(PathBuf::from),
        array: array.status().name,
        mountpoint: req.mountpoint.clone(),
    };
    let notifier = crate::notify::Notifier::start(array, cfg)
        .inspect_err(|e| warn!(error = %e, "cannot start the event notifier"))
        .ok();
    let metrics = req.options.metrics_file.as_ref().and_then(|p| {
        crate::metrics::MetricsWriter::start(array, PathBuf::from(p))
            .inspect_err(|e| warn!(error = %format!("{e:#}"), "metrics file disabled"))
            .ok()
    });
    (notifier, metrics)
}

fn close(array: Arc<Array>) {
    match Arc::try_unwrap(array) {
        Ok(a) => {
            if let Err(e) = a.close() {
                warn!(error = %e, "closing the array failed; it will be resynced at next assembly");
            }
        }
        Err(a) => {
            if let Err(e) = a.sync_metadata() {
                warn!(error = %e, "flushing metadata failed");
            }
            warn!(
                "array still referenced at exit; left dirty, it will be resynced at next assembly"
            );
        }
    }
}

/// The admin commands reach a live array through its control socket. A
/// mount without one still serves files, so a failure is logged, not fatal.
fn start_control(array: &Arc<Array>, mountpoint: &Path) -> Option<crate::control::server::Server> {
    match crate::control::server::Server::start(Arc::clone(array), mountpoint) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!(
                error = %format!("{e:#}"),
                "no control socket: raidfs status, scrub and replace cannot reach this mount"
            );
            None
        }
    }
}
