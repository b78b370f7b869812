//! Rotated files the globs no longer match, found beside the file they continue.
//!
//! logrotate renames `app.log` to `app.log.1` (or copies it there and truncates it): the
//! new name is outside `/var/log/at/**/*.log`. While at-forwarder runs, a renamed file
//! stays open and is read to its end; two cases need a look at the directory instead:
//! - a file renamed while at-forwarder was down (or killed): its saved position names an
//!   identity that the globs no longer find; the directory it was in is searched for that
//!   identity, and the file is finished from the saved offset;
//! - copytruncate: the lines written between the last read and the truncation are only in
//!   the copy; a file of the same directory holding the truncated file's content up to its
//!   read offset (head and marker hashes) is that copy, finished from that offset.
//!
//! Only the directory of the file itself is searched (logrotate's default; `olddir`
//! elsewhere is not followed).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::confine::Confinement;
use super::discovery::Found;
use super::identity::{self, Digest, FileKey};

/// What to look for beside a file.
#[derive(Debug, Clone)]
pub(crate) enum Wanted {
    /// The same identity under another name.
    Renamed(FileKey),
    /// A copy of the first `offset` bytes (its head and marker hashes).
    CopyOf {
        /// Bytes read from the original.
        offset: u64,
        /// Hash of the original's head.
        head: Digest,
        /// Hash of the bytes before `offset`.
        marker: Digest,
    },
}

/// Files of the directories of `wanted` (keyed by a path in the directory) that match,
/// leaving out identities in `known`.
pub(crate) fn find(
    wanted: &[(PathBuf, Wanted)],
    known: &HashSet<FileKey>,
    confine: &Confinement,
) -> Vec<Found> {
    let mut by_dir: HashMap<&Path, Vec<&Wanted>> = HashMap::new();
    for (path, w) in wanted {
        if let Some(dir) = path.parent() {
            by_dir.entry(dir).or_default().push(w);
        }
    }
    let mut out: Vec<Found> = Vec::new();
    for (dir, wants) in by_dir {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let key = FileKey::of(&meta);
            if !meta.is_file() || known.contains(&key) || out.iter().any(|f| f.key == key) {
                continue;
            }
            if wants
                .iter()
                .any(|w| matches(w, key, &path, meta.len(), confine))
            {
                out.push(Found { path, key, meta });
            }
        }
    }
    out
}

fn matches(wanted: &Wanted, key: FileKey, path: &Path, size: u64, confine: &Confinement) -> bool {
    match *wanted {
        Wanted::Renamed(k) => k == key,
        Wanted::CopyOf {
            offset,
            head,
            marker,
        } => {
            // At offset 0 (nothing read of it yet) the head alone names the content.
            if head.len == 0 || size < offset.max(head.len) {
                return false;
            }
            let Ok(file) = confine.open(path) else {
                return false;
            };
            let head_ok = identity::head_of_len(&file, size, head.len).ok().flatten() == Some(head);
            let marker_ok = head_ok && identity::marker(&file, offset).ok() == Some(marker);
            tracing::debug!(path = %path.display(), offset, head_ok, marker_ok, "Is this the copy?");
            marker_ok
        }
    }
}
