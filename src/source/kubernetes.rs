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

use std::fmt::Debug;
use std::pin::Pin;
use std::sync::Arc;

use futures::stream::{self, Stream, StreamExt};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{
    publish, sort_objects, stopped, ObjectKind, Shutdown, SnapshotSender, SourceError, SourceKind,
    SourceStats, DEBOUNCE,
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
    /// A relist completed: the store now holds exactly the listed objects.
    InitDone,
}

type Tagged = (ObjectKind, Result<Change, watcher::Error>);

/// The watcher of one kind, reflected into a store, tagged with its kind.
fn watch_kind<K>(
    client: &Client,
    kind: ObjectKind,
) -> (Store<K>, Pin<Box<dyn Stream<Item = Tagged> + Send>>)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (store, writer) = reflector::store::<K>();
    let events = watcher(Api::<K>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        // Managed fields are often half an object's size and nothing here
        // reads them; CiliumEndpoints are many.
        .modify(|obj: &mut K| obj.meta_mut().managed_fields = None)
        .reflect(writer)
        .map(move |event| {
            let change = event.map(|event| match event {
                watcher::Event::Init => Change::Init,
                watcher::Event::InitApply(_) => Change::Listed,
                watcher::Event::Apply(_) | watcher::Event::Delete(_) => Change::Applied,
                watcher::Event::InitDone => Change::InitDone,
            });
            (kind, change)
        });
    (store, events.boxed())
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
                let objects = stores.snapshot();
                let (p, n, e) = (objects.policies.len(), objects.nodes.len(), objects.endpoints.len());
                if publish(&tx, &stats, objects) {
                    debug!(policies = p, nodes = n, endpoints = e, "kubernetes snapshot published");
                }
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
                match change {
                    Change::Init => {
                        debug!(kind = kind.kind_name(), "listing");
                        continue;
                    }
                    Change::Listed => {
                        stats.add_events(SourceKind::Kubernetes, kind, 1);
                        continue;
                    }
                    Change::Applied => stats.add_events(SourceKind::Kubernetes, kind, 1),
                    Change::InitDone => {
                        if !synced[i] {
                            synced[i] = true;
                            info!(kind = kind.kind_name(), "initial list complete");
                        }
                    }
                }
                // Before every kind is listed, a snapshot would be partial.
                if synced.iter().all(|s| *s) && due.is_none() {
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
