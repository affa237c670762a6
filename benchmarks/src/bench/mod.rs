//! Side-by-side measurements on the local stack, each paystream figure next to the limit or
//! baseline it is judged against, measured in the same run (this machine is shared and
//! noisy: ratios mean more than absolute figures).
//!
//! - processor: payments/s applied from a pre-filled topic, batched (`processor.batch_max`)
//!   and limited to one payment per transaction, uniform over many installments and hot
//!   over 10;
//! - relay: events/s drained from a filled outbox, and a plain producer sending the same
//!   bytes to the same broker;
//! - ingest: webhooks/s accepted, and a bare server answering 202 under the same load;
//! - pipeline: end-to-end latency at half the ingest peak, from webhook to event read back.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rdkafka::producer::{FutureProducer, FutureRecord};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use uuid::Uuid;

use paystream_common::{Config, Shutdown};
use paystream_processor::outbox::OutboxRows;
use paystream_relay::Record;
use paystream_schemas::{encode, CommandKind, EventType, PaymentCommand, PaymentEvent};

use crate::loadgen::{self, Latency, LoadgenError};

/// One measured figure with its baseline.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Figure {
    /// What was measured.
    pub name: String,
    /// paystream's rate (per second).
    pub value: f64,
    /// The baseline's rate (per second), measured in the same run.
    pub baseline: f64,
    /// What the baseline is.
    pub baseline_name: String,
    /// value / baseline.
    pub ratio: f64,
    /// Unit of both.
    pub unit: String,
}

impl Figure {
    fn new(name: &str, value: f64, baseline_name: &str, baseline: f64, unit: &str) -> Self {
        Self {
            name: name.into(),
            value,
            baseline,
            baseline_name: baseline_name.into(),
            ratio: if baseline > 0.0 { value / baseline } else { 0.0 },
            unit: unit.into(),
        }
    }
}

fn unique(config: &Config, tag: &str) -> Config {
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

async fn db(config: &Config) -> Result<tokio_postgres::Client, LoadgenError> {
    let (client, conn) = config.postgres.url.parse::<tokio_postgres::Config>()?.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    Ok(client)
}

/// Seeds (idempotently) `n` installments of `amount_due` named by `namespace`, one per
/// contract, and returns them. The edge runs pay installments in full, so each of them uses a
/// fresh namespace; the processor runs pay 0.01 at a time into large installments.
async fn installments(config: &Config, namespace: &str, n: i32, amount_due: i64) -> Result<Vec<Uuid>, LoadgenError> {
    let client = db(config).await?;
    let amount = Decimal::from(amount_due);
    let customers = "INSERT INTO paystream.customer (id, name, tax_id) SELECT md5($2 || '/c/' || c)::uuid, 'Bench ' || c, lpad(c::text, 11, '0') FROM generate_series(1, $1::int) c ON CONFLICT DO NOTHING";
    let contracts = "INSERT INTO paystream.contract (id, customer_id, currency, principal) SELECT md5($2 || '/k/' || c)::uuid, md5($2 || '/c/' || c)::uuid, 'BRL', $3 FROM generate_series(1, $1::int) c ON CONFLICT DO NOTHING";
    let installments = "INSERT INTO paystream.installment (id, contract_id, seq, due_date, currency, amount_due) SELECT md5($2 || '/i/' || c)::uuid, md5($2 || '/k/' || c)::uuid, 1, date '2027-01-10', 'BRL', $3 FROM generate_series(1, $1::int) c ON CONFLICT DO NOTHING";
    client.execute(customers, &[&n, &namespace]).await?;
    client.execute(contracts, &[&n, &namespace, &amount]).await?;
    client.execute(installments, &[&n, &namespace, &amount]).await?;
    let rows = client
        .query("SELECT md5($2 || '/i/' || c)::uuid FROM generate_series(1, $1::int) c", &[&n, &namespace])
        .await?;
    Ok(rows.into_iter().map(|r| r.get(0)).collect())
}

/// Payments/s applied from a pre-filled topic of `messages` payments over `spread`
/// installments, with `batch_max` payments per transaction at most.
pub async fn processor(
    config: &Config,
    messages: u64,
    spread: i32,
    batch_max: usize,
) -> Result<(f64, f64), LoadgenError> {
    let mut config = unique(config, "processor");
    config.processor.batch_max = batch_max;
    if batch_max == 1 {
        // The one-payment-per-transaction design: no merging across partitions either, and
        // as many transactions in flight as partitions (its best case).
        config.processor.transaction_max = 1;
        config.processor.transactions = config.postgres.pool_size.min(config.kafka.partitions.max(1) as usize);
    }
    let run = fill_inbound(&config, messages, spread).await?;
    let client = db(&config).await?;
    let written_before = rows_written(&client).await?;
    let shutdown = Shutdown::new();
    let admin =
        TcpListener::bind(config.processor.admin_listen).await.map_err(|e| LoadgenError::Bench(e.to_string()))?;
    let task = {
        let (c, s) = (config.clone(), shutdown.clone());
        tokio::spawn(async move { paystream_processor::run(c, admin, s).await })
    };
    let rate = wait_applied(&client, &config, messages).await?;
    shutdown.cancel();
    let _ = task.await;
    // A server process publishes its table counters when its session ends, or when it was
    // idle for a while: read them until they stop moving.
    let mut written = rows_written(&client).await?;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = rows_written(&client).await?;
        if now == written && now - written_before >= i64::try_from(messages).unwrap_or(i64::MAX) {
            break;
        }
        written = now;
    }
    let rows_per_payment = (written - written_before) as f64 / messages as f64;
    client.execute("DELETE FROM paystream.outbox WHERE topic = $1", &[&config.kafka.events_topic]).await?;
    // What is measured is partial payments applied: a rejection costs the database less.
    let applied: i64 = client
        .query_one(
            "SELECT count(*) FROM paystream.payment WHERE provider = 'bench' AND provider_payment_id LIKE $1 || '%' AND status = 'applied'",
            &[&run],
        )
        .await?
        .get(0);
    if applied != i64::try_from(messages).unwrap_or(i64::MAX) {
        return Err(LoadgenError::Bench(format!("{applied} of {messages} payments applied (the others rejected)")));
    }
    let rate = rate.ok_or_else(|| LoadgenError::Bench(format!("{messages} payments not applied within 10 minutes")))?;
    Ok((rate, rows_per_payment))
}

/// Rows inserted and updated in paystream's tables so far (the statistics collector's
/// counters): what the processor wrote, counted by the database.
async fn rows_written(client: &tokio_postgres::Client) -> Result<i64, tokio_postgres::Error> {
    let sql = "SELECT coalesce(sum(n_tup_ins + n_tup_upd), 0)::bigint FROM pg_stat_user_tables WHERE schemaname = 'paystream'";
    Ok(client.query_one(sql, &[]).await?.get(0))
}

