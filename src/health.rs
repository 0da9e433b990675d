//! The HTTP endpoint: `/metrics` (Prometheus), and for Kubernetes probes
//! `/healthz` (the controller loop is turning) and `/readyz` (the first
//! sync is done and every expected link is attached).

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
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

/// The body of a failed scrape; the reason goes to the log.
const METRICS_FAILED: &str = "metrics unavailable, see the controller's log\n";

fn respond(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r
}

async fn handle<B>(
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    req: Request<B>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(respond(StatusCode::METHOD_NOT_ALLOWED, "GET only\n"));
    }
    Ok(match req.uri().path() {
        "/healthz" if health.alive() => respond(StatusCode::OK, "ok\n"),
        "/healthz" => respond(StatusCode::SERVICE_UNAVAILABLE, "controller loop stalled\n"),
        "/metrics" => {
            // Reading the maps is blocking work: off the async workers.
            match tokio::task::spawn_blocking(move || metrics.render()).await {
                Ok(Ok(body)) => {
                    let mut r = Response::new(Full::new(Bytes::from(body)));
                    r.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        hyper::header::HeaderValue::from_static(prometheus::TEXT_FORMAT),
                    );
                    r
                }
                // Never a part of the metrics with a 200: series missing
                // from a scrape read as gone, a failed scrape as `up == 0`.
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "serving /metrics");
                    respond(StatusCode::INTERNAL_SERVER_ERROR, METRICS_FAILED)
                }
                Err(e) => {
                    tracing::error!(error = %e, "rendering the metrics did not finish");
                    respond(StatusCode::INTERNAL_SERVER_ERROR, METRICS_FAILED)
                }
            }
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

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;
    use crate::metrics::tests::{add_unencodable_family, metrics, FakeMaps};

    async fn get(metrics: Metrics, path: &str) -> (StatusCode, String) {
        let req = Request::get(path).body(()).unwrap();
        let resp = handle(Arc::new(Health::default()), Arc::new(metrics), req)
            .await
            .unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn metrics_of_a_quiet_node_answer_200() {
        let (status, body) = get(metrics(FakeMaps::default()), "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("cilium_mcast_egress_drops_total{"), "{body}");
    }

    #[tokio::test]
    async fn metrics_answer_500_when_a_map_read_fails() {
        let failing = FakeMaps {
            fail: true,
            ..FakeMaps::default()
        };
        let (status, body) = get(metrics(failing), "/metrics").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body, METRICS_FAILED);
    }

    #[tokio::test]
    async fn metrics_answer_500_when_encoding_fails() {
        let m = metrics(FakeMaps::default());
        add_unencodable_family(&m);
        let (status, body) = get(m, "/metrics").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body, METRICS_FAILED);
    }
}
