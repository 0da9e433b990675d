//! The two sources of Cilium objects: Kubernetes against a mocked API
//! server, manifests on real files in a temporary directory. No privileges
//! needed. Every wait is bounded, so a bug fails the test instead of
//! hanging it.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use kube::client::Body;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use cilium_mcast_egress::objects::Objects;
use cilium_mcast_egress::source::{
    self, load_dir, run_with_client, ObjectKind, SourceConfig, SourceError, SourceKind,
    SourceStats, DEBOUNCE,
};

/// Upper bound of any single wait: generous next to the 150 ms debounce,
/// small enough that a hang is noticed.
const TIMEOUT: Duration = Duration::from_secs(5);

type Snapshots = watch::Receiver<Option<Arc<Objects>>>;

async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(TIMEOUT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// How soon a change must show: a few debounce periods, far below the
/// 30 s full read that would otherwise hide a missed event.
const PROMPT: Duration = Duration::from_secs(1);

/// Like [`snapshot_where`], within `limit`.
async fn snapshot_within(
    rx: &mut Snapshots,
    limit: Duration,
    what: &str,
    pred: impl Fn(&Objects) -> bool,
) -> Arc<Objects> {
    let found =
        match tokio::time::timeout(limit, rx.wait_for(|s| s.as_deref().is_some_and(&pred))).await {
            Ok(found) => found.expect("source dropped its sender"),
            Err(_) => panic!("{what} not seen within {limit:?}"),
        };
    found.clone().expect("checked above")
}

/// Waits until the published snapshot satisfies `pred`, and returns it.
async fn snapshot_where(
    rx: &mut Snapshots,
    what: &str,
    pred: impl Fn(&Objects) -> bool,
) -> Arc<Objects> {
    let found = bounded(what, rx.wait_for(|s| s.as_deref().is_some_and(&pred)))
        .await
        .expect("source dropped its sender");
    found.clone().expect("checked above")
}

/// Waits until `cond` holds, polling (for state outside the channel).
async fn until(what: &str, cond: impl Fn() -> bool) {
    bounded(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

fn policy_names(o: &Objects) -> Vec<String> {
    o.policies
        .iter()
        .map(|p| p.metadata.name.clone().unwrap_or_default())
        .collect()
}
fn node_names(o: &Objects) -> Vec<String> {
    o.nodes.iter().map(|n| n.name.to_string()).collect()
}
fn endpoint_names(o: &Objects) -> Vec<String> {
    o.endpoints.iter().map(|e| e.name.to_string()).collect()
}

fn cidrs_of(o: &Objects, policy: &str) -> Vec<String> {
    o.policies
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some(policy))
        .map(|p| p.spec.destination_cidrs.clone())
        .unwrap_or_default()
}

fn node_ip(o: &Objects, node: &str) -> Option<String> {
    o.nodes
        .iter()
        .find(|n| &*n.name == node)
        .and_then(|n| n.internal_ips.first())
        .map(|a| a.to_string())
}

fn endpoint_ip(o: &Objects, endpoint: &str) -> Option<String> {
    o.endpoints
        .iter()
        .find(|e| &*e.name == endpoint)
        .and_then(|e| e.ipv4.first())
        .map(|a| a.to_string())
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

// ---------------------------------------------------------------------------
// Kubernetes
// ---------------------------------------------------------------------------

fn policy_json(name: &str, rv: &str, group: &str) -> Value {
    json!({
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumEgressGatewayPolicy",
        "metadata": { "name": name, "resourceVersion": rv, "uid": format!("uid-{name}") },
        "spec": {
            "selectors": [{ "podSelector": { "matchLabels": { "app": "camera" } } }],
            "destinationCIDRs": [group],
            "egressGateway": {
                "nodeSelector": { "matchLabels": { "egress": "true" } },
                "egressIP": "203.0.113.10"
            }
        }
    })
}

fn node_json(name: &str, rv: &str, ip: &str) -> Value {
    json!({
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNode",
        "metadata": { "name": name, "resourceVersion": rv, "labels": { "egress": "true" } },
        "spec": { "addresses": [{ "type": "InternalIP", "ip": ip }] }
    })
}

fn endpoint_json(name: &str, rv: &str, ip: &str) -> Value {
    json!({
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumEndpoint",
        "metadata": { "name": name, "namespace": "media", "resourceVersion": rv },
        "status": {
            "id": 1234,
            "identity": { "id": 51234, "labels": ["k8s:app=camera", "k8s:io.kubernetes.pod.namespace=media"] },
            "networking": { "addressing": [{ "ipv4": ip }], "node": "192.0.2.11" }
        }
    })
}

const PLURALS: [&str; 3] = [
    "ciliumegressgatewaypolicies",
    "ciliumnodes",
    "ciliumendpoints",
];

fn list_kind(plural: &str) -> &'static str {
    match plural {
        "ciliumegressgatewaypolicies" => "CiliumEgressGatewayPolicyList",
        "ciliumnodes" => "CiliumNodeList",
        _ => "CiliumEndpointList",
    }
}

/// Scripted responses for one resource: each list or watch request waits
/// for the next body the test queues for it. Answering a watch with a
/// finite batch of events is fine: the watcher re-watches from the last
/// resource version when a watch response ends.
struct Queues {
    lists: tokio::sync::Mutex<mpsc::UnboundedReceiver<Vec<u8>>>,
    watches: tokio::sync::Mutex<mpsc::UnboundedReceiver<Vec<u8>>>,
}

/// A mocked API server for the three Cilium kinds. Requests are dispatched
/// on their URI, so the order in which the watchers ask does not matter.
struct MockApi {
    lists: HashMap<&'static str, mpsc::UnboundedSender<Vec<u8>>>,
    watches: HashMap<&'static str, mpsc::UnboundedSender<Vec<u8>>>,
    /// Every request seen, as (plural, is_watch), in arrival order.
    seen: Arc<Mutex<Vec<(String, bool)>>>,
}

impl MockApi {
    fn start() -> (MockApi, kube::Client) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let mut lists = HashMap::new();
        let mut watches = HashMap::new();
        let mut queues: HashMap<String, Arc<Queues>> = HashMap::new();
        for plural in PLURALS {
            let (ltx, lrx) = mpsc::unbounded_channel();
            let (wtx, wrx) = mpsc::unbounded_channel();
            lists.insert(plural, ltx);
            watches.insert(plural, wtx);
            queues.insert(
                plural.to_string(),
                Arc::new(Queues {
                    lists: tokio::sync::Mutex::new(lrx),
                    watches: tokio::sync::Mutex::new(wrx),
                }),
            );
        }
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let uri = request.uri().clone();
                assert_eq!(request.method(), http::Method::GET, "unexpected {uri}");
                let path = uri.path();
                let plural = path.rsplit('/').next().unwrap_or_default().to_string();
                assert!(
                    path.starts_with("/apis/cilium.io/v2/") && queues.contains_key(&plural),
                    "unexpected request {uri}"
                );
                let is_watch = uri.query().unwrap_or_default().contains("watch=true");
                log.lock().unwrap().push((plural.clone(), is_watch));
                let q = queues[&plural].clone();
                tokio::spawn(async move {
                    let body = if is_watch {
                        q.watches.lock().await.recv().await
                    } else {
                        q.lists.lock().await.recv().await
                    };
                    // None: the test is over and dropped its senders.
                    if let Some(body) = body {
                        send.send_response(
                            Response::builder()
                                .status(200)
                                .header("content-type", "application/json")
                                .body(Body::from(body))
                                .unwrap(),
                        );
                    }
                });
            }
        });
        let client = kube::Client::new(service, "default");
        (
            MockApi {
                lists,
                watches,
                seen,
            },
            client,
        )
    }

    fn list(&self, plural: &'static str, rv: &str, items: Vec<Value>) {
        let body = json!({
            "apiVersion": "cilium.io/v2",
            "kind": list_kind(plural),
            "metadata": { "resourceVersion": rv },
            "items": items,
        });
        self.lists[plural]
            .send(serde_json::to_vec(&body).unwrap())
            .unwrap();
    }

    /// Queues one watch response carrying `events` (type, object).
    fn watch(&self, plural: &'static str, events: Vec<(&str, Value)>) {
        let mut body = Vec::new();
        for (kind, object) in events {
            serde_json::to_writer(&mut body, &json!({ "type": kind, "object": object })).unwrap();
            body.push(b'\n');
        }
        self.watches[plural].send(body).unwrap();
    }

    fn saw(&self, plural: &str, watch: bool) -> bool {
        self.requests(plural, watch) > 0
    }

    /// List (or watch) requests seen for `plural`. A watcher asks again
    /// only once it has passed every event of the previous answer on.
    fn requests(&self, plural: &str, watch: bool) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, w)| p == plural && *w == watch)
            .count()
    }
}

