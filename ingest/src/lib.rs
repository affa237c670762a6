//! The paystream HTTP edge.
//!
//! `POST /webhooks/{provider}`: rate-limit per provider, verify the signature over the raw
//! body, normalise the payload into `PaymentCommand`s, encode them in Avro and produce them
//! keyed by installment. The answer is 202 only after the broker acknowledged every command
//! (`acks=all`, idempotent producer): a 2xx means durable. Dedupe is the processor's job, so a
//! repeated webhook is accepted again.

pub mod error;
pub mod payload;
pub mod signature;
mod telemetry;

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::util::Timeout;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use paystream_common::config::{Config, PayloadFormat};
use paystream_common::telemetry::{spawn_admin, Readiness};
use paystream_common::{kafka, Shutdown};

pub use error::{IngestError, StartError};

use crate::payload::{Envelope, Normalised};
use crate::signature::Verifier;

struct Provider {
    name: String,
    verifier: Verifier,
    format: PayloadFormat,
    limiter: DefaultDirectRateLimiter,
}

struct App {
    providers: HashMap<String, Provider>,
    producer: std::sync::RwLock<FutureProducer>,
    producer_config: rdkafka::ClientConfig,
    /// When the producer was last replaced; replacements are at most one per
    /// `PRODUCER_RESET_INTERVAL`.
    producer_reset: std::sync::Mutex<Instant>,
    topic: String,
    produce_timeout: Duration,
    body_limit: usize,
    permits: Semaphore,
}

