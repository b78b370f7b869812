//! Drives a [`Tailer`] on its own thread: file I/O is blocking, and a thread keeps it off
//! the async runtime.
//!
//! Change notifications (inotify, `super::watch`) are hints, never the only trigger: a full scan
//! also runs every `refresh_interval`, and after a notification queue overflow.
//! A write to a known file reads just the open files; a create, rename or delete runs a
//! scan. While a file has unread lines, passes follow each other at once; while a rotated
//! file waits to be released, every second; otherwise the thread sleeps. A full sink
//! pauses reading — the files are where data waits — but not looking: files are still
//! discovered and opened every second, so one created and rotated out of the globs during
//! a long pause is held open and read afterwards.

use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{Batch, Tailer};

/// How often files are looked at when change notification is unavailable, or while a
/// rotated file waits to be released.
const FALLBACK_POLL: Duration = Duration::from_secs(1);

enum Hint {
    /// Writes to these paths.
    Written(Vec<PathBuf>),
    /// Files appeared, moved or vanished (or notifications were lost): scan.
    Structure,
    Stop,
}

/// Starts following the tailer's files; batches go to `sink` until `shutdown` fires or the
/// sink's receiver is dropped. Must be called from within a tokio runtime.
pub fn spawn(
    tailer: Tailer,
    refresh_interval: Duration,
    sink: tokio::sync::mpsc::Sender<Batch>,
    shutdown: CancellationToken,
    heartbeat: crate::health::Heartbeat,
) -> std::io::Result<JoinHandle<()>> {
    let (tx, rx) = mpsc::channel();
    let stop = tx.clone();
    tokio::spawn(async move {
        shutdown.cancelled().await;
        let _ = stop.send(Hint::Stop);
    });
    let watcher = watch(&tailer.watch_roots(), tailer.confinement().clone(), tx);
    let notified = watcher.is_some();
    // The caller's span (its plugin's, which `@log_level` filters by) goes with the thread.
    let span = tracing::Span::current();
    std::thread::Builder::new()
        .name("tail".into())
        .spawn(move || {
            let _entered = span.enter();
            // Kept alive for as long as the loop runs.
            let _watcher = watcher;
            follow(tailer, refresh_interval, &sink, &rx, notified, &heartbeat);
        })
}

#[cfg(target_os = "linux")]
fn watch(
    roots: &[PathBuf],
    confine: super::confine::Confinement,
    tx: mpsc::Sender<Hint>,
) -> Option<super::watch::Watch> {
    super::watch::start(roots, confine, move |changes| {
        (!changes.structure || tx.send(Hint::Structure).is_ok())
            && (changes.written.is_empty() || tx.send(Hint::Written(changes.written)).is_ok())
    })
}

/// Elsewhere files are polled every second.
#[cfg(not(target_os = "linux"))]
fn watch(
    _roots: &[PathBuf],
    _confine: super::confine::Confinement,
    _tx: mpsc::Sender<Hint>,
) -> Option<()> {
    None
}

fn follow(
    mut tailer: Tailer,
    refresh: Duration,
    sink: &tokio::sync::mpsc::Sender<Batch>,
    rx: &Receiver<Hint>,
    notified: bool,
    heartbeat: &crate::health::Heartbeat,
) {
    // `skip_refresh_on_startup`: the first scan waits one refresh_interval (or the first
    // change noticed under the roots).
    let first_wait = if tailer.skips_first_scan() {
        refresh
    } else {
        Duration::ZERO
    };
    let mut next_scan = Instant::now() + first_wait;
    let mut written: Vec<PathBuf> = Vec::new();
    loop {
        // A pass is the tail thread's unit of progress: one that never ends (an open or a
        // read that blocks) is what the watchdog catches.
        heartbeat.beat();
        let now = Instant::now();
        let batch = if now >= next_scan {
            next_scan = now + refresh;
            tailer.poll(now)
        } else {
            let paths = std::mem::take(&mut written);
            tailer
                .poll_open(now, &paths)
                .unwrap_or_else(|| tailer.poll(now))
        };
        if !batch.is_empty() && !send(&mut tailer, sink, rx, batch, &mut written, heartbeat) {
            return;
        }
        let wait = if tailer.unread() {
            Duration::ZERO
        } else if tailer.busy() || !notified {
            FALLBACK_POLL
        } else {
            next_scan.saturating_duration_since(Instant::now())
        };
        heartbeat.idle();
        match wait_for_hints(rx, wait, &mut written) {
            Some(true) => next_scan = Instant::now(),
            Some(false) => {}
            None => return,
        }
    }
}

/// Sends `batch`; while the sink is full, files are still looked for once a second
/// ([`Tailer::discover`]). `false`: stop.
fn send(
    tailer: &mut Tailer,
    sink: &tokio::sync::mpsc::Sender<Batch>,
    rx: &Receiver<Hint>,
    batch: Batch,
    written: &mut Vec<PathBuf>,
    heartbeat: &crate::health::Heartbeat,
) -> bool {
    let mut queue = std::collections::VecDeque::from([batch]);
    while let Some(batch) = queue.pop_front() {
        // Waiting for room (back-pressure) is by design: each look beats.
        heartbeat.beat();
        let room = RUNTIME.with(|rt| {
            rt.block_on(async { tokio::time::timeout(PAUSED_LOOK, sink.reserve()).await })
        });
        match room {
            Ok(Ok(permit)) => permit.send(batch),
            Ok(Err(_)) => return false,
            Err(_) => {
                queue.push_front(batch);
                if wait_for_hints(rx, Duration::ZERO, written).is_none() {
                    return false;
                }
                let found = tailer.discover(Instant::now());
                if !found.is_empty() {
                    queue.push_back(found);
                }
            }
        }
    }
    true
}

/// While reading is paused, how often files are looked for.
const PAUSED_LOOK: Duration = Duration::from_secs(1);

thread_local! {
    /// A runtime of the tail thread's own, to wait for room in the sink with a timeout.
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime with a timer builds");
}

/// Waits up to `wait` for hints and takes every one pending. `Some(true)`: a scan is
/// needed; `Some(false)`: read what is open (and `written`); `None`: stop.
fn wait_for_hints(rx: &Receiver<Hint>, wait: Duration, written: &mut Vec<PathBuf>) -> Option<bool> {
    let first = match rx.recv_timeout(wait) {
        Ok(hint) => hint,
        Err(RecvTimeoutError::Timeout) => return Some(false),
        Err(RecvTimeoutError::Disconnected) => return None,
    };
    let mut scan = false;
    for hint in std::iter::once(first).chain(rx.try_iter()) {
        match hint {
            Hint::Written(paths) => written.extend(paths),
            Hint::Structure => scan = true,
            Hint::Stop => return None,
        }
    }
    Some(scan)
}
