//! Resolution: a pure function from the cluster's objects and this node's
//! interfaces to the map contents this node should have.
//!
//! It mirrors Cilium's egress-gateway manager (`pkg/egressgateway/`),
//! narrowed to multicast: the same selectors pick the same endpoints, the
//! same node is the gateway, so a pod's multicast leaves where its unicast
//! does. Where Cilium leaves a choice to map iteration order (two policies
//! with one key), we pick deterministically and say so in a [`Problem`].

mod cidr;
mod family;
mod fnv;
mod gateways;
mod model;
mod policy;
mod selector;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub use fnv::fnv32a;
pub use model::*;
pub use selector::{endpoint_labels, LabelMap};

use self::family::{Entries, Family, Key, Prefix, Value, V4, V6};
use self::gateways::{resolve_gateways, ResolvedGateway};
use self::policy::{GatewaySpec, Policy};
use crate::datapath::maps::{Config, EgressIface, Gateway, Origin, PolicyValueOf};
use crate::objects::{self, Objects};

/// Keep only the entries this node's datapath can use: those of pods behind
/// its own veths (`local_pods`, from Cilium's endpoint map) for the origin
/// program, and for the gateway program those naming this node as gateway,
/// with the exclusions of the same pod that lie inside them. The gateway is
/// the last point before the cluster's edge and enforces the exclusions
/// itself: without them a copy for an excluded group (a stale or forged
/// origin) would match the covering prefix and leave. Every other node's
/// pods would only grow the maps every packet looks up. Both families.
pub fn retain_node_local(desired: &mut Desired, local_pods: &LocalPods) {
    retain::<V4>(desired, local_pods);
    retain::<V6>(desired, local_pods);
}

fn retain<F: Family>(desired: &mut Desired, local_pods: &LocalPods) {
    let this = desired.config.node_ip;
    let pods = F::local_pods(local_pods);
    let entries = F::entries(desired);
    let mut served: BTreeMap<F::Addr, Vec<F::Net>> = BTreeMap::new();
    if !this.is_unspecified() {
        for (key, value) in entries.iter() {
            if value.gateway == Gateway::Node(this) {
                served.entry(key.source).or_default().push(key.destination);
            }
        }
    }
    let inside_served = |key: &Key<F>| {
        served
            .get(&key.source)
            .is_some_and(|prefixes| prefixes.iter().any(|p| p.strictly_covers(&key.destination)))
    };
    entries.retain(|key, value| {
        pods.contains(&key.source)
            || (!this.is_unspecified() && value.gateway == Gateway::Node(this))
            || (value.gateway == Gateway::Excluded && inside_served(key))
    });
}

/// The map contents this node should have, for `objects` as seen from
/// `local`. Pure and total: bad input becomes [`Problem`]s, never a panic,
/// and one bad policy never hides the others.
pub fn resolve(objects: &Objects, local: &LocalNode) -> Desired {
    resolve_for_node(objects, local, None)
}

