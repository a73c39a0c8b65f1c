//! `raidfs status`: like `/proc/mdstat` and `mdadm --detail`. A mounted
//! array is asked through its control socket (live member states, error
//! counters, rebuild and scrub progress); an array that is not mounted is
//! described from its superblocks (read-only: nothing is written).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use raid_array::Status;
use raid_array::assemble::read_superblock;
use raid_array::format::superblock::{SlotState, Superblock, uuid_string};
use serde::{Deserialize, Serialize};

use crate::control::client;
use crate::control::protocol::{Request, Response};

/// Arguments of `raidfs status`.
#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// An array name, UUID or mount point, or member directories. Without
    /// any, every mounted array.
    pub spec: Vec<String>,
    /// Print JSON for scripts.
    #[arg(long)]
    pub json: bool,
}

/// Per-member error counters since the array was mounted (live only).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct CountersJson {
    pub read_errors: u64,
    pub write_errors: u64,
    pub checksum_errors: u64,
    /// Blocks rewritten with reconstructed data (checksum errors repaired).
    pub repaired_blocks: u64,
}

/// One member in the JSON output.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct MemberJson {
    pub index: usize,
    pub uuid: String,
    pub path: Option<String>,
    /// active, failed, missing, spare or rebuilding.
    pub state: String,
    /// `null` when read from the superblocks (not mounted).
    pub counters: Option<CountersJson>,
    /// Whether the member that left this failed or missing slot can come
    /// back by a re-add (`raidfs replace` onto its own directory rebuilds
    /// only the files changed since it left); `null` when not mounted.
    #[serde(default)]
    pub readd: Option<bool>,
    /// How the last rebuild of this slot since the mount ended: the member
    /// turns active even when blocks could not be rebuilt. `null` when
    /// none ran or when not mounted.
    #[serde(default)]
    pub last_rebuild: Option<LastRebuildJson>,
}

/// The end of a rebuild or re-add.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastRebuildJson {
    pub finished_unix: u64,
    /// False when it stopped early (unmounted); it resumes at the next mount.
    pub complete: bool,
    pub readd: bool,
    pub bytes: u64,
    /// Blocks that could not be rebuilt: they read as I/O errors.
    pub unrecoverable: u64,
}

impl From<raid_array::RebuildOutcome> for LastRebuildJson {
    fn from(o: raid_array::RebuildOutcome) -> Self {
        LastRebuildJson {
            finished_unix: o.finished_unix,
            complete: o.complete,
            readd: o.readd,
            bytes: o.bytes,
            unrecoverable: o.unrecoverable,
        }
    }
}

/// A hot spare.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct SpareJson {
    pub uuid: String,
    pub path: String,
}

/// A rebuild in progress.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct RebuildJson {
    pub slot: usize,
    pub done_bytes: u64,
    /// `null` when unknown (offline).
    pub total_bytes: Option<u64>,
    pub percent: Option<f64>,
    /// Estimated seconds left, from the rate so far.
    pub eta_seconds: Option<u64>,
}

impl From<&raid_array::RebuildStatus> for RebuildJson {
    fn from(r: &raid_array::RebuildStatus) -> Self {
        let elapsed = now_unix().saturating_sub(r.started_unix);
        let left = r.total_bytes.saturating_sub(r.done_bytes);
        // The rate of this run only: a resumed rebuild's checkpointed bytes
        // were not done in `elapsed`, so the estimate errs long, never short.
        let eta_seconds = (r.done_bytes > 0 && elapsed > 0)
            .then(|| (elapsed as f64 * left as f64 / r.done_bytes as f64).ceil() as u64);
        RebuildJson {
            slot: r.slot,
            done_bytes: r.done_bytes,
            total_bytes: Some(r.total_bytes),
            percent: Some(percent(r.done_bytes, r.total_bytes)),
            eta_seconds,
        }
    }
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The last scrub, as the engine keeps it on the members.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastScrubJson {
    pub finished_unix: u64,
    pub repair: bool,
    pub complete: bool,
    pub bytes: u64,
    pub mismatches: u64,
    pub redundancy_mismatches: u64,
    pub repaired: u64,
    pub unrecoverable: u64,
}

impl From<raid_array::ScrubSummary> for LastScrubJson {
    fn from(s: raid_array::ScrubSummary) -> Self {
        LastScrubJson {
            finished_unix: s.finished_unix,
            repair: s.repair,
            complete: s.complete,
            bytes: s.bytes,
            mismatches: s.mismatches,
            redundancy_mismatches: s.redundancy_mismatches,
            repaired: s.repaired,
            unrecoverable: s.unrecoverable,
        }
    }
}

/// A scrub running in the daemon.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ScrubProgressJson {
    pub repair: bool,
    pub done_bytes: u64,
    pub total_bytes: u64,
    pub percent: f64,
}

