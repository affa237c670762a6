//! `paystream-bench`: the load generator, the benchmarks and the peers they measure
//! paystream against. Thin: parse the command line, load the configuration, start
//! telemetry, call the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;

use paystream_benchmarks::bench::{self, seed_relay, seed_server};
use paystream_benchmarks::loadgen;
use paystream_common::{cancel_on_signal, Config, Shutdown};

// The same allocator as the services' binary: the bare server and the seed design's handler
// stand beside ingest, and the load generator shares the machine with all of them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// paystream-bench: load generator, benchmarks and their peers.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (TOML) layered over the defaults; `PAYSTREAM_*` variables override both.
    #[arg(long, global = true, env = "PAYSTREAM_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send signed webhooks to ingest and report what happened.
    Loadgen(loadgen::LoadgenArgs),
    /// Measure paystream beside its peers on the local stack (see docs/benchmarks.md).
    Bench(bench::BenchArgs),
    /// A peer of ingest: answers 202 to every webhook without verifying or producing
    /// (`ingest.listen`; readiness on `ingest.admin_listen`).
    BareServer,
    /// The seed design's webhook handler: verifies like ingest, then one PL/pgSQL call per
    /// payment, answering after the commit (`ingest.listen`, `ingest.admin_listen`).
    SeedServer(seed_server::SeedServerArgs),
    /// The seed design's polling outbox relay (readiness on `relay.admin_listen`).
    SeedRelay(seed_relay::SeedRelayArgs),
}

async fn bind(addr: std::net::SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("bind {addr}"))
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = Config::load(cli.config.as_deref())?;
    let shutdown = Shutdown::new();
    match cli.command {
        Command::Loadgen(args) => {
            let complete = loadgen::main(&config, args).await?;
            return Ok(if complete { ExitCode::SUCCESS } else { ExitCode::FAILURE });
        }
        Command::Bench(args) => bench::run(&config, args).await?,
        Command::BareServer => {
            tokio::spawn(cancel_on_signal(shutdown.clone()));
            let (listener, admin) = (bind(config.ingest.listen).await?, bind(config.ingest.admin_listen).await?);
            bench::edge::serve_bare(listener, admin, shutdown).await?;
        }
        Command::SeedServer(args) => {
            tokio::spawn(cancel_on_signal(shutdown.clone()));
            let (listener, admin) = (bind(config.ingest.listen).await?, bind(config.ingest.admin_listen).await?);
            seed_server::serve(config, args, listener, admin, shutdown).await?;
        }
        Command::SeedRelay(args) => {
            tokio::spawn(cancel_on_signal(shutdown.clone()));
            let admin = bind(config.relay.admin_listen).await?;
            seed_relay::run(config, args, admin, shutdown).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    paystream_common::telemetry::init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}
