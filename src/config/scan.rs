//! The lexical layer of fluentd's v1 configuration syntax: a character scanner that knows
//! where it is (for located errors), and the value literals — unquoted, single- and
//! double-quoted strings, multi-line JSON, and the `#{…}` embedded code that fluentd
//! evaluates as Ruby and at-forwarder evaluates for a small, safe subset.
//!
//! Differences from fluentd are deliberate and listed in the README's configuration
//! reference; everything fluentd accepts in the seed configurations is accepted here.

use std::collections::HashMap;

use super::diag::{Diagnostic, FileId, Span};

/// What `#{…}` may refer to. fluentd evaluates arbitrary Ruby there; at-forwarder supports
/// the forms used in practice and rejects the rest with a clear error.
#[derive(Debug, Clone)]
pub struct EvalEnv {
    /// Value of `#{hostname}` and `#{Socket.gethostname}`.
    pub hostname: String,
    /// Value of `#{worker_id}`: at-forwarder is one process, worker 0.
    pub worker_id: u32,
    /// Environment variables for `#{ENV['X']}`; `None` reads the process environment.
    vars: Option<HashMap<String, String>>,
}

impl EvalEnv {
    /// The environment of this process and this machine's host name.
    pub fn from_process() -> Self {
        let hostname = gethostname::gethostname().to_string_lossy().into_owned();
        EvalEnv {
            hostname,
            worker_id: 0,
            vars: None,
        }
    }

    /// A fixed environment, for tests and tools that must not depend on the process.
    pub fn fixed(hostname: &str, vars: &[(&str, &str)]) -> Self {
        let vars = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        EvalEnv {
            hostname: hostname.to_string(),
            worker_id: 0,
            vars: Some(vars),
        }
    }

    fn var(&self, name: &str) -> Option<String> {
        match &self.vars {
            Some(vars) => vars.get(name).cloned(),
            None => std::env::var(name).ok(),
        }
    }
}

/// A cursor over one file's text that can say where it is.
pub(super) struct Scanner<'t> {
    text: &'t str,
    pos: usize,
    file: FileId,
    line_starts: Vec<usize>,
}

