//! Assembling: the freshest superblock wins, lagging members catch up, and
//! every kind of wrong member list is refused with a clear error and
//! without writing anything.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use raid_array::assemble::{Selector, find_members, read_superblock};
use raid_array::format::superblock::SlotState;
use raid_array::health::MemberState;
use raid_array::{Array, ArrayError, AssembleOptions, CreateOptions, ROOT_INO};
use raid_core::Level;

mod common;
use common::{assemble_faulty, make_dirs};

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

fn create(dirs: &[PathBuf], name: &str) -> Array {
    let mut o = CreateOptions::new(name, Level::Raid5(Default::default()), dirs.to_vec());
    o.allow_same_fs = true;
    o.chunk_size = 4096;
    Array::create(&o).unwrap()
}

fn assemble(dirs: &[PathBuf]) -> raid_array::Result<Array> {
    Array::assemble(&AssembleOptions::new(dirs.to_vec()))
}

/// `raidfs replace` of `slot` by `dir`, with the default options.
fn replace(
    a: &Array,
    slot: usize,
    dir: &Path,
) -> raid_array::Result<raid_array::ops::RebuildReport> {
    a.replace(slot, dir, Default::default(), &raid_array::ops::NoProgress)
}

/// Every path under `root` with its size, mtime and contents.
fn tree(root: &Path) -> BTreeMap<PathBuf, (u64, i64, i64, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let md = std::fs::symlink_metadata(&p).unwrap();
        let content = if md.is_file() {
            std::fs::read(&p).unwrap()
        } else {
            Vec::new()
        };
        out.insert(p.clone(), (md.size(), md.mtime(), md.mtime_nsec(), content));
        if md.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    out
}

fn err_text(r: raid_array::Result<Array>) -> (ArrayError, String) {
    match r {
        Ok(_) => panic!("assemble accepted a bad member list"),
        Err(e) => {
            let t = e.to_string();
            (e, t)
        }
    }
}

#[test]
fn directory_without_superblock_is_never_written() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = make_dirs(tmp.path(), "m", 3);
    let a = create(&dirs, "arr");
    a.mkdir(ROOT_INO, os("x"), 0o755, 0, 0).unwrap();
    a.close().unwrap();
    // The disk behind member 1 "did not mount": an empty directory is there.
    std::fs::rename(&dirs[1], tmp.path().join("unmounted-disk")).unwrap();
    std::fs::create_dir(&dirs[1]).unwrap();
    let before = tree(tmp.path());
    let (e, t) = err_text(assemble(&dirs));
    assert!(matches!(e, ArrayError::NotMember(_)), "{e:?}");
    assert!(
        t.contains("no raidfs superblock") && t.contains("m1"),
        "{t}"
    );
    assert!(
        tree(tmp.path()) == before,
        "a refused assemble wrote something"
    );
    // Same with the directory holding other files but no .raidfs.
    std::fs::write(dirs[1].join("photo.jpg"), b"not ours").unwrap();
    let before = tree(tmp.path());
    assert!(assemble(&dirs).is_err());
    assert!(
        tree(tmp.path()) == before,
        "a refused assemble wrote something"
    );
    // Find-by-name skips it: the array comes up degraded on the two real
    // members, and the empty directory is still untouched.
    let found = find_members(&Selector::Name("arr".into()), &dirs).unwrap();
    assert_eq!(found, vec![dirs[0].clone(), dirs[2].clone()]);
    let before_m1 = tree(&dirs[1]);
    let a = assemble(&found).unwrap();
    assert!(a.status().degraded);
    a.mkdir(ROOT_INO, os("y"), 0o755, 0, 0).unwrap();
    a.close().unwrap();
    assert!(
        tree(&dirs[1]) == before_m1,
        "the unmounted directory was written"
    );
}

#[test]
fn removed_raidfs_dir_is_refused_without_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = make_dirs(tmp.path(), "m", 3);
    create(&dirs, "arr").close().unwrap();
    std::fs::remove_dir_all(dirs[2].join(".raidfs")).unwrap();
    let before = tree(tmp.path());
    let (e, _) = err_text(assemble(&dirs));
    assert!(matches!(e, ArrayError::NotMember(_)));
    assert!(
        tree(tmp.path()) == before,
        "a refused assemble wrote something"
    );
}

