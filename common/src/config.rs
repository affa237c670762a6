//! Configuration: embedded defaults (`config/default.toml`), then an optional TOML file,
//! then `PAYSTREAM_*` environment variables (`PAYSTREAM_KAFKA__BROKERS` sets
//! `kafka.brokers`). Validated at start-up with every problem listed at once. Secrets never
//! print: they show as `[redacted]`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

use figment::providers::{Env, Format as _, Toml};
use figment::Figment;
use serde::Deserialize;

/// The defaults, aimed at the local stack so that a service starts with no configuration.
pub const DEFAULTS: &str = include_str!("../../config/default.toml");

/// A configuration error: fatal, the service does not start.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The sources could not be read or do not have the expected shape.
    #[error("cannot load configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    /// The values were read but some are not acceptable; every problem is listed.
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

/// A secret value (signing key, password). Prints as `[redacted]`.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The whole configuration; each service reads its own section plus `kafka` and `postgres`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Broker and topics.
    pub kafka: KafkaConfig,
    /// Database connection and pool.
    pub postgres: PostgresConfig,
    /// The HTTP edge.
    pub ingest: IngestConfig,
    /// The consumer group that applies payments.
    pub processor: ProcessorConfig,
    /// The outbox relay.
    pub relay: RelayConfig,
    /// Configured providers by the name used in `POST /webhooks/{provider}`.
    pub providers: BTreeMap<String, ProviderConfig>,
}

/// Kafka settings shared by every client.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma separated.
    pub brokers: String,
    /// Normalised payment commands from ingest.
    pub inbound_topic: String,
    /// Facts published by the relay.
    pub events_topic: String,
    /// What the processor could not apply.
    pub deadletter_topic: String,
    /// Partitions for topics the product creates.
    pub partitions: i32,
    /// Replication factor for topics the product creates.
    pub replication_factor: i32,
    /// Upper bound on a produce, queueing and retries included (`message.timeout.ms`).
    pub message_timeout_ms: u64,
    /// How long a producer waits to fill a batch (`linger.ms`).
    pub linger_ms: u64,
    /// How long the broker may hold a consumer's fetch while it has nothing new
    /// (`fetch.wait.max.ms`). Apache Kafka answers as soon as a record arrives, so this only
    /// bounds idle fetches there (100-500 is usual); the local Kafka-protocol broker holds
    /// every fetch for the whole wait, so there it is a floor on every consumer's latency.
    pub fetch_wait_max_ms: u64,
}

/// PostgreSQL connection and pool settings.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// Connection URL (`postgres://user:password@host:port/db`); its password is a secret.
    pub url: String,
    /// Connections in the pool, at most.
    pub pool_size: usize,
    /// Upper bound on opening one connection.
    pub connect_timeout_ms: u64,
    /// Upper bound on waiting for a free pooled connection.
    pub pool_wait_timeout_ms: u64,
    /// Upper bound on one statement (`statement_timeout`).
    pub statement_timeout_ms: u64,
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // tokio-postgres redacts the password in its own Debug output.
        let parsed = self.url.parse::<tokio_postgres::Config>();
        f.debug_struct("PostgresConfig")
            .field("url", &parsed.as_ref().map(|_| "[parsed]").unwrap_or("[unparseable]"))
            .field("connection", &parsed.ok())
            .field("pool_size", &self.pool_size)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("pool_wait_timeout_ms", &self.pool_wait_timeout_ms)
            .field("statement_timeout_ms", &self.statement_timeout_ms)
            .finish()
    }
}

/// The HTTP edge.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// Webhook listener.
    pub listen: SocketAddr,
    /// Admin listener (`/metrics`, `/healthz`, `/readyz`).
    pub admin_listen: SocketAddr,
    /// Largest accepted body; larger ones get 413.
    pub body_limit_bytes: usize,
    /// How far a signed timestamp may be from now, either way, before 401.
    pub timestamp_tolerance_s: u64,
    /// Upper bound on waiting for the broker's ack before answering 503.
    pub produce_timeout_ms: u64,
    /// Requests handled at once; more wait in the accept queue.
    pub max_in_flight: usize,
}

/// The consumer group that applies payments.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessorConfig {
    /// Admin listener (`/metrics`, `/healthz`, `/readyz`).
    pub admin_listen: SocketAddr,
    /// Kafka consumer group id; also the key of the stored positions.
    pub group_id: String,
    /// Messages of one partition applied in one transaction, at most.
    pub batch_max: usize,
    /// Messages received from Kafka and not yet committed, all partitions together. One
    /// bound for all, not one per partition: the consumer receives long runs of a single
    /// partition, and a full per-partition queue would stall every other partition behind it.
    pub queued_max: usize,
    /// Transactions in flight at once. Partition batches waiting while they are busy are
    /// merged into the next one (group commit across partitions), so under load the number
    /// of commits stays flat and the batches grow instead.
    pub transactions: usize,
    /// Messages in one transaction, at most, counted in whole partition batches: a
    /// transaction stops taking batches once it holds this many.
    pub transaction_max: usize,
    /// Longest pause between retries of a batch that failed for a transient reason.
    pub retry_backoff_max_ms: u64,
    /// Start newly assigned partitions at the position stored in PostgreSQL (at the
    /// beginning of the log where none is stored) instead of the committed offset: saves
    /// re-reading after a crash, and applies what a database restored behind the group's
    /// committed offsets is missing (without it, the processor stops at such a gap). Off by
    /// default: the local Kafka-protocol broker stalls on assignments with explicit offsets.
    pub seek_to_stored_position: bool,
}

