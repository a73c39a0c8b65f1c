//! Re-add: a member that left in sync comes back and only the files
//! changed since are rebuilt on it. The property that makes this safe: a
//! file whose data changed on the other members while it was out is in the
//! stale set the members hold, whenever the power fails. Checked by cutting
//! the power at every mutating member call of a degraded workload: after
//! the crash, the re-add (rebuilding only the files in the recorded set)
//! must leave the member so that reads served from it return exactly what
//! the degraded array returned.

use std::sync::Arc;

use raid_array::data::DataStore;
use raid_array::health::{Health, MemberState};
use raid_array::member::faulty::{Fault, FaultKind, FaultyMember, Op, Power};
use raid_array::member::{DirMember, Member};
use raid_array::ops::{self, NoProgress, RebuildOptions};
use raid_core::Geometry;
use raid_core::layout::{Level, Raid5Layout};

mod common;
use common::scratch;

const CHUNK: u32 = 4096;
const BLOCK: usize = 4096;
/// Read length per file: past every size the workload reaches.
const SPAN: usize = 40_000;

fn bytes(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_mul(29).wrapping_add(i as u8 ^ (i >> 7) as u8))
        .collect()
}

fn store(
    level: Level,
    members: Vec<Option<Arc<dyn Member>>>,
    states: Vec<MemberState>,
) -> DataStore {
    let n = members.len();
    DataStore::new(
        Geometry::new(level, n, CHUNK).unwrap(),
        members,
        Arc::new(Health::new(states)),
    )
    .unwrap()
}

fn dir(d: &tempfile::TempDir) -> Arc<dyn Member> {
    Arc::new(DirMember::open(d.path()).unwrap())
}

/// Files 1..=3 written and synced on the whole array, which is closed clean.
fn healthy_start(level: Level, dirs: &[tempfile::TempDir]) {
    let s = store(
        level,
        dirs.iter().map(|d| Some(dir(d))).collect(),
        vec![MemberState::Active; dirs.len()],
    );
    for ino in 1..=3u64 {
        s.write(ino, 0, &bytes(ino as u8, 12_000 + ino as usize * 5_000), 0)
            .unwrap();
    }
    s.close().unwrap();
}

/// What the degraded array does while the member is out: file 3 is never
/// touched, file 5 is written once first (a member failing then fails in
/// the middle of it). Stops at the first failed call (the power is gone).
fn degraded_workload(s: &DataStore) {
    let sizes = [0u64, 17_000, 22_000, 27_000];
    let ok = s.write(5, 0, &bytes(14, 11_000), 0).is_ok()
        && s.sync(5).is_ok()
        && s.write(1, 3_000, &bytes(10, 6_000), sizes[1]).is_ok()
        && s.sync(1).is_ok()
        && s.write(2, 20_000, &bytes(11, 9_000), sizes[2]).is_ok()
        && s.truncate(1, sizes[1], 5_000).is_ok()
        && s.sync(2).is_ok()
        && s.write(4, 0, &bytes(12, 15_000), 0).is_ok()
        && s.write(2, 1_000, &bytes(13, 2_000), 29_000).is_ok()
        && s.sync(4).is_ok()
        && s.truncate(1, 5_000, 30_000).is_ok()
        && s.sync(1).is_ok();
    let _ = ok;
}

/// Every block of files 1..=5 as `s` reads it (`None`: EIO).
fn contents(s: &DataStore) -> Vec<Vec<Option<Vec<u8>>>> {
    (1..=5u64)
        .map(|ino| {
            (0..SPAN.div_ceil(BLOCK))
                .map(|b| {
                    let mut buf = vec![0u8; BLOCK];
                    s.read(ino, (b * BLOCK) as u64, &mut buf, SPAN as u64)
                        .ok()
                        .map(|_| buf)
                })
                .collect()
        })
        .collect()
}

/// How the member leaves.
#[derive(Debug, Clone, Copy)]
enum Leaves {
    /// Unplugged before the array started.
    BeforeStart,
    /// Fails in the middle of the workload: its shard writes fail after
    /// the first `n` (what a write in flight had sent it is kept only if
    /// synced before).
    AfterWrites(u64),
}

/// The returning member as the array sees it during the run.
fn leaving(dir_of: &tempfile::TempDir, how: Leaves) -> Option<FaultyMember> {
    match how {
        Leaves::BeforeStart => None,
        Leaves::AfterWrites(k) => {
            let f = FaultyMember::new(dir(dir_of));
            f.model_sync_only();
            f.inject(Fault {
                op: Op::Write,
                path: "data/".into(),
                skip: k,
                times: u64::MAX,
                kind: FaultKind::Eio,
            });
            Some(f)
        }
    }
}

