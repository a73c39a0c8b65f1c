//! `raidfs` — create and administer raidfs arrays.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use raid_fuse::cli;

#[derive(Parser, Debug)]
#[command(
    name = "raidfs",
    version,
    about = "Create and administer raidfs arrays"
)]
struct Cli {
    /// Verbose logging.
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create an array on empty member directories.
    Create(cli::create::CreateArgs),
    /// Show an array's level, members and state (like mdadm --detail);
    /// every mounted array without arguments (like /proc/mdstat).
    Status(cli::status::StatusArgs),
    /// Verify every checksum and parity; --repair fixes what it finds
    /// (exit 0 clean, 1 mismatches found, 2 error).
    Scrub(cli::scrub::ScrubArgs),
    /// Rebuild a failed or missing member onto an empty directory.
    Replace(cli::replace::ReplaceArgs),
    /// Add an empty directory as a hot spare.
    AddSpare(cli::add_spare::AddSpareArgs),
    /// Take a hot spare out of the array.
    RemoveSpare(cli::remove_spare::RemoveSpareArgs),
    /// Mark an active member failed (a drill, like mdadm --fail).
    Fail(cli::fail::FailArgs),
    /// Detach a failed or missing member (like mdadm --remove).
    Remove(cli::remove::RemoveArgs),
    /// Print on-disk records (superblock, journal, an inode) for support;
    /// only reads.
    #[command(subcommand_required = true)]
    Debug(cli::debug::DebugArgs),
    /// Copy the files out of the member directories without mounting (read-only
    /// assembly; the last resort when the array will not mount).
    Extract(cli::extract::ExtractArgs),
    /// Check the parity kernels against the reference implementation and
    /// name the one in use.
    Selftest,
}

fn run(cli: &Cli) -> Result<()> {
    match &cli.command {
        Command::Create(a) => cli::create::run(a),
        Command::Status(a) => cli::status::run(a),
        Command::Scrub(a) => cli::scrub::run(a),
        Command::Replace(a) => cli::replace::run(a),
        Command::AddSpare(a) => cli::add_spare::run(a),
        Command::RemoveSpare(a) => cli::remove_spare::run(a),
        Command::Fail(a) => cli::fail::run(a),
        Command::Remove(a) => cli::remove::run(a),
        Command::Debug(a) => cli::debug::run(a),
        Command::Extract(a) => cli::extract::run(a),
        Command::Selftest => {
            for k in raid_core::kernels::available() {
                match raid_core::selftest::check_kernel(k) {
                    Ok(()) => println!("{:<10} ok", k.name),
                    Err(e) => println!("{:<10} FAILED: {e}", k.name),
                }
            }
            let active = raid_core::selftest::run().map_err(anyhow::Error::msg)?;
            match std::env::var("RAIDFS_KERNEL") {
                Ok(forced) if forced != active => println!(
                    "in use: {active} (RAIDFS_KERNEL={forced} ignored: not a kernel this CPU can run)"
                ),
                Ok(_) => println!("in use: {active} (forced by RAIDFS_KERNEL)"),
                Err(_) => println!("in use: {active}"),
            }
            Ok(())
        }
    }
}

/// A pipe closed by its reader (`raidfs debug … | less`, quit early) ends
/// the command quietly, as it does other Unix tools, rather than in a panic
/// of `println!`: Rust starts programs with SIGPIPE ignored. The control
/// socket is written with `MSG_NOSIGNAL`, so a daemon that hangs up is
/// still an error message, not a silent death.
fn default_sigpipe() {
    // SAFETY: called in `main` before any other thread exists;
    // SIG_DFL installs no handler, only the default disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Only for commands that just print: one that runs the array itself
    // (an offline scrub or rebuild) must not die mid-run with its output's
    // reader, and a println! panic unwinds and closes the array cleanly.
    if matches!(
        cli.command,
        Command::Status(_) | Command::Debug(_) | Command::Selftest
    ) {
        default_sigpipe();
    }
    let filter = if cli.verbose { "debug" } else { "warn" };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| filter.into()),
        )
        .with_writer(std::io::stderr)
        // Colours only for a terminal, not in files and pipes.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("raidfs: {e:#}");
            ExitCode::from(cli::target::exit_code(&e))
        }
    }
}
