//! Punching a hole (`fallocate(PUNCH_HOLE | KEEP_SIZE)`): the range reads
//! as zeros at once, after a remount and with a member missing; the whole
//! stripes in it give their space back on every member; parity stays
//! consistent (a scrub finds nothing); where a member cannot punch, the
//! same result comes from zeros written; a member out of space for it
//! gives ENOSPC and stays in, one that fails it is failed; and a punch made
//! while a member is missing survives that member's return.

use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use raid_array::health::MemberState;
use raid_array::member::faulty::{Fault, FaultKind, Op};
use raid_array::ops::{NoProgress, ScrubOptions};
use raid_array::{Array, ArrayError, AssembleOptions, CreateOptions, ROOT_INO};
use raid_core::Level;

mod common;
use common::{assemble_faulty, make_dirs, pattern};

const SIZE: usize = 1 << 20;
const HOLE: (usize, usize) = (5_000, 900_000);

fn raid5(root: &Path) -> (Vec<PathBuf>, Array) {
    let dirs = make_dirs(root, "m", 4);
    let mut o = CreateOptions::new("punch", Level::Raid5(Default::default()), dirs.clone());
    o.allow_same_fs = true;
    o.chunk_size = 4096;
    (dirs.clone(), Array::create(&o).unwrap())
}

/// A file of SIZE bytes, synced; its inode.
fn file(a: &Array) -> u64 {
    let ino = a
        .create_file(ROOT_INO, OsStr::new("f"), 0o644, 0, 0)
        .unwrap()
        .ino;
    a.write(ino, 0, &pattern(1, SIZE)).unwrap();
    a.fsync(ino, false).unwrap();
    ino
}

/// Punch HOLE out of `ino`.
fn punch(a: &Array, ino: u64) -> raid_array::Result<()> {
    a.punch_hole(ino, HOLE.0 as u64, (HOLE.1 - HOLE.0) as u64)
}

fn expected() -> Vec<u8> {
    let mut want = pattern(1, SIZE);
    want[HOLE.0..HOLE.1].fill(0);
    want
}

/// Bytes allocated to `ino`'s shards on every member.
fn allocated(dirs: &[PathBuf], ino: u64) -> u64 {
    let shard = format!(".raidfs/data/{:02x}/{:016x}", ino & 0xff, ino);
    dirs.iter()
        .map(|d| std::fs::metadata(d.join(&shard)).unwrap().blocks() * 512)
        .sum()
}

fn check(a: &Array, ino: u64) {
    assert_eq!(a.getattr(ino).unwrap().size, SIZE as u64);
    assert!(
        a.read(ino, 0, SIZE).unwrap() == expected(),
        "contents differ"
    );
    let rep = a.scrub(ScrubOptions::default(), &NoProgress).unwrap();
    assert!(
        rep.complete && rep.mismatches == 0 && rep.redundancy_mismatches == 0,
        "{rep:?}"
    );
}

#[test]
fn a_punched_range_reads_as_zeros_and_gives_its_space_back() {
    let tmp = tempfile::tempdir().unwrap();
    let (dirs, a) = raid5(tmp.path());
    let ino = file(&a);
    let before = allocated(&dirs, ino);
    punch(&a, ino).unwrap();
    check(&a, ino);
    a.fsync(ino, false).unwrap();
    let after = allocated(&dirs, ino);
    // 73 whole stripes of 12 KiB, 16 KiB of them on each member.
    assert!(
        after + 1_000_000 < before,
        "allocated {before} bytes before, {after} after"
    );
    a.close().unwrap();
    let a = Array::assemble(&AssembleOptions::new(dirs.clone())).unwrap();
    check(&a, ino);
    a.close().unwrap();
    // Each member missing in turn: the rest rebuild the same bytes.
    same_without_each_member(&dirs, ino, &expected());
}

#[test]
fn members_that_cannot_punch_get_zeros_written() {
    let tmp = tempfile::tempdir().unwrap();
    let (dirs, a) = raid5(tmp.path());
    let ino = file(&a);
    a.close().unwrap();
    // As on FAT, which has no hole punching.
    let (a, faulty) = assemble_faulty(&dirs);
    for f in &faulty {
        f.inject(refuse(Op::Punch, FaultKind::Unsupported));
    }
    punch(&a, ino).unwrap();
    check(&a, ino);
    a.close().unwrap();
}

#[test]
fn a_hole_past_the_end_or_in_a_small_file_changes_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    let (_dirs, a) = raid5(tmp.path());
    let small = a
        .create_file(ROOT_INO, OsStr::new("s"), 0o644, 0, 0)
        .unwrap()
        .ino;
    a.write(small, 0, b"0123456789").unwrap();
    a.punch_hole(small, 2, 3).unwrap();
    a.punch_hole(small, 100, 1 << 30).unwrap();
    assert_eq!(a.read(small, 0, 100).unwrap(), b"01\0\0\x0056789");
    assert_eq!(a.getattr(small).unwrap().size, 10);
    let big = file(&a);
    a.punch_hole(big, SIZE as u64, 1 << 20).unwrap();
    a.punch_hole(big, HOLE.0 as u64, u64::MAX).unwrap();
    let mut want = pattern(1, SIZE);
    want[HOLE.0..].fill(0);
    assert!(a.read(big, 0, SIZE).unwrap() == want);
    assert_eq!(a.getattr(big).unwrap().size, SIZE as u64);
    a.close().unwrap();
}

