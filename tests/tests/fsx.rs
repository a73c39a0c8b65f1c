//! fsx through the real mount: one file on the array and a shadow copy on
//! the host's own filesystem receive the same seeded random sequence of
//! operations (after xfstests' fsx). Every read is compared byte for byte
//! with the shadow, and every few dozen operations the whole file and its
//! size are.
//!
//! The operations: `pwrite` and `pread` at aligned and odd offsets and
//! lengths (also across the end of the file), `ftruncate` down and up,
//! `fallocate` (plain, `KEEP_SIZE`, `PUNCH_HOLE | KEEP_SIZE`; `ZERO_RANGE`
//! must fail with `EOPNOTSUPP` and change nothing), reads and writes through
//! a shared mapping (`msync`ed), `fsync`/`fdatasync`, close and reopen
//! (with an `O_APPEND` write, with `O_TRUNC`), writes through a second
//! descriptor, `O_DIRECT` reads and writes (they reach the engine as they
//! are, unaligned, not gathered into pages by the kernel), dropping the
//! file's cached pages (`POSIX_FADV_DONTNEED`) so that the engine answers
//! the next reads, three `O_DIRECT` requests at once on neighbouring
//! ranges, remounting, `fsync` then `kill -9` of the daemon and a mount
//! again (nothing may be lost), deleting and creating the file again (it
//! starts inline in the metadata, then moves to stripes), and
//! `SEEK_DATA`/`SEEK_HOLE` (the mount has no `lseek` of its own: the kernel
//! answers that the whole file is data, which only has to be consistent).
//! Space is not reserved by `fallocate` (members are ordinary filesystems),
//! which no read can tell.
//!
//! Reproducing: a failure names the seed and the last operations, and
//! writes every operation it ran to a file; run the same test again with
//! `RAIDFS_FSX_REPLAY=that-file` to replay them (edit the file to cut the
//! sequence down), or with `RAIDFS_FSX_SEED=N` (and `RAIDFS_FSX_OPS=N`) to
//! run another sequence. `RAIDFS_FSX_VERBOSE=1` prints every operation.
//! To explore further: `RAIDFS_FSX_ARRAY=LEVEL:MEMBERS:CHUNK` (another
//! array), `RAIDFS_FSX_FAIL=OP:SLOT,…` (members failed on the way),
//! `RAIDFS_FSX_MAX=BYTES` (largest file size), `RAIDFS_FSX_OPTIONS=a,b=c`
//! (mount options).

use std::collections::VecDeque;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::Instant;

use raidfs_tests::{TestArray, pattern, run_ok};
use rustix::fs::{Advice, FallocateFlags, SeekFrom};
use rustix::mm::{MapFlags, MsyncFlags, ProtFlags};

/// Operations kept for the failure message.
const LOG_OPS: usize = 24;
/// A whole-file comparison every this many operations (and at the end).
const CHECK_EVERY: usize = 40;

const FALLOC_PLAIN: u32 = 0;
const FALLOC_KEEP: u32 = 0x01;
const FALLOC_PUNCH: u32 = 0x02 | 0x01;
const FALLOC_ZERO: u32 = 0x10;
const FALLOC_ZERO_KEEP: u32 = 0x10 | 0x01;

/// One step of the sequence. Every field is fixed when the sequence is
/// generated, so a sequence replays the same (ranges that no longer fit
/// the file, in a sequence cut down by hand, are clipped when applied).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    /// `pwrite` of `len` bytes of `pattern(seed)` at `off`.
    Write {
        off: u64,
        len: u64,
        seed: u64,
    },
    /// `pread`, compared with the shadow's (including a short read at EOF).
    Read {
        off: u64,
        len: u64,
    },
    Truncate {
        size: u64,
    },
    /// `fallocate(mode, off, len)`.
    Falloc {
        mode: u32,
        off: u64,
        len: u64,
    },
    /// Read `[off, off + len)` through a shared mapping.
    MapRead {
        off: u64,
        len: u64,
    },
    /// Write `[off, off + len)` through a shared mapping, then `msync`.
    MapWrite {
        off: u64,
        len: u64,
        seed: u64,
    },
    Fsync,
    Fdatasync,
    /// Close the file and open it again.
    Reopen,
    /// Close the file and open it again with `O_TRUNC`.
    ReopenTrunc,
    /// Close, open with `O_APPEND`, `write` `len` bytes, close, reopen.
    Append {
        len: u64,
        seed: u64,
    },
    /// `pwrite` through a second descriptor (kept open alongside).
    SecondWrite {
        off: u64,
        len: u64,
        seed: u64,
    },
    /// `pread` through an `O_DIRECT` descriptor.
    DirectRead {
        off: u64,
        len: u64,
    },
    /// `pwrite` through an `O_DIRECT` descriptor.
    DirectWrite {
        off: u64,
        len: u64,
        seed: u64,
    },
    /// `POSIX_FADV_DONTNEED` on the whole file, after an `fdatasync` if
    /// `sync` (else dirty pages may stay).
    DropCache {
        sync: bool,
    },
    /// Close everything, unmount, mount, reopen.
    Remount,
    /// `fsync`, then `kill -9` the daemon and mount again (the mount
    /// resyncs what the write-intent log left dirty): everything was
    /// fsynced, so nothing may be lost.
    Crash,
    /// [`Op::Crash`], and member slot `slot` is gone when the array comes
    /// back (mounted degraded, by force).
    CrashLosing {
        slot: usize,
    },
    /// Unlink the file and create it again, empty.
    Recreate,
    /// `SEEK_DATA` and `SEEK_HOLE` from `off`.
    Seek {
        off: u64,
    },
    /// `raidfs fail` member slot `slot`.
    Fail {
        slot: usize,
    },
    /// Three `O_DIRECT` requests at once, from three threads, on adjacent
    /// disjoint ranges (often of one stripe): `[off, off + l0)`, a gap of
    /// `g0`, `l1` bytes, a gap of `g1`, `l2` bytes. Range `read` is read
    /// (cut to the file's size), the other two are written.
    Parallel {
        off: u64,
        l0: u64,
        g0: u64,
        l1: u64,
        g1: u64,
        l2: u64,
        read: u8,
        seed: u64,
    },
    /// Compare the whole file and its size.
    Check,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Write { off, len, seed } => write!(f, "write {off} {len} {seed}"),
            Op::Read { off, len } => write!(f, "read {off} {len}"),
            Op::Truncate { size } => write!(f, "truncate {size}"),
            Op::Falloc { mode, off, len } => write!(f, "falloc {mode} {off} {len}"),
            Op::MapRead { off, len } => write!(f, "mapread {off} {len}"),
            Op::MapWrite { off, len, seed } => write!(f, "mapwrite {off} {len} {seed}"),
            Op::Fsync => write!(f, "fsync"),
            Op::Fdatasync => write!(f, "fdatasync"),
            Op::Reopen => write!(f, "reopen"),
            Op::ReopenTrunc => write!(f, "reopen-trunc"),
            Op::Append { len, seed } => write!(f, "append {len} {seed}"),
            Op::SecondWrite { off, len, seed } => write!(f, "write2 {off} {len} {seed}"),
            Op::DirectRead { off, len } => write!(f, "dread {off} {len}"),
            Op::DirectWrite { off, len, seed } => write!(f, "dwrite {off} {len} {seed}"),
            Op::DropCache { sync } => write!(f, "dropcache {}", u8::from(*sync)),
            Op::Remount => write!(f, "remount"),
            Op::Crash => write!(f, "crash"),
            Op::CrashLosing { slot } => write!(f, "crash-losing {slot}"),
            Op::Recreate => write!(f, "recreate"),
            Op::Seek { off } => write!(f, "seek {off}"),
            Op::Fail { slot } => write!(f, "fail {slot}"),
            Op::Parallel {
                off,
                l0,
                g0,
                l1,
                g1,
                l2,
                read,
                seed,
            } => write!(f, "parallel {off} {l0} {g0} {l1} {g1} {l2} {read} {seed}"),
            Op::Check => write!(f, "check"),
        }
    }
}

