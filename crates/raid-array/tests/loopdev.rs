//! Members on real filesystems: small ext4 images on loop devices, mounted.
//! One member's filesystem is lazily unmounted in the middle of a write and
//! its device shrunk to nothing underneath (what an unplugged USB disk looks
//! like to the filesystem: every device I/O fails). The store must notice,
//! go degraded, and keep every byte.
//!
//! Needs root, loop devices, `mkfs.ext4` and `losetup`; without them the
//! test fails with a message saying what is missing (it does not skip).
//! Mounts, loop devices and images are removed on drop, also on failure.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use raid_array::data::DataStore;
use raid_array::health::{Health, MemberState};
use raid_array::member::{DirMember, Member};
use raid_core::Geometry;
use raid_core::layout::{Level, Raid5Layout};

mod common;
use common::pattern;

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| {
        panic!("loopdev test needs `{cmd}` (root, util-linux, e2fsprogs): {e}")
    });
    assert!(
        out.status.success(),
        "`{cmd} {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

struct LoopMember {
    image: PathBuf,
    mount: PathBuf,
    device: String,
    mounted: bool,
}

impl LoopMember {
    fn new(root: &Path, i: usize) -> Self {
        let image = root.join(format!("m{i}.img"));
        let mount = root.join(format!("m{i}"));
        std::fs::create_dir_all(&mount).unwrap();
        std::fs::File::create(&image)
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        run("mkfs.ext4", &["-q", "-F", image.to_str().unwrap()]);
        let device = run("losetup", &["--find", "--show", image.to_str().unwrap()]);
        let mut m = LoopMember {
            image,
            mount,
            device,
            mounted: false,
        };
        run("mount", &[&m.device, m.mount.to_str().unwrap()]);
        m.mounted = true;
        m
    }

    /// Detach the filesystem (`umount -l`) and take the device away under it.
    fn unplug(&mut self) {
        run("umount", &["-l", self.mount.to_str().unwrap()]);
        self.mounted = false;
        std::fs::File::options()
            .write(true)
            .open(&self.image)
            .unwrap()
            .set_len(0)
            .unwrap();
        run("losetup", &["--set-capacity", &self.device]);
    }
}

impl Drop for LoopMember {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
        }
        let _ = Command::new("losetup").arg("-d").arg(&self.device).status();
        let _ = std::fs::remove_file(&self.image);
    }
}

#[test]
fn unplugged_member_mid_write_goes_degraded_and_keeps_data() {
    assert!(
        rustix::process::geteuid().is_root(),
        "loopdev test needs root (to create loop devices and mount ext4 images)"
    );
    assert!(
        Path::new("/dev/loop-control").exists(),
        "loopdev test needs loop device support (/dev/loop-control is missing; modprobe loop)"
    );
    let root = tempfile::tempdir().unwrap();
    let mut loops: Vec<LoopMember> = (0..3).map(|i| LoopMember::new(root.path(), i)).collect();
    let members: Vec<Option<Arc<dyn Member>>> = loops
        .iter()
        .map(|l| Some(Arc::new(DirMember::open(&l.mount).unwrap()) as Arc<dyn Member>))
        .collect();
    let health = Arc::new(Health::new(vec![MemberState::Active; 3]));
    let geometry = Geometry::new(Level::Raid5(Raid5Layout::LeftSymmetric), 3, 16 * 1024).unwrap();
    let store = DataStore::new(geometry, members, health.clone()).unwrap();

    let a = pattern(1, 4 << 20);
    store.write(1, 0, &a, 0).unwrap();
    store.sync(1).unwrap();

    let b = pattern(2, 6 << 20);
    let mut off = 0;
    for (i, piece) in b.chunks(256 * 1024).enumerate() {
        if i == 10 {
            loops[1].unplug();
        }
        store.write(2, off as u64, piece, off as u64).unwrap();
        off += piece.len();
    }
    store.sync(2).unwrap();
    assert_eq!(
        health.state(1),
        MemberState::Failed,
        "the unplugged member must be marked failed"
    );
    assert_eq!(health.state(0), MemberState::Active);
    assert_eq!(health.state(2), MemberState::Active);

    for (ino, want) in [(1u64, &a), (2, &b)] {
        let mut got = vec![0u8; want.len()];
        assert_eq!(
            store.read(ino, 0, &mut got, want.len() as u64).unwrap(),
            want.len()
        );
        assert!(got == *want, "inode {ino} differs after the unplug");
    }
    drop(store);
}

