//! The `manifests DIR` source: Cilium objects from YAML files.
//!
//! Every `*.yaml` / `*.yml` file directly in the directory is read (hidden
//! files and subdirectories are not; symlinks are followed, so a ConfigMap
//! volume with its `..data` indirection works). A file may hold several
//! documents separated by `---`; each is dispatched on `apiVersion` + `kind`.
//! Documents of other kinds (a Namespace, a Pod) are skipped.
//!
//! A file is the unit of change: it applies as a whole or not at all. When a
//! file cannot be used (YAML syntax, a field of the wrong type, a document
//! without `kind`), the error names the file and the parser's line and
//! column, and the objects it held at its last good read stay in force, the
//! way a failed `kubectl apply` leaves the cluster as it was. A half-saved
//! file therefore never withdraws policies. A file that disappears takes its
//! objects with it. When two files define the same object, the file whose
//! name sorts last wins, with a warning.
//!
//! The directory is read when inotify reports a change to what it holds (an
//! entry created, written, renamed or removed), [`SETTLE`](super::SETTLE) after the first
//! such event but at most once per [`DEBOUNCE`](super::DEBOUNCE), and every 30 s in any
//! case. Opens, reads and attribute
//! changes are not changes: an idle directory is never read, however often
//! it is read by others (or by the source itself). The parent directory is
//! watched too, so a directory removed and re-created, or replaced by a
//! rename, is watched again at once; while it is missing, the objects of
//! its last read stay in force.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kube::Resource;
use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify::{Event, RecommendedWatcher, RecursiveMode, Watcher};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{
    blocking, due_after, publish, stopped, ObjectKind, Shutdown, SnapshotSender, SourceError,
    SourceKind, SourceStats,
};
use crate::crd::{CiliumEgressGatewayPolicy, CiliumEndpoint, CiliumNode, API_VERSION};
use crate::objects::{self, Identities, Objects};

/// Full re-read of the directory even without a file event: inotify can
/// lose events (queue overflow, the directory itself replaced), and a read
/// of unchanged files costs a few syscalls and no logs.
const RESYNC: Duration = Duration::from_secs(30);

/// How often a missing manifests directory is looked for, besides the
/// events of its parent.
const REWATCH: Duration = Duration::from_millis(500);

/// Namespace given to a `CiliumEndpoint` written without one, as
/// `kubectl apply` would.
const DEFAULT_NAMESPACE: &str = "default";

