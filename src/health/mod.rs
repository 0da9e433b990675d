//! The HTTP endpoint: `/metrics` (Prometheus), and for Kubernetes probes
//! `/healthz` (the controller loop is turning) and `/readyz` (no part of
//! the daemon is failing, the first sync is done, this node's `CiliumNode`
//! is known and every expected link is attached); and the controller's
//! report for `status`, pinned beside the datapath.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use libbpf_rs::{MapCore, MapFlags, MapHandle, MapType};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::datapath::Paths;
use crate::metrics::Metrics;
use crate::resolve::{Problem, Severity, Subject};

/// A part of the daemon that can fail while the process runs on: it is
/// retried with backoff until it works, and is never a reason to exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Component {
    /// The HTTP endpoint's listener (`--metrics-addr`).
    Http,
    /// The BPF object: loaded, its maps pinned or adopted.
    Datapath,
    /// The kernel's routing netlink: queries and change notifications.
    Netlink,
    /// The source of the cluster's objects (Kubernetes or manifests).
    Source,
}

impl Component {
    pub const ALL: [Component; 4] = [
        Component::Http,
        Component::Datapath,
        Component::Netlink,
        Component::Source,
    ];

    /// Short name, used as a metrics label and a log field.
    pub fn label(self) -> &'static str {
        match self {
            Component::Http => "http",
            Component::Datapath => "datapath",
            Component::Netlink => "netlink",
            Component::Source => "source",
        }
    }
}

/// What the probes report, updated by the controller loop.
pub struct Health {
    /// The parts of the daemon failing now, each with its `/readyz` line.
    faults: Mutex<BTreeMap<Component, String>>,
    synced: AtomicBool,
    links_complete: AtomicBool,
    /// Why this node cannot serve while its IP is unknown: no `CiliumNode`
    /// of its name has been seen.
    node: Mutex<Option<String>>,
    /// Why this node does not do all that policy asks of it: what it needs
    /// does not fit its policy map.
    shortfall: Mutex<Option<String>>,
    /// Milliseconds from `start` to the last finished reconcile pass (0:
    /// none yet, measured from the start).
    last_pass: AtomicU64,
    /// Liveness is measured on the monotonic clock: a wall-clock step (NTP,
    /// an operator, a VM resumed) must neither fail /healthz, so that the
    /// kubelet kills a healthy sidecar, nor hide a stuck loop.
    start: Instant,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("faults", &self.faults)
            .field("synced", &self.synced)
            .field("links_complete", &self.links_complete)
            .field("node", &self.node)
            .field("last_pass_ms", &self.last_pass)
            .finish_non_exhaustive()
    }
}

/// The machine's clocks, injectable so that a test can step the wall clock
/// apart from the monotonic one.
pub trait Clock: Send + Sync {
    /// Wall-clock time, which can jump either way.
    fn wall(&self) -> SystemTime;
    /// Time that only moves forward, at a steady rate.
    fn monotonic(&self) -> Instant;
}

/// The process's real clocks.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn wall(&self) -> SystemTime {
        SystemTime::now()
    }
    fn monotonic(&self) -> Instant {
        Instant::now()
    }
}

/// A controller loop that has not finished a pass for this long is stuck:
/// /healthz fails, and the kubelet restarts the container.
const STALL: Duration = Duration::from_secs(60);

impl Default for Health {
    fn default() -> Self {
        Health::with_clock(Arc::new(SystemClock))
    }
}

