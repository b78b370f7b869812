//! Chunks put together again after a crash (see `sent.rs`). The previous process was
//! sending them when it died, so the endpoint may hold them. Their records come back
//! through the tail, read again after the last saved position; each is set aside into its
//! chunk's slot instead of being appended. A chunk whose every record came back is queued
//! under its own id — the same records in the same order, laid out in the same request
//! bodies, so with the same Idempotency-Keys: an endpoint that holds it answers with a
//! replay, one that does not takes it as new. A chunk still incomplete [`Store::rebuild_wait`]
//! after its last record came back (its file was deleted meanwhile, or a record of it was
//! delivered in another chunk) is queued under a new id: its records may then arrive twice,
//! but are never lost — under the old id, an endpoint holding the old chunk would drop
//! them as a replay. So is one whose request bodies would differ (the output's
//! `max_events_per_request` changed).
//!
//! Until it is queued and then delivered or written to disk, such a chunk holds its key's
//! floor ([`Store::unsafe_floors`]) as any chunk in memory does: the positions of the
//! lines set aside are not saved before their records are safe.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tracing::info;

use super::memory::MemoryChunk;
use super::{chunk, now_ms, ChunkId, Queued, Resident, State, Store};
use crate::buffer::handled::{hash, REBUILD_FOR};
use crate::buffer::records::Framed;
use crate::buffer::sent::Sent;

/// The chunks being put together again, until [`REBUILD_FOR`] after the start.
pub(super) struct Reassembly {
    /// Each awaited record's chunk and slot.
    slot_of: HashMap<u64, (usize, usize)>,
    chunks: Vec<Rebuilt>,
    until: Instant,
}

struct Rebuilt {
    id: ChunkId,
    key: String,
    per_body: u64,
    slots: Vec<Option<Vec<u8>>>,
    missing: usize,
    /// The append generation at which its first record came back: its floor.
    first_gen: Option<u64>,
    last_added: Instant,
    queued: bool,
}

impl Reassembly {
    /// The floors of the chunks that have records and are not queued yet.
    pub(super) fn floors(&self) -> impl Iterator<Item = (&String, u64)> {
        (self.chunks.iter())
            .filter(|c| !c.queued)
            .filter_map(|c| Some((&c.key, c.first_gen?)))
    }
}

impl Store {
    /// Expects the records of `sent` to be read again (see the module doc).
    pub(in crate::buffer) fn expect_again(&self, sent: Vec<Sent>) {
        if sent.is_empty() {
            return;
        }
        let mut slot_of = HashMap::new();
        let chunks = (sent.into_iter().enumerate())
            .map(|(c, s)| {
                for (slot, h) in s.hashes.iter().enumerate() {
                    slot_of.insert(*h, (c, slot));
                }
                Rebuilt {
                    id: s.id,
                    key: s.key,
                    per_body: s.per_body,
                    slots: vec![None; s.hashes.len()],
                    missing: s.hashes.len(),
                    first_gen: None,
                    last_added: Instant::now(),
                    queued: false,
                }
            })
            .collect();
        self.lock().reassembly = Some(Reassembly {
            slot_of,
            chunks,
            until: Instant::now() + REBUILD_FOR,
        });
    }

    /// Takes out of `records` (of `key`) those awaited by a chunk being put together
    /// again; returns how many. Each counts as an append (see the module doc).
    pub(in crate::buffer) fn set_aside(&self, key: &str, records: &mut Framed) -> usize {
        let mut guard = self.lock();
        let State {
            reassembly,
            generation,
            ..
        } = &mut *guard;
        let Some(r) = reassembly.as_mut() else {
            return 0;
        };
        let now = Instant::now();
        let mut complete = Vec::new();
        let before = records.records();
        records.retain(|record| {
            let Some(&(c, slot)) = r.slot_of.get(&hash(record)) else {
                return true;
            };
            let chunk = &mut r.chunks[c];
            if chunk.queued || chunk.key != key || chunk.slots[slot].is_some() {
                return true;
            }
            chunk.slots[slot] = Some(record.to_vec());
            chunk.missing -= 1;
            chunk.last_added = now;
            if chunk.first_gen.is_none() {
                *generation += 1;
                chunk.first_gen = Some(*generation);
            }
            if chunk.missing == 0 {
                complete.push(c);
            }
            false
        });
        let set_aside = before - records.records();
        for c in complete {
            self.queue_rebuilt(&mut guard, c);
        }
        set_aside
    }

