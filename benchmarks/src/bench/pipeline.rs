//! Whole pipelines under the load generator, each service its own process: paystream
//! (ingest, processor, relay) and the seed design (its webhook handler and its polling
//! relay). For each, the sustained rate (closed loop until the last outcome event is read
//! back) with the CPU every process spent per payment in that window, then half that rate
//! (open loop) with the end-to-end latency from each webhook's intended send to its outcome
//! event read back.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use paystream_common::Config;

use super::cpu::{CpuReport, Processes};
use super::error::BenchError;
use super::peers::install;
use super::services::{db, unique, webhooks, Binaries, Services, Spec};
use crate::loadgen::{self, Latency};

/// What the load is: its size and how the services are found.
#[derive(Debug, Clone)]
pub struct Load<'a> {
    /// The executables.
    pub binaries: &'a Binaries,
    /// Payments of the closed-loop run (the half-rate run sends 20 s' worth, at most twice
    /// as many).
    pub payments: u64,
    /// Connections of the closed loop.
    pub concurrency: usize,
    /// The broker's process id, when not the local stack's.
    pub kafka_pid: Option<u32>,
}

/// One pipeline measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PipelineRun {
    /// Payments/s sustained: closed loop, counted until the last outcome event was read back.
    pub sustained: f64,
    /// CPU per payment of each process over the sustained run.
    pub cpu: Option<CpuReport>,
    /// Open-loop rate of the latency run (half the sustained rate); 0 when not run.
    pub half_rate: f64,
    /// HTTP latency at half rate.
    pub http_at_half: Latency,
    /// End-to-end latency at half rate: webhook intended send to outcome event read back.
    pub e2e_at_half: Option<Latency>,
    /// Payments with exactly one outcome event in the half-rate run.
    pub outcomes_ok: u64,
    /// Payments missing or doubled in the half-rate run.
    pub outcomes_bad: u64,
    /// Peak resident memory of each service process, MiB.
    pub peak_rss_mib: BTreeMap<String, f64>,
}

/// Starts `specs` on topics of their own, measures the sustained rate and, with `half`, the
/// half-rate run, and stops them.
async fn measure(
    config: &Config,
    load: &Load<'_>,
    specs: Vec<Spec>,
    tag: &str,
    half: bool,
) -> Result<PipelineRun, BenchError> {
    let config = unique(config, tag);
    paystream_common::kafka::ensure_topics(&config.kafka, Duration::from_secs(30)).await?;
    let services = Services::start(&config, load.binaries, specs).await?;
    let target = format!("http://{}", services.ingest);
    let mut processes = Processes::default();
    for (name, pid) in services.pids() {
        processes.process(name, pid);
    }
    processes.process("load generator (bench)", std::process::id());
    processes.postgres(&config).await?;
    processes.broker(&config, load.kafka_pid);

    let before = processes.sample();
    let closed = loadgen::run(&config, webhooks(target.clone(), load.payments, None, true, load.concurrency)).await?;
    let cpu = before.until(&processes.sample(), closed.payments_with_one_outcome);
    if closed.payments_missing_outcome + closed.payments_doubled > 0 || closed.payments_with_one_outcome == 0 {
        return Err(BenchError::Incomplete(format!(
            "{tag}: {} payments with one outcome, {} missing, {} doubled",
            closed.payments_with_one_outcome, closed.payments_missing_outcome, closed.payments_doubled
        )));
    }
    let mut run = PipelineRun {
        sustained: closed.payments as f64 / closed.outcomes_complete_s.unwrap_or(f64::INFINITY).max(1e-9),
        cpu: Some(cpu),
        ..PipelineRun::default()
    };
    if half {
        // Let the closed loop's backlog drain, then half the sustained rate for 20 s at most.
        tokio::time::sleep(Duration::from_secs(2)).await;
        run.half_rate = run.sustained / 2.0;
        let count = ((run.half_rate * 20.0) as u64).clamp(500, load.payments * 2);
        let open = loadgen::run(&config, webhooks(target, count, Some(run.half_rate), true, load.concurrency)).await?;
        run.http_at_half = open.http_latency;
        run.e2e_at_half = open.e2e_latency;
        run.outcomes_ok = open.payments_with_one_outcome;
        run.outcomes_bad = open.payments_missing_outcome + open.payments_doubled;
    }
    run.peak_rss_mib = services.peak_rss_mib();
    services.stop();
    Ok(run)
}

/// paystream as deployed: ingest, processor and relay.
pub async fn paystream(config: &Config, load: &Load<'_>) -> Result<PipelineRun, BenchError> {
    measure(config, load, vec!["ingest".into(), "processor".into(), "relay".into()], "pipeline", true).await
}

/// The seed design end to end.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SeedPipeline {
    /// Sustained payments/s of the handler on each number of database connections, in the
    /// order measured (the last is the run with the half-rate latency).
    pub sustained_by_connections: Vec<(usize, f64)>,
    /// The connections of the best, and its run with the half-rate latency.
    pub connections: usize,
    /// The run on `connections` connections.
    pub run: PipelineRun,
}

impl SeedPipeline {
    /// The best sustained rate measured (the seeds' figure is their best).
    pub fn sustained(&self) -> f64 {
        self.sustained_by_connections.iter().map(|(_, rate)| *rate).fold(0.0, f64::max)
    }
}

/// Database connections of the seed design's handler: the range its figures were given for.
pub const SEED_CONNECTIONS: [usize; 2] = [8, 32];

/// The seed design end to end: its handler on 8 and on 32 connections (closed loop each),
/// then the better of the two again with the half-rate run.
pub async fn seed(config: &Config, load: &Load<'_>) -> Result<SeedPipeline, BenchError> {
    // Installed before its relay starts, which only reads it.
    install(&db(config).await?).await?;
    let specs = |connections: usize| {
        vec![
            Spec { name: "seed-server", args: vec!["--connections".into(), connections.to_string()] },
            Spec::from("seed-relay"),
        ]
    };
    let mut seed = SeedPipeline::default();
    for connections in SEED_CONNECTIONS {
        eprintln!("[bench] seed design end to end, {connections} connections");
        let run = measure(config, load, specs(connections), "seed-pipeline", false).await?;
        seed.sustained_by_connections.push((connections, run.sustained));
    }
    seed.connections = seed
        .sustained_by_connections
        .iter()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map_or(SEED_CONNECTIONS[0], |(connections, _)| *connections);
    eprintln!("[bench] seed design end to end, {} connections, at half its rate", seed.connections);
    seed.run = measure(config, load, specs(seed.connections), "seed-pipeline", true).await?;
    // Its closed loop is a third measurement of the sustained rate, counted like the others.
    seed.sustained_by_connections.push((seed.connections, seed.run.sustained));
    Ok(seed)
}
