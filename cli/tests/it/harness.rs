//! Starts ingest, processor and relay in-process on port 0 against the local stack, with an
//! isolated database and topics, and offers the probes the tests need.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::net::TcpListener;
use uuid::Uuid;

use paystream_common::{Config, Shutdown};
use paystream_ingest::signature::sign;

/// A record read back from a topic.
#[derive(Debug, Clone)]
pub struct Record {
    pub key: Option<String>,
    pub payload: Vec<u8>,
    pub headers: HashMap<String, String>,
}

/// A running pipeline.
pub struct Pipeline {
    pub config: Config,
    pub ingest: SocketAddr,
    /// The admin listeners (`/metrics`, `/healthz`, `/readyz`) of ingest, processor and relay.
    pub admin: [SocketAddr; 3],
    pub db: tokio_postgres::Client,
    pub http: reqwest::Client,
    shutdown: Shutdown,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The relay alone, so that a test can stop and start it again.
    relay: Option<(Shutdown, tokio::task::JoinHandle<()>)>,
}

impl Pipeline {
    /// Seeds a small book of installments and starts the three services.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Like [`Pipeline::start`], with the configuration adjusted first (e.g. a private broker).
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        paystream_common::telemetry::init_tracing();
        let mut config = paystream_common::testing::isolated_config().await;
        adjust(&mut config);
        let mut db = connect_db(&config).await;
        let size = paystream_processor::seed::SeedSize {
            customers: 4,
            contracts_per_customer: 1,
            installments_per_contract: 3,
        };
        paystream_processor::seed::seed(&mut db, size, "BRL").await.unwrap();
        paystream_common::kafka::ensure_topics(&config.kafka, Duration::from_secs(30)).await.unwrap();