struct Running {
    rx: Snapshots,
    stats: Arc<SourceStats>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), SourceError>>,
}

impl Running {
    async fn stop(self) {
        self.stop.send(true).unwrap();
        let result = bounded("the source to stop", self.task)
            .await
            .expect("source task panicked");
        assert!(result.is_ok(), "source failed: {result:?}");
    }
}

fn start_kubernetes(client: kube::Client) -> Running {
    let (tx, rx) = watch::channel(None);
    let stats = SourceStats::new();
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(run_with_client(client, tx, stats.clone(), shutdown));
    Running {
        rx,
        stats,
        stop,
        task,
    }
}

#[tokio::test]
async fn kubernetes_publishes_only_after_all_three_kinds_listed() {
    let (api, client) = MockApi::start();
    let mut src = start_kubernetes(client);

    // Policies and nodes list at once; endpoints hold back.
    api.list(
        PLURALS[0],
        "10",
        vec![policy_json("camera", "5", "232.1.1.0/24")],
    );
    api.list(
        PLURALS[1],
        "10",
        vec![node_json("node-a", "6", "192.0.2.11")],
    );
    // Once the first two watchers moved on to watching, their InitDone has
    // been through the source; the endpoints list is still pending.
    until("policies and nodes to be listed", || {
        api.saw(PLURALS[0], true) && api.saw(PLURALS[1], true) && api.saw(PLURALS[2], false)
    })
    .await;
    tokio::time::sleep(DEBOUNCE * 3).await;
    assert!(
        src.rx.borrow().is_none(),
        "published before endpoints were listed"
    );
    assert!(!src.stats.synced());

    api.list(
        PLURALS[2],
        "10",
        vec![endpoint_json("camera-0", "7", "198.51.100.10")],
    );
    let snap = snapshot_where(&mut src.rx, "the first snapshot", |_| true).await;
    assert_eq!(policy_names(&snap), ["camera"]);
    assert_eq!(node_names(&snap), ["node-a"]);
    assert_eq!(endpoint_names(&snap), ["camera-0"]);
    assert_eq!(&*snap.endpoints[0].namespace, "media");
    assert!(src.stats.synced());
    assert_eq!(src.stats.publishes(), 1);
    for kind in ObjectKind::ALL {
        assert_eq!(src.stats.events(SourceKind::Kubernetes, kind), 1, "{kind}");
        assert_eq!(src.stats.events(SourceKind::Manifests, kind), 0, "{kind}");
    }
    src.stop().await;
}

