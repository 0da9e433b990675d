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
//! policy that names a single group): label sets are bounded by the
//! policies, never by traffic.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use ipnetwork::Ipv4Network;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use crate::datapath::maps::{
    Counter, DropCount, DropReason, Gateway, Maps, Role, ENDPOINTS_MAP, NODES_MAP, POLICY_MAP,
    POLICY_NAMES_MAP,
};
use crate::datapath::DatapathError;
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
    fn counters(&self) -> crate::datapath::Result<Vec<Counter>>;
    /// Every role and reason, zeros included.
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
    /// Destination prefixes per policy id, most specific first.
    prefixes: BTreeMap<u32, Vec<Ipv4Network>>,
    /// Egress IP per policy id, where this node is the gateway.
    egress: BTreeMap<u32, Ipv4Addr>,
}

impl View {
    fn group_label(&self, policy_id: u32, group: Ipv4Addr) -> String {
        self.prefixes
            .get(&policy_id)
            .and_then(|ps| ps.iter().find(|p| p.contains(group)))
            .map_or_else(|| "other".to_owned(), |p| p.to_string())
    }
}

/// (policy id, group, role) -> (group label, egress_ip label).
type StickyLabels = BTreeMap<(u32, Ipv4Addr, Role), (String, String)>;

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace(NS)
}

/// `packets_total` and `bytes_total`, from `mcast_egw_counters`, labelled
/// by the last resolution.
struct Replication {
    reader: Arc<dyn MapReader>,
    view: Arc<RwLock<View>>,
    failure: Arc<Failure>,
    /// The labels each counter got when first seen: a counter's history
    /// never moves to another series (which Prometheus would read as a
    /// reset) when a more specific prefix or another egress IP appears.
    /// Held for a whole collect: the vectors are reset and refilled.
    sticky: Mutex<StickyLabels>,
    packets: IntCounterVec,
    bytes: IntCounterVec,
}

impl Replication {
    fn new(
        reader: Arc<dyn MapReader>,
        view: Arc<RwLock<View>>,
        failure: Arc<Failure>,
    ) -> prometheus::Result<Replication> {
        let labels = &["policy", "group", "role", "egress_ip"];
        Ok(Replication {
            reader,
            view,
            failure,
            sticky: Mutex::new(BTreeMap::new()),
            packets: IntCounterVec::new(
                opts(
                    "packets_total",
                    "Packets replicated: role=origin sent towards a gateway, role=gateway emitted on an uplink",
                ),
                labels,
            )?,
            bytes: IntCounterVec::new(
                opts("bytes_total", "Bytes replicated (Ethernet header included)"),
                labels,
            )?,
        })
    }
}

impl Collector for Replication {
    fn desc(&self) -> Vec<&Desc> {
        self.packets
            .desc()
            .into_iter()
            .chain(self.bytes.desc())
            .collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut sticky = lock(&self.sticky);
        let counters = match self.reader.counters() {
            Ok(c) => c,
            Err(e) => {
                self.failure.record("the replication counters", e);
                return Vec::new();
            }
        };
        let view = self.view.read().unwrap_or_else(PoisonError::into_inner);
        let present: BTreeSet<(u32, Ipv4Addr, Role)> = counters
            .iter()
            .map(|c| (c.policy_id, c.group, c.role))
            .collect();
        sticky.retain(|k, _| present.contains(k));
        let mut rows: BTreeMap<(String, String, Role, String), (u64, u64)> = BTreeMap::new();
        for c in counters {
            // Counters of policies that no longer exist are not exported.
            let Some(name) = view.names.get(&c.policy_id) else {
                continue;
            };
            let (group, egress) = sticky
                .entry((c.policy_id, c.group, c.role))
                .or_insert_with(|| {
                    let egress = match c.role {
                        Role::Gateway => view
                            .egress
                            .get(&c.policy_id)
                            .map(|ip| ip.to_string())
                            .unwrap_or_default(),
                        Role::Origin => String::new(),
                    };
                    (view.group_label(c.policy_id, c.group), egress)
                })
                .clone();
            let row = rows
                .entry((name.clone(), group, c.role, egress))
                .or_default();
            row.0 += c.packets;
            row.1 += c.bytes;
        }
        drop(view);
        self.packets.reset();
        self.bytes.reset();
        for ((policy, group, role, egress), (p, b)) in &rows {
            let l = [
                policy.as_str(),
                group.as_str(),
                role.label(),
                egress.as_str(),
            ];
            self.packets.with_label_values(&l).inc_by(*p);
            self.bytes.with_label_values(&l).inc_by(*b);
        }
        let mut out = self.packets.collect();
        out.extend(self.bytes.collect());
        out
    }
}

