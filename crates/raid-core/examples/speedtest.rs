//! Parity speed table in the spirit of `snapraid -T`: every kernel this CPU
//! can run, on eight data buffers of 256 KiB (cache-resident, as SnapRAID
//! measures), plus P+Q on 256 MiB of data (beyond any cache) beside a
//! single-core memory-read figure measured in the same run, which is the
//! ceiling for that column.
//!
//! Figures are GB/s (10⁹ bytes) of *data* processed, parity not counted, the
//! best of several timed trials, timed by the thread's on-CPU time so that
//! other load on a shared machine does not count (`--wall` for wall-clock
//! time, which is what `snapraid -T` uses).
//!
//! ```text
//! cargo run --release -p raid-core --example speedtest -- [--json]
//!     [--kernel NAME] [--time-ms N] [--trials N] [--snapraid FILE [--snapraid-scale F]] [--json-out FILE] [--wall]
//! ```
//!
//! `--snapraid FILE` reads the output of `snapraid -T` and adds the ratio of
//! each of our figures to SnapRAID's best for the same operation
//! (gen1..gen6, rec1, rec2), its figures multiplied by `--snapraid-scale`
//! (wall time / CPU time of its run, to compare on-CPU throughput);
//! `--json-out FILE` also writes the JSON form; `scripts/bench-parity.sh` does all of this.

use std::hint::black_box;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use raid_core::Codec;
use raid_core::kernels::{self, Kernel};

/// Data buffers, as `snapraid -T`.
const DATA: usize = 8;
/// Bytes per buffer in the cache-resident tests, as `snapraid -T`.
const SIZE: usize = 256 * 1024;
/// Gap between buffers, as `snapraid -T` (1792 bytes), so that the buffers
/// do not all start on the same cache sets.
const DISPLACEMENT: usize = 1792;
/// Total data bytes of the beyond-cache P+Q test.
const BIG_TOTAL: usize = 256 << 20;

/// The table's columns: label, JSON key, matching `snapraid -T` row.
const COLUMNS: [(&str, &str, &str); 9] = [
    ("genP", "gen_p", "gen1"),
    ("PQ", "gen_pq", "gen2"),
    ("3P", "gen_3p", "gen3"),
    ("4P", "gen_4p", "gen4"),
    ("5P", "gen_5p", "gen5"),
    ("6P", "gen_6p", "gen6"),
    ("rec1", "rebuild_1", "rec1"),
    ("rec2", "rebuild_2", "rec2"),
    ("PQ-256M", "gen_pq_256mib", ""),
];

