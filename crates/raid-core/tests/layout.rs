//! Stripe geometry checked exhaustively on small shapes, against Linux md's
//! placement formulas written out independently here, against hand-computed
//! capacity and tolerance tables, and by property tests on random input.

use std::collections::{BTreeSet, HashSet};

use proptest::prelude::*;
use raid_core::layout::{
    ChunkRole, Geometry, LayoutError, Level, LevelCode, Raid5Layout, Scheme, StripeMap,
};

const CHUNKS: [u32; 2] = [4096, 65536];
const KIB: u64 = 1024;
const GIB: u64 = 1 << 30;

/// Every level, with the parameters worth trying on `n` members (valid or not).
fn levels(n: usize) -> Vec<Level> {
    let mut v = vec![
        Level::Raid0,
        Level::Raid1,
        Level::Raid4,
        Level::Raid6,
        Level::Raid01,
    ];
    v.extend(Raid5Layout::ALL.map(Level::Raid5));
    for c in 1..=4 {
        v.push(Level::Raid10 { copies: c });
    }
    for g in 1..=4 {
        v.push(Level::Raid50 { groups: g });
        v.push(Level::Raid60 { groups: g });
    }
    for m in 0..=7 {
        v.push(Level::Erasure {
            k: n.saturating_sub(m),
            m,
        });
    }
    v
}

/// Every valid geometry on 1..=12 members with both chunk sizes.
fn small_geometries() -> Vec<Geometry> {
    let mut out = Vec::new();
    for n in 1..=12 {
        for level in levels(n) {
            for cs in CHUNKS {
                if let Ok(g) = Geometry::new(level, n, cs) {
                    out.push(g);
                }
            }
        }
    }
    out
}

/// Stripes to check: two full rotation periods plus far-away stripes.
fn stripes(g: &Geometry) -> Vec<u64> {
    let n = g.members() as u64;
    let mut v: Vec<u64> = (0..2 * n + 3).collect();
    v.extend([1 << 20, (1 << 40) + 7, u64::MAX / 2, u64::MAX - 1, u64::MAX]);
    v
}

#[test]
fn the_shapes_under_test_cover_every_level() {
    let gs = small_geometries();
    let names: BTreeSet<String> = gs.iter().map(|g| g.level().to_string()).collect();
    for want in [
        "raid0",
        "raid1",
        "raid4",
        "raid5",
        "raid5-left-asymmetric",
        "raid5-right-symmetric",
        "raid5-right-asymmetric",
        "raid6",
        "raid10",
        "raid10-n3",
        "raid01",
        "raid50",
        "raid50-g3",
        "raid60",
        "4+2",
        "6+6",
        "5+0",
    ] {
        assert!(names.contains(want), "{want} never tested");
    }
}

#[test]
fn every_stripe_uses_each_member_exactly_once() {
    for g in small_geometries() {
        for s in stripes(&g) {
            let map = g.stripe(s);
            let mut seen: Vec<usize> = map.groups.iter().flat_map(|gr| gr.members()).collect();
            let data: HashSet<usize> = map.data_members().collect();
            assert_eq!(data.len(), g.data_chunks_per_stripe(), "{g:?} stripe {s}");
            seen.sort_unstable();
            assert_eq!(
                seen,
                (0..g.members()).collect::<Vec<_>>(),
                "{g:?} stripe {s}: data ∪ redundancy is not a permutation"
            );
        }
    }
}

#[test]
fn groups_match_their_scheme_and_data_order() {
    for g in small_geometries() {
        for s in stripes(&g) {
            let map = g.stripe(s);
            assert_eq!(map.groups.len(), g.group_count());
            let mut next = 0;
            for gr in &map.groups {
                assert_eq!(gr.first_data_index, next, "{g:?}");
                next += gr.data.len();
                assert_eq!(gr.scheme, g.scheme());
                match gr.scheme {
                    Scheme::Stripe => assert!(gr.redundancy.is_empty()),
                    Scheme::Mirror => {
                        assert_eq!(gr.data.len(), 1);
                        assert!(!gr.redundancy.is_empty());
                    }
                    Scheme::Parity { k, m } => {
                        assert_eq!((gr.data.len(), gr.redundancy.len()), (k, m), "{g:?}");
                    }
                }
            }
            assert_eq!(next, g.data_chunks_per_stripe());
            assert_eq!(
                g.redundancy_chunks_per_stripe(),
                map.groups
                    .iter()
                    .map(|gr| gr.redundancy.len())
                    .sum::<usize>()
            );
        }
    }
}

