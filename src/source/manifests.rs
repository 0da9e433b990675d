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

/// What a file-system event asks of the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    /// An entry of the directory was created, written, renamed or removed:
    /// read the directory again.
    Contents,
    /// The directory itself (or its parent) was created, removed or
    /// renamed, or the kernel dropped events: watch it afresh, then read.
    Directory,
}

/// The paths the source watches: the directory, for its entries, and its
/// parent, for the directory itself coming and going. A watch on a
/// directory dies with it; only the parent sees it come back.
#[derive(Debug, Clone)]
struct WatchTargets {
    dir: PathBuf,
    /// None for `/`, or a path ending in `..`, whose entry in a parent
    /// cannot be named: such a directory is re-watched by the periodic
    /// full read alone.
    parent: Option<PathBuf>,
}

impl WatchTargets {
    fn of(dir: &Path) -> WatchTargets {
        let parent = match (dir.parent(), dir.file_name()) {
            (Some(parent), Some(_)) => Some(parent.to_path_buf()),
            _ => None,
        };
        WatchTargets {
            dir: dir.to_path_buf(),
            parent,
        }
    }

    /// What `event` asks for, or None when it cannot change what the
    /// directory holds.
    ///
    /// inotify also reports opens, reads, closes after reading and
    /// attribute changes (chmod, touch, atime). None of them changes a
    /// manifest, and the source's own reads are such events: reacting to
    /// them made every read of the directory trigger the next one. Writes
    /// count when they happen and again at close, renames on both names.
    fn wake(&self, event: &Event) -> Option<Wake> {
        if event.need_rescan() {
            return Some(Wake::Directory);
        }
        let alters = match event.kind {
            EventKind::Create(_) | EventKind::Remove(_) => true,
            EventKind::Modify(ModifyKind::Metadata(_)) => false,
            EventKind::Modify(_) => true,
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
            EventKind::Access(_) => false,
            EventKind::Any | EventKind::Other => true,
        };
        if !alters {
            return None;
        }
        if event.paths.is_empty() {
            return Some(Wake::Directory);
        }
        let mut wake = None;
        for path in &event.paths {
            if *path == self.dir || Some(path) == self.parent.as_ref() {
                return Some(Wake::Directory);
            }
            // Other entries of the parent are not ours.
            if path.parent() == Some(self.dir.as_path()) {
                wake = Some(Wake::Contents);
            }
        }
        wake
    }
}

/// The identity of a directory: a watch is on an inode, not a name, so a
/// directory replaced under the same name needs a new one.
type DirId = (u64, u64);

fn dir_id(path: &Path) -> Option<DirId> {
    std::fs::metadata(path)
        .ok()
        .filter(std::fs::Metadata::is_dir)
        .map(|m| (m.dev(), m.ino()))
}

/// One watched path and what is known of its watch.
#[derive(Debug)]
struct Watched {
    path: PathBuf,
    /// The directory the watch is on; None while there is none.
    on: Option<DirId>,
    /// Adding the watch failed and was reported; reported again only after
    /// it has worked once.
    failing: bool,
}

/// The watcher and its watches.
struct Watches {
    watcher: RecommendedWatcher,
    dir: Watched,
    parent: Option<Watched>,
}

impl Watches {
    fn new(watcher: RecommendedWatcher, targets: WatchTargets) -> Watches {
        let watched = |path| Watched {
            path,
            on: None,
            failing: false,
        };
        Watches {
            watcher,
            dir: watched(targets.dir),
            parent: targets.parent.map(watched),
        }
    }

    /// The first watches. The directory's must work; without the parent's
    /// the source still runs, and a replaced directory is watched again at
    /// the next full read.
    fn start(&mut self) -> notify::Result<()> {
        rewatch(&mut self.watcher, &mut self.dir, true)?;
        if let Some(parent) = &mut self.parent {
            if let Err(error) = rewatch(&mut self.watcher, parent, true) {
                parent.failing = true;
                warn!(
                    parent = %parent.path.display(),
                    %error,
                    "cannot watch the parent of the manifests directory; if the directory \
                     is removed and re-created, changes apply at the next full read"
                );
            }
        }
        Ok(())
    }

