//! POSIX behaviour of a mounted array, one test per behaviour. Each test
//! mounts its own RAID-5 array (four directories) so tests are independent
//! and run in parallel. Where data could be served from the kernel's page
//! cache, the test also checks it after a remount, so the engine itself is
//! what answers.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use raidfs_tests::{TestArray, names, pattern, run};
use rustix::fs::{CWD, FallocateFlags, FlockOperation, RenameFlags};

fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("no NUL in path")
}

fn read_at(p: &Path, off: u64, len: usize) -> Vec<u8> {
    let f = File::open(p).expect("open");
    let mut buf = vec![0u8; len];
    let n = f.read_at(&mut buf, off).expect("pread");
    buf.truncate(n);
    buf
}

#[test]
fn create_write_read() {
    let mut a = TestArray::raid5();
    let p = a.path("f");
    let data = pattern(1, 300_000);
    fs::write(&p, &data).unwrap();
    assert_eq!(fs::read(&p).unwrap(), data);
    assert_eq!(fs::metadata(&p).unwrap().len(), data.len() as u64);
    a.remount();
    assert_eq!(fs::read(a.path("f")).unwrap(), data);
}

#[test]
fn o_append_appends_for_every_writer() {
    let mut a = TestArray::raid5();
    let p = a.path("log");
    fs::write(&p, b"hello").unwrap();
    let mut f1 = OpenOptions::new().append(true).open(&p).unwrap();
    let mut f2 = OpenOptions::new().append(true).open(&p).unwrap();
    f1.write_all(b" world").unwrap();
    f2.write_all(b"1").unwrap();
    f1.write_all(b"2").unwrap();
    // pwrite on an O_APPEND descriptor appends too on Linux.
    f2.write_at(b"3", 0).unwrap();
    drop((f1, f2));
    assert_eq!(fs::read(&p).unwrap(), b"hello world123");
    a.remount();
    assert_eq!(fs::read(a.path("log")).unwrap(), b"hello world123");
}

#[test]
fn o_trunc_empties_the_file() {
    let mut a = TestArray::raid5();
    let p = a.path("t");
    fs::write(&p, pattern(2, 200_000)).unwrap();
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    assert_eq!(fs::metadata(&p).unwrap().len(), 0);
    f.write_all(b"new").unwrap();
    drop(f);
    let got = fs::read(&p).unwrap();
    assert!(
        got == b"new",
        "read {} bytes after O_TRUNC + 3-byte write",
        got.len()
    );
    a.remount();
    let got = fs::read(a.path("t")).unwrap();
    assert!(got == b"new", "read {} bytes after remount", got.len());
}

#[test]
fn o_excl_refuses_an_existing_name() {
    let a = TestArray::raid5();
    let p = a.path("x");
    fs::write(&p, b"first").unwrap();
    let e = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&p)
        .unwrap_err();
    assert_eq!(errno(&e), libc::EEXIST);
    assert_eq!(fs::read(&p).unwrap(), b"first");
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(a.path("y"))
        .unwrap();
}

#[test]
fn truncate_down_then_up_reads_zeros() {
    let mut a = TestArray::raid5();
    let p = a.path("t");
    let data = pattern(3, 200_000);
    fs::write(&p, &data).unwrap();
    let f = OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(3000).unwrap();
    assert_eq!(fs::metadata(&p).unwrap().len(), 3000);
    f.set_len(200_000).unwrap();
    drop(f);
    let check = |got: Vec<u8>| {
        assert_eq!(got.len(), 200_000);
        assert_eq!(&got[..3000], &data[..3000]);
        let first_nonzero = got[3000..].iter().position(|&b| b != 0);
        assert_eq!(first_nonzero, None, "bytes past the old end must read zero");
    };
    check(fs::read(&p).unwrap());
    a.remount();
    check(fs::read(a.path("t")).unwrap());
}

#[test]
fn truncate_by_path_up_and_down() {
    let mut a = TestArray::raid5();
    let p = a.path("t");
    let data = pattern(4, 70_000);
    fs::write(&p, &data).unwrap();
    let c = cpath(&p);
    // SAFETY: FFI call with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::truncate(c.as_ptr(), 1_000_000) }, 0);
    assert_eq!(fs::metadata(&p).unwrap().len(), 1_000_000);
    // SAFETY: as above.
    assert_eq!(unsafe { libc::truncate(c.as_ptr(), 10) }, 0);
    assert_eq!(fs::read(&p).unwrap(), &data[..10]);
    a.remount();
    assert_eq!(fs::read(a.path("t")).unwrap(), &data[..10]);
}

#[test]
fn sparse_file_holes_read_as_zeros() {
    let mut a = TestArray::raid5();
    let p = a.path("sparse");
    let far: u64 = 8 << 30;
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&p)
        .unwrap();
    f.write_at(b"head", 0).unwrap();
    f.write_at(b"tail", far).unwrap();
    drop(f);
    let check = |p: &Path| {
        assert_eq!(fs::metadata(p).unwrap().len(), far + 4);
        assert_eq!(read_at(p, 0, 4), b"head");
        assert_eq!(read_at(p, far, 10), b"tail");
        assert!(read_at(p, 3 << 30, 65536).iter().all(|&b| b == 0));
        assert!(read_at(p, far - 100, 100).iter().all(|&b| b == 0));
    };
    check(&p);
    a.remount();
    check(&a.path("sparse"));
}

#[test]
fn mkdir_rmdir_and_enotempty() {
    let a = TestArray::raid5();
    let d = a.path("d");
    fs::create_dir(&d).unwrap();
    assert!(fs::metadata(&d).unwrap().is_dir());
    assert_eq!(errno(&fs::create_dir(&d).unwrap_err()), libc::EEXIST);
    fs::write(d.join("f"), b"x").unwrap();
    assert_eq!(errno(&fs::remove_dir(&d).unwrap_err()), libc::ENOTEMPTY);
    fs::remove_file(d.join("f")).unwrap();
    fs::remove_dir(&d).unwrap();
    assert_eq!(errno(&fs::metadata(&d).unwrap_err()), libc::ENOENT);
}

#[test]
fn directory_nlink_counts_subdirectories() {
    let a = TestArray::raid5();
    let d = a.path("d");
    fs::create_dir(&d).unwrap();
    assert_eq!(fs::metadata(&d).unwrap().nlink(), 2);
    fs::create_dir(d.join("s1")).unwrap();
    fs::create_dir(d.join("s2")).unwrap();
    fs::write(d.join("f"), b"").unwrap();
    assert_eq!(fs::metadata(&d).unwrap().nlink(), 4);
    fs::remove_dir(d.join("s1")).unwrap();
    assert_eq!(fs::metadata(&d).unwrap().nlink(), 3);
}

#[test]
fn unlink_removes_the_name() {
    let mut a = TestArray::raid5();
    fs::write(a.path("f"), b"x").unwrap();
    fs::remove_file(a.path("f")).unwrap();
    assert_eq!(errno(&fs::metadata(a.path("f")).unwrap_err()), libc::ENOENT);
    assert_eq!(
        errno(&fs::remove_file(a.path("f")).unwrap_err()),
        libc::ENOENT
    );
    a.remount();
    assert!(names(&a.mnt).is_empty(), "{:?}", names(&a.mnt));
}

#[test]
fn unlinked_open_file_stays_readable() {
    let mut a = TestArray::raid5();
    let p = a.path("open");
    let data = pattern(5, 500_000);
    fs::write(&p, &data).unwrap();
    // Drop the kernel's cached pages: the reads below must reach the engine.
    a.remount();
    let p = a.path("open");
    let mut f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
    fs::remove_file(&p).unwrap();
    assert!(!names(&a.mnt).contains(&b"open".to_vec()));
    assert_eq!(errno(&fs::metadata(&p).unwrap_err()), libc::ENOENT);
    let mut got = Vec::new();
    f.read_to_end(&mut got).unwrap();
    assert_eq!(got, data);
    f.write_at(b"still writable", 10).unwrap();
    let mut buf = [0u8; 14];
    f.read_exact_at(&mut buf, 10).unwrap();
    assert_eq!(&buf, b"still writable");
    drop(f);
    a.remount();
    assert!(names(&a.mnt).is_empty());
}

