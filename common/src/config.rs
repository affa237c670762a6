//! Configuration: embedded defaults (`config/default.toml`), then an optional TOML file,
//! then `PAYSTREAM_*` environment variables (`PAYSTREAM_KAFKA__BROKERS` sets
//! `kafka.brokers`). Validated at start-up with every problem listed at once. Secrets never
//! print: they show as `[redacted]`, in `Debug` output and in load errors alike.
//!
//! The embedded defaults configure no provider: a deployment has exactly the providers its
//! file and environment name. The local stack's demo providers, with development secrets that
//! are published in `docs/providers.md`, live in `config/dev.toml`, which only the local stack
//! loads; a configuration holding one of those secrets, or a short or empty one, is refused
//! unless `ingest.allow_dev_secrets` is set and ingest listens on loopback only.

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
    /// The sources could not be read or do not have the expected shape. The text names the
    /// keys and what was expected, never the values given (a misplaced secret would print).
    #[error("cannot load configuration: {0}")]
    Load(String),
    /// The values were read but some are not acceptable; every problem is listed.
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

/// A secret value (signing key, password). Prints as `[redacted]`. Deliberately not
/// `PartialEq`: comparing secrets is the verifiers' job, in constant time.
#[derive(Clone, Deserialize)]
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
    /// The credit lifecycle's defaults (business date, accrual).
    #[serde(default)]
    pub credit: CreditConfig,
    /// Configured providers by the name used in `POST /webhooks/{provider}` (see
    /// [`ProviderConfig::name`]). None by default.
    #[serde(default)]
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
    /// Replication factor for topics the product creates (3 in production: a 2xx must
    /// survive the loss of a broker; 1 on the local stack's single node).
    pub replication_factor: i32,
    /// `min.insync.replicas` of topics the product creates (2 in production with
    /// replication factor 3: `acks=all` then means written to at least two brokers).
    pub min_insync_replicas: i32,
    /// Upper bound on a produce, queueing and retries included (`message.timeout.ms`).
    pub message_timeout_ms: u64,
    /// How long a producer waits to fill a batch (`linger.ms`).
    pub linger_ms: u64,
    /// How long the broker may hold a consumer's fetch while it has less than
    /// `fetch_min_bytes` for it (`fetch.wait.max.ms`): with the two together, a consumer
    /// under moderate load gets one fetch answer per wait with everything that arrived in it,
    /// not one per produced batch. Measured on the pipeline at 2,000 payments/s (three
    /// services, Apache Kafka on the same two cores): 100 ms with `fetch.min.bytes` 1 cost
    /// the broker 0.24-0.26 ms of CPU a payment and end to end p99 was 1.2-1.3 s; 5-20 ms
    /// with 256 KiB, 0.14-0.17 ms and 0.27-0.47 s. At rates that fill `fetch_min_bytes`
    /// sooner, the answer comes sooner. Also the rate of idle fetches (100/s at 10 ms).
    pub fetch_wait_max_ms: u64,
    /// Bytes the broker gathers for a consumer's fetch before answering, unless
    /// `fetch_wait_max_ms` passes first (`fetch.min.bytes`).
    pub fetch_min_bytes: u32,
    /// librdkafka properties added to every client, for the cluster's security
    /// (`security.protocol`, `ssl.ca.location`, `sasl.mechanism`, `sasl.username`,
    /// `sasl.password`, ...). `_` in a name stands for `.` so that the environment can set
    /// them (`PAYSTREAM_KAFKA__CLIENT_PROPERTIES__SECURITY_PROTOCOL=SSL`). The settings the
    /// delivery guarantees rest on cannot be overridden here. Values of names that look
    /// secret print as `[redacted]`.
    #[serde(default)]
    pub client_properties: ClientProperties,
    /// Keys that authenticate the inbound topic's records: ingest signs every record with
    /// the first (an HMAC-SHA256 header), the processor accepts a record signed with any of
    /// them and dead-letters the rest, so that whoever can produce to the topic cannot inject
    /// payments. At least 32 bytes each; several during rotation. No default.
    #[serde(default)]
    pub command_keys: Vec<Secret>,
}

/// librdkafka properties given by the operator; see [`KafkaConfig::client_properties`].
#[derive(Clone, Default)]
pub struct ClientProperties(BTreeMap<String, String>);

impl ClientProperties {
    /// The properties, names normalised (`_` to `.`).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Sets a property (tests and tools).
    pub fn set(&mut self, name: &str, value: &str) {
        self.0.insert(name.replace('_', "."), value.to_owned());
    }

    /// Whether a property's value must not be printed.
    fn is_secret(name: &str) -> bool {
        ["password", "secret", "jaas", "token", "credential"].iter().any(|word| name.contains(word))
            || (name.contains("key") && !name.ends_with(".location"))
    }
}

impl<'de> Deserialize<'de> for ClientProperties {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // librdkafka takes every value as a string, but the environment and TOML give
        // `PAYSTREAM_KAFKA__CLIENT_PROPERTIES__FETCH_MIN_BYTES=65536` as a number and `true`
        // as a boolean: both are taken as written.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Value {
            Text(String),
            Integer(i64),
            Float(f64),
            Boolean(bool),
        }
        let raw = BTreeMap::<String, Value>::deserialize(deserializer)?;
        Ok(Self(
            raw.into_iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::Text(v) => v,
                        Value::Integer(v) => v.to_string(),
                        Value::Float(v) => v.to_string(),
                        Value::Boolean(v) => v.to_string(),
                    };
                    (k.replace('_', "."), v)
                })
                .collect(),
        ))
    }
}

