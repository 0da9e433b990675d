//! Prometheus metrics, all prefixed `cilium_mcast_egress_`.
//!
//! Replication counters and drops are read from the pinned per-CPU maps at
//! scrape time, so they keep rising across controller restarts. Their
//! `group` label is the policy's destination prefix that covers the group
//! (`232.1.0.0/16`, or `232.1.1.1/32` for a policy that names a single
//! group): label sets are bounded by the policies, never by traffic.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, RwLock};

use ipnetwork::Ipv4Network;
use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use crate::datapath::maps::{Gateway, Maps, Role};
use crate::resolve::{Desired, Severity};
use crate::source::SourceStats;

const NS: &str = "cilium_mcast_egress";

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

/// The controller's metrics and the view that labels the datapath's.
pub struct Metrics {
    registry: Registry,
    view: RwLock<View>,
    /// The labels each counter got when first seen: a counter's history
    /// never moves to another series (which Prometheus would read as a
    /// reset) when a more specific prefix or another egress IP appears.
    sticky: std::sync::Mutex<StickyLabels>,
    maps: Maps,
    source: Arc<SourceStats>,
    pub sync_duration: Histogram,
    pub sync_errors: IntCounter,
    pub last_sync: Gauge,
    pub attached_links: IntGauge,
    pub expected_links: IntGauge,
    invalid: IntGaugeVec,
    gateway: IntGaugeVec,
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace(NS)
}

impl Metrics {
    pub fn new(maps: Maps, source: Arc<SourceStats>) -> prometheus::Result<Metrics> {
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
        registry.register(Box::new(sync_duration.clone()))?;
        registry.register(Box::new(sync_errors.clone()))?;
        registry.register(Box::new(last_sync.clone()))?;
        registry.register(Box::new(attached_links.clone()))?;
        registry.register(Box::new(expected_links.clone()))?;
        registry.register(Box::new(invalid.clone()))?;
        registry.register(Box::new(gateway.clone()))?;
        Ok(Metrics {
            registry,
            view: RwLock::new(View::default()),
            sticky: std::sync::Mutex::new(BTreeMap::new()),
            maps,
            source,
            sync_duration,
            sync_errors,
            last_sync,
            attached_links,
            expected_links,
            invalid,
            gateway,
        })
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
            if p.severity == Severity::Invalid {
                self.invalid.with_label_values(&[p.policy.as_str()]).set(1);
            }
        }
        self.gateway.reset();
        for (name, ip) in &desired.local_gateway_for {
            self.gateway
                .with_label_values(&[name.as_str(), &ip.to_string()])
                .set(1);
        }
        if let Ok(mut v) = self.view.write() {
            *v = view;
        }
    }

    /// The text exposition format of everything.
    pub fn render(&self) -> Vec<u8> {
        let mut families = self.registry.gather();
        match self.datapath_families() {
            Ok(f) => families.extend(f),
            Err(e) => tracing::warn!(error = %e, "reading the datapath's counters"),
        }
        families.extend(self.source_families());
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
            tracing::warn!(error = %e, "encoding metrics");
        }
        out
    }

    fn datapath_families(
        &self,
    ) -> Result<Vec<prometheus::proto::MetricFamily>, Box<dyn std::error::Error>> {
        let view = self.view.read().map(|v| v.clone()).unwrap_or_default();
        let labels = &["policy", "group", "role", "egress_ip"];
        let packets = IntCounterVec::new(
            opts(
                "packets_total",
                "Packets replicated: role=origin sent towards a gateway, role=gateway emitted on an uplink",
            ),
            labels,
        )?;
        let bytes = IntCounterVec::new(
            opts("bytes_total", "Bytes replicated (Ethernet header included)"),
            labels,
        )?;
        let mut rows: BTreeMap<(String, String, Role, String), (u64, u64)> = BTreeMap::new();
        let counters = self.maps.counters()?;
        let mut sticky = self
            .sticky
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let present: std::collections::BTreeSet<(u32, Ipv4Addr, Role)> = counters
            .iter()
            .map(|c| (c.policy_id, c.group, c.role))
            .collect();
        sticky.retain(|k, _| present.contains(k));
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
        drop(sticky);
        for ((policy, group, role, egress), (p, b)) in &rows {
            let l = [
                policy.as_str(),
                group.as_str(),
                role.label(),
                egress.as_str(),
            ];
            packets.with_label_values(&l).inc_by(*p);
            bytes.with_label_values(&l).inc_by(*b);
        }

        let drop_labels = &["reason", "role"];
        let drops = IntCounterVec::new(
            opts("drops_total", "Packets the datapath dropped, by reason"),
            drop_labels,
        )?;
        let drop_bytes = IntCounterVec::new(
            opts("drop_bytes_total", "Bytes the datapath dropped, by reason"),
            drop_labels,
        )?;
        for d in self.maps.drops()? {
            let l = [d.reason.label(), d.role.label()];
            drops.with_label_values(&l).inc_by(d.packets);
            drop_bytes.with_label_values(&l).inc_by(d.bytes);
        }

        let suppressed = IntCounter::with_opts(opts(
            "monitor_events_suppressed_total",
            "Drop events the per-CPU rate limit kept from the monitor",
        ))?;
        suppressed.inc_by(self.maps.events_suppressed()?);

        let entries =
            IntGaugeVec::new(opts("map_entries", "Entries in each pinned map"), &["map"])?;
        let capacity = IntGaugeVec::new(
            opts("map_capacity", "Capacity of each pinned map"),
            &["map"],
        )?;
        let policy_entries = IntGauge::with_opts(opts(
            "policy_entries",
            "Entries in the policy map on this node",
        ))?;
        let endpoints = IntGauge::with_opts(opts("endpoints", "Endpoints of this node"))?;
        let nodes = IntGauge::with_opts(opts("nodes", "Cluster nodes known"))?;
        for (map, n, cap) in self.maps.fill_levels()? {
            entries.with_label_values(&[map]).set(n as i64);
            capacity.with_label_values(&[map]).set(i64::from(cap));
            match map {
                crate::datapath::maps::POLICY_MAP => policy_entries.set(n as i64),
                crate::datapath::maps::ENDPOINTS_MAP => endpoints.set(n as i64),
                crate::datapath::maps::NODES_MAP => nodes.set(n as i64),
                _ => {}
            }
        }

        let mut out = Vec::new();
        for c in [
            &packets as &dyn Collector,
            &bytes,
            &drops,
            &drop_bytes,
            &suppressed,
            &entries,
            &capacity,
            &policy_entries,
            &endpoints,
            &nodes,
        ] {
            out.extend(c.collect());
        }
        Ok(out)
    }

    fn source_families(&self) -> Vec<prometheus::proto::MetricFamily> {
        let Ok(events) = IntCounterVec::new(
            opts(
                "source_events_total",
                "Objects added, changed or removed, by source and kind",
            ),
            &["source", "kind"],
        ) else {
            return Vec::new();
        };
        for (source, kind, n) in self.source.event_counts() {
            events
                .with_label_values(&[source.as_str(), kind.kind_name()])
                .inc_by(n);
        }
        events.collect()
    }
}
