//! Namespace operations through the public `Array` API, journal replay
//! after a crash (drop without close), checkpoints with journal truncation,
//! and group commit under concurrent threads.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::sync::Arc;

use raid_array::meta::ops::{RENAME_EXCHANGE, RENAME_NOREPLACE, XATTR_CREATE, XATTR_REPLACE};
use raid_array::{Array, ArrayError, AssembleOptions, CreateOptions, FileKind, ROOT_INO, SetAttr};
use raid_core::Level;

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

struct Fixture {
    _tmp: tempfile::TempDir,
    dirs: Vec<PathBuf>,
}

fn fixture(n: usize, level: Level) -> (Fixture, Array) {
    let tmp = tempfile::tempdir().unwrap();
    let dirs: Vec<PathBuf> = (0..n).map(|i| tmp.path().join(format!("d{i}"))).collect();
    for d in &dirs {
        std::fs::create_dir(d).unwrap();
    }
    let mut opts = CreateOptions::new("meta", level, dirs.clone());
    opts.allow_same_fs = true;
    opts.chunk_size = 4096;
    let a = Array::create(&opts).unwrap();
    (Fixture { _tmp: tmp, dirs }, a)
}

fn reopen(f: &Fixture) -> Array {
    Array::assemble(&AssembleOptions::new(f.dirs.clone())).unwrap()
}

fn names(a: &Array, dir: u64) -> Vec<String> {
    a.readdir(dir, 0, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|e| String::from_utf8(e.name).unwrap())
        .filter(|n| n != "." && n != "..")
        .collect()
}

#[test]
fn create_lookup_getattr_and_errors() {
    let (_f, a) = fixture(3, Level::Raid5(Default::default()));
    let d = a.mkdir(ROOT_INO, os("dir"), 0o750, 1000, 1000).unwrap();
    assert_eq!(d.kind, FileKind::Dir);
    assert_eq!(d.perm, 0o750);
    assert_eq!(d.nlink, 2);
    assert_eq!(a.getattr(ROOT_INO).unwrap().nlink, 3);
    let f = a.create_file(d.ino, os("f"), 0o644, 1000, 1000).unwrap();
    assert_eq!(a.lookup(d.ino, os("f")).unwrap().ino, f.ino);
    assert_eq!(a.lookup(d.ino, os("..")).unwrap().ino, ROOT_INO);
    assert!(matches!(
        a.lookup(d.ino, os("nope")),
        Err(ArrayError::NotFound)
    ));
    assert!(matches!(
        a.mkdir(d.ino, os("f"), 0o755, 0, 0),
        Err(ArrayError::Exists)
    ));
    let long = "x".repeat(256);
    let e = a.create_file(d.ino, os(&long), 0o644, 0, 0).unwrap_err();
    assert!(matches!(e, ArrayError::NameTooLong));
    assert_eq!(e.errno(), libc_enametoolong());
    assert!(
        a.create_file(d.ino, os(&"y".repeat(255)), 0o644, 0, 0)
            .is_ok()
    );
    assert!(matches!(
        a.rmdir(ROOT_INO, os("dir")),
        Err(ArrayError::NotEmpty)
    ));
    assert!(matches!(
        a.unlink(ROOT_INO, os("dir")),
        Err(ArrayError::IsDir)
    ));
    assert!(matches!(a.rmdir(d.ino, os("f")), Err(ArrayError::NotDir)));
    assert!(matches!(
        a.link(d.ino, ROOT_INO, os("dirlink")),
        Err(ArrayError::NotPermitted(_))
    ));
    assert!(matches!(
        a.create_file(f.ino, os("x"), 0o644, 0, 0),
        Err(ArrayError::NotDir)
    ));
    a.close().unwrap();
}

fn libc_enametoolong() -> i32 {
    36
}

/// Set-user-ID always goes, set-group-ID only with group execute, on a
/// write by an unprivileged process, a truncate that asks for it and an
/// owner change; a privileged write, an explicit mode and directories keep
/// theirs; the result survives a reassembly.
#[test]
fn set_id_bits_are_cleared_as_linux_clears_them() {
    let (f, a) = fixture(3, Level::Raid5(Default::default()));
    let mode = |a: &Array, ino| u32::from(a.getattr(ino).unwrap().perm);
    let file = |name: &str, mode: u32| a.create_file(ROOT_INO, os(name), mode, 0, 0).unwrap().ino;
    let clearing = |ino, set: SetAttr| {
        a.setattr(
            ino,
            &SetAttr {
                clear_setid: true,
                ..set
            },
        )
        .unwrap()
    };
    let w = file("w", 0o6755);
    a.write(w, 0, b"root").unwrap();
    assert_eq!(
        mode(&a, w),
        0o6755,
        "a privileged write cleared set-ID bits"
    );
    assert!(a.write_unprivileged(w, 4, &[1; 20_000]).unwrap().1);
    assert_eq!(mode(&a, w), 0o755);
    let locking = file("locking", 0o6745);
    assert!(a.write_unprivileged(locking, 0, b"x").unwrap().1);
    assert!(!a.write_unprivileged(locking, 1, b"y").unwrap().1);
    assert_eq!(
        mode(&a, locking),
        0o2745,
        "set-group-ID without group execute went"
    );
    let t = file("t", 0o6711);
    a.write(t, 0, b"data").unwrap();
    clearing(
        t,
        SetAttr {
            size: Some(1),
            ..Default::default()
        },
    );
    assert_eq!(mode(&a, t), 0o711);
    assert_eq!(a.getattr(t).unwrap().size, 1);
    let c = file("c", 0o4700);
    clearing(
        c,
        SetAttr {
            uid: Some(7),
            ..Default::default()
        },
    );
    assert_eq!(mode(&a, c), 0o700);
    let m = file("m", 0o644);
    clearing(
        m,
        SetAttr {
            mode: Some(0o4755),
            ..Default::default()
        },
    );
    assert_eq!(mode(&a, m), 0o4755, "an explicit mode was overridden");
    let d = a.mkdir(ROOT_INO, os("d"), 0o2775, 0, 0).unwrap().ino;
    clearing(d, SetAttr::default());
    assert_eq!(mode(&a, d), 0o2775, "a directory lost set-group-ID");
    a.close().unwrap();
    let a = reopen(&f);
    let ino = |name: &str| a.lookup(ROOT_INO, os(name)).unwrap().ino;
    assert_eq!(mode(&a, ino("w")), 0o755);
    assert_eq!(mode(&a, ino("locking")), 0o2745);
    assert_eq!(mode(&a, ino("t")), 0o711);
    assert_eq!(mode(&a, ino("c")), 0o700);
    assert_eq!(a.read(ino("w"), 0, 8).unwrap(), b"root\x01\x01\x01\x01");
}

