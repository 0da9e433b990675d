//! The `kubernetes` source: kube-rs watches on the three `cilium.io/v2`
//! kinds, each feeding a reflector store.
//!
//! Nothing is published until every kind has been listed once (the
//! watcher's `InitDone`): a snapshot with policies but no endpoints yet
//! would resolve to an empty map and withdraw every entry. After that, each
//! change is published ([`SETTLE`](super::SETTLE) after it, at most once per
//! [`DEBOUNCE`](super::DEBOUNCE)). A relist (after a failed request or an
//! expired resource version) swaps a store's contents only at its
//! `InitDone`, so every snapshot is consistent.
//!
//! Failed requests are retried after [`RETRY_FIRST`], doubling up to
//! [`RETRY_MAX`]: a request to an API server that is away or starting costs
//! it nothing, and the state is current within a second of its return. One
//! that answers it is overloaded (429, 504) is asked less often, up to
//! [`RETRY_MAX_BUSY`]. The client's own retries inside a request are off
//! ([`client`]). After its wait a failed watch starts over with a list,
//! whose end says that it works again. The source itself never gives up on
//! the API server. A failing watch is logged when it starts failing, again
//! every [`STILL_FAILING_EVERY`] while it fails, and when it recovers, and
//! it stays in [`SourceStats::failing`] meanwhile (the daemon's `/readyz`
//! says it).
//!
//! A watch that expired is no failure: told 410 Gone (the API server no
//! longer holds history back to the watch's resource version, as after its
//! restart or a compaction of etcd), the watcher lists again at once, which
//! keeps every object in force until the list is complete. That is logged
//! at info level and counted nowhere.
//!
//! Only a change to what resolution reads wakes it: each object is reduced
//! as it arrives to the compact form resolution reads ([`crate::objects`]),
//! which is all the source holds, so a status write that moves
//! `resourceVersion` and nothing else leaves the held object equal, and
//! such an event, like a relist that finds the objects held, takes no
//! snapshot at all. Bookmarks and re-watches after a timeout never reach
//! the source: the watcher keeps them to itself.

use std::fmt::Debug;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::stream::{self, Stream, StreamExt};
use kube::runtime::watcher;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use tracing::{debug, info, trace, warn};

use super::{
    blocking, due_after, publish, stopped, ObjectKind, Shutdown, SnapshotSender, SourceError,
    SourceKind, SourceStats,
};
use crate::chain::error_chain;
use crate::crd::{CiliumEgressGatewayPolicy, CiliumEndpoint};
use crate::objects::{self, Identities, Key, Keyed, Objects};

/// How often a watch that keeps failing is logged again (each failure in
/// between is logged at debug level).
const STILL_FAILING_EVERY: Duration = Duration::from_secs(60);

/// The wait after a watch's first failed request.
const RETRY_FIRST: Duration = Duration::from_millis(250);

/// The longest wait between two requests of a failing watch.
const RETRY_MAX: Duration = Duration::from_millis(500);

/// The longest wait between two requests of a watch the API server asks to
/// slow down (429 Too Many Requests, 504 Gateway Timeout: it is
/// overloaded).
const RETRY_MAX_BUSY: Duration = Duration::from_secs(10);

/// Runs the Kubernetes source with a client from the in-cluster config or
/// `KUBECONFIG`, until `shutdown` fires.
pub(super) async fn run(
    tx: SnapshotSender,
    stats: Arc<SourceStats>,
    shutdown: Shutdown,
) -> Result<(), SourceError> {
    let config = kube::Config::infer()
        .await
        .map_err(|e| SourceError::KubeClient(kube::Error::InferConfig(e)))?;
    run_with_client(client(config)?, tx, stats, shutdown).await
}