fn check_level(level: Level, n: usize, out: usize, also_missing: &[usize], how: Leaves) {
    // Count the mutating calls of a whole degraded run.
    let total = {
        let dirs: Vec<_> = (0..n).map(|_| scratch()).collect();
        healthy_start(level, &dirs);
        let power = Power::unlimited();
        let x = leaving(&dirs[out], how);
        let members = (0..n)
            .map(|k| {
                if k == out {
                    return x.clone().map(|f| Arc::new(f) as Arc<dyn Member>);
                }
                let f = FaultyMember::with_power(dir(&dirs[k]), power.clone());
                f.model_sync_only();
                Some(Arc::new(f) as Arc<dyn Member>)
            })
            .collect();
        degraded_workload(&store(level, members, vec![MemberState::Active; n]));
        power.steps_used()
    };
    assert!(total > 20, "{level:?}: only {total} steps");
    let mut readded = 0;
    for cut in 0..=total {
        let dirs: Vec<_> = (0..n).map(|_| scratch()).collect();
        healthy_start(level, &dirs);
        // The member is unplugged; the array runs without it until the
        // power fails.
        let power = Power::cut_after(cut);
        let x = leaving(&dirs[out], how);
        let faulty: Vec<Option<FaultyMember>> = (0..n)
            .map(|k| {
                if k == out {
                    return x.clone();
                }
                let f = FaultyMember::with_power(dir(&dirs[k]), power.clone());
                f.model_sync_only();
                Some(f)
            })
            .collect();
        degraded_workload(&store(
            level,
            faulty
                .iter()
                .map(|f| f.clone().map(|f| Arc::new(f) as Arc<dyn Member>))
                .collect(),
            vec![MemberState::Active; n],
        ));
        // Restart from what was durable, the member still out (recorded
        // failed by then), and resync.
        let images: Vec<_> = (0..n).map(|_| scratch()).collect();
        for (k, f) in faulty.iter().enumerate() {
            if let Some(f) = f {
                f.crash_image(images[k].path(), Some(cut * 17 + k as u64))
                    .unwrap();
            }
        }
        // The member comes back holding what was durable on it when it left.
        let back_dir = match &x {
            Some(f) => {
                let img = scratch();
                f.crash_image(img.path(), None).unwrap();
                img
            }
            None => dirs.into_iter().nth(out).unwrap(),
        };
        let mut states = vec![MemberState::Active; n];
        states[out] = MemberState::Failed;
        let members = |back: Option<Arc<dyn Member>>| -> Vec<Option<Arc<dyn Member>>> {
            (0..n)
                .map(|k| {
                    if k == out {
                        back.clone()
                    } else {
                        Some(dir(&images[k]))
                    }
                })
                .collect()
        };
        let s = store(level, members(None), states.clone());
        ops::resync(&s, (1..=5u64).map(|i| (i, SPAN as u64))).unwrap();
        let expected = contents(&s);
        if !s.can_readd(out) {
            // Nothing recorded the member leaving (a cut before the first
            // log write): it would be rebuilt whole.
            continue;
        }
        // The member comes back: in its slot and written from now on,
        // then only the recorded files are rebuilt on it.
        let back = dir(&back_dir);
        s.set_member(out, Some(back.clone()));
        s.health()
            .set_state(out, MemberState::Rebuilding { done_bytes: 0 });
        let changed = s.take_stale(out).unwrap().expect("a covered slot's set");
        let files: Vec<(u64, u64)> = (1..=5u64)
            .filter(|&i| changed.contains(i))
            .map(|i| (i, SPAN as u64))
            .collect();
        assert!(
            !changed.contains(3) || changed.overflow,
            "{level:?} cut {cut}: untouched file 3 listed"
        );
        let rep =
            ops::rebuild(&s, out, back, files, RebuildOptions::default(), &NoProgress).unwrap();
        assert!(rep.complete);
        s.close().unwrap();
        readded += 1;
        // Reads that need the re-added member return what the degraded
        // array returned.
        let mut states = vec![MemberState::Active; n];
        let mut m = members(Some(dir(&back_dir)));
        for &k in also_missing {
            m[k] = None;
            states[k] = MemberState::Missing;
        }
        let after = store(level, m, states);
        let got = contents(&after);
        for (f, (want, have)) in expected.iter().zip(&got).enumerate() {
            for (b, (w, h)) in want.iter().zip(have).enumerate() {
                let file = f + 1;
                match (w, h) {
                    // Bytes from a stale chunk would differ here.
                    (Some(w), Some(h)) => assert!(
                        w == h,
                        "{level:?} cut {cut}: file {file} block {b} differs after the re-add"
                    ),
                    // A stripe whose redundancy a crash while degraded left
                    // unconfirmed (md's write hole) was poisoned by the
                    // resync: its chunk on the member cannot be rebuilt and
                    // reads that need it fail. Never so for a file the
                    // degraded run did not touch.
                    (Some(_), None) => assert!(
                        file != 3,
                        "{level:?} cut {cut}: untouched file 3 block {b} unreadable after the re-add"
                    ),
                    (None, _) => {}
                }
            }
        }
    }
    assert!(
        readded * 3 > total as usize,
        "{level:?} {how:?}: only {readded} of {total} crash points could re-add"
    );
}

#[test]
fn a_re_added_member_serves_what_the_degraded_array_served_at_every_crash_point() {
    let raid5 = Level::Raid5(Raid5Layout::LeftSymmetric);
    for how in [
        Leaves::BeforeStart,
        Leaves::AfterWrites(0),
        Leaves::AfterWrites(1),
        Leaves::AfterWrites(3),
    ] {
        check_level(raid5, 3, 2, &[0], how);
        check_level(Level::Raid6, 4, 1, &[0, 3], how);
    }
}

// ----- through the array, as `raidfs replace` does it -----------------------

use std::ffi::OsStr;
use std::path::PathBuf;

use raid_array::data::checksum;
use raid_array::ops::ScrubOptions;
use raid_array::{Array, AssembleOptions, CreateOptions, ROOT_INO, SetAttr};

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

fn create_array(dirs: &[PathBuf]) -> Array {
    let mut o = CreateOptions::new("arr", Level::Raid5(Default::default()), dirs.to_vec());
    o.allow_same_fs = true;
    o.chunk_size = 4096;
    Array::create(&o).unwrap()
}

fn assemble(dirs: &[PathBuf]) -> Array {
    Array::assemble(&AssembleOptions::new(dirs.to_vec())).unwrap()
}

fn new_file(a: &Array, name: &str, data: &[u8]) -> u64 {
    let ino = a.create_file(ROOT_INO, os(name), 0o644, 0, 0).unwrap().ino;
    a.write(ino, 0, data).unwrap();
    a.release(ino).unwrap();
    ino
}

/// A RAID-5 array over three fresh directories holding one file `f` of
/// `pattern(1, 200_000)`: the directory, the members, the array, `f`.
fn three_with_a_file() -> (tempfile::TempDir, Vec<PathBuf>, Array, u64) {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = common::make_dirs(tmp.path(), "m", 3);
    let a = create_array(&dirs);
    let f = new_file(&a, "f", &common::pattern(1, 200_000));
    (tmp, dirs, a, f)
}

