//! Why a measurement could not be made. Every error ends the run: a figure measured on a
//! half-working setup would be compared with its peer as if it were whole.

use crate::loadgen::LoadgenError;

/// A benchmark step failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The load generator failed.
    #[error(transparent)]
    Load(#[from] LoadgenError),
    /// Database error.
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
    /// Kafka client error.
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The relay's producer did not get a record acknowledged.
    #[error("Kafka: {0}")]
    Undelivered(#[from] paystream_relay::Undelivered),
    /// HTTP client error (reading a service's `/metrics` or `/readyz`).
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    /// A record could not be encoded.
    #[error("Avro: {0}")]
    Schema(#[from] paystream_schemas::SchemaError),
    /// An operating-system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// A service process did not start or get ready.
    #[error("{service}: {problem}")]
    Service {
        /// The subcommand it runs.
        service: String,
        /// What went wrong.
        problem: String,
    },
    /// A lifecycle command (business date, accrual) failed.
    #[error("lifecycle: {0}")]
    Lifecycle(#[from] paystream_processor::lifecycle::LifecycleError),
    /// The database pool could not be built.
    #[error("database pool: {0}")]
    Pool(#[from] paystream_common::postgres::PostgresError),
    /// A run ended without doing all its work (payments not applied, events not delivered):
    /// its rate would measure something else.
    #[error("incomplete run: {0}")]
    Incomplete(String),
}

impl BenchError {
    /// An I/O error, with what was being done.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }
}
