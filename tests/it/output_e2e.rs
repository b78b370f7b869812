//! The real binary and the mounted Secret: a token rotated by a `..data` swap while the old
//! one starts failing with 401 is picked up without a restart; a service with no token
//! waits (on disk from the start) and then flows once its token is added; no token ever
//! reaches a log line.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::http_server::{Reply, Server};
use crate::support::binary;

fn event(service: &str, id: &str) -> String {
    format!(
        r#"{{"meta":{{"serviceProviderName":"{service}","userAccountIds":["acct"]}},"payload":{{"id":"{id}","action":"{service}.thing.create","outcome":"success","initiator":{{"id":"u","typeURI":"t"}},"target":{{"id":"t","typeURI":"{service}/thing"}},"eventTime":"2026-11-22T05:00:00Z"}}}}"#
    ) + "\n"
}

/// Writes a new version of the Secret and swaps `..data` to it, as the kubelet does.
fn publish_secret(dir: &Path, version: u32, services: &[(&str, &str)]) {
    let data = dir.join(format!("..2026_11_22_{version}"));
    std::fs::create_dir_all(&data).unwrap();
    let entries: Vec<String> = services
        .iter()
        .map(|(s, t)| {
            format!(r#"{{"service_name":"{s}","auth_token_value":"{t}","project_id":"p-{s}"}}"#)
        })
        .collect();
    std::fs::write(
        data.join("127.0.0.1"),
        format!(r#"{{"services":[{}]}}"#, entries.join(",")),
    )
    .unwrap();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(data.file_name().unwrap(), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    let link = dir.join("127.0.0.1");
    if std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink("..data/127.0.0.1", &link).unwrap();
    }
}

/// The configuration of a test in `dir` (files in `logs/`, the Secret in `secrets/`),
/// with `match_params` and `buffer_params` added; returns its path.
fn write_config(
    dir: &Path,
    url: &str,
    match_params: &str,
    buffer_params: &str,
) -> std::path::PathBuf {
    let conf = dir.join("at.conf");
    std::fs::write(
        &conf,
        format!(
            "<source>\n  @type tail\n  path {logs}/*.log\n  pos_file {state}/at.pos\n  tag at.*\n  format json\n  read_from_head true\n</source>\n<match at.**>\n  @type ibmactivitytracker\n  targetHost {url}\n  service_region ng\n  secrets_path {secrets}\n{match_params}  <buffer>\n    path {state}/buffer\n{buffer_params}  </buffer>\n</match>\n",
            logs = dir.join("logs").display(),
            state = dir.display(),
            secrets = dir.join("secrets").display()
        ),
    )
    .unwrap();
    conf
}

fn wait_for(received: &Mutex<HashSet<String>>, want: &[&str]) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if want.iter().all(|id| received.lock().unwrap().contains(*id)) {
            return true;
        }
        std::thread::park_timeout(Duration::from_millis(50));
    }
    false
}