impl Health {
    /// Health measured with `clock` (tests; `default()` uses the real one).
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Health {
            faults: Mutex::new(BTreeMap::new()),
            synced: AtomicBool::new(false),
            links_complete: AtomicBool::new(false),
            node: Mutex::new(None),
            shortfall: Mutex::new(None),
            last_pass: AtomicU64::new(0),
            start: clock.monotonic(),
            clock,
        }
    }

    fn since_start(&self) -> Duration {
        self.clock.monotonic().saturating_duration_since(self.start)
    }

    /// `component` fails, and why (its `/readyz` line); `None` once it
    /// works.
    pub fn set_fault(&self, component: Component, why: Option<String>) {
        let mut faults = self.faults.lock().unwrap_or_else(PoisonError::into_inner);
        match why {
            Some(why) => faults.insert(component, why),
            None => faults.remove(&component),
        };
    }

    pub fn set_synced(&self, v: bool) {
        self.synced.store(v, Ordering::Relaxed);
    }

    pub fn set_links_complete(&self, v: bool) {
        self.links_complete.store(v, Ordering::Relaxed);
    }

    /// This node's IP is unknown, and why; `None` once it is known.
    pub fn set_node_unknown(&self, why: Option<String>) {
        *self.node.lock().unwrap_or_else(PoisonError::into_inner) = why;
    }

    /// The policy map cannot hold what this node needs, and by how much;
    /// `None` once it can.
    pub fn set_shortfall(&self, why: Option<String>) {
        *self
            .shortfall
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = why;
    }

    /// A reconcile pass finished, or, while the datapath or netlink cannot
    /// be had yet, an attempt at them: the loop turns.
    pub fn mark_pass(&self) {
        let ms = u64::try_from(self.since_start().as_millis()).unwrap_or(u64::MAX);
        self.last_pass.store(ms, Ordering::Relaxed);
    }

    /// The loop finished a pass within the last `STALL`, by the monotonic
    /// clock.
    pub fn alive(&self) -> bool {
        let last = Duration::from_millis(self.last_pass.load(Ordering::Relaxed));
        self.since_start().saturating_sub(last) < STALL
    }

    /// Why this node is not ready, one reason a line (the failing parts of
    /// the daemon first); empty when it is.
    pub fn not_ready(&self) -> Vec<String> {
        let mut why: Vec<String> = self
            .faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        if !self.synced.load(Ordering::Relaxed) {
            why.push("first sync not done".to_string());
        }
        if let Some(node) = &*self.node.lock().unwrap_or_else(PoisonError::into_inner) {
            why.push(node.clone());
        }
        if let Some(short) = &*self
            .shortfall
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
        {
            why.push(short.clone());
        }
        if !self.links_complete.load(Ordering::Relaxed) {
            why.push("links missing".to_string());
        }
        why
    }

    pub fn ready(&self) -> bool {
        self.not_ready().is_empty()
    }

    fn readiness(&self) -> (StatusCode, String) {
        let why = self.not_ready();
        if why.is_empty() {
            (StatusCode::OK, "ok\n".to_string())
        } else {
            let mut body = why.join("\n");
            body.push('\n');
            (StatusCode::SERVICE_UNAVAILABLE, body)
        }
    }
}

// ------------------------------------------------------------ the report

/// What the controller last told `status` about itself: whether it is
/// ready and why not, and its findings about the input. `status` reads
/// only pins (it works while the controller is down), and a BPF filesystem
/// holds no plain files, so the report is JSON in a one-element map pinned
/// at `<bpffs-root>/cilium-mcast-egress/report`; `uninstall` removes it
/// with the rest of that directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// When the controller first wrote this content: it writes only when
    /// the content changes.
    pub since_unix_ns: u64,
    pub ready: bool,
    /// Why not, as `/readyz` says it.
    pub not_ready: Vec<String>,
    /// No `CiliumNode` of this node's name (with an IPv4 InternalIP) is
    /// among the objects.
    pub node_missing: bool,
    /// Policies invalid and skipped, in whole or in part.
    pub invalid_policies: usize,
    /// `CiliumEndpoint`s skipped for want of a security identity.
    pub endpoints_without_identity: usize,
    /// The findings, sorted (this node first), at most
    /// [`REPORTED_PROBLEMS`].
    pub problems: Vec<ReportedProblem>,
    /// Findings that did not fit in `problems`.
    pub problems_left_out: usize,
}

