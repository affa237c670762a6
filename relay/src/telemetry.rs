//! Every metric the relay emits, from one place, once per batch.

use std::time::Duration;

use paystream_common::telemetry::RETRY_LOG_INTERVAL;

/// A batch was published and deleted.
pub struct BatchPublished {
    /// Outbox rows in the batch.
    pub rows: usize,
    /// Events (records) in them.
    pub events: usize,
    /// Claim to commit.
    pub elapsed: Duration,
    /// Largest commit-to-ack delay in the batch.
    pub max_lag: Duration,
}

impl BatchPublished {
    /// Logs (debug) and records.
    pub fn emit(&self) {
        tracing::debug!(
            rows = self.rows,
            events = self.events,
            elapsed_ms = self.elapsed.as_millis() as u64,
            "outbox batch published"
        );
        metrics::counter!("paystream_relay_events_published_total").increment(self.events as u64);
        metrics::histogram!("paystream_relay_batch_duration_seconds").record(self.elapsed.as_secs_f64());
        metrics::histogram!("paystream_relay_commit_to_ack_seconds").record(self.max_lag.as_secs_f64());
    }
}

/// A batch failed to publish; its rows stay for the next attempt. Logged at most once per
/// `RETRY_LOG_INTERVAL`: with the broker down every worker fails as fast as it retries.
pub fn batch_failed(error: &dyn std::fmt::Display) {
    paystream_common::warn_limited!(RETRY_LOG_INTERVAL, %error, "outbox batch not published; will retry");
    metrics::counter!("paystream_relay_batch_failures_total").increment(1);
}

/// A lane held back for an unreadable row; its other rows wait, the other lanes go on. It is
/// retried every 5 s until repaired: logged at most once per `RETRY_LOG_INTERVAL` (the line
/// names one lane; `suppressed` counts the others' and the repeats).
pub fn lane_held(lane: i16, error: &dyn std::fmt::Display) {
    paystream_common::error_limited!(RETRY_LOG_INTERVAL, lane, %error, "outbox lane held back; repair or remove the row (paystream.outbox_events(frames) reads it)");
    metrics::counter!("paystream_relay_unreadable_rows_total").increment(1);
}

/// Lanes a worker of this relay owns (`worker` is bounded by `relay.workers`).
pub fn lanes_owned(worker: usize, n: usize) {
    metrics::gauge!("paystream_relay_lanes_owned", "worker" => worker.to_string()).set(n as f64);
}

/// The outbox backlog, sampled.
pub fn backlog(pending: i64, oldest_age_s: f64) {
    metrics::gauge!("paystream_relay_outbox_pending").set(pending as f64);
    metrics::gauge!("paystream_relay_outbox_oldest_age_seconds").set(oldest_age_s);
}

/// An event the broker refused for good was parked (`paystream.parked_events`).
pub fn event_parked(outbox_id: i64, event_id: &uuid::Uuid, error: &dyn std::fmt::Display) {
    tracing::error!(outbox_id, %event_id, %error, "event refused for good by the broker; parked in paystream.outbox_parked, its lane goes on");
    metrics::counter!("paystream_relay_events_parked_total").increment(1);
}

/// Describes every relay metric (HELP and unit on `/metrics`) and registers its counters at
/// 0: a series that first appears at 1 is no increase to Prometheus, so the first parked
/// event or held lane would not alert.
pub fn register() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    // Installs the recorder first: what is described before it goes nowhere.
    paystream_common::telemetry::metrics_handle();
    describe_counter!("paystream_relay_events_published_total", "Events published (their outbox rows deleted).");
    describe_histogram!("paystream_relay_batch_duration_seconds", Unit::Seconds, "A batch, taken to its last ack.");
    describe_histogram!(
        "paystream_relay_commit_to_ack_seconds",
        Unit::Seconds,
        "Oldest row's commit to its broker ack, per batch."
    );
    describe_counter!("paystream_relay_batch_failures_total", "Drain transactions rolled back (broker unavailable).");
    describe_counter!(
        "paystream_relay_unreadable_rows_total",
        "Drain transactions rolled back for an outbox row that cannot be read."
    );
    describe_gauge!("paystream_relay_lanes_owned", Unit::Count, "Outbox lanes a drain worker owns.");
    describe_gauge!("paystream_relay_outbox_pending", Unit::Count, "Events waiting in the outbox.");
    describe_gauge!(
        "paystream_relay_outbox_oldest_age_seconds",
        Unit::Seconds,
        "Age of the oldest waiting event, sampled by the relay."
    );
    describe_counter!("paystream_relay_events_parked_total", "Events the broker refused for good, parked.");
    for name in [
        "paystream_relay_events_published_total",
        "paystream_relay_batch_failures_total",
        "paystream_relay_unreadable_rows_total",
        "paystream_relay_events_parked_total",
    ] {
        metrics::counter!(name).increment(0);
    }
}
