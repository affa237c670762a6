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
        paystream_common::telemetry::init_tracing();
        let config = paystream_common::testing::isolated_config().await;
        let (mut db, conn) = config
            .postgres
            .url
            .parse::<tokio_postgres::Config>()
            .unwrap()
            .connect(tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
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
        let consumer: StreamConsumer =
            paystream_common::kafka::consumer_config(&self.config.kafka, &format!("probe-{}", Uuid::new_v4()), "probe")
                .set("enable.auto.commit", "false")
                .create()
                .unwrap();
        consumer.subscribe(&[topic]).unwrap();
        let mut records: Vec<Record> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline && !done(&records) {
            let Ok(Ok(m)) = tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await else { continue };
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

pub fn now_s() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}
