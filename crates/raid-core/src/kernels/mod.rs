//! SIMD kernels for parity generation and reconstruction, one file per
//! instruction set, registered in one table and chosen once at start-up
//! (the SnapRAID `raid/module.c` scheme).
//!
//! Every kernel implements the same three primitives on equal-length byte
//! slices and must be bit-identical to [`crate::reference`]; `selftest`
//! checks the chosen one at start-up and the test suite checks all of them
//! with proptest on odd lengths and unaligned buffers.
//!
//! Preconditions shared by all primitives (checked by the kernels with
//! `assert!`, since an out-of-bounds SIMD access would be undefined
//! behaviour; the codec validates first and returns errors, so a panic here
//! is a bug):
//! - every source and destination slice has the same length (any length,
//!   including 0 and odd lengths; no alignment is required);
//! - `matmul` coefficients are row-major, `dsts.len() × srcs.len()` bytes;
//! - destinations never alias sources (guaranteed by `&mut`).
//!
//! All kernels are thread-safe: they keep no state.

pub mod scalar;

#[cfg(target_arch = "aarch64")]
pub mod aarch64_neon;
#[cfg(target_arch = "x86_64")]
pub mod x86_avx2;
#[cfg(target_arch = "x86_64")]
pub mod x86_avx512;
#[cfg(target_arch = "x86_64")]
pub mod x86_gfni;
#[cfg(target_arch = "x86_64")]
pub mod x86_ssse3;

use std::sync::OnceLock;

/// `dst = srcs[0] ^ srcs[1] ^ …` (RAID-5 / RAID-4 parity P).
pub type XorFn = fn(srcs: &[&[u8]], dst: &mut [u8]);
/// `p = ⊕ srcs[i]`, `q = ⊕ 2^i · srcs[i]` (Linux md RAID-6 P and Q).
pub type PqFn = fn(srcs: &[&[u8]], p: &mut [u8], q: &mut [u8]);
/// `dsts[r] = ⊕_j coeffs[r * srcs.len() + j] · srcs[j]`, or `^=` that into
/// `dsts[r]` when `accumulate` is true (read-modify-write updates).
pub type MatmulFn = fn(coeffs: &[u8], srcs: &[&[u8]], dsts: &mut [&mut [u8]], accumulate: bool);

/// One implementation of the parity primitives.
#[derive(Debug)]
pub struct Kernel {
    /// Short name shown by `raidfs status` and the benchmarks, e.g. `avx2`.
    pub name: &'static str,
    /// P generation.
    pub xor: XorFn,
    /// P+Q generation.
    pub pq: PqFn,
    /// General GF(2⁸) matrix × vectors: parity rows 3..6 and every
    /// reconstruction.
    pub matmul: MatmulFn,
}

/// Every kernel this CPU can run, slowest (scalar) first.
pub fn available() -> Vec<&'static Kernel> {
    let mut v: Vec<&'static Kernel> = vec![&scalar::KERNEL];
    #[cfg(target_arch = "x86_64")]
    {
        if x86_ssse3::supported() {
            v.push(&x86_ssse3::KERNEL);
        }
        if x86_avx2::supported() {
            v.push(&x86_avx2::KERNEL);
        }
        if x86_avx512::supported() {
            v.push(&x86_avx512::KERNEL);
        }
        if x86_gfni::supported() {
            v.push(&x86_gfni::KERNEL);
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if aarch64_neon::supported() {
            v.push(&aarch64_neon::KERNEL);
        }
    }
    v
}

/// The kernel with this name, if this CPU can run it.
pub fn by_name(name: &str) -> Option<&'static Kernel> {
    available().into_iter().find(|k| k.name == name)
}

static ACTIVE: OnceLock<&'static Kernel> = OnceLock::new();

/// The kernel used for all parity work: the fastest available one that
/// passes the start-up self-test, chosen once. `RAIDFS_KERNEL=<name>`
/// forces a specific kernel (for benchmarks and bug reports); an unknown or
/// unsupported name falls back to automatic choice.
pub fn active() -> &'static Kernel {
    ACTIVE.get_or_init(|| {
        let forced = std::env::var("RAIDFS_KERNEL")
            .ok()
            .and_then(|n| by_name(&n));
        let candidates: Vec<&'static Kernel> = match forced {
            Some(k) => vec![k],
            None => available().into_iter().rev().collect(),
        };
        for k in candidates {
            if crate::selftest::check_kernel(k).is_ok() {
                return k;
            }
        }
        &scalar::KERNEL
    })
}

/// Shared length check for kernels: every slice the same length as `len`.
#[inline]
pub(crate) fn assert_lengths(len: usize, srcs: &[&[u8]], dsts: &[&mut [u8]]) {
    assert!(
        srcs.iter().all(|s| s.len() == len),
        "kernel: source length mismatch"
    );
    assert!(
        dsts.iter().all(|d| d.len() == len),
        "kernel: destination length mismatch"
    );
}
