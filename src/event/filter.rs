//! The `<filter>` stage: applies a source's filters to each checked record, in file order,
//! between the event check and the buffers ([`crate::config::filter`] says what each
//! does). A record is parsed once (member order kept) when a filter applies, and written
//! back only when one changed it. A dropped event is counted per filter, never
//! dead-lettered; a filter that cannot handle a record dead-letters that record with the
//! filter's name.

use std::fmt::Write as _;

use anyhow::{Context, Result};
use hmac::{Hmac, Mac};
use regex::Regex;
use serde_json::{Map, Value};

use crate::config::filter::{FilterKind, Grep, GrepRule, RecordTransformer, Redact, RedactWith};
use crate::config::Config;

/// The compiled filters of a configuration, by index in `config.filters`.
pub struct Filters {
    compiled: Vec<Compiled>,
    hostname: String,
}

struct Compiled {
    name: String,
    kind: Kind,
}

enum Kind {
    Grep {
        regexp_and: Vec<Rule>,
        regexp_or: Vec<Rule>,
        exclude_and: Vec<Rule>,
        exclude_or: Vec<Rule>,
    },
    Transform {
        record: Vec<(Path, String)>,
        remove: Vec<Path>,
    },
    Redact {
        paths: Vec<Path>,
        with: With,
    },
}

enum With {
    Marker(String),
    Hmac(Vec<u8>),
}

struct Rule {
    key: Path,
    pattern: Regex,
}

/// A record accessor: `name`, `$.a.b`, `$['a b'][0]`.
#[derive(Debug, Clone, PartialEq)]
struct Path(Vec<Seg>);

#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Key(String),
    Index(usize),
}

/// What the filters did to a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Kept (changed or not).
    Kept,
    /// Dropped by the filter of this index.
    Dropped(usize),
}

/// A filter could not handle a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterFailed {
    /// The filter's name (`@id`, else `filter.N`).
    pub filter: String,
    /// Why.
    pub message: String,
}

impl Filters {
    /// Compiles `config`'s filters; reads `redact`'s hash keys.
    pub fn compile(config: &Config, hostname: &str) -> Result<Self> {
        let mut compiled = Vec::new();
        for (i, f) in config.filters.iter().enumerate() {
            let name = f.directive.plugin_id("filter", i);
            let kind = compile_kind(&f.kind).with_context(|| format!("filter {name}"))?;
            compiled.push(Compiled { name, kind });
        }
        Ok(Filters {
            compiled,
            hostname: hostname.to_string(),
        })
    }

    /// The name of the filter of index `i`, for metrics and dead letters.
    pub fn name(&self, i: usize) -> &str {
        self.compiled.get(i).map_or("", |c| c.name.as_str())
    }

    /// Applies the filters `which` (indices, in order) to the record `buf[from..]` of
    /// `tag`, rewriting it in place when one changed it.
    pub fn apply(
        &self,
        which: &[usize],
        tag: &str,
        buf: &mut Vec<u8>,
        from: usize,
    ) -> Result<Applied, FilterFailed> {
        let Some(first) = which.first() else {
            return Ok(Applied::Kept);
        };
        let mut record: Value = serde_json::from_slice(&buf[from..]).map_err(|e| FilterFailed {
            filter: self.name(*first).to_string(),
            message: format!("the record is not JSON: {e}"),
        })?;
        let mut changed = false;
        for &i in which {
            let Some(c) = self.compiled.get(i) else {
                continue;
            };
            match &c.kind {
                Kind::Grep {
                    regexp_and,
                    regexp_or,
                    exclude_and,
                    exclude_or,
                } => {
                    let keep = grep_keeps(&record, regexp_and, regexp_or, exclude_and, exclude_or);
                    if !keep {
                        return Ok(Applied::Dropped(i));
                    }
                }
                Kind::Transform {
                    record: set,
                    remove,
                } => {
                    transform(&mut record, set, remove, tag, &self.hostname);
                    changed = true;
                }
                Kind::Redact { paths, with } => changed |= redact(&mut record, paths, with),
            }
        }
        if changed {
            buf.truncate(from);
            serde_json::to_writer(&mut *buf, &record).map_err(|e| FilterFailed {
                filter: self.name(*first).to_string(),
                message: e.to_string(),
            })?;
        }
        Ok(Applied::Kept)
    }
}

/// The text of the value a record accessor (`name`, `$.a.b`, `$['a'][0]`) names in
/// `record`, as grep matches it; `None` when absent or empty.
pub fn accessor_text(record: &Value, accessor: &str) -> Option<String> {
    let text = as_text(Path::parse(accessor).get(record)).into_owned();
    (!text.is_empty()).then_some(text)
}

