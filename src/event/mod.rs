//! Audit events: the Activity Tracker envelope around a CADF record, checked at the level
//! a source asks for, with the few fields Activity Tracker needs filled in.
//!
//! A line is `{"meta":{…routing…},"payload":{…CADF…}}`, optionally with top-level
//! `logSourceCRN` and `saveServiceCopy`; in the later flat form the CADF fields sit at the
//! top level next to `meta`. Only what routing and the checks need is parsed; the event is
//! forwarded as the bytes the service wrote, except for the changes listed below, which
//! are spliced in place (nothing else is re-serialised, reordered or re-escaped).
//!
//! | level | checks | changes |
//! |---|---|---|
//! | `off` | a JSON object with `meta.serviceProviderName` (it selects the token) | none |
//! | `lenient` (default) | and: a user copy target (`meta.userAccountIds` with exactly one id, or `meta.userSpaceId` with `meta.userSpaceRegion`, or `logSourceCRN`); `action`, `outcome`, `initiator`, `target` and a valid `eventTime` | missing `id` (derived from the file identity, offset and content, so a re-read gives the same id), `eventType` (`activity`), `typeURI` (the CADF event URI), `observer.name` (`ActivityTracker`); `eventTime` normalised when `normalize_time` |
//! | `strict` | and: the CADF and Activity Tracker rules (`event::rules`): `id`, `eventType`, `typeURI`, `observer`, `severity` present; taxonomy values; reason for control and measurements for monitor events; resources with id and typeURI; `service.object.verb` actions; numeric `reason.reasonCode`; CRN shapes | `eventTime` normalised |
//!
//! A line that fails is not forwarded: it goes to the [`dead_letter`] store with its reason.

use std::borrow::Cow;
use std::fmt::Write as _;

use crate::config::source::CadfValidation;
use crate::tail::identity::FileKey;

pub mod dead_letter;
mod envelope;
pub mod filter;
mod id;
pub mod lint;
pub mod members;
mod rules;
mod scan;
pub mod time;

pub use id::{derived_id, ids_and_times, IdAndTime};

use envelope::{
    is_object, offset_in, present, string, Anchor, Edits, Fields, Line, Meta, Parts, Raw, Routing,
    Short, Text,
};

/// The CADF event `typeURI` Activity Tracker expects.
pub const CADF_EVENT_URI: &str = "http://schemas.dmtf.org/cloud/audit/1.0/event";

crate::config::value::config_enum! {
    /// Why a line was not forwarded: the dead-letter reason and the counter's label.
    pub enum Reason {
        /// Not valid UTF-8.
        InvalidUtf8 = "invalid_utf8",
        /// Not JSON, or truncated.
        InvalidJson = "invalid_json",
        /// JSON, but not an object (an array, a string …).
        NotAnObject = "not_an_object",
        /// No `meta.serviceProviderName`: no token can be chosen.
        MissingService = "missing_service",
        /// No user copy target, or an ambiguous one.
        NoUserCopy = "no_user_copy",
        /// A field the level requires is absent.
        MissingField = "missing_field",
        /// `eventTime` cannot be read.
        BadTime = "bad_time",
        /// A CADF or Activity Tracker rule is broken (strict).
        RuleBroken = "rule_broken",
        /// Longer than the source's `max_line_size`.
        LineTooLong = "line_too_long",
        /// No `<match>` receives it.
        Unroutable = "unroutable",
        /// The endpoint refused it alone (400 or 413 for a batch of one).
        RejectedByEndpoint = "rejected_by_endpoint",
        /// A `<filter>` could not handle it (its name is in the message).
        FilterFailed = "filter_failed",
    }
}

/// Why a line was refused: the reason of its first problem, and every problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The first problem's kind.
    pub reason: Reason,
    /// Every problem, each naming the field.
    pub problems: Vec<String>,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.problems.join("; "))
    }
}

impl Rejection {
    fn one(reason: Reason, problem: impl Into<String>) -> Self {
        Rejection {
            reason,
            problems: vec![problem.into()],
        }
    }
}

