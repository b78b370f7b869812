//! The tailer's core: one synchronous pass at a time over the files of a source.
//!
//! [`Tailer::poll`] finds files, checks each tracked file for truncation and rotation,
//! and reads up to `read_lines_limit` lines from each (fair: a busy file cannot starve the
//! others). It never writes positions: the batch carries them, and the stage that makes
//! the lines durable saves them ([`super::positions`]). Kept synchronous so that tests
//! (the model test above all) drive it step by step; [`super::run`] drives it from
//! change notifications and timers. Truncation and copytruncate detection live in
//! `truncation`, the one-time import of fluentd's pos file in `fluentd`.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tracing::{debug, info, warn};

use super::batch::Batch;
use super::discovery::{Discovery, Found};
use super::identity::{self, FileKey};
use super::lines::ReadFrom;
use super::positions::{Checkpoint, FluentdEntry, PositionStore, PositionsError};
use super::rotated::{self, Wanted};
use super::TailOptions;
use crate::metrics::SourceGauges;

mod fluentd;
mod truncation;
mod watched;

use fluentd::read_fluentd_pos;
use truncation::{check_truncation, end_of_last_line, same_content, truncated_since};
use watched::{position, read_file, unix_now, Watched};

/// Follows the files of one tail source.
#[derive(Debug)]
pub struct Tailer {
    opts: TailOptions,
    discovery: Discovery,
    store: PositionStore,
    /// Saved positions of files not tracked yet.
    saved: HashMap<FileKey, Checkpoint>,
    /// Saved positions whose file was found truncated when first seen in this run (a
    /// copytruncate while at-forwarder was down): a new file holding their content is the
    /// copy, to be finished from their offset.
    orphans: Vec<(FileKey, Checkpoint)>,
    fluentd: Vec<FluentdEntry>,
    files: BTreeMap<FileKey, Watched>,
    /// No position was saved before this start and no scan has run yet: files found now
    /// are read from their end unless `read_from_head`.
    fresh_start: bool,
    scanned: bool,
    buf: Vec<u8>,
    /// Files whose permission error was already reported (`ignore_repeated_permission_error`).
    denied: std::collections::HashSet<PathBuf>,
    /// Files refused by the [`super::confine`] checks, already reported.
    refused: std::collections::HashSet<PathBuf>,
    /// Saved positions whose content was replaced without its copy found yet: looked for
    /// once more at the next pass.
    lost_copies: Vec<(FileKey, Checkpoint)>,
    /// Where the next pass starts reading (after a pass cut short by [`MAX_BATCH_BYTES`]).
    first_read: FileKey,
    /// The last pass left a file before its end (cut short by [`MAX_BATCH_BYTES`] or by
    /// `read_lines_limit`): reading is catching up with a backlog (see
    /// [`Batch::caught_up`]).
    behind: bool,
    /// Where reading is reported (see [`Tailer::report_to`]).
    gauges: Arc<SourceGauges>,
    /// Copytruncate copies taken up since the last batch, and their originals (see
    /// [`Batch::linked_starts`]).
    linked: Vec<FileKey>,
}

/// Bytes of lines one pass reads at most (it ends at a file boundary past it). With
/// the pipeline's two batches in flight this bounds the lines held in memory; W1
/// ran as fast with 2 MiB as with 8 MiB, at 100 instead of 200 MiB peak RSS.
const MAX_BATCH_BYTES: usize = 2 << 20;

impl Tailer {
    /// Loads the saved positions and prepares to follow the files of `opts`.
    pub fn open(opts: TailOptions, store: PositionStore) -> Result<Self, PositionsError> {
        let (saved, bad) = store.load()?;
        for (key, reason) in bad {
            warn!(key = ?key, %reason, "Ignoring an unreadable saved position; its file will be read from the start.");
        }
        let fluentd = match &opts.pos_file {
            Some(path) if !store.imported(path)? => read_fluentd_pos(path),
            _ => Vec::new(),
        };
        let discovery = Discovery::new(
            &opts.paths,
            &opts.exclude_paths,
            opts.limit_recently_modified,
            opts.follow_symlinks_outside,
        );
        // A store rebuilt after damage knows nothing: reading from the end would skip
        // what was written while positions were lost.
        let fresh_start = saved.is_empty() && fluentd.is_empty() && !store.rebuilt()?;
        Ok(Tailer {
            opts,
            discovery,
            store,
            saved,
            orphans: Vec::new(),
            fluentd,
            files: BTreeMap::new(),
            fresh_start,
            scanned: false,
            buf: Vec::new(),
            denied: Default::default(),
            refused: Default::default(),
            first_read: FileKey { dev: 0, ino: 0 },
            behind: false,
            lost_copies: Vec::new(),
            gauges: Arc::default(),
            linked: Vec::new(),
        })
    }

