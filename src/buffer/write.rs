//! The write side: appending one key's records — all of them, in order, whatever it takes
//! — and the receipts that tell the writer when they are safe (delivered, or in a chunk
//! file; see `store/memory.rs`), so that it may save the tail positions they were read at.
//!
//! A first attempt ([`Buffer::try_append_all`]) never waits: it appends in pieces no larger
//! than a chunk, each all-or-nothing (so a retry never appends twice). What it could not
//! append comes back as [`Pending`], whose [`Pending::finish`] waits while the buffer or its
//! memory is full (back-pressure: the tail thread pauses while its worker is here), writes
//! chunks held in memory to disk when deliveries do not free memory in time, and backs off
//! on write errors such as a full disk.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use super::{AppendError, Buffer, Framed};
use crate::health::Heartbeat;

/// Longest wait between two attempts to write to a full or failing disk.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Where an append stands in the buffer's order: safe once every record appended up to
/// it under its key is delivered or on disk ([`Safety::is_safe`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Receipt(u64);

/// The receipts of one [`Buffer::try_append_all`], piece by piece.
#[derive(Debug, Clone)]
pub struct Receipts {
    /// After each piece: the records appended so far, and its receipt.
    pieces: Vec<(usize, Receipt)>,
    /// Records found in the buffer already were left out: indexes no longer match pieces.
    renumbered: bool,
    /// When nothing was appended: everything appended before.
    before: Receipt,
}

impl Receipts {
    /// The receipt of the piece that holds the first `records` records (of those given to
    /// the append).
    pub fn covering(&self, records: usize) -> Receipt {
        if self.renumbered {
            return self.last();
        }
        (self.pieces.iter())
            .find(|(appended, _)| *appended >= records)
            .map_or_else(|| self.last(), |(_, r)| *r)
    }

    /// The receipt of the whole append.
    pub fn last(&self) -> Receipt {
        self.pieces.last().map_or(self.before, |(_, r)| *r)
    }
}

/// Which receipts are safe, as of one look at the buffer.
#[derive(Debug, Clone)]
pub struct Safety {
    /// Per key, the lowest generation still in memory only.
    floors: Vec<(String, u64)>,
}

impl Safety {
    /// Whether the records of `key` appended up to `receipt` are delivered or on disk.
    pub fn is_safe(&self, key: &str, receipt: Receipt) -> bool {
        let floor = (self.floors.iter())
            .find(|(k, _)| k == key)
            .map_or(u64::MAX, |(_, f)| *f);
        floor > receipt.0
    }
}

/// What a first attempt could not append: the rest of one key's records.
pub struct Pending {
    buffer: Arc<Buffer>,
    key: String,
    records: Arc<Framed>,
    pieces: Arc<Vec<(Range<usize>, usize)>>,
    from: usize,
    error: AppendError,
    receipts: Receipts,
}

impl Buffer {
    /// Appends `records` under `key` without waiting; see the module doc. Records already
    /// in the buffer when it was opened (lines read again after a crash) are left out.
    pub fn try_append_all(
        self: &Arc<Self>,
        key: &str,
        mut records: Framed,
    ) -> Result<Receipts, Box<Pending>> {
        let skipped = self.recovered.remove_known(&mut records);
        if skipped > 0 {
            info!(key = %key, records = skipped, "Lines read again after a crash were already in the buffer; not appended twice.");
        }
        // Records of a chunk that was being sent at the crash go back into it instead
        // (`store/reassembly.rs`); they count as appended, and hold the receipt below.
        let skipped = skipped + self.store.set_aside(key, &mut records);
        let limit = usize::try_from(self.store.chunk_limit()).unwrap_or(usize::MAX);
        let pieces = records.pieces(limit);
        let mut receipts = Receipts {
            pieces: Vec::with_capacity(pieces.len()),
            renumbered: skipped > 0,
            before: self.receipt(),
        };
        match self.append_pieces(key, &records, &pieces, 0, &mut receipts) {
            None => Ok(receipts),
            Some((from, error)) => Err(Box::new(Pending {
                buffer: Arc::clone(self),
                key: key.to_string(),
                records: Arc::new(records),
                pieces: Arc::new(pieces),
                from,
                error,
                receipts,
            })),
        }
    }

    /// The receipt of the last append.
    pub(super) fn receipt(&self) -> Receipt {
        Receipt(self.store.generation())
    }

    /// Which receipts are safe now.
    pub fn safety(&self) -> Safety {
        Safety {
            floors: self.store.unsafe_floors(),
        }
    }

    /// Appends `pieces[from..]` in order, noting each one's receipt; stops at the first
    /// that fails, returning its index and the error.
    fn append_pieces(
        &self,
        key: &str,
        records: &Framed,
        pieces: &[(Range<usize>, usize)],
        from: usize,
        receipts: &mut Receipts,
    ) -> Option<(usize, AppendError)> {
        let mut appended = receipts.pieces.last().map_or(0, |(n, _)| *n);
        for (i, (range, count)) in pieces.iter().enumerate().skip(from) {
            if let Err(e) = self.append_framed(key, &records.as_bytes()[range.clone()], *count) {
                return Some((i, e));
            }
            appended += count;
            receipts.pieces.push((appended, self.receipt()));
        }
        None
    }
}

impl Pending {
    /// Appends the rest, whatever it takes (see the module doc); `heartbeat` beats while
    /// waiting for room, which is by design and not a stall.
    pub async fn finish(self, heartbeat: &Heartbeat) -> Receipts {
        let Pending {
            buffer,
            key,
            records,
            pieces,
            mut from,
            error,
            mut receipts,
        } = self;
        let mut error = Some(error);
        let mut backoff = Duration::from_millis(100);
        let mut reported = false;
        let mut memory_deadline = None;
        while let Some(e) = error.take() {
            heartbeat.beat();
            match e {
                AppendError::MemoryFull { .. } => {
                    // Back-pressure while deliveries keep up; chunks go to disk when they
                    // do not (failing, or slower than reading for longer than the wait).
                    let deadline = *memory_deadline
                        .get_or_insert_with(|| Instant::now() + buffer.memory_wait());
                    if buffer.store.failing() || !buffer.wait_for_memory(deadline).await {
                        memory_deadline = None;
                        let b = Arc::clone(&buffer);
                        if let Ok(Err(e)) =
                            tokio::task::spawn_blocking(move || b.spill(false)).await
                        {
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
            let mut rc = receipts.clone();
            let attempt = tokio::task::spawn_blocking(move || {
                let failed = b.append_pieces(&k, &r, &p, from, &mut rc);
                (failed, rc)
            });
            match attempt.await {
                Ok((failed, rc)) => {
                    receipts = rc;
                    if let Some((next, e)) = failed {
                        from = next;
                        error = Some(e);
                    }
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
        receipts
    }
}
