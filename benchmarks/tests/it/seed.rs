//! The seed design: its function writes what the processor writes for the same payments, and
//! its handler and polling relay deliver one outcome event per payment.

use std::time::{Duration, SystemTime};

use rust_decimal::Decimal;
use tokio::net::TcpListener;
use uuid::Uuid;

use paystream_benchmarks::bench::peers::{event_header, install, APPLY};
use paystream_benchmarks::bench::processor::installments;
use paystream_benchmarks::bench::services::{db, webhooks};
use paystream_benchmarks::bench::{seed_relay, seed_server};
use paystream_benchmarks::loadgen;
use paystream_common::{Config, Shutdown};
use paystream_schemas::{decode, encode, EventType, PaymentEvent};

/// The seed design's function applies, credits, settles, dedupes and rejects as the processor
/// does, keeps its books balanced (and its database refuses an orphan posting), and writes one
/// outbox row per event holding the Avro record any consumer of the events topic decodes.
#[tokio::test]
async fn the_function_writes_the_processors_rows_and_events() {
    let config = paystream_common::testing::isolated_config().await;
    let client = db(&config).await.unwrap();
    install(&client).await.unwrap();
    install(&client).await.expect("installing twice is harmless");
    let installment = installments(&config, "seed-test", 1, 100).await.unwrap()[0];
    let unknown = Uuid::new_v4();
    let header = event_header();
    let any = PaymentEvent {
        event_id: Uuid::new_v4(),
        event_type: EventType::PaymentApplied,
        occurred_at_ms: 0,
        aggregate_id: installment,
        provider: String::new(),
        payment_id: String::new(),
        installment_id: None,
        contract_id: None,
        amount: Decimal::ONE,
        currency: "BRL".into(),
        reason: None,
        allocation: None,
        business_date: None,
    };
    assert_eq!(header, encode(&any).unwrap()[..10], "the marker and the schema's fingerprint");
    let apply = client.prepare(APPLY).await.unwrap();
    let pay = |id: &'static str, to: Uuid, amount: &'static str| {
        let (client, apply, header) = (&client, &apply, &header);
        async move {
            let amount: Decimal = amount.parse().unwrap();
            let row = client
                .query_one(
                    apply,
                    &[&"bench", &id, &to, &"pix", &amount, &"BRL", &SystemTime::now(), &"t", &header.as_slice()],
                )
                .await
                .unwrap();
            row.get::<_, String>(0)
        }
    };
    assert_eq!(pay("p1", installment, "40.50").await, "applied");
    assert_eq!(pay("p1", installment, "40.50").await, "duplicate");
    assert_eq!(pay("p2", installment, "70.00").await, "applied", "59.50 applied, 10.50 kept as credit");
    assert_eq!(pay("p3", installment, "1.00").await, "applied", "to a paid installment: credit");
    assert_eq!(pay("p4", unknown, "2.00").await, "rejected");

    // The seeds' own ledger tables: every journal balances, and the clearing account holds
    // every payment collected.
    let unbalanced: i64 = client
        .query_one(
            "SELECT count(*) FROM (SELECT journal_id FROM bench_seed.posting GROUP BY journal_id HAVING sum(amount) <> 0) j",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(unbalanced, 0);
    let clearing: Decimal = client
        .query_one("SELECT sum(amount) FROM bench_seed.posting WHERE account = 'provider_clearing:bench'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(clearing.to_string(), "113.50");
    let orphan = client
        .execute(
            "INSERT INTO bench_seed.posting (journal_id, line, account, currency, amount) VALUES (gen_random_uuid(), 0, 'x', 'BRL', 1)",
            &[],
        )
        .await;
    assert!(orphan.is_err(), "a posting needs its journal");
    let row = client
        .query_one("SELECT status, amount_paid::text FROM paystream.installment WHERE id = $1", &[&installment])
        .await
        .unwrap();
    assert_eq!((row.get::<_, String>(0), row.get::<_, String>(1)), ("paid".into(), "100.00".into()));
    let settled: i64 =
        client.query_one("SELECT count(*) FROM paystream.contract WHERE status = 'settled'", &[]).await.unwrap().get(0);
    assert_eq!(settled, 1);

    let rows = client
        .query("SELECT key, event_id, event_type, payload FROM bench_seed.outbox ORDER BY id", &[])
        .await
        .unwrap();
    let events: Vec<(String, PaymentEvent)> = rows
        .iter()
        .map(|r| {
            let event = decode::<PaymentEvent>(r.get(3)).expect("an Avro PaymentEvent");
            assert_eq!(event.event_id, r.get::<_, Uuid>(1));
            assert_eq!(event.event_type.as_str(), r.get::<_, &str>(2));
            assert_eq!(event.aggregate_id.to_string(), r.get::<_, String>(0), "keyed by its aggregate");
            (event.payment_id.clone(), event)
        })
        .collect();
    let kinds: Vec<(&str, EventType, String)> =
        events.iter().map(|(p, e)| (p.as_str(), e.event_type, e.amount.to_string())).collect();
    assert_eq!(
        kinds,
        [
            ("p1", EventType::PaymentApplied, "40.50".into()),
            ("p2", EventType::PaymentApplied, "70.00".into()),
            ("p2", EventType::InstallmentPaid, "100.00".into()),
            ("", EventType::ContractSettled, "100.00".into()),
            ("p3", EventType::PaymentApplied, "1.00".into()),
            ("p3", EventType::SuspectedDuplicatePayment, "1.00".into()),
            ("p4", EventType::PaymentRejected, "2.00".into()),
        ]
    );
    let (_, applied) = &events[0];
    assert_eq!((applied.installment_id, applied.provider.as_str()), (Some(installment), "bench"));
    assert!(applied.contract_id.is_some() && applied.occurred_at_ms > 0);
    let (_, rejected) = &events[6];
    assert_eq!((rejected.reason.as_deref(), rejected.contract_id), (Some("unknown installment"), None));
}

/// Ingest's contract with the seed design inside: the handler answers 202 for each signed
/// webhook after its payment committed, refuses a forged one, and its polling relay
/// publishes exactly one outcome event per payment, read back by the load generator.
#[tokio::test]
async fn the_handler_and_relay_deliver_one_outcome_per_payment() {
    let config: Config = paystream_common::testing::isolated_config().await;
    paystream_common::kafka::ensure_topics(&config.kafka, Duration::from_secs(30)).await.unwrap();
    installments(&config, "seed-pipeline-test", 40, 250).await.unwrap();
    let shutdown = Shutdown::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = format!("http://{}", listener.local_addr().unwrap());
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = tokio::spawn(seed_server::serve(
        config.clone(),
        seed_server::SeedServerArgs { connections: 4 },
        listener,
        admin,
        shutdown.clone(),
    ));
    // The relay reads the outbox the server installed: it starts once the server answers.
    let mut load = webhooks(target, 30, None, true, 8);
    load.bad = 0.2;
    load.duplicates = 0.2;
    let relay_admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let install_first = db(&config).await.unwrap();
    install(&install_first).await.unwrap();
    let relay = tokio::spawn(seed_relay::run(
        config.clone(),
        seed_relay::SeedRelayArgs { batch: 7, poll_ms: 5 },
        relay_admin,
        shutdown.clone(),
    ));
    let summary = loadgen::run(&config, load).await.unwrap();
    shutdown.cancel();
    server.await.unwrap().unwrap();
    relay.await.unwrap().unwrap();
    assert_eq!(summary.payments_with_one_outcome, 30, "{summary:?}");
    assert_eq!((summary.payments_missing_outcome, summary.payments_doubled), (0, 0));
    assert_eq!(summary.statuses.get(&401).copied().unwrap_or(0), summary.bad_sent);
    assert_eq!(summary.statuses.get(&202).copied(), Some(summary.requests - summary.bad_sent));
    let left: i64 = install_first.query_one("SELECT count(*) FROM bench_seed.outbox", &[]).await.unwrap().get(0);
    assert_eq!(left, 0, "every published row deleted");
}
