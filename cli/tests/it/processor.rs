//! The processor under crashes and rebalances, as separate `paystream processor` processes
//! killed with SIGKILL: a pre-filled topic of payments, duplicates and poison must end as
//! exactly one effect per distinct payment, a dead letter per poison message, and an exact
//! trial balance, whatever was killed when.

use std::time::{Duration, Instant};

use rdkafka::producer::{FutureProducer, FutureRecord};
use rust_decimal::Decimal;
use uuid::Uuid;

use paystream_common::Config;

use crate::harness::Service;
use paystream_schemas::{encode, CommandKind, PaymentCommand};

struct Load {
    distinct: i64,
    poison: i64,
    total: Decimal,
}

/// The seeded installments, in id order.
async fn seeded_installments(db: &tokio_postgres::Client) -> Vec<Uuid> {
    db.query("SELECT id FROM paystream.installments ORDER BY id", &[])
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.get(0))
        .collect()
}

/// A Pix payment of 1.00 BRL for `installment`.
fn payment_of_one(webhook_id: String, payment_id: String, installment: Uuid) -> PaymentCommand {
    PaymentCommand {
        webhook_id,
        provider: "demo-standard".into(),
        kind: CommandKind::Payment,
        rail: "pix".into(),
        payment_id,
        installment_id: Some(installment),
        amount: Decimal::new(100, 2),
        currency: "BRL".into(),
        occurred_at_ms: 1_700_000_000_000,
        received_at_ms: 1_700_000_000_000,
    }
}

/// Fills the inbound topic with `n` distinct payments of 1.00 over the seeded installments,
/// a redelivery of every 7th, and a poison message every 500th, produced in ordinary batches:
/// a member that takes a partition over starts anywhere inside one.
async fn fill(config: &Config, db: &tokio_postgres::Client, n: i64) -> Load {
    let installments = seeded_installments(db).await;
    let producer: FutureProducer = paystream_common::kafka::producer_config(&config.kafka, "fill").create().unwrap();
    let mut sends = Vec::new();
    let mut poison = 0;
    for i in 0..n {
        let installment = installments[(i as usize) % installments.len()];
        let command = payment_of_one(format!("msg_{i}"), format!("pay_{i}"), installment);
        let bytes = encode(&command).unwrap();
        let key = installment.to_string();
        let copies = if i % 7 == 0 { 2 } else { 1 };
        for _ in 0..copies {
            sends.push((key.clone(), bytes.clone()));
        }
        if i % 500 == 0 {
            sends.push((key.clone(), b"\x00poison".to_vec()));
            poison += 1;
        }
    }
    let futures = sends.iter().map(|(k, v)| {
        producer.send(
            FutureRecord::to(&config.kafka.inbound_topic).key(k).payload(v).headers(crate::harness::command_headers(
                config,
                k.as_bytes(),
                v,
            )),
            Duration::from_secs(30),
        )
    });
    for r in futures::future::join_all(futures).await {
        r.unwrap();
    }
    Load { distinct: n, poison, total: Decimal::new(100, 2) * Decimal::from(n) }
}

async fn count(db: &tokio_postgres::Client, sql: &str) -> i64 {
    db.query_one(sql, &[]).await.unwrap().get(0)
}

