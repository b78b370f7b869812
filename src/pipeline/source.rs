//! One source's worker: checks, routes and writes the lines of each batch, and saves
//! positions only once everything read before them is safe — written to stdout,
//! dead-lettered, or appended to a buffer and then delivered, or on disk and fsynced by
//! a group commit (see `held.rs`).

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::Receiver;
use tracing::{error, info, warn};

use crate::buffer::{Buffer, Framed};
use crate::config::value::ConfigEnum;
use crate::config::{Config, Output, SourceKind};
use crate::event::dead_letter::{DeadLetter, DeadLetterStore};
use crate::event::{Origin, Reason, Validator};
use crate::tail::ahead::AheadFile;
use crate::tail::{Batch, Position, PositionStore};

use super::append::{append_pieces, append_until_done, Unwritten};
use super::held::{Held, Routes, Written};
use crate::tail::identity::FileKey;

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

/// A batch sorted by destination.
#[derive(Default)]
struct Sorted {
    stdout: Vec<u8>,
    /// (match index, key, records).
    buffered: Vec<(usize, String, Framed)>,
    letters: Vec<DeadLetter>,
    /// Which keys each file's lines went to.
    routes: Routes,
}

impl Worker {
    pub(super) fn new(
        config: Arc<Config>,
        source: usize,
        store: PositionStore,
        dead_letters: Arc<DeadLetterStore>,
        buffers: Vec<Option<Arc<Buffer>>>,
        ahead: Option<AheadFile>,
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
            tokio::select! {
                written = async { writing.as_mut().expect("polled only while writing").await }, if writing.is_some() => {
                    writing = None;
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
        let (unwritten, routes, batch) = tokio::task::spawn_blocking(move || {
            let mut sorted = w.sort(&batch);
            let routes = std::mem::take(&mut sorted.routes);
            w.write_sorted(sorted)
                .map(|unwritten| (unwritten, routes, batch))
        })
        .await
        .map_err(std::io::Error::other)??;
        for rest in unwritten {
            append_until_done(rest).await;
        }
        if batch.caught_up {
            // The end of a backlog: its last records go out now, not a flush_interval later.
            for b in self.buffers.iter().flatten() {
                b.seal_open_soon();
            }
        }
        Ok(Written::after(&self.buffers, routes, batch.positions))
    }

    /// Writes a sorted batch: dead letters, stdout, then each key's records to its buffer;
    /// returns what could not be appended yet.
    fn write_sorted(&self, sorted: Sorted) -> std::io::Result<Vec<Unwritten>> {
        self.dead_letters.append(&sorted.letters)?;
        for l in &sorted.letters {
            crate::metrics::global().dead_lettered(l.reason.name(), 1);
        }
        if !sorted.stdout.is_empty() {
            let mut out = std::io::stdout().lock();
            out.write_all(&sorted.stdout)?;
            out.flush()?;
        }
        let mut unwritten = Vec::new();
        for (m, key, mut records) in sorted.buffered {
            let buffer = Arc::clone(
                self.buffers[m]
                    .as_ref()
                    .expect("routed only to matches with a buffer"),
            );
            let skipped = buffer.skip_recovered(&mut records);
            if skipped > 0 {
                info!(key = %key, records = skipped, "Lines read again after a crash were already in the buffer; not appended twice.");
            }
            // Groups no larger than a chunk, each all-or-nothing, so a retry never appends
            // twice.
            let limit = usize::try_from(buffer.chunk_limit_size()).unwrap_or(usize::MAX);
            let pieces = records.pieces(limit);
            let (from, error) = append_pieces(&buffer, &key, &records, &pieces, 0);
            if let Some(error) = error {
                unwritten.push(Unwritten {
                    buffer,
                    key,
                    records: Arc::new(records),
                    pieces,
                    from,
                    error,
                });
            }
        }
        Ok(unwritten)
    }

    /// Checks, routes and sorts a batch's lines; a large batch is split across two threads
    /// (the machine's cores), each half keeping its lines' order.
    fn sort(&self, batch: &Batch) -> Sorted {
        let lines: Vec<crate::tail::Line<'_>> = batch.lines().collect();
        let mut sorted = if lines.len() >= PARALLEL_FROM {
            let (first, second) = lines.split_at(lines.len() / 2);
            let (a, b) = std::thread::scope(|scope| {
                let other = scope.spawn(|| self.sort_lines(second));
                (self.sort_lines(first), other.join())
            });
            let mut a = a;
            match b {
                Ok(b) => a.merge(b),
                Err(_) => a.merge(self.sort_lines(second)),
            }
            a
        } else {
            self.sort_lines(&lines)
        };
        let SourceKind::Tail(tail) = &self.config.sources[self.source].kind;
        for (path, long) in &batch.long_lines {
            let message = format!(
                "line of {} bytes, longer than max_line_size {}",
                long.len, tail.max_line_size
            );
            let mut letter = DeadLetter::new(Reason::LineTooLong, message, path, long.offset, b"");
            letter.length = long.len;
            sorted.letters.push(letter);
        }
        sorted
    }

    fn sort_lines(&self, lines: &[crate::tail::Line<'_>]) -> Sorted {
        let source = &self.config.sources[self.source];
        let SourceKind::Tail(tail) = &source.kind;
        let mut sorted = Sorted::default();
        let mut event = Vec::new();
        // Lines of one file share a tag, hence a route: look it up once per file (a batch's
        // lines of one file share one path, compared by address).
        let mut routes: Vec<(&std::path::Path, Option<usize>, String)> = Vec::new();
        let (mut emitted, mut invalid) = (0u64, Vec::new());
        for (i, line) in lines.iter().enumerate() {
            event.clear();
            let origin = Origin {
                key: line.key,
                offset: line.offset,
            };
            let accepted = match self.validator.check(line.bytes, origin, &mut event) {
                Ok(a) => a,
                Err(r) => {
                    invalid.push(r.reason.name());
                    sorted.letters.push(DeadLetter::new(
                        r.reason,
                        r.to_string(),
                        line.path,
                        line.offset,
                        line.bytes,
                    ));
                    continue;
                }
            };
            let known = routes
                .iter()
                .position(|(p, _, _)| std::ptr::eq(*p, line.path));
            let known = known.unwrap_or_else(|| {
                let tag = tail.tag.expand(&line.path.to_string_lossy());
                let route = self
                    .config
                    .route(source.directive.label.as_deref(), &tag)
                    .and_then(|m| self.config.matches.iter().position(|x| std::ptr::eq(x, m)));
                routes.push((line.path, route, tag));
                routes.len() - 1
            });
            let (_, route, tag) = &routes[known];
            match route.map(|i| (i, &self.config.matches[i].output)) {
                Some((_, Output::Stdout)) => {
                    emitted += 1;
                    sorted.stdout.extend_from_slice(&event);
                    sorted.stdout.push(b'\n');
                }
                Some((index, Output::ActivityTracker(_))) => {
                    emitted += 1;
                    note_route(&mut sorted.routes, line.key, index, &accepted.service);
                    match sorted
                        .buffered
                        .iter_mut()
                        .find(|(i, k, _)| *i == index && *k == accepted.service)
                    {
                        Some((_, _, records)) => records.push(&event),
                        None => {
                            // Room for every line left, framed, with what the check may
                            // add (`eventType`, `typeURI`, `observer`, an `id`): grown by
                            // doubling, the records were copied once more by `realloc`.
                            // Address space only, until written.
                            let rest: usize = lines[i..].iter().map(|l| l.bytes.len() + 256).sum();
                            let mut records = Framed::with_capacity(rest);
                            records.push(&event);
                            let key = accepted.service.into_owned();
                            sorted.buffered.push((index, key, records));
                        }
                    }
                }
                None => sorted.letters.push(DeadLetter::new(
                    Reason::Unroutable,
                    format!("no <match> receives tag '{tag}'"),
                    line.path,
                    line.offset,
                    line.bytes,
                )),
            }
        }
        let metrics = crate::metrics::global();
        metrics
            .events_emitted
            .fetch_add(emitted, std::sync::atomic::Ordering::Relaxed);
        for reason in invalid {
            metrics.invalid(reason);
        }
        sorted
    }
}

/// Batches with at least this many lines are checked on two threads.
const PARALLEL_FROM: usize = 2000;

impl Sorted {
    /// Appends `other` (the later lines) to this one, keeping each output's order.
    fn merge(&mut self, other: Sorted) {
        self.stdout.extend_from_slice(&other.stdout);
        self.letters.extend(other.letters);
        for (file, index, key) in other.routes {
            note_route(&mut self.routes, file, index, &key);
        }
        // Kept as separate groups (a key may then have two, appended in order): joining
        // them copied half of every large batch.
        self.buffered.extend(other.buffered);
    }
}

/// Notes that a line of `file` went to `key` of match `index` (once per batch).
fn note_route(routes: &mut Routes, file: FileKey, index: usize, key: &str) {
    let known = |(f, i, k): &(FileKey, usize, String)| *f == file && *i == index && k == key;
    // Consecutive lines mostly share file and key: the last entry first.
    if routes.last().is_some_and(known) || routes.iter().any(known) {
        return;
    }
    routes.push((file, index, key.to_string()));
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
    while let Some(mut positions) = rx.recv().await {
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
