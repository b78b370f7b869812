//! `@type ibm_cloud_logs`: a chunk's events as Cloud Logs entries, POSTed to the
//! instance's `/logs/v1/singles` with an IAM bearer token ([`super::iam`]). Each entry is
//! `{applicationName, subsystemName, computerName, severity, timestamp, text}`: the event
//! itself (the Activity Tracker event, as forwarded to Activity Tracker) is `text`, a JSON
//! object; severity comes from CADF (`normal` 3, `warning` 4, `critical` 6; without one, a
//! failed outcome 4, else 3); the timestamp is `eventTime` in ms. A request stays under
//! 2 MB. Responses: 2xx delivered; 400 and 413 split; 401 retried with a new token at
//! once; 403, 408, 429 and 5xx retried; other 4xx backed up.

use std::time::{Duration, SystemTime};

use anyhow::Context;
use tracing::error;

use super::iam::IamTokens;
use crate::buffer::{Outcome, Sink, Taken};
use crate::config::cloud_logs::CloudLogsOutput;

/// Sends chunks to IBM Cloud Logs.
pub struct CloudLogsSink {
    client: reqwest::Client,
    cfg: CloudLogsOutput,
    tokens: IamTokens,
    computer_name: String,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
}

impl CloudLogsSink {
    /// A sink for `cfg`; entries name `computer_name` (the node).
    pub fn new(
        cfg: &CloudLogsOutput,
        computer_name: &str,
        metrics: std::sync::Arc<crate::metrics::Metrics>,
    ) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("building the HTTP client")?;
        Ok(CloudLogsSink {
            tokens: IamTokens::new(client.clone(), &cfg.iam_endpoint, cfg.credential.clone()),
            client,
            cfg: cfg.clone(),
            computer_name: computer_name.to_string(),
            metrics,
        })
    }

    /// One entry for `record` (an event of service `service`).
    fn entry(&self, service: &str, record: &[u8], out: &mut Vec<u8>) {
        let event: serde_json::Value = serde_json::from_slice(record).unwrap_or_default();
        let cadf = if event["payload"].is_object() {
            &event["payload"]
        } else {
            &event
        };
        let severity = match cadf["severity"].as_str() {
            Some("critical") => 6,
            Some("warning") => 4,
            Some("normal") => 3,
            _ if cadf["outcome"].as_str() == Some("failure") => 4,
            _ => 3,
        };
        let timestamp = cadf["eventTime"]
            .as_str()
            .and_then(|t| crate::event::time::parse(t).ok())
            .map_or_else(now_ms, |t| {
                t.secs.saturating_mul(1000) + i64::from(t.nanos / 1_000_000)
            });
        let text = |s: &str| serde_json::Value::from(s).to_string();
        let app = self.cfg.application_name.as_deref().unwrap_or(service);
        let subsystem = (self.cfg.subsystem_key.as_deref())
            .and_then(|key| crate::event::filter::accessor_text(&event, key))
            .unwrap_or_else(|| self.cfg.subsystem_name.clone());
        out.extend_from_slice(
            format!(
                "{{\"applicationName\":{},\"subsystemName\":{},\"computerName\":{},\"severity\":{severity},\"timestamp\":{timestamp},\"text\":",
                text(app),
                text(&subsystem),
                text(&self.computer_name)
            )
            .as_bytes(),
        );
        if event.is_object() {
            out.extend_from_slice(record);
        } else {
            out.extend_from_slice(text(&String::from_utf8_lossy(record)).as_bytes());
        }
        out.push(b'}');
    }

    async fn post(&self, body: Vec<u8>) -> Outcome {
        let mut fresh = false;
        // At most twice: a 401 gets one more try with a new token at once.
        for _ in 0..2 {
            let token = match self.tokens.token(fresh).await {
                Ok(t) => t,
                Err(e) => {
                    return Outcome::Retry {
                        after: None,
                        reason: format!("no IAM token: {e}"),
                    }
                }
            };
            let request = self
                .client
                .post(self.cfg.url.clone())
                .header("Content-Type", "application/json")
                .header("Authorization", format!("Bearer {token}"))
                .body(body.clone());
            let answer = match super::answer::send(request, &self.metrics).await {
                Ok(a) => a,
                Err(retry) => return retry,
            };
            let (status, retry_after, message) =
                (answer.status, answer.retry_after, answer.message);
            if status == 401 && !fresh {
                fresh = true;
                continue;
            }
            let reason = format!("HTTP {status}: {message}");
            return match status {
                200..=299 => Outcome::Delivered,
                400 | 413 => Outcome::Split,
                401 | 403 => {
                    error!(status, url = %self.cfg.url, "IBM Cloud Logs refused the IAM token: check the API key or trusted profile and its access to the instance.");
                    Outcome::Retry {
                        after: retry_after,
                        reason,
                    }
                }
                408 | 429 | 500..=599 | 300..=399 => Outcome::Retry {
                    after: retry_after,
                    reason,
                },
                _ => Outcome::Reject { reason },
            };
        }
        Outcome::Retry {
            after: None,
            reason: "HTTP 401 with a new token".into(),
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Sink for CloudLogsSink {
    async fn send(&self, chunk: &Taken) -> Outcome {
        let limit = self.cfg.max_request_bytes;
        let mut body = vec![b'['];
        let mut entry = Vec::new();
        for record in chunk.records.iter() {
            entry.clear();
            self.entry(&chunk.key, record, &mut entry);
            // Full: send what is gathered, then start the next request.
            if body.len() > 1 && body.len() + entry.len() + 2 > limit {
                body.push(b']');
                let outcome = self.post(std::mem::replace(&mut body, vec![b'['])).await;
                if outcome != Outcome::Delivered {
                    return outcome;
                }
            }
            if body.len() > 1 {
                body.push(b',');
            }
            body.extend_from_slice(&entry);
        }
        if body.len() == 1 {
            return Outcome::Delivered;
        }
        body.push(b']');
        self.post(body).await
    }
}
