//! File identity: is the file at hand the one a saved position belongs to?
//!
//! An identity is the (device, inode) pair, which survives renames, checked against
//! content so that inode reuse and truncate-and-regrow are caught:
//!
//! - the **head**: a hash of the file's first bytes (up to [`HEAD_BYTES`]; fewer while the
//!   file is shorter, with the count kept so the same bytes are hashed again later);
//! - the **marker**: a hash of the [`MARKER_BYTES`] just before the saved offset;
//! - the **birth time**, where the filesystem records one.
//!
//! A saved position is resumed only when all that are known agree; otherwise the file is
//! a different one that took the inode or the path, and is read from its start. A content
//! hash alone never identifies a file: audit files can share their first line.

use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

/// Bytes of a file's head that are hashed.
pub const HEAD_BYTES: u64 = 1024;
/// Bytes before a saved offset that are hashed.
pub const MARKER_BYTES: u64 = 32;

/// (device, inode): the key of a file's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FileKey {
    /// Device id.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
}

impl FileKey {
    /// The key of a file from its metadata.
    pub fn of(meta: &Metadata) -> Self {
        FileKey {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }

    /// 16 big-endian bytes: the key in the position store.
    pub fn to_bytes(self) -> [u8; 16] {
        let mut out = [0; 16];
        out[..8].copy_from_slice(&self.dev.to_be_bytes());
        out[8..].copy_from_slice(&self.ino.to_be_bytes());
        out
    }

    /// The inverse of [`FileKey::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let dev = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
        let ino = u64::from_be_bytes(bytes.get(8..16)?.try_into().ok()?);
        Some(FileKey { dev, ino })
    }
}

impl std::fmt::Display for FileKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.dev, self.ino)
    }
}

/// A hash of a byte range of a file, and how many bytes it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Digest {
    /// FNV-1a 64 of the bytes.
    pub hash: u64,
    /// Number of bytes hashed.
    pub len: u64,
}

/// Hash of the first `min(size, HEAD_BYTES)` bytes.
pub fn head(file: &File, size: u64) -> io::Result<Digest> {
    range_digest(file, 0, size.min(HEAD_BYTES))
}

/// Hash of the first `len` bytes, to compare with a head taken earlier; `None` when the
/// file is now shorter than that.
pub fn head_of_len(file: &File, size: u64, len: u64) -> io::Result<Option<Digest>> {
    if size < len {
        return Ok(None);
    }
    range_digest(file, 0, len).map(Some)
}

/// Hash of the bytes just before `offset` (up to [`MARKER_BYTES`]).
pub fn marker(file: &File, offset: u64) -> io::Result<Digest> {
    let len = offset.min(MARKER_BYTES);
    range_digest(file, offset - len, len)
}

fn range_digest(file: &File, start: u64, len: u64) -> io::Result<Digest> {
    let mut buf = vec![0u8; usize::try_from(len).expect("HEAD_BYTES and MARKER_BYTES are small")];
    file.read_exact_at(&mut buf, start)?;
    Ok(Digest {
        hash: fnv1a(&buf),
        len,
    })
}

/// The file's birth time in nanoseconds since the epoch, where the filesystem keeps one.
pub fn birth_time(meta: &Metadata) -> Option<u128> {
    meta.created()
        .ok()?
        .duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_nanos())
}

/// FNV-1a, 64 bit: stable across versions and platforms, which a persisted hash must be.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn head_and_marker_follow_the_content() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"first line\nsecond line\n").unwrap();
        let h = head(&f, 23).unwrap();
        assert_eq!(h.len, 23);
        assert_eq!(
            head_of_len(&f, 23, 11).unwrap().unwrap(),
            Digest {
                hash: fnv1a(b"first line\n"),
                len: 11
            }
        );
        assert_eq!(head_of_len(&f, 10, 11).unwrap(), None);
        assert_eq!(
            marker(&f, 11).unwrap(),
            Digest {
                hash: fnv1a(b"first line\n"),
                len: 11
            }
        );
        assert_eq!(marker(&f, 0).unwrap().len, 0);
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
    }

    #[test]
    fn keys_round_trip_through_bytes() {
        let k = FileKey {
            dev: 2049,
            ino: 1 << 40,
        };
        assert_eq!(FileKey::from_bytes(&k.to_bytes()), Some(k));
        assert_eq!(FileKey::from_bytes(b"short"), None);
    }
}
