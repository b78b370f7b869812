//! The tailer driven by change notifications and timers on its own thread, as the daemon
//! runs it: lines arrive as they are written, through a rotation, and it stops on the
//! shutdown signal.

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::io::Write;
use std::time::{Duration, Instant};

use at_forwarder::tail::{run, PositionStore, TailOptions, Tailer};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_writes_and_rotations_until_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(logs.join("svc")).unwrap();
    let opts = TailOptions {
        read_lines_limit: 100,
        rotate_wait: Duration::from_millis(200),
        // Long: everything below must come through change notification.
        refresh_interval: Duration::from_secs(3600),
        open_files_limit: 16,
        read_from_head: true,
        ..TailOptions::new(vec![format!("{}/**/*.log*", logs.display())])
    };
    let store = PositionStore::open(&dir.path().join("pos.sled")).unwrap();
    let tailer = Tailer::open(opts, store.clone()).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let shutdown = CancellationToken::new();
    let thread = run::spawn(
        tailer,
        Duration::from_secs(3600),
        tx,
        shutdown.clone(),
        at_forwarder::health::Heartbeat::detached("tail"),
    )
    .unwrap();

    let path = logs.join("svc/app.log");
    let write = |from: usize, to: usize| {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        for i in from..to {
            writeln!(f, "{{\"id\":{i}}}").unwrap();
        }
    };
    let mut seen = BTreeSet::new();
    let mut receive_until = async |want: usize| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while seen.len() < want && Instant::now() < deadline {
            if let Ok(Some(batch)) =
                tokio::time::timeout(Duration::from_millis(200), rx.recv()).await
            {
                store.commit(&batch.positions).unwrap();
                for line in batch.lines() {
                    seen.insert(String::from_utf8(line.bytes.to_vec()).unwrap());
                }
            }
        }
        seen.len()
    };
    write(0, 500);
    assert_eq!(receive_until(500).await, 500);
    // A new file in a new directory, then a rename rotation with a write through the old
    // descriptor and one to the new file.
    std::fs::create_dir_all(logs.join("other")).unwrap();
    std::fs::write(logs.join("other/b.log"), "{\"id\":\"b\"}\n").unwrap();
    let mut old = OpenOptions::new().append(true).open(&path).unwrap();
    std::fs::rename(&path, logs.join("svc/app.log.1")).unwrap();
    writeln!(old, "{{\"id\":\"late\"}}").unwrap();
    write(500, 600);
    assert_eq!(receive_until(602).await, 602);

    shutdown.cancel();
    let joined = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::task::spawn_blocking(move || thread.join()),
    )
    .await;
    assert!(
        matches!(joined, Ok(Ok(Ok(())))),
        "the tail thread stops on shutdown"
    );
}

/// Reading paused by a full sink (back-pressure) for longer than files live under their
/// name: a file created and rotated out of the globs meanwhile is still read afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_rotated_away_while_reading_is_paused_are_read_afterwards() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let opts = TailOptions {
        read_lines_limit: 10,
        rotate_wait: Duration::from_millis(200),
        refresh_interval: Duration::from_secs(3600),
        read_from_head: true,
        ..TailOptions::new(vec![format!("{}/*.log", logs.display())])
    };
    let store = PositionStore::open(&dir.path().join("pos.sled")).unwrap();
    let tailer = Tailer::open(opts, store.clone()).unwrap();
    // Room for one batch: the second one waits until the first is taken.
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let shutdown = CancellationToken::new();
    let thread = run::spawn(
        tailer,
        Duration::from_secs(3600),
        tx,
        shutdown.clone(),
        at_forwarder::health::Heartbeat::detached("tail"),
    )
    .unwrap();
    let lines = |prefix: &str| -> String {
        (0..30)
            .map(|i| format!("{{\"id\":\"{prefix}-{i}\"}}\n"))
            .collect()
    };
    std::fs::write(logs.join("a.log"), lines("a")).unwrap();
    // Nothing is taken yet: the channel fills, the tail thread waits with a batch in hand.
    let deadline = Instant::now() + Duration::from_secs(10);
    while rx.capacity() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(rx.capacity(), 0, "the sink fills");
    // Three generations of b.log, each renamed away after the tailer had a chance to look.
    for gen in 0..3 {
        let path = logs.join("b.log");
        std::fs::write(&path, lines(&format!("b{gen}"))).unwrap();
        // Renamed only once the paused tail thread holds it open (seen in /proc/self/fd).
        let deadline = Instant::now() + Duration::from_secs(10);
        while !holds_open(&path) {
            assert!(
                Instant::now() < deadline,
                "b.log is opened while reading is paused"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        std::fs::rename(logs.join("b.log"), logs.join(format!("b.log.{gen}"))).unwrap();
    }
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.len() < 120 && Instant::now() < deadline {
        if let Ok(Some(batch)) = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
            store.commit(&batch.positions).unwrap();
            for line in batch.lines() {
                seen.insert(String::from_utf8(line.bytes.to_vec()).unwrap());
            }
        }
    }
    assert_eq!(seen.len(), 120, "every generation of b.log is read");
    shutdown.cancel();
    let _ = tokio::task::spawn_blocking(move || thread.join()).await;
}

/// Whether this process has `path` open.
fn holds_open(path: &std::path::Path) -> bool {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .any(|target| target == path)
}

/// `skip_refresh_on_startup`: files already there are found at the first refresh, not at
/// start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_refresh_on_startup_waits_for_the_first_refresh() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::write(logs.join("a.log"), "{\"id\":1}\n").unwrap();
    let refresh = Duration::from_secs(2);
    let opts = TailOptions {
        refresh_interval: refresh,
        read_from_head: true,
        skip_refresh_on_startup: true,
        ..TailOptions::new(vec![format!("{}/*.log", logs.display())])
    };
    let store = PositionStore::open(&dir.path().join("pos.sled")).unwrap();
    let tailer = Tailer::open(opts, store).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let thread = run::spawn(
        tailer,
        refresh,
        tx,
        shutdown.clone(),
        at_forwarder::health::Heartbeat::detached("tail"),
    )
    .unwrap();
    let batch = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match rx.recv().await {
                Some(b) if b.lines().next().is_some() => return b,
                Some(_) => {}
                None => panic!("the tail thread stopped"),
            }
        }
    })
    .await
    .expect("the file is read at the first refresh");
    assert!(
        started.elapsed() >= refresh,
        "read before the first refresh"
    );
    assert_eq!(batch.lines().count(), 1);
    shutdown.cancel();
    tokio::task::spawn_blocking(move || thread.join().unwrap())
        .await
        .unwrap();
}
