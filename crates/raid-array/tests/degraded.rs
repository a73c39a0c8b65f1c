//! Degraded mode, rebuild and scrub on real member directories with
//! injected faults: failures up to the level's tolerance lose nothing,
//! beyond it nothing wrong is ever returned, corruption is detected,
//! repaired and counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use raid_array::ArrayError;
use raid_array::data::DataStore;
use raid_array::health::{Health, MemberState};
use raid_array::member::faulty::{Fault, FaultKind, FaultyMember, Op};
use raid_array::member::{DirMember, Member};
use raid_array::ops::{self, NoProgress, Progress, RebuildOptions, ScrubOptions};
use raid_core::Geometry;
use raid_core::layout::{Level, Raid5Layout};

mod common;
use common::pattern;

const CHUNK: u32 = 16 * 1024;

struct Rig {
    dirs: Vec<tempfile::TempDir>,
    faulty: Vec<FaultyMember>,
    store: DataStore,
    health: Arc<Health>,
}

fn rig(level: Level, n: usize) -> Rig {
    let dirs: Vec<_> = (0..n).map(|_| tempfile::tempdir().unwrap()).collect();
    let faulty: Vec<FaultyMember> = dirs
        .iter()
        .map(|d| FaultyMember::new(Arc::new(DirMember::open(d.path()).unwrap())))
        .collect();
    let members = faulty
        .iter()
        .map(|f| Some(Arc::new(f.clone()) as Arc<dyn Member>))
        .collect();
    let health = Arc::new(Health::new(vec![MemberState::Active; n]));
    let store = DataStore::new(
        Geometry::new(level, n, CHUNK).unwrap(),
        members,
        health.clone(),
    )
    .unwrap();
    Rig {
        dirs,
        faulty,
        store,
        health,
    }
}

/// Put `nm` in failed slot `slot` as a rebuild target, as the array does
/// before it starts a rebuild.
fn start_target(s: &DataStore, slot: usize, nm: &Arc<dyn Member>) {
    s.set_member(slot, Some(nm.clone()));
    s.health()
        .set_state(slot, MemberState::Rebuilding { done_bytes: 0 });
}

fn read_all(s: &DataStore, ino: u64, size: usize) -> Result<Vec<u8>, ArrayError> {
    let mut b = vec![0u8; size];
    let n = s.read(ino, 0, &mut b, size as u64)?;
    assert_eq!(n, size);
    Ok(b)
}

fn hash(b: &[u8]) -> u32 {
    crc32fast::hash(b)
}

/// (level, members, tolerated failures)
fn redundant_levels() -> Vec<(Level, usize, usize)> {
    vec![
        (Level::Raid5(Raid5Layout::LeftSymmetric), 4, 1),
        (Level::Raid6, 5, 2),
        (Level::Erasure { k: 3, m: 3 }, 6, 3),
    ]
}

