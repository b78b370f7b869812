//! The buffer: where events wait, in chunks per key, until the endpoint takes them — in
//! memory while they can be delivered at once (see `store/memory.rs`: what is held there,
//! when it is written to disk, and how writers learn that their records are safe), on
//! disk, in the layout below, when they cannot, or with `memory_limit_size 0` always.
//!
//! # Layout on disk (version 1)
//!
//! Under the `<buffer>`'s `path` (directories mode 0700, files 0600):
//!
//! - `chunks/<id>.chunk` — a header, then records. Header: magic `ATFWCHNK`, version
//!   (u16 LE, 1), key length K (u16 LE), creation time (u64 LE, ms since the epoch),
//!   CRC32C of the preceding 20 bytes and the key (u32 LE), the key (K bytes of UTF-8).
//!   Each record: length (u32 LE), CRC32C of the payload (u32 LE), payload (the event as
//!   forwarded). Appended to while open; never rewritten in place.
//! - `chunks/<id>.meta` — JSON written after each failed attempt (and for the halves of
//!   a split chunk): `{"v":1,"key","state":"sealed","created_ms","records","bytes",
//!   "attempts","first_failure_ms","next_attempt_ms"}`; replaced by temp file → fsync →
//!   rename → fsync of the directory. A chunk not tried yet, open or sealed, has none:
//!   everything else it would hold is read from the chunk file (recovery scans every
//!   chunk anyway), and skipping it saves two file creations per chunk.
//! - `backup/` — chunks the endpoint rejected for good, whose retries ran out, or that
//!   `drop_oldest_chunk` pushed out; their `.meta` carries `backup_reason`.
//!   `at-forwarder buffer requeue` puts them back.
//! - `quarantine/` — damaged data found at start-up or when sending: whole files with a
//!   bad header, records whose CRC fails, torn tails.
//! - `sent.journal`, `sent.journal.old` — the hashes of the records of each chunk sent,
//!   and which chunks were delivered: after a crash, records read again are not appended
//!   again when delivered, and are put back into their chunk, under its id, when it was
//!   being sent (format in `sent.rs`).
//!
//! Ids are `<created ms, 13 digits>-<instance>-<sequence>`, so names sort by age.
//!
//! # States
//!
//! open (receiving records) → sealed (by `chunk_limit_size`, `chunk_limit_records`, age
//! `flush_interval`, or [`Buffer::seal_open_soon`] when the input caught up with a
//! backlog; fsynced when on disk) → in flight → deleted once
//! the endpoint accepted it, or back to sealed with a later `next_attempt`, or moved to
//! `backup/`. One chunk per key is in flight at a time, oldest first, so each service's
//! events stay in order while a failing service never holds back another.
//!
//! A chunk held in memory has no file until it is spilled: after a failed or refused
//! attempt, behind a failed chunk of its key, when memory stays full, or at shutdown. A
//! key whose chunks are failing, or that the output cannot send (no token), gets files
//! from the start.
//!
//! # The commit rule and the guarantee
//!
//! Chunks on disk: records are appended to open chunks without fsync; a group commit
//! ([`Buffer::sync`]) fsyncs them at least every `flush_interval` or every [`SYNC_BYTES`],
//! and only then are the tail positions of those records saved. Chunks in memory: the
//! positions wait until the chunk is delivered or spilled (the [`Receipt`] of an append
//! and [`Buffer::safety`]: `write.rs`). So a saved position never runs ahead of delivered or
//! durable data: **at-least-once**. Duplicates come only after a crash, for lines read
//! after the last position save (they are read again; some may also have reached the
//! endpoint already).
//!
//! # Recovery
//!
//! At start-up every chunk is read back: temp files of unfinished state changes are
//! removed; an empty file is removed; a file with a bad header goes to `quarantine/`;
//! records whose CRC fails and torn tails are copied to `quarantine/` and the chunk is
//! rewritten with its good records; every chunk left is sealed and queued. Nothing here
//! stops start-up or panics; each problem is an ERROR line naming the file.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tracing::{error, warn};

