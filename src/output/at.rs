//! The Activity Tracker output: one HTTPS request per batch of one service's events,
//! authenticated with that service's token from the Secret. The wire contract is in
//! `docs/at-ingest.md`.

use std::collections::HashMap;
use std::io::Write;
use std::ops::Range;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use tracing::{debug, error, info};

use super::secrets::Secrets;
use crate::buffer::{Outcome, Records, Sink, Taken};
use crate::config::output::{Compression, PluginLogLevel};
use crate::config::AtOutput;

/// How often the missing-token ERROR is repeated per service.
const MISSING_TOKEN_EVERY: Duration = Duration::from_secs(60);

/// Sends chunks to an Activity Tracker endpoint.
pub struct AtSink {
    client: reqwest::Client,
    url: String,
    region: String,
    compress: bool,
    max_events: usize,
    debug: bool,
    secrets: Secrets,
    missing_token: Mutex<HashMap<String, Instant>>,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
}

impl std::fmt::Debug for AtSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AtSink")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl AtSink {
    /// The sink of a configured `ibmactivitytracker` output, counting its requests and
    /// Secret loads in `metrics`.
    pub fn new(
        cfg: &AtOutput,
        metrics: std::sync::Arc<crate::metrics::Metrics>,
    ) -> anyhow::Result<Self> {
        let mut builder = reqwest::Client::builder()
            .timeout(cfg.request_timeout)
            .connect_timeout(cfg.request_timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(60))
            // A redirect would re-send X-Auth-Token to whatever host the answer names
            // (reqwest strips only Authorization and Cookie): a 3xx is an error instead.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("at-forwarder/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &cfg.ca_file {
            let pem =
                std::fs::read(ca).with_context(|| format!("reading ca_file {}", ca.display()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("parsing ca_file {}", ca.display()))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        Ok(AtSink {
            client: builder.build().context("building the HTTP client")?,
            url: cfg.endpoint_url(),
            region: cfg.service_region.clone(),
            compress: cfg.compress == Compression::Gzip,
            max_events: usize::try_from(cfg.max_events_per_request).unwrap_or(1000),
            debug: cfg.plugin_log_level == PluginLogLevel::Debug,
            secrets: Secrets::new(
                cfg.secrets_path.join(&cfg.secret_key),
                std::sync::Arc::clone(&metrics),
            ),
            missing_token: Mutex::new(HashMap::new()),
            metrics,
        })
    }

    /// Times the Secret was read and loaded.
    pub fn secret_reloads(&self) -> u64 {
        self.secrets.reloads()
    }

    fn no_token(&self, service: &str) -> Outcome {
        let mut warned = self
            .missing_token
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if warned
            .get(service)
            .is_none_or(|t| t.elapsed() >= MISSING_TOKEN_EVERY)
        {
            error!(
                service,
                "service token does not exist for service {service}"
            );
            warned.insert(service.to_string(), Instant::now());
        }
        Outcome::Retry {
            after: None,
            reason: format!("service token does not exist for service {service}"),
        }
    }

    async fn post(&self, chunk: &Taken, part: Range<usize>, key: &str) -> Outcome {
        let Some(creds) = self.secrets.get(&chunk.key) else {
            return self.no_token(&chunk.key);
        };
        let events = part.len();
        let body = match request_body(&chunk.records, part.clone(), self.compress) {
            Ok(body) => body,
            Err(e) => {
                return Outcome::Retry {
                    after: None,
                    reason: format!("compressing: {e}"),
                }
            }
        };
        let mut request = self
            .client
            .post(&self.url)
            .header("X-Auth-Token", format!("bearer {}", creds.token.expose()))
            .header("X-Auth-Project-Id", &creds.project_id)
            .header("X-Service-Name", &chunk.key)
            .header("X-Service-Region", &self.region)
            .header("Content-Type", "application/json")
            .header("Idempotency-Key", key);
        if self.compress {
            request = request.header("Content-Encoding", "gzip");
        }
        if self.debug {
            for record in chunk.records.range(part) {
                info!(service = %chunk.key, event = %String::from_utf8_lossy(record), "Sending event.");
            }
        }
        let answer = match super::answer::send(request.body(body), &self.metrics).await {
            Ok(a) => a,
            Err(retry) => return retry,
        };
        let status = answer.status;
        if (300..400).contains(&status) {
            let location = &answer.location;
            error!(status, url = %self.url, %location, "Activity Tracker answered with a redirect, which is not followed (the token would go to another host): set targetHost to the address that answers.");
            return Outcome::Retry {
                after: None,
                reason: format!("HTTP {status}: redirect to {location} not followed"),
            };
        }
        if self.debug {
            info!(service = %chunk.key, status, events, "Activity Tracker answered.");
        }
        self.classify(status, answer.retry_after, &answer.message)
    }

    fn classify(&self, status: u16, retry_after: Option<Duration>, message: &str) -> Outcome {
        let reason = format!("HTTP {status}: {message}");
        match status {
            200..=299 => Outcome::Delivered,
            400 | 413 => Outcome::Split,
            401 | 403 => {
                error!(
                    status,
                    "Error contacting AT with code {status} and message {message}"
                );
                self.secrets.reload();
                Outcome::Retry {
                    after: retry_after,
                    reason,
                }
            }
            404 => {
                error!(url = %self.url, "Error contacting AT with code 404 and message {message}: check targetHost and endpoint_path");
                Outcome::Retry {
                    after: retry_after,
                    reason,
                }
            }
            408 | 429 | 500..=599 => {
                // The buffer reports the retry, once a minute per service at most.
                debug!(status, "Activity Tracker is unavailable; will retry.");
                Outcome::Retry {
                    after: retry_after,
                    reason,
                }
            }
            400..=499 => Outcome::Reject { reason },
            _ => Outcome::Retry {
                after: retry_after,
                reason,
            },
        }
    }
}