#[test]
fn failures_up_to_tolerance_then_rebuild_onto_fresh_directories() {
    for (level, n, m) in redundant_levels() {
        let r = rig(level, n);
        let files: Vec<(u64, Vec<u8>)> = (0..4)
            .map(|i| (10 + i, pattern(i, 150_000 + i as usize * 33_333)))
            .collect();
        let events = r.health.subscribe();
        // Write each file in pieces, failing one more member after each file.
        for (fi, (ino, data)) in files.iter().enumerate() {
            let mut off = 0;
            for piece in data.chunks(40_000) {
                r.store.write(*ino, off as u64, piece, off as u64).unwrap();
                off += piece.len();
            }
            if fi < m {
                r.faulty[fi * 2 % n].vanish();
            }
        }
        // A write after the failures notices the vanished members.
        r.store.write(99, 0, b"after the failures", 0).unwrap();
        let failed: Vec<usize> = (0..n)
            .filter(|&i| r.health.state(i) == MemberState::Failed)
            .collect();
        assert_eq!(
            failed.len(),
            m,
            "{level:?}: failed members {:?}",
            r.health.states()
        );
        assert!(
            events
                .try_iter()
                .filter(|e| matches!(e, raid_array::health::HealthEvent::Failed { .. }))
                .count()
                == m
        );
        for (ino, data) in &files {
            assert_eq!(
                hash(&read_all(&r.store, *ino, data.len()).unwrap()),
                hash(data),
                "{level:?} degraded read"
            );
        }
        // Rebuild every failed slot onto a fresh directory.
        let fresh: Vec<_> = failed
            .iter()
            .map(|_| tempfile::tempdir().unwrap())
            .collect();
        let list: Vec<(u64, u64)> = files
            .iter()
            .map(|(i, d)| (*i, d.len() as u64))
            .chain([(99, 18)])
            .collect();
        for (slot, dir) in failed.iter().zip(&fresh) {
            let nm: Arc<dyn Member> = Arc::new(DirMember::open(dir.path()).unwrap());
            start_target(&r.store, *slot, &nm);
            let rep = ops::rebuild(
                &r.store,
                *slot,
                nm,
                list.clone(),
                RebuildOptions::default(),
                &NoProgress,
            )
            .unwrap();
            assert!(rep.complete && rep.unrecoverable == 0, "{level:?}: {rep:?}");
            assert_eq!(r.health.state(*slot), MemberState::Active);
        }
        // The rebuilt members must carry the data: fail m *other* members and read.
        let others: Vec<usize> = (0..n).filter(|i| !failed.contains(i)).take(m).collect();
        for &o in &others {
            r.faulty[o].vanish();
            r.health.mark_failed(o, "test");
        }
        for (ino, data) in &files {
            assert_eq!(
                hash(&read_all(&r.store, *ino, data.len()).unwrap()),
                hash(data),
                "{level:?} after rebuild"
            );
        }
    }
}

#[test]
fn beyond_tolerance_writes_are_refused_and_reads_never_invent_data() {
    for (level, n, m) in redundant_levels() {
        let r = rig(level, n);
        let data = pattern(5, 300_000);
        r.store.write(1, 0, &data, 0).unwrap();
        for i in 0..=m {
            r.faulty[i].vanish();
            r.health.mark_failed(i, "test");
        }
        match r.store.write(1, 0, b"x", data.len() as u64) {
            Err(ArrayError::ArrayFailed(_)) => {}
            other => panic!("{level:?}: write beyond tolerance gave {other:?}"),
        }
        // Every 4 KiB block either reads correctly or fails with EIO.
        let mut failures = 0;
        for off in (0..data.len()).step_by(4096) {
            let mut b = vec![0u8; 4096];
            match r.store.read(1, off as u64, &mut b, data.len() as u64) {
                Ok(k) => assert_eq!(
                    &b[..k],
                    &data[off..off + k],
                    "{level:?}: wrong bytes at {off}"
                ),
                Err(e) => {
                    assert_eq!(e.errno(), 5, "{level:?}: {e}");
                    failures += 1;
                }
            }
        }
        assert!(failures > 0, "{level:?}: some blocks must be lost");
    }
}

#[test]
fn bit_flips_are_detected_repaired_and_counted() {
    let r = rig(Level::Raid6, 5);
    let data = pattern(8, 200_000);
    r.store.write(3, 0, &data, 0).unwrap();
    r.store.sync(3).unwrap();
    // Member 2 returns a flipped bit on its next three shard reads.
    r.faulty[2].inject(Fault {
        op: Op::Read,
        path: "0000000000000003".into(),
        skip: 0,
        times: 3,
        kind: FaultKind::FlipBit,
    });
    assert_eq!(read_all(&r.store, 3, data.len()).unwrap(), data);
    let c = r.health.counters()[2];
    assert!(
        c.checksum_mismatches >= 1 && c.repaired_blocks >= 1,
        "{c:?}"
    );
    assert_eq!(r.health.state(2), MemberState::Active);
    // Corrupt the shard file itself on disk: detected and rewritten.
    let shard = r.dirs[4].path().join(".raidfs/data/03/0000000000000003");
    let mut bytes = std::fs::read(&shard).unwrap();
    bytes[5000] ^= 0xff;
    std::fs::write(&shard, &bytes).unwrap();
    assert_eq!(read_all(&r.store, 3, data.len()).unwrap(), data);
    // Whether the read hit it (data chunk) or not (parity chunk), a repairing
    // scrub leaves it fixed and counted.
    let files = [(3, data.len() as u64)];
    ops::scrub(
        &r.store,
        files,
        ScrubOptions {
            repair: true,
            ..Default::default()
        },
        &NoProgress,
    )
    .unwrap();
    let c4 = r.health.counters()[4];
    assert!(
        c4.checksum_mismatches >= 1 && c4.repaired_blocks >= 1,
        "{c4:?}"
    );
    let rep = ops::scrub(&r.store, files, ScrubOptions::default(), &NoProgress).unwrap();
    assert_eq!(rep.mismatches, 0, "{rep:?}");
}

