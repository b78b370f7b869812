//! A local Activity Tracker-compatible receiver: the other side of the wire contract
//! (`docs/at-ingest.md`), and the read side of seed 000 ("Managing events"), for demos,
//! tests and benchmarks. Not a production service.
//!
//! Authentication: `X-Auth-Token: bearer <token>` and `X-Auth-Project-Id` must be a service's
//! pair in one of the Secret files of `--secrets-dir` (the same format at-forwarder reads).
//! A batch holding an event of another service is refused (403). Each event is stored once
//! per tenant: a service copy under the project (unless `saveServiceCopy` is false) and a
//! user copy under `userAccountIds[0]`, `userSpaceId`, or the account of `logSourceCRN`.
//! Reads are scoped to the caller's project, or with `?scope=account:<id>` / `space:<id>`,
//! to a tenant the caller's service has written to, and cover only the events the caller's
//! service wrote (an account holds the user copies of many services).
//!
//! A request is authenticated before its body is read; a body is at most [`MAX_BODY`]
//! bytes, also once gunzipped (413 beyond). `/sink` and `/sink/ids` exist only with
//! `--sink` (benchmarks and the chaos suite).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::event::time::Timestamp;

pub mod cloud_logs;
mod sink;
pub mod store;

use sink::SinkCounts;

pub use store::{EventStore, Ingested};

/// Largest request body accepted, compressed or not.
pub const MAX_BODY: usize = 64 << 20;

/// How the receiver runs.
#[derive(Debug, Clone)]
pub struct ReceiverOptions {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Directory of Secret files (as mounted for at-forwarder).
    pub secrets_dir: PathBuf,
    /// Where events are stored.
    pub data_dir: PathBuf,
    /// Delete events older than this many days (by event time); none when `None`.
    pub retention_days: Option<u32>,
    /// How often retention runs.
    pub retention_every: Duration,
    /// Share of ingest requests answered 503 (0 to 1).
    pub fail_rate: f64,
    /// Delay before answering each request.
    pub latency: Duration,
    /// Answer ingest requests with this status for the first `status_for` after start.
    pub status: Option<(u16, Duration)>,
    /// Count events and distinct ids only, store nothing (for benchmarks); `GET /sink`
    /// answers `{"events":N,"distinct":M,"requests":R}`.
    pub sink: bool,
    /// In sink mode, also record each event's delay from its `eventTime` to its receipt
    /// (`GET /sink` then reports `latency_ms` percentiles).
    pub sink_latency: bool,
    /// Also play IBM Cloud Logs and its IAM, for these API keys (a file, one per line)
    /// ([`cloud_logs`]).
    pub cloud_logs_keys: Option<PathBuf>,
    /// Lifetime of the IAM tokens it issues.
    pub cloud_logs_token_lifetime: Duration,
}

/// token → (service, project).
type Tokens = HashMap<String, (String, String)>;

/// A refused request: status and message.
struct Refused(StatusCode, &'static str);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        (self.0, self.1).into_response()
    }
}

#[derive(Clone)]
struct App {
    sink: Option<Arc<Mutex<SinkCounts>>>,
    store: EventStore,
    secrets_dir: PathBuf,
    tokens: Arc<Mutex<(Option<Instant>, Tokens)>>,
    live: broadcast::Sender<(String, Bytes)>,
    opts: Arc<ReceiverOptions>,
    started: Instant,
}

/// A running receiver.
pub struct Receiver {
    /// The address it listens on (the port is known once bound).
    pub addr: SocketAddr,
    /// Its store.
    pub store: EventStore,
    /// Its Cloud Logs side, when asked for.
    pub cloud_logs: Option<Arc<cloud_logs::CloudLogs>>,
}

