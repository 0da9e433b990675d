//! The endpoint mirror: Cilium's `cilium_lxc` → our `mcast_egw_endpoints`
//! (IPv4 entries) and `mcast_egw_endpoints_v6` (IPv6 entries, family 2).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

use crate::cilium_maps::{CiliumMapError, LxcRead};
use crate::datapath::maps::{Codec, Endpoint, TypedMap};
use crate::datapath::{DatapathError, Maps};
use crate::resolve::{Interface, LocalPods};
use crate::sync;

use super::Once;

#[derive(Default)]
pub(super) struct EndpointMirror {
    /// Endpoints absent from the last read whose veths remain, kept: logged
    /// when the set changes.
    kept_absent: Once,
    kept_absent_v6: Once,
    error: Once,
    /// Pods behind this node's veths, from the last good read: whose origin
    /// entries this node keeps. None until one read has succeeded: then
    /// nothing is narrowed away.
    local_pods: Option<LocalPods>,
}

impl EndpointMirror {
    /// This node's pods as of the last good read.
    pub(super) fn local_pods(&self) -> Option<&LocalPods> {
        self.local_pods.as_ref()
    }

    /// Bring our endpoint maps to `read` (of `cilium_lxc`), keeping the pods
    /// whose veths are among `devices`. Blocking.
    pub(super) fn reconcile(
        &mut self,
        maps: &Maps,
        read: Result<LxcRead, CiliumMapError>,
        devices: &[Interface],
    ) {
        let read = match read {
            Ok(read) => read,
            Err(e) => {
                if self.error.changed(Some(e.to_string())) {
                    tracing::error!(error = %e, "reading Cilium's endpoint map");
                }
                return;
            }
        };
        // Each family is read and kept before either is written: the local
        // pods are only known once both are.
        let v4 = mirror(&maps.endpoints, read.pods, devices, &mut self.kept_absent);
        let v6 = mirror(
            &maps.endpoints_v6,
            read.pods_v6,
            devices,
            &mut self.kept_absent_v6,
        );
        let (v4, v6) = match (v4, v6) {
            (Ok(v4), Ok(v6)) => (v4, v6),
            (Err(e), _) | (_, Err(e)) => {
                if self.error.changed(Some(e.to_string())) {
                    tracing::error!(error = %e, "reading our endpoint maps");
                }
                return;
            }
        };
        self.local_pods = Some(LocalPods {
            v4: v4.desired.keys().copied().collect(),
            v6: v6.desired.keys().copied().collect(),
        });
        let synced = v4.apply(&maps.endpoints).and_then(|s4| {
            let s6 = v6.apply(&maps.endpoints_v6)?;
            Ok((s4, s6))
        });
        match synced {
            Ok((s4, s6)) => {
                self.error.clear();
                if !s4.is_noop() || !s6.is_noop() {
                    tracing::info!(
                        written = s4.written + s6.written,
                        removed = s4.removed + s6.removed,
                        endpoints = v4.desired.len(),
                        endpoints_v6 = v6.desired.len(),
                        "endpoints synced"
                    );
                }
            }
            Err(e) => {
                if self.error.changed(Some(e.to_string())) {
                    tracing::error!(error = %e, "syncing endpoints");
                }
            }
        }
    }
}

/// One family's endpoint map: what it holds and what it should.
struct Mirror<A> {
    current: BTreeMap<A, Endpoint>,
    desired: BTreeMap<A, Endpoint>,
}

impl<A: Codec + Ord + Copy> Mirror<A> {
    fn apply(&self, map: &TypedMap<A, Endpoint>) -> Result<sync::SyncStats, DatapathError> {
        sync::apply_endpoints(map, &self.current, &self.desired)
    }
}

/// Read `map` and work out what it should hold for `eps` (this family's
/// pods of the read).
fn mirror<A: Codec + Ord + Copy + Debug>(
    map: &TypedMap<A, Endpoint>,
    eps: Vec<(A, Endpoint)>,
    devices: &[Interface],
    kept_absent: &mut Once,
) -> Result<Mirror<A>, DatapathError> {
    let current = map.entries()?;
    let desired = keep_live(eps, &current, devices, kept_absent);
    Ok(Mirror { current, desired })
}

/// `eps` plus the endpoints we have that this read lacks but that still
/// exist. cilium-agent empties and refills `cilium_lxc` when it restarts,
/// and a key walk races its updates, so absence from one read (or from any
/// number of reads) proves nothing. A pod is gone when its veth is: an
/// endpoint absent from the read is withdrawn only when the ifindex of its
/// last entry names no device of this node any more, or names the health
/// endpoint, or now belongs to another endpoint of the read of the same
/// family (the pod's address changed).
fn keep_live<A: Ord + Copy + Debug>(
    eps: Vec<(A, Endpoint)>,
    current: &BTreeMap<A, Endpoint>,
    devices: &[Interface],
    kept_absent: &mut Once,
) -> BTreeMap<A, Endpoint> {
    let mut out: BTreeMap<_, _> = eps.into_iter().collect();
    let claimed: BTreeSet<u32> = out.values().map(|ep| ep.ifindex).collect();
    let present: BTreeSet<u32> = devices.iter().map(|i| i.ifindex).collect();
    let mut kept = Vec::new();
    for (ip, ep) in current {
        if !out.contains_key(ip) && present.contains(&ep.ifindex) && !claimed.contains(&ep.ifindex)
        {
            out.insert(*ip, *ep);
            kept.push(*ip);
        }
    }
    let msg = (!kept.is_empty()).then(|| format!("{kept:?}"));
    if kept_absent.changed(msg) {
        tracing::info!(
            endpoints = ?kept,
            "endpoints absent from cilium_lxc kept: their veths remain \
             (cilium-agent restarting or refilling its map)"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use super::*;

    fn device(ifindex: u32) -> Interface {
        Interface {
            name: format!("lxc{ifindex}"),
            ifindex,
            mac: [0; 6],
            ipv4: Vec::new(),
            ipv6: Vec::new(),
        }
    }

    /// IPv6 endpoints are kept and withdrawn by the same rules as IPv4's.
    #[test]
    fn absent_ipv6_endpoints_stay_while_their_veth_does() {
        let ep = |ifindex| Endpoint {
            ifindex,
            identity: 51234,
        };
        let a: Ipv6Addr = "2001:db8:100::1".parse().unwrap();
        let b: Ipv6Addr = "2001:db8:100::2".parse().unwrap();
        let c: Ipv6Addr = "2001:db8:100::3".parse().unwrap();
        let moved: Ipv6Addr = "2001:db8:100::4".parse().unwrap();
        let current = BTreeMap::from([(a, ep(11)), (b, ep(12)), (c, ep(13))]);
        // The read has only `moved`, on c's veth; a's veth remains, b's is gone.
        let out = keep_live(
            vec![(moved, ep(13))],
            &current,
            &[device(11), device(13)],
            &mut Once::default(),
        );
        assert_eq!(out, BTreeMap::from([(a, ep(11)), (moved, ep(13))]));
    }
}
