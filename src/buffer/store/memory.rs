//! Chunks held in memory (`memory_limit_size` above 0): a chunk lives only in memory
//! while it is open, queued and sent, and is written to disk — *spilled* — only when it
//! cannot be delivered at once: a failed attempt, a rejection, memory full for longer
//! than the wait the pipeline allows, or shutdown. Its bytes are laid out as its file
//! would be, but each record's frame header holds, in memory, its separator in the
//! request bodies ([`MemoryChunk`]); a spill puts the frame headers back and writes the
//! bytes at once (temp file, fsync, rename, fsync of the directory), and everything after
//! it treats the chunk as any other on disk. A key that
//! could not go out at once anyway — failing, or one the output cannot send
//! ([`crate::buffer::Sink::can_send`]) — gets files from the start ([`Store::may_hold`]).
//!
//! A chunk in memory is not durable, so the tail positions of its records must not be
//! saved until it is delivered or spilled. Every append has a *generation*; each chunk
//! in memory remembers the generation of its first record. An append's receipt is the
//! generation after it (`write.rs`); it is safe once its key's floor
//! ([`Store::unsafe_floors`]) is above it: every chunk that could hold one of its records
//! has then been delivered or is on disk.

use std::io;
use std::ops::Range;

use tracing::{error, warn};

use super::{chunk, queue_resident, Records, SendableFn, State, Store};
use crate::buffer::records::separator;

impl Store {
    /// Whether new chunks are held in memory.
    pub(in crate::buffer) fn in_memory(&self) -> bool {
        self.opts.memory_limit > 0
    }

    /// The size at which chunks are sealed: `chunk_limit_size` × `chunk_full_threshold`
    /// (fluentd's "full"), and at most a quarter of `memory_limit_size` for chunks in
    /// memory, so several keys' chunks fit together.
    pub(in crate::buffer) fn chunk_limit(&self) -> u64 {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let full = ((self.opts.chunk_limit_size as f64)
            * self.opts.chunk_full_threshold.clamp(0.01, 1.0)) as u64;
        let full = full.max(1);
        if self.in_memory() {
            full.min((self.opts.memory_limit / 4).max(1))
        } else {
            full
        }
    }

    /// Installs the output's answer to "could a chunk of this key be sent now?".
    pub(in crate::buffer) fn set_sendable(&self, sendable: SendableFn) {
        *self
            .sendable
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(sendable);
    }

    /// Whether a new chunk of `key` may be held in memory. Not when it could not go out
    /// at once: its key's chunks are failing, or the output cannot send it (no token).
    /// Held, it would be written to disk after its first attempt anyway, and meanwhile
    /// hold back the positions of every file with lines for it — a crash then sends those
    /// files' lines again.
    pub(super) fn may_hold(&self, s: &State, key: &str) -> bool {
        if s.queue.values().any(|q| q.key == key && q.attempts > 0) {
            return false;
        }
        let sendable = self
            .sendable
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        sendable.as_ref().is_none_or(|can| can(key))
    }

