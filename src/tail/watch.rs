//! Change notification for the tail thread: inotify on every directory under the globs'
//! roots, read by a thread of its own in bursts.
//!
//! Writers append line by line, and each write is an inotify event: at 20,000 lines/s a
//! watcher woken per event (as `notify`'s is) cost a third of the forwarder's CPU. This
//! one blocks until the first event of a burst, lets writes gather for
//! [`GATHER_WRITES`], then takes everything queued in one or two reads and reports the
//! files written (each once) and whether anything else changed. The kernel queues up to
//! `fs.inotify.max_queued_events` events meanwhile; an overflow is reported as a change of
//! structure, so a full scan runs.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};
use tracing::{debug, warn};

use super::confine::Confinement;

/// How long writes are let gather after the first notification of a burst. Reading at
/// each one would make a pass (a batch, a buffer append, a position record) per few lines.
/// W2 (20,000 lines/s, 30 s): 10.7 % of a core and p99 277 ms at 50 ms; 9.7 % and 338 ms
/// at 100 ms, well within the `flush_interval` + 1 s latency budget.
pub(super) const GATHER_WRITES: Duration = Duration::from_millis(100);

/// Directories deeper than this below a root are not watched.
const MAX_DEPTH: usize = 32;

/// What a burst of notifications said.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Changes {
    /// Files written to (or truncated), each once.
    pub written: Vec<PathBuf>,
    /// Files or directories appeared, moved or vanished, or notifications were lost.
    pub structure: bool,
}

