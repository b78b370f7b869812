//! From the syntax tree to a typed, validated [`Config`]: hoists `<worker>` sections,
//! resolves labels and routes, builds every directive, and collects every problem at once.

use std::collections::HashMap;
use std::path::Path;

use super::diag::{Diagnostic, SourceMap, Span};
use super::output::{self, OUTPUT_TYPES};
use super::pattern::TagPatterns;
use super::section::{did_you_mean, Section};
use super::source::{self, SourceKind, SOURCE_TYPES};
use super::syntax::Element;
use super::{Config, Directive, Location, LogLevel, Match, Source, System, WorkerRange};

/// Labels that exist without being declared.
const BUILTIN_LABELS: &[&str] = &["@ERROR", "@FLUENT_LOG"];
const ROOT_DIRECTIVES: &[&str] = &["source", "match", "filter", "label", "system", "worker"];
const WORKER_DIRECTIVES: &[&str] = &["source", "match", "filter", "label"];

/// A directive with the worker range and label it sits in.
struct Placed<'a> {
    el: &'a Element,
    workers: Option<WorkerRange>,
    label: Option<String>,
}

struct Builder<'a> {
    sources_map: &'a SourceMap,
    diags: Vec<Diagnostic>,
    /// Every `<worker>` section's ids and place, to check against `<system> workers`.
    worker_sections: Vec<(WorkerRange, Span)>,
}

pub(super) fn build(
    root: &Element,
    sources_map: &SourceMap,
    path: &Path,
) -> (Option<Config>, Vec<Diagnostic>) {
    let mut b = Builder {
        sources_map,
        diags: Vec::new(),
        worker_sections: Vec::new(),
    };
    for p in &root.params {
        b.diags.push(Diagnostic::warning(
            Some(p.key_span),
            format!("parameter '{}' outside any section is ignored", p.key),
        ));
    }
    let placed = b.hoist_workers(root);
    let system = b.system(&placed);
    let labels = b.labels(&placed);
    let mut flat: Vec<Placed<'_>> = Vec::new();
    for p in placed {
        if p.el.name == "label" {
            for inner in b.label_contents(p.el) {
                flat.push(Placed {
                    el: inner,
                    workers: p.workers,
                    label: Some(p.el.arg.clone()),
                });
            }
        } else {
            flat.push(p);
        }
    }
    let mut config = Config {
        path: path.to_path_buf(),
        system,
        sources: Vec::new(),
        matches: Vec::new(),
        filters: Vec::new(),
        labels,
    };
    for (order, p) in flat.iter().enumerate() {
        match p.el.name.as_str() {
            "source" => config
                .sources
                .extend(b.source(p, &config.labels).map(|mut s| {
                    s.directive.order = order;
                    s
                })),
            "match" => config
                .matches
                .extend(b.output(p, &config.system).map(|mut m| {
                    m.directive.order = order;
                    m
                })),
            "filter" => config.filters.extend(b.filter(p).map(|mut f| {
                f.directive.order = order;
                f
            })),
            _ => {}
        }
    }
    b.check_ids(&config);
    b.check_workers(config.system.workers);
    if !b
        .diags
        .iter()
        .any(|d| d.severity == super::diag::Severity::Error)
    {
        // With a directive missing, a route check would only add noise.
        b.check_routes(&config);
    }
    let ok = !b
        .diags
        .iter()
        .any(|d| d.severity == super::diag::Severity::Error);
    (ok.then_some(config), b.diags)
}

impl<'a> Builder<'a> {
    fn location(&self, span: Span) -> Location {
        Location {
            file: self.sources_map.path(span.file).to_path_buf(),
            line: span.line,
        }
    }

