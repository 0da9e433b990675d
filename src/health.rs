//! The HTTP endpoint: `/metrics` (Prometheus), and for Kubernetes probes
//! `/healthz` (the controller loop is turning) and `/readyz` (the first
//! sync is done and every expected link is attached).

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::metrics::Metrics;

/// What the probes report, updated by the controller loop.
#[derive(Debug)]
pub struct Health {
    synced: AtomicBool,
    links_complete: AtomicBool,
    /// Unix seconds of the last finished reconcile pass (or of the start).
    last_pass: AtomicU64,
}

/// A controller loop that has not finished a pass for this long is stuck:
/// /healthz fails, and the kubelet restarts the container.
const STALL_SECS: u64 = 60;

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Default for Health {
    fn default() -> Self {
        Health {
            synced: AtomicBool::new(false),
            links_complete: AtomicBool::new(false),
            last_pass: AtomicU64::new(unix_now()),
        }
    }
}

impl Health {
    pub fn set_synced(&self, v: bool) {
        self.synced.store(v, Ordering::Relaxed);
    }

    pub fn set_links_complete(&self, v: bool) {
        self.links_complete.store(v, Ordering::Relaxed);
    }

    /// A reconcile pass finished.
    pub fn mark_pass(&self) {
        self.last_pass.store(unix_now(), Ordering::Relaxed);
    }

    fn alive(&self) -> bool {
        unix_now().saturating_sub(self.last_pass.load(Ordering::Relaxed)) < STALL_SECS
    }

    pub fn ready(&self) -> bool {
        self.synced.load(Ordering::Relaxed) && self.links_complete.load(Ordering::Relaxed)
    }

    fn readiness(&self) -> (StatusCode, &'static str) {
        match (
            self.synced.load(Ordering::Relaxed),
            self.links_complete.load(Ordering::Relaxed),
        ) {
            (true, true) => (StatusCode::OK, "ok\n"),
            (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "first sync not done\n"),
            (true, false) => (StatusCode::SERVICE_UNAVAILABLE, "links missing\n"),
        }
    }
}

fn respond(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r
}

async fn handle(
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(respond(StatusCode::METHOD_NOT_ALLOWED, "GET only\n"));
    }
    Ok(match req.uri().path() {
        "/healthz" if health.alive() => respond(StatusCode::OK, "ok\n"),
        "/healthz" => respond(StatusCode::SERVICE_UNAVAILABLE, "controller loop stalled\n"),
        "/metrics" => {
            // Reading the maps is blocking work: off the async workers.
            let body = tokio::task::spawn_blocking(move || metrics.render())
                .await
                .unwrap_or_default();
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        }
        "/readyz" => {
            let (status, body) = health.readiness();
            respond(status, body)
        }
        _ => respond(StatusCode::NOT_FOUND, "not found\n"),
    })
}

/// Serve on `listener` (bound by the caller, so that a taken port is an
/// error at start) until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a probe connection");
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let (health, metrics) = (health.clone(), metrics.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(health.clone(), metrics.clone(), req));
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "probe connection");
            }
        });
    }
}
