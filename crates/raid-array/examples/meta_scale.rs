//! Metadata scale benchmark: populate an array with many empty files, then
//! time a fresh assemble and report its peak memory.
//!
//! ```text
//! cargo run --release -p raid-array --example meta_scale -- populate DIR FILES
//! cargo run --release -p raid-array --example meta_scale -- assemble DIR
//! ```
//! `populate` creates a 3-member RAID-5 under DIR (members DIR/m0..m2) with
//! FILES files in directories of 1000, then closes it cleanly (checkpoint).
//! `populate-crash` does the same but stops without closing (metadata
//! committed, array dirty), so `assemble` measures a journal replay.
//! `assemble` assembles it in a fresh process and prints the time taken and
//! the process's peak resident memory (VmHWM), the figures the 1,000,000-file
//! goal is stated in (≤ 10 s, ≤ 400 MiB).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Instant;

use raid_array::{Array, AssembleOptions, CreateOptions, ROOT_INO};
use raid_core::Level;

fn members(dir: &Path) -> Vec<PathBuf> {
    (0..3).map(|i| dir.join(format!("m{i}"))).collect()
}

fn peak_rss_kib() -> u64 {
    status_kib("VmHWM:")
}

fn rss_kib() -> u64 {
    status_kib("VmRSS:")
}

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some(mode @ ("populate" | "populate-crash")) => {
            let dir = PathBuf::from(&args[2]);
            let files: u64 = args[3].parse()?;
            let dirs = members(&dir);
            for d in &dirs {
                std::fs::create_dir_all(d)?;
            }
            let mut o = CreateOptions::new("scale", Level::Raid5(Default::default()), dirs.clone());
            o.allow_same_fs = true;
            raid_array::create::create(&o)?;
            let mut a = AssembleOptions::new(dirs);
            a.sync_metadata = false;
            let array = Array::assemble(&a)?;
            let t = Instant::now();
            let mut parent = ROOT_INO;
            for i in 0..files {
                if i % 1000 == 0 {
                    parent = array
                        .mkdir(
                            ROOT_INO,
                            OsStr::new(&format!("dir-{:06}", i / 1000)),
                            0o755,
                            0,
                            0,
                        )?
                        .ino;
                }
                array.mknod(
                    parent,
                    OsStr::new(&format!("file-{i:09}.jpg")),
                    0o100644,
                    0,
                    1000,
                    1000,
                )?;
            }
            let created = t.elapsed();
            if mode == "populate-crash" {
                // Leave the array dirty: the next assemble replays the journal.
                array.sync_metadata()?;
                drop(array);
                println!("populate: {files} files in {created:.2?}, left dirty");
                return Ok(());
            }
            array.close()?;
            println!(
                "populate: {files} files in {:.2?} (+ close {:.2?})",
                created,
                t.elapsed() - created
            );
        }
        Some("assemble") => {
            let dir = PathBuf::from(&args[2]);
            let t = Instant::now();
            let array = Array::assemble(&AssembleOptions::new(members(&dir)))?;
            let took = t.elapsed();
            let inodes = array.status().inodes;
            println!(
                "assemble: {inodes} inodes in {:.2?}, peak RSS {} MiB, RSS after {} MiB",
                took,
                peak_rss_kib() / 1024,
                rss_kib() / 1024
            );
            array.close()?;
        }
        _ => anyhow::bail!(
            "usage: meta_scale populate|populate-crash DIR FILES | meta_scale assemble DIR"
        ),
    }
    Ok(())
}
