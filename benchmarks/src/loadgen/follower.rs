//! The follower: reads the events topic while the load runs, keeps the events of this run's
//! payments, and afterwards says which payments had exactly one outcome and how long each
//! took from its webhook's intended send.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};

use paystream_common::config::Config;
use paystream_schemas::{decode, EventType, PaymentEvent};

use super::plan::Planned;
use super::summary::{new_histogram, Latency, Summary};
use super::LoadgenError;

/// Events of this run's payments, by payment id, with when they were read.
type EventsSeen = Arc<Mutex<HashMap<String, Vec<(EventType, Instant)>>>>;

/// Reads the events topic in the background, keeping this run's events.
pub(super) struct Follower {
    events: EventsSeen,
    stop: Arc<AtomicBool>,
}

impl Follower {
    pub(super) async fn start(config: &Config, planned: &[Planned]) -> Result<Self, LoadgenError> {
        let group = format!("paystream-loadgen-{}", uuid::Uuid::new_v4().simple());
        let consumer: Arc<StreamConsumer> = Arc::new(
            paystream_common::kafka::consumer_config(&config.kafka, &group, "paystream-loadgen")
                .set("enable.auto.commit", "false")
                .create()?,
        );
        // Only what this run causes: each partition from its end as of now, assigned directly.
        // Subscribed from the beginning, the follower first read every earlier run's events
        // on the topic, and the first payments of a run measured that catch-up as latency
        // (the bench's half-rate run follows its sustained run on the same topics).
        let start = tokio::task::spawn_blocking({
            let (consumer, topic) = (consumer.clone(), config.kafka.events_topic.clone());
            move || topic_end(&consumer, &topic)
        })
        .await
        .map_err(|e| LoadgenError::Follow(e.to_string()))??;
        if start.count() == 0 {
            return Err(LoadgenError::Follow(format!("topic {} has no partitions", config.kafka.events_topic)));
        }
        consumer.assign(&start)?;
        let wanted: std::collections::HashSet<String> = planned.iter().map(|p| p.payment_id.clone()).collect();
        let events: EventsSeen = Arc::default();
        let stop: Arc<AtomicBool> = Arc::default();
        let (ev, st) = (events.clone(), stop.clone());
        tokio::spawn(async move {
            let mut seen_ids = std::collections::HashSet::new();
            while !st.load(Ordering::Relaxed) {
                let m = match tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await {
                    Ok(Ok(m)) => m,
                    _ => continue,
                };
                let Some(Ok(event)) = m.payload().map(decode::<PaymentEvent>) else {
                    continue;
                };
                // The broker may redeliver the tail of a batch; the event id says it is the same fact.
                if !wanted.contains(&event.payment_id) || !seen_ids.insert(event.event_id) {
                    continue;
                }
                if let Ok(mut e) = ev.lock() {
                    e.entry(event.payment_id).or_default().push((event.event_type, Instant::now()));
                }
            }
        });
        Ok(Self { events, stop })
    }

    pub(super) async fn finish(
        self,
        planned: &[Planned],
        sent: &HashMap<usize, (Instant, bool)>,
        started: Instant,
        timeout: Duration,
        summary: &mut Summary,
    ) {
        let accepted: Vec<usize> = sent.iter().filter(|(_, (_, ok))| *ok).map(|(i, _)| *i).collect();
        let outcome = |types: &[(EventType, Instant)]| {
            types.iter().filter(|(t, _)| matches!(t, EventType::PaymentApplied | EventType::PaymentRejected)).count()
        };
        let deadline = Instant::now() + timeout;
        loop {
            let done = self
                .events
                .lock()
                .map(|e| accepted.iter().all(|i| e.get(&planned[*i].payment_id).is_some_and(|v| outcome(v) >= 1)))
                .unwrap_or(false);
            if done || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // A short grace period: a doubled application would show up as a second outcome.
        tokio::time::sleep(Duration::from_millis(500)).await;
        self.stop.store(true, Ordering::Relaxed);
        let events = self.events.lock().map(|e| e.clone()).unwrap_or_default();
        let mut e2e = new_histogram();
        let mut last_outcome = started;
        for i in &accepted {
            let p = &planned[*i];
            match events.get(&p.payment_id) {
                Some(v) => {
                    match outcome(v) {
                        0 => summary.payments_missing_outcome += 1,
                        1 => summary.payments_with_one_outcome += 1,
                        _ => summary.payments_doubled += 1,
                    }
                    if let (Some((_, at)), Some((intended, _))) = (
                        v.iter().find(|(t, _)| matches!(t, EventType::PaymentApplied | EventType::PaymentRejected)),
                        sent.get(i),
                    ) {
                        let _ = e2e.record(at.saturating_duration_since(*intended).as_micros() as u64);
                        last_outcome = last_outcome.max(*at);
                    }
                }
                None => summary.payments_missing_outcome += 1,
            }
        }
        for v in events.values() {
            for (t, _) in v {
                *summary.events.entry(t.as_str().to_owned()).or_default() += 1;
            }
        }
        summary.e2e_latency = Some(Latency::from(&e2e));
        summary.outcomes_complete_s = Some(last_outcome.saturating_duration_since(started).as_secs_f64());
    }
}

/// Every partition of `topic` at its current end (the high watermark). A topic created a
/// moment ago may not have a leader for every partition yet (NotLeaderForPartition,
/// LeaderNotAvailable): asked again until the leaders are there, for up to 30 s.
fn topic_end(consumer: &StreamConsumer, topic: &str) -> Result<TopicPartitionList, rdkafka::error::KafkaError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match try_topic_end(consumer, topic) {
            Err(e) if leader_pending(&e) && Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            other => return other,
        }
    }
}

fn leader_pending(error: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as Code;
    matches!(
        error.rdkafka_error_code(),
        Some(Code::NotLeaderForPartition | Code::LeaderNotAvailable | Code::UnknownTopicOrPartition)
    )
}

fn try_topic_end(consumer: &StreamConsumer, topic: &str) -> Result<TopicPartitionList, rdkafka::error::KafkaError> {
    let timeout = Duration::from_secs(10);
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    // A topic not yet in the broker's metadata comes back without partitions: following
    // none of them would miss every event.
    let Some(found) =
        metadata.topics().iter().find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
    else {
        return Err(rdkafka::error::KafkaError::MetadataFetch(
            rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition,
        ));
    };
    let mut start = TopicPartitionList::new();
    for partition in found.partitions() {
        let (_, high) = consumer.fetch_watermarks(topic, partition.id(), timeout)?;
        start.add_partition_offset(topic, partition.id(), Offset::Offset(high))?;
    }
    Ok(start)
}