    /// Whether the directory has a watch.
    fn dir_watched(&self) -> bool {
        self.dir.on.is_some()
    }

    /// Puts the watches on the directories that carry the names now.
    /// `force` replaces them even where they look in place: after an event
    /// on the directory itself, notify may have dropped a watch of the same
    /// inode, or the inode number may have been reused. Returns whether the
    /// directory got a new watch: what was written before it needs a read.
    fn refresh(&mut self, force: bool, stats: &SourceStats) -> bool {
        if let Some(parent) = &mut self.parent {
            refresh_one(&mut self.watcher, parent, force, stats);
        }
        refresh_one(&mut self.watcher, &mut self.dir, force, stats)
    }
}

/// [`rewatch`], with what it did logged: a watch back, once; a failure,
/// once until it works again.
fn refresh_one(
    watcher: &mut RecommendedWatcher,
    watched: &mut Watched,
    force: bool,
    stats: &SourceStats,
) -> bool {
    let was = watched.on;
    match rewatch(watcher, watched, force) {
        Ok(false) => false,
        Ok(true) => {
            let path = watched.path.display();
            if was.is_none() || watched.failing {
                info!(path = %path, "watching again");
            } else if was != watched.on {
                info!(path = %path, "directory replaced; watching the new one");
            } else {
                debug!(path = %path, "watch renewed");
            }
            watched.failing = false;
            true
        }
        Err(error) => {
            if !watched.failing {
                watched.failing = true;
                stats.add_error();
                warn!(
                    path = %watched.path.display(),
                    %error,
                    "cannot watch; changes apply at the next full read until this works"
                );
            } else {
                debug!(path = %watched.path.display(), %error, "still cannot watch");
            }
            false
        }
    }
}

