//! Located diagnostics: every problem found in a configuration names the file, line and
//! column, and is shown with the offending line and a caret under the culprit.
//!
//! The parser stops at the first syntax error (what follows it cannot be trusted); the
//! validator collects every problem it finds, so a user fixes a file in one round.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Index of a file in a [`SourceMap`].
pub type FileId = u32;

/// A place in a configuration file: 1-based line and column (in characters), and how many
/// characters the caret should underline (at least one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Which file of the [`SourceMap`].
    pub file: FileId,
    /// 1-based line.
    pub line: u32,
    /// 1-based column, counted in characters.
    pub col: u32,
    /// Number of characters to underline.
    pub len: u32,
}

/// The text of every file read while loading a configuration (the main file and its
/// `@include`s), so that diagnostics can quote the offending line.
#[derive(Debug, Default)]
pub struct SourceMap {
    files: Vec<(PathBuf, String)>,
}

impl SourceMap {
    /// Adds a file and returns its id.
    pub fn add(&mut self, path: PathBuf, text: String) -> FileId {
        self.files.push((path, text));
        u32::try_from(self.files.len() - 1).expect("fewer than 2^32 included files")
    }

    /// The path a file was read from.
    pub fn path(&self, file: FileId) -> &Path {
        &self.files[file as usize].0
    }

    /// The text of a file.
    pub fn text(&self, file: FileId) -> &str {
        &self.files[file as usize].1
    }

    /// The text of one line (1-based), without its line ending.
    pub fn line_text(&self, file: FileId, line: u32) -> &str {
        self.text(file)
            .split('\n')
            .nth(line.saturating_sub(1) as usize)
            .unwrap_or("")
            .trim_end_matches('\r')
    }
}

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Accepted and harmless, worth knowing (a setting fluentd ignores in the same way);
    /// never an error, also under `check --strict`.
    Note,
    /// Loaded, but probably not what the author meant (unknown parameter, ignored value).
    Warning,
    /// The configuration cannot be used.
    Error,
}

/// One problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// What is wrong, in one sentence.
    pub message: String,
    /// Where; `None` for problems of the whole file.
    pub span: Option<Span>,
    /// What to do about it, when there is something useful to say.
    pub help: Option<String>,
}

impl Diagnostic {
    /// An error at `span`.
    pub fn error(span: Option<Span>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            message: message.into(),
            span,
            help: None,
        }
    }

    /// A warning at `span`.
    pub fn warning(span: Option<Span>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            message: message.into(),
            span,
            help: None,
        }
    }

    /// A note at `span`: accepted, without consequence for what is forwarded.
    pub fn note(span: Option<Span>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Note,
            message: message.into(),
            span,
            help: None,
        }
    }

    /// Adds a hint on how to fix the problem.
    #[must_use]
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

/// A set of diagnostics together with the sources they point into; `Display` renders them
/// the way a compiler would.
#[derive(Debug, Clone)]
pub struct Report {
    diagnostics: Vec<Diagnostic>,
    sources: Arc<SourceMap>,
}

impl Report {
    /// Bundles diagnostics with their sources, errors first, each group in file order.
    pub fn new(mut diagnostics: Vec<Diagnostic>, sources: Arc<SourceMap>) -> Self {
        diagnostics.sort_by_key(|d| {
            let at = d.span.map(|s| (s.file, s.line, s.col));
            (std::cmp::Reverse(d.severity), at)
        });
        Report {
            diagnostics,
            sources,
        }
    }

