//! GFNI kernel: multiplication by any constant is one `vgf2p8affineqb` with
//! the 8×8 bit matrix `gf::GFNI_MATRIX[c]` (GFNI's own `gf2p8mul` uses the
//! AES polynomial 0x11b, not md's 0x11d). That makes `q = q·2 ^ d` two
//! instructions and `matmul` one affine instruction per source and row.
//!
//! Two register widths behind one kernel: 64-byte registers where the CPU
//! also has AVX-512BW (two products folded into the accumulator per
//! `vpternlogq`), else 32-byte VEX-encoded GFNI with AVX2 (CPUs with GFNI
//! but no AVX-512, such as recent Intel client cores).

use core::arch::x86_64::*;

use super::x86_ssse3::simd::{self, Simd};
use super::{Kernel, assert_lengths, scalar};
use crate::gf;

/// The gfni kernel, registered as `gfni`.
pub static KERNEL: Kernel = Kernel {
    name: "gfni",
    xor,
    pq,
    matmul,
};

/// Whether this CPU can run the kernel (gfni, with avx512f and avx512bw or
/// with avx2).
pub fn supported() -> bool {
    wide() || narrow()
}

/// GFNI on 64-byte registers: avx512f, avx512bw, gfni.
fn wide() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("gfni")
}

/// GFNI on 32-byte registers: avx2, gfni.
fn narrow() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("gfni")
}

/// Registers per source per pass in `xor` and `pq`.
const U: usize = 4;
/// Registers per source per pass in `matmul`, for up to four rows and
/// for five or six rows.
const UM: usize = 4;
const UM_WIDE: usize = 2;
/// Output rows per `matmul` pass.
const R: usize = 6;

/// One 64-byte register.
#[derive(Clone, Copy)]
struct V(__m512i);

// SAFETY: the methods execute AVX-512F, AVX-512BW and GFNI instructions
// only; `V` is used only inside the
// `#[target_feature(enable = "avx512f,avx512bw,gfni")]` functions below,
// which run after `supported()` confirmed all three.
unsafe impl Simd for V {
    const BYTES: usize = 64;
    const PAIRS: bool = true;
    const STREAM_PQ: bool = true;
    type Split = __m512i;
    type Coef = __m512i;

    #[inline(always)]
    unsafe fn load(p: *const u8) -> Self {
        // SAFETY: `p` is readable for 64 bytes (caller); AVX-512F present.
        V(unsafe { _mm512_loadu_si512(p.cast()) })
    }
    #[inline(always)]
    unsafe fn store(p: *mut u8, v: Self) {
        // SAFETY: `p` is writable for 64 bytes (caller); AVX-512F present.
        unsafe { _mm512_storeu_si512(p.cast(), v.0) }
    }
    #[inline(always)]
    unsafe fn stream(p: *mut u8, v: Self) {
        // SAFETY: `p` is writable for 64 bytes and 64-byte aligned (caller); AVX-512F present.
        unsafe { _mm512_stream_si512(p.cast(), v.0) }
    }
    #[inline(always)]
    unsafe fn zero() -> Self {
        // SAFETY: AVX-512F present (trait contract).
        V(unsafe { _mm512_setzero_si512() })
    }
    #[inline(always)]
    unsafe fn xor(a: Self, b: Self) -> Self {
        // SAFETY: AVX-512F present (trait contract).
        V(unsafe { _mm512_xor_si512(a.0, b.0) })
    }
    #[inline(always)]
    unsafe fn xor3(a: Self, b: Self, c: Self) -> Self {
        // SAFETY: AVX-512F present (trait contract). 0x96 is the truth
        // table of a ^ b ^ c.
        V(unsafe { _mm512_ternarylogic_epi64::<0x96>(a.0, b.0, c.0) })
    }
    #[inline(always)]
    unsafe fn mul2_xor(q: Self, d: Self) -> Self {
        // SAFETY: AVX-512F and GFNI present (trait contract).
        unsafe {
            let two = _mm512_set1_epi64(gf::GFNI_MATRIX[2] as i64);
            V(_mm512_xor_si512(
                _mm512_gf2p8affine_epi64_epi8::<0>(q.0, two),
                d.0,
            ))
        }
    }
    #[inline(always)]
    unsafe fn split(x: Self) -> Self::Split {
        x.0
    }
    #[inline(always)]
    unsafe fn coef(c: u8) -> Self::Coef {
        // SAFETY: AVX-512F present (trait contract).
        unsafe { _mm512_set1_epi64(gf::GFNI_MATRIX[c as usize] as i64) }
    }
    #[inline(always)]
    unsafe fn mul_xor(acc: Self, x: Self::Split, c: Self::Coef) -> Self {
        // SAFETY: AVX-512F and GFNI present (trait contract).
        V(unsafe { _mm512_xor_si512(acc.0, _mm512_gf2p8affine_epi64_epi8::<0>(x, c)) })
    }
    #[inline(always)]
    unsafe fn mul_xor2(
        acc: Self,
        x1: Self::Split,
        c1: Self::Coef,
        x2: Self::Split,
        c2: Self::Coef,
    ) -> Self {
        // SAFETY: AVX-512F and GFNI present (trait contract).
        unsafe {
            let (a, b) = (
                _mm512_gf2p8affine_epi64_epi8::<0>(x1, c1),
                _mm512_gf2p8affine_epi64_epi8::<0>(x2, c2),
            );
            V(_mm512_ternarylogic_epi64::<0x96>(acc.0, a, b))
        }
    }
}

