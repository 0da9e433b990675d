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

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kube::Resource;
use notify_debouncer_mini::notify::RecursiveMode;
use notify_debouncer_mini::{new_debouncer, DebounceEventResult};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tracing::{debug, info, warn};

use super::{
    object_key, publish, sort_objects, stopped, ObjectKind, Shutdown, SnapshotSender, SourceError,
    SourceKind, SourceStats, DEBOUNCE,
};
use crate::crd::{CiliumEgressGatewayPolicy, CiliumEndpoint, CiliumNode, Objects, API_VERSION};

/// Full re-read of the directory even without a file event: inotify can
/// lose events (queue overflow, the directory itself replaced), and a read
/// of unchanged files costs a few syscalls and no logs.
const RESYNC: Duration = Duration::from_secs(30);

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

    // The debouncer calls back on its own thread; an unbounded channel is
    // the one tokio channel with a synchronous send. Batches are small and
    // the loop below drains them at once.
    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel::<DebounceEventResult>();
    let mut debouncer = new_debouncer(DEBOUNCE, move |batch: DebounceEventResult| {
        let _ = events_tx.send(batch);
    })
    .map_err(|source| SourceError::Watch {
        dir: dir.clone(),
        source,
    })?;
    // Watch the directory, not the files: editors and ConfigMap volumes
    // replace files by rename, which a watch on the file would miss. The
    // watch starts before the first read so no change falls in between.
    debouncer
        .watcher()
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|source| SourceError::Watch {
            dir: dir.clone(),
            source,
        })?;
    info!(dir = %dir.display(), "watching manifests directory");

    let mut source = ManifestSource::default();
    source.rescan(&dir, &tx, &stats);

    let mut resync = tokio::time::interval_at(tokio::time::Instant::now() + RESYNC, RESYNC);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stopped(&mut shutdown) => {
                debug!(dir = %dir.display(), "manifests source stopping");
                return Ok(());
            }
            batch = events.recv() => {
                let Some(batch) = batch else {
                    return Err(SourceError::WatcherStopped { dir });
                };
                // One read covers every batch already queued.
                let pending = std::iter::from_fn(|| events.try_recv().ok());
                for error in std::iter::once(batch).chain(pending).filter_map(Result::err) {
                    stats.add_error();
                    warn!(dir = %dir.display(), %error, "file watcher error; re-reading the directory");
                }
            }
            _ = resync.tick() => {}
        }
        // Whatever changed, read the whole directory again: a rename shows up
        // as events on two names, a ConfigMap update only on hidden entries.
        // The reads are synchronous: a manifests directory is a handful of
        // small files, and only this task waits on them.
        source.rescan(&dir, &tx, &stats);
    }
}

/// The running source: directory state plus what it has already reported,
/// so each problem is logged and counted once, when it appears.
#[derive(Default)]
struct ManifestSource {
    dir: DirState,
    current: Objects,
    reported_errors: BTreeSet<String>,
    reported_duplicates: BTreeSet<String>,
}