        let shutdown = Shutdown::new();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ingest = listener.local_addr().unwrap();
        let mut tasks = Vec::new();
        let (c, s) = (config.clone(), shutdown.clone());
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ingest_admin = admin.local_addr().unwrap();
        tasks.push(tokio::spawn(async move { paystream_ingest::run(c, listener, admin, s).await.unwrap() }));
        let (c, s) = (config.clone(), shutdown.clone());
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let processor_admin = admin.local_addr().unwrap();
        tasks.push(tokio::spawn(async move { paystream_processor::run(c, admin, s).await.unwrap() }));
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let relay_admin = admin.local_addr().unwrap();
        let relay = Some(spawn_relay(&config, admin, &shutdown));
        let http = reqwest::Client::new();
        // Ingest answers once it is listening; wait for that rather than sleeping.
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(ingest).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { config, ingest, admin: [ingest_admin, processor_admin, relay_admin], db, http, shutdown, tasks, relay }
    }

    /// Stops the relay (a clean shutdown) and waits for it; the other services go on.
    pub async fn stop_relay(&mut self) {
        if let Some((stop, task)) = self.relay.take() {
            stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(15), task).await;
        }
    }

    /// Starts the relay again, on its admin address of before.
    pub async fn start_relay(&mut self) {
        assert!(self.relay.is_none(), "the relay runs already");
        // The stopped relay's admin listener closes on its own task, which nothing awaits:
        // the address may be busy for a moment.
        let deadline = Instant::now() + Duration::from_secs(10);
        let admin = loop {
            match TcpListener::bind(self.admin[2]).await {
                Ok(listener) => break listener,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(error) => panic!("the relay's admin address {}: {error}", self.admin[2]),
            }
        };
        self.relay = Some(spawn_relay(&self.config, admin, &self.shutdown));
    }

    /// A probe that only reads topics of `config`.
    pub fn reader(config: Config) -> ReaderOnly {
        ReaderOnly(config)
    }

    /// Open installments, in a stable order.
    pub async fn installments(&self) -> Vec<(Uuid, rust_decimal::Decimal)> {
        self.db
            .query("SELECT id, amount_due FROM paystream.installments ORDER BY contract_id, seq", &[])
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    }

    /// POSTs `body` to `/webhooks/{provider}` with `headers`.
    pub async fn post(&self, provider: &str, headers: &[(&str, String)], body: &[u8]) -> (u16, String) {
        let mut request = self
            .http
            .post(format!("http://{}/webhooks/{provider}", self.ingest))
            .header("content-type", "application/json")
            .body(body.to_vec());
        for (k, v) in headers {
            request = request.header(*k, v);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    /// POSTs `body` signed as `provider` (a standard-webhooks provider) with webhook id `id`.
    pub async fn post_signed(&self, provider: &str, id: &str, body: &[u8]) -> (u16, String) {
        let secret = self.config.providers[provider].secrets[0].expose().to_owned();
        self.post(provider, &sign::standard_webhooks(&secret, id, now_s(), body), body).await
    }

    /// POSTs a Stripe event signed as `demo-stripe`.
    pub async fn post_stripe(&self, body: &[u8]) -> (u16, String) {
        let secret = self.config.providers["demo-stripe"].secrets[0].expose().to_owned();
        let (name, value) = sign::stripe(&secret, now_s(), body);
        self.post("demo-stripe", &[(name, value)], body).await
    }

    /// POSTs a Pix webhook signed as `demo-pix` (HMAC-SHA256 of `timestamp.body`).
    pub async fn post_pix(&self, body: &[u8]) -> (u16, String) {
        let secret = self.config.providers["demo-pix"].secrets[0].expose().to_owned();
        let ts = now_s();
        let signature = sign::hmac_sha256(&secret, Some(ts), body);
        self.post("demo-pix", &[("x-signature", signature), ("x-timestamp", ts.to_string())], body).await
    }

    /// A paystream-format payment webhook signed as `demo-standard`.
    pub fn payment(
        &self,
        webhook_id: &str,
        payment_id: &str,
        installment: Uuid,
        amount: &str,
    ) -> (Vec<(&'static str, String)>, Vec<u8>) {
        let body = serde_json::to_vec(&serde_json::json!({
            "id": webhook_id,
            "type": "payment.succeeded",
            "created_at": "2026-11-25T10:00:00Z",
            "data": {"payment_id": payment_id, "installment_id": installment.to_string(), "amount": amount, "currency": "BRL", "rail": "pix"}
        }))
        .unwrap();
        let secret = self.config.providers["demo-standard"].secrets[0].expose().to_owned();
        (sign::standard_webhooks(&secret, webhook_id, now_s(), &body), body)
    }

    /// Reads `topic` from the beginning until `done` holds for what was read, or `timeout`.
    pub async fn read_topic(&self, topic: &str, timeout: Duration, done: impl Fn(&[Record]) -> bool) -> Vec<Record> {
        read_topic(&self.config, topic, timeout, done).await
    }

    /// Produces raw bytes to the inbound topic, signed with the command key as ingest signs
    /// (`signed`) or not, as a misbehaving producer would.
    pub async fn produce_raw(&self, key: &str, payload: &[u8], signed: bool) {
        let producer: FutureProducer =
            paystream_common::kafka::producer_config(&self.config.kafka, "test").create().unwrap();
        let mut record = FutureRecord::to(&self.config.kafka.inbound_topic).key(key).payload(payload);
        if signed {
            record = record.headers(command_headers(&self.config, key.as_bytes(), payload));
        }
        producer.send(record, Duration::from_secs(10)).await.unwrap();
    }

    /// Polls `sql` (one bigint) until it equals `want` or `timeout`; returns the last value.
    pub async fn wait_count(&self, sql: &str, want: i64, timeout: Duration) -> i64 {
        let deadline = Instant::now() + timeout;
        loop {
            let n: i64 = self.db.query_one(sql, &[]).await.unwrap().get(0);
            if n == want || Instant::now() >= deadline {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the services and waits for them; a service that failed (returned an error or
    /// panicked, at any time during the test) or that does not stop within 30 s fails the
    /// test, whatever the test's own assertions said.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let tasks = ["ingest", "processor"].into_iter().zip(self.tasks);
        for (name, task) in tasks.chain(self.relay.map(|(_, t)| ("relay", t))) {
            match tokio::time::timeout(Duration::from_secs(30), task).await {
                Ok(Ok(())) => {}
                Ok(Err(failed)) => panic!("{name} failed during the test: {failed}"),
                Err(_) => panic!("{name} did not stop within 30 s of the shutdown signal"),
            }
        }
    }
}

/// The relay on `admin`, stopped by its own token (a child of `shutdown`).
fn spawn_relay(config: &Config, admin: TcpListener, shutdown: &Shutdown) -> (Shutdown, tokio::task::JoinHandle<()>) {
    let (c, s) = (config.clone(), shutdown.child_token());
    let stop = s.clone();
    (stop, tokio::spawn(async move { paystream_relay::run(c, admin, s).await.unwrap() }))
}

/// The headers ingest puts on an inbound record: its MAC under the command key.
pub fn command_headers(config: &Config, key: &[u8], payload: &[u8]) -> rdkafka::message::OwnedHeaders {
    let auth = paystream_common::command_auth::CommandAuth::new(&config.kafka.command_keys);
    let mac = auth.sign(key, payload).expect("the test configuration has a command key");
    rdkafka::message::OwnedHeaders::new()
        .insert(rdkafka::message::Header { key: paystream_common::command_auth::HEADER, value: Some(mac.as_bytes()) })
}

/// A connection to the test's database, driven on a task, made as the services make theirs
/// (TLS when the configuration asks for it).
pub async fn connect_db(config: &Config) -> tokio_postgres::Client {
    paystream_common::postgres::connect(&config.postgres, "paystream-test", None).await.unwrap()
}

/// Runs `paystream ARGS` (a command-line tool, not a service) against the test's database and
/// topics; its exit status, stdout and stderr.
pub fn cli(config: &Config, args: &[&str]) -> (bool, String, String) {
    cli_with(config, args, &[])
}

/// Like [`cli`], with more `PAYSTREAM_*` variables.
pub fn cli_with(config: &Config, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_paystream"))
        .args(args)
        .env("PAYSTREAM_CONFIG", paystream_common::testing::DEV_CONFIG)
        .envs(config.data_env())
        .envs(env.iter().copied())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
    (output.status.success(), text(output.stdout), text(output.stderr))
}

pub fn now_s() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A service as a child process (`paystream <service>`) configured through `PAYSTREAM_*`
/// variables, so that tests can SIGKILL it.
pub struct Service(std::process::Child);

impl Service {
    pub fn start(service: &str, config: &Config) -> Self {
        Self::start_with(service, config, &[])
    }

    /// Like [`Service::start`], with more `PAYSTREAM_*` variables.
    pub fn start_with(service: &str, config: &Config, env: &[(&str, String)]) -> Self {
        // Logs go to stderr; PAYSTREAM_TEST_CHILD_LOG=info shows them with --no-capture.
        Self(Self::command(service, config, env).stderr(std::process::Stdio::inherit()).spawn().unwrap())
    }

    /// Like [`Service::start_with`], with its stderr (its logs) piped to the test.
    pub fn start_capturing(
        service: &str,
        config: &Config,
        env: &[(&str, String)],
    ) -> (Self, std::process::ChildStderr) {
        let mut child = Self::command(service, config, env).stderr(std::process::Stdio::piped()).spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        (Self(child), stderr)
    }

    fn command(service: &str, config: &Config, env: &[(&str, String)]) -> std::process::Command {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_paystream"));
        command
            .arg(service)
            .env("PAYSTREAM_CONFIG", paystream_common::testing::DEV_CONFIG)
            .envs(config.data_env())
            .env("PAYSTREAM_KAFKA__MESSAGE_TIMEOUT_MS", config.kafka.message_timeout_ms.to_string())
            .env("PAYSTREAM_PROCESSOR__ADMIN_LISTEN", "127.0.0.1:0")
            .env("PAYSTREAM_PROCESSOR__BATCH_MAX", "200")
            .env("PAYSTREAM_PROCESSOR__SEEK_TO_STORED_POSITION", config.processor.seek_to_stored_position.to_string())
            .env("PAYSTREAM_RELAY__ADMIN_LISTEN", "127.0.0.1:0")
            .env("PAYSTREAM_RELAY__BATCH_ROWS", config.relay.batch_rows.to_string())
            .env("PAYSTREAM_RELAY__LANE_CLAIM_INTERVAL_MS", config.relay.lane_claim_interval_ms.to_string())
            .env("PAYSTREAM_RELAY__POLL_INTERVAL_MS", config.relay.poll_interval_ms.to_string())
            .env("RUST_LOG", std::env::var("PAYSTREAM_TEST_CHILD_LOG").unwrap_or_else(|_| "warn".into()))
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(std::process::Stdio::inherit());
        command
    }

    /// The process's resident memory now and at its peak (`VmRSS`, `VmHWM`), in bytes.
    pub fn rss(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0.id())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map_or(0, |kib| kib * 1024)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(mut self) {
        self.0.kill().unwrap();
        let _ = self.0.wait();
    }

    /// Waits up to `timeout` for the process to exit on its own; its status, or `None` if
    /// it still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.0.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// SIGTERM; the service must exit cleanly (status 0) within 30 s, or the test fails: a
    /// hung or failing shutdown is a defect (a member that hangs keeps its partitions).
    pub fn terminate(mut self) {
        let _ = std::process::Command::new("kill").arg("-TERM").arg(self.0.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.0.try_wait() {
                assert!(status.success(), "the service exited with {status} on SIGTERM");
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
        panic!("the service did not stop within 30 s of SIGTERM");
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `scripts/kafka`, which starts and stops Apache Kafka nodes (the local stack's too).
fn kafka_script() -> std::process::Command {
    std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/kafka"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One Apache Kafka node (broker + controller) of a private cluster, on its own ports and
/// data directory, started and stopped by `scripts/kafka`.
pub struct Node {
    pub id: u32,
    pub port: u16,
    controller_port: u16,
    dir: std::path::PathBuf,
}

impl Node {
    fn run(&self, verb: &str, voters: &str, tls: Option<&std::path::Path>) {
        let mut command = kafka_script();
        command.arg(verb).arg(&self.dir);
        if let Some(tls) = tls {
            command.env("PAYSTREAM_KAFKA_TLS_DIR", tls);
        }
        if verb == "start" {
            command.args([self.id.to_string(), self.port.to_string(), self.controller_port.to_string()]);
            if !voters.is_empty() {
                command.arg(voters);
            }
        }
        let status = command.status().expect("scripts/kafka runs");
        assert!(status.success(), "scripts/kafka {verb} {}: {status}", self.dir.display());
    }

    /// The address clients use.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// A private Apache Kafka cluster of one or three nodes (KRaft, each node broker and
/// controller), for tests that kill or restart brokers without disturbing the others.
pub struct Cluster {
    pub nodes: Vec<Node>,
    voters: String,
    root: std::path::PathBuf,
    tls: Option<std::path::PathBuf>,
}

impl Cluster {
    /// Starts `n` nodes and waits until each serves clients.
    pub async fn start(n: u32) -> Self {
        Self::start_tls(n, None).await
    }

    /// Like [`Cluster::start`]; with `tls` (a directory of `server.pem` and `ca.pem`),
    /// clients connect over TLS.
    pub async fn start_tls(n: u32, tls: Option<std::path::PathBuf>) -> Self {
        let root = std::env::temp_dir().join(format!("paystream-kafka-{}", Uuid::new_v4().simple()));
        let nodes: Vec<Node> = (1..=n)
            .map(|id| Node {
                id,
                port: free_port(),
                controller_port: free_port(),
                dir: root.join(format!("node-{id}")),
            })
            .collect();
        let voters = if n == 1 {
            String::new()
        } else {
            nodes.iter().map(|n| format!("{}@127.0.0.1:{}", n.id, n.controller_port)).collect::<Vec<_>>().join(",")
        };
        let cluster = Self { nodes, voters, root, tls };
        // The nodes of a quorum wait for each other: start all, then wait for each.
        tokio::task::block_in_place(|| {
            for node in &cluster.nodes {
                node.run("start", &cluster.voters, cluster.tls.as_deref());
            }
            for node in &cluster.nodes {
                node.run("wait", "", None);
            }
        });
        cluster
    }

    /// The bootstrap servers of every node.
    pub fn bootstrap(&self) -> String {
        self.nodes.iter().map(Node::addr).collect::<Vec<_>>().join(",")
    }

    /// SIGKILL of node `id`: no shutdown code runs.
    pub fn kill(&self, id: u32) {
        tokio::task::block_in_place(|| self.node(id).run("kill", "", None));
    }

    /// Starts node `id` again on its ports and data, and waits until it serves clients.
    pub async fn restart(&self, id: u32) {
        tokio::task::block_in_place(|| {
            let node = self.node(id);
            node.run("start", &self.voters, self.tls.as_deref());
            node.run("wait", "", None);
        });
    }

    fn node(&self, id: u32) -> &Node {
        self.nodes.iter().find(|n| n.id == id).expect("a node of this cluster")
    }

    /// The node that leads `partition` of `topic`, by the cluster's metadata.
    pub fn leader(&self, topic: &str, partition: i32) -> Option<u32> {
        let client: rdkafka::consumer::BaseConsumer =
            rdkafka::ClientConfig::new().set("bootstrap.servers", self.bootstrap()).create().ok()?;
        let metadata = client.fetch_metadata(Some(topic), Duration::from_secs(10)).ok()?;
        let topic = metadata.topics().first()?;
        let partition = topic.partitions().iter().find(|p| p.id() == partition)?;
        u32::try_from(partition.leader()).ok()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &self.nodes {
            let _ = kafka_script().arg("kill").arg(&node.dir).status();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// A private single Apache Kafka node on free ports, for tests that stop the broker.
pub struct Broker {
    pub addr: String,
    cluster: Cluster,
}

impl Broker {
    pub async fn start() -> Self {
        let cluster = Cluster::start(1).await;
        Self { addr: cluster.bootstrap(), cluster }
    }

    /// Starts it again on the same ports and data; waits until it serves clients.
    pub async fn restart(&mut self) {
        self.cluster.restart(1).await;
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        self.cluster.kill(1);
    }
}

/// Reads `topic` from the beginning with a fresh group until `done` holds for what was read, or `timeout`.
pub async fn read_topic(
    config: &Config,
    topic: &str,
    timeout: Duration,
    done: impl Fn(&[Record]) -> bool,
) -> Vec<Record> {
    let consumer: StreamConsumer =
        paystream_common::kafka::consumer_config(&config.kafka, &format!("probe-{}", Uuid::new_v4()), "probe")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut records: Vec<Record> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let deadline = Instant::now() + timeout;
    // `done` may look at every record; asking it after each record would be quadratic, so it
    // is asked when the topic goes quiet and every 500 records.
    let mut asked_at = 0;
    while Instant::now() < deadline {
        let received = tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await;
        if (received.is_err() || records.len() >= asked_at + 500) && {
            asked_at = records.len();
            done(&records)
        } {
            break;
        }
        let Ok(Ok(m)) = received else { continue };
        // A consumer may be handed records again (a rebalance); offsets identify records.
        if !seen.insert((m.partition(), m.offset())) {
            continue;
        }
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_owned(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        records.push(Record {
            key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            payload: m.payload().unwrap_or_default().to_vec(),
            headers,
        });
    }
    records
}

/// A probe that only reads topics.
pub struct ReaderOnly(Config);

impl ReaderOnly {
    pub async fn read_topic(&self, topic: &str, timeout: Duration, done: impl Fn(&[Record]) -> bool) -> Vec<Record> {
        read_topic(&self.0, topic, timeout, done).await
    }
}

/// A private PostgreSQL cluster on its own port, for tests that crash or restart the
/// database (the shared cluster serves every other test at the same time).
pub struct PrivatePostgres {
    pub base_url: String,
    dir: std::path::PathBuf,
    bin: std::path::PathBuf,
}

impl PrivatePostgres {
    pub async fn start() -> Self {
        Self::start_tls(None).await
    }

    /// Like [`PrivatePostgres::start`]; with `tls` (a directory of `server.crt`, `server.key`),
    /// the server takes TLS connections only (`hostssl`; plain ones are refused).
    pub async fn start_tls(tls: Option<std::path::PathBuf>) -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries (apt package postgresql)")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|b| b.join("initdb").exists())
            .max()
            .expect("an initdb under /usr/lib/postgresql/*/bin");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = std::env::temp_dir().join(format!("paystream-pg-{}", Uuid::new_v4().simple()));
        let pg = Self { base_url: format!("postgres://postgres@127.0.0.1:{port}/postgres"), dir, bin };
        pg.as_postgres("mkdir", &["-p", pg.dir.to_str().unwrap()]);
        let initdb = pg.bin.join("initdb");
        pg.as_postgres(
            initdb.to_str().unwrap(),
            &["-D", pg.dir.to_str().unwrap(), "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--locale=C"],
        );
        let mut conf = format!(
            "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\nmax_connections = 100\n"
        );
        if let Some(tls) = &tls {
            let dir = pg.dir.display();
            for file in ["server.crt", "server.key"] {
                pg.as_postgres("cp", &[tls.join(file).to_str().unwrap(), &format!("{dir}/{file}")]);
            }
            pg.as_postgres("chmod", &["600", &format!("{dir}/server.key")]);
            conf.push_str("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
            let hba = "hostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n";
            pg.as_postgres("sh", &["-c", &format!("printf \"{hba}\" > {dir}/pg_hba.conf")]);
        }
        pg.as_postgres("sh", &["-c", &format!("printf \"{conf}\" >> {}/postgresql.conf", pg.dir.display())]);
        pg.pg_ctl(&["start", "-w", "-t", "60", "-l", &format!("{}/server.log", pg.dir.display())]);
        pg
    }

    /// As the postgres user when running as root (the server refuses to run as root).
    fn as_postgres(&self, program: &str, args: &[&str]) {
        let root = std::process::Command::new("id").arg("-u").output().map(|o| o.stdout == b"0\n").unwrap_or(false);
        let status = if root {
            std::process::Command::new("runuser").args(["-u", "postgres", "--", program]).args(args).status()
        } else {
            std::process::Command::new(program).args(args).status()
        }
        .unwrap();
        assert!(status.success(), "{program} {args:?}: {status}");
    }

    fn pg_ctl(&self, args: &[&str]) {
        let pg_ctl = self.bin.join("pg_ctl");
        let mut all = vec!["-D", self.dir.to_str().unwrap()];
        all.extend_from_slice(args);
        self.as_postgres(pg_ctl.to_str().unwrap(), &all);
    }

    /// Crash it (immediate shutdown: no checkpoint) and leave it down.
    pub fn crash(&self) {
        self.pg_ctl(&["stop", "-m", "immediate", "-w"]);
    }

    /// Start it again after [`PrivatePostgres::crash`] (recovery from WAL).
    pub fn start_again(&self) {
        self.pg_ctl(&["start", "-w", "-t", "60", "-l", &format!("{}/server.log", self.dir.display())]);
    }

    /// Crash (immediate shutdown: no checkpoint, recovery from WAL on start) and start again.
    pub fn crash_and_restart(&self) {
        self.pg_ctl(&["stop", "-m", "immediate", "-w"]);
        self.pg_ctl(&["start", "-w", "-t", "60", "-l", &format!("{}/server.log", self.dir.display())]);
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let pg_ctl = self.bin.join("pg_ctl");
        let _ = std::process::Command::new("runuser")
            .args([
                "-u",
                "postgres",
                "--",
                pg_ctl.to_str().unwrap(),
                "-D",
                self.dir.to_str().unwrap(),
                "-m",
                "immediate",
                "stop",
            ])
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
