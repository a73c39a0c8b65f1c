//! Online member management on real directories: hot spares (format,
//! assembly, automatic takeover), `fail` / `remove` / `start_replace`, the
//! background rebuild worker stopped by close and resumed at assemble,
//! failures on record before fsync returns, and the last scrub kept across
//! a remount.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use raid_array::assemble::read_superblock;
use raid_array::format::superblock::{self, MemberSlot, SlotState, SpareSlot, Superblock};
use raid_array::health::{HealthEvent, MemberState};
use raid_array::member::faulty::{Fault, Op};
use raid_array::member::{DirMember, Member};
use raid_array::ops::{Checkpoint, NoProgress, RebuildOptions, ScrubOptions};
use raid_array::{Array, ArrayError, AssembleOptions, CreateOptions, ROOT_INO};
use raid_core::Level;

mod common;
use common::{assemble_faulty, make_dirs, pattern};

const CHUNK: u32 = 4096;

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

fn create(dirs: &[PathBuf], spares: &[PathBuf]) -> Array {
    let mut o = CreateOptions::new("spares", Level::Raid5(Default::default()), dirs.to_vec());
    o.spares = spares.to_vec();
    o.allow_same_fs = true;
    o.chunk_size = CHUNK;
    Array::create(&o).unwrap()
}

fn assemble(dirs: &[PathBuf]) -> raid_array::Result<Array> {
    Array::assemble(&AssembleOptions::new(dirs.to_vec()))
}

/// Write `count` striped files of `size` bytes; returns (ino, crc) each.
fn fill(a: &Array, count: u64, size: usize) -> Vec<(u64, u32)> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    (0..count)
        .map(|k| {
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let ino = a
                .create_file(ROOT_INO, os(&format!("f{n}")), 0o644, 0, 0)
                .unwrap()
                .ino;
            let data = pattern(k + 1, size);
            a.write(ino, 0, &data).unwrap();
            a.release(ino).unwrap();
            (ino, crc32fast::hash(&data))
        })
        .collect()
}

fn check(a: &Array, files: &[(u64, u32)]) {
    for &(ino, crc) in files {
        let size = a.getattr(ino).unwrap().size as usize;
        let data = a.read(ino, 0, size).unwrap();
        assert_eq!(crc32fast::hash(&data), crc, "file {ino} differs");
    }
}

fn sb_events(dirs: &[PathBuf]) -> Vec<u64> {
    dirs.iter()
        .map(|d| read_superblock(d).unwrap().events)
        .collect()
}

#[test]
fn a_spare_takes_over_a_failed_member_and_the_data_survives() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = make_dirs(tmp.path(), "m", 3);
    let spare = make_dirs(tmp.path(), "spare", 1).remove(0);
    let a = create(&dirs, std::slice::from_ref(&spare));
    assert_eq!(a.status().spares.len(), 1);
    let files = fill(&a, 4, 50_000);
    a.close().unwrap();
    // The spare's own superblock: state spare, its UUID in the table.
    let ssb = read_superblock(&spare).unwrap();
    assert!(ssb.is_spare());
    assert_eq!(ssb.spares.len(), 1);
    assert_eq!(ssb.spares[0].uuid, ssb.member_uuid);
    assert_eq!(read_superblock(&dirs[0]).unwrap().spares, ssb.spares);

    let mut all = dirs.clone();
    all.push(spare.clone());
    let (a, faulty) = assemble_faulty(&all);
    let st = a.status();
    assert_eq!(st.spares.len(), 1);
    assert_eq!(st.spares[0].path, spare.display().to_string());
    let events = a.health().subscribe();
    // Member 1's disk starts failing every data write.
    faulty[1].inject(Fault::eio(Op::Write, ".raidfs/data"));
    let more = fill(&a, 2, 30_000);
    assert_eq!(a.health().state(1), MemberState::Failed);
    let rep = a.wait_rebuild().expect("a rebuild ran").unwrap();
    assert!(rep.complete);
    assert_eq!(rep.unrecoverable, 0);
    let st = a.status();
    assert!(st.spares.is_empty());
    assert!(!st.degraded);
    assert_eq!(st.members[1].state, MemberState::Active);
    assert_eq!(
        st.members[1].uuid,
        superblock::uuid_string(&ssb.member_uuid)
    );
    assert!(st.rebuild.is_none());
    let seen: Vec<HealthEvent> = events.try_iter().collect();
    assert!(
        seen.iter().any(|e| matches!(
            e,
            HealthEvent::StateChanged {
                member: 1,
                to: MemberState::Rebuilding { .. },
                ..
            }
        )),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|e| matches!(
            e,
            HealthEvent::StateChanged {
                member: 1,
                to: MemberState::Active,
                ..
            }
        )),
        "{seen:?}"
    );
    check(&a, &files);
    check(&a, &more);
    a.close().unwrap();
    // Every superblock forgot the spare; the old spare is member 1 now.
    for d in [&dirs[0], &dirs[2], &spare] {
        let sb = read_superblock(d).unwrap();
        assert!(sb.spares.is_empty(), "{}", d.display());
        assert_eq!(sb.members[1].uuid, ssb.member_uuid);
        assert_eq!(sb.members[1].state, SlotState::Active);
    }
    assert_eq!(read_superblock(&spare).unwrap().member_index, 1);
    // Without member 0, the former spare supplies its share.
    let a = assemble(&[dirs[2].clone(), spare.clone()]).unwrap();
    check(&a, &files);
    check(&a, &more);
    a.close().unwrap();
}

