//! Records in memory on their way into a chunk ([`Framed`]) and back out of one
//! ([`Records`]); the framing on disk is [`super::chunk`]'s.

use std::ops::Range;

use bytes::Bytes;

/// Records framed as a chunk file holds them (length, CRC32C, payload each) but for the
/// CRCs, built once by the writer: appending them to a chunk in memory is then a single
/// copy, and a chunk file gets its CRCs as they are written ([`super::chunk::with_crcs`]);
/// most chunks never reach the disk, and their CRCs were 2–3 % of the forwarder.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Framed {
    bytes: Vec<u8>,
    /// Where each record's frame ends in `bytes` (cutting into pieces reads these, not
    /// the frames spread over megabytes).
    ends: Vec<usize>,
}

impl Framed {
    /// No records yet, with room for `bytes` bytes of framed records.
    pub fn with_capacity(bytes: usize) -> Self {
        Framed {
            bytes: Vec::with_capacity(bytes),
            ends: Vec::new(),
        }
    }

    /// Frames `record` after the others.
    pub fn push(&mut self, record: &[u8]) {
        let _ = self.push_with(|out| {
            out.extend_from_slice(record);
            Ok::<(), ()>(())
        });
    }

    /// Frames after the others the record `write` appends to the buffer it is given (its
    /// frame's header is filled in after); nothing if `write` fails. So a record can be
    /// built in place rather than built aside and copied.
    pub fn push_with<T, E>(
        &mut self,
        write: impl FnOnce(&mut Vec<u8>) -> Result<T, E>,
    ) -> Result<T, E> {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(&[0; 8]);
        match write(&mut self.bytes) {
            Ok(done) => {
                let len = self.bytes.len() - start - 8;
                let len = u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes();
                self.bytes[start..start + 4].copy_from_slice(&len);
                self.ends.push(self.bytes.len());
                Ok(done)
            }
            Err(e) => {
                self.bytes.truncate(start);
                Err(e)
            }
        }
    }

    /// Removes the last record, appending its payload to `out`.
    pub fn pop_into(&mut self, out: &mut Vec<u8>) {
        if self.ends.pop().is_some() {
            let start = self.ends.last().copied().unwrap_or(0);
            out.extend_from_slice(&self.bytes[start + 8..]);
            self.bytes.truncate(start);
        }
    }

    /// The last record's payload.
    pub fn last(&self) -> Option<&[u8]> {
        let end = *self.ends.last()?;
        let start = self.ends.len().checked_sub(2).map_or(0, |i| self.ends[i]);
        self.bytes.get(start + 8..end)
    }

    /// Number of records.
    pub fn records(&self) -> usize {
        self.ends.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The framed bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The records' payloads, in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(&self.ends)
            .map(|(start, end)| &self.bytes[start + 8..*end])
    }

    /// Moves `other`'s records after these.
    pub fn append(&mut self, other: &Framed) {
        let base = self.bytes.len();
        self.bytes.extend_from_slice(&other.bytes);
        self.ends.extend(other.ends.iter().map(|end| base + end));
    }

    /// Keeps the records for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&[u8]) -> bool) {
        let mut kept = Framed::default();
        for record in self.iter() {
            if keep(record) {
                kept.push(record);
            }
        }
        *self = kept;
    }

    /// Cuts the framed bytes into pieces of at most `limit` bytes (a record larger than
    /// that alone), as byte ranges of [`Framed::as_bytes`] with their record counts.
    pub fn pieces(&self, limit: usize) -> Vec<(std::ops::Range<usize>, usize)> {
        let mut pieces = Vec::new();
        let (mut start, mut at, mut count) = (0, 0, 0);
        for &end in &self.ends {
            if count > 0 && end - start > limit {
                pieces.push((start..at, count));
                (start, count) = (at, 0);
            }
            at = end;
            count += 1;
        }
        if count > 0 {
            pieces.push((start..at, count));
        }
        pieces
    }
}

/// The records of a chunk as read back: the file's bytes and where each payload lies in
/// them (nothing copied or allocated per record).
#[derive(Clone, Default)]
pub struct Records {
    data: Bytes,
    /// Payload ranges in `data`.
    spans: Vec<Range<usize>>,
    /// Where `data` reads as JSON arrays of `per_body` records each, when it does (see
    /// [`Records::framed_as_json`]).
    bodies: Vec<Range<usize>>,
    per_body: usize,
}

