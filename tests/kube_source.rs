//! The Kubernetes source against a real API server: etcd and kube-apiserver
//! v1.36 in a network namespace of their own (`lab::kube`), Cilium's CRDs
//! applied, objects created, changed and deleted with kubectl. The source
//! runs in this process, as the daemon runs it, on a client in that
//! namespace; every snapshot it publishes is recorded with its time, and
//! so is everything it logs and every change of `SourceStats::failing`.
//!
//! Tests that leave the API server as they found it share one for the
//! suite; those that restart it, stop it or compact etcd start their own.
//! Needs root (a network namespace) and the binaries (`lab::kube::Assets`):
//! without either each test skips, loudly; under `CI=true` they must run.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::sync::watch;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

use cilium_mcast_egress::crd::CiliumNode;
use cilium_mcast_egress::objects::{Endpoint, Objects};
use cilium_mcast_egress::source::{load_dir, run_with_client, ObjectKind, SourceKind, SourceStats};
use lab::kube::{Assets, KubeApi, KubeOptions};

/// The longest any one change may take to show when nothing is wrong: far
/// above what it takes (milliseconds), far below the 30 s a missed event
/// would otherwise hide behind.
const PROMPT: Duration = Duration::from_secs(5);

/// How soon after the API server's return the source must be current.
const CURRENT_WITHIN: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------
// The source under test
// ---------------------------------------------------------------------------

/// One event the source (or kube-rs beneath it) logged.
#[derive(Debug, Clone)]
struct Logged {
    level: tracing::Level,
    target: String,
    text: String,
}

/// Collects every event into a shared list.
struct Capture(Arc<Mutex<Vec<Logged>>>);

impl<S: tracing::Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        struct Text(String);
        impl Visit for Text {
            fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
                let _ = write!(self.0, "{}={value:?} ", field.name());
            }
        }
        let mut text = Text(String::new());
        event.record(&mut text);
        let meta = event.metadata();
        self.0.lock().unwrap().push(Logged {
            level: *meta.level(),
            target: meta.target().to_owned(),
            text: text.0,
        });
    }
}

/// Values with when they were seen, in order.
type Timeline<T> = Arc<Mutex<Vec<(Instant, T)>>>;

/// The Kubernetes source running on a thread of its own in the API
/// server's namespace, with everything it does recorded.
struct Source {
    stats: Arc<SourceStats>,
    /// Every snapshot published, with when it was.
    seen: Timeline<Arc<Objects>>,
    /// Every change of `stats.failing()`, with when it was seen.
    failing: Timeline<Option<String>>,
    logs: Arc<Mutex<Vec<Logged>>>,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Source {
    /// Start the source with `api`'s admin kubeconfig.
    fn start(api: &KubeApi) -> Source {
        let netns = api.netns().expect("the API server's namespace");
        let kubeconfig = api.kubeconfig();
        let stats = SourceStats::new();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let failing = Arc::new(Mutex::new(Vec::new()));
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (stop, mut shutdown) = watch::channel(false);
        let thread = {
            let (stats, seen, failing, logs) =
                (stats.clone(), seen.clone(), failing.clone(), logs.clone());
            std::thread::spawn(move || {
                nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET)
                    .expect("entering the API server's namespace");
                let subscriber = tracing_subscriber::registry().with(Capture(logs)).with(
                    tracing_subscriber::EnvFilter::new(
                        "info,cilium_mcast_egress=debug,kube_runtime=debug",
                    ),
                );
                let _logging = tracing::subscriber::set_default(subscriber);
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime");
                rt.block_on(async move {
                    let client = client(&kubeconfig).await;
                    let (tx, mut rx) = watch::channel(None);
                    let source =
                        tokio::spawn(run_with_client(client, tx, stats.clone(), shutdown.clone()));
                    let mut last_failing = None;
                    loop {
                        tokio::select! {
                            changed = rx.changed() => {
                                if changed.is_err() {
                                    break;
                                }
                                let snapshot = rx.borrow_and_update().clone();
                                if let Some(s) = snapshot {
                                    seen.lock().unwrap().push((Instant::now(), s));
                                }
                            }
                            () = stats.changed() => {
                                let now = stats.failing();
                                if now != last_failing {
                                    failing.lock().unwrap().push((Instant::now(), now.clone()));
                                    last_failing = now;
                                }
                            }
                            _ = shutdown.wait_for(|s| *s) => break,
                        }
                    }
                    let ended = source.await.expect("the source's task");
                    assert!(ended.is_ok(), "the source failed: {ended:?}");
                });
            })
        };
        Source {
            stats,
            seen,
            failing,
            logs,
            stop,
            thread: Some(thread),
        }
    }

