//! Start-up recovery of a buffer directory (see the module documentation of [`super`]).

use std::fs;
use std::path::Path;

use tracing::{error, warn};

use super::chunk::{self, ChunkState, Meta};
use super::handled::Recovered;
use super::store::Store;

pub(super) fn recover(store: &Store, recovered: &Recovered) {
    let entries = match fs::read_dir(&store.dirs.chunks) {
        Ok(entries) => entries,
        Err(e) => {
            error!(dir = %store.dirs.chunks.display(), error = %e, "Cannot read the buffer directory.");
            return;
        }
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    let mut quarantined = 0;
    for name in &names {
        let path = store.dirs.chunks.join(name);
        if name.ends_with(".tmp") {
            warn!(file = %path.display(), "Removing an unfinished write left by a crash.");
            let _ = fs::remove_file(&path);
        } else if let Some(id) = name.strip_suffix(".meta") {
            if !names.iter().any(|n| n == &format!("{id}.chunk")) {
                let _ = fs::remove_file(&path);
            }
        } else if let Some(id) = name.strip_suffix(".chunk") {
            quarantined += recover_chunk(store, recovered, id, &path);
        }
    }
    store.note_recovery(quarantined);
}

/// Returns the number of pieces quarantined.
fn recover_chunk(store: &Store, recovered: &Recovered, id: &str, path: &Path) -> u64 {
    let meta_path = store.dirs.chunks.join(format!("{id}.meta"));
    let scan = match chunk::scan(path) {
        Ok(scan) => scan,
        Err(e) => {
            let empty = fs::metadata(path).is_ok_and(|m| m.len() == 0);
            if empty {
                warn!(file = %path.display(), "Removing an empty chunk file (created just before a crash).");
                let _ = fs::remove_file(path);
            } else {
                error!(file = %path.display(), error = %e, "Chunk unreadable; moved to quarantine.");
                let _ = fs::rename(path, store.dirs.quarantine.join(format!("{id}.chunk")));
            }
            let _ = fs::remove_file(&meta_path);
            return u64::from(!empty);
        }
    };
    let mut pieces = 0;
    if !scan.corrupt.is_empty() || scan.torn_tail.is_some() {
        error!(file = %path.display(), corrupt_records = scan.corrupt.len(), torn_tail_bytes = scan.torn_tail.map_or(0, |t| t.1), "Chunk damaged; keeping its good records, the rest goes to quarantine.");
        store.quarantine_pieces(id, &scan);
        if let Some((offset, len)) = scan.torn_tail {
            let tail = fs::read(path).ok().and_then(|d| {
                d.get(offset as usize..(offset + len) as usize)
                    .map(<[u8]>::to_vec)
            });
            if let Some(tail) = tail {
                let _ = crate::fsutil::write_private(
                    &store.dirs.quarantine.join(format!("{id}.tail-{offset}")),
                    &tail,
                );
                pieces += 1;
            }
        }
        if let Err(e) = chunk::write_whole(path, &scan.key, scan.created_ms, &scan.records) {
            error!(file = %path.display(), error = %e, "Could not rewrite a repaired chunk; sending what can be read.");
        }
    }
    recovered.add(&scan.records);
    if scan.records.is_empty() {
        let _ = fs::remove_file(path);
        let _ = fs::remove_file(&meta_path);
        return pieces;
    }
    let old: Option<Meta> = fs::read(&meta_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let bytes = fs::metadata(path).map_or(0, |m| m.len());
    let meta = Meta {
        v: 1,
        key: scan.key.clone(),
        state: ChunkState::Sealed,
        created_ms: scan.created_ms,
        records: scan.records.len() as u64,
        bytes,
        attempts: old.as_ref().map_or(0, |m| m.attempts),
        first_failure_ms: old.as_ref().and_then(|m| m.first_failure_ms),
        next_attempt_ms: old.as_ref().and_then(|m| m.next_attempt_ms),
        backup_reason: None,
    };
    if old.as_ref() != Some(&meta) {
        // An open chunk's records may be in the page cache only (the process died, not the
        // machine): made durable now, before positions read ahead of them are saved.
        if let Err(e) = fs::File::open(path).and_then(|f| f.sync_all()) {
            error!(file = %path.display(), error = %e, "Could not fsync a recovered chunk.");
        }
    }
    // A `.meta` keeps retry state; one that no longer matches the chunk (repaired) is
    // rewritten. A chunk never tried needs none.
    if old.as_ref().is_some_and(|old| old != &meta) {
        if let Err(e) = chunk::write_meta(&meta_path, &meta) {
            error!(file = %meta_path.display(), error = %e, "Could not write chunk metadata; the chunk is sent all the same.");
        }
    }
    store.enqueue_recovered(id.to_string(), &meta);
    pieces
}
