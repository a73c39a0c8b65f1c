//! NEON kernel for aarch64, limited to what the Raspberry Pi 4's Cortex-A72
//! has: plain Advanced SIMD. No SHA3 (`EOR3`), dot-product, SVE or `PMULL`
//! (the Pi 4 has no crypto extensions, even where an emulator claims them).
//!
//! - `xor`: `EOR` across the sources, 64 bytes per pass.
//! - `pq`: Linux md's NEON RAID-6 syndrome (`lib/raid6/neon.uc`): Horner's
//!   rule from the highest source down, `q = q·2 ^ d`, where multiplying
//!   sixteen bytes by 2 is a shift left plus `0x1d` under the mask of each
//!   byte's old top bit (arithmetic shift right by 7 turns that bit into a
//!   whole-byte mask).
//! - `matmul`: split-nibble table lookups, `c·x = LO[c][x & 15] ^
//!   HI[c][x >> 4]`, one `TBL` (`vqtbl1q_u8`) per nibble, up to four output
//!   rows per pass so that every source vector is loaded and split once
//!   for all of them (the ISA-L `gf_4vect_dot_prod` scheme).
//!
//! Every pass consumes 64 bytes (one A72 cache line) of each source, so a
//! line brought into the Pi's 2-way associative L1 is used whole before
//! other sources can evict it; the callers additionally offset stripe
//! buffers from one another so that several sources do not map to the same
//! cache set (docs/PERF-NOTES.md).
//!
//! Lengths that are not a multiple of 16 finish on the scalar kernel, so the
//! result is bit-identical to [`super::scalar`] for every length and
//! alignment (NEON loads and stores need no alignment).

use core::arch::aarch64::{
    uint8x16_t, vandq_u8, vdupq_n_u8, veorq_u8, vld1q_u8, vqtbl1q_u8, vreinterpretq_s8_u8,
    vreinterpretq_u8_s8, vshlq_n_u8, vshrq_n_s8, vshrq_n_u8, vst1q_u8,
};

use super::{Kernel, assert_lengths, scalar};
use crate::gf;

/// The NEON kernel, registered as `neon`.
pub static KERNEL: Kernel = Kernel {
    name: "neon",
    xor,
    pq,
    matmul,
};

/// Whether this CPU has Advanced SIMD (every aarch64 Linux CPU in practice,
/// but checked rather than assumed).
pub fn supported() -> bool {
    std::arch::is_aarch64_feature_detected!("neon")
}

/// Bytes in one NEON register.
const VEC: usize = 16;
/// Registers per source in the main loop: 64 bytes, one cache line.
const UNROLL: usize = 4;
/// Bytes per main-loop pass.
const BLOCK: usize = VEC * UNROLL;
/// Output rows per `matmul` pass: 4 rows × 4 accumulators plus the split
/// source and two tables is 29 of the 32 vector registers; more would spill.
const MAX_ROWS: usize = 4;

/// Largest multiple of [`VEC`] not above `len`: the part done with NEON.
#[inline]
fn vector_part(len: usize) -> usize {
    len / VEC * VEC
}

fn xor(srcs: &[&[u8]], dst: &mut [u8]) {
    let len = dst.len();
    assert!(!srcs.is_empty(), "xor needs at least one source");
    assert_lengths(len, srcs, &[]);
    let done = vector_part(len);
    // SAFETY: NEON is part of the aarch64 baseline and this kernel is only
    // selected when `supported()`; every source and `dst` hold `len >= done`
    // bytes (asserted above), which is all `xor_neon` touches.
    unsafe { xor_neon(srcs, dst, done) };
    if done < len {
        let tail: Vec<&[u8]> = srcs.iter().map(|s| &s[done..]).collect();
        (scalar::KERNEL.xor)(&tail, &mut dst[done..]);
    }
}

/// XOR of the first `end` bytes of `srcs` into `dst`.
///
/// # Safety
/// The CPU supports NEON; `srcs` is non-empty; `end` is a multiple of
/// [`VEC`] and no larger than `dst` or any source.
#[target_feature(enable = "neon")]
unsafe fn xor_neon(srcs: &[&[u8]], dst: &mut [u8], end: usize) {
    let out = dst.as_mut_ptr();
    let mut off = 0;
    while off + BLOCK <= end {
        // SAFETY: `off + BLOCK <= end`, within every slice (caller contract).
        unsafe { xor_block::<UNROLL>(srcs, out, off) };
        off += BLOCK;
    }
    while off + VEC <= end {
        // SAFETY: `off + VEC <= end`, within every slice (caller contract).
        unsafe { xor_block::<1>(srcs, out, off) };
        off += VEC;
    }
}

