//! Rotation of the files a tail source follows (`<rotate>`, at-forwarder's own): keeps
//! `/var/log/at` bounded on nodes as seed 001's cluster did (daily, 3 kept), without the
//! two ways logrotate loses audit events (removing a rotated file not yet read or not yet
//! delivered; copytruncate dropping what is written between the copy and the truncation).
//!
//! - **Which files**: regular files the rotation's globs match (confined to the source's
//!   roots, never through a link leading out) and that the source follows too, whose
//!   rotated name the source's globs match as well — so a rotated file stays followed, and
//!   its saved position kept, until it is removed. A file that does not qualify is reported
//!   once (WARN) and left alone.
//! - **When**: a non-empty file born in an earlier period than now (periods of `age` from
//!   the Unix epoch: UTC days for `1d`; the birth time is the filesystem's, else when this
//!   process first saw the file), or one that reached `size`.
//! - **How**: renamed in its directory to `NAME.YYYYMMDD-HHMMSS` (UTC; `.N` added if that
//!   name is taken). Writers that open the file for each write — seed 001's contract for
//!   `/var/log/at`; long-lived handles belong in `/var/log/at-no-rotate` — then create a
//!   new one; the tailer follows the renamed one by inode and reads it to its end.
//! - **Removal**: of each file's rotated copies, those older than the newest `keep` are
//!   removed, each only once (1) its saved position — which the pipeline writes only for
//!   lines made durable downstream — reaches its size, and then (2) every buffer has
//!   delivered all it held at the moment (1) was first seen (`delivered_since`). Until
//!   both hold, it stays, whatever `keep` says, and is counted as waiting.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use globset::GlobMatcher;
use tracing::{info, warn};

use super::discovery::Discovery;
use super::identity::FileKey;
use super::positions::PositionStore;
use crate::config::RotationConfig;

/// What one pass did, for the log and the metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PassReport {
    /// Files renamed.
    pub rotated: usize,
    /// Rotated copies removed.
    pub removed: usize,
    /// Rotated copies beyond `keep` still waiting to be read or delivered.
    pub waiting: usize,
    /// Renames or removals that failed.
    pub errors: usize,
}

/// Rotates one source's files; see the module doc.
pub struct Rotator {
    config: RotationConfig,
    rotate: Vec<GlobMatcher>,
    /// The source's own globs: a file is rotated only if they match it and its new name.
    source: Discovery,
    store: PositionStore,
    /// When a file without a birth time was first seen.
    first_seen: HashMap<FileKey, SystemTime>,
    /// When a rotated copy was first seen read to its end (ms since the epoch).
    read_at: HashMap<FileKey, u64>,
    reported: HashSet<PathBuf>,
}

impl Rotator {
    /// A rotator for the source of `source_paths` / `source_excludes`.
    pub fn new(
        config: RotationConfig,
        source_paths: &[String],
        source_excludes: &[String],
        store: PositionStore,
    ) -> Self {
        let rotate = config
            .paths
            .iter()
            .filter_map(|g| super::discovery::matcher(g).ok())
            .collect();
        Rotator {
            source: Discovery::new(source_paths, source_excludes, None, false),
            rotate,
            config,
            store,
            first_seen: HashMap::new(),
            read_at: HashMap::new(),
            reported: HashSet::new(),
        }
    }

    /// How often a pass is worth making: a tenth of `age`, between 1 s and a minute.
    pub fn interval(&self) -> Duration {
        (self.config.age / 10).clamp(Duration::from_secs(1), Duration::from_secs(60))
    }

    /// Rotates what is due, then removes the rotated copies beyond `keep` whose lines are
    /// all delivered: `delivered_since(ms)` says whether every buffer has delivered all it
    /// held at `ms` (ms since the epoch).
    pub fn pass(&mut self, now: SystemTime, delivered_since: &dyn Fn(u64) -> bool) -> PassReport {
        let mut report = PassReport::default();
        let found = self.source.scan();
        let mut families: Vec<PathBuf> = Vec::new();
        for f in &found {
            if !self.rotate.iter().any(|m| m.is_match(&f.path)) || is_rotated_name(&f.path) {
                continue;
            }
            families.push(f.path.clone());
            if !self.due(f.key, &f.meta, now) {
                continue;
            }
            match self.rename(&f.path, f.key, now) {
                Ok(Some(to)) => {
                    info!(path = %f.path.display(), to = %to.display(), "Rotated a file.");
                    report.rotated += 1;
                }
                Ok(None) => {}
                Err(e) => {
                    report.errors += 1;
                    self.report_once(&f.path, &format!("cannot rotate: {e}"));
                }
            }
        }
        let now_ms = ms(now);
        for base in families {
            self.remove_old_copies(&base, now_ms, delivered_since, &mut report);
        }
        self.first_seen
            .retain(|k, _| found.iter().any(|f| f.key == *k));
        report
    }

