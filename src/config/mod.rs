//! Configuration: fluentd's v1 syntax in, a typed and validated [`Config`] out.
//!
//! at-forwarder reads the ConfigMap file that fed fluentd's `ibmactivitytracker` pipeline,
//! unchanged. Loading goes in layers, each with its own module:
//!
//! 1. [`scan`](self) and [`syntax`]: the text becomes a tree of sections and parameters;
//!    `@include` is expanded, `#{…}` evaluated. The first syntax error stops here.
//! 2. `build`: the tree becomes a [`Config`] — `<worker>` hoisted, labels resolved, every
//!    directive typed with fluentd's names and defaults ([`source`], [`output`], [`buffer`]).
//!    Every problem is collected, so one run of `check` shows them all.
//!
//! Every diagnostic names file, line and column ([`diag`]). Unknown parameters are warnings
//! with a did-you-mean; anything that would make at-forwarder do something other than
//! what the file says is an error.
//!
//! ```
//! use at_forwarder::config::{load_str, EvalEnv, LoadOptions};
//!
//! let text = r#"
//! <source>
//!   @type tail
//!   path /var/log/at/**/*.log
//!   tag kubernetes.at.*
//!   format json
//!   pos_file /var/lib/at-forwarder/positions
//!   rotate_wait 43200 # 12 hours
//! </source>
//! <match kubernetes.at.**>
//!   @type stdout
//! </match>
//! "#;
//! let options = LoadOptions { strict: true, env: EvalEnv::fixed("node-1", &[]) };
//! let loaded = load_str(text, "at.conf".as_ref(), &options).expect("valid");
//! let tag = "kubernetes.at.var.log.at.app.log";
//! assert!(loaded.config.route(None, tag).is_some());
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub mod buffer;
mod build;
pub mod cloud_logs;
pub mod diag;
mod display;
pub mod filter;
pub mod http;
pub mod output;
pub mod pattern;
mod scan;
mod section;
pub mod source;
pub mod syntax;
pub mod value;

pub use buffer::BufferConfig;
pub use diag::{Diagnostic, Report, Severity};
pub use output::{AtOutput, Output};
pub use pattern::{TagPatterns, TailTag};
pub use scan::EvalEnv;
pub use source::{RotationConfig, SourceKind, TailSource};

use value::config_enum;

/// A loaded, validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it was loaded from.
    pub path: PathBuf,
    /// The `<system>` section.
    pub system: System,
    /// `<source>` directives, in file order.
    pub sources: Vec<Source>,
    /// `<match>` directives, in file order (those inside a `<label>` carry its name).
    pub matches: Vec<Match>,
    /// `<filter>` directives, in file order (those inside a `<label>` carry its name).
    pub filters: Vec<filter::Filter>,
    /// Labels declared with `<label @NAME>`.
    pub labels: Vec<String>,
}

impl Config {
    /// Where at-forwarder keeps state besides positions (dead letters, requeued lines):
    /// `<system> root_dir` when set, otherwise the directory of the first tail source's
    /// `pos_file`.
    pub fn state_dir(&self) -> Option<PathBuf> {
        if let Some(root) = &self.system.root_dir {
            return Some(root.clone());
        }
        self.sources.iter().find_map(|s| {
            let SourceKind::Tail(t) = &s.kind;
            t.options
                .pos_file
                .as_ref()
                .and_then(|p| p.parent())
                .map(Path::to_path_buf)
        })
    }

    /// The `<match>` that receives events tagged `tag` emitted into `label` (`None`: the
    /// root): the first one, in file order, whose patterns match.
    pub fn route(&self, label: Option<&str>, tag: &str) -> Option<&Match> {
        self.matches
            .iter()
            .find(|m| m.directive.label.as_deref() == label && m.patterns.matches(tag))
    }

