//! Changing who serves the array, online, like `mdadm --add/--remove/--fail`:
//! hot spares in and out, a member failed on purpose (a drill) and a failed
//! member detached. Every request is checked in full before anything is
//! written; a refused request changes nothing.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use super::{Array, Inner, Spare, lock, worker};
use crate::format::superblock::{self, SpareSlot, uuid_string};
use crate::health::MemberState;
use crate::member::{DirMember, Member};
use crate::{ArrayError, Result};

/// (device, inode) of a directory, to recognise it under any path.
fn dir_id(path: &Path) -> Result<(u64, u64)> {
    let md = std::fs::metadata(path)
        .map_err(|e| ArrayError::Invalid(format!("{}: {e}", path.display())))?;
    if !md.is_dir() {
        return Err(ArrayError::Invalid(format!(
            "{}: not a directory",
            path.display()
        )));
    }
    Ok((md.dev(), md.ino()))
}

fn same_dir(path: &Path, id: (u64, u64)) -> bool {
    std::fs::metadata(path).is_ok_and(|m| (m.dev(), m.ino()) == id)
}

impl Inner {
    fn check_slot(&self, slot: usize) -> Result<()> {
        let n = self.geometry.members();
        if slot >= n {
            return Err(ArrayError::Invalid(format!(
                "no member slot {slot} (the array has {n}: 0..{})",
                n - 1
            )));
        }
        Ok(())
    }
}

impl Array {
    /// Make the empty directory `path` a hot spare: its own superblock
    /// (state spare) is written on it and it is recorded in every member's
    /// superblock. If a slot is failed already, the spare takes it at once.
    pub fn add_spare(&self, path: &Path) -> Result<()> {
        self.writable()?;
        let i = &self.inner;
        let id = dir_id(path)?;
        for (k, m) in i.members().iter().enumerate() {
            if m.as_ref()
                .is_some_and(|m| same_dir(Path::new(&m.describe()), id))
            {
                let hint = if i.health.state(k).readable() {
                    String::new()
                } else {
                    format!(
                        ", which has failed: rebuild onto it with `raidfs replace ARRAY {k} DIR`"
                    )
                };
                return Err(ArrayError::Invalid(format!(
                    "{} is already member {k} of this array{hint}",
                    path.display()
                )));
            }
        }
        if i.spares().iter().any(|s| same_dir(&s.path, id)) {
            return Err(ArrayError::Invalid(format!(
                "{} is already a spare of this array",
                path.display()
            )));
        }
        let member: Arc<dyn Member> = Arc::new(
            DirMember::open(path)
                .map_err(|e| ArrayError::Invalid(format!("{}: {e}", path.display())))?,
        );
        // Refused at once if another process holds it (another array's member).
        if !member
            .lock_exclusive(std::time::Duration::ZERO)
            .map_err(|e| ArrayError::Invalid(format!("{}: cannot lock: {e}", path.display())))?
        {
            return Err(crate::exclusive::busy(path));
        }
        {
            let g = lock(&i.sb);
            if g.template.spares.len() >= superblock::MAX_MEMBERS as usize {
                return Err(ArrayError::Invalid(format!(
                    "at most {} spares",
                    superblock::MAX_MEMBERS
                )));
            }
        }
        let has = member
            .exists(".raidfs")
            .map_err(|e| ArrayError::Invalid(format!("{}: {e}", path.display())))?;
        worker::make_empty(i, "spare", path, has)?;
        let spare = Spare {
            uuid: superblock::new_uuid(),
            path: path.to_path_buf(),
            member,
        };
        // Its own superblock first (not fresher than the members'), so a
        // spare the members record always has one.
        {
            let mut g = lock(&i.sb);
            let mut sb = g.template.clone();
            sb.spares.push(SpareSlot {
                uuid: spare.uuid,
                flags: 0,
            });
            sb.member_index = superblock::SPARE_INDEX;
            sb.member_uuid = spare.uuid;
            let bytes = sb.encode()?;
            if let Err(e) = spare.member.write_atomic(superblock::PATH, &bytes) {
                drop(g);
                remove_raidfs(&spare);
                return Err(ArrayError::Invalid(format!(
                    "{}: cannot write the spare's superblock: {e}",
                    path.display()
                )));
            }
            g.template.spares.push(SpareSlot {
                uuid: spare.uuid,
                flags: 0,
            });
            lock(&i.spares).push(spare.clone());
        }
        if let Err(e) = i.write_sbs() {
            lock(&i.sb).template.spares.retain(|s| s.uuid != spare.uuid);
            lock(&i.spares).retain(|s| s.uuid != spare.uuid);
            remove_raidfs(&spare);
            return Err(e);
        }
        tracing::info!(path = %path.display(), uuid = %uuid_string(&spare.uuid), "hot spare added");
        worker::kick(i);
        Ok(())
    }