#[test]
fn rename_over_an_existing_file() {
    let mut a = TestArray::raid5();
    fs::write(a.path("a"), b"AAAA").unwrap();
    fs::write(a.path("b"), b"BB").unwrap();
    let ino_a = fs::metadata(a.path("a")).unwrap().ino();
    fs::rename(a.path("a"), a.path("b")).unwrap();
    assert_eq!(fs::read(a.path("b")).unwrap(), b"AAAA");
    assert_eq!(fs::metadata(a.path("b")).unwrap().ino(), ino_a);
    assert!(!a.path("a").exists());
    a.remount();
    assert_eq!(names(&a.mnt), vec![b"b".to_vec()]);
    assert_eq!(fs::read(a.path("b")).unwrap(), b"AAAA");
}

#[test]
fn rename_directories() {
    let mut a = TestArray::raid5();
    fs::create_dir_all(a.path("d1/sub")).unwrap();
    fs::write(a.path("d1/sub/f"), b"deep").unwrap();
    fs::create_dir(a.path("other")).unwrap();
    fs::create_dir(a.path("empty")).unwrap();
    fs::rename(a.path("d1"), a.path("other/d2")).unwrap();
    assert_eq!(fs::read(a.path("other/d2/sub/f")).unwrap(), b"deep");
    // Over an empty directory: allowed; over a non-empty one: ENOTEMPTY.
    fs::rename(a.path("other/d2"), a.path("empty")).unwrap();
    fs::create_dir(a.path("d3")).unwrap();
    fs::write(a.path("d3/x"), b"").unwrap();
    let e = fs::rename(a.path("empty"), a.path("d3")).unwrap_err();
    assert_eq!(errno(&e), libc::ENOTEMPTY);
    // A directory into its own subtree: EINVAL.
    let e = fs::rename(a.path("empty"), a.path("empty/sub/x")).unwrap_err();
    assert_eq!(errno(&e), libc::EINVAL);
    a.remount();
    assert_eq!(fs::read(a.path("empty/sub/f")).unwrap(), b"deep");
    assert!(names(&a.path("other")).is_empty());
}

#[test]
fn rename_noreplace_refuses_an_existing_target() {
    let a = TestArray::raid5();
    fs::write(a.path("a"), b"A").unwrap();
    fs::write(a.path("b"), b"B").unwrap();
    let e = rustix::fs::renameat_with(CWD, a.path("a"), CWD, a.path("b"), RenameFlags::NOREPLACE)
        .unwrap_err();
    assert_eq!(e, rustix::io::Errno::EXIST);
    assert_eq!(fs::read(a.path("a")).unwrap(), b"A");
    assert_eq!(fs::read(a.path("b")).unwrap(), b"B");
    rustix::fs::renameat_with(CWD, a.path("a"), CWD, a.path("c"), RenameFlags::NOREPLACE).unwrap();
    assert_eq!(fs::read(a.path("c")).unwrap(), b"A");
}

#[test]
fn rename_exchange_swaps_two_names() {
    let mut a = TestArray::raid5();
    fs::write(a.path("a"), b"AAA").unwrap();
    fs::create_dir(a.path("d")).unwrap();
    fs::write(a.path("d/inner"), b"I").unwrap();
    let ino_a = fs::metadata(a.path("a")).unwrap().ino();
    let ino_d = fs::metadata(a.path("d")).unwrap().ino();
    rustix::fs::renameat_with(CWD, a.path("a"), CWD, a.path("d"), RenameFlags::EXCHANGE).unwrap();
    assert_eq!(fs::read(a.path("d")).unwrap(), b"AAA");
    assert_eq!(fs::read(a.path("a/inner")).unwrap(), b"I");
    assert_eq!(fs::metadata(a.path("d")).unwrap().ino(), ino_a);
    assert_eq!(fs::metadata(a.path("a")).unwrap().ino(), ino_d);
    // Exchange with a missing name: ENOENT.
    let e = rustix::fs::renameat_with(CWD, a.path("a"), CWD, a.path("nope"), RenameFlags::EXCHANGE)
        .unwrap_err();
    assert_eq!(e, rustix::io::Errno::NOENT);
    a.remount();
    assert_eq!(fs::read(a.path("d")).unwrap(), b"AAA");
    assert_eq!(fs::read(a.path("a/inner")).unwrap(), b"I");
}

#[test]
fn hard_links_share_the_inode_and_count() {
    let mut a = TestArray::raid5();
    fs::write(a.path("a"), b"shared").unwrap();
    fs::create_dir(a.path("d")).unwrap();
    fs::hard_link(a.path("a"), a.path("d/b")).unwrap();
    let (ma, mb) = (
        fs::metadata(a.path("a")).unwrap(),
        fs::metadata(a.path("d/b")).unwrap(),
    );
    assert_eq!(ma.ino(), mb.ino());
    assert_eq!(ma.nlink(), 2);
    assert_eq!(mb.nlink(), 2);
    fs::OpenOptions::new()
        .write(true)
        .open(a.path("d/b"))
        .unwrap()
        .write_at(b"SH", 0)
        .unwrap();
    assert_eq!(fs::read(a.path("a")).unwrap(), b"SHared");
    // A link to a directory is refused.
    let e = fs::hard_link(a.path("d"), a.path("d2")).unwrap_err();
    assert_eq!(errno(&e), libc::EPERM);
    fs::remove_file(a.path("a")).unwrap();
    assert_eq!(fs::metadata(a.path("d/b")).unwrap().nlink(), 1);
    a.remount();
    let m = fs::metadata(a.path("d/b")).unwrap();
    assert_eq!((m.ino(), m.nlink()), (ma.ino(), 1));
    assert_eq!(fs::read(a.path("d/b")).unwrap(), b"SHared");
}

#[test]
fn hard_link_counts_survive_remount() {
    let mut a = TestArray::raid5();
    fs::write(a.path("a"), b"x").unwrap();
    fs::hard_link(a.path("a"), a.path("b")).unwrap();
    fs::hard_link(a.path("a"), a.path("c")).unwrap();
    a.remount();
    for n in ["a", "b", "c"] {
        assert_eq!(fs::metadata(a.path(n)).unwrap().nlink(), 3, "{n}");
    }
}

#[test]
fn symlinks_readlink_and_lstat() {
    let mut a = TestArray::raid5();
    fs::create_dir(a.path("dir")).unwrap();
    fs::write(a.path("dir/target"), b"T").unwrap();
    std::os::unix::fs::symlink("dir/target", a.path("l")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/dangling", a.path("dangling")).unwrap();
    let check = |a: &TestArray| {
        assert_eq!(fs::read_link(a.path("l")).unwrap(), Path::new("dir/target"));
        let lm = fs::symlink_metadata(a.path("l")).unwrap();
        assert!(lm.file_type().is_symlink());
        assert_eq!(lm.len(), "dir/target".len() as u64);
        assert_eq!(fs::read(a.path("l")).unwrap(), b"T");
        assert!(fs::metadata(a.path("l")).unwrap().is_file());
        assert_eq!(
            errno(&fs::metadata(a.path("dangling")).unwrap_err()),
            libc::ENOENT
        );
        assert_eq!(
            fs::read_link(a.path("dangling")).unwrap(),
            Path::new("/nonexistent/dangling")
        );
    };
    check(&a);
    a.remount();
    check(&a);
}

#[test]
fn chmod_chown_round_trip() {
    let mut a = TestArray::raid5();
    let p = a.path("f");
    fs::write(&p, b"x").unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o4751)).unwrap();
    assert_eq!(fs::metadata(&p).unwrap().mode() & 0o7777, 0o4751);
    // As on every Linux filesystem, a change of owner clears set-user-ID.
    std::os::unix::fs::chown(&p, Some(1234), Some(5678)).unwrap();
    std::os::unix::fs::symlink("f", a.path("l")).unwrap();
    std::os::unix::fs::lchown(a.path("l"), Some(42), Some(43)).unwrap();
    let check = |a: &TestArray| {
        let m = fs::metadata(a.path("f")).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o751, "chown left the set-user-ID bit");
        assert_eq!((m.uid(), m.gid()), (1234, 5678));
        let l = fs::symlink_metadata(a.path("l")).unwrap();
        assert_eq!((l.uid(), l.gid()), (42, 43));
    };
    check(&a);
    a.remount();
    check(&a);
}