/// A running watcher; dropping it stops its thread.
pub(super) struct Watch {
    stop: Arc<AtomicBool>,
    watches: Watches,
    /// A watch that never fires, whose removal wakes the thread (its read returns the
    /// removal's event).
    wake: WatchDescriptor,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if self.watches.remove(self.wake.clone()).is_ok() {
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

/// Watches every directory under `roots`, calling `report` after each burst; `report`
/// returning `false` stops the thread. `None` when nothing can be watched (inotify
/// unavailable, or no root exists yet): the caller polls instead.
pub(super) fn start(
    roots: &[PathBuf],
    confine: Confinement,
    report: impl FnMut(Changes) -> bool + Send + 'static,
) -> Option<Watch> {
    let inotify = match Inotify::init() {
        Ok(i) => i,
        Err(e) => {
            warn!(error = %e, "Change notification unavailable; polling files every second instead.");
            return None;
        }
    };
    let watches = inotify.watches();
    let mut dirs = HashMap::new();
    for root in roots {
        add_tree(&watches, root, 0, &mut dirs, &confine);
    }
    if dirs.is_empty() {
        return None;
    }
    let wake = match watches.clone().add("/", WatchMask::DELETE_SELF) {
        Ok(wd) => wd,
        Err(_) => dirs.keys().next()?.clone(),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let thread = std::thread::Builder::new()
        .name("tail-watch".into())
        .spawn(move || run(inotify, dirs, &confine, &flag, report));
    match thread {
        Ok(thread) => Some(Watch {
            stop,
            watches,
            wake,
            thread: Some(thread),
        }),
        Err(e) => {
            warn!(error = %e, "Cannot start the change watcher; polling files every second instead.");
            None
        }
    }
}

fn mask() -> WatchMask {
    WatchMask::MODIFY
        | WatchMask::ATTRIB
        | WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
}

/// Watches `dir` and the directories below it, as far as [`MAX_DEPTH`], following
/// symlinks that stay under the roots. Each directory is walked once: inotify gives the
/// same descriptor to a directory reached again (a link loop such as `loop -> .`, a link
/// to a sibling), and the walk stops there, so a hostile tree cannot make it spin.
fn add_tree(
    watches: &Watches,
    dir: &Path,
    depth: usize,
    dirs: &mut HashMap<WatchDescriptor, PathBuf>,
    confine: &Confinement,
) {
    let is_link = std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink());
    if is_link && !confine.allows_dir(dir) {
        debug!(dir = %dir.display(), "Not watching a directory link that leads out of the roots.");
        return;
    }
    match watches.clone().add(dir, mask()) {
        Ok(wd) => {
            let known = dirs.contains_key(&wd);
            // A directory moved within the tree keeps its descriptor: it is known under its
            // new path. One reached again through a link keeps the path it has.
            if !known || !is_link {
                dirs.insert(wd, dir.to_path_buf());
            }
            if known {
                return;
            }
        }
        Err(e) => {
            // One that does not exist yet is found by the periodic scan.
            debug!(dir = %dir.display(), error = %e, "Cannot watch directory.");
            return;
        }
    }
    if depth >= MAX_DEPTH {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if std::fs::metadata(&path).is_ok_and(|m| m.is_dir()) {
            add_tree(watches, &path, depth + 1, dirs, confine);
        }
    }
}

fn run(
    mut inotify: Inotify,
    mut dirs: HashMap<WatchDescriptor, PathBuf>,
    confine: &Confinement,
    stop: &AtomicBool,
    mut report: impl FnMut(Changes) -> bool,
) {
    let watches = inotify.watches();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let mut burst = Burst::default();
        match inotify.read_events_blocking(&mut buffer) {
            Ok(events) => {
                for e in events {
                    burst.note(&watches, &mut dirs, confine, &e.wd, e.mask, e.name);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                warn!(error = %e, "Reading change notifications failed; files are found by the periodic scan only.");
                return;
            }
        }
        if stop.load(Ordering::SeqCst) {
            return;
        }
        if !burst.written.is_empty() {
            std::thread::sleep(GATHER_WRITES);
        }
        // Everything queued meanwhile, without blocking.
        while let Ok(events) = inotify.read_events(&mut buffer) {
            let mut any = false;
            for e in events {
                any = true;
                burst.note(&watches, &mut dirs, confine, &e.wd, e.mask, e.name);
            }
            if !any {
                break;
            }
        }
        let changes = Changes {
            written: burst.written_paths(&dirs),
            structure: burst.structure,
        };
        if stop.load(Ordering::SeqCst) || !report(changes) {
            return;
        }
    }
}

#[derive(Default)]
struct Burst {
    /// Files written, by directory and name: a burst names a few files thousands of
    /// times, so names are compared before any path is built (a path cloned, joined and
    /// hashed per event was a fifth of this thread's work).
    written: HashMap<WatchDescriptor, Vec<Option<OsString>>>,
    structure: bool,
}

impl Burst {
    fn note(
        &mut self,
        watches: &Watches,
        dirs: &mut HashMap<WatchDescriptor, PathBuf>,
        confine: &Confinement,
        wd: &WatchDescriptor,
        mask: EventMask,
        name: Option<&OsStr>,
    ) {
        if mask.contains(EventMask::Q_OVERFLOW) {
            self.structure = true;
            return;
        }
        if mask.contains(EventMask::IGNORED) {
            dirs.remove(wd);
            return;
        }
        if mask == EventMask::MODIFY {
            if dirs.contains_key(wd) {
                let names = self.written.entry(wd.clone()).or_default();
                if !names.iter().any(|n| n.as_deref() == name) {
                    names.push(name.map(OsStr::to_os_string));
                }
            }
            return;
        }
        let Some(dir) = dirs.get(wd).cloned() else {
            return;
        };
        let path = name.map_or_else(|| dir.clone(), |n| dir.join(n));
        if mask.contains(EventMask::ISDIR)
            && mask.intersects(EventMask::CREATE | EventMask::MOVED_TO)
        {
            // A directory moved in keeps its descriptor, now under its new path.
            add_tree(watches, &path, 0, dirs, confine);
        }
        self.structure = true;
    }

    /// The files written, each once, under the paths their directories have now.
    fn written_paths(&self, dirs: &HashMap<WatchDescriptor, PathBuf>) -> Vec<PathBuf> {
        let mut paths = Vec::new();
        for (wd, names) in &self.written {
            let Some(dir) = dirs.get(wd) else { continue };
            paths.extend(
                names
                    .iter()
                    .map(|n| n.as_ref().map_or_else(|| dir.clone(), |n| dir.join(n))),
            );
        }
        paths
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Instant;

    #[test]
    fn directories_made_later_are_watched_and_each_burst_names_a_file_once() {
        let root = tempfile::tempdir().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let roots = [root.path().to_path_buf()];
        let confine = Confinement::new(roots.to_vec(), false);
        let watch = start(&roots, confine, move |c| tx.send(c).is_ok()).unwrap();
        let dir = root.path().join("svc").join("pod");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.log");
        let mut file = std::fs::File::create(&path).unwrap();
        let (mut structure, mut written) = (false, false);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(structure && written) {
            assert!(Instant::now() < deadline, "no report of the write");
            for _ in 0..50 {
                file.write_all(b"{}\n").unwrap();
            }
            if let Ok(c) = rx.recv_timeout(Duration::from_millis(200)) {
                let unique: std::collections::HashSet<&PathBuf> = c.written.iter().collect();
                assert_eq!(unique.len(), c.written.len(), "a file named twice: {c:?}");
                structure |= c.structure;
                written |= c.written.contains(&path);
            }
        }
        // Dropping the watch stops its thread (the drop joins it).
        drop(watch);
        while rx.try_recv().is_ok() {}
        file.write_all(b"{}\n").unwrap();
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
    }

    #[test]
    fn nothing_to_watch_means_polling() {
        let missing = PathBuf::from("/nonexistent/at-forwarder/logs");
        let confine = Confinement::new(vec![missing.clone()], false);
        assert!(start(&[missing], confine, |_| true).is_none());
    }

    #[test]
    fn link_loops_and_links_out_of_the_roots_are_not_walked() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("logs");
        std::fs::create_dir_all(root.join("a")).unwrap();
        std::fs::create_dir_all(tmp.path().join("elsewhere/deep")).unwrap();
        std::os::unix::fs::symlink(".", root.join("loop1")).unwrap();
        std::os::unix::fs::symlink(".", root.join("loop2")).unwrap();
        std::os::unix::fs::symlink("..", root.join("a/up")).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("elsewhere"), root.join("out")).unwrap();
        let inotify = Inotify::init().unwrap();
        let mut dirs = HashMap::new();
        let confine = Confinement::new(vec![root.clone()], false);
        // Before the walk stopped at directories seen, two loops made 2^32 paths.
        add_tree(&inotify.watches(), &root, 0, &mut dirs, &confine);
        let mut watched: Vec<PathBuf> = dirs.into_values().collect();
        watched.sort();
        assert_eq!(watched, [root.clone(), root.join("a")]);
    }
}
