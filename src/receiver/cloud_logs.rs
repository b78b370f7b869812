//! The receiver as IBM Cloud Logs and its IAM, for the demo and tests: `POST
//! /identity/token` answers a token for a known API key (`grant_type=…:apikey`), valid for
//! the configured lifetime; `POST /logs/v1/singles` takes a JSON array of entries with a
//! valid `Bearer` token (401 otherwise) and counts each entry's `text.payload.id` (or
//! `text.id`); `GET /logs/v1/count` answers `{"entries":N,"distinct":M,"tokens":T}`.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

/// Cloud Logs' side of the receiver.
pub struct CloudLogs {
    keys: HashSet<String>,
    lifetime: Duration,
    state: Mutex<CloudState>,
}

#[derive(Default)]
struct CloudState {
    /// token → valid until.
    tokens: HashMap<String, Instant>,
    issued: u64,
    entries: u64,
    ids: HashSet<String>,
}

impl CloudLogs {
    /// API keys from `keys_file` (one per line); tokens valid for `lifetime`.
    pub fn open(keys_file: &Path, lifetime: Duration) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(keys_file)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", keys_file.display()))?;
        let keys = text
            .lines()
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(String::from)
            .collect();
        Ok(CloudLogs {
            keys,
            lifetime,
            state: Mutex::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CloudState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Entries received, distinct ids among them.
    pub fn counts(&self) -> (u64, u64) {
        let s = self.lock();
        (s.entries, s.ids.len() as u64)
    }

    /// IAM tokens issued.
    pub fn tokens_issued(&self) -> u64 {
        self.lock().issued
    }

    /// Its routes.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/identity/token", post(token))
            .route("/logs/v1/singles", post(singles))
            .route("/logs/v1/count", get(count))
            .with_state(self)
    }
}

async fn token(State(c): State<Arc<CloudLogs>>, body: Bytes) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let known = form.get("grant_type").map(String::as_str)
        == Some("urn:ibm:params:oauth:grant-type:apikey")
        && form.get("apikey").is_some_and(|k| c.keys.contains(k));
    if !known {
        return (
            StatusCode::BAD_REQUEST,
            r#"{"errorCode":"BXNIM0415E","errorMessage":"Provided API key could not be found."}"#,
        )
            .into_response();
    }
    let token = format!("{:032x}", fastrand::u128(..));
    let mut s = c.lock();
    s.issued += 1;
    s.tokens.insert(token.clone(), Instant::now() + c.lifetime);
    let lifetime = c.lifetime.as_secs();
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        format!(r#"{{"access_token":"{token}","token_type":"Bearer","expires_in":{lifetime},"expiration":0}}"#),
    )
        .into_response()
}

async fn singles(State(c): State<Arc<CloudLogs>>, headers: HeaderMap, body: Bytes) -> Response {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    {
        let s = c.lock();
        if s.tokens
            .get(token)
            .is_none_or(|until| Instant::now() >= *until)
        {
            return (StatusCode::UNAUTHORIZED, "invalid or expired token").into_response();
        }
    }
    let Ok(entries) = serde_json::from_slice::<Vec<serde_json::Value>>(&body) else {
        return (StatusCode::BAD_REQUEST, "not a JSON array of entries").into_response();
    };
    let mut s = c.lock();
    for e in &entries {
        s.entries += 1;
        let text = &e["text"];
        let id = text["payload"]["id"]
            .as_str()
            .or_else(|| text["id"].as_str());
        if let Some(id) = id {
            s.ids.insert(id.to_string());
        }
    }
    StatusCode::OK.into_response()
}

async fn count(State(c): State<Arc<CloudLogs>>) -> Response {
    let s = c.lock();
    (
        [("content-type", "application/json")],
        format!(
            r#"{{"entries":{},"distinct":{},"tokens":{}}}"#,
            s.entries,
            s.ids.len(),
            s.issued
        ),
    )
        .into_response()
}
