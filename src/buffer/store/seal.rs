//! Group commits (fsync of the open chunks on disk) and sealing: chunks full by size,
//! chunks come of age, and chunks held in memory, which are queued without an fsync.

use std::fs::File;
use std::io;
use std::time::Instant;

use super::{chunk, OpenChunk, Queued, Resident, State, Store};

impl Store {
    /// Whether a group commit is due: enough bytes, or `flush_interval` since the last.
    pub(in crate::buffer) fn sync_due(&self, now: Instant) -> bool {
        let s = self.lock();
        s.unsynced > 0
            && (s.unsynced >= self.opts.sync_bytes
                || now.saturating_duration_since(s.last_sync) >= self.opts.flush_interval)
    }

    /// fsyncs every open chunk; afterwards every appended record is durable.
    pub(in crate::buffer) fn sync(&self) -> io::Result<()> {
        let files: Vec<File> = {
            let s = self.lock();
            s.open
                .values()
                .filter_map(|c| c.file.as_ref().map(File::try_clone))
                .collect::<io::Result<_>>()?
        };
        for f in &files {
            f.sync_data()?;
        }
        chunk::sync_dir(&self.dirs.chunks)?;
        let mut s = self.lock();
        s.unsynced = 0;
        s.last_sync = Instant::now();
        Ok(())
    }

    /// Seals the chunks that filled up: fsync outside the lock, then queues them. (No
    /// `.meta` yet: recovery reads everything a fresh one would hold from the chunk itself,
    /// so it is written only once there is retry state to keep.)
    pub(in crate::buffer) fn seal_full(&self) -> io::Result<usize> {
        let full = std::mem::take(&mut self.lock().full);
        let count = full.len();
        let mut failed = Vec::new();
        let mut sealed = Vec::new();
        for (key, chunk) in full {
            match chunk.file.as_ref().map_or(Ok(()), File::sync_data) {
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
        Ok(due.len() + filled)
    }

    fn seal_locked(&self, s: &mut State, key: &str) -> io::Result<()> {
        let Some(open) = s.open.remove(key) else {
            return Ok(());
        };
        let Some(file) = &open.file else {
            queue_resident(s, key, open);
            return Ok(());
        };
        if let Err(e) = file.sync_data() {
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
