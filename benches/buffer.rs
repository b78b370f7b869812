//! The buffer's chunks, each at one chunk of W1 (1,200 events, about 1 MiB): framing
//! records as the check writes them, adding the CRCs a chunk file holds, reading a chunk
//! file back (page cache, every CRC checked, laid out as request bodies), and one chunk's
//! round trip through a buffer held in memory (append, seal, take, delivered). Run:
//! `cargo bench --bench buffer`.

use std::time::{Duration, Instant};

use at_forwarder::buffer::chunk;
use at_forwarder::buffer::{Buffer, BufferOptions, Framed, Outcome};
use at_forwarder::config::buffer::{OverflowAction, RetryConfig, RetryType};
use criterion::{criterion_main, Criterion, Throughput};

mod common;

const EVENTS: usize = 1_200;
/// Events per request body, as the Activity Tracker output asks by default.
const PER_BODY: usize = 1_000;

fn in_memory(path: &std::path::Path) -> BufferOptions {
    BufferOptions {
        path: path.to_path_buf(),
        chunk_limit_size: 4 << 20,
        chunk_limit_records: None,
        memory_limit: 64 << 20,
        total_limit_size: 1 << 30,
        flush_interval: Duration::from_secs(3600),
        overflow_action: OverflowAction::Block,
        sync_bytes: 1 << 20,
        chunk_full_threshold: 1.0,
        retry: RetryConfig {
            retry_type: RetryType::ExponentialBackoff,
            wait: Duration::from_secs(1),
            exponential_backoff_base: 2.0,
            max_interval: None,
            max_times: None,
            timeout: Duration::from_secs(3600),
            forever: true,
            randomize: false,
        },
    }
}

fn chunks(c: &mut Criterion) {
    let events = common::w1_events(EVENTS);
    let bytes: usize = events.iter().map(Vec::len).sum();
    let mut framed = Framed::with_capacity(bytes + 8 * EVENTS);
    for e in &events {
        framed.push(e);
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("w1.chunk");
    chunk::write_whole(&file, "svc-0", 0, events.iter().map(Vec::as_slice)).expect("written");

    let mut group = c.benchmark_group("buffer");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function(
        "frame 1,200 events (Framed::push, as the check writes them)",
        |b| {
            b.iter(|| {
                let mut f = Framed::with_capacity(bytes + 8 * EVENTS);
                for e in &events {
                    f.push(e);
                }
                f
            })
        },
    );
    group.bench_function("add a chunk file's CRCs (chunk::with_crcs)", |b| {
        b.iter(|| chunk::with_crcs(framed.as_bytes()))
    });
    group.bench_function("read a chunk file back (chunk::scan_for_bodies)", |b| {
        b.iter(|| {
            let scan = chunk::scan_for_bodies(&file, PER_BODY).expect("readable");
            assert_eq!(scan.records.len(), EVENTS);
            scan
        })
    });
    let buffer = Buffer::open(in_memory(&dir.path().join("buffer"))).expect("buffer");
    buffer.lay_out_bodies(PER_BODY);
    group.bench_function(
        "a chunk through a buffer in memory (append, seal, take, deliver)",
        |b| {
            b.iter_batched(
                || framed.clone(),
                |framed| {
                    buffer
                        .try_append_all("svc-0", framed)
                        .ok()
                        .expect("appended");
                    buffer.seal_due(Instant::now(), true).expect("sealed");
                    let taken = buffer.take(Instant::now()).expect("a chunk is due");
                    buffer
                        .finish(&taken, &Outcome::Delivered, |_| {})
                        .expect("finished");
                },
                criterion::BatchSize::LargeInput,
            )
        },
    );
    group.finish();
}

// criterion_group! generates an undocumented pub fn.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::chunks);
}
criterion_main!(group::benches);