#[test]
fn role_data_member_and_redundancy_member_agree_with_stripe() {
    for g in small_geometries() {
        for s in stripes(&g) {
            let map = g.stripe(s);
            let data: Vec<usize> = map.data_members().collect();
            for (i, &member) in data.iter().enumerate() {
                assert_eq!(g.data_member(s, i), Some(member));
                assert_eq!(g.role(s, member), Some(ChunkRole::Data { index: i }));
            }
            for (gi, gr) in map.groups.iter().enumerate() {
                for (row, &member) in gr.redundancy.iter().enumerate() {
                    assert_eq!(g.redundancy_member(s, gi, row), Some(member));
                    assert_eq!(
                        g.role(s, member),
                        Some(ChunkRole::Redundancy { group: gi, row })
                    );
                }
                assert_eq!(g.redundancy_member(s, gi, gr.redundancy.len()), None);
            }
            assert_eq!(g.data_member(s, data.len()), None);
            assert_eq!(g.role(s, g.members()), None);
            assert_eq!(g.redundancy_member(s, g.group_count(), 0), None);
        }
    }
}

#[test]
fn rotation_period_is_the_smallest_period_of_the_maps() {
    for g in small_geometries() {
        let p = g.rotation_period();
        assert!(p >= 1 && p <= g.members() as u64);
        let maps: Vec<StripeMap> = (0..3 * p).map(|s| g.stripe(s)).collect();
        for s in 0..2 * p {
            assert_eq!(maps[s as usize], maps[(s + p) as usize], "{g:?}");
            assert_eq!(g.stripe(u64::MAX - p - s), g.stripe(u64::MAX - s));
        }
        for q in 1..p {
            assert!(
                (0..p).any(|s| maps[s as usize] != maps[(s + q) as usize]),
                "{g:?}: {q} is a smaller period than {p}"
            );
        }
    }
}

fn data_of(map: &StripeMap) -> Vec<usize> {
    map.data_members().collect()
}

#[test]
fn locate_agrees_with_stripe_and_is_a_bijection() {
    for g in small_geometries() {
        let cs = u64::from(g.chunk_size());
        let d = g.data_chunks_per_stripe() as u64;
        assert_eq!(g.stripe_data_bytes(), d * cs);
        let nstripes = 2 * g.members() as u64 + 1;
        let mut placed = HashSet::new();
        let mut prev_stripe = 0;
        for chunk in 0..d * nstripes {
            let map = g.stripe(chunk / d);
            for within in [0, 1, cs / 2, cs - 1] {
                let offset = chunk * cs + within;
                let loc = g.locate(offset);
                assert_eq!(loc.stripe, chunk / d, "{g:?} offset {offset}");
                assert_eq!(loc.data_index as u64, chunk % d);
                assert_eq!(u64::from(loc.offset_in_chunk), within);
                assert_eq!(loc.member, data_of(&map)[loc.data_index]);
                assert_eq!(loc.member_offset, loc.stripe * cs + within);
                assert!(loc.stripe >= prev_stripe, "stripe numbers never go back");
                prev_stripe = loc.stripe;
                assert!(
                    placed.insert((loc.member, loc.member_offset)),
                    "{g:?}: two offsets map to member {} byte {}",
                    loc.member,
                    loc.member_offset
                );
            }
            // Within a chunk, bytes stay on one member and advance together.
            let a = g.locate(chunk * cs);
            let b = g.locate(chunk * cs + cs - 1);
            assert_eq!(a.member, b.member);
            assert_eq!(b.member_offset - a.member_offset, cs - 1);
        }
        // Onto: every data chunk position of those stripes is reached.
        assert_eq!(placed.len() as u64, d * nstripes * 4);
    }
}

#[test]
fn locate_near_the_end_of_the_offset_space() {
    for g in small_geometries() {
        for offset in [u64::MAX, u64::MAX - 1, u64::MAX / 3] {
            let loc = g.locate(offset);
            let cs = u64::from(g.chunk_size());
            assert_eq!(
                loc.member_offset,
                loc.stripe * cs + u64::from(loc.offset_in_chunk)
            );
            assert_eq!(Some(loc.member), g.data_member(loc.stripe, loc.data_index));
            assert!(loc.member_offset <= offset);
        }
    }
}

// ---------------------------------------------------------------------------
// Linux md's formulas, transcribed from drivers/md/raid5.c
// (raid5_compute_sector) and drivers/md/raid10.c (raid10_find_phys) in md's
// own terms: sector_div(x, n) divides x in place and returns the remainder.

const ALGORITHM_LEFT_ASYMMETRIC: u8 = 0;
const ALGORITHM_RIGHT_ASYMMETRIC: u8 = 1;
const ALGORITHM_LEFT_SYMMETRIC: u8 = 2;
const ALGORITHM_RIGHT_SYMMETRIC: u8 = 3;

fn sector_div(x: &mut u64, n: u64) -> u64 {
    let r = *x % n;
    *x /= n;
    r
}

