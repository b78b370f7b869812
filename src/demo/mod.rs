//! `at-forwarder demo`: the whole path in one process, on a fresh machine, in seconds —
//! services writing events (the generator), at-forwarder tailing them through rotations
//! with the seed's configuration (paths moved into a temporary directory), and a local
//! receiver standing in for Activity Tracker. Ends with a summary: every event written was
//! received, and how many arrived twice.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;

use crate::config::{self, LoadOptions};
use crate::receiver::{self, ReceiverOptions};

pub mod generate;

use generate::{service_name, GenerateOptions};

/// How the demo runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// How long services write events.
    pub duration: Duration,
    /// Events per second.
    pub rate: u64,
    /// Number of services.
    pub services: usize,
    /// Rotate each file after this many lines.
    pub rotate_every: u64,
    /// Also to IBM Cloud Logs, through `@type copy` (the receiver plays it and its IAM).
    pub cloud_logs: bool,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            duration: Duration::from_secs(8),
            rate: 1000,
            services: 3,
            rotate_every: 500,
            cloud_logs: false,
        }
    }
}

/// How it went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoSummary {
    /// Events the services wrote.
    pub written: u64,
    /// Distinct events the receiver stored.
    pub received: u64,
    /// Events the receiver got more than once.
    pub duplicates: u64,
    /// Rotations during the run.
    pub rotations: u64,
    /// With Cloud Logs: distinct events it received, and IAM tokens issued.
    pub cloud_logs: Option<(u64, u64)>,
}

impl DemoSummary {
    /// Events written but never received.
    pub fn lost(&self) -> u64 {
        self.written.saturating_sub(self.received)
    }
}

/// The seed's ConfigMap with its paths moved under `root` and `targetHost` pointing at the
/// local receiver; `flush_interval` is 1 s instead of 10 s so a short demo shows delivery.
fn demo_config(root: &std::path::Path, target: &str) -> String {
    let seed = include_str!("../../examples/logging-activity-tracker.conf");
    seed.replace("/var/log/at/", &format!("{}/at/", root.display()))
        .replace(
            "/mnt/ibm-kube-fluentd-persist/",
            &format!("{}/state/", root.display()),
        )
        .replace(
            "/mnt/activity-tracker/secrets",
            &root.join("secrets").display().to_string(),
        )
        .replace("ACTIVITY_TRACKER_URL", target)
        .replace("ACTIVITY_TRACKER_REGION", "ng")
        .replace("flush_interval 10s", "flush_interval 1s")
        .replace("rotate_wait 43200", "rotate_wait 2")
}

/// `config` with its Activity Tracker `<match>` turned into a `@type copy` whose second
/// store is IBM Cloud Logs at `target`, with the API key in `key_file`.
fn with_cloud_logs(
    config: &str,
    root: &std::path::Path,
    target: &str,
    key_file: &std::path::Path,
) -> String {
    let config = config.replacen(
        "    @type ibmactivitytracker\n",
        "    @type copy\n    <store>\n    @type ibmactivitytracker\n",
        1,
    );
    let store = format!(
        "    </store>\n    <store>\n      @type ibm_cloud_logs\n      endpoint {target}\n      iam_endpoint {target}\n      api_key_path {}\n      <buffer>\n        path {}\n        flush_interval 1s\n        retry_wait 0.2s\n        retry_max_interval 2s\n      </buffer>\n    </store>\n  </match>",
        key_file.display(),
        root.join("state/cloud-logs-buffer").display()
    );
    config.replacen("  </match>", &store, 1)
}

