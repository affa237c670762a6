//! The relay measured alone: events/s drained from a filled outbox beside the relay's own
//! producer sending the same records to the same broker with no database (the plain
//! producer), then commit-to-Kafka latency with a writer committing outbox rows and a reader
//! reading them back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rust_decimal::Decimal;
use tokio::net::TcpListener;
use uuid::Uuid;

use paystream_common::{Config, Shutdown};
use paystream_processor::outbox::OutboxRows;
use paystream_relay::Record;
use paystream_schemas::{encode, EventType, PaymentEvent};

use super::error::BenchError;
use super::services::{db, unique};
use crate::loadgen::{new_histogram, Latency};

/// An outbox row's event as the bench writes it: key, event id, Avro bytes.
type Row = (String, Uuid, Vec<u8>);

/// A `PaymentApplied` event of about 200 bytes, the size of the processor's.
fn event(aggregate: Uuid, seq: u64) -> PaymentEvent {
    PaymentEvent {
        event_id: Uuid::new_v4(),
        event_type: EventType::PaymentApplied,
        occurred_at_ms: 1,
        aggregate_id: aggregate,
        provider: "bench".into(),
        payment_id: format!("pay_{seq:012}"),
        installment_id: Some(aggregate),
        contract_id: Some(aggregate),
        amount: Decimal::new(12345, 2),
        currency: "BRL".into(),
        reason: None,
        allocation: None,
        business_date: None,
    }
}

/// Rounds of the relay drain measurement: plain producer and relay take turns, and the best
/// of each is compared. This shared machine's speed drifts by up to 2x within minutes (one
/// round of each can land on a fast and a slow stretch); its noise only ever slows a run
/// down, so the best of several is the one least disturbed.
const RELAY_ROUNDS: usize = 5;

/// Events/s drained by one relay from an outbox of `events` events, and events/s of a plain
/// producer sending the same bytes with the same keys to the same broker: the best of
/// `RELAY_ROUNDS` turns each.
pub async fn relay(config: &Config, events: u64) -> Result<(f64, f64), BenchError> {
    let config = unique(config, "relay");
    paystream_common::kafka::ensure_topics(&config.kafka, Duration::from_secs(30)).await?;
    let aggregates: Vec<Uuid> = (0..1000).map(|_| Uuid::new_v4()).collect();
    let rows: Vec<Row> = (0..events)
        .map(|i| outbox_row(event(aggregates[(i as usize) % aggregates.len()], i)))
        .collect::<Result<_, _>>()?;

    // The plain producer: the broker's and client's limit for these bytes. The relay's own
    // producer (same settings, one delivery count per batch) sending batches back to back:
    // the relay without its database. Batches of 16,384, the fastest way it sends (measured,
    // events/s: 971,749 in batches of 16,384; 949,798 of 8,192; 824,834 of 50,000; 654,048
    // all 300,000 at once; 856,084 in two concurrent streams of 16,384). The same records as
    // the relay's: key, value and headers.
    let producer = paystream_relay::Producer::new(&config.kafka, "bench-plain")?;
    let plain_topic = config.kafka.deadletter_topic.clone();
    fn records<'a>(topic: &'a str, rows: &'a [Row]) -> Vec<Record<'a>> {
        rows.iter()
            .map(|(key, id, value)| Record {
                topic,
                key: key.as_bytes(),
                payload: value,
                headers: paystream_relay::event_headers(id, "PaymentApplied", value),
                timestamp: None,
                event_id: *id,
            })
            .collect()
    }
    const PLAIN_BATCH: usize = 16_384;

    // The relay runs throughout. Before the clock starts, it publishes one row (lanes taken,
    // producer warm), and the plain producer one record: neither side is timed fetching
    // metadata.
    let mut client = db(&config).await?;
    let shutdown = Shutdown::new();
    let admin =
        TcpListener::bind(config.relay.admin_listen).await.map_err(BenchError::io("bind the relay's admin port"))?;
    let task = {
        let (c, s) = (config.clone(), shutdown.clone());
        tokio::spawn(async move { paystream_relay::run(c, admin, s).await })
    };
    producer.send_all(records(&plain_topic, &rows[..1])).await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    let span = include_str!("../../sql/bench_outbox_span.sql");
    let tx = client.transaction().await?;
    fill(&tx, &config.kafka.events_topic, &rows[..1]).await?;
    tx.commit().await?;
    let (first, last): (i64, i64) = {
        let row = client.query_one(span, &[&config.kafka.events_topic]).await?;
        (row.get(0), row.get(1))
    };
    wait_drained(&client, first, last, deadline).await?;

    let (mut best_relay, mut best_plain) = (0f64, 0f64);
    for _ in 0..RELAY_ROUNDS {
        let started = Instant::now();
        for batch in rows.chunks(PLAIN_BATCH) {
            producer.send_all(records(&plain_topic, batch)).await?;
        }
        best_plain = best_plain.max(events as f64 / started.elapsed().as_secs_f64());

        // The whole outbox filled in one transaction, its rows grouped as the processor's
        // transactions group theirs (at most processor.transaction_max payments, about one
        // event each), and timed from its commit. The outbox is vacuumed first: the rows
        // earlier rounds deleted would otherwise still be walked past (as in production,
        // where autovacuum keeps this queue table small).
        client.batch_execute("VACUUM paystream.outbox").await?;
        let tx = client.transaction().await?;
        for chunk in rows.chunks(config.processor.transaction_max) {
            fill(&tx, &config.kafka.events_topic, chunk).await?;
        }
        let row = tx.query_one(span, &[&config.kafka.events_topic]).await?;
        let (first, last): (i64, i64) = (row.get(0), row.get(1));
        tx.commit().await?;
        // As the processor does: the relay wakes on the notification, not on its poll.
        client.batch_execute(paystream_common::outbox::NOTIFY).await?;
        let started = Instant::now();
        wait_drained(&client, first, last, deadline).await?;
        best_relay = best_relay.max(events as f64 / started.elapsed().as_secs_f64());
    }
    shutdown.cancel();
    let _ = task.await;
    Ok((best_relay, best_plain))
}

