//! Every kernel this CPU can run (`kernels::available()`) against the naive
//! reference, on random shapes: lengths 0..5000 (odd ones included), every
//! buffer at a random offset 0..64 from an allocation (so unaligned), 1..=20
//! sources and, in a second property, up to 251, coefficient matrices rich in
//! 0 and 1 entries, with and without accumulation. Bytes around each
//! destination are guarded: a kernel must not write outside its slice.
//!
//! Buffers are filled from a seed rather than generated element by element,
//! so a failing case shrinks to a small (length, sources, seed) triple.

use proptest::prelude::*;
use raid_core::kernels::{self, Kernel};
use raid_core::reference;

const GUARD: u8 = 0xa5;

fn rng(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed ^ 0x2545_f491_4f6c_dd1d;
    move || {
        // splitmix64
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// `count` buffers of `len` bytes, each at its own offset inside an
/// allocation padded with guard bytes on both sides.
struct Bufs {
    backing: Vec<Vec<u8>>,
    offs: Vec<usize>,
    len: usize,
}

impl Bufs {
    fn new(count: usize, len: usize, next: &mut impl FnMut() -> u64, random: bool) -> Self {
        let mut backing = Vec::with_capacity(count);
        let mut offs = Vec::with_capacity(count);
        for _ in 0..count {
            let off = (next() % 64) as usize;
            let mut v = vec![GUARD; off + len + 64];
            if random {
                for b in &mut v[off..off + len] {
                    *b = next() as u8;
                }
            }
            backing.push(v);
            offs.push(off);
        }
        Bufs { backing, offs, len }
    }

    fn slices(&self) -> Vec<&[u8]> {
        self.backing
            .iter()
            .zip(&self.offs)
            .map(|(v, &o)| &v[o..o + self.len])
            .collect()
    }

    fn slices_mut(&mut self) -> Vec<&mut [u8]> {
        let len = self.len;
        self.backing
            .iter_mut()
            .zip(&self.offs)
            .map(|(v, &o)| &mut v[o..o + len])
            .collect()
    }

    fn contents(&self) -> Vec<Vec<u8>> {
        self.slices().iter().map(|s| s.to_vec()).collect()
    }

    /// Every byte outside the slices still holds the guard pattern.
    fn guards_intact(&self) -> bool {
        self.backing.iter().zip(&self.offs).all(|(v, &o)| {
            v[..o].iter().all(|&b| b == GUARD) && v[o + self.len..].iter().all(|&b| b == GUARD)
        })
    }
}

/// Coefficients: a quarter zeros, a quarter ones, the rest arbitrary.
fn coefficients(count: usize, next: &mut impl FnMut() -> u64) -> Vec<u8> {
    (0..count)
        .map(|_| {
            let r = next();
            match r % 4 {
                0 => 0,
                1 => 1,
                _ => (r >> 8) as u8,
            }
        })
        .collect()
}

fn check_xor(
    k: &Kernel,
    srcs: &[&[u8]],
    len: usize,
    next: &mut impl FnMut() -> u64,
) -> Result<(), TestCaseError> {
    let mut want = vec![0u8; len];
    reference::xor(srcs, &mut want);
    let mut dst = Bufs::new(1, len, next, true);
    (k.xor)(srcs, dst.slices_mut()[0]);
    prop_assert_eq!(&dst.contents()[0], &want, "xor on kernel {}", k.name);
    prop_assert!(
        dst.guards_intact(),
        "xor on kernel {} wrote outside its destination",
        k.name
    );
    Ok(())
}

fn check_pq(
    k: &Kernel,
    srcs: &[&[u8]],
    len: usize,
    next: &mut impl FnMut() -> u64,
) -> Result<(), TestCaseError> {
    let (mut wp, mut wq) = (vec![0u8; len], vec![0u8; len]);
    reference::pq(srcs, &mut wp, &mut wq);
    let mut dst = Bufs::new(2, len, next, true);
    {
        let mut d = dst.slices_mut();
        let (p, q) = d.split_at_mut(1);
        (k.pq)(srcs, p[0], q[0]);
    }
    let got = dst.contents();
    prop_assert_eq!(&got[0], &wp, "pq: P on kernel {}", k.name);
    prop_assert_eq!(&got[1], &wq, "pq: Q on kernel {}", k.name);
    prop_assert!(
        dst.guards_intact(),
        "pq on kernel {} wrote outside its destinations",
        k.name
    );
    Ok(())
}

fn check_matmul(
    k: &Kernel,
    srcs: &[&[u8]],
    len: usize,
    rows: usize,
    next: &mut impl FnMut() -> u64,
) -> Result<(), TestCaseError> {
    let coeffs = coefficients(rows * srcs.len(), next);
    for accumulate in [false, true] {
        let mut dst = Bufs::new(rows, len, next, true);
        let mut want = dst.contents();
        {
            let mut w: Vec<&mut [u8]> = want.iter_mut().map(|v| v.as_mut_slice()).collect();
            reference::matmul(&coeffs, srcs, &mut w, accumulate);
        }
        (k.matmul)(&coeffs, srcs, &mut dst.slices_mut(), accumulate);
        prop_assert_eq!(
            dst.contents(),
            want,
            "matmul (accumulate={}) on kernel {}",
            accumulate,
            k.name
        );
        prop_assert!(
            dst.guards_intact(),
            "matmul on kernel {} wrote outside its destinations",
            k.name
        );
    }
    Ok(())
}

fn check_all(n: usize, len: usize, rows: usize, seed: u64) -> Result<(), TestCaseError> {
    let mut next = rng(seed);
    let src = Bufs::new(n, len, &mut next, true);
    let srcs = src.slices();
    for k in kernels::available() {
        check_xor(k, &srcs, len, &mut next)?;
        check_pq(k, &srcs, len, &mut next)?;
        check_matmul(k, &srcs, len, rows, &mut next)?;
    }
    Ok(())
}

fn length() -> impl Strategy<Value = usize> {
    // Short lengths hit every tail path; long ones the main loops.
    prop_oneof![0usize..80, 0usize..5000]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn kernels_match_reference(n in 1usize..=20, len in length(), rows in 1usize..=6, seed in any::<u64>()) {
        check_all(n, len, rows, seed)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn kernels_match_reference_with_many_sources(n in 21usize..=251, len in 0usize..400, rows in 1usize..=6, seed in any::<u64>()) {
        check_all(n, len, rows, seed)?;
    }
}

#[test]
fn kernels_match_reference_at_the_largest_shape() {
    check_all(251, 4099, 6, 7).unwrap();
}

#[test]
fn scalar_is_always_available_and_first() {
    let all = kernels::available();
    assert_eq!(all[0].name, "scalar");
    for k in &all {
        assert_eq!(kernels::by_name(k.name).map(|x| x.name), Some(k.name));
    }
}
