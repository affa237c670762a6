//! Ingest errors and the HTTP answers they map to. Bodies say what is wrong without secrets
//! or internals; `Retry-After` goes with 429 and 503.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::admission::FORGERY_WINDOW_S;
use crate::payload::PayloadError;
use crate::signature::SignatureError;

/// Why a webhook was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// No provider of that name is configured.
    #[error("unknown provider")]
    UnknownProvider,
    /// The content type is not JSON.
    #[error("content type must be application/json")]
    UnsupportedMediaType,
    /// The body exceeds the configured limit.
    #[error("body larger than {0} bytes")]
    TooLarge(usize),
    /// The body could not be read.
    #[error("cannot read body")]
    BadBody,
    /// The body did not arrive within `ingest.body_read_timeout_ms`.
    #[error("body not received in time")]
    BodyTimeout,
    /// Ingest is at its bound of requests (or of large bodies) in flight: nothing was read.
    #[error("too many requests in flight; retry")]
    Busy,
    /// This client address failed too many signature checks lately; not checked.
    #[error("too many failed signatures from this address; retry later")]
    TooManyForgeries,
    /// Signature or timestamp refused.
    #[error("signature refused: {0}")]
    Signature(#[from] SignatureError),
    /// The payload is malformed.
    #[error("malformed payload: {0}")]
    Payload(#[from] PayloadError),
    /// The provider exceeded its rate.
    #[error("rate limited")]
    RateLimited {
        /// Seconds until a request would be admitted.
        retry_after_s: u64,
    },
    /// The broker did not acknowledge in time: nothing was accepted.
    #[error("broker unavailable")]
    BrokerUnavailable,
    /// An encoding bug: the command could not be encoded. Never the sender's fault.
    #[error("internal error")]
    Internal,
}

impl IngestError {
    /// The HTTP status of the error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::UnknownProvider => StatusCode::NOT_FOUND,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BadBody | Self::Payload(_) => StatusCode::BAD_REQUEST,
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::Signature(_) => StatusCode::UNAUTHORIZED,
            Self::RateLimited { .. } | Self::TooManyForgeries => StatusCode::TOO_MANY_REQUESTS,
            Self::BrokerUnavailable | Self::Busy => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A bounded label for metrics.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::UnknownProvider => "unknown_provider",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::TooLarge(_) => "too_large",
            Self::BadBody | Self::Payload(_) => "malformed",
            Self::BodyTimeout => "body_timeout",
            Self::Busy => "busy",
            Self::TooManyForgeries => "too_many_forgeries",
            Self::Signature(_) => "unauthorized",
            Self::RateLimited { .. } => "rate_limited",
            Self::BrokerUnavailable => "broker_unavailable",
            Self::Internal => "internal",
        }
    }
}

impl IntoResponse for IngestError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = serde_json::json!({ "error": self.outcome(), "reason": self.to_string() });
        let mut response = (status, axum::Json(body)).into_response();
        let retry_after = match &self {
            Self::RateLimited { retry_after_s } => Some((*retry_after_s).max(1)),
            Self::BrokerUnavailable | Self::Busy => Some(1),
            Self::TooManyForgeries => Some(FORGERY_WINDOW_S),
            _ => None,
        };
        if let Some(seconds) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

/// Why ingest could not start. Fatal.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A provider's configuration cannot be used.
    #[error("provider {0}: {1}")]
    Provider(String, String),
    /// `kafka.command_keys` is empty: the processor would refuse every record.
    #[error("kafka.command_keys is empty: set the key that authenticates inbound records (the processor's too)")]
    NoCommandKey,
    /// The Kafka client could not be created or the topics not ensured.
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// A listener failed.
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
}
