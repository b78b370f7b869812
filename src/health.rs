//! Heartbeats of the long-running stages, and the watchdog that reads them.
//!
//! Each stage — a source's tail thread and worker, its group commit, each output's sender
//! — holds a [`Heartbeat`]: it calls [`Heartbeat::beat`] when it makes progress (a pass of
//! the tail loop, a batch written, a commit, a send answered, a back-off step while it
//! waits for room) and [`Heartbeat::idle`] when it waits with nothing to do. A stage is
//! **stalled** when it had work and has not beaten for the stall timeout
//! (`<system> stall_timeout`, default [`DEFAULT_STALL_TIMEOUT`]; set it above the outputs'
//! `request_timeout`). Waiting by design — back-pressure, a retry's back-off, an outage —
//! beats, so only a stage blocked inside one step (a syscall that never returns, a
//! request that never ends) stalls.
//!
//! The watchdog checks every second: a stalled stage turns `/healthz` and `/readyz` to 503,
//! sets `at_forwarder_stage_stalled{stage}` to 1 and logs an ERROR naming it; recovery is a
//! WARN. The liveness probe then restarts a pod that stays stuck.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

/// Default time a stage with work may go without progress.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(120);

/// One stage's liveness, shared with the watchdog. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Heartbeat {
    inner: Arc<Beat>,
}

#[derive(Debug)]
struct Beat {
    stage: String,
    epoch: Instant,
    /// Milliseconds since `epoch` of the last beat (or of going idle).
    last_ms: AtomicU64,
    busy: AtomicBool,
    stalled: AtomicBool,
}

impl Heartbeat {
    /// A heartbeat no watchdog reads (tests, tools).
    pub fn detached(stage: &str) -> Self {
        Heartbeat {
            inner: Arc::new(Beat {
                stage: stage.to_string(),
                epoch: Instant::now(),
                last_ms: AtomicU64::new(0),
                busy: AtomicBool::new(false),
                stalled: AtomicBool::new(false),
            }),
        }
    }

    /// Progress: the stage has work and just moved.
    pub fn beat(&self) {
        self.touch();
        self.inner.busy.store(true, Ordering::Relaxed);
    }

    /// Work arrived after a wait (the clock starts now, unless already busy).
    pub fn working(&self) {
        if !self.inner.busy.swap(true, Ordering::Relaxed) {
            self.touch();
        }
    }

    /// Nothing to do: waiting for work is not a stall.
    pub fn idle(&self) {
        self.touch();
        self.inner.busy.store(false, Ordering::Relaxed);
    }

    fn touch(&self) {
        let ms = u64::try_from(self.inner.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.inner.last_ms.store(ms, Ordering::Relaxed);
    }

    /// How long the stage has had work without progress (zero when idle).
    fn stuck_for(&self) -> Duration {
        if !self.inner.busy.load(Ordering::Relaxed) {
            return Duration::ZERO;
        }
        let last = Duration::from_millis(self.inner.last_ms.load(Ordering::Relaxed));
        self.inner.epoch.elapsed().saturating_sub(last)
    }
}

/// The stages of one pipeline, and their stall timeout.
#[derive(Debug)]
pub struct Registry {
    stall_timeout: Duration,
    metrics: Arc<crate::metrics::Metrics>,
    stages: Mutex<Vec<Heartbeat>>,
}

impl Registry {
    /// An empty registry.
    pub fn new(stall_timeout: Duration, metrics: Arc<crate::metrics::Metrics>) -> Arc<Self> {
        Arc::new(Registry {
            stall_timeout,
            metrics,
            stages: Mutex::new(Vec::new()),
        })
    }

    /// A heartbeat for `stage` (a name for operators: `tail:1`, `output:2`, …).
    pub fn register(&self, stage: &str) -> Heartbeat {
        let hb = Heartbeat::detached(stage);
        hb.idle();
        self.metrics.set_stalled(stage, false);
        self.lock().push(hb.clone());
        hb
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Heartbeat>> {
        self.stages
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Looks at every stage once; returns the names of those stalled.
    pub fn check(&self) -> Vec<String> {
        let mut stalled = Vec::new();
        for hb in self.lock().iter() {
            let stuck = hb.stuck_for();
            let now_stalled = stuck > self.stall_timeout;
            let was = hb.inner.stalled.swap(now_stalled, Ordering::Relaxed);
            let stage = &hb.inner.stage;
            // The probes turn first: whoever reads the ERROR finds them red.
            self.metrics.set_stalled(stage, now_stalled);
            if now_stalled && !was {
                error!(stage = %stage, stuck_s = stuck.as_secs(), stall_timeout_s = self.stall_timeout.as_secs(), "A stage has made no progress while it had work: health probes fail until it recovers.");
            } else if was && !now_stalled {
                warn!(stage = %stage, "A stalled stage is making progress again.");
            }
            if now_stalled {
                stalled.push(stage.clone());
            }
        }
        stalled
    }

    /// Checks every second until `stop`, then forgets its stages in the metrics.
    pub async fn watch(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => {
                    self.check();
                }
            }
        }
        for hb in self.lock().iter() {
            self.metrics.forget_stage(&hb.inner.stage);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_stage_without_progress_stalls_and_an_idle_one_never_does() {
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let registry = Registry::new(Duration::from_millis(50), Arc::clone(&metrics));
        let stuck = registry.register("test:stuck");
        let waiting = registry.register("test:waiting");
        stuck.beat();
        waiting.idle();
        let deadline = Instant::now() + Duration::from_secs(10);
        while registry.check().is_empty() {
            assert!(Instant::now() < deadline, "never reported stalled");
            std::thread::park_timeout(Duration::from_millis(10));
        }
        assert_eq!(registry.check(), ["test:stuck"]);
        assert!(metrics.any_stalled());
        stuck.beat();
        assert!(registry.check().is_empty());
        assert!(!metrics.any_stalled());
    }
}
