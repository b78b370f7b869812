//! `lint` and `dead-letters`, through the real binary.

use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use at_forwarder::event::dead_letter::{DeadLetter, DeadLetterStore};
use at_forwarder::event::Reason;

use crate::support::{binary, run};

const GOOD: &str = r#"{"meta":{"serviceProviderName":"s","userAccountIds":["a"]},"payload":{"id":"1","eventType":"activity","typeURI":"http://schemas.dmtf.org/cloud/audit/1.0/event","observer":{"name":"ActivityTracker"},"action":"s.thing.create","outcome":"success","severity":"normal","initiator":{"id":"u","typeURI":"t"},"target":{"id":"t","typeURI":"s/thing"},"eventTime":"2020-01-01T00:00:00Z"}}"#;

fn noisy() -> String {
    let seed = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/events/lenient--seed-at-noisy/input"),
    )
    .unwrap();
    seed.trim_end().to_string()
}

#[test]
fn lint_reports_file_line_and_problem_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.log");
    std::fs::write(&file, format!("{GOOD}\n\n{}\nnot json\n", noisy())).unwrap();
    let (code, stdout, _) = run(binary().arg("lint").arg(&file));
    assert_eq!(code, 1);
    let name = file.display();
    assert_eq!(stdout, format!("{name}:4: invalid JSON: expected ident at line 1 column 2\n3 event(s), 1 failed (lenient check)\n"));
    // The seed's at-noisy line passes activity_tracker with what lenient fills in; its
    // type URIs are not CADF taxonomy paths.
    let (code, stdout, _) = run(binary().args(["lint", "--strict"]).arg(&file));
    assert_eq!(code, 1);
    assert!(
        stdout.ends_with("3 event(s), 1 failed (activity_tracker check)\n"),
        "{stdout}"
    );
    let (code, stdout, _) = run(binary().args(["lint", "--level", "cadf"]).arg(&file));
    assert_eq!(code, 1);
    assert!(stdout.contains(":3: payload.target.typeURI 'containers-kubernetes/worker' is not a CADF resource taxonomy path"), "{stdout}");
}

#[test]
fn lint_level_cadf_reads_seed_004_s_bare_events_and_activity_tracker_says_why_not() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/events");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cadf.log");
    let text: String = ["cadf--seed-004-logon", "cadf--seed-004-monitor"]
        .iter()
        .map(|c| std::fs::read_to_string(fixtures.join(c).join("input")).unwrap())
        .collect();
    std::fs::write(&file, text).unwrap();
    let (code, stdout, _) = run(binary().args(["lint", "--level", "cadf"]).arg(&file));
    assert_eq!(
        (code, stdout.as_str()),
        (0, "2 event(s), 0 failed (cadf check)\n")
    );
    let (code, stdout, _) = run(binary()
        .args(["lint", "--level", "activity_tracker"])
        .arg(&file));
    assert_eq!(code, 1);
    assert!(stdout.contains("missing meta"), "{stdout}");
    let (code, _, err) = run(binary().args(["lint", "--level", "pedantic"]).arg(&file));
    assert_eq!(code, 2, "{err}");
}

#[test]
fn lint_reads_standard_input_and_passes_good_events() {
    let mut child = binary()
        .arg("lint")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{GOOD}\n{GOOD}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "2 event(s), 0 failed (lenient check)\n"
    );
}

