//! Batches whose tail positions wait until the records read before them are safe:
//! delivered, or on disk. A batch notes, for each file and each buffer and key its lines
//! went to, the [`Receipt`] of the append that held the file's last record (its *mark*);
//! a file's position in it is released once the buffers say each of those receipts is
//! safe ([`Safety`]) — and the file's positions in earlier batches were released. (Marked after the whole batch instead, a file waited for the chunks of
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
//! For the same reason, where the tailer took up a copy, the copy's start and its
//! original's new start ([`crate::tail::Batch::linked_starts`]) are held as a batch of
//! their own just before the batch that read them: saved together, and before either
//! file's later positions. Released file by file within one batch, the original's new
//! start could be saved while the copy's lines, in a later chunk, were not (a chaos run
//! lost the last 282 lines of a copy that way).

use crate::buffer::{Receipt, Safety};
use crate::pipeline::route::Routes;
use crate::tail::identity::FileKey;
use crate::tail::Position;
use std::collections::VecDeque;

/// Where a file's lines went in one batch, and how far: (file, match index, key, the
/// receipt of the append that held the file's last record for that key).
pub(in crate::pipeline) type Mark = (FileKey, usize, String, Receipt);

/// One batch written to the buffers.
pub(in crate::pipeline) struct Written {
    /// Each file's marks (one per match and key its lines went to).
    marks: Vec<Mark>,
    /// Positions not released yet.
    positions: Vec<Position>,
    /// Where a copytruncate copy taken up by this batch and its original start (see
    /// [`crate::tail::Batch::linked_starts`]): held as a batch of their own, before this one.
    linked_starts: Vec<Position>,
}

/// Batches whose positions wait, oldest first.
#[derive(Default)]
pub(super) struct Waiting {
    batches: VecDeque<Written>,
}

impl Written {
    /// A batch whose appends noted `marks` (a file, match and key noted more than once —
    /// its lines alternated with another's — keeps the latest receipt).
    pub(in crate::pipeline) fn new(
        marks: Vec<Mark>,
        positions: Vec<Position>,
        linked_starts: Vec<Position>,
    ) -> Self {
        let mut merged: Vec<Mark> = Vec::with_capacity(marks.len());
        for (file, m, key, receipt) in marks {
            match (merged.iter_mut()).find(|(f, i, k, _)| *f == file && *i == m && *k == key) {
                Some((.., r)) => *r = (*r).max(receipt),
                None => merged.push((file, m, key, receipt)),
            }
        }
        Written {
            marks: merged,
            positions,
            linked_starts,
        }
    }
}

/// One look at each buffer (by match index).
fn look(routes: &Routes) -> Vec<Option<Safety>> {
    (0..routes.len())
        .map(|i| routes.buffer(i).map(|b| b.safety()))
        .collect()
}

fn safe(safety: &[Option<Safety>], (_, m, key, receipt): &Mark) -> bool {
    safety[*m].as_ref().is_none_or(|s| s.is_safe(key, *receipt))
}