/// The array of `dirs` assembled without member `skip`, read-only, so that
/// the missing member is not recorded failed.
fn read_only_without(dirs: &[PathBuf], skip: usize) -> Array {
    let some: Vec<PathBuf> = (0..dirs.len())
        .filter(|&k| k != skip)
        .map(|k| dirs[k].clone())
        .collect();
    let mut opts = AssembleOptions::new(some);
    opts.read_only = true;
    Array::assemble(&opts).unwrap()
}

fn shard_on(dir: &std::path::Path, ino: u64) -> PathBuf {
    // As FORMAT.md gives it: .raidfs/data/<low byte>/<ino in 16 hex digits>.
    dir.join(format!(".raidfs/data/{:02x}/{:016x}", ino & 0xff, ino))
}

fn sums_on(dir: &std::path::Path, ino: u64) -> PathBuf {
    dir.join(format!(".raidfs/data/{:02x}/{:016x}.crc", ino & 0xff, ino))
}

#[test]
fn a_member_back_after_a_disconnect_is_re_added_with_only_the_changed_files_rebuilt() {
    use common::pattern;
    let tmp = tempfile::tempdir().unwrap();
    let dirs = common::make_dirs(tmp.path(), "m", 4);
    let a = create_array(&dirs);
    let kept = new_file(&a, "kept", &pattern(1, 300_000));
    let changed = new_file(&a, "changed", &pattern(2, 300_000));
    let shrunk = new_file(&a, "shrunk", &pattern(3, 300_000));
    let gone = new_file(&a, "gone", &pattern(4, 300_000));
    let moved = new_file(&a, "moved", &pattern(5, 200_000));
    let tiny = new_file(&a, "tiny", b"small enough to live in the metadata");
    a.close().unwrap();

    // Member 3's disk was not there at mount; the array ran without it.
    let a = assemble(&dirs[..3]);
    a.write(changed, 100_000, &pattern(6, 50_000)).unwrap();
    a.setattr(
        shrunk,
        &SetAttr {
            size: Some(10_000),
            ..Default::default()
        },
    )
    .unwrap();
    a.unlink(ROOT_INO, os("gone")).unwrap();
    a.rename(ROOT_INO, os("moved"), ROOT_INO, os("moved-here"), 0)
        .unwrap();
    a.write(tiny, 0, b"SMALL").unwrap();
    let born = new_file(&a, "born", &pattern(7, 250_000));
    a.close().unwrap();
    assert!(shard_on(&dirs[3], gone).exists());

    // It is back: re-added, with only the changed files rebuilt on it.
    let a = assemble(&dirs[..3]);
    let rep = a
        .replace(3, &dirs[3], RebuildOptions::default(), &NoProgress)
        .unwrap();
    assert!(
        rep.complete && rep.readd && rep.unrecoverable == 0,
        "{rep:?}"
    );
    assert_eq!(
        (rep.files, rep.kept_files, rep.removed_files),
        (3, 2, 1),
        "{rep:?}"
    );
    assert!(
        !shard_on(&dirs[3], gone).exists(),
        "a deleted file's data stayed"
    );
    assert!(!a.status().degraded);
    a.close().unwrap();

    // It serves: whichever other member is missing, every file reads back.
    let mut want_changed = pattern(2, 300_000);
    want_changed[100_000..150_000].copy_from_slice(&pattern(6, 50_000));
    let mut want_tiny = b"small enough to live in the metadata".to_vec();
    want_tiny[..5].copy_from_slice(b"SMALL");
    let want: Vec<(u64, Vec<u8>)> = vec![
        (kept, pattern(1, 300_000)),
        (changed, want_changed),
        (shrunk, pattern(3, 300_000)[..10_000].to_vec()),
        (moved, pattern(5, 200_000)),
        (tiny, want_tiny),
        (born, pattern(7, 250_000)),
    ];
    for skip in 0..3 {
        let a = read_only_without(&dirs, skip);
        for (ino, data) in &want {
            assert!(
                a.read(*ino, 0, 400_000).unwrap() == *data,
                "ino {ino} differs without member {skip}"
            );
        }
        a.close().unwrap();
    }
    // And a scrub of the whole array finds nothing wrong.
    let a = assemble(&dirs);
    let s = a
        .scrub(
            ScrubOptions {
                repair: false,
                throttle_bytes_per_sec: 0,
                resume: false,
            },
            &NoProgress,
        )
        .unwrap();
    assert!(
        s.complete && s.mismatches == 0 && s.redundancy_mismatches == 0,
        "{s:?}"
    );
    a.close().unwrap();
}

