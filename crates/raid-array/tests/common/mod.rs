//! Helpers shared by the engine's integration tests.

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
