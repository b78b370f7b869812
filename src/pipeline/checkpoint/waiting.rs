//! Batches whose tail positions wait until the records read before them are safe:
//! delivered, or on disk. A buffer that keeps chunks in memory (see `buffer::store::memory`) reports,
//! per key, the lowest append generation still in memory only; a batch notes, for each
//! file and key its lines went to, the buffer's generation after the append that held
//! the file's last record (its *mark*), and a file's position in it is released once each
//! of those keys' floors is above the mark — and the file's positions in earlier batches
//! were released. (Marked after the whole batch instead, a file waited for the chunks of
//! the files read after it too: a `kill -9` then sent up to a batch, 2 MiB, again.)
//!
//! Per file and key rather than per batch: a file whose lines go to one service waits for
//! that service's chunks only, so what a crash makes the tailer read again is, almost
//! always, what had not been delivered (duplicates only in the moment between a
//! delivery and the record of its positions). A position without lines of its file in
//! the batch (where a copytruncate copy is taken up, from the offset read in the
//! original) waits for every earlier batch: released alone, it would let a restart
//! finish the copy from the original's older saved offset and send its lines twice. And
//! the whole batch waits with it: the original's new start is in the same batch, and
//! saved before the copy's position it would let a restart skip the rest of the copy.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::buffer::Buffer;
use crate::tail::identity::FileKey;
use crate::tail::Position;

/// The keys a file's lines went to in one batch: (file, match index, key).
pub(in crate::pipeline) type Routes = Vec<(FileKey, usize, String)>;

/// A file's mark for a key: (file, match index, key, the buffer's generation after the
/// append that held the file's last record for that key — `None` when that append came
/// after the first attempt).
pub(in crate::pipeline) type Mark = (FileKey, usize, String, Option<u64>);

/// One batch written to the buffers.
pub(in crate::pipeline) struct Written {
    /// Each buffer's generation after the whole batch was appended (by match index).
    marks: Vec<u64>,
    /// The keys each file's lines went to, with the file's mark for each.
    routes: Vec<(FileKey, usize, String, u64)>,
    /// Positions not released yet.
    positions: Vec<Position>,
}

/// Batches whose positions wait, oldest first.
#[derive(Default)]
pub(super) struct Waiting {
    batches: VecDeque<Written>,
}

impl Written {
    /// A batch just appended to `buffers` (the worker's, by match index), whose lines
    /// went to `routes`, with the marks its appends noted (a route without one, or with
    /// one appended late, is marked with the buffer's generation now).
    pub(super) fn after(
        buffers: &[Option<Arc<Buffer>>],
        routes: Routes,
        noted: &[Mark],
        positions: Vec<Position>,
    ) -> Self {
        let marks: Vec<u64> = buffers
            .iter()
            .map(|b| b.as_ref().map_or(0, |b| b.generation()))
            .collect();
        let routes = routes
            .into_iter()
            .map(|(file, m, key)| {
                let mut found = (noted.iter())
                    .filter(|(f, i, k, _)| *f == file && *i == m && *k == key)
                    .map(|(_, _, _, mark)| *mark)
                    .peekable();
                let early = found.peek().is_some();
                let mark = found.try_fold(0, |max, mark| mark.map(|g| g.max(max)));
                let mark = mark.filter(|_| early).unwrap_or(marks[m]);
                (file, m, key, mark)
            })
            .collect();
        Written {
            marks,
            routes,
            positions,
        }
    }
}

