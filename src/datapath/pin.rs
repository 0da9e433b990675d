//! Map pins under `<bpffs-root>/tc/globals`, and the layout check that keeps
//! one build's maps from being mixed with another's.

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::io::ErrorKind;
use std::path::Path;

use libbpf_rs::{MapCore, MapHandle, OpenObject};

use super::btf::{btf_layout, object_btf, object_map_types, BtfLayout, KernelBtfs};

use super::{maps, Capacities, DatapathError, Paths, Result};

/// Every map of ours that is pinned starts with this.
pub const MAP_PREFIX: &str = "mcast_egw_";

/// `BPF_FS_MAGIC` from `include/uapi/linux/magic.h`.
const BPF_FS_MAGIC: i64 = 0xcafe4a11;

/// What must match between a pinned map and the map of a BPF object before
/// the pinned one is re-used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapLayout {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
    /// Key and value types from BTF, when the map has BTF: a struct whose
    /// fields were reordered or renamed keeps its size, and only this tells.
    /// Boxed: errors carry two layouts and are passed by value.
    pub btf: Option<Box<BtfLayout>>,
}

impl MapLayout {
    /// Whether a pinned map of layout `self` can serve as `ours`: every
    /// attribute equal, and the BTF types too where both have BTF (a map
    /// without BTF keeps the size check only).
    pub fn compatible(&self, ours: &MapLayout) -> bool {
        let attrs = |l: &MapLayout| (l.map_type, l.key_size, l.value_size, l.max_entries, l.flags);
        attrs(self) == attrs(ours)
            && match (&self.btf, &ours.btf) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

impl fmt::Display for MapLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "type {}, key {} B, value {} B, {} entries, flags {:#x}",
            self.map_type, self.key_size, self.value_size, self.max_entries, self.flags
        )?;
        match &self.btf {
            Some(b) => write!(f, "; key {}, value {}", b.key, b.value),
            None => write!(f, "; no BTF"),
        }
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

/// Give the maps of an opened object whose capacity is chosen at load that
/// capacity.
pub(super) fn set_capacities(object: &mut OpenObject, capacities: &Capacities) -> Result<()> {
    for mut open_map in object.maps_mut() {
        let Some(name) = open_map.name().to_str().map(str::to_owned) else {
            continue;
        };
        let Some((map, value, _)) = capacities.of(&name) else {
            continue;
        };
        if value == 0 || value > Capacities::MAX {
            return Err(DatapathError::BadCapacity { map, value });
        }
        open_map
            .set_max_entries(value)
            .map_err(|source| DatapathError::PinnedMap {
                path: name.into(),
                source,
            })?;
    }
    Ok(())
}

/// Point every `mcast_egw_*` map of an opened object at its pin. libbpf then
/// re-uses a pinned map at load time, or creates and pins a new one. A map
/// the table (`maps/table.rs`) does not declare as it is, or a pinned map
/// whose layout differs, is refused here, with both layouts in the error,
/// instead of libbpf's generic failure (or worse, a silent mix).
pub(super) fn prepare_map_pins(object: &mut OpenObject, globals: &Path) -> Result<()> {
    let btf = object_btf(object);
    let mut ours = Vec::new();
    for map in object.maps() {
        let Some(name) = map.name().to_str().map(str::to_owned) else {
            continue;
        };
        if !name.starts_with(MAP_PREFIX) {
            continue;
        }
        let btf = btf
            .as_ref()
            .and_then(|btf| Some((btf, object_map_types(btf, &name)?)))
            .and_then(|(btf, (key, value))| btf_layout(btf, key, value));
        let layout = MapLayout {
            map_type: map.map_type().into(),
            key_size: map.key_size(),
            value_size: map.value_size(),
            max_entries: map.max_entries(),
            flags: map.map_flags(),
            btf: btf.map(Box::new),
        };
        check_declared(&name, &layout)?;
        ours.push((name, layout));
    }
    drop(btf);

    let mut kernel = KernelBtfs::default();
    for (name, ours) in &ours {
        let path = globals.join(name);
        let Some(pinned) = pinned_layout(&path, &mut kernel)? else {
            continue;
        };
        if pinned.compatible(ours) {
            continue;
        }
        let same_but_size = MapLayout {
            max_entries: ours.max_entries,
            ..pinned.clone()
        };
        let flag = Capacities::default().of(name).map(|(_, _, flag)| flag);
        if let (Some(flag), true) = (flag, same_but_size.compatible(ours)) {
            return Err(DatapathError::CapacityMismatch {
                path,
                pinned: pinned.max_entries,
                ours: ours.max_entries,
                flag,
            });
        }
        return Err(DatapathError::LayoutMismatch {
            path,
            pinned,
            ours: ours.clone(),
        });
    }
    for mut map in object.maps_mut() {
        let Some(name) = map.name().to_str().map(str::to_owned) else {
            continue;
        };
        if !name.starts_with(MAP_PREFIX) {
            continue;
        }
        let path = globals.join(&name);
        map.set_pin_path(&path)
            .map_err(|source| DatapathError::PinnedMap { path, source })?;
    }
    Ok(())
}

/// Whether map `name` of an object is the map the table declares: the same
/// kind, key and value sizes, and (unless chosen at load, which
/// [`set_capacities`] applied) capacity.
fn check_declared(name: &str, object: &MapLayout) -> Result<()> {
    let spec = maps::spec(name).ok_or_else(|| DatapathError::Undeclared {
        map: name.to_owned(),
        object: object.clone(),
    })?;
    let fixed = match spec.capacity {
        maps::Capacity::Fixed(n) => Some(n),
        maps::Capacity::AtLoad { .. } => None,
    };
    let declared = (
        u32::from(spec.kind),
        spec.key_size,
        spec.value_size,
        fixed.unwrap_or(object.max_entries),
    );
    let found = (
        object.map_type,
        object.key_size as usize,
        object.value_size as usize,
        object.max_entries,
    );
    if declared != found {
        return Err(DatapathError::NotAsDeclared {
            map: name.to_owned(),
            declared: format!("{spec:?}"),
            object: object.clone(),
        });
    }
    Ok(())
}

/// The layout of the map pinned at `path`, if one is.
fn pinned_layout(path: &Path, kernel: &mut KernelBtfs) -> Result<Option<MapLayout>> {
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
    let btf = kernel.get(info.info.btf_id).and_then(|btf| {
        btf_layout(
            btf,
            info.info.btf_key_type_id.into(),
            info.info.btf_value_type_id.into(),
        )
    });
    Ok(Some(MapLayout {
        map_type: info.info.type_,
        key_size: info.info.key_size,
        value_size: info.info.value_size,
        max_entries: info.info.max_entries,
        flags: info.info.map_flags,
        btf: btf.map(Box::new),
    }))
}

/// Unpin every map the table declares, and any other `mcast_egw_*` pin (a
/// map an older build declared); returns their names. Nothing else in
/// `globals` is touched.
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
    let mut names: BTreeSet<String> = maps::MAPS
        .iter()
        .filter(|spec| globals.join(spec.name).exists())
        .map(|spec| spec.name.to_owned())
        .collect();
    let strays: Vec<String> = entries
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(MAP_PREFIX) && !names.contains(name))
        .collect();
    if !strays.is_empty() {
        tracing::info!(maps = ?strays, "unpinning maps this build does not declare");
    }
    names.extend(strays);
    for name in &names {
        remove_file(&globals.join(name))?;
    }
    Ok(names.into_iter().collect())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::btf::TypeLayout;

    fn layout(value_size: u32, btf: Option<BtfLayout>) -> MapLayout {
        let btf = btf.map(Box::new);
        MapLayout {
            map_type: 2,
            key_size: 4,
            value_size,
            max_entries: 1,
            flags: 0,
            btf,
        }
    }

    fn config(fields: &[&str]) -> BtfLayout {
        let int = |name: &str| TypeLayout {
            name: name.to_owned(),
            size: 4,
            members: Vec::new(),
        };
        BtfLayout {
            key: int("unsigned int"),
            value: TypeLayout {
                name: "struct mcast_config".to_owned(),
                size: 8,
                members: fields
                    .iter()
                    .zip([0, 32])
                    .map(|(f, bits)| ((*f).to_owned(), bits, "unsigned int".to_owned()))
                    .collect(),
            },
        }
    }

    #[test]
    fn object_maps_must_be_as_the_table_declares() {
        let config = MapLayout {
            map_type: libbpf_rs::MapType::Array.into(),
            key_size: 4,
            value_size: 16,
            max_entries: 1,
            flags: 0,
            btf: None,
        };
        check_declared("mcast_egw_config", &config).unwrap();
        let shorter = MapLayout {
            value_size: 12,
            ..config.clone()
        };
        assert!(matches!(
            check_declared("mcast_egw_config", &shorter),
            Err(DatapathError::NotAsDeclared { .. })
        ));
        let larger = MapLayout {
            max_entries: 2,
            ..config.clone()
        };
        assert!(matches!(
            check_declared("mcast_egw_config", &larger),
            Err(DatapathError::NotAsDeclared { .. })
        ));
        assert!(matches!(
            check_declared("mcast_egw_other", &config),
            Err(DatapathError::Undeclared { .. })
        ));
        // A capacity chosen at load is whatever the operator chose.
        let policy = MapLayout {
            map_type: libbpf_rs::MapType::Hash.into(),
            key_size: 12,
            value_size: 24,
            max_entries: 5,
            flags: 1,
            btf: None,
        };
        check_declared("mcast_egw_policy_hash_v4", &policy).unwrap();
    }

    #[test]
    fn fields_decide_where_both_have_btf_sizes_otherwise() {
        let ab = config(&["a", "b"]);
        let ba = config(&["b", "a"]);
        assert!(layout(8, Some(ab.clone())).compatible(&layout(8, Some(ab.clone()))));
        assert!(!layout(8, Some(ba.clone())).compatible(&layout(8, Some(ab.clone()))));
        // Without BTF on one side, the sizes alone decide.
        assert!(layout(8, None).compatible(&layout(8, Some(ab.clone()))));
        assert!(layout(8, Some(ba)).compatible(&layout(8, None)));
        assert!(!layout(4, None).compatible(&layout(8, Some(ab))));
        assert!(!layout(4, None).compatible(&layout(8, None)));
        let shown = layout(8, Some(config(&["a", "b"]))).to_string();
        assert!(
            shown.ends_with(
                "value struct mcast_config (8 B) { unsigned int a @0, unsigned int b @4 }"
            ),
            "{shown}"
        );
        assert!(layout(8, None).to_string().ends_with("; no BTF"));
    }
}