pub mod chunk;
pub mod engine;
mod handled;
pub mod inspect;
mod records;
mod recovery;
pub mod retry;
mod sent;
mod store;
mod write;

pub use engine::{deliver, Sink};
pub use records::{Framed, Records};
pub use store::{AppendError, Counters};
pub use write::{Pending, Receipt, Receipts, Safety};

pub use crate::config::buffer::{BufferOptions, SYNC_BYTES};

/// How a send went; the engine decides what follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted by the endpoint: the chunk is deleted.
    Delivered,
    /// Try again later (after `after` when the endpoint said so in `Retry-After`).
    Retry {
        /// The endpoint's requested delay.
        after: Option<Duration>,
        /// Why, for the log.
        reason: String,
    },
    /// Too large for the endpoint: split in halves; a single record is dead-lettered.
    Split,
    /// Refused for good: the chunk goes to `backup/`.
    Reject {
        /// Why, for the log and the backup's `.meta`.
        reason: String,
    },
}

/// A chunk taken for sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    /// Its id: stable across retries and restarts (the Idempotency-Key).
    pub id: String,
    /// Its key (the service).
    pub key: String,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Its records.
    pub records: Records,
}

/// A disk buffer: shared by the writer (a pipeline worker) and the senders.
pub struct Buffer {
    store: store::Store,
    /// Records found at start-up or delivered by the previous process, not appended again
    /// when read again.
    recovered: handled::Recovered,
    /// What was sent and delivered, for the next process (see `sent.rs`).
    sent: sent::Journal,
    /// Signalled when a chunk may have become ready to send.
    ready: Notify,
    /// Signalled when space was freed.
    space: Notify,
}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buffer")
            .field("path", &self.store.opts.path)
            .finish_non_exhaustive()
    }
}

impl Buffer {
    /// Opens the buffer at `opts.path`, recovering what is there.
    pub fn open(opts: BufferOptions) -> std::io::Result<Arc<Self>> {
        let dirs = store::Dirs::new(&opts.path);
        dirs.create()?;
        let opts_path = opts.path.clone();
        let store = store::Store::new(opts, dirs);
        let recovered = handled::Recovered::new();
        recovery::recover(&store, &recovered);
        let in_buffer = store.queued_ids();
        store.expect_again(sent::load(&opts_path, &recovered, &in_buffer));
        Ok(Arc::new(Buffer {
            store,
            recovered,
            sent: sent::Journal::new(&opts_path),
            ready: Notify::new(),
            space: Notify::new(),
        }))
    }

    /// Appends records under `key` in one attempt, all or none of them (not yet durable:
    /// see [`Buffer::sync`]); the pipeline appends with [`Buffer::try_append_all`].
    pub fn append(&self, key: &str, records: &[&[u8]]) -> Result<Receipt, AppendError> {
        let mut framed = Framed::default();
        for r in records {
            framed.push(r);
        }
        self.append_framed(key, framed.as_bytes(), framed.records())?;
        Ok(self.receipt())
    }

