//! Checking a batch's lines and sorting them by destination: the records of each buffer
//! and key, standard output, dead letters, and which keys each file's lines went to.

use crate::event::filter::Applied;
use std::sync::Arc;

use crate::buffer::Framed;
use crate::config::value::ConfigEnum;
use crate::config::SourceKind;
use crate::event::dead_letter::DeadLetter;
use crate::event::{Origin, Reason};
use crate::tail::identity::FileKey;
use crate::tail::{Batch, Line};

use super::{Route, Worker};

/// A batch sorted by destination.
#[derive(Default)]
pub(super) struct Sorted {
    pub(super) stdout: Vec<u8>,
    /// Records per buffer and key.
    pub(super) buffered: Vec<Group>,
    pub(super) letters: Vec<DeadLetter>,
    /// Events dropped by filters: the filter's index, once per event.
    pub(super) filtered: Vec<usize>,
    /// Events whose `eventTime` had no UTC offset (read as UTC), and the first of them.
    pub(super) times_without_offset: u64,
    pub(super) first_without_offset: Option<(std::path::PathBuf, u64)>,
}

impl Worker {
    /// Checks, routes and sorts a batch's lines; a large batch is split across two threads
    /// (the machine's cores), each half keeping its lines' order. The second half runs on
    /// the runtime's blocking pool: a thread spawned for it per batch cost the thread's
    /// creation and the page faults of its stack, a percent of the forwarder.
    pub(super) fn sort(self: &Arc<Self>, batch: &Arc<Batch>) -> Sorted {
        let count = batch.len();
        let mut sorted = if count >= PARALLEL_FROM {
            let mid = count / 2;
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            let (w, b) = (Arc::clone(self), Arc::clone(batch));
            tokio::task::spawn_blocking(move || {
                let second: Vec<Line<'_>> = b.lines().skip(mid).collect();
                let _ = tx.send(w.sort_lines(&second));
            });
            let first: Vec<Line<'_>> = batch.lines().take(mid).collect();
            let mut sorted = self.sort_lines(&first);
            let second = rx.recv().unwrap_or_else(|_| {
                // The other half's task failed (a panic): checked here instead.
                let second: Vec<Line<'_>> = batch.lines().skip(mid).collect();
                self.sort_lines(&second)
            });
            sorted.merge(second);
            sorted
        } else {
            let lines: Vec<Line<'_>> = batch.lines().collect();
            self.sort_lines(&lines)
        };
        let SourceKind::Tail(tail) = &self.config.sources[self.source].kind;
        for (path, long) in &batch.long_lines {
            let message = format!(
                "line of {} bytes, longer than max_line_size {}",
                long.len, tail.options.max_line_size
            );
            let mut letter = DeadLetter::new(Reason::LineTooLong, message, path, long.offset, b"");
            letter.length = long.len;
            sorted.letters.push(letter);
        }
        sorted
    }