/// The outbox relay.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayConfig {
    /// Admin listener (`/metrics`, `/healthz`, `/readyz`).
    pub admin_listen: SocketAddr,
    /// Drain loops in this process, each with its own connection, owning its share of the
    /// lanes like a relay of its own: while one waits for the database the other keeps the
    /// broker busy. They share one producer.
    pub workers: usize,
    /// Outbox rows claimed and produced per batch, at most. A row carries up to
    /// `OUTBOX_EVENTS_PER_ROW` (128) events of one lane, so a batch is at most 128 times this
    /// many records.
    pub batch_rows: usize,
    /// Batches chained in one transaction, at most: while one batch awaits its acks, the
    /// next is claimed and the previous deleted, so the database and the broker work at the
    /// same time. The transaction commits after the last batch's acks.
    pub batches_per_transaction: usize,
    /// Fallback poll when no notification arrives.
    pub poll_interval_ms: u64,
    /// How often a relay tries to take lanes that no relay owns.
    pub lane_claim_interval_ms: u64,
}

/// How a provider signs its webhooks.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SignatureScheme {
    /// Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature`.
    StandardWebhooks,
    /// `Stripe-Signature: t=...,v1=...`.
    Stripe,
    /// HMAC-SHA256 of the body in a configurable header.
    HmacSha256,
}

/// The shape of a provider's payload.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum PayloadFormat {
    /// paystream's own JSON format.
    Paystream,
    /// Stripe event JSON.
    Stripe,
    /// BACEN Pix webhook body.
    Pix,
}

/// One configured provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Signature scheme.
    pub scheme: SignatureScheme,
    /// Payload format.
    pub format: PayloadFormat,
    /// Signing secrets; during rotation any of them may match.
    pub secrets: Vec<Secret>,
    /// Header carrying the signature (`hmac-sha256` scheme only).
    #[serde(default)]
    pub signature_header: Option<String>,
    /// Header carrying the signed Unix timestamp (`hmac-sha256` scheme only). When set, the
    /// signed content is `{timestamp}.{body}` and stale timestamps are refused.
    #[serde(default)]
    pub timestamp_header: Option<String>,
    /// Sustained webhooks per second accepted from this provider.
    pub rate_per_second: u32,
    /// Burst above the sustained rate.
    pub burst: u32,
}

