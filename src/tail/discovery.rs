//! Which files to read: the `path` globs (with `**`), minus `exclude_path`, regular files
//! only (symlinks are followed), each once even when several paths lead to it.

use std::collections::HashSet;
use std::fs::Metadata;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use glob::{MatchOptions, Pattern};
use tracing::warn;

use super::identity::FileKey;

const MATCH: MatchOptions = MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

/// A file the globs matched.
#[derive(Debug)]
pub struct Found {
    /// The path it was found at.
    pub path: PathBuf,
    /// Its identity.
    pub key: FileKey,
    /// Its metadata (of the target, for a symlink).
    pub meta: Metadata,
}

/// The globs of one tail source.
#[derive(Debug)]
pub struct Discovery {
    include: Vec<String>,
    exclude: Vec<Pattern>,
    recently_modified: Option<Duration>,
}

impl Discovery {
    /// Builds from the source's `path` and `exclude_path`; an invalid exclude pattern is
    /// reported and ignored (it can only make at-forwarder read more, never less).
    pub fn new(
        include: &[String],
        exclude: &[String],
        recently_modified: Option<Duration>,
    ) -> Self {
        let exclude = exclude
            .iter()
            .filter_map(|p| match Pattern::new(p) {
                Ok(p) => Some(p),
                Err(e) => {
                    warn!(pattern = %p, error = %e, "Invalid exclude_path pattern ignored.");
                    None
                }
            })
            .collect();
        Discovery {
            include: include.to_vec(),
            exclude,
            recently_modified,
        }
    }

    /// The base directories of the globs (their longest literal prefix), to watch for
    /// changes.
    pub fn roots(&self) -> Vec<PathBuf> {
        let mut roots: Vec<PathBuf> = self
            .include
            .iter()
            .map(|glob| {
                let literal: PathBuf = PathBuf::from(glob)
                    .components()
                    .take_while(|c| !c.as_os_str().to_string_lossy().contains(['*', '?', '[']))
                    .collect();
                if literal.as_os_str() == glob.as_str() {
                    literal.parent().map(PathBuf::from).unwrap_or(literal)
                } else {
                    literal
                }
            })
            .collect();
        roots.sort();
        roots.dedup();
        roots
    }

    /// Whether a path is excluded.
    pub fn excluded(&self, path: &std::path::Path) -> bool {
        self.exclude
            .iter()
            .any(|p| p.matches_path_with(path, MATCH))
    }

    /// Every file the globs match now, sorted by path, one entry per identity.
    pub fn scan(&self) -> Vec<Found> {
        let mut found = Vec::new();
        let mut seen = HashSet::new();
        let now = SystemTime::now();
        for glob in &self.include {
            let paths = match glob::glob_with(glob, MATCH) {
                Ok(paths) => paths,
                Err(e) => {
                    warn!(path = %glob, error = %e, "Invalid path pattern.");
                    continue;
                }
            };
            // Unreadable directories are skipped by the iterator's errors; they are
            // reported by the caller's permission handling when files inside are opened.
            for path in paths.filter_map(Result::ok) {
                if self.excluded(&path) {
                    continue;
                }
                let Ok(meta) = std::fs::metadata(&path) else {
                    continue;
                };
                if !meta.is_file() || self.too_old(&meta, now) {
                    continue;
                }
                let key = FileKey::of(&meta);
                if seen.insert(key) {
                    found.push(Found { path, key, meta });
                }
            }
        }
        found.sort_by(|a, b| a.path.cmp(&b.path));
        found
    }

    fn too_old(&self, meta: &Metadata, now: SystemTime) -> bool {
        let Some(limit) = self.recently_modified else {
            return false;
        };
        // A modification time in the future (clock skew) counts as recent.
        meta.modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|age| age > limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_recurse_exclude_and_deduplicate_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        for f in [
            "x.log",
            "a/y.log",
            "a/b/z.log.1",
            "a/b/z.log.2.gz",
            "a/notes.txt",
        ] {
            std::fs::write(root.join(f), "line\n").unwrap();
        }
        std::os::unix::fs::symlink(root.join("x.log"), root.join("a/link.log")).unwrap();
        let d = Discovery::new(
            &[format!("{}/**/*.log*", root.display())],
            &[format!("{}/**/*.gz", root.display())],
            None,
        );
        let names: Vec<String> = d
            .scan()
            .iter()
            .map(|f| f.path.strip_prefix(root).unwrap().display().to_string())
            .collect();
        // x.log and a/link.log are one file: it is listed once, under either path.
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(
            names.contains(&"a/b/z.log.1".to_string()) && names.contains(&"a/y.log".to_string()),
            "{names:?}"
        );
        assert!(
            names.contains(&"x.log".to_string()) != names.contains(&"a/link.log".to_string()),
            "{names:?}"
        );
        assert_eq!(d.roots(), [root.to_path_buf()]);
    }

    #[test]
    fn old_files_are_left_out_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("old.log");
        std::fs::write(&f, "x\n").unwrap();
        let old = std::time::SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let glob = format!("{}/*.log", dir.path().display());
        assert_eq!(
            Discovery::new(
                std::slice::from_ref(&glob),
                &[],
                Some(Duration::from_secs(60))
            )
            .scan()
            .len(),
            0
        );
        assert_eq!(
            Discovery::new(&[glob], &[], Some(Duration::from_secs(7200)))
                .scan()
                .len(),
            1
        );
    }
}