#[test]
fn a_member_is_rebuilt_whole_when_asked_or_when_its_changes_are_not_known() {
    let (_tmp, dirs, a, f) = three_with_a_file();
    // Failed on purpose (`raidfs fail`): distrusted, rebuilt whole; the
    // mount's `readd` refuses it without touching the directory.
    a.fail(2).unwrap();
    let g = new_file(&a, "g", &common::pattern(2, 100_000));
    let before = std::fs::read(dirs[2].join(".raidfs/superblock")).unwrap();
    let e = a
        .start_readd(2, &dirs[2], RebuildOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot be re-added"), "{e}");
    assert_eq!(
        std::fs::read(dirs[2].join(".raidfs/superblock")).unwrap(),
        before
    );
    assert!(a.status().degraded);
    let rep = a
        .replace(2, &dirs[2], RebuildOptions::default(), &NoProgress)
        .unwrap();
    assert!(rep.complete && !rep.readd && rep.files == 2, "{rep:?}");
    a.close().unwrap();
    // `--full`: a member that could be re-added is rebuilt whole all the same.
    let a = assemble(&dirs[..2]);
    let g2 = new_file(&a, "g2", &common::pattern(4, 100_000));
    a.close().unwrap();
    let a = assemble(&dirs[..2]);
    let full = RebuildOptions {
        full: true,
        ..RebuildOptions::default()
    };
    let rep = a.replace(2, &dirs[2], full, &NoProgress).unwrap();
    assert!(rep.complete && !rep.readd && rep.files == 3, "{rep:?}");
    a.close().unwrap();
    // Out again; the survivors' write-intent logs (which hold what changed)
    // are lost: nothing says what it lacks, so it is rebuilt whole.
    let a = assemble(&dirs[..2]);
    let h = new_file(&a, "h", &common::pattern(3, 100_000));
    a.close().unwrap();
    for d in &dirs[..2] {
        std::fs::remove_file(d.join(raid_array::intent::INTENT_PATH)).unwrap();
    }
    let a = assemble(&dirs[..2]);
    let rep = a
        .replace(2, &dirs[2], RebuildOptions::default(), &NoProgress)
        .unwrap();
    assert!(rep.complete && !rep.readd && rep.files == 4, "{rep:?}");
    a.close().unwrap();
    let a = assemble(&dirs[1..]);
    assert_eq!(a.read(f, 0, 300_000).unwrap(), common::pattern(1, 200_000));
    assert_eq!(a.read(g, 0, 300_000).unwrap(), common::pattern(2, 100_000));
    assert_eq!(a.read(g2, 0, 300_000).unwrap(), common::pattern(4, 100_000));
    assert_eq!(a.read(h, 0, 300_000).unwrap(), common::pattern(3, 100_000));
    a.close().unwrap();
}

/// A RAID-5 store over three fresh directories, all in service.
fn raid5_of_three() -> (Level, Vec<tempfile::TempDir>, DataStore) {
    let level = Level::Raid5(Raid5Layout::LeftSymmetric);
    let dirs: Vec<_> = (0..3).map(|_| scratch()).collect();
    let s = store(
        level,
        dirs.iter().map(|d| Some(dir(d))).collect(),
        vec![MemberState::Active; 3],
    );
    (level, dirs, s)
}

/// Appends to a file the first time the rebuild reports progress.
struct AppendOnce<'a> {
    store: &'a DataStore,
    done: std::sync::atomic::AtomicBool,
}

impl ops::Progress for AppendOnce<'_> {
    fn update(&self, _done: u64, _total: u64) {
        if !self.done.swap(true, std::sync::atomic::Ordering::SeqCst) {
            self.store
                .write(9, 20_000, &bytes(21, 30_000), 20_000)
                .unwrap();
        }
    }
}

#[test]
fn a_rebuild_keeps_what_is_written_to_the_new_member_while_it_runs() {
    let (level, dirs, s) = raid5_of_three();
    s.write(8, 0, &bytes(8, 40_000), 0).unwrap();
    s.write(9, 0, &bytes(9, 20_000), 0).unwrap();
    s.health().mark_failed(2, "test");
    // The files are listed before the rebuild starts; file 9 then grows
    // past its listed size while file 8 is being rebuilt. Its new stripes
    // reach the new member by the write alone.
    let new = scratch();
    let progress = AppendOnce {
        store: &s,
        done: Default::default(),
    };
    let target = dir(&new);
    s.set_member(2, Some(target.clone()));
    s.health()
        .set_state(2, MemberState::Rebuilding { done_bytes: 0 });
    let rep = ops::rebuild(
        &s,
        2,
        target,
        vec![(8, 40_000), (9, 20_000)],
        RebuildOptions::default(),
        &progress,
    )
    .unwrap();
    assert!(rep.complete);
    s.close().unwrap();
    let mut want = bytes(9, 20_000);
    want.extend(bytes(21, 30_000));
    let without_0 = store(
        level,
        vec![None, Some(dir(&dirs[1])), Some(dir(&new))],
        vec![MemberState::Active; 3],
    );
    let mut got = vec![0u8; want.len()];
    without_0.read(9, 0, &mut got, want.len() as u64).unwrap();
    assert!(got == want, "the append made during the rebuild was lost");
}

#[test]
fn a_member_that_left_without_its_superblock_saying_so_is_failed_at_start_up() {
    let (level, dirs, s) = raid5_of_three();
    s.write(8, 0, &bytes(8, 40_000), 0).unwrap();
    s.sync(8).unwrap();
    // Member 2 fails; a write goes on without it; the machine stops before
    // the superblocks record the failure (no superblocks at this level:
    // the next start is told all three are active).
    s.health().mark_failed(2, "test");
    s.write(8, 0, &bytes(80, 40_000), 40_000).unwrap();
    s.sync(8).unwrap();
    drop(s);
    let again = store(
        level,
        dirs.iter().map(|d| Some(dir(d))).collect(),
        vec![MemberState::Active; 3],
    );
    assert_eq!(again.health().state(2), MemberState::Failed);
    assert!(again.can_readd(2));
    let mut got = vec![0u8; 40_000];
    again.read(8, 0, &mut got, 40_000).unwrap();
    assert!(
        got == bytes(80, 40_000),
        "served stale data from the member that left"
    );
}

#[test]
fn a_replace_onto_a_new_directory_ignores_the_checkpoint_of_an_abandoned_rebuild() {
    let (tmp, dirs, a, f) = three_with_a_file();
    a.close().unwrap();
    // An earlier rebuild of slot 2, abandoned, left its checkpoint far on.
    let members: Vec<Arc<dyn Member>> = dirs[..2]
        .iter()
        .map(|d| Arc::new(DirMember::open(d).unwrap()) as Arc<dyn Member>)
        .collect();
    ops::Checkpoint {
        target: 2,
        ino: u64::MAX / 2,
        stripe: 0,
        done: 0,
        member: None,
    }
    .save(&members, "rebuild");
    drop(members);
    let a = assemble(&dirs[..2]);
    let fresh = tmp.path().join("new");
    std::fs::create_dir(&fresh).unwrap();
    let resume = RebuildOptions {
        resume: true,
        ..RebuildOptions::default()
    };
    let rep = a.replace(2, &fresh, resume, &NoProgress).unwrap();
    assert!(rep.complete && rep.files == 1, "{rep:?}");
    a.close().unwrap();
    let a = assemble(&[dirs[1].clone(), fresh]);
    assert_eq!(a.read(f, 0, 300_000).unwrap(), common::pattern(1, 200_000));
    a.close().unwrap();
}

