//! The paystream relay: publishes the transactional outbox to Kafka.
//!
//! Rows are spread over `OUTBOX_LANES` lanes by aggregate. A relay owns lanes through
//! session-level advisory locks on its one connection: a lane has at most one owner, so its
//! rows are published in id order by one producer, which keeps per-aggregate order with
//! several relays; when a relay dies its connection closes, its locks go, and another relay
//! takes the lanes over. Batches are taken (deleted, uncommitted), produced with
//! the idempotent producer, and committed only after every delivery report said Ok; while one
//! batch awaits its acks the next is taken, and a chain of batches shares one transaction.

mod drain;
mod producer;
mod telemetry;

use std::time::Duration;

use tokio::net::TcpListener;

use paystream_common::config::Config;
use paystream_common::telemetry::{spawn_admin, Readiness};
use paystream_common::{kafka, Shutdown};

pub use drain::{event_headers, RelayError};
pub use producer::{Producer, Record, Undelivered};

/// Runs the relay until `shutdown`. Connection losses are retried; configuration errors are
/// returned.
pub async fn run(config: Config, admin: TcpListener, shutdown: Shutdown) -> Result<(), RelayError> {
    kafka::ensure_topics(&config.kafka, Duration::from_secs(30)).await?;
    let readiness = Readiness::default();
    spawn_admin(admin, readiness.clone(), shutdown.clone());
    telemetry::register();
    // One producer for every worker: one connection to each broker, and the workers' records
    // batched into the same requests (measured: commit-to-Kafka p50 at 15,000 events/s fell
    // from about 35 to 21-26 ms against two producers). A lane's records still come from one
    // worker in order; a worker whose batch failed replaces the producer for itself only.
    let producer = Producer::new(&config.kafka, "paystream-relay")?;
    let workers: Vec<_> = (0..config.relay.workers)
        .map(|worker| {
            let (config, readiness, shutdown) = (config.clone(), readiness.clone(), shutdown.clone());
            let producer = producer.clone();
            tokio::spawn(async move { work(&config, worker, producer, &readiness, &shutdown).await })
        })
        .collect();
    let mut result = Ok(());
    for worker in workers {
        let outcome = match worker.await {
            Ok(outcome) => outcome,
            Err(panic) => {
                tracing::error!(%panic, "relay worker panicked");
                Ok(())
            }
        };
        if let Err(error) = outcome {
            // One worker cannot go on (configuration): stop the others too.
            shutdown.cancel();
            result = Err(error);
        }
    }
    tracing::info!("relay stopped");
    result
}

/// One drain loop, reconnecting after transient failures.
async fn work(
    config: &Config,
    worker: usize,
    mut producer: Producer,
    readiness: &Readiness,
    shutdown: &Shutdown,
) -> Result<(), RelayError> {
    let mut backoff = Duration::from_millis(100);
    loop {
        let result = drain::drain(config, worker, &mut producer, readiness, shutdown).await;
        readiness.set(false);
        match result {
            Ok(()) => return Ok(()),
            Err(error) if error.is_transient() => {
                tracing::warn!(%error, worker, ?backoff, "relay lost its connection; reconnecting");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(error) => return Err(error),
        }
    }
}
