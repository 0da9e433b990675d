//! The `kubernetes` source: kube-rs watches on the three `cilium.io/v2`
//! kinds, each feeding a reflector store.
//!
//! Nothing is published until every kind has been listed once (the
//! watcher's `InitDone`): a snapshot with policies but no endpoints yet
//! would resolve to an empty map and withdraw every entry. After that, each
//! change is published, coalesced over [`DEBOUNCE`]. A relist (after a
//! dropped watch or an expired resource version) swaps a store's contents
//! only at its `InitDone`, so every snapshot is consistent. Failed requests
//! are retried by the watcher with kube-rs's default backoff; the source
//! itself never gives up on the API server.
//!
//! Only a change to what resolution reads wakes it: the stores keep just
//! the metadata resolution uses (name, namespace, uid, labels), so a status
//! write that moves `resourceVersion` and nothing else leaves the stored
//! object equal, and such an event, like a relist that finds the objects
//! held, takes no snapshot at all. Bookmarks and re-watches after a
//! timeout never reach the source: the watcher keeps them to itself.

use std::fmt::Debug;
use std::pin::Pin;
use std::sync::Arc;

use futures::stream::{self, Stream, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use tracing::{debug, info, trace, warn};

use super::{
    blocking, publish, sort_objects, stopped, ObjectKind, Shutdown, SnapshotSender, SourceError,
    SourceKind, SourceStats, DEBOUNCE,
};
use crate::crd::{CiliumEgressGatewayPolicy, CiliumEndpoint, CiliumNode, Objects};

/// Runs the Kubernetes source with a client from the in-cluster config or
/// `KUBECONFIG`, until `shutdown` fires.
pub(super) async fn run(
    tx: SnapshotSender,
    stats: Arc<SourceStats>,
    shutdown: Shutdown,
) -> Result<(), SourceError> {
    let client = Client::try_default()
        .await
        .map_err(SourceError::KubeClient)?;
    run_with_client(client, tx, stats, shutdown).await
}

/// What a watch event did to its store, reduced to what the loop needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    /// A relist started; the store is unchanged until `InitDone`.
    Init,
    /// An object arrived during a relist (buffered, store unchanged).
    Listed,
    /// An object was added, modified or deleted: the store changed.
    Applied,
    /// An added, modified or deleted object that leaves the store as it
    /// was: an update of fields resolution does not read (a new
    /// `resourceVersion`, status it ignores), or the deletion of an object
    /// the store does not hold.
    Unchanged,
    /// A relist completed: the store now holds exactly the listed objects,
    /// which may be the ones it held before.
    InitDone { changed: bool },
}

type Tagged = (ObjectKind, Result<Change, watcher::Error>);

/// The watcher of one kind, reflected into a store, tagged with its kind.
fn watch_kind<K>(
    client: &Client,
    kind: ObjectKind,
) -> (Store<K>, Pin<Box<dyn Stream<Item = Tagged> + Send>>)
where
    K: Resource<DynamicType = ()>
        + Clone
        + PartialEq
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
{
    let (store, mut writer) = reflector::store::<K>();
    let held = store.clone();
    let mut relist = Relist::default();
    let events = watcher(Api::<K>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .modify(keep_what_resolution_reads)
        // The store is written here rather than by `reflect`, so that each
        // event can be compared with what the store held before it.
        .map(move |event| {
            let change = event.map(|event| {
                let change = relist.classify(&held, &event);
                writer.apply_watcher_event(&event);
                change
            });
            (kind, change)
        });
    (store, events.boxed())
}

/// Drops the metadata resolution does not read. Besides the memory (managed
/// fields are often half an object's size, and CiliumEndpoints are many),
/// this makes an update that touches nothing resolution reads compare equal
/// to the object held: `resourceVersion` changes with every status write.
/// The watcher has taken the resource version it resumes from before this.
fn keep_what_resolution_reads<K: Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    *meta = ObjectMeta {
        name: meta.name.take(),
        namespace: meta.namespace.take(),
        uid: meta.uid.take(),
        labels: meta.labels.take(),
        ..ObjectMeta::default()
    };
}

/// Tells the events that change a store from those that do not.
#[derive(Debug, Default)]
struct Relist {
    /// Objects listed since the relist began.
    listed: usize,
    /// A listed object differs from the one held, or was not held.
    differs: bool,
}

impl Relist {
    /// Called before `event` is applied to `held`.
    fn classify<K>(&mut self, held: &Store<K>, event: &watcher::Event<K>) -> Change
    where
        K: Resource<DynamicType = ()> + Clone + PartialEq + 'static,
    {
        let holds = |obj: &K| held.get(&ObjectRef::from_obj(obj));
        match event {
            watcher::Event::Init => {
                *self = Relist::default();
                Change::Init
            }
            watcher::Event::InitApply(obj) => {
                self.listed += 1;
                if holds(obj).as_deref() != Some(obj) {
                    self.differs = true;
                }
                Change::Listed
            }
            watcher::Event::Apply(obj) => {
                if holds(obj).as_deref() == Some(obj) {
                    Change::Unchanged
                } else {
                    Change::Applied
                }
            }
            watcher::Event::Delete(obj) => {
                if holds(obj).is_some() {
                    Change::Applied
                } else {
                    Change::Unchanged
                }
            }
            // Every listed object is held as it is, and there are as many:
            // the store ends as it was (keys are unique on both sides).
            watcher::Event::InitDone => Change::InitDone {
                changed: self.differs || self.listed != held.state().len(),
            },
        }
    }
}

