//! Assembling an array from member directories, like md's `analyze_sbs`:
//! read every superblock, refuse what does not belong together, take the
//! freshest superblock (highest events counter, then journal sequence) as
//! the truth about the array, and pick the freshest metadata copy.
//!
//! Refused, with an error naming the directory: a directory without a
//! superblock (most often a disk that did not mount — nothing is ever
//! written there), a corrupt superblock, members of two arrays, two
//! directories claiming one slot, a member the freshest superblock does not
//! know (replaced), more failures than the level survives, and an array that
//! was not shut down cleanly *and* is degraded (a write hole may hide in a
//! stripe that can no longer be checked) unless `force` is given.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use raid_core::Geometry;

use crate::format::superblock::{self, SlotState, Superblock, uuid_string};
use crate::member::{DirMember, Member};
use crate::meta::Namespace;
use crate::meta::load::{self, MetaImage};
use crate::{ArrayError, Result};

/// Which array to look for among candidate directories.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    Name(String),
    Uuid([u8; 16]),
}

/// How to assemble.
#[derive(Clone, Debug)]
pub struct AssembleOptions {
    /// Member directories (any order).
    pub members: Vec<PathBuf>,
    /// Start even if the array is dirty and degraded.
    pub force: bool,
    /// Wait for the journal commit before each metadata operation returns
    /// (durable namespace changes). Without it, metadata becomes durable at
    /// `fsync`, `sync`, checkpoints and `close`.
    pub sync_metadata: bool,
    /// Journal size after which a checkpoint is written.
    pub checkpoint_bytes: u64,
    /// Write nothing to the members, ever: no superblock update (the array
    /// is not even marked dirty), no journal, no checkpoint, no freeing of
    /// orphans; every change is refused with [`ArrayError::ReadOnly`].
    pub read_only: bool,
    /// Options of the rebuilds the engine starts by itself (a hot spare
    /// taking over, a rebuild resumed at assemble); `resume` is decided
    /// per rebuild.
    pub rebuild: crate::ops::RebuildOptions,
    /// When a read records the access time (`relatime` by default, as
    /// Linux mounts).
    pub atime: AtimeMode,
    /// How long to wait for another process to release the member
    /// directories (a daemon still closing the array) before `EBUSY`;
    /// read-only assembles take no lock ([`crate::exclusive`]).
    pub lock_wait: std::time::Duration,
    /// Memory for read-ahead windows of sequential readers, in bytes
    /// (0: no read-ahead); see [`crate::data::readahead`].
    pub read_ahead_budget: u64,
}

/// When a read moves a file's access time (the mount options of the same
/// names).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AtimeMode {
    /// Only when it is not newer than mtime/ctime or is a day old.
    #[default]
    Relatime,
    /// On every read (one journal record per read).
    Strict,
    /// Never.
    NoAtime,
}

impl AssembleOptions {
    pub fn new(members: Vec<PathBuf>) -> Self {
        AssembleOptions {
            members,
            force: false,
            sync_metadata: true,
            checkpoint_bytes: crate::meta::store::DEFAULT_CHECKPOINT_BYTES,
            read_only: false,
            rebuild: crate::ops::RebuildOptions::default(),
            atime: AtimeMode::default(),
            lock_wait: crate::exclusive::DEFAULT_WAIT,
            read_ahead_budget: crate::data::readahead::DEFAULT_BUDGET,
        }
    }
}

/// Read the superblock of a directory, without writing anything.
pub fn read_superblock(path: &Path) -> Result<Superblock> {
    let m = DirMember::open(path)
        .map_err(|e| ArrayError::NotMember(format!("{}: {e}", path.display())))?;
    read_member_superblock(&m)
}

fn read_member_superblock(m: &dyn Member) -> Result<Superblock> {
    let buf = match m.read_all(superblock::PATH) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ArrayError::NotMember(format!(
                "{}: no raidfs superblock (not an array member, or its disk is not mounted)",
                m.describe()
            )));
        }
        Err(e) => {
            return Err(ArrayError::NotMember(format!(
                "{}: cannot read superblock: {e}",
                m.describe()
            )));
        }
    };
    Superblock::decode(&buf).map_err(|e| match e {
        ArrayError::Corrupt { what, detail } => ArrayError::Corrupt {
            what: format!("{what} of {}", m.describe()),
            detail,
        },
        e => e,
    })
}

