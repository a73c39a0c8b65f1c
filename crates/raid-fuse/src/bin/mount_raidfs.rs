//! `mount.raidfs` — mount a raidfs array (the mount(8) helper).
//!
//! ```text
//! mount.raidfs SPEC DIR [-sfnv] [-o OPTIONS]   SPEC: /mnt/d1:/mnt/d2:… | NAME | UUID
//! mount.raidfs DIR                             SPEC and options from /etc/fstab
//! ```
//! It returns once the filesystem is mounted (or failed to), leaving a
//! daemon serving it; `--foreground` keeps it in the foreground. The
//! short flags are mount(8)'s (`-f` fakes the mount), and so are the exit
//! codes: 1 for a wrong invocation, 32 for a mount that failed.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Parser;
use raid_fuse::daemon;
use raid_fuse::fstab;
use raid_fuse::mount::{self, MountRequest};
use raid_fuse::options::MountOptions;
use raid_fuse::spec;

#[derive(Parser, Debug)]
#[command(
    name = "mount.raidfs",
    version,
    about = "Mount a raidfs array",
    disable_help_subcommand = true
)]
struct Args {
    /// SPEC and DIR, or only DIR to take SPEC and options from /etc/fstab.
    #[arg(required = true, num_args = 1..=2, value_name = "SPEC DIR")]
    positional: Vec<String>,
    /// Mount options, comma-separated (may be repeated).
    #[arg(short = 'o', value_name = "OPTIONS")]
    options: Vec<String>,
    /// Fake: check the options, the mount point and the members, and mount
    /// nothing (`mount -f`).
    #[arg(short = 'f')]
    fake: bool,
    /// Stay in the foreground (also `-o foreground`).
    #[arg(long = "foreground")]
    foreground: bool,
    /// Verbose logging.
    #[arg(short = 'v')]
    verbose: bool,
    /// Program run on member failures, rebuilds and scrub errors, like
    /// `mdadm --monitor --program` (same as `-o notify=PROGRAM`).
    #[arg(long = "notify-cmd", value_name = "PROGRAM")]
    notify_cmd: Option<String>,
    /// Sloppy: unknown options are skipped with a warning (`mount -s`).
    #[arg(short = 's', hide = true)]
    sloppy: bool,
    /// No mtab (`mount -n`): nothing to do, there is no /etc/mtab to write.
    #[arg(short = 'n', hide = true)]
    no_mtab: bool,
    /// A mount namespace to mount in (`mount -N`): refused.
    #[arg(short = 'N', hide = true)]
    namespace: Option<String>,
    /// Filesystem type as passed by mount(8); ignored.
    #[arg(short = 't', hide = true)]
    fstype: Option<String>,
}

fn fstab_path() -> PathBuf {
    std::env::var_os("RAIDFS_FSTAB")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/etc/fstab"))
}

fn request(args: &Args) -> Result<MountRequest> {
    if let Some(ns) = &args.namespace {
        bail!("-N {ns}: mounting in another mount namespace is not supported");
    }
    let mut options = MountOptions::default();
    let (source, dir) = match args.positional.as_slice() {
        [dir] => {
            let path = fstab_path();
            let entry = fstab::find(&path, std::path::Path::new(dir))
                .with_context(|| format!("reading {}", path.display()))?
                .with_context(|| {
                    format!(
                        "{dir}: no raidfs line for this mount point in {}",
                        path.display()
                    )
                })?;
            options.parse(&entry.options, args.sloppy)?;
            (entry.spec, dir.clone())
        }
        [spec, dir] => (spec.clone(), dir.clone()),
        _ => bail!("usage: mount.raidfs SPEC DIR [-o OPTIONS]"),
    };
    for o in &args.options {
        options.parse(o, args.sloppy)?;
    }
    options.foreground |= args.foreground;
    if let Some(cmd) = &args.notify_cmd {
        if cmd.is_empty() {
            bail!("--notify-cmd: the program must not be empty");
        }
        options.notify_cmd = Some(cmd.clone());
    }
    let mountpoint = PathBuf::from(&dir);
    mount::preflight(&mountpoint)?;
    let parsed = spec::parse(&source)?;
    let members = spec::resolve(&parsed, &options.candidates)?;
    let mountpoint = mountpoint
        .canonicalize()
        .with_context(|| format!("mount point {dir}"))?;
    Ok(MountRequest {
        source,
        members,
        mountpoint,
        options,
    })
}

