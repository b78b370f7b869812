//! The `<buffer>` section of a `<match>`, with fluentd's names and defaults for a file
//! buffer, and the v0.12 parameters written directly in `<match>` (`retry_wait`,
//! `max_retry_wait`, `disable_retry_limit`, `buffer_chunk_limit` …) mapped onto it as
//! fluentd's compatibility layer names them.
//!
//! Differences from fluentd, for audit data: the buffer always has a directory on disk
//! (`@type memory` is read as `file`, with a warning; chunks are held in memory up to
//! `memory_limit_size` and written there when they cannot be delivered);
//! `overflow_action` defaults to `block` (fluentd's `throw_exception`, which for a tail
//! source amounts to the same); retries go on for as
//! long as the disk budget allows unless a limit is set (`retry_max_times`,
//! `retry_timeout`); and v0.12 parameters in `<match>` apply even when a `<buffer>` section
//! exists (fluentd then ignores them silently), the section winning where both are set.

use std::path::PathBuf;
use std::time::Duration;

use super::diag::{Diagnostic, Span};
use super::section::{Section, Spanned};
use super::value::config_enum;

/// `memory_limit_size` when not set.
pub const DEFAULT_MEMORY_LIMIT: u64 = 8 << 20;

config_enum! {
    /// Where chunks are kept (`@type`).
    pub enum BufferType {
        /// Files under `path` (the only kind at-forwarder keeps).
        File = "file",
        /// Accepted for compatibility and kept on disk all the same.
        Memory = "memory",
    }
}

config_enum! {
    /// What happens when `total_limit_size` is reached (`overflow_action`).
    pub enum OverflowAction {
        /// Pause reading; the source files are the cheapest place to wait.
        Block = "block",
        /// fluentd raises an error to the input; for a file source that is the same as block.
        ThrowException = "throw_exception",
        /// Move the oldest chunk to the backup directory (logged, counted, never silent).
        DropOldestChunk = "drop_oldest_chunk",
    }
}

config_enum! {
    /// When chunks are flushed (`flush_mode`).
    pub enum FlushMode {
        /// `lazy` when chunks are keyed by time, `interval` otherwise.
        Default = "default",
        /// When a time-keyed chunk's period is over.
        Lazy = "lazy",
        /// Every `flush_interval`.
        Interval = "interval",
        /// As soon as records arrive.
        Immediate = "immediate",
    }
}

config_enum! {
    /// How the delay between retries grows (`retry_type`).
    pub enum RetryType {
        /// `retry_wait × base^attempt`, capped by `retry_max_interval`.
        ExponentialBackoff = "exponential_backoff",
        /// Always `retry_wait`.
        Periodic = "periodic",
    }
}

config_enum! {
    /// How chunk payloads are stored (`compress`).
    pub enum ChunkCompress {
        /// As read.
        Text = "text",
        /// gzip-compressed.
        Gzip = "gzip",
    }
}

/// Group-commit size: an fsync at least every this many bytes appended.
pub const SYNC_BYTES: u64 = 4 << 20;

/// What a buffer needs from its `<buffer>` section.
#[derive(Debug, Clone, PartialEq)]
pub struct BufferOptions {
    /// Directory of the chunk files (`path`).
    pub path: PathBuf,
    /// A chunk is sealed at this size (`chunk_limit_size`, default 256 MiB).
    pub chunk_limit_size: u64,
    /// … or at this many records (`chunk_limit_records`).
    pub chunk_limit_records: Option<u64>,
    /// All chunks on disk together (`total_limit_size`, default 64 GiB).
    pub total_limit_size: u64,
    /// Age at which a chunk is sealed and sent, and longest time between two group
    /// commits (`flush_interval`, default 60 s).
    pub flush_interval: Duration,
    /// What happens when `total_limit_size` is reached (default block).
    pub overflow_action: OverflowAction,
    /// Chunks held in memory together, at most (`memory_limit_size`, default 8 MiB; an
    /// at-forwarder parameter): a chunk is written to disk only when it cannot be
    /// delivered at once, and tail positions are saved once their lines are delivered or
    /// on disk. 0 writes every chunk to disk as it fills.
    pub memory_limit: u64,
    /// Group-commit size ([`SYNC_BYTES`]; not a fluentd parameter).
    pub sync_bytes: u64,
    /// A chunk counts as full, and is sealed, once the next record would take it past
    /// this share of `chunk_limit_size` (`chunk_full_threshold`, default 0.95).
    pub chunk_full_threshold: f64,
    /// Retry policy.
    pub retry: RetryConfig,
}

