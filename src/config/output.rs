//! `<match>` directives: the Activity Tracker output (`@type ibmactivitytracker`, with the
//! parameter names of the fluentd plugin in seed 001) and `@type stdout`.

use std::path::PathBuf;
use std::time::Duration;

use super::buffer::{self, BufferConfig, LegacyParams};
use super::diag::Diagnostic;
use super::section::Section;
use super::value::config_enum;

/// Output types at-forwarder implements, as written after `@type`.
pub const OUTPUT_TYPES: &[&str] = &[
    "ibmactivitytracker",
    "ibm_cloud_logs",
    "http",
    "stdout",
    "copy",
];

/// Activity Tracker regions known to the seed documents; others are accepted with a warning.
const KNOWN_REGIONS: &[&str] = &[
    "ng",
    "us-south",
    "us-east",
    "eu-gb",
    "eu-de",
    "au-syd",
    "jp-tok",
    "jp-osa",
    "ca-tor",
    "br-sao",
    "eu-es",
    "in-che",
    "stage1.ng",
    "stage1.eu-gb",
];

/// Where events go.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// The regional Activity Tracker endpoint (`@type ibmactivitytracker`).
    ActivityTracker(Box<AtOutput>),
    /// IBM Cloud Logs, Activity Tracker's successor (`@type ibm_cloud_logs`).
    CloudLogs(Box<super::cloud_logs::CloudLogsOutput>),
    /// Any HTTP endpoint, as fluentd's out_http (`@type http`).
    Http(Box<super::http::HttpOutput>),
    /// Standard output, one JSON event per line (`@type stdout`), for debugging pipelines.
    Stdout,
    /// Every event to each `<store>` (`@type copy`), each with its own buffer and retries.
    Copy(Vec<Store>),
}

/// A `<store>` of `@type copy`.
#[derive(Debug, Clone, PartialEq)]
pub struct Store {
    /// Where its events go (any output but `copy`).
    pub output: Output,
    /// Its own buffer (for outputs that send over a network).
    pub buffer: Option<BufferConfig>,
}

impl Output {
    /// The `@type` that selects this output.
    pub fn type_name(&self) -> &'static str {
        match self {
            Output::ActivityTracker(_) => "ibmactivitytracker",
            Output::Http(_) => "http",
            Output::CloudLogs(_) => "ibm_cloud_logs",
            Output::Copy(_) => "copy",
            Output::Stdout => "stdout",
        }
    }
}

config_enum! {
    /// Request body compression (`compress`).
    pub enum Compression {
        /// `Content-Encoding: gzip`.
        Gzip = "gzip",
        /// Plain JSON.
        None = "none",
    }
}

config_enum! {
    /// Verbosity of the output's own log lines (`ibm_plugin_log_level`); `debug` logs each
    /// event sent and each response code, as the seed's debugging tips describe.
    pub enum PluginLogLevel {
        /// Every event and response.
        Debug = "debug",
        /// Lifecycle and errors.
        Info = "info",
        /// Problems only.
        Warn = "warn",
        /// Errors only.
        Error = "error",
    }
}

/// The Activity Tracker output.
#[derive(Debug, Clone, PartialEq)]
pub struct AtOutput {
    /// `targetHost` as written.
    pub target_host: String,
    /// Base URL derived from `targetHost` (`https://` unless a scheme is given).
    pub base_url: url::Url,
    /// Region of the endpoint (`service_region`).
    pub service_region: String,
    /// Directory where the Secret is mounted (`secrets_path`).
    pub secrets_path: PathBuf,
    /// File in `secrets_path` that holds the services (`secret_key`, default: the host
    /// name of `targetHost`).
    pub secret_key: String,
    /// `ibm_plugin_log_level` (default info): `debug` logs each request; when written,
    /// it is also the output's log level, unless `@log_level` is set.
    pub plugin_log_level: PluginLogLevel,
    /// Whether `ibm_plugin_log_level` was written.
    pub plugin_log_level_set: bool,
    /// Path of the ingestion endpoint (`endpoint_path`, default `/v3/events`).
    pub endpoint_path: String,
    /// Extra CA certificates trusted for the endpoint (`ca_file`).
    pub ca_file: Option<PathBuf>,
    /// Timeout of one request (`request_timeout`, default 30 s).
    pub request_timeout: Duration,
    /// Body compression (`compress`, default gzip).
    pub compress: Compression,
    /// Events per request at most (`max_events_per_request`, default 1000).
    pub max_events_per_request: u64,
}

