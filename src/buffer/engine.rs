//! The delivery engine: seals chunks as they come of age, takes due chunks, and sends them
//! with up to `flush_thread_count` in flight, applying each outcome.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::error;

use super::{Buffer, Outcome, Taken};

/// How often sealing is tried regardless of deadlines (it is retried after a failure).
/// Chunks are sealed when they come of age, at [`Buffer::next_seal`]: with a 1 s
/// `flush_interval` the last chunks of a backlog waited up to half a second more when
/// this tick was the only trigger.
const SEAL_TICK: Duration = Duration::from_millis(500);

/// An output that can send chunks.
pub trait Sink: Send + Sync + 'static {
    /// Sends one chunk (all records of one key). Every failure is classified into an
    /// [`Outcome`]; the engine owns what happens next.
    fn send(&self, chunk: &Taken) -> impl Future<Output = Outcome> + Send;

    /// Whether a chunk of `key` could be sent now. A key that cannot (its service has no
    /// token) gets its chunks written to disk at once rather than held in memory, where
    /// they would hold back the tail positions of every file with lines for it.
    fn can_send(&self, _key: &str) -> bool {
        true
    }
}

/// What to do with a single record too large to send.
pub type DeadLetterFn = Arc<dyn Fn(&Taken, &[u8]) + Send + Sync>;

/// Runs until `stop` fires; chunks in flight then finish (their outcome is recorded).
pub async fn deliver<S: Sink>(
    buffer: Arc<Buffer>,
    sink: Arc<S>,
    workers: usize,
    dead_letter: DeadLetterFn,
    stop: CancellationToken,
    heartbeat: crate::health::Heartbeat,
) {
    let asked = Arc::clone(&sink);
    buffer
        .store
        .set_sendable(Arc::new(move |key| asked.can_send(key)));
    let mut tasks = JoinSet::new();
    let mut seal_tick = tokio::time::interval(SEAL_TICK);
    seal_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        while tasks.len() < workers.max(1) {
            let b = Arc::clone(&buffer);
            let Ok(Some(taken)) = tokio::task::spawn_blocking(move || b.take(Instant::now())).await
            else {
                break;
            };
            tasks.spawn(send_one(
                Arc::clone(&buffer),
                Arc::clone(&sink),
                taken,
                Arc::clone(&dead_letter),
            ));
        }
        // Sends in flight are work; an answer is progress (a retry's back-off is not
        // in flight: waiting for it is idle).
        if tasks.is_empty() {
            heartbeat.idle();
        } else {
            heartbeat.working();
        }
        let later = Instant::now() + Duration::from_secs(3600);
        let due = buffer.next_due().map_or(later, |d| d.max(Instant::now()));
        let seal_at = buffer.next_seal().map_or(later, |d| d.max(Instant::now()));
        tokio::select! {
            () = stop.cancelled() => break,
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                heartbeat.beat();
                if let Err(e) = done {
                    error!(error = %e, "A send task failed; its chunk is retried.");
                }
            }
            () = buffer.ready().notified() => {}
            () = tokio::time::sleep_until(due.into()) => {}
            () = tokio::time::sleep_until(seal_at.into()) => seal_due(&buffer).await,
            _ = seal_tick.tick() => seal_due(&buffer).await,
        }
    }
    while tasks.join_next().await.is_some() {}
}

async fn seal_due(buffer: &Arc<Buffer>) {
    let b = Arc::clone(buffer);
    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || b.seal_due(Instant::now(), false)).await
    {
        error!(error = %e, "Sealing chunks failed; will retry.");
    }
}

async fn send_one<S: Sink>(
    buffer: Arc<Buffer>,
    sink: Arc<S>,
    taken: Taken,
    dead_letter: DeadLetterFn,
) {
    let outcome = sink.send(&taken).await;
    let result = tokio::task::spawn_blocking(move || {
        buffer.finish(&taken, &outcome, |record| dead_letter(&taken, record))
    })
    .await;
    if let Ok(Err(e)) = result {
        error!(error = %e, "Recording a send's outcome failed; the chunk will be sent again.");
    }
}
