//! The relay: every committed fact reaches the topic, in order per aggregate, with several
//! relays, a relay killed mid-drain, and a broker that goes away and comes back.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use rust_decimal::Decimal;
use tokio::net::TcpListener;
use uuid::Uuid;

use paystream_common::{Config, Shutdown};
use paystream_processor::outbox::OutboxRows;
use paystream_schemas::{decode, EventType, PaymentEvent};

use crate::harness::{Broker, Service};

struct Outbox {
    config: Config,
    db: tokio_postgres::Client,
    /// event id -> (aggregate, sequence within the aggregate)
    written: HashMap<Uuid, (Uuid, u64)>,
    next_seq: HashMap<Uuid, u64>,
    aggregates: Vec<Uuid>,
}

impl Outbox {
    async fn new(config: Config, aggregates: usize) -> Self {
        let db = crate::harness::connect_db(&config).await;
        paystream_common::kafka::ensure_topics(&config.kafka, Duration::from_secs(30)).await.unwrap();
        Self {
            config,
            db,
            written: HashMap::new(),
            next_seq: HashMap::new(),
            aggregates: (0..aggregates).map(|_| Uuid::new_v4()).collect(),
        }
    }

    /// Writes `n` facts round-robin over the aggregates in one transaction, as the processor
    /// would (with its code): each aggregate's sequence numbers ascending, the events grouped
    /// in rows by lane.
    async fn write(&mut self, n: usize) {
        let mut outbox = OutboxRows::default();
        for i in 0..n {
            let aggregate = self.aggregates[i % self.aggregates.len()];
            let seq = self.next_seq.entry(aggregate).or_default();
            *seq += 1;
            let event = PaymentEvent {
                event_id: Uuid::new_v4(),
                event_type: EventType::PaymentApplied,
                occurred_at_ms: 1,
                aggregate_id: aggregate,
                provider: "p".into(),
                payment_id: seq.to_string(),
                installment_id: Some(aggregate),
                contract_id: None,
                amount: Decimal::new(100, 2),
                currency: "BRL".into(),
                reason: None,
                allocation: None,
                business_date: None,
            };
            outbox.push_event(&self.config.kafka.events_topic, &event).unwrap();
            self.written.insert(event.event_id, (aggregate, *seq));
        }
        let insert = self.db.prepare(paystream_processor::outbox::INSERT).await.unwrap();
        outbox.insert(&self.db, &insert).await.unwrap();
        self.db.batch_execute("NOTIFY paystream_outbox").await.unwrap();
    }

    /// Reads the events topic until every written event arrived (or `timeout`), and checks:
    /// nothing lost, and per aggregate the first occurrences ascend. Returns the number of
    /// repeats (allowed: consumers dedupe on event_id).
    async fn assert_all_in_order(&self, reader: &crate::harness::ReaderOnly, timeout: Duration) -> usize {
        let want: HashSet<Uuid> = self.written.keys().copied().collect();
        let records = reader
            .read_topic(&self.config.kafka.events_topic, timeout, |r| {
                let got: HashSet<Uuid> = r.iter().filter_map(|r| r.headers.get("event_id")?.parse().ok()).collect();
                want.is_subset(&got)
            })
            .await;
        let mut seen = HashSet::new();
        let mut last: HashMap<Uuid, u64> = HashMap::new();
        let mut repeats = 0;
        for r in &records {
            let event = decode::<PaymentEvent>(&r.payload).unwrap();
            assert_eq!(r.key.as_deref(), Some(event.aggregate_id.to_string().as_str()), "keyed by aggregate");
            if !seen.insert(event.event_id) {
                repeats += 1;
                continue;
            }
            let (aggregate, seq) = self.written[&event.event_id];
            let previous = last.insert(aggregate, seq).unwrap_or(0);
            assert!(seq > previous, "aggregate {aggregate}: event {seq} after {previous}");
        }
        // Read before judging what arrived: a miss with nothing pending is the reader's (or the
        // broker's), with rows pending the relay's.
        let pending: i64 = self.db.query_one("SELECT pending FROM paystream.outbox_backlog", &[]).await.unwrap().get(0);
        let missing = want.difference(&seen).count();
        assert_eq!(
            missing,
            0,
            "{missing} of {} events never reached the topic ({} records read, {pending} events still in the outbox)",
            want.len(),
            records.len()
        );
        assert_eq!(pending, 0, "published rows are removed");
        repeats
    }
}