/// [`resolve`], keeping of the entries only those [`retain_node_local`]
/// could keep for `local_pods` (when known): on a large cluster the others
/// are most of them, and are never held. Which policy owns a key is still
/// decided over every entry, so the result is [`resolve`]'s narrowed; call
/// [`retain_node_local`] after it for the exclusions.
pub fn resolve_for_node(
    objects: &Objects,
    local: &LocalNode,
    local_pods: Option<&LocalPods>,
) -> Desired {
    let mut problems = Vec::new();
    let cluster = Cluster::new(&objects.nodes);
    let (endpoints, without_identity) = endpoints(&objects.endpoints);
    if let Some(problem) = without_identity.without_identity() {
        problems.push(problem);
    }
    let policies = parse_policies(objects, &mut problems);
    let policy_ids = assign_policy_ids(policies.iter().map(|p| p.name.as_str()), |name| {
        fnv32a(name.as_bytes())
    });

    let mut desired = Desired {
        nodes: cluster
            .nodes
            .iter()
            .flat_map(|n| n.ips.iter().copied())
            .collect(),
        config: Config {
            node_ip: this_node_ip(&cluster, local, &mut problems),
            tunnel_ifindex: local.tunnel_ifindex,
        },
        endpoints_without_identity: without_identity.count,
        ..Desired::default()
    };

    // Which policy (index into `policies`) owns each key, per family; and
    // per (loser, winner) how many keys the loser lost and one of them.
    let mut owners = Owners::default();
    let mut overlaps: BTreeMap<(usize, usize), (usize, String)> = BTreeMap::new();

    for (index, policy) in policies.iter().enumerate() {
        let Some(&policy_id) = policy_ids.get(&policy.name) else {
            continue;
        };
        let gateways = resolve_gateways(policy, &cluster, local, &mut problems);
        for egress in gateways.iter().filter_map(|g| g.egress) {
            // Each family's egress IP and uplink count for the policies
            // that have groups of it.
            let (v4, v6) = (
                !policy.v4.destinations.is_empty(),
                !policy.v6.destinations.is_empty(),
            );
            if v4 {
                desired
                    .local_gateway_for
                    .entry(policy.name.clone())
                    .or_insert(egress.v4.ip);
            }
            if v6 {
                desired
                    .local_gateway_for_v6
                    .entry(policy.name.clone())
                    .or_insert(egress.v6.ip);
            }
            for (used, ifindex, mac) in [
                (v4, egress.v4.ifindex, egress.v4.mac),
                (v6, egress.v6.ifindex, egress.v6.mac),
            ] {
                if used && ifindex != 0 {
                    desired.egress_ifaces.insert(ifindex, EgressIface { mac });
                }
            }
        }
        let claim = Claim {
            index,
            policy,
            policy_id,
            gateways: &gateways,
            endpoints: &endpoints,
            cluster: &cluster,
            this: desired.config.node_ip,
            local_pods,
        };
        claim.run::<V4>(&mut owners.v4, &mut desired, &mut overlaps, &mut problems);
        claim.run::<V6>(&mut owners.v6, &mut desired, &mut overlaps, &mut problems);
    }

    for ((loser, winner), (count, example)) in overlaps {
        problems.push(Problem::for_policy(
            &policies[loser].name,
            Severity::Warning,
            format!(
                "{count} {} the same pod and group prefix as policy {} (e.g. {example}); \
                 the lexically first policy name wins, this policy's are ignored",
                if count == 1 {
                    "entry has"
                } else {
                    "entries have"
                },
                policies[winner].name,
            ),
        ));
    }

    problems.sort();
    problems.dedup();
    desired.policy_ids = policy_ids;
    desired.problems = problems;
    desired
}

/// Which policy (index) owns each key, per family.
#[derive(Default)]
struct Owners {
    v4: BTreeMap<Key<V4>, usize>,
    v6: BTreeMap<Key<V6>, usize>,
}

/// One policy claiming its entries of each family.
struct Claim<'a> {
    index: usize,
    policy: &'a Policy,
    policy_id: u32,
    gateways: &'a [ResolvedGateway],
    endpoints: &'a [Selectable<'a>],
    cluster: &'a Cluster<'a>,
    /// This node's IP (unspecified when unknown).
    this: Ipv4Addr,
    local_pods: Option<&'a LocalPods>,
}

impl Claim<'_> {
    /// Claim the policy's entries of family `F`: a key no earlier policy
    /// owns is this one's; one owned already is an overlap, except that an
    /// exclusion always wins. Entries of no use to this node are owned but
    /// never held.
    fn run<F: Family>(
        &self,
        owners: &mut BTreeMap<Key<F>, usize>,
        desired: &mut Desired,
        overlaps: &mut BTreeMap<(usize, usize), (usize, String)>,
        problems: &mut Vec<Problem>,
    ) {
        let this = self.this;
        let may_keep = |key: &Key<F>, value: &Value<F>| {
            self.local_pods
                .is_none_or(|pods| F::local_pods(pods).contains(&key.source))
                || value.gateway == Gateway::Excluded
                || (!this.is_unspecified() && value.gateway == Gateway::Node(this))
        };
        let entries = policy_entries::<F>(
            self.policy,
            self.policy_id,
            self.gateways,
            self.endpoints,
            self.cluster,
            problems,
        );
        let held = F::entries(desired);
        for (key, value) in entries {
            match owners.get(&key) {
                // An exclusion is never overridden by another policy's
                // destination: what one policy keeps in, stays in.
                Some(_) if value.gateway == Gateway::Excluded => {
                    owners.insert(key, self.index);
                    held.insert(key, value);
                }
                // Owned here, but of no use to this node: a winner all the
                // same, never held.
                None if !may_keep(&key, &value) => {
                    owners.insert(key, self.index);
                }
                Some(&winner) => {
                    overlaps
                        .entry((self.index, winner))
                        .or_insert_with(|| (0, format!("{} -> {}", key.source, key.destination)))
                        .0 += 1;
                }
                None => {
                    owners.insert(key, self.index);
                    held.insert(key, value);
                }
            }
        }
    }
}