/// A manifest that could not be used, with where the parser stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    /// The file (or the directory, when it could not be listed).
    pub file: PathBuf,
    /// 1-based index of the document within the file, when known.
    pub document: Option<usize>,
    /// 1-based line of the problem, when the parser knows it.
    pub line: Option<usize>,
    /// 1-based column of the problem, when the parser knows it.
    pub column: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl ManifestError {
    fn new(file: &Path, document: Option<usize>, message: impl Into<String>) -> ManifestError {
        ManifestError {
            file: file.to_path_buf(),
            document,
            line: None,
            column: None,
            message: message.into(),
        }
    }

    fn yaml(file: &Path, document: usize, err: &serde_norway::Error) -> ManifestError {
        let location = err.location();
        ManifestError {
            file: file.to_path_buf(),
            document: Some(document),
            line: location.as_ref().map(|l| l.line()),
            column: location.as_ref().map(|l| l.column()),
            message: err.to_string(),
        }
    }
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        if let Some(document) = self.document {
            write!(f, " (document {document})")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ManifestError {}

/// Reads every manifest in `dir` once.
///
/// Returns the objects of the files that parse, merged as the running
/// source merges them, and one error per file that does not (or one for the
/// directory when it cannot be listed). A broken file contributes nothing
/// here: there is no earlier good read to fall back on.
pub fn load_dir(dir: &Path) -> (Objects, Vec<ManifestError>) {
    let mut state = DirState::default();
    let scan = state.rescan(dir);
    for dup in &scan.duplicates {
        dup.log();
    }
    (scan.objects, scan.errors)
}

/// Runs the manifests source on `dir` until `shutdown` fires.
pub(super) async fn run(
    dir: PathBuf,
    tx: SnapshotSender,
    stats: Arc<SourceStats>,
    mut shutdown: Shutdown,
) -> Result<(), SourceError> {
    let meta = std::fs::metadata(&dir).map_err(|source| SourceError::ManifestDir {
        dir: dir.clone(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(SourceError::NotADirectory { dir });
    }
    // Event paths are the watched path joined with an entry's name; an
    // absolute path (symlinks left as they are) makes them comparable with
    // the directory's whatever the working directory.
    let dir = std::path::absolute(&dir).map_err(|source| SourceError::ManifestDir {
        dir: dir.clone(),
        source,
    })?;

    // notify calls back on its own thread; an unbounded channel is the one
    // tokio channel with a synchronous send. Only events that can change
    // what the directory holds are sent, so it stays short.
    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel::<notify::Result<Wake>>();
    let targets = WatchTargets::of(&dir);
    let filter = targets.clone();
    let watcher = notify::recommended_watcher(move |event: notify::Result<Event>| {
        let wake = match event {
            Ok(event) => match filter.wake(&event) {
                Some(wake) => Ok(wake),
                None => return,
            },
            Err(error) => Err(error),
        };
        let _ = events_tx.send(wake);
    })
    .map_err(|source| SourceError::Watch {
        dir: dir.clone(),
        source,
    })?;
    // The watches start before the first read, so no change falls in
    // between.
    let mut watches = Watches::new(watcher, targets);
    watches.start().map_err(|source| SourceError::Watch {
        dir: dir.clone(),
        source,
    })?;
    info!(dir = %dir.display(), "watching manifests directory");

    let mut source = ManifestSource::default();
    blocking(|| source.rescan(&dir, &tx, &stats));

    let mut resync = tokio::time::interval_at(Instant::now() + RESYNC, RESYNC);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // When to read the directory for the changes seen so far; None when
    // nothing is pending. Not pushed back by later events, so a file
    // rewritten without pause cannot hold a change back.
    let mut due: Option<Instant> = None;
    // When the directory was last read.
    let mut last_read: Option<Instant> = None;
    loop {
        tokio::select! {
            () = stopped(&mut shutdown) => {
                debug!(dir = %dir.display(), "manifests source stopping");
                return Ok(());
            }
            wake = events.recv() => {
                let Some(wake) = wake else {
                    return Err(SourceError::WatcherStopped { dir });
                };
                let pending = std::iter::from_fn(|| events.try_recv().ok());
                let mut directory = false;
                for wake in std::iter::once(wake).chain(pending) {
                    match wake {
                        Ok(Wake::Contents) => {}
                        Ok(Wake::Directory) => directory = true,
                        Err(error) => {
                            stats.add_error();
                            warn!(dir = %dir.display(), %error, "file watcher error; re-reading the directory");
                        }
                    }
                }
                // Re-watch at once, not when the debounce ends: what is
                // written into a re-created directory before its new watch
                // is in place is caught by the read that follows.
                if directory {
                    blocking(|| watches.refresh(true, &stats));
                }
                due.get_or_insert_with(|| due_after(last_read));
                continue;
            }
            // The directory is missing (or cannot be watched): look for it
            // again now and then, in case its parent's watch cannot see it
            // come back (the parent went too, or cannot be watched). Only
            // while it is missing.
            () = tokio::time::sleep(REWATCH), if !watches.dir_watched() => {
                if blocking(|| watches.refresh(false, &stats)) {
                    due.get_or_insert_with(|| due_after(last_read));
                }
                continue;
            }
            () = sleep_until(due), if due.is_some() => due = None,
            _ = resync.tick() => {}
        }
        // Whatever changed, read the whole directory again: a rename shows up
        // as events on two names, a ConfigMap update only on hidden entries.
        // The reads and the parsing are blocking work (thousands of objects
        // on a large cluster): off the async workers. The watches are
        // checked first, so a directory replaced without an event (or whose
        // events were lost) is watched again from here on.
        last_read = Some(Instant::now());
        blocking(|| {
            watches.refresh(false, &stats);
            source.rescan(&dir, &tx, &stats);
        });
    }
}

async fn sleep_until(due: Option<Instant>) {
    if let Some(due) = due {
        tokio::time::sleep_until(due).await;
    }
}

/// The running source: directory state plus what it has already reported,
/// so each problem is logged and counted once, when it appears.
#[derive(Default)]
struct ManifestSource {
    dir: DirState,
    current: Objects,
    reported_errors: BTreeSet<String>,
    /// The directory's own problem among `reported_errors`, if any.
    reported_dir_error: Option<String>,
    reported_duplicates: BTreeSet<String>,
}

impl ManifestSource {
    fn rescan(&mut self, dir: &Path, tx: &SnapshotSender, stats: &SourceStats) {
        stats.add_scan();
        let scan = self.dir.rescan(dir);

        let errors: BTreeSet<String> = scan.errors.iter().map(ToString::to_string).collect();
        let dir_error = self.dir.dir_error.as_ref().map(ToString::to_string);
        for error in &scan.errors {
            let text = error.to_string();
            if self.reported_errors.contains(&text) {
                continue;
            }
            stats.add_error();
            if dir_error.as_ref() == Some(&text) {
                // Nothing of a file is at stake: every file keeps what it
                // had, so say what stays in force.
                if self.dir.listed_once {
                    warn!(
                        dir = %dir.display(),
                        error = %error.message,
                        kept_policies = scan.objects.policies.len(),
                        kept_nodes = scan.objects.nodes.len(),
                        kept_endpoints = scan.objects.endpoints.len(),
                        "manifests directory cannot be read; the objects of its last read stay in force until it can"
                    );
                } else {
                    warn!(
                        dir = %dir.display(),
                        error = %error.message,
                        "manifests directory cannot be read; nothing is published until it can"
                    );
                }
                continue;
            }
            warn!(
                file = %error.file.display(),
                document = error.document,
                line = error.line,
                column = error.column,
                error = %error.message,
                kept_last_good = self.dir.has_good(&error.file),
                "manifest not applied"
            );
        }
        for gone in self.reported_errors.difference(&errors) {
            if self.reported_dir_error.as_ref() == Some(gone) {
                // Another problem of the directory was reported above.
                if dir_error.is_none() {
                    info!(dir = %dir.display(), "manifests directory can be read again");
                }
            } else {
                info!(problem = %gone, "manifest problem resolved");
            }
        }
        self.reported_errors = errors;
        self.reported_dir_error = dir_error;
        stats.set_manifest_errors(scan.errors);

        let duplicates: BTreeSet<String> = scan.duplicates.iter().map(Duplicate::id).collect();
        for dup in &scan.duplicates {
            if !self.reported_duplicates.contains(&dup.id()) {
                dup.log();
            }
        }
        self.reported_duplicates = duplicates;

        // Until the directory has been listed once, an empty view is not
        // "no objects": publishing it would withdraw every policy.
        if self.dir.dir_error.is_some() && !self.dir.listed_once {
            return;
        }
        count_changes(stats, &self.current, &scan.objects);
        if publish(tx, stats, scan.objects.clone()) {
            debug!(
                policies = scan.objects.policies.len(),
                nodes = scan.objects.nodes.len(),
                endpoints = scan.objects.endpoints.len(),
                "manifests snapshot published"
            );
        }
        self.current = scan.objects;
    }
}

/// Adds to the event counters the objects added, changed or removed between
/// two snapshots.
fn count_changes(stats: &SourceStats, old: &Objects, new: &Objects) {
    fn changed<T: PartialEq>(
        old: &[Arc<T>],
        new: &[Arc<T>],
        key: impl Fn(&T) -> (&str, &str),
    ) -> u64 {
        let old: BTreeMap<_, _> = old.iter().map(|o| (key(o), o)).collect();
        let new: BTreeMap<_, _> = new.iter().map(|o| (key(o), o)).collect();
        let added_or_changed = new
            .iter()
            .filter(|(key, obj)| old.get(*key) != Some(*obj))
            .count();
        let removed = old.keys().filter(|key| !new.contains_key(*key)).count();
        (added_or_changed + removed) as u64
    }
    let m = SourceKind::Manifests;
    stats.add_events(
        m,
        ObjectKind::Policy,
        changed(&old.policies, &new.policies, objects::policy_key),
    );
    stats.add_events(
        m,
        ObjectKind::Node,
        changed(&old.nodes, &new.nodes, objects::node_key),
    );
    stats.add_events(
        m,
        ObjectKind::Endpoint,
        changed(&old.endpoints, &new.endpoints, objects::endpoint_key),
    );
}

/// What is known about the directory: per file, its last content read and
/// its last good objects.
mod dir;
#[cfg(test)]
mod tests;
mod watch;

use dir::*;
use watch::*;