#[test]
fn scrub_finds_and_repairs_corrupted_data_and_parity() {
    let r = rig(Level::Raid5(Raid5Layout::LeftSymmetric), 4);
    let data = pattern(9, 500_000);
    r.store.write(4, 0, &data, 0).unwrap();
    r.store.sync(4).unwrap();
    let files = [(4u64, data.len() as u64)];
    assert_eq!(
        ops::scrub(&r.store, files, ScrubOptions::default(), &NoProgress)
            .unwrap()
            .mismatches,
        0
    );
    // One bad block on member 1 in stripe 0 and one on member 2 in stripe 3.
    for (i, st, at) in [(1usize, 0usize, 100usize), (2, 3, 7000)] {
        let p = r.dirs[i].path().join(".raidfs/data/04/0000000000000004");
        let mut b = std::fs::read(&p).unwrap();
        b[st * CHUNK as usize + at] ^= 0x80;
        std::fs::write(&p, &b).unwrap();
    }
    // A parity chunk whose checksum is also rewritten: only the parity check can see it.
    let p = r.dirs[0].path().join(".raidfs/data/04/0000000000000004");
    let s = r.dirs[0]
        .path()
        .join(".raidfs/data/04/0000000000000004.crc");
    let geo = Geometry::new(Level::Raid5(Raid5Layout::LeftSymmetric), 4, CHUNK).unwrap();
    let parity_stripe = (0..20u64)
        .find(|&st| st != 0 && st != 3 && geo.stripe(st + 4).groups[0].redundancy[0] == 0)
        .unwrap();
    let mut b = std::fs::read(&p).unwrap();
    let off = parity_stripe as usize * CHUNK as usize;
    b[off + 10] ^= 0x55;
    std::fs::write(&p, &b).unwrap();
    let mut sums = std::fs::read(&s).unwrap();
    let blk = off / 4096;
    let crc = crc32fast::hash(&b[blk * 4096..blk * 4096 + 4096]) ^ crc32fast::hash(&[0u8; 4096]);
    sums[blk * 4..blk * 4 + 4].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&s, &sums).unwrap();

    let check = ops::scrub(&r.store, files, ScrubOptions::default(), &NoProgress).unwrap();
    assert_eq!(check.mismatches, 2, "{check:?}");
    assert_eq!(check.redundancy_mismatches, 1, "{check:?}");
    assert_eq!(check.unrecoverable, 0);
    let fix = ops::scrub(
        &r.store,
        files,
        ScrubOptions {
            repair: true,
            ..Default::default()
        },
        &NoProgress,
    )
    .unwrap();
    assert_eq!(fix.repaired, 3, "{fix:?}");
    let again = ops::scrub(&r.store, files, ScrubOptions::default(), &NoProgress).unwrap();
    assert_eq!(
        (again.mismatches, again.redundancy_mismatches),
        (0, 0),
        "{again:?}"
    );
    // And the data is right even with a member gone.
    r.faulty[3].vanish();
    r.health.mark_failed(3, "test");
    assert_eq!(read_all(&r.store, 4, data.len()).unwrap(), data);
}

struct StopAfter {
    calls: AtomicU64,
    stop_at: u64,
}

impl Progress for StopAfter {
    fn update(&self, _done: u64, _total: u64) {
        self.calls.fetch_add(1, Ordering::SeqCst);
    }
    fn should_stop(&self) -> bool {
        self.calls.load(Ordering::SeqCst) >= self.stop_at
    }
}

/// Files as (inode, contents).
type Files = Vec<(u64, Vec<u8>)>;

