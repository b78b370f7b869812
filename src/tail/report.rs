//! What `at-forwarder positions` shows: each saved position next to the file it belongs
//! to now.

use std::fmt::Write;
use std::path::PathBuf;

use super::discovery::Discovery;
use super::identity::FileKey;
use super::positions::{PositionStore, PositionsError};
use super::TailOptions;

/// Where a file with a saved position is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileState {
    /// Found at the path it was last read from.
    Active,
    /// Found under another path the globs match (renamed by rotation).
    Rotated,
    /// Not found: deleted, or moved out of the globs.
    Gone,
}

/// One saved position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PositionRow {
    /// The path the file is at now, or was last seen at.
    pub path: PathBuf,
    /// Its identity.
    pub key: FileKey,
    /// Bytes read and made durable.
    pub offset: u64,
    /// Its size now, when found.
    pub size: Option<u64>,
    /// Where it is.
    pub state: FileState,
}

impl PositionRow {
    /// Bytes not yet read and made durable.
    pub fn lag(&self) -> Option<u64> {
        self.size.map(|s| s.saturating_sub(self.offset))
    }
}

/// How many files the source's paths match now (as the tailer would find them).
pub fn matching_files(opts: &TailOptions) -> usize {
    Discovery::new(
        &opts.paths,
        &opts.exclude_paths,
        None,
        opts.follow_symlinks_outside,
    )
    .scan()
    .len()
}

/// Every saved position of a source, matched with the files its globs find now.
pub fn positions(
    opts: &TailOptions,
    store: &PositionStore,
) -> Result<Vec<PositionRow>, PositionsError> {
    let (saved, _) = store.load()?;
    let found = Discovery::new(
        &opts.paths,
        &opts.exclude_paths,
        None,
        opts.follow_symlinks_outside,
    )
    .scan();
    let mut rows: Vec<PositionRow> = saved
        .into_iter()
        .map(|(key, c)| match found.iter().find(|f| f.key == key) {
            Some(f) => PositionRow {
                state: if f.path == c.path {
                    FileState::Active
                } else {
                    FileState::Rotated
                },
                path: f.path.clone(),
                key,
                offset: c.offset,
                size: Some(f.meta.len()),
            },
            None => PositionRow {
                path: c.path,
                key,
                offset: c.offset,
                size: None,
                state: FileState::Gone,
            },
        })
        .collect();
    rows.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(rows)
}

/// The rows as an aligned table.
pub fn table(rows: &[PositionRow]) -> String {
    let mut out = format!(
        "{:<60} {:>12} {:>14} {:>14} {:>12}  STATE\n",
        "PATH", "INODE", "OFFSET", "SIZE", "LAG"
    );
    for r in rows {
        let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
        let state = match r.state {
            FileState::Active => "active",
            FileState::Rotated => "rotated",
            FileState::Gone => "gone",
        };
        let _ = writeln!(
            out,
            "{:<60} {:>12} {:>14} {:>14} {:>12}  {state}",
            r.path.display(),
            r.key.ino,
            r.offset,
            opt(r.size),
            opt(r.lag())
        );
    }
    out
}
