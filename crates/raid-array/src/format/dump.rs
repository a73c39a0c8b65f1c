//! Human-readable dumps of on-disk records, for `raidfs debug` style tools
//! and bug reports: recognise a record by its magic and print every field.

use std::fmt::Write;

use super::superblock::{Superblock, uuid_string};
use super::{checkpoint, journal};
use crate::meta::ops::Op;

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
}