/// md's `(stripe, dd_idx, pd_idx, qd_idx)` for array chunk `chunk_number`
/// (chunk units, so `sectors_per_chunk` is 1).
fn md_compute(level: u8, algorithm: u8, raid_disks: u64, chunk_number: u64) -> [u64; 4] {
    let max_degraded = if level == 6 { 2 } else { 1 };
    let data_disks = raid_disks - max_degraded;
    let mut stripe = chunk_number;
    let mut dd_idx = sector_div(&mut stripe, data_disks);
    let mut stripe2 = stripe;
    let (pd_idx, qd_idx);
    match (level, algorithm) {
        (4, _) => {
            pd_idx = data_disks;
            qd_idx = u64::MAX;
        }
        (5, ALGORITHM_LEFT_ASYMMETRIC) => {
            pd_idx = data_disks - sector_div(&mut stripe2, raid_disks);
            if dd_idx >= pd_idx {
                dd_idx += 1;
            }
            qd_idx = u64::MAX;
        }
        (5, ALGORITHM_RIGHT_ASYMMETRIC) => {
            pd_idx = sector_div(&mut stripe2, raid_disks);
            if dd_idx >= pd_idx {
                dd_idx += 1;
            }
            qd_idx = u64::MAX;
        }
        (5, ALGORITHM_LEFT_SYMMETRIC) => {
            pd_idx = data_disks - sector_div(&mut stripe2, raid_disks);
            dd_idx = (pd_idx + 1 + dd_idx) % raid_disks;
            qd_idx = u64::MAX;
        }
        (5, ALGORITHM_RIGHT_SYMMETRIC) => {
            pd_idx = sector_div(&mut stripe2, raid_disks);
            dd_idx = (pd_idx + 1 + dd_idx) % raid_disks;
            qd_idx = u64::MAX;
        }
        (6, ALGORITHM_LEFT_SYMMETRIC) => {
            pd_idx = raid_disks - 1 - sector_div(&mut stripe2, raid_disks);
            qd_idx = (pd_idx + 1) % raid_disks;
            dd_idx = (pd_idx + 2 + dd_idx) % raid_disks;
        }
        _ => unreachable!("not transcribed"),
    }
    [stripe, dd_idx, pd_idx, qd_idx]
}

fn check_against_md(g: &Geometry, level: u8, algorithm: u8) {
    let n = g.members() as u64;
    let cs = u64::from(g.chunk_size());
    let chunks = (0..n * (n - 1) * 3).chain([1 << 33, u64::MAX / cs / 3 + 1, u64::MAX / cs]);
    for chunk in chunks {
        let [stripe, dd, pd, qd] = md_compute(level, algorithm, n, chunk);
        let loc = g.locate(chunk * cs);
        assert_eq!(loc.stripe, stripe, "{g:?} chunk {chunk}");
        assert_eq!(loc.member as u64, dd, "{g:?} chunk {chunk}: data member");
        assert_eq!(loc.member_offset, stripe * cs);
        let red = &g.stripe(stripe).groups[0].redundancy;
        assert_eq!(red[0] as u64, pd, "{g:?} stripe {stripe}: P");
        if level == 6 {
            assert_eq!(red[1] as u64, qd, "{g:?} stripe {stripe}: Q");
        }
    }
}

#[test]
fn raid5_layouts_match_md() {
    for n in 3..=12 {
        for (layout, alg) in [
            (Raid5Layout::LeftAsymmetric, ALGORITHM_LEFT_ASYMMETRIC),
            (Raid5Layout::RightAsymmetric, ALGORITHM_RIGHT_ASYMMETRIC),
            (Raid5Layout::LeftSymmetric, ALGORITHM_LEFT_SYMMETRIC),
            (Raid5Layout::RightSymmetric, ALGORITHM_RIGHT_SYMMETRIC),
        ] {
            for cs in CHUNKS {
                let g = Geometry::new(Level::Raid5(layout), n, cs).unwrap();
                check_against_md(&g, 5, alg);
            }
        }
    }
}

#[test]
fn raid4_and_raid6_match_md() {
    for n in 3..=12 {
        check_against_md(&Geometry::new(Level::Raid4, n, 4096).unwrap(), 4, 0);
    }
    for n in 4..=12 {
        for cs in CHUNKS {
            let g = Geometry::new(Level::Raid6, n, cs).unwrap();
            check_against_md(&g, 6, ALGORITHM_LEFT_SYMMETRIC);
        }
    }
}

#[test]
fn erasure_with_one_or_two_parities_places_like_raid5_and_raid6() {
    for n in 3..=12 {
        let e = Geometry::new(Level::Erasure { k: n - 1, m: 1 }, n, 4096).unwrap();
        let r5 = Geometry::new(Level::Raid5(Raid5Layout::LeftSymmetric), n, 4096).unwrap();
        let e2 = Geometry::new(Level::Erasure { k: n - 2, m: 2 }, n, 4096).unwrap();
        let r6 = (n >= 4).then(|| Geometry::new(Level::Raid6, n, 4096).unwrap());
        for s in 0..3 * n as u64 {
            assert_eq!(e.stripe(s).groups[0].data, r5.stripe(s).groups[0].data);
            assert_eq!(
                e.stripe(s).groups[0].redundancy,
                r5.stripe(s).groups[0].redundancy
            );
            if let Some(r6) = &r6 {
                assert_eq!(e2.stripe(s).groups[0].data, r6.stripe(s).groups[0].data);
                assert_eq!(
                    e2.stripe(s).groups[0].redundancy,
                    r6.stripe(s).groups[0].redundancy
                );
            }
        }
    }
}