impl ScrubProgressJson {
    pub fn new(repair: bool, done: u64, total: u64) -> Self {
        ScrubProgressJson {
            repair,
            done_bytes: done,
            total_bytes: total,
            percent: percent(done, total),
        }
    }
}

/// Share of a running operation done. Before it has measured its work
/// (total 0) it has done none of it: a script polling for 100 must not
/// take a scrub that has not started for one that has finished.
fn percent(done: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        (done as f64 * 1000.0 / total as f64).round() / 10.0
    }
}

/// What the daemon adds to the engine's status.
#[derive(Debug, Clone)]
pub struct LiveExtras {
    pub mountpoint: String,
    pub pid: u32,
    pub scrub: Option<ScrubProgressJson>,
}

/// The JSON shape of `raidfs status --json` (stable for scripts: keys are
/// only ever added).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct StatusJson {
    pub name: String,
    pub uuid: String,
    pub level: String,
    pub chunk_size: u32,
    pub events: u64,
    pub clean: bool,
    pub degraded: bool,
    pub failed: bool,
    pub failures_tolerated: usize,
    /// How many more member failures are always survived now (`null`: the
    /// array has failed; also from a daemon that predates the key).
    #[serde(default)]
    pub failures_left: Option<usize>,
    pub members: Vec<MemberJson>,
    /// Whether this came from the mount daemon (else from superblocks).
    pub live: bool,
    pub mountpoint: Option<String>,
    /// The mount daemon's PID.
    pub pid: Option<u32>,
    pub spares: Vec<SpareJson>,
    pub rebuild: Option<RebuildJson>,
    /// A scrub running now.
    pub scrub: Option<ScrubProgressJson>,
    /// The last scrub that ended, complete or stopped (cancelled,
    /// unmounted): its `complete` says which.
    pub last_scrub: Option<LastScrubJson>,
    /// The `raidfs-sync` daemons mirroring the mount point or a directory
    /// under it, from their run records; `null` when none is known (none
    /// runs, or the array is not mounted). Filled in by the CLI, not the
    /// mount daemon, so a daemon that predates it answers without it.
    #[serde(default)]
    pub sync: Option<Vec<SyncJson>>,
}

/// One `raidfs-sync` daemon's state, as its run record
/// (`<run dir>/sync-*.json`, written by raid-sync's `record` module) says.
/// Parsed here with a local struct so that raid-fuse does not depend on the
/// S3 crates; the keys are documented in docs/SYNC.md.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct SyncJson {
    pub source: String,
    pub bucket: String,
    #[serde(default)]
    pub prefix: String,
    pub pid: u32,
    /// initial-sync, watching or failed.
    pub state: String,
    #[serde(default)]
    pub started_unix: Option<i64>,
    #[serde(default)]
    pub updated_unix: Option<i64>,
    #[serde(default)]
    pub last_success_unix: Option<i64>,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub pending_files: u64,
    #[serde(default)]
    pub pending_bytes: u64,
    #[serde(default)]
    pub failed_files: u64,
}

/// The run records of live `raidfs-sync` daemons in `dir` whose source is
/// `mountpoint` or lies under it. Records of dead PIDs (a daemon that
/// crashed) are skipped; unreadable or foreign JSON files are ignored.
pub fn sync_records(dir: &Path, mountpoint: &Path) -> Vec<SyncJson> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mount = std::fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.to_path_buf());
    let mut out = Vec::new();
    for e in rd.flatten() {
        let path = e.path();
        let name = e.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with("sync-") && name.ends_with(".json")) {
            continue;
        }
        let Ok(text) = std::fs::read(&path) else {
            continue;
        };
        let Ok(rec) = serde_json::from_slice::<SyncJson>(&text) else {
            tracing::debug!(path = %path.display(), "not a sync record; skipped");
            continue;
        };
        if !Path::new(&rec.source).starts_with(&mount) || !pid_alive(rec.pid) {
            continue;
        }
        out.push(rec);
    }
    out.sort_by(|a, b| (&a.source, &a.bucket, &a.prefix).cmp(&(&b.source, &b.bucket, &b.prefix)));
    out
}

