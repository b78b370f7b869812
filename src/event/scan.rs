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
//! and was a quarter of the forwarder's CPU; here the end of each string is found by a
//! SIMD search, and control characters by one vector pass over the line.

use std::borrow::Cow;

use super::envelope::{Fields, Line, Meta, Raw};
use super::MAX_DEPTH;

/// Reads `text` (a whole line) as an event envelope, or gives up.
pub(super) fn scan(text: &str) -> Option<Line<'_>> {
    let b = text.as_bytes();
    // Counted without an early exit, so that it compiles to vector instructions.
    let controls = b.iter().fold(0u8, |n, &c| n | u8::from(c < 0x20)) != 0;
    let mut c = Cursor {
        text,
        b,
        i: 0,
        controls,
    };
    c.ws();
    let mut line = Line::default();
    let mut seen = 0u32;
    c.object(1, |c, key| {
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
                let Some((bit, slot)) = cadf_slot(&mut line, key) else {
                    return c.value(2);
                };
                once(&mut seen, bit)?;
                *slot = c.raw(2)?;
            }
        }
        Some(())
    })?;
    c.ws();
    (c.i == c.b.len()).then_some(line)
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
        _ => return None,
    })
}

struct Cursor<'a> {
    text: &'a str,
    b: &'a [u8],
    i: usize,
    /// Whether the line has control characters at all (tabs as whitespace, or invalid
    /// ones in strings): only then are strings searched for them.
    controls: bool,
}

