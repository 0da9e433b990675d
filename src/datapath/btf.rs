//! BTF, read through libbpf-rs: the layouts of a map's key and value, from
//! an object being loaded or from the kernel's BTF of a pinned map, reduced
//! to what decides the bytes (names, offsets, types), for the layout checks.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::io::Write;
use std::os::fd::AsRawFd;

use libbpf_rs::btf::types::{self, MemberAttr};
use libbpf_rs::btf::{Btf, BtfKind, BtfType, HasSize, ReferencesType, TypeId};
use libbpf_rs::query::BtfInfoIter;
use libbpf_rs::{AsRawLibbpf, MapCore, MapHandle, OpenObject};
use nix::sys::memfd::{memfd_create, MemFdCreateFlag};

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

/// A type past its typedefs and qualifiers; None for BTF no compiler
/// emits (a dangling id, a chain that does not end).
pub(super) fn resolve(mut t: BtfType<'_>) -> Option<BtfType<'_>> {
    for _ in 0..32 {
        if !t.is_mod() && t.kind() != BtfKind::Typedef {
            return Some(t);
        }
        t = t.next_type()?;
    }
    None
}

pub(super) fn name_of(name: Option<&OsStr>) -> String {
    name.map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The name of type `id` for display: `struct x`, `__u32` resolved to
/// `unsigned int`, `array`, ... and its size where it has one.
pub(super) fn type_name(btf: &Btf<'_>, id: TypeId) -> (String, u32) {
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
pub(super) fn type_layout(btf: &Btf<'_>, id: TypeId) -> Option<TypeLayout> {
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
pub(super) fn push_members(
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
pub(super) fn btf_layout(btf: &Btf<'_>, key: TypeId, value: TypeId) -> Option<BtfLayout> {
    Some(BtfLayout {
        key: type_layout(btf, key)?,
        value: type_layout(btf, value)?,
    })
}

/// The key and value types of map `name` in its object's BTF: a map
/// defined in `.maps` is a variable of a struct whose `key` and `value`
/// members point to them (`__type(key, ...)`).
pub(super) fn object_map_types(btf: &Btf<'_>, name: &str) -> Option<(TypeId, TypeId)> {
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
pub(super) fn object_btf(object: &OpenObject) -> Option<Btf<'_>> {
    // SAFETY: an `OpenObject` owns a valid, opened `bpf_object` for as long
    // as it lives, and the reference (bound to the borrow of `object`)
    // is only read: libbpf-rs's own `Object::btf` does the same.
    let raw = unsafe { object.as_libbpf_object().as_ref() };
    Btf::from_bpf_object(raw).ok().flatten()
}

/// The kernel's BTF objects by id, each read at most once: the maps of one
/// object share one.
#[derive(Default)]
pub(super) struct KernelBtfs(HashMap<u32, Option<Btf<'static>>>);

impl KernelBtfs {
    pub(super) fn get(&mut self, id: u32) -> Option<&Btf<'static>> {
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
pub(super) fn load_kernel_btf(id: u32) -> Option<Btf<'static>> {
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
