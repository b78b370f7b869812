//! The real binary against a real HTTP endpoint on 127.0.0.1: 100,000 events while the
//! endpoint answers 503, then 429 with Retry-After, then 200, with two `kill -9` on the
//! way. Every event must arrive; duplicates are counted and printed.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::http_server::{Reply, Server};
use crate::support::binary;

const EVENTS: usize = 100_000;
const FILES: usize = 4;

fn event(i: usize) -> String {
    let svc = i % 3;
    format!(
        r#"{{"meta":{{"serviceProviderName":"svc{svc}","serviceProviderRegion":"ng","userAccountIds":["acct{}"]}},"payload":{{"id":"evt-{i:07}","action":"svc{svc}.thing.create","outcome":"success","initiator":{{"id":"user{}","typeURI":"service/security/account/user"}},"target":{{"id":"thing{i}","typeURI":"svc{svc}/thing"}},"eventTime":"2026-11-22T05:00:00.{:03}Z"}}}}"#,
        i % 17,
        i % 5,
        i % 1000
    ) + "\n"
}

fn start(conf: &Path) -> Child {
    binary()
        .args([
            "--log-format",
            "json",
            "--log-level",
            "warn",
            "run",
            "--metrics-listen",
            "127.0.0.1:0",
            "-c",
        ])
        .arg(conf)
        .stdout(Stdio::null())
        .stderr(if std::env::var_os("AT_TEST_LOGS").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .spawn()
        .unwrap()
}

fn wait_for(received: &Mutex<HashMap<String, usize>>, want: usize, limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    loop {
        let n = received.lock().unwrap().len();
        if n >= want || Instant::now() >= deadline {
            return n;
        }
        std::thread::park_timeout(Duration::from_millis(50));
    }
}

#[test]
fn every_event_arrives_through_outages_and_two_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let secrets = dir.path().join("secrets");
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::create_dir_all(&secrets).unwrap();
    let services: Vec<String> = (0..3)
        .map(|s| {
            format!(
                r#"{{"service_name":"svc{s}","auth_token_value":"tok{s}","project_id":"proj{s}"}}"#
            )
        })
        .collect();
    std::fs::write(
        secrets.join("127.0.0.1"),
        format!(r#"{{"services":[{}]}}"#, services.join(",")),
    )
    .unwrap();

    let received: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let requests = Arc::new(AtomicUsize::new(0));
    let (rec, count) = (Arc::clone(&received), Arc::clone(&requests));
    let server = Server::start(move |req| {
        let n = count.fetch_add(1, Ordering::SeqCst);
        let service = req.header("X-Service-Name").unwrap_or("").to_string();
        let token_ok = req.header("X-Auth-Token")
            == Some(&format!("bearer tok{}", service.trim_start_matches("svc")));
        let project_ok = req.header("X-Auth-Project-Id")
            == Some(&format!("proj{}", service.trim_start_matches("svc")));
        if req.method != "POST"
            || !token_ok
            || !project_ok
            || req.header("Idempotency-Key").is_none()
            || req.path != "/v3/events"
        {
            return Reply {
                status: 401,
                headers: vec![],
                body: "Unauthorized".into(),
            };
        }
        if n < 6 {
            return Reply::status(503);
        }
        if n < 10 {
            return Reply {
                status: 429,
                headers: vec![("Retry-After", "1".into())],
                body: String::new(),
            };
        }
        let body = String::from_utf8_lossy(&req.body);
        let mut rec = rec.lock().unwrap();
        for part in body.split("\"id\":\"evt-").skip(1) {
            let id = &part[..part.find('"').unwrap()];
            *rec.entry(id.to_string()).or_default() += 1;
        }
        Reply::status(200)
    });

    for f in 0..FILES {
        let mut file = std::fs::File::create(logs.join(format!("svc-{f}.log"))).unwrap();
        let text: String = (0..EVENTS).filter(|i| i % FILES == f).map(event).collect();
        file.write_all(text.as_bytes()).unwrap();
    }
    let conf = dir.path().join("at.conf");
    std::fs::write(
        &conf,
        format!(
            r#"<source>
  @type tail
  path {logs}/*.log
  pos_file {state}/at.pos
  tag kubernetes.at.*
  format json
  read_from_head true
</source>
<match kubernetes.at.**>
  @type ibmactivitytracker
  targetHost {url}
  service_region ng
  secrets_path {secrets}
  <buffer>
    path {state}/buffer
    chunk_limit_size 256k
    flush_interval 1s
    flush_thread_count 2
    flush_at_shutdown true
  </buffer>
  retry_wait 200ms
  max_retry_wait 2s
  disable_retry_limit true
</match>
"#,
            logs = logs.display(),
            state = dir.path().display(),
            url = server.url(),
            secrets = secrets.display()
        ),
    )
    .unwrap();

    let mut daemon = start(&conf);
    let first = wait_for(&received, 20_000, Duration::from_secs(120));
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    daemon = start(&conf);
    let second = wait_for(
        &received,
        (first + 30_000).min(EVENTS),
        Duration::from_secs(120),
    );
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    daemon = start(&conf);
    let unique = wait_for(&received, EVENTS, Duration::from_secs(180));
    let code = crate::support::terminate(&mut daemon);

    let received = received.lock().unwrap();
    let total: usize = received.values().sum();
    let duplicates = total - received.len();
    println!(
        "buffer e2e: {unique} of {EVENTS} events received ({first} before the first kill -9, {second} before the second), {duplicates} duplicates ({:.3} %), {} requests",
        100.0 * duplicates as f64 / EVENTS as f64,
        requests.load(Ordering::SeqCst)
    );
    assert_eq!(unique, EVENTS, "events lost");
    assert_eq!(code, Some(0));
}

/// A buffer filled to its total limit during an outage: reading pauses (the operator sees
/// a WARN and `buffer list` shows the queue), nothing is lost, and everything flows once
/// the endpoint is back.
#[test]
fn a_full_buffer_pauses_reading_and_loses_nothing() {
    use std::io::{BufRead, BufReader};
    use std::sync::atomic::AtomicBool;
    let dir = tempfile::tempdir().unwrap();
    let (logs, secrets) = (dir.path().join("logs"), dir.path().join("secrets"));
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("127.0.0.1"), r#"{"services":[{"service_name":"svc0","auth_token_value":"t0","project_id":"p0"},{"service_name":"svc1","auth_token_value":"t1","project_id":"p1"},{"service_name":"svc2","auth_token_value":"t2","project_id":"p2"}]}"#).unwrap();
    let up = Arc::new(AtomicBool::new(false));
    let received: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let (gate, rec) = (Arc::clone(&up), Arc::clone(&received));
    let server = Server::start(move |req| {
        if !gate.load(Ordering::SeqCst) {
            return Reply::status(503);
        }
        let body = String::from_utf8_lossy(&req.body);
        let mut rec = rec.lock().unwrap();
        for part in body.split("\"id\":\"evt-").skip(1) {
            *rec.entry(part[..part.find('"').unwrap()].to_string())
                .or_default() += 1;
        }
        Reply::status(200)
    });
    let n = 3000;
    std::fs::write(logs.join("a.log"), (0..n).map(event).collect::<String>()).unwrap();
    let conf = dir.path().join("at.conf");
    std::fs::write(
        &conf,
        format!(
            "<source>\n  @type tail\n  path {logs}/*.log\n  pos_file {state}/at.pos\n  tag at.*\n  format json\n  read_from_head true\n</source>\n<match at.**>\n  @type ibmactivitytracker\n  targetHost {url}\n  service_region ng\n  secrets_path {secrets}\n  <buffer>\n    path {state}/buffer\n    chunk_limit_size 8k\n    total_limit_size 64k\n    flush_interval 1s\n    retry_wait 100ms\n    retry_max_interval 500ms\n  </buffer>\n</match>\n",
            logs = logs.display(),
            state = dir.path().display(),
            url = server.url(),
            secrets = secrets.display()
        ),
    )
    .unwrap();
    let mut daemon = binary()
        .args([
            "--log-format",
            "json",
            "run",
            "--metrics-listen",
            "127.0.0.1:0",
            "-c",
        ])
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(daemon.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let full = rx
        .iter()
        .take(10_000)
        .any(|l| l.contains("Buffer full: reading pauses"));
    assert!(full, "no WARN about the full buffer");
    // Chunks full by size are sealed by the sender side shortly after: poll the listing.
    let deadline = Instant::now() + Duration::from_secs(30);
    let listing = loop {
        let (code, listing, _) =
            crate::support::run(binary().args(["buffer", "-c"]).arg(&conf).arg("list"));
        assert_eq!(code, 0);
        if listing.contains("queued") || Instant::now() > deadline {
            break listing;
        }
        std::thread::park_timeout(Duration::from_millis(50));
    };
    assert!(
        listing.contains("queued") && listing.contains("svc"),
        "{listing}"
    );
    assert!(received.lock().unwrap().is_empty());

    up.store(true, Ordering::SeqCst);
    let got = wait_for(&received, n, Duration::from_secs(60));
    assert_eq!(crate::support::terminate(&mut daemon), Some(0));
    assert_eq!(got, n, "events lost after the buffer was full");
    assert!(
        rx.try_iter()
            .any(|l| l.contains("Buffer accepting events again")),
        "reading resumed"
    );
}