#[test]
fn fail_drill_then_start_replace_onto_a_new_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = make_dirs(tmp.path(), "m", 3);
    let a = create(&dirs, &[]);
    let files = fill(&a, 3, 40_000);
    a.fail(1).unwrap();
    // Durable at once: the survivors' superblocks say so.
    assert_eq!(
        read_superblock(&dirs[0]).unwrap().members[1].state,
        SlotState::Failed
    );
    assert_eq!(a.health().state(1), MemberState::Failed);
    assert!(a.status().degraded);
    // Refusals, with nothing written.
    let before = sb_events(&[dirs[0].clone(), dirs[2].clone()]);
    let e = a.fail(0).unwrap_err().to_string();
    assert!(e.contains("would fail the array"), "{e}");
    let e = a.fail(1).unwrap_err().to_string();
    assert!(e.contains("already failed"), "{e}");
    let e = a.fail(7).unwrap_err().to_string();
    assert!(e.contains("no member slot 7"), "{e}");
    let e = a
        .start_replace(0, &tmp.path().join("nope"), RebuildOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("active"), "{e}");
    let e = a
        .start_replace(1, &tmp.path().join("nope"), RebuildOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope"), "{e}");
    let e = a
        .start_replace(1, &dirs[2], RebuildOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("already member 2"), "{e}");
    let full = tmp.path().join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("photo.jpg"), b"x").unwrap();
    let e = a
        .start_replace(1, &full, RebuildOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("not empty"), "{e}");
    assert_eq!(sb_events(&[dirs[0].clone(), dirs[2].clone()]), before);
    assert_eq!(std::fs::read_dir(&full).unwrap().count(), 1);

    let fresh = tmp.path().join("new-disk");
    std::fs::create_dir(&fresh).unwrap();
    a.start_replace(1, &fresh, RebuildOptions::default())
        .unwrap();
    let rep = a.wait_rebuild().expect("the replace ran").unwrap();
    assert!(rep.complete);
    assert!(rep.bytes > 0);
    assert!(a.wait_rebuild().is_none());
    assert!(!a.status().degraded);
    check(&a, &files);
    a.close().unwrap();
    let a = assemble(&[dirs[2].clone(), fresh.clone()]).unwrap();
    check(&a, &files);
    a.close().unwrap();
}

#[test]
fn remove_detaches_only_a_failed_member() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = make_dirs(tmp.path(), "m", 3);
    let a = create(&dirs, &[]);
    let files = fill(&a, 2, 20_000);
    let e = a.remove(0).unwrap_err().to_string();
    assert!(e.contains("active"), "{e}");
    let e = a.remove(3).unwrap_err().to_string();
    assert!(e.contains("no member slot 3"), "{e}");
    a.fail(2).unwrap();
    assert!(a.remove(2).unwrap());
    let st = a.status();
    assert_eq!(st.members[2].state, MemberState::Missing);
    assert_eq!(st.members[2].path, None);
    assert!(st.degraded && !st.failed);
    // Again: nothing left to detach, and no error.
    assert!(!a.remove(2).unwrap());
    // Nothing is written to the removed member any more.
    let events2 = read_superblock(&dirs[2]).unwrap().events;
    fill(&a, 1, 10_000);
    a.sync_metadata().unwrap();
    assert_eq!(read_superblock(&dirs[2]).unwrap().events, events2);
    check(&a, &files);
    a.close().unwrap();
    assert_eq!(
        read_superblock(&dirs[0]).unwrap().members[2].state,
        SlotState::Failed
    );
}

