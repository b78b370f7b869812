//! The Activity Tracker output against a real HTTP server on 127.0.0.1, plain and TLS:
//! the wire contract of docs/at-ingest.md and every response class.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use at_forwarder::buffer::{Buffer, Outcome, Sink, Taken};
use at_forwarder::config::{self, Output};
use at_forwarder::output::at::AtSink;

use crate::http_server::{tls_config, Reply, Request, Server};
use crate::support::options;

const SECRET: &str = r#"{"services":[{"service_name":"svc","auth_token_value":"s3cret-tok","project_id":"proj-1"}]}"#;

fn sink(dir: &Path, url: &str, extra: &str) -> AtSink {
    std::fs::write(dir.join("127.0.0.1"), SECRET).unwrap();
    let text = format!(
        "<source>\n @type tail\n path /x/*.log\n tag t\n format json\n pos_file /x/p\n</source>\n<match t>\n @type ibmactivitytracker\n targetHost {url}\n service_region eu-de\n secrets_path {}\n{extra}\n <buffer>\n  path /x/b\n </buffer>\n</match>\n",
        dir.display()
    );
    let loaded = config::load_str(&text, "t.conf".as_ref(), &options()).unwrap();
    let Output::ActivityTracker(at) = &loaded.config.matches[0].output else {
        unreachable!()
    };
    AtSink::new(at, Default::default()).unwrap()
}

fn chunk(records: &[&str]) -> Taken {
    Taken {
        id: "0001763788800000-abcdef01-000042".into(),
        key: "svc".into(),
        attempts: 0,
        records: records.iter().map(|r| r.as_bytes().to_vec()).collect(),
    }
}

fn recording(
    reply: impl Fn(&Request) -> Reply + Send + Sync + 'static,
) -> (Server, Arc<Mutex<Vec<Request>>>) {
    let seen: Arc<Mutex<Vec<Request>>> = Arc::default();
    let log = Arc::clone(&seen);
    let server = Server::start(move |r| {
        log.lock().unwrap().push(r.clone());
        reply(r)
    });
    (server, seen)
}

#[tokio::test]
async fn requests_follow_the_wire_contract() {
    let dir = tempfile::tempdir().unwrap();
    let (server, seen) = recording(|_| Reply::status(202));
    let sink = sink(dir.path(), &server.url(), "");
    let records = [
        r#"{"meta":{"serviceProviderName":"svc"},"payload":{"id":"a"}}"#,
        r#"{"meta":{"serviceProviderName":"svc"},"payload":{"id":"b"}}"#,
    ];
    assert_eq!(sink.send(&chunk(&records)).await, Outcome::Delivered);
    // A retry of the same chunk carries the same Idempotency-Key.
    assert_eq!(sink.send(&chunk(&records)).await, Outcome::Delivered);
    let seen = seen.lock().unwrap();
    let r = &seen[0];
    assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/v3/events"));
    assert_eq!(r.header("X-Auth-Token"), Some("bearer s3cret-tok"));
    assert_eq!(r.header("X-Auth-Project-Id"), Some("proj-1"));
    assert_eq!(r.header("X-Service-Name"), Some("svc"));
    assert_eq!(r.header("X-Service-Region"), Some("eu-de"));
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    assert_eq!(r.header("Content-Encoding"), Some("gzip"));
    assert_eq!(
        r.header("Idempotency-Key"),
        Some("0001763788800000-abcdef01-000042")
    );
    assert_eq!(
        r.header("User-Agent"),
        Some(concat!("at-forwarder/", env!("CARGO_PKG_VERSION")))
    );
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        format!("[{},{}]", records[0], records[1])
    );
    assert_eq!(
        seen[1].header("Idempotency-Key"),
        r.header("Idempotency-Key")
    );
}

#[tokio::test]
async fn uncompressed_bodies_and_request_size_limits() {
    let dir = tempfile::tempdir().unwrap();
    let (server, seen) = recording(|_| Reply::status(200));
    let sink = sink(
        dir.path(),
        &server.url(),
        " compress none\n max_events_per_request 2",
    );
    let records = [
        "{\"n\":1}",
        "{\"n\":2}",
        "{\"n\":3}",
        "{\"n\":4}",
        "{\"n\":5}",
    ];
    assert_eq!(sink.send(&chunk(&records)).await, Outcome::Delivered);
    let seen = seen.lock().unwrap();
    let keys: Vec<&str> = seen
        .iter()
        .map(|r| r.header("Idempotency-Key").unwrap())
        .collect();
    assert_eq!(
        keys.iter().map(|k| &k[k.len() - 2..]).collect::<Vec<_>>(),
        ["-0", "-1", "-2"]
    );
    assert!(seen.iter().all(|r| r.header("Content-Encoding").is_none()));
    assert_eq!(String::from_utf8_lossy(&seen[2].body), "[{\"n\":5}]");
}

