//! The journal of positions safe downstream but not saved yet: what the previous process had already made
//! safe downstream — delivered, or written to its buffer's files (page cache) — but not
//! yet saved, so that a restart after the process alone died (`kill -9`, an OOM kill, a
//! panic) does not read and send those lines a second time.
//!
//! Why this is safe: what a process hands to `write(2)` stays in the page cache when the
//! process dies, and the next process reads it back from the same files; only a crash of
//! the machine (power loss, kernel panic) loses unsynced data. So the file records the
//! boot it was written in and is believed only in that same boot
//! (`/proc/sys/kernel/random/boot_id`); after a reboot the saved (fsynced) positions alone
//! count, and what was read after them is read again: duplicates, never loss. The caller
//! applies these positions only after the buffers have recovered and fsynced their chunks.
//!
//! # On-disk format, version 1
//!
//! `<pos_file>.ahead`, rewritten in place (no fsync) each time positions become safe
//! downstream: a header line `ATFWAHEAD 1 <boot-id> <length> <crc32c>\n`, then `length`
//! bytes of JSON — an array of `{"key":{"dev":D,"ino":I},"checkpoint":{…}}`, the checkpoint
//! as in the position store ([`crate::tail::positions`]). Bytes after `length` are ignored (the
//! file is not truncated on each write). A header, length or checksum that does not match
//! means the file is ignored.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::{debug, info};

use crate::tail::identity::FileKey;
use crate::tail::positions::{Checkpoint, Position};

const MAGIC: &str = "ATFWAHEAD";
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

#[derive(Serialize, Deserialize)]
struct Entry {
    key: FileKey,
    checkpoint: Checkpoint,
}

/// The journal file of one tail source, open for rewriting.
#[derive(Debug)]
pub(super) struct JournalFile {
    file: File,
    boot: String,
    buf: Vec<u8>,
}

/// The journal file that belongs to a `pos_file` setting (`<pos_file>.ahead`).
pub(super) fn path_for(pos_file: &Path) -> PathBuf {
    let mut name = pos_file.as_os_str().to_owned();
    name.push(".ahead");
    PathBuf::from(name)
}

fn boot_id() -> Option<String> {
    let id = std::fs::read_to_string(BOOT_ID).ok()?;
    let id = id.trim();
    (!id.is_empty() && !id.contains(char::is_whitespace)).then(|| id.to_string())
}

impl JournalFile {
    /// Opens (creating, mode 0600) the file at `path`. `None` when this system has no
    /// boot id: without it a reboot could not be told apart, so nothing is recorded.
    pub(super) fn create(path: &Path) -> io::Result<Option<Self>> {
        let Some(boot) = boot_id() else {
            return Ok(None);
        };
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)?;
        Ok(Some(JournalFile {
            file,
            boot,
            buf: Vec::new(),
        }))
    }

    /// Records `positions` as written downstream (replacing what was recorded before).
    pub(super) fn write<'a>(
        &mut self,
        positions: impl Iterator<Item = &'a Position>,
    ) -> io::Result<()> {
        let entries: Vec<Entry> = positions
            .map(|p| Entry {
                key: p.key,
                checkpoint: p.checkpoint.clone(),
            })
            .collect();
        let json = serde_json::to_vec(&entries).map_err(io::Error::other)?;
        self.buf.clear();
        let header = format!(
            "{MAGIC} 1 {} {} {}\n",
            self.boot,
            json.len(),
            crc32c::crc32c(&json)
        );
        self.buf.extend_from_slice(header.as_bytes());
        self.buf.extend_from_slice(&json);
        // One write: a process killed around it leaves the old or the new record whole.
        self.file.write_all_at(&self.buf, 0)
    }
}

/// The positions recorded at `path`, if the file was written in this boot and is whole;
/// empty otherwise (no file, another boot, damage — each logged).
pub(super) fn read_this_boot(path: &Path) -> Vec<Position> {
    let Ok(data) = std::fs::read(path) else {
        return Vec::new();
    };
    match parse(&data, boot_id().as_deref()) {
        Ok(positions) => positions,
        Err(why) => {
            debug!(file = %path.display(), why, "Not using the positions read ahead of the saved ones.");
            if why == "written before the last reboot" {
                info!(file = %path.display(), "The machine restarted: lines read after the last saved positions are read again.");
            }
            Vec::new()
        }
    }
}

fn parse(data: &[u8], boot: Option<&str>) -> Result<Vec<Position>, &'static str> {
    let end = data.iter().position(|&b| b == b'\n').ok_or("no header")?;
    let header = std::str::from_utf8(&data[..end]).map_err(|_| "bad header")?;
    let fields: Vec<&str> = header.split(' ').collect();
    let [MAGIC, "1", written_in, len, crc] = fields[..] else {
        return Err("bad header");
    };
    if Some(written_in) != boot {
        return Err("written before the last reboot");
    }
    let len: usize = len.parse().map_err(|_| "bad length")?;
    let crc: u32 = crc.parse().map_err(|_| "bad checksum")?;
    let json = data.get(end + 1..end + 1 + len).ok_or("cut short")?;
    if crc32c::crc32c(json) != crc {
        return Err("checksum mismatch");
    }
    let entries: Vec<Entry> = serde_json::from_slice(json).map_err(|_| "bad JSON")?;
    Ok(entries
        .into_iter()
        .map(|e| Position {
            key: e.key,
            checkpoint: e.checkpoint,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tail::identity::Digest;

    fn position(ino: u64, offset: u64) -> Position {
        Position {
            key: FileKey { dev: 1, ino },
            checkpoint: Checkpoint {
                v: 1,
                offset,
                head: Digest::default(),
                marker: Digest::default(),
                born: None,
                path: PathBuf::from("/var/log/at/a.log"),
                seen: 0,
            },
        }
    }

    #[test]
    fn a_record_of_this_boot_is_read_back_and_a_shorter_rewrite_wins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.ahead");
        let mut journal = JournalFile::create(&path)
            .unwrap()
            .expect("Linux has a boot id");
        let (a, b) = (position(1, 100), position(2, 2000));
        journal.write([&a, &b].into_iter()).unwrap();
        assert_eq!(read_this_boot(&path), vec![a.clone(), b]);
        let a2 = position(1, 150);
        journal.write([&a2].into_iter()).unwrap();
        assert_eq!(read_this_boot(&path), vec![a2]);
    }

    #[test]
    fn another_boot_or_damage_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.ahead");
        let mut journal = JournalFile::create(&path).unwrap().unwrap();
        journal.write([&position(1, 100)].into_iter()).unwrap();
        let data = std::fs::read(&path).unwrap();
        assert_eq!(
            parse(&data, Some("another-boot")),
            Err("written before the last reboot")
        );
        let mut flipped = data.clone();
        let last = flipped.len() - 2;
        flipped[last] ^= 1;
        assert!(parse(&flipped, boot_id().as_deref()).is_err());
        assert!(parse(&data[..data.len() - 3], boot_id().as_deref()).is_err());
        assert!(read_this_boot(&dir.path().join("missing")).is_empty());
    }
}