/// Files 20, 21, ... of 120,000 bytes each written, then member 1 vanished
/// and failed: the files, and the (inode, size) list a rebuild takes.
fn files_then_member_1_gone(r: &Rig, count: u64, seed: u64) -> (Files, Vec<(u64, u64)>) {
    let files: Files = (0..count)
        .map(|i| (20 + i, pattern(seed + i, 120_000)))
        .collect();
    for (ino, d) in &files {
        r.store.write(*ino, 0, d, 0).unwrap();
    }
    r.faulty[1].vanish();
    r.health.mark_failed(1, "test");
    let list = files.iter().map(|(i, d)| (*i, d.len() as u64)).collect();
    (files, list)
}

#[test]
fn rebuild_resumes_from_its_checkpoint() {
    let r = rig(Level::Raid6, 5);
    let (files, list) = files_then_member_1_gone(&r, 6, 100);
    let fresh = tempfile::tempdir().unwrap();
    let nm: Arc<dyn Member> = Arc::new(DirMember::open(fresh.path()).unwrap());
    start_target(&r.store, 1, &nm);
    let stop = StopAfter {
        calls: AtomicU64::new(0),
        stop_at: 3,
    };
    let first = ops::rebuild(
        &r.store,
        1,
        nm.clone(),
        list.clone(),
        RebuildOptions::default(),
        &stop,
    )
    .unwrap();
    assert!(!first.complete);
    assert!(matches!(r.health.state(1), MemberState::Rebuilding { .. }));
    // Writes during the rebuild reach the new member too.
    r.store
        .write(20, 0, b"changed during rebuild", 120_000)
        .unwrap();
    let mut expect0 = files[0].1.clone();
    expect0[..22].copy_from_slice(b"changed during rebuild");
    let second = ops::rebuild(
        &r.store,
        1,
        nm,
        list,
        RebuildOptions {
            resume: true,
            ..Default::default()
        },
        &NoProgress,
    )
    .unwrap();
    assert!(second.complete);
    assert!(
        second.files < files.len() as u64,
        "resumed run redid everything: {second:?}"
    );
    assert_eq!(r.health.state(1), MemberState::Active);
    for o in [0, 2] {
        r.faulty[o].vanish();
        r.health.mark_failed(o, "test");
    }
    assert_eq!(read_all(&r.store, 20, 120_000).unwrap(), expect0);
    for (ino, d) in &files[1..] {
        assert_eq!(read_all(&r.store, *ino, d.len()).unwrap(), *d);
    }
}

#[test]
fn a_member_that_vanishes_under_reads_is_failed_and_reads_go_on() {
    let r = rig(Level::Raid5(Raid5Layout::LeftSymmetric), 4);
    let data = pattern(12, 400_000);
    r.store.write(6, 0, &data, 0).unwrap();
    r.store.sync(6).unwrap();
    let events = r.health.subscribe();
    r.faulty[2].vanish();
    assert_eq!(read_all(&r.store, 6, data.len()).unwrap(), data);
    assert_eq!(r.health.state(2), MemberState::Failed);
    assert!(
        events
            .try_iter()
            .any(|e| matches!(e, raid_array::health::HealthEvent::Failed { member: 2, .. }))
    );
    assert!(r.health.counters()[2].read_errors >= 1);
    assert_eq!(read_all(&r.store, 6, data.len()).unwrap(), data);
}

/// Writes a file while the rebuild runs, through the data store.
struct WriteDuringRebuild<'a> {
    store: &'a DataStore,
    written: AtomicU64,
}

impl Progress for WriteDuringRebuild<'_> {
    fn update(&self, _done: u64, _total: u64) {
        if self.written.fetch_add(1, Ordering::SeqCst) == 0 {
            // The rebuild target refuses this file's shard: it fails.
            self.store.write(30, 0, &pattern(7, 100_000), 0).unwrap();
        }
    }
}

