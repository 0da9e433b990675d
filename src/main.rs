//! `cilium-mcast-egress`: the one binary. Parses the command line and hands
//! off to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

use std::net::SocketAddr;
use std::time::Duration;

use cilium_mcast_egress::attach::AttachConfig;
use cilium_mcast_egress::chain::error_chain;
use cilium_mcast_egress::cli::{self, Output};
use cilium_mcast_egress::daemon::{self, DaemonConfig};
use cilium_mcast_egress::datapath::{self, Capacities, Datapath, DatapathStorage, Paths, Program};
use cilium_mcast_egress::source::SourceConfig;

/// Multicast egress for Cilium: pods publish IP multicast (SSM) to networks
/// outside the cluster through CiliumEgressGatewayPolicy.
#[derive(Debug, Parser)]
#[command(name = "cilium-mcast-egress", version, about)]
struct Cli {
    /// Log level or filter (overrides RUST_LOG), e.g. `debug`.
    #[arg(long, global = true)]
    log_level: Option<String>,

    /// Log format: `text`, or `json` (one object per line).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct BpffsArgs {
    /// Mount point of the BPF filesystem. Maps are pinned under
    /// `<DIR>/tc/globals`, links under `<DIR>/cilium-mcast-egress/links`.
    #[arg(long, value_name = "DIR", default_value = datapath::DEFAULT_BPFFS_ROOT)]
    bpffs_root: PathBuf,
}

/// Capacities of the maps that grow with the cluster. Part of each map's
/// layout: a node keeps the values it was first loaded with (pinned maps of
/// another capacity are refused) until `uninstall`.
#[derive(Debug, Args)]
struct CapacityArgs {
    /// Capacity of the policy map: this node's pods times their policies'
    /// group prefixes, plus, on a gateway, every pod it serves times its
    /// prefixes and exclusions. When more are needed, this node's own pods
    /// are written first and the shortfall is reported.
    #[arg(
        long,
        value_name = "N",
        default_value_t = Capacities::default().policy_entries,
        value_parser = clap::value_parser!(u32).range(1..=i64::from(Capacities::MAX))
    )]
    policy_map_entries: u32,

    /// Capacity of the policy-name map (one entry per policy of the
    /// cluster; names label the counters in the CLI).
    #[arg(
        long,
        value_name = "N",
        default_value_t = Capacities::default().policy_names,
        value_parser = clap::value_parser!(u32).range(1..=i64::from(Capacities::MAX))
    )]
    policy_names_entries: u32,
}

impl CapacityArgs {
    fn capacities(&self) -> Capacities {
        Capacities {
            policy_entries: self.policy_map_entries,
            policy_names: self.policy_names_entries,
        }
    }
}

#[derive(Debug, Args)]
struct OutputArgs {
    /// Output format: `text` (aligned columns) or `json`.
    #[arg(short, long, value_enum, value_name = "FORMAT", default_value_t = Output::Text)]
    output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ProgramArg {
    /// `mcast_from_container`, for endpoint veths (lxc*).
    FromContainer,
    /// `mcast_from_overlay`, for the tunnel device's ingress (cilium_vxlan).
    FromOverlay,
    /// `mcast_to_overlay`, for the tunnel device's egress (cilium_vxlan).
    ToOverlay,
}

impl From<ProgramArg> for Program {
    fn from(p: ProgramArg) -> Program {
        match p {
            ProgramArg::FromContainer => Program::FromContainer,
            ProgramArg::FromOverlay => Program::FromOverlay,
            ProgramArg::ToOverlay => Program::ToOverlay,
        }
    }
}

#[derive(Debug, Args)]
struct RunArgs {
    /// This node's name: the CiliumNode of that name is this node.
    #[arg(long, env = "NODE_NAME")]
    node_name: String,

    /// Read CiliumEgressGatewayPolicy, CiliumNode and CiliumEndpoint objects
    /// from the YAML files in DIR (watched for changes) instead of the
    /// Kubernetes API.
    #[arg(long, value_name = "DIR")]
    manifests: Option<PathBuf>,

    #[command(flatten)]
    bpffs: BpffsArgs,

    #[command(flatten)]
    capacities: CapacityArgs,

    /// Mount point of the BPF filesystem that cilium-agent pins its maps in
    /// (`cilium_lxc` is read from `<DIR>/tc/globals`).
    #[arg(long, value_name = "DIR", default_value = datapath::DEFAULT_BPFFS_ROOT)]
    cilium_bpffs: PathBuf,