/// Watches `watched.path` afresh if it names another directory than the
/// one watched (or `force`). Returns whether a new watch was added. A path
/// that names no directory just loses its watch: not an error, its parent's
/// watch or the next full read sees it come back.
fn rewatch(
    watcher: &mut RecommendedWatcher,
    watched: &mut Watched,
    force: bool,
) -> notify::Result<bool> {
    // Stat first, then watch: a swap in between leaves the recorded
    // identity older than the watch, and the next check watches again.
    let now = dir_id(&watched.path);
    if now.is_some() && now == watched.on && !force {
        return Ok(false);
    }
    if watched.on.take().is_some() || force {
        // notify may already have dropped it (the directory was deleted
        // or renamed away); then this fails, which is fine.
        let _ = watcher.unwatch(&watched.path);
    }
    let Some(now) = now else {
        return Ok(false);
    };
    watcher.watch(&watched.path, RecursiveMode::NonRecursive)?;
    watched.on = Some(now);
    Ok(true)
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
#[derive(Default)]
struct DirState {
    files: BTreeMap<PathBuf, FileState>,
    /// The identities the files' endpoints share.
    identities: Identities,
    dir_error: Option<ManifestError>,
    /// The directory has been listed at least once.
    listed_once: bool,
}

#[derive(Default)]
struct FileState {
    /// Length and hash of the content at the last successful read, to skip
    /// parsing an unchanged file without keeping its text.
    content: Option<(usize, u64)>,
    /// Objects of the last read that parsed.
    good: Option<FileObjects>,
    /// Why the current content is not applied.
    error: Option<ManifestError>,
}

/// The objects of one file, in document order, reduced to what resolution
/// reads.
#[derive(Debug, Default, Clone)]
struct FileObjects {
    policies: Vec<Arc<CiliumEgressGatewayPolicy>>,
    nodes: Vec<Arc<objects::Node>>,
    endpoints: Vec<Arc<objects::Endpoint>>,
}

/// The result of one read of the directory.
struct Scan {
    objects: Objects,
    errors: Vec<ManifestError>,
    duplicates: Vec<Duplicate>,
}

/// One object defined by more than one file.
struct Duplicate {
    kind: ObjectKind,
    namespace: String,
    name: String,
    /// The file whose definition is used (the last by name).
    winner: PathBuf,
    /// The files whose definitions are ignored.
    losers: Vec<PathBuf>,
}

impl Duplicate {
    fn id(&self) -> String {
        format!(
            "{}/{}/{} {:?} {:?}",
            self.kind, self.namespace, self.name, self.winner, self.losers
        )
    }

    fn log(&self) {
        let ignored: Vec<String> = self
            .losers
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        let object = if self.namespace.is_empty() {
            self.name.clone()
        } else {
            format!("{}/{}", self.namespace, self.name)
        };
        warn!(
            kind = self.kind.kind_name(),
            %object,
            used = %self.winner.display(),
            ignored = ?ignored,
            "object defined in several manifest files; the last file by name wins"
        );
    }
}

impl DirState {
    /// Whether `file` has objects from an earlier good read in force.
    fn has_good(&self, file: &Path) -> bool {
        self.files.get(file).is_some_and(|f| f.good.is_some())
    }

    /// Reads the directory, re-parsing the files whose content changed.
    fn rescan(&mut self, dir: &Path) -> Scan {
        match list_manifests(dir) {
            Ok(paths) => {
                self.dir_error = None;
                self.listed_once = true;
                // A file removed, even between listing and reading, takes
                // its objects with it.
                self.files.retain(|path, _| paths.contains(path));
                for path in paths {
                    let state = self.files.entry(path.clone()).or_default();
                    if !state.refresh(&path, &mut self.identities) {
                        self.files.remove(&path);
                    }
                }
            }
            // Keep every file's objects: a directory that cannot be listed
            // for a moment (a volume being remounted) must not withdraw
            // policies.
            Err(err) => {
                self.dir_error = Some(ManifestError::new(
                    dir,
                    None,
                    format!("cannot list directory: {err}"),
                ))
            }
        }

        let mut errors: Vec<ManifestError> = self.dir_error.iter().cloned().collect();
        errors.extend(self.files.values().filter_map(|f| f.error.clone()));
        let (objects, duplicates) = self.merge();
        self.identities.prune();
        Scan {
            objects,
            errors,
            duplicates,
        }
    }

    /// Merges the good objects of every file, later file names overriding
    /// earlier ones.
    fn merge(&self) -> (Objects, Vec<Duplicate>) {
        let mut duplicates = Vec::new();
        let good = || {
            self.files
                .iter()
                .filter_map(|(path, f)| f.good.as_ref().map(|g| (path.as_path(), g)))
        };
        let policies = merge_kind(
            ObjectKind::Policy,
            good().map(|(p, g)| (p, &g.policies)),
            objects::policy_key,
            &mut duplicates,
        );
        let nodes = merge_kind(
            ObjectKind::Node,
            good().map(|(p, g)| (p, &g.nodes)),
            objects::node_key,
            &mut duplicates,
        );
        let endpoints = merge_kind(
            ObjectKind::Endpoint,
            good().map(|(p, g)| (p, &g.endpoints)),
            objects::endpoint_key,
            &mut duplicates,
        );
        (
            Objects {
                policies,
                nodes,
                endpoints,
            },
            duplicates,
        )
    }
}

fn merge_kind<'a, T: 'a>(
    kind: ObjectKind,
    files: impl Iterator<Item = (&'a Path, &'a Vec<Arc<T>>)>,
    key: impl Fn(&'a T) -> (&'a str, &'a str),
    duplicates: &mut Vec<Duplicate>,
) -> Vec<Arc<T>> {
    // key → (defining files in name order, winning object)
    type Defined<'a, T> = (Vec<&'a Path>, &'a Arc<T>);
    let mut merged: BTreeMap<(&str, &str), Defined<T>> = BTreeMap::new();
    for (path, objects) in files {
        for obj in objects {
            let entry = merged.entry(key(obj)).or_insert_with(|| (Vec::new(), obj));
            if entry.0.last() != Some(&path) {
                entry.0.push(path);
            }
            entry.1 = obj;
        }
    }
    let mut out = Vec::with_capacity(merged.len());
    for ((namespace, name), (paths, obj)) in merged {
        if let Some((winner, losers)) = paths.split_last() {
            if !losers.is_empty() {
                duplicates.push(Duplicate {
                    kind,
                    namespace: namespace.to_string(),
                    name: name.to_string(),
                    winner: winner.to_path_buf(),
                    losers: losers.iter().map(|p| p.to_path_buf()).collect(),
                });
            }
        }
        out.push(obj.clone());
    }
    // Already in (namespace, name) order: `merged` is.
    out
}

impl FileState {
    /// Reads the file again and, if its content changed, parses it.
    /// Returns false when the file is gone.
    fn refresh(&mut self, path: &Path, identities: &mut Identities) -> bool {
        let content = match std::fs::read_to_string(path) {
            Ok(content) => content,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return false,
            // Unreadable for now (permissions, not UTF-8): report it and keep
            // the last good objects, like a broken file.
            Err(err) => {
                self.error = Some(ManifestError::new(
                    path,
                    None,
                    format!("cannot read: {err}"),
                ));
                // Forget the content so the file is parsed once readable.
                self.content = None;
                return true;
            }
        };
        // Unchanged content: its objects, or its error, stand as they are.
        let seen = (content.len(), content_hash(&content));
        if self.content == Some(seen) {
            return true;
        }
        match parse_manifest(path, &content, identities) {
            Ok(objects) => {
                self.good = Some(objects);
                self.error = None;
            }
            Err(err) => self.error = Some(err),
        }
        self.content = Some(seen);
        true
    }
}

/// A hash of a file's content, the same in every run (SipHash with fixed
/// keys): with the length, what tells a changed file from an unchanged one.
fn content_hash(content: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    #[allow(deprecated)] // SipHasher's fixed keys are the point here.
    let mut hasher = std::hash::SipHasher::new();
    content.hash(&mut hasher);
    hasher.finish()
}

/// The manifest files directly in `dir`, sorted by name.
fn list_manifests(dir: &Path) -> io::Result<BTreeSet<PathBuf>> {
    let mut paths = BTreeSet::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        if name.starts_with('.') || !(name.ends_with(".yaml") || name.ends_with(".yml")) {
            continue;
        }
        let path = entry.path();
        // Follow symlinks: ConfigMap volumes expose files as links into a
        // hidden, atomically swapped directory.
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() => {
                paths.insert(path);
            }
            // A directory named *.yaml, or a dangling link.
            _ => {}
        }
    }
    Ok(paths)
}

