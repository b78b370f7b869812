//! `<filter PATTERN>` directives, applied in file order between the event check and the
//! buffers: fluentd's `grep` and `record_transformer` (without Ruby), and at-forwarder's
//! own `redact`.

use std::path::PathBuf;

use super::diag::Diagnostic;
use super::pattern::TagPatterns;
use super::section::Section;
use super::syntax::Element;
use super::Directive;

/// Filter types at-forwarder implements, as written after `@type`.
pub const FILTER_TYPES: &[&str] = &["grep", "record_transformer", "redact"];

/// The default path `redact` replaces: seed 004's example carries a credential there.
pub const DEFAULT_REDACT_PATH: &str = "$.payload.initiator.credential.token";

/// A `<filter>` directive.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    /// Id, label, place.
    pub directive: Directive,
    /// The tags it applies to.
    pub patterns: TagPatterns,
    /// What it does.
    pub kind: FilterKind,
}

/// What a filter does.
#[derive(Debug, Clone, PartialEq)]
pub enum FilterKind {
    /// Keeps or drops events by patterns (`@type grep`).
    Grep(Grep),
    /// Adds and removes members (`@type record_transformer`).
    RecordTransformer(RecordTransformer),
    /// Replaces values at paths (`@type redact`).
    Redact(Redact),
}

/// One `<regexp>` or `<exclude>`: a record accessor and a regular expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrepRule {
    /// `key`: `name`, `$.a.b`, `$['a'][0]`.
    pub key: String,
    /// `pattern`, as a Rust regular expression (`/re/flags` unwrapped).
    pub pattern: String,
}

/// `@type grep`, with fluentd's evaluation: every top-level `<regexp>` and every one in
/// `<and>` must match; one of the `<or>` regexps must match (when there are any); the event
/// is dropped when all `<and>` excludes match or any other exclude does.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Grep {
    /// `<regexp>` at the top and in `<and>`.
    pub regexp_and: Vec<GrepRule>,
    /// `<regexp>` in `<or>`.
    pub regexp_or: Vec<GrepRule>,
    /// `<exclude>` in `<and>`.
    pub exclude_and: Vec<GrepRule>,
    /// `<exclude>` at the top and in `<or>`.
    pub exclude_or: Vec<GrepRule>,
}

/// `@type record_transformer`: `<record>` members set from templates (`${record["k"]}`,
/// `${tag}`, `${tag_parts[N]}`, `${hostname}`), then `remove_keys` removed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecordTransformer {
    /// Member name (or `$.a.b`) and template, in order.
    pub record: Vec<(String, String)>,
    /// Members removed (names or `$.a.b`).
    pub remove_keys: Vec<String>,
}

/// How `redact` replaces a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedactWith {
    /// A fixed text (`marker`, default `[REDACTED]`).
    Marker(String),
    /// `hmac-sha256:` and the hex HMAC-SHA256 of the value under the key in this file
    /// (`hash_key_path`): equal values stay comparable, the value is not recoverable.
    KeyedHash(PathBuf),
}

/// `@type redact` (at-forwarder's own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redact {
    /// `paths` (default [`DEFAULT_REDACT_PATH`]).
    pub paths: Vec<String>,
    /// `mode marker` or `mode hash`.
    pub with: RedactWith,
}

/// Builds a filter's kind; `None` after reporting what is wrong.
pub(super) fn build(s: &mut Section<'_>, type_name: &str) -> Option<FilterKind> {
    match type_name {
        "grep" => build_grep(s).map(FilterKind::Grep),
        "record_transformer" => build_transformer(s).map(FilterKind::RecordTransformer),
        "redact" => build_redact(s).map(FilterKind::Redact),
        _ => None,
    }
}

fn build_grep(s: &mut Section<'_>) -> Option<Grep> {
    let mut grep = Grep::default();
    let mut ok = true;
    for el in s.children("regexp") {
        ok &= push_rule(s, el, &mut grep.regexp_and);
    }
    for el in s.children("exclude") {
        ok &= push_rule(s, el, &mut grep.exclude_or);
    }
    for (group, name) in [(s.children("and"), "and"), (s.children("or"), "or")] {
        for g in group {
            let mut inner = Section::new(g);
            let (regexps, excludes) = if name == "and" {
                (&mut grep.regexp_and, &mut grep.exclude_and)
            } else {
                (&mut grep.regexp_or, &mut grep.exclude_or)
            };
            for el in inner.children("regexp") {
                ok &= push_rule(&mut inner, el, regexps);
            }
            for el in inner.children("exclude") {
                ok &= push_rule(&mut inner, el, excludes);
            }
            for d in inner.finish() {
                s.error(d);
            }
        }
    }
    ok.then_some(grep)
}

