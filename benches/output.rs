//! Building Activity Tracker request bodies from a chunk read back (1,200 W1 events, about
//! 1 MiB, bodies of 1,000 events): the laid-out body (a slice of the chunk), a body
//! assembled by copying (a split's or a damaged chunk's), and gzip. Throughput is the
//! events' bytes in the body. Run: `cargo bench --bench output`.

use at_forwarder::buffer::chunk;
use at_forwarder::output::at::request_body;
use criterion::{criterion_main, Criterion, Throughput};

mod common;

const EVENTS: usize = 1_200;
const PER_BODY: usize = 1_000;

fn bodies(c: &mut Criterion) {
    let events = common::w1_events(EVENTS);
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("w1.chunk");
    chunk::write_whole(&file, "svc-0", 0, events.iter().map(Vec::as_slice)).expect("written");
    let records = chunk::scan_for_bodies(&file, PER_BODY)
        .expect("readable")
        .records;
    let bytes = records.payload_bytes(0..PER_BODY) as u64;

    let mut group = c.benchmark_group("output");
    group.throughput(Throughput::Bytes(bytes));
    group.bench_function("request body of 1,000 events, laid out in the chunk", |b| {
        b.iter(|| request_body(&records, 0..PER_BODY, false).expect("built"))
    });
    group.bench_function("request body of 1,000 events, assembled", |b| {
        b.iter(|| request_body(&records, 1..PER_BODY + 1, false).expect("built"))
    });
    group.bench_function("request body of 1,000 events, gzip", |b| {
        b.iter(|| request_body(&records, 0..PER_BODY, true).expect("built"))
    });
    group.finish();
    let gz = request_body(&records, 0..PER_BODY, true).expect("built");
    println!(
        "gzip: {bytes} bytes of events -> {} bytes ({:.1} %)",
        gz.len(),
        100.0 * gz.len() as f64 / bytes as f64
    );
}

// criterion_group! generates an undocumented pub fn.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::bodies);
}
criterion_main!(group::benches);
