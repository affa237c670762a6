//! A run's results as data: what each part measured (`Report`), where and on what
//! (`Context`), and every target of the issue computed from them (`Target`), each figure
//! beside its peer. Written to JSON and read back to redraw a run.

use serde::{Deserialize, Serialize};

use super::edge::{median_by_p99, EdgeResult};
use super::figure::{ratio, Figure};
use super::peers::PeerRuns;
use super::scaling::ScalingPoint;
use crate::loadgen::Latency;

/// Everything, in one run. Parts not asked for are absent.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    /// Processor, uniform over many installments: batched, beside the same processor with one
    /// payment per transaction (the `baseline`).
    pub processor_uniform: Option<Figure>,
    /// Processor, hot over 10 installments: batched, beside one payment per transaction.
    pub processor_hot: Option<Figure>,
    /// Rows the batched uniform run wrote per payment (inserted and updated, as the database
    /// counted them). Absent in runs recorded before it was measured (6 was assumed).
    #[serde(default)]
    pub processor_rows_per_payment: Option<f64>,
    /// The seed design's function, uniform over the same number of installments, from 8 and
    /// 32 connections: the peer of every processor figure. Absent in runs recorded before it
    /// was measured.
    #[serde(default)]
    pub seed_uniform: Option<PeerRuns>,
    /// The seed design's function, hot over 10 installments.
    #[serde(default)]
    pub seed_hot: Option<PeerRuns>,
    /// Relay vs plain producer.
    pub relay: Option<Figure>,
    /// Open-loop rate of the relay latency run (half the relay's drain rate), events/s.
    pub relay_half_peak_rate: Option<f64>,
    /// Commit-to-Kafka latency at that rate: from an outbox row's commit to its record read
    /// back from the events topic.
    pub relay_latency_at_half_peak: Option<Latency>,
    /// Events/s the relay publishes while a writer commits them and a reader reads them back
    /// on the same machine (closed loop, bounded queue), and the commit-to-Kafka latency at
    /// half that rate (open loop). Absent in runs recorded before it was measured.
    #[serde(default)]
    pub relay_sustained: Option<(f64, Latency)>,
    /// Ingest and the whole pipelines, paystream's and the seed design's.
    pub edge: Option<EdgeResult>,
    /// Processor members and installments vs payments/s.
    pub scaling: Option<Vec<ScalingPoint>>,
    /// Accrual alone and beside the processor. Absent in runs recorded before it was
    /// measured.
    #[serde(default)]
    pub lifecycle: Option<super::lifecycle::LifecycleRun>,
}

impl Report {
    /// Takes the parts `self` lacks from `other` (runs of separate parts into one report).
    pub fn merge(&mut self, other: Report) {
        fn fill<T>(into: &mut Option<T>, from: Option<T>) {
            if into.is_none() {
                *into = from;
            }
        }
        fill(&mut self.processor_uniform, other.processor_uniform);
        fill(&mut self.processor_hot, other.processor_hot);
        fill(&mut self.processor_rows_per_payment, other.processor_rows_per_payment);
        fill(&mut self.seed_uniform, other.seed_uniform);
        fill(&mut self.seed_hot, other.seed_hot);
        fill(&mut self.relay, other.relay);
        fill(&mut self.relay_half_peak_rate, other.relay_half_peak_rate);
        fill(&mut self.relay_latency_at_half_peak, other.relay_latency_at_half_peak);
        fill(&mut self.relay_sustained, other.relay_sustained);
        fill(&mut self.edge, other.edge);
        fill(&mut self.scaling, other.scaling);
        fill(&mut self.lifecycle, other.lifecycle);
    }
}

/// Where and on what a run was measured, and the limits measured outside this process.
#[derive(Debug, Clone, Default, Serialize, Deserialize, clap::Args)]
pub struct Context {
    /// The run's UTC time, for the record.
    #[arg(long, default_value = "")]
    pub date: String,
    /// Commit measured.
    #[arg(long, default_value = "")]
    pub commit: String,
    /// Cores, memory, kernel.
    #[arg(long, default_value = "")]
    pub machine: String,
    /// Smaller sizes (a run of a few minutes, to check that everything works).
    #[arg(long)]
    pub quick: bool,
    /// pgbench: single-row INSERT commits/s at 32 clients, measured in the same run.
    #[arg(long = "pg-commits")]
    pub pg_commits_per_s: Option<f64>,
    /// pgbench: rows/s in 100-row INSERT transactions at 8 clients, measured in the same run.
    #[arg(long = "pg-rows")]
    pub pg_rows_per_s: Option<f64>,
    /// pgbench: payments/s of the processor's own rows (transfer, payment,
    /// installment update, outbox share) written 100 payments a transaction with none of the
    /// processor's reads, locks or logic (`benchmarks/sql/rows_limit.sql`), same run.
    #[serde(default)]
    #[arg(long = "pg-payment-rows")]
    pub pg_payment_rows_per_s: Option<f64>,
}

