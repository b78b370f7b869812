//! Records the previous process had already handled, remembered for a while after a start:
//! after a crash, the lines read after the last saved position are read again, and those
//! whose records the previous process had already written to a chunk — or delivered — are
//! not appended a second time.
//!
//! Two sources fill the set: the chunks found in the buffer at start-up, and the
//! **delivered journal**, `<buffer>/delivered.hashes` (and `delivered.hashes.old`): the
//! 64-bit hash of every record the endpoint accepted, appended (8 bytes, little-endian,
//! not fsynced: a machine crash loses its tail, which only means duplicates) when its chunk
//! is delivered; the file is rotated to `.old` at [`JOURNAL_HASHES`] hashes, so both hold
//! the last 64–128 thousand records delivered. Without it, every record delivered between
//! the last position save and a `kill -9` was sent again after the restart.
//!
//! Records are the same bytes when read again (a derived id depends on the file and
//! offset, not on the time), so a 64-bit hash names them (FxHash: fixed, so that the
//! journal's hashes mean the same in the next process); the chance that a new record is
//! taken for a remembered one is below 10⁻⁸ for the set's bound. Two identical records (an
//! event written twice with the same id) may be merged into one only in this window. The
//! set is bounded and forgotten after [`REMEMBER_FOR`].

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::hash::BuildHasher;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::records::{Framed, Records};

/// Records remembered at most.
const MAX_REMEMBERED: usize = 1 << 20;
/// How long they are remembered: the re-read after a restart happens well within it.
const REMEMBER_FOR: Duration = Duration::from_secs(600);

/// Hashes in the current journal file before it is rotated.
pub(super) const JOURNAL_HASHES: u64 = 64 * 1024;

fn hash(record: &[u8]) -> u64 {
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

    /// Remembers the hashes of the delivered journal in `dir` (newest first, to the bound).
    pub(super) fn add_delivered(&self, dir: &Path) {
        let mut guard = self.lock();
        let (set, _) = guard.get_or_insert_with(|| (HashSet::new(), Instant::now()));
        for name in [JOURNAL, JOURNAL_OLD] {
            let Ok(bytes) = std::fs::read(dir.join(name)) else {
                continue;
            };
            for h in bytes.chunks_exact(8).rev() {
                if set.len() >= MAX_REMEMBERED {
                    return;
                }
                set.insert(u64::from_le_bytes(h.try_into().expect("8 bytes")));
            }
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

const JOURNAL: &str = "delivered.hashes";
const JOURNAL_OLD: &str = "delivered.hashes.old";

/// The delivered journal of one buffer (see the module doc).
pub(super) struct Delivered {
    dir: PathBuf,
    file: Mutex<Option<(File, u64)>>,
}

impl Delivered {
    pub(super) fn new(dir: &Path) -> Self {
        Delivered {
            dir: dir.to_path_buf(),
            file: Mutex::new(None),
        }
    }

    /// Appends the hashes of a delivered chunk's records. Best effort: a failure only
    /// means duplicates after a crash (logged at DEBUG).
    pub(super) fn record(&self, records: &Records) {
        let mut bytes = Vec::with_capacity(records.len() * 8);
        for r in records {
            bytes.extend_from_slice(&hash(r).to_le_bytes());
        }
        let mut guard = self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Err(e) = self.append(&mut guard, &bytes, records.len() as u64) {
            *guard = None;
            tracing::debug!(error = %e, "Cannot journal delivered records.");
        }
    }

    fn append(&self, file: &mut Option<(File, u64)>, bytes: &[u8], n: u64) -> std::io::Result<()> {
        let path = self.dir.join(JOURNAL);
        if file
            .as_ref()
            .is_some_and(|(_, count)| *count >= JOURNAL_HASHES)
        {
            *file = None;
            std::fs::rename(&path, self.dir.join(JOURNAL_OLD))?;
        }
        if file.is_none() {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&path)?;
            let count = f.metadata()?.len() / 8;
            *file = Some((f, count));
        }
        let (f, count) = file.as_mut().expect("opened above");
        f.write_all(bytes)?;
        *count += n;
        Ok(())
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

    #[test]
    fn records_delivered_by_a_previous_process_are_dropped_when_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Delivered::new(dir.path());
        journal.record(&["e1", "e2"].into_iter().collect());
        journal.record(&["e3"].into_iter().collect());
        // The next process.
        let seen = Recovered::new();
        seen.add_delivered(dir.path());
        let mut again = Framed::default();
        for r in [b"e2".as_slice(), b"e4", b"e3"] {
            again.push(r);
        }
        assert_eq!(seen.remove_known(&mut again), 2);
        let mut only_new = Framed::default();
        only_new.push(b"e4");
        assert_eq!(again, only_new);
    }

    #[test]
    fn the_journal_rotates_and_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Delivered::new(dir.path());
        let batch: Records = (0..JOURNAL_HASHES).map(|i| i.to_string()).collect();
        journal.record(&batch);
        journal.record(&["after-rotation"].into_iter().collect());
        assert!(dir.path().join(JOURNAL_OLD).exists());
        let seen = Recovered::new();
        seen.add_delivered(dir.path());
        let mut again = Framed::default();
        again.push(b"after-rotation");
        again.push(b"0");
        assert_eq!(seen.remove_known(&mut again), 2);
    }
}
