//! One source's worker: checks, routes and writes the lines of each batch, and saves
//! positions only once everything read before them is safe — written to stdout,
//! dead-lettered, or appended to a buffer and then delivered, or on disk and fsynced by
//! a group commit (see `held.rs`).

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::Receiver;
use tracing::{error, info, warn};

use crate::buffer::Buffer;
use crate::config::value::ConfigEnum;
use crate::config::{Config, SourceKind};
use crate::event::dead_letter::DeadLetterStore;
use crate::event::Validator;
use crate::tail::ahead::AheadFile;
use crate::tail::{Batch, Position, PositionStore};

use super::append::{append_until_done, Unwritten};
use sort::{Group, Sorted};

mod sort;
use super::held::{Held, Mark, Routes, Written};

pub(super) struct Worker {
    config: Arc<Config>,
    source: usize,
    store: PositionStore,
    dead_letters: Arc<DeadLetterStore>,
    validator: Validator,
    /// The buffer of each `<match>`, by index (`None` for outputs without one).
    buffers: Vec<Option<Arc<Buffer>>>,
    /// Positions written downstream but not yet saved, and the file that records them for
    /// a restart after a crash of this process (see [`crate::tail::ahead`]).
    ahead: std::sync::Mutex<Ahead>,
    /// This worker's liveness, and its group commit's.
    heartbeat: crate::health::Heartbeat,
    commit_heartbeat: crate::health::Heartbeat,
    metrics: Arc<crate::metrics::Metrics>,
}

/// Where a worker reports: its heartbeat, its group commit's, and the metrics.
pub(super) struct Reporting {
    pub heartbeat: crate::health::Heartbeat,
    pub commit_heartbeat: crate::health::Heartbeat,
    pub metrics: Arc<crate::metrics::Metrics>,
}

struct Ahead {
    file: Option<AheadFile>,
    unsaved: Vec<Position>,
}

impl Ahead {
    fn record(&mut self) {
        if let Some(file) = &mut self.file {
            if let Err(e) = file.write(self.unsaved.iter()) {
                // Only costs duplicates after a crash: the saved positions still hold.
                warn!(error = %e, "Could not record positions read ahead; disabling that record.");
                self.file = None;
            }
        }
    }
}

/// A batch being written.
type WriteFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<Written>> + Send>>;

/// How long the end of a source waits for chunks being sent to be delivered or written
/// to disk, so that its positions can be saved; after it, their lines are read again at
/// the next start.
const SAFE_DEADLINE: Duration = Duration::from_secs(10);

impl Worker {
    pub(super) fn new(
        config: Arc<Config>,
        source: usize,
        store: PositionStore,
        dead_letters: Arc<DeadLetterStore>,
        buffers: Vec<Option<Arc<Buffer>>>,
        ahead: Option<AheadFile>,
        reporting: Reporting,
    ) -> Self {
        let SourceKind::Tail(tail) = &config.sources[source].kind;
        let validator = Validator::new(tail.cadf_validation, tail.normalize_time);
        Worker {
            config,
            source,
            store,
            dead_letters,
            validator,
            buffers,
            ahead: std::sync::Mutex::new(Ahead {
                file: ahead,
                unsaved: Vec::new(),
            }),
            heartbeat: reporting.heartbeat,
            commit_heartbeat: reporting.commit_heartbeat,
            metrics: reporting.metrics,
        }
    }

    /// How long positions may wait for a group commit.
    fn commit_interval(&self) -> Duration {
        let intervals = self
            .config
            .matches
            .iter()
            .filter_map(|m| m.buffer.as_ref())
            .map(|b| b.flush_interval);
        intervals
            .min()
            .unwrap_or(Duration::ZERO)
            .min(Duration::from_secs(60))
    }