/// `drops_total` and `drop_bytes_total` for every role and every reason
/// of the generated enum, and `monitor_events_suppressed_total`.
struct Drops {
    reader: Arc<dyn MapReader>,
    failure: Arc<Failure>,
    /// One collect at a time: the metrics are reset and refilled.
    filling: Mutex<()>,
    packets: IntCounterVec,
    bytes: IntCounterVec,
    suppressed: IntCounter,
}

impl Drops {
    fn new(reader: Arc<dyn MapReader>, failure: Arc<Failure>) -> prometheus::Result<Drops> {
        let labels = &["reason", "role"];
        Ok(Drops {
            reader,
            failure,
            filling: Mutex::new(()),
            packets: IntCounterVec::new(
                opts("drops_total", "Packets the datapath dropped, by reason"),
                labels,
            )?,
            bytes: IntCounterVec::new(
                opts("drop_bytes_total", "Bytes the datapath dropped, by reason"),
                labels,
            )?,
            suppressed: IntCounter::with_opts(opts(
                "monitor_events_suppressed_total",
                "Drop events the per-CPU rate limit kept from the monitor",
            ))?,
        })
    }
}

impl Collector for Drops {
    fn desc(&self) -> Vec<&Desc> {
        self.packets
            .desc()
            .into_iter()
            .chain(self.bytes.desc())
            .chain(self.suppressed.desc())
            .collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let _one = lock(&self.filling);
        let read = self
            .reader
            .drops()
            .map_err(|e| ("the drop counters", e))
            .and_then(|d| {
                let s = self
                    .reader
                    .events_suppressed()
                    .map_err(|e| ("the monitor's rate limit", e))?;
                Ok((d, s))
            });
        let (counts, suppressed) = match read {
            Ok(r) => r,
            Err((what, e)) => {
                self.failure.record(what, e);
                return Vec::new();
            }
        };
        self.packets.reset();
        self.bytes.reset();
        // A series for every reason before the first drop, so that an
        // alert on its rate works from the start.
        for role in Role::ALL {
            for reason in DropReason::all() {
                let l = [reason.label(), role.label()];
                self.packets.with_label_values(&l);
                self.bytes.with_label_values(&l);
            }
        }
        for d in counts {
            let l = [d.reason.label(), d.role.label()];
            self.packets.with_label_values(&l).inc_by(d.packets);
            self.bytes.with_label_values(&l).inc_by(d.bytes);
        }
        self.suppressed.reset();
        self.suppressed.inc_by(suppressed);
        let mut out = self.packets.collect();
        out.extend(self.bytes.collect());
        out.extend(self.suppressed.collect());
        out
    }
}

/// How full the capacity-bound maps are: `map_entries`, `map_capacity`,
/// and `policy_entries`, `endpoints`, `nodes` on their own.
struct MapFill {
    reader: Arc<dyn MapReader>,
    failure: Arc<Failure>,
    /// One collect at a time: the metrics are reset and refilled.
    filling: Mutex<()>,
    entries: IntGaugeVec,
    capacity: IntGaugeVec,
    policy_entries: IntGauge,
    endpoints: IntGauge,
    nodes: IntGauge,
}

impl MapFill {
    fn new(reader: Arc<dyn MapReader>, failure: Arc<Failure>) -> prometheus::Result<MapFill> {
        Ok(MapFill {
            reader,
            failure,
            filling: Mutex::new(()),
            entries: IntGaugeVec::new(opts("map_entries", "Entries in each pinned map"), &["map"])?,
            capacity: IntGaugeVec::new(
                opts("map_capacity", "Capacity of each pinned map"),
                &["map"],
            )?,
            policy_entries: IntGauge::with_opts(opts(
                "policy_entries",
                "Entries in the policy map on this node",
            ))?,
            endpoints: IntGauge::with_opts(opts("endpoints", "Endpoints of this node"))?,
            nodes: IntGauge::with_opts(opts("nodes", "Cluster nodes known"))?,
        })
    }
}

