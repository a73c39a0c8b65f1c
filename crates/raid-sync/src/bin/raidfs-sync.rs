//! `raidfs-sync`: mirror a directory tree to S3 continuously, with history,
//! point-in-time restore and verification. See docs/SYNC.md.
//!
//! Exit codes: 0 success; 1 the run completed but something is not in sync
//! (failed files, verify differences, items a restore left out or could not
//! restore); 2 the run could not be done (bad arguments, unreachable bucket,
//! refused restore).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use raid_sync::crypt::Key;
use raid_sync::keys::KeyPrefix;
use raid_sync::keysource::{self, KeySource};
use raid_sync::reconcile::{Pending, Stop, Summary, Syncer, unix_now};
use raid_sync::record::{RecordWriter, SyncState};
use raid_sync::s3::{Bucket, Connection};
use raid_sync::state::StateStore;
use raid_sync::upload::{PutOptions, Uploader};
use raid_sync::{history, lifecycle, metrics, restore, s3, verify, watch};

#[derive(Parser, Debug)]
#[command(
    name = "raidfs-sync",
    version,
    about = "Mirror a directory tree to S3 with history, restore and verify"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    sync: SyncArgs,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Rebuild the tree as it was at a point in time.
    Restore {
        /// Point in time: RFC 3339 (2026-11-20T10:00:00Z), a date, or an age (2h, 3days). Default: latest.
        #[arg(long)]
        at: Option<String>,
        /// Restore only this subtree (relative path inside the mirror).
        #[arg(long)]
        path: Option<String>,
        /// Overwrite existing files in TARGET.
        #[arg(long)]
        force: bool,
        /// Concurrent downloads.
        #[arg(long, default_value_t = 16)]
        jobs: usize,
        /// Directory to restore into.
        target: PathBuf,
    },
    /// List the history of one file (relative path inside the mirror).
    Versions { path: String },
    /// Compare every local file with its object by CRC-32.
    Verify {
        /// Download every object and checksum its content.
        #[arg(long)]
        download: bool,
        /// Concurrent checks.
        #[arg(long, default_value_t = 16)]
        jobs: usize,
        source: PathBuf,
    },
    /// Write lifecycle rules: archive and expire old versions.
    Lifecycle {
        /// Move noncurrent versions to the transition class this long after they were replaced (e.g. 30d).
        #[arg(long, value_parser = humantime::parse_duration)]
        glacier_after: Option<Duration>,
        /// Also move current objects after the same period.
        #[arg(long)]
        current_too: bool,
        /// Storage class for transitions.
        #[arg(long, default_value = "GLACIER")]
        transition_class: String,
        /// Only objects larger than this are transitioned (S3's default is 128 KiB; 0 = all).
        #[arg(long, default_value = "128KiB", value_parser = parse_size)]
        min_transition_size: u64,
        /// Delete noncurrent versions this long after they were replaced (e.g. 365d).
        #[arg(long, value_parser = humantime::parse_duration)]
        expire_noncurrent_after: Option<Duration>,
        /// Only print the bucket's current rules.
        #[arg(long)]
        show: bool,
    },
}

/// Options shared by every command.
#[derive(Args, Debug, Clone)]
struct Common {
    /// Bucket name.
    #[arg(long, global = true, env = "RAIDFS_SYNC_BUCKET")]
    bucket: Option<String>,
    /// Key prefix inside the bucket.
    #[arg(long, global = true, default_value = "")]
    prefix: String,
    /// S3 endpoint (MinIO, Ceph RGW, Garage, …); path-style addressing is used.
    #[arg(long, global = true, env = "AWS_ENDPOINT_URL_S3")]
    endpoint_url: Option<String>,
    /// Region (default: AWS_REGION, else the profile's, else us-east-1).
    #[arg(long, global = true)]
    region: Option<String>,
    /// AWS profile from ~/.aws/config.
    #[arg(long, global = true)]
    profile: Option<String>,
    /// Attempts per request (exponential backoff with jitter between them).
    #[arg(long, global = true, default_value_t = 5)]
    retries: u32,
    /// Print a JSON summary on stdout.
    #[arg(long, global = true)]
    json: bool,
    /// Client-side encryption with this key file (32 raw bytes or 64 hex
    /// digits). Makes the bucket unreadable to other S3 tools; losing the key
    /// loses the backup. See docs/SYNC.md.
    #[arg(long, global = true, conflicts_with = "encrypt_passphrase_file")]
    encrypt_key_file: Option<PathBuf>,
    /// Client-side encryption with a key derived (Argon2id) from the
    /// passphrase in this file; RAIDFS_SYNC_PASSPHRASE in the environment
    /// does the same.
    #[arg(long, global = true)]
    encrypt_passphrase_file: Option<PathBuf>,
}

