//! Events the seeds allow reach the local receiver through the real binary: one with the
//! service copy only (seed 000, "send events to the red tile only"), and one whose
//! `eventTime` has no UTC offset (seed 003's form), read as UTC with a WARN.

use std::time::{Duration, Instant};

use at_forwarder::receiver::{self, ReceiverOptions};
use tokio_util::sync::CancellationToken;

use crate::daemon::{append, start};
use crate::support::{at_config, binary, run};

const SECRET: &str =
    r#"{"services":[{"service_name":"svc-a","auth_token_value":"tok-a","project_id":"proj-a"}]}"#;

async fn count(base: &str, scope: &str) -> u64 {
    let url = format!("{base}/v3/events?start=2026-11-01&end=2026-11-30{scope}");
    let Ok(r) = reqwest::Client::new()
        .get(url)
        .header("X-Auth-Token", "bearer tok-a")
        .header("X-Auth-Project-Id", "proj-a")
        .send()
        .await
    else {
        return 0;
    };
    let body: serde_json::Value =
        serde_json::from_str(&r.text().await.unwrap_or_default()).unwrap_or_default();
    body["days"]
        .as_array()
        .map_or(0, |d| d.iter().filter_map(|d| d["count"].as_u64()).sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_copy_only_event_and_a_time_without_offset_reach_the_receiver() {
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let opts = ReceiverOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        secrets_dir: dir.path().join("receiver-secrets"),
        data_dir: dir.path().join("data"),
        retention_days: None,
        retention_every: Duration::from_secs(3600),
        fail_rate: 0.0,
        latency: Duration::ZERO,
        status: None,
        sink: false,
        sink_latency: false,
        cloud_logs_keys: None,
        cloud_logs_token_lifetime: Duration::from_secs(3600),
    };
    std::fs::create_dir_all(&opts.secrets_dir).unwrap();
    std::fs::write(opts.secrets_dir.join("127.0.0.1"), SECRET).unwrap();
    let (r, _) = receiver::start(opts, stop.clone()).await.unwrap();
    let base = format!("http://{}", r.addr);
    let conf = at_config(dir.path(), &base, "");
    std::fs::write(dir.path().join("secrets/127.0.0.1"), SECRET).unwrap();
    let common = r#""action":"svc-a.thing.create","outcome":"success","initiator":{"id":"u","typeURI":"t"},"target":{"id":"t","typeURI":"svc-a/thing"}"#;
    append(
        &dir.path().join("logs/a.log"),
        &format!(
            "{{\"meta\":{{\"serviceProviderName\":\"svc-a\"}},\"payload\":{{\"id\":\"red-only\",{common},\"eventTime\":\"2026-11-20T01:00:00Z\"}}}}\n\
             {{\"meta\":{{\"serviceProviderName\":\"svc-a\",\"userAccountIds\":[\"acct-1\"]}},\"payload\":{{\"id\":\"no-offset\",{common},\"eventTime\":\"2026-11-20T10:55:00\"}}}}\n"
        ),
    );
    let daemon = start(&conf);
    let warned = daemon.log_line("eventTime without a UTC offset", Duration::from_secs(30));
    assert!(warned.is_some_and(|l| l.contains("WARN") && l.contains("a.log")));
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(&base, "").await < 2 {
        assert!(Instant::now() < deadline, "both service copies stored");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Only the event with an account has a user copy; nothing was dead-lettered.
    assert_eq!(count(&base, "&scope=account:acct-1").await, 1);
    assert_eq!(daemon.stop(), 0);
    let (_, listed, _) = run(binary().args(["dead-letters", "-c"]).arg(&conf).arg("list"));
    assert!(listed.contains("0 dead letter(s)"), "{listed}");
    stop.cancel();
}
