//! Idle cost of following 2,000 files: the tail thread with change notification, after
//! the initial read, while nothing is written. Prints CPU use (from /proc/self/stat) and
//! open descriptors. Run: `cargo bench --bench tail_idle` (about 15 s).

use std::io::Write;
use std::time::{Duration, Instant};

use at_forwarder::tail::{run, PositionStore, TailOptions, Tailer};
use tokio_util::sync::CancellationToken;

const FILES: usize = 2000;
const IDLE: Duration = Duration::from_secs(10);

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("Linux /proc");
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("comm ends with ')'")
        .1
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 of stat(5); here counted after the command name.
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    for i in 0..FILES {
        let sub = logs.join(format!("svc{}", i % 20));
        std::fs::create_dir_all(&sub).unwrap();
        let mut f = std::fs::File::create(sub.join(format!("pod{i}.log"))).unwrap();
        writeln!(f, "{{\"id\":{i}}}").unwrap();
    }
    let opts = TailOptions {
        read_from_head: true,
        ..TailOptions::new(vec![format!("{}/**/*.log*", logs.display())])
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = PositionStore::open(&dir.path().join("pos.sled")).unwrap();
        let tailer = Tailer::open(opts, store.clone()).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let shutdown = CancellationToken::new();
        let thread = run::spawn(
            tailer,
            Duration::from_secs(60),
            tx,
            shutdown.clone(),
            at_forwarder::health::Heartbeat::detached("tail"),
        ).unwrap();
        let mut lines = 0;
        while lines < FILES {
            let batch = rx.recv().await.unwrap();
            store.commit(&batch.positions).unwrap();
            lines += batch.len();
        }
        // Let the last positions and closes settle, then measure.
        let _ = tokio::time::timeout(Duration::from_secs(1), rx.recv()).await;
        let (cpu0, t0) = (cpu_seconds(), Instant::now());
        let _ = tokio::time::timeout(IDLE, rx.recv()).await;
        let (cpu, wall) = (cpu_seconds() - cpu0, t0.elapsed().as_secs_f64());
        let fds = std::fs::read_dir("/proc/self/fd").unwrap().count();
        println!("tail idle: {FILES} files, {wall:.1} s idle, CPU {cpu:.3} s = {:.2} % of one core, {fds} descriptors open in the process", 100.0 * cpu / wall);
        shutdown.cancel();
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    });
}