/// `candidates` with each directory once (by device and inode), under its
/// first writable path, else its first path; in the order given.
fn distinct_directories(candidates: &[PathBuf]) -> Vec<&PathBuf> {
    let key = |c: &PathBuf| std::fs::metadata(c).ok().map(|m| (m.dev(), m.ino()));
    let writable = |c: &PathBuf| {
        rustix::fs::statvfs(c.as_path())
            .is_ok_and(|v| !v.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY))
    };
    let mut chosen: HashMap<(u64, u64), usize> = HashMap::new();
    let mut out: Vec<Option<&PathBuf>> = Vec::new();
    for c in candidates {
        let Some(k) = key(c) else {
            out.push(Some(c));
            continue;
        };
        match chosen.get(&k) {
            None => {
                chosen.insert(k, out.len());
                out.push(Some(c));
            }
            Some(&at) => {
                if out[at].is_some_and(|first| !writable(first)) && writable(c) {
                    out[at] = Some(c);
                }
            }
        }
    }
    out.into_iter().flatten().collect()
}

/// Directories among `candidates` whose superblock matches `selector`.
/// Candidates without a superblock are skipped; corrupt ones too (logged).
/// So are directories the array no longer uses, as md's assembly drops
/// devices the freshest superblock does not list: a member that was
/// replaced, or failed and taken over by a spare, keeps its old superblock
/// until its disk is wiped, and must not stop the array from starting by
/// name.
///
/// A directory reached by two paths (the member's disk bind-mounted for an
/// NFS export or a container, a symlink) is one candidate, under the first
/// path given that is writable (a read-only bind mount would fail the
/// member at its first write): otherwise it would be refused as a
/// duplicate member.
pub fn find_members(selector: &Selector, candidates: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut found: Vec<(PathBuf, Superblock)> = Vec::new();
    let mut uuids = HashMap::new();
    for c in distinct_directories(candidates) {
        let sb = match read_superblock(c) {
            Ok(sb) => sb,
            Err(e) => {
                tracing::debug!(path = %c.display(), error = %e, "not a member");
                continue;
            }
        };
        let hit = match selector {
            Selector::Name(n) => &sb.name == n,
            Selector::Uuid(u) => &sb.array_uuid == u,
        };
        if hit {
            found.push((c.clone(), sb));
        }
    }
    // What an interrupted create left (every superblock of its array still
    // says events 0) is no array: left out, so that it does not stand
    // beside a real array of the name. Members of an array some of whose
    // superblocks were finished stay (they missed only that last write).
    let finished: std::collections::HashSet<[u8; 16]> = found
        .iter()
        .filter(|(_, sb)| sb.events > 0)
        .map(|(_, sb)| sb.array_uuid)
        .collect();
    let unfinished = found
        .iter()
        .find(|(_, sb)| !finished.contains(&sb.array_uuid))
        .cloned();
    found.retain(|(_, sb)| finished.contains(&sb.array_uuid));
    if found.is_empty()
        && let Some((p, sb)) = unfinished
    {
        return Err(ArrayError::Invalid(format!(
            "{}: the creation of array {:?} was interrupted; run `raidfs create` again \
             (it takes these directories back)",
            p.display(),
            sb.name
        )));
    }
    for (c, sb) in &found {
        uuids.insert(sb.array_uuid, c.clone());
    }
    if uuids.len() > 1 {
        let list: Vec<String> = uuids
            .iter()
            .map(|(u, p)| format!("{} (e.g. {})", uuid_string(u), p.display()))
            .collect();
        return Err(ArrayError::NotMember(format!(
            "several arrays match {selector}: {}; choose one by UUID",
            list.join(", ")
        )));
    }
    let Some(fresh) = found
        .iter()
        .map(|(_, sb)| sb)
        .max_by_key(|sb| (sb.events, sb.journal_seq))
        .cloned()
    else {
        return Err(ArrayError::NotMember(format!(
            "no member of an array matching {selector} found"
        )));
    };
    let in_use = |sb: &Superblock| {
        fresh.members.iter().any(|m| m.uuid == sb.member_uuid)
            || fresh.spares.iter().any(|m| m.uuid == sb.member_uuid)
    };
    // Split brain: a member the freshest table lists whose own table puts,
    // in some slot, another directory found here than the freshest does (a replaced disk
    // was assembled on its own afterwards, and its events overtook the
    // array's). Nothing is left out then: assembly refuses the set and
    // names the directories, rather than silently dropping the newer ones.
    let disagree = found.iter().filter(|(_, sb)| in_use(sb)).any(|(_, sb)| {
        sb.members.iter().enumerate().any(|(k, slot)| {
            fresh.members.get(k).is_some_and(|f| f.uuid != slot.uuid)
                && found.iter().any(|(_, c)| c.member_uuid == slot.uuid)
        })
    });
    if disagree {
        tracing::warn!(
            "the members found disagree about which directories belong to the array; none left out"
        );
        return Ok(found.into_iter().map(|(p, _)| p).collect());
    }
    let (used, stale): (Vec<_>, Vec<_>) = found
        .into_iter()
        .partition(|(_, sb)| in_use(sb) || sb.events >= fresh.events);
    for (p, sb) in &stale {
        tracing::warn!(
            path = %p.display(),
            events = sb.events,
            freshest = fresh.events,
            "left out: a former member or spare the array no longer uses (replaced or taken over)"
        );
    }
    Ok(used.into_iter().map(|(p, _)| p).collect())
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Selector::Name(n) => write!(f, "name {n:?}"),
            Selector::Uuid(u) => write!(f, "UUID {}", uuid_string(u)),
        }
    }
}

