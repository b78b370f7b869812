//! Which files to read: the `path` globs (with `**`), minus `exclude_path`, regular files
//! only, each once even when several paths lead to it.
//!
//! Each glob's directory tree is walked from its literal prefix (its root) with `walkdir`,
//! and paths are matched with `globset` (`*` stops at `/`, `**` spans directories, as
//! fluentd's globs). The walk is bounded whatever is written under the root: symlinked
//! directories are followed only when they resolve under a root (see [`super::confine`]),
//! and a directory already walked — a link loop such as `loop -> .`, or a link to a sibling
//! — is never walked again (by device and inode), so the walk visits each directory once.

use std::collections::HashSet;
use std::fs::Metadata;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use globset::{GlobBuilder, GlobMatcher};
use tracing::warn;
use walkdir::WalkDir;

use super::confine::Confinement;
use super::identity::FileKey;

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

/// One `path` glob: where its walk starts, how deep it goes, what it matches.
#[derive(Debug)]
struct Include {
    root: PathBuf,
    max_depth: usize,
    matcher: GlobMatcher,
}

/// The globs of one tail source.
#[derive(Debug)]
pub struct Discovery {
    include: Vec<Include>,
    exclude: Vec<GlobMatcher>,
    recently_modified: Option<Duration>,
    confinement: Confinement,
}

pub(super) fn matcher(pattern: &str) -> Result<GlobMatcher, globset::Error> {
    Ok(GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()?
        .compile_matcher())
}

/// The longest literal prefix of a glob (its root), and how many components below the
/// root it can match (unbounded with `**`).
fn root_of(glob: &str) -> (PathBuf, usize) {
    let path = PathBuf::from(glob);
    let literal: PathBuf = path
        .components()
        .take_while(|c| {
            !c.as_os_str()
                .to_string_lossy()
                .contains(['*', '?', '[', '{'])
        })
        .collect();
    if literal.as_os_str() == glob {
        let parent = literal.parent().map(PathBuf::from).unwrap_or_default();
        return (parent, 1);
    }
    let below = path.components().count() - literal.components().count();
    let depth = if glob.contains("**") {
        usize::MAX
    } else {
        below
    };
    (literal, depth)
}

impl Discovery {
    /// Builds from the source's `path` and `exclude_path`; an invalid exclude pattern is
    /// reported and ignored (it can only make at-forwarder read more, never less).
    /// Symlinks leading out of the globs' roots are followed only with `follow_outside`.
    pub fn new(
        include: &[String],
        exclude: &[String],
        recently_modified: Option<Duration>,
        follow_outside: bool,
    ) -> Self {
        let include: Vec<Include> = include
            .iter()
            .filter_map(|glob| match matcher(glob) {
                Ok(matcher) => {
                    let (root, max_depth) = root_of(glob);
                    Some(Include {
                        root,
                        max_depth,
                        matcher,
                    })
                }
                Err(e) => {
                    warn!(path = %glob, error = %e, "Invalid path pattern.");
                    None
                }
            })
            .collect();
        let exclude = exclude
            .iter()
            .filter_map(|p| match matcher(p) {
                Ok(p) => Some(p),
                Err(e) => {
                    warn!(pattern = %p, error = %e, "Invalid exclude_path pattern ignored.");
                    None
                }
            })
            .collect();
        let mut roots: Vec<PathBuf> = include.iter().map(|i| i.root.clone()).collect();
        roots.sort();
        roots.dedup();
        Discovery {
            include,
            exclude,
            recently_modified,
            confinement: Confinement::new(roots, follow_outside),
        }
    }

    /// The base directories of the globs (their longest literal prefix), to watch for
    /// changes.
    pub fn roots(&self) -> Vec<PathBuf> {
        let mut roots: Vec<PathBuf> = self.include.iter().map(|i| i.root.clone()).collect();
        roots.sort();
        roots.dedup();
        roots
    }

    /// Where followed files may lie, and how they are opened.
    pub fn confinement(&self) -> &Confinement {
        &self.confinement
    }

    /// Whether a path is excluded.
    pub fn excluded(&self, path: &Path) -> bool {
        self.exclude.iter().any(|p| p.is_match(path))
    }

    /// Whether the globs match `path` and no exclude pattern does.
    pub fn matches(&self, path: &Path) -> bool {
        self.include.iter().any(|i| i.matcher.is_match(path)) && !self.excluded(path)
    }

    /// Every file the globs match now, sorted by path, one entry per identity.
    pub fn scan(&self) -> Vec<Found> {
        let mut found = Vec::new();
        let mut seen = HashSet::new();
        let now = SystemTime::now();
        for include in &self.include {
            self.walk(include, &mut |path, meta| {
                if !include.matcher.is_match(path) || self.excluded(path) {
                    return;
                }
                if !meta.is_file() || self.too_old(meta, now) {
                    return;
                }
                let key = FileKey::of(meta);
                if seen.insert(key) {
                    found.push(Found {
                        path: path.to_path_buf(),
                        key,
                        meta: meta.clone(),
                    });
                }
            });
        }
        found.sort_by(|a, b| a.path.cmp(&b.path));
        found
    }

    /// Walks one glob's tree, calling `visit` for every entry that is not a directory.
    /// Unreadable directories are skipped; files inside them are reported when opened.
    fn walk(&self, include: &Include, visit: &mut dyn FnMut(&Path, &Metadata)) {
        let mut dirs_walked: HashSet<FileKey> = HashSet::new();
        let mut entries = WalkDir::new(&include.root)
            .follow_links(true)
            .max_depth(include.max_depth)
            .into_iter();
        while let Some(entry) = entries.next() {
            // Loops are errors of the walk (walkdir checks ancestors); dirs_walked below
            // catches the rest.
            let Ok(entry) = entry else { continue };
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_dir() {
                visit(entry.path(), &meta);
                continue;
            }
            let leads_out = entry.path_is_symlink() && !self.confinement.allows_dir(entry.path());
            if leads_out || !dirs_walked.insert(FileKey::of(&meta)) {
                entries.skip_current_dir();
            }
        }
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
            false,
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
                Some(Duration::from_secs(60)),
                false
            )
            .scan()
            .len(),
            0
        );
        assert_eq!(
            Discovery::new(&[glob], &[], Some(Duration::from_secs(7200)), false)
                .scan()
                .len(),
            1
        );
    }

    #[test]
    fn link_loops_and_links_out_of_the_root_end_the_walk() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("logs");
        std::fs::create_dir_all(root.join("a")).unwrap();
        std::fs::create_dir_all(dir.path().join("elsewhere")).unwrap();
        std::fs::write(root.join("a/x.log"), "x\n").unwrap();
        std::fs::write(dir.path().join("elsewhere/y.log"), "y\n").unwrap();
        // Two loops to the root and one to a sibling: 2^depth paths if links were walked.
        std::os::unix::fs::symlink(".", root.join("loop1")).unwrap();
        std::os::unix::fs::symlink(".", root.join("loop2")).unwrap();
        std::os::unix::fs::symlink("..", root.join("a/up")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), root.join("out")).unwrap();
        let glob = format!("{}/**/*.log", root.display());
        let found = Discovery::new(std::slice::from_ref(&glob), &[], None, false).scan();
        let names: Vec<_> = found.iter().map(|f| f.path.clone()).collect();
        assert_eq!(names, [root.join("a/x.log")]);
        let found = Discovery::new(&[glob], &[], None, true).scan();
        assert_eq!(found.len(), 2, "{found:?}");
    }
}
