//! `paystream events tail`: what downstream teams consume, decoded. Reads the events topic
//! with its own throwaway consumer (assigned partitions, no group, nothing committed), decodes
//! each value with the `.avsc`-backed types of `paystream_schemas`, and prints one JSON object
//! per line, what `kcat -C` plus an Avro decoder would give. `--since` seeks every partition
//! with Kafka's offsets-for-times API (the record timestamp is when the fact was committed).
//! Also the search behind `payments show`: a payment's published events near given times.

use std::collections::HashMap;
use std::io::Write as _;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};

use paystream_common::{kafka, Config};
use paystream_schemas::{decode, EventType, PaymentEvent};

/// Where to start reading.
#[derive(Debug, Clone, Copy)]
pub enum Start {
    /// The first record of every partition.
    Beginning,
    /// New records only.
    End,
    /// The first record of each partition whose timestamp is at or after this (ms since the epoch).
    Time(i64),
}

/// `paystream events tail` options.
#[derive(clap::Args)]
pub struct TailArgs {
    /// Only events of this type (repeat for several), e.g. PaymentApplied.
    #[arg(long = "type")]
    types: Vec<String>,
    /// Only records with this key (the aggregate id: the installment for payment facts).
    #[arg(long)]
    key: Option<String>,
    /// From the first record of every partition (default: new events only).
    #[arg(long, conflicts_with = "since")]
    from_beginning: bool,
    /// From this time: RFC 3339, or a span before now (`90s`, `15m`, `2h`, `7d`).
    #[arg(long)]
    since: Option<String>,
    /// Stop at the end of every partition as it was at the start, instead of following.
    #[arg(long)]
    exit_at_end: bool,
    /// Stop after printing this many events.
    #[arg(long)]
    max: Option<u64>,
}

/// An event as a JSON line: where it sat, its headers' id and type, and its decoded fields.
pub fn event_json(message: &BorrowedMessage<'_>) -> Value {
    let mut line = json!({
        "topic": message.topic(),
        "partition": message.partition(),
        "offset": message.offset(),
        "timestamp_ms": message.timestamp().to_millis(),
        "key": message.key().map(|k| String::from_utf8_lossy(k).into_owned()),
    });
    match decode::<PaymentEvent>(message.payload().unwrap_or_default()) {
        Ok(e) => {
            line["event_id"] = json!(e.event_id.to_string());
            line["event_type"] = json!(e.event_type.as_str());
            line["occurred_at_ms"] = json!(e.occurred_at_ms);
            line["aggregate_id"] = json!(e.aggregate_id.to_string());
            line["provider"] = json!(e.provider);
            line["payment_id"] = json!(e.payment_id);
            line["installment_id"] = json!(e.installment_id.map(|u| u.to_string()));
            line["contract_id"] = json!(e.contract_id.map(|u| u.to_string()));
            line["amount"] = json!(e.amount.to_string());
            line["currency"] = json!(e.currency);
            line["reason"] = json!(e.reason);
        }
        Err(error) => {
            // Keep what the headers say, so that an unknown writer's record is still found.
            let header = |name: &str| {
                message.headers().and_then(|h| {
                    h.iter()
                        .find(|h| h.key == name)
                        .and_then(|h| h.value)
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                })
            };
            line["event_id"] = json!(header("event_id"));
            line["event_type"] = json!(header("event_type"));
            line["error"] = json!(format!("not decodable as a PaymentEvent: {error}"));
        }
    }
    line
}

/// Where each partition of a reader starts and where it ended when the reader opened.
struct Span {
    start: i64,
    end: i64,
}

/// A consumer of `topic` assigned to every partition at `start`, and each partition's span:
/// its start offset and its high watermark when opened (the end of the partition then).
fn open(config: &Config, topic: &str, start: Start) -> anyhow::Result<(BaseConsumer, HashMap<i32, Span>)> {
    let timeout = Duration::from_secs(10);
    let group = format!("paystream-cli-{}", uuid::Uuid::new_v4());
    let consumer: BaseConsumer = kafka::consumer_config(&config.kafka, &group, "paystream-cli")
        // Nothing is committed: this reader leaves no trace in the cluster but its group id.
        .set("enable.auto.commit", "false")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    anyhow::ensure!(!partitions.is_empty(), "topic {topic} has no partitions (does it exist?)");
    let mut watermarks = HashMap::new();
    for &p in &partitions {
        watermarks.insert(p, consumer.fetch_watermarks(topic, p, timeout)?);
    }
    let mut by_time = HashMap::new();
    if let Start::Time(ms) = start {
        let mut list = TopicPartitionList::new();
        for &p in &partitions {
            // offsets_for_times reads the timestamp from the offset field.
            list.add_partition_offset(topic, p, Offset::Offset(ms))?;
        }
        for e in consumer.offsets_for_times(list, timeout).context("offsets for times")?.elements() {
            // No record at or after the time: the partition's end.
            if let Offset::Offset(o) = e.offset() {
                by_time.insert(e.partition(), o);
            }
        }
    }
    let mut spans = HashMap::new();
    let mut list = TopicPartitionList::new();
    for (&p, &(low, high)) in &watermarks {
        let first = match start {
            Start::Beginning => low,
            Start::End => high,
            Start::Time(_) => by_time.get(&p).copied().unwrap_or(high),
        };
        list.add_partition_offset(topic, p, Offset::Offset(first))?;
        spans.insert(p, Span { start: first, end: high });
    }
    consumer.assign(&list)?;
    Ok((consumer, spans))
}

