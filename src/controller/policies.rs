//! Policies: the resolution of the cluster's objects → the policy maps.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Instant;

use crate::datapath::maps::{Status, POLICY_MAP, POLICY_NAMES_MAP, POLICY_V6_MAP};
use crate::datapath::Maps;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::objects::Objects;
use crate::resolve::{self, LocalNode, LocalPods, Problem, Severity, Subject};
use crate::sync;

use super::Once;

/// Passes between repairs of the maps when nothing changed.
const FULL_SYNC_EVERY: u32 = 30;

/// What the policies reconciler works with.
pub(super) struct Env<'a> {
    pub maps: &'a Maps,
    pub health: &'a Health,
    pub metrics: &'a Metrics,
    pub node_name: &'a str,
}

/// Everything a resolution depends on besides the configuration.
#[derive(Debug, Clone)]
pub(super) struct Inputs {
    /// Held, so that its address cannot be reused by a later snapshot.
    pub objects: Arc<Objects>,
    pub local: LocalNode,
    pub local_pods: Option<LocalPods>,
}

impl PartialEq for Inputs {
    fn eq(&self, other: &Self) -> bool {
        // A snapshot is immutable: the same Arc is the same objects.
        Arc::ptr_eq(&self.objects, &other.objects)
            && self.local == other.local
            && self.local_pods == other.local_pods
    }
}

/// A resolution as written: the entries that fit, the names that fit.
struct Resolved {
    /// Narrowed to this node, its policy entries to those that fit.
    desired: resolve::Desired,
    names: BTreeMap<u32, String>,
}

struct Last {
    inputs: Inputs,
    resolved: Resolved,
    /// Passes since it was last synced.
    age: u32,
    /// Its last sync failed: retried every pass, without resolving again.
    failed: bool,
}

#[derive(Default)]
pub(super) struct Policies {
    syncs: u64,
    synced_once: bool,
    /// The findings logged, to log each once.
    problems: BTreeSet<Problem>,
    /// This node's IP from the last resolution that knew it.
    known_node_ip: Option<Ipv4Addr>,
    /// `CiliumEndpoint`s without an identity in the last resolution.
    endpoints_without_identity: usize,
    sync_error: Once,
    /// The last resolution, what it was computed from, and how many passes
    /// ago it was synced: unchanged inputs skip the work, but not for ever
    /// (a sync of the same result repairs maps someone else changed).
    last: Option<Last>,
}

impl Policies {
    /// This node's IP as last resolved, kept for a snapshot that lacks it.
    pub(super) fn known_node_ip(&self) -> Option<Ipv4Addr> {
        self.known_node_ip
    }

    pub(super) fn problems(&self) -> &BTreeSet<Problem> {
        &self.problems
    }

    pub(super) fn endpoints_without_identity(&self) -> usize {
        self.endpoints_without_identity
    }

    /// Resolve `inputs` and sync the maps to the result; unchanged inputs
    /// are not resolved again, only re-synced now and then (or every pass
    /// while the sync fails). Blocking: resolution is CPU-heavy on a large
    /// cluster and the map writes are syscalls.
    pub(super) fn reconcile(&mut self, env: &Env, inputs: Inputs, started: Instant) {
        if let Some(mut last) = self.last.take() {
            if last.inputs == inputs {
                last.age += 1;
                if last.failed || last.age >= FULL_SYNC_EVERY {
                    last.age = 0;
                    last.failed = !self.sync(env, &last.resolved, started);
                }
                self.last = Some(last);
                return;
            }
        }
        let resolved = self.resolve(env, &inputs);
        let failed = !self.sync(env, &resolved, started);
        self.last = Some(Last {
            inputs,
            resolved,
            age: 0,
            failed,
        });
    }

