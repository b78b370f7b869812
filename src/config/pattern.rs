//! fluentd tag patterns (`<match a.** b.*>`) and the tail source's `tag` with `*`.
//!
//! A pattern is compiled to an anchored regular expression exactly as fluentd's
//! `GlobMatchPattern` does: `*` is one part (`[^.]*`), `**` any number of parts, `a.**` also
//! matches `a`, `{x,y}` is an alternation (nestable), `\c` escapes `c`, and `/re/` is a
//! regular expression. Several patterns in one `<match>` match when any of them does.

use std::fmt;

use regex::Regex;

/// The patterns of one `<match>` or `<filter>`.
#[derive(Clone)]
pub struct TagPatterns {
    source: String,
    compiled: Vec<Regex>,
}

impl TagPatterns {
    /// Compiles a whitespace-separated list of patterns; an empty list means `**`.
    pub fn new(text: &str) -> Result<Self, String> {
        let text = if text.trim().is_empty() {
            "**"
        } else {
            text.trim()
        };
        let compiled = text
            .split_whitespace()
            .map(compile)
            .collect::<Result<_, _>>()?;
        Ok(TagPatterns {
            source: text.to_string(),
            compiled,
        })
    }

    /// Whether `tag` is matched by any of the patterns.
    pub fn matches(&self, tag: &str) -> bool {
        self.compiled.iter().any(|re| re.is_match(tag))
    }

    /// The patterns as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl fmt::Debug for TagPatterns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TagPatterns").field(&self.source).finish()
    }
}

impl PartialEq for TagPatterns {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

fn compile(pattern: &str) -> Result<Regex, String> {
    let regex = if let Some(inner) = pattern.strip_prefix('/') {
        let inner = inner.strip_suffix('/').ok_or_else(|| {
            format!("invalid pattern '{pattern}': a regular expression must end with '/'")
        })?;
        format!(r"\A(?:{inner})\z")
    } else {
        format!(r"\A{}\z", glob_to_regex(pattern))
    };
    Regex::new(&regex).map_err(|e| format!("invalid pattern '{pattern}': {e}"))
}

/// fluentd's `GlobMatchPattern#initialize`, translated to a regex without look-around.
fn glob_to_regex(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    // A stack of alternations being built: each holds its finished branches.
    let mut alternations: Vec<Vec<String>> = Vec::new();
    let mut parts: Vec<String> = vec![String::new()];
    let (mut escape, mut dot) = (false, false);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let current = parts.last_mut().expect("parts is never empty");
        if escape {
            current.push_str(&regex::escape(&c.to_string()));
            escape = false;
            i += 1;
            continue;
        }
        if c == '*' && chars.get(i + 1) == Some(&'*') {
            let then_dot = chars.get(i + 2) == Some(&'.');
            // fluentd writes `(?![^.])` after a pending dot; without look-around, a pending dot
            // becomes "end of tag or a dot" and the `**` that follows absorbs the rest.
            match (dot, then_dot) {
                (true, true) => current.push_str(r"\.(?:.*\.)?"),
                (true, false) => current.push_str(r"(?:\z|\..*)"),
                (false, true) => current.push_str(r"(?:.*\.|\A)"),
                (false, false) => current.push_str(".*"),
            }
            dot = false;
            i += if then_dot { 3 } else { 2 };
            continue;
        }
        if dot {
            current.push_str(r"\.");
            dot = false;
        }
        match c {
            '\\' => escape = true,
            '.' => dot = true,
            '*' => current.push_str(r"[^.]*"),
            '{' => {
                alternations.push(Vec::new());
                parts.push(String::new());
            }
            '}' | ',' if !alternations.is_empty() => {
                let branch = parts.pop().expect("a branch is open");
                alternations
                    .last_mut()
                    .expect("an alternation is open")
                    .push(branch);
                if c == ',' {
                    parts.push(String::new());
                } else {
                    close_alternation(&mut alternations, &mut parts);
                }
            }
            c if c.is_ascii_alphanumeric() || c == '_' => current.push(c),
            c => current.push_str(&regex::escape(&c.to_string())),
        }
        i += 1;
    }
    if dot {
        parts
            .last_mut()
            .expect("parts is never empty")
            .push_str(r"\.");
    }
    while !alternations.is_empty() {
        let branch = parts.pop().expect("a branch is open");
        alternations
            .last_mut()
            .expect("an alternation is open")
            .push(branch);
        close_alternation(&mut alternations, &mut parts);
    }
    parts.pop().expect("the outermost part remains")
}

fn close_alternation(alternations: &mut Vec<Vec<String>>, parts: &mut [String]) {
    let branches = alternations.pop().expect("an alternation is open");
    let outer = parts.last_mut().expect("the enclosing part remains");
    outer.push_str(&format!("(?:{})", branches.join("|")));
}

/// The `tag` of a tail source: fixed, or with one `*` that stands for the path of the file
/// the line came from, with `/` turned into `.` (`kubernetes.at.*` and
/// `/var/log/at/a.log` give `kubernetes.at.var.log.at.a.log`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailTag {
    prefix: String,
    suffix: Option<String>,
}