/// How a document announces itself.
enum Header {
    /// An empty document (a trailing `---`, a file of comments).
    Empty,
    /// One of ours.
    Cilium(ObjectKind),
    /// Some other object, not ours to read.
    Other { api_version: String, kind: String },
}

/// Parses one file. All or nothing: the first problem fails the file.
fn parse_manifest(
    path: &Path,
    text: &str,
    identities: &mut Identities,
) -> Result<FileObjects, ManifestError> {
    // First pass: YAML syntax and each document's apiVersion/kind. The
    // documents are parsed again below straight into their types, so that
    // a wrong field reports its own line and column.
    let mut headers = Vec::new();
    for (i, document) in serde_norway::Deserializer::from_str(text).enumerate() {
        let number = i + 1;
        let value = serde_norway::Value::deserialize(document)
            .map_err(|err| ManifestError::yaml(path, number, &err))?;
        headers.push(header(path, number, &value)?);
    }

    let mut objects = FileObjects::default();
    let documents = serde_norway::Deserializer::from_str(text);
    for (i, (document, header)) in documents.zip(headers).enumerate() {
        let number = i + 1;
        match header {
            Header::Empty => {}
            Header::Other { api_version, kind } => {
                debug!(
                    file = %path.display(),
                    document = number,
                    api_version = %api_version,
                    kind = %kind,
                    "manifest document of another kind skipped"
                );
            }
            Header::Cilium(ObjectKind::Policy) => {
                let policy: CiliumEgressGatewayPolicy = parse_object(path, number, document)?;
                objects.policies.push(Arc::new(objects::policy(&policy)));
            }
            Header::Cilium(ObjectKind::Node) => {
                let node: CiliumNode = parse_object(path, number, document)?;
                objects.nodes.push(Arc::new(objects::Node::new(&node)));
            }
            Header::Cilium(ObjectKind::Endpoint) => {
                let mut endpoint: CiliumEndpoint = parse_object(path, number, document)?;
                endpoint
                    .metadata
                    .namespace
                    .get_or_insert_with(|| DEFAULT_NAMESPACE.to_string());
                objects
                    .endpoints
                    .push(Arc::new(objects::Endpoint::new(&endpoint, identities)));
            }
        }
    }
    Ok(objects)
}