#[test]
fn a_full_member_answers_enospc_and_fails_nobody() {
    assert!(
        rustix::process::geteuid().is_root(),
        "loopdev test needs root (to create loop devices and mount ext4 images)"
    );
    assert!(
        Path::new("/dev/loop-control").exists(),
        "loopdev test needs loop device support (/dev/loop-control is missing; modprobe loop)"
    );
    let root = tempfile::tempdir().unwrap();
    let loops: Vec<LoopMember> = (0..2).map(|i| LoopMember::new(root.path(), i)).collect();
    let members: Vec<Option<Arc<dyn Member>>> = loops
        .iter()
        .map(|l| Some(Arc::new(DirMember::open(&l.mount).unwrap()) as Arc<dyn Member>))
        .collect();
    let health = Arc::new(Health::new(vec![MemberState::Active; 2]));
    let geometry = Geometry::new(Level::Raid1, 2, 64 * 1024).unwrap();
    let store = DataStore::new(geometry, members, health.clone()).unwrap();
    let piece = pattern(3, 1 << 20);
    let mut size = 0u64;
    let err = loop {
        match store.write(1, size, &piece, size) {
            Ok(()) => size += piece.len() as u64,
            Err(e) => break e,
        }
        assert!(size < 256 << 20, "a 64 MiB member never filled up");
    };
    assert!(
        matches!(err, raid_array::ArrayError::NoSpace),
        "got {err:?}"
    );
    assert_eq!(err.errno(), 28);
    assert_eq!(
        health.states(),
        vec![MemberState::Active; 2],
        "a full disk is not a failed disk"
    );
    let mut got = vec![0u8; piece.len()];
    for k in 0..size / piece.len() as u64 {
        store
            .read(1, k * piece.len() as u64, &mut got, size)
            .unwrap();
        assert!(got == piece, "piece {k} differs");
    }
    drop(store);
}

/// `dir` mounted over itself (`mount --bind`): the same files on a new
/// mount, as a disk unplugged and mounted again at its old place is.
struct BindMount(PathBuf);

impl BindMount {
    fn new(dir: &Path) -> Self {
        let d = dir.to_str().unwrap();
        run("mount", &["--bind", d, d]);
        BindMount(dir.to_path_buf())
    }
}

impl Drop for BindMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_member_that_failed_here_is_offered_back_only_from_a_new_mount() {
    use raid_array::member::faulty::{Fault, Op};
    use raid_array::ops::RebuildOptions;
    use raid_array::{Array, CreateOptions, ROOT_INO};
    assert!(
        rustix::process::geteuid().is_root(),
        "loopdev test needs root (to bind-mount a member directory)"
    );
    let tmp = common::scratch();
    let dirs = common::make_dirs(tmp.path(), "m", 3);
    let mut o = CreateOptions::new("arr", Level::Raid5(Default::default()), dirs.clone());
    o.allow_same_fs = true;
    o.chunk_size = 4096;
    let a = Array::create(&o).unwrap();
    let f = a
        .create_file(ROOT_INO, std::ffi::OsStr::new("f"), 0o644, 0, 0)
        .unwrap()
        .ino;
    a.write(f, 0, &pattern(1, 100_000)).unwrap();
    a.release(f).unwrap();
    a.close().unwrap();

    // Member 2 fails a write while the array runs (its disk went away).
    let (a, faulty) = common::assemble_faulty(&dirs);
    faulty[2].inject(Fault::eio(Op::Write, "data/"));
    a.write(f, 0, &pattern(2, 100_000)).unwrap();
    assert_eq!(a.status().members[2].state, MemberState::Failed);
    assert!(a.may_readd(2) && !a.may_readd(0));
    let here = std::slice::from_ref(&dirs[2]);
    // Its directory on the mount it failed on: a disk that stayed.
    assert_eq!(a.returned_member(2, here, true), None);
    // Asked without that condition (at mount), it is the member.
    assert_eq!(a.returned_member(2, here, false), Some(dirs[2].clone()));
    // Nothing is offered for a member that is in service.
    assert_eq!(a.returned_member(0, &dirs[..1], false), None);

