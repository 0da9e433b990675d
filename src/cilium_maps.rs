//! Reading Cilium's own pinned maps, read-only: the endpoints of this node
//! (`cilium_lxc`) and the groups of Cilium's in-cluster multicast
//! (`cilium_mcast_group_outer_v4_map`). Cilium owns them; they are opened
//! with `BPF_F_RDONLY` and never written.
//!
//! Their layouts are Cilium's, generated from `include/cilium_compat.h`.
//! A map's key and value sizes must match them; where cilium-agent created
//! the map with BTF, every field read here must also be at its offset by
//! name, or the map is not read at all.

use std::mem::{offset_of, size_of};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use std::net::IpAddr;

use libbpf_rs::{MapCore, MapFlags, MapHandle, MapType};

use crate::cilium_compat::{
    endpoint_info, endpoint_key, mcast_group_v4, CILIUM_IDENTITY_HEALTH, ENDPOINT_F_HOST,
    ENDPOINT_KEY_IPV4, ENDPOINT_KEY_IPV6,
};
use crate::datapath::maps::Endpoint;
use crate::datapath::{map_btf_layout, Plain};

pub const LXC_MAP: &str = "cilium_lxc";
pub const MCAST_GROUPS_MAP: &str = "cilium_mcast_group_outer_v4_map";

/// `reserved:health`: the identity of Cilium's health endpoint, which has a
/// `cilium_lxc` entry and a veth like a pod but is none.
pub const IDENTITY_HEALTH: u32 = CILIUM_IDENTITY_HEALTH;

/// The fields of `cilium_lxc`'s key and value read here, by Cilium's names,
/// at the offsets of the generated types.
const LXC_KEY_FIELDS: [(&str, usize); 2] = [
    ("ip4", offset_of!(endpoint_key, ip4)),
    ("family", offset_of!(endpoint_key, family)),
];
const LXC_VALUE_FIELDS: [(&str, usize); 3] = [
    ("ifindex", offset_of!(endpoint_info, ifindex)),
    ("flags", offset_of!(endpoint_info, flags)),
    ("sec_id", offset_of!(endpoint_info, sec_id)),
];

impl endpoint_key {
    /// The key of an IPv4 address.
    pub fn ipv4(ip: Ipv4Addr) -> Self {
        endpoint_key {
            ip4: u32::from_ne_bytes(ip.octets()),
            family: ENDPOINT_KEY_IPV4 as u8,
            ..Default::default()
        }
    }

    /// The address of an IPv4 key; None for any other family.
    pub fn ipv4_addr(&self) -> Option<Ipv4Addr> {
        (u32::from(self.family) == ENDPOINT_KEY_IPV4)
            .then(|| Ipv4Addr::from(self.ip4.to_ne_bytes()))
    }

    /// The key of an IPv6 address: in Cilium `ip4` and its padding share
    /// their 16 bytes with `union v6addr ip6`, so the address fills them.
    pub fn ipv6(ip: Ipv6Addr) -> Self {
        let o = ip.octets();
        let word = |i: usize| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
        endpoint_key {
            ip4: word(0),
            pad1: word(4),
            pad2: word(8),
            pad3: word(12),
            family: ENDPOINT_KEY_IPV6 as u8,
            ..Default::default()
        }
    }

    /// The address of an IPv6 key (the first 16 bytes); None for any
    /// other family.
    pub fn ipv6_addr(&self) -> Option<Ipv6Addr> {
        (u32::from(self.family) == ENDPOINT_KEY_IPV6).then(|| {
            let mut o = [0u8; 16];
            for (chunk, word) in o
                .chunks_exact_mut(4)
                .zip([self.ip4, self.pad1, self.pad2, self.pad3])
            {
                chunk.copy_from_slice(&word.to_ne_bytes());
            }
            Ipv6Addr::from(o)
        })
    }
}
/// The host side of the health endpoint's veth in Cilium's veth mode.
pub const HEALTH_DEVICE: &str = "lxc_health";