    pub(super) async fn run(self, mut batches: Receiver<Batch>) {
        let worker = Arc::new(self);
        // Batches written to the buffers whose records may still be in memory only.
        let mut held = Held::default();
        let mut pending: Vec<Position> = Vec::new();
        let mut pending_since: Option<Instant> = None;
        let interval = worker.commit_interval();
        // Group commits run beside the worker: it goes on appending while an fsync is under
        // way, and commits that queue up meanwhile are merged into one.
        let (commits, commit_rx) = tokio::sync::mpsc::unbounded_channel();
        let committer = tokio::spawn(commit_loop(Arc::clone(&worker), commit_rx));
        let mut closed = false;
        // The batch being written: polled beside deliveries, so that positions are
        // released (and recorded for a crash) as soon as their chunks are delivered.
        let mut writing: Option<WriteFuture> = None;
        loop {
            // Registered before looking, so no delivery between the two goes unnoticed.
            let progress = worker.progress();
            if worker.release_safe(&mut held, &mut pending) {
                pending_since.get_or_insert_with(Instant::now);
            }
            let due = closed
                || pending_since.is_some_and(|t| t.elapsed() >= interval)
                || worker
                    .buffers
                    .iter()
                    .flatten()
                    .any(|b| b.sync_due(Instant::now()));
            if due && !pending.is_empty() {
                let _ = commits.send(std::mem::take(&mut pending));
                pending_since = None;
            }
            if closed {
                break;
            }
            let wait = pending_since.map_or(Duration::from_secs(3600), |t| {
                interval.saturating_sub(t.elapsed())
            });
            if writing.is_some() {
                worker.heartbeat.working();
            } else {
                worker.heartbeat.idle();
            }
            tokio::select! {
                written = async { writing.as_mut().expect("polled only while writing").await }, if writing.is_some() => {
                    writing = None;
                    worker.heartbeat.beat();
                    match written {
                        Ok(batch) => held.push(batch),
                        Err(e) => {
                            // Positions are not saved: the lines are read again after a restart.
                            error!(error = %e, "Writing a batch failed; its positions are not saved. Stopping this source.");
                            break;
                        }
                    }
                }
                next = batches.recv(), if writing.is_none() => match next {
                    Some(batch) => writing = Some(Box::pin(Arc::clone(&worker).write(batch))),
                    None => {
                        closed = true;
                        worker.make_safe(&held).await;
                    }
                },
                () = progress, if !held.is_empty() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
        drop(commits);
        let _ = committer.await;
    }

    /// Resolves when a buffer reports progress (a chunk delivered or written to disk).
    fn progress(&self) -> impl std::future::Future<Output = ()> + Unpin + '_ {
        let mut waits: Vec<_> = self
            .buffers
            .iter()
            .flatten()
            .map(|b| {
                let mut wait = Box::pin(b.progress().notified());
                wait.as_mut().enable();
                wait
            })
            .collect();
        std::future::poll_fn(move |cx| {
            let ready = waits
                .iter_mut()
                .any(|w| std::future::Future::poll(w.as_mut(), cx).is_ready());
            if ready {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
    }

    /// Moves the positions released by `held` to `pending` and to the record of
    /// positions read ahead; returns whether any moved.
    fn release_safe(&self, held: &mut Held, pending: &mut Vec<Position>) -> bool {
        let released = held.release(&self.buffers);
        if released.is_empty() {
            return false;
        }
        let mut ahead = self.lock_ahead();
        merge_positions(&mut ahead.unsaved, released.iter().cloned());
        ahead.record();
        drop(ahead);
        merge_positions(pending, released);
        true
    }

    /// At the end of the input: writes every chunk still in memory to disk, and waits (up
    /// to [`SAFE_DEADLINE`]) for those being sent, so the positions of every batch written
    /// can be saved.
    async fn make_safe(&self, held: &Held) {
        if held.is_empty() {
            return;
        }
        for b in self.buffers.iter().flatten() {
            let b = Arc::clone(b);
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || b.spill(true)).await {
                error!(error = %e, "Could not write chunks held in memory to disk at shutdown; their lines are read again at the next start.");
            }
        }
        let deadline = Instant::now() + SAFE_DEADLINE;
        loop {
            let progress = self.progress();
            if held.all_safe(&self.buffers) || Instant::now() >= deadline {
                return;
            }
            let _ = tokio::time::timeout_at(deadline.into(), progress).await;
        }
    }

    /// fsyncs every buffer, then saves the positions.
    fn commit(&self, positions: &[Position]) -> std::io::Result<()> {
        for b in self.buffers.iter().flatten() {
            b.sync()?;
        }
        self.store
            .commit(positions)
            .map_err(std::io::Error::other)?;
        let mut ahead = self.lock_ahead();
        // Only what this commit saved leaves the record: a later position of the same file
        // (read on, or a new generation after a truncation) stays.
        ahead.unsaved.retain(|u| {
            !positions
                .iter()
                .any(|p| p.key == u.key && p.checkpoint == u.checkpoint)
        });
        ahead.record();
        Ok(())
    }

    fn lock_ahead(&self) -> std::sync::MutexGuard<'_, Ahead> {
        self.ahead
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn write(self: Arc<Self>, batch: Batch) -> std::io::Result<Written> {
        // One hop to a blocking thread per batch: checks, dead letters, stdout, and a first
        // attempt at every append (which succeeds unless the buffer is full or failing).
        let w = Arc::clone(&self);
        let batch = Arc::new(batch);
        let first = tokio::task::spawn_blocking(move || {
            let mut sorted = w.sort(&batch);
            let routes = std::mem::take(&mut sorted.routes);
            match w.dead_letters.append(&sorted.letters) {
                Ok(()) => Ok(w
                    .write_sorted(sorted)
                    .map(|(unwritten, marks)| (unwritten, marks, routes, batch))),
                Err(e) => Err(Box::new(LettersUnwritten {
                    sorted,
                    routes,
                    batch,
                    error: e,
                })),
            }
        })
        .await
        .map_err(std::io::Error::other)?;
        let (unwritten, marks, routes, batch) = match first {
            Ok(done) => done?,
            Err(rest) => Arc::clone(&self).keep_letters_until_done(rest).await?,
        };
        for rest in unwritten {
            append_until_done(rest, &self.heartbeat).await;
        }
        if batch.caught_up {
            // The end of a backlog: its last records go out now, not a flush_interval later.
            for b in self.buffers.iter().flatten() {
                b.seal_open_soon();
            }
        }
        Ok(Written::after(
            &self.buffers,
            routes,
            &marks,
            batch.positions.clone(),
        ))
    }

    /// Writes a sorted batch: dead letters, stdout, then each key's records to its buffer;
    /// returns what could not be appended yet, and for each file and key appended in full
    /// the buffer's generation after the piece with the file's last record (see
    /// [`Written::after`]).
    fn write_sorted(&self, sorted: Sorted) -> std::io::Result<(Vec<Unwritten>, Vec<Mark>)> {
        for l in &sorted.letters {
            self.metrics.dead_lettered(l.reason.name(), 1);
        }
        if !sorted.stdout.is_empty() {
            let mut out = std::io::stdout().lock();
            out.write_all(&sorted.stdout)?;
            out.flush()?;
        }
        let mut unwritten = Vec::new();
        let mut marks = Vec::new();
        for group in sorted.buffered {
            let Group {
                index: m,
                key,
                mut records,
                mut files,
            } = group;
            let buffer = Arc::clone(
                self.buffers[m]
                    .as_ref()
                    .expect("routed only to matches with a buffer"),
            );
            let skipped = buffer.skip_recovered(&mut records);
            if skipped > 0 {
                info!(key = %key, records = skipped, "Lines read again after a crash were already in the buffer; not appended twice.");
                // The records' places changed: the files are marked after every append.
                files.clear();
            }
            // Groups no larger than a chunk, each all-or-nothing, so a retry never appends
            // twice.
            let limit = usize::try_from(buffer.chunk_limit_size()).unwrap_or(usize::MAX);
            let pieces = records.pieces(limit);
            let mut appended = 0;
            for (from, (range, count)) in pieces.iter().enumerate() {
                let framed = &records.as_bytes()[range.clone()];
                if let Err(error) = buffer.append_framed(&key, framed, *count) {
                    // Appended later: these files are marked once every append is done.
                    marks.extend(files.iter().map(|(file, _)| (*file, m, key.clone(), None)));
                    unwritten.push(Unwritten {
                        buffer: Arc::clone(&buffer),
                        key: key.clone(),
                        records: Arc::new(records),
                        pieces,
                        from,
                        error,
                    });
                    break;
                }
                appended += count;
                let generation = buffer.generation();
                files.retain(|(file, last)| {
                    let done = *last <= appended;
                    if done {
                        marks.push((*file, m, key.clone(), Some(generation)));
                    }
                    !done
                });
            }
        }
        Ok((unwritten, marks))
    }
}

/// A sorted batch whose dead letters could not be written (a full disk, EIO).
struct LettersUnwritten {
    sorted: Sorted,
    routes: Routes,
    batch: Arc<Batch>,
    error: std::io::Error,
}

type WrittenParts = (Vec<Unwritten>, Vec<Mark>, Routes, Arc<Batch>);

impl Worker {
    /// Retries writing a batch's dead letters with back-off, as a full buffer is waited
    /// for: nothing of the batch goes on (its positions are not saved) and this source
    /// takes no new batch meanwhile, so reading pauses and resumes by itself once the disk
    /// has room. Then the rest of the batch is written.
    async fn keep_letters_until_done(
        self: Arc<Self>,
        rest: Box<LettersUnwritten>,
    ) -> std::io::Result<WrittenParts> {
        let LettersUnwritten {
            sorted,
            routes,
            batch,
            mut error,
        } = *rest;
        let sorted = Arc::new(sorted);
        let mut backoff = Duration::from_millis(100);
        loop {
            self.heartbeat.beat();
            error!(dir = %self.dead_letters.dir().display(), error = %error, retry_in_ms = u64::try_from(backoff.as_millis()).unwrap_or(0), "Cannot write dead letters (disk full?); reading of this source pauses, nothing is dropped.");
            self.metrics.dead_letter_write_error();
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
            let (w, s) = (Arc::clone(&self), Arc::clone(&sorted));
            match tokio::task::spawn_blocking(move || w.dead_letters.append(&s.letters))
                .await
                .map_err(std::io::Error::other)?
            {
                Ok(()) => break,
                Err(e) => error = e,
            }
        }
        warn!(dir = %self.dead_letters.dir().display(), "Dead letters written again; reading resumes.");
        let sorted = Arc::try_unwrap(sorted).map_err(|_| std::io::Error::other("batch shared"))?;
        let w = Arc::clone(&self);
        tokio::task::spawn_blocking(move || {
            w.write_sorted(sorted)
                .map(|(unwritten, marks)| (unwritten, marks, routes, batch))
        })
        .await
        .map_err(std::io::Error::other)?
    }
}

/// Later positions replace earlier ones of the same file.
fn merge_positions(into: &mut Vec<Position>, later: impl IntoIterator<Item = Position>) {
    for p in later {
        match into.iter_mut().find(|q| q.key == p.key) {
            Some(q) => *q = p,
            None => into.push(p),
        }
    }
}

/// Takes positions to save, merges whatever queued up while the previous commit ran, and
/// commits (fsync of the buffers, then the positions) until the worker stops.
async fn commit_loop(
    worker: Arc<Worker>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Vec<Position>>,
) {
    let heartbeat = worker.commit_heartbeat.clone();
    loop {
        heartbeat.idle();
        let Some(mut positions) = rx.recv().await else {
            break;
        };
        heartbeat.working();
        while let Ok(more) = rx.try_recv() {
            merge_positions(&mut positions, more);
        }
        let w = Arc::clone(&worker);
        match tokio::task::spawn_blocking(move || w.commit(&positions)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                error!(error = %e, "Group commit failed; positions are not saved (the lines will be read again after a restart).")
            }
            Err(e) => error!(error = %e, "Group commit task failed."),
        }
    }
}