/// `V` registers' worth of XOR at byte offset `off`.
///
/// # Safety
/// NEON; `srcs` non-empty; `off + V * VEC` bytes readable in every source
/// and writable at `dst`.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn xor_block<const V: usize>(srcs: &[&[u8]], dst: *mut u8, off: usize) {
    let mut acc = [vdupq_n_u8(0); V];
    let first = srcs[0].as_ptr();
    for (v, a) in acc.iter_mut().enumerate() {
        // SAFETY: `off + v * VEC + 16 <= off + V * VEC`, readable (contract).
        *a = unsafe { vld1q_u8(first.add(off + v * VEC)) };
    }
    for s in &srcs[1..] {
        let p = s.as_ptr();
        for (v, a) in acc.iter_mut().enumerate() {
            // SAFETY: as above, every source has the same readable range.
            *a = veorq_u8(*a, unsafe { vld1q_u8(p.add(off + v * VEC)) });
        }
    }
    for (v, a) in acc.iter().enumerate() {
        // SAFETY: `dst` is writable over the same range (contract).
        unsafe { vst1q_u8(dst.add(off + v * VEC), *a) };
    }
}

fn pq(srcs: &[&[u8]], p: &mut [u8], q: &mut [u8]) {
    let len = p.len();
    assert!(!srcs.is_empty(), "pq needs at least one source");
    assert!(q.len() == len, "pq: q length mismatch");
    assert_lengths(len, srcs, &[]);
    let done = vector_part(len);
    // SAFETY: NEON is available (see `xor`); `p`, `q` and every source hold
    // `len >= done` bytes (asserted above).
    unsafe { pq_neon(srcs, p, q, done) };
    if done < len {
        let tail: Vec<&[u8]> = srcs.iter().map(|s| &s[done..]).collect();
        (scalar::KERNEL.pq)(&tail, &mut p[done..], &mut q[done..]);
    }
}

/// P and Q of the first `end` bytes.
///
/// # Safety
/// NEON; `srcs` non-empty; `end` a multiple of [`VEC`] and no larger than
/// `p`, `q` or any source.
#[target_feature(enable = "neon")]
unsafe fn pq_neon(srcs: &[&[u8]], p: &mut [u8], q: &mut [u8], end: usize) {
    let (pp, qp) = (p.as_mut_ptr(), q.as_mut_ptr());
    let mut off = 0;
    while off + BLOCK <= end {
        // SAFETY: `off + BLOCK <= end`, within every slice (caller contract).
        unsafe { pq_block::<UNROLL>(srcs, pp, qp, off) };
        off += BLOCK;
    }
    while off + VEC <= end {
        // SAFETY: `off + VEC <= end`, within every slice (caller contract).
        unsafe { pq_block::<1>(srcs, pp, qp, off) };
        off += VEC;
    }
}

/// Sixteen bytes times 2 in GF(2⁸): md's `SHLBYTE(v) ^ (MASK(v) & 0x1d)`.
#[target_feature(enable = "neon")]
#[inline]
fn mul2(v: uint8x16_t, poly: uint8x16_t) -> uint8x16_t {
    let top = vreinterpretq_u8_s8(vshrq_n_s8::<7>(vreinterpretq_s8_u8(v)));
    veorq_u8(vshlq_n_u8::<1>(v), vandq_u8(top, poly))
}

