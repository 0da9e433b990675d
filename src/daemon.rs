//! `cilium-mcast-egress run`: load the datapath (adopting whatever is
//! pinned), start the source of the cluster's objects and the probes, and
//! run the [`Controller`]'s passes on every change, every netlink event and
//! every resync interval. On SIGTERM the loop stops and the datapath stays
//! attached and pinned, forwarding as it was.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::{FutureExt, StreamExt};
use tokio::sync::watch;

use crate::attach::AttachConfig;
use crate::controller::{Controller, ControllerConfig};
use crate::datapath::{Capacities, Datapath, DatapathStorage, Paths};
use crate::health::{self, Health};
use crate::metrics::Metrics;
use crate::node;
use crate::objects::Objects;
use crate::source::{self, SourceConfig, SourceStats};

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

/// Run until `shutdown` turns true.
pub async fn run(cfg: DaemonConfig, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let mut storage = DatapathStorage::default();
    let dp = Datapath::load_with(&mut storage, Paths::new(&cfg.bpffs_root), &cfg.capacities)
        .context("loading the datapath")?;
    let maps = dp.maps().context("opening the pinned maps")?;
    let netlink = node::connect().context("netlink")?;
    node::report_netkit(&netlink, &cfg.attach.endpoint_devices).await;
    let mut changes = node::changes().context("netlink notifications")?;

    let stats = Arc::new(SourceStats::default());
    let metrics = Arc::new(
        Metrics::new(dp.maps().context("opening the pinned maps")?, stats.clone())
            .context("registering metrics")?,
    );
    let health = Arc::new(Health::default());
    if let Some(addr) = cfg.metrics_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
        tokio::spawn(health::serve(
            listener,
            health.clone(),
            metrics.clone(),
            shutdown.clone(),
        ));
    }

    let (tx, mut objects_rx) = watch::channel::<Option<Arc<Objects>>>(None);
    let mut source_task = tokio::spawn(source::run(
        cfg.source.clone(),
        tx,
        stats.clone(),
        shutdown.clone(),
    ));

    let mut ctl = Controller::new(
        ControllerConfig {
            node_name: cfg.node_name.clone(),
            cilium_bpffs: cfg.cilium_bpffs.clone(),
            attach: cfg.attach.clone(),
        },
        &dp,
        maps,
        netlink,
        health.clone(),
        metrics,
    );
    tracing::info!(node = %cfg.node_name, "controller started");

    let mut tick = tokio::time::interval(cfg.resync_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let objects = objects_rx.borrow_and_update().clone();
        ctl.pass(objects.as_ref()).await;
        health.mark_pass();

        tokio::select! {
            _ = tick.tick() => {}
            changed = objects_rx.changed() => {
                if changed.is_err() {
                    // The source task ended: report why, and stop.
                    return match (&mut source_task).await {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(e)) => Err(e).context("source of Cilium objects"),
                        Err(e) => Err(anyhow::anyhow!("source task: {e}")),
                    };
                }
            }
            Some(()) = changes.next() => {
                // Devices change in bursts (a pod's veth: link, addresses,
                // routes); let the burst settle, then one pass.
                tokio::time::sleep(Duration::from_millis(50)).await;
                while let Some(Some(())) = changes.next().now_or_never() {}
            }
            _ = shutdown.changed() => break,
        }
    }
    tracing::info!("stopping; the datapath stays attached and pinned");
    drop(ctl);
    let _ = tokio::time::timeout(Duration::from_secs(2), source_task).await;
    Ok(())
}