async fn relay_in_process(config: &Config) -> (Shutdown, tokio::task::JoinHandle<()>) {
    let shutdown = Shutdown::new();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (c, s) = (config.clone(), shutdown.clone());
    (shutdown, tokio::spawn(async move { paystream_relay::run(c, admin, s).await.unwrap() }))
}

fn relay_config(mut config: Config) -> Config {
    // A few rows a batch (each up to 128 events), so that a drain takes many batches.
    config.relay.batch_rows = 4;
    config.relay.lane_claim_interval_ms = 200;
    config.relay.poll_interval_ms = 50;
    config
}

/// Three relays drain one outbox at once: they share the lanes, and on the topic every
/// aggregate's events arrive in the order they were committed, none missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_relays_keep_per_aggregate_order() {
    let config = relay_config(paystream_common::testing::isolated_config().await);
    let mut outbox = Outbox::new(config.clone(), 40).await;
    outbox.write(2000).await;
    let relays =
        vec![relay_in_process(&config).await, relay_in_process(&config).await, relay_in_process(&config).await];
    // Keep writing while they drain, so lanes are shared under load.
    for _ in 0..5 {
        outbox.write(400).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reader = crate::harness::Pipeline::reader(config.clone());
    outbox.assert_all_in_order(&reader, Duration::from_secs(60)).await;
    for (shutdown, task) in relays {
        shutdown.cancel();
        let _ = task.await;
    }
}

/// A relay killed with SIGKILL mid-drain and another taking over: every event is published,
/// in order per aggregate (a batch in flight at the kill may be published twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relay_killed_mid_drain_loses_nothing() {
    let config = relay_config(paystream_common::testing::isolated_config().await);
    let mut outbox = Outbox::new(config.clone(), 25).await;
    outbox.write(20_000).await;
    let relay = Service::start("relay", &config);
    // Kill it once some, not all, rows are gone.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let pending: i64 =
            outbox.db.query_one("SELECT pending FROM paystream.outbox_backlog", &[]).await.unwrap().get(0);
        if pending < 17_000 || std::time::Instant::now() > deadline {
            assert!(pending > 0, "killed before the end");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    relay.kill9();
    let relay = Service::start("relay", &config);
    let reader = crate::harness::Pipeline::reader(config.clone());
    outbox.assert_all_in_order(&reader, Duration::from_secs(90)).await;
    relay.terminate();
}

/// The broker goes away for a while under load and comes back: the relay keeps the rows until
/// the broker acknowledges them, then publishes everything, in order per aggregate.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_outage_delays_but_loses_nothing() {
    let mut broker = Broker::start().await;
    let mut config = relay_config(paystream_common::testing::isolated_config().await);
    config.kafka.brokers = broker.addr.clone();
    config.kafka.message_timeout_ms = 2000;
    let mut outbox = Outbox::new(config.clone(), 20).await;
    let (shutdown, task) = relay_in_process(&config).await;
    outbox.write(1000).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    broker.kill();
    outbox.write(1000).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let pending: i64 = outbox.db.query_one("SELECT pending FROM paystream.outbox_backlog", &[]).await.unwrap().get(0);
    assert!(pending >= 1000, "rows written during the outage wait in the outbox ({pending})");
    broker.restart().await;
    outbox.write(1000).await;
    let reader = crate::harness::Pipeline::reader(config.clone());
    outbox.assert_all_in_order(&reader, Duration::from_secs(90)).await;
    shutdown.cancel();
    let _ = task.await;
}