/// `V` registers' worth of P and Q at byte offset `off`.
///
/// # Safety
/// NEON; `srcs` non-empty; `off + V * VEC` bytes readable in every source
/// and writable at `p` and `q`.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn pq_block<const V: usize>(srcs: &[&[u8]], p: *mut u8, q: *mut u8, off: usize) {
    let poly = vdupq_n_u8(0x1d);
    let last = srcs.len() - 1;
    let mut wp = [vdupq_n_u8(0); V];
    let top = srcs[last].as_ptr();
    for (v, w) in wp.iter_mut().enumerate() {
        // SAFETY: within the readable range of every source (contract).
        *w = unsafe { vld1q_u8(top.add(off + v * VEC)) };
    }
    let mut wq = wp;
    for s in srcs[..last].iter().rev() {
        let sp = s.as_ptr();
        for v in 0..V {
            // SAFETY: within the readable range of every source (contract).
            let d = unsafe { vld1q_u8(sp.add(off + v * VEC)) };
            wp[v] = veorq_u8(wp[v], d);
            wq[v] = veorq_u8(mul2(wq[v], poly), d);
        }
    }
    for v in 0..V {
        // SAFETY: `p` and `q` are writable over the same range (contract).
        unsafe {
            vst1q_u8(p.add(off + v * VEC), wp[v]);
            vst1q_u8(q.add(off + v * VEC), wq[v]);
        }
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
    let done = vector_part(len);
    for (g, rows) in dsts.chunks_mut(MAX_ROWS).enumerate() {
        let first = g * MAX_ROWS;
        let c = &coeffs[first * n..(first + rows.len()) * n];
        // SAFETY: NEON is available (see `xor`); every row and source holds
        // `len >= done` bytes (asserted above); `c` is these rows' part of
        // the row-major matrix, `rows.len() * n` coefficients.
        unsafe { matmul_neon(c, srcs, rows, accumulate, done) };
    }
    if done < len {
        let tail_srcs: Vec<&[u8]> = srcs.iter().map(|s| &s[done..]).collect();
        let mut tail_dsts: Vec<&mut [u8]> = dsts.iter_mut().map(|d| &mut d[done..]).collect();
        (scalar::KERNEL.matmul)(coeffs, &tail_srcs, &mut tail_dsts, accumulate);
    }
}

/// Up to [`MAX_ROWS`] rows of the product over the first `end` bytes.
///
/// # Safety
/// NEON; `1 <= rows.len() <= MAX_ROWS`; `coeffs.len() == rows.len() *
/// srcs.len()` (row-major); `end` a multiple of [`VEC`] and no larger than
/// any row or source.
#[target_feature(enable = "neon")]
unsafe fn matmul_neon(
    coeffs: &[u8],
    srcs: &[&[u8]],
    rows: &mut [&mut [u8]],
    accumulate: bool,
    end: usize,
) {
    // SAFETY: the caller's contract is exactly `matmul_rows`'s, and each
    // arm fixes `R == rows.len()`.
    unsafe {
        match rows.len() {
            1 => matmul_rows::<1>(coeffs, srcs, rows, accumulate, end),
            2 => matmul_rows::<2>(coeffs, srcs, rows, accumulate, end),
            3 => matmul_rows::<3>(coeffs, srcs, rows, accumulate, end),
            4 => matmul_rows::<4>(coeffs, srcs, rows, accumulate, end),
            r => unreachable!("matmul: {r} rows in one pass"),
        }
    }
}

/// `R` rows of the product over the first `end` bytes.
///
/// # Safety
/// As [`matmul_neon`], with `rows.len() == R`.
#[target_feature(enable = "neon")]
unsafe fn matmul_rows<const R: usize>(
    coeffs: &[u8],
    srcs: &[&[u8]],
    rows: &mut [&mut [u8]],
    accumulate: bool,
    end: usize,
) {
    let dst: [*mut u8; R] = core::array::from_fn(|r| rows[r].as_mut_ptr());
    let mut off = 0;
    while off + BLOCK <= end {
        // SAFETY: `off + BLOCK <= end`, within every slice (caller contract).
        unsafe { matmul_block::<R, UNROLL>(coeffs, srcs, &dst, accumulate, off) };
        off += BLOCK;
    }
    while off + VEC <= end {
        // SAFETY: `off + VEC <= end`, within every slice (caller contract).
        unsafe { matmul_block::<R, 1>(coeffs, srcs, &dst, accumulate, off) };
        off += VEC;
    }
}