    /// Wait until the last snapshot satisfies `pred`; it and when it came.
    fn wait(
        &self,
        what: &str,
        within: Duration,
        pred: impl Fn(&Objects) -> bool,
    ) -> (Instant, Arc<Objects>) {
        let deadline = Instant::now() + within;
        loop {
            if let Some((at, s)) = self.seen.lock().unwrap().last() {
                if pred(s) {
                    return (*at, s.clone());
                }
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not seen within {within:?}; last snapshot: {:#?}\nlog:\n{}",
                self.seen.lock().unwrap().last().map(|(_, s)| s.clone()),
                self.log_text(0)
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The snapshots published from index `from` on.
    fn snapshots_from(&self, from: usize) -> Vec<(Instant, Arc<Objects>)> {
        self.seen.lock().unwrap()[from..].to_vec()
    }

    fn snapshot_count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    fn log_count(&self) -> usize {
        self.logs.lock().unwrap().len()
    }

    /// Everything logged from index `from` on, one event a line.
    fn log_text(&self, from: usize) -> String {
        self.logs.lock().unwrap()[from..]
            .iter()
            .map(|l| format!("{:>5} {}: {}", l.level, l.target, l.text))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The warnings and errors logged from index `from` on.
    fn complaints_from(&self, from: usize) -> Vec<Logged> {
        self.logs.lock().unwrap()[from..]
            .iter()
            .filter(|l| l.level <= tracing::Level::WARN)
            .cloned()
            .collect()
    }

    /// The changes of `SourceStats::failing` from index `from` on.
    fn failing_from(&self, from: usize) -> Vec<(Instant, Option<String>)> {
        self.failing.lock().unwrap()[from..].to_vec()
    }

    fn failing_count(&self) -> usize {
        self.failing.lock().unwrap().len()
    }

    fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            if let Err(panic) = t.join() {
                std::panic::resume_unwind(panic);
            }
        }
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A client from `kubeconfig`, as the daemon builds one from `KUBECONFIG`
/// (without retries inside a request, which would hide when the API
/// server first answers).
async fn client(kubeconfig: &Path) -> kube::Client {
    let config = Kubeconfig::read_from(kubeconfig).expect("the kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(config, &KubeConfigOptions::default())
        .await
        .expect("a client config");
    cilium_mcast_egress::source::client(config).expect("a client")
}

/// Retry a merge patch of CiliumNode `name` with the labels `labels` every
/// 10 ms until the API server accepts it, from a thread in its namespace,
/// starting now; returns when it was accepted. Started while the API
/// server is away, this is the first moment a client could change
/// anything after its return.
fn patch_node_labels_when_back(
    api: &KubeApi,
    name: &str,
    labels: serde_json::Value,
) -> std::thread::JoinHandle<Instant> {
    let netns = api.netns().expect("the API server's namespace");
    let kubeconfig = api.kubeconfig();
    let name = name.to_owned();
    std::thread::spawn(move || {
        nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(async move {
            let nodes: kube::Api<CiliumNode> = kube::Api::all(client(&kubeconfig).await);
            let patch = serde_json::json!({ "metadata": { "labels": labels } });
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let attempt = tokio::time::timeout(
                    Duration::from_millis(500),
                    nodes.patch(
                        &name,
                        &kube::api::PatchParams::default(),
                        &kube::api::Patch::Merge(&patch),
                    ),
                )
                .await;
                if let Ok(Ok(_)) = attempt {
                    return Instant::now();
                }
                assert!(
                    Instant::now() < deadline,
                    "the API server never took the patch: {attempt:?}"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    })
}

// ---------------------------------------------------------------------------
// Objects
// ---------------------------------------------------------------------------

fn policy(name: &str, cidrs: &[&str], gateway_label: &str) -> String {
    let cidrs: String = cidrs.iter().map(|c| format!("  - {c}\n")).collect();
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
        egress-gateway: {gateway_label}
    egressIP: 203.0.113.10
"
    )
}

fn node(name: &str, ip: &str, gateway_label: &str) -> String {
    format!(
        "apiVersion: cilium.io/v2
kind: CiliumNode
metadata:
  name: {name}
  labels:
    egress-gateway: {gateway_label}
spec:
  addresses:
  - type: InternalIP
    ip: {ip}
"
    )
}

fn endpoint(namespace: &str, name: &str, ip: &str, node_ip: &str) -> String {
    format!(
        "apiVersion: cilium.io/v2
kind: CiliumEndpoint
metadata:
  name: {name}
  namespace: {namespace}
status:
  id: 1234
  identity:
    id: 51234
    labels:
    - k8s:app=camera
    - k8s:io.kubernetes.pod.namespace={namespace}
  networking:
    addressing:
    - ipv4: {ip}
    node: {node_ip}
"
    )
}

fn namespace(name: &str) -> String {
    format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n")
}

fn join(docs: &[String]) -> String {
    docs.join("---\n")
}

fn policy_cidrs(o: &Objects, name: &str) -> Option<Vec<String>> {
    o.policies
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some(name))
        .map(|p| p.spec.destination_cidrs.clone())
}

fn node_of<'a>(o: &'a Objects, name: &str) -> Option<&'a cilium_mcast_egress::objects::Node> {
    o.nodes.iter().find(|n| &*n.name == name).map(|n| &**n)
}

fn endpoint_of<'a>(o: &'a Objects, namespace: &str, name: &str) -> Option<&'a Endpoint> {
    o.endpoints
        .iter()
        .find(|e| &*e.namespace == namespace && &*e.name == name)
        .map(|e| &**e)
}

fn endpoint_ip(o: &Objects, namespace: &str, name: &str) -> Option<String> {
    endpoint_of(o, namespace, name).and_then(|e| e.ipv4.first().map(|a| a.to_string()))
}

/// The objects of `o` whose names start with `prefix` (the shared API
/// server holds other tests' objects too).
fn owned(o: &Objects, prefix: &str) -> Objects {
    Objects {
        policies: o
            .policies
            .iter()
            .filter(|p| {
                p.metadata
                    .name
                    .as_deref()
                    .unwrap_or_default()
                    .starts_with(prefix)
            })
            .cloned()
            .collect(),
        nodes: o
            .nodes
            .iter()
            .filter(|n| n.name.starts_with(prefix))
            .cloned()
            .collect(),
        endpoints: o
            .endpoints
            .iter()
            .filter(|e| e.namespace.starts_with(prefix))
            .cloned()
            .collect(),
    }
}

/// Whether every object of `base` is in `o`, unchanged.
fn holds_all(o: &Objects, base: &Objects) -> bool {
    base.policies.iter().all(|p| o.policies.contains(p))
        && base.nodes.iter().all(|n| o.nodes.contains(n))
        && base.endpoints.iter().all(|e| o.endpoints.contains(e))
}

/// Panics unless every snapshot published from index `from` on holds all
/// of `base`.
fn assert_nothing_withdrawn(src: &Source, from: usize, base: &Objects, during: &str) {
    for (i, (_, s)) in src.snapshots_from(from).iter().enumerate() {
        assert!(
            holds_all(s, base),
            "{during}: snapshot {} withdrew objects: {s:#?}",
            from + i
        );
    }
}

fn print_start(name: &str, api: &KubeApi) {
    eprintln!(
        "{name}: control plane ready: {}; {}",
        api.timings(),
        api.rss()
    );
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// Objects created before the source starts are listed; objects created,
/// changed (apply and merge patch) and deleted by kubectl afterwards are
/// watched: each shows in the next snapshot, and nothing else changes.
#[test]
fn lists_and_watches_the_three_kinds() {
    let Some(api) = KubeApi::shared("lists_and_watches_the_three_kinds") else {
        return;
    };
    print_start("lists_and_watches_the_three_kinds", api);
    let p = "lw";
    let ns = "lw-media";
    api.apply(&join(&[
        namespace(ns),
        policy("lw-camera", &["232.1.0.0/16"], "lw-b"),
        node("lw-node-a", "192.0.2.11", "lw-a"),
        node("lw-node-b", "192.0.2.12", "lw-b"),
        endpoint(ns, "camera-0", "198.51.100.10", "192.0.2.11"),
    ]))
    .expect("the initial objects");

    let src = Source::start(api);
    let (_, first) = src.wait("the initial list", PROMPT, |o| {
        let o = owned(o, p);
        o.policies.len() == 1 && o.nodes.len() == 2 && o.endpoints.len() == 1
    });
    let first = owned(&first, p);
    assert_eq!(
        policy_cidrs(&first, "lw-camera"),
        Some(vec!["232.1.0.0/16".into()])
    );
    let a = node_of(&first, "lw-node-a").expect("node a");
    assert_eq!(
        &*a.internal_ips,
        &["192.0.2.11".parse::<std::net::Ipv4Addr>().unwrap()]
    );
    assert_eq!(
        a.labels.get("egress-gateway").map(String::as_str),
        Some("lw-a")
    );
    let e = endpoint_of(&first, ns, "camera-0").expect("the endpoint");
    assert_eq!(e.node_ip, Some("192.0.2.11".parse().unwrap()));
    assert!(
        e.uid_hash.is_some(),
        "the API server gives every object a uid"
    );
    assert_eq!(e.identity.as_ref().map(|i| i.id), Some(51234));

    // Created.
    let t = Instant::now();
    api.apply(&join(&[
        policy("lw-market", &["232.2.0.0/16", "ff3e::8000:0/112"], "lw-b"),
        node("lw-node-c", "192.0.2.13", "lw-c"),
        endpoint(ns, "camera-1", "198.51.100.11", "192.0.2.12"),
    ]))
    .expect("new objects");
    let (at, _) = src.wait("the created objects", PROMPT, |o| {
        let o = owned(o, p);
        o.policies.len() == 2 && o.nodes.len() == 3 && o.endpoints.len() == 2
    });
    eprintln!("created: seen {:?} after kubectl apply began", at - t);

    // Changed: by apply of an edited manifest, and by merge patches.
    let t = Instant::now();
    api.apply(&policy(
        "lw-camera",
        &["232.1.0.0/16", "232.3.3.3/32"],
        "lw-c",
    ))
    .expect("the edited policy");
    api.patch(
        &["ciliumnode", "lw-node-a"],
        r#"{"spec":{"addresses":[{"type":"InternalIP","ip":"192.0.2.21"}]}}"#,
    )
    .expect("the node patch");
    api.patch(
        &["ciliumendpoint", "camera-0", "-n", ns],
        r#"{"status":{"networking":{"addressing":[{"ipv4":"198.51.100.20"}]}}}"#,
    )
    .expect("the endpoint patch");
    let (at, changed) = src.wait("the changes", PROMPT, |o| {
        policy_cidrs(o, "lw-camera").is_some_and(|c| c.len() == 2)
            && node_of(o, "lw-node-a").is_some_and(|n| {
                n.internal_ips.first().map(|a| a.to_string()).as_deref() == Some("192.0.2.21")
            })
            && endpoint_ip(o, ns, "camera-0").as_deref() == Some("198.51.100.20")
    });
    eprintln!("changed: seen {:?} after the first kubectl began", at - t);
    let changed = owned(&changed, p);
    let camera = changed
        .policies
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some("lw-camera"))
        .unwrap();
    let gateway = camera
        .spec
        .egress_gateway
        .as_ref()
        .and_then(|g| g.node_selector.as_ref());
    assert_eq!(
        gateway
            .and_then(|s| s.match_labels.as_ref())
            .and_then(|l| l.get("egress-gateway"))
            .map(String::as_str),
        Some("lw-c")
    );
    // The patch replaced the endpoint's addressing and kept its node.
    let e = endpoint_of(&changed, ns, "camera-0").unwrap();
    assert_eq!(e.node_ip, Some("192.0.2.11".parse().unwrap()));

    // Deleted.
    let t = Instant::now();
    api.delete(&["ciliumegressgatewaypolicy", "lw-market"])
        .expect("delete policy");
    api.delete(&["ciliumnode", "lw-node-c"])
        .expect("delete node");
    api.delete(&["ciliumendpoint", "camera-1", "-n", ns])
        .expect("delete endpoint");
    let (at, after) = src.wait("the deletions", PROMPT, |o| {
        let o = owned(o, p);
        o.policies.len() == 1 && o.nodes.len() == 2 && o.endpoints.len() == 1
    });
    eprintln!(
        "deleted: seen {:?} after the first kubectl delete began",
        at - t
    );
    // What was not deleted is as it was.
    assert_eq!(owned(&after, p), changed_without(&changed));

    // Listed + created + changed + deleted, per kind, at least (the shared
    // server may hold other tests' objects too).
    for kind in ObjectKind::ALL {
        assert!(
            src.stats.events(SourceKind::Kubernetes, kind) >= 4,
            "{kind}"
        );
    }
    assert!(src.complaints_from(0).is_empty(), "{}", src.log_text(0));
    assert!(src.failing_from(0).is_empty());
    assert_eq!(src.stats.errors(), 0);
    src.stop();
    api.delete(&["ciliumegressgatewaypolicy", "lw-camera"])
        .expect("cleanup");
    api.delete(&["ciliumnode", "lw-node-a", "lw-node-b"])
        .expect("cleanup");
    api.delete(&["namespace", ns, "--wait=false"])
        .expect("cleanup");
}

/// `changed` without the objects the test deletes next.
fn changed_without(changed: &Objects) -> Objects {
    Objects {
        policies: changed
            .policies
            .iter()
            .filter(|p| p.metadata.name.as_deref() != Some("lw-market"))
            .cloned()
            .collect(),
        nodes: changed
            .nodes
            .iter()
            .filter(|n| &*n.name != "lw-node-c")
            .cloned()
            .collect(),
        endpoints: changed
            .endpoints
            .iter()
            .filter(|e| &*e.name != "camera-1")
            .cloned()
            .collect(),
    }
}

/// The objects of `o` but node `name`'s labels, which the recovery tests
/// change.
fn without_labels_of(o: &Objects, name: &str) -> Objects {
    let mut o = o.clone();
    o.nodes = o
        .nodes
        .iter()
        .map(|n| {
            if &*n.name == name {
                let mut n = (**n).clone();
                n.labels.clear();
                Arc::new(n)
            } else {
                n.clone()
            }
        })
        .collect();
    o
}

/// A cluster of `endpoints` endpoints in namespace `ns` on three nodes
/// (node-a the gateway), and one policy.
fn cluster(ns: &str, endpoints: usize) -> String {
    let mut docs = vec![
        namespace(ns),
        policy("camera", &["232.1.0.0/16", "ff3e::8000:0/112"], "b"),
        node("node-a", "192.0.2.11", "a"),
        node("node-b", "192.0.2.12", "b"),
        node("node-c", "192.0.2.13", "c"),
    ];
    for i in 0..endpoints {
        let node_ip = format!("192.0.2.1{}", 1 + i % 3);
        docs.push(endpoint(
            ns,
            &format!("camera-{i}"),
            &format!("198.51.100.{}", 10 + i),
            &node_ip,
        ));
    }
    join(&docs)
}

/// The watches expire: on an API server without a watch cache (every
/// watch is etcd's own), etcd's history is compacted past every watch's
/// resource version and etcd restarts, so each watch, resumed by the API
/// server, is told 410 Gone, and the source lists again. That relist withdraws nothing, not even for one snapshot, and it
/// is no failure: nothing logged above info, `failing` never set, no error
/// counted. The control: the API server stopped is a failure, logged and
/// in `failing`, until it is back.
#[test]
fn a_relist_after_the_watch_expired_withdraws_nothing_and_is_no_failure() {
    let name = "a_relist_after_the_watch_expired_withdraws_nothing_and_is_no_failure";
    let Some(assets) = Assets::require(name) else {
        return;
    };
    // Without a watch cache every watch is etcd's own, which etcd ends
    // with 410 Gone once its history is compacted past it.
    let opts = KubeOptions {
        apiserver_args: vec!["--watch-cache=false".into()],
        ..KubeOptions::default()
    };
    let api = KubeApi::start(&assets, opts).expect("the control plane");
    print_start(name, &api);
    let endpoints = 40;
    api.apply(&cluster("media", endpoints))
        .expect("the cluster");
    let src = Source::start(&api);
    let (_, base) = src.wait("the initial list", PROMPT, |o| {
        o.policies.len() == 1 && o.nodes.len() == 3 && o.endpoints.len() == endpoints
    });
    let counts = [1, 3, endpoints as u64];
    let events: Vec<u64> = ObjectKind::ALL
        .iter()
        .map(|k| src.stats.events(SourceKind::Kubernetes, *k))
        .collect();
    let (logs, failing, snapshots) = (src.log_count(), src.failing_count(), src.snapshot_count());
    let (errors, failures) = (src.stats.errors(), src.stats.watch_failures());

    // History moves on (writes of another kind), then is compacted.
    for i in 0..3 {
        api.apply(&format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: churn-{i}\n  namespace: default\ndata:\n  i: \"{i}\"\n"
        ))
        .expect("a ConfigMap");
    }
    let revision = api.compact_etcd().expect("compaction");
    let t = Instant::now();
    api.restart_etcd().expect("etcd restarted");

    // Every kind listed again, each relist complete.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let listed = ObjectKind::ALL
            .iter()
            .enumerate()
            .all(|(i, k)| src.stats.events(SourceKind::Kubernetes, *k) >= events[i] + counts[i]);
        let done = src.logs.lock().unwrap()[logs..]
            .iter()
            .filter(|l| l.text.contains("relist found the objects held"))
            .count();
        if listed && done >= 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no relist of every kind within 60 s of compaction at {revision}; log:\n{}",
            src.log_text(logs)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "compacted at revision {revision}, etcd restarted: every kind listed again {:?} later",
        t.elapsed()
    );
    // It was the expiry: the source heard 410 Gone for each kind.
    for kind in ObjectKind::ALL {
        let told = src.logs.lock().unwrap()[logs..].iter().any(|l| {
            l.target.starts_with("cilium_mcast_egress")
                && l.text.contains(&format!("kind=\"{}\"", kind.kind_name()))
                && (l.text.contains("410") || l.text.contains("Expired"))
        });
        assert!(
            told,
            "no 410 for the watch of {kind}:\n{}",
            src.log_text(logs)
        );
    }

    assert_nothing_withdrawn(&src, snapshots, &base, "the relist");
    assert_eq!(
        src.snapshot_count(),
        snapshots,
        "a relist that found the objects held published a snapshot"
    );
    let complaints = src.complaints_from(logs);
    assert!(
        complaints.is_empty(),
        "a routine relist logged as a failure: {complaints:#?}\nlog:\n{}",
        src.log_text(logs)
    );
    assert!(
        src.failing_from(failing).is_empty(),
        "a routine relist made the source failing: {:?}",
        src.failing_from(failing)
    );
    assert_eq!(
        src.stats.errors(),
        errors,
        "a routine relist counted as an error"
    );
    assert_eq!(
        src.stats.watch_failures(),
        failures,
        "a routine relist counted as a failed watch"
    );

    // The watches work after it.
    api.patch(
        &["ciliumendpoint", "camera-0", "-n", "media"],
        r#"{"status":{"networking":{"addressing":[{"ipv4":"198.51.100.250"}]}}}"#,
    )
    .expect("the endpoint patch");
    src.wait("a change after the relist", PROMPT, |o| {
        endpoint_ip(o, "media", "camera-0").as_deref() == Some("198.51.100.250")
    });

    // The control: a real failure shows.
    let logs = src.log_count();
    api.stop_apiserver().expect("the API server stopped");
    let deadline = Instant::now() + PROMPT;
    while src.stats.failing().is_none() {
        assert!(
            Instant::now() < deadline,
            "the API server away is no failure"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let why = src.stats.failing().unwrap_or_default();
    assert!(why.contains("watch of"), "{why}");
    assert!(
        src.complaints_from(logs)
            .iter()
            .any(|l| l.text.contains("watch failed")),
        "the failure was not logged:\n{}",
        src.log_text(logs)
    );
    api.start_apiserver().expect("the API server back");
    api.patch(
        &["ciliumendpoint", "camera-0", "-n", "media"],
        r#"{"status":{"networking":{"addressing":[{"ipv4":"198.51.100.251"}]}}}"#,
    )
    .expect("the endpoint patch");
    src.wait("a change after the API server's return", PROMPT, |o| {
        endpoint_ip(o, "media", "camera-0").as_deref() == Some("198.51.100.251")
    });
    let deadline = Instant::now() + PROMPT;
    while src.stats.failing().is_some() {
        assert!(
            Instant::now() < deadline,
            "still failing: {:?}",
            src.stats.failing()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("control plane at the end: {}", api.rss());
    src.stop();
}

/// The API server restarted, then stopped for 30 s: while it is away every
/// snapshot still holds every object, and within a second of its return
/// (from the moment it first takes a write) the source has that write.
#[test]
fn a_brief_and_a_30s_absence_of_the_api_server_withdraw_nothing_and_end_within_a_second() {
    let name =
        "a_brief_and_a_30s_absence_of_the_api_server_withdraw_nothing_and_end_within_a_second";
    let Some(assets) = Assets::require(name) else {
        return;
    };
    let api = KubeApi::start(&assets, KubeOptions::default()).expect("the control plane");
    print_start(name, &api);
    let endpoints = 20;
    api.apply(&cluster("media", endpoints))
        .expect("the cluster");
    let src = Source::start(&api);
    let (_, base) = src.wait("the initial list", PROMPT, |o| {
        o.policies.len() == 1 && o.nodes.len() == 3 && o.endpoints.len() == endpoints
    });
    // node-a's labels change with each round; everything else stays.
    let base = without_labels_of(&base, "node-a");

    let mut report = Vec::new();
    for (round, away) in [
        ("restart", Duration::ZERO),
        ("stop-30s", Duration::from_secs(30)),
    ] {
        let (snapshots, failing, logs) =
            (src.snapshot_count(), src.failing_count(), src.log_count());
        let t = Instant::now();
        api.stop_apiserver().expect("the API server stopped");
        let stopped_in = t.elapsed();
        std::thread::sleep(away);
        let writer =
            patch_node_labels_when_back(&api, "node-a", serde_json::json!({ "round": round }));
        let ready = api.start_apiserver().expect("the API server back");
        let back = writer.join().expect("the writer");
        let (seen, _) = src.wait(
            &format!("the write after the {round}"),
            Duration::from_secs(60),
            |o| {
                node_of(o, "node-a")
                    .and_then(|n| n.labels.get("round"))
                    .map(String::as_str)
                    == Some(round)
            },
        );
        let changes = src.failing_from(failing);
        // While it was away, the source said so; and it no longer does.
        assert!(
            changes.iter().any(|(_, f)| f.is_some()),
            "{round}: the API server away was no failure; log:\n{}",
            src.log_text(logs)
        );
        let recovered = changes
            .last()
            .filter(|(_, f)| f.is_none())
            .map(|(at, _)| *at);
        for (i, (at, s)) in src.snapshots_from(snapshots).iter().enumerate() {
            let s = without_labels_of(s, "node-a");
            assert!(
                holds_all(&s, &base),
                "{round}: snapshot {i} at {:?} withdrew objects: {s:#?}",
                at.duration_since(t)
            );
        }
        let current = seen.saturating_duration_since(back);
        eprintln!(
            "{round}: stopped in {:.2} s, away {:.1} s; first write taken {:.2} s before /readyz answered; \
             the source had it {:.0} ms after it was taken; failing cleared {}",
            stopped_in.as_secs_f64(),
            back.duration_since(t).as_secs_f64(),
            ready.saturating_duration_since(back).as_secs_f64(),
            current.as_secs_f64() * 1000.0,
            recovered.map_or("never".into(), |r| format!(
                "{:.0} ms after it was taken",
                r.saturating_duration_since(back).as_secs_f64() * 1000.0
            )),
        );
        report.push((
            round,
            current,
            recovered.map(|r| r.saturating_duration_since(back)),
        ));
    }
    for (round, current, recovered) in report {
        assert!(
            current < CURRENT_WITHIN,
            "{round}: the source was current only {current:?} after the API server's return"
        );
        assert!(
            recovered.is_some_and(|r| r < CURRENT_WITHIN),
            "{round}: still failing after the API server's return ({recovered:?})"
        );
    }
    eprintln!("control plane at the end: {}", api.rss());
    src.stop();
}

/// A label key and value of every character Kubernetes allows, each as long
/// as allowed: a DNS-subdomain prefix of 253 characters, a name and a value
/// of 63 with `-`, `_` and `.` inside.
fn longest_label() -> (String, String) {
    let prefix = format!(
        "{}.{}.{}.{}",
        "a".repeat(63),
        "b-9".repeat(21),
        "c".repeat(63),
        "d".repeat(61)
    );
    assert_eq!(prefix.len(), 253);
    let name = format!("Az09-_.{}z", "x".repeat(55));
    assert_eq!(name.len(), 63);
    let value = format!("0_-.AZaz{}9", "v".repeat(54));
    assert_eq!(value.len(), 63);
    (format!("{prefix}/{name}"), value)
}

/// Objects Cilium's CRDs accept but that are odd, in one manifest.
fn odd_objects() -> String {
    let (key, value) = longest_label();
    let many: Vec<String> = (0..4000)
        .map(|i| format!("232.{}.{}.0/24", i / 250, i % 250))
        .chain((0..96).map(|i| format!("ff3e::{:x}:0/112", 0x8000 + i)))
        .collect();
    let flow = |v: &[String]| format!("[{}]", v.join(", "));
    let selectors = "  selectors:\n  - podSelector:\n      matchLabels:\n        app: camera\n";
    format!(
        "{ns}---
apiVersion: cilium.io/v2
kind: CiliumEgressGatewayPolicy
metadata:
  name: odd-empty-gateway
spec:
{selectors}  destinationCIDRs: [232.1.0.0/16]
  egressGateway:
    nodeSelector: {{}}
---
apiVersion: cilium.io/v2
kind: CiliumEgressGatewayPolicy
metadata:
  name: odd-both-gateways
spec:
{selectors}  destinationCIDRs: [232.2.0.0/16, ff3e::8000:0/112]
  egressGateway:
    nodeSelector:
      matchLabels: {{egress-gateway: b}}
    egressIP: 203.0.113.10
  egressGateways:
  - nodeSelector:
      matchLabels: {{egress-gateway: c}}
    interface: uplink0
  - nodeSelector:
      matchExpressions:
      - {{key: egress-gateway, operator: In, values: [b, c]}}
    egressIP: 203.0.113.130
---
apiVersion: cilium.io/v2
kind: CiliumEgressGatewayPolicy
metadata:
  name: odd-many-cidrs
spec:
{selectors}  destinationCIDRs: {many}
  excludedCIDRs: [232.0.0.0/24, 232.15.249.0/24, ff3e::8000:0/112]
  egressGateway:
    nodeSelector:
      matchLabels: {{egress-gateway: b}}
    egressIP: 203.0.113.10
---
apiVersion: cilium.io/v2
kind: CiliumEgressGatewayPolicy
metadata:
  name: odd-labels
spec:
  selectors:
  - podSelector:
      matchLabels:
        {key}: {value}
        Az09-_.z: \"\"
      matchExpressions:
      - {{key: {key}, operator: In, values: [{value}, \"\"]}}
      - {{key: absent.example.com/x, operator: DoesNotExist}}
    namespaceSelector:
      matchExpressions:
      - {{key: kubernetes.io/metadata.name, operator: NotIn, values: [kube-system]}}
  destinationCIDRs: [232.3.0.0/16]
  egressGateway:
    nodeSelector:
      matchLabels:
        {key}: {value}
        \"true\": \"false\"
    egressIP: 203.0.113.10
---
apiVersion: cilium.io/v2
kind: CiliumNode
metadata:
  name: odd-node
  labels:
    {key}: {value}
    \"true\": \"false\"
    empty.example.com/value: \"\"
spec:
  addresses:
  - {{type: InternalIP, ip: 192.0.2.21}}
  - {{type: InternalIP, ip: \"2001:db8::21\"}}
  - {{type: CiliumInternalIP, ip: 198.51.100.200}}
  - {{type: InternalIP, ip: 192.0.2.22}}
---
apiVersion: cilium.io/v2
kind: CiliumEndpoint
metadata:
  name: odd-labelled
  namespace: odd-media
status:
  id: 7
  identity:
    id: 70001
    labels:
    - k8s:{key}={value}
    - k8s:Az09-_.z=
    - k8s:io.kubernetes.pod.namespace=odd-media
    - k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=odd-media
    - reserved:init
  networking:
    addressing:
    - {{ipv4: 198.51.100.30, ipv6: \"2001:db8::30\"}}
    - {{ipv4: 198.51.100.30}}
    node: 192.0.2.21
---
apiVersion: cilium.io/v2
kind: CiliumEndpoint
metadata:
  name: odd-v6-only-no-identity
  namespace: odd-media
status:
  id: 8
  networking:
    addressing:
    - {{ipv6: \"2001:db8::31\"}}
    node: 192.0.2.22
---
apiVersion: cilium.io/v2
kind: CiliumEndpoint
metadata:
  name: odd-out-of-range-identity
  namespace: odd-media
status:
  id: 9
  identity:
    id: 16777216
    labels: [k8s:app=camera]
  networking:
    addressing:
    - {{ipv4: 198.51.100.32}}
    node: 192.0.2.21
",
        ns = namespace("odd-media"),
        many = flow(&many),
    )
}

/// Objects Cilium's CRDs accept but that are odd (an empty gateway, both
/// `egressGateway` and `egressGateways`, 4096 destinations, labels of every
/// allowed character at their longest, empty label values, a node with
/// IPv6 and non-internal addresses, endpoints with repeated addresses, only
/// IPv6, no identity, an identity out of the 24-bit range): what the
/// source reports for them is exactly what the manifests source reports
/// for the same YAML. The control: objects the CRDs reject are refused, so
/// the API server does validate.
#[test]
fn odd_objects_are_reported_as_the_manifests_source_reports_them() {
    let name = "odd_objects_are_reported_as_the_manifests_source_reports_them";
    let Some(api) = KubeApi::shared(name) else {
        return;
    };
    print_start(name, api);
    let yaml = odd_objects();
    api.apply(&yaml).expect("the odd objects are accepted");
    let dir = tempfile::tempdir().expect("a directory");
    std::fs::write(dir.path().join("odd.yaml"), &yaml).expect("writing the manifest");
    let (manifests, errors) = load_dir(dir.path());
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        (
            manifests.policies.len(),
            manifests.nodes.len(),
            manifests.endpoints.len()
        ),
        (4, 1, 3),
        "the manifests source reads every object"
    );

    let src = Source::start(api);
    let (_, seen) = src.wait("the odd objects", PROMPT, |o| {
        let o = owned(o, "odd");
        (o.policies.len(), o.nodes.len(), o.endpoints.len()) == (4, 1, 3)
    });
    let kube = owned(&seen, "odd");
    // The API server gives every object a uid, which a manifest has not.
    for e in &kube.endpoints {
        assert!(e.uid_hash.is_some(), "{} has no uid", e.id());
    }
    let without_uid = |o: &Objects| Objects {
        endpoints: o
            .endpoints
            .iter()
            .map(|e| {
                Arc::new(Endpoint {
                    uid_hash: None,
                    ..(**e).clone()
                })
            })
            .collect(),
        ..o.clone()
    };
    let (kube, manifests) = (without_uid(&kube), without_uid(&manifests));
    for (k, m) in kube.policies.iter().zip(&manifests.policies) {
        assert_eq!(k, m, "policy {:?}", k.metadata.name);
    }
    for (k, m) in kube.nodes.iter().zip(&manifests.nodes) {
        assert_eq!(k, m, "node {}", k.name);
    }
    for (k, m) in kube.endpoints.iter().zip(&manifests.endpoints) {
        assert_eq!(k, m, "endpoint {}", k.id());
    }
    assert_eq!(kube, manifests);
    // Spot checks that the comparison compares what is odd.
    let many = kube
        .policies
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some("odd-many-cidrs"))
        .expect("odd-many-cidrs");
    assert_eq!(many.spec.destination_cidrs.len(), 4096);
    let odd_node = node_of(&kube, "odd-node").expect("odd-node");
    assert_eq!(
        odd_node.labels.get(&longest_label().0),
        Some(&longest_label().1)
    );
    assert_eq!(odd_node.internal_ips.len(), 2);

    // The control: what the CRDs do not allow is refused.
    let (key, _) = longest_label();
    for (what, bad) in [
        (
            "a gateway without a node selector",
            policy("odd-refused", &["232.9.0.0/16"], "b").replace(
                "    nodeSelector:\n      matchLabels:\n        egress-gateway: b\n",
                "",
            ),
        ),
        (
            "a destination that is no CIDR",
            policy("odd-refused", &["232.9.0.0/33"], "b"),
        ),
        (
            "a selector value of 64 characters",
            policy("odd-refused", &["232.9.0.0/16"], &"v".repeat(64)),
        ),
        (
            "a label key with a prefix of 254 characters",
            node("odd-refused", "192.0.2.29", "b").replace("egress-gateway:", &format!("x{key}:")),
        ),
    ] {
        let refused = api.apply(&bad);
        assert!(refused.is_err(), "{what} was accepted:\n{bad}");
    }
    assert!(src.complaints_from(0).is_empty(), "{}", src.log_text(0));
    src.stop();
    api.delete(&[
        "ciliumegressgatewaypolicy",
        "odd-empty-gateway",
        "odd-both-gateways",
        "odd-many-cidrs",
        "odd-labels",
    ])
    .expect("cleanup");
    api.delete(&["ciliumnode", "odd-node"]).expect("cleanup");
    api.delete(&["namespace", "odd-media", "--wait=false"])
        .expect("cleanup");
}

/// The helpers others build on: a ServiceAccount's token (TokenRequest)
/// in a kubeconfig authenticates as that account, which RBAC then holds
/// to what it was granted; admin may do what it may not.
#[test]
fn a_service_account_token_kubeconfig_is_that_account_under_rbac() {
    let name = "a_service_account_token_kubeconfig_is_that_account_under_rbac";
    let Some(api) = KubeApi::shared(name) else {
        return;
    };
    api.ensure_service_account("sa-test", "reader")
        .expect("the ServiceAccount");
    // Again: nothing to do, no error.
    api.ensure_service_account("sa-test", "reader")
        .expect("the ServiceAccount, again");
    let kubeconfig = api
        .token_kubeconfig("sa-test", "reader", Duration::from_secs(3600))
        .expect("a token kubeconfig");
    let who = api
        .kubectl_as(
            &kubeconfig,
            &[
                "auth",
                "whoami",
                "-o",
                "jsonpath={.status.userInfo.username}",
            ],
            None,
        )
        .expect("whoami");
    assert_eq!(who, "system:serviceaccount:sa-test:reader");
    let can = |kubeconfig: &Path| {
        api.kubectl_as(
            kubeconfig,
            &["auth", "can-i", "list", "ciliumnodes.cilium.io"],
            None,
        )
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|e| e.to_string())
    };
    assert!(can(&kubeconfig).contains("no"), "{}", can(&kubeconfig));
    let listed = api.kubectl_as(&kubeconfig, &["get", "ciliumnodes"], None);
    assert!(
        listed
            .as_ref()
            .is_err_and(|e| e.to_string().contains("Forbidden")),
        "{listed:?}"
    );
    // The control: admin may.
    assert_eq!(can(&api.kubeconfig()), "yes");
    api.kubectl(&["get", "ciliumnodes"]).expect("admin lists");
    api.delete(&["namespace", "sa-test", "--wait=false"])
        .expect("cleanup");
}

/// The control plane on a host of an underlay (a named namespace with a
/// documentation address, as the lab's nodes would reach it) answers a
/// client in another namespace, its certificate valid for that address.
#[test]
fn a_control_plane_on_an_underlay_host_answers_other_namespaces() {
    let name = "a_control_plane_on_an_underlay_host_answers_other_namespaces";
    let Some(assets) = Assets::require(name) else {
        return;
    };
    /// Two named namespaces joined by a veth, deleted on drop.
    struct Wire(String, String);
    impl Drop for Wire {
        fn drop(&mut self) {
            for ns in [&self.0, &self.1] {
                let _ = std::process::Command::new("ip")
                    .args(["netns", "del", ns])
                    .status();
            }
        }
    }
    let ip = |args: &[&str]| {
        let ok = std::process::Command::new("ip")
            .args(args)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ip {}", args.join(" "));
    };
    let pid = std::process::id();
    let wire = Wire(format!("kst{pid}-host"), format!("kst{pid}-client"));
    for ns in [&wire.0, &wire.1] {
        ip(&["netns", "add", ns]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
    }
    ip(&[
        "-n", &wire.0, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns",
        &wire.1,
    ]);
    for (ns, addr) in [(&wire.0, "192.0.2.2/24"), (&wire.1, "192.0.2.3/24")] {
        ip(&["-n", ns, "addr", "add", addr, "dev", "eth0"]);
        ip(&["-n", ns, "link", "set", "eth0", "up"]);
    }
    let api = KubeApi::start(
        &assets,
        KubeOptions {
            netns: lab::kube::Netns::Named(wire.0.clone()),
            address: "192.0.2.2".parse().unwrap(),
            cilium_crds: false,
            ..KubeOptions::default()
        },
    )
    .expect("the control plane on 192.0.2.2");
    print_start(name, &api);
    assert_eq!(api.server(), "https://192.0.2.2:6443");
    // From the other namespace, through the veth, verifying the certificate.
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &wire.1])
        .arg(&assets.kubectl)
        .arg("--kubeconfig")
        .arg(api.kubeconfig())
        .args(["get", "--raw", "/readyz"])
        .env("KUBECACHEDIR", api.dir().join("client-cache"))
        .output()
        .expect("kubectl");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
    // The control: from the host's namespace, the same request finds no
    // API server.
    let from_host = std::process::Command::new(&assets.kubectl)
        .arg("--kubeconfig")
        .arg(api.kubeconfig())
        .args(["--request-timeout=2s", "get", "--raw", "/readyz"])
        .env("KUBECACHEDIR", api.dir().join("client-cache"))
        .output()
        .expect("kubectl");
    assert!(!from_host.status.success(), "{from_host:?}");
    drop(api);
    drop(wire);
}