/// `fallocate`'s size change only grows: decided under the file's lock, a
/// size below what a write made meanwhile leaves the file alone.
#[test]
fn a_grow_only_size_change_never_cuts_a_file() {
    let (_f, a) = fixture(3, Level::Raid5(Default::default()));
    let ino = a.create_file(ROOT_INO, os("f"), 0o644, 0, 0).unwrap().ino;
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    a.write(ino, 0, &data).unwrap();
    let grow = |size| SetAttr {
        size: Some(size),
        grow_only: true,
        ..SetAttr::default()
    };
    assert_eq!(a.setattr(ino, &grow(100_000)).unwrap().size, 300_000);
    assert_eq!(a.read(ino, 0, 400_000).unwrap(), data);
    assert_eq!(a.setattr(ino, &grow(350_000)).unwrap().size, 350_000);
    let mut want = data.clone();
    want.resize(350_000, 0);
    assert_eq!(a.read(ino, 0, 400_000).unwrap(), want);
}

#[test]
fn write_read_inline_and_striped_then_truncate() {
    let (f, a) = fixture(3, Level::Raid5(Default::default()));
    let small = a
        .create_file(ROOT_INO, os("small"), 0o644, 0, 0)
        .unwrap()
        .ino;
    a.write(small, 0, b"hello").unwrap();
    a.write(small, 10, b"world").unwrap();
    assert_eq!(a.read(small, 0, 100).unwrap(), b"hello\0\0\0\0\0world");
    let big = a.create_file(ROOT_INO, os("big"), 0o644, 0, 0).unwrap().ino;
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    a.write(big, 0, &data[..3000]).unwrap();
    a.write(big, 3000, &data[3000..]).unwrap();
    assert_eq!(a.getattr(big).unwrap().size, 100_000);
    assert_eq!(a.read(big, 0, 200_000).unwrap(), data);
    assert_eq!(a.read(big, 99_990, 100).unwrap(), &data[99_990..]);
    a.setattr(
        big,
        &SetAttr {
            size: Some(5000),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(a.read(big, 0, 10_000).unwrap(), &data[..5000]);
    a.setattr(
        big,
        &SetAttr {
            size: Some(8000),
            ..Default::default()
        },
    )
    .unwrap();
    let mut want = data[..5000].to_vec();
    want.resize(8000, 0);
    assert_eq!(a.read(big, 0, 10_000).unwrap(), want);
    // Inline file extended past the inline limit by truncate.
    a.setattr(
        small,
        &SetAttr {
            size: Some(10_000),
            ..Default::default()
        },
    )
    .unwrap();
    let got = a.read(small, 0, 20_000).unwrap();
    assert_eq!(got.len(), 10_000);
    assert_eq!(&got[..15], b"hello\0\0\0\0\0world");
    assert!(got[15..].iter().all(|&b| b == 0));
    a.release(small).unwrap();
    a.release(big).unwrap();
    a.close().unwrap();
    let a = reopen(&f);
    assert_eq!(a.read(big, 0, 10_000).unwrap(), want);
    assert_eq!(
        &a.read(small, 0, 20).unwrap()[..15],
        b"hello\0\0\0\0\0world"
    );
    a.close().unwrap();
}

#[test]
fn rename_variants() {
    let (_f, a) = fixture(2, Level::Raid1);
    let d1 = a.mkdir(ROOT_INO, os("d1"), 0o755, 0, 0).unwrap().ino;
    let d2 = a.mkdir(ROOT_INO, os("d2"), 0o755, 0, 0).unwrap().ino;
    let x = a.create_file(d1, os("x"), 0o644, 0, 0).unwrap().ino;
    let y = a.create_file(d2, os("y"), 0o644, 0, 0).unwrap().ino;
    a.write(y, 0, b"yy").unwrap();
    // NOREPLACE onto an existing name fails and changes nothing.
    assert!(matches!(
        a.rename(d1, os("x"), d2, os("y"), RENAME_NOREPLACE),
        Err(ArrayError::Exists)
    ));
    // EXCHANGE swaps.
    a.rename(d1, os("x"), d2, os("y"), RENAME_EXCHANGE).unwrap();
    assert_eq!(a.lookup(d1, os("x")).unwrap().ino, y);
    assert_eq!(a.lookup(d2, os("y")).unwrap().ino, x);
    // Rename over an existing file replaces it; the replaced file (not open
    // after release) is freed.
    a.release(x).unwrap();
    a.rename(d1, os("x"), d2, os("y"), 0).unwrap();
    assert_eq!(a.lookup(d2, os("y")).unwrap().ino, y);
    assert!(matches!(a.getattr(x), Err(ArrayError::NotFound)));
    assert_eq!(a.read(y, 0, 10).unwrap(), b"yy");
    // Directory moves: nlink of parents follow; no move below itself.
    a.rename(ROOT_INO, os("d2"), d1, os("d2"), 0).unwrap();
    assert_eq!(a.getattr(d1).unwrap().nlink, 3);
    assert_eq!(a.getattr(ROOT_INO).unwrap().nlink, 3);
    assert_eq!(a.lookup(d2, os("..")).unwrap().ino, d1);
    assert!(matches!(
        a.rename(ROOT_INO, os("d1"), d2, os("inside"), 0),
        Err(ArrayError::Invalid(_))
    ));
    // Dir over non-empty dir / file over dir.
    let e = a.mkdir(ROOT_INO, os("e"), 0o755, 0, 0).unwrap().ino;
    a.mknod(e, os("z"), 0o644, 0, 0, 0).unwrap();
    assert!(matches!(
        a.rename(d1, os("d2"), ROOT_INO, os("e"), 0),
        Err(ArrayError::NotEmpty)
    ));
    assert!(matches!(
        a.rename(d2, os("y"), ROOT_INO, os("e"), 0),
        Err(ArrayError::IsDir)
    ));
    a.unlink(e, os("z")).unwrap();
    a.rename(d1, os("d2"), ROOT_INO, os("e"), 0).unwrap();
    assert_eq!(a.lookup(ROOT_INO, os("e")).unwrap().ino, d2);
    a.close().unwrap();
}

#[test]
fn an_orphan_the_kernel_still_knows_lives_until_its_last_forget() {
    let (_f, a) = fixture(2, Level::Raid1);
    let ino = a.create_file(ROOT_INO, os("f"), 0o644, 0, 0).unwrap().ino;
    let data = vec![7u8; 20_000];
    a.write(ino, 0, &data).unwrap();
    // Two lookups by the kernel, then the file is replaced and closed.
    a.remember(ino);
    a.remember(ino);
    let tmp = a.create_file(ROOT_INO, os("t"), 0o644, 0, 0).unwrap().ino;
    a.rename(ROOT_INO, os("t"), ROOT_INO, os("f"), 0).unwrap();
    a.release(tmp).unwrap();
    a.release(ino).unwrap();
    assert_eq!(a.getattr(ino).unwrap().nlink, 0);
    a.open(ino).unwrap();
    assert_eq!(a.read(ino, 0, 30_000).unwrap(), data);
    a.release(ino).unwrap();
    a.forget(ino, 1).unwrap();
    assert_eq!(a.getattr(ino).unwrap().nlink, 0);
    a.forget(ino, 1).unwrap();
    assert!(matches!(a.getattr(ino), Err(ArrayError::NotFound)));
    // A forget of what is gone, or of more than was counted, is harmless.
    a.forget(ino, 5).unwrap();
    a.forget(tmp, 1).unwrap();
    assert_eq!(a.read(tmp, 0, 10).unwrap(), b"");
    a.close().unwrap();
}

#[test]
fn a_removed_directory_the_kernel_still_knows_is_dead_until_its_last_forget() {
    let (f, a) = fixture(2, Level::Raid1);
    let d = a.mkdir(ROOT_INO, os("d"), 0o755, 0, 0).unwrap().ino;
    let e = a.mkdir(ROOT_INO, os("e"), 0o755, 0, 0).unwrap().ino;
    a.remember(d);
    a.remember(e);
    a.rmdir(ROOT_INO, os("d")).unwrap();
    // Renamed over: the same for the directory replaced.
    let g = a.mkdir(ROOT_INO, os("g"), 0o755, 0, 0).unwrap().ino;
    a.rename(ROOT_INO, os("g"), ROOT_INO, os("e"), 0).unwrap();
    for dead in [d, e] {
        let at = a.getattr(dead).unwrap();
        assert_eq!((at.kind, at.nlink), (FileKind::Dir, 0));
        // Nothing can be added to a dead directory.
        assert!(matches!(
            a.create_file(dead, os("x"), 0o644, 0, 0),
            Err(ArrayError::NotFound)
        ));
        assert!(matches!(
            a.mkdir(dead, os("x"), 0o755, 0, 0),
            Err(ArrayError::NotFound)
        ));
        assert!(matches!(
            a.rename(ROOT_INO, os("e"), dead, os("x"), 0),
            Err(ArrayError::NotFound)
        ));
    }
    assert_eq!(a.getattr(ROOT_INO).unwrap().nlink, 3);
    assert_eq!(a.lookup(ROOT_INO, os("e")).unwrap().ino, g);
    a.forget(d, 1).unwrap();
    assert!(matches!(a.getattr(d), Err(ArrayError::NotFound)));
    // A crash while the kernel held the other: gone at the next assembly.
    drop(a);
    let a = reopen(&f);
    assert!(matches!(a.getattr(e), Err(ArrayError::NotFound)));
    assert_eq!(a.getattr(g).unwrap().nlink, 2);
    a.close().unwrap();
}

#[test]
fn unlink_while_open_keeps_data_until_release() {
    let (f, a) = fixture(2, Level::Raid1);
    let ino = a.create_file(ROOT_INO, os("f"), 0o644, 0, 0).unwrap().ino;
    let data = vec![7u8; 20_000];
    a.write(ino, 0, &data).unwrap();
    a.unlink(ROOT_INO, os("f")).unwrap();
    assert!(matches!(
        a.lookup(ROOT_INO, os("f")),
        Err(ArrayError::NotFound)
    ));
    assert_eq!(a.getattr(ino).unwrap().nlink, 0);
    assert_eq!(a.read(ino, 0, 30_000).unwrap(), data);
    a.release(ino).unwrap();
    assert!(matches!(a.getattr(ino), Err(ArrayError::NotFound)));
    // A crash while an unlinked file is open: the orphan is freed at assemble.
    let g = a.create_file(ROOT_INO, os("g"), 0o644, 0, 0).unwrap().ino;
    a.write(g, 0, &data).unwrap();
    a.unlink(ROOT_INO, os("g")).unwrap();
    drop(a);
    // The on-disk place of a shard (docs: `.raidfs/data/<xx>/<ino>`).
    let shard = |d: &PathBuf| d.join(format!(".raidfs/data/{:02x}/{g:016x}", g & 0xff));
    assert!(f.dirs.iter().any(|d| shard(d).exists()));
    let a = reopen(&f);
    assert!(matches!(a.getattr(g), Err(ArrayError::NotFound)));
    // ...and its data with it.
    for d in &f.dirs {
        assert!(!shard(d).exists(), "{} left behind", shard(d).display());
    }
    a.close().unwrap();
}

/// An unlink and the file's last release at the same moment: both succeed
/// and the file is freed once (each used to free it when the other had not
/// yet, and the second free failed the `rm` with ENOENT).
#[test]
fn an_unlink_racing_the_last_release_frees_the_file_once() {
    let (_f, a) = fixture(3, Level::Raid5(Default::default()));
    for round in 0..200 {
        let name = format!("f{round}");
        let ino = a.create_file(ROOT_INO, os(&name), 0o644, 0, 0).unwrap().ino;
        a.write(ino, 0, &[7; 20_000]).unwrap();
        let go = std::sync::Barrier::new(2);
        std::thread::scope(|s| {
            let unlink = s.spawn(|| {
                go.wait();
                a.unlink(ROOT_INO, os(&name))
            });
            go.wait();
            a.release(ino).unwrap();
            unlink.join().unwrap().unwrap();
        });
        assert!(matches!(a.getattr(ino), Err(ArrayError::NotFound)));
        assert!(a.open(ino).is_err(), "a freed file opened");
    }
}

/// In a set-group-ID directory a group-executable file asked for with
/// set-group-ID keeps the bit only if its creator is root or in the
/// directory's group, as Linux's `mode_strip_sgid` decides (by the
/// creator's primary group here); without group execute it keeps it.
#[test]
fn a_set_group_id_file_made_by_an_outsider_loses_the_bit() {
    let (_f, a) = fixture(3, Level::Raid5(Default::default()));
    let d = a.mkdir(ROOT_INO, os("shared"), 0o2777, 0, 4321).unwrap();
    assert_eq!((u32::from(d.perm) & 0o2000, d.gid), (0o2000, 4321));
    let made = |name: &str, uid: u32, gid: u32| {
        let at = a.create_file(d.ino, os(name), 0o2755, uid, gid).unwrap();
        (u32::from(at.perm) & 0o2000, at.gid)
    };
    assert_eq!(made("outsider", 1000, 1000), (0, 4321));
    assert_eq!(made("member", 1000, 4321), (0o2000, 4321));
    assert_eq!(made("root", 0, 0), (0o2000, 4321));
    let at = a
        .create_file(d.ino, os("no-group-exec"), 0o2644, 1000, 1000)
        .unwrap();
    assert_eq!(u32::from(at.perm) & 0o2000, 0o2000);
}

/// A default ACL only on a directory (EACCES elsewhere, as Linux), and
/// checked like an access ACL (EINVAL for a malformed one).
#[test]
fn a_default_acl_is_for_directories_and_must_be_valid() {
    let (_f, a) = fixture(3, Level::Raid5(Default::default()));
    let entry = |tag: u16, perm: u16| {
        let mut e = tag.to_le_bytes().to_vec();
        e.extend(perm.to_le_bytes());
        e.extend(u32::MAX.to_le_bytes());
        e
    };
    let mut acl = 2u32.to_le_bytes().to_vec();
    acl.extend(entry(0x01, 7));
    acl.extend(entry(0x04, 5));
    acl.extend(entry(0x20, 5));
    let name = os("system.posix_acl_default");
    let d = a.mkdir(ROOT_INO, os("d"), 0o755, 0, 0).unwrap().ino;
    a.setxattr(d, name, &acl, 0).unwrap();
    assert_eq!(a.getxattr(d, name).unwrap(), acl);
    let f = a.create_file(ROOT_INO, os("f"), 0o644, 0, 0).unwrap().ino;
    let e = a.setxattr(f, name, &acl, 0).unwrap_err();
    assert_eq!(e.errno(), rustix::io::Errno::ACCESS.raw_os_error(), "{e}");
    let e = a.setxattr(d, name, &acl[..12], 0).unwrap_err();
    assert_eq!(e.errno(), rustix::io::Errno::INVAL.raw_os_error(), "{e}");
}

#[test]
fn symlinks_hardlinks_xattrs_and_special_files() {
    let (f, a) = fixture(2, Level::Raid1);
    let s = a
        .symlink(ROOT_INO, os("s"), os("../target/x"), 5, 6)
        .unwrap();
    assert_eq!(s.kind, FileKind::Symlink);
    assert_eq!(s.size, 11);
    assert_eq!(a.readlink(s.ino).unwrap(), b"../target/x");
    let file = a.create_file(ROOT_INO, os("f"), 0o600, 0, 0).unwrap().ino;
    a.link(file, ROOT_INO, os("f2")).unwrap();
    assert_eq!(a.getattr(file).unwrap().nlink, 2);
    a.write(file, 0, b"shared").unwrap();
    assert_eq!(
        a.read(a.lookup(ROOT_INO, os("f2")).unwrap().ino, 0, 10)
            .unwrap(),
        b"shared"
    );
    a.unlink(ROOT_INO, os("f")).unwrap();
    assert_eq!(a.getattr(file).unwrap().nlink, 1);
    a.setxattr(file, os("user.a"), b"1", 0).unwrap();
    a.setxattr(file, os("user.b"), b"2", XATTR_CREATE).unwrap();
    assert!(matches!(
        a.setxattr(file, os("user.b"), b"3", XATTR_CREATE),
        Err(ArrayError::Exists)
    ));
    assert!(matches!(
        a.setxattr(file, os("user.c"), b"3", XATTR_REPLACE),
        Err(ArrayError::NoAttr)
    ));
    a.setxattr(file, os("user.b"), b"22", XATTR_REPLACE)
        .unwrap();
    assert_eq!(
        a.listxattr(file).unwrap(),
        vec![b"user.a".to_vec(), b"user.b".to_vec()]
    );
    a.removexattr(file, os("user.a")).unwrap();
    assert!(matches!(
        a.getxattr(file, os("user.a")),
        Err(ArrayError::NoAttr)
    ));
    let fifo = a.mknod(ROOT_INO, os("p"), 0o010644, 0, 0, 0).unwrap();
    assert_eq!(fifo.kind, FileKind::Fifo);
    let dev = a.mknod(ROOT_INO, os("c"), 0o020600, 0x0103, 0, 0).unwrap();
    assert_eq!((dev.kind, dev.rdev), (FileKind::CharDev, 0x0103));
    a.setattr(
        file,
        &SetAttr {
            mode: Some(0o4755),
            uid: Some(9),
            gid: Some(8),
            ..Default::default()
        },
    )
    .unwrap();
    a.release(file).unwrap();
    a.close().unwrap();
    let a = reopen(&f);
    let at = a.getattr(file).unwrap();
    assert_eq!(
        (at.perm, at.uid, at.gid, at.kind),
        (0o4755, 9, 8, FileKind::File)
    );
    assert_eq!(a.getxattr(file, os("user.b")).unwrap(), b"22");
    assert_eq!(a.readlink(s.ino).unwrap(), b"../target/x");
    assert_eq!(a.lookup(ROOT_INO, os("c")).unwrap().rdev, 0x0103);
    a.close().unwrap();
}

#[test]
fn readdir_offsets_are_stable_under_changes() {
    let (_f, a) = fixture(2, Level::Raid1);
    for i in 0..20 {
        a.mknod(ROOT_INO, os(&format!("f{i:02}")), 0o644, 0, 0, 0)
            .unwrap();
    }
    let first = a.readdir(ROOT_INO, 0, 7).unwrap();
    assert_eq!(first.len(), 7);
    assert_eq!(first[0].name, b".");
    assert_eq!(first[1].name, b"..");
    let resume = first.last().unwrap().offset;
    // Remove an entry already returned and one not yet returned; add one.
    a.unlink(ROOT_INO, os("f00")).unwrap();
    a.unlink(ROOT_INO, os("f10")).unwrap();
    a.mknod(ROOT_INO, os("new"), 0o644, 0, 0, 0).unwrap();
    let rest: Vec<String> = a
        .readdir(ROOT_INO, resume, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|e| String::from_utf8(e.name).unwrap())
        .collect();
    let mut want: Vec<String> = (5..20)
        .filter(|&i| i != 10)
        .map(|i| format!("f{i:02}"))
        .collect();
    want.push("new".into());
    assert_eq!(rest, want);
    a.close().unwrap();
}

#[test]
fn journal_replays_after_crash() {
    let (f, a) = fixture(3, Level::Raid5(Default::default()));
    let d = a.mkdir(ROOT_INO, os("d"), 0o755, 0, 0).unwrap().ino;
    let x = a.create_file(d, os("x"), 0o644, 0, 0).unwrap().ino;
    a.write(x, 0, b"inline data").unwrap();
    a.fsync(x, false).unwrap();
    a.rename(d, os("x"), ROOT_INO, os("moved"), 0).unwrap();
    a.setxattr(x, os("user.k"), b"v", 0).unwrap();
    let before = (names(&a, ROOT_INO), a.getattr(x).unwrap());
    drop(a); // crash: no close, no checkpoint
    let a = reopen(&f);
    assert!(!a.status().clean);
    assert_eq!((names(&a, ROOT_INO), a.getattr(x).unwrap()), before);
    assert_eq!(a.read(x, 0, 100).unwrap(), b"inline data");
    assert_eq!(a.getxattr(x, os("user.k")).unwrap(), b"v");
    // Crash again right after the replay: still the same.
    drop(a);
    let a = reopen(&f);
    assert_eq!((names(&a, ROOT_INO), a.getattr(x).unwrap()), before);
    a.close().unwrap();
    let a = reopen(&f);
    assert!(a.status().clean || a.status().events > 0);
    a.close().unwrap();
}

/// A striped file shrunk and the power cut before the periodic commit:
/// it comes back at its old size with its old bytes, or at its new size,
/// never at the old size over shards some members had already trimmed.
#[test]
fn a_shrink_cut_by_a_crash_leaves_one_size_and_its_bytes() {
    let (f, a) = fixture(4, Level::Raid5(Default::default()));
    a.close().unwrap();
    let mut o = AssembleOptions::new(f.dirs.clone());
    o.sync_metadata = false;
    let a = Array::assemble(&o).unwrap();
    let x = a.create_file(ROOT_INO, os("x"), 0o644, 0, 0).unwrap().ino;
    let old: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    a.write(x, 0, &old).unwrap();
    a.fsync(x, false).unwrap();
    for new_size in [100_000u64, 0] {
        let set = SetAttr {
            size: Some(new_size),
            ..Default::default()
        };
        a.setattr(x, &set).unwrap();
    }
    drop(a); // crash: nothing committed since the fsync but what had to be
    let a = reopen(&f);
    let size = a.getattr(x).unwrap().size;
    let got = a.read(x, 0, old.len()).unwrap();
    assert!(
        got == old[..size as usize],
        "size {size} after the crash, bytes not those of that size"
    );
    a.close().unwrap();
}

#[test]
fn torn_journal_tail_is_ignored() {
    let (f, a) = fixture(2, Level::Raid1);
    a.mkdir(ROOT_INO, os("kept"), 0o755, 0, 0).unwrap();
    drop(a);
    // Append garbage (a torn record) to every member's journal segment.
    for d in &f.dirs {
        let meta = d.join(".raidfs/meta");
        for e in std::fs::read_dir(&meta).unwrap() {
            let p = e.unwrap().path();
            if p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("journal-")
            {
                use std::io::Write;
                let mut file = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
                file.write_all(&[40, 0, 0, 0, 1, 2, 3, 4, 9, 9]).unwrap();
            }
        }
    }
    let a = reopen(&f);
    assert_eq!(names(&a, ROOT_INO), vec!["kept"]);
    a.mkdir(ROOT_INO, os("after"), 0o755, 0, 0).unwrap();
    drop(a);
    let a = reopen(&f);
    assert_eq!(names(&a, ROOT_INO), vec!["kept", "after"]);
    a.close().unwrap();
}

fn meta_files(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.join(".raidfs/meta"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn checkpoint_truncates_the_journal() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs: Vec<PathBuf> = (0..2).map(|i| tmp.path().join(format!("d{i}"))).collect();
    for d in &dirs {
        std::fs::create_dir(d).unwrap();
    }
    let mut c = CreateOptions::new("ckpt", Level::Raid1, dirs.clone());
    c.allow_same_fs = true;
    raid_array::create::create(&c).unwrap();
    let mut o = AssembleOptions::new(dirs.clone());
    o.checkpoint_bytes = 16 * 1024;
    let a = Array::assemble(&o).unwrap();
    for i in 0..400 {
        a.mknod(ROOT_INO, os(&format!("file-{i:04}")), 0o644, 0, 0, 0)
            .unwrap();
    }
    // Automatic checkpoints happened: one checkpoint and one segment remain.
    for d in &dirs {
        let files = meta_files(d);
        assert_eq!(
            files
                .iter()
                .filter(|n| n.starts_with("checkpoint-"))
                .count(),
            1,
            "{files:?}"
        );
        assert_eq!(
            files.iter().filter(|n| n.starts_with("journal-")).count(),
            1,
            "{files:?}"
        );
        let seg = files.iter().find(|n| n.starts_with("journal-")).unwrap();
        assert!(
            std::fs::metadata(d.join(".raidfs/meta").join(seg))
                .unwrap()
                .len()
                < 16 * 1024 + 4096
        );
    }
    let seq = a.checkpoint().unwrap();
    for d in &dirs {
        let files = meta_files(d);
        assert_eq!(
            files,
            vec![
                format!("checkpoint-{seq:020}"),
                format!("journal-{:020}", seq + 1)
            ]
        );
    }
    a.mknod(ROOT_INO, os("after-checkpoint"), 0o644, 0, 0, 0)
        .unwrap();
    drop(a);
    let a = Array::assemble(&o).unwrap();
    assert_eq!(names(&a, ROOT_INO).len(), 401);
    a.close().unwrap();
}

#[test]
fn group_commit_batches_concurrent_committers() {
    let (f, a) = fixture(2, Level::Raid1);
    let a = Arc::new(a);
    let before = a.status().journal_commits;
    let threads = 8;
    let per = 50;
    std::thread::scope(|s| {
        for t in 0..threads {
            let a = a.clone();
            s.spawn(move || {
                let d = a
                    .mkdir(ROOT_INO, os(&format!("t{t}")), 0o755, 0, 0)
                    .unwrap()
                    .ino;
                for i in 0..per {
                    a.mknod(d, os(&format!("f{i}")), 0o644, 0, 0, 0).unwrap();
                }
            });
        }
    });
    let ops = (threads * (per + 1)) as u64;
    let commits = a.status().journal_commits - before;
    // Every operation waited for durability, yet they shared batches.
    assert!(
        commits < ops,
        "{commits} commits for {ops} synchronous operations"
    );
    let a = Arc::into_inner(a).unwrap();
    drop(a);
    let a = reopen(&f);
    for t in 0..threads {
        let d = a.lookup(ROOT_INO, os(&format!("t{t}"))).unwrap().ino;
        assert_eq!(names(&a, d).len(), per);
    }
    a.close().unwrap();
}

#[test]
fn statfs_reports_usable_capacity() {
    let (_f, a) = fixture(3, Level::Raid5(Default::default()));
    let s = a.statfs().unwrap();
    assert_eq!(s.namelen, 255);
    assert!(s.blocks > 0 && s.bavail <= s.blocks);
    a.close().unwrap();
}

/// Cut the power after every possible number of member writes while
/// namespace operations and an fsynced file write run; the crash image of
/// the members (only durable bytes, plus a random torn subset of the
/// rest) must assemble and hold every acknowledged operation, and nothing
/// that was never attempted.
#[test]
fn power_cut_at_any_step_keeps_every_acknowledged_operation() {
    use raid_array::assemble::open_dir;
    use raid_array::member::Member;
    use raid_array::member::faulty::{FaultyMember, Power};
    use std::path::Path;
    use std::sync::Mutex;

    let payload: Vec<u8> = (0..20_000u32).map(|i| (i % 241) as u8).collect();
    // First run with unlimited power counts the steps; then cut at points
    // spread over the whole run.
    let mut total = None;
    let mut cuts = vec![u64::MAX];
    while let Some(cut) = cuts.pop() {
        let tmp = tempfile::tempdir().unwrap();
        let dirs: Vec<PathBuf> = (0..3).map(|i| tmp.path().join(format!("d{i}"))).collect();
        for d in &dirs {
            std::fs::create_dir(d).unwrap();
        }
        let mut c = CreateOptions::new("power", Level::Raid5(Default::default()), dirs.clone());
        c.allow_same_fs = true;
        c.chunk_size = 4096;
        raid_array::create::create(&c).unwrap();
        let power = if cut == u64::MAX {
            Power::unlimited()
        } else {
            Power::cut_after(cut)
        };
        let faulty: Mutex<Vec<Arc<FaultyMember>>> = Mutex::new(Vec::new());
        let open = |p: &Path| -> std::io::Result<Arc<dyn Member>> {
            let f = Arc::new(FaultyMember::with_power(open_dir(p)?, power.clone()));
            faulty.lock().unwrap().push(f.clone());
            Ok(f)
        };
        let mut acked: Vec<String> = Vec::new();
        let mut attempted: Vec<String> = Vec::new();
        let mut file_synced = false;
        if let Ok(a) = Array::assemble_with(&AssembleOptions::new(dirs.clone()), &open) {
            for k in 0..12 {
                let name = format!("dir{k:02}");
                attempted.push(name.clone());
                if a.mkdir(ROOT_INO, os(&name), 0o755, 0, 0).is_err() {
                    break;
                }
                acked.push(name);
                if k == 5 {
                    attempted.push("file".into());
                    let r = a
                        .create_file(ROOT_INO, os("file"), 0o644, 0, 0)
                        .and_then(|at| {
                            a.write(at.ino, 0, &payload)?;
                            a.fsync(at.ino, false)
                        });
                    if r.is_err() {
                        break;
                    }
                    acked.push("file".into());
                    file_synced = true;
                }
            }
            drop(a);
        }
        if total.is_none() {
            let steps = power.steps_used();
            assert!(steps > 20, "the sequence makes {steps} member writes");
            total = Some(steps);
            cuts = (0..16).map(|k| 1 + k * steps / 16).collect();
        }
        let images: Vec<PathBuf> = faulty
            .lock()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let dest = tmp.path().join(format!("image{i}"));
                std::fs::create_dir(&dest).unwrap();
                f.crash_image(&dest, Some(cut)).unwrap();
                dest
            })
            .collect();
        let mut o = AssembleOptions::new(images);
        o.force = true;
        let a = Array::assemble(&o)
            .unwrap_or_else(|e| panic!("cut after {cut} steps: image does not assemble: {e}"));
        let got = names(&a, ROOT_INO);
        for n in &acked {
            assert!(
                got.contains(n),
                "cut {cut}: acknowledged {n} lost; have {got:?}"
            );
        }
        for n in &got {
            assert!(attempted.contains(n), "cut {cut}: {n} never attempted");
        }
        if file_synced {
            let ino = a.lookup(ROOT_INO, os("file")).unwrap().ino;
            assert_eq!(
                a.read(ino, 0, 30_000).unwrap(),
                payload,
                "cut {cut}: fsynced data"
            );
        }
        a.close().unwrap();
    }
}

#[test]
fn deferred_metadata_commits_lose_only_a_suffix() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs: Vec<PathBuf> = (0..2).map(|i| tmp.path().join(format!("d{i}"))).collect();
    for d in &dirs {
        std::fs::create_dir(d).unwrap();
    }
    let mut c = CreateOptions::new("deferred", Level::Raid1, dirs.clone());
    c.allow_same_fs = true;
    raid_array::create::create(&c).unwrap();
    let mut o = AssembleOptions::new(dirs.clone());
    o.sync_metadata = false;
    let a = Array::assemble(&o).unwrap();
    let commits = a.status().journal_commits;
    for i in 0..50 {
        a.mknod(ROOT_INO, os(&format!("n{i:02}")), 0o644, 0, 0, 0)
            .unwrap();
        if i == 29 {
            a.sync_metadata().unwrap();
        }
    }
    // Nothing waited for the journal except the explicit sync.
    assert_eq!(a.status().journal_commits, commits + 1);
    drop(a);
    let a = Array::assemble(&AssembleOptions::new(dirs.clone())).unwrap();
    let got = names(&a, ROOT_INO);
    let want: Vec<String> = (0..got.len()).map(|i| format!("n{i:02}")).collect();
    assert_eq!(got, want, "not a prefix");
    assert!(got.len() >= 30, "synced operations lost: {}", got.len());
    a.close().unwrap();
}

