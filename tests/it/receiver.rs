//! The local receiver, over real HTTP: authentication, cross-service refusal, idempotent
//! ingestion, both copies, the read side (counts, download, delete, live stream),
//! retention and fault injection.

use std::path::Path;
use std::time::{Duration, Instant};

use at_forwarder::receiver::{self, ReceiverOptions};
use tokio_util::sync::CancellationToken;

const SECRET: &str = r#"{"services":[{"service_name":"svc-a","auth_token_value":"tok-a","project_id":"proj-a"},{"service_name":"svc-b","auth_token_value":"tok-b","project_id":"proj-b"}]}"#;

fn options(dir: &Path) -> ReceiverOptions {
    std::fs::create_dir_all(dir.join("secrets")).unwrap();
    std::fs::write(dir.join("secrets/127.0.0.1"), SECRET).unwrap();
    ReceiverOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        secrets_dir: dir.join("secrets"),
        data_dir: dir.join("data"),
        retention_days: None,
        retention_every: Duration::from_secs(3600),
        fail_rate: 0.0,
        latency: Duration::ZERO,
        status: None,
        sink: false,
        sink_latency: false,
        cloud_logs_keys: None,
        cloud_logs_token_lifetime: Duration::from_secs(3600),
    }
}

fn event(service: &str, id: &str, time: &str, account: &str) -> serde_json::Value {
    serde_json::json!({"meta":{"serviceProviderName":service,"userAccountIds":[account]},"payload":{"id":id,"action":"x.y.create","eventTime":time}})
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    fn req(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        project: &str,
    ) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .header("X-Auth-Token", format!("bearer {token}"))
            .header("X-Auth-Project-Id", project)
    }

    async fn post(
        &self,
        token: &str,
        project: &str,
        key: &str,
        events: &[serde_json::Value],
    ) -> (u16, String) {
        let r = self
            .req(reqwest::Method::POST, "/v3/events", token, project)
            .header("Idempotency-Key", key)
            .body(serde_json::to_vec(&events).unwrap())
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let r = self
            .req(reqwest::Method::GET, path, "tok-a", "proj-a")
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }
}

async fn start(opts: ReceiverOptions) -> (Client, CancellationToken) {
    let stop = CancellationToken::new();
    let (r, _) = receiver::start(opts, stop.clone()).await.unwrap();
    (
        Client {
            http: reqwest::Client::new(),
            base: format!("http://{}", r.addr),
        },
        stop,
    )
}

#[tokio::test]
async fn authentication_and_cross_service_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let (c, _stop) = start(options(dir.path())).await;
    let e = [event("svc-a", "1", "2026-11-20T00:00:00Z", "acct")];
    let (status, body) = c.post("wrong", "proj-a", "k1", &e).await;
    assert_eq!(status, 401);
    assert!(body.contains("Unauthorized"), "{body}");
    assert_eq!(
        c.post("tok-a", "proj-b", "k1", &e).await.0,
        401,
        "a token with another service's project"
    );
    let (status, body) = c.post("tok-b", "proj-b", "k1", &e).await;
    assert_eq!(status, 403);
    assert!(body.contains("svc-a"), "{body}");
    assert_eq!(c.post("tok-a", "proj-a", "k1", &e).await.0, 200);
}

