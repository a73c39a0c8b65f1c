//! Bit rot on a member: bytes of a shard changed behind the array's back
//! are detected by the per-chunk checksums, the right data is returned
//! (rebuilt from parity) and written back to the member.

use std::fs;
use std::os::unix::fs::FileExt;

use raidfs_tests::{TestArray, pattern};

const CHUNK: u64 = 64 << 10;

#[test]
fn corrupted_chunks_are_detected_rebuilt_and_written_back() {
    let mut a = TestArray::raid5();
    let data = pattern(77, 2 << 20);
    fs::write(a.path("f"), &data).unwrap();
    let ino = std::os::unix::fs::MetadataExt::ino(&fs::metadata(a.path("f")).unwrap());
    a.unmount();
    let members = a.members.clone();
    let shard_of =
        |m: usize| members[m].join(format!(".raidfs/data/{:02x}/{:016x}", ino & 0xff, ino));
    let shard = shard_of(0);
    let others: Vec<Vec<u8>> = (1..4).map(|m| fs::read(shard_of(m)).unwrap()).collect();
    let original =
        fs::read(&shard).unwrap_or_else(|e| panic!("shard {} of the file: {e}", shard.display()));
    // Stripe s of inode `ino` is placed by the layout's stripe s + ino (the
    // engine rotates per inode, docs/FORMAT.md). In left-symmetric RAID-5 on
    // four members, parity of layout stripe t is on member 3 - t mod 4, so
    // member 0 holds parity where t mod 4 == 3: corrupt four stripes where
    // it holds data (a normal read never reads parity; scrub checks that).
    let stripes: Vec<u64> = (0u64..).filter(|s| (s + ino) % 4 != 3).take(4).collect();
    let f = fs::OpenOptions::new().write(true).open(&shard).unwrap();
    for &s in &stripes {
        let off = s * CHUNK + 1000 + s * 7;
        f.write_all_at(&[0xde, 0xad, 0xbe, 0xef], off).unwrap();
    }
    drop(f);
    a.mount();
    let got = fs::read(a.path("f")).unwrap_or_else(|e| panic!("read with bit rot: {e}"));
    if let Some(bad) = got.iter().zip(&data).position(|(g, d)| g != d) {
        panic!("corrupted bytes returned at file offset {bad}");
    }
    assert_eq!(got.len(), data.len());
    a.unmount();
    for m in 1..4 {
        let now = fs::read(shard_of(m)).unwrap();
        if let Some(bad) = now.iter().zip(&others[m - 1]).position(|(x, y)| x != y) {
            panic!(
                "member {m}'s healthy shard changed at offset {bad} (stripe {})",
                bad as u64 / CHUNK
            );
        }
    }
    let after = fs::read(&shard).unwrap();
    assert_eq!(after.len(), original.len(), "member 0's shard changed size");
    let stray: Vec<u64> = (0..original.len() as u64 / CHUNK)
        .filter(|s| !stripes.contains(s))
        .filter(|&s| {
            let r = (s * CHUNK) as usize..((s + 1) * CHUNK) as usize;
            after[r.clone()] != original[r]
        })
        .collect();
    assert!(
        stray.is_empty(),
        "member 0's healthy chunks changed in stripes {stray:?}"
    );
    let not_repaired: Vec<u64> = stripes
        .iter()
        .copied()
        .filter(|&s| {
            let r = (s * CHUNK) as usize..((s + 1) * CHUNK) as usize;
            after[r.clone()] != original[r]
        })
        .collect();
    assert!(
        not_repaired.is_empty(),
        "rebuilt chunks not written back to member 0 in stripes {not_repaired:?} (of {stripes:?})"
    );
}
