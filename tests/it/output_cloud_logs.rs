//! `@type ibm_cloud_logs` with the real binary against a local server that plays both IAM
//! (`/identity/token`, tokens for a known API key) and the Cloud Logs ingress
//! (`/logs/v1/singles`): entries as the API takes them, and a token revoked mid-run
//! replaced without losing a batch.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::daemon::{append, start};
use crate::http_server::{Reply, Server};

fn event(i: usize, severity: &str) -> String {
    format!(
        r#"{{"meta":{{"serviceProviderName":"svc","userAccountIds":["a"]}},"payload":{{"id":"e{i}","action":"svc.thing.create","outcome":"success","severity":"{severity}","initiator":{{"id":"u","typeURI":"t"}},"target":{{"id":"t","typeURI":"svc/thing"}},"eventTime":"2026-01-01T00:00:0{}Z"}}}}"#,
        i % 10
    )
}

#[derive(Default)]
struct World {
    /// Valid tokens.
    tokens: HashSet<String>,
    issued: usize,
    entries: Vec<serde_json::Value>,
    refused: usize,
}

#[test]
fn entries_arrive_and_a_revoked_token_is_replaced_without_loss() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("apikey"), "  key-1\n").unwrap();
    let world: Arc<Mutex<World>> = Arc::default();
    let w = Arc::clone(&world);
    let server = Server::start(move |req| {
        let mut w = w.lock().unwrap();
        match req.path.as_str() {
            "/identity/token" => {
                let form: HashMap<String, String> = url::form_urlencoded::parse(&req.body)
                    .into_owned()
                    .collect();
                if form.get("grant_type").map(String::as_str)
                    != Some("urn:ibm:params:oauth:grant-type:apikey")
                    || form.get("apikey").map(String::as_str) != Some("key-1")
                {
                    return Reply::status(400);
                }
                w.issued += 1;
                let token = format!("tok-{}", w.issued);
                w.tokens.insert(token.clone());
                let mut r = Reply::status(200);
                r.body = format!(
                    r#"{{"access_token":"{token}","token_type":"Bearer","expires_in":3600,"expiration":0}}"#
                );
                r
            }
            "/logs/v1/singles" => {
                let token = req
                    .header("Authorization")
                    .unwrap_or("")
                    .trim_start_matches("Bearer ");
                if !w.tokens.contains(token) {
                    w.refused += 1;
                    return Reply::status(401);
                }
                let batch: Vec<serde_json::Value> = serde_json::from_slice(&req.body).unwrap();
                w.entries.extend(batch);
                // Revoked after its first use: the next batch must bring a new one.
                w.tokens.remove(token);
                Reply::status(200)
            }
            _ => Reply::status(404),
        }
    });
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let conf = dir.path().join("at.conf");
    std::fs::write(
        &conf,
        format!(
            "<source>\n  @type tail\n  path {0}/logs/*.log\n  pos_file {0}/at.pos\n  tag at.*\n  format json\n  read_from_head true\n</source>\n<match at.**>\n  @type ibm_cloud_logs\n  endpoint {1}\n  iam_endpoint {1}\n  api_key_path {0}/apikey\n  subsystem_key $.payload.target.typeURI\n  <buffer>\n    path {0}/buffer\n    flush_interval 1s\n    retry_wait 0.1s\n  </buffer>\n</match>\n",
            dir.path().display(),
            server.url()
        ),
    )
    .unwrap();
    let log = logs.join("a.log");
    append(
        &log,
        &(0..5)
            .map(|i| event(i, "critical") + "\n")
            .collect::<String>(),
    );
    let daemon = start(&conf);
    let deadline = Instant::now() + Duration::from_secs(30);
    while world.lock().unwrap().entries.len() < 5 {
        assert!(Instant::now() < deadline, "first batch");
        std::thread::park_timeout(Duration::from_millis(20));
    }
    // The token was revoked: this batch meets a 401 and goes with a new one.
    append(
        &log,
        &(5..10)
            .map(|i| event(i, "normal") + "\n")
            .collect::<String>(),
    );
    while world.lock().unwrap().entries.len() < 10 {
        assert!(Instant::now() < deadline, "second batch");
        std::thread::park_timeout(Duration::from_millis(20));
    }
    let (code, log) = daemon.stop_with_log();
    assert_eq!(code, 0);
    // Neither the API key nor a token reaches a log line.
    assert!(!log.contains("key-1") && !log.contains("tok-"), "{log}");
    let w = world.lock().unwrap();
    assert!(
        w.refused >= 1 && w.issued >= 2,
        "refused {} issued {}",
        w.refused,
        w.issued
    );
    let ids: HashSet<&str> = w
        .entries
        .iter()
        .map(|e| e["text"]["payload"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 10);
    let first = &w.entries[0];
    assert_eq!(first["applicationName"], "svc");
    assert_eq!(first["subsystemName"], "svc/thing", "from subsystem_key");
    assert_eq!(first["severity"], 6);
    assert_eq!(first["timestamp"], 1_767_225_600_000_i64);
    assert!(first["computerName"]
        .as_str()
        .is_some_and(|c| !c.is_empty()));
    assert!(w.entries.iter().any(|e| e["severity"] == 3));
}

#[test]
fn a_trusted_profile_s_compute_resource_token_is_exchanged_for_an_iam_token() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("sa-token"), "projected-sa-token\n").unwrap();
    let received: Arc<Mutex<usize>> = Arc::default();
    let rec = Arc::clone(&received);
    let server = Server::start(move |req| match req.path.as_str() {
        "/identity/token" => {
            let form: HashMap<String, String> = url::form_urlencoded::parse(&req.body)
                .into_owned()
                .collect();
            let ok = form.get("grant_type").map(String::as_str)
                == Some("urn:ibm:params:oauth:grant-type:cr-token")
                && form.get("cr_token").map(String::as_str) == Some("projected-sa-token")
                && form.get("profile_id").map(String::as_str) == Some("Profile-abc");
            if !ok {
                return Reply::status(400);
            }
            let mut r = Reply::status(200);
            r.body = r#"{"access_token":"profile-token","expires_in":3600}"#.into();
            r
        }
        "/logs/v1/singles" if req.header("Authorization") == Some("Bearer profile-token") => {
            let batch: Vec<serde_json::Value> = serde_json::from_slice(&req.body).unwrap();
            *rec.lock().unwrap() += batch.len();
            Reply::status(200)
        }
        _ => Reply::status(401),
    });
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let conf = dir.path().join("at.conf");
    std::fs::write(
        &conf,
        format!(
            "<source>\n  @type tail\n  path {0}/logs/*.log\n  pos_file {0}/at.pos\n  tag at.*\n  format json\n  read_from_head true\n</source>\n<match at.**>\n  @type ibm_cloud_logs\n  endpoint {1}\n  iam_endpoint {1}\n  profile_id Profile-abc\n  cr_token_path {0}/sa-token\n  <buffer>\n    path {0}/buffer\n    flush_interval 1s\n    retry_wait 0.1s\n  </buffer>\n</match>\n",
            dir.path().display(),
            server.url()
        ),
    )
    .unwrap();
    append(
        &logs.join("a.log"),
        &(0..3)
            .map(|i| event(i, "warning") + "\n")
            .collect::<String>(),
    );
    let daemon = start(&conf);
    let deadline = Instant::now() + Duration::from_secs(30);
    while *received.lock().unwrap() < 3 {
        assert!(
            Instant::now() < deadline,
            "not delivered with the profile's token"
        );
        std::thread::park_timeout(Duration::from_millis(20));
    }
    assert_eq!(daemon.stop(), 0);
}
