//! `cilium-mcast-egress-lab`: the lab's command line. `make demo` runs its
//! `demo`, `make bench-lab` its `bench`, with the sidecar binary built beside
//! it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// The name of the sidecar binary in a Cargo target directory.
const SIDECAR: &str = "cilium-mcast-egress";

/// The lab of cilium-mcast-egress: a cluster of nodes in network namespaces,
/// each running the real sidecar. A dev tool, not part of the sidecar.
#[derive(Debug, Parser)]
#[command(name = "cilium-mcast-egress-lab", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The lab demo: three nodes in network namespaces with the example
    /// policy, an IPv4 and an IPv6 SSM stream from a pod with iperf2 to
    /// upstream source-specific receivers, a summary, and a full teardown.
    /// Needs root.
    Demo {
        /// How long the pod sends, in seconds.
        #[arg(long, default_value_t = 5)]
        seconds: u32,
        /// The `cilium-mcast-egress` binary each node runs. By default the
        /// one next to this binary, which is where Cargo puts both when it
        /// builds the workspace.
        #[arg(long, value_name = "PATH")]
        binary: Option<PathBuf>,
    },
    /// The end-to-end benchmark (`make bench-lab`): multicast capacity and
    /// CPU per packet of ours, the kernel's multicast routing and a socat
    /// relay on the lab's path; then pods' unicast with our links attached
    /// and detached. Needs root.
    Bench {
        /// The `cilium-mcast-egress` binary each node runs (by default the
        /// one next to this binary).
        #[arg(long, value_name = "PATH")]
        binary: Option<PathBuf>,
        /// One capacity trial, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        trial_ms: u64,
        /// Attached/detached rounds of the unicast part.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Seconds per iperf2 run.
        #[arg(long, default_value_t = 2)]
        iperf_secs: u32,
        /// Generator threads.
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Where to write the tables as well (Markdown).
        #[arg(long, value_name = "PATH")]
        out: Option<PathBuf>,
        /// A directory for a `perf record -a -g` of each path's repeated
        /// trials (where the time goes).
        #[arg(long, value_name = "DIR")]
        profile: Option<PathBuf>,
    },
}

/// The sidecar binary: `given`, or the one beside this executable.
fn sidecar_binary(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let binary = match given {
        Some(b) => b,
        None => std::env::current_exe()
            .context("locating this binary")?
            .with_file_name(SIDECAR),
    };
    if !binary.is_file() {
        anyhow::bail!(
            "no sidecar binary at {}: build it (`cargo build -p {SIDECAR}`) or pass --binary",
            binary.display()
        );
    }
    Ok(binary)
}

/// `work` runs on a thread of its own while this one waits for SIGINT or
/// SIGTERM: on either, the lab is torn down before the process exits.
fn guarded<T: Send + 'static>(
    work: impl FnOnce() -> lab::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    use nix::sys::signal::{SigSet, Signal};

    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGUSR1);
    // Blocked here, so in every thread spawned from now on; only sigwait
    // below receives them.
    signals.thread_block().context("blocking signals")?;
    let worker = std::thread::spawn(move || {
        let r = work();
        // To the process, not this thread (where it is blocked): the main
        // thread's sigwait takes it.
        let _ = nix::sys::signal::kill(nix::unistd::getpid(), Signal::SIGUSR1);
        r
    });
    match signals.wait().context("waiting for signals")? {
        Signal::SIGUSR1 => {}
        sig => {
            eprintln!("{sig}: tearing the lab down");
            // Stop the work where it is: no more building, its processes
            // gone, so that it drops (and so tears down) its lab itself.
            lab::request_stop();
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while !worker.is_finished() && std::time::Instant::now() < deadline {
                // Again and again: a step already under way may still start
                // a process after the first sweep.
                lab::kill_own_lab_processes();
                std::thread::sleep(Duration::from_millis(100));
            }
            // Whatever is still there.
            lab::reap_own_labs();
            std::process::exit(130);
        }
    }
    Ok(worker
        .join()
        .map_err(|_| anyhow::anyhow!("the lab thread panicked"))??)
}

fn run_demo(binary: &Path, seconds: u32) -> anyhow::Result<()> {
    lab::demo::check_tools().map_err(anyhow::Error::msg)?;
    let binary = binary.to_owned();
    let report = guarded(move || lab::demo::run_demo(&binary, seconds)).context("demo")?;
    for stream in [&report.v4, &report.v6] {
        if stream.received.unwrap_or(0) == 0 {
            anyhow::bail!("nothing of {} reached the upstream receiver", stream.group);
        }
    }
    Ok(())
}

fn run_bench(cfg: lab::bench::BenchConfig, out: Option<PathBuf>) -> anyhow::Result<()> {
    lab::bench::check_tools().map_err(anyhow::Error::msg)?;
    let tables = guarded(move || lab::bench::run_bench(cfg)).context("bench")?;
    if let Some(out) = out {
        std::fs::write(&out, tables).with_context(|| format!("writing {}", out.display()))?;
        println!("== tables written to {}", out.display());
    }
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Demo { seconds, binary } => run_demo(&sidecar_binary(binary)?, seconds),
        Command::Bench {
            binary,
            trial_ms,
            rounds,
            iperf_secs,
            threads,
            out,
            profile,
        } => run_bench(
            lab::bench::BenchConfig {
                binary: sidecar_binary(binary)?,
                trial: Duration::from_millis(trial_ms),
                rounds,
                iperf_secs,
                threads,
                sizes: vec![1316, 64],
                profile,
            },
            out,
        ),
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