    /// The index in `files` of `path`'s route, looked up at its first line.
    fn file_route<'a>(&self, files: &mut Vec<FileRoute<'a>>, path: &'a std::path::Path) -> usize {
        if let Some(known) = files.iter().position(|f| std::ptr::eq(f.path, path)) {
            return known;
        }
        let source = &self.config.sources[self.source];
        let SourceKind::Tail(tail) = &source.kind;
        let tag = tail.tag.expand(&path.to_string_lossy());
        let route = (self.config)
            .route(source.directive.label.as_deref(), &tag)
            .and_then(|m| self.config.matches.iter().position(|x| std::ptr::eq(x, m)));
        let filters = self
            .config
            .filters_for(source.directive.label.as_deref(), &tag);
        // `path_key`: a top-level member, written once per file and batch.
        let path_member = tail.path_key.as_ref().map(|key| {
            let member = format!(
                ",{}:{}",
                serde_json::Value::from(key.as_str()),
                serde_json::Value::from(path.to_string_lossy())
            );
            member.into_bytes()
        });
        files.push(FileRoute {
            path,
            route,
            tag,
            group: None,
            path_member,
            filters,
        });
        files.len() - 1
    }

    /// Checks a line into `out`; removes the time field as fluentd's json parser does
    /// (`time_key`, default `time`, unless `keep_time_key`); with `path_key`, the file's
    /// path is added as the
    /// record's last top-level member (as fluentd sets `record[path_key]`: a reader that
    /// keeps the last of two equal keys sees the path).
    fn check_into<'l>(
        &self,
        line: &'l [u8],
        origin: Origin,
        file: &FileRoute<'_>,
        out: &mut Vec<u8>,
    ) -> Result<crate::event::Accepted<'l>, Refused> {
        let start = out.len();
        let mut accepted = self
            .validator
            .check(line, origin, out)
            .map_err(Refused::Invalid)?;
        let path_member = file.path_member.as_deref();
        if let Some(remover) = &self.time_key {
            accepted.changed |= remover.remove(out, start);
        }
        if let Some(member) = path_member {
            if let Some(close) = out[start..].iter().rposition(|b| *b == b'}') {
                let at = start + close;
                let empty = out[start..at]
                    .iter()
                    .rev()
                    .find(|b| !b.is_ascii_whitespace())
                    .is_some_and(|b| *b == b'{');
                let member = if empty { &member[1..] } else { member };
                out.splice(at..at, member.iter().copied());
            }
        }
        if !file.filters.is_empty() {
            match self.filters.apply(&file.filters, &file.tag, out, start) {
                Ok(Applied::Kept) => {}
                Ok(Applied::Dropped(i)) => return Err(Refused::Filtered(i)),
                Err(failed) => return Err(Refused::FilterFailed(failed)),
            }
        }
        Ok(accepted)
    }

    fn sort_lines(&self, lines: &[Line<'_>]) -> Sorted {
        let mut sorted = Sorted::default();
        let mut event = Vec::new();
        // Lines of one file share a tag, hence a route: looked up once per file (a batch's
        // lines of one file share one path, compared by address).
        let mut files: Vec<FileRoute<'_>> = Vec::new();
        let (mut emitted, mut invalid) = (0u64, Vec::new());
        for (i, line) in lines.iter().enumerate() {
            let origin = Origin {
                key: line.key,
                offset: line.offset,
            };
            let file = self.file_route(&mut files, line.path);
            // The event is written straight into the records of the group this file's last
            // line went to (its frame filled in after), not built aside and copied there.
            event.clear();
            let guess = files[file].group;
            let route = &files[file];
            let checked = match guess.map(|g| &mut sorted.buffered[g].records) {
                Some(records) => {
                    records.push_with(|out| self.check_into(line.bytes, origin, route, out))
                }
                None => self.check_into(line.bytes, origin, route, &mut event),
            };
            let checked = match checked {
                Err(Refused::Filtered(i)) => {
                    sorted.filtered.push(i);
                    continue;
                }
                Err(Refused::FilterFailed(f)) => {
                    sorted.letters.push(DeadLetter::new(
                        Reason::FilterFailed,
                        format!("filter {}: {}", f.filter, f.message),
                        line.path,
                        line.offset,
                        line.bytes,
                    ));
                    continue;
                }
                Err(Refused::Invalid(r)) => Err(r),
                Ok(a) => Ok(a),
            };
            let accepted = match checked {
                Ok(a) => {
                    if a.time_without_offset {
                        sorted.times_without_offset += 1;
                        if sorted.first_without_offset.is_none() {
                            sorted.first_without_offset =
                                Some((line.path.to_path_buf(), line.offset));
                        }
                    }
                    a
                }
                Err(r) => {
                    invalid.push(r.reason.name());
                    sorted.letters.push(DeadLetter::new(
                        r.reason,
                        r.to_string(),
                        line.path,
                        line.offset,
                        line.bytes,
                    ));
                    continue;
                }
            };
            // Only a file routed to a buffer has a group to guess.
            // A match's destinations: the first takes the record, the others (a copy's
            // stores) get copies of its bytes below.
            let targets = files[file]
                .route
                .map_or(&[][..], |m| self.routes.targets(m));
            let index = match targets.first().map(|&i| (i, self.routes.get(i))) {
                Some((i, Route::Buffered { .. })) => i,
                Some((_, Route::Stdout)) => {
                    debug_assert!(guess.is_none());
                    emitted += 1;
                    sorted.stdout.extend_from_slice(&event);
                    sorted.stdout.push(b'\n');
                    if targets.len() > 1 {
                        sorted.copy_to(
                            &self.routes,
                            &targets[1..],
                            &accepted.service,
                            &event,
                            line.key,
                        );
                    }
                    continue;
                }
                None => {
                    debug_assert!(guess.is_none());
                    sorted.letters.push(DeadLetter::new(
                        Reason::Unroutable,
                        format!("no <match> receives tag '{}'", files[file].tag),
                        line.path,
                        line.offset,
                        line.bytes,
                    ));
                    continue;
                }
            };
            emitted += 1;
            let group = (sorted.buffered.iter())
                .rposition(|g| g.index == index && g.key == accepted.service);
            if let Some(g) = group.filter(|_| group == guess) {
                sorted.buffered[g].note_file(line.key);
                if targets.len() > 1 {
                    event.clear();
                    event.extend_from_slice(sorted.buffered[g].records.last().unwrap_or_default());
                    sorted.copy_to(
                        &self.routes,
                        &targets[1..],
                        &accepted.service,
                        &event,
                        line.key,
                    );
                }
                continue;
            }
            if let Some(g) = guess {
                // Another service than this file's last line: moved to its own group.
                sorted.buffered[g].records.pop_into(&mut event);
            }
            let group = group.unwrap_or_else(|| {
                // Room for every line left, framed, with what the check may add
                // (`eventType`, `typeURI`, `observer`, an `id`): grown by doubling, the
                // records were copied once more by `realloc`. Address space only, until
                // written.
                let rest: usize = lines[i..].iter().map(|l| l.bytes.len() + 256).sum();
                sorted.buffered.push(Group {
                    index,
                    key: accepted.service.to_string(),
                    records: Framed::with_capacity(rest),
                    files: Vec::new(),
                });
                sorted.buffered.len() - 1
            });
            sorted.buffered[group].records.push(&event);
            sorted.buffered[group].note_file(line.key);
            files[file].group = Some(group);
            if targets.len() > 1 {
                sorted.copy_to(
                    &self.routes,
                    &targets[1..],
                    &accepted.service,
                    &event,
                    line.key,
                );
            }
        }
        let metrics = &self.metrics;
        metrics
            .events_emitted
            .fetch_add(emitted, std::sync::atomic::Ordering::Relaxed);
        for reason in invalid {
            metrics.invalid(reason);
        }
        sorted
    }
}