impl Op {
    /// The three ranges of [`Op::Parallel`] (`(off, len)`), none otherwise.
    fn parallel_ranges(&self) -> Vec<(u64, u64)> {
        let Op::Parallel {
            off,
            l0,
            g0,
            l1,
            g1,
            l2,
            ..
        } = *self
        else {
            return Vec::new();
        };
        let o1 = off + l0 + g0;
        let o2 = o1 + l1 + g1;
        vec![(off, l0), (o1, l1), (o2, l2)]
    }

    /// Which range of [`Op::Parallel`] is read.
    fn parallel_read(&self) -> Option<usize> {
        match self {
            Op::Parallel { read, .. } => Some(usize::from(*read)),
            _ => None,
        }
    }

    /// The inverse of `Display` (a `#` starts a comment).
    fn parse(line: &str) -> Option<Op> {
        let line = line.split('#').next().unwrap_or("").trim();
        let mut w = line.split_whitespace();
        let name = w.next()?;
        let n: Vec<u64> = w.map(|x| x.parse().ok()).collect::<Option<_>>()?;
        let arg = |i: usize| n.get(i).copied();
        Some(match name {
            "write" => Op::Write {
                off: arg(0)?,
                len: arg(1)?,
                seed: arg(2)?,
            },
            "read" => Op::Read {
                off: arg(0)?,
                len: arg(1)?,
            },
            "truncate" => Op::Truncate { size: arg(0)? },
            "falloc" => Op::Falloc {
                mode: u32::try_from(arg(0)?).ok()?,
                off: arg(1)?,
                len: arg(2)?,
            },
            "mapread" => Op::MapRead {
                off: arg(0)?,
                len: arg(1)?,
            },
            "mapwrite" => Op::MapWrite {
                off: arg(0)?,
                len: arg(1)?,
                seed: arg(2)?,
            },
            "fsync" => Op::Fsync,
            "fdatasync" => Op::Fdatasync,
            "reopen" => Op::Reopen,
            "reopen-trunc" => Op::ReopenTrunc,
            "append" => Op::Append {
                len: arg(0)?,
                seed: arg(1)?,
            },
            "write2" => Op::SecondWrite {
                off: arg(0)?,
                len: arg(1)?,
                seed: arg(2)?,
            },
            "dread" => Op::DirectRead {
                off: arg(0)?,
                len: arg(1)?,
            },
            "dwrite" => Op::DirectWrite {
                off: arg(0)?,
                len: arg(1)?,
                seed: arg(2)?,
            },
            "dropcache" => Op::DropCache { sync: arg(0)? != 0 },
            "remount" => Op::Remount,
            "crash" => Op::Crash,
            "crash-losing" => Op::CrashLosing {
                slot: usize::try_from(arg(0)?).ok()?,
            },
            "recreate" => Op::Recreate,
            "seek" => Op::Seek { off: arg(0)? },
            "fail" => Op::Fail {
                slot: usize::try_from(arg(0)?).ok()?,
            },
            "check" => Op::Check,
            "parallel" => Op::Parallel {
                off: arg(0)?,
                l0: arg(1)?,
                g0: arg(2)?,
                l1: arg(3)?,
                g1: arg(4)?,
                l2: arg(5)?,
                read: u8::try_from(arg(6)?).ok().filter(|&r| r < 3)?,
                seed: arg(7)?,
            },
            _ => return None,
        })
    }
}

/// Parse a sequence written one operation a line.
fn parse_ops(text: &str) -> Vec<Op> {
    text.lines()
        .filter(|l| !l.split('#').next().unwrap_or("").trim().is_empty())
        .map(|l| Op::parse(l).unwrap_or_else(|| panic!("not an fsx operation: {l:?}")))
        .collect()
}