/// Migration 6 converts rows waiting in migration 4's layout (four parallel arrays) into
/// frames, in order and byte for byte: read back by the relay's reader and by the SQL
/// function, and published by the relay as they were written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_rows_survive_the_framing_migration() {
    use paystream_common::outbox::Frames;
    use paystream_common::postgres::MIGRATIONS;
    let config = relay_config(paystream_common::testing::isolated_config().await);
    let db = crate::harness::connect_db(&config).await;
    db.batch_execute("DROP SCHEMA paystream CASCADE").await.unwrap();
    for m in MIGRATIONS.iter().filter(|m| m.version < 6) {
        db.batch_execute(m.sql).await.unwrap();
    }
    let topic = &config.kafka.events_topic;
    let events: Vec<(String, Uuid, &str, Vec<u8>)> = (0u8..5)
        .map(|i| {
            (format!("agg-{}", i % 2), Uuid::new_v4(), ["PaymentApplied", "Chargeback"][usize::from(i % 2)], vec![i; 3])
        })
        .collect();
    for chunk in events.chunks(3) {
        let keys: Vec<&str> = chunk.iter().map(|e| e.0.as_str()).collect();
        let ids: Vec<Uuid> = chunk.iter().map(|e| e.1).collect();
        let types: Vec<&str> = chunk.iter().map(|e| e.2).collect();
        let payloads: Vec<&[u8]> = chunk.iter().map(|e| e.3.as_slice()).collect();
        db.execute(
            "INSERT INTO paystream.outbox (lane, topic, events, keys, event_ids, event_types, payloads)
             VALUES (1, $1, $2, $3, $4, $5, $6)",
            &[topic, &(chunk.len() as i16), &keys, &ids, &types, &payloads],
        )
        .await
        .unwrap();
    }
    db.batch_execute(MIGRATIONS.iter().find(|m| m.version == 6).unwrap().sql).await.unwrap();

    let rows = db.query("SELECT frames FROM paystream.outbox ORDER BY id", &[]).await.unwrap();
    let framed: Vec<(String, Uuid, String, Vec<u8>)> = rows
        .iter()
        .flat_map(|r| {
            Frames::new(r.get(0))
                .map(|f| f.map(|f| (f.key.to_owned(), f.event_id, f.event_type.to_owned(), f.payload.to_vec())))
                .collect::<Vec<_>>()
        })
        .collect::<Result<_, _>>()
        .unwrap();
    let sql: Vec<(String, Uuid, String, Vec<u8>)> = db
        .query("SELECT e.* FROM paystream.outbox o, paystream.outbox_events(o.frames) e ORDER BY o.id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let written: Vec<(String, Uuid, String, Vec<u8>)> =
        events.iter().map(|(k, id, t, p)| (k.clone(), *id, (*t).to_owned(), p.clone())).collect();
    assert_eq!(framed, written, "the relay's reader");
    assert_eq!(sql, written, "paystream.outbox_events");

    // The later migrations, and the roles' grants the runner applies after them: the relay
    // logs in as paystream_relay.
    for m in MIGRATIONS.iter().filter(|m| m.version > 6) {
        db.batch_execute(m.sql).await.unwrap();
    }
    db.batch_execute("CALL paystream.apply_role_privileges()").await.unwrap();

    paystream_common::kafka::ensure_topics(&config.kafka, Duration::from_secs(30)).await.unwrap();
    let (shutdown, task) = relay_in_process(&config).await;
    let reader = crate::harness::Pipeline::reader(config.clone());
    let records = reader.read_topic(topic, Duration::from_secs(30), |r| r.len() >= events.len()).await;
    let mut published: Vec<(String, Uuid, String, Vec<u8>)> = records
        .iter()
        .map(|r| {
            let header = |name: &str| r.headers.get(name).cloned().unwrap_or_default();
            (
                r.key.clone().unwrap_or_default(),
                header("event_id").parse().unwrap(),
                header("event_type"),
                r.payload.clone(),
            )
        })
        .collect();
    // Per key in order (the topic orders only within a partition).
    published.sort_by_key(|e| e.0.clone());
    let mut expected = written.clone();
    expected.sort_by_key(|e| e.0.clone());
    assert_eq!(published, expected, "published as written");
    shutdown.cancel();
    let _ = task.await;
}

