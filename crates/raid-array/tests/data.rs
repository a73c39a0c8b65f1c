//! Round-trips through the data path for every level, on real member
//! directories: sizes and offsets that are not chunk- or block-aligned,
//! holes, truncation, overwrites and concurrent writers.

use std::sync::Arc;

use raid_array::data::DataStore;
use raid_array::health::{Health, MemberState};
use raid_array::member::{DirMember, Member};
use raid_core::Geometry;
use raid_core::layout::{Level, Raid5Layout};

mod common;
use common::pattern;

struct Store {
    _dirs: Vec<tempfile::TempDir>,
    store: DataStore,
}

fn store(level: Level, n: usize, chunk: u32) -> Store {
    let dirs: Vec<_> = (0..n).map(|_| tempfile::tempdir().unwrap()).collect();
    let members: Vec<Option<Arc<dyn Member>>> = dirs
        .iter()
        .map(|d| Some(Arc::new(DirMember::open(d.path()).unwrap()) as Arc<dyn Member>))
        .collect();
    let health = Arc::new(Health::new(vec![MemberState::Active; n]));
    let geometry = Geometry::new(level, n, chunk).unwrap();
    Store {
        store: DataStore::new(geometry, members, health).unwrap(),
        _dirs: dirs,
    }
}

fn levels() -> Vec<(Level, usize)> {
    vec![
        (Level::Raid0, 3),
        (Level::Raid1, 2),
        (Level::Raid1, 3),
        (Level::Raid4, 4),
        (Level::Raid5(Raid5Layout::LeftSymmetric), 4),
        (Level::Raid5(Raid5Layout::RightAsymmetric), 3),
        (Level::Raid6, 5),
        (Level::Raid10 { copies: 2 }, 4),
        (Level::Raid01, 4),
        (Level::Raid50 { groups: 2 }, 6),
        (Level::Raid60 { groups: 2 }, 8),
        (Level::Erasure { k: 3, m: 3 }, 6),
    ]
}

/// A file model: apply the same writes to a Vec and compare.
struct File<'a> {
    s: &'a DataStore,
    ino: u64,
    model: Vec<u8>,
}

impl File<'_> {
    fn write(&mut self, off: usize, data: &[u8]) {
        self.s
            .write(self.ino, off as u64, data, self.model.len() as u64)
            .unwrap();
        if self.model.len() < off + data.len() {
            self.model.resize(off + data.len(), 0);
        }
        self.model[off..off + data.len()].copy_from_slice(data);
    }

    fn truncate(&mut self, size: usize) {
        self.s
            .truncate(self.ino, self.model.len() as u64, size as u64)
            .unwrap();
        self.model.resize(size, 0);
    }

    fn check(&self, what: &str) {
        let mut buf = vec![0xAAu8; self.model.len() + 5000];
        let n = self
            .s
            .read(self.ino, 0, &mut buf, self.model.len() as u64)
            .unwrap();
        assert_eq!(n, self.model.len(), "{what}: length");
        assert!(buf[..n] == self.model[..], "{what}: contents differ");
        // Unaligned partial reads.
        for &(off, len) in &[
            (1usize, 10usize),
            (4095, 2),
            (5000, 70_000),
            (self.model.len() / 2, 9999),
        ] {
            if off >= self.model.len() {
                continue;
            }
            let mut b = vec![0u8; len];
            let n = self
                .s
                .read(self.ino, off as u64, &mut b, self.model.len() as u64)
                .unwrap();
            let want = &self.model[off..(off + len).min(self.model.len())];
            assert_eq!(&b[..n], want, "{what}: read at {off}+{len}");
        }
    }
}

#[test]
fn round_trip_every_level() {
    for (level, n) in levels() {
        let st = store(level, n, 16 * 1024);
        for (i, &size) in [1usize, 4096, 5000, 16 * 1024, 100_000, 777_777]
            .iter()
            .enumerate()
        {
            let mut f = File {
                s: &st.store,
                ino: 100 + i as u64,
                model: Vec::new(),
            };
            f.write(0, &pattern(i as u64, size));
            f.check(&format!("{level:?} size {size}"));
            // Overwrite in the middle at an unaligned offset.
            let mid = size / 3;
            f.write(mid, &pattern(99, (size / 4).max(1)));
            f.check(&format!("{level:?} size {size} overwrite"));
        }
    }
}

#[test]
fn appends_holes_and_truncation() {
    for (level, n) in levels() {
        let st = store(level, n, 8 * 1024);
        let mut f = File {
            s: &st.store,
            ino: 7,
            model: Vec::new(),
        };
        // Appends in odd sizes.
        let mut off = 0;
        for i in 0..20 {
            let d = pattern(i, 3001 + (i as usize) * 1777);
            f.write(off, &d);
            off += d.len();
        }
        f.check(&format!("{level:?} appends"));
        // A write far past the end leaves a hole that reads as zeros.
        let far = f.model.len() + 200_000;
        f.write(far, b"tail");
        f.check(&format!("{level:?} hole"));
        assert!(f.model[far - 200_000..far].iter().all(|&b| b == 0));
        // Truncate down to an unaligned size, then up: the old bytes must not come back.
        f.truncate(12_345);
        f.check(&format!("{level:?} truncate down"));
        f.truncate(300_000);
        f.check(&format!("{level:?} truncate up"));
        f.truncate(0);
        f.check(&format!("{level:?} truncate to zero"));
        f.write(5, b"again");
        f.check(&format!("{level:?} write after truncate"));
        st.store.sync(7).unwrap();
        st.store.remove(7).unwrap();
        let mut b = [1u8; 4];
        assert_eq!(st.store.read(7, 0, &mut b, 0).unwrap(), 0);
    }
}

#[test]
fn concurrent_writers_on_different_inodes() {
    let st = store(Level::Raid6, 5, 16 * 1024);
    std::thread::scope(|sc| {
        for t in 0..4u64 {
            let s = &st.store;
            sc.spawn(move || {
                let mut f = File {
                    s,
                    ino: 1000 + t,
                    model: Vec::new(),
                };
                for i in 0..30 {
                    f.write(i * 10_007, &pattern(t * 100 + i as u64, 10_007));
                }
                f.check(&format!("writer {t}"));
            });
        }
    });
}

#[test]
fn full_stripe_writes_land_on_every_member_with_parity() {
    // RAID-5 of 3: parity = XOR of the two data chunks of every stripe.
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let members: Vec<Option<Arc<dyn Member>>> = dirs
        .iter()
        .map(|d| Some(Arc::new(DirMember::open(d.path()).unwrap()) as Arc<dyn Member>))
        .collect();
    let geometry = Geometry::new(Level::Raid5(Raid5Layout::LeftSymmetric), 3, 4096).unwrap();
    let s = DataStore::new(
        geometry,
        members,
        Arc::new(Health::new(vec![MemberState::Active; 3])),
    )
    .unwrap();
    let data = pattern(1, 8192 * 4);
    s.write(3, 0, &data, 0).unwrap();
    let shards: Vec<Vec<u8>> = dirs
        .iter()
        .map(|d| std::fs::read(d.path().join(".raidfs/data/03/0000000000000003")).unwrap())
        .collect();
    for st in 0..4 {
        let r = st * 4096..(st + 1) * 4096;
        let x: Vec<u8> = (0..4096)
            .map(|i| shards[0][r.start + i] ^ shards[1][r.start + i] ^ shards[2][r.start + i])
            .collect();
        assert!(
            x.iter().all(|&b| b == 0),
            "stripe {st}: data and parity do not XOR to zero"
        );
    }
}