impl<'a> Cursor<'a> {
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
    fn string(&mut self) -> Option<bool> {
        self.eat(b'"')?;
        let b = self.b;
        let mut escaped = false;
        loop {
            let start = self.i;
            self.i += memchr::memchr2(b'"', b'\\', &b[start..])?;
            if self.controls && b[start..self.i].iter().any(|&c| c < 0x20) {
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
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What serde_json reads, as the checker's slow path does.
    fn careful(text: &str) -> Option<Line<'_>> {
        if super::super::too_deep(text.as_bytes()).is_some() {
            return None;
        }
        serde_json::from_str(text).ok()
    }

    /// The fast path reads `text` as serde does, or gives up; and it gives up on a line
    /// serde reads only for the odd cases it is meant to (escapes, `meta` or `payload` as
    /// an array, which serde reads positionally), so the property is not vacuous.
    fn agrees(text: &str) -> Result<(), TestCaseError> {
        let careful = careful(text);
        match scan(text) {
            Some(fast) => prop_assert_eq!(Some(fast), careful, "{}", text),
            None if careful.is_some() => {
                let array = |v: serde_json::Value| v["meta"].is_array() || v["payload"].is_array();
                let odd = text.contains('\\') || serde_json::from_str(text).is_ok_and(array);
                prop_assert!(odd, "gave up on a plain line serde reads: {}", text);
            }
            None => {}
        }
        Ok(())
    }

    const NOISY: &str = r#"{"meta":{"serviceProviderName":"svc","serviceProviderRegion":"ng","userAccountIds":["a1"],"userSpaceId":"s","userSpaceRegion":"r"},"payload":{"initiator":{"id":"u@example.com","typeURI":"security/account/user","credential":{"type":"user"}},"target":{"id":"crn:v1:bluemix:public:svc:dal09:a/1::","typeURI":"svc/worker"},"action":"svc.worker.create","outcome":"success","reason":{"reasonCode":200},"severity":"normal","eventTime":"2017-10-19 19:07:50.32 +0000 UTC","requestData":{"path":"/v2/x?a=1\u0026b=2","n":[1,-2.5e3,0,true,false,null]}}}"#;

    #[test]
    fn ordinary_lines_take_the_fast_path_and_read_as_serde_reads_them() {
        let flat = r#" {"meta":{"serviceProviderName":"s\u00e9"},"logSourceCRN":"crn:x","id":"e1","eventTime":"2020-01-01T00:00:00Z","action":"s.t.read","outcome":"success","initiator":{},"target":{},"observer":null} "#;
        for line in [NOISY, flat, r#"{}"#, r#"{"meta":null,"payload":null}"#] {
            let fast = scan(line).unwrap_or_else(|| panic!("gave up on {line}"));
            assert_eq!(Some(fast), careful(line));
        }
        let line = scan(NOISY).unwrap();
        assert_eq!(line.meta.unwrap().service.as_deref(), Some("svc"));
        assert_eq!(
            line.payload.unwrap().action.unwrap().get(),
            r#""svc.worker.create""#
        );
    }

    #[test]
    fn odd_lines_are_left_to_serde() {
        for line in [
            r#"{"meta":{},"meta":{}}"#,
            r#"{"payload":{"id":1,"id":2}}"#,
            r#"{"met\u0061":{}}"#,
            r#"{"x":"\ud800"}"#,
            r#"{"meta":[]}"#,
            r#"{"meta":{"serviceProviderName":5}}"#,
            r#"{"x":01}"#,
            r#"{"x":1.}"#,
            r#"{"x":"a	b"}"#,
            r#"{"x":1} x"#,
            r#"{"x":[1,]}"#,
        ] {
            assert!(scan(line).is_none(), "{line}");
        }
        let deep = format!("{{\"x\":{}1{}}}", "[".repeat(63), "]".repeat(63));
        assert!(scan(&deep).is_some());
        let deeper = format!("{{\"x\":{}1{}}}", "[".repeat(64), "]".repeat(64));
        assert!(scan(&deeper).is_none());
    }

    /// Snippets that make or break JSON, for mutating lines.
    const SNIPPETS: &[&str] = &[
        "\"",
        "\\",
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        " ",
        "\t",
        "null",
        "true",
        "0",
        "01",
        "-",
        "1e",
        ".5",
        "\"meta\":{},",
        "\"payload\":{\"id\":1},",
        "\"id\":\"x\",",
        "\\u0041",
        "\\ud83d",
        "\\x",
        "\u{1}",
        "é",
        "\"serviceProviderName\":null,",
        "\"eventTime\":",
        "\"observer\":{},",
    ];

    fn leaf() -> impl Strategy<Value = serde_json::Value> {
        prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::Bool),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(serde_json::Value::from),
            "[a-z\"\\\\/\u{1}-\u{1f}é😀 ]{0,12}".prop_map(serde_json::Value::from),
        ]
    }

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            proptest::sample::select(vec![
                "meta",
                "payload",
                "logSourceCRN",
                "id",
                "eventType",
                "typeURI",
                "eventTime",
                "action",
                "outcome",
                "initiator",
                "target",
                "observer",
                "reason",
                "severity",
                "measurements",
                "serviceProviderName",
                "userAccountIds",
                "userSpaceId",
                "userSpaceRegion",
            ])
            .prop_map(String::from),
            "[a-z\"]{0,4}",
        ]
    }

    fn value() -> impl Strategy<Value = serde_json::Value> {
        leaf().prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(serde_json::Value::Array),
                prop::collection::vec((key(), inner), 0..6)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn the_fast_path_reads_generated_json_as_serde_does(
            members in prop::collection::vec((key(), value()), 0..8),
            pretty in any::<bool>(),
        ) {
            let v = serde_json::Value::Object(members.into_iter().collect());
            let text = if pretty {
                serde_json::to_string_pretty(&v).unwrap()
            } else {
                serde_json::to_string(&v).unwrap()
            };
            agrees(&text)?;
        }

        #[test]
        fn the_fast_path_never_accepts_what_serde_refuses(
            edits in prop::collection::vec((any::<prop::sample::Index>(), 0..4usize, prop::sample::select(SNIPPETS)), 1..4),
        ) {
            let mut bytes = NOISY.as_bytes().to_vec();
            for (at, cut, snippet) in edits {
                let at = at.index(bytes.len() + 1);
                let end = (at + cut).min(bytes.len());
                bytes.splice(at..end, snippet.bytes());
            }
            if let Ok(text) = std::str::from_utf8(&bytes) {
                agrees(text)?;
            }
        }
    }
}