/// A set-group-ID directory gives its group to files, directories and
/// symlinks made in it, and its set-group-ID bit to new directories, as on
/// ext4 (shared group directories); elsewhere the creator's group holds.
#[test]
fn a_set_group_id_directory_passes_on_its_group() {
    let mut a = TestArray::raid5();
    let s = a.path("shared");
    fs::create_dir(&s).unwrap();
    std::os::unix::fs::chown(&s, None, Some(4321)).unwrap();
    fs::set_permissions(&s, fs::Permissions::from_mode(0o2775)).unwrap();
    fs::write(s.join("f"), b"x").unwrap();
    fs::create_dir(s.join("d")).unwrap();
    std::os::unix::fs::symlink("f", s.join("l")).unwrap();
    fs::write(a.path("plain"), b"y").unwrap();
    let check = |a: &TestArray| {
        let s = a.path("shared");
        let f = fs::metadata(s.join("f")).unwrap();
        assert_eq!(f.gid(), 4321, "file");
        assert_eq!(f.mode() & 0o2000, 0, "a file does not get set-group-ID");
        let d = fs::metadata(s.join("d")).unwrap();
        assert_eq!(d.gid(), 4321, "directory");
        assert_eq!(d.mode() & 0o2000, 0o2000, "a directory gets set-group-ID");
        assert_eq!(fs::symlink_metadata(s.join("l")).unwrap().gid(), 4321);
        assert_eq!(fs::metadata(a.path("plain")).unwrap().gid(), 0);
    };
    check(&a);
    a.remount();
    check(&a);
}

fn as_nobody(args: &[&str]) -> std::process::Output {
    run(Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .args(args))
}

/// Set-user-ID and set-group-ID (with group execute) go as Linux clears
/// them: on a write, a truncate, an `O_TRUNC` open or an `fallocate` by a
/// process without `CAP_FSETID`, and on a change of owner; root's writes
/// and truncates keep them. The mount clears them itself (the kernel hands
/// that over so that it need not ask for `security.capability` before
/// every write), so each case goes through the daemon.
#[test]
fn set_id_bits_are_cleared_on_unprivileged_writes_and_truncates() {
    let mut a = TestArray::builder("raid5", 4).option("allow_other").mount();
    fs::set_permissions(&a.mnt, fs::Permissions::from_mode(0o777)).unwrap();
    let p = a.path("f");
    let f = p.to_str().unwrap().to_string();
    fs::write(&p, b"root wrote this").unwrap();
    let set = |m: u32| fs::set_permissions(&p, fs::Permissions::from_mode(m)).unwrap();
    let mode = || fs::metadata(&p).unwrap().mode() & 0o7777;
    let nobody = |cmd: &str| {
        let out = as_nobody(&["sh", "-c", cmd]);
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };

    set(0o6777);
    let mut w = fs::OpenOptions::new().append(true).open(&p).unwrap();
    w.write_all(b", and more").unwrap();
    w.sync_all().unwrap();
    drop(w);
    assert_eq!(mode(), 0o6777, "root's write cleared set-ID bits");
    nobody(&format!("echo nobody >> {f}"));
    assert_eq!(mode(), 0o777, "an unprivileged write left set-ID bits");
    assert_eq!(fs::read(&p).unwrap(), b"root wrote this, and morenobody\n");

    set(0o4777);
    fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(4)
        .unwrap();
    assert_eq!(mode(), 0o4777, "root's truncate cleared set-user-ID");
    set(0o6777);
    nobody(&format!("truncate -s 2 {f}"));
    assert_eq!(mode(), 0o777, "an unprivileged truncate left set-ID bits");
    assert_eq!(fs::read(&p).unwrap(), b"ro");

    set(0o6777);
    nobody(&format!(": > {f}"));
    assert_eq!(
        mode(),
        0o777,
        "an unprivileged O_TRUNC open left set-ID bits"
    );
    assert_eq!(fs::metadata(&p).unwrap().len(), 0);

    // A mode the mount does not handle fails and clears nothing; root's
    // O_TRUNC open keeps the bits.
    set(0o6777);
    let out = as_nobody(&["fallocate", "--zero-range", "-l", "4096", &f]);
    assert!(!out.status.success(), "zero-range fallocate succeeded");
    assert_eq!(mode(), 0o6777, "a refused fallocate cleared set-ID bits");
    File::create(&p).unwrap();
    assert_eq!(mode(), 0o6777, "root's O_TRUNC open cleared set-ID bits");

    nobody(&format!("fallocate -l 8192 {f}"));
    assert_eq!(mode(), 0o777, "an unprivileged fallocate left set-ID bits");
    assert_eq!(fs::metadata(&p).unwrap().len(), 8192);

    // A change of owner; set-group-ID without group execute (mandatory
    // locking) stays.
    set(0o6767);
    std::os::unix::fs::chown(&p, Some(0), Some(0)).unwrap();
    assert_eq!(mode(), 0o2767, "a change of owner left set-user-ID");

    // File capabilities go on an unprivileged write too (the kernel still
    // removes those itself). A revision-2 capability set: effective,
    // CAP_NET_RAW permitted.
    let mut caps = Vec::new();
    for word in [0x0200_0001u32, 1 << 13, 0, 0, 0] {
        caps.extend_from_slice(&word.to_le_bytes());
    }
    setxattr(&p, "security.capability", &caps, 0).unwrap();
    assert_eq!(getxattr(&p, "security.capability", 64).unwrap(), caps);
    set(0o777);
    nobody(&format!("echo x >> {f}"));
    assert_eq!(
        getxattr(&p, "security.capability", 64),
        Err(libc::ENODATA),
        "an unprivileged write left file capabilities"
    );
    set(0o6767);
    std::os::unix::fs::chown(&p, Some(0), Some(0)).unwrap();

    a.remount();
    assert_eq!(mode(), 0o2767);
    assert_eq!(fs::metadata(&p).unwrap().len(), 8194);
}

#[test]
fn non_owner_cannot_chmod_or_write_but_owner_can() {
    let a = TestArray::builder("raid5", 4).option("allow_other").mount();
    fs::set_permissions(&a.mnt, fs::Permissions::from_mode(0o777)).unwrap();
    let roots = a.path("roots");
    fs::write(&roots, b"root's").unwrap();
    fs::set_permissions(&roots, fs::Permissions::from_mode(0o644)).unwrap();
    let r = roots.to_str().unwrap();

    let out = as_nobody(&["chmod", "666", r]);
    assert!(!out.status.success(), "nobody chmod'ed root's file");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::metadata(&roots).unwrap().mode() & 0o777, 0o644);
    let out = as_nobody(&["sh", "-c", &format!("echo x > {r}")]);
    assert!(!out.status.success(), "nobody wrote to a 0644 root file");
    assert_eq!(fs::read(&roots).unwrap(), b"root's");
    // Readable by others.
    let out = as_nobody(&["cat", r]);
    assert!(out.status.success());
    assert_eq!(out.stdout, b"root's");

    // A file nobody creates is nobody's, and nobody may chmod it.
    let mine = a.path("mine");
    let m = mine.to_str().unwrap();
    let out = as_nobody(&["sh", "-c", &format!("echo hi > {m} && chmod 600 {m}")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let md = fs::metadata(&mine).unwrap();
    assert_eq!(
        (md.uid(), md.gid(), md.mode() & 0o777),
        (65534, 65534, 0o600)
    );
}

#[test]
fn mtime_changes_on_write() {
    let a = TestArray::raid5();
    let p = a.path("f");
    fs::write(&p, b"x").unwrap();
    let old = UNIX_EPOCH + Duration::from_secs(946_684_800);
    File::options()
        .write(true)
        .open(&p)
        .unwrap()
        .set_times(fs::FileTimes::new().set_modified(old).set_accessed(old))
        .unwrap();
    assert_eq!(fs::metadata(&p).unwrap().modified().unwrap(), old);
    let before = SystemTime::now() - Duration::from_secs(2);
    let mut f = OpenOptions::new().write(true).open(&p).unwrap();
    f.write_all(b"more").unwrap();
    f.sync_all().unwrap();
    drop(f);
    let mtime = fs::metadata(&p).unwrap().modified().unwrap();
    assert!(mtime > before, "mtime {mtime:?} not updated by write");
}

#[test]
fn ctime_changes_on_chmod() {
    let a = TestArray::raid5();
    let p = a.path("f");
    fs::write(&p, b"x").unwrap();
    let m0 = fs::metadata(&p).unwrap();
    let c0 = (m0.ctime(), m0.ctime_nsec());
    std::thread::sleep(Duration::from_millis(50));
    fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
    let m1 = fs::metadata(&p).unwrap();
    assert!(
        (m1.ctime(), m1.ctime_nsec()) > c0,
        "ctime unchanged by chmod"
    );
    assert_eq!(
        (m1.mtime(), m1.mtime_nsec()),
        (m0.mtime(), m0.mtime_nsec()),
        "chmod must not change mtime"
    );
}

#[test]
fn utimens_round_trips_nanoseconds() {
    let mut a = TestArray::raid5();
    let p = a.path("f");
    fs::write(&p, b"x").unwrap();
    let at = UNIX_EPOCH + Duration::new(1_600_000_000, 123_456_789);
    let mt = UNIX_EPOCH + Duration::new(1_500_000_000, 987_654_321);
    File::options()
        .write(true)
        .open(&p)
        .unwrap()
        .set_times(fs::FileTimes::new().set_accessed(at).set_modified(mt))
        .unwrap();
    // Also through utimensat on a directory.
    fs::create_dir(a.path("d")).unwrap();
    File::open(a.path("d"))
        .unwrap()
        .set_times(fs::FileTimes::new().set_modified(mt))
        .unwrap();
    let check = |a: &TestArray| {
        let m = fs::metadata(a.path("f")).unwrap();
        assert_eq!((m.atime(), m.atime_nsec()), (1_600_000_000, 123_456_789));
        assert_eq!((m.mtime(), m.mtime_nsec()), (1_500_000_000, 987_654_321));
        let d = fs::metadata(a.path("d")).unwrap();
        assert_eq!((d.mtime(), d.mtime_nsec()), (1_500_000_000, 987_654_321));
    };
    check(&a);
    a.remount();
    check(&a);
}

fn setxattr(p: &Path, name: &str, value: &[u8], flags: i32) -> Result<(), i32> {
    let (c, n) = (cpath(p), CString::new(name).unwrap());
    // SAFETY: FFI with valid NUL-terminated strings and a live value slice.
    let r = unsafe {
        libc::setxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
}

/// getxattr into a buffer of `size` bytes (0 asks for the size).
fn getxattr(p: &Path, name: &str, size: usize) -> Result<Vec<u8>, i32> {
    let (c, n) = (cpath(p), CString::new(name).unwrap());
    let mut buf = vec![0u8; size];
    // SAFETY: FFI; buf is valid for `size` bytes.
    let r = unsafe { libc::getxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), size) };
    if r < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    buf.truncate(if size == 0 { 0 } else { r as usize });
    if size == 0 {
        buf = vec![0; r as usize];
    }
    Ok(buf)
}

