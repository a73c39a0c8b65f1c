//! Creating an array: check every member directory, then write the initial
//! metadata (an empty root) and, last, the superblocks. The superblock is
//! written last on purpose: a directory only counts as a member once its
//! metadata is in place, so an interrupted create leaves nothing that
//! assembles.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;

use raid_core::{Geometry, Level};

use crate::format::superblock::{self, MemberSlot, SlotState, SpareSlot, Superblock, new_uuid};
use crate::member::{DirMember, Member};
use crate::meta::Namespace;
use crate::meta::inode::now_ns;
use crate::meta::store::Meta;
use crate::{ArrayError, Result};

/// Default chunk size: 64 KiB, a good fit for USB disks and a Pi's caches.
pub const DEFAULT_CHUNK_SIZE: u32 = 64 * 1024;

/// What to create.
#[derive(Clone, Debug)]
pub struct CreateOptions {
    /// Array name (1–64 bytes of `A-Z a-z 0-9 . _ -`), used to find members.
    pub name: String,
    pub level: Level,
    pub chunk_size: u32,
    /// Member directories, in slot order.
    pub members: Vec<PathBuf>,
    /// Empty directories to record as hot spares: each takes over a failed
    /// member automatically.
    pub spares: Vec<PathBuf>,
    /// Allow two members on the same filesystem (useless for redundancy;
    /// for tests and experiments).
    pub allow_same_fs: bool,
    /// Owner of the root directory.
    pub uid: u32,
    pub gid: u32,
}

impl CreateOptions {
    /// Options with the defaults: 64 KiB chunks, members on distinct
    /// filesystems, root owned by the calling user.
    pub fn new(name: &str, level: Level, members: Vec<PathBuf>) -> Self {
        CreateOptions {
            name: name.to_string(),
            level,
            chunk_size: DEFAULT_CHUNK_SIZE,
            members,
            spares: Vec::new(),
            allow_same_fs: false,
            uid: rustix::process::getuid().as_raw(),
            gid: rustix::process::getgid().as_raw(),
        }
    }
}

/// Check an array name.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= superblock::NAME_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !ok {
        return Err(ArrayError::Invalid(format!(
            "array name {name:?}: use 1 to {} characters from A-Z a-z 0-9 . _ -",
            superblock::NAME_MAX
        )));
    }
    Ok(())
}

/// Where a superblock goes: slot (for errors), member UUID, member index
/// (or the spare index), the directory.
type SuperblockTarget<'a> = (usize, [u8; 16], u32, &'a Arc<dyn Member>);