impl Waiting {
    /// Holds a written batch's positions.
    pub(super) fn push(&mut self, mut batch: Written) {
        let starts = std::mem::take(&mut batch.linked_starts);
        if !starts.is_empty() {
            // Positions without lines: released together, once everything before them is.
            self.batches.push_back(Written {
                marks: Vec::new(),
                positions: starts,
                linked_starts: Vec::new(),
            });
        }
        if !batch.positions.is_empty() {
            self.batches.push_back(batch);
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// Takes the positions that are safe now, in order (a later one of a file after an
    /// earlier one).
    pub(super) fn release(&mut self, routes: &Routes) -> Vec<Position> {
        if self.batches.is_empty() {
            return Vec::new();
        }
        let safety = look(routes);
        let mut blocked: Vec<FileKey> = Vec::new();
        let mut released = Vec::new();
        // Whether every earlier batch is released: a position whose file had no lines in
        // its batch (where a copytruncate copy or a file tailed from its end starts) is
        // derived from other files' progress, so it waits for all that came before.
        let mut earlier_released = true;
        for batch in &mut self.batches {
            let Written {
                marks, positions, ..
            } = batch;
            let has_lines = |p: &Position| marks.iter().any(|(file, ..)| *file == p.key);
            if !earlier_released && !positions.iter().all(has_lines) {
                // A copy taken up here goes with the truncated original's new start in the
                // same batch: saved alone, that new start would let a restart skip the
                // rest of the copy (nothing else points to it). The batch waits whole.
                blocked.extend(positions.iter().map(|p| p.key));
                continue;
            }
            let file_safe = |p: &Position| {
                let mut own = marks.iter().filter(|(file, ..)| *file == p.key).peekable();
                if own.peek().is_none() {
                    earlier_released
                } else {
                    own.all(|mark| safe(&safety, mark))
                }
            };
            positions.retain(|p| {
                if blocked.contains(&p.key) {
                    return true;
                }
                let is_safe = file_safe(p);
                if is_safe {
                    released.push(p.clone());
                } else {
                    blocked.push(p.key);
                }
                !is_safe
            });
            earlier_released &= positions.is_empty();
        }
        self.batches.retain(|b| !b.positions.is_empty());
        released
    }

    /// Whether every held batch is safe.
    pub(super) fn all_safe(&self, routes: &Routes) -> bool {
        let safety = look(routes);
        (self.batches.iter())
            .flat_map(|b| &b.marks)
            .all(|mark| safe(&safety, mark))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::{Buffer, BufferOptions, Outcome};
    use crate::config::buffer::{OverflowAction, RetryConfig, RetryType};
    use crate::tail::identity::Digest;
    use crate::tail::positions::Checkpoint;
    use std::sync::Arc;
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

    /// A buffer in a temporary directory, and the routes of a pipeline writing to it.
    fn one_buffer() -> (tempfile::TempDir, Arc<Buffer>, Routes) {
        let dir = tempfile::tempdir().unwrap();
        let b = buffer(dir.path());
        let routes = Routes::new(
            vec![crate::pipeline::route::Route::Buffered {
                buffer: Arc::clone(&b),
                flush_at_shutdown: false,
            }],
            vec![vec![0]],
        );
        (dir, b, routes)
    }

    fn offsets(released: &[Position]) -> Vec<(u64, u64)> {
        released
            .iter()
            .map(|p| (p.key.ino, p.checkpoint.offset))
            .collect()
    }

    /// Appends one record under `key`; its receipt.
    fn append(b: &Arc<Buffer>, key: &str) -> Receipt {
        b.append(key, &[b"{}"]).unwrap()
    }

    fn mark(ino: u64, key: &str, receipt: Receipt) -> Mark {
        (file(ino), 0, key.to_string(), receipt)
    }

    #[test]
    fn a_file_waits_for_its_own_services_and_a_copy_start_for_everything_before() {
        let (_dir, b, buffers) = one_buffer();
        let mut waiting = Waiting::default();
        // Batch 1: file 1's lines go to svc-a, file 2's to svc-b.
        let a = append(&b, "svc-a");
        let bb = append(&b, "svc-b");
        waiting.push(Written::new(
            vec![mark(1, "svc-a", a), mark(2, "svc-b", bb)],
            vec![at(1, 10), at(2, 20)],
            Vec::new(),
        ));
        // Batch 2: a copytruncate copy (file 3) is taken up; no lines of it yet.
        waiting.push(Written::new(Vec::new(), vec![at(3, 30)], Vec::new()));
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
        let a = append(&b, "svc-a");
        // Batch 1: file 2's lines (svc-b) wait for delivery.
        let bb = append(&b, "svc-b");
        waiting.push(Written::new(
            vec![mark(2, "svc-b", bb)],
            vec![at(2, 20)],
            Vec::new(),
        ));
        // Batch 2: file 1 was truncated and is read from its start (to svc-a); its copy,
        // file 3, is taken up at the offset read before, its lines not read yet.
        waiting.push(Written::new(
            vec![mark(1, "svc-a", a)],
            vec![at(1, 5), at(3, 2000)],
            Vec::new(),
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
        let first = append(&b, "svc-a");
        b.seal_due(Instant::now(), true).unwrap();
        let second = append(&b, "svc-a");
        waiting.push(Written::new(
            vec![mark(1, "svc-a", first), mark(2, "svc-a", second)],
            vec![at(1, 10), at(2, 20)],
            Vec::new(),
        ));
        deliver(&b, "svc-a");
        assert_eq!(
            offsets(&waiting.release(&buffers)),
            [(1, 10)],
            "file 1's lines are all delivered"
        );
        deliver(&b, "svc-a");
        assert_eq!(offsets(&waiting.release(&buffers)), [(2, 20)]);
        // A file noted twice for one key keeps the later receipt.
        let early = append(&b, "svc-a");
        b.seal_due(Instant::now(), true).unwrap();
        let late = append(&b, "svc-a");
        waiting.push(Written::new(
            vec![mark(1, "svc-a", early), mark(1, "svc-a", late)],
            vec![at(1, 30)],
            Vec::new(),
        ));
        deliver(&b, "svc-a");
        assert!(waiting.release(&buffers).is_empty());
        deliver(&b, "svc-a");
        assert_eq!(offsets(&waiting.release(&buffers)), [(1, 30)]);
    }

    /// The chaos suite's loss: a copy (file 3) and the truncated original's new start
    /// (file 1) read in one batch, the original's lines in an earlier chunk than the copy's.
    /// Released per file, the original's new start was saved first; a kill -9 then left
    /// nothing pointing to the copy, and its unread lines were never read. Now where both
    /// start is saved first, together; nothing else waits for it.
    #[test]
    fn a_copy_s_start_is_saved_with_its_original_s_before_either_reads_on() {
        let (_dir, b, buffers) = one_buffer();
        let mut waiting = Waiting::default();
        // File 2, another service's file read in the same pass.
        let other = append(&b, "svc-b");
        let original = append(&b, "svc-a");
        b.seal_due(Instant::now(), true).unwrap();
        let copy = append(&b, "svc-a");
        waiting.push(Written::new(
            vec![
                mark(1, "svc-a", original),
                mark(2, "svc-b", other),
                mark(3, "svc-a", copy),
            ],
            vec![at(1, 40), at(2, 7), at(3, 2300)],
            vec![at(1, 0), at(3, 2000)],
        ));
        assert_eq!(
            offsets(&waiting.release(&buffers)),
            [(1, 0), (3, 2000)],
            "where both start, saved together and first"
        );
        deliver(&b, "svc-b");
        assert_eq!(offsets(&waiting.release(&buffers)), [(2, 7)]);
        deliver(&b, "svc-a");
        assert_eq!(offsets(&waiting.release(&buffers)), [(1, 40)]);
        deliver(&b, "svc-a");
        assert_eq!(offsets(&waiting.release(&buffers)), [(3, 2300)]);
        assert!(waiting.is_empty());
    }
}