#[test]
fn foreign_mixed_and_duplicate_members_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let a_dirs = make_dirs(tmp.path(), "a", 3);
    let b_dirs = make_dirs(tmp.path(), "b", 3);
    create(&a_dirs, "alpha").close().unwrap();
    create(&b_dirs, "beta").close().unwrap();
    let before = tree(tmp.path());
    // Mixed arrays.
    let mixed = vec![a_dirs[0].clone(), a_dirs[1].clone(), b_dirs[2].clone()];
    let (e, t) = err_text(assemble(&mixed));
    assert!(matches!(e, ArrayError::NotMember(_)));
    assert!(
        t.contains("mixed arrays") && t.contains("alpha") && t.contains("beta"),
        "{t}"
    );
    // The same directory twice.
    let twice = vec![a_dirs[0].clone(), a_dirs[1].clone(), a_dirs[1].clone()];
    let (_, t) = err_text(assemble(&twice));
    assert!(t.contains("same directory"), "{t}");
    // A copy of a member: two directories claim one slot.
    let copy = tmp.path().join("copy-of-a1");
    copy_dir(&a_dirs[1], &copy);
    let before_copy = tree(tmp.path());
    let dup = vec![a_dirs[0].clone(), a_dirs[1].clone(), copy.clone()];
    let (_, t) = err_text(assemble(&dup));
    assert!(
        t.contains("duplicate member") && t.contains("slot 1"),
        "{t}"
    );
    assert!(
        tree(tmp.path()) == before_copy,
        "a refused assemble wrote something"
    );
    std::fs::remove_dir_all(&copy).unwrap();
    for d in a_dirs.iter().chain(&b_dirs) {
        assert!(
            tree(d).iter().all(|(p, v)| before.get(p) == Some(v)),
            "{} was written",
            d.display()
        );
    }
    // Find by name among all candidates picks the right three.
    let _ = before;
    let mut all = a_dirs.clone();
    all.extend(b_dirs.iter().cloned());
    all.push(tmp.path().to_path_buf());
    let found = find_members(&Selector::Name("beta".into()), &all).unwrap();
    assert_eq!(found, b_dirs);
    let uuid = read_superblock(&a_dirs[0]).unwrap().array_uuid;
    assert_eq!(find_members(&Selector::Uuid(uuid), &all).unwrap(), a_dirs);
    assert!(find_members(&Selector::Name("gamma".into()), &all).is_err());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

#[test]
fn corrupt_superblock_is_refused_with_its_path() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = make_dirs(tmp.path(), "m", 3);
    create(&dirs, "arr").close().unwrap();
    let sb = dirs[0].join(".raidfs/superblock");
    let mut b = std::fs::read(&sb).unwrap();
    b[100] ^= 0xff;
    std::fs::write(&sb, &b).unwrap();
    let before = tree(tmp.path());
    let (e, t) = err_text(assemble(&dirs));
    assert!(matches!(e, ArrayError::Corrupt { .. }));
    assert!(t.contains("CRC") && t.contains("m0"), "{t}");
    assert!(
        tree(tmp.path()) == before,
        "a refused assemble wrote something"
    );
}

#[test]
fn too_few_members_fail_and_the_freshest_superblock_wins() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = make_dirs(tmp.path(), "m", 3);
    create(&dirs, "arr").close().unwrap();
    let (e, _) = err_text(assemble(&dirs[..1]));
    assert!(matches!(e, ArrayError::ArrayFailed(_)));
    // Run degraded without member 2: the others record it as failed.
    let m2_before = tree(&dirs[2]);
    let a = assemble(&dirs[..2]).unwrap();
    assert_eq!(a.health().state(2), MemberState::Missing);
    let x = a
        .mkdir(ROOT_INO, os("while-degraded"), 0o755, 0, 0)
        .unwrap()
        .ino;
    a.close().unwrap();
    let sb0 = read_superblock(&dirs[0]).unwrap();
    let sb2 = read_superblock(&dirs[2]).unwrap();
    assert!(sb0.events > sb2.events);
    assert_eq!(sb0.members[2].state, SlotState::Failed);
    // Member 2 comes back with an older superblock: the freshest one says
    // it failed, so it stays out (until rebuilt) and is not written.
    let a = assemble(&dirs).unwrap();
    let st = a.status();
    assert_eq!(st.members[2].state, MemberState::Failed);
    assert!(st.degraded);
    assert_eq!(a.lookup(ROOT_INO, os("while-degraded")).unwrap().ino, x);
    a.close().unwrap();
    assert!(tree(&dirs[2]) == m2_before, "a failed member was written");
}

#[test]
fn lagging_member_catches_up() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = make_dirs(tmp.path(), "m", 3);
    create(&dirs, "arr").close().unwrap();
    // Keep member 1's state as of now.
    let saved = tmp.path().join("saved-m1");
    copy_dir(&dirs[1].join(".raidfs"), &saved);
    let a = assemble(&dirs).unwrap();
    a.mkdir(ROOT_INO, os("newer"), 0o755, 0, 0).unwrap();
    a.close().unwrap();
    // Member 1 goes back in time (e.g. its last writes never reached the disk).
    std::fs::remove_dir_all(dirs[1].join(".raidfs")).unwrap();
    copy_dir(&saved, &dirs[1].join(".raidfs"));
    assert!(read_superblock(&dirs[1]).unwrap().events < read_superblock(&dirs[0]).unwrap().events);
    let a = assemble(&dirs).unwrap();
    assert!(!a.status().degraded);
    assert!(a.lookup(ROOT_INO, os("newer")).is_ok());
    a.close().unwrap();
    // Member 1 now holds the same metadata as the others: it alone with
    // member 2 assembles the newest namespace.
    let a = assemble(&[dirs[1].clone(), dirs[2].clone()]).unwrap();
    assert!(a.lookup(ROOT_INO, os("newer")).is_ok());
    a.close().unwrap();
}

