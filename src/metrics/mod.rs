//! Prometheus metrics, all prefixed `cilium_mcast_egress_`.
//!
//! Everything comes out of one [`Registry`]: the controller's own metrics,
//! and collectors that read the pinned per-CPU maps at scrape time, so the
//! replication counters and the drops keep rising across controller
//! restarts. The registry leaves out families without a sample (a label
//! vector nothing was recorded in, which the text format cannot carry);
//! drops get a series for every reason, zeros included, so that a node
//! that never carried a packet shows them too.
//!
//! The replication counters' `group` label is the policy's destination
//! prefix that covers the group (`232.1.0.0/16`, or `232.1.1.1/32` for a
//! policy that names a single group; `ff3e::8000:0/112` for an IPv6 one):
//! label sets are bounded by the policies, never by traffic. Replication
//! counters and drops carry a `family` label (`ipv4`, `ipv6`): the two
//! instances of the counter and drop maps.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, RwLock};

use ipnetwork::IpNetwork;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use crate::datapath::maps::{
    Counter, DropCount, DropReason, Family, Gateway, Maps, Role, ENDPOINTS_MAP, NODES_MAP,
    POLICY_MAP, POLICY_NAMES_MAP, POLICY_V6_MAP,
};
use crate::datapath::DatapathError;
use crate::health::Component;
use crate::resolve::{Desired, Severity, Subject};
use crate::source::SourceStats;
use crate::sync::Fit;

const NS: &str = "cilium_mcast_egress";

/// Why a scrape gets no metrics: half of them would read as series gone.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("reading {what}: {source}")]
    Read {
        what: &'static str,
        source: DatapathError,
    },
    #[error("encoding the metrics: {0}")]
    Encode(#[source] prometheus::Error),
}

/// What the collectors read at scrape time: the pinned maps in the
/// daemon, numbers held in memory in tests.
pub(crate) trait MapReader: Send + Sync {
    /// Whether there is anything to read: the daemon serves its metrics
    /// before the datapath is loaded, and the families read from the maps
    /// are left out of a scrape until it is (`degraded` says why).
    fn loaded(&self) -> bool {
        true
    }
    /// Both families'.
    fn counters(&self) -> crate::datapath::Result<Vec<Counter>>;
    /// Every family, role and reason, zeros included.
    fn drops(&self) -> crate::datapath::Result<Vec<DropCount>>;
    fn events_suppressed(&self) -> crate::datapath::Result<u64>;
    /// (map name, entries, capacity).
    fn fill_levels(&self) -> crate::datapath::Result<Vec<(&'static str, usize, u32)>>;
}

impl MapReader for Maps {
    fn counters(&self) -> crate::datapath::Result<Vec<Counter>> {
        Maps::counters(self)
    }

    fn drops(&self) -> crate::datapath::Result<Vec<DropCount>> {
        Maps::drops(self)
    }

    fn events_suppressed(&self) -> crate::datapath::Result<u64> {
        Maps::events_suppressed(self)
    }

    fn fill_levels(&self) -> crate::datapath::Result<Vec<(&'static str, usize, u32)>> {
        Maps::fill_levels(self)
    }
}

/// The daemon's pinned maps, handed over once the datapath is loaded.
#[derive(Default)]
struct PinnedMaps(OnceLock<Maps>);

impl PinnedMaps {
    fn get(&self) -> crate::datapath::Result<&Maps> {
        self.0.get().ok_or_else(|| DatapathError::Invalid {
            what: "maps",
            detail: "the datapath is not loaded yet".into(),
        })
    }
}

impl MapReader for PinnedMaps {
    fn loaded(&self) -> bool {
        self.0.get().is_some()
    }

    fn counters(&self) -> crate::datapath::Result<Vec<Counter>> {
        self.get()?.counters()
    }

    fn drops(&self) -> crate::datapath::Result<Vec<DropCount>> {
        self.get()?.drops()
    }

    fn events_suppressed(&self) -> crate::datapath::Result<u64> {
        self.get()?.events_suppressed()
    }