/// The refusal of a listed directory that is missing or holds no
/// superblock. Like `mdadm --assemble` with explicit devices, an explicit
/// list is taken at its word and not second-guessed; but the usual cause is
/// a dead or unmounted disk, so the message says how to start the array
/// degraded without it.
fn listed_not_member(path: &Path, detail: &str, opts: &AssembleOptions) -> ArrayError {
    let others: Vec<&PathBuf> = opts.members.iter().filter(|p| *p != path).collect();
    if others.is_empty() {
        return ArrayError::NotMember(format!(
            "{detail}. {} is not a member directory of an array; give the array's name, \
             UUID or member directories",
            path.display()
        ));
    }
    let name = others
        .iter()
        .find_map(|p| read_superblock(p).ok())
        .map(|sb| sb.name);
    let by_name = match &name {
        Some(n) => format!("mount.raidfs {n} DIR"),
        None => "mount.raidfs NAME DIR".to_string(),
    };
    let rest = others
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    ArrayError::NotMember(format!(
        "{detail}. {} is listed as a member but is not one, so the array was not started. \
         If that member's disk is dead or not mounted, the array can still be started degraded \
         without it (if its level tolerates the loss): mount it by array name or UUID \
         (`{by_name}`), which uses the members it finds, or leave {} out of the member list \
         ({rest})",
        path.display(),
        path.display()
    ))
}

/// Everything assembly decided, handed to [`crate::Array`].
pub struct Assembled {
    /// The freshest superblock (authoritative member table).
    pub sb: Superblock,
    pub geometry: Geometry,
    /// Members by slot; `None` = missing or not used.
    pub members: Vec<Option<Arc<dyn Member>>>,
    /// State of each slot at assembly.
    pub states: Vec<SlotState>,
    /// Slots absent at assembly (their state in `states` is what the array
    /// recorded; they are missing now).
    pub missing: Vec<usize>,
    /// Of `missing`, the slots the array last recorded in service: their
    /// members left in sync (until this assembly, nothing was written
    /// without them that the write-intent log does not name).
    pub left_in_sync: Vec<usize>,
    /// The write-intent log as the members held it (read once, for the
    /// data path too).
    pub intent: crate::intent::IntentRecord,
    /// The namespace and the sequence it is at.
    pub ns: Namespace,
    pub head: u64,
    /// Whether metadata must be rewritten to every member (lagging or torn copies).
    pub needs_checkpoint: bool,
    /// Members whose journal holds every record up to `head`, untorn: one
    /// of them that is full may go without the catch-up checkpoint.
    pub meta_current: Vec<usize>,
    /// Whether the array was shut down cleanly.
    pub was_clean: bool,
    /// Hot spares found among the directories and recorded in the freshest
    /// superblock's spare table: (UUID, directory, member). The table in
    /// `sb.spares` lists exactly these (spares not found are forgotten).
    pub spares: Vec<([u8; 16], PathBuf, Arc<dyn Member>)>,
}

