//! The attach manager: `mcast_from_container` on every endpoint device,
//! `mcast_from_overlay` on the tunnel device's ingress and
//! `mcast_to_overlay` on its egress, as they come and go. One link per
//! device and program (and so direction), ever: re-attaching swaps the
//! program inside our pinned link, and the pins of vanished devices are
//! removed.

use std::collections::{BTreeMap, BTreeSet};

use crate::datapath::tcx::{self, AttachOutcome};
use crate::datapath::{Datapath, DatapathError, Program};
use crate::resolve::Interface;

/// Which devices get which program.
#[derive(Debug, Clone)]
pub struct AttachConfig {
    /// Endpoint devices, a shell glob such as `lxc*`.
    pub endpoint_devices: glob::Pattern,
    /// The tunnel device, `cilium_vxlan` by default.
    pub tunnel_device: String,
}

/// State of the links after a reconcile.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttachState {
    /// (device, program) that should be attached now.
    pub expected: BTreeSet<(String, Program)>,
    /// (device, program) attached by this process, with the link id.
    pub attached: BTreeMap<(String, Program), u32>,
    /// Whether the tunnel device exists.
    pub tunnel_present: bool,
}

impl AttachState {
    /// Every expected link is attached.
    pub fn complete(&self) -> bool {
        self.expected.iter().all(|k| self.attached.contains_key(k))
    }
}

/// Keeps the links of a node in step with its devices.
pub struct AttachManager {
    config: AttachConfig,
    /// (device, program) -> ifindex it was attached to by this process.
    done: BTreeMap<(String, Program), (u32, u32)>,
    /// Last error per (device, program), so that a failing device is logged
    /// once per distinct error, not on every pass.
    failing: BTreeMap<(String, Program), String>,
    /// Listing our link pins failed on the last pass (logged once).
    listing_failed: bool,
}

impl AttachManager {
    pub fn new(config: AttachConfig) -> Self {
        AttachManager {
            config,
            done: BTreeMap::new(),
            failing: BTreeMap::new(),
            listing_failed: false,
        }
    }

    fn expected(&self, interfaces: &[Interface]) -> BTreeMap<(String, Program), u32> {
        let mut out = BTreeMap::new();
        for i in interfaces {
            if self.config.endpoint_devices.matches(&i.name) {
                out.insert((i.name.clone(), Program::FromContainer), i.ifindex);
            }
            if i.name == self.config.tunnel_device {
                out.insert((i.name.clone(), Program::FromOverlay), i.ifindex);
                // Without it, the copies an origin sends while Cilium keeps
                // the original leave without a tunnel key and are lost: the
                // link is expected (and /readyz waits for it) like the others.
                out.insert((i.name.clone(), Program::ToOverlay), i.ifindex);
            }
        }
        out
    }