#[test]
fn rotated_and_added_tokens_are_used_without_restart_and_never_logged() {
    let dir = tempfile::tempdir().unwrap();
    let (logs, secrets) = (dir.path().join("logs"), dir.path().join("secrets"));
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::create_dir_all(&secrets).unwrap();
    publish_secret(&secrets, 1, &[("svcA", "tokA-one")]);

    let valid: Arc<Mutex<HashMap<String, String>>> = Arc::new(Mutex::new(HashMap::from([
        ("svcA".into(), "tokA-one".into()),
        ("svcB".into(), "tokB-one".into()),
    ])));
    let received: Arc<Mutex<HashSet<String>>> = Arc::default();
    let (tokens, rec) = (Arc::clone(&valid), Arc::clone(&received));
    let server = Server::start(move |req| {
        let service = req.header("X-Service-Name").unwrap_or("");
        let expected = tokens
            .lock()
            .unwrap()
            .get(service)
            .map(|t| format!("bearer {t}"));
        if req.header("X-Auth-Token").map(String::from) != expected {
            return Reply {
                status: 401,
                headers: vec![],
                body: "Unauthorized".into(),
            };
        }
        let body = String::from_utf8_lossy(&req.body);
        let events: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
        for e in events {
            assert_eq!(
                e["meta"]["serviceProviderName"], service,
                "a batch mixed services"
            );
            rec.lock()
                .unwrap()
                .insert(e["payload"]["id"].as_str().unwrap().to_string());
        }
        Reply::status(200)
    });
    let log = logs.join("events.log");
    let append = |text: String| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap()
    };
    append(
        (1..=5)
            .map(|i| event("svcA", &format!("a{i}")) + &event("svcB", &format!("b{i}")))
            .collect(),
    );
    let conf = write_config(
        dir.path(),
        &server.url(),
        "  ibm_plugin_log_level debug\n",
        "    flush_interval 1s\n    retry_wait 200ms\n    retry_max_interval 1s\n",
    );
    let mut daemon = binary()
        .args([
            "--log-format",
            "json",
            "--log-level",
            "debug",
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
    let lines: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = Arc::clone(&lines);
    let reader = std::thread::spawn(move || {
        stderr
            .lines()
            .map_while(Result::ok)
            .for_each(|l| sink.lock().unwrap().push(l))
    });

    assert!(
        wait_for(&received, &["a1", "a2", "a3", "a4", "a5"]),
        "svcA's events with the first token"
    );
    assert!(
        !received.lock().unwrap().contains("b1"),
        "svcB has no token yet: its events wait"
    );

    // The endpoint stops accepting the old token; new events fail with 401 until the
    // Secret is swapped.
    valid
        .lock()
        .unwrap()
        .insert("svcA".into(), "tokA-two".into());
    append((6..=10).map(|i| event("svcA", &format!("a{i}"))).collect());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !lines
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("Error contacting AT with code 401"))
        && Instant::now() < deadline
    {
        std::thread::park_timeout(Duration::from_millis(50));
    }
    publish_secret(&secrets, 2, &[("svcA", "tokA-two"), ("svcB", "tokB-one")]);
    assert!(
        wait_for(
            &received,
            &["a6", "a7", "a8", "a9", "a10", "b1", "b2", "b3", "b4", "b5"]
        ),
        "rotated and added tokens are used without a restart"
    );

    assert_eq!(crate::support::terminate(&mut daemon), Some(0));
    reader.join().unwrap();
    let lines = lines.lock().unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("service token does not exist for service svcB")),
        "the seed's message for a missing token"
    );
    assert!(
        lines.iter().any(|l| l.contains("Sending event.")),
        "debug logging of events is on"
    );
    for token in ["tokA-one", "tokA-two", "tokB-one"] {
        assert!(
            !lines.iter().any(|l| l.contains(token)),
            "token {token} in a log line"
        );
    }
}

/// Chunks are held in memory only while they can be sent at once: a service with no token
/// gets its chunk written to disk before any attempt (else it would hold back the saved
/// position of its file, and a crash would send the file's other events again).
#[test]
fn a_service_without_a_token_is_buffered_on_disk_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (logs, secrets) = (dir.path().join("logs"), dir.path().join("secrets"));
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::create_dir_all(&secrets).unwrap();
    publish_secret(&secrets, 1, &[("svcA", "tokA")]);
    let requests = Arc::new(Mutex::new(0_usize));
    let counted = Arc::clone(&requests);
    let server = Server::start(move |_| {
        *counted.lock().unwrap() += 1;
        Reply::status(200)
    });
    let lines: String = (1..=5)
        .map(|i| event("svcA", &format!("a{i}")) + &event("svcB", &format!("b{i}")))
        .collect();
    std::fs::write(logs.join("events.log"), lines).unwrap();
    // An hour's flush_interval: no chunk is sealed, so none is attempted, in this test.
    let conf = write_config(
        dir.path(),
        &server.url(),
        "",
        "    flush_interval 1h\n    memory_limit_size 8m\n",
    );
    let mut daemon = binary()
        .args(["run", "--metrics-listen", "127.0.0.1:0", "-c"])
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let chunks = dir.path().join("buffer/chunks");
    let on_disk = |service: &str| {
        std::fs::read_dir(&chunks).into_iter().flatten().any(|e| {
            let path = e.unwrap().path();
            path.extension().is_some_and(|x| x == "chunk")
                && std::fs::read(&path).is_ok_and(|c| {
                    String::from_utf8_lossy(&c).contains("\"b5\"")
                        && String::from_utf8_lossy(&c).contains(service)
                })
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !on_disk("svcB") && Instant::now() < deadline {
        std::thread::park_timeout(Duration::from_millis(50));
    }
    assert!(on_disk("svcB"), "svcB's events are in a chunk file");
    assert_eq!(*requests.lock().unwrap(), 0, "before any attempt");
    let svc_a_on_disk = std::fs::read_dir(&chunks).unwrap().any(|e| {
        std::fs::read(e.unwrap().path())
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains("\"a5\""))
    });
    assert!(
        !svc_a_on_disk,
        "svcA's chunk, which can be sent, is held in memory"
    );
    assert_eq!(crate::support::terminate(&mut daemon), Some(0));
}