/// One finding, as `status` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportedProblem {
    /// `node`, `map`, `policy` or `endpoints`.
    pub kind: String,
    /// The node's, the map's or the policy's name; empty for `endpoints`.
    pub name: String,
    /// `invalid` or `warning`.
    pub severity: String,
    pub message: String,
}

/// Findings listed in the report; the rest are counted. The log has each
/// of them once, and the metrics count them.
pub const REPORTED_PROBLEMS: usize = 32;

/// A finding's message in the report is cut to this many bytes.
const REPORTED_MESSAGE_BYTES: usize = 512;

impl ReportedProblem {
    fn new(p: &Problem) -> ReportedProblem {
        let (kind, name) = match &p.subject {
            Subject::Node(name) => ("node", name.as_str()),
            Subject::Map(name) => ("map", name.as_str()),
            Subject::Policy(name) => ("policy", name.as_str()),
            Subject::Endpoints => ("endpoints", ""),
        };
        let mut message = p.message.clone();
        if message.len() > REPORTED_MESSAGE_BYTES {
            let mut end = REPORTED_MESSAGE_BYTES;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push_str("...");
        }
        ReportedProblem {
            kind: kind.to_string(),
            name: name.to_string(),
            severity: match p.severity {
                Severity::Invalid => "invalid",
                Severity::Warning => "warning",
            }
            .to_string(),
            message,
        }
    }
}

impl Report {
    /// The report of a controller with these readiness reasons and
    /// findings (sorted, as resolution leaves them).
    pub fn new<'a>(
        not_ready: Vec<String>,
        problems: impl IntoIterator<Item = &'a Problem>,
        endpoints_without_identity: usize,
    ) -> Report {
        let mut report = Report {
            ready: not_ready.is_empty(),
            not_ready,
            endpoints_without_identity,
            ..Report::default()
        };
        let mut invalid = std::collections::BTreeSet::new();
        for p in problems {
            if matches!(p.subject, Subject::Node(_)) {
                report.node_missing = true;
            }
            if let (Some(policy), Severity::Invalid) = (p.policy_name(), p.severity) {
                invalid.insert(policy);
            }
            if report.problems.len() < REPORTED_PROBLEMS {
                report.problems.push(ReportedProblem::new(p));
            } else {
                report.problems_left_out += 1;
            }
        }
        report.invalid_policies = invalid.len();
        report
    }

    /// The same report but for its time.
    pub fn same_as(&self, other: &Report) -> bool {
        Report {
            since_unix_ns: other.since_unix_ns,
            ..self.clone()
        } == *other
    }

    /// The pinned value: the JSON's length (u32, little-endian), the JSON,
    /// zeros. Findings that would not fit are left out and counted.
    fn encode(&self) -> Result<Vec<u8>, ReportError> {
        let mut report = self.clone();
        loop {
            let json = serde_json::to_vec(&report).map_err(ReportError::Json)?;
            if json.len() <= REPORT_BYTES - 4 {
                let mut value = vec![0u8; REPORT_BYTES];
                let len = u32::try_from(json.len()).map_err(|_| ReportError::TooLarge)?;
                value[..4].copy_from_slice(&len.to_le_bytes());
                value[4..4 + json.len()].copy_from_slice(&json);
                return Ok(value);
            }
            if report.problems.pop().is_none() {
                return Err(ReportError::TooLarge);
            }
            report.problems_left_out += 1;
        }
    }

    fn decode(value: &[u8]) -> Result<Report, ReportError> {
        let len = value
            .get(..4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_le_bytes)
            .ok_or(ReportError::Truncated)?;
        let json = usize::try_from(len)
            .ok()
            .and_then(|len| value.get(4..4 + len))
            .ok_or(ReportError::Truncated)?;
        serde_json::from_slice(json).map_err(ReportError::Json)
    }
}

/// Size of the pinned report's value: room for every finding listed at
/// its longest.
const REPORT_BYTES: usize = 32 * 1024;

