//! The operations endpoint: `/metrics` (Prometheus text), `/healthz` (the process and its
//! runtime answer), `/readyz` (start-up finished: configuration loaded, positions loaded,
//! buffers open; 503 before, and while a reload swaps pipelines).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// Serves the endpoint on `addr` until `shutdown`; returns the bound address.
pub async fn serve(addr: SocketAddr, shutdown: CancellationToken) -> anyhow::Result<SocketAddr> {
    let router = Router::new()
        .route(
            "/metrics",
            get(|| async {
                (
                    [("Content-Type", "text/plain; version=0.0.4")],
                    crate::metrics::global().render(),
                )
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|| async {
                if crate::metrics::global().ready.load(Ordering::Relaxed) {
                    (StatusCode::OK, "ready")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "starting")
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding the operations endpoint {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    info!(addr = %bound, "Operations endpoint: /metrics, /healthz, /readyz.");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
    });
    Ok(bound)
}