/// This node's IP: the first IPv4 InternalIP of the `CiliumNode` named
/// like it. Without one, the IP known from before, or 0.0.0.0 (no gateway
/// role, no tunnel source), with a finding either way: a wrong
/// `--node-name` silently withdrawing every gateway entry of this node is
/// the failure this guards against.
fn this_node_ip(cluster: &Cluster, local: &LocalNode, problems: &mut Vec<Problem>) -> Ipv4Addr {
    let missing = match cluster.node_named(&local.name) {
        Some(Node { ip: Some(ip), .. }) => return *ip,
        Some(_) => format!(
            "CiliumNode {:?} (--node-name) has no IPv4 InternalIP",
            local.name
        ),
        None => format!(
            "no CiliumNode is named {:?} (--node-name); check the name against \
             `kubectl get ciliumnodes`",
            local.name
        ),
    };
    let (severity, ip, consequence) = match local.known_ip {
        Some(ip) => (
            Severity::Warning,
            ip,
            format!(
                "keeping this node's last known IP {ip} (its tunnel source and gateway \
                 address) until it is back; a policy whose gateway it was has none meanwhile"
            ),
        ),
        None => (
            Severity::Invalid,
            Ipv4Addr::UNSPECIFIED,
            "this node's IP is unknown: it serves as no policy's gateway and its pods' \
             copies have no tunnel source; not ready until the node appears"
                .to_string(),
        ),
    };
    problems.push(Problem {
        subject: Subject::Node(local.name.clone()),
        severity,
        message: format!("{missing}: {consequence}"),
    });
    ip
}

/// Parse every policy, in name order so that every later choice is
/// deterministic.
fn parse_policies(objects: &Objects, problems: &mut Vec<Problem>) -> Vec<Policy> {
    let mut sorted: Vec<_> = objects.policies.iter().collect();
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut seen = BTreeSet::new();
    let mut parsed = Vec::new();
    for cegp in sorted {
        let name = cegp.metadata.name.clone().unwrap_or_default();
        if !name.is_empty() && !seen.insert(name.clone()) {
            // Cluster-scoped names are unique in a cluster; two manifest
            // files can still both hold one.
            problems.push(Problem::for_policy(
                &name,
                Severity::Invalid,
                "another CiliumEgressGatewayPolicy of the same name came first: \
                 this copy is ignored"
                    .to_string(),
            ));
            continue;
        }
        parsed.extend(policy::parse(cegp, problems));
    }
    parsed
}

/// Counter labels: `hash(name)`, the lexically later name of two that
/// collide probing on to the next free id, never 0 (0 labels "no policy"
/// in the datapath's counters). `names` must be sorted and unique.
fn assign_policy_ids<'a>(
    names: impl IntoIterator<Item = &'a str>,
    hash: impl Fn(&str) -> u32,
) -> BTreeMap<String, u32> {
    let mut used = BTreeSet::new();
    let mut ids = BTreeMap::new();
    for name in names {
        let mut id = hash(name);
        while id == 0 || used.contains(&id) {
            id = id.wrapping_add(1);
        }
        used.insert(id);
        ids.insert(name.to_string(), id);
    }
    ids
}

/// A `CiliumNode` as resolution needs it.
struct Node<'a> {
    name: &'a str,
    /// The node IP: its first IPv4 InternalIP.
    ip: Option<Ipv4Addr>,
    /// Every IPv4 InternalIP.
    ips: &'a [Ipv4Addr],
    labels: &'a LabelMap,
}

/// The cluster's nodes, sorted by name as Cilium keeps them.
struct Cluster<'a> {
    nodes: Vec<Node<'a>>,
    /// Node IP -> index in `nodes` (the first node by name on a clash).
    by_ip: BTreeMap<Ipv4Addr, usize>,
}