#[test]
fn spares_are_added_and_removed_and_bad_ones_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = make_dirs(tmp.path(), "m", 3);
    let other = make_dirs(tmp.path(), "o", 3);
    create(&other, &[]).close().unwrap();
    let a = create(&dirs, &[]);
    let before = sb_events(&dirs);
    let file = tmp.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let full = tmp.path().join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("keep"), b"x").unwrap();
    let cases: Vec<(&Path, &str)> = vec![
        (&file, "not a directory"),
        (Path::new("/nonexistent-raidfs-dir"), "nonexistent"),
        (&full, "not empty"),
        (&dirs[1], "already member 1"),
        (&other[0], "belongs to array"),
    ];
    for (p, want) in cases {
        let e = a.add_spare(p).unwrap_err().to_string();
        assert!(e.contains(want), "{}: {e}", p.display());
    }
    let e = a.remove_spare(&dirs[0]).unwrap_err().to_string();
    assert!(e.contains("not a spare"), "{e}");
    assert_eq!(sb_events(&dirs), before, "a refused request wrote");
    assert_eq!(std::fs::read_dir(&full).unwrap().count(), 1);

    let s = make_dirs(tmp.path(), "s", 2);
    a.add_spare(&s[0]).unwrap();
    let e = a.add_spare(&s[0]).unwrap_err().to_string();
    assert!(e.contains("already a spare"), "{e}");
    a.add_spare(&s[1]).unwrap();
    assert_eq!(a.status().spares.len(), 2);
    assert_eq!(read_superblock(&dirs[2]).unwrap().spares.len(), 2);
    assert!(read_superblock(&s[1]).unwrap().is_spare());
    a.remove_spare(&s[0]).unwrap();
    assert_eq!(
        std::fs::read_dir(&s[0]).unwrap().count(),
        0,
        "spare not emptied"
    );
    let st = a.status();
    assert_eq!(st.spares.len(), 1);
    assert_eq!(st.spares[0].path, s[1].display().to_string());
    a.close().unwrap();
    // The remaining spare is found again at assemble (listed among the directories).
    let mut all = dirs.clone();
    all.push(s[1].clone());
    let a = assemble(&all).unwrap();
    assert_eq!(a.status().spares.len(), 1);
    a.close().unwrap();
    // Read-only: refused.
    let mut o = AssembleOptions::new(all.clone());
    o.read_only = true;
    let a = Array::assemble(&o).unwrap();
    assert!(matches!(a.add_spare(&s[0]), Err(ArrayError::ReadOnly(_))));
    assert!(matches!(a.fail(0), Err(ArrayError::ReadOnly(_))));
    a.close().unwrap();
}

#[test]
fn create_refuses_a_bad_spare_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = make_dirs(tmp.path(), "m", 3);
    let spare = make_dirs(tmp.path(), "s", 1).remove(0);
    std::fs::write(spare.join("x"), b"x").unwrap();
    let mut o = CreateOptions::new("c", Level::Raid5(Default::default()), dirs.clone());
    o.spares = vec![spare.clone()];
    o.allow_same_fs = true;
    let e = Array::create(&o).err().unwrap().to_string();
    assert!(e.contains("spare 0") && e.contains("not empty"), "{e}");
    for d in &dirs {
        assert_eq!(std::fs::read_dir(d).unwrap().count(), 0);
    }
}

#[test]
fn close_during_a_rebuild_then_assemble_resumes_from_the_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = make_dirs(tmp.path(), "m", 3);
    let a = create(&dirs, &[]);
    const FILES: u64 = 8;
    const SIZE: usize = 64 * 1024;
    let files = fill(&a, FILES, SIZE);
    a.close().unwrap();
    // Member 2's disk is gone; a new one is rebuilt slowly (throttled).
    let a = assemble(&dirs[..2]).unwrap();
    let fresh = tmp.path().join("new-disk");
    std::fs::create_dir(&fresh).unwrap();
    let slow = RebuildOptions {
        throttle_bytes_per_sec: 32 * 1024,
        ..RebuildOptions::default()
    };
    a.start_replace(2, &fresh, slow).unwrap();
    let e = a.start_replace(2, &fresh, slow).unwrap_err().to_string();
    assert!(e.contains("already running"), "{e}");
    // Wait until some of it is done, then close in the middle.
    let mut polls = 0;
    loop {
        let Some(r) = a.status().rebuild else {
            panic!("no rebuild in status; it ended: {:?}", a.wait_rebuild());
        };
        assert_eq!(r.slot, 2);
        assert_eq!(r.total_bytes, FILES * SIZE as u64);
        if r.done_bytes > 0 {
            break;
        }
        polls += 1;
        assert!(polls < 6000, "the rebuild made no progress");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    a.close().unwrap();
    let new_member: Arc<dyn Member> = Arc::new(DirMember::open(&fresh).unwrap());
    let ckpt = Checkpoint::load(&[new_member], "rebuild").expect("a rebuild checkpoint");
    assert_eq!(ckpt.target, 2);
    assert!(ckpt.done > 0 && ckpt.done < FILES * SIZE as u64, "{ckpt:?}");
    let sb = read_superblock(&dirs[0]).unwrap();
    assert!(
        matches!(sb.members[2].state, SlotState::Rebuilding { .. }),
        "{:?}",
        sb.members[2].state
    );
    // A read-only assembly resumes nothing (and writes nothing).
    let set = [dirs[0].clone(), dirs[1].clone(), fresh.clone()];
    let mut ro = AssembleOptions::new(set.to_vec());
    ro.read_only = true;
    let a = Array::assemble(&ro).unwrap();
    assert!(a.status().rebuild.is_none());
    assert!(a.wait_rebuild().is_none());
    a.close().unwrap();
    let new_member: Arc<dyn Member> = Arc::new(DirMember::open(&fresh).unwrap());
    assert_eq!(Checkpoint::load(&[new_member], "rebuild"), Some(ckpt));
    // Remount: the worker resumes where it stopped and completes.
    let a = assemble(&[dirs[0].clone(), dirs[1].clone(), fresh.clone()]).unwrap();
    let rep = a.wait_rebuild().expect("the rebuild resumed").unwrap();
    assert!(rep.complete);
    // A full rebuild writes 32 KiB per file to the new member; the resumed
    // one skipped the files done before the close.
    let full_bytes = FILES * 32 * 1024;
    assert!(rep.files < FILES, "{rep:?}");
    assert!(rep.bytes < full_bytes, "{rep:?}");
    assert_eq!(a.health().state(2), MemberState::Active);
    check(&a, &files);
    a.close().unwrap();
    // The rebuilt member serves alone with member 1.
    let a = assemble(&[dirs[1].clone(), fresh.clone()]).unwrap();
    check(&a, &files);
    a.close().unwrap();
}