#[test]
fn assembly_fails_a_member_the_log_says_left_though_its_superblocks_do_not() {
    use raid_array::format::superblock::{self, SlotState};
    let (_tmp, dirs, a, f) = three_with_a_file();
    a.close().unwrap();
    // Member 2's disk fails a write (a disconnect); the array goes on.
    let (a, faulty) = common::assemble_faulty(&dirs);
    faulty[2].inject(Fault::eio(Op::Write, "data/"));
    a.write(f, 0, &common::pattern(2, 200_000)).unwrap();
    assert_eq!(
        a.status().members[2].state,
        raid_array::health::MemberState::Failed
    );
    a.close().unwrap();
    // As if the array had stopped before the superblocks recorded it.
    for d in &dirs[..2] {
        let mut sb = raid_array::assemble::read_superblock(d).unwrap();
        sb.members[2].state = SlotState::Active;
        std::fs::write(d.join(superblock::PATH), sb.encode().unwrap()).unwrap();
    }
    let a = assemble(&dirs);
    assert_eq!(
        a.status().members[2].state,
        raid_array::health::MemberState::Failed
    );
    assert_eq!(a.read(f, 0, 300_000).unwrap(), common::pattern(2, 200_000));
    let rep = a
        .replace(2, &dirs[2], RebuildOptions::default(), &NoProgress)
        .unwrap();
    assert!(rep.complete && rep.readd, "{rep:?}");
    a.close().unwrap();
    let a = assemble(&dirs[1..]);
    assert_eq!(a.read(f, 0, 300_000).unwrap(), common::pattern(2, 200_000));
    a.close().unwrap();
}

/// Fails member 2 once the rebuild has done `at` bytes.
struct FailWhen<'a> {
    a: &'a Array,
    at: u64,
    done: std::sync::atomic::AtomicBool,
}

impl ops::Progress for FailWhen<'_> {
    fn update(&self, done: u64, _total: u64) {
        if done >= self.at && !self.done.swap(true, std::sync::atomic::Ordering::SeqCst) {
            self.a.fail(2).unwrap();
        }
    }
}

/// At its first progress report, copies each `(from, to)` directory: an
/// image of the members as a power cut would leave them.
struct ImageAtFirst<'a> {
    done: std::sync::atomic::AtomicBool,
    pairs: &'a [(PathBuf, PathBuf)],
}

impl ops::Progress for ImageAtFirst<'_> {
    fn update(&self, _done: u64, _total: u64) {
        if !self.done.swap(true, std::sync::atomic::Ordering::SeqCst) {
            image(self.pairs);
        }
    }
}

/// A new member directory `B` beside members 0 and 1, where their power-cut
/// images go, and the pairs to copy for [`image`].
fn new_member_and_images(
    root: &std::path::Path,
    dirs: &[PathBuf],
) -> (PathBuf, Vec<PathBuf>, Vec<(PathBuf, PathBuf)>) {
    let db = root.join("B");
    std::fs::create_dir(&db).unwrap();
    let img: Vec<PathBuf> = ["i0", "i1", "iB"].iter().map(|n| root.join(n)).collect();
    let pairs = vec![
        (dirs[0].clone(), img[0].clone()),
        (dirs[1].clone(), img[1].clone()),
        (db.clone(), img[2].clone()),
    ];
    (db, img, pairs)
}

/// Copy each `(from, to)` directory: the members as a power cut leaves them.
fn image(pairs: &[(PathBuf, PathBuf)]) {
    for (from, to) in pairs {
        common::copy_tree(from, to);
    }
}

/// A rebuild abandoned because its target failed, then a fresh rebuild of
/// the same slot onto another directory, cut by a crash before it reaches
/// a file boundary: the restarted rebuild must start over, not continue
/// from where the abandoned one stopped (skipping a file the new member
/// holds only in part).
#[test]
fn a_crash_early_in_a_fresh_rebuild_does_not_resume_from_an_abandoned_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = common::make_dirs(tmp.path(), "m", 3);
    let a = create_array(&dirs);
    let size = 24 << 20;
    let files: Vec<(u64, Vec<u8>)> = (0..2u64)
        .map(|k| {
            let d = common::pattern(k + 1, size);
            (new_file(&a, &format!("f{k}"), &d), d)
        })
        .collect();
    a.fail(2).unwrap();
    // A rebuild onto A, stopped inside the second file as A fails.
    let da = tmp.path().join("A");
    std::fs::create_dir(&da).unwrap();
    let stop = FailWhen {
        a: &a,
        at: size as u64 + 1,
        done: false.into(),
    };
    let rep = a.replace(2, &da, RebuildOptions::default(), &stop).unwrap();
    assert!(!rep.complete);
    assert!(a.wait_rebuild().is_none());
    // A fresh rebuild onto B; the power fails after its first step.
    let (db, img, pairs) = new_member_and_images(tmp.path(), &dirs);
    let p = ImageAtFirst {
        done: false.into(),
        pairs: &pairs,
    };
    let rep = a.replace(2, &db, RebuildOptions::default(), &p).unwrap();
    assert!(rep.complete);
    a.close().unwrap();
    // Restart from the image (forced: it stopped dirty with a slot rebuilding).
    let mut o = AssembleOptions::new(img.clone());
    o.force = true;
    let a = Array::assemble(&o).unwrap();
    let rep = a.wait_rebuild().expect("the rebuild resumed").unwrap();
    assert!(rep.complete, "{rep:?}");
    for (ino, d) in &files {
        let got = a.read(*ino, 0, size).unwrap();
        let first_bad = got.iter().zip(d.iter()).position(|(x, y)| x != y);
        assert!(
            first_bad.is_none(),
            "file {ino} differs from byte {first_bad:?} on"
        );
    }
    a.close().unwrap();
}

