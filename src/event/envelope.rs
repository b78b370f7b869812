//! Reading the parts of an event line that routing and checks need — and nothing else —
//! while remembering where each sits in the line, so that the few changes at-forwarder
//! makes (an added id, a normalised time) are spliced into the original bytes instead of
//! re-serialising the event.

use serde::Deserialize;
use serde_json::value::RawValue;

/// A JSON value as it is written in the line: its text, borrowed (it knows its place, so
/// edits can be spliced next to it). Read by serde as a [`RawValue`], or by the fast
/// path of [`super::scan`].
#[derive(Clone, Copy)]
pub(super) struct Raw<'a>(&'a str);

impl<'a> Raw<'a> {
    /// `text`, which must be one whole JSON value.
    pub(super) fn new(text: &'a str) -> Self {
        Raw(text)
    }

    /// The value's text.
    pub(super) fn get(&self) -> &'a str {
        self.0
    }
}

impl std::fmt::Debug for Raw<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{:p}", self.0, self.0.as_ptr())
    }
}

/// The same text at the same place.
impl PartialEq for Raw<'_> {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self.0, other.0)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Raw<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <&'de RawValue>::deserialize(d).map(|r| Raw(r.get()))
    }
}

/// Declares a struct holding, besides the given fields, the CADF fields checks read.
macro_rules! with_cadf_fields {
    ($(#[$m:meta])* $vis:vis struct $name:ident<'a> { $($extra:tt)* }) => {
        $(#[$m])*
        $vis struct $name<'a> {
            $($extra)*
            #[serde(borrow)]
            pub id: Option<Raw<'a>>,
            #[serde(borrow, rename = "eventType")]
            pub event_type: Option<Raw<'a>>,
            #[serde(borrow, rename = "typeURI")]
            pub type_uri: Option<Raw<'a>>,
            #[serde(borrow, rename = "eventTime")]
            pub event_time: Option<Raw<'a>>,
            #[serde(borrow)]
            pub action: Option<Raw<'a>>,
            #[serde(borrow)]
            pub outcome: Option<Raw<'a>>,
            #[serde(borrow)]
            pub initiator: Option<Raw<'a>>,
            #[serde(borrow)]
            pub target: Option<Raw<'a>>,
            #[serde(borrow)]
            pub observer: Option<Raw<'a>>,
            #[serde(borrow)]
            pub reason: Option<Raw<'a>>,
            #[serde(borrow)]
            pub severity: Option<Raw<'a>>,
            #[serde(borrow)]
            pub measurements: Option<Raw<'a>>,
            /// The singular spelling seed 004's monitor example uses.
            #[serde(borrow)]
            pub measurement: Option<Raw<'a>>,
        }
    };
}

with_cadf_fields! {
    /// The CADF fields of a `payload` (or of the top level, in the flat form).
    #[derive(Debug, Default, Clone, Copy, PartialEq, Deserialize)]
    #[serde(default)]
    pub(super) struct Fields<'a> {}
}

with_cadf_fields! {
    /// A whole line, read in one pass: routing, payload, and the flat form's fields.
    #[derive(Debug, Default, PartialEq, Deserialize)]
    #[serde(default)]
    pub(super) struct Line<'a> {
        #[serde(borrow)]
        pub meta: Option<Meta<'a>>,
        #[serde(borrow)]
        pub payload: Option<Fields<'a>>,
        #[serde(borrow, rename = "logSourceCRN")]
        pub log_source_crn: Option<Raw<'a>>,
    }
}

impl<'a> Line<'a> {
    /// The flat form's CADF fields.
    pub(super) fn top_fields(&self) -> Fields<'a> {
        Fields {
            id: self.id,
            event_type: self.event_type,
            type_uri: self.type_uri,
            event_time: self.event_time,
            action: self.action,
            outcome: self.outcome,
            initiator: self.initiator,
            target: self.target,
            observer: self.observer,
            reason: self.reason,
            severity: self.severity,
            measurements: self.measurements,
            measurement: self.measurement,
        }
    }
}

/// Just the routing object (for `cadf_validation off`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Routing<'a> {
    #[serde(borrow)]
    pub meta: Option<Meta<'a>>,
}

/// The envelope's parts as raw values: read only to explain why a line failed to parse.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Parts<'a> {
    #[serde(borrow)]
    pub meta: Option<Raw<'a>>,
    #[serde(borrow)]
    pub payload: Option<Raw<'a>>,
}

/// The routing object.
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub(super) struct Meta<'a> {
    #[serde(borrow, rename = "serviceProviderName")]
    pub service: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, rename = "userAccountIds")]
    pub user_account_ids: Option<Raw<'a>>,
    #[serde(borrow, rename = "userSpaceId")]
    pub user_space_id: Option<Raw<'a>>,
    #[serde(borrow, rename = "userSpaceRegion")]
    pub user_space_region: Option<Raw<'a>>,
}

/// Byte offset of a raw value within the line it was parsed from.
pub(super) fn offset_in(line: &str, raw: Raw<'_>) -> usize {
    raw.get().as_ptr() as usize - line.as_ptr() as usize
}

/// A raw value that is a non-empty string, as that string.
pub(super) fn string<'a>(raw: Option<Raw<'a>>) -> Option<std::borrow::Cow<'a, str>> {
    let s = text_of(raw?)?;
    (!s.trim().is_empty()).then_some(s)
}