    /// The filters an event of `tag` from a source with `label` passes, in file order:
    /// those of its label whose pattern matches and that come before its `<match>`.
    pub fn filters_for(&self, label: Option<&str>, tag: &str) -> Vec<usize> {
        let before = self
            .route(label, tag)
            .map_or(usize::MAX, |m| m.directive.order);
        self.filters
            .iter()
            .enumerate()
            .filter(|(_, f)| {
                f.directive.label.as_deref() == label
                    && f.patterns.matches(tag)
                    && f.directive.order < before
            })
            .map(|(i, _)| i)
            .collect()
    }
}

config_enum! {
    /// Log levels (`@log_level`, `<system> log_level`).
    pub enum LogLevel {
        /// Everything.
        Trace = "trace",
        /// Per-batch detail.
        Debug = "debug",
        /// Lifecycle.
        Info = "info",
        /// Recovered problems.
        Warn = "warn",
        /// Data at risk or operator action needed.
        Error = "error",
        /// Read as error.
        Fatal = "fatal",
    }
}

/// Default `dead_letter_limit_size`.
pub const DEFAULT_DEAD_LETTER_LIMIT: u64 = 256 << 20;

/// The `<system>` section.
#[derive(Debug, Clone, PartialEq)]
pub struct System {
    /// `workers` (default 1). at-forwarder is one process; the value bounds `<worker N>` ids.
    pub workers: u64,
    /// `root_dir`: where buffers of outputs with an `@id` and no `path` are kept.
    pub root_dir: Option<PathBuf>,
    /// `log_level` (default info).
    pub log_level: LogLevel,
    /// `http_port`: the operations endpoint (metrics, health) listens on all interfaces at
    /// this port; without it, on `--metrics-listen` (default 127.0.0.1:24231).
    pub http_port: Option<u16>,
    /// `dead_letter_limit_size` (at-forwarder's own, default 256 MiB): the dead-letter
    /// store's files together; past it the oldest go first, counted and logged.
    pub dead_letter_limit_size: u64,
    /// `stall_timeout` (at-forwarder's own, default 120s): how long a stage with work may
    /// go without progress before the health probes fail (see `crate::health`).
    pub stall_timeout: std::time::Duration,
}

impl Default for System {
    fn default() -> Self {
        System {
            workers: 1,
            root_dir: None,
            log_level: LogLevel::Info,
            http_port: None,
            dead_letter_limit_size: DEFAULT_DEAD_LETTER_LIMIT,
            stall_timeout: std::time::Duration::from_secs(120),
        }
    }
}

/// Worker ids of a `<worker N>` or `<worker N-M>` section (inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerRange {
    /// First id.
    pub first: u64,
    /// Last id.
    pub last: u64,
}

impl fmt::Display for WorkerRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// Where a directive was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file (the main one or an `@include`d one).
    pub file: PathBuf,
    /// 1-based line of its start tag.
    pub line: u32,
}

/// What every `<source>` and `<match>` has.
#[derive(Debug, Clone, PartialEq)]
pub struct Directive {
    /// `@id`.
    pub id: Option<String>,
    /// `@log_level`.
    pub log_level: Option<LogLevel>,
    /// For a source, its `@label`; for a match, the `<label>` it is in.
    pub label: Option<String>,
    /// The `<worker>` section it was in.
    pub workers: Option<WorkerRange>,
    /// Where it was written.
    pub location: Location,
    /// Its place among all directives once `@include`s and `<worker>`s are read: events
    /// pass the filters placed before the `<match>` that takes them.
    pub order: usize,
    span: diag::Span,
}

impl Directive {
    /// The name its log lines are filtered by (`@log_level`): its `@id`, else `source.N`
    /// or `match.N` (`kind`, N from 1 in file order).
    pub fn plugin_id(&self, kind: &str, index: usize) -> String {
        self.id
            .clone()
            .unwrap_or_else(|| format!("{kind}.{}", index + 1))
    }
}

/// A `<source>` directive.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    /// Id, label, place.
    pub directive: Directive,
    /// What it reads.
    pub kind: SourceKind,
}

