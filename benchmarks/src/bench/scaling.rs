//! Scaling: a 12-partition topic pre-filled with payments, applied by 1, 2 and 4 processor
//! processes in one consumer group, then by one process over 10x and 100x the installments.
//! On two cores no speed-up is expected from more members; a collapse is a defect.

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
    /// Payments applied per second; `None` if the group did not finish within the deadline.
    pub payments_per_s: Option<f64>,
    /// 99th percentile of the batch apply time (upper bucket bound, slowest member), ms.
    pub batch_p99_ms: Option<f64>,
}

/// Payments/s from a pre-filled 12-partition topic with 1, 2 and 4 processor processes in
/// one group, then with one member at 1x, 10x and 100x `base_installments`.
pub async fn scaling(
    config: &Config,
    binaries: &Binaries,
    messages: u64,
    base_installments: i32,
) -> Result<Vec<ScalingPoint>, BenchError> {
    let mut points = Vec::new();
    let runs = [(1, base_installments), (2, base_installments), (4, base_installments)]
        .into_iter()
        .chain([(1, base_installments * 10), (1, base_installments * 100)]);
    for (members, spread) in runs {
        eprintln!("[bench] scaling: {members} member(s), {spread} installments");
        let mut config = unique(config, "scaling");
        config.kafka.partitions = 12;
        fill_inbound(&config, messages, spread).await?;
        let client = db(&config).await?;
        let services =
            Services::start(&config, binaries, std::iter::repeat_n(Spec::from("processor"), members)).await?;
        let rate = wait_applied(&client, &config, messages).await?;
        let mut p99: Option<f64> = None;
        for admin in &services.admins {
            if let Some(ms) = batch_p99_ms(*admin).await {
                p99 = Some(p99.map_or(ms, |p: f64| p.max(ms)));
            }
        }
        services.stop();
        client.execute(include_str!("../../sql/bench_outbox_delete_topic.sql"), &[&config.kafka.events_topic]).await?;
        points.push(ScalingPoint { members, installments: spread, payments_per_s: rate, batch_p99_ms: p99 });
    }
    Ok(points)
}

/// The 99th percentile of `paystream_processor_batch_duration_seconds` from a member's
/// `/metrics`: the upper bound of the first bucket holding 99% of the batches.
async fn batch_p99_ms(admin: SocketAddr) -> Option<f64> {
    let text = reqwest::get(format!("http://{admin}/metrics")).await.ok()?.text().await.ok()?;
    let buckets: Vec<(f64, f64)> = text
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