#[test]
fn dead_letters_list_show_and_requeue() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("at.conf");
    std::fs::write(&conf, format!("<system>\n  root_dir {}\n</system>\n<source>\n  @type tail\n  path /nonexistent/*.log\n  tag t\n  format json\n  pos_file /nonexistent/p\n</source>\n<match t>\n  @type stdout\n</match>\n", dir.path().display())).unwrap();
    let store = DeadLetterStore::open(dir.path()).unwrap();
    let broken = GOOD.replace(
        r#""meta":{"serviceProviderName":"s","userAccountIds":["a"]}"#,
        r#""meta":{"serviceProviderName":"s","userSpaceId":"sp"}"#,
    );
    store
        .append(&[
            DeadLetter::new(
                Reason::InvalidJson,
                "invalid JSON: expected value",
                Path::new("/var/log/at/a.log"),
                0,
                b"not json",
            ),
            DeadLetter::new(
                Reason::NoUserCopy,
                "no user copy target",
                Path::new("/var/log/at/a.log"),
                9,
                broken.as_bytes(),
            ),
            DeadLetter::new(
                Reason::MissingService,
                "missing meta.serviceProviderName",
                Path::new("/var/log/at/b.log"),
                0,
                GOOD.as_bytes(),
            ),
        ])
        .unwrap();
    let (code, stdout, stderr) = run(binary().args(["dead-letters", "-c"]).arg(&conf).arg("list"));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("invalid_json")
            && stdout.contains("/var/log/at/b.log:0")
            && stdout.contains("3 dead letter(s)"),
        "{stdout}"
    );
    let id = stdout
        .lines()
        .nth(2)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let (code, stdout, _) = run(binary()
        .args(["dead-letters", "-c"])
        .arg(&conf)
        .args(["show", &id]));
    assert_eq!(code, 0);
    assert!(
        stdout.contains("reason:  missing_service") && stdout.contains(GOOD),
        "{stdout}"
    );
    let (code, stdout, _) = run(binary()
        .args(["dead-letters", "-c"])
        .arg(&conf)
        .args(["requeue", "--all"]));
    assert_eq!(code, 0);
    assert!(
        stdout.contains("kept, still fails: invalid JSON"),
        "{stdout}"
    );
    assert!(
        stdout.contains("kept, still fails: meta.userSpaceId has no meta.userSpaceRegion"),
        "{stdout}"
    );
    assert!(stdout.contains("1 line(s) requeued to"), "{stdout}");
    let requeued: Vec<_> = std::fs::read_dir(dir.path().join("requeue"))
        .unwrap()
        .collect();
    assert_eq!(requeued.len(), 1);
    assert_eq!(
        std::fs::read_to_string(requeued[0].as_ref().unwrap().path()).unwrap(),
        format!("{GOOD}\n")
    );
    let (_, stdout, _) = run(binary().args(["dead-letters", "-c"]).arg(&conf).arg("list"));
    assert!(stdout.contains("2 dead letter(s)"), "{stdout}");
    let (code, _, stderr) = run(binary()
        .args(["dead-letters", "-c"])
        .arg(&conf)
        .args(["list", "--reason", "bogus"]));
    assert_eq!(code, 2);
    assert!(stderr.contains("unknown reason 'bogus'"), "{stderr}");
}

#[test]
fn requeued_dead_letters_reach_the_running_daemon_without_a_config_change() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let conf = dir.path().join("at.conf");
    std::fs::write(&conf, format!("<system>\n  root_dir {0}\n</system>\n<source>\n  @type tail\n  path {0}/logs/*.log\n  tag at.*\n  format json\n  pos_file {0}/at.pos\n  read_from_head true\n</source>\n<match at.**>\n  @type stdout\n</match>\n", dir.path().display())).unwrap();
    // Dead-lettered earlier (say, unroutable under a previous configuration).
    DeadLetterStore::open(dir.path())
        .unwrap()
        .append(&[DeadLetter::new(
            Reason::Unroutable,
            "no <match> receives tag 'x'",
            &logs.join("a.log"),
            0,
            GOOD.as_bytes(),
        )])
        .unwrap();
    let daemon = crate::daemon::start(&conf);
    daemon.wait_started();
    let (code, stdout, _) = run(binary()
        .args(["dead-letters", "-c"])
        .arg(&conf)
        .args(["requeue", "--all"]));
    assert_eq!(code, 0);
    assert!(
        stdout.contains("a running daemon forwards them"),
        "{stdout}"
    );
    let events = daemon.events(1);
    assert_eq!(events.len(), 1, "the requeued event is forwarded");
    assert!(events[0].contains(r#""id":"1""#), "{events:?}");
    assert_eq!(daemon.stop(), 0);
    // Read once: positions of the requeue directory are kept like any source's.
    let daemon = crate::daemon::start(&conf);
    daemon.wait_started();
    assert!(daemon
        .events_within(std::time::Duration::from_secs(2))
        .is_empty());
    assert_eq!(daemon.stop(), 0);
}
