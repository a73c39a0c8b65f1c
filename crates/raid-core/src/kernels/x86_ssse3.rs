//! SSSE3 kernel: the x86-64 baseline for CPUs without AVX2 (and the home of
//! the width-generic loops in `x86_simd.rs` that every x86 kernel
//! instantiates with its own register type).
//!
//! 16-byte registers. `pq` doubles with Linux md's compare/add/and trick;
//! `matmul` multiplies by a constant with two `pshufb` lookups into the
//! 16-entry nibble tables `gf::MUL_LO`/`gf::MUL_HI`.

use core::arch::x86_64::*;

/// The width-generic loops all x86 kernels instantiate (kept beside the
/// baseline kernel; see its module doc).
#[path = "x86_simd.rs"]
pub(crate) mod simd;

use self::simd::Simd;
use super::{Kernel, assert_lengths, scalar};
use crate::gf;

/// The ssse3 kernel, registered as `ssse3`.
pub static KERNEL: Kernel = Kernel {
    name: "ssse3",
    xor,
    pq,
    matmul,
};

/// Whether this CPU can run the kernel (ssse3).
pub fn supported() -> bool {
    is_x86_feature_detected!("ssse3")
}

/// Registers per source per pass in `xor` and `pq`.
const U: usize = 4;
/// Registers per source per pass in `matmul`, for up to four rows and
/// for five or six rows.
const UM: usize = 2;
const UM_WIDE: usize = 2;
/// Output rows per `matmul` pass.
const R: usize = 4;

/// One 16-byte register.
#[derive(Clone, Copy)]
struct V(__m128i);

// SAFETY: the methods execute SSE2 and SSSE3 instructions only; `V` is
// used only inside the `#[target_feature(enable = "ssse3")]` functions
// below, which run after `supported()` confirmed SSSE3.
unsafe impl Simd for V {
    const BYTES: usize = 16;
    const PAIRS: bool = false;
    const STREAM_PQ: bool = false;
    type Split = (__m128i, __m128i);
    type Coef = (__m128i, __m128i);

    #[inline(always)]
    unsafe fn load(p: *const u8) -> Self {
        // SAFETY: `p` is readable for 16 bytes (caller); `loadu` needs no alignment.
        V(unsafe { _mm_loadu_si128(p.cast()) })
    }
    #[inline(always)]
    unsafe fn store(p: *mut u8, v: Self) {
        // SAFETY: `p` is writable for 16 bytes (caller); `storeu` needs no alignment.
        unsafe { _mm_storeu_si128(p.cast(), v.0) }
    }
    #[inline(always)]
    unsafe fn stream(p: *mut u8, v: Self) {
        // SAFETY: `p` is writable for 16 bytes and 16-byte aligned (caller); SSE2 is part of x86-64.
        unsafe { _mm_stream_si128(p.cast(), v.0) }
    }
    #[inline(always)]
    unsafe fn zero() -> Self {
        // SAFETY: SSE2 is part of x86-64.
        V(unsafe { _mm_setzero_si128() })
    }
    #[inline(always)]
    unsafe fn xor(a: Self, b: Self) -> Self {
        // SAFETY: SSE2 is part of x86-64.
        V(unsafe { _mm_xor_si128(a.0, b.0) })
    }
    #[inline(always)]
    unsafe fn mul2_xor(q: Self, d: Self) -> Self {
        // SAFETY: SSE2 is part of x86-64.
        unsafe {
            // Bytes with the top bit set compare below zero: 0xff masks, so
            // the reduction 0x1d is added exactly where the doubling overflowed.
            let over = _mm_and_si128(
                _mm_cmpgt_epi8(_mm_setzero_si128(), q.0),
                _mm_set1_epi8(0x1d),
            );
            V(_mm_xor_si128(
                _mm_xor_si128(_mm_add_epi8(q.0, q.0), over),
                d.0,
            ))
        }
    }
    #[inline(always)]
    unsafe fn split(x: Self) -> Self::Split {
        // SAFETY: SSE2 is part of x86-64.
        unsafe {
            let m = _mm_set1_epi8(0x0f);
            (
                _mm_and_si128(x.0, m),
                _mm_and_si128(_mm_srli_epi16::<4>(x.0), m),
            )
        }
    }
    #[inline(always)]
    unsafe fn coef(c: u8) -> Self::Coef {
        let (lo, hi) = (&gf::MUL_LO[c as usize], &gf::MUL_HI[c as usize]);
        // SAFETY: each table is 16 bytes; `loadu` needs no alignment.
        unsafe {
            (
                _mm_loadu_si128(lo.as_ptr().cast()),
                _mm_loadu_si128(hi.as_ptr().cast()),
            )
        }
    }
    #[inline(always)]
    unsafe fn mul_xor(acc: Self, x: Self::Split, c: Self::Coef) -> Self {
        // SAFETY: SSSE3 is present (trait contract).
        unsafe {
            let (l, h) = (_mm_shuffle_epi8(c.0, x.0), _mm_shuffle_epi8(c.1, x.1));
            V(_mm_xor_si128(acc.0, _mm_xor_si128(l, h)))
        }
    }
}

simd::entry_points!("ssse3");

#[cfg(test)]
mod tests {
    #[test]
    fn matches_scalar_on_odd_lengths_and_unaligned_buffers() {
        if !super::supported() {
            eprintln!("skipped: this CPU lacks the ssse3 kernel's features");
            return;
        }
        super::simd::check_against_scalar(&super::KERNEL);
    }
}