/// Whether a process with this PID exists (one we may not signal counts).
fn pid_alive(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    matches!(
        rustix::process::test_kill_process(pid),
        Ok(()) | Err(rustix::io::Errno::PERM)
    )
}

/// Adds the sync state of a mounted array (from the run directory).
pub fn with_sync(mut st: StatusJson) -> StatusJson {
    if let Some(m) = &st.mountpoint {
        let recs = sync_records(&crate::control::run_dir(), Path::new(m));
        st.sync = (!recs.is_empty()).then_some(recs);
    }
    st
}

/// A member state's name in the status.
pub fn state_name(s: raid_array::health::MemberState) -> String {
    use raid_array::health::MemberState as M;
    match s {
        M::Active => "active",
        M::Failed => "failed",
        M::Missing => "missing",
        M::Spare => "spare",
        M::Rebuilding { .. } => "rebuilding",
    }
    .into()
}

impl StatusJson {
    /// The status of a mounted array, as its daemon reports it.
    pub fn live(s: &Status, extras: LiveExtras) -> Self {
        let mut j = StatusJson::from(s);
        j.live = true;
        j.mountpoint = Some(extras.mountpoint);
        j.pid = Some(extras.pid);
        j.scrub = extras.scrub;
        for (m, js) in s.members.iter().zip(j.members.iter_mut()) {
            js.readd = Some(m.readd);
            js.last_rebuild = m.last_rebuild.map(LastRebuildJson::from);
            js.counters = Some(CountersJson {
                read_errors: m.counters.read_errors,
                write_errors: m.counters.write_errors,
                checksum_errors: m.counters.checksum_mismatches,
                repaired_blocks: m.counters.repaired_blocks,
            });
        }
        j
    }
}

impl From<&Status> for StatusJson {
    fn from(s: &Status) -> Self {
        StatusJson {
            name: s.name.clone(),
            uuid: s.uuid.clone(),
            level: s.level.clone(),
            chunk_size: s.chunk_size,
            events: s.events,
            clean: s.clean,
            degraded: s.degraded,
            failed: s.failed,
            failures_tolerated: s.failures_tolerated,
            failures_left: s.failures_left,
            members: s
                .members
                .iter()
                .map(|m| MemberJson {
                    index: m.index,
                    uuid: m.uuid.clone(),
                    path: m.path.clone(),
                    state: state_name(m.state),
                    counters: None,
                    readd: None,
                    last_rebuild: None,
                })
                .collect(),
            live: false,
            mountpoint: None,
            pid: None,
            spares: s
                .spares
                .iter()
                .map(|sp| SpareJson {
                    uuid: sp.uuid.clone(),
                    path: sp.path.clone(),
                })
                .collect(),
            rebuild: s.rebuild.as_ref().map(RebuildJson::from),
            scrub: None,
            last_scrub: s.last_scrub.map(LastScrubJson::from),
            sync: None,
        }
    }
}

fn slot_state(s: SlotState) -> String {
    match s {
        SlotState::Active => "active".into(),
        SlotState::Failed => "failed".into(),
        SlotState::Spare => "spare".into(),
        SlotState::Rebuilding { .. } => "rebuilding".into(),
    }
}

/// The freshest of the superblocks found.
fn freshest(found: &[(PathBuf, Superblock)]) -> Option<&Superblock> {
    found
        .iter()
        .map(|(_, sb)| sb)
        .max_by_key(|sb| (sb.events, sb.journal_seq))
}

/// Member directories of array `uuid` other than `given`: among the given
/// directories' siblings and on the mounted filesystems (nothing when the
/// search fails: the status then shows those members missing).
fn elsewhere(uuid: [u8; 16], given: &[PathBuf]) -> Vec<PathBuf> {
    // Their parents: candidates searches each with its subdirectories.
    let parents: Vec<String> = given
        .iter()
        .filter_map(|g| std::path::absolute(g).ok())
        .filter_map(|g| g.parent().map(|p| p.display().to_string()))
        .collect();
    crate::spec::candidates(&parents)
        .and_then(|c| {
            raid_array::assemble::find_members(&raid_array::Selector::Uuid(uuid), &c)
                .map_err(anyhow::Error::from)
        })
        .unwrap_or_default()
        .into_iter()
        .filter(|p| !given.iter().any(|g| same_dir(g, p)))
        .collect()
}