/// Write tmp, fsync, rename it over `config`, again and again, then stop
/// without committing the last renames (a crash): whatever version the
/// journal replays, its data must still be there. The replaced file's
/// shards may only go once the rename that frees it is durable.
#[test]
fn a_replaced_file_keeps_its_data_until_the_rename_is_durable() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs: Vec<PathBuf> = (0..3).map(|i| tmp.path().join(format!("d{i}"))).collect();
    for d in &dirs {
        std::fs::create_dir(d).unwrap();
    }
    let mut c = CreateOptions::new("replace", Level::Raid5(Default::default()), dirs.clone());
    c.allow_same_fs = true;
    c.chunk_size = 4096;
    raid_array::create::create(&c).unwrap();
    let mut o = AssembleOptions::new(dirs.clone());
    o.sync_metadata = false;
    let a = Array::assemble(&o).unwrap();
    let version = |v: u8| vec![v; 50_000];
    for v in 0..4u8 {
        let ino = a.create_file(ROOT_INO, os("tmp"), 0o644, 0, 0).unwrap().ino;
        a.write(ino, 0, &version(v)).unwrap();
        a.fsync(ino, false).unwrap();
        a.release(ino).unwrap();
        a.rename(ROOT_INO, os("tmp"), ROOT_INO, os("config"), 0)
            .unwrap();
    }
    // Crash: the renames since the last fsync are not in the journal.
    drop(a);
    let mut o = AssembleOptions::new(dirs.clone());
    o.force = true;
    let a = Array::assemble(&o).unwrap();
    let ino = a.lookup(ROOT_INO, os("config")).unwrap().ino;
    let got = a.read(ino, 0, 100_000).unwrap();
    assert!(
        (0..4).any(|v| got == version(v)),
        "config is not a whole version ({} bytes)",
        got.len()
    );
    // A rename lost at the crash leaves its source in place.
    match a.unlink(ROOT_INO, os("tmp")) {
        Ok(()) | Err(ArrayError::NotFound) => {}
        Err(e) => panic!("unlink tmp: {e}"),
    }
    // The space of replaced versions comes back once their free is durable.
    let ino = a.create_file(ROOT_INO, os("tmp"), 0o644, 0, 0).unwrap().ino;
    a.write(ino, 0, &version(9)).unwrap();
    a.release(ino).unwrap();
    a.rename(ROOT_INO, os("tmp"), ROOT_INO, os("config"), 0)
        .unwrap();
    a.close().unwrap();
    let a = Array::assemble(&AssembleOptions::new(dirs.clone())).unwrap();
    let ino = a.lookup(ROOT_INO, os("config")).unwrap().ino;
    assert_eq!(a.read(ino, 0, 100_000).unwrap(), version(9));
    assert_eq!(a.striped_files().len(), 1, "a replaced file was not freed");
    a.close().unwrap();
}