fn listxattr(p: &Path, size: usize) -> Result<Vec<u8>, i32> {
    let c = cpath(p);
    let mut buf = vec![0u8; size];
    // SAFETY: FFI; buf is valid for `size` bytes.
    let r = unsafe { libc::listxattr(c.as_ptr(), buf.as_mut_ptr().cast(), size) };
    if r < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    buf.truncate(if size == 0 { 0 } else { r as usize });
    if size == 0 {
        buf = vec![0; r as usize];
    }
    Ok(buf)
}

fn removexattr(p: &Path, name: &str) -> Result<(), i32> {
    let (c, n) = (cpath(p), CString::new(name).unwrap());
    // SAFETY: FFI with valid NUL-terminated strings.
    let r = unsafe { libc::removexattr(c.as_ptr(), n.as_ptr()) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
}

#[test]
fn xattrs_set_get_list_remove() {
    let mut a = TestArray::raid5();
    let p = a.path("f");
    fs::write(&p, b"x").unwrap();
    let big = pattern(6, 3000);
    setxattr(&p, "user.one", b"1", 0).unwrap();
    setxattr(&p, "user.big", &big, 0).unwrap();
    setxattr(&p, "user.empty", b"", 0).unwrap();
    assert_eq!(getxattr(&p, "user.one", 100).unwrap(), b"1");
    assert_eq!(getxattr(&p, "user.big", 0).unwrap().len(), 3000);
    assert_eq!(getxattr(&p, "user.big", 4096).unwrap(), big);
    assert_eq!(getxattr(&p, "user.empty", 10).unwrap(), b"");
    let mut list: Vec<Vec<u8>> = listxattr(&p, 4096)
        .unwrap()
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    list.sort();
    assert_eq!(
        list,
        vec![
            b"user.big".to_vec(),
            b"user.empty".to_vec(),
            b"user.one".to_vec()
        ]
    );
    a.remount();
    let p = a.path("f");
    assert_eq!(getxattr(&p, "user.big", 4096).unwrap(), big);
    removexattr(&p, "user.one").unwrap();
    assert_eq!(getxattr(&p, "user.one", 100), Err(libc::ENODATA));
    assert_eq!(removexattr(&p, "user.one"), Err(libc::ENODATA));
    a.remount();
    let p = a.path("f");
    assert_eq!(getxattr(&p, "user.one", 100), Err(libc::ENODATA));
    assert_eq!(getxattr(&p, "user.empty", 10).unwrap(), b"");
}

#[test]
fn xattr_create_replace_and_erange() {
    let a = TestArray::raid5();
    let p = a.path("f");
    fs::write(&p, b"x").unwrap();
    setxattr(&p, "user.k", b"v1", libc::XATTR_CREATE).unwrap();
    assert_eq!(
        setxattr(&p, "user.k", b"v2", libc::XATTR_CREATE),
        Err(libc::EEXIST)
    );
    assert_eq!(
        setxattr(&p, "user.missing", b"v", libc::XATTR_REPLACE),
        Err(libc::ENODATA)
    );
    setxattr(&p, "user.k", b"v3", libc::XATTR_REPLACE).unwrap();
    assert_eq!(getxattr(&p, "user.k", 10).unwrap(), b"v3");
    assert_eq!(getxattr(&p, "user.k", 1), Err(libc::ERANGE));
    assert_eq!(listxattr(&p, 3), Err(libc::ERANGE));
    assert_eq!(getxattr(&p, "user.nope", 10), Err(libc::ENODATA));
}

#[test]
fn xattrs_outside_the_known_namespaces_are_eopnotsupp() {
    let a = TestArray::raid5();
    let p = a.path("f");
    fs::write(&p, b"x").unwrap();
    // As ext4: only user., trusted., security. and the POSIX ACLs.
    for name in ["foo.bar", "system.foo", "nodot", "user"] {
        assert_eq!(setxattr(&p, name, b"v", 0), Err(libc::EOPNOTSUPP), "{name}");
    }
    for name in ["user.k", "trusted.k", "security.k"] {
        setxattr(&p, name, b"v", 0).unwrap();
    }
    let names = listxattr(&p, 4096).unwrap();
    assert!(!names.windows(7).any(|w| w == b"foo.bar"));
}

#[test]
fn xattrs_on_directories_and_symlinks() {
    let a = TestArray::raid5();
    fs::create_dir(a.path("d")).unwrap();
    setxattr(&a.path("d"), "user.dir", b"D", 0).unwrap();
    assert_eq!(getxattr(&a.path("d"), "user.dir", 8).unwrap(), b"D");
    setxattr(&a.path("d"), "trusted.t", b"T", 0).unwrap();
    assert_eq!(getxattr(&a.path("d"), "trusted.t", 8).unwrap(), b"T");
}

#[test]
fn statfs_reports_raid5_capacity_of_separate_members() {
    let a = TestArray::builder("raid5", 4)
        .backing(raidfs_tests::Backing::Loop { mib: 128 })
        .mount();
    let member = rustix::fs::statvfs(a.member_fs(0)).unwrap();
    let member_bytes = member.f_blocks * member.f_frsize;
    let st = rustix::fs::statvfs(&a.mnt).unwrap();
    let bytes = st.f_blocks * st.f_frsize;
    let expect = 3 * member_bytes;
    assert!(
        bytes <= expect && bytes >= expect - expect / 50,
        "f_blocks*f_frsize = {bytes}, expected about 3 x {member_bytes} = {expect}"
    );
    assert!(st.f_bavail <= st.f_blocks && st.f_bfree <= st.f_blocks);
    assert_eq!(st.f_namemax, 255);
}

#[test]
fn statfs_does_not_overcount_members_sharing_one_filesystem() {
    // Four members on one filesystem: RAID-5 can store at most 3/4 of it.
    let a = TestArray::raid5();
    let host = rustix::fs::statvfs(&a.root).unwrap();
    let host_bytes = host.f_blocks * host.f_frsize;
    let st = rustix::fs::statvfs(&a.mnt).unwrap();
    let bytes = st.f_blocks * st.f_frsize;
    let expect = host_bytes / 4 * 3;
    assert!(
        bytes <= expect + expect / 50 && bytes >= expect - expect / 50,
        "f_blocks*f_frsize = {bytes}, expected about 3/4 of the one member filesystem ({host_bytes}) = {expect}"
    );
}

/// Fork a child that tries to take a lock with `attempt` (async-signal-safe
/// calls only) and report its errno (0 = got it).
fn child_lock_attempt(attempt: impl FnOnce() -> i32) -> i32 {
    // SAFETY: fork in a threaded process; the child only calls
    // async-signal-safe functions (open, flock, fcntl, _exit) before exiting.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let r = attempt();
        // SAFETY: terminating the forked child without running destructors.
        unsafe { libc::_exit(r) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(r, pid);
    assert!(libc::WIFEXITED(status));
    libc::WEXITSTATUS(status)
}

fn last_errno() -> i32 {
    // SAFETY: reading this thread's errno.
    unsafe { *libc::__errno_location() }
}

#[test]
fn flock_excludes_another_process() {
    let a = TestArray::raid5();
    let p = a.path("lock");
    fs::write(&p, b"").unwrap();
    let f = File::open(&p).unwrap();
    let c = cpath(&p);
    let try_flock = || {
        // SAFETY: open/flock on a valid path; only async-signal-safe calls.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY) };
        if fd < 0 {
            return 100;
        }
        // SAFETY: as above.
        if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            0
        } else {
            last_errno()
        }
    };
    rustix::fs::flock(&f, FlockOperation::LockExclusive).unwrap();
    assert_eq!(child_lock_attempt(try_flock), libc::EWOULDBLOCK);
    rustix::fs::flock(&f, FlockOperation::Unlock).unwrap();
    assert_eq!(child_lock_attempt(try_flock), 0);
}

#[test]
fn posix_fcntl_lock_excludes_another_process() {
    let a = TestArray::raid5();
    let p = a.path("lock");
    fs::write(&p, vec![0u8; 100]).unwrap();
    let f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
    let fd = f.as_raw_fd();
    let lock = |kind: i32, start: i64, len: i64| {
        // SAFETY: flock is a plain C struct; all-zero is valid.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = kind as i16;
        fl.l_whence = libc::SEEK_SET as i16;
        fl.l_start = start;
        fl.l_len = len;
        fl
    };
    let mine = lock(libc::F_WRLCK, 0, 50);
    // SAFETY: fcntl on our open fd with a valid flock struct.
    assert_eq!(unsafe { libc::fcntl(fd, libc::F_SETLK, &mine) }, 0);
    let overlapping = lock(libc::F_WRLCK, 10, 10);
    let disjoint = lock(libc::F_WRLCK, 60, 10);
    let attempt = |fl: libc::flock| {
        move || {
            // SAFETY: fcntl on the inherited fd; async-signal-safe.
            if unsafe { libc::fcntl(fd, libc::F_SETLK, &fl) } == 0 {
                0
            } else {
                last_errno()
            }
        }
    };
    let e = child_lock_attempt(attempt(overlapping));
    assert!(
        e == libc::EAGAIN || e == libc::EACCES,
        "second process got errno {e} on a locked range"
    );
    assert_eq!(child_lock_attempt(attempt(disjoint)), 0);
    let unlock = lock(libc::F_UNLCK, 0, 0);
    // SAFETY: as above.
    assert_eq!(unsafe { libc::fcntl(fd, libc::F_SETLK, &unlock) }, 0);
    assert_eq!(child_lock_attempt(attempt(overlapping)), 0);
}

#[test]
fn name_of_255_bytes_ok_256_too_long() {
    let mut a = TestArray::raid5();
    let ok = "n".repeat(255);
    fs::write(a.path(&ok), b"x").unwrap();
    fs::create_dir(a.path("d".repeat(255))).unwrap();
    let long = "n".repeat(256);
    let e = fs::write(a.path(&long), b"x").unwrap_err();
    assert_eq!(errno(&e), libc::ENAMETOOLONG);
    let e = fs::rename(a.path(&ok), a.path(&long)).unwrap_err();
    assert_eq!(errno(&e), libc::ENAMETOOLONG);
    a.remount();
    assert_eq!(fs::read(a.path(&ok)).unwrap(), b"x");
    assert_eq!(names(&a.mnt).len(), 2);
}

#[test]
fn deep_paths_of_depth_100() {
    let mut a = TestArray::raid5();
    let mut p = a.mnt.clone();
    for i in 0..100 {
        p.push(format!("level{i:03}"));
    }
    fs::create_dir_all(&p).unwrap();
    fs::write(p.join("bottom"), b"deep").unwrap();
    a.remount();
    assert_eq!(fs::read(p.join("bottom")).unwrap(), b"deep");
    let rel = p.strip_prefix(&a.mnt).unwrap();
    assert_eq!(rel.components().count(), 100);
    fs::remove_dir_all(a.path("level000")).unwrap();
    assert!(names(&a.mnt).is_empty());
}

#[test]
fn readdir_of_5000_entries() {
    let mut a = TestArray::raid5();
    let d = a.path("big");
    fs::create_dir(&d).unwrap();
    for i in 0..5000 {
        File::create(d.join(format!("entry-{i:05}"))).unwrap();
    }
    let check = |d: &Path| {
        let got = names(d);
        assert_eq!(got.len(), 5000, "entries listed");
        let mut dedup = got.clone();
        dedup.dedup();
        assert_eq!(dedup.len(), 5000, "duplicates in the listing");
        for (i, n) in got.iter().enumerate() {
            assert_eq!(n, format!("entry-{i:05}").as_bytes());
        }
    };
    check(&d);
    a.remount();
    check(&a.path("big"));
}

#[test]
fn readdir_during_concurrent_changes_misses_nothing_stable() {
    let a = TestArray::raid5();
    let d = a.path("dir");
    fs::create_dir(&d).unwrap();
    for i in 0..1500 {
        File::create(d.join(format!("stable-{i:04}"))).unwrap();
    }
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let stop = AtomicBool::new(false);
    let churned = AtomicU64::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                File::create(d.join(format!("churn-{n}"))).unwrap();
                if n >= 20 {
                    fs::remove_file(d.join(format!("churn-{}", n - 20))).unwrap();
                }
                n += 1;
                churned.store(n, Ordering::Relaxed);
            }
        });
        // List while the churn is running: wait for it to start, and keep
        // listing until it has made many changes during the listings.
        while churned.load(Ordering::Relaxed) < 50 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let at_start = churned.load(Ordering::Relaxed);
        let mut listings = 0;
        while listings < 15 || churned.load(Ordering::Relaxed) < at_start + 300 {
            let mut stable: Vec<String> = fs::read_dir(&d)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("stable-"))
                .collect();
            stable.sort();
            let total = stable.len();
            stable.dedup();
            assert_eq!(total, stable.len(), "a stable entry was listed twice");
            assert_eq!(stable.len(), 1500, "a stable entry was missed");
            listings += 1;
            assert!(listings < 100_000, "the churn thread stalled");
        }
        stop.store(true, Ordering::Relaxed);
    });
}

