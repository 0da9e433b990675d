//! What is known of the directory: per file, its last content read and its
//! last good objects; reading, parsing and merging them.

use super::*;

#[derive(Default)]
pub(super) struct DirState {
    pub(super) files: BTreeMap<PathBuf, FileState>,
    /// The identities the files' endpoints share.
    pub(super) identities: Identities,
    pub(super) dir_error: Option<ManifestError>,
    /// The directory has been listed at least once.
    pub(super) listed_once: bool,
}

#[derive(Default)]
pub(super) struct FileState {
    /// Length and hash of the content at the last successful read, to skip
    /// parsing an unchanged file without keeping its text.
    pub(super) content: Option<(usize, u64)>,
    /// Objects of the last read that parsed.
    pub(super) good: Option<FileObjects>,
    /// Why the current content is not applied.
    pub(super) error: Option<ManifestError>,
}

/// The objects of one file, in document order, reduced to what resolution
/// reads.
#[derive(Debug, Default, Clone)]
pub(super) struct FileObjects {
    pub(super) policies: Vec<Arc<CiliumEgressGatewayPolicy>>,
    pub(super) nodes: Vec<Arc<objects::Node>>,
    pub(super) endpoints: Vec<Arc<objects::Endpoint>>,
}

/// The result of one read of the directory.
pub(super) struct Scan {
    pub(super) objects: Objects,
    pub(super) errors: Vec<ManifestError>,
    pub(super) duplicates: Vec<Duplicate>,
}

/// One object defined by more than one file.
pub(super) struct Duplicate {
    pub(super) kind: ObjectKind,
    pub(super) namespace: String,
    pub(super) name: String,
    /// The file whose definition is used (the last by name).
    pub(super) winner: PathBuf,
    /// The files whose definitions are ignored.
    pub(super) losers: Vec<PathBuf>,
}

impl Duplicate {
    pub(super) fn id(&self) -> String {
        format!(
            "{}/{}/{} {:?} {:?}",
            self.kind, self.namespace, self.name, self.winner, self.losers
        )
    }

    pub(super) fn log(&self) {
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
    pub(super) fn has_good(&self, file: &Path) -> bool {
        self.files.get(file).is_some_and(|f| f.good.is_some())
    }

    /// Reads the directory, re-parsing the files whose content changed.
    pub(super) fn rescan(&mut self, dir: &Path) -> Scan {
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
    pub(super) fn merge(&self) -> (Objects, Vec<Duplicate>) {
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

pub(super) fn merge_kind<'a, T: 'a>(
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
    pub(super) fn refresh(&mut self, path: &Path, identities: &mut Identities) -> bool {
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
pub(super) fn content_hash(content: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    #[allow(deprecated)] // SipHasher's fixed keys are the point here.
    let mut hasher = std::hash::SipHasher::new();
    content.hash(&mut hasher);
    hasher.finish()
}

/// The manifest files directly in `dir`, sorted by name.
pub(super) fn list_manifests(dir: &Path) -> io::Result<BTreeSet<PathBuf>> {
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
pub(super) enum Header {
    /// An empty document (a trailing `---`, a file of comments).
    Empty,
    /// One of ours.
    Cilium(ObjectKind),
    /// Some other object, not ours to read.
    Other { api_version: String, kind: String },
}

/// Parses one file. All or nothing: the first problem fails the file.
pub(super) fn parse_manifest(
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

pub(super) fn parse_object<K: Resource + DeserializeOwned>(
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

pub(super) fn header(
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
