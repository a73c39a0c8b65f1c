//! The write-intent log names only regions somebody was writing: after a
//! crash of a degraded array, the resync cannot confirm a dirty stripe and
//! makes its missing chunks unreadable, so files nobody was writing must
//! not be in the log — neither through marks ahead of a writer nor through
//! writes that settled long before the crash. Within a region being
//! written, every stripe counts as dirty, written or not.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use raid_array::{Array, AssembleOptions, CreateOptions, ROOT_INO};
use raid_core::Level;

mod common;
use common::pattern;

const FILES: usize = 40;
const SIZE: usize = 50_000;

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

fn raid5(root: &Path) -> (Vec<PathBuf>, Array) {
    let dirs: Vec<PathBuf> = (0..4)
        .map(|i| {
            let d = root.join(format!("d{i}"));
            std::fs::create_dir(&d).unwrap();
            d
        })
        .collect();
    let mut o = CreateOptions::new("intent", Level::Raid5(Default::default()), dirs.clone());
    o.allow_same_fs = true;
    o.chunk_size = 4096;
    let a = Array::create(&o).unwrap();
    (dirs, a)
}

/// Files f00..f39 of SIZE bytes each, every one fsynced and closed.
fn write_files(a: &Array) -> Vec<u64> {
    (0..FILES)
        .map(|i| {
            let ino = a
                .create_file(ROOT_INO, os(&format!("f{i:02}")), 0o644, 0, 0)
                .unwrap()
                .ino;
            a.write(ino, 0, &pattern(i as u64, SIZE)).unwrap();
            a.fsync(ino, false).unwrap();
            a.release(ino).unwrap();
            ino
        })
        .collect()
}

/// Files f00..f39 written and closed without fsync, as `cp` leaves them.
fn write_unsynced(a: &Array) {
    for i in 0..FILES {
        let ino = a
            .create_file(ROOT_INO, os(&format!("f{i:02}")), 0o644, 0, 0)
            .unwrap()
            .ino;
        a.write(ino, 0, &pattern(i as u64, SIZE)).unwrap();
        a.release(ino).unwrap();
    }
}

/// Crash (no close), lose member `gone`, assemble the rest by force and
/// resync as the mount does; returns the array.
fn crash_and_assemble_without(a: Array, dirs: &[PathBuf], gone: usize) -> Array {
    drop(a);
    let away = dirs[gone].with_extension("gone");
    std::fs::rename(&dirs[gone], &away).unwrap();
    let rest: Vec<PathBuf> = dirs
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != gone)
        .map(|(_, d)| d.clone())
        .collect();
    let mut o = AssembleOptions::new(rest);
    o.force = true;
    let a = Array::assemble(&o).unwrap();
    a.resync().unwrap();
    a
}

fn assert_intact(a: &Array, skip: &[usize]) {
    for i in (0..FILES).filter(|i| !skip.contains(i)) {
        let ino = a.lookup(ROOT_INO, os(&format!("f{i:02}"))).unwrap().ino;
        let got = a
            .read(ino, 0, SIZE)
            .unwrap_or_else(|e| panic!("f{i:02} unreadable after a degraded crash: {e}"));
        assert!(got == pattern(i as u64, SIZE), "f{i:02} differs");
    }
}

#[test]
fn marks_ahead_of_an_in_place_rewrite_spare_the_following_files() {
    let tmp = tempfile::tempdir().unwrap();
    let (dirs, a) = raid5(tmp.path());
    write_files(&a);
    // Everything synced: the log on the members is clean.
    a.data().settle(Duration::ZERO).unwrap();
    assert!(a.data().dirty_intent().regions.is_empty());
    // Rewrite the start of the first file in place, then crash before any
    // sync. Its own region is rightly dirty; the files numbered after it
    // exist and must not have been marked ahead.
    let ino = a.lookup(ROOT_INO, os("f00")).unwrap().ino;
    a.write(ino, 0, &pattern(99, 8192)).unwrap();
    let a = crash_and_assemble_without(a, &dirs, 0);
    assert_intact(&a, &[0]);
    a.close().unwrap();
}