#[tokio::test]
async fn kubernetes_add_modify_delete_reach_the_snapshot() {
    let (api, client) = MockApi::start();
    let mut src = start_kubernetes(client);

    // Lists arrive in an order unlike the watchers' start order.
    api.list(
        PLURALS[2],
        "10",
        vec![endpoint_json("camera-0", "7", "198.51.100.10")],
    );
    api.list(
        PLURALS[1],
        "10",
        vec![node_json("node-a", "6", "192.0.2.11")],
    );
    api.list(
        PLURALS[0],
        "10",
        vec![policy_json("camera", "5", "232.1.1.0/24")],
    );
    snapshot_where(&mut src.rx, "the initial snapshot", |o| {
        o.policies.len() == 1 && o.nodes.len() == 1 && o.endpoints.len() == 1
    })
    .await;

    // ADDED, one per kind.
    api.watch(
        PLURALS[0],
        vec![("ADDED", policy_json("market", "11", "232.2.0.0/16"))],
    );
    api.watch(
        PLURALS[1],
        vec![("ADDED", node_json("node-b", "12", "192.0.2.12"))],
    );
    api.watch(
        PLURALS[2],
        vec![("ADDED", endpoint_json("feed-0", "13", "198.51.100.20"))],
    );
    let snap = snapshot_where(&mut src.rx, "the additions", |o| {
        o.policies.len() == 2 && o.nodes.len() == 2 && o.endpoints.len() == 2
    })
    .await;
    // Sorted by name, whatever the order of arrival.
    assert_eq!(policy_names(&snap), ["camera", "market"]);
    assert_eq!(node_names(&snap), ["node-a", "node-b"]);
    assert_eq!(endpoint_names(&snap), ["camera-0", "feed-0"]);

    // MODIFIED, one per kind.
    api.watch(
        PLURALS[0],
        vec![("MODIFIED", policy_json("camera", "14", "232.1.2.0/24"))],
    );
    api.watch(
        PLURALS[1],
        vec![("MODIFIED", node_json("node-a", "15", "192.0.2.21"))],
    );
    api.watch(
        PLURALS[2],
        vec![("MODIFIED", endpoint_json("camera-0", "16", "198.51.100.30"))],
    );
    let snap = snapshot_where(&mut src.rx, "the modifications", |o| {
        cidrs_of(o, "camera") == ["232.1.2.0/24"]
            && node_ip(o, "node-a").as_deref() == Some("192.0.2.21")
            && endpoint_ip(o, "camera-0").as_deref() == Some("198.51.100.30")
    })
    .await;
    assert_eq!(snap.policies.len(), 2);

    // DELETED, one per kind.
    api.watch(
        PLURALS[0],
        vec![("DELETED", policy_json("market", "17", "232.2.0.0/16"))],
    );
    api.watch(
        PLURALS[1],
        vec![("DELETED", node_json("node-b", "18", "192.0.2.12"))],
    );
    api.watch(
        PLURALS[2],
        vec![("DELETED", endpoint_json("feed-0", "19", "198.51.100.20"))],
    );
    let snap = snapshot_where(&mut src.rx, "the deletions", |o| {
        o.policies.len() == 1 && o.nodes.len() == 1 && o.endpoints.len() == 1
    })
    .await;
    assert_eq!(policy_names(&snap), ["camera"]);
    assert_eq!(node_names(&snap), ["node-a"]);
    assert_eq!(endpoint_names(&snap), ["camera-0"]);

    // Listed + added + modified + deleted.
    for kind in ObjectKind::ALL {
        assert_eq!(src.stats.events(SourceKind::Kubernetes, kind), 4, "{kind}");
    }
    assert_eq!(src.stats.errors(), 0);
    src.stop().await;
}

