//! The PostgreSQL pool, SQLSTATE classification and the embedded migration runner.
//!
//! Every connection (pooled or not) is made the same way: TLS when the server offers it (or
//! required: `sslmode=require` in the URL, or `postgres.tls_ca_file`, which also verifies the
//! server), TCP keepalives and `TCP_USER_TIMEOUT` so that a vanished server fails the
//! connection in seconds rather than minutes, and the session's `statement_timeout` and
//! `idle_in_transaction_session_timeout`, so that a client that vanished mid-transaction
//! releases its locks on the server.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use postgres_openssl::MakeTlsConnector;
use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;

use crate::config::PostgresConfig;

/// Errors opening the pool or migrating.
#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    /// The URL is not a PostgreSQL URL.
    #[error("postgres.url is invalid: {0}")]
    Url(#[source] tokio_postgres::Error),
    /// The pool could not be built.
    #[error("cannot build the connection pool: {0}")]
    Pool(#[from] deadpool_postgres::BuildError),
    /// The TLS settings cannot be used (the CA file, OpenSSL).
    #[error("PostgreSQL TLS: {0}")]
    Tls(#[from] openssl::error::ErrorStack),
    /// A statement failed.
    #[error("database error: {}", describe(.0))]
    Db(#[from] tokio_postgres::Error),
    /// No connection could be had from the pool in time.
    #[error("no database connection available: {0}")]
    Checkout(#[from] deadpool_postgres::PoolError),
    /// An applied migration's text changed after it was applied.
    #[error("migration {version} ({name}) was changed after it was applied; migrations are forward-only")]
    MigrationChanged {
        /// The migration's version.
        version: i32,
        /// The migration's name.
        name: String,
    },
}

/// What to do about a failed database operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Transient: run the whole transaction again after a pause.
    Retry,
    /// Permanent for this input, e.g. a constraint the data violates.
    Reject,
    /// The code or the schema is wrong: stop and let an operator look.
    Fatal,
}

/// A PostgreSQL error as an operator wants to read it: SQLSTATE, message and detail for
/// server errors (tokio-postgres' own Display says only "db error"), the cause otherwise.
pub fn describe(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        let mut text = format!("{} {}: {}", db.severity(), db.code().code(), db.message());
        if let Some(detail) = db.detail() {
            text.push_str(" (");
            text.push_str(detail);
            text.push(')');
        }
        return text;
    }
    match std::error::Error::source(error) {
        Some(source) => format!("{error}: {source}"),
        None => error.to_string(),
    }
}

/// What an operator needs from a pool error: deadpool prints a wrapped database error as
/// "db error", so the SQLSTATE and message are taken from inside it.
pub fn describe_pool(error: &deadpool_postgres::PoolError) -> String {
    match error {
        deadpool_postgres::PoolError::Backend(e) => describe(e),
        other => other.to_string(),
    }
}

/// Classifies a PostgreSQL error by SQLSTATE (or by the lack of one: a lost connection).
pub fn classify(error: &tokio_postgres::Error) -> Disposition {
    let Some(code) = error.code() else {
        // No SQLSTATE: the connection broke or timed out; a new one may work.
        return Disposition::Retry;
    };
    let retry = [
        SqlState::T_R_SERIALIZATION_FAILURE,
        SqlState::T_R_DEADLOCK_DETECTED,
        SqlState::LOCK_NOT_AVAILABLE,
        SqlState::QUERY_CANCELED,
        SqlState::ADMIN_SHUTDOWN,
        SqlState::CRASH_SHUTDOWN,
        SqlState::CANNOT_CONNECT_NOW,
        SqlState::TOO_MANY_CONNECTIONS,
        SqlState::CONNECTION_FAILURE,
        SqlState::CONNECTION_EXCEPTION,
        // A concurrent insert of the same key: running again sees the committed row.
        SqlState::UNIQUE_VIOLATION,
        // A failover left this session on a server that is now a standby: a new
        // connection finds the new primary.
        SqlState::READ_ONLY_SQL_TRANSACTION,
        // The server is out of disk or memory: an operator frees it, the work waits.
        SqlState::DISK_FULL,
        SqlState::OUT_OF_MEMORY,
        SqlState::INSUFFICIENT_RESOURCES,
        SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT,
    ];
    if retry.contains(code) || code.code().starts_with("08") {
        return Disposition::Retry;
    }
    let class = &code.code()[..2];
    match class {
        // Data exceptions and integrity violations are about the input.
        "22" | "23" => Disposition::Reject,
        _ => Disposition::Fatal,
    }
}

/// The client side of every connection: URL, timeouts, keepalives, the session settings.
fn client_config(
    config: &PostgresConfig,
    application_name: Option<&str>,
) -> Result<tokio_postgres::Config, PostgresError> {
    let mut pg: tokio_postgres::Config = config.url.parse().map_err(PostgresError::Url)?;
    if let Some(user) = &config.login_user {
        pg.user(user);
    }
    pg.connect_timeout(Duration::from_millis(config.connect_timeout_ms));
    pg.keepalives(true)
        .keepalives_idle(Duration::from_secs(10))
        .keepalives_interval(Duration::from_secs(5))
        .keepalives_retries(3)
        .tcp_user_timeout(Duration::from_millis(config.tcp_user_timeout_ms));
    let mut options = format!(
        "-c statement_timeout={} -c idle_in_transaction_session_timeout={}",
        config.statement_timeout_ms, config.idle_in_transaction_timeout_ms
    );
    if let Some(mode) = config.plan_cache_mode {
        options.push_str(&format!(" -c plan_cache_mode={}", mode.as_str()));
    }
    pg.options(options);
    match application_name {
        Some(name) => {
            pg.application_name(name);
        }
        None if pg.get_application_name().is_none() => {
            pg.application_name("paystream");
        }
        None => {}
    }
    // A CA to verify against means TLS is wanted: never fall back to plain text.
    if config.tls_ca_file.is_some() && pg.get_ssl_mode() != SslMode::Disable {
        pg.ssl_mode(SslMode::Require);
    }
    Ok(pg)
}

/// The TLS connector: with `postgres.tls_ca_file`, the server's certificate and host name are
/// verified (libpq's `verify-full`); without it the connection is encrypted but the server
/// unverified (libpq's `require`), and a warning says so when TLS is required.
pub fn tls(config: &PostgresConfig) -> Result<MakeTlsConnector, PostgresError> {
    let mut builder = SslConnector::builder(SslMethod::tls_client())?;
    match &config.tls_ca_file {
        Some(ca) => {
            builder.set_ca_file(ca)?;
            builder.set_verify(SslVerifyMode::PEER);
            Ok(MakeTlsConnector::new(builder.build()))
        }
        None => {
            builder.set_verify(SslVerifyMode::NONE);
            let mut connector = MakeTlsConnector::new(builder.build());
            connector.set_callback(|configuration, _| {
                configuration.set_verify_hostname(false);
                Ok(())
            });
            Ok(connector)
        }
    }
}

/// Builds the pool. Connections open lazily; `statement_timeout` bounds every statement.
pub fn pool(config: &PostgresConfig) -> Result<Pool, PostgresError> {
    let pg = client_config(config, None)?;
    warn_unverified(config, &pg);
    let manager = Manager::from_config(pg, tls(config)?, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Ok(Pool::builder(manager)
        .max_size(config.pool_size)
        .wait_timeout(Some(Duration::from_millis(config.pool_wait_timeout_ms)))
        .create_timeout(Some(Duration::from_millis(config.connect_timeout_ms)))
        .runtime(Runtime::Tokio1)
        .build()?)
}

fn warn_unverified(config: &PostgresConfig, pg: &tokio_postgres::Config) {
    if pg.get_ssl_mode() == SslMode::Require && config.tls_ca_file.is_none() {
        tracing::warn!(
            "PostgreSQL over TLS without verifying the server (sslmode=require): set postgres.tls_ca_file to verify it"
        );
    }
}

/// Opens one connection outside the pool (relay lane sessions, LISTEN), driving it on a task.
/// Notifications are forwarded to `notifications` when given. `application_name` names the
/// session in `pg_stat_activity`.
pub async fn connect(
    config: &PostgresConfig,
    application_name: &str,
    notifications: Option<tokio::sync::mpsc::Sender<tokio_postgres::Notification>>,
) -> Result<tokio_postgres::Client, PostgresError> {
    let pg = client_config(config, Some(application_name))?;
    let (client, mut connection) = pg.connect(tls(config)?).await?;
    tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                    if let Some(tx) = &notifications {
                        // A full channel already holds a wake-up; dropping this one loses nothing.
                        let _ = tx.try_send(n);
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    tracing::warn!(%error, "database connection closed");
                    break;
                }
                None => break,
            }
        }
    });
    Ok(client)
}

