//! Side-by-side measurements on the local stack, each paystream figure next to the peer or
//! limit it is judged against, measured in the same run (this machine is shared and noisy:
//! ratios mean more than absolute figures).
//!
//! The parts, each in its module, none importing another part's module except to reuse a
//! setup step (`processor`'s payments and positions, `peers`' schema):
//! - `processor`: payments/s applied from a pre-filled topic, batched and one payment per
//!   transaction, uniform and hot; `peers`: the seed design's function beside it;
//! - `relay`: events/s drained from a filled outbox beside a plain producer, and
//!   commit-to-Kafka latency;
//! - `edge`: ingest beside a bare server; `pipeline`: paystream's whole pipeline and the seed
//!   design's (`seed_server`, `seed_relay`), with the CPU each process spends (`cpu`);
//! - `scaling`: processor members and installment counts.
//!
//! Around them: `services` (configurations of their own, child processes), `figure`,
//! `report` (the results as data, and the targets), `markdown` and `plot` (the results as
//! text and charts), `error`.

pub mod cpu;
pub mod edge;
pub mod error;
pub mod figure;
pub mod lifecycle;
pub mod markdown;
pub mod peers;
pub mod pipeline;
pub mod plot;
pub mod processor;
pub mod relay;
pub mod report;
pub mod scaling;
pub mod seed_relay;
pub mod seed_server;
pub mod services;

use std::path::{Path, PathBuf};
use std::time::Duration;

use paystream_common::Config;

use error::BenchError;
use figure::Figure;
use peers::PeerRuns;
use report::{targets, Context, Report, Run};
use services::Binaries;

/// The measurements one run can be limited to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// Processor batched and one payment per transaction, beside the seed design's function.
    Processor,
    /// Relay vs a plain producer.
    Relay,
    /// Ingest vs a bare server, and both whole pipelines with their CPU per payment.
    Edge,
    /// Processor members and installment counts.
    Scaling,
    /// Accrual over a book with a tenth overdue, alone and beside the processor.
    Lifecycle,
}

/// Sizes of one run.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// Payments for the batched processor runs.
    pub processor_messages: u64,
    /// Payments for the one-per-transaction runs (slower, so fewer).
    pub single_messages: u64,
    /// Payments for each run of the seed design's function.
    pub seed_messages: u64,
    /// Installments of the uniform case.
    pub uniform_installments: i32,
    /// Outbox rows for the relay.
    pub relay_events: u64,
    /// Seconds of each open-loop latency run of the relay and of ingest alone.
    pub latency_seconds: u64,
    /// Webhooks for the ingest runs (the pipelines' closed loops send half as many).
    pub requests: u64,
    /// Connections of the closed-loop runs.
    pub concurrency: usize,
    /// Payments per scaling run.
    pub scaling_messages: u64,
    /// Installments of the first scaling runs (then 10x and 100x).
    pub scaling_installments: i32,
    /// Interleaved rounds of the 1, 2 and 4 member runs.
    pub scaling_rounds: usize,
    /// Installments of each lifecycle book (a tenth overdue).
    pub lifecycle_installments: u64,
}

impl Sizes {
    /// The sizes `docs/benchmarks.md` reports.
    pub const FULL: Sizes = Sizes {
        processor_messages: 100_000,
        single_messages: 10_000,
        seed_messages: 20_000,
        uniform_installments: 100_000,
        relay_events: 300_000,
        latency_seconds: 10,
        requests: 30_000,
        concurrency: 64,
        scaling_messages: 50_000,
        scaling_installments: 10_000,
        scaling_rounds: 3,
        lifecycle_installments: 1_000_000,
    };

    /// Small enough to check in a few minutes that every part works.
    pub const QUICK: Sizes = Sizes {
        processor_messages: 20_000,
        single_messages: 3_000,
        seed_messages: 4_000,
        uniform_installments: 10_000,
        relay_events: 20_000,
        latency_seconds: 5,
        requests: 5_000,
        concurrency: 64,
        scaling_messages: 20_000,
        scaling_installments: 1_000,
        scaling_rounds: 1,
        lifecycle_installments: 100_000,
    };
}