#[test]
fn freshest_metadata_copy_wins_when_one_member_missed_journal_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = make_dirs(tmp.path(), "m", 3);
    let a = create(&dirs, "arr");
    a.mkdir(ROOT_INO, os("one"), 0o755, 0, 0).unwrap();
    drop(a); // crash
    // Member 0's journal lost its tail (the last records never hit the disk).
    let meta = dirs[0].join(".raidfs/meta");
    for e in std::fs::read_dir(&meta).unwrap() {
        let p = e.unwrap().path();
        if p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("journal-")
        {
            let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
            f.set_len(48).unwrap();
        }
    }
    let a = Array::assemble(&AssembleOptions {
        force: false,
        ..AssembleOptions::new(dirs.clone())
    })
    .unwrap();
    assert!(a.lookup(ROOT_INO, os("one")).is_ok());
    a.close().unwrap();
    // After the catch-up member 0 holds it too.
    let a = assemble(&[dirs[0].clone(), dirs[1].clone()]).unwrap();
    assert!(a.lookup(ROOT_INO, os("one")).is_ok());
    a.close().unwrap();
}

#[test]
fn dirty_and_degraded_needs_force() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = make_dirs(tmp.path(), "m", 3);
    let a = create(&dirs, "arr");
    let f = a.create_file(ROOT_INO, os("f"), 0o644, 0, 0).unwrap().ino;
    a.write(f, 0, &vec![1u8; 50_000]).unwrap();
    drop(a); // crash: the array stays dirty
    let before = tree(tmp.path());
    let (e, t) = err_text(assemble(&dirs[..2]));
    assert!(matches!(e, ArrayError::ArrayFailed(_)));
    assert!(
        t.contains("not shut down cleanly") && t.contains("force"),
        "{t}"
    );
    assert!(
        tree(tmp.path()) == before,
        "a refused assemble wrote something"
    );
    let mut o = AssembleOptions::new(dirs[..2].to_vec());
    o.force = true;
    let a = Array::assemble(&o).unwrap();
    assert!(a.status().degraded);
    a.close().unwrap();
    // Dirty but complete: assembles without force.
    let tmp2 = tempfile::tempdir().unwrap();
    let dirs2 = make_dirs(tmp2.path(), "m", 3);
    drop(create(&dirs2, "arr2"));
    assemble(&dirs2).unwrap().close().unwrap();
}

#[test]
fn create_validates_member_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = make_dirs(tmp.path(), "m", 3);
    // Same filesystem refused by default.
    let o = CreateOptions::new("x", Level::Raid5(Default::default()), dirs.clone());
    let e = Array::create(&o).err().unwrap();
    assert!(e.to_string().contains("same filesystem"), "{e}");
    // Missing directory, bad name, a member of another array, bad geometry.
    let mut o = CreateOptions::new("x", Level::Raid5(Default::default()), dirs.clone());
    o.allow_same_fs = true;
    let mut missing = o.clone();
    missing.members[2] = tmp.path().join("nope");
    assert!(Array::create(&missing).is_err());
    let mut bad = o.clone();
    bad.name = "no/slash".into();
    assert!(Array::create(&bad).is_err());
    let mut one = o.clone();
    one.members.truncate(1);
    assert!(Array::create(&one).is_err());
    let before = tree(tmp.path());
    assert!(
        before
            .keys()
            .all(|p| !p.to_string_lossy().contains(".raidfs")),
        "a refused create wrote"
    );
    create(&dirs, "first").close().unwrap();
    let e = Array::create(&o).err().unwrap();
    assert!(e.to_string().contains("already holds a .raidfs"), "{e}");
    // A directory holding anything is refused, naming the directory and
    // what it holds, and nothing is written to any of the directories.
    let other = make_dirs(tmp.path(), "n", 3);
    std::fs::write(other[1].join("existing.txt"), b"keep me").unwrap();
    let mut o2 = CreateOptions::new("second", Level::Raid1, other.clone());
    o2.allow_same_fs = true;
    let before = tree(tmp.path());
    let e = Array::create(&o2).err().unwrap().to_string();
    assert!(e.contains(&other[1].display().to_string()), "{e}");
    assert!(e.contains("existing.txt") && e.contains("not empty"), "{e}");
    assert_eq!(before, tree(tmp.path()), "a refused create wrote");
    // An empty lost+found (a fresh ext4) is fine; a non-empty one is not.
    std::fs::remove_file(other[1].join("existing.txt")).unwrap();
    std::fs::create_dir(other[0].join("lost+found")).unwrap();
    std::fs::write(other[0].join("lost+found/#12"), b"x").unwrap();
    let e = Array::create(&o2).err().unwrap().to_string();
    assert!(e.contains("lost+found"), "{e}");
    std::fs::remove_file(other[0].join("lost+found/#12")).unwrap();
    Array::create(&o2).unwrap().close().unwrap();
    assert!(other[0].join("lost+found").is_dir());
}

