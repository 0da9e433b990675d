//! The mirror of the groups Cilium replicates in the cluster (its
//! `multicast-enabled` feature), which our origin program leaves to it.

use std::path::Path;

use crate::cilium_maps;
use crate::datapath::Maps;
use crate::sync;

use super::Once;

#[derive(Default)]
pub(super) struct GroupsMirror {
    error: Once,
}

impl GroupsMirror {
    /// Bring `mcast_egw_cilium_groups` to what Cilium's maps under
    /// `cilium_globals` hold. Blocking.
    pub(super) fn reconcile(&mut self, maps: &Maps, cilium_globals: &Path) {
        let result = cilium_maps::read_mcast_groups(cilium_globals)
            .map_err(|e| ("reading Cilium's multicast groups", e.to_string()))
            .and_then(|groups| {
                sync::apply_cilium_groups(maps, &groups)
                    .map_err(|e| ("syncing Cilium's multicast groups", e.to_string()))
            });
        match result {
            Ok(_) => {
                self.error.clear();
            }
            Err((what, error)) => {
                if self.error.changed(Some(error.clone())) {
                    tracing::error!(%error, "{what}");
                }
            }
        }
    }
}