fn compile_kind(kind: &FilterKind) -> Result<Kind> {
    let rules = |rules: &[GrepRule]| -> Result<Vec<Rule>> {
        rules
            .iter()
            .map(|r| {
                Ok(Rule {
                    key: Path::parse(&r.key),
                    pattern: Regex::new(&r.pattern)?,
                })
            })
            .collect()
    };
    Ok(match kind {
        FilterKind::Grep(Grep {
            regexp_and,
            regexp_or,
            exclude_and,
            exclude_or,
        }) => Kind::Grep {
            regexp_and: rules(regexp_and)?,
            regexp_or: rules(regexp_or)?,
            exclude_and: rules(exclude_and)?,
            exclude_or: rules(exclude_or)?,
        },
        FilterKind::RecordTransformer(RecordTransformer {
            record,
            remove_keys,
        }) => Kind::Transform {
            record: record
                .iter()
                .map(|(k, v)| (Path::parse(k), v.clone()))
                .collect(),
            remove: remove_keys.iter().map(|k| Path::parse(k)).collect(),
        },
        FilterKind::Redact(Redact { paths, with }) => Kind::Redact {
            paths: paths.iter().map(|p| Path::parse(p)).collect(),
            with: match with {
                RedactWith::Marker(m) => With::Marker(m.clone()),
                RedactWith::KeyedHash(file) => {
                    let key = std::fs::read(file)
                        .with_context(|| format!("reading hash_key_path {}", file.display()))?;
                    anyhow::ensure!(!key.is_empty(), "hash_key_path {} is empty", file.display());
                    With::Hmac(key)
                }
            },
        },
    })
}

/// fluentd's filter_grep: the and-regexps all match, one or-regexp matches (if any), not
/// all and-excludes match (if any), no or-exclude matches.
fn grep_keeps(
    record: &Value,
    regexp_and: &[Rule],
    regexp_or: &[Rule],
    exclude_and: &[Rule],
    exclude_or: &[Rule],
) -> bool {
    let matches = |r: &Rule| r.pattern.is_match(&as_text(r.key.get(record)));
    regexp_and.iter().all(matches)
        && (regexp_or.is_empty() || regexp_or.iter().any(matches))
        && (exclude_and.is_empty() || !exclude_and.iter().all(matches))
        && !exclude_or.iter().any(matches)
}

/// A value as fluentd's `to_s` gives it to a pattern: strings as they are, nothing as
/// the empty string, numbers and booleans as written, objects and arrays as JSON.
fn as_text(value: Option<&Value>) -> std::borrow::Cow<'_, str> {
    match value {
        None | Some(Value::Null) => "".into(),
        Some(Value::String(s)) => s.as_str().into(),
        Some(other) => other.to_string().into(),
    }
}

/// record_transformer: every template expanded against the record as it came in, then
/// set; then the removals.
fn transform(
    record: &mut Value,
    set: &[(Path, String)],
    remove: &[Path],
    tag: &str,
    hostname: &str,
) {
    let values: Vec<String> = set
        .iter()
        .map(|(_, template)| expand(template, record, tag, hostname))
        .collect();
    for ((path, _), value) in set.iter().zip(values) {
        path.set(record, Value::String(value));
    }
    for path in remove {
        path.remove(record);
    }
}