#[test]
fn fsync_returns_only_once_the_survivors_record_the_failure() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = make_dirs(tmp.path(), "m", 3);
    create(&dirs, &[]).close().unwrap();
    let (a, faulty) = assemble_faulty(&dirs);
    let ino = a.create_file(ROOT_INO, os("f"), 0o644, 0, 0).unwrap().ino;
    a.write(ino, 0, &pattern(9, 40_000)).unwrap();
    a.fsync(ino, false).unwrap();
    // The next superblock write of each survivor fails once: the
    // asynchronous listener cannot record the failure; fsync must.
    for f in &faulty[..2] {
        f.inject(Fault {
            op: Op::WriteAtomic,
            path: "superblock".into(),
            skip: 0,
            times: 1,
            kind: raid_array::member::faulty::FaultKind::Eio,
        });
    }
    faulty[2].inject(Fault::eio(Op::Write, ".raidfs/data"));
    a.write(ino, 40_000, &pattern(10, 40_000)).unwrap();
    assert_eq!(a.health().state(2), MemberState::Failed);
    a.fsync(ino, false).unwrap();
    for d in &dirs[..2] {
        assert_eq!(
            read_superblock(d).unwrap().members[2].state,
            SlotState::Failed,
            "{} does not record the failure",
            d.display()
        );
    }
    a.release(ino).unwrap();
    a.close().unwrap();
}

#[test]
fn the_last_scrub_survives_reassembly() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = make_dirs(tmp.path(), "m", 3);
    let a = create(&dirs, &[]);
    fill(&a, 2, 30_000);
    assert!(a.status().last_scrub.is_none());
    let opts = ScrubOptions {
        repair: true,
        ..Default::default()
    };
    let rep = a.scrub(opts, &NoProgress).unwrap();
    let s = a.status().last_scrub.expect("scrub summary");
    assert!(s.complete && s.repair);
    assert_eq!(s.bytes, rep.bytes);
    assert_eq!(s.bytes, 60_000);
    assert_eq!(s.mismatches, 0);
    assert!(s.finished_unix > 0);
    a.close().unwrap();
    let a = assemble(&dirs).unwrap();
    assert_eq!(a.status().last_scrub, Some(s));
    a.close().unwrap();
    // Also with a member gone.
    let a = assemble(&dirs[1..]).unwrap();
    assert_eq!(a.status().last_scrub, Some(s));
    a.close().unwrap();
}

/// Asks to stop once `.1` bytes are done.
struct StopAfterBytes(std::sync::atomic::AtomicU64, u64);

impl raid_array::ops::Progress for StopAfterBytes {
    fn update(&self, done: u64, _total: u64) {
        self.0.store(done, std::sync::atomic::Ordering::SeqCst);
    }
    fn should_stop(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst) >= self.1
    }
}

/// Three files of 256 KiB, one bit flipped in the first on member 0.
fn three_files_one_rotten(dirs: &[PathBuf]) -> (Array, u64) {
    let a = create(dirs, &[]);
    let size = 256 * 1024;
    for k in 0..3u64 {
        let ino = a
            .create_file(ROOT_INO, os(&format!("f{k}")), 0o644, 0, 0)
            .unwrap()
            .ino;
        a.write(ino, 0, &pattern(k, size)).unwrap();
        a.fsync(ino, false).unwrap();
        a.release(ino).unwrap();
        if k == 0 {
            let shard = dirs[0].join(format!(".raidfs/data/{:02x}/{:016x}", ino & 0xff, ino));
            let mut raw = std::fs::read(&shard).unwrap();
            raw[5000] ^= 0x40;
            std::fs::write(&shard, &raw).unwrap();
        }
    }
    (a, size as u64)
}

/// A resumable check of `a`, stopped once it has passed the bad block of
/// the first file; the options to run it again.
fn stopped_check(a: &Array, size: u64) -> ScrubOptions {
    stopped_check_at(a, size + 1)
}

/// [`stopped_check`], stopped at the first look once `at` bytes are done.
fn stopped_check_at(a: &Array, at: u64) -> ScrubOptions {
    let check = ScrubOptions {
        resume: true,
        ..Default::default()
    };
    let first = a.scrub(check, &StopAfterBytes(0.into(), at)).unwrap();
    assert!(!first.complete && first.mismatches == 1, "{first:?}");
    check
}

