//! Bring the pinned maps to the desired contents: diff, write new and
//! changed entries, then delete stale ones (make-before-break). Never a
//! flush: whatever is already right is left alone, so a restarted
//! controller adopts what it finds and the datapath never sees a gap.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use crate::datapath::maps::{
    no_guard, Codec, Endpoint, Gateway, Maps, PolicyFamily, PolicyKeyOf, PolicyLens, PolicyValueOf,
    Reconcile, Store, TypedMap,
};
use crate::datapath::DatapathError;
use crate::resolve::Desired;

/// How many entries a sync wrote and removed.
pub use crate::datapath::maps::Changes as SyncStats;

/// How the entries a node needs fit a map of bounded capacity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fit {
    /// Entries needed.
    pub needed: usize,
    /// The map's capacity.
    pub capacity: usize,
    /// Entries that do not fit and are not written.
    pub left_out: usize,
    /// Pods (source addresses) with entries left out: a pod is written
    /// whole or not at all.
    pub pods_left_out: usize,
    /// Of those, pods of this node (their multicast is not replicated).
    pub own_pods_left_out: usize,
}

impl Fit {
    pub fn short(&self) -> bool {
        self.left_out > 0
    }
}

/// The policy entries to write when `capacity` may not hold them all, in
/// the order that must win: this node's own pods (`own`; without it, none
/// is preferred), then the pods it serves as a gateway; within each, by
/// address. A pod's entries go in together or not at all, so an exclusion
/// never goes missing while the prefix around it is written: the map never
/// lets out a group policy excludes, full or not. A pod that does not fit
/// is skipped and a smaller one after it may still be written. Either
/// family: each fits its own map.
#[allow(clippy::type_complexity)]
pub fn fit_policies<'a, A: Copy + Ord, N: Copy + Ord>(
    policies: &'a BTreeMap<PolicyKeyOf<A, N>, PolicyValueOf<A>>,
    own: Option<&BTreeSet<A>>,
    capacity: usize,
) -> (Cow<'a, BTreeMap<PolicyKeyOf<A, N>, PolicyValueOf<A>>>, Fit) {
    let mut fit = Fit {
        needed: policies.len(),
        capacity,
        ..Fit::default()
    };
    if policies.len() <= capacity {
        return (Cow::Borrowed(policies), fit);
    }
    // Each pod's entries are contiguous: the key starts with the source.
    let mut pods: Vec<(bool, A, usize)> = Vec::new();
    for key in policies.keys() {
        match pods.last_mut() {
            Some((_, source, n)) if *source == key.source => *n += 1,
            _ => pods.push((
                own.is_some_and(|own| own.contains(&key.source)),
                key.source,
                1,
            )),
        }
    }
    // Own pods first; stable, so by address within each tier.
    pods.sort_by_key(|(own, _, _)| !*own);
    let mut room = capacity;
    let mut chosen = BTreeSet::new();
    for (own, source, n) in pods {
        if n <= room {
            room -= n;
            chosen.insert(source);
        } else {
            fit.left_out += n;
            fit.pods_left_out += 1;
            fit.own_pods_left_out += usize::from(own);
        }
    }
    let fitted = policies
        .iter()
        .filter(|(k, _)| chosen.contains(&k.source))
        .map(|(k, v)| (*k, *v))
        .collect();
    (Cow::Owned(fitted), fit)
}

/// Exclusions narrow the prefixes around them: written first, removed last.
fn is_exclusion<A>(v: &PolicyValueOf<A>) -> bool {
    v.gateway == Gateway::Excluded
}

/// The prefix lengths the datapath probes for a family's policy entries:
/// the pinned length map, or a test's record of the calls.
trait LensStore<A: PolicyFamily> {
    /// See [`Maps::policy_lens_add`].
    fn lens_add(&self, lens: &PolicyLens<A>) -> Result<usize, DatapathError>;
    /// See [`Maps::policy_lens_retain_in`].
    fn lens_retain_in(
        &self,
        buckets: &PolicyLens<A>,
        keep: &PolicyLens<A>,
    ) -> Result<usize, DatapathError>;
}

