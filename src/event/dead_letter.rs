//! Dead letters: events that cannot be forwarded, kept on disk with their reason so that
//! nothing is dropped without a trace.
//!
//! # On-disk format, version 1
//!
//! Directory `<state>/dead-letters/` (mode 0700), append-only files per UTC day,
//! `YYYY-MM-DD.jsonl`, then `YYYY-MM-DD.0001.jsonl`, … (mode 0600; a new one is started
//! when the current one holds an eighth of the store's limit), one JSON object per line:
//!
//! ```text
//! {"v":1,"time":"2026-11-22T05:07:50.320+0000","reason":"invalid_json","message":"…",
//!  "path":"/var/log/at/a.log","offset":123,"length":456,"line":"…"}
//! ```
//!
//! `line` holds the original line when it is UTF-8, `line_base64` otherwise; a line longer
//! than [`KEPT_BYTES`] keeps only its start, with `"truncated":true` (`length` is the whole
//! line's). Each append is fsynced. A crash can leave a partial last line; readers skip it.
//! Unknown fields are ignored, so fields can be added within version 1.
//!
//! Consecutive lines of one file refused for the same reason and message (a flood of
//! `x\n`) are one record, a run: `"count":N`, `offset` of its first line, `length` up to
//! the end of its last, and `line` / `line_base64` holding the lines joined by `\n`, at most
//! [`RUN_BYTES`] of them; of the two encodings the shorter is written. One record per
//! line made a 2-byte line a 200-byte record; with runs the store holds at most about
//! 1.4× the bytes refused.
//!
//! # Bounded
//!
//! The files together are kept under a limit (`<system> dead_letter_limit_size`, default
//! [`DEFAULT_LIMIT`]): past it the oldest files are removed, the records they held counted
//! in `at_forwarder_dead_letters_dropped_total`, with an ERROR at most once a minute.
//!
//! `requeue` takes records out: their lines are appended to `<state>/requeue/<time>.log`
//! (fsynced), then each day file is rewritten without them (temp file, fsync, rename). The
//! pipeline reads that directory as a source of its own (`pipeline/requeue.rs`).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde::{Deserialize, Serialize};
use tracing::{error, warn};

use super::time::Timestamp;
use super::Reason;
use crate::config::value::ConfigEnum;

/// Bytes of a line kept in a dead letter.
pub const KEPT_BYTES: usize = 64 * 1024;
/// Most bytes of lines one run record holds.
pub const RUN_BYTES: usize = 64 * 1024;
/// Default total size of the store's files.
pub const DEFAULT_LIMIT: u64 = crate::config::DEFAULT_DEAD_LETTER_LIMIT;
/// Least time between two WARN lines for one reason.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// One event that could not be forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Why.
    pub reason: Reason,
    /// What exactly, naming the field.
    pub message: String,
    /// The file it was read from.
    pub path: PathBuf,
    /// Its offset there.
    pub offset: u64,
    /// Its length (the whole line's, even when the bytes kept are fewer).
    pub length: u64,
    /// The line (its first [`KEPT_BYTES`]).
    pub line: Vec<u8>,
}

impl DeadLetter {
    /// A dead letter for `line`; keeps at most [`KEPT_BYTES`] of it.
    pub fn new(
        reason: Reason,
        message: impl Into<String>,
        path: &Path,
        offset: u64,
        line: &[u8],
    ) -> Self {
        DeadLetter {
            reason,
            message: message.into(),
            path: path.to_path_buf(),
            offset,
            length: line.len() as u64,
            line: line[..line.len().min(KEPT_BYTES)].to_vec(),
        }
    }
}

/// Where `requeue` writes lines, under the state directory; the pipeline reads it as a
/// source of its own.
pub const REQUEUE_DIR: &str = "requeue";

/// A dead letter as stored, with the id `requeue` and `show` take (`YYYY-MM-DD:N`, N the
/// record's line in its day file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// `YYYY-MM-DD:N`.
    pub id: String,
    /// When it was recorded.
    pub time: String,
    /// The dead letter.
    pub letter: DeadLetter,
    /// Whether `line` holds only the start of the line.
    pub truncated: bool,
    /// Lines held: more than one for a run of consecutive lines refused alike, joined
    /// by `\n` in `letter.line`.
    pub count: u64,
}