fn xor(srcs: &[&[u8]], dst: &mut [u8]) {
    assert!(!srcs.is_empty(), "xor needs at least one source");
    assert_lengths(dst.len(), srcs, &[]);
    if !wide() {
        return xor_narrow(srcs, dst);
    }
    // SAFETY: the CPU has the features (checked just above) and every
    // source is as long as `dst` (asserted).
    unsafe { xor_simd(srcs, dst) }
}

fn pq(srcs: &[&[u8]], p: &mut [u8], q: &mut [u8]) {
    assert!(!srcs.is_empty(), "pq needs at least one source");
    assert!(q.len() == p.len(), "pq: q length mismatch");
    assert_lengths(p.len(), srcs, &[]);
    if !wide() {
        return pq_narrow(srcs, p, q);
    }
    // SAFETY: the CPU has the features (checked just above); every source
    // and `q` are as long as `p` (asserted).
    unsafe { pq_simd(srcs, p, q) }
}

fn matmul(coeffs: &[u8], srcs: &[&[u8]], dsts: &mut [&mut [u8]], accumulate: bool) {
    assert!(
        coeffs.len() == srcs.len() * dsts.len(),
        "matmul: coefficient count mismatch"
    );
    let len = dsts.first().map_or(0, |d| d.len());
    assert_lengths(len, srcs, dsts);
    if !wide() {
        return matmul_narrow(coeffs, srcs, dsts, accumulate);
    }
    // SAFETY: the CPU has the features (checked just above); the
    // coefficient count and all lengths are asserted equal.
    unsafe { matmul_simd(coeffs, srcs, dsts, accumulate) }
}

/// # Safety
/// The CPU has avx512f,avx512bw,gfni; as [`simd::xor`].
#[target_feature(enable = "avx512f,avx512bw,gfni")]
unsafe fn xor_simd(srcs: &[&[u8]], dst: &mut [u8]) {
    // SAFETY: forwarded contract; `V` only needs the enabled features.
    unsafe { simd::xor::<V, U>(srcs, dst) }
}

/// # Safety
/// The CPU has avx512f,avx512bw,gfni; as [`simd::pq`].
#[target_feature(enable = "avx512f,avx512bw,gfni")]
unsafe fn pq_simd(srcs: &[&[u8]], p: &mut [u8], q: &mut [u8]) {
    // SAFETY: forwarded contract; `V` only needs the enabled features.
    unsafe { simd::pq::<V, U>(srcs, p, q) }
}

