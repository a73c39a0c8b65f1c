//! `raidfs scrub`: verify every checksum and parity of an array (and with
//! `--repair` rewrite what is wrong), like `snapraid check`/`scrub`.
//!
//! On a mounted array the daemon runs the scrub; this command only shows
//! its progress, so Ctrl-C here stops watching, not scrubbing
//! (`raidfs scrub --cancel` stops it; the next scrub resumes from the
//! checkpoint). On an array that is not mounted, the scrub runs here.
//!
//! Exit code: 0 clean, 1 mismatches found (even if repaired), 2 the scrub
//! could not run or did not finish.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use raid_array::ops::{Progress, ScrubOptions};

use super::progress::WorkBar;
use super::status::{self, Source};
use super::target::{self, Exit};
use crate::control::client::Connection;
use crate::control::protocol::{Request, Response, ScrubResult};

/// Arguments of `raidfs scrub`.
#[derive(clap::Args, Debug)]
pub struct ScrubArgs {
    /// The array: name, UUID, mount point, or member directories
    /// (`/d1:/d2:/d3`).
    pub target: String,
    /// Rewrite bad blocks and inconsistent parity from the good copies.
    #[arg(long)]
    pub repair: bool,
    /// Limit member reads to this many MB/s.
    #[arg(long, value_name = "MB/s", value_parser = target::parse_rate)]
    pub throttle: Option<u64>,
    /// Stop the scrub running on the mounted array (it resumes next time).
    #[arg(long, conflicts_with_all = ["repair", "throttle"])]
    pub cancel: bool,
    /// Print the final report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Progress of an offline scrub, and Ctrl-C as a request to stop cleanly.
struct Local {
    bar: WorkBar,
    stop: Arc<AtomicBool>,
}

impl Progress for Local {
    fn update(&self, done: u64, total: u64) {
        self.bar.update(done, total);
    }
    fn should_stop(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

fn error2(e: anyhow::Error) -> anyhow::Error {
    let message = format!("{e:#}");
    anyhow::Error::new(Exit { code: 2, message })
}

pub fn run(args: &ScrubArgs) -> Result<()> {
    let source = target::resolve(&args.target).map_err(error2)?;
    let result = match source {
        Source::Live(rec) if args.cancel => {
            let msg = target::call(&rec, &Request::ScrubCancel).map_err(error2)?;
            println!("{msg}");
            return Ok(());
        }
        Source::Offline(_) if args.cancel => {
            return Err(error2(anyhow::anyhow!(
                "{} is not mounted: no scrub runs in a daemon to cancel",
                args.target
            )));
        }
        Source::Live(rec) => live(&rec, args).map_err(error2)?,
        Source::Offline(members) => status::all_members(&members, None)
            .and_then(|(members, _)| offline(&members, args))
            .map_err(error2)?,
    };
    report(&result, args.json)?;
    if args.repair && !result.repair {
        eprintln!(
            "raidfs: the scrub followed was a check only: nothing was repaired; run \
             `raidfs scrub --repair` again once it has ended"
        );
    }
    if !result.complete {
        return Err(Exit {
            code: 2,
            message: "the scrub stopped before the end (cancelled or unmounted); \
                      the next scrub resumes where it stopped"
                .into(),
        }
        .into());
    }
    if result.found_problems() {
        return Err(Exit {
            code: 1,
            message: if result.repair && result.unrecoverable > 0 {
                format!(
                    "mismatches found; {} block(s) could not be repaired (no good copy left): \
                     they read as I/O errors; restore the files that hold them from a backup",
                    result.unrecoverable
                )
            } else if result.repair {
                "mismatches found and repaired (see above)".into()
            } else {
                "mismatches found: run `raidfs scrub --repair` to fix them".into()
            },
        }
        .into());
    }
    Ok(())
}

fn live(rec: &crate::control::record::Record, args: &ScrubArgs) -> Result<ScrubResult> {
    let mut conn = Connection::open(
        rec,
        &Request::Scrub {
            repair: args.repair,
            throttle_bytes_per_sec: args.throttle.unwrap_or(0),
        },
    )?;
    let pb = WorkBar::new("scrub");
    loop {
        match conn.receive()? {
            Response::Progress { done, total } => {
                pb.update(done, total);
            }
            Response::Note { message } => pb.println(message),
            Response::ScrubDone { result } => {
                pb.finish();
                return Ok(result);
            }
            Response::Error { message } => {
                pb.abandon();
                anyhow::bail!("{message}");
            }
            other => anyhow::bail!("unexpected answer from the daemon: {other:?}"),
        }
    }
}

fn offline(members: &[std::path::PathBuf], args: &ScrubArgs) -> Result<ScrubResult> {
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&stop))
        .context("installing the Ctrl-C handler")?;
    let array = target::assemble_offline(members)?;
    let progress = Local {
        bar: WorkBar::new("scrub"),
        stop,
    };
    let opts = ScrubOptions {
        repair: args.repair,
        throttle_bytes_per_sec: args.throttle.unwrap_or(0),
        resume: true,
    };
    let r = array.scrub(opts, &progress);
    progress.bar.finish();
    target::close(array)?;
    let rep = r.context("scrub failed")?;
    let s = raid_array::ScrubSummary::of(&rep, args.repair);
    Ok(ScrubResult {
        repair: args.repair,
        complete: rep.complete,
        files: rep.files,
        bytes: rep.bytes,
        mismatches: rep.mismatches,
        redundancy_mismatches: rep.redundancy_mismatches,
        repaired: rep.repaired,
        unrecoverable: rep.unrecoverable,
        finished_unix: s.finished_unix,
    })
}

fn report(r: &ScrubResult, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(r)?);
        return Ok(());
    }
    println!(
        "scrub{} {}: {} files, {} checked",
        if r.repair { " --repair" } else { "" },
        if r.complete { "finished" } else { "stopped" },
        r.files,
        super::status::human_bytes(r.bytes)
    );
    println!("  checksum mismatches:  {}", r.mismatches);
    println!("  parity mismatches:    {}", r.redundancy_mismatches);
    println!("  repaired:             {}", r.repaired);
    println!("  unrecoverable blocks: {}", r.unrecoverable);
    if r.unrecoverable > 0 {
        println!("  (unrecoverable blocks read as I/O errors; restore those files from a backup)");
    }
    Ok(())
}