#[test]
fn inode_numbers_stable_across_rename_and_remount() {
    let mut a = TestArray::raid5();
    fs::create_dir(a.path("d")).unwrap();
    fs::write(a.path("f"), b"x").unwrap();
    let (fi, di) = (
        fs::metadata(a.path("f")).unwrap().ino(),
        fs::metadata(a.path("d")).unwrap().ino(),
    );
    fs::rename(a.path("f"), a.path("d/g")).unwrap();
    fs::rename(a.path("d"), a.path("e")).unwrap();
    assert_eq!(fs::metadata(a.path("e/g")).unwrap().ino(), fi);
    assert_eq!(fs::metadata(a.path("e")).unwrap().ino(), di);
    let root = fs::metadata(&a.mnt).unwrap().ino();
    a.remount();
    assert_eq!(fs::metadata(a.path("e/g")).unwrap().ino(), fi);
    assert_eq!(fs::metadata(a.path("e")).unwrap().ino(), di);
    assert_eq!(fs::metadata(&a.mnt).unwrap().ino(), root);
}

#[test]
fn mmap_read() {
    let mut a = TestArray::raid5();
    let data = pattern(7, 1_000_000);
    fs::write(a.path("m"), &data).unwrap();
    a.remount();
    let f = File::open(a.path("m")).unwrap();
    // SAFETY: mapping a whole open file read-only; unmapped below.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            data.len(),
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(ptr, libc::MAP_FAILED);
    // SAFETY: the mapping is data.len() bytes long and readable.
    let mapped = unsafe { std::slice::from_raw_parts(ptr as *const u8, data.len()) };
    assert!(
        mapped == data.as_slice(),
        "mapped bytes differ from the file"
    );
    // SAFETY: unmapping what we mapped; `mapped` is not used afterwards.
    assert_eq!(unsafe { libc::munmap(ptr, data.len()) }, 0);
}

