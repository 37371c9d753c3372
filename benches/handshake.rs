//! Handshake benchmarks: parsing a real Chrome upgrade request, computing the accept key, and
//! writing the 101 response. Each bench checks its result once before timing.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use throng::proto::handshake::{accept_key, parse_request, write_accept, Parsed, RequestLimits};

const CHROME: &[u8] = include_bytes!("../fuzz/corpus/upgrade_request/chrome.txt");
const KEY: &[u8] = b"dGhlIHNhbXBsZSBub25jZQ==";

fn parse(c: &mut Criterion) {
    let limits = RequestLimits::default();
    match parse_request(CHROME, &limits) {
        Ok(Parsed::Complete(req)) => {
            assert_eq!(req.len(), CHROME.len());
            assert_eq!(req.key(), "dGhlIHNhbXBsZSBub25jZQ==");
        }
        other => panic!("chrome request did not parse: {other:?}"),
    }
    let mut group = c.benchmark_group("handshake");
    group.throughput(Throughput::Bytes(CHROME.len() as u64));
    group.bench_function("parse_request/chrome", |b| {
        b.iter(|| match parse_request(black_box(CHROME), &limits) {
            Ok(Parsed::Complete(req)) => req.len(),
            _ => 0,
        })
    });
    group.finish();
}

fn accept(c: &mut Criterion) {
    assert_eq!(&accept_key(KEY), b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    c.bench_function("handshake/accept_key", |b| b.iter(|| accept_key(black_box(KEY))));
}

fn write(c: &mut Criterion) {
    let mut out = Vec::with_capacity(256);
    write_accept(&mut out, KEY, Some("v2.json"), &[]).expect("valid response");
    assert!(out.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
    assert!(out.ends_with(b"Sec-WebSocket-Protocol: v2.json\r\n\r\n"));
    c.bench_function("handshake/write_accept", |b| {
        b.iter(|| {
            out.clear();
            write_accept(&mut out, black_box(KEY), Some("v2.json"), &[]).is_ok()
        })
    });
}

criterion_group!(benches, parse, accept, write);
criterion_main!(benches);
