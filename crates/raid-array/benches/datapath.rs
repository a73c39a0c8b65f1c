//! Data-path throughput against the plain filesystem, in one run:
//!
//! - sequential write (1 MiB calls, then sync) and read (1 MiB calls) of
//!   `RAIDFS_BENCH_MIB` MiB (default 1024) through `DataStore` on RAID-5 of
//!   4 and RAID-6 of 6 member directories, and of the same bytes to/from one
//!   plain file in one directory;
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
const CHUNK: u32 = 64 * 1024;

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
    let store = DataStore::new(Geometry::new(level, n, CHUNK).unwrap(), members, health).unwrap();
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
    drop_caches();
    let t = Instant::now();
    let mut buf = vec![0u8; CALL];
    let mut off = 0u64;
    let mut sum = 0u64;
    while off < total {
        let n = a.store.read(1, off, &mut buf, total).unwrap();
        sum += u64::from(buf[n / 2]);
        off += n as u64;
    }
    let r = t.elapsed().as_secs_f64();
    std::hint::black_box(sum);
    (w, r)
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
        CHUNK >> 10,
        root.display()
    );

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