/// A row whose frames do not add up to its count (only a hand-written row can be so) is
/// refused whole: nothing of it reaches the topic and it stays in the outbox, its lane held
/// back while the other lanes are published. Once an operator repairs it, the relay
/// publishes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_row_is_kept_not_published_in_part() {
    use paystream_common::outbox::push_frame;
    let mut config = relay_config(paystream_common::testing::isolated_config().await);
    // One worker owns every lane: the good lane goes on beside the held one in one drain loop.
    config.relay.workers = 1;
    let outbox = Outbox::new(config.clone(), 1).await;
    let topic = &config.kafka.events_topic;
    let mut frames = Vec::new();
    for i in 0..2u8 {
        push_frame(&mut frames, "agg", &Uuid::new_v4(), "PaymentApplied", &[i; 40]);
    }
    let mut other = Vec::new();
    push_frame(&mut other, "other", &Uuid::new_v4(), "PaymentApplied", &[9; 40]);
    // Counted three, framed two: the table's check lets it in (its size is plausible). A
    // well-formed row of another lane is committed after it.
    outbox
        .db
        .execute("INSERT INTO paystream.outbox (lane, topic, events, frames) VALUES (0, $1, 3, $2)", &[topic, &frames])
        .await
        .unwrap();
    outbox
        .db
        .execute("INSERT INTO paystream.outbox (lane, topic, events, frames) VALUES (1, $1, 1, $2)", &[topic, &other])
        .await
        .unwrap();
    let (shutdown, task) = relay_in_process(&config).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let reader = crate::harness::Pipeline::reader(config.clone());
    let early = reader.read_topic(topic, Duration::from_secs(3), |_| false).await;
    let early: Vec<Vec<u8>> = early.iter().map(|r| r.payload.clone()).collect();
    assert_eq!(early, [vec![9u8; 40]], "the other lane is published, nothing of the refused row");
    let pending: i64 = outbox.db.query_one("SELECT pending FROM paystream.outbox_backlog", &[]).await.unwrap().get(0);
    assert_eq!(pending, 3, "the row stays");

    outbox.db.execute("UPDATE paystream.outbox SET events = 2", &[]).await.unwrap();
    let records = reader.read_topic(topic, Duration::from_secs(30), |r| r.len() >= 3).await;
    let payloads: Vec<Vec<u8>> = records.iter().map(|r| r.payload.clone()).filter(|p| p[0] != 9).collect();
    assert_eq!(payloads, [vec![0u8; 40], vec![1u8; 40]], "published whole and in order once repaired");
    shutdown.cancel();
    let _ = task.await;
}

/// A key whose outbox lane differs from `other`'s.
fn key_in_another_lane(other: &str) -> String {
    (0..)
        .map(|i| format!("aggregate-{i}"))
        .find(|k| paystream_common::outbox_lane(k) != paystream_common::outbox_lane(other))
        .unwrap()
}

/// One outbox row of one event for `key`, inserted on `client` (inside its transaction, if
/// it has one open); its id.
async fn insert_row(client: &tokio_postgres::Client, topic: &str, key: &str, seq: u64) -> i64 {
    let mut frames = Vec::new();
    paystream_common::outbox::push_frame(
        &mut frames,
        key,
        &Uuid::new_v4(),
        "PaymentApplied",
        seq.to_string().as_bytes(),
    );
    client
        .query_one(
            "INSERT INTO paystream.outbox (lane, topic, events, frames) VALUES ($1, $2, 1, $3) RETURNING id",
            &[&paystream_common::outbox_lane(key), &topic, &frames],
        )
        .await
        .unwrap()
        .get(0)
}

/// Processor transactions commit out of id order, and the relay's chained batches must not
/// turn that into an aggregate's events out of order. Step by step, with three sessions: A
/// writes row 1 (aggregate Y) and stays open; B writes and commits row 2 (another lane); the
/// relay takes row 2 (`after = 0`); A commits; C writes and commits row 3 (aggregate Y again,
/// as the processor does once Y's lock is free); the relay's next chained batch (`after = 2`)
/// must not take row 3 while row 1 waits. It takes nothing, the transaction ends, and the next
/// one takes 1 then 3. (Before the fix, the chained batch returned row 3.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_commit_never_lets_a_chained_batch_publish_out_of_order() {
    let config = paystream_common::testing::isolated_config().await;
    let topic = config.kafka.events_topic.clone();
    let (a, b, c, mut relay) = (
        crate::harness::connect_db(&config).await,
        crate::harness::connect_db(&config).await,
        crate::harness::connect_db(&config).await,
        crate::harness::connect_db(&config).await,
    );
    let y = "aggregate-y".to_owned();
    let x = key_in_another_lane(&y);
    let lanes = vec![paystream_common::outbox_lane(&y), paystream_common::outbox_lane(&x)];
    let take = include_str!("../../../relay/sql/outbox_take_batch.sql");

    a.batch_execute("BEGIN").await.unwrap();
    let row1 = insert_row(&a, &topic, &y, 1).await;
    let row2 = insert_row(&b, &topic, &x, 1).await;
    assert!(row1 < row2);
    let tx = relay.transaction().await.unwrap();
    tx.batch_execute("SET LOCAL enable_sort = off").await.unwrap();
    let taken: Vec<i64> = tx.query(take, &[&lanes, &1i64, &0i64]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(taken, [row2], "row 1 is not committed yet");
    a.batch_execute("COMMIT").await.unwrap();
    let row3 = insert_row(&c, &topic, &y, 2).await;
    let chained: Vec<i64> = tx.query(take, &[&lanes, &10i64, &row2]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert!(chained.is_empty(), "row {row3} (Y's second) taken while row {row1} (Y's first) waits: {chained:?}");
    tx.commit().await.unwrap();
    let tx = relay.transaction().await.unwrap();
    let next: Vec<i64> = tx.query(take, &[&lanes, &10i64, &0i64]).await.unwrap().iter().map(|r| r.get(0)).collect();
    let mut next = next;
    next.sort_unstable();
    assert_eq!(next, [row1, row3], "the next transaction takes Y's rows in order");
    tx.commit().await.unwrap();
}

/// A session that is not a relay but calls itself one (a psql opened to debug, a pooler)
/// does not change how relays share the lanes: every lane is still drained and every event
/// published. (Counting sessions by name, one relay gave half its lanes to the stray session,
/// and nobody drained them.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stray_session_named_like_a_relay_leaves_no_lane_undrained() {
    let config = relay_config(paystream_common::testing::isolated_config().await);
    let mut stray: tokio_postgres::Config = config.postgres.url.parse().unwrap();
    stray.application_name("paystream-relay");
    let (_stray, conn) = stray.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let mut outbox = Outbox::new(config.clone(), 64).await;
    let (shutdown, task) = relay_in_process(&config).await;
    outbox.write(3000).await;
    let reader = crate::harness::Pipeline::reader(config.clone());
    outbox.assert_all_in_order(&reader, Duration::from_secs(60)).await;
    shutdown.cancel();
    let _ = task.await;
}

