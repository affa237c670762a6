//! The seed design's webhook handler (`paystream-bench seed-server`): ingest's HTTP contract
//! with the seeds' inside. It verifies the same signature and normalises the same payload
//! with ingest's own code, then calls the seed design's function once per payment, each call
//! a transaction of its own, and answers 202 after the commit. No broker between the edge and
//! the database: the seeds' shape. Its events leave through `seed_relay`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;

use paystream_common::config::PayloadFormat;
use paystream_common::telemetry::{spawn_admin, Readiness};
use paystream_common::{now_ms, Config, Shutdown};
use paystream_ingest::payload::{normalise, Envelope, Normalised};
use paystream_ingest::signature::Verifier;
use paystream_schemas::CommandKind;

use super::error::BenchError;
use super::peers::{event_header, install, APPLY};

/// `paystream-bench seed-server`: on `ingest.listen`, readiness on `ingest.admin_listen`.
#[derive(Debug, Clone, clap::Args)]
pub struct SeedServerArgs {
    /// Database connections the handler calls the function on (the seeds ran 8 to 32).
    #[arg(long, default_value_t = 16, env = "PAYSTREAM_BENCH_SEED_CONNECTIONS")]
    pub connections: usize,
}

/// A provider as the handler knows it.
struct Provider {
    namespace: String,
    verifier: Verifier,
    format: PayloadFormat,
    livemode: Option<bool>,
}

/// What every request shares.
struct App {
    providers: HashMap<String, Provider>,
    pool: deadpool_postgres::Pool,
    topic: String,
    header: Vec<u8>,
}

/// Serves webhooks until `shutdown`.
pub async fn serve(
    mut config: Config,
    args: SeedServerArgs,
    listener: TcpListener,
    admin: TcpListener,
    shutdown: Shutdown,
) -> Result<(), BenchError> {
    config.postgres.pool_size = args.connections.max(1);
    let setup = |problem: String| BenchError::Service { service: "seed-server".into(), problem };
    let pool = paystream_common::postgres::pool(&config.postgres).map_err(|e| setup(e.to_string()))?;
    {
        let client = pool.get().await.map_err(|e| setup(e.to_string()))?;
        install(&client).await?;
    }
    let mut providers = HashMap::new();
    for (name, p) in config.provider_names() {
        let verifier =
            Verifier::new(p, config.ingest.timestamp_tolerance_s).map_err(|e| setup(format!("{name}: {e}")))?;
        let namespace = p.namespace.clone().unwrap_or_else(|| name.to_owned());
        providers.insert(name.to_owned(), Provider { namespace, verifier, format: p.format, livemode: p.livemode });
    }
    let body_limit = config.ingest.body_limit_bytes;
    let app = Arc::new(App { providers, pool, topic: config.kafka.events_topic.clone(), header: event_header() });
    let readiness = Readiness::default();
    readiness.set(true);
    spawn_admin(admin, readiness, shutdown.clone());
    let router = axum::Router::new()
        .route("/webhooks/{provider}", axum::routing::post(webhook))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(app);
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .map_err(BenchError::io("serve webhooks"))
}

/// An answer with a JSON body saying why.
fn answer(status: StatusCode, text: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "status": text }))).into_response()
}

async fn webhook(
    State(app): State<Arc<App>>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(p) = app.providers.get(&provider) else { return answer(StatusCode::NOT_FOUND, "unknown provider") };
    let received_at_ms = now_ms();
    let verified = match p.verifier.verify(&headers, &body, received_at_ms / 1000) {
        Ok(verified) => verified,
        Err(error) => return answer(StatusCode::UNAUTHORIZED, &error.to_string()),
    };
    let envelope = Envelope {
        provider: &p.namespace,
        webhook_id: verified.webhook_id.as_deref(),
        received_at_ms,
        livemode: p.livemode,
    };
    let commands = match normalise(p.format, &body, envelope) {
        Ok(Normalised::Commands(commands)) => commands,
        Ok(Normalised::Ignored(_)) => return answer(StatusCode::ACCEPTED, "ignored"),
        Err(error) => return answer(StatusCode::BAD_REQUEST, &error.to_string()),
    };
    if commands.iter().any(|c| c.kind != CommandKind::Payment) {
        // The seeds' function applies payments; refunds and chargebacks are not measured.
        return answer(StatusCode::UNPROCESSABLE_ENTITY, "the seed design applies payments only");
    }
    let Ok(client) = app.pool.get().await else { return answer(StatusCode::SERVICE_UNAVAILABLE, "database") };
    let Ok(apply) = client.prepare_cached(APPLY).await else {
        return answer(StatusCode::SERVICE_UNAVAILABLE, "database");
    };
    for c in &commands {
        let occurred_at = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(c.occurred_at_ms.max(0) as u64);
        let applied = client
            .query_one(
                &apply,
                &[
                    &c.provider,
                    &c.payment_id,
                    &c.installment_id.unwrap_or_default(),
                    &c.rail,
                    &c.amount,
                    &c.currency,
                    &occurred_at,
                    &app.topic,
                    &app.header.as_slice(),
                ],
            )
            .await;
        if let Err(error) = applied {
            tracing::warn!(error = %paystream_common::postgres::describe(&error), "payment not applied");
            return answer(StatusCode::SERVICE_UNAVAILABLE, "database");
        }
    }
    answer(StatusCode::ACCEPTED, "accepted")
}
