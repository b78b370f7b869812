//! The buffer's state: open chunks per key, the queue of sealed chunks, limits, and every
//! state change on disk. One `Mutex` guards it; file appends happen under it (page-cache
//! writes), fsyncs of whole chunks outside it where possible.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::{error, info, warn};

use super::chunk::{self, ChunkId, Meta};
use super::records::Records;
use super::retry::Policy;
use super::BufferOptions;
use crate::config::buffer::OverflowAction;

mod memory;
mod outcome;
mod reassembly;
mod seal;

use memory::MemoryChunk;
use seal::queue_resident;

/// Why records could not be appended.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// `total_limit_size` is reached and `overflow_action` says to wait (block,
    /// throw_exception), or nothing could be dropped: try again when space is freed.
    #[error("the buffer is full ({total} of {limit} bytes)")]
    Full {
        /// Bytes on disk.
        total: u64,
        /// The limit.
        limit: u64,
    },
    /// Writing failed (a full disk among others); nothing was appended.
    #[error("writing to the buffer failed: {0}")]
    Io(#[from] io::Error),
    /// Chunks held in memory reached `memory_limit_size`: wait for deliveries, or spill
    /// chunks to disk ([`super::Buffer::spill`]), then try again.
    #[error("chunks in memory reached {limit} bytes")]
    MemoryFull {
        /// The limit.
        limit: u64,
    },
}

struct OpenChunk {
    id: ChunkId,
    /// The file of a chunk written through to disk; `None` for one held in memory.
    file: Option<File>,
    /// A chunk in memory: its bytes (empty for a chunk on disk).
    data: MemoryChunk,
    len: u64,
    records: u64,
    created: Instant,
    created_ms: u64,
    /// The append generation of its first record.
    first_gen: u64,
    /// To be sealed without waiting for `flush_interval` ([`Store::seal_open_soon`]).
    early: bool,
}

/// A chunk that exists only in memory: not yet on disk, so the tail positions of its
/// records must not be saved until it is delivered or spilled.
#[derive(Debug, Clone)]
struct Resident {
    /// The append generation of its first record (see [`Store::unsafe_floors`]).
    first_gen: u64,
    /// Its bytes; `None` while a sender holds them.
    data: Option<MemoryChunk>,
}

#[derive(Debug, Clone)]
struct Queued {
    key: String,
    bytes: u64,
    records: u64,
    attempts: u32,
    created_ms: u64,
    first_failure: Option<(Instant, u64)>,
    next_attempt: Instant,
    in_flight: bool,
    /// Set while the chunk is in memory only.
    resident: Option<Resident>,
}

/// Counts since start, for logs and metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// Chunks delivered.
    pub delivered: u64,
    /// Failed attempts.
    pub retries: u64,
    /// Chunks moved to the backup directory (rejected, retries exhausted, dropped).
    pub backed_up: u64,
    /// Chunks dropped by `drop_oldest_chunk` (counted in `backed_up` too).
    pub dropped: u64,
    /// Chunks or records set aside as corrupt.
    pub quarantined: u64,
    /// Chunks held in memory that were written to disk (a failed attempt, memory full,
    /// shutdown).
    pub spilled: u64,
}

pub(super) struct State {
    seq: u64,
    open: HashMap<String, OpenChunk>,
    /// Chunks full by size, waiting to be fsynced — done off the append path, by the
    /// sender side ([`Store::seal_full`]).
    full: Vec<(String, OpenChunk)>,
    queue: BTreeMap<ChunkId, Queued>,
    total: u64,
    unsynced: u64,
    last_sync: Instant,
    counters: Counters,
    /// Events delivered since start, per key (service).
    delivered_by_key: BTreeMap<String, u64>,
    /// Appends so far: each append's generation (see [`Store::unsafe_floors`]).
    generation: u64,
    /// Bytes of chunks in memory only (open, queued or in flight).
    memory: u64,
    /// Chunks being put together again after a crash (`store/reassembly.rs`).
    reassembly: Option<reassembly::Reassembly>,
    /// When each failing key's retries were last logged.
    retry_reports: outcome::RetryReports,
}

/// Where the buffer lives on disk.
#[derive(Debug, Clone)]
pub(super) struct Dirs {
    pub chunks: PathBuf,
    pub backup: PathBuf,
    pub quarantine: PathBuf,
}

impl Dirs {
    pub(super) fn new(path: &Path) -> Self {
        Dirs {
            chunks: path.join("chunks"),
            backup: path.join("backup"),
            quarantine: path.join("quarantine"),
        }
    }