impl Config {
    /// Loads defaults, then `file` if given, then `PAYSTREAM_*` variables, and validates.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULTS));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        // Only nested keys (`PAYSTREAM_SECTION__FIELD`) are configuration; flat ones such as
        // `PAYSTREAM_CONFIG` belong to the command line.
        figment = figment.merge(Env::prefixed("PAYSTREAM_").split("__").filter(|key| key.as_str().contains('.')));
        let config: Config = figment.extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// The `PAYSTREAM_*` variables that point a child process (`paystream <service>`) at the
    /// same data as this configuration: database, broker, topics and group. Callers add
    /// what differs per child (listeners, limits).
    pub fn data_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("PAYSTREAM_POSTGRES__URL", self.postgres.url.clone()),
            ("PAYSTREAM_KAFKA__BROKERS", self.kafka.brokers.clone()),
            ("PAYSTREAM_KAFKA__INBOUND_TOPIC", self.kafka.inbound_topic.clone()),
            ("PAYSTREAM_KAFKA__EVENTS_TOPIC", self.kafka.events_topic.clone()),
            ("PAYSTREAM_KAFKA__DEADLETTER_TOPIC", self.kafka.deadletter_topic.clone()),
            ("PAYSTREAM_KAFKA__PARTITIONS", self.kafka.partitions.to_string()),
            ("PAYSTREAM_PROCESSOR__GROUP_ID", self.processor.group_id.clone()),
        ]
    }

    /// Every problem with the values, listed at once.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let mut check = |ok: bool, what: &str| {
            if !ok {
                problems.push(what.to_owned());
            }
        };
        check(!self.kafka.brokers.trim().is_empty(), "kafka.brokers is empty");
        check(self.kafka.partitions >= 1, "kafka.partitions must be at least 1");
        check(self.kafka.replication_factor >= 1, "kafka.replication_factor must be at least 1");
        check(self.kafka.message_timeout_ms >= 1000, "kafka.message_timeout_ms must be at least 1000");
        check(
            self.postgres.url.parse::<tokio_postgres::Config>().is_ok(),
            "postgres.url is not a valid PostgreSQL URL",
        );
        check((1..=1000).contains(&self.postgres.pool_size), "postgres.pool_size must be 1..=1000");
        check(
            (1024..=64 * 1024 * 1024).contains(&self.ingest.body_limit_bytes),
            "ingest.body_limit_bytes must be 1 KiB..=64 MiB",
        );
        check(self.ingest.timestamp_tolerance_s >= 1, "ingest.timestamp_tolerance_s must be at least 1");
        check(self.ingest.produce_timeout_ms >= 100, "ingest.produce_timeout_ms must be at least 100");
        check((1..=10_000).contains(&self.kafka.fetch_wait_max_ms), "kafka.fetch_wait_max_ms must be 1..=10000");
        check((1..=100_000).contains(&self.ingest.max_in_flight), "ingest.max_in_flight must be 1..=100000");
        check(!self.processor.group_id.is_empty(), "processor.group_id is empty");
        check((1..=10_000).contains(&self.processor.batch_max), "processor.batch_max must be 1..=10000");
        check(
            (self.processor.batch_max..=1_000_000).contains(&self.processor.queued_max),
            "processor.queued_max must be processor.batch_max..=1000000",
        );
        check(
            (1..=self.postgres.pool_size).contains(&self.processor.transactions),
            "processor.transactions must be 1..=postgres.pool_size",
        );
        check((1..=100_000).contains(&self.processor.transaction_max), "processor.transaction_max must be 1..=100000");
        check((1..=8).contains(&self.relay.workers), "relay.workers must be 1..=8");
        // Each worker has at most one batch awaiting acks; together they must fit the
        // producer's queue, or sends would fail with a full queue instead of waiting.
        check(
            self.relay.batch_rows >= 1
                && self.relay.batch_rows * crate::OUTBOX_EVENTS_PER_ROW * self.relay.workers
                    <= crate::kafka::PRODUCER_QUEUE_MESSAGES,
            "relay.batch_rows must be at least 1, and relay.batch_rows x 128 events x relay.workers at most 200000 (the producer's queue)",
        );
        check((1..=64).contains(&self.relay.batches_per_transaction), "relay.batches_per_transaction must be 1..=64");
        check(self.relay.poll_interval_ms >= 1, "relay.poll_interval_ms must be at least 1");
        for (name, provider) in &self.providers {
            let valid_name = !name.is_empty()
                && name.len() <= 64
                && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
            if !valid_name {
                problems.push(format!("providers.{name}: name must be 1-64 of [a-z0-9_-]"));
            }
            if provider.secrets.is_empty() {
                problems.push(format!("providers.{name}.secrets: at least one secret is required"));
            }
            if provider.rate_per_second == 0 || provider.burst == 0 {
                problems.push(format!("providers.{name}: rate_per_second and burst must be positive"));
            }
            if provider.scheme == SignatureScheme::HmacSha256 && provider.signature_header.is_none() {
                problems.push(format!("providers.{name}.signature_header is required for hmac-sha256"));
            }
            if provider.scheme == SignatureScheme::StandardWebhooks {
                for (i, secret) in provider.secrets.iter().enumerate() {
                    if !secret.expose().starts_with("whsec_") {
                        problems.push(format!(
                            "providers.{name}.secrets[{i}]: standard-webhooks secrets start with whsec_"
                        ));
                    }
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The embedded defaults load and validate with no file and no environment.
    #[test]
    fn defaults_are_valid() {
        let config: Config = Figment::from(Toml::string(DEFAULTS)).extract().unwrap();
        config.validate().unwrap();
        assert_eq!(config.providers.len(), 3);
        assert_eq!(config.kafka.partitions, 12);
    }

    /// Secrets never appear in Debug output, nor does a database password.
    #[test]
    fn secrets_are_redacted() {
        let mut config: Config = Figment::from(Toml::string(DEFAULTS)).extract().unwrap();
        config.postgres.url = "postgres://u:hunter2@127.0.0.1:5432/db".into();
        let printed = format!("{config:?}");
        assert!(!printed.contains("hunter2"));
        assert!(!printed.contains("whsec_cGF5"));
        assert!(printed.contains("[redacted]"));
    }

    /// Validation lists every problem, not just the first.
    #[test]
    fn validation_lists_all_problems() {
        let mut config: Config = Figment::from(Toml::string(DEFAULTS)).extract().unwrap();
        config.kafka.partitions = 0;
        config.processor.batch_max = 0;
        let Err(ConfigError::Invalid(problems)) = config.validate() else {
            panic!("expected invalid");
        };
        assert_eq!(problems.len(), 2, "{problems:?}");
    }
}
