//! Dumps of on-disk records, for `raidfs debug` and bug reports: recognise
//! a record by its magic and print every field ([`dump`]), or describe it
//! as a serializable structure for `--json` ([`superblock_info`],
//! [`journal_info`], [`checkpoint_info`], [`inode_info`]). Corruption is
//! reported in the output, never hidden, and nothing here writes.

use std::fmt::Write;

use serde::Serialize;

use super::superblock::{SlotState, Superblock, uuid_string};
use super::{checkpoint, journal};
use crate::meta::ops::Op;
use crate::{Array, FileKind, Result};

/// Describe any raidfs metadata record (superblock, journal segment,
/// checkpoint). Corruption is reported, not hidden.
pub fn dump(bytes: &[u8]) -> String {
    match bytes.get(..8) {
        Some(m) if m == super::superblock::MAGIC => dump_superblock(bytes),
        Some(m) if m == journal::MAGIC => dump_journal(bytes),
        Some(m) if m == checkpoint::MAGIC => dump_checkpoint(bytes),
        _ => format!("not a raidfs metadata record ({} bytes)\n", bytes.len()),
    }
}

fn dump_superblock(bytes: &[u8]) -> String {
    let sb = match Superblock::decode(bytes) {
        Ok(sb) => sb,
        Err(e) => return format!("superblock: {e}\n"),
    };
    let mut s = String::new();
    let _ = writeln!(s, "superblock v{}.{}", super::superblock::MAJOR, sb.minor);
    let _ = writeln!(
        s,
        "  array       {} ({:?})",
        uuid_string(&sb.array_uuid),
        sb.name
    );
    let _ = writeln!(
        s,
        "  member      {} in slot {}",
        uuid_string(&sb.member_uuid),
        sb.member_index
    );
    let level = sb
        .level()
        .map(|l| l.to_string())
        .unwrap_or_else(|e| format!("? ({e})"));
    let _ = writeln!(
        s,
        "  level       {level} (code {}, params {:?})",
        sb.level_code, sb.level_params
    );
    let _ = writeln!(s, "  chunk size  {}", sb.chunk_size);
    let _ = writeln!(s, "  events      {}", sb.events);
    let _ = writeln!(s, "  journal seq {}", sb.journal_seq);
    let _ = writeln!(
        s,
        "  state       {}",
        if sb.clean { "clean" } else { "dirty" }
    );
    let _ = writeln!(s, "  created     {} (unix seconds)", sb.created);
    for (i, m) in sb.members.iter().enumerate() {
        let _ = writeln!(s, "  slot {i:3}    {} {:?}", uuid_string(&m.uuid), m.state);
    }
    s
}

fn dump_journal(bytes: &[u8]) -> String {
    let mut s = String::new();
    match journal::decode_header(bytes) {
        Ok((uuid, first)) => {
            let _ = writeln!(
                s,
                "journal segment of array {}, first record {first}",
                uuid_string(&uuid)
            );
        }
        Err(e) => return format!("journal segment: {e}\n"),
    }
    let mut pos = journal::HEADER_LEN;
    while let Some(rec) = journal::decode_record(bytes, pos) {
        match postcard::from_bytes::<Op>(rec.payload) {
            Ok(op) => {
                let _ = writeln!(s, "  {:>10}  {op:?}", rec.seq);
            }
            Err(e) => {
                let _ = writeln!(
                    s,
                    "  {:>10}  undecodable payload ({} bytes): {e}",
                    rec.seq,
                    rec.payload.len()
                );
            }
        }
        pos = rec.end;
    }
    if pos < bytes.len() {
        let _ = writeln!(
            s,
            "  {} bytes at offset {pos} are not a valid record (torn tail)",
            bytes.len() - pos
        );
    }
    s
}

fn dump_checkpoint(bytes: &[u8]) -> String {
    match checkpoint::decode(bytes) {
        Ok((h, payload)) => format!(
            "checkpoint of array {} covering sequence {}: {} inodes, {} payload bytes, CRCs good\n",
            uuid_string(&h.array_uuid),
            h.seq,
            h.inodes,
            payload.len()
        ),
        Err(e) => format!("checkpoint: {e}\n"),
    }
}

