//! Configuration loading speed: the seed's ConfigMap, and a large generated file, through
//! the whole loader (syntax, includes, validation). Loading happens at start-up and on
//! reload, so this guards against accidental quadratic behaviour rather than chasing
//! nanoseconds. Run: `cargo bench --bench config`.

use std::path::Path;

use at_forwarder::config::{load_str, EvalEnv, LoadOptions};
use criterion::{criterion_main, Criterion, Throughput};

fn options() -> LoadOptions {
    LoadOptions {
        strict: false,
        env: EvalEnv::fixed("bench-host", &[]),
    }
}

fn seed(c: &mut Criterion) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/logging-activity-tracker.conf");
    let text = std::fs::read_to_string(&path).expect("the seed example exists");
    let mut group = c.benchmark_group("config");
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.bench_function("load seed ConfigMap", |b| {
        b.iter(|| load_str(&text, &path, &options()).expect("valid"))
    });
    group.finish();
}

fn large(c: &mut Criterion) {
    let one = "<source>\n  @type tail\n  @id src_N\n  path [\"/var/log/at/N/**/*.log\", \"/var/log/at-no-rotate/N/*\"]\n  tag kubernetes.at.*\n  format json\n  pos_file /p/N.pos\n  rotate_wait 43200 # twelve hours\n</source>\n<match kubernetes.at.N.**>\n  @id out_N\n  @type ibmactivitytracker\n  targetHost \"activity-tracker.ng.bluemix.net\"\n  service_region ng\n  <buffer>\n    path /b/N\n    chunk_limit_size 500k\n  </buffer>\n</match>\n";
    let text: String = (0..500).map(|i| one.replace('N', &i.to_string())).collect();
    let mut group = c.benchmark_group("config");
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.bench_function("load 500 sources and matches", |b| {
        b.iter(|| load_str(&text, Path::new("large.conf"), &options()).expect("valid"))
    });
    group.finish();
}

// criterion_group! generates an undocumented pub fn.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::seed, super::large);
}
criterion_main!(group::benches);
