//! `@type copy` with the real binary: every event reaches each store; a store that is
//! down neither holds back the other's delivery nor loses events, through a `kill -9`
//! while it is down.

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
    // B comes back: it gets every event, none lost.
    down.store(200, Ordering::SeqCst);
    wait_for("B to get all 200", || ids_b.lock().unwrap().len() >= 200);
    assert_eq!(daemon.stop(), 0);
    for (name, ids) in [("A", &ids_a), ("B", &ids_b)] {
        let ids = ids.lock().unwrap();
        let missing: Vec<usize> = (0..200)
            .filter(|i| !ids.contains(&format!("e{i}")))
            .collect();
        assert!(missing.is_empty(), "{name} lost {missing:?}");
    }
}
