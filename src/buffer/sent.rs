//! The sent journal: what this buffer sent, and what the endpoint accepted, for the next
//! process. After a crash the lines read after the last saved position are read again;
//! with it, a record already delivered is not appended again, and a chunk that was being
//! sent — which the endpoint may or may not hold — is put together again from those lines
//! under its own id, so that it goes out with the same Idempotency-Key and the endpoint
//! takes it as a replay instead of a second copy.
//!
//! # Format
//!
//! `<buffer>/sent.journal`, appended to without fsync (a machine crash loses its tail,
//! which only means duplicates), renamed to `sent.journal.old` at [`JOURNAL_BYTES`], so the
//! two hold the last 64–128 thousand records sent. Entries, all integers little-endian:
//!
//! - **sent**, written when a chunk is taken to be sent: `S`, id length (u8), id, key
//!   length (u16), key, records per request body (u64), record count (u32), then the
//!   64-bit hash of each record (u64 each, in order; see `handled.rs`).
//! - **delivered**, written when the endpoint accepted it: `D`, id length (u8), id.
//!
//! A torn entry ends the reading of its file.
//!
//! # At start-up ([`load`])
//!
//! - A chunk sent and delivered: its records are remembered as handled (not appended
//!   again when read again).
//! - A chunk sent, not known delivered, and no longer in the buffer (it was held in memory
//!   when the process died): returned as a [`Sent`], for `store/reassembly.rs` to rebuild.
//! - A chunk still in the buffer: nothing; recovery remembers its records.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::handled::{hash, Recovered};
use super::records::Records;

/// Bytes in the current journal file before it is renamed to `.old`.
const JOURNAL_BYTES: u64 = 512 << 10;

const JOURNAL: &str = "sent.journal";
const JOURNAL_OLD: &str = "sent.journal.old";
/// The files of the journal this one replaced (hashes of delivered records only).
const REPLACED: [&str; 2] = ["delivered.hashes", "delivered.hashes.old"];

/// A chunk the previous process was sending when it stopped, not known delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Sent {
    pub id: String,
    pub key: String,
    /// Records per request body when it was sent (its requests' Idempotency-Keys depend
    /// on it).
    pub per_body: u64,
    /// Its records' hashes, in order.
    pub hashes: Vec<u64>,
}

/// The journal of one buffer, being written.
pub(super) struct Journal {
    dir: PathBuf,
    file: Mutex<Option<(File, u64)>>,
}

impl Journal {
    pub(super) fn new(dir: &Path) -> Self {
        Journal {
            dir: dir.to_path_buf(),
            file: Mutex::new(None),
        }
    }

    /// Notes a chunk about to be sent. Best effort, as every entry: a failure only means
    /// duplicates after a crash (logged at DEBUG).
    pub(super) fn sending(&self, id: &str, key: &str, per_body: usize, records: &Records) {
        let (Ok(id_len), Ok(key_len), Ok(count)) = (
            u8::try_from(id.len()),
            u16::try_from(key.len()),
            u32::try_from(records.len()),
        ) else {
            return;
        };
        let mut entry = Vec::with_capacity(16 + id.len() + key.len() + records.len() * 8);
        entry.push(b'S');
        entry.push(id_len);
        entry.extend_from_slice(id.as_bytes());
        entry.extend_from_slice(&key_len.to_le_bytes());
        entry.extend_from_slice(key.as_bytes());
        entry.extend_from_slice(&(per_body as u64).to_le_bytes());
        entry.extend_from_slice(&count.to_le_bytes());
        for r in records {
            entry.extend_from_slice(&hash(r).to_le_bytes());
        }
        self.write(&entry);
    }

    /// Notes that the endpoint accepted a chunk.
    pub(super) fn delivered(&self, id: &str) {
        let Ok(id_len) = u8::try_from(id.len()) else {
            return;
        };
        let mut entry = Vec::with_capacity(2 + id.len());
        entry.extend_from_slice(&[b'D', id_len]);
        entry.extend_from_slice(id.as_bytes());
        self.write(&entry);
    }

    fn write(&self, entry: &[u8]) {
        let mut guard = self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Err(e) = self.append(&mut guard, entry) {
            *guard = None;
            tracing::debug!(error = %e, "Cannot write the sent journal.");
        }
    }

    fn append(&self, file: &mut Option<(File, u64)>, entry: &[u8]) -> std::io::Result<()> {
        let path = self.dir.join(JOURNAL);
        if file.as_ref().is_some_and(|(_, len)| *len >= JOURNAL_BYTES) {
            *file = None;
            std::fs::rename(&path, self.dir.join(JOURNAL_OLD))?;
        }
        if file.is_none() {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&path)?;
            let len = f.metadata()?.len();
            *file = Some((f, len));
        }
        let (f, len) = file.as_mut().expect("opened above");
        // One write per entry: a crash leaves at most the last one torn.
        f.write_all(entry)?;
        *len += entry.len() as u64;
        Ok(())
    }
}