#[test]
fn erasure_parity_rows_rotate_one_member_left_per_stripe() {
    for m in 1..=6 {
        for k in 1..=6 {
            let n = k + m;
            let g = Geometry::new(Level::Erasure { k, m }, n, 4096).unwrap();
            for s in 0..3 * n as u64 {
                let pd = n - 1 - (s as usize % n);
                let red = &g.stripe(s).groups[0].redundancy;
                let want: Vec<usize> = (0..m).map(|r| (pd + r) % n).collect();
                assert_eq!(red, &want, "{k}+{m} stripe {s}");
                // Over one period every member holds parity exactly m times.
            }
            let mut per_member = vec![0; n];
            for s in 0..n as u64 {
                for &p in &g.stripe(s).groups[0].redundancy {
                    per_member[p] += 1;
                }
            }
            assert!(
                per_member.iter().all(|&c| c == m),
                "{k}+{m}: {per_member:?}"
            );
        }
    }
}

/// md's raid10 "near" layout (raid10_find_phys with far_copies = 1): the
/// array's chunk c goes to device (c × near) mod n and the next near − 1
/// devices, at device stripe (c × near) / n.
#[test]
fn raid10_matches_md_near_layout() {
    for copies in 2..=4 {
        for n in (copies..=12).filter(|n| n % copies == 0) {
            let g = Geometry::new(Level::Raid10 { copies }, n, 4096).unwrap();
            for c in 0..(n * 6) as u64 {
                let mut stripe = c * copies as u64;
                let dev = sector_div(&mut stripe, n as u64) as usize;
                let loc = g.locate(c * 4096);
                assert_eq!(
                    (loc.stripe, loc.member),
                    (stripe, dev),
                    "n{copies} on {n}: chunk {c}"
                );
                let map = g.stripe(stripe);
                let gr = &map.groups[loc.data_index];
                let want: Vec<usize> = (1..copies).map(|j| dev + j).collect();
                assert_eq!(gr.redundancy, want);
            }
        }
    }
}

