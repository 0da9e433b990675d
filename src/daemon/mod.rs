//! `cilium-mcast-egress run`: serve the probes and the metrics, start the
//! source of the cluster's objects, load the datapath (adopting whatever is
//! pinned), and run the [`Controller`]'s passes on every change, every
//! netlink event and every resync interval. On SIGTERM the loop stops and
//! the datapath stays attached and pinned, forwarding as it was.
//!
//! Nothing after the command line ends the process. A part that fails (the
//! HTTP listener, the datapath, netlink, the source) is retried with backoff
//! while the rest goes on, and is reported meanwhile ([`retry`]): `/healthz`
//! stays 200 as long as the loop turns, `/readyz` answers 503 with the
//! reason, and the metrics and the log say it. The endpoint is served first,
//! so all of that is visible while the datapath is still out of reach.

mod libbpf_log;
pub mod retry;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::{FutureExt, Stream, StreamExt};
use tokio::sync::watch;

use crate::attach::AttachConfig;
use crate::controller::{Controller, ControllerConfig};
use crate::datapath::{Capacities, Datapath, DatapathStorage, Maps, Paths};
use crate::health::{self, Component, Health};
use crate::metrics::Metrics;
use crate::node;
use crate::objects::Objects;
use crate::source::{self, SourceConfig, SourceStats};
use retry::{stopped, Retry};

/// Everything `run` needs; built from the command line.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub node_name: String,
    pub source: SourceConfig,
    pub bpffs_root: PathBuf,
    /// Capacities of the maps sized at load.
    pub capacities: Capacities,
    /// Where Cilium's BPF filesystem is (its maps under `tc/globals`).
    pub cilium_bpffs: PathBuf,
    pub attach: AttachConfig,
    pub metrics_addr: Option<SocketAddr>,
    /// How often to reconcile without any event.
    pub resync_interval: Duration,
}

/// What the daemon shares between its tasks.
struct Shared {
    health: Arc<Health>,
    metrics: Arc<Metrics>,
}

/// Run until `shutdown` turns true. Errors only on what no retry can mend
/// (the metrics cannot be registered: a bug).
pub async fn run(cfg: DaemonConfig, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let stats = Arc::new(SourceStats::default());
    let shared = Shared {
        health: Arc::new(Health::default()),
        metrics: Arc::new(Metrics::new(stats.clone()).context("registering metrics")?),
    };
    let probes = cfg.metrics_addr.map(|addr| {
        tokio::spawn(serve_probes(
            addr,
            shared.health.clone(),
            shared.metrics.clone(),
            shutdown.clone(),
        ))
    });

    // The daemon keeps a sender of its own: the channel stays open while
    // the source is retried.
    let (tx, objects_rx) = watch::channel::<Option<Arc<Objects>>>(None);
    let source_task = tokio::spawn(supervise_source(
        cfg.source.clone(),
        tx.clone(),
        stats,
        Retry::new(
            Component::Source,
            match cfg.source {
                SourceConfig::Kubernetes => "kubernetes source",
                SourceConfig::Manifests(_) => "manifests source",
            },
            shared.health.clone(),
            shared.metrics.clone(),
        ),
        shutdown.clone(),
    ));

    let result = with_datapath(&cfg, &shared, objects_rx, &mut shutdown).await;
    drop(tx);
    let _ = tokio::time::timeout(Duration::from_secs(2), source_task).await;
    if let Some(probes) = probes {
        let _ = tokio::time::timeout(Duration::from_secs(1), probes).await;
    }
    result
}

/// Serve `/metrics`, `/healthz` and `/readyz` on `addr`, binding it again
/// and again while it is taken.
async fn serve_probes(
    addr: SocketAddr,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut retry = Retry::new(
        Component::Http,
        "metrics endpoint",
        health.clone(),
        metrics.clone(),
    );
    let listener = loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => break listener,
            Err(e) => {
                retry.failed(&anyhow::Error::new(e).context(format!("binding {addr}")));
                if !retry.wait(&mut shutdown).await {
                    return;
                }
            }
        }
    };
    retry.recovered();
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    health::serve(listener, health, metrics, shutdown).await;
}

/// Run the source, and run it again after a backoff whenever it ends
/// with an error (or panics); mirror its failing watches into `retry`.
async fn supervise_source(
    config: SourceConfig,
    tx: source::SnapshotSender,
    stats: Arc<SourceStats>,
    mut retry: Retry,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut failures_seen = stats.watch_failures();
    loop {
        let scans_at_start = stats.scans();
        let mut task = tokio::spawn(source::run(
            config.clone(),
            tx.clone(),
            stats.clone(),
            shutdown.clone(),
        ));
        let ended = loop {
            tokio::select! {
                ended = &mut task => break ended,
                () = stats.changed() => {
                    let failures = stats.watch_failures();
                    match stats.failing() {
                        Some(why) => retry.failing_quietly(why, failures.saturating_sub(failures_seen)),
                        // Works once it has read a whole picture again.
                        None if stats.scans() > scans_at_start => retry.recovered(),
                        None => {}
                    }
                    failures_seen = failures;
                }
            }
        };
        if *shutdown.borrow() {
            return;
        }
        let error = match ended {
            Ok(Err(e)) => anyhow::Error::new(e),
            Ok(Ok(())) => anyhow::anyhow!("the source stopped"),
            Err(e) => anyhow::anyhow!("the source's task ended: {e}"),
        };
        retry.failed(&error);
        if !retry.wait(&mut shutdown).await {
            return;
        }
    }
}