fn parse_object<K: Resource + DeserializeOwned>(
    path: &Path,
    number: usize,
    document: serde_norway::Deserializer<'_>,
) -> Result<K, ManifestError> {
    let obj = K::deserialize(document).map_err(|err| ManifestError::yaml(path, number, &err))?;
    if obj.meta().name.as_deref().unwrap_or_default().is_empty() {
        return Err(ManifestError::new(
            path,
            Some(number),
            "object has no metadata.name",
        ));
    }
    Ok(obj)
}

fn header(
    path: &Path,
    number: usize,
    value: &serde_norway::Value,
) -> Result<Header, ManifestError> {
    let mapping = match value {
        serde_norway::Value::Null => return Ok(Header::Empty),
        serde_norway::Value::Mapping(mapping) => mapping,
        _ => {
            return Err(ManifestError::new(
                path,
                Some(number),
                "document is not a mapping",
            ))
        }
    };
    let field = |name: &str| mapping.get(name).and_then(serde_norway::Value::as_str);
    let Some(kind) = field("kind") else {
        return Err(ManifestError::new(
            path,
            Some(number),
            "document has no kind",
        ));
    };
    let Some(api_version) = field("apiVersion") else {
        return Err(ManifestError::new(
            path,
            Some(number),
            format!("{kind} document has no apiVersion"),
        ));
    };
    if api_version == API_VERSION {
        for cilium in ObjectKind::ALL {
            if kind == cilium.kind_name() {
                return Ok(Header::Cilium(cilium));
            }
        }
    }
    Ok(Header::Other {
        api_version: api_version.to_string(),
        kind: kind.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<FileObjects, ManifestError> {
        parse_manifest(Path::new("m.yaml"), text, &mut Identities::default())
    }

    #[test]
    fn empty_documents_and_comments_hold_nothing() {
        for text in ["", "# nothing yet\n", "---\n---\n"] {
            let objects = parse(text).unwrap();
            assert!(objects.policies.is_empty() && objects.nodes.is_empty());
        }
    }

    #[test]
    fn cilium_kind_of_another_api_version_is_not_ours() {
        let ours = "apiVersion: cilium.io/v2\nkind: CiliumNode\nmetadata: {name: a}\n";
        // The control: the same object in cilium.io/v2 is read.
        assert_eq!(parse(ours).unwrap().nodes.len(), 1);
        let other = ours.replace("cilium.io/v2", "cilium.io/v2alpha1");
        assert_ne!(other, ours);
        let objects = parse(&other).unwrap();
        assert!(objects.nodes.is_empty());
    }

    #[test]
    fn malformed_documents_are_reported() {
        let cases = [
            ("- a\n- b\n", "not a mapping"),
            ("kind: CiliumNode\nmetadata: {name: a}\n", "no apiVersion"),
            (
                "apiVersion: cilium.io/v2\nkind: CiliumNode\n",
                "no metadata.name",
            ),
            ("apiVersion: v1\nkind: Pod\n---\nmetadata: {}\n", "no kind"),
        ];
        for (text, expected) in cases {
            let err = parse(text).unwrap_err();
            assert!(err.message.contains(expected), "{text:?}: {err}");
        }
        assert_eq!(
            parse("apiVersion: v1\nkind: Pod\n---\nmetadata: {}\n")
                .unwrap_err()
                .document,
            Some(2)
        );
    }

    fn event(kind: EventKind, path: &Path) -> Event {
        Event::new(kind).add_path(path.to_path_buf())
    }

    #[test]
    fn only_content_changes_wake_the_source() {
        use notify::event::{CreateKind, DataChange, MetadataKind, RemoveKind, RenameMode};
        let targets = WatchTargets::of(Path::new("/srv/manifests"));
        let file = Path::new("/srv/manifests/policies.yaml");
        let quiet = [
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            EventKind::Access(AccessKind::Read),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any)),
            EventKind::Modify(ModifyKind::Metadata(MetadataKind::Permissions)),
        ];
        for kind in quiet {
            assert_eq!(targets.wake(&event(kind, file)), None, "{kind:?}");
            // The directory opened for listing, seen from the parent.
            assert_eq!(
                targets.wake(&event(kind, &targets.dir)),
                None,
                "{kind:?} of the directory"
            );
        }
        let content = [
            EventKind::Create(CreateKind::File),
            EventKind::Remove(RemoveKind::File),
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            EventKind::Modify(ModifyKind::Name(RenameMode::From)),
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
        ];
        for kind in content {
            assert_eq!(
                targets.wake(&event(kind, file)),
                Some(Wake::Contents),
                "{kind:?}"
            );
            // The same event on a sibling of the directory is not ours.
            assert_eq!(
                targets.wake(&event(kind, Path::new("/srv/other.yaml"))),
                None,
                "{kind:?} of a sibling"
            );
        }
        for kind in [
            EventKind::Create(CreateKind::Folder),
            EventKind::Remove(RemoveKind::Folder),
            EventKind::Modify(ModifyKind::Name(RenameMode::From)),
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
        ] {
            assert_eq!(
                targets.wake(&event(kind, &targets.dir)),
                Some(Wake::Directory),
                "{kind:?} of the directory"
            );
            assert_eq!(
                targets.wake(&event(kind, Path::new("/srv"))),
                Some(Wake::Directory),
                "{kind:?} of the parent"
            );
        }
        // Lost events: everything may have changed.
        let overflow = Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan);
        assert_eq!(targets.wake(&overflow), Some(Wake::Directory));
    }

    #[test]
    fn watch_targets_name_the_parent_when_they_can() {
        assert_eq!(
            WatchTargets::of(Path::new("/srv/manifests/")).parent,
            Some(PathBuf::from("/srv"))
        );
        assert_eq!(WatchTargets::of(Path::new("/")).parent, None);
        assert_eq!(WatchTargets::of(Path::new("/srv/a/..")).parent, None);
    }

    /// A log sink for one test.
    #[derive(Clone, Default)]
    struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

    impl io::Write for Logs {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Logs {
        fn take(&self) -> String {
            String::from_utf8(std::mem::take(&mut *self.0.lock().unwrap())).unwrap()
        }
    }

    #[test]
    fn missing_directory_is_logged_as_keeping_its_objects() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("manifests");
        let node = "apiVersion: cilium.io/v2\nkind: CiliumNode\nmetadata: {name: a}\n";
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("nodes.yaml"), node).unwrap();

        let logs = Logs::default();
        let sink = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .finish();
        let _default = tracing::subscriber::set_default(subscriber);
        let (tx, rx) = tokio::sync::watch::channel::<Option<Arc<Objects>>>(None);
        let stats = SourceStats::default();
        let mut source = ManifestSource::default();
        let nodes = || rx.borrow().as_ref().map(|o| o.nodes.len());

        source.rescan(&dir, &tx, &stats);
        assert_eq!(nodes(), Some(1));
        assert!(logs.take().is_empty());

        std::fs::remove_dir_all(&dir).unwrap();
        source.rescan(&dir, &tx, &stats);
        assert_eq!(nodes(), Some(1), "the objects stay");
        let text = logs.take();
        assert!(text.contains("stay in force"), "{text}");
        assert!(text.contains("kept_nodes=1"), "{text}");
        assert!(!text.contains("kept_last_good"), "{text}");
        assert_eq!(stats.errors(), 1);

        // Logged once, not on every read while it lasts.
        source.rescan(&dir, &tx, &stats);
        assert!(logs.take().is_empty());

        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("nodes.yaml"), node).unwrap();
        source.rescan(&dir, &tx, &stats);
        let text = logs.take();
        assert!(text.contains("can be read again"), "{text}");
        assert!(!text.contains("problem resolved"), "{text}");
        assert_eq!(stats.errors(), 1);
        assert_eq!(stats.scans(), 4);
    }

    #[test]
    fn error_display_names_file_line_and_column() {
        let err = parse("a: [b\n").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("m.yaml:2:1 (document 1): "), "{text}");
    }
}
