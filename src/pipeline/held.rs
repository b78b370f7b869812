//! Tail positions held back until the records read before them are safe: delivered, or
//! on disk. A buffer that keeps chunks in memory (see `buffer::store::memory`) reports,
//! per key, the lowest append generation still in memory only; a batch notes each
//! buffer's generation after its appends and which keys each file's lines went to, and a
//! file's position in it is released once every one of those keys' floors is above the
//! batch's generation — and the file's positions in earlier batches were released.
//!
//! Per file and key rather than per batch: a file whose lines go to one service waits for
//! that service's chunks only, so what a crash makes the tailer read again is, almost
//! always, what had not been delivered (duplicates only in the moment between a
//! delivery and the record of its positions).

use std::collections::VecDeque;
use std::sync::Arc;

use crate::buffer::Buffer;
use crate::tail::identity::FileKey;
use crate::tail::Position;

/// The keys a file's lines went to in one batch: (file, match index, key).
pub(super) type Routes = Vec<(FileKey, usize, String)>;

/// One batch written to the buffers.
struct Batch {
    /// Each buffer's generation after the batch was appended (by match index).
    marks: Vec<u64>,
    routes: Routes,
    /// Positions not released yet.
    positions: Vec<Position>,
}

/// Batches whose positions wait, oldest first.
#[derive(Default)]
pub(super) struct Held {
    batches: VecDeque<Batch>,
}

impl Held {
    /// Holds a batch's positions; `buffers` are the worker's, by match index.
    pub(super) fn push(
        &mut self,
        buffers: &[Option<Arc<Buffer>>],
        routes: Routes,
        positions: Vec<Position>,
    ) {
        if positions.is_empty() {
            return;
        }
        let marks = buffers
            .iter()
            .map(|b| b.as_ref().map_or(0, |b| b.generation()))
            .collect();
        self.batches.push_back(Batch {
            marks,
            routes,
            positions,
        });
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
        for batch in &mut self.batches {
            let Batch {
                marks,
                routes,
                positions,
            } = batch;
            positions.retain(|p| {
                if blocked.contains(&p.key) {
                    return true;
                }
                let safe = routes
                    .iter()
                    .filter(|(file, _, _)| *file == p.key)
                    .all(|(_, m, key)| floor(*m, key) > marks[*m]);
                if safe {
                    released.push(p.clone());
                } else {
                    blocked.push(p.key);
                }
                !safe
            });
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