impl fmt::Debug for ClientProperties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (name, value) in &self.0 {
            if Self::is_secret(name) {
                map.entry(name, &"[redacted]");
            } else {
                map.entry(name, value);
            }
        }
        map.finish()
    }
}

/// Properties paystream sets itself because its guarantees rest on them: the operator's
/// `client_properties` may not change them.
pub const GUARANTEED_PROPERTIES: &[&str] = &[
    "bootstrap.servers",
    "enable.idempotence",
    "acks",
    "request.required.acks",
    "max.in.flight.requests.per.connection",
    "max.in.flight",
    "message.timeout.ms",
    "delivery.timeout.ms",
    "enable.auto.offset.store",
    "enable.auto.commit",
    "auto.offset.reset",
    "group.id",
    "isolation.level",
    "partitioner",
    "partition.assignment.strategy",
];

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
    /// The server ends a session that sits inside an open transaction this long
    /// (`idle_in_transaction_session_timeout`): a client that vanished mid-transaction (a
    /// network partition, a paused process) releases its row and lane locks then, not
    /// after the kernel's keepalive hours.
    pub idle_in_transaction_timeout_ms: u64,
    /// Upper bound on unacknowledged data on the connection (`TCP_USER_TIMEOUT`), with TCP
    /// keepalives every few seconds: a connection to a server that vanished (a blackhole, no
    /// RST) fails after this long instead of after 15 minutes of retransmissions.
    pub tcp_user_timeout_ms: u64,
    /// PEM file of the certificate authorities that sign the server's certificate. With it,
    /// connections use TLS and verify the server's certificate and host name (libpq's
    /// `verify-full`); without it, `sslmode=require` in the URL encrypts without verifying
    /// (libpq's `require`), and the default (`prefer`) uses TLS when the server offers it.
    #[serde(default)]
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// The login role each part of paystream connects as, in place of the URL's user.
    pub users: PostgresUsers,
    /// The user this configuration's connections log in as when not the URL's: set by
    /// [`PostgresConfig::as_part`], never read from a file.
    #[serde(skip)]
    pub login_user: Option<String>,
    /// The sessions' `plan_cache_mode` when not the server's: set by the part that owns the
    /// connections (the processor's `processor.plan_cache_mode`), never read from this section.
    #[serde(skip)]
    pub plan_cache_mode: Option<PlanCacheMode>,
}

/// The login roles of migration V0013, one per part, each with the least privilege that part
/// needs. Each replaces the URL's user (host, port, database and password stay); an empty
/// name keeps the URL's user. The URL's own user is what `migrate` and `seed` run as: the
/// superuser or a member of `paystream_owner`. In production each service usually has its
/// own URL (its own role and password) and these stay at the role names or empty.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresUsers {
    /// The processor (`paystream_processor`).
    pub processor: String,
    /// The outbox relay (`paystream_relay`).
    pub relay: String,
    /// Batch jobs and operator commands: dead-letter re-drive, payment lookup, report, audit
    /// seal and verify (`paystream_jobs`).
    pub jobs: String,
}

/// A part of paystream that connects to PostgreSQL, for [`PostgresConfig::as_part`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbPart {
    /// The processor.
    Processor,
    /// The outbox relay.
    Relay,
    /// Batch jobs and operator commands.
    Jobs,
}

impl PostgresConfig {
    /// This configuration, logging in as `part`'s role (`postgres.users`).
    pub fn as_part(&self, part: DbPart) -> PostgresConfig {
        let user = match part {
            DbPart::Processor => &self.users.processor,
            DbPart::Relay => &self.users.relay,
            DbPart::Jobs => &self.users.jobs,
        };
        let mut config = self.clone();
        config.login_user = (!user.is_empty()).then(|| user.clone());
        config
    }
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
            .field("idle_in_transaction_timeout_ms", &self.idle_in_transaction_timeout_ms)
            .field("tcp_user_timeout_ms", &self.tcp_user_timeout_ms)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("users", &self.users)
            .field("login_user", &self.login_user)
            .field("plan_cache_mode", &self.plan_cache_mode)
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
    /// Requests admitted at once (their bodies read, verified, produced). A request waits at
    /// most `admission_wait_ms` for a place, then gets 503 with `Retry-After`; its body is
    /// read only once admitted.
    pub max_in_flight: usize,
    /// Bytes of bodies larger than `SMALL_BODY_BYTES` (16 KiB) read at once, all requests
    /// together: what bounds ingest's memory against many large uploads, and keeps them
    /// from taking the places of ordinary webhooks.
    pub large_body_budget_bytes: usize,
    /// How long a request waits to be admitted before 503.
    pub admission_wait_ms: u64,
    /// A client must send its whole request head within this time, or the connection is
    /// closed (slow headers, idle keep-alive connections).
    pub header_read_timeout_ms: u64,
    /// A client must send its whole body within this time once admitted, or gets 408.
    pub body_read_timeout_ms: u64,
    /// Open connections, at most; further ones wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Failed signature checks per second from one client address before that address is
    /// refused (429) without checking: forgeries cannot spend a provider's rate limit (which
    /// counts verified webhooks only) and cost one HMAC each at most this often.
    pub unverified_rate_per_second: u32,
    /// Accept the local stack's development secrets (and keys under 16 bytes). Only with
    /// every listener on loopback; never in a deployment.
    #[serde(default)]
    pub allow_dev_secrets: bool,
}