#[test]
fn replace_rebuilds_a_missing_member_and_it_serves_afterwards() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = make_dirs(tmp.path(), "m", 3);
    let a = create(&dirs, "arr");
    let big = a.create_file(ROOT_INO, os("big"), 0o644, 0, 0).unwrap().ino;
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    a.write(big, 0, &data).unwrap();
    a.release(big).unwrap();
    let small = a.mknod(ROOT_INO, os("small"), 0o644, 0, 0, 0).unwrap().ino;
    a.write(small, 0, b"tiny").unwrap();
    a.close().unwrap();
    // Member 2's disk died; a new empty disk takes its place.
    let a = assemble(&dirs[..2]).unwrap();
    assert!(a.status().degraded);
    let fresh = tmp.path().join("new-disk");
    std::fs::create_dir(&fresh).unwrap();
    // Refused: an active slot, a directory of another array, a member twice.
    assert!(replace(&a, 0, &fresh).is_err());
    assert!(replace(&a, 2, &dirs[1]).is_err());
    let report = replace(&a, 2, &fresh).unwrap();
    assert!(report.complete);
    assert_eq!(report.unrecoverable, 0);
    assert!(!a.status().degraded);
    a.close().unwrap();
    let new_set = vec![dirs[0].clone(), dirs[1].clone(), fresh.clone()];
    let a = assemble(&new_set).unwrap();
    assert!(
        a.status()
            .members
            .iter()
            .all(|m| m.state == MemberState::Active)
    );
    a.close().unwrap();
    // Without member 0, the rebuilt member supplies its chunks and metadata.
    let a = assemble(&[dirs[1].clone(), fresh.clone()]).unwrap();
    assert_eq!(a.read(big, 0, 400_000).unwrap(), data);
    assert_eq!(a.read(small, 0, 10).unwrap(), b"tiny");
    a.close().unwrap();
    // The old member 2 is refused when listed: its slot now belongs to the
    // new disk.
    let e = assemble(&[dirs[1].clone(), fresh.clone(), dirs[2].clone()])
        .err()
        .unwrap();
    assert!(e.to_string().contains("replaced"), "{e}");
    // By name or UUID, among candidates that still hold the old disk (its
    // superblock untouched), the old member is left out and the array
    // starts whole.
    let old_sb = read_superblock(&dirs[2]).unwrap();
    let mut candidates = dirs.clone();
    candidates.push(fresh.clone());
    for sel in [
        Selector::Name("arr".into()),
        Selector::Uuid(old_sb.array_uuid),
    ] {
        let found = find_members(&sel, &candidates).unwrap();
        assert_eq!(
            found,
            vec![dirs[0].clone(), dirs[1].clone(), fresh.clone()],
            "{sel}"
        );
    }
    let a = assemble(&find_members(&Selector::Name("arr".into()), &candidates).unwrap()).unwrap();
    // Slot 2 is served by the new disk (slot 0 stays failed from the
    // degraded assembly above).
    let st = a.status();
    assert_eq!(st.members[2].state, MemberState::Active);
    assert_eq!(st.members[2].path.as_deref(), fresh.to_str());
    assert_eq!(a.read(big, 0, 400_000).unwrap(), data);
    a.close().unwrap();
    assert_eq!(
        read_superblock(&dirs[2]).unwrap(),
        old_sb,
        "the old member was written"
    );
}

#[test]
fn a_member_failing_a_journal_write_is_recorded_as_failed() {
    use raid_array::member::faulty::{Fault, Op};

    let tmp = tempfile::tempdir().unwrap();
    let dirs = make_dirs(tmp.path(), "m", 3);
    create(&dirs, "arr").close().unwrap();
    let (a, faulty) = assemble_faulty(&dirs);
    faulty[1].inject(Fault::eio(Op::Write, "journal"));
    // The operation still succeeds: two members hold it.
    a.mkdir(ROOT_INO, os("after-failure"), 0o755, 0, 0).unwrap();
    assert_eq!(a.health().state(1), MemberState::Failed);
    assert_eq!(a.health().counters()[1].write_errors, 1);
    assert!(a.status().degraded);
    a.close().unwrap();
    let sb0 = read_superblock(&dirs[0]).unwrap();
    assert_eq!(sb0.members[1].state, SlotState::Failed);
    assert!(sb0.events > read_superblock(&dirs[1]).unwrap().events);
    // At the next assemble the failed member stays out, and the namespace
    // comes from the members that kept the journal.
    let a = assemble(&dirs).unwrap();
    assert_eq!(a.health().state(1), MemberState::Failed);
    assert!(a.lookup(ROOT_INO, os("after-failure")).is_ok());
    a.close().unwrap();
}

