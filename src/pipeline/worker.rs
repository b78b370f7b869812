//! One source's worker: checks, routes and writes the lines of each batch, then hands the
//! batch's positions to the source's [`Checkpointer`], which saves them once they are safe.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::Receiver;
use tracing::{error, warn};

use crate::buffer::{Pending, Receipts};
use crate::config::value::ConfigEnum;
use crate::config::{Config, SourceKind};
use crate::event::dead_letter::DeadLetterStore;
use crate::event::Validator;
use crate::tail::identity::FileKey;
use crate::tail::Batch;

use sort::{Group, Sorted};

mod sort;
use super::checkpoint::{Checkpointer, Mark, Written};
use super::route::{Route, Routes};

pub(super) struct Worker {
    config: Arc<Config>,
    source: usize,
    dead_letters: Arc<DeadLetterStore>,
    validator: Validator,
    /// The configuration's `<filter>`s.
    filters: Arc<crate::event::filter::Filters>,
    /// fluentd's json parser removes the time field from records unless `keep_time_key`.
    time_key: Option<crate::event::members::TimeKeyRemover>,
    /// Where each `<match>`'s events go.
    routes: Routes,
    /// Holds and saves this source's positions.
    checkpointer: Arc<Checkpointer>,
    /// This worker's liveness.
    heartbeat: crate::health::Heartbeat,
    metrics: Arc<crate::metrics::Metrics>,
    /// When times without a UTC offset were last reported (WARN at most once a minute).
    offsetless_reported: std::sync::Mutex<Option<std::time::Instant>>,
}

/// Where a worker reports: its heartbeat, and the metrics.
pub(super) struct Reporting {
    pub heartbeat: crate::health::Heartbeat,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub filters: Arc<crate::event::filter::Filters>,
}

/// A batch being written.
type WriteFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<Written>> + Send>>;

impl Worker {
    pub(super) fn new(
        config: Arc<Config>,
        source: usize,
        dead_letters: Arc<DeadLetterStore>,
        routes: Routes,
        checkpointer: Arc<Checkpointer>,
        reporting: Reporting,
    ) -> Self {
        let SourceKind::Tail(tail) = &config.sources[source].kind;
        let validator = Validator::new(tail.cadf_validation, tail.normalize_time);
        let time_key = (!tail.parse.keep_time_key).then(|| {
            crate::event::members::TimeKeyRemover::new(
                tail.parse.time_key.as_deref().unwrap_or("time"),
            )
        });
        Worker {
            config,
            source,
            dead_letters,
            validator,
            time_key,
            filters: reporting.filters,
            routes,
            checkpointer,
            heartbeat: reporting.heartbeat,
            metrics: reporting.metrics,
            offsetless_reported: std::sync::Mutex::new(None),
        }
    }