#[tokio::test]
async fn ingestion_is_idempotent_and_stores_both_copies() {
    let dir = tempfile::tempdir().unwrap();
    let (c, _stop) = start(options(dir.path())).await;
    let batch = [
        event("svc-a", "e1", "2026-11-20T00:00:00Z", "acct-1"),
        event("svc-a", "e2", "2026-11-20T10:00:00Z", "acct-1"),
    ];
    let (status, body) = c.post("tok-a", "proj-a", "chunk-1", &batch).await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap(),
        serde_json::json!({"received":2,"new":4,"duplicates":0,"replay":false})
    );
    let (_, body) = c.post("tok-a", "proj-a", "chunk-1", &batch).await;
    assert!(
        body.contains("\"replay\":true") && body.contains("\"new\":4"),
        "the first answer again: {body}"
    );
    let (_, body) = c.post("tok-a", "proj-a", "chunk-2", &batch).await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["duplicates"],
        4,
        "same ids under another key: {body}"
    );
    let (_, project) = c.get("/v3/events?start=2026-11-01&end=2026-11-30").await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&project).unwrap()["days"],
        serde_json::json!([{"date":"2026-11-20","count":2}])
    );
    let (status, account) = c
        .get("/v3/events?start=2026-11-01&end=2026-11-30&scope=account:acct-1")
        .await;
    assert_eq!(status, 200);
    assert!(account.contains("\"count\":2"), "the user copy: {account}");
    assert_eq!(c.get("/v3/events?scope=account:someone-else").await.0, 403);
    // saveServiceCopy false: only the user copy.
    let mut private = event("svc-a", "e3", "2026-11-21T00:00:00Z", "acct-1");
    private["saveServiceCopy"] = serde_json::json!(false);
    let (_, body) = c.post("tok-a", "proj-a", "chunk-3", &[private]).await;
    assert!(body.contains("\"new\":1"), "{body}");
}

#[tokio::test]
async fn download_and_delete_by_date_range() {
    let dir = tempfile::tempdir().unwrap();
    let (c, _stop) = start(options(dir.path())).await;
    let batch = [
        event("svc-a", "d1", "2026-11-20T23:59:59Z", "x"),
        event("svc-a", "d2", "2026-11-21T00:00:00+01:00", "x"),
        event("svc-a", "d3", "2026-11-22T00:00:00Z", "x"),
    ];
    c.post("tok-a", "proj-a", "k", &batch).await;
    let (_, ndjson) = c
        .get("/v3/events/download?start=2026-11-20&end=2026-11-20")
        .await;
    let ids: Vec<String> = ndjson
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["payload"]["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(ids, ["d1", "d2"], "d2 is 2026-11-20 in UTC");
    let gz = c
        .req(
            reqwest::Method::GET,
            "/v3/events/download?start=2026-11-01&end=2026-11-30&gzip=true",
            "tok-a",
            "proj-a",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(gz.headers()["content-encoding"], "gzip");
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::GzDecoder::new(&gz.bytes().await.unwrap()[..]),
        &mut text,
    )
    .unwrap();
    assert_eq!(text.lines().count(), 3);
    let r = c
        .req(
            reqwest::Method::DELETE,
            "/v3/events?start=2026-11-20&end=2026-11-21",
            "tok-a",
            "proj-a",
        )
        .send()
        .await
        .unwrap();
    assert!(r.text().await.unwrap().contains("\"deleted\":2"));
    let (_, counts) = c.get("/v3/events?start=2026-11-01&end=2026-11-30").await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&counts).unwrap()["days"],
        serde_json::json!([{"date":"2026-11-22","count":1}])
    );
    assert_eq!(c.get("/v3/events?start=yesterday").await.0, 400);
}

#[tokio::test]
async fn the_stream_delivers_events_as_they_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let (c, _stop) = start(options(dir.path())).await;
    let mut stream = c
        .req(reqwest::Method::GET, "/v3/events/stream", "tok-a", "proj-a")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    c.post(
        "tok-a",
        "proj-a",
        "s1",
        &[event("svc-a", "live-1", "2026-11-22T00:00:00Z", "x")],
    )
    .await;
    let chunk = tokio::time::timeout(Duration::from_secs(10), stream.chunk())
        .await
        .expect("an event within 10 s")
        .unwrap()
        .unwrap();
    let line: serde_json::Value =
        serde_json::from_slice(chunk.strip_suffix(b"\n").unwrap()).unwrap();
    assert_eq!(line["payload"]["id"], "live-1");
}

