//! Checkpoint payload: the whole namespace in one compact little-endian
//! stream (framed by [`crate::format::checkpoint`]). Layout in
//! docs/FORMAT.md "Checkpoint payload":
//!
//! ```text
//! u64 next_ino
//! per inode (count in the frame header):
//!   u64 ino, u32 mode, u32 uid, u32 gid, u32 nlink, u32 rdev, u64 size,
//!   i64 atime_ns, i64 mtime_ns, i64 ctime_ns,
//!   u8 body: 0 striped file | 1 inline file: u32 len, bytes
//!          | 2 directory: u64 parent, u64 next_cookie, u32 n,
//!                         n × (u64 cookie, u64 ino, u16 len, name)
//!          | 3 symlink: u32 len, target | 4 special (device, FIFO, socket)
//!   u32 xattr count, each: u16 name len, name, u32 value len, value
//! ```
//! Hand-written rather than serde so that loading a million inodes costs
//! one pass and no intermediate structures.

use super::inode::{Body, Dir, Inode};
use super::namespace::Namespace;
use super::table::InodeTable;
use crate::format::bytes::{Reader, Writer};
use crate::format::checkpoint as cfmt;
use crate::{ArrayError, Result};

/// Serialize the namespace; returns (payload, inode count).
pub fn encode(ns: &Namespace) -> (Vec<u8>, u64) {
    let mut w = Writer::with_capacity(ns.inodes.len() * 112 + 8);
    let count = encode_into(ns, &mut w);
    (w.buf, count)
}

/// A whole checkpoint file for `ns` covering `seq`, built in one buffer.
pub fn encode_file(ns: &Namespace, array_uuid: &[u8; 16], seq: u64) -> Vec<u8> {
    let mut w = Writer::with_capacity(cfmt::HEADER_LEN + ns.inodes.len() * 112 + 12);
    w.zeros(cfmt::HEADER_LEN);
    let inodes = encode_into(ns, &mut w);
    let mut buf = w.buf;
    cfmt::seal(
        &mut buf,
        &cfmt::CheckpointHeader {
            array_uuid: *array_uuid,
            seq,
            inodes,
        },
    );
    buf
}

fn encode_into(ns: &Namespace, w: &mut Writer) -> u64 {
    w.u64(ns.next_ino);
    let mut count = 0u64;
    for (ino, i) in ns.inodes.iter() {
        count += 1;
        w.u64(ino);
        w.u32(i.mode);
        w.u32(i.uid);
        w.u32(i.gid);
        w.u32(i.nlink);
        w.u32(i.rdev);
        w.u64(i.size);
        w.u64(i.atime as u64);
        w.u64(i.mtime as u64);
        w.u64(i.ctime as u64);
        match &i.body {
            Body::File { inline: None } => w.u8(0),
            Body::File { inline: Some(d) } => {
                w.u8(1);
                w.u32(d.len() as u32);
                w.bytes(d);
            }
            Body::Dir(d) => {
                w.u8(2);
                w.u64(d.parent);
                w.u64(d.next_cookie);
                w.u32(d.len() as u32);
                for (cookie, e) in d.entries_after(0) {
                    w.u64(cookie);
                    w.u64(e.ino);
                    w.u16(e.name.len() as u16);
                    w.bytes(&e.name);
                }
            }
            Body::Symlink(t) => {
                w.u8(3);
                w.u32(t.len() as u32);
                w.bytes(t);
            }
            Body::Special => w.u8(4),
        }
        let x = i.xattrs.as_deref().map(|v| v.as_slice()).unwrap_or(&[]);
        w.u32(x.len() as u32);
        for (n, v) in x {
            w.u16(n.len() as u16);
            w.bytes(n);
            w.u32(v.len() as u32);
            w.bytes(v);
        }
    }
    count
}

/// Rebuild a namespace from a payload holding `count` inodes.
pub fn decode(payload: &[u8], count: u64) -> Result<Namespace> {
    const WHAT: &str = "checkpoint payload";
    let corrupt = |d: String| ArrayError::Corrupt {
        what: WHAT.into(),
        detail: d,
    };
    let mut r = Reader::new(WHAT, payload);
    let next_ino = r.u64()?;
    let mut inodes = InodeTable::new();
    for _ in 0..count {
        let ino = r.u64()?;
        let mode = r.u32()?;
        let uid = r.u32()?;
        let gid = r.u32()?;
        let nlink = r.u32()?;
        let rdev = r.u32()?;
        let size = r.u64()?;
        let atime = r.u64()? as i64;
        let mtime = r.u64()? as i64;
        let ctime = r.u64()? as i64;
        let body = match r.u8()? {
            0 => Body::File { inline: None },
            1 => {
                let n = r.u32()? as usize;
                Body::File {
                    inline: Some(r.take(n)?.to_vec()),
                }
            }
            2 => {
                let parent = r.u64()?;
                let next_cookie = r.u64()?;
                let n = r.u32()?;
                let mut d = Dir::with_capacity(parent, (n as usize).min(payload.len() / 20));
                for _ in 0..n {
                    let cookie = r.u64()?;
                    let child = r.u64()?;
                    let len = r.u16()? as usize;
                    if cookie <= d.last_cookie() || child == 0 {
                        return Err(corrupt(format!(
                            "directory {ino}: entries out of order or inode 0"
                        )));
                    }
                    d.insert_at(cookie, r.take(len)?.into(), child);
                }
                d.next_cookie = d.next_cookie.max(next_cookie);
                Body::Dir(Box::new(d))
            }
            3 => {
                let n = r.u32()? as usize;
                Body::Symlink(r.take(n)?.into())
            }
            4 => Body::Special,
            t => return Err(corrupt(format!("inode {ino}: unknown body tag {t}"))),
        };
        let nx = r.u32()?;
        let xattrs = if nx == 0 {
            None
        } else {
            let mut v = Vec::with_capacity(nx.min(1024) as usize);
            for _ in 0..nx {
                let nl = r.u16()? as usize;
                let name: Box<[u8]> = r.take(nl)?.into();
                let vl = r.u32()? as usize;
                v.push((name, r.take(vl)?.into()));
            }
            Some(Box::new(v))
        };
        let inode = Inode {
            mode,
            uid,
            gid,
            nlink,
            rdev,
            size,
            atime,
            mtime,
            ctime,
            body,
            xattrs,
        };
        if inodes.insert(ino, inode).is_some() {
            return Err(corrupt(format!("inode {ino} appears twice")));
        }
    }
    if r.pos() != payload.len() {
        return Err(corrupt(format!(
            "{} trailing bytes",
            payload.len() - r.pos()
        )));
    }
    if !inodes
        .get(&super::inode::ROOT_INO)
        .is_some_and(|i| i.is_dir())
    {
        return Err(corrupt("no root directory".into()));
    }
    Ok(Namespace { inodes, next_ino })
}