/// splitmix64: small, fast, and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

/// The array and the shape of the sequence.
#[derive(Debug, Clone)]
struct Config {
    level: String,
    members: usize,
    chunk: String,
    chunk_bytes: u64,
    data_chunks: u64,
    /// The file never grows past this.
    max_size: u64,
    /// Longest ordinary write or read.
    max_len: u64,
    ops: usize,
    seed: u64,
    /// `(before operation i, slot)`: members failed on the way.
    fail_at: Vec<(usize, usize)>,
    /// How often (per mille) the file is deleted and created again.
    recreate_per_mille: u64,
}

impl Config {
    fn new(level: &str, members: usize, chunk: &str, default_seed: u64) -> Self {
        let chunk_bytes = match chunk.strip_suffix('K') {
            Some(k) => k.parse::<u64>().ok().map(|k| k << 10),
            None => chunk
                .strip_suffix('M')
                .and_then(|m| m.parse::<u64>().ok())
                .map(|m| m << 20),
        }
        .unwrap_or_else(|| panic!("chunk {chunk:?}: not NK or NM"));
        let seed = env_u64("RAIDFS_FSX_SEED").unwrap_or(default_seed);
        let ops = env_u64("RAIDFS_FSX_OPS").map_or(2000, |n| n as usize);
        Config {
            level: level.to_string(),
            members,
            chunk: chunk.to_string(),
            chunk_bytes,
            data_chunks: data_chunks(level, members),
            max_size: 4 << 20,
            max_len: 3 * chunk_bytes + 4096,
            ops,
            seed,
            fail_at: Vec::new(),
            recreate_per_mille: 3,
        }
    }
}

/// Data chunks per stripe of `level` on `members` members (only used to
/// aim offsets at stripe boundaries and to describe a mismatch).
fn data_chunks(level: &str, members: usize) -> u64 {
    let n = members as u64;
    let suffix = |p: &str| level.strip_prefix(p).and_then(|g| g.parse::<u64>().ok());
    let d = if let Some((k, _)) = level.split_once('+') {
        k.parse().unwrap_or(1)
    } else if level == "raid0" {
        n
    } else if level == "raid1" {
        1
    } else if level == "raid6" {
        n - 2
    } else if level == "raid10" || level == "raid01" {
        n / 2
    } else if let Some(c) = suffix("raid10-n") {
        n / c
    } else if level == "raid50" {
        n - 2
    } else if let Some(g) = suffix("raid50-g") {
        n - g
    } else if level == "raid60" {
        n - 4
    } else if let Some(g) = suffix("raid60-g") {
        n - 2 * g
    } else {
        n - 1
    };
    d.max(1)
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
    )
}

/// The generator: operations drawn from the seed, shaped by the size the
/// file will have when they run (it keeps a model of the size).
struct Gen<'a> {
    cfg: &'a Config,
    rng: Rng,
    size: u64,
}

