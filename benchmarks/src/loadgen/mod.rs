//! The load generator. See the crate documentation.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message as _;
use rust_decimal::prelude::ToPrimitive as _;
use rust_decimal::Decimal;
use serde::Serialize;
use tokio::sync::Semaphore;

use paystream_common::config::{Config, PayloadFormat, ProviderConfig, SignatureScheme};
use paystream_ingest::signature::sign;
use paystream_schemas::{decode, EventType, PaymentEvent};

/// Load generator errors: all fatal for the run.
#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    /// The named provider is not configured.
    #[error("provider {0} is not configured")]
    UnknownProvider(String),
    /// The provider's format is not one the generator writes.
    #[error("provider {0}: the load generator writes the paystream and pix formats only")]
    UnsupportedFormat(String),
    /// No open installments to pay (run `paystream seed`).
    #[error("no open installments in the database; run `paystream seed` first")]
    NoInstallments,
    /// Database error.
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
    /// Kafka error.
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// A benchmark step failed.
    #[error("benchmark: {0}")]
    Bench(String),
    /// HTTP client error.
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// What to send.
#[derive(Debug, Clone)]
pub struct Options {
    /// Ingest base URL, e.g. `http://127.0.0.1:8080`.
    pub target: String,
    /// Configured provider to sign as.
    pub provider: String,
    /// Distinct payments to send.
    pub count: u64,
    /// Requests per second (open loop); `None` = closed loop.
    pub rate: Option<f64>,
    /// Requests in flight at most.
    pub concurrency: usize,
    /// Share of requests that re-send an earlier webhook (0..1).
    pub duplicates: f64,
    /// Share of requests with a wrong signature (0..1).
    pub bad: f64,
    /// Share of payments refunded in full by a later webhook (0..1; paystream and stripe formats).
    pub refunds: f64,
    /// Follow the events topic and measure end-to-end latency.
    pub follow_events: bool,
    /// How long to wait for events after the last send.
    pub events_timeout: Duration,
    /// Show a progress bar.
    pub progress: bool,
    /// RNG seed, for repeatable mixes.
    pub seed: u64,
}

