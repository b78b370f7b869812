//! IBM Cloud IAM access tokens for the Cloud Logs output: made from an API key
//! (`grant_type=urn:ibm:params:oauth:grant-type:apikey`) or from a trusted profile and a
//! compute-resource token (`…:cr-token`), both read from files (again when they change).
//! A token is reused until less than a fifth of its lifetime is left, and made anew at
//! once after a 401. Neither the key nor a token reaches a log line or a Debug print.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;
use tokio::sync::Mutex;

use crate::config::cloud_logs::IamCredential;

/// A cached token and when to make the next one.
struct Cached {
    token: String,
    refresh_at: Instant,
}

/// Makes and caches IAM tokens.
pub struct IamTokens {
    client: reqwest::Client,
    url: String,
    credential: IamCredential,
    cached: Mutex<Option<Cached>>,
}

impl std::fmt::Debug for IamTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IamTokens")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    expires_in: Option<u64>,
    expiration: Option<u64>,
}

impl IamTokens {
    /// Tokens from `iam_endpoint` (`/identity/token`) for `credential`.
    pub fn new(
        client: reqwest::Client,
        iam_endpoint: &url::Url,
        credential: IamCredential,
    ) -> Self {
        IamTokens {
            client,
            url: format!(
                "{}/identity/token",
                iam_endpoint.as_str().trim_end_matches('/')
            ),
            credential,
            cached: Mutex::new(None),
        }
    }

    /// A valid token: the cached one, or a new one when it is due or `fresh`.
    pub async fn token(&self, fresh: bool) -> Result<String, String> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached
            .as_ref()
            .filter(|c| !fresh && Instant::now() < c.refresh_at)
        {
            return Ok(c.token.clone());
        }
        let new = self.request().await?;
        let token = new.token.clone();
        *cached = Some(new);
        Ok(token)
    }

    async fn request(&self) -> Result<Cached, String> {
        let read = |p: &PathBuf| {
            std::fs::read_to_string(p)
                .map(|t| t.trim().to_string())
                .map_err(|e| format!("reading {}: {e}", p.display()))
        };
        let form: Vec<(&str, String)> = match &self.credential {
            IamCredential::ApiKey(path) => vec![
                (
                    "grant_type",
                    "urn:ibm:params:oauth:grant-type:apikey".into(),
                ),
                ("apikey", read(path)?),
            ],
            IamCredential::TrustedProfile {
                profile_id,
                cr_token_path,
            } => vec![
                (
                    "grant_type",
                    "urn:ibm:params:oauth:grant-type:cr-token".into(),
                ),
                ("cr_token", read(cr_token_path)?),
                ("profile_id", profile_id.clone()),
            ],
        };
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form.iter().map(|(k, v)| (*k, v.as_str())))
            .finish();
        let answer = self
            .client
            .post(&self.url)
            .header("Accept", "application/json")
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "IAM token request failed: {}",
                    super::answer::error_chain(&e)
                )
            })?;
        let status = answer.status().as_u16();
        if !(200..300).contains(&status) {
            // The answer names the problem; it never holds the key.
            let text: String = answer
                .text()
                .await
                .unwrap_or_default()
                .chars()
                .take(300)
                .collect();
            return Err(format!("IAM answered {status}: {text}"));
        }
        let text = answer
            .text()
            .await
            .map_err(|e| format!("reading IAM's answer: {e}"))?;
        let answer: TokenAnswer =
            serde_json::from_str(&text).map_err(|e| format!("IAM's answer is not a token: {e}"))?;
        let lifetime = answer
            .expires_in
            .or_else(|| {
                let now = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .ok()?
                    .as_secs();
                answer.expiration.map(|e| e.saturating_sub(now))
            })
            .unwrap_or(3600);
        // Made anew once less than a fifth of its lifetime is left.
        let refresh_in = Duration::from_secs(lifetime.saturating_mul(4) / 5);
        Ok(Cached {
            token: answer.access_token,
            refresh_at: Instant::now() + refresh_in,
        })
    }
}
