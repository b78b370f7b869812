//! Truncation and replacement: noticing that a tracked file was cut back, rewritten or
//! replaced under the same identity, and where reading starts over (at 0, or where the
//! original was when a copytruncate copy is recognised by its head and marker).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use tracing::info;

use super::{position, Tailer, Watched};
use crate::tail::batch::Batch;
use crate::tail::confine::Confinement;
use crate::tail::discovery::Found;
use crate::tail::identity::{self, FileKey, HEAD_BYTES};
use crate::tail::lines::ReadFrom;
use crate::tail::positions::Checkpoint;

impl Tailer {
    /// A file (`copy`) whose head and marker match a tracked file that was just truncated
    /// is the copy made by copytruncate: it is read on from where the original was, and
    /// the two are linked for this pass's batch.
    pub(super) fn copy_of_truncated(
        &mut self,
        file: &File,
        size: u64,
        copy: FileKey,
    ) -> io::Result<Option<u64>> {
        let candidate = |w: &&Watched| w.truncated && w.key != copy;
        let tracked = self
            .files
            .values()
            .filter(candidate)
            .map(|w| (w.key, w.next.offset, w.head, w.marker));
        let orphans = (self.orphans.iter()).map(|(k, c)| (*k, c.offset, c.head, c.marker));
        for (i, (original, offset, head, marker)) in tracked.chain(orphans).enumerate() {
            // Nothing read means nothing to continue: an offset of 0 proves nothing.
            if offset == 0
                || head.len == 0
                || offset > size
                || identity::head_of_len(file, size, head.len)? != Some(head)
            {
                continue;
            }
            if identity::marker(file, offset)? == marker {
                let tracked_count = self.files.values().filter(candidate).count();
                if let Some(j) = i.checked_sub(tracked_count) {
                    self.orphans.remove(j);
                }
                self.linked.extend([original, copy]);
                return Ok(Some(offset));
            }
        }
        Ok(None)
    }

    /// Starts truncated files over: from the start, or, when the file now holds a copy of
    /// another truncated file (its inode was reused by the copy), from that file's offset.
    pub(super) fn restart_truncated(&mut self, batch: &mut Batch) {
        let keys: Vec<FileKey> = self
            .files
            .values()
            .filter(|w| w.truncated)
            .map(|w| w.key)
            .collect();
        let mut starts = Vec::new();
        for key in keys {
            let w = &self.files[&key];
            let Some(file) = w.file.as_ref().and_then(|f| f.try_clone().ok()) else {
                continue;
            };
            let size = file.metadata().map_or(0, |m| m.len());
            starts.push((
                key,
                self.copy_of_truncated(&file, size, key)
                    .ok()
                    .flatten()
                    .unwrap_or(0),
            ));
        }
        for (key, offset) in starts {
            let w = self.files.get_mut(&key).expect("collected above");
            restart_at(w, offset);
            batch.set_position(position(w));
        }
    }
}

/// Flags a tracked file that shrank below the read position or whose bytes before it
/// changed (truncated, possibly regrown; or, for a closed file, its inode reused). A closed
/// file is looked at through its path and opened only when it changed. Returns the flag.
pub(super) fn check_truncation(w: &mut Watched, confine: &Confinement) -> bool {
    let meta = match &w.file {
        Some(file) => file.metadata(),
        None if w.vanished_since.is_some() => return false,
        None => std::fs::metadata(&w.path),
    };
    let Ok(meta) = meta else { return false };
    if FileKey::of(&meta) != w.key {
        return false;
    }
    let seen = (meta.len(), meta.modified().ok());
    if seen == w.last_seen {
        return w.truncated;
    }
    w.last_seen = seen;
    if w.file.is_none() {
        match confine.open(&w.path) {
            Ok(file) if file.metadata().is_ok_and(|m| FileKey::of(&m) == w.key) => {
                w.file = Some(file)
            }
            _ => return false,
        }
    }
    let file = w.file.as_ref().expect("opened above");
    let born_changed =
        matches!((w.born, identity::birth_time(&meta)), (Some(a), Some(b)) if a != b);
    let changed_before = w.next.offset > 0
        && identity::marker(file, w.next.offset.min(meta.len())).ok() != Some(w.marker);
    if meta.len() < w.next.offset || changed_before || born_changed || head_replaced(w) {
        info!(path = %w.path.display(), size = meta.len(), offset = w.next.offset, "File truncated or replaced; reading it again from the start.");
        w.truncated = true;
        w.born = identity::birth_time(&meta);
    }
    w.truncated
}

/// Nothing read yet, so no marker to check: the head tells whether the content is still
/// the one seen when tracking (re)started (a copytruncate while reading was paused), and
/// grows with the file until it covers [`HEAD_BYTES`], so that the content can be
/// recognised in its copy.
fn head_replaced(w: &mut Watched) -> bool {
    if w.next.offset > 0 {
        return false;
    }
    let Some(file) = &w.file else { return false };
    let size = file.metadata().map_or(0, |m| m.len());
    let (replaced, grown) = match identity::head_of_len(file, size, w.head.len) {
        Ok(Some(h)) if h == w.head => {
            let grows = w.head.len < HEAD_BYTES && size > w.head.len;
            (
                false,
                grows.then(|| identity::head(file, size).ok()).flatten(),
            )
        }
        Ok(_) => (w.head.len > 0, None),
        Err(_) => (false, None),
    };
    if let Some(h) = grown {
        w.head = h;
    }
    replaced
}

pub(super) fn restart_at(w: &mut Watched, offset: u64) {
    w.truncated = false;
    w.next = ReadFrom {
        offset,
        skipping_to: None,
    };
    w.at_eof = false;
    if let Some(file) = &w.file {
        let size = file.metadata().map_or(0, |m| m.len());
        w.head = identity::head(file, size).unwrap_or_default();
        w.marker = identity::marker(file, offset).unwrap_or_default();
    }
}

/// Whether a found file is the one a saved position was taken from (same birth time where
/// known), now truncated or rewritten.
pub(super) fn truncated_since(f: &Found, saved: &Checkpoint, confine: &Confinement) -> bool {
    let born = identity::birth_time(&f.meta);
    if saved.born.is_some() && born.is_some() && saved.born != born {
        return false;
    }
    let Ok(file) = confine.open(&f.path) else {
        return false;
    };
    !same_content(&file, f.meta.len(), born, saved).unwrap_or(true)
}

/// Whether a file still holds what a saved position describes.
pub(super) fn same_content(
    file: &File,
    size: u64,
    born: Option<u128>,
    saved: &Checkpoint,
) -> io::Result<bool> {
    if let (Some(a), Some(b)) = (born, saved.born) {
        if a != b {
            return Ok(false);
        }
    }
    if size < saved.offset || identity::head_of_len(file, size, saved.head.len)? != Some(saved.head)
    {
        return Ok(false);
    }
    Ok(identity::marker(file, saved.offset)? == saved.marker)
}

/// Offset just past the last `\n` (0 when there is none): where tailing from the end
/// starts without cutting a line in two.
pub(super) fn end_of_last_line(file: &File, size: u64) -> io::Result<u64> {
    let mut end = size;
    let mut buf = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..usize::try_from(end - start).expect("at most 64 KiB")];
        file.read_exact_at(chunk, start)?;
        if let Some(i) = chunk.iter().rposition(|b| *b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}