impl ManifestSource {
    fn rescan(&mut self, dir: &Path, tx: &SnapshotSender, stats: &SourceStats) {
        let scan = self.dir.rescan(dir);

        let errors: BTreeSet<String> = scan.errors.iter().map(ToString::to_string).collect();
        for error in &scan.errors {
            if !self.reported_errors.contains(&error.to_string()) {
                stats.add_error();
                let kept_last_good = self.dir.has_good(&error.file);
                warn!(
                    file = %error.file.display(),
                    document = error.document,
                    line = error.line,
                    column = error.column,
                    error = %error.message,
                    kept_last_good,
                    "manifest not applied"
                );
            }
        }
        for gone in self.reported_errors.difference(&errors) {
            info!(problem = %gone, "manifest problem resolved");
        }
        self.reported_errors = errors;
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
    fn changed<K: Resource + PartialEq>(old: &[K], new: &[K]) -> u64 {
        let old: BTreeMap<_, _> = old.iter().map(|o| (object_key(o), o)).collect();
        let new: BTreeMap<_, _> = new.iter().map(|o| (object_key(o), o)).collect();
        let added_or_changed = new
            .iter()
            .filter(|(key, obj)| old.get(*key) != Some(*obj))
            .count();
        let removed = old.keys().filter(|key| !new.contains_key(*key)).count();
        (added_or_changed + removed) as u64
    }
    let m = SourceKind::Manifests;
    stats.add_events(m, ObjectKind::Policy, changed(&old.policies, &new.policies));
    stats.add_events(m, ObjectKind::Node, changed(&old.nodes, &new.nodes));
    stats.add_events(
        m,
        ObjectKind::Endpoint,
        changed(&old.endpoints, &new.endpoints),
    );
}

/// What is known about the directory: per file, its last content read and
/// its last good objects.
#[derive(Default)]
struct DirState {
    files: BTreeMap<PathBuf, FileState>,
    dir_error: Option<ManifestError>,
    /// The directory has been listed at least once.
    listed_once: bool,
}

#[derive(Default)]
struct FileState {
    /// Content at the last successful read, to skip parsing an unchanged
    /// file.
    content: Option<String>,
    /// Objects of the last read that parsed.
    good: Option<FileObjects>,
    /// Why the current content is not applied.
    error: Option<ManifestError>,
}

/// The objects of one file, in document order.
#[derive(Debug, Default, Clone)]
struct FileObjects {
    policies: Vec<CiliumEgressGatewayPolicy>,
    nodes: Vec<CiliumNode>,
    endpoints: Vec<CiliumEndpoint>,
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
                    if !state.refresh(&path) {
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
            &mut duplicates,
        );
        let nodes = merge_kind(
            ObjectKind::Node,
            good().map(|(p, g)| (p, &g.nodes)),
            &mut duplicates,
        );
        let endpoints = merge_kind(
            ObjectKind::Endpoint,
            good().map(|(p, g)| (p, &g.endpoints)),
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

fn merge_kind<'a, K: Resource + Clone + 'a>(
    kind: ObjectKind,
    files: impl Iterator<Item = (&'a Path, &'a Vec<K>)>,
    duplicates: &mut Vec<Duplicate>,
) -> Vec<K> {
    // key → (defining files in name order, winning object)
    let mut merged: BTreeMap<(String, String), (Vec<&Path>, &K)> = BTreeMap::new();
    for (path, objects) in files {
        for obj in objects {
            let entry = merged
                .entry(object_key(obj))
                .or_insert_with(|| (Vec::new(), obj));
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
                    namespace,
                    name,
                    winner: winner.to_path_buf(),
                    losers: losers.iter().map(|p| p.to_path_buf()).collect(),
                });
            }
        }
        out.push(obj.clone());
    }
    sort_objects(&mut out);
    out
}

impl FileState {
    /// Reads the file again and, if its content changed, parses it.
    /// Returns false when the file is gone.
    fn refresh(&mut self, path: &Path) -> bool {
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
        if self.content.as_deref() == Some(content.as_str()) {
            return true;
        }
        match parse_manifest(path, &content) {
            Ok(objects) => {
                self.good = Some(objects);
                self.error = None;
            }
            Err(err) => self.error = Some(err),
        }
        self.content = Some(content);
        true
    }
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
fn parse_manifest(path: &Path, text: &str) -> Result<FileObjects, ManifestError> {
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
                objects.policies.push(parse_object(path, number, document)?);
            }
            Header::Cilium(ObjectKind::Node) => {
                objects.nodes.push(parse_object(path, number, document)?);
            }
            Header::Cilium(ObjectKind::Endpoint) => {
                let mut endpoint: CiliumEndpoint = parse_object(path, number, document)?;
                endpoint
                    .metadata
                    .namespace
                    .get_or_insert_with(|| DEFAULT_NAMESPACE.to_string());
                objects.endpoints.push(endpoint);
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
        parse_manifest(Path::new("m.yaml"), text)
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

    #[test]
    fn error_display_names_file_line_and_column() {
        let err = parse("a: [b\n").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("m.yaml:2:1 (document 1): "), "{text}");
    }
}
