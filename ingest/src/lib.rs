//! The paystream HTTP edge.
//!
//! `POST /webhooks/{provider}`: find the provider (404), check the content type (415) and
//! the announced size (413), refuse addresses that keep failing signatures (429), admit the
//! request within the bounds of requests and bytes in flight (or 503 with `Retry-After`, its
//! body unread), read the body within its deadline (408), verify the signature over the raw
//! bytes (401), count the provider's rate limit (429, verified webhooks only), normalise the
//! payload into `PaymentCommand`s, and produce them, each with its MAC header, keyed by
//! installment. A signed webhook that cannot be normalised is produced whole as an
//! `UnprocessableWebhook` record, which the processor keeps as a dead letter. The answer is
//! 202 only after the broker acknowledged every record (`acks=all`, idempotent producer): a
//! 2xx means durable. Dedupe is the processor's job, so a repeated webhook is accepted again.

pub mod admission;
pub mod error;
pub mod payload;
pub mod redaction;
pub mod server;
pub mod signature;
mod telemetry;

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Router};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use http_body_util::BodyExt as _;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::util::Timeout;
use tokio::net::TcpListener;

use paystream_common::command_auth::{self, CommandAuth};
use paystream_common::config::{Config, PayloadFormat};
use paystream_common::telemetry::{spawn_admin, Readiness};
use paystream_common::{kafka, now_ms, Shutdown};
use paystream_schemas::UnprocessableWebhook;

pub use error::{IngestError, StartError};

use crate::admission::{Admission, Forgeries};
use crate::payload::{Envelope, Normalised};
use crate::server::Peer;
use crate::signature::Verifier;

struct Provider {
    /// The name it is posted to (and its metrics label).
    name: String,
    /// The name its payments are recorded under.
    namespace: String,
    verifier: Verifier,
    format: PayloadFormat,
    /// Verified webhooks per second: forgeries cannot spend it.
    limiter: DefaultDirectRateLimiter,
    livemode: Option<bool>,
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
    body_read_timeout: Duration,
    admission: Admission,
    forgeries: Forgeries,
    auth: CommandAuth,
}

