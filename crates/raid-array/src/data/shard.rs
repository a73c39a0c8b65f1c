//! Where a file's shard lives on a member, and a cache of open shard files.
//!
//! Shard of inode `ino`: `.raidfs/data/<xx>/<ino as 16 hex digits>`, with
//! `xx` the low byte of `ino` in hex, so no directory grows beyond 1/256 of
//! the files; its checksum sidecar is the same path with `.crc` appended.
//! Opening a file through a capability handle costs a path walk per call,
//! so open shards are cached per (member, inode).

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::member::{Member, MemberFile};

/// Path of the shard of `ino` on a member.
pub fn shard_path(ino: u64) -> String {
    format!(".raidfs/data/{:02x}/{:016x}", ino & 0xff, ino)
}

/// The inodes that have a shard or a sidecar on `member`, found by listing
/// its data directories (names that are not shards are ignored). A data
/// directory that cannot be listed is skipped with a warning; `Err` if the
/// top one cannot be listed.
pub(crate) fn stored_inos(member: &dyn Member) -> io::Result<std::collections::BTreeSet<u64>> {
    let mut inos = std::collections::BTreeSet::new();
    for dir in member.list(".raidfs/data")? {
        let path = format!(".raidfs/data/{dir}");
        let names = match member.list(&path) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(member = %member.describe(), path, error = %e, "cannot list a data directory");
                continue;
            }
        };
        for name in names {
            let hex = name.strip_suffix(".crc").unwrap_or(&name);
            if let Ok(ino) = u64::from_str_radix(hex, 16)
                && shard_path(ino) == format!("{path}/{hex}")
            {
                inos.insert(ino);
            }
        }
    }
    Ok(inos)
}

/// Path of the checksum sidecar of `ino` on a member.
pub fn sums_path(ino: u64) -> String {
    format!("{}.crc", shard_path(ino))
}

/// An open shard and its checksum sidecar.
pub(crate) struct Shard {
    pub data: Arc<dyn MemberFile>,
    pub sums: Arc<dyn MemberFile>,
}

/// The checksums of a shard whose sidecar file is gone, as reads see
/// them: none (all zero). Writes go through a handle that creates the file.
struct MissingSums;

impl MemberFile for MissingSums {
    fn read_at(&self, _offset: u64, _buf: &mut [u8]) -> io::Result<usize> {
        Ok(0)
    }
    fn write_at(&self, _offset: u64, _data: &[u8]) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            "the checksum file of this shard is missing",
        ))
    }
    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }
    fn len(&self) -> io::Result<u64> {
        Ok(0)
    }
    fn set_len(&self, _len: u64) -> io::Result<()> {
        self.write_at(0, &[])
    }
    fn next_data(&self, _offset: u64) -> io::Result<Option<u64>> {
        Ok(None)
    }
}

/// Open shards, bounded: when full, everything is dropped and reopened on
/// demand (cheap compared with keeping an LRU list on every access).
#[derive(Default)]
pub(crate) struct Handles {
    map: Mutex<HashMap<(usize, u64), Arc<Shard>>>,
}

const MAX_OPEN: usize = 1024;

impl Handles {
    fn lock(&self) -> MutexGuard<'_, HashMap<(usize, u64), Arc<Shard>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The shard of `ino` on member `idx`; created (with its directory) when
    /// `create`, otherwise a missing shard is `NotFound`.
    pub fn get(
        &self,
        idx: usize,
        member: &dyn Member,
        ino: u64,
        create: bool,
    ) -> io::Result<Arc<Shard>> {
        if let Some(s) = self.lock().get(&(idx, ino)) {
            return Ok(s.clone());
        }
        let (data, sums) = if create {
            (
                member.create(&shard_path(ino))?,
                member.create(&sums_path(ino))?,
            )
        } else {
            let data = member.open(&shard_path(ino))?;
            // A shard whose sidecar is gone reads as all-zero sums: every
            // non-zero block then fails verification and is reconstructed.
            // Reading makes nothing (a read-only array writes nothing); the
            // handle is not kept, so the next write creates the sidecar.
            match member.open(&sums_path(ino)) {
                Ok(s) => (data, s),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    let sums: Arc<dyn MemberFile> = Arc::new(MissingSums);
                    return Ok(Arc::new(Shard { data, sums }));
                }
                Err(e) => return Err(e),
            }
        };
        Ok(self.keep(idx, ino, Shard { data, sums }))
    }

    /// The shard of `ino` on member `idx`, created, and emptied if it
    /// already held anything (with its checksums).
    pub fn open_empty(&self, idx: usize, member: &dyn Member, ino: u64) -> io::Result<Arc<Shard>> {
        let data = member.create_empty(&shard_path(ino))?;
        let sums = member.create_empty(&sums_path(ino))?;
        Ok(self.keep(idx, ino, Shard { data, sums }))
    }

    fn keep(&self, idx: usize, ino: u64, shard: Shard) -> Arc<Shard> {
        let shard = Arc::new(shard);
        let mut map = self.lock();
        if map.len() >= MAX_OPEN {
            map.clear();
        }
        map.insert((idx, ino), shard.clone());
        shard
    }

    /// The cached shard of `ino` on member `idx`, if open.
    pub fn cached(&self, idx: usize, ino: u64) -> Option<Arc<Shard>> {
        self.lock().get(&(idx, ino)).cloned()
    }

    /// Forget the shards of `ino`.
    pub fn forget_ino(&self, ino: u64) {
        self.lock().retain(|(_, i), _| *i != ino);
    }

    /// Forget every shard on member `idx` (it failed or was replaced).
    pub fn forget_member(&self, idx: usize) {
        self.lock().retain(|(m, _), _| *m != idx);
    }
}
