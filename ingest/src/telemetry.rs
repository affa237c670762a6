//! Every metric ingest emits, from one place. Labels come from closed sets: configured
//! provider names (unknown ones become `unknown`) and the outcome enum.

use std::time::Duration;

/// A webhook request finished.
pub struct RequestCompleted<'a> {
    /// Configured provider name, or `unknown`.
    pub provider: &'a str,
    /// `accepted`, `ignored` or an error outcome.
    pub outcome: &'static str,
    /// Commands produced (0 unless accepted).
    pub commands: usize,
    /// Time from first byte to answer.
    pub elapsed: Duration,
}

impl RequestCompleted<'_> {
    /// Logs (debug) and counts the request.
    pub fn emit(&self) {
        tracing::debug!(provider = self.provider, outcome = self.outcome, commands = self.commands, "webhook handled");
        metrics::counter!("paystream_ingest_requests_total", "provider" => self.provider.to_owned(), "outcome" => self.outcome)
            .increment(1);
        if self.commands > 0 {
            metrics::counter!("paystream_ingest_commands_produced_total", "provider" => self.provider.to_owned())
                .increment(self.commands as u64);
        }
        metrics::histogram!("paystream_ingest_request_duration_seconds", "outcome" => self.outcome)
            .record(self.elapsed.as_secs_f64());
    }
}

/// A signature was refused.
pub struct SignatureRefused<'a> {
    /// Configured provider name.
    pub provider: &'a str,
    /// Bounded reason label.
    pub reason: &'static str,
}

impl SignatureRefused<'_> {
    /// Logs (info: senders get this wrong; it is theirs to fix) and counts.
    pub fn emit(&self) {
        tracing::info!(provider = self.provider, reason = self.reason, "webhook signature refused");
        metrics::counter!("paystream_ingest_signature_failures_total", "provider" => self.provider.to_owned(), "reason" => self.reason)
            .increment(1);
    }
}

/// The broker acknowledged (or failed) a produce.
pub struct Produced {
    /// Time from send to delivery report.
    pub elapsed: Duration,
    /// Whether the broker acknowledged.
    pub ok: bool,
}

impl Produced {
    /// Records the produce latency.
    pub fn emit(&self) {
        let result = if self.ok { "ok" } else { "error" };
        metrics::histogram!("paystream_ingest_produce_duration_seconds", "result" => result)
            .record(self.elapsed.as_secs_f64());
    }
}

/// Requests in flight, as a gauge.
pub fn in_flight(delta: f64) {
    metrics::gauge!("paystream_ingest_in_flight_requests").increment(delta);
}

/// A signed webhook that could not be normalised was kept whole (a dead letter to be).
pub struct WebhookHeld<'a> {
    /// Configured provider name.
    pub provider: &'a str,
    /// What could not be normalised.
    pub reason: &'a str,
}

impl WebhookHeld<'_> {
    /// Logs (warn: genuine money paystream could not apply) and counts.
    pub fn emit(&self) {
        tracing::warn!(
            provider = self.provider,
            reason = self.reason,
            "signed webhook kept whole: it cannot be normalised"
        );
        metrics::counter!("paystream_ingest_webhooks_held_total", "provider" => self.provider.to_owned()).increment(1);
    }
}

/// The Kafka producer was replaced after a failed produce (a wedged idempotent producer).
pub struct ProducerReplaced;

impl ProducerReplaced {
    /// Logs (warn) and counts.
    pub fn emit(&self) {
        tracing::warn!("replaced the Kafka producer after a failed produce");
        metrics::counter!("paystream_ingest_producer_resets_total").increment(1);
    }
}

/// Outcome labels of `paystream_ingest_requests_total`, as `IngestError::outcome` and the
/// accepted answers name them.
pub const OUTCOMES: &[&str] = &[
    "accepted",
    "ignored",
    "unprocessable",
    "unauthorized",
    "malformed",
    "too_large",
    "unsupported_media_type",
    "unknown_provider",
    "body_timeout",
    "busy",
    "too_many_forgeries",
    "rate_limited",
    "broker_unavailable",
    "internal",
];

/// Describes every ingest metric (HELP and unit on `/metrics`) and registers the counters
/// that alerts watch for any increase at 0, per configured provider: a series that first
/// appears at 1 is no increase to Prometheus, so the first held webhook would not alert.
pub fn register(providers: &[&str]) {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    // Installs the recorder first: what is described before it goes nowhere.
    paystream_common::telemetry::metrics_handle();
    describe_counter!("paystream_ingest_requests_total", "Webhooks answered, by provider and outcome.");
    describe_counter!("paystream_ingest_commands_produced_total", "Commands acknowledged by the broker.");
    describe_counter!("paystream_ingest_signature_failures_total", "Webhook signatures refused, by reason.");
    describe_counter!(
        "paystream_ingest_webhooks_held_total",
        "Signed webhooks that could not be normalised, kept whole for the dead letters."
    );
    describe_counter!("paystream_ingest_producer_resets_total", "Kafka producers replaced after a failed produce.");
    describe_histogram!(
        "paystream_ingest_request_duration_seconds",
        Unit::Seconds,
        "Webhook requests, first byte to answer."
    );
    describe_histogram!(
        "paystream_ingest_produce_duration_seconds",
        Unit::Seconds,
        "Produces, send to delivery report, by result."
    );
    describe_gauge!("paystream_ingest_in_flight_requests", "Webhook requests being handled.");
    metrics::counter!("paystream_ingest_producer_resets_total").increment(0);
    for provider in providers {
        metrics::counter!("paystream_ingest_webhooks_held_total", "provider" => provider.to_string()).increment(0);
        metrics::counter!("paystream_ingest_commands_produced_total", "provider" => provider.to_string()).increment(0);
        for outcome in OUTCOMES {
            metrics::counter!("paystream_ingest_requests_total", "provider" => provider.to_string(), "outcome" => *outcome)
                .increment(0);
        }
    }
    metrics::gauge!("paystream_ingest_in_flight_requests").increment(0.0);
}