    /// The generation of the last append.
    pub(in crate::buffer) fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Writes to disk the queued chunks in memory of keys whose oldest chunk waits for a
    /// retry: they would wait behind it (one chunk per key in flight), holding memory and
    /// their lines' positions for as long as the endpoint fails.
    pub(in crate::buffer) fn spill_failing(&self) -> io::Result<usize> {
        let mut s = self.lock();
        let mut failing: Vec<&str> = Vec::new();
        for q in s.queue.values().filter(|q| q.attempts > 0) {
            if !failing.contains(&q.key.as_str()) {
                failing.push(&q.key);
            }
        }
        if failing.is_empty() {
            return Ok(0);
        }
        let ids: Vec<String> = (s.queue.iter())
            .filter(|(_, q)| {
                !q.in_flight
                    && failing.contains(&q.key.as_str())
                    && q.resident.as_ref().is_some_and(|r| r.data.is_some())
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in &ids {
            self.spill_locked(&mut s, id)?;
        }
        Ok(ids.len())
    }

    /// Chunks a flush at shutdown waits for: held in memory, being sent, or due now for a
    /// key the output can send. Not those waiting for a retry or for a token: they are on
    /// disk, and sent after the next start.
    pub(in crate::buffer) fn flushable(&self, now: std::time::Instant) -> usize {
        let s = self.lock();
        let sendable = self
            .sendable
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let can = |key: &str| sendable.as_ref().is_none_or(|can| can(key));
        (s.queue.values())
            .filter(|q| {
                q.resident.is_some() || q.in_flight || (q.next_attempt <= now && can(&q.key))
            })
            .count()
    }

    /// Whether a chunk waits for a retry.
    pub(in crate::buffer) fn failing(&self) -> bool {
        self.lock().queue.values().any(|q| q.attempts > 0)
    }

    /// Per key, the lowest first generation among its chunks in memory only: records
    /// appended under it at a generation below it are delivered or on disk (keys without
    /// chunks in memory are left out).
    pub(in crate::buffer) fn unsafe_floors(&self) -> Vec<(String, u64)> {
        let s = self.lock();
        let mut floors: Vec<(String, u64)> = Vec::new();
        let open = (s.open.iter())
            .filter(|(_, c)| c.file.is_none() && c.records > 0)
            .map(|(k, c)| (k, c.first_gen));
        let queued =
            (s.queue.values()).filter_map(|q| q.resident.as_ref().map(|r| (&q.key, r.first_gen)));
        let rebuilt = s.reassembly.iter().flat_map(|r| r.floors());
        for (key, generation) in open.chain(queued).chain(rebuilt) {
            match floors.iter_mut().find(|(k, _)| k == key) {
                Some((_, f)) => *f = (*f).min(generation),
                None => floors.push((key.clone(), generation)),
            }
        }
        floors
    }

    /// Bytes of chunks in memory only.
    pub(in crate::buffer) fn memory(&self) -> u64 {
        self.lock().memory
    }

    /// A taken chunk's records straight from memory, laid out as request bodies (no
    /// CRCs to check: the bytes never left this process). `None` if it is on disk.
    pub(in crate::buffer) fn take_resident(&self, id: &str) -> Option<Records> {
        let mut s = self.lock();
        let q = s.queue.get_mut(id)?;
        let data = q.resident.as_mut()?.data.take()?;
        drop(s);
        Some(data.into_records(self.per_body.load(std::sync::atomic::Ordering::Relaxed)))
    }

    /// Writes a taken chunk held in memory to disk from its records (its bytes were laid
    /// out as request bodies), before a retry or a move to `backup/`. Nothing to do for a
    /// chunk already on disk. On failure the bytes stay in memory and the error is returned.
    pub(in crate::buffer) fn spill_taken(&self, id: &str, records: &Records) -> io::Result<()> {
        let mut s = self.lock();
        let Some(q) = s.queue.get(id) else {
            return Ok(());
        };
        if q.resident.is_none() {
            return Ok(());
        }
        let mut data = MemoryChunk::framed(chunk::header(&q.key, q.created_ms));
        for r in records {
            data.push(r);
        }
        let q = s.queue.get_mut(id).expect("present above");
        if let Some(r) = &mut q.resident {
            r.data = Some(data);
        }
        self.spill_locked(&mut s, id)
    }

    /// Writes a queued chunk held in memory to its file; it counts as on disk afterwards.
    pub(super) fn spill_locked(&self, s: &mut State, id: &str) -> io::Result<()> {
        let Some(q) = s.queue.get_mut(id) else {
            return Ok(());
        };
        let Some(data) = q.resident.as_mut().and_then(|r| r.data.take()) else {
            return Ok(());
        };
        let data = data.into_framed();
        match crate::fsutil::replace_file(&self.chunk_path(id), &data.bytes) {
            Ok(()) => {
                q.resident = None;
                s.memory = s.memory.saturating_sub(data.bytes.len() as u64);
                s.counters.spilled += 1;
                Ok(())
            }
            Err(e) => {
                if let Some(r) = &mut q.resident {
                    r.data = Some(data);
                }
                error!(chunk = %id, error = %e, "Could not write a chunk held in memory to disk; it stays in memory and its lines' positions are not saved.");
                Err(e)
            }
        }
    }

    /// Seals every open chunk held in memory (no fsync needed); returns how many.
    pub(in crate::buffer) fn seal_resident(&self) -> usize {
        let mut s = self.lock();
        self.queue_rebuilt_due(&mut s, std::time::Instant::now(), true) + seal_open_resident(&mut s)
    }

    /// Frees memory by writing chunks to disk, oldest first, until at most half of
    /// `memory_limit_size` is held (all of them when `all`, at shutdown): queued chunks
    /// first, then open ones, sealed for it. Chunks being sent stay. Returns how many
    /// were written.
    pub(in crate::buffer) fn spill(&self, all: bool) -> io::Result<usize> {
        let mut s = self.lock();
        let target = if all { 0 } else { self.opts.memory_limit / 2 };
        let mut spilled = 0;
        for seal_open in [false, true] {
            if seal_open && s.memory > target {
                self.queue_rebuilt_due(&mut s, std::time::Instant::now(), true);
                seal_open_resident(&mut s);
            }
            let ids: Vec<String> = (s.queue.iter())
                .filter(|(_, q)| {
                    !q.in_flight && q.resident.as_ref().is_some_and(|r| r.data.is_some())
                })
                .map(|(id, _)| id.clone())
                .collect();
            for id in ids {
                if s.memory <= target {
                    break;
                }
                self.spill_locked(&mut s, &id)?;
                spilled += 1;
            }
        }
        if spilled > 0 && !all {
            warn!(
                chunks = spilled,
                limit = self.opts.memory_limit,
                "Chunks waited in memory too long (delivery is slow or failing); written to disk."
            );
        }
        Ok(spilled)
    }
}

/// Queues every open chunk held in memory; returns how many.
fn seal_open_resident(s: &mut State) -> usize {
    let keys: Vec<String> = (s.open.iter())
        .filter(|(_, c)| c.file.is_none() && c.records > 0)
        .map(|(k, _)| k.clone())
        .collect();
    for key in &keys {
        let open = s.open.remove(key).expect("listed above");
        queue_resident(s, key, open);
    }
    keys.len()
}

/// The bytes of a chunk held in memory: its header and records as its file holds them,
/// except that while `per_body` is set each record's 8-byte frame header holds its
/// separator in the request bodies instead (see [`Records::framed_as_json`]). They are
/// written as records are appended, while the bytes are in the appending thread's cache:
/// done when the chunk was taken, it was one dependent cache miss per record (the
/// record's length, to find the next), 5 % of the forwarder. A chunk written to disk gets
/// its frame headers back first ([`MemoryChunk::into_framed`]).
#[derive(Debug, Clone, Default)]
pub(in crate::buffer) struct MemoryChunk {
    bytes: Vec<u8>,
    /// Where each record's payload lies in `bytes`.
    spans: Vec<Range<usize>>,
    /// Records per request body the separators were written for; `None` while the frame
    /// headers are in place.
    per_body: Option<usize>,
}

impl MemoryChunk {
    /// A chunk of `header`, with room for `limit` bytes of records and the `]` that ends
    /// its request bodies.
    pub(super) fn new(header: &[u8], limit: usize, per_body: usize) -> Self {
        let mut bytes = Vec::with_capacity(header.len() + limit + 1);
        bytes.extend_from_slice(header);
        MemoryChunk {
            bytes,
            spans: Vec::new(),
            per_body: Some(per_body),
        }
    }

    /// A chunk of `header` whose records keep their frame headers.
    pub(super) fn framed(header: Vec<u8>) -> Self {
        MemoryChunk {
            bytes: header,
            spans: Vec::new(),
            per_body: None,
        }
    }

    /// Its size in bytes, as its file would be.
    pub(super) fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Frames `record` after the others.
    pub(super) fn push(&mut self, record: &[u8]) {
        let start = self.bytes.len() + 8;
        chunk::frame(record, &mut self.bytes);
        self.spans.push(start..self.bytes.len());
    }

    /// Appends records framed as a chunk file holds them (length, CRC32C, payload each).
    pub(super) fn append(&mut self, framed: &[u8]) {
        let mut at = self.bytes.len();
        self.bytes.extend_from_slice(framed);
        while let Some(header) = self.bytes.get(at..at + 8) {
            let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
            if let Some(per) = self.per_body {
                let index = self.spans.len();
                self.bytes[at..at + 8].copy_from_slice(separator(index, per));
            }
            self.spans.push(at + 8..at + 8 + len);
            at += 8 + len;
        }
    }

    /// The records, laid out as request bodies of `per_body` records each unless they
    /// already are.
    fn into_records(self, per_body: usize) -> Records {
        match self.per_body {
            Some(per) => Records::laid_out_as_json(self.bytes, self.spans, per),
            None => {
                let frames_start = self.spans.first().map_or(self.bytes.len(), |s| s.start - 8);
                Records::framed_as_json(self.bytes, self.spans, frames_start, per_body)
            }
        }
    }

    /// The same bytes with their frame headers (length, CRC32C) back in place: as the
    /// chunk's file holds them.
    fn into_framed(mut self) -> Self {
        if self.per_body.take().is_some() {
            for span in &self.spans {
                let len = u32::try_from(span.len()).unwrap_or(u32::MAX);
                let crc = crc32c::crc32c(&self.bytes[span.clone()]);
                self.bytes[span.start - 8..span.start - 4].copy_from_slice(&len.to_le_bytes());
                self.bytes[span.start - 4..span.start].copy_from_slice(&crc.to_le_bytes());
            }
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::Framed;

    #[test]
    fn a_chunk_in_memory_reads_as_request_bodies_and_writes_as_its_file() {
        let events = [r#"{"a":1}"#, r#"{"b":[2]}"#, "{}", r#"{"d":"x"}"#, "[]"];
        let header = chunk::header("svc", 7);
        let mut data = MemoryChunk::new(&header, 1 << 10, 2);
        // Appended in two pieces, as a batch's records are.
        for part in [&events[..3], &events[3..]] {
            let mut framed = Framed::default();
            part.iter().for_each(|e| framed.push(e.as_bytes()));
            data.append(framed.as_bytes());
        }
        let records = data.clone().into_records(usize::MAX);
        assert_eq!(records, events);
        for (part, body) in [
            (0..2, "[{\"a\":1},{\"b\":[2]}]"),
            (2..4, "[{},{\"d\":\"x\"}]"),
        ] {
            let json = records.json(part).expect("laid out in bodies of two");
            let parsed: serde_json::Value = serde_json::from_slice(&json).unwrap();
            assert_eq!(
                parsed,
                serde_json::from_str::<serde_json::Value>(body).unwrap()
            );
        }
        // Written to disk: a chunk file that reads back whole, CRCs and all.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.chunk");
        let framed = data.into_framed();
        std::fs::write(&path, &framed.bytes).unwrap();
        let scan = chunk::scan(&path).unwrap();
        assert!(scan.corrupt.is_empty() && scan.torn_tail.is_none());
        assert_eq!(scan.key, "svc");
        assert_eq!(scan.records, events);
        // Kept in memory after a failed write, it still reads as bodies.
        assert_eq!(framed.into_records(2), events);
    }
}
