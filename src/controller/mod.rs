//! The controller of one node: one reconciler per concern, each bringing
//! what it owns to what its inputs say, and the pass that runs them in
//! order.
//!
//! - [`links`]: this node's devices ↔ our tcx links;
//! - [`endpoints`]: Cilium's `cilium_lxc` → our endpoint map;
//! - [`groups`]: the groups Cilium replicates → our mirror of them;
//! - [`policies`]: the resolution of the cluster's objects → the policy
//!   maps;
//! - [`report`]: readiness and findings → the report `status` reads.
//!
//! One error policy for all of them: a reconcile that fails leaves what it
//! owns as it was, is retried on the next pass (every netlink event, every
//! snapshot, at least every resync interval), and logs its error once,
//! again only when the error changes, and once more when it clears where
//! that matters ([`Once`]).

mod endpoints;
mod groups;
mod links;
mod policies;
mod report;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::attach::AttachConfig;
use crate::cilium_maps;
use crate::datapath::{Datapath, Maps, Paths};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::node;
use crate::objects::Objects;
use crate::resolve::{Interface, LocalNode};

/// An error logged once while it stays the same, not on every pass.
#[derive(Default)]
pub(crate) struct Once {
    last: Option<String>,
}

impl Once {
    /// Whether `msg` is new (and remember it); `None` clears.
    pub(crate) fn changed(&mut self, msg: Option<String>) -> bool {
        let changed = self.last != msg;
        self.last = msg;
        changed && self.last.is_some()
    }

    /// Forget the error; returns whether there was one.
    pub(crate) fn clear(&mut self) -> bool {
        self.last.take().is_some()
    }
}

/// What the controller is given.
pub struct ControllerConfig {
    pub node_name: String,
    /// Where Cilium's BPF filesystem is (its maps under `tc/globals`).
    pub cilium_bpffs: PathBuf,
    pub attach: AttachConfig,
}

pub struct Controller<'a> {
    cfg: ControllerConfig,
    dp: &'a Datapath<'a>,
    maps: Maps,
    netlink: rtnetlink::Handle,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    /// Host-side ifindexes of Cilium's health endpoint from the last good
    /// read of `cilium_lxc`: not a pod, never attached to.
    health_ifindexes: BTreeSet<u32>,
    node_error: Once,
    links: links::Links,
    endpoints: endpoints::EndpointMirror,
    groups: groups::GroupsMirror,
    policies: policies::Policies,
    report: report::ReportWriter,
}

impl<'a> Controller<'a> {
    pub fn new(
        cfg: ControllerConfig,
        dp: &'a Datapath<'a>,
        maps: Maps,
        netlink: rtnetlink::Handle,
        health: Arc<Health>,
        metrics: Arc<Metrics>,
    ) -> Controller<'a> {
        Controller {
            links: links::Links::new(cfg.attach.clone()),
            cfg,
            dp,
            maps,
            netlink,
            health,
            metrics,
            health_ifindexes: BTreeSet::new(),
            node_error: Once::default(),
            endpoints: Default::default(),
            groups: Default::default(),
            policies: Default::default(),
            report: Default::default(),
        }
    }

    /// One pass: links, endpoints and groups from this node's state, then
    /// the policies from `objects` (once the source has synced), then the
    /// report.
    pub async fn pass(&mut self, objects: Option<&Arc<Objects>>) {
        let started = Instant::now();
        let devices = async {
            let interfaces = node::interfaces(&self.netlink).await?;
            let default_route = node::default_route_ifindex(&self.netlink).await?;
            Ok::<_, node::NodeError>((interfaces, default_route))
        };
        match devices.await {
            Ok((interfaces, default_route)) => {
                self.node_error.clear();
                // Blocking BPF syscalls and, for the policies, CPU-heavy
                // work: kept off the async workers that serve the probes and
                // the watches.
                tokio::task::block_in_place(|| {
                    self.local(&interfaces);
                    if let Some(objects) = objects {
                        self.policies(objects, interfaces, default_route, started);
                    }
                });
            }
            Err(e) => {
                if self.node_error.changed(Some(e.to_string())) {
                    tracing::error!(error = %e, "reading this node's devices; reconnecting netlink");
                }
                // A dead netlink connection would otherwise stall every
                // later pass; /healthz reports the stall meanwhile.
                if let Ok(h) = node::connect() {
                    self.netlink = h;
                }
            }
        }
        tokio::task::block_in_place(|| {
            self.report.reconcile(
                self.dp.paths(),
                self.health.not_ready(),
                self.policies.problems(),
                self.policies.endpoints_without_identity(),
            )
        });
    }

    /// Links, the endpoint mirror and the groups mirror.
    fn local(&mut self, interfaces: &[Interface]) {
        // Cilium's endpoints first: they name the health endpoint's veth,
        // which looks like a pod's but must not get our program.
        let cilium_globals = Paths::new(&self.cfg.cilium_bpffs).globals();
        let read = cilium_maps::read_lxc(&cilium_globals);
        if let Ok(r) = &read {
            self.health_ifindexes = r.health_ifindexes.iter().copied().collect();
        }
        let pod_devices: Vec<Interface> = interfaces
            .iter()
            .filter(|i| {
                i.name != cilium_maps::HEALTH_DEVICE && !self.health_ifindexes.contains(&i.ifindex)
            })
            .cloned()
            .collect();

        let links = self.links.reconcile(self.dp, &pod_devices);
        self.health.set_links_complete(links.complete());
        self.metrics.attached_links.set(links.attached.len() as i64);
        self.metrics.expected_links.set(links.expected.len() as i64);

        self.endpoints.reconcile(&self.maps, read, &pod_devices);
        self.groups.reconcile(&self.maps, &cilium_globals);
    }

    fn policies(
        &mut self,
        objects: &Arc<Objects>,
        interfaces: Vec<Interface>,
        default_route: Option<u32>,
        started: Instant,
    ) {
        let tunnel_ifindex = interfaces
            .iter()
            .find(|i| i.name == self.cfg.attach.tunnel_device)
            .map_or(0, |i| i.ifindex);
        let inputs = policies::Inputs {
            objects: objects.clone(),
            local: LocalNode {
                name: self.cfg.node_name.clone(),
                interfaces,
                default_route_ifindex: default_route,
                tunnel_ifindex,
                known_ip: self.policies.known_node_ip(),
            },
            local_pods: self.endpoints.local_pods().cloned(),
        };
        let env = policies::Env {
            maps: &self.maps,
            health: &self.health,
            metrics: &self.metrics,
            node_name: &self.cfg.node_name,
        };
        self.policies.reconcile(&env, inputs, started);
    }
}