impl Waiting {
    /// Holds a written batch's positions.
    pub(super) fn push(&mut self, batch: Written) {
        if !batch.positions.is_empty() {
            self.batches.push_back(batch);
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// Takes the positions that are safe now, in order (a later one of a file after an
    /// earlier one).
    pub(super) fn release(&mut self, buffers: &[Option<Arc<Buffer>>]) -> Vec<Position> {
        if self.batches.is_empty() {
            return Vec::new();
        }
        let floors: Vec<Vec<(String, u64)>> = buffers
            .iter()
            .map(|b| b.as_ref().map_or_else(Vec::new, |b| b.unsafe_floors()))
            .collect();
        let floor = |m: usize, key: &str| {
            floors[m]
                .iter()
                .find(|(k, _)| k == key)
                .map_or(u64::MAX, |(_, f)| *f)
        };
        let mut blocked: Vec<FileKey> = Vec::new();
        let mut released = Vec::new();
        // Whether every earlier batch is released: a position whose file had no lines in
        // its batch (where a copytruncate copy or a file tailed from its end starts) is
        // derived from other files' progress, so it waits for all that came before.
        let mut earlier_released = true;
        for batch in &mut self.batches {
            let Written {
                routes, positions, ..
            } = batch;
            let has_lines = |p: &Position| routes.iter().any(|(file, ..)| *file == p.key);
            if !earlier_released && !positions.iter().all(has_lines) {
                // A copy taken up here goes with the truncated original's new start in the
                // same batch: saved alone, that new start would let a restart skip the
                // rest of the copy (nothing else points to it). The batch waits whole.
                blocked.extend(positions.iter().map(|p| p.key));
                continue;
            }
            positions.retain(|p| {
                if blocked.contains(&p.key) {
                    return true;
                }
                let mut keys = routes.iter().filter(|(file, ..)| *file == p.key).peekable();
                let safe = if keys.peek().is_none() {
                    earlier_released
                } else {
                    keys.all(|(_, m, key, mark)| floor(*m, key) > *mark)
                };
                if safe {
                    released.push(p.clone());
                } else {
                    blocked.push(p.key);
                }
                !safe
            });
            earlier_released &= positions.is_empty();
        }
        self.batches.retain(|b| !b.positions.is_empty());
        released
    }

    /// Whether every held batch is safe by the buffers' overall floors.
    pub(super) fn all_safe(&self, buffers: &[Option<Arc<Buffer>>]) -> bool {
        let Some(last) = self.batches.back() else {
            return true;
        };
        (buffers.iter().zip(&last.marks))
            .all(|(b, mark)| b.as_ref().is_none_or(|b| b.unsafe_floor() > *mark))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::{BufferOptions, Outcome};
    use crate::config::buffer::{OverflowAction, RetryConfig, RetryType};
    use crate::tail::identity::Digest;
    use crate::tail::positions::Checkpoint;
    use std::time::{Duration, Instant};

    fn buffer(dir: &std::path::Path) -> Arc<Buffer> {
        Buffer::open(BufferOptions {
            path: dir.to_path_buf(),
            chunk_limit_size: 1 << 20,
            chunk_limit_records: None,
            total_limit_size: 1 << 30,
            flush_interval: Duration::from_secs(3600),
            overflow_action: OverflowAction::Block,
            memory_limit: 1 << 20,
            sync_bytes: 1 << 20,
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

    fn file(ino: u64) -> FileKey {
        FileKey { dev: 1, ino }
    }

    fn at(ino: u64, offset: u64) -> Position {
        let digest = Digest { hash: 0, len: 0 };
        Position {
            key: file(ino),
            checkpoint: Checkpoint {
                v: 1,
                offset,
                head: digest,
                marker: digest,
                born: None,
                path: format!("/f{ino}").into(),
                seen: 0,
            },
        }
    }

    fn deliver(b: &Buffer, key: &str) {
        b.seal_due(Instant::now(), true).unwrap();
        let far = Instant::now() + Duration::from_secs(3600);
        let taken = b.take(far).unwrap();
        assert_eq!(taken.key, key);
        b.finish(&taken, &Outcome::Delivered, |_| {}).unwrap();
    }

    /// A buffer in a temporary directory, and the worker's list of it.
    fn one_buffer() -> (tempfile::TempDir, Arc<Buffer>, Vec<Option<Arc<Buffer>>>) {
        let dir = tempfile::tempdir().unwrap();
        let b = buffer(dir.path());
        let buffers = vec![Some(Arc::clone(&b))];
        (dir, b, buffers)
    }

    fn offsets(released: &[Position]) -> Vec<(u64, u64)> {
        released
            .iter()
            .map(|p| (p.key.ino, p.checkpoint.offset))
            .collect()
    }

    #[test]
    fn a_file_waits_for_its_own_services_and_a_copy_start_for_everything_before() {
        let (_dir, b, buffers) = one_buffer();
        let mut waiting = Waiting::default();
        // Batch 1: file 1's lines go to svc-a, file 2's to svc-b.
        b.append("svc-a", &[b"{}"]).unwrap();
        b.append("svc-b", &[b"{}"]).unwrap();
        let routes = vec![(file(1), 0, "svc-a".into()), (file(2), 0, "svc-b".into())];
        waiting.push(Written::after(
            &buffers,
            routes,
            &[],
            vec![at(1, 10), at(2, 20)],
        ));
        // Batch 2: a copytruncate copy (file 3) is taken up; no lines of it yet.
        waiting.push(Written::after(&buffers, Vec::new(), &[], vec![at(3, 30)]));
        assert!(
            waiting.release(&buffers).is_empty(),
            "nothing delivered yet"
        );

        deliver(&b, "svc-a");
        assert_eq!(offsets(&waiting.release(&buffers)), [(1, 10)]);
        assert!(!waiting.all_safe(&buffers));

        deliver(&b, "svc-b");
        assert_eq!(offsets(&waiting.release(&buffers)), [(2, 20), (3, 30)]);
        assert!(waiting.is_empty() && waiting.all_safe(&buffers));
    }

    #[test]
    fn a_truncated_file_s_new_start_waits_with_its_copy() {
        let (_dir, b, buffers) = one_buffer();
        let mut waiting = Waiting::default();
        // svc-a's chunk comes first in the queue (it is the one delivered below).
        b.append("svc-a", &[b"{}"]).unwrap();
        // Batch 1: file 2's lines (svc-b) wait for delivery.
        b.append("svc-b", &[b"{}"]).unwrap();
        waiting.push(Written::after(
            &buffers,
            vec![(file(2), 0, "svc-b".into())],
            &[],
            vec![at(2, 20)],
        ));
        // Batch 2: file 1 was truncated and is read from its start (to svc-a); its copy,
        // file 3, is taken up at the offset read before, its lines not read yet.
        waiting.push(Written::after(
            &buffers,
            vec![(file(1), 0, "svc-a".into())],
            &[],
            vec![at(1, 5), at(3, 2000)],
        ));
        deliver(&b, "svc-a");
        assert!(
            waiting.release(&buffers).is_empty(),
            "file 1's new start is not saved before its copy's position"
        );
        deliver(&b, "svc-b");
        assert_eq!(
            offsets(&waiting.release(&buffers)),
            [(2, 20), (1, 5), (3, 2000)]
        );
    }

    #[test]
    fn a_file_waits_for_the_chunks_of_its_own_lines_not_for_those_read_after_it() {
        let (_dir, b, buffers) = one_buffer();
        let mut waiting = Waiting::default();
        // One batch: files 1 and 2 both go to svc-a, and a chunk boundary falls between
        // them (file 1's lines in the first chunk, file 2's in the second).
        b.append("svc-a", &[b"{}"]).unwrap();
        let first = b.generation();
        b.seal_due(Instant::now(), true).unwrap();
        b.append("svc-a", &[b"{}"]).unwrap();
        let second = b.generation();
        let routes = vec![(file(1), 0, "svc-a".into()), (file(2), 0, "svc-a".into())];
        let marks = [
            (file(1), 0, "svc-a".to_string(), Some(first)),
            (file(2), 0, "svc-a".to_string(), Some(second)),
        ];
        waiting.push(Written::after(
            &buffers,
            routes.clone(),
            &marks,
            vec![at(1, 10), at(2, 20)],
        ));
        deliver(&b, "svc-a");
        assert_eq!(
            offsets(&waiting.release(&buffers)),
            [(1, 10)],
            "file 1's lines are all delivered"
        );
        deliver(&b, "svc-a");
        assert_eq!(offsets(&waiting.release(&buffers)), [(2, 20)]);
        // A mark appended late (None) counts as the whole batch's.
        let late = [(file(1), 0, "svc-a".to_string(), None)];
        b.append("svc-a", &[b"{}"]).unwrap();
        waiting.push(Written::after(&buffers, routes, &late, vec![at(1, 30)]));
        assert!(waiting.release(&buffers).is_empty());
        deliver(&b, "svc-a");
        assert_eq!(offsets(&waiting.release(&buffers)), [(1, 30)]);
    }
}