#[derive(Serialize, Deserialize)]
struct Record {
    v: u32,
    time: String,
    reason: String,
    message: String,
    path: PathBuf,
    offset: u64,
    length: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    line: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    line_base64: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    truncated: bool,
    #[serde(default = "one", skip_serializing_if = "is_one")]
    count: u64,
}

fn one() -> u64 {
    1
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_one(n: &u64) -> bool {
    *n == 1
}

/// The dead-letter store of a state directory.
#[derive(Debug)]
pub struct DeadLetterStore {
    dir: PathBuf,
    limit: u64,
    state: Mutex<Counters>,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
}

#[derive(Debug, Default)]
struct Counters {
    total: HashMap<Reason, u64>,
    since_warn: HashMap<Reason, (u64, Option<Instant>)>,
    /// The file being appended to (its stem) and its size.
    current: Option<(String, u64)>,
    /// Bytes of all files, once listed.
    stored: Option<u64>,
    /// When records were last removed for the limit (ERROR at most once a minute).
    last_drop_error: Option<Instant>,
}

impl DeadLetterStore {
    /// Opens (creating, mode 0700) `<state_dir>/dead-letters`.
    pub fn open(state_dir: &Path) -> io::Result<Self> {
        Self::open_with_limit(state_dir, DEFAULT_LIMIT, std::sync::Arc::default())
    }

    /// Opens the store, keeping its files under `limit` bytes (records dropped for it are
    /// counted in `metrics`).
    pub fn open_with_limit(
        state_dir: &Path,
        limit: u64,
        metrics: std::sync::Arc<crate::metrics::Metrics>,
    ) -> io::Result<Self> {
        let dir = state_dir.join("dead-letters");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        Ok(DeadLetterStore {
            dir,
            limit: limit.max(4096),
            state: Mutex::new(Counters::default()),
            metrics,
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends dead letters (one fsync; consecutive lines refused alike as one run
    /// record), counts them, logs a WARN per reason at most once a minute, and removes the
    /// oldest files past the store's limit.
    pub fn append(&self, letters: &[DeadLetter]) -> io::Result<()> {
        if letters.is_empty() {
            return Ok(());
        }
        let now = Timestamp::from(SystemTime::now());
        let time = now.to_at_format();
        let mut text = Vec::new();
        for run in runs(letters) {
            serde_json::to_writer(&mut text, &run.record(&time)).map_err(io::Error::other)?;
            text.push(b'\n');
        }
        {
            let mut state = self.lock();
            let stem = self.current_file(&mut state, &now.date().to_string())?;
            let mut file = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(self.dir.join(format!("{stem}.jsonl")))?;
            file.write_all(&text)?;
            file.sync_data()?;
            let written = text.len() as u64;
            if let Some((_, size)) = &mut state.current {
                *size += written;
            }
            if let Some(stored) = &mut state.stored {
                *stored += written;
            }
            self.enforce_limit(&mut state);
        }
        self.count_and_warn(letters);
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The stem of the file to append to today: the last of the day's files, or the next
    /// one once it holds an eighth of the limit.
    fn current_file(&self, state: &mut Counters, today: &str) -> io::Result<String> {
        let segment = (self.limit / 8).max(4096);
        if !state
            .current
            .as_ref()
            .is_some_and(|(stem, _)| stem.starts_with(today))
        {
            let last = self
                .days()?
                .into_iter()
                .rfind(|stem| stem.starts_with(today))
                .unwrap_or_else(|| today.to_string());
            let size = fs::metadata(self.dir.join(format!("{last}.jsonl"))).map_or(0, |m| m.len());
            state.current = Some((last, size));
        }
        let (stem, size) = state.current.as_mut().expect("set above");
        if *size >= segment {
            let seq: u32 = stem
                .strip_prefix(today)
                .and_then(|rest| rest.strip_prefix('.'))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            *stem = format!("{today}.{:04}", seq + 1);
            *size = 0;
        }
        Ok(stem.clone())
    }

    /// Removes the oldest files (never the current one) while the store is over its limit.
    fn enforce_limit(&self, state: &mut Counters) {
        let stored = match state.stored {
            Some(n) => n,
            None => {
                let n = self.stored_bytes();
                state.stored = Some(n);
                n
            }
        };
        if stored <= self.limit {
            return;
        }
        let current = state.current.as_ref().map(|(stem, _)| stem.clone());
        let mut over = stored - self.limit;
        let (mut files, mut records) = (0u64, 0u64);
        for stem in self.days().unwrap_or_default() {
            if over == 0 || Some(&stem) == current.as_ref() {
                break;
            }
            let path = self.dir.join(format!("{stem}.jsonl"));
            let Ok(bytes) = fs::read(&path) else { continue };
            if fs::remove_file(&path).is_ok() {
                over = over.saturating_sub(bytes.len() as u64);
                files += 1;
                records += read_records(&bytes).map(|r| r.count).sum::<u64>();
            }
        }
        state.stored = Some(self.stored_bytes());
        if files == 0 {
            return;
        }
        self.metrics
            .dead_letters_dropped
            .fetch_add(records, std::sync::atomic::Ordering::Relaxed);
        if state
            .last_drop_error
            .is_none_or(|t| t.elapsed() >= WARN_EVERY)
        {
            error!(dir = %self.dir.display(), files, records, limit = self.limit, "The dead-letter store reached dead_letter_limit_size: its oldest files were removed (counted in at_forwarder_dead_letters_dropped_total).");
            state.last_drop_error = Some(Instant::now());
        }
    }

    fn stored_bytes(&self) -> u64 {
        self.days()
            .unwrap_or_default()
            .iter()
            .filter_map(|stem| fs::metadata(self.dir.join(format!("{stem}.jsonl"))).ok())
            .map(|m| m.len())
            .sum()
    }

    fn count_and_warn(&self, letters: &[DeadLetter]) {
        let mut state = self.lock();
        for l in letters {
            *state.total.entry(l.reason).or_default() += 1;
            let (count, last) = state.since_warn.entry(l.reason).or_default();
            *count += 1;
            if last.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                warn!(reason = l.reason.name(), count = *count, path = %l.path.display(), offset = l.offset, dir = %self.dir.display(), "Events dead-lettered: {}", l.message);
                *count = 0;
                *last = Some(Instant::now());
            }
        }
    }

    /// Dead letters recorded by this process, by reason.
    pub fn counts(&self) -> Vec<(Reason, u64)> {
        let state = self.lock();
        let mut counts: Vec<(Reason, u64)> = state.total.iter().map(|(r, n)| (*r, *n)).collect();
        counts.sort_by_key(|(r, _)| r.name());
        counts
    }

    /// Every stored dead letter, oldest day first.
    pub fn list(&self) -> io::Result<Vec<Stored>> {
        let mut out = Vec::new();
        for day in self.days()? {
            out.extend(read_day(&self.dir, &day)?);
        }
        Ok(out)
    }

    /// Moves the selected dead letters' lines to `<state>/requeue/<time>.log`, for the
    /// pipeline's requeue source to read again, and removes them from the store. Returns how many moved
    /// and the file written.
    pub fn requeue(
        &self,
        select: impl Fn(&Stored) -> bool,
    ) -> io::Result<(usize, Option<PathBuf>)> {
        let all = self.list()?;
        let chosen: Vec<&Stored> = all.iter().filter(|s| select(s)).collect();
        if chosen.is_empty() {
            return Ok((0, None));
        }
        let requeue_dir = self.dir.parent().unwrap_or(&self.dir).join(REQUEUE_DIR);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&requeue_dir)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let target = requeue_dir.join(format!(
            "requeued-{}-{:09}.log",
            now.as_secs(),
            now.subsec_nanos()
        ));
        let mut file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(&target)?;
        for s in &chosen {
            file.write_all(&s.letter.line)?;
            file.write_all(b"\n")?;
        }
        file.sync_all()?;
        let ids: std::collections::HashSet<&str> = chosen.iter().map(|s| s.id.as_str()).collect();
        for day in self.days()? {
            self.rewrite_day(&day, &ids)?;
        }
        Ok((chosen.len(), Some(target)))
    }

    fn days(&self) -> io::Result<Vec<String>> {
        let mut days: Vec<String> = fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter_map(|n| n.strip_suffix(".jsonl").map(String::from))
            .collect();
        days.sort();
        Ok(days)
    }

    fn rewrite_day(&self, day: &str, remove: &std::collections::HashSet<&str>) -> io::Result<()> {
        let path = self.dir.join(format!("{day}.jsonl"));
        let reader = BufReader::new(File::open(&path)?);
        let mut kept = Vec::new();
        let mut removed = false;
        for (i, line) in reader.split(b'\n').enumerate() {
            let line = line?;
            if remove.contains(format!("{day}:{}", i + 1).as_str()) {
                removed = true;
            } else {
                kept.extend_from_slice(&line);
                kept.push(b'\n');
            }
        }
        if !removed {
            return Ok(());
        }
        crate::fsutil::replace_file(&path, &kept)
    }
}

fn read_day(dir: &Path, day: &str) -> io::Result<Vec<Stored>> {
    let bytes = fs::read(dir.join(format!("{day}.jsonl")))?;
    let mut out = Vec::new();
    for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
        // A torn last record (crash during an append) does not decode and is skipped.
        let Ok(r) = serde_json::from_slice::<Record>(line) else {
            continue;
        };
        let bytes = match (r.line, r.line_base64) {
            (Some(text), _) => text.into_bytes(),
            (None, Some(b64)) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap_or_default(),
            (None, None) => Vec::new(),
        };
        let reason = Reason::from_name(&r.reason).unwrap_or(Reason::InvalidJson);
        out.push(Stored {
            id: format!("{day}:{}", i + 1),
            time: r.time,
            letter: DeadLetter {
                reason,
                message: r.message,
                path: r.path,
                offset: r.offset,
                length: r.length,
                line: bytes,
            },
            truncated: r.truncated,
            count: r.count,
        });
    }
    Ok(out)
}

/// The records of a file's bytes that decode.
fn read_records(bytes: &[u8]) -> impl Iterator<Item = Record> + '_ {
    bytes
        .split(|b| *b == b'\n')
        .filter_map(|line| serde_json::from_slice::<Record>(line).ok())
}

/// Consecutive dead letters of one file, refused for the same reason and message.
struct Run<'a> {
    first: &'a DeadLetter,
    /// Offset just past the last line (before its newline).
    end: u64,
    count: u64,
    lines: Vec<u8>,
}

impl Run<'_> {
    fn takes(&self, l: &DeadLetter) -> bool {
        let whole = |d: &DeadLetter| d.line.len() as u64 == d.length;
        whole(self.first)
            && whole(l)
            && l.offset == self.end + 1
            && l.path == self.first.path
            && l.reason == self.first.reason
            && l.message == self.first.message
            && self.lines.len() + 1 + l.line.len() <= RUN_BYTES
    }

    fn record(&self, time: &str) -> Record {
        let (line, line_base64) = encode(&self.lines);
        let length = self.end - self.first.offset;
        Record {
            v: 1,
            time: time.to_string(),
            reason: self.first.reason.name().to_string(),
            message: self.first.message.clone(),
            path: self.first.path.clone(),
            offset: self.first.offset,
            length,
            line,
            line_base64,
            truncated: (self.lines.len() as u64) < length,
            count: self.count,
        }
    }
}