#[test]
fn shared_writable_mmap_persists() {
    let mut a = TestArray::raid5();
    let len = 600_000;
    let p = a.path("m");
    fs::write(&p, vec![b'.'; len]).unwrap();
    let f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
    // SAFETY: mapping the whole open file shared and writable; unmapped below.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(ptr, libc::MAP_FAILED);
    let data = pattern(8, len);
    // SAFETY: the mapping is len bytes long and writable; nothing else
    // aliases it in this process.
    let mapped = unsafe { std::slice::from_raw_parts_mut(ptr as *mut u8, len) };
    mapped.copy_from_slice(&data);
    // SAFETY: msync/munmap on the mapping created above.
    assert_eq!(unsafe { libc::msync(ptr, len, libc::MS_SYNC) }, 0);
    // SAFETY: as above; `mapped` is not used afterwards.
    assert_eq!(unsafe { libc::munmap(ptr, len) }, 0);
    drop(f);
    a.remount();
    let mut got = Vec::new();
    File::open(a.path("m"))
        .unwrap()
        .read_to_end(&mut got)
        .unwrap();
    assert!(got == data, "bytes written through the map did not persist");
}

#[test]
fn fallocate_grows_and_punch_hole_zeros() {
    let mut a = TestArray::raid5();
    let p = a.path("fa");
    let data = pattern(9, 300_000);
    fs::write(&p, &data).unwrap();
    let f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
    rustix::fs::fallocate(&f, FallocateFlags::empty(), 200_000, 400_000).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 600_000);
    rustix::fs::fallocate(
        &f,
        FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
        65_536,
        100_000,
    )
    .unwrap();
    assert_eq!(f.metadata().unwrap().len(), 600_000);
    drop(f);
    let check = |got: Vec<u8>| {
        assert_eq!(got.len(), 600_000);
        assert_eq!(&got[..65_536], &data[..65_536]);
        assert!(
            got[65_536..165_536].iter().all(|&b| b == 0),
            "punched range"
        );
        assert_eq!(&got[165_536..300_000], &data[165_536..]);
        assert!(got[300_000..].iter().all(|&b| b == 0), "allocated range");
    };
    check(fs::read(&p).unwrap());
    a.remount();
    check(fs::read(a.path("fa")).unwrap());
}

/// Bytes the members' filesystems hold allocated for the array's data.
fn data_allocated(a: &TestArray) -> u64 {
    fn walk(p: &Path) -> u64 {
        let md = fs::symlink_metadata(p).unwrap();
        if md.is_dir() {
            fs::read_dir(p)
                .unwrap()
                .map(|e| walk(&e.unwrap().path()))
                .sum()
        } else {
            md.blocks() * 512
        }
    }
    a.members
        .iter()
        .map(|m| walk(&m.join(".raidfs/data")))
        .sum()
}

#[test]
fn punching_whole_stripes_gives_their_space_back() {
    let mut a = TestArray::raid5();
    let p = a.path("big");
    let data = pattern(11, 2_000_000);
    fs::write(&p, &data).unwrap();
    File::open(&p).unwrap().sync_all().unwrap();
    let before = data_allocated(&a);
    let f = OpenOptions::new().write(true).open(&p).unwrap();
    rustix::fs::fallocate(
        &f,
        FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
        100_000,
        1_800_000,
    )
    .unwrap();
    f.sync_all().unwrap();
    drop(f);
    let after = data_allocated(&a);
    // Stripes of 192 KiB: eight whole ones, 2 MiB with parity, are punched.
    assert!(
        after + 1_500_000 < before,
        "allocated {before} bytes before, {after} after"
    );
    let mut want = data.clone();
    want[100_000..1_900_000].fill(0);
    assert!(fs::read(&p).unwrap() == want, "through the page cache");
    a.remount();
    assert!(fs::read(a.path("big")).unwrap() == want, "after a remount");
}

#[test]
fn fsync_and_fdatasync_succeed() {
    let a = TestArray::raid5();
    let mut f = File::create(a.path("s")).unwrap();
    f.write_all(&pattern(10, 100_000)).unwrap();
    f.sync_data().unwrap();
    f.seek(SeekFrom::Start(5)).unwrap();
    f.write_all(b"again").unwrap();
    f.sync_all().unwrap();
    File::open(&a.mnt).unwrap().sync_all().unwrap();
}

#[test]
fn read_only_mount_refuses_writes_and_writes_nothing() {
    let mut a = TestArray::raid5();
    fs::write(a.path("f"), pattern(11, 100_000)).unwrap();
    a.unmount();
    let before: Vec<_> = a
        .members
        .iter()
        .map(|m| raidfs_tests::snapshot(m))
        .collect();
    a.set_options(&["ro"]);
    a.mount();
    assert!(fs::read(a.path("f")).unwrap() == pattern(11, 100_000));
    let e = fs::write(a.path("g"), b"x").unwrap_err();
    assert_eq!(errno(&e), libc::EROFS);
    let e = OpenOptions::new()
        .write(true)
        .open(a.path("f"))
        .unwrap_err();
    assert_eq!(errno(&e), libc::EROFS);
    assert_eq!(
        errno(&fs::create_dir(a.path("d")).unwrap_err()),
        libc::EROFS
    );
    assert_eq!(
        errno(&fs::remove_file(a.path("f")).unwrap_err()),
        libc::EROFS
    );
    a.unmount();
    let after: Vec<_> = a
        .members
        .iter()
        .map(|m| raidfs_tests::snapshot(m))
        .collect();
    let mut changed = Vec::new();
    for (b, a) in before.iter().zip(&after) {
        for (k, v) in a {
            if b.get(k) != Some(v) {
                changed.push(k.display().to_string());
            }
        }
        changed.extend(
            b.keys()
                .filter(|k| !a.contains_key(*k))
                .map(|k| k.display().to_string()),
        );
    }
    assert!(
        changed.is_empty(),
        "a read-only mount changed the members: {changed:?}"
    );
}

#[test]
fn parallel_namespace_changes_in_one_directory() {
    let mut a = TestArray::raid5();
    let d = a.path("shared");
    fs::create_dir(&d).unwrap();
    std::thread::scope(|s| {
        for t in 0..4 {
            let d = &d;
            s.spawn(move || {
                for i in 0..300 {
                    let p = d.join(format!("t{t}-{i}"));
                    fs::write(&p, format!("{t}/{i}"))
                        .unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
                    let r = match i % 3 {
                        0 => fs::remove_file(&p),
                        1 => fs::rename(&p, d.join(format!("r{t}-{i}"))),
                        _ => fs::hard_link(&p, d.join(format!("h{t}-{i}"))),
                    };
                    r.unwrap_or_else(|e| panic!("step {} on {}: {e}", i % 3, p.display()));
                }
            });
        }
    });
    let mut expected = Vec::new();
    for t in 0..4 {
        for i in 0..300 {
            match i % 3 {
                0 => {}
                1 => expected.push(format!("r{t}-{i}").into_bytes()),
                _ => {
                    expected.push(format!("t{t}-{i}").into_bytes());
                    expected.push(format!("h{t}-{i}").into_bytes());
                }
            }
        }
    }
    expected.sort();
    assert_eq!(names(&d), expected);
    a.remount();
    let d = a.path("shared");
    assert_eq!(names(&d), expected);
    for t in 0..4 {
        for i in (0..300).filter(|i| i % 3 == 2) {
            let m = fs::metadata(d.join(format!("h{t}-{i}"))).unwrap();
            assert_eq!(m.nlink(), 2);
            assert_eq!(
                fs::read(d.join(format!("h{t}-{i}"))).unwrap(),
                format!("{t}/{i}").as_bytes()
            );
        }
    }
}