impl<A: PolicyFamily> LensStore<A> for Maps {
    fn lens_add(&self, lens: &PolicyLens<A>) -> Result<usize, DatapathError> {
        self.policy_lens_add(lens)
    }
    fn lens_retain_in(
        &self,
        buckets: &PolicyLens<A>,
        keep: &PolicyLens<A>,
    ) -> Result<usize, DatapathError> {
        self.policy_lens_retain_in(buckets, keep)
    }
}

type Entries<A> = BTreeMap<PolicyKeyOf<A, <A as PolicyFamily>::Network>, PolicyValueOf<A>>;

/// Bring a policy map of either family from `current` to `desired` without
/// ever letting out more than either allows: the generic reconcile, with
/// exclusions as its guards (written before the entries around them,
/// removed after), inside the prefix lengths the datapath probes: every
/// length of the entries about to be written is in before them, and the
/// lengths no entry has any more go after the last of those entries is
/// deleted (left over a little longer, they only cost a probe).
///
/// Only the buckets whose lengths change are read and written: the lengths
/// cover every entry the map holds (each writer adds them first, and a load
/// adds those of what it finds pinned), so what the current entries need is
/// there already.
fn apply_policies<A: PolicyFamily>(
    store: &impl Store<PolicyKeyOf<A, A::Network>, PolicyValueOf<A>>,
    lens: &impl LensStore<A>,
    current: &Entries<A>,
    desired: &Entries<A>,
    capacity: usize,
) -> Result<SyncStats, DatapathError> {
    let (now, next) = (
        PolicyLens::of(current.keys()),
        PolicyLens::of(desired.keys()),
    );
    lens.lens_add(&next.beyond(&now))?;
    let stats = Reconcile::new(current, desired, capacity, is_exclusion).run(store)?;
    lens.lens_retain_in(&now.beyond(&next), &next)?;
    Ok(stats)
}

/// Apply a resolution: nodes and uplinks first (policies refer to them),
/// then the config and the policy entries with their prefix lengths (IPv4,
/// then IPv6), then the stale nodes and uplinks last. `desired.policies`
/// and `desired.policies_v6` must fit their maps (see [`fit_policies`]).
pub fn apply(maps: &Maps, desired: &Desired) -> Result<SyncStats, DatapathError> {
    let mut stats = SyncStats::default();

    let nodes = desired.nodes.iter().map(|n| (*n, Default::default()));
    let nodes = maps.nodes.plan(&nodes.collect(), no_guard)?;
    nodes.make(&maps.nodes)?;
    let ifaces = maps.egress_ifaces.plan(&desired.egress_ifaces, no_guard)?;
    ifaces.make(&maps.egress_ifaces)?;

    if maps.config()? != desired.config {
        maps.config_set(&desired.config)?;
        stats.written += 1;
    }

    stats += apply_policies(
        &maps.policy,
        maps,
        &maps.policy.entries()?,
        &desired.policies,
        maps.policy_capacity() as usize,
    )?;
    stats += apply_policies(
        &maps.policy_v6,
        maps,
        &maps.policy_v6.entries()?,
        &desired.policies_v6,
        maps.policy_v6.capacity() as usize,
    )?;

    ifaces.finish(&maps.egress_ifaces)?;
    nodes.finish(&maps.nodes)?;
    stats += ifaces.changes();
    stats += nodes.changes();
    Ok(stats)
}