/// A superblock, field by field.
#[derive(Debug, Clone, Serialize)]
pub struct SuperblockInfo {
    pub version: String,
    pub array_uuid: String,
    pub name: String,
    pub member_uuid: String,
    pub member_index: u32,
    pub level: String,
    pub level_code: u8,
    pub level_params: [u32; 2],
    pub chunk_size: u32,
    pub events: u64,
    pub journal_seq: u64,
    pub clean: bool,
    /// Creation time, Unix seconds.
    pub created: u64,
    pub slots: Vec<SlotInfo>,
}

/// One row of the superblock's member table.
#[derive(Debug, Clone, Serialize)]
pub struct SlotInfo {
    pub slot: usize,
    pub uuid: String,
    /// active, failed, spare or rebuilding.
    pub state: String,
    /// Rebuild progress in logical bytes (rebuilding only).
    pub rebuild_done_bytes: Option<u64>,
}

/// Decode a superblock record (CRC and version checked).
pub fn superblock_info(bytes: &[u8]) -> Result<SuperblockInfo> {
    let sb = Superblock::decode(bytes)?;
    Ok(SuperblockInfo {
        version: format!("{}.{}", super::superblock::MAJOR, sb.minor),
        array_uuid: uuid_string(&sb.array_uuid),
        name: sb.name.clone(),
        member_uuid: uuid_string(&sb.member_uuid),
        member_index: sb.member_index,
        level: sb
            .level()
            .map(|l| l.to_string())
            .unwrap_or_else(|e| format!("? ({e})")),
        level_code: sb.level_code,
        level_params: sb.level_params,
        chunk_size: sb.chunk_size,
        events: sb.events,
        journal_seq: sb.journal_seq,
        clean: sb.clean,
        created: sb.created,
        slots: sb
            .members
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let (state, done) = match m.state {
                    SlotState::Active => ("active", None),
                    SlotState::Failed => ("failed", None),
                    SlotState::Spare => ("spare", None),
                    SlotState::Rebuilding { done_bytes } => ("rebuilding", Some(done_bytes)),
                };
                SlotInfo {
                    slot: i,
                    uuid: uuid_string(&m.uuid),
                    state: state.into(),
                    rebuild_done_bytes: done,
                }
            })
            .collect(),
    })
}

/// One journal record as found in a segment.
#[derive(Debug, Clone, Serialize)]
pub struct RecordInfo {
    /// Byte offset of the record in its segment file.
    pub offset: u64,
    pub seq: u64,
    /// Payload length.
    pub len: u32,
    /// Whether the record's CRC matches its bytes.
    pub crc_ok: bool,
    /// The operation's name (`Create`, `Unlink`, …), or `?` if the payload
    /// does not decode.
    pub kind: String,
    /// The whole operation, as text.
    pub op: String,
}

/// One journal segment file.
#[derive(Debug, Clone, Serialize)]
pub struct SegmentInfo {
    pub file: String,
    pub array_uuid: Option<String>,
    pub first_seq: Option<u64>,
    /// Why the header is unusable, if it is.
    pub header_error: Option<String>,
    pub records: Vec<RecordInfo>,
    /// Bytes after the last record that are not a record (a torn tail of
    /// an interrupted append, or garbage).
    pub trailing_bytes: u64,
}