/// A rebuild target whose write fails while it is being rebuilt misses
/// that write: it stays failed and the rebuild reports it, rather than the
/// next progress step bringing it back and the end making it active.
#[test]
fn a_rebuild_target_that_fails_midway_stays_failed() {
    let r = rig(Level::Raid5(Raid5Layout::LeftSymmetric), 4);
    let (files, list) = files_then_member_1_gone(&r, 4, 40);
    let fresh = tempfile::tempdir().unwrap();
    let target = FaultyMember::new(Arc::new(DirMember::open(fresh.path()).unwrap()));
    target.inject(Fault::eio(Op::Write, &format!("{:016x}", 30)));
    let nm: Arc<dyn Member> = Arc::new(target);
    start_target(&r.store, 1, &nm);
    let progress = WriteDuringRebuild {
        store: &r.store,
        written: AtomicU64::new(0),
    };
    let e = ops::rebuild(&r.store, 1, nm, list, RebuildOptions::default(), &progress)
        .expect_err("a failed target was made active");
    assert!(e.to_string().contains("failed during the rebuild"), "{e}");
    assert_eq!(r.health.state(1), MemberState::Failed);
    // The surviving members still serve every file.
    for (ino, d) in &files {
        let mut out = vec![0u8; d.len()];
        r.store.read(*ino, 0, &mut out, d.len() as u64).unwrap();
        assert!(out == *d, "file {ino}");
    }
}

/// A write that runs out of space on one member (a full disk, not a broken
/// one) returns ENOSPC and leaves the other members holding their part of
/// it. The rows of the file's bytes in the stripes it touched are resynced
/// at once, needing no new space: nobody is failed, and whichever member
/// fails afterwards, the file is still rebuilt right from the rest.
#[test]
fn a_write_that_runs_out_of_space_on_one_member_leaves_parity_right() {
    let ino = 40;
    // One chunk of data, then an append over four stripes (16 KiB chunks).
    let a = pattern(1, 16 << 10);
    let more = pattern(2, 176 << 10);
    for full in 0..4 {
        let r = rig(Level::Raid5(Raid5Layout::LeftSymmetric), 4);
        r.store.create_shards(ino).unwrap();
        r.store.write(ino, 0, &a, 0).unwrap();
        r.faulty[full].inject(Fault {
            kind: FaultKind::NoSpace,
            ..Fault::eio(Op::Write, &format!("{ino:016x}"))
        });
        let e = r.store.write(ino, 16 << 10, &more, 16 << 10).unwrap_err();
        assert!(matches!(e, ArrayError::NoSpace), "member {full} full: {e}");
        for j in 0..4 {
            assert_eq!(
                r.health.state(j),
                MemberState::Active,
                "member {full} full, {j}"
            );
        }
        for gone in 0..4 {
            r.health.mark_failed(gone, "test");
            let mut out = vec![0u8; a.len()];
            r.store.read(ino, 0, &mut out, a.len() as u64).unwrap();
            assert!(
                out == a,
                "member {full} full, member {gone} gone: wrong bytes"
            );
            r.health.set_state(gone, MemberState::Active);
        }
    }
}

/// A write past the largest file a member's filesystem holds (4 GiB on
/// FAT32, 16 TiB on ext4) is EFBIG for the caller, as on a plain disk: the
/// disk is not broken, so nobody is failed and the file keeps what it held.
#[test]
fn a_write_past_a_members_largest_file_is_efbig_and_fails_nobody() {
    let ino = 41;
    let a = pattern(3, 100 << 10);
    let r = rig(Level::Raid5(Raid5Layout::LeftSymmetric), 4);
    r.store.create_shards(ino).unwrap();
    r.store.write(ino, 0, &a, 0).unwrap();
    for f in &r.faulty {
        f.inject(Fault {
            kind: FaultKind::TooBig { limit: 1 << 20 },
            ..Fault::eio(Op::Write, &format!("{ino:016x}"))
        });
    }
    // Three data chunks per stripe: file offset 8 MiB is past 2.6 MiB of shard.
    let e = r
        .store
        .write(ino, 8 << 20, b"far out", a.len() as u64)
        .unwrap_err();
    assert!(matches!(e, ArrayError::FileTooLarge), "{e}");
    assert_eq!(e.errno(), rustix::io::Errno::FBIG.raw_os_error());
    for j in 0..4 {
        assert_eq!(r.health.state(j), MemberState::Active, "member {j}");
    }
    let mut out = vec![0u8; a.len()];
    r.store.read(ino, 0, &mut out, a.len() as u64).unwrap();
    assert!(out == a, "the file changed");
    // Within the limit, writes go on.
    r.store.write(ino, 0, b"still", a.len() as u64).unwrap();
}