#[test]
fn read_only_assembly_writes_nothing_and_refuses_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = make_dirs(tmp.path(), "m", 3);
    let a = create(&dirs, "arr");
    let f = a.create_file(ROOT_INO, os("f"), 0o644, 0, 0).unwrap().ino;
    a.write(f, 0, &[7u8; 20_000]).unwrap();
    a.release(f).unwrap();
    a.close().unwrap();
    let before = tree(tmp.path());
    let mut o = AssembleOptions::new(dirs.clone());
    o.read_only = true;
    let a = Array::assemble(&o).unwrap();
    assert_eq!(a.read(f, 0, 30_000).unwrap(), vec![7u8; 20_000]);
    let ro = |r: raid_array::Result<()>| matches!(r, Err(ArrayError::ReadOnly(_)));
    assert!(ro(a.write(f, 0, b"x").map(|_| ())));
    assert!(ro(a.mkdir(ROOT_INO, os("d"), 0o755, 0, 0).map(|_| ())));
    assert!(ro(a.unlink(ROOT_INO, os("f"))));
    assert!(ro(a.rename(ROOT_INO, os("f"), ROOT_INO, os("g"), 0)));
    assert!(ro(a.checkpoint().map(|_| ())));
    // A repairing scrub is refused; a checking one runs.
    let repair = raid_array::ops::ScrubOptions {
        repair: true,
        ..Default::default()
    };
    assert!(ro(a
        .scrub(repair, &raid_array::ops::NoProgress)
        .map(|_| ())));
    let check = a
        .scrub(Default::default(), &raid_array::ops::NoProgress)
        .unwrap();
    assert!(check.complete);
    a.fsync(f, false).unwrap();
    a.sync_metadata().unwrap();
    assert!(
        a.status().clean,
        "a read-only assembly marked the array dirty"
    );
    a.close().unwrap();
    assert!(tree(tmp.path()) == before, "a read-only assembly wrote");
    // A read-only assembly serves the file whole and changes no member.
    let reads_whole_and_writes_nothing = |what: &str| {
        let before = tree(tmp.path());
        let a = Array::assemble(&o).unwrap();
        assert_eq!(a.read(f, 0, 30_000).unwrap(), vec![7u8; 20_000]);
        a.close().unwrap();
        assert!(tree(tmp.path()) == before, "a read-only read {what}");
    };
    // A bit in every block of a shard (some of them hold data, whatever
    // the layout), flipped and flipped back.
    let shard = dirs[0].join(format!(".raidfs/data/{:02x}/{:016x}", f & 0xff, f));
    let flip = || {
        let mut raw = std::fs::read(&shard).unwrap();
        for b in raw.iter_mut().step_by(4096) {
            *b ^= 0x40;
        }
        std::fs::write(&shard, &raw).unwrap();
    };
    // A block that fails its checksum is served rebuilt, and not rewritten.
    flip();
    reads_whole_and_writes_nothing("repaired a member");
    // A shard whose checksum file is gone (on another member): served
    // rebuilt, and the file is not made again.
    flip();
    let other = dirs[1].join(format!(".raidfs/data/{:02x}/{:016x}.crc", f & 0xff, f));
    std::fs::remove_file(other).unwrap();
    reads_whole_and_writes_nothing("made a checksum file again");
}

#[test]
fn a_listed_directory_that_is_no_member_says_how_to_start_degraded() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = make_dirs(tmp.path(), "m", 3);
    create(&dirs, "photos").close().unwrap();
    // Member 2's disk is gone: its directory went with it.
    std::fs::rename(&dirs[2], tmp.path().join("gone")).unwrap();
    let before = tree(tmp.path());
    let (e, t) = err_text(assemble(&dirs));
    assert!(matches!(e, ArrayError::NotMember(_)), "{e:?}");
    assert!(t.contains(&dirs[2].display().to_string()), "{t}");
    assert!(t.contains("degraded"), "{t}");
    assert!(t.contains("mount.raidfs photos DIR"), "{t}");
    assert!(tree(tmp.path()) == before, "a refused assemble wrote");
    // By name, among candidates that include the missing directory, the
    // members found assemble degraded.
    let found = find_members(&Selector::Name("photos".into()), &dirs).unwrap();
    assert_eq!(found, dirs[..2].to_vec());
    let a = assemble(&found).unwrap();
    assert!(a.status().degraded && !a.status().failed);
    a.close().unwrap();
}