#[test]
fn atime_follows_relatime() {
    let mut a = TestArray::raid5();
    let data = pattern(7, 100_000);
    let p = old_file(&a, &data);
    let before = atime(&p);
    let old_secs = fs::metadata(&p).unwrap().mtime();

    // The access time is not newer than the change time (utimens just set
    // it): a read moves it. The kernel drops its cached access time once
    // the read's reply is in, so wait for the new value rather than for a
    // fixed time.
    assert_eq!(read_uncached(&p), data);
    let moved = atime_after(&p, before);
    assert_ne!(moved, before, "a read left an access time older than ctime");
    let m = fs::metadata(&p).unwrap();
    assert!(
        (m.atime(), m.atime_nsec()) >= (m.ctime(), m.ctime_nsec()),
        "the new access time is not after the change time"
    );
    assert_eq!(m.mtime(), old_secs, "a read changed the modification time");

    // Now newer than both mtime and ctime and younger than a day: a second
    // read leaves it (the kernel asks again after that read too).
    assert_eq!(read_uncached(&p), data);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(atime(&p), moved, "relatime moved a fresh access time");

    // Journaled like any attribute change.
    a.remount();
    assert_eq!(atime(&a.path("f")), moved);
}

/// Read past the page cache, so that the read reaches the filesystem.
fn read_uncached(p: &Path) -> Vec<u8> {
    let mut f = File::open(p).unwrap();
    rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed).unwrap();
    let mut v = Vec::new();
    f.read_to_end(&mut v).unwrap();
    v
}

fn atime(p: &Path) -> (i64, i64) {
    let m = fs::metadata(p).unwrap();
    (m.atime(), m.atime_nsec())
}

/// The access time of `p` once it differs from `before`, waiting out the
/// kernel's attribute cache; `before` if it never moves within 5 s.
fn atime_after(p: &Path, before: (i64, i64)) -> (i64, i64) {
    let mut now = atime(p);
    for _ in 0..50 {
        if now != before {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        now = atime(p);
    }
    now
}

/// A file with old times (3 days), fsynced, on mount `a`.
fn old_file(a: &TestArray, data: &[u8]) -> std::path::PathBuf {
    let p = a.path("f");
    fs::write(&p, data).unwrap();
    File::open(&p).unwrap().sync_all().unwrap();
    let old = SystemTime::now() - Duration::from_secs(3 * 24 * 3600);
    File::options()
        .write(true)
        .open(&p)
        .unwrap()
        .set_times(fs::FileTimes::new().set_accessed(old).set_modified(old))
        .unwrap();
    p
}

#[test]
fn noatime_never_moves_the_access_time() {
    let a = TestArray::builder("raid5", 4).option("noatime").mount();
    let data = pattern(8, 100_000);
    let p = old_file(&a, &data);
    let before = atime(&p);
    assert_eq!(read_uncached(&p), data);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(atime(&p), before, "noatime: a read moved the access time");
}

#[test]
fn strictatime_moves_the_access_time_on_every_read() {
    let a = TestArray::builder("raid5", 4).option("strictatime").mount();
    let data = pattern(9, 100_000);
    let p = old_file(&a, &data);
    let before = atime(&p);
    assert_eq!(read_uncached(&p), data);
    let first = atime_after(&p, before);
    assert_ne!(first, before, "strictatime: a read left the access time");
    // Newer than mtime and ctime now: relatime would keep it, strictatime
    // moves it again.
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(read_uncached(&p), data);
    let second = atime_after(&p, first);
    assert!(
        second > first,
        "strictatime: a second read left the access time"
    );
}

/// The kernel caches names and attributes for long (`cache_timeout=`,
/// default an hour), so what it cannot see by itself must be pushed to it:
/// the block count of a file that writes grew is current once it is
/// fsynced or closed, not after the cache expires.
#[test]
fn block_count_is_current_after_fsync_and_close() {
    let a = TestArray::raid5();
    let p = a.path("f");
    fs::write(&p, b"x").unwrap();
    assert_eq!(fs::metadata(&p).unwrap().blocks(), 1);
    let mut f = OpenOptions::new().append(true).open(&p).unwrap();
    f.write_all(&pattern(3, 3_000_000)).unwrap();
    f.sync_all().unwrap();
    let m = fs::metadata(&p).unwrap();
    assert_eq!(m.len(), 3_000_001);
    assert_eq!(m.blocks(), 3_000_001u64.div_ceil(512), "stale st_blocks");
    rustix::fs::fallocate(&f, FallocateFlags::empty(), 0, 5_000_000).unwrap();
    let m = fs::metadata(&p).unwrap();
    assert_eq!(m.len(), 5_000_000);
    assert_eq!(
        m.blocks(),
        5_000_000u64.div_ceil(512),
        "stale st_blocks after fallocate"
    );
    drop(f);
    let q = a.path("g");
    fs::write(&q, pattern(4, 1_000_000)).unwrap();
    let m = fs::metadata(&q).unwrap();
    assert_eq!(
        m.blocks(),
        1_000_000u64.div_ceil(512),
        "stale st_blocks after close"
    );
}

/// Creating, linking, renaming (over another file too) and removing
/// through the mount keep the kernel's view exact with a long cache
/// timeout: names, link counts and the directory's link count.
#[test]
fn cached_names_follow_create_link_rename_and_unlink() {
    let a = TestArray::raid5();
    let gone = |p: &Path, what: &str| {
        let e = fs::metadata(p).unwrap_err();
        assert_eq!(errno(&e), libc::ENOENT, "{what}");
    };
    let p = a.path("later");
    gone(&p, "missing name");
    gone(&p, "missing name, asked again");
    fs::write(&p, b"now").unwrap();
    assert_eq!(fs::read(&p).unwrap(), b"now");
    let h = a.path("hard");
    fs::hard_link(&p, &h).unwrap();
    assert_eq!(fs::metadata(&p).unwrap().nlink(), 2);
    let q = a.path("moved");
    gone(&q, "missing target");
    fs::rename(&p, &q).unwrap();
    gone(&p, "old name after rename");
    assert_eq!(fs::read(&q).unwrap(), b"now");
    // A new file renamed over one of the two names.
    fs::write(&p, b"other").unwrap();
    fs::rename(&p, &h).unwrap();
    gone(&p, "old name after rename over a file");
    assert_eq!(fs::read(&h).unwrap(), b"other");
    assert_eq!(
        fs::metadata(&q).unwrap().nlink(),
        1,
        "replaced link still counted"
    );
    fs::remove_file(&q).unwrap();
    gone(&q, "removed name");
    let root_links = fs::metadata(a.path("")).unwrap().nlink();
    fs::create_dir(&p).unwrap();
    assert!(fs::metadata(&p).unwrap().is_dir());
    assert_eq!(fs::metadata(a.path("")).unwrap().nlink(), root_links + 1);
    fs::remove_dir(&p).unwrap();
    gone(&p, "removed directory");
    assert_eq!(fs::metadata(a.path("")).unwrap().nlink(), root_links);
}

/// `open(O_RDONLY | O_TRUNC)` truncates, as on Linux filesystems (the
/// kernel checks write permission first).
#[test]
fn read_only_open_with_o_trunc_truncates() {
    let mut a = TestArray::raid5();
    let p = a.path("f");
    fs::write(&p, pattern(5, 200_000)).unwrap();
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_TRUNC)
        .open(&p)
        .unwrap();
    assert_eq!(f.metadata().unwrap().len(), 0);
    drop(f);
    a.remount();
    assert_eq!(fs::metadata(a.path("f")).unwrap().len(), 0);
}

/// An xattr change moves ctime, which the kernel learns at once.
#[test]
fn xattr_change_shows_a_new_ctime_at_once() {
    let a = TestArray::raid5();
    let p = a.path("f");
    fs::write(&p, b"x").unwrap();
    let old = SystemTime::now() - Duration::from_secs(3600);
    File::options()
        .write(true)
        .open(&p)
        .unwrap()
        .set_times(fs::FileTimes::new().set_modified(old))
        .unwrap();
    let before = fs::metadata(&p).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    setxattr(&p, "user.k", b"v", 0).unwrap();
    let after = fs::metadata(&p).unwrap();
    assert!(
        (after.ctime(), after.ctime_nsec()) > (before.ctime(), before.ctime_nsec()),
        "ctime did not move after setxattr"
    );
}