/// Many files settled at once are synced with one `syncfs` per member: after
/// the settle their regions have left the write-intent log and a power cut
/// (crash images holding only durable bytes) keeps every one of them. A file
/// written again after the settle keeps its region.
#[test]
fn files_settled_together_survive_a_power_cut() {
    let r = rig(Level::Raid5(Raid5Layout::LeftSymmetric), 4);
    for f in &r.faulty {
        f.model_sync_only();
    }
    let files: Files = (0..12).map(|i| (50 + i, pattern(60 + i, 30_000))).collect();
    for (ino, d) in &files {
        r.store.create_shards(*ino).unwrap();
        r.store.write(*ino, 0, d, 0).unwrap();
    }
    r.store.settle(std::time::Duration::ZERO).unwrap();
    assert!(r.store.dirty_intent().regions.is_empty());
    r.store.write(50, 0, b"again", 30_000).unwrap();
    assert!(r.store.dirty_intent().regions.iter().any(|&(i, _)| i == 50));
    let images: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    for (f, img) in r.faulty.iter().zip(&images) {
        f.crash_image(img.path(), None).unwrap();
    }
    let members = images
        .iter()
        .map(|d| Some(Arc::new(DirMember::open(d.path()).unwrap()) as Arc<dyn Member>))
        .collect();
    let health = Arc::new(Health::new(vec![MemberState::Active; 4]));
    let geometry = Geometry::new(Level::Raid5(Raid5Layout::LeftSymmetric), 4, CHUNK).unwrap();
    let after = DataStore::new(geometry, members, health).unwrap();
    for (ino, d) in files.iter().skip(1) {
        let mut out = vec![0u8; d.len()];
        after.read(*ino, 0, &mut out, d.len() as u64).unwrap();
        assert!(out == *d, "file {ino} lost its settled data");
    }
}

/// Flip one byte of `ino`'s shard on member `j` at shard offset `at`.
fn corrupt(r: &Rig, j: usize, ino: u64, at: usize) {
    let shard = r.dirs[j]
        .path()
        .join(format!(".raidfs/data/{:02x}/{ino:016x}", ino & 0xff));
    let mut bytes = std::fs::read(&shard).unwrap();
    bytes[at] ^= 0x5a;
    std::fs::write(&shard, &bytes).unwrap();
}

/// Member `j`'s checksum mismatches and repaired blocks.
fn mismatches_and_repairs(r: &Rig, j: usize) -> (u64, u64) {
    let c = r.health.counters()[j];
    (c.checksum_mismatches, c.repaired_blocks)
}

