//! The cluster as resolution reads it: one compact form of each object,
//! shared.
//!
//! The sources keep nothing else. A `CiliumEndpoint` is reduced as it
//! arrives to what resolution uses (its name, the hash of its uid, its IPv4
//! and IPv6 addresses, its node and its identity), and the identity, which most
//! endpoints share with many others, is held once for all of them with its
//! labels already in the form selectors match. A snapshot is a list of
//! shared pointers to these, so publishing one, holding it for the next
//! pass and comparing it with the last copies no object.
//!
//! Reducing on arrival also makes an update of anything resolution does not
//! read (a `resourceVersion`, status it ignores, managed fields) compare
//! equal to what is held: such an event changes nothing and wakes nothing.

use std::collections::{BTreeMap, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::crd::{CiliumEgressGatewayPolicy, CiliumEndpoint, CiliumNode};
use crate::resolve::{endpoint_labels, fnv32a, LabelMap};

/// `spec.addresses[].type` of the address Cilium calls the node IP.
const INTERNAL_IP: &str = "InternalIP";

/// Everything the controller resolves from: one consistent view of the
/// three kinds, whichever source it came from, each kind sorted by
/// (namespace, name).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Objects {
    pub policies: Vec<Arc<CiliumEgressGatewayPolicy>>,
    pub nodes: Vec<Arc<Node>>,
    pub endpoints: Vec<Arc<Endpoint>>,
}

/// A `CiliumNode` as resolution reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub name: Box<str>,
    /// Its IPv4 `InternalIP`s, in the order listed: the first is the node
    /// IP.
    pub internal_ips: Box<[Ipv4Addr]>,
    pub labels: LabelMap,
}

impl Node {
    pub fn new(node: &CiliumNode) -> Node {
        Node {
            name: node.metadata.name.as_deref().unwrap_or_default().into(),
            internal_ips: node
                .spec
                .addresses
                .iter()
                .filter(|a| a.type_ == INTERNAL_IP)
                .filter_map(|a| a.ip.parse().ok())
                .collect(),
            labels: node.metadata.labels.clone().unwrap_or_default(),
        }
    }
}

/// A `CiliumEndpoint` as resolution reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub namespace: Box<str>,
    pub name: Box<str>,
    /// FNV-1a of `metadata.uid`, which is all Cilium uses the uid for (to
    /// pin an endpoint to one of several gateways); `None` without a uid.
    pub uid_hash: Option<u32>,
    /// Its IPv4 addresses, each once, in the order listed.
    pub ipv4: Box<[Ipv4Addr]>,
    /// Its IPv6 addresses, each once, in the order listed.
    pub ipv6: Box<[Ipv6Addr]>,
    /// The IP of the node it runs on.
    pub node_ip: Option<Ipv4Addr>,
    /// `None` when it has no security identity with labels yet: no policy
    /// can select it.
    pub identity: Option<Arc<Identity>>,
}

impl Endpoint {
    /// The endpoint reduced, its identity shared through `identities`.
    pub fn new(cep: &CiliumEndpoint, identities: &mut Identities) -> Endpoint {
        let status = &cep.status;
        let networking = status.networking.as_ref();
        let addressing = networking.into_iter().flat_map(|n| &n.addressing);
        let ipv4 = unique(addressing.clone().filter_map(|a| a.ipv4.as_deref()));
        let ipv6 = unique(addressing.filter_map(|a| a.ipv6.as_deref()));
        Endpoint {
            namespace: cep.metadata.namespace.as_deref().unwrap_or_default().into(),
            name: cep.metadata.name.as_deref().unwrap_or_default().into(),
            uid_hash: cep
                .metadata
                .uid
                .as_deref()
                .filter(|u| !u.is_empty())
                .map(|u| fnv32a(u.as_bytes())),
            ipv4: ipv4.into(),
            ipv6: ipv6.into(),
            node_ip: networking
                .and_then(|n| n.node.as_deref())
                .and_then(|n| n.parse().ok()),
            identity: status
                .identity
                .as_ref()
                .filter(|i| !i.labels.is_empty())
                .map(|i| {
                    identities.intern(Identity {
                        // The VNI of its tunnelled copies is 24 bits: an id
                        // out of range becomes 0, which no gateway accepts.
                        id: u32::try_from(i.id)
                            .ok()
                            .filter(|id| *id <= 0x00ff_ffff)
                            .unwrap_or(0),
                        labels: endpoint_labels(&i.labels),
                    })
                }),
        }
    }