    // The same directory on a new mount: the disk was mounted again.
    let bind = BindMount::new(&dirs[2]);
    assert_eq!(a.returned_member(2, here, true), Some(dirs[2].clone()));
    // A bind mount shares the old handle's directory and with it its lock,
    // which a disk mounted again does not. A replace moves the lock of a
    // directory it recognises by its path, which the fault-injecting
    // wrapper hides: let it go by hand.
    raid_array::member::Member::unlock(faulty[2].as_ref());
    a.start_readd(2, &dirs[2], RebuildOptions::default())
        .unwrap();
    let rep = a.wait_rebuild().expect("a re-add ran").unwrap();
    assert!(rep.complete && rep.readd, "{rep:?}");
    assert!(!a.status().degraded);
    assert_eq!(a.returned_member(2, here, true), None);
    a.close().unwrap();
    drop(bind);

    // It serves: without member 0 the file reads back as last written.
    let mut opts = raid_array::AssembleOptions::new(dirs[1..].to_vec());
    opts.read_only = true;
    let a = Array::assemble(&opts).unwrap();
    assert_eq!(a.read(f, 0, 200_000).unwrap(), pattern(2, 100_000));
    a.close().unwrap();
}

/// Members that fill up: the array answers ENOSPC, and every metadata
/// operation (even those an `rm` needs) still works, nobody is failed, and
/// once a file is deleted writes go on. Each member keeps space back for the
/// array's records (`member::reserve`), which the journal falls back on.
#[test]
fn full_members_keep_the_metadata_going_and_fail_nobody() {
    use raid_array::{Array, ArrayError, AssembleOptions, ROOT_INO};
    let (_root, loops, dirs) = three_small_ext4_members();
    let a = Array::create(&raid5_options("full", &dirs)).unwrap();
    let os = std::ffi::OsStr::new;
    // Filled in large writes, then what is left in small ones.
    fill(&a, "big", 1 << 20);
    fill(&a, "crumbs", 4096);
    // Full: metadata goes on, many records' worth.
    let d = a.mkdir(ROOT_INO, os("d"), 0o755, 0, 0).unwrap().ino;
    for i in 0..3000 {
        let f = a
            .create_file(d, os(&format!("empty-{i}")), 0o644, 0, 0)
            .unwrap()
            .ino;
        a.release(f).unwrap();
    }
    a.rename(d, os("empty-0"), ROOT_INO, os("moved"), 0)
        .unwrap();
    a.sync_metadata().unwrap();
    let small = a
        .create_file(ROOT_INO, os("small"), 0o644, 0, 0)
        .unwrap()
        .ino;
    // Nothing more goes into the journal than the namespace needs.
    assert!(matches!(a.write(small, 0, b"x"), Err(ArrayError::NoSpace)));
    assert!(matches!(
        a.setxattr(small, os("user.k"), &[1; 1000], 0),
        Err(ArrayError::NoSpace)
    ));
    let st = a.status();
    assert!(!st.degraded && !st.failed, "{st:?}");
    // A checkpoint on full members keeps the journal instead.
    a.checkpoint().unwrap();
    assert!(!a.status().degraded);
    // Stopped and started again, still full: it assembles, nobody failed.
    a.release(small).unwrap();
    a.close().unwrap();
    let a = Array::assemble(&AssembleOptions::new(dirs.clone())).unwrap();
    let st = a.status();
    assert!(!st.degraded && !st.failed, "{st:?}");
    a.mkdir(ROOT_INO, os("after-restart"), 0o755, 0, 0).unwrap();
    a.open(small).unwrap();

    // Deleting frees space: the reserve comes back and writes go on.
    a.unlink(ROOT_INO, os("big")).unwrap();
    a.sync_metadata().unwrap();
    a.settle_data().unwrap();
    a.write(small, 0, &pattern(3, 300_000)).unwrap();
    a.release(small).unwrap();
    a.close().unwrap();

    let a = Array::assemble(&AssembleOptions::new(dirs.clone())).unwrap();
    assert!(!a.status().degraded);
    assert_eq!(a.read(small, 0, 400_000).unwrap(), pattern(3, 300_000));
    assert_eq!(a.readdir(d, 0, 10_000).unwrap().len(), 3000 - 1 + 2);
    a.close().unwrap();
    drop(loops);
}

