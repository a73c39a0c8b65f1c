//! Start-up self-test: a kernel is only used after it has matched the naive
//! [`crate::reference`] on a few fixed shapes (SnapRAID's `raid_selftest`
//! idea). The shapes cover lengths that are zero, shorter than any vector,
//! odd, and longer than the widest vector with a tail; sources at unaligned
//! offsets; and coefficient matrices with 0, 1 and arbitrary entries. It is
//! small enough to run in well under a millisecond per kernel.
//!
//! The full randomized comparison lives in `tests/kernels.rs`.

use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::kernels::Kernel;
use crate::reference;

/// Deterministic pseudo-random bytes (xorshift64), so a failure reproduces.
fn fill(buf: &mut [u8], seed: u64) {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for b in buf {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = (x >> 24) as u8;
    }
}

/// (number of sources, chunk length) pairs to test.
const SHAPES: &[(usize, usize)] = &[
    (1, 0),
    (1, 1),
    (2, 15),
    (3, 33),
    (5, 64),
    (7, 129),
    (4, 511),
    (11, 1000),
];

/// Destination rows for `matmul`.
const ROWS: usize = 6;

/// Offset each source from a 64-byte boundary so kernels see unaligned input.
const MISALIGN: usize = 7;

fn check_shape(kernel: &Kernel, n: usize, len: usize, seed: u64) -> Result<(), String> {
    let stride = len + MISALIGN + 64;
    let mut pool = vec![0u8; stride * n];
    fill(&mut pool, seed);
    let srcs: Vec<&[u8]> = (0..n)
        .map(|i| {
            let off = i * stride + (i * MISALIGN + 1) % 64;
            &pool[off..off + len]
        })
        .collect();
    let ctx = |what: &str| {
        format!(
            "kernel {}: {what} differs from reference ({n} sources, {len} bytes)",
            kernel.name
        )
    };

    let mut want = vec![0u8; len];
    let mut got = vec![0u8; len];
    reference::xor(&srcs, &mut want);
    (kernel.xor)(&srcs, &mut got);
    if want != got {
        return Err(ctx("xor"));
    }

    let (mut wp, mut wq) = (vec![0u8; len], vec![0u8; len]);
    let (mut gp, mut gq) = (vec![0u8; len], vec![0u8; len]);
    reference::pq(&srcs, &mut wp, &mut wq);
    (kernel.pq)(&srcs, &mut gp, &mut gq);
    if wp != gp || wq != gq {
        return Err(ctx("pq"));
    }

    // Coefficients: a row of zeros, a row of ones, then arbitrary values.
    let mut coeffs = vec![0u8; ROWS * n];
    fill(&mut coeffs[2 * n..], seed ^ 0x55);
    coeffs[n..2 * n].fill(1);
    coeffs[2 * n] = 0;
    for accumulate in [false, true] {
        let mut want: Vec<Vec<u8>> = (0..ROWS).map(|_| vec![0u8; len]).collect();
        for (r, w) in want.iter_mut().enumerate() {
            fill(w, seed ^ 0xaa ^ r as u64);
        }
        let mut got = want.clone();
        {
            let mut w: Vec<&mut [u8]> = want.iter_mut().map(|v| v.as_mut_slice()).collect();
            let mut g: Vec<&mut [u8]> = got.iter_mut().map(|v| v.as_mut_slice()).collect();
            reference::matmul(&coeffs, &srcs, &mut w, accumulate);
            (kernel.matmul)(&coeffs, &srcs, &mut g, accumulate);
        }
        if want != got {
            return Err(ctx(if accumulate {
                "matmul (accumulate)"
            } else {
                "matmul"
            }));
        }
    }
    Ok(())
}

/// Check `kernel` against the reference on a few fixed shapes.
///
/// A kernel that panics (for instance on an internal assertion) fails the
/// check instead of taking the process down.
pub fn check_kernel(kernel: &Kernel) -> Result<(), String> {
    for (i, &(n, len)) in SHAPES.iter().enumerate() {
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            check_shape(kernel, n, len, i as u64 + 1)
        }));
        match outcome {
            Ok(r) => r?,
            Err(_) => {
                return Err(format!(
                    "kernel {} panicked ({n} sources, {len} bytes)",
                    kernel.name
                ));
            }
        }
    }
    Ok(())
}

/// Re-check the active kernel (for `raidfs selftest` and status output);
/// returns its name.
pub fn run() -> Result<&'static str, String> {
    let k = crate::kernels::active();
    check_kernel(k)?;
    Ok(k.name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels;

    #[test]
    fn every_available_kernel_passes() {
        for k in kernels::available() {
            check_kernel(k).unwrap();
        }
        assert!(run().is_ok());
    }

    fn broken_pq(srcs: &[&[u8]], p: &mut [u8], q: &mut [u8]) {
        (kernels::scalar::KERNEL.pq)(srcs, p, q);
        if let Some(b) = q.last_mut() {
            *b ^= 1;
        }
    }

    fn panicking_xor(_: &[&[u8]], _: &mut [u8]) {
        panic!("deliberately broken");
    }

    #[test]
    fn a_wrong_kernel_is_rejected() {
        static BROKEN: Kernel = Kernel {
            name: "broken",
            xor: kernels::scalar::KERNEL.xor,
            pq: broken_pq,
            matmul: kernels::scalar::KERNEL.matmul,
        };
        let err = check_kernel(&BROKEN).unwrap_err();
        assert!(err.contains("pq"), "{err}");
    }

    #[test]
    fn a_panicking_kernel_is_rejected() {
        static PANICS: Kernel = Kernel {
            name: "panics",
            xor: panicking_xor,
            pq: kernels::scalar::KERNEL.pq,
            matmul: kernels::scalar::KERNEL.matmul,
        };
        assert!(check_kernel(&PANICS).unwrap_err().contains("panicked"));
    }
}