/// # Safety
/// The CPU has avx512f,avx512bw,gfni; as [`simd::matmul`].
#[target_feature(enable = "avx512f,avx512bw,gfni")]
unsafe fn matmul_simd(coeffs: &[u8], srcs: &[&[u8]], dsts: &mut [&mut [u8]], accumulate: bool) {
    // SAFETY: forwarded contract; `V` only needs the enabled features.
    unsafe { simd::matmul::<V, UM, UM_WIDE, R>(coeffs, srcs, dsts, accumulate) }
}

// ------------------------------------------- 32-byte registers (AVX2) ----

/// One 32-byte register, for CPUs with GFNI and AVX2 but no AVX-512.
#[derive(Clone, Copy)]
struct N(__m256i);

// SAFETY: the methods execute AVX, AVX2 and (VEX-encoded) GFNI
// instructions only; `N` is used only inside the
// `#[target_feature(enable = "avx2,gfni")]` functions below, which run
// after `narrow()` confirmed both.
unsafe impl Simd for N {
    const BYTES: usize = 32;
    const PAIRS: bool = false;
    const STREAM_PQ: bool = false;
    type Split = __m256i;
    type Coef = __m256i;

    #[inline(always)]
    unsafe fn load(p: *const u8) -> Self {
        // SAFETY: `p` is readable for 32 bytes (caller); AVX present.
        N(unsafe { _mm256_loadu_si256(p.cast()) })
    }
    #[inline(always)]
    unsafe fn store(p: *mut u8, v: Self) {
        // SAFETY: `p` is writable for 32 bytes (caller); AVX present.
        unsafe { _mm256_storeu_si256(p.cast(), v.0) }
    }
    #[inline(always)]
    unsafe fn stream(p: *mut u8, v: Self) {
        // SAFETY: `p` is writable for 32 bytes and 32-byte aligned (caller); AVX present.
        unsafe { _mm256_stream_si256(p.cast(), v.0) }
    }
    #[inline(always)]
    unsafe fn zero() -> Self {
        // SAFETY: AVX present (trait contract).
        N(unsafe { _mm256_setzero_si256() })
    }
    #[inline(always)]
    unsafe fn xor(a: Self, b: Self) -> Self {
        // SAFETY: AVX2 present (trait contract).
        N(unsafe { _mm256_xor_si256(a.0, b.0) })
    }
    #[inline(always)]
    unsafe fn mul2_xor(q: Self, d: Self) -> Self {
        // SAFETY: AVX2 and GFNI present (trait contract).
        unsafe {
            let two = _mm256_set1_epi64x(gf::GFNI_MATRIX[2] as i64);
            N(_mm256_xor_si256(
                _mm256_gf2p8affine_epi64_epi8::<0>(q.0, two),
                d.0,
            ))
        }
    }
    #[inline(always)]
    unsafe fn split(x: Self) -> Self::Split {
        x.0
    }
    #[inline(always)]
    unsafe fn coef(c: u8) -> Self::Coef {
        // SAFETY: AVX present (trait contract).
        unsafe { _mm256_set1_epi64x(gf::GFNI_MATRIX[c as usize] as i64) }
    }
    #[inline(always)]
    unsafe fn mul_xor(acc: Self, x: Self::Split, c: Self::Coef) -> Self {
        // SAFETY: AVX2 and GFNI present (trait contract).
        N(unsafe { _mm256_xor_si256(acc.0, _mm256_gf2p8affine_epi64_epi8::<0>(x, c)) })
    }
}

/// The three primitives on 32-byte registers (same checks as above).
fn xor_narrow(srcs: &[&[u8]], dst: &mut [u8]) {
    assert!(!srcs.is_empty(), "xor needs at least one source");
    assert_lengths(dst.len(), srcs, &[]);
    if !narrow() {
        return (scalar::KERNEL.xor)(srcs, dst);
    }
    // SAFETY: the CPU has the features (checked just above) and every
    // source is as long as `dst` (asserted).
    unsafe { xor_narrow_simd(srcs, dst) }
}

