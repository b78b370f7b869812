//! Tail positions, kept in sled (the design card's store) so that a restart neither loses
//! nor re-reads lines.
//!
//! # On-disk format, version 1
//!
//! A sled database in the directory `<pos_file>.sled` (next to where fluentd kept its text
//! pos file, which is imported once, see below).
//!
//! - Tree `positions`: one entry per file identity. Key: 16 bytes, the device then the
//!   inode, both big-endian ([`FileKey::to_bytes`]). Value: a JSON object
//!   `{"v":1,"offset":N,"head":{"hash":H,"len":L},"marker":{"hash":H,"len":L},"born":NS|null,"path":"…","seen":S}`:
//!   `offset` is the byte just past the last line made durable downstream; `head` and
//!   `marker` are FNV-1a hashes of the file's first bytes and of the bytes before `offset`
//!   ([`super::identity`]); `born` the birth time in ns when known; `path` where the file was
//!   last seen; `seen` when (Unix seconds).
//! - Tree `meta`: `fluentd_import` = the path of the fluentd pos file already imported;
//!   `created` = set when the store is first opened (its absence in a database with data
//!   means sled opened a damaged one as empty); `rebuilt` = set when the store replaced a
//!   damaged one (see below).
//!
//! Changing the format: a new optional field keeps version 1 (readers ignore unknown
//! fields, missing ones take defaults); anything else bumps `v`, and the loader converts
//! older versions. An entry that cannot be decoded is reported and left in place.
//!
//! # The commit rule
//!
//! Only the stage that made lines durable (the disk buffer, after fsync) calls
//! [`PositionStore::commit`]; the tailer reads positions at start-up and never writes one
//! ahead of the data. `commit` returns after sled has flushed (fsync) the batch.
//!
//! # A damaged store
//!
//! sled can fail to open after an abrupt stop (`Read corrupted data`), or open a damaged
//! database as empty. [`PositionStore::open_or_recover`] never lets either become a crash
//! loop or a silent re-send from the wrong place: the damaged directory is moved aside to
//! `<dir>.corrupt-<unix seconds>` (kept for inspection), an ERROR says so, and a new store
//! is marked `rebuilt`. The tailer then reads every file it finds from its start, whatever
//! the start policy (`read_from_head false` tails only on the very first start): what
//! was read before is sent again — duplicates, which the receiver's id check and the
//! buffer's recovered-id check absorb in part — but nothing written while the positions
//! were lost is skipped. Positions written ahead in this boot (`.ahead`) are then applied
//! over it by the pipeline as at any start.
//!
//! # Importing fluentd's pos file
//!
//! fluentd's in_tail keeps `path<TAB>offset-hex<TAB>inode-hex` lines (offset
//! `ffffffffffffffff` marks an unwatched file). When `pos_file` names such a file, its
//! entries are imported once at start-up, so a node switching from fluentd neither loses
//! nor re-sends events.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::identity::{Digest, FileKey};

/// How long opening waits for a lock held by this process's previous handle.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Why the position store failed.
#[derive(Debug, thiserror::Error)]
pub enum PositionsError {
    /// The database could not be opened or written (permissions, disk full, corruption
    /// that sled cannot recover, or another process holding it).
    #[error("position store {path}: {source}")]
    Store {
        /// The database directory.
        path: PathBuf,
        /// sled's error.
        #[source]
        source: sled::Error,
    },
    /// Another process (or handle) holds the database's lock: a running at-forwarder, or
    /// a previous instance still stopping.
    #[error("position store {path}: held by another process")]
    Locked {
        /// The database directory.
        path: PathBuf,
    },
}

