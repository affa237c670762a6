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
