//! Punching a hole (`fallocate(PUNCH_HOLE | KEEP_SIZE)`): the range reads
//! as zeros at once, after a remount and with a member missing; the whole
//! stripes in it give their space back on every member; parity stays
//! consistent (a scrub finds nothing); and where a member cannot punch, the
//! same result comes from zeros written.

use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use raid_array::ops::{NoProgress, ScrubOptions};
use raid_array::{Array, AssembleOptions, CreateOptions, ROOT_INO};
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
    a.punch_hole(ino, HOLE.0 as u64, (HOLE.1 - HOLE.0) as u64)
        .unwrap();
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
    for gone in 0..dirs.len() {
        let rest: Vec<PathBuf> = (0..dirs.len())
            .filter(|&i| i != gone)
            .map(|i| dirs[i].clone())
            .collect();
        // Read-only: nothing is recorded, so the next round has them all.
        let mut o = AssembleOptions::new(rest);
        o.read_only = true;
        let a = Array::assemble(&o).unwrap();
        assert!(
            a.read(ino, 0, SIZE).unwrap() == expected(),
            "without {gone}"
        );
        a.close().unwrap();
    }
}

#[test]
fn members_that_cannot_punch_get_zeros_written() {
    let tmp = tempfile::tempdir().unwrap();
    let (dirs, a) = raid5(tmp.path());
    let ino = file(&a);
    a.close().unwrap();
    // The fault-injecting wrapper has no hole punching, as FAT has none.
    let (a, _faulty) = assemble_faulty(&dirs);
    a.punch_hole(ino, HOLE.0 as u64, (HOLE.1 - HOLE.0) as u64)
        .unwrap();
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