/// A line that may be forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted<'a> {
    /// `meta.serviceProviderName`: whose token sends it (borrowed from the line unless
    /// written with escapes).
    pub service: Cow<'a, str>,
    /// Whether the forwarded bytes differ from the line.
    pub changed: bool,
    /// Whether `eventTime` had no UTC offset and was read as UTC (lenient only).
    pub time_without_offset: bool,
}

/// Where a line came from: its file's identity and its offset there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// The file.
    pub key: FileKey,
    /// The line's first byte.
    pub offset: u64,
}

/// Checks and completes event lines at one level.
#[derive(Debug, Clone, Copy)]
pub struct Validator {
    level: CadfValidation,
    normalize_time: bool,
    /// Bare CADF events (no `meta`) are checked too (`lint --level cadf`).
    bare: bool,
}

impl Validator {
    /// A validator for `level`; `normalize_time` rewrites `eventTime` in Activity
    /// Tracker's form.
    pub fn new(level: CadfValidation, normalize_time: bool) -> Self {
        Validator {
            level,
            normalize_time,
            bare: false,
        }
    }

    /// Also reads bare CADF events, without `meta` (checked, never forwarded: they name
    /// no service).
    #[must_use]
    pub fn reading_bare_cadf(mut self) -> Self {
        self.bare = true;
        self
    }

