//! Test isolation against the real servers of the local stack: each test gets its own
//! database (a copy of a migrated template) and its own topics and consumer group, so tests
//! run in parallel without seeing each other.

use std::path::Path;
use std::time::Duration;

use tokio_postgres::NoTls;

use crate::config::Config;

/// The local stack's configuration file (`config/dev.toml`: demo providers, development keys).
pub const DEV_CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/dev.toml");

/// A configuration for one test: the local stack's (`config/dev.toml`, then `PAYSTREAM_*`
/// overrides), a fresh database, unique topic names and group id, and port 0 listeners.
pub async fn isolated_config() -> Config {
    let mut config = Config::load(Some(Path::new(DEV_CONFIG))).expect("configuration loads");
    let tag = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    config.postgres.url = create_database(&config.postgres.url, &tag).await;
    config.postgres.pool_size = 8;
    config.kafka.inbound_topic = format!("test.{tag}.inbound");
    config.kafka.events_topic = format!("test.{tag}.events");
    config.kafka.deadletter_topic = format!("test.{tag}.deadletter");
    config.kafka.partitions = 4;
    config.processor.group_id = format!("test-{tag}");
    let any_port = "127.0.0.1:0".parse().expect("valid address");
    config.ingest.listen = any_port;
    config.ingest.admin_listen = any_port;
    config.processor.admin_listen = any_port;
    config.relay.admin_listen = any_port;
    config.relay.poll_interval_ms = 50;
    config
}

/// Creates `test_<tag>` from a template migrated with the current migrations and returns
/// its URL. The template is made once per migration digest, under an advisory lock that
/// serialises test processes.
pub async fn create_database(base_url: &str, tag: &str) -> String {
    let mut admin: tokio_postgres::Config = base_url.parse().expect("postgres url");
    admin.dbname("postgres");
    admin.connect_timeout(Duration::from_secs(10));
    let (client, connection) = admin.connect(NoTls).await.expect("connect to the local PostgreSQL (scripts/stack up)");
    tokio::spawn(connection);
    let template = format!("paystream_tpl_{}", crate::postgres::migrations_digest());
    client.execute("SELECT pg_advisory_lock(4242)", &[]).await.expect("lock");
    let exists =
        client.query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&template]).await.expect("query").is_some();
    if !exists {
        client.batch_execute(&format!("CREATE DATABASE {template}")).await.expect("create template");
        let mut tpl = admin.clone();
        tpl.dbname(&template);
        let (mut tpl_client, tpl_conn) = tpl.connect(NoTls).await.expect("connect template");
        let driver = tokio::spawn(tpl_conn);
        crate::postgres::migrate(&mut tpl_client).await.expect("migrate template");
        drop(tpl_client);
        let _ = driver.await;
    }
    let name = format!("test_{tag}");
    client.batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {template}")).await.expect("create test database");
    client.execute("SELECT pg_advisory_unlock(4242)", &[]).await.expect("unlock");
    let mut url: tokio_postgres::Config = base_url.parse().expect("postgres url");
    url.dbname(&name);
    // Rebuild a URL from the parts the local stack uses.
    let host = match url.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".to_owned(),
    };
    let port = url.get_ports().first().copied().unwrap_or(5432);
    let user = url.get_user().unwrap_or("postgres");
    match url.get_password() {
        Some(p) => format!("postgres://{user}:{}@{host}:{port}/{name}", String::from_utf8_lossy(p)),
        None => format!("postgres://{user}@{host}:{port}/{name}"),
    }
}
