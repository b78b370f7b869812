//! The real binary as a daemon: tail → check → stdout, bad lines to the dead-letter store,
//! positions saved so a restart neither loses nor repeats, clean stop on SIGTERM.

use std::time::Duration;

use at_forwarder::event::dead_letter::DeadLetterStore;

use crate::daemon::{append, start};

const GOOD: &str = r#"{"meta":{"serviceProviderName":"svc","userAccountIds":["a1"]},"payload":{"id":"ID","action":"svc.thing.create","outcome":"success","initiator":{"id":"u","typeURI":"t"},"target":{"id":"t","typeURI":"svc/thing"},"eventTime":"2020-01-01 00:00:00 +0000 UTC"}}"#;

#[test]
fn events_flow_to_stdout_bad_lines_to_dead_letters_and_restarts_do_not_repeat() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let conf = dir.path().join("at.conf");
    std::fs::write(
        &conf,
        format!(
            "<source>\n  @type tail\n  path {0}/*.log\n  pos_file {1}/at.pos\n  tag at.*\n  format json\n  read_from_head true\n</source>\n<match at.**>\n  @type stdout\n</match>\n",
            logs.display(),
            dir.path().display()
        ),
    )
    .unwrap();
    let log = logs.join("svc.log");
    let good = |i: usize| GOOD.replace("\"ID\"", &format!("\"e{i}\""));
    append(&log, &format!("{}\nnot json\n{}\n", good(1), good(2)));

    let daemon = start(&conf);
    let events = daemon.events(2);
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(
        events[0].contains("\"id\":\"e1\"")
            && events[0].contains("\"eventTime\":\"2020-01-01T00:00:00.000+0000\""),
        "{}",
        events[0]
    );
    assert!(
        events[0].contains("\"observer\":{\"name\":\"ActivityTracker\"}"),
        "{}",
        events[0]
    );
    append(&log, &format!("{}\n", good(3)));
    assert_eq!(daemon.events(1).len(), 1);
    assert_eq!(daemon.stop(), 0);

    let letters = DeadLetterStore::open(dir.path()).unwrap().list().unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(
        (letters[0].letter.line.as_slice(), letters[0].letter.offset),
        (&b"not json"[..], good(1).len() as u64 + 1)
    );

    // Written while stopped; after the restart only these arrive.
    append(&log, &format!("{}\n", good(4)));
    let daemon = start(&conf);
    daemon.wait_started();
    let events = daemon.events(1);
    assert_eq!(events.len(), 1);
    assert!(events[0].contains("\"id\":\"e4\""), "{events:?}");
    // A repeated line would arrive before this marker.
    append(&log, &format!("{}\n", good(5)));
    let next = daemon.events(1);
    assert!(
        next.len() == 1 && next[0].contains("\"id\":\"e5\""),
        "a line was repeated after the restart: {next:?}"
    );
    assert_eq!(daemon.stop(), 0);
}

/// A file whose tag no `<match>` receives: its lines go to the dead-letter store as
/// unroutable, naming the tag, while another file's lines flow; lines of both files in one
/// batch are sorted apart.
#[test]
fn lines_no_match_receives_are_dead_lettered_as_unroutable() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let conf = dir.path().join("at.conf");
    std::fs::write(
        &conf,
        format!(
            "<source>\n  @type tail\n  path {0}/*.log\n  pos_file {1}/at.pos\n  tag at.*\n  format json\n  read_from_head true\n</source>\n<match at.**.kept.log>\n  @type stdout\n</match>\n",
            logs.display(),
            dir.path().display()
        ),
    )
    .unwrap();
    let good = |i: usize| GOOD.replace("\"ID\"", &format!("\"e{i}\""));
    append(&logs.join("other.log"), &format!("{}\n", good(1)));
    append(
        &logs.join("kept.log"),
        &format!("{}\n{}\n", good(2), good(3)),
    );
    let daemon = start(&conf);
    let events = daemon.events(2);
    assert!(
        events.len() == 2 && events[0].contains("\"e2\"") && events[1].contains("\"e3\""),
        "{events:?}"
    );
    let store = DeadLetterStore::open(dir.path()).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while store.list().unwrap().is_empty() && std::time::Instant::now() < deadline {
        std::thread::park_timeout(Duration::from_millis(20));
    }
    assert_eq!(daemon.stop(), 0);
    let letters = store.list().unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0].letter;
    assert_eq!(letter.reason, at_forwarder::event::Reason::Unroutable);
    assert_eq!(letter.line, good(1).into_bytes());
    assert!(
        letter.message.contains("other.log") && letter.path.ends_with("other.log"),
        "{}",
        letter.message
    );
}