impl Sink for AtSink {
    async fn send(&self, chunk: &Taken) -> Outcome {
        let per = self.max_events.max(1);
        let count = chunk.records.len();
        let parts = count.div_ceil(per);
        for i in 0..parts {
            // The same key for every retry of the same chunk, across restarts.
            let key = if parts == 1 {
                chunk.id.clone()
            } else {
                format!("{}-{i}", chunk.id)
            };
            let part = i * per..count.min((i + 1) * per);
            let outcome = self.post(chunk, part, &key).await;
            if outcome != Outcome::Delivered {
                return outcome;
            }
        }
        Outcome::Delivered
    }

    fn can_send(&self, key: &str) -> bool {
        self.secrets.has(key)
    }
}

/// The body of a request carrying records `part` of a chunk: a JSON array of the events,
/// gzip-compressed (flate2's fastest level) when `compress`. A slice of the chunk's own
/// bytes when the chunk was laid out in bodies of that size (see `Buffer::lay_out_bodies`);
/// otherwise (splits, damaged chunks) the records are copied into a new array.
pub fn request_body(
    records: &Records,
    part: Range<usize>,
    compress: bool,
) -> std::io::Result<Bytes> {
    let json = records.json(part.clone()).unwrap_or_else(|| {
        let mut json = Vec::with_capacity(records.payload_bytes(part.clone()) + part.len() + 2);
        json.push(b'[');
        for (i, r) in records.range(part).enumerate() {
            if i > 0 {
                json.push(b',');
            }
            json.extend_from_slice(r);
        }
        json.push(b']');
        Bytes::from(json)
    });
    if !compress {
        return Ok(json);
    }
    let mut gz = flate2::write::GzEncoder::new(
        Vec::with_capacity(json.len() / 4),
        flate2::Compression::fast(),
    );
    gz.write_all(&json)?;
    gz.finish().map(Bytes::from)
}