    fn fill_levels(&self) -> crate::datapath::Result<Vec<(&'static str, usize, u32)>> {
        self.get()?.fill_levels()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The first map read that failed during a gather. A collector cannot
/// return an error; it records it here and yields nothing, and the scrape
/// fails as a whole.
#[derive(Debug, Default)]
struct Failure(Mutex<Option<MetricsError>>);

impl Failure {
    fn record(&self, what: &'static str, source: DatapathError) {
        lock(&self.0).get_or_insert(MetricsError::Read { what, source });
    }

    fn take(&self) -> Option<MetricsError> {
        lock(&self.0).take()
    }
}

/// What labels the datapath's numbers: from the last resolution.
#[derive(Debug, Default, Clone)]
struct View {
    names: BTreeMap<u32, String>,
    /// Destination prefixes of both families per policy id, most specific
    /// first.
    prefixes: BTreeMap<u32, Vec<IpNetwork>>,
    /// Egress IP per policy id and family, where this node is the gateway.
    egress: BTreeMap<(u32, Family), IpAddr>,
}

impl View {
    /// The labels of a resolution: policy names, the destination prefixes
    /// of the entries (not the exclusions), the egress IPs of the policies
    /// this node is the gateway of.
    fn of(desired: &Desired) -> View {
        let mut view = View::default();
        for (name, id) in &desired.policy_ids {
            view.names.insert(*id, name.clone());
            if let Some(ip) = desired.local_gateway_for.get(name) {
                view.egress.insert((*id, Family::Ipv4), (*ip).into());
            }
            if let Some(ip) = desired.local_gateway_for_v6.get(name) {
                view.egress.insert((*id, Family::Ipv6), (*ip).into());
            }
        }
        for (key, value) in &desired.policies {
            view.add_prefix(value.policy_id, key.destination.into(), value.gateway);
        }
        for (key, value) in &desired.policies_v6 {
            view.add_prefix(value.policy_id, key.destination.into(), value.gateway);
        }
        view.finish();
        view
    }

    fn add_prefix(&mut self, policy_id: u32, destination: IpNetwork, gateway: Gateway) {
        if gateway == Gateway::Excluded {
            return;
        }
        let list = self.prefixes.entry(policy_id).or_default();
        if !list.contains(&destination) {
            list.push(destination);
        }
    }

    /// Most specific prefix first: a group's label is the longest prefix
    /// of its policy that covers it.
    fn finish(&mut self) {
        for list in self.prefixes.values_mut() {
            list.sort_by(|a, b| b.prefix().cmp(&a.prefix()).then(a.cmp(b)));
        }
    }

    fn group_label(&self, policy_id: u32, group: IpAddr) -> String {
        self.prefixes
            .get(&policy_id)
            .and_then(|ps| ps.iter().find(|p| p.contains(group)))
            .map_or_else(|| "other".to_owned(), |p| p.to_string())
    }

    /// The `egress_ip` label of a counter of `role`: the gateway's egress
    /// IP of the group's family, empty on the origin.
    fn egress_label(&self, policy_id: u32, family: Family, role: Role) -> String {
        match role {
            Role::Gateway => self
                .egress
                .get(&(policy_id, family))
                .map(|ip| ip.to_string())
                .unwrap_or_default(),
            Role::Origin => String::new(),
        }
    }
}

/// (policy id, group, role) -> (group label, egress_ip label).
type StickyLabels = BTreeMap<(u32, IpAddr, Role), (String, String)>;

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace(NS)
}

/// The controller's metrics and the view that labels the datapath's.
pub struct Metrics {
    registry: Registry,
    /// Where the collectors read the maps once the datapath is loaded;
    /// `None` when they read something else (tests).
    pinned: Option<Arc<PinnedMaps>>,
    view: Arc<RwLock<View>>,
    failure: Arc<Failure>,
    /// One scrape at a time: a failure recorded belongs to its own gather.
    scrape: Mutex<()>,
    pub sync_duration: Histogram,
    pub sync_errors: IntCounter,
    pub last_sync: Gauge,
    pub attached_links: IntGauge,
    pub expected_links: IntGauge,
    invalid: IntGaugeVec,
    gateway: IntGaugeVec,
    endpoints_without_identity: IntGauge,
    node_missing: IntGauge,
    entries_needed: IntGaugeVec,
    entries_left_out: IntGaugeVec,
    degraded: IntGaugeVec,
    retries: IntCounterVec,
}

impl Metrics {
    /// The daemon's metrics, served before its datapath is loaded: the
    /// families read from the pinned maps appear once [`Metrics::set_maps`]
    /// hands them over.
    pub fn new(source: Arc<SourceStats>) -> prometheus::Result<Metrics> {
        let pinned = Arc::new(PinnedMaps::default());
        let mut metrics = Metrics::with_reader(pinned.clone(), source)?;
        metrics.pinned = Some(pinned);
        Ok(metrics)
    }