async fn wait_applied(
    client: &tokio_postgres::Client,
    config: &Config,
    messages: u64,
) -> Result<Option<f64>, LoadgenError> {
    let done_sql =
        "SELECT coalesce(sum(next_offset), 0)::bigint FROM paystream.consumer_position WHERE consumer_group = $1";
    let want = i64::try_from(messages).unwrap_or(i64::MAX);
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut first: Option<(Instant, i64)> = None;
    loop {
        let done: i64 = client.query_one(done_sql, &[&config.processor.group_id]).await?.get(0);
        let now = Instant::now();
        if done > 0 && first.is_none() {
            first = Some((now, done));
        }
        if done >= want {
            return Ok(first.map(|(at, from)| {
                // All applied in one transaction between two looks: time that one look.
                let elapsed = now.saturating_duration_since(at).max(Duration::from_millis(20));
                (want - from).max(1) as f64 / elapsed.as_secs_f64()
            }));
        }
        if now > deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Fills the inbound topic with `messages` payments of 0.01 spread over `spread`
/// installments (seeded if missing).
/// Fills the inbound topic with `messages` partial payments over `spread` new installments;
/// returns the prefix of their payment ids.
async fn fill_inbound(config: &Config, messages: u64, spread: i32) -> Result<String, LoadgenError> {
    paystream_common::kafka::ensure_topics(&config.kafka, Duration::from_secs(30)).await?;
    // Installments of this run alone: earlier runs' may have been paid off since (a load
    // generator pays whatever is open), and payments to a settled contract are rejections,
    // cheaper than the partial payments measured here.
    let namespace = format!("bench-{}", Uuid::new_v4().simple());
    let targets = installments(config, &namespace, spread, 1_000_000).await?;
    let producer: FutureProducer = paystream_common::kafka::producer_config(&config.kafka, "bench-fill").create()?;
    let run = Uuid::new_v4().simple().to_string();
    let mut sends = Vec::with_capacity(messages as usize);
    for i in 0..messages {
        let installment = targets[(i as usize) % targets.len()];
        let command = PaymentCommand {
            webhook_id: format!("b_{run}_{i}"),
            provider: "bench".into(),
            kind: CommandKind::Payment,
            rail: "pix".into(),
            payment_id: format!("b_{run}_{i}"),
            installment_id: Some(installment),
            amount: Decimal::new(1, 2),
            currency: "BRL".into(),
            occurred_at_ms: 0,
            received_at_ms: 0,
        };
        sends.push((installment.to_string(), encode(&command).map_err(|e| LoadgenError::Bench(e.to_string()))?));
    }
    for chunk in sends.chunks(10_000) {
        let futures = chunk.iter().map(|(k, v)| {
            producer.send(FutureRecord::to(&config.kafka.inbound_topic).key(k).payload(v), Duration::from_secs(30))
        });
        for r in futures::future::join_all(futures).await {
            r.map_err(|(e, _)| e)?;
        }
    }
    Ok(format!("b_{run}_"))
}

fn event(aggregate: Uuid, seq: u64) -> PaymentEvent {
    PaymentEvent {
        event_id: Uuid::new_v4(),
        event_type: EventType::PaymentApplied,
        occurred_at_ms: 1,
        aggregate_id: aggregate,
        provider: "bench".into(),
        payment_id: format!("pay_{seq:012}"),
        installment_id: Some(aggregate),
        contract_id: Some(aggregate),
        amount: Decimal::new(12345, 2),
        currency: "BRL".into(),
        reason: None,
    }
}

/// Rounds of the relay drain measurement: plain producer and relay take turns, and the best
/// of each is compared. This shared machine's speed drifts by up to 2x within minutes (one
/// round of each can land on a fast and a slow stretch); its noise only ever slows a run
/// down, so the best of several is the one least disturbed.
const RELAY_ROUNDS: usize = 5;

/// Events/s drained by one relay from an outbox of `events` events, and events/s of a plain
/// producer sending the same bytes with the same keys to the same broker: the best of
/// `RELAY_ROUNDS` turns each.
pub async fn relay(config: &Config, events: u64) -> Result<(f64, f64), LoadgenError> {
    let config = unique(config, "relay");
    paystream_common::kafka::ensure_topics(&config.kafka, Duration::from_secs(30)).await?;
    let aggregates: Vec<Uuid> = (0..1000).map(|_| Uuid::new_v4()).collect();
    let rows: Vec<(String, Uuid, Vec<u8>)> = (0..events)
        .map(|i| {
            let e = event(aggregates[(i as usize) % aggregates.len()], i);
            (e.aggregate_id.to_string(), e.event_id, encode(&e).unwrap_or_default())
        })
        .collect();

    // The plain producer: the broker's and client's limit for these bytes. The relay's own
    // producer (same settings, one delivery count per batch) sending batches back to back:
    // the relay without its database. Batches of 16,384, the fastest way it sends (measured,
    // events/s: 971,749 in batches of 16,384; 949,798 of 8,192; 824,834 of 50,000; 654,048
    // all 300,000 at once; 856,084 in two concurrent streams of 16,384). The same records as
    // the relay's: key, value and headers.
    let producer = paystream_relay::Producer::new(&config.kafka, "bench-plain")?;
    let plain_topic = config.kafka.deadletter_topic.clone();
    fn records<'a>(topic: &'a str, rows: &'a [(String, Uuid, Vec<u8>)]) -> Vec<Record<'a>> {
        rows.iter()
            .map(|(key, id, value)| Record {
                topic,
                key: key.as_bytes(),
                payload: value,
                headers: paystream_relay::event_headers(id, "PaymentApplied", value),
                timestamp: None,
                event_id: *id,
            })
            .collect()
    }
    let undelivered = |e: paystream_relay::Undelivered| LoadgenError::Bench(e.to_string());
    const PLAIN_BATCH: usize = 16_384;

    // The relay runs throughout. Before the clock starts, it publishes one row (lanes taken,
    // producer warm), and the plain producer one record: neither side is timed fetching
    // metadata.
    let mut client = db(&config).await?;
    let shutdown = Shutdown::new();
    let admin = TcpListener::bind(config.relay.admin_listen).await.map_err(|e| LoadgenError::Bench(e.to_string()))?;
    let task = {
        let (c, s) = (config.clone(), shutdown.clone());
        tokio::spawn(async move { paystream_relay::run(c, admin, s).await })
    };
    producer.send_all(records(&plain_topic, &rows[..1])).await.map_err(undelivered)?;
    let deadline = Instant::now() + Duration::from_secs(600);
    let span = "SELECT coalesce(min(id), 0), coalesce(max(id), -1) FROM paystream.outbox WHERE topic = $1";
    let tx = client.transaction().await?;
    fill(&tx, &config.kafka.events_topic, &rows[..1]).await?;
    tx.commit().await?;
    let (first, last): (i64, i64) = {
        let row = client.query_one(span, &[&config.kafka.events_topic]).await?;
        (row.get(0), row.get(1))
    };
    wait_drained(&client, first, last, deadline).await?;

    let (mut best_relay, mut best_plain) = (0f64, 0f64);
    for _ in 0..RELAY_ROUNDS {
        let started = Instant::now();
        for batch in rows.chunks(PLAIN_BATCH) {
            producer.send_all(records(&plain_topic, batch)).await.map_err(undelivered)?;
        }
        best_plain = best_plain.max(events as f64 / started.elapsed().as_secs_f64());

        // The whole outbox filled in one transaction, its rows grouped as the processor's
        // transactions group theirs (at most processor.transaction_max payments, about one
        // event each), and timed from its commit. The outbox is vacuumed first: the rows
        // earlier rounds deleted would otherwise still be walked past (as in production,
        // where autovacuum keeps this queue table small).
        client.batch_execute("VACUUM paystream.outbox").await?;
        let tx = client.transaction().await?;
        for chunk in rows.chunks(config.processor.transaction_max) {
            fill(&tx, &config.kafka.events_topic, chunk).await?;
        }
        let row = tx.query_one(span, &[&config.kafka.events_topic]).await?;
        let (first, last): (i64, i64) = (row.get(0), row.get(1));
        tx.commit().await?;
        // As the processor does: the relay wakes on the notification, not on its poll.
        client.batch_execute("NOTIFY paystream_outbox").await?;
        let started = Instant::now();
        wait_drained(&client, first, last, deadline).await?;
        best_relay = best_relay.max(events as f64 / started.elapsed().as_secs_f64());
    }
    shutdown.cancel();
    let _ = task.await;
    Ok((best_relay, best_plain))
}

/// Most events a closed-loop writer keeps committed and not yet read back: the queue of the
/// sustained-rate run stays bounded, so that it measures a rate the relay keeps up with.
const SUSTAINED_IN_FLIGHT: u64 = 20_000;

/// Commit-to-Kafka flow through the relay for `seconds`: a writer commits outbox rows (with
/// the processor's NOTIFY) while a consumer reads them back from
/// `paystream.payments.events.v1`. With `rate`, the writer commits every 5 ms at that rate,
/// open loop; without, it commits as fast as the relay publishes (closed loop, at most
/// `SUSTAINED_IN_FLIGHT` events committed and not yet read): the rate the writer, the relay
/// and the reader sustain together on this machine. Returns the rate read back in the timed
/// window, and each event's latency from its commit returning to its record read.
pub async fn relay_flow(config: &Config, rate: Option<f64>, seconds: u64) -> Result<(f64, Latency), LoadgenError> {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::message::{Headers, Message};
    use std::collections::HashMap;
    let config = unique(config, "relay-flow");
    paystream_common::kafka::ensure_topics(&config.kafka, Duration::from_secs(30)).await?;
    let consumer: StreamConsumer =
        paystream_common::kafka::consumer_config(&config.kafka, &config.processor.group_id, "bench-latency")
            .set("enable.auto.commit", "false")
            // The local broker holds every fetch for the whole wait even when records are
            // there (Apache Kafka answers as soon as they are): a short wait keeps the
            // reader's own polling out of the relay's latency.
            .set("fetch.wait.max.ms", "1")
            .create()?;
    consumer.subscribe(&[&config.kafka.events_topic])?;
    let read: std::sync::Arc<std::sync::Mutex<HashMap<Uuid, Instant>>> = Default::default();
    let stop = Shutdown::new();
    let reader = {
        let (read, stop) = (read.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    _ = stop.cancelled() => break,
                    m = consumer.recv() => m,
                };
                let at = Instant::now();
                let Ok(message) = message else { continue };
                let id = message
                    .headers()
                    .and_then(|h| h.iter().find(|h| h.key == "event_id").and_then(|h| h.value))
                    .and_then(|v| Uuid::try_parse_ascii(v).ok());
                if let (Some(id), Ok(mut read)) = (id, read.lock()) {
                    read.entry(id).or_insert(at);
                }
            }
        })
    };
    let shutdown = Shutdown::new();
    let admin = TcpListener::bind(config.relay.admin_listen).await.map_err(|e| LoadgenError::Bench(e.to_string()))?;
    let task = {
        let (c, s) = (config.clone(), shutdown.clone());
        tokio::spawn(async move { paystream_relay::run(c, admin, s).await })
    };
    let mut client = db(&config).await?;
    let aggregates: Vec<Uuid> = (0..1000).map(|_| Uuid::new_v4()).collect();
    let mut committed: HashMap<Uuid, Instant> = HashMap::new();
    let tick = Duration::from_millis(5);
    // Warm-up: the relay has its lanes and the consumer its partitions before the clock runs.
    let warm_until = Instant::now() + Duration::from_secs(3);
    let started = Instant::now() + Duration::from_secs(3);
    let end = started + Duration::from_secs(seconds);
    let mut sent = 0u64;
    let mut seq = 0u64;
    let mut next = Instant::now();
    while Instant::now() < end {
        let warm = Instant::now() < warm_until;
        let due = match rate {
            _ if warm => 1,
            Some(rate) => ((started.elapsed().as_secs_f64() * rate) as u64).saturating_sub(sent),
            None => {
                let read = read.lock().map(|r| r.len() as u64).unwrap_or(0);
                (SUSTAINED_IN_FLIGHT + read).saturating_sub(committed.len() as u64).min(1_000)
            }
        };
        if warm || rate.is_some() || due == 0 {
            tokio::time::sleep_until(next.into()).await;
            next = (next + tick).max(Instant::now());
        }
        if due == 0 {
            continue;
        }
        let rows: Vec<(String, Uuid, Vec<u8>)> = (0..due)
            .map(|_| {
                seq += 1;
                let e = event(aggregates[(seq as usize) % aggregates.len()], seq);
                (e.aggregate_id.to_string(), e.event_id, encode(&e).unwrap_or_default())
            })
            .collect();
        let tx = client.transaction().await?;
        fill(&tx, &config.kafka.events_topic, &rows).await?;
        tx.commit().await?;
        client.batch_execute("NOTIFY paystream_outbox").await?;
        let at = Instant::now();
        if !warm {
            sent += due;
        }
        committed.extend(rows.iter().map(|(_, id, _)| (*id, at)));
    }
    // Wait for the backlog (an open-loop rate above what the relay sustains leaves one) as
    // long as records keep arriving; 30 s without one is the end. Only this writer's events
    // are on this run's topic, so all are read once as many ids were read as committed (a
    // count, not a lookup of every id under the lock the reader stamps arrivals with).
    let (mut seen, mut progress_at) = (0, Instant::now());
    loop {
        let count = read.lock().map(|r| r.len()).unwrap_or(0);
        if count > seen {
            (seen, progress_at) = (count, Instant::now());
        }
        if count >= committed.len() || progress_at.elapsed() > Duration::from_secs(30) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    shutdown.cancel();
    let _ = reader.await;
    let _ = task.await;
    let read = read.lock().map(|r| r.clone()).unwrap_or_default();
    let mut histogram = loadgen::new_histogram();
    let mut missing = 0u64;
    for (id, at) in &committed {
        match read.get(id) {
            // The warm-up's events count as delivered, not as latency.
            Some(seen) if *at >= warm_until => {
                let _ = histogram.record(seen.saturating_duration_since(*at).as_micros().max(1) as u64);
            }
            Some(_) => {}
            None => missing += 1,
        }
    }
    if missing > 0 {
        return Err(LoadgenError::Bench(format!("{missing} committed events never reached the topic")));
    }
    let in_window = read.values().filter(|at| **at >= started && **at < end).count();
    Ok((in_window as f64 / seconds as f64, Latency::from(&histogram)))
}

