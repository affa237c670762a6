//! The subcommands.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Subcommand;
use paystream_benchmarks::bench::{Context, Part};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

use paystream_common::{cancel_on_signal, postgres, Config, Shutdown};

#[derive(Subcommand)]
pub enum Command {
    /// Run the HTTP edge.
    Ingest,
    /// Run the processor (consumer-group member).
    Processor,
    /// Run the outbox relay.
    Relay,
    /// Apply pending database migrations.
    Migrate,
    /// Create the Kafka topics (also done by every service at start).
    Topics,
    /// Seed deterministic customers, contracts and installments.
    Seed {
        /// Customers.
        #[arg(long, default_value_t = 1000, env = "PAYSTREAM_SEED_CUSTOMERS")]
        customers: i32,
        /// Contracts per customer.
        #[arg(long, default_value_t = 1, env = "PAYSTREAM_SEED_CONTRACTS")]
        contracts: i32,
        /// Installments per contract.
        #[arg(long, default_value_t = 12, env = "PAYSTREAM_SEED_INSTALLMENTS")]
        installments: i32,
        /// Currency of the contracts.
        #[arg(long, default_value = "BRL", env = "PAYSTREAM_SEED_CURRENCY")]
        currency: String,
    },
    /// Send signed webhooks to ingest and report what happened.
    Loadgen(LoadgenArgs),
    /// Print what the database holds: payments, dead letters, outbox, trial balance.
    Report,
    /// What the processor could not apply: list, show, re-drive once the cause is fixed.
    Deadletters {
        #[command(subcommand)]
        command: crate::deadletters::DeadLetters,
    },
    /// Look a payment up: its allocation, journals, reversals, events and inbound position.
    Payments {
        #[command(subcommand)]
        command: crate::payments::Payments,
    },
    /// The events topic, decoded: one JSON line per event.
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// Measure paystream against its baselines on the local stack, side by side.
    Bench {
        /// Smaller sizes (a CI-sized run of about a minute).
        #[arg(long)]
        quick: bool,
        /// Also write the results as JSON to this file.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
        /// Also write the results into this Markdown file, between its
        /// `<!-- bench:results:start -->` and `<!-- bench:results:end -->` markers.
        #[arg(long)]
        markdown: Option<std::path::PathBuf>,
        /// Measure nothing: read a run's JSON and write its Markdown and charts again. Given
        /// several times, the runs' parts are merged (the first file's context is kept):
        /// `scripts/bench` measures each part on a fresh broker this way.
        #[arg(long)]
        replot: Vec<std::path::PathBuf>,
        /// Only these measurements (default: all).
        #[arg(long, value_enum, value_delimiter = ',')]
        only: Vec<paystream_benchmarks::bench::Part>,
        /// The run's UTC time, commit and machine, for the record.
        #[arg(long, default_value = "")]
        date: String,
        /// Commit measured.
        #[arg(long, default_value = "")]
        commit: String,
        /// Cores, memory, kernel.
        #[arg(long, default_value = "")]
        machine: String,
        /// pgbench single-row INSERT commits/s measured in the same run.
        #[arg(long)]
        pg_commits: Option<f64>,
        /// pgbench rows/s in 100-row INSERT transactions measured in the same run.
        #[arg(long)]
        pg_rows: Option<f64>,
        /// pgbench payments/s of the processor's own rows written with no logic
        /// (`benchmarks/sql/rows_limit.sql`), measured in the same run.
        #[arg(long)]
        pg_payment_rows: Option<f64>,
    },
    /// The benchmark's baseline: an HTTP server on `ingest.listen` that answers 202 to every
    /// webhook without verifying or producing (readiness on `ingest.admin_listen`).
    #[command(hide = true)]
    BareServer,
    /// Exit 0 when the admin endpoint answers 200 (for container health checks).
    Healthcheck {
        /// Admin address of the service to check.
        #[arg(long, default_value = "127.0.0.1:9101", env = "PAYSTREAM_HEALTHCHECK_ADDR")]
        addr: String,
        /// Path to query: /healthz (alive) or /readyz (dependencies answer).
        #[arg(long, default_value = "/healthz")]
        path: String,
    },
}

/// `paystream events` subcommands.
#[derive(Subcommand)]
pub enum EventsCommand {
    /// Consume `paystream.payments.events.v1` and print each event as a JSON line.
    Tail(crate::events::TailArgs),
}