/// A scrub stopped after it found a bad block and resumed later reports
/// what both parts found (the summary `status` shows speaks for the whole
/// array), and counts the file it stopped inside once.
#[test]
fn a_resumed_scrub_reports_what_the_first_part_found() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = make_dirs(tmp.path(), "m", 3);
    let (a, size) = three_files_one_rotten(&dirs);
    let check = stopped_check(&a, size);
    a.close().unwrap();
    let a = assemble(&dirs).unwrap();
    let rest = a.scrub(check, &NoProgress).unwrap();
    assert!(rest.complete, "{rest:?}");
    assert_eq!((rest.files, rest.bytes, rest.mismatches), (3, 3 * size, 1));
    let s = a.status().last_scrub.expect("scrub summary");
    assert_eq!(
        (s.files, s.mismatches, s.complete, s.repair),
        (3, 1, true, false)
    );
    a.close().unwrap();
}

/// A scrub stopped between two files, before the second one's first step,
/// counts that file once over both parts.
#[test]
fn a_scrub_stopped_between_two_files_counts_each_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = make_dirs(tmp.path(), "m", 3);
    let (a, size) = three_files_one_rotten(&dirs);
    let check = stopped_check_at(&a, size);
    let rest = a.scrub(check, &NoProgress).unwrap();
    assert_eq!((rest.files, rest.bytes, rest.mismatches), (3, 3 * size, 1));
    a.close().unwrap();
}

/// A check stopped after it found a bad block is not resumed by a repair:
/// the repair starts over, so it visits and rewrites the block the check
/// only counted, and a full check afterwards is clean.
#[test]
fn a_repair_does_not_resume_past_what_a_stopped_check_found() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = make_dirs(tmp.path(), "m", 3);
    let (a, size) = three_files_one_rotten(&dirs);
    let check = stopped_check(&a, size);
    let repair = ScrubOptions {
        repair: true,
        ..check
    };
    let rep = a.scrub(repair, &NoProgress).unwrap();
    assert!(
        rep.complete && rep.mismatches == 1 && rep.repaired >= 1,
        "{rep:?}"
    );
    assert_eq!(rep.bytes, 3 * size);
    let after = a.scrub(check, &NoProgress).unwrap();
    assert!(after.complete && after.mismatches == 0, "{after:?}");
    a.close().unwrap();
}

fn sample(spares: Vec<SpareSlot>) -> Superblock {
    Superblock {
        minor: superblock::MINOR,
        array_uuid: [1; 16],
        member_uuid: [2; 16],
        member_index: 0,
        level_code: 5,
        level_params: [0, 0],
        chunk_size: 65536,
        clean: true,
        events: 7,
        journal_seq: 3,
        created: 1_700_000_000,
        name: "a".into(),
        members: (0..3)
            .map(|k| MemberSlot {
                uuid: [2 + k; 16],
                state: SlotState::Active,
            })
            .collect(),
        spares,
    }
}

fn reseal(buf: &mut [u8]) {
    let n = buf.len() - 4;
    let crc = crc32fast::hash(&buf[..n]);
    buf[n..].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn superblock_spare_table_and_minor_versions() {
    // The 1.0 golden image still decodes, with no spares.
    let golden = include_bytes!("golden/superblock-v1.0.bin");
    let sb = Superblock::decode(golden).unwrap();
    assert_eq!(sb.minor, 0);
    assert!(sb.spares.is_empty());
    // Without spares a record stays minor 0 (a 1.0 build reads it).
    let plain = sample(Vec::new()).encode().unwrap();
    assert_eq!(u16::from_le_bytes([plain[10], plain[11]]), 0);
    assert_eq!(plain.len(), 192 + 32 * 3 + 4);
    // With spares: minor 1, spare count at 76, table after the members.
    let spares = vec![
        SpareSlot {
            uuid: [9; 16],
            flags: 0,
        },
        SpareSlot {
            uuid: [8; 16],
            flags: 0,
        },
    ];
    let sb = sample(spares.clone());
    let b = sb.encode().unwrap();
    assert_eq!(u16::from_le_bytes([b[10], b[11]]), 1);
    assert_eq!(u32::from_le_bytes([b[76], b[77], b[78], b[79]]), 2);
    assert_eq!(b.len(), 192 + 32 * 3 + 32 * 2 + 4);
    assert_eq!(&b[192 + 96..192 + 96 + 16], &[9; 16]);
    let back = Superblock::decode(&b).unwrap();
    assert_eq!(back.spares, spares);
    assert_eq!(back.members, sb.members);
    // A spare's own superblock.
    let mut own = sample(spares.clone());
    own.member_index = superblock::SPARE_INDEX;
    own.member_uuid = [8; 16];
    let ob = own.encode().unwrap();
    let back = Superblock::decode(&ob).unwrap();
    assert!(back.is_spare());
    assert_eq!(back.member_uuid, [8; 16]);
    // A spare superblock whose UUID the table lacks is refused.
    let mut bad = sample(spares.clone());
    bad.member_index = superblock::SPARE_INDEX;
    bad.member_uuid = [7; 16];
    assert!(Superblock::decode(&bad.encode().unwrap()).is_err());
    // What a minor-0 reader sees in a record with spares: the count is a
    // reserved field to it, so the length does not match and it refuses
    // the record rather than misreading it.
    let mut as_minor0 = b.clone();
    as_minor0[10] = 0;
    reseal(&mut as_minor0);
    let e = Superblock::decode(&as_minor0).unwrap_err().to_string();
    assert!(e.contains("record length"), "{e}");
    // Every flipped bit of a minor-1 record is detected.
    for i in 0..ob.len() {
        let mut x = ob.clone();
        x[i] ^= 0x10;
        assert!(Superblock::decode(&x).is_err(), "flip at {i}");
    }
}

#[test]
fn a_created_array_without_spares_writes_minor_0_superblocks() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = make_dirs(tmp.path(), "m", 3);
    create(&dirs, &[]).close().unwrap();
    let raw = std::fs::read(dirs[0].join(".raidfs/superblock")).unwrap();
    assert_eq!(u16::from_le_bytes([raw[10], raw[11]]), 0);
}

