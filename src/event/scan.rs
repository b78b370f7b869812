//! The fast path for reading an event line: one pass that checks the whole line is JSON
//! and picks out the members a [`Line`] holds, at their places in the line.
//!
//! It gives up (`None`) on anything out of the ordinary — an escaped member name, a
//! `\u` escape of a surrogate, nesting deeper than [`MAX_DEPTH`], a member named twice,
//! `meta` or `payload` not an object, a service name not a string — and the caller then
//! reads the line with serde_json, which decides and explains. So this path never has to
//! be right about an odd line, only when it accepts one: `scan(l) == Some(x)` means
//! serde_json reads `l` as `x` too (a property test compares the two on generated and
//! mutated lines). serde_json checked and skipped most of each line's bytes one at a time
//! and was a quarter of the forwarder's CPU; here the end of each string is found a word
//! at a time, then by a SIMD search, and control characters by one vector pass over the
//! line. The same reader takes request bodies (arrays of events) for the receiver's
//! counting mode ([`scan_array`]).

use std::borrow::Cow;

use super::envelope::{Fields, Line, Meta, Raw};
use super::MAX_DEPTH;
use bitmap::Bitmap;

mod bitmap;

/// Reads `text` (a whole line) as an event envelope, or gives up.
#[cfg(test)]
pub(super) fn scan(text: &str) -> Option<Line<'_>> {
    let mut line = Line::default();
    scan_into(text, &mut line).map(|()| line)
}

/// [`scan`], filling `line` (a default one) in place: a `Line` is some 500 bytes, and
/// moving it out of each call was a tenth of the check.
pub(super) fn scan_into<'a>(text: &'a str, line: &mut Line<'a>) -> Option<()> {
    let mut c = Cursor::new(text);
    c.ws();
    c.line(line)?;
    c.ws();
    (c.i == c.b.len()).then_some(())
}