    /// Reports files followed, lines and bytes read, and each file's lag to `gauges` (a
    /// pipeline's registration in the metrics).
    pub fn report_to(&mut self, gauges: Arc<SourceGauges>) {
        self.gauges = gauges;
    }

    /// The directories whose changes are worth a look.
    pub fn watch_roots(&self) -> Vec<PathBuf> {
        self.discovery.roots()
    }

    /// Where followed files may lie (for the change watcher's walk).
    pub fn confinement(&self) -> &super::confine::Confinement {
        self.discovery.confinement()
    }

    /// Whether the first scan waits one `refresh_interval` (`skip_refresh_on_startup`).
    pub fn skips_first_scan(&self) -> bool {
        self.opts.skip_refresh_on_startup
    }

    /// Number of files tracked and number of them open.
    pub fn file_counts(&self) -> (usize, usize) {
        (
            self.files.len(),
            self.files.values().filter(|w| w.file.is_some()).count(),
        )
    }

    /// A full pass: find files, detect truncation and rotation, read from every file.
    pub fn poll(&mut self, now: Instant) -> Batch {
        let mut batch = Batch::default();
        self.look(now, &mut batch);
        self.read_all(&mut batch, now, |_| true);
        self.release_vanished(now);
        self.enforce_open_cap();
        if !self.scanned {
            self.scanned = true;
            self.collect_stale_positions();
        }
        self.orphans.clear();
        self.publish_metrics();
        batch
    }

    /// Looks for files without reading any, while reading is paused (back-pressure): a
    /// file created and rotated away meanwhile is opened now, so it is still there to be
    /// read once reading resumes (the globs may not match its rotated name). The batch
    /// holds positions only (where new files start).
    pub fn discover(&mut self, now: Instant) -> Batch {
        let mut batch = Batch::default();
        self.look(now, &mut batch);
        self.orphans.clear();
        batch
    }

    /// Truncations, the scan, rotated siblings, new and vanished files.
    fn look(&mut self, now: Instant, batch: &mut Batch) {
        let confine = self.discovery.confinement();
        for w in self.files.values_mut() {
            check_truncation(w, confine);
        }
        let mut found = self.discovery.scan();
        self.add_rotated_siblings(&mut found);
        if !self.fluentd.is_empty() {
            self.import_fluentd(&found);
        }
        self.reconcile(found, now, batch);
        self.restart_truncated(batch);
        let mut linked = std::mem::take(&mut self.linked);
        linked.sort_unstable();
        linked.dedup();
        let starts = linked
            .iter()
            .filter_map(|key| self.files.get(key).map(position));
        batch.linked_starts.extend(starts);
    }

    /// A quick pass: read the files that are open or named in `changed`, without a scan.
    /// Returns `None` when a truncation was found: a full [`Tailer::poll`] must run, so
    /// that a copy of the truncated file is looked for first.
    pub fn poll_open(&mut self, now: Instant, changed: &[PathBuf]) -> Option<Batch> {
        let confine = self.discovery.confinement();
        for w in self.files.values_mut().filter(|w| w.file.is_some()) {
            if check_truncation(w, confine) {
                return None;
            }
        }
        let mut batch = Batch::default();
        self.read_all(&mut batch, now, |w| {
            w.file.is_some() || !w.at_eof || changed.iter().any(|p| p == &w.path)
        });
        self.release_vanished(now);
        self.enforce_open_cap();
        self.publish_metrics();
        Some(batch)
    }