/// A `<match>` directive.
#[derive(Debug, Clone, PartialEq)]
pub struct Match {
    /// Id, label, place.
    pub directive: Directive,
    /// The tags it receives.
    pub patterns: TagPatterns,
    /// Where events go.
    pub output: Output,
    /// How they wait on disk (always present for outputs that send over a network).
    pub buffer: Option<BufferConfig>,
}

/// How to load.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Treat warnings as errors (`check --strict`).
    pub strict: bool,
    /// What `#{…}` evaluates against.
    pub env: EvalEnv,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            strict: false,
            env: EvalEnv::from_process(),
        }
    }
}

/// A configuration and the warnings found while loading it.
#[derive(Debug)]
pub struct Loaded {
    /// The validated configuration.
    pub config: Config,
    /// Warnings (empty under `strict`, where they are errors).
    pub warnings: Report,
}

impl Loaded {
    /// The resolved pipeline as `check` prints it.
    pub fn describe(&self) -> String {
        display::describe(&self.config)
    }

    /// Logs the warnings, one WARN line each.
    pub fn log_warnings(&self) {
        for d in self.warnings.diagnostics() {
            let at = (d.span)
                .map(|s| self.warnings.locate(s))
                .unwrap_or_default();
            let help = d.help.as_deref().unwrap_or("");
            if d.severity == Severity::Note {
                tracing::info!(at, help, "Configuration: {}", d.message);
            } else {
                tracing::warn!(at, help, "Configuration: {}", d.message);
            }
        }
    }
}

impl Config {
    /// Each plugin whose log level differs from the process's: its id
    /// ([`Directive::plugin_id`]) and level — `@log_level`, or for an Activity Tracker
    /// output a written `ibm_plugin_log_level`.
    pub fn plugin_log_levels(&self) -> Vec<(String, LogLevel)> {
        let sources = self.sources.iter().enumerate().filter_map(|(i, s)| {
            (s.directive.log_level).map(|l| (s.directive.plugin_id("source", i), l))
        });
        let matches = self.matches.iter().enumerate().filter_map(|(i, m)| {
            let from_plugin = match &m.output {
                Output::ActivityTracker(at) if at.plugin_log_level_set => {
                    Some(match at.plugin_log_level {
                        output::PluginLogLevel::Debug => LogLevel::Debug,
                        output::PluginLogLevel::Info => LogLevel::Info,
                        output::PluginLogLevel::Warn => LogLevel::Warn,
                        output::PluginLogLevel::Error => LogLevel::Error,
                    })
                }
                _ => None,
            };
            (m.directive.log_level)
                .or(from_plugin)
                .map(|l| (m.directive.plugin_id("match", i), l))
        });
        sources.chain(matches).collect()
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The main configuration file cannot be read: missing, unreadable, or not UTF-8.
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file has syntax or validation errors; the report shows each with its place.
    #[error("{report}\n{path}: {errors} error(s), {warnings} warning(s)", errors = report.error_count(), warnings = report.warning_count())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found.
        report: Report,
    },
}

/// Loads and validates the configuration in `path`.
pub fn load(path: &Path, options: &LoadOptions) -> Result<Loaded, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    load_str(&text, path, options)
}

/// Loads and validates configuration text as if read from `path` (which `@include`s are
/// relative to).
pub fn load_str(text: &str, path: &Path, options: &LoadOptions) -> Result<Loaded, ConfigError> {
    let mut ctx = syntax::ParseCtx::new(&options.env);
    let file = ctx.sources.add(path.to_path_buf(), text.to_string());
    let parsed = syntax::parse_root(&mut ctx, file);
    let mut diagnostics = std::mem::take(&mut ctx.warnings);
    let config = match parsed {
        Ok(root) => {
            let (config, found) = build::build(&root, &ctx.sources, path);
            diagnostics.extend(found);
            config
        }
        Err(error) => {
            diagnostics.push(error);
            None
        }
    };
    let mut report = Report::new(diagnostics, Arc::new(ctx.sources));
    if options.strict {
        report.promote_warnings();
    }
    match config {
        Some(config) if report.error_count() == 0 => Ok(Loaded {
            config,
            warnings: report,
        }),
        _ => Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            report,
        }),
    }
}