    /// Every diagnostic, errors first.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.diagnostics
    }

    /// How many errors the report holds.
    pub fn error_count(&self) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }

    /// How many warnings the report holds.
    pub fn warning_count(&self) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Warning)
            .count()
    }

    /// How many notes the report holds.
    pub fn note_count(&self) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Note)
            .count()
    }

    /// True when there is nothing to report.
    pub fn is_empty(&self) -> bool {
        self.diagnostics.is_empty()
    }

    /// The files read, to name them in messages.
    pub fn sources(&self) -> &SourceMap {
        &self.sources
    }

    /// Turns every warning into an error (`check --strict`); notes stay notes.
    pub fn promote_warnings(&mut self) {
        for d in &mut self.diagnostics {
            if d.severity == Severity::Warning {
                d.severity = Severity::Error;
            }
        }
    }

    /// `file:line:col` of a span, as shown in messages.
    pub fn locate(&self, span: Span) -> String {
        format!(
            "{}:{}:{}",
            self.sources.path(span.file).display(),
            span.line,
            span.col
        )
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            render(f, d, &self.sources)?;
        }
        Ok(())
    }
}

fn render(f: &mut fmt::Formatter<'_>, d: &Diagnostic, sources: &SourceMap) -> fmt::Result {
    let level = match d.severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Note => "note",
    };
    writeln!(f, "{level}: {}", d.message)?;
    let mut pad = " ".to_string();
    if let Some(span) = d.span {
        let number = span.line.to_string();
        pad = " ".repeat(number.len());
        let text = redact_secret_value(sources.line_text(span.file, span.line));
        let shown: String = text.replace('\t', " ");
        let caret_col = span.col.saturating_sub(1) as usize;
        let caret_len =
            (span.len.max(1) as usize).min(shown.chars().count().saturating_sub(caret_col).max(1));
        writeln!(
            f,
            "{pad}--> {}:{}:{}",
            sources.path(span.file).display(),
            span.line,
            span.col
        )?;
        writeln!(f, "{pad} |")?;
        writeln!(f, "{number} | {shown}")?;
        writeln!(
            f,
            "{pad} | {}{}",
            " ".repeat(caret_col),
            "^".repeat(caret_len)
        )?;
    }
    if let Some(help) = &d.help {
        writeln!(f, "{pad} = help: {help}")?;
    }
    Ok(())
}

/// Parameter names whose values are credentials: their values never appear in a
/// diagnostic, even when the line is quoted to show an error next to them.
pub(crate) fn is_secret_key(key: &str) -> bool {
    let key = key.trim_start_matches('@').to_ascii_lowercase();
    [
        "token",
        "password",
        "passwd",
        "credential",
        "api_key",
        "apikey",
        "private_key",
    ]
    .iter()
    .any(|word| key.contains(word))
}

fn redact_secret_value(line: &str) -> String {
    let trimmed = line.trim_start();
    let indent = &line[..line.len() - trimmed.len()];
    let key = trimmed.split([' ', '\t']).next().unwrap_or("");
    if is_secret_key(key) && trimmed.len() > key.len() {
        format!("{indent}{key} [REDACTED]")
    } else {
        line.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_file_line_column_excerpt_and_caret() {
        let mut sources = SourceMap::default();
        let file = sources.add(
            "a.conf".into(),
            "<source>\n  @type tial\n</source>\n".into(),
        );
        let d = Diagnostic::error(
            Some(Span {
                file,
                line: 2,
                col: 9,
                len: 4,
            }),
            "unknown input type 'tial'",
        )
        .with_help("did you mean 'tail'?");
        let text = Report::new(vec![d], Arc::new(sources)).to_string();
        assert_eq!(
            text,
            "error: unknown input type 'tial'\n --> a.conf:2:9\n  |\n2 |   @type tial\n  |         ^^^^\n  = help: did you mean 'tail'?\n"
        );
    }

    #[test]
    fn secret_values_are_never_quoted() {
        let mut sources = SourceMap::default();
        let file = sources.add("a.conf".into(), "  auth_token s3cr3t-value\n".into());
        let d = Diagnostic::warning(
            Some(Span {
                file,
                line: 1,
                col: 3,
                len: 10,
            }),
            "unknown parameter",
        );
        let text = Report::new(vec![d], Arc::new(sources)).to_string();
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(text.contains("auth_token [REDACTED]"), "{text}");
    }
}