impl Gen<'_> {
    fn stripe(&self) -> u64 {
        self.cfg.chunk_bytes * self.cfg.data_chunks
    }

    /// An offset below `max`: near the end of the file, on a chunk or a
    /// stripe boundary, on a 4 KiB boundary, or anywhere; sometimes one
    /// byte off a boundary.
    fn off(&mut self, max: u64) -> u64 {
        let chunk = self.cfg.chunk_bytes;
        let mut o = match self.rng.below(12) {
            0..=2 => {
                let d = self.rng.below(4 * chunk) as i64 - 2 * chunk as i64;
                (self.size as i64 + d).max(0) as u64
            }
            3..=4 => self.rng.below(max / chunk + 1) * chunk,
            5 => self.rng.below(max / self.stripe() + 1) * self.stripe(),
            6..=7 => self.rng.below(max / 4096 + 1) * 4096,
            _ => self.rng.below(max),
        };
        if self.rng.chance(150) {
            o = if self.rng.chance(500) {
                o + 1
            } else {
                o.saturating_sub(1)
            };
        }
        o.min(max.saturating_sub(1))
    }

    /// A length from one byte to a few chunks: small, whole chunks or
    /// stripes, 4 KiB multiples, anything; sometimes one byte more or less.
    fn len(&mut self) -> u64 {
        let chunk = self.cfg.chunk_bytes;
        let mut l = match self.rng.below(12) {
            0..=1 => 1 + self.rng.below(512),
            2..=3 => chunk * (1 + self.rng.below(3)),
            4 => self.stripe() * (1 + self.rng.below(2)),
            5..=6 => 4096 * (1 + self.rng.below(self.cfg.max_len / 4096)),
            _ => 1 + self.rng.below(self.cfg.max_len),
        };
        if self.rng.chance(150) {
            l = if self.rng.chance(500) { l + 1 } else { l - 1 };
        }
        l.max(1)
    }

    /// `(off, len)` of a write that keeps the file under its maximum.
    fn write_range(&mut self) -> (u64, u64) {
        let off = self.off(self.cfg.max_size);
        let len = self.len().min(self.cfg.max_size - off);
        (off, len)
    }

    /// `(off, len)` inside the file, for the mapping (`None` when empty).
    fn inside(&mut self) -> Option<(u64, u64)> {
        if self.size == 0 {
            return None;
        }
        let off = self.off(self.size);
        let len = self.len().min(self.size - off);
        Some((off, len))
    }

    fn next(&mut self, i: usize) -> Op {
        let op = self.draw(i);
        // Keep the model of the size up to date.
        self.size = match op {
            Op::Write { off, len, .. }
            | Op::SecondWrite { off, len, .. }
            | Op::DirectWrite { off, len, .. } => self.size.max(off + len),
            Op::Truncate { size } => size,
            Op::Falloc {
                mode: FALLOC_PLAIN,
                off,
                len,
            } => self.size.max(off + len),
            Op::Append { len, .. } => self.size + len,
            Op::Parallel { .. } => {
                let r = op.parallel_ranges();
                r.iter()
                    .enumerate()
                    .filter(|(k, _)| Some(*k) != op.parallel_read())
                    .map(|(_, &(o, l))| o + l)
                    .fold(self.size, u64::max)
            }
            Op::ReopenTrunc | Op::Recreate => 0,
            _ => self.size,
        };
        op
    }

    fn draw(&mut self, i: usize) -> Op {
        if let Some(&(_, slot)) = self.cfg.fail_at.iter().find(|(at, _)| *at == i) {
            return Op::Fail { slot };
        }
        if i % CHECK_EVERY == CHECK_EVERY - 1 {
            return Op::Check;
        }
        if self.rng.below(1000) < self.cfg.recreate_per_mille {
            return Op::Recreate;
        }
        let seed = self.rng.next() >> 16;
        let r = self.rng.below(1000);
        let max = self.cfg.max_size;
        match r {
            0..=219 => {
                let (off, len) = self.write_range();
                Op::Write { off, len, seed }
            }
            220..=349 => {
                // Reads reach past the end of the file too.
                let off = self.off(max + self.cfg.max_len);
                Op::Read {
                    off,
                    len: self.len(),
                }
            }
            350..=404 => {
                let off = self.off(max + self.cfg.max_len);
                Op::DirectRead {
                    off,
                    len: self.len(),
                }
            }
            405..=459 => {
                let (off, len) = self.write_range();
                Op::DirectWrite { off, len, seed }
            }
            460..=519 => {
                let size = match self.rng.below(4) {
                    0 => 0,
                    1 => self.size.saturating_sub(self.rng.below(self.cfg.max_len)),
                    _ => self.off(max),
                };
                Op::Truncate { size }
            }
            520..=589 => {
                let mode = [
                    FALLOC_PLAIN,
                    FALLOC_PLAIN,
                    FALLOC_PLAIN,
                    FALLOC_KEEP,
                    FALLOC_KEEP,
                    FALLOC_PUNCH,
                    FALLOC_PUNCH,
                    FALLOC_PUNCH,
                    FALLOC_ZERO,
                    FALLOC_ZERO_KEEP,
                ][self.rng.below(10) as usize];
                let (off, len) = self.write_range();
                Op::Falloc { mode, off, len }
            }
            590..=629 => match self.inside() {
                Some((off, len)) => Op::MapRead { off, len },
                None => Op::Fsync,
            },
            630..=679 => match self.inside() {
                Some((off, len)) => Op::MapWrite { off, len, seed },
                None => Op::Fdatasync,
            },
            680..=699 => Op::Fsync,
            700..=719 => Op::Fdatasync,
            720..=749 => Op::Reopen,
            750..=756 => Op::ReopenTrunc,
            757..=789 => {
                let len = self
                    .len()
                    .min(max.saturating_sub(self.size))
                    .max(u64::from(self.size < max));
                if len == 0 {
                    Op::Reopen
                } else {
                    Op::Append { len, seed }
                }
            }
            790..=839 => {
                let (off, len) = self.write_range();
                Op::SecondWrite { off, len, seed }
            }
            840..=889 => Op::DropCache {
                sync: self.rng.chance(500),
            },
            890..=919 => Op::Seek {
                off: self.off(max + self.cfg.max_len),
            },
            920..=921 => Op::Remount,
            950 => Op::Crash,
            922..=949 => {
                // Three ranges close together, each up to a chunk and a
                // bit, in the file or around its end.
                let chunk = self.cfg.chunk_bytes;
                let mut l = [0u64; 3];
                for x in &mut l {
                    *x = 1 + self.rng.below((chunk + 4096).min(self.cfg.max_len));
                }
                let g0 = self.rng.below(3) * self.rng.below(chunk);
                let g1 = self.rng.below(3) * self.rng.below(chunk);
                let span = l.iter().sum::<u64>() + g0 + g1;
                if span >= max {
                    return Op::Fsync;
                }
                let off = self.off(max - span);
                Op::Parallel {
                    off,
                    l0: l[0],
                    g0,
                    l1: l[1],
                    g1,
                    l2: l[2],
                    read: self.rng.below(3) as u8,
                    seed,
                }
            }
            _ => {
                let (off, len) = self.write_range();
                Op::Write { off, len, seed }
            }
        }
    }
}

/// Generate `cfg.ops` operations from `cfg.seed`.
fn generate(cfg: &Config) -> Vec<Op> {
    let mut g = Gen {
        cfg,
        rng: Rng(cfg.seed ^ 0xF5C0_0000),
        size: 0,
    };
    let mut ops: Vec<Op> = (0..cfg.ops).map(|i| g.next(i)).collect();
    // What the engine holds, with nothing left in the kernel's cache.
    ops.push(Op::Remount);
    ops.push(Op::Check);
    ops
}

/// Read up to `len` bytes at `off` (fewer only at the end of the file).
fn read_full(f: &File, off: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut got = 0;
    while got < len {
        match f.read_at(&mut buf[got..], off + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(got);
    Ok(buf)
}

fn page_size() -> u64 {
    // SAFETY: sysconf reads a constant of the system; no pointer involved.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(p).ok().filter(|&p| p > 0).unwrap_or(4096)
}

/// A shared mapping of part of a file, unmapped on drop.
struct Mapping {
    ptr: *mut std::ffi::c_void,
    len: usize,
    /// Offset in the mapping of the first byte asked for.
    skip: usize,
}

impl Mapping {
    /// Map the pages covering `[off, off + len)` of `f` (`len > 0`).
    fn new(f: &File, off: u64, len: u64) -> std::io::Result<Mapping> {
        let page = page_size();
        let start = off / page * page;
        let map_len = (off + len - start) as usize;
        // SAFETY: a new mapping chosen by the kernel (null hint), of a file
        // we keep open meanwhile; the bytes are reached only through the
        // slices below, within `map_len`.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                map_len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                f.as_fd(),
                start,
            )
        }?;
        Ok(Mapping {
            ptr,
            len: map_len,
            skip: (off - start) as usize,
        })
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes for the life of `self`,
        // all inside the file (the caller mapped only within its size).
        let all = unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.len) };
        &all[self.skip..]
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, writable, and `&mut self` makes this the
        // only slice over the mapping.
        let all = unsafe { std::slice::from_raw_parts_mut(self.ptr.cast::<u8>(), self.len) };
        &mut all[self.skip..]
    }

    fn sync(&self) -> std::io::Result<()> {
        // SAFETY: the range is exactly the live mapping.
        unsafe { rustix::mm::msync(self.ptr, self.len, MsyncFlags::SYNC) }?;
        Ok(())
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once; no slice of it
        // outlives `self`.
        let _ = unsafe { rustix::mm::munmap(self.ptr, self.len) };
    }
}