/// Whether sled refused to open because another handle holds its lock (sled reports it
/// only as an I/O error with this text; this is the one place that reads it).
fn is_lock(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

/// A saved position and the identity it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Format version.
    #[serde(default = "version")]
    pub v: u32,
    /// The byte just past the last line made durable downstream.
    pub offset: u64,
    /// Hash of the file's first bytes.
    pub head: Digest,
    /// Hash of the bytes before `offset`.
    pub marker: Digest,
    /// Birth time in ns, where the filesystem keeps one.
    #[serde(default)]
    pub born: Option<u128>,
    /// Where the file was last seen.
    pub path: PathBuf,
    /// When it was last seen (Unix seconds).
    #[serde(default)]
    pub seen: u64,
}

fn version() -> u32 {
    1
}

/// A stored entry that could not be decoded: its raw key and why.
pub type Undecodable = (Vec<u8>, String);

/// A position to save: which file, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The file.
    pub key: FileKey,
    /// Where it is read up to, and its identity.
    pub checkpoint: Checkpoint,
}

/// An entry of a fluentd text pos file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FluentdEntry {
    /// The path fluentd tracked.
    pub path: PathBuf,
    /// Its offset.
    pub offset: u64,
    /// Its inode.
    pub ino: u64,
}

/// The positions of one tail source. Cheap to clone: clones share the database.
#[derive(Clone)]
pub struct PositionStore {
    dir: PathBuf,
    positions: sled::Tree,
    meta: sled::Tree,
    db: sled::Db,
}

impl std::fmt::Debug for PositionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PositionStore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl PositionStore {
    /// The database directory for a `pos_file` setting.
    pub fn dir_for(pos_file: &Path) -> PathBuf {
        let mut name = pos_file.as_os_str().to_owned();
        name.push(".sled");
        PathBuf::from(name)
    }