    /// Appends `records` records framed as [`Framed`] holds them (a whole `Framed`, or
    /// one of its [`Framed::pieces`]). All or none of them are appended.
    fn append_framed(&self, key: &str, framed: &[u8], records: usize) -> Result<(), AppendError> {
        match self.store.append(key, framed, records) {
            Ok(true) => {
                // A chunk full by size is ready now, and a new one's age is to be watched.
                self.ready.notify_one();
                Ok(())
            }
            Ok(false) => Ok(()),
            Err(e @ AppendError::MemoryFull { .. }) => {
                // Memory is full: what is open is sent now rather than at its age.
                if self.store.seal_resident() > 0 {
                    self.ready.notify_one();
                }
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Whether a group commit is due.
    pub fn sync_due(&self, now: Instant) -> bool {
        self.store.sync_due(now)
    }

    /// Makes every appended record durable (fsync). Positions may be saved afterwards.
    pub fn sync(&self) -> std::io::Result<()> {
        self.store.sync()
    }

    /// Has the open chunks sealed and sent without waiting for their `flush_interval`:
    /// the input they were filled from has caught up with a backlog, so nothing more is
    /// coming soon to fill them.
    pub fn seal_open_soon(&self) {
        if self.store.seal_open_soon() > 0 {
            self.ready.notify_one();
        }
    }

    /// Seals chunks older than `flush_interval` (every open chunk when `all`), making
    /// them ready to send.
    pub fn seal_due(&self, now: Instant, all: bool) -> std::io::Result<usize> {
        let sealed = self.store.seal_due(now, all)?;
        // (A chunk that cannot be written is logged and stays in memory.)
        if self.store.spill_failing().is_ok_and(|n| n > 0) {
            self.space.notify_waiters();
        }
        if sealed > 0 {
            self.ready.notify_waiters();
            self.ready.notify_one();
        }
        Ok(sealed)
    }

    /// Chunks worth waiting for at shutdown: in memory, being sent, or due for a key the
    /// output can send (not those waiting for a retry or a token; they are on disk).
    pub fn flushable(&self) -> usize {
        self.store.flushable(Instant::now())
    }

    /// Bytes on disk, chunks queued (sealed), chunks open.
    pub fn sizes(&self) -> (u64, usize, usize) {
        self.store.sizes()
    }

    /// Creation time (ms since the epoch) of the oldest chunk not yet delivered: every
    /// record appended before it is delivered, or kept aside on disk (backup, dead letters).
    pub fn oldest_undelivered_ms(&self) -> Option<u64> {
        self.store.oldest_ms()
    }

    /// Age of the oldest event not yet delivered.
    pub fn oldest_age(&self) -> Option<Duration> {
        self.store
            .oldest_ms()
            .map(|ms| Duration::from_millis(store::now_ms().saturating_sub(ms)))
    }

    /// Counts since start.
    pub fn counters(&self) -> Counters {
        self.store.counters()
    }

    /// Per key (service): events delivered since start, and events waiting in the buffer.
    pub fn by_key(&self) -> std::collections::BTreeMap<String, (u64, u64)> {
        self.store.by_key()
    }

    /// Waits until space may have been freed, or `timeout` passed.
    pub async fn wait_for_space(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.space.notified()).await;
    }

    /// Takes the next chunk to send, if one is due, with its records. Damaged records are
    /// set aside; a chunk that cannot be read at all goes to `backup/`.
    pub fn take(&self, now: Instant) -> Option<Taken> {
        if let Err(e) = self.store.seal_full() {
            error!(error = %e, "Sealing full chunks failed; will retry.");
        }
        loop {
            let (id, key, attempts) = self.store.take(now)?;
            let read = match self.store.take_resident(&id) {
                Some(records) => Ok(records),
                None => self.store.read(&id),
            };
            match read {
                Ok(records) if records.is_empty() => self.store.discard(&id),
                Ok(records) => {
                    let per_body = self
                        .store
                        .per_body
                        .load(std::sync::atomic::Ordering::Relaxed);
                    self.sent.sending(&id, &key, per_body, &records);
                    return Some(Taken {
                        id,
                        key,
                        attempts,
                        records,
                    });
                }
                Err(e) => {
                    error!(chunk = %id, error = %e, "Chunk unreadable; moving it to the backup directory.");
                    let _ = self.store.finish(
                        &id,
                        &Outcome::Reject {
                            reason: format!("unreadable: {e}"),
                        },
                        now,
                    );
                    // If it could not be moved either, it waits like a failed attempt
                    // (a no-op once it is moved), and this call ends rather than take
                    // it again at once; the caller comes back when something is due.
                    let _ = self.store.finish(
                        &id,
                        &Outcome::Retry {
                            after: None,
                            reason: format!("unreadable: {e}"),
                        },
                        now,
                    );
                    return None;
                }
            }
        }
    }

    /// Applies the outcome of sending `taken`. `dead_letter` receives a single record too
    /// large to send.
    pub fn finish(
        &self,
        taken: &Taken,
        outcome: &Outcome,
        dead_letter: impl FnOnce(&[u8]),
    ) -> std::io::Result<()> {
        let now = Instant::now();
        if matches!(outcome, Outcome::Retry { .. } | Outcome::Reject { .. }) {
            // A chunk held in memory goes to disk before it waits or is backed up; if
            // that fails it stays in memory (and its lines' positions unsaved).
            let _ = self.store.spill_taken(&taken.id, &taken.records);
        }
        let result = match outcome {
            Outcome::Split if taken.records.len() <= 1 => {
                warn!(chunk = %taken.id, "A single event is too large for the endpoint; dead-lettering it.");
                if let Some(record) = taken.records.get(0) {
                    dead_letter(record);
                }
                self.store.discard(&taken.id);
                Ok(())
            }
            Outcome::Split => self.store.split(&taken.id, &taken.records),
            other => self.store.finish(&taken.id, other, now),
        };
        if matches!(outcome, Outcome::Delivered) && result.is_ok() {
            self.sent.delivered(&taken.id);
        }
        if matches!(outcome, Outcome::Retry { .. }) {
            // Chunks queued behind this one wait on disk (an error is logged by the spill).
            let _ = self.store.spill_failing();
        }
        if result.is_err() {
            // A chunk held in memory gets its bytes back (a sender took them): a split
            // that could not write its halves would otherwise leave nothing to retry.
            let _ = self.store.spill_taken(&taken.id, &taken.records);
            // The chunk stays in flight in memory: release it so it is retried.
            let _ = self.store.finish(
                &taken.id,
                &Outcome::Retry {
                    after: None,
                    reason: "could not record the outcome".into(),
                },
                now,
            );
        }
        self.space.notify_waiters();
        self.ready.notify_one();
        result
    }

    /// Chunks read back to be sent are laid out in place as request bodies of `records`
    /// records each (the output's events per request), so that sending copies nothing.
    pub fn lay_out_bodies(&self, records: usize) {
        self.store
            .per_body
            .store(records, std::sync::atomic::Ordering::Relaxed);
    }

    /// Bytes of chunks held in memory only.
    pub fn memory(&self) -> u64 {
        self.store.memory()
    }

    /// How long an append waits for deliveries to free memory before chunks are written
    /// to disk instead: `flush_interval`, at most 5 s.
    fn memory_wait(&self) -> Duration {
        self.store.opts.flush_interval.min(Duration::from_secs(5))
    }

    /// Waits until a chunk's worth of memory is free, or `deadline`; returns whether it is.
    async fn wait_for_memory(&self, deadline: Instant) -> bool {
        let limit = self.store.opts.memory_limit;
        let room = self.store.chunk_limit();
        loop {
            let freed = self.space.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if self.store.memory() + room <= limit {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            let _ = tokio::time::timeout(deadline - now, freed).await;
        }
    }

    /// Writes chunks held in memory to disk, oldest first, until half the memory limit is
    /// free (every one not being sent when `all`: at the end of the input, so that the
    /// positions of what was read can be saved); returns how many.
    pub fn spill(&self, all: bool) -> std::io::Result<usize> {
        let spilled = self.store.spill(all)?;
        if spilled > 0 {
            self.space.notify_waiters();
        }
        Ok(spilled)
    }

    /// Signalled when a chunk left the buffer or memory (delivered, spilled, backed up).
    pub fn progress(&self) -> &Notify {
        &self.space
    }

    /// When the oldest open chunk is to be sealed by age.
    pub(super) fn next_seal(&self) -> Option<Instant> {
        self.store.next_seal()
    }

    /// When the next waiting chunk becomes due.
    pub fn next_due(&self) -> Option<Instant> {
        self.store.next_due()
    }

    /// Chunks being sent now.
    pub fn in_flight(&self) -> usize {
        self.store.in_flight()
    }

    pub(super) fn ready(&self) -> &Notify {
        &self.ready
    }
}