/// Unlinks (and commits the unlink of) one file at the first progress report.
struct UnlinkOnce<'a> {
    a: &'a Array,
    name: &'static str,
    done: std::sync::atomic::AtomicBool,
}

impl ops::Progress for UnlinkOnce<'_> {
    fn update(&self, _done: u64, _total: u64) {
        if !self.done.swap(true, std::sync::atomic::Ordering::SeqCst) {
            self.a.unlink(ROOT_INO, os(self.name)).unwrap();
            self.a.sync_metadata().unwrap();
        }
    }
}

/// A file deleted while a rebuild runs, before the rebuild reaches it, is
/// skipped: no read errors charged to the members that hold no shard of it
/// any more, no block reported lost, and no shard of it left on the new
/// member.
#[test]
fn a_file_unlinked_during_a_rebuild_is_skipped_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = common::make_dirs(tmp.path(), "m", 3);
    let a = create_array(&dirs);
    let inos: Vec<u64> = (0..3u64)
        .map(|k| new_file(&a, &format!("f{k}"), &common::pattern(k, 64 * 1024)))
        .collect();
    a.fail(2).unwrap();
    let fresh = tmp.path().join("new");
    std::fs::create_dir(&fresh).unwrap();
    let p = UnlinkOnce {
        a: &a,
        name: "f2",
        done: false.into(),
    };
    let rep = a.replace(2, &fresh, RebuildOptions::default(), &p).unwrap();
    assert!(rep.complete, "{rep:?}");
    assert_eq!(rep.unrecoverable, 0, "spurious unrecoverable blocks");
    let counters = a.health().counters();
    assert!(
        counters.iter().all(|c| c.read_errors == 0),
        "spurious read errors: {counters:?}"
    );
    assert!(
        !shard_on(&fresh, inos[2]).exists(),
        "a shard of the deleted file is left on the new member"
    );
    for (k, &ino) in inos[..2].iter().enumerate() {
        assert_eq!(
            a.read(ino, 0, 64 * 1024).unwrap(),
            common::pattern(k as u64, 64 * 1024)
        );
    }
    a.close().unwrap();
    let a = assemble(&[dirs[0].clone(), fresh]);
    for (k, &ino) in inos[..2].iter().enumerate() {
        assert_eq!(
            a.read(ino, 0, 64 * 1024).unwrap(),
            common::pattern(k as u64, 64 * 1024)
        );
    }
    a.close().unwrap();
}

/// During a rebuild: at its first report, waits until a checkpoint past file
/// `x` is due; at its second (file `x` rebuilt and checkpointed), rewrites
/// the first 4 KiB of each of `x`'s three stripes and takes a power-cut
/// image of the members.
struct RewriteThenCrash<'a> {
    a: &'a Array,
    x: u64,
    calls: std::sync::atomic::AtomicU32,
    pairs: &'a [(PathBuf, PathBuf)],
}

impl ops::Progress for RewriteThenCrash<'_> {
    fn update(&self, _done: u64, _total: u64) {
        match self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
            0 => std::thread::sleep(std::time::Duration::from_millis(2100)),
            1 => {
                for k in 0..3u64 {
                    let new = common::pattern(50 + k, 4096);
                    self.a.write(self.x, k * 8192, &new).unwrap();
                }
                image(self.pairs);
            }
            _ => {}
        }
    }
}

/// A crash during a rebuild, just as a file the rebuild had passed was
/// rewritten, and the parity of one of its stripes, held by the new member,
/// not yet on that member's disk. The resync after the (forced) restart
/// does not read the member being rebuilt, so it writes it the parity the
/// data implies whatever it holds: the stale parity must not survive, or a
/// later loss of a data member rebuilds settled bytes wrong.
#[test]
fn a_resync_after_a_crash_during_a_rebuild_rewrites_the_new_members_parity() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = common::make_dirs(tmp.path(), "m", 3);
    let a = create_array(&dirs);
    let old = common::pattern(1, 3 * 8192);
    let x = new_file(&a, "x", &old);
    new_file(&a, "y", &common::pattern(2, 24 << 20));
    a.close().unwrap();
    let a = assemble(&dirs[..2]);
    let (db, img, pairs) = new_member_and_images(tmp.path(), &dirs);
    let p = RewriteThenCrash {
        a: &a,
        x,
        calls: 0.into(),
        pairs: &pairs,
    };
    a.replace(2, &db, RebuildOptions::default(), &p).unwrap();
    drop(a);
    let mut want = old.clone();
    for k in 0..3 {
        want[k * 8192..k * 8192 + 4096].copy_from_slice(&common::pattern(50 + k as u64, 4096));
    }
    // In the image, B's chunk of the stripe whose parity it holds goes back
    // to the old parity, with its checksum: the write never reached it.
    let shard = shard_on(&img[2], x);
    let sums_path = PathBuf::from(format!("{}.crc", shard.display()));
    let mut b = std::fs::read(&shard).unwrap();
    let k = (0..3)
        .find(|&k| {
            let c = &b[k * 4096..(k + 1) * 4096];
            !(0..6).any(|q| {
                c == &old[q * 4096..(q + 1) * 4096] || c == &want[q * 4096..(q + 1) * 4096]
            })
        })
        .expect("B holds the parity of a stripe of x");
    let mut par = vec![0u8; 4096];
    for q in 0..2 {
        for (i, v) in par.iter_mut().enumerate() {
            *v ^= old[k * 8192 + q * 4096 + i];
        }
    }
    b[k * 4096..(k + 1) * 4096].copy_from_slice(&par);
    std::fs::write(&shard, &b).unwrap();
    let mut sums = std::fs::read(&sums_path).unwrap();
    // A block's entry is its CRC-32 XOR that of a zero block (FORMAT.md).
    let e = crc32fast::hash(&par) ^ crc32fast::hash(&[0u8; 4096]);
    sums[k * 4..k * 4 + 4].copy_from_slice(&e.to_le_bytes());
    std::fs::write(&sums_path, &sums).unwrap();
    // The forced restart resyncs and resumes the rebuild.
    let mut o = AssembleOptions::new(img.clone());
    o.force = true;
    let a = Array::assemble(&o).unwrap();
    let rep = a.wait_rebuild().expect("the rebuild resumed").unwrap();
    assert!(rep.complete, "{rep:?}");
    a.close().unwrap();
    // Then either data member of stripe k is lost: its settled chunk reads
    // back right, or as an I/O error, never wrong.
    let off = k * 8192 + 4096;
    for gone in 0..2usize {
        let rest: Vec<PathBuf> = (0..3)
            .filter(|&i| i != gone)
            .map(|i| {
                let c = tmp.path().join(format!("c{gone}-{i}"));
                image(&[(img[i].clone(), c.clone())]);
                c
            })
            .collect();
        let a = assemble(&rest);
        if let Ok(got) = a.read(x, off as u64, 4096) {
            assert!(
                got == want[off..off + 4096],
                "member {gone} lost: settled bytes of stripe {k} read back wrong"
            );
        }
        a.close().unwrap();
    }
}

