//! The subcommands.

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Subcommand;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

use paystream_common::config::DbPart;
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
    /// Send signed webhooks to ingest and report what happened: runs `paystream-bench
    /// loadgen` with these arguments (the load generator is not part of this binary).
    #[command(disable_help_flag = true)]
    Loadgen {
        /// The arguments of `paystream-bench loadgen` (see `paystream-bench loadgen --help`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Print what the database holds: payments, dead letters, outbox, trial balance.
    Report,
    /// What the processor could not apply: list, show, re-drive once the cause is fixed.
    Deadletters {
        #[command(subcommand)]
        command: crate::deadletters::DeadLetters,
    },
    /// The audit trail's tamper evidence: seal a day, verify every sealed day.
    Audit {
        #[command(subcommand)]
        command: crate::audit::Audit,
    },
    /// Customers' LGPD requests: anonymise after BACEN retention, re-apply after a restore.
    Customers {
        #[command(subcommand)]
        command: crate::customers::Customers,
    },
    /// Look a payment up: its allocation, journals, reversals, events and inbound position.
    Payments {
        #[command(subcommand)]
        command: crate::payments::Payments,
    },
    /// The business date: advance it (marking what it leaves unpaid overdue), show it.
    BusinessDate {
        #[command(subcommand)]
        command: crate::lifecycle::BusinessDate,
    },
    /// Charge overdue installments their late fee and interest through the business date.
    Accrue(crate::lifecycle::AccrueArgs),
    /// Monthly partitions of the audit log and the charges: maintain, status, detach.
    Partitions {
        #[command(subcommand)]
        command: crate::partitions::Partitions,
    },
    /// Replace a contract's unpaid installments by a new schedule (less a discount).
    Renegotiate(crate::lifecycle::RenegotiateArgs),
    /// The events topic, decoded: one JSON line per event.
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// Measure paystream beside its peers: runs `paystream-bench bench` with these arguments.
    #[command(disable_help_flag = true)]
    Bench {
        /// The arguments of `paystream-bench bench`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
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
        Command::Report => report(&config).await?,
        Command::BusinessDate { command } => crate::lifecycle::business_date(&config, command).await?,
        Command::Accrue(args) => crate::lifecycle::accrue(&config, args).await?,
        Command::Partitions { command } => {
            if !crate::partitions::run(&config, command).await? {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Renegotiate(args) => crate::lifecycle::renegotiate(&config, args).await?,
        Command::Deadletters { command } => crate::deadletters::run(&config, command).await?,
        Command::Customers { command } => crate::customers::run(&config, command).await?,
        Command::Audit { command } => {
            if !crate::audit::run(&config, command).await? {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Payments { command } => {
            if !crate::payments::run(&config, command).await? {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Events { command: EventsCommand::Tail(args) } => crate::events::tail(&config, args).await?,
        Command::Loadgen { args } => return Ok(bench_tool("loadgen", args, config_file)),
        Command::Bench { args } => return Ok(bench_tool("bench", args, config_file)),
        Command::Healthcheck { addr, path } => return Ok(healthcheck(&addr, &path).await),
    }
    Ok(ExitCode::SUCCESS)
}

async fn report(config: &Config) -> anyhow::Result<()> {
    let client = postgres::connect(&config.postgres.as_part(DbPart::Jobs), "paystream-cli", None).await?;
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

/// Runs `paystream-bench <subcommand> <args>` in place of this process, when it is installed
/// beside this executable (as `cargo build` puts both); otherwise says where the load
/// generator and the benchmarks live. They are a separate binary so that none of their code
/// (an HTTP client, a progress bar, the peers they are measured against) is in the one that
/// runs the money; the verbs stay here for the users of the command-line contract.
fn bench_tool(subcommand: &str, args: Vec<OsString>, config_file: Option<&Path>) -> ExitCode {
    let tool = std::env::current_exe().ok().map(|exe| exe.with_file_name("paystream-bench")).filter(|p| p.is_file());
    let Some(tool) = tool else {
        eprintln!(
            "`paystream {subcommand}` is `paystream-bench {subcommand}`, which is not installed beside this binary: build it with `cargo build --release -p paystream-benchmarks`"
        );
        return ExitCode::from(2);
    };
    let mut command = std::process::Command::new(&tool);
    if let Some(file) = config_file {
        command.arg("--config").arg(file);
    }
    command.arg(subcommand).args(args);
    // exec returns only when it failed to replace this process.
    let error = std::os::unix::process::CommandExt::exec(&mut command);
    eprintln!("cannot run {}: {error}", tool.display());
    ExitCode::FAILURE
}