/// A replaced disk that was assembled on its own afterwards (its events
/// overtook the array's) must not make assembly by name drop the disk that
/// replaced it: the members disagree, nothing is left out, and assembly
/// refuses the set instead of going back to the old disk's data.
#[test]
fn by_name_a_replaced_disk_used_on_its_own_is_not_taken_over_the_new_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = make_dirs(tmp.path(), "m", 2);
    let mut o = CreateOptions::new("mirror", Level::Raid1, dirs.clone());
    o.allow_same_fs = true;
    o.chunk_size = 4096;
    let a = Array::create(&o).unwrap();
    let f = a.create_file(ROOT_INO, os("f"), 0o644, 0, 0).unwrap().ino;
    a.write(f, 0, b"v1").unwrap();
    a.fail(1).unwrap();
    let y = tmp.path().join("y");
    std::fs::create_dir(&y).unwrap();
    assert!(replace(&a, 1, &y).unwrap().complete);
    a.write(f, 0, b"v2").unwrap();
    a.close().unwrap();
    // The old disk, alone, several times: its events grow past the array's.
    for _ in 0..3 {
        // (Failed while the array was open, its superblock says dirty.)
        let mut o = AssembleOptions::new(dirs[1..].to_vec());
        o.force = true;
        let old = Array::assemble(&o).unwrap();
        old.write(f, 0, b"XX").unwrap();
        old.close().unwrap();
    }
    let candidates = vec![dirs[0].clone(), dirs[1].clone(), y.clone()];
    let found = find_members(&Selector::Name("mirror".into()), &candidates).unwrap();
    assert_eq!(found.len(), 3, "a directory was left out: {found:?}");
    assert!(assemble(&found).is_err(), "the diverged set assembled");
    // The array as replaced still assembles from its own members.
    let a = assemble(&[dirs[0].clone(), y.clone()]).unwrap();
    assert_eq!(a.read(f, 0, 2).unwrap(), b"v2");
    a.close().unwrap();
}

#[test]
fn a_former_member_back_after_a_disconnect_is_taken_back_by_replace_with_a_full_rebuild() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = make_dirs(tmp.path(), "m", 3);
    let a = create(&dirs, "arr");
    let f = a.create_file(ROOT_INO, os("f"), 0o644, 0, 0).unwrap().ino;
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    a.write(f, 0, &data).unwrap();
    a.release(f).unwrap();
    a.close().unwrap();
    // Member 2's USB disk was unplugged at mount: started degraded, slot 2
    // recorded failed; a file written meanwhile is missing from it.
    let a = assemble(&dirs[..2]).unwrap();
    let g = a.create_file(ROOT_INO, os("g"), 0o644, 0, 0).unwrap().ino;
    a.write(g, 0, b"written while degraded").unwrap();
    a.release(g).unwrap();
    // Refused: a copy of a member in use, and another array's member.
    let copy = tmp.path().join("copy-of-0");
    copy_dir(&dirs[0], &copy);
    let msg = replace(&a, 2, &copy).unwrap_err().to_string();
    assert!(
        msg.contains("member 0 of this array, which is in use"),
        "{msg}"
    );
    std::fs::create_dir(tmp.path().join("other")).unwrap();
    let other = make_dirs(&tmp.path().join("other"), "o", 3);
    create(&other, "another").close().unwrap();
    let msg = replace(&a, 2, &other[0]).unwrap_err().to_string();
    assert!(msg.contains("\"another\""), "{msg}");
    assert!(
        other[0].join(".raidfs").exists(),
        "a refused directory was touched"
    );
    // Anything else beside its .raidfs: refused before anything is removed.
    std::fs::write(dirs[2].join("stray.txt"), b"x").unwrap();
    let msg = replace(&a, 2, &dirs[2]).unwrap_err().to_string();
    assert!(msg.contains("stray.txt"), "{msg}");
    assert!(dirs[2].join(".raidfs/superblock").exists());
    std::fs::remove_file(dirs[2].join("stray.txt")).unwrap();
    // The disk is back: its own directory is taken back and, asked for
    // `--full`, its old contents are discarded and it is rebuilt whole
    // (without, it is re-added: readd.rs).
    let report = a
        .replace(
            2,
            &dirs[2],
            raid_array::ops::RebuildOptions {
                full: true,
                ..Default::default()
            },
            &raid_array::ops::NoProgress,
        )
        .unwrap();
    assert!(
        report.complete && !report.readd && report.unrecoverable == 0,
        "{report:?}"
    );
    assert!(!a.status().degraded);
    assert!(!dirs[2].join(".raidfs-discarded").exists());
    a.close().unwrap();
    // It serves: without member 0, both files read back whole.
    let a = assemble(&[dirs[1].clone(), dirs[2].clone()]).unwrap();
    assert_eq!(a.read(f, 0, 300_000).unwrap(), data);
    assert_eq!(a.read(g, 0, 100).unwrap(), b"written while degraded");
    a.close().unwrap();
}

