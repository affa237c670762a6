//! Plumbing shared by the paystream services.
//!
//! Charter: what two or more of ingest, processor and relay need to start and talk to the
//! outside world: configuration loading and validation, tracing and the admin listener
//! (`/metrics`, `/healthz`, `/readyz`), Kafka client settings and topic creation, the
//! PostgreSQL pool with SQLSTATE classification, the migration runner, the shutdown signal,
//! the outbox row's frames (written by the processor, read by the relay), and the MAC of
//! inbound records (signed by ingest, checked by the processor). The configuration holds
//! every section, ingest's providers included: cross-section rules need them all. No payment
//! logic lives here.

pub mod command_auth;
pub mod config;
pub mod kafka;
pub mod outbox;
pub mod postgres;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;

pub use config::{Config, ConfigError, Secret};

pub use tokio_util::sync::CancellationToken as Shutdown;
/// For the log-limiting macros of [`telemetry`], so that their callers need no `tracing` path.
#[doc(hidden)]
pub use tracing as __tracing;

/// Number of outbox lanes. The processor assigns each outbox row the lane of its aggregate
/// and each lane is drained by at most one relay at a time, which is what keeps
/// per-aggregate order with several relays. Changing it reorders nothing already published
/// but must be done with every processor and relay stopped.
pub const OUTBOX_LANES: i16 = 32;

/// Events in one outbox row, at most: a transaction's events of one lane and topic share
/// rows (migration 4), so that the database handles one row for many events. The bound keeps
/// a relay batch (`relay.batch_rows` rows) within the producer's queue.
pub const OUTBOX_EVENTS_PER_ROW: usize = 128;

/// Bytes of events in one outbox row, at most (their frames, see [`outbox`]), unless one
/// event alone is larger: with the count, what bounds a relay batch's memory
/// (`relay.batch_rows` rows).
pub const OUTBOX_ROW_BYTES: usize = 65_536;

/// The outbox lane of an aggregate key: FNV-1a over its bytes, stable across processes and
/// releases (unlike `std`'s hasher), so processor and relay always agree.
pub fn outbox_lane(key: &str) -> i16 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in key.as_bytes() {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    // The modulus is positive and below i16::MAX, so the cast cannot truncate.
    (hash % OUTBOX_LANES as u32) as i16
}

/// Now, in milliseconds since the Unix epoch (0 before 1970: a clock that far off is a bigger
/// problem than this number).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Resolves when the process is asked to stop (Ctrl-C or SIGTERM), then cancels `shutdown`.
pub async fn cancel_on_signal(shutdown: Shutdown) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; Ctrl-C only");
                let _ = ctrl_c.await;
                shutdown.cancel();
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown requested");
    shutdown.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lanes are stable and within range: relay and processor must agree across releases.
    #[test]
    fn lane_is_stable_and_bounded() {
        assert_eq!(
            outbox_lane("3f1c1b7e-4c53-4a8e-9d5e-1f0a2b3c4d5e"),
            outbox_lane("3f1c1b7e-4c53-4a8e-9d5e-1f0a2b3c4d5e")
        );
        for i in 0..1000 {
            let lane = outbox_lane(&format!("key-{i}"));
            assert!((0..OUTBOX_LANES).contains(&lane));
        }
        // FNV-1a of the empty string is the offset basis.
        assert_eq!(outbox_lane(""), (0x811c_9dc5_u32 % OUTBOX_LANES as u32) as i16);
    }
}