#[tokio::test]
async fn chunks_read_back_are_sent_as_bodies_laid_out_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let (server, seen) = recording(|_| Reply::status(200));
    let sink = sink(
        dir.path(),
        &server.url(),
        " compress none\n max_events_per_request 2",
    );
    let loaded = config::load_str(
        &format!(
            "<source>\n @type tail\n path /x/*.log\n tag t\n format json\n pos_file /x/p\n</source>\n<match t>\n @type ibmactivitytracker\n targetHost http://127.0.0.1:1\n service_region eu-de\n secrets_path /x\n <buffer>\n  path {}\n </buffer>\n</match>\n",
            dir.path().join("buf").display()
        ),
        "t.conf".as_ref(),
        &options(),
    )
    .unwrap();
    let config = loaded.config.matches[0].buffer.as_ref().unwrap();
    let buffer = Buffer::open(config.options.clone()).unwrap();
    buffer.lay_out_bodies(2);
    let records: Vec<String> = (1..=5).map(|n| format!("{{\"n\":{n}}}")).collect();
    let refs: Vec<&[u8]> = records.iter().map(|r| r.as_bytes()).collect();
    buffer.append("svc", &refs).unwrap();
    buffer.sync().unwrap();
    buffer.seal_due(Instant::now(), true).unwrap();
    let taken = buffer.take(Instant::now()).expect("a sealed chunk");
    assert_eq!(sink.send(&taken).await, Outcome::Delivered);
    let seen = seen.lock().unwrap();
    // The frame headers, overwritten where they lay: no record was copied.
    let raw: Vec<String> = seen
        .iter()
        .map(|r| String::from_utf8(r.body.clone()).unwrap())
        .collect();
    assert_eq!(
        raw,
        [
            "[       {\"n\":1},       {\"n\":2}]",
            "[{\"n\":3},       {\"n\":4}]",
            "[{\"n\":5}]",
        ]
    );
    let bodies: Vec<serde_json::Value> = seen
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert_eq!(
        bodies,
        [
            serde_json::json!([{"n": 1}, {"n": 2}]),
            serde_json::json!([{"n": 3}, {"n": 4}]),
            serde_json::json!([{"n": 5}]),
        ]
    );
}

/// A check of an outcome.
type Expect = Box<dyn Fn(&Outcome) -> bool>;

#[tokio::test]
async fn every_response_class_is_handled_as_specified() {
    let dir = tempfile::tempdir().unwrap();
    let status = Arc::new(Mutex::new(200u16));
    let current = Arc::clone(&status);
    let server = Server::start(move |_| {
        let s = *current.lock().unwrap();
        let mut reply = Reply {
            status: s,
            headers: vec![],
            body: "Unauthorized".into(),
        };
        if s == 429 {
            reply.headers.push(("Retry-After", "7".into()));
        }
        reply
    });
    let sink = sink(dir.path(), &server.url(), "");
    let retry = |after: Option<u64>| move |o: &Outcome| matches!(o, Outcome::Retry { after: a, .. } if *a == after.map(Duration::from_secs));
    let cases: Vec<(u16, Expect)> = vec![
        (200, Box::new(|o| *o == Outcome::Delivered)),
        (201, Box::new(|o| *o == Outcome::Delivered)),
        (202, Box::new(|o| *o == Outcome::Delivered)),
        (400, Box::new(|o| *o == Outcome::Split)),
        (413, Box::new(|o| *o == Outcome::Split)),
        (401, Box::new(retry(None))),
        (403, Box::new(retry(None))),
        (404, Box::new(retry(None))),
        (408, Box::new(retry(None))),
        (429, Box::new(retry(Some(7)))),
        (500, Box::new(retry(None))),
        (503, Box::new(retry(None))),
        (
            422,
            Box::new(|o| matches!(o, Outcome::Reject { reason } if reason.contains("422"))),
        ),
    ];
    let reloads = sink.secret_reloads();
    for (code, expected) in cases {
        *status.lock().unwrap() = code;
        let outcome = sink.send(&chunk(&["{}"])).await;
        assert!(expected(&outcome), "HTTP {code}: {outcome:?}");
    }
    // 401 and 403 each re-read the Secret at once.
    assert_eq!(sink.secret_reloads(), reloads + 2);
}

#[tokio::test]
async fn network_errors_and_unknown_services_wait_and_retry() {
    let dir = tempfile::tempdir().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sink = sink(
        dir.path(),
        &format!("http://127.0.0.1:{closed}"),
        " request_timeout 2s",
    );
    assert!(
        matches!(sink.send(&chunk(&["{}"])).await, Outcome::Retry { reason, .. } if reason.contains("request failed"))
    );
    let unknown = Taken {
        key: "nobody".into(),
        ..chunk(&["{}"])
    };
    assert!(
        matches!(sink.send(&unknown).await, Outcome::Retry { reason, .. } if reason == "service token does not exist for service nobody")
    );
}

#[tokio::test]
async fn tls_is_verified_against_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let (config, ca_pem) = tls_config();
    let server = Server::start_tls(|_| Reply::status(200), config);
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    let trusted = sink(
        dir.path(),
        &server.url(),
        &format!(" ca_file {}", ca.display()),
    );
    assert_eq!(trusted.send(&chunk(&["{}"])).await, Outcome::Delivered);
    let untrusted = sink(dir.path(), &server.url(), "");
    assert!(
        matches!(untrusted.send(&chunk(&["{}"])).await, Outcome::Retry { reason, .. } if reason.contains("certificate") || reason.contains("Unknown")),
        "an unknown CA is refused"
    );
}

#[test]
fn tokens_never_reach_debug_output() {
    let dir = tempfile::tempdir().unwrap();
    let sink = sink(dir.path(), "http://127.0.0.1:9", "");
    let text = format!("{sink:?}");
    assert!(!text.contains("s3cret-tok"), "{text}");
    let body = format!(
        "{:?}",
        at_forwarder::output::secrets::parse(SECRET.as_bytes()).unwrap()
    );
    assert!(
        !body.contains("s3cret-tok") && body.contains("[REDACTED]"),
        "{body}"
    );
}
