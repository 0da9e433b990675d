//! Map pins under `<bpffs-root>/tc/globals`, and the layout check that keeps
//! one build's maps from being mixed with another's.

use std::fmt;
use std::fs;
use std::io::ErrorKind;
use std::path::Path;

use libbpf_rs::{MapCore, MapHandle, OpenObject};

use super::{DatapathError, Paths, Result};

/// Every map of ours that is pinned starts with this.
pub const MAP_PREFIX: &str = "mcast_egw_";

/// `BPF_FS_MAGIC` from `include/uapi/linux/magic.h`.
const BPF_FS_MAGIC: i64 = 0xcafe4a11;

/// What must match between a pinned map and the map of a BPF object before
/// the pinned one is re-used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapLayout {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
}

impl fmt::Display for MapLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "type {}, key {} B, value {} B, {} entries, flags {:#x}",
            self.map_type, self.key_size, self.value_size, self.max_entries, self.flags
        )
    }
}

/// Whether `path` is on a BPF filesystem.
pub fn is_bpffs(path: &Path) -> Result<bool> {
    let st = nix::sys::statfs::statfs(path).map_err(|e| DatapathError::CreateDir {
        path: path.to_owned(),
        source: e.into(),
    })?;
    Ok(st.filesystem_type().0 as i64 == BPF_FS_MAGIC)
}

fn create_dir(path: &Path) -> Result<()> {
    fs::create_dir_all(path).map_err(|source| DatapathError::CreateDir {
        path: path.to_owned(),
        source,
    })
}

/// Check that the root is a BPF filesystem and create our directories.
pub(super) fn ensure_bpffs_dirs(paths: &Paths) -> Result<()> {
    let root = paths.bpffs_root();
    if !root.exists() || !is_bpffs(root)? {
        return Err(DatapathError::NotBpffs {
            path: root.to_owned(),
        });
    }
    create_dir(&paths.globals())?;
    create_dir(&paths.links_dir())
}

/// Point every `mcast_egw_*` map of an opened object at its pin. libbpf then
/// re-uses a pinned map at load time, or creates and pins a new one. A pinned
/// map whose layout differs is refused here, with both layouts in the error,
/// instead of libbpf's generic failure (or worse, a silent mix).
pub(super) fn prepare_map_pins(object: &mut OpenObject, globals: &Path) -> Result<()> {
    for mut map in object.maps_mut() {
        let Some(name) = map.name().to_str().map(str::to_owned) else {
            continue;
        };
        if !name.starts_with(MAP_PREFIX) {
            continue;
        }
        let path = globals.join(&name);
        let ours = MapLayout {
            map_type: map.map_type().into(),
            key_size: map.key_size(),
            value_size: map.value_size(),
            max_entries: map.max_entries(),
            flags: map.map_flags(),
        };
        if let Some(pinned) = pinned_layout(&path)? {
            if pinned != ours {
                return Err(DatapathError::LayoutMismatch { path, pinned, ours });
            }
        }
        map.set_pin_path(&path)
            .map_err(|source| DatapathError::PinnedMap { path, source })?;
    }
    Ok(())
}

/// The layout of the map pinned at `path`, if one is.
pub(super) fn pinned_layout(path: &Path) -> Result<Option<MapLayout>> {
    if !path.exists() {
        return Ok(None);
    }
    let map = MapHandle::from_pinned_path(path).map_err(|source| DatapathError::PinnedMap {
        path: path.to_owned(),
        source,
    })?;
    let info = map.info().map_err(|source| DatapathError::PinnedMap {
        path: path.to_owned(),
        source,
    })?;
    Ok(Some(MapLayout {
        map_type: info.info.type_,
        key_size: info.info.key_size,
        value_size: info.info.value_size,
        max_entries: info.info.max_entries,
        flags: info.info.map_flags,
    }))
}

/// Unpin every `mcast_egw_*` map in `globals`; returns their names.
pub(super) fn unpin_maps(globals: &Path) -> Result<Vec<String>> {
    let entries = match fs::read_dir(globals) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(DatapathError::Remove {
                path: globals.to_owned(),
                source,
            })
        }
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(MAP_PREFIX) {
            continue;
        }
        remove_file(&entry.path())?;
        removed.push(name);
    }
    removed.sort();
    Ok(removed)
}

pub(super) fn remove_file(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(source) => Err(DatapathError::Remove {
            path: path.to_owned(),
            source,
        }),
    }
}

pub(super) fn remove_dir_if_exists(path: &Path) -> Result<()> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(source) => Err(DatapathError::Remove {
            path: path.to_owned(),
            source,
        }),
    }
}
