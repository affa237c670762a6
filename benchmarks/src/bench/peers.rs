//! The seed systems' design, the baseline every processor figure is a ratio of: one PL/pgSQL
//! function per payment (`benchmarks/sql/seed_design.sql`, which says what it writes where and
//! why: dedupe, `FOR UPDATE`, the installment's update, the payment row, a balanced journal
//! and its postings, one outbox row per event), each call a transaction of its own, called
//! here from N connections as fast as they go. `seed_server` puts the same function behind the same HTTP contract and
//! `seed_relay` publishes its outbox, for the design end to end.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use paystream_common::Config;
use paystream_schemas::{PaymentEvent, Record as _};

use super::error::BenchError;
use super::processor::{rows_per_payment, rows_written, Payments};
use super::services::{db, unique};

/// The schema, its outbox and its functions (idempotent).
const SCHEMA: &str = include_str!("../../sql/seed_design.sql");

/// One payment through the function.
pub const APPLY: &str = include_str!("../../sql/seed_apply_payment.sql");

/// Creates (or updates) the seed design's schema in the run's database. Installs are
/// serialised: two `CREATE OR REPLACE FUNCTION`s of one function at once fail.
pub async fn install(client: &tokio_postgres::Client) -> Result<(), BenchError> {
    // The lock's key is arbitrary; only the seed design's installs take it.
    client.batch_execute(&format!("BEGIN; SELECT pg_advisory_xact_lock(5150022); {SCHEMA}; COMMIT")).await?;
    Ok(())
}

/// The first 10 bytes of every PaymentEvent record: the single-object marker and the
/// schema's fingerprint, which the function writes before each record's fields.
pub fn event_header() -> Vec<u8> {
    let mut header = vec![0xC3, 0x01];
    header.extend_from_slice(&PaymentEvent::schema().fingerprint.to_le_bytes());
    header
}

/// One run of the function from a number of connections.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerRun {
    /// Connections calling the function, each one payment at a time.
    pub connections: usize,
    /// Payments applied per second.
    pub payments_per_s: f64,
    /// Rows inserted and updated per payment, as the database counted them.
    pub rows_per_payment: f64,
}

/// The runs of one distribution of payments (uniform or hot), one per connection count.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PeerRuns {
    /// Each connection count's run.
    pub runs: Vec<PeerRun>,
}

impl PeerRuns {
    /// The best run: the seeds' figure is the better of 8 and 32 connections.
    pub fn best(&self) -> Option<&PeerRun> {
        self.runs.iter().max_by(|a, b| a.payments_per_s.total_cmp(&b.payments_per_s))
    }

    /// The best rate, 0 when nothing was measured.
    pub fn rate(&self) -> f64 {
        self.best().map_or(0.0, |r| r.payments_per_s)
    }
}

/// Payments/s of the seed design's function called once per payment, each call a
/// transaction of its own, from `connections` connections: `messages` partial payments of
/// 0.01 over `spread` fresh installments, as the processor runs pay them.
pub async fn seed_function(
    config: &Config,
    messages: u64,
    spread: i32,
    connections: usize,
) -> Result<PeerRun, BenchError> {
    let config = unique(config, "seed-function");
    let client = db(&config).await?;
    install(&client).await?;
    let payments = Arc::new(Payments::plan(&config, messages, spread, "s").await?);
    let header = Arc::new(event_header());
    // Every session connected and its statement prepared before the clock starts.
    let mut sessions = Vec::with_capacity(connections);
    for _ in 0..connections.max(1) {
        let session = db(&config).await?;
        let apply = session.prepare(APPLY).await?;
        sessions.push((session, apply));
    }
    let before = rows_written(&client).await?;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = sessions
        .into_iter()
        .map(|(session, apply)| {
            let (payments, header, next, topic) =
                (payments.clone(), header.clone(), next.clone(), config.kafka.events_topic.clone());
            tokio::spawn(async move {
                let amount = Decimal::new(1, 2);
                let mut applied = 0u64;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(installment) = payments.installments.get(i) else { break };
                    let row = session
                        .query_one(
                            &apply,
                            &[
                                &"bench",
                                &payments.id(i),
                                installment,
                                &"pix",
                                &amount,
                                &"BRL",
                                &SystemTime::now(),
                                &topic,
                                &header.as_slice(),
                            ],
                        )
                        .await?;
                    if row.get::<_, &str>(0) == "applied" {
                        applied += 1;
                    }
                }
                Ok::<u64, BenchError>(applied)
            })
        })
        .collect();
    let mut applied = 0;
    for worker in workers {
        applied += worker.await.map_err(|e| BenchError::Incomplete(format!("a session's task: {e}")))??;
    }
    let elapsed = started.elapsed();
    // The sessions are closed now (their tasks ended): their table counters are published.
    let rows = rows_per_payment(&client, before, messages).await?;
    client.batch_execute(include_str!("../../sql/seed_outbox_clear.sql")).await?;
    if applied != messages {
        return Err(BenchError::Incomplete(format!("{applied} of {messages} payments applied by the seed design")));
    }
    Ok(PeerRun { connections, payments_per_s: messages as f64 / elapsed.as_secs_f64(), rows_per_payment: rows })
}
