//! Chunk files: the format, appending, reading, and repair of what a crash left.
//!
//! A chunk is two files in `<path>/chunks/`: `<id>.chunk` (the records, append-only) and
//! `<id>.meta` (JSON, replaced whole by temp → fsync → rename). See the module
//! documentation of [`super`] for the layout.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::records::Records;

/// First bytes of every chunk file.
pub const MAGIC: &[u8; 8] = b"ATFWCHNK";
/// Format version written in the header.
pub const VERSION: u16 = 1;
/// A record longer than this is corrupt (no event comes near it).
pub const MAX_RECORD: u32 = 64 << 20;

/// A chunk's identity: creation time in ms and a sequence number, so names sort by age.
pub type ChunkId = String;

/// Where a chunk stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChunkState {
    /// Receiving records.
    Open,
    /// Complete; waiting to be sent, or being sent.
    Sealed,
}

/// The `.meta` file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Format version.
    pub v: u32,
    /// The chunk key (for the Activity Tracker output, the service).
    pub key: String,
    /// Open or sealed.
    pub state: ChunkState,
    /// Creation time, ms since the epoch.
    pub created_ms: u64,
    /// Records in the chunk (when sealed).
    pub records: u64,
    /// Size of the `.chunk` file (when sealed).
    pub bytes: u64,
    /// Failed send attempts so far.
    #[serde(default)]
    pub attempts: u32,
    /// When the first attempt failed, ms since the epoch (for `retry_timeout`).
    #[serde(default)]
    pub first_failure_ms: Option<u64>,
    /// Earliest next attempt, ms since the epoch.
    #[serde(default)]
    pub next_attempt_ms: Option<u64>,
    /// Why the chunk was backed up, when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_reason: Option<String>,
}

impl Meta {
    /// The metadata of a sealed chunk that has not been tried yet.
    pub fn sealed(key: &str, created_ms: u64, records: u64, bytes: u64) -> Self {
        Meta {
            v: 1,
            key: key.to_string(),
            state: ChunkState::Sealed,
            created_ms,
            records,
            bytes,
            attempts: 0,
            first_failure_ms: None,
            next_attempt_ms: None,
            backup_reason: None,
        }
    }
}

/// The length of a chunk file's header for `key`.
pub fn header_len(key: &str) -> usize {
    24 + key.len()
}

/// The header of a chunk file.
pub fn header(key: &str, created_ms: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(24 + key.len());
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&VERSION.to_le_bytes());
    h.extend_from_slice(&u16::try_from(key.len()).unwrap_or(u16::MAX).to_le_bytes());
    h.extend_from_slice(&created_ms.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&h), key.as_bytes());
    h.extend_from_slice(&crc.to_le_bytes());
    h.extend_from_slice(key.as_bytes());
    h
}