/// Runs ingest on the given listeners until `shutdown`; in-flight requests are drained and
/// the producer flushed before it returns.
pub async fn run(
    config: Config,
    listener: TcpListener,
    admin: TcpListener,
    shutdown: Shutdown,
) -> Result<(), StartError> {
    if config.kafka.command_keys.is_empty() {
        return Err(StartError::NoCommandKey);
    }
    let mut providers = HashMap::new();
    for (name, p) in config.provider_names() {
        let verifier = Verifier::new(p, config.ingest.timestamp_tolerance_s)
            .map_err(|e| StartError::Provider(name.to_owned(), e))?;
        let rate = NonZeroU32::new(p.rate_per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(p.burst).unwrap_or(NonZeroU32::MIN);
        let limiter = RateLimiter::direct(Quota::per_second(rate).allow_burst(burst));
        if config.ingest.allow_dev_secrets {
            tracing::warn!(provider = %name, "development secrets allowed (ingest.allow_dev_secrets): local stack only");
        }
        if p.body_only_signature {
            tracing::warn!(provider = %name, "signature over the body alone: a captured webhook verifies forever (its replays have no effect, but are not refused)");
        }
        let namespace = p.namespace.clone().unwrap_or_else(|| name.to_owned());
        providers.insert(
            name.to_owned(),
            Provider { name: name.to_owned(), namespace, verifier, format: p.format, limiter, livemode: p.livemode },
        );
    }
    if providers.is_empty() {
        tracing::warn!("no provider configured: every webhook will be answered 404");
    }
    kafka::ensure_and_check_topics(&config.kafka, Duration::from_secs(30)).await?;
    let producer_config = kafka::producer_config(&config.kafka, "paystream-ingest");
    let producer: FutureProducer = producer_config.create()?;

    let readiness = Readiness::default();
    spawn_admin(admin, readiness.clone(), shutdown.clone());
    telemetry::register(&providers.keys().map(String::as_str).collect::<Vec<_>>());
    spawn_readiness_probe(producer.clone(), config.kafka.inbound_topic.clone(), readiness, shutdown.clone());

    let ingest = &config.ingest;
    let app = Arc::new(App {
        providers,
        producer: std::sync::RwLock::new(producer.clone()),
        producer_config,
        producer_reset: std::sync::Mutex::new(Instant::now()),
        topic: config.kafka.inbound_topic.clone(),
        produce_timeout: Duration::from_millis(ingest.produce_timeout_ms),
        body_limit: ingest.body_limit_bytes,
        body_read_timeout: Duration::from_millis(ingest.body_read_timeout_ms),
        admission: Admission::new(
            ingest.max_in_flight,
            ingest.large_body_budget_bytes,
            Duration::from_millis(ingest.admission_wait_ms),
            ingest.body_limit_bytes,
        ),
        forgeries: Forgeries::new(ingest.unverified_rate_per_second),
        auth: CommandAuth::new(&config.kafka.command_keys),
    });
    let router = Router::new().route("/webhooks/{provider}", post(webhook)).with_state(app);
    tracing::info!(addr = %listener.local_addr()?, topic = %config.kafka.inbound_topic, "ingest listening");
    let limits = server::Limits {
        max_connections: ingest.max_connections,
        header_read_timeout: Duration::from_millis(ingest.header_read_timeout_ms),
        // A request in flight finishes within its body deadline and the produce timeout.
        shutdown_deadline: Duration::from_millis(ingest.body_read_timeout_ms + ingest.produce_timeout_ms),
    };
    server::serve(listener, router, limits, shutdown).await?;
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
                telemetry::ProducerReplaced.emit();
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
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let _in_flight = InFlight::new();
    let label = app.providers.get(&provider).map_or("unknown", |p| p.name.as_str());
    let result = accept(&app, &provider, peer.map(|Extension(p)| p), &headers, body).await;
    let (outcome, commands) = match &result {
        Ok(Accepted::Produced(n)) => ("accepted", *n),
        Ok(Accepted::Ignored(_)) => ("ignored", 0),
        Ok(Accepted::Held(_)) => ("unprocessable", 0),
        Err(e) => (e.outcome(), 0),
    };
    if let Err(IngestError::Signature(e)) = &result {
        telemetry::SignatureRefused { provider: label, reason: e.label() }.emit();
    }
    if let Ok(Accepted::Held(reason)) = &result {
        telemetry::WebhookHeld { provider: label, reason }.emit();
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
        // Durable, so the provider stops retrying; an operator takes it from the dead letters.
        Ok(Accepted::Held(reason)) => (
            StatusCode::ACCEPTED,
            axum::Json(serde_json::json!({
                "status": "held",
                "reason": format!("kept for review, not applied: {reason}"),
            })),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

enum Accepted {
    /// Commands produced and acknowledged.
    Produced(usize),
    /// A known event type paystream does not act on.
    Ignored(String),
    /// A signed webhook that cannot be normalised, produced whole (why, in words).
    Held(String),
}

/// The announced body size, when the request has a valid `Content-Length`.
fn content_length(headers: &HeaderMap) -> Option<usize> {
    headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok())
}

async fn accept(
    app: &App,
    provider: &str,
    peer: Option<Peer>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Accepted, IngestError> {
    // Everything that can be refused without the body is refused before it is read.
    let p = app.providers.get(provider).ok_or(IngestError::UnknownProvider)?;
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("application/json"));
    if !json {
        return Err(IngestError::UnsupportedMediaType);
    }
    let announced = content_length(headers);
    if announced.is_some_and(|n| n > app.body_limit) {
        return Err(IngestError::TooLarge(app.body_limit));
    }
    let address = peer.map(|Peer(addr)| addr.ip());
    if address.is_some_and(|ip| !app.forgeries.allowed(ip, Instant::now())) {
        return Err(IngestError::TooManyForgeries);
    }
    let _admitted = app.admission.admit(announced).await.map_err(|_| IngestError::Busy)?;
    let body = read_body(body, app.body_limit, app.body_read_timeout).await?;
    let received_at_ms = now_ms();
    let verified = match p.verifier.verify(headers, &body, received_at_ms / 1000) {
        Ok(verified) => verified,
        Err(error) => {
            if let Some(ip) = address {
                app.forgeries.failed(ip, Instant::now());
            }
            return Err(error.into());
        }
    };
    if let Err(not_until) = p.limiter.check() {
        let wait = not_until.wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default()));
        return Err(IngestError::RateLimited { retry_after_s: wait.as_secs() + 1 });
    }
    let envelope = Envelope {
        provider: &p.namespace,
        webhook_id: verified.webhook_id.as_deref(),
        received_at_ms,
        livemode: p.livemode,
    };
    let (records, accepted) = match payload::normalise(p.format, &body, envelope) {
        Ok(Normalised::Ignored(event_type)) => return Ok(Accepted::Ignored(event_type)),
        Ok(Normalised::Commands(commands)) => {
            let n = commands.len();
            let records = commands
                .iter()
                .map(|c| paystream_schemas::encode(c).map(|bytes| (c.key(), bytes)))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|error| {
                    tracing::error!(%error, "cannot encode a normalised command; this is a bug");
                    IngestError::Internal
                })?;
            (records, Accepted::Produced(n))
        }
        // Genuine (signed) but not a command: kept, never lost, without the personal data a
        // payer's fields carry (LGPD keeps it in `customer` only; see `redaction`).
        Err(problem) => {
            let body = redaction::redact(&body);
            let kept = UnprocessableWebhook {
                provider: p.namespace.clone(),
                webhook_id: verified.webhook_id.clone(),
                reason: format!("{problem}{}", body.note()),
                body: body.body,
                received_at_ms,
            };
            let bytes = paystream_schemas::encode(&kept).map_err(|error| {
                tracing::error!(%error, "cannot encode an unprocessable webhook; this is a bug");
                IngestError::Internal
            })?;
            (vec![(kept.key(), bytes)], Accepted::Held(problem.to_string()))
        }
    };
    produce(app, &records).await?;
    Ok(accepted)
}