/// Disks of uneven free space (another file on one of them): that member
/// fills first, in the middle of a stripe, and the parity of the stripes
/// the write left half-done is rewritten on it. That rewrite takes the
/// member's reserve rather than failing the member for being full, which
/// left the array degraded, and with more members full, failed: every file
/// unreadable. The file that filled the array reads back whole to where
/// the array said ENOSPC.
#[test]
fn a_member_that_fills_first_is_not_failed_by_the_parity_rewrite() {
    use raid_array::{Array, AssembleOptions, ROOT_INO};
    let (_root, loops, dirs) = three_small_ext4_members();
    let a = Array::create(&raid5_options("uneven", &dirs)).unwrap();
    let os = std::ffi::OsStr::new;
    let keep = pattern(4, 3 << 20);
    let k = a
        .create_file(ROOT_INO, os("keep"), 0o644, 0, 0)
        .unwrap()
        .ino;
    a.write(k, 0, &keep).unwrap();
    a.release(k).unwrap();
    // Another user of the first disk.
    let other = loops[0].mount.join("other");
    std::fs::write(&other, vec![7u8; 30 << 20]).unwrap();
    let f = a.create_file(ROOT_INO, os("big"), 0o644, 0, 0).unwrap().ino;
    // Its end written first, as the kernel's write-back may send it: the
    // stripes filled next lie inside the file, holes on every member.
    let end = pattern(99, 4096);
    a.write(f, 200 << 20, &end).unwrap();
    let mut off = 0u64;
    let mut k = 0u64;
    loop {
        // Pieces that end mid-stripe, so the last write is half done.
        let piece = pattern(k, 300_000);
        match a.write(f, off, &piece) {
            Ok(n) => off += n as u64,
            Err(raid_array::ArrayError::NoSpace) => break,
            Err(e) => panic!("writing: {e}"),
        }
        k += 1;
        assert!(off < 1 << 30, "never filled");
    }
    // A writer that goes on (write-back, a download client) into the
    // file's holes: refused, and it neither fails the full member nor takes
    // the space kept for the records.
    for i in 0..30u64 {
        let at = (150 << 20) + i * 300_000;
        assert!(
            matches!(
                a.write(f, at, &pattern(50 + i, 300_000)),
                Err(raid_array::ArrayError::NoSpace)
            ),
            "a write into a hole of a full array was taken"
        );
    }
    let _ = a.fsync(f, false);
    let st = a.status();
    assert!(
        !st.degraded && !st.failed,
        "a full member was failed: {st:?}"
    );
    a.mkdir(ROOT_INO, os("still-room-for-records"), 0o755, 0, 0)
        .unwrap();
    let check = |a: &Array, f: u64| {
        for i in 0..k {
            let at = i * 300_000;
            assert_eq!(
                a.read(f, at, 300_000).unwrap(),
                pattern(i, 300_000),
                "piece {i} of the file that filled the array"
            );
        }
        assert_eq!(a.read(f, 200 << 20, 8192).unwrap(), end);
        assert_eq!(
            a.read(a.lookup(ROOT_INO, os("keep")).unwrap().ino, 0, 4 << 20)
                .unwrap(),
            keep
        );
    };
    check(&a, f);
    a.release(f).unwrap();
    a.close().unwrap();
    // Every piece also rebuilds from the others: the parity is right.
    let a = Array::assemble(&AssembleOptions::new(dirs[1..].to_vec())).unwrap();
    check(&a, f);
    a.close().unwrap();
    std::fs::remove_file(&other).unwrap();
    drop(loops);
}

/// A file ending inside a 4 KiB block, then written on from its end in
/// large pieces until the array is full: the write that meets a full disk
/// is refused whole, before any member changes, and every byte written
/// before reads back, the partly filled last block included. Before, that
/// block was rewritten on some members and not others, and read as EIO.
#[test]
fn a_write_refused_for_space_leaves_the_last_block_readable() {
    use raid_array::{Array, ROOT_INO};
    let (_root, loops, dirs) = three_small_ext4_members();
    let a = Array::create(&raid5_options("tail", &dirs)).unwrap();
    let f = a
        .create_file(ROOT_INO, std::ffi::OsStr::new("f"), 0o644, 0, 0)
        .unwrap()
        .ino;
    let mut want = pattern(1, 5000);
    a.write(f, 0, &want).unwrap();
    let mut k = 2;
    loop {
        let piece = pattern(k, 4 << 20);
        match a.write(f, want.len() as u64, &piece) {
            Ok(n) => want.extend_from_slice(&piece[..n]),
            Err(raid_array::ArrayError::NoSpace) => break,
            Err(e) => panic!("writing: {e}"),
        }
        k += 1;
        assert!(want.len() < 1 << 30, "never filled");
    }
    let st = a.status();
    assert!(!st.degraded && !st.failed, "{st:?}");
    let tail = want.len() as u64 / 4096 * 4096;
    assert_eq!(
        a.read(f, tail, 4096).unwrap(),
        want[tail as usize..],
        "the file's last block"
    );
    assert!(a.read(f, 0, want.len() + 1).unwrap() == want, "the file");
    a.release(f).unwrap();
    a.close().unwrap();
    drop(loops);
}

