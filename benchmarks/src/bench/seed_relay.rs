//! The seed design's outbox relay (`paystream-bench seed-relay`), the seeds' shape: one
//! poller claims the oldest rows (`FOR UPDATE SKIP LOCKED`), publishes each row's record with
//! the relay's own producer (same settings, same headers), deletes the rows once every
//! record is acknowledged, and commits. It polls again at once after a batch and sleeps only
//! when the outbox is empty: the shortest wait a polling relay can have.

use std::time::Duration;

use tokio::net::TcpListener;
use uuid::Uuid;

use paystream_common::telemetry::{spawn_admin, Readiness};
use paystream_common::{Config, Shutdown};
use paystream_relay::{event_headers, Producer, Record};

use super::error::BenchError;
use super::services::db;

/// `paystream-bench seed-relay`: readiness on `relay.admin_listen`.
#[derive(Debug, Clone, clap::Args)]
pub struct SeedRelayArgs {
    /// Outbox rows claimed and published per transaction.
    #[arg(long, default_value_t = 500, env = "PAYSTREAM_BENCH_SEED_RELAY_BATCH")]
    pub batch: i64,
    /// Milliseconds to sleep after finding the outbox empty.
    #[arg(long, default_value_t = 10, env = "PAYSTREAM_BENCH_SEED_RELAY_POLL_MS")]
    pub poll_ms: u64,
}

/// A claimed outbox row: id, topic, key, event id, event type, payload.
type Claimed = (i64, String, String, Uuid, String, Vec<u8>);

/// Publishes the seed design's outbox until `shutdown`.
pub async fn run(
    config: Config,
    args: SeedRelayArgs,
    admin: TcpListener,
    shutdown: Shutdown,
) -> Result<(), BenchError> {
    paystream_common::kafka::ensure_topics(&config.kafka, Duration::from_secs(30)).await?;
    let producer = Producer::new(&config.kafka, "bench-seed-relay")?;
    let mut client = db(&config).await?;
    let claim = client.prepare(include_str!("../../sql/seed_outbox_claim_skip_locked.sql")).await?;
    let delete = client.prepare(include_str!("../../sql/seed_outbox_delete.sql")).await?;
    let readiness = Readiness::default();
    readiness.set(true);
    spawn_admin(admin, readiness, shutdown.clone());
    let poll = Duration::from_millis(args.poll_ms);
    while !shutdown.is_cancelled() {
        let tx = client.transaction().await?;
        let rows: Vec<Claimed> = tx
            .query(&claim, &[&args.batch])
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
            .collect();
        if rows.is_empty() {
            tx.commit().await?;
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(poll) => continue,
            }
        }
        let records = rows.iter().map(|(_, topic, key, event_id, event_type, payload)| Record {
            topic,
            key: key.as_bytes(),
            payload,
            headers: event_headers(event_id, event_type, payload),
            timestamp: None,
            event_id: *event_id,
        });
        producer.send_all(records.collect::<Vec<_>>()).await?;
        let ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
        tx.execute(&delete, &[&ids]).await?;
        tx.commit().await?;
    }
    Ok(())
}