/// `R` rows × `V` registers of the product at byte offset `off`: each
/// source vector is loaded and split into nibbles once, then looked up in
/// every row's tables.
///
/// # Safety
/// NEON; `coeffs.len() == R * srcs.len()`; `off + V * VEC` bytes readable
/// in every source and writable (and readable, if `accumulate`) at every
/// `dst` pointer, none of which overlaps a source or another.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn matmul_block<const R: usize, const V: usize>(
    coeffs: &[u8],
    srcs: &[&[u8]],
    dst: &[*mut u8; R],
    accumulate: bool,
    off: usize,
) {
    let n = srcs.len();
    let low = vdupq_n_u8(0x0f);
    let mut acc = [[vdupq_n_u8(0); V]; R];
    if accumulate {
        for (row, d) in acc.iter_mut().zip(dst) {
            for (v, a) in row.iter_mut().enumerate() {
                // SAFETY: readable destination range (contract).
                *a = unsafe { vld1q_u8(d.add(off + v * VEC)) };
            }
        }
    }
    for (j, s) in srcs.iter().enumerate() {
        let sp = s.as_ptr();
        let mut lo = [vdupq_n_u8(0); V];
        let mut hi = [vdupq_n_u8(0); V];
        for v in 0..V {
            // SAFETY: readable source range (contract).
            let x = unsafe { vld1q_u8(sp.add(off + v * VEC)) };
            lo[v] = vandq_u8(x, low);
            hi[v] = vshrq_n_u8::<4>(x);
        }
        for (r, row) in acc.iter_mut().enumerate() {
            let c = usize::from(coeffs[r * n + j]);
            // SAFETY: each table is a `[u8; 16]`, exactly one register.
            let (tl, th) = unsafe {
                (
                    vld1q_u8(gf::MUL_LO[c].as_ptr()),
                    vld1q_u8(gf::MUL_HI[c].as_ptr()),
                )
            };
            for (v, a) in row.iter_mut().enumerate() {
                let prod = veorq_u8(vqtbl1q_u8(tl, lo[v]), vqtbl1q_u8(th, hi[v]));
                *a = veorq_u8(*a, prod);
            }
        }
    }
    for (row, d) in acc.iter().zip(dst) {
        for (v, a) in row.iter().enumerate() {
            // SAFETY: writable destination range (contract).
            unsafe { vst1q_u8(d.add(off + v * VEC), *a) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lengths around every boundary the kernel has: empty, below one
    /// register, one register, one block, and odd sizes past them.
    const LENGTHS: &[usize] = &[
        0, 1, 7, 15, 16, 17, 31, 32, 48, 63, 64, 65, 79, 127, 128, 129, 200, 1000, 4099,
    ];
    /// Misalignments applied to every buffer (sources and destinations alike).
    const SHIFTS: &[usize] = &[0, 1, 3, 15];

    /// Deterministic xorshift bytes: reproducible failures without a
    /// dependency.
    fn bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    /// `count` buffers of `len + shift` bytes; the data under test is each
    /// buffer's `[shift..]`, so it starts at an odd address when `shift` is.
    fn buffers(seed: u64, count: usize, len: usize, shift: usize) -> Vec<Vec<u8>> {
        (0..count)
            .map(|i| bytes(seed * 131 + i as u64, len + shift))
            .collect()
    }

    fn views(bufs: &[Vec<u8>], shift: usize) -> Vec<&[u8]> {
        bufs.iter().map(|b| &b[shift..]).collect()
    }

    fn views_mut(bufs: &mut [Vec<u8>], shift: usize) -> Vec<&mut [u8]> {
        bufs.iter_mut().map(|b| &mut b[shift..]).collect()
    }

    /// On any aarch64 CPU (including qemu's Cortex-A72 model) NEON is
    /// detected, registered, passes the start-up self-test and is chosen
    /// over scalar. Run without `RAIDFS_KERNEL`, which would force a choice;
    /// `scripts/test-arm.sh` prints this test's output as its proof that the
    /// emulated run exercised NEON.
    #[test]
    fn neon_kernel_is_registered_and_active() {
        assert!(supported(), "aarch64 CPU without NEON");
        let k = crate::kernels::by_name("neon").expect("neon kernel not available");
        assert!(core::ptr::eq(k, &KERNEL));
        let active = crate::kernels::active();
        println!("active kernel: {} (available: {:?})", active.name, {
            crate::kernels::available()
                .iter()
                .map(|k| k.name)
                .collect::<Vec<_>>()
        });
        assert_eq!(active.name, "neon");
    }

    #[test]
    fn xor_matches_scalar() {
        for &len in LENGTHS {
            for &shift in SHIFTS {
                for count in [1, 2, 3, 5, 8] {
                    let src = buffers(len as u64 + 7, count, len, shift);
                    let srcs = views(&src, shift);
                    let mut want = vec![0xa5; len];
                    (scalar::KERNEL.xor)(&srcs, &mut want);
                    let mut out = bytes(99, len + shift);
                    (KERNEL.xor)(&srcs, &mut out[shift..]);
                    assert_eq!(
                        &out[shift..],
                        &want[..],
                        "len {len} shift {shift} sources {count}"
                    );
                }
            }
        }
    }

    #[test]
    fn pq_matches_scalar() {
        for &len in LENGTHS {
            for &shift in SHIFTS {
                for count in [1, 2, 3, 4, 7, 12] {
                    let src = buffers(len as u64 + 11, count, len, shift);
                    let srcs = views(&src, shift);
                    let (mut wp, mut wq) = (vec![0; len], vec![0; len]);
                    (scalar::KERNEL.pq)(&srcs, &mut wp, &mut wq);
                    let (mut p, mut q) = (bytes(1, len + shift), bytes(2, len + shift));
                    (KERNEL.pq)(&srcs, &mut p[shift..], &mut q[shift..]);
                    assert_eq!(
                        &p[shift..],
                        &wp[..],
                        "P: len {len} shift {shift} sources {count}"
                    );
                    assert_eq!(
                        &q[shift..],
                        &wq[..],
                        "Q: len {len} shift {shift} sources {count}"
                    );
                }
            }
        }
    }

    /// Every coefficient value 0..=255 appears (in rotating positions, so
    /// each row/source slot meets 0, 1 and the rest), for every number of
    /// rows up to two passes, with and without `accumulate`.
    #[test]
    fn matmul_matches_scalar() {
        let mut next_coeff = 0u8;
        for &len in LENGTHS {
            let shift = SHIFTS[len % SHIFTS.len()];
            for (n, m) in [(1, 1), (2, 3), (3, 4), (5, 2), (4, 5), (6, 6), (10, 4)] {
                for accumulate in [false, true] {
                    let coeffs: Vec<u8> = (0..n * m)
                        .map(|_| {
                            next_coeff = next_coeff.wrapping_add(37);
                            next_coeff
                        })
                        .collect();
                    let src = buffers(len as u64 + 13, n, len, shift);
                    let srcs = views(&src, shift);
                    let start = buffers(len as u64 + 17, m, len, shift);
                    let mut want = start.clone();
                    (scalar::KERNEL.matmul)(
                        &coeffs,
                        &srcs,
                        &mut views_mut(&mut want, shift),
                        accumulate,
                    );
                    let mut got = start.clone();
                    (KERNEL.matmul)(&coeffs, &srcs, &mut views_mut(&mut got, shift), accumulate);
                    assert_eq!(
                        got, want,
                        "len {len} shift {shift} {m}x{n} accumulate {accumulate} coeffs {coeffs:?}"
                    );
                }
            }
        }
    }

    /// Every coefficient alone, on one register-crossing length: a wrong
    /// table entry for any `c` shows up here by name.
    #[test]
    fn matmul_every_single_coefficient() {
        let len = 16 * 5 + 3;
        let src = bytes(5, len + 1);
        let all: Vec<u8> = (0..=255).collect();
        for c in 0..=255u8 {
            let mut want = vec![0; len];
            (scalar::KERNEL.matmul)(&[c], &[&src[1..]], &mut [&mut want[..]], false);
            let mut got = vec![0x5a; len];
            (KERNEL.matmul)(&[c], &[&src[1..]], &mut [&mut got[..]], false);
            assert_eq!(got, want, "coefficient {c}");
            // And the same coefficient against all byte values.
            let mut want_all = vec![0; 256];
            (scalar::KERNEL.matmul)(&[c], &[&all[..]], &mut [&mut want_all[..]], false);
            let mut got_all = vec![0; 256];
            (KERNEL.matmul)(&[c], &[&all[..]], &mut [&mut got_all[..]], false);
            let exact: Vec<u8> = all.iter().map(|&x| gf::mul_bitwise(c, x)).collect();
            assert_eq!(got_all, exact, "coefficient {c} over all bytes");
            assert_eq!(want_all, exact);
        }
    }

    #[test]
    fn matmul_with_no_sources_clears_or_keeps() {
        let mut d = vec![7u8; 40];
        (KERNEL.matmul)(&[], &[], &mut [&mut d[..]], true);
        assert_eq!(d, vec![7u8; 40]);
        (KERNEL.matmul)(&[], &[], &mut [&mut d[..]], false);
        assert_eq!(d, vec![0u8; 40]);
    }

    #[test]
    #[should_panic(expected = "length mismatch")]
    fn mismatched_lengths_panic() {
        let a = [0u8; 32];
        let b = [0u8; 31];
        let mut d = [0u8; 32];
        (KERNEL.xor)(&[&a, &b], &mut d);
    }
}
