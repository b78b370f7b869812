//! Operations, with the real binary: /readyz before and after start-up, /metrics moving
//! while events flow, SIGHUP reloads (a new path; a broken file kept out), SIGTERM in the
//! middle of a load.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use at_forwarder::tail::PositionStore;

use crate::http_server::{Reply, Server};
use crate::support::{at_config, binary, terminate};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn event(id: &str) -> String {
    format!(
        r#"{{"meta":{{"serviceProviderName":"svc","userAccountIds":["a"]}},"payload":{{"id":"{id}","action":"svc.thing.create","outcome":"success","initiator":{{"id":"u","typeURI":"t"}},"target":{{"id":"t","typeURI":"svc/thing"}},"eventTime":"2026-11-22T05:00:00Z"}}}}"#
    ) + "\n"
}

fn append(path: &Path, text: &str) {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
}

/// Polls `get(url)` until `done` holds on (status, body), or 30 s.
async fn poll_until(url: &str, done: impl Fn(u16, &str) -> bool) -> (u16, String) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = (0, String::new());
    while Instant::now() < deadline {
        if let Ok(r) = client.get(url).send().await {
            last = (r.status().as_u16(), r.text().await.unwrap_or_default());
            if done(last.0, &last.1) {
                return last;
            }
        }
        tokio::task::yield_now().await;
        std::thread::park_timeout(Duration::from_millis(20));
    }
    panic!("{url}: condition not met; last answer {last:?}");
}

