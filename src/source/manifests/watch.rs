//! The inotify watches of the manifests directory and of its parent.

use super::*;

/// What a file-system event asks of the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wake {
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
pub(super) struct WatchTargets {
    pub(super) dir: PathBuf,
    /// None for `/`, or a path ending in `..`, whose entry in a parent
    /// cannot be named: such a directory is re-watched by the periodic
    /// full read alone.
    pub(super) parent: Option<PathBuf>,
}

impl WatchTargets {
    pub(super) fn of(dir: &Path) -> WatchTargets {
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
    pub(super) fn wake(&self, event: &Event) -> Option<Wake> {
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
pub(super) type DirId = (u64, u64);

pub(super) fn dir_id(path: &Path) -> Option<DirId> {
    std::fs::metadata(path)
        .ok()
        .filter(std::fs::Metadata::is_dir)
        .map(|m| (m.dev(), m.ino()))
}

/// One watched path and what is known of its watch.
#[derive(Debug)]
pub(super) struct Watched {
    pub(super) path: PathBuf,
    /// The directory the watch is on; None while there is none.
    pub(super) on: Option<DirId>,
    /// Adding the watch failed and was reported; reported again only after
    /// it has worked once.
    pub(super) failing: bool,
}

/// The watcher and its watches.
pub(super) struct Watches {
    pub(super) watcher: RecommendedWatcher,
    pub(super) dir: Watched,
    pub(super) parent: Option<Watched>,
}

impl Watches {
    pub(super) fn new(watcher: RecommendedWatcher, targets: WatchTargets) -> Watches {
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
    pub(super) fn start(&mut self) -> notify::Result<()> {
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
    pub(super) fn dir_watched(&self) -> bool {
        self.dir.on.is_some()
    }

    /// Puts the watches on the directories that carry the names now.
    /// `force` replaces them even where they look in place: after an event
    /// on the directory itself, notify may have dropped a watch of the same
    /// inode, or the inode number may have been reused. Returns whether the
    /// directory got a new watch: what was written before it needs a read.
    pub(super) fn refresh(&mut self, force: bool, stats: &SourceStats) -> bool {
        if let Some(parent) = &mut self.parent {
            refresh_one(&mut self.watcher, parent, force, stats);
        }
        refresh_one(&mut self.watcher, &mut self.dir, force, stats)
    }
}

/// [`rewatch`], with what it did logged: a watch back, once; a failure,
/// once until it works again.
pub(super) fn refresh_one(
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
pub(super) fn rewatch(
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