    /// Endpoint devices to attach mcast_from_container to (shell glob).
    #[arg(long, value_name = "GLOB", default_value = "lxc*")]
    endpoint_devices: String,

    /// Tunnel device to attach mcast_from_overlay to.
    #[arg(long, value_name = "NAME", default_value = "cilium_vxlan")]
    tunnel_device: String,

    /// Address of the HTTP endpoint: `/metrics`, and `/healthz` and
    /// `/readyz` for probes. Served before the datapath loads; a port in
    /// use is retried, never a reason to exit.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:9980")]
    metrics_addr: SocketAddr,

    /// How often to reconcile when nothing has changed, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 1000, hide = true)]
    resync_interval_ms: u64,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the controller: load and attach the datapath and keep its maps in
    /// step with the cluster. SIGTERM stops it and leaves the datapath
    /// attached and forwarding.
    Run(RunArgs),
    /// Load the datapath and pin its maps (re-using pinned ones); attach
    /// nothing.
    Load {
        #[command(flatten)]
        bpffs: BpffsArgs,
        #[command(flatten)]
        capacities: CapacityArgs,
    },
    /// Attach a program to a device at the head of its tcx ingress chain, or
    /// replace the program of our link already there.
    Attach {
        #[command(flatten)]
        bpffs: BpffsArgs,
        #[command(flatten)]
        capacities: CapacityArgs,
        /// Device to attach to.
        #[arg(long)]
        device: String,
        /// Which program.
        #[arg(long, value_enum)]
        program: ProgramArg,
    },
    /// Detach our program from a device and remove its link pin.
    Detach {
        #[command(flatten)]
        bpffs: BpffsArgs,
        /// Device to detach from.
        #[arg(long)]
        device: String,
        /// Which program.
        #[arg(long, value_enum)]
        program: ProgramArg,
    },
    /// Detach every link and remove every pin this project made, and
    /// nothing else.
    Uninstall {
        #[command(flatten)]
        bpffs: BpffsArgs,
    },
    /// Inspect the pinned policy entries (works while the controller is
    /// down).
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Packets and bytes per policy, group and role; drops per reason and
    /// role; drop events the rate limit held back from the monitor. Read
    /// from the pinned maps: works while the controller is down.
    Counters {
        #[command(flatten)]
        bpffs: BpffsArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// This node as its pinned datapath sees it: node name and IP, the
    /// policies it is gateway for, attached devices, map fill levels, last
    /// sync, versions. Works while the controller is down.
    Status {
        #[command(flatten)]
        bpffs: BpffsArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Print drop events as the datapath reports them, one line each, until
    /// SIGINT or SIGTERM (or --count, --timeout).
    Monitor(MonitorArgs),
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// One row per policy entry: source IP, destination CIDR, egress IP,
    /// gateway IP (`Not Found`, `Excluded CIDR` as in `cilium-dbg bpf
    /// egress list`) and the policy's name.
    #[command(visible_alias = "ls")]
    List {
        #[command(flatten)]
        bpffs: BpffsArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
}

#[derive(Debug, Args)]
struct MonitorArgs {
    #[command(flatten)]
    bpffs: BpffsArgs,
    #[command(flatten)]
    output: OutputArgs,
    /// Exit after N events.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// Exit after SECS seconds, events or not.
    #[arg(long, value_name = "SECS")]
    timeout: Option<u64>,
}

/// The log filter when neither `--log-level` nor `RUST_LOG` sets one.
const DEFAULT_LOG_FILTER: &str = "info";

/// Added to every filter that does not name the Kubernetes client: it logs
/// every failed request as an error, each retry of a watch included (every
/// half second while the API server is away), and the source logs the same
/// failures itself, once and then at a low rate.
const QUIET_CLIENT: &str = "kube_client::client::builder=off";

/// The filter `--log-level` (`level`) or else `RUST_LOG` (`env`) asks for,
/// with the Kubernetes client's request errors off unless it names them.
fn log_filter_spec(level: Option<&str>, env: Option<&str>) -> String {
    let spec = level
        .or(env)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or(DEFAULT_LOG_FILTER);
    if spec.contains("kube_client") {
        spec.to_owned()
    } else {
        format!("{spec},{QUIET_CLIENT}")
    }
}

fn init_logging(level: Option<&str>, format: LogFormat) {
    let env = std::env::var("RUST_LOG").ok();
    let filter = EnvFilter::new(log_filter_spec(level, env.as_deref()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}

fn run_daemon(args: RunArgs) -> anyhow::Result<()> {
    // A parent may have left SIGTERM or SIGINT blocked (the mask survives
    // exec); the controller must see them to stop cleanly.
    let _ = nix::sys::signal::SigSet::all().thread_unblock();
    let endpoint_devices = glob::Pattern::new(&args.endpoint_devices)
        .with_context(|| format!("--endpoint-devices {:?}", args.endpoint_devices))?;
    let cfg = DaemonConfig {
        node_name: args.node_name,
        source: match args.manifests {
            Some(dir) => SourceConfig::Manifests(dir),
            None => SourceConfig::Kubernetes,
        },
        bpffs_root: args.bpffs.bpffs_root,
        capacities: args.capacities.capacities(),
        cilium_bpffs: args.cilium_bpffs,
        attach: AttachConfig {
            endpoint_devices,
            tunnel_device: args.tunnel_device,
        },
        metrics_addr: Some(args.metrics_addr),
        resync_interval: Duration::from_millis(args.resync_interval_ms.max(100)),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            wait_for_signal().await;
            let _ = stop_tx.send(true);
        });
        daemon::run(cfg, stop_rx).await
    })
}

/// SIGTERM (the kubelet stopping the pod) or SIGINT (Ctrl-C).
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the process with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) => run_daemon(args)?,
        Command::Load { bpffs, capacities } => {
            let mut storage = DatapathStorage::default();
            let paths = Paths::new(bpffs.bpffs_root);
            Datapath::load_with(&mut storage, paths.clone(), &capacities.capacities())
                .context("loading the datapath")?;
            tracing::info!(globals = %paths.globals().display(), "datapath loaded, maps pinned");
        }
        Command::Attach {
            bpffs,
            capacities,
            device,
            program,
        } => {
            let mut storage = DatapathStorage::default();
            let paths = Paths::new(bpffs.bpffs_root);
            let dp = Datapath::load_with(&mut storage, paths, &capacities.capacities())
                .context("loading the datapath")?;
            let outcome = dp
                .attach(&device, program.into())
                .with_context(|| format!("attaching to {device}"))?;
            tracing::info!(
                device,
                program = Program::from(program).name(),
                ?outcome,
                "attached"
            );
        }
        Command::Detach {
            bpffs,
            device,
            program,
        } => {
            let paths = Paths::new(bpffs.bpffs_root);
            let program = Program::from(program);
            let had = datapath::detach(&paths, &device, program)
                .with_context(|| format!("detaching from {device}"))?;
            tracing::info!(device, program = program.name(), detached = had, "detach");
        }
        Command::Uninstall { bpffs } => {
            let paths = Paths::new(bpffs.bpffs_root);
            let report = datapath::uninstall(&paths).context("uninstalling")?;
            for (device, program) in &report.links {
                tracing::info!(device, program, "link detached and unpinned");
            }
            for map in &report.maps {
                tracing::info!(map, "map unpinned");
            }
        }
        Command::Policy {
            command: PolicyCommand::List { bpffs, output },
        } => cli::policy::list(
            &Paths::new(bpffs.bpffs_root),
            output.output,
            &mut std::io::stdout().lock(),
        )?,
        Command::Counters { bpffs, output } => cli::counters::show(
            &Paths::new(bpffs.bpffs_root),
            output.output,
            &mut std::io::stdout().lock(),
        )?,
        Command::Status { bpffs, output } => cli::status::show(
            &Paths::new(bpffs.bpffs_root),
            output.output,
            &mut std::io::stdout().lock(),
        )?,
        Command::Monitor(args) => cli::monitor::run(
            &Paths::new(args.bpffs.bpffs_root),
            args.output.output,
            cli::monitor::Limits {
                count: args.count,
                timeout: args.timeout.map(Duration::from_secs),
            },
            &mut std::io::stdout().lock(),
        )?,
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_level.as_deref(), cli.log_format);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clients_request_errors_are_off_unless_named() {
        let quiet = |s: &str| format!("{s},{QUIET_CLIENT}");
        assert_eq!(log_filter_spec(None, None), quiet("info"));
        assert_eq!(log_filter_spec(None, Some("")), quiet("info"));
        assert_eq!(log_filter_spec(None, Some("info")), quiet("info"));
        assert_eq!(log_filter_spec(Some("debug"), Some("info")), quiet("debug"));
        assert_eq!(
            log_filter_spec(None, Some("info,kube_client=debug")),
            "info,kube_client=debug"
        );
        // Every spec still parses.
        for spec in [quiet("info"), quiet("debug,cilium_mcast_egress=trace")] {
            assert!(EnvFilter::try_new(&spec).is_ok(), "{spec}");
        }
    }
}