    /// Whether a file is due for rotation now.
    fn due(&mut self, key: FileKey, meta: &std::fs::Metadata, now: SystemTime) -> bool {
        if meta.len() == 0 {
            return false;
        }
        if self.config.size.is_some_and(|s| meta.len() >= s) {
            return true;
        }
        let born = meta
            .created()
            .unwrap_or_else(|_| *self.first_seen.entry(key).or_insert(now));
        let period = self.config.age.as_secs().max(1);
        secs(born) / period < secs(now) / period
    }

    /// Renames `path` to its rotated name; `None` when the file changed identity meanwhile
    /// or its rotated name would not be followed (reported).
    fn rename(
        &mut self,
        path: &Path,
        key: FileKey,
        now: SystemTime,
    ) -> io::Result<Option<PathBuf>> {
        let mut to = PathBuf::from(format!("{}.{}", path.display(), stamp(now)));
        let mut n = 1;
        while std::fs::symlink_metadata(&to).is_ok() {
            to = PathBuf::from(format!("{}.{}.{n}", path.display(), stamp(now)));
            n += 1;
        }
        if !self.source.matches(&to) {
            self.report_once(
                path,
                "not rotated: the source's path globs would not match its rotated name \
                 (add a glob such as *.log* so rotated files stay followed until removed)",
            );
            return Ok(None);
        }
        // The path may have been replaced since the scan (hostile writers): rename what
        // the scan saw, or nothing. rename(2) never follows a link.
        let now_meta = std::fs::symlink_metadata(path)?;
        if !now_meta.is_file() || FileKey::of(&now_meta) != key {
            return Ok(None);
        }
        std::fs::rename(path, &to)?;
        Ok(Some(to))
    }

    /// Removes `base`'s rotated copies beyond the newest `keep` whose lines are delivered.
    fn remove_old_copies(
        &mut self,
        base: &Path,
        now_ms: u64,
        delivered_since: &dyn Fn(u64) -> bool,
        report: &mut PassReport,
    ) {
        let mut copies = rotated_copies(base);
        // Newest first: the stamp sorts by time, and `.N` after the plain stamp.
        copies.sort_by(|a, b| b.1.cmp(&a.1));
        for (path, _) in copies.into_iter().skip(self.config.keep) {
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            let key = FileKey::of(&meta);
            let saved = self.store.get(key).ok().flatten().map_or(0, |c| c.offset);
            if saved < meta.len() {
                self.read_at.remove(&key);
                report.waiting += 1;
                continue;
            }
            let read_at = *self.read_at.entry(key).or_insert(now_ms);
            if !delivered_since(read_at) {
                report.waiting += 1;
                continue;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    info!(path = %path.display(), "Removed a rotated file: every line of it is delivered.");
                    self.read_at.remove(&key);
                    if let Err(e) = self.store.remove(key) {
                        warn!(error = %e, "Could not forget the position of a removed file.");
                    }
                    report.removed += 1;
                }
                Err(e) => {
                    report.errors += 1;
                    self.report_once(&path, &format!("cannot remove: {e}"));
                }
            }
        }
    }

    fn report_once(&mut self, path: &Path, what: &str) {
        if self.reported.insert(path.to_path_buf()) {
            warn!(path = %path.display(), "Rotation: {what}.");
        }
    }
}

/// The rotated copies of `base` in its directory, with their suffix (the sort key).
fn rotated_copies(base: &Path) -> Vec<(PathBuf, String)> {
    let (Some(dir), Some(name)) = (base.parent(), base.file_name().and_then(|n| n.to_str())) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let prefix = format!("{name}.");
    entries
        .flatten()
        .filter_map(|e| {
            let file = e.file_name().into_string().ok()?;
            let suffix = file.strip_prefix(&prefix)?;
            is_stamp_suffix(suffix).then(|| (e.path(), sort_key(suffix)))
        })
        .collect()
}

