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

/// Runs a stdout pipeline with `filters` (after the source, before the match) over
/// `lines`; what comes out, and the daemon's metrics body.
fn through_filters(filters: &str, lines: &[String]) -> (Vec<serde_json::Value>, String) {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let conf = dir.path().join("at.conf");
    let filters = filters.replace("DIR", &dir.path().display().to_string());
    std::fs::write(&conf, format!("<source>\n  @type tail\n  path {0}/logs/*.log\n  pos_file {0}/at.pos\n  tag at.*\n  format json\n  read_from_head true\n</source>\n{filters}\n<match at.**>\n  @type stdout\n</match>\n", dir.path().display())).unwrap();
    std::fs::write(dir.path().join("hash.key"), "k3y").unwrap();
    // A last line that every filter keeps: once it is out, the others were decided.
    let mut text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    text.push_str(&format!(
        "{}\n",
        seed_event("end", "svc.thing.create", "success", "end-token")
    ));
    std::fs::write(logs.join("a.log"), text).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let daemon = crate::daemon::start_on(&conf, &format!("127.0.0.1:{port}"));
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        let got = daemon.events(1);
        let Some(line) = got.first() else { continue };
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let end = v["payload"]["id"] == "end";
        out.push(v);
        if end {
            break;
        }
    }
    let metrics = crate::support::http_get_text(port, "/metrics");
    assert_eq!(daemon.stop(), 0);
    out.pop();
    (out, metrics)
}

fn seed_event(id: &str, action: &str, outcome: &str, token: &str) -> String {
    format!(
        r#"{{"meta":{{"serviceProviderName":"svc","userAccountIds":["a"]}},"payload":{{"id":"{id}","action":"{action}","outcome":"{outcome}","initiator":{{"id":"u","typeURI":"t","credential":{{"type":"token","token":"{token}"}}}},"target":{{"id":"t","typeURI":"svc/thing"}},"requestData":{{"n":1}},"eventTime":"2026-01-01T00:00:00Z"}}}}"#
    )
}

#[test]
fn grep_keeps_and_drops_as_fluentd_and_counts_what_it_drops() {
    let lines = [
        seed_event("1", "svc.thing.create", "success", "t"),
        seed_event("2", "svc.thing.delete", "success", "t"),
        seed_event("3", "svc.thing.create", "failure", "t"),
        seed_event("4", "svc.other.create", "success", "t"),
    ];
    let filter = "<filter at.**>\n  @type grep\n  @id only-creates\n  <regexp>\n    key $.payload.action\n    pattern /\\.create$/\n  </regexp>\n  <exclude>\n    key $.payload.outcome\n    pattern /^failure$/\n  </exclude>\n  <or>\n    <regexp>\n      key $.payload.action\n      pattern /^svc\\.thing\\./\n    </regexp>\n    <regexp>\n      key $.payload.id\n      pattern /^4$/\n    </regexp>\n  </or>\n</filter>";
    let (out, metrics) = through_filters(filter, &lines);
    let ids: Vec<&str> = out
        .iter()
        .map(|v| v["payload"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["1", "4"]);
    assert!(
        metrics.contains("at_forwarder_events_filtered_total{filter=\"only-creates\"} 2"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("at_forwarder_dead_letters_total{"),
        "dropped, not dead-lettered: {metrics}"
    );
}

#[test]
fn record_transformer_and_redact_change_exactly_the_named_fields() {
    let lines = [
        seed_event("1", "svc.thing.create", "success", "secret-a"),
        seed_event("2", "svc.thing.create", "success", "secret-a"),
    ];
    let filters = "<filter at.**>\n  @type record_transformer\n  remove_keys $.payload.requestData\n  <record>\n    origin ${tag_parts[0]}/${record[\"meta\"][\"serviceProviderName\"]}\n  </record>\n</filter>\n<filter at.**>\n  @type redact\n  mode hash\n  hash_key_path DIR/hash.key\n</filter>";
    let (out, _) = through_filters(filters, &lines);
    assert_eq!(out.len(), 2);
    for v in &out {
        assert_eq!(v["origin"], "at/svc");
        assert!(v["payload"].get("requestData").is_none(), "{v}");
        let token = v["payload"]["initiator"]["credential"]["token"]
            .as_str()
            .unwrap();
        assert!(
            token.starts_with("hmac-sha256:") && !token.contains("secret"),
            "{v}"
        );
        // Everything else as it was: member order too.
        let keys: Vec<&str> = v["payload"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "id",
                "observer",
                "typeURI",
                "eventType",
                "action",
                "outcome",
                "initiator",
                "target",
                "eventTime"
            ],
            "{v}"
        );
    }
    assert_eq!(
        out[0]["payload"]["initiator"]["credential"]["token"],
        out[1]["payload"]["initiator"]["credential"]["token"],
        "equal values stay comparable"
    );
    // The default redact: the credential token, with a marker.
    let (out, _) = through_filters("<filter at.**>\n  @type redact\n</filter>", &lines[..1]);
    assert_eq!(
        out[0]["payload"]["initiator"]["credential"]["token"],
        "[REDACTED]"
    );
    assert_eq!(out[0]["payload"]["requestData"]["n"], 1);
}
