//! Data-path throughput against the plain filesystem, in one run:
//!
//! - sequential write (1 MiB calls, then sync) and read (1 MiB calls) of
//!   `RAIDFS_BENCH_MIB` MiB (default 1024) through `DataStore` on RAID-5 of
//!   4 and RAID-6 of 6 member directories (chunk `RAIDFS_BENCH_CHUNK_KIB`,
//!   default 64), and of the same bytes to/from one plain file in one
//!   directory;
//! - rebuild of one RAID-5 member against a plain copy of the same number
//!   of bytes.
//!
//! Every figure is printed with its ratio to the plain one, since shared
//! machines are noisy. Directories go under `RAIDFS_BENCH_DIR` (default: the
//! system temporary directory); all members share one filesystem, so this
//! measures the engine's overhead, not disk parallelism. With
//! `RAIDFS_BENCH_DROP_CACHES=1` (root) the page cache is dropped before
//! every read and the rebuild, so reads come from the device.
//!
//! With `RAIDFS_BENCH_ROUNDS=n` only the sequential figures are taken, but
//! the plain file and both arrays are read `n` times in turn (plain, RAID-5,
//! RAID-6, plain, ...) and medians are reported: on a shared machine the
//! plain figure alone moves several times between runs, so one pass says
//! little about the ratio. Without dropped caches, one untimed read of each
//! comes first, so that all start from the page cache.
//!
//! With `RAIDFS_BENCH_REBUILD_ROUNDS=n` only the rebuild is measured: one
//! RAID-5 array is written, then `n` rounds each time two plain copies of
//! one member's shard and a rebuild of member 0 onto a fresh directory, and
//! medians are reported. The two anchors for "a plain copy of the same
//! bytes": `std::io::copy` (in-kernel `copy_file_range`, what `cp` does)
//! and a read(2)/write(2) loop of 1 MiB calls (a copy through user space,
//! as any program that computes on the bytes must do), each with
//! `fdatasync`, as the rebuild ends with its member durable.
//!
//! Run: `cargo bench -p raid-array --bench datapath`

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use raid_array::data::DataStore;
use raid_array::health::{Health, MemberState};
use raid_array::member::{DirMember, Member};
use raid_array::ops::{self, NoProgress, RebuildOptions};
use raid_core::Geometry;
use raid_core::layout::{Level, Raid5Layout};

const CALL: usize = 1 << 20;
/// Chunk size of the arrays: `RAIDFS_BENCH_CHUNK_KIB`, default 64 KiB (what
/// `raidfs create` uses).
fn chunk() -> u32 {
    std::env::var("RAIDFS_BENCH_CHUNK_KIB")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .map_or(64 * 1024, |k| k << 10)
}

fn drop_caches() {
    if std::env::var("RAIDFS_BENCH_DROP_CACHES").is_ok_and(|v| v == "1") {
        rustix::fs::sync();
        if let Err(e) = std::fs::write("/proc/sys/vm/drop_caches", "3") {
            eprintln!("cannot drop caches: {e}");
        }
    }
}

fn mib_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / (1 << 20) as f64 / secs
}

fn payload() -> Vec<u8> {
    let mut x = 0x1234_5678_9abc_def1u64;
    (0..CALL)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn plain(dir: &Path, total: u64, data: &[u8]) -> (f64, f64) {
    let p = dir.join("plain");
    let t = Instant::now();
    let mut f = std::fs::File::create(&p).unwrap();
    for _ in 0..total / CALL as u64 {
        f.write_all(data).unwrap();
    }
    f.sync_data().unwrap();
    let w = t.elapsed().as_secs_f64();
    drop(f);
    drop_caches();
    let t = Instant::now();
    let mut f = std::fs::File::open(&p).unwrap();
    let mut buf = vec![0u8; CALL];
    let mut sum = 0u64;
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        sum += u64::from(buf[n / 2]);
    }
    let r = t.elapsed().as_secs_f64();
    std::hint::black_box(sum);
    std::fs::remove_file(&p).unwrap();
    (w, r)
}

struct Array {
    dirs: Vec<PathBuf>,
    store: DataStore,
}

fn array(root: &Path, name: &str, level: Level, n: usize) -> Array {
    let dirs: Vec<PathBuf> = (0..n).map(|i| root.join(format!("{name}-{i}"))).collect();
    let members = dirs
        .iter()
        .map(|d| {
            std::fs::create_dir_all(d).unwrap();
            Some(Arc::new(DirMember::open(d).unwrap()) as Arc<dyn Member>)
        })
        .collect();
    let health = Arc::new(Health::new(vec![MemberState::Active; n]));
    let store = DataStore::new(Geometry::new(level, n, chunk()).unwrap(), members, health).unwrap();
    // Inode 1 starts as every new file does when it leaves inline storage.
    store.create_shards(1).unwrap();
    Array { dirs, store }
}

