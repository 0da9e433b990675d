//! Sources of the Cilium objects the controller resolves from.
//!
//! Two sources sit behind one interface, [`run`]: `kubernetes` (kube-rs
//! watches on the three `cilium.io/v2` kinds) and `manifests DIR` (a
//! directory of YAML files holding the same objects). Either publishes a
//! complete, consistent [`Objects`] snapshot into a `watch` channel once it
//! has seen everything once, then again after every change: [`SETTLE`]
//! after it, so that the steps of one edit (an editor's write-rename-chmod)
//! make one snapshot, and at most once per [`DEBOUNCE`], so that a burst of
//! changes (a rollout, a relist) costs one resolution per [`DEBOUNCE`], not
//! one per object. A change alone is published at once; a burst is never
//! held back longer than [`DEBOUNCE`].
//!
//! Snapshots are deterministic: every kind is sorted by namespace and name,
//! so the same cluster state always yields an equal [`Objects`], and an
//! unchanged state is never published twice.
//!
//! An idle source costs nothing: only a change to what the objects say
//! wakes it. File opens and reads (its own included), attribute changes,
//! and Kubernetes updates of fields resolution does not read
//! (`resourceVersion`, status it ignores) or relists that find the same
//! objects are not changes. [`SourceStats::scans`] counts the complete
//! reads that remain.

pub mod kubernetes;
pub mod manifests;

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use crate::objects::Objects;

pub use kubernetes::{client, run_with_client};
pub use manifests::{load_dir, ManifestError};

/// The shortest time between two snapshots: under a steady stream of
/// changes, one resolution per this long.
pub const DEBOUNCE: Duration = Duration::from_millis(150);

/// How long after a change its snapshot is taken (when the last one is
/// older than [`DEBOUNCE`]): long enough for the few events of one edit to
/// arrive, short enough that a change reaches the maps at once.
pub const SETTLE: Duration = Duration::from_millis(15);

/// When to take the snapshot of a change seen now, the last snapshot having
/// been taken at `last`.
fn due_after(last: Option<Instant>) -> Instant {
    let settled = Instant::now() + SETTLE;
    last.map_or(settled, |last| settled.max(last + DEBOUNCE))
}

/// Where the objects come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceConfig {
    /// Watch the Kubernetes API (in-cluster config or `KUBECONFIG`).
    Kubernetes,
    /// Read and watch the YAML files directly in this directory.
    Manifests(PathBuf),
}

/// The channel a source publishes into: `None` until the first complete
/// snapshot.
pub type SnapshotSender = watch::Sender<Option<Arc<Objects>>>;

/// Tells a source to stop: it returns once the value is `true` (or the
/// sender is dropped, which can only mean the daemon is going away).
pub type Shutdown = watch::Receiver<bool>;

/// Errors that stop a source. Problems a source can live with (a broken
/// manifest, a watch that failed and is retried) are logged and counted in
/// [`SourceStats`] instead.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The manifests directory does not exist or cannot be read at start.
    #[error("manifests directory {}: {source}", dir.display())]
    ManifestDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The manifests path exists but is not a directory.
    #[error("manifests path {} is not a directory", dir.display())]
    NotADirectory { dir: PathBuf },
    /// The file watcher could not be set up on the manifests directory.
    #[error("cannot watch manifests directory {}: {source}", dir.display())]
    Watch {
        dir: PathBuf,
        #[source]
        source: notify::Error,
    },
    /// The file watcher went away while the source was running.
    #[error("file watcher of manifests directory {} stopped", dir.display())]
    WatcherStopped { dir: PathBuf },
    /// No Kubernetes client could be built from the in-cluster config or
    /// `KUBECONFIG`.
    #[error("cannot build a Kubernetes client (in-cluster config or KUBECONFIG): {0}")]
    KubeClient(#[source] kube::Error),
    /// A Kubernetes watch stream ended, which the watcher never does on its
    /// own (it retries with backoff).
    #[error("Kubernetes watch of {kind} ended")]
    WatchEnded { kind: ObjectKind },
}

/// The three kinds of objects a source delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    /// `CiliumEgressGatewayPolicy`.
    Policy,
    /// `CiliumNode`.
    Node,
    /// `CiliumEndpoint`.
    Endpoint,
}

impl ObjectKind {
    /// All kinds, in index order.
    pub const ALL: [ObjectKind; 3] = [ObjectKind::Policy, ObjectKind::Node, ObjectKind::Endpoint];