    pub(super) fn create(&self) -> io::Result<()> {
        for d in [&self.chunks, &self.backup, &self.quarantine] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(d)?;
        }
        Ok(())
    }
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub(super) struct Store {
    pub opts: BufferOptions,
    /// Records per request body chunks are laid out in when read back (see
    /// [`Records::framed_as_json`]); the whole chunk until the output says.
    pub per_body: AtomicUsize,
    pub dirs: Dirs,
    policy: Policy,
    instance: u32,
    state: Mutex<State>,
    /// Whether the output could send a key's chunks now (see [`Store::set_sendable`]).
    sendable: RwLock<Option<SendableFn>>,
    /// Held while filled chunks are fsynced and queued ([`Store::seal_full`]), so that a
    /// group commit waits for a seal under way instead of passing it by.
    sealing: Mutex<()>,
    /// Tests: the chunk whose fsync fails.
    #[cfg(test)]
    pub(super) fail_fsync_of: Mutex<Option<ChunkId>>,
}

/// Asks the output whether a key's chunks could be sent now.
pub(super) type SendableFn = Arc<dyn Fn(&str) -> bool + Send + Sync>;

impl Store {
    pub(super) fn new(opts: BufferOptions, dirs: Dirs) -> Self {
        let policy = Policy::new(opts.retry.clone());
        let state = State {
            seq: 0,
            open: HashMap::new(),
            full: Vec::new(),
            queue: BTreeMap::new(),
            total: 0,
            unsynced: 0,
            last_sync: Instant::now(),
            counters: Counters::default(),
            delivered_by_key: BTreeMap::new(),
            generation: 0,
            memory: 0,
            reassembly: None,
            retry_reports: outcome::RetryReports::default(),
        };
        Store {
            opts,
            dirs,
            policy,
            per_body: AtomicUsize::new(usize::MAX),
            instance: fastrand::u32(..),
            state: Mutex::new(state),
            sendable: RwLock::new(None),
            sealing: Mutex::new(()),
            #[cfg(test)]
            fail_fsync_of: Mutex::new(None),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere must not stop delivery: the state stays consistent per operation.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn chunk_path(&self, id: &str) -> PathBuf {
        self.dirs.chunks.join(format!("{id}.chunk"))
    }

    fn meta_path(&self, id: &str) -> PathBuf {
        self.dirs.chunks.join(format!("{id}.meta"))
    }

    /// The ids of the chunks queued (after recovery: those found on disk).
    pub(super) fn queued_ids(&self) -> std::collections::HashSet<ChunkId> {
        self.lock().queue.keys().cloned().collect()
    }

    /// A new chunk id: names sort by age (see the module doc of [`super`]).
    fn new_id(&self, s: &mut State, created_ms: u64) -> ChunkId {
        s.seq += 1;
        format!("{created_ms:013}-{:08x}-{:06}", self.instance, s.seq)
    }

    /// Puts a recovered sealed chunk in the queue.
    pub(super) fn enqueue_recovered(&self, id: ChunkId, meta: &Meta) {
        let mut s = self.lock();
        s.total += meta.bytes;
        let now = Instant::now();
        let wait_ms = meta
            .next_attempt_ms
            .map_or(0, |t| t.saturating_sub(now_ms()));
        let first_failure = meta.first_failure_ms.map(|ms| {
            (
                now.checked_sub(Duration::from_millis(now_ms().saturating_sub(ms)))
                    .unwrap_or(now),
                ms,
            )
        });
        s.queue.insert(
            id,
            Queued {
                key: meta.key.clone(),
                bytes: meta.bytes,
                records: meta.records,
                attempts: meta.attempts,
                created_ms: meta.created_ms,
                first_failure,
                next_attempt: now + Duration::from_millis(wait_ms),
                in_flight: false,
                resident: None,
            },
        );
    }

    /// Appends `records` records already framed (`framed`); returns whether the delivery
    /// engine should look again: a chunk was sealed to make room (it is ready to send), or
    /// one was opened (its `flush_interval` runs from now).
    pub(super) fn append(
        &self,
        key: &str,
        framed: &[u8],
        records: usize,
    ) -> Result<bool, AppendError> {
        let mut guard = self.lock();
        let s = &mut *guard;
        self.make_room(s, framed.len() as u64)?;
        let incoming = framed.len() as u64;
        if self.in_memory() && s.memory > 0 && s.memory + incoming > self.opts.memory_limit {
            return Err(AppendError::MemoryFull {
                limit: self.opts.memory_limit,
            });
        }
        let limit = self.chunk_limit();
        let needs_new = s.open.get(key).is_some_and(|c| {
            c.records > 0
                && (c.len + incoming > limit
                    || self
                        .opts
                        .chunk_limit_records
                        .is_some_and(|max| c.records + records as u64 > max))
        });
        if needs_new {
            let full = s.open.remove(key).expect("needs_new implies an open chunk");
            if full.file.is_some() {
                s.full.push((key.to_string(), full));
            } else {
                // Nothing to fsync: queued at once.
                queue_resident(s, key, full);
            }
        }
        s.generation += 1;
        let opened = !s.open.contains_key(key);
        if opened {
            let open = self.open_chunk(s, key)?;
            s.total += open.len;
            if open.file.is_none() {
                s.memory += open.len;
            }
            s.open.insert(key.to_string(), open);
        }
        let open = s.open.get_mut(key).expect("opened above");
        match &mut open.file {
            Some(file) => {
                if let Err(e) = file.write_all(&chunk::with_crcs(framed)) {
                    // A partial append (a full disk) is cut back, so the file stays readable.
                    if let Err(e2) = chunk::truncate(file, open.len) {
                        error!(chunk = %open.id, error = %e2, "Could not cut back a partial append; recovery will at start-up.");
                    }
                    return Err(AppendError::Io(e));
                }
                s.unsynced += incoming;
            }
            None => {
                open.data.append(framed);
                s.memory += incoming;
            }
        }
        let open = s.open.get_mut(key).expect("opened above");
        open.len += incoming;
        open.records += records as u64;
        s.total += incoming;
        Ok(needs_new || opened)
    }

    /// A new chunk for `key`: in memory when the buffer keeps chunks there, else a file.
    fn open_chunk(&self, s: &mut State, key: &str) -> io::Result<OpenChunk> {
        let created_ms = now_ms();
        let id = self.new_id(s, created_ms);
        let (file, data, len) = if self.in_memory() && self.may_hold(s, key) {
            let header = chunk::header(key, created_ms);
            let limit = usize::try_from(self.chunk_limit()).unwrap_or(0);
            let per_body = self.per_body.load(Ordering::Relaxed);
            let data = MemoryChunk::new(&header, limit, per_body);
            (None, data, header.len() as u64)
        } else {
            let (file, len) = chunk::create(&self.chunk_path(&id), key, created_ms)?;
            (Some(file), MemoryChunk::default(), len)
        };
        Ok(OpenChunk {
            id,
            file,
            data,
            len,
            records: 0,
            created: Instant::now(),
            created_ms,
            first_gen: s.generation,
            early: false,
        })
    }

    /// Applies `total_limit_size` and `overflow_action` for `incoming` more bytes.
    fn make_room(&self, s: &mut State, incoming: u64) -> Result<(), AppendError> {
        while s.total + incoming > self.opts.total_limit_size {
            let droppable = s
                .queue
                .iter()
                .find(|(_, q)| !q.in_flight)
                .map(|(id, _)| id.clone());
            match (self.opts.overflow_action, droppable) {
                (OverflowAction::DropOldestChunk, Some(id)) => {
                    error!(chunk = %id, limit = self.opts.total_limit_size, "Buffer full: the oldest chunk is moved to the backup directory (overflow_action drop_oldest_chunk).");
                    s.counters.dropped += 1;
                    self.backup_locked(
                        s,
                        &id,
                        "dropped: total_limit_size reached (overflow_action drop_oldest_chunk)",
                    );
                    if s.queue.contains_key(&id) {
                        // It could not be written out (a failing disk): nothing was freed.
                        return Err(AppendError::Full {
                            total: s.total,
                            limit: self.opts.total_limit_size,
                        });
                    }
                }
                _ => {
                    return Err(AppendError::Full {
                        total: s.total,
                        limit: self.opts.total_limit_size,
                    })
                }
            }
        }
        Ok(())
    }

    /// Takes the oldest chunk that is due, of a key with nothing in flight (one chunk per
    /// key at a time keeps each service's events in order; other keys go on).
    pub(super) fn take(&self, now: Instant) -> Option<(ChunkId, String, u32)> {
        let mut s = self.lock();
        let busy: Vec<String> = s
            .queue
            .values()
            .filter(|q| q.in_flight)
            .map(|q| q.key.clone())
            .collect();
        let mut seen_keys: Vec<&str> = Vec::new();
        let mut pick = None;
        for (id, q) in &s.queue {
            if busy.contains(&q.key) || seen_keys.contains(&q.key.as_str()) {
                continue;
            }
            seen_keys.push(&q.key);
            if !q.in_flight && q.next_attempt <= now {
                pick = Some(id.clone());
                break;
            }
        }
        let id = pick?;
        let q = s.queue.get_mut(&id).expect("picked from the queue");
        q.in_flight = true;
        Some((id, q.key.clone(), q.attempts))
    }

    /// Reads a taken chunk's records, setting aside any that fail their CRC.
    pub(super) fn read(&self, id: &str) -> io::Result<Records> {
        let path = self.chunk_path(id);
        match chunk::scan_for_bodies(&path, self.per_body.load(Ordering::Relaxed)) {
            Ok(scan) => {
                if !scan.corrupt.is_empty() || scan.torn_tail.is_some() {
                    error!(chunk = %path.display(), corrupt = scan.corrupt.len(), "Chunk damaged since it was written; sending the intact records, keeping the rest in quarantine.");
                    self.quarantine_pieces(id, &scan);
                }
                Ok(scan.records)
            }
            Err(e) => Err(io::Error::other(e.to_string())),
        }
    }

    pub(super) fn quarantine_pieces(&self, id: &str, scan: &chunk::Scan) {
        for (offset, bytes) in &scan.corrupt {
            let target = self.dirs.quarantine.join(format!("{id}.record-{offset}"));
            if let Err(e) = crate::fsutil::write_private(&target, bytes) {
                error!(file = %target.display(), error = %e, "Could not write a quarantined record.");
            }
        }
        self.lock().counters.quarantined += scan.corrupt.len() as u64;
    }

    /// When the oldest open chunk with records comes of age (`flush_interval`), or now
    /// for one marked early.
    pub(super) fn next_seal(&self) -> Option<Instant> {
        let s = self.lock();
        s.open
            .values()
            .filter(|c| c.records > 0)
            .map(|c| {
                if c.early {
                    c.created
                } else {
                    c.created + self.opts.flush_interval
                }
            })
            .min()
    }

    /// The next time a waiting chunk becomes due.
    pub(super) fn next_due(&self) -> Option<Instant> {
        let s = self.lock();
        s.queue
            .values()
            .filter(|q| !q.in_flight)
            .map(|q| q.next_attempt)
            .min()
    }

    /// Bytes on disk, chunks queued, chunks open.
    pub(super) fn sizes(&self) -> (u64, usize, usize) {
        let s = self.lock();
        (
            s.total,
            s.queue.len(),
            s.open.values().filter(|c| c.records > 0).count(),
        )
    }

    /// Creation time (ms since the epoch) of the oldest chunk not yet delivered.
    pub(super) fn oldest_ms(&self) -> Option<u64> {
        let s = self.lock();
        s.queue
            .values()
            .map(|q| q.created_ms)
            .chain(
                s.open
                    .values()
                    .filter(|c| c.records > 0)
                    .map(|c| c.created_ms),
            )
            .min()
    }

    pub(super) fn counters(&self) -> Counters {
        self.lock().counters
    }

    /// Per key: events delivered since start, and events waiting (open, queued or being
    /// sent).
    pub(super) fn by_key(&self) -> BTreeMap<String, (u64, u64)> {
        let s = self.lock();
        let mut keys: BTreeMap<String, (u64, u64)> = (s.delivered_by_key.iter())
            .map(|(k, n)| (k.clone(), (*n, 0)))
            .collect();
        let open = s.open.iter().map(|(k, c)| (k, c.records));
        let full = s.full.iter().map(|(k, c)| (k, c.records));
        let queued = s.queue.values().map(|q| (&q.key, q.records));
        for (key, records) in open.chain(full).chain(queued) {
            keys.entry(key.clone()).or_default().1 += records;
        }
        keys
    }

    pub(super) fn in_flight(&self) -> usize {
        self.lock().queue.values().filter(|q| q.in_flight).count()
    }

    pub(super) fn note_recovery(&self, quarantined: u64) {
        self.lock().counters.quarantined += quarantined;
        if quarantined > 0 {
            info!(quarantined, dir = %self.dirs.quarantine.display(), "Damaged chunk data set aside at start-up.");
        }
    }
}

fn remove_quietly(path: &Path) {
    if let Err(e) = fs::remove_file(path) {
        if e.kind() != io::ErrorKind::NotFound {
            warn!(file = %path.display(), error = %e, "Could not remove a buffer file.");
        }
    }
}
