//! `<source>` directives: the tail input (`@type tail`, alias `tailinodes`) and its
//! `<parse>` section, with fluentd's in_tail names and defaults.

use std::path::PathBuf;
use std::time::Duration;

use super::diag::Diagnostic;
use super::pattern::TailTag;
use super::section::Section;
use super::value::config_enum;

/// Input types at-forwarder implements, as written after `@type`.
pub const SOURCE_TYPES: &[&str] = &["tail", "tailinodes"];

/// fluentd's default `max_line_size` is unlimited; a line longer than this cannot be an
/// audit event, and holding it would make memory unbounded.
pub const DEFAULT_MAX_LINE_SIZE: u64 = 1 << 20;

/// What a `<source>` reads.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceKind {
    /// Follows files by inode through rotations (`@type tail` / `tailinodes`).
    Tail(TailSource),
}

/// The tail input: which files, from where, and how they are tracked.
#[derive(Debug, Clone, PartialEq)]
pub struct TailSource {
    /// The `@type` as written (`tail` or `tailinodes`), shown by `check`.
    pub type_name: String,
    /// What the tailer reads and how: used by it as it is.
    pub options: TailOptions,
    /// The tag given to lines (`tag`), with `*` standing for the file's path.
    pub tag: TailTag,
    /// Track files by inode rather than by path (`follow_inodes`, default false).
    pub follow_inodes: bool,
    /// Add the file's path to each record under this key (`path_key`).
    pub path_key: Option<String>,
    /// How strictly lines are checked (`cadf_validation`, default lenient).
    pub cadf_validation: CadfValidation,
    /// Rewrite `eventTime` as `YYYY-MM-DDTHH:MM:SS.sss+0000` (`normalize_time`, default true).
    pub normalize_time: bool,
    /// How lines are parsed (`<parse>` or the v0.12 `format`).
    pub parse: ParseConfig,
    /// Rotation of the files this source follows (`<rotate>`, at-forwarder's own).
    pub rotation: Option<RotationConfig>,
}

/// `<rotate>`: at-forwarder rotates the followed files that `path` matches, as seed 001's
/// cluster did for `/var/log/at` (daily, 3 kept), and removes a rotated file only once
/// every line of it is delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationConfig {
    /// Globs of the files to rotate (`path`); each must also be followed by the source.
    pub paths: Vec<String>,
    /// Rotate a non-empty file created in an earlier period of this length, the periods
    /// aligned on the Unix epoch (UTC midnight for `1d`) (`age`, default 1d).
    pub age: Duration,
    /// Rotate as well a file that grew to this size (`size`; default none).
    pub size: Option<u64>,
    /// Rotated copies kept per file (`keep`, default 3); older ones are removed once
    /// delivered.
    pub keep: usize,
}

/// What the tailer needs from a `<source @type tail>`; [`TailOptions::new`] holds the one
/// default of each setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailOptions {
    /// Globs of files to read (`path`, comma-separated or a JSON array; `**` recurses).
    pub paths: Vec<String>,
    /// Globs of files never to read (`exclude_path`).
    pub exclude_paths: Vec<String>,
    /// Where positions are kept (`pos_file`): the sled database of positions beside it,
    /// and a fluentd pos file found there imported once.
    pub pos_file: Option<PathBuf>,
    /// Read files found at the very first start from their beginning (`read_from_head`,
    /// default false).
    pub read_from_head: bool,
    /// Lines read from one file before turning to the next (`read_lines_limit`, default
    /// 1000).
    pub read_lines_limit: usize,
    /// How long a rotated-away file is kept open once drained (`rotate_wait`, default 5 s).
    pub rotate_wait: Duration,
    /// How often the globs are re-expanded (`refresh_interval`, default 60 s).
    pub refresh_interval: Duration,
    /// Longest line accepted (`max_line_size`, default 1 MiB); longer lines are skipped and
    /// reported.
    pub max_line_size: u64,
    /// Ignore files not modified within this long (`limit_recently_modified`).
    pub limit_recently_modified: Option<Duration>,
    /// Log a permission error once per file rather than at every scan
    /// (`ignore_repeated_permission_error`, default false).
    pub ignore_repeated_permission_error: bool,
    /// Don't expand the globs at start-up before the first `refresh_interval`
    /// (`skip_refresh_on_startup`, default false).
    pub skip_refresh_on_startup: bool,
    /// Most files held open at once (`open_files_limit`, at-forwarder's own, default 256):
    /// idle files beyond it are closed and looked at again cheaply; vanished files stay
    /// open (they cannot be reopened).
    pub open_files_limit: usize,
    /// Follow symlinks that lead out of the globs' roots (`follow_symlinks_outside`,
    /// at-forwarder's own, default false): by default a link under `/var/log/at` to
    /// `/etc/shadow` or to the mounted Secret is refused, since anyone who can write there
    /// could plant one.
    pub follow_symlinks_outside: bool,
    /// Per-file read rate cap (`read_bytes_limit_per_second`; default none; at least
    /// 8192, as fluentd requires): a file that read this many bytes in the current second
    /// waits for the next one.
    pub read_bytes_limit_per_second: Option<u64>,
}

