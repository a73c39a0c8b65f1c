//! `raidfs create`: write superblocks and an empty filesystem onto member
//! directories.

use std::path::PathBuf;

use anyhow::{Context, Result};
use raid_array::{Array, CreateOptions};
use raid_core::Level;

/// Arguments of `raidfs create`.
#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// RAID level: raid0, raid1, raid4, raid5, raid6, raid10, raid01,
    /// raid50, raid60, or K+M (e.g. 4+3).
    #[arg(long, short = 'l')]
    pub level: String,
    /// Array name, used by `mount.raidfs NAME DIR` to find the members.
    #[arg(long, short = 'n')]
    pub name: String,
    /// Chunk size (power of two, 4K..16M).
    #[arg(long, short = 'c', default_value = "64K", value_parser = super::parse_size)]
    pub chunk: u32,
    /// Allow several members on one filesystem (no real redundancy; for
    /// trials and tests).
    #[arg(long)]
    pub allow_same_fs: bool,
    /// Empty directory to record as a hot spare (repeatable): it takes
    /// over a failed member by itself.
    #[arg(long = "spare", value_name = "DIR")]
    pub spares: Vec<PathBuf>,
    /// Member directories, in slot order.
    #[arg(required = true)]
    pub members: Vec<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arrays are mounted and administered by name, so a second array of a
/// name another array on this machine already has would make both
/// ambiguous: refused, naming where the other one is (the same places
/// `mount.raidfs NAME` searches).
fn refuse_a_name_in_use(name: &str) -> Result<()> {
    for dir in crate::spec::candidates(&[])? {
        // A directory an interrupted create left (events 0) is no array:
        // the create it names is being run again, and takes it back.
        if let Ok(sb) = raid_array::assemble::read_superblock(&dir)
            && sb.name == name
            && sb.events > 0
        {
            anyhow::bail!(
                "an array named {name:?} already exists ({}, member directory {}): \
                 choose another name, or wipe that array's directories first",
                raid_array::format::superblock::uuid_string(&sb.array_uuid),
                dir.display()
            );
        }
    }
    Ok(())
}

/// Refuse a name that every command would read as something else: a
/// UUID (32 hex digits) is looked up as a UUID, and `.`/`..` are
/// directories, so the array could never be named.
fn check_name(name: &str) -> Result<()> {
    if name == "." || name == ".." {
        anyhow::bail!("array name {name:?}: a directory's name cannot name an array");
    }
    if matches!(
        crate::spec::parse(name),
        Ok(crate::spec::Spec::Array(raid_array::Selector::Uuid(_)))
    ) {
        anyhow::bail!(
            "array name {name:?} reads as a UUID, and commands would look it up as one: \
             choose a name that is not 32 hex digits"
        );
    }
    Ok(())
}

pub fn run(args: &CreateArgs) -> Result<()> {
    let level: Level = args
        .level
        .parse()
        .with_context(|| format!("level {:?}", args.level))?;
    check_name(&args.name)?;
    refuse_a_name_in_use(&args.name)?;
    let mut opts = CreateOptions::new(&args.name, level, args.members.clone());
    opts.chunk_size = args.chunk;
    opts.allow_same_fs = args.allow_same_fs;
    opts.spares = args.spares.clone();
    let array = Array::create(&opts).context("cannot create the array")?;
    let status = array.status();
    array.close().context("closing the new array")?;
    if args.json {
        // As `raidfs status` will show it: from the superblocks as closed.
        // (Spares first: on equal events the last superblock read wins,
        // and that should be a member's.)
        let dirs: Vec<_> = args.spares.iter().chain(&args.members).cloned().collect();
        let closed =
            super::status::offline(&dirs).context("reading the new array's superblocks")?;
        println!("{}", serde_json::to_string_pretty(&closed)?);
    } else {
        println!(
            "created {} array {:?} ({}) on {} members, chunk {} KiB",
            status.level,
            status.name,
            status.uuid,
            status.members.len(),
            status.chunk_size / 1024
        );
        for s in &status.spares {
            println!("hot spare {} ({})", s.path, s.uuid);
        }
        println!("mount it with: mount.raidfs {} /mnt/array", args.name);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_read_as_a_uuid_or_a_directory_are_refused() {
        for bad in [
            "deadbeefdeadbeefdeadbeefdeadbeef",
            "DEADBEEF-dead-beef-dead-beefdeadbeef",
            ".",
            "..",
        ] {
            assert!(super::check_name(bad).is_err(), "{bad}");
        }
        for good in ["media", "deadbeef", "a.b", "...", "backup-2024"] {
            assert!(super::check_name(good).is_ok(), "{good}");
        }
    }
}
