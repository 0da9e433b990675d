//! Map pins under `<bpffs-root>/tc/globals`, and the layout check that keeps
//! one build's maps from being mixed with another's.

use std::fmt;
use std::fs;
use std::io::ErrorKind;
use std::path::Path;

use libbpf_rs::{AsRawLibbpf, MapCore, MapHandle, OpenObject};

use super::{Capacities, DatapathError, Paths, Result};

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

/// BTF kinds (`include/uapi/linux/btf.h`).
const BTF_KIND_INT: u32 = 1;
const BTF_KIND_PTR: u32 = 2;
const BTF_KIND_ARRAY: u32 = 3;
const BTF_KIND_STRUCT: u32 = 4;
const BTF_KIND_UNION: u32 = 5;
const BTF_KIND_ENUM: u32 = 6;
const BTF_KIND_TYPEDEF: u32 = 8;
const BTF_KIND_VOLATILE: u32 = 9;
const BTF_KIND_CONST: u32 = 10;
const BTF_KIND_RESTRICT: u32 = 11;
const BTF_KIND_TYPE_TAG: u32 = 18;
const BTF_KIND_ENUM64: u32 = 19;

/// Type `id` of `btf` with typedefs and qualifiers resolved: (id, type).
///
/// # Safety
/// `btf` must be a valid libbpf BTF object that outlives `'a`.
unsafe fn resolve<'a>(
    btf: *const libbpf_sys::btf,
    mut id: u32,
) -> Option<(u32, &'a libbpf_sys::btf_type)> {
    // Bounded: a chain of typedefs and qualifiers longer than this is not
    // something a compiler emits.
    for _ in 0..32 {
        // SAFETY: `btf` is valid (caller); libbpf returns NULL for an id out
        // of range. The type lives as long as `btf`, which outlives 'a
        // (caller).
        let t = unsafe { libbpf_sys::btf__type_by_id(btf, id).as_ref()? };
        match (t.info >> 24) & 0x1f {
            BTF_KIND_TYPEDEF | BTF_KIND_VOLATILE | BTF_KIND_CONST | BTF_KIND_RESTRICT
            | BTF_KIND_TYPE_TAG => {
                // SAFETY: for these kinds the union holds `type_`.
                id = unsafe { t.__bindgen_anon_1.type_ };
            }
            _ => return Some((id, t)),
        }
    }
    None
}

/// # Safety
/// `btf` must be a valid libbpf BTF object.
unsafe fn btf_name(btf: *const libbpf_sys::btf, off: u32) -> String {
    // SAFETY: `btf` is valid; libbpf returns a NUL-terminated string inside
    // the BTF string section, or NULL for a bad offset.
    let p = unsafe { libbpf_sys::btf__name_by_offset(btf, off) };
    if p.is_null() {
        return String::new();
    }
    // SAFETY: non-NULL, NUL-terminated (above).
    unsafe { std::ffi::CStr::from_ptr(p) }
        .to_string_lossy()
        .into_owned()
}

/// The name of type `id` for display: `struct x`, `__u32` resolved to
/// `unsigned int`, `array`, ...
///
/// # Safety
/// `btf` must be a valid libbpf BTF object.
unsafe fn type_name(btf: *const libbpf_sys::btf, id: u32) -> (String, u32) {
    // SAFETY: `btf` is valid (caller).
    let Some((_, t)) = (unsafe { resolve(btf, id) }) else {
        return (format!("type #{id}"), 0);
    };
    // SAFETY: as above.
    let name = unsafe { btf_name(btf, t.name_off) };
    let kind = (t.info >> 24) & 0x1f;
    // SAFETY: for these kinds the union holds `size`.
    let size = match kind {
        BTF_KIND_INT | BTF_KIND_STRUCT | BTF_KIND_UNION | BTF_KIND_ENUM | BTF_KIND_ENUM64 => unsafe {
            t.__bindgen_anon_1.size
        },
        _ => 0,
    };
    let shown = match kind {
        BTF_KIND_STRUCT => format!("struct {name}"),
        BTF_KIND_UNION => format!("union {name}"),
        BTF_KIND_ENUM | BTF_KIND_ENUM64 => format!("enum {name}"),
        BTF_KIND_ARRAY => "array".to_owned(),
        BTF_KIND_PTR => "pointer".to_owned(),
        _ if name.is_empty() => format!("kind {kind}"),
        _ => name,
    };
    (shown, size)
}

/// The layout of type `id` in `btf`; None when the id is 0 (no type) or
/// unknown.
///
/// # Safety
/// `btf` must be a valid libbpf BTF object.
unsafe fn type_layout(btf: *const libbpf_sys::btf, id: u32) -> Option<TypeLayout> {
    if id == 0 {
        return None;
    }
    // SAFETY: `btf` is valid (caller).
    let (_, t) = unsafe { resolve(btf, id)? };
    // SAFETY: as above.
    let (name, size) = unsafe { type_name(btf, id) };
    let mut members = Vec::new();
    // SAFETY: `btf` is valid and `t` one of its types (above).
    unsafe { push_members(btf, t, 0, 0, &mut members) };
    Some(TypeLayout {
        name,
        size,
        members,
    })
}