fn pq_narrow(srcs: &[&[u8]], p: &mut [u8], q: &mut [u8]) {
    assert!(!srcs.is_empty(), "pq needs at least one source");
    assert!(q.len() == p.len(), "pq: q length mismatch");
    assert_lengths(p.len(), srcs, &[]);
    if !narrow() {
        return (scalar::KERNEL.pq)(srcs, p, q);
    }
    // SAFETY: the CPU has the features (checked just above); every source
    // and `q` are as long as `p` (asserted).
    unsafe { pq_narrow_simd(srcs, p, q) }
}

fn matmul_narrow(coeffs: &[u8], srcs: &[&[u8]], dsts: &mut [&mut [u8]], accumulate: bool) {
    assert!(
        coeffs.len() == srcs.len() * dsts.len(),
        "matmul: coefficient count mismatch"
    );
    let len = dsts.first().map_or(0, |d| d.len());
    assert_lengths(len, srcs, dsts);
    if !narrow() {
        return (scalar::KERNEL.matmul)(coeffs, srcs, dsts, accumulate);
    }
    // SAFETY: the CPU has the features (checked just above); the
    // coefficient count and all lengths are asserted equal.
    unsafe { matmul_narrow_simd(coeffs, srcs, dsts, accumulate) }
}

/// # Safety
/// The CPU has avx2,gfni; as [`simd::xor`].
#[target_feature(enable = "avx2,gfni")]
unsafe fn xor_narrow_simd(srcs: &[&[u8]], dst: &mut [u8]) {
    // SAFETY: forwarded contract; `N` only needs the enabled features.
    unsafe { simd::xor::<N, U>(srcs, dst) }
}

/// # Safety
/// The CPU has avx2,gfni; as [`simd::pq`].
#[target_feature(enable = "avx2,gfni")]
unsafe fn pq_narrow_simd(srcs: &[&[u8]], p: &mut [u8], q: &mut [u8]) {
    // SAFETY: forwarded contract; `N` only needs the enabled features.
    unsafe { simd::pq::<N, U>(srcs, p, q) }
}

/// # Safety
/// The CPU has avx2,gfni; as [`simd::matmul`]. Sixteen registers: two
/// per source for up to four rows, one for more.
#[target_feature(enable = "avx2,gfni")]
unsafe fn matmul_narrow_simd(
    coeffs: &[u8],
    srcs: &[&[u8]],
    dsts: &mut [&mut [u8]],
    accumulate: bool,
) {
    // SAFETY: forwarded contract; `N` only needs the enabled features.
    unsafe { simd::matmul::<N, 2, 1, 6>(coeffs, srcs, dsts, accumulate) }
}

#[cfg(test)]
mod tests {
    #[test]
    fn matches_scalar_on_odd_lengths_and_unaligned_buffers() {
        if !super::supported() {
            eprintln!("skipped: this CPU lacks the gfni kernel's features");
            return;
        }
        super::simd::check_against_scalar(&super::KERNEL);
    }

    #[test]
    fn streamed_rows_match_scalar() {
        if !super::supported() {
            eprintln!("skipped: this CPU lacks the gfni kernel's features");
            return;
        }
        super::simd::check_streaming_rows(&super::KERNEL);
    }

    /// The 32-byte path, which CPUs with AVX-512 never take by themselves.
    #[test]
    fn narrow_path_matches_scalar() {
        if !super::narrow() {
            eprintln!("skipped: this CPU lacks GFNI with AVX2");
            return;
        }
        let k = super::Kernel {
            name: "gfni-256",
            xor: super::xor_narrow,
            pq: super::pq_narrow,
            matmul: super::matmul_narrow,
        };
        super::simd::check_against_scalar(&k);
    }
}