/// An event the broker refuses for good (larger than the topic takes) is parked with the
/// broker's answer, not retried forever: the other events of its row and its lane are
/// published, the outbox empties, and `paystream.parked_events` shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_refused_for_good_is_parked_and_its_lane_goes_on() {
    let mut config = relay_config(paystream_common::testing::isolated_config().await);
    config.kafka.message_timeout_ms = 5000;
    paystream_common::kafka::ensure_topics(&config.kafka, Duration::from_secs(30)).await.unwrap();
    // The events topic takes records of at most 10,000 bytes.
    let admin = paystream_common::kafka::admin_client(&config.kafka).unwrap();
    let mut alter =
        rdkafka::admin::AlterConfig::new(rdkafka::admin::ResourceSpecifier::Topic(&config.kafka.events_topic));
    alter = alter.set("max.message.bytes", "10000");
    admin.alter_configs(&[alter], &rdkafka::admin::AdminOptions::new()).await.unwrap();
    let db = crate::harness::connect_db(&config).await;
    let key = "aggregate-big";
    let mut frames = Vec::new();
    let mut ids = Vec::new();
    for (i, size) in [10usize, 50_000, 10].into_iter().enumerate() {
        let id = Uuid::new_v4();
        ids.push(id);
        paystream_common::outbox::push_frame(&mut frames, key, &id, "PaymentApplied", &vec![b'0' + i as u8; size]);
    }
    db.execute(
        "INSERT INTO paystream.outbox (lane, topic, events, frames) VALUES ($1, $2, 3, $3)",
        &[&paystream_common::outbox_lane(key), &config.kafka.events_topic, &frames],
    )
    .await
    .unwrap();
    let (shutdown, task) = relay_in_process(&config).await;
    let reader = crate::harness::Pipeline::reader(config.clone());
    let records = reader
        .read_topic(&config.kafka.events_topic, Duration::from_secs(60), |r| {
            r.iter().any(|r| r.headers.get("event_id") == Some(&ids[2].to_string()))
        })
        .await;
    let published: HashSet<String> = records.iter().filter_map(|r| r.headers.get("event_id").cloned()).collect();
    assert!(published.contains(&ids[0].to_string()) && published.contains(&ids[2].to_string()), "{published:?}");
    assert!(!published.contains(&ids[1].to_string()));
    let parked: Vec<(Uuid, String)> = db
        .query("SELECT event_id, error FROM paystream.parked_events", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].0, ids[1]);
    let pending: i64 = db.query_one("SELECT pending FROM paystream.outbox_backlog", &[]).await.unwrap().get(0);
    assert_eq!(pending, 0);
    shutdown.cancel();
    let _ = task.await;
}