    /// Opens (or creates) the database in `dir`. When it was just closed in this process
    /// (a restart of the tail source), sled's threads may hold its lock a moment longer:
    /// the lock is retried for up to [`LOCK_WAIT`].
    pub fn open(dir: &Path) -> Result<Self, PositionsError> {
        let err = |source| PositionsError::Store {
            path: dir.to_path_buf(),
            source,
        };
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        let db = loop {
            // No background flusher: every commit flushes itself.
            let config = sled::Config::new()
                .path(dir)
                .mode(sled::Mode::LowSpace)
                .flush_every_ms(None);
            match config.open() {
                Ok(db) => break db,
                Err(e) if is_lock(&e) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) if is_lock(&e) => {
                    return Err(PositionsError::Locked {
                        path: dir.to_path_buf(),
                    })
                }
                Err(e) => return Err(err(e)),
            }
        };
        let positions = db.open_tree("positions").map_err(err)?;
        let meta = db.open_tree("meta").map_err(err)?;
        Ok(PositionStore {
            dir: dir.to_path_buf(),
            positions,
            meta,
            db,
        })
    }

    /// Opens the store in `dir`, recovering from damage (see the module doc): a database
    /// sled cannot open is moved aside and replaced, one opened empty although it held data
    /// is reported; both are marked [`PositionStore::rebuilt`]. Lock errors (another
    /// process) are returned as they are.
    pub fn open_or_recover(dir: &Path) -> Result<Self, PositionsError> {
        let had_data = std::fs::metadata(dir.join("db")).is_ok_and(|m| m.len() > 0);
        let store = match Self::open(dir) {
            Ok(store) => {
                let created = store.meta.get("created").map_err(|e| store.err(e))?;
                if had_data && created.is_none() && store.positions.is_empty() {
                    tracing::error!(dir = %dir.display(), "The position store opened empty although it held data (damaged); reading every file from its start: events read before are sent again.");
                    store.mark("rebuilt")?;
                }
                store
            }
            Err(e @ PositionsError::Locked { .. }) => return Err(e),
            Err(e) => {
                let secs = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let mut aside = dir.as_os_str().to_owned();
                aside.push(format!(".corrupt-{secs}"));
                let aside = PathBuf::from(aside);
                std::fs::rename(dir, &aside).map_err(|io| PositionsError::Store {
                    path: dir.to_path_buf(),
                    source: sled::Error::Io(io),
                })?;
                tracing::error!(dir = %dir.display(), moved_to = %aside.display(), error = %e, "The position store is damaged and cannot be opened: moved aside, starting a new one; every file is read from its start, so events read before are sent again.");
                let store = Self::open(dir)?;
                store.mark("rebuilt")?;
                store
            }
        };
        store.mark("created")?;
        Ok(store)
    }

    /// Whether this store replaced a damaged one: files are read from their start.
    pub fn rebuilt(&self) -> Result<bool, PositionsError> {
        Ok(self.meta.get("rebuilt").map_err(|e| self.err(e))?.is_some())
    }

    fn mark(&self, key: &str) -> Result<(), PositionsError> {
        if self.meta.get(key).map_err(|e| self.err(e))?.is_none() {
            self.meta.insert(key, &b"1"[..]).map_err(|e| self.err(e))?;
            self.db.flush().map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// A store kept in a temporary directory, gone when the process ends (a source
    /// without `pos_file`).
    pub fn temporary() -> Result<Self, PositionsError> {
        let err = |source| PositionsError::Store {
            path: PathBuf::from("(temporary)"),
            source,
        };
        let db = sled::Config::new()
            .temporary(true)
            .flush_every_ms(None)
            .open()
            .map_err(err)?;
        let positions = db.open_tree("positions").map_err(err)?;
        let meta = db.open_tree("meta").map_err(err)?;
        Ok(PositionStore {
            dir: PathBuf::from("(temporary)"),
            positions,
            meta,
            db,
        })
    }

    fn err(&self, source: sled::Error) -> PositionsError {
        PositionsError::Store {
            path: self.dir.clone(),
            source,
        }
    }

    /// Every saved position. Entries that cannot be decoded are returned apart, as
    /// `(raw key, reason)`, for the caller to report; they are left in the store.
    pub fn load(&self) -> Result<(HashMap<FileKey, Checkpoint>, Vec<Undecodable>), PositionsError> {
        let mut good = HashMap::new();
        let mut bad = Vec::new();
        for entry in self.positions.iter() {
            let (k, v) = entry.map_err(|e| self.err(e))?;
            match (
                FileKey::from_bytes(&k),
                serde_json::from_slice::<Checkpoint>(&v),
            ) {
                (Some(key), Ok(c)) if c.v == 1 => {
                    good.insert(key, c);
                }
                (Some(_), Ok(c)) => bad.push((k.to_vec(), format!("unsupported version {}", c.v))),
                (_, Err(e)) => bad.push((k.to_vec(), e.to_string())),
                (None, Ok(_)) => bad.push((k.to_vec(), "malformed key".into())),
            }
        }
        Ok((good, bad))
    }

    /// The saved position of one file.
    pub fn get(&self, key: FileKey) -> Result<Option<Checkpoint>, PositionsError> {
        let value = self
            .positions
            .get(key.to_bytes())
            .map_err(|e| self.err(e))?;
        Ok(value.and_then(|v| serde_json::from_slice(&v).ok()))
    }

    /// Saves positions atomically and durably (returns after fsync).
    pub fn commit(&self, positions: &[Position]) -> Result<(), PositionsError> {
        let mut batch = sled::Batch::default();
        for p in positions {
            let value = serde_json::to_vec(&p.checkpoint).expect("a checkpoint always serialises");
            batch.insert(&p.key.to_bytes()[..], value);
        }
        self.positions.apply_batch(batch).map_err(|e| self.err(e))?;
        self.db.flush().map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Forgets a file (gone for longer than `rotate_wait`).
    pub fn remove(&self, key: FileKey) -> Result<(), PositionsError> {
        self.positions
            .remove(key.to_bytes())
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Whether the fluentd pos file at `path` was already imported.
    pub fn imported(&self, path: &Path) -> Result<bool, PositionsError> {
        let v = self.meta.get("fluentd_import").map_err(|e| self.err(e))?;
        Ok(v.is_some_and(|v| v.as_ref() == path.as_os_str().as_encoded_bytes()))
    }

    /// Records that the fluentd pos file at `path` was imported.
    pub fn mark_imported(&self, path: &Path) -> Result<(), PositionsError> {
        self.meta
            .insert("fluentd_import", path.as_os_str().as_encoded_bytes())
            .map_err(|e| self.err(e))?;
        self.db.flush().map_err(|e| self.err(e))?;
        Ok(())
    }
}

/// Parses a fluentd in_tail pos file. Unwatched entries (offset all `f`) are skipped;
/// malformed lines are returned as `(line number, text)`.
pub fn parse_fluentd_pos(text: &str) -> (Vec<FluentdEntry>, Vec<(usize, String)>) {
    let mut entries = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let mut fields = line.split('\t');
        let parsed = (|| {
            let path = fields.next()?;
            let offset = u64::from_str_radix(fields.next()?.trim(), 16).ok()?;
            let ino = u64::from_str_radix(fields.next()?.trim(), 16).ok()?;
            Some(FluentdEntry {
                path: PathBuf::from(path),
                offset,
                ino,
            })
        })();
        match parsed {
            Some(e) if e.offset == u64::MAX => {}
            Some(e) => entries.push(e),
            None => bad.push((i + 1, line.to_string())),
        }
    }
    (entries, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint(offset: u64) -> Checkpoint {
        Checkpoint {
            v: 1,
            offset,
            head: Digest { hash: 7, len: 100 },
            marker: Digest { hash: 9, len: 32 },
            born: Some(123),
            path: "/var/log/at/a.log".into(),
            seen: 1_700_000_000,
        }
    }

    #[test]
    fn commits_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pos.sled");
        let key = FileKey { dev: 1, ino: 42 };
        {
            let store = PositionStore::open(&path).unwrap();
            store
                .commit(&[Position {
                    key,
                    checkpoint: checkpoint(10),
                }])
                .unwrap();
            store
                .commit(&[Position {
                    key,
                    checkpoint: checkpoint(20),
                }])
                .unwrap();
        }
        let store = PositionStore::open(&path).unwrap();
        let (all, bad) = store.load().unwrap();
        assert!(bad.is_empty());
        assert_eq!(all[&key].offset, 20);
        assert_eq!(store.get(key).unwrap().unwrap(), checkpoint(20));
        store.remove(key).unwrap();
        assert_eq!(store.get(key).unwrap(), None);
    }

    #[test]
    fn undecodable_entries_are_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let store = PositionStore::open(&dir.path().join("p")).unwrap();
        store
            .positions
            .insert(FileKey { dev: 1, ino: 1 }.to_bytes(), &b"{not json"[..])
            .unwrap();
        store
            .positions
            .insert(
                FileKey { dev: 1, ino: 2 }.to_bytes(),
                serde_json::to_vec(&Checkpoint {
                    v: 9,
                    ..checkpoint(1)
                })
                .unwrap(),
            )
            .unwrap();
        let (all, bad) = store.load().unwrap();
        assert!(all.is_empty());
        assert_eq!(bad.len(), 2);
        assert!(bad
            .iter()
            .any(|(_, why)| why.contains("unsupported version 9")));
    }

    #[test]
    fn fluentd_pos_files_parse() {
        let text = "/var/log/at/a.log\t00000000000003e8\t0000000000123abc\n/var/log/at/gone.log\tffffffffffffffff\t0000000000000001\ngarbage\n";
        let (entries, bad) = parse_fluentd_pos(text);
        assert_eq!(
            entries,
            [FluentdEntry {
                path: "/var/log/at/a.log".into(),
                offset: 1000,
                ino: 0x123abc
            }]
        );
        assert_eq!(bad, [(3, "garbage".to_string())]);
    }

    #[test]
    fn the_database_sits_next_to_the_pos_file() {
        assert_eq!(
            PositionStore::dir_for(Path::new("/mnt/p/fluentd-at.pos")),
            PathBuf::from("/mnt/p/fluentd-at.pos.sled")
        );
    }
}
