//! Reading one member's metadata back: find its newest valid checkpoint,
//! then the journal records after it, in sequence, up to the first torn or
//! missing record.

use std::sync::Arc;

use super::journal::META_DIR;
use super::namespace::Namespace;
use super::ops::Op;
use crate::format::{checkpoint as cfmt, journal as jfmt};
use crate::member::Member;
use crate::{ArrayError, Result};

/// What a member holds, before anything is decoded in full.
#[derive(Debug)]
pub struct MetaImage {
    /// Sequence covered by the newest checkpoint with a valid header.
    pub checkpoint_seq: u64,
    /// Journal records after the checkpoint (contiguous, in order).
    pub records: u64,
    /// Sequence of the last of them (the checkpoint's if none).
    pub head: u64,
    /// Whether anything follows the last valid record (a torn tail, a
    /// gap, or a record of the wrong sequence).
    pub torn: bool,
}

impl MetaImage {
    /// Last sequence this member holds.
    pub fn head(&self) -> u64 {
        self.head
    }
}

fn io_err(index: usize, m: &dyn Member, ctx: &str, e: std::io::Error) -> ArrayError {
    ArrayError::MemberIo {
        member: index,
        path: m.describe(),
        context: ctx.into(),
        source: e,
    }
}

/// Checkpoint sequences on a member, newest first.
fn checkpoints(names: &[String]) -> Vec<u64> {
    let mut v: Vec<u64> = names
        .iter()
        .filter_map(|n| cfmt::parse_file_name(n))
        .collect();
    v.sort_unstable_by(|a, b| b.cmp(a));
    v
}

/// Read a member's checkpoint header and journal records.
pub fn scan(index: usize, member: &dyn Member, array_uuid: &[u8; 16]) -> Result<MetaImage> {
    let names = member
        .list(META_DIR)
        .map_err(|e| io_err(index, member, "list metadata", e))?;
    let mut checkpoint_seq = None;
    for seq in checkpoints(&names) {
        let path = format!("{META_DIR}/{}", cfmt::file_name(seq));
        let header = member.open(&path).and_then(|f| {
            let mut buf = vec![0u8; cfmt::HEADER_LEN + 4];
            let n = f.read_at(0, &mut buf)?;
            buf.truncate(n);
            Ok(buf)
        });
        let Ok(header) = header else { continue };
        // Header only: the payload CRC is checked when the checkpoint is loaded.
        let ok = header.len() >= cfmt::HEADER_LEN
            && crate::format::bytes::check_trailing_crc(
                "checkpoint header",
                &header[..cfmt::HEADER_LEN],
            )
            .is_ok()
            && header[..8] == cfmt::MAGIC
            && header[16..32] == array_uuid[..]
            && u64::from_le_bytes(header[32..40].try_into().unwrap_or_default()) == seq;
        if ok {
            checkpoint_seq = Some(seq);
            break;
        }
        tracing::warn!(member = index, seq, "ignoring invalid checkpoint");
    }
    let checkpoint_seq = checkpoint_seq.ok_or_else(|| ArrayError::Corrupt {
        what: format!("metadata of member {index} ({})", member.describe()),
        detail: "no valid checkpoint".into(),
    })?;
    let (head, records, torn) =
        walk_journal(index, member, array_uuid, &names, checkpoint_seq, |_, _| {
            Ok(())
        })?;
    Ok(MetaImage {
        checkpoint_seq,
        records,
        head,
        torn,
    })
}

/// Walk a member's journal records after `checkpoint_seq`, in sequence,
/// calling `each(seq, payload)`; one segment is in memory at a time.
/// Returns (last sequence, records walked, whether something invalid
/// followed).
fn walk_journal(
    index: usize,
    member: &dyn Member,
    array_uuid: &[u8; 16],
    names: &[String],
    checkpoint_seq: u64,
    mut each: impl FnMut(u64, &[u8]) -> Result<()>,
) -> Result<(u64, u64, bool)> {
    let mut segs: Vec<u64> = names
        .iter()
        .filter_map(|n| jfmt::parse_segment_name(n))
        .collect();
    segs.sort_unstable();
    let mut records = 0u64;
    let mut expect = checkpoint_seq + 1;
    let mut torn = false;
    for (j, &first) in segs.iter().enumerate() {
        // A segment followed by one starting at or before `expect` holds only
        // records already covered: skip it unread. One that starts after a
        // gap ends the journal.
        if segs.get(j + 1).is_some_and(|&next| next <= expect) {
            continue;
        }
        if first > expect {
            torn = true;
            break;
        }
        let path = format!("{META_DIR}/{}", jfmt::segment_name(first));
        let buf = member
            .read_all(&path)
            .map_err(|e| io_err(index, member, "read journal segment", e))?;
        match jfmt::decode_header(&buf) {
            Ok((uuid, f)) if uuid == *array_uuid && f == first => {}
            _ => {
                torn = true;
                break;
            }
        }
        let mut pos = jfmt::HEADER_LEN;
        while let Some(rec) = jfmt::decode_record(&buf, pos) {
            if rec.seq == expect {
                each(rec.seq, rec.payload)?;
                records += 1;
                expect += 1;
            } else if rec.seq > expect {
                torn = true;
                break;
            }
            pos = rec.end;
        }
        if pos < buf.len() {
            torn = true;
        }
    }
    Ok((expect - 1, records, torn))
}

/// Load the namespace a member holds: its checkpoint plus its journal
/// records, applied as they are read (one segment in memory at a time).
/// Returns the namespace and the last applied sequence.
pub fn load(
    index: usize,
    member: &Arc<dyn Member>,
    array_uuid: &[u8; 16],
    image: &MetaImage,
) -> Result<(Namespace, u64)> {
    let path = format!("{META_DIR}/{}", cfmt::file_name(image.checkpoint_seq));
    let buf = member
        .read_all(&path)
        .map_err(|e| io_err(index, &**member, "read checkpoint", e))?;
    let (hdr, payload) = cfmt::decode(&buf)?;
    if hdr.array_uuid != *array_uuid || hdr.seq != image.checkpoint_seq {
        return Err(ArrayError::Corrupt {
            what: "checkpoint".into(),
            detail: "belongs to another array or sequence".into(),
        });
    }
    let mut ns = super::checkpoint::decode(payload, hdr.inodes)?;
    drop(buf);
    let names = member
        .list(META_DIR)
        .map_err(|e| io_err(index, &**member, "list metadata", e))?;
    let (head, _, _) = walk_journal(
        index,
        &**member,
        array_uuid,
        &names,
        hdr.seq,
        |seq, payload| {
            let op: Op = postcard::from_bytes(payload).map_err(|e| ArrayError::Corrupt {
                what: format!("journal record {seq}"),
                detail: e.to_string(),
            })?;
            ns.apply(&op).map_err(|e| ArrayError::Corrupt {
                what: format!("journal record {seq}"),
                detail: format!("does not replay: {e}"),
            })?;
            Ok(())
        },
    )?;
    Ok((ns, head))
}