#[derive(clap::Args)]
pub struct LoadgenArgs {
    /// Ingest base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080", env = "PAYSTREAM_LOADGEN_TARGET")]
    target: String,
    /// Provider to sign as.
    #[arg(long, default_value = "demo-standard", env = "PAYSTREAM_LOADGEN_PROVIDER")]
    provider: String,
    /// Distinct payments to send.
    #[arg(long, default_value_t = 1000, env = "PAYSTREAM_LOADGEN_COUNT")]
    count: u64,
    /// Requests per second (open loop); omit for closed loop as fast as possible.
    #[arg(long, env = "PAYSTREAM_LOADGEN_RATE")]
    rate: Option<f64>,
    /// Requests in flight at most.
    #[arg(long, default_value_t = 64, env = "PAYSTREAM_LOADGEN_CONCURRENCY")]
    concurrency: usize,
    /// Share of requests that re-send an earlier webhook (0..1).
    #[arg(long, default_value_t = 0.0, env = "PAYSTREAM_LOADGEN_DUPLICATES")]
    duplicates: f64,
    /// Share of requests with a wrong signature (0..1).
    #[arg(long, default_value_t = 0.0, env = "PAYSTREAM_LOADGEN_BAD")]
    bad: f64,
    /// Share of payments refunded in full by a later webhook (0..1; paystream and stripe formats).
    #[arg(long, default_value_t = 0.0, env = "PAYSTREAM_LOADGEN_REFUNDS")]
    refunds: f64,
    /// Follow the events topic: end-to-end latency and one outcome per payment.
    #[arg(long, env = "PAYSTREAM_LOADGEN_FOLLOW_EVENTS")]
    follow_events: bool,
    /// Seconds to wait for events after the last send.
    #[arg(long, default_value_t = 60, env = "PAYSTREAM_LOADGEN_EVENTS_TIMEOUT_S")]
    events_timeout_s: u64,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// RNG seed of the duplicate/bad mix.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Hide the progress bar.
    #[arg(long)]
    quiet: bool,
}

/// Connections the kernel completes and queues for a listener before it accepts them. Tokio's
/// default is 1,024; a burst of connections beyond the queue is answered with SYN cookies
/// whose handshakes are then dropped, and the clients believe they are connected to nothing
/// (measured: 5% of 10,000 connections opened 500 at a time). The kernel caps it at
/// `net.core.somaxconn` (4,096 here).
const LISTEN_BACKLOG: u32 = 4096;

/// A listener on `addr`, or an error that names the address.
async fn bind(addr: std::net::SocketAddr) -> anyhow::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() }
        .with_context(|| format!("socket for {addr}"))?;
    socket.set_reuseaddr(true).with_context(|| format!("bind {addr}"))?;
    socket.bind(addr).with_context(|| format!("bind {addr}"))?;
    socket.listen(LISTEN_BACKLOG).with_context(|| format!("listen on {addr}"))
}