    /// Checks `line`; when it may be forwarded, appends the bytes to forward to `out`.
    pub fn check<'a>(
        &self,
        line: &'a [u8],
        origin: Origin,
        out: &mut Vec<u8>,
    ) -> Result<Accepted<'a>, Rejection> {
        let text = std::str::from_utf8(line).map_err(|e| {
            Rejection::one(
                Reason::InvalidUtf8,
                format!("invalid UTF-8 at byte {}", e.valid_up_to()),
            )
        })?;
        // serde would read a JSON array positionally into a struct: refuse it first.
        if !text.trim_start().starts_with('{') {
            let e = serde_json::from_str::<serde::de::IgnoredAny>(text).err();
            return Err(e.map_or_else(|| not_an_object(text), |e| json_rejection(&e)));
        }
        let mut parsed = Line::default();
        if scan::scan_into(text, &mut parsed).is_none() {
            parsed = self.read_carefully(text)?;
        }
        if self.level == CadfValidation::Off {
            let service = service_of(parsed.meta.map(|m| m.service))?;
            out.extend_from_slice(line);
            return Ok(Accepted {
                service,
                changed: false,
                time_without_offset: false,
            });
        }
        let service = if self.bare && parsed.meta.is_none() {
            Cow::Borrowed("")
        } else {
            service_of(parsed.meta.as_mut().map(|m| m.service.take()))?
        };
        let top;
        let (cadf, at) = match &parsed.payload {
            Some(payload) => (payload, "payload."),
            None => {
                top = parsed.top_fields();
                (&top, "")
            }
        };
        let time = self.problems(&parsed, cadf, at)?;
        let mut edits = Edits::default();
        let anchor = match at {
            "" => Some(Anchor::ObjectStart(text.len() - text.trim_start().len())),
            _ => cadf
                .action
                .and_then(|a| envelope::key_start(text, offset_in(text, a), "action"))
                .map(Anchor::BeforeKey),
        };
        let anchor = anchor
            .or_else(|| payload_start(text))
            .expect("an accepted payload is an object in the line");
        self.complete(text, cadf, anchor, origin, &mut edits);
        if let (true, Some((raw, t, _))) = (self.normalize_time, time) {
            let mut normal = Short::default();
            let written = write!(normal, "\"").and_then(|()| t.write_at_format(&mut normal));
            if written.and_then(|()| write!(normal, "\"")).is_ok()
                && raw.get().as_bytes() != normal.as_bytes()
            {
                edits.replace(offset_in(text, raw), raw.get().len(), Text::Short(normal));
            }
        }
        let changed = !edits.is_empty();
        if changed {
            edits.apply(text, out);
        } else {
            out.extend_from_slice(line);
        }
        Ok(Accepted {
            service,
            changed,
            time_without_offset: time.is_some_and(|(_, _, assumed)| assumed),
        })
    }

    /// Reads a line the fast path gave up on, with serde_json; a failure is explained.
    /// (`off` reads only the routing object, so that nothing else can fail.)
    fn read_carefully<'a>(&self, text: &'a str) -> Result<Line<'a>, Rejection> {
        if let Some(depth) = too_deep(text.as_bytes()) {
            return Err(Rejection::one(
                Reason::InvalidJson,
                format!("nested deeper than {MAX_DEPTH} levels (at byte {depth})"),
            ));
        }
        if self.level == CadfValidation::Off {
            let routing: Routing<'a> =
                serde_json::from_str(text).map_err(|e| explain_parse_error(text, &e))?;
            return Ok(Line {
                meta: routing.meta,
                ..Line::default()
            });
        }
        serde_json::from_str(text).map_err(|e| explain_parse_error(text, &e))
    }

    /// Every problem at this level; on success, the parsed `eventTime`.
    fn problems<'a>(
        &self,
        line: &Line<'a>,
        cadf: &Fields<'a>,
        at: &str,
    ) -> Result<Option<(Raw<'a>, time::Timestamp, bool)>, Rejection> {
        let mut problems: Vec<(Reason, String)> = Vec::new();
        if let Some(meta) = &line.meta {
            check_user_copy(meta, line.log_source_crn, &mut problems);
        }
        for (name, raw) in [
            ("action", cadf.action),
            ("outcome", cadf.outcome),
            ("initiator", cadf.initiator),
            ("target", cadf.target),
            ("eventTime", cadf.event_time),
        ] {
            if !present(raw) {
                problems.push((Reason::MissingField, format!("missing {at}{name}")));
            }
        }
        let mut time = None;
        if let Some(raw) = cadf.event_time.filter(|r| present(Some(*r))) {
            let value: Option<Cow<'_, str>> = envelope::text_of(raw);
            // Lenient reads a time without an offset as UTC (seed 003's example has
            // none); strict keeps CADF's rule that the offset is written.
            let parse = |t: &str| match self.level {
                CadfValidation::Strict | CadfValidation::Cadf | CadfValidation::ActivityTracker => {
                    time::parse(t).map(|t| (t, false))
                }
                _ => time::parse_assuming_utc(t),
            };
            match value
                .as_deref()
                .ok_or_else(|| "it is not a string".to_string())
                .and_then(parse)
            {
                Ok((t, assumed)) => time = Some((raw, t, assumed)),
                Err(why) => problems.push((
                    Reason::BadTime,
                    format!("{at}eventTime {} is not a time: {why}", raw.get()),
                )),
            }
        }
        let rules = match self.level.normalized() {
            CadfValidation::Cadf => Some(rules::Rules::Cadf),
            CadfValidation::ActivityTracker => Some(rules::Rules::ActivityTracker),
            _ => None,
        };
        if let Some(rules) = rules {
            let mut strict = Vec::new();
            rules::check(rules, cadf, at, line.log_source_crn, &mut strict);
            problems.extend(strict.into_iter().map(|p| {
                (
                    if p.starts_with("missing") {
                        Reason::MissingField
                    } else {
                        Reason::RuleBroken
                    },
                    p,
                )
            }));
        }
        match problems.first() {
            Some((reason, _)) => Err(Rejection {
                reason: *reason,
                problems: problems.into_iter().map(|(_, p)| p).collect(),
            }),
            None => Ok(time),
        }
    }

    /// Adds what lenient fills in: id, eventType, typeURI, observer.name.
    fn complete(
        &self,
        text: &str,
        cadf: &Fields<'_>,
        anchor: Anchor,
        origin: Origin,
        edits: &mut Edits,
    ) {
        if !present(cadf.observer) {
            edits.insert_member(
                text,
                anchor,
                Text::Static(r#""observer":{"name":"ActivityTracker"}"#),
            );
        } else if let Some(observer) = cadf.observer.filter(|o| is_object(*o)) {
            if !observer_has_name(observer) {
                edits.insert_member(
                    text,
                    Anchor::ObjectStart(offset_in(text, observer)),
                    Text::Static(r#""name":"ActivityTracker""#),
                );
            }
        }
        if !present(cadf.type_uri) {
            const MEMBER: &str = r#""typeURI":"http://schemas.dmtf.org/cloud/audit/1.0/event""#;
            edits.insert_member(text, anchor, Text::Static(MEMBER));
        }
        if !present(cadf.event_type) {
            edits.insert_member(text, anchor, Text::Static(r#""eventType":"activity""#));
        }
        if !present(cadf.id) {
            let mut member = Short::default();
            let id = derived_id(origin, text);
            if write!(member, "\"id\":\"{id}\"").is_ok() {
                edits.insert_member(text, anchor, Text::Short(member));
            }
        }
    }
}

/// `meta.serviceProviderName`, trimmed; `meta` is `None` when the line has no `meta`.
fn service_of(meta: Option<Option<Cow<'_, str>>>) -> Result<Cow<'_, str>, Rejection> {
    let Some(service) = meta else {
        return Err(Rejection::one(Reason::MissingService, "missing meta"));
    };
    let trimmed = match service {
        Some(Cow::Borrowed(s)) => Cow::Borrowed(s.trim()),
        Some(Cow::Owned(s)) => Cow::Owned(s.trim().to_string()),
        None => Cow::Borrowed(""),
    };
    if trimmed.is_empty() {
        return Err(Rejection::one(
            Reason::MissingService,
            "missing meta.serviceProviderName",
        ));
    }
    Ok(trimmed)
}
/// The offset of the payload's `{`, read the slow way (for a payload whose `action` key
/// is written with escapes).
fn payload_start(text: &str) -> Option<Anchor> {
    let parts: Parts<'_> = serde_json::from_str(text).ok()?;
    parts
        .payload
        .filter(|p| is_object(*p))
        .map(|p| Anchor::ObjectStart(offset_in(text, p)))
}

/// Why a line that is a JSON object did not read as an event envelope.
fn explain_parse_error(text: &str, e: &serde_json::Error) -> Rejection {
    if e.classify() != serde_json::error::Category::Data {
        return json_rejection(e);
    }
    if let Ok(parts) = serde_json::from_str::<Parts<'_>>(text) {
        if let Some(meta) = parts.meta.filter(|m| present(Some(*m))) {
            if !is_object(meta) {
                return Rejection::one(Reason::MissingService, "meta is not an object");
            }
            if let Err(e) = serde_json::from_str::<Meta<'_>>(meta.get()) {
                return Rejection::one(Reason::MissingService, format!("meta: {e}"));
            }
        }
        if parts
            .payload
            .is_some_and(|p| present(Some(p)) && !is_object(p))
        {
            return Rejection::one(Reason::MissingField, "payload is not an object");
        }
    }
    json_rejection(e)
}

fn observer_has_name(observer: Raw<'_>) -> bool {
    #[derive(serde::Deserialize)]
    struct Named<'a> {
        #[serde(borrow)]
        name: Option<Raw<'a>>,
    }
    serde_json::from_str::<Named<'_>>(observer.get()).is_ok_and(|n| present(n.name))
}

fn check_user_copy(
    meta: &Meta<'_>,
    log_source_crn: Option<Raw<'_>>,
    problems: &mut Vec<(Reason, String)>,
) {
    let accounts: Option<AccountIds> = meta
        .user_account_ids
        .filter(|r| present(Some(*r)))
        .map(|r| AccountIds::read(r.get()));
    if let Some(ids) = accounts {
        if ids.entries != 1 || ids.good != 1 {
            problems.push((
                Reason::NoUserCopy,
                format!(
                    "meta.userAccountIds must hold exactly one account id, found {}",
                    ids.entries
                ),
            ));
        }
        return;
    }
    // No user copy target at all is allowed: seed 000, "it is possible to send events to
    // the red tile only" — the event is kept as the service's copy. A space without its
    // region is a target written wrongly.
    let half_space =
        string(meta.user_space_id).is_some() && string(meta.user_space_region).is_none();
    if half_space && string(log_source_crn).is_none() {
        problems.push((
            Reason::NoUserCopy,
            "meta.userSpaceId has no meta.userSpaceRegion: set both for the user's copy, or neither to keep the service's copy only".to_string(),
        ));
    }
}

/// `meta.userAccountIds` counted as it is read, without building the list (this runs
/// for every event): its entries, and how many are non-blank strings. Anything but an
/// array of strings and nulls reads as no entries.
#[derive(Debug, Default)]
struct AccountIds {
    entries: usize,
    good: usize,
}

impl AccountIds {
    /// Reads `text`, a raw JSON value; a list of one plain string (the usual case) without
    /// serde_json.
    fn read(text: &str) -> Self {
        let one = text.strip_prefix('[').and_then(|t| t.strip_suffix(']'));
        if let Some(id) = one.and_then(envelope::plain_string) {
            return AccountIds {
                entries: 1,
                good: usize::from(!id.trim().is_empty()),
            };
        }
        serde_json::from_str(text).unwrap_or_default()
    }
}

impl<'de> serde::Deserialize<'de> for AccountIds {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Ids;
        impl<'de> serde::de::Visitor<'de> for Ids {
            type Value = AccountIds;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an array of account ids")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<AccountIds, A::Error> {
                let mut ids = AccountIds::default();
                while let Some(NonBlank(good)) = seq.next_element()? {
                    ids.entries += 1;
                    ids.good += usize::from(good);
                }
                Ok(ids)
            }
        }
        d.deserialize_seq(Ids)
    }
}

