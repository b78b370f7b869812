//! What the tailer hands downstream: lines with where they came from, and the positions
//! to save once those lines are durable.

use std::ops::Range;
use std::path::{Path, PathBuf};

use super::identity::FileKey;
use super::lines::LongLine;
use super::positions::Position;

/// Bytes of line data a batch reserves at its first line: a pass stops once it holds 2 MiB,
/// after the file it was reading gave up to `read_lines_limit` lines.
const FIRST_RESERVE: usize = 3 << 20;

/// Lines read in one pass over the files, stored in one buffer, and for each file read
/// the position just past its last complete line in the batch.
#[derive(Debug, Default)]
pub struct Batch {
    data: Vec<u8>,
    lines: Vec<LineRef>,
    files: Vec<(PathBuf, FileKey)>,
    /// Positions to save after the lines are durable (at most one per file).
    pub positions: Vec<Position>,
    /// Over-long lines skipped in this pass.
    pub long_lines: Vec<(PathBuf, LongLine)>,
    /// This pass read every file to its end after one that could not (`read_lines_limit`
    /// or the pass's size reached): the end of a backlog — a start with files to catch up
    /// on, a burst of writes, back-pressure let go. What it leaves in open chunks need not
    /// wait for `flush_interval`: at least `read_lines_limit` lines (or 2 MiB) were read
    /// since reading was last caught up, so this costs at most one more request per that.
    pub caught_up: bool,
    /// Where a copytruncate copy taken up in this pass, and the file it was copied from,
    /// start (before this pass read them): to be saved together, and before anything else
    /// of theirs in this batch. Saved alone, the truncated original's new start would leave
    /// nothing pointing to the copy, and a crash would lose the copy's unread lines.
    pub linked_starts: Vec<Position>,
}

#[derive(Debug)]
struct LineRef {
    file: usize,
    range: Range<usize>,
    offset: u64,
}

/// One line of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line<'a> {
    /// The file it was read from (the path it had when read).
    pub path: &'a Path,
    /// The file's identity.
    pub key: FileKey,
    /// Offset of its first byte in the file.
    pub offset: u64,
    /// The line, without its line ending.
    pub bytes: &'a [u8],
}

impl Batch {
    /// Number of lines.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// True when there are no lines, no positions, no skipped lines, and it does not end
    /// a backlog.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
            && self.positions.is_empty()
            && self.long_lines.is_empty()
            && !self.caught_up
    }

    /// The lines, in the order read (file by file, in file order).
    pub fn lines(&self) -> impl Iterator<Item = Line<'_>> {
        self.lines.iter().map(|l| {
            let (path, key) = &self.files[l.file];
            Line {
                path,
                key: *key,
                offset: l.offset,
                bytes: &self.data[l.range.clone()],
            }
        })
    }

    /// Bytes of line data held.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// Registers a file about to be read and returns its index for [`Batch::push`].
    pub(super) fn file(&mut self, path: &Path, key: FileKey) -> usize {
        if let Some(i) = self.files.iter().position(|(_, k)| *k == key) {
            return i;
        }
        self.files.push((path.to_path_buf(), key));
        self.files.len() - 1
    }

    pub(super) fn push(&mut self, file: usize, bytes: &[u8], offset: u64) {
        if self.data.capacity() == 0 {
            // Grown by doubling from nothing, a batch's lines were copied once more by
            // `realloc`; reserved (address space only until written) as much as a pass
            // usually reads.
            self.data.reserve(FIRST_RESERVE);
        }
        let start = self.data.len();
        self.data.extend_from_slice(bytes);
        self.lines.push(LineRef {
            file,
            range: start..self.data.len(),
            offset,
        });
    }

    /// Records where a file is read up to, replacing an earlier position of the same file.
    pub(super) fn set_position(&mut self, position: Position) {
        match self.positions.iter_mut().find(|p| p.key == position.key) {
            Some(p) => *p = position,
            None => self.positions.push(position),
        }
    }
}