impl TailTag {
    /// Parses a tag; more than one `*` is an error (fluentd silently ignores all but one).
    pub fn new(tag: &str) -> Result<Self, String> {
        match tag.split_once('*') {
            None => Ok(TailTag {
                prefix: tag.to_string(),
                suffix: None,
            }),
            Some((_, after)) if after.contains('*') => {
                Err(format!("'{tag}' has more than one '*': use at most one"))
            }
            Some((before, after)) => Ok(TailTag {
                prefix: before.to_string(),
                suffix: Some(after.to_string()),
            }),
        }
    }

    /// The tag of lines read from `path`.
    pub fn expand(&self, path: &str) -> String {
        let Some(suffix) = &self.suffix else {
            return self.prefix.clone();
        };
        let mut dotted = String::with_capacity(path.len());
        for c in path.chars().map(|c| if c == '/' { '.' } else { c }) {
            if !(c == '.' && (dotted.is_empty() || dotted.ends_with('.'))) {
                dotted.push(c);
            }
        }
        format!("{}{dotted}{suffix}", self.prefix)
    }

    /// Whether the tag depends on the path.
    pub fn is_expanded(&self) -> bool {
        self.suffix.is_some()
    }
}

impl fmt::Display for TailTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.suffix {
            None => f.write_str(&self.prefix),
            Some(suffix) => write!(f, "{}*{suffix}", self.prefix),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_as_in_fluentd() {
        // (pattern, tag, matches)
        let cases: &[(&str, &str, bool)] = &[
            ("a", "a", true),
            ("a", "b", false),
            ("a", "ab", false),
            ("a.b", "a.b", true),
            ("a.b", "axb", false),
            ("*", "a", true),
            ("*", "a.b", false),
            ("*", "", true),
            ("a.*", "a.b", true),
            ("a.*", "a", false),
            ("a.*", "a.b.c", false),
            ("a.*.c", "a.b.c", true),
            ("a.*.c", "a..c", true),
            ("**", "", true),
            ("**", "a.b.c", true),
            ("a.**", "a", true),
            ("a.**", "a.b", true),
            ("a.**", "a.b.c", true),
            ("a.**", "ab", false),
            ("a.**", "b.a", false),
            ("**.c", "c", true),
            ("**.c", "a.b.c", true),
            ("**.c", "a.bc", false),
            ("a.**.c", "a.c", true),
            ("a.**.c", "a.b.c", true),
            ("a.**.c", "a.b.d.c", true),
            ("a.**.c", "a.bc", false),
            ("a.**.c", "ac", false),
            (
                "kubernetes.at.**",
                "kubernetes.at.var.log.at.noisy_events.log",
                true,
            ),
            ("kubernetes.at.**", "kubernetes.atx", false),
            ("kubernetes.at.**", "kubernetes.at", true),
            ("{a,b}", "a", true),
            ("{a,b}", "b", true),
            ("{a,b}", "c", false),
            ("a.{b,c}.d", "a.c.d", true),
            ("a.{b,c.**}", "a.c.x.y", true),
            ("a.{b,c.**}", "a.b.x", false),
            ("{a.{b,c},d}", "a.c", true),
            ("{a.{b,c},d}", "d", true),
            ("{a,b", "b", true),
            (r"a\*", "a*", true),
            (r"a\*", "ab", false),
            ("a-b", "a-b", true),
            ("a+b", "a+b", true),
            ("a+b", "aab", false),
            ("/a\\.[0-9]+/", "a.12", true),
            ("/a\\.[0-9]+/", "a.12x", false),
            ("a b.*", "b.c", true),
            ("a b.*", "a", true),
            ("a b.*", "c", false),
        ];
        for (pattern, tag, want) in cases {
            let p = TagPatterns::new(pattern).unwrap();
            assert_eq!(p.matches(tag), *want, "pattern {pattern:?} on tag {tag:?}");
        }
    }

    #[test]
    fn empty_pattern_matches_everything() {
        assert!(TagPatterns::new("").unwrap().matches("x.y"));
    }

    #[test]
    fn unclosed_regex_pattern_is_an_error() {
        assert!(TagPatterns::new("/a.b")
            .unwrap_err()
            .contains("must end with '/'"));
        assert!(TagPatterns::new("/(/").is_err());
    }

    #[test]
    fn tail_tag_expansion() {
        let tag = TailTag::new("kubernetes.at.*").unwrap();
        assert_eq!(
            tag.expand("/var/log/at/noisy_events.log"),
            "kubernetes.at.var.log.at.noisy_events.log"
        );
        assert_eq!(
            tag.expand("/var/log//at/./x.log"),
            "kubernetes.at.var.log.at.x.log"
        );
        assert_eq!(TailTag::new("a.*.b").unwrap().expand("/x/y"), "a.x.y.b");
        assert_eq!(TailTag::new("fixed").unwrap().expand("/x/y"), "fixed");
        assert!(TailTag::new("a.*.*").is_err());
        assert_eq!(
            TailTag::new("kubernetes.at.*").unwrap().to_string(),
            "kubernetes.at.*"
        );
    }
}