fn metric(body: &str, name: &str) -> u64 {
    body.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

fn counting_server() -> (Server, Arc<Mutex<Vec<String>>>) {
    let ids: Arc<Mutex<Vec<String>>> = Arc::default();
    let rec = Arc::clone(&ids);
    let server = Server::start(move |req| {
        let events: Vec<serde_json::Value> = serde_json::from_slice(&req.body).unwrap_or_default();
        rec.lock().unwrap().extend(
            events
                .iter()
                .map(|e| e["payload"]["id"].as_str().unwrap_or("").to_string()),
        );
        Reply::status(200)
    });
    (server, ids)
}

fn start(conf: &Path, port: u16) -> Child {
    binary()
        .args([
            "--log-format",
            "json",
            "run",
            "--metrics-listen",
            &format!("127.0.0.1:{port}"),
            "-c",
        ])
        .arg(conf)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_waits_for_start_up_and_metrics_move_with_events() {
    let dir = tempfile::tempdir().unwrap();
    let (server, ids) = counting_server();
    let conf = at_config(dir.path(), &server.url(), "");
    // A previous instance still holds the positions: start-up waits, and is not ready.
    let held = PositionStore::open(&PositionStore::dir_for(&dir.path().join("at.pos"))).unwrap();
    let port = free_port();
    let mut daemon = start(&conf, port);
    let base = format!("http://127.0.0.1:{port}");
    let (status, _) = poll_until(&format!("{base}/readyz"), |s, _| s != 0).await;
    assert_eq!(
        status, 503,
        "not ready while the positions cannot be loaded"
    );
    assert_eq!(
        poll_until(&format!("{base}/healthz"), |s, _| s == 200)
            .await
            .1,
        "ok"
    );
    drop(held);
    poll_until(&format!("{base}/readyz"), |s, _| s == 200).await;

    append(
        &dir.path().join("logs/a.log"),
        &(0..50).map(|i| event(&format!("e{i}"))).collect::<String>(),
    );
    let (_, body) = poll_until(&format!("{base}/metrics"), |_, b| {
        metric(b, "at_forwarder_requests_total{code=\"200\"}") >= 1
    })
    .await;
    assert!(
        metric(&body, "at_forwarder_read_lines_total") >= 50,
        "{body}"
    );
    assert!(
        metric(&body, "at_forwarder_events_emitted_total") >= 50,
        "{body}"
    );
    assert_eq!(metric(&body, "at_forwarder_files_tracked"), 1, "{body}");
    assert!(
        body.contains("at_forwarder_file_lag_bytes{path=")
            && body.contains("at_forwarder_buffer_bytes{output=")
            && body.contains("at_forwarder_oldest_undelivered_age_seconds"),
        "{body}"
    );
    append(&dir.path().join("logs/a.log"), "not json\n");
    let (_, body) = poll_until(&format!("{base}/metrics"), |_, b| {
        metric(
            b,
            "at_forwarder_dead_letters_total{reason=\"invalid_json\"}",
        ) == 1
    })
    .await;
    assert_eq!(
        metric(
            &body,
            "at_forwarder_events_invalid_total{reason=\"invalid_json\"}"
        ),
        1
    );
    assert_eq!(terminate(&mut daemon), Some(0));
    assert_eq!(ids.lock().unwrap().iter().collect::<HashSet<_>>().len(), 50);
    // An alert on a metric that is not exported would never fire.
    let exported: HashSet<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next())
        .collect();
    for name in alert_metrics() {
        assert!(
            exported.contains(name.as_str()),
            "the chart's alerts read {name}, which /metrics does not have:\n{body}"
        );
    }
}

/// The metric names the Helm chart's PrometheusRule reads (PromQL syntax is checked by
/// deploy/validate_crds.py).
fn alert_metrics() -> Vec<String> {
    let rules = std::fs::read_to_string(
        crate::support::repo_root().join("deploy/helm/at-forwarder/templates/prometheusrule.yaml"),
    )
    .unwrap();
    let mut names: Vec<String> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("expr: "))
        .flat_map(|expr| {
            expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("at_forwarder_"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    names.sort();
    names.dedup();
    assert!(names.len() >= 8, "{names:?}");
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_a_new_path_without_losing_or_repeating_and_refuses_a_broken_file() {
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    std::fs::create_dir_all(&one).unwrap();
    std::fs::create_dir_all(&two).unwrap();
    let conf = dir.path().join("at.conf");
    let write_conf = |paths: &str| {
        std::fs::write(&conf, format!("<source>\n  @type tail\n  path {paths}\n  pos_file {}/at.pos\n  tag at.*\n  format json\n  read_from_head true\n</source>\n<match at.**>\n  @type stdout\n</match>\n", dir.path().display())).unwrap()
    };
    write_conf(&format!("{}/*.log", one.display()));
    append(
        &one.join("a.log"),
        &(1..=3)
            .map(|i| event(&format!("one-{i}")))
            .collect::<String>(),
    );
    let port = free_port();
    let mut daemon = start(&conf, port);
    let stdout = BufReader::new(daemon.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        stdout
            .lines()
            .map_while(Result::ok)
            .for_each(|l| drop(tx.send(l)))
    });
    let mut seen: Vec<String> = Vec::new();
    let mut read_until = |id: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !seen.iter().any(|l| l.contains(&format!("\"{id}\""))) {
            let left = deadline.saturating_duration_since(Instant::now());
            seen.push(
                rx.recv_timeout(left)
                    .unwrap_or_else(|_| panic!("{id} never arrived; saw {seen:?}")),
            );
        }
    };
    read_until("one-3");
    let metrics = format!("http://127.0.0.1:{port}/metrics");

    write_conf(&format!(
        "{0}/*.log, {1}/*.log",
        one.display(),
        two.display()
    ));
    let pid = nix::unistd::Pid::from_raw(i32::try_from(daemon.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    poll_until(&metrics, |_, b| {
        metric(b, "at_forwarder_config_reloads_total") >= 1
    })
    .await;
    append(&two.join("b.log"), &event("two-1"));
    append(&one.join("a.log"), &event("one-4"));
    read_until("two-1");
    read_until("one-4");

    // A broken file is refused; the running pipeline goes on.
    std::fs::write(&conf, "<source>\n  @type tail\n").unwrap();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    poll_until(&metrics, |_, b| {
        metric(b, "at_forwarder_config_reload_failures_total") >= 1
    })
    .await;
    append(&one.join("a.log"), &event("one-5"));
    read_until("one-5");
    assert_eq!(terminate(&mut daemon), Some(0));
    let ids: Vec<&String> = seen.iter().collect();
    let unique: HashSet<&&String> = ids.iter().collect();
    assert_eq!(
        unique.len(),
        ids.len(),
        "a line was repeated across the reload: {seen:?}"
    );
    assert_eq!(ids.len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_load_flushes_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let (server, ids) = counting_server();
    let conf = at_config(dir.path(), &server.url(), "");
    let n = 20_000;
    append(
        &dir.path().join("logs/a.log"),
        &(0..n).map(|i| event(&format!("m{i}"))).collect::<String>(),
    );
    let port = free_port();
    let mut daemon = start(&conf, port);
    poll_until(&format!("http://127.0.0.1:{port}/readyz"), |s, _| s == 200).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while ids.lock().unwrap().len() < 1000 && Instant::now() < deadline {
        std::thread::park_timeout(Duration::from_millis(10));
    }
    assert_eq!(
        terminate(&mut daemon),
        Some(0),
        "a clean stop in the middle of the load"
    );
    let (code, listing, _) =
        crate::support::run(binary().args(["buffer", "-c"]).arg(&conf).arg("list"));
    assert_eq!(code, 0);
    assert!(
        listing.contains(" 0 chunk(s)"),
        "flush_at_shutdown sent everything read: {listing}"
    );
    // What was not read yet is read after the next start: nothing is lost.
    let port = free_port();
    let mut daemon = start(&conf, port);
    poll_until(&format!("http://127.0.0.1:{port}/readyz"), |s, _| s == 200).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while ids.lock().unwrap().iter().collect::<HashSet<_>>().len() < n && Instant::now() < deadline
    {
        std::thread::park_timeout(Duration::from_millis(20));
    }
    assert_eq!(terminate(&mut daemon), Some(0));
    assert_eq!(ids.lock().unwrap().iter().collect::<HashSet<_>>().len(), n);
}

/// A backlog larger than one pass reads (2 MiB) is sent whole without waiting for
/// `flush_interval`, here an hour; events written one at a time afterwards wait for it
/// (their chunk stays open) until the stop flushes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_end_of_a_backlog_goes_out_at_once_and_a_trickle_waits_for_flush_interval() {
    let dir = tempfile::tempdir().unwrap();
    let (server, ids) = counting_server();
    let conf = at_config(dir.path(), &server.url(), "");
    let text = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(
        &conf,
        text.replace("flush_interval 1s", "flush_interval 1h"),
    )
    .unwrap();
    let n = 12_000; // ~290 bytes each: 3.4 MB in two files
    for file in ["a", "b"] {
        append(
            &dir.path().join(format!("logs/{file}.log")),
            &(0..n / 2)
                .map(|i| event(&format!("{file}{i}")))
                .collect::<String>(),
        );
    }
    let port = free_port();
    let mut daemon = start(&conf, port);
    let metrics = format!("http://127.0.0.1:{port}/metrics");
    let distinct = || ids.lock().unwrap().iter().collect::<HashSet<_>>().len();
    poll_until(&metrics, |_, _| distinct() == n).await;
    append(&dir.path().join("logs/a.log"), &event("late"));
    let open_with_late = |body: &str| {
        metric(body, "at_forwarder_events_emitted_total") == n as u64 + 1
            && body
                .lines()
                .any(|l| l.contains("state=\"open\"") && l.ends_with(" 1"))
    };
    poll_until(&metrics, |_, b| open_with_late(b)).await;
    assert!(
        !ids.lock().unwrap().iter().any(|id| id == "late"),
        "a single new event waits in its open chunk"
    );
    assert_eq!(terminate(&mut daemon), Some(0));
    assert!(
        ids.lock().unwrap().iter().any(|id| id == "late"),
        "flushed at the stop"
    );
    assert_eq!(distinct(), n + 1);
}

/// Each series of a scrape, with its labels (a name shown twice is a broken exposition).
fn series(body: &str) -> Vec<&str> {
    let mut names: Vec<&str> = (body.lines())
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' ').map(|(name, _)| name))
        .collect();
    names.sort_unstable();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_reloads_each_series_is_shown_once_and_counters_keep_counting() {
    let dir = tempfile::tempdir().unwrap();
    let (server, ids) = counting_server();
    let conf = at_config(dir.path(), &server.url(), "");
    let log = dir.path().join("logs/a.log");
    let port = free_port();
    let mut daemon = start(&conf, port);
    let metrics = format!("http://127.0.0.1:{port}/metrics");
    let delivered = "at_forwarder_chunks_delivered_total{output=\"0:at.**\"}";
    let mut sent = 0;
    let mut send = |n: usize| {
        let text: String = (sent..sent + n).map(|i| event(&format!("e{i}"))).collect();
        append(&log, &text);
        sent += n;
    };
    send(10);
    let (_, body) = poll_until(&metrics, |_, b| metric(b, delivered) >= 1).await;
    let first = series(&body);
    let mut last_delivered = metric(&body, delivered);
    let text = std::fs::read_to_string(&conf).unwrap();
    for reload in 1..=3u64 {
        // A change that takes effect (the reload restarts the pipeline), then more events.
        let changed = text.replace(
            "read_from_head true",
            &format!("read_from_head true\n  rotate_wait {}", 5 + reload),
        );
        std::fs::write(&conf, changed).unwrap();
        let pid = nix::unistd::Pid::from_raw(i32::try_from(daemon.id()).unwrap());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
        poll_until(&metrics, |_, b| {
            metric(b, "at_forwarder_config_reloads_total") >= reload
        })
        .await;
        send(10);
        let (_, body) = poll_until(&metrics, |_, b| metric(b, delivered) > last_delivered).await;
        last_delivered = metric(&body, delivered);
    }
    // And a SIGHUP with nothing changed.
    let pid = nix::unistd::Pid::from_raw(i32::try_from(daemon.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    send(10);
    // Per service, counted across the four pipeline instances.
    let per_service =
        "at_forwarder_service_events_delivered_total{output=\"0:at.**\",service=\"svc\"}";
    let (_, body) = poll_until(&metrics, |_, b| {
        metric(b, "at_forwarder_read_lines_total") >= 50 && metric(b, per_service) >= 50
    })
    .await;
    assert!(
        body.contains(
            "at_forwarder_service_events_waiting{output=\"0:at.**\",service=\"svc\"} 0\n"
        ),
        "{body}"
    );
    let after = series(&body);
    let mut unique = after.clone();
    unique.dedup();
    assert_eq!(after, unique, "a series shown twice:\n{body}");
    assert_eq!(first, after, "the same series as before the reloads");
    assert_eq!(
        body.matches("# TYPE at_forwarder_buffer_bytes ").count(),
        1,
        "{body}"
    );
    assert!(
        metric(&body, delivered) >= 4,
        "counted across reloads:\n{body}"
    );
    assert_eq!(terminate(&mut daemon), Some(0));
    let got: HashSet<String> = ids.lock().unwrap().iter().cloned().collect();
    assert_eq!(got.len(), 50);
}