impl TailOptions {
    /// Options for `paths` with fluentd's in_tail defaults (and at-forwarder's for
    /// `max_line_size` and `open_files_limit`).
    pub fn new(paths: Vec<String>) -> Self {
        TailOptions {
            paths,
            exclude_paths: Vec::new(),
            pos_file: None,
            read_from_head: false,
            read_lines_limit: 1000,
            rotate_wait: Duration::from_secs(5),
            refresh_interval: Duration::from_secs(60),
            max_line_size: DEFAULT_MAX_LINE_SIZE,
            limit_recently_modified: None,
            ignore_repeated_permission_error: false,
            skip_refresh_on_startup: false,
            open_files_limit: 256,
            follow_symlinks_outside: false,
            read_bytes_limit_per_second: None,
        }
    }
}

config_enum! {
    /// How strictly event lines are checked (`cadf_validation`).
    pub enum CadfValidation {
        /// Only what forwarding needs: a JSON object with meta.serviceProviderName.
        Off = "off",
        /// The routing fields and the payload fields Activity Tracker needs; defaults added.
        Lenient = "lenient",
        /// Lenient, plus CADF (DMTF DSP0262) as seed 004 states it, with its taxonomies.
        Cadf = "cadf",
        /// Lenient, plus CADF's structure with Activity Tracker's naming in place of the
        /// taxonomies, and its conventions (severity, numeric reasonCode, CRNs).
        ActivityTracker = "activity_tracker",
        /// The earlier name of `activity_tracker`.
        Strict = "strict",
    }
}

impl CadfValidation {
    /// `strict` is `activity_tracker`.
    pub fn normalized(self) -> Self {
        match self {
            CadfValidation::Strict => CadfValidation::ActivityTracker,
            other => other,
        }
    }
}

config_enum! {
    /// Line formats (`<parse> @type` / `format`).
    pub enum ParseFormat {
        /// One JSON object per line.
        Json = "json",
    }
}

/// The `<parse>` section, or its v0.12 spelling at the source level (`format json`,
/// `time_format …`).
#[derive(Debug, Clone, PartialEq)]
pub struct ParseConfig {
    /// The line format.
    pub format: ParseFormat,
    /// Field holding the event time (`time_key`), when the record's time is taken from it.
    pub time_key: Option<String>,
    /// strftime format of that field (`time_format`).
    pub time_format: Option<String>,
    /// Keep the time field in the record (`keep_time_key`, default false).
    pub keep_time_key: bool,
}

pub(super) fn build(s: &mut Section<'_>, type_name: &str) -> Option<SourceKind> {
    match type_name {
        "tail" | "tailinodes" => build_tail(s, type_name).map(SourceKind::Tail),
        _ => None,
    }
}

