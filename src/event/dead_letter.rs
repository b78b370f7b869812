//! Dead letters: events that cannot be forwarded, kept on disk with their reason so that
//! nothing is dropped without a trace.
//!
//! # On-disk format, version 1
//!
//! Directory `<state>/dead-letters/` (mode 0700), one append-only file per UTC day,
//! `YYYY-MM-DD.jsonl` (mode 0600), one JSON object per line:
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
//! `requeue` takes records out: their lines are appended to `<state>/requeue/<time>.log`
//! (fsynced), then each day file is rewritten without them (temp file, fsync, rename).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::time::Timestamp;
use super::Reason;
use crate::config::value::ConfigEnum;

/// Bytes of a line kept in a dead letter.
pub const KEPT_BYTES: usize = 64 * 1024;
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
}

/// The dead-letter store of a state directory.
#[derive(Debug)]
pub struct DeadLetterStore {
    dir: PathBuf,
    state: Mutex<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    total: HashMap<Reason, u64>,
    since_warn: HashMap<Reason, (u64, Option<Instant>)>,
}

impl DeadLetterStore {
    /// Opens (creating, mode 0700) `<state_dir>/dead-letters`.
    pub fn open(state_dir: &Path) -> io::Result<Self> {
        let dir = state_dir.join("dead-letters");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        Ok(DeadLetterStore {
            dir,
            state: Mutex::new(Counters::default()),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends dead letters (one fsync), counts them, and logs a WARN per reason at most
    /// once a minute.
    pub fn append(&self, letters: &[DeadLetter]) -> io::Result<()> {
        if letters.is_empty() {
            return Ok(());
        }
        let now = Timestamp::from(SystemTime::now());
        let mut text = Vec::new();
        for l in letters {
            let (line, line_base64) = match std::str::from_utf8(&l.line) {
                Ok(s) => (Some(s.to_string()), None),
                Err(_) => (
                    None,
                    Some(base64::engine::general_purpose::STANDARD.encode(&l.line)),
                ),
            };
            let record = Record {
                v: 1,
                time: now.to_at_format(),
                reason: l.reason.name().to_string(),
                message: l.message.clone(),
                path: l.path.clone(),
                offset: l.offset,
                length: l.length,
                line,
                line_base64,
                truncated: (l.line.len() as u64) < l.length,
            };
            serde_json::to_writer(&mut text, &record).map_err(io::Error::other)?;
            text.push(b'\n');
        }
        let path = self.dir.join(format!("{}.jsonl", now.date()));
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)?;
        file.write_all(&text)?;
        file.sync_data()?;
        self.count_and_warn(letters);
        Ok(())
    }

    fn count_and_warn(&self, letters: &[DeadLetter]) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
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
        let state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
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

    /// Moves the selected dead letters' lines to `<state>/requeue/<time>.log`, for a tail
    /// source to read again, and removes them from the store. Returns how many moved
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
        let requeue_dir = self.dir.parent().unwrap_or(&self.dir).join("requeue");
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
    let reader = BufReader::new(File::open(dir.join(format!("{day}.jsonl")))?);
    let mut out = Vec::new();
    for (i, line) in reader.split(b'\n').enumerate() {
        let line = line?;
        // A torn last record (crash during an append) does not decode and is skipped.
        let Ok(r) = serde_json::from_slice::<Record>(&line) else {
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
        });
    }
    Ok(out)
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
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn appends_lists_and_requeues() {
        let dir = tempfile::tempdir().unwrap();
        let store = DeadLetterStore::open(dir.path()).unwrap();
        store
            .append(&[
                DeadLetter::new(
                    Reason::InvalidJson,
                    "invalid JSON",
                    Path::new("/l/a.log"),
                    10,
                    b"{not json",
                ),
                DeadLetter::new(
                    Reason::InvalidUtf8,
                    "invalid UTF-8 at byte 1",
                    Path::new("/l/a.log"),
                    20,
                    b"x\xff",
                ),
                DeadLetter::new(
                    Reason::MissingService,
                    "missing meta",
                    Path::new("/l/b.log"),
                    0,
                    b"{}",
                ),
            ])
            .unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(store.dir()), 0o700);
        let listed = store.list().unwrap();
        assert_eq!(listed.len(), 3);
        assert_eq!(
            mode(
                &store
                    .dir()
                    .join(format!("{}.jsonl", listed[0].id.split(':').next().unwrap()))
            ),
            0o600
        );
        assert_eq!(listed[1].letter.line, b"x\xff");
        assert_eq!(listed[1].letter.reason, Reason::InvalidUtf8);
        assert_eq!(
            store.counts(),
            [
                (Reason::InvalidJson, 1),
                (Reason::InvalidUtf8, 1),
                (Reason::MissingService, 1)
            ]
        );
        let (moved, file) = store
            .requeue(|s| s.letter.reason == Reason::MissingService)
            .unwrap();
        assert_eq!(moved, 1);
        assert_eq!(fs::read(file.unwrap()).unwrap(), b"{}\n");
        assert_eq!(store.list().unwrap().len(), 2);
    }

    #[test]
    fn long_lines_keep_their_start_and_a_torn_record_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let store = DeadLetterStore::open(dir.path()).unwrap();
        let long = vec![b'x'; KEPT_BYTES * 2];
        store
            .append(&[DeadLetter::new(
                Reason::LineTooLong,
                "too long",
                Path::new("/l/a.log"),
                0,
                &long,
            )])
            .unwrap();
        let day = store.days().unwrap().pop().unwrap();
        OpenOptions::new()
            .append(true)
            .open(store.dir().join(format!("{day}.jsonl")))
            .unwrap()
            .write_all(b"{\"v\":1,\"ti")
            .unwrap();
        let listed = store.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert!(listed[0].truncated);
        assert_eq!(
            (listed[0].letter.line.len(), listed[0].letter.length),
            (KEPT_BYTES, 2 * KEPT_BYTES as u64)
        );
    }
}
