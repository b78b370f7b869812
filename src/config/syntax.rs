//! The directive layer of fluentd's v1 configuration syntax: sections (`<name arg>` …
//! `</name>`), parameters (`key value`) and `@include`, turned into a tree of
//! [`Element`]s. Nothing here knows what a `<source>` is; `config::build` gives meaning.

use std::path::{Path, PathBuf};

use super::diag::{Diagnostic, FileId, SourceMap, Span};
use super::scan::{EvalEnv, Scanner};

/// Parameters that fluentd reserves, with the `@` prefix, on every directive.
pub const RESERVED_PARAMS: [&str; 4] = ["@type", "@id", "@label", "@log_level"];

/// Sections in which an unknown `@`-prefixed parameter is an error (deeper, a warning).
const STRICT_AT_PREFIX_SECTIONS: [&str; 4] = ["source", "match", "filter", "system"];

/// How deep `@include` may nest before we call it a loop we failed to see.
const MAX_INCLUDE_DEPTH: usize = 32;

/// A section of the configuration: the file itself (the root), or `<name arg> … </name>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Element {
    /// Section name (`source`, `match`, `buffer` …); empty for the root.
    pub name: String,
    /// What follows the name in the start tag (`kubernetes.at.**` in `<match kubernetes.at.**>`).
    pub arg: String,
    /// Parameters in file order (a key may repeat; the last one wins, as in fluentd).
    pub params: Vec<Param>,
    /// Nested sections in file order.
    pub elements: Vec<Element>,
    /// The section name in its start tag.
    pub span: Span,
    /// The argument in the start tag (the name when there is none).
    pub arg_span: Span,
}

/// One `key value` line.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    /// The key as written (`@type`, `path` …).
    pub key: String,
    /// The value after literal processing; empty for a bare key.
    pub value: String,
    /// False for a bare key (`follow_inodes` alone on its line).
    pub has_value: bool,
    /// The key.
    pub key_span: Span,
    /// The value (the key for a bare key).
    pub value_span: Span,
}

impl Element {
    /// The section's start tag as written, for messages: `<match kubernetes.at.**>`.
    pub fn tag(&self) -> String {
        if self.arg.is_empty() {
            format!("<{}>", self.name)
        } else {
            format!("<{} {}>", self.name, self.arg)
        }
    }
}

/// Shared state while parsing a file and everything it includes.
pub(super) struct ParseCtx<'e> {
    pub(super) sources: SourceMap,
    pub(super) warnings: Vec<Diagnostic>,
    env: &'e EvalEnv,
    include_stack: Vec<PathBuf>,
}

impl<'e> ParseCtx<'e> {
    pub(super) fn new(env: &'e EvalEnv) -> Self {
        ParseCtx {
            sources: SourceMap::default(),
            warnings: Vec::new(),
            env,
            include_stack: Vec::new(),
        }
    }
}

/// Parses the file already added to `ctx.sources` as `file` into a root element.
pub(super) fn parse_root(ctx: &mut ParseCtx<'_>, file: FileId) -> Result<Element, Diagnostic> {
    let start = Span {
        file,
        line: 1,
        col: 1,
        len: 1,
    };
    let mut root = Element {
        name: String::new(),
        arg: String::new(),
        params: Vec::new(),
        elements: Vec::new(),
        span: start,
        arg_span: start,
    };
    if let Ok(path) = ctx.sources.path(file).canonicalize() {
        ctx.include_stack.push(path);
    }
    parse_file_into(ctx, file, &mut root.params, &mut root.elements)?;
    Ok(root)
}

fn parse_file_into(
    ctx: &mut ParseCtx<'_>,
    file: FileId,
    params: &mut Vec<Param>,
    elements: &mut Vec<Element>,
) -> Result<(), Diagnostic> {
    let text = ctx.sources.text(file).to_owned();
    let mut s = Scanner::new(&text, file);
    Body {
        ctx,
        s: &mut s,
        open: None,
        params,
        elements,
    }
    .parse()
}

/// The open section whose end tag the body waits for.
struct Open<'a> {
    name: &'a str,
    span: Span,
}

struct Body<'a, 'b, 'e, 't> {
    ctx: &'a mut ParseCtx<'e>,
    s: &'a mut Scanner<'t>,
    open: Option<Open<'b>>,
    params: &'a mut Vec<Param>,
    elements: &'a mut Vec<Element>,
}

