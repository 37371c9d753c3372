//! permessage-deflate per message: compressing and inflating compressible JSON of 200 B and 2 KiB
//! without context (shared mode: the loop's codec, reset after every message) and with context
//! (dedicated mode), at the per-connection level (`DeflateConfig::level`) and the broadcast
//! level (`broadcast_level`), each result checked by a round trip before it is timed.
#![allow(missing_docs)]

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use throng::proto::deflate::{DeflateConfig, Deflater, Inflater};
use throng::proto::DataKind;

/// A push notification as JSON, `len` bytes: the shape the gateway sends.
fn json(len: usize, seq: usize) -> Vec<u8> {
    let mut out = format!("{{\"channel\":\"news\",\"seq\":{seq},\"items\":[");
    let mut i = 0;
    while out.len() < len {
        out.push_str(&format!(
            "{{\"id\":{},\"title\":\"item {i} updated\",\"score\":{}}},",
            seq * 31 + i,
            i * 7
        ));
        i += 1;
    }
    out.truncate(len - 2);
    out.push_str("]}");
    out.into_bytes()
}

fn deflate(c: &mut Criterion) {
    let mut group = c.benchmark_group("deflate");
    for size in [200usize, 2048] {
        let messages: Vec<Vec<u8>> = (0..64).map(|seq| json(size, seq)).collect();
        group.throughput(Throughput::Bytes(size as u64));
        let defaults = DeflateConfig::default();
        for (mode, reset, level) in [
            ("shared", true, defaults.level),
            ("dedicated", false, defaults.level),
            ("broadcast", true, defaults.broadcast_level),
        ] {
            let mut deflater = Deflater::new(level, 15);
            let mut inflater = Inflater::new(15);
            let mut wire = Vec::new();
            let mut out = Vec::new();
            let mut compressed_total = 0;
            for message in &messages {
                wire.clear();
                deflater.compress(message, &mut wire, reset);
                compressed_total += wire.len();
                out.clear();
                inflater.inflate(&wire, DataKind::Text, 1 << 20, &mut out, reset).unwrap();
                assert_eq!(&out, message, "round trip");
            }
            println!(
                "deflate/{mode}/{size}: {} B on the wire per message",
                compressed_total / messages.len()
            );
            let mut next = messages.iter().cycle();
            group.bench_with_input(BenchmarkId::new(format!("compress-{mode}"), size), &size, |b, _| {
                b.iter(|| {
                    wire.clear();
                    deflater.compress(black_box(next.next().unwrap()), &mut wire, reset);
                })
            });
            // Inflating the same compressed message again needs a fresh context each time,
            // so the inflate side is timed without context only.
            if mode == "shared" {
                let mut one = Vec::new();
                deflater.compress(&messages[0], &mut one, true);
                group.bench_with_input(BenchmarkId::new("inflate-shared", size), &size, |b, _| {
                    b.iter(|| {
                        out.clear();
                        inflater.inflate(black_box(&one), DataKind::Text, 1 << 20, &mut out, true).unwrap();
                    })
                });
            }
        }
    }
    group.finish();
}

criterion_group!(benches, deflate);
criterion_main!(benches);