/// The source's client from `config`. kube-rs's own retry of 429, 503 and
/// 504 inside each request is off: it waits as long as the API server's
/// `Retry-After` says, seconds for one that is starting, while the watch
/// it holds up could have been retried at once. The watches retry at
/// their own pace instead ([`RETRY_MAX`], [`RETRY_MAX_BUSY`]).
pub fn client(mut config: kube::Config) -> Result<Client, SourceError> {
    config.default_retry = false;
    Client::try_from(config).map_err(SourceError::KubeClient)
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

/// One kind's objects as the source holds them: reduced, keyed by
/// (namespace, name).
struct Held<T> {
    objects: Keyed<T>,
    /// The objects listed since a relist began; they replace `objects` at
    /// its end, so that every snapshot is consistent.
    relist: Option<Keyed<T>>,
}

impl<T> Default for Held<T> {
    fn default() -> Self {
        Held {
            objects: Keyed::new(),
            relist: None,
        }
    }
}

type Shared<T> = Arc<Mutex<Held<T>>>;

fn lock<T>(held: &Shared<T>) -> std::sync::MutexGuard<'_, Held<T>> {
    // Held data stays consistent across a panic (every update is one map
    // operation), so a poisoned lock is still good to use.
    held.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<T: PartialEq> Held<T> {
    /// Applies one event, reduced, and says what it did.
    fn apply(&mut self, event: watcher::Event<(Key, T)>) -> Change {
        match event {
            watcher::Event::Init => {
                self.relist = Some(Keyed::new());
                Change::Init
            }
            watcher::Event::InitApply((key, obj)) => {
                // Share what is held when it is equal, so an unchanged
                // object is never held twice.
                let obj = match self.objects.get(&key) {
                    Some(held) if **held == obj => held.clone(),
                    _ => Arc::new(obj),
                };
                self.relist.get_or_insert_with(Keyed::new).insert(key, obj);
                Change::Listed
            }
            watcher::Event::InitDone => {
                let listed = self.relist.take().unwrap_or_default();
                let changed = listed != self.objects;
                self.objects = listed;
                Change::InitDone { changed }
            }
            watcher::Event::Apply((key, obj)) => match self.objects.get(&key) {
                Some(held) if **held == obj => Change::Unchanged,
                _ => {
                    self.objects.insert(key, Arc::new(obj));
                    Change::Applied
                }
            },
            watcher::Event::Delete((key, _)) => match self.objects.remove(&key) {
                Some(_) => Change::Applied,
                None => Change::Unchanged,
            },
        }
    }

    fn snapshot(&self) -> Vec<Arc<T>> {
        // Keyed by (namespace, name): already in snapshot order.
        self.objects.values().cloned().collect()
    }
}

/// The watcher of one kind, each object reduced by `reduce` and applied to
/// the returned store, tagged with its kind.
fn watch_kind<K, T>(
    client: &Client,
    kind: ObjectKind,
    mut reduce: impl FnMut(&K) -> T + Send + 'static,
) -> (Shared<T>, Pin<Box<dyn Stream<Item = Tagged> + Send>>)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static,
    T: PartialEq + Send + Sync + 'static,
{
    let held: Shared<T> = Arc::default();
    let store = held.clone();
    let mut keyed = move |obj: K| {
        let meta = obj.meta();
        let key = (
            meta.namespace.as_deref().unwrap_or_default().into(),
            meta.name.as_deref().unwrap_or_default().into(),
        );
        (key, reduce(&obj))
    };
    let api = Api::<K>::all(client.clone());
    let events =
        backing_off(move || watcher(api.clone(), watcher::Config::default())).map(move |event| {
            let change = event.map(|event| {
                let event = match event {
                    watcher::Event::Apply(obj) => watcher::Event::Apply(keyed(obj)),
                    watcher::Event::Delete(obj) => watcher::Event::Delete(keyed(obj)),
                    watcher::Event::Init => watcher::Event::Init,
                    watcher::Event::InitApply(obj) => watcher::Event::InitApply(keyed(obj)),
                    watcher::Event::InitDone => watcher::Event::InitDone,
                };
                lock(&held).apply(event)
            });
            (kind, change)
        });
    (store, events.boxed())
}

/// The HTTP status the API server failed a watch's request with, if it
/// answered.
fn status(error: &watcher::Error) -> Option<u16> {
    match error {
        watcher::Error::WatchError(status)
        | watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => Some(status.code),
        _ => None,
    }
}

/// Whether a watch request failed only because its resource version
/// expired (410 Gone): the API server no longer holds history back to it.
/// The watcher lists again at once; that is routine, not a failure.
fn expired(error: &watcher::Error) -> bool {
    status(error) == Some(410)
}

/// Whether the API server asked to be asked less often.
fn busy(error: &watcher::Error) -> bool {
    matches!(status(error), Some(429 | 504))
}

/// Waits between a watch's failed requests: [`RETRY_FIRST`], doubling up
/// to a cap, each shortened by up to half at random so that the nodes of a
/// cluster do not ask in step.
struct Backoff {
    failures: u32,
    random: u64,
}

impl Backoff {
    fn new() -> Backoff {
        use std::hash::{BuildHasher, Hasher};
        Backoff {
            failures: 0,
            // A seed of its own per process and watch; never zero.
            random: std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish()
                | 1,
        }
    }

    fn next(&mut self, cap: Duration) -> Duration {
        let full = RETRY_FIRST
            .saturating_mul(1 << self.failures.min(16))
            .min(cap);
        self.failures = self.failures.saturating_add(1);
        // xorshift64
        self.random ^= self.random << 13;
        self.random ^= self.random >> 7;
        self.random ^= self.random << 17;
        let half = full / 2;
        let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(self.random % nanos.saturating_add(1))
    }

    fn reset(&mut self) {
        self.failures = 0;
    }
}

/// The events of the watches `start` makes, paused after each failed
/// request ([`Backoff`], up to [`RETRY_MAX`], or [`RETRY_MAX_BUSY`] when the
/// API server is busy), and then started over with a list, whose end says
/// the watch works again (a watch resumed from its resource version says
/// nothing until the next change, which may be long in coming). After an
/// expiry the watcher lists again by itself, at once.
fn backing_off<S, T>(
    mut start: impl FnMut() -> S + Send + 'static,
) -> impl Stream<Item = watcher::Result<watcher::Event<T>>> + Send
where
    S: Stream<Item = watcher::Result<watcher::Event<T>>> + Send + 'static,
{
    let state = (Box::pin(start()), start, Backoff::new(), None::<Duration>);
    stream::unfold(
        state,
        |(mut events, mut start, mut backoff, pause)| async move {
            if let Some(pause) = pause {
                tokio::time::sleep(pause).await;
                events = Box::pin(start());
            }
            let event = events.next().await?;
            let pause = match &event {
                // Emitted before the list is asked for: no success yet.
                Ok(watcher::Event::Init) => None,
                Ok(_) => {
                    backoff.reset();
                    None
                }
                Err(error) if expired(error) => None,
                Err(error) if busy(error) => Some(backoff.next(RETRY_MAX_BUSY)),
                Err(_) => Some(backoff.next(RETRY_MAX)),
            };
            Some((event, (events, start, backoff, pause)))
        },
    )
}

/// The three stores, and the identities their endpoints share.
struct Stores {
    policies: Shared<CiliumEgressGatewayPolicy>,
    nodes: Shared<objects::Node>,
    endpoints: Shared<objects::Endpoint>,
    identities: Arc<Mutex<Identities>>,
}

impl Stores {
    fn snapshot(&self) -> Objects {
        let objects = Objects {
            policies: lock(&self.policies).snapshot(),
            nodes: lock(&self.nodes).snapshot(),
            endpoints: lock(&self.endpoints).snapshot(),
        };
        // Identities of deleted endpoints go now; the snapshot holds the
        // ones in use.
        self.identities
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .prune();
        objects
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
    let identities = Arc::new(Mutex::new(Identities::default()));
    let (policies, policy_events) = watch_kind(&client, ObjectKind::Policy, objects::policy);
    let (nodes, node_events) = watch_kind(&client, ObjectKind::Node, objects::Node::new);
    let shared = identities.clone();
    let (endpoints, endpoint_events) = watch_kind(
        &client,
        ObjectKind::Endpoint,
        move |cep: &CiliumEndpoint| {
            let mut identities = shared.lock().unwrap_or_else(PoisonError::into_inner);
            objects::Endpoint::new(cep, &mut identities)
        },
    );
    let stores = Stores {
        policies,
        nodes,
        endpoints,
        identities,
    };
    let mut events = stream::select_all([policy_events, node_events, endpoint_events]);

    // Per kind: listed once; failing since the last log of it, and how many
    // times (to log a failure once, then at a low rate, not on every
    // backoff retry).
    let mut synced = [false; 3];
    let mut failing: [Option<(Instant, u64)>; 3] = [None; 3];
    for kind in ObjectKind::ALL {
        stats.set_watch_error(kind, None);
    }
    // When to publish the changes gathered so far; None when nothing is
    // pending. Not pushed back by later events, so a steady trickle of
    // endpoint churn cannot hold a policy change back indefinitely.
    let mut due: Option<Instant> = None;
    // When the last snapshot was taken.
    let mut last_snapshot: Option<Instant> = None;

    loop {
        tokio::select! {
            () = stopped(&mut shutdown) => {
                debug!("kubernetes source stopping");
                return Ok(());
            }
            () = sleep_until(due), if due.is_some() => {
                due = None;
                last_snapshot = Some(Instant::now());
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
                    Err(error) if expired(&error) => {
                        info!(kind = kind.kind_name(), "watch expired (410 Gone); listing again");
                        continue;
                    }
                    Err(error) => {
                        let error = error_chain(&error);
                        match &mut failing[i] {
                            None => {
                                failing[i] = Some((Instant::now(), 0));
                                stats.add_error();
                                warn!(kind = kind.kind_name(), %error, "watch failed; retrying with backoff");
                            }
                            Some((logged, since_log)) if logged.elapsed() >= STILL_FAILING_EVERY => {
                                warn!(
                                    kind = kind.kind_name(),
                                    %error,
                                    failures = *since_log + 1,
                                    "watch still failing; retrying with backoff"
                                );
                                *logged = Instant::now();
                                *since_log = 0;
                            }
                            Some((_, since_log)) => {
                                *since_log += 1;
                                debug!(kind = kind.kind_name(), %error, "watch still failing");
                            }
                        }
                        stats.set_watch_error(kind, Some(error));
                        continue;
                    }
                };
                // A relist starting (Init) is not yet a success: the list
                // itself may fail again.
                if failing[i].is_some() && !matches!(change, Change::Init) {
                    failing[i] = None;
                    stats.set_watch_error(kind, None);
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
                    due = Some(due_after(last_snapshot));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> Box<kube::core::Status> {
        Box::new(kube::core::Status {
            code,
            ..kube::core::Status::default()
        })
    }

    #[test]
    fn only_410_is_an_expiry() {
        assert!(expired(&watcher::Error::WatchError(status(410))));
        assert!(expired(&watcher::Error::InitialListFailed(
            kube::Error::Api(status(410))
        )));
        assert!(expired(&watcher::Error::WatchStartFailed(
            kube::Error::Api(status(410))
        )));
        for code in [403, 429, 500, 503] {
            assert!(
                !expired(&watcher::Error::WatchError(status(code))),
                "{code}"
            );
            assert!(
                !expired(&watcher::Error::WatchStartFailed(kube::Error::Api(status(
                    code
                )))),
                "{code}"
            );
        }
        assert!(!expired(&watcher::Error::NoResourceVersion));
    }

    #[test]
    fn only_429_and_504_ask_to_slow_down() {
        for code in [429, 504] {
            assert!(busy(&watcher::Error::WatchError(status(code))), "{code}");
        }
        for code in [403, 410, 500, 503] {
            assert!(!busy(&watcher::Error::WatchError(status(code))), "{code}");
        }
        assert!(!busy(&watcher::Error::NoResourceVersion));
    }

    #[test]
    fn backoff_doubles_to_its_cap_spread_over_the_upper_half() {
        let mut backoff = Backoff::new();
        let waits: Vec<Duration> = (0..50).map(|_| backoff.next(RETRY_MAX)).collect();
        assert!(
            waits[0] >= RETRY_FIRST / 2 && waits[0] <= RETRY_FIRST,
            "{waits:?}"
        );
        for w in &waits[1..] {
            assert!(*w >= RETRY_MAX / 2 && *w <= RETRY_MAX, "{waits:?}");
        }
        // Spread, not one value.
        let distinct: std::collections::BTreeSet<_> = waits[1..].iter().collect();
        assert!(distinct.len() > 10, "{waits:?}");
        backoff.reset();
        assert!(backoff.next(RETRY_MAX) <= RETRY_FIRST);
        // Busy: doubling on to its own cap.
        let busy: Vec<Duration> = (0..10).map(|_| backoff.next(RETRY_MAX_BUSY)).collect();
        assert!(
            busy[9] >= RETRY_MAX_BUSY / 2 && busy[9] <= RETRY_MAX_BUSY,
            "{busy:?}"
        );
        assert!(busy[3] <= RETRY_FIRST * 16, "{busy:?}");
    }
}
