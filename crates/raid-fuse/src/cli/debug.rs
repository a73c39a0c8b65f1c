//! `raidfs debug`: print on-disk records for support and recovery.
//!
//! ```text
//! raidfs debug dump-superblock MEMBERDIR [--json]
//! raidfs debug dump-journal MEMBERDIR [--json]     every checkpoint and journal record
//! raidfs debug dump-inode SPEC INO|PATH [--json]   one inode of the assembled array
//! ```
//! All of them only read: files are opened read-only and the array is
//! assembled through [`super::readonly`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use raid_array::ROOT_INO;
use raid_array::format::dump;
use raid_array::format::{checkpoint, journal, superblock};
use serde::Serialize;

/// Arguments of `raidfs debug`.
#[derive(clap::Args, Debug)]
pub struct DebugArgs {
    #[command(subcommand)]
    pub command: DebugCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum DebugCommand {
    /// Decode a member's superblock (.raidfs/superblock).
    DumpSuperblock {
        member: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List a member's checkpoints and every journal record (sequence,
    /// operation, whether its CRC is good).
    DumpJournal {
        member: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Describe one inode (by number, or by path inside the array) of the
    /// array assembled read-only from SPEC (member dirs joined by ':', an
    /// array name or UUID).
    DumpInode {
        spec: String,
        /// Inode number, or a path such as /photos/a.jpg.
        inode: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// The JSON shape of `dump-journal`.
#[derive(Serialize, Debug)]
pub struct JournalDump {
    pub member: String,
    pub checkpoints: Vec<dump::CheckpointInfo>,
    pub segments: Vec<dump::SegmentInfo>,
}

pub fn run(args: &DebugArgs) -> Result<()> {
    match &args.command {
        DebugCommand::DumpSuperblock { member, json } => dump_superblock(member, *json),
        DebugCommand::DumpJournal { member, json } => dump_journal(member, *json),
        DebugCommand::DumpInode { spec, inode, json } => dump_inode(spec, inode, *json),
    }
}

fn dump_superblock(member: &Path, json: bool) -> Result<()> {
    let path = member.join(superblock::PATH);
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    if json {
        let info = dump::superblock_info(&bytes)
            .with_context(|| format!("{} does not decode", path.display()))?;
        println!("{}", serde_json::to_string_pretty(&info)?);
    } else {
        print!("{}", dump::dump(&bytes));
    }
    Ok(())
}

/// The metadata directory's files, oldest first.
fn meta_files(member: &Path) -> Result<Vec<String>> {
    let dir = member.join(".raidfs/meta");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(names)
}

fn dump_journal(member: &Path, json: bool) -> Result<()> {
    let dir = member.join(".raidfs/meta");
    let names = meta_files(member)?;
    let mut out = JournalDump {
        member: member.display().to_string(),
        checkpoints: Vec::new(),
        segments: Vec::new(),
    };
    for n in &names {
        let read = || std::fs::read(dir.join(n)).with_context(|| format!("cannot read {n}"));
        if checkpoint::parse_file_name(n).is_some() {
            out.checkpoints.push(dump::checkpoint_info(n, &read()?));
        } else if journal::parse_segment_name(n).is_some() {
            out.segments.push(dump::journal_info(n, &read()?));
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("metadata of {}", out.member);
    for c in &out.checkpoints {
        match (&c.error, c.seq) {
            (None, Some(seq)) => println!(
                "{}: covers sequence {seq}, {} inodes, {} bytes, CRCs good",
                c.file,
                c.inodes.unwrap_or(0),
                c.payload_bytes.unwrap_or(0)
            ),
            (e, _) => println!("{}: BAD: {}", c.file, e.as_deref().unwrap_or("?")),
        }
    }
    for s in &out.segments {
        match (&s.header_error, s.first_seq) {
            (None, Some(first)) => println!(
                "{}: array {}, first record {first}, {} records",
                s.file,
                s.array_uuid.as_deref().unwrap_or("?"),
                s.records.len()
            ),
            (e, _) => println!("{}: BAD header: {}", s.file, e.as_deref().unwrap_or("?")),
        }
        for r in &s.records {
            println!(
                "  {:>10} @{:<8} {:<4} {}",
                r.seq,
                r.offset,
                if r.crc_ok { "ok" } else { "BAD" },
                r.op
            );
        }
        if s.trailing_bytes > 0 {
            println!(
                "  {} trailing bytes are not a record (torn tail)",
                s.trailing_bytes
            );
        }
    }
    Ok(())
}

/// The inode a number or an in-array path names.
pub fn resolve_inode(array: &raid_array::Array, what: &str) -> Result<u64> {
    if let Ok(n) = what.parse::<u64>() {
        return Ok(n);
    }
    let mut ino = ROOT_INO;
    for comp in Path::new(what).components() {
        use std::path::Component;
        match comp {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(name) => {
                ino = array
                    .lookup(ino, name)
                    .with_context(|| format!("{what}: no entry {}", name.to_string_lossy()))?
                    .ino;
            }
            _ => bail!("{what}: use a path from the array's root without '..'"),
        }
    }
    Ok(ino)
}

fn dump_inode(spec: &str, what: &str, json: bool) -> Result<()> {
    let withheld = Arc::new(super::readonly::Withheld::default());
    let members = super::readonly::members(&[spec.to_string()])?;
    let array = super::readonly::assemble(members, &withheld)?;
    let info = resolve_inode(&array, what)
        .and_then(|ino| dump::inode_info(&array, ino).with_context(|| format!("inode {ino}")));
    // Read-only: closing writes nothing, it only stops the engine's threads.
    if let Err(e) = array.close() {
        tracing::warn!(error = %e, "closing the read-only array");
    }
    let info = info?;
    if json {
        println!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(());
    }
    println!("inode {} ({})", info.ino, info.kind);
    println!(
        "  mode {}  uid {}  gid {}  nlink {}  size {}  rdev {}",
        info.mode, info.uid, info.gid, info.nlink, info.size, info.rdev
    );
    println!(
        "  atime {} ns  mtime {} ns  ctime {} ns",
        info.atime_ns, info.mtime_ns, info.ctime_ns
    );
    if let Some(s) = &info.storage {
        println!("  data  {s}");
    }
    if let Some(t) = &info.target {
        println!("  target {t}");
    }
    if let Some(n) = info.entries {
        println!("  entries {n}");
    }
    for (name, len) in &info.xattrs {
        println!("  xattr {name} ({len} bytes)");
    }
    for s in &info.shards {
        match (s.bytes, &s.error) {
            (Some(b), _) => println!("  slot {} {} {b} bytes", s.slot, s.path),
            (None, e) => println!(
                "  slot {} {} unreadable: {}",
                s.slot,
                s.path,
                e.as_deref().unwrap_or("?")
            ),
        }
    }
    Ok(())
}
