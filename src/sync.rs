//! Bring the pinned maps to the desired contents: diff, write new and
//! changed entries, then delete stale ones (make-before-break). Never a
//! flush: whatever is already right is left alone, so a restarted
//! controller adopts what it finds and the datapath never sees a gap.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use crate::datapath::maps::{EgressIface, Endpoint, Maps};
use crate::datapath::DatapathError;
use crate::resolve::Desired;

/// How many entries a sync wrote and removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncStats {
    pub written: usize,
    pub removed: usize,
}

impl SyncStats {
    pub fn is_noop(&self) -> bool {
        self.written == 0 && self.removed == 0
    }
}

impl std::ops::AddAssign for SyncStats {
    fn add_assign(&mut self, o: SyncStats) {
        self.written += o.written;
        self.removed += o.removed;
    }
}

/// What to write and what to delete to turn `current` into `desired`.
pub fn diff<K: Ord + Clone, V: PartialEq + Clone>(
    current: &BTreeMap<K, V>,
    desired: &BTreeMap<K, V>,
) -> (Vec<(K, V)>, Vec<K>) {
    let writes = desired
        .iter()
        .filter(|(k, v)| current.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let deletes = current
        .keys()
        .filter(|k| !desired.contains_key(*k))
        .cloned()
        .collect();
    (writes, deletes)
}

/// Apply a resolution: nodes and uplinks first (policies refer to them),
/// then the config and the policy entries, then the stale nodes and
/// uplinks last.
pub fn apply(maps: &Maps, desired: &Desired) -> Result<SyncStats, DatapathError> {
    let mut stats = SyncStats::default();

    let current_nodes: BTreeSet<Ipv4Addr> = maps.nodes()?.into_iter().collect();
    for n in desired.nodes.difference(&current_nodes) {
        maps.node_insert(*n)?;
        stats.written += 1;
    }

    let current_ifaces: BTreeMap<u32, EgressIface> = maps.egress_ifaces()?.into_iter().collect();
    let (iface_writes, iface_deletes) = diff(&current_ifaces, &desired.egress_ifaces);
    for (ifindex, iface) in &iface_writes {
        maps.egress_iface_insert(*ifindex, iface)?;
    }
    stats.written += iface_writes.len();

    if maps.config()? != desired.config {
        maps.config_set(&desired.config)?;
        stats.written += 1;
    }

    let current_policies = maps.policies()?.into_iter().collect();
    let (writes, deletes) = diff(&current_policies, &desired.policies);
    if let Err(e) = maps.policy_apply(&writes, &deletes) {
        // A full trie refuses new entries until stale ones go: only then,
        // delete first. Otherwise the map could never be repaired.
        tracing::warn!(error = %e, "writing policy entries; removing stale ones first");
        maps.policy_apply(&[], &deletes)?;
        maps.policy_apply(&writes, &[])?;
    }
    stats.written += writes.len();
    stats.removed += deletes.len();

    for ifindex in &iface_deletes {
        maps.egress_iface_delete(*ifindex)?;
    }
    stats.removed += iface_deletes.len();
    for n in current_nodes.difference(&desired.nodes) {
        maps.node_delete(*n)?;
        stats.removed += 1;
    }
    Ok(stats)
}

/// Keep the policy names (policy_id -> name) equal to the resolution's, for
/// the CLI.
pub fn apply_names(maps: &Maps, ids: &BTreeMap<String, u32>) -> Result<SyncStats, DatapathError> {
    let current = maps.policy_names()?;
    let desired: BTreeMap<u32, String> = ids.iter().map(|(n, id)| (*id, n.clone())).collect();
    let (writes, deletes) = diff(&current, &desired);
    for (id, name) in &writes {
        maps.policy_name_set(*id, name)?;
    }
    for id in &deletes {
        maps.policy_name_delete(*id)?;
    }
    Ok(SyncStats {
        written: writes.len(),
        removed: deletes.len(),
    })
}

/// Turn `mcast_egw_endpoints` from `current` (what it holds) into
/// `desired` (this node's endpoints).
pub fn apply_endpoints(
    maps: &Maps,
    current: &BTreeMap<Ipv4Addr, Endpoint>,
    desired: &BTreeMap<Ipv4Addr, Endpoint>,
) -> Result<SyncStats, DatapathError> {
    let (writes, deletes) = diff(current, desired);
    for (ip, ep) in &writes {
        maps.endpoint_insert(*ip, ep)?;
    }
    for ip in &deletes {
        maps.endpoint_delete(*ip)?;
    }
    Ok(SyncStats {
        written: writes.len(),
        removed: deletes.len(),
    })
}

/// Keep the mirror of Cilium's in-cluster multicast groups in step.
pub fn apply_cilium_groups(maps: &Maps, groups: &[Ipv4Addr]) -> Result<SyncStats, DatapathError> {
    let current: BTreeSet<Ipv4Addr> = maps.cilium_groups()?.into_iter().collect();
    let desired: BTreeSet<Ipv4Addr> = groups.iter().copied().collect();
    let mut stats = SyncStats::default();
    for g in desired.difference(&current) {
        maps.cilium_group_insert(*g)?;
        stats.written += 1;
    }
    for g in current.difference(&desired) {
        maps.cilium_group_delete(*g)?;
        stats.removed += 1;
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_writes_new_and_changed_and_deletes_stale() {
        let current: BTreeMap<u32, &str> = [(1, "a"), (2, "b"), (3, "c")].into();
        let desired: BTreeMap<u32, &str> = [(2, "b"), (3, "C"), (4, "d")].into();
        let (writes, deletes) = diff(&current, &desired);
        assert_eq!(writes, vec![(3, "C"), (4, "d")]);
        assert_eq!(deletes, vec![1]);
    }

    #[test]
    fn diff_of_equal_maps_is_empty() {
        let m: BTreeMap<u32, u32> = [(1, 1), (2, 2)].into();
        let (w, d) = diff(&m, &m);
        assert!(w.is_empty() && d.is_empty());
    }
}
