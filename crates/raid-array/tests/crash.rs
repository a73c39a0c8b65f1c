//! Crash consistency: for every level, cut the power at every mutating
//! member call of a small workload, build each member's crash image (only
//! durable bytes, plus a random subset of unsynced writes, some torn),
//! reopen, resync, and check: every byte synced before the crash and not
//! written since reads back intact; anything written since reads as one of
//! its versions or fails with EIO — never anything else.

use std::collections::HashMap;
use std::sync::Arc;

use raid_array::data::DataStore;
use raid_array::health::{Health, MemberState};
use raid_array::member::faulty::{FaultyMember, Power};
use raid_array::member::{DirMember, Member};
use raid_array::ops;
use raid_core::Geometry;
use raid_core::layout::{Level, Raid5Layout};

mod common;
use common::scratch;

const CHUNK: u32 = 4096;
const BLOCK: usize = 4096;

#[derive(Clone)]
enum Step {
    Write(u64, usize, Vec<u8>),
    Sync(u64),
    Truncate(u64, usize),
    /// A hole punched over a byte range: its whole stripes.
    Punch(u64, usize, usize),
}

fn bytes(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_mul(31).wrapping_add(i as u8 ^ (i >> 8) as u8))
        .collect()
}

fn workload() -> Vec<Step> {
    use Step::*;
    vec![
        Write(1, 0, bytes(1, 20_000)),
        Sync(1),
        Write(2, 0, bytes(2, 9_000)),
        Write(1, 5_000, bytes(3, 6_000)),
        Sync(2),
        Write(1, 20_000, bytes(4, 7_000)),
        Sync(1),
        Truncate(1, 13_000),
        Write(2, 4_000, bytes(5, 10_000)),
        // Two stripes of the widest level (RAID-60 of 8: 16 KiB of data).
        Write(2, 14_000, bytes(7, 19_000)),
        Punch(2, 0, 33_000),
        Sync(1),
        Write(1, 2_000, bytes(6, 3_000)),
        Sync(2),
    ]
}

/// Per inode: every version the contents went through (index 0 = empty),
/// the block range each step rewrote in place, and the last synced version.
#[derive(Default, Clone)]
struct History {
    versions: Vec<Vec<u8>>,
    rewrote: Vec<(usize, usize)>,
    synced: usize,
}

fn levels() -> Vec<(Level, usize)> {
    vec![
        (Level::Raid0, 2),
        (Level::Raid1, 2),
        (Level::Raid4, 3),
        (Level::Raid5(Raid5Layout::LeftSymmetric), 3),
        (Level::Raid6, 4),
        (Level::Raid10 { copies: 2 }, 4),
        (Level::Raid01, 4),
        (Level::Raid50 { groups: 2 }, 6),
        (Level::Raid60 { groups: 2 }, 8),
        (Level::Erasure { k: 2, m: 3 }, 5),
    ]
}

fn open(level: Level, n: usize, members: Vec<Arc<dyn Member>>) -> DataStore {
    open_with(level, members, vec![MemberState::Active; n])
}

fn open_with(level: Level, members: Vec<Arc<dyn Member>>, states: Vec<MemberState>) -> DataStore {
    let n = members.len();
    let health = Arc::new(Health::new(states));
    DataStore::new(
        Geometry::new(level, n, CHUNK).unwrap(),
        members.into_iter().map(Some).collect(),
        health,
    )
    .unwrap()
}

/// Run the workload until the power fails; returns the histories.
/// Run the workload until the power fails; returns the histories and the
/// member states at the last successful sync. A member that failed before a
/// sync returned is recorded as failed by the array (superblocks) before the
/// sync is acknowledged, so it comes back failed; one that failed only with
/// the crash comes back active.
fn run(store: &DataStore) -> (HashMap<u64, History>, Vec<MemberState>) {
    let mut h: HashMap<u64, History> = HashMap::new();
    let mut states = vec![MemberState::Active; store.health().len()];
    for step in workload() {
        let ok = match &step {
            Step::Write(ino, off, d) => {
                let e = h.entry(*ino).or_insert_with(|| History {
                    versions: vec![Vec::new()],
                    rewrote: vec![(0, 0)],
                    synced: 0,
                });
                let cur = e.versions.last().unwrap().clone();
                let mut next = cur.clone();
                if next.len() < off + d.len() {
                    next.resize(off + d.len(), 0);
                }
                next[*off..off + d.len()].copy_from_slice(d);
                // The new version may be partly on disk even if the call fails.
                e.versions.push(next);
                e.rewrote
                    .push((off / BLOCK, (off + d.len()).div_ceil(BLOCK)));
                store.write(*ino, *off as u64, d, cur.len() as u64).is_ok()
            }
            Step::Truncate(ino, size) => {
                let e = h.get_mut(ino).unwrap();
                let cur = e.versions.last().unwrap().clone();
                let mut next = cur.clone();
                next.resize(*size, 0);
                e.versions.push(next);
                // The rest of the stripe holding the new end is zeroed in place.
                e.rewrote.push((size / BLOCK, usize::MAX));
                store.truncate(*ino, cur.len() as u64, *size as u64).is_ok()
            }
            Step::Punch(ino, from, to) => {
                let sdb = store.geometry().stripe_data_bytes() as usize;
                let e = h.get_mut(ino).unwrap();
                let cur = e.versions.last().unwrap().clone();
                let (first, last) = (from.div_ceil(sdb), (*to).min(cur.len()) / sdb);
                if first >= last {
                    continue;
                }
                let mut next = cur.clone();
                next[first * sdb..last * sdb].fill(0);
                e.versions.push(next);
                e.rewrote.push((first * sdb / BLOCK, last * sdb / BLOCK));
                store
                    .punch(*ino, first as u64, last as u64, cur.len() as u64)
                    .is_ok()
            }
            Step::Sync(ino) => {
                let r = store.sync(*ino).is_ok();
                if r {
                    states = store.health().states();
                    let e = h.get_mut(ino).unwrap();
                    e.synced = e.versions.len() - 1;
                }
                r
            }
        };
        if !ok {
            break;
        }
    }
    (h, states)
}

