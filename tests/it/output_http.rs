//! `@type http` with the real binary against a real HTTP server on 127.0.0.1: the body as
//! fluentd's out_http sends it, headers, gzip, a bearer token read from a file and read
//! again after a 401, and every event delivered.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::daemon::{append, start};
use crate::http_server::{Reply, Server};

fn event(i: usize) -> String {
    format!(
        r#"{{"meta":{{"serviceProviderName":"svc","userAccountIds":["a"]}},"payload":{{"id":"e{i}","action":"svc.thing.create","outcome":"success","initiator":{{"id":"u","typeURI":"t"}},"target":{{"id":"t","typeURI":"svc/thing"}},"eventTime":"2026-01-01T00:00:00Z"}}}}"#
    )
}

#[test]
fn ndjson_with_headers_gzip_and_a_bearer_token_read_again_after_a_401() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "old-token\n").unwrap();
    let ids: Arc<Mutex<HashSet<String>>> = Arc::default();
    let seen: Arc<Mutex<Vec<(String, String, String)>>> = Arc::default();
    let (rec, heads) = (Arc::clone(&ids), Arc::clone(&seen));
    let server = Server::start(move |req| {
        let auth = req.header("Authorization").unwrap_or("").to_string();
        // The server gunzips bodies sent with Content-Encoding: gzip (checked below).
        assert_eq!(req.header("Content-Encoding"), Some("gzip"));
        heads.lock().unwrap().push((
            auth.clone(),
            req.header("Content-Type").unwrap_or("").to_string(),
            req.header("X-Tenant").unwrap_or("").to_string(),
        ));
        if auth != "Bearer new-token" {
            return Reply::status(401);
        }
        for line in String::from_utf8_lossy(&req.body).lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            rec.lock()
                .unwrap()
                .insert(v["payload"]["id"].as_str().unwrap().to_string());
        }
        Reply::status(200)
    });
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let conf = dir.path().join("at.conf");
    std::fs::write(
        &conf,
        format!(
            "<source>\n  @type tail\n  path {0}/logs/*.log\n  pos_file {0}/at.pos\n  tag at.*\n  format json\n  read_from_head true\n</source>\n<match at.**>\n  @type http\n  endpoint {1}/ingest\n  headers {{\"X-Tenant\":\"team-a\"}}\n  compress gzip\n  <auth>\n    method bearer\n    token_path {0}/token\n  </auth>\n  <buffer>\n    path {0}/buffer\n    flush_interval 1s\n    retry_wait 0.1s\n    retry_max_interval 0.5s\n  </buffer>\n</match>\n",
            dir.path().display(),
            server.url()
        ),
    )
    .unwrap();
    append(
        &logs.join("a.log"),
        &(0..20).map(|i| event(i) + "\n").collect::<String>(),
    );
    let daemon = start(&conf);
    // Refused with the old token, then read again from the file once it changes.
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "no request");
        std::thread::park_timeout(Duration::from_millis(20));
    }
    std::fs::write(&token, "new-token").unwrap();
    while ids.lock().unwrap().len() < 20 {
        assert!(Instant::now() < deadline, "not every event arrived");
        std::thread::park_timeout(Duration::from_millis(20));
    }
    assert_eq!(daemon.stop(), 0);
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].0, "Bearer old-token");
    let last = seen.last().unwrap();
    assert_eq!(
        last,
        &(
            "Bearer new-token".into(),
            "application/x-ndjson".into(),
            "team-a".into()
        )
    );
}

#[test]
fn json_array_and_a_retryable_code() {
    let dir = tempfile::tempdir().unwrap();
    let bodies: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (rec, n) = (Arc::clone(&bodies), Arc::clone(&calls));
    let server = Server::start(move |req| {
        // A 418 first: retried only because retryable_response_codes names it.
        if n.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            return Reply::status(418);
        }
        rec.lock()
            .unwrap()
            .push(serde_json::from_slice(&req.body).unwrap());
        Reply::status(200)
    });
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let conf = dir.path().join("at.conf");
    std::fs::write(
        &conf,
        format!(
            "<source>\n  @type tail\n  path {0}/logs/*.log\n  pos_file {0}/at.pos\n  tag at.*\n  format json\n  read_from_head true\n</source>\n<match at.**>\n  @type http\n  endpoint {1}/ingest\n  json_array true\n  retryable_response_codes [418]\n  <buffer>\n    path {0}/buffer\n    flush_interval 1s\n    retry_wait 0.1s\n  </buffer>\n</match>\n",
            dir.path().display(),
            server.url()
        ),
    )
    .unwrap();
    append(
        &logs.join("a.log"),
        &(0..5).map(|i| event(i) + "\n").collect::<String>(),
    );
    let daemon = start(&conf);
    let deadline = Instant::now() + Duration::from_secs(30);
    while bodies.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "not delivered after the 418");
        std::thread::park_timeout(Duration::from_millis(20));
    }
    assert_eq!(daemon.stop(), 0);
    let body = &bodies.lock().unwrap()[0];
    let ids: Vec<&str> = body
        .as_array()
        .expect("a JSON array")
        .iter()
        .map(|e| e["payload"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["e0", "e1", "e2", "e3", "e4"]);
}