/// Load the datapath, again and again until it loads, then run the
/// controller on it.
async fn with_datapath(
    cfg: &DaemonConfig,
    shared: &Shared,
    objects_rx: watch::Receiver<Option<Arc<Objects>>>,
    shutdown: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut retry = Retry::new(
        Component::Datapath,
        "datapath",
        shared.health.clone(),
        shared.metrics.clone(),
    );
    loop {
        shared.health.mark_pass();
        // A storage per attempt: the datapath borrows the one it loaded
        // from for as long as it lives.
        let mut storage = DatapathStorage::default();
        let storage = &mut storage;
        // Blocking syscalls and the verifier: off the async workers that
        // serve the probes meanwhile.
        let (loaded, libbpf) =
            tokio::task::block_in_place(move || libbpf_log::holding(move || load(storage, cfg)));
        match loaded {
            Ok((dp, maps, for_metrics)) => {
                libbpf.print();
                retry.recovered();
                shared.metrics.set_maps(for_metrics);
                return operate(cfg, shared, &dp, maps, objects_rx, shutdown).await;
            }
            Err(e) => {
                if retry.would_log(&e) {
                    libbpf.print();
                }
                retry.failed(&e);
                if !retry.wait(shutdown).await {
                    tracing::info!("stopping; the datapath was not loaded");
                    return Ok(());
                }
            }
        }
    }
}

/// The datapath, the controller's handles to its maps and the metrics'.
fn load<'a>(
    storage: &'a mut DatapathStorage,
    cfg: &DaemonConfig,
) -> anyhow::Result<(Datapath<'a>, Maps, Maps)> {
    let dp = Datapath::load_with(storage, Paths::new(&cfg.bpffs_root), &cfg.capacities)
        .context("loading the datapath")?;
    let maps = dp.maps().context("opening the pinned maps")?;
    let for_metrics = dp.maps().context("opening the pinned maps")?;
    Ok((dp, maps, for_metrics))
}

type Changes = Pin<Box<dyn Stream<Item = ()> + Send>>;

/// A netlink handle and the stream of this node's changes.
fn connect_netlink() -> anyhow::Result<(rtnetlink::Handle, Changes)> {
    let handle = node::connect().context("netlink")?;
    let changes = node::changes().context("netlink notifications")?;
    Ok((handle, changes.boxed()))
}

/// The next change of this node's devices; never, while there is no
/// stream.
async fn next_change(changes: &mut Option<Changes>) -> Option<()> {
    match changes {
        Some(changes) => changes.next().await,
        None => std::future::pending().await,
    }
}

/// The controller's loop on a loaded datapath, until `shutdown`.
async fn operate(
    cfg: &DaemonConfig,
    shared: &Shared,
    dp: &Datapath<'_>,
    maps: Maps,
    mut objects_rx: watch::Receiver<Option<Arc<Objects>>>,
    shutdown: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut retry = Retry::new(
        Component::Netlink,
        "netlink",
        shared.health.clone(),
        shared.metrics.clone(),
    );
    let (netlink, changes) = loop {
        shared.health.mark_pass();
        match connect_netlink() {
            Ok(connected) => break connected,
            Err(e) => {
                retry.failed(&e);
                if !retry.wait(shutdown).await {
                    tracing::info!("stopping; the datapath stays attached and pinned");
                    return Ok(());
                }
            }
        }
    };
    retry.recovered();
    let mut changes = Some(changes);
    node::report_netkit(&netlink, &cfg.attach.endpoint_devices).await;

    let mut ctl = Controller::new(
        ControllerConfig {
            node_name: cfg.node_name.clone(),
            cilium_bpffs: cfg.cilium_bpffs.clone(),
            attach: cfg.attach.clone(),
        },
        dp,
        maps,
        netlink,
        shared.health.clone(),
        shared.metrics.clone(),
    );
    tracing::info!(node = %cfg.node_name, "controller started");

    let mut tick = tokio::time::interval(cfg.resync_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let objects = objects_rx.borrow_and_update().clone();
        ctl.pass(objects.as_ref()).await;
        shared.health.mark_pass();
        if changes.is_none() {
            // Once a pass: the resync tick paces the attempts.
            match node::changes().context("netlink notifications") {
                Ok(c) => {
                    changes = Some(c.boxed());
                    retry.recovered();
                }
                Err(e) => retry.failed(&e),
            }
        }

        tokio::select! {
            _ = tick.tick() => {}
            // The daemon holds a sender: this never ends.
            Ok(()) = objects_rx.changed() => {}
            change = next_change(&mut changes) => match change {
                Some(()) => {
                    // Devices change in bursts (a pod's veth: link,
                    // addresses, routes); let the burst settle, then one
                    // pass.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    if let Some(c) = changes.as_mut() {
                        while let Some(Some(())) = c.next().now_or_never() {}
                    }
                }
                None => {
                    // The passes go on at the resync interval meanwhile.
                    changes = None;
                    retry.failed(&anyhow::anyhow!("the stream of netlink notifications ended"));
                }
            },
            () = stopped(shutdown) => break,
        }
    }
    tracing::info!("stopping; the datapath stays attached and pinned");
    drop(ctl);
    Ok(())
}