/// Whether two spellings name the same directory: the search finds members
/// by absolute paths, the admin may give them relative (`d2/raidfs`) or
/// through a symlink, and a member listed twice is refused by assembly.
fn same_dir(a: &Path, b: &Path) -> bool {
    let canon = |p: &Path| p.canonicalize().or_else(|_| std::path::absolute(p)).ok();
    a == b || matches!((canon(a), canon(b)), (Some(x), Some(y)) if x == y)
}

/// The given member directories and the array's others, looked for beside
/// them and on the mounted filesystems (as `raidfs status DIR` does). A
/// command that assembles an array that is not mounted for writing records
/// every member it was not given as failed, so one given a single member
/// directory must find the rest, and is refused when a member in service
/// is nowhere (md does not start a degraded array without `--run` either).
/// The member the command acts on (`member`, a slot or directory: the dead
/// disk a `replace`, `fail` or `remove` names) may be missing. Returns the
/// directories and the status read from them.
pub fn all_members(given: &[PathBuf], member: Option<&str>) -> Result<(Vec<PathBuf>, StatusJson)> {
    let mut all = given.to_vec();
    if let Some(sb) = given.iter().find_map(|g| read_superblock(g).ok()) {
        all.extend(elsewhere(sb.array_uuid, given));
    }
    let st = offline(&all)?;
    let named = member.and_then(|m| super::target::slot(&st, m).ok());
    let missing: Vec<String> = st
        .members
        .iter()
        .filter(|m| m.state == "missing" && Some(m.index) != named)
        .map(|m| m.index.to_string())
        .collect();
    if !missing.is_empty() {
        bail!(
            "member(s) {} of array {:?} not found (looked beside the given directories and on \
             the mounted filesystems); run on the array while it is not mounted, the command \
             would record them failed. Name every member directory (DIR:DIR:…), or mount the \
             array (it starts degraded) and run the command on the mount",
            missing.join(", "),
            st.name
        );
    }
    Ok((all, st))
}

/// Status from the freshest superblock among the given member directories.
pub fn offline(members: &[PathBuf]) -> Result<StatusJson> {
    offline_with(members, false)
}

/// As [`offline`]; with `search`, members not given are looked for (what
/// `raidfs status DIR` shows; commands that then assemble the given
/// directories resolve slots against those alone).
fn offline_with(members: &[PathBuf], search: bool) -> Result<StatusJson> {
    let mut found: Vec<(PathBuf, Superblock)> = Vec::new();
    for m in members {
        match read_superblock(m) {
            Ok(sb) => found.push((m.clone(), sb)),
            Err(e) => tracing::warn!(member = %m.display(), error = %e, "not readable as a member"),
        }
    }
    // Given some of the members only (`raidfs status /mnt/disk1`): the
    // rest are looked for, by the array's UUID, beside the given ones and
    // on the mounted filesystems, rather than reported missing.
    let incomplete = freshest(&found).and_then(|sb| {
        sb.members
            .iter()
            .any(|slot| {
                slot.state != SlotState::Failed
                    && !found.iter().any(|(_, f)| f.member_uuid == slot.uuid)
            })
            .then_some(sb.array_uuid)
    });
    if let Some(uuid) = incomplete.filter(|_| search) {
        for p in elsewhere(uuid, members) {
            if !found.iter().any(|(q, _)| same_dir(q, &p))
                && let Ok(sb) = read_superblock(&p)
            {
                found.push((p, sb));
            }
        }
    }
    let Some(fresh) = freshest(&found) else {
        if let [one] = members
            && !one.exists()
        {
            bail!(
                "{}: no such array, mount point or member directory",
                one.display()
            );
        }
        bail!("none of the given directories holds a raidfs superblock");
    };
    if found
        .iter()
        .any(|(_, sb)| sb.array_uuid != fresh.array_uuid)
    {
        bail!("the given directories belong to different arrays");
    }
    let geometry = fresh.geometry()?;
    let mut failed = Vec::new();
    let members_json: Vec<MemberJson> = fresh
        .members
        .iter()
        .enumerate()
        .map(|(i, slot)| {
            let path = found
                .iter()
                .find(|(_, sb)| sb.member_uuid == slot.uuid)
                .map(|(p, _)| p.display().to_string());
            let mut state = slot_state(slot.state);
            if path.is_none() && slot.state != SlotState::Failed {
                state = "missing".into();
            }
            if state == "failed" || state == "missing" || state == "rebuilding" {
                failed.push(i);
            }
            MemberJson {
                index: i,
                uuid: uuid_string(&slot.uuid),
                path,
                state,
                counters: None,
                readd: None,
                last_rebuild: None,
            }
        })
        .collect();
    Ok(StatusJson {
        name: fresh.name.clone(),
        uuid: uuid_string(&fresh.array_uuid),
        level: fresh.level()?.to_string(),
        chunk_size: fresh.chunk_size,
        events: fresh.events,
        // As assembly decides it: the freshest superblock's word (a failed
        // or replaced member's keeps whatever it said when it left).
        clean: fresh.clean,
        // As the live status: a failed array is degraded too.
        degraded: !failed.is_empty(),
        failed: !geometry.survives(&failed),
        failures_tolerated: geometry.failures_tolerated(),
        failures_left: geometry.more_failures_tolerated(&failed),
        members: members_json,
        live: false,
        mountpoint: None,
        pid: None,
        spares: fresh
            .spares
            .iter()
            .map(|sp| SpareJson {
                uuid: uuid_string(&sp.uuid),
                path: found
                    .iter()
                    .find(|(_, sb)| sb.member_uuid == sp.uuid)
                    .map(|(p, _)| p.display().to_string())
                    .unwrap_or_else(|| "-".into()),
            })
            .collect(),
        rebuild: fresh
            .members
            .iter()
            .enumerate()
            .find_map(|(slot, m)| match m.state {
                SlotState::Rebuilding { done_bytes } => Some(RebuildJson {
                    slot,
                    done_bytes,
                    total_bytes: None,
                    percent: None,
                    eta_seconds: None,
                }),
                _ => None,
            }),
        scrub: None,
        last_scrub: last_scrub(&found, fresh.array_uuid),
        sync: None,
    })
}

