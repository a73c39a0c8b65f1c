//! The superblock: who this member is, which array it belongs to, the
//! array's geometry and the state of every member, replaced atomically
//! (`.raidfs/superblock`, write-temp + fsync + rename).
//!
//! ```text
//! off   size  field
//!   0     8   magic "RAIDFSSB"
//!   8     2   major version (1)
//!  10     2   minor version (0, or 1 when spares are recorded)
//!  12     4   record length in bytes, CRC included (192 + 32 × (members + spares) + 4)
//!  16    16   array UUID
//!  32    16   this member's UUID
//!  48     4   this member's index (0-based slot in the member table);
//!             u32::MAX on a hot spare's own superblock (minor 1)
//!  52     4   level code (raid_core::LevelCode::code, widened)
//!  56     4   level parameter 0 (raid_core::LevelCode::params[0])
//!  60     4   level parameter 1 (raid_core::LevelCode::params[1])
//!  64     4   number of members
//!  68     4   chunk size in bytes
//!  72     4   flags: bit 0 = clean (set by a clean close, cleared at assemble)
//!  76     4   number of spares S (minor 1; reserved, zero, in minor 0)
//!  80     8   events counter (bumped on every superblock update)
//!  88     8   metadata journal sequence at the time of this update
//!  96     8   creation time, seconds since the Unix epoch
//! 104    64   array name, UTF-8, NUL-padded
//! 168    24   reserved, zero
//! 192  32×N   member table, one 32-byte slot per member:
//!               +0 16 member UUID, +16 1 state (0 active, 1 failed,
//!               2 spare, 3 rebuilding), +17 7 reserved, +24 8 rebuild
//!               progress in bytes (state 3 only)
//! 192+32N 32×S spare table (minor 1), one 32-byte entry per hot spare:
//!               +0 16 spare UUID, +16 4 flags (none defined yet, zero),
//!               +20 12 reserved
//! end     4   CRC32 of all preceding bytes
//! ```
//!
//! Spares live in their own table rather than in the member table because
//! the member table is the geometry: its length is the number of members
//! every stripe is laid over. A record without spares is written as minor 0
//! (byte-identical to what a 1.0 build writes, so such a build still reads
//! it); a record with spares is minor 1, which a 1.0 build refuses on the
//! record length instead of misreading.

use super::bytes::{Reader, Writer, check_trailing_crc};
use crate::{ArrayError, Result};

pub const MAGIC: [u8; 8] = *b"RAIDFSSB";
pub const MAJOR: u16 = 1;
/// Newest minor version this build reads and writes.
pub const MINOR: u16 = 1;
/// `member_index` of a hot spare's own superblock.
pub const SPARE_INDEX: u32 = u32::MAX;
/// Bytes before the member table.
pub const HEADER_LEN: usize = 192;
pub const SLOT_LEN: usize = 32;
/// Bytes per spare table entry.
pub const SPARE_LEN: usize = 32;
/// Longest array name, in bytes.
pub const NAME_MAX: usize = 64;
/// Most members an array may have (keeps the record small and bounded).
pub const MAX_MEMBERS: u32 = 255;
/// Path of the superblock inside a member.
pub const PATH: &str = ".raidfs/superblock";

const FLAG_CLEAN: u32 = 1;

/// State of a member slot as recorded on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotState {
    Active,
    Failed,
    Spare,
    Rebuilding { done_bytes: u64 },
}

/// One member as seen in the member table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberSlot {
    pub uuid: [u8; 16],
    pub state: SlotState,
}

/// One hot spare as seen in the spare table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpareSlot {
    pub uuid: [u8; 16],
    /// Reserved for per-spare flags; none defined yet (written zero).
    pub flags: u32,
}

/// The decoded superblock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Superblock {
    pub minor: u16,
    pub array_uuid: [u8; 16],
    pub member_uuid: [u8; 16],
    pub member_index: u32,
    pub level_code: u8,
    pub level_params: [u32; 2],
    pub chunk_size: u32,
    pub clean: bool,
    pub events: u64,
    pub journal_seq: u64,
    pub created: u64,
    pub name: String,
    pub members: Vec<MemberSlot>,
    /// Hot spares of the array (minor 1; empty in a minor-0 record).
    pub spares: Vec<SpareSlot>,
}