    /// Root directives, with the contents of `<worker N>` / `<worker N-M>` moved up and
    /// tagged with their worker ids (fluentd's root_agent does the same).
    fn hoist_workers(&mut self, root: &'a Element) -> Vec<Placed<'a>> {
        let mut out = Vec::new();
        for el in &root.elements {
            if !ROOT_DIRECTIVES.contains(&el.name.as_str()) {
                let mut d =
                    Diagnostic::error(Some(el.span), format!("unknown directive <{}>", el.name));
                if let Some(s) = did_you_mean(&el.name, ROOT_DIRECTIVES) {
                    d = d.with_help(format!("did you mean <{s}>?"));
                }
                self.diags.push(d);
                continue;
            }
            if el.name != "worker" {
                out.push(Placed {
                    el,
                    workers: None,
                    label: None,
                });
                continue;
            }
            let range = parse_worker_range(&el.arg)
                .map_err(|msg| Diagnostic::error(Some(el.arg_span), msg));
            let range = match range {
                Ok(r) => {
                    self.worker_sections.push((r, el.arg_span));
                    Some(r)
                }
                Err(d) => {
                    self.diags.push(d);
                    None
                }
            };
            for p in &el.params {
                self.diags.push(Diagnostic::warning(
                    Some(p.key_span),
                    format!("parameter '{}' in <worker> is ignored", p.key),
                ));
            }
            for inner in &el.elements {
                if WORKER_DIRECTIVES.contains(&inner.name.as_str()) {
                    out.push(Placed {
                        el: inner,
                        workers: range,
                        label: None,
                    });
                } else {
                    self.diags.push(
                        Diagnostic::error(
                            Some(inner.span),
                            format!("<worker> section cannot have <{}>", inner.name),
                        )
                        .with_help("a <worker> holds only <source>, <match>, <filter> and <label>"),
                    );
                }
            }
        }
        out
    }

    fn system(&mut self, placed: &[Placed<'_>]) -> System {
        let systems: Vec<&Element> = placed
            .iter()
            .filter(|p| p.el.name == "system")
            .map(|p| p.el)
            .collect();
        for extra in systems.iter().skip(1) {
            self.diags.push(Diagnostic::error(
                Some(extra.span),
                "only one <system> section is allowed",
            ));
        }
        let mut system = System::default();
        let Some(el) = systems.first() else {
            return system;
        };
        let mut s = Section::new(el);
        if let Some(w) = s.integer("workers", 1, 1024) {
            system.workers = w.value;
        }
        system.root_dir = s.path("root_dir").map(|p| p.value);
        if let Some(limit) = s.size("dead_letter_limit_size") {
            system.dead_letter_limit_size = limit.value;
        }
        if let Some(d) = s.duration("stall_timeout") {
            system.stall_timeout = d.value.max(std::time::Duration::from_secs(1));
        }
        system.http_port = s
            .integer("http_port", 1, 65535)
            .and_then(|p| u16::try_from(p.value).ok());
        if let Some(level) = s.param_or_alias("log_level", "@log_level") {
            system.log_level = s
                .convert(level, super::value::parse_enum::<LogLevel>)
                .map_or(LogLevel::Info, |v| v.value);
        }
        s.without_effect(
            &[
                "suppress_repeated_stacktrace",
                "emit_error_log_interval",
                "suppress_config_dump",
                "without_source",
                "process_name",
                "rpc_endpoint",
                "enable_get_dump",
            ],
            "it configures fluentd's own process",
        );
        self.diags.extend(s.finish());
        system
    }

    fn labels(&mut self, placed: &[Placed<'_>]) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for el in placed.iter().filter(|p| p.el.name == "label").map(|p| p.el) {
            let name = el.arg.trim();
            if name.is_empty() {
                self.diags.push(
                    Diagnostic::error(Some(el.span), "missing label name on <label> directive")
                        .with_help("write <label @NAME>"),
                );
            } else if name == "@ROOT" {
                self.diags.push(Diagnostic::error(
                    Some(el.arg_span),
                    "@ROOT is a reserved label",
                ));
            } else if names.iter().any(|n| n == name) {
                self.diags.push(Diagnostic::error(
                    Some(el.arg_span),
                    format!("label {name} is declared twice"),
                ));
            } else {
                names.push(name.to_string());
            }
            for p in &el.params {
                self.diags.push(Diagnostic::warning(
                    Some(p.key_span),
                    format!("parameter '{}' in <label> is ignored", p.key),
                ));
            }
        }
        names
    }

    fn label_contents(&mut self, el: &'a Element) -> Vec<&'a Element> {
        let mut out = Vec::new();
        for inner in &el.elements {
            if inner.name == "match" || inner.name == "filter" {
                out.push(inner);
            } else {
                self.diags.push(
                    Diagnostic::error(
                        Some(inner.span),
                        format!("<label> section cannot have <{}>", inner.name),
                    )
                    .with_help("a <label> holds only <filter> and <match>"),
                );
            }
        }
        out
    }

    /// `@type` (or the legacy `type`), required on every directive.
    fn plugin_type(&mut self, s: &mut Section<'_>) -> Option<(String, Span)> {
        match s.param_or_alias("@type", "type") {
            Some(p) if !p.value.is_empty() => Some((p.value.clone(), p.value_span)),
            _ => {
                let el = s.element();
                self.diags.push(
                    Diagnostic::error(
                        Some(el.span),
                        format!(
                            "missing '@type' parameter on <{}> directive (line {})",
                            el.name, el.span.line
                        ),
                    )
                    .with_help(format!("add '@type NAME' inside {}", el.tag())),
                );
                None
            }
        }
    }

    fn unknown_type(&mut self, kind: &str, name: &str, span: Span, known: &[&str]) {
        let mut help = format!(
            "known {kind} types: {}",
            if known.is_empty() {
                "none yet".to_string()
            } else {
                known.join(", ")
            }
        );
        if let Some(s) = did_you_mean(name, known) {
            help = format!("did you mean '{s}'? {help}");
        }
        self.diags.push(
            Diagnostic::error(Some(span), format!("unknown {kind} type '{name}'")).with_help(help),
        );
    }

    fn directive(
        &mut self,
        s: &mut Section<'_>,
        p: &Placed<'_>,
        label: Option<String>,
    ) -> Directive {
        Directive {
            id: s
                .param_or_alias("@id", "id")
                .map(|p| p.value.clone())
                .filter(|v| !v.is_empty()),
            log_level: s
                .param_or_alias("@log_level", "log_level")
                .and_then(|p| s.convert(p, super::value::parse_enum::<LogLevel>))
                .map(|v| v.value),
            label,
            workers: p.workers,
            order: 0,
            location: self.location(p.el.span),
            span: p.el.span,
        }
    }

    fn source(&mut self, p: &Placed<'_>, labels: &[String]) -> Option<Source> {
        let mut s = Section::new(p.el);
        let label = s.param("@label").map(|l| (l.value.clone(), l.value_span));
        if let Some((name, span)) = &label {
            if !labels.contains(name) && !BUILTIN_LABELS.contains(&name.as_str()) {
                let known: Vec<&str> = labels.iter().map(String::as_str).collect();
                let mut d =
                    Diagnostic::error(Some(*span), format!("@label {name} is not declared"));
                if let Some(s) = did_you_mean(name, &known) {
                    d = d.with_help(format!("did you mean {s}?"));
                }
                self.diags.push(d);
            }
        }
        let directive = self.directive(&mut s, p, label.map(|l| l.0));
        let kind = self.typed_directive(s, "input", SOURCE_TYPES, |s, name, _| {
            source::build(s, name)
        });
        Some(Source {
            directive,
            kind: kind?,
        })
    }

    fn output(&mut self, p: &Placed<'_>, system: &System) -> Option<Match> {
        let mut s = Section::new(p.el);
        let patterns =
            TagPatterns::new(&p.el.arg).map_err(|msg| Diagnostic::error(Some(p.el.arg_span), msg));
        let directive = self.directive(&mut s, p, p.label.clone());
        let default_buffer_path = system
            .root_dir
            .as_ref()
            .and_then(|root| directive.id.as_ref().map(|id| root.join("buffer").join(id)));
        let built = self.typed_directive(s, "output", OUTPUT_TYPES, |s, name, diags| {
            output::build(s, name, default_buffer_path, diags)
        });
        let patterns = patterns.map_err(|d| self.diags.push(d)).ok()?;
        let (output, buffer) = built?;
        Some(Match {
            directive,
            patterns,
            output,
            buffer,
        })
    }

    /// Reads `@type` and, when it is one of `known`, builds the directive with `build`.
    /// Unknown parameters are reported only for a known type: for an unknown one they
    /// cannot be judged.
    fn typed_directive<T>(
        &mut self,
        mut s: Section<'_>,
        kind: &str,
        known: &[&str],
        build: impl FnOnce(&mut Section<'_>, &str, &mut Vec<Diagnostic>) -> Option<T>,
    ) -> Option<T> {
        let built = match self.plugin_type(&mut s) {
            Some((name, _)) if known.contains(&name.as_str()) => {
                let built = build(&mut s, &name, &mut self.diags);
                self.diags.extend(s.finish());
                return built;
            }
            Some((name, span)) => {
                self.unknown_type(kind, &name, span, known);
                None
            }
            None => None,
        };
        self.diags.extend(s.finish_without_unknowns());
        built
    }

    fn filter(&mut self, p: &Placed<'_>) -> Option<super::filter::Filter> {
        let mut s = Section::new(p.el);
        let patterns =
            TagPatterns::new(&p.el.arg).map_err(|msg| Diagnostic::error(Some(p.el.arg_span), msg));
        let directive = self.directive(&mut s, p, p.label.clone());
        let kind = self.typed_directive(s, "filter", super::filter::FILTER_TYPES, |s, name, _| {
            super::filter::build(s, name)
        });
        let patterns = patterns.map_err(|d| self.diags.push(d)).ok()?;
        Some(super::filter::Filter {
            directive,
            patterns,
            kind: kind?,
        })
    }

    fn check_ids(&mut self, config: &Config) {
        let mut seen: HashMap<&str, &Location> = HashMap::new();
        let all = config
            .sources
            .iter()
            .map(|s| &s.directive)
            .chain(config.matches.iter().map(|m| &m.directive));
        for d in all {
            let Some(id) = &d.id else { continue };
            if let Some(first) = seen.insert(id, &d.location) {
                self.diags.push(Diagnostic::error(
                    None,
                    format!(
                        "duplicate @id '{id}': used at {}:{} and {}:{}",
                        first.file.display(),
                        first.line,
                        d.location.file.display(),
                        d.location.line
                    ),
                ));
            }
        }
    }

    fn check_workers(&mut self, workers: u64) {
        let mut ranges = std::mem::take(&mut self.worker_sections);
        for (range, span) in &ranges {
            if range.last >= workers {
                self.diags.push(Diagnostic::error(Some(*span), format!(
                    "worker id {} is not allowed: <system> workers is {workers}, so ids go from 0 to {}",
                    range.last, workers - 1
                )).with_help("at-forwarder runs as one process; keep <worker 0> or raise 'workers'"));
            }
        }
        ranges.sort_by_key(|(r, _)| (r.first, r.last));
        for pair in ranges.windows(2) {
            let ((a, _), (b, span)) = (pair[0], pair[1]);
            let uses_range = a.first != a.last || b.first != b.last;
            if uses_range && b.first <= a.last {
                self.diags.push(Diagnostic::error(
                    Some(span),
                    format!("worker ranges {a} and {b} overlap"),
                ));
            }
        }
    }

    /// Warns about sources whose events no `<match>` receives.
    fn check_routes(&mut self, config: &Config) {
        if config.sources.is_empty() {
            self.diags.push(
                Diagnostic::warning(None, "no <source>: at-forwarder will read nothing")
                    .with_help("add a <source> with @type tail"),
            );
        }
        for source in &config.sources {
            let SourceKind::Tail(tail) = &source.kind;
            let tag = tail.tag.expand(&example_path(&tail.options.paths[0]));
            if config
                .route(source.directive.label.as_deref(), &tag)
                .is_none()
            {
                self.diags.push(Diagnostic::warning(Some(source.directive.span), format!("no <match> receives the events of this source (tag '{tag}')"))
                    .with_help("add a <match> whose pattern matches the tag; unmatched events are not forwarded"));
            }
        }
    }
}

/// A path that the glob could match, to show an example tag.
pub(crate) fn example_path(glob: &str) -> String {
    glob.replace("**", "x").replace(['*', '?'], "x")
}

fn parse_worker_range(arg: &str) -> Result<WorkerRange, String> {
    let arg = arg.trim();
    let num = |s: &str| {
        s.trim()
            .parse::<u64>()
            .map_err(|_| format!("invalid worker id '{arg}': use <worker N> or <worker N-M>"))
    };
    let range = match arg.split_once('-') {
        None => WorkerRange {
            first: num(arg)?,
            last: num(arg)?,
        },
        Some((a, b)) => WorkerRange {
            first: num(a)?,
            last: num(b)?,
        },
    };
    if range.first > range.last {
        return Err(format!(
            "invalid worker range '{arg}': the first id is larger than the last"
        ));
    }
    Ok(range)
}