impl Common {
    /// Where the encryption key comes from, if encryption is on.
    fn key_source(&self) -> Result<Option<KeySource>> {
        if let Some(f) = &self.encrypt_key_file {
            return Ok(Some(KeySource::KeyFile(f.clone())));
        }
        let pass = if let Some(f) = &self.encrypt_passphrase_file {
            let s = std::fs::read_to_string(f)
                .with_context(|| format!("reading passphrase file {}", f.display()))?;
            Some(s)
        } else {
            std::env::var("RAIDFS_SYNC_PASSPHRASE").ok()
        };
        match pass {
            None => Ok(None),
            Some(p) => {
                let p = p.trim_end_matches(['\n', '\r']).to_string();
                if p.is_empty() {
                    bail!("the encryption passphrase is empty");
                }
                Ok(Some(KeySource::Passphrase(p)))
            }
        }
    }

    /// Loads (and with `create`, sets up) the encryption key, if any.
    async fn key(&self, bucket: &Bucket, prefix: &KeyPrefix, create: bool) -> Result<Option<Key>> {
        match self.key_source()? {
            None => Ok(None),
            Some(src) => Ok(Some(
                keysource::load_key(bucket, prefix.as_str(), &src, create).await?,
            )),
        }
    }
}

#[derive(Args, Debug)]
struct SyncArgs {
    /// Directory to mirror.
    source: Option<PathBuf>,
    /// One pass, then exit (no watching).
    #[arg(long)]
    once: bool,
    /// List the bucket and reconcile against it, even if the state is current.
    #[arg(long)]
    full: bool,
    /// State file (default: $STATE_DIRECTORY, $XDG_STATE_HOME/raidfs-sync or ~/.local/state/raidfs-sync).
    #[arg(long)]
    state: Option<PathBuf>,
    /// Concurrent requests.
    #[arg(long, default_value_t = 16)]
    jobs: usize,
    /// Files at least this large are uploaded in parts (smaller ones are
    /// streamed in one PUT; encrypted files go in parts from 16MiB).
    #[arg(long, default_value = "128MiB", value_parser = parse_size)]
    multipart_threshold: u64,
    /// Part size for multipart uploads.
    #[arg(long, default_value = "8MiB", value_parser = parse_size)]
    part_size: u64,
    /// Bandwidth limit in bytes per second (K/M/G suffixes, binary), 0 = none.
    #[arg(long, default_value = "0", value_parser = parse_size)]
    bwlimit: u64,
    /// Storage class for uploads (STANDARD, STANDARD_IA, GLACIER_IR, …).
    #[arg(long)]
    storage_class: Option<String>,
    /// Server-side encryption: AES256 (SSE-S3) or aws:kms (SSE-KMS).
    #[arg(long)]
    sse: Option<String>,
    /// KMS key for --sse aws:kms.
    #[arg(long)]
    sse_kms_key_id: Option<String>,
    /// Quiet time after a change before uploading.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    debounce: Duration,
    /// Cap of the retry delay after failed passes.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    retry_max: Duration,
    /// Create the bucket if it does not exist.
    #[arg(long)]
    create_bucket: bool,
    /// Refuse to run (instead of turning it on) if the bucket is not versioned.
    #[arg(long)]
    no_enable_versioning: bool,
    /// Prometheus textfile to write after every pass.
    #[arg(long)]
    metrics_file: Option<PathBuf>,
    /// Shell command run when a pass fails (RAIDFS_SYNC_EVENT, RAIDFS_SYNC_MESSAGE in its environment).
    #[arg(long)]
    notify_cmd: Option<String>,
    /// Never show a progress bar.
    #[arg(long)]
    no_progress: bool,
    /// On SIGTERM/SIGINT no further file is started; transfers in flight may
    /// go on this long before they are dropped (multipart uploads resume).
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    stop_grace: Duration,
    /// Let a pass over an empty SOURCE delete everything the mirror holds
    /// (refused otherwise: an unmounted array looks empty).
    #[arg(long)]
    allow_empty_source: bool,
    /// Sync without client-side encryption a mirror that was encrypted:
    /// every object is uploaded again in plaintext (old versions stay
    /// encrypted). Without it, a sync of an encrypted mirror with no key is
    /// refused.
    #[arg(long)]
    no_encryption: bool,
}