async fn wait_for(db: &tokio_postgres::Client, sql: &str, want: i64, timeout: Duration) -> i64 {
    let deadline = Instant::now() + timeout;
    loop {
        let n = count(db, sql).await;
        if n >= want || Instant::now() >= deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Everything the load promised, and nothing more: counts, sums, balance, dead letters,
/// one `PaymentApplied` outbox event per payment.
async fn assert_exact(db: &tokio_postgres::Client, load: &Load) {
    assert_eq!(
        count(db, "SELECT count(*) FROM paystream.payment").await,
        load.distinct,
        "one payment row per distinct payment"
    );
    let paid: Decimal =
        db.query_one("SELECT coalesce(sum(amount), 0) FROM paystream.payment", &[]).await.unwrap().get(0);
    assert_eq!(paid, load.total);
    let clearing: Decimal = db
        .query_one(
            "SELECT balance FROM paystream.account_balances WHERE account = 'provider_clearing:demo-standard'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(clearing, load.total, "the clearing account holds exactly what was paid");
    let installments_paid: Decimal =
        db.query_one("SELECT sum(amount_paid) FROM paystream.installment", &[]).await.unwrap().get(0);
    let credits: Decimal =
        db.query_one("SELECT coalesce(sum(amount_credited), 0) FROM paystream.payment", &[]).await.unwrap().get(0);
    assert_eq!(installments_paid + credits, load.total, "every cent landed on an installment or as credit");
    let tb =
        db.query_one("SELECT debits, credits FROM paystream.trial_balance WHERE currency = 'BRL'", &[]).await.unwrap();
    assert_eq!(tb.get::<_, Decimal>(0), tb.get::<_, Decimal>(1), "trial balance");
    assert_eq!(
        count(db, "SELECT count(*) FROM paystream.dead_letters").await,
        load.poison,
        "one dead letter per poison message"
    );
    assert_eq!(
        count(db, "SELECT count(*) FROM paystream.outbox o, paystream.outbox_events(o.frames) e WHERE e.event_type = 'PaymentApplied'").await,
        load.distinct,
        "one PaymentApplied fact per payment"
    );
}

async fn setup() -> (Config, tokio_postgres::Client) {
    paystream_common::telemetry::init_tracing();
    let mut config = paystream_common::testing::isolated_config().await;
    config.kafka.partitions = 6;
    let mut db = crate::harness::connect_db(&config).await;
    let size =
        paystream_processor::seed::SeedSize { customers: 50, contracts_per_customer: 1, installments_per_contract: 4 };
    paystream_processor::seed::seed(&mut db, size, "BRL").await.unwrap();
    paystream_common::kafka::ensure_topics(&config.kafka, Duration::from_secs(30)).await.unwrap();
    (config, db)
}

const APPLIED: &str = "SELECT count(*) FROM paystream.payment";

/// `paystream seed` is a bulk load, not a service statement: a seed that takes longer than
/// the services' `statement_timeout` completes (it was cancelled: 720,000 installments
/// took 53 s against the default 30 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_is_not_bound_by_the_services_statement_timeout() {
    paystream_common::telemetry::init_tracing();
    let config = paystream_common::testing::isolated_config().await;
    let (ok, out, err) = crate::harness::cli_with(
        &config,
        &["seed", "--customers", "2000", "--installments", "12"],
        &[("PAYSTREAM_POSTGRES__STATEMENT_TIMEOUT_MS", "100")],
    );
    assert!(ok, "{out}{err}");
    let db = crate::harness::connect_db(&config).await;
    assert_eq!(count(&db, "SELECT count(*) FROM paystream.installment").await, 24_000);
}

/// The processor's sessions plan its prepared statements once (`processor.plan_cache_mode`,
/// generic by default), and the setting reaches the server as configured. With the
/// server's `auto`, its key-array statements were planned again at every execution.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processor_sessions_use_the_configured_plan_cache_mode() {
    paystream_common::telemetry::init_tracing();
    let mut config = paystream_common::testing::isolated_config().await;
    let show = |config: Config| async move {
        let pool = paystream_processor::pool(&config).unwrap();
        let client = pool.get().await.unwrap();
        let mode: String = client.query_one("SHOW plan_cache_mode", &[]).await.unwrap().get(0);
        mode
    };
    assert_eq!(show(config.clone()).await, "force_generic_plan");
    config.processor.plan_cache_mode = paystream_common::config::PlanCacheMode::Auto;
    assert_eq!(show(config).await, "auto");
}

/// kill -9 of the processor in the middle of a load, twice, then a restart: no payment lost
/// or doubled, poison kept, the balance exact. The load is 10,018 messages: 8,750 distinct
/// payments, 1,250 redeliveries and 18 poison messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_mid_load_loses_and_doubles_nothing() {
    let (config, db) = setup().await;
    let load = fill(&config, &db, 8750).await;
    for fraction in [4, 2] {
        let member = Service::start("processor", &config);
        let seen = wait_for(&db, APPLIED, load.distinct / fraction, Duration::from_secs(120)).await;
        assert!(seen < load.distinct, "killed before the end ({seen})");
        // The next member joins at once: Kafka's coordinator hands it the dead member's
        // partitions when that member's session expires.
        member.kill9();
    }
    let member = Service::start("processor", &config);
    let applied = wait_for(&db, APPLIED, load.distinct, Duration::from_secs(120)).await;
    assert_eq!(applied, load.distinct);
    // Let it settle: a doubled application would show after the count was reached.
    wait_for(&db, "SELECT count(*) FROM paystream.dead_letters", load.poison, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    member.terminate();
    assert_exact(&db, &load).await;
}

/// The topic recreated under the group: its positions in PostgreSQL lie beyond the end of the
/// new log. The processor stops with an error naming the partition instead of skipping the
/// new messages as already applied; once the stale positions are removed, a restart applies
/// every message exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_position_beyond_the_log_stops_the_processor_instead_of_skipping() {
    let (config, db) = setup().await;
    let load = fill(&config, &db, 300).await;
    for partition in 0..config.kafka.partitions {
        db.execute(
            "INSERT INTO paystream.consumer_position (consumer_group, topic, partition, next_offset) \
             VALUES ($1, $2, $3, 1000000)",
            &[&config.processor.group_id, &config.kafka.inbound_topic, &partition],
        )
        .await
        .unwrap();
    }
    let mut member = Service::start("processor", &config);
    let status = member.wait_exit(Duration::from_secs(60));
    assert!(status.is_some_and(|s| !s.success()), "the processor stops with an error: {status:?}");
    assert_eq!(count(&db, APPLIED).await, 0, "nothing applied, and nothing skipped as applied");
    let stale = db
        .execute(
            "DELETE FROM paystream.consumer_position WHERE consumer_group = $1 AND topic = $2",
            &[&config.processor.group_id, &config.kafka.inbound_topic],
        )
        .await
        .unwrap();
    assert_eq!(stale, u64::try_from(config.kafka.partitions).unwrap());
    let member = Service::start("processor", &config);
    assert_eq!(wait_for(&db, APPLIED, load.distinct, Duration::from_secs(120)).await, load.distinct);
    wait_for(&db, "SELECT count(*) FROM paystream.dead_letters", load.poison, Duration::from_secs(30)).await;
    member.terminate();
    assert_exact(&db, &load).await;
}