/// Percentiles in milliseconds.
#[derive(Debug, Clone, Serialize, serde::Deserialize, Default)]
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
    pub(crate) fn from(h: &Histogram<u64>) -> Self {
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

struct Planned {
    body: Vec<u8>,
    payment_id: String,
    webhook_id: String,
    /// The full refund of this payment, as its own webhook.
    refund: Option<(String, Vec<u8>)>,
}

/// Picks open installments and plans `count` payments over them: each installment gets a
/// share of the payments, and the last of its share pays what is left, so some installments
/// and contracts are paid in full.
async fn plan(config: &Config, opts: &Options, format: PayloadFormat) -> Result<Vec<Planned>, LoadgenError> {
    let (client, conn) = config.postgres.url.parse::<tokio_postgres::Config>()?.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    let limit = i64::try_from(opts.count).unwrap_or(i64::MAX);
    let rows = client
        .query(
            "SELECT id, amount_due - amount_paid, currency::text FROM paystream.installments \
             WHERE status IN ('open', 'partially_paid') ORDER BY contract_id, seq LIMIT $1",
            &[&limit],
        )
        .await?;
    if rows.is_empty() {
        return Err(LoadgenError::NoInstallments);
    }
    let run = format!("{:08x}", opts.seed as u32 ^ (now_ms() as u32));
    let installments = rows.len() as u64;
    let per = opts.count.div_ceil(installments).max(1);
    let mut planned = Vec::with_capacity(opts.count as usize);
    for i in 0..opts.count {
        let row = &rows[(i % installments) as usize];
        let id: uuid::Uuid = row.get(0);
        let remaining: Decimal = row.get(1);
        let currency: String = row.get(2);
        let round = i / installments; // 0..per
        let share = (remaining / Decimal::from(per)).round_dp_with_strategy(2, rust_decimal::RoundingStrategy::ToZero);
        let paid_before = share * Decimal::from(round);
        let amount = if round + 1 == per { remaining - paid_before } else { share };
        let amount = if amount <= Decimal::ZERO { Decimal::new(1, 2) } else { amount };
        let payment_id = format!("pay_{run}_{i}");
        let webhook_id = format!("msg_{run}_{i}");
        let created = time_rfc3339(now_ms());
        let (body, refund) = match format {
            PayloadFormat::Paystream => {
                let event = |kind: &str, event_id: String| {
                    serde_json::json!({
                        "id": event_id,
                        "type": kind,
                        "created_at": created,
                        "data": { "payment_id": payment_id, "installment_id": id.to_string(), "amount": amount.to_string(), "currency": currency.trim(), "rail": "pix" }
                    })
                };
                let refund =
                    serde_json::to_vec(&event("payment.refunded", format!("evt_{run}_{i}_r"))).unwrap_or_default();
                (event("payment.succeeded", format!("evt_{run}_{i}")), Some((format!("msg_{run}_{i}_r"), refund)))
            }
            PayloadFormat::Pix => (
                serde_json::json!({
                    "pix": [{ "endToEndId": payment_id, "txid": id.simple().to_string(), "valor": amount.to_string(), "horario": created }]
                }),
                None,
            ),
            PayloadFormat::Stripe => {
                // Stripe amounts are integers in minor units.
                let minor = (amount * Decimal::from(100)).trunc().to_i64().unwrap_or(1);
                let currency = currency.trim().to_lowercase();
                let refund = serde_json::json!({
                    "id": format!("evt_{run}_{i}_r"),
                    "type": "charge.refunded",
                    "created": now_ms() / 1000,
                    "data": { "object": { "id": format!("ch_{run}_{i}"), "object": "charge", "payment_intent": payment_id, "amount": minor, "amount_refunded": minor, "currency": currency, "metadata": { "installment_id": id.to_string() } } }
                });
                (
                    serde_json::json!({
                        "id": format!("evt_{run}_{i}"),
                        "type": "payment_intent.succeeded",
                        "created": now_ms() / 1000,
                        "data": { "object": { "id": payment_id, "object": "payment_intent", "amount": minor, "amount_received": minor, "currency": currency, "metadata": { "installment_id": id.to_string() } } }
                    }),
                    Some((format!("evt_{run}_{i}_r"), serde_json::to_vec(&refund).unwrap_or_default())),
                )
            }
        };
        planned.push(Planned { body: serde_json::to_vec(&body).unwrap_or_default(), payment_id, webhook_id, refund });
    }
    Ok(planned)
}

fn headers_for(p: &ProviderConfig, webhook_id: &str, body: &[u8], bad: bool) -> Vec<(&'static str, String)> {
    let now = now_ms() / 1000;
    let secret = p.secrets.first().map(|s| s.expose().to_owned()).unwrap_or_default();
    let secret = if bad { format!("{secret}-wrong") } else { secret };
    match p.scheme {
        SignatureScheme::StandardWebhooks => {
            let key = if bad { "whsec_d3Jvbmcta2V5".to_owned() } else { secret };
            sign::standard_webhooks(&key, webhook_id, now, body)
        }
        SignatureScheme::Stripe => vec![sign::stripe(&secret, now, body)],
        SignatureScheme::HmacSha256 => {
            let ts = p.timestamp_header.as_ref().map(|_| now);
            let mut h = vec![("x-signature", sign::hmac_sha256(&secret, ts, body))];
            if let Some(ts) = ts {
                h.push(("x-timestamp", ts.to_string()));
            }
            h
        }
    }
}

/// Runs the load and, when asked, follows the events.
pub async fn run(config: &Config, opts: Options) -> Result<Summary, LoadgenError> {
    let provider = config
        .providers
        .get(&opts.provider)
        .ok_or_else(|| LoadgenError::UnknownProvider(opts.provider.clone()))?
        .clone();
    if provider.scheme == SignatureScheme::HmacSha256 && provider.signature_header.as_deref() != Some("x-signature") {
        return Err(LoadgenError::UnsupportedFormat(opts.provider.clone()));
    }
    let planned = Arc::new(plan(config, &opts, provider.format).await?);
    let follower = if opts.follow_events { Some(Follower::start(config, &planned).await?) } else { None };

    let client = reqwest::Client::builder().pool_max_idle_per_host(opts.concurrency).tcp_nodelay(true).build()?;
    let url = format!("{}/webhooks/{}", opts.target.trim_end_matches('/'), opts.provider);
    let mut rng = SmallRng::seed_from_u64(opts.seed);
    // The send schedule: each planned payment once, duplicates and bad ones mixed in.
    let mut schedule: Vec<(usize, Kind)> = Vec::with_capacity(planned.len() * 2);
    let mut refunds: Vec<(usize, Kind)> = Vec::new();
    for i in 0..planned.len() {
        schedule.push((i, Kind::First));
        if rng.random_bool(opts.duplicates.clamp(0.0, 1.0)) {
            schedule.push((rng.random_range(0..=i), Kind::Duplicate));
        }
        if rng.random_bool(opts.bad.clamp(0.0, 1.0)) {
            schedule.push((i, Kind::Bad));
        }
        if planned[i].refund.is_some() && rng.random_bool(opts.refunds.clamp(0.0, 1.0)) {
            refunds.push((i, Kind::Refund));
        }
    }
    // Refunds go last, so that nearly all of them find their payment applied (one that
    // overtakes its payment is a rejection, which is also what a provider can cause).
    schedule.extend(refunds);
    let bar = if opts.progress { ProgressBar::new(schedule.len() as u64) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {per_sec} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let requests = Arc::new(Requests {
        client,
        url,
        planned: planned.clone(),
        provider,
        stats: Stats::default(),
        http_hist: Mutex::new(new_histogram()),
        first_sent: Mutex::new(HashMap::with_capacity(planned.len())),
    });
    let in_flight = u32::try_from(opts.concurrency.max(1)).unwrap_or(u32::MAX);
    let permits = Arc::new(Semaphore::new(in_flight as usize));
    let started = Instant::now();
    let mut pacing_lag = None;
    match opts.rate {
        Some(rate) if rate > 0.0 => {
            // An open loop is paced by a thread of its own. Paced by a task, each send waited
            // for the runtime's 1 ms timer tick and then for a worker busy with answers: the
            // generator itself added 0.7 ms at the median and 11-38 ms at p99.9 to what it
            // measured at 17,000 requests/s, on cores shared with ingest and the broker. A
            // sleeping thread is woken within microseconds of its deadline, and the kernel
            // runs a thread just woken ahead of busy ones.
            let (runtime, requests, permits, bar) =
                (tokio::runtime::Handle::current(), requests.clone(), permits.clone(), bar.clone());
            let due = std::mem::take(&mut schedule);
            let paced = tokio::task::spawn_blocking(move || {
                let mut lag = new_histogram();
                for (n, (index, kind)) in due.iter().copied().enumerate() {
                    let at = started + Duration::from_secs_f64(n as f64 / rate);
                    // Sends go out in slots of `PACING_SLOT`: a wake-up per request would cost
                    // the machine more than it gains in accuracy.
                    if let Some(wait) = at.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait.max(PACING_SLOT));
                    }
                    // Waiting for a permit is the server's doing (every one is in flight) and
                    // is counted in its latency: each request is timed from `at`.
                    let Ok(permit) = runtime.block_on(permits.clone().acquire_owned()) else { break };
                    let _ = lag.record(at.elapsed().as_micros() as u64);
                    runtime.spawn(requests.clone().send(index, kind, at, permit, bar.clone()));
                }
                (due, lag)
            });
            let (sent, lag) = paced.await.map_err(|e| LoadgenError::Bench(format!("pacing thread: {e}")))?;
            schedule = sent;
            pacing_lag = Some(Latency::from(&lag));
        }
        _ => {
            for (index, kind) in schedule.iter().copied() {
                let Ok(permit) = permits.clone().acquire_owned().await else { break };
                tokio::spawn(requests.clone().send(index, kind, Instant::now(), permit, bar.clone()));
            }
        }
    }
    // Every request holds its permit until answered: all of them back is all answered.
    let _all = permits.acquire_many(in_flight).await;
    let elapsed = started.elapsed();
    bar.finish_and_clear();

    let mut summary = Summary {
        requests: schedule.len() as u64,
        payments: planned.len() as u64,
        duplicates_sent: schedule.iter().filter(|(_, k)| *k == Kind::Duplicate).count() as u64,
        bad_sent: schedule.iter().filter(|(_, k)| *k == Kind::Bad).count() as u64,
        refunds_sent: schedule.iter().filter(|(_, k)| *k == Kind::Refund).count() as u64,
        statuses: requests.stats.statuses(),
        transport_errors: requests.stats.transport_errors.load(Ordering::Relaxed),
        elapsed_s: elapsed.as_secs_f64(),
        pacing_lag,
        ..Summary::default()
    };
    summary.accepted_per_s = summary.statuses.get(&202).copied().unwrap_or(0) as f64 / elapsed.as_secs_f64().max(1e-9);
    if let Ok(h) = requests.http_hist.lock() {
        summary.http_latency = Latency::from(&h);
    }
    if let Some(follower) = follower {
        let sent = requests.first_sent.lock().map(|f| f.clone()).unwrap_or_default();
        follower.finish(&planned, &sent, started, opts.events_timeout, &mut summary).await;
    }
    Ok(summary)
}