fn build_tail(s: &mut Section<'_>, type_name: &str) -> Option<TailSource> {
    let paths = s.required("path", |v| {
        let paths = super::value::parse_array(v)?;
        if paths.is_empty() {
            return Err("no path given".to_string());
        }
        Ok(paths)
    });
    let tag = s.required("tag", TailTag::new);
    let parse = build_parse(s);
    let d = TailOptions::new(Vec::new());
    let pos_file = s.path("pos_file").map(|p| p.value);
    let exclude_paths = s.array("exclude_path").map(|p| p.value).unwrap_or_default();
    let follow_inodes_param = s.bool("follow_inodes");
    if let Some(f) = follow_inodes_param.filter(|f| !f.value) {
        s.error(Diagnostic::warning(
            Some(f.span),
            "'follow_inodes false' has no effect in at-forwarder: files are always followed by inode (fluentd's follow_inodes true), since following by path reads a renamed file again",
        ));
    }
    let follow_inodes = follow_inodes_param.is_some_and(|b| b.value);
    let read_from_head = s
        .bool("read_from_head")
        .map_or(d.read_from_head, |b| b.value);
    let read_lines_limit = s
        .integer("read_lines_limit", 1, 1_000_000)
        .map_or(d.read_lines_limit, |v| {
            usize::try_from(v.value).unwrap_or(usize::MAX)
        });
    let read_bytes_limit_per_second = s.size("read_bytes_limit_per_second").and_then(|v| {
        if v.value > 0 && v.value < 8192 {
            s.error(Diagnostic::warning(
                Some(v.span),
                "'read_bytes_limit_per_second' below 8192 is read as 8192, as fluentd does",
            ));
        }
        (v.value > 0).then_some(v.value.max(8192))
    });
    let rotate_wait = s.duration("rotate_wait").map_or(d.rotate_wait, |v| v.value);
    let refresh_interval = (s.duration("refresh_interval")).map_or(d.refresh_interval, |v| v.value);
    let path_key = s.string("path_key").map(|v| v.value);
    let max_line_size = s.size("max_line_size").map_or(d.max_line_size, |v| v.value);
    let limit_recently_modified = s.duration("limit_recently_modified").map(|v| v.value);
    let ignore_repeated_permission_error = s
        .bool("ignore_repeated_permission_error")
        .map_or(d.ignore_repeated_permission_error, |b| b.value);
    let skip_refresh_on_startup =
        (s.bool("skip_refresh_on_startup")).map_or(d.skip_refresh_on_startup, |b| b.value);
    let open_files_limit = s
        .integer("open_files_limit", 1, 1 << 20)
        .map_or(d.open_files_limit, |v| {
            usize::try_from(v.value).unwrap_or(usize::MAX)
        });
    let follow_symlinks_outside =
        (s.bool("follow_symlinks_outside")).map_or(d.follow_symlinks_outside, |b| b.value);
    let cadf_validation = s
        .enumeration("cadf_validation")
        .map_or(CadfValidation::Lenient, |v| v.value);
    let normalize_time = s.bool("normalize_time").is_none_or(|v| v.value);
    let rotation = s.child("rotate").map(|el| build_rotation(s, el));
    s.without_effect(
        &[
            "enable_watch_timer",
            "enable_stat_watcher",
            "open_on_every_update",
            "pos_file_compaction_interval",
        ],
        "the tailer always combines change notification with a periodic check",
    );
    s.without_effect(
        &["encoding", "from_encoding"],
        "lines are forwarded as the bytes they are",
    );
    if pos_file.is_none() {
        let d = Diagnostic::warning(Some(s.element().span), "no 'pos_file' in this tail source: positions are not kept across restarts, so events may be read twice or missed")
            .with_help("set 'pos_file' to a path on persistent storage");
        s.error(d);
    }
    Some(TailSource {
        type_name: type_name.to_string(),
        options: TailOptions {
            paths: paths?.value,
            exclude_paths,
            pos_file,
            read_from_head,
            read_lines_limit,
            rotate_wait,
            refresh_interval,
            max_line_size,
            limit_recently_modified,
            ignore_repeated_permission_error,
            skip_refresh_on_startup,
            open_files_limit,
            follow_symlinks_outside,
            read_bytes_limit_per_second,
        },
        tag: tag?.value,
        follow_inodes,
        path_key,
        cadf_validation,
        normalize_time,
        parse: parse?,
        rotation: rotation.flatten(),
    })
}