/// Fails member `slot` at the first progress report of a rebuild, as an
/// unplugged disk is failed while the rebuild runs.
struct FailAtFirstUpdate<'a> {
    array: &'a Array,
    slot: usize,
    done: std::sync::atomic::AtomicBool,
}

impl ops::Progress for FailAtFirstUpdate<'_> {
    fn update(&self, _done: u64, _total: u64) {
        if !self.done.swap(true, std::sync::atomic::Ordering::SeqCst) {
            self.array
                .health()
                .mark_failed(self.slot, "test: disconnected");
        }
    }
}

/// RAID-5 of 3: while member 2 is rebuilt onto a new directory, member 1
/// drops out. The rebuild has nothing left to rebuild from: it stops with
/// an error, writes no poison, and member 2 is not made active. Member 1
/// comes back unchanged and is re-added: not one of its blocks changes, the
/// file reads back, and member 2's rebuild resumes and completes.
#[test]
fn a_rebuild_that_loses_a_source_stops_and_resumes_once_the_member_is_back() {
    use common::pattern;
    let tmp = tempfile::tempdir().unwrap();
    let dirs = common::make_dirs(tmp.path(), "m", 3);
    let a = create_array(&dirs);
    // Several rebuild steps of member bytes.
    let size = 8192 * 5000;
    let data = pattern(9, size);
    let x = a.create_file(ROOT_INO, os("x"), 0o644, 0, 0).unwrap().ino;
    a.write(x, 0, &data).unwrap();
    a.fsync(x, false).unwrap();
    a.release(x).unwrap();
    a.fail(2).unwrap();
    let fresh = tmp.path().join("new");
    std::fs::create_dir(&fresh).unwrap();
    let p = FailAtFirstUpdate {
        array: &a,
        slot: 1,
        done: false.into(),
    };
    let err = a
        .replace(2, &fresh, RebuildOptions::default(), &p)
        .unwrap_err();
    assert!(
        err.to_string().contains("member 1 failed"),
        "unexpected error: {err}"
    );
    assert!(
        matches!(a.health().state(2), MemberState::Rebuilding { .. }),
        "{:?}",
        a.health().states()
    );
    // Nothing was poisoned on the new member for want of sources.
    let sums = std::fs::read(sums_on(&fresh, x)).unwrap();
    assert!(
        !sums
            .chunks_exact(4)
            .any(|e| u32::from_le_bytes([e[0], e[1], e[2], e[3]]) == checksum::POISON),
        "poison written to the new member"
    );

    // Member 1 is back unchanged and re-added: nothing was written while
    // it was out (the rebuild's own writes went to member 2 only), so it
    // has nothing to rebuild and nothing of it is touched.
    let before = std::fs::read(shard_on(&dirs[1], x)).unwrap();
    let rep = a
        .replace(1, &dirs[1], RebuildOptions::default(), &NoProgress)
        .unwrap();
    assert!(rep.complete && rep.readd && rep.files == 0, "{rep:?}");
    assert_eq!(a.health().state(1), MemberState::Active);
    let after = std::fs::read(shard_on(&dirs[1], x)).unwrap();
    assert!(before == after, "the re-add changed the member's blocks");
    assert!(a.read(x, 0, size).unwrap() == data, "x reads back changed");
    // With member 1 back, member 2's rebuild resumes and completes.
    let r = a.wait_rebuild();
    assert!(matches!(&r, Some(Ok(rep)) if rep.complete), "{r:?}");
    assert!(
        a.health()
            .states()
            .iter()
            .all(|s| *s == MemberState::Active)
    );
    // Member 2 rebuilt right: x reads back without member 0.
    a.health().mark_failed(0, "test");
    assert!(
        a.read(x, 0, size).unwrap() == data,
        "member 2 rebuilt wrong"
    );
    a.close().unwrap();
}