impl Body<'_, '_, '_, '_> {
    fn parse(mut self) -> Result<(), Diagnostic> {
        loop {
            self.s.skip_spacing();
            if self.s.eof() {
                return match &self.open {
                    None => Ok(()),
                    Some(open) => Err(Diagnostic::error(
                        Some(open.span),
                        format!(
                            "expected end tag </{}> but reached the end of the file",
                            open.name
                        ),
                    )
                    .with_help(format!(
                        "close the <{0}> section opened here with </{0}>",
                        open.name
                    ))),
                };
            }
            if self.s.starts_with("</") {
                return self.end_tag();
            }
            if self.s.peek() == Some('<') {
                let element = self.section()?;
                self.elements.push(element);
            } else {
                self.param()?;
            }
        }
    }

    fn end_tag(&mut self) -> Result<(), Diagnostic> {
        let start = self.s.pos();
        self.s.eat_str("</");
        let name = self.s.take_while(|c| c.is_ascii_alphanumeric() || c == '_');
        self.s.skip_blanks();
        if !self.s.eat('>') {
            return Err(Diagnostic::error(
                Some(self.s.here()),
                format!("expected '>' to close the end tag </{name}"),
            ));
        }
        let span = self.s.span(start, self.s.pos());
        self.s.expect_line_end("after an end tag")?;
        match &self.open {
            None => Err(Diagnostic::error(
                Some(span),
                format!("unmatched end tag </{name}>: no section is open here"),
            )
            .with_help("remove it, or add the start tag it was meant to close")),
            Some(open) if open.name != name => Err(Diagnostic::error(
                Some(span),
                format!(
                    "unmatched end tag </{name}>: the open section is <{}> (line {})",
                    open.name, open.span.line
                ),
            )
            .with_help(format!("close <{0}> with </{0}> first", open.name))),
            Some(_) => Ok(()),
        }
    }

    fn section(&mut self) -> Result<Element, Diagnostic> {
        self.s.eat('<');
        let name_start = self.s.pos();
        let name = self
            .s
            .take_while(|c| c.is_ascii_alphanumeric() || c == '_')
            .to_string();
        if name.is_empty() {
            return Err(Diagnostic::error(
                Some(self.s.here()),
                "expected a section name after '<'",
            )
            .with_help(
                "section names are letters, digits and '_', as in <source> or <match pattern>",
            ));
        }
        let span = self.s.span(name_start, self.s.pos());
        self.s.skip_blanks();
        let arg_start = self.s.pos();
        let arg = match self.s.peek() {
            Some('"' | '\'') => self.s.literal(self.ctx.env, &mut self.ctx.warnings)?,
            _ => self
                .s
                .take_while(|c| c != '>' && c != '\n')
                .trim_end()
                .to_string(),
        };
        let arg_span = if arg.is_empty() {
            span
        } else {
            self.s.span(arg_start, self.s.pos())
        };
        self.s.skip_blanks();
        if !self.s.eat('>') {
            return Err(Diagnostic::error(
                Some(self.s.here()),
                format!("expected '>' to close the <{name}> tag"),
            )
            .with_help("a start tag stands alone on its line, as in <match pattern>"));
        }
        self.s.expect_line_end(&format!("after the <{name}> tag"))?;
        let (mut params, mut elements) = (Vec::new(), Vec::new());
        Body {
            ctx: &mut *self.ctx,
            s: &mut *self.s,
            open: Some(Open { name: &name, span }),
            params: &mut params,
            elements: &mut elements,
        }
        .parse()?;
        Ok(Element {
            name,
            arg,
            params,
            elements,
            span,
            arg_span,
        })
    }

    fn param(&mut self) -> Result<(), Diagnostic> {
        let key_start = self.s.pos();
        let key = self.s.take_while(|c| !c.is_whitespace()).to_string();
        let key_span = self.s.span(key_start, self.s.pos());
        self.s.skip_blanks();
        let has_value = !matches!(self.s.peek(), None | Some('\r' | '\n'));
        let is_include = key == "@include" || (key == "include" && self.open.is_none());
        if is_include {
            return self.include(&key, key_span);
        }
        self.check_reserved_prefix(&key, key_span)?;
        let value_start = self.s.pos();
        let hash_value = self.s.peek() == Some('#');
        let value = if has_value {
            self.s.literal(self.ctx.env, &mut self.ctx.warnings)?
        } else {
            String::new()
        };
        let value_span = if has_value {
            self.s.span(value_start, self.s.pos())
        } else {
            key_span
        };
        if hash_value {
            self.warn_hash_value(&key, &value, value_span);
        }
        self.s
            .expect_line_end(&format!("after the value of '{key}'"))?;
        self.params.push(Param {
            key,
            value,
            has_value,
            key_span,
            value_span,
        });
        Ok(())
    }

    /// fluentd reads `key #text` as the value `#text`, not as a bare key and a comment.
    /// We keep that meaning (configurations must load as they did) but say so.
    fn warn_hash_value(&mut self, key: &str, value: &str, span: Span) {
        self.ctx.warnings.push(
            Diagnostic::warning(Some(span), format!("the value of '{key}' is '{value}', not a comment"))
                .with_help("fluentd reads a '#' right after the key as the value; quote it, or remove it for a bare key"),
        );
    }