impl AtOutput {
    /// The URL batches are posted to.
    pub fn endpoint_url(&self) -> String {
        format!(
            "{}{}",
            self.base_url.as_str().trim_end_matches('/'),
            self.endpoint_path
        )
    }
}

/// Builds the output of a `<match>` whose `@type` is `type_name`, and its buffer; `None`
/// for an unknown type (reported by the caller) or when something is invalid (reported
/// here).
pub(super) fn build(
    s: &mut Section<'_>,
    type_name: &str,
    default_buffer_path: Option<PathBuf>,
    diags: &mut Vec<Diagnostic>,
) -> Option<(Output, Option<BufferConfig>)> {
    let legacy = LegacyParams::read(s);
    let buffer_el = s.child("buffer");
    match type_name {
        "ibmactivitytracker" => {
            let at = build_at(s);
            let buffer = network_buffer(s, buffer_el, legacy, default_buffer_path, diags);
            Some((Output::ActivityTracker(Box::new(at?)), Some(buffer?)))
        }
        "ibm_cloud_logs" => {
            let logs = super::cloud_logs::build(s);
            let buffer = network_buffer(s, buffer_el, legacy, default_buffer_path, diags);
            Some((Output::CloudLogs(Box::new(logs?)), Some(buffer?)))
        }
        "http" => {
            if let Some(f) = s.child("format") {
                check_stdout_format(f, diags);
            }
            let http = super::http::build_http(s);
            let buffer = network_buffer(s, buffer_el, legacy, default_buffer_path, diags);
            Some((Output::Http(Box::new(http?)), Some(buffer?)))
        }
        "copy" => build_copy(s, default_buffer_path.as_ref(), diags).map(|c| (c, None)),
        "stdout" => {
            if let Some(f) = s.child("format") {
                check_stdout_format(f, diags);
            }
            let buffer = match buffer_el {
                Some(el) => Some(buffer::build(
                    Some(el),
                    legacy,
                    default_buffer_path,
                    el.span,
                    diags,
                )?),
                None => None,
            };
            Some((Output::Stdout, buffer))
        }
        _ => None,
    }
}

/// The buffer of an output that sends over a network (always present); its chunk keys
/// are reported as ignored: chunks are grouped by service, whose token or name each
/// request carries.
fn network_buffer(
    s: &Section<'_>,
    buffer_el: Option<&super::syntax::Element>,
    legacy: LegacyParams,
    default_buffer_path: Option<PathBuf>,
    diags: &mut Vec<Diagnostic>,
) -> Option<BufferConfig> {
    let buffer = buffer::build(
        buffer_el,
        legacy,
        default_buffer_path,
        s.element().span,
        diags,
    );
    if let (Some(el), Some(b)) = (buffer_el, &buffer) {
        if !b.chunk_keys.is_empty() {
            diags.push(Diagnostic::warning(
                Some(el.arg_span),
                "chunk keys are ignored: chunks are always grouped by meta.serviceProviderName (for ibmactivitytracker, one token per service)",
            ));
        }
    }
    buffer
}

