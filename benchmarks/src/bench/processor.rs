//! The processor measured alone: payments/s applied from a pre-filled topic, batched (its
//! defaults) and limited to one payment per transaction, uniform over many installments and
//! hot over 10. Timed from the first stored position seen to the last: the consumer's start
//! and the group's first join take seconds whatever the rate.

use std::time::{Duration, Instant};

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rust_decimal::Decimal;
use tokio::net::TcpListener;
use uuid::Uuid;

use paystream_common::command_auth::{self, CommandAuth};
use paystream_common::{Config, Shutdown};
use paystream_schemas::{encode, CommandKind, PaymentCommand};

use super::error::BenchError;
use super::services::{db, unique};

/// Seeds (idempotently) `n` installments of `amount_due` named by `namespace`, one per
/// contract, and returns them. The edge runs pay installments in full, so each of them uses a
/// fresh namespace; the processor runs pay 0.01 at a time into large installments.
pub async fn installments(config: &Config, namespace: &str, n: i32, amount_due: i64) -> Result<Vec<Uuid>, BenchError> {
    let client = db(config).await?;
    let amount = Decimal::from(amount_due);
    client.execute(include_str!("../../sql/bench_customers_insert.sql"), &[&n, &namespace]).await?;
    client.execute(include_str!("../../sql/bench_contracts_insert.sql"), &[&n, &namespace, &amount]).await?;
    client.execute(include_str!("../../sql/bench_installments_insert.sql"), &[&n, &namespace, &amount]).await?;
    let rows = client.query(include_str!("../../sql/bench_installments_select.sql"), &[&n, &namespace]).await?;
    Ok(rows.into_iter().map(|r| r.get(0)).collect())
}

/// Fresh installments for one run: earlier runs' may have been paid off since (a load
/// generator pays whatever is open), and payments to a settled contract are rejections,
/// cheaper than the partial payments measured.
pub async fn fresh_installments(config: &Config, spread: i32) -> Result<Vec<Uuid>, BenchError> {
    installments(config, &format!("bench-{}", Uuid::new_v4().simple()), spread, 1_000_000).await
}

/// What one processor run measured.
#[derive(Debug, Clone, Copy)]
pub struct ProcessorRun {
    /// Payments applied per second.
    pub payments_per_s: f64,
    /// Rows inserted and updated per payment, as the database counted them.
    pub rows_per_payment: f64,
}

/// Payments/s applied from a pre-filled topic of `messages` payments over `spread`
/// installments, with `batch_max` payments per transaction at most; with `batch_max` 1, the
/// one-payment-per-transaction design (no merging across partitions either, and as many
/// transactions in flight as partitions: its best case).
pub async fn processor(
    config: &Config,
    messages: u64,
    spread: i32,
    batch_max: usize,
) -> Result<ProcessorRun, BenchError> {
    let mut config = unique(config, "processor");
    config.processor.batch_max = batch_max;
    if batch_max == 1 {
        config.processor.transaction_max = 1;
        config.processor.transactions = config.postgres.pool_size.min(config.kafka.partitions.max(1) as usize);
    }
    let run = fill_inbound(&config, messages, spread).await?;
    let client = db(&config).await?;
    let written_before = rows_written(&client).await?;
    let shutdown = Shutdown::new();
    let admin = TcpListener::bind(config.processor.admin_listen)
        .await
        .map_err(BenchError::io("bind the processor's admin port"))?;
    let task = {
        let (c, s) = (config.clone(), shutdown.clone());
        tokio::spawn(async move { paystream_processor::run(c, admin, s).await })
    };
    let rate = wait_applied(&client, &config, messages).await?;
    shutdown.cancel();
    let _ = task.await;
    let rows_per_payment = rows_per_payment(&client, written_before, messages).await?;
    client.execute(include_str!("../../sql/bench_outbox_delete_topic.sql"), &[&config.kafka.events_topic]).await?;
    // What is measured is partial payments applied: a rejection costs the database less.
    let applied: i64 =
        client.query_one(include_str!("../../sql/bench_payments_applied_count.sql"), &[&"bench", &run]).await?.get(0);
    if applied != i64::try_from(messages).unwrap_or(i64::MAX) {
        return Err(BenchError::Incomplete(format!("{applied} of {messages} payments applied (the others rejected)")));
    }
    let payments_per_s =
        rate.ok_or_else(|| BenchError::Incomplete(format!("{messages} payments not applied within 10 minutes")))?;
    Ok(ProcessorRun { payments_per_s, rows_per_payment })
}

