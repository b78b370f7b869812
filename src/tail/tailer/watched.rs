//! A file being followed, and one read of it: lines into the batch, the position after them.

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tracing::{info, warn};

use super::truncation::{restart_at, same_content};
use crate::metrics::SourceGauges;
use crate::tail::batch::Batch;
use crate::tail::confine::Confinement;
use crate::tail::identity::{self, Digest, FileKey, HEAD_BYTES};
use crate::tail::lines::{read_lines, ReadFrom};
use crate::tail::positions::{Checkpoint, Position};
use crate::tail::TailOptions;

/// A file being followed.
#[derive(Debug)]
pub(super) struct Watched {
    pub(super) key: FileKey,
    pub(super) path: PathBuf,
    /// Closed when idle and over the open-files cap; never closed while vanished.
    pub(super) file: Option<File>,
    /// Where reading goes on (ahead of the saved position until downstream commits).
    pub(super) next: ReadFrom,
    pub(super) head: Digest,
    /// Hash of the bytes before `next.offset`.
    pub(super) marker: Digest,
    pub(super) born: Option<u128>,
    /// Size and modification time at the last check, to skip checks of idle files.
    pub(super) last_seen: (u64, Option<SystemTime>),
    pub(super) last_activity: Instant,
    pub(super) at_eof: bool,
    /// Set when the file no longer matches the globs (renamed away or deleted).
    pub(super) vanished_since: Option<Instant>,
    /// Set by a check that found the file shorter than, or different before, `next`.
    pub(super) truncated: bool,
    pub(super) warned_slow_drain: bool,
    /// `read_bytes_limit_per_second`: when the current second began, and the bytes read
    /// in it.
    pub(super) rate_window: (Instant, u64),
    /// Set while the file has read its limit for this second.
    pub(super) throttled: bool,
}

impl Watched {
    /// Whether the rate cap keeps the file from being read now; starts a new second when
    /// the last one is over.
    fn over_rate(&mut self, limit: Option<u64>, now: Instant) -> bool {
        let Some(limit) = limit else {
            return false;
        };
        if now.saturating_duration_since(self.rate_window.0) >= std::time::Duration::from_secs(1) {
            self.rate_window = (now, 0);
        }
        self.throttled = self.rate_window.1 >= limit;
        self.throttled
    }
}

pub(super) fn read_file(
    w: &mut Watched,
    opts: &TailOptions,
    confine: &Confinement,
    buf: &mut Vec<u8>,
    batch: &mut Batch,
    (now, metrics): (Instant, &SourceGauges),
) -> io::Result<()> {
    if w.file.is_none() {
        if w.vanished_since.is_some() {
            return Ok(());
        }
        let file = confine.open(&w.path)?;
        let meta = file.metadata()?;
        if FileKey::of(&meta) != w.key {
            // The path now names another file; the next scan sorts out where ours went.
            return Ok(());
        }
        // While the file was closed its inode may have been freed and reused.
        let saved = checkpoint(w, 0);
        let same = same_content(&file, meta.len(), identity::birth_time(&meta), &saved)?;
        w.file = Some(file);
        if !same {
            info!(path = %w.path.display(), "A closed file's identity now holds other content; reading it from the start.");
            w.born = identity::birth_time(&meta);
            restart_at(w, 0);
            batch.set_position(position(w));
        }
    }
    if w.over_rate(opts.read_bytes_limit_per_second, now) {
        w.at_eof = false;
        return Ok(());
    }
    let file = w.file.as_mut().expect("opened above");
    let size = file.metadata()?.len();
    w.last_seen.0 = w.last_seen.0.max(size);
    if w.next.skipping_to.unwrap_or(w.next.offset) >= size {
        w.at_eof = true;
        return Ok(());
    }
    let index = batch.file(&w.path, w.key);
    let before = w.next;
    let out = read_lines(
        file,
        w.next,
        opts.read_lines_limit,
        opts.max_line_size,
        buf,
        |line, offset| batch.push(index, line, offset),
    )?;
    for long in &out.long_lines {
        warn!(path = %w.path.display(), offset = long.offset, bytes = long.len, max_line_size = opts.max_line_size, "Skipped a line longer than max_line_size.");
        batch.long_lines.push((w.path.clone(), *long));
    }
    w.at_eof = out.at_eof;
    w.next = out.next;
    w.rate_window.1 += out.next.offset.saturating_sub(before.offset);
    metrics
        .lines_read
        .fetch_add(out.lines as u64, std::sync::atomic::Ordering::Relaxed);
    metrics.bytes_read.fetch_add(
        out.next.offset.saturating_sub(before.offset),
        std::sync::atomic::Ordering::Relaxed,
    );
    if out.next.offset != before.offset {
        w.last_activity = now;
        w.marker = identity::marker(file, w.next.offset)?;
        if w.head.len < HEAD_BYTES {
            w.head = identity::head(file, size)?;
        }
        batch.set_position(position(w));
    }
    Ok(())
}

pub(super) fn position(w: &Watched) -> Position {
    Position {
        key: w.key,
        checkpoint: checkpoint(w, unix_now()),
    }
}

/// Where reading of `w` stands, noted at `seen` (seconds since the epoch).
fn checkpoint(w: &Watched, seen: u64) -> Checkpoint {
    Checkpoint {
        v: 1,
        offset: w.next.offset,
        head: w.head,
        marker: w.marker,
        born: w.born,
        path: w.path.clone(),
        seen,
    }
}

pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