impl Superblock {
    /// Number of members in the array.
    pub fn member_count(&self) -> u32 {
        self.members.len() as u32
    }

    /// Whether this is a hot spare's own superblock.
    pub fn is_spare(&self) -> bool {
        self.member_index == SPARE_INDEX
    }

    /// The level this superblock records.
    pub fn level(&self) -> Result<raid_core::Level> {
        raid_core::Level::from_code(raid_core::layout::LevelCode {
            code: self.level_code,
            params: self.level_params,
        })
        .map_err(|e| ArrayError::Corrupt {
            what: "superblock".into(),
            detail: format!("level: {e}"),
        })
    }

    /// The array geometry this superblock records.
    pub fn geometry(&self) -> Result<raid_core::Geometry> {
        raid_core::Geometry::new(self.level()?, self.members.len(), self.chunk_size).map_err(|e| {
            ArrayError::Corrupt {
                what: "superblock".into(),
                detail: format!("geometry: {e}"),
            }
        })
    }

    /// Encode to bytes (see the diagram above).
    pub fn encode(&self) -> Result<Vec<u8>> {
        if self.name.len() > NAME_MAX {
            return Err(ArrayError::Invalid(format!(
                "array name longer than {NAME_MAX} bytes"
            )));
        }
        let n = self.members.len();
        if n == 0 || n > MAX_MEMBERS as usize {
            return Err(ArrayError::Invalid(format!(
                "member count {n} outside 1..={MAX_MEMBERS}"
            )));
        }
        let s = self.spares.len();
        if s > MAX_MEMBERS as usize {
            return Err(ArrayError::Invalid(format!(
                "spare count {s} above {MAX_MEMBERS}"
            )));
        }
        // The oldest minor that can express the record: without spares a
        // 1.0 reader reads it unchanged.
        let minor = if s == 0 && !self.is_spare() { 0 } else { 1 };
        let len = HEADER_LEN + SLOT_LEN * n + SPARE_LEN * s + 4;
        let mut w = Writer::with_capacity(len);
        w.bytes(&MAGIC);
        w.u16(MAJOR);
        w.u16(minor);
        w.u32(len as u32);
        w.bytes(&self.array_uuid);
        w.bytes(&self.member_uuid);
        w.u32(self.member_index);
        w.u32(u32::from(self.level_code));
        w.u32(self.level_params[0]);
        w.u32(self.level_params[1]);
        w.u32(n as u32);
        w.u32(self.chunk_size);
        w.u32(if self.clean { FLAG_CLEAN } else { 0 });
        w.u32(s as u32);
        w.u64(self.events);
        w.u64(self.journal_seq);
        w.u64(self.created);
        let mut name = [0u8; NAME_MAX];
        name[..self.name.len()].copy_from_slice(self.name.as_bytes());
        w.bytes(&name);
        w.zeros(24);
        debug_assert_eq!(w.buf.len(), HEADER_LEN);
        for slot in &self.members {
            w.bytes(&slot.uuid);
            let (code, progress) = match slot.state {
                SlotState::Active => (0u8, 0u64),
                SlotState::Failed => (1, 0),
                SlotState::Spare => (2, 0),
                SlotState::Rebuilding { done_bytes } => (3, done_bytes),
            };
            w.u8(code);
            w.zeros(7);
            w.u64(progress);
        }
        for spare in &self.spares {
            w.bytes(&spare.uuid);
            w.u32(spare.flags);
            w.zeros(12);
        }
        Ok(w.finish_crc())
    }