/// Members on one filesystem share its space: RAID-5 on three of them can
/// store two thirds of it, not twice all of it.
#[test]
fn statfs_splits_a_filesystem_shared_by_members() {
    let (f, a) = fixture(3, Level::Raid5(Default::default()));
    let host = rustix::fs::statvfs(f.dirs[0].as_path()).unwrap();
    let host_bytes = host.f_blocks * host.f_frsize;
    let s = a.statfs().unwrap();
    let bytes = s.blocks * u64::from(s.bsize);
    let expect = host_bytes / 3 * 2;
    assert!(
        bytes.abs_diff(expect) <= expect / 50 + 4096,
        "statfs says {bytes} bytes, expected about {expect} (2/3 of {host_bytes})"
    );
    a.close().unwrap();
}

/// A crash after a free reached the journal but before the freed file's
/// shards were deleted leaves shards no inode owns; the next assemble of
/// the unclean array deletes them and keeps every live file's.
#[test]
fn shards_no_inode_owns_are_removed_after_an_unclean_stop() {
    let (f, a) = fixture(3, Level::Raid5(Default::default()));
    let ino = a
        .create_file(ROOT_INO, os("live"), 0o644, 0, 0)
        .unwrap()
        .ino;
    a.write(ino, 0, &[5u8; 30_000]).unwrap();
    a.release(ino).unwrap();
    a.fsync(ino, false).unwrap();
    // Stop without close (a crash), then plant the shards of a freed inode.
    drop(a);
    let shard = |d: &PathBuf, i: u64| d.join(format!(".raidfs/data/{:02x}/{i:016x}", i & 0xff));
    let dead = 0x1234u64;
    for d in &f.dirs {
        let p = shard(d, dead);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::copy(shard(d, ino), &p).unwrap();
        std::fs::write(format!("{}.crc", p.display()), b"x").unwrap();
    }
    let a = reopen(&f);
    for d in &f.dirs {
        assert!(!shard(d, dead).exists(), "a shard no inode owns was kept");
        assert!(shard(d, ino).exists(), "a live file's shard was removed");
    }
    assert_eq!(a.read(ino, 0, 40_000).unwrap(), vec![5u8; 30_000]);
    a.close().unwrap();
}

