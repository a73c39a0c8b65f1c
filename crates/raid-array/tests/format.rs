//! On-disk records: superblock round-trip, CRC corruption detection, the
//! version compatibility rule, a golden superblock image, journal record
//! framing and checkpoint payloads.

use raid_array::format::bytes::Writer;
use raid_array::format::superblock::{MemberSlot, SlotState, Superblock};
use raid_array::format::{checkpoint as cfmt, journal as jfmt};
use raid_array::meta::ops::Op;
use raid_array::meta::{Namespace, checkpoint};
use raid_array::{ArrayError, ROOT_INO};

fn sample() -> Superblock {
    Superblock {
        minor: 0,
        array_uuid: [0x11; 16],
        member_uuid: [0x22; 16],
        member_index: 1,
        level_code: 6,
        level_params: [0, 0],
        chunk_size: 65536,
        clean: true,
        events: 42,
        journal_seq: 1234,
        created: 1_700_000_000,
        name: "media".into(),
        members: vec![
            MemberSlot {
                uuid: [0x21; 16],
                state: SlotState::Active,
            },
            MemberSlot {
                uuid: [0x22; 16],
                state: SlotState::Active,
            },
            MemberSlot {
                uuid: [0x23; 16],
                state: SlotState::Failed,
            },
            MemberSlot {
                uuid: [0x24; 16],
                state: SlotState::Rebuilding {
                    done_bytes: 1 << 40,
                },
            },
        ],
        spares: Vec::new(),
    }
}