impl<'a> Cluster<'a> {
    fn new(nodes: &'a [std::sync::Arc<objects::Node>]) -> Cluster<'a> {
        let mut nodes: Vec<Node<'a>> = nodes
            .iter()
            .map(|n| Node {
                name: &n.name,
                ip: n.internal_ips.first().copied(),
                ips: &n.internal_ips,
                labels: &n.labels,
            })
            .collect();
        nodes.sort_by(|a, b| a.name.cmp(b.name));
        let mut by_ip = BTreeMap::new();
        for (index, node) in nodes.iter().enumerate() {
            for &ip in node.ips {
                by_ip.entry(ip).or_insert(index);
            }
        }
        Cluster { nodes, by_ip }
    }

    fn node_named(&self, name: &str) -> Option<&Node<'a>> {
        if name.is_empty() {
            return None;
        }
        self.nodes.iter().find(|n| n.name == name)
    }

    /// Labels of the node with this IP; none for an unknown node, which
    /// then matches only selectors that ask for absent labels, as in Cilium.
    fn labels_at(&self, ip: Option<Ipv4Addr>) -> Option<&LabelMap> {
        let index = *self.by_ip.get(&ip?)?;
        self.nodes.get(index).map(|n| n.labels)
    }
}

/// How many endpoints in a finding are named; the rest are counted.
const ENDPOINTS_NAMED: usize = 5;

/// Endpoints one finding is about: how many, and the first few names (by
/// namespace and name) for the operator to look at. One finding, however
/// many endpoints: a cluster of 10,000 must not make 10,000 log lines.
#[derive(Debug, Default)]
struct Endpoints {
    count: usize,
    /// At most [`ENDPOINTS_NAMED`], sorted.
    named: Vec<String>,
}

impl Endpoints {
    fn add(&mut self, id: String) {
        self.count += 1;
        // Keep the smallest names in a short sorted list: no list of every
        // endpoint is ever built.
        let at = self.named.partition_point(|n| *n < id);
        if at < ENDPOINTS_NAMED {
            self.named.insert(at, id);
            self.named.truncate(ENDPOINTS_NAMED);
        }
    }

    /// `a, b, c`, or `a, b, c, d, e and 7 more`.
    fn names(&self) -> String {
        match self.count - self.named.len() {
            0 => self.named.join(", "),
            more => format!("{} and {more} more", self.named.join(", ")),
        }
    }

    /// `1 <one>` or `N <many>`.
    fn counted(&self, one: &str, many: &str) -> String {
        format!(
            "{} {}",
            self.count,
            if self.count == 1 { one } else { many }
        )
    }

    /// The finding about endpoints without an identity. A warning: Cilium
    /// creates a pod's endpoint before its identity is allocated
    /// (`waiting-for-identity`), so a short while without one is normal;
    /// the count says how many, the names say where to look when it lasts.
    fn without_identity(&self) -> Option<Problem> {
        (self.count > 0).then(|| Problem {
            subject: Subject::Endpoints,
            severity: Severity::Warning,
            message: format!(
                "{} without a security identity (status.identity with labels), \
                 skipped until they have one: no policy can select them: {}",
                self.counted("CiliumEndpoint", "CiliumEndpoints"),
                self.names()
            ),
        })
    }
}

/// The endpoints that can be selected at all: with an identity and an
/// address, sorted by namespace and name (the sources' order, checked
/// here), so that when two endpoints claim one address the same one wins
/// every time; and those skipped for want of an identity. One without any
/// address has nothing to send from and is left out silently.
fn endpoints(all: &[std::sync::Arc<objects::Endpoint>]) -> (Vec<Selectable<'_>>, Endpoints) {
    let mut without_identity = Endpoints::default();
    let mut endpoints: Vec<Selectable> = all
        .iter()
        .filter_map(|endpoint| {
            let Some(identity) = endpoint.identity.as_deref() else {
                without_identity.add(endpoint.id());
                return None;
            };
            (!endpoint.ipv4.is_empty() || !endpoint.ipv6.is_empty())
                .then_some(Selectable { endpoint, identity })
        })
        .collect();
    fn key<'a>(s: &Selectable<'a>) -> ((&'a str, &'a str), Option<u32>) {
        (objects::endpoint_key(s.endpoint), s.endpoint.uid_hash)
    }
    if !endpoints.is_sorted_by(|a, b| key(a) <= key(b)) {
        endpoints.sort_by(|a, b| key(a).cmp(&key(b)));
    }
    (endpoints, without_identity)
}

