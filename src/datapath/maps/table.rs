//! Every pinned map, declared once. From this one table come the names,
//! the typed handles of [`Maps`] and their opening, the fill levels, the
//! list `uninstall` removes, the capacities chosen at load, and the check
//! that a BPF object's maps are the ones declared here.

use std::mem::size_of;
use std::net::{Ipv4Addr, Ipv6Addr};

use libbpf_rs::MapType;

use super::typed::{Codec, TypedMap};
use super::{
    EgressIface, Endpoint, PolicyKey, PolicyKey6, PolicyValue, PolicyValue6, PrefixLens, Status,
};
use crate::bpf_intf as intf;
use crate::datapath::{Capacities, Paths, Result};

/// How many entries a map holds at most.
#[derive(Clone, Copy)]
pub enum Capacity {
    /// As `include/mcast_egress.h` (and so the BPF object) fixes it.
    Fixed(u32),
    /// Chosen by the operator at load, with this flag; the object's value
    /// is only the default.
    AtLoad {
        flag: &'static str,
        of: fn(&Capacities) -> u32,
    },
}

impl std::fmt::Debug for Capacity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Capacity::Fixed(n) => write!(f, "{n}"),
            Capacity::AtLoad { flag, .. } => write!(f, "{flag}"),
        }
    }
}

/// One pinned map as declared.
#[derive(Debug, Clone, Copy)]
pub struct MapSpec {
    pub name: &'static str,
    pub kind: MapType,
    pub key_size: usize,
    pub value_size: usize,
    pub capacity: Capacity,
    /// Reported by [`Maps::fill_levels`]: it fills as the cluster grows.
    pub fill_level: bool,
}

impl MapSpec {
    /// The capacity the map must have once `capacities` are applied.
    pub fn max_entries(&self, capacities: &Capacities) -> u32 {
        match self.capacity {
            Capacity::Fixed(n) => n,
            Capacity::AtLoad { of, .. } => of(capacities),
        }
    }
}

/// The declaration of map `name`, if it is one of ours.
pub fn spec(name: &str) -> Option<&'static MapSpec> {
    MAPS.iter().find(|s| s.name == name)
}