/// A string or null, read as whether it is a non-blank string.
struct NonBlank(bool);

impl<'de> serde::Deserialize<'de> for NonBlank {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text;
        impl<'de> serde::de::Visitor<'de> for Text {
            type Value = NonBlank;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or null")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<NonBlank, E> {
                Ok(NonBlank(!v.trim().is_empty()))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<NonBlank, E> {
                Ok(NonBlank(false))
            }
            fn visit_none<E: serde::de::Error>(self) -> Result<NonBlank, E> {
                Ok(NonBlank(false))
            }
            fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<NonBlank, D::Error> {
                d.deserialize_str(Text)
            }
        }
        d.deserialize_option(Text)
    }
}

fn json_rejection(e: &serde_json::Error) -> Rejection {
    match e.classify() {
        serde_json::error::Category::Eof => {
            Rejection::one(Reason::InvalidJson, format!("truncated JSON: {e}"))
        }
        _ => Rejection::one(Reason::InvalidJson, format!("invalid JSON: {e}")),
    }
}

fn not_an_object(text: &str) -> Rejection {
    let what = match text.trim_start().chars().next() {
        Some('[') => "a JSON array",
        Some('"') => "a JSON string",
        Some('n') => "null",
        Some('t' | 'f') => "a boolean",
        _ => "a number",
    };
    Rejection::one(
        Reason::NotAnObject,
        format!("the line is {what}, not a JSON object"),
    )
}

/// Deepest nesting accepted. Events are shallow; a line nested deeper is refused rather
/// than handed to an endpoint that may not cope.
pub const MAX_DEPTH: usize = 64;

/// The offset where nesting first exceeds [`MAX_DEPTH`], if it does.
fn too_deep(line: &[u8]) -> Option<usize> {
    // No more openers than the limit cannot nest beyond it (found by a SIMD search; a
    // counting loop here was a tenth of the forwarder's CPU); only then is the line walked
    // with string awareness.
    memchr::memchr2_iter(b'{', b'[', line).nth(MAX_DEPTH)?;
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, b) in line.iter().enumerate() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Some(i);
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests;