    /// How long a chunk being put together waits for its next record.
    fn rebuild_wait(&self) -> Duration {
        self.opts.flush_interval.max(Duration::from_secs(5))
    }

    /// Queues the chunks being put together that waited long enough (all of them when
    /// `all`); forgets the rest at the end of the window. Returns how many were queued.
    pub(super) fn queue_rebuilt_due(&self, s: &mut State, now: Instant, all: bool) -> usize {
        let wait = self.rebuild_wait();
        let Some(r) = s.reassembly.as_ref() else {
            return 0;
        };
        let ended = now >= r.until;
        let due: Vec<usize> = (r.chunks.iter().enumerate())
            .filter(|(_, c)| !c.queued && c.first_gen.is_some())
            .filter(|(_, c)| all || ended || now.saturating_duration_since(c.last_added) >= wait)
            .map(|(i, _)| i)
            .collect();
        for &c in &due {
            self.queue_rebuilt(s, c);
        }
        if ended {
            s.reassembly = None;
        }
        due.len()
    }

    /// Queues chunk `c` in memory: under its own id when complete with the same request
    /// bodies, else under a new one.
    fn queue_rebuilt(&self, s: &mut State, c: usize) {
        let per_body = self.per_body.load(Ordering::Relaxed) as u64;
        let Some(chunk) = s.reassembly.as_mut().map(|r| &mut r.chunks[c]) else {
            return;
        };
        chunk.queued = true;
        let Some(first_gen) = chunk.first_gen else {
            return;
        };
        let same = chunk.missing == 0 && chunk.per_body == per_body;
        let key = chunk.key.clone();
        let old_id = chunk.id.clone();
        let records: Vec<Vec<u8>> = chunk.slots.drain(..).flatten().collect();
        let (id, created_ms) = if same {
            let created_ms =
                (old_id.get(..13).and_then(|ms| ms.parse().ok())).unwrap_or_else(now_ms);
            (old_id.clone(), created_ms)
        } else {
            let created_ms = now_ms();
            (self.new_id(s, created_ms), created_ms)
        };
        let mut data = MemoryChunk::framed(chunk::header(&key, created_ms));
        for r in &records {
            data.push(r);
        }
        let bytes = data.len() as u64;
        if same {
            info!(chunk = %id, key = %key, records = records.len(), "A chunk being sent at the last stop was read again whole; sending it under its own id (the endpoint can tell a replay).");
        } else {
            info!(chunk = %id, was = %old_id, key = %key, records = records.len(), "A chunk being sent at the last stop was read again only in part; sending what came back under a new id.");
        }
        s.memory += bytes;
        s.total += bytes;
        s.queue.insert(
            id,
            Queued {
                key,
                bytes,
                records: records.len() as u64,
                attempts: 0,
                created_ms,
                first_failure: None,
                next_attempt: Instant::now(),
                in_flight: false,
                resident: Some(Resident {
                    first_gen,
                    data: Some(data),
                }),
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use crate::buffer::{Buffer, BufferOptions, Framed, Outcome, Taken};
    use crate::config::buffer::{OverflowAction, RetryConfig, RetryType};

    /// A buffer holding chunks in memory, laid out in request bodies of two records.
    fn in_memory(dir: &std::path::Path) -> Arc<Buffer> {
        let b = Buffer::open(BufferOptions {
            path: dir.to_path_buf(),
            chunk_limit_size: 1 << 20,
            chunk_limit_records: None,
            total_limit_size: 1 << 30,
            flush_interval: Duration::from_secs(1),
            overflow_action: OverflowAction::Block,
            memory_limit: 1 << 20,
            sync_bytes: 1 << 20,
            chunk_full_threshold: 1.0,
            retry: RetryConfig {
                retry_type: RetryType::Periodic,
                wait: Duration::from_secs(1),
                exponential_backoff_base: 2.0,
                max_interval: None,
                max_times: None,
                timeout: Duration::from_secs(3600),
                forever: true,
                randomize: false,
            },
        })
        .unwrap();
        b.lay_out_bodies(2);
        b
    }

    fn framed(records: &[&str]) -> Framed {
        let mut f = Framed::default();
        records.iter().for_each(|r| f.push(r.as_bytes()));
        f
    }

    fn texts(taken: &Taken) -> Vec<String> {
        (taken.records.iter())
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect()
    }

    /// Appends `records` and takes the chunk they form, as a sender would.
    fn send(b: &Arc<Buffer>, records: &[&str]) -> Taken {
        b.try_append_all("svc", framed(records)).ok().unwrap();
        b.seal_due(Instant::now(), true).unwrap();
        b.take(Instant::now() + Duration::from_secs(60)).unwrap()
    }

    #[test]
    fn a_chunk_being_sent_at_a_crash_is_read_again_into_its_own_id() {
        let dir = tempfile::tempdir().unwrap();
        let first = in_memory(dir.path());
        let sent = send(&first, &["e1", "e2", "e3"]);
        drop(first); // killed while sending: the endpoint may hold it
        let b = in_memory(dir.path());
        // Read again in another order, mixed with new lines.
        let receipts = b
            .try_append_all("svc", framed(&["e2", "new", "e1"]))
            .ok()
            .unwrap();
        assert!(
            !b.safety().is_safe("svc", receipts.last()),
            "positions wait for the rebuilt chunk"
        );
        b.try_append_all("svc", framed(&["e3"])).ok().unwrap();
        b.seal_due(Instant::now(), true).unwrap();
        // Two chunks, in either order (created in the same millisecond, ids tie on age).
        let later = Instant::now() + Duration::from_secs(60);
        let mut taken = Vec::new();
        while let Some(t) = b.take(later) {
            b.finish(&t, &Outcome::Delivered, |_| {}).unwrap();
            taken.push(t);
        }
        let again = taken.iter().find(|t| t.id == sent.id);
        let again = again.expect("a chunk under the same id: the same Idempotency-Key");
        assert_eq!(
            texts(again),
            ["e1", "e2", "e3"],
            "the same records in order"
        );
        let rest: Vec<Vec<String>> = (taken.iter().filter(|t| t.id != sent.id))
            .map(texts)
            .collect();
        assert_eq!(rest, [["new"]]);
        assert!(b.safety().is_safe("svc", receipts.last()));
    }

    #[test]
    fn a_chunk_read_again_in_part_goes_out_under_a_new_id_after_a_wait() {
        let dir = tempfile::tempdir().unwrap();
        let first = in_memory(dir.path());
        let sent = send(&first, &["e1", "e2", "e3"]);
        drop(first);
        let b = in_memory(dir.path());
        let receipts = b.try_append_all("svc", framed(&["e3", "e1"])).ok().unwrap();
        b.seal_due(Instant::now(), false).unwrap();
        assert!(b.take(Instant::now()).is_none(), "it waits for e2");
        b.seal_due(Instant::now() + Duration::from_secs(6), false)
            .unwrap();
        let partial = b.take(Instant::now() + Duration::from_secs(60)).unwrap();
        assert_ne!(partial.id, sent.id, "never a replay of the whole chunk");
        assert_eq!(texts(&partial), ["e1", "e3"]);
        assert!(!b.safety().is_safe("svc", receipts.last()));
        b.finish(&partial, &Outcome::Delivered, |_| {}).unwrap();
        assert!(b.safety().is_safe("svc", receipts.last()));
    }

    #[test]
    fn a_delivered_chunk_is_not_appended_again_and_a_failed_one_waits_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let first = in_memory(dir.path());
        let delivered = send(&first, &["d1", "d2"]);
        first
            .finish(&delivered, &Outcome::Delivered, |_| {})
            .unwrap();
        let failed = send(&first, &["f1"]);
        let retry = Outcome::Retry {
            after: None,
            reason: "503".into(),
        };
        first.finish(&failed, &retry, |_| {}).unwrap();
        drop(first);
        let b = in_memory(dir.path());
        b.try_append_all("svc", framed(&["d1", "f1", "d2", "n1"]))
            .ok()
            .unwrap();
        b.seal_due(Instant::now(), true).unwrap();
        let later = Instant::now() + Duration::from_secs(60);
        let mut taken = Vec::new();
        while let Some(t) = b.take(later) {
            b.finish(&t, &Outcome::Delivered, |_| {}).unwrap();
            taken.push((t.id.clone(), texts(&t)));
        }
        taken.sort_by_key(|(id, _)| id != &failed.id);
        assert_eq!(
            taken,
            [
                (failed.id.clone(), vec!["f1".to_string()]),
                (taken[1].0.clone(), vec!["n1".to_string()])
            ],
            "the failed chunk from disk, and only the new line appended"
        );
    }
}