struct Options {
    json: bool,
    kernel: Option<String>,
    time: Duration,
    trials: usize,
    snapraid: Option<String>,
    wall: bool,
    json_out: Option<String>,
    snapraid_scale: f64,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        json: false,
        kernel: None,
        time: Duration::from_millis(150),
        trials: 3,
        snapraid: None,
        wall: false,
        json_out: None,
        snapraid_scale: 1.0,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |what: &str| args.next().ok_or_else(|| format!("{what} needs a value"));
        match a.as_str() {
            "--json" => o.json = true,
            "--wall" => o.wall = true,
            "--kernel" => o.kernel = Some(value("--kernel")?),
            "--time-ms" => {
                let v = value("--time-ms")?;
                o.time =
                    Duration::from_millis(v.parse().map_err(|e| format!("--time-ms {v}: {e}"))?);
            }
            "--trials" => {
                let v = value("--trials")?;
                o.trials = v.parse().map_err(|e| format!("--trials {v}: {e}"))?;
            }
            "--snapraid" => o.snapraid = Some(value("--snapraid")?),
            "--snapraid-scale" => {
                let v = value("--snapraid-scale")?;
                o.snapraid_scale = v
                    .parse()
                    .map_err(|e| format!("--snapraid-scale {v}: {e}"))?;
            }
            "--json-out" => o.json_out = Some(value("--json-out")?),
            "-h" | "--help" => {
                println!(
                    "usage: speedtest [--json] [--kernel NAME] [--time-ms N] [--trials N] [--snapraid FILE [--snapraid-scale F]] [--json-out FILE] [--wall]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(o)
}

/// Best throughput in GB/s over `trials` runs of at least `time` each, for
/// `bytes` processed per call of `f`. Time is this thread's on-CPU time
/// when the kernel reports it (so that other load on a shared machine,
/// which only delays the thread, does not count), else wall-clock time.
fn measure(o: &Options, bytes: usize, mut f: impl FnMut()) -> f64 {
    f(); // warm caches and page in buffers
    let mut best: f64 = 0.0;
    for _ in 0..o.trials.max(1) {
        let start = Instant::now();
        let cpu_start = if o.wall { None } else { cpu_ns() };
        let mut calls = 0usize;
        while start.elapsed() < o.time || calls == 0 {
            f();
            calls += 1;
        }
        let wall = start.elapsed().as_secs_f64();
        let secs = match (cpu_start, cpu_ns()) {
            (Some(a), Some(b)) if b > a => (b - a) as f64 / 1e9,
            _ => wall,
        };
        best = best.max((bytes * calls) as f64 / secs / 1e9);
    }
    best
}

/// Nanoseconds the calling thread has run on a CPU: the first field of
/// `/proc/thread-self/schedstat` (Linux with scheduler statistics).
fn cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// `n` buffers of `size` bytes carved from one allocation, `DISPLACEMENT`
/// bytes apart, filled with non-trivial bytes.
fn pool(n: usize, size: usize) -> Vec<u8> {
    let mut v = vec![0u8; n * (size + DISPLACEMENT)];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for w in v.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        w.copy_from_slice(&b[..w.len()]);
    }
    v
}

fn split(pool: &mut [u8], size: usize) -> Vec<&mut [u8]> {
    pool.chunks_mut(size + DISPLACEMENT)
        .map(|c| &mut c[..size])
        .collect()
}

/// Single-core read bandwidth: XOR-fold every byte of `bufs`, 256 bytes of
/// each buffer in turn, so that the buffers are read as concurrent streams
/// like the parity kernels read them (one stream at a time leaves the
/// memory system idle part of the time and understates the ceiling).
fn read_all(bufs: &[&[u8]]) -> u64 {
    const BLOCK: usize = 256;
    let len = bufs.iter().map(|b| b.len()).min().unwrap_or(0);
    let mut acc = [0u64; BLOCK / 8];
    for i in (0..len / BLOCK).map(|i| i * BLOCK) {
        for b in bufs {
            for (a, w) in acc.iter_mut().zip(b[i..i + BLOCK].chunks_exact(8)) {
                let mut x = [0u8; 8];
                x.copy_from_slice(w);
                *a ^= u64::from_ne_bytes(x);
            }
        }
    }
    acc.iter().fold(0, |a, b| a ^ b)
}

/// Throughput of one kernel for every column, GB/s of data.
fn run_kernel(o: &Options, k: &'static Kernel, big: &mut [u8]) -> Result<Vec<f64>, String> {
    let mut buf = pool(DATA + 6, SIZE);
    let mut chunks = split(&mut buf, SIZE);
    let bytes = DATA * SIZE;
    let mut out = Vec::new();
    for m in 1..=6 {
        let codec = Codec::with_kernel(DATA, m, k).map_err(|e| format!("codec {DATA}+{m}: {e}"))?;
        let (data, parity) = chunks.split_at_mut(DATA);
        let data: Vec<&[u8]> = data.iter().map(|d| &**d).collect();
        let mut parity: Vec<&mut [u8]> = parity[..m].iter_mut().map(|p| &mut **p).collect();
        let mut err = None;
        out.push(measure(o, bytes, || {
            if let Err(e) = codec.encode(black_box(&data), &mut parity) {
                err = Some(e);
            }
        }));
        if let Some(e) = err {
            return Err(format!("encode {DATA}+{m}: {e}"));
        }
    }
    // Rebuild from a consistent stripe of 8 data + P + Q.
    let codec = Codec::with_kernel(DATA, 2, k).map_err(|e| format!("codec {DATA}+2: {e}"))?;
    {
        let (data, parity) = chunks.split_at_mut(DATA);
        let data: Vec<&[u8]> = data.iter().map(|d| &**d).collect();
        let mut parity: Vec<&mut [u8]> = parity[..2].iter_mut().map(|p| &mut **p).collect();
        codec
            .encode(&data, &mut parity)
            .map_err(|e| format!("encode: {e}"))?;
    }
    let mut stripe: Vec<&mut [u8]> = chunks.into_iter().take(DATA + 2).collect();
    for missing in [&[3usize][..], &[2, 5]] {
        let mut err = None;
        out.push(measure(o, bytes, || {
            if let Err(e) = codec.reconstruct(black_box(&mut stripe), missing) {
                err = Some(e);
            }
        }));
        if let Some(e) = err {
            return Err(format!("reconstruct {missing:?}: {e}"));
        }
    }
    // Beyond cache: 8 × 32 MiB of data, P+Q.
    let size = BIG_TOTAL / DATA;
    let mut chunks = split(big, size);
    let (data, parity) = chunks.split_at_mut(DATA);
    let data: Vec<&[u8]> = data.iter().map(|d| &**d).collect();
    let mut parity: Vec<&mut [u8]> = parity.iter_mut().map(|p| &mut **p).collect();
    let mut err = None;
    out.push(measure(o, BIG_TOTAL, || {
        if let Err(e) = codec.encode(black_box(&data), &mut parity) {
            err = Some(e);
        }
    }));
    if let Some(e) = err {
        return Err(format!("encode 256 MiB: {e}"));
    }
    Ok(out)
}

/// SnapRAID's best figure per row (`gen1`..`gen6`, `rec1`..`rec6`) from
/// `snapraid -T` output, in GB/s (it prints MB/s).
fn parse_snapraid(text: &str) -> Vec<(String, f64)> {
    let mut rows = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let Some(name) = fields.next() else { continue };
        let is_row = (name.starts_with("gen") || name.starts_with("rec")) && name.len() == 4;
        if !is_row {
            continue;
        }
        let best = fields
            .filter_map(|f| f.parse::<f64>().ok())
            .fold(0.0, f64::max);
        if best > 0.0 {
            rows.push((name.to_string(), best / 1000.0));
        }
    }
    rows
}

fn main() -> ExitCode {
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("speedtest: {e}");
            return ExitCode::from(2);
        }
    };
    let snapraid = match &o.snapraid {
        None => Vec::new(),
        Some(path) => match std::fs::read_to_string(path) {
            Ok(t) => parse_snapraid(&t)
                .into_iter()
                .map(|(n, v)| (n, v * o.snapraid_scale))
                .collect(),
            Err(e) => {
                eprintln!("speedtest: reading snapraid output {path}: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let ks: Vec<&'static Kernel> = kernels::available()
        .into_iter()
        .filter(|k| o.kernel.as_deref().is_none_or(|n| n == k.name))
        .collect();
    if ks.is_empty() {
        eprintln!(
            "speedtest: no such kernel on this CPU (available: {:?})",
            kernel_names()
        );
        return ExitCode::FAILURE;
    }

    let mut big = pool(DATA + 2, BIG_TOTAL / DATA);
    let mem_read = {
        let size = BIG_TOTAL / DATA;
        let bufs: Vec<&[u8]> = big
            .chunks(size + DISPLACEMENT)
            .take(DATA)
            .map(|c| &c[..size])
            .collect();
        measure(&o, BIG_TOTAL, || {
            black_box(read_all(black_box(&bufs)));
        })
    };

    let mut table = Vec::new();
    for k in &ks {
        match run_kernel(&o, k, &mut big) {
            Ok(row) => table.push((k.name, row)),
            Err(e) => {
                eprintln!("speedtest: kernel {}: {e}", k.name);
                return ExitCode::FAILURE;
            }
        }
    }

    let timing = if o.wall || cpu_ns().is_none() {
        "wall-clock"
    } else {
        "on-CPU"
    };
    let json = to_json(&table, mem_read, &snapraid, timing);
    if o.json {
        println!("{json}");
    } else {
        print_table(&table, mem_read, &snapraid, timing);
    }
    if let Some(path) = &o.json_out
        && let Err(e) = std::fs::write(path, json + "\n")
    {
        eprintln!("speedtest: writing {path}: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn kernel_names() -> Vec<&'static str> {
    kernels::available().iter().map(|k| k.name).collect()
}

fn snapraid_for(snapraid: &[(String, f64)], row: &str) -> Option<f64> {
    snapraid.iter().find(|(n, _)| n == row).map(|&(_, v)| v)
}

fn print_table(
    table: &[(&str, Vec<f64>)],
    mem_read: f64,
    snapraid: &[(String, f64)],
    timing: &str,
) {
    println!(
        "Parity speed, {DATA} data buffers of {SIZE} bytes ({} KiB), PQ-256M on {} MiB; GB/s of data, {timing} time",
        DATA * SIZE / 1024,
        BIG_TOTAL >> 20
    );
    print!("{:>10}", "kernel");
    for (label, _, _) in COLUMNS {
        print!("{label:>9}");
    }
    println!();
    for (name, row) in table {
        print!("{name:>10}");
        for v in row {
            print!("{v:>9.1}");
        }
        println!();
    }
    println!("memory read, 1 core, 256 MiB: {mem_read:.1} GB/s");
    if let Some((name, row)) = table.last() {
        println!("{name} PQ-256M / memory read: {:.2}", row[8] / mem_read);
    }
    if snapraid.is_empty() {
        return;
    }
    print!("\n{:>10}", "snapraid");
    for (_, _, s) in COLUMNS {
        match snapraid_for(snapraid, s) {
            Some(v) => print!("{v:>9.1}"),
            None => print!("{:>9}", "-"),
        }
    }
    println!();
    println!("ratio to snapraid's best, same run:");
    for (name, row) in table {
        print!("{name:>10}");
        for (v, (_, _, s)) in row.iter().zip(COLUMNS) {
            match snapraid_for(snapraid, s) {
                Some(b) => print!("{:>9.2}", v / b),
                None => print!("{:>9}", "-"),
            }
        }
        println!();
    }
}

/// The results as one JSON object (written by hand: no serde needed for
/// flat numbers).
fn to_json(
    table: &[(&str, Vec<f64>)],
    mem_read: f64,
    snapraid: &[(String, f64)],
    timing: &str,
) -> String {
    let mut s = format!(
        "{{\"timing\":\"{timing}\",\"data_buffers\":{DATA},\"buffer_bytes\":{SIZE},\"big_total_bytes\":{BIG_TOTAL},\"unit\":\"GB/s of data\",\"memory_read_gbps\":{mem_read:.3},\"kernels\":["
    );
    for (i, (name, row)) in table.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!("{{\"name\":\"{name}\""));
        for (v, (_, key, _)) in row.iter().zip(COLUMNS) {
            s.push_str(&format!(",\"{key}\":{v:.3}"));
        }
        s.push('}');
    }
    s.push_str("],\"snapraid\":{");
    for (i, (n, v)) in snapraid.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!("\"{n}\":{v:.3}"));
    }
    s.push_str("}}");
    s
}