/// One embedded, forward-only migration.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Version, strictly increasing.
    pub version: i32,
    /// Name, from the file name.
    pub name: &'static str,
    /// The SQL text.
    pub sql: &'static str,
}

/// Every migration of `migrations/`, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "core", sql: include_str!("../../migrations/V0001__core.sql") },
    Migration {
        version: 2,
        name: "outbox_without_lane_index",
        sql: include_str!("../../migrations/V0002__outbox_without_lane_index.sql"),
    },
    Migration {
        version: 3,
        name: "outbox_vacuum_by_count",
        sql: include_str!("../../migrations/V0003__outbox_vacuum_by_count.sql"),
    },
    Migration {
        version: 4,
        name: "outbox_event_groups",
        sql: include_str!("../../migrations/V0004__outbox_event_groups.sql"),
    },
    Migration {
        version: 5,
        name: "ledger_checked_per_statement",
        sql: include_str!("../../migrations/V0005__ledger_checked_per_statement.sql"),
    },
    Migration {
        version: 6,
        name: "outbox_framed_events",
        sql: include_str!("../../migrations/V0006__outbox_framed_events.sql"),
    },
    Migration { version: 7, name: "money_holes", sql: include_str!("../../migrations/V0007__money_holes.sql") },
    Migration { version: 8, name: "outbox_parked", sql: include_str!("../../migrations/V0008__outbox_parked.sql") },
    Migration {
        version: 9,
        name: "credit_lifecycle",
        sql: include_str!("../../migrations/V0009__credit_lifecycle.sql"),
    },
    // 10-12 are reserved for other work; the runner applies versions in this order, gaps allowed.
    Migration { version: 13, name: "roles", sql: include_str!("../../migrations/V0013__roles.sql") },
    Migration { version: 14, name: "audit", sql: include_str!("../../migrations/V0014__audit.sql") },
    Migration { version: 15, name: "lgpd", sql: include_str!("../../migrations/V0015__lgpd.sql") },
    Migration {
        version: 16,
        name: "monthly_partitions",
        sql: include_str!("../../migrations/V0016__monthly_partitions.sql"),
    },
    Migration {
        version: 17,
        name: "dead_letter_redrive",
        sql: include_str!("../../migrations/V0017__dead_letter_redrive.sql"),
    },
    Migration {
        version: 18,
        name: "audit_rows_as_typed_arrays",
        sql: include_str!("../../migrations/V0018__audit_rows_as_typed_arrays.sql"),
    },
    Migration {
        version: 19,
        name: "customer_birth_date",
        sql: include_str!("../../migrations/V0019__customer_birth_date.sql"),
    },
    Migration {
        version: 20,
        name: "ledger_monthly_partitions",
        sql: include_str!("../../migrations/V0020__ledger_monthly_partitions.sql"),
    },
    Migration {
        version: 21,
        name: "accrual_pending",
        sql: include_str!("../../migrations/V0021__accrual_pending.sql"),
    },
    Migration {
        version: 22,
        name: "transfer_ledger",
        sql: include_str!("../../migrations/V0022__transfer_ledger.sql"),
    },
];