/// Bodies up to this size are ordinary webhooks, admitted by count alone.
pub const SMALL_BODY_BYTES: usize = 16 * 1024;

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
    /// Messages the waiting batches must hold for a transaction to start beside one in
    /// flight (capped at `transaction_max`); fewer wait for it to end and go into the next
    /// transaction. 1 overlaps transactions whenever anything waits.
    pub overlap_min: usize,
    /// The longest such a group waits for the transaction in flight before it starts anyway
    /// (that one may be waiting on a lock another session holds).
    pub overlap_wait_max_ms: u64,
    /// Longest pause between retries of a batch that failed for a transient reason.
    pub retry_backoff_max_ms: u64,
    /// Start newly assigned partitions at the position stored in PostgreSQL (at the
    /// beginning of the log where none is stored) instead of the committed offset: saves
    /// re-reading after a crash, and applies what a database restored behind the group's
    /// committed offsets is missing (without it, the processor stops at such a gap). On by
    /// default: the database is the source of truth for positions.
    pub seek_to_stored_position: bool,
    /// PostgreSQL's `plan_cache_mode` for the processor's sessions. Its statements are few,
    /// prepared once per connection, and take arrays of keys (`id = ANY($1)`), for which
    /// `auto` kept re-planning each execution as a custom plan: 0.3-3 ms of planning per
    /// statement, most of the server time of a small batch. `force_generic_plan` plans each
    /// once per session.
    pub plan_cache_mode: PlanCacheMode,
}

/// PostgreSQL's `plan_cache_mode` (how a prepared statement is planned).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanCacheMode {
    /// The server's choice: custom plans for the first five executions, then generic when
    /// it estimates that as no worse.
    Auto,
    /// One plan per prepared statement, whatever its parameters.
    ForceGenericPlan,
    /// A plan for each execution's parameters.
    ForceCustomPlan,
}

impl PlanCacheMode {
    /// The setting's value as PostgreSQL spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::ForceGenericPlan => "force_generic_plan",
            Self::ForceCustomPlan => "force_custom_plan",
        }
    }
}

/// The credit lifecycle: the terms of contracts that have none of their own, and accrual's
/// parallelism.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CreditConfig {
    /// One-time late fee on the overdue principal, as a fraction ("0.02": the 2% cap of
    /// Brazilian consumer credit). A string, so that it is read as an exact decimal.
    pub late_fee_rate: rust_decimal::Decimal,
    /// Late interest a month, charged pro rata die ("0.01": 1% a month).
    pub monthly_interest_rate: rust_decimal::Decimal,
    /// Accrual writers, each on its own connection.
    pub accrual_workers: usize,
    /// Installments per accrual transaction.
    pub accrual_chunk: i64,
}

impl Default for CreditConfig {
    fn default() -> Self {
        Self {
            late_fee_rate: rust_decimal::Decimal::new(2, 2),
            monthly_interest_rate: rust_decimal::Decimal::new(1, 2),
            accrual_workers: 2,
            accrual_chunk: 1000,
        }
    }
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
    /// The name in `POST /webhooks/{name}`, when it differs from the table's key: the
    /// environment cannot spell `-` (`PAYSTREAM_PROVIDERS__ACME_PIX__NAME=acme-pix`).
    #[serde(default)]
    pub name: Option<String>,
    /// The name its payments are recorded under: the dedupe key's first part and its
    /// clearing account. Defaults to the provider's name. Two endpoints of one sender (a
    /// migration, a second region) share it, so that a payment delivered to both is applied
    /// once; providers that share a secret must share it.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Signature scheme.
    pub scheme: SignatureScheme,
    /// Payload format.
    pub format: PayloadFormat,
    /// Signing secrets; during rotation any of them may match. One secret may be given as
    /// a plain string.
    #[serde(deserialize_with = "one_or_many")]
    pub secrets: Vec<Secret>,
    /// Header carrying the signature (`hmac-sha256` scheme only).
    #[serde(default)]
    pub signature_header: Option<String>,
    /// Header carrying the signed Unix timestamp (`hmac-sha256` scheme only). When set, the
    /// signed content is `{timestamp}.{body}` and stale timestamps are refused. Required
    /// unless `body_only_signature` says the sender signs the body alone.
    #[serde(default)]
    pub timestamp_header: Option<String>,
    /// The sender signs the body alone (`hmac-sha256` without a timestamp): a captured
    /// webhook verifies forever. Its replays still have no effect (the processor dedupes),
    /// but ingest cannot refuse them; set only for senders that can do no better.
    #[serde(default)]
    pub body_only_signature: bool,
    /// Stripe: accept only events whose `livemode` is this (true in production), so that a
    /// test-mode event is never booked as money. Unset: either.
    #[serde(default)]
    pub livemode: Option<bool>,
    /// Sustained webhooks per second accepted from this provider.
    pub rate_per_second: u32,
    /// Burst above the sustained rate.
    pub burst: u32,
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<Secret>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(Secret),
        Many(Vec<Secret>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(secret) => vec![secret],
        OneOrMany::Many(secrets) => secrets,
    })
}

