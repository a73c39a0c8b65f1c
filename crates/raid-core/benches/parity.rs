//! Criterion benchmarks of the codec on every kernel this CPU can run:
//! generating 1..6 parities and rebuilding 1 or 2 lost data chunks, on
//! eight data chunks of 256 KiB (the `snapraid -T` shape). Throughput is in
//! data bytes. `examples/speedtest.rs` prints the same figures as one table
//! beside SnapRAID's; this is the statistically careful version.
//!
//! `cargo bench -p raid-core --bench parity [-- FILTER]`, e.g. `-- gfni/`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use raid_core::Codec;
use raid_core::kernels;

const DATA: usize = 8;
const SIZE: usize = 256 * 1024;
/// Gap between buffers so that they do not all start on the same cache sets.
const DISPLACEMENT: usize = 1792;

fn buffers(n: usize) -> Vec<Vec<u8>> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    (0..n)
        .map(|_| {
            let mut v = vec![0u8; SIZE + DISPLACEMENT];
            for b in &mut v {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = (x >> 24) as u8;
            }
            v
        })
        .collect()
}

fn parity(c: &mut Criterion) {
    let mut bufs = buffers(DATA + 6);
    let mut group = c.benchmark_group("parity");
    group.throughput(Throughput::Bytes((DATA * SIZE) as u64));
    group.warm_up_time(Duration::from_millis(300));
    group.measurement_time(Duration::from_secs(1));
    group.sample_size(20);
    for k in kernels::available() {
        for m in 1..=6 {
            let codec = Codec::with_kernel(DATA, m, k).expect("valid shape");
            let (data, par) = bufs.split_at_mut(DATA);
            let data: Vec<&[u8]> = data
                .iter()
                .enumerate()
                .map(|(i, d)| &d[i * 64..i * 64 + SIZE])
                .collect();
            let mut par: Vec<&mut [u8]> = par[..m].iter_mut().map(|p| &mut p[..SIZE]).collect();
            let name = match m {
                1 => "gen_p".to_string(),
                2 => "gen_pq".to_string(),
                _ => format!("gen_{m}p"),
            };
            group.bench_function(format!("{}/{name}", k.name), |b| {
                b.iter(|| codec.encode(black_box(&data), &mut par).expect("encode"))
            });
        }
        let codec = Codec::with_kernel(DATA, 2, k).expect("valid shape");
        for missing in [&[3usize][..], &[2, 5]] {
            let mut stripe: Vec<&mut [u8]> = bufs[..DATA + 2]
                .iter_mut()
                .map(|b| &mut b[..SIZE])
                .collect();
            {
                let (data, par) = stripe.split_at_mut(DATA);
                let data: Vec<&[u8]> = data.iter().map(|d| &**d).collect();
                codec.encode(&data, par).expect("encode");
            }
            group.bench_function(format!("{}/rebuild_{}", k.name, missing.len()), |b| {
                b.iter(|| {
                    codec
                        .reconstruct(black_box(&mut stripe), missing)
                        .expect("reconstruct")
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, parity);
criterion_main!(benches);
