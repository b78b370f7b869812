//! The chaos suite's world: the real receiver (`receiver --sink`), the fault proxy in front
//! of it, the real at-forwarder binary (started, `kill -9`ed, its peak RSS read from
//! /proc), the Secrets of both sides, and a buffer directory on a small tmpfs when the
//! suite runs as root (a full disk for real), else under a total limit.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::chaos_proxy::Proxy;
use crate::support::binary;

/// Size of the buffer's tmpfs: a 30 s outage at 5,000 events/s fills it many times over.
const TMPFS_SIZE: &str = "8m";

pub(crate) struct World {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) logs: PathBuf,
    pub(crate) state: PathBuf,
    pub(crate) buffer: PathBuf,
    pub(crate) conf: PathBuf,
    pub(crate) proxy: Proxy,
    /// Whether the buffer is on its own small filesystem (else a total limit stands in).
    pub(crate) tmpfs: bool,
    receiver: Child,
    receiver_url: String,
    fwd_secrets: PathBuf,
    rcv_secrets: PathBuf,
    secret_version: u32,
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = self.receiver.kill();
        let _ = self.receiver.wait();
        if self.tmpfs {
            let _ = Command::new("umount").arg(&self.buffer).status();
        }
        if std::thread::panicking() || std::env::var_os("AT_CHAOS_KEEP").is_some() {
            let kept = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap()).keep();
            eprintln!(
                "chaos: state, logs and the daemon's log kept in {}",
                kept.display()
            );
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn services_json(tokens: &[(String, String)]) -> String {
    let entries: Vec<String> = tokens
        .iter()
        .map(|(s, t)| {
            format!(r#"{{"service_name":"{s}","auth_token_value":"{t}","project_id":"p-{s}"}}"#)
        })
        .collect();
    format!(r#"{{"services":[{}]}}"#, entries.join(","))
}

impl World {
    pub(crate) fn new(services: usize) -> World {
        let dir = tempfile::tempdir().unwrap();
        let (logs, state) = (dir.path().join("logs"), dir.path().join("state"));
        let buffer = dir.path().join("buffer");
        let fwd_secrets = dir.path().join("secret-volume");
        let rcv_secrets = dir.path().join("receiver-secrets");
        for d in [&logs, &state, &buffer, &fwd_secrets, &rcv_secrets] {
            std::fs::create_dir_all(d).unwrap();
        }
        // AT_CHAOS_NO_TMPFS=1 runs the non-root variant (a total limit) as root too.
        let tmpfs = std::env::var_os("AT_CHAOS_NO_TMPFS").is_none()
            && Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={TMPFS_SIZE}"), "tmpfs"])
                .arg(&buffer)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
        let port = free_port();
        let receiver = binary()
            .args(["--log-level", "warn", "receiver", "--sink", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--secrets-dir")
            .arg(&rcv_secrets)
            .arg("--data-dir")
            .arg(dir.path().join("receiver-data"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let proxy = Proxy::start(format!("127.0.0.1:{port}").parse().unwrap());
        let mut world = World {
            conf: dir.path().join("at.conf"),
            dir,
            logs,
            state,
            buffer,
            proxy,
            tmpfs,
            receiver,
            receiver_url: format!("http://127.0.0.1:{port}"),
            fwd_secrets,
            rcv_secrets,
            secret_version: 0,
        };
        let tokens: Vec<(String, String)> = (0..services)
            .map(|s| (format!("svc-{s}"), format!("token-{s}-v0")))
            .collect();
        world.set_receiver_tokens(&tokens);
        world.publish_secret(&tokens);
        world.write_config();
        let deadline = Instant::now() + Duration::from_secs(30);
        while world.sink("/sink").is_none() {
            assert!(Instant::now() < deadline, "the receiver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        world
    }

    fn write_config(&self) {
        // Without its own filesystem, a total limit makes the buffer "full" instead.
        let total = if self.tmpfs { "256m" } else { "8m" };
        let text = format!(
            r#"<source>
  @type tail
  path {logs}/**/*.log
  pos_file {state}/at.pos
  tag kubernetes.at.*
  format json
  read_from_head true
  refresh_interval 1s
</source>
<match kubernetes.at.**>
  @type ibmactivitytracker
  targetHost {url}
  service_region ng
  secrets_path {secrets}
  request_timeout 10s
  <buffer>
    path {buffer}
    chunk_limit_size 256k
    total_limit_size {total}
    flush_interval 1s
    flush_thread_count 2
    flush_at_shutdown true{memory}
    retry_wait 200ms
    retry_max_interval 2s
    retry_forever true
  </buffer>
</match>
"#,
            logs = self.logs.display(),
            state = self.state.display(),
            url = self.proxy.url(),
            secrets = self.fwd_secrets.display(),
            buffer = self.buffer.display(),
            memory =
                memory_limit().map_or(String::new(), |m| format!("\n    memory_limit_size {m}")),
        );
        std::fs::write(&self.conf, text).unwrap();
    }

    /// The receiver's accepted tokens (it re-reads them within a second).
    pub(crate) fn set_receiver_tokens(&self, tokens: &[(String, String)]) {
        let path = self.rcv_secrets.join("127.0.0.1");
        let tmp = self.rcv_secrets.join(".tmp");
        std::fs::write(&tmp, services_json(tokens)).unwrap();
        std::fs::rename(tmp, path).unwrap();
    }

    /// A new version of at-forwarder's Secret, swapped in through `..data` as the kubelet
    /// does.
    pub(crate) fn publish_secret(&mut self, tokens: &[(String, String)]) {
        self.secret_version += 1;
        let dir = &self.fwd_secrets;
        let data = dir.join(format!("..v{}", self.secret_version));
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("127.0.0.1"), services_json(tokens)).unwrap();
        let link = dir.join("..data_tmp");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(data.file_name().unwrap(), &link).unwrap();
        std::fs::rename(&link, dir.join("..data")).unwrap();
        let key = dir.join("127.0.0.1");
        if std::fs::symlink_metadata(&key).is_err() {
            std::os::unix::fs::symlink("..data/127.0.0.1", key).unwrap();
        }
    }

    /// A GET on the receiver; `None` when it does not answer.
    pub(crate) fn sink(&self, path: &str) -> Option<serde_json::Value> {
        let url = format!("{}{path}", self.receiver_url);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let r = reqwest::get(url).await.ok()?;
            serde_json::from_str(&r.text().await.ok()?).ok()
        })
    }

    pub(crate) fn totals(&self) -> Totals {
        let v = self.sink("/sink").expect("the receiver answers");
        let n = |k: &str| v[k].as_u64().unwrap_or(0);
        Totals {
            events: n("events"),
            distinct: n("distinct"),
            replays: n("replays"),
        }
    }

    pub(crate) fn log_path(&self) -> PathBuf {
        self.dir.path().join("forwarder.log")
    }
}

/// What the receiver counted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Totals {
    pub(crate) events: u64,
    pub(crate) distinct: u64,
    pub(crate) replays: u64,
}

impl Totals {
    pub(crate) fn duplicates(&self) -> u64 {
        self.events - self.distinct
    }
}

/// The at-forwarder process, restarted as often as it is killed.
pub(crate) struct Forwarder {
    child: Child,
    conf: PathBuf,
    log: PathBuf,
    /// Highest VmHWM (peak RSS, KiB) seen over every process so far.
    pub(crate) peak_rss_kib: u64,
    pub(crate) starts: u32,
}

impl Forwarder {
    pub(crate) fn start(world: &World) -> Forwarder {
        let conf = world.conf.clone();
        let log = world.log_path();
        Forwarder {
            child: spawn(&conf, &log),
            conf,
            log,
            peak_rss_kib: 0,
            starts: 1,
        }
    }

    fn note_rss(&mut self) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        let hwm = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        self.peak_rss_kib = self.peak_rss_kib.max(hwm);
    }

    /// `kill -9`, then a new process.
    pub(crate) fn crash_and_restart(&mut self, down_for: Duration) {
        self.note_rss();
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        std::thread::sleep(down_for);
        self.child = spawn(&self.conf, &self.log);
        self.starts += 1;
    }

    /// Still running (never exited on its own)?
    pub(crate) fn running(&mut self) -> bool {
        self.note_rss();
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGTERM; the exit code.
    pub(crate) fn stop(&mut self) -> Option<i32> {
        self.note_rss();
        crate::support::terminate(&mut self.child)
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        // A failed run must not leave a daemon behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(conf: &Path, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    binary()
        .args([
            "--log-format",
            "json",
            "--log-level",
            "info,at_forwarder::tail::rotated=debug",
            "run",
            "--metrics-listen",
            "127.0.0.1:0",
            "-c",
        ])
        .arg(conf)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// The buffer's `memory_limit_size` when `AT_CHAOS_MEMORY_LIMIT` sets one (`0`: every
/// chunk written through to disk); the default otherwise.
pub(crate) fn memory_limit() -> Option<String> {
    std::env::var("AT_CHAOS_MEMORY_LIMIT").ok()
}