#[test]
fn a_spare_added_after_a_failure_takes_over_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = make_dirs(tmp.path(), "m", 3);
    let a = create(&dirs, &[]);
    let files = fill(&a, 3, 25_000);
    a.fail(0).unwrap();
    assert!(a.wait_rebuild().is_none(), "nothing to rebuild onto yet");
    let s = make_dirs(tmp.path(), "s", 1).remove(0);
    a.add_spare(&s).unwrap();
    let rep = a.wait_rebuild().expect("the spare took over").unwrap();
    assert!(rep.complete);
    let st = a.status();
    assert!(st.spares.is_empty());
    assert_eq!(st.members[0].state, MemberState::Active);
    assert_eq!(st.members[0].path, Some(s.display().to_string()));
    check(&a, &files);
    a.close().unwrap();
    let a = assemble(&[s.clone(), dirs[1].clone()]).unwrap();
    check(&a, &files);
    a.close().unwrap();
}

/// A crash tore a stripe (new data on one member, the old parity on the
/// other) and a member was lost: the spare's rebuild, started by assembly,
/// must not run before the resync, or it takes the stale parity for the
/// truth and writes its guess of the lost chunk to the spare with a valid
/// checksum. The untouched chunks read back right or as an I/O error, never
/// as guessed bytes, however long the caller waits before its own resync.
#[test]
fn a_spare_rebuild_after_a_crash_waits_for_the_resync_of_torn_stripes() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = make_dirs(tmp.path(), "m", 3);
    let spare = tmp.path().join("spare");
    std::fs::create_dir(&spare).unwrap();
    let a = create(&dirs, std::slice::from_ref(&spare));
    let ino = a.create_file(ROOT_INO, os("x"), 0o644, 0, 0).unwrap().ino;
    let old = pattern(1, 3 * 2 * CHUNK as usize);
    a.write(ino, 0, &old).unwrap();
    a.fsync(ino, false).unwrap();
    let shard = format!(".raidfs/data/{:02x}/{:016x}", ino & 0xff, ino);
    let sums = format!("{shard}.crc");
    let read = |d: &PathBuf, p: &str| std::fs::read(d.join(p)).unwrap();
    let before: Vec<_> = dirs
        .iter()
        .map(|d| (read(d, &shard), read(d, &sums)))
        .collect();
    // Rewrite data chunk 0 of stripe 0, no fsync, and crash.
    let new = pattern(2, CHUNK as usize);
    a.write(ino, 0, &new).unwrap();
    a.sync_metadata().unwrap();
    drop(a);
    let c = CHUNK as usize;
    let changed: Vec<usize> = (0..3)
        .filter(|&j| read(&dirs[j], &shard)[..c] != before[j].0[..c])
        .collect();
    assert_eq!(
        changed.len(),
        2,
        "the rewrite changed a data and a parity chunk"
    );
    let d0 = *changed
        .iter()
        .find(|&&j| read(&dirs[j], &shard)[..c] == new[..])
        .unwrap();
    let p = *changed.iter().find(|&&j| j != d0).unwrap();
    let other = (0..3).find(|j| !changed.contains(j)).unwrap();
    // The parity write never reached its disk: the old parity is back.
    std::fs::write(dirs[p].join(&shard), &before[p].0).unwrap();
    std::fs::write(dirs[p].join(&sums), &before[p].1).unwrap();
    // The member holding the untouched data chunk is gone.
    std::fs::rename(&dirs[other], dirs[other].with_extension("gone")).unwrap();
    let mut o = AssembleOptions::new(vec![dirs[d0].clone(), dirs[p].clone(), spare.clone()]);
    o.force = true;
    let a = Array::assemble(&o).unwrap();
    // Let the spare's rebuild finish before asking for a resync.
    a.wait_rebuild().expect("the spare takes over").unwrap();
    a.resync().unwrap();
    for k in 0..3u64 {
        let off = k * CHUNK as u64;
        if let Ok(b) = a.read(ino, off, c) {
            let want = if k == 0 {
                &new[..]
            } else {
                &old[off as usize..off as usize + c]
            };
            assert!(b == want, "offset {off}: guessed bytes served");
        }
    }
}