/// Runs `paystream events tail`.
pub async fn tail(config: &Config, args: TailArgs) -> anyhow::Result<()> {
    let types: Vec<EventType> = args
        .types
        .iter()
        .map(|t| EventType::parse(t).with_context(|| format!("unknown event type {t}")))
        .collect::<anyhow::Result<_>>()?;
    let start = match (&args.since, args.from_beginning) {
        (Some(since), _) => Start::Time(i64::try_from(
            crate::when::parse(since, time::OffsetDateTime::now_utc())?.unix_timestamp_nanos() / 1_000_000,
        )?),
        (None, true) => Start::Beginning,
        (None, false) => Start::End,
    };
    let config = config.clone();
    tokio::task::spawn_blocking(move || {
        let topic = config.kafka.events_topic.clone();
        let (consumer, spans) = open(&config, &topic, start)?;
        let mut done: HashMap<i32, bool> = spans.iter().map(|(&p, span)| (p, span.start >= span.end)).collect();
        let mut printed = 0u64;
        let stdout = std::io::stdout();
        loop {
            if args.exit_at_end && done.values().all(|d| *d) {
                return Ok(());
            }
            let Some(received) = consumer.poll(Duration::from_millis(200)) else { continue };
            let message = received?;
            if spans.get(&message.partition()).is_some_and(|span| message.offset() + 1 >= span.end) {
                done.insert(message.partition(), true);
            }
            if args.key.as_deref().is_some_and(|k| message.key() != Some(k.as_bytes())) {
                continue;
            }
            let line = event_json(&message);
            if !types.is_empty() && !types.iter().any(|t| line["event_type"] == t.as_str()) {
                continue;
            }
            let mut out = stdout.lock();
            writeln!(out, "{line}")?;
            out.flush()?;
            printed += 1;
            if args.max.is_some_and(|max| printed >= max) {
                return Ok(());
            }
        }
    })
    .await?
}

/// The events of `provider`/`payment_id` on the events topic committed within `window_ms`
/// after each of `times_ms` (ms since the epoch), as JSON lines, by partition and offset. The
/// search is bounded: each window is read from its offsets-for-times position up to the
/// first record past its end or the partition's end, and for at most `budget` in all.
pub fn find(
    config: &Config,
    provider: &str,
    payment_id: &str,
    times_ms: &[i64],
    window_ms: i64,
    budget: Duration,
) -> anyhow::Result<Vec<Value>> {
    let topic = &config.kafka.events_topic;
    let deadline = Instant::now() + budget;
    let mut found: Vec<Value> = Vec::new();
    for &at in times_ms {
        // A little before: the fact's timestamp is its commit, the row was written just before.
        let (consumer, spans) = open(config, topic, Start::Time(at - 5_000))?;
        let mut open_partitions: std::collections::HashSet<i32> =
            spans.iter().filter(|(_, span)| span.start < span.end).map(|(&p, _)| p).collect();
        while !open_partitions.is_empty() && Instant::now() < deadline {
            let Some(received) = consumer.poll(Duration::from_millis(200)) else { continue };
            let message = received?;
            let p = message.partition();
            let past_window = message.timestamp().to_millis().is_some_and(|ts| ts > at + window_ms);
            if past_window || spans.get(&p).is_none_or(|span| message.offset() + 1 >= span.end) {
                open_partitions.remove(&p);
            }
            if past_window {
                continue;
            }
            let line = event_json(&message);
            if line["provider"] == provider && line["payment_id"] == payment_id {
                found.push(line);
            }
        }
    }
    found.sort_by_key(|l| (l["partition"].as_i64(), l["offset"].as_i64()));
    found.dedup_by_key(|l| (l["partition"].as_i64(), l["offset"].as_i64()));
    Ok(found)
}
