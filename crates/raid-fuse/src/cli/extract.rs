//! `raidfs extract SPEC... DEST [--path SUB] [--force]`: the last resort.
//! Copy the files out of an array's member directories without mounting
//! it: the array is assembled read-only (degraded or dirty is accepted)
//! through [`super::readonly`], so nothing is ever written to a member,
//! and the tree is copied to DEST with directories, regular files,
//! symlinks, hard links (copied once, then linked), FIFOs and device
//! nodes, modes, owners, times and extended attributes.
//!
//! A file with blocks that can be neither read nor rebuilt is still copied:
//! every readable block lands in place and each unreadable 4 KiB block is
//! left as zeros (a hole). Such files are listed at the end and the exit
//! status is 2; 0 means every byte was copied; 1 is an error that stopped
//! the extraction.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use raid_array::{Array, Attr, FileKind, ROOT_INO};

/// Exit status when some files were copied with unreadable blocks.
pub const EXIT_DAMAGED: i32 = 2;

/// Bytes read from the array per call.
const READ_SIZE: usize = 1 << 20;
/// Granularity of the retry after a failed read (the engine's checksum block).
const BLOCK: usize = 4096;

/// Arguments of `raidfs extract`.
#[derive(clap::Args, Debug)]
pub struct ExtractArgs {
    /// The member directories (each a directory, or several joined by ':',
    /// or an array name or UUID), then DEST, the directory to copy into
    /// (created if missing).
    #[arg(required = true, num_args = 2.., value_name = "SPEC... DEST")]
    pub paths: Vec<String>,
    /// Copy only this file or directory of the array (e.g. /photos/2024).
    #[arg(long, value_name = "SUB")]
    pub path: Option<String>,
    /// Replace files that already exist in DEST (otherwise nothing is
    /// copied when any would be overwritten).
    #[arg(long)]
    pub force: bool,
}

/// One entry to copy: where it goes (relative to DEST) and what it is.
struct Entry {
    rel: PathBuf,
    attr: Attr,
}

/// What an extraction did.
#[derive(Debug, Default)]
pub struct Summary {
    pub dirs: u64,
    pub files: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    pub specials: u64,
    pub bytes: u64,
    /// Files with unreadable blocks: (path in DEST, unreadable bytes).
    pub damaged: Vec<(PathBuf, u64)>,
    /// Owners, times or xattrs that could not be set (first few messages).
    pub attr_failures: Vec<String>,
    pub attr_failure_count: u64,
}

pub fn run(args: &ExtractArgs) -> Result<()> {
    let (dest, specs) = args
        .paths
        .split_last()
        .context("usage: raidfs extract SPEC... DEST")?;
    let dest = PathBuf::from(dest);
    let members = super::readonly::members(specs)?;
    refuse_dest_in_member(&dest, &members)?;
    let withheld = Arc::new(super::readonly::Withheld::default());
    let array = super::readonly::assemble(members, &withheld)?;
    let st = array.status();
    if st.degraded {
        eprintln!(
            "array {} is degraded: missing data is rebuilt from parity as it is read",
            st.name
        );
    }
    let sum = extract(&array, &dest, args.path.as_deref(), args.force);
    // Read-only: closing writes nothing, it only stops the engine's threads.
    if let Err(e) = array.close() {
        tracing::warn!(error = %e, "closing the read-only array");
    }
    let sum = sum?;
    println!(
        "extracted {} files, {} directories, {} symlinks, {} hard links, {} special files, {} bytes into {}",
        sum.files,
        sum.dirs,
        sum.symlinks,
        sum.hardlinks,
        sum.specials,
        sum.bytes,
        dest.display()
    );
    if sum.attr_failure_count > 0 {
        eprintln!(
            "{} attributes (owner, times, xattrs) could not be set, e.g.:",
            sum.attr_failure_count
        );
        for m in &sum.attr_failures {
            eprintln!("  {m}");
        }
    }
    let w = withheld.writes.load(Ordering::Relaxed);
    if w > 0 {
        eprintln!(
            "{w} repair writes were NOT done (the members are only read): \
             mount the array and run `raidfs scrub --repair` to heal them"
        );
    }
    if !sum.damaged.is_empty() {
        eprintln!(
            "{} files have unreadable blocks; they were copied with those blocks left as zeros:",
            sum.damaged.len()
        );
        for (p, n) in &sum.damaged {
            eprintln!("  {} ({n} bytes unreadable)", p.display());
        }
        std::process::exit(EXIT_DAMAGED);
    }
    Ok(())
}

/// Writing DEST inside a member directory would write to the member.
fn refuse_dest_in_member(dest: &Path, members: &[PathBuf]) -> Result<()> {
    let mut probe = dest.to_path_buf();
    while !probe.exists() {
        match probe.parent() {
            Some(p) if !p.as_os_str().is_empty() => probe = p.to_path_buf(),
            _ => {
                probe = PathBuf::from(".");
                break;
            }
        }
    }
    let probe = probe
        .canonicalize()
        .with_context(|| format!("{}", probe.display()))?;
    for m in members {
        if let Ok(m) = m.canonicalize()
            && probe.starts_with(&m)
        {
            bail!(
                "{} is inside member directory {}: extract to another disk",
                dest.display(),
                m.display()
            );
        }
    }
    Ok(())
}

fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

/// Every entry under `ino`, parents before children (`rel` = "" for `ino`).
fn walk(array: &Array, ino: u64) -> Result<Vec<Entry>> {
    let mut out = vec![Entry {
        rel: PathBuf::new(),
        attr: array.getattr(ino)?,
    }];
    let mut i = 0;
    while i < out.len() {
        if out[i].attr.kind == FileKind::Dir {
            let dir = out[i].attr.ino;
            let base = out[i].rel.clone();
            let mut off = 0;
            loop {
                let batch = array
                    .readdir(dir, off, 1024)
                    .with_context(|| format!("reading directory {}", base.display()))?;
                let Some(last) = batch.last() else { break };
                off = last.offset;
                for e in batch {
                    if e.name == b"." || e.name == b".." {
                        continue;
                    }
                    let rel = base.join(os(&e.name));
                    let attr = array
                        .getattr(e.ino)
                        .with_context(|| format!("{}", rel.display()))?;
                    out.push(Entry { rel, attr });
                }
            }
        }
        i += 1;
    }
    Ok(out)
}

/// Copy the array's tree (or `sub` of it) into `dest`.
pub fn extract(array: &Array, dest: &Path, sub: Option<&str>, force: bool) -> Result<Summary> {
    let start = match sub {
        Some(s) => super::debug::resolve_inode(array, s)?,
        None => ROOT_INO,
    };
    let mut entries = walk(array, start)?;
    // A single file extracts to DEST/<its name>.
    if entries[0].attr.kind != FileKind::Dir {
        let name = Path::new(sub.unwrap_or("file"))
            .file_name()
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("file"));
        entries[0].rel = name;
        fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    }
    // Refuse before copying anything if files would be overwritten.
    if !force {
        let clashes: Vec<String> = entries
            .iter()
            .filter(|e| !e.rel.as_os_str().is_empty())
            .filter_map(|e| {
                let md = fs::symlink_metadata(dest.join(&e.rel)).ok()?;
                (!(md.is_dir() && e.attr.kind == FileKind::Dir))
                    .then(|| dest.join(&e.rel).display().to_string())
            })
            .collect();
        if !clashes.is_empty() {
            bail!(
                "{} entries already exist in {} (e.g. {}); nothing was copied: use --force to overwrite",
                clashes.len(),
                dest.display(),
                clashes[..clashes.len().min(3)].join(", ")
            );
        }
    }
    let total: u64 = entries
        .iter()
        .filter(|e| e.attr.kind == FileKind::File)
        .map(|e| e.attr.size)
        .sum();
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut sum = Summary::default();
    let mut linked: HashMap<u64, PathBuf> = HashMap::new();
    let mut dirs: Vec<(PathBuf, &Attr)> = Vec::new();
    for e in &entries {
        let to = dest.join(&e.rel);
        let a = &e.attr;
        if a.kind == FileKind::Dir {
            match fs::symlink_metadata(&to) {
                Ok(md) if md.is_dir() => {}
                Ok(_) => {
                    fs::remove_file(&to).with_context(|| format!("replacing {}", to.display()))?;
                    fs::create_dir(&to).with_context(|| format!("creating {}", to.display()))?;
                }
                Err(_) => {
                    fs::create_dir_all(&to).with_context(|| format!("creating {}", to.display()))?
                }
            }
            sum.dirs += 1;
            dirs.push((to, a));
            continue;
        }
        if force {
            match fs::symlink_metadata(&to) {
                Ok(md) if md.is_dir() => fs::remove_dir_all(&to),
                Ok(_) => fs::remove_file(&to),
                Err(_) => Ok(()),
            }
            .with_context(|| format!("replacing {}", to.display()))?;
        }
        if a.nlink > 1 {
            if let Some(first) = linked.get(&a.ino) {
                fs::hard_link(first, &to)
                    .with_context(|| format!("linking {} to {}", to.display(), first.display()))?;
                sum.hardlinks += 1;
                continue;
            }
            linked.insert(a.ino, to.clone());
        }
        match a.kind {
            FileKind::File => {
                let bad = copy_file(array, a, &to, &bar)?;
                sum.files += 1;
                sum.bytes += a.size;
                if bad > 0 {
                    bar.suspend(|| {
                        eprintln!("{}: {bad} bytes unreadable, left as zeros", to.display())
                    });
                    sum.damaged.push((to.clone(), bad));
                }
            }
            FileKind::Symlink => {
                let target = array
                    .readlink(a.ino)
                    .with_context(|| format!("reading symlink {}", e.rel.display()))?;
                std::os::unix::fs::symlink(os(&target), &to)
                    .with_context(|| format!("creating symlink {}", to.display()))?;
                sum.symlinks += 1;
            }
            FileKind::Socket => {
                // A socket is only meaningful to a running program.
                bar.suspend(|| eprintln!("{}: socket skipped", to.display()));
                continue;
            }
            FileKind::Fifo | FileKind::CharDev | FileKind::BlockDev => {
                make_node(a, &to)?;
                sum.specials += 1;
            }
            FileKind::Dir => unreachable!("handled above"),
        }
        set_attrs(array, a, &to, &mut sum);
    }
    // Directories last and deepest first, so copying into them does not
    // change the times just set.
    for (to, a) in dirs.iter().rev() {
        set_attrs(array, a, to, &mut sum);
    }
    bar.finish_and_clear();
    Ok(sum)
}