/// The policy names to keep (policy_id -> name) when `capacity` may not hold
/// them all: those of the policies with entries on this node (`here`) first,
/// then the others by name.
pub fn fit_names(
    ids: &BTreeMap<String, u32>,
    here: &BTreeSet<u32>,
    capacity: usize,
) -> (BTreeMap<u32, String>, Fit) {
    let mut fit = Fit {
        needed: ids.len(),
        capacity,
        ..Fit::default()
    };
    let (first, rest): (Vec<_>, Vec<_>) = ids.iter().partition(|(_, id)| here.contains(id));
    let mut names = BTreeMap::new();
    for (name, id) in first.into_iter().chain(rest) {
        if names.len() < capacity {
            names.insert(*id, name.clone());
        } else {
            fit.left_out += 1;
        }
    }
    (names, fit)
}

/// Keep the policy names (policy_id -> name) equal to `desired`, for the
/// CLI. `desired` must fit the map (see [`fit_names`]).
pub fn apply_names(
    maps: &Maps,
    desired: &BTreeMap<u32, String>,
) -> Result<SyncStats, DatapathError> {
    maps.policy_names.reconcile(desired, no_guard)
}

/// Turn an endpoint map (`mcast_egw_endpoints`, `mcast_egw_endpoints_v6`)
/// from `current` (what it holds) into `desired` (this node's endpoints).
pub fn apply_endpoints<A: Codec + Ord + Clone>(
    map: &TypedMap<A, Endpoint>,
    current: &BTreeMap<A, Endpoint>,
    desired: &BTreeMap<A, Endpoint>,
) -> Result<SyncStats, DatapathError> {
    let capacity = map.capacity() as usize;
    Reconcile::new(current, desired, capacity, no_guard).run(map)
}