fn expand(template: &str, record: &Value, tag: &str, hostname: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let inner = &after[..end];
        if inner == "tag" {
            out.push_str(tag);
        } else if inner == "hostname" {
            out.push_str(hostname);
        } else if let Some(n) = inner
            .strip_prefix("tag_parts[")
            .and_then(|r| r.strip_suffix(']'))
            .and_then(|n| n.parse::<isize>().ok())
        {
            let parts: Vec<&str> = tag.split('.').collect();
            let index = if n < 0 {
                parts.len().checked_sub(n.unsigned_abs())
            } else {
                Some(n.unsigned_abs())
            };
            out.push_str(index.and_then(|i| parts.get(i)).copied().unwrap_or(""));
        } else if let Some(keys) = inner.strip_prefix("record") {
            let path = Path(bracket_keys(keys));
            out.push_str(&as_text(path.get(record)));
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// `["a"]['b'][0]` as segments.
fn bracket_keys(text: &str) -> Vec<Seg> {
    let mut segs = Vec::new();
    let mut rest = text.trim();
    while let Some(inner) = rest.strip_prefix('[') {
        let Some(end) = inner.find(']') else { break };
        let part = inner[..end].trim();
        let quoted = part
            .strip_prefix('"')
            .and_then(|p| p.strip_suffix('"'))
            .or_else(|| part.strip_prefix('\'').and_then(|p| p.strip_suffix('\'')));
        segs.push(match (quoted, part.parse::<usize>()) {
            (Some(key), _) => Seg::Key(key.to_string()),
            (None, Ok(i)) => Seg::Index(i),
            (None, Err(_)) => Seg::Key(part.to_string()),
        });
        rest = &inner[end + 1..];
    }
    segs
}

/// redact: each present value replaced; whether any was.
fn redact(record: &mut Value, paths: &[Path], with: &With) -> bool {
    let mut changed = false;
    for path in paths {
        let Some(value) = path.get_mut(record) else {
            continue;
        };
        let replacement = match with {
            With::Marker(m) => m.clone(),
            With::Hmac(key) => {
                let text = as_text(Some(value)).into_owned();
                let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(key) else {
                    continue;
                };
                mac.update(text.as_bytes());
                let mut hex = String::from("hmac-sha256:");
                for b in mac.finalize().into_bytes() {
                    let _ = write!(hex, "{b:02x}");
                }
                hex
            }
        };
        *value = Value::String(replacement);
        changed = true;
    }
    changed
}

impl Path {
    fn parse(text: &str) -> Self {
        let Some(rest) = text.strip_prefix('$') else {
            return Path(vec![Seg::Key(text.to_string())]);
        };
        let mut segs = Vec::new();
        let mut rest = rest;
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('.') {
                let end = after.find(['.', '[']).unwrap_or(after.len());
                segs.push(Seg::Key(after[..end].to_string()));
                rest = &after[end..];
            } else if rest.starts_with('[') {
                let end = rest.find(']').map_or(rest.len(), |e| e + 1);
                segs.extend(bracket_keys(&rest[..end]));
                rest = &rest[end..];
            } else {
                break;
            }
        }
        Path(segs)
    }

    fn get<'v>(&self, mut v: &'v Value) -> Option<&'v Value> {
        for seg in &self.0 {
            v = match seg {
                Seg::Key(k) => v.get(k.as_str())?,
                Seg::Index(i) => v.get(*i)?,
            };
        }
        Some(v)
    }

    fn get_mut<'v>(&self, mut v: &'v mut Value) -> Option<&'v mut Value> {
        for seg in &self.0 {
            v = match seg {
                Seg::Key(k) => v.get_mut(k.as_str())?,
                Seg::Index(i) => v.get_mut(*i)?,
            };
        }
        Some(v)
    }

    /// Sets the value, making objects on the way; an index or a non-object on the way
    /// leaves the record as it is.
    fn set(&self, root: &mut Value, value: Value) {
        let Some((last, parents)) = self.0.split_last() else {
            return;
        };
        let mut v = root;
        for seg in parents {
            let Seg::Key(k) = seg else { return };
            let Value::Object(map) = v else { return };
            v = map
                .entry(k.clone())
                .or_insert_with(|| Value::Object(Map::new()));
        }
        if let (Seg::Key(k), Value::Object(map)) = (last, v) {
            map.insert(k.clone(), value);
        }
    }

    fn remove(&self, root: &mut Value) {
        let Some((Seg::Key(last), parents)) = self.0.split_last() else {
            return;
        };
        let parent = Path(parents.to_vec());
        if let Some(Value::Object(map)) = parent.get_mut(root) {
            map.shift_remove(last);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_a_filter_cannot_read_fails_with_the_filter_s_name() {
        let text = "<source>\n  @type tail\n  path /x/*.log\n  tag t\n  format json\n</source>\n<filter t>\n  @type redact\n  @id no-tokens\n</filter>\n<match t>\n  @type stdout\n</match>\n";
        let config = crate::config::load_str(text, "t.conf".as_ref(), &Default::default())
            .unwrap()
            .config;
        let filters = Filters::compile(&config, "node").unwrap();
        let mut buf = b"xx{not json".to_vec();
        let failed = filters.apply(&[0], "t", &mut buf, 2).unwrap_err();
        assert_eq!(failed.filter, "no-tokens");
        assert!(failed.message.contains("not JSON"), "{failed:?}");
    }

    #[test]
    fn accessors_read_nested_members_and_indexes() {
        let v: Value = serde_json::json!({"a":{"b c":[10,{"d":"x"}]},"e":1});
        assert_eq!(
            Path::parse("$.a['b c'][1].d").get(&v),
            Some(&Value::from("x"))
        );
        assert_eq!(Path::parse("e").get(&v), Some(&Value::from(1)));
        assert_eq!(Path::parse("$.missing.x").get(&v), None);
    }

    #[test]
    fn templates_expand_record_tag_parts_and_hostname() {
        let v: Value = serde_json::json!({"meta":{"serviceProviderName":"svc"},"n":2});
        let got = expand(
            r#"${record["meta"]["serviceProviderName"]}/${record['n']} ${tag_parts[1]} ${tag_parts[-1]} ${hostname} ${tag}"#,
            &v,
            "kubernetes.at.x",
            "node-1",
        );
        assert_eq!(got, "svc/2 at x node-1 kubernetes.at.x");
    }
}