    /// Publishes files tracked and unread bytes per file to the metrics.
    fn publish_metrics(&self) {
        let metrics = &self.gauges;
        metrics.files_tracked.store(
            self.files.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        metrics.set_lag(self.files.values().map(|w| {
            (
                w.path.display().to_string(),
                w.last_seen.0.saturating_sub(w.next.offset),
            )
        }));
    }

    /// Whether a file was still being read (not at its end) after the last pass, or a
    /// vanished file is waiting to be released: the caller should poll again soon.
    pub fn busy(&self) -> bool {
        self.files
            .values()
            .any(|w| !w.at_eof || w.vanished_since.is_some())
    }

    /// Whether a file has lines left to read after the last pass.
    pub fn unread(&self) -> bool {
        // A file over its read rate waits for the next second (`busy` polls it).
        self.files
            .values()
            .any(|w| !w.at_eof && !w.throttled && (w.file.is_some() || w.vanished_since.is_none()))
    }

    /// Adds the files renamed out of the globs while at-forwarder was down (first scan),
    /// and the copies of files just truncated (copytruncate), from the directories they
    /// were in ([`rotated`]).
    fn add_rotated_siblings(&mut self, found: &mut Vec<Found>) {
        let present: std::collections::HashSet<FileKey> = found.iter().map(|f| f.key).collect();
        let mut wanted = Vec::new();
        // Saved contents replaced just before the last pass looked (a copytruncate racing
        // with the start-up scan): their copies are looked for once more.
        for (key, c) in std::mem::take(&mut self.lost_copies) {
            let copy = Wanted::CopyOf {
                offset: c.offset,
                head: c.head,
                marker: c.marker,
            };
            wanted.push((c.path.clone(), copy));
            self.orphans.push((key, c));
        }
        if !self.scanned {
            for (key, saved) in &self.saved {
                let want = match found.iter().find(|f| f.key == *key) {
                    None => Wanted::Renamed(*key),
                    Some(f) if truncated_since(f, saved, self.discovery.confinement()) => {
                        Wanted::CopyOf {
                            offset: saved.offset,
                            head: saved.head,
                            marker: saved.marker,
                        }
                    }
                    Some(_) => continue,
                };
                wanted.push((saved.path.clone(), want));
            }
        }
        for w in self.files.values().filter(|w| w.truncated) {
            let copy = Wanted::CopyOf {
                offset: w.next.offset,
                head: w.head,
                marker: w.marker,
            };
            wanted.push((w.path.clone(), copy));
        }
        if wanted.is_empty() {
            return;
        }
        for f in rotated::find(&wanted, &present, self.discovery.confinement()) {
            info!(path = %f.path.display(), "Found a rotated file outside the globs that holds unread lines; reading it to its end.");
            found.push(f);
        }
    }

    /// Matches what the scan found with what is tracked: renamed files get their new
    /// path (a closed one is checked for truncation or inode reuse through it), missing
    /// ones are marked vanished, and new ones start being tracked.
    fn reconcile(&mut self, found: Vec<Found>, now: Instant, batch: &mut Batch) {
        let present: std::collections::HashSet<FileKey> = found.iter().map(|f| f.key).collect();
        let (known, mut new): (Vec<Found>, Vec<Found>) = found
            .into_iter()
            .partition(|f| self.files.contains_key(&f.key));
        for f in known {
            let w = self.files.get_mut(&f.key).expect("partitioned on this");
            if w.vanished_since.take().is_some() || w.path != f.path {
                debug!(from = %w.path.display(), to = %f.path.display(), "File renamed within the watched paths.");
            }
            w.path = f.path;
            if w.file.is_none() {
                check_truncation(w, self.discovery.confinement());
            }
        }
        for w in self
            .files
            .values_mut()
            .filter(|w| !present.contains(&w.key) && w.vanished_since.is_none())
        {
            info!(path = %w.path.display(), "File rotated away or deleted; reading it to its end.");
            w.vanished_since = Some(now);
        }
        // Saved positions whose file was truncated (same file, shorter or other content)
        // are gathered first: any new file may be their copy.
        for f in &new {
            if let Some(saved) = self.saved.get(&f.key) {
                if truncated_since(f, saved, self.discovery.confinement()) {
                    self.orphans.push((f.key, saved.clone()));
                }
            }
        }
        new.sort_by_key(|f| !self.saved.contains_key(&f.key));
        for f in new {
            match self.start_tracking(&f, now) {
                Ok(w) => {
                    info!(path = %f.path.display(), offset = w.next.offset, "Following a file.");
                    // Where a new file starts is itself a position to save: a copy found
                    // by content, or a file tailed from its end, must not be read from
                    // its start after a restart.
                    if w.next.offset > 0 {
                        batch.set_position(position(&w));
                    }
                    self.files.insert(f.key, w);
                }
                Err(e) => self.report_open_error(&f.path, &e),
            }
        }
    }

    fn start_tracking(&mut self, f: &Found, now: Instant) -> io::Result<Watched> {
        let file = self.discovery.confinement().open(&f.path)?;
        let meta = file.metadata()?;
        if FileKey::of(&meta) != f.key {
            return Err(io::Error::other("the file was replaced while being opened"));
        }
        let size = meta.len();
        let born = identity::birth_time(&meta);
        let offset = self.start_offset(&file, f, size, born)?;
        let head = identity::head(&file, size)?;
        let marker = identity::marker(&file, offset)?;
        Ok(Watched {
            key: f.key,
            path: f.path.clone(),
            file: Some(file),
            next: ReadFrom {
                offset,
                skipping_to: None,
            },
            head,
            marker,
            born,
            last_seen: (size, meta.modified().ok()),
            last_activity: now,
            at_eof: false,
            vanished_since: None,
            truncated: false,
            warned_slow_drain: false,
            rate_window: (now, 0),
            throttled: false,
        })
    }

    /// Where to start reading a file seen for the first time in this run.
    fn start_offset(
        &mut self,
        file: &File,
        f: &Found,
        size: u64,
        born: Option<u128>,
    ) -> io::Result<u64> {
        if let Some(saved) = self.saved.remove(&f.key) {
            if same_content(file, size, born, &saved)? {
                debug!(path = %f.path.display(), offset = saved.offset, "Resuming from the saved position.");
                return Ok(saved.offset);
            }
            info!(path = %f.path.display(), "A saved position's file identity now holds other content.");
            // Its inode may have been reused by a copy: look for the original below.
            if let Some(offset) = self.copy_of_truncated(file, size, f.key)? {
                info!(path = %f.path.display(), offset, "Found the copy of a truncated file; finishing it from the saved offset.");
                return Ok(offset);
            }
            self.lost_copies.push((f.key, saved));
            return Ok(0);
        }
        if let Some(offset) = self.copy_of_truncated(file, size, f.key)? {
            info!(path = %f.path.display(), offset, "Found the copy of a truncated file; finishing it from the saved offset.");
            return Ok(offset);
        }
        if self.fresh_start && !self.scanned && !self.opts.read_from_head {
            return end_of_last_line(file, size);
        }
        Ok(0)
    }

    fn read_all(&mut self, batch: &mut Batch, now: Instant, wanted: impl Fn(&Watched) -> bool) {
        let Tailer {
            files,
            opts,
            buf,
            first_read,
            behind,
            discovery,
            gauges,
            ..
        } = self;
        // Memory in flight is bounded by bytes, not by files: with many rotated files
        // draining at once, a pass stops at MAX_BATCH_BYTES, and the next one starts after
        // the last file read, so that every file gets its turn.
        let start = *first_read;
        let order: Vec<FileKey> = files
            .range(start..)
            .chain(files.range(..start))
            .filter(|(_, w)| wanted(w))
            .map(|(k, _)| *k)
            .collect();
        for (i, key) in order.iter().enumerate() {
            if batch.bytes() >= MAX_BATCH_BYTES {
                *first_read = *key;
                // The files left for the next pass were not looked at: they may have grown
                // since they were last at their end, and a rotated one "read to its end"
                // on that old look would be let go with lines unread.
                for left in &order[i..] {
                    files.get_mut(left).expect("collected above").at_eof = false;
                }
                *behind = true;
                return;
            }
            let w = files.get_mut(key).expect("collected above");
            if let Err(e) = read_file(w, opts, discovery.confinement(), buf, batch, (now, gauges)) {
                // A closed file's path now naming a FIFO or a link out: the next scan
                // finds the file gone; no WARN per pass.
                if super::confine::is_refusal(&e) {
                    debug!(path = %w.path.display(), error = %e, "Not reopening this path.");
                } else {
                    warn!(path = %w.path.display(), error = %e, "Reading failed; will retry.");
                }
                w.file = None;
            }
        }
        // Behind: a file was left before its end (`read_lines_limit`); caught up once a
        // pass reads every file to its end.
        let at_ends = files.values().all(|w| w.at_eof);
        batch.caught_up = *behind && at_ends;
        *behind = !at_ends;
    }

    /// Lets go of vanished files that are drained, whose lines are all saved downstream,
    /// and that have been gone for `rotate_wait`.
    fn release_vanished(&mut self, now: Instant) {
        let rotate_wait = self.opts.rotate_wait;
        let mut released = Vec::new();
        for w in self.files.values_mut() {
            let Some(since) = w.vanished_since else {
                continue;
            };
            if w.file.is_none() {
                // Closed before it vanished: it cannot be opened again.
                if !w.at_eof {
                    warn!(path = %w.path.display(), offset = w.next.offset, "A file vanished while closed with unread lines; they cannot be read.");
                }
                released.push(w.key);
                continue;
            }
            let waited = now.saturating_duration_since(since) >= rotate_wait;
            if !waited {
                continue;
            }
            if !w.at_eof {
                if !w.warned_slow_drain {
                    warn!(path = %w.path.display(), "A rotated file is still being read after rotate_wait; keeping it open until its end.");
                    w.warned_slow_drain = true;
                }
                continue;
            }
            let committed = self.store.get(w.key).ok().flatten().map_or(0, |c| c.offset);
            if committed >= w.next.offset {
                released.push(w.key);
            }
        }
        for key in released {
            if let Some(w) = self.files.remove(&key) {
                info!(path = %w.path.display(), "Released a rotated file read to its end.");
                if let Err(e) = self.store.remove(key) {
                    warn!(error = %e, "Could not forget the position of a released file.");
                }
            }
        }
    }

    /// Closes idle files beyond `open_files_limit`, least recently active first. Vanished
    /// files stay open: they could not be opened again.
    fn enforce_open_cap(&mut self) {
        let open = self.files.values().filter(|w| w.file.is_some()).count();
        let Some(excess) = open
            .checked_sub(self.opts.open_files_limit)
            .filter(|e| *e > 0)
        else {
            return;
        };
        let mut closable: Vec<&mut Watched> = self
            .files
            .values_mut()
            .filter(|w| w.file.is_some() && w.vanished_since.is_none())
            .collect();
        closable.sort_by_key(|w| (!w.at_eof, w.last_activity));
        for w in closable.into_iter().take(excess) {
            w.file = None;
        }
    }

    /// After the first scan: saved positions whose files were not found and not seen for
    /// `rotate_wait` are forgotten.
    fn collect_stale_positions(&mut self) {
        let now = unix_now();
        let wait = self.opts.rotate_wait.as_secs();
        let stale: Vec<FileKey> = self
            .saved
            .iter()
            .filter(|(_, c)| now.saturating_sub(c.seen) > wait)
            .map(|(k, _)| *k)
            .collect();
        for key in stale {
            self.saved.remove(&key);
            if let Err(e) = self.store.remove(key) {
                warn!(error = %e, "Could not forget a stale position.");
            }
        }
    }

    /// A refused file (not regular, or leading out of the roots) is reported once per
    /// path: a planted FIFO or link must not flood the log at every scan.
    fn report_open_error(&mut self, path: &Path, e: &io::Error) {
        if super::confine::is_refusal(e) {
            if self.refused.insert(path.to_path_buf()) {
                warn!(path = %path.display(), reason = %e, "Not following this file.");
            }
            return;
        }
        let repeated = e.kind() == io::ErrorKind::PermissionDenied
            && self.opts.ignore_repeated_permission_error
            && !self.denied.insert(path.to_path_buf());
        if repeated {
            debug!(path = %path.display(), error = %e, "Cannot open file.");
        } else {
            warn!(path = %path.display(), error = %e, "Cannot open file; will retry at the next scan.");
        }
    }
}