/// Keep the mirror of Cilium's in-cluster multicast groups in step. The
/// datapath looks groups up only while the config says there are some: the
/// flag goes on after the first group is in, and off after the last is out.
pub fn apply_cilium_groups(maps: &Maps, groups: &[Ipv4Addr]) -> Result<SyncStats, DatapathError> {
    let desired = groups.iter().map(|g| (*g, Default::default())).collect();
    let sync = maps.cilium_groups.plan(&desired, no_guard)?;
    let stats = sync.changes();
    sync.make(&maps.cilium_groups)?;
    if stats.written > 0 {
        maps.cilium_groups_flag(true)?;
    }
    sync.finish(&maps.cilium_groups)?;
    if stats.removed > 0 && maps.cilium_groups.is_empty() {
        maps.cilium_groups_flag(false)?;
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::maps::{
        Origin, PolicyKey, PolicyKey6, PolicyValue, PolicyValue6, PrefixLens,
    };
    use ipnetwork::{Ipv4Network, Ipv6Network};
    use std::net::Ipv6Addr;

    fn entry(source: [u8; 4], prefix: &str, gateway: Gateway) -> (PolicyKey, PolicyValue) {
        (
            PolicyKey {
                source: source.into(),
                destination: prefix.parse::<Ipv4Network>().unwrap(),
            },
            PolicyValue {
                egress_ip: Ipv4Addr::UNSPECIFIED,
                gateway,
                egress_ifindex: 0,
                policy_id: 7,
                origin: Origin::default(),
            },
        )
    }

    const GW: Gateway = Gateway::Node(Ipv4Addr::new(192, 0, 2, 10));

    #[test]
    fn everything_fits_without_a_copy() {
        let all: BTreeMap<_, _> = [entry([198, 51, 100, 1], "232.1.0.0/16", GW)].into();
        let (fitted, fit) = fit_policies(&all, None, 1);
        assert!(matches!(fitted, Cow::Borrowed(_)));
        assert_eq!(fitted.len(), 1);
        assert!(!fit.short());
    }

    #[test]
    fn a_full_map_keeps_own_pods_first_and_pods_whole() {
        // Remote pods served as a gateway sort first by address; this
        // node's own pod comes last by address but must win.
        let remote_a = [198, 51, 100, 1];
        let remote_b = [198, 51, 100, 2];
        let own = [198, 51, 100, 200];
        let all: BTreeMap<_, _> = [
            entry(remote_a, "232.1.0.0/16", GW),
            entry(remote_a, "232.1.255.0/24", Gateway::Excluded),
            entry(remote_b, "232.2.1.0/24", GW),
            entry(own, "232.1.0.0/16", GW),
            entry(own, "232.1.255.0/24", Gateway::Excluded),
        ]
        .into();
        let own_set: BTreeSet<Ipv4Addr> = [own.into()].into();
        let (fitted, fit) = fit_policies(&all, Some(&own_set), 3);
        let sources: BTreeSet<Ipv4Addr> = fitted.keys().map(|k| k.source).collect();
        // The own pod (2 entries) fits first; remote_a (2) does not fit in
        // the 1 left and is skipped whole, exclusion included; remote_b (1)
        // still does.
        assert_eq!(sources, [own.into(), remote_b.into()].into());
        assert_eq!(
            fit,
            Fit {
                needed: 5,
                capacity: 3,
                left_out: 2,
                pods_left_out: 1,
                own_pods_left_out: 0,
            }
        );
        // Never a covering prefix without its exclusion.
        for (k, v) in fitted.iter() {
            if k.destination.prefix() == 16 {
                assert!(fitted.contains_key(&PolicyKey {
                    source: k.source,
                    destination: "232.1.255.0/24".parse().unwrap()
                }));
                assert_eq!(v.gateway, GW);
            }
        }

        // Too small even for the own pod: reported as such.
        let (fitted, fit) = fit_policies(&all, Some(&own_set), 1);
        assert_eq!(fitted.len(), 1, "remote_b still fits");
        assert_eq!(fit.own_pods_left_out, 1);
        assert_eq!(fit.left_out, 4);
    }

    /// A step a sync made: an entry written or deleted, or the prefix
    /// lengths changed (to what they are after it).
    #[derive(Debug, Clone)]
    enum Op<A: PolicyFamily> {
        Put(PolicyKeyOf<A, A::Network>),
        Delete(PolicyKeyOf<A, A::Network>),
        Lens(BTreeMap<u32, PrefixLens<A>>),
    }

    /// The writes, deletes and length changes in the order made, against a
    /// map of `capacity` that refuses what would not fit, and a length map
    /// (bucket -> lengths); either family.
    struct Recorder<A: PolicyFamily> {
        held: std::cell::RefCell<Entries<A>>,
        lens: std::cell::RefCell<BTreeMap<u32, PrefixLens<A>>>,
        ops: std::cell::RefCell<Vec<Op<A>>>,
        capacity: usize,
    }

    /// The lengths a load adds for `entries` (bucket -> lengths).
    fn lens_of<A: PolicyFamily>(entries: &Entries<A>) -> BTreeMap<u32, PrefixLens<A>> {
        PolicyLens::of(entries.keys()).iter().collect()
    }

    impl<A: PolicyFamily> Recorder<A> {
        /// Holding `held`, with the lengths a load would have added for it.
        fn new(held: &Entries<A>, capacity: usize) -> Recorder<A> {
            Recorder {
                held: held.clone().into(),
                lens: lens_of(held).into(),
                ops: Vec::new().into(),
                capacity,
            }
        }

        /// The entry writes and deletes, in order.
        fn ops(&self) -> Vec<(char, PolicyKeyOf<A, A::Network>)> {
            self.steps()
                .into_iter()
                .filter_map(|op| match op {
                    Op::Put(k) => Some(('+', k)),
                    Op::Delete(k) => Some(('-', k)),
                    Op::Lens(_) => None,
                })
                .collect()
        }

        fn steps(&self) -> Vec<Op<A>> {
            self.ops.borrow().clone()
        }

        /// Bring each bucket of `buckets` to `next(bucket, now)`, as one
        /// step when anything changes.
        fn rewrite(
            &self,
            buckets: &PolicyLens<A>,
            next: impl Fn(u32, PrefixLens<A>) -> PrefixLens<A>,
        ) -> usize {
            let mut lens = self.lens.borrow_mut();
            let mut written = 0;
            for (b, _) in buckets.iter() {
                let now = lens.get(&b).copied().unwrap_or_default();
                let next = next(b, now);
                if next != now {
                    lens.insert(b, next);
                    written += 1;
                }
            }
            if written > 0 {
                self.ops.borrow_mut().push(Op::Lens(lens.clone()));
            }
            written
        }
    }

    impl<A: PolicyFamily> Store<PolicyKeyOf<A, A::Network>, PolicyValueOf<A>> for Recorder<A> {
        fn put(
            &self,
            key: &PolicyKeyOf<A, A::Network>,
            value: &PolicyValueOf<A>,
        ) -> Result<(), DatapathError> {
            let mut held = self.held.borrow_mut();
            if !held.contains_key(key) && held.len() >= self.capacity {
                return Err(DatapathError::Map {
                    map: crate::datapath::maps::POLICY_MAP,
                    op: "update",
                    source: std::io::Error::from_raw_os_error(28).into(),
                });
            }
            held.insert(*key, *value);
            self.ops.borrow_mut().push(Op::Put(*key));
            Ok(())
        }
        fn delete(&self, key: &PolicyKeyOf<A, A::Network>) -> Result<bool, DatapathError> {
            let existed = self.held.borrow_mut().remove(key).is_some();
            self.ops.borrow_mut().push(Op::Delete(*key));
            Ok(existed)
        }
    }

    impl<A: PolicyFamily> LensStore<A> for Recorder<A> {
        fn lens_add(&self, lens: &PolicyLens<A>) -> Result<usize, DatapathError> {
            Ok(self.rewrite(lens, |b, now| now.union(lens.get(b))))
        }
        fn lens_retain_in(
            &self,
            buckets: &PolicyLens<A>,
            keep: &PolicyLens<A>,
        ) -> Result<usize, DatapathError> {
            Ok(self.rewrite(buckets, |b, now| now.intersection(keep.get(b))))
        }
    }

    /// Whether `entries` let `group` from `source` out as the datapath
    /// looks it up: the lengths of the group's bucket in `lens`, longest
    /// first; the first entry found decides (an exclusion does not let out).
    fn datapath_lets_out<A: PolicyFamily>(
        entries: &Entries<A>,
        lens: &BTreeMap<u32, PrefixLens<A>>,
        source: A,
        group: A,
    ) -> bool {
        let probed = lens.get(&A::bucket(group)).copied().unwrap_or_default();
        probed
            .lens()
            .into_iter()
            .find_map(|len| {
                entries.iter().find(|(k, _)| {
                    k.source == source
                        && A::prefix(&k.destination) == len
                        && A::contains(&k.destination, group)
                })
            })
            .is_some_and(|(_, v)| v.gateway != Gateway::Excluded)
    }

    /// Whether `entries` let `group` from `source` out by the policy's
    /// meaning: the longest prefix wins, an exclusion does not let out.
    fn lets_out<A: PolicyFamily>(entries: &Entries<A>, source: A, group: A) -> bool {
        entries
            .iter()
            .filter(|(k, _)| k.source == source && A::contains(&k.destination, group))
            .max_by_key(|(k, _)| A::prefix(&k.destination))
            .is_some_and(|(_, v)| v.gateway != Gateway::Excluded)
    }

    /// Sync `from` into `to` at several capacities and replay every step,
    /// entry writes and length changes alike: no state on the way lets
    /// `excluded` out from `pod` through the datapath's probes, and every
    /// entry held has its length in each of its buckets. At the end the map
    /// holds `to`, the lengths are exactly `to`'s, and the probes answer
    /// for each of `groups` what the longest prefix match does.
    fn assert_never_lets_out<A: PolicyFamily>(
        pod: A,
        excluded: A,
        groups: &[A],
        from: &Entries<A>,
        to: &Entries<A>,
    ) {
        assert!(!lets_out(from, pod, excluded) && !lets_out(to, pod, excluded));
        for capacity in [to.len().max(2), to.len() + 1, 8] {
            let rec = Recorder::new(from, capacity);
            apply_policies(&rec, &rec, from, to, capacity).unwrap();
            assert_eq!(*rec.held.borrow(), *to, "capacity {capacity}");
            let (mut state, mut lens) = (from.clone(), lens_of(from));
            for op in rec.steps() {
                match op {
                    Op::Put(key) => drop(state.insert(key, to[&key])),
                    Op::Delete(key) => drop(state.remove(&key)),
                    Op::Lens(now) => lens = now,
                }
                assert!(
                    !datapath_lets_out(&state, &lens, pod, excluded),
                    "capacity {capacity}: {:?} lets {excluded:?} out",
                    rec.steps()
                );
                for key in state.keys() {
                    for b in PolicyLens::<A>::buckets(key.destination) {
                        let held = lens.get(&b).copied().unwrap_or_default();
                        assert!(
                            held.contains(A::prefix(&key.destination)),
                            "capacity {capacity}: {key:?} not probed in bucket {b}: {:?}",
                            rec.steps()
                        );
                    }
                }
            }
            lens.retain(|_, l| !l.is_empty());
            assert_eq!(
                lens,
                lens_of(to),
                "capacity {capacity}: lengths of what is left"
            );
            for g in groups.iter().chain([&excluded]) {
                assert_eq!(
                    datapath_lets_out(&state, &lens, pod, *g),
                    lets_out(to, pod, *g),
                    "capacity {capacity}: {g:?}"
                );
            }
        }
    }

    /// No state along the way lets out a group that neither the old nor the
    /// new entries let out: every state is checked for a group inside the
    /// exclusion.
    #[test]
    fn exclusions_go_in_first_and_out_last() {
        let pod = [198, 51, 100, 1];
        let excluded_group = Ipv4Addr::new(232, 1, 255, 1);
        let old: BTreeMap<_, _> = [
            entry(pod, "232.1.0.0/16", GW),
            entry(pod, "232.1.255.0/24", Gateway::Excluded),
        ]
        .into();
        let new: BTreeMap<_, _> = [entry(pod, "232.2.0.0/16", GW)].into();
        let groups = [Ipv4Addr::new(232, 1, 1, 1), Ipv4Addr::new(232, 2, 255, 1)];
        for (from, to) in [(&BTreeMap::new(), &old), (&old, &new), (&new, &old)] {
            assert_never_lets_out(pod.into(), excluded_group, &groups, from, to);
        }
    }

    #[test]
    fn a_full_map_is_turned_over_stale_entries_first() {
        let old: BTreeMap<_, _> = [
            entry([198, 51, 100, 1], "232.1.0.0/16", GW),
            entry([198, 51, 100, 2], "232.1.0.0/16", GW),
        ]
        .into();
        let new: BTreeMap<_, _> = [
            entry([198, 51, 100, 3], "232.1.0.0/16", GW),
            entry([198, 51, 100, 4], "232.1.0.0/16", GW),
        ]
        .into();
        let rec = Recorder::new(&old, 2);
        let stats = apply_policies(&rec, &rec, &old, &new, 2).unwrap();
        assert_eq!(*rec.held.borrow(), new);
        assert_eq!((stats.written, stats.removed), (2, 2));
        assert!(
            rec.ops()[..2].iter().all(|(op, _)| *op == '-'),
            "{:?}",
            rec.ops()
        );
        // With room, make-before-break: writes first.
        let rec = Recorder::new(&old, 4);
        apply_policies(&rec, &rec, &old, &new, 4).unwrap();
        assert!(
            rec.ops()[..2].iter().all(|(op, _)| *op == '+'),
            "{:?}",
            rec.ops()
        );
    }

    fn entry6(source: &str, prefix: &str, gateway: Gateway) -> (PolicyKey6, PolicyValue6) {
        (
            PolicyKey6 {
                source: source.parse().unwrap(),
                destination: prefix.parse::<Ipv6Network>().unwrap(),
            },
            PolicyValue6 {
                egress_ip: Ipv6Addr::UNSPECIFIED,
                gateway,
                egress_ifindex: 0,
                policy_id: 7,
                origin: Origin::default(),
            },
        )
    }

    /// The IPv6 map fits as the IPv4 one does: own pods first, pods whole.
    #[test]
    fn a_full_ipv6_map_keeps_own_pods_first_and_pods_whole() {
        let (remote_a, remote_b, own) = ("2001:db8::1", "2001:db8::2", "2001:db8::200");
        let all: BTreeMap<_, _> = [
            entry6(remote_a, "ff3e::/96", GW),
            entry6(remote_a, "ff3e::ff00/120", Gateway::Excluded),
            entry6(remote_b, "ff3e::/96", GW),
            entry6(own, "ff3e::/96", GW),
            entry6(own, "ff3e::ff00/120", Gateway::Excluded),
        ]
        .into();
        let own_set: BTreeSet<Ipv6Addr> = [own.parse().unwrap()].into();
        let (fitted, fit) = fit_policies(&all, Some(&own_set), 3);
        let sources: BTreeSet<Ipv6Addr> = fitted.keys().map(|k| k.source).collect();
        assert_eq!(
            sources,
            [own.parse().unwrap(), remote_b.parse().unwrap()].into()
        );
        assert_eq!(
            (fit.left_out, fit.pods_left_out, fit.own_pods_left_out),
            (2, 1, 0)
        );
        let (fitted, _) = fit_policies(&all, Some(&own_set), 5);
        assert!(matches!(fitted, Cow::Borrowed(_)));
    }

    /// Make-before-break on the IPv6 map and its lengths: no state on the
    /// way lets an excluded group out, whatever the capacity. Among the
    /// entries a /96 over every bucket, a /120 exclusion in one, a /104
    /// over 256 of them and a /128.
    #[test]
    fn ipv6_exclusions_go_in_first_and_out_last() {
        let pod: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let excluded_group: Ipv6Addr = "ff3e::ff01".parse().unwrap();
        let old: BTreeMap<_, _> = [
            entry6("2001:db8::1", "ff3e::/96", GW),
            entry6("2001:db8::1", "ff3e::ff00/120", Gateway::Excluded),
        ]
        .into();
        let new: BTreeMap<_, _> = [
            entry6("2001:db8::1", "ff3e::1:0/112", GW),
            entry6("2001:db8::1", "ff3e::/104", GW),
            entry6("2001:db8::1", "ff3e::ff01/128", Gateway::Excluded),
        ]
        .into();
        let groups: Vec<Ipv6Addr> = ["ff3e::1:1", "ff3e::2:1", "ff3e::ff02", "ff3e::100:1"]
            .iter()
            .map(|g| g.parse().unwrap())
            .collect();
        for (from, to) in [(&BTreeMap::new(), &old), (&old, &new), (&new, &old)] {
            assert_never_lets_out(pod, excluded_group, &groups, from, to);
        }
    }

    #[test]
    fn names_of_policies_here_are_kept_first() {
        let ids: BTreeMap<String, u32> = [("a".into(), 1), ("b".into(), 2), ("c".into(), 3)].into();
        let (names, fit) = fit_names(&ids, &[3].into(), 2);
        assert_eq!(names, [(3, "c".into()), (1, "a".into())].into());
        assert_eq!((fit.needed, fit.capacity, fit.left_out), (3, 2, 1));
        let (names, fit) = fit_names(&ids, &BTreeSet::new(), 3);
        assert_eq!(names.len(), 3);
        assert!(!fit.short());
    }
}