    /// Take a spare out: it is no longer recorded and its `.raidfs` is
    /// removed (the directory is empty again).
    pub fn remove_spare(&self, path: &Path) -> Result<()> {
        self.writable()?;
        let i = &self.inner;
        let id = dir_id(path)?;
        let spare = {
            let mut spares = lock(&i.spares);
            let Some(pos) = spares.iter().position(|s| same_dir(&s.path, id)) else {
                return Err(ArrayError::Invalid(format!(
                    "{} is not a spare of this array",
                    path.display()
                )));
            };
            spares.remove(pos)
        };
        let before = {
            let mut g = lock(&i.sb);
            let before = g.template.spares.clone();
            g.template.spares.retain(|s| s.uuid != spare.uuid);
            before
        };
        if let Err(e) = i.write_sbs() {
            lock(&i.sb).template.spares = before;
            lock(&i.spares).push(spare);
            return Err(e);
        }
        remove_raidfs(&spare);
        // Its disk may be unmounted or used elsewhere now.
        spare.member.unlock();
        tracing::info!(path = %path.display(), "hot spare removed");
        Ok(())
    }

    /// A drill, like `mdadm --fail`: mark active (or rebuilding) member
    /// `slot` failed, durably, before returning. A spare, if any, then
    /// takes over. Refused when the array would not survive it.
    pub fn fail(&self, slot: usize) -> Result<()> {
        self.writable()?;
        let i = &self.inner;
        i.check_slot(slot)?;
        let states = i.health.states();
        match states[slot] {
            MemberState::Active | MemberState::Rebuilding { .. } => {}
            MemberState::Failed | MemberState::Missing => {
                return Err(ArrayError::Invalid(format!(
                    "member {slot} has already failed"
                )));
            }
            MemberState::Spare => {
                return Err(ArrayError::Invalid(format!(
                    "member {slot} is a spare, not in service"
                )));
            }
        }
        i.health
            .mark_failed_if_survived(slot, "failed by request", |u| i.geometry.survives(u))
            .map_err(|unavailable| {
                ArrayError::Invalid(format!(
                    "failing member {slot} would fail the array: {} tolerates {} unavailable \
                     member(s), and members {} would be",
                    i.geometry.level(),
                    i.geometry.failures_tolerated(),
                    unavailable
                        .iter()
                        .map(usize::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
        // Failed on purpose (a suspect disk, a drill): it comes back only
        // by a whole rebuild, never by a re-add of its old data.
        i.data.distrust(slot)?;
        {
            let _w = lock(&i.worker);
            if i.health.state(slot) == MemberState::Failed {
                i.meta.drop_member(slot);
            }
        }
        i.record_failures()?;
        worker::kick(i);
        Ok(())
    }

    /// Like `mdadm --remove`: detach failed or missing member `slot` (its
    /// handle is dropped, nothing is written to it again). The slot stays
    /// degraded until a spare or a replace fills it. Returns `false` when
    /// there was nothing to detach (a member missing at assembly, or removed
    /// already): done either way, so that `fail; remove` in a script holds.
    pub fn remove(&self, slot: usize) -> Result<bool> {
        self.writable()?;
        let i = &self.inner;
        i.check_slot(slot)?;
        match i.health.state(slot) {
            MemberState::Active => {
                return Err(ArrayError::Invalid(format!(
                    "member {slot} is active: removing it would take away redundancy \
                     in use; fail it first"
                )));
            }
            MemberState::Rebuilding { .. } => {
                return Err(ArrayError::Invalid(format!(
                    "member {slot} is being rebuilt; fail it first to abandon the rebuild"
                )));
            }
            MemberState::Spare => {
                return Err(ArrayError::Invalid(format!(
                    "member {slot} is a spare; use remove_spare"
                )));
            }
            MemberState::Failed | MemberState::Missing => {}
        }
        if i.members()[slot].is_none() {
            return Ok(false);
        }
        // The failure is on record before the member is let go.
        i.record_failures()?;
        {
            let _w = lock(&i.worker);
            // Let go of the disk, so that it can be unmounted and pulled.
            if let Some(m) = &i.members()[slot] {
                m.unlock();
            }
            i.meta.drop_member(slot);
            i.set_member(slot, None);
            i.data.set_member(slot, None);
            i.health.set_state(slot, MemberState::Missing);
        }
        i.record_failures()?;
        tracing::info!(slot, "failed member removed");
        Ok(true)
    }
}

/// Best-effort removal of a spare's `.raidfs` (its superblock and the
/// directory), leaving the directory as it was before it became a spare.
fn remove_raidfs(spare: &Spare) {
    for f in [superblock::PATH, ".raidfs/superblock.tmp"] {
        if let Err(e) = spare.member.remove(f) {
            tracing::warn!(spare = %spare.path.display(), error = %e, "cannot remove {f}");
        }
    }
    if let Err(e) = std::fs::remove_dir(spare.path.join(".raidfs")) {
        tracing::warn!(spare = %spare.path.display(), error = %e, "cannot remove .raidfs");
    }
}