/// Inserts `rows` (key, event id, payload) into the outbox as the processor does: the events
/// of one transaction grouped by lane, with the processor's own code and statement.
async fn fill(
    tx: &tokio_postgres::Transaction<'_>,
    topic: &str,
    rows: &[(String, Uuid, Vec<u8>)],
) -> Result<(), tokio_postgres::Error> {
    let mut outbox = OutboxRows::default();
    for (key, id, payload) in rows {
        outbox.push(topic, key, *id, "PaymentApplied", payload);
    }
    let insert = tx.prepare(paystream_processor::outbox::INSERT).await?;
    outbox.insert(tx, &insert).await
}

/// Waits until no outbox row with an id in `first..=last` is left (or `deadline`), probing
/// every 10 ms. Each probe walks the primary key from the oldest row the previous one found,
/// so that watching costs the relay next to nothing: from `first` each time, it would step
/// over every entry the relay deleted so far (measured: a tenth of a core during a drain).
async fn wait_drained(
    client: &tokio_postgres::Client,
    first: i64,
    last: i64,
    deadline: Instant,
) -> Result<(), tokio_postgres::Error> {
    let sql = "SELECT min(id) FROM paystream.outbox WHERE id BETWEEN $1 AND $2";
    let mut from = first;
    while Instant::now() < deadline {
        match client.query_one(sql, &[&from, &last]).await?.get::<_, Option<i64>>(0) {
            Some(oldest) => from = oldest,
            None => break,
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// A server that answers 202 to every webhook without verifying or producing: the HTTP
/// stack's limit under the same load generator. Run as its own process (`paystream
/// bare-server`), as ingest is, until `shutdown`.
pub async fn serve_bare(listener: TcpListener, admin: TcpListener, shutdown: Shutdown) -> std::io::Result<()> {
    use axum::routing::post;
    let readiness = paystream_common::telemetry::Readiness::default();
    readiness.set(true);
    paystream_common::telemetry::spawn_admin(admin, readiness, shutdown.clone());
    let app = axum::Router::new().route(
        "/webhooks/{provider}",
        post(|_body: axum::body::Bytes| async { (axum::http::StatusCode::ACCEPTED, "{\"status\":\"accepted\"}") }),
    );
    axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await }).await
}

/// The configuration section holding a service's admin address: the bare server stands in
/// for ingest.
fn admin_section(service: &str) -> String {
    if service == "bare-server" {
        "INGEST".to_owned()
    } else {
        service.to_uppercase()
    }
}

/// paystream services as child processes of this binary (`paystream ingest|processor|relay`),
/// configured through `PAYSTREAM_*` variables: what runs in production, each with its own
/// runtime and memory, so that latency is not shared with the load generator and each
/// service's RSS can be read.
struct Services {
    children: Vec<(&'static str, std::process::Child)>,
    ingest: SocketAddr,
    admins: Vec<SocketAddr>,
}

impl Services {
    async fn start(config: &Config, names: &[&'static str]) -> Result<Self, LoadgenError> {
        let exe = std::env::current_exe().map_err(|e| LoadgenError::Bench(format!("own executable: {e}")))?;
        let free = || -> Result<SocketAddr, LoadgenError> {
            let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| LoadgenError::Bench(e.to_string()))?;
            l.local_addr().map_err(|e| LoadgenError::Bench(e.to_string()))
        };
        let ingest = free()?;
        let mut children = Vec::new();
        let mut admins = Vec::new();
        for name in names {
            let admin = free()?;
            let mut command = std::process::Command::new(&exe);
            command
                .arg(name)
                .envs(config.data_env())
                .env("PAYSTREAM_INGEST__LISTEN", ingest.to_string())
                .env(format!("PAYSTREAM_{}__ADMIN_LISTEN", admin_section(name)), admin.to_string())
                .env("RUST_LOG", "warn")
                .stdout(std::process::Stdio::null());
            for provider in config.providers.keys() {
                let key = provider.to_uppercase();
                command.env(format!("PAYSTREAM_PROVIDERS__{key}__RATE_PER_SECOND"), "1000000");
                command.env(format!("PAYSTREAM_PROVIDERS__{key}__BURST"), "1000000");
            }
            let child = command.spawn().map_err(|e| LoadgenError::Bench(format!("start {name}: {e}")))?;
            children.push((*name, child));
            admins.push((*name, admin));
        }
        let services = Self { children, ingest, admins: admins.iter().map(|(_, a)| *a).collect() };
        let http = reqwest::Client::new();
        for (name, admin) in admins {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let ready =
                    http.get(format!("http://{admin}/readyz")).send().await.is_ok_and(|r| r.status().is_success());
                if ready {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(LoadgenError::Bench(format!("{name} not ready within 60 s")));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(services)
    }

    /// Peak resident memory of each service so far (`VmHWM`), MiB.
    fn peak_rss_mib(&self) -> std::collections::BTreeMap<String, f64> {
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
    fn stop(mut self) {
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

/// One point of the scaling curve.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScalingPoint {
    /// Processor members (processes) in the group.
    pub members: usize,
    /// Installments the payments are spread over.
    pub installments: i32,
    /// Payments applied per second; `None` if the group did not finish within the deadline.
    pub payments_per_s: Option<f64>,
    /// 99th percentile of the batch apply time (upper bucket bound, slowest member), ms.
    pub batch_p99_ms: Option<f64>,
}

/// Payments/s from a pre-filled 12-partition topic with 1, 2 and 4 processor processes in
/// one group, then with one member at 1x, 10x and 100x `base_installments`.
pub async fn scaling(
    config: &Config,
    messages: u64,
    base_installments: i32,
) -> Result<Vec<ScalingPoint>, LoadgenError> {
    let mut points = Vec::new();
    let runs = [(1, base_installments), (2, base_installments), (4, base_installments)]
        .into_iter()
        .chain([(1, base_installments * 10), (1, base_installments * 100)]);
    for (members, spread) in runs {
        eprintln!("[bench] scaling: {members} member(s), {spread} installments");
        let mut config = unique(config, "scaling");
        config.kafka.partitions = 12;
        fill_inbound(&config, messages, spread).await?;
        let client = db(&config).await?;
        let names: Vec<&'static str> = std::iter::repeat_n("processor", members).collect();
        let services = Services::start(&config, &names).await?;
        let rate = wait_applied(&client, &config, messages).await?;
        let mut p99: Option<f64> = None;
        for admin in &services.admins {
            if let Some(ms) = batch_p99_ms(*admin).await {
                p99 = Some(p99.map_or(ms, |p: f64| p.max(ms)));
            }
        }
        services.stop();
        client.execute("DELETE FROM paystream.outbox WHERE topic = $1", &[&config.kafka.events_topic]).await?;
        points.push(ScalingPoint { members, installments: spread, payments_per_s: rate, batch_p99_ms: p99 });
    }
    Ok(points)
}

/// The 99th percentile of `paystream_processor_batch_duration_seconds` from a member's
/// `/metrics`: the upper bound of the first bucket holding 99% of the batches.
async fn batch_p99_ms(admin: SocketAddr) -> Option<f64> {
    let text = reqwest::get(format!("http://{admin}/metrics")).await.ok()?.text().await.ok()?;
    let buckets: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("paystream_processor_batch_duration_seconds_bucket{le=\""))
        .filter_map(|l| {
            let (le, count) = l.split_once("\"} ")?;
            Some((le.parse::<f64>().unwrap_or(f64::INFINITY), count.trim().parse::<f64>().ok()?))
        })
        .collect();
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    buckets.iter().find(|(_, c)| *c >= 0.99 * total).map(|(le, _)| le * 1000.0)
}

/// Results of the edge and pipeline measurements.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EdgeResult {
    /// Ingest vs bare server, closed loop.
    pub ingest: Figure,
    /// Ingest's HTTP latency at peak (closed loop).
    pub ingest_latency_at_peak: Latency,
    /// Ingest alone (broker local, nothing else running) at half its peak, open loop: the
    /// edge's own latency target. Absent in runs recorded before it was measured.
    /// The turn with the median p99 of `ingest_half_peak_turns` (runs before 2026-12-01 16:00
    /// made one turn).
    #[serde(default)]
    pub ingest_alone_half_peak: Option<(f64, Latency)>,
    /// Every turn of ingest alone at half its peak, in order.
    #[serde(default)]
    pub ingest_half_peak_turns: Vec<Latency>,
    /// The bare server at the same rate, in turns alternating with ingest's: the latency the
    /// load generator, the HTTP stack and this machine give a server that does nothing.
    #[serde(default)]
    pub bare_half_peak_turns: Vec<Latency>,
    /// The whole pipeline's sustained payments/s: closed loop with every service running,
    /// counted until the last outcome event was read back.
    pub pipeline_sustained: f64,
    /// Open-loop rate used for the latency run (half the pipeline's sustained rate).
    pub half_peak_rate: f64,
    /// Ingest's HTTP latency at half peak (open loop).
    pub ingest_latency_at_half_peak: Latency,
    /// End-to-end latency at half peak: webhook intended send to event read back.
    pub e2e_latency_at_half_peak: Option<Latency>,
    /// Payments with exactly one outcome event in the half-peak run.
    pub e2e_outcomes_ok: u64,
    /// Payments missing or doubled in the half-peak run.
    pub e2e_outcomes_bad: u64,
    /// Peak resident memory of each service process over the runs (ingest: its peak runs
    /// too), MiB.
    pub peak_rss_mib: std::collections::BTreeMap<String, f64>,
}

/// Turns of the edge's peak measurement: bare server and ingest alternately.
const EDGE_TURNS: usize = 3;

/// Turns of ingest alone at half its peak, each followed by the bare server at that rate.
const HALF_PEAK_TURNS: usize = 3;

/// The turn with the median p99 (the higher of the two middle ones for an even count).
pub(crate) fn median_by_p99(turns: &[Latency]) -> Option<&Latency> {
    let mut by_p99: Vec<&Latency> = turns.iter().collect();
    by_p99.sort_by(|a, b| a.p99_ms.total_cmp(&b.p99_ms));
    by_p99.get(by_p99.len() / 2).copied()
}

/// Ingest vs a bare server, each its own process, under the same closed-loop load from this
/// process; ingest alone at half its peak; then the whole pipeline as separate processes: its
/// sustained rate, then half that rate (open loop) with end-to-end latency, and each
/// service's peak RSS.
pub async fn edge(
    config: &Config,
    requests: u64,
    concurrency: usize,
    latency_seconds: u64,
) -> Result<EdgeResult, LoadgenError> {
    let mut config = unique(config, "edge");
    for p in config.providers.values_mut() {
        p.rate_per_second = 1_000_000;
        p.burst = 1_000_000;
    }
    paystream_common::kafka::ensure_topics(&config.kafka, Duration::from_secs(30)).await?;
    // Fresh installments for the payments of these runs (they pay installments in full).
    let fresh = i32::try_from(requests * 2).unwrap_or(i32::MAX);
    installments(&config, &format!("bench-edge-{}", Uuid::new_v4().simple()), fresh, 250).await?;
    let with = |target: String, count: u64, rate: Option<f64>, follow: bool, concurrency: usize| loadgen::Options {
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
    };
    let options =
        |target: String, count: u64, rate: Option<f64>, follow: bool| with(target, count, rate, follow, concurrency);
    // A server's peak in one turn: the better of two closed loops, `concurrency` and four
    // times as many connections (a server that waits for the broker's ack before answering
    // needs more requests in flight to be busy than one that answers at once).
    let shared = &config;
    let peak = |target: String| async move {
        let mut best: Option<loadgen::Summary> = None;
        for c in [concurrency, concurrency * 4] {
            let run = loadgen::run(shared, with(target.clone(), requests, None, false, c)).await?;
            if best.as_ref().is_none_or(|b| run.accepted_per_s > b.accepted_per_s) {
                best = Some(run);
            }
        }
        best.ok_or_else(|| LoadgenError::Bench("no closed-loop run".into()))
    };
    let better = |a: Option<loadgen::Summary>, b: loadgen::Summary| match a {
        Some(a) if a.accepted_per_s >= b.accepted_per_s => a,
        _ => b,
    };
    // Each server as its own process, as deployed, under the same load generator (this
    // process), in alternating turns, the best turn of each compared: this shared machine's
    // speed drifts within a minute, and a drift between the two measurements moved the
    // ratio by a third in runs that measured each server once. The last ingest stays up for
    // the latency run.
    let (mut bare_run, mut ingest_run) = (None, None);
    let mut alone = None;
    for turn in 0..EDGE_TURNS {
        let bare = Services::start(&config, &["bare-server"]).await?;
        let run = peak(format!("http://{}", bare.ingest)).await?;
        bare.stop();
        bare_run = Some(better(bare_run, run));
        let services = Services::start(&config, &["ingest"]).await?;
        let run = peak(format!("http://{}", services.ingest)).await?;
        ingest_run = Some(better(ingest_run, run));
        if turn + 1 == EDGE_TURNS {
            alone = Some(services);
        } else {
            services.stop();
        }
    }
    let (Some(bare_run), Some(ingest), Some(alone)) = (bare_run, ingest_run, alone) else {
        return Err(LoadgenError::Bench("no edge turn".into()));
    };
    // The edge's latency target: ingest alone at half its peak, open loop, for
    // `latency_seconds` (runs before 2026-12-01 14:00 sent at most `requests`, 1.5 s at this
    // rate, so that opening the connections weighed on the tail), in `HALF_PEAK_TURNS` turns
    // alternating with the bare server at the same rate. One turn's p99 is at the mercy of
    // this shared machine: in runs of 10 s at 20,000 req/s on 2026-12-01, the bare server's
    // p99 was 0.8-1.3 ms in most and 23.8 ms in one, with the generator's pacing thread held
    // up for 61 ms. The median turn is the figure, and every turn of both is reported.
    let half_ingest = ingest.accepted_per_s / 2.0;
    let count = ((half_ingest * latency_seconds as f64) as u64).max(1_000);
    let bare = Services::start(&config, &["bare-server"]).await?;
    let (mut ingest_turns, mut bare_turns) = (Vec::new(), Vec::new());
    for _ in 0..HALF_PEAK_TURNS {
        for (turns, server) in [(&mut ingest_turns, &alone), (&mut bare_turns, &bare)] {
            let target = format!("http://{}", server.ingest);
            turns.push(loadgen::run(&config, options(target, count, Some(half_ingest), false)).await?.http_latency);
        }
    }
    bare.stop();
    let alone_rss = alone.peak_rss_mib();
    alone.stop();
    let median_turn = median_by_p99(&ingest_turns).map(|l| (half_ingest, l.clone()));

    // The whole pipeline as three processes, on topics of its own: the peak and latency runs
    // of ingest alone left hundreds of thousands of records on the edge's inbound topic, and
    // the local broker's reads slow down with the records a topic holds (draining them first,
    // as runs before 2026-12-01 14:15 did, left the pipeline on a slowed topic).
    let config = unique(&config, "pipeline");
    paystream_common::kafka::ensure_topics(&config.kafka, Duration::from_secs(30)).await?;
    let services = Services::start(&config, &["ingest", "processor", "relay"]).await?;
    let target = format!("http://{}", services.ingest);
    // The pipeline's sustained rate: closed loop, until the last outcome is read back.
    let sustained_run = loadgen::run(&config, options(target.clone(), requests / 2, None, true)).await?;
    let sustained =
        sustained_run.payments as f64 / sustained_run.outcomes_complete_s.unwrap_or(f64::INFINITY).max(1e-9);
    // Let that backlog drain, then half the sustained rate, open loop, for 20 s at most.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let half = sustained / 2.0;
    let half_count = ((half * 20.0) as u64).clamp(500, requests);
    let at_half = loadgen::run(&config, options(target, half_count, Some(half), true)).await?;
    let mut rss = services.peak_rss_mib();
    for (name, mib) in alone_rss {
        let entry = rss.entry(name).or_insert(mib);
        *entry = entry.max(mib);
    }
    services.stop();
    Ok(EdgeResult {
        ingest: Figure::new(
            "ingest webhooks accepted",
            ingest.accepted_per_s,
            "bare HTTP server answering 202",
            bare_run.accepted_per_s,
            "req/s",
        ),
        ingest_latency_at_peak: ingest.http_latency,
        ingest_alone_half_peak: median_turn,
        ingest_half_peak_turns: ingest_turns,
        bare_half_peak_turns: bare_turns,
        pipeline_sustained: sustained,
        half_peak_rate: half,
        ingest_latency_at_half_peak: at_half.http_latency,
        e2e_latency_at_half_peak: at_half.e2e_latency,
        e2e_outcomes_ok: at_half.payments_with_one_outcome,
        e2e_outcomes_bad: at_half.payments_missing_outcome + at_half.payments_doubled,
        peak_rss_mib: rss,
    })
}

/// Everything, in one run. Parts not asked for are absent.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    /// Processor, uniform over many installments: batched vs one payment per transaction.
    pub processor_uniform: Option<Figure>,
    /// Processor, hot over 10 installments: batched vs one payment per transaction.
    pub processor_hot: Option<Figure>,
    /// Rows the batched uniform run wrote per payment (inserted and updated, as the database
    /// counted them). Absent in runs recorded before it was measured (6 was assumed).
    #[serde(default)]
    pub processor_rows_per_payment: Option<f64>,
    /// Relay vs plain producer.
    pub relay: Option<Figure>,
    /// Open-loop rate of the relay latency run (half the relay's drain rate), events/s.
    pub relay_half_peak_rate: Option<f64>,
    /// Commit-to-Kafka latency at that rate: from an outbox row's commit to its record read
    /// back from the events topic.
    pub relay_latency_at_half_peak: Option<Latency>,
    /// Events/s the relay publishes while a writer commits them and a reader reads them back
    /// on the same machine (closed loop, bounded queue), and the commit-to-Kafka latency at
    /// half that rate (open loop). Absent in runs recorded before it was measured.
    #[serde(default)]
    pub relay_sustained: Option<(f64, Latency)>,
    /// Ingest and the whole pipeline.
    pub edge: Option<EdgeResult>,
    /// Processor members and installments vs payments/s.
    pub scaling: Option<Vec<ScalingPoint>>,
}

impl Report {
    /// Takes the parts `self` lacks from `other` (runs of separate parts into one report).
    pub fn merge(&mut self, other: Report) {
        fn fill<T>(into: &mut Option<T>, from: Option<T>) {
            if into.is_none() {
                *into = from;
            }
        }
        fill(&mut self.processor_uniform, other.processor_uniform);
        fill(&mut self.processor_hot, other.processor_hot);
        fill(&mut self.processor_rows_per_payment, other.processor_rows_per_payment);
        fill(&mut self.relay, other.relay);
        fill(&mut self.relay_half_peak_rate, other.relay_half_peak_rate);
        fill(&mut self.relay_latency_at_half_peak, other.relay_latency_at_half_peak);
        fill(&mut self.relay_sustained, other.relay_sustained);
        fill(&mut self.edge, other.edge);
        fill(&mut self.scaling, other.scaling);
    }
}

/// Sizes of one run.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// Payments for the batched processor runs.
    pub processor_messages: u64,
    /// Payments for the one-per-transaction runs (slower, so fewer).
    pub single_messages: u64,
    /// Installments of the uniform case.
    pub uniform_installments: i32,
    /// Outbox rows for the relay.
    pub relay_events: u64,
    /// Seconds of each open-loop latency run of the relay and of ingest alone.
    pub latency_seconds: u64,
    /// Webhooks for the ingest runs.
    pub requests: u64,
    /// Connections of the closed-loop runs.
    pub concurrency: usize,
    /// Payments per scaling run.
    pub scaling_messages: u64,
    /// Installments of the first scaling runs (then 10x and 100x).
    pub scaling_installments: i32,
}

/// The measurements one run can be limited to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// Processor batched vs one payment per transaction.
    Processor,
    /// Relay vs a plain producer.
    Relay,
    /// Ingest vs a bare server, and the whole pipeline.
    Edge,
    /// Processor members and installment counts.
    Scaling,
}

/// Every relay of the runs drains the whole outbox: rows left by an earlier run (its own,
/// or the demo's) must have their topics on this broker, or they would hold their lanes
/// until the broker has them. The local broker keeps topics in memory, so after a restart
/// they are created again here.
async fn ensure_outbox_topics(config: &Config) -> Result<(), LoadgenError> {
    let client = db(config).await?;
    let topics: Vec<String> =
        client.query("SELECT DISTINCT topic FROM paystream.outbox", &[]).await?.iter().map(|r| r.get(0)).collect();
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    if !names.is_empty() {
        paystream_common::kafka::ensure_named_topics(&config.kafka, &names, Duration::from_secs(30)).await?;
    }
    Ok(())
}

/// Runs the measurements of `parts`, printing progress on stderr.
pub async fn all(config: &Config, sizes: Sizes, parts: &[Part]) -> Result<Report, LoadgenError> {
    let step = |s: &str| eprintln!("[bench] {s}");
    let mut report = Report::default();
    ensure_outbox_topics(config).await?;
    if parts.contains(&Part::Processor) {
        step("processor, uniform, batched");
        let (uniform, rows_per_payment) =
            processor(config, sizes.processor_messages, sizes.uniform_installments, config.processor.batch_max).await?;
        report.processor_rows_per_payment = Some(rows_per_payment);
        step("processor, uniform, one payment per transaction");
        let (uniform_single, _) = processor(config, sizes.single_messages, sizes.uniform_installments, 1).await?;
        step("processor, hot (10 installments), batched");
        let (hot, _) = processor(config, sizes.processor_messages, 10, config.processor.batch_max).await?;
        step("processor, hot (10 installments), one payment per transaction");
        let (hot_single, _) = processor(config, sizes.single_messages, 10, 1).await?;
        report.processor_uniform = Some(Figure::new(
            &format!("processor, uniform over {} installments", sizes.uniform_installments),
            uniform,
            "one payment per transaction",
            uniform_single,
            "payments/s",
        ));
        report.processor_hot = Some(Figure::new(
            "processor, hot over 10 installments",
            hot,
            "one payment per transaction",
            hot_single,
            "payments/s",
        ));
    }
    if parts.contains(&Part::Relay) {
        step("relay and plain producer");
        let (relay, plain) = relay(config, sizes.relay_events).await?;
        report.relay = Some(Figure::new(
            "relay events drained from the outbox",
            relay,
            "plain rdkafka producer, same records",
            plain,
            "events/s",
        ));
        step("relay commit-to-Kafka latency at half its drain rate");
        report.relay_half_peak_rate = Some(relay / 2.0);
        let (_, at_half_drain) = relay_flow(config, Some(relay / 2.0), sizes.latency_seconds).await?;
        report.relay_latency_at_half_peak = Some(at_half_drain);
        step("relay sustained with its writer, then latency at half that rate");
        let (sustained, _) = relay_flow(config, None, sizes.latency_seconds).await?;
        let (_, at_half) = relay_flow(config, Some(sustained / 2.0), sizes.latency_seconds).await?;
        report.relay_sustained = Some((sustained, at_half));
    }
    if parts.contains(&Part::Edge) {
        step("ingest, bare server, pipeline at half peak");
        report.edge = Some(edge(config, sizes.requests, sizes.concurrency, sizes.latency_seconds).await?);
    }
    if parts.contains(&Part::Scaling) {
        report.scaling = Some(scaling(config, sizes.scaling_messages, sizes.scaling_installments).await?);
    }
    Ok(report)
}

/// Where and on what a run was measured, and the limits measured outside this process.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Context {
    /// UTC time of the run.
    pub date: String,
    /// Commit measured.
    pub commit: String,
    /// Cores, memory, kernel.
    pub machine: String,
    /// Whether the sizes were the quick ones.
    pub quick: bool,
    /// pgbench: single-row INSERT commits/s at 32 clients, same run.
    pub pg_commits_per_s: Option<f64>,
    /// pgbench: rows/s in 100-row INSERT transactions at 8 clients, same run.
    pub pg_rows_per_s: Option<f64>,
    /// pgbench: payments/s of the processor's own rows (journal, postings, payment,
    /// installment update, outbox share) written 100 payments a transaction with none of the
    /// processor's reads, locks or logic (`benchmarks/sql/rows_limit.sql`), same run.
    #[serde(default)]
    pub pg_payment_rows_per_s: Option<f64>,
}