/// Most events a closed-loop writer keeps committed and not yet read back: the queue of the
/// sustained-rate run stays bounded, so that it measures a rate the relay keeps up with.
const SUSTAINED_IN_FLIGHT: u64 = 20_000;

/// Commit-to-Kafka flow through the relay for `seconds`: a writer commits outbox rows (with
/// the processor's NOTIFY) while a consumer reads them back from
/// `paystream.payments.events.v1`. With `rate`, the writer commits every 5 ms at that rate,
/// open loop; without, it commits as fast as the relay publishes (closed loop, at most
/// `SUSTAINED_IN_FLIGHT` events committed and not yet read): the rate the writer, the relay
/// and the reader sustain together on this machine. Returns the rate read back in the timed
/// window, and each event's latency from its commit returning to its record read.
pub async fn relay_flow(config: &Config, rate: Option<f64>, seconds: u64) -> Result<(f64, Latency), BenchError> {
    let config = unique(config, "relay-flow");
    paystream_common::kafka::ensure_topics(&config.kafka, Duration::from_secs(30)).await?;
    let consumer: StreamConsumer =
        paystream_common::kafka::consumer_config(&config.kafka, &config.processor.group_id, "bench-latency")
            .set("enable.auto.commit", "false")
            // The local broker holds every fetch for the whole wait even when records are
            // there (Apache Kafka answers as soon as they are): a short wait keeps the
            // reader's own polling out of the relay's latency.
            .set("fetch.wait.max.ms", "1")
            .create()?;
    consumer.subscribe(&[&config.kafka.events_topic])?;
    let read: Arc<Mutex<HashMap<Uuid, Instant>>> = Arc::default();
    let stop = Shutdown::new();
    let reader = {
        let (read, stop) = (read.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    _ = stop.cancelled() => break,
                    m = consumer.recv() => m,
                };
                let at = Instant::now();
                let Ok(message) = message else { continue };
                let id = message
                    .headers()
                    .and_then(|h| h.iter().find(|h| h.key == "event_id").and_then(|h| h.value))
                    .and_then(|v| Uuid::try_parse_ascii(v).ok());
                if let (Some(id), Ok(mut read)) = (id, read.lock()) {
                    read.entry(id).or_insert(at);
                }
            }
        })
    };
    let shutdown = Shutdown::new();
    let admin =
        TcpListener::bind(config.relay.admin_listen).await.map_err(BenchError::io("bind the relay's admin port"))?;
    let task = {
        let (c, s) = (config.clone(), shutdown.clone());
        tokio::spawn(async move { paystream_relay::run(c, admin, s).await })
    };
    let mut client = db(&config).await?;
    let aggregates: Vec<Uuid> = (0..1000).map(|_| Uuid::new_v4()).collect();
    let mut committed: HashMap<Uuid, Instant> = HashMap::new();
    let tick = Duration::from_millis(5);
    // Warm-up: the relay has its lanes and the consumer its partitions before the clock runs.
    let warm_until = Instant::now() + Duration::from_secs(3);
    let started = Instant::now() + Duration::from_secs(3);
    let end = started + Duration::from_secs(seconds);
    let mut sent = 0u64;
    let mut seq = 0u64;
    let mut next = Instant::now();
    while Instant::now() < end {
        let warm = Instant::now() < warm_until;
        let due = match rate {
            _ if warm => 1,
            Some(rate) => ((started.elapsed().as_secs_f64() * rate) as u64).saturating_sub(sent),
            None => {
                let read = read.lock().map(|r| r.len() as u64).unwrap_or(0);
                (SUSTAINED_IN_FLIGHT + read).saturating_sub(committed.len() as u64).min(1_000)
            }
        };
        if warm || rate.is_some() || due == 0 {
            tokio::time::sleep_until(next.into()).await;
            next = (next + tick).max(Instant::now());
        }
        if due == 0 {
            continue;
        }
        let rows: Vec<Row> = (0..due)
            .map(|_| {
                seq += 1;
                outbox_row(event(aggregates[(seq as usize) % aggregates.len()], seq))
            })
            .collect::<Result<_, _>>()?;
        let tx = client.transaction().await?;
        fill(&tx, &config.kafka.events_topic, &rows).await?;
        tx.commit().await?;
        client.batch_execute(paystream_common::outbox::NOTIFY).await?;
        let at = Instant::now();
        if !warm {
            sent += due;
        }
        committed.extend(rows.iter().map(|(_, id, _)| (*id, at)));
    }
    // Wait for the backlog (an open-loop rate above what the relay sustains leaves one) as
    // long as records keep arriving; 30 s without one is the end. Only this writer's events
    // are on this run's topic, so all are read once as many ids were read as committed (a
    // count, not a lookup of every id under the lock the reader stamps arrivals with).
    let (mut seen, mut progress_at) = (0, Instant::now());
    loop {
        let count = read.lock().map(|r| r.len()).unwrap_or(0);
        if count > seen {
            (seen, progress_at) = (count, Instant::now());
        }
        if count >= committed.len() || progress_at.elapsed() > Duration::from_secs(30) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    shutdown.cancel();
    let _ = reader.await;
    let _ = task.await;
    let read = read.lock().map(|r| r.clone()).unwrap_or_default();
    let mut histogram = new_histogram();
    let mut missing = 0u64;
    for (id, at) in &committed {
        match read.get(id) {
            // The warm-up's events count as delivered, not as latency.
            Some(seen) if *at >= warm_until => {
                let _ = histogram.record(seen.saturating_duration_since(*at).as_micros().max(1) as u64);
            }
            Some(_) => {}
            None => missing += 1,
        }
    }
    if missing > 0 {
        return Err(BenchError::Incomplete(format!("{missing} committed events never reached the topic")));
    }
    let in_window = read.values().filter(|at| **at >= started && **at < end).count();
    Ok((in_window as f64 / seconds as f64, Latency::from(&histogram)))
}

