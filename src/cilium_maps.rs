//! Reading Cilium's own pinned maps, read-only: the endpoints of this node
//! (`cilium_lxc`) and the groups of Cilium's in-cluster multicast
//! (`cilium_mcast_group_outer_v4_map`). Cilium owns them; they are opened
//! with `BPF_F_RDONLY` and never written.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use libbpf_rs::{MapCore, MapFlags, MapHandle, MapType};

use crate::datapath::maps::Endpoint;

pub const LXC_MAP: &str = "cilium_lxc";
pub const MCAST_GROUPS_MAP: &str = "cilium_mcast_group_outer_v4_map";

/// `struct endpoint_key`: ip4 at 0 (12 bytes of padding or the rest of an
/// IPv6 address), family at 16, key at 17, cluster id at 18.
const LXC_KEY_SIZE: u32 = 20;
/// `struct endpoint_info`: ifindex at 0, flags at 8, sec_id at 32.
const LXC_VALUE_SIZE: u32 = 48;
const LXC_FAMILY_OFF: usize = 16;
const LXC_FAMILY_IPV4: u8 = 1;
const LXC_IFINDEX_OFF: usize = 0;
const LXC_FLAGS_OFF: usize = 8;
const LXC_SEC_ID_OFF: usize = 32;
/// `ENDPOINT_F_HOST`: the entry is one of the host's own addresses.
const LXC_F_HOST: u32 = 1;
/// `reserved:health`: the identity of Cilium's health endpoint, which has a
/// `cilium_lxc` entry and a veth like a pod but is none.
pub const IDENTITY_HEALTH: u32 = 4;
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
        want: &'static str,
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

fn u32_at(bytes: &[u8], off: usize) -> Option<u32> {
    bytes
        .get(off..off + 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_ne_bytes)
}

/// What one `cilium_lxc` entry is to us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LxcEntry {
    /// A pod of this node: its IPv4 address, host-side ifindex and identity.
    Pod(Ipv4Addr, Endpoint),
    /// Cilium's health endpoint, by the ifindex of its host-side veth.
    Health { ifindex: u32 },
    /// A host address, an IPv6 entry or one we cannot read.
    Other,
}

/// Classify one entry of `cilium_lxc` from its raw key and value.
pub fn classify(key: &[u8], value: &[u8]) -> LxcEntry {
    if key.get(LXC_FAMILY_OFF) != Some(&LXC_FAMILY_IPV4) {
        return LxcEntry::Other;
    }
    let (Some(ifindex), Some(flags), Some(identity)) = (
        u32_at(value, LXC_IFINDEX_OFF),
        u32_at(value, LXC_FLAGS_OFF),
        u32_at(value, LXC_SEC_ID_OFF),
    ) else {
        return LxcEntry::Other;
    };
    if flags & LXC_F_HOST != 0 || ifindex == 0 {
        return LxcEntry::Other;
    }
    if identity == IDENTITY_HEALTH {
        return LxcEntry::Health { ifindex };
    }
    let Some(ip) = key.get(..4) else {
        return LxcEntry::Other;
    };
    LxcEntry::Pod(
        Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]),
        Endpoint { ifindex, identity },
    )
}

/// One read of `cilium_lxc`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LxcRead {
    /// The pods, sorted by address.
    pub pods: Vec<(Ipv4Addr, Endpoint)>,
    /// Host-side ifindexes of Cilium's health endpoint.
    pub health_ifindexes: Vec<u32>,
}

/// Read Cilium's endpoint map under `globals` (`<cilium-bpffs>/tc/globals`).
/// A read is one walk over a map cilium-agent may be emptying or refilling:
/// it can miss live pods, so what is absent here is not yet gone.
pub fn read_lxc(globals: &Path) -> Result<LxcRead, CiliumMapError> {
    let path = globals.join(LXC_MAP);
    let map = open_readonly(&path)?;
    if map.map_type() != MapType::Hash
        || map.key_size() != LXC_KEY_SIZE
        || map.value_size() != LXC_VALUE_SIZE
    {
        return Err(CiliumMapError::Layout {
            path,
            map_type: map.map_type(),
            key_size: map.key_size(),
            value_size: map.value_size(),
            want: "hash map of 20-byte keys and 48-byte values",
        });
    }
    let mut out = LxcRead::default();
    for key in map.keys() {
        if key.get(LXC_FAMILY_OFF) != Some(&LXC_FAMILY_IPV4) {
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
            LxcEntry::Health { ifindex } => out.health_ifindexes.push(ifindex),
            LxcEntry::Other => {}
        }
    }
    out.pods.sort_by_key(|(ip, _)| *ip);
    out.health_ifindexes.sort_unstable();
    out.health_ifindexes.dedup();
    Ok(out)
}

/// The pods of this node from Cilium's endpoint map under `globals`: IPv4
/// address → (host-side ifindex, security identity). Host entries, IPv6
/// entries and the health endpoint are skipped.
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
    if map.key_size() != 4 {
        return Err(CiliumMapError::Layout {
            path,
            map_type: map.map_type(),
            key_size: map.key_size(),
            value_size: map.value_size(),
            want: "map keyed by an IPv4 group (4-byte keys)",
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
        let mut key = vec![0u8; LXC_KEY_SIZE as usize];
        key[..4].copy_from_slice(&ip.octets());
        key[LXC_FAMILY_OFF] = family;
        let mut value = vec![0u8; LXC_VALUE_SIZE as usize];
        value[LXC_IFINDEX_OFF..LXC_IFINDEX_OFF + 4].copy_from_slice(&ifindex.to_ne_bytes());
        value[LXC_FLAGS_OFF..LXC_FLAGS_OFF + 4].copy_from_slice(&flags.to_ne_bytes());
        value[LXC_SEC_ID_OFF..LXC_SEC_ID_OFF + 4].copy_from_slice(&identity.to_ne_bytes());
        (key, value)
    }

    #[test]
    fn the_health_endpoint_is_not_a_pod() {
        let health = Ipv4Addr::new(198, 51, 100, 99);
        let (k, v) = entry(health, LXC_FAMILY_IPV4, 7, 0, IDENTITY_HEALTH);
        assert_eq!(classify(&k, &v), LxcEntry::Health { ifindex: 7 });
        // The control: the same entry with a pod's identity is a pod.
        let (k, v) = entry(health, LXC_FAMILY_IPV4, 7, 0, 4001);
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
    fn host_ipv6_and_short_entries_are_skipped() {
        let ip = Ipv4Addr::new(198, 51, 100, 11);
        let (k, v) = entry(ip, LXC_FAMILY_IPV4, 7, LXC_F_HOST, 1);
        assert_eq!(classify(&k, &v), LxcEntry::Other);
        let (k, v) = entry(ip, 2, 7, 0, 4001);
        assert_eq!(classify(&k, &v), LxcEntry::Other);
        let (k, v) = entry(ip, LXC_FAMILY_IPV4, 0, 0, 4001);
        assert_eq!(classify(&k, &v), LxcEntry::Other);
        let (k, v) = entry(ip, LXC_FAMILY_IPV4, 7, 0, 4001);
        assert_eq!(classify(&k, &v[..8]), LxcEntry::Other);
    }
}
