//! `@type copy` with the real binary: every event reaches each store; a store that is
//! down for 30 s neither holds back the other's delivery nor loses events, through a
//! `kill -9` while it is down.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::daemon::{append, start};
use crate::http_server::{Reply, Server};

fn event(i: usize) -> String {
    format!(
        r#"{{"meta":{{"serviceProviderName":"svc","userAccountIds":["a"]}},"payload":{{"id":"e{i}","action":"svc.thing.create","outcome":"success","initiator":{{"id":"u","typeURI":"t"}},"target":{{"id":"t","typeURI":"svc/thing"}},"eventTime":"2026-01-01T00:00:00Z"}}}}"#
    ) + "\n"
}

/// A server that records ids while it answers 200, and answers `status` otherwise.
fn destination(status: Arc<AtomicU16>) -> (Server, Arc<Mutex<HashSet<String>>>) {
    let ids: Arc<Mutex<HashSet<String>>> = Arc::default();
    let rec = Arc::clone(&ids);
    let server = Server::start(move |req| {
        let code = status.load(Ordering::SeqCst);
        if code == 200 {
            for line in String::from_utf8_lossy(&req.body).lines() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                rec.lock()
                    .unwrap()
                    .insert(v["payload"]["id"].as_str().unwrap().to_string());
            }
        }
        Reply::status(code)
    });
    (server, ids)
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::park_timeout(Duration::from_millis(20));
    }
}

#[test]
fn a_store_that_is_down_holds_back_nothing_and_loses_nothing_through_a_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let (up, down) = (Arc::new(AtomicU16::new(200)), Arc::new(AtomicU16::new(503)));
    let (server_a, ids_a) = destination(Arc::clone(&up));
    let (server_b, ids_b) = destination(Arc::clone(&down));
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let store = |name: &str, url: String| {
        format!("  <store>\n    @type http\n    endpoint {url}/in\n    <buffer>\n      path {}/buffer-{name}\n      flush_interval 1s\n      retry_wait 0.1s\n      retry_max_interval 0.5s\n    </buffer>\n  </store>\n", dir.path().display())
    };
    let conf = dir.path().join("at.conf");
    std::fs::write(
        &conf,
        format!(
            "<source>\n  @type tail\n  path {0}/logs/*.log\n  pos_file {0}/at.pos\n  tag at.*\n  format json\n  read_from_head true\n</source>\n<match at.**>\n  @type copy\n{1}{2}</match>\n",
            dir.path().display(),
            store("a", server_a.url()),
            store("b", server_b.url())
        ),
    )
    .unwrap();
    let log = logs.join("a.log");
    let outage = Instant::now();
    append(&log, &(0..100).map(event).collect::<String>());
    let daemon = start(&conf);
    // B is down: A gets everything meanwhile.
    wait_for("A to get the first 100", || {
        ids_a.lock().unwrap().len() >= 100
    });
    assert!(ids_b.lock().unwrap().is_empty());
    // kill -9 while B is still down, more lines, a restart.
    daemon.kill9();
    append(&log, &(100..200).map(event).collect::<String>());
    let daemon = start(&conf);
    wait_for("A to get all 200", || ids_a.lock().unwrap().len() >= 200);
    // B stays down for 30 s in all (the issue's outage): lines keep coming, and A keeps
    // delivering each batch while B's wait on disk.
    let mut written = 200;
    while outage.elapsed() < Duration::from_secs(30) {
        append(
            &log,
            &(written..written + 10).map(event).collect::<String>(),
        );
        written += 10;
        wait_for("A to keep delivering", || {
            ids_a.lock().unwrap().len() >= written
        });
    }
    assert!(ids_b.lock().unwrap().is_empty());
    // B comes back: it gets every event, none lost.
    down.store(200, Ordering::SeqCst);
    wait_for("B to get every event", || {
        ids_b.lock().unwrap().len() >= written
    });
    assert_eq!(daemon.stop(), 0);
    for (name, ids) in [("A", &ids_a), ("B", &ids_b)] {
        let ids = ids.lock().unwrap();
        let missing: Vec<usize> = (0..written)
            .filter(|i| !ids.contains(&format!("e{i}")))
            .collect();
        assert!(missing.is_empty(), "{name} lost {missing:?}");
    }
}

/// `@type copy` to Activity Tracker, IBM Cloud Logs (both played by the local receiver)
/// and an http endpoint: each gets every event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_to_activity_tracker_cloud_logs_and_http_delivers_every_event_to_each() {
    use at_forwarder::receiver::{self, ReceiverOptions};
    let dir = tempfile::tempdir().unwrap();
    let secret =
        r#"{"services":[{"service_name":"svc","auth_token_value":"tok","project_id":"proj"}]}"#;
    std::fs::create_dir_all(dir.path().join("secrets")).unwrap();
    std::fs::write(dir.path().join("secrets/127.0.0.1"), secret).unwrap();
    std::fs::write(dir.path().join("apikey"), "key-1\n").unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let (r, _) = receiver::start(
        ReceiverOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            secrets_dir: dir.path().join("secrets"),
            data_dir: dir.path().join("data"),
            retention_days: None,
            retention_every: Duration::from_secs(3600),
            fail_rate: 0.0,
            latency: Duration::ZERO,
            status: None,
            sink: false,
            sink_latency: false,
            cloud_logs_keys: Some(dir.path().join("apikey")),
            cloud_logs_token_lifetime: Duration::from_secs(3600),
        },
        stop.clone(),
    )
    .await
    .unwrap();
    let (http, http_ids) = destination(Arc::new(AtomicU16::new(200)));
    let d = dir.path().display();
    let base = format!("http://{}", r.addr);
    let conf = dir.path().join("at.conf");
    std::fs::write(
        &conf,
        format!(
            "<source>\n  @type tail\n  path {d}/logs/*.log\n  pos_file {d}/at.pos\n  tag at.*\n  format json\n  read_from_head true\n</source>\n<match at.**>\n  @type copy\n  <store>\n    @type ibmactivitytracker\n    targetHost {base}\n    service_region ng\n    secrets_path {d}/secrets\n    <buffer>\n      path {d}/b-at\n      flush_interval 1s\n    </buffer>\n  </store>\n  <store>\n    @type ibm_cloud_logs\n    endpoint {base}\n    iam_endpoint {base}\n    api_key_path {d}/apikey\n    <buffer>\n      path {d}/b-logs\n      flush_interval 1s\n    </buffer>\n  </store>\n  <store>\n    @type http\n    endpoint {}/in\n    <buffer>\n      path {d}/b-http\n      flush_interval 1s\n    </buffer>\n  </store>\n</match>\n",
            http.url()
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("logs")).unwrap();
    append(
        &dir.path().join("logs/a.log"),
        &(0..50).map(event).collect::<String>(),
    );
    let daemon = start(&conf);
    let cloud = r.cloud_logs.clone().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while r.store.distinct_events() < 50
        || cloud.counts().1 < 50
        || http_ids.lock().unwrap().len() < 50
    {
        assert!(
            Instant::now() < deadline,
            "AT {}, Cloud Logs {}, http {}",
            r.store.distinct_events(),
            cloud.counts().1,
            http_ids.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(daemon.stop(), 0);
    stop.cancel();
}