fn build_rotation(s: &mut Section<'_>, el: &super::syntax::Element) -> Option<RotationConfig> {
    let mut r = Section::new(el);
    let paths = r.required("path", |v| {
        let paths = super::value::parse_array(v)?;
        if paths.is_empty() {
            return Err("no path given".to_string());
        }
        Ok(paths)
    });
    let age = r.duration("age");
    if let Some(a) = age.filter(|a| a.value < Duration::from_secs(1)) {
        r.error(Diagnostic::error(Some(a.span), "'age' must be at least 1s"));
    }
    let rotation = RotationConfig {
        paths: paths.map(|p| p.value).unwrap_or_default(),
        age: age.map_or(Duration::from_secs(86_400), |a| {
            a.value.max(Duration::from_secs(1))
        }),
        size: r.size("size").map(|v| v.value).filter(|v| *v > 0),
        keep: r
            .integer("keep", 0, 1000)
            .map_or(3, |v| usize::try_from(v.value).unwrap_or(3)),
    };
    let ok = !rotation.paths.is_empty();
    for d in r.finish() {
        s.error(d);
    }
    ok.then_some(rotation)
}

/// `time_format` parses fluentd's record time, which at-forwarder never uses: a note (the
/// seed sets it; nothing forwarded depends on it).
fn note_time_format(s: &mut Section<'_>, time_format: Option<&super::section::Spanned<String>>) {
    if let Some(f) = time_format {
        s.error(Diagnostic::note(
            Some(f.span),
            "'time_format' is not applied: the record's time is not forwarded (Activity Tracker orders events by eventTime); the time field itself (time_key, default 'time') is removed as fluentd does unless keep_time_key",
        ));
    }
}

fn has(s: &Section<'_>, key: &str) -> bool {
    s.element().params.iter().any(|p| p.key == key)
}

/// `<parse>` wins; without it, the v0.12 parameters at the source level apply.
fn build_parse(s: &mut Section<'_>) -> Option<ParseConfig> {
    let legacy_format = s.enumeration::<ParseFormat>("format");
    let legacy_time_format = s.string("time_format");
    let legacy_time_key = s.string("time_key");
    let legacy_keep = s.bool("keep_time_key");
    let Some(el) = s.child("parse") else {
        if legacy_format.is_none() && !has(s, "format") {
            let d = Diagnostic::error(
                Some(s.element().span),
                "no <parse> section or 'format' in this tail source",
            )
            .with_help("add 'format json' or <parse> @type json </parse>");
            s.error(d);
            return None;
        }
        note_time_format(s, legacy_time_format.as_ref());
        return Some(ParseConfig {
            format: legacy_format?.value,
            time_key: legacy_time_key.map(|v| v.value),
            time_format: legacy_time_format.map(|v| v.value),
            keep_time_key: legacy_keep.is_some_and(|v| v.value),
        });
    };
    let legacy_spans = [
        legacy_format.map(|v| v.span),
        legacy_time_format.map(|v| v.span),
    ];
    for span in legacy_spans
        .into_iter()
        .flatten()
        .chain(legacy_time_key.map(|v| v.span))
    {
        let msg = format!(
            "ignored: the <parse> section (line {}) decides how lines are parsed",
            el.span.line
        );
        s.error(Diagnostic::warning(Some(span), msg).with_help("move this setting into <parse>"));
    }
    let mut p = Section::new(el);
    let format = match p.param_or_alias("@type", "type") {
        Some(t) => p
            .convert(t, super::value::parse_enum::<ParseFormat>)
            .map(|v| v.value),
        None => {
            p.missing("@type");
            None
        }
    };
    let time_format = p.string("time_format");
    note_time_format(&mut p, time_format.as_ref());
    let parse = ParseConfig {
        format: format.unwrap_or(ParseFormat::Json),
        time_key: p.string("time_key").map(|v| v.value),
        time_format: time_format.map(|v| v.value),
        keep_time_key: p.bool("keep_time_key").is_some_and(|v| v.value),
    };
    let ok = format.is_some();
    for d in p.finish() {
        s.error(d);
    }
    ok.then_some(parse)
}
