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

/// Chunk of the read-only tests; RAID-5 of 3 and RAID-6 of 4 both hold two
/// data chunks per stripe.
const RO_CHUNK: usize = 4096;
/// Stripes per write-intent region (`REGION_SHIFT`).
const REGION_STRIPES: usize = 64;

/// A file `x` of `old` bytes, fsynced on a clean array of `n` members,
/// an image of every member taken, then `new` written at `at` and the array
/// crashed (dropped without close), leaving that region dirty. Returns the
/// member dirs, images and `x`.
fn crash_during_rewrite(
    root: &Path,
    level: Level,
    n: usize,
    old: &[u8],
    at: u64,
    new: &[u8],
) -> (Vec<PathBuf>, Vec<PathBuf>, u64) {
    let dirs = common::make_dirs(root, "m", n);
    let mut o = CreateOptions::new("ro", level, dirs.clone());
    o.allow_same_fs = true;
    o.chunk_size = RO_CHUNK as u32;
    let a = Array::create(&o).unwrap();
    let x = a.create_file(ROOT_INO, os("x"), 0o644, 0, 0).unwrap().ino;
    a.write(x, 0, old).unwrap();
    a.fsync(x, false).unwrap();
    a.release(x).unwrap();
    a.close().unwrap();
    let imgs: Vec<PathBuf> = (0..n).map(|i| root.join(format!("img{i}"))).collect();
    for (d, i) in dirs.iter().zip(&imgs) {
        common::copy_tree(d, i);
    }
    let a = Array::assemble(&AssembleOptions::new(dirs.clone())).unwrap();
    a.write(x, at, new).unwrap();
    drop(a); // the crash
    (dirs, imgs, x)
}

/// The member holding the first chunk of `x`'s shard equal to `want`.
fn holding(dirs: &[PathBuf], x: u64, want: &[u8]) -> usize {
    (0..dirs.len())
        .find(|&i| std::fs::read(shard_of(&dirs[i], x)).unwrap()[..RO_CHUNK] == *want)
        .expect("no member holds the chunk")
}

/// Assemble `dirs` without member `gone` by force, read-only or not.
fn assemble_without(dirs: &[PathBuf], gone: usize, read_only: bool) -> Array {
    let rest: Vec<PathBuf> = (0..dirs.len())
        .filter(|&i| i != gone)
        .map(|i| dirs[i].clone())
        .collect();
    let mut o = AssembleOptions::new(rest);
    o.read_only = read_only;
    o.force = true;
    Array::assemble(&o).unwrap()
}

/// The write hole, degraded (RAID-5 of 3): D1 of stripe 0 rewritten, the
/// parity write lost in the crash, and the member holding the untouched D0
/// gone. Rebuilt from the stale parity, D0 would be bytes nobody wrote. A
/// read-write assembly's resync cannot confirm the parity and poisons it;
/// a read-only one (`mount -o ro,force`, `raidfs extract`) does not resync
/// and must read it as the resync would have left it: EIO. The rest of the
/// dirty region reads as written, the next region (not dirty) as before,
/// and the read-only assembly writes nothing.
#[test]
fn a_degraded_read_only_assembly_after_a_crash_reads_eio_not_write_hole_bytes() {
    let sdb = 2 * RO_CHUNK;
    for read_only in [true, false] {
        let tmp = tempfile::tempdir().unwrap();
        let old = pattern(1, 2 * REGION_STRIPES * sdb);
        let new = pattern(2, RO_CHUNK);
        let level = Level::Raid5(Default::default());
        let (dirs, imgs, x) =
            crash_during_rewrite(tmp.path(), level, 3, &old, RO_CHUNK as u64, &new);
        let d0 = holding(&imgs, x, &old[..RO_CHUNK]);
        let d1 = holding(&dirs, x, &new);
        let p = (0..3).find(|&i| i != d0 && i != d1).unwrap();
        // The parity never landed: old bytes, old checksums.
        std::fs::copy(shard_of(&imgs[p], x), shard_of(&dirs[p], x)).unwrap();
        std::fs::copy(sums_of(&imgs[p], x), sums_of(&dirs[p], x)).unwrap();
        let parity = std::fs::read(shard_of(&dirs[p], x)).unwrap();
        let a = assemble_without(&dirs, d0, read_only);
        let got = a.read(x, 0, RO_CHUNK);
        assert!(
            got.is_err(),
            "read_only {read_only}: D0 read back as {:?}",
            got.map(|b| b[..8].to_vec())
        );
        assert!(a.read(x, RO_CHUNK as u64, RO_CHUNK).unwrap() == new);
        // Stripes of the dirty region whose chunks were not written: the
        // resync poisons the missing member's chunks of those too when it
        // cannot confirm them, but here their parity agrees.
        let next = REGION_STRIPES * sdb;
        let got = a.read(x, next as u64, old.len() - next).unwrap();
        assert!(
            got == old[next..],
            "read_only {read_only}: the clean region differs"
        );
        if read_only {
            let now = std::fs::read(shard_of(&dirs[p], x)).unwrap();
            assert!(now == parity, "a read-only assembly wrote to a member");
        }
        a.close().unwrap();
    }
}

