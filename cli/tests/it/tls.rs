//! The trust boundaries over TLS, with throwaway certificates made here by `openssl`: a
//! PostgreSQL that takes TLS connections only, and an Apache Kafka whose client listener
//! speaks TLS. The pipeline runs through both, verifying the servers against the test's CA.

use std::path::{Path, PathBuf};
use std::time::Duration;

use uuid::Uuid;

use crate::harness::{Cluster, Pipeline, PrivatePostgres};

/// A CA and a server certificate for 127.0.0.1 signed by it (`ca.pem`, `server.crt`,
/// `server.key`, and `server.pem`: key and chain, as Kafka's PEM keystore reads it); with a
/// second, unrelated CA (`other-ca.pem`) to see verification refuse.
fn certificates() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("paystream-tls-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let run = |args: &[&str]| {
        let status = std::process::Command::new("openssl").args(args).current_dir(&dir).status().expect("openssl");
        assert!(status.success(), "openssl {args:?}");
    };
    for ca in ["ca", "other-ca"] {
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN=paystream test {ca}"),
            "-keyout",
            &format!("{ca}.key"),
            "-out",
            &format!("{ca}.pem"),
        ]);
    }
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.crt",
    ]);
    let pem = [std::fs::read(dir.join("server.key")).unwrap(), std::fs::read(dir.join("server.crt")).unwrap()].concat();
    std::fs::write(dir.join("server.pem"), pem).unwrap();
    // The database server runs as another user and copies them: readable (they are throwaway).
    for file in ["server.key", "server.crt", "server.pem", "ca.pem"] {
        let _ = std::process::Command::new("chmod").args(["644", dir.join(file).to_str().unwrap()]).status();
    }
    let _ = std::process::Command::new("chmod").args(["755", dir.to_str().unwrap()]).status();
    dir
}

fn with_ca(url: &str, dir: &Path) -> (String, PathBuf) {
    (format!("{url}?sslmode=require"), dir.join("ca.pem"))
}

/// The whole pipeline over TLS: PostgreSQL refuses plain connections and is verified
/// against the CA (`postgres.tls_ca_file`); Kafka's client listener speaks TLS only and is
/// verified against the CA (`kafka.client_properties`: `security.protocol=SSL`,
/// `ssl.ca.location`). A signed webhook is applied and its event read back, the services'
/// database sessions are encrypted, and a server certificate from another CA is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_pipeline_runs_over_tls_to_postgres_and_kafka() {
    let dir = certificates();
    let pg = PrivatePostgres::start_tls(Some(dir.clone())).await;
    let plain = format!("{}?sslmode=disable", pg.base_url).parse::<tokio_postgres::Config>().unwrap();
    let refused = plain.connect(tokio_postgres::NoTls).await;
    assert!(refused.is_err(), "plain text refused by the server");

    // The test database, made through a verified TLS connection as the services make theirs.
    let (admin_url, ca) = with_ca(&pg.base_url, &dir);
    let mut admin_config = paystream_common::testing::isolated_config().await.postgres;
    admin_config.url = admin_url.clone();
    admin_config.tls_ca_file = Some(ca.clone());
    let admin = paystream_common::postgres::connect(&admin_config, "tls-test", None).await.unwrap();
    admin.batch_execute("CREATE DATABASE tls_pipeline").await.unwrap();
    let url = admin_url.replace("/postgres?", "/tls_pipeline?");
    let mut db_config = admin_config.clone();
    db_config.url = url.clone();
    let mut migrator = paystream_common::postgres::connect(&db_config, "tls-test", None).await.unwrap();
    paystream_common::postgres::migrate(&mut migrator).await.unwrap();

    let mut wrong = admin_config.clone();
    wrong.tls_ca_file = Some(dir.join("other-ca.pem"));
    assert!(
        paystream_common::postgres::connect(&wrong, "tls-test", None).await.is_err(),
        "a server certificate from another CA is refused"
    );

    let kafka = Cluster::start_tls(1, Some(dir.clone())).await;
    let p = Pipeline::start_with(|c| {
        c.postgres.url = url.clone();
        c.postgres.tls_ca_file = Some(ca.clone());
        c.kafka.brokers = kafka.bootstrap();
        c.kafka.client_properties.set("security.protocol", "SSL");
        c.kafka.client_properties.set("ssl.ca.location", ca.to_str().unwrap());
    })
    .await;
    let (installment, _) = p.installments().await[0];
    let (headers, body) = p.payment("msg_tls", "pay_tls", installment, "3.00");
    let (status, text) = p.post("demo-standard", &headers, &body).await;
    assert_eq!(status, 202, "{text}");
    let applied = p.wait_count("SELECT count(*) FROM paystream.payment", 1, Duration::from_secs(60)).await;
    assert_eq!(applied, 1);
    let events = p.read_topic(&p.config.kafka.events_topic, Duration::from_secs(60), |r| !r.is_empty()).await;
    assert_eq!(events[0].headers["event_type"], "PaymentApplied");
    let unencrypted: i64 =
        p.db.query_one(
            "SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
             WHERE a.datname = 'tls_pipeline' AND a.application_name LIKE 'paystream%' AND NOT s.ssl",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(unencrypted, 0, "every service session is encrypted");
    p.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