/// Inserts `rows` (key, event id, payload) into the outbox as the processor does: the events
/// of one transaction grouped by lane, with the processor's own code and statement.
async fn fill(tx: &tokio_postgres::Transaction<'_>, topic: &str, rows: &[Row]) -> Result<(), tokio_postgres::Error> {
    let mut outbox = OutboxRows::default();
    for (key, id, payload) in rows {
        outbox.push(topic, key, *id, "PaymentApplied", payload);
    }
    let insert = tx.prepare(paystream_processor::outbox::INSERT).await?;
    outbox.insert(tx, &insert).await
}

/// Waits until no outbox row with an id in `first..=last` is left (or `deadline`), probing
/// every 10 ms. Each probe walks the primary key from the oldest row the previous one found,
/// so that watching costs the relay next to nothing: from `first` each time, it would step
/// over every entry the relay deleted so far (measured: a tenth of a core during a drain).
async fn wait_drained(
    client: &tokio_postgres::Client,
    first: i64,
    last: i64,
    deadline: Instant,
) -> Result<(), tokio_postgres::Error> {
    let sql = include_str!("../../sql/bench_outbox_oldest_in_span.sql");
    let mut from = first;
    while Instant::now() < deadline {
        match client.query_one(sql, &[&from, &last]).await?.get::<_, Option<i64>>(0) {
            Some(oldest) => from = oldest,
            None => break,
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// The outbox row of one event.
fn outbox_row(event: PaymentEvent) -> Result<Row, BenchError> {
    Ok((event.aggregate_id.to_string(), event.event_id, encode(&event)?))
}