/// Rows inserted and updated in the tables of paystream and of the seed design so far (the
/// statistics collector's counters): what a run wrote, counted by the database.
pub async fn rows_written(client: &tokio_postgres::Client) -> Result<i64, BenchError> {
    Ok(client.query_one(include_str!("../../sql/bench_rows_written.sql"), &[]).await?.get(0))
}

/// Rows written per payment since `before`, for `payments` payments. A server process
/// publishes its table counters when its session ends, or when it was idle for a while: they
/// are read until they stop moving.
pub async fn rows_per_payment(client: &tokio_postgres::Client, before: i64, payments: u64) -> Result<f64, BenchError> {
    let payments_i64 = i64::try_from(payments).unwrap_or(i64::MAX);
    let mut written = rows_written(client).await?;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = rows_written(client).await?;
        if now == written && now - before >= payments_i64 {
            break;
        }
        written = now;
    }
    Ok((written - before) as f64 / payments.max(1) as f64)
}

/// Waits until `messages` positions are stored for the run's group (10 minutes at most),
/// polling every 20 ms, and returns the rate from the first stored position seen to the last
/// (`None` past the deadline).
pub async fn wait_applied(
    client: &tokio_postgres::Client,
    config: &Config,
    messages: u64,
) -> Result<Option<f64>, BenchError> {
    let done_sql = include_str!("../../sql/bench_positions_sum.sql");
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

/// The payments of one run: `messages` partial payments of 0.01 over `spread` fresh
/// installments, with payment ids under one prefix.
pub struct Payments {
    /// The prefix of their payment ids.
    pub prefix: String,
    /// The installment each pays, in order.
    pub installments: Vec<Uuid>,
}

impl Payments {
    /// Plans `messages` payments over `spread` fresh installments.
    pub async fn plan(config: &Config, messages: u64, spread: i32, tag: &str) -> Result<Self, BenchError> {
        let targets = fresh_installments(config, spread).await?;
        let prefix = format!("{tag}_{}_", Uuid::new_v4().simple());
        let installments = (0..messages as usize).map(|i| targets[i % targets.len()]).collect();
        Ok(Self { prefix, installments })
    }

    /// The payment id of payment `i`.
    pub fn id(&self, i: usize) -> String {
        format!("{}{i}", self.prefix)
    }
}

/// Fills the inbound topic with `messages` partial payments over `spread` new installments;
/// returns the prefix of their payment ids.
pub async fn fill_inbound(config: &Config, messages: u64, spread: i32) -> Result<String, BenchError> {
    paystream_common::kafka::ensure_topics(&config.kafka, Duration::from_secs(30)).await?;
    let payments = Payments::plan(config, messages, spread, "b").await?;
    let producer: FutureProducer = paystream_common::kafka::producer_config(&config.kafka, "bench-fill").create()?;
    // Signed as ingest signs them: the processor dead-letters a command without its MAC.
    let auth = CommandAuth::new(&config.kafka.command_keys);
    let mut sends = Vec::with_capacity(payments.installments.len());
    for (i, installment) in payments.installments.iter().enumerate() {
        let id = payments.id(i);
        let command = PaymentCommand {
            webhook_id: id.clone(),
            provider: "bench".into(),
            kind: CommandKind::Payment,
            rail: "pix".into(),
            payment_id: id,
            installment_id: Some(*installment),
            amount: Decimal::new(1, 2),
            currency: "BRL".into(),
            occurred_at_ms: 0,
            received_at_ms: 0,
        };
        let (key, value) = (installment.to_string(), encode(&command)?);
        let mac = auth.sign(key.as_bytes(), &value);
        sends.push((key, value, mac));
    }
    for chunk in sends.chunks(10_000) {
        let futures = chunk.iter().map(|(key, value, mac)| {
            let headers = OwnedHeaders::new_with_capacity(1)
                .insert(Header { key: command_auth::HEADER, value: mac.as_deref().map(str::as_bytes) });
            let record = FutureRecord::to(&config.kafka.inbound_topic).key(key).payload(value).headers(headers);
            producer.send(record, Duration::from_secs(30))
        });
        for r in futures::future::join_all(futures).await {
            r.map_err(|(e, _)| e)?;
        }
    }
    Ok(payments.prefix)
}