/// Runs the demo, printing progress to standard output.
pub async fn run(opts: DemoOptions) -> Result<DemoSummary> {
    let tmp = tempfile::tempdir().context("creating a temporary directory")?;
    let root = tmp.path();
    for d in ["at", "state", "secrets", "receiver"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    let services: Vec<String> = (0..opts.services)
        .map(|s| format!(r#"{{"service_name":"{}","auth_token_value":"demo-token-{s}-{:x}","project_id":"project-{s}"}}"#, service_name(s), fastrand::u64(..)))
        .collect();
    std::fs::write(
        root.join("secrets/127.0.0.1"),
        format!(r#"{{"services":[{}]}}"#, services.join(",")),
    )?;
    let stop = CancellationToken::new();
    let key_file = root.join("secrets-cloud-logs/apikey");
    if opts.cloud_logs {
        std::fs::create_dir_all(root.join("secrets-cloud-logs"))?;
        std::fs::write(&key_file, format!("demo-api-key-{:x}\n", fastrand::u64(..)))?;
    }
    let receiver_opts = ReceiverOptions {
        listen: "127.0.0.1:0".parse().expect("a literal address"),
        secrets_dir: root.join("secrets"),
        data_dir: root.join("receiver"),
        retention_days: None,
        retention_every: Duration::from_secs(3600),
        fail_rate: 0.0,
        latency: Duration::ZERO,
        status: None,
        sink: false,
        sink_latency: false,
        cloud_logs_keys: opts.cloud_logs.then(|| key_file.clone()),
        // Short, so that tokens are renewed during the run.
        cloud_logs_token_lifetime: Duration::from_secs(3),
    };
    let (receiver, receiver_task) = receiver::start(receiver_opts, stop.clone()).await?;
    let target = format!("http://{}", receiver.addr);
    let mut text = demo_config(root, &target);
    if opts.cloud_logs {
        text = with_cloud_logs(&text, root, &target, &key_file);
    }
    let cloud_received = || {
        receiver
            .cloud_logs
            .as_ref()
            .map_or(u64::MAX, |c| c.counts().1)
    };
    let loaded = config::load_str(
        &text,
        &root.join("logging-activity-tracker.conf"),
        &LoadOptions::default(),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let forwarder_stop = CancellationToken::new();
    let forwarder = tokio::spawn(crate::pipeline::run(
        loaded.config,
        forwarder_stop.clone(),
        Default::default(),
    ));

    println!("at-forwarder demo: {} services write {} events/s for {} s into {}, rotating every {} lines;", opts.services, opts.rate, opts.duration.as_secs(), root.join("at").display(), opts.rotate_every);
    println!("at-forwarder tails them with the seed's configuration and sends them to a local receiver at {}.\n", receiver.addr);
    let written = Arc::new(AtomicU64::new(0));
    let halt = Arc::new(AtomicBool::new(false));
    let gen_opts = GenerateOptions {
        dir: root.join("at"),
        rate: opts.rate,
        services: opts.services,
        pods: 2,
        rotate_every: Some(opts.rotate_every),
        copytruncate: false,
        copytruncate_pods: 0,
        duration: Some(opts.duration),
        count: None,
        wide: false,
    };
    let (w, h) = (Arc::clone(&written), Arc::clone(&halt));
    let generator = std::thread::spawn(move || generate::generate(&gen_opts, &h, &w));

    let progress = Progress::new(root.join("state/fluentd-at-buffer.buf"));
    while !generator.is_finished() {
        progress.show(
            written.load(Ordering::Relaxed),
            receiver.store.distinct_events() as u64,
            false,
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let generated = generator
        .join()
        .map_err(|_| anyhow::anyhow!("the generator panicked"))??;
    // Let the forwarder catch up: everything written should arrive within a few flushes.
    let deadline = Instant::now() + Duration::from_secs(30);
    while ((receiver.store.distinct_events() as u64) < generated.written
        || cloud_received() < generated.written)
        && Instant::now() < deadline
    {
        progress.show(
            generated.written,
            receiver.store.distinct_events() as u64,
            false,
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    forwarder_stop.cancel();
    forwarder.await.context("the forwarder task")??;
    let summary = DemoSummary {
        written: generated.written,
        received: receiver.store.distinct_events() as u64,
        duplicates: receiver.store.duplicates(),
        rotations: generated.rotations,
        cloud_logs: receiver.cloud_logs.as_ref().map(|c| {
            let tokens = c.tokens_issued();
            (c.counts().1, tokens)
        }),
    };
    progress.show(summary.written, summary.received, true);
    stop.cancel();
    let _ = receiver_task.await;
    Ok(summary)
}

struct Progress {
    buffer: std::path::PathBuf,
    terminal: bool,
    started: Instant,
    last_line: std::sync::Mutex<Option<Instant>>,
}

impl Progress {
    fn new(buffer: std::path::PathBuf) -> Self {
        Progress {
            buffer,
            terminal: std::io::stdout().is_terminal(),
            started: Instant::now(),
            last_line: std::sync::Mutex::new(None),
        }
    }

    /// Events in the forwarder's disk buffer, open or waiting to be sent.
    fn buffered(&self) -> u64 {
        let chunks = crate::buffer::inspect::list(&self.buffer).unwrap_or_default();
        chunks
            .iter()
            .filter(|c| c.place == crate::buffer::inspect::Place::Queue)
            .map(|c| c.meta.records)
            .sum()
    }

    fn show(&self, written: u64, delivered: u64, last: bool) {
        let secs = self.started.elapsed().as_secs_f64();
        let buffered = self.buffered();
        let share = if written == 0 {
            0.0
        } else {
            delivered as f64 / written as f64
        };
        if self.terminal {
            let filled = (share * 30.0).round() as usize;
            print!("\r  {secs:5.1}s  written {written:>7}  buffered {buffered:>6}  delivered {delivered:>7}  [{}{}] {:3.0}%", "#".repeat(filled.min(30)), "-".repeat(30 - filled.min(30)), share * 100.0);
            if last {
                println!();
            }
            let _ = std::io::Write::flush(&mut std::io::stdout());
            return;
        }
        let mut last_line = self
            .last_line
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last || last_line.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            println!(
                "  {secs:5.1}s  written {written}  buffered {buffered}  delivered {delivered}"
            );
            *last_line = Some(Instant::now());
        }
    }
}
