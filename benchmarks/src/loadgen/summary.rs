//! What a load-generator run measured, and how `paystream-bench loadgen` prints it.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Percentiles in milliseconds.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

impl Latency {
    /// The percentiles of a histogram of microseconds.
    pub fn from(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }

    /// `p50 1.0 ms, p90 2.0 ms, p99 3.0 ms, max 4.0 ms`.
    pub fn brief(&self) -> String {
        format!(
            "p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            self.p50_ms, self.p90_ms, self.p99_ms, self.max_ms
        )
    }
}

/// A histogram of microseconds, 1 µs to 1 h at 3 significant digits.
#[allow(clippy::expect_used)]
pub fn new_histogram() -> Histogram<u64> {
    // Constant, valid bounds: this cannot fail.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// What happened.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Summary {
    /// Requests sent (payments + duplicates + bad).
    pub requests: u64,
    /// Distinct payments sent.
    pub payments: u64,
    /// Duplicate deliveries sent.
    pub duplicates_sent: u64,
    /// Refund webhooks sent.
    pub refunds_sent: u64,
    /// Badly signed requests sent.
    pub bad_sent: u64,
    /// Answers by HTTP status.
    pub statuses: std::collections::BTreeMap<u16, u64>,
    /// Transport errors (no answer).
    pub transport_errors: u64,
    /// Seconds spent sending.
    pub elapsed_s: f64,
    /// Accepted (202) answers per second.
    pub accepted_per_s: f64,
    /// HTTP latency from intended send time to answer.
    pub http_latency: Latency,
    /// Open loop: how late the generator sent each request after its intended time (its
    /// own accuracy; the HTTP latency includes it).
    pub pacing_lag: Option<Latency>,
    /// Events read back, by type (this run's payments only).
    pub events: std::collections::BTreeMap<String, u64>,
    /// Distinct accepted payments with exactly one outcome event (applied or rejected).
    pub payments_with_one_outcome: u64,
    /// Distinct accepted payments with no outcome event before the timeout.
    pub payments_missing_outcome: u64,
    /// Distinct payments with more than one outcome event (would mean double application).
    pub payments_doubled: u64,
    /// End-to-end latency, webhook intended send time to the outcome event read back.
    pub e2e_latency: Option<Latency>,
    /// Seconds from the first send until the last outcome event was read back (with
    /// `follow_events`): the pipeline's sustained rate is `payments / outcomes_complete_s`.
    pub outcomes_complete_s: Option<f64>,
}

impl Summary {
    /// Whether events were followed and a payment had no outcome or two.
    pub fn failed(&self) -> bool {
        self.e2e_latency.is_some() && (self.payments_missing_outcome > 0 || self.payments_doubled > 0)
    }

    /// The summary as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|error| format!("{{\"error\": \"{error}\"}}"))
    }

    /// The summary as text, one line per aspect.
    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::from("load generator\n");
        let _ = writeln!(
            out,
            "  requests sent         {} ({} payments, {} duplicates, {} refunds, {} badly signed)",
            self.requests, self.payments, self.duplicates_sent, self.refunds_sent, self.bad_sent
        );
        let statuses: Vec<String> = self.statuses.iter().map(|(status, n)| format!("{status}: {n}")).collect();
        let errors = if self.transport_errors > 0 {
            format!(", transport errors: {}", self.transport_errors)
        } else {
            String::new()
        };
        let _ = writeln!(out, "  answers               {}{errors}", statuses.join(", "));
        let _ =
            writeln!(out, "  accepted rate         {:.0} webhooks/s over {:.2} s", self.accepted_per_s, self.elapsed_s);
        let http = &self.http_latency;
        let _ = writeln!(
            out,
            "  HTTP latency          p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms",
            http.p50_ms, http.p90_ms, http.p99_ms, http.p999_ms, http.max_ms
        );
        if let Some(lag) = &self.pacing_lag {
            let _ = writeln!(
                out,
                "  sent late by          p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms (the generator's own pacing, part of the HTTP latency)",
                lag.p50_ms, lag.p99_ms, lag.max_ms
            );
        }
        if let Some(e2e) = &self.e2e_latency {
            let events: Vec<String> = self.events.iter().map(|(kind, n)| format!("{kind}: {n}")).collect();
            let _ = writeln!(out, "  events consumed       {}", events.join(", "));
            let _ = writeln!(
                out,
                "  payments with exactly one outcome event: {}  missing: {}  doubled: {}",
                self.payments_with_one_outcome, self.payments_missing_outcome, self.payments_doubled
            );
            let _ = writeln!(
                out,
                "  end-to-end latency    p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
                e2e.p50_ms, e2e.p90_ms, e2e.p99_ms, e2e.max_ms
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Percentiles are read from the histogram in milliseconds, and a run with a payment
    /// that had no outcome counts as failed only when events were followed.
    #[test]
    fn percentiles_and_failure() {
        let mut h = new_histogram();
        for us in 1..=1000u64 {
            h.record(us * 1000).unwrap();
        }
        let l = Latency::from(&h);
        assert_eq!(l.count, 1000);
        assert!((l.p50_ms - 500.0).abs() < 1.0 && (l.p99_ms - 990.0).abs() < 1.0, "{l:?}");
        let mut s = Summary { payments_missing_outcome: 1, ..Summary::default() };
        assert!(!s.failed());
        s.e2e_latency = Some(l);
        assert!(s.failed());
        assert!(s.to_text().contains("missing: 1"));
    }
}