#[tokio::test]
async fn kubernetes_updates_of_nothing_read_do_not_wake_resolution() {
    let (api, client) = MockApi::start();
    let mut src = start_kubernetes(client);
    let policy = policy_json("camera", "5", "232.1.1.0/24");
    let node = node_json("node-a", "6", "192.0.2.11");
    let endpoint = endpoint_json("camera-0", "7", "198.51.100.10");
    api.list(PLURALS[0], "10", vec![policy.clone()]);
    api.list(PLURALS[1], "10", vec![node.clone()]);
    api.list(PLURALS[2], "10", vec![endpoint.clone()]);
    snapshot_where(&mut src.rx, "the initial snapshot", |o| {
        o.policies.len() == 1 && o.nodes.len() == 1 && o.endpoints.len() == 1
    })
    .await;
    let (scans, publishes) = (src.stats.scans(), src.stats.publishes());
    assert_eq!((scans, publishes), (1, 1));

    // What cilium-agent and the API server change all the time: a new
    // resourceVersion, status fields and annotations resolution does not
    // read, managed fields; and bookmarks.
    let touched = |mut obj: Value, rv: &str| {
        obj["metadata"]["resourceVersion"] = json!(rv);
        obj["metadata"]["generation"] = json!(3);
        obj["metadata"]["annotations"] = json!({ "touched": rv });
        obj["metadata"]["managedFields"] =
            json!([{ "manager": "cilium-agent", "operation": "Update" }]);
        obj
    };
    let mut endpoint_touched = touched(endpoint.clone(), "20");
    endpoint_touched["status"]["state"] = json!("ready");
    endpoint_touched["status"]["policy"] = json!({ "realized": { "revision": 12 } });
    let mut node_touched = touched(node.clone(), "21");
    node_touched["status"] = json!({ "ipam": { "used": { "198.51.100.10": {} } } });
    let bookmark = |kind: &str, rv: &str| json!({ "apiVersion": "cilium.io/v2", "kind": kind, "metadata": { "resourceVersion": rv } });
    api.watch(
        PLURALS[0],
        vec![
            ("MODIFIED", touched(policy.clone(), "22")),
            ("BOOKMARK", bookmark("CiliumEgressGatewayPolicy", "23")),
        ],
    );
    api.watch(PLURALS[1], vec![("MODIFIED", node_touched)]);
    api.watch(
        PLURALS[2],
        vec![
            ("MODIFIED", endpoint_touched),
            ("BOOKMARK", bookmark("CiliumEndpoint", "24")),
        ],
    );
    // Each watcher asking again means it has passed all of those on.
    until("the watchers to take the updates", || {
        PLURALS.iter().all(|p| api.requests(p, true) >= 2)
    })
    .await;

    // A relist (the watch expired: 410 Gone) that finds the same objects,
    // at new resource versions.
    api.watch(
        PLURALS[2],
        vec![(
            "ERROR",
            json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "reason": "Expired", "message": "too old resource version", "code": 410 }),
        )],
    );
    until("the relist request", || {
        api.requests(PLURALS[2], false) >= 2
    })
    .await;
    api.list(PLURALS[2], "30", vec![touched(endpoint.clone(), "25")]);
    until("the watch after the relist", || {
        api.requests(PLURALS[2], true) >= 3
    })
    .await;
    // A wake would take a snapshot one debounce period after the event.
    tokio::time::sleep(DEBOUNCE * 3).await;
    assert_eq!(src.stats.scans(), scans, "a snapshot taken of nothing new");
    assert_eq!(
        src.stats.publishes(),
        publishes,
        "resolution woken for nothing"
    );

    // The control: a change to what resolution reads is published.
    api.watch(
        PLURALS[2],
        vec![("MODIFIED", endpoint_json("camera-0", "26", "198.51.100.30"))],
    );
    snapshot_within(&mut src.rx, PROMPT, "the endpoint's new address", |o| {
        endpoint_ip(o, "camera-0").as_deref() == Some("198.51.100.30")
    })
    .await;
    assert_eq!(src.stats.scans(), scans + 1);
    assert_eq!(src.stats.publishes(), publishes + 1);
    src.stop().await;
}

// ---------------------------------------------------------------------------
// Manifests
// ---------------------------------------------------------------------------

fn policy_yaml(name: &str, groups: &[&str]) -> String {
    let mut cidrs = String::new();
    for g in groups {
        cidrs.push_str(&format!("    - {g}\n"));
    }
    format!(
        "apiVersion: cilium.io/v2
kind: CiliumEgressGatewayPolicy
metadata:
  name: {name}
spec:
  selectors:
    - podSelector:
        matchLabels:
          app: camera
  destinationCIDRs:
{cidrs}  egressGateway:
    nodeSelector:
      matchLabels:
        egress: \"true\"
    egressIP: 203.0.113.10
"
    )
}

fn node_yaml(name: &str, ip: &str) -> String {
    format!(
        "apiVersion: cilium.io/v2
kind: CiliumNode
metadata:
  name: {name}
  labels:
    egress: \"true\"
spec:
  addresses:
    - type: InternalIP
      ip: {ip}
"
    )
}

fn endpoint_yaml(name: &str, ip: &str) -> String {
    format!(
        "apiVersion: cilium.io/v2
kind: CiliumEndpoint
metadata:
  name: {name}
  namespace: media
status:
  id: 42
  identity:
    id: 51234
    labels:
      - k8s:app=camera
      - k8s:io.kubernetes.pod.namespace=media
  networking:
    addressing:
      - ipv4: {ip}
    node: 192.0.2.11
"
    )
}

