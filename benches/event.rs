//! Event checking speed: parse + lenient validation of a typical ~750-byte event, as
//! forwarded unchanged and as completed (missing id, eventType …, time normalised), and
//! strict validation. Run: `cargo bench --bench event`.

use std::path::Path;

use at_forwarder::config::source::CadfValidation;
use at_forwarder::event::{Origin, Validator};
use at_forwarder::tail::identity::FileKey;
use criterion::{criterion_main, Criterion, Throughput};

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/events")
        .join(name)
        .join("input");
    std::fs::read(path).expect("fixture exists")
}

fn events(c: &mut Criterion) {
    let complete = fixture("strict--complete-legacy-event");
    let noisy = fixture("lenient--seed-at-noisy");
    let origin = Origin {
        key: FileKey { dev: 1, ino: 2 },
        offset: 0,
    };
    let mut group = c.benchmark_group("event");
    let mut out = Vec::with_capacity(4096);
    for (name, line, level) in [
        (
            "lenient, complete event forwarded as is",
            &complete,
            CadfValidation::Lenient,
        ),
        (
            "lenient, seed at-noisy event completed",
            &noisy,
            CadfValidation::Lenient,
        ),
        ("strict, complete event", &complete, CadfValidation::Strict),
    ] {
        group.throughput(Throughput::Elements(1));
        let validator = Validator::new(level, true);
        group.bench_function(format!("{name} ({} bytes)", line.len()), |b| {
            b.iter(|| {
                out.clear();
                validator.check(line, origin, &mut out).expect("valid")
            })
        });
    }
    group.finish();
}

// criterion_group! generates an undocumented pub fn.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::events);
}
criterion_main!(group::benches);