/// Parses `1024`, `64K`, `8MiB`, `1.5G` (binary multiples).
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("not a size: {s:?}"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(format!("unknown size unit in {s:?}")),
    };
    if n < 0.0 {
        return Err(format!("negative size {s:?}"));
    }
    Ok((n * mult as f64) as u64)
}

/// S3's smallest part (all but the last part of a multipart upload).
const MIN_PART_SIZE: u64 = 5 << 20;

/// The smallest `--part-size` accepted: S3's 5 MiB, unless
/// RAIDFS_SYNC_MIN_PART_SIZE names a lower limit for a server that has one
/// (test servers such as moto with S3_UPLOAD_PART_MIN_SIZE).
fn min_part_size() -> Result<u64> {
    match std::env::var("RAIDFS_SYNC_MIN_PART_SIZE") {
        Ok(v) => parse_size(&v)
            .map_err(anyhow::Error::msg)
            .context("RAIDFS_SYNC_MIN_PART_SIZE")
            .map(|n| n.max(1)),
        Err(_) => Ok(MIN_PART_SIZE),
    }
}

/// A size for messages: whole MiB when it is one, else bytes.
fn size_text(n: u64) -> String {
    if n.is_multiple_of(1 << 20) {
        format!("{}MiB", n >> 20)
    } else {
        format!("{n} bytes")
    }
}

/// A pipe closed by its reader (`raidfs-sync versions F | head`) ends a
/// listing quietly, as it does other Unix tools, rather than in a panic of
/// `println!`: Rust starts programs with SIGPIPE ignored.
fn default_sigpipe() {
    // SAFETY: called in `main` before any other thread exists (the tokio
    // runtime starts after it); SIG_DFL installs no handler, only the
    // default disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Only for the commands that read and list: the daemon and a restore
    // write state and files, and must not die mid-run with their output's
    // reader (the daemon's sockets to S3 need SIGPIPE ignored, too).
    if matches!(cli.cmd, Some(Cmd::Versions { .. } | Cmd::Verify { .. }))
        || matches!(cli.cmd, Some(Cmd::Lifecycle { show: true, .. }))
    {
        default_sigpipe();
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RAIDFS_SYNC_LOG").unwrap_or_else(|_| {
                // The credential chain warns for every source it tries and
                // finds nothing in; a missing key is reported once, plainly.
                tracing_subscriber::EnvFilter::new(
                    "info,aws=warn,aws_smithy_runtime=warn,aws_config::meta::credentials=error,aws_config::imds=error",
                )
            }),
        )
        .with_writer(std::io::stderr)
        // Colours only for a terminal, not in files and pipes.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("raidfs-sync: cannot start: {e}");
            return ExitCode::from(2);
        }
    };
    let code = match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            // Once, on stderr, where the log goes too.
            eprintln!("raidfs-sync: error: {e:#}");
            ExitCode::from(2)
        }
    };
    // A read of a big file abandoned by a stop may still run on a blocking
    // thread: it is not waited for (the state is saved already).
    rt.shutdown_timeout(Duration::from_millis(500));
    code
}

