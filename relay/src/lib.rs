//! The paystream relay: publishes the transactional outbox to Kafka.
//!
//! Rows are spread over `OUTBOX_LANES` lanes by aggregate. A relay owns lanes through
//! session-level advisory locks on its one connection: a lane has at most one owner, so its
//! rows are published in id order by one producer, which keeps per-aggregate order with
//! several relays; when a relay dies its connection closes, its locks go, and another relay
//! takes the lanes over. Each batch is claimed, produced with the idempotent producer, and
//! deleted only after every delivery report said Ok, all in one transaction.

mod drain;
mod telemetry;

use std::time::Duration;

use tokio::net::TcpListener;

use paystream_common::config::Config;
use paystream_common::telemetry::{spawn_admin, Readiness};
use paystream_common::{kafka, Shutdown};

pub use drain::RelayError;

/// Runs the relay until `shutdown`. Connection losses are retried; configuration errors are
/// returned.
pub async fn run(config: Config, admin: TcpListener, shutdown: Shutdown) -> Result<(), RelayError> {
    kafka::ensure_topics(&config.kafka, Duration::from_secs(30)).await?;
    let mut producer: rdkafka::producer::FutureProducer =
        kafka::producer_config(&config.kafka, "paystream-relay").create()?;
    let readiness = Readiness::default();
    spawn_admin(admin, readiness.clone(), shutdown.clone());
    let mut backoff = Duration::from_millis(100);
    loop {
        let result = drain::drain(&config, &mut producer, &readiness, &shutdown).await;
        readiness.set(false);
        match result {
            Ok(()) => break,
            Err(error) if error.is_transient() => {
                tracing::warn!(%error, ?backoff, "relay lost its connection; reconnecting");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(error) => return Err(error),
        }
    }
    tracing::info!("relay stopped");
    Ok(())
}