/// Replaces a file the way editors and `kubectl cp`-style tools do: write a
/// temporary file beside it, then rename over.
fn replace(dir: &Path, name: &str, content: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

fn start_manifests(dir: &Path) -> Running {
    let (tx, rx) = watch::channel(None);
    let stats = SourceStats::new();
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(source::run(
        SourceConfig::Manifests(dir.to_path_buf()),
        tx,
        stats.clone(),
        shutdown,
    ));
    Running {
        rx,
        stats,
        stop,
        task,
    }
}

#[tokio::test]
async fn manifests_follow_add_edit_break_fix_delete() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("nodes.yml"), node_yaml("node-a", "192.0.2.11")).unwrap();
    let mut src = start_manifests(d);

    let snap = snapshot_where(&mut src.rx, "the first read", |_| true).await;
    assert_eq!(node_names(&snap), ["node-a"]);
    assert!(snap.policies.is_empty());

    // Add.
    std::fs::write(
        d.join("policies.yaml"),
        policy_yaml("camera", &["232.1.1.0/24"]),
    )
    .unwrap();
    snapshot_where(&mut src.rx, "the added policy", |o| {
        cidrs_of(o, "camera") == ["232.1.1.0/24"]
    })
    .await;

    // Edit, by rename as editors do.
    replace(
        d,
        "policies.yaml",
        &policy_yaml("camera", &["232.1.1.0/24", "232.1.2.0/24"]),
    );
    snapshot_where(&mut src.rx, "the edited policy", |o| {
        cidrs_of(o, "camera") == ["232.1.1.0/24", "232.1.2.0/24"]
    })
    .await;

    // Break: an unclosed flow sequence on line 3. The last good policy stays.
    std::fs::write(
        d.join("policies.yaml"),
        "apiVersion: cilium.io/v2\nkind: CiliumEgressGatewayPolicy\nmetadata: {name: [camera\n",
    )
    .unwrap();
    until("the broken file to be reported", || {
        !src.stats.manifest_errors().is_empty()
    })
    .await;
    let errors = src.stats.manifest_errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    let error = &errors[0];
    assert_eq!(error.file, d.join("policies.yaml"));
    assert!(
        error.line.is_some_and(|l| l >= 3) && error.column.is_some(),
        "{error}"
    );
    assert!(error.to_string().contains("policies.yaml:"), "{error}");
    assert_eq!(src.stats.errors(), 1);
    let snap = src.rx.borrow().clone().unwrap();
    assert_eq!(cidrs_of(&snap, "camera"), ["232.1.1.0/24", "232.1.2.0/24"]);

    // A hidden file, even broken YAML, and a non-YAML file (with no
    // apiVersion, an error if read) are not read. Written first, so the
    // snapshot that shows the endpoint below comes from a scan that saw them.
    std::fs::write(d.join(".scratch.yaml"), "{{{").unwrap();
    std::fs::write(d.join("notes.txt"), "kind: CiliumNode\n").unwrap();
    // While it is broken, other files still count.
    std::fs::write(
        d.join("endpoints.yaml"),
        endpoint_yaml("camera-0", "198.51.100.10"),
    )
    .unwrap();
    let snap = snapshot_where(&mut src.rx, "the endpoint next to a broken file", |o| {
        endpoint_names(o) == ["camera-0"]
    })
    .await;
    assert_eq!(node_names(&snap), ["node-a"]);
    assert_eq!(policy_names(&snap), ["camera"]);
    assert_eq!(src.stats.manifest_errors().len(), 1);
    assert_eq!(src.stats.errors(), 1, "an unchanged problem counts once");

    // Fix.
    replace(
        d,
        "policies.yaml",
        &policy_yaml("camera", &["232.1.3.0/24"]),
    );
    snapshot_where(&mut src.rx, "the fixed policy", |o| {
        cidrs_of(o, "camera") == ["232.1.3.0/24"]
    })
    .await;
    until("the error to clear", || {
        src.stats.manifest_errors().is_empty()
    })
    .await;

    // Delete: the file's objects go with it.
    std::fs::remove_file(d.join("policies.yaml")).unwrap();
    let snap = snapshot_where(&mut src.rx, "the deleted policy to go", |o| {
        o.policies.is_empty()
    })
    .await;
    assert_eq!(node_names(&snap), ["node-a"]);
    assert_eq!(endpoint_names(&snap), ["camera-0"]);

    assert!(src.stats.events(SourceKind::Manifests, ObjectKind::Policy) >= 4);
    assert_eq!(
        src.stats.events(SourceKind::Kubernetes, ObjectKind::Policy),
        0
    );
    src.stop().await;
}

#[tokio::test]
async fn manifests_missing_directory_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("absent");
    let (tx, _rx) = watch::channel(None);
    let (_stop, shutdown) = watch::channel(false);
    let result = bounded(
        "the source to fail",
        source::run(
            SourceConfig::Manifests(missing.clone()),
            tx,
            SourceStats::new(),
            shutdown,
        ),
    )
    .await;
    match result {
        Err(err @ SourceError::ManifestDir { .. }) => {
            assert!(err.to_string().contains("absent"), "{err}")
        }
        other => panic!("expected a missing-directory error, got {other:?}"),
    }

    let file = dir.path().join("file.yaml");
    std::fs::write(&file, "").unwrap();
    let (tx, _rx) = watch::channel(None);
    let (_stop, shutdown) = watch::channel(false);
    let result = source::run(
        SourceConfig::Manifests(file),
        tx,
        SourceStats::new(),
        shutdown,
    )
    .await;
    assert!(
        matches!(result, Err(SourceError::NotADirectory { .. })),
        "{result:?}"
    );
}