/// Two hot spares: the first one takes over a failed member and fails
/// during its rebuild. The second takes over at once, without waiting for
/// another event (here, none comes: nobody waits for the rebuild).
#[test]
fn when_a_spare_fails_during_its_rebuild_the_next_spare_takes_over() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = make_dirs(tmp.path(), "m", 3);
    let spares = make_dirs(tmp.path(), "spare", 2);
    let a = create(&dirs, &spares);
    let files = fill(&a, 4, 50_000);
    a.close().unwrap();
    let mut all = dirs.clone();
    all.extend(spares.iter().cloned());
    let (a, faulty) = assemble_faulty(&all);
    // The spare that takes over first fails its first data write.
    let first = a.status().spares[0].path.clone();
    let k = spares
        .iter()
        .position(|s| s.display().to_string() == first)
        .unwrap();
    faulty[3 + k].inject(Fault::eio(Op::Write, ".raidfs/data"));
    a.fail(1).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while a.health().state(1) != MemberState::Active && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let st = a.status();
    assert_eq!(
        st.members[1].state,
        MemberState::Active,
        "the second spare did not take over: {:?}",
        st.spares
    );
    assert!(st.spares.is_empty());
    check(&a, &files);
    a.close().unwrap();
}

/// Deletes one file at the scrub's first progress report and truncates
/// another; records the last report.
struct ChangeFilesOnFirstUpdate<'a>(&'a Array, std::sync::Mutex<Option<(u64, u64)>>);

impl raid_array::ops::Progress for ChangeFilesOnFirstUpdate<'_> {
    fn update(&self, done: u64, total: u64) {
        if self.1.lock().unwrap().replace((done, total)).is_none() {
            self.0.unlink(ROOT_INO, os("b")).unwrap();
            let c = self.0.lookup(ROOT_INO, os("c")).unwrap().ino;
            let cut = raid_array::SetAttr {
                size: Some(20_000),
                ..Default::default()
            };
            self.0.setattr(c, &cut).unwrap();
        }
    }
}

/// Files are deleted and truncated while a scrub runs (it takes hours on a
/// live array): what went is no loss, charges no member a read error, and
/// the progress still reaches its total.
#[test]
fn files_deleted_or_truncated_during_a_scrub_are_not_reported_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = make_dirs(tmp.path(), "m", 3);
    let a = create(&dirs, &[]);
    for (k, name) in ["a", "b", "c"].iter().enumerate() {
        let ino = a.create_file(ROOT_INO, os(name), 0o644, 0, 0).unwrap().ino;
        a.write(ino, 0, &pattern(k as u64, 64 * 1024)).unwrap();
        a.fsync(ino, false).unwrap();
        a.release(ino).unwrap();
    }
    let p = ChangeFilesOnFirstUpdate(&a, None.into());
    let repair = ScrubOptions {
        repair: true,
        ..Default::default()
    };
    let rep = a.scrub(repair, &p).unwrap();
    assert!(rep.complete, "{rep:?}");
    assert_eq!(
        (rep.unrecoverable, rep.mismatches, rep.redundancy_mismatches),
        (0, 0, 0),
        "{rep:?}"
    );
    // "a" whole, "c" as far as it was left.
    assert_eq!(rep.files, 2, "{rep:?}");
    let (done, total) = p.1.lock().unwrap().expect("progress reported");
    assert_eq!(done, total);
    let counters = a.health().counters();
    assert!(counters.iter().all(|c| c.read_errors == 0), "{counters:?}");
    let s = a.status().last_scrub.expect("scrub summary");
    assert_eq!((s.unrecoverable, s.mismatches), (0, 0), "{s:?}");
    a.close().unwrap();
}

