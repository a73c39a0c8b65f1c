//! Checkpoint framing: `.raidfs/meta/checkpoint-<seq>` holds a full
//! snapshot of the metadata with every journal record up to and including
//! `seq` applied. Written atomically (temporary name, fsync, rename).
//!
//! ```text
//!  0  8  magic "RAIDFSCP"
//!  8  2  major version (1)
//! 10  2  minor version (0)
//! 12  4  header length (64)
//! 16 16  array UUID
//! 32  8  sequence number covered
//! 40  8  payload length L
//! 48  8  number of inodes in the payload
//! 56  4  reserved, zero
//! 60  4  CRC32 of bytes 0..60
//! 64  L  payload (the namespace, see docs/FORMAT.md "Checkpoint payload")
//! 64+L 4 CRC32 of the payload
//! ```

use super::bytes::{Reader, Writer, check_trailing_crc};
use crate::{ArrayError, Result};

pub const MAGIC: [u8; 8] = *b"RAIDFSCP";
pub const MAJOR: u16 = 1;
pub const MINOR: u16 = 0;
pub const HEADER_LEN: usize = 64;

/// Decoded checkpoint header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointHeader {
    pub array_uuid: [u8; 16],
    pub seq: u64,
    pub inodes: u64,
}

/// Frame a payload into a whole checkpoint file.
pub fn encode(h: &CheckpointHeader, payload: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(HEADER_LEN + payload.len() + 4);
    buf.resize(HEADER_LEN, 0);
    buf.extend_from_slice(payload);
    seal(&mut buf, h);
    buf
}

/// Finish a checkpoint built in place: `buf` holds `HEADER_LEN` reserved
/// bytes followed by the payload. Fills in the header and appends the
/// payload CRC, so a large snapshot is never copied.
pub fn seal(buf: &mut Vec<u8>, h: &CheckpointHeader) {
    let payload_len = buf.len().saturating_sub(HEADER_LEN);
    let payload_crc = crc32fast::hash(&buf[HEADER_LEN.min(buf.len())..]);
    let mut w = Writer::with_capacity(HEADER_LEN);
    w.bytes(&MAGIC);
    w.u16(MAJOR);
    w.u16(MINOR);
    w.u32(HEADER_LEN as u32);
    w.bytes(&h.array_uuid);
    w.u64(h.seq);
    w.u64(payload_len as u64);
    w.u64(h.inodes);
    w.u32(0);
    let header = w.finish_crc();
    buf[..HEADER_LEN].copy_from_slice(&header);
    buf.extend_from_slice(&payload_crc.to_le_bytes());
}

/// Verify a checkpoint file and return its header and payload.
pub fn decode(buf: &[u8]) -> Result<(CheckpointHeader, &[u8])> {
    const WHAT: &str = "checkpoint";
    let corrupt = |detail: String| ArrayError::Corrupt {
        what: WHAT.into(),
        detail,
    };
    if buf.len() < HEADER_LEN + 4 {
        return Err(corrupt(format!("only {} bytes", buf.len())));
    }
    let mut r = Reader::new(WHAT, buf);
    if r.array::<8>()? != MAGIC {
        return Err(corrupt("bad magic".into()));
    }
    let major = r.u16()?;
    let minor = r.u16()?;
    super::check_version(WHAT, major, minor, MAJOR)?;
    let hlen = r.u32()? as usize;
    if hlen != HEADER_LEN {
        return Err(corrupt(format!("header length {hlen}")));
    }
    check_trailing_crc(WHAT, &buf[..HEADER_LEN])?;
    let array_uuid = r.array()?;
    let seq = r.u64()?;
    let len = r.u64()?;
    let inodes = r.u64()?;
    let len = usize::try_from(len).map_err(|_| corrupt("payload length overflows".into()))?;
    if buf.len() != HEADER_LEN + len + 4 {
        return Err(corrupt(format!(
            "payload length {len} but file holds {} bytes",
            buf.len()
        )));
    }
    check_trailing_crc(WHAT, &buf[HEADER_LEN..])?;
    Ok((
        CheckpointHeader {
            array_uuid,
            seq,
            inodes,
        },
        &buf[HEADER_LEN..HEADER_LEN + len],
    ))
}

/// File name of the checkpoint covering `seq`.
pub fn file_name(seq: u64) -> String {
    format!("checkpoint-{seq:020}")
}

/// Parse a checkpoint file name back to its sequence.
pub fn parse_file_name(name: &str) -> Option<u64> {
    name.strip_prefix("checkpoint-")?.parse().ok()
}
