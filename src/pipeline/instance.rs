//! One instance per state directory: two processes on the same positions and buffers
//! would each send what the other sends, and fight over the position store's lock while
//! already working on each other's chunks. `run` takes an exclusive lock on
//! `<dir>/at-forwarder.lock` in the state directory and in each buffer directory before it
//! opens anything, and holds it until it exits (the kernel drops it when the process dies,
//! however it dies). The file holds the holder's pid, for the error the next one prints.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::config::Config;

/// The lock file's name in each directory.
pub const LOCK_FILE: &str = "at-forwarder.lock";

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    /// Another process holds it.
    #[error("another at-forwarder{} is running on {}: stop it first, or give this one its own state directory (<system> root_dir, pos_file and buffer path)", holder.map_or(String::new(), |pid| format!(" (pid {pid})")), dir.display())]
    Running {
        /// The directory.
        dir: PathBuf,
        /// The holder's pid, when its file says.
        holder: Option<u32>,
    },
    /// The lock file could not be created or locked.
    #[error("cannot lock {}: {source}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// Held locks; dropped, they are released.
#[derive(Debug)]
pub struct InstanceLock {
    _files: Vec<File>,
}

/// The directories one instance owns: the state directory, each `pos_file`'s and each
/// buffer's.
pub fn owned_dirs(config: &Config) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = config.state_dir().into_iter().collect();
    for source in &config.sources {
        let crate::config::SourceKind::Tail(tail) = &source.kind;
        let pos_dir = tail.options.pos_file.as_deref().and_then(Path::parent);
        dirs.extend(pos_dir.map(Path::to_path_buf));
    }
    for m in &config.matches {
        if let Some(b) = &m.buffer {
            dirs.push(b.options.path.clone());
        }
    }
    dirs.sort();
    dirs.dedup();
    dirs
}

/// Locks every directory `config` owns (creating them, mode 0700, if needed).
pub fn lock(config: &Config) -> Result<InstanceLock, InstanceError> {
    let files = owned_dirs(config)
        .iter()
        .map(|dir| lock_dir(dir))
        .collect::<Result<_, _>>()?;
    Ok(InstanceLock { _files: files })
}

fn lock_dir(dir: &Path) -> Result<File, InstanceError> {
    let path = dir.join(LOCK_FILE);
    let io = |source| InstanceError::Io {
        path: path.clone(),
        source,
    };
    crate::fsutil::create_private_dir(dir).map_err(io)?;
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(InstanceError::Running {
                dir: dir.to_path_buf(),
                holder: text
                    .trim()
                    .strip_prefix("pid ")
                    .and_then(|p| p.parse().ok()),
            });
        }
        Err(TryLockError::Error(e)) => return Err(io(e)),
    }
    let pid = format!("pid {}\n", std::process::id());
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(pid.as_bytes()))
        .map_err(io)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_a_directory_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let _held = lock_dir(dir.path()).unwrap();
        match lock_dir(dir.path()) {
            Err(InstanceError::Running { holder, .. }) => {
                assert_eq!(holder, Some(std::process::id()));
            }
            other => panic!("{other:?}"),
        }
        drop(_held);
        lock_dir(dir.path()).expect("free again once dropped");
    }
}