/// The three stores.
struct Stores {
    policies: Store<CiliumEgressGatewayPolicy>,
    nodes: Store<CiliumNode>,
    endpoints: Store<CiliumEndpoint>,
}

impl Stores {
    fn snapshot(&self) -> Objects {
        fn read<K: Resource + Clone>(store: &Store<K>) -> Vec<K>
        where
            K::DynamicType: Eq + std::hash::Hash + Clone,
        {
            let mut objects: Vec<K> = store.state().iter().map(|o| K::clone(o)).collect();
            sort_objects(&mut objects);
            objects
        }
        Objects {
            policies: read(&self.policies),
            nodes: read(&self.nodes),
            endpoints: read(&self.endpoints),
        }
    }
}

/// Runs the Kubernetes source on `client` until `shutdown` fires. Tests
/// pass a client over a mocked API server.
pub async fn run_with_client(
    client: Client,
    tx: SnapshotSender,
    stats: Arc<SourceStats>,
    mut shutdown: Shutdown,
) -> Result<(), SourceError> {
    let (policies, policy_events) =
        watch_kind::<CiliumEgressGatewayPolicy>(&client, ObjectKind::Policy);
    let (nodes, node_events) = watch_kind::<CiliumNode>(&client, ObjectKind::Node);
    let (endpoints, endpoint_events) = watch_kind::<CiliumEndpoint>(&client, ObjectKind::Endpoint);
    let stores = Stores {
        policies,
        nodes,
        endpoints,
    };
    let mut events = stream::select_all([policy_events, node_events, endpoint_events]);

    // Per kind: listed once; currently failing (to log a failure once, not
    // on every backoff retry).
    let mut synced = [false; 3];
    let mut failing = [false; 3];
    // When to publish the changes gathered so far; None when nothing is
    // pending. Not pushed back by later events, so a steady trickle of
    // endpoint churn cannot hold a policy change back indefinitely.
    let mut due: Option<Instant> = None;

    loop {
        tokio::select! {
            () = stopped(&mut shutdown) => {
                debug!("kubernetes source stopping");
                return Ok(());
            }
            () = sleep_until(due), if due.is_some() => {
                due = None;
                stats.add_scan();
                // Copying, sorting and comparing every object: CPU-heavy
                // on a large cluster, kept off the async workers.
                blocking(|| {
                    let objects = stores.snapshot();
                    let (p, n, e) = (objects.policies.len(), objects.nodes.len(), objects.endpoints.len());
                    if publish(&tx, &stats, objects) {
                        debug!(policies = p, nodes = n, endpoints = e, "kubernetes snapshot published");
                    }
                });
            }
            event = events.next() => {
                let Some((kind, result)) = event else {
                    // select_all ends only when all three streams have; report
                    // the first, they are alike.
                    return Err(SourceError::WatchEnded { kind: ObjectKind::Policy });
                };
                let i = kind.index();
                let change = match result {
                    Ok(change) => change,
                    Err(error) => {
                        if !failing[i] {
                            failing[i] = true;
                            stats.add_error();
                            warn!(kind = kind.kind_name(), %error, "watch failed; retrying with backoff");
                        } else {
                            debug!(kind = kind.kind_name(), %error, "watch still failing");
                        }
                        continue;
                    }
                };
                // A relist starting (Init) is not yet a success: the list
                // itself may fail again.
                if failing[i] && !matches!(change, Change::Init) {
                    failing[i] = false;
                    info!(kind = kind.kind_name(), "watch recovered");
                }
                let changed = match change {
                    Change::Init => {
                        debug!(kind = kind.kind_name(), "listing");
                        continue;
                    }
                    Change::Listed => {
                        stats.add_events(SourceKind::Kubernetes, kind, 1);
                        continue;
                    }
                    Change::Unchanged => {
                        trace!(kind = kind.kind_name(), "update of nothing resolution reads");
                        continue;
                    }
                    Change::Applied => {
                        stats.add_events(SourceKind::Kubernetes, kind, 1);
                        true
                    }
                    Change::InitDone { changed } => {
                        if !synced[i] {
                            synced[i] = true;
                            info!(kind = kind.kind_name(), "initial list complete");
                        } else if !changed {
                            debug!(kind = kind.kind_name(), "relist found the objects held");
                        }
                        changed
                    }
                };
                // Before every kind is listed, a snapshot would be partial.
                // The first complete one is published even when empty.
                let first = tx.borrow().is_none();
                if synced.iter().all(|s| *s) && (changed || first) && due.is_none() {
                    due = Some(Instant::now() + DEBOUNCE);
                }
            }
        }
    }
}

async fn sleep_until(due: Option<Instant>) {
    if let Some(due) = due {
        tokio::time::sleep_until(due).await;
    }
}
