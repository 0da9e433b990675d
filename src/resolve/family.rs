//! The two address families as resolution sees them: one set of rules
//! (ownership, overlap, exclusions, node-local retention), two instances.
//! What differs is only where each family's prefixes, pod addresses, egress
//! and entries live; this trait says where.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{Debug, Display};
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnetwork::{Ipv4Network, Ipv6Network};

use super::gateways::{Egress, EgressOf};
use super::policy::{Cidrs, Policy};
use super::{Desired, LocalPods};
use crate::datapath::maps::{PolicyKeyOf, PolicyValueOf};
use crate::objects;

/// A destination prefix of either family.
pub(super) trait Prefix: Copy + Ord + Display + Debug {
    /// Whether `self` is strictly wider than `inner` and holds it.
    fn strictly_covers(&self, inner: &Self) -> bool;
}

impl Prefix for Ipv4Network {
    fn strictly_covers(&self, inner: &Self) -> bool {
        self.prefix() < inner.prefix() && self.contains(inner.network())
    }
}

impl Prefix for Ipv6Network {
    fn strictly_covers(&self, inner: &Self) -> bool {
        self.prefix() < inner.prefix() && self.contains(inner.network())
    }
}

/// One address family's policy entries and where their inputs are.
pub(super) trait Family {
    type Addr: Copy + Ord + Display + Debug;
    type Net: Prefix;
    const UNSPECIFIED: Self::Addr;

    fn cidrs(policy: &Policy) -> &Cidrs<Self::Net>;
    fn sources(endpoint: &objects::Endpoint) -> &[Self::Addr];
    fn egress(egress: &Egress) -> EgressOf<Self::Addr>;
    fn entries(desired: &mut Desired) -> &mut Entries<Self>;
    fn local_pods(pods: &LocalPods) -> &BTreeSet<Self::Addr>;
}

pub(super) type Key<F> = PolicyKeyOf<<F as Family>::Addr, <F as Family>::Net>;
pub(super) type Value<F> = PolicyValueOf<<F as Family>::Addr>;
pub(super) type Entries<F> = BTreeMap<Key<F>, Value<F>>;

/// IPv4: `mcast_egw_policy_hash_v4`.
pub(super) struct V4;
/// IPv6: `mcast_egw_policy_hash_v6`.
pub(super) struct V6;

impl Family for V4 {
    type Addr = Ipv4Addr;
    type Net = Ipv4Network;
    const UNSPECIFIED: Ipv4Addr = Ipv4Addr::UNSPECIFIED;

    fn cidrs(policy: &Policy) -> &Cidrs<Ipv4Network> {
        &policy.v4
    }
    fn sources(endpoint: &objects::Endpoint) -> &[Ipv4Addr] {
        &endpoint.ipv4
    }
    fn egress(egress: &Egress) -> EgressOf<Ipv4Addr> {
        egress.v4
    }
    fn entries(desired: &mut Desired) -> &mut Entries<V4> {
        &mut desired.policies
    }
    fn local_pods(pods: &LocalPods) -> &BTreeSet<Ipv4Addr> {
        &pods.v4
    }
}

impl Family for V6 {
    type Addr = Ipv6Addr;
    type Net = Ipv6Network;
    const UNSPECIFIED: Ipv6Addr = Ipv6Addr::UNSPECIFIED;

    fn cidrs(policy: &Policy) -> &Cidrs<Ipv6Network> {
        &policy.v6
    }
    fn sources(endpoint: &objects::Endpoint) -> &[Ipv6Addr] {
        &endpoint.ipv6
    }
    fn egress(egress: &Egress) -> EgressOf<Ipv6Addr> {
        egress.v6
    }
    fn entries(desired: &mut Desired) -> &mut Entries<V6> {
        &mut desired.policies_v6
    }
    fn local_pods(pods: &LocalPods) -> &BTreeSet<Ipv6Addr> {
        &pods.v6
    }
}