#[test]
fn raid50_and_raid60_rotate_inside_each_group() {
    for (groups, w) in [(2, 3), (2, 4), (3, 4), (2, 6), (4, 3)] {
        let n = groups * w;
        let r50 = Geometry::new(Level::Raid50 { groups }, n, 4096).unwrap();
        let r5 = Geometry::new(Level::Raid5(Raid5Layout::LeftSymmetric), w, 4096).unwrap();
        for s in 0..3 * n as u64 {
            for (gi, gr) in r50.stripe(s).groups.iter().enumerate() {
                let inner = &r5.stripe(s).groups[0];
                let shift = |v: &Vec<usize>| v.iter().map(|m| m + gi * w).collect::<Vec<_>>();
                assert_eq!(gr.data, shift(&inner.data));
                assert_eq!(gr.redundancy, shift(&inner.redundancy));
                assert_eq!(gr.first_data_index, gi * (w - 1));
            }
        }
        if w >= 4 {
            let r60 = Geometry::new(Level::Raid60 { groups }, n, 4096).unwrap();
            let r6 = Geometry::new(Level::Raid6, w, 4096).unwrap();
            for s in 0..3 * n as u64 {
                for (gi, gr) in r60.stripe(s).groups.iter().enumerate() {
                    let inner = &r6.stripe(s).groups[0];
                    let base = gi * w;
                    assert_eq!(
                        gr.data,
                        inner.data.iter().map(|m| m + base).collect::<Vec<_>>()
                    );
                    assert_eq!(
                        gr.redundancy,
                        inner
                            .redundancy
                            .iter()
                            .map(|m| m + base)
                            .collect::<Vec<_>>()
                    );
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Capacity and tolerance.

#[test]
fn capacity_matches_hand_computed_table() {
    // Smallest member 10 GiB, 64 KiB chunks: 163840 whole chunks per member.
    let caps = [10 * GIB, 12 * GIB, 10 * GIB + 3000, 11 * GIB];
    let table = [
        (Level::Raid0, 40 * GIB, 0),
        (Level::Raid1, 10 * GIB, 3),
        (Level::Raid4, 30 * GIB, 1),
        (Level::Raid5(Raid5Layout::LeftSymmetric), 30 * GIB, 1),
        (Level::Raid5(Raid5Layout::RightAsymmetric), 30 * GIB, 1),
        (Level::Raid6, 20 * GIB, 2),
        (Level::Raid10 { copies: 2 }, 20 * GIB, 1),
        (Level::Raid10 { copies: 4 }, 10 * GIB, 3),
        (Level::Raid01, 20 * GIB, 1),
        (Level::Erasure { k: 2, m: 2 }, 20 * GIB, 2),
        (Level::Erasure { k: 3, m: 1 }, 30 * GIB, 1),
        (Level::Erasure { k: 1, m: 3 }, 10 * GIB, 3),
    ];
    for (level, bytes, tolerated) in table {
        let g = Geometry::new(level, 4, 64 * KIB as u32).unwrap();
        assert_eq!(g.usable_capacity(&caps), bytes, "{level}");
        assert_eq!(g.failures_tolerated(), tolerated, "{level}");
    }

    // Twelve 1 TB members (not a multiple of the chunk), 512 KiB chunks:
    // 1e12 / 524288 = 1907348 whole chunks per member.
    let caps = [1_000_000_000_000u64; 12];
    let per = 1_907_348u64 * 512 * KIB;
    let table = [
        (Level::Raid50 { groups: 2 }, 10 * per, 1),
        (Level::Raid50 { groups: 3 }, 9 * per, 1),
        (Level::Raid60 { groups: 2 }, 8 * per, 2),
        (Level::Raid60 { groups: 3 }, 6 * per, 2),
        (Level::Raid6, 10 * per, 2),
        (Level::Raid10 { copies: 3 }, 4 * per, 2),
        (Level::Erasure { k: 6, m: 6 }, 6 * per, 6),
        (Level::Raid1, per, 11),
    ];
    for (level, bytes, tolerated) in table {
        let g = Geometry::new(level, 12, 512 * KIB as u32).unwrap();
        assert_eq!(g.usable_capacity(&caps), bytes, "{level}");
        assert_eq!(g.failures_tolerated(), tolerated, "{level}");
    }

    // Rounding down to whole chunks: smallest 70000 bytes = 17 chunks of 4 KiB.
    let g = Geometry::new(Level::Raid5(Raid5Layout::LeftSymmetric), 3, 4096).unwrap();
    assert_eq!(g.usable_capacity(&[100_000, 70_000, 90_000]), 2 * 17 * 4096);
    // Less than a chunk on one member: nothing usable.
    assert_eq!(g.usable_capacity(&[100_000, 4095, 90_000]), 0);
    // A missing entry is an empty member; extra entries are ignored.
    assert_eq!(g.usable_capacity(&[100_000, 70_000]), 0);
    assert_eq!(g.usable_capacity(&[8192, 8192, 8192, 0]), 2 * 2 * 4096);
    // Saturates instead of overflowing.
    let g = Geometry::new(Level::Raid0, 200, 4096).unwrap();
    assert_eq!(g.usable_capacity(&[u64::MAX; 200]), u64::MAX);
}

/// The brute-force answer: with `failed` members gone, every data chunk of
/// every stripe (over two rotation periods) still has a readable copy or is
/// reconstructible from at most m missing chunks in its group.
fn brute_force_survives(g: &Geometry, failed: &HashSet<usize>) -> bool {
    for s in 0..2 * g.members() as u64 {
        for gr in g.stripe(s).groups {
            let missing = gr.members().filter(|m| failed.contains(m)).count();
            for &d in &gr.data {
                let ok = !failed.contains(&d)
                    || match gr.scheme {
                        Scheme::Stripe => false,
                        Scheme::Mirror => gr.redundancy.iter().any(|c| !failed.contains(c)),
                        Scheme::Parity { m, .. } => missing <= m,
                    };
                if !ok {
                    return false;
                }
            }
        }
    }
    true
}

#[test]
fn survives_matches_brute_force_over_every_failure_set() {
    for g in small_geometries()
        .into_iter()
        .filter(|g| g.chunk_size() == 4096)
    {
        let n = g.members();
        let mut guaranteed = n; // smallest failing set size, so far
        for mask in 0u32..(1 << n) {
            let failed: Vec<usize> = (0..n).filter(|i| mask & (1 << i) != 0).collect();
            let set: HashSet<usize> = failed.iter().copied().collect();
            let want = brute_force_survives(&g, &set);
            assert_eq!(
                g.survives(&failed),
                want,
                "{} on {n}: failed {failed:?}",
                g.level()
            );
            if !want {
                guaranteed = guaranteed.min(failed.len() - 1);
            }
        }
        // Losing every member loses data, so some set failed: `guaranteed`
        // is one less than the smallest failing set.
        assert!(guaranteed < n);
        assert_eq!(g.failures_tolerated(), guaranteed, "{} on {n}", g.level());
    }
}

#[test]
fn more_failures_tolerated_matches_brute_force_over_every_failure_set() {
    for g in small_geometries()
        .into_iter()
        .filter(|g| g.chunk_size() == 4096)
    {
        let n = g.members();
        let sets: Vec<u32> = (0u32..(1 << n)).collect();
        let survives = |mask: u32| {
            let failed: Vec<usize> = (0..n).filter(|i| mask & (1 << i) != 0).collect();
            g.survives(&failed)
        };
        for &mask in &sets {
            let failed: Vec<usize> = (0..n).filter(|i| mask & (1 << i) != 0).collect();
            // The most further failures every superset of that size survives.
            let want = survives(mask).then(|| {
                (0..=n - failed.len())
                    .take_while(|&k| {
                        sets.iter()
                            .filter(|&&m| m & mask == mask)
                            .filter(|&&m| (m.count_ones() as usize) == failed.len() + k)
                            .all(|&m| survives(m))
                    })
                    .last()
                    .unwrap_or(0)
            });
            assert_eq!(
                g.more_failures_tolerated(&failed),
                want,
                "{} on {n}: failed {failed:?}",
                g.level()
            );
        }
    }
}

#[test]
fn survives_hand_picked_cases() {
    let r10 = Geometry::new(Level::Raid10 { copies: 2 }, 6, 4096).unwrap();
    assert!(r10.survives(&[0, 2, 5]), "one member of each mirror pair");
    assert!(!r10.survives(&[2, 3]), "both members of one pair");
    let r01 = Geometry::new(Level::Raid01, 6, 4096).unwrap();
    assert!(
        r01.survives(&[0, 4]),
        "one failure in each half, different chunks"
    );
    assert!(!r01.survives(&[1, 4]), "chunk 1 lost on both halves");
    let r60 = Geometry::new(Level::Raid60 { groups: 2 }, 10, 4096).unwrap();
    assert!(r60.survives(&[0, 1, 5, 6]), "two per group");
    assert!(!r60.survives(&[0, 1, 2]), "three in one group");
    let e = Geometry::new(Level::Erasure { k: 4, m: 3 }, 7, 4096).unwrap();
    assert!(e.survives(&[6, 1, 3]));
    assert!(!e.survives(&[0, 1, 2, 3]));
    // Duplicates count once; out-of-range indices name no member.
    assert!(e.survives(&[1, 1, 1, 1, 2, 2, 7, 1000, usize::MAX]));
    assert!(Geometry::new(Level::Raid0, 3, 4096).unwrap().survives(&[]));
}

// ---------------------------------------------------------------------------
// Names and codes.

#[test]
fn names_and_codes_round_trip_for_every_valid_level() {
    for g in small_geometries() {
        let level = g.level();
        assert_eq!(level.to_string().parse::<Level>(), Ok(level));
        assert_eq!(level.to_string().to_uppercase().parse::<Level>(), Ok(level));
        assert_eq!(Level::from_code(level.to_code()), Ok(level));
    }
}

#[test]
fn codes_are_stable() {
    let table = [
        (Level::Raid0, 0, [0, 0]),
        (Level::Raid1, 1, [0, 0]),
        (Level::Raid4, 4, [0, 0]),
        (Level::Raid5(Raid5Layout::LeftAsymmetric), 5, [0, 0]),
        (Level::Raid5(Raid5Layout::RightAsymmetric), 5, [1, 0]),
        (Level::Raid5(Raid5Layout::LeftSymmetric), 5, [2, 0]),
        (Level::Raid5(Raid5Layout::RightSymmetric), 5, [3, 0]),
        (Level::Raid6, 6, [0, 0]),
        (Level::Raid10 { copies: 3 }, 10, [3, 0]),
        (Level::Raid01, 11, [0, 0]),
        (Level::Raid50 { groups: 4 }, 50, [4, 0]),
        (Level::Raid60 { groups: 2 }, 60, [2, 0]),
        (Level::Erasure { k: 10, m: 4 }, 200, [10, 4]),
    ];
    for (level, code, params) in table {
        assert_eq!(level.to_code(), LevelCode { code, params }, "{level}");
    }
    for code in [2, 3, 7, 12, 100, 199, 201, 255] {
        assert!(matches!(
            Level::from_code(LevelCode {
                code,
                params: [0, 0]
            }),
            Err(LayoutError::UnknownCode { .. })
        ));
    }
}

// ---------------------------------------------------------------------------
// Bad input.

/// A refused shape and a check of the error it must give.
type BadCase = (Level, usize, u32, fn(&LayoutError) -> bool);

#[test]
fn bad_shapes_are_refused_with_the_right_error() {
    use LayoutError::*;
    let ls = Level::Raid5(Raid5Layout::LeftSymmetric);
    let cases: Vec<BadCase> = vec![
        (Level::Raid0, 0, 4096, |e| matches!(e, NoMembers)),
        (Level::Raid0, 258, 4096, |e| {
            matches!(e, TooManyMembers { max: 257, .. })
        }),
        (Level::Raid1, 1, 4096, |e| {
            matches!(e, TooFewMembers { min: 2, .. })
        }),
        (ls, 2, 4096, |e| matches!(e, TooFewMembers { min: 3, .. })),
        (ls, 253, 4096, |e| {
            matches!(e, TooManyMembers { max: 252, .. })
        }),
        (Level::Raid4, 2, 4096, |e| {
            matches!(e, TooFewMembers { min: 3, .. })
        }),
        (Level::Raid6, 3, 4096, |e| {
            matches!(e, TooFewMembers { min: 4, .. })
        }),
        (Level::Raid6, 254, 4096, |e| {
            matches!(e, TooManyMembers { max: 253, .. })
        }),
        (Level::Raid10 { copies: 1 }, 4, 4096, |e| {
            matches!(e, BadParameter { .. })
        }),
        (Level::Raid10 { copies: 3 }, 2, 4096, |e| {
            matches!(e, TooFewMembers { min: 3, .. })
        }),
        (Level::Raid10 { copies: 2 }, 5, 4096, |e| {
            matches!(e, Indivisible { divisor: 2, .. })
        }),
        (Level::Raid01, 2, 4096, |e| {
            matches!(e, TooFewMembers { min: 4, .. })
        }),
        (Level::Raid01, 7, 4096, |e| {
            matches!(e, Indivisible { divisor: 2, .. })
        }),
        (Level::Raid50 { groups: 1 }, 6, 4096, |e| {
            matches!(e, BadParameter { .. })
        }),
        (Level::Raid50 { groups: 2 }, 5, 4096, |e| {
            matches!(e, TooFewMembers { min: 6, .. })
        }),
        (Level::Raid50 { groups: 2 }, 7, 4096, |e| {
            matches!(e, Indivisible { divisor: 2, .. })
        }),
        (Level::Raid60 { groups: 3 }, 11, 4096, |e| {
            matches!(e, TooFewMembers { min: 12, .. })
        }),
        (Level::Raid60 { groups: 3 }, 13, 4096, |e| {
            matches!(e, Indivisible { divisor: 3, .. })
        }),
        (Level::Raid60 { groups: usize::MAX }, 8, 4096, |e| {
            matches!(e, TooFewMembers { .. })
        }),
        (Level::Erasure { k: 0, m: 2 }, 2, 4096, |e| {
            matches!(e, BadParameter { .. })
        }),
        (Level::Erasure { k: 252, m: 1 }, 253, 4096, |e| {
            matches!(e, BadParameter { .. })
        }),
        (Level::Erasure { k: 4, m: 7 }, 11, 4096, |e| {
            matches!(e, BadParameter { .. })
        }),
        (Level::Erasure { k: 4, m: 2 }, 5, 4096, |e| {
            matches!(e, ErasureMembers { needed: 6, .. })
        }),
        (Level::Erasure { k: 1, m: 6 }, 3, 4096, |e| {
            matches!(e, ErasureMembers { .. })
        }),
        (
            Level::Erasure {
                k: usize::MAX,
                m: usize::MAX,
            },
            4,
            4096,
            |e| matches!(e, BadParameter { .. }),
        ),
        (Level::Raid0, 2, 0, |e| matches!(e, ChunkSize(0))),
        (Level::Raid0, 2, 2048, |e| matches!(e, ChunkSize(2048))),
        (Level::Raid0, 2, 12288, |e| matches!(e, ChunkSize(12288))),
        (Level::Raid0, 2, 32 << 20, |e| matches!(e, ChunkSize(_))),
        (Level::Raid0, 2, u32::MAX, |e| matches!(e, ChunkSize(_))),
    ];
    for (level, n, cs, ok) in cases {
        let err = Geometry::new(level, n, cs).expect_err(&format!("{level} on {n}, chunk {cs}"));
        assert!(ok(&err), "{level} on {n}, chunk {cs}: wrong error {err:?}");
        assert!(!err.to_string().is_empty());
    }
    // The limits themselves are accepted.
    for (level, n) in [
        (Level::Raid0, 257),
        (ls, 252),
        (Level::Raid6, 253),
        (Level::Erasure { k: 251, m: 6 }, 257),
        (Level::Raid1, 257),
    ] {
        Geometry::new(level, n, 4096).unwrap();
        Geometry::new(level, n, 16 << 20).unwrap();
    }
}

fn any_level() -> impl Strategy<Value = Level> {
    let p = prop_oneof![0usize..20, any::<usize>()];
    prop_oneof![
        Just(Level::Raid0),
        Just(Level::Raid1),
        Just(Level::Raid4),
        (0usize..4).prop_map(|i| Level::Raid5(Raid5Layout::ALL[i])),
        Just(Level::Raid6),
        p.clone().prop_map(|copies| Level::Raid10 { copies }),
        Just(Level::Raid01),
        p.clone().prop_map(|groups| Level::Raid50 { groups }),
        p.clone().prop_map(|groups| Level::Raid60 { groups }),
        (p.clone(), p).prop_map(|(k, m)| Level::Erasure { k, m }),
    ]
}

fn any_members() -> impl Strategy<Value = usize> {
    prop_oneof![0usize..40, 0usize..300, any::<usize>()]
}

fn any_chunk() -> impl Strategy<Value = u32> {
    prop_oneof![
        (12u32..=24).prop_map(|b| 1 << b),
        (0u32..32).prop_map(|b| 1 << b),
        any::<u32>()
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Random shapes never panic; an accepted one maps consistently.
    #[test]
    fn random_shapes_never_panic(
        level in any_level(),
        n in any_members(),
        cs in any_chunk(),
        s in any::<u64>(),
        offset in any::<u64>(),
        failed in proptest::collection::vec(0usize..300, 0..8),
    ) {
        match Geometry::new(level, n, cs) {
            Ok(g) => {
                prop_assert!(cs.is_power_of_two() && (4096..=16 << 20).contains(&cs));
                prop_assert!((1..=257).contains(&n));
                let mut all: Vec<usize> = g.stripe(s).groups.iter().flat_map(|gr| gr.members()).collect();
                all.sort_unstable();
                prop_assert_eq!(all, (0..n).collect::<Vec<_>>());
                let loc = g.locate(offset);
                prop_assert_eq!(Some(loc.member), g.data_member(loc.stripe, loc.data_index));
                let _ = g.survives(&failed);
                let _ = g.usable_capacity(&[u64::MAX, 0, 12345]);
                prop_assert_eq!(Level::from_code(level.to_code()), Ok(level));
                prop_assert_eq!(level.to_string().parse::<Level>(), Ok(level));
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    /// Random names and codes never panic, and what parses prints back the same.
    #[test]
    fn random_names_and_codes_never_panic(
        name in prop_oneof![
            "[a-zA-Z0-9+ -]{0,24}",
            (
                prop::sample::select(vec![
                    "raid", "raid5-", "raid5-l", "raid10-n", "raid50-g", "raid60-g", "4+", "RAID1",
                ]),
                "[0-9a-z+ -]{0,4}",
            )
                .prop_map(|(a, b)| format!("{a}{b}")),
        ],
        code in any::<u8>(),
        a in prop_oneof![0u32..300, any::<u32>()],
        b in prop_oneof![0u32..10, any::<u32>()],
    ) {
        if let Ok(level) = name.parse::<Level>() {
            prop_assert_eq!(level.to_string().parse::<Level>(), Ok(level));
        }
        if let Ok(level) = Level::from_code(LevelCode { code, params: [a, b] }) {
            prop_assert_eq!(level.to_code(), LevelCode { code, params: [a, b] });
        }
    }
}

// ---------------------------------------------------------------------------
// docs/LAYOUTS.md: every placement diagram must be what the code does.

/// One diagram of docs/LAYOUTS.md: level name, members, and rows of a stripe
/// number with one token per member (`|` group separators dropped).
type Diagram = (String, usize, Vec<(u64, Vec<String>)>);

fn doc_diagrams(doc: &str) -> Vec<Diagram> {
    let mut out = Vec::new();
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        if line.trim() != "```text" {
            continue;
        }
        let Some(title) = lines.next() else { break };
        let words: Vec<&str> = title.split_whitespace().collect();
        let [name, "on", n, "members"] = words[..] else {
            continue;
        };
        let mut rows = Vec::new();
        for row in lines.by_ref() {
            if row.trim() == "```" {
                break;
            }
            let mut tokens = row.split_whitespace().filter(|t| *t != "|");
            if tokens.next() != Some("stripe") {
                continue; // the member header
            }
            let s = tokens.next().unwrap().parse().unwrap();
            rows.push((s, tokens.map(str::to_string).collect()));
        }
        out.push((name.to_string(), n.parse().unwrap(), rows));
    }
    out
}

#[test]
fn layouts_doc_diagrams_match_the_code() {
    let doc = include_str!("../../../docs/LAYOUTS.md");
    let diagrams = doc_diagrams(doc);
    assert!(
        diagrams.len() >= 13,
        "only {} diagrams found",
        diagrams.len()
    );
    for (name, n, rows) in diagrams {
        let level: Level = name.parse().unwrap();
        let g = Geometry::new(level, n, 4096).unwrap();
        assert!(!rows.is_empty(), "{name}: no rows");
        for (s, tokens) in rows {
            assert_eq!(tokens.len(), n, "{name} stripe {s}: one token per member");
            let map = g.stripe(s);
            for (member, token) in tokens.iter().enumerate() {
                let want = match g.role(s, member).unwrap() {
                    ChunkRole::Data { index } => format!("D{index}"),
                    ChunkRole::Redundancy { group, row } => match g.scheme() {
                        Scheme::Mirror => format!("D{}", map.groups[group].first_data_index),
                        _ => ["P", "Q", "R", "S", "T", "U"][row].to_string(),
                    },
                };
                assert_eq!(
                    token, &want,
                    "docs/LAYOUTS.md {name} stripe {s} member {member}"
                );
            }
        }
    }
}
