//! AVX2 kernel: the `x86_ssse3` algorithms on 32-byte registers (Linux md
//! `lib/raid6/avx2.c` for P+Q, split-nibble `vpshufb` with each 16-byte
//! table broadcast to both lanes for `matmul`).

use core::arch::x86_64::*;

use super::x86_ssse3::simd::{self, Simd};
use super::{Kernel, assert_lengths, scalar};
use crate::gf;

/// The avx2 kernel, registered as `avx2`.
pub static KERNEL: Kernel = Kernel {
    name: "avx2",
    xor,
    pq,
    matmul,
};

/// Whether this CPU can run the kernel (avx2).
pub fn supported() -> bool {
    is_x86_feature_detected!("avx2")
}

/// Registers per source per pass in `xor` and `pq`.
const U: usize = 4;
/// Registers per source per pass in `matmul`, for up to four rows and
/// for five or six rows.
const UM: usize = 2;
const UM_WIDE: usize = 2;
/// Output rows per `matmul` pass.
const R: usize = 4;

/// One 32-byte register.
#[derive(Clone, Copy)]
struct V(__m256i);

// SAFETY: the methods execute AVX and AVX2 instructions only; `V` is used
// only inside the `#[target_feature(enable = "avx2")]` functions below,
// which run after `supported()` confirmed AVX2.
unsafe impl Simd for V {
    const BYTES: usize = 32;
    const PAIRS: bool = false;
    const STREAM_PQ: bool = false;
    type Split = (__m256i, __m256i);
    type Coef = (__m256i, __m256i);

    #[inline(always)]
    unsafe fn load(p: *const u8) -> Self {
        // SAFETY: `p` is readable for 32 bytes (caller); AVX present.
        V(unsafe { _mm256_loadu_si256(p.cast()) })
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
        V(unsafe { _mm256_setzero_si256() })
    }
    #[inline(always)]
    unsafe fn xor(a: Self, b: Self) -> Self {
        // SAFETY: AVX2 present (trait contract).
        V(unsafe { _mm256_xor_si256(a.0, b.0) })
    }
    #[inline(always)]
    unsafe fn mul2_xor(q: Self, d: Self) -> Self {
        // SAFETY: AVX2 present (trait contract).
        unsafe {
            // Bytes with the top bit set compare below zero: 0xff masks, so
            // the reduction 0x1d is added exactly where the doubling overflowed.
            let neg = _mm256_cmpgt_epi8(_mm256_setzero_si256(), q.0);
            let over = _mm256_and_si256(neg, _mm256_set1_epi8(0x1d));
            V(_mm256_xor_si256(
                _mm256_xor_si256(_mm256_add_epi8(q.0, q.0), over),
                d.0,
            ))
        }
    }
    #[inline(always)]
    unsafe fn split(x: Self) -> Self::Split {
        // SAFETY: AVX2 present (trait contract).
        unsafe {
            let m = _mm256_set1_epi8(0x0f);
            (
                _mm256_and_si256(x.0, m),
                _mm256_and_si256(_mm256_srli_epi16::<4>(x.0), m),
            )
        }
    }
    #[inline(always)]
    unsafe fn coef(c: u8) -> Self::Coef {
        let (lo, hi) = (&gf::MUL_LO[c as usize], &gf::MUL_HI[c as usize]);
        // SAFETY: each table is 16 bytes, broadcast to both lanes; AVX2 present.
        unsafe {
            (
                _mm256_broadcastsi128_si256(_mm_loadu_si128(lo.as_ptr().cast())),
                _mm256_broadcastsi128_si256(_mm_loadu_si128(hi.as_ptr().cast())),
            )
        }
    }
    #[inline(always)]
    unsafe fn mul_xor(acc: Self, x: Self::Split, c: Self::Coef) -> Self {
        // SAFETY: AVX2 present (trait contract).
        unsafe {
            let (l, h) = (_mm256_shuffle_epi8(c.0, x.0), _mm256_shuffle_epi8(c.1, x.1));
            V(_mm256_xor_si256(acc.0, _mm256_xor_si256(l, h)))
        }
    }
}

simd::entry_points!("avx2");

#[cfg(test)]
mod tests {
    #[test]
    fn matches_scalar_on_odd_lengths_and_unaligned_buffers() {
        if !super::supported() {
            eprintln!("skipped: this CPU lacks the avx2 kernel's features");
            return;
        }
        super::simd::check_against_scalar(&super::KERNEL);
    }
}