/// A source member that fails a few reads during a rebuild (a USB hiccup)
/// leaves the target's blocks there poisoned. Once every member is healthy
/// again those blocks are rebuilt from the survivors, which all verify: a
/// repairing scrub rewrites them and the file reads back whole, rather than
/// the poison's checksum entry, which no rebuilt block matches, keeping
/// them unreadable for good.
#[test]
fn blocks_poisoned_by_a_passing_source_error_heal_once_every_member_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = make_dirs(tmp.path(), "m", 3);
    let a = create(&dirs, &[]);
    let size = 6 * CHUNK as usize;
    let data = pattern(7, size);
    let x = a.create_file(ROOT_INO, os("x"), 0o644, 0, 0).unwrap().ino;
    a.write(x, 0, &data).unwrap();
    a.fsync(x, false).unwrap();
    a.release(x).unwrap();
    a.close().unwrap();

    let (a, faulty) = assemble_faulty(&dirs);
    a.fail(2).unwrap();
    // The rebuild's batch read of member 1 and its re-read of the first
    // stripe fail; then the member is fine again.
    faulty[1].inject(Fault {
        op: Op::Read,
        path: format!("{x:016x}"),
        skip: 0,
        times: 2,
        kind: raid_array::member::faulty::FaultKind::Eio,
    });
    let fresh = tmp.path().join("new");
    std::fs::create_dir(&fresh).unwrap();
    let rep = a
        .replace(2, &fresh, RebuildOptions::default(), &NoProgress)
        .unwrap();
    faulty[1].clear_faults();
    assert!(rep.unrecoverable > 0, "nothing was poisoned: {rep:?}");
    assert!(
        a.health()
            .states()
            .iter()
            .all(|s| *s == MemberState::Active)
    );

    let repair = ScrubOptions {
        repair: true,
        ..Default::default()
    };
    let s = a.scrub(repair, &NoProgress).unwrap();
    assert_eq!(s.unrecoverable, 0, "{s:?}");
    assert!(s.repaired >= rep.unrecoverable, "{s:?}");
    assert!(a.read(x, 0, size).unwrap() == data);
    // Healed on the member itself: a check finds nothing left to do.
    let s = a.scrub(ScrubOptions::default(), &NoProgress).unwrap();
    assert_eq!((s.mismatches, s.redundancy_mismatches), (0, 0), "{s:?}");
    a.close().unwrap();
}

/// A repairing scrub that finds one row of a group without a consistent
/// version still checks the redundancy of the group's other rows: stale
/// parity in another row (here the row's old parity, bytes and checksum
/// alike, as a lost write leaves it) is recomputed, so that when a data
/// member fails afterwards its chunk is rebuilt as written, not as bytes
/// nobody wrote.
#[test]
fn a_lost_row_does_not_keep_scrub_from_the_parity_of_the_other_rows() {
    const C: usize = 16384;
    let shard = |d: &Path, ino: u64| d.join(format!(".raidfs/data/{:02x}/{ino:016x}", ino & 0xff));
    let sums = |d: &Path, ino: u64| PathBuf::from(format!("{}.crc", shard(d, ino).display()));
    let tmp = tempfile::tempdir().unwrap();
    let dirs = make_dirs(tmp.path(), "m", 3);
    let mut o = CreateOptions::new("rows", Level::Raid5(Default::default()), dirs.clone());
    o.allow_same_fs = true;
    o.chunk_size = C as u32;
    let a = Array::create(&o).unwrap();
    let x = a.create_file(ROOT_INO, os("x"), 0o644, 0, 0).unwrap().ino;
    let old = pattern(1, 2 * C);
    a.write(x, 0, &old).unwrap();
    a.fsync(x, false).unwrap();
    // The parity chunk as the old data had it.
    let role = |i: usize, d: &[u8]| {
        let now = std::fs::read(shard(&dirs[i], x)).unwrap();
        if now[..C] == d[..C] {
            0
        } else if now[..C] == d[C..] {
            1
        } else {
            2
        }
    };
    let p = (0..3).find(|&i| role(i, &old) == 2).unwrap();
    let (old_par, old_sums) = (
        std::fs::read(shard(&dirs[p], x)).unwrap(),
        std::fs::read(sums(&dirs[p], x)).unwrap(),
    );
    let new = pattern(2, 2 * C);
    a.write(x, 0, &new).unwrap();
    a.release(x).unwrap();
    a.close().unwrap();
    let d0 = (0..3).find(|&i| role(i, &new) == 0).unwrap();
    let d1 = (0..3).find(|&i| role(i, &new) == 1).unwrap();
    // Row 0 of the parity: the old one, self-consistent.
    let mut b = std::fs::read(shard(&dirs[p], x)).unwrap();
    b[..4096].copy_from_slice(&old_par[..4096]);
    std::fs::write(shard(&dirs[p], x), &b).unwrap();
    let mut s = std::fs::read(sums(&dirs[p], x)).unwrap();
    s[..4].copy_from_slice(&old_sums[..4]);
    std::fs::write(sums(&dirs[p], x), &s).unwrap();
    // Row 3: both data blocks damaged, beyond what RAID-5 rebuilds.
    for d in [d0, d1] {
        let mut b = std::fs::read(shard(&dirs[d], x)).unwrap();
        b[3 * 4096 + 9] ^= 0x40;
        std::fs::write(shard(&dirs[d], x), &b).unwrap();
    }

    let a = assemble(&dirs).unwrap();
    let rep = a
        .scrub(
            ScrubOptions {
                repair: true,
                ..Default::default()
            },
            &NoProgress,
        )
        .unwrap();
    assert_eq!(rep.unrecoverable, 2, "{rep:?}");
    assert_eq!(rep.redundancy_mismatches, 1, "{rep:?}");
    a.fail(d0).unwrap();
    for row in 0..3 {
        let r = row * 4096..(row + 1) * 4096;
        let got = a.read(x, r.start as u64, 4096).unwrap();
        assert!(got == new[r], "row {row} of D0 read back as invented bytes");
    }
    assert!(a.read(x, 3 * 4096, 4096).is_err());
    a.close().unwrap();
}
