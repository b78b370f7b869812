//! Reading the parameters of one section with types, collecting every problem.
//!
//! A [`Section`] remembers which parameters and subsections were read; whatever was not
//! read is reported by [`Section::finish`] as unknown, with a did-you-mean drawn from the
//! names that were asked for.

use std::path::PathBuf;
use std::time::Duration;

use super::diag::{Diagnostic, Span};
use super::syntax::{Element, Param};
use super::value::{self, ConfigEnum};

/// A value and where it was written, for checks that involve several parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Spanned<T> {
    pub(super) value: T,
    pub(super) span: Span,
}

pub(super) struct Section<'a> {
    el: &'a Element,
    used_params: Vec<bool>,
    used_children: Vec<bool>,
    known: Vec<&'static str>,
    diags: Vec<Diagnostic>,
}

impl<'a> Section<'a> {
    pub(super) fn new(el: &'a Element) -> Self {
        Section {
            el,
            used_params: vec![false; el.params.len()],
            used_children: vec![false; el.elements.len()],
            known: Vec::new(),
            diags: Vec::new(),
        }
    }

    pub(super) fn element(&self) -> &'a Element {
        self.el
    }

    pub(super) fn error(&mut self, diagnostic: Diagnostic) {
        self.diags.push(diagnostic);
    }

    /// The last occurrence of `key`, marking every occurrence as read.
    pub(super) fn param(&mut self, key: &'static str) -> Option<&'a Param> {
        self.known.push(key);
        let mut found: Option<&'a Param> = None;
        for (i, p) in self
            .el
            .params
            .iter()
            .enumerate()
            .filter(|(_, p)| p.key == key)
        {
            if let Some(previous) = found {
                self.diags.push(
                    Diagnostic::warning(
                        Some(p.key_span),
                        format!(
                            "'{key}' is set twice in {}; this value wins over line {}",
                            self.el.tag(),
                            previous.key_span.line
                        ),
                    )
                    .with_help("remove one of them"),
                );
            }
            self.used_params[i] = true;
            found = Some(p);
        }
        found
    }

    /// A parameter under its current name or a legacy alias.
    pub(super) fn param_or_alias(
        &mut self,
        key: &'static str,
        alias: &'static str,
    ) -> Option<&'a Param> {
        let current = self.param(key);
        let legacy = self.param(alias);
        // Suggest only the current name for typos.
        self.known.pop();
        current.or(legacy)
    }

    /// Converts a parameter with `parse`; a bad value is an error at the value.
    pub(super) fn typed<T>(
        &mut self,
        key: &'static str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Option<Spanned<T>> {
        let p = self.param(key)?;
        self.convert(p, parse)
    }

    pub(super) fn convert<T>(
        &mut self,
        p: &Param,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Option<Spanned<T>> {
        match parse(&p.value) {
            Ok(value) => Some(Spanned {
                value,
                span: p.value_span,
            }),
            Err(msg) => {
                let span = Some(p.value_span);
                self.diags.push(Diagnostic::error(
                    span,
                    format!("invalid value for '{}' in {}: {msg}", p.key, self.el.tag()),
                ));
                None
            }
        }
    }

    /// A string; a bare key without value is an error.
    pub(super) fn string(&mut self, key: &'static str) -> Option<Spanned<String>> {
        self.typed(key, non_empty)
    }

    /// A parameter that must be there, with a non-empty value.
    pub(super) fn required<T>(
        &mut self,
        key: &'static str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Option<Spanned<T>> {
        if self.param_missing(key) {
            self.known.push(key);
            self.missing(key);
            return None;
        }
        self.typed(key, |v| parse(&non_empty(v)?))
    }

    /// A string that must be there.
    pub(super) fn required_string(&mut self, key: &'static str) -> Option<Spanned<String>> {
        self.required(key, |v| Ok(v.to_string()))
    }

    fn param_missing(&self, key: &str) -> bool {
        !self.el.params.iter().any(|p| p.key == key)
    }

    /// Reports that a required parameter is absent.
    pub(super) fn missing(&mut self, key: &str) {
        let tag = self.el.tag();
        self.diags.push(
            Diagnostic::error(
                Some(self.el.span),
                format!(
                    "missing required parameter '{key}' in {tag} (line {})",
                    self.el.span.line
                ),
            )
            .with_help(format!("add '{key} VALUE' inside {tag}")),
        );
    }

    pub(super) fn path(&mut self, key: &'static str) -> Option<Spanned<PathBuf>> {
        self.typed(key, |v| non_empty(v).map(PathBuf::from))
    }

    pub(super) fn size(&mut self, key: &'static str) -> Option<Spanned<u64>> {
        self.typed(key, value::parse_size)
    }

    pub(super) fn duration(&mut self, key: &'static str) -> Option<Spanned<Duration>> {
        self.typed(key, value::parse_duration)
    }

    pub(super) fn bool(&mut self, key: &'static str) -> Option<Spanned<bool>> {
        self.typed(key, value::parse_bool)
    }

    pub(super) fn integer(
        &mut self,
        key: &'static str,
        min: u64,
        max: u64,
    ) -> Option<Spanned<u64>> {
        self.typed(key, |v| value::parse_integer(v, min, max))
    }

    pub(super) fn float(&mut self, key: &'static str) -> Option<Spanned<f64>> {
        self.typed(key, value::parse_float)
    }

    pub(super) fn array(&mut self, key: &'static str) -> Option<Spanned<Vec<String>>> {
        self.typed(key, value::parse_array)
    }

    pub(super) fn enumeration<E: ConfigEnum>(&mut self, key: &'static str) -> Option<Spanned<E>> {
        self.typed(key, value::parse_enum::<E>)
    }

    /// Parameters fluentd knows that have no effect here: accepted, with a warning saying why.
    pub(super) fn without_effect(&mut self, keys: &[&'static str], why: &str) {
        for key in keys {
            if let Some(p) = self.param(key) {
                let msg = format!("'{key}' has no effect in at-forwarder: {why}");
                self.diags.push(Diagnostic::warning(Some(p.key_span), msg));
            }
        }
    }

    /// Like [`Section::without_effect`], as a note: settings whose absence of effect
    /// changes nothing forwarded.
    pub(super) fn note_without_effect(&mut self, keys: &[&'static str], why: &str) {
        for key in keys {
            if let Some(p) = self.param(key) {
                let msg = format!("'{key}' has no effect in at-forwarder: {why}");
                self.diags.push(Diagnostic::note(Some(p.key_span), msg));
            }
        }
    }

    /// The one subsection called `name`, if any; a second one is an error.
    pub(super) fn child(&mut self, name: &'static str) -> Option<&'a Element> {
        let mut found = self.children(name).into_iter();
        let first = found.next();
        if let Some(extra) = found.next() {
            self.diags.push(Diagnostic::error(
                Some(extra.span),
                format!("only one <{name}> section is allowed in {}", self.el.tag()),
            ));
        }
        first
    }

    /// Every subsection called `name`, marked as read.
    pub(super) fn children(&mut self, name: &'static str) -> Vec<&'a Element> {
        self.known.push(name);
        let mut out = Vec::new();
        for (i, e) in self
            .el
            .elements
            .iter()
            .enumerate()
            .filter(|(_, e)| e.name == name)
        {
            self.used_children[i] = true;
            out.push(e);
        }
        out
    }

    /// Returns the diagnostics without reporting unread parameters (when the section's type
    /// is unknown, its parameters cannot be judged).
    pub(super) fn finish_without_unknowns(self) -> Vec<Diagnostic> {
        self.diags
    }

    /// Reports what was never read and returns every diagnostic of this section.
    pub(super) fn finish(mut self) -> Vec<Diagnostic> {
        let tag = self.el.tag();
        for (p, _) in self
            .el
            .params
            .iter()
            .zip(&self.used_params)
            .filter(|(_, used)| !**used)
        {
            let mut d = Diagnostic::warning(
                Some(p.key_span),
                format!("unknown parameter '{}' in {tag}; it is ignored", p.key),
            );
            if let Some(s) = did_you_mean(&p.key, &self.known) {
                d = d.with_help(format!("did you mean '{s}'?"));
            }
            self.diags.push(d);
        }
        for (e, _) in self
            .el
            .elements
            .iter()
            .zip(&self.used_children)
            .filter(|(_, used)| !**used)
        {
            let mut d = Diagnostic::warning(
                Some(e.span),
                format!("unknown section <{}> in {tag}; it is ignored", e.name),
            );
            if let Some(s) = did_you_mean(&e.name, &self.known) {
                d = d.with_help(format!("did you mean <{s}>?"));
            }
            self.diags.push(d);
        }
        self.diags
    }
}

fn non_empty(v: &str) -> Result<String, String> {
    if v.is_empty() {
        Err("a value is required".to_string())
    } else {
        Ok(v.to_string())
    }
}

/// The known name closest to `word`, if one is close enough to be a likely typo.
pub(crate) fn did_you_mean<'k>(word: &str, known: &[&'k str]) -> Option<&'k str> {
    let lower = word.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (strsim::levenshtein(&lower, &k.to_ascii_lowercase()), *k))
        .filter(|(distance, k)| *distance <= (k.len() / 3).max(2))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_catch_typos_and_case() {
        let known = ["rotate_wait", "read_from_head", "targetHost", "path"];
        assert_eq!(did_you_mean("rotate_wiat", &known), Some("rotate_wait"));
        assert_eq!(did_you_mean("targethost", &known), Some("targetHost"));
        assert_eq!(
            did_you_mean("read_from_tail", &known),
            Some("read_from_head")
        );
        assert_eq!(did_you_mean("pth", &known), Some("path"));
        assert_eq!(did_you_mean("completely_else", &known), None);
    }
}