pub async fn run(command: Command, config_file: Option<&Path>) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_file)?;
    let shutdown = Shutdown::new();
    match command {
        Command::Ingest => {
            tokio::spawn(cancel_on_signal(shutdown.clone()));
            let (listener, admin) = (bind(config.ingest.listen).await?, bind(config.ingest.admin_listen).await?);
            paystream_ingest::run(config, listener, admin, shutdown).await?;
        }
        Command::Processor => {
            tokio::spawn(cancel_on_signal(shutdown.clone()));
            let admin = bind(config.processor.admin_listen).await?;
            paystream_processor::run(config, admin, shutdown).await?;
        }
        Command::BareServer => {
            tokio::spawn(cancel_on_signal(shutdown.clone()));
            let (listener, admin) = (bind(config.ingest.listen).await?, bind(config.ingest.admin_listen).await?);
            paystream_benchmarks::bench::serve_bare(listener, admin, shutdown).await?;
        }
        Command::Relay => {
            tokio::spawn(cancel_on_signal(shutdown.clone()));
            let admin = bind(config.relay.admin_listen).await?;
            paystream_relay::run(config, admin, shutdown).await?;
        }
        Command::Migrate => {
            let mut client = postgres::connect(&config.postgres, "paystream-cli", None).await?;
            let applied = postgres::migrate(&mut client).await?;
            println!("migrations applied: {applied}");
        }
        Command::Topics => {
            paystream_common::kafka::ensure_topics(&config.kafka, Duration::from_secs(30)).await?;
            println!(
                "topics ready: {}, {}, {}",
                config.kafka.inbound_topic, config.kafka.events_topic, config.kafka.deadletter_topic
            );
        }
        Command::Seed { customers, contracts, installments, currency } => {
            let mut client = postgres::connect(&config.postgres, "paystream-cli", None).await?;
            let size = paystream_processor::seed::SeedSize {
                customers,
                contracts_per_customer: contracts,
                installments_per_contract: installments,
            };
            paystream_processor::seed::seed(&mut client, size, &currency).await?;
            println!(
                "seeded {customers} customers, {} contracts, {} installments ({currency})",
                customers * contracts,
                size.installments()
            );
        }
        Command::Loadgen(args) => return loadgen(&config, args).await,
        Command::Report => report(&config).await?,
        Command::Deadletters { command } => crate::deadletters::run(&config, command).await?,
        Command::Payments { command } => {
            if !crate::payments::run(&config, command).await? {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Events { command: EventsCommand::Tail(args) } => crate::events::tail(&config, args).await?,
        Command::Bench {
            quick,
            json,
            markdown,
            replot,
            only,
            date,
            commit,
            machine,
            pg_commits,
            pg_rows,
            pg_payment_rows,
        } => {
            let context = Context {
                date,
                commit,
                machine,
                quick,
                pg_commits_per_s: pg_commits,
                pg_rows_per_s: pg_rows,
                pg_payment_rows_per_s: pg_payment_rows,
            };
            bench(&config, quick, json.as_deref(), markdown.as_deref(), &replot, &only, context).await?
        }
        Command::Healthcheck { addr, path } => return Ok(healthcheck(&addr, &path).await),
    }
    Ok(ExitCode::SUCCESS)
}

async fn loadgen(config: &Config, a: LoadgenArgs) -> anyhow::Result<ExitCode> {
    let options = paystream_benchmarks::loadgen::Options {
        target: a.target,
        provider: a.provider,
        count: a.count,
        rate: a.rate,
        concurrency: a.concurrency,
        duplicates: a.duplicates,
        bad: a.bad,
        refunds: a.refunds,
        follow_events: a.follow_events,
        events_timeout: Duration::from_secs(a.events_timeout_s),
        progress: !a.quiet && !a.json,
        seed: a.seed,
    };
    let s = paystream_benchmarks::loadgen::run(config, options).await?;
    if a.json {
        println!("{}", serde_json_string(&s));
    } else {
        println!("load generator");
        println!(
            "  requests sent         {} ({} payments, {} duplicates, {} refunds, {} badly signed)",
            s.requests, s.payments, s.duplicates_sent, s.refunds_sent, s.bad_sent
        );
        let statuses: Vec<String> = s.statuses.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        println!(
            "  answers               {}{}",
            statuses.join(", "),
            if s.transport_errors > 0 { format!(", transport errors: {}", s.transport_errors) } else { String::new() }
        );
        println!("  accepted rate         {:.0} webhooks/s over {:.2} s", s.accepted_per_s, s.elapsed_s);
        let l = &s.http_latency;
        println!(
            "  HTTP latency          p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms",
            l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms
        );
        if let Some(l) = &s.pacing_lag {
            println!(
                "  sent late by          p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms (the generator's own pacing, part of the HTTP latency)",
                l.p50_ms, l.p99_ms, l.max_ms
            );
        }
        if let Some(l) = &s.e2e_latency {
            let events: Vec<String> = s.events.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            println!("  events consumed       {}", events.join(", "));
            println!(
                "  payments with exactly one outcome event: {}  missing: {}  doubled: {}",
                s.payments_with_one_outcome, s.payments_missing_outcome, s.payments_doubled
            );
            println!(
                "  end-to-end latency    p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
                l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms
            );
        }
    }
    let failed = s.e2e_latency.is_some() && (s.payments_missing_outcome > 0 || s.payments_doubled > 0);
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn serde_json_string(s: &paystream_benchmarks::loadgen::Summary) -> String {
    serde_json::to_string_pretty(s).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

async fn report(config: &Config) -> anyhow::Result<()> {
    let client = postgres::connect(&config.postgres, "paystream-cli", None).await?;
    println!("database");
    for row in client
        .query("SELECT status, count(*), coalesce(sum(amount), 0)::text FROM paystream.payment GROUP BY status ORDER BY status", &[])
        .await?
    {
        println!("  payments {:<9}  {:>8}  amount {}", row.get::<_, String>(0), row.get::<_, i64>(1), row.get::<_, String>(2));
    }
    for row in
        client.query("SELECT status, count(*) FROM paystream.installment GROUP BY status ORDER BY status", &[]).await?
    {
        println!("  installments {:<15} {:>8}", row.get::<_, String>(0), row.get::<_, i64>(1));
    }
    let settled: i64 =
        client.query_one("SELECT count(*) FROM paystream.contract WHERE status = 'settled'", &[]).await?.get(0);
    println!("  contracts settled      {settled:>8}");
    let dead: i64 = client.query_one("SELECT count(*) FROM paystream.dead_letters", &[]).await?.get(0);
    println!("  dead letters           {dead:>8}");
    let backlog = client.query_one("SELECT pending, oldest_age_seconds FROM paystream.outbox_backlog", &[]).await?;
    println!("  outbox pending         {:>8}", backlog.get::<_, i64>(0));
    println!("trial balance");
    for row in client.query("SELECT currency::text, debits::text, credits::text, debits = credits FROM paystream.trial_balance ORDER BY 1", &[]).await? {
        let balanced: bool = row.get(3);
        println!(
            "  {}  debits {}  credits {}  {}",
            row.get::<_, String>(0),
            row.get::<_, String>(1),
            row.get::<_, String>(2),
            if balanced { "balanced" } else { "UNBALANCED" }
        );
    }
    Ok(())
}

/// A minimal HTTP/1.0 GET, so that container images need no curl.
async fn healthcheck(addr: &str, path: &str) -> ExitCode {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).await?;
        let mut head = vec![0u8; 64];
        let n = stream.read(&mut head).await?;
        Ok::<bool, std::io::Error>(head[..n].starts_with(b"HTTP/1.1 200") || head[..n].starts_with(b"HTTP/1.0 200"))
    };
    match tokio::time::timeout(Duration::from_secs(3), attempt).await {
        Ok(Ok(true)) => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}

async fn bench(
    config: &Config,
    quick: bool,
    json: Option<&Path>,
    document: Option<&Path>,
    replot: &[std::path::PathBuf],
    only: &[Part],
    context: Context,
) -> anyhow::Result<()> {
    use paystream_benchmarks::bench::{all, markdown, splice, Run, Sizes};
    let parts =
        if only.is_empty() { vec![Part::Processor, Part::Relay, Part::Edge, Part::Scaling] } else { only.to_vec() };
    let sizes = if quick {
        Sizes {
            processor_messages: 20_000,
            single_messages: 3_000,
            uniform_installments: 10_000,
            relay_events: 20_000,
            latency_seconds: 5,
            requests: 5_000,
            concurrency: 64,
            scaling_messages: 20_000,
            scaling_installments: 1_000,
        }
    } else {
        Sizes {
            processor_messages: 100_000,
            single_messages: 10_000,
            uniform_installments: 100_000,
            relay_events: 300_000,
            latency_seconds: 10,
            requests: 30_000,
            concurrency: 64,
            scaling_messages: 50_000,
            scaling_installments: 10_000,
        }
    };
    let (context, r) = if replot.is_empty() {
        (Context { quick, ..context }, all(config, sizes, &parts).await?)
    } else {
        let mut merged: Option<Run> = None;
        for path in replot {
            let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
            let run: Run = serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
            match merged.as_mut() {
                None => merged = Some(run),
                Some(into) => into.report.merge(run.report),
            }
        }
        let mut run = merged.context("no run to replot")?;
        // PostgreSQL's limits given on the command line (scripts/bench measures them around
        // the processor part) replace the files'.
        run.context.pg_commits_per_s = context.pg_commits_per_s.or(run.context.pg_commits_per_s);
        run.context.pg_rows_per_s = context.pg_rows_per_s.or(run.context.pg_rows_per_s);
        run.context.pg_payment_rows_per_s = context.pg_payment_rows_per_s.or(run.context.pg_payment_rows_per_s);
        (run.context, run.report)
    };
    let section = markdown(&context, &r);
    println!("{section}");
    if let Some(path) = document {
        let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        let text = splice(&text, &section)
            .with_context(|| format!("{} has no <!-- bench:results:start/end --> markers", path.display()))?;
        std::fs::write(path, text)?;
        // The charts go next to the document, which links them.
        let dir = path.parent().unwrap_or(Path::new("."));
        for (name, svg) in paystream_benchmarks::plot::charts(&r) {
            std::fs::write(dir.join(name), svg)?;
        }
    }
    if let Some(path) = json {
        std::fs::write(path, serde_json::to_string_pretty(&Run { context, report: r })?)?;
    }
    Ok(())
}
