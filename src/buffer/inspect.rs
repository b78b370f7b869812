//! What `at-forwarder buffer` shows and does, reading the directory directly (safe while
//! the daemon runs: it only reads, and `requeue` moves files the daemon no longer owns).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::chunk::{self, Meta};
use super::records::Records;
use super::store::{now_ms, Dirs};

/// Where a chunk is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// In `chunks/`: open or sealed, waiting or being sent.
    Queue,
    /// In `backup/`.
    Backup,
}

/// One chunk on disk.
#[derive(Debug, Clone)]
pub struct ChunkInfo {
    /// Its id.
    pub id: String,
    /// Queue or backup.
    pub place: Place,
    /// Its key, records, size, attempts, reason (from `.meta`, or read from the chunk file
    /// of a chunk not tried yet).
    pub meta: Meta,
    /// Whether it has a `.meta`: it was tried at least once (or split).
    pub tried: bool,
}

impl ChunkInfo {
    /// Age in seconds.
    pub fn age_secs(&self) -> u64 {
        now_ms().saturating_sub(self.meta.created_ms) / 1000
    }
}

/// Every chunk under a buffer's `path`, oldest first.
pub fn list(path: &Path) -> io::Result<Vec<ChunkInfo>> {
    let dirs = Dirs::new(path);
    let mut out = Vec::new();
    for (dir, place) in [(&dirs.chunks, Place::Queue), (&dirs.backup, Place::Backup)] {
        let Ok(entries) = fs::read_dir(dir) else {
            continue;
        };
        for e in entries.filter_map(Result::ok) {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_suffix(".chunk") else {
                continue;
            };
            let meta: Option<Meta> = fs::read(dir.join(format!("{id}.meta")))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            let tried = meta.is_some();
            let meta = match meta {
                Some(m) => m,
                None => match chunk::scan(&e.path()) {
                    Ok(s) => Meta {
                        v: 1,
                        key: s.key,
                        state: chunk::ChunkState::Open,
                        created_ms: s.created_ms,
                        records: s.records.len() as u64,
                        bytes: s.good_len,
                        attempts: 0,
                        first_failure_ms: None,
                        next_attempt_ms: None,
                        backup_reason: None,
                    },
                    Err(_) => continue,
                },
            };
            out.push(ChunkInfo {
                id: id.to_string(),
                place,
                meta,
                tried,
            });
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// The records of one chunk.
pub fn records(path: &Path, id: &str) -> io::Result<Records> {
    let dirs = Dirs::new(path);
    for dir in [&dirs.chunks, &dirs.backup] {
        let file = dir.join(format!("{id}.chunk"));
        if file.exists() {
            return chunk::scan(&file)
                .map(|s| s.records)
                .map_err(|e| io::Error::other(e.to_string()));
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("no chunk {id}"),
    ))
}

/// Moves backed-up chunks back into the queue (attempts reset); a running at-forwarder
/// sends them after its next start. Returns the ids moved.
pub fn requeue(path: &Path, ids: &[String], all: bool) -> io::Result<Vec<String>> {
    let dirs = Dirs::new(path);
    let mut moved = Vec::new();
    for info in list(path)?
        .into_iter()
        .filter(|c| c.place == Place::Backup && (all || ids.contains(&c.id)))
    {
        let meta = Meta {
            attempts: 0,
            first_failure_ms: None,
            next_attempt_ms: None,
            backup_reason: None,
            ..info.meta
        };
        let target: PathBuf = dirs.chunks.join(format!("{}.chunk", info.id));
        fs::rename(dirs.backup.join(format!("{}.chunk", info.id)), &target)?;
        chunk::write_meta(&dirs.chunks.join(format!("{}.meta", info.id)), &meta)?;
        let _ = fs::remove_file(dirs.backup.join(format!("{}.meta", info.id)));
        moved.push(info.id);
    }
    Ok(moved)
}