    /// Short name, used as a metrics label and a log field.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Policy => "policy",
            ObjectKind::Node => "node",
            ObjectKind::Endpoint => "endpoint",
        }
    }

    /// The Kubernetes `kind`.
    pub fn kind_name(self) -> &'static str {
        match self {
            ObjectKind::Policy => "CiliumEgressGatewayPolicy",
            ObjectKind::Node => "CiliumNode",
            ObjectKind::Endpoint => "CiliumEndpoint",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which source delivered an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceKind {
    Kubernetes,
    Manifests,
}

impl SourceKind {
    /// All sources, in index order.
    pub const ALL: [SourceKind; 2] = [SourceKind::Kubernetes, SourceKind::Manifests];

    /// Short name, used as a metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Kubernetes => "kubernetes",
            SourceKind::Manifests => "manifests",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Counters of a running source, shared with the metrics endpoint.
///
/// An *event* is one object seen to change: for Kubernetes, one watch event
/// (listed, added, modified or deleted object); for manifests, one object
/// added, changed or removed between two reads of the directory.
#[derive(Debug, Default)]
pub struct SourceStats {
    events: [[AtomicU64; 3]; 2],
    errors: AtomicU64,
    scans: AtomicU64,
    publishes: AtomicU64,
    synced: AtomicBool,
    manifest_errors: Mutex<Vec<ManifestError>>,
    /// Per kind, the error of its watch while it fails (Kubernetes).
    watch_errors: Mutex<[Option<String>; 3]>,
    /// Failed attempts of every watch, each retried by the watcher.
    watch_failures: AtomicU64,
    /// Woken when a watch fails or recovers, and at every snapshot.
    changed: Notify,
}

impl SourceStats {
    /// A fresh set of counters, ready to share.
    pub fn new() -> Arc<SourceStats> {
        Arc::new(SourceStats::default())
    }

    /// Events of one kind from one source.
    pub fn events(&self, source: SourceKind, kind: ObjectKind) -> u64 {
        self.events[source.index()][kind.index()].load(Ordering::Relaxed)
    }

    /// Every (source, kind, events) triple, for the metrics exporter.
    pub fn event_counts(&self) -> impl Iterator<Item = (SourceKind, ObjectKind, u64)> + '_ {
        SourceKind::ALL.into_iter().flat_map(move |source| {
            ObjectKind::ALL
                .into_iter()
                .map(move |kind| (source, kind, self.events(source, kind)))
        })
    }

    /// Problems seen: broken manifests, failed watches. Each problem counts
    /// once when it appears, not once per retry or re-read.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Complete reads of the source's state: for manifests, a read of the
    /// whole directory; for Kubernetes, a snapshot of the three stores.
    /// Each costs time in proportion to the cluster, so after the initial
    /// sync this grows only with changes (and, for manifests, with the
    /// periodic full read).
    pub fn scans(&self) -> u64 {
        self.scans.load(Ordering::Relaxed)
    }

    /// Snapshots published.
    pub fn publishes(&self) -> u64 {
        self.publishes.load(Ordering::Relaxed)
    }

    /// Whether the initial sync is done (a first snapshot was published).
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
    }

    /// The manifest problems as of the last read of the directory (empty
    /// for the Kubernetes source and when every file is fine).
    pub fn manifest_errors(&self) -> Vec<ManifestError> {
        self.manifest_errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Why the source cannot deliver a complete, current picture now: the
    /// watches that fail, each with its error; `None` while none does.
    pub fn failing(&self) -> Option<String> {
        let errors = self
            .watch_errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let failing: Vec<String> = ObjectKind::ALL
            .into_iter()
            .zip(errors.iter())
            .filter_map(|(kind, e)| {
                e.as_ref()
                    .map(|e| format!("watch of {} failing: {e}", kind.kind_name()))
            })
            .collect();
        (!failing.is_empty()).then(|| failing.join("; "))
    }

    /// Failed attempts of the watches so far, each retried with backoff.
    pub fn watch_failures(&self) -> u64 {
        self.watch_failures.load(Ordering::Relaxed)
    }

    /// Completes after a watch failed or recovered or a snapshot was taken
    /// (at once if one of them happened since the last call): the moments
    /// [`SourceStats::failing`] and [`SourceStats::scans`] can change.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// A watch of `kind` failed with `error` (`None`: it works again).
    fn set_watch_error(&self, kind: ObjectKind, error: Option<String>) {
        if error.is_some() {
            self.watch_failures.fetch_add(1, Ordering::Relaxed);
        }
        self.watch_errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)[kind.index()] = error;
        self.changed.notify_one();
    }

    fn add_events(&self, source: SourceKind, kind: ObjectKind, n: u64) {
        self.events[source.index()][kind.index()].fetch_add(n, Ordering::Relaxed);
    }

    fn add_error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    fn add_scan(&self) {
        self.scans.fetch_add(1, Ordering::Relaxed);
    }

    fn set_manifest_errors(&self, errors: Vec<ManifestError>) {
        *self
            .manifest_errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = errors;
    }
}

/// Runs the configured source until `shutdown` fires.
///
/// Publishes into `tx` a complete snapshot after the initial sync
/// (Kubernetes: all three kinds listed once; manifests: the first read of
/// the directory) and again after every change ([`SETTLE`] after it, at
/// most once per [`DEBOUNCE`]). `tx` holds `None` until then.
pub async fn run(
    config: SourceConfig,
    tx: SnapshotSender,
    stats: Arc<SourceStats>,
    shutdown: Shutdown,
) -> Result<(), SourceError> {
    match config {
        SourceConfig::Kubernetes => kubernetes::run(tx, stats, shutdown).await,
        SourceConfig::Manifests(dir) => manifests::run(dir, tx, stats, shutdown).await,
    }
}

/// Completes when the daemon asks the source to stop.
async fn stopped(shutdown: &mut Shutdown) {
    // An error means the sender is gone: nobody can ask us to stop any more
    // and nobody is left to care, so stop as well.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Runs blocking work (a directory read, a snapshot of 10,000 endpoints)
/// from a source's task without stalling the async worker it runs on:
/// through `block_in_place` on a multi-threaded runtime, the daemon's;
/// inline on a current-thread runtime (tests), where `block_in_place`
/// panics and there is no other worker to stall anyway.
fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Publishes `objects` unless the channel already holds an equal snapshot.
/// Returns whether it published.
fn publish(tx: &SnapshotSender, stats: &SourceStats, objects: Objects) -> bool {
    let published = tx.send_if_modified(|current| {
        if current.as_deref() == Some(&objects) {
            return false;
        }
        *current = Some(Arc::new(objects));
        true
    });
    // The first snapshot is always new (the channel held None), so this is
    // where the source counts as synced.
    stats.synced.store(true, Ordering::Relaxed);
    if published {
        stats.publishes.fetch_add(1, Ordering::Relaxed);
    }
    stats.changed.notify_one();
    published
}