/// Frames one record: length, CRC32C, payload.
pub fn frame(record: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(
        &u32::try_from(record.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    out.extend_from_slice(&crc32c::crc32c(record).to_le_bytes());
    out.extend_from_slice(record);
}

/// Records framed without their CRCs (as [`super::Framed`] holds them) with the CRCs
/// filled in, as a chunk file holds them.
pub fn with_crcs(framed: &[u8]) -> Vec<u8> {
    let mut out = framed.to_vec();
    let mut at = 0;
    while let Some(header) = out.get(at..at + 8) {
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let end = (at + 8 + len).min(out.len());
        let crc = crc32c::crc32c(&out[at + 8..end]);
        out[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
        at = end;
    }
    out
}

/// Creates a chunk file with its header (not yet fsynced) and returns it open for appends.
pub fn create(path: &Path, key: &str, created_ms: u64) -> io::Result<(File, u64)> {
    let mut file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .read(true)
        .mode(0o600)
        .open(path)?;
    let h = header(key, created_ms);
    if let Err(e) = file.write_all(&h) {
        // Not left behind for recovery to clear at the next start: a full disk would
        // leave one per retry.
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok((file, h.len() as u64))
}

/// Writes `meta` next to the chunk: temp file, fsync, rename, fsync of the directory.
pub fn write_meta(path: &Path, meta: &Meta) -> io::Result<()> {
    crate::fsutil::replace_file(path, &serde_json::to_vec(meta).map_err(io::Error::other)?)
}

/// fsync of a directory, so that renames and creations in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    crate::fsutil::sync_dir(dir)
}

/// What reading a chunk file found.
#[derive(Debug, Default)]
pub struct Scan {
    /// The key from the header.
    pub key: String,
    /// Creation time from the header.
    pub created_ms: u64,
    /// Good records.
    pub records: Records,
    /// Length of the file's good prefix (header and the records up to the first problem).
    pub good_len: u64,
    /// Records whose CRC failed, with their offsets (their framing was intact).
    pub corrupt: Vec<(u64, Vec<u8>)>,
    /// Bytes after the last readable record: a torn append, or framing too damaged to go on.
    pub torn_tail: Option<(u64, u64)>,
}

/// Why a chunk file cannot be read at all.
#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The header is missing or damaged: the file is not a chunk, or its first bytes are lost.
    #[error("{path}: {reason}")]
    BadHeader {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Reads every record of a chunk file, checking each CRC.
pub fn scan(path: &Path) -> Result<Scan, ChunkError> {
    scan_for_bodies(path, usize::MAX)
}

/// [`scan`], with the records of an intact chunk laid out in place as request bodies of
/// `per_body` records (see `Records::framed_as_json`).
pub fn scan_for_bodies(path: &Path, per_body: usize) -> Result<Scan, ChunkError> {
    let io = |source| ChunkError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut data = Vec::new();
    File::open(path)
        .and_then(|mut f| {
            // One byte to spare: the `]` that makes the records a request body in place.
            let size = f.metadata()?.len();
            data.reserve_exact(usize::try_from(size).unwrap_or(0).saturating_add(1));
            f.read_to_end(&mut data)
        })
        .map_err(io)?;
    let bad = |reason: &str| ChunkError::BadHeader {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    if data.len() < 24 {
        return Err(bad(if data.is_empty() {
            "empty file"
        } else {
            "too short for a header"
        }));
    }
    if &data[..8] != MAGIC {
        return Err(bad("not a chunk file (bad magic)"));
    }
    let version = u16::from_le_bytes([data[8], data[9]]);
    if version != VERSION {
        return Err(bad(&format!("unsupported version {version}")));
    }
    let key_len = usize::from(u16::from_le_bytes([data[10], data[11]]));
    let created_ms = u64::from_le_bytes(data[12..20].try_into().expect("8 bytes"));
    let stored_crc = u32::from_le_bytes(data[20..24].try_into().expect("4 bytes"));
    let Some(key) = data.get(24..24 + key_len) else {
        return Err(bad("header cut short"));
    };
    if crc32c::crc32c_append(crc32c::crc32c(&data[..20]), key) != stored_crc {
        return Err(bad("header checksum mismatch"));
    }
    let mut scan = Scan {
        key: String::from_utf8_lossy(key).into_owned(),
        created_ms,
        ..Scan::default()
    };
    let mut at = 24 + key_len;
    scan.good_len = at as u64;
    let mut spans = Vec::new();
    while at < data.len() {
        let Some(frame) = data.get(at..at + 8) else {
            break;
        };
        let len = u32::from_le_bytes(frame[..4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(frame[4..].try_into().expect("4 bytes"));
        let end = at + 8 + len as usize;
        if len > MAX_RECORD || end > data.len() {
            break;
        }
        let payload = &data[at + 8..end];
        if crc32c::crc32c(payload) == crc {
            spans.push(at + 8..end);
        } else {
            scan.corrupt.push((at as u64, payload.to_vec()));
        }
        at = end;
        scan.good_len = at as u64;
    }
    if at < data.len() {
        scan.torn_tail = Some((at as u64, (data.len() - at) as u64));
    }
    let frames_start = 24 + key_len;
    scan.records = if scan.corrupt.is_empty() && scan.torn_tail.is_none() {
        Records::framed_as_json(data, spans, frames_start, per_body)
    } else {
        Records::new(data, spans)
    };
    Ok(scan)
}

/// Writes a chunk file holding `records` (temp, fsync, rename); returns its size.
pub fn write_whole<'a>(
    path: &Path,
    key: &str,
    created_ms: u64,
    records: impl IntoIterator<Item = &'a [u8]>,
) -> io::Result<u64> {
    let mut data = header(key, created_ms);
    for r in records {
        frame(r, &mut data);
    }
    crate::fsutil::replace_file(path, &data)?;
    Ok(data.len() as u64)
}

/// Cuts a file back to `len` bytes (undoing a partial append) and syncs it.
pub fn truncate(file: &mut File, len: u64) -> io::Result<()> {
    file.set_len(len)?;
    file.seek(SeekFrom::End(0))?;
    file.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn records_round_trip_and_damage_is_located() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.chunk");
        let (mut file, header_len) = create(&path, "svc", 1234).unwrap();
        let mut data = Vec::new();
        for r in [&b"one"[..], b"two", b"three"] {
            frame(r, &mut data);
        }
        file.write_all(&data).unwrap();
        let s = scan(&path).unwrap();
        assert_eq!((s.key.as_str(), s.created_ms), ("svc", 1234));
        assert_eq!(
            s.records,
            [b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
        );
        assert_eq!(s.good_len, header_len + data.len() as u64);

        // Flip a byte in "two": its CRC fails, the others are kept.
        let mut bytes = fs::read(&path).unwrap();
        let two = header_len as usize + 8 + 3 + 8;
        bytes[two] ^= 0x40;
        // And a torn append after the last record.
        bytes.extend_from_slice(&[9, 0, 0]);
        fs::write(&path, &bytes).unwrap();
        let s = scan(&path).unwrap();
        assert_eq!(s.records, [b"one".to_vec(), b"three".to_vec()]);
        assert_eq!(s.corrupt.len(), 1);
        assert_eq!(s.torn_tail, Some((bytes.len() as u64 - 3, 3)));
    }

    #[test]
    fn headers_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.chunk");
        fs::write(&path, b"").unwrap();
        assert!(scan(&path).unwrap_err().to_string().contains("empty file"));
        fs::write(&path, b"not a chunk at all, just some text").unwrap();
        assert!(scan(&path).unwrap_err().to_string().contains("bad magic"));
        let mut h = header("svc", 1);
        h[24] = b'X';
        fs::write(&path, &h).unwrap();
        assert!(scan(&path).unwrap_err().to_string().contains("checksum"));
    }
}
