//! Tracing, the Prometheus recorder and the admin listener every service exposes:
//! `GET /metrics`, `GET /healthz` (the process is alive) and `GET /readyz` (its
//! dependencies answer).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

use crate::Shutdown;

/// The variable that selects the log format: `json` for one JSON object per line, anything
/// else (or nothing) for plain text.
pub const LOG_FORMAT_VAR: &str = "PAYSTREAM_LOG_FORMAT";

/// Installs the tracing subscriber: `RUST_LOG` filter (default `info`), plain text, or JSON
/// when `PAYSTREAM_LOG_FORMAT=json` (one object per line: `timestamp`, `level`, `message`
/// and the event's fields at the top level, for log shippers). Safe to call more than once.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rdkafka=warn"));
    // Logs on stderr: stdout is for what a command prints as its result (the load
    // generator's summary, the bench's Markdown, the report), which scripts capture or drop.
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_writer(std::io::stderr);
    let format = std::env::var(LOG_FORMAT_VAR).unwrap_or_default();
    // An error only means a subscriber is already installed (tests start several services).
    let _ = if format.eq_ignore_ascii_case("json") {
        builder.json().flatten_event(true).with_current_span(false).with_span_list(false).try_init()
    } else {
        let installed = builder.try_init();
        if !format.is_empty() && !format.eq_ignore_ascii_case("text") {
            tracing::warn!(format, "unknown {LOG_FORMAT_VAR}; logging plain text (json or text)");
        }
        installed
    };
}

/// How often a retry loop's failure is logged at most (see [`LogLimiter`]).
pub const RETRY_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// At most one log line per interval from one call site, with the number of lines held back
/// since the last one: a retry loop that fails every few milliseconds (a broker down, a
/// database unreachable) says so once per interval instead of flooding the log. Use it
/// through [`warn_limited!`](crate::warn_limited) and [`error_limited!`](crate::error_limited),
/// which keep one limiter per call site.
#[derive(Debug)]
pub struct LogLimiter {
    interval: Duration,
    state: Mutex<LimiterState>,
}

#[derive(Debug)]
struct LimiterState {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    /// A limiter letting one line through per `interval`.
    pub const fn new(interval: Duration) -> Self {
        Self { interval, state: Mutex::new(LimiterState { last: None, suppressed: 0 }) }
    }

    /// `Some(held back)` when a line may be logged now, `None` when it must be held back.
    pub fn check(&self) -> Option<u64> {
        self.check_at(Instant::now())
    }

    fn check_at(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match state.last {
            Some(last) if now.saturating_duration_since(last) < self.interval => {
                state.suppressed += 1;
                None
            }
            _ => {
                state.last = Some(now);
                Some(std::mem::take(&mut state.suppressed))
            }
        }
    }
}

/// `tracing::warn!` at most once per `$interval` from this call site, with a `suppressed`
/// field counting the lines held back since the last one.
#[macro_export]
macro_rules! warn_limited {
    ($interval:expr, $($arg:tt)+) => {{
        static LIMITER: $crate::telemetry::LogLimiter = $crate::telemetry::LogLimiter::new($interval);
        if let Some(suppressed) = LIMITER.check() {
            $crate::__tracing::warn!(suppressed, $($arg)+);
        }
    }};
}

/// `tracing::error!` at most once per `$interval` from this call site, with a `suppressed`
/// field counting the lines held back since the last one.
#[macro_export]
macro_rules! error_limited {
    ($interval:expr, $($arg:tt)+) => {{
        static LIMITER: $crate::telemetry::LogLimiter = $crate::telemetry::LogLimiter::new($interval);
        if let Some(suppressed) = LIMITER.check() {
            $crate::__tracing::error!(suppressed, $($arg)+);
        }
    }};
}

/// Histogram buckets of durations (`*_seconds`): 0.5 ms to 10 s, what a webhook, a produce or
/// a transaction takes between healthy and broken.
pub const SECONDS_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Histogram buckets of every other histogram: counts (messages per transaction, partitions
/// per transaction), 1 to 5,000, so that a batch of 2,000 messages lands in a bucket of its
/// own instead of `+Inf` as it did under the seconds buckets.
pub const COUNT_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0];

/// The recorder's configuration: count buckets by default, seconds buckets for names ending
/// in `_seconds` (the naming rule of docs/metrics.md makes the unit part of the name).
fn recorder_builder() -> Result<PrometheusBuilder, metrics_exporter_prometheus::BuildError> {
    PrometheusBuilder::new()
        .set_buckets(COUNT_BUCKETS)?
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
}

/// The process-wide Prometheus recorder, installed on first use. Every service in the process
/// (tests run several) shares it; metric names carry the service.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = recorder_builder()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// One line passes per interval; the lines held back in between are counted and reported
    /// with the next line that passes, then the count starts again.
    #[test]
    fn log_limiter_lets_one_line_through_per_interval() {
        let limiter = LogLimiter::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(limiter.check_at(t0), Some(0));
        for ms in [1, 500, 9_999] {
            assert_eq!(limiter.check_at(t0 + Duration::from_millis(ms)), None);
        }
        assert_eq!(limiter.check_at(t0 + Duration::from_secs(10)), Some(3));
        assert_eq!(limiter.check_at(t0 + Duration::from_secs(11)), None);
        assert_eq!(limiter.check_at(t0 + Duration::from_secs(25)), Some(1));
        // Each call site has its own limiter: the macro expands to one static per site.
        for _ in 0..3 {
            crate::warn_limited!(Duration::from_secs(3600), "held back after the first");
        }
    }

    /// A `_seconds` histogram gets the seconds buckets and any other histogram the count
    /// buckets: a batch of 1,500 messages is counted below `le="2000"`, not only in `+Inf`.
    #[test]
    fn histograms_get_buckets_by_unit() {
        let handle = metrics_handle();
        metrics::histogram!("paystream_test_batch_size").record(1500.0);
        metrics::histogram!("paystream_test_wait_seconds").record(0.003);
        let text = handle.render();
        assert!(text.contains("paystream_test_batch_size_bucket{le=\"2000\"} 1"), "{text}");
        assert!(text.contains("paystream_test_batch_size_bucket{le=\"1000\"} 0"), "{text}");
        assert!(!text.contains("paystream_test_batch_size_bucket{le=\"0.0005\"}"), "{text}");
        assert!(text.contains("paystream_test_wait_seconds_bucket{le=\"0.005\"} 1"), "{text}");
        assert!(text.contains("paystream_test_wait_seconds_bucket{le=\"0.0025\"} 0"), "{text}");
    }
}