/// A run with its context, as written to JSON (and read back to redraw it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    /// Where and when.
    pub context: Context,
    /// What was measured.
    pub report: Report,
}

/// The results as a Markdown section: the side-by-side table, then the latencies.
pub fn markdown(context: &Context, r: &Report) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let quick = if context.quick { " --quick" } else { "" };
    let _ =
        writeln!(out, "`scripts/bench{quick}`, {}, commit {}, {}.\n", context.date, context.commit, context.machine);
    if let (Some(commits), Some(rows)) = (context.pg_commits_per_s, context.pg_rows_per_s) {
        let _ = writeln!(
            out,
            "PostgreSQL limits (pgbench, same run): **{}** single-row INSERT commits/s at 32 clients; **{}** rows/s in 100-row INSERT transactions at 8 clients (`scripts/bench`: the mean of the runs right before and right after the processor part).\n",
            thousands(commits),
            thousands(rows)
        );
    }
    let _ = writeln!(out, "| measurement | paystream | baseline | baseline figure | ratio | target |");
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    let mut row = |f: &Figure, target: f64| {
        let verdict = if f.ratio >= target { "met" } else { "not met" };
        let _ = writeln!(
            out,
            "| {} | {} {} | {} | {} | **{:.2}** | {target}: {verdict} |",
            f.name,
            thousands(f.value),
            f.unit,
            f.baseline_name,
            thousands(f.baseline),
            f.ratio
        );
    };
    if let Some(f) = &r.processor_uniform {
        row(f, 10.0);
    }
    if let Some(f) = &r.processor_hot {
        row(f, 10.0);
    }
    if let Some(f) = &r.relay {
        row(f, 0.7);
    }
    if let Some(e) = &r.edge {
        row(&e.ingest, 0.5);
    }
    let _ = writeln!(out);
    let lat = |l: &Latency| {
        format!("p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms", l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms)
    };
    if let (Some(u), Some(h), Some(rows)) = (&r.processor_uniform, &r.processor_hot, context.pg_rows_per_s) {
        let per_payment = r.processor_rows_per_payment.unwrap_or(6.0);
        let written = u.value * per_payment;
        let _ = writeln!(
            out,
            "- Processor rows written: {per_payment:.2} per payment (inserted and updated, counted by the database), {} rows/s uniform, **{:.2}** of the 100-row INSERT limit (target 0.5); hot case at **{:.2}** of the uniform rate (target 0.5).",
            thousands(written),
            written / rows,
            h.value / u.value.max(1e-9)
        );
        if let Some(limit) = context.pg_payment_rows_per_s {
            let _ = writeln!(
                out,
                "- The same rows written by PostgreSQL alone (`benchmarks/sql/rows_limit.sql`: journal, postings, payment, installment update and outbox share, 100 payments a transaction, none of the processor's reads, locks or logic): {} payments/s, {} rows/s, **{:.2}** of the 100-row INSERT limit; the processor uniform at **{:.2}** of it.",
                thousands(limit),
                thousands(limit * per_payment),
                limit * per_payment / rows,
                u.value / limit
            );
        }
    }
    if let (Some(rate), Some(l)) = (r.relay_half_peak_rate, &r.relay_latency_at_half_peak) {
        // Half the drain rate of a filled outbox can exceed what a writer, the relay and a
        // reader sustain together on these cores: then the queue grows for the whole run and
        // the latency says so, not what the target is about.
        let overload = match &r.relay_sustained {
            Some((sustained, _)) if rate > *sustained => format!(
                "; above the {} events/s that the writer, the relay and the reader sustain together (next line), so the queue grows throughout",
                thousands(*sustained)
            ),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "- Relay commit-to-Kafka latency (outbox commit to the record read back) at half its drain rate, {} events/s open loop: {}{overload}.",
            thousands(rate),
            lat(l)
        );
    }
    if let Some((rate, l)) = &r.relay_sustained {
        let _ = writeln!(
            out,
            "- Relay sustained while a writer commits the events and a reader reads them back on the same cores (closed loop): {} events/s; at half that, {} events/s open loop: {} (target p99 < 50 ms).",
            thousands(*rate),
            thousands(rate / 2.0),
            lat(l)
        );
    }
    if let Some(e) = &r.edge {
        let rss: Vec<String> = e.peak_rss_mib.iter().map(|(k, v)| format!("{k} {v:.0} MiB")).collect();
        let _ = writeln!(
            out,
            "- Peak RSS of each service process (ingest over its peak and pipeline runs): {}.",
            rss.join(", ")
        );
    }
    if let Some(e) = &r.edge {
        let _ = writeln!(out, "- Ingest HTTP latency at its peak (closed loop): {}.", lat(&e.ingest_latency_at_peak));
        if let Some((rate, l)) = &e.ingest_alone_half_peak {
            let p99s =
                |turns: &[Latency]| turns.iter().map(|l| format!("{:.1}", l.p99_ms)).collect::<Vec<_>>().join(", ");
            if e.ingest_half_peak_turns.len() > 1 {
                let _ = writeln!(
                    out,
                    "- Ingest alone at half its peak ({} req/s, open loop, broker local), {} turns: HTTP p99 {} ms; the median turn: {} (target p99 < 10 ms). The bare server at the same rate, in turns alternating with these: p99 {} ms.",
                    thousands(*rate),
                    e.ingest_half_peak_turns.len(),
                    p99s(&e.ingest_half_peak_turns),
                    lat(l),
                    p99s(&e.bare_half_peak_turns)
                );
            } else {
                let _ = writeln!(
                    out,
                    "- Ingest alone at half its peak ({} req/s, open loop, broker local): HTTP {} (target p99 < 10 ms).",
                    thousands(*rate),
                    lat(l)
                );
            }
        }
        let _ = writeln!(
            out,
            "- Whole pipeline sustained (closed loop until the last outcome event is read back): {} payments/s.",
            thousands(e.pipeline_sustained)
        );
        let _ = writeln!(
            out,
            "- At half that rate ({} payments/s, open loop): ingest HTTP {}.",
            thousands(e.half_peak_rate),
            lat(&e.ingest_latency_at_half_peak)
        );
        if let Some(l) = &e.e2e_latency_at_half_peak {
            let _ = writeln!(
                out,
                "- End to end at half rate (webhook's intended send to its outcome event read back): {}; {} payments with exactly one outcome, {} missing or doubled.",
                lat(l),
                e.e2e_outcomes_ok,
                e.e2e_outcomes_bad
            );
        }
    }
    let _ = writeln!(out, "\n![ratios](bench-ratios.svg)\n\n![latency](bench-latency.svg)\n");
    if let Some(points) = &r.scaling {
        let _ =
            writeln!(out, "\nScaling (pre-filled topic of 12 partitions, processor members as separate processes):\n");
        let _ = writeln!(out, "| members | installments | payments/s | batch apply p99 |");
        let _ = writeln!(out, "|---|---|---|---|");
        for p in points {
            let rate = p.payments_per_s.map_or("did not finish".to_owned(), thousands);
            let p99 = p.batch_p99_ms.map_or("-".to_owned(), |ms| format!("≤ {ms:.0} ms"));
            let _ = writeln!(out, "| {} | {} | {rate} | {p99} |", p.members, thousands(f64::from(p.installments)));
        }
        let _ = writeln!(out, "\n![scaling](bench-scaling.svg)");
    }
    out
}