/// The open loop's pacing step: requests due within it are sent together.
const PACING_SLOT: Duration = Duration::from_micros(500);

/// What every request of a run shares, and where its answer is counted.
struct Requests {
    client: reqwest::Client,
    url: String,
    planned: Arc<Vec<Planned>>,
    provider: ProviderConfig,
    stats: Stats,
    http_hist: Mutex<Histogram<u64>>,
    /// By planned payment: when its first webhook was due, and whether a 202 accepted it.
    first_sent: Mutex<HashMap<usize, (Instant, bool)>>,
}

impl Requests {
    /// Sends one webhook due at `intended` and records its answer, timed from `intended`.
    async fn send(
        self: Arc<Self>,
        index: usize,
        kind: Kind,
        intended: Instant,
        permit: tokio::sync::OwnedSemaphorePermit,
        bar: ProgressBar,
    ) {
        let _permit = permit;
        let p = &self.planned[index];
        let (webhook_id, body) = match (&p.refund, kind) {
            (Some((id, body)), Kind::Refund) => (id, body),
            _ => (&p.webhook_id, &p.body),
        };
        let headers = headers_for(&self.provider, webhook_id, body, kind == Kind::Bad);
        let mut request = self.client.post(&self.url).header("content-type", "application/json").body(body.clone());
        for (k, v) in headers {
            request = request.header(k, v);
        }
        let response = request.send().await;
        let elapsed = intended.elapsed();
        if let Ok(mut h) = self.http_hist.lock() {
            let _ = h.record(elapsed.as_micros() as u64);
        }
        match response {
            Ok(r) => {
                let status = r.status().as_u16();
                self.stats.count(status);
                if kind == Kind::First {
                    if let Ok(mut f) = self.first_sent.lock() {
                        f.insert(index, (intended, status == 202));
                    }
                } else if kind == Kind::Duplicate && status == 202 {
                    if let Ok(mut f) = self.first_sent.lock() {
                        // A duplicate can be what got a payment accepted if the first failed.
                        f.entry(index).and_modify(|e| e.1 = true);
                    }
                }
            }
            Err(_) => {
                self.stats.transport_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        bar.inc(1);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    First,
    Duplicate,
    Bad,
    Refund,
}

#[derive(Default)]
struct Stats {
    by_status: Mutex<std::collections::BTreeMap<u16, u64>>,
    transport_errors: AtomicU64,
}

impl Stats {
    fn count(&self, status: u16) {
        if let Ok(mut m) = self.by_status.lock() {
            *m.entry(status).or_default() += 1;
        }
    }
    fn statuses(&self) -> std::collections::BTreeMap<u16, u64> {
        self.by_status.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

/// Events of this run's payments, by payment id, with when they were read.
type EventsSeen = Arc<Mutex<HashMap<String, Vec<(EventType, Instant)>>>>;

/// Reads the events topic in the background, keeping this run's events.
struct Follower {
    events: EventsSeen,
    stop: Arc<AtomicBool>,
}

impl Follower {
    async fn start(config: &Config, planned: &[Planned]) -> Result<Self, LoadgenError> {
        let group = format!("paystream-loadgen-{}", uuid::Uuid::new_v4().simple());
        let consumer: StreamConsumer =
            paystream_common::kafka::consumer_config(&config.kafka, &group, "paystream-loadgen")
                .set("enable.auto.commit", "false")
                .create()?;
        consumer.subscribe(&[&config.kafka.events_topic])?;
        let wanted: std::collections::HashSet<String> = planned.iter().map(|p| p.payment_id.clone()).collect();
        let events: EventsSeen = Arc::default();
        let stop: Arc<AtomicBool> = Arc::default();
        let (ev, st) = (events.clone(), stop.clone());
        tokio::spawn(async move {
            let mut seen_ids = std::collections::HashSet::new();
            while !st.load(Ordering::Relaxed) {
                let m = match tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await {
                    Ok(Ok(m)) => m,
                    _ => continue,
                };
                let Some(Ok(event)) = m.payload().map(decode::<PaymentEvent>) else {
                    continue;
                };
                // The broker may redeliver the tail of a batch; the event id says it is the same fact.
                if !wanted.contains(&event.payment_id) || !seen_ids.insert(event.event_id) {
                    continue;
                }
                if let Ok(mut e) = ev.lock() {
                    e.entry(event.payment_id).or_default().push((event.event_type, Instant::now()));
                }
            }
        });
        // Give the group time to get its assignment before the first webhook goes out.
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok(Self { events, stop })
    }

    async fn finish(
        self,
        planned: &[Planned],
        sent: &HashMap<usize, (Instant, bool)>,
        started: Instant,
        timeout: Duration,
        summary: &mut Summary,
    ) {
        let accepted: Vec<usize> = sent.iter().filter(|(_, (_, ok))| *ok).map(|(i, _)| *i).collect();
        let outcome = |types: &[(EventType, Instant)]| {
            types.iter().filter(|(t, _)| matches!(t, EventType::PaymentApplied | EventType::PaymentRejected)).count()
        };
        let deadline = Instant::now() + timeout;
        loop {
            let done = self
                .events
                .lock()
                .map(|e| accepted.iter().all(|i| e.get(&planned[*i].payment_id).is_some_and(|v| outcome(v) >= 1)))
                .unwrap_or(false);
            if done || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // A short grace period: a doubled application would show up as a second outcome.
        tokio::time::sleep(Duration::from_millis(500)).await;
        self.stop.store(true, Ordering::Relaxed);
        let events = self.events.lock().map(|e| e.clone()).unwrap_or_default();
        let mut e2e = new_histogram();
        let mut last_outcome = started;
        for i in &accepted {
            let p = &planned[*i];
            match events.get(&p.payment_id) {
                Some(v) => {
                    match outcome(v) {
                        0 => summary.payments_missing_outcome += 1,
                        1 => summary.payments_with_one_outcome += 1,
                        _ => summary.payments_doubled += 1,
                    }
                    if let (Some((_, at)), Some((intended, _))) = (
                        v.iter().find(|(t, _)| matches!(t, EventType::PaymentApplied | EventType::PaymentRejected)),
                        sent.get(i),
                    ) {
                        let _ = e2e.record(at.saturating_duration_since(*intended).as_micros() as u64);
                        last_outcome = last_outcome.max(*at);
                    }
                }
                None => summary.payments_missing_outcome += 1,
            }
        }
        for v in events.values() {
            for (t, _) in v {
                *summary.events.entry(t.as_str().to_owned()).or_default() += 1;
            }
        }
        summary.e2e_latency = Some(Latency::from(&e2e));
        summary.outcomes_complete_s = Some(last_outcome.saturating_duration_since(started).as_secs_f64());
    }
}

#[allow(clippy::expect_used)]
pub(crate) fn new_histogram() -> Histogram<u64> {
    // Microseconds, 1 µs to 1 h at 3 significant digits: constant, valid bounds.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn time_rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, (rem / 60) % 60, rem % 60, ms.rem_euclid(1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The RFC 3339 formatter agrees with known instants.
    #[test]
    fn rfc3339() {
        assert_eq!(time_rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(time_rfc3339(1_767_323_045_123), "2026-01-02T03:04:05.123Z");
        assert_eq!(time_rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