/// What the 8-byte frame header of record `index` becomes when a chunk is laid out as
/// request bodies of `per_body` records (see [`Records::framed_as_json`]).
pub(super) fn separator(index: usize, per_body: usize) -> &'static [u8; 8] {
    match index {
        0 => b"[       ",
        _ if index.is_multiple_of(per_body.max(1)) => b"]      [",
        _ => b",       ",
    }
}

impl Records {
    /// The records at `spans` of `data`.
    pub(super) fn new(data: Vec<u8>, spans: Vec<Range<usize>>) -> Self {
        Records {
            data: Bytes::from(data),
            spans,
            bodies: Vec::new(),
            per_body: usize::MAX,
        }
    }

    /// The records of `data` whose frames run, intact and one after the other, from
    /// `frames_start` to its end (each payload at one of `spans`), turned in place into
    /// JSON arrays of `per_body` records each (the last may hold fewer): each 8-byte frame
    /// header is overwritten with `,` and seven spaces, the first with `[` and seven
    /// spaces, one between two bodies with `]      [` (each body takes its part of it),
    /// and a `]` is added. A request body is then a slice of this buffer, not a copy of
    /// every record (2–3 % of the forwarder's CPU), at 7 bytes of whitespace per record.
    pub(super) fn framed_as_json(
        mut data: Vec<u8>,
        spans: Vec<Range<usize>>,
        frames_start: usize,
        per_body: usize,
    ) -> Self {
        if let Some(first) = spans.first() {
            debug_assert_eq!(first.start - 8, frames_start);
        }
        for (i, span) in spans.iter().enumerate() {
            data[span.start - 8..span.start].copy_from_slice(separator(i, per_body));
        }
        Self::laid_out_as_json(data, spans, per_body)
    }

    /// Records whose frame headers already hold their [`separator`]s (written for
    /// `per_body` records per body): the closing `]` is added and the bodies noted.
    pub(super) fn laid_out_as_json(
        mut data: Vec<u8>,
        spans: Vec<Range<usize>>,
        per_body: usize,
    ) -> Self {
        let per = per_body.max(1);
        let header = |span: &Range<usize>| span.start - 8;
        let mut bodies = Vec::new();
        if !spans.is_empty() {
            data.push(b']');
            for (p, part) in spans.chunks(per).enumerate() {
                let start = header(&part[0]) + if p == 0 { 0 } else { 7 };
                let end = spans
                    .get((p + 1) * per)
                    .map_or(data.len(), |next| header(next) + 1);
                bodies.push(start..end);
            }
        }
        Records {
            data: Bytes::from(data),
            spans,
            bodies,
            per_body: per,
        }
    }

    /// Records `part` as a JSON array without copying them, when the chunk was read
    /// whole from its file and `part` is one of the bodies it was laid out in.
    pub fn json(&self, part: Range<usize>) -> Option<Bytes> {
        let per = self.per_body.max(1);
        let whole = part.start.is_multiple_of(per)
            && part.end == part.start.saturating_add(per).min(self.len());
        let index = part.start / per;
        self.bodies
            .get(index)
            .filter(|_| whole)
            .map(|range| self.data.slice(range.clone()))
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Record `i`.
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        self.spans.get(i).map(|s| &self.data[s.clone()])
    }

    /// The records, in order.
    pub fn iter(&self) -> Iter<'_> {
        self.range(0..self.len())
    }

    /// Records `range`, in order.
    pub fn range(&self, range: Range<usize>) -> Iter<'_> {
        Iter {
            data: &self.data,
            spans: self.spans[range].iter(),
        }
    }

    /// Bytes of the payloads of records `range`.
    pub fn payload_bytes(&self, range: Range<usize>) -> usize {
        self.spans[range].iter().map(ExactSizeIterator::len).sum()
    }
}

impl std::fmt::Debug for Records {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.iter().map(String::from_utf8_lossy))
            .finish()
    }
}

