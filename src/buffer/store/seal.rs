//! Group commits (fsync of the open chunks on disk) and sealing: chunks full by size,
//! chunks come of age, and chunks held in memory, which are queued without an fsync.

use std::fs::File;
use std::io;
use std::time::Instant;

use super::{chunk, ChunkId, OpenChunk, Queued, Resident, State, Store};

impl Store {
    /// Whether a group commit is due: enough bytes, or `flush_interval` since the last.
    pub(in crate::buffer) fn sync_due(&self, now: Instant) -> bool {
        let s = self.lock();
        s.unsynced > 0
            && (s.unsynced >= self.opts.sync_bytes
                || now.saturating_duration_since(s.last_sync) >= self.opts.flush_interval)
    }

    /// A group commit: fsyncs the chunks that filled up (queueing them) and every open
    /// chunk on disk; when it returns `Ok`, every record appended before the call is
    /// durable, and positions past them may be saved. Any failed fsync is an error.
    pub(in crate::buffer) fn sync(&self) -> io::Result<()> {
        // Filled chunks first: moved out of `open` by an append, they are no longer among
        // the files below, and a seal under way elsewhere is waited for.
        self.seal_full()?;
        let files: Vec<(ChunkId, File)> = {
            let s = self.lock();
            s.open
                .values()
                .filter_map(|c| Some((c.id.clone(), c.file.as_ref()?.try_clone())))
                .map(|(id, f)| f.map(|f| (id, f)))
                .collect::<io::Result<_>>()?
        };
        for (id, f) in &files {
            self.fsync(id, f)?;
        }
        chunk::sync_dir(&self.dirs.chunks)?;
        let mut s = self.lock();
        s.unsynced = 0;
        s.last_sync = Instant::now();
        Ok(())
    }

    /// fsyncs one chunk's file (tests can make it fail).
    fn fsync(&self, id: &ChunkId, file: &File) -> io::Result<()> {
        #[cfg(test)]
        if self
            .fail_fsync_of
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            == Some(id)
        {
            return Err(io::Error::other("fsync failed (test)"));
        }
        let _ = id;
        file.sync_data()
    }

    /// Seals the chunks that filled up: fsync outside the lock, then queues them. (No
    /// `.meta` yet: recovery reads everything a fresh one would hold from the chunk itself,
    /// so it is written only once there is retry state to keep.)
    pub(in crate::buffer) fn seal_full(&self) -> io::Result<usize> {
        let _sealing = self
            .sealing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let full = std::mem::take(&mut self.lock().full);
        let count = full.len();
        let mut failed = Vec::new();
        let mut sealed = Vec::new();
        for (key, chunk) in full {
            match (chunk.file.as_ref()).map_or(Ok(()), |f| self.fsync(&chunk.id, f)) {
                Ok(()) => sealed.push((key, chunk)),
                Err(e) => failed.push((key, chunk, e)),
            }
        }
        let mut s = self.lock();
        for (key, chunk) in sealed {
            s.queue.insert(
                chunk.id.clone(),
                Queued {
                    key,
                    bytes: chunk.len,
                    records: chunk.records,
                    attempts: 0,
                    created_ms: chunk.created_ms,
                    first_failure: None,
                    next_attempt: Instant::now(),
                    in_flight: false,
                    resident: None,
                },
            );
        }
        let mut first_error = None;
        for (key, chunk, e) in failed {
            s.full.push((key, chunk));
            first_error.get_or_insert(e);
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(count),
        }
    }

    /// Marks the open chunks with records to be sealed at the next [`Store::seal_due`],
    /// whatever their age; returns how many.
    pub(in crate::buffer) fn seal_open_soon(&self) -> usize {
        let mut s = self.lock();
        let mut marked = 0;
        for c in s.open.values_mut().filter(|c| c.records > 0) {
            c.early = true;
            marked += 1;
        }
        marked
    }

