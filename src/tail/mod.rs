//! The tail source: follows the files services append audit events to, through every kind
//! of rotation, and never loses or re-reads a line across restarts.
//!
//! Split as Vector's file source is: [`discovery`] (which files), [`identity`] (is this the
//! same file: device + inode, checked against a head hash, a marker before the saved
//! offset and the birth time), [`lines`] (complete lines only, bounded memory),
//! [`positions`] (the checkpointer, in sled, with its on-disk format), [`tailer`] (one
//! synchronous pass over the files), `watch` (inotify, read in bursts; Linux) and [`run`]
//! (the thread that drives passes on notifications and timers).
//!
//! # Guarantees
//!
//! - A line is emitted only once its `\n` is written; the position saved for a file is
//!   always just past a complete line.
//! - Positions are saved only by the stage downstream, after the lines are delivered or
//!   durable; a crash re-reads at most what was read after the last save, and a crash of
//!   the process alone little more than what was not yet delivered (the pipeline's
//!   checkpoint journal: positions of lines delivered or written downstream but not yet
//!   saved are believed within the same boot).
//! - A rotated file (renamed or deleted) is read to its end before it is let go;
//!   `rotate_wait` only bounds how long it is kept once drained (fluentd drops it after
//!   `rotate_wait` even when unread lines remain).
//! - Truncation is detected by size and by content (the marker), so a file truncated and
//!   regrown past the old offset between two looks is read again from its start; with
//!   copytruncate, a copy that the globs match is found by content and finished from the
//!   saved offset (fluentd resets to 0 and loses what the copy held).
//! - Rotated names outside the globs (`app.log.1`) are looked for beside the file
//!   ([`rotated`]): a file renamed while at-forwarder was down is finished from its saved
//!   offset, and a copytruncate copy from the offset read in the original.
//! - A file that appeared while at-forwarder was down is read from its start, even
//!   without `read_from_head`: only on the very first start (no saved positions) are
//!   existing files tailed from their end, as fluentd does.
//! - A line over `max_line_size` is skipped while streaming (memory stays bounded), with a
//!   WARN naming file and offset; fluentd's default is unlimited.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::TailSource;

pub mod batch;
pub mod confine;
pub mod discovery;
pub mod identity;
pub mod lines;
pub mod positions;
pub mod report;
pub mod rotated;
pub mod run;
pub mod tailer;
#[cfg(target_os = "linux")]
mod watch;

pub use batch::{Batch, Line};
pub use positions::{Position, PositionStore};
pub use tailer::Tailer;

/// Default cap on files held open at once (at-forwarder's own setting; fluentd has none).
pub const DEFAULT_OPEN_FILES_LIMIT: usize = 256;

/// What the tailer needs from a `<source @type tail>`.
#[derive(Debug, Clone)]
pub struct TailOptions {
    /// Globs of files to read.
    pub paths: Vec<String>,
    /// Globs never to read.
    pub exclude_paths: Vec<String>,
    /// Read files found at the very first start from their beginning.
    pub read_from_head: bool,
    /// Lines read from one file per pass.
    pub read_lines_limit: usize,
    /// How long a drained, vanished file is kept.
    pub rotate_wait: Duration,
    /// How often the globs are re-expanded.
    pub refresh_interval: Duration,
    /// Longest line kept.
    pub max_line_size: u64,
    /// Ignore files not modified within this long.
    pub limit_recently_modified: Option<Duration>,
    /// Report a permission error once per file.
    pub ignore_repeated_permission_error: bool,
    /// Wait one `refresh_interval` before the first scan.
    pub skip_refresh_on_startup: bool,
    /// Most files held open at once (vanished files excepted: they cannot be reopened).
    pub open_files_limit: usize,
    /// A fluentd pos file to import once, if `pos_file` names one.
    pub fluentd_pos_file: Option<PathBuf>,
    /// Follow symlinks that lead out of the globs' roots (at-forwarder's own setting).
    pub follow_symlinks_outside: bool,
}

impl TailOptions {
    /// Options for `paths` with fluentd's in_tail defaults (and at-forwarder's for
    /// `max_line_size` and `open_files_limit`); starts from the head of files.
    pub fn new(paths: Vec<String>) -> Self {
        TailOptions {
            paths,
            exclude_paths: Vec::new(),
            read_from_head: true,
            read_lines_limit: 1000,
            rotate_wait: Duration::from_secs(5),
            refresh_interval: Duration::from_secs(60),
            max_line_size: crate::config::source::DEFAULT_MAX_LINE_SIZE,
            limit_recently_modified: None,
            ignore_repeated_permission_error: false,
            skip_refresh_on_startup: false,
            open_files_limit: DEFAULT_OPEN_FILES_LIMIT,
            fluentd_pos_file: None,
            follow_symlinks_outside: false,
        }
    }

    /// The options of a configured tail source.
    pub fn from_config(source: &TailSource) -> Self {
        TailOptions {
            paths: source.paths.clone(),
            exclude_paths: source.exclude_paths.clone(),
            read_from_head: source.read_from_head,
            read_lines_limit: usize::try_from(source.read_lines_limit).unwrap_or(usize::MAX),
            rotate_wait: source.rotate_wait,
            refresh_interval: source.refresh_interval,
            max_line_size: source.max_line_size,
            limit_recently_modified: source.limit_recently_modified,
            ignore_repeated_permission_error: source.ignore_repeated_permission_error,
            skip_refresh_on_startup: source.skip_refresh_on_startup,
            open_files_limit: usize::try_from(source.open_files_limit)
                .unwrap_or(DEFAULT_OPEN_FILES_LIMIT),
            fluentd_pos_file: source.pos_file.clone(),
            follow_symlinks_outside: source.follow_symlinks_outside,
        }
    }
}
