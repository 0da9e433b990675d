use std::net::{Ipv4Addr, Ipv6Addr};

use super::*;
use crate::datapath::maps::{
    spec, Origin, PolicyKey, PolicyKey6, PolicyValue, PolicyValue6, COUNTERS_MAP, COUNTERS_V6_MAP,
    DROPS_V6_MAP, ENDPOINTS_V6_MAP,
};
use crate::resolve::{Problem, Subject};

/// A node's maps held in memory: nothing replicated or dropped until a
/// test says so, and a read that fails on demand.
#[derive(Default)]
pub(crate) struct FakeMaps {
    pub(crate) counters: Mutex<Vec<Counter>>,
    /// Drops with packets; none at all by default.
    pub(crate) drops: Mutex<Vec<DropCount>>,
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

    // By default no rows at all, not even zeros: the collector has a
    // series for every reason on its own.
    fn drops(&self) -> crate::datapath::Result<Vec<DropCount>> {
        self.check()?;
        Ok(lock(&self.drops).clone())
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
            (POLICY_V6_MAP, 0, 16384),
            (ENDPOINTS_V6_MAP, 0, 1024),
            (COUNTERS_V6_MAP, 0, 65536),
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
    "degraded",
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
    "retries_total",
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
        assert_eq!(
            family.get_metric().len(),
            Family::ALL.len() * Role::ALL.len() * reasons
        );
        assert!(family
            .get_metric()
            .iter()
            .all(|m| m.get_counter().get_value() == 0.0));
        for f in Family::ALL {
            for role in Role::ALL {
                for reason in DropReason::all() {
                    let series = format!(
                        "{NS}_{name}{{family=\"{}\",reason=\"{}\",role=\"{}\"}} 0\n",
                        f.label(),
                        reason.label(),
                        role.label()
                    );
                    assert!(text.contains(&series), "{series}:\n{text}");
                }
            }
        }
    }
}

