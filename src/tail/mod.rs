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

pub mod batch;
pub mod confine;
pub mod discovery;
pub mod identity;
pub mod lines;
pub mod positions;
pub mod report;
pub mod rotated;
pub mod rotation;
pub mod run;
pub mod tailer;
#[cfg(target_os = "linux")]
mod watch;

pub use batch::{Batch, Line};
pub use positions::{Position, PositionStore};
pub use tailer::Tailer;

pub use crate::config::source::TailOptions;