/// The newest scrub summary kept on the members of the array `uuid` among
/// `found` (read only).
fn last_scrub(found: &[(PathBuf, Superblock)], uuid: [u8; 16]) -> Option<LastScrubJson> {
    let members: Vec<std::sync::Arc<dyn raid_array::member::Member>> = found
        .iter()
        .filter(|(_, sb)| sb.array_uuid == uuid)
        .filter_map(|(p, _)| raid_array::member::DirMember::open(p).ok())
        .map(|m| std::sync::Arc::new(m) as std::sync::Arc<dyn raid_array::member::Member>)
        .collect();
    raid_array::ScrubSummary::load(&members).map(LastScrubJson::from)
}

/// Where a status comes from.
pub enum Source {
    Live(crate::control::record::Record),
    Offline(Vec<PathBuf>),
}

/// Resolve TARGET words (a name, UUID, mount point, member directories
/// as separate words or one `/a:/b:/c` list) to the live daemon or, when
/// the array is not mounted, to its member directories.
pub fn resolve(spec: &[String]) -> Result<Source> {
    let Some(first) = spec.first() else {
        bail!("no array given");
    };
    let mount_word = crate::spec::raidfs_mount_word(first).map(|p| p.display().to_string());
    let first = mount_word.as_ref().unwrap_or(first);
    if let Some(rec) = client::find(first)? {
        return Ok(Source::Live(rec));
    }
    let members: Vec<PathBuf> = if spec.len() == 1 {
        let parsed = crate::spec::parse(first)?;
        crate::spec::resolve(&parsed, &[])
            .with_context(|| format!("{first:?} is not a mounted array; looking for its members"))?
    } else {
        spec.iter().map(PathBuf::from).collect()
    };
    // A member list of a mounted array goes to its daemon.
    if let Some(m) = members.first()
        && let Some(rec) = client::find(&m.display().to_string())?
    {
        return Ok(Source::Live(rec));
    }
    if members.len() == 1 && crate::spec::is_mountpoint(&members[0]).unwrap_or(false) {
        bail!(
            "{} is a mount point but no raidfs daemon answers for it",
            members[0].display()
        );
    }
    Ok(Source::Offline(members))
}

/// Ask a live daemon for its status.
pub fn live(rec: &crate::control::record::Record) -> Result<StatusJson> {
    match client::call(rec, &Request::Status)? {
        Response::Status { status } => Ok(*status),
        other => bail!("unexpected answer to status: {other:?}"),
    }
}