#[tokio::test]
async fn retention_deletes_old_days_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    opts.retention_days = Some(5);
    opts.retention_every = Duration::from_millis(50);
    let (c, _stop) = start(opts).await;
    c.post(
        "tok-a",
        "proj-a",
        "old",
        &[
            event("svc-a", "old", "2020-01-01T00:00:00Z", "x"),
            event(
                "svc-a",
                "new",
                &at_forwarder::event::time::Timestamp::from(std::time::SystemTime::now())
                    .to_at_format(),
                "x",
            ),
        ],
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, counts) = c.get("/v3/events").await;
        let days = serde_json::from_str::<serde_json::Value>(&counts).unwrap()["days"]
            .as_array()
            .unwrap()
            .len();
        if days == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "retention never ran: {counts}");
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn injected_failures_answer_with_the_chosen_status() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    opts.status = Some((503, Duration::from_secs(3600)));
    let (c, _stop) = start(opts).await;
    let r = c
        .req(reqwest::Method::POST, "/v3/events", "tok-a", "proj-a")
        .body(serde_json::to_vec(&[event("svc-a", "1", "2026-11-22T00:00:00Z", "x")]).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let mut opts = options(&dir.path().join("rate"));
    opts.fail_rate = 1.0;
    let (c, _stop) = start(opts).await;
    assert_eq!(
        c.post(
            "tok-a",
            "proj-a",
            "k",
            &[event("svc-a", "1", "2026-11-22T00:00:00Z", "x")]
        )
        .await
        .0,
        503
    );
}

/// Sink mode counts by id and, like the store, does not count a replayed Idempotency-Key.
#[tokio::test]
async fn sink_counts_ids_and_skips_replays() {
    let dir = tempfile::tempdir().unwrap();
    let (client, stop) = start(ReceiverOptions {
        sink: true,
        ..options(dir.path())
    })
    .await;
    let time = "2026-11-22T10:00:00.000+0000";
    let batch = [
        event("svc-a", "e1", time, "acc"),
        event("svc-a", "e2", time, "acc"),
    ];
    assert_eq!(client.post("tok-a", "proj-a", "k1", &batch).await.0, 200);
    assert_eq!(client.post("tok-a", "proj-a", "k1", &batch).await.0, 200);
    let again = [event("svc-a", "e2", time, "acc")];
    assert_eq!(client.post("tok-a", "proj-a", "k2", &again).await.0, 200);
    assert_eq!(client.post("bad", "proj-a", "k3", &again).await.0, 401);
    let totals: serde_json::Value = serde_json::from_str(&client.get("/sink").await.1).unwrap();
    assert_eq!(
        totals,
        serde_json::json!({"events": 3, "distinct": 2, "requests": 3, "replays": 1})
    );
    let ids: serde_json::Value = serde_json::from_str(&client.get("/sink/ids").await.1).unwrap();
    assert_eq!(ids, serde_json::json!({"e1": 1, "e2": 2}));
    stop.cancel();
}

/// Issue 20, row 12: a token reads and deletes in an account only its own service's
/// events, though both services wrote user copies there.
#[tokio::test]
async fn an_account_shared_by_two_services_shows_each_only_its_own_events() {
    let dir = tempfile::tempdir().unwrap();
    let (c, _stop) = start(options(dir.path())).await;
    let day = "2026-11-20T00:00:00Z";
    assert_eq!(
        c.post(
            "tok-a",
            "proj-a",
            "a1",
            &[event("svc-a", "a-1", day, "shared")]
        )
        .await
        .0,
        200
    );
    assert_eq!(
        c.post(
            "tok-b",
            "proj-b",
            "b1",
            &[event("svc-b", "b-1", day, "shared")]
        )
        .await
        .0,
        200
    );
    let path = "/v3/events/download?scope=account:shared&start=2026-11-20&end=2026-11-20";
    let (_, body) = c.get(path).await;
    assert!(body.contains("a-1") && !body.contains("b-1"), "{body}");
    let deleted = c
        .req(
            reqwest::Method::DELETE,
            "/v3/events?scope=account:shared&start=2026-11-20&end=2026-11-20",
            "tok-a",
            "proj-a",
        )
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(deleted.contains("\"deleted\":1"), "{deleted}");
    let b_view = c
        .req(reqwest::Method::GET, path, "tok-b", "proj-b")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(b_view.contains("b-1"), "svc-b's event survived: {b_view}");
}

