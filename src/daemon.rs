//! `cilium-mcast-egress run`: the controller loop of one node.
//!
//! Load the datapath (adopting whatever is pinned), then keep reconciling:
//! links with devices, our endpoint map with Cilium's, the mirror of
//! Cilium's multicast groups, and the policy maps with the resolution of
//! the cluster's objects. On SIGTERM the loop stops and the datapath stays
//! attached and pinned, forwarding as it was.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::{FutureExt, StreamExt};
use tokio::sync::watch;

use crate::attach::{AttachConfig, AttachManager, AttachState};
use crate::cilium_maps;
use crate::datapath::maps::{Endpoint, Status, POLICY_MAP, POLICY_NAMES_MAP};
use crate::datapath::{Capacities, Datapath, DatapathStorage, Maps, Paths, Program};
use crate::health::{self, Health, Report, ReportPin};
use crate::metrics::Metrics;
use crate::node;
use crate::objects::Objects;
use crate::resolve::{self, LocalNode, Problem, Severity, Subject};
use crate::source::{self, SourceConfig, SourceStats};
use crate::sync;

/// Everything `run` needs; built from the command line.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub node_name: String,
    pub source: SourceConfig,
    pub bpffs_root: PathBuf,
    /// Capacities of the maps sized at load.
    pub capacities: Capacities,
    /// Where Cilium's BPF filesystem is (its maps under `tc/globals`).
    pub cilium_bpffs: PathBuf,
    pub attach: AttachConfig,
    pub metrics_addr: Option<SocketAddr>,
    /// How often to reconcile without any event.
    pub resync_interval: Duration,
}

/// A message logged once while it stays the same, not on every pass.
#[derive(Default)]
struct Once {
    last: Option<String>,
}

impl Once {
    /// Whether `msg` is new (and remember it); `None` clears.
    fn changed(&mut self, msg: Option<String>) -> bool {
        let changed = self.last != msg;
        self.last = msg;
        changed && self.last.is_some()
    }
}

struct Controller<'a> {
    cfg: &'a DaemonConfig,
    dp: &'a Datapath<'a>,
    maps: Maps,
    netlink: rtnetlink::Handle,
    attach: AttachManager,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    syncs: u64,
    problems: BTreeSet<Problem>,
    /// Pods behind this node's veths, from the last good read of Cilium's
    /// endpoint map: whose origin entries this node keeps. None until one
    /// read has succeeded: then nothing is narrowed away.
    local_pods: Option<BTreeSet<std::net::Ipv4Addr>>,
    /// Host-side ifindexes of Cilium's health endpoint from the last good
    /// read: not a pod, never attached to.
    health_ifindexes: BTreeSet<u32>,
    /// Endpoints absent from the last read whose veths remain, kept: logged
    /// when the set changes.
    kept_absent: Once,
    /// This node's IP from the last resolution that knew it.
    known_node_ip: Option<std::net::Ipv4Addr>,
    /// `CiliumEndpoint`s without an identity in the last resolution.
    endpoints_without_identity: usize,
    /// Where `status` finds the report, and the report last written there.
    report_pin: Option<ReportPin>,
    report: Option<Report>,
    report_error: Once,
    endpoints_error: Once,
    groups_error: Once,
    node_error: Once,
    sync_error: Once,
    /// The tunnel device is there but its egress program is not.
    tunnel_egress_missing: Once,
    synced_once: bool,
    /// The last successful resolution, what it was computed from, and how
    /// many passes ago it was synced: unchanged inputs skip the work, but
    /// not for ever (a sync of the same result repairs maps someone else
    /// changed).
    last: Option<Last>,
}

struct Last {
    inputs: SyncInputs,
    resolved: Resolved,
    /// Passes since it was last synced.
    age: u32,
    /// Its last sync failed: retried every pass, without resolving again.
    failed: bool,
}