/// `paystream-bench bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Where, when and on what; the limits measured outside (pgbench).
    #[command(flatten)]
    pub context: Context,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Also write the results into this Markdown file, between its
    /// `<!-- bench:results:start -->` and `<!-- bench:results:end -->` markers, and the
    /// charts beside it.
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// Measure nothing: read a run's JSON and write its Markdown and charts again. Given
    /// several times, the runs' parts are merged (the first file's context is kept):
    /// `scripts/bench` measures each part on a fresh broker this way.
    #[arg(long)]
    pub replot: Vec<PathBuf>,
    /// Only these measurements (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Part>,
    /// The broker's process id, for its CPU per payment (default: the local stack's node
    /// serving the first configured broker's port).
    #[arg(long, env = "PAYSTREAM_BENCH_KAFKA_PID")]
    pub kafka_pid: Option<u32>,
    /// The `paystream` executable the services run from (default: beside this one).
    #[arg(long, env = "PAYSTREAM_BENCH_PAYSTREAM_BIN")]
    pub paystream_bin: Option<PathBuf>,
}

/// Every relay of the runs drains the whole outbox: rows left by an earlier run (its own,
/// or the demo's) must have their topics on this broker, or they would hold their lanes
/// until the broker has them. A broker reset drops the topics, so they are created again.
async fn ensure_outbox_topics(config: &Config) -> Result<(), BenchError> {
    let client = services::db(config).await?;
    let topics: Vec<String> =
        client.query(include_str!("../../sql/bench_outbox_topics.sql"), &[]).await?.iter().map(|r| r.get(0)).collect();
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    if !names.is_empty() {
        paystream_common::kafka::ensure_named_topics(&config.kafka, &names, Duration::from_secs(30)).await?;
    }
    Ok(())
}

/// The processor part: batched, one payment per transaction, and the seed design's function
/// from each of its connection counts, uniform then hot, interleaved.
async fn processor_part(config: &Config, sizes: Sizes, report: &mut Report) -> Result<(), BenchError> {
    let step = |s: String| eprintln!("[bench] {s}");
    let batch_max = config.processor.batch_max;
    let mut rates = Vec::new();
    for (name, spread) in [("uniform", sizes.uniform_installments), ("hot (10 installments)", 10)] {
        step(format!("processor, {name}, batched"));
        let batched = processor::processor(config, sizes.processor_messages, spread, batch_max).await?;
        step(format!("processor, {name}, one payment per transaction"));
        let single = processor::processor(config, sizes.single_messages, spread, 1).await?;
        let mut seed = PeerRuns::default();
        for connections in pipeline::SEED_CONNECTIONS {
            step(format!("seed design's function, {name}, {connections} connections"));
            seed.runs.push(peers::seed_function(config, sizes.seed_messages, spread, connections).await?);
        }
        rates.push((batched, single, seed));
    }
    let mut rates = rates.into_iter();
    if let Some((batched, single, seed)) = rates.next() {
        report.processor_rows_per_payment = Some(batched.rows_per_payment);
        report.processor_uniform = Some(Figure::new(
            &format!("processor, uniform over {} installments", sizes.uniform_installments),
            batched.payments_per_s,
            "one payment per transaction",
            single.payments_per_s,
            "payments/s",
        ));
        report.seed_uniform = Some(seed);
    }
    if let Some((batched, single, seed)) = rates.next() {
        report.processor_hot = Some(Figure::new(
            "processor, hot over 10 installments",
            batched.payments_per_s,
            "one payment per transaction",
            single.payments_per_s,
            "payments/s",
        ));
        report.seed_hot = Some(seed);
    }
    Ok(())
}