    /// Counts events whose time had no UTC offset; WARNs at most once a minute, naming
    /// the first one's file and offset and how many since the last report.
    fn report_times_without_offset(&self, sorted: &Sorted) {
        use std::sync::atomic::Ordering;
        if sorted.times_without_offset == 0 {
            return;
        }
        let total = self
            .metrics
            .times_without_offset
            .fetch_add(sorted.times_without_offset, Ordering::Relaxed)
            + sorted.times_without_offset;
        let mut last = self
            .offsetless_reported
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(60)) {
            return;
        }
        *last = Some(std::time::Instant::now());
        if let Some((path, offset)) = &sorted.first_without_offset {
            tracing::warn!(
                path = %path.display(),
                offset,
                events_so_far = total,
                "eventTime without a UTC offset, read as UTC (CADF requires the offset; reported at most once a minute)."
            );
        }
    }

    pub(super) async fn run(self, mut batches: Receiver<Batch>) {
        let worker = Arc::new(self);
        let checkpointer = Arc::clone(&worker.checkpointer);
        let mut closed = false;
        // The batch being written: polled beside deliveries, so that positions are
        // released (and recorded for a crash) as soon as their chunks are delivered.
        let mut writing: Option<WriteFuture> = None;
        loop {
            // Registered before looking, so no delivery between the two goes unnoticed.
            let progress = checkpointer.progress();
            let wait = checkpointer.advance(closed);
            if closed {
                break;
            }
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
                        Ok(batch) => checkpointer.hold(batch),
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
                        checkpointer.make_safe().await;
                    }
                },
                () = progress, if checkpointer.holding() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
        checkpointer.close().await;
    }

    async fn write(self: Arc<Self>, batch: Batch) -> std::io::Result<Written> {
        // One hop to a blocking thread per batch: checks, dead letters, stdout, and a first
        // attempt at every append (which succeeds unless the buffer is full or failing).
        let w = Arc::clone(&self);
        let batch = Arc::new(batch);
        let first = tokio::task::spawn_blocking(move || {
            let sorted = w.sort(&batch);
            match w.dead_letters.append(&sorted.letters) {
                Ok(()) => Ok(w.write_sorted(sorted).map(|parts| (parts, batch))),
                Err(e) => Err(Box::new(LettersUnwritten {
                    sorted,
                    batch,
                    error: e,
                })),
            }
        })
        .await
        .map_err(std::io::Error::other)?;
        let ((mut marks, pending), batch) = match first {
            Ok(done) => done?,
            Err(rest) => Arc::clone(&self).keep_letters_until_done(rest).await?,
        };
        for (rest, files) in pending {
            let receipts = rest.finish(&self.heartbeat).await;
            marks.extend(files.mark(&receipts));
        }
        if batch.caught_up {
            // The end of a backlog: its last records go out now, not a flush_interval later.
            for b in self.routes.buffers() {
                b.seal_open_soon();
            }
        }
        Ok(Written::new(
            marks,
            batch.positions.clone(),
            batch.linked_starts.clone(),
        ))
    }

    /// Writes a sorted batch: stdout, then each key's records to its buffer; returns the
    /// marks of what was appended (per file and key, the receipt of the piece holding the
    /// file's last record) and what could not be appended yet.
    fn write_sorted(&self, sorted: Sorted) -> std::io::Result<WrittenParts> {
        self.report_times_without_offset(&sorted);
        for i in &sorted.filtered {
            self.metrics.filtered(self.filters.name(*i), 1);
        }
        for l in &sorted.letters {
            self.metrics.dead_lettered(l.reason.name(), 1);
        }
        if !sorted.stdout.is_empty() {
            let mut out = std::io::stdout().lock();
            out.write_all(&sorted.stdout)?;
            out.flush()?;
        }
        let mut marks = Vec::new();
        let mut pending = Vec::new();
        for group in sorted.buffered {
            let Group {
                index,
                key,
                records,
                files,
            } = group;
            let buffer =
                (self.routes.buffer(index)).expect("grouped only for matches with a buffer");
            let files = GroupFiles { index, key, files };
            match buffer.try_append_all(&files.key, records) {
                Ok(receipts) => marks.extend(files.mark(&receipts)),
                Err(rest) => pending.push((rest, files)),
            }
        }
        Ok((marks, pending))
    }
}

/// The files of one group, to mark once its records are appended.
struct GroupFiles {
    index: usize,
    key: String,
    /// Each file and the count of the group's records up to its last one.
    files: Vec<(FileKey, usize)>,
}

impl GroupFiles {
    fn mark<'a>(&'a self, receipts: &'a Receipts) -> impl Iterator<Item = Mark> + 'a {
        (self.files.iter()).map(|(file, last)| {
            (
                *file,
                self.index,
                self.key.clone(),
                receipts.covering(*last),
            )
        })
    }
}

/// A sorted batch whose dead letters could not be written (a full disk, EIO).
struct LettersUnwritten {
    sorted: Sorted,
    batch: Arc<Batch>,
    error: std::io::Error,
}

/// The marks of what was appended, and what waits to be.
type WrittenParts = (Vec<Mark>, Vec<(Box<Pending>, GroupFiles)>);

impl Worker {
    /// Retries writing a batch's dead letters with back-off, as a full buffer is waited
    /// for: nothing of the batch goes on (its positions are not saved) and this source
    /// takes no new batch meanwhile, so reading pauses and resumes by itself once the disk
    /// has room. Then the rest of the batch is written.
    async fn keep_letters_until_done(
        self: Arc<Self>,
        rest: Box<LettersUnwritten>,
    ) -> std::io::Result<(WrittenParts, Arc<Batch>)> {
        let LettersUnwritten {
            sorted,
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
        tokio::task::spawn_blocking(move || w.write_sorted(sorted).map(|parts| (parts, batch)))
            .await
            .map_err(std::io::Error::other)?
    }
}