/// A full array whose namespace's checkpoint is larger than what the
/// members keep back (`member::reserve`) still assembles after a clean
/// stop: the catch-up checkpoint of the assembly is skipped on a full
/// member whose journal already holds every record, as the checkpoints
/// of a running array are. Before, the next assembly failed with "no
/// member accepted the metadata checkpoint", and the array could not be
/// mounted until space was freed outside it.
#[test]
fn a_full_array_with_a_large_namespace_assembles_after_a_clean_stop() {
    use raid_array::{Array, AssembleOptions, ROOT_INO};
    let (_root, loops, dirs) = three_small_ext4_members();
    Array::create(&raid5_options("fullns", &dirs))
        .unwrap()
        .close()
        .unwrap();
    // Committed in groups, as through the mount: 12,000 creates in seconds.
    let mut ao = AssembleOptions::new(dirs.clone());
    ao.sync_metadata = false;
    let a = Array::assemble(&ao).unwrap();
    let os = std::ffi::OsStr::new;
    // A namespace whose checkpoint (megabytes) exceeds the 1 MiB reserve of
    // these 64 MiB members, checkpointed while there is room.
    let d = a.mkdir(ROOT_INO, os("many"), 0o755, 0, 0).unwrap().ino;
    let long = "n".repeat(180);
    for i in 0..12_000 {
        let f = a
            .create_file(d, os(&format!("{long}-{i}")), 0o644, 0, 0)
            .unwrap()
            .ino;
        a.release(f).unwrap();
    }
    a.checkpoint().unwrap();
    // Then the data fills the members.
    fill(&a, "big", 1 << 20);
    a.mkdir(ROOT_INO, os("last"), 0o755, 0, 0).unwrap();
    a.close().unwrap();

    let a = Array::assemble(&AssembleOptions::new(dirs.clone())).unwrap();
    let st = a.status();
    assert!(!st.degraded && !st.failed, "{st:?}");
    assert_eq!(a.readdir(d, 0, 20_000).unwrap().len(), 12_000 + 2);
    a.lookup(ROOT_INO, os("last")).unwrap();
    // Space freed: the catch-up checkpoint goes through on the next start.
    a.unlink(ROOT_INO, os("big")).unwrap();
    a.close().unwrap();
    let a = Array::assemble(&AssembleOptions::new(dirs.clone())).unwrap();
    assert!(!a.status().degraded);
    assert!(a.lookup(ROOT_INO, os("big")).is_err());
    a.close().unwrap();
    drop(loops);
}

/// Three 64 MiB ext4 images on loop devices, each with an empty `member`
/// directory: the temporary directory, the loop members, the directories.
fn three_small_ext4_members() -> (tempfile::TempDir, Vec<LoopMember>, Vec<PathBuf>) {
    assert!(
        rustix::process::geteuid().is_root(),
        "loopdev test needs root (to create loop devices and mount ext4 images)"
    );
    let root = tempfile::tempdir().unwrap();
    let loops: Vec<LoopMember> = (0..3).map(|i| LoopMember::new(root.path(), i)).collect();
    let dirs: Vec<PathBuf> = loops.iter().map(|l| l.mount.join("member")).collect();
    dirs.iter().for_each(|d| std::fs::create_dir(d).unwrap());
    (root, loops, dirs)
}

/// RAID-5 named `name` over `dirs`, 64 KiB chunks.
fn raid5_options(name: &str, dirs: &[PathBuf]) -> raid_array::CreateOptions {
    let mut o =
        raid_array::CreateOptions::new(name, Level::Raid5(Default::default()), dirs.to_vec());
    o.chunk_size = 64 * 1024;
    o
}

/// A file `name` written in pieces of `size` bytes until the array answers
/// ENOSPC.
fn fill(a: &raid_array::Array, name: &str, size: usize) {
    let f = a
        .create_file(
            raid_array::ROOT_INO,
            std::ffi::OsStr::new(name),
            0o644,
            0,
            0,
        )
        .unwrap()
        .ino;
    let chunk = pattern(9, size);
    let mut off = 0u64;
    loop {
        match a.write(f, off, &chunk) {
            Ok(n) => off += n as u64,
            Err(raid_array::ArrayError::NoSpace) => break,
            Err(e) => panic!("filling {name}: {e}"),
        }
        assert!(off < 1 << 30, "never filled");
    }
    a.release(f).unwrap();
}