    /// Resolve `inputs` for this node and fit the result to the maps,
    /// reporting what is wrong with the input and what does not fit.
    fn resolve(&mut self, env: &Env, inputs: &Inputs) -> Resolved {
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
            env.health
                .set_node_unknown(Some(desired.node_problem().map_or_else(
                    || "this node's IP is unknown".to_string(),
                    |p| p.message.clone(),
                )));
        } else {
            env.health.set_node_unknown(None);
            self.known_node_ip = Some(desired.config.node_ip);
        }
        if let Some(local_pods) = &inputs.local_pods {
            resolve::retain_node_local(&mut desired, local_pods);
        }
        // What fits the maps, in the order that must win when not all does.
        let pods = inputs.local_pods.as_ref();
        let (policies, policy_fit) = sync::fit_policies(
            &desired.policies,
            pods.map(|p| &p.v4),
            env.maps.policy_capacity() as usize,
        );
        let policies = match policies {
            std::borrow::Cow::Borrowed(_) => None,
            std::borrow::Cow::Owned(fitted) => Some(fitted),
        };
        let (policies_v6, policy_v6_fit) = sync::fit_policies(
            &desired.policies_v6,
            pods.map(|p| &p.v6),
            env.maps.policy_v6.capacity() as usize,
        );
        let policies_v6 = match policies_v6 {
            std::borrow::Cow::Borrowed(_) => None,
            std::borrow::Cow::Owned(fitted) => Some(fitted),
        };
        let mut here: BTreeSet<u32> = policies
            .as_ref()
            .unwrap_or(&desired.policies)
            .values()
            .map(|v| v.policy_id)
            .collect();
        here.extend(
            policies_v6
                .as_ref()
                .unwrap_or(&desired.policies_v6)
                .values()
                .map(|v| v.policy_id),
        );
        let (names, names_fit) = sync::fit_names(
            &desired.policy_ids,
            &here,
            env.maps.policy_names_capacity() as usize,
        );
        let mut problems = desired.problems.clone();
        problems.extend(shortfall(POLICY_MAP, &policy_fit));
        problems.extend(shortfall(POLICY_V6_MAP, &policy_v6_fit));
        problems.extend(shortfall(POLICY_NAMES_MAP, &names_fit));
        problems.sort();
        self.report_problems(&problems);
        let short: Vec<String> = [(POLICY_MAP, &policy_fit), (POLICY_V6_MAP, &policy_v6_fit)]
            .into_iter()
            .filter(|(_, fit)| fit.short())
            .map(|(map, fit)| {
                format!(
                    "{} of the {} policy entries this node needs do not fit \
                     {map} (capacity {})",
                    fit.left_out, fit.needed, fit.capacity
                )
            })
            .collect();
        env.health
            .set_shortfall((!short.is_empty()).then(|| short.join("; ")));
        env.metrics.observe_fit(POLICY_MAP, &policy_fit);
        env.metrics.observe_fit(POLICY_V6_MAP, &policy_v6_fit);
        env.metrics.observe_fit(POLICY_NAMES_MAP, &names_fit);
        if let Some(fitted) = policies {
            desired.policies = fitted;
        }
        if let Some(fitted) = policies_v6 {
            desired.policies_v6 = fitted;
        }
        env.metrics.observe(&desired);
        Resolved { desired, names }
    }

    /// Bring the maps to `resolved`. Returns whether the policy maps were
    /// synced. Blocking: call it from `block_in_place`.
    fn sync(&mut self, env: &Env, resolved: &Resolved, started: Instant) -> bool {
        let Resolved { desired, names } = resolved;
        let policies = &desired.policies;
        let synced = sync::apply(env.maps, desired);
        // The names only serve the CLI: a failure there is not a failed sync.
        if let Err(e) = sync::apply_names(env.maps, names) {
            tracing::warn!(error = %e, "recording policy names for the CLI");
        }
        // Counters of policies that are gone would fill the map for good.
        let live: BTreeSet<u32> = desired.policy_ids.values().copied().collect();
        match env.maps.counters_retain_policies(&live) {
            Ok(0) => {}
            Ok(n) => tracing::info!(entries = n, "counters of removed policies dropped"),
            Err(e) => tracing::warn!(error = %e, "dropping counters of removed policies"),
        }
        env.metrics
            .sync_duration
            .observe(started.elapsed().as_secs_f64());
        match synced {
            Ok(s) => {
                if !s.is_noop() {
                    tracing::info!(
                        written = s.written,
                        removed = s.removed,
                        entries = policies.len(),
                        entries_v6 = desired.policies_v6.len(),
                        elapsed_us = started.elapsed().as_micros() as u64,
                        "policy maps synced"
                    );
                }
                if self.sync_error.clear() {
                    tracing::info!("policy maps synced again");
                }
                self.record_sync(env);
                if !self.synced_once {
                    self.synced_once = true;
                    env.health.set_synced(true);
                    tracing::info!(
                        policies = desired.policy_ids.len(),
                        entries = policies.len(),
                        entries_v6 = desired.policies_v6.len(),
                        nodes = desired.nodes.len(),
                        gateway_for = ?desired.local_gateway_for.keys().collect::<Vec<_>>(),
                        "first sync done"
                    );
                }
            }
            Err(e) => {
                env.metrics.sync_errors.inc();
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
    fn record_sync(&mut self, env: &Env) {
        self.syncs += 1;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        env.metrics.last_sync.set(now.as_secs_f64());
        let status = Status {
            node_name: env.node_name.to_string(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            last_sync_unix_ns: u64::try_from(now.as_nanos()).unwrap_or(u64::MAX),
            syncs: self.syncs,
        };
        if let Err(e) = env.maps.status_set(&status) {
            tracing::warn!(error = %e, "recording the sync in mcast_egw_status");
        }
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
}

/// The finding about a map that cannot hold what this node needs, if it
/// cannot: needed vs capacity, what is left out, and the flag to raise.
fn shortfall(map: &str, fit: &sync::Fit) -> Option<Problem> {
    if !fit.short() {
        return None;
    }
    let (severity, what, flag) = if map == POLICY_MAP || map == POLICY_V6_MAP {
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