#[test]
fn one_bad_block_is_counted_once_by_a_read_a_write_and_a_rebuild() {
    for (level, n, m) in redundant_levels() {
        let r = rig(level, n);
        let data = pattern(9, 6 * CHUNK as usize);
        r.store.write(5, 0, &data, 0).unwrap();
        r.store.sync(5).unwrap();
        // Member of the first data chunk of the file (stripes rotate by inode).
        let d0 = r.store.geometry().data_member(5, 0).unwrap();
        // A read that meets the bad block.
        corrupt(&r, d0, 5, 100);
        assert_eq!(read_all(&r.store, 5, data.len()).unwrap(), data);
        assert_eq!(
            mismatches_and_repairs(&r, d0),
            (1, 1),
            "{level:?} read: {:?}",
            r.health.counters()[d0]
        );

        // A bit flipped on the way, not on the disk: counted, nothing to repair.
        let d1 = r.store.geometry().data_member(5, 1).unwrap();
        r.faulty[d1].inject(Fault {
            op: Op::Read,
            path: "0000000000000005".into(),
            skip: 0,
            times: 1,
            kind: FaultKind::FlipBit,
        });
        assert_eq!(read_all(&r.store, 5, data.len()).unwrap(), data);
        assert_eq!(
            mismatches_and_repairs(&r, d1),
            (1, 0),
            "{level:?} flipped in transit: {:?}",
            r.health.counters()[d1]
        );

        // A partial-stripe write that must read the bad block's chunk.
        corrupt(&r, d0, 5, 8192 + 7);
        let mut want = data.clone();
        want[9000..9010].copy_from_slice(b"0123456789");
        r.store
            .write(5, 9000, b"0123456789", data.len() as u64)
            .unwrap();
        assert_eq!(
            mismatches_and_repairs(&r, d0),
            (2, 2),
            "{level:?} write: {:?}",
            r.health.counters()[d0]
        );
        assert_eq!(read_all(&r.store, 5, want.len()).unwrap(), want);

        // A rebuild of another slot whose source holds a bad block: it is
        // rebuilt into the new member right, and the source repaired; with
        // one failure tolerated, that block is lost, and counted once.
        corrupt(&r, d0, 5, 3 * 4096 + 1);
        let slot = (d0 + 1) % n;
        r.faulty[slot].vanish();
        r.health.mark_failed(slot, "test");
        let fresh = tempfile::tempdir().unwrap();
        let nm: Arc<dyn Member> = Arc::new(DirMember::open(fresh.path()).unwrap());
        start_target(&r.store, slot, &nm);
        let rep = ops::rebuild(
            &r.store,
            slot,
            nm,
            [(5, want.len() as u64)],
            RebuildOptions::default(),
            &NoProgress,
        )
        .unwrap();
        // With one failure tolerated the block is lost (not repaired).
        let lost = u64::from(m < 2);
        assert!(
            rep.complete && rep.unrecoverable == lost,
            "{level:?}: {rep:?}"
        );
        assert_eq!(
            mismatches_and_repairs(&r, d0),
            (3, 3 - lost),
            "{level:?} rebuild: {:?}",
            r.health.counters()[d0]
        );
        if lost > 0 {
            continue;
        }
        let rep = ops::scrub(
            &r.store,
            [(5, want.len() as u64)],
            ScrubOptions::default(),
            &NoProgress,
        )
        .unwrap();
        assert_eq!(
            rep.mismatches + rep.redundancy_mismatches,
            0,
            "{level:?}: {rep:?}"
        );
        assert_eq!(read_all(&r.store, 5, want.len()).unwrap(), want);
    }
}

/// A sparse file costs a scrub and a rebuild what it holds, not its size:
/// stripes that are holes on every readable member (never written, or
/// punched) are passed over. Before, both read every stripe of a file
/// with data 4 GiB apart and of a file grown to 64 GiB by `truncate` (one
/// grown to a petabyte kept a rebuild from ever restoring redundancy).
/// The data on either side of the holes is still verified and rebuilt.
#[test]
fn scrub_and_rebuild_pass_over_the_holes_of_sparse_files() {
    let r = rig(Level::Raid5(Raid5Layout::LeftSymmetric), 4);
    let head = pattern(41, 100_000);
    let tail = pattern(42, 70_000);
    // 4 GiB, rounded to a whole stripe: the tail starts a stripe's first chunk.
    let far = (4u64 << 30) / (3 * CHUNK as u64) * (3 * CHUNK as u64);
    r.store.write(40, 0, &head, 0).unwrap();
    r.store.write(40, far, &tail, head.len() as u64).unwrap();
    let size = far + tail.len() as u64;
    r.store.write(41, 0, b"tiny", 0).unwrap();
    let grown = 64u64 << 30;
    r.store.sync(40).unwrap();
    r.store.sync(41).unwrap();
    let files = [(40u64, size), (41, grown)];
    let held = (head.len() + tail.len() + 4) as u64;

    let scrub = ops::scrub(&r.store, files, ScrubOptions::default(), &NoProgress).unwrap();
    assert!(scrub.complete, "{scrub:?}");
    assert_eq!(scrub.files, 2, "{scrub:?}");
    assert_eq!((scrub.mismatches, scrub.unrecoverable), (0, 0), "{scrub:?}");
    // Whole steps of stripes around the data, not the gigabytes between.
    assert!(scrub.bytes >= held && scrub.bytes < 64 << 20, "{scrub:?}");
    // A bit flipped in the tail is still found.
    let p = r.dirs[0].path().join(".raidfs/data/28/0000000000000028");
    let member_off = far / (3 * CHUNK as u64) * CHUNK as u64;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&p)
        .unwrap();
    let mut b = [0u8; 1];
    std::os::unix::fs::FileExt::read_at(&f, &mut b, member_off + 5).unwrap();
    std::os::unix::fs::FileExt::write_at(&f, &[b[0] ^ 0x40], member_off + 5).unwrap();
    let check = ops::scrub(&r.store, files, ScrubOptions::default(), &NoProgress).unwrap();
    assert_eq!(check.mismatches, 1, "{check:?}");
    let repair = ScrubOptions {
        repair: true,
        ..Default::default()
    };
    let fix = ops::scrub(&r.store, files, repair, &NoProgress).unwrap();
    assert_eq!(fix.repaired, 1, "{fix:?}");

    r.faulty[1].vanish();
    r.health.mark_failed(1, "test");
    let fresh = tempfile::tempdir().unwrap();
    let nm: Arc<dyn Member> = Arc::new(DirMember::open(fresh.path()).unwrap());
    start_target(&r.store, 1, &nm);
    let rep = ops::rebuild(
        &r.store,
        1,
        nm,
        files.to_vec(),
        RebuildOptions::default(),
        &NoProgress,
    )
    .unwrap();
    assert!(rep.complete && rep.unrecoverable == 0, "{rep:?}");
    assert!(rep.bytes < 64 << 20, "{rep:?}");
    assert_eq!(r.health.state(1), MemberState::Active);
    // The rebuilt member carries its part: another member gone, all reads back.
    r.faulty[2].vanish();
    r.health.mark_failed(2, "test");
    let mut got = vec![0u8; head.len()];
    r.store.read(40, 0, &mut got, size).unwrap();
    assert_eq!(got, head);
    let mut got = vec![0u8; tail.len()];
    r.store.read(40, far, &mut got, size).unwrap();
    assert_eq!(got, tail);
    let mut got = vec![0xffu8; 65536];
    r.store.read(40, far / 2, &mut got, size).unwrap();
    assert!(got.iter().all(|&x| x == 0));
    let mut got = [0u8; 4];
    r.store.read(41, 0, &mut got, grown).unwrap();
    assert_eq!(&got, b"tiny");
}