    fn check_reserved_prefix(&mut self, key: &str, span: Span) -> Result<(), Diagnostic> {
        if !key.starts_with('@') || RESERVED_PARAMS.contains(&key) {
            return Ok(());
        }
        let diagnostic = |d: Diagnostic| {
            d.with_help(format!(
                "the reserved parameters are {}; rename '{key}'",
                RESERVED_PARAMS.join(", ")
            ))
        };
        let msg = format!("'@' is the reserved prefix of system parameters: {key}");
        match &self.open {
            Some(open) if !STRICT_AT_PREFIX_SECTIONS.contains(&open.name) => {
                self.ctx
                    .warnings
                    .push(diagnostic(Diagnostic::warning(Some(span), msg)));
                Ok(())
            }
            _ => Err(diagnostic(Diagnostic::error(Some(span), msg))),
        }
    }

    fn include(&mut self, key: &str, key_span: Span) -> Result<(), Diagnostic> {
        if key == "include" {
            self.ctx.warnings.push(
                Diagnostic::warning(Some(key_span), "'include' is deprecated")
                    .with_help("write '@include'"),
            );
        }
        let value_start = self.s.pos();
        let spec = self.s.literal(self.ctx.env, &mut self.ctx.warnings)?;
        let span = self.s.span(value_start, self.s.pos());
        self.s.expect_line_end("after the @include path")?;
        if spec.is_empty() {
            return Err(Diagnostic::error(
                Some(key_span),
                "@include needs a path or a glob",
            ));
        }
        if spec.starts_with("http://") || spec.starts_with("https://") {
            return Err(Diagnostic::error(
                Some(span),
                format!("@include of a URL is not supported: {spec}"),
            )
            .with_help("mount or copy the file and include its path"));
        }
        let base = self
            .ctx
            .sources
            .path(span.file)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let path = base.join(&spec);
        if spec.contains(['*', '?', '[']) {
            self.include_glob(&path, span)
        } else {
            self.include_file(&path, span)
        }
    }

    fn include_glob(&mut self, pattern: &Path, span: Span) -> Result<(), Diagnostic> {
        let text = pattern.to_string_lossy();
        let entries = glob::glob(&text).map_err(|e| {
            Diagnostic::error(
                Some(span),
                format!("invalid @include pattern '{text}': {e}"),
            )
        })?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .filter(|p| p.is_file())
            .collect();
        paths.sort();
        if paths.is_empty() {
            self.ctx.warnings.push(Diagnostic::warning(
                Some(span),
                format!("@include '{text}' matches no file"),
            ));
        }
        for path in paths {
            self.include_file(&path, span)?;
        }
        Ok(())
    }