/// A resolved `<buffer>` section.
#[derive(Debug, Clone, PartialEq)]
pub struct BufferConfig {
    /// Chunk keys from `<buffer KEYS>` (`tag`, `time`, record fields, `$.a.b`).
    pub chunk_keys: Vec<String>,
    /// What the buffer itself needs (path, limits, flush_interval, overflow, memory,
    /// retries): used by it as it is.
    pub options: BufferOptions,
    /// Most chunks waiting to be sent (`queued_chunks_limit_size`).
    pub queued_chunks_limit_size: Option<u64>,
    /// Fraction of `chunk_limit_size` at which a chunk counts as full (default 0.95).
    pub chunk_full_threshold: f64,
    /// How chunk payloads are stored (`compress`, default text).
    pub compress: ChunkCompress,
    /// Send what is buffered before stopping (`flush_at_shutdown`, default false for a file
    /// buffer: chunks survive the restart anyway).
    pub flush_at_shutdown: bool,
    /// When chunks are flushed (resolved: never `default`).
    pub flush_mode: FlushMode,
    /// Concurrent senders (`flush_thread_count`, default 1).
    pub flush_thread_count: u64,
    /// Time-key period (`timekey`), required by the `time` chunk key.
    pub timekey: Option<Duration>,
    /// Grace period after a time-key period before flushing (`timekey_wait`, default 600 s).
    pub timekey_wait: Duration,
}

/// When and how often a failed chunk is sent again.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryConfig {
    /// Growth of the delay (`retry_type`, default exponential_backoff).
    pub retry_type: RetryType,
    /// First delay (`retry_wait`, default 1 s).
    pub wait: Duration,
    /// Growth factor (`retry_exponential_backoff_base`, default 2).
    pub exponential_backoff_base: f64,
    /// Longest delay (`retry_max_interval`, v0.12 `max_retry_wait`).
    pub max_interval: Option<Duration>,
    /// Attempts before the chunk is backed up (`retry_max_times`, v0.12 `retry_limit`).
    pub max_times: Option<u64>,
    /// Time before the chunk is backed up (`retry_timeout`, default 72 h).
    pub timeout: Duration,
    /// Never give up (`retry_forever`, v0.12 `disable_retry_limit`): the default unless a
    /// limit is set, because audit events must not be dropped for being late.
    pub forever: bool,
    /// Randomise delays (`retry_randomize`, default true).
    pub randomize: bool,
}

/// The v0.12 parameters a `<match>` may carry instead of a `<buffer>` section.
#[derive(Default)]
pub(super) struct LegacyParams {
    buffer_type: Option<Spanned<BufferType>>,
    path: Option<Spanned<PathBuf>>,
    chunk_limit_size: Option<Spanned<u64>>,
    queue_limit: Option<Spanned<u64>>,
    overflow_action: Option<Spanned<OverflowAction>>,
    flush_interval: Option<Spanned<Duration>>,
    flush_at_shutdown: Option<Spanned<bool>>,
    num_threads: Option<Spanned<u64>>,
    retry_wait: Option<Spanned<Duration>>,
    max_retry_wait: Option<Spanned<Duration>>,
    retry_limit: Option<Spanned<u64>>,
    disable_retry_limit: Option<Spanned<bool>>,
}

impl LegacyParams {
    pub(super) fn read(s: &mut Section<'_>) -> Self {
        LegacyParams {
            buffer_type: s.enumeration("buffer_type"),
            path: s.path("buffer_path"),
            chunk_limit_size: s.size("buffer_chunk_limit"),
            queue_limit: s.integer("buffer_queue_limit", 1, u64::MAX),
            overflow_action: s.typed("buffer_queue_full_action", |v| match v.trim() {
                "exception" => Ok(OverflowAction::ThrowException),
                other => super::value::parse_enum(other).map_err(|_| {
                    format!("'{other}' is not one of exception, block, drop_oldest_chunk")
                }),
            }),
            flush_interval: s.duration("flush_interval"),
            flush_at_shutdown: s.bool("flush_at_shutdown"),
            num_threads: s.integer("num_threads", 1, 64),
            retry_wait: s.duration("retry_wait"),
            max_retry_wait: s.duration("max_retry_wait"),
            retry_limit: s.integer("retry_limit", 0, u64::MAX),
            disable_retry_limit: s.bool("disable_retry_limit"),
        }
    }
}

