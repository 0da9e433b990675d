//! Links: this node's devices ↔ our tcx links.

use crate::attach::{AttachConfig, AttachManager, AttachState};
use crate::datapath::{Datapath, Program};
use crate::resolve::Interface;

use super::Once;

/// Keeps a link of ours on every endpoint device and on the tunnel device.
pub(super) struct Links {
    attach: AttachManager,
    tunnel_device: String,
    /// The tunnel device is there but its egress program is not.
    tunnel_egress_missing: Once,
}

impl Links {
    pub(super) fn new(config: AttachConfig) -> Links {
        Links {
            tunnel_device: config.tunnel_device.clone(),
            attach: AttachManager::new(config),
            tunnel_egress_missing: Once::default(),
        }
    }

    /// Attach to `devices` (this node's, without Cilium's health endpoint)
    /// what is missing, drop what is gone. Blocking.
    pub(super) fn reconcile(&mut self, dp: &Datapath, devices: &[Interface]) -> AttachState {
        let links = self.attach.reconcile(dp, devices);
        // What the missing link means, beside the attach error itself.
        let tunnel_egress = (self.tunnel_device.clone(), Program::ToOverlay);
        let missing = links.tunnel_present && !links.attached.contains_key(&tunnel_egress);
        if self
            .tunnel_egress_missing
            .changed(missing.then(|| tunnel_egress.0.clone()))
        {
            tracing::warn!(
                device = %tunnel_egress.0,
                program = Program::ToOverlay.name(),
                "tunnel device without our egress program: copies of groups Cilium also \
                 replicates are lost on their way to a remote gateway (drops: tunnel_key_failed)"
            );
        }
        links
    }
}