/// Every record of a journal segment, including those whose CRC fails (a
/// replay stops at the first of them; a dump shows what follows too, as
/// long as the lengths make sense).
pub fn journal_info(file: &str, bytes: &[u8]) -> SegmentInfo {
    let mut info = SegmentInfo {
        file: file.to_string(),
        array_uuid: None,
        first_seq: None,
        header_error: None,
        records: Vec::new(),
        trailing_bytes: 0,
    };
    match journal::decode_header(bytes) {
        Ok((uuid, first)) => {
            info.array_uuid = Some(uuid_string(&uuid));
            info.first_seq = Some(first);
        }
        Err(e) => {
            info.header_error = Some(e.to_string());
            info.trailing_bytes = bytes
                .len()
                .saturating_sub(journal::HEADER_LEN.min(bytes.len()))
                as u64;
            return info;
        }
    }
    let mut pos = journal::HEADER_LEN;
    while let Some(hdr) = bytes.get(pos..pos + journal::RECORD_HEADER_LEN) {
        let len = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
        let crc = u32::from_le_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
        let end = pos + journal::RECORD_HEADER_LEN + len as usize;
        if len == 0 || len as usize > journal::MAX_PAYLOAD || end > bytes.len() {
            break;
        }
        let body = &bytes[pos + 8..end];
        let seq = u64::from_le_bytes([
            body[0], body[1], body[2], body[3], body[4], body[5], body[6], body[7],
        ]);
        let payload = &body[8..];
        let (kind, op) = match postcard::from_bytes::<Op>(payload) {
            Ok(op) => {
                let text = format!("{op:?}");
                let kind = text
                    .split([' ', '{', '('])
                    .next()
                    .unwrap_or_default()
                    .to_string();
                (kind, text)
            }
            Err(e) => ("?".to_string(), format!("undecodable payload: {e}")),
        };
        info.records.push(RecordInfo {
            offset: pos as u64,
            seq,
            len,
            crc_ok: crc32fast::hash(body) == crc,
            kind,
            op,
        });
        pos = end;
    }
    info.trailing_bytes = (bytes.len() - pos) as u64;
    info
}

/// A checkpoint file's header, verified.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointInfo {
    pub file: String,
    pub seq: Option<u64>,
    pub inodes: Option<u64>,
    pub payload_bytes: Option<u64>,
    /// Header and payload CRCs good.
    pub ok: bool,
    pub error: Option<String>,
}

/// Verify a checkpoint file (both CRCs) and describe it.
pub fn checkpoint_info(file: &str, bytes: &[u8]) -> CheckpointInfo {
    match checkpoint::decode(bytes) {
        Ok((h, payload)) => CheckpointInfo {
            file: file.into(),
            seq: Some(h.seq),
            inodes: Some(h.inodes),
            payload_bytes: Some(payload.len() as u64),
            ok: true,
            error: None,
        },
        Err(e) => CheckpointInfo {
            file: file.into(),
            seq: None,
            inodes: None,
            payload_bytes: None,
            ok: false,
            error: Some(e.to_string()),
        },
    }
}

/// One inode of an assembled array.
#[derive(Debug, Clone, Serialize)]
pub struct InodeInfo {
    pub ino: u64,
    /// file, dir, symlink, fifo, chardev, blockdev or socket.
    pub kind: String,
    /// Permission bits, octal.
    pub mode: String,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub size: u64,
    pub rdev: u32,
    /// Times in nanoseconds since the Unix epoch.
    pub atime_ns: i64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    /// Regular files: `inline` (in the metadata) or `striped`.
    pub storage: Option<String>,
    /// Symlinks: the target (lossy UTF-8).
    pub target: Option<String>,
    /// Directories: number of entries (without `.` and `..`).
    pub entries: Option<u64>,
    /// Extended attributes: name and value length.
    pub xattrs: Vec<(String, u64)>,
    /// Striped files: this inode's shard on each present member.
    pub shards: Vec<ShardInfo>,
}

/// A striped file's shard on one member.
#[derive(Debug, Clone, Serialize)]
pub struct ShardInfo {
    pub slot: usize,
    /// Path relative to the member directory.
    pub path: String,
    /// Shard length in bytes, or why it could not be opened.
    pub bytes: Option<u64>,
    pub error: Option<String>,
}

fn kind_name(k: FileKind) -> &'static str {
    match k {
        FileKind::File => "file",
        FileKind::Dir => "dir",
        FileKind::Symlink => "symlink",
        FileKind::Fifo => "fifo",
        FileKind::CharDev => "chardev",
        FileKind::BlockDev => "blockdev",
        FileKind::Socket => "socket",
    }
}