/// Merges a `<buffer>` value with its v0.12 counterpart: the section wins, with a warning
/// when both are set.
fn pick<T>(
    diags: &mut Vec<Diagnostic>,
    section: Option<Spanned<T>>,
    legacy: Option<Spanned<T>>,
    names: (&str, &str),
) -> Option<Spanned<T>> {
    if let (Some(new), Some(old)) = (&section, &legacy) {
        diags.push(Diagnostic::warning(
            Some(old.span),
            format!(
                "'{}' is also set as '{}' in <buffer> (line {}); the <buffer> value wins",
                names.1, names.0, new.span.line
            ),
        ));
    }
    section.or(legacy)
}

/// Builds the buffer of a `<match>` from its `<buffer>` section (if any) and its v0.12
/// parameters. `default_path` is where chunks go when no path is given (under `<system>
/// root_dir`); `at` is where to point when something is missing.
pub(super) fn build(
    el: Option<&super::syntax::Element>,
    legacy: LegacyParams,
    default_path: Option<PathBuf>,
    at: Span,
    diags: &mut Vec<Diagnostic>,
) -> Option<BufferConfig> {
    let empty;
    let el = match el {
        Some(el) => el,
        None => {
            empty = super::syntax::Element {
                name: "buffer".into(),
                arg: String::new(),
                params: Vec::new(),
                elements: Vec::new(),
                span: at,
                arg_span: at,
            };
            &empty
        }
    };
    let mut s = Section::new(el);
    let chunk_keys =
        parse_chunk_keys(&el.arg).map_err(|msg| Diagnostic::error(Some(el.arg_span), msg));
    let buffer_type = s
        .param_or_alias("@type", "type")
        .and_then(|p| s.convert(p, super::value::parse_enum::<BufferType>));
    let buffer_type = pick(
        diags,
        buffer_type,
        legacy.buffer_type,
        ("@type", "buffer_type"),
    );
    if let Some(Spanned {
        value: BufferType::Memory,
        span,
    }) = buffer_type
    {
        s.error(
            Diagnostic::warning(
                Some(span),
                "at-forwarder keeps every buffer on disk: '@type memory' is read as 'file'",
            )
            .with_help("audit events must survive a restart; set 'path' for the chunk files (chunks are held in memory up to 'memory_limit_size' either way, and written there when they cannot be delivered)"),
        );
    }
    let retry = build_retry(&mut s, &legacy, diags);
    let path = pick(diags, s.path("path"), legacy.path, ("path", "buffer_path"))
        .map(|p| p.value)
        .or(default_path);
    let chunk_limit_size = pick(
        diags,
        s.size("chunk_limit_size"),
        legacy.chunk_limit_size,
        ("chunk_limit_size", "buffer_chunk_limit"),
    );
    let total_limit_size = s.size("total_limit_size");
    let queued = pick(
        diags,
        s.integer("queued_chunks_limit_size", 1, u64::MAX),
        legacy.queue_limit,
        ("queued_chunks_limit_size", "buffer_queue_limit"),
    );
    let threshold = s.float("chunk_full_threshold");
    let timekey = s.duration("timekey").map(|v| v.value);
    let flush_mode_param = s.enumeration::<FlushMode>("flush_mode");
    let flush_mode_span = flush_mode_param.map(|v| v.span);
    let flush_mode = flush_mode_param.map_or(FlushMode::Default, |v| v.value);
    let chunk_limit_records = s
        .integer("chunk_limit_records", 1, u64::MAX)
        .map(|v| v.value);
    let config = BufferConfig {
        queued_chunks_limit_size: queued.map(|v| v.value),
        chunk_full_threshold: threshold.map_or(0.95, |v| v.value),
        compress: chunk_compress(&mut s),
        flush_at_shutdown: pick(
            diags,
            s.bool("flush_at_shutdown"),
            legacy.flush_at_shutdown,
            ("flush_at_shutdown", "flush_at_shutdown"),
        )
        .is_some_and(|v| v.value),
        flush_mode: match flush_mode {
            FlushMode::Default
                if chunk_keys
                    .as_ref()
                    .is_ok_and(|k| k.iter().any(|k| k == "time")) =>
            {
                FlushMode::Lazy
            }
            FlushMode::Default => FlushMode::Interval,
            other => other,
        },
        flush_thread_count: pick(
            diags,
            s.integer("flush_thread_count", 1, 64),
            legacy.num_threads,
            ("flush_thread_count", "num_threads"),
        )
        .map_or(1, |v| v.value),
        options: BufferOptions {
            path: PathBuf::new(),
            chunk_limit_size: chunk_limit_size.map_or(256 << 20, |v| v.value),
            chunk_limit_records,
            total_limit_size: total_limit_size.map_or(64 << 30, |v| v.value),
            flush_interval: pick(
                diags,
                s.duration("flush_interval"),
                legacy.flush_interval,
                ("flush_interval", "flush_interval"),
            )
            .map_or(Duration::from_secs(60), |v| v.value),
            overflow_action: pick(
                diags,
                s.enumeration("overflow_action"),
                legacy.overflow_action,
                ("overflow_action", "buffer_queue_full_action"),
            )
            .map_or(OverflowAction::Block, |v| v.value),
            memory_limit: s
                .size("memory_limit_size")
                .map_or(DEFAULT_MEMORY_LIMIT, |v| v.value),
            sync_bytes: SYNC_BYTES,
            chunk_full_threshold: threshold
                .map(|v| v.value)
                .filter(|t| *t > 0.0 && *t <= 1.0)
                .unwrap_or(0.95),
            retry,
        },
        timekey,
        timekey_wait: s
            .duration("timekey_wait")
            .map_or(Duration::from_secs(600), |v| v.value),
        chunk_keys: Vec::new(),
    };
    s.without_effect(
        &[
            "flush_thread_interval",
            "flush_thread_burst_interval",
            "delayed_commit_timeout",
        ],
        "senders wake on events, not on polling timers",
    );
    s.without_effect(
        &["timekey", "timekey_wait"],
        "chunks are keyed by service, never by time",
    );
    s.without_effect(
        &[
            "timekey_use_utc",
            "timekey_zone",
            "path_suffix",
            "chunk_format",
        ],
        "chunk files have one documented format",
    );
    check_limits(&mut s, &config, chunk_limit_size, threshold);
    let config = apply_flush_and_queue(&mut s, config, flush_mode_span, queued);
    let keys = match chunk_keys {
        Ok(keys) => keys,
        Err(d) => {
            s.error(d);
            Vec::new()
        }
    };
    if keys.iter().any(|k| k == "time") && config.timekey.is_none() {
        s.error(Diagnostic::error(
            Some(el.arg_span),
            "the chunk key 'time' needs 'timekey' in this <buffer>",
        ));
    }
    if path.is_none() {
        s.error(Diagnostic::error(Some(el.span), "the buffer needs a directory: no 'path' and no <system> root_dir")
            .with_help("add 'path /var/lib/at-forwarder/buffer' inside <buffer>, or set root_dir in <system>"));
    }
    diags.extend(s.finish());
    Some(BufferConfig {
        chunk_keys: keys,
        options: BufferOptions {
            path: path?,
            ..config.options
        },
        ..config
    })
}