/// Errors reading Cilium's maps.
#[derive(Debug, thiserror::Error)]
pub enum CiliumMapError {
    #[error("opening {path} read-only: {source}")]
    Open {
        path: PathBuf,
        source: libbpf_rs::Error,
    },
    #[error(
        "{path}: unknown layout ({map_type:?}, key {key_size} B, value {value_size} B); \
         this build reads a {want}"
    )]
    Layout {
        path: PathBuf,
        map_type: MapType,
        key_size: u32,
        value_size: u32,
        want: String,
    },
    /// The map's BTF puts a field this build reads elsewhere, or has none
    /// of that name: the sizes agree, the meaning would not.
    #[error(
        "{path}: the map's BTF has {what} field {field} {theirs}, this build reads it at \
         byte {ours} (pinned {what}: {pinned}); this Cilium's layout is unknown to this build, \
         so the map is not read"
    )]
    Field {
        path: PathBuf,
        what: &'static str,
        field: &'static str,
        ours: usize,
        theirs: String,
        pinned: String,
    },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: libbpf_rs::Error,
    },
}

fn open_readonly(path: &Path) -> Result<MapHandle, CiliumMapError> {
    MapHandle::from_pinned_path_with_file_flags(path, libbpf_sys::BPF_F_RDONLY).map_err(|source| {
        CiliumMapError::Open {
            path: path.to_owned(),
            source,
        }
    })
}