fn runs(letters: &[DeadLetter]) -> Vec<Run<'_>> {
    let mut out: Vec<Run<'_>> = Vec::new();
    for l in letters {
        if let Some(run) = out.last_mut().filter(|r| r.takes(l)) {
            run.lines.push(b'\n');
            run.lines.extend_from_slice(&l.line);
            run.end = l.offset + l.length;
            run.count += 1;
            continue;
        }
        out.push(Run {
            first: l,
            end: l.offset + l.length,
            count: 1,
            lines: l.line.clone(),
        });
    }
    out
}

/// The line as a JSON string when it is UTF-8 and that is no longer than base64, else as
/// base64: control characters escape to six bytes each, which would let a hostile line
/// grow threefold on disk.
fn encode(bytes: &[u8]) -> (Option<String>, Option<String>) {
    let b64 = || base64::engine::general_purpose::STANDARD.encode(bytes);
    match std::str::from_utf8(bytes) {
        Ok(text) => {
            let escaped = serde_json::to_string(text).map_or(usize::MAX, |j| j.len() - 2);
            if escaped <= bytes.len().div_ceil(3) * 4 {
                (Some(text.to_string()), None)
            } else {
                (None, Some(b64()))
            }
        }
        Err(_) => (None, Some(b64())),
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        Timestamp {
            secs: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            nanos: d.subsec_nanos(),
        }
    }
}

#[cfg(test)]
mod tests;