#[test]
fn a_member_failing_its_superblock_write_is_counted_and_caught_up_at_the_next_assembly() {
    use raid_array::member::faulty::{Fault, Op};

    let tmp = tempfile::tempdir().unwrap();
    let dirs = make_dirs(tmp.path(), "m", 3);
    create(&dirs, "arr").close().unwrap();
    let (a, faulty) = assemble_faulty(&dirs);
    a.mkdir(ROOT_INO, os("d"), 0o755, 0, 0).unwrap();
    faulty[1].inject(Fault::eio(Op::WriteAtomic, "superblock"));
    // Closing writes the superblocks: member 1's write fails, is counted,
    // and leaves its copy behind; the member is not failed for it.
    let health = a.health().clone();
    a.close().unwrap();
    // At least the closing write (the dirty mark after the mkdir may be
    // written late and fail too).
    assert!(
        health.counters()[1].write_errors >= 1,
        "{:?}",
        health.counters()
    );
    assert_eq!(health.state(1), MemberState::Active);
    let (sb0, sb1) = (
        read_superblock(&dirs[0]).unwrap(),
        read_superblock(&dirs[1]).unwrap(),
    );
    assert!(sb1.events < sb0.events, "{} {}", sb1.events, sb0.events);
    let a = assemble(&dirs).unwrap();
    assert_eq!(a.health().state(1), MemberState::Active);
    assert!(a.lookup(ROOT_INO, os("d")).is_ok());
    a.close().unwrap();
    assert_eq!(
        read_superblock(&dirs[1]).unwrap().events,
        read_superblock(&dirs[0]).unwrap().events
    );
}

#[test]
fn a_member_failed_while_running_is_taken_back_but_one_used_on_its_own_is_not() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = make_dirs(tmp.path(), "m", 3);
    create(&dirs, "arr").close().unwrap();
    let old_1 = tmp.path().join("old-copy-of-1");
    copy_dir(&dirs[1], &old_1);
    // `raidfs fail 2` on a running array, then replace onto the same,
    // still open, directory: its lock moves to the new handle.
    let a = assemble(&dirs).unwrap();
    a.fail(2).unwrap();
    let f = a.create_file(ROOT_INO, os("f"), 0o644, 0, 0).unwrap().ino;
    a.write(f, 0, b"while 2 was out").unwrap();
    a.release(f).unwrap();
    let r = replace(&a, 2, &dirs[2]).unwrap();
    assert!(r.complete && r.unrecoverable == 0, "{r:?}");
    a.fail(2).unwrap();
    a.close().unwrap();
    // Member 2 is then started with an old copy of member 1, without
    // member 0, and written to: it holds changes the array lacks.
    let mut opts = AssembleOptions::new(vec![old_1.clone(), dirs[2].clone()]);
    opts.force = true;
    let split = Array::assemble(&opts).unwrap();
    split
        .mkdir(ROOT_INO, os("only-on-the-split"), 0o755, 0, 0)
        .unwrap();
    split.close().unwrap();
    let a = assemble(&dirs[..2]).unwrap();
    let msg = replace(&a, 2, &dirs[2]).unwrap_err().to_string();
    assert!(msg.contains("used without member 0"), "{msg}");
    assert!(
        dirs[2].join(".raidfs/superblock").exists(),
        "it was touched"
    );
    a.close().unwrap();
}

/// A member put back as an older copy of itself (a restored image, a disk
/// that lost its last writes) is left out as failed, in either slot: its
/// chunks and checksums agree with each other, and served or used to
/// "repair" the other half they would roll an acknowledged write back.
#[test]
fn an_older_copy_of_a_member_is_left_out() {
    for stale in 0..2 {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = make_dirs(tmp.path(), "m", 2);
        let mut o = CreateOptions::new("old", Level::Raid1, dirs.clone());
        o.allow_same_fs = true;
        let a = Array::create(&o).unwrap();
        let f = a.create_file(ROOT_INO, os("f"), 0o644, 0, 0).unwrap().ino;
        let (v1, v2) = (common::pattern(1, 65_536), common::pattern(2, 65_536));
        a.write(f, 0, &v1).unwrap();
        a.close().unwrap();
        let saved = tmp.path().join("saved");
        common::copy_tree(&dirs[stale].join(".raidfs"), &saved);
        let a = assemble(&dirs).unwrap();
        a.write(f, 0, &v2).unwrap();
        a.close().unwrap();
        std::fs::remove_dir_all(dirs[stale].join(".raidfs")).unwrap();
        common::copy_tree(&saved, &dirs[stale].join(".raidfs"));
        let a = assemble(&dirs).unwrap();
        let st = a.status();
        assert!(st.degraded, "slot {stale}");
        assert_eq!(st.members[stale].state, MemberState::Failed);
        assert!(
            a.read(f, 0, 65_536).unwrap() == v2,
            "slot {stale}: stale data"
        );
        let rep = a
            .scrub(
                raid_array::ops::ScrubOptions {
                    repair: true,
                    ..Default::default()
                },
                &raid_array::ops::NoProgress,
            )
            .unwrap();
        assert_eq!(rep.repaired, 0, "slot {stale}: {rep:?}");
        assert!(a.read(f, 0, 65_536).unwrap() == v2);
        a.close().unwrap();
    }
}

