//! The harness every part shares: a configuration of the run's own (topics, group, ports), a
//! database connection, and services as child processes, each with its own runtime and
//! memory, so that latency is not shared with the load generator and each service's memory
//! and CPU can be read from `/proc`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use uuid::Uuid;

use paystream_common::Config;

use super::error::BenchError;

/// A copy of `config` with topics and a consumer group of its own (named for `tag`), and
/// every listener on port 0: no run reads what another left, or disturbs anyone else's.
pub fn unique(config: &Config, tag: &str) -> Config {
    let mut c = config.clone();
    let id = Uuid::new_v4().simple().to_string()[..8].to_owned();
    c.kafka.inbound_topic = format!("bench.{tag}.{id}.inbound");
    c.kafka.events_topic = format!("bench.{tag}.{id}.events");
    c.kafka.deadletter_topic = format!("bench.{tag}.{id}.deadletter");
    c.processor.group_id = format!("bench-{tag}-{id}");
    let any: SocketAddr = ([127, 0, 0, 1], 0).into();
    c.ingest.listen = any;
    c.ingest.admin_listen = any;
    c.processor.admin_listen = any;
    c.relay.admin_listen = any;
    c
}

/// A plain connection to the run's database.
pub async fn db(config: &Config) -> Result<tokio_postgres::Client, BenchError> {
    let (client, connection) =
        config.postgres.url.parse::<tokio_postgres::Config>()?.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// A loopback address free at the time of asking.
fn free_port() -> Result<SocketAddr, BenchError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(BenchError::io("bind a free port"))?;
    listener.local_addr().map_err(BenchError::io("read a free port"))
}

/// The two executables the services run from: the product's `paystream` (ingest,
/// processor, relay) and this one (the peers).
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `paystream`.
    pub paystream: PathBuf,
    /// `paystream-bench` (this process's executable).
    pub bench: PathBuf,
}

impl Binaries {
    /// `paystream` as given, or beside this executable (where `cargo build` puts both).
    pub fn locate(paystream: Option<&Path>) -> Result<Self, BenchError> {
        let bench = std::env::current_exe().map_err(BenchError::io("find this executable"))?;
        let paystream = match paystream {
            Some(path) => path.to_owned(),
            None => bench.with_file_name("paystream"),
        };
        if !paystream.is_file() {
            return Err(BenchError::Service {
                service: "paystream".into(),
                problem: format!(
                    "no executable at {} (build both: cargo build --release -p paystream -p paystream-benchmarks, or pass --paystream-bin)",
                    paystream.display()
                ),
            });
        }
        Ok(Self { paystream, bench })
    }

    /// The executable that runs `service`.
    fn of(&self, service: &str) -> &Path {
        match service {
            "ingest" | "processor" | "relay" => &self.paystream,
            _ => &self.bench,
        }
    }
}

/// The configuration section holding a service's admin address: the bare server and the
/// seed design's HTTP handler stand in for ingest, its polling relay for the relay.
fn admin_section(service: &str) -> &'static str {
    match service {
        "processor" => "PROCESSOR",
        "relay" | "seed-relay" => "RELAY",
        _ => "INGEST",
    }
}

/// A service to start: its subcommand and any arguments of its own.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The subcommand (`ingest`, `processor`, `relay`, `bare-server`, `seed-server`,
    /// `seed-relay`).
    pub name: &'static str,
    /// Arguments after it.
    pub args: Vec<String>,
}

impl From<&'static str> for Spec {
    fn from(name: &'static str) -> Self {
        Self { name, args: Vec::new() }
    }
}

/// Services as child processes, configured through `PAYSTREAM_*` variables.
pub struct Services {
    children: Vec<(&'static str, std::process::Child)>,
    /// Where the HTTP service (ingest or its stand-in) listens.
    pub ingest: SocketAddr,
    /// Each service's admin address, in the order started.
    pub admins: Vec<SocketAddr>,
}

impl Services {
    /// Starts `specs` and waits until each one's `/readyz` answers 200 (60 s at most).
    pub async fn start(
        config: &Config,
        binaries: &Binaries,
        specs: impl IntoIterator<Item = Spec>,
    ) -> Result<Self, BenchError> {
        let ingest = free_port()?;
        let mut services = Self { children: Vec::new(), ingest, admins: Vec::new() };
        let mut names = Vec::new();
        for spec in specs {
            let admin = free_port()?;
            let mut command = std::process::Command::new(binaries.of(spec.name));
            command
                .arg(spec.name)
                .args(&spec.args)
                .envs(config.data_env())
                .env("PAYSTREAM_INGEST__LISTEN", ingest.to_string())
                .env(format!("PAYSTREAM_{}__ADMIN_LISTEN", admin_section(spec.name)), admin.to_string())
                .env("RUST_LOG", "warn")
                .stdout(std::process::Stdio::null());
            // The load is the benchmark's to choose: no provider's rate limit may cap it.
            for provider in config.providers.keys() {
                let key = provider.to_uppercase();
                command.env(format!("PAYSTREAM_PROVIDERS__{key}__RATE_PER_SECOND"), "1000000");
                command.env(format!("PAYSTREAM_PROVIDERS__{key}__BURST"), "1000000");
            }
            let child = command
                .spawn()
                .map_err(|e| BenchError::Service { service: spec.name.into(), problem: format!("start: {e}") })?;
            services.children.push((spec.name, child));
            services.admins.push(admin);
            names.push(spec.name);
        }
        let http = reqwest::Client::new();
        for (name, admin) in names.iter().zip(services.admins.clone()) {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let ready =
                    http.get(format!("http://{admin}/readyz")).send().await.is_ok_and(|r| r.status().is_success());
                if ready {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(BenchError::Service {
                        service: (*name).into(),
                        problem: "not ready within 60 s".into(),
                    });
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(services)
    }

    /// Each service's process id, by subcommand.
    pub fn pids(&self) -> Vec<(&'static str, u32)> {
        self.children.iter().map(|(name, child)| (*name, child.id())).collect()
    }

    /// Peak resident memory of each service so far (`VmHWM`), MiB.
    pub fn peak_rss_mib(&self) -> BTreeMap<String, f64> {
        self.children
            .iter()
            .filter_map(|(name, child)| {
                let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).ok()?;
                let kib: f64 = status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))?
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse()
                    .ok()?;
                Some(((*name).to_owned(), kib / 1024.0))
            })
            .collect()
    }

    /// SIGTERM (graceful shutdown), then wait.
    pub fn stop(mut self) {
        for (_, child) in &self.children {
            let _ = std::process::Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        }
        for (_, child) in &mut self.children {
            let _ = child.wait();
        }
        self.children.clear();
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The load generator's options for a bench run: signed as `demo-standard`, no duplicates,
/// refunds or bad signatures, no progress bar.
pub fn webhooks(
    target: String,
    count: u64,
    rate: Option<f64>,
    follow: bool,
    concurrency: usize,
) -> crate::loadgen::Options {
    crate::loadgen::Options {
        target,
        provider: "demo-standard".into(),
        count,
        rate,
        concurrency,
        duplicates: 0.0,
        refunds: 0.0,
        bad: 0.0,
        follow_events: follow,
        events_timeout: Duration::from_secs(60),
        progress: false,
        seed: 7,
    }
}