fn build_retry(
    s: &mut Section<'_>,
    legacy: &LegacyParams,
    diags: &mut Vec<Diagnostic>,
) -> RetryConfig {
    let max_times = pick(
        diags,
        s.integer("retry_max_times", 0, u64::MAX),
        legacy.retry_limit,
        ("retry_max_times", "retry_limit"),
    );
    let timeout = s.duration("retry_timeout");
    let forever = pick(
        diags,
        s.bool("retry_forever"),
        legacy.disable_retry_limit,
        ("retry_forever", "disable_retry_limit"),
    );
    let forever_value = forever.map_or(max_times.is_none() && timeout.is_none(), |v| v.value);
    if let (Some(f), true) = (forever, forever_value) {
        for (name, limit) in [
            ("retry_max_times", max_times.map(|v| v.span)),
            ("retry_timeout", timeout.map(|v| v.span)),
        ] {
            if let Some(span) = limit {
                // fluentd ignores the limit in the same way: nothing to act on.
                s.error(
                    Diagnostic::note(
                        Some(span),
                        format!(
                            "'{name}' has no effect: retries go on forever (set on line {}), as in fluentd",
                            f.span.line
                        ),
                    )
                    .with_help(
                        "remove the limit, or the retry_forever / disable_retry_limit setting",
                    ),
                );
            }
        }
    }
    let wait = pick(
        diags,
        s.duration("retry_wait"),
        legacy.retry_wait,
        ("retry_wait", "retry_wait"),
    );
    let max_interval = pick(
        diags,
        s.duration("retry_max_interval"),
        legacy.max_retry_wait,
        ("retry_max_interval", "max_retry_wait"),
    );
    let base = s.float("retry_exponential_backoff_base");
    if let Some(b) = base.filter(|b| b.value < 1.0) {
        s.error(Diagnostic::error(
            Some(b.span),
            "'retry_exponential_backoff_base' must be at least 1",
        ));
    }
    if let (Some(w), Some(m)) = (wait, max_interval) {
        if m.value < w.value {
            s.error(Diagnostic::warning(
                Some(m.span),
                "the longest retry delay is shorter than the first one ('retry_wait')",
            ));
        }
    }
    RetryConfig {
        retry_type: s
            .enumeration("retry_type")
            .map_or(RetryType::ExponentialBackoff, |v| v.value),
        wait: wait.map_or(Duration::from_secs(1), |v| v.value),
        exponential_backoff_base: base.map_or(2.0, |v| v.value),
        max_interval: max_interval.map(|v| v.value),
        max_times: max_times.map(|v| v.value),
        timeout: timeout.map_or(Duration::from_secs(72 * 3600), |v| v.value),
        forever: forever_value,
        randomize: s.bool("retry_randomize").is_none_or(|v| v.value),
    }
}