/// After a crash whose write-intent log cannot be trusted (so every file is
/// checked), the resync passes over the holes of sparse files: a file with
/// data 4 GiB apart and one grown to 64 GiB by `truncate` cost the stripes
/// they hold. Before, it checked every stripe of both (about 1.5 million),
/// and a file grown to a petabyte kept the array from ever assembling.
#[test]
fn a_resync_of_every_file_passes_over_the_holes_of_sparse_files() {
    let level = Level::Raid5(Raid5Layout::LeftSymmetric);
    let r = rig(level, 4);
    let head = pattern(51, 50_000);
    let far = (4u64 << 30) / (3 * CHUNK as u64) * (3 * CHUNK as u64);
    r.store.write(50, 0, &head, 0).unwrap();
    r.store.write(50, far, b"tail", head.len() as u64).unwrap();
    r.store.write(51, 0, b"tiny", 0).unwrap();
    r.store.sync(50).unwrap();
    r.store.sync(51).unwrap();
    let files = [(50u64, far + 4), (51, 64u64 << 30)];
    // The crash: one member's log unreadable, the store opened again.
    std::fs::write(r.dirs[2].path().join(".raidfs/intent"), vec![0x5a; 4096]).unwrap();
    let members = r
        .dirs
        .iter()
        .map(|d| Some(Arc::new(DirMember::open(d.path()).unwrap()) as Arc<dyn Member>))
        .collect();
    let health = Arc::new(Health::new(vec![MemberState::Active; 4]));
    let store = DataStore::new(Geometry::new(level, 4, CHUNK).unwrap(), members, health).unwrap();
    assert!(store.dirty_intent().overflow);
    let rep = ops::resync(&store, files).unwrap();
    // The stripes holding data, and the regions the log named before the
    // crash (64 stripes each, checked whole); not the 1.5 million between.
    assert!(rep.stripes > 0 && rep.stripes < 2048, "{rep:?}");
    assert_eq!(rep.unrecoverable, 0, "{rep:?}");
    assert_eq!(read_all(&store, 50, head.len()).unwrap(), head);
    let mut got = [0u8; 4];
    store.read(50, far, &mut got, far + 4).unwrap();
    assert_eq!(&got, b"tail");
    store.read(51, 0, &mut got, 4).unwrap();
    assert_eq!(&got, b"tiny");
}