/// Describe inode `ino` of an assembled array (assemble it read-only: this
/// only reads). Shard files are opened to learn their length, never
/// created.
pub fn inode_info(array: &Array, ino: u64) -> Result<InodeInfo> {
    use crate::meta::inode::from_system_time;
    let a = array.getattr(ino)?;
    let striped = a.kind == FileKind::File && array.striped_files().iter().any(|&(i, _)| i == ino);
    let target = match a.kind {
        FileKind::Symlink => Some(String::from_utf8_lossy(&array.readlink(ino)?).into_owned()),
        _ => None,
    };
    let entries = match a.kind {
        FileKind::Dir => {
            let mut n = 0u64;
            let mut off = 0;
            loop {
                let batch = array.readdir(ino, off, 1024)?;
                let Some(last) = batch.last() else { break };
                off = last.offset;
                n += batch
                    .iter()
                    .filter(|e| e.name != b"." && e.name != b"..")
                    .count() as u64;
            }
            Some(n)
        }
        _ => None,
    };
    let mut xattrs = Vec::new();
    for name in array.listxattr(ino)? {
        use std::os::unix::ffi::OsStrExt;
        let len = array
            .getxattr(ino, std::ffi::OsStr::from_bytes(&name))
            .map_or(0, |v| v.len() as u64);
        xattrs.push((String::from_utf8_lossy(&name).into_owned(), len));
    }
    let mut shards = Vec::new();
    if striped {
        let path = crate::data::shard::shard_path(ino);
        for slot in 0..array.geometry().members() {
            let Some(m) = array.data().member(slot) else {
                continue;
            };
            let (bytes, error) = match m.open(&path).and_then(|f| f.len()) {
                Ok(n) => (Some(n), None),
                Err(e) => (None, Some(e.to_string())),
            };
            shards.push(ShardInfo {
                slot,
                path: path.clone(),
                bytes,
                error,
            });
        }
    }
    Ok(InodeInfo {
        ino,
        kind: kind_name(a.kind).into(),
        mode: format!("{:04o}", a.perm),
        uid: a.uid,
        gid: a.gid,
        nlink: a.nlink,
        size: a.size,
        rdev: a.rdev,
        atime_ns: from_system_time(a.atime),
        mtime_ns: from_system_time(a.mtime),
        ctime_ns: from_system_time(a.ctime),
        storage: (a.kind == FileKind::File)
            .then(|| if striped { "striped" } else { "inline" }.to_string()),
        target,
        entries,
        xattrs,
        shards,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dumps_each_record_kind() {
        let mut seg = journal::encode_header(&[7; 16], 1);
        let op = Op::Free { ino: 9 };
        journal::encode_record(&mut seg, 1, &postcard::to_allocvec(&op).unwrap());
        seg.extend_from_slice(&[1, 2, 3]);
        let text = dump(&seg);
        assert!(
            text.contains("Free { ino: 9 }") && text.contains("torn tail"),
            "{text}"
        );
        let cp = checkpoint::encode(
            &checkpoint::CheckpointHeader {
                array_uuid: [7; 16],
                seq: 4,
                inodes: 0,
            },
            b"x",
        );
        assert!(dump(&cp).contains("covering sequence 4"));
        assert!(dump(b"garbage!").contains("not a raidfs"));
    }

    #[test]
    fn journal_info_lists_every_record_with_its_crc() {
        let mut seg = journal::encode_header(&[7; 16], 5);
        for (seq, ino) in [(5, 9), (6, 10), (7, 11)] {
            let op = Op::Free { ino };
            journal::encode_record(&mut seg, seq, &postcard::to_allocvec(&op).unwrap());
        }
        // Corrupt the payload of the second record: its CRC fails, the
        // third is still listed.
        let second = journal::HEADER_LEN + (seg.len() - journal::HEADER_LEN) / 3;
        let last = second + journal::RECORD_HEADER_LEN;
        seg[last] ^= 0xff;
        seg.extend_from_slice(&[9, 9]);
        let info = journal_info("journal-5", &seg);
        assert_eq!(info.first_seq, Some(5));
        let seqs: Vec<(u64, bool, &str)> = info
            .records
            .iter()
            .map(|r| (r.seq, r.crc_ok, r.kind.as_str()))
            .collect();
        assert_eq!(seqs[0], (5, true, "Free"));
        assert_eq!((seqs[1].0, seqs[1].1), (6, false));
        assert_eq!(seqs[2], (7, true, "Free"));
        assert_eq!(info.trailing_bytes, 2);
    }
}
