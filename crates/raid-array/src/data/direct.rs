//! Writing whole runs of blocks around the page cache, for a rebuild.
//!
//! A rebuild writes every chunk of the new member once and nothing reads
//! them back soon; through `write(2)` each byte is first copied into the
//! page cache, which was most of the rebuilding thread's time. Here the
//! data goes through a handle from [`Member::open_direct`] (`O_DIRECT`
//! where the filesystem allows it, the page cache otherwise) from a buffer
//! aligned to [`DIRECT_ALIGN`], and the checksums of the blocks are
//! computed and written (small, through the page cache) at the same time
//! on the I/O pool.
//!
//! [`Member::open_direct`]: crate::member::Member::open_direct

use std::io;

use super::{DataStore, checksum, pool};
use crate::member::{DIRECT_ALIGN, MemberFile};
use checksum::BLOCK;

/// A byte buffer whose start is aligned to [`DIRECT_ALIGN`], so writes of
/// it (at aligned offsets, in whole blocks) can bypass the page cache.
/// Safe code: an over-allocated `Vec` and the aligned window inside it.
#[derive(Default)]
pub(crate) struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    /// Make the buffer `len` bytes long. Its contents are unspecified (the
    /// caller overwrites every byte); memory is reused when large enough.
    pub fn resize(&mut self, len: usize) {
        if self.raw.len() < len + DIRECT_ALIGN {
            self.raw = vec![0; len + DIRECT_ALIGN];
        }
        // Always within the slack for u8; if it ever were not, the window
        // starts unaligned and writes of it simply go through the page cache.
        self.start = self
            .raw
            .as_ptr()
            .align_offset(DIRECT_ALIGN)
            .min(DIRECT_ALIGN);
        self.len = len;
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.len]
    }
}

impl DataStore {
    /// As [`DataStore::write_blocks`], with the data written through
    /// `direct` (a handle of the same shard from `open_direct`) while the
    /// checksums are computed and written beside it on the I/O pool.
    /// `data` is whole blocks; it bypasses the page cache when `data`,
    /// `off` and its length are aligned to [`DIRECT_ALIGN`].
    /// The blocks at byte offsets `poisoned` of `data` (zeros: they could
    /// not be rebuilt) get a checksum entry that cannot match, in the same
    /// write as the others, so they read as EIO, never as zeros under a
    /// valid checksum whatever fails afterwards.
    /// Not durable until [`DataStore::sync`].
    pub(crate) fn write_blocks_direct(
        &self,
        j: usize,
        ino: u64,
        off: u64,
        data: &[u8],
        poisoned: &[usize],
        direct: &dyn MemberFile,
    ) -> io::Result<()> {
        debug_assert_eq!(data.len() % BLOCK, 0);
        let member = self
            .member(j)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "member missing"))?;
        self.note_unsynced(ino);
        if !poisoned.is_empty() {
            // The file's logical bytes there change to "unreadable".
            self.readahead.invalidate(ino);
            self.tails.forget(ino);
            self.zero_past_end.forget(ino);
        }
        let shard = self.handles.get(j, member.as_ref(), ino, true)?;
        let (w, s) = pool::join(
            || direct.write_at(off, data),
            || {
                let mut sums = vec![0u8; data.len() / BLOCK * checksum::ENTRY];
                checksum::encode_sums(data, &mut sums);
                for &at in poisoned {
                    let e = at / BLOCK * checksum::ENTRY;
                    sums[e..e + checksum::ENTRY].copy_from_slice(&checksum::POISON.to_le_bytes());
                }
                shard
                    .sums
                    .write_at(off / BLOCK as u64 * checksum::ENTRY as u64, &sums)
            },
        );
        w?;
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_buf_is_aligned_and_keeps_its_length() {
        let mut b = AlignedBuf::default();
        for len in [0, 4096, 3 * 65536, 4096] {
            b.resize(len);
            let s = b.as_mut_slice();
            assert_eq!(s.len(), len);
            assert_eq!(s.as_ptr().align_offset(DIRECT_ALIGN), 0);
        }
    }
}
