//! The endpoint mirror: Cilium's `cilium_lxc` → our `mcast_egw_endpoints`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use crate::cilium_maps::{CiliumMapError, LxcRead};
use crate::datapath::maps::Endpoint;
use crate::datapath::Maps;
use crate::resolve::Interface;
use crate::sync;

use super::Once;

#[derive(Default)]
pub(super) struct EndpointMirror {
    /// Endpoints absent from the last read whose veths remain, kept: logged
    /// when the set changes.
    kept_absent: Once,
    error: Once,
    /// Pods behind this node's veths, from the last good read: whose origin
    /// entries this node keeps. None until one read has succeeded: then
    /// nothing is narrowed away.
    local_pods: Option<BTreeSet<Ipv4Addr>>,
}

impl EndpointMirror {
    /// This node's pods as of the last good read.
    pub(super) fn local_pods(&self) -> Option<&BTreeSet<Ipv4Addr>> {
        self.local_pods.as_ref()
    }

    /// Bring our endpoint map to `read` (of `cilium_lxc`), keeping the pods
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
        let current: BTreeMap<_, _> = match maps.endpoints() {
            Ok(current) => current.into_iter().collect(),
            Err(e) => {
                if self.error.changed(Some(e.to_string())) {
                    tracing::error!(error = %e, "reading our endpoint map");
                }
                return;
            }
        };
        let eps = self.keep_live(read.pods, &current, devices);
        self.local_pods = Some(eps.keys().copied().collect());
        match sync::apply_endpoints(maps, &current, &eps) {
            Ok(s) => {
                self.error.clear();
                if !s.is_noop() {
                    tracing::info!(
                        written = s.written,
                        removed = s.removed,
                        endpoints = eps.len(),
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

    /// `eps` plus the endpoints we have that this read lacks but that
    /// still exist. cilium-agent empties and refills `cilium_lxc` when it
    /// restarts, and a key walk races its updates, so absence from one read
    /// (or from any number of reads) proves nothing. A pod is gone when its
    /// veth is: an endpoint absent from the read is withdrawn only when the
    /// ifindex of its last entry names no device of this node any more, or
    /// names the health endpoint, or now belongs to another endpoint of the
    /// read (the pod's address changed).
    fn keep_live(
        &mut self,
        eps: Vec<(Ipv4Addr, Endpoint)>,
        current: &BTreeMap<Ipv4Addr, Endpoint>,
        devices: &[Interface],
    ) -> BTreeMap<Ipv4Addr, Endpoint> {
        let mut out: BTreeMap<_, _> = eps.into_iter().collect();
        let claimed: BTreeSet<u32> = out.values().map(|ep| ep.ifindex).collect();
        let present: BTreeSet<u32> = devices.iter().map(|i| i.ifindex).collect();
        let mut kept = Vec::new();
        for (ip, ep) in current {
            if !out.contains_key(ip)
                && present.contains(&ep.ifindex)
                && !claimed.contains(&ep.ifindex)
            {
                out.insert(*ip, *ep);
                kept.push(*ip);
            }
        }
        let msg = (!kept.is_empty()).then(|| format!("{kept:?}"));
        if self.kept_absent.changed(msg) {
            tracing::info!(
                endpoints = ?kept,
                "endpoints absent from cilium_lxc kept: their veths remain \
                 (cilium-agent restarting or refilling its map)"
            );
        }
        out
    }
}
