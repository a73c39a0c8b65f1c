//! Naive reference implementations, one byte at a time, straight from the
//! definitions: every kernel is checked against these (start-up self-test
//! and the proptest suite), and the codec is checked against
//! [`encode`]/[`reconstruct`].
//!
//! They are deliberately written differently from the kernels: Q is the
//! literal sum `⊕ 2^j · D_j` (not Horner's rule), products go through the
//! log/exp tables (themselves tested against bitwise multiplication in
//! [`crate::gf`]), and reconstruction solves the full generator matrix
//! `[I; A]` rather than the codec's one-pass coefficient matrix. Speed is
//! not a goal.
//!
//! Preconditions are those of [`crate::kernels`] (equal lengths, coefficient
//! count); violations panic, since these functions only serve tests.

use crate::gf;
use crate::matrix::{self, Matrix};

/// `dst = ⊕ srcs[i]`. Needs at least one source.
pub fn xor(srcs: &[&[u8]], dst: &mut [u8]) {
    assert!(!srcs.is_empty(), "xor needs at least one source");
    for (i, d) in dst.iter_mut().enumerate() {
        *d = srcs.iter().fold(0, |acc, s| acc ^ s[i]);
    }
}

/// `p = ⊕ srcs[j]`, `q = ⊕ 2^j · srcs[j]` (Linux md RAID-6).
pub fn pq(srcs: &[&[u8]], p: &mut [u8], q: &mut [u8]) {
    assert!(!srcs.is_empty(), "pq needs at least one source");
    assert_eq!(p.len(), q.len());
    for i in 0..p.len() {
        let mut bp = 0u8;
        let mut bq = 0u8;
        for (j, s) in srcs.iter().enumerate() {
            bp ^= s[i];
            bq ^= gf::mul(gf::pow2(j), s[i]);
        }
        p[i] = bp;
        q[i] = bq;
    }
}

/// `dsts[r] (^)= ⊕_j coeffs[r·n + j] · srcs[j]` with `n = srcs.len()`.
pub fn matmul(coeffs: &[u8], srcs: &[&[u8]], dsts: &mut [&mut [u8]], accumulate: bool) {
    let n = srcs.len();
    assert_eq!(coeffs.len(), n * dsts.len(), "coefficient count");
    for (r, d) in dsts.iter_mut().enumerate() {
        for i in 0..d.len() {
            let mut acc = if accumulate { d[i] } else { 0 };
            for (j, s) in srcs.iter().enumerate() {
                acc ^= gf::mul(coeffs[r * n + j], s[i]);
            }
            d[i] = acc;
        }
    }
}

/// All `m` parity chunks of `data` with the encoding matrix.
pub fn encode(data: &[&[u8]], m: usize) -> Vec<Vec<u8>> {
    let k = data.len();
    let len = data.first().map_or(0, |d| d.len());
    let a = matrix::encoding(m, k).expect("valid shape");
    let mut out = vec![vec![0u8; len]; m];
    let mut dsts: Vec<&mut [u8]> = out.iter_mut().map(|v| v.as_mut_slice()).collect();
    matmul(a.as_bytes(), data, &mut dsts, false);
    out
}

/// Recompute the chunks in `missing` (indices into data-then-parity) from
/// the others: pick the first `k` surviving rows of `[I; A]`, invert that
/// k×k matrix, recover all data, then re-encode the missing parity.
/// Returns the full set of `k + m` chunks.
pub fn reconstruct(chunks: &[Vec<u8>], k: usize, m: usize, missing: &[usize]) -> Vec<Vec<u8>> {
    assert_eq!(chunks.len(), k + m);
    assert!(missing.len() <= m);
    let a = matrix::encoding(m, k).expect("valid shape");
    let len = chunks.first().map_or(0, |c| c.len());
    let mut generator = Matrix::zero(k + m, k);
    for r in 0..k + m {
        for c in 0..k {
            let v = if r < k {
                u8::from(r == c)
            } else {
                a.get(r - k, c)
            };
            generator.set(r, c, v);
        }
    }
    let rows: Vec<usize> = (0..k + m)
        .filter(|r| !missing.contains(r))
        .take(k)
        .collect();
    let cols: Vec<usize> = (0..k).collect();
    let decode = generator
        .select(&rows, &cols)
        .invert()
        .expect("MDS: every k rows invert");
    let srcs: Vec<&[u8]> = rows.iter().map(|&r| chunks[r].as_slice()).collect();
    let mut data = vec![vec![0u8; len]; k];
    {
        let mut dsts: Vec<&mut [u8]> = data.iter_mut().map(|v| v.as_mut_slice()).collect();
        matmul(decode.as_bytes(), &srcs, &mut dsts, false);
    }
    let data_refs: Vec<&[u8]> = data.iter().map(|v| v.as_slice()).collect();
    let parity = encode(&data_refs, m);
    data.into_iter().chain(parity).collect()
}