/// `@type copy`: each `<store>` built as a `<match>` of its `@type` would be, its buffer
/// by default in `<default>/storeN`; no two stores share a buffer directory.
fn build_copy(
    s: &mut Section<'_>,
    default_buffer_path: Option<&PathBuf>,
    diags: &mut Vec<Diagnostic>,
) -> Option<Output> {
    s.note_without_effect(
        &["copy_mode"],
        "every store gets its own copy of each event's bytes (fluentd's deep copy)",
    );
    let mut stores = Vec::new();
    let mut ok = true;
    for (i, el) in s.children("store").into_iter().enumerate() {
        let mut st = Section::new(el);
        st.note_without_effect(
            &["ignore_error"],
            "each store has its own buffer and retries, so one store's failure never stops another's delivery",
        );
        let name = st.param_or_alias("@type", "type").map(|p| p.value.clone());
        match name.as_deref() {
            Some("copy") => {
                st.error(Diagnostic::error(
                    Some(el.span),
                    "a <store> cannot be another copy",
                ));
                ok = false;
            }
            Some(name) if OUTPUT_TYPES.contains(&name) => {
                let path = default_buffer_path.map(|p| p.join(format!("store{}", i + 1)));
                match build(&mut st, name, path, diags) {
                    Some((output, buffer)) => stores.push(Store { output, buffer }),
                    None => ok = false,
                }
            }
            Some(other) => {
                st.error(Diagnostic::error(
                    Some(el.span),
                    format!(
                        "unknown store type '{other}': use {}",
                        OUTPUT_TYPES.join(", ")
                    ),
                ));
                ok = false;
            }
            None => {
                st.missing("@type");
                ok = false;
            }
        }
        diags.extend(st.finish());
    }
    if stores.is_empty() && ok {
        s.error(Diagnostic::error(
            Some(s.element().span),
            "@type copy needs at least one <store>",
        ));
        ok = false;
    }
    let mut paths: Vec<&PathBuf> = stores
        .iter()
        .filter_map(|st| st.buffer.as_ref().map(|b| &b.options.path))
        .collect();
    paths.sort();
    if paths.windows(2).any(|w| w[0] == w[1]) {
        s.error(Diagnostic::error(
            Some(s.element().span),
            "two <store>s share a buffer path: each needs its own",
        ));
        ok = false;
    }
    ok.then_some(Output::Copy(stores))
}

fn check_stdout_format(el: &super::syntax::Element, diags: &mut Vec<Diagnostic>) {
    let mut f = Section::new(el);
    if let Some(p) = f.param_or_alias("@type", "type") {
        if p.value != "json" {
            f.error(Diagnostic::error(
                Some(p.value_span),
                format!(
                    "stdout writes JSON lines; format '{}' is not supported",
                    p.value
                ),
            ));
        }
    }
    diags.extend(f.finish());
}

fn build_at(s: &mut Section<'_>) -> Option<AtOutput> {
    let target = s.required("targetHost", parse_target_host);
    let region = s.required_string("service_region");
    let secrets_path = s.path("secrets_path").map_or_else(
        || PathBuf::from("/mnt/activity-tracker/secrets"),
        |p| p.value,
    );
    let secret_key = s.string("secret_key").map(|v| v.value);
    let plugin_log_level_param = s.enumeration("ibm_plugin_log_level");
    let plugin_log_level_set = plugin_log_level_param.is_some();
    let plugin_log_level = plugin_log_level_param.map_or(PluginLogLevel::Info, |v| v.value);
    let endpoint_path = s.typed("endpoint_path", |v| {
        if v.starts_with('/') {
            Ok(v.to_string())
        } else {
            Err(format!("'{v}' must start with '/'"))
        }
    });
    let ca_file = s.path("ca_file").map(|p| p.value);
    let request_timeout = s
        .duration("request_timeout")
        .map_or(Duration::from_secs(30), |v| v.value);
    let compress = s
        .enumeration("compress")
        .map_or(Compression::Gzip, |v| v.value);
    let max_events = s
        .integer("max_events_per_request", 1, 100_000)
        .map_or(1000, |v| v.value);
    let allow_http = s.bool("allow_insecure_http").is_some_and(|b| b.value);
    if let Some(t) = target
        .as_ref()
        .filter(|t| !allow_http && cleartext_off_host(&t.value.1))
    {
        s.error(
            Diagnostic::warning(
                Some(t.span),
                format!(
                    "targetHost '{}' is plain http to another machine: service tokens would cross the network in clear text",
                    t.value.0
                ),
            )
            .with_help("use https, or set 'allow_insecure_http true' if this network is trusted"),
        );
    }
    if let Some(t) = &target {
        if looks_like_placeholder(&t.value.0) {
            s.error(Diagnostic::warning(Some(t.span), format!("targetHost '{}' looks like a placeholder", t.value.0))
                .with_help("write your region's Activity Tracker host, such as activity-tracker.ng.bluemix.net"));
        }
    }
    if let Some(r) = region
        .as_ref()
        .filter(|r| !KNOWN_REGIONS.contains(&r.value.as_str()))
    {
        let what = if looks_like_placeholder(&r.value) {
            "looks like a placeholder"
        } else {
            "is not a known Activity Tracker region"
        };
        s.error(
            Diagnostic::warning(Some(r.span), format!("service_region '{}' {what}", r.value))
                .with_help(format!("known regions: {}", KNOWN_REGIONS.join(", "))),
        );
    }
    let (target_host, base_url) = target?.value;
    let host = host_part(&target_host).to_string();
    Some(AtOutput {
        target_host,
        base_url,
        service_region: region?.value,
        secrets_path,
        secret_key: secret_key.unwrap_or(host),
        plugin_log_level,
        plugin_log_level_set,
        endpoint_path: endpoint_path.map_or_else(|| "/v3/events".to_string(), |v| v.value),
        ca_file,
        request_timeout,
        compress,
        max_events_per_request: max_events,
    })
}