#[test]
fn manifests_multi_document_file_with_other_kinds() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let all = format!(
        "apiVersion: v1
kind: Namespace
metadata:
  name: media
---
{}---
{}---
{}---
apiVersion: v1
kind: Pod
metadata:
  name: camera-0
  namespace: media
spec:
  containers:
    - name: camera
      image: example.invalid/camera
---
",
        policy_yaml("camera", &["232.1.1.0/24"]),
        node_yaml("node-a", "192.0.2.11"),
        endpoint_yaml("camera-0", "198.51.100.10"),
    );
    std::fs::write(d.join("all.yaml"), all).unwrap();
    std::fs::write(d.join("more.yml"), node_yaml("node-b", "192.0.2.12")).unwrap();
    // Ignored: hidden, not YAML, in a subdirectory.
    std::fs::write(d.join(".hidden.yaml"), node_yaml("hidden", "192.0.2.99")).unwrap();
    std::fs::write(d.join("node.json"), "{}").unwrap();
    std::fs::write(d.join("README.md"), "# fixtures\n").unwrap();
    std::fs::create_dir(d.join("sub")).unwrap();
    std::fs::write(d.join("sub/deep.yaml"), node_yaml("deep", "192.0.2.98")).unwrap();
    std::fs::create_dir(d.join("dir.yaml")).unwrap();

    let (objects, errors) = load_dir(d);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(policy_names(&objects), ["camera"]);
    assert_eq!(node_names(&objects), ["node-a", "node-b"]);
    assert_eq!(endpoint_names(&objects), ["camera-0"]);
    let policy = &objects.policies[0];
    assert_eq!(policy.spec.destination_cidrs, strings(&["232.1.1.0/24"]));
    let gateway = policy.spec.egress_gateway.as_ref().unwrap();
    assert_eq!(gateway.egress_ip.as_deref(), Some("203.0.113.10"));
    let endpoint = &objects.endpoints[0];
    assert_eq!(endpoint.identity.as_ref().unwrap().id, 51234);
    assert_eq!(
        endpoint_ip(&objects, "camera-0").as_deref(),
        Some("198.51.100.10")
    );
}

#[test]
fn manifests_errors_name_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("good.yaml"), node_yaml("node-a", "192.0.2.11")).unwrap();
    // A field of the wrong type in the second document: line 8.
    std::fs::write(
        d.join("typed.yaml"),
        format!(
            "{}\n---\napiVersion: cilium.io/v2\nkind: CiliumEgressGatewayPolicy\nmetadata:\n  name: bad\nspec:\n  destinationCIDRs: 5\n",
            node_yaml("node-typed", "192.0.2.13").trim_end()
        ),
    )
    .unwrap();
    // A document without kind.
    std::fs::write(
        d.join("nokind.yaml"),
        "apiVersion: cilium.io/v2\nmetadata:\n  name: x\n",
    )
    .unwrap();
    // Bad indentation.
    std::fs::write(
        d.join("syntax.yml"),
        "apiVersion: cilium.io/v2\n kind: CiliumNode\n",
    )
    .unwrap();

    let (objects, errors) = load_dir(d);
    // A file is all or nothing: the good node of typed.yaml is not used.
    assert_eq!(node_names(&objects), ["node-a"]);
    assert!(objects.policies.is_empty());

    let by_file: HashMap<String, _> = errors
        .iter()
        .map(|e| {
            (
                e.file.file_name().unwrap().to_string_lossy().into_owned(),
                e,
            )
        })
        .collect();
    assert_eq!(by_file.len(), 3, "{errors:?}");

    let typed = by_file["typed.yaml"];
    assert_eq!(typed.document, Some(2));
    assert_eq!(
        (typed.line, typed.column.is_some()),
        (Some(17), true),
        "{typed}"
    );
    assert!(typed.message.contains("invalid type"), "{typed}");

    let nokind = by_file["nokind.yaml"];
    assert!(nokind.message.contains("no kind"), "{nokind}");
    assert_eq!(nokind.document, Some(1));

    let syntax = by_file["syntax.yml"];
    assert_eq!(syntax.line, Some(2), "{syntax}");
    assert!(syntax.column.is_some(), "{syntax}");
}

#[test]
fn manifests_duplicates_last_file_by_name_wins() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("10-base.yaml"),
        policy_yaml("camera", &["232.1.1.0/24"]),
    )
    .unwrap();
    std::fs::write(
        d.join("20-override.yaml"),
        policy_yaml("camera", &["232.9.9.0/24"]),
    )
    .unwrap();
    std::fs::write(
        d.join("30-other.yaml"),
        policy_yaml("market", &["232.2.0.0/16"]),
    )
    .unwrap();
    let (objects, errors) = load_dir(d);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(policy_names(&objects), ["camera", "market"]);
    assert_eq!(cidrs_of(&objects, "camera"), ["232.9.9.0/24"]);
}