/// A `system.posix_acl_access` value: version 2, then (tag, perm, id).
fn posix_acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for &(tag, perm, id) in entries {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

#[test]
fn access_acls_set_the_mode_as_on_ext4_and_cp_a_keeps_modes() {
    const ACL: &str = "system.posix_acl_access";
    const NONE: u32 = u32::MAX;
    let mut a = TestArray::raid5();
    // `cp -a` from the local filesystem: coreutils creates each file with a
    // restrictive mode, then copies the ACL that restates the mode bits.
    let src = tempfile::tempdir().unwrap();
    fs::create_dir(src.path().join("d")).unwrap();
    fs::write(src.path().join("d/f"), b"data").unwrap();
    fs::write(src.path().join("g"), b"data").unwrap();
    fs::set_permissions(src.path().join("d"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(src.path().join("d/f"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::set_permissions(src.path().join("g"), fs::Permissions::from_mode(0o644)).unwrap();
    let out = run(Command::new("cp")
        .arg("-a")
        .arg(src.path())
        .arg(a.path("copy")));
    assert!(out.status.success(), "{out:?}");
    for (rel, mode) in [("copy/d", 0o755), ("copy/d/f", 0o640), ("copy/g", 0o644)] {
        let p = a.path(rel);
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o7777, mode, "{rel}");
        assert_eq!(getxattr(&p, ACL, 0), Err(libc::ENODATA), "{rel}");
    }

    // An ACL of the mode bits alone becomes the mode and is not stored; the
    // kernel shows the new mode at once.
    let p = a.path("f");
    fs::write(&p, b"x").unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
    let trivial = posix_acl(&[(0x01, 6, NONE), (0x04, 4, NONE), (0x20, 4, NONE)]);
    setxattr(&p, ACL, &trivial, 0).unwrap();
    assert_eq!(fs::metadata(&p).unwrap().mode() & 0o7777, 0o644);
    assert_eq!(getxattr(&p, ACL, 0), Err(libc::ENODATA));

    // A named user: stored, and the group bits are the mask's.
    let named = posix_acl(&[
        (0x01, 7, NONE),
        (0x02, 6, 1000),
        (0x04, 4, NONE),
        (0x10, 6, NONE),
        (0x20, 0, NONE),
    ]);
    setxattr(&p, ACL, &named, 0).unwrap();
    assert_eq!(fs::metadata(&p).unwrap().mode() & 0o7777, 0o760);
    assert_eq!(getxattr(&p, ACL, 256).unwrap(), named);

    // chmod carries owner, mask and other into the stored ACL.
    fs::set_permissions(&p, fs::Permissions::from_mode(0o750)).unwrap();
    let after = posix_acl(&[
        (0x01, 7, NONE),
        (0x02, 6, 1000),
        (0x04, 4, NONE),
        (0x10, 5, NONE),
        (0x20, 0, NONE),
    ]);
    assert_eq!(getxattr(&p, ACL, 256).unwrap(), after);

    // Malformed: EINVAL, nothing changes.
    assert_eq!(setxattr(&p, ACL, &[2, 0, 0, 0, 1, 0], 0), Err(libc::EINVAL));
    let no_mask = posix_acl(&[
        (0x01, 7, NONE),
        (0x02, 6, 1000),
        (0x04, 4, NONE),
        (0x20, 0, NONE),
    ]);
    assert_eq!(setxattr(&p, ACL, &no_mask, 0), Err(libc::EINVAL));
    assert_eq!(fs::metadata(&p).unwrap().mode() & 0o7777, 0o750);

    a.remount();
    let p = a.path("f");
    assert_eq!(fs::metadata(&p).unwrap().mode() & 0o7777, 0o750);
    assert_eq!(getxattr(&p, ACL, 256).unwrap(), after);
    assert_eq!(
        fs::metadata(a.path("copy/g")).unwrap().mode() & 0o7777,
        0o644
    );
}

/// `dir/.raidfs/data/..` of `ino` on some member: whether its shard is there.
fn shard_exists(a: &TestArray, ino: u64) -> bool {
    let shard = format!(".raidfs/data/{:02x}/{:016x}", ino & 0xff, ino);
    a.members.iter().any(|m| m.join(&shard).exists())
}

#[test]
fn a_file_held_only_by_a_path_descriptor_outlives_its_name() {
    use rustix::fs::{Mode, OFlags};
    let a = TestArray::raid5();
    let p = a.path("held");
    let data = pattern(6, 300_000);
    fs::write(&p, &data).unwrap();
    // No open handle reaches the daemon: only the kernel's reference to
    // the inode keeps it, as on a local filesystem.
    let fd = rustix::fs::open(&p, OFlags::PATH, Mode::empty()).unwrap();
    fs::remove_file(&p).unwrap();
    let st = rustix::fs::fstat(&fd).unwrap();
    assert_eq!((st.st_nlink, st.st_size), (0, data.len() as i64));
    let ino = st.st_ino;
    assert!(shard_exists(&a, ino));
    // Opened again through /proc: the data is all there.
    let again = format!("/proc/self/fd/{}", fd.as_raw_fd());
    assert!(fs::read(&again).unwrap() == data);
    // Once the kernel lets the inode go (FORGET), its space comes back.
    drop(fd);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while shard_exists(&a, ino) {
        assert!(std::time::Instant::now() < deadline, "shard of {ino} kept");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_reader_racing_atomic_replaces_always_finds_a_file() {
    let a = TestArray::raid5();
    let (cfg, tmp) = (a.path("cfg"), a.path("cfg.tmp"));
    fs::write(&cfg, pattern(0, 20_000)).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (cfg, stop) = (cfg.clone(), stop.clone());
        std::thread::spawn(move || {
            let (mut reads, mut missing) = (0u64, 0u64);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match fs::read(&cfg) {
                    Ok(b) => assert_eq!(b.len(), 20_000),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => missing += 1,
                    Err(e) => panic!("{e}"),
                }
                reads += 1;
            }
            (reads, missing)
        })
    };
    for i in 0..3_000u64 {
        fs::write(&tmp, pattern(i, 20_000)).unwrap();
        fs::rename(&tmp, &cfg).unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (reads, missing) = reader.join().unwrap();
    assert!(reads > 0);
    assert_eq!(missing, 0, "{missing} of {reads} reads found no file");
}

#[test]
fn noexec_nosymfollow_and_sync_mount_options_reach_the_kernel() {
    let mut a = TestArray::raid5();
    let script = a.path("run.sh");
    fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("run.sh", a.path("link")).unwrap();
    assert!(Command::new(&script).status().unwrap().success());
    a.unmount();
    a.set_options(&["noexec", "nosymfollow", "sync"]);
    a.mount();
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mnt = fs::canonicalize(&a.mnt).unwrap();
    let line = info
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(mnt.to_str().unwrap()))
        .unwrap();
    // Mount options, then the superblock's after " - TYPE SOURCE ".
    let (mount_opts, sb_opts) = (
        line.split(' ').nth(5).unwrap(),
        line.rsplit(' ').next().unwrap(),
    );
    let has = |opts: &str, o: &str| opts.split(',').any(|x| x == o);
    assert!(has(mount_opts, "noexec"), "{line}");
    assert!(has(mount_opts, "nosymfollow"), "{line}");
    assert!(has(sb_opts, "sync"), "{line}");
    fs::write(a.path("synced"), b"written through").unwrap();
    assert_eq!(fs::read(a.path("synced")).unwrap(), b"written through");
    let e = Command::new(&script).status().unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}");
    assert_eq!(errno(&fs::read(a.path("link")).unwrap_err()), libc::ELOOP);
    assert_eq!(fs::read_link(a.path("link")).unwrap(), Path::new("run.sh"));
}

#[test]
fn a_removed_directory_still_open_stats_with_no_links_and_takes_no_names() {
    use rustix::fs::{Mode, OFlags};
    let a = TestArray::raid5();
    let d = a.path("gone");
    fs::create_dir(&d).unwrap();
    let dir = File::open(&d).unwrap();
    fs::remove_dir(&d).unwrap();
    let md = dir.metadata().unwrap();
    assert!(md.is_dir());
    assert_eq!(md.nlink(), 0);
    let e =
        rustix::fs::openat(&dir, "new", OFlags::CREATE | OFlags::WRONLY, Mode::RUSR).unwrap_err();
    assert_eq!(e, rustix::io::Errno::NOENT);
    assert!(names(&a.mnt).is_empty());
}

#[test]
fn an_ioctl_on_a_file_is_enotty_and_logs_nothing() {
    let a = TestArray::raid5();
    let p = a.path("f");
    fs::write(&p, b"x").unwrap();
    let f = File::open(&p).unwrap();
    for _ in 0..3 {
        // SAFETY: `f` is an open descriptor for the call's duration.
        let tty = unsafe { libc::isatty(f.as_raw_fd()) };
        assert_eq!(tty, 0);
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::ENOTTY)
        );
    }
    let log = a.log_text();
    assert!(!log.contains("ioctl"), "{log}");
}