/// Opens a member directory as a [`Member`]: [`DirMember`] normally; tests
/// wrap it (e.g. in a fault-injecting member).
pub type Opener<'a> = &'a dyn Fn(&Path) -> std::io::Result<Arc<dyn Member>>;

/// The normal opener: a [`DirMember`] over the directory.
pub fn open_dir(path: &Path) -> std::io::Result<Arc<dyn Member>> {
    Ok(Arc::new(DirMember::open(path)?))
}

/// Examine the member directories and decide (no write happens here).
pub fn analyze(opts: &AssembleOptions) -> Result<Assembled> {
    analyze_with(opts, &open_dir)
}

/// [`analyze`] with members opened by `open`.
pub fn analyze_with(opts: &AssembleOptions, open: Opener<'_>) -> Result<Assembled> {
    if opts.members.is_empty() {
        return Err(ArrayError::Invalid("no member directories given".into()));
    }
    // 1. Open every directory and read its superblock.
    let mut seen: HashMap<(u64, u64), &PathBuf> = HashMap::new();
    let mut found: Vec<(PathBuf, Arc<dyn Member>, Superblock)> = Vec::new();
    // Locked in (device, inode) order, so that two processes assembling the
    // same directories never each hold some ([`crate::exclusive`]).
    let mut order: Vec<&PathBuf> = opts.members.iter().collect();
    order.sort_by_key(|p| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino())));
    for path in order {
        let md = std::fs::metadata(path)
            .map_err(|e| listed_not_member(path, &format!("{}: {e}", path.display()), opts))?;
        if let Some(other) = seen.insert((md.dev(), md.ino()), path) {
            return Err(ArrayError::NotMember(format!(
                "{} and {} are the same directory (duplicate member)",
                other.display(),
                path.display()
            )));
        }
        let m = open(path)
            .map_err(|e| listed_not_member(path, &format!("{}: {e}", path.display()), opts))?;
        // Before the superblock is read: a daemon still closing this array
        // must finish writing it first.
        if !opts.read_only {
            match m.lock_exclusive(opts.lock_wait) {
                Ok(true) => {}
                Ok(false) => return Err(crate::exclusive::busy(path)),
                Err(e) => {
                    return Err(listed_not_member(
                        path,
                        &format!("{}: cannot lock: {e}", path.display()),
                        opts,
                    ));
                }
            }
        }
        let sb = read_member_superblock(&*m).map_err(|e| match e {
            ArrayError::NotMember(detail) => listed_not_member(path, &detail, opts),
            e => e,
        })?;
        found.push((path.clone(), m, sb));
    }
    // 2. One array only, and one whose creation got as far as finishing a
    // member (the others, still marked as being created, are then left out
    // as members that missed an update).
    if found.iter().all(|(_, _, sb)| sb.events == 0) {
        let (p, _, sb) = &found[0];
        return Err(ArrayError::Invalid(format!(
            "{}: the creation of array {:?} was interrupted; run `raidfs create` again \
             (it takes these directories back)",
            p.display(),
            sb.name
        )));
    }
    let first = &found[0];
    for (p, _, sb) in &found[1..] {
        if sb.array_uuid != first.2.array_uuid {
            return Err(ArrayError::NotMember(format!(
                "mixed arrays: {} belongs to array {:?} ({}) but {} to array {:?} ({})",
                first.0.display(),
                first.2.name,
                uuid_string(&first.2.array_uuid),
                p.display(),
                sb.name,
                uuid_string(&sb.array_uuid)
            )));
        }
    }
    // 3. The freshest superblock is the truth (events, then journal sequence).
    let fresh = found
        .iter()
        .max_by_key(|(_, _, sb)| (sb.events, sb.journal_seq))
        .map(|f| f.2.clone())
        .ok_or_else(|| ArrayError::Invalid("no members".into()))?;
    let mut fresh = fresh;
    let n = fresh.members.len();
    let geometry = fresh.geometry()?;
    // Hot spares: a spare superblock whose UUID the array still lists as a
    // spare is attached; one the array took into a slot (its own superblock
    // missed the update) counts as that member; any other is stale and left
    // untouched.
    let mut spares: Vec<([u8; 16], PathBuf, Arc<dyn Member>)> = Vec::new();
    let mut found_members = Vec::with_capacity(found.len());
    for (p, m, mut sb) in found {
        if !sb.is_spare() {
            found_members.push((p, m, sb));
            continue;
        }
        if fresh.spares.iter().any(|s| s.uuid == sb.member_uuid) {
            if sb.array_uuid == fresh.array_uuid {
                spares.push((sb.member_uuid, p, m));
            }
        } else if let Some(i) = fresh.members.iter().position(|s| s.uuid == sb.member_uuid) {
            tracing::info!(slot = i, path = %p.display(), "spare was taken into a slot; using it as that member");
            sb.member_index = i as u32;
            found_members.push((p, m, sb));
        } else {
            tracing::warn!(path = %p.display(), "spare no longer recorded by the array; left alone");
        }
    }
    let found = found_members;
    let before = fresh.spares.len();
    fresh
        .spares
        .retain(|s| spares.iter().any(|(u, _, _)| *u == s.uuid));
    if fresh.spares.len() != before {
        tracing::warn!(
            forgotten = before - fresh.spares.len(),
            "recorded spares not among the directories; forgotten"
        );
    }
    if found.is_empty() {
        return Err(ArrayError::NotMember(
            "only spares given: no member directory of the array".into(),
        ));
    }
    if found.len() > n {
        return Err(ArrayError::NotMember(format!(
            "{} directories given but the array has {n} members",
            found.len()
        )));
    }
    let mut members: Vec<Option<Arc<dyn Member>>> = vec![None; n];
    let mut paths: Vec<Option<&PathBuf>> = vec![None; n];
    let mut events: Vec<u64> = vec![0; n];
    for (p, m, sb) in &found {
        let same_shape = sb.members.len() == n
            && sb.level_code == fresh.level_code
            && sb.level_params == fresh.level_params
            && sb.chunk_size == fresh.chunk_size;
        if !same_shape {
            return Err(ArrayError::Corrupt {
                what: format!("superblock of {}", p.display()),
                detail: "geometry differs from the other members' superblocks".into(),
            });
        }
        let i = sb.member_index as usize;
        if fresh.members[i].uuid != sb.member_uuid {
            return Err(ArrayError::NotMember(format!(
                "{} claims slot {i}, but the array's slot {i} now holds member {} (this directory was replaced)",
                p.display(),
                uuid_string(&fresh.members[i].uuid)
            )));
        }
        if let Some(other) = paths[i] {
            return Err(ArrayError::NotMember(format!(
                "duplicate member: {} and {} both claim slot {i}",
                other.display(),
                p.display()
            )));
        }
        paths[i] = Some(p);
        members[i] = Some(m.clone());
        events[i] = sb.events;
    }
    // 4. States: the freshest superblock's table; missing slots noted.
    let mut states: Vec<SlotState> = fresh.members.iter().map(|s| s.state).collect();
    let mut missing = Vec::new();
    // The write-intent log is written to every member in service before any
    // data: one whose log is behind the others' missed writes. Each member's
    // log is read only when some superblock lags (rare).
    let lagging = (0..n).any(|i| members[i].is_some() && events[i] < fresh.events);
    let intent_seq: Vec<u64> = if lagging {
        members
            .iter()
            .map(|m| crate::intent::load(std::slice::from_ref(m)).seq)
            .collect()
    } else {
        vec![0; n]
    };
    let newest_intent = intent_seq.iter().copied().max().unwrap_or(0);
    for i in 0..n {
        match (&members[i], states[i]) {
            (None, _) => missing.push(i),
            (Some(_), SlotState::Failed) => {
                tracing::warn!(slot = i, "member was failed; left out until it is rebuilt");
                members[i] = None;
            }
            (Some(_), SlotState::Active)
                if events[i] < fresh.events && intent_seq[i] < newest_intent =>
            {
                // An older copy of the member (a restored image, a disk
                // that lost its last writes): its chunks and checksums
                // agree with each other, so nothing would ever catch its
                // stale data. Left out, as md leaves out a member that is
                // not fresh; a replace rebuilds it.
                tracing::warn!(
                    slot = i,
                    events = events[i],
                    freshest = fresh.events,
                    "member holds an older copy of the array than the others; left out until it is rebuilt"
                );
                states[i] = SlotState::Failed;
                members[i] = None;
            }
            (Some(_), _) if events[i] < fresh.events => {
                tracing::info!(
                    slot = i,
                    events = events[i],
                    freshest = fresh.events,
                    "member lags; catching up"
                );
            }
            _ => {}
        }
    }
    // A member the write-intent log says left while the array ran, though
    // the superblocks still list it in service (the array stopped before
    // recording the failure): it lacks changes, so it is failed now, before
    // anything is checked or written, and can be re-added.
    let mut intent = crate::intent::load(&members);
    let in_service = |i: usize| i < n && members[i].is_some() && states[i] == SlotState::Active;
    let left = intent.left_unrecorded(in_service);
    for &i in &left {
        tracing::warn!(slot = i, "{}", crate::intent::LEFT_UNRECORDED);
        states[i] = SlotState::Failed;
        members[i] = None;
    }
    if !left.is_empty() {
        // The regions are those of the members in service: the one that
        // left still lists what was being written when it went, long since
        // settled on the others, and a degraded resync of those stripes
        // would make their chunks on it unreadable for nothing.
        intent = crate::intent::load(&members);
    }
    let left_in_sync: Vec<usize> = missing
        .iter()
        .copied()
        .filter(|&i| states[i] == SlotState::Active)
        .collect();
    for &i in &missing {
        if states[i] != SlotState::Spare {
            states[i] = SlotState::Failed;
        }
    }
    let unavailable: Vec<usize> = (0..n)
        .filter(|&i| members[i].is_none() || !matches!(states[i], SlotState::Active))
        .collect();
    let degraded = !unavailable.is_empty();
    if !geometry.survives(&unavailable) {
        return Err(ArrayError::ArrayFailed(format!(
            "{} of {n} members unavailable ({unavailable:?}); {} tolerates {}",
            unavailable.len(),
            geometry.level(),
            geometry.failures_tolerated()
        )));
    }
    if degraded && !fresh.clean && !opts.force {
        return Err(ArrayError::ArrayFailed(format!(
            "array {:?} was not shut down cleanly and is degraded (members {unavailable:?} unavailable): \
             stripes written at the crash cannot be checked; assemble with force to start anyway",
            fresh.name
        )));
    }
    // 5. Metadata: the member holding the longest journal wins.
    let mut images: Vec<(usize, MetaImage)> = Vec::new();
    for (i, m) in members.iter().enumerate() {
        let Some(m) = m else { continue };
        match load::scan(i, &**m, &fresh.array_uuid) {
            Ok(img) => images.push((i, img)),
            Err(e) => tracing::warn!(slot = i, error = %e, "metadata unreadable on member"),
        }
    }
    images.sort_by_key(|(i, img)| std::cmp::Reverse((img.head(), events[*i])));
    let mut loaded = None;
    let mut unloadable = Vec::new();
    for (i, img) in &images {
        let Some(m) = &members[*i] else { continue };
        match load::load(*i, m, &fresh.array_uuid, img) {
            Ok((ns, head)) => {
                loaded = Some((ns, head));
                break;
            }
            Err(e) => {
                unloadable.push(*i);
                tracing::warn!(slot = i, error = %e, "metadata copy does not load; trying another member")
            }
        }
    }
    let (ns, head) = loaded.ok_or_else(|| {
        ArrayError::ArrayFailed("no member holds a readable copy of the metadata".into())
    })?;
    let in_use = members.iter().filter(|m| m.is_some()).count();
    let needs_checkpoint = images.len() != in_use
        || images
            .iter()
            .any(|(_, img)| img.torn || img.records != 0 || img.checkpoint_seq != head);
    let meta_current = images
        .iter()
        .filter(|(i, img)| !img.torn && img.head == head && !unloadable.contains(i))
        .map(|(i, _)| *i)
        .collect();
    Ok(Assembled {
        spares,
        was_clean: fresh.clean,
        sb: fresh,
        geometry,
        members,
        states,
        missing,
        left_in_sync,
        intent,
        ns,
        head,
        needs_checkpoint,
        meta_current,
    })
}