/// The status of whatever `spec` names.
pub fn get(spec: &[String]) -> Result<StatusJson> {
    match resolve(spec)? {
        Source::Live(rec) => match live(&rec) {
            Ok(st) => Ok(st),
            // Unmounted between finding the record and asking: the
            // daemon has removed its record, so the members answer.
            Err(_) if !still_mounted(&rec) => match resolve(spec)? {
                Source::Live(again) => live(&again),
                Source::Offline(members) => offline_with(&members, true),
            },
            Err(e) => Err(e),
        },
        Source::Offline(members) => offline_with(&members, true),
    }
}

/// Whether the daemon of `rec` still serves it (its record is still there
/// and its socket still answers).
fn still_mounted(rec: &crate::control::record::Record) -> bool {
    client::live_arrays().iter().any(|r| r.uuid == rec.uuid)
}

pub fn run(args: &StatusArgs) -> Result<()> {
    if args.spec.is_empty() {
        let mut all = Vec::new();
        let mut unanswered = 0;
        for rec in client::live_arrays() {
            match live(&rec) {
                Ok(st) => all.push(with_sync(st)),
                // Unmounted while we asked: no longer in the list.
                Err(_) if !still_mounted(&rec) => {}
                Err(e) => {
                    eprintln!("raidfs: {}: {e:#}", rec.name);
                    unanswered += 1;
                }
            }
        }
        if args.json {
            println!("{}", serde_json::to_string_pretty(&all)?);
        } else if all.is_empty() && unanswered == 0 {
            println!("no raidfs array is mounted");
        } else {
            for (k, st) in all.iter().enumerate() {
                if k > 0 {
                    println!();
                }
                print_text(st);
            }
        }
        if unanswered > 0 {
            // Mounted arrays whose status could not be had (most often: not
            // root): say so by the exit code too, never "nothing mounted".
            return Err(anyhow::Error::new(super::target::Exit {
                code: 1,
                message: format!(
                    "the status of {unanswered} mounted array(s) could not be read (see above)"
                ),
            }));
        }
        return Ok(());
    }
    if args.spec.len() > 1 && args.spec.iter().all(|w| !w.contains('/')) {
        return several(&args.spec, args.json);
    }
    let st = with_sync(get(&args.spec)?);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&st)?);
    } else {
        print_text(&st);
    }
    Ok(())
}

/// `raidfs status NAME NAME…`: each array in turn (names and UUIDs; member
/// directories are paths and go together as one array's list).
fn several(targets: &[String], json: bool) -> Result<()> {
    let mut all = Vec::new();
    let mut failed = 0;
    for t in targets {
        match get(std::slice::from_ref(t)) {
            Ok(st) => all.push(with_sync(st)),
            Err(e) => {
                eprintln!("raidfs: {t}: {e:#}");
                failed += 1;
            }
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&all)?);
    } else {
        for (k, st) in all.iter().enumerate() {
            if k > 0 {
                println!();
            }
            print_text(st);
        }
    }
    if failed > 0 {
        return Err(anyhow::Error::new(super::target::Exit {
            code: 1,
            message: format!(
                "{failed} of {} arrays not found or not answering (see above)",
                targets.len()
            ),
        }));
    }
    Ok(())
}