#[test]
fn a_member_reached_by_two_paths_is_found_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = make_dirs(tmp.path(), "m", 3);
    create(&dirs, "twice").close().unwrap();
    // Member 0's disk is also reachable elsewhere (a bind mount for an
    // export, here a symlink): the candidates list both paths.
    let other = tmp.path().join("export");
    std::os::unix::fs::symlink(&dirs[0], &other).unwrap();
    let mut candidates = dirs.clone();
    candidates.push(other);
    let found = find_members(&Selector::Name("twice".into()), &candidates).unwrap();
    assert_eq!(found, dirs);
    let a = assemble(&found).unwrap();
    assert!(!a.status().degraded);
    a.close().unwrap();

    // A read-only bind mount listed first: the writable path is taken (the
    // read-only one would fail the member at its first write).
    assert!(
        rustix::process::geteuid().is_root(),
        "this test needs root (for a bind mount)"
    );
    let ro = tmp.path().join("a-readonly");
    std::fs::create_dir(&ro).unwrap();
    let mount = |args: &[&std::ffi::OsStr]| {
        let st = std::process::Command::new("mount")
            .args(args)
            .status()
            .unwrap();
        assert!(st.success(), "mount {args:?}");
    };
    mount(&[OsStr::new("--bind"), dirs[1].as_os_str(), ro.as_os_str()]);
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(ro.clone());
    mount(&[
        OsStr::new("-o"),
        OsStr::new("remount,bind,ro"),
        ro.as_os_str(),
    ]);
    let mut candidates = vec![ro.clone()];
    candidates.extend(dirs.iter().cloned());
    let found = find_members(&Selector::Name("twice".into()), &candidates).unwrap();
    assert_eq!(
        found,
        vec![dirs[1].clone(), dirs[0].clone(), dirs[2].clone()]
    );
    let a = assemble(&found).unwrap();
    a.mkdir(ROOT_INO, os("written"), 0o755, 0, 0).unwrap();
    assert!(!a.status().degraded);
    a.close().unwrap();
}

/// Rewrite the superblock of member directory `d` as a create leaves it
/// before its last step: events 0, not clean.
fn as_being_created(d: &Path) {
    let mut sb = read_superblock(d).unwrap();
    sb.events = 0;
    sb.clean = false;
    let path = d.join(raid_array::format::superblock::PATH);
    std::fs::write(path, sb.encode().unwrap()).unwrap();
}

#[test]
fn an_interrupted_create_is_never_assembled_and_the_next_create_takes_it_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = make_dirs(tmp.path(), "m", 3);
    // A create killed before its last step: every directory still marked as
    // an array being created.
    create(&dirs, "half").close().unwrap();
    dirs.iter().for_each(|d| as_being_created(d));
    let (e, t) = err_text(assemble(&dirs));
    assert!(matches!(e, ArrayError::Invalid(_)), "{e:?}");
    assert!(
        t.contains("was interrupted") && t.contains("raidfs create"),
        "{t}"
    );
    let e = find_members(&Selector::Name("half".into()), &dirs).unwrap_err();
    assert!(e.to_string().contains("was interrupted"), "{e}");
    // A directory holding a file's data is never taken back.
    let data = dirs[0].join(".raidfs/data/01");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("0000000000000001"), b"x").unwrap();
    let mut o = CreateOptions::new("again", Level::Raid5(Default::default()), dirs.clone());
    o.allow_same_fs = true;
    let Err(e) = Array::create(&o) else {
        panic!("a directory holding data was taken back");
    };
    assert!(e.to_string().contains("already holds a .raidfs"), "{e}");
    assert!(data.join("0000000000000001").exists());
    std::fs::remove_dir_all(dirs[0].join(".raidfs/data")).unwrap();
    // The next create takes the directories back, and one where the first
    // create stopped inside its first write (nothing but the superblock
    // being written).
    std::fs::remove_dir_all(dirs[2].join(".raidfs")).unwrap();
    std::fs::create_dir(dirs[2].join(".raidfs")).unwrap();
    std::fs::write(dirs[2].join(".raidfs/superblock.tmp"), b"half").unwrap();
    let a = create(&dirs, "again");
    assert_eq!(a.status().name, "again");
    a.close().unwrap();
    let a = assemble(&dirs).unwrap();
    assert!(!a.status().degraded);
    a.close().unwrap();

    // Killed during its last step: one member finished, the others not,
    // but all of them written whole before it. It assembles, whole.
    let dirs = make_dirs(tmp.path(), "n", 3);
    create(&dirs, "most").close().unwrap();
    as_being_created(&dirs[1]);
    as_being_created(&dirs[2]);
    let a = assemble(&dirs).unwrap();
    assert!(!a.status().degraded);
    a.mkdir(ROOT_INO, os("d"), 0o755, 0, 0).unwrap();
    a.close().unwrap();
    let a = assemble(&dirs).unwrap();
    assert!(!a.status().degraded);
    a.close().unwrap();
}
