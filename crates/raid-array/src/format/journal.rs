//! Metadata journal framing: a segment file `.raidfs/meta/journal-<seq>`
//! (seq = first record's sequence, 20 decimal digits) starts with a header,
//! followed by records appended back to back.
//!
//! Segment header (48 bytes):
//! ```text
//!  0  8  magic "RAIDFSJL"
//!  8  2  major version (1)
//! 10  2  minor version (1: may hold `SetModeAcl` records)
//! 12  4  header length (48)
//! 16 16  array UUID
//! 32  8  sequence number of the first record in this segment
//! 40  4  reserved, zero
//! 44  4  CRC32 of bytes 0..44
//! ```
//!
//! Record (16-byte header + payload):
//! ```text
//!  0  4  payload length L (1 ..= 16 MiB)
//!  4  4  CRC32 of bytes 8 .. 16+L (sequence number and payload)
//!  8  8  sequence number (previous record's + 1)
//! 16  L  payload: one metadata operation, postcard-encoded
//! ```
//! A reader stops at the first record that is short, fails its CRC or
//! breaks the sequence: that is the torn tail of an interrupted append, and
//! nothing after it was ever acknowledged.

use super::bytes::{Reader, Writer, check_trailing_crc};
use crate::{ArrayError, Result};

pub const MAGIC: [u8; 8] = *b"RAIDFSJL";
pub const MAJOR: u16 = 1;
pub const MINOR: u16 = 1;
pub const HEADER_LEN: usize = 48;
pub const RECORD_HEADER_LEN: usize = 16;
/// Largest payload a record may carry (a guard against garbage lengths).
pub const MAX_PAYLOAD: usize = 16 << 20;

/// Encode a segment header.
pub fn encode_header(array_uuid: &[u8; 16], first_seq: u64) -> Vec<u8> {
    let mut w = Writer::with_capacity(HEADER_LEN);
    w.bytes(&MAGIC);
    w.u16(MAJOR);
    w.u16(MINOR);
    w.u32(HEADER_LEN as u32);
    w.bytes(array_uuid);
    w.u64(first_seq);
    w.u32(0);
    w.finish_crc()
}

/// Decode a segment header; returns (array UUID, first sequence).
pub fn decode_header(buf: &[u8]) -> Result<([u8; 16], u64)> {
    const WHAT: &str = "journal segment header";
    if buf.len() < HEADER_LEN {
        return Err(ArrayError::Corrupt {
            what: WHAT.into(),
            detail: format!("only {} bytes", buf.len()),
        });
    }
    let mut r = Reader::new(WHAT, &buf[..HEADER_LEN]);
    if r.array::<8>()? != MAGIC {
        return Err(ArrayError::Corrupt {
            what: WHAT.into(),
            detail: "bad magic".into(),
        });
    }
    let major = r.u16()?;
    let minor = r.u16()?;
    super::check_version(WHAT, major, minor, MAJOR)?;
    let hlen = r.u32()? as usize;
    if hlen != HEADER_LEN {
        return Err(ArrayError::Corrupt {
            what: WHAT.into(),
            detail: format!("header length {hlen}"),
        });
    }
    check_trailing_crc(WHAT, &buf[..HEADER_LEN])?;
    let uuid = r.array()?;
    let first = r.u64()?;
    Ok((uuid, first))
}

/// Append one record to `out`.
pub fn encode_record(out: &mut Vec<u8>, seq: u64, payload: &[u8]) {
    let start = out.len();
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// One decoded record borrowed from a segment buffer.
pub struct RecordRef<'a> {
    pub seq: u64,
    pub payload: &'a [u8],
    /// Offset just past this record in the segment.
    pub end: usize,
}

/// Decode the record at `pos`, or `None` if the bytes there are not a whole
/// valid record (end of the journal, or its torn tail).
pub fn decode_record(buf: &[u8], pos: usize) -> Option<RecordRef<'_>> {
    let hdr = buf.get(pos..pos + RECORD_HEADER_LEN)?;
    let len = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
    let crc = u32::from_le_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
    if len == 0 || len > MAX_PAYLOAD {
        return None;
    }
    let end = pos + RECORD_HEADER_LEN + len;
    let body = buf.get(pos + 8..end)?;
    if crc32fast::hash(body) != crc {
        return None;
    }
    let seq = u64::from_le_bytes(body[..8].try_into().ok()?);
    Some(RecordRef {
        seq,
        payload: &body[8..],
        end,
    })
}

/// File name of the segment whose first record is `first_seq`.
pub fn segment_name(first_seq: u64) -> String {
    format!("journal-{first_seq:020}")
}

/// Parse a segment file name back to its first sequence.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    name.strip_prefix("journal-")?.parse().ok()
}