impl<'t> Scanner<'t> {
    pub(super) fn new(text: &'t str, file: FileId) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Scanner {
            text,
            pos: 0,
            file,
            line_starts,
        }
    }

    pub(super) fn pos(&self) -> usize {
        self.pos
    }

    pub(super) fn eof(&self) -> bool {
        self.pos >= self.text.len()
    }

    pub(super) fn peek(&self) -> Option<char> {
        self.text[self.pos..].chars().next()
    }

    pub(super) fn peek_nth(&self, n: usize) -> Option<char> {
        self.text[self.pos..].chars().nth(n)
    }

    pub(super) fn starts_with(&self, s: &str) -> bool {
        self.text[self.pos..].starts_with(s)
    }

    pub(super) fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    pub(super) fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    pub(super) fn eat_str(&mut self, s: &str) -> bool {
        if self.starts_with(s) {
            self.pos += s.len();
            true
        } else {
            false
        }
    }

    /// Consumes characters while `keep` holds and returns them.
    pub(super) fn take_while(&mut self, keep: impl Fn(char) -> bool) -> &'t str {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if !keep(c) {
                break;
            }
            self.pos += c.len_utf8();
        }
        &self.text[start..self.pos]
    }

    /// The span from byte `start` to byte `end` (clipped to the line `start` is on).
    pub(super) fn span(&self, start: usize, end: usize) -> Span {
        let start = floor_char_boundary(self.text, start);
        let line_idx = self.line_starts.partition_point(|&s| s <= start) - 1;
        let line_start = self.line_starts[line_idx];
        let col = self.text[line_start..start].chars().count() + 1;
        let line_end = self.text[start..]
            .find('\n')
            .map_or(self.text.len(), |i| start + i);
        let end = floor_char_boundary(self.text, end.clamp(start, line_end));
        let len = self.text[start..end].chars().count().max(1);
        Span {
            file: self.file,
            line: u32::try_from(line_idx + 1).unwrap_or(u32::MAX),
            col: u32::try_from(col).unwrap_or(u32::MAX),
            len: u32::try_from(len).unwrap_or(u32::MAX),
        }
    }

    /// A one-character span at the cursor.
    pub(super) fn here(&self) -> Span {
        self.span(self.pos, self.pos + self.peek().map_or(1, char::len_utf8))
    }

    /// Skips spaces and tabs.
    pub(super) fn skip_blanks(&mut self) {
        self.take_while(|c| c == ' ' || c == '\t');
    }

    /// Skips whitespace, newlines and `#` comments: what may stand between directives.
    pub(super) fn skip_spacing(&mut self) {
        loop {
            self.take_while(char::is_whitespace);
            if self.peek() == Some('#') {
                self.take_while(|c| c != '\n');
            } else {
                return;
            }
        }
    }

    /// Whether only blanks and an optional comment stand between here and the end of the
    /// line (fluentd's `LINE_END`).
    pub(super) fn at_line_end(&self) -> bool {
        let rest = self.text[self.pos..].trim_start_matches([' ', '\t']);
        matches!(rest.chars().next(), None | Some('\r' | '\n' | '#'))
    }

    /// Consumes blanks, an optional comment and the line ending; errors if anything else
    /// stands there. `after` says what was just read, for the message.
    pub(super) fn expect_line_end(&mut self, after: &str) -> Result<(), Diagnostic> {
        self.skip_blanks();
        if self.peek() == Some('#') {
            self.take_while(|c| c != '\n');
        }
        self.eat('\r');
        if self.eat('\n') || self.eof() {
            return Ok(());
        }
        let start = self.pos;
        let found = self.text[start..].lines().next().unwrap_or("").trim_end();
        Err(Diagnostic::error(
            Some(self.span(start, start + found.len())),
            format!("expected end of line {after}, found '{found}'"),
        )
        .with_help("put one directive or parameter on each line; quote values that contain special characters"))
    }

    /// Reads a value literal (fluentd's `parse_literal`) from the cursor to the end of the
    /// value: JSON when it starts with `[` or `{`, a quoted string, or an unquoted string.
    pub(super) fn literal(
        &mut self,
        env: &EvalEnv,
        warnings: &mut Vec<Diagnostic>,
    ) -> Result<String, Diagnostic> {
        self.skip_blanks();
        match self.peek() {
            Some('[' | '{') => self.json(env, warnings),
            Some('"') => self.double_quoted(env, warnings),
            Some('\'') => self.single_quoted(),
            _ => Ok(self.unquoted()),
        }
    }

    /// An unquoted value runs to the end of the line; trailing blanks are dropped, and a `#`
    /// preceded by a blank starts a comment (a `#` glued to text is part of it).
    pub(super) fn unquoted(&mut self) -> String {
        let mut out = String::new();
        while let Some(c) = self.peek() {
            if c != '#' && self.at_line_end() {
                break;
            }
            out.push(c);
            self.bump();
        }
        out
    }

    /// A double-quoted string: escapes, line continuations and `#{…}` are processed.
    pub(super) fn double_quoted(
        &mut self,
        env: &EvalEnv,
        warnings: &mut Vec<Diagnostic>,
    ) -> Result<String, Diagnostic> {
        let open = self.here();
        self.bump();
        let mut out = String::new();
        loop {
            let Some(c) = self.peek() else {
                return Err(Diagnostic::error(
                    Some(open),
                    "unexpected end of file in a double-quoted string",
                )
                .with_help("close the string with '\"'; write a literal quote inside it as \\\""));
            };
            if c == '"' {
                self.bump();
                return Ok(out);
            }
            if c == '\\' {
                self.escape(&mut out)?;
            } else if c == '#' && self.peek_nth(1) == Some('{') {
                out.push_str(&self.embedded(env, warnings)?);
            } else {
                out.push(c);
                self.bump();
            }
        }
    }

    fn escape(&mut self, out: &mut String) -> Result<(), Diagnostic> {
        let at = self.pos;
        self.bump();
        let Some(c) = self.bump() else {
            return Err(Diagnostic::error(
                Some(self.span(at, at + 1)),
                "unexpected end of file after '\\'",
            ));
        };
        match c {
            '\n' => {}
            '\r' => {
                self.eat('\n');
            }
            'r' => out.push('\r'),
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'f' => out.push('\u{c}'),
            'b' => out.push('\u{8}'),
            '0' => out.push('\0'),
            c if c.is_ascii_alphanumeric() => {
                return Err(Diagnostic::error(
                    Some(self.span(at, self.pos)),
                    format!("unknown escape '\\{c}' in a double-quoted string"),
                )
                .with_help(r#"the escapes are \" \' \\ \r \n \t \f \b \0; use single quotes for a literal backslash"#));
            }
            other => out.push(other),
        }
        Ok(())
    }

    /// A single-quoted string: only `\'` and `\\` are escapes; everything else is literal.
    pub(super) fn single_quoted(&mut self) -> Result<String, Diagnostic> {
        let open = self.here();
        self.bump();
        let mut out = String::new();
        loop {
            match self.peek() {
                None => {
                    return Err(Diagnostic::error(
                        Some(open),
                        "unexpected end of file in a single-quoted string",
                    )
                    .with_help(
                        "close the string with \"'\"; write a literal quote inside it as \\'",
                    ));
                }
                Some('\'') => {
                    self.bump();
                    return Ok(out);
                }
                Some('\\') if matches!(self.peek_nth(1), Some('\'' | '\\')) => {
                    self.bump();
                    out.extend(self.bump());
                }
                Some(c) => {
                    out.push(c);
                    self.bump();
                }
            }
        }
    }

    /// A JSON array or object, which may span lines and hold `#` comments outside its
    /// strings. Stored as compact JSON text.
    fn json(
        &mut self,
        env: &EvalEnv,
        warnings: &mut Vec<Diagnostic>,
    ) -> Result<String, Diagnostic> {
        let start = self.pos;
        let (kind, close) = if self.peek() == Some('[') {
            ("array", ']')
        } else {
            ("hash", '}')
        };
        let mut buf = String::new();
        let (mut depth, mut in_string) = (0usize, false);
        loop {
            let Some(c) = self.peek() else {
                return Err(Diagnostic::error(
                    Some(self.span(start, start + 1)),
                    format!("incomplete JSON {kind}: the file ends before its closing '{close}'"),
                ));
            };
            if in_string {
                match c {
                    '#' if self.peek_nth(1) == Some('{') => {
                        let value = self.embedded(env, warnings)?;
                        let quoted = serde_json::Value::String(value).to_string();
                        buf.push_str(&quoted[1..quoted.len() - 1]);
                        continue;
                    }
                    '\\' => {
                        buf.push(c);
                        self.bump();
                        buf.extend(self.bump());
                        continue;
                    }
                    '"' => in_string = false,
                    _ => {}
                }
            } else {
                match c {
                    '"' => in_string = true,
                    '[' | '{' => depth += 1,
                    ']' | '}' => depth = depth.saturating_sub(1),
                    '#' => {
                        self.take_while(|c| c != '\n');
                        continue;
                    }
                    _ => {}
                }
            }
            buf.push(c);
            self.bump();
            if depth == 0 && !in_string {
                break;
            }
        }
        match serde_json::from_str::<serde_json::Value>(&buf) {
            Ok(value) => Ok(value.to_string()),
            Err(e) => Err(Diagnostic::error(
                Some(self.span(start, self.pos)),
                format!("invalid JSON {kind}: {e}"),
            )
            .with_help("a value starting with '[' or '{' is read as JSON; quote it to use it as a plain string")),
        }
    }

    /// `#{…}` at the cursor: evaluates the supported forms.
    fn embedded(
        &mut self,
        env: &EvalEnv,
        warnings: &mut Vec<Diagnostic>,
    ) -> Result<String, Diagnostic> {
        let start = self.pos;
        self.eat_str("#{");
        let code = self.take_while(|c| c != '}' && c != '\n');
        if !self.eat('}') {
            return Err(Diagnostic::error(
                Some(self.span(start, self.pos)),
                "unterminated '#{': expected '}'",
            ));
        }
        let span = self.span(start, self.pos);
        let code = code.trim();
        match code {
            "hostname" | "Socket.gethostname" => return Ok(env.hostname.clone()),
            "worker_id" => return Ok(env.worker_id.to_string()),
            _ => {}
        }
        let Some(name) = env_var_name(code) else {
            return Err(Diagnostic::error(Some(span), format!("unsupported embedded code '#{{{code}}}'")).with_help(
                "at-forwarder evaluates only #{ENV['NAME']}, #{hostname} and #{worker_id}; write other values literally",
            ));
        };
        Ok(env.var(name).unwrap_or_else(|| {
            warnings.push(
                Diagnostic::warning(
                    Some(span),
                    format!("environment variable {name} is not set; using an empty string"),
                )
                .with_help(format!("set {name} in the environment of at-forwarder")),
            );
            String::new()
        }))
    }
}

/// The largest char boundary at or below `i` (`str::floor_char_boundary` is unstable).
fn floor_char_boundary(text: &str, i: usize) -> usize {
    let mut i = i.min(text.len());
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// `ENV['X']` or `ENV["X"]` → `X`.
fn env_var_name(code: &str) -> Option<&str> {
    let inner = code.strip_prefix("ENV[")?.strip_suffix(']')?.trim();
    let quote = inner.chars().next().filter(|q| *q == '\'' || *q == '"')?;
    let name = inner.strip_prefix(quote)?.strip_suffix(quote)?;
    let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    valid.then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(src: &str) -> Result<String, String> {
        let env = EvalEnv::fixed("node-1", &[("REGION", "eu-de"), ("EMPTY", "")]);
        let mut warnings = Vec::new();
        let mut s = Scanner::new(src, 0);
        let value = s.literal(&env, &mut warnings).map_err(|d| d.message)?;
        s.expect_line_end("after the value")
            .map_err(|d| d.message)?;
        Ok(value)
    }

    #[test]
    fn value_literals_follow_fluentd_rules() {
        let ok: &[(&str, &str)] = &[
            // unquoted
            ("foo", "foo"),
            ("foo bar  baz", "foo bar  baz"),
            ("foo   ", "foo"),
            ("foo # a comment", "foo"),
            ("43200 # set to 12 hours in case AT gets behind", "43200"),
            ("foo\t# tab then comment", "foo"),
            ("foo#bar", "foo#bar"),
            ("#foo", "#foo"),
            (r"C:\path\x", r"C:\path\x"),
            ("#{ENV['REGION']}", "#{ENV['REGION']}"),
            ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S"),
            ("/var/log/at/**/*.log*", "/var/log/at/**/*.log*"),
            // double-quoted
            (r##""a b""##, "a b"),
            (r##""say \"hi\"""##, "say \"hi\""),
            (r##""it\'s""##, "it's"),
            (r##""back\\slash""##, "back\\slash"),
            (r##""\r\n\t\f\b\0""##, "\r\n\t\u{c}\u{8}\0"),
            (r##""\#\$\.\[""##, "#$.["),
            ("\"multi\nline\"", "multi\nline"),
            ("\"con\\\ntinued\"", "continued"),
            ("\"con\\\r\ntinued\"", "continued"),
            (r##""#{ENV['REGION']}""##, "eu-de"),
            (r##""#{ENV["REGION"]}""##, "eu-de"),
            (r##""at-#{hostname}-#{worker_id}""##, "at-node-1-0"),
            (r##""#{Socket.gethostname}""##, "node-1"),
            (r##""#{ ENV['EMPTY'] }x""##, "x"),
            (r##""a # not a comment""##, "a # not a comment"),
            (r##""x" # comment after a quoted value"##, "x"),
            // single-quoted
            ("'a b'", "a b"),
            (r"'it\'s'", "it's"),
            (r"'back\\slash'", "back\\slash"),
            (r"'\n stays'", r"\n stays"),
            ("'#{hostname}'", "#{hostname}"),
            ("'two\nlines'", "two\nlines"),
            // JSON
            (r#"["a", "b"]"#, r#"["a","b"]"#),
            ("[\n  \"a\", # first\n  \"b\"\n]", r##"["a","b"]"##),
            (
                r#"{"k": 1, "n": {"m": [true]}}"#,
                r#"{"k":1,"n":{"m":[true]}}"#,
            ),
            (r##"["a#b"]"##, r##"["a#b"]"##),
            (r##"["#{ENV['REGION']}"]"##, r##"["eu-de"]"##),
            (r##"["#{hostname}\"q"]"##, r##"["node-1\"q"]"##),
            ("[] # empty", "[]"),
        ];
        for (src, want) in ok {
            assert_eq!(lit(src).as_deref(), Ok(*want), "literal {src:?}");
        }
    }

    #[test]
    fn broken_literals_are_errors() {
        let bad: &[(&str, &str)] = &[
            (
                "\"unterminated",
                "unexpected end of file in a double-quoted string",
            ),
            (
                "'unterminated",
                "unexpected end of file in a single-quoted string",
            ),
            (r##""bad \z escape""##, "unknown escape '\\z'"),
            (r##""bad \1 escape""##, "unknown escape '\\1'"),
            (r##""#{`rm -rf /`}""##, "unsupported embedded code"),
            (r##""#{ENV['X'] || 'd'}""##, "unsupported embedded code"),
            (r##""#{hostname""##, "unterminated '#{'"),
            ("[1, 2", "incomplete JSON array"),
            ("{\"a\": 1", "incomplete JSON hash"),
            ("[1, 2,]", "invalid JSON array"),
            ("{a: 1}", "invalid JSON hash"),
            (
                r##""a" b"##,
                "expected end of line after the value, found 'b'",
            ),
            ("'a' b", "expected end of line"),
        ];
        for (src, want) in bad {
            let err = lit(src).expect_err(src);
            assert!(
                err.contains(want),
                "literal {src:?}: got {err:?}, want {want:?}"
            );
        }
    }

    #[test]
    fn unset_environment_variable_warns_and_yields_empty() {
        let env = EvalEnv::fixed("h", &[]);
        let mut warnings = Vec::new();
        let mut s = Scanner::new(r##""x#{ENV['NOPE']}y""##, 0);
        assert_eq!(s.literal(&env, &mut warnings).unwrap(), "xy");
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].message.contains("NOPE is not set"));
    }

    #[test]
    fn spans_count_characters_not_bytes() {
        let s = Scanner::new("a\né x", 0);
        let span = s.span(5, 6);
        assert_eq!((span.line, span.col, span.len), (2, 3, 1));
    }
}
