//! Portable kernel: 64-bit words for XOR and multiply-by-2, table lookups for
//! general multiplication. Runs everywhere and is the fallback when no SIMD
//! kernel passes the self-test.

use super::{Kernel, assert_lengths};
use crate::gf;

pub static KERNEL: Kernel = Kernel {
    name: "scalar",
    xor,
    pq,
    matmul,
};

const W: usize = 8;

#[inline]
fn load(b: &[u8], i: usize) -> u64 {
    let mut w = [0u8; W];
    w.copy_from_slice(&b[i..i + W]);
    u64::from_le_bytes(w)
}

#[inline]
fn store(b: &mut [u8], i: usize, v: u64) {
    b[i..i + W].copy_from_slice(&v.to_le_bytes());
}

/// Multiply eight packed bytes by 2 in GF(2⁸) at once (md's `MASK`/`SHLBYTE`).
#[inline]
fn mul2_u64(v: u64) -> u64 {
    let hi = v & 0x8080_8080_8080_8080;
    let mask = (hi << 1).wrapping_sub(hi >> 7);
    ((v << 1) & 0xfefe_fefe_fefe_fefe) ^ (mask & 0x1d1d_1d1d_1d1d_1d1d)
}

fn xor(srcs: &[&[u8]], dst: &mut [u8]) {
    let len = dst.len();
    assert!(!srcs.is_empty(), "xor needs at least one source");
    assert_lengths(len, srcs, &[]);
    // Plain slice XOR auto-vectorises well; this stays the portable baseline.
    dst.copy_from_slice(srcs[0]);
    for s in &srcs[1..] {
        for (d, x) in dst.iter_mut().zip(s.iter()) {
            *d ^= *x;
        }
    }
}

fn pq(srcs: &[&[u8]], p: &mut [u8], q: &mut [u8]) {
    let len = p.len();
    assert!(!srcs.is_empty(), "pq needs at least one source");
    assert!(q.len() == len, "pq: q length mismatch");
    assert_lengths(len, srcs, &[]);
    let words = len / W * W;
    let last = srcs.len() - 1;
    let mut i = 0;
    while i < words {
        // Horner's rule from the highest-numbered source down: q = q·2 ^ d.
        let mut wp = load(srcs[last], i);
        let mut wq = wp;
        for s in srcs[..last].iter().rev() {
            let d = load(s, i);
            wp ^= d;
            wq = mul2_u64(wq) ^ d;
        }
        store(p, i, wp);
        store(q, i, wq);
        i += W;
    }
    for i in words..len {
        let mut bp = srcs[last][i];
        let mut bq = bp;
        for s in srcs[..last].iter().rev() {
            bp ^= s[i];
            bq = gf::mul(bq, 2) ^ s[i];
        }
        p[i] = bp;
        q[i] = bq;
    }
}

fn matmul(coeffs: &[u8], srcs: &[&[u8]], dsts: &mut [&mut [u8]], accumulate: bool) {
    let n = srcs.len();
    assert!(
        coeffs.len() == n * dsts.len(),
        "matmul: coefficient count mismatch"
    );
    let len = dsts.first().map_or(0, |d| d.len());
    assert_lengths(len, srcs, dsts);
    for (r, dst) in dsts.iter_mut().enumerate() {
        if !accumulate {
            dst.fill(0);
        }
        for (j, src) in srcs.iter().enumerate() {
            let c = coeffs[r * n + j];
            match c {
                0 => {}
                1 => dst.iter_mut().zip(src.iter()).for_each(|(d, s)| *d ^= *s),
                _ => {
                    let t = &gf::MUL_LO[c as usize];
                    let h = &gf::MUL_HI[c as usize];
                    dst.iter_mut()
                        .zip(src.iter())
                        .for_each(|(d, s)| *d ^= t[(s & 15) as usize] ^ h[(s >> 4) as usize]);
                }
            }
        }
    }
}