/// Copy one regular file; returns the number of bytes that could not be
/// read (left as zeros).
fn copy_file(array: &Array, a: &Attr, to: &Path, bar: &indicatif::ProgressBar) -> Result<u64> {
    let f = File::create_new(to).with_context(|| format!("creating {}", to.display()))?;
    let mut bad = 0u64;
    let mut off = 0u64;
    while off < a.size {
        let want = (a.size - off).min(READ_SIZE as u64) as usize;
        match array.read(a.ino, off, want) {
            Ok(buf) if buf.len() == want => {
                f.write_all_at(&buf, off)
                    .with_context(|| format!("writing {}", to.display()))?;
            }
            _ => {
                // Salvage block by block what the big read could not give.
                let mut b = 0;
                while b < want {
                    let n = (want - b).min(BLOCK);
                    match array.read(a.ino, off + b as u64, n) {
                        Ok(buf) if buf.len() == n => f
                            .write_all_at(&buf, off + b as u64)
                            .with_context(|| format!("writing {}", to.display()))?,
                        _ => bad += n as u64,
                    }
                    b += n;
                }
            }
        }
        off += want as u64;
        bar.inc(want as u64);
    }
    // Unreadable blocks at the end are holes: give the file its full size.
    f.set_len(a.size)
        .with_context(|| format!("sizing {}", to.display()))?;
    f.sync_all()
        .with_context(|| format!("syncing {}", to.display()))?;
    Ok(bad)
}

fn make_node(a: &Attr, to: &Path) -> Result<()> {
    use rustix::fs::{CWD, FileType, Mode, mknodat};
    let ft = match a.kind {
        FileKind::Fifo => FileType::Fifo,
        FileKind::CharDev => FileType::CharacterDevice,
        _ => FileType::BlockDevice,
    };
    mknodat(
        CWD,
        to,
        ft,
        Mode::from_raw_mode(u32::from(a.perm)),
        u64::from(a.rdev),
    )
    .with_context(|| format!("creating {}", to.display()))
}

fn note(sum: &mut Summary, msg: String) {
    sum.attr_failure_count += 1;
    if sum.attr_failures.len() < 5 {
        sum.attr_failures.push(msg);
    }
}

fn timespec(t: SystemTime) -> rustix::fs::Timespec {
    let (sec, nsec) = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, i64::from(d.subsec_nanos())),
        Err(e) => {
            let d = e.duration();
            let mut sec = -(d.as_secs() as i64);
            let mut nsec = i64::from(d.subsec_nanos());
            if nsec > 0 {
                sec -= 1;
                nsec = 1_000_000_000 - nsec;
            }
            (sec, nsec)
        }
    };
    rustix::fs::Timespec {
        tv_sec: sec,
        tv_nsec: nsec as _,
    }
}

/// Extended attributes, owner, mode, then times (each step may reset what
/// an earlier one would: chown clears set-uid bits, writes change mtime).
/// Failures are counted, not fatal (e.g. chown when not root).
fn set_attrs(array: &Array, a: &Attr, to: &Path, sum: &mut Summary) {
    use rustix::fs::{AtFlags, CWD, Timestamps, XattrFlags, lsetxattr, utimensat};
    match array.listxattr(a.ino) {
        Ok(names) => {
            for name in names {
                let r = array
                    .getxattr(a.ino, os(&name))
                    .map_err(|e| e.to_string())
                    .and_then(|v| {
                        lsetxattr(to, os(&name), &v, XattrFlags::empty()).map_err(|e| e.to_string())
                    });
                if let Err(e) = r {
                    note(
                        sum,
                        format!(
                            "{}: xattr {}: {e}",
                            to.display(),
                            String::from_utf8_lossy(&name)
                        ),
                    );
                }
            }
        }
        Err(e) => note(sum, format!("{}: listing xattrs: {e}", to.display())),
    }
    if let Err(e) = std::os::unix::fs::lchown(to, Some(a.uid), Some(a.gid)) {
        note(
            sum,
            format!("{}: chown {}:{}: {e}", to.display(), a.uid, a.gid),
        );
    }
    if a.kind != FileKind::Symlink {
        use std::os::unix::fs::PermissionsExt;
        if let Err(e) = fs::set_permissions(to, fs::Permissions::from_mode(u32::from(a.perm))) {
            note(sum, format!("{}: chmod {:o}: {e}", to.display(), a.perm));
        }
    }
    let ts = Timestamps {
        last_access: timespec(a.atime),
        last_modification: timespec(a.mtime),
    };
    if let Err(e) = utimensat(CWD, to, &ts, AtFlags::SYMLINK_NOFOLLOW) {
        note(sum, format!("{}: times: {e}", to.display()));
    }
}