/// The buffer's `compress`: `gzip` is reported as without effect.
fn chunk_compress(s: &mut Section<'_>) -> ChunkCompress {
    let compress = s.enumeration::<ChunkCompress>("compress");
    if let Some(c) = compress.filter(|c| c.value == ChunkCompress::Gzip) {
        s.error(Diagnostic::warning(
            Some(c.span),
            "'compress gzip' in <buffer> has no effect in at-forwarder: chunks are stored as the records read",
        ).with_help("to compress what is sent, set 'compress gzip' in the <match> (the default of ibmactivitytracker)"));
    }
    compress.map_or(ChunkCompress::Text, |v| v.value)
}

/// `flush_mode immediate`: chunks go out as records arrive (a `flush_interval` of 0);
/// `lazy` has no time-keyed chunks to wait for (reported). `queued_chunks_limit_size`:
/// that many full chunks bound the buffer as `total_limit_size` does, whichever is lower.
fn apply_flush_and_queue(
    s: &mut Section<'_>,
    mut config: BufferConfig,
    flush_mode_span: Option<super::diag::Span>,
    queued: Option<Spanned<u64>>,
) -> BufferConfig {
    match config.flush_mode {
        FlushMode::Immediate => config.options.flush_interval = Duration::ZERO,
        FlushMode::Lazy if flush_mode_span.is_some() => s.error(Diagnostic::warning(
            flush_mode_span,
            "'flush_mode lazy' has no effect in at-forwarder: chunks are keyed by service, never by time, so they are flushed every flush_interval as with 'interval'",
        )),
        FlushMode::Lazy | FlushMode::Interval | FlushMode::Default => {}
    }
    if let Some(q) = queued {
        let bound = q.value.saturating_mul(config.options.chunk_limit_size);
        config.options.total_limit_size = config.options.total_limit_size.min(bound);
    }
    config
}

fn check_limits(
    s: &mut Section<'_>,
    config: &BufferConfig,
    chunk: Option<Spanned<u64>>,
    threshold: Option<Spanned<f64>>,
) {
    if config.options.chunk_limit_size == 0 {
        s.error(Diagnostic::error(
            chunk.map(|c| c.span),
            "'chunk_limit_size' must be more than 0",
        ));
    }
    if config.options.chunk_limit_size > config.options.total_limit_size {
        let span = chunk.map(|c| c.span).unwrap_or(s.element().span);
        s.error(Diagnostic::error(
            Some(span),
            format!(
                "'chunk_limit_size' ({} bytes) is larger than 'total_limit_size' ({} bytes)",
                config.options.chunk_limit_size, config.options.total_limit_size
            ),
        ));
    }
    if let Some(t) = threshold.filter(|t| !(t.value > 0.0 && t.value <= 1.0)) {
        s.error(Diagnostic::error(
            Some(t.span),
            "'chunk_full_threshold' must be more than 0 and at most 1",
        ));
    }
}

/// `<buffer>`, `<buffer []>`, `<buffer tag, time>`, `<buffer $.meta.serviceProviderName>`.
fn parse_chunk_keys(arg: &str) -> Result<Vec<String>, String> {
    let arg = arg.trim();
    if arg.is_empty() || arg == "[]" {
        return Ok(Vec::new());
    }
    let keys: Vec<String> = super::value::parse_array(arg)?;
    for key in &keys {
        let field = key.strip_prefix("$.").unwrap_or(key);
        let valid = !field.is_empty()
            && field.split('.').all(|part| {
                !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            });
        if !valid {
            return Err(format!(
                "invalid chunk key '{key}': use tag, time, a record field name or $.path.to.field"
            ));
        }
    }
    Ok(keys)
}