/// Runs the measurements of `parts`, printing progress on stderr.
pub async fn all(
    config: &Config,
    binaries: &Binaries,
    sizes: Sizes,
    parts: &[Part],
    kafka_pid: Option<u32>,
) -> Result<Report, BenchError> {
    let step = |s: &str| eprintln!("[bench] {s}");
    let mut report = Report::default();
    ensure_outbox_topics(config).await?;
    if parts.contains(&Part::Processor) {
        processor_part(config, sizes, &mut report).await?;
    }
    if parts.contains(&Part::Relay) {
        step("relay and plain producer");
        let (relay, plain) = relay::relay(config, sizes.relay_events).await?;
        report.relay = Some(Figure::new(
            "relay events drained from the outbox",
            relay,
            "plain rdkafka producer, same records",
            plain,
            "events/s",
        ));
        step("relay commit-to-Kafka latency at half its drain rate");
        report.relay_half_peak_rate = Some(relay / 2.0);
        let (_, at_half_drain) = relay::relay_flow(config, Some(relay / 2.0), sizes.latency_seconds).await?;
        report.relay_latency_at_half_peak = Some(at_half_drain);
        step("relay sustained with its writer, then latency at half that rate");
        let (sustained, _) = relay::relay_flow(config, None, sizes.latency_seconds).await?;
        let (_, at_half) = relay::relay_flow(config, Some(sustained / 2.0), sizes.latency_seconds).await?;
        report.relay_sustained = Some((sustained, at_half));
    }
    if parts.contains(&Part::Edge) {
        step("ingest, bare server, both pipelines");
        let edge = edge::edge(config, binaries, sizes.requests, sizes.concurrency, sizes.latency_seconds, kafka_pid);
        report.edge = Some(edge.await?);
    }
    if parts.contains(&Part::Scaling) {
        let points = scaling::scaling(
            config,
            binaries,
            sizes.scaling_messages,
            sizes.scaling_installments,
            sizes.scaling_rounds,
        );
        report.scaling = Some(points.await?);
    }
    if parts.contains(&Part::Lifecycle) {
        let run = lifecycle::lifecycle(
            config,
            sizes.lifecycle_installments,
            sizes.processor_messages,
            sizes.uniform_installments,
        );
        report.lifecycle = Some(run.await?);
    }
    Ok(report)
}

/// Reads the runs of `paths` and merges their parts (the first file's context is kept).
fn replot(paths: &[PathBuf], limits: &Context) -> Result<(Context, Report), BenchError> {
    let mut merged: Option<Run> = None;
    for path in paths {
        let what = || format!("read {}", path.display());
        let text = std::fs::read_to_string(path).map_err(BenchError::io(what()))?;
        let run: Run = serde_json::from_str(&text)
            .map_err(|e| BenchError::Io { what: format!("parse {}", path.display()), source: e.into() })?;
        match merged.as_mut() {
            None => merged = Some(run),
            Some(into) => into.report.merge(run.report),
        }
    }
    let mut run = merged.ok_or_else(|| BenchError::Incomplete("no run to replot".into()))?;
    // PostgreSQL's limits given on the command line (scripts/bench measures them around the
    // processor part) replace the files'.
    run.context.pg_commits_per_s = limits.pg_commits_per_s.or(run.context.pg_commits_per_s);
    run.context.pg_rows_per_s = limits.pg_rows_per_s.or(run.context.pg_rows_per_s);
    run.context.pg_payment_rows_per_s = limits.pg_payment_rows_per_s.or(run.context.pg_payment_rows_per_s);
    Ok((run.context, run.report))
}

/// `paystream-bench bench`: measures (or, with `--replot`, redraws), prints the Markdown
/// section, and writes it, the charts and the JSON where asked.
pub async fn run(config: &Config, args: BenchArgs) -> Result<(), BenchError> {
    let parts = if args.only.is_empty() {
        vec![Part::Processor, Part::Relay, Part::Edge, Part::Scaling, Part::Lifecycle]
    } else {
        args.only
    };
    let (context, report) = if args.replot.is_empty() {
        let binaries = Binaries::locate(args.paystream_bin.as_deref())?;
        let sizes = if args.context.quick { Sizes::QUICK } else { Sizes::FULL };
        (args.context, all(config, &binaries, sizes, &parts, args.kafka_pid).await?)
    } else {
        replot(&args.replot, &args.context)?
    };
    let section = markdown::markdown(&context, &report);
    println!("{section}");
    if let Some(path) = &args.markdown {
        let text = std::fs::read_to_string(path).map_err(BenchError::io(format!("read {}", path.display())))?;
        let text = markdown::splice(&text, &section).ok_or_else(|| BenchError::Io {
            what: format!("splice the results into {}", path.display()),
            source: std::io::Error::other("no <!-- bench:results:start/end --> markers"),
        })?;
        std::fs::write(path, text).map_err(BenchError::io(format!("write {}", path.display())))?;
        // The charts go next to the document, which links them.
        let dir = path.parent().unwrap_or(Path::new("."));
        for (name, svg) in plot::charts(&context, &report) {
            std::fs::write(dir.join(name), svg).map_err(BenchError::io(format!("write {name}")))?;
        }
    }
    if let Some(path) = &args.json {
        let targets = targets(&context, &report);
        let json = serde_json::to_string_pretty(&Run { context, report, targets })
            .map_err(|e| BenchError::Io { what: "encode the results".into(), source: e.into() })?;
        std::fs::write(path, json).map_err(BenchError::io(format!("write {}", path.display())))?;
    }
    Ok(())
}
