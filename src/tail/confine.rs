//! Opening a file to follow, safely, when anyone who can write under the log root is
//! assumed hostile.
//!
//! Every open of a followed file goes through [`Confinement::open`]:
//! - `O_NONBLOCK`, so that a path swapped for a FIFO between the directory scan and the
//!   open cannot block the tail thread (a blocking `open` of a FIFO waits for a writer);
//! - the type is decided from `fstat` of the opened descriptor, not from an earlier
//!   `stat` of the path: anything but a regular file is refused;
//! - where the descriptor really points is read back from `/proc/self/fd` and must lie
//!   under one of the globs' roots (resolved through their own symlinks), unless
//!   `follow_symlinks_outside` says otherwise: a link `svc/evil.log -> /etc/shadow` or to
//!   the mounted Secret is refused. Checking the opened descriptor, not the path, leaves no
//!   window for a link swapped between the check and the open.
//!
//! Directory walks ([`super::discovery`], the watcher) use [`Confinement::allows_dir`] for
//! the directory links they meet.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// Why a path was not opened although it could have been.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// Not a regular file (a FIFO, a socket, a device, a directory).
    #[error("not a regular file ({0}); only regular files are followed")]
    NotRegular(&'static str),
    /// A symlink (somewhere on the path) leads out of the configured roots.
    #[error(
        "it leads to {0}, outside the paths' roots (set follow_symlinks_outside true to allow)"
    )]
    Outside(PathBuf),
}

/// Whether an I/O error is a [`Refused`] (reported once per path, not retried loudly).
pub fn is_refusal(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<Refused>())
}

/// The roots followed files must lie under.
#[derive(Debug, Clone)]
pub struct Confinement {
    roots: Vec<PathBuf>,
    follow_outside: bool,
}

impl Confinement {
    /// Files under `roots` (the globs' literal prefixes); anywhere when `follow_outside`.
    pub fn new(roots: Vec<PathBuf>, follow_outside: bool) -> Self {
        Confinement {
            roots,
            follow_outside,
        }
    }

    /// Opens `path` for reading if it is a regular file under the roots.
    pub fn open(&self, path: &Path) -> io::Result<File> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)?;
        let kind = file.metadata()?.file_type();
        if !kind.is_file() {
            let name = if kind.is_fifo() {
                "a FIFO"
            } else if kind.is_socket() {
                "a socket"
            } else if kind.is_dir() {
                "a directory"
            } else if kind.is_char_device() || kind.is_block_device() {
                "a device"
            } else {
                "a special file"
            };
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                Refused::NotRegular(name),
            ));
        }
        if !self.follow_outside {
            let real = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
                .or_else(|_| path.canonicalize())?;
            if !self.inside(&real) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    Refused::Outside(real),
                ));
            }
        }
        Ok(file)
    }

    /// Whether a directory reached through a link may be walked into.
    pub fn allows_dir(&self, dir: &Path) -> bool {
        self.follow_outside || dir.canonicalize().is_ok_and(|real| self.inside(&real))
    }

    fn inside(&self, real: &Path) -> bool {
        self.roots.iter().any(|root| {
            // A root that does not exist (yet) holds nothing; its literal path still counts
            // for files already resolved to it.
            let root = root.canonicalize().unwrap_or_else(|_| root.clone());
            real.starts_with(&root)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_files_under_the_root_open_and_fifos_and_outside_links_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("logs");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("a.log"), "x\n").unwrap();
        std::fs::write(dir.path().join("secret"), "token\n").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("evil.log")).unwrap();
        std::os::unix::fs::symlink(root.join("a.log"), root.join("inside.log")).unwrap();
        let fifo = root.join("pipe.log");
        // mkfifo(3) needs unsafe (denied in this crate): the coreutils command makes it.
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());

        let c = Confinement::new(vec![root.clone()], false);
        assert!(c.open(&root.join("a.log")).is_ok());
        assert!(c.open(&root.join("inside.log")).is_ok());
        let e = c.open(&fifo).unwrap_err();
        assert!(is_refusal(&e) && e.to_string().contains("FIFO"), "{e}");
        let e = c.open(&root.join("evil.log")).unwrap_err();
        assert!(is_refusal(&e) && e.to_string().contains("outside"), "{e}");
        assert!(Confinement::new(vec![root.clone()], true)
            .open(&root.join("evil.log"))
            .is_ok());
    }
}
