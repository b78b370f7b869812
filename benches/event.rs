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

const WIDE: &str = r#"{"meta":{"serviceProviderName":"svc-0","serviceProviderRegion":"ng","serviceProviderProjectId":"project-0","userAccountIds":["account-1"]},"payload":{"id":"svc-0-0000000001","initiator":{"id":"user1@example.com","typeURI":"service/security/account/user","credential":{"type":"user"}},"target":{"id":"crn:v1:bluemix:public:svc-0:dal09:a/account-1:instance-0::","typeURI":"svc-0/worker"},"action":"svc-0.worker.update","outcome":"success","reason":{"reasonCode":200},"severity":"warning","eventTime":"2026-11-22 20:48:34.94 +0000 UTC","requestData":{"method":"POST","path":"/v2/svc-0/workers/0000000001","requestId":"req-0000000000000001","userAgent":"svc-0-client/1.4.2 (linux; amd64)"},"responseData":{"status":"accepted","workerId":"worker-0000000001","note":"x"},"correlationId":"corr-9e3779b97f4a7c15-0000000001"}}"#;

fn events(c: &mut Criterion) {
    let complete = fixture("strict--complete-legacy-event");
    let noisy = fixture("lenient--seed-at-noisy");
    // One of W1's events (`at-forwarder generate --wide`, scripts/bench-e2e.sh).
    let wide = WIDE.as_bytes().to_vec();
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
        (
            "lenient, W1 event completed",
            &wide,
            CadfValidation::Lenient,
        ),
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
