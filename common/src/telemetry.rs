//! Tracing, the Prometheus recorder and the admin listener every service exposes:
//! `GET /metrics`, `GET /healthz` (the process is alive) and `GET /readyz` (its
//! dependencies answer).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

use crate::Shutdown;

/// Installs the tracing subscriber: `RUST_LOG` filter (default `info`), plain text or JSON
/// when `PAYSTREAM_LOG_FORMAT=json`. Safe to call more than once.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rdkafka=warn"));
    // Logs on stderr: stdout is for what a command prints as its result (the load
    // generator's summary, the bench's Markdown, the report), which scripts capture or drop.
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_writer(std::io::stderr);
    // An error only means a subscriber is already installed (tests start several services).
    let _ = builder.try_init();
}

/// The process-wide Prometheus recorder, installed on first use. Every service in the process
/// (tests run several) shares it; metric names carry the service.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
                .map(|b| b.build_recorder())
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            // Fails only if another recorder was installed first; then this handle renders an
            // empty page, which is visible, not silent data loss.
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
            }
            handle
        })
        .clone()
}

/// Whether a service's dependencies currently answer; shown on `/readyz`.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Marks the service ready or not.
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }
    /// Whether the service is ready.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
struct AdminState {
    handle: PrometheusHandle,
    readiness: Readiness,
}

/// Binds the admin listener. Separate from serving so that start-up fails early on a busy port.
pub async fn bind_admin(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves `/metrics`, `/healthz`, `/readyz` until `shutdown`.
pub async fn serve_admin(listener: TcpListener, readiness: Readiness, shutdown: Shutdown) -> std::io::Result<()> {
    let state = AdminState { handle: metrics_handle(), readiness };
    let app = Router::new()
        .route("/metrics", get(|State(s): State<AdminState>| async move { s.handle.render() }))
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(|State(s): State<AdminState>| async move {
                if s.readiness.get() {
                    (StatusCode::OK, "ready\n")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                }
            }),
        )
        .with_state(state);
    axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await }).await
}

/// Spawns the admin listener in the background; errors are logged where they happen.
pub fn spawn_admin(listener: TcpListener, readiness: Readiness, shutdown: Shutdown) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(error) = serve_admin(listener, readiness, shutdown).await {
            tracing::error!(%error, "admin listener failed; /metrics and health checks are down");
        }
    })
}
