//! Scaling: a 12-partition topic pre-filled with payments, applied by 1, 2 and 4 processor
//! processes in one consumer group, then by one process over 10x and 100x the installments.
//! On two cores no speed-up is expected from more members; a collapse is a defect.
//!
//! One run lasts a few seconds, about as long as this machine's drift between runs, so the
//! member counts are measured in interleaved rounds (each round in a rotated order) and each
//! point is the median of its rounds. Every run first vacuums the tables its fresh
//! installments were written to: a million new rows otherwise start autovacuum during the
//! run, and the point would measure that instead of the table's size.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use paystream_common::Config;

use super::error::BenchError;
use super::processor::{fill_inbound, wait_applied};
use super::services::{db, unique, Binaries, Services, Spec};

/// One point of the scaling curve.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScalingPoint {
    /// Processor members (processes) in the group.
    pub members: usize,
    /// Installments the payments are spread over.
    pub installments: i32,
    /// Payments applied per second, the median of the rounds; `None` if a round did not
    /// finish within the deadline.
    pub payments_per_s: Option<f64>,
    /// Each round's payments/s, in the order they ran (`None`: did not finish).
    #[serde(default)]
    pub rounds: Vec<Option<f64>>,
    /// 99th percentile of the batch apply time (upper bucket bound, slowest member, slowest
    /// round), ms.
    pub batch_p99_ms: Option<f64>,
    /// Messages per transaction over all members and rounds.
    #[serde(default)]
    pub payments_per_transaction: Option<f64>,
}

/// The member counts measured against each other.
const MEMBERS: [usize; 3] = [1, 2, 4];

/// Payments/s from a pre-filled 12-partition topic with 1, 2 and 4 processor processes in
/// one group (`rounds` interleaved rounds), then with one member at 10x and 100x
/// `base_installments` (one run each: planning a million installments takes minutes).
pub async fn scaling(
    config: &Config,
    binaries: &Binaries,
    messages: u64,
    base_installments: i32,
    rounds: usize,
) -> Result<Vec<ScalingPoint>, BenchError> {
    // Keyed by (installments, members): the points come out in the report's order.
    let mut runs: BTreeMap<(i32, usize), Vec<Run>> = BTreeMap::new();
    for round in 0..rounds.max(1) {
        for i in 0..MEMBERS.len() {
            // Rotated so that no member count always runs first or last in a round.
            let members = MEMBERS[(round + i) % MEMBERS.len()];
            let r = run(config, binaries, messages, members, base_installments).await?;
            runs.entry((base_installments, members)).or_default().push(r);
        }
    }
    for spread in [base_installments * 10, base_installments * 100] {
        let r = run(config, binaries, messages, 1, spread).await?;
        runs.entry((spread, 1)).or_default().push(r);
    }
    let points = runs
        .into_iter()
        .map(|((installments, members), runs)| {
            let rounds: Vec<Option<f64>> = runs.iter().map(|r| r.payments_per_s).collect();
            let applied: f64 = runs.iter().map(|r| r.messages).sum();
            let transactions: f64 = runs.iter().map(|r| r.transactions).sum();
            ScalingPoint {
                members,
                installments,
                payments_per_s: median(&rounds),
                rounds,
                batch_p99_ms: runs.iter().fold(None, |p99, r| max(p99, r.batch_p99_ms)),
                payments_per_transaction: Some(applied / transactions).filter(|v| v.is_finite()),
            }
        })
        .collect();
    Ok(points)
}

/// What one run of a group measured.
struct Run {
    payments_per_s: Option<f64>,
    batch_p99_ms: Option<f64>,
    /// Messages and transactions over all members.
    messages: f64,
    transactions: f64,
}