/// Whether the `.raidfs` of `path` holds only what an interrupted create
/// left: no file's data, and a superblock still marked as being created
/// (events 0), or nothing but the superblock being written when it stopped.
fn unfinished_create(path: &std::path::Path) -> bool {
    let dot = path.join(".raidfs");
    let no_data = match std::fs::read_dir(dot.join("data")) {
        Ok(mut d) => d.next().is_none(),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    };
    if !no_data {
        return false;
    }
    match std::fs::read(path.join(superblock::PATH)) {
        Ok(b) => Superblock::decode(&b).is_ok_and(|sb| sb.events == 0),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::read_dir(&dot)
            .map(|d| {
                d.filter_map(std::result::Result::ok)
                    .all(|e| e.file_name() == "superblock.tmp")
            })
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// Refuse a member directory holding anything but an empty `lost+found`
/// (what a fresh ext4 has): creating an array there would bury the files in
/// a directory the array owns, and most likely the wrong directory was named.
pub(crate) fn check_empty(what: &str, path: &std::path::Path) -> Result<()> {
    check_empty_except(what, path, &[])
}

/// As [`check_empty`], ignoring the entries named in `except`.
pub(crate) fn check_empty_except(
    what: &str,
    path: &std::path::Path,
    except: &[&str],
) -> Result<()> {
    let io = |e: std::io::Error| ArrayError::Invalid(format!("{what} ({}): {e}", path.display()));
    let mut held = Vec::new();
    for entry in std::fs::read_dir(path).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        if except.iter().any(|e| name == *e) {
            continue;
        }
        if name == "lost+found" && entry.file_type().map_err(io)?.is_dir() {
            let empty = std::fs::read_dir(entry.path())
                .map_err(io)?
                .next()
                .is_none();
            if empty {
                continue;
            }
        }
        held.push(name.to_string_lossy().into_owned());
    }
    if held.is_empty() {
        return Ok(());
    }
    held.sort();
    const SHOWN: usize = 5;
    let mut list = held
        .iter()
        .take(SHOWN)
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    if held.len() > SHOWN {
        list.push_str(&format!(" and {} more", held.len() - SHOWN));
    }
    Err(ArrayError::Invalid(format!(
        "{what} ({}) is not empty: it holds {list}; an array uses only empty \
         directories (an empty lost+found is allowed) — check the path, or move those files away",
        path.display()
    )))
}

/// Write a new array to the member directories. Returns the array UUID.
/// Nothing is written unless every directory passes every check.
pub fn create(opts: &CreateOptions) -> Result<[u8; 16]> {
    check_name(&opts.name)?;
    let geometry = Geometry::new(opts.level, opts.members.len(), opts.chunk_size).map_err(|e| {
        ArrayError::Invalid(format!(
            "{} with {} members: {e}",
            opts.level,
            opts.members.len()
        ))
    })?;
    // A stripe over one member is that disk with the array's overhead and
    // nothing gained (mdadm wants --force for it). Refused here only: an
    // array made so by an older version still assembles.
    if matches!(opts.level, Level::Raid0) && opts.members.len() < 2 {
        return Err(ArrayError::Invalid(
            "raid0 needs at least 2 members: striped over one, it only adds overhead".into(),
        ));
    }
    if opts.members.len() > superblock::MAX_MEMBERS as usize {
        return Err(ArrayError::Invalid(format!(
            "at most {} members",
            superblock::MAX_MEMBERS
        )));
    }
    let mut seen_dirs: HashMap<(u64, u64), &PathBuf> = HashMap::new();
    let mut seen_fs: HashMap<u64, &PathBuf> = HashMap::new();
    let mut take_back: Vec<std::path::PathBuf> = Vec::new();
    let mut members: Vec<(usize, Arc<dyn Member>)> = Vec::new();
    let mut spares: Vec<Arc<dyn Member>> = Vec::new();
    let all = opts.members.iter().chain(&opts.spares).enumerate();
    for (k, path) in all {
        let is_spare = k >= opts.members.len();
        let what = if is_spare {
            format!("spare {}", k - opts.members.len())
        } else {
            format!("member {k}")
        };
        let i = k;
        let md = std::fs::metadata(path).map_err(|e| {
            // As mdadm wants its devices there, so does create its
            // directories: one on a disk that is not mounted must not be
            // made on the root filesystem instead.
            let hint = if e.kind() == std::io::ErrorKind::NotFound {
                " (is its disk mounted? create the directory on it first)"
            } else {
                ""
            };
            ArrayError::Invalid(format!("{what} ({}): {e}{hint}", path.display()))
        })?;
        if !md.is_dir() {
            return Err(ArrayError::Invalid(format!(
                "{what} ({}): not a directory",
                path.display()
            )));
        }
        if let Some(other) = seen_dirs.insert((md.dev(), md.ino()), path) {
            return Err(ArrayError::Invalid(format!(
                "{} and {} are the same directory",
                other.display(),
                path.display()
            )));
        }
        if let Some(other) = seen_fs.insert(md.dev(), path)
            && !opts.allow_same_fs
        {
            return Err(ArrayError::Invalid(format!(
                "{} and {} are on the same filesystem: one disk failure would take both \
                 (`raidfs create --allow-same-fs` allows it anyway, e.g. to try raidfs out)",
                other.display(),
                path.display()
            )));
        }
        let m = DirMember::open(path).map_err(|e| ArrayError::Invalid(format!("{what}: {e}")))?;
        // Held by another process (a directory another array still uses):
        // refused before anything is written.
        if !m
            .lock_exclusive(std::time::Duration::ZERO)
            .map_err(|e| ArrayError::Invalid(format!("{what}: cannot lock: {e}")))?
        {
            return Err(crate::exclusive::busy(path));
        }
        let has_raidfs = m.exists(".raidfs").map_err(|e| ArrayError::MemberIo {
            member: i,
            path: path.display().to_string(),
            context: "check for .raidfs".into(),
            source: e,
        })?;
        if has_raidfs && unfinished_create(path) {
            // What an interrupted create left: nothing of anyone's yet.
            // Removed once every directory has passed its checks.
            take_back.push(path.to_path_buf());
        } else if has_raidfs {
            return Err(ArrayError::Invalid(format!(
                "{what} ({}) already holds a .raidfs directory: it belongs to an array; \
                 remove .raidfs first if that array is no longer wanted",
                path.display()
            )));
        }
        check_empty_except(&what, path, &[".raidfs"])?;
        if is_spare {
            spares.push(Arc::new(m));
        } else {
            members.push((i, Arc::new(m)));
        }
    }
    if opts.spares.len() > superblock::MAX_MEMBERS as usize {
        return Err(ArrayError::Invalid(format!(
            "at most {} spares",
            superblock::MAX_MEMBERS
        )));
    }
    // Every directory passed: what interrupted creates left goes now.
    for path in &take_back {
        tracing::info!(path = %path.display(), "taking back a directory an interrupted create left");
        std::fs::remove_dir_all(path.join(".raidfs")).map_err(|e| {
            ArrayError::Invalid(format!(
                "{}: cannot remove what an interrupted create left: {e}",
                path.display()
            ))
        })?;
    }
    let array_uuid = new_uuid();
    let slots: Vec<MemberSlot> = (0..members.len())
        .map(|_| MemberSlot {
            uuid: new_uuid(),
            state: SlotState::Active,
        })
        .collect();
    let spare_slots: Vec<SpareSlot> = spares
        .iter()
        .map(|_| SpareSlot {
            uuid: new_uuid(),
            flags: 0,
        })
        .collect();
    let code = opts.level.to_code();
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // Members first: a spare's superblock alone never assembles.
    let targets: Vec<SuperblockTarget<'_>> = members
        .iter()
        .enumerate()
        .map(|(k, (i, m))| (*i, slots[k].uuid, k as u32, m))
        .chain(
            spares
                .iter()
                .zip(&spare_slots)
                .enumerate()
                .map(|(k, (m, s))| (members.len() + k, s.uuid, superblock::SPARE_INDEX, m)),
        )
        .collect();
    let superblock_of = |uuid: [u8; 16], index: u32, events: u64| Superblock {
        minor: superblock::MINOR,
        array_uuid,
        member_uuid: uuid,
        member_index: index,
        level_code: code.code,
        level_params: code.params,
        chunk_size: geometry.chunk_size(),
        clean: events > 0,
        events,
        journal_seq: 0,
        created,
        name: opts.name.clone(),
        members: slots.clone(),
        spares: spare_slots.clone(),
    };
    let write_superblocks = |events: u64| -> Result<()> {
        for &(i, uuid, index, m) in &targets {
            m.write_atomic(
                superblock::PATH,
                &superblock_of(uuid, index, events).encode()?,
            )
            .map_err(|e| ArrayError::MemberIo {
                member: i,
                path: m.describe(),
                context: "write superblock".into(),
                source: e,
            })?;
        }
        Ok(())
    };
    let write_all = || -> Result<()> {
        // Every directory is marked first as an array being created
        // (events 0): a create interrupted from here on leaves directories
        // that no assembly takes, and that the next create takes back.
        write_superblocks(0)?;
        let ns = Namespace::new(opts.uid, opts.gid, now_ns());
        Meta::format(array_uuid, &members, &ns)?;
        // An empty write-intent log: from the start the array knows that
        // nothing changed while a member was out, so a member absent at
        // the first mount can later be re-added.
        for (i, m) in &members {
            crate::intent::write_empty(m.as_ref()).map_err(|e| ArrayError::MemberIo {
                member: *i,
                path: m.describe(),
                context: "write the write-intent log".into(),
                source: e,
            })?;
        }
        // Finished: every superblock says so (events 1, clean).
        write_superblocks(1)
    };
    if let Err(e) = write_all() {
        // Nothing of it is left behind: every directory had no .raidfs
        // before (or one an interrupted create left).
        for p in opts.members.iter().chain(&opts.spares) {
            match std::fs::remove_dir_all(p.join(".raidfs")) {
                Ok(()) => {}
                Err(r) if r.kind() == std::io::ErrorKind::NotFound => {}
                Err(r) => {
                    tracing::warn!(path = %p.display(), error = %r, "cannot remove what the failed create wrote")
                }
            }
        }
        return Err(e);
    }
    tracing::info!(name = %opts.name, uuid = %superblock::uuid_string(&array_uuid), level = %opts.level,
        members = members.len(), spares = spares.len(), "array created");
    Ok(array_uuid)
}