/// `YYYYMMDD-HHMMSS`, optionally followed by `.N`, sorted so that `.N` comes after.
fn sort_key(suffix: &str) -> String {
    let (stamp, n) = suffix.split_once('.').unwrap_or((suffix, "0"));
    format!("{stamp}.{n:0>10}")
}

fn is_stamp_suffix(suffix: &str) -> bool {
    let (stamp, n) = suffix.split_once('.').unwrap_or((suffix, "1"));
    let b = stamp.as_bytes();
    b.len() == 15
        && b[8] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 8 || c.is_ascii_digit())
        && !n.is_empty()
        && n.bytes().all(|c| c.is_ascii_digit())
}

/// Whether a path already carries a rotation stamp (it is never rotated again).
fn is_rotated_name(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    // NAME.STAMP or NAME.STAMP.N
    let mut parts = name.rsplitn(3, '.');
    let last = parts.next().unwrap_or_default();
    let before = parts.next().unwrap_or_default();
    is_stamp_suffix(last) || is_stamp_suffix(&format!("{before}.{last}"))
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `YYYYMMDD-HHMMSS` in UTC.
fn stamp(t: SystemTime) -> String {
    let s = secs(t);
    let (y, m, d) = civil_from_days(i64::try_from(s / 86_400).unwrap_or(0));
    let rem = s % 86_400;
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day): H. Hinnant's `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    (era * 400 + yoe + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rotator(dir: &Path, source_glob: &str) -> Rotator {
        let config = RotationConfig {
            paths: vec![format!("{}/*.log", dir.display())],
            age: Duration::from_secs(1),
            size: None,
            keep: 1,
        };
        let source = [format!("{}/{source_glob}", dir.display())];
        Rotator::new(config, &source, &[], PositionStore::temporary().unwrap())
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut n: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    }

    #[test]
    fn links_and_files_whose_rotated_name_would_not_be_followed_stay() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.log"), "x\n").unwrap();
        std::fs::write(dir.path().join("target"), "y\n").unwrap();
        std::os::unix::fs::symlink(dir.path().join("target"), dir.path().join("l.log")).unwrap();
        let later = SystemTime::now() + Duration::from_secs(5);
        // The source follows *.log only: a.log.STAMP would not be read on; not rotated.
        let report = rotator(dir.path(), "*.log").pass(later, &|_| true);
        assert_eq!(report.rotated, 0);
        assert_eq!(names(dir.path()), ["a.log", "l.log", "target"]);
        // With *.log*: a.log is renamed; the link is left as it is.
        let report = rotator(dir.path(), "*.log*").pass(later, &|_| true);
        assert_eq!(report.rotated, 1);
        let n = names(dir.path());
        assert!(
            n[0].starts_with("a.log.") && n[1..] == ["l.log", "target"],
            "{n:?}"
        );
    }

    #[test]
    fn an_unread_rotated_copy_beyond_keep_stays() {
        let dir = tempfile::tempdir().unwrap();
        for stamp in ["20261201-000000", "20261202-000000", "20261203-000000"] {
            std::fs::write(dir.path().join(format!("a.log.{stamp}")), "x\n").unwrap();
        }
        std::fs::write(dir.path().join("a.log"), "").unwrap();
        // No saved position reaches their end: nothing is removed, two wait.
        let report = rotator(dir.path(), "*.log*").pass(SystemTime::now(), &|_| true);
        assert_eq!((report.removed, report.waiting), (0, 2));
        assert_eq!(names(dir.path()).len(), 4);
    }

    #[test]
    fn stamps_are_utc_and_recognised() {
        let t = UNIX_EPOCH + Duration::from_secs(1_796_428_800 + 3_723); // 2026-12-05 01:02:03
        assert_eq!(stamp(t), "20261205-010203");
        assert!(is_rotated_name(Path::new("/l/a.log.20261205-010203")));
        assert!(is_rotated_name(Path::new("/l/a.log.20261205-010203.2")));
        assert!(!is_rotated_name(Path::new("/l/a.log")));
        assert!(!is_rotated_name(Path::new("/l/a.log.1")));
        assert!(sort_key("20261205-010203.2") > sort_key("20261205-010203"));
        assert!(sort_key("20261205-010204") > sort_key("20261205-010203.9"));
    }
}
