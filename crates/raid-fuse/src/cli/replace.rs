//! `raidfs replace`: put an empty directory in place of a failed or missing
//! member and rebuild onto it, like `mdadm --replace`/`--add`; given the
//! directory of the member that left the slot, it re-adds it (`mdadm
//! --re-add` with a bitmap): its data is kept and only the files changed
//! since it left are rebuilt, unless `--full`.
//!
//! On a mounted array the daemon's engine rebuilds in the background (it
//! resumes after a remount or reboot); this command follows the progress
//! until the member is active, unless `--no-wait`. Ctrl-C stops watching,
//! not rebuilding. On an array that is not mounted the rebuild runs here.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use raid_array::ops::{Progress, RebuildOptions};

use super::progress::WorkBar;
use super::status::{self, Source};
use super::target::{self, Exit};
use crate::control::protocol::Request;
use crate::control::record::Record;

/// Arguments of `raidfs replace`.
#[derive(clap::Args, Debug)]
pub struct ReplaceArgs {
    /// The array: name, UUID, mount point, or member directories
    /// (`/d1:/d2:/d3`).
    pub target: String,
    /// The member to replace: its slot number or its directory.
    pub member: String,
    /// The empty directory that becomes the new member, or the directory of
    /// the member that left the slot (re-added).
    pub new_dir: PathBuf,
    /// Limit rebuild writes to this many MB/s.
    #[arg(long, value_name = "MB/s", value_parser = target::parse_rate)]
    pub throttle: Option<u64>,
    /// Return once the rebuild started (follow it with `raidfs status`).
    #[arg(long)]
    pub no_wait: bool,
    /// Allow the new member on the filesystem of another member (no
    /// redundancy between the two).
    #[arg(long)]
    pub allow_same_fs: bool,
    /// Rebuild a member that comes back whole, discarding its data, rather
    /// than re-adding it with only the files changed since it left.
    #[arg(long)]
    pub full: bool,
}

/// How often the rebuild's progress is asked for.
const POLL: Duration = Duration::from_millis(500);

struct Local(WorkBar);

impl Progress for Local {
    fn update(&self, done: u64, total: u64) {
        self.0.update(done, total);
    }
}

pub fn run(args: &ReplaceArgs) -> Result<()> {
    let new_dir = target::absolute(&args.new_dir)?;
    let throttle = args.throttle.unwrap_or(0);
    match target::resolve(&args.target)? {
        Source::Live(rec) => {
            let st = status::live(&rec)?;
            let k = target::slot(&st, &args.member)?;
            target::check_own_filesystem(&st, Some(k), &new_dir, args.allow_same_fs)?;
            let msg = target::call(
                &rec,
                &Request::Replace {
                    slot: k,
                    path: new_dir,
                    throttle_bytes_per_sec: throttle,
                    full: args.full,
                },
            )?;
            println!("{msg}");
            if args.no_wait {
                return Ok(());
            }
            follow(
                &rec,
                k,
                if msg.starts_with("re-adding") {
                    "re-add"
                } else {
                    "rebuild"
                },
            )
        }
        Source::Offline(members) => {
            let (members, st) = status::all_members(&members, Some(&args.member))?;
            let k = target::slot(&st, &args.member)?;
            target::check_own_filesystem(&st, Some(k), &new_dir, args.allow_same_fs)?;
            let array = target::assemble_offline(&members)?;
            // A rebuild left unfinished (this slot's, when the command is
            // run again to resume it) or a spare's takeover resumed at
            // assembly: it runs to its end first.
            if let Some(bg) = target::finish_background_rebuild(&array) {
                println!("{}", target::describe_background(&bg));
                let now = array.status();
                let healed = now
                    .members
                    .get(k)
                    .filter(|m| bg.slot == k && m.state == raid_array::health::MemberState::Active);
                if let Some(m) = healed {
                    let onto = m.path.clone();
                    target::close(array)?;
                    let same = onto
                        .as_deref()
                        .is_some_and(|p| target::same_dir(std::path::Path::new(p), &new_dir));
                    if !same {
                        bail!(
                            "member {k} is active again, rebuilt onto {} by the rebuild resumed \
                             first; nothing was replaced (run the command again to move it to {})",
                            onto.unwrap_or_else(|| "?".into()),
                            new_dir.display()
                        );
                    }
                    let lost = match &bg.result {
                        Ok(rep) => rep.unrecoverable,
                        Err(_) => 0,
                    };
                    return lost_blocks(k, lost);
                }
            }
            let pb = Local(WorkBar::new("rebuild"));
            let r = array.replace(
                k,
                &new_dir,
                RebuildOptions {
                    throttle_bytes_per_sec: throttle,
                    resume: true,
                    full: args.full,
                },
                &pb,
            );
            pb.0.finish();
            target::close(array)?;
            let rep = r.context("rebuild failed")?;
            if !rep.complete {
                bail!("the rebuild stopped early; run the same command again to resume");
            }
            if rep.readd {
                println!(
                    "member {k} re-added from {}: {} files changed since it left rebuilt \
                     ({} bytes written), {} kept as they were, {} deleted files' data removed, \
                     {} unrecoverable blocks",
                    new_dir.display(),
                    rep.files,
                    rep.bytes,
                    rep.kept_files,
                    rep.removed_files,
                    rep.unrecoverable
                );
            } else {
                println!(
                    "member {k} rebuilt onto {}: {} bytes written, {} unrecoverable blocks",
                    new_dir.display(),
                    rep.bytes,
                    rep.unrecoverable
                );
            }
            lost_blocks(k, rep.unrecoverable)
        }
    }
}

/// The end of a replace whose member is now active: an error (exit 2, as
/// `raidfs extract` for unreadable blocks) when blocks could not be
/// rebuilt, since they are lost and the files holding them read EIO.
fn lost_blocks(slot: usize, lost: u64) -> Result<()> {
    if lost == 0 {
        return Ok(());
    }
    Err(Exit {
        code: 2,
        message: format!(
            "{lost} block(s) of member {slot} could not be rebuilt (no good copy on the other \
             members): they read as I/O errors; restore the files that hold them from a backup"
        ),
    }
    .into())
}

/// Show the daemon's rebuild (or re-add, `what`) of `slot` until it ends;
/// an error unless the member ends up active.
pub fn follow(rec: &Record, slot: usize, what: &'static str) -> Result<()> {
    let pb = WorkBar::new(what);
    let start = Instant::now();
    loop {
        let st = status::live(rec).context("following the rebuild")?;
        let state = st
            .members
            .get(slot)
            .map(|m| m.state.clone())
            .unwrap_or_default();
        match &st.rebuild {
            Some(r) if r.slot == slot => {
                pb.update(r.done_bytes, r.total_bytes.unwrap_or(0));
            }
            _ if state == "active" => {
                pb.finish();
                // A daemon that predates `last_rebuild` cannot say: none lost.
                let lost = st
                    .members
                    .get(slot)
                    .and_then(|m| m.last_rebuild)
                    .map_or(0, |r| r.unrecoverable);
                println!(
                    "member {slot} is active: {what} finished in {:.0?}, {lost} unrecoverable blocks",
                    start.elapsed()
                );
                return lost_blocks(slot, lost);
            }
            // Between the request and the worker's first report.
            _ if state == "rebuilding" => {}
            _ => {
                pb.abandon();
                bail!(
                    "the {what} of member {slot} ended with the member {state}; \
                     see the mount daemon's log (journalctl -t raidfs, or journalctl -u \
                     raidfs@NAME for a mount run by systemd)"
                );
            }
        }
        std::thread::sleep(POLL);
    }
}