/// A copy of the test database as it stands (`CREATE DATABASE … TEMPLATE`, which wants no
/// other session on it: `db` is closed first), to restore later; its URL.
async fn backup(config: &Config, db: tokio_postgres::Client) -> String {
    drop(db);
    let (base, name) = config.postgres.url.rsplit_once('/').unwrap();
    let (admin, conn) = format!("{base}/postgres")
        .parse::<tokio_postgres::Config>()
        .unwrap()
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let copy = format!("{name}_backup");
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Err(error) = admin.batch_execute(&format!("CREATE DATABASE {copy} TEMPLATE {name}")).await {
        // The closed session may still be on its way out.
        assert!(Instant::now() < deadline, "copy the database: {error}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    format!("{base}/{copy}")
}

/// The database restored from a backup taken before the group applied anything, under the
/// group's committed offsets: starting where the group left off would skip every message the
/// backup never saw. The processor stops with an error instead, having applied nothing, and
/// started at its stored positions (the remedy the error names) it applies them all, exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_restored_behind_the_committed_offsets_stops_the_processor_instead_of_skipping() {
    let (mut config, db) = setup().await;
    // Started at Kafka's committed offsets, as with the seek switched off.
    config.processor.seek_to_stored_position = false;
    let load = fill(&config, &db, 300).await;
    let restored_url = backup(&config, db).await;
    let db = crate::harness::connect_db(&config).await;
    let member = Service::start("processor", &config);
    assert_eq!(wait_for(&db, APPLIED, load.distinct, Duration::from_secs(120)).await, load.distinct);
    wait_for(&db, "SELECT count(*) FROM paystream.dead_letters", load.poison, Duration::from_secs(30)).await;
    member.terminate(); // commits the group's offsets on the way out

    config.postgres.url = restored_url;
    let restored = crate::harness::connect_db(&config).await;
    let mut member = Service::start("processor", &config);
    // The gap shows at the partition's next message: a provider's redelivery of an earlier
    // webhook (deduplicated later, so the load's figures stay as they are).
    let installment = seeded_installments(&restored).await[1];
    let again = encode(&payment_of_one("msg_1".into(), "pay_1".into(), installment)).unwrap();
    let producer: FutureProducer =
        paystream_common::kafka::producer_config(&config.kafka, "redeliver").create().unwrap();
    let key = installment.to_string();
    producer
        .send(
            FutureRecord::to(&config.kafka.inbound_topic)
                .key(&key)
                .payload(&again)
                .headers(crate::harness::command_headers(&config, key.as_bytes(), &again)),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    let status = member.wait_exit(Duration::from_secs(60));
    assert!(status.is_some_and(|s| !s.success()), "the processor stops with an error: {status:?}");
    assert_eq!(count(&restored, APPLIED).await, 0, "nothing applied past the gap");
    config.processor.seek_to_stored_position = true;
    let member = Service::start("processor", &config);
    assert_eq!(wait_for(&restored, APPLIED, load.distinct, Duration::from_secs(120)).await, load.distinct);
    wait_for(&restored, "SELECT count(*) FROM paystream.dead_letters", load.poison, Duration::from_secs(30)).await;
    member.terminate();
    assert_exact(&restored, &load).await;
}

/// Two members in one group, a third joining and two leaving while the load runs
/// (cooperative-sticky rebalances): nothing lost, nothing doubled. The members leave with
/// SIGTERM and must stop promptly: a member that hangs in its shutdown keeps its partitions
/// from the others. (The local broker does not expire a SIGKILLed member while others stay;
/// SIGKILL is covered by `kill_9_mid_load_loses_and_doubles_nothing`, one member at a time.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_joining_and_leaving_under_load_lose_and_double_nothing() {
    let (config, db) = setup().await;
    let load = fill(&config, &db, 6000).await;
    let a = Service::start("processor", &config);
    let b = Service::start("processor", &config);
    wait_for(&db, APPLIED, load.distinct / 5, Duration::from_secs(120)).await;
    let c = Service::start("processor", &config);
    wait_for(&db, APPLIED, load.distinct / 2, Duration::from_secs(120)).await;
    a.terminate();
    wait_for(&db, APPLIED, (load.distinct * 3) / 4, Duration::from_secs(120)).await;
    b.terminate();
    let applied = wait_for(&db, APPLIED, load.distinct, Duration::from_secs(120)).await;
    assert_eq!(applied, load.distinct);
    wait_for(&db, "SELECT count(*) FROM paystream.dead_letters", load.poison, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    c.terminate();
    assert_exact(&db, &load).await;
}

/// PostgreSQL crashes (immediate stop: no checkpoint, WAL recovery on start) in the middle of
/// a load through the whole pipeline. The services ride it out: every payment is applied
/// once, every `PaymentApplied` reaches the topic once, and the books balance.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_crash_mid_load_loses_and_doubles_nothing() {
    let pg = crate::harness::PrivatePostgres::start().await;
    let url = paystream_common::testing::create_database(&pg.base_url, "pgcrash").await;
    let p = crate::harness::Pipeline::start_with(|c| c.postgres.url = url.clone()).await;
    let installments = p.installments().await;
    let n = 300usize;
    let bodies: Vec<_> = (0..n)
        .map(|i| {
            p.payment(&format!("msg_pg_{i}"), &format!("pay_pg_{i}"), installments[i % installments.len()].0, "0.01")
        })
        .collect();
    let (ingest, http) = (p.ingest, p.http.clone());
    let sender = tokio::spawn(async move {
        for (headers, body) in bodies {
            let mut request = http
                .post(format!("http://{ingest}/webhooks/demo-standard"))
                .header("content-type", "application/json")
                .body(body);
            for (k, v) in &headers {
                request = request.header(*k, v);
            }
            assert_eq!(request.send().await.unwrap().status().as_u16(), 202, "ingest does not need the database");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    // Crash once a quarter of the payments are in.
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&p.db, "SELECT count(*) FROM paystream.payment").await < (n / 4) as i64 {
        assert!(Instant::now() < deadline, "payments are not being applied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    pg.crash_and_restart();
    sender.await.unwrap();

    // The pipeline's own connection died with the server: watch through a new one.
    let db = crate::harness::connect_db(&p.config).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let applied = count(&db, "SELECT count(*) FROM paystream.payment").await;
        let pending = count(&db, "SELECT pending FROM paystream.outbox_backlog").await;
        if applied == n as i64 && pending == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{applied} of {n} applied, {pending} events not yet published");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let paid: Decimal =
        db.query_one("SELECT coalesce(sum(amount), 0) FROM paystream.payment", &[]).await.unwrap().get(0);
    assert_eq!(paid, Decimal::new(n as i64, 2));
    let tb =
        db.query_one("SELECT debits, credits FROM paystream.trial_balance WHERE currency = 'BRL'", &[]).await.unwrap();
    assert_eq!(tb.get::<_, Decimal>(0), tb.get::<_, Decimal>(1), "trial balance");

    let applied_events = |records: &[crate::harness::Record]| {
        let mut ids = std::collections::HashSet::new();
        let mut payments = std::collections::HashSet::new();
        for r in records {
            if let Ok(e) = paystream_schemas::decode::<paystream_schemas::PaymentEvent>(&r.payload) {
                if e.event_type == paystream_schemas::EventType::PaymentApplied && ids.insert(e.event_id) {
                    payments.insert(e.payment_id);
                }
            }
        }
        (ids.len(), payments.len())
    };
    let events =
        p.read_topic(&p.config.kafka.events_topic, Duration::from_secs(30), |seen| applied_events(seen).0 >= n).await;
    assert_eq!(
        applied_events(&events),
        (n, n),
        "one PaymentApplied per payment on the topic (after dedupe by event id)"
    );
    p.stop().await;
}

/// One partition's messages as a member would hold them: `commands[range]` at their offsets.
fn messages(
    config: &Config,
    commands: &[(String, Vec<u8>)],
    range: std::ops::Range<usize>,
) -> Vec<paystream_processor::apply::Message> {
    let auth = paystream_common::command_auth::CommandAuth::new(&config.kafka.command_keys);
    range
        .map(|i| {
            let (key, value) = &commands[i];
            paystream_processor::apply::Message {
                offset: i as i64,
                key: Some(key.as_bytes().to_vec()),
                payload: Some(value.clone()),
                mac: auth.sign(key.as_bytes(), value).map(String::into_bytes),
            }
        })
        .collect()
}

/// The same messages delivered again, late and out of order across a rebalance, against the
/// real database: the old owner applies a prefix, the new owner starts from a stale committed
/// offset (redelivering part of that prefix), the old owner's in-flight batch arrives after
/// the new owner moved past it (a zombie), and the zombie races the new owner, whose
/// transaction also carries another partition. Every payment takes effect once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redelivery_out_of_order_across_a_rebalance_applies_once() {
    use paystream_processor::apply::{apply_batch, apply_parts, Outcome, Source};

    let (config, db) = setup().await;
    let installments = seeded_installments(&db).await;
    let command = |partition: i32, i: usize| {
        let installment = installments[(i * 3 + partition as usize) % installments.len()];
        let value =
            encode(&payment_of_one(format!("msg_{partition}_{i}"), format!("pay_{partition}_{i}"), installment))
                .unwrap();
        (installment.to_string(), value)
    };
    let p0: Vec<(String, Vec<u8>)> = (0..120).map(|i| command(0, i)).collect();
    let p1: Vec<(String, Vec<u8>)> = (0..10).map(|i| command(1, i)).collect();
    let source = |partition: i32| Source {
        group: config.processor.group_id.clone(),
        topic: config.kafka.inbound_topic.clone(),
        partition,
        events_topic: config.kafka.events_topic.clone(),
        deadletter_topic: config.kafka.deadletter_topic.clone(),
        auth: std::sync::Arc::new(paystream_common::command_auth::CommandAuth::new(&config.kafka.command_keys)),
    };
    let (s0, s1) = (source(0), source(1));
    let pool = paystream_common::postgres::pool(&config.postgres).unwrap();
    let apply = |parts: Vec<(Source, Vec<paystream_processor::apply::Message>)>| {
        let pool = pool.clone();
        async move {
            let mut client = pool.get().await.unwrap();
            let tx = client.transaction().await.unwrap();
            let parts: Vec<(&Source, &[paystream_processor::apply::Message])> =
                parts.iter().map(|(s, m)| (s, &m[..])).collect();
            apply_parts(tx, &parts).await.unwrap()
        }
    };

    // The old owner applies offsets 0..60 in two batches.
    let mut total = Outcome::default();
    for range in [0..30, 30..60] {
        let mut client = pool.get().await.unwrap();
        let o = apply_batch(client.transaction().await.unwrap(), &s0, &messages(&config, &p0, range)).await.unwrap();
        total.applied += o.applied;
    }
    // The new owner starts at a stale committed offset, 20: 40 of its 70 are redeliveries.
    let o = apply(vec![(s0.clone(), messages(&config, &p0, 20..90))]).await;
    assert_eq!((o.applied, o.skipped), (30, 40), "redelivered prefix skipped, the rest applied");
    total.applied += o.applied;
    // The old owner's in-flight batch arrives late, behind the new owner's position.
    let o = apply(vec![(s0.clone(), messages(&config, &p0, 60..70))]).await;
    assert_eq!((o.applied, o.skipped), (0, 10), "a zombie's late batch changes nothing");
    // The zombie's next batch races the new owner's, which also carries partition 1: the
    // position lock orders them, whichever wins.
    let (zombie, owner) = tokio::join!(
        apply(vec![(s0.clone(), messages(&config, &p0, 85..110))]),
        apply(vec![(s1.clone(), messages(&config, &p1, 0..10)), (s0.clone(), messages(&config, &p0, 85..120))])
    );
    assert_eq!(zombie.applied + owner.applied, 30 + 10, "each message of the race applied by exactly one side");
    total.applied += zombie.applied + owner.applied;
    assert_eq!(total.applied, 130);

    assert_eq!(count(&db, "SELECT count(*) FROM paystream.payment").await, 130);
    let positions: Vec<(i32, i64)> = db
        .query(
            "SELECT partition, next_offset FROM paystream.consumer_position WHERE consumer_group = $1 ORDER BY 1",
            &[&config.processor.group_id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(positions, vec![(0, 120), (1, 10)]);
    let load = Load { distinct: 130, poison: 0, total: Decimal::new(100, 2) * Decimal::from(130) };
    assert_exact(&db, &load).await;
}

/// The database refuses what would break the ledger, whoever writes it: a transfer of no
/// money or of a negative amount, one from a journal line to itself, a journal's transfer
/// written twice, and any update, delete or truncation of transfers (append-only). Half a
/// journal has nowhere to go: a transfer is both its sides, and the views `journal` and
/// `posting` take no rows. Each with its SQLSTATE, so that the processor's disposition
/// (reject) applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_refuses_one_sided_amounts_and_rewrites() {
    use tokio_postgres::error::SqlState;
    let (_, db) = setup().await;
    let journal = Uuid::now_v7();
    let insert = "INSERT INTO paystream.transfer (journal_id, seq, kind, reference, debit_line, debit_account,
                                                  credit_line, credit_account, currency, amount)
                  VALUES ($1, $2, 'test', 't', 0, 'provider_clearing:t', $3, 'receivable:t', 'BRL', $4)";
    let code = |e: tokio_postgres::Error| e.code().cloned();
    let refused = |r: Result<u64, tokio_postgres::Error>| r.map_err(code).err().flatten();

    for amount in [Decimal::ZERO, -Decimal::ONE] {
        let r = db.execute(insert, &[&journal, &0i16, &1i16, &amount]).await;
        assert_eq!(refused(r), Some(SqlState::CHECK_VIOLATION), "amount {amount}");
    }
    let to_itself = db.execute(insert, &[&journal, &0i16, &0i16, &Decimal::ONE]).await;
    assert_eq!(refused(to_itself), Some(SqlState::CHECK_VIOLATION), "a line to itself");
    for view in [
        "INSERT INTO paystream.posting (journal_id, line, account, currency, amount) VALUES ($1, 0, 'a', 'BRL', 1)",
        "INSERT INTO paystream.journal (id, kind, reference) VALUES ($1, 'test', 't')",
    ] {
        assert!(db.execute(view, &[&journal]).await.is_err(), "{view}");
    }

    db.execute(insert, &[&journal, &0i16, &1i16, &Decimal::ONE]).await.unwrap();
    let twice = db.execute(insert, &[&journal, &0i16, &1i16, &Decimal::ONE]).await;
    assert_eq!(refused(twice), Some(SqlState::UNIQUE_VIOLATION), "the same transfer twice");
    for rewrite in [
        "UPDATE paystream.transfer SET amount = 2 WHERE journal_id = $1",
        "DELETE FROM paystream.transfer WHERE journal_id = $1",
    ] {
        let r = db.execute(rewrite, &[&journal]).await;
        assert_eq!(refused(r), Some(SqlState::RESTRICT_VIOLATION), "{rewrite}");
    }
    let truncate = db.batch_execute("TRUNCATE paystream.transfer").await;
    assert_eq!(truncate.map_err(code).err().flatten(), Some(SqlState::RESTRICT_VIOLATION), "truncate");
    let lines: Vec<(i16, String, Decimal)> = db
        .query("SELECT line, account, amount FROM paystream.posting WHERE journal_id = $1 ORDER BY line", &[&journal])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        lines,
        vec![(0, "provider_clearing:t".to_owned(), Decimal::ONE), (1, "receivable:t".to_owned(), -Decimal::ONE)],
        "the journal stands as written, its two lines in the posting view"
    );
}

/// PostgreSQL is down for 45 s, longer than the consumer's `max.poll.interval.ms` (30 s),
/// while webhooks keep arriving and the processor's queue fills (a small `queued_max`): the
/// processor waits, keeps its place in the group or takes it back, and once the database is
/// back applies every payment exactly once. Nothing stops it for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgres_outage_longer_than_the_poll_interval_loses_and_doubles_nothing() {
    let pg = crate::harness::PrivatePostgres::start().await;
    let url = paystream_common::testing::create_database(&pg.base_url, "pgoutage").await;
    let p = crate::harness::Pipeline::start_with(|c| {
        c.postgres.url = url.clone();
        c.processor.batch_max = 10;
        c.processor.queued_max = 40;
    })
    .await;
    let installments = p.installments().await;
    let (first, second) = (50usize, 250usize);
    let post = |range: std::ops::Range<usize>| {
        let bodies: Vec<_> = range
            .map(|i| {
                p.payment(
                    &format!("msg_out_{i}"),
                    &format!("pay_out_{i}"),
                    installments[i % installments.len()].0,
                    "0.01",
                )
            })
            .collect();
        let (ingest, http) = (p.ingest, p.http.clone());
        async move {
            for (headers, body) in bodies {
                let mut request = http
                    .post(format!("http://{ingest}/webhooks/demo-standard"))
                    .header("content-type", "application/json")
                    .body(body);
                for (k, v) in &headers {
                    request = request.header(*k, v);
                }
                assert_eq!(request.send().await.unwrap().status().as_u16(), 202);
            }
        }
    };
    post(0..first).await;
    assert_eq!(wait_for(&p.db, APPLIED, first as i64, Duration::from_secs(60)).await, first as i64);
    pg.crash();
    post(first..first + second).await;
    tokio::time::sleep(Duration::from_secs(45)).await;
    pg.start_again();
    let db = crate::harness::connect_db(&p.config).await;
    let n = (first + second) as i64;
    assert_eq!(wait_for(&db, APPLIED, n, Duration::from_secs(180)).await, n, "every payment applied after the outage");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(count(&db, APPLIED).await, n, "and none twice");
    let paid: Decimal =
        db.query_one("SELECT coalesce(sum(amount), 0) FROM paystream.payment", &[]).await.unwrap().get(0);
    assert_eq!(paid, Decimal::new(n, 2));
    p.stop().await;
}

/// Two members share the group; one is killed with SIGKILL mid-load while the other keeps
/// running. Kafka's coordinator expires the dead member's session (10 s) and hands its
/// partitions to the survivor, which starts them inside record batches at their stored
/// positions: everything is applied exactly once, no restart needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_killed_while_another_runs_hands_its_partitions_over() {
    let (mut config, db) = setup().await;
    config.processor.seek_to_stored_position = true;
    let load = fill(&config, &db, 6000).await;
    let a = Service::start("processor", &config);
    let b = Service::start("processor", &config);
    let seen = wait_for(&db, APPLIED, load.distinct / 4, Duration::from_secs(120)).await;
    assert!(seen < load.distinct, "killed before the end ({seen})");
    a.kill9();
    let applied = wait_for(&db, APPLIED, load.distinct, Duration::from_secs(120)).await;
    assert_eq!(applied, load.distinct, "the survivor applied the dead member's partitions");
    wait_for(&db, "SELECT count(*) FROM paystream.dead_letters", load.poison, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    b.terminate();
    assert_exact(&db, &load).await;
}

/// One payment whose installment a session of the test holds locked, so that its
/// transaction stays in flight, then five payments of other installments on other partitions
/// (a processor over 6 partitions started with `env`). Returns the database, the locking
/// session (its transaction open) and the processor.
async fn five_behind_a_blocked_transaction(
    env: &[(&str, String)],
) -> (tokio_postgres::Client, tokio_postgres::Client, Service) {
    let (config, db) = setup().await;
    assert!(config.processor.overlap_min > 5 && config.processor.transactions > 1);
    let installments = seeded_installments(&db).await;
    let producer: FutureProducer = paystream_common::kafka::producer_config(&config.kafka, "overlap").create().unwrap();
    let send = |i: usize, partition: i32| {
        let command = payment_of_one(format!("msg_{i}"), format!("pay_{i}"), installments[i]);
        let bytes = encode(&command).unwrap();
        let key = installments[i].to_string();
        let headers = crate::harness::command_headers(&config, key.as_bytes(), &bytes);
        let producer = producer.clone();
        let topic = config.kafka.inbound_topic.clone();
        async move {
            let record = FutureRecord::to(&topic).partition(partition).key(&key).payload(&bytes).headers(headers);
            producer.send(record, Duration::from_secs(30)).await.unwrap();
        }
    };
    let blocker = crate::harness::connect_db(&config).await;
    blocker.batch_execute("BEGIN").await.unwrap();
    blocker.execute("SELECT 1 FROM paystream.installment WHERE id = $1 FOR UPDATE", &[&installments[0]]).await.unwrap();
    send(0, 0).await;
    let member = Service::start_with("processor", &config, env);
    let blocked = "SELECT count(*) FROM pg_stat_activity \
                   WHERE datname = current_database() AND wait_event_type = 'Lock'";
    assert_eq!(wait_for(&db, blocked, 1, Duration::from_secs(60)).await, 1, "the first payment's transaction waits");
    for i in 1..=5 {
        send(i, i as i32).await;
    }
    (db, blocker, member)
}

/// Beside a transaction in flight, a few waiting payments do not start a transaction of
/// their own (`processor.overlap_min`): they wait for it to end and then commit together.
/// Before, each was committed at once in small transactions beside the blocked one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_few_waiting_payments_wait_for_the_transaction_in_flight_and_commit_together() {
    let env = [("PAYSTREAM_PROCESSOR__OVERLAP_WAIT_MAX_MS", "60000".to_string())];
    let (db, blocker, member) = five_behind_a_blocked_transaction(&env).await;
    // Time for the five to be received and handed to the committers; the assertion does not
    // depend on it: however long they wait, they cannot commit while the first transaction is
    // in flight (for up to a minute).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(count(&db, APPLIED).await, 0, "nothing committed beside the blocked transaction");
    blocker.batch_execute("COMMIT").await.unwrap();
    assert_eq!(wait_for(&db, APPLIED, 6, Duration::from_secs(60)).await, 6);
    let transactions =
        count(&db, "SELECT count(DISTINCT xmin::text) FROM paystream.payment WHERE provider_payment_id <> 'pay_0'")
            .await;
    assert_eq!(transactions, 1, "the five waiting payments committed in one transaction");
    member.terminate();
}

/// ... but for `processor.overlap_wait_max_ms` at most: a transaction stuck on a lock that
/// another session holds does not hold up the other partitions' payments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_stuck_on_a_lock_does_not_hold_up_the_other_partitions() {
    let (db, blocker, member) = five_behind_a_blocked_transaction(&[]).await;
    assert_eq!(wait_for(&db, APPLIED, 5, Duration::from_secs(60)).await, 5, "the five committed beside it");
    assert_eq!(count(&db, "SELECT count(*) FROM paystream.payment WHERE provider_payment_id = 'pay_0'").await, 0);
    blocker.batch_execute("COMMIT").await.unwrap();
    assert_eq!(wait_for(&db, APPLIED, 6, Duration::from_secs(60)).await, 6);
    member.terminate();
}