/// The run: the array, the file on it, the shadow, what happened.
struct Fsx {
    cfg: Config,
    /// The member directories as created (slots of `Op::Fail`).
    slots: Vec<PathBuf>,
    path: PathBuf,
    _shadow_dir: tempfile::TempDir,
    shadow_path: PathBuf,
    /// The file on the mount, read-write.
    f: Option<File>,
    /// A second descriptor of it, opened when first needed.
    f2: Option<File>,
    /// An `O_DIRECT` descriptor of it, opened when first needed.
    fd: Option<File>,
    shadow: File,
    /// The last operations, for the failure message.
    log: VecDeque<String>,
    verbose: bool,
    /// The mount options asked for.
    options: Vec<String>,
    /// Last, so that the descriptors above are closed before it unmounts.
    a: TestArray,
}

fn open_rw(p: &Path, extra: i32) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(extra)
        .open(p)
}

fn create_new(p: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(p)
}

impl Fsx {
    fn new(cfg: Config) -> Fsx {
        let mut b = TestArray::builder(&cfg.level, cfg.members).chunk(&cfg.chunk);
        // `RAIDFS_FSX_OPTIONS=a,b=c`: mount options.
        let options: Vec<String> = std::env::var("RAIDFS_FSX_OPTIONS")
            .unwrap_or_default()
            .split(',')
            .filter(|o| !o.is_empty())
            .map(str::to_string)
            .collect();
        for o in &options {
            b = b.option(o);
        }
        let a = b.mount();
        let shadow_dir = tempfile::Builder::new()
            .prefix("raidfs-fsx-shadow-")
            .tempdir()
            .expect("shadow tempdir");
        let shadow_path = shadow_dir.path().join("shadow.bin");
        let path = a.path("fsx.bin");
        let f = create_new(&path).expect("create the file on the mount");
        let shadow = create_new(&shadow_path).expect("create the shadow");
        Fsx {
            slots: a.members.clone(),
            cfg,
            a,
            path,
            _shadow_dir: shadow_dir,
            shadow_path,
            f: Some(f),
            f2: None,
            fd: None,
            shadow,
            log: VecDeque::new(),
            verbose: std::env::var_os("RAIDFS_FSX_VERBOSE").is_some(),
            options,
        }
    }

    fn f(&self) -> &File {
        self.f.as_ref().expect("the file is open")
    }

    fn close_all(&mut self) {
        self.f = None;
        self.f2 = None;
        self.fd = None;
    }

    fn reopen_main(&mut self, extra: i32) {
        self.f = None;
        self.f = Some(open_rw(&self.path, extra).expect("reopen the file"));
    }

    fn shadow_size(&self) -> u64 {
        self.shadow.metadata().expect("stat the shadow").len()
    }

