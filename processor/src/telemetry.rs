//! Every metric the processor emits, from one place, once per batch.

use std::time::Duration;

use crate::apply::Outcome;

/// A transaction committed.
pub struct BatchApplied<'a> {
    /// Partitions whose batches it held.
    pub partitions: usize,
    /// Messages in the transaction.
    pub size: usize,
    /// What it did.
    pub outcome: &'a Outcome,
    /// Time in the transaction, retries included.
    pub elapsed: Duration,
}

impl BatchApplied<'_> {
    /// Logs (debug) and records.
    pub fn emit(&self) {
        let o = self.outcome;
        tracing::debug!(
            partitions = self.partitions,
            size = self.size,
            applied = o.applied,
            duplicates = o.duplicates,
            elapsed_ms = self.elapsed.as_millis() as u64,
            "batch committed"
        );
        let count = |outcome: &'static str, n: u64| {
            if n > 0 {
                metrics::counter!("paystream_processor_messages_total", "outcome" => outcome).increment(n);
            }
        };
        count("applied", o.applied);
        count("rejected", o.rejected);
        count("reversed", o.reversed);
        count("held", o.held);
        count("duplicate", o.duplicates);
        count("dead_lettered", o.dead_lettered);
        count("skipped", o.skipped);
        metrics::counter!("paystream_processor_events_written_total").increment(o.events);
        metrics::histogram!("paystream_processor_batch_size").record(self.size as f64);
        metrics::histogram!("paystream_processor_batch_partitions").record(self.partitions as f64);
        metrics::histogram!("paystream_processor_batch_duration_seconds").record(self.elapsed.as_secs_f64());
    }
}

/// A batch failed and will be retried.
pub struct BatchRetried<'a> {
    /// Partition.
    pub partition: i32,
    /// The error.
    pub error: &'a dyn std::fmt::Display,
    /// Attempt number (1-based).
    pub attempt: u32,
}

impl BatchRetried<'_> {
    /// Logs (warn, at most once per `RETRY_LOG_INTERVAL`: a partition retries every few
    /// hundred milliseconds while the database is away) and counts every retry.
    pub fn emit(&self) {
        paystream_common::warn_limited!(
            paystream_common::telemetry::RETRY_LOG_INTERVAL,
            partition = self.partition,
            attempt = self.attempt,
            error = %self.error,
            "batch failed; retrying"
        );
        metrics::counter!("paystream_processor_batch_retries_total").increment(1);
    }
}

/// The group rebalanced.
pub fn rebalance(kind: &'static str, partitions: &[i32]) {
    // The partitions themselves, not only their count: which member held what, and when, is
    // what an operator reads back after a stalled or doubled partition.
    tracing::info!(kind, count = partitions.len(), ?partitions, "consumer group rebalance");
    metrics::counter!("paystream_processor_rebalances_total", "kind" => kind).increment(1);
}

/// Messages of `partition` behind this member's stored position (bounded label: partitions
/// are few). Assigned partitions only; a revoked one keeps its last value until reassigned.
pub fn lag(partition: i32, messages: i64) {
    metrics::gauge!("paystream_processor_lag_messages", "partition" => partition.to_string()).set(messages as f64);
}

/// Held reversals were applied after their payment was recorded.
pub struct HeldApplied<'a> {
    /// What the transaction did.
    pub outcome: &'a Outcome,
}

impl HeldApplied<'_> {
    /// Counts them.
    pub fn emit(&self) {
        let o = self.outcome;
        metrics::counter!("paystream_processor_messages_total", "outcome" => "held_applied").increment(o.reversed);
        if o.rejected > 0 {
            metrics::counter!("paystream_processor_messages_total", "outcome" => "rejected").increment(o.rejected);
        }
        metrics::counter!("paystream_processor_events_written_total").increment(o.events);
    }
}

/// Reversals held for a payment not recorded yet, and the age of the oldest (sampled every
/// sweep): a reversal held for long is a payment that never arrived.
pub fn pending_reversals(count: i64, oldest_age_seconds: f64) {
    metrics::gauge!("paystream_processor_pending_reversals").set(count as f64);
    metrics::gauge!("paystream_processor_pending_reversal_oldest_age_seconds").set(oldest_age_seconds);
}

/// A message was dead-lettered on its own (after its batch failed): counted with the batches'.
pub struct DeadLettered;

impl DeadLettered {
    /// Counts it (`Writes::dead_letter` logged it already).
    pub fn emit(&self) {
        metrics::counter!("paystream_processor_messages_total", "outcome" => "dead_lettered").increment(1);
    }
}