#[test]
fn every_crash_point_of_every_level() {
    let only = std::env::var("CRASH_ONLY").ok();
    for (level, n) in levels() {
        if only
            .as_ref()
            .is_some_and(|o| !format!("{level:?}").starts_with(o.as_str()))
        {
            continue;
        }
        // Count the mutating member calls of a complete run.
        let total = {
            let dirs: Vec<_> = (0..n).map(|_| scratch()).collect();
            let power = Power::unlimited();
            let members = dirs
                .iter()
                .map(|d| {
                    let f = FaultyMember::with_power(
                        Arc::new(DirMember::open(d.path()).unwrap()),
                        power.clone(),
                    );
                    f.model_sync_only();
                    Arc::new(f) as Arc<dyn Member>
                })
                .collect();
            run(&open(level, n, members));
            power.steps_used()
        };
        assert!(total > 20, "{level:?}: only {total} steps");
        let cut_only: Option<u64> = std::env::var("CRASH_CUT").ok().and_then(|c| c.parse().ok());
        eprintln!("{level:?}: {total} steps");
        for cut in 0..=total {
            if cut_only.is_some_and(|c| c != cut) {
                continue;
            }
            let dirs: Vec<_> = (0..n).map(|_| scratch()).collect();
            let power = Power::cut_after(cut);
            let faulty: Vec<FaultyMember> = dirs
                .iter()
                .map(|d| {
                    let f = FaultyMember::with_power(
                        Arc::new(DirMember::open(d.path()).unwrap()),
                        power.clone(),
                    );
                    f.model_sync_only();
                    f
                })
                .collect();
            let (hist, states) = run(&open(
                level,
                n,
                faulty
                    .iter()
                    .map(|f| Arc::new(f.clone()) as Arc<dyn Member>)
                    .collect(),
            ));
            // Crash images, then a fresh store over them.
            let images: Vec<_> = (0..n).map(|_| scratch()).collect();
            for (i, (f, img)) in faulty.iter().zip(&images).enumerate() {
                f.crash_image(img.path(), Some(cut * 31 + i as u64))
                    .unwrap();
            }
            let members: Vec<Arc<dyn Member>> = images
                .iter()
                .map(|d| {
                    let f = FaultyMember::new(Arc::new(DirMember::open(d.path()).unwrap()));
                    f.model_sync_only();
                    Arc::new(f) as Arc<dyn Member>
                })
                .collect();
            let degraded = states.iter().any(|s| *s != MemberState::Active);
            let store = open_with(level, members, states.clone());
            let files: Vec<(u64, u64)> = hist
                .iter()
                .map(|(i, h)| (*i, h.versions[h.synced].len() as u64))
                .collect();
            let rep = ops::resync(&store, files.clone()).unwrap();

            assert!(
                store.dirty_intent().is_clean(),
                "{level:?} cut {cut}: intent not cleared"
            );
            for (ino, h) in &hist {
                let synced = &h.versions[h.synced];
                let later = &h.versions[h.synced..];
                for b in 0..synced.len().div_ceil(BLOCK) {
                    let r = b * BLOCK..((b + 1) * BLOCK).min(synced.len());
                    let block_of = |v: &Vec<u8>| {
                        let mut x = v.get(r.start..r.end.min(v.len())).unwrap_or(&[]).to_vec();
                        x.resize(r.len(), 0);
                        x
                    };
                    // Blocks rewritten in place after the sync may be torn by the
                    // crash; if the tear hits more chunks than the redundancy
                    // covers they read as EIO, never as wrong bytes.
                    let touched = h.rewrote[h.synced + 1..]
                        .iter()
                        .any(|&(a, z)| a <= b && b < z);
                    let mut buf = vec![0u8; r.len()];
                    match store.read(*ino, r.start as u64, &mut buf, synced.len() as u64) {
                        Ok(k) => {
                            assert_eq!(k, r.len());
                            assert!(
                                later.iter().any(|v| block_of(v) == buf),
                                "{level:?} cut {cut}: ino {ino} block {b} holds bytes of no version (synced v{} of {}; {rep:?}; diff vs each: {:?})",
                                h.synced,
                                h.versions.len(),
                                later
                                    .iter()
                                    .map(|v| {
                                        let x = block_of(v);
                                        (
                                            x.iter().zip(&buf).position(|(a, c)| a != c),
                                            x.iter().zip(&buf).rposition(|(a, c)| a != c),
                                        )
                                    })
                                    .collect::<Vec<_>>()
                            );
                            assert!(
                                touched || buf == synced[r.clone()],
                                "{level:?} cut {cut}: ino {ino} block {b}: synced bytes changed"
                            );
                        }
                        Err(e) => {
                            // Dirty and degraded at once is md's write hole: a
                            // torn partial-stripe write can take a synced
                            // neighbour on the failed member with it. Such
                            // blocks read as EIO, never as wrong bytes (md
                            // refuses to start such an array without --force).
                            assert!(
                                touched || degraded,
                                "{level:?} cut {cut}: ino {ino} block {b}: synced block unreadable: {e} (synced v{} of {}, states {states:?}, {rep:?})",
                                h.synced,
                                h.versions.len()
                            );
                            assert_eq!(e.errno(), 5);
                        }
                    }
                }
            }
        }
    }
}