/// A run with its context, as written to JSON (and read back to redraw it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    /// Where and when.
    pub context: Context,
    /// What was measured.
    pub report: Report,
    /// The targets, computed from both (written for readers of the JSON; recomputed when a
    /// run is redrawn).
    #[serde(default)]
    pub targets: Vec<Target>,
}

/// One target of the issue: paystream's figure beside its peer's (or beside a bound).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Target {
    /// What is compared.
    pub measurement: String,
    /// paystream's figure; `None` when its part was not run.
    pub value: Option<f64>,
    /// Unit of `value` and `peer_value`.
    pub unit: String,
    /// What it is compared with.
    pub peer: String,
    /// The peer's figure, measured in the same run.
    pub peer_value: Option<f64>,
    /// `value / peer_value`, for targets stated as a ratio.
    pub ratio: Option<f64>,
    /// The target as the issue states it (`>= 10`, `< 50 ms`); empty for a figure reported
    /// beside its peer without one.
    pub target: String,
    /// Whether it is met; `None` when not measured or without a target.
    pub met: Option<bool>,
}

impl Target {
    /// `value / peer_value` against a floor.
    fn ratio_at_least(
        measurement: &str,
        value: Option<f64>,
        unit: &str,
        peer: &str,
        peer_value: Option<f64>,
        floor: Option<f64>,
    ) -> Self {
        let r = match (value, peer_value) {
            (Some(v), Some(p)) if p > 0.0 => Some(ratio(v, p)),
            _ => None,
        };
        Self {
            measurement: measurement.into(),
            value,
            unit: unit.into(),
            peer: peer.into(),
            peer_value,
            ratio: r,
            target: floor.map_or(String::new(), |f| format!(">= {f}")),
            met: floor.and_then(|f| r.map(|r| r >= f)),
        }
    }

    /// A value against a ceiling, beside a peer's value of the same measure.
    fn below(
        measurement: &str,
        value: Option<f64>,
        unit: &str,
        peer: &str,
        peer_value: Option<f64>,
        ceiling: f64,
    ) -> Self {
        Self {
            measurement: measurement.into(),
            value,
            unit: unit.into(),
            peer: peer.into(),
            peer_value,
            ratio: None,
            target: format!("< {ceiling} {unit}"),
            met: value.map(|v| v < ceiling),
        }
    }
}

const SEED: &str = "seed design: one PL/pgSQL call a payment, own transaction (best of 8, 32 connections)";