/// Reads a `<regexp>` or `<exclude>` into `rules`; whether it was valid.
fn push_rule(s: &mut Section<'_>, el: &Element, rules: &mut Vec<GrepRule>) -> bool {
    let mut r = Section::new(el);
    let key = r.required_string("key").map(|k| k.value);
    let pattern = r.required("pattern", |v| {
        let pattern = unwrap_regexp(v);
        regex::Regex::new(&pattern)
            .map(|_| pattern)
            .map_err(|e| format!("not a regular expression: {e}"))
    });
    for d in r.finish() {
        s.error(d);
    }
    match (key, pattern) {
        (Some(key), Some(pattern)) => {
            rules.push(GrepRule {
                key,
                pattern: pattern.value,
            });
            true
        }
        _ => false,
    }
}

/// fluentd's `/re/flags` (i, m, x) as a Rust pattern; anything else is the pattern itself.
fn unwrap_regexp(v: &str) -> String {
    let Some(body) = v.strip_prefix('/') else {
        return v.to_string();
    };
    let Some(end) = body.rfind('/') else {
        return v.to_string();
    };
    let (re, flags) = (&body[..end], &body[end + 1..]);
    // Ruby's m is "dot matches newline", Rust's s.
    let flags: String = flags
        .chars()
        .filter_map(|f| match f {
            'i' => Some('i'),
            'm' => Some('s'),
            'x' => Some('x'),
            _ => None,
        })
        .collect();
    if flags.is_empty() {
        re.to_string()
    } else {
        format!("(?{flags}){re}")
    }
}

fn build_transformer(s: &mut Section<'_>) -> Option<RecordTransformer> {
    let mut ok = true;
    for (key, why) in [
        (
            "enable_ruby",
            "Ruby is not run: use ${record[\"key\"]}, ${tag}, ${tag_parts[N]} and ${hostname}",
        ),
        (
            "renew_record",
            "only renew_record false is supported: the event's own members are kept",
        ),
    ] {
        if let Some(v) = s.bool(key).filter(|v| v.value) {
            s.error(Diagnostic::error(
                Some(v.span),
                format!("'{key} true' is not supported: {why}"),
            ));
            ok = false;
        }
    }
    s.without_effect(
        &["auto_typecast", "keep_keys"],
        "values are set as text, and the record is never renewed",
    );
    let remove_keys = s.array("remove_keys").map(|v| v.value).unwrap_or_default();
    let mut record = Vec::new();
    for el in s.children("record") {
        for p in &el.params {
            if let Err(e) = check_template(&p.value) {
                s.error(Diagnostic::error(Some(p.value_span), e));
                ok = false;
            }
            record.push((p.key.clone(), p.value.clone()));
        }
    }
    ok.then_some(RecordTransformer {
        record,
        remove_keys,
    })
}

/// Only the placeholders at-forwarder expands; Ruby expressions are refused.
fn check_template(template: &str) -> Result<(), String> {
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unclosed placeholder in '{template}'"))?;
        let inner = &after[..end];
        let known = inner == "tag"
            || inner == "hostname"
            || (inner.starts_with("tag_parts[") && inner.ends_with(']'))
            || (inner.starts_with("record[") && inner.ends_with(']'));
        if !known {
            return Err(format!(
                "unknown placeholder '${{{inner}}}': use ${{record[\"key\"]}}, ${{tag}}, ${{tag_parts[N]}} or ${{hostname}} (no Ruby)"
            ));
        }
        rest = &after[end + 1..];
    }
    Ok(())
}

fn build_redact(s: &mut Section<'_>) -> Option<Redact> {
    let paths = s
        .array("paths")
        .map_or_else(|| vec![DEFAULT_REDACT_PATH.to_string()], |v| v.value);
    let mode = s.string("mode");
    let marker = s.string("marker").map(|m| m.value);
    let key = s.path("hash_key_path").map(|k| k.value);
    let with = match mode.as_ref().map(|m| m.value.as_str()) {
        None | Some("marker") => RedactWith::Marker(marker.unwrap_or_else(|| "[REDACTED]".into())),
        Some("hash") => match key {
            Some(key) => RedactWith::KeyedHash(key),
            None => {
                s.missing("hash_key_path");
                return None;
            }
        },
        Some(other) => {
            let span = mode.as_ref().map(|m| m.span);
            s.error(Diagnostic::error(
                span,
                format!("unknown redact mode '{other}': use marker or hash"),
            ));
            return None;
        }
    };
    Some(Redact { paths, with })
}
