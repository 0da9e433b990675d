//! The collectors that read the pinned maps at scrape time.

use super::*;

/// The labels of one replication series: policy, group label, role,
/// egress_ip label, family.
type Series = (String, String, Role, String, Family);

/// `packets_total` and `bytes_total`, from `mcast_egw_counters` and
/// `mcast_egw_counters_v6`, labelled by the last resolution.
pub(super) struct Replication {
    pub(super) reader: Arc<dyn MapReader>,
    pub(super) view: Arc<RwLock<View>>,
    pub(super) failure: Arc<Failure>,
    /// The labels each counter got when first seen: a counter's history
    /// never moves to another series (which Prometheus would read as a
    /// reset) when a more specific prefix or another egress IP appears.
    /// Held for a whole collect: the vectors are reset and refilled.
    pub(super) sticky: Mutex<StickyLabels>,
    pub(super) packets: IntCounterVec,
    pub(super) bytes: IntCounterVec,
}

impl Replication {
    pub(super) fn new(
        reader: Arc<dyn MapReader>,
        view: Arc<RwLock<View>>,
        failure: Arc<Failure>,
    ) -> prometheus::Result<Replication> {
        let labels = &["policy", "group", "role", "egress_ip", "family"];
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
        if !self.reader.loaded() {
            return Vec::new();
        }
        let mut sticky = lock(&self.sticky);
        let counters = match self.reader.counters() {
            Ok(c) => c,
            Err(e) => {
                self.failure.record("the replication counters", e);
                return Vec::new();
            }
        };
        let view = self.view.read().unwrap_or_else(PoisonError::into_inner);
        let present: BTreeSet<(u32, IpAddr, Role)> = counters
            .iter()
            .map(|c| (c.policy_id, c.group, c.role))
            .collect();
        sticky.retain(|k, _| present.contains(k));
        // Counters of groups outside every prefix of their policy share its
        // `other` series, one per family.
        let mut rows: BTreeMap<Series, (u64, u64)> = BTreeMap::new();
        for c in counters {
            // Counters of policies that no longer exist are not exported.
            let Some(name) = view.names.get(&c.policy_id) else {
                continue;
            };
            let family = c.family();
            let (group, egress) = sticky
                .entry((c.policy_id, c.group, c.role))
                .or_insert_with(|| {
                    (
                        view.group_label(c.policy_id, c.group),
                        view.egress_label(c.policy_id, family, c.role),
                    )
                })
                .clone();
            let row = rows
                .entry((name.clone(), group, c.role, egress, family))
                .or_default();
            row.0 += c.packets;
            row.1 += c.bytes;
        }
        drop(view);
        self.packets.reset();
        self.bytes.reset();
        for ((policy, group, role, egress, family), (p, b)) in &rows {
            let l = [
                policy.as_str(),
                group.as_str(),
                role.label(),
                egress.as_str(),
                family.label(),
            ];
            self.packets.with_label_values(&l).inc_by(*p);
            self.bytes.with_label_values(&l).inc_by(*b);
        }
        let mut out = self.packets.collect();
        out.extend(self.bytes.collect());
        out
    }
}

/// `drops_total` and `drop_bytes_total` for every family, every role and
/// every reason of the generated enum (from `mcast_egw_drops` and
/// `mcast_egw_drops_v6`), and `monitor_events_suppressed_total`.
pub(super) struct Drops {
    pub(super) reader: Arc<dyn MapReader>,
    pub(super) failure: Arc<Failure>,
    /// One collect at a time: the metrics are reset and refilled.
    pub(super) filling: Mutex<()>,
    pub(super) packets: IntCounterVec,
    pub(super) bytes: IntCounterVec,
    pub(super) suppressed: IntCounter,
}

impl Drops {
    pub(super) fn new(
        reader: Arc<dyn MapReader>,
        failure: Arc<Failure>,
    ) -> prometheus::Result<Drops> {
        let labels = &["reason", "role", "family"];
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
        if !self.reader.loaded() {
            return Vec::new();
        }
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
        for family in Family::ALL {
            for role in Role::ALL {
                for reason in DropReason::all() {
                    let l = [reason.label(), role.label(), family.label()];
                    self.packets.with_label_values(&l);
                    self.bytes.with_label_values(&l);
                }
            }
        }
        for d in counts {
            let l = [d.reason.label(), d.role.label(), d.family.label()];
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

/// How full the capacity-bound maps are: `map_entries`, `map_capacity`
/// (every map `table.rs` marks, both families'), and `policy_entries`
/// (both policy maps), `endpoints`, `nodes` on their own.
pub(super) struct MapFill {
    pub(super) reader: Arc<dyn MapReader>,
    pub(super) failure: Arc<Failure>,
    /// One collect at a time: the metrics are reset and refilled.
    pub(super) filling: Mutex<()>,
    pub(super) entries: IntGaugeVec,
    pub(super) capacity: IntGaugeVec,
    pub(super) policy_entries: IntGauge,
    pub(super) endpoints: IntGauge,
    pub(super) nodes: IntGauge,
}

impl MapFill {
    pub(super) fn new(
        reader: Arc<dyn MapReader>,
        failure: Arc<Failure>,
    ) -> prometheus::Result<MapFill> {
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
                "Entries in the policy maps (IPv4 and IPv6) on this node",
            ))?,
            endpoints: IntGauge::with_opts(opts(
                "endpoints",
                "Endpoints of this node with an IPv4 address (mcast_egw_endpoints)",
            ))?,
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
        if !self.reader.loaded() {
            return Vec::new();
        }
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
                POLICY_MAP | POLICY_V6_MAP => self.policy_entries.add(n),
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
pub(super) struct SourceEvents {
    pub(super) source: Arc<SourceStats>,
    /// One collect at a time: the vector is reset and refilled.
    pub(super) filling: Mutex<()>,
    pub(super) events: IntCounterVec,
}

impl SourceEvents {
    pub(super) fn new(source: Arc<SourceStats>) -> prometheus::Result<SourceEvents> {
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