async fn connect(c: &Common) -> Result<(Arc<Bucket>, KeyPrefix)> {
    connect_paced(c, false).await
}

/// [`connect`] for a sync whose uploads are paced by `--bwlimit` (`paced`).
async fn connect_paced(c: &Common, paced: bool) -> Result<(Arc<Bucket>, KeyPrefix)> {
    let name = c
        .bucket
        .clone()
        .context("--bucket is required (or RAIDFS_SYNC_BUCKET)")?;
    let prefix = KeyPrefix::new(&c.prefix)?;
    let conn = Connection {
        endpoint_url: c.endpoint_url.clone(),
        region: c.region.clone(),
        profile: c.profile.clone(),
        max_attempts: c.retries,
        paced_uploads: paced,
    };
    let client = s3::client(&conn).await?;
    Ok((Arc::new(Bucket::new(client, &name)), prefix))
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let common = cli.common;
    match cli.cmd {
        None => sync(common, cli.sync).await,
        Some(Cmd::Restore {
            at,
            path,
            force,
            jobs,
            target,
        }) => {
            let (bucket, prefix) = connect(&common).await?;
            let at_ns = at.as_deref().map(history::parse_time).transpose()?;
            let key = common.key(&bucket, &prefix, false).await?.map(Arc::new);
            let opts = restore::RestoreOptions {
                key,
                at_ns,
                path,
                target: target.clone(),
                force,
                jobs,
                progress: true,
            };
            let mut sum = restore::restore(bucket, &prefix, &opts).await?;
            for r in &sum.refused {
                eprintln!("raidfs-sync: refused: {r}");
            }
            for f in &sum.failed {
                eprintln!("raidfs-sync: failed: {f}");
            }
            sum.archived.sort();
            for k in &sum.archived {
                eprintln!(
                    "raidfs-sync: archived (restore it from Glacier first, then run this again): {k}"
                );
            }
            if common.json {
                println!("{}", serde_json::to_string(&sum)?);
            } else {
                eprintln!(
                    "restored {} files, {} symlinks, {} directories ({} bytes) into {} in {:.1}s",
                    sum.files,
                    sum.symlinks,
                    sum.dirs,
                    sum.bytes,
                    target.display(),
                    sum.seconds
                );
                if !sum.failed.is_empty() {
                    eprintln!(
                        "raidfs-sync: {} item(s) could not be restored (listed above)",
                        sum.failed.len()
                    );
                }
            }
            let complete =
                sum.refused.is_empty() && sum.archived.is_empty() && sum.failed.is_empty();
            Ok(if complete {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Some(Cmd::Versions { path }) => {
            let (bucket, prefix) = connect(&common).await?;
            let rel = path.trim_matches('/');
            let file_key = prefix.key(rel, false);
            let dir_key = prefix.key(rel, true);
            let mut vs: Vec<history::Version> = history::list_versions(&bucket, &file_key)
                .await?
                .into_iter()
                .filter(|v| v.key == file_key || v.key == dir_key)
                .collect();
            vs.sort_by_key(|v| std::cmp::Reverse(v.last_modified_ns));
            // Encrypted versions: show the content size, not the ciphertext's.
            if let Some(key) = common.key(&bucket, &prefix, false).await? {
                for v in vs.iter_mut().filter(|v| !v.delete_marker) {
                    let (meta, _) = history::version_meta(&bucket, v, 0).await?;
                    if meta.enc.as_deref() == Some(key.id()) {
                        v.size = raid_sync::crypt::plain_len(v.size).unwrap_or(v.size);
                    }
                }
            }
            if common.json {
                println!("{}", serde_json::to_string(&vs)?);
            } else if vs.is_empty() {
                eprintln!(
                    "no versions of {rel} in s3://{}/{}",
                    bucket.name,
                    prefix.as_str()
                );
                return Ok(ExitCode::from(1));
            } else {
                println!("{:<26} {:>12}  {:<8} VERSION", "TIME", "SIZE", "STATE");
                for v in &vs {
                    let state = match (v.delete_marker, v.is_latest) {
                        (true, _) => "deleted",
                        (false, true) => "current",
                        (false, false) => "old",
                    };
                    println!(
                        "{:<26} {:>12}  {:<8} {}",
                        v.time(),
                        v.size,
                        state,
                        v.version_id.as_deref().unwrap_or("null")
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(Cmd::Verify {
            download,
            jobs,
            source,
        }) => {
            let (bucket, prefix) = connect(&common).await?;
            let key = common.key(&bucket, &prefix, false).await?.map(Arc::new);
            let r = verify::verify(bucket, &prefix, &source, download, jobs, key).await?;
            if common.json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                for d in &r.differences {
                    println!("{:<8} {}  ({})", d.kind, d.path, d.detail);
                }
                eprintln!(
                    "verified {} entries: {} match, {} differ{}",
                    r.checked,
                    r.matched,
                    r.differences.len(),
                    if r.downloaded > 0 {
                        format!(" ({} downloaded)", r.downloaded)
                    } else {
                        String::new()
                    }
                );
            }
            Ok(if r.differences.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Some(Cmd::Lifecycle {
            glacier_after,
            current_too,
            transition_class,
            min_transition_size,
            expire_noncurrent_after,
            show,
        }) => {
            let (bucket, prefix) = connect(&common).await?;
            let rules = if show {
                lifecycle::current(&bucket).await?
            } else {
                if glacier_after.is_none() && expire_noncurrent_after.is_none() {
                    bail!(
                        "nothing to do: give --glacier-after and/or --expire-noncurrent-after (or --show)"
                    );
                }
                let plan = lifecycle::LifecyclePlan {
                    prefix: prefix.as_str().to_string(),
                    archive_after_days: glacier_after.map(lifecycle::days).transpose()?,
                    current_too,
                    transition_class,
                    min_transition_size: i64::try_from(min_transition_size)?,
                    expire_noncurrent_after_days: expire_noncurrent_after
                        .map(lifecycle::days)
                        .transpose()?,
                };
                lifecycle::apply(&bucket, &plan).await?
            };
            for r in &rules {
                println!("{r:?}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Default state file: one per bucket + prefix + source, in the service's
/// state directory.
fn default_state_path(bucket: &str, prefix: &str, source: &Path) -> Result<PathBuf> {
    let dir = if let Some(d) = std::env::var_os("STATE_DIRECTORY") {
        PathBuf::from(d)
    } else if let Some(d) = std::env::var_os("XDG_STATE_HOME") {
        PathBuf::from(d).join("raidfs-sync")
    } else if let Some(h) = std::env::var_os("HOME") {
        PathBuf::from(h).join(".local/state/raidfs-sync")
    } else {
        bail!("no state directory: give --state");
    };
    let id = crc32fast::hash(format!("{bucket}\0{prefix}\0{}", source.display()).as_bytes());
    let safe: String = bucket
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    Ok(dir.join(format!("{safe}-{id:08x}.json")))
}

/// How often a running pass's pending counts are written to the run record.
const RECORD_EVERY: Duration = Duration::from_secs(2);

/// Removes the run record when the daemon stops.
struct RecordGuard(Arc<RecordWriter>);

impl Drop for RecordGuard {
    fn drop(&mut self) {
        self.0.remove();
    }
}

/// Requests a stop on the first SIGTERM or SIGINT.
fn stop_on_signals(stop: Stop) -> Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
    Ok(tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!("{name}: stopping after the files in flight; saving state");
        stop.request();
    }))
}

/// Stops a background task when its owner ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Writes metrics and the run record and runs the failure hook after each
/// pass.
struct PassHooks {
    bucket: String,
    store: Arc<StateStore>,
    metrics_file: Option<PathBuf>,
    notify_cmd: Option<String>,
    /// The failure `--notify-cmd` last ran for: retries failing the same
    /// way (every backoff, up to `--retry-max`) do not run it again.
    notified: std::sync::Mutex<Option<String>>,
    record: Arc<RecordWriter>,
    syncer: Arc<Syncer>,
}

impl PassHooks {
    fn failure_message(result: &raid_sync::Result<Summary>) -> Option<String> {
        match result {
            Ok(s) if s.failed == 0 => None,
            Ok(s) => Some(format!(
                "{} file operation(s) failed, e.g. {}",
                s.failed,
                s.failures.first().map(String::as_str).unwrap_or("?")
            )),
            Err(e) => Some(e.to_string()),
        }
    }
}

impl watch::Observer for PassHooks {
    fn pass_done(&self, result: &raid_sync::Result<Summary>) {
        // A pass that could not run changes nothing of what is skipped.
        let skipped_total = self.syncer.skipped.lock().map_or(0, |k| k.len() as u64);
        let empty = Summary {
            failed: 1,
            skipped_total,
            ..Summary::default()
        };
        let summary = result.as_ref().unwrap_or(&empty);
        match result {
            Ok(s) => tracing::info!(
                uploaded = s.uploaded,
                bytes = s.uploaded_bytes,
                copied = s.copied,
                deleted = s.deleted,
                failed = s.failed,
                requests = s.s3_requests,
                full = s.full_reconcile,
                "pass done in {:.2}s",
                s.seconds
            ),
            Err(e) => tracing::error!(error = %e, "pass failed"),
        }
        let failure = Self::failure_message(result);
        let last_success = self.store.lock().totals.last_success_unix;
        self.record.update(|r| {
            r.state = if failure.is_some() {
                SyncState::Failed
            } else {
                SyncState::Watching
            };
            r.last_error = failure.clone();
            r.last_success_unix = last_success;
            r.failed_files = summary.failed;
            r.deferred_files = summary.deferred;
            r.skipped_entries = summary.skipped_total;
            r.pending_files = 0;
            r.pending_bytes = 0;
        });
        if let Some(path) = &self.metrics_file {
            let mut totals = self.store.lock().totals.clone();
            if result.is_err() {
                totals.failed_runs += 1;
            }
            if let Err(e) = metrics::write(path, &self.bucket, summary, &totals, unix_now()) {
                tracing::warn!(error = %e, "writing metrics");
            }
        }
        let again = {
            let mut last = self.notified.lock().unwrap_or_else(|p| p.into_inner());
            let again = failure.is_some() && *last != failure;
            *last = failure.clone();
            again
        };
        if let (Some(cmd), Some(msg), true) = (&self.notify_cmd, failure, again) {
            tracing::error!("sync failure: {msg}");
            match std::process::Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .env("RAIDFS_SYNC_EVENT", "failure")
                .env("RAIDFS_SYNC_BUCKET", &self.bucket)
                .env("RAIDFS_SYNC_MESSAGE", &msg)
                .spawn()
            {
                // Reap it off the async runtime; its exit status is only logged.
                Ok(mut child) => {
                    std::thread::spawn(move || {
                        if let Ok(st) = child.wait()
                            && !st.success()
                        {
                            tracing::warn!(status = %st, "--notify-cmd failed");
                        }
                    });
                }
                Err(e) => tracing::warn!(error = %e, "running --notify-cmd"),
            }
        }
    }
}

/// Refuses a sync without a key of a mirror that was encrypted: the state
/// records a key, or (a state with no reconciled pass yet: new or lost) the
/// bucket holds key parameters. Going on would upload the whole tree again
/// in plaintext; `--no-encryption` says that is meant.
async fn refuse_plaintext_over_encrypted(
    bucket: &Bucket,
    prefix: &KeyPrefix,
    store: &StateStore,
) -> Result<()> {
    let (recorded, reconciled) = {
        let st = store.lock();
        (st.enc_key.clone(), st.reconciled)
    };
    let why = if let Some(id) = recorded {
        format!(
            "the state file {} records that it is encrypted (key fingerprint {id})",
            store.path().display()
        )
    } else if !reconciled && let Some(p) = keysource::stored_params(bucket, prefix.as_str()).await?
    {
        format!(
            "s3://{}/{} holds its key parameters (key fingerprint {})",
            bucket.name,
            keysource::params_key(prefix.as_str()),
            p.key_id
        )
    } else {
        return Ok(());
    };
    bail!(
        "s3://{}/{} was synced with client-side encryption: {why}, but no key was given. \
         Nothing was uploaded. Give --encrypt-key-file or --encrypt-passphrase-file (or \
         RAIDFS_SYNC_PASSPHRASE); to turn encryption off for this mirror, run with \
         --no-encryption (every object is then uploaded again unencrypted)",
        bucket.name,
        prefix.as_str()
    )
}

async fn sync(common: Common, args: SyncArgs) -> Result<ExitCode> {
    let source = args
        .source
        .clone()
        .context("SOURCE directory is required")?;
    let source =
        std::fs::canonicalize(&source).with_context(|| format!("source {}", source.display()))?;
    if !source.is_dir() {
        bail!("{} is not a directory", source.display());
    }
    let (bucket, prefix) = connect_paced(&common, args.bwlimit > 0).await?;
    let min_part = min_part_size()?;
    if args.part_size < min_part {
        bail!(
            "--part-size must be at least {} (S3 refuses smaller parts other than the last)",
            size_text(min_part)
        );
    }
    if args.no_encryption && common.key_source()?.is_some() {
        bail!(
            "--no-encryption and an encryption key (--encrypt-key-file, \
             --encrypt-passphrase-file or RAIDFS_SYNC_PASSPHRASE) exclude each other"
        );
    }
    let state_path = match &args.state {
        Some(p) => p.clone(),
        None => default_state_path(&bucket.name, prefix.as_str(), &source)?,
    };
    // Held until this process ends: one process per state file.
    let store = Arc::new(StateStore::open(
        state_path.clone(),
        &bucket.name,
        prefix.as_str(),
    )?);
    // Held until this process ends (after the state's lock, so that a
    // second run on the same state is told so): one process per source, bucket and
    // prefix, whatever its state file.
    let _mirror_lock = raid_sync::record::lock_mirror(
        &raid_sync::record::run_dir(),
        &source,
        &bucket.name,
        prefix.as_str(),
    )?;
    tracing::debug!(state = %state_path.display(), "state file");

    if args.create_bucket {
        bucket.create_if_missing(common.region.as_deref()).await?;
    }
    // Versioning is checked at most once a day when the state is current,
    // so an unchanged tree costs no request.
    let checked = store.lock().versioning_checked_unix;
    if checked.is_none_or(|t| unix_now() - t > 86_400) {
        bucket.ensure_versioning(!args.no_enable_versioning).await?;
        store.lock().versioning_checked_unix = Some(unix_now());
    }
    let key = common.key(&bucket, &prefix, true).await?;
    if key.is_none() && !args.no_encryption {
        refuse_plaintext_over_encrypted(&bucket, &prefix, &store).await?;
    }
    {
        let mut st = store.lock();
        let id = key.as_ref().map(|k| k.id().to_string());
        if st.enc_key != id {
            // Switching encryption on, off or to another key: what the state
            // records is no longer what the bucket should hold. A full
            // reconciliation re-uploads what does not match.
            if !st.entries.is_empty() {
                tracing::info!("encryption setting changed: reconciling the whole tree");
            }
            st.entries.clear();
            st.reconciled = false;
            st.enc_key = id;
        }
    }

    let put = PutOptions {
        storage_class: args
            .storage_class
            .as_deref()
            .map(aws_sdk_s3::types::StorageClass::from),
        sse: args
            .sse
            .as_deref()
            .map(aws_sdk_s3::types::ServerSideEncryption::from),
        sse_kms_key_id: args.sse_kms_key_id.clone(),
        multipart_threshold: args.multipart_threshold.max(1),
        part_size: args.part_size,
    };
    let up = Arc::new(Uploader::new(bucket.clone(), put, args.bwlimit, args.jobs).with_key(key));
    let syncer = Arc::new(Syncer {
        source: source.clone(),
        prefix,
        bucket: bucket.clone(),
        up,
        store: store.clone(),
        progress: !args.no_progress && !common.json,
        pending: Arc::new(Pending::default()),
        allow_empty_source: args.allow_empty_source,
        skipped: Default::default(),
        stop: Stop::default(),
        stop_grace: args.stop_grace,
    });
    // SIGTERM (systemd) or SIGINT: a running pass stops at the next file.
    let _signals = AbortOnDrop(stop_on_signals(syncer.stop.clone())?);
    let last_success = store.lock().totals.last_success_unix;
    let record = Arc::new(RecordWriter::start(
        &raid_sync::record::run_dir(),
        &source,
        &bucket.name,
        syncer.prefix.as_str(),
        last_success,
    ));
    // Removes the record however this function returns.
    let _record_guard = RecordGuard(record.clone());
    // Keeps the pending counts of a running pass in the record.
    let ticker = {
        let (record, pending) = (record.clone(), syncer.pending.clone());
        tokio::spawn(async move {
            let mut every = tokio::time::interval(RECORD_EVERY);
            loop {
                every.tick().await;
                let (files, bytes) = pending.get();
                record.set_pending(files, bytes);
            }
        })
    };
    let _ticker_guard = AbortOnDrop(ticker);
    let hooks = PassHooks {
        bucket: bucket.name.clone(),
        store: store.clone(),
        metrics_file: args.metrics_file.clone(),
        notify_cmd: args.notify_cmd.clone(),
        notified: std::sync::Mutex::new(None),
        record,
        syncer: syncer.clone(),
    };

    if args.once {
        let result = syncer.pass(&[String::new()], args.full).await;
        watch::Observer::pass_done(&hooks, &result);
        let sum = result?;
        if sum.interrupted {
            if common.json {
                println!("{}", serde_json::to_string(&sum)?);
            }
            eprintln!(
                "raidfs-sync: stopped by a signal before the pass was done ({} uploaded); \
                 the state is saved: run again to finish",
                sum.uploaded
            );
            return Ok(ExitCode::from(1));
        }
        if common.json {
            println!("{}", serde_json::to_string(&sum)?);
        } else {
            eprintln!(
                "{} uploaded ({} bytes), {} copied, {} attribute updates, {} adopted, {} deleted, {} unchanged, {} failed in {:.2}s ({} S3 requests)",
                sum.uploaded,
                sum.uploaded_bytes,
                sum.copied,
                sum.metadata_updated,
                sum.adopted,
                sum.deleted,
                sum.unchanged,
                sum.failed,
                sum.seconds,
                sum.s3_requests
            );
        }
        for f in &sum.failures {
            eprintln!("raidfs-sync: failed: {f}");
        }
        if sum.deferred > 0 {
            eprintln!(
                "raidfs-sync: {} file(s) changed while being read; run again once they settle",
                sum.deferred
            );
        }
        if sum.vanished > 0 {
            eprintln!(
                "raidfs-sync: {} file(s) disappeared before they were uploaded; the next run \
                 takes them out of the mirror",
                sum.vanished
            );
        }
        return Ok(if sum.failed == 0 && sum.deferred == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    if args.full {
        let r = syncer.pass(&[String::new()], true).await;
        watch::Observer::pass_done(&hooks, &r);
    }
    let opts = watch::DaemonOptions {
        debounce: args.debounce,
        max_delay: args.debounce.max(Duration::from_secs(10)),
        retry_max: args.retry_max,
    };
    watch::run(syncer, opts, &hooks).await?;
    Ok(ExitCode::SUCCESS)
}
