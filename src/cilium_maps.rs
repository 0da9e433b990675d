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

/// The pods of this node from Cilium's endpoint map under `globals`
/// (`<cilium-bpffs>/tc/globals`): IPv4 address → (host-side ifindex,
/// security identity). Host entries and IPv6 entries are skipped.
pub fn read_endpoints(globals: &Path) -> Result<Vec<(Ipv4Addr, Endpoint)>, CiliumMapError> {
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
    let mut out = Vec::new();
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
        let (Some(ifindex), Some(flags), Some(identity)) = (
            u32_at(&value, LXC_IFINDEX_OFF),
            u32_at(&value, LXC_FLAGS_OFF),
            u32_at(&value, LXC_SEC_ID_OFF),
        ) else {
            continue;
        };
        if flags & LXC_F_HOST != 0 || ifindex == 0 {
            continue;
        }
        let ip = Ipv4Addr::new(key[0], key[1], key[2], key[3]);
        out.push((ip, Endpoint { ifindex, identity }));
    }
    out.sort_by_key(|(ip, _)| *ip);
    Ok(out)
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