pub(crate) fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn human_secs(s: u64) -> String {
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s % 3600 / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

fn print_text(st: &StatusJson) {
    // As mdadm's "State :": clean, or active while mounted (dirty when
    // not mounted: it was not shut down cleanly), then what is wrong.
    let mut state = if st.clean {
        "clean"
    } else if st.live {
        "active"
    } else {
        "dirty"
    }
    .to_string();
    if st.failed {
        state.push_str(", FAILED");
    } else if st.rebuild.is_some() {
        state.push_str(", degraded, recovering");
    } else if st.degraded {
        state.push_str(", degraded");
    }
    println!("{} ({})", st.name, st.uuid);
    match (&st.mountpoint, st.pid) {
        (Some(m), Some(pid)) => println!("  mounted on {m} (daemon pid {pid})"),
        _ => println!("  not mounted (from the superblocks)"),
    }
    // Degraded, what counts is how many more it survives now.
    let more = match (st.degraded, st.failures_left) {
        (true, Some(n)) => format!(" ({n} more now)"),
        _ => String::new(),
    };
    println!(
        "  level: {}  chunk: {} KiB  members: {}  tolerates: {} failure(s){more}",
        st.level,
        st.chunk_size / 1024,
        st.members.len(),
        st.failures_tolerated
    );
    println!("  state: {state}  events: {}", st.events);
    for m in &st.members {
        let mut line = format!(
            "  [{}] {:<11} {}",
            m.index,
            m.state,
            m.path.as_deref().unwrap_or("-")
        );
        if let Some(c) = m.counters
            && (c.read_errors | c.write_errors | c.checksum_errors | c.repaired_blocks) != 0
        {
            line.push_str(&format!(
                "  (read errors {}, write errors {}, checksum errors {}, repaired {})",
                c.read_errors, c.write_errors, c.checksum_errors, c.repaired_blocks
            ));
        }
        if let Some(r) = m.last_rebuild
            && r.unrecoverable > 0
        {
            line.push_str(&format!(
                "  (its last rebuild could not rebuild {} block(s): they read as I/O errors)",
                r.unrecoverable
            ));
        }
        if m.readd == Some(true) {
            line.push_str("  (can be re-added: only the files changed since it left are rebuilt)");
        }
        println!("{line}");
    }
    for s in &st.spares {
        println!("  [S] spare       {}", s.path);
    }
    if let Some(r) = &st.rebuild {
        let pct = r
            .percent
            .map(|p| format!("{p:.1}%"))
            .unwrap_or_else(|| "?".into());
        let eta = r
            .eta_seconds
            .map(|s| format!(", about {} left", human_secs(s)))
            .unwrap_or_default();
        println!(
            "  rebuild of member {}: {pct} ({} done{eta})",
            r.slot,
            human_bytes(r.done_bytes)
        );
    }
    if let Some(s) = &st.scrub {
        println!(
            "  scrub{} running: {:.1}% of {}",
            if s.repair { " --repair" } else { "" },
            s.percent,
            human_bytes(s.total_bytes)
        );
    }
    match &st.last_scrub {
        Some(s) => println!("{}", last_scrub_line(s, now_unix())),
        None if st.live => println!("  last scrub: none recorded"),
        None => {}
    }
    for s in st.sync.iter().flatten() {
        println!("{}", sync_line(s, now_unix()));
        if let Some(e) = &s.last_error {
            println!("    last error: {e}");
        }
    }
}

/// The last scrub in a line of text: when it ended, and whether it ran to
/// its end: counts of a stopped scrub cover only what it checked.
fn last_scrub_line(s: &LastScrubJson, now: u64) -> String {
    let how = if s.complete {
        "finished"
    } else {
        "STOPPED before the end (cancelled or unmounted; the next scrub resumes), partial"
    };
    // 0: a summary that does not know when it ended.
    let when = if s.finished_unix == 0 {
        String::new()
    } else {
        format!(" {} ago", human_secs(now.saturating_sub(s.finished_unix)))
    };
    format!(
        "  last scrub{}: {how}{when}: {} mismatches, {} parity mismatches, {} repaired, \
         {} unrecoverable ({} checked)",
        if s.repair { " --repair" } else { "" },
        s.mismatches,
        s.redundancy_mismatches,
        s.repaired,
        s.unrecoverable,
        human_bytes(s.bytes),
    )
}

/// One line of text for a sync daemon: where to, its state, how long ago it
/// last succeeded and what is pending.
fn sync_line(s: &SyncJson, now: u64) -> String {
    let mut line = format!(
        "  sync to s3://{}/{} from {}: {} (pid {})",
        s.bucket, s.prefix, s.source, s.state, s.pid
    );
    match s.last_success_unix {
        Some(t) => line.push_str(&format!(
            ", last success {} ago",
            human_secs(now.saturating_sub(u64::try_from(t).unwrap_or(0)))
        )),
        None => line.push_str(", no successful pass yet"),
    }
    if s.pending_files > 0 {
        line.push_str(&format!(
            ", {} file(s) ({}) pending",
            s.pending_files,
            human_bytes(s.pending_bytes)
        ));
    }
    if s.failed_files > 0 {
        line.push_str(&format!(", {} failed", s.failed_files));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operation_that_has_not_measured_its_work_is_at_zero_percent() {
        assert_eq!(ScrubProgressJson::new(false, 0, 0).percent, 0.0);
        assert_eq!(ScrubProgressJson::new(true, 512, 1024).percent, 50.0);
        assert_eq!(ScrubProgressJson::new(true, 1024, 1024).percent, 100.0);
    }

    fn record(source: &str, pid: u32) -> serde_json::Value {
        serde_json::json!({
            "version": 1,
            "source": source,
            "bucket": "backup",
            "prefix": "pi/",
            "pid": pid,
            "state": "watching",
            "started_unix": 1_700_000_000,
            "updated_unix": 1_700_000_100,
            "last_success_unix": 1_700_000_090,
            "last_error": null,
            "pending_files": 2,
            "pending_bytes": 2048,
            "failed_files": 0,
            "a_key_added_later": true
        })
    }

    #[test]
    fn sync_records_of_live_daemons_under_the_mount_point_are_listed() {
        let run = tempfile::tempdir().unwrap();
        let mnt = tempfile::tempdir().unwrap();
        let mount = std::fs::canonicalize(mnt.path()).unwrap();
        let me = std::process::id();
        let put = |name: &str, v: serde_json::Value| {
            std::fs::write(run.path().join(name), serde_json::to_vec(&v).unwrap()).unwrap();
        };
        let whole = mount.display().to_string();
        let sub = mount.join("photos").display().to_string();
        put("sync-0000000000000001.json", record(&whole, me));
        put("sync-0000000000000002.json", record(&sub, me));
        // A crashed daemon (PIDs never reach this value), another tree, a
        // sibling whose name only starts like the mount point, and an array
        // record of the mount daemon: none of them is listed.
        put("sync-0000000000000003.json", record(&whole, 0x7fff_fff0));
        put("sync-0000000000000004.json", record("/elsewhere", me));
        put(
            "sync-0000000000000005.json",
            record(&format!("{whole}x"), me),
        );
        put(
            "0123-uuid.json",
            serde_json::json!({"name": "a", "pid": me}),
        );
        std::fs::write(run.path().join("sync-garbage.json"), b"{not json").unwrap();

        let got = sync_records(run.path(), mnt.path());
        let sources: Vec<&str> = got.iter().map(|s| s.source.as_str()).collect();
        assert_eq!(sources, [whole.as_str(), sub.as_str()]);
        assert_eq!(got[0].bucket, "backup");
        assert_eq!(got[0].prefix, "pi/");
        assert_eq!(got[0].state, "watching");
        assert_eq!(got[0].last_success_unix, Some(1_700_000_090));
        assert_eq!((got[0].pending_files, got[0].pending_bytes), (2, 2048));
        assert!(sync_records(run.path(), Path::new("/nonexistent")).is_empty());
    }

    #[test]
    fn the_sync_line_says_state_age_and_pending_work() {
        let s: SyncJson = serde_json::from_value(record("/mnt/array", 42)).unwrap();
        assert_eq!(
            sync_line(&s, 1_700_000_150),
            "  sync to s3://backup/pi/ from /mnt/array: watching (pid 42), last success 1m00s ago, 2 file(s) (2.0 KiB) pending"
        );
    }

    #[test]
    fn a_stopped_scrub_is_shown_as_partial_with_its_end() {
        let mut s = LastScrubJson {
            finished_unix: 1_700_000_000,
            repair: false,
            complete: false,
            bytes: 5 << 20,
            mismatches: 0,
            redundancy_mismatches: 0,
            repaired: 0,
            unrecoverable: 0,
        };
        let line = last_scrub_line(&s, 1_700_000_090);
        assert!(line.contains("STOPPED before the end"), "{line}");
        assert!(line.contains("partial"), "{line}");
        assert!(line.contains("1m30s ago"), "{line}");
        assert!(line.contains("5.0 MiB checked"), "{line}");
        s.complete = true;
        s.repair = true;
        let line = last_scrub_line(&s, 1_700_000_090);
        assert!(
            line.starts_with("  last scrub --repair: finished 1m30s ago"),
            "{line}"
        );
        assert!(
            !line.contains("STOPPED") && !line.contains("partial"),
            "{line}"
        );
    }

    #[test]
    fn a_status_without_the_sync_key_still_parses() {
        // A mount daemon of the previous release answers without `sync`.
        let mut v = serde_json::to_value(offline_example()).unwrap();
        v.as_object_mut().unwrap().remove("sync");
        let back: StatusJson = serde_json::from_value(v).unwrap();
        assert_eq!(back.sync, None);
    }

    fn offline_example() -> StatusJson {
        StatusJson {
            name: "a".into(),
            uuid: "u".into(),
            level: "raid1".into(),
            chunk_size: 65536,
            events: 1,
            clean: true,
            degraded: false,
            failed: false,
            failures_tolerated: 1,
            failures_left: Some(1),
            members: Vec::new(),
            live: false,
            mountpoint: None,
            pid: None,
            spares: Vec::new(),
            rebuild: None,
            scrub: None,
            last_scrub: None,
            sync: None,
        }
    }
}