/// Runs ingest on the given listeners until `shutdown`; in-flight requests are drained and
/// the producer flushed before it returns.
pub async fn run(
    config: Config,
    listener: TcpListener,
    admin: TcpListener,
    shutdown: Shutdown,
) -> Result<(), StartError> {
    let mut providers = HashMap::new();
    for (name, p) in &config.providers {
        let verifier = Verifier::new(p, config.ingest.timestamp_tolerance_s)
            .map_err(|e| StartError::Provider(name.clone(), e.to_owned()))?;
        let rate = NonZeroU32::new(p.rate_per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(p.burst).unwrap_or(NonZeroU32::MIN);
        let limiter = RateLimiter::direct(Quota::per_second(rate).allow_burst(burst));
        if p.secrets.iter().any(|s| {
            s.expose().contains("dev_only")
                || s.expose().contains("dev-only")
                || s.expose().contains("cGF5c3RyZWFtLWRldi1vbmx5")
        }) {
            tracing::warn!(provider = %name, "provider uses a development-only secret; never expose this listener");
        }
        providers.insert(name.clone(), Provider { name: name.clone(), verifier, format: p.format, limiter });
    }
    kafka::ensure_topics(&config.kafka, Duration::from_secs(30)).await?;
    let producer_config = kafka::producer_config(&config.kafka, "paystream-ingest");
    let producer: FutureProducer = producer_config.create()?;

    let readiness = Readiness::default();
    spawn_admin(admin, readiness.clone(), shutdown.clone());
    spawn_readiness_probe(producer.clone(), config.kafka.inbound_topic.clone(), readiness, shutdown.clone());

    let app = Arc::new(App {
        providers,
        producer: std::sync::RwLock::new(producer.clone()),
        producer_config,
        producer_reset: std::sync::Mutex::new(Instant::now()),
        topic: config.kafka.inbound_topic.clone(),
        produce_timeout: Duration::from_millis(config.ingest.produce_timeout_ms),
        body_limit: config.ingest.body_limit_bytes,
        permits: Semaphore::new(config.ingest.max_in_flight),
    });
    let router = Router::new()
        .route("/webhooks/{provider}", post(webhook))
        .layer(DefaultBodyLimit::max(config.ingest.body_limit_bytes))
        .with_state(app);
    tracing::info!(addr = %listener.local_addr()?, topic = %config.kafka.inbound_topic, "ingest listening");
    axum::serve(listener, router).with_graceful_shutdown(async move { shutdown.cancelled().await }).await?;
    // Every 202 already waited for its ack; this only drains what answered 503 meanwhile.
    let _ = tokio::task::spawn_blocking(move || producer.flush(Timeout::After(Duration::from_secs(5)))).await;
    tracing::info!("ingest stopped");
    Ok(())
}

/// Replacements of a failing producer are at most this frequent.
const PRODUCER_RESET_INTERVAL: Duration = Duration::from_secs(2);

impl App {
    fn current_producer(&self) -> FutureProducer {
        self.producer.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Replaces the producer after a failed produce. An idempotent producer can stay wedged
    /// after its broker restarted without the producer-id state (every send then times out);
    /// a fresh one gets a new producer id. Requests still holding the old one finish with
    /// their own answer; a 503'd webhook that lands anyway is deduplicated downstream.
    fn reset_producer(&self) {
        let mut last = self.producer_reset.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if last.elapsed() < PRODUCER_RESET_INTERVAL {
            return;
        }
        *last = Instant::now();
        match self.producer_config.create::<FutureProducer>() {
            Ok(fresh) => {
                *self.producer.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = fresh;
                tracing::warn!("replaced the Kafka producer after a failed produce");
                metrics::counter!("paystream_ingest_producer_resets_total").increment(1);
            }
            Err(error) => tracing::error!(%error, "cannot create a Kafka producer"),
        }
    }
}

fn spawn_readiness_probe(producer: FutureProducer, topic: String, readiness: Readiness, shutdown: Shutdown) {
    tokio::spawn(async move {
        loop {
            let p = producer.clone();
            let t = topic.clone();
            let ok = tokio::task::spawn_blocking(move || {
                p.client().fetch_metadata(Some(&t), Duration::from_secs(2)).is_ok()
            })
            .await
            .unwrap_or(false);
            readiness.set(ok);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        }
    });
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

struct InFlight;
impl InFlight {
    fn new() -> Self {
        telemetry::in_flight(1.0);
        Self
    }
}
impl Drop for InFlight {
    fn drop(&mut self) {
        telemetry::in_flight(-1.0);
    }
}

async fn webhook(
    State(app): State<Arc<App>>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let _in_flight = InFlight::new();
    let label = app.providers.get(&provider).map_or("unknown", |p| p.name.as_str());
    let (result, commands) = match app.permits.acquire().await {
        Ok(_permit) => match accept(&app, &provider, &headers, body).await {
            Ok(Accepted::Produced(n)) => (Ok(Accepted::Produced(n)), n),
            other => (other, 0),
        },
        Err(_) => (Err(IngestError::BrokerUnavailable), 0),
    };
    let outcome = match &result {
        Ok(Accepted::Produced(_)) => "accepted",
        Ok(Accepted::Ignored(_)) => "ignored",
        Err(e) => e.outcome(),
    };
    if let Err(IngestError::Signature(e)) = &result {
        telemetry::SignatureRefused { provider: label, reason: e.label() }.emit();
    }
    telemetry::RequestCompleted { provider: label, outcome, commands, elapsed: started.elapsed() }.emit();
    match result {
        Ok(Accepted::Produced(n)) => {
            (StatusCode::ACCEPTED, axum::Json(serde_json::json!({ "status": "accepted", "commands": n }))).into_response()
        }
        Ok(Accepted::Ignored(event_type)) => (
            StatusCode::ACCEPTED,
            axum::Json(serde_json::json!({ "status": "ignored", "reason": format!("event type {event_type} is not acted on") })),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

enum Accepted {
    Produced(usize),
    Ignored(String),
}

async fn accept(
    app: &App,
    provider: &str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Accepted, IngestError> {
    let p = app.providers.get(provider).ok_or(IngestError::UnknownProvider)?;
    if let Err(not_until) = p.limiter.check() {
        let wait = not_until.wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default()));
        return Err(IngestError::RateLimited { retry_after_s: wait.as_secs() + 1 });
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("application/json"));
    if !json {
        return Err(IngestError::UnsupportedMediaType);
    }
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            IngestError::TooLarge(app.body_limit)
        } else {
            IngestError::BadBody
        }
    })?;
    let received_at_ms = now_ms();
    let verified = p.verifier.verify(headers, &body, received_at_ms / 1000)?;
    let envelope = Envelope { provider: &p.name, webhook_id: verified.webhook_id.as_deref(), received_at_ms };
    let commands = match payload::normalise(p.format, &body, envelope)? {
        Normalised::Ignored(event_type) => return Ok(Accepted::Ignored(event_type)),
        Normalised::Commands(commands) => commands,
    };
    let encoded = commands
        .iter()
        .map(|c| paystream_schemas::encode(c).map(|bytes| (c.key(), bytes)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| {
            tracing::error!(%error, "cannot encode a normalised command; this is a bug");
            IngestError::Internal
        })?;
    // `send` is lazy: join_all polls every send at once, so a Pix webhook's commands are
    // queued together and acknowledged in one round trip.
    let sent = Instant::now();
    let producer = app.current_producer();
    let sends = encoded.iter().map(|(key, bytes)| {
        producer.send(FutureRecord::to(&app.topic).key(key).payload(bytes), Timeout::After(app.produce_timeout))
    });
    let results = tokio::time::timeout(app.produce_timeout, futures::future::join_all(sends)).await;
    let ok = matches!(&results, Ok(r) if r.iter().all(Result::is_ok));
    telemetry::Produced { elapsed: sent.elapsed(), ok }.emit();
    if !ok {
        if let Ok(results) = &results {
            if let Some(Err((error, _))) = results.iter().find(|r| r.is_err()) {
                tracing::warn!(%error, "broker did not acknowledge; answering 503");
            }
        } else {
            tracing::warn!("broker did not acknowledge in time; answering 503");
        }
        app.reset_producer();
        return Err(IngestError::BrokerUnavailable);
    }
    Ok(Accepted::Produced(encoded.len()))
}