/// `members` processor processes applying `messages` payments over `spread` fresh
/// installments from a new 12-partition topic.
async fn run(
    config: &Config,
    binaries: &Binaries,
    messages: u64,
    members: usize,
    spread: i32,
) -> Result<Run, BenchError> {
    eprintln!("[bench] scaling: {members} member(s), {spread} installments");
    let mut config = unique(config, "scaling");
    config.kafka.partitions = 12;
    fill_inbound(&config, messages, spread).await?;
    let client = db(&config).await?;
    client.batch_execute(include_str!("../../sql/bench_book_vacuum.sql")).await?;
    let services = Services::start(&config, binaries, std::iter::repeat_n(Spec::from("processor"), members)).await?;
    let payments_per_s = wait_applied(&client, &config, messages).await?;
    let mut run = Run { payments_per_s, batch_p99_ms: None, messages: 0.0, transactions: 0.0 };
    for admin in &services.admins {
        let Some(metrics) = metrics_text(*admin).await else { continue };
        run.batch_p99_ms = max(run.batch_p99_ms, batch_p99_ms(&metrics));
        run.messages += sample(&metrics, "paystream_processor_batch_size_sum").unwrap_or(0.0);
        run.transactions += sample(&metrics, "paystream_processor_batch_size_count").unwrap_or(0.0);
    }
    services.stop();
    client.execute(include_str!("../../sql/bench_outbox_delete_topic.sql"), &[&config.kafka.events_topic]).await?;
    Ok(run)
}

/// A member's `/metrics` text; `None` if it did not answer (the point then lacks its figures).
async fn metrics_text(admin: SocketAddr) -> Option<String> {
    reqwest::get(format!("http://{admin}/metrics")).await.ok()?.text().await.ok()
}

fn max(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// The median of the rounds; `None` if any round did not finish (a stall is not averaged
/// away).
fn median(rounds: &[Option<f64>]) -> Option<f64> {
    let mut rates: Vec<f64> = rounds.iter().copied().collect::<Option<_>>()?;
    if rates.is_empty() {
        return None;
    }
    rates.sort_by(f64::total_cmp);
    let mid = rates.len() / 2;
    Some(if rates.len() % 2 == 1 { rates[mid] } else { (rates[mid - 1] + rates[mid]) / 2.0 })
}

/// The 99th percentile of `paystream_processor_batch_duration_seconds` in a member's
/// `/metrics` text: the upper bound of the first bucket holding 99% of the batches.
fn batch_p99_ms(metrics: &str) -> Option<f64> {
    let buckets: Vec<(f64, f64)> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("paystream_processor_batch_duration_seconds_bucket{le=\""))
        .filter_map(|l| {
            let (le, count) = l.split_once("\"} ")?;
            Some((le.parse::<f64>().unwrap_or(f64::INFINITY), count.trim().parse::<f64>().ok()?))
        })
        .collect();
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    buckets.iter().find(|(_, c)| *c >= 0.99 * total).map(|(le, _)| le * 1000.0)
}

/// The value of an unlabelled sample `name` in a `/metrics` text.
fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_rounds_and_a_stall() {
        assert_eq!(median(&[Some(3.0), Some(1.0), Some(2.0)]), Some(2.0));
        assert_eq!(median(&[Some(4.0), Some(1.0)]), Some(2.5));
        assert_eq!(median(&[Some(4.0), None, Some(1.0)]), None);
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn reads_unlabelled_samples_and_the_batch_p99() {
        let text = "paystream_processor_batch_size_sum 5000\n\
                    paystream_processor_batch_size_count 10\n\
                    paystream_processor_batch_duration_seconds_bucket{le=\"0.1\"} 98\n\
                    paystream_processor_batch_duration_seconds_bucket{le=\"0.25\"} 100\n\
                    paystream_processor_batch_duration_seconds_bucket{le=\"+Inf\"} 100\n";
        assert_eq!(sample(text, "paystream_processor_batch_size_sum"), Some(5000.0));
        assert_eq!(sample(text, "paystream_processor_batch_size_count"), Some(10.0));
        assert_eq!(sample(text, "paystream_processor_batch_size"), None);
        assert_eq!(batch_p99_ms(text), Some(250.0));
    }
}
