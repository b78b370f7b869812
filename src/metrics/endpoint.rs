//! The operations endpoint: `/metrics` (Prometheus text), `/healthz` (the process and its
//! runtime answer, and no stage is stalled: see [`crate::health`]), `/readyz` (start-up
//! finished: configuration loaded, positions loaded, buffers open, no stage stalled; 503
//! before, and while a reload swaps pipelines).
//!
//! It may listen on all interfaces (`<system> http_port`), so it is built to be cheap
//! whatever connects: a plain HTTP/1.1 exchange per connection (`Connection: close`, which
//! Prometheus and the kubelet's probes handle), at most [`MAX_REQUEST_HEAD`] bytes of
//! request read, the whole exchange within [`EXCHANGE_TIMEOUT`], and at most
//! [`MAX_CONNECTIONS`] open at once: a connection over the cap evicts the oldest one still
//! open (counted in `at_forwarder_ops_connections_evicted_total`), so that thousands of
//! half-open connections neither hold memory and file descriptors nor keep a probe out.
//! Three fixed GET routes need no HTTP framework; axum serves the receiver.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Metrics;

/// Most connections open at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Longest time from accepting a connection to having answered it.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);
/// Most bytes of a request read (request line and headers).
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;

/// Serves the endpoint on `addr` until `shutdown`; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding the operations endpoint {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    info!(addr = %bound, "Operations endpoint: /metrics, /healthz, /readyz, /positions.");
    tokio::spawn(accept_loop(listener, shutdown, metrics));
    Ok(bound)
}

async fn accept_loop(listener: TcpListener, shutdown: CancellationToken, metrics: Arc<Metrics>) {
    type Open = VecDeque<(u64, CancellationToken, tokio::task::JoinHandle<()>)>;
    let open: Arc<Mutex<Open>> = Arc::default();
    let mut next_id = 0u64;
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, say: wait a moment rather than spin.
                warn!(error = %e, "Operations endpoint cannot accept a connection.");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Over the cap, the oldest connection is closed — and waited for, so that its
        // descriptor is free before the next accept.
        loop {
            let oldest = {
                let mut open = lock(&open);
                if open.len() < MAX_CONNECTIONS {
                    break;
                }
                open.pop_front()
            };
            if let Some((_, token, task)) = oldest {
                // An entry whose task ended before it was listed is only removed.
                if !task.is_finished() {
                    metrics
                        .ops_connections_evicted
                        .fetch_add(1, Ordering::Relaxed);
                }
                token.cancel();
                let _ = task.await;
            }
        }
        let id = next_id;
        next_id += 1;
        let token = shutdown.child_token();
        let task = {
            let (open, token, metrics) = (Arc::clone(&open), token.clone(), Arc::clone(&metrics));
            tokio::spawn(async move {
                tokio::select! {
                    () = token.cancelled() => {}
                    _ = tokio::time::timeout(EXCHANGE_TIMEOUT, exchange(stream, &metrics)) => {}
                }
                lock(&open).retain(|(other, _, _)| *other != id);
            })
        };
        lock(&open).push_back((id, token, task));
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Reads one request head and answers it.
async fn exchange(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() >= MAX_REQUEST_HEAD {
            return respond(&mut stream, 431, "text/plain", "request head too large\n").await;
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|b| *b == b' ');
    let (method, target) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let path = target.split(|b| *b == b'?').next().unwrap_or_default();
    if method != b"GET" {
        return respond(&mut stream, 405, "text/plain", "only GET\n").await;
    }
    match path {
        b"/metrics" => {
            let body = metrics.render();
            respond(&mut stream, 200, "text/plain; version=0.0.4", &body).await
        }
        b"/healthz" if metrics.any_stalled() => {
            respond(&mut stream, 503, "text/plain", "stalled").await
        }
        b"/healthz" => respond(&mut stream, 200, "text/plain", "ok").await,
        b"/positions" => {
            // Reports walk the sources' globs: off the async threads.
            let reports = metrics.position_reports();
            let body = tokio::task::spawn_blocking(move || {
                reports.iter().map(|r| r()).collect::<String>()
            })
            .await
            .unwrap_or_else(|e| format!("error: {e}\n"));
            respond(&mut stream, 200, "text/plain", &body).await
        }
        b"/readyz" => {
            if metrics.any_stalled() {
                respond(&mut stream, 503, "text/plain", "stalled").await
            } else if metrics.ready.load(Ordering::Relaxed) {
                respond(&mut stream, 200, "text/plain", "ready").await
            } else {
                respond(&mut stream, 503, "text/plain", "starting").await
            }
        }
        _ => respond(&mut stream, 404, "text/plain", "not found\n").await,
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}
