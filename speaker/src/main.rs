use std::process::ExitCode;

use clap::{Parser, Subcommand};
use speaker::{
    agent,
    config::{AgentArgs, ControllerArgs, InspectArgs, StaticArgs, StaticConfig},
    controller, inspect, static_mode,
};
use tracing_subscriber::EnvFilter;

/// XDP-accelerated Layer 2 announcer: answers ARP for virtual IPs from the
/// NIC's XDP hook.
#[derive(Debug, Parser)]
#[command(name = "speaker", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines as text, or as one JSON object each (for log pipelines).
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// What to log: a level (`debug`) or per-module directives
    /// (`info,speaker::election=debug`).
    #[arg(
        long,
        global = true,
        value_name = "FILTER",
        env = "RUST_LOG",
        default_value = "info"
    )]
    log_level: String,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Answer for fixed VIPs on fixed interfaces (no Kubernetes, no election).
    Static(StaticArgs),
    /// Kubernetes mode: announce LoadBalancer VIPs, elected with peers.
    Agent(Box<AgentArgs>),
    /// Kubernetes mode: give LoadBalancer Services addresses from the
    /// IPAddressPools (MetalLB-compatible); one replica active at a time.
    Controller(ControllerArgs),
    /// Show what this node's data plane answers: VIPs, links, MACs, time
    /// to expiry, conflicts and verdict counters, from the pinned maps.
    Inspect(InspectArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = match EnvFilter::try_new(&cli.log_level) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: --log-level {:?}: {e}", cli.log_level);
            return ExitCode::from(2);
        }
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    match cli.command {
        Command::Static(args) => {
            let cfg = match StaticConfig::from_args(args) {
                Ok(cfg) => cfg,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            run(static_mode::run(cfg))
        }
        Command::Agent(args) => {
            let cfg = match args.into_config() {
                Ok(cfg) => cfg,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            run(agent::run(cfg))
        }
        Command::Inspect(args) => match inspect::report(&args.bpffs, args.json) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Controller(args) => {
            let cfg = match args.into_config() {
                Ok(cfg) => cfg,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            run(controller::run(cfg))
        }
    }
}

fn run(fut: impl Future<Output = anyhow::Result<()>>) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