fn init_logging(verbose: bool, daemon_child: bool) {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        // fuser warns at every normal `umount` that it could not unmount
        // what the kernel had already unmounted: not worth a journal line.
        tracing_subscriber::EnvFilter::new(if verbose {
            "debug"
        } else {
            "info,fuser::session=error"
        })
    });
    let journald = daemon_child && std::path::Path::new("/run/systemd/journal/socket").exists();
    let registry = tracing_subscriber::registry().with(filter);
    if journald && let Ok(layer) = tracing_journald::layer() {
        registry
            .with(layer.with_syslog_identifier("raidfs".into()))
            .init();
        return;
    }
    registry
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                // Colours only for a terminal, not in log files.
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .init();
}

/// mount(8)'s exit codes: a wrong invocation, and a mount that failed.
const EX_USAGE: u8 = 1;
const EX_FAIL: u8 = 32;

/// What a fake mount can check of the members without assembling: each
/// directory exists and holds a raidfs superblock, all of one array. A
/// member whose superblock cannot be read (a dying disk) is only warned
/// about: a real mount runs without it when the array can.
fn check_members(members: &[PathBuf]) -> Result<()> {
    let mut array: Option<(PathBuf, [u8; 16])> = None;
    for m in members {
        if !m.is_dir() {
            bail!("member {}: no such directory", m.display());
        }
        let sb = match raid_array::assemble::read_superblock(m) {
            Ok(sb) => sb,
            Err(e) if m.join(raid_array::format::superblock::PATH).exists() => {
                tracing::warn!(member = %m.display(), error = %e, "member not readable");
                continue;
            }
            Err(e) => return Err(e).context(format!("member {}", m.display())),
        };
        match &array {
            Some((first, uuid)) if *uuid != sb.array_uuid => bail!(
                "{} and {} are members of different arrays",
                first.display(),
                m.display()
            ),
            Some(_) => {}
            None => array = Some((m.clone(), sb.array_uuid)),
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) if e.use_stderr() => {
            let _ = e.print();
            return ExitCode::from(EX_USAGE);
        }
        // --help, --version
        Err(e) => e.exit(),
    };
    let daemon_child = std::env::var_os(daemon::READY_ENV).is_some();
    init_logging(args.verbose, daemon_child);
    let req = match request(&args) {
        Ok(r) => r,
        Err(e) => {
            let r = Err(e);
            daemon::report(&r);
            if let Err(e) = r {
                eprintln!("mount.raidfs: {e:#}");
            }
            return ExitCode::from(EX_FAIL);
        }
    };
    if args.fake {
        if let Err(e) = check_members(&req.members) {
            eprintln!("mount.raidfs: {e:#}");
            return ExitCode::from(EX_FAIL);
        }
        // Said even without -v: a caller that still means "foreground" by
        // -f must see that nothing was mounted.
        eprintln!(
            "mount.raidfs: -f: fake mount, nothing mounted (would mount {} with {} members on {}; \
             --foreground keeps a real mount in the foreground)",
            req.source,
            req.members.len(),
            req.mountpoint.display()
        );
        return ExitCode::SUCCESS;
    }
    if !req.options.foreground {
        let forward: Vec<OsString> = std::env::args_os().skip(1).collect();
        let log = req.options.log_file.as_ref().map(PathBuf::from);
        return match daemon::spawn_and_wait(&forward, log.as_deref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("mount.raidfs: {e:#}");
                ExitCode::from(EX_FAIL)
            }
        };
    }
    if daemon_child {
        daemon::detach();
    }
    match mount::serve(&req, daemon::report) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if !daemon_child {
                eprintln!("mount.raidfs: {e:#}");
            }
            tracing::error!("{e:#}");
            ExitCode::from(EX_FAIL)
        }
    }
}
