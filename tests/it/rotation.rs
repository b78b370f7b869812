//! `<rotate>` with the real binary: files rotated while an endpoint is down are all kept,
//! however many there are, until their lines are delivered; then only `keep` remain, and
//! every event written arrived.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::daemon::start_on;
use crate::http_server::{Reply, Server};
use crate::support::at_config;

fn event(i: usize) -> String {
    format!(
        r#"{{"meta":{{"serviceProviderName":"svc","userAccountIds":["a"]}},"payload":{{"id":"e{i}","action":"svc.thing.create","outcome":"success","initiator":{{"id":"u","typeURI":"t"}},"target":{{"id":"t","typeURI":"svc/thing"}},"eventTime":"2026-12-05T05:00:00Z"}}}}"#
    ) + "\n"
}

/// Appends as seed 001's services do in /var/log/at: open, write one line, close.
fn write_event(path: &Path, i: usize) {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
        .write_all(event(i).as_bytes())
        .unwrap();
}

fn rotated_copies(logs: &Path) -> usize {
    std::fs::read_dir(logs)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("a.log."))
        .count()
}

fn metric(port: u16, name: &str) -> u64 {
    let body = crate::support::http_get_text(port, "/metrics");
    body.lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::park_timeout(Duration::from_millis(50));
    }
}

#[test]
fn rotation_loses_nothing_and_removes_only_delivered_files() {
    let dir = tempfile::tempdir().unwrap();
    let status = Arc::new(AtomicU16::new(503));
    let ids: Arc<Mutex<HashSet<String>>> = Arc::default();
    let (st, rec) = (Arc::clone(&status), Arc::clone(&ids));
    let server = Server::start(move |req| {
        let code = st.load(Ordering::SeqCst);
        if code == 200 {
            let events: Vec<serde_json::Value> =
                serde_json::from_slice(&req.body).unwrap_or_default();
            rec.lock().unwrap().extend(
                events
                    .iter()
                    .map(|e| e["payload"]["id"].as_str().unwrap_or("").to_string()),
            );
        }
        Reply::status(code)
    });
    let conf = at_config(
        dir.path(),
        &server.url(),
        "    retry_wait 0.1s\n    retry_max_interval 0.5s\n",
    );
    let logs = dir.path().join("logs");
    // The source follows rotated names too (the seed's *.log*); <rotate> renames a.log
    // once its second is over, and keeps 3 copies.
    let text = std::fs::read_to_string(&conf).unwrap().replace(
        &format!("  path {}/*.log\n", logs.display()),
        &format!(
            "  path {0}/*.log*\n  <rotate>\n    path {0}/*.log\n    age 1s\n    keep 3\n  </rotate>\n",
            logs.display()
        ),
    );
    std::fs::write(&conf, text).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let daemon = start_on(&conf, &format!("127.0.0.1:{port}"));
    daemon.wait_started();

    // Phase 1, the endpoint down: write until ten rotations happened.
    let stop = Arc::new(AtomicBool::new(false));
    let written = {
        let (stop, file) = (Arc::clone(&stop), logs.join("a.log"));
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                write_event(&file, i);
                i += 1;
                std::thread::park_timeout(Duration::from_millis(2));
            }
            i
        })
    };
    wait_for("ten rotations", Duration::from_secs(120), || {
        metric(port, "at_forwarder_files_rotated_total") >= 10
    });
    stop.store(true, Ordering::SeqCst);
    let written = written.join().unwrap();
    // Nothing is delivered, so no rotated file may go, however many there are.
    let copies = rotated_copies(&logs);
    assert!(
        copies >= 10,
        "{copies} rotated copies, expected every one kept"
    );
    wait_for("the waiting gauge", Duration::from_secs(30), || {
        metric(port, "at_forwarder_rotated_files_waiting") >= 7
    });
    assert_eq!(metric(port, "at_forwarder_rotated_files_removed_total"), 0);
    assert!(rotated_copies(&logs) >= copies);

    // Phase 2, the endpoint back: everything arrives, then only `keep` copies remain.
    status.store(200, Ordering::SeqCst);
    wait_for("every event", Duration::from_secs(120), || {
        ids.lock().unwrap().len() >= written
    });
    wait_for("old copies removed", Duration::from_secs(60), || {
        rotated_copies(&logs) <= 3
    });
    let got = ids.lock().unwrap().clone();
    let missing: Vec<usize> = (0..written)
        .filter(|i| !got.contains(&format!("e{i}")))
        .collect();
    assert!(
        missing.is_empty(),
        "lost {} of {written}: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert!(metric(port, "at_forwarder_rotated_files_removed_total") >= 7);
    assert_eq!(daemon.stop(), 0);
}
