//! `<match @type http>`: fluentd's out_http parameters, for any HTTP endpoint (a SIEM, an
//! archive, a collector). The response classes, `Retry-After` and dead-letter rules are the
//! Activity Tracker output's.

use std::path::PathBuf;
use std::time::Duration;

use super::diag::Diagnostic;
use super::section::Section;
use super::value::config_enum;

config_enum! {
    /// `http_method`.
    pub enum HttpMethod {
        /// POST (default).
        Post = "post",
        /// PUT.
        Put = "put",
    }
}

/// Credentials of `<auth>`, read from files at run time (never in the configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpAuth {
    /// `method basic`: `username`, and the password in `password_path`.
    Basic {
        /// The user name.
        username: String,
        /// File holding the password (re-read when it changes).
        password_path: PathBuf,
    },
    /// `method bearer`: the token in `token_path`.
    Bearer {
        /// File holding the token (re-read when it changes).
        token_path: PathBuf,
    },
}

/// A resolved `<match @type http>`.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpOutput {
    /// `endpoint`: the URL requests go to.
    pub endpoint: url::Url,
    /// `http_method` (default post).
    pub method: HttpMethod,
    /// `headers`: extra request headers (a JSON object of strings).
    pub headers: Vec<(String, String)>,
    /// `content_type` (default `application/x-ndjson`, or `application/json` with
    /// `json_array`).
    pub content_type: String,
    /// `json_array` (default false): the records as one JSON array, else one per line.
    pub json_array: bool,
    /// `compress gzip` (default `text`).
    pub gzip: bool,
    /// `retryable_response_codes`: retried besides 408, 429 and 5xx.
    pub retryable_response_codes: Vec<u16>,
    /// `<auth>`.
    pub auth: Option<HttpAuth>,
    /// `tls_ca_cert_path`: extra CA certificates to trust.
    pub tls_ca_cert_path: Option<PathBuf>,
    /// `tls_verify_mode none`: certificates are not verified (warned).
    pub tls_verify: bool,
    /// `read_timeout` (default 30 s; fluentd's `open_timeout` bounds the connect).
    pub request_timeout: Duration,
    /// Events per request at most (`max_events_per_request`, at-forwarder's own, 1000).
    pub max_events_per_request: u64,
}

/// Builds `@type http`; `None` after reporting what is wrong.
pub(super) fn build_http(s: &mut Section<'_>) -> Option<HttpOutput> {
    let endpoint = s.required("endpoint", |v| {
        let url = url::Url::parse(v).map_err(|e| format!("not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("the scheme must be http or https".into());
        }
        Ok(url)
    });
    let method = s
        .enumeration::<HttpMethod>("http_method")
        .map_or(HttpMethod::Post, |v| v.value);
    let json_array = s.bool("json_array").is_some_and(|v| v.value);
    let content_type = s.string("content_type").map_or_else(
        || {
            if json_array {
                "application/json".to_string()
            } else {
                "application/x-ndjson".to_string()
            }
        },
        |v| v.value,
    );
    let headers = s
        .typed("headers", |v| {
            let map: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(v).map_err(|e| format!("not a JSON object: {e}"))?;
            map.into_iter()
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => Ok((k, s)),
                    other => Ok((k, other.to_string())),
                })
                .collect::<Result<Vec<_>, String>>()
        })
        .map(|v| v.value)
        .unwrap_or_default();
    if let Some(h) = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
    {
        let _ = h;
        s.error(Diagnostic::error(
            None,
            "an Authorization header would put a credential in the configuration: use <auth> with a file",
        ));
    }
    let gzip = match s.string("compress") {
        None => false,
        Some(c) if c.value == "gzip" => true,
        Some(c) if c.value == "text" => false,
        Some(c) => {
            s.error(Diagnostic::error(
                Some(c.span),
                "'compress' must be text or gzip",
            ));
            false
        }
    };
    let retryable_response_codes = s
        .typed("retryable_response_codes", |v| {
            super::value::parse_array(v)?
                .iter()
                .map(|c| {
                    c.parse::<u16>()
                        .ok()
                        .filter(|c| (100..600).contains(c))
                        .ok_or_else(|| format!("'{c}' is not an HTTP status code"))
                })
                .collect::<Result<Vec<u16>, String>>()
        })
        .map(|v| v.value)
        .unwrap_or_default();
    let tls_verify = match s.string("tls_verify_mode") {
        Some(m) if m.value == "none" => {
            s.error(Diagnostic::warning(
                Some(m.span),
                "'tls_verify_mode none': the endpoint's certificate is not checked, so anyone on the path can read and change what is sent",
            ));
            false
        }
        Some(m) if m.value != "peer" => {
            s.error(Diagnostic::error(
                Some(m.span),
                "'tls_verify_mode' must be peer or none",
            ));
            true
        }
        _ => true,
    };
    let tls_ca_cert_path = s.path("tls_ca_cert_path").map(|v| v.value);
    let request_timeout = s
        .duration("read_timeout")
        .map_or(Duration::from_secs(30), |v| v.value);
    let max_events_per_request = s
        .integer("max_events_per_request", 1, 100_000)
        .map_or(1000, |v| v.value);
    s.without_effect(
        &[
            "open_timeout",
            "ssl_timeout",
            "proxy",
            "tls_version",
            "tls_ciphers",
            "error_response_as_unrecoverable",
        ],
        "connections use the system's defaults and one documented set of response classes",
    );
    // Ok(None): no <auth>; Err: an invalid one (reported).
    let auth = match s.child("auth") {
        None => Ok(None),
        Some(el) => build_auth(s, el).map(Some).ok_or(()),
    };
    Some(HttpOutput {
        endpoint: endpoint?.value,
        method,
        headers,
        content_type,
        json_array,
        gzip,
        retryable_response_codes,
        auth: auth.ok()?,
        tls_ca_cert_path,
        tls_verify,
        request_timeout,
        max_events_per_request,
    })
}

/// `<auth>`: `None` after reporting what is wrong.
fn build_auth(s: &mut Section<'_>, el: &super::syntax::Element) -> Option<HttpAuth> {
    let mut a = Section::new(el);
    let method = a.required_string("method");
    for key in ["password", "token"] {
        if let Some(p) = a.param(key) {
            let span = p.key_span;
            a.error(
                Diagnostic::error(
                    Some(span),
                    format!("'{key}' would keep a credential in the configuration"),
                )
                .with_help(format!("write it to a file and set '{key}_path'")),
            );
        }
    }
    let auth = match method.as_ref().map(|m| m.value.as_str()) {
        Some("basic") => {
            let username = a.required_string("username").map(|v| v.value);
            let password_path = a.path("password_path").map(|v| v.value);
            if password_path.is_none() {
                a.missing("password_path");
            }
            username
                .zip(password_path)
                .map(|(username, password_path)| HttpAuth::Basic {
                    username,
                    password_path,
                })
        }
        Some("bearer") => {
            let token_path = a.path("token_path").map(|v| v.value);
            if token_path.is_none() {
                a.missing("token_path");
            }
            token_path.map(|token_path| HttpAuth::Bearer { token_path })
        }
        Some(other) => {
            let span = method.as_ref().map(|m| m.span);
            a.error(Diagnostic::error(
                span,
                format!("unknown auth method '{other}': use basic or bearer"),
            ));
            None
        }
        None => None,
    };
    for d in a.finish() {
        s.error(d);
    }
    auth
}