    /// Decode and verify magic, version, length and CRC.
    pub fn decode(buf: &[u8]) -> Result<Self> {
        const WHAT: &str = "superblock";
        let corrupt = |detail: String| ArrayError::Corrupt {
            what: WHAT.into(),
            detail,
        };
        let mut r = Reader::new(WHAT, buf);
        if r.array::<8>()? != MAGIC {
            return Err(corrupt("bad magic (not a raidfs superblock)".into()));
        }
        let major = r.u16()?;
        let minor = r.u16()?;
        super::check_version(WHAT, major, minor, MAJOR)?;
        let len = r.u32()? as usize;
        if len != buf.len() {
            return Err(corrupt(format!(
                "record length {len} but file holds {} bytes",
                buf.len()
            )));
        }
        check_trailing_crc(WHAT, buf)?;
        let array_uuid = r.array()?;
        let member_uuid = r.array()?;
        let member_index = r.u32()?;
        let level_code = r.u32()?;
        let level_code =
            u8::try_from(level_code).map_err(|_| corrupt(format!("level code {level_code}")))?;
        let level_params = [r.u32()?, r.u32()?];
        let n = r.u32()?;
        let chunk_size = r.u32()?;
        let flags = r.u32()?;
        // Reserved (and ignored) in minor 0.
        let spare_count = r.u32()?;
        let spare_count = if minor >= 1 { spare_count } else { 0 };
        let events = r.u64()?;
        let journal_seq = r.u64()?;
        let created = r.u64()?;
        let name_raw: [u8; NAME_MAX] = r.array()?;
        let name_len = name_raw.iter().position(|&b| b == 0).unwrap_or(NAME_MAX);
        let name = std::str::from_utf8(&name_raw[..name_len])
            .map_err(|_| corrupt("array name is not UTF-8".into()))?
            .to_string();
        r.skip(24)?;
        if n == 0 || n > MAX_MEMBERS {
            return Err(corrupt(format!(
                "member count {n} outside 1..={MAX_MEMBERS}"
            )));
        }
        if spare_count > MAX_MEMBERS {
            return Err(corrupt(format!(
                "spare count {spare_count} above {MAX_MEMBERS}"
            )));
        }
        if len != HEADER_LEN + SLOT_LEN * n as usize + SPARE_LEN * spare_count as usize + 4 {
            return Err(corrupt(format!(
                "record length {len} does not match {n} members and {spare_count} spares"
            )));
        }
        let spare_self = minor >= 1 && member_index == SPARE_INDEX;
        if member_index >= n && !spare_self {
            return Err(corrupt(format!(
                "member index {member_index} but only {n} members"
            )));
        }
        let mut members = Vec::with_capacity(n as usize);
        for i in 0..n {
            let uuid = r.array()?;
            let code = r.u8()?;
            r.skip(7)?;
            let progress = r.u64()?;
            let state = match code {
                0 => SlotState::Active,
                1 => SlotState::Failed,
                2 => SlotState::Spare,
                3 => SlotState::Rebuilding {
                    done_bytes: progress,
                },
                c => return Err(corrupt(format!("member slot {i}: unknown state {c}"))),
            };
            members.push(MemberSlot { uuid, state });
        }
        let mut spares = Vec::with_capacity(spare_count as usize);
        for _ in 0..spare_count {
            let uuid = r.array()?;
            let flags = r.u32()?;
            r.skip(12)?;
            spares.push(SpareSlot { uuid, flags });
        }
        let sb = Superblock {
            minor,
            array_uuid,
            member_uuid,
            member_index,
            level_code,
            level_params,
            chunk_size,
            clean: flags & FLAG_CLEAN != 0,
            events,
            journal_seq,
            created,
            name,
            members,
            spares,
        };
        if spare_self {
            if !sb.spares.iter().any(|s| s.uuid == member_uuid) {
                return Err(corrupt(
                    "spare superblock whose UUID is not in the spare table".into(),
                ));
            }
        } else if sb.members[member_index as usize].uuid != member_uuid {
            return Err(corrupt(format!(
                "member UUID does not match slot {member_index} of the member table"
            )));
        }
        Ok(sb)
    }
}

/// Format a UUID the usual way (8-4-4-4-12 hex).
pub fn uuid_string(u: &[u8; 16]) -> String {
    uuid::Uuid::from_bytes(*u).hyphenated().to_string()
}

/// A fresh random UUID.
pub fn new_uuid() -> [u8; 16] {
    *uuid::Uuid::new_v4().as_bytes()
}