impl Collector for MapFill {
    fn desc(&self) -> Vec<&Desc> {
        self.entries
            .desc()
            .into_iter()
            .chain(self.capacity.desc())
            .chain(self.policy_entries.desc())
            .chain(self.endpoints.desc())
            .chain(self.nodes.desc())
            .collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let _one = lock(&self.filling);
        let levels = match self.reader.fill_levels() {
            Ok(l) => l,
            Err(e) => {
                self.failure.record("the maps' fill levels", e);
                return Vec::new();
            }
        };
        self.entries.reset();
        self.capacity.reset();
        for g in [&self.policy_entries, &self.endpoints, &self.nodes] {
            g.set(0);
        }
        for (map, n, cap) in levels {
            let n = i64::try_from(n).unwrap_or(i64::MAX);
            self.entries.with_label_values(&[map]).set(n);
            self.capacity.with_label_values(&[map]).set(i64::from(cap));
            match map {
                POLICY_MAP => self.policy_entries.set(n),
                ENDPOINTS_MAP => self.endpoints.set(n),
                NODES_MAP => self.nodes.set(n),
                _ => {}
            }
        }
        let mut out = self.entries.collect();
        out.extend(self.capacity.collect());
        out.extend(self.policy_entries.collect());
        out.extend(self.endpoints.collect());
        out.extend(self.nodes.collect());
        out
    }
}

/// `source_events_total`, from the sources' own counters.
struct SourceEvents {
    source: Arc<SourceStats>,
    /// One collect at a time: the vector is reset and refilled.
    filling: Mutex<()>,
    events: IntCounterVec,
}

impl SourceEvents {
    fn new(source: Arc<SourceStats>) -> prometheus::Result<SourceEvents> {
        Ok(SourceEvents {
            source,
            filling: Mutex::new(()),
            events: IntCounterVec::new(
                opts(
                    "source_events_total",
                    "Objects added, changed or removed, by source and kind",
                ),
                &["source", "kind"],
            )?,
        })
    }
}

impl Collector for SourceEvents {
    fn desc(&self) -> Vec<&Desc> {
        self.events.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let _one = lock(&self.filling);
        self.events.reset();
        for (source, kind, n) in self.source.event_counts() {
            self.events
                .with_label_values(&[source.as_str(), kind.kind_name()])
                .inc_by(n);
        }
        self.events.collect()
    }
}

/// The controller's metrics and the view that labels the datapath's.
pub struct Metrics {
    registry: Registry,
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
}

