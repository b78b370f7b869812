//! Records found in the buffer at start-up, remembered for a while: after a crash, the
//! lines read after the last saved position are read again, and those whose records the
//! previous process had already written to a chunk are not appended a second time.
//!
//! Records are the same bytes when read again (a derived id depends on the file and
//! offset, not on the time), so a 64-bit hash names them; the chance that a new record is
//! taken for a recovered one is below 10⁻⁷ for a million recovered records. Two identical
//! records (an event written twice with the same id) may be merged into one only in this
//! window. The set is bounded and forgotten after [`REMEMBER_FOR`].

use std::collections::HashSet;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::records::{Framed, Records};

/// Records remembered at most.
const MAX_REMEMBERED: usize = 1 << 20;
/// How long they are remembered: the re-read after a restart happens well within it.
const REMEMBER_FOR: Duration = Duration::from_secs(600);

pub(super) struct Recovered {
    hasher: std::collections::hash_map::RandomState,
    hashes: Mutex<Option<(HashSet<u64>, Instant)>>,
}

impl Recovered {
    pub(super) fn new() -> Self {
        Recovered {
            hasher: std::collections::hash_map::RandomState::new(),
            hashes: Mutex::new(None),
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
            set.insert(self.hasher.hash_one(r));
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
        records.retain(|r| !set.remove(&self.hasher.hash_one(r)));
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