    /// The pinned maps, once the datapath is loaded; a second call changes
    /// nothing (the first maps stay).
    pub fn set_maps(&self, maps: Maps) {
        if let Some(pinned) = &self.pinned {
            let _ = pinned.0.set(maps);
        }
    }

    pub(crate) fn with_reader(
        reader: Arc<dyn MapReader>,
        source: Arc<SourceStats>,
    ) -> prometheus::Result<Metrics> {
        let registry = Registry::new();
        let sync_duration = Histogram::with_opts(
            HistogramOpts::new(
                "sync_duration_seconds",
                "Time to resolve the cluster's objects and sync the maps",
            )
            .namespace(NS)
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            ]),
        )?;
        let sync_errors =
            IntCounter::with_opts(opts("sync_errors_total", "Syncs of the maps that failed"))?;
        let last_sync = Gauge::with_opts(opts(
            "last_sync_timestamp_seconds",
            "Unix time of the last successful sync",
        ))?;
        let attached_links = IntGauge::with_opts(opts(
            "attached_links",
            "tcx links this controller holds on endpoint and tunnel devices",
        ))?;
        let expected_links = IntGauge::with_opts(opts(
            "expected_links",
            "tcx links there should be: one per endpoint device, one on the tunnel device",
        ))?;
        let invalid = IntGaugeVec::new(
            opts(
                "invalid_policy",
                "1 for each policy that is invalid and skipped",
            ),
            &["policy"],
        )?;
        let gateway = IntGaugeVec::new(
            opts(
                "gateway",
                "1 for each policy whose gateway is this node and each egress IP it uses (one per family)",
            ),
            &["policy", "egress_ip"],
        )?;
        // Counts, not a series per endpoint: bounded on any cluster.
        let endpoints_without_identity = IntGauge::with_opts(opts(
            "endpoints_without_identity",
            "CiliumEndpoints skipped because they have no security identity",
        ))?;
        let node_missing = IntGauge::with_opts(opts(
            "node_missing",
            "1 while no CiliumNode named --node-name with an IPv4 InternalIP is among the objects",
        ))?;
        // The maps whose capacity can fall short of what this node needs;
        // series from the start, so a shortfall is a value, not a new series.
        let entries_needed = IntGaugeVec::new(
            opts(
                "map_entries_needed",
                "Entries this node needs in each map sized at load (compare map_capacity)",
            ),
            &["map"],
        )?;
        let entries_left_out = IntGaugeVec::new(
            opts(
                "map_entries_left_out",
                "Entries needed that do not fit in each map sized at load, so are not written",
            ),
            &["map"],
        )?;
        for map in [POLICY_MAP, POLICY_NAMES_MAP] {
            entries_needed.with_label_values(&[map]).set(0);
            entries_left_out.with_label_values(&[map]).set(0);
        }
        // Series for every component from the start, at 0: a fault is a
        // value, not a new series.
        let degraded = IntGaugeVec::new(
            opts(
                "degraded",
                "1 while a part of the controller fails and is retried (http, datapath, netlink, source)",
            ),
            &["component"],
        )?;
        let retries = IntCounterVec::new(
            opts(
                "retries_total",
                "Failed attempts at a part of the controller, each retried after a backoff",
            ),
            &["component"],
        )?;
        for c in Component::ALL {
            degraded.with_label_values(&[c.label()]).set(0);
            retries.with_label_values(&[c.label()]);
        }
        registry.register(Box::new(sync_duration.clone()))?;
        registry.register(Box::new(sync_errors.clone()))?;
        registry.register(Box::new(entries_needed.clone()))?;
        registry.register(Box::new(entries_left_out.clone()))?;
        registry.register(Box::new(last_sync.clone()))?;
        registry.register(Box::new(attached_links.clone()))?;
        registry.register(Box::new(expected_links.clone()))?;
        registry.register(Box::new(invalid.clone()))?;
        registry.register(Box::new(gateway.clone()))?;
        registry.register(Box::new(endpoints_without_identity.clone()))?;
        registry.register(Box::new(node_missing.clone()))?;
        registry.register(Box::new(degraded.clone()))?;
        registry.register(Box::new(retries.clone()))?;

