//! `cilium-mcast-egress`: the one binary. Parses the command line and hands
//! off to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

use cilium_mcast_egress::datapath::{self, Datapath, DatapathStorage, Paths, Program};

/// Multicast egress for Cilium: pods publish IP multicast (SSM) to networks
/// outside the cluster through CiliumEgressGatewayPolicy.
#[derive(Debug, Parser)]
#[command(name = "cilium-mcast-egress", version, about)]
struct Cli {
    /// Log level or filter (overrides RUST_LOG), e.g. `debug`.
    #[arg(long, global = true)]
    log_level: Option<String>,

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

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ProgramArg {
    /// `mcast_from_container`, for endpoint veths (lxc*).
    FromContainer,
    /// `mcast_from_overlay`, for the tunnel device (cilium_vxlan).
    FromOverlay,
}

impl From<ProgramArg> for Program {
    fn from(p: ProgramArg) -> Program {
        match p {
            ProgramArg::FromContainer => Program::FromContainer,
            ProgramArg::FromOverlay => Program::FromOverlay,
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load the datapath and pin its maps (re-using pinned ones); attach
    /// nothing.
    Load {
        #[command(flatten)]
        bpffs: BpffsArgs,
    },
    /// Attach a program to a device at the head of its tcx ingress chain, or
    /// replace the program of our link already there.
    Attach {
        #[command(flatten)]
        bpffs: BpffsArgs,
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
}

fn init_logging(level: Option<&str>) {
    let filter = match level {
        Some(l) => EnvFilter::new(l),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Load { bpffs } => {
            let mut storage = DatapathStorage::default();
            let paths = Paths::new(bpffs.bpffs_root);
            Datapath::load(&mut storage, paths.clone()).context("loading the datapath")?;
            tracing::info!(globals = %paths.globals().display(), "datapath loaded, maps pinned");
        }
        Command::Attach {
            bpffs,
            device,
            program,
        } => {
            let mut storage = DatapathStorage::default();
            let dp = Datapath::load(&mut storage, Paths::new(bpffs.bpffs_root))
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
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_level.as_deref());
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
