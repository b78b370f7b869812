//! One source's worker: checks, routes and writes the lines of each batch, then saves the
//! batch's positions — in that order, so a position never runs ahead of its lines.

use std::io::Write;
use std::sync::Arc;

use tokio::sync::mpsc::Receiver;
use tracing::error;

use crate::config::{Config, Output, SourceKind};
use crate::event::dead_letter::{DeadLetter, DeadLetterStore};
use crate::event::{Origin, Reason, Validator};
use crate::tail::{Batch, PositionStore};

pub(super) struct Worker {
    config: Arc<Config>,
    source: usize,
    store: PositionStore,
    dead_letters: Arc<DeadLetterStore>,
    validator: Validator,
}

impl Worker {
    pub(super) fn new(
        config: Arc<Config>,
        source: usize,
        store: PositionStore,
        dead_letters: Arc<DeadLetterStore>,
    ) -> Self {
        let SourceKind::Tail(tail) = &config.sources[source].kind;
        let validator = Validator::new(tail.cadf_validation, tail.normalize_time);
        Worker {
            config,
            source,
            store,
            dead_letters,
            validator,
        }
    }

    pub(super) async fn run(self, mut batches: Receiver<Batch>) {
        let worker = Arc::new(self);
        while let Some(batch) = batches.recv().await {
            let w = Arc::clone(&worker);
            // File and terminal I/O and fsync: off the async threads.
            let result = tokio::task::spawn_blocking(move || w.handle(&batch)).await;
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    // Positions were not saved: the lines will be read again after a restart.
                    error!(error = %e, "Writing a batch failed; its positions are not saved. Stopping this source.");
                    return;
                }
                Err(e) => {
                    error!(error = %e, "The batch writer failed; stopping this source.");
                    return;
                }
            }
        }
    }

    fn handle(&self, batch: &Batch) -> std::io::Result<()> {
        let source = &self.config.sources[self.source];
        let SourceKind::Tail(tail) = &source.kind;
        let mut letters = Vec::new();
        let mut stdout_bytes = Vec::with_capacity(batch.bytes() + batch.len());
        let mut event = Vec::new();
        for line in batch.lines() {
            event.clear();
            let origin = Origin {
                key: line.key,
                offset: line.offset,
            };
            if let Err(r) = self.validator.check(line.bytes, origin, &mut event) {
                letters.push(DeadLetter::new(
                    r.reason,
                    r.to_string(),
                    line.path,
                    line.offset,
                    line.bytes,
                ));
                continue;
            }
            let tag = tail.tag.expand(&line.path.to_string_lossy());
            match self
                .config
                .route(source.directive.label.as_deref(), &tag)
                .map(|m| &m.output)
            {
                Some(Output::Stdout) => {
                    stdout_bytes.extend_from_slice(&event);
                    stdout_bytes.push(b'\n');
                }
                Some(Output::ActivityTracker(_)) => unreachable!("refused at start-up"),
                None => letters.push(DeadLetter::new(
                    Reason::Unroutable,
                    format!("no <match> receives tag '{tag}'"),
                    line.path,
                    line.offset,
                    line.bytes,
                )),
            }
        }
        for (path, long) in &batch.long_lines {
            let message = format!(
                "line of {} bytes, longer than max_line_size {}",
                long.len, tail.max_line_size
            );
            let mut letter = DeadLetter::new(Reason::LineTooLong, message, path, long.offset, b"");
            letter.length = long.len;
            letters.push(letter);
        }
        self.dead_letters.append(&letters)?;
        if !stdout_bytes.is_empty() {
            let mut out = std::io::stdout().lock();
            out.write_all(&stdout_bytes)?;
            out.flush()?;
        }
        self.store
            .commit(&batch.positions)
            .map_err(std::io::Error::other)
    }
}
