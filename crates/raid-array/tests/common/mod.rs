//! Helpers shared by the engine's integration tests (each test binary
//! uses some of them).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use raid_array::assemble::open_dir;
use raid_array::member::Member;
use raid_array::member::faulty::FaultyMember;
use raid_array::{Array, AssembleOptions};

/// A scratch directory, on tmpfs when there is one: crash tests create and
/// drop thousands of small files and would otherwise wait on the journal.
pub fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(d) = tempfile::tempdir_in(shm)
    {
        return d;
    }
    tempfile::tempdir().unwrap()
}

/// `n` fresh member directories `root/<prefix>0..`.
pub fn make_dirs(root: &Path, prefix: &str, n: usize) -> Vec<PathBuf> {
    (0..n)
        .map(|i| {
            let d = root.join(format!("{prefix}{i}"));
            std::fs::create_dir(&d).unwrap();
            d
        })
        .collect()
}

/// Deterministic pseudo-random bytes (xorshift), different for each seed:
/// test data whose every block differs, so a misplaced chunk shows.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// `cp -a from to`: a directory copied as it stands (an image of a member).
pub fn copy_tree(from: &Path, to: &Path) {
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

/// Assemble with every directory behind a fault-injecting member, in the
/// order of `dirs`.
pub fn assemble_faulty(dirs: &[PathBuf]) -> (Array, Vec<Arc<FaultyMember>>) {
    let faulty: Mutex<Vec<(PathBuf, Arc<FaultyMember>)>> = Mutex::new(Vec::new());
    let open = |p: &Path| -> std::io::Result<Arc<dyn Member>> {
        let f = Arc::new(FaultyMember::new(open_dir(p)?));
        faulty.lock().unwrap().push((p.to_path_buf(), f.clone()));
        Ok(f)
    };
    let a = Array::assemble_with(&AssembleOptions::new(dirs.to_vec()), &open).unwrap();
    let opened = faulty.into_inner().unwrap();
    let by_dir = dirs
        .iter()
        .map(|d| {
            opened
                .iter()
                .find(|(p, _)| p == d)
                .map(|(_, f)| f.clone())
                .unwrap()
        })
        .collect();
    (a, by_dir)
}
