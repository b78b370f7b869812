//! Appending a batch's records to a buffer: all of them, in order, whatever it takes —
//! waiting while the buffer or its memory is full (back-pressure: the tail thread pauses
//! when the worker stops taking batches), writing chunks held in memory to disk when
//! deliveries do not free it in time, and backing off on write errors such as a full disk.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{error, warn};

use crate::buffer::{AppendError, Buffer, Framed};

/// Longest wait between two attempts to write to a full or failing disk.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Records a first attempt could not append (the buffer was full or failing): what is
/// left of one key's records, from piece `from` on.
pub(super) struct Unwritten {
    pub(super) buffer: Arc<Buffer>,
    pub(super) key: String,
    pub(super) records: Arc<Framed>,
    pub(super) pieces: Vec<(std::ops::Range<usize>, usize)>,
    pub(super) from: usize,
    pub(super) error: AppendError,
}

/// Appends `pieces[from..]` of `records` in order, stopping at the first that fails;
/// returns the index of the first piece not appended, and the error.
pub(super) fn append_pieces(
    buffer: &Buffer,
    key: &str,
    records: &Framed,
    pieces: &[(std::ops::Range<usize>, usize)],
    from: usize,
) -> (usize, Option<AppendError>) {
    for (i, (range, count)) in pieces.iter().enumerate().skip(from) {
        if let Err(e) = buffer.append_framed(key, &records.as_bytes()[range.clone()], *count) {
            return (i, Some(e));
        }
    }
    (pieces.len(), None)
}

/// Appends what a first attempt left, waiting while the buffer is full (back-pressure: the
/// tail thread pauses when this worker stops taking batches) and backing off on write
/// errors such as a full disk.
pub(super) async fn append_until_done(rest: Unwritten, heartbeat: &crate::health::Heartbeat) {
    let Unwritten {
        buffer,
        key,
        records,
        pieces,
        mut from,
        error,
    } = rest;
    let pieces = Arc::new(pieces);
    let mut error = Some(error);
    let mut backoff = Duration::from_millis(100);
    let mut reported = false;
    let mut memory_deadline = None;
    while let Some(e) = error.take() {
        // Waiting for room is by design, not a stall.
        heartbeat.beat();
        match e {
            AppendError::MemoryFull { .. } => {
                // Back-pressure while deliveries keep up; chunks go to disk when they do
                // not (failing, or slower than reading for longer than the wait).
                let deadline =
                    *memory_deadline.get_or_insert_with(|| Instant::now() + buffer.memory_wait());
                if buffer.delivery_failing() || !buffer.wait_for_memory(deadline).await {
                    memory_deadline = None;
                    let b = Arc::clone(&buffer);
                    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || b.spill(false)).await {
                        error!(key = %key, error = %e, retry_in_ms = u64::try_from(backoff.as_millis()).unwrap_or(0), "Cannot write chunks held in memory to disk (disk full?); reading pauses, nothing is dropped.");
                        reported = true;
                        buffer.wait_for_space(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
            AppendError::Full { total, limit } => {
                if !reported {
                    warn!(key = %key, total, limit, "Buffer full: reading pauses until chunks are delivered (overflow_action block).");
                    reported = true;
                }
                buffer.wait_for_space(Duration::from_secs(1)).await;
            }
            AppendError::Io(e) => {
                error!(key = %key, error = %e, retry_in_ms = u64::try_from(backoff.as_millis()).unwrap_or(0), "Cannot write to the buffer (disk full?); reading pauses, nothing is dropped.");
                reported = true;
                buffer.wait_for_space(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
        let (b, k, r, p) = (
            Arc::clone(&buffer),
            key.clone(),
            Arc::clone(&records),
            Arc::clone(&pieces),
        );
        match tokio::task::spawn_blocking(move || append_pieces(&b, &k, &r, &p, from)).await {
            Ok((next, e)) => {
                from = next;
                error = e;
            }
            Err(e) => {
                error!(error = %e, "Append task failed; retrying.");
                error = Some(AppendError::Io(std::io::Error::other(e.to_string())));
            }
        }
    }
    if reported {
        warn!(key = %key, "Buffer accepting events again; reading resumes.");
    }
}
