//! The resolved pipeline as `at-forwarder check` prints it: every value in effect,
//! defaults included, so a reader sees what will run rather than what was written.
//! Nothing secret lives in a [`Config`]; tokens are read from the Secret at run time.

use std::fmt::Write;
use std::time::Duration;

use super::buffer::{BufferConfig, RetryType};
use super::output::{AtOutput, Output};
use super::source::{SourceKind, TailSource};
use super::{Config, Directive};

pub(super) fn describe(config: &Config) -> String {
    let mut out = String::new();
    let s = &config.system;
    let _ = writeln!(
        out,
        "system: workers {}, log_level {}",
        s.workers, s.log_level
    );
    if let Some(root) = &s.root_dir {
        let _ = writeln!(out, "  root_dir {}", root.display());
    }
    let _ = writeln!(
        out,
        "  dead_letter_limit_size {}, stall_timeout {}s",
        s.dead_letter_limit_size,
        s.stall_timeout.as_secs()
    );
    if let Some(port) = s.http_port {
        let _ = writeln!(
            out,
            "  http_port {port} (metrics and health on 0.0.0.0:{port})"
        );
    }
    for (i, source) in config.sources.iter().enumerate() {
        let SourceKind::Tail(tail) = &source.kind;
        let _ = writeln!(
            out,
            "\nsource #{}: {}{}",
            i + 1,
            tail.type_name,
            placement(&source.directive)
        );
        describe_tail(&mut out, tail);
        let tag = tail
            .tag
            .expand(&super::build::example_path(&tail.options.paths[0]));
        let route = config.route(source.directive.label.as_deref(), &tag);
        let route = match route.and_then(|m| config.matches.iter().position(|x| std::ptr::eq(x, m)))
        {
            Some(i) => {
                let m = &config.matches[i];
                let to = match &m.output {
                    Output::Copy(stores) => {
                        let types: Vec<&str> =
                            stores.iter().map(|s| s.output.type_name()).collect();
                        format!("copy to {}", types.join(", "))
                    }
                    other => other.type_name().to_string(),
                };
                format!("match #{} ({}) → {to}", i + 1, m.patterns.as_str())
            }
            None => "nothing: no <match> receives these events".to_string(),
        };
        let filters: Vec<String> = config
            .filters_for(source.directive.label.as_deref(), &tag)
            .into_iter()
            .map(|i| {
                let f = &config.filters[i];
                let kind = match f.kind {
                    super::filter::FilterKind::Grep(_) => "grep",
                    super::filter::FilterKind::RecordTransformer(_) => "record_transformer",
                    super::filter::FilterKind::Redact(_) => "redact",
                };
                format!("{} ({kind})", f.directive.plugin_id("filter", i))
            })
            .collect();
        if !filters.is_empty() {
            row(&mut out, "filters", filters.join(" → "));
        }
        row(&mut out, "routed to", route);
    }
    for (i, m) in config.matches.iter().enumerate() {
        let _ = writeln!(
            out,
            "\nmatch #{}: {} → {}{}",
            i + 1,
            m.patterns.as_str(),
            m.output.type_name(),
            placement(&m.directive)
        );
        match &m.output {
            Output::ActivityTracker(at) => describe_at(&mut out, at),
            Output::Http(h) => describe_http(&mut out, h),
            Output::CloudLogs(c) => {
                row(&mut out, "endpoint", &c.url);
                row(&mut out, "iam_endpoint", &c.iam_endpoint);
                let credential = match &c.credential {
                    super::cloud_logs::IamCredential::ApiKey(p) => {
                        format!("API key from {} (never printed)", p.display())
                    }
                    super::cloud_logs::IamCredential::TrustedProfile {
                        profile_id,
                        cr_token_path,
                    } => format!(
                        "trusted profile {profile_id}, compute-resource token from {}",
                        cr_token_path.display()
                    ),
                };
                row(&mut out, "credential", credential);
                row(
                    &mut out,
                    "applicationName",
                    c.application_name
                        .as_deref()
                        .unwrap_or("(the service's name)"),
                );
                match &c.subsystem_key {
                    Some(key) => row(
                        &mut out,
                        "subsystemName",
                        format!("{key}, else {}", c.subsystem_name),
                    ),
                    None => row(&mut out, "subsystemName", &c.subsystem_name),
                }
            }
            Output::Stdout => {}
            Output::Copy(stores) => {
                for (i, st) in stores.iter().enumerate() {
                    let _ = writeln!(out, "  store {}: {}", i + 1, st.output.type_name());
                    if let Some(b) = &st.buffer {
                        describe_buffer(&mut out, b);
                    }
                }
            }
        }
        if let Some(b) = &m.buffer {
            describe_buffer(&mut out, b);
        }
    }
    out
}

