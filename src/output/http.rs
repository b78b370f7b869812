//! `@type http`: one request per batch of a chunk's events to any HTTP endpoint, as
//! fluentd's out_http sends them (one JSON record per line, or a JSON array with
//! `json_array`), with the Activity Tracker output's response classes: 2xx delivered;
//! 400 and 413 split (a single record dead-lettered); 408, 429, 5xx and
//! `retryable_response_codes` retried (honouring `Retry-After`); 401 and 403 retried
//! after the credential files are read again; other 4xx backed up. Redirects are not
//! followed. Credentials come from files and never reach a log line.

use std::io::Write;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use base64::Engine;
use bytes::Bytes;
use tracing::{debug, error};

use crate::buffer::{Outcome, Records, Sink, Taken};
use crate::config::http::{HttpAuth, HttpMethod, HttpOutput};

/// How often a credential file is looked at for changes.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Sends chunks to an HTTP endpoint.
pub struct HttpSink {
    client: reqwest::Client,
    cfg: HttpOutput,
    credential: Option<Credential>,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
}

/// The `Authorization` value, made from a file and made again when the file changes.
struct Credential {
    path: PathBuf,
    username: Option<String>,
    state: Mutex<CredentialState>,
}

#[derive(Default)]
struct CredentialState {
    checked: Option<Instant>,
    seen: Option<(u64, Option<SystemTime>)>,
    header: Option<String>,
}

impl Credential {
    /// The header value, the file read again when it changed (or `force`).
    fn header(&self, force: bool) -> Option<String> {
        let mut s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !force && s.checked.is_some_and(|t| t.elapsed() < CHECK_EVERY) {
            return s.header.clone();
        }
        s.checked = Some(Instant::now());
        let meta = std::fs::metadata(&self.path).ok()?;
        let id = (meta.len(), meta.modified().ok());
        if force || s.seen != Some(id) {
            s.seen = Some(id);
            match std::fs::read_to_string(&self.path) {
                Ok(text) => {
                    let secret = text.trim();
                    s.header = Some(match &self.username {
                        Some(user) => format!(
                            "Basic {}",
                            base64::engine::general_purpose::STANDARD
                                .encode(format!("{user}:{secret}"))
                        ),
                        None => format!("Bearer {secret}"),
                    });
                }
                Err(e) => {
                    error!(file = %self.path.display(), error = %e, "The http output's credential file cannot be read; keeping the last one.");
                }
            }
        }
        s.header.clone()
    }
}

impl HttpSink {
    /// A sink for `cfg`.
    pub fn new(
        cfg: &HttpOutput,
        metrics: std::sync::Arc<crate::metrics::Metrics>,
    ) -> anyhow::Result<Self> {
        let mut builder = reqwest::Client::builder()
            .timeout(cfg.request_timeout)
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .danger_accept_invalid_certs(!cfg.tls_verify);
        if let Some(ca) = &cfg.tls_ca_cert_path {
            let pem = std::fs::read(ca)
                .with_context(|| format!("reading tls_ca_cert_path {}", ca.display()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("parsing tls_ca_cert_path {}", ca.display()))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        let credential = cfg.auth.as_ref().map(|auth| match auth {
            HttpAuth::Basic {
                username,
                password_path,
            } => Credential {
                path: password_path.clone(),
                username: Some(username.clone()),
                state: Mutex::default(),
            },
            HttpAuth::Bearer { token_path } => Credential {
                path: token_path.clone(),
                username: None,
                state: Mutex::default(),
            },
        });
        Ok(HttpSink {
            client: builder.build().context("building the HTTP client")?,
            cfg: cfg.clone(),
            credential,
            metrics,
        })
    }

    /// The body: records `part`, one per line or as a JSON array, gzip-compressed when
    /// asked.
    fn body(&self, records: &Records, part: Range<usize>) -> std::io::Result<Bytes> {
        if self.cfg.json_array {
            return super::at::request_body(records, part, self.cfg.gzip);
        }
        let mut text = Vec::with_capacity(records.payload_bytes(part.clone()) + part.len());
        for r in records.range(part) {
            text.extend_from_slice(r);
            text.push(b'\n');
        }
        if !self.cfg.gzip {
            return Ok(Bytes::from(text));
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&text)?;
        gz.finish().map(Bytes::from)
    }

    async fn post(&self, chunk: &Taken, part: Range<usize>, key: &str) -> Outcome {
        let body = match self.body(&chunk.records, part) {
            Ok(body) => body,
            Err(e) => {
                return Outcome::Retry {
                    after: None,
                    reason: format!("compressing: {e}"),
                }
            }
        };
        let method = match self.cfg.method {
            HttpMethod::Post => reqwest::Method::POST,
            HttpMethod::Put => reqwest::Method::PUT,
        };
        let mut request = self
            .client
            .request(method, self.cfg.endpoint.clone())
            .header("Content-Type", &self.cfg.content_type)
            .header("Idempotency-Key", key);
        for (k, v) in &self.cfg.headers {
            request = request.header(k, v);
        }
        if self.cfg.gzip {
            request = request.header("Content-Encoding", "gzip");
        }
        if let Some(c) = &self.credential {
            match c.header(false) {
                Some(h) => request = request.header("Authorization", h),
                None => {
                    return Outcome::Retry {
                        after: None,
                        reason: format!("the credential file {} cannot be read", c.path.display()),
                    }
                }
            }
        }
        let answer = match super::answer::send(request.body(body), &self.metrics).await {
            Ok(a) => a,
            Err(retry) => return retry,
        };
        self.classify(answer.status, answer.retry_after, &answer.message)
    }

    fn classify(&self, status: u16, retry_after: Option<Duration>, message: &str) -> Outcome {
        let reason = format!("HTTP {status}: {message}");
        let retry = Outcome::Retry {
            after: retry_after,
            reason: reason.clone(),
        };
        match status {
            200..=299 => Outcome::Delivered,
            _ if self.cfg.retryable_response_codes.contains(&status) => retry,
            300..=399 => {
                error!(status, url = %self.cfg.endpoint, "The http output's endpoint answered with a redirect, which is not followed: set endpoint to the address that answers.");
                retry
            }
            400 | 413 => Outcome::Split,
            401 | 403 => {
                error!(status, url = %self.cfg.endpoint, "The http output's endpoint refused the credential; reading its file again.");
                if let Some(c) = &self.credential {
                    c.header(true);
                }
                retry
            }
            408 | 429 | 500..=599 => {
                debug!(
                    status,
                    "The http output's endpoint is unavailable; will retry."
                );
                retry
            }
            400..=499 => Outcome::Reject { reason },
            _ => retry,
        }
    }
}

impl Sink for HttpSink {
    async fn send(&self, chunk: &Taken) -> Outcome {
        let per = usize::try_from(self.cfg.max_events_per_request)
            .unwrap_or(1000)
            .max(1);
        let count = chunk.records.len();
        let parts = count.div_ceil(per);
        for i in 0..parts {
            let key = if parts == 1 {
                chunk.id.clone()
            } else {
                format!("{}-{i}", chunk.id)
            };
            let outcome = self
                .post(chunk, i * per..count.min((i + 1) * per), &key)
                .await;
            if outcome != Outcome::Delivered {
                return outcome;
            }
        }
        Outcome::Delivered
    }
}
