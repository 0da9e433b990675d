//! Map pins under `<bpffs-root>/tc/globals`, and the layout check that keeps
//! one build's maps from being mixed with another's.

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::io::{ErrorKind, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

use libbpf_rs::btf::types::{self, MemberAttr};
use libbpf_rs::btf::{Btf, BtfKind, BtfType, HasSize, ReferencesType, TypeId};
use libbpf_rs::query::BtfInfoIter;
use libbpf_rs::{AsRawLibbpf, MapCore, MapHandle, OpenObject};
use nix::sys::memfd::{memfd_create, MemFdCreateFlag};

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

/// Key and value types of a map as its BTF describes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BtfLayout {
    pub key: TypeLayout,
    pub value: TypeLayout,
}

/// A type reduced to what decides the bytes: its kind, name and size, and
/// for a struct or union each member's name, bit offset and type. Members
/// of an anonymous struct or union are listed in its place, by the names C
/// gives them (Cilium's `endpoint_key` has its `ip4` in one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeLayout {
    /// `struct mcast_config`, `int`, `array`, ... (typedefs and qualifiers
    /// resolved).
    pub name: String,
    pub size: u32,
    /// (member name, bit offset, member type name).
    pub members: Vec<(String, u32, String)>,
}

impl TypeLayout {
    /// The byte offset of member `name`, if the type has one of that name.
    pub fn offset_of(&self, name: &str) -> Option<u32> {
        self.members
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, bits, _)| bits / 8)
    }
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

impl fmt::Display for TypeLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} B)", self.name, self.size)?;
        if !self.members.is_empty() {
            let members: Vec<String> = self
                .members
                .iter()
                .map(|(name, bits, ty)| format!("{ty} {name} @{}", bits / 8))
                .collect();
            write!(f, " {{ {} }}", members.join(", "))?;
        }
        Ok(())
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

/// A type past its typedefs and qualifiers; None for BTF no compiler
/// emits (a dangling id, a chain that does not end).
fn resolve(mut t: BtfType<'_>) -> Option<BtfType<'_>> {
    for _ in 0..32 {
        if !t.is_mod() && t.kind() != BtfKind::Typedef {
            return Some(t);
        }
        t = t.next_type()?;
    }
    None
}

fn name_of(name: Option<&OsStr>) -> String {
    name.map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The name of type `id` for display: `struct x`, `__u32` resolved to
/// `unsigned int`, `array`, ... and its size where it has one.
fn type_name(btf: &Btf<'_>, id: TypeId) -> (String, u32) {
    let Some(t) = btf.type_by_id::<BtfType<'_>>(id).and_then(resolve) else {
        return (format!("type #{id}"), 0);
    };
    let name = name_of(t.name());
    let size = match t.kind() {
        BtfKind::Int => types::Int::try_from(t).map(|i| i.size()).ok(),
        BtfKind::Struct | BtfKind::Union => types::Composite::try_from(t).map(|c| c.size()).ok(),
        BtfKind::Enum => types::Enum::try_from(t).map(|e| e.size()).ok(),
        BtfKind::Enum64 => types::Enum64::try_from(t).map(|e| e.size()).ok(),
        _ => None,
    };
    let size = size.and_then(|s| u32::try_from(s).ok()).unwrap_or(0);
    let shown = match t.kind() {
        BtfKind::Struct => format!("struct {name}"),
        BtfKind::Union => format!("union {name}"),
        BtfKind::Enum | BtfKind::Enum64 => format!("enum {name}"),
        BtfKind::Array => "array".to_owned(),
        BtfKind::Ptr => "pointer".to_owned(),
        kind if name.is_empty() => format!("kind {}", kind as u32),
        _ => name,
    };
    (shown, size)
}

/// The layout of type `id` in `btf`; None when the id is 0 (no type) or
/// unknown.
fn type_layout(btf: &Btf<'_>, id: TypeId) -> Option<TypeLayout> {
    if u32::from(id) == 0 {
        return None;
    }
    let t = btf.type_by_id::<BtfType<'_>>(id).and_then(resolve)?;
    let (name, size) = type_name(btf, id);
    let mut members = Vec::new();
    push_members(btf, t, 0, 0, &mut members);
    Some(TypeLayout {
        name,
        size,
        members,
    })
}

/// Append the members of `t`, if it is a struct or union, at `base` bits,
/// with those of its anonymous structs and unions in their place.
fn push_members(
    btf: &Btf<'_>,
    t: BtfType<'_>,
    base: u32,
    depth: u32,
    members: &mut Vec<(String, u32, String)>,
) {
    let Ok(composite) = types::Composite::try_from(t) else {
        return;
    };
    for m in (0..composite.len()).filter_map(|i| composite.get(i)) {
        let offset = base
            + match m.attr {
                MemberAttr::Normal { offset } | MemberAttr::BitField { offset, .. } => offset,
            };
        // Bounded like `resolve`: deeper nesting is no layout we read.
        if m.name.is_none_or(|n| n.is_empty()) && depth < 8 {
            let inner = btf.type_by_id::<BtfType<'_>>(m.ty).and_then(resolve);
            if let Some(inner) = inner.filter(|i| types::Composite::try_from(*i).is_ok()) {
                push_members(btf, inner, offset, depth + 1, members);
                continue;
            }
        }
        members.push((name_of(m.name), offset, type_name(btf, m.ty).0));
    }
}

/// Key and value layouts of a map from `btf`, if both types are known.
fn btf_layout(btf: &Btf<'_>, key: TypeId, value: TypeId) -> Option<BtfLayout> {
    Some(BtfLayout {
        key: type_layout(btf, key)?,
        value: type_layout(btf, value)?,
    })
}

/// The key and value types of map `name` in its object's BTF: a map
/// defined in `.maps` is a variable of a struct whose `key` and `value`
/// members point to them (`__type(key, ...)`).
fn object_map_types(btf: &Btf<'_>, name: &str) -> Option<(TypeId, TypeId)> {
    let var = btf
        .type_by_kind::<types::Var<'_>>()
        .find(|v| v.name() == Some(OsStr::new(name)))?;
    let def = types::Composite::try_from(resolve(var.referenced_type())?).ok()?;
    let pointee = |field: &str| {
        let member = (0..def.len())
            .filter_map(|i| def.get(i))
            .find(|m| m.name == Some(OsStr::new(field)))?;
        let ptr = btf.type_by_id::<types::Ptr<'_>>(member.ty)?;
        Some(ptr.referenced_type_id())
    };
    Some((pointee("key")?, pointee("value")?))
}

/// The BTF of an opened object.
fn object_btf(object: &OpenObject) -> Option<Btf<'_>> {
    // SAFETY: an `OpenObject` owns a valid, opened `bpf_object` for as long
    // as it lives, and the reference (bound to the borrow of `object`)
    // is only read: libbpf-rs's own `Object::btf` does the same.
    let raw = unsafe { object.as_libbpf_object().as_ref() };
    Btf::from_bpf_object(raw).ok().flatten()
}