/// `12345.6` as `12,346`.
fn thousands(v: f64) -> String {
    let n = v.round() as i64;
    let digits = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// Replaces what stands between the results markers of a Markdown file with `section`.
pub fn splice(document: &str, section: &str) -> Option<String> {
    const START: &str = "<!-- bench:results:start -->";
    const END: &str = "<!-- bench:results:end -->";
    let a = document.find(START)? + START.len();
    let b = document[a..].find(END)? + a;
    Some(format!("{}\n{}\n{}", &document[..a], section.trim_end(), &document[b..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0.4), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(1234567.0), "1,234,567");
    }

    #[test]
    fn splice_replaces_only_between_markers() {
        let doc = "a\n<!-- bench:results:start -->\nold\n<!-- bench:results:end -->\nb\n";
        let out = splice(doc, "new\n").unwrap();
        assert_eq!(out, "a\n<!-- bench:results:start -->\nnew\n<!-- bench:results:end -->\nb\n");
        assert!(splice("no markers", "x").is_none());
    }

    #[test]
    fn the_median_turn_is_picked_by_p99() {
        let turn = |p99_ms: f64| Latency { p99_ms, ..Latency::default() };
        let turns = [turn(13.4), turn(64.5), turn(12.6)];
        assert_eq!(median_by_p99(&turns).map(|l| l.p99_ms), Some(13.4));
        assert_eq!(median_by_p99(&turns[..2]).map(|l| l.p99_ms), Some(64.5));
        assert!(median_by_p99(&[]).is_none());
    }
}