/// The report's pin, under our own directory.
fn report_pin(paths: &Paths) -> PathBuf {
    paths.own_dir().join("report")
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{what} {path}: {source}")]
    Map {
        what: &'static str,
        path: PathBuf,
        source: libbpf_rs::Error,
    },
    #[error("creating {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the report as JSON: {0}")]
    Json(#[source] serde_json::Error),
    #[error("the report does not fit its map")]
    TooLarge,
    #[error("the pinned report is cut short")]
    Truncated,
}

/// The controller's handle on its pinned report.
pub struct ReportPin {
    map: MapHandle,
}

/// A hash map, not an array: an update replaces the element as a whole,
/// so `status` never reads half of one report and half of the next.
fn report_layout_ok(map: &MapHandle) -> bool {
    map.map_type() == MapType::Hash
        && map.key_size() == 4
        && usize::try_from(map.value_size()) == Ok(REPORT_BYTES)
        && map.max_entries() == 1
}

impl ReportPin {
    /// Adopt the pinned report map, or pin a new one (also in place of one
    /// of another layout: it only ever holds the last report).
    pub fn open_or_create(paths: &Paths) -> Result<ReportPin, ReportError> {
        let path = report_pin(paths);
        if let Ok(map) = MapHandle::from_pinned_path(&path) {
            if report_layout_ok(&map) {
                return Ok(ReportPin { map });
            }
            std::fs::remove_file(&path).map_err(|source| ReportError::Dir {
                path: path.clone(),
                source,
            })?;
        }
        let dir = paths.own_dir();
        std::fs::create_dir_all(&dir).map_err(|source| ReportError::Dir { path: dir, source })?;
        let opts = libbpf_sys::bpf_map_create_opts {
            sz: std::mem::size_of::<libbpf_sys::bpf_map_create_opts>() as _,
            ..Default::default()
        };
        let map_err = |what| {
            let path = path.clone();
            move |source| ReportError::Map { what, path, source }
        };
        let mut map = MapHandle::create(
            MapType::Hash,
            Some("mcast_egw_rpt"),
            4,
            REPORT_BYTES as u32,
            1,
            &opts,
        )
        .map_err(map_err("creating the map for"))?;
        map.pin(&path).map_err(map_err("pinning"))?;
        Ok(ReportPin { map })
    }

    pub fn write(&self, report: &Report) -> Result<(), ReportError> {
        let value = report.encode()?;
        self.map
            .update(&0u32.to_ne_bytes(), &value, MapFlags::ANY)
            .map_err(|source| ReportError::Map {
                what: "writing",
                path: PathBuf::from("the report map"),
                source,
            })
    }
}

/// The report pinned under `paths`; `None` when no controller has written
/// one (none has run there, or one older than the report).
pub fn read_report(paths: &Paths) -> Result<Option<Report>, ReportError> {
    let path = report_pin(paths);
    if !path.exists() {
        return Ok(None);
    }
    let map = MapHandle::from_pinned_path(&path).map_err(|source| ReportError::Map {
        what: "opening",
        path: path.clone(),
        source,
    })?;
    let value = map
        .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)
        .map_err(|source| ReportError::Map {
            what: "reading",
            path,
            source,
        })?;
    value.map(|v| Report::decode(&v)).transpose()
}

/// The body of a failed scrape; the reason goes to the log.
const METRICS_FAILED: &str = "metrics unavailable, see the controller's log\n";

fn respond(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
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

/// The pause after a failed accept.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// Serve on `listener` (bound by the caller, who retries a taken port)
/// until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    // An accept that fails (out of file descriptors) fails again at once:
    // logged once per error, and a pause before the next.
    let mut accept_error: Option<String> = None;
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(s) => {
                    accept_error = None;
                    s
                }
                Err(e) => {
                    let msg = e.to_string();
                    if accept_error.as_deref() != Some(msg.as_str()) {
                        tracing::warn!(error = %e, "accepting a probe connection");
                        accept_error = Some(msg);
                    }
                    tokio::select! {
                        () = tokio::time::sleep(ACCEPT_PAUSE) => {}
                        _ = shutdown.changed() => return,
                    }
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
mod tests;