#[test]
fn manifests_endpoint_without_namespace_gets_default() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = endpoint_yaml("camera-0", "198.51.100.10").replace("  namespace: media\n", "");
    std::fs::write(dir.path().join("ep.yaml"), yaml).unwrap();
    let (objects, errors) = load_dir(dir.path());
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(&*objects.endpoints[0].namespace, "default");
}

/// A directory of a few hundred objects, as files of several sizes:
/// nodes.yaml, policies.yaml and one file of endpoints per namespace.
fn write_cluster(dir: &Path, endpoint_files: usize, per_file: usize) -> usize {
    std::fs::create_dir_all(dir).unwrap();
    let nodes: Vec<String> = (0..20)
        .map(|n| node_yaml(&format!("node-{n:02}"), &format!("192.0.2.{}", n + 1)))
        .collect();
    std::fs::write(dir.join("nodes.yaml"), nodes.join("---\n")).unwrap();
    let policies: Vec<String> = (0..10)
        .map(|k| policy_yaml(&format!("policy-{k}"), &[&format!("232.1.{k}.0/24")]))
        .collect();
    std::fs::write(dir.join("policies.yaml"), policies.join("---\n")).unwrap();
    for f in 0..endpoint_files {
        let endpoints: Vec<String> = (0..per_file)
            .map(|i| {
                let n = f * per_file + i;
                let ip = format!("198.51.100.{}", n % 254 + 1);
                endpoint_yaml(&format!("pod-{n:04}"), &ip).replace("media", &format!("ns-{f}"))
            })
            .collect();
        std::fs::write(
            dir.join(format!("endpoints-{f:02}.yaml")),
            endpoints.join("---\n"),
        )
        .unwrap();
    }
    endpoint_files * per_file
}

/// The files of `dir`, for reading them.
fn files_of(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn manifests_reads_and_attribute_changes_do_not_wake_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let endpoints = write_cluster(d, 12, 25);
    let mut src = start_manifests(d);
    snapshot_where(&mut src.rx, "the first read", |o| {
        o.endpoints.len() == endpoints && o.nodes.len() == 20 && o.policies.len() == 10
    })
    .await;
    let (scans, publishes) = (src.stats.scans(), src.stats.publishes());
    assert_eq!((scans, publishes), (1, 1));

    // Two seconds of others reading the files: this test, `cat`, and a
    // chmod to the same mode (an attribute change). None of it changes
    // what the directory holds, so none of it may cost a read of the
    // directory (the source's own reads would then feed the next one).
    let files = files_of(d);
    let mode = std::fs::metadata(&files[0]).unwrap().permissions();
    let idle = tokio::time::Instant::now();
    let mut rounds = 0;
    while idle.elapsed() < Duration::from_secs(2) {
        for file in &files {
            assert!(!std::fs::read(file).unwrap().is_empty());
        }
        if rounds % 10 == 0 {
            let out = std::process::Command::new("cat")
                .args(&files)
                .output()
                .expect("running cat");
            assert!(out.status.success() && !out.stdout.is_empty());
            std::fs::set_permissions(&files[0], mode.clone()).unwrap();
        }
        rounds += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            src.stats.scans(),
            scans,
            "the directory read again after {:?} of reads alone",
            idle.elapsed()
        );
    }
    // A read the last reads would cause comes one debounce period later.
    tokio::time::sleep(DEBOUNCE * 3).await;
    assert_eq!(src.stats.scans(), scans, "the directory read again");
    assert_eq!(src.stats.publishes(), publishes);

    // The control: an edit in place (write, close) is read, at once.
    let file = d.join("endpoints-03.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    let edited = text.replacen("198.51.100.76", "203.0.113.76", 1);
    assert_ne!(edited, text);
    std::fs::write(&file, edited).unwrap();
    let snap = snapshot_within(&mut src.rx, PROMPT, "the edited endpoint", |o| {
        endpoint_ip(o, "pod-0075").as_deref() == Some("203.0.113.76")
    })
    .await;
    assert_eq!(snap.endpoints.len(), endpoints);
    assert!(src.stats.scans() > scans);
    src.stop().await;
}