/// The development secrets of `config/dev.toml`, published in `docs/providers.md`: refused
/// outside the local stack.
pub const DEV_SECRETS: &[&str] = &[
    "whsec_cGF5c3RyZWFtLWRldi1vbmx5LXN0YW5kYXJkLXdlYmhvb2tz",
    "whsec_paystream_dev_only_stripe",
    "paystream-dev-only-pix-hmac",
    "paystream-dev-only-command-key-0123456789",
];

/// Shortest key accepted for an HMAC: Standard Webhooks and Stripe secrets carry 24-32
/// random bytes.
pub const MIN_KEY_BYTES: usize = 16;

/// Shortest key accepted for `kafka.command_keys`.
pub const MIN_COMMAND_KEY_BYTES: usize = 32;

impl ProviderConfig {
    /// A provider of `scheme` and `format` with `secrets`, the generic scheme's headers
    /// `x-signature` and `x-timestamp`, and 1,000 webhooks/s (tests, tools).
    pub fn new(scheme: SignatureScheme, format: PayloadFormat, secrets: &[&str]) -> Self {
        Self {
            name: None,
            namespace: None,
            scheme,
            format,
            secrets: secrets.iter().map(|s| Secret::new(*s)).collect(),
            signature_header: Some("x-signature".into()),
            timestamp_header: Some("x-timestamp".into()),
            body_only_signature: false,
            livemode: None,
            rate_per_second: 1000,
            burst: 1000,
        }
    }

    /// The HMAC keys of the provider's secrets, as its scheme defines them: Standard
    /// Webhooks signs with the base64-decoded part after `whsec_`, Stripe with the whole
    /// secret string (prefix included), the generic scheme with the secret's bytes.
    pub fn signing_keys(&self) -> Result<Vec<Vec<u8>>, String> {
        use base64::Engine as _;
        self.secrets
            .iter()
            .enumerate()
            .map(|(i, secret)| match self.scheme {
                SignatureScheme::StandardWebhooks => {
                    let encoded = secret
                        .expose()
                        .strip_prefix("whsec_")
                        .ok_or_else(|| format!("secrets[{i}]: standard-webhooks secrets start with whsec_"))?;
                    base64::engine::general_purpose::STANDARD
                        .decode(encoded)
                        .map_err(|_| format!("secrets[{i}]: not base64 after whsec_"))
                }
                SignatureScheme::Stripe | SignatureScheme::HmacSha256 => Ok(secret.expose().as_bytes().to_vec()),
            })
            .collect()
    }

    /// How many bytes of a secret are its own: a Stripe secret's `whsec_` prefix is not.
    fn key_strength(&self, key: &[u8]) -> usize {
        match self.scheme {
            SignatureScheme::Stripe => key.strip_prefix(b"whsec_").unwrap_or(key).len(),
            _ => key.len(),
        }
    }
}

impl Config {
    /// The configured providers by the name they are posted to (`name`, or their key).
    pub fn provider_names(&self) -> impl Iterator<Item = (&str, &ProviderConfig)> {
        self.providers.iter().map(|(key, p)| (p.name.as_deref().unwrap_or(key), p))
    }