/// An endpoint with an identity.
struct Selectable<'a> {
    endpoint: &'a objects::Endpoint,
    identity: &'a objects::Identity,
}

/// The entries of family `F` one policy asks for: every selected
/// endpoint's address of that family with every destination (and excluded)
/// prefix of that family.
fn policy_entries<F: Family>(
    policy: &Policy,
    policy_id: u32,
    gateways: &[ResolvedGateway],
    endpoints: &[Selectable],
    cluster: &Cluster,
    problems: &mut Vec<Problem>,
) -> Entries<F> {
    let cidrs = F::cidrs(policy);
    if cidrs.destinations.is_empty() && cidrs.excluded.is_empty() {
        return Entries::<F>::new();
    }
    let no_labels = LabelMap::new();
    let excluded = PolicyValueOf {
        egress_ip: F::UNSPECIFIED,
        gateway: Gateway::Excluded,
        egress_ifindex: 0,
        policy_id,
        origin: Origin::default(),
    };
    let mut entries = BTreeMap::new();
    let mut without_uid = Endpoints::default();
    for &Selectable { endpoint, identity } in endpoints {
        if !policy
            .endpoint_selectors
            .iter()
            .any(|s| s.matches(&identity.labels))
        {
            continue;
        }
        if !policy.node_selectors.is_empty() {
            let node_labels = cluster.labels_at(endpoint.node_ip).unwrap_or(&no_labels);
            if !policy.node_selectors.iter().any(|s| s.matches(node_labels)) {
                continue;
            }
        }
        let gateway = match (gateways, endpoint.uid_hash) {
            ([], _) => continue,
            ([only], _) => only,
            (several, Some(hash)) => {
                // Cilium: gateways sorted by IP, endpoint pinned by the
                // FNV-1a of its UID. Lossless: usize is at least 32 bits here.
                &several[hash as usize % several.len()]
            }
            (_, None) => {
                without_uid.add(endpoint.id());
                continue;
            }
        };
        // Checked after the gateway, so that the finding about endpoints
        // without a uid is the same from either family's pass (and said
        // once).
        if F::sources(endpoint).is_empty() {
            continue;
        }
        let origin = Origin {
            node: endpoint.node_ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
            identity: identity.id,
        };
        let value = match gateway.ip {
            None => PolicyValueOf {
                egress_ip: F::UNSPECIFIED,
                gateway: Gateway::NotFound,
                egress_ifindex: 0,
                policy_id,
                origin,
            },
            Some(ip) => {
                let egress = gateway.egress.map(|e| F::egress(&e));
                PolicyValueOf {
                    egress_ip: egress.map_or(F::UNSPECIFIED, |e| e.ip),
                    gateway: Gateway::Node(ip),
                    egress_ifindex: egress.map_or(0, |e| e.ifindex),
                    policy_id,
                    origin,
                }
            }
        };
        for &source in F::sources(endpoint) {
            // The first endpoint (by name) claiming an address keeps it:
            // two endpoints with one address is a stale object.
            for &destination in &cidrs.destinations {
                entries
                    .entry(Key::<F> {
                        source,
                        destination,
                    })
                    .or_insert(value);
            }
            // An excluded prefix equal to a destination wins, as in Cilium,
            // which writes the excluded entries last.
            for &destination in &cidrs.excluded {
                entries.insert(
                    Key::<F> {
                        source,
                        destination,
                    },
                    excluded,
                );
            }
        }
    }
    if without_uid.count > 0 {
        problems.push(Problem::for_policy(
            &policy.name,
            Severity::Warning,
            format!(
                "{} no metadata.uid, so {} cannot be pinned to one of the {} gateways: \
                 skipped: {}",
                without_uid.counted("endpoint has", "endpoints have"),
                if without_uid.count == 1 { "it" } else { "they" },
                gateways.len(),
                without_uid.names()
            ),
        ));
    }
    entries
}
