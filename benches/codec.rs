//! Frame codec micro-benchmarks: masking against the naive loop, UTF-8 against std, headers, and
//! the receive path (small whole messages) through a bare decoder and through a session.
#![allow(missing_docs)]

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use throng::proto::frame::{encode_frame, encode_header, MAX_HEADER_LEN};
use throng::proto::mask::{apply_mask, apply_mask_naive};
use throng::proto::utf8::Utf8Validator;
use throng::proto::{Decoder, FrameHeader, Item, Limits, OpCode, Role, Session, Transmit};

const KEY: [u8; 4] = [0x12, 0x34, 0x56, 0x78];

fn masking(c: &mut Criterion) {
    let mut group = c.benchmark_group("mask");
    for size in [16usize, 1024, 64 * 1024, 1024 * 1024] {
        let mut fast = vec![0xa5u8; size];
        let mut slow = fast.clone();
        apply_mask(&mut fast, KEY, 1);
        apply_mask_naive(&mut slow, KEY, 1);
        assert_eq!(fast, slow, "fast path disagrees with the oracle");
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("fast", size), &size, |b, _| {
            b.iter(|| apply_mask(black_box(&mut fast), KEY, 1))
        });
        group.bench_with_input(BenchmarkId::new("naive", size), &size, |b, _| {
            b.iter(|| apply_mask_naive(black_box(&mut slow), KEY, 1))
        });
    }
    group.finish();
}

fn utf8(c: &mut Criterion) {
    let ascii = "The quick brown fox jumps over the lazy dog. ".repeat(1500);
    let multilingual = "Grüße, 世界! Привет мир. こんにちは 🎉 ".repeat(1000);
    let mut group = c.benchmark_group("utf8");
    for (name, text) in [("ascii", ascii.as_bytes()), ("multilingual", multilingual.as_bytes())] {
        group.throughput(Throughput::Bytes(text.len() as u64));
        let mut validator = Utf8Validator::new();
        validator.feed(text).unwrap();
        validator.finish().unwrap();
        group.bench_function(BenchmarkId::new("incremental_4k_pieces", name), |b| {
            b.iter(|| {
                let mut v = Utf8Validator::new();
                for piece in black_box(text).chunks(4096) {
                    v.feed(piece).unwrap();
                }
                v.finish().unwrap();
            })
        });
        group.bench_function(BenchmarkId::new("std_from_utf8", name), |b| {
            b.iter(|| std::str::from_utf8(black_box(text)).unwrap().len())
        });
    }
    group.finish();
}

fn headers(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame_header");
    let mut wire = [0u8; MAX_HEADER_LEN];
    let len = encode_header(&mut wire, true, OpCode::Binary, Some(KEY), 512);
    let decoded = FrameHeader::decode(&wire[..len]).unwrap().unwrap();
    assert_eq!(decoded.0.payload_len, 512);
    group.bench_function("decode_masked_16bit", |b| b.iter(|| FrameHeader::decode(black_box(&wire[..len]))));
    let mut out = [0u8; MAX_HEADER_LEN];
    group.bench_function("encode_server_16bit", |b| {
        b.iter(|| encode_header(&mut out, true, OpCode::Binary, None, black_box(512)))
    });
    group.finish();
}

/// Sends nothing: the benchmark's frames are data only.
struct NoControl;

impl Transmit for NoControl {
    fn control(&mut self, _: OpCode, _: &[u8]) {}
}

/// 1000 masked 32-byte binary messages, as a server reads them. Binary, so that unmasking the
/// same buffer again on the next iteration (XOR back and forth) is still valid input.
fn receive(c: &mut Criterion) {
    const MESSAGES: usize = 1000;
    let mut group = c.benchmark_group("receive_small_messages");
    let mut wire = Vec::new();
    for i in 0..MESSAGES {
        encode_frame(&mut wire, true, OpCode::Binary, Some(KEY), &[i as u8; 32]);
    }
    group.throughput(Throughput::Elements(MESSAGES as u64));
    let limits = Limits::default();
    group.bench_function("decoder", |b| {
        let mut decoder = Decoder::new(Role::Server);
        b.iter(|| {
            let (mut at, mut sum) = (0, 0usize);
            while let Ok((n, Some(Item::Data { chunk, .. }))) = decoder.decode(&mut wire[at..], &limits) {
                sum += chunk.len();
                at += n;
            }
            black_box(sum)
        })
    });
    group.bench_function("session", |b| {
        let mut session = Session::new(Role::Server);
        b.iter(|| {
            let (mut at, mut sum) = (0, 0usize);
            while let Ok((n, Some(Item::Data { chunk, .. }))) =
                session.handle_read(&mut wire[at..], &limits, &mut NoControl)
            {
                sum += chunk.len();
                at += n;
            }
            black_box(sum)
        })
    });
    group.finish();
}

criterion_group!(benches, masking, utf8, headers, receive);
criterion_main!(benches);
