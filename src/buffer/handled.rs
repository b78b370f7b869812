//! Records the previous process had already handled, remembered for a while after a start:
//! after a crash, the lines read after the last saved position are read again, and those
//! whose records the previous process had already written to a chunk — or delivered — are
//! not appended a second time.
//!
//! Two sources fill the set: the chunks found in the buffer at start-up, and the chunks
//! the sent journal (`sent.rs`) shows delivered.
//!
//! Records are the same bytes when read again (a derived id depends on the file and
//! offset, not on the time), so a 64-bit hash names them (FxHash: fixed, so that the
//! journal's hashes mean the same in the next process); the chance that a new record is
//! taken for a remembered one is below 10⁻⁸ for the set's bound. Two identical records (an
//! event written twice with the same id) may be merged into one only in this window. The
//! set is bounded and forgotten after [`REMEMBER_FOR`].

use std::collections::HashSet;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::records::{Framed, Records};

/// Records remembered at most.
const MAX_REMEMBERED: usize = 1 << 20;
/// How long they are remembered: the re-read after a restart happens well within it.
const REMEMBER_FOR: Duration = Duration::from_secs(600);

/// How long the previous process's chunks are looked for in what is read again (see
/// `store/reassembly.rs`): the same window.
pub(super) const REBUILD_FOR: Duration = REMEMBER_FOR;

/// The name of a record in the journal and the sets.
pub(super) fn hash(record: &[u8]) -> u64 {
    rustc_hash::FxBuildHasher.hash_one(record)
}

pub(super) struct Recovered {
    hashes: Mutex<Option<(HashSet<u64>, Instant)>>,
}

impl Recovered {
    pub(super) fn new() -> Self {
        Recovered {
            hashes: Mutex::new(None),
        }
    }

    /// Remembers records by their hashes (those of delivered chunks).
    pub(super) fn add_hashes(&self, hashes: &[u64]) {
        let mut guard = self.lock();
        let (set, _) = guard.get_or_insert_with(|| (HashSet::new(), Instant::now()));
        for h in hashes {
            if set.len() >= MAX_REMEMBERED {
                return;
            }
            set.insert(*h);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(HashSet<u64>, Instant)>> {
        self.hashes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Remembers the records of a recovered chunk.
    pub(super) fn add(&self, records: &Records) {
        let mut guard = self.lock();
        let (set, _) = guard.get_or_insert_with(|| (HashSet::new(), Instant::now()));
        for r in records {
            if set.len() >= MAX_REMEMBERED {
                return;
            }
            set.insert(hash(r));
        }
    }

    /// Drops from `records` those recovered at start-up (each once); returns how many.
    pub(super) fn remove_known(&self, records: &mut Framed) -> usize {
        let mut guard = self.lock();
        let Some((set, since)) = guard.as_mut() else {
            return 0;
        };
        if set.is_empty() || since.elapsed() > REMEMBER_FOR {
            *guard = None;
            return 0;
        }
        let before = records.records();
        records.retain(|r| !set.remove(&hash(r)));
        before - records.records()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovered_records_are_dropped_once_and_others_kept() {
        let framed = |records: &[&[u8]]| {
            let mut f = Framed::default();
            records.iter().for_each(|r| f.push(r));
            f
        };
        let seen = Recovered::new();
        assert_eq!(seen.remove_known(&mut framed(&[b"a"])), 0);
        seen.add(&["a", "b"].into_iter().collect());
        let mut batch = framed(&[b"a", b"c", b"a"]);
        assert_eq!(seen.remove_known(&mut batch), 1);
        assert_eq!(batch, framed(&[b"c", b"a"]));
    }
}
