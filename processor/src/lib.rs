//! The paystream processor: a Kafka consumer-group member that applies payment commands to
//! PostgreSQL exactly once.
//!
//! Each partition is applied in order, in batches of up to `processor.batch_max` messages
//! per transaction; partitions run in parallel on a bounded pool. Inside a transaction:
//! dedupe on the provider's ids, `SELECT ... FOR UPDATE` on the installments, balanced
//! journals, the installment state, outbox rows, and the partition's stored position. The
//! effect and the position commit together, so whatever crashes, nothing is applied twice
//! and nothing is skipped. What cannot be applied becomes a dead letter, never a gap.

pub mod accrual;
pub mod apply;
mod backlog;
mod consumer;
pub mod credit;
pub mod error;
pub mod ledger;
pub mod lifecycle;
pub mod outbox;
pub mod pending;
pub mod renegotiation;
pub mod rules;
pub mod seed;
mod telemetry;
pub mod writes;

use std::time::Duration;

use tokio::net::TcpListener;

use paystream_common::config::{Config, DbPart};
use paystream_common::telemetry::{spawn_admin, Readiness};
use paystream_common::{kafka, postgres, Shutdown};

pub use error::{ApplyError, ProcessorError};

/// Runs the processor until `shutdown` or a fatal error.
pub async fn run(config: Config, admin: TcpListener, shutdown: Shutdown) -> Result<(), ProcessorError> {
    kafka::ensure_topics(&config.kafka, Duration::from_secs(30)).await?;
    let pool = pool(&config)?;
    let readiness = Readiness::default();
    spawn_admin(admin, readiness.clone(), shutdown.clone());
    telemetry::register();
    spawn_readiness_probe(pool.clone(), readiness, shutdown.clone());
    tokio::spawn(backlog::sample(pool.clone(), shutdown.clone()));
    let result = consumer::consume(&config, pool, shutdown).await;
    tracing::info!("processor stopped");
    result
}

/// The processor's connection pool: its login role, and its sessions' `plan_cache_mode`.
pub fn pool(config: &Config) -> Result<deadpool_postgres::Pool, postgres::PostgresError> {
    let mut database = config.postgres.as_part(DbPart::Processor);
    database.plan_cache_mode = Some(config.processor.plan_cache_mode);
    postgres::pool(&database)
}

fn spawn_readiness_probe(pool: deadpool_postgres::Pool, readiness: Readiness, shutdown: Shutdown) {
    tokio::spawn(async move {
        loop {
            let ok = match pool.get().await {
                Ok(client) => client.simple_query("SELECT 1").await.is_ok(),
                Err(_) => false,
            };
            readiness.set(ok);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        }
    });
}
