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