/// Reads the journal in `dir` (see the module doc): remembers delivered records in
/// `recovered`, and returns the chunks that were being sent, except those in `in_buffer`.
pub(super) fn load(dir: &Path, recovered: &Recovered, in_buffer: &HashSet<String>) -> Vec<Sent> {
    let mut sent: Vec<Sent> = Vec::new();
    let mut delivered: HashSet<String> = HashSet::new();
    for name in [JOURNAL_OLD, JOURNAL] {
        if let Ok(bytes) = std::fs::read(dir.join(name)) {
            parse(&bytes, &mut sent, &mut delivered);
        }
    }
    for name in REPLACED {
        let _ = std::fs::remove_file(dir.join(name));
    }
    // The newest first: the set that remembers handled records is bounded.
    for s in sent.iter().rev().filter(|s| delivered.contains(&s.id)) {
        recovered.add_hashes(&s.hashes);
    }
    let mut seen = HashSet::new();
    sent.into_iter()
        .filter(|s| !delivered.contains(&s.id) && !in_buffer.contains(&s.id))
        .filter(|s| seen.insert(s.id.clone()))
        .collect()
}

/// Appends the entries of one journal file; stops at a torn or unknown entry.
fn parse(bytes: &[u8], sent: &mut Vec<Sent>, delivered: &mut HashSet<String>) {
    let mut r = Reader { bytes, at: 0 };
    while let Some(tag) = r.take(1) {
        let entry = match tag[0] {
            b'S' => r.sent().map(|s| sent.push(s)),
            b'D' => r.id().map(|id| {
                delivered.insert(id);
            }),
            _ => None,
        };
        if entry.is_none() {
            return;
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let piece = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(piece)
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn id(&mut self) -> Option<String> {
        let len = self.take(1)?[0] as usize;
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }

    fn sent(&mut self) -> Option<Sent> {
        let id = self.id()?;
        let key_len = u16::from_le_bytes(self.take(2)?.try_into().ok()?) as usize;
        let key = String::from_utf8(self.take(key_len)?.to_vec()).ok()?;
        let per_body = self.u64()?;
        let count = u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize;
        let hashes = self.take(count.checked_mul(8)?)?;
        let hashes = (hashes.chunks_exact(8))
            .map(|h| u64::from_le_bytes(h.try_into().expect("8 bytes")))
            .collect();
        Some(Sent {
            id,
            key,
            per_body,
            hashes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::Framed;

    fn records(rs: &[&str]) -> Records {
        rs.iter().copied().collect()
    }

    fn framed(rs: &[&[u8]]) -> Framed {
        let mut f = Framed::default();
        rs.iter().for_each(|r| f.push(r));
        f
    }

    #[test]
    fn delivered_chunks_are_remembered_and_chunks_being_sent_are_returned() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::new(dir.path());
        journal.sending("c1", "svc", 500, &records(&["e1", "e2"]));
        journal.sending("c2", "svc", 500, &records(&["e3", "e4"]));
        journal.sending("c3", "svc", 500, &records(&["e5"]));
        journal.delivered("c1");
        // The next process: c3 is still in the buffer.
        let recovered = Recovered::new();
        let in_buffer = HashSet::from(["c3".to_string()]);
        let open = load(dir.path(), &recovered, &in_buffer);
        assert_eq!(
            open,
            vec![Sent {
                id: "c2".into(),
                key: "svc".into(),
                per_body: 500,
                hashes: vec![hash(b"e3"), hash(b"e4")],
            }]
        );
        let mut again = framed(&[b"e1", b"e3", b"e2"]);
        assert_eq!(
            recovered.remove_known(&mut again),
            2,
            "e1 and e2 were delivered"
        );
    }

    #[test]
    fn a_torn_last_entry_is_ignored_and_the_journal_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::new(dir.path());
        let big: Records = (0..JOURNAL_BYTES / 8).map(|i| i.to_string()).collect();
        journal.sending("old", "svc", 1, &big);
        journal.sending("c1", "svc", 1, &records(&["e1"]));
        assert!(dir.path().join(JOURNAL_OLD).exists());
        // A crash in the middle of a write.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(JOURNAL))
            .unwrap();
        f.write_all(b"S\x02c2\x03\x00sv").unwrap();
        let open = load(dir.path(), &Recovered::new(), &HashSet::new());
        let ids: Vec<&str> = open.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["old", "c1"]);
    }
}