/// Before the datapath is loaded the daemon already serves its metrics:
/// the controller's own and the faults, without the families read from the
/// maps (which would otherwise fail the whole scrape).
#[test]
fn before_the_datapath_the_scrape_has_the_faults_and_no_map_families() {
    let early = Metrics::new(SourceStats::new()).expect("registering");
    early.set_degraded(Component::Datapath, true);
    early.add_retries(Component::Datapath, 3);
    let text = scrape(&early);
    for c in Component::ALL {
        let (degraded, retries) = if c == Component::Datapath {
            (1, 3)
        } else {
            (0, 0)
        };
        for series in [
            format!("{NS}_degraded{{component=\"{}\"}} {degraded}\n", c.label()),
            format!(
                "{NS}_retries_total{{component=\"{}\"}} {retries}\n",
                c.label()
            ),
        ] {
            assert!(text.contains(&series), "{series}:\n{text}");
        }
    }
    for present in ["sync_errors_total", "node_missing", "source_events_total"] {
        assert!(
            text.contains(&format!("# TYPE {NS}_{present} ")),
            "{present}:\n{text}"
        );
    }
    for absent in [
        "drops_total",
        "drop_bytes_total",
        "monitor_events_suppressed_total",
        "map_entries",
        "map_capacity",
        "policy_entries",
        "endpoints",
        "nodes",
    ] {
        assert!(
            !text.contains(&format!("# TYPE {NS}_{absent} ")),
            "{absent} before the maps:\n{text}"
        );
    }
    // The positive control: the same families with maps to read.
    let loaded = scrape(&metrics(FakeMaps::default()));
    assert!(
        loaded.contains(&format!("# TYPE {NS}_drops_total ")),
        "{loaded}"
    );
    assert!(
        loaded.contains(&format!("# TYPE {NS}_map_entries ")),
        "{loaded}"
    );
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
        group: Ipv4Addr::new(232, 1, 1, 1).into(),
        role: Role::Gateway,
        packets: 10,
        bytes: 1000,
    };
    *lock(&maps.counters) = vec![counter];
    let mut desired = gateway_of_cameras();
    metrics.observe(&desired);
    let series = |group: &str| {
        format!(
            "{NS}_packets_total{{egress_ip=\"203.0.113.10\",family=\"ipv4\",group=\"{group}\",policy=\"cameras\",role=\"gateway\"}} 10\n"
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

/// This node (192.0.2.10) is the gateway of `cameras` for both families:
/// its IPv4 entry and two IPv6 ones, ff3e::8000:0/112 leaving with
/// 2001:db8:203::10, and an excluded ff3e::8000:ff00/120.
fn dual_stack_view(metrics: &Metrics) {
    let mut desired = gateway_of_cameras();
    desired.config.node_ip = Ipv4Addr::new(192, 0, 2, 10);
    let pod: Ipv6Addr = "2001:db8:100::11".parse().unwrap();
    let v6 = |dest: &str, gateway: Gateway| {
        (
            PolicyKey6 {
                source: pod,
                destination: dest.parse().unwrap(),
            },
            PolicyValue6 {
                egress_ip: "2001:db8:203::10".parse().unwrap(),
                gateway,
                egress_ifindex: 3,
                policy_id: 1,
                origin: Origin::default(),
            },
        )
    };
    let entries = [
        v6(
            "ff3e::8000:0/112",
            Gateway::Node(Ipv4Addr::new(192, 0, 2, 10)),
        ),
        v6("ff3e::8000:ff00/120", Gateway::Excluded),
    ];
    desired.policies_v6.extend(entries);
    desired
        .local_gateway_for_v6
        .insert("cameras".into(), "2001:db8:203::10".parse().unwrap());
    metrics.observe(&desired);
}

fn counter(group: &str, role: Role, packets: u64) -> Counter {
    Counter {
        policy_id: 1,
        group: group.parse().unwrap(),
        role,
        packets,
        bytes: packets * 100,
    }
}

#[test]
fn ipv6_counters_are_labelled_by_their_prefix_egress_ip_and_family() {
    let maps = Arc::new(FakeMaps::default());
    let metrics = Metrics::with_reader(maps.clone(), SourceStats::new()).unwrap();
    dual_stack_view(&metrics);
    *lock(&maps.counters) = vec![
        counter("232.1.1.1", Role::Gateway, 10),
        counter("ff3e::8000:1", Role::Gateway, 7),
        counter("ff3e::8000:2", Role::Gateway, 3),
        counter("ff3e::8000:1", Role::Origin, 20),
        // Outside every prefix of the policy: its family's `other`.
        counter("ff3e::1:1", Role::Origin, 4),
        counter("232.200.0.1", Role::Origin, 5),
    ];
    let text = scrape(&metrics);
    let series = |name: &str, labels: &str, value: u64| {
        let line = format!("{NS}_{name}{{{labels}}} {value}\n");
        assert!(text.contains(&line), "{line}:\n{text}");
    };
    series(
        "packets_total",
        "egress_ip=\"203.0.113.10\",family=\"ipv4\",group=\"232.1.0.0/16\",policy=\"cameras\",role=\"gateway\"",
        10,
    );
    // Two groups of one prefix: one series, their sum.
    series(
        "packets_total",
        "egress_ip=\"2001:db8:203::10\",family=\"ipv6\",group=\"ff3e::8000:0/112\",policy=\"cameras\",role=\"gateway\"",
        10,
    );
    series(
        "bytes_total",
        "egress_ip=\"2001:db8:203::10\",family=\"ipv6\",group=\"ff3e::8000:0/112\",policy=\"cameras\",role=\"gateway\"",
        1000,
    );
    series(
        "packets_total",
        "egress_ip=\"\",family=\"ipv6\",group=\"ff3e::8000:0/112\",policy=\"cameras\",role=\"origin\"",
        20,
    );
    series(
        "packets_total",
        "egress_ip=\"\",family=\"ipv6\",group=\"other\",policy=\"cameras\",role=\"origin\"",
        4,
    );
    series(
        "packets_total",
        "egress_ip=\"\",family=\"ipv4\",group=\"other\",policy=\"cameras\",role=\"origin\"",
        5,
    );
    // The excluded prefix labels nothing; one series per (policy, group
    // label, role, family), never one per group.
    assert!(!text.contains("ff3e::8000:ff00/120"), "{text}");
    let packets = text
        .lines()
        .filter(|l| l.starts_with(&format!("{NS}_packets_total{{")))
        .count();
    assert_eq!(packets, 5, "{text}");
}

#[test]
fn drops_of_both_maps_carry_their_family() {
    let maps = Arc::new(FakeMaps::default());
    let metrics = Metrics::with_reader(maps.clone(), SourceStats::new()).unwrap();
    let drop = |family, role, reason, packets: u64| DropCount {
        family,
        role,
        reason,
        packets,
        bytes: packets * 90,
    };
    *lock(&maps.drops) = vec![
        drop(Family::Ipv4, Role::Origin, DropReason::SPOOFED_SOURCE, 2),
        drop(Family::Ipv6, Role::Gateway, DropReason::TTL_EXCEEDED, 30),
        drop(Family::Ipv6, Role::Origin, DropReason::SPOOFED_SOURCE, 5),
    ];
    let text = scrape(&metrics);
    let value = |name: &str, family: &str, reason: &str, role: &str| {
        let head =
            format!("{NS}_{name}{{family=\"{family}\",reason=\"{reason}\",role=\"{role}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&head))
            .unwrap_or_else(|| panic!("{head}:\n{text}"))
            .to_owned()
    };
    assert_eq!(
        value("drops_total", "ipv4", "spoofed_source", "origin"),
        "2"
    );
    assert_eq!(
        value("drops_total", "ipv6", "spoofed_source", "origin"),
        "5"
    );
    assert_eq!(
        value("drops_total", "ipv6", "ttl_exceeded", "gateway"),
        "30"
    );
    assert_eq!(
        value("drop_bytes_total", "ipv6", "ttl_exceeded", "gateway"),
        "2700"
    );
    assert_eq!(value("drops_total", "ipv4", "ttl_exceeded", "gateway"), "0");
}

#[test]
fn fill_levels_cover_the_ipv6_maps_and_policy_entries_both_families() {
    for map in [POLICY_V6_MAP, ENDPOINTS_V6_MAP, COUNTERS_V6_MAP] {
        assert!(spec(map).unwrap().fill_level, "{map}");
    }
    // A fixed-size array, like mcast_egw_drops: always full, no level.
    assert!(!spec(DROPS_V6_MAP).unwrap().fill_level);

    struct Filled;
    impl MapReader for Filled {
        fn counters(&self) -> crate::datapath::Result<Vec<Counter>> {
            Ok(Vec::new())
        }
        fn drops(&self) -> crate::datapath::Result<Vec<DropCount>> {
            Ok(Vec::new())
        }
        fn events_suppressed(&self) -> crate::datapath::Result<u64> {
            Ok(0)
        }
        fn fill_levels(&self) -> crate::datapath::Result<Vec<(&'static str, usize, u32)>> {
            Ok(vec![
                (POLICY_MAP, 3, 16384),
                (POLICY_V6_MAP, 4, 16384),
                (ENDPOINTS_MAP, 2, 1024),
                (ENDPOINTS_V6_MAP, 2, 1024),
                (COUNTERS_V6_MAP, 6, 16384),
            ])
        }
    }
    let metrics = Metrics::with_reader(Arc::new(Filled), SourceStats::new()).unwrap();
    let text = scrape(&metrics);
    for line in [
        format!("{NS}_policy_entries 7\n"),
        format!("{NS}_endpoints 2\n"),
        format!("{NS}_map_entries{{map=\"{COUNTERS_V6_MAP}\"}} 6\n"),
        format!("{NS}_map_capacity{{map=\"{COUNTERS_V6_MAP}\"}} 16384\n"),
        format!("{NS}_map_entries{{map=\"{POLICY_V6_MAP}\"}} 4\n"),
    ] {
        assert!(text.contains(&line), "{line}:\n{text}");
    }
}