/// A raw value read as a string (`None` if it is not one): borrowed from the line when
/// it holds no escape, as most do, else decoded by serde_json (which was 5 % of the
/// check, for `eventTime` and `meta.userAccountIds` in every event).
pub(super) fn text_of(raw: Raw<'_>) -> Option<std::borrow::Cow<'_, str>> {
    let text = raw.get();
    if let Some(inner) = plain_string(text) {
        return Some(std::borrow::Cow::Borrowed(inner));
    }
    serde_json::from_str(text).ok()
}

/// The content of `text` when it is a JSON string without escapes: quoted, with no `"`
/// or `\` inside.
pub(super) fn plain_string(text: &str) -> Option<&str> {
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    memchr::memchr2(b'"', b'\\', inner.as_bytes())
        .is_none()
        .then_some(inner)
}

/// Whether a raw value is present and not `null`.
pub(super) fn present(raw: Option<Raw<'_>>) -> bool {
    raw.is_some_and(|r| r.get() != "null")
}

/// Whether a raw value is a JSON object (possibly empty).
pub(super) fn is_object(raw: Raw<'_>) -> bool {
    raw.get().starts_with('{')
}

/// Where members are added to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Anchor {
    /// Right after the object's `{`, at this offset.
    ObjectStart(usize),
    /// Before the member whose key starts (with its quote) at this offset.
    BeforeKey(usize),
}

/// Where the member whose value starts at `value_at` begins, when its key is exactly
/// `"key"` (an escaped key gives `None`).
pub(super) fn key_start(line: &str, value_at: usize, key: &str) -> Option<usize> {
    let before = line[..value_at].trim_end().strip_suffix(':')?.trim_end();
    let before = before
        .strip_suffix('"')?
        .strip_suffix(key)?
        .strip_suffix('"')?;
    Some(before.len())
}

/// Longest text an edit carries beyond the constant members: `"id":"<uuid>"` (43 bytes)
/// and a quoted normal time (30 bytes) fit.
const SHORT: usize = 64;

/// A text built for one line (an id member, a normalised time), held inline: a line's
/// edits allocate nothing.
#[derive(Clone, Copy)]
pub(super) struct Short {
    buf: [u8; SHORT],
    len: usize,
}

impl Default for Short {
    fn default() -> Self {
        Short {
            buf: [0; SHORT],
            len: 0,
        }
    }
}

impl Short {
    pub(super) fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl std::fmt::Debug for Short {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.as_bytes()))
    }
}

impl std::fmt::Write for Short {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        self.buf
            .get_mut(self.len..end)
            .ok_or(std::fmt::Error)?
            .copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// What an edit writes.
#[derive(Debug, Clone, Copy)]
pub(super) enum Text {
    /// A constant, such as a default member.
    Static(&'static str),
    /// Built for this line.
    Short(Short),
}

impl Text {
    fn as_bytes(&self) -> &[u8] {
        match self {
            Text::Static(s) => s.as_bytes(),
            Text::Short(s) => s.as_bytes(),
        }
    }
}

/// One edit: bytes `start..end` replaced by `text`; for an added member, whether the
/// object already had members.
#[derive(Debug, Clone, Copy)]
struct Edit {
    start: usize,
    end: usize,
    text: Text,
    member: Option<bool>,
}

/// At most this many edits per line: four added members and a replaced time.
const MAX_EDITS: usize = 6;

/// Edits to make to a line: members added to objects, and replacements.
#[derive(Debug)]
pub(super) struct Edits {
    edits: [Edit; MAX_EDITS],
    len: usize,
}

impl Default for Edits {
    fn default() -> Self {
        let none = Edit {
            start: 0,
            end: 0,
            text: Text::Static(""),
            member: None,
        };
        Edits {
            edits: [none; MAX_EDITS],
            len: 0,
        }
    }
}

impl Edits {
    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn push(&mut self, edit: Edit) {
        // The checker makes at most MAX_EDITS edits per line; more would be a bug there.
        assert!(
            self.len < MAX_EDITS,
            "more than {MAX_EDITS} edits to a line"
        );
        self.edits[self.len] = edit;
        self.len += 1;
    }

    /// Adds a member (`"key":value`, written whole) to an object, at `anchor`.
    pub(super) fn insert_member(&mut self, line: &str, anchor: Anchor, member: Text) {
        let (at, comma_after) = match anchor {
            Anchor::ObjectStart(open) => {
                (open + 1, !line[open + 1..].trim_start().starts_with('}'))
            }
            Anchor::BeforeKey(at) => (at, true),
        };
        self.push(Edit {
            start: at,
            end: at,
            text: member,
            member: Some(comma_after),
        });
    }

    /// Replaces `len` bytes at `at`.
    pub(super) fn replace(&mut self, at: usize, len: usize, text: Text) {
        self.push(Edit {
            start: at,
            end: at + len,
            text,
            member: None,
        });
    }

    /// The line with the edits applied, appended to `out`. Members added at one place are
    /// joined with commas, and followed by one when the object had members.
    pub(super) fn apply(&mut self, line: &str, out: &mut Vec<u8>) {
        let edits = &mut self.edits[..self.len];
        edits.sort_by_key(|e| e.start);
        out.reserve(
            line.len()
                + edits
                    .iter()
                    .map(|e| e.text.as_bytes().len() + 1)
                    .sum::<usize>(),
        );
        let mut at = 0;
        let mut i = 0;
        while i < edits.len() {
            let Edit {
                start, end, member, ..
            } = edits[i];
            out.extend_from_slice(&line.as_bytes()[at..start]);
            if let Some(had_members) = member {
                let mut j = i;
                while j < edits.len() && edits[j].start == start && edits[j].member.is_some() {
                    if j > i {
                        out.push(b',');
                    }
                    out.extend_from_slice(edits[j].text.as_bytes());
                    j += 1;
                }
                if had_members {
                    out.push(b',');
                }
                at = start;
                i = j;
            } else {
                out.extend_from_slice(edits[i].text.as_bytes());
                at = end;
                i += 1;
            }
        }
        out.extend_from_slice(&line.as_bytes()[at..]);
    }
}