/// The age of the oldest outbox row, sampled by the processor. The relay samples the backlog
/// too, but from its drain loop: when the relay is down or stuck its gauge stops or vanishes,
/// which is when an operator needs the figure; the processor writes the outbox and sees it
/// grow whatever the relay does.
pub fn outbox_oldest(age_seconds: f64) {
    metrics::gauge!("paystream_processor_outbox_oldest_age_seconds").set(age_seconds);
}

/// Rows sitting in a monthly partitioned table's DEFAULT partition (a month that had no
/// partition when its rows came). `table` is one of the partitioned tables (four).
pub fn partition_default_rows(table: &str, rows: i64) {
    metrics::gauge!("paystream_processor_partition_default_rows", "table" => partition_label(table)).set(rows as f64);
}

/// The bounded `table` label of a partitioned table.
fn partition_label(table: &str) -> &'static str {
    match table {
        "audit_log" => "audit_log",
        "charge" => "charge",
        "transfer" => "transfer",
        _ => "other",
    }
}

/// How long a calendar's business date has gone without a finished accrual run (0 once
/// accrued). Calendars are currency codes, a handful; anything else is `other`, so a bad row
/// cannot grow the label set.
pub fn accrual_pending(calendar: &str, seconds: f64) {
    metrics::gauge!("paystream_processor_accrual_pending_seconds", "calendar" => calendar_label(calendar)).set(seconds);
}

/// The bounded `calendar` label: a currency code as is, anything else `other`.
fn calendar_label(calendar: &str) -> String {
    if calendar.len() == 3 && calendar.bytes().all(|b| b.is_ascii_uppercase()) {
        calendar.to_owned()
    } else {
        "other".to_owned()
    }
}

/// Outcome labels of `paystream_processor_messages_total`.
pub const OUTCOMES: &[&str] =
    &["applied", "rejected", "reversed", "held", "held_applied", "duplicate", "dead_lettered", "skipped"];

/// Describes every processor metric (HELP and unit on `/metrics`) and registers its counters
/// at 0: a series that first appears at 1 is no increase to Prometheus, so the first dead
/// letter would not alert.
pub fn register() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    // Installs the recorder first: what is described before it goes nowhere.
    paystream_common::telemetry::metrics_handle();
    describe_counter!("paystream_processor_messages_total", "Inbound messages by what became of them.");
    describe_counter!("paystream_processor_events_written_total", "Events written to the outbox.");
    describe_histogram!("paystream_processor_batch_size", Unit::Count, "Messages per transaction.");
    describe_histogram!("paystream_processor_batch_partitions", Unit::Count, "Partition batches per transaction.");
    describe_histogram!(
        "paystream_processor_batch_duration_seconds",
        Unit::Seconds,
        "Transaction time, retries included."
    );
    describe_counter!("paystream_processor_batch_retries_total", "Transient failures retried.");
    describe_counter!("paystream_processor_rebalances_total", "Consumer group rebalances, by kind.");
    describe_gauge!(
        "paystream_processor_lag_messages",
        Unit::Count,
        "Messages of a partition behind the stored position."
    );
    describe_gauge!(
        "paystream_processor_pending_reversals",
        Unit::Count,
        "Reversals held for a payment not recorded yet."
    );
    describe_gauge!(
        "paystream_processor_pending_reversal_oldest_age_seconds",
        Unit::Seconds,
        "Age of the oldest held reversal."
    );
    describe_gauge!(
        "paystream_processor_outbox_oldest_age_seconds",
        Unit::Seconds,
        "Age of the oldest outbox row not yet published, sampled by the processor."
    );
    describe_gauge!(
        "paystream_processor_partition_default_rows",
        Unit::Count,
        "Rows in a monthly partitioned table's DEFAULT partition, sampled by the processor."
    );
    describe_gauge!(
        "paystream_processor_accrual_pending_seconds",
        Unit::Seconds,
        "Time the calendar's business date has gone without a finished accrual run."
    );
    for outcome in OUTCOMES {
        metrics::counter!("paystream_processor_messages_total", "outcome" => *outcome).increment(0);
    }
    metrics::counter!("paystream_processor_events_written_total").increment(0);
    metrics::counter!("paystream_processor_batch_retries_total").increment(0);
    for kind in ["assign", "revoke"] {
        metrics::counter!("paystream_processor_rebalances_total", "kind" => kind).increment(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every table of `paystream.partition_default_rows` has its own label (the ledger's
    /// were once `other`, so an alert could not say which table), and labels stay bounded.
    #[test]
    fn labels_name_each_partitioned_table_and_stay_bounded() {
        for table in ["audit_log", "charge", "transfer"] {
            assert_eq!(partition_label(table), table);
        }
        assert_eq!(partition_label("anything else"), "other");
        assert_eq!(calendar_label("BRL"), "BRL");
        for odd in ["brl", "BRLX", "", "B-L", "ÇÃO"] {
            assert_eq!(calendar_label(odd), "other");
        }
    }
}