    /// Compare what the mount returned with the shadow's bytes at `off`.
    fn same(&self, what: &str, off: u64, got: &[u8], want: &[u8]) {
        if got == want {
            return;
        }
        let first = got.iter().zip(want).position(|(g, w)| g != w);
        let differing = got.iter().zip(want).filter(|(g, w)| g != w).count();
        let mut msg = format!(
            "{what}: {} bytes read at {off}, {} expected",
            got.len(),
            want.len()
        );
        if let Some(i) = first {
            let last = got.iter().zip(want).rposition(|(g, w)| g != w).unwrap_or(i);
            let show = |b: &[u8]| {
                b[i..(i + 16).min(b.len())]
                    .iter()
                    .map(|x| format!("{x:02x}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            msg += &format!(
                "; {differing} bytes differ, first at file offset {} (last at {}), \
                 chunk {} stripe {}:\n  got  {}\n  want {}",
                off + i as u64,
                off + last as u64,
                (off + i as u64) / self.cfg.chunk_bytes,
                (off + i as u64) / (self.cfg.chunk_bytes * self.cfg.data_chunks),
                show(got),
                show(want),
            );
            let zeros = got[i..=last].iter().all(|&b| b == 0);
            if zeros {
                msg += "\n  (the mount returned zeros there)";
            }
        } else {
            msg += "; the common part agrees";
        }
        panic!("{msg}");
    }

    fn check_size(&self, what: &str) {
        let want = self.shadow_size();
        let got = self.f().metadata().expect("fstat the file").len();
        assert_eq!(got, want, "{what}: fstat size {got}, shadow {want}");
        let got = fs::metadata(&self.path).expect("stat the file").len();
        assert_eq!(got, want, "{what}: stat size {got}, shadow {want}");
    }

    /// Compare the whole file read through `f` in reads of `step` bytes.
    fn check_all(&self, f: &File, step: usize, what: &str) {
        self.check_size(what);
        let size = self.shadow_size();
        let mut off = 0;
        while off < size + 1 {
            let got = read_full(f, off, step).expect("read the file");
            let want = read_full(&self.shadow, off, step).expect("read the shadow");
            self.same(what, off, &got, &want);
            if want.len() < step {
                break;
            }
            off += step as u64;
        }
    }

    fn fallocate(f: &File, mode: u32, off: u64, len: u64) -> std::io::Result<()> {
        rustix::fs::fallocate(f, FallocateFlags::from_bits_retain(mode), off, len)?;
        Ok(())
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Write { off, len, seed } => {
                let data = pattern(seed, len as usize);
                self.f().write_all_at(&data, off).expect("pwrite");
                self.shadow.write_all_at(&data, off).expect("shadow pwrite");
            }
            Op::Read { off, len } => {
                let got = read_full(self.f(), off, len as usize).expect("pread");
                let want = read_full(&self.shadow, off, len as usize).expect("shadow pread");
                self.same("pread", off, &got, &want);
            }
            Op::Truncate { size } => {
                self.f().set_len(size).expect("ftruncate");
                self.shadow.set_len(size).expect("shadow ftruncate");
            }
            Op::Falloc { mode, off, len } => {
                let r = Self::fallocate(self.f(), mode, off, len.max(1));
                if mode & FALLOC_ZERO != 0 {
                    // Not supported (docs/SEMANTICS.md): refused, nothing
                    // changes.
                    let e = r.expect_err("ZERO_RANGE is not supported and must fail");
                    assert_eq!(
                        e.raw_os_error(),
                        Some(libc::EOPNOTSUPP),
                        "fallocate ZERO_RANGE: {e}"
                    );
                } else {
                    r.unwrap_or_else(|e| panic!("fallocate mode {mode:#x}: {e}"));
                    Self::fallocate(&self.shadow, mode, off, len.max(1)).expect("shadow fallocate");
                }
            }
            Op::MapRead { off, len } => {
                let Some((off, len)) = self.clip_inside(off, len) else {
                    return;
                };
                let m = Mapping::new(self.f(), off, len).expect("mmap");
                let want = read_full(&self.shadow, off, len as usize).expect("shadow pread");
                self.same("read through mmap", off, m.bytes(), &want);
            }
            Op::MapWrite { off, len, seed } => {
                let Some((off, len)) = self.clip_inside(off, len) else {
                    return;
                };
                let data = pattern(seed, len as usize);
                let mut m = Mapping::new(self.f(), off, len).expect("mmap");
                m.bytes_mut().copy_from_slice(&data);
                m.sync().expect("msync");
                drop(m);
                self.shadow.write_all_at(&data, off).expect("shadow pwrite");
            }
            Op::Fsync => self.f().sync_all().expect("fsync"),
            Op::Fdatasync => self.f().sync_data().expect("fdatasync"),
            Op::Reopen => self.reopen_main(0),
            Op::ReopenTrunc => {
                self.reopen_main(libc::O_TRUNC);
                self.shadow.set_len(0).expect("shadow truncate");
            }
            Op::Append { len, seed } => {
                let data = pattern(seed, len as usize);
                self.f = None;
                let mut app = open_rw(&self.path, libc::O_APPEND).expect("open O_APPEND");
                app.write_all(&data).expect("write O_APPEND");
                drop(app);
                self.reopen_main(0);
                let end = self.shadow_size();
                self.shadow.write_all_at(&data, end).expect("shadow append");
            }
            Op::SecondWrite { off, len, seed } => {
                if self.f2.is_none() {
                    self.f2 = Some(open_rw(&self.path, 0).expect("open a second descriptor"));
                }
                let data = pattern(seed, len as usize);
                let f2 = self.f2.as_ref().expect("second descriptor");
                f2.write_all_at(&data, off).expect("pwrite (second fd)");
                self.shadow.write_all_at(&data, off).expect("shadow pwrite");
            }
            Op::DirectRead { off, len } => {
                let got = read_full(self.direct(), off, len as usize).expect("O_DIRECT pread");
                let want = read_full(&self.shadow, off, len as usize).expect("shadow pread");
                self.same("O_DIRECT pread", off, &got, &want);
            }
            Op::DirectWrite { off, len, seed } => {
                let data = pattern(seed, len as usize);
                self.direct()
                    .write_all_at(&data, off)
                    .expect("O_DIRECT pwrite");
                self.shadow.write_all_at(&data, off).expect("shadow pwrite");
            }
            Op::DropCache { sync } => {
                if sync {
                    self.f().sync_data().expect("fdatasync");
                }
                rustix::fs::fadvise(self.f(), 0, None, Advice::DontNeed).expect("fadvise");
            }
            Op::Remount => {
                self.close_all();
                self.a.remount();
                self.reopen_main(0);
            }
            Op::Crash | Op::CrashLosing { .. } => {
                self.f().sync_all().expect("fsync before the crash");
                self.a.kill9();
                self.close_all();
                if let Op::CrashLosing { slot } = *op {
                    let gone = &self.slots[slot];
                    self.a.members.retain(|m| m != gone);
                }
                // Not shut down cleanly and degraded: only with `force`.
                let degraded = self.a.members.len() < self.slots.len();
                if degraded {
                    let mut o: Vec<&str> = self.options.iter().map(String::as_str).collect();
                    o.push("force");
                    self.a.set_options(&o);
                }
                self.a.mount();
                let o: Vec<&str> = self.options.iter().map(String::as_str).collect();
                self.a.set_options(&o);
                self.reopen_main(0);
            }
            Op::Recreate => {
                self.close_all();
                fs::remove_file(&self.path).expect("unlink the file");
                self.f = Some(create_new(&self.path).expect("create the file again"));
                fs::remove_file(&self.shadow_path).expect("unlink the shadow");
                self.shadow = create_new(&self.shadow_path).expect("create the shadow again");
            }
            Op::Seek { off } => self.seek(off),
            Op::Fail { slot } => {
                let out = run_ok(&mut self.a.raidfs(&["fail", &self.a.name, &slot.to_string()]));
                assert!(out.status.success());
                // Later mounts go without it.
                let gone = &self.slots[slot];
                self.a.members.retain(|m| m != gone);
            }
            Op::Parallel { .. } => self.parallel(op),
            Op::Check => {
                self.check_all(self.f(), 1 << 20, "whole-file check");
                // And once more from the engine, not the page cache, in
                // reads as small as the kernel's own (the engine reads
                // ahead of sequential readers).
                self.direct();
                let fd = self.fd.as_ref().expect("O_DIRECT descriptor");
                self.check_all(fd, 128 << 10, "whole-file check (O_DIRECT)");
            }
        }
    }

    fn direct(&mut self) -> &File {
        if self.fd.is_none() {
            self.fd = Some(open_rw(&self.path, libc::O_DIRECT).expect("open O_DIRECT"));
        }
        self.fd.as_ref().expect("O_DIRECT descriptor")
    }

    /// [`Op::Parallel`]: the two writes and the read at once, the read
    /// compared with what the shadow held before (the ranges are
    /// disjoint, so it is the same whichever goes first).
    fn parallel(&mut self, op: &Op) {
        let Op::Parallel { seed, .. } = *op else {
            return;
        };
        let ranges = op.parallel_ranges();
        let read = op.parallel_read().expect("parallel");
        let size = self.shadow_size();
        let (roff, rlen) = ranges[read];
        let rlen = if roff < size {
            rlen.min(size - roff)
        } else {
            0
        };
        let want = read_full(&self.shadow, roff, rlen as usize).expect("shadow pread");
        let writes: Vec<(u64, Vec<u8>)> = ranges
            .iter()
            .enumerate()
            .filter(|(k, _)| *k != read)
            .map(|(k, &(o, l))| (o, pattern(seed.wrapping_add(k as u64), l as usize)))
            .collect();
        self.direct();
        let fd = self.fd.as_ref().expect("O_DIRECT descriptor");
        let got = std::thread::scope(|sc| {
            for (o, d) in &writes {
                sc.spawn(move || {
                    fd.write_all_at(d, *o)
                        .unwrap_or_else(|e| panic!("parallel O_DIRECT pwrite at {o}: {e}"))
                });
            }
            let r = sc.spawn(move || read_full(fd, roff, rlen as usize));
            r.join().expect("reader thread")
        })
        .expect("parallel O_DIRECT pread");
        self.same("O_DIRECT pread beside two writes", roff, &got, &want);
        for (o, d) in &writes {
            self.shadow.write_all_at(d, *o).expect("shadow pwrite");
        }
    }

    /// `[off, off + len)` cut to the file (`None` if nothing is left).
    fn clip_inside(&self, off: u64, len: u64) -> Option<(u64, u64)> {
        let size = self.shadow_size();
        (off < size).then(|| (off, len.clamp(1, size - off)))
    }

    /// `SEEK_DATA`/`SEEK_HOLE` from `off`. The mount has no `lseek` of its
    /// own, so the kernel answers (the whole file is data); check what
    /// every Linux filesystem must do: `ENXIO` from the end on; data found
    /// at or after `off` and before the end, holes at or after `off` and at
    /// the latest at the end, and no bytes but zeros skipped on the way to
    /// data.
    fn seek(&self, off: u64) {
        let size = self.shadow_size();
        let data = rustix::fs::seek(self.f(), SeekFrom::Data(off));
        let hole = rustix::fs::seek(self.f(), SeekFrom::Hole(off));
        if off >= size {
            assert_eq!(data, Err(rustix::io::Errno::NXIO), "SEEK_DATA {off}");
            assert_eq!(hole, Err(rustix::io::Errno::NXIO), "SEEK_HOLE {off}");
            return;
        }
        let data = data.unwrap_or_else(|e| panic!("SEEK_DATA {off} of {size}: {e}"));
        let hole = hole.unwrap_or_else(|e| panic!("SEEK_HOLE {off} of {size}: {e}"));
        assert!(
            (off..size).contains(&data),
            "SEEK_DATA {off} of {size}: {data}"
        );
        assert!(
            (off..=size).contains(&hole),
            "SEEK_HOLE {off} of {size}: {hole}"
        );
        let skipped = read_full(&self.shadow, off, (data - off) as usize).expect("shadow pread");
        assert!(
            skipped.iter().all(|&b| b == 0),
            "SEEK_DATA {off} skipped non-zero bytes to {data}"
        );
    }

    /// Run `ops`; on failure, panic naming the seed and the last
    /// operations, after writing the whole sequence run to a file.
    fn run(mut self, ops: &[Op], name: &str) {
        let start = Instant::now();
        eprintln!(
            "fsx {name}: seed {} ({} operations, {} {} members, chunk {})",
            self.cfg.seed,
            ops.len(),
            self.cfg.level,
            self.cfg.members,
            self.cfg.chunk
        );
        for (i, op) in ops.iter().enumerate() {
            if self.verbose {
                eprintln!("fsx {name} #{i}: {op}");
            }
            self.log.push_back(format!("#{i}: {op}"));
            if self.log.len() > LOG_OPS {
                self.log.pop_front();
            }
            let r = catch_unwind(AssertUnwindSafe(|| self.apply(op)));
            if let Err(p) = r {
                let why = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic".into());
                let file = std::env::temp_dir()
                    .join(format!("raidfs-fsx-{name}-seed{}.ops", self.cfg.seed));
                let text: String = ops[..=i].iter().map(|o| format!("{o}\n")).collect();
                let saved = fs::write(&file, text)
                    .map(|()| format!("all {} operations run are in {}", i + 1, file.display()))
                    .unwrap_or_else(|e| format!("cannot save them to {}: {e}", file.display()));
                let last: Vec<&str> = self.log.iter().map(String::as_str).collect();
                panic!(
                    "fsx {name} failed at operation #{i} ({op}), seed {} \
                     (RAIDFS_FSX_SEED={} RAIDFS_FSX_OPS={}):\n{why}\n\
                     last operations:\n  {}\n{saved} \
                     (replay with RAIDFS_FSX_REPLAY=that file)\n\
                     daemon log:\n{}",
                    self.cfg.seed,
                    self.cfg.seed,
                    self.cfg.ops,
                    last.join("\n  "),
                    self.a.log_text()
                );
            }
        }
        eprintln!(
            "fsx {name}: seed {} passed {} operations in {:.1?}",
            self.cfg.seed,
            ops.len(),
            start.elapsed()
        );
        let mut kinds = std::collections::BTreeMap::new();
        for op in ops {
            let s = op.to_string();
            let k = s.split(' ').next().unwrap_or("").to_string();
            *kinds.entry(k).or_insert(0usize) += 1;
        }
        eprintln!("fsx {name}: {kinds:?}");
        self.close_all();
        self.a.unmount();
    }
}

/// Run the sequence of `cfg` (or the one `RAIDFS_FSX_REPLAY` names).
/// `RAIDFS_FSX_ARRAY=LEVEL:MEMBERS:CHUNK` runs it on another array instead
/// (without failing members unless `RAIDFS_FSX_FAIL` says so).
fn fsx(name: &str, mut cfg: Config) {
    if let Ok(spec) = std::env::var("RAIDFS_FSX_ARRAY") {
        let v: Vec<&str> = spec.split(':').collect();
        let [level, members, chunk] = v[..] else {
            panic!("RAIDFS_FSX_ARRAY={spec:?}: not LEVEL:MEMBERS:CHUNK");
        };
        let members = members.parse().expect("RAIDFS_FSX_ARRAY members");
        let other = Config::new(level, members, chunk, cfg.seed);
        cfg = Config {
            level: other.level,
            members,
            chunk: other.chunk,
            chunk_bytes: other.chunk_bytes,
            data_chunks: other.data_chunks,
            fail_at: Vec::new(),
            ..cfg
        };
    }
    // `RAIDFS_FSX_MAX=BYTES`: let the file grow this large.
    if let Some(max) = env_u64("RAIDFS_FSX_MAX") {
        cfg.max_size = max.max(1);
    }
    // `RAIDFS_FSX_FAIL=OP:SLOT,…`: fail these members on the way instead.
    if let Ok(spec) = std::env::var("RAIDFS_FSX_FAIL") {
        cfg.fail_at = spec
            .split(',')
            .filter(|x| !x.is_empty())
            .map(|x| {
                let (at, slot) = x.split_once(':').expect("RAIDFS_FSX_FAIL: OP:SLOT,…");
                (
                    at.parse().expect("RAIDFS_FSX_FAIL op"),
                    slot.parse().expect("RAIDFS_FSX_FAIL slot"),
                )
            })
            .collect();
    }
    let ops = match std::env::var_os("RAIDFS_FSX_REPLAY") {
        Some(p) => parse_ops(
            &fs::read_to_string(&p)
                .unwrap_or_else(|e| panic!("RAIDFS_FSX_REPLAY {}: {e}", p.to_string_lossy())),
        ),
        None => generate(&cfg),
    };
    Fsx::new(cfg).run(&ops, name);
}

#[test]
fn fsx_raid5() {
    fsx("raid5", Config::new("raid5", 4, "64K", 1));
}

/// RAID-6 of five that loses one member a third of the way through and a
/// second one two thirds of the way (so every parity and both-missing
/// reconstruction is exercised), remounted degraded on the way.
#[test]
fn fsx_raid6_degraded() {
    let mut cfg = Config::new("raid6", 5, "64K", 2);
    cfg.fail_at = vec![(cfg.ops / 3, 1), (cfg.ops * 2 / 3, 3)];
    fsx("raid6-degraded", cfg);
}

/// 4 KiB chunks: every operation crosses many stripes.
#[test]
fn fsx_raid5_small_chunks() {
    let mut cfg = Config::new("raid5", 4, "4K", 3);
    cfg.max_size = 2 << 20;
    cfg.max_len = 64 << 10;
    fsx("raid5-4k", cfg);
}

/// A file that stays small: it lives inline in the metadata up to 4 KiB,
/// moves to stripes when it grows past that, and is deleted and created
/// again often, so every operation meets both forms and the move.
#[test]
fn fsx_small_file_inline_and_striped() {
    let mut cfg = Config::new("raid5", 4, "16K", 4);
    cfg.max_size = 24 << 10;
    cfg.max_len = 6 << 10;
    cfg.recreate_per_mille = 40;
    fsx("small-file", cfg);
}

/// Run `ops` (one a line, as a failure saves them) on `cfg`'s array.
fn replay(name: &str, cfg: Config, ops: &str) {
    Fsx::new(cfg).run(&parse_ops(ops), name);
}

/// Found by `fsx_raid6_degraded` (seed 85): data fsynced just before a
/// crash of a degraded array read as EIO after the restart. fsync synced
/// the file but left its stripes listed in the write-intent log on the
/// members until the next settle, and the resync of a degraded array
/// cannot confirm a listed stripe.
#[test]
fn fsynced_data_survives_a_crash_of_a_degraded_array() {
    let cfg = Config::new("raid5", 4, "64K", 0);
    replay(
        "fsync-then-degraded-crash",
        cfg,
        "fail 1\nwrite 0 1000000 7\ncrash\ncheck\n",
    );
}

/// The same with the array whole at the crash and a member missing when
/// it comes back: a crash plus the loss of a member.
#[test]
fn fsynced_data_survives_a_crash_and_the_loss_of_a_member() {
    let cfg = Config::new("raid5", 4, "16K", 0);
    replay(
        "fsync-then-crash-losing",
        cfg,
        "write 0 1000000 7\ncrash-losing 2\ncheck\n",
    );
}

#[test]
fn op_text_round_trips() {
    let cfg = Config::new("raid6", 5, "4K", 7);
    for op in generate(&cfg) {
        assert_eq!(Op::parse(&op.to_string()), Some(op.clone()), "{op}");
    }
}