fn through_store(a: &Array, total: u64, data: &[u8]) -> (f64, f64) {
    let t = Instant::now();
    let mut off = 0u64;
    while off < total {
        a.store.write(1, off, data, off).unwrap();
        off += data.len() as u64;
    }
    a.store.sync(1).unwrap();
    let w = t.elapsed().as_secs_f64();
    if cached_reads() {
        // The plain file is still cached from its write; write-behind let
        // the members drop what reached the disks.
        read_store(&a.store, total);
    }
    (w, read_store(&a.store, total))
}

/// Whether reads are meant to come from the page cache (the default).
fn cached_reads() -> bool {
    std::env::var("RAIDFS_BENCH_DROP_CACHES").map_or(true, |v| v != "1")
}

/// `RAIDFS_BENCH_ROUNDS`, if set to a positive number.
fn rounds() -> Option<usize> {
    std::env::var("RAIDFS_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Read `total` bytes of `p` in `CALL`-byte calls; seconds taken.
fn read_plain(p: &Path) -> f64 {
    drop_caches();
    let t = Instant::now();
    let mut f = std::fs::File::open(p).unwrap();
    let mut buf = vec![0u8; CALL];
    let mut sum = 0u64;
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        sum += u64::from(buf[n / 2]);
    }
    std::hint::black_box(sum);
    t.elapsed().as_secs_f64()
}

/// Read `total` bytes of inode 1 of `store` in `CALL`-byte calls; seconds taken.
fn read_store(store: &DataStore, total: u64) -> f64 {
    drop_caches();
    let t = Instant::now();
    let mut buf = vec![0u8; CALL];
    let mut off = 0u64;
    let mut sum = 0u64;
    while off < total {
        let n = store.read(1, off, &mut buf, total).unwrap();
        sum += u64::from(buf[n / 2]);
        off += n as u64;
    }
    std::hint::black_box(sum);
    t.elapsed().as_secs_f64()
}

/// Write once, then read the plain file and both arrays `rounds` times in
/// turn; print the medians and their ratios.
fn sequential_rounds(root: &Path, total: u64, data: &[u8], rounds: usize) {
    let p = root.join("plain");
    let t = Instant::now();
    let mut f = std::fs::File::create(&p).unwrap();
    for _ in 0..total / CALL as u64 {
        f.write_all(data).unwrap();
    }
    f.sync_data().unwrap();
    let pw = t.elapsed().as_secs_f64();
    drop(f);
    let mut arrays = Vec::new();
    for (name, level, n) in [
        ("raid5", Level::Raid5(Raid5Layout::LeftSymmetric), 4),
        ("raid6", Level::Raid6, 6),
    ] {
        let a = array(root, name, level, n);
        let t = Instant::now();
        let mut off = 0u64;
        while off < total {
            a.store.write(1, off, data, off).unwrap();
            off += data.len() as u64;
        }
        a.store.sync(1).unwrap();
        let w = t.elapsed().as_secs_f64();
        println!(
            "{name} of {n}           write {:8.1} MiB/s ({:.2}x plain {:.1} MiB/s)",
            mib_s(total, w),
            pw / w,
            mib_s(total, pw)
        );
        arrays.push((name, n, a));
    }
    let mut plain_r = Vec::new();
    let mut store_r: Vec<Vec<f64>> = vec![Vec::new(); arrays.len()];
    // Warm reads compare like with like only if both sides start cached:
    // the plain file is still in the page cache from its write, while the
    // arrays' write-behind let the members drop what reached the disks.
    // One untimed pass each (unless every read is to come from the device).
    if cached_reads() {
        read_plain(&p);
        for (_, _, a) in &arrays {
            read_store(&a.store, total);
        }
    }
    for _ in 0..rounds {
        plain_r.push(read_plain(&p));
        for (i, (_, _, a)) in arrays.iter().enumerate() {
            store_r[i].push(read_store(&a.store, total));
        }
    }
    let pr = median(&mut plain_r);
    println!(
        "plain directory      read {:8.1} MiB/s (median of {rounds})",
        mib_s(total, pr)
    );
    for ((name, n, a), r) in arrays.iter().zip(store_r.iter_mut()) {
        let all: Vec<String> = r
            .iter()
            .map(|&x| format!("{:.0}", mib_s(total, x)))
            .collect();
        let m = median(r);
        println!(
            "{name} of {n}           read {:8.1} MiB/s ({:.2}x plain; runs {})",
            mib_s(total, m),
            pr / m,
            all.join(" ")
        );
        for d in &a.dirs {
            std::fs::remove_dir_all(d).ok();
        }
    }
    std::fs::remove_file(&p).ok();
}

fn main() {
    let mib: u64 = std::env::var("RAIDFS_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let total = mib << 20;
    let base = std::env::var_os("RAIDFS_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let root = base.join(format!("raidfs-bench-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    let data = payload();
    println!("raid-core kernel: {}", raid_core::kernels::active().name);
    println!(
        "{mib} MiB in {} KiB calls, chunk {} KiB, under {}",
        CALL >> 10,
        chunk() >> 10,
        root.display()
    );
    if let Some(rounds) = rounds() {
        sequential_rounds(&root, total, &data, rounds);
        std::fs::remove_dir_all(&root).ok();
        return;
    }
    if let Some(rounds) = rebuild_rounds() {
        rebuild_only(&root, total, &data, rounds);
        std::fs::remove_dir_all(&root).ok();
        return;
    }

    let (pw, pr) = plain(&root, total, &data);
    println!(
        "plain directory      write {:8.1} MiB/s   read {:8.1} MiB/s",
        mib_s(total, pw),
        mib_s(total, pr)
    );
    for (name, level, n) in [
        ("raid5", Level::Raid5(Raid5Layout::LeftSymmetric), 4),
        ("raid6", Level::Raid6, 6),
    ] {
        let a = array(&root, name, level, n);
        let (w, r) = through_store(&a, total, &data);
        println!(
            "{name} of {n}           write {:8.1} MiB/s ({:.2}x plain)   read {:8.1} MiB/s ({:.2}x plain)",
            mib_s(total, w),
            pw / w,
            mib_s(total, r),
            pr / r
        );
        if name == "raid5" {
            // Rebuild member 0 onto a fresh directory vs a plain copy of as many bytes.
            let shard = a.dirs[1].join(".raidfs/data/01/0000000000000001");
            let member_bytes = std::fs::metadata(&shard).unwrap().len();
            drop_caches();
            let t = Instant::now();
            let mut src = std::fs::File::open(&shard).unwrap();
            let mut dst = std::fs::File::create(root.join("copy")).unwrap();
            std::io::copy(&mut src, &mut dst).unwrap();
            dst.sync_data().unwrap();
            let c = t.elapsed().as_secs_f64();
            std::fs::remove_file(root.join("copy")).unwrap();
            a.store.health().mark_failed(0, "benchmark");
            let fresh = root.join("raid5-new");
            std::fs::create_dir_all(&fresh).unwrap();
            drop_caches();
            let t = Instant::now();
            let nm: Arc<dyn Member> = Arc::new(DirMember::open(&fresh).unwrap());
            ops::rebuild(
                &a.store,
                0,
                nm,
                [(1, total)],
                RebuildOptions::default(),
                &NoProgress,
            )
            .unwrap();
            a.store.sync(1).unwrap();
            let rb = t.elapsed().as_secs_f64();
            println!(
                "rebuild of {} MiB member: {:8.1} MiB/s; plain copy {:8.1} MiB/s ({:.2}x plain)",
                member_bytes >> 20,
                mib_s(member_bytes, rb),
                mib_s(member_bytes, c),
                c / rb
            );
        }
        for d in &a.dirs {
            std::fs::remove_dir_all(d).ok();
        }
    }
    std::fs::remove_dir_all(&root).ok();
}

/// `RAIDFS_BENCH_REBUILD_ROUNDS`, if set to a positive number.
fn rebuild_rounds() -> Option<usize> {
    std::env::var("RAIDFS_BENCH_REBUILD_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
}

/// CPU seconds (user + system, all threads) this process has used so far,
/// from `/proc/self/stat` (in USER_HZ = 100 ticks a second): on a shared
/// machine the CPU a copy costs varies far less than its wall time.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    // Fields after the command: state is field 3, utime 14, stime 15.
    let f: Vec<u64> = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|x| x.parse().ok())
        .collect();
    f.iter().sum::<u64>() as f64 / 100.0
}

/// Let the filesystem finish what earlier steps left (unlinks, write-back),
/// so it is not charged to the next measurement.
fn settle() {
    rustix::fs::sync();
    drop_caches();
}

/// Copy `src` to `dst` in-kernel (`copy_file_range`), then `fdatasync`.
fn copy_in_kernel(src: &Path, dst: &Path) -> (f64, f64) {
    settle();
    let (t, cpu) = (Instant::now(), cpu_secs());
    let mut s = std::fs::File::open(src).unwrap();
    let mut d = std::fs::File::create(dst).unwrap();
    std::io::copy(&mut s, &mut d).unwrap();
    d.sync_data().unwrap();
    let r = (t.elapsed().as_secs_f64(), cpu_secs() - cpu);
    std::fs::remove_file(dst).unwrap();
    r
}

/// Copy `src` to `dst` with read(2)/write(2) of `CALL` bytes, then `fdatasync`.
fn copy_through_user_space(src: &Path, dst: &Path) -> (f64, f64) {
    settle();
    let (t, cpu) = (Instant::now(), cpu_secs());
    let mut s = std::fs::File::open(src).unwrap();
    let mut d = std::fs::File::create(dst).unwrap();
    let mut buf = vec![0u8; CALL];
    loop {
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        d.write_all(&buf[..n]).unwrap();
    }
    d.sync_data().unwrap();
    let r = (t.elapsed().as_secs_f64(), cpu_secs() - cpu);
    std::fs::remove_file(dst).unwrap();
    r
}

/// Write a RAID-5 of 4 once, then `rounds` times: both plain copies of one
/// member's shard and a rebuild of member 0 onto a fresh directory (with
/// the final sync). Prints every round and the medians of the ratios.
fn rebuild_only(root: &Path, total: u64, data: &[u8], rounds: usize) {
    let a = array(root, "raid5", Level::Raid5(Raid5Layout::LeftSymmetric), 4);
    let mut off = 0u64;
    while off < total {
        a.store.write(1, off, data, off).unwrap();
        off += data.len() as u64;
    }
    a.store.sync(1).unwrap();
    let shard = a.dirs[1].join(".raidfs/data/01/0000000000000001");
    let member_bytes = std::fs::metadata(&shard).unwrap().len();
    let copy = root.join("copy");
    let (mut vs_copy, mut vs_rw) = (Vec::new(), Vec::new());
    let mut speeds = Vec::new();
    let (mut cpu_rb, mut cpu_c, mut cpu_rw) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        // The previous new member is no longer in the array.
        if round > 1 {
            std::fs::remove_dir_all(root.join(format!("raid5-new-{}", round - 2))).ok();
        }
        let (c, cc) = copy_in_kernel(&shard, &copy);
        let (rw, crw) = copy_through_user_space(&shard, &copy);
        a.store.health().mark_failed(0, "benchmark");
        let fresh = root.join(format!("raid5-new-{round}"));
        std::fs::create_dir_all(&fresh).unwrap();
        settle();
        let (t, cpu) = (Instant::now(), cpu_secs());
        let nm: Arc<dyn Member> = Arc::new(DirMember::open(&fresh).unwrap());
        let rep = ops::rebuild(
            &a.store,
            0,
            nm,
            [(1, total)],
            RebuildOptions::default(),
            &NoProgress,
        )
        .unwrap();
        a.store.sync(1).unwrap();
        let (rb, crb) = (t.elapsed().as_secs_f64(), cpu_secs() - cpu);
        println!(
            "round {round}: rebuild {:7.1} MiB/s ({} MiB direct, cpu {crb:.2} s); copy_file_range {:7.1} MiB/s ({:.2}x, cpu {cc:.2} s); read/write {:7.1} MiB/s ({:.2}x, cpu {crw:.2} s)",
            mib_s(member_bytes, rb),
            rep.direct_bytes >> 20,
            mib_s(member_bytes, c),
            c / rb,
            mib_s(member_bytes, rw),
            rw / rb
        );
        vs_copy.push(c / rb);
        vs_rw.push(rw / rb);
        speeds.push(mib_s(member_bytes, rb));
        cpu_rb.push(crb);
        cpu_c.push(cc);
        cpu_rw.push(crw);
    }
    println!(
        "rebuild of {} MiB member, median of {rounds}: {:8.1} MiB/s; {:.2}x copy_file_range, {:.2}x read/write copy; cpu s: rebuild {:.2}, copy_file_range {:.2}, read/write {:.2}",
        member_bytes >> 20,
        median(&mut speeds),
        median(&mut vs_copy),
        median(&mut vs_rw),
        median(&mut cpu_rb),
        median(&mut cpu_c),
        median(&mut cpu_rw)
    );
    for d in &a.dirs {
        std::fs::remove_dir_all(d).ok();
    }
}
