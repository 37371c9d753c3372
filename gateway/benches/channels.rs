//! The `?channels=` list of an upgrade: an 8 KiB query of thousands of names, distinct and
//! repeated, parsed with the gateway's cap. Each bench checks its result once before timing.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use throng_gateway::channels::query_channels;

/// `channels=` followed by names from `names` until the query is about 8 KiB.
fn query(names: impl Iterator<Item = String>) -> String {
    let mut q = String::from("channels=");
    for name in names {
        if q.len() + name.len() >= 8000 {
            break;
        }
        q.push_str(&name);
        q.push(',');
    }
    q
}

fn channels(c: &mut Criterion) {
    let distinct = query((0..).map(|i| format!("c{i}")));
    let repeated = query(std::iter::repeat("news".to_owned()));
    let n = distinct.matches(',').count();
    assert!(n > 1000);
    assert_eq!(query_channels(&distinct, n).map(|l| l.len()), Ok(n));
    assert!(query_channels(&distinct, 100).is_err());
    assert_eq!(query_channels(&repeated, 100).map(|l| l.len()), Ok(1));
    let mut group = c.benchmark_group("channels");
    group.throughput(Throughput::Bytes(distinct.len() as u64));
    group.bench_function("query/8KiB_distinct_all_allowed", |b| {
        b.iter(|| query_channels(black_box(&distinct), n).map(|l| l.len()))
    });
    group.bench_function("query/8KiB_distinct_over_cap_100", |b| {
        b.iter(|| query_channels(black_box(&distinct), 100).is_err())
    });
    group.bench_function("query/8KiB_one_name_repeated", |b| {
        b.iter(|| query_channels(black_box(&repeated), 100).map(|l| l.len()))
    });
    group.finish();
}

criterion_group!(benches, channels);
criterion_main!(benches);