/// Issue 20, row 12: the body is read only after authentication (a 401 comes back while
/// a large body is still unsent), a gzip bomb is refused with 413, and `/sink/*` does not
/// exist without `--sink`.
#[tokio::test]
async fn bodies_are_read_after_authentication_and_bounded_once_gunzipped() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let (r, _) = receiver::start(options(dir.path()), stop.clone())
        .await
        .unwrap();
    let addr = r.addr;
    let unauthenticated = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        // Announces 50 MB, sends 1 KiB, then waits for the answer.
        write!(s, "POST /v3/events HTTP/1.1\r\nHost: x\r\nX-Auth-Token: bearer nope\r\nX-Auth-Project-Id: p\r\nContent-Length: 50000000\r\n\r\n").unwrap();
        s.write_all(&[b'[' ; 1024]).unwrap();
        let mut answer = [0u8; 12];
        s.read_exact(&mut answer).unwrap();
        String::from_utf8_lossy(&answer).into_owned()
    })
    .await
    .unwrap();
    assert_eq!(unauthenticated, "HTTP/1.1 401");

    // 100 MB of zeros gzip to ~100 KB.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&vec![b' '; 100 << 20]).unwrap();
    let bomb = gz.finish().unwrap();
    let c = Client {
        http: reqwest::Client::new(),
        base: format!("http://{addr}"),
    };
    let status = c
        .req(reqwest::Method::POST, "/v3/events", "tok-a", "proj-a")
        .header("Content-Encoding", "gzip")
        .body(bomb)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(status, 413);
    assert_eq!(c.get("/sink/ids").await.0, 404);
    stop.cancel();
}

/// The receiver as IBM Cloud Logs: tokens only for known API keys, and refused once
/// expired (a lifetime of 0 s expires them at once).
#[tokio::test]
async fn cloud_logs_tokens_are_issued_for_known_keys_and_expire() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("keys"), "key-1\n").unwrap();
    // A data directory per receiver: the first may still hold its store's lock.
    let start_with = |lifetime: Duration| ReceiverOptions {
        cloud_logs_keys: Some(dir.path().join("keys")),
        cloud_logs_token_lifetime: lifetime,
        data_dir: dir.path().join(format!("data-{}", lifetime.as_secs())),
        ..options(dir.path())
    };
    let http = reqwest::Client::new();
    for (lifetime, want) in [(Duration::from_secs(60), 200), (Duration::ZERO, 401)] {
        let stop = CancellationToken::new();
        let (r, _) = receiver::start(start_with(lifetime), stop.clone())
            .await
            .unwrap();
        let base = format!("http://{}", r.addr);
        let token = |key: &'static str| {
            http.post(format!("{base}/identity/token"))
                .body(format!(
                    "grant_type=urn%3Aibm%3Aparams%3Aoauth%3Agrant-type%3Aapikey&apikey={key}"
                ))
                .send()
        };
        assert_eq!(token("unknown").await.unwrap().status().as_u16(), 400);
        let answer: serde_json::Value =
            serde_json::from_str(&token("key-1").await.unwrap().text().await.unwrap()).unwrap();
        let access = answer["access_token"].as_str().unwrap().to_string();
        let entries = r#"[{"applicationName":"svc","subsystemName":"s","severity":3,"timestamp":1,"text":{"payload":{"id":"e1"}}}]"#;
        let status = http
            .post(format!("{base}/logs/v1/singles"))
            .header("Authorization", format!("Bearer {access}"))
            .body(entries)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        assert_eq!(status, want, "lifetime {lifetime:?}");
        stop.cancel();
    }
}