    fn include_file(&mut self, path: &Path, span: Span) -> Result<(), Diagnostic> {
        let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        if self.ctx.include_stack.contains(&canonical)
            || self.ctx.include_stack.len() >= MAX_INCLUDE_DEPTH
        {
            let chain: Vec<String> = self
                .ctx
                .include_stack
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            return Err(Diagnostic::error(
                Some(span),
                format!("@include cycle: {} → {}", chain.join(" → "), path.display()),
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|e| {
            Diagnostic::error(
                Some(span),
                format!("cannot read included file {}: {e}", path.display()),
            )
        })?;
        if holds_service_tokens(&text) {
            // Its lines would be quoted by every diagnostic and by `check`.
            return Err(Diagnostic::error(
                Some(span),
                format!(
                    "@include of {} refused: it holds service tokens (the Activity Tracker Secret); point secrets_path at its directory instead",
                    path.display()
                ),
            ));
        }
        let file = self.ctx.sources.add(path.to_path_buf(), text);
        self.ctx.include_stack.push(canonical);
        let result = parse_file_into(self.ctx, file, self.params, self.elements);
        self.ctx.include_stack.pop();
        result
    }
}

/// Whether a file is the Activity Tracker Secret (its JSON, or base64 of it).
fn holds_service_tokens(text: &str) -> bool {
    use base64::Engine;
    const FIELD: &str = "auth_token_value";
    if text.contains(FIELD) {
        return true;
    }
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .is_ok_and(|json| String::from_utf8_lossy(&json).contains(FIELD))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_include_of_the_secret_is_refused_without_quoting_it() {
        let dir = tempfile::tempdir().unwrap();
        let json = r#"{"services":[{"service_name":"svc","auth_token_value":"tok-SECRET"}]}"#;
        let b64 = {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(json)
        };
        for (name, content) in [("plain", json.to_string()), ("encoded", b64)] {
            std::fs::write(dir.path().join(name), content).unwrap();
            let env = EvalEnv::fixed("node-1", &[]);
            let mut ctx = ParseCtx::new(&env);
            let conf = format!("@include {}\n", dir.path().join(name).display());
            let file = ctx.sources.add(dir.path().join("at.conf"), conf);
            let err = parse_root(&mut ctx, file).unwrap_err();
            let shown = format!("{err:?}");
            assert!(shown.contains("holds service tokens"), "{shown}");
            assert!(!shown.contains("SECRET"), "{shown}");
        }
    }

    pub(crate) fn parse(src: &str) -> Result<Element, Diagnostic> {
        let env = EvalEnv::fixed("node-1", &[]);
        let mut ctx = ParseCtx::new(&env);
        let file = ctx.sources.add("test.conf".into(), src.into());
        parse_root(&mut ctx, file)
    }

    fn params(e: &Element) -> Vec<(&str, &str)> {
        e.params
            .iter()
            .map(|p| (p.key.as_str(), p.value.as_str()))
            .collect()
    }

    #[test]
    fn nested_sections_arguments_and_params() {
        let root = parse(
            "# comment\n<source>\n  @type tail\n  path /a/*.log # trailing\n</source>\n\n<match a.** b.*>\n  @type stdout\n  <buffer tag, time>\n    flush_interval 1s\n  </buffer>\n</match>\n",
        )
        .unwrap();
        assert_eq!(root.elements.len(), 2);
        let source = &root.elements[0];
        assert_eq!((source.name.as_str(), source.arg.as_str()), ("source", ""));
        assert_eq!(params(source), [("@type", "tail"), ("path", "/a/*.log")]);
        let m = &root.elements[1];
        assert_eq!((m.arg.as_str(), m.span.line), ("a.** b.*", 7));
        assert_eq!(m.elements[0].arg, "tag, time");
        assert_eq!(params(&m.elements[0]), [("flush_interval", "1s")]);
    }

    #[test]
    fn bare_keys_have_no_value() {
        let root = parse("<source>\n  read_from_head\n  x 1\n</source>").unwrap();
        let p = &root.elements[0].params[0];
        assert_eq!(
            (p.key.as_str(), p.value.as_str(), p.has_value),
            ("read_from_head", "", false)
        );
    }

    #[test]
    fn quoted_section_argument_with_embedded_code() {
        let root = parse("<match \"app.#{hostname}\">\n</match>\n").unwrap();
        assert_eq!(root.elements[0].arg, "app.node-1");
    }

    #[test]
    fn errors_name_line_and_column() {
        let cases: &[(&str, &str, (u32, u32))] = &[
            (
                "<source>\n  @type tail\n",
                "expected end tag </source> but reached the end of the file",
                (1, 2),
            ),
            (
                "<source>\n</match>\n",
                "unmatched end tag </match>: the open section is <source> (line 1)",
                (2, 1),
            ),
            (
                "</source>\n",
                "unmatched end tag </source>: no section is open here",
                (1, 1),
            ),
            (
                "<source\n</source>\n",
                "expected '>' to close the <source> tag",
                (1, 8),
            ),
            ("< source>\n", "expected a section name after '<'", (1, 2)),
            (
                "<source> x\n</source>\n",
                "expected end of line after the <source> tag, found 'x'",
                (1, 10),
            ),
            (
                "<source>\n  @foo bar\n</source>\n",
                "'@' is the reserved prefix of system parameters: @foo",
                (2, 3),
            ),
            (
                "@include http://example.com/x.conf\n",
                "@include of a URL is not supported",
                (1, 10),
            ),
            (
                "@include /nonexistent/at-forwarder/x.conf\n",
                "cannot read included file",
                (1, 10),
            ),
            (
                "<source>\n</source x\n",
                "expected '>' to close the end tag </source",
                (2, 10),
            ),
        ];
        for (src, msg, (line, col)) in cases {
            let err = parse(src).expect_err(src);
            let span = err.span.expect("located");
            assert!(err.message.contains(msg), "{src:?}: got {:?}", err.message);
            assert_eq!(
                (span.line, span.col),
                (*line, *col),
                "{src:?}: {}",
                err.message
            );
        }
    }

    #[test]
    fn at_prefix_in_deep_sections_only_warns() {
        let env = EvalEnv::fixed("h", &[]);
        let mut ctx = ParseCtx::new(&env);
        let file = ctx.sources.add(
            "t.conf".into(),
            "<match **>\n <buffer>\n  @foo 1\n </buffer>\n</match>\n".into(),
        );
        parse_root(&mut ctx, file).unwrap();
        assert_eq!(ctx.warnings.len(), 1);
    }
}
