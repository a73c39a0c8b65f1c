//! AVX-512BW kernel: 64-byte registers; multiply-by-2 through a byte mask
//! register (`vpmovb2m`) and three-input XOR (`vpternlogq`), so `q = q·2 ^ d`
//! costs four instructions; split-nibble `vpshufb` for `matmul`, each
//! product folded into its accumulator with one `vpternlogq`.

use core::arch::x86_64::*;

use super::x86_ssse3::simd::{self, Simd};
use super::{Kernel, assert_lengths, scalar};
use crate::gf;

/// The avx512bw kernel, registered as `avx512bw`.
pub static KERNEL: Kernel = Kernel {
    name: "avx512bw",
    xor,
    pq,
    matmul,
};

/// Whether this CPU can run the kernel (avx512f, avx512bw).
pub fn supported() -> bool {
    is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw")
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

// SAFETY: the methods execute AVX-512F and AVX-512BW instructions only;
// `V` is used only inside the `#[target_feature(enable = "avx512f,avx512bw")]`
// functions below, which run after `supported()` confirmed both.
unsafe impl Simd for V {
    const BYTES: usize = 64;
    const PAIRS: bool = false;
    const STREAM_PQ: bool = true;
    type Split = (__m512i, __m512i);
    type Coef = (__m512i, __m512i);

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
        // SAFETY: AVX-512F/BW present (trait contract).
        unsafe {
            // The top bit of each byte as a mask register selects where the
            // doubling overflowed and 0x1d must be added; one ternary XOR
            // folds the doubled value, the reduction and `d`.
            let top = _mm512_movepi8_mask(q.0);
            let over = _mm512_maskz_mov_epi8(top, _mm512_set1_epi8(0x1d));
            V(_mm512_ternarylogic_epi64::<0x96>(
                _mm512_add_epi8(q.0, q.0),
                over,
                d.0,
            ))
        }
    }
    #[inline(always)]
    unsafe fn split(x: Self) -> Self::Split {
        // SAFETY: AVX-512F/BW present (trait contract).
        unsafe {
            let m = _mm512_set1_epi8(0x0f);
            (
                _mm512_and_si512(x.0, m),
                _mm512_and_si512(_mm512_srli_epi16::<4>(x.0), m),
            )
        }
    }
    #[inline(always)]
    unsafe fn coef(c: u8) -> Self::Coef {
        let (lo, hi) = (&gf::MUL_LO[c as usize], &gf::MUL_HI[c as usize]);
        // SAFETY: each table is 16 bytes, broadcast to all four lanes;
        // AVX-512F present.
        unsafe {
            (
                _mm512_broadcast_i32x4(_mm_loadu_si128(lo.as_ptr().cast())),
                _mm512_broadcast_i32x4(_mm_loadu_si128(hi.as_ptr().cast())),
            )
        }
    }
    #[inline(always)]
    unsafe fn mul_xor(acc: Self, x: Self::Split, c: Self::Coef) -> Self {
        // SAFETY: AVX-512F/BW present (trait contract).
        unsafe {
            let (l, h) = (_mm512_shuffle_epi8(c.0, x.0), _mm512_shuffle_epi8(c.1, x.1));
            V(_mm512_ternarylogic_epi64::<0x96>(acc.0, l, h))
        }
    }
}

simd::entry_points!("avx512f,avx512bw");

#[cfg(test)]
mod tests {
    #[test]
    fn matches_scalar_on_odd_lengths_and_unaligned_buffers() {
        if !super::supported() {
            eprintln!("skipped: this CPU lacks the avx512bw kernel's features");
            return;
        }
        super::simd::check_against_scalar(&super::KERNEL);
    }

    #[test]
    fn streamed_rows_match_scalar() {
        if !super::supported() {
            eprintln!("skipped: this CPU lacks the avx512bw kernel's features");
            return;
        }
        super::simd::check_streaming_rows(&super::KERNEL);
    }
}