/// RAID-6 of 4, the member holding D0 of a dirty stripe gone: D0 is rebuilt
/// from one parity row and the other one, not needed for the rebuild,
/// confirms it. A read-only assembly serves it as the resync would have
/// trusted it; with one parity row left stale by the crash, that row
/// disagrees and D0 reads EIO.
#[test]
fn a_read_only_assembly_serves_a_dirty_rebuild_the_spare_parity_confirms() {
    for stale in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let old = pattern(1, 2 * RO_CHUNK);
        let new = pattern(2, RO_CHUNK);
        let (dirs, imgs, x) =
            crash_during_rewrite(tmp.path(), Level::Raid6, 4, &old, RO_CHUNK as u64, &new);
        let d0 = holding(&imgs, x, &old[..RO_CHUNK]);
        let d1 = holding(&dirs, x, &new);
        if stale {
            let p = (0..4).find(|&i| i != d0 && i != d1).unwrap();
            std::fs::copy(shard_of(&imgs[p], x), shard_of(&dirs[p], x)).unwrap();
            std::fs::copy(sums_of(&imgs[p], x), sums_of(&dirs[p], x)).unwrap();
        }
        let a = assemble_without(&dirs, d0, true);
        match a.read(x, 0, RO_CHUNK) {
            Ok(got) => {
                assert!(!stale, "D0 rebuilt from a stale parity row was served");
                assert!(got == old[..RO_CHUNK], "D0 read back as invented bytes");
            }
            Err(e) => assert!(stale, "D0 unreadable though both parity rows agree: {e}"),
        }
        assert!(a.read(x, RO_CHUNK as u64, RO_CHUNK).unwrap() == new);
        a.close().unwrap();
    }
}

/// A read-only assembly of a cleanly stopped array rebuilds the missing
/// member's chunks from parity as always: nothing is dirty.
#[test]
fn a_read_only_assembly_of_a_clean_array_reads_degraded() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = common::make_dirs(tmp.path(), "m", 3);
    let mut o = CreateOptions::new("ro", Level::Raid5(Default::default()), dirs.clone());
    o.allow_same_fs = true;
    o.chunk_size = RO_CHUNK as u32;
    let a = Array::create(&o).unwrap();
    let old = pattern(1, 16 * RO_CHUNK + 100);
    let x = a.create_file(ROOT_INO, os("x"), 0o644, 0, 0).unwrap().ino;
    a.write(x, 0, &old).unwrap();
    a.release(x).unwrap();
    a.close().unwrap();
    for gone in 0..3 {
        let a = assemble_without(&dirs, gone, true);
        assert!(
            a.read(x, 0, old.len()).unwrap() == old,
            "without member {gone}"
        );
        assert!(a.read(x, 5000, 3000).unwrap() == old[5000..8000]);
        a.close().unwrap();
    }
}