/// The kernel's BTF objects by id, each read at most once: the maps of one
/// object share one.
#[derive(Default)]
struct KernelBtfs(HashMap<u32, Option<Btf<'static>>>);

impl KernelBtfs {
    fn get(&mut self, id: u32) -> Option<&Btf<'static>> {
        if id == 0 {
            return None;
        }
        self.0
            .entry(id)
            .or_insert_with(|| load_kernel_btf(id))
            .as_ref()
    }
}

/// The kernel's BTF object `id`. libbpf-rs reads a kernel BTF object only
/// as the raw bytes of an id walk, and parses BTF only from a file: the
/// bytes go through a memfd.
fn load_kernel_btf(id: u32) -> Option<Btf<'static>> {
    let info = BtfInfoIter::default().find(|b| b.id == id)?;
    let fd = memfd_create(c"mcast_egw_btf", MemFdCreateFlag::MFD_CLOEXEC).ok()?;
    let mut file = fs::File::from(fd);
    file.write_all(&info.btf).ok()?;
    Btf::from_path(format!("/proc/self/fd/{}", file.as_raw_fd())).ok()
}

/// The key and value layouts of an open map, from the BTF it was created
/// with; None for a map created without BTF.
pub fn map_btf_layout(map: &MapHandle) -> libbpf_rs::Result<Option<BtfLayout>> {
    let info = map.info()?;
    if info.info.btf_id == 0 {
        return Ok(None);
    }
    Ok(load_kernel_btf(info.info.btf_id).and_then(|btf| {
        btf_layout(
            &btf,
            TypeId::from(info.info.btf_key_type_id),
            TypeId::from(info.info.btf_value_type_id),
        )
    }))
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
            map_type: libbpf_rs::MapType::LpmTrie.into(),
            key_size: 12,
            value_size: 24,
            max_entries: 5,
            flags: 1,
            btf: None,
        };
        check_declared("mcast_egw_policy_v4", &policy).unwrap();
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