/// Batches with at least this many lines are checked on two threads.
const PARALLEL_FROM: usize = 2000;

impl Sorted {
    /// A copy of `record` (of service `key`, from `file`) for each destination of
    /// `targets` that has a buffer (a stdout store writes it at once).
    fn copy_to(
        &mut self,
        routes: &super::Routes,
        targets: &[usize],
        key: &str,
        record: &[u8],
        file: FileKey,
    ) {
        for &index in targets {
            if matches!(routes.get(index), Route::Stdout) {
                self.stdout.extend_from_slice(record);
                self.stdout.push(b'\n');
                continue;
            }
            let group = (self.buffered.iter()).rposition(|g| g.index == index && g.key == key);
            let group = group.unwrap_or_else(|| {
                self.buffered.push(Group {
                    index,
                    key: key.to_string(),
                    records: Framed::with_capacity(record.len() * 16),
                    files: Vec::new(),
                });
                self.buffered.len() - 1
            });
            self.buffered[group].records.push(record);
            self.buffered[group].note_file(file);
        }
    }

    /// Appends `other` (the later lines) to this one, keeping each output's order.
    fn merge(&mut self, other: Sorted) {
        self.stdout.extend_from_slice(&other.stdout);
        self.letters.extend(other.letters);
        self.filtered.extend(other.filtered);
        self.times_without_offset += other.times_without_offset;
        if self.first_without_offset.is_none() {
            self.first_without_offset = other.first_without_offset;
        }
        // Kept as separate groups (a key may then have two, appended in order): joining
        // them copied half of every large batch.
        self.buffered.extend(other.buffered);
    }
}

/// The records of a batch (or half of one) for one buffer and key.
pub(super) struct Group {
    /// The destination (buffer) by id.
    pub(super) index: usize,
    pub(super) key: String,
    pub(super) records: Framed,
    /// For each file with lines here, in order, the count of records up to and including
    /// its last one so far (a file whose lines alternate with another's appears again).
    pub(super) files: Vec<(FileKey, usize)>,
}

impl Group {
    /// Notes that the last record pushed is a line of `file`.
    fn note_file(&mut self, file: FileKey) {
        let count = self.records.records();
        match self.files.last_mut() {
            Some((f, n)) if *f == file => *n = count,
            _ => self.files.push((file, count)),
        }
    }
}

/// Where one file's lines go, looked up at its first line in a batch.
struct FileRoute<'a> {
    path: &'a std::path::Path,
    /// The `<match>` its tag selects.
    route: Option<usize>,
    tag: String,
    /// The group (of `Sorted::buffered`) its last line went to.
    group: Option<usize>,
    /// `,"<path_key>":"<path>"` when the source sets `path_key`.
    path_member: Option<Vec<u8>>,
    /// The `<filter>`s its events pass, in order.
    filters: Vec<usize>,
}

/// Why a checked line goes nowhere.
enum Refused {
    /// It failed the event check.
    Invalid(crate::event::Rejection),
    /// A filter (by index) dropped it: counted, not dead-lettered.
    Filtered(usize),
    /// A filter could not handle it: dead-lettered.
    FilterFailed(crate::event::filter::FilterFailed),
}