/// Append the members of `t`, if it is a struct or union, at `base` bits,
/// with those of its anonymous structs and unions in their place.
///
/// # Safety
/// `btf` must be a valid libbpf BTF object and `t` one of its types.
unsafe fn push_members(
    btf: *const libbpf_sys::btf,
    t: &libbpf_sys::btf_type,
    base: u32,
    depth: u32,
    members: &mut Vec<(String, u32, String)>,
) {
    let kind = (t.info >> 24) & 0x1f;
    if kind != BTF_KIND_STRUCT && kind != BTF_KIND_UNION {
        return;
    }
    let vlen = (t.info & 0xffff) as usize;
    let kflag = t.info >> 31 == 1;
    // SAFETY: a struct or union is followed by `vlen` btf_member
    // records (BTF format, include/uapi/linux/btf.h).
    let first = unsafe {
        (t as *const libbpf_sys::btf_type)
            .add(1)
            .cast::<libbpf_sys::btf_member>()
    };
    for i in 0..vlen {
        // SAFETY: i < vlen, within the records above.
        let m = unsafe { &*first.add(i) };
        // With kflag, the high 8 bits are a bitfield size.
        let offset = base
            + if kflag {
                m.offset & 0x00ff_ffff
            } else {
                m.offset
            };
        // SAFETY: `btf` is valid.
        let name = unsafe { btf_name(btf, m.name_off) };
        // Bounded like `resolve`: deeper nesting is no layout we read.
        if name.is_empty() && depth < 8 {
            // SAFETY: `btf` is valid.
            if let Some((_, inner)) = unsafe { resolve(btf, m.type_) } {
                let inner_kind = (inner.info >> 24) & 0x1f;
                if inner_kind == BTF_KIND_STRUCT || inner_kind == BTF_KIND_UNION {
                    // SAFETY: `inner` is a type of `btf`.
                    unsafe { push_members(btf, inner, offset, depth + 1, members) };
                    continue;
                }
            }
        }
        // SAFETY: `btf` is valid.
        let (ty, _) = unsafe { type_name(btf, m.type_) };
        members.push((name, offset, ty));
    }
}

/// Key and value layouts of a map from `btf`, if both types are known.
///
/// # Safety
/// `btf` must be NULL or a valid libbpf BTF object.
unsafe fn btf_layout(btf: *const libbpf_sys::btf, key: u32, value: u32) -> Option<BtfLayout> {
    if btf.is_null() {
        return None;
    }
    // SAFETY: non-NULL and valid (caller).
    unsafe {
        Some(BtfLayout {
            key: type_layout(btf, key)?,
            value: type_layout(btf, value)?,
        })
    }
}

/// The key and value layouts of the kernel's BTF object `btf_id`.
fn kernel_btf_layout(btf_id: u32, key: u32, value: u32) -> Option<BtfLayout> {
    if btf_id == 0 {
        return None;
    }
    // SAFETY: plain libbpf call; returns an owned BTF object or an error
    // pointer (checked below).
    let btf = unsafe { libbpf_sys::btf__load_from_kernel_by_id(btf_id) };
    // libbpf returns NULL with errno set (libbpf 1.x mode).
    if btf.is_null() {
        return None;
    }
    // SAFETY: `btf` is valid until freed just below.
    let out = unsafe { btf_layout(btf, key, value) };
    // SAFETY: owned by us, freed once.
    unsafe { libbpf_sys::btf__free(btf) };
    out
}

/// The key and value layouts of an open map, from the BTF it was created
/// with; None for a map created without BTF.
pub fn map_btf_layout(map: &MapHandle) -> libbpf_rs::Result<Option<BtfLayout>> {
    let info = map.info()?;
    Ok(kernel_btf_layout(
        info.info.btf_id,
        info.info.btf_key_type_id,
        info.info.btf_value_type_id,
    ))
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
/// re-uses a pinned map at load time, or creates and pins a new one. A pinned
/// map whose layout differs is refused here, with both layouts in the error,
/// instead of libbpf's generic failure (or worse, a silent mix).
pub(super) fn prepare_map_pins(object: &mut OpenObject, globals: &Path) -> Result<()> {
    // SAFETY: the object is open and owns its BTF (or has none: NULL).
    let object_btf = unsafe { libbpf_sys::bpf_object__btf(object.as_libbpf_object().as_ptr()) };
    for mut map in object.maps_mut() {
        let Some(name) = map.name().to_str().map(str::to_owned) else {
            continue;
        };
        if !name.starts_with(MAP_PREFIX) {
            continue;
        }
        let path = globals.join(&name);
        let raw = map.as_libbpf_object().as_ptr();
        // SAFETY: `raw` is a map of the open object and `object_btf` its BTF
        // (or NULL); both live as long as `object`.
        let btf = unsafe {
            btf_layout(
                object_btf,
                libbpf_sys::bpf_map__btf_key_type_id(raw),
                libbpf_sys::bpf_map__btf_value_type_id(raw),
            )
        };
        let ours = MapLayout {
            map_type: map.map_type().into(),
            key_size: map.key_size(),
            value_size: map.value_size(),
            max_entries: map.max_entries(),
            flags: map.map_flags(),
            btf: btf.map(Box::new),
        };
        if let Some(pinned) = pinned_layout(&path)? {
            if !pinned.compatible(&ours) {
                let same_but_size = MapLayout {
                    max_entries: ours.max_entries,
                    ..pinned.clone()
                };
                let flag = Capacities::default().of(&name).map(|(_, _, flag)| flag);
                if let (Some(flag), true) = (flag, same_but_size.compatible(&ours)) {
                    return Err(DatapathError::CapacityMismatch {
                        path,
                        pinned: pinned.max_entries,
                        ours: ours.max_entries,
                        flag,
                    });
                }
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
        btf: kernel_btf_layout(
            info.info.btf_id,
            info.info.btf_key_type_id,
            info.info.btf_value_type_id,
        )
        .map(Box::new),
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