    /// Loads defaults, then `file` if given, then `PAYSTREAM_*` variables, and validates.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULTS));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        // Only nested keys (`PAYSTREAM_SECTION__FIELD`) are configuration; flat ones such as
        // `PAYSTREAM_CONFIG` belong to the command line.
        figment = figment.merge(Env::prefixed("PAYSTREAM_").split("__").filter(|key| key.as_str().contains('.')));
        let config: Config = figment.extract().map_err(|error| ConfigError::Load(redacted(&error)))?;
        config.validate()?;
        Ok(config)
    }

    /// The `PAYSTREAM_*` variables that point a child process (`paystream <service>`) at the
    /// same data as this configuration: database, broker, topics and group. Callers add
    /// what differs per child (listeners, limits).
    pub fn data_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("PAYSTREAM_POSTGRES__URL", self.postgres.url.clone()),
            ("PAYSTREAM_POSTGRES__USERS__PROCESSOR", self.postgres.users.processor.clone()),
            ("PAYSTREAM_POSTGRES__USERS__RELAY", self.postgres.users.relay.clone()),
            ("PAYSTREAM_POSTGRES__USERS__JOBS", self.postgres.users.jobs.clone()),
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
        let mut problems = self.problems();
        problems.extend(self.secret_problems());
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// Secrets that must not run outside the local stack, and keys too short to resist a
    /// search: refused unless `ingest.allow_dev_secrets` is set with every listener on
    /// loopback.
    fn secret_problems(&self) -> Vec<String> {
        let loopback =
            [self.ingest.listen, self.ingest.admin_listen, self.processor.admin_listen, self.relay.admin_listen]
                .iter()
                .all(|addr| addr.ip().is_loopback());
        let dev_allowed = self.ingest.allow_dev_secrets && loopback;
        let mut problems = Vec::new();
        if self.ingest.allow_dev_secrets && !loopback {
            problems.push(
                "ingest.allow_dev_secrets is set but a listener is not on loopback: development secrets are for the \
                 local stack only"
                    .to_owned(),
            );
        }
        let is_dev = |secret: &Secret| {
            let text = secret.expose();
            DEV_SECRETS.contains(&text) || text.contains("dev-only") || text.contains("dev_only")
        };
        for (name, provider) in self.provider_names() {
            let Ok(keys) = provider.signing_keys() else { continue }; // reported by problems()
            for (i, (secret, key)) in provider.secrets.iter().zip(&keys).enumerate() {
                let what = format!("providers.{name}.secrets[{i}]");
                if key.is_empty() {
                    problems.push(format!("{what}: empty"));
                } else if !dev_allowed && provider.key_strength(key) < MIN_KEY_BYTES {
                    problems.push(format!("{what}: shorter than {MIN_KEY_BYTES} bytes"));
                } else if !dev_allowed && is_dev(secret) {
                    problems.push(format!(
                        "{what}: a published development secret (config/dev.toml); set the provider's own secret"
                    ));
                }
            }
        }
        for (i, key) in self.kafka.command_keys.iter().enumerate() {
            let what = format!("kafka.command_keys[{i}]");
            if !dev_allowed && key.expose().len() < MIN_COMMAND_KEY_BYTES {
                problems.push(format!("{what}: shorter than {MIN_COMMAND_KEY_BYTES} bytes"));
            } else if !dev_allowed && is_dev(key) {
                problems.push(format!("{what}: a published development key (config/dev.toml)"));
            } else if key.expose().is_empty() {
                problems.push(format!("{what}: empty"));
            }
        }
        problems
    }

    /// Problems with values, secrets aside.
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut check = |ok: bool, what: &str| {
            if !ok {
                problems.push(what.to_owned());
            }
        };
        check(!self.kafka.brokers.trim().is_empty(), "kafka.brokers is empty");
        let rate = rust_decimal::Decimal::ZERO..=rust_decimal::Decimal::ONE;
        check(rate.contains(&self.credit.late_fee_rate), "credit.late_fee_rate must be 0..=1 (0.02 is 2%)");
        check(
            rate.contains(&self.credit.monthly_interest_rate),
            "credit.monthly_interest_rate must be 0..=1 (0.01 is 1% a month)",
        );
        check((1..=64).contains(&self.credit.accrual_workers), "credit.accrual_workers must be 1..=64");
        check((1..=10_000).contains(&self.credit.accrual_chunk), "credit.accrual_chunk must be 1..=10000");
        check(self.kafka.partitions >= 1, "kafka.partitions must be at least 1");
        check(self.kafka.replication_factor >= 1, "kafka.replication_factor must be at least 1");
        check(
            (1..=self.kafka.replication_factor).contains(&self.kafka.min_insync_replicas),
            "kafka.min_insync_replicas must be 1..=kafka.replication_factor",
        );
        for (name, _) in self.kafka.client_properties.iter() {
            check(
                !GUARANTEED_PROPERTIES.contains(&name),
                &format!(
                    "kafka.client_properties.{name}: set by paystream for its delivery guarantees; it cannot be overridden"
                ),
            );
        }
        check(
            self.postgres.statement_timeout_ms >= 100,
            "postgres.statement_timeout_ms must be at least 100 (0 would disable it)",
        );
        check(
            self.postgres.idle_in_transaction_timeout_ms >= 1000,
            "postgres.idle_in_transaction_timeout_ms must be at least 1000 (0 would disable it)",
        );
        check(self.postgres.tcp_user_timeout_ms >= 1000, "postgres.tcp_user_timeout_ms must be at least 1000");
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
        check(
            (1..=3600).contains(&self.ingest.timestamp_tolerance_s),
            "ingest.timestamp_tolerance_s must be 1..=3600 (a wider window is a wider replay window)",
        );
        check(
            (1..=1024 * 1024 * 1024).contains(&self.ingest.large_body_budget_bytes)
                && self.ingest.large_body_budget_bytes >= self.ingest.body_limit_bytes,
            "ingest.large_body_budget_bytes must be ingest.body_limit_bytes..=1 GiB",
        );
        check(
            self.ingest.max_in_flight * SMALL_BODY_BYTES + self.ingest.large_body_budget_bytes <= 2 * 1024 * 1024 * 1024,
            "ingest.max_in_flight x 16 KiB + ingest.large_body_budget_bytes must be at most 2 GiB (ingest's memory for bodies)",
        );
        check((1..=60_000).contains(&self.ingest.admission_wait_ms), "ingest.admission_wait_ms must be 1..=60000");
        check(
            (100..=120_000).contains(&self.ingest.header_read_timeout_ms),
            "ingest.header_read_timeout_ms must be 100..=120000",
        );
        check(
            (100..=600_000).contains(&self.ingest.body_read_timeout_ms),
            "ingest.body_read_timeout_ms must be 100..=600000",
        );
        check((1..=1_000_000).contains(&self.ingest.max_connections), "ingest.max_connections must be 1..=1000000");
        check(self.ingest.unverified_rate_per_second >= 1, "ingest.unverified_rate_per_second must be at least 1");
        check(self.ingest.produce_timeout_ms >= 100, "ingest.produce_timeout_ms must be at least 100");
        check((1..=10_000).contains(&self.kafka.fetch_wait_max_ms), "kafka.fetch_wait_max_ms must be 1..=10000");
        check(
            (1..=16 * 1024 * 1024).contains(&self.kafka.fetch_min_bytes),
            "kafka.fetch_min_bytes must be 1..=16777216",
        );
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
        check((1..=100_000).contains(&self.processor.overlap_min), "processor.overlap_min must be 1..=100000");
        check(
            (1..=60_000).contains(&self.processor.overlap_wait_max_ms),
            "processor.overlap_wait_max_ms must be 1..=60000",
        );
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
        let valid_name = |name: &str| {
            !name.is_empty()
                && name.len() <= 64
                && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        };
        for (name, provider) in self.provider_names() {
            if !valid_name(name) {
                problems.push(format!("providers.{name}: name must be 1-64 of [a-z0-9_-]"));
            }
            if provider.namespace.as_deref().is_some_and(|n| !valid_name(n)) {
                problems.push(format!("providers.{name}.namespace must be 1-64 of [a-z0-9_-]"));
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
            if let Err(problem) = provider.signing_keys() {
                problems.push(format!("providers.{name}.{problem}"));
            }
            if provider.scheme == SignatureScheme::HmacSha256
                && provider.timestamp_header.is_none()
                && !provider.body_only_signature
            {
                problems.push(format!(
                    "providers.{name}.timestamp_header is required for hmac-sha256 (a body-only signature replays \
                     forever; set body_only_signature = true if the sender can do no better)"
                ));
            }
            if provider.livemode.is_some() && provider.format != PayloadFormat::Stripe {
                problems.push(format!("providers.{name}.livemode applies to the stripe format only"));
            }
        }
        // Names as posted to: a provider's `name` may collide with another's key.
        let mut posted = std::collections::BTreeSet::new();
        for (name, _) in self.provider_names() {
            if !posted.insert(name) {
                problems.push(format!("providers: two providers are posted to as {name}"));
            }
        }
        // One sender configured twice would have two dedupe namespaces: the same payment
        // delivered to both would be applied twice.
        let providers: Vec<(&str, &ProviderConfig)> = self.provider_names().collect();
        for (i, (a, pa)) in providers.iter().enumerate() {
            for (b, pb) in &providers[i + 1..] {
                let shared = pa.secrets.iter().any(|x| pb.secrets.iter().any(|y| x.expose() == y.expose()));
                if shared && pa.namespace.as_deref().unwrap_or(a) != pb.namespace.as_deref().unwrap_or(b) {
                    problems.push(format!(
                        "providers {a} and {b} share a secret, so they are one sender: give them one namespace"
                    ));
                }
            }
        }
        problems
    }
}