/// Declares the maps: the typed ones the controller and the CLI open, then
/// those only the datapath (or the ring buffer reader) uses.
macro_rules! declare_maps {
    (
        opened {$(
            $(#[$doc:meta])*
            $field:ident: $konst:ident = $name:literal, $kind:ident,
                $key:ty => $value:ty, $capacity:expr, fill_level: $fill:literal;
        )*}
        datapath_only {$(
            $(#[$doc2:meta])*
            $konst2:ident = $name2:literal, $kind2:ident,
                $key2:ty => $value2:ty, $capacity2:expr;
        )*}
    ) => {
        $( $(#[$doc])* pub const $konst: &str = $name; )*
        $( $(#[$doc2])* pub const $konst2: &str = $name2; )*

        /// Every pinned map of ours.
        pub const MAPS: &[MapSpec] = &[
            $(MapSpec {
                name: $name,
                kind: MapType::$kind,
                key_size: size_of::<<$key as Codec>::Raw>(),
                value_size: size_of::<<$value as Codec>::Raw>(),
                capacity: $capacity,
                fill_level: $fill,
            },)*
            $(MapSpec {
                name: $name2,
                kind: MapType::$kind2,
                key_size: size_of::<<$key2 as Codec>::Raw>(),
                value_size: size_of::<<$value2 as Codec>::Raw>(),
                capacity: $capacity2,
                fill_level: false,
            },)*
        ];

        /// Owned, typed handles to the pinned maps the controller and the
        /// CLI use; cheap to move into another task.
        #[derive(Debug)]
        pub struct Maps {
            $( $(#[$doc])* pub $field: TypedMap<$key, $value>, )*
        }

        impl Maps {
            /// Open every map pinned under `<root>/tc/globals`.
            pub fn open_pinned(paths: &Paths) -> Result<Maps> {
                let globals = paths.globals();
                Ok(Maps {
                    $( $field: TypedMap::open(&globals, $konst)?, )*
                })
            }

            /// How full the maps that grow with the cluster are:
            /// (name, entries, capacity).
            pub fn fill_levels(&self) -> Result<Vec<(&'static str, usize, u32)>> {
                let mut out = Vec::new();
                $(
                    if $fill {
                        out.push(($konst, self.$field.len(), self.$field.capacity()));
                    }
                )*
                Ok(out)
            }
        }
    };
}

declare_maps! {
    opened {
        /// Policy entries: a pod and a destination prefix to its gateway.
        /// A hash probed once per prefix length in use (`policy_lens`); the
        /// LPM trie of older builds was `mcast_egw_policy_v4`.
        policy: POLICY_MAP = "mcast_egw_policy_hash_v4", Hash,
            PolicyKey => PolicyValue,
            Capacity::AtLoad { flag: "--policy-map-entries", of: |c| c.policy_entries },
            fill_level: true;
        /// The destination prefix lengths `policy` has entries of, per /16
        /// of 224.0.0.0/4 (see [`super::PolicyLens`]).
        policy_lens: POLICY_LENS_MAP = "mcast_egw_policy_lens_v4", Array,
            u32 => PrefixLens<Ipv4Addr>, Capacity::Fixed(intf::MCAST_POLICY_LENS_BUCKETS),
            fill_level: false;
        /// This node's pods: address to veth and identity.
        endpoints: ENDPOINTS_MAP = "mcast_egw_endpoints", Hash,
            Ipv4Addr => Endpoint,
            Capacity::Fixed(intf::MCAST_EGW_ENDPOINTS_MAX_ENTRIES), fill_level: true;
        /// IPv6 policy entries in Cilium's IPv6 key layout: a hash probed
        /// once per prefix length in use (`policy_lens_v6`), as `policy`.
        policy_v6: POLICY_V6_MAP = "mcast_egw_policy_hash_v6", Hash,
            PolicyKey6 => PolicyValue6,
            Capacity::AtLoad { flag: "--policy-map-entries", of: |c| c.policy_entries },
            fill_level: true;
        /// The destination prefix lengths `policy_v6` has entries of, per
        /// value of bits 100 to 111 of the group (see [`super::PolicyLens`]).
        policy_lens_v6: POLICY_LENS_V6_MAP = "mcast_egw_policy_lens_v6", Array,
            u32 => PrefixLens<Ipv6Addr>, Capacity::Fixed(intf::MCAST_POLICY6_LENS_BUCKETS),
            fill_level: false;
        /// This node's pods by IPv6 address.
        endpoints_v6: ENDPOINTS_V6_MAP = "mcast_egw_endpoints_v6", Hash,
            Ipv6Addr => Endpoint,
            Capacity::Fixed(intf::MCAST_EGW_ENDPOINTS_MAX_ENTRIES), fill_level: true;
        /// The cluster's nodes: the peers a gateway accepts.
        nodes: NODES_MAP = "mcast_egw_nodes", Hash,
            Ipv4Addr => intf::mcast_node_val,
            Capacity::Fixed(intf::MCAST_EGW_NODES_MAX_ENTRIES), fill_level: true;
        /// Uplinks policies egress through, by ifindex.
        egress_ifaces: EGRESS_IFACES_MAP = "mcast_egw_egress_ifaces", Hash,
            u32 => EgressIface,
            Capacity::Fixed(intf::MCAST_EGW_IFACES_MAX_ENTRIES), fill_level: true;
        /// This node's IP, tunnel device and flags, at index 0.
        config: CONFIG_MAP = "mcast_egw_config", Array,
            u32 => intf::mcast_config, Capacity::Fixed(1), fill_level: false;
        /// Mirror of Cilium's in-cluster multicast groups.
        cilium_groups: CILIUM_GROUPS_MAP = "mcast_egw_cilium_groups", Hash,
            Ipv4Addr => intf::mcast_group_val,
            Capacity::Fixed(intf::MCAST_EGW_GROUPS_MAX_ENTRIES), fill_level: true;
        /// Replication counters per (policy, group, role), per CPU.
        counters: COUNTERS_MAP = "mcast_egw_counters", PercpuHash,
            intf::mcast_counter_key => intf::mcast_counter_val,
            Capacity::Fixed(intf::MCAST_EGW_COUNTERS_MAX_ENTRIES), fill_level: true;
        /// Drops per role and reason, per CPU.
        drops: DROPS_MAP = "mcast_egw_drops", PercpuArray,
            u32 => intf::mcast_counter_val,
            Capacity::Fixed(intf::mcast_role::MCAST_ROLE_MAX as u32 * intf::MCAST_DROP_SLOTS),
            fill_level: false;
        /// Replication counters of IPv6 groups, per CPU.
        counters_v6: COUNTERS_V6_MAP = "mcast_egw_counters_v6", PercpuHash,
            intf::mcast_counter_key6 => intf::mcast_counter_val,
            Capacity::Fixed(intf::MCAST_EGW_COUNTERS_MAX_ENTRIES), fill_level: true;
        /// Drops of IPv6 packets per role and reason, per CPU.
        drops_v6: DROPS_V6_MAP = "mcast_egw_drops_v6", PercpuArray,
            u32 => intf::mcast_counter_val,
            Capacity::Fixed(intf::mcast_role::MCAST_ROLE_MAX as u32 * intf::MCAST_DROP_SLOTS),
            fill_level: false;
        /// The drop events' per-CPU rate limit.
        events_limit: EVENTS_LIMIT_MAP = "mcast_egw_events_limit", PercpuArray,
            u32 => intf::mcast_events_limit, Capacity::Fixed(1), fill_level: false;
        /// Policy names by policy id, for the CLI.
        policy_names: POLICY_NAMES_MAP = "mcast_egw_policy_names", Hash,
            u32 => String,
            Capacity::AtLoad { flag: "--policy-names-entries", of: |c| c.policy_names },
            fill_level: false;
        /// What the controller last recorded, at index 0.
        status: STATUS_MAP = "mcast_egw_status", Array,
            u32 => Status, Capacity::Fixed(1), fill_level: false;
    }
    datapath_only {
        /// Drop events for `monitor` (a ring buffer: no key, no value).
        EVENTS_MAP = "mcast_egw_events", RingBuf,
            () => (), Capacity::Fixed(intf::MCAST_EGW_EVENTS_BYTES);
        /// Per-CPU slot through which `mcast_from_container` hands the tunnel
        /// key of a copy to `mcast_to_overlay`; nothing to configure.
        TUNNEL_PENDING_MAP = "mcast_egw_tunnel_pending", PercpuArray,
            u32 => intf::mcast_tunnel_pending, Capacity::Fixed(1);
    }
}

/// Every pinned map's name, for tools that walk them all.
pub const ALL_MAPS: [&str; MAPS.len()] = {
    let mut out = [""; MAPS.len()];
    let mut i = 0;
    while i < MAPS.len() {
        out[i] = MAPS[i].name;
        i += 1;
    }
    out
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::MAP_PREFIX;

    #[test]
    fn names_are_ours_and_unique() {
        let mut names: Vec<&str> = ALL_MAPS.to_vec();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), MAPS.len());
        for name in ALL_MAPS {
            assert!(name.starts_with(MAP_PREFIX), "{name}");
            assert_eq!(spec(name).map(|s| s.name), Some(name));
        }
    }

    #[test]
    fn capacities_chosen_at_load_follow_the_flags() {
        let c = Capacities {
            policy_entries: 7,
            policy_names: 9,
        };
        assert_eq!(spec(POLICY_MAP).unwrap().max_entries(&c), 7);
        assert_eq!(spec(POLICY_NAMES_MAP).unwrap().max_entries(&c), 9);
        assert_eq!(spec(CONFIG_MAP).unwrap().max_entries(&c), 1);
    }
}
