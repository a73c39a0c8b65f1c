//! The codec against the reference and against an independent md-style
//! RAID-6 computation: encode, reconstruct (exhaustive for small stripes,
//! random for wide ones), read-modify-write, scrub check, and every kind of
//! bad input.

use proptest::prelude::*;
use raid_core::kernels;
use raid_core::{Codec, CodecError, reference};

fn rng(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed ^ 0x6a09_e667_f3bc_c908;
    move || {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn random_chunks(count: usize, len: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut next = rng(seed);
    (0..count)
        .map(|_| (0..len).map(|_| next() as u8).collect())
        .collect()
}

fn refs(v: &[Vec<u8>]) -> Vec<&[u8]> {
    v.iter().map(|c| c.as_slice()).collect()
}

fn muts(v: &mut [Vec<u8>]) -> Vec<&mut [u8]> {
    v.iter_mut().map(|c| c.as_mut_slice()).collect()
}

/// Data followed by its parity, computed by `codec`.
fn full_stripe(codec: &Codec, len: usize, seed: u64) -> Vec<Vec<u8>> {
    let (k, m) = (codec.data_chunks(), codec.parity_chunks());
    let mut chunks = random_chunks(k, len, seed);
    let mut parity = vec![vec![0u8; len]; m];
    codec
        .encode(&refs(&chunks), &mut muts(&mut parity))
        .unwrap();
    chunks.extend(parity);
    chunks
}

/// Overwrite the `missing` chunks with garbage, reconstruct, and check that
/// the original stripe comes back.
fn lose_and_recover(codec: &Codec, stripe: &[Vec<u8>], missing: &[usize]) {
    let mut damaged = stripe.to_vec();
    for &i in missing {
        damaged[i].iter_mut().for_each(|b| *b = !*b ^ 0x5a);
    }
    codec.reconstruct(&mut muts(&mut damaged), missing).unwrap();
    assert!(
        damaged == stripe,
        "k={} m={} missing {missing:?} on kernel {}: reconstruction differs",
        codec.data_chunks(),
        codec.parity_chunks(),
        codec.kernel_name()
    );
}

/// md's RAID-6 syndrome, written out independently: P by XOR, Q by Horner's
/// rule with the bitwise multiply-by-2 of `lib/raid6`.
fn md_pq(data: &[Vec<u8>]) -> (Vec<u8>, Vec<u8>) {
    fn mul2(x: u8) -> u8 {
        (x << 1) ^ if x & 0x80 != 0 { 0x1d } else { 0 }
    }
    let len = data[0].len();
    let mut p = vec![0u8; len];
    let mut q = vec![0u8; len];
    for i in 0..len {
        for d in data.iter().rev() {
            p[i] ^= d[i];
            q[i] = mul2(q[i]) ^ d[i];
        }
    }
    (p, q)
}

#[test]
fn codec_is_send_sync_and_clone() {
    fn assert_traits<T: Send + Sync + Clone>() {}
    assert_traits::<Codec>();
}

#[test]
fn encode_matches_reference_on_every_kernel() {
    for kernel in kernels::available() {
        for (k, len) in [
            (1, 0),
            (1, 1),
            (2, 33),
            (3, 64),
            (5, 1000),
            (10, 4097),
            (251, 129),
        ] {
            for m in 0..=6 {
                let codec = Codec::with_kernel(k, m, kernel).unwrap();
                let data = random_chunks(k, len, (k * 7 + m) as u64);
                let want = reference::encode(&refs(&data), m);
                let mut got = vec![vec![0xeeu8; len]; m];
                codec.encode(&refs(&data), &mut muts(&mut got)).unwrap();
                assert!(
                    got == want,
                    "encode k={k} m={m} len={len} kernel {}",
                    kernel.name
                );
            }
        }
    }
}

#[test]
fn raid6_p_and_q_equal_linux_md_on_known_vectors() {
    let codec = Codec::new(9, 2).unwrap();
    // Every data byte 1: Q = Σ 2^j. For j < 8 that is 0xff; 2^8 = 0x1d.
    let ones = vec![vec![1u8; 3]; 9];
    let mut pq = vec![vec![0u8; 3]; 2];
    codec.encode(&refs(&ones), &mut muts(&mut pq)).unwrap();
    assert_eq!(pq[0], vec![1; 3]);
    assert_eq!(pq[1], vec![0xff ^ 0x1d; 3]);

    // A single set bit on disk j gives Q = 2^j: 0x80 on disk 1 wraps once.
    let mut data = vec![vec![0u8; 1]; 9];
    data[1][0] = 0x80;
    let mut pq = vec![vec![0u8; 1]; 2];
    codec.encode(&refs(&data), &mut muts(&mut pq)).unwrap();
    assert_eq!((pq[0][0], pq[1][0]), (0x80, 0x1d));

    // Random stripes of many widths against md's Horner computation.
    for k in [1, 2, 3, 4, 8, 16, 17, 64, 200, 251] {
        let codec = Codec::new(k, 2).unwrap();
        let data = random_chunks(k, 77, k as u64);
        let (p, q) = md_pq(&data);
        let mut got = vec![vec![0u8; 77]; 2];
        codec.encode(&refs(&data), &mut muts(&mut got)).unwrap();
        assert_eq!(got[0], p, "P for k={k}");
        assert_eq!(got[1], q, "Q for k={k}");
        // And the first two rows of a 6-parity code are the same P and Q.
        let six = Codec::new(k, 6).unwrap();
        let mut all = vec![vec![0u8; 77]; 6];
        six.encode(&refs(&data), &mut muts(&mut all)).unwrap();
        assert_eq!((&all[0], &all[1]), (&p, &q), "k={k} m=6 keeps md P/Q");
    }
}

#[test]
fn reconstruct_every_combination_for_small_stripes() {
    for kernel in kernels::available() {
        for k in 1..=8usize {
            for m in 1..=6usize {
                let codec = Codec::with_kernel(k, m, kernel).unwrap();
                let n = k + m;
                let stripe = full_stripe(&codec, 67, (k * 10 + m) as u64);
                for mask in 1u32..(1 << n) {
                    if mask.count_ones() as usize > m {
                        continue;
                    }
                    let missing: Vec<usize> = (0..n).filter(|i| mask & (1 << i) != 0).collect();
                    lose_and_recover(&codec, &stripe, &missing);
                }
            }
        }
    }
}

#[test]
fn reference_reconstruct_agrees() {
    let codec = Codec::new(5, 3).unwrap();
    let stripe = full_stripe(&codec, 31, 3);
    for missing in [vec![0, 1, 2], vec![4, 5, 7], vec![6], vec![2, 6]] {
        assert_eq!(
            reference::reconstruct(&stripe, 5, 3, &missing),
            stripe,
            "missing {missing:?}"
        );
    }
}

#[test]
fn missing_order_does_not_matter() {
    let codec = Codec::new(6, 4).unwrap();
    let stripe = full_stripe(&codec, 100, 9);
    lose_and_recover(&codec, &stripe, &[8, 1, 5, 3]);
    lose_and_recover(&codec, &stripe, &[9, 0]);
}

#[test]
fn zero_length_chunks_are_fine() {
    let codec = Codec::new(4, 3).unwrap();
    let stripe = full_stripe(&codec, 0, 1);
    lose_and_recover(&codec, &stripe, &[0, 4, 6]);
    assert_eq!(codec.check(&refs(&stripe)).unwrap(), Vec::<usize>::new());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn reconstruct_random_patterns_for_wide_stripes(
        k in 9usize..=251,
        m in 1usize..=6,
        len in 0usize..300,
        seed in any::<u64>(),
    ) {
        let codec = Codec::new(k, m).unwrap();
        let stripe = full_stripe(&codec, len, seed);
        let mut next = rng(seed ^ 1);
        let lose = 1 + (next() as usize) % m;
        let mut missing: Vec<usize> = Vec::new();
        // Bias towards data and parity both being hit.
        while missing.len() < lose {
            let i = if next() & 1 == 0 {
                (next() as usize) % (k + m)
            } else {
                k + (next() as usize) % m
            };
            if !missing.contains(&i) {
                missing.push(i);
            }
        }
        lose_and_recover(&codec, &stripe, &missing);
    }

    #[test]
    fn update_equals_re_encode(
        k in 1usize..=40,
        m in 0usize..=6,
        len in 0usize..600,
        seed in any::<u64>(),
    ) {
        let codec = Codec::new(k, m).unwrap();
        let mut stripe = full_stripe(&codec, len, seed);
        let index = (seed as usize) % k;
        let new = random_chunks(1, len, seed ^ 2).remove(0);
        let old = std::mem::replace(&mut stripe[index], new.clone());
        {
            let mut parity = muts(&mut stripe[k..]);
            codec.update(index, &old, &new, &mut parity).unwrap();
        }
        let want = reference::encode(&refs(&stripe[..k]), m);
        prop_assert!(stripe[k..] == want[..], "update of chunk {} differs from re-encoding", index);
    }
}

#[test]
fn update_on_every_kernel() {
    for kernel in kernels::available() {
        let codec = Codec::with_kernel(12, 6, kernel).unwrap();
        let mut stripe = full_stripe(&codec, 1025, 4);
        let new = random_chunks(1, 1025, 5).remove(0);
        let old = std::mem::replace(&mut stripe[11], new.clone());
        codec
            .update(11, &old, &new, &mut muts(&mut stripe[12..]))
            .unwrap();
        assert_eq!(
            stripe[12..].to_vec(),
            reference::encode(&refs(&stripe[..12]), 6),
            "kernel {}",
            kernel.name
        );
    }
}

#[test]
fn check_finds_exactly_the_corrupt_parity_rows() {
    let codec = Codec::new(7, 4).unwrap();
    let mut stripe = full_stripe(&codec, 50, 6);
    assert_eq!(codec.check(&refs(&stripe)).unwrap(), Vec::<usize>::new());
    stripe[7 + 1][3] ^= 0x40;
    stripe[7 + 3][49] ^= 1;
    assert_eq!(codec.check(&refs(&stripe)).unwrap(), vec![1, 3]);
    // A corrupt data chunk shows in every parity row.
    let mut stripe = full_stripe(&codec, 50, 6);
    stripe[2][0] ^= 0xff;
    assert_eq!(codec.check(&refs(&stripe)).unwrap(), vec![0, 1, 2, 3]);
    let mut scratch = vec![vec![0u8; 50]; 4];
    assert_eq!(
        codec
            .check_with_scratch(&refs(&stripe), &mut muts(&mut scratch))
            .unwrap(),
        vec![0, 1, 2, 3]
    );
    let mut short = vec![vec![0u8; 49]; 4];
    assert!(matches!(
        codec.check_with_scratch(&refs(&stripe), &mut muts(&mut short)),
        Err(CodecError::Length(_))
    ));
}

#[test]
fn bad_shapes_are_errors() {
    assert!(matches!(Codec::new(0, 2), Err(CodecError::Shape(_))));
    assert!(matches!(Codec::new(4, 7), Err(CodecError::Shape(_))));
    assert!(matches!(Codec::new(252, 1), Err(CodecError::Shape(_))));
    assert!(Codec::new(251, 6).is_ok());
    assert!(Codec::new(1, 0).is_ok());
}

#[test]
fn bad_encode_inputs_are_errors_and_write_nothing() {
    let codec = Codec::new(3, 2).unwrap();
    let data = random_chunks(3, 10, 1);
    let mut parity = vec![vec![7u8; 10]; 2];
    // Wrong number of data chunks.
    assert!(matches!(
        codec.encode(&refs(&data[..2]), &mut muts(&mut parity)),
        Err(CodecError::Shape(_))
    ));
    // Wrong number of parity chunks.
    assert!(matches!(
        codec.encode(&refs(&data), &mut muts(&mut parity[..1])),
        Err(CodecError::Shape(_))
    ));
    // Unequal data lengths.
    let mut uneven = data.clone();
    uneven[1].pop();
    assert!(matches!(
        codec.encode(&refs(&uneven), &mut muts(&mut parity)),
        Err(CodecError::Length(_))
    ));
    // Parity of the wrong length.
    let mut long = vec![vec![0u8; 11]; 2];
    assert!(matches!(
        codec.encode(&refs(&data), &mut muts(&mut long)),
        Err(CodecError::Length(_))
    ));
    assert_eq!(parity, vec![vec![7u8; 10]; 2]);
}

#[test]
fn bad_reconstruct_inputs_are_errors_and_write_nothing() {
    let codec = Codec::new(4, 2).unwrap();
    let stripe = full_stripe(&codec, 16, 2);
    let mut c = stripe.clone();
    assert_eq!(
        codec.reconstruct(&mut muts(&mut c), &[0, 1, 2]),
        Err(CodecError::TooManyMissing {
            missing: 3,
            parity: 2
        })
    );
    assert_eq!(
        codec.reconstruct(&mut muts(&mut c), &[6]),
        Err(CodecError::Index { index: 6, total: 6 })
    );
    assert!(matches!(
        codec.reconstruct(&mut muts(&mut c), &[1, 1]),
        Err(CodecError::Shape(_))
    ));
    assert!(matches!(
        codec.reconstruct(&mut muts(&mut c[..5]), &[1]),
        Err(CodecError::Shape(_))
    ));
    c[3].push(0);
    assert!(matches!(
        codec.reconstruct(&mut muts(&mut c), &[1]),
        Err(CodecError::Length(_))
    ));
    c[3].pop();
    assert_eq!(c, stripe);
    // Nothing missing is a no-op; with m = 0 anything missing is too much.
    codec.reconstruct(&mut muts(&mut c), &[]).unwrap();
    assert_eq!(c, stripe);
    let none = Codec::new(3, 0).unwrap();
    let mut d = random_chunks(3, 4, 1);
    assert_eq!(
        none.reconstruct(&mut muts(&mut d), &[0]),
        Err(CodecError::TooManyMissing {
            missing: 1,
            parity: 0
        })
    );
}

#[test]
fn bad_update_inputs_are_errors() {
    let codec = Codec::new(4, 2).unwrap();
    let old = vec![0u8; 8];
    let new = vec![1u8; 8];
    let mut parity = vec![vec![0u8; 8]; 2];
    assert_eq!(
        codec.update(4, &old, &new, &mut muts(&mut parity)),
        Err(CodecError::Index { index: 4, total: 4 })
    );
    assert!(matches!(
        codec.update(0, &old, &new[..7], &mut muts(&mut parity)),
        Err(CodecError::Length(_))
    ));
    assert!(matches!(
        codec.update(0, &old, &new, &mut muts(&mut parity[..1])),
        Err(CodecError::Shape(_))
    ));
    let mut short = vec![vec![0u8; 7]; 2];
    assert!(matches!(
        codec.update(0, &old, &new, &mut muts(&mut short)),
        Err(CodecError::Length(_))
    ));
    assert_eq!(parity, vec![vec![0u8; 8]; 2]);
}