        let view = Arc::new(RwLock::new(View::default()));
        let failure = Arc::new(Failure::default());
        registry.register(Box::new(Replication::new(
            reader.clone(),
            view.clone(),
            failure.clone(),
        )?))?;
        registry.register(Box::new(Drops::new(reader.clone(), failure.clone())?))?;
        registry.register(Box::new(MapFill::new(reader, failure.clone())?))?;
        registry.register(Box::new(SourceEvents::new(source)?))?;
        Ok(Metrics {
            registry,
            pinned: None,
            view,
            failure,
            scrape: Mutex::new(()),
            sync_duration,
            sync_errors,
            last_sync,
            attached_links,
            expected_links,
            invalid,
            gateway,
            endpoints_without_identity,
            node_missing,
            entries_needed,
            entries_left_out,
            degraded,
            retries,
        })
    }

    /// `component` fails (and is retried), or works again.
    pub fn set_degraded(&self, component: Component, failing: bool) {
        self.degraded
            .with_label_values(&[component.label()])
            .set(i64::from(failing));
    }

    /// `attempts` more failed attempts at `component`.
    pub fn add_retries(&self, component: Component, attempts: u64) {
        self.retries
            .with_label_values(&[component.label()])
            .inc_by(attempts);
    }

    /// How the entries this node needs fit `map`.
    pub fn observe_fit(&self, map: &str, fit: &Fit) {
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.entries_needed
            .with_label_values(&[map])
            .set(count(fit.needed));
        self.entries_left_out
            .with_label_values(&[map])
            .set(count(fit.left_out));
    }

    /// Take the labels from a resolution.
    pub fn observe(&self, desired: &Desired) {
        let view = View::of(desired);
        self.invalid.reset();
        for p in &desired.problems {
            if let (Some(policy), Severity::Invalid) = (p.policy_name(), p.severity) {
                self.invalid.with_label_values(&[policy]).set(1);
            }
        }
        self.endpoints_without_identity
            .set(i64::try_from(desired.endpoints_without_identity).unwrap_or(i64::MAX));
        self.node_missing.set(i64::from(
            desired
                .problems
                .iter()
                .any(|p| matches!(p.subject, Subject::Node(_))),
        ));
        self.gateway.reset();
        let v4 = desired
            .local_gateway_for
            .iter()
            .map(|(n, ip)| (n, IpAddr::from(*ip)));
        let v6 = desired
            .local_gateway_for_v6
            .iter()
            .map(|(n, ip)| (n, IpAddr::from(*ip)));
        for (name, ip) in v4.chain(v6) {
            self.gateway
                .with_label_values(&[name.as_str(), &ip.to_string()])
                .set(1);
        }
        *self.view.write().unwrap_or_else(PoisonError::into_inner) = view;
    }

    /// The text exposition format of everything; an error rather than a
    /// part of it when a map cannot be read or a family cannot be encoded.
    pub fn render(&self) -> Result<Vec<u8>, MetricsError> {
        let _one = lock(&self.scrape);
        self.failure.take();
        let families = self.registry.gather();
        if let Some(e) = self.failure.take() {
            return Err(e);
        }
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&families, &mut out)
            .map_err(MetricsError::Encode)?;
        Ok(out)
    }
}

mod collectors;
#[cfg(test)]
pub(crate) mod tests;

use collectors::{Drops, MapFill, Replication, SourceEvents};