/// An access ACL as `setfacl` sends it: owner `rw-`, user 1000 `rw-`,
/// group `r--`, mask `rw-`, other `r--`.
fn acl_with_named_user() -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (0x01u16, 6u16, u32::MAX),
        (0x02, 6, 1000),
        (0x04, 4, u32::MAX),
        (0x10, 6, u32::MAX),
        (0x20, 4, u32::MAX),
    ] {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

/// Cut the last record off every member's journal: a crash that tore the
/// last append.
fn tear_last_record(f: &Fixture) {
    use raid_array::format::journal::{HEADER_LEN, decode_record};
    for d in &f.dirs {
        for seg in meta_files(d).iter().filter(|n| n.starts_with("journal-")) {
            let p = d.join(".raidfs/meta").join(seg);
            let buf = std::fs::read(&p).unwrap();
            let (mut pos, mut last) = (HEADER_LEN, None);
            while let Some(r) = decode_record(&buf, pos) {
                last = Some(pos);
                pos = r.end;
            }
            if let Some(at) = last {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&p)
                    .unwrap()
                    .set_len(at as u64)
                    .unwrap();
            }
        }
    }
}

#[test]
fn mode_and_access_acl_change_together_or_not_at_all() {
    let acl_name = os("system.posix_acl_access");
    let (f, a) = fixture(2, Level::Raid1);
    let x = a.create_file(ROOT_INO, os("x"), 0o644, 0, 0).unwrap().ino;
    a.fsync(x, false).unwrap();
    // setfacl: the mode's group bits become the mask (rw-): one change.
    a.setxattr(x, acl_name, &acl_with_named_user(), 0).unwrap();
    assert_eq!(a.getattr(x).unwrap().perm, 0o664);
    drop(a);
    tear_last_record(&f);
    let a = reopen(&f);
    assert_eq!(
        a.getattr(x).unwrap().perm,
        0o644,
        "mode kept without its ACL"
    );
    assert!(
        a.getxattr(x, acl_name).is_err(),
        "ACL kept without its mode"
    );
    // Applied whole, then chmod 600: the mask follows the group bits.
    a.setxattr(x, acl_name, &acl_with_named_user(), 0).unwrap();
    a.fsync(x, false).unwrap();
    let set = raid_array::SetAttr {
        mode: Some(0o600),
        ..Default::default()
    };
    a.setattr(x, &set).unwrap();
    drop(a);
    tear_last_record(&f);
    let a = reopen(&f);
    assert_eq!(a.getattr(x).unwrap().perm, 0o664, "chmod torn in half");
    assert_eq!(a.getxattr(x, acl_name).unwrap(), acl_with_named_user());
    a.close().unwrap();
}

/// A write of nothing changes nothing, as write(2) of zero bytes: not the
/// size of an inline file nor of a striped one, even at an offset past the
/// end (a growth that way would also skip the zeroing of what lies past
/// the old end).
#[test]
fn a_write_of_nothing_past_the_end_changes_no_size() {
    let (_f, a) = fixture(3, Level::Raid5(Default::default()));
    let small = a
        .create_file(ROOT_INO, os("small"), 0o644, 0, 0)
        .unwrap()
        .ino;
    let big = a.create_file(ROOT_INO, os("big"), 0o644, 0, 0).unwrap().ino;
    a.write(big, 0, &[5u8; 10_000]).unwrap();
    assert_eq!(a.write(small, 3000, &[]).unwrap(), 0);
    assert_eq!(a.write(big, 50_000, &[]).unwrap(), 0);
    assert_eq!(a.getattr(small).unwrap().size, 0);
    assert_eq!(a.getattr(big).unwrap().size, 10_000);
    let d = a.mkdir(ROOT_INO, os("d"), 0o755, 0, 0).unwrap().ino;
    assert!(a.write(d, 0, &[]).is_err(), "a write to a directory");
}
