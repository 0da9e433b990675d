//! The per-CPU IPv6 counter and drop maps written directly, as the
//! datapath writes them: for the CLI and metrics suites, which must show
//! IPv6 counts whatever program made them.

use std::net::Ipv6Addr;

use libbpf_rs::{MapCore, MapFlags, MapHandle};

use cilium_mcast_egress::bpf_intf::{
    mcast_counter_key6, mcast_counter_val, mcast_in6_addr, mcast_role,
};
use cilium_mcast_egress::datapath::maps::{
    drop_slot, DropReason, Role, COUNTERS_V6_MAP, DROPS_V6_MAP,
};
use cilium_mcast_egress::datapath::{Paths, Plain};

/// `enum mcast_role`'s code of `role`.
fn role_code(role: Role) -> u32 {
    match role {
        Role::Origin => mcast_role::MCAST_ROLE_ORIGIN as u32,
        Role::Gateway => mcast_role::MCAST_ROLE_GATEWAY as u32,
    }
}

/// An IPv6 address as `struct mcast_in6_addr` holds it: its 16 bytes in
/// network order.
fn in6(addr: Ipv6Addr) -> mcast_in6_addr {
    let o = addr.octets();
    let mut words = [0u32; 4];
    for (w, c) in words.iter_mut().zip(o.chunks_exact(4)) {
        *w = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]);
    }
    mcast_in6_addr { words }
}

/// `packets` and `bytes` split between the first and the last CPU, so that
/// only a reader that sums over CPUs sees the whole.
fn spread(packets: u64, bytes: u64) -> Vec<Vec<u8>> {
    let cpus = libbpf_rs::num_possible_cpus().expect("CPUs");
    let mut v = vec![mcast_counter_val::default(); cpus];
    v[0].packets += packets / 2;
    v[0].bytes += bytes / 2;
    v[cpus - 1].packets += packets - packets / 2;
    v[cpus - 1].bytes += bytes - bytes / 2;
    v.iter().map(|c| c.as_bytes().to_vec()).collect()
}

fn pinned(paths: &Paths, name: &str) -> MapHandle {
    MapHandle::from_pinned_path(paths.globals().join(name)).expect(name)
}

/// Set the IPv6 replication counter of (policy, group, role).
pub fn put_counter_v6(
    paths: &Paths,
    policy_id: u32,
    group: Ipv6Addr,
    role: Role,
    packets: u64,
    bytes: u64,
) {
    let key = mcast_counter_key6 {
        policy_id,
        role: role_code(role),
        group: in6(group),
    };
    pinned(paths, COUNTERS_V6_MAP)
        .update_percpu(key.as_bytes(), &spread(packets, bytes), MapFlags::ANY)
        .expect("writing mcast_egw_counters_v6");
}

/// Set the IPv6 drops of (role, reason).
pub fn put_drop_v6(paths: &Paths, role: Role, reason: DropReason, packets: u64, bytes: u64) {
    pinned(paths, DROPS_V6_MAP)
        .update_percpu(
            drop_slot(role, reason).as_bytes(),
            &spread(packets, bytes),
            MapFlags::ANY,
        )
        .expect("writing mcast_egw_drops_v6");
}