fn placement(d: &Directive) -> String {
    let mut s = format!(" ({}:{}", d.location.file.display(), d.location.line);
    if let Some(id) = &d.id {
        let _ = write!(s, ", @id {id}");
    }
    if let Some(label) = &d.label {
        let _ = write!(s, ", label {label}");
    }
    if let Some(w) = d.workers {
        let _ = write!(s, ", worker {w}");
    }
    if let Some(level) = d.log_level {
        let _ = write!(s, ", log_level {level}");
    }
    s.push(')');
    s
}

fn row(out: &mut String, key: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "  {key:<32} {value}");
}

fn describe_tail(out: &mut String, t: &TailSource) {
    row(out, "path", t.options.paths.join(", "));
    if !t.options.exclude_paths.is_empty() {
        row(out, "exclude_path", t.options.exclude_paths.join(", "));
    }
    row(out, "tag", &t.tag);
    row(
        out,
        "pos_file",
        t.options
            .pos_file
            .as_ref()
            .map_or("(none: positions are not kept)".into(), |p| {
                p.display().to_string()
            }),
    );
    row(out, "follow_inodes", t.follow_inodes);
    row(out, "read_from_head", t.options.read_from_head);
    row(out, "read_lines_limit", t.options.read_lines_limit);
    if let Some(limit) = t.options.read_bytes_limit_per_second {
        row(out, "read_bytes_limit_per_second", size(limit));
    }
    row(out, "rotate_wait", duration(t.options.rotate_wait));
    row(
        out,
        "refresh_interval",
        duration(t.options.refresh_interval),
    );
    row(out, "max_line_size", size(t.options.max_line_size));
    if let Some(key) = &t.path_key {
        row(out, "path_key", key);
    }
    if let Some(limit) = t.options.limit_recently_modified {
        row(out, "limit_recently_modified", duration(limit));
    }
    row(
        out,
        "ignore_repeated_permission_error",
        t.options.ignore_repeated_permission_error,
    );
    row(
        out,
        "follow_symlinks_outside",
        t.options.follow_symlinks_outside,
    );
    if let Some(r) = &t.rotation {
        let mut what = format!(
            "{} every {}, {} kept",
            r.paths.join(", "),
            duration(r.age),
            r.keep
        );
        if let Some(limit) = r.size {
            let _ = write!(what, ", or at {}", size(limit));
        }
        row(out, "rotate", what);
    }
    let mut parse = t.parse.format.to_string();
    if let Some(f) = &t.parse.time_format {
        let _ = write!(parse, ", time_format {f}");
    }
    if let Some(k) = &t.parse.time_key {
        let _ = write!(parse, ", time_key {k}");
    }
    row(out, "parse", parse);
}

fn describe_at(out: &mut String, at: &AtOutput) {
    row(out, "targetHost", &at.target_host);
    row(out, "endpoint", at.endpoint_url());
    row(out, "service_region", &at.service_region);
    row(out, "secrets_path", at.secrets_path.display());
    row(out, "secret_key", &at.secret_key);
    row(
        out,
        "tokens",
        format!(
            "from {} at run time (never printed)",
            at.secrets_path.join(&at.secret_key).display()
        ),
    );
    row(out, "ibm_plugin_log_level", at.plugin_log_level);
    row(out, "request_timeout", duration(at.request_timeout));
    row(out, "compress", at.compress);
    row(out, "max_events_per_request", at.max_events_per_request);
    if let Some(ca) = &at.ca_file {
        row(out, "ca_file", ca.display());
    }
}