    /// `namespace/name`, for messages.
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// The addresses of one family that parse, each once, in the order listed.
fn unique<'a, A: std::str::FromStr + PartialEq>(texts: impl Iterator<Item = &'a str>) -> Vec<A> {
    let mut out: Vec<A> = Vec::new();
    for ip in texts.filter_map(|t| t.parse().ok()) {
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

/// A security identity as resolution reads it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    /// The numeric identity (24 bits; 0 when out of range).
    pub id: u32,
    /// The labels a selector can reach, keyed as selectors write them.
    pub labels: LabelMap,
}

/// The identities in use, each held once. A source keeps one and calls
/// [`Identities::prune`] after it drops objects.
#[derive(Debug, Default)]
pub struct Identities {
    held: HashSet<Arc<Identity>>,
}

impl Identities {
    /// The shared copy of `identity`.
    pub fn intern(&mut self, identity: Identity) -> Arc<Identity> {
        if let Some(held) = self.held.get(&identity) {
            return held.clone();
        }
        let shared = Arc::new(identity);
        self.held.insert(shared.clone());
        shared
    }

    /// Forget the identities no object uses any more.
    pub fn prune(&mut self) {
        self.held.retain(|i| Arc::strong_count(i) > 1);
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

/// A policy with only the metadata resolution reads (its name): the spec is
/// read whole, and policies are few.
pub fn policy(cegp: &CiliumEgressGatewayPolicy) -> CiliumEgressGatewayPolicy {
    CiliumEgressGatewayPolicy {
        metadata: ObjectMeta {
            name: cegp.metadata.name.clone(),
            ..ObjectMeta::default()
        },
        spec: cegp.spec.clone(),
    }
}

/// Sorts objects by (namespace, name), so snapshots compare equal whenever
/// the underlying state is the same.
pub fn sort_by_key<T>(objects: &mut [Arc<T>], key: impl Fn(&T) -> (&str, &str)) {
    objects.sort_by(|a, b| key(a).cmp(&key(b)));
}

/// (namespace, name) of each kind.
pub fn policy_key(p: &CiliumEgressGatewayPolicy) -> (&str, &str) {
    ("", p.metadata.name.as_deref().unwrap_or_default())
}

pub fn node_key(n: &Node) -> (&str, &str) {
    ("", &n.name)
}

pub fn endpoint_key(e: &Endpoint) -> (&str, &str) {
    (&e.namespace, &e.name)
}

impl Objects {
    /// Built from full objects, as tests and one-shot readers have them.
    pub fn from_crds(
        policies: &[CiliumEgressGatewayPolicy],
        nodes: &[CiliumNode],
        endpoints: &[CiliumEndpoint],
    ) -> Objects {
        let mut identities = Identities::default();
        let mut objects = Objects {
            policies: policies.iter().map(|p| Arc::new(policy(p))).collect(),
            nodes: nodes.iter().map(|n| Arc::new(Node::new(n))).collect(),
            endpoints: endpoints
                .iter()
                .map(|e| Arc::new(Endpoint::new(e, &mut identities)))
                .collect(),
        };
        objects.sort();
        objects
    }

    /// Sort every kind by (namespace, name).
    pub fn sort(&mut self) {
        sort_by_key(&mut self.policies, policy_key);
        sort_by_key(&mut self.nodes, node_key);
        sort_by_key(&mut self.endpoints, endpoint_key);
    }
}

/// (namespace, name) of an object, as a source keys it.
pub type Key = (Box<str>, Box<str>);

/// Objects keyed by (namespace, name), as a source holds them.
pub type Keyed<T> = BTreeMap<Key, Arc<T>>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{AddressPair, CiliumEndpointStatus, EndpointIdentity, EndpointNetworking};

    fn cep(name: &str, identity: i64, labels: &[&str], ip: &str) -> CiliumEndpoint {
        CiliumEndpoint {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("media".into()),
                uid: Some(format!("uid-{name}")),
                resource_version: Some("17".into()),
                ..ObjectMeta::default()
            },
            status: CiliumEndpointStatus {
                id: Some(3),
                identity: Some(EndpointIdentity {
                    id: identity,
                    labels: labels.iter().map(|l| l.to_string()).collect(),
                }),
                networking: Some(EndpointNetworking {
                    addressing: vec![
                        AddressPair {
                            ipv4: Some(ip.into()),
                            ipv6: Some("2001:db8::1".into()),
                        },
                        AddressPair {
                            ipv4: Some(ip.into()),
                            ipv6: None,
                        },
                    ],
                    node: Some("192.0.2.10".into()),
                }),
            },
        }
    }

    #[test]
    fn endpoints_of_one_identity_share_it() {
        let mut ids = Identities::default();
        let labels = ["k8s:app=camera", "k8s:io.kubernetes.pod.namespace=media"];
        let a = Endpoint::new(&cep("a", 4001, &labels, "198.51.100.1"), &mut ids);
        let b = Endpoint::new(&cep("b", 4001, &labels, "198.51.100.2"), &mut ids);
        let c = Endpoint::new(&cep("c", 4002, &labels, "198.51.100.3"), &mut ids);
        let (ia, ib, ic) = (
            a.identity.clone().unwrap(),
            b.identity.clone().unwrap(),
            c.identity.clone().unwrap(),
        );
        assert!(Arc::ptr_eq(&ia, &ib), "one identity, one copy");
        assert!(!Arc::ptr_eq(&ia, &ic), "another id is another identity");
        assert_eq!(ia.labels.get("app").map(String::as_str), Some("camera"));
        assert_eq!(ids.len(), 2);
        drop((a, ia, c, ic));
        ids.prune();
        assert_eq!(ids.len(), 1, "only b's identity is still used");
        drop((b, ib));
        ids.prune();
        assert!(ids.is_empty());
    }

    #[test]
    fn an_endpoint_keeps_what_resolution_reads() {
        let mut ids = Identities::default();
        let e = Endpoint::new(&cep("a", 4001, &["k8s:app=x"], "198.51.100.1"), &mut ids);
        assert_eq!(e.id(), "media/a");
        assert_eq!(
            &*e.ipv4,
            &[Ipv4Addr::new(198, 51, 100, 1)],
            "each address once"
        );
        assert_eq!(
            &*e.ipv6,
            &["2001:db8::1".parse::<Ipv6Addr>().unwrap()],
            "IPv6 too, each once"
        );
        assert_eq!(e.node_ip, Some(Ipv4Addr::new(192, 0, 2, 10)));
        assert_eq!(e.uid_hash, Some(fnv32a(b"uid-a")));
        assert_eq!(e.identity.as_ref().map(|i| i.id), Some(4001));

        // What resolution does not read changes nothing.
        let mut other = cep("a", 4001, &["k8s:app=x"], "198.51.100.1");
        other.metadata.resource_version = Some("18".into());
        other.status.id = Some(9);
        assert_eq!(Endpoint::new(&other, &mut ids), e);

        // An identity without labels is none; one out of 24 bits is 0.
        let bare = Endpoint::new(&cep("b", 4001, &[], "198.51.100.1"), &mut ids);
        assert!(bare.identity.is_none());
        let wide = Endpoint::new(&cep("c", 1 << 24, &["k8s:app=x"], "198.51.100.1"), &mut ids);
        assert_eq!(wide.identity.map(|i| i.id), Some(0));
    }
}
