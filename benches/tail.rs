//! Reading lines from files in the page cache: the splitter alone, and a full tailer pass
//! (discovery, identity checks, reading, batching) over 8 files of seed-style events.
//! Run: `cargo bench --bench tail`.

use std::io::Write;
use std::time::Instant;

use at_forwarder::tail::lines::{read_lines, ReadFrom};
use at_forwarder::tail::{PositionStore, TailOptions, Tailer};
use criterion::{criterion_main, Criterion, Throughput};

/// A seed-style event line of about 800 bytes (the at-noisy event with an id).
fn event(i: usize) -> String {
    format!(
        concat!(
            r#"{{"meta":{{"serviceProviderName":"svc-{}","serviceProviderRegion":"ng","serviceProviderProjectId":"8f2a4c1e-9b7d-4e3f-a1c2-5d6e7f8a9b0c","userAccountIds":["a3b4c5d6e7f8091a2b3c4d5e6f708192"]}},"#,
            r#""payload":{{"id":"evt-{:012}","initiator":{{"id":"user-{}@example.com","typeURI":"security/account/user","credential":{{"type":"user"}},"host":{{"address":"10.1.2.3"}}}},"#,
            r#""target":{{"id":"crn:v1:bluemix:public:containers-kubernetes:dal09:a/4324327284:6e4c93cdf28e47f6abecb7e97e65056d::","typeURI":"containers-kubernetes/worker","name":"worker-{}"}},"#,
            r#""observer":{{"name":"ActivityTracker"}},"action":"containers-kubernetes.worker.create","outcome":"success","reason":{{"reasonCode":200,"reasonType":"OK"}},"#,
            r#""severity":"normal","eventTime":"2026-11-22T05:07:50.32+0000","requestData":{{"workerCount":3,"machineType":"b3c.4x16","zone":"dal09"}},"message":"Containers: create worker worker-{}"}}}}"#,
            "\n"
        ),
        i % 3,
        i,
        i % 97,
        i % 1000,
        i % 1000
    )
}

fn splitter(c: &mut Criterion) {
    let mut f = tempfile::tempfile().unwrap();
    let mut size = 0;
    for i in 0..80_000 {
        let line = event(i);
        size += line.len();
        f.write_all(line.as_bytes()).unwrap();
    }
    let mut group = c.benchmark_group("tail");
    group.throughput(Throughput::Bytes(size as u64));
    let mut buf = Vec::new();
    group.bench_function("read_lines, 64 MB from page cache", |b| {
        b.iter(|| {
            let mut n = 0usize;
            let out = read_lines(
                &mut f,
                ReadFrom::default(),
                usize::MAX,
                1 << 20,
                &mut buf,
                |line, _| n += line.len(),
            )
            .unwrap();
            assert_eq!(out.lines, 80_000);
            n
        })
    });
    group.finish();
}

fn tailer_pass(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let mut size = 0;
    for file in 0..8 {
        let mut f = std::fs::File::create(logs.join(format!("svc{file}.log"))).unwrap();
        for i in 0..10_000 {
            let line = event(file * 10_000 + i);
            size += line.len();
            f.write_all(line.as_bytes()).unwrap();
        }
    }
    let opts = TailOptions {
        read_from_head: true,
        ..TailOptions::new(vec![format!("{}/*.log", logs.display())])
    };
    let mut group = c.benchmark_group("tail");
    group.throughput(Throughput::Bytes(size as u64));
    group.sample_size(20);
    let mut n = 0;
    group.bench_function("tailer, 8 files × 10,000 events, all passes", |b| {
        b.iter(|| {
            n += 1;
            // A fresh store each time, so every iteration reads everything.
            let store = PositionStore::open(&dir.path().join(format!("pos{n}"))).unwrap();
            let mut tailer = Tailer::open(opts.clone(), store).unwrap();
            let mut lines = 0;
            loop {
                let read = tailer.poll(Instant::now()).len();
                if read == 0 {
                    break;
                }
                lines += read;
            }
            assert_eq!(lines, 80_000);
        })
    });
    group.finish();
}

// criterion_group! generates an undocumented pub fn.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::splitter, super::tailer_pass);
}
criterion_main!(group::benches);