/// Reads the body, at most `limit` bytes, within `deadline`.
async fn read_body(body: Body, limit: usize, deadline: Duration) -> Result<Bytes, IngestError> {
    match tokio::time::timeout(deadline, http_body_util::Limited::new(body, limit).collect()).await {
        Err(_) => Err(IngestError::BodyTimeout),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) if error.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            Err(IngestError::TooLarge(limit))
        }
        Ok(Err(_)) => Err(IngestError::BadBody),
    }
}

/// Produces `records` (key, value), each with its MAC, and waits for every ack.
async fn produce(app: &App, records: &[(String, Vec<u8>)]) -> Result<(), IngestError> {
    let macs: Vec<Option<String>> = records.iter().map(|(key, value)| app.auth.sign(key.as_bytes(), value)).collect();
    // `send` is lazy: join_all polls every send at once, so a Pix webhook's commands are
    // queued together and acknowledged in one round trip.
    let sent = Instant::now();
    let producer = app.current_producer();
    let sends = records.iter().zip(&macs).map(|((key, bytes), mac)| {
        let headers = OwnedHeaders::new_with_capacity(1)
            .insert(Header { key: command_auth::HEADER, value: mac.as_deref().map(str::as_bytes) });
        producer.send(
            FutureRecord::to(&app.topic).key(key).payload(bytes).headers(headers),
            Timeout::After(app.produce_timeout),
        )
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
    Ok(())
}
