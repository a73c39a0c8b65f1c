//! Per-block checksums kept beside each shard.
//!
//! Every shard `<ino>` has a sidecar `<ino>.crc` holding one little-endian
//! `u32` per [`BLOCK`] bytes of the shard: entry `i` at byte `4 × i` covers
//! shard bytes `[i × BLOCK, (i + 1) × BLOCK)`. Blocks, not whole chunks, so
//! that a 4 KiB read verifies 4 KiB, not a whole chunk.
//!
//! The stored value is `crc32(block) ⊕ crc32(zero block)`: an all-zero block
//! (a hole, or bytes past the end of a short shard) has the stored value 0,
//! which is exactly what a hole in the sidecar reads as. Holes therefore
//! verify without ever writing checksums for them, while a block torn to
//! zeros under a non-zero entry, or garbage under a zero entry, does not.

use std::sync::OnceLock;

/// Bytes covered by one checksum entry.
pub const BLOCK: usize = 4096;
/// Bytes of one checksum entry in the sidecar.
pub const ENTRY: usize = 4;
/// The entry of a block that could not be rebuilt: its bytes are zeros,
/// whose stored checksum is 0, so it never matches and the block reads as
/// an error.
pub const POISON: u32 = 1;

fn zero_crc() -> u32 {
    static Z: OnceLock<u32> = OnceLock::new();
    *Z.get_or_init(|| crc32fast::hash(&[0u8; BLOCK]))
}

/// Stored checksum of one block (`block.len() == BLOCK`).
pub fn block_sum(block: &[u8]) -> u32 {
    crc32fast::hash(block) ^ zero_crc()
}

/// Fill `out` (4 bytes per block) with the stored checksums of `data`, whose
/// length is a multiple of [`BLOCK`].
pub fn encode_sums(data: &[u8], out: &mut [u8]) {
    debug_assert_eq!(data.len() % BLOCK, 0);
    debug_assert_eq!(out.len(), data.len() / BLOCK * ENTRY);
    for (block, e) in data.chunks_exact(BLOCK).zip(out.chunks_exact_mut(ENTRY)) {
        e.copy_from_slice(&block_sum(block).to_le_bytes());
    }
}

/// Stored entry `i` of a sidecar slice.
pub fn entry(sums: &[u8], i: usize) -> u32 {
    let e = &sums[i * ENTRY..(i + 1) * ENTRY];
    u32::from_le_bytes([e[0], e[1], e[2], e[3]])
}

/// Indices (relative to `data`) of blocks of `data` whose checksum does not
/// match `sums`.
pub fn bad_blocks(data: &[u8], sums: &[u8]) -> Vec<usize> {
    data.chunks_exact(BLOCK)
        .enumerate()
        .filter(|(i, b)| block_sum(b) != entry(sums, *i))
        .map(|(i, _)| i)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_block_sums_to_zero_and_flips_are_seen() {
        assert_eq!(block_sum(&[0u8; BLOCK]), 0);
        let mut b = vec![7u8; BLOCK * 2];
        let mut sums = vec![0u8; 8];
        encode_sums(&b, &mut sums);
        assert!(bad_blocks(&b, &sums).is_empty());
        b[BLOCK + 5] ^= 1;
        assert_eq!(bad_blocks(&b, &sums), vec![1]);
    }
}