fn describe_http(out: &mut String, h: &super::http::HttpOutput) {
    row(out, "endpoint", &h.endpoint);
    row(out, "http_method", h.method);
    row(out, "content_type", &h.content_type);
    row(out, "json_array", h.json_array);
    row(out, "compress", if h.gzip { "gzip" } else { "text" });
    if !h.headers.is_empty() {
        let names: Vec<&str> = h.headers.iter().map(|(k, _)| k.as_str()).collect();
        row(out, "headers", names.join(", "));
    }
    let auth = match &h.auth {
        None => "none".to_string(),
        Some(super::http::HttpAuth::Basic {
            username,
            password_path,
        }) => {
            format!(
                "basic as {username}, password from {} (never printed)",
                password_path.display()
            )
        }
        Some(super::http::HttpAuth::Bearer { token_path }) => {
            format!(
                "bearer, token from {} (never printed)",
                token_path.display()
            )
        }
    };
    row(out, "auth", auth);
    if !h.retryable_response_codes.is_empty() {
        let codes: Vec<String> = h
            .retryable_response_codes
            .iter()
            .map(u16::to_string)
            .collect();
        row(out, "retryable_response_codes", codes.join(", "));
    }
    row(
        out,
        "tls_verify_mode",
        if h.tls_verify { "peer" } else { "none" },
    );
}

fn describe_buffer(out: &mut String, b: &BufferConfig) {
    let keys = if b.chunk_keys.is_empty() {
        String::new()
    } else {
        format!(" keyed by {}", b.chunk_keys.join(", "))
    };
    let _ = writeln!(out, "  buffer (file){keys}");
    row(out, "  path", b.options.path.display());
    row(out, "  chunk_limit_size", size(b.options.chunk_limit_size));
    if let Some(r) = b.options.chunk_limit_records {
        row(out, "  chunk_limit_records", r);
    }
    row(out, "  total_limit_size", size(b.options.total_limit_size));
    row(out, "  memory_limit_size", size(b.options.memory_limit));
    row(out, "  flush_mode", b.flush_mode);
    row(out, "  flush_interval", duration(b.options.flush_interval));
    row(out, "  flush_at_shutdown", b.flush_at_shutdown);
    row(out, "  flush_thread_count", b.flush_thread_count);
    row(out, "  overflow_action", b.options.overflow_action);
    row(out, "  compress", b.compress);
    let r = &b.options.retry;
    let delays = match r.retry_type {
        RetryType::Periodic => format!("every {}", duration(r.wait)),
        RetryType::ExponentialBackoff => format!(
            "from {} ×{} up to {}",
            duration(r.wait),
            r.exponential_backoff_base,
            r.max_interval.map_or("no cap".into(), duration)
        ),
    };
    let limit = if r.forever {
        "forever".to_string()
    } else {
        let times = r
            .max_times
            .map_or(String::new(), |n| format!("{n} times or "));
        format!("{times}for {}", duration(r.timeout))
    };
    let random = if r.randomize { ", randomised" } else { "" };
    row(
        out,
        "  retry",
        format!("{} {delays}{random}, {limit}", r.retry_type),
    );
}

/// `512000` → `500 KiB (512000 bytes)`.
pub(crate) fn size(bytes: u64) -> String {
    const UNITS: [(u32, &str); 4] = [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")];
    for (shift, unit) in UNITS {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{} {unit} ({bytes} bytes)", bytes >> shift);
        }
    }
    format!("{bytes} bytes")
}

/// `43200 s` → `12h`, `5400 s` → `1h30m`, `0.25 s` → `250ms`.
pub(crate) fn duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, len) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ] {
        if ms >= len {
            let _ = write!(out, "{}{unit}", ms / len);
            ms %= len;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_read_naturally() {
        assert_eq!(size(512_000), "500 KiB (512000 bytes)");
        assert_eq!(size(800 << 20), "800 MiB (838860800 bytes)");
        assert_eq!(size(1000), "1000 bytes");
        assert_eq!(duration(Duration::from_secs(43200)), "12h");
        assert_eq!(duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(duration(Duration::from_millis(250)), "250ms");
        assert_eq!(duration(Duration::ZERO), "0s");
    }
}