/// Re-seal a record after editing it: recompute the trailing CRC.
fn reseal(buf: &mut [u8]) {
    let n = buf.len() - 4;
    let crc = crc32fast::hash(&buf[..n]);
    buf[n..].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn superblock_round_trips() {
    let sb = sample();
    let bytes = sb.encode().unwrap();
    assert_eq!(bytes.len(), 192 + 32 * 4 + 4);
    assert_eq!(&bytes[..8], b"RAIDFSSB");
    assert_eq!(Superblock::decode(&bytes).unwrap(), sb);
    assert_eq!(sb.geometry().unwrap().members(), 4);
}

#[test]
fn every_flipped_bit_of_a_superblock_is_detected() {
    let bytes = sample().encode().unwrap();
    for i in 0..bytes.len() {
        for bit in [0x01u8, 0x80] {
            let mut b = bytes.clone();
            b[i] ^= bit;
            assert!(
                Superblock::decode(&b).is_err(),
                "flip at byte {i} not detected"
            );
        }
    }
    // Truncated and extended records too.
    assert!(Superblock::decode(&bytes[..bytes.len() - 1]).is_err());
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(Superblock::decode(&longer).is_err());
}

#[test]
fn version_rule_newer_minor_accepted_other_major_refused() {
    let mut b = sample().encode().unwrap();
    b[10] = 7; // minor 7: same major, readable
    reseal(&mut b);
    let sb = Superblock::decode(&b).unwrap();
    assert_eq!(sb.minor, 7);
    let mut b = sample().encode().unwrap();
    b[8] = 2; // major 2: refused even with a valid CRC
    reseal(&mut b);
    match Superblock::decode(&b) {
        Err(ArrayError::Corrupt { detail, .. }) => {
            assert!(detail.contains("unsupported version 2.0"), "{detail}")
        }
        other => panic!("major 2 accepted: {other:?}"),
    }
    // The same rule for journal segments and checkpoints.
    let mut h = jfmt::encode_header(&[1; 16], 5);
    h[8] = 9;
    reseal(&mut h);
    assert!(jfmt::decode_header(&h).is_err());
    let mut h = jfmt::encode_header(&[1; 16], 5);
    h[10] = 3;
    reseal(&mut h);
    assert_eq!(jfmt::decode_header(&h).unwrap(), ([1; 16], 5));
}

#[test]
fn golden_superblock_v1_0_still_decodes() {
    // Written by format version 1.0; must stay readable by every 1.x build.
    let golden = include_bytes!("golden/superblock-v1.0.bin");
    let sb = Superblock::decode(golden).unwrap();
    assert_eq!(sb, sample());
    assert_eq!(
        sample().encode().unwrap(),
        golden.to_vec(),
        "the 1.0 encoding changed"
    );
}

#[test]
fn journal_records_round_trip_and_torn_tails_stop_the_reader() {
    let mut seg = jfmt::encode_header(&[9; 16], 100);
    let ops = [
        Op::Create {
            parent: 1,
            name: b"a".to_vec(),
            ino: 2,
            mode: 0o100644,
            uid: 0,
            gid: 0,
            rdev: 0,
            time: 5,
        },
        Op::Unlink {
            parent: 1,
            name: b"a".to_vec(),
            time: 6,
        },
    ];
    for (k, op) in ops.iter().enumerate() {
        jfmt::encode_record(
            &mut seg,
            100 + k as u64,
            &postcard::to_allocvec(op).unwrap(),
        );
    }
    let full = seg.len();
    let mut pos = jfmt::HEADER_LEN;
    let mut got = Vec::new();
    while let Some(r) = jfmt::decode_record(&seg, pos) {
        got.push((r.seq, postcard::from_bytes::<Op>(r.payload).unwrap()));
        pos = r.end;
    }
    assert_eq!(got, vec![(100, ops[0].clone()), (101, ops[1].clone())]);
    assert_eq!(pos, full);
    // A torn last record: every strict prefix of it is rejected.
    let first_end = jfmt::decode_record(&seg, jfmt::HEADER_LEN).unwrap().end;
    for cut in first_end..full {
        assert!(
            jfmt::decode_record(&seg[..cut], first_end).is_none(),
            "prefix {cut} accepted"
        );
    }
    // A flipped payload byte is rejected.
    seg[full - 1] ^= 1;
    assert!(jfmt::decode_record(&seg, first_end).is_none());
}

#[test]
fn checkpoint_frame_detects_corruption_and_payload_round_trips() {
    let mut ns = Namespace::new(0, 0, 1);
    let ops = [
        Op::Create {
            parent: ROOT_INO,
            name: b"d".to_vec(),
            ino: 2,
            mode: 0o040755,
            uid: 1,
            gid: 2,
            rdev: 0,
            time: 3,
        },
        Op::Create {
            parent: 2,
            name: b"f".to_vec(),
            ino: 3,
            mode: 0o100644,
            uid: 1,
            gid: 2,
            rdev: 0,
            time: 4,
        },
        Op::WriteInline {
            ino: 3,
            offset: 0,
            data: b"abc".to_vec(),
            time: 5,
        },
        Op::Symlink {
            parent: ROOT_INO,
            name: b"s".to_vec(),
            ino: 4,
            target: b"d/f".to_vec(),
            uid: 0,
            gid: 0,
            time: 6,
        },
        Op::SetXattr {
            ino: 3,
            name: b"user.x".to_vec(),
            value: vec![0, 1, 2],
            flags: 0,
            time: 7,
        },
        Op::Create {
            parent: ROOT_INO,
            name: b"big".to_vec(),
            ino: 5,
            mode: 0o100600,
            uid: 0,
            gid: 0,
            rdev: 0,
            time: 8,
        },
        Op::Uninline { ino: 5 },
        Op::Extend {
            ino: 5,
            end: 1 << 33,
            time: 9,
        },
        Op::Create {
            parent: ROOT_INO,
            name: b"tty".to_vec(),
            ino: 6,
            mode: 0o020600,
            uid: 0,
            gid: 0,
            rdev: 0x501,
            time: 9,
        },
    ];
    for op in &ops {
        ns.apply(op).unwrap();
    }
    let (payload, count) = checkpoint::encode(&ns);
    assert_eq!(count, 6);
    let file = cfmt::encode(
        &cfmt::CheckpointHeader {
            array_uuid: [3; 16],
            seq: 77,
            inodes: count,
        },
        &payload,
    );
    let (h, p) = cfmt::decode(&file).unwrap();
    assert_eq!((h.seq, h.inodes, h.array_uuid), (77, 6, [3; 16]));
    let back = checkpoint::decode(p, h.inodes).unwrap();
    assert_eq!(back, ns);
    for i in [0, 20, 40, 63, 64, file.len() / 2, file.len() - 1] {
        let mut b = file.clone();
        b[i] ^= 0x10;
        assert!(cfmt::decode(&b).is_err(), "flip at {i} not detected");
    }
}

#[test]
fn little_endian_writer() {
    let mut w = Writer::default();
    w.u32(0x0102_0304);
    w.u16(0x0506);
    assert_eq!(w.buf, [4, 3, 2, 1, 6, 5]);
}