/// `kind` on every `op` of a member's data shards (not its metadata).
fn refuse(op: Op, kind: FaultKind) -> Fault {
    Fault {
        kind,
        ..Fault::eio(op, ".raidfs/data/")
    }
}

/// The same bytes with each member missing in turn: the redundancy agrees
/// with the data.
fn same_without_each_member(dirs: &[PathBuf], ino: u64, want: &[u8]) {
    for gone in 0..dirs.len() {
        let rest: Vec<PathBuf> = (0..dirs.len())
            .filter(|&i| i != gone)
            .map(|i| dirs[i].clone())
            .collect();
        // Read-only: nothing is recorded, so the next round has them all.
        let mut o = AssembleOptions::new(rest);
        o.read_only = true;
        let a = Array::assemble(&o).unwrap();
        assert!(a.read(ino, 0, SIZE).unwrap() == want, "without {gone}");
        a.close().unwrap();
    }
}

#[test]
fn a_member_out_of_space_for_a_punch_gives_enospc_and_fails_nobody() {
    let tmp = tempfile::tempdir().unwrap();
    let (dirs, a) = raid5(tmp.path());
    let ino = file(&a);
    a.close().unwrap();
    // Splitting an extent on a full XFS or btrfs needs space.
    let (a, faulty) = assemble_faulty(&dirs);
    faulty[1].inject(refuse(Op::Punch, FaultKind::NoSpace));
    let r = punch(&a, ino);
    assert!(matches!(r, Err(ArrayError::NoSpace)), "{r:?}");
    let st = a.status();
    assert!(!st.degraded, "{:?}", st.members);
    // Outside the whole stripes nothing changed; inside, each byte is the
    // old one or zero (a punch cut short, like ext4's), and the parity
    // agrees with whatever the members hold.
    let got = a.read(ino, 0, SIZE).unwrap();
    let old = pattern(1, SIZE);
    for (i, (&g, &o)) in got.iter().zip(&old).enumerate() {
        assert!(
            g == o || (g == 0 && (HOLE.0..HOLE.1).contains(&i)),
            "byte {i}"
        );
    }
    let rep = a.scrub(ScrubOptions::default(), &NoProgress).unwrap();
    assert!(
        rep.mismatches == 0 && rep.redundancy_mismatches == 0,
        "{rep:?}"
    );
    // The member has room again: the same punch goes through.
    faulty[1].clear_faults();
    punch(&a, ino).unwrap();
    check(&a, ino);
    a.close().unwrap();
    same_without_each_member(&dirs, ino, &expected());
}

#[test]
fn a_member_failing_a_punch_is_failed_and_the_hole_reads_as_zeros() {
    let tmp = tempfile::tempdir().unwrap();
    let (dirs, a) = raid5(tmp.path());
    let ino = file(&a);
    a.close().unwrap();
    let (a, faulty) = assemble_faulty(&dirs);
    faulty[2].inject(refuse(Op::Punch, FaultKind::Eio));
    punch(&a, ino).unwrap();
    assert_eq!(a.status().members[2].state, MemberState::Failed);
    assert!(a.read(ino, 0, SIZE).unwrap() == expected());
    a.close().unwrap();
    // Rebuilt onto a fresh directory: the hole is zeros there too.
    std::fs::remove_dir_all(&dirs[2]).unwrap();
    std::fs::create_dir(&dirs[2]).unwrap();
    let rest = [dirs[0].clone(), dirs[1].clone(), dirs[3].clone()];
    let a = Array::assemble(&AssembleOptions::new(rest.to_vec())).unwrap();
    let rep = a
        .replace(2, &dirs[2], Default::default(), &NoProgress)
        .unwrap();
    assert!(rep.complete && rep.unrecoverable == 0, "{rep:?}");
    check(&a, ino);
    a.close().unwrap();
    same_without_each_member(&dirs, ino, &expected());
}

#[test]
fn a_punch_on_a_degraded_array_survives_the_rebuild() {
    let tmp = tempfile::tempdir().unwrap();
    let (dirs, a) = raid5(tmp.path());
    let ino = file(&a);
    a.close().unwrap();
    let a = Array::assemble(&AssembleOptions::new(dirs[..3].to_vec())).unwrap();
    assert!(a.status().degraded);
    punch(&a, ino).unwrap();
    assert!(a.read(ino, 0, SIZE).unwrap() == expected());
    a.close().unwrap();
    // The missing member comes back and is brought up to date (a re-add,
    // or a rebuild): the old bytes it held in the hole must not return.
    let a = Array::assemble(&AssembleOptions::new(dirs[..3].to_vec())).unwrap();
    let rep = a
        .replace(3, &dirs[3], Default::default(), &NoProgress)
        .unwrap();
    assert!(rep.complete && rep.unrecoverable == 0, "{rep:?}");
    check(&a, ino);
    a.close().unwrap();
    same_without_each_member(&dirs, ino, &expected());
}