#[test]
fn path_key_adds_the_file_s_path_to_each_record() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let conf = dir.path().join("at.conf");
    std::fs::write(&conf, format!("<source>\n  @type tail\n  path {0}/logs/*.log\n  pos_file {0}/at.pos\n  tag at.*\n  format json\n  read_from_head true\n  path_key source_file\n  cadf_validation off\n</source>\n<match at.**>\n  @type stdout\n</match>\n", dir.path().display())).unwrap();
    let file = logs.join("a \"b\".log");
    std::fs::write(
        &file,
        "{\"meta\":{\"serviceProviderName\":\"s\"},\"payload\":{}}\n",
    )
    .unwrap();
    let daemon = crate::daemon::start(&conf);
    let events = daemon.events(1);
    assert_eq!(daemon.stop(), 0);
    let v: serde_json::Value = serde_json::from_str(&events[0]).unwrap();
    assert_eq!(
        v["source_file"],
        file.to_string_lossy().as_ref(),
        "{}",
        events[0]
    );
    assert_eq!(v["meta"]["serviceProviderName"], "s");
}

#[test]
fn the_time_field_goes_as_fluentd_s_parser_does_and_normalize_time_false_keeps_event_time() {
    let event = r#"{"meta":{"serviceProviderName":"s","userAccountIds":["a"]},"time":"2020-01-01T00:00:00Z","payload":{"id":"1","action":"s.thing.create","outcome":"success","initiator":{"id":"u","typeURI":"t"},"target":{"id":"t","typeURI":"s/thing"},"eventTime":"2020-01-01 00:00:00 +0000 UTC"}}"#;
    let forwarded = |source_extra: &str| {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        let conf = dir.path().join("at.conf");
        std::fs::write(&conf, format!("<source>\n  @type tail\n  path {0}/logs/*.log\n  pos_file {0}/at.pos\n  tag at.*\n  format json\n  read_from_head true\n{source_extra}</source>\n<match at.**>\n  @type stdout\n</match>\n", dir.path().display())).unwrap();
        std::fs::write(logs.join("a.log"), format!("{event}\n")).unwrap();
        let daemon = crate::daemon::start(&conf);
        let events = daemon.events(1);
        assert_eq!(daemon.stop(), 0);
        serde_json::from_str::<serde_json::Value>(&events[0]).unwrap()
    };
    // Defaults: the top-level "time" goes (fluentd's json parser, time_key time), and
    // eventTime is normalised.
    let v = forwarded("");
    assert!(v.get("time").is_none(), "{v}");
    assert_eq!(v["payload"]["eventTime"], "2020-01-01T00:00:00.000+0000");
    // keep_time_key keeps it; normalize_time false leaves eventTime as written.
    let v = forwarded("  keep_time_key true\n  normalize_time false\n");
    assert_eq!(v["time"], "2020-01-01T00:00:00Z");
    assert_eq!(v["payload"]["eventTime"], "2020-01-01 00:00:00 +0000 UTC");
    // Another time_key names the member that goes.
    let v = forwarded("  time_key meta\n  cadf_validation off\n");
    assert!(v.get("meta").is_none() && v.get("time").is_some(), "{v}");
}