/// A resolution as written: the entries that fit, the names that fit.
struct Resolved {
    /// Narrowed to this node, its policy entries to those that fit.
    desired: resolve::Desired,
    names: std::collections::BTreeMap<u32, String>,
}

/// Everything a resolution depends on besides the configuration.
#[derive(Debug, Clone)]
struct SyncInputs {
    /// Held, so that its address cannot be reused by a later snapshot.
    objects: Arc<Objects>,
    local: LocalNode,
    local_pods: Option<BTreeSet<std::net::Ipv4Addr>>,
}

impl PartialEq for SyncInputs {
    fn eq(&self, other: &Self) -> bool {
        // A snapshot is immutable: the same Arc is the same objects.
        Arc::ptr_eq(&self.objects, &other.objects)
            && self.local == other.local
            && self.local_pods == other.local_pods
    }
}

/// Passes between full syncs when nothing changed.
const FULL_SYNC_EVERY: u32 = 30;

impl Controller<'_> {
    async fn pass(&mut self, objects: Option<&Arc<Objects>>) {
        let started = Instant::now();
        let (interfaces, default_route) = match self.local_devices().await {
            Ok(v) => v,
            Err(e) => {
                if self.node_error.changed(Some(e.to_string())) {
                    tracing::error!(error = %e, "reading this node's devices; reconnecting netlink");
                }
                // A dead netlink connection would otherwise stall every
                // later pass; /healthz reports the stall meanwhile.
                if let Ok(h) = node::connect() {
                    self.netlink = h;
                }
                return;
            }
        };
        self.node_error.changed(None);

        // Links, endpoints and groups: blocking BPF syscalls, kept off the
        // async workers that serve the probes and the watches.
        tokio::task::block_in_place(|| self.sync_local(&interfaces));

        let Some(objects) = objects else {
            return; // the source has not synced yet
        };
        let tunnel_ifindex = interfaces
            .iter()
            .find(|i| i.name == self.cfg.attach.tunnel_device)
            .map_or(0, |i| i.ifindex);
        let local = LocalNode {
            name: self.cfg.node_name.clone(),
            interfaces,
            default_route_ifindex: default_route,
            tunnel_ifindex,
            known_ip: self.known_node_ip,
        };
        let inputs = SyncInputs {
            objects: objects.clone(),
            local,
            local_pods: self.local_pods.clone(),
        };
        if let Some(mut last) = self.last.take() {
            if last.inputs == inputs {
                last.age += 1;
                if last.failed || last.age >= FULL_SYNC_EVERY {
                    // Nothing changed: no need to resolve again, only to
                    // retry the sync or repair the maps. Blocking syscalls,
                    // off the workers.
                    last.age = 0;
                    last.failed =
                        !tokio::task::block_in_place(|| self.sync(&last.resolved, started));
                }
                self.last = Some(last);
                return;
            }
        }
        // Resolution is CPU-heavy on a large cluster and the map writes are
        // blocking syscalls: keep both off the async workers that serve the
        // probes and the watches.
        tokio::task::block_in_place(|| {
            let resolved = self.resolve(&inputs);
            let failed = !self.sync(&resolved, started);
            self.last = Some(Last {
                inputs,
                resolved,
                age: 0,
                failed,
            });
        });
    }

    /// Resolve `inputs` for this node and fit the result to the maps,
    /// reporting what is wrong with the input and what does not fit.
    fn resolve(&mut self, inputs: &SyncInputs) -> Resolved {
        let local = &inputs.local;
        // A CiliumNode missing from one snapshot (recreated, or a partial
        // view) keeps the IP known before: resolution sees `known_ip`.
        // Narrowed as it is built: on a large cluster most entries belong
        // to other nodes and are never held.
        let mut desired =
            resolve::resolve_for_node(&inputs.objects, local, inputs.local_pods.as_ref());
        self.endpoints_without_identity = desired.endpoints_without_identity;
        if desired.config.node_ip.is_unspecified() {
            // Never known: a wrong --node-name, or a node not registered
            // yet. Not ready, with the reason, until it appears.
            self.health
                .set_node_unknown(Some(desired.node_problem().map_or_else(
                    || "this node's IP is unknown".to_string(),
                    |p| p.message.clone(),
                )));
        } else {
            self.health.set_node_unknown(None);
            self.known_node_ip = Some(desired.config.node_ip);
        }
        if let Some(local_pods) = &inputs.local_pods {
            resolve::retain_node_local(&mut desired, local_pods);
        }
        // What fits the maps, in the order that must win when not all does.
        let (policies, policy_fit) = sync::fit_policies(
            &desired.policies,
            inputs.local_pods.as_ref(),
            self.maps.policy_capacity() as usize,
        );
        let policies = match policies {
            std::borrow::Cow::Borrowed(_) => None,
            std::borrow::Cow::Owned(fitted) => Some(fitted),
        };
        let policies = policies.as_ref().unwrap_or(&desired.policies);
        let here: BTreeSet<u32> = policies.values().map(|v| v.policy_id).collect();
        let (names, names_fit) = sync::fit_names(
            &desired.policy_ids,
            &here,
            self.maps.policy_names_capacity() as usize,
        );
        let mut problems = desired.problems.clone();
        problems.extend(shortfall(POLICY_MAP, &policy_fit));
        problems.extend(shortfall(POLICY_NAMES_MAP, &names_fit));
        problems.sort();
        self.report_problems(&problems);
        self.health.set_shortfall(policy_fit.short().then(|| {
            format!(
                "{} of the {} policy entries this node needs do not fit \
                 {POLICY_MAP} (capacity {})",
                policy_fit.left_out, policy_fit.needed, policy_fit.capacity
            )
        }));
        self.metrics.observe_fit(POLICY_MAP, &policy_fit);
        self.metrics.observe_fit(POLICY_NAMES_MAP, &names_fit);
        if policy_fit.short() {
            desired.policies = policies.clone();
        }
        self.metrics.observe(&desired);
        Resolved { desired, names }
    }

    /// Bring the maps to `resolved`. Returns whether the policy maps were
    /// synced. Blocking: call it from `block_in_place`.
    fn sync(&mut self, resolved: &Resolved, started: Instant) -> bool {
        let Resolved { desired, names } = resolved;
        let policies = &desired.policies;
        let synced = sync::apply(&self.maps, desired);
        // The names only serve the CLI: a failure there is not a failed sync.
        if let Err(e) = sync::apply_names(&self.maps, names) {
            tracing::warn!(error = %e, "recording policy names for the CLI");
        }
        // Counters of policies that are gone would fill the map for good.
        let live: BTreeSet<u32> = desired.policy_ids.values().copied().collect();
        match self.maps.counters_retain_policies(&live) {
            Ok(0) => {}
            Ok(n) => tracing::info!(entries = n, "counters of removed policies dropped"),
            Err(e) => tracing::warn!(error = %e, "dropping counters of removed policies"),
        }
        self.metrics
            .sync_duration
            .observe(started.elapsed().as_secs_f64());
        match synced {
            Ok(s) => {
                if !s.is_noop() {
                    tracing::info!(
                        written = s.written,
                        removed = s.removed,
                        entries = policies.len(),
                        elapsed_us = started.elapsed().as_micros() as u64,
                        "policy maps synced"
                    );
                }
                if self.sync_error.last.is_some() {
                    tracing::info!("policy maps synced again");
                }
                self.sync_error.changed(None);
                self.record_sync();
                if !self.synced_once {
                    self.synced_once = true;
                    self.health.set_synced(true);
                    tracing::info!(
                        policies = desired.policy_ids.len(),
                        entries = policies.len(),
                        nodes = desired.nodes.len(),
                        gateway_for = ?desired.local_gateway_for.keys().collect::<Vec<_>>(),
                        "first sync done"
                    );
                }
            }
            Err(e) => {
                self.metrics.sync_errors.inc();
                // Retried every pass: logged when the error is new.
                if self.sync_error.changed(Some(e.to_string())) {
                    tracing::error!(error = %e, "syncing policy maps; retrying every pass");
                }
                return false;
            }
        }
        true
    }

    /// The time of this sync, for the metrics and for the CLI's `status`.
    fn record_sync(&mut self) {
        self.syncs += 1;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        self.metrics.last_sync.set(now.as_secs_f64());
        let status = Status {
            node_name: self.cfg.node_name.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            last_sync_unix_ns: u64::try_from(now.as_nanos()).unwrap_or(u64::MAX),
            syncs: self.syncs,
        };
        if let Err(e) = self.maps.status_set(&status) {
            tracing::warn!(error = %e, "recording the sync in mcast_egw_status");
        }
    }

    /// Attach to this node's devices and mirror Cilium's endpoints and
    /// groups.
    fn sync_local(&mut self, interfaces: &[resolve::Interface]) {
        // Cilium's endpoints first: they name the health endpoint's veth,
        // which looks like a pod's but must not get our program.
        let cilium_globals = Paths::new(&self.cfg.cilium_bpffs).globals();
        let read = cilium_maps::read_lxc(&cilium_globals);
        if let Ok(r) = &read {
            self.health_ifindexes = r.health_ifindexes.iter().copied().collect();
        }
        let pod_devices: Vec<resolve::Interface> = interfaces
            .iter()
            .filter(|i| {
                i.name != cilium_maps::HEALTH_DEVICE && !self.health_ifindexes.contains(&i.ifindex)
            })
            .cloned()
            .collect();

        let links: AttachState = self.attach.reconcile(self.dp, &pod_devices);
        self.health.set_links_complete(links.complete());
        self.metrics.attached_links.set(links.attached.len() as i64);
        self.metrics.expected_links.set(links.expected.len() as i64);
        // What the missing link means, beside the attach error itself.
        let tunnel_egress = (self.cfg.attach.tunnel_device.clone(), Program::ToOverlay);
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

        match read {
            Ok(read) => {
                self.endpoints_error.changed(None);
                let current: std::collections::BTreeMap<_, _> = self
                    .maps
                    .endpoints()
                    .unwrap_or_default()
                    .into_iter()
                    .collect();
                let eps = self.keep_live(read.pods, &current, &pod_devices);
                self.local_pods = Some(eps.keys().copied().collect());
                match sync::apply_endpoints(&self.maps, &current, &eps) {
                    Ok(s) if !s.is_noop() => tracing::info!(
                        written = s.written,
                        removed = s.removed,
                        endpoints = eps.len(),
                        "endpoints synced"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "syncing endpoints"),
                }
            }
            Err(e) => {
                if self.endpoints_error.changed(Some(e.to_string())) {
                    tracing::error!(error = %e, "reading Cilium's endpoint map");
                }
            }
        }
        match cilium_maps::read_mcast_groups(&cilium_globals) {
            Ok(groups) => {
                self.groups_error.changed(None);
                if let Err(e) = sync::apply_cilium_groups(&self.maps, &groups) {
                    tracing::error!(error = %e, "syncing Cilium's multicast groups");
                }
            }
            Err(e) => {
                if self.groups_error.changed(Some(e.to_string())) {
                    tracing::error!(error = %e, "reading Cilium's multicast groups");
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
        eps: Vec<(std::net::Ipv4Addr, Endpoint)>,
        current: &std::collections::BTreeMap<std::net::Ipv4Addr, Endpoint>,
        devices: &[resolve::Interface],
    ) -> std::collections::BTreeMap<std::net::Ipv4Addr, Endpoint> {
        let mut out: std::collections::BTreeMap<_, _> = eps.into_iter().collect();
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

    async fn local_devices(
        &self,
    ) -> Result<(Vec<resolve::Interface>, Option<u32>), node::NodeError> {
        let interfaces = node::interfaces(&self.netlink).await?;
        let default_route = node::default_route_ifindex(&self.netlink).await?;
        Ok((interfaces, default_route))
    }

    /// One log line per problem when it appears, and one when it is gone.
    /// The endpoints' finding carries a count: a new count is one new
    /// line, not also a "resolved" line for the old one.
    fn report_problems(&mut self, problems: &[Problem]) {
        let now: BTreeSet<Problem> = problems.iter().cloned().collect();
        for p in now.difference(&self.problems) {
            let (subject, problem) = (&p.subject, &p.message);
            match (&p.subject, p.severity) {
                (Subject::Node(_), Severity::Invalid) => {
                    tracing::error!(%subject, %problem, "this node's CiliumNode is missing")
                }
                (Subject::Node(_), Severity::Warning) => {
                    tracing::warn!(%subject, %problem, "this node's CiliumNode is missing")
                }
                (Subject::Map(map), Severity::Invalid) => {
                    tracing::error!(%map, %problem, "map too small for this node")
                }
                (Subject::Map(map), Severity::Warning) => {
                    tracing::warn!(%map, %problem, "map too small for this node")
                }
                (Subject::Policy(policy), Severity::Invalid) => {
                    tracing::error!(%policy, %problem, "invalid policy")
                }
                (Subject::Policy(policy), Severity::Warning) => {
                    tracing::warn!(%policy, %problem, "policy warning")
                }
                (Subject::Endpoints, Severity::Invalid) => {
                    tracing::error!(%problem, "invalid endpoints skipped")
                }
                (Subject::Endpoints, Severity::Warning) => {
                    tracing::warn!(%problem, "endpoints skipped")
                }
            }
        }
        for p in self.problems.difference(&now) {
            let superseded = !matches!(p.subject, Subject::Policy(_))
                && now.iter().any(|q| q.subject == p.subject);
            if !superseded {
                tracing::info!(subject = %p.subject, problem = %p.message, "resolved");
            }
        }
        self.problems = now;
    }

    /// Pin the report for `status` when it changed.
    fn publish_report(&mut self) {
        let mut report = Report::new(
            self.health.not_ready(),
            &self.problems,
            self.endpoints_without_identity,
        );
        if self.report.as_ref().is_some_and(|r| r.same_as(&report)) {
            return;
        }
        if self.report_pin.is_none() {
            // Opening or creating a pinned map: blocking syscalls.
            match tokio::task::block_in_place(|| ReportPin::open_or_create(self.dp.paths())) {
                Ok(pin) => self.report_pin = Some(pin),
                Err(e) => {
                    if self.report_error.changed(Some(e.to_string())) {
                        tracing::warn!(error = %e, "pinning the report for `status`");
                    }
                    return;
                }
            }
        }
        let Some(pin) = &self.report_pin else {
            return;
        };
        report.since_unix_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        // A map update: a blocking syscall, off the async workers.
        match tokio::task::block_in_place(|| pin.write(&report)) {
            Ok(()) => {
                self.report_error.changed(None);
                self.report = Some(report);
            }
            Err(e) => {
                if self.report_error.changed(Some(e.to_string())) {
                    tracing::warn!(error = %e, "writing the report for `status`");
                }
            }
        }
    }
}

/// The finding about a map that cannot hold what this node needs, if it
/// cannot: needed vs capacity, what is left out, and the flag to raise.
fn shortfall(map: &str, fit: &sync::Fit) -> Option<Problem> {
    if !fit.short() {
        return None;
    }
    let (severity, what, flag) = if map == POLICY_MAP {
        (
            Severity::Invalid,
            format!(
                "{} entries of {} pods are not written, {} of them this node's own pods \
                 (this node's pods are written first, then those it serves as a gateway; \
                 a pod left out has no multicast egress)",
                fit.left_out, fit.pods_left_out, fit.own_pods_left_out
            ),
            "--policy-map-entries",
        )
    } else {
        (
            Severity::Warning,
            format!(
                "{} policy names are not recorded (the CLI shows their counters by id)",
                fit.left_out
            ),
            "--policy-names-entries",
        )
    };
    Some(Problem {
        subject: Subject::Map(map.to_string()),
        severity,
        message: format!(
            "{} entries needed, capacity {}: {what}; raise {flag} (a new capacity is a new \
             map layout: `uninstall`, then start with it)",
            fit.needed, fit.capacity
        ),
    })
}

/// Run until `shutdown` turns true.
pub async fn run(cfg: DaemonConfig, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let mut storage = DatapathStorage::default();
    let dp = Datapath::load_with(&mut storage, Paths::new(&cfg.bpffs_root), &cfg.capacities)
        .context("loading the datapath")?;
    let maps = dp.maps().context("opening the pinned maps")?;
    let netlink = node::connect().context("netlink")?;
    node::report_netkit(&netlink, &cfg.attach.endpoint_devices).await;
    let mut changes = node::changes().context("netlink notifications")?;

    let stats = Arc::new(SourceStats::default());
    let metrics = Arc::new(
        Metrics::new(dp.maps().context("opening the pinned maps")?, stats.clone())
            .context("registering metrics")?,
    );
    let health = Arc::new(Health::default());
    if let Some(addr) = cfg.metrics_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
        tokio::spawn(health::serve(
            listener,
            health.clone(),
            metrics.clone(),
            shutdown.clone(),
        ));
    }

    let (tx, mut objects_rx) = watch::channel::<Option<Arc<Objects>>>(None);
    let mut source_task = tokio::spawn(source::run(
        cfg.source.clone(),
        tx,
        stats.clone(),
        shutdown.clone(),
    ));

    let mut ctl = Controller {
        cfg: &cfg,
        dp: &dp,
        maps,
        netlink,
        attach: AttachManager::new(cfg.attach.clone()),
        health,
        metrics,
        syncs: 0,
        problems: BTreeSet::new(),
        local_pods: None,
        health_ifindexes: BTreeSet::new(),
        kept_absent: Once::default(),
        known_node_ip: None,
        endpoints_without_identity: 0,
        report_pin: None,
        report: None,
        report_error: Once::default(),
        endpoints_error: Once::default(),
        groups_error: Once::default(),
        node_error: Once::default(),
        sync_error: Once::default(),
        tunnel_egress_missing: Once::default(),
        synced_once: false,
        last: None,
    };
    tracing::info!(node = %cfg.node_name, "controller started");

    let mut tick = tokio::time::interval(cfg.resync_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let objects = objects_rx.borrow_and_update().clone();
        ctl.pass(objects.as_ref()).await;
        ctl.publish_report();
        ctl.health.mark_pass();

        tokio::select! {
            _ = tick.tick() => {}
            changed = objects_rx.changed() => {
                if changed.is_err() {
                    // The source task ended: report why, and stop.
                    return match (&mut source_task).await {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(e)) => Err(e).context("source of Cilium objects"),
                        Err(e) => Err(anyhow::anyhow!("source task: {e}")),
                    };
                }
            }
            Some(()) = changes.next() => {
                // Devices change in bursts (a pod's veth: link, addresses,
                // routes); let the burst settle, then one pass.
                tokio::time::sleep(Duration::from_millis(50)).await;
                while let Some(Some(())) = changes.next().now_or_never() {}
            }
            _ = shutdown.changed() => break,
        }
    }
    tracing::info!("stopping; the datapath stays attached and pinned");
    drop(ctl);
    let _ = tokio::time::timeout(Duration::from_secs(2), source_task).await;
    Ok(())
}
