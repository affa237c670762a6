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
    pub db: tokio_postgres::Client,
    pub http: reqwest::Client,
    shutdown: Shutdown,
    tasks: Vec<tokio::task::JoinHandle<()>>,
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
        tasks.push(tokio::spawn(async move { paystream_ingest::run(c, listener, admin, s).await.unwrap() }));
        let (c, s) = (config.clone(), shutdown.clone());
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        tasks.push(tokio::spawn(async move { paystream_processor::run(c, admin, s).await.unwrap() }));
        let (c, s) = (config.clone(), shutdown.clone());
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        tasks.push(tokio::spawn(async move { paystream_relay::run(c, admin, s).await.unwrap() }));
        let http = reqwest::Client::new();
        // Ingest answers once it is listening; wait for that rather than sleeping.
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(ingest).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { config, ingest, db, http, shutdown, tasks }
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

    /// Produces raw bytes to the inbound topic, as a misbehaving producer would.
    pub async fn produce_raw(&self, key: &str, payload: &[u8]) {
        let producer: FutureProducer =
            paystream_common::kafka::producer_config(&self.config.kafka, "test").create().unwrap();
        producer
            .send(FutureRecord::to(&self.config.kafka.inbound_topic).key(key).payload(payload), Duration::from_secs(10))
            .await
            .unwrap();
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

    /// Stops the services and waits for them.
    pub async fn stop(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(15), t).await;
        }
    }
}

/// A connection to the test's database, driven on a task.
pub async fn connect_db(config: &Config) -> tokio_postgres::Client {
    let (db, conn) =
        config.postgres.url.parse::<tokio_postgres::Config>().unwrap().connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    db
}

pub fn now_s() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A service as a child process (`paystream <service>`) configured through `PAYSTREAM_*`
/// variables, so that tests can SIGKILL it.
pub struct Service(std::process::Child);

impl Service {
    pub fn start(service: &str, config: &Config) -> Self {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_paystream"))
            .arg(service)
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
            // Logs go to stderr; PAYSTREAM_TEST_CHILD_LOG=info shows them with --no-capture.
            .stdout(std::process::Stdio::inherit())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap();
        Self(child)
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

    /// SIGTERM, then SIGKILL after 20 s.
    pub fn terminate(mut self) {
        let _ = std::process::Command::new("kill").arg("-TERM").arg(self.0.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A private Kafka-protocol broker (the local stack's tansu build) on a free port with durable
/// sqlite storage, for tests that stop the broker without disturbing the others.
pub struct Broker {
    pub addr: String,
    dir: std::path::PathBuf,
    child: Option<std::process::Child>,
}

impl Broker {
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = std::env::temp_dir().join(format!("paystream-broker-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut broker = Self { addr: format!("127.0.0.1:{port}"), dir, child: None };
        broker.restart().await;
        broker
    }

    fn binary() -> String {
        std::env::var("PAYSTREAM_TANSU").unwrap_or_else(|_| {
            let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
            let cache = std::env::var("PAYSTREAM_CACHE").unwrap_or_else(|_| format!("{home}/.cache/paystream"));
            format!("{cache}/tansu-0.6.0/bin/tansu")
        })
    }

    /// Starts (again) on the same port and storage; waits until it accepts connections.
    pub async fn restart(&mut self) {
        let url = format!("tcp://{}", self.addr);
        let child = std::process::Command::new(Self::binary())
            .current_dir(&self.dir)
            .args([
                "broker",
                "--storage-engine",
                "sqlite://broker.db",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the local broker is built (scripts/stack up)");
        self.child = Some(child);
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(&self.addr).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("private broker did not start");
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
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
        // The local broker may redeliver the tail of a batch; offsets identify records.
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
        let conf = format!(
            "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\nmax_connections = 100\n"
        );
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