/// Binds and serves until `shutdown`.
pub async fn start(
    opts: ReceiverOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<(Receiver, tokio::task::JoinHandle<()>)> {
    let store = EventStore::open(&opts.data_dir)
        .map_err(|e| anyhow::anyhow!("opening the store in {}: {e}", opts.data_dir.display()))?;
    let (live, _) = broadcast::channel(4096);
    let app = App {
        sink: opts
            .sink
            .then(|| Arc::new(Mutex::new(SinkCounts::new(opts.sink_latency)))),
        store: store.clone(),
        secrets_dir: opts.secrets_dir.clone(),
        tokens: Arc::default(),
        live,
        opts: Arc::new(opts.clone()),
        started: Instant::now(),
    };
    let mut router = Router::new()
        .route("/v3/events", get(counts).post(ingest).delete(delete))
        .route("/v3/events/download", get(download))
        .route("/v3/events/stream", get(stream))
        .route("/healthz", get(|| async { "ok" }));
    if opts.sink {
        router = router
            .route("/sink", get(sink::counts))
            .route("/sink/ids", get(sink::ids));
    }
    let mut router = router.with_state(app.clone());
    let cloud_logs = match &opts.cloud_logs_keys {
        Some(keys) => Some(Arc::new(cloud_logs::CloudLogs::open(
            keys,
            opts.cloud_logs_token_lifetime,
        )?)),
        None => None,
    };
    if let Some(c) = &cloud_logs {
        router = router.merge(Arc::clone(c).router());
    }
    let listener = tokio::net::TcpListener::bind(opts.listen).await?;
    let addr = listener.local_addr()?;
    if let Some(days) = opts.retention_days {
        tokio::spawn(retention(
            app.store.clone(),
            days,
            opts.retention_every,
            shutdown.clone(),
        ));
    }
    info!(%addr, "Receiver listening.");
    let handle = tokio::spawn(async move {
        // Without TCP_NODELAY a small answer waits on Nagle and delayed ACKs (tens of ms).
        use axum::serve::ListenerExt;
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let serve = axum::serve(listener, router)
            .with_graceful_shutdown(async move { shutdown.cancelled().await });
        if let Err(e) = serve.await {
            warn!(error = %e, "Receiver stopped with an error.");
        }
    });
    Ok((
        Receiver {
            addr,
            store,
            cloud_logs,
        },
        handle,
    ))
}

async fn retention(store: EventStore, days: u32, every: Duration, stop: CancellationToken) {
    loop {
        let cutoff =
            Timestamp::from(SystemTime::now() - Duration::from_secs(u64::from(days) * 86_400))
                .date();
        match store.expire_before(&cutoff) {
            Ok(n) if n > 0 => info!(deleted = n, before = %cutoff, "Retention applied."),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "Retention failed."),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

fn today() -> String {
    Timestamp::from(SystemTime::now()).date()
}

/// The caller: (service, project).
fn authenticate(app: &App, headers: &HeaderMap) -> Result<(String, String), Refused> {
    let token = headers
        .get("x-auth-token")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bearer "))
        .unwrap_or("");
    let project = headers
        .get("x-auth-project-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut tokens = app
        .tokens
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let stale = tokens
        .0
        .is_none_or(|t| t.elapsed() > Duration::from_secs(1));
    if stale || !tokens.1.contains_key(token) {
        *tokens = (Some(Instant::now()), load_tokens(&app.secrets_dir));
    }
    match tokens.1.get(token) {
        Some((service, p)) if p == project => Ok((service.clone(), p.clone())),
        _ => Err(Refused(
            StatusCode::UNAUTHORIZED,
            "Unauthorized: unknown token, or a project id that is not the token's",
        )),
    }
}

/// token → (service, project), from every Secret file in `dir`.
fn load_tokens(dir: &Path) -> Tokens {
    let mut out = HashMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.filter_map(Result::ok) {
        if e.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let Ok(content) = std::fs::read(e.path()) else {
            continue;
        };
        if let Ok(services) = crate::output::secrets::parse(&content) {
            for (service, creds) in services {
                out.insert(
                    creds.token.expose().to_string(),
                    (service, creds.project_id),
                );
            }
        }
    }
    out
}

async fn faults(app: &App) -> Option<Response> {
    if !app.opts.latency.is_zero() {
        tokio::time::sleep(app.opts.latency).await;
    }
    if let Some((status, window)) = app.opts.status {
        if app.started.elapsed() < window {
            let code = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            return Some((code, [("Retry-After", "1")], "injected failure").into_response());
        }
    }
    (app.opts.fail_rate > 0.0 && fastrand::f64() < app.opts.fail_rate)
        .then(|| (StatusCode::SERVICE_UNAVAILABLE, "injected failure").into_response())
}

async fn ingest(State(app): State<App>, headers: HeaderMap, body: Body) -> Response {
    // The body is read only once the caller is known.
    let (service, project) = match authenticate(&app, &headers) {
        Ok(caller) => caller,
        Err(r) => return r.into_response(),
    };
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
        return too_large();
    };
    if let Some(r) = faults(&app).await {
        return r;
    }
    let gzip = headers.get("content-encoding").is_some_and(|v| v == "gzip");
    let plain = if gzip {
        let mut out = Vec::new();
        let mut decoder =
            std::io::Read::take(flate2::read::GzDecoder::new(&body[..]), MAX_BODY as u64 + 1);
        match std::io::Read::read_to_end(&mut decoder, &mut out) {
            Ok(n) if n > MAX_BODY => return too_large(),
            Ok(_) => Bytes::from(out),
            Err(e) => {
                return (StatusCode::BAD_REQUEST, format!("bad gzip body: {e}")).into_response()
            }
        }
    } else {
        body
    };
    if let Some(sink) = &app.sink {
        let key = headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(|k| format!("{service}\0{k}"));
        return sink::count_only(sink, key, &plain);
    }
    let events: Vec<serde_json::Value> = match serde_json::from_slice(&plain) {
        Ok(v) => v,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("the body must be a JSON array of events: {e}"),
            )
                .into_response()
        }
    };
    if let Some(other) = events.iter().find_map(|e| {
        e["meta"]["serviceProviderName"]
            .as_str()
            .filter(|s| *s != service)
    }) {
        return (StatusCode::FORBIDDEN, format!("the batch carries events of service '{other}', which this token does not belong to")).into_response();
    }
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let store = app.store.clone();
    let (svc, proj) = (service.clone(), project.clone());
    let stored = tokio::task::spawn_blocking(move || {
        store
            .ingest(&svc, &proj, key.as_deref(), &events, &today())
            .map(|r| (r, events))
    })
    .await;
    match stored {
        Ok(Ok((result, events))) => {
            if !result.replay && app.live.receiver_count() > 0 {
                for e in &events {
                    for tenant in store::copies(e, &project, &today()).tenants {
                        // Keyed by tenant and writer: a stream shows its own service's events.
                        let _ = app.live.send((
                            format!("{tenant}\0{service}"),
                            Bytes::from(serde_json::to_vec(e).unwrap_or_default()),
                        ));
                    }
                }
            }
            (StatusCode::OK, Json(result)).into_response()
        }
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("store: {e}")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

fn too_large() -> Response {
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the body is over {MAX_BODY} bytes (once gunzipped)"),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
struct Range {
    start: Option<String>,
    end: Option<String>,
    scope: Option<String>,
    gzip: Option<bool>,
}

/// What a read covers: the caller's service, the tenant, and the date range (defaults:
/// everything up to today).
struct Scope {
    service: String,
    tenant: String,
    start: String,
    end: String,
}

fn read_scope(app: &App, headers: &HeaderMap, q: &Range) -> Result<Scope, Refused> {
    let (service, project) = authenticate(app, headers)?;
    let tenant = match &q.scope {
        None => format!("project:{project}"),
        Some(s) => {
            let tenant = s.to_string();
            if !(tenant.starts_with("account:") || tenant.starts_with("space:"))
                || !app.store.may_read(&service, &tenant)
            {
                return Err(Refused(
                    StatusCode::FORBIDDEN,
                    "scope must be account:<id> or space:<id> that this service wrote to",
                ));
            }
            tenant
        }
    };
    let valid =
        |d: &str| d.len() == 10 && crate::event::time::parse(&format!("{d}T00:00:00Z")).is_ok();
    let start = q.start.clone().unwrap_or_else(|| "0000-01-01".into());
    let end = q.end.clone().unwrap_or_else(today);
    if !valid(&start) && start != "0000-01-01" || !valid(&end) {
        return Err(Refused(
            StatusCode::BAD_REQUEST,
            "start and end are dates, YYYY-MM-DD",
        ));
    }
    Ok(Scope {
        service,
        tenant,
        start,
        end,
    })
}

async fn counts(State(app): State<App>, headers: HeaderMap, Query(q): Query<Range>) -> Response {
    match read_scope(&app, &headers, &q) {
        Ok(Scope {
            service,
            tenant,
            start,
            end,
        }) => {
            let days: Vec<serde_json::Value> = app
                .store
                .counts(&tenant, &start, &end, &service)
                .into_iter()
                .map(|(d, n)| serde_json::json!({"date": d, "count": n}))
                .collect();
            Json(serde_json::json!({"scope": tenant, "days": days})).into_response()
        }
        Err(r) => r.into_response(),
    }
}

async fn download(State(app): State<App>, headers: HeaderMap, Query(q): Query<Range>) -> Response {
    let Scope {
        service,
        tenant,
        start,
        end,
    } = match read_scope(&app, &headers, &q) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    let gzip = q.gzip == Some(true)
        || headers
            .get("accept-encoding")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("gzip"));
    let mut ndjson = Vec::new();
    if let Err(e) = app
        .store
        .download(&tenant, &start, &end, &service, &mut ndjson)
    {
        return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    if gzip {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let _ = std::io::Write::write_all(&mut gz, &ndjson);
        let body = gz.finish().unwrap_or_default();
        return (
            [
                ("Content-Type", "application/x-ndjson"),
                ("Content-Encoding", "gzip"),
            ],
            body,
        )
            .into_response();
    }
    ([("Content-Type", "application/x-ndjson")], ndjson).into_response()
}

async fn delete(State(app): State<App>, headers: HeaderMap, Query(q): Query<Range>) -> Response {
    match read_scope(&app, &headers, &q) {
        Ok(Scope {
            service,
            tenant,
            start,
            end,
        }) => match app.store.delete(&tenant, &start, &end, &service) {
            Ok(n) => Json(serde_json::json!({"scope": tenant, "deleted": n})).into_response(),
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        },
        Err(r) => r.into_response(),
    }
}

async fn stream(State(app): State<App>, headers: HeaderMap, Query(q): Query<Range>) -> Response {
    let Scope {
        service, tenant, ..
    } = match read_scope(&app, &headers, &q) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    let rx = app.live.subscribe();
    let tenant = format!("{tenant}\0{service}");
    let events = futures_util::stream::unfold((rx, tenant), |(mut rx, tenant)| async move {
        loop {
            match rx.recv().await {
                Ok((t, bytes)) if t == tenant => {
                    let mut line = bytes.to_vec();
                    line.push(b'\n');
                    return Some((
                        Ok::<Bytes, std::convert::Infallible>(Bytes::from(line)),
                        (rx, tenant),
                    ));
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    (
        [("Content-Type", "application/x-ndjson")],
        Body::from_stream(events),
    )
        .into_response()
}