/// Reads `text`, a JSON array of event envelopes (a request body), handing each to
/// `each`; gives up as [`scan`] does, or when `each` does.
pub(super) fn scan_array<'a>(
    text: &'a str,
    mut each: impl FnMut(Line<'a>) -> Option<()>,
) -> Option<()> {
    let mut c = Cursor::new(text);
    c.ws();
    c.eat(b'[')?;
    c.ws();
    if c.eat(b']').is_none() {
        loop {
            let mut line = Line::default();
            c.line(&mut line)?;
            each(line)?;
            c.ws();
            match c.b.get(c.i)? {
                b',' => {
                    c.i += 1;
                    c.ws();
                }
                b']' => {
                    c.i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    c.ws();
    (c.i == c.b.len()).then_some(())
}

/// Marks a member seen; `None` when it was already (serde refuses a repeated field).
fn once(seen: &mut u32, bit: u32) -> Option<()> {
    (*seen & bit == 0).then(|| *seen |= bit)
}

/// The CADF field `key` names in a line's top level (the flat form), with its bit.
fn cadf_slot<'l, 'a>(line: &'l mut Line<'a>, key: &str) -> Option<(u32, &'l mut Option<Raw<'a>>)> {
    Some(match key {
        "id" => (1, &mut line.id),
        "eventType" => (1 << 1, &mut line.event_type),
        "typeURI" => (1 << 2, &mut line.type_uri),
        "eventTime" => (1 << 3, &mut line.event_time),
        "action" => (1 << 4, &mut line.action),
        "outcome" => (1 << 5, &mut line.outcome),
        "initiator" => (1 << 6, &mut line.initiator),
        "target" => (1 << 7, &mut line.target),
        "observer" => (1 << 8, &mut line.observer),
        "reason" => (1 << 9, &mut line.reason),
        "severity" => (1 << 10, &mut line.severity),
        "measurements" => (1 << 11, &mut line.measurements),
        "measurement" => (1 << 12, &mut line.measurement),
        _ => return None,
    })
}

/// The same, in a `payload`.
fn field_slot<'l, 'a>(f: &'l mut Fields<'a>, key: &str) -> Option<(u32, &'l mut Option<Raw<'a>>)> {
    Some(match key {
        "id" => (1, &mut f.id),
        "eventType" => (1 << 1, &mut f.event_type),
        "typeURI" => (1 << 2, &mut f.type_uri),
        "eventTime" => (1 << 3, &mut f.event_time),
        "action" => (1 << 4, &mut f.action),
        "outcome" => (1 << 5, &mut f.outcome),
        "initiator" => (1 << 6, &mut f.initiator),
        "target" => (1 << 7, &mut f.target),
        "observer" => (1 << 8, &mut f.observer),
        "reason" => (1 << 9, &mut f.reason),
        "severity" => (1 << 10, &mut f.severity),
        "measurements" => (1 << 11, &mut f.measurements),
        "measurement" => (1 << 12, &mut f.measurement),
        _ => return None,
    })
}

/// Where the first `"` or `\\` in `b` is. Most strings of an event are short (member
/// names, enumerated values): their ends are found a word at a time, the longer ones'
/// by a SIMD search, whose start-up cost a short string would not repay.
fn quote_or_backslash(b: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    const QUOTES: u64 = ONES * b'"' as u64;
    const BACKSLASHES: u64 = ONES * b'\\' as u64;
    // A byte of `x` is zero where `(x - ONES) & !x` has its high bit set; bytes above the
    // first zero may be flagged wrongly, so only the lowest flag is read.
    let zero_bytes = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let mut i = 0;
    while i < 64 {
        let Some(word) = b.get(i..i + 8) else { break };
        let w = u64::from_le_bytes(word.try_into().expect("8 bytes"));
        let found = zero_bytes(w ^ QUOTES) | zero_bytes(w ^ BACKSLASHES);
        if found != 0 {
            return Some(i + found.trailing_zeros() as usize / 8);
        }
        i += 8;
    }
    memchr::memchr2(b'"', b'\\', &b[i..]).map(|at| i + at)
}

struct Cursor<'a> {
    text: &'a str,
    b: &'a [u8],
    i: usize,
    /// Where the `"` and `\\` are; whether the line has control characters at all (tabs
    /// as whitespace, or invalid ones in strings): only then are strings searched for them.
    map: Bitmap,
}

impl<'a> Cursor<'a> {
    fn new(text: &'a str) -> Self {
        let b = text.as_bytes();
        Cursor {
            text,
            b,
            i: 0,
            map: Bitmap::new(b),
        }
    }

    /// An event envelope: an object whose members a [`Line`] holds are picked out into
    /// `line`.
    fn line(&mut self, line: &mut Line<'a>) -> Option<()> {
        let mut seen = 0u32;
        self.object(1, |c, key| {
            match key {
                "meta" => {
                    once(&mut seen, 1 << 13)?;
                    line.meta = c.meta()?;
                }
                "payload" => {
                    once(&mut seen, 1 << 14)?;
                    line.payload = c.fields()?;
                }
                "logSourceCRN" => {
                    once(&mut seen, 1 << 15)?;
                    line.log_source_crn = c.raw(2)?;
                }
                _ => {
                    let Some((bit, slot)) = cadf_slot(line, key) else {
                        return c.value(2);
                    };
                    once(&mut seen, bit)?;
                    *slot = c.raw(2)?;
                }
            }
            Some(())
        })
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.b.get(self.i) == Some(&byte)).then(|| self.i += 1)
    }

    /// An object's members, `member` reading each value (the cursor is at the value);
    /// `depth` is the object's own.
    fn object(
        &mut self,
        depth: usize,
        mut member: impl FnMut(&mut Self, &'a str) -> Option<()>,
    ) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.eat(b'{')?;
        self.ws();
        if self.eat(b'}').is_some() {
            return Some(());
        }
        loop {
            let start = self.i + 1;
            let escaped = self.string()?;
            let key = &self.text[start..self.i - 1];
            if escaped {
                return None;
            }
            self.ws();
            self.eat(b':')?;
            self.ws();
            member(self, key)?;
            self.ws();
            match self.b.get(self.i)? {
                b',' => {
                    self.i += 1;
                    self.ws();
                }
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// Any value, checked and passed over; `depth` is the value's own if it nests.
    fn value(&mut self, depth: usize) -> Option<()> {
        match *self.b.get(self.i)? {
            b'"' => self.string().map(|_| ()),
            b'{' => self.object(depth, |c, _| c.value(depth + 1)),
            b'[' => self.array(depth),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    /// A value kept as it is written; `null` reads as absent, as serde reads it into an
    /// `Option`.
    fn raw(&mut self, depth: usize) -> Option<Option<Raw<'a>>> {
        let start = self.i;
        self.value(depth)?;
        let text = &self.text[start..self.i];
        Some((text != "null").then(|| Raw::new(text)))
    }

    fn array(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.eat(b'[')?;
        self.ws();
        if self.eat(b']').is_some() {
            return Some(());
        }
        loop {
            self.value(depth + 1)?;
            self.ws();
            match self.b.get(self.i)? {
                b',' => {
                    self.i += 1;
                    self.ws();
                }
                b']' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        self.b[self.i..]
            .starts_with(word)
            .then(|| self.i += word.len())
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Option<()> {
        let _ = self.eat(b'-');
        match *self.b.get(self.i)? {
            b'0' => self.i += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.eat(b'.').is_some() {
            self.b.get(self.i).filter(|d| d.is_ascii_digit())?;
            self.digits();
        }
        if let Some(b'e' | b'E') = self.b.get(self.i) {
            self.i += 1;
            if let Some(b'+' | b'-') = self.b.get(self.i) {
                self.i += 1;
            }
            self.b.get(self.i).filter(|d| d.is_ascii_digit())?;
            self.digits();
        }
        Some(())
    }

    fn digits(&mut self) {
        while self.b.get(self.i).is_some_and(u8::is_ascii_digit) {
            self.i += 1;
        }
    }

    /// A string, from its opening quote; returns whether it holds escapes.
    #[inline(always)]
    fn string(&mut self) -> Option<bool> {
        self.eat(b'"')?;
        let b = self.b;
        let mut escaped = false;
        loop {
            let start = self.i;
            self.i = self.map.next(b, start)?;
            if self.map.controls && b[start..self.i].iter().any(|&c| c < 0x20) {
                return None;
            }
            if b[self.i] == b'"' {
                self.i += 1;
                return Some(escaped);
            }
            escaped = true;
            self.escape()?;
        }
    }

    /// An escape, from its backslash. A `\u` escape of a surrogate gives up: whether it
    /// is accepted depends on what serde reads the string into.
    fn escape(&mut self) -> Option<()> {
        match *self.b.get(self.i + 1)? {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {
                self.i += 2;
                Some(())
            }
            b'u' => {
                let hex = self.text.get(self.i + 2..self.i + 6)?;
                let unit = u16::from_str_radix(hex, 16).ok()?;
                if !hex.bytes().all(|h| h.is_ascii_hexdigit()) || (0xd800..0xe000).contains(&unit) {
                    return None;
                }
                self.i += 6;
                Some(())
            }
            _ => None,
        }
    }

    /// `meta`: an object (or null) whose routing members are picked out.
    fn meta(&mut self) -> Option<Option<Meta<'a>>> {
        if self.b.get(self.i) == Some(&b'n') {
            self.literal(b"null")?;
            return Some(None);
        }
        let mut meta = Meta::default();
        let mut seen = 0u32;
        self.object(2, |c, key| {
            let (bit, slot) = match key {
                "serviceProviderName" => {
                    once(&mut seen, 1)?;
                    meta.service = c.service()?;
                    return Some(());
                }
                "userAccountIds" => (2, &mut meta.user_account_ids),
                "userSpaceId" => (4, &mut meta.user_space_id),
                "userSpaceRegion" => (8, &mut meta.user_space_region),
                _ => return c.value(3),
            };
            once(&mut seen, bit)?;
            *slot = c.raw(3)?;
            Some(())
        })?;
        Some(Some(meta))
    }

    /// `meta.serviceProviderName`: a string (borrowed unless escaped) or null.
    fn service(&mut self) -> Option<Option<Cow<'a, str>>> {
        if self.b.get(self.i) == Some(&b'n') {
            self.literal(b"null")?;
            return Some(None);
        }
        let start = self.i;
        let escaped = self.string()?;
        let text = &self.text[start..self.i];
        Some(Some(if escaped {
            Cow::Owned(serde_json::from_str(text).ok()?)
        } else {
            Cow::Borrowed(&text[1..text.len() - 1])
        }))
    }

    /// `payload`: an object (or null) whose CADF members are picked out.
    fn fields(&mut self) -> Option<Option<Fields<'a>>> {
        if self.b.get(self.i) == Some(&b'n') {
            self.literal(b"null")?;
            return Some(None);
        }
        let mut fields = Fields::default();
        let mut seen = 0u32;
        self.object(2, |c, key| {
            let Some((bit, slot)) = field_slot(&mut fields, key) else {
                return c.value(3);
            };
            once(&mut seen, bit)?;
            *slot = c.raw(3)?;
            Some(())
        })?;
        Some(Some(fields))
    }
}

#[cfg(test)]
mod tests;
