//! Golden tests of event checking: `tests/fixtures/events/<level>--<case>/input` holds one
//! line (raw bytes), `expected` the verdict: `accepted` and the bytes forwarded, or
//! `rejected <reason>` and one problem per line. `UPDATE_GOLDEN=1` rewrites `expected`
//! (review the diff before committing it).

use std::path::Path;

use at_forwarder::config::source::CadfValidation;
use at_forwarder::config::value::ConfigEnum;
use at_forwarder::event::{Origin, Validator};
use at_forwarder::tail::identity::FileKey;

fn verdict(level: CadfValidation, input: &[u8]) -> String {
    let mut out = Vec::new();
    let origin = Origin {
        key: FileKey { dev: 0, ino: 0 },
        offset: 0,
    };
    // As `lint` reads them: at the cadf level, bare CADF events (no meta) too.
    let mut validator = Validator::new(level, true);
    if level == CadfValidation::Cadf {
        validator = validator.reading_bare_cadf();
    }
    match validator.check(input, origin, &mut out) {
        Ok(accepted) => format!(
            "accepted {}\n{}\n",
            accepted.service,
            String::from_utf8(out).expect("forwarded bytes are UTF-8")
        ),
        Err(r) => format!("rejected {}\n{}\n", r.reason.name(), r.problems.join("\n")),
    }
}

#[test]
fn event_fixtures_match_their_expected_verdicts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/events");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    cases.sort();
    let (mut accepted, mut rejected) = (0, 0);
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let level = CadfValidation::from_name(name.split("--").next().unwrap())
            .unwrap_or_else(|| panic!("{name}: level prefix"));
        let got = verdict(level, &std::fs::read(case.join("input")).unwrap());
        if got.starts_with("accepted") {
            accepted += 1
        } else {
            rejected += 1
        }
        if update {
            std::fs::write(case.join("expected"), &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(case.join("expected")).unwrap_or_default();
        if got != want {
            failures.push(format!("{name}:\n--- expected\n{want}--- got\n{got}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        accepted >= 10 && rejected >= 12,
        "{accepted} accepted, {rejected} rejected fixtures"
    );
}
