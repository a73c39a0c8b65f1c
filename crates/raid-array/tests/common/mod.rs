//! Helpers shared by the engine's integration tests (each test binary
//! uses some of them).

#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// `n` fresh member directories `root/<prefix>0..`.
pub fn make_dirs(root: &Path, prefix: &str, n: usize) -> Vec<PathBuf> {
    (0..n)
        .map(|i| {
            let d = root.join(format!("{prefix}{i}"));
            std::fs::create_dir(&d).unwrap();
            d
        })
        .collect()
}

/// Deterministic pseudo-random bytes (xorshift), different for each seed:
/// test data whose every block differs, so a misplaced chunk shows.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