    /// Seals open chunks older than `flush_interval` or marked early (all of them when
    /// `all`).
    pub(in crate::buffer) fn seal_due(&self, now: Instant, all: bool) -> io::Result<usize> {
        // First what needs no disk: a failing fsync below must not keep rebuilt chunks,
        // which hold their key's positions, from being sent.
        let rebuilt = self.queue_rebuilt_due(&mut self.lock(), now, all);
        let filled = self.seal_full()?;
        let mut s = self.lock();
        let due: Vec<String> = s
            .open
            .iter()
            .filter(|(_, c)| {
                c.records > 0
                    && (all
                        || c.early
                        || now.saturating_duration_since(c.created) >= self.opts.flush_interval)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in &due {
            self.seal_locked(&mut s, key)?;
        }
        Ok(due.len() + filled + rebuilt)
    }

    fn seal_locked(&self, s: &mut State, key: &str) -> io::Result<()> {
        let Some(open) = s.open.remove(key) else {
            return Ok(());
        };
        let Some(file) = &open.file else {
            queue_resident(s, key, open);
            return Ok(());
        };
        if let Err(e) = self.fsync(&open.id, file) {
            // Keep it open: the records are still in the file, and sealing is retried.
            s.open.insert(key.to_string(), open);
            return Err(e);
        }
        s.queue.insert(
            open.id.clone(),
            Queued {
                key: key.to_string(),
                bytes: open.len,
                records: open.records,
                attempts: 0,
                created_ms: open.created_ms,
                first_failure: None,
                next_attempt: Instant::now(),
                in_flight: false,
                resident: None,
            },
        );
        Ok(())
    }
}

/// Queues a chunk held in memory (sealing it needs no fsync).
pub(super) fn queue_resident(s: &mut State, key: &str, open: OpenChunk) {
    s.queue.insert(
        open.id,
        Queued {
            key: key.to_string(),
            bytes: open.len,
            records: open.records,
            attempts: 0,
            created_ms: open.created_ms,
            first_failure: None,
            next_attempt: Instant::now(),
            in_flight: false,
            resident: Some(Resident {
                first_gen: open.first_gen,
                data: Some(open.data),
            }),
        },
    );
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use crate::buffer::{Buffer, BufferOptions};
    use crate::config::buffer::{OverflowAction, RetryConfig, RetryType};

    /// A buffer writing through to disk, whose chunks hold one record each.
    fn write_through(dir: &std::path::Path) -> Arc<Buffer> {
        Buffer::open(BufferOptions {
            path: dir.to_path_buf(),
            chunk_limit_size: 100,
            chunk_limit_records: None,
            total_limit_size: 1 << 30,
            flush_interval: Duration::from_secs(3600),
            overflow_action: OverflowAction::Block,
            memory_limit: 0,
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
        .unwrap()
    }

    const RECORD: &[u8] = b"{\"payload\":{\"id\":\"0123456789abcdef01\"}}";

    /// Appends records until a chunk fills and a second one is open; returns the first's id.
    fn fill_one_chunk(b: &Buffer) -> super::ChunkId {
        for _ in 0..2 {
            b.append("svc", &[RECORD]).unwrap();
        }
        let s = b.store.lock();
        assert_eq!((s.full.len(), s.open.len()), (1, 1), "one filled, one open");
        s.full[0].1.id.clone()
    }

    #[test]
    fn a_group_commit_makes_filled_chunks_durable_too() {
        let dir = tempfile::tempdir().unwrap();
        let b = write_through(dir.path());
        fill_one_chunk(&b);
        b.sync().unwrap();
        // Durable means fsynced: a filled chunk is fsynced when it is queued, and only then.
        let s = b.store.lock();
        assert!(
            s.full.is_empty(),
            "the filled chunk waits for a sender's fsync"
        );
        assert_eq!(s.queue.len(), 1);
    }

    #[test]
    fn a_failed_fsync_of_a_filled_chunk_fails_the_group_commit() {
        let dir = tempfile::tempdir().unwrap();
        let b = write_through(dir.path());
        let filled = fill_one_chunk(&b);
        *b.store.fail_fsync_of.lock().unwrap() = Some(filled);
        assert!(b.sync().is_err(), "positions must not be saved past it");
        assert_eq!(b.store.lock().full.len(), 1, "kept, to be sealed again");
        *b.store.fail_fsync_of.lock().unwrap() = None;
        b.sync().unwrap();
        assert_eq!(b.store.lock().queue.len(), 1);
    }
}