#[test]
fn writes_that_settled_before_a_degraded_crash_stay_readable() {
    let tmp = tempfile::tempdir().unwrap();
    let (dirs, a) = raid5(tmp.path());
    // Written without fsync (as cp does), then left alone: the mount's
    // periodic settle syncs them and clears their marks.
    write_unsynced(&a);
    assert!(!a.data().dirty_intent().regions.is_empty());
    // Not idle yet: a settle with the mount's idle time keeps them.
    a.settle_data().unwrap();
    assert!(!a.data().dirty_intent().regions.is_empty());
    a.data().settle(Duration::ZERO).unwrap();
    assert!(a.data().dirty_intent().regions.is_empty());
    a.sync_metadata().unwrap();
    let a = crash_and_assemble_without(a, &dirs, 2);
    assert_intact(&a, &[]);
    a.close().unwrap();
}

#[test]
fn a_member_failure_settles_the_log_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (dirs, a) = raid5(tmp.path());
    write_unsynced(&a);
    a.sync_metadata().unwrap();
    assert!(!a.data().dirty_intent().regions.is_empty());
    // Degraded from now on: the engine syncs what is dirty without waiting
    // for the idle time.
    a.fail(1).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !a.data().dirty_intent().regions.is_empty() {
        assert!(
            Instant::now() < deadline,
            "dirty regions stay after a failure"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The shrunk log reaches the members with the next write of it; a
    // crash right after the settle finds it there.
    let a = crash_and_assemble_without(a, &dirs, 1);
    assert_intact(&a, &[]);
    a.close().unwrap();
}

/// What a degraded crash costs an in-place rewrite (docs/SEMANTICS.md,
/// item 16): the log dirties the whole region (64 stripes) around the
/// write, so the missing member's data chunks anywhere in that region may
/// read EIO — never wrong bytes — while the file's other regions, and the
/// chunks of the members still there, stay intact.
#[test]
fn a_degraded_crash_after_an_in_place_rewrite_loses_at_most_its_region() {
    const STRIPE: usize = 3 * 4096;
    const REGION: usize = 64 * STRIPE;
    let tmp = tempfile::tempdir().unwrap();
    let (dirs, a) = raid5(tmp.path());
    let ino = a.create_file(ROOT_INO, os("big"), 0o644, 0, 0).unwrap().ino;
    let mut want = pattern(7, 3 * REGION);
    a.write(ino, 0, &want).unwrap();
    a.fsync(ino, false).unwrap();
    a.data().settle(Duration::ZERO).unwrap();
    assert!(a.data().dirty_intent().regions.is_empty());
    // 4 KiB rewritten in place at the start of the middle region, then a
    // crash before it settles, and member 1 is gone.
    let new = pattern(9, 4096);
    a.write(ino, REGION as u64, &new).unwrap();
    want[REGION..REGION + 4096].copy_from_slice(&new);
    a.sync_metadata().unwrap();
    let a = crash_and_assemble_without(a, &dirs, 1);
    let mut lost = 0;
    for off in (0..3 * REGION).step_by(4096) {
        match a.read(ino, off as u64, 4096) {
            Ok(got) => assert!(got == want[off..off + 4096], "block at {off} differs"),
            Err(e) => {
                assert!(
                    (REGION..2 * REGION).contains(&off),
                    "block at {off}, outside the rewritten region, unreadable: {e}"
                );
                assert!(off != REGION, "the rewritten block itself is unreadable");
                lost += 1;
            }
        }
    }
    // At most the missing member's data chunks of one region (it holds
    // parity in a quarter of the stripes).
    assert!(lost <= 48, "{lost} blocks lost");
    a.close().unwrap();
}

#[test]
fn fsynced_files_stay_readable_after_a_crash_and_the_loss_of_a_member() {
    let tmp = tempfile::tempdir().unwrap();
    let (dirs, a) = raid5(tmp.path());
    // Every file fsynced and the crash right after, with no settle between
    // (the mount's comes once a second): fsync itself must have taken them
    // out of the log on the members, or the resync of the degraded array
    // reads their chunks of the lost member as EIO.
    write_files(&a);
    let a = crash_and_assemble_without(a, &dirs, 2);
    assert_intact(&a, &[]);
    a.close().unwrap();
}

#[test]
fn files_fsynced_on_a_degraded_array_stay_readable_after_a_crash() {
    let tmp = tempfile::tempdir().unwrap();
    let (dirs, a) = raid5(tmp.path());
    a.fail(1).unwrap();
    write_files(&a);
    let a = crash_and_assemble_without(a, &dirs, 1);
    assert_intact(&a, &[]);
    a.close().unwrap();
}

/// Chunk of the torn-write tests: four 4 KiB rows per chunk.
const ROWS_CHUNK: usize = 16384;

fn shard_of(dir: &Path, ino: u64) -> PathBuf {
    dir.join(format!(".raidfs/data/{:02x}/{:016x}", ino & 0xff, ino))
}

fn sums_of(dir: &Path, ino: u64) -> PathBuf {
    dir.join(format!(".raidfs/data/{:02x}/{:016x}.crc", ino & 0xff, ino))
}

/// A full-stripe write torn by a crash (RAID-5 of 3, chunks of four rows):
/// D0 landed, D1 landed except the bytes of its last row (that row's
/// checksum entry did land), the parity did not land. The resync finds D1's
/// last row without a consistent version; the parity of the other rows must
/// still be recomputed from their data, which landed: when D0's member
/// fails later, D0 is rebuilt from D1 and that parity, and must come back
/// as written, never as bytes nobody wrote.
#[test]
fn resync_recomputes_the_parity_of_every_row_beside_a_lost_block() {
    for torn in [true, false] {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = common::make_dirs(tmp.path(), "m", 3);
        let mut o = CreateOptions::new("rows", Level::Raid5(Default::default()), dirs.clone());
        o.allow_same_fs = true;
        o.chunk_size = ROWS_CHUNK as u32;
        let a = Array::create(&o).unwrap();
        let old = pattern(1, 2 * ROWS_CHUNK);
        let x = a.create_file(ROOT_INO, os("x"), 0o644, 0, 0).unwrap().ino;
        a.write(x, 0, &old).unwrap();
        a.fsync(x, false).unwrap();
        a.release(x).unwrap();
        a.close().unwrap();
        let imgs: Vec<PathBuf> = (0..3).map(|i| tmp.path().join(format!("img{i}"))).collect();
        for (d, i) in dirs.iter().zip(&imgs) {
            common::copy_tree(d, i);
        }
        let a = Array::assemble(&AssembleOptions::new(dirs.clone())).unwrap();
        let new = pattern(2, 2 * ROWS_CHUNK);
        a.write(x, 0, &new).unwrap();
        drop(a); // the crash
        let role = |i: usize| {
            let now = std::fs::read(shard_of(&dirs[i], x)).unwrap();
            if now[..ROWS_CHUNK] == new[..ROWS_CHUNK] {
                0
            } else if now[..ROWS_CHUNK] == new[ROWS_CHUNK..] {
                1
            } else {
                2
            }
        };
        let by_role: Vec<usize> = (0..3)
            .map(|r| (0..3).find(|&i| role(i) == r).unwrap())
            .collect();
        let (d0, d1, p) = (by_role[0], by_role[1], by_role[2]);
        // The parity never landed: old bytes, old checksums.
        std::fs::copy(shard_of(&imgs[p], x), shard_of(&dirs[p], x)).unwrap();
        std::fs::copy(sums_of(&imgs[p], x), sums_of(&dirs[p], x)).unwrap();
        if torn {
            // D1's last row: old bytes under the new checksum entry.
            let mut b = std::fs::read(shard_of(&dirs[d1], x)).unwrap();
            let r = 3 * 4096..ROWS_CHUNK;
            b[r.clone()].copy_from_slice(&old[ROWS_CHUNK + r.start..ROWS_CHUNK + r.end]);
            std::fs::write(shard_of(&dirs[d1], x), &b).unwrap();
        }
        // Dirty and whole: the assembly resyncs.
        let a = Array::assemble(&AssembleOptions::new(dirs.clone())).unwrap();
        assert!(a.read(x, 0, ROWS_CHUNK).unwrap() == new[..ROWS_CHUNK]);
        let last = a.read(x, (ROWS_CHUNK + 3 * 4096) as u64, 4096);
        assert_eq!(last.is_err(), torn, "D1's last row: {last:?}");
        a.fail(d0).unwrap();
        for row in 0..4 {
            let r = row * 4096..(row + 1) * 4096;
            match a.read(x, r.start as u64, 4096) {
                Ok(got) => assert!(got == new[r], "row {row} of D0 read back as invented bytes"),
                // Rebuilt from D1's lost block: nothing to rebuild from.
                Err(_) if torn && row == 3 => {}
                Err(e) => panic!("row {row} of D0 unreadable (torn {torn}): {e}"),
            }
        }
    }
}