/// A digest of the migrations, used to name migrated test templates.
pub fn migrations_digest() -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for m in MIGRATIONS {
        hasher.update(m.version.to_le_bytes());
        hasher.update(m.sql.as_bytes());
    }
    hex::encode(&hasher.finalize()[..6])
}

/// Applies every pending migration, each in its own transaction, under an advisory lock so
/// that several processes starting at once do not race. Returns how many were applied.
pub async fn migrate(client: &mut tokio_postgres::Client) -> Result<usize, PostgresError> {
    migrate_up_to(client, i32::MAX).await
}

/// [`migrate`], stopping after migration `last`: a database as an older release left it,
/// for the tests of migrations that convert data.
pub async fn migrate_up_to(client: &mut tokio_postgres::Client, last: i32) -> Result<usize, PostgresError> {
    use sha2::{Digest, Sha256};
    // The key is arbitrary but fixed: it names "paystream migrations" among advisory locks.
    const LOCK_KEY: i64 = 0x7061_7973_7472_6d31;
    client.execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY]).await?;
    let result = async {
        client
            .batch_execute(
                "CREATE SCHEMA IF NOT EXISTS paystream;
                 CREATE TABLE IF NOT EXISTS paystream.schema_migration (
                     version integer PRIMARY KEY,
                     name text NOT NULL,
                     checksum text NOT NULL,
                     applied_at timestamptz NOT NULL DEFAULT now())",
            )
            .await?;
        let mut applied = 0;
        for m in MIGRATIONS.iter().filter(|m| m.version <= last) {
            let checksum = hex::encode(Sha256::digest(m.sql.as_bytes()));
            let row = client
                .query_opt("SELECT checksum FROM paystream.schema_migration WHERE version = $1", &[&m.version])
                .await?;
            match row {
                Some(row) if row.get::<_, String>(0) == checksum => continue,
                Some(_) => return Err(PostgresError::MigrationChanged { version: m.version, name: m.name.into() }),
                None => {}
            }
            let tx = client.transaction().await?;
            tx.batch_execute(m.sql).await?;
            tx.execute(
                "INSERT INTO paystream.schema_migration (version, name, checksum) VALUES ($1, $2, $3)",
                &[&m.version, &m.name, &checksum],
            )
            .await?;
            tx.commit().await?;
            tracing::info!(version = m.version, name = m.name, "migration applied");
            applied += 1;
        }
        // Ownership and grants follow what the migrations declare whatever order they were
        // applied in (a lower version applied after V0013 creates objects the superuser owns
        // and no role may use): the procedure of V0013 puts them right, idempotently.
        let privileges: Option<String> =
            client.query_one("SELECT to_regprocedure('paystream.apply_role_privileges()')::text", &[]).await?.get(0);
        if privileges.is_some() {
            client.batch_execute("CALL paystream.apply_role_privileges()").await?;
        }
        Ok(applied)
    }
    .await;
    client.execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY]).await?;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file of `migrations/` is in `MIGRATIONS`, in order, by its version and name, and
    /// nothing else is: a new file cannot be forgotten.
    #[test]
    fn migrations_list_every_file() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .expect("migrations/")
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .filter(|name| name.ends_with(".sql"))
            .collect();
        files.sort();
        let listed: Vec<String> = MIGRATIONS.iter().map(|m| format!("V{:04}__{}.sql", m.version, m.name)).collect();
        assert_eq!(files, listed);
    }
}