/// Where `map` has BTF, every field of `key` and `value` must be there by
/// name, at the same offset; without BTF the size check stands alone.
fn check_fields(
    path: &Path,
    map: &MapHandle,
    key: &[(&'static str, usize)],
    value: &[(&'static str, usize)],
) -> Result<(), CiliumMapError> {
    let btf = map_btf_layout(map).map_err(|source| CiliumMapError::Read {
        path: path.to_owned(),
        source,
    })?;
    let Some(btf) = btf else {
        return Ok(());
    };
    for (what, pinned, fields) in [("key", &btf.key, key), ("value", &btf.value, value)] {
        for &(field, ours) in fields {
            let theirs = pinned.offset_of(field);
            if theirs.and_then(|t| usize::try_from(t).ok()) == Some(ours) {
                continue;
            }
            return Err(CiliumMapError::Field {
                path: path.to_owned(),
                what,
                field,
                ours,
                theirs: match theirs {
                    Some(t) => format!("at byte {t}"),
                    None => "nowhere".to_owned(),
                },
                pinned: pinned.to_string(),
            });
        }
    }
    Ok(())
}

/// What one `cilium_lxc` entry is to us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LxcEntry {
    /// A pod of this node: its IPv4 address, host-side ifindex and identity.
    Pod(Ipv4Addr, Endpoint),
    /// A pod's IPv6 address (an entry of family 2), ifindex and identity.
    Pod6(Ipv6Addr, Endpoint),
    /// Cilium's health endpoint, by the ifindex of its host-side veth.
    Health { ifindex: u32 },
    /// A host address or an entry we cannot read.
    Other,
}

/// Classify one entry of `cilium_lxc` from its raw key and value.
pub fn classify(key: &[u8], value: &[u8]) -> LxcEntry {
    let Some(key) = endpoint_key::from_bytes(key) else {
        return LxcEntry::Other;
    };
    let ip = match (key.ipv4_addr(), key.ipv6_addr()) {
        (Some(ip), _) => IpAddr::V4(ip),
        (None, Some(ip)) => IpAddr::V6(ip),
        (None, None) => return LxcEntry::Other,
    };
    let Some(info) = endpoint_info::from_bytes(value) else {
        return LxcEntry::Other;
    };
    if info.flags & ENDPOINT_F_HOST != 0 || info.ifindex == 0 {
        return LxcEntry::Other;
    }
    if info.sec_id == IDENTITY_HEALTH {
        return LxcEntry::Health {
            ifindex: info.ifindex,
        };
    }
    let ep = Endpoint {
        ifindex: info.ifindex,
        identity: info.sec_id,
    };
    match ip {
        IpAddr::V4(ip) => LxcEntry::Pod(ip, ep),
        IpAddr::V6(ip) => LxcEntry::Pod6(ip, ep),
    }
}

/// One read of `cilium_lxc`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LxcRead {
    /// The pods' IPv4 addresses, sorted by address.
    pub pods: Vec<(Ipv4Addr, Endpoint)>,
    /// The pods' IPv6 addresses, sorted by address.
    pub pods_v6: Vec<(Ipv6Addr, Endpoint)>,
    /// Host-side ifindexes of Cilium's health endpoint.
    pub health_ifindexes: Vec<u32>,
}

/// Read Cilium's endpoint map under `globals` (`<cilium-bpffs>/tc/globals`).
/// A read is one walk over a map cilium-agent may be emptying or refilling:
/// it can miss live pods, so what is absent here is not yet gone.
pub fn read_lxc(globals: &Path) -> Result<LxcRead, CiliumMapError> {
    let path = globals.join(LXC_MAP);
    let map = open_readonly(&path)?;
    let (key_size, value_size) = (size_of::<endpoint_key>(), size_of::<endpoint_info>());
    if map.map_type() != MapType::Hash
        || usize::try_from(map.key_size()) != Ok(key_size)
        || usize::try_from(map.value_size()) != Ok(value_size)
    {
        return Err(CiliumMapError::Layout {
            path,
            map_type: map.map_type(),
            key_size: map.key_size(),
            value_size: map.value_size(),
            want: format!("hash map of {key_size}-byte keys and {value_size}-byte values"),
        });
    }
    check_fields(&path, &map, &LXC_KEY_FIELDS, &LXC_VALUE_FIELDS)?;
    let mut out = LxcRead::default();
    for key in map.keys() {
        let is_pod_family = endpoint_key::from_bytes(&key)
            .is_some_and(|k| k.ipv4_addr().is_some() || k.ipv6_addr().is_some());
        if !is_pod_family {
            continue;
        }
        let Some(value) =
            map.lookup(&key, MapFlags::ANY)
                .map_err(|source| CiliumMapError::Read {
                    path: path.clone(),
                    source,
                })?
        else {
            continue; // deleted meanwhile
        };
        match classify(&key, &value) {
            LxcEntry::Pod(ip, ep) => out.pods.push((ip, ep)),
            LxcEntry::Pod6(ip, ep) => out.pods_v6.push((ip, ep)),
            LxcEntry::Health { ifindex } => out.health_ifindexes.push(ifindex),
            LxcEntry::Other => {}
        }
    }
    out.pods.sort_by_key(|(ip, _)| *ip);
    out.pods_v6.sort_by_key(|(ip, _)| *ip);
    out.health_ifindexes.sort_unstable();
    out.health_ifindexes.dedup();
    Ok(out)
}

/// The pods of this node from Cilium's endpoint map under `globals`: IPv4
/// address → (host-side ifindex, security identity). Host entries, IPv6
/// entries (see [`read_lxc`]) and the health endpoint are skipped.
pub fn read_endpoints(globals: &Path) -> Result<Vec<(Ipv4Addr, Endpoint)>, CiliumMapError> {
    read_lxc(globals).map(|r| r.pods)
}

/// The groups Cilium replicates in the cluster, from its outer group map
/// under `globals`. The map only exists with `multicast-enabled`; without it
/// the answer is no groups.
pub fn read_mcast_groups(globals: &Path) -> Result<Vec<Ipv4Addr>, CiliumMapError> {
    let path = globals.join(MCAST_GROUPS_MAP);
    if !path.exists() {
        return Ok(Vec::new());
    }
    let map = open_readonly(&path)?;
    let key_size = size_of::<mcast_group_v4>();
    // The key is a bare address (a typedef, no fields to check by name).
    if usize::try_from(map.key_size()) != Ok(key_size) {
        return Err(CiliumMapError::Layout {
            path,
            map_type: map.map_type(),
            key_size: map.key_size(),
            value_size: map.value_size(),
            want: format!("map keyed by an IPv4 group ({key_size}-byte keys)"),
        });
    }
    let mut out: Vec<Ipv4Addr> = map
        .keys()
        .filter_map(|k| <[u8; 4]>::try_from(k.as_slice()).ok())
        .map(Ipv4Addr::from)
        .collect();
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(
        ip: Ipv4Addr,
        family: u8,
        ifindex: u32,
        flags: u32,
        identity: u32,
    ) -> (Vec<u8>, Vec<u8>) {
        let key = endpoint_key {
            family,
            ..endpoint_key::ipv4(ip)
        };
        let value = endpoint_info {
            ifindex,
            flags,
            sec_id: identity,
            ..Default::default()
        };
        (key.as_bytes().to_vec(), value.as_bytes().to_vec())
    }

    const IPV4: u8 = ENDPOINT_KEY_IPV4 as u8;

    #[test]
    fn the_health_endpoint_is_not_a_pod() {
        let health = Ipv4Addr::new(198, 51, 100, 99);
        let (k, v) = entry(health, IPV4, 7, 0, IDENTITY_HEALTH);
        assert_eq!(classify(&k, &v), LxcEntry::Health { ifindex: 7 });
        // The control: the same entry with a pod's identity is a pod.
        let (k, v) = entry(health, IPV4, 7, 0, 4001);
        assert_eq!(
            classify(&k, &v),
            LxcEntry::Pod(
                health,
                Endpoint {
                    ifindex: 7,
                    identity: 4001
                }
            )
        );
    }

    #[test]
    fn ipv6_entries_are_pods_too() {
        let ip: Ipv6Addr = "2001:db8:100::11".parse().unwrap();
        let key = endpoint_key::ipv6(ip);
        let k = key.as_bytes().to_vec();
        // Cilium's layout: the 16-byte address at 0, the family at 16.
        assert_eq!(&k[..16], &ip.octets());
        assert_eq!(k[16], 2);
        let value = endpoint_info {
            ifindex: 7,
            sec_id: 4001,
            ..Default::default()
        };
        let v = value.as_bytes().to_vec();
        let ep = Endpoint {
            ifindex: 7,
            identity: 4001,
        };
        assert_eq!(classify(&k, &v), LxcEntry::Pod6(ip, ep));
        // Host IPv6 addresses and the health endpoint as for IPv4.
        let host = endpoint_info {
            flags: ENDPOINT_F_HOST,
            ..value
        };
        assert_eq!(classify(&k, host.as_bytes()), LxcEntry::Other);
        let health = endpoint_info {
            sec_id: IDENTITY_HEALTH,
            ..value
        };
        assert_eq!(
            classify(&k, health.as_bytes()),
            LxcEntry::Health { ifindex: 7 }
        );
        // An unknown family is nobody's.
        let mut odd = k.clone();
        odd[16] = 3;
        assert_eq!(classify(&odd, &v), LxcEntry::Other);
    }

    #[test]
    fn host_and_short_entries_are_skipped() {
        let ip = Ipv4Addr::new(198, 51, 100, 11);
        let (k, v) = entry(ip, IPV4, 7, ENDPOINT_F_HOST, 1);
        assert_eq!(classify(&k, &v), LxcEntry::Other);
        let (k, v) = entry(ip, 3, 7, 0, 4001);
        assert_eq!(classify(&k, &v), LxcEntry::Other);
        let (k, v) = entry(ip, IPV4, 0, 0, 4001);
        assert_eq!(classify(&k, &v), LxcEntry::Other);
        let (k, v) = entry(ip, IPV4, 7, 0, 4001);
        assert_eq!(classify(&k, &v[..8]), LxcEntry::Other);
    }

    #[test]
    fn the_generated_layout_is_the_one_cilium_documents() {
        // Byte positions from Cilium's sources (see include/cilium_compat.h),
        // seen from the bytes, not the types.
        let (k, v) = entry(Ipv4Addr::new(198, 51, 100, 7), IPV4, 0x0102_0304, 1, 51001);
        assert_eq!((k.len(), v.len()), (20, 48));
        assert_eq!(&k[..4], &[198, 51, 100, 7]);
        assert_eq!(k[16], 1);
        assert_eq!(&v[0..4], &0x0102_0304u32.to_ne_bytes());
        assert_eq!(&v[8..12], &1u32.to_ne_bytes());
        assert_eq!(&v[32..36], &51001u32.to_ne_bytes());
        assert_eq!(
            LXC_KEY_FIELDS
                .iter()
                .chain(&LXC_VALUE_FIELDS)
                .map(|(_, off)| *off)
                .collect::<Vec<_>>(),
            vec![0, 16, 0, 8, 32]
        );
    }
}