/// A load error as an operator may read it: where and what was expected, every error of the
/// chain, without the offending values (figment prints them, and a secret given in the wrong
/// shape would end up in the log).
fn redacted(error: &figment::Error) -> String {
    use figment::error::Kind;
    error
        .clone()
        .into_iter()
        .map(|e| {
            let what = match &e.kind {
                Kind::InvalidType(_, expected) => format!("invalid type: expected {expected}"),
                Kind::InvalidValue(_, expected) => format!("invalid value: expected {expected}"),
                Kind::InvalidLength(len, expected) => format!("invalid length {len}: expected {expected}"),
                Kind::UnknownVariant(_, expected) => format!("unknown variant: expected one of {expected:?}"),
                Kind::UnknownField(field, _) => format!("unknown field `{field}`"),
                Kind::MissingField(field) => format!("missing field `{field}`"),
                Kind::DuplicateField(field) => format!("duplicate field `{field}`"),
                Kind::UnsupportedKey(..) | Kind::Unsupported(_) => "unsupported value".to_owned(),
                Kind::ISizeOutOfRange(_) | Kind::USizeOutOfRange(_) => "number out of range".to_owned(),
                // A message of figment's own or a file it cannot read: no value of ours in it.
                Kind::Message(message) => message.clone(),
            };
            let key = e.path.join(".");
            let source = e.metadata.as_ref().map(|m| m.name.to_string()).unwrap_or_default();
            match (key.is_empty(), source.is_empty()) {
                (true, true) => what,
                (true, false) => format!("{what} (in {source})"),
                (false, true) => format!("{key}: {what}"),
                (false, false) => format!("{key}: {what} (in {source})"),
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The local stack's configuration, as `config/dev.toml` layers it.
    const DEV: &str = include_str!("../../config/dev.toml");

    fn dev() -> Config {
        Figment::from(Toml::string(DEFAULTS)).merge(Toml::string(DEV)).extract().unwrap()
    }

    /// The embedded defaults load and validate with no file and no environment, and hold
    /// no provider and no key at all.
    #[test]
    fn defaults_are_valid_and_hold_no_secret() {
        let config: Config = Figment::from(Toml::string(DEFAULTS)).extract().unwrap();
        config.validate().unwrap();
        assert!(config.providers.is_empty());
        assert!(config.kafka.command_keys.is_empty());
        assert_eq!(config.kafka.partitions, 12);
        assert!(!config.ingest.allow_dev_secrets);
    }

    /// The processor plans its statements once a session unless told otherwise, and a
    /// value PostgreSQL does not know is refused when the configuration is read.
    #[test]
    fn plan_cache_mode_defaults_to_generic_and_refuses_unknown_values() {
        let config: Config = Figment::from(Toml::string(DEFAULTS)).extract().unwrap();
        assert_eq!(config.processor.plan_cache_mode, PlanCacheMode::ForceGenericPlan);
        assert_eq!(config.processor.plan_cache_mode.as_str(), "force_generic_plan");
        let refused = Figment::from(Toml::string(DEFAULTS))
            .merge(Toml::string("[processor]\nplan_cache_mode = \"generic\""))
            .extract::<Config>()
            .unwrap_err()
            .to_string();
        assert!(refused.contains("plan_cache_mode") && refused.contains("force_generic_plan"), "{refused}");
    }

    /// Transactions overlap only for groups worth a transaction of their own by default; 0
    /// is refused (1 already overlaps them whenever anything waits).
    #[test]
    fn overlapping_transactions_need_a_group_of_their_own() {
        let config: Config = Figment::from(Toml::string(DEFAULTS)).extract().unwrap();
        assert!((2..=config.processor.transaction_max).contains(&config.processor.overlap_min));
        let mut zero = config.clone();
        zero.processor.overlap_min = 0;
        assert!(zero.validate().unwrap_err().to_string().contains("processor.overlap_min"));
    }

    /// A partition's batch may fill a whole transaction by default: a group member owning
    /// few partitions then still runs transactions as large as one owning them all.
    #[test]
    fn partition_batches_may_fill_a_transaction_by_default() {
        let config: Config = Figment::from(Toml::string(DEFAULTS)).extract().unwrap();
        assert_eq!(config.processor.batch_max, config.processor.transaction_max);
        assert!(config.processor.queued_max >= config.processor.transactions * config.processor.transaction_max);
    }

    /// The local stack's file validates: its secrets are allowed there, on loopback.
    #[test]
    fn dev_configuration_is_valid_on_loopback() {
        let config = dev();
        config.validate().unwrap();
        assert_eq!(config.providers.len(), 3);
    }

    /// A deployment file that names one provider yields exactly that provider: the demo
    /// providers and their published secrets are not merged in from anywhere.
    #[test]
    fn a_file_with_one_provider_yields_one_provider() {
        let dir = std::env::temp_dir().join(format!("paystream-config-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("prod.toml");
        std::fs::write(
            &file,
            r#"
[kafka]
command_keys = ["0123456789abcdef0123456789abcdef-prod"]
[providers.acme]
scheme = "stripe"
format = "stripe"
secrets = ["whsec_5WbX5kEWLlfzsGNjH64I8lOOqUB6e8FH"]
rate_per_second = 100
burst = 100
"#,
        )
        .unwrap();
        let config = Config::load(Some(&file)).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(config.providers.keys().collect::<Vec<_>>(), ["acme"]);
    }

    /// Published development secrets, empty and short keys are refused in a deployment,
    /// each named; with the switch and loopback listeners they are allowed, and the switch
    /// on a public listener is refused itself.
    #[test]
    fn dev_short_and_empty_secrets_are_refused_outside_the_local_stack() {
        let mut config = dev();
        config.ingest.allow_dev_secrets = false;
        let Err(ConfigError::Invalid(problems)) = config.validate() else { panic!("dev secrets accepted") };
        for provider in ["demo-standard", "demo-stripe", "demo-pix"] {
            assert!(problems.iter().any(|p| p.contains(provider) && p.contains("development")), "{problems:?}");
        }
        assert!(problems.iter().any(|p| p.starts_with("kafka.command_keys[0]")), "{problems:?}");

        let mut config = dev();
        config.ingest.allow_dev_secrets = false;
        config.kafka.command_keys = vec![Secret::new("k".repeat(40))];
        let standard = config.providers.get_mut("demo-standard").unwrap();
        standard.secrets = vec![Secret::new("whsec_"), Secret::new("whsec_c2hvcnQ=")];
        let stripe = config.providers.get_mut("demo-stripe").unwrap();
        stripe.secrets = vec![Secret::new(""), Secret::new("whsec_0123456789")];
        config.providers.get_mut("demo-pix").unwrap().secrets = vec![Secret::new("abcdefghijklmnop")];
        let Err(ConfigError::Invalid(problems)) = config.validate() else { panic!("short secrets accepted") };
        assert_eq!(
            problems,
            [
                "providers.demo-standard.secrets[0]: empty",
                "providers.demo-standard.secrets[1]: shorter than 16 bytes",
                "providers.demo-stripe.secrets[0]: empty",
                "providers.demo-stripe.secrets[1]: shorter than 16 bytes",
            ]
        );

        let mut config = dev();
        config.ingest.listen = "0.0.0.0:8080".parse().unwrap();
        let Err(ConfigError::Invalid(problems)) = config.validate() else { panic!("dev secrets on 0.0.0.0") };
        assert!(problems.iter().any(|p| p.contains("not on loopback")), "{problems:?}");
    }

    /// Secrets never appear in Debug output, nor does a database password or a Kafka
    /// client's password.
    #[test]
    fn secrets_are_redacted() {
        let mut config = dev();
        config.postgres.url = "postgres://u:hunter2@127.0.0.1:5432/db".into();
        config.kafka.client_properties.set("sasl.password", "kafka-hunter3");
        config.kafka.client_properties.set("security.protocol", "SASL_SSL");
        let printed = format!("{config:?}");
        assert!(!printed.contains("hunter2"));
        assert!(!printed.contains("hunter3"));
        assert!(!printed.contains("whsec_cGF5"));
        assert!(!printed.contains("command-key"));
        assert!(printed.contains("SASL_SSL"));
        assert!(printed.contains("[redacted]"));
    }

    /// A load error names the key and what was expected, never the value given: a secret
    /// set where a table was expected does not reach the log.
    #[test]
    fn load_errors_do_not_print_values() {
        let figment = Figment::from(Toml::string(DEFAULTS))
            .merge(Toml::string("[providers]\nacme = \"whsec_very-secret-value-0123456789\""));
        let error = figment.extract::<Config>().unwrap_err();
        assert!(error.to_string().contains("whsec_very-secret"), "figment's own text prints it");
        let text = redacted(&error);
        assert!(!text.contains("whsec_very-secret"), "{text}");
        assert!(text.contains("providers.acme"), "{text}");
    }

    /// Providers from the environment alone, a name with `-` included, secrets as a list or
    /// a plain string, Kafka client properties with `_` for `.` (numbers and booleans as
    /// written: they were refused as "expected a string").
    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail fixes the closure's error type
    fn providers_and_client_properties_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("PAYSTREAM_PROVIDERS__ACME_PIX__NAME", "acme-pix");
            jail.set_env("PAYSTREAM_PROVIDERS__ACME_PIX__SCHEME", "hmac-sha256");
            jail.set_env("PAYSTREAM_PROVIDERS__ACME_PIX__FORMAT", "pix");
            jail.set_env("PAYSTREAM_PROVIDERS__ACME_PIX__SECRETS", "a-pix-secret-of-32-bytes-length!");
            jail.set_env("PAYSTREAM_PROVIDERS__ACME_PIX__SIGNATURE_HEADER", "x-signature");
            jail.set_env("PAYSTREAM_PROVIDERS__ACME_PIX__TIMESTAMP_HEADER", "x-timestamp");
            jail.set_env("PAYSTREAM_PROVIDERS__ACME_PIX__RATE_PER_SECOND", "10");
            jail.set_env("PAYSTREAM_PROVIDERS__ACME_PIX__BURST", "10");
            jail.set_env("PAYSTREAM_PROVIDERS__STRIPE__SCHEME", "stripe");
            jail.set_env("PAYSTREAM_PROVIDERS__STRIPE__FORMAT", "stripe");
            jail.set_env(
                "PAYSTREAM_PROVIDERS__STRIPE__SECRETS",
                r#"["whsec_5WbX5kEWLlfzsGNjH64I8lOOqUB6e8FH", "whsec_Bm1n0kEWLlfzsGNjH64I8lOOqUB6e8FH"]"#,
            );
            jail.set_env("PAYSTREAM_PROVIDERS__STRIPE__RATE_PER_SECOND", "10");
            jail.set_env("PAYSTREAM_PROVIDERS__STRIPE__BURST", "10");
            jail.set_env("PAYSTREAM_KAFKA__CLIENT_PROPERTIES__SECURITY_PROTOCOL", "SSL");
            // Numbers and booleans, as the environment writes them, are property values too.
            jail.set_env("PAYSTREAM_KAFKA__CLIENT_PROPERTIES__SOCKET_KEEPALIVE_ENABLE", "true");
            jail.set_env("PAYSTREAM_KAFKA__CLIENT_PROPERTIES__STATISTICS_INTERVAL_MS", "60000");
            let config = Config::load(None).map_err(|e| e.to_string())?;
            let names: Vec<&str> = config.provider_names().map(|(name, _)| name).collect();
            assert_eq!(names, ["acme-pix", "stripe"]);
            assert_eq!(config.providers["stripe"].secrets.len(), 2);
            assert_eq!(config.providers["acme_pix"].secrets.len(), 1);
            let properties: Vec<_> = config.kafka.client_properties.iter().collect();
            assert_eq!(
                properties,
                [
                    ("security.protocol", "SSL"),
                    ("socket.keepalive.enable", "true"),
                    ("statistics.interval.ms", "60000")
                ]
            );
            Ok(())
        });
    }

    /// The settings the guarantees rest on cannot be overridden through client properties.
    #[test]
    fn guaranteed_properties_cannot_be_overridden() {
        let mut config = dev();
        config.kafka.client_properties.set("acks", "1");
        config.kafka.client_properties.set("enable_auto_offset_store", "true");
        let Err(ConfigError::Invalid(problems)) = config.validate() else { panic!("override accepted") };
        assert_eq!(problems.len(), 2, "{problems:?}");
    }

    /// One sender under two names shares one namespace, or the same payment would be
    /// applied twice.
    #[test]
    fn providers_sharing_a_secret_must_share_a_namespace() {
        let mut config = dev();
        let copy = config.providers["demo-stripe"].clone();
        config.providers.insert("demo-stripe-2".into(), copy);
        let Err(ConfigError::Invalid(problems)) = config.validate() else { panic!("two namespaces accepted") };
        assert!(problems.iter().any(|p| p.contains("one namespace")), "{problems:?}");
        config.providers.get_mut("demo-stripe-2").unwrap().namespace = Some("demo-stripe".into());
        config.validate().unwrap();
    }

    /// Validation lists every problem, not just the first.
    #[test]
    fn validation_lists_all_problems() {
        let mut config = dev();
        config.kafka.partitions = 0;
        config.processor.batch_max = 0;
        let Err(ConfigError::Invalid(problems)) = config.validate() else {
            panic!("expected invalid");
        };
        assert_eq!(problems.len(), 2, "{problems:?}");
    }
}