impl Metrics {
    pub fn new(maps: Maps, source: Arc<SourceStats>) -> prometheus::Result<Metrics> {
        Metrics::with_reader(Arc::new(maps), source)
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
                "1 for each policy whose gateway is this node, with the egress IP it uses",
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
        })
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
        let mut view = View::default();
        for (name, id) in &desired.policy_ids {
            view.names.insert(*id, name.clone());
            if let Some(ip) = desired.local_gateway_for.get(name) {
                view.egress.insert(*id, *ip);
            }
        }
        for (key, value) in &desired.policies {
            if value.gateway == Gateway::Excluded {
                continue;
            }
            let list = view.prefixes.entry(value.policy_id).or_default();
            if !list.contains(&key.destination) {
                list.push(key.destination);
            }
        }
        for list in view.prefixes.values_mut() {
            list.sort_by(|a, b| b.prefix().cmp(&a.prefix()).then(a.cmp(b)));
        }

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
        for (name, ip) in &desired.local_gateway_for {
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::datapath::maps::{Origin, PolicyKey, PolicyValue, COUNTERS_MAP};
    use crate::resolve::{Problem, Subject};

    /// A node's maps held in memory: nothing replicated or dropped until a
    /// test says so, and a read that fails on demand.
    #[derive(Default)]
    pub(crate) struct FakeMaps {
        pub(crate) counters: Mutex<Vec<Counter>>,
        pub(crate) fail: bool,
        /// The thread of the last read, and whether it was inside a tokio
        /// runtime: where a scrape reads the maps.
        pub(crate) read_on: Mutex<Option<(std::thread::ThreadId, bool)>>,
    }

    impl FakeMaps {
        fn check(&self) -> crate::datapath::Result<()> {
            if self.fail {
                return Err(DatapathError::Invalid {
                    what: "map read",
                    detail: "failing on purpose".into(),
                });
            }
            Ok(())
        }
    }

    impl MapReader for FakeMaps {
        fn counters(&self) -> crate::datapath::Result<Vec<Counter>> {
            *lock(&self.read_on) = Some((
                std::thread::current().id(),
                tokio::runtime::Handle::try_current().is_ok(),
            ));
            self.check()?;
            Ok(lock(&self.counters).clone())
        }

        // No rows at all, not even zeros: the collector has a series for
        // every reason on its own.
        fn drops(&self) -> crate::datapath::Result<Vec<DropCount>> {
            self.check()?;
            Ok(Vec::new())
        }

        fn events_suppressed(&self) -> crate::datapath::Result<u64> {
            self.check()?;
            Ok(0)
        }

        fn fill_levels(&self) -> crate::datapath::Result<Vec<(&'static str, usize, u32)>> {
            self.check()?;
            Ok(vec![
                (POLICY_MAP, 0, 16384),
                (ENDPOINTS_MAP, 0, 1024),
                (NODES_MAP, 0, 1024),
                (COUNTERS_MAP, 0, 65536),
            ])
        }
    }

    pub(crate) fn metrics(maps: FakeMaps) -> Metrics {
        Metrics::with_reader(Arc::new(maps), SourceStats::new()).expect("registering")
    }

    /// A family with a sample but no name: the registry keeps it, the text
    /// encoder refuses it.
    struct Nameless(IntGauge);

    impl Collector for Nameless {
        fn desc(&self) -> Vec<&Desc> {
            self.0.desc()
        }

        fn collect(&self) -> Vec<MetricFamily> {
            let mut families = self.0.collect();
            for f in &mut families {
                f.clear_name();
            }
            families
        }
    }

    /// Make every later scrape of `metrics` fail to encode.
    pub(crate) fn add_unencodable_family(metrics: &Metrics) {
        let gauge = IntGauge::new("nameless", "A family that loses its name").unwrap();
        metrics
            .registry
            .register(Box::new(Nameless(gauge)))
            .unwrap();
    }

    fn scrape(metrics: &Metrics) -> String {
        String::from_utf8(metrics.render().expect("rendering")).unwrap()
    }

    /// The families of a node that never carried a packet: all but the
    /// replication counters (no series before the first packet) and the
    /// per-policy gauges (no policy resolved).
    const QUIET_FAMILIES: &[&str] = &[
        "attached_links",
        "drop_bytes_total",
        "drops_total",
        "endpoints",
        "endpoints_without_identity",
        "expected_links",
        "last_sync_timestamp_seconds",
        "map_capacity",
        "map_entries",
        "map_entries_left_out",
        "map_entries_needed",
        "monitor_events_suppressed_total",
        "node_missing",
        "nodes",
        "policy_entries",
        "source_events_total",
        "sync_duration_seconds",
        "sync_errors_total",
    ];

    #[test]
    fn zero_samples_encode_every_family() {
        let metrics = metrics(FakeMaps::default());
        let families = metrics.registry.gather();
        let names: Vec<&str> = families.iter().map(|f| f.name()).collect();
        let want: Vec<String> = QUIET_FAMILIES.iter().map(|n| format!("{NS}_{n}")).collect();
        assert_eq!(names, want);

        let text = scrape(&metrics);
        for name in &want {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name}:\n{text}");
        }
        let reasons = DropReason::all().count();
        assert!(reasons > 0);
        for name in ["drops_total", "drop_bytes_total"] {
            let family = families
                .iter()
                .find(|f| f.name() == format!("{NS}_{name}"))
                .unwrap();
            assert_eq!(family.get_metric().len(), Role::ALL.len() * reasons);
            assert!(family
                .get_metric()
                .iter()
                .all(|m| m.get_counter().get_value() == 0.0));
            for role in Role::ALL {
                for reason in DropReason::all() {
                    let series = format!(
                        "{NS}_{name}{{reason=\"{}\",role=\"{}\"}} 0\n",
                        reason.label(),
                        role.label()
                    );
                    assert!(text.contains(&series), "{series}:\n{text}");
                }
            }
        }
    }

    fn key(destination: &str) -> PolicyKey {
        PolicyKey {
            source: Ipv4Addr::new(198, 51, 100, 11),
            destination: destination.parse().unwrap(),
        }
    }

    fn value(policy_id: u32) -> PolicyValue {
        PolicyValue {
            egress_ip: Ipv4Addr::new(203, 0, 113, 10),
            gateway: Gateway::Node(Ipv4Addr::new(192, 0, 2, 10)),
            egress_ifindex: 3,
            policy_id,
            origin: Origin::default(),
        }
    }

    fn gateway_of_cameras() -> Desired {
        let mut desired = Desired::default();
        desired.policy_ids.insert("cameras".into(), 1);
        desired.policies.insert(key("232.1.0.0/16"), value(1));
        desired
            .local_gateway_for
            .insert("cameras".into(), Ipv4Addr::new(203, 0, 113, 10));
        desired.problems.push(Problem::for_policy(
            "bad-prefix",
            Severity::Invalid,
            "not canonical".into(),
        ));
        desired
    }

    #[test]
    fn gateway_and_invalid_policy_follow_the_resolution() {
        let metrics = metrics(FakeMaps::default());
        metrics.observe(&gateway_of_cameras());
        let text = scrape(&metrics);
        assert!(
            text.contains(&format!(
                "{NS}_gateway{{egress_ip=\"203.0.113.10\",policy=\"cameras\"}} 1\n"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!("{NS}_invalid_policy{{policy=\"bad-prefix\"}} 1\n")),
            "{text}"
        );

        metrics.observe(&Desired::default());
        let text = scrape(&metrics);
        assert!(!text.contains(&format!("{NS}_gateway")), "{text}");
        assert!(!text.contains(&format!("{NS}_invalid_policy")), "{text}");
        assert!(text.contains(&format!("# TYPE {NS}_drops_total counter")));
    }

    #[test]
    fn skipped_endpoints_and_a_missing_node_are_counted_not_labelled() {
        let metrics = metrics(FakeMaps::default());
        let mut desired = Desired {
            endpoints_without_identity: 10_000,
            ..Desired::default()
        };
        desired.problems.push(Problem {
            subject: Subject::Node("node-x".into()),
            severity: Severity::Invalid,
            message: "no CiliumNode is named \"node-x\"".into(),
        });
        desired.problems.push(Problem {
            subject: Subject::Endpoints,
            severity: Severity::Warning,
            message: "10000 CiliumEndpoints without a security identity".into(),
        });
        metrics.observe(&desired);
        let text = scrape(&metrics);
        assert!(
            text.contains(&format!("{NS}_endpoints_without_identity 10000\n")),
            "{text}"
        );
        assert!(text.contains(&format!("{NS}_node_missing 1\n")), "{text}");
        // Neither is a policy, invalid or not.
        assert!(!text.contains(&format!("{NS}_invalid_policy")), "{text}");
        // One series each, however many endpoints.
        let lines = |name: &str| {
            text.lines()
                .filter(|l| l.starts_with(&format!("{NS}_{name}")))
                .count()
        };
        assert_eq!(lines("endpoints_without_identity"), 1, "{text}");
        assert_eq!(lines("node_missing"), 1, "{text}");

        metrics.observe(&Desired::default());
        let text = scrape(&metrics);
        assert!(
            text.contains(&format!("{NS}_endpoints_without_identity 0\n")),
            "{text}"
        );
        assert!(text.contains(&format!("{NS}_node_missing 0\n")), "{text}");
    }

    #[test]
    fn replication_counters_keep_the_labels_they_were_first_seen_with() {
        let maps = Arc::new(FakeMaps::default());
        let metrics = Metrics::with_reader(maps.clone(), SourceStats::new()).unwrap();
        let counter = Counter {
            policy_id: 1,
            group: Ipv4Addr::new(232, 1, 1, 1),
            role: Role::Gateway,
            packets: 10,
            bytes: 1000,
        };
        *lock(&maps.counters) = vec![counter];
        let mut desired = gateway_of_cameras();
        metrics.observe(&desired);
        let series = |group: &str| {
            format!(
                "{NS}_packets_total{{egress_ip=\"203.0.113.10\",group=\"{group}\",policy=\"cameras\",role=\"gateway\"}} 10\n"
            )
        };
        assert!(scrape(&metrics).contains(&series("232.1.0.0/16")));

        // A more specific prefix appears: the counter stays on its series.
        desired.policies.insert(key("232.1.1.1/32"), value(1));
        metrics.observe(&desired);
        let t = scrape(&metrics);
        assert!(t.contains(&series("232.1.0.0/16")), "{t}");
        assert!(!t.contains("232.1.1.1/32"), "{t}");

        // The counter gone from the map and back: it starts on the new one.
        lock(&maps.counters).clear();
        assert!(!scrape(&metrics).contains(&format!("{NS}_packets_total")));
        *lock(&maps.counters) = vec![counter];
        assert!(scrape(&metrics).contains(&series("232.1.1.1/32")));
    }

    #[test]
    fn a_failed_map_read_fails_the_whole_scrape() {
        let metrics = metrics(FakeMaps {
            fail: true,
            ..FakeMaps::default()
        });
        assert!(matches!(metrics.render(), Err(MetricsError::Read { .. })));
    }

    #[test]
    fn an_unencodable_family_fails_the_whole_scrape() {
        let metrics = metrics(FakeMaps::default());
        add_unencodable_family(&metrics);
        assert!(matches!(metrics.render(), Err(MetricsError::Encode(_))));
    }
}