/// Whether a URL is plain http to a host other than this machine (loopback).
fn cleartext_off_host(url: &url::Url) -> bool {
    if url.scheme() != "http" {
        return false;
    }
    match url.host() {
        Some(url::Host::Ipv4(ip)) => !ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => !ip.is_loopback(),
        Some(url::Host::Domain(name)) => !name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// A host (`activity-tracker.ng.bluemix.net`, meaning https) or a full URL
/// (`http://127.0.0.1:9000`) without a path.
fn parse_target_host(text: &str) -> Result<(String, url::Url), String> {
    let with_scheme = if text.contains("://") {
        text.to_string()
    } else {
        format!("https://{text}")
    };
    let url = url::Url::parse(&with_scheme)
        .map_err(|e| format!("'{text}' is not a host name or URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("'{text}' must use http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("'{text}' has no host"));
    }
    if url.path() != "/"
        || url.query().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err(format!("'{text}' must be a host or scheme://host[:port] only; set the path with 'endpoint_path'"));
    }
    Ok((text.to_string(), url))
}

/// The host of `targetHost` as written (the Secret's key is case-sensitive, so it is not
/// normalised as a URL host would be): no scheme, port or trailing slash.
fn host_part(target_host: &str) -> &str {
    let rest = target_host
        .split_once("://")
        .map_or(target_host, |(_, rest)| rest);
    let rest = rest.split('/').next().unwrap_or(rest);
    match rest.rsplit_once(':') {
        Some((host, port))
            if (host.ends_with(']') || !host.contains(':'))
                && port.chars().all(|c| c.is_ascii_digit()) =>
        {
            host
        }
        _ => rest,
    }
}

/// The seed's ConfigMap ships with `ACTIVITY_TRACKER_URL`-style placeholders.
fn looks_like_placeholder(text: &str) -> bool {
    let letters: String = text.chars().filter(|c| c.is_ascii_alphabetic()).collect();
    !letters.is_empty()
        && text.chars().all(|c| c.is_ascii_uppercase() || c == '_')
        && text.contains('_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_host_forms() {
        let ok = [
            (
                "activity-tracker.ng.bluemix.net",
                "https://activity-tracker.ng.bluemix.net/",
            ),
            ("http://127.0.0.1:9000", "http://127.0.0.1:9000/"),
            (
                "https://at.example.com:8443/",
                "https://at.example.com:8443/",
            ),
            ("ACTIVITY_TRACKER_URL", "https://activity_tracker_url/"),
        ];
        for (text, want) in ok {
            assert_eq!(
                parse_target_host(text).map(|(_, u)| u.to_string()),
                Ok(want.to_string()),
                "{text}"
            );
        }
        for bad in [
            "ftp://host",
            "https://host/v3/events",
            "https://user:pw@host",
            "http://",
            "a b",
        ] {
            assert!(parse_target_host(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn secret_key_defaults_to_the_host_as_written() {
        assert_eq!(
            host_part("activity-tracker.ng.bluemix.net"),
            "activity-tracker.ng.bluemix.net"
        );
        assert_eq!(host_part("http://127.0.0.1:9000"), "127.0.0.1");
        assert_eq!(host_part("https://AT.example.com:8443/"), "AT.example.com");
        assert_eq!(host_part("ACTIVITY_TRACKER_URL"), "ACTIVITY_TRACKER_URL");
        assert_eq!(host_part("http://[::1]:9000"), "[::1]");
    }

    #[test]
    fn placeholders_are_recognised() {
        assert!(looks_like_placeholder("ACTIVITY_TRACKER_URL"));
        assert!(looks_like_placeholder("ACTIVITY_TRACKER_REGION"));
        assert!(!looks_like_placeholder("activity-tracker.ng.bluemix.net"));
        assert!(!looks_like_placeholder("NG"));
    }
}
