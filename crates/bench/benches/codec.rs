//! Envelope encode/decode: Tributary (envelope + MessagePack + wire format) vs serde_json.
//!
//! `cargo bench -p tributary-bench --bench codec`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use tributary::TraceParent;
use tributary_bench::codec::{json_decode, json_encode, sample, tributary_decode, tributary_encode};

fn encode(c: &mut Criterion) {
    let msg = sample();
    let tp = TraceParent::new_root();
    let mut group = c.benchmark_group("encode");
    group.bench_function("tributary", |b| b.iter(|| tributary_encode(black_box(&msg), tp)));
    group.bench_function("serde_json", |b| b.iter(|| json_encode(black_box(&msg), tp)));
    group.finish();
}

fn decode(c: &mut Criterion) {
    let msg = sample();
    let tp = TraceParent::new_root();
    let fields = tributary_encode(&msg, tp);
    let doc = json_encode(&msg, tp);
    let mut group = c.benchmark_group("decode");
    group.bench_function("tributary", |b| b.iter(|| tributary_decode(black_box(&fields))));
    group.bench_function("serde_json", |b| b.iter(|| json_decode(black_box(&doc))));
    group.finish();
}

criterion_group!(benches, encode, decode);
criterion_main!(benches);