/// A re-add where a block of the returning member cannot be rebuilt (the
/// other copy of its stripe is bad on a survivor, every member present):
/// the member's own block is not kept, since per file the array cannot
/// tell whether that stripe was written while the member was out; the
/// block is poisoned and reads as EIO, never as possibly stale bytes.
#[test]
fn a_block_a_re_add_cannot_rebuild_reads_as_eio_not_as_a_copy_that_may_be_stale() {
    use common::pattern;
    let (_tmp, dirs, a, f) = three_with_a_file();
    a.fsync(f, false).unwrap();
    a.health().mark_failed(2, "test: unplugged");
    // The file changes while member 2 is out (its first stripe only).
    let mut want = pattern(1, 200_000);
    want[..8192].copy_from_slice(&pattern(2, 8192));
    a.write(f, 0, &pattern(2, 8192)).unwrap();
    a.fsync(f, false).unwrap();
    // A survivor's block of an unchanged stripe goes bad: member 2's block
    // of that stripe cannot be rebuilt from the others.
    let bad_at = 10 * 4096 + 100;
    let s0 = shard_on(&dirs[0], f);
    let mut raw = std::fs::read(&s0).unwrap();
    raw[bad_at] ^= 0x5a;
    std::fs::write(&s0, &raw).unwrap();
    let before = std::fs::read(shard_on(&dirs[2], f)).unwrap();

    let rep = a
        .replace(2, &dirs[2], RebuildOptions::default(), &NoProgress)
        .unwrap();
    assert!(rep.complete && rep.readd && rep.files == 1, "{rep:?}");
    assert_eq!(rep.unrecoverable, 1, "{rep:?}");
    let after = std::fs::read(shard_on(&dirs[2], f)).unwrap();
    assert!(before != after, "the member's block was kept");
    assert!(
        a.read(f, 0, 300_000).is_err(),
        "a guessed or stale block was served"
    );
    // Everything else reads back.
    assert!(a.read(f, 0, 8192).unwrap() == want[..8192]);
    a.close().unwrap();
}

/// A member from another history of the array is not taken back as a
/// returning member. RAID-1 over A, B, C: C is replaced by Y while it is
/// out and the file rewritten; C is then assembled on its own, and asked to
/// take A back. A's blocks are the other history's: re-added as unchanged,
/// they were served as C's data. Now A is refused when that history went
/// further than C's (its superblock is ahead) and left untouched; with
/// a table that differs but no history ahead, it is rebuilt whole.
#[test]
fn a_member_from_another_history_of_the_array_is_not_re_added() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = common::make_dirs(tmp.path(), "m", 4);
    let (a_dir, b_dir, c_dir, y_dir) = (&dirs[0], &dirs[1], &dirs[2], &dirs[3]);
    let mut o = CreateOptions::new("hist", Level::Raid1, dirs[..3].to_vec());
    o.allow_same_fs = true;
    o.chunk_size = 4096;
    let a = Array::create(&o).unwrap();
    let f = new_file(&a, "f", &vec![b'X'; 64 * 1024]);
    a.close().unwrap();

    // A, B and Y go on: C replaced, the file rewritten, several starts.
    let a = assemble(&[a_dir.clone(), b_dir.clone()]);
    a.replace(2, y_dir, RebuildOptions::default(), &NoProgress)
        .unwrap();
    a.write(f, 0, &vec![b'Y'; 64 * 1024]).unwrap();
    a.close().unwrap();
    for _ in 0..3 {
        assemble(&[a_dir.clone(), b_dir.clone(), y_dir.clone()])
            .close()
            .unwrap();
    }

    // C on its own still holds X, and refuses A: its history is ahead.
    let c_only = || {
        let mut o = AssembleOptions::new(vec![c_dir.clone()]);
        o.force = true;
        Array::assemble(&o).unwrap()
    };
    let c = c_only();
    assert_eq!(c.read(f, 0, 16).unwrap(), vec![b'X'; 16]);
    let before = std::fs::read(shard_on(a_dir, f)).ok();
    let e = c
        .replace(0, a_dir, RebuildOptions::default(), &NoProgress)
        .unwrap_err();
    assert!(e.to_string().contains("went on without it"), "{e}");
    assert_eq!(std::fs::read(shard_on(a_dir, f)).ok(), before);
    assert_eq!(c.read(f, 0, 16).unwrap(), vec![b'X'; 16]);
    c.close().unwrap();

    // C started often enough to be ahead of A: A is taken, rebuilt whole
    // (not re-added), and C's array serves X from it.
    for _ in 0..6 {
        c_only().close().unwrap();
    }
    let c = c_only();
    let rep = c
        .replace(0, a_dir, RebuildOptions::default(), &NoProgress)
        .unwrap();
    assert!(rep.complete && !rep.readd, "{rep:?}");
    c.close().unwrap();
    let mut o = AssembleOptions::new(vec![a_dir.clone()]);
    o.force = true;
    o.read_only = true;
    let a = Array::assemble(&o).unwrap();
    assert_eq!(a.read(f, 0, 64 * 1024).unwrap(), vec![b'X'; 64 * 1024]);
    a.close().unwrap();
}

/// A range punched out of a file while a member was out reads as zeros
/// once the member is re-added, whichever other member is then missing:
/// the re-add overwrites the returning member's old bytes there, though
/// the members in service hold only holes (a rebuild passes over stripes
/// that are holes everywhere, the target included).
#[test]
fn a_range_punched_while_a_member_was_out_reads_as_zeros_after_its_re_add() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = common::make_dirs(tmp.path(), "m", 3);
    let a = create_array(&dirs);
    // 4 KiB chunks, two data chunks a stripe: a rebuild step covers
    // 16 MiB of the file, and the punch covers the second step whole.
    let data = common::pattern(3, 40 << 20);
    let f = new_file(&a, "image", &data);
    a.close().unwrap();

    let a = assemble(&dirs[..2]);
    a.punch_hole(f, 16 << 20, 16 << 20).unwrap();
    a.close().unwrap();

    let a = assemble(&dirs[..2]);
    let rep = a
        .replace(2, &dirs[2], RebuildOptions::default(), &NoProgress)
        .unwrap();
    assert!(rep.complete && rep.readd, "{rep:?}");
    a.close().unwrap();

    let mut want = data;
    want[16 << 20..32 << 20].fill(0);
    for skip in 0..2 {
        let a = read_only_without(&dirs, skip);
        assert!(
            a.read(f, 0, 40 << 20).unwrap() == want,
            "the punched range differs without member {skip}"
        );
        a.close().unwrap();
    }
}