#[tokio::test]
async fn manifests_directory_removed_and_recreated_is_watched_again() {
    let parent = tempfile::tempdir().unwrap();
    let d = parent.path().join("manifests");
    std::fs::create_dir(&d).unwrap();
    std::fs::write(d.join("nodes.yaml"), node_yaml("node-a", "192.0.2.11")).unwrap();
    std::fs::write(
        d.join("policies.yaml"),
        policy_yaml("camera", &["232.1.1.0/24"]),
    )
    .unwrap();
    let mut src = start_manifests(&d);
    snapshot_where(&mut src.rx, "the first read", |o| {
        cidrs_of(o, "camera") == ["232.1.1.0/24"]
    })
    .await;

    // Removed: reported, and the objects stay in force meanwhile.
    std::fs::remove_dir_all(&d).unwrap();
    until("the missing directory to be reported", || {
        src.stats.manifest_errors().iter().any(|e| e.file == d)
    })
    .await;
    let snap = src.rx.borrow().clone().unwrap();
    assert_eq!(cidrs_of(&snap, "camera"), ["232.1.1.0/24"]);
    assert_eq!(node_names(&snap), ["node-a"]);

    // Re-created with other content: read at once, not at the next full
    // read 30 s on.
    std::fs::create_dir(&d).unwrap();
    std::fs::write(d.join("nodes.yaml"), node_yaml("node-a", "192.0.2.11")).unwrap();
    std::fs::write(
        d.join("policies.yaml"),
        policy_yaml("camera", &["232.1.2.0/24"]),
    )
    .unwrap();
    snapshot_within(
        &mut src.rx,
        PROMPT,
        "the re-created directory's policy",
        |o| cidrs_of(o, "camera") == ["232.1.2.0/24"],
    )
    .await;
    until("the problem to clear", || {
        src.stats.manifest_errors().is_empty()
    })
    .await;
    // And watched: a later edit shows as promptly.
    replace(
        &d,
        "policies.yaml",
        &policy_yaml("camera", &["232.1.3.0/24"]),
    );
    snapshot_within(
        &mut src.rx,
        PROMPT,
        "an edit in the re-created directory",
        |o| cidrs_of(o, "camera") == ["232.1.3.0/24"],
    )
    .await;

    // Swapped by renames, as deployment tools do: the old directory moved
    // aside (its inode keeps the old watch), a new one moved in.
    let new = parent.path().join("manifests.new");
    std::fs::create_dir(&new).unwrap();
    std::fs::write(new.join("nodes.yaml"), node_yaml("node-a", "192.0.2.11")).unwrap();
    std::fs::write(
        new.join("policies.yaml"),
        policy_yaml("camera", &["232.1.4.0/24"]),
    )
    .unwrap();
    std::fs::rename(&d, parent.path().join("manifests.old")).unwrap();
    std::fs::rename(&new, &d).unwrap();
    snapshot_within(
        &mut src.rx,
        PROMPT,
        "the swapped-in directory's policy",
        |o| cidrs_of(o, "camera") == ["232.1.4.0/24"],
    )
    .await;
    replace(
        &d,
        "policies.yaml",
        &policy_yaml("camera", &["232.1.5.0/24"]),
    );
    snapshot_within(
        &mut src.rx,
        PROMPT,
        "an edit in the swapped-in directory",
        |o| cidrs_of(o, "camera") == ["232.1.5.0/24"],
    )
    .await;
    assert!(src.stats.manifest_errors().is_empty());

    // The parent removed with it, so no watch is left to see them return.
    std::fs::remove_dir_all(parent.path()).unwrap();
    until("the missing directory to be reported again", || {
        src.stats.manifest_errors().iter().any(|e| e.file == d)
    })
    .await;
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("nodes.yaml"), node_yaml("node-a", "192.0.2.11")).unwrap();
    std::fs::write(
        d.join("policies.yaml"),
        policy_yaml("camera", &["232.1.6.0/24"]),
    )
    .unwrap();
    snapshot_within(
        &mut src.rx,
        PROMPT,
        "the directory back with its parent",
        |o| cidrs_of(o, "camera") == ["232.1.6.0/24"],
    )
    .await;
    replace(
        &d,
        "policies.yaml",
        &policy_yaml("camera", &["232.1.7.0/24"]),
    );
    snapshot_within(&mut src.rx, PROMPT, "an edit after that", |o| {
        cidrs_of(o, "camera") == ["232.1.7.0/24"]
    })
    .await;
    src.stop().await;
}

/// A burst of changes is read at most once per DEBOUNCE, and its last state
/// is what ends up published; a change alone is one read. (How soon a lone
/// change lands is measured by `make bench-controller`, not here.)
#[tokio::test]
async fn manifests_burst_is_read_once_per_debounce_and_a_lone_change_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    replace(
        d,
        "policies.yaml",
        &policy_yaml("camera", &["232.1.0.0/24"]),
    );
    let mut src = start_manifests(d);
    snapshot_where(&mut src.rx, "the first read", |o| o.policies.len() == 1).await;
    let scans = src.stats.scans();

    // 60 edits, 10 ms apart: 600 ms of changes.
    let started = tokio::time::Instant::now();
    for n in 1..=60 {
        replace(
            d,
            "policies.yaml",
            &policy_yaml("camera", &[&format!("232.1.{n}.0/24")]),
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    snapshot_where(&mut src.rx, "the last edit", |o| {
        cidrs_of(o, "camera") == ["232.1.60.0/24"]
    })
    .await;
    let burst = started.elapsed();
    let reads = src.stats.scans() - scans;
    // One read per DEBOUNCE over the burst, and one to catch its end.
    let most = (burst.as_millis() / DEBOUNCE.as_millis()) as u64 + 2;
    assert!(
        (2..=most).contains(&reads),
        "{reads} reads of the directory for a burst of {burst:?} (at most {most})"
    );

    // Quiet for longer than DEBOUNCE, then one change: one read.
    tokio::time::sleep(DEBOUNCE * 2).await;
    let scans = src.stats.scans();
    replace(
        d,
        "policies.yaml",
        &policy_yaml("camera", &["232.9.9.0/24"]),
    );
    snapshot_where(&mut src.rx, "the lone edit", |o| {
        cidrs_of(o, "camera") == ["232.9.9.0/24"]
    })
    .await;
    tokio::time::sleep(DEBOUNCE * 2).await;
    assert_eq!(src.stats.scans(), scans + 1);
    src.stop().await;
}