/// Equal when the payloads are, wherever they lie.
impl PartialEq for Records {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for Records {}

impl<R: AsRef<[u8]>> PartialEq<Vec<R>> for Records {
    fn eq(&self, other: &Vec<R>) -> bool {
        self.iter().eq(other.iter().map(AsRef::as_ref))
    }
}

impl<R: AsRef<[u8]>, const N: usize> PartialEq<[R; N]> for Records {
    fn eq(&self, other: &[R; N]) -> bool {
        self.iter().eq(other.iter().map(AsRef::as_ref))
    }
}

impl<R: AsRef<[u8]>> FromIterator<R> for Records {
    fn from_iter<I: IntoIterator<Item = R>>(records: I) -> Self {
        let (mut data, mut spans) = (Vec::new(), Vec::new());
        for r in records {
            let start = data.len();
            data.extend_from_slice(r.as_ref());
            spans.push(start..data.len());
        }
        Records::new(data, spans)
    }
}

impl<'a> IntoIterator for &'a Records {
    type Item = &'a [u8];
    type IntoIter = Iter<'a>;
    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// The payloads of [`Records`], in order.
#[derive(Debug, Clone)]
pub struct Iter<'a> {
    data: &'a [u8],
    spans: std::slice::Iter<'a, Range<usize>>,
}

impl<'a> Iterator for Iter<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        self.spans.next().map(|s| &self.data[s.clone()])
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.spans.size_hint()
    }
}

impl ExactSizeIterator for Iter<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::chunk;
    use std::io::Write;

    #[test]
    fn framed_records_cut_into_pieces_within_the_limit_and_read_back_whole() {
        let mut a = Framed::default();
        let mut b = Framed::default();
        for (i, r) in ["one", "two", "three", "a longer fourth record"]
            .iter()
            .enumerate()
        {
            if i < 2 { &mut a } else { &mut b }.push(r.as_bytes());
        }
        a.append(&b);
        let all: Vec<&[u8]> = a.iter().collect();
        assert_eq!(
            all,
            [&b"one"[..], b"two", b"three", b"a longer fourth record"]
        );
        // 11 + 11 + 13 + 30 bytes framed: 24 holds two, the last (30) goes alone.
        let pieces = a.pieces(24);
        assert_eq!(pieces, [(0..22, 2), (22..35, 1), (35..65, 1)]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.chunk");
        let (mut file, _) = chunk::create(&path, "svc", 1).unwrap();
        for (range, _) in &pieces {
            file.write_all(&chunk::with_crcs(&a.as_bytes()[range.clone()]))
                .unwrap();
        }
        assert_eq!(
            chunk::scan(&path)
                .unwrap()
                .records
                .iter()
                .collect::<Vec<_>>(),
            all
        );
        a.retain(|r| r.len() == 3);
        assert_eq!(a.iter().collect::<Vec<_>>(), [&b"one"[..], b"two"]);
        assert_eq!(a.pieces(1 << 20), [(0..22, 2)]);
    }

    #[test]
    fn a_chunk_read_whole_is_laid_out_as_its_request_bodies() {
        let events = [
            r#"{"id":"a"}"#,
            r#"{"id":"b","x":[1,2]}"#,
            "{}",
            r#"{"id":"d"}"#,
            r#""e""#,
        ];
        let mut framed = Framed::default();
        for e in events {
            framed.push(e.as_bytes());
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.chunk");
        let (mut file, _) = chunk::create(&path, "svc", 1).unwrap();
        file.write_all(&chunk::with_crcs(framed.as_bytes()))
            .unwrap();
        let parse =
            |body: Bytes| -> Vec<serde_json::Value> { serde_json::from_slice(&body).unwrap() };
        let expected = |part: Range<usize>| -> Vec<serde_json::Value> {
            events[part]
                .iter()
                .map(|e| serde_json::from_str(e).unwrap())
                .collect()
        };
        // One body of all (the default), and bodies of two records each.
        let whole = chunk::scan(&path).unwrap().records;
        assert_eq!(parse(whole.json(0..5).expect("one body")), expected(0..5));
        assert!(whole.json(0..2).is_none(), "not laid out in parts");
        let records = chunk::scan_for_bodies(&path, 2).unwrap().records;
        for part in [0..2, 2..4, 4..5] {
            let body = records.json(part.clone()).expect("a body as laid out");
            assert_eq!(parse(body), expected(part));
        }
        assert!(records.json(1..3).is_none() && records.json(0..5).is_none());
        assert_eq!(records, events, "the payloads are untouched");
        // A damaged record: the intact ones are read, but not as bodies.
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let damaged = chunk::scan_for_bodies(&path, 2).unwrap().records;
        assert_eq!(damaged.len(), 4);
        assert!(damaged.json(0..2).is_none());
    }

    #[test]
    fn records_read_back_compare_by_payload() {
        let built: Records = ["a", "bc"].into_iter().collect();
        let read = Records::new(b"..a..bc".to_vec(), vec![2..3, 5..7]);
        assert_eq!(built, read);
        assert_eq!(read.get(1), Some(&b"bc"[..]));
        assert_eq!(read.payload_bytes(0..2), 3);
        assert_ne!(built, ["a"]);
    }
}