/// Every target of the issue, in its order, from what was measured (rows of parts not run
/// have no values).
pub fn targets(context: &Context, r: &Report) -> Vec<Target> {
    let uniform = r.processor_uniform.as_ref().map(|f| f.value);
    let hot = r.processor_hot.as_ref().map(|f| f.value);
    let seed_uniform = r.seed_uniform.as_ref().map(PeerRuns::rate).filter(|v| *v > 0.0);
    let seed_hot = r.seed_hot.as_ref().map(PeerRuns::rate).filter(|v| *v > 0.0);
    let single_uniform = r.processor_uniform.as_ref().map(|f| f.baseline);
    let single_hot = r.processor_hot.as_ref().map(|f| f.baseline);
    let edge = r.edge.as_ref();
    let seed_pipeline = edge.and_then(|e| e.seed_pipeline.as_ref());
    let scaled = |members: usize, factor: i32| {
        let points = r.scaling.as_ref()?;
        let base = points.first()?.installments;
        points.iter().find(|p| p.members == members && p.installments == base * factor)?.payments_per_s
    };
    let p99 = |l: Option<&Latency>| l.map(|l| l.p99_ms);
    let rss = |service: &str| edge.and_then(|e| e.peak_rss_mib.get(service).copied());
    let mut t = vec![
        Target::ratio_at_least("processor, uniform", uniform, "payments/s", SEED, seed_uniform, Some(10.0)),
        Target::ratio_at_least("processor, hot (10 installments)", hot, "payments/s", SEED, seed_hot, None),
        Target::ratio_at_least("processor, hot / uniform", hot, "payments/s", "processor, uniform", uniform, Some(0.5)),
        Target::ratio_at_least(
            "processor, uniform / the same rows written by PostgreSQL alone",
            uniform,
            "payments/s",
            "benchmarks/sql/rows_limit.sql (pgbench, 100 payments a transaction)",
            context.pg_payment_rows_per_s,
            Some(0.9),
        ),
        Target::ratio_at_least(
            "processor, one payment per transaction, uniform",
            single_uniform,
            "payments/s",
            SEED,
            seed_uniform,
            None,
        ),
        Target::ratio_at_least(
            "processor, one payment per transaction, hot",
            single_hot,
            "payments/s",
            SEED,
            seed_hot,
            None,
        ),
        Target::ratio_at_least(
            "whole pipeline sustained",
            edge.map(|e| e.pipeline_sustained),
            "payments/s",
            "seed design end to end (its handler and polling relay)",
            seed_pipeline.map(|s| s.sustained()),
            Some(3.0),
        ),
        Target::below(
            "end-to-end p99 at half the sustained rate",
            p99(edge.and_then(|e| e.e2e_latency_at_half_peak.as_ref())),
            "ms",
            "seed design end to end at half its rate",
            p99(seed_pipeline.and_then(|s| s.run.e2e_at_half.as_ref())),
            50.0,
        ),
        Target::below(
            "ingest HTTP p99 at half its peak",
            p99(edge.and_then(|e| e.ingest_alone_half_peak.as_ref().map(|(_, l)| l))),
            "ms",
            "bare server at the same rate",
            p99(edge.and_then(|e| median_by_p99(&e.bare_half_peak_turns))),
            10.0,
        ),
        Target::ratio_at_least(
            "ingest webhooks accepted",
            edge.map(|e| e.ingest.value),
            "req/s",
            "bare HTTP server answering 202",
            edge.map(|e| e.ingest.baseline),
            Some(0.5),
        ),
        Target::ratio_at_least(
            "relay events drained from the outbox",
            r.relay.as_ref().map(|f| f.value),
            "events/s",
            "plain producer, same records",
            r.relay.as_ref().map(|f| f.baseline),
            Some(0.7),
        ),
        Target::below(
            "relay commit-to-Kafka p99 at half its sustained rate",
            r.relay_sustained.as_ref().map(|(_, l)| l.p99_ms),
            "ms",
            "",
            None,
            50.0,
        ),
        Target::ratio_at_least("2 processor members", scaled(2, 1), "payments/s", "1 member", scaled(1, 1), Some(0.8)),
        Target::ratio_at_least("4 processor members", scaled(4, 1), "payments/s", "1 member", scaled(1, 1), Some(0.7)),
        Target::ratio_at_least(
            "100x the installments",
            scaled(1, 100),
            "payments/s",
            "the base installments",
            scaled(1, 1),
            Some(0.8),
        ),
    ];
    for service in ["ingest", "processor", "relay"] {
        t.push(Target::below(&format!("peak RSS under load, {service}"), rss(service), "MiB", "", None, 64.0));
    }
    let l = r.lifecycle.as_ref();
    t.push(Target::ratio_at_least(
        "accrual alone, installments charged (a tenth of the book overdue)",
        l.map(|l| l.accrual_alone_per_s),
        "items/s",
        "processor alone, payments applied",
        l.map(|l| l.processor_alone_per_s),
        Some(0.5),
    ));
    t.push(Target::ratio_at_least(
        "processor while accrual runs",
        l.map(|l| l.processor_during_per_s),
        "payments/s",
        "processor alone",
        l.map(|l| l.processor_alone_per_s),
        Some(0.7),
    ));
    t.push(Target::ratio_at_least(
        "accrual while the processor runs",
        l.map(|l| l.accrual_during_per_s),
        "installments/s",
        "accrual alone",
        l.map(|l| l.accrual_alone_per_s),
        None,
    ));
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::peers::PeerRun;

    /// The processor's target is a ratio of the seed design's best connection count, a part
    /// not run leaves its rows unmeasured, and a bound is met only below it.
    #[test]
    fn targets_compare_with_the_best_peer() {
        let run = |connections, payments_per_s| PeerRun { connections, payments_per_s, rows_per_payment: 6.0 };
        let report = Report {
            processor_uniform: Some(Figure::new("u", 60_000.0, "single", 1_500.0, "payments/s")),
            seed_uniform: Some(PeerRuns { runs: vec![run(8, 5_000.0), run(32, 6_000.0)] }),
            ..Report::default()
        };
        let t = targets(&Context::default(), &report);
        assert_eq!(t[0].ratio, Some(10.0));
        assert_eq!(t[0].met, Some(true));
        assert_eq!((t[4].ratio, t[4].met), (Some(0.25), None), "the second line has no target");
        let pipeline = t.iter().find(|t| t.measurement == "whole pipeline sustained").unwrap();
        assert_eq!((pipeline.value, pipeline.met), (None, None));
        let bound = Target::below("x", Some(50.0), "ms", "", None, 50.0);
        assert_eq!(bound.met, Some(false));
    }
}