    /// Attach what is missing (or what this process has not attached yet:
    /// that swaps in this build's program on a restart or an upgrade) and
    /// remove the links of devices that are gone or no longer match.
    pub fn reconcile(&mut self, dp: &Datapath<'_>, interfaces: &[Interface]) -> AttachState {
        let expected = self.expected(interfaces);
        self.done
            .retain(|k, (ifindex, _)| expected.get(k) == Some(ifindex));

        // The tunnel's egress program first: an endpoint's new program
        // (after an upgrade) hands tunnel keys to it, and a copy sent
        // before it is there would be lost.
        let tunnel_first = expected
            .iter()
            .filter(|((_, p), _)| *p == Program::ToOverlay)
            .chain(
                expected
                    .iter()
                    .filter(|((_, p), _)| *p != Program::ToOverlay),
            );
        for ((device, program), ifindex) in tunnel_first {
            let key = (device.clone(), *program);
            if self.done.contains_key(&key) {
                continue;
            }
            match dp.attach(device, *program) {
                Ok(outcome) => {
                    let verb = match outcome {
                        AttachOutcome::Attached { .. } => "attached",
                        AttachOutcome::Updated { .. } => "program updated in existing link",
                    };
                    tracing::info!(
                        device = %device,
                        program = program.name(),
                        link_id = outcome.link_id(),
                        "{verb}"
                    );
                    self.failing.remove(&key);
                    self.done.insert(key, (*ifindex, outcome.link_id()));
                }
                Err(e) => {
                    let msg = e.to_string();
                    if self.failing.get(&key) != Some(&msg) {
                        tracing::error!(
                            device = %device,
                            program = program.name(),
                            error = %msg,
                            "attach failed"
                        );
                        self.failing.insert(key, msg);
                    }
                }
            }
        }

        let removal_failing = self.remove_stale(dp, &expected);
        // Forget the errors of devices that are gone or no longer selected
        // (except a link whose removal still fails): on a node with pod
        // churn, a failed device would otherwise stay here forever.
        self.failing
            .retain(|k, _| expected.contains_key(k) || removal_failing.contains(k));

        AttachState {
            expected: expected.keys().cloned().collect(),
            attached: self
                .done
                .iter()
                .map(|(k, (_, link))| (k.clone(), *link))
                .collect(),
            tunnel_present: interfaces
                .iter()
                .any(|i| i.name == self.config.tunnel_device),
        }
    }

    /// What this manager keeps per (device, program): attached links and
    /// remembered errors. Bounded by the devices of the last pass.
    pub fn tracked(&self) -> BTreeSet<(String, Program)> {
        self.done
            .keys()
            .chain(self.failing.keys())
            .cloned()
            .collect()
    }

    /// Removes the links of vanished or unselected devices; returns the
    /// keys whose removal failed this pass (their error is kept, so that it
    /// is logged once, not every pass).
    fn remove_stale(
        &mut self,
        dp: &Datapath<'_>,
        expected: &BTreeMap<(String, Program), u32>,
    ) -> BTreeSet<(String, Program)> {
        let mut removal_failing = BTreeSet::new();
        let pinned = match tcx::links(dp.paths()) {
            Ok(l) => {
                self.listing_failed = false;
                l
            }
            Err(e) => {
                if !self.listing_failed {
                    tracing::warn!(error = %e, "listing link pins");
                }
                self.listing_failed = true;
                // Keep the errors of links we could not look at.
                return self.failing.keys().cloned().collect();
            }
        };
        for link in pinned {
            let Some(program) = Program::from_name(&link.program) else {
                continue;
            };
            let key = (link.device.clone(), program);
            if expected.get(&key) == Some(&link.ifindex) {
                continue;
            }
            // Not in this pass's device list. A dump interrupted by device
            // churn can leave a live device out, so ask the kernel itself:
            // stale only if the link's device is gone (ifindex 0 or the
            // name now names another device), or no longer selected.
            let selected = match program {
                Program::FromContainer => self.config.endpoint_devices.matches(&link.device),
                Program::FromOverlay | Program::ToOverlay => {
                    link.device == self.config.tunnel_device
                }
            };
            let alive = link.ifindex != 0
                && crate::datapath::tcx::ifindex_of(&link.device).ok() == Some(link.ifindex);
            if selected && alive {
                continue;
            }
            match dp.detach(&link.device, program) {
                Ok(_) => {
                    tracing::info!(
                        device = %link.device,
                        program = %link.program,
                        "link of a vanished or unselected device removed"
                    );
                    self.failing.remove(&key);
                }
                Err(e) => {
                    removal_failing.insert(key.clone());
                    // Once per distinct error, not on every pass.
                    let msg = e.to_string();
                    if self.failing.get(&key) != Some(&msg) {
                        match &e {
                            DatapathError::Remove { path, source } => tracing::warn!(
                                path = %path.display(),
                                error = %source,
                                "removing link pin"
                            ),
                            _ => tracing::warn!(device = %link.device, error = %e, "removing link"),
                        }
                        self.failing.insert(key.clone(), msg);
                    }
                }
            }
            self.done.remove(&key);
        }
        removal_failing
    }
}
