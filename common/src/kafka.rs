//! Kafka client settings and topic creation, shared by every service so that the delivery
//! guarantees are set in one place. Only standard Kafka APIs: the same code runs against
//! Apache Kafka and the local Kafka-protocol broker.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use crate::config::KafkaConfig;

/// Records a producer queues at most (`queue.buffering.max.messages`).
pub const PRODUCER_QUEUE_MESSAGES: usize = 200_000;

/// Producer settings for durable, ordered, non-duplicating delivery.
pub fn producer_config(kafka: &KafkaConfig, client_id: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &kafka.brokers)
        .set("client.id", client_id)
        // A broker-side sequence per partition: retries neither duplicate nor reorder.
        .set("enable.idempotence", "true")
        // Acknowledged means written to every in-sync replica: what makes a 2xx durable.
        .set("acks", "all")
        // A bound on every produce, so that callers answer 503 or retry instead of hanging.
        .set("message.timeout.ms", kafka.message_timeout_ms.to_string())
        // A short wait fills batches under load without adding visible latency.
        .set("linger.ms", kafka.linger_ms.to_string())
        // The default partitioner hashes keys with murmur2, like the Java client, so that
        // every client language puts one installment on one partition.
        .set("partitioner", "murmur2_random")
        // librdkafka leaves Nagle's algorithm on by default: a small produce request then
        // waits for the ack of the previous segment, up to the peer's 40 ms delayed ack. That
        // wait was most of the latency at moderate rates; under full load it never shows.
        .set("socket.nagle.disable", "true")
        // Bounded local queue: beyond it sends fail with QueueFull, which is backpressure.
        .set("queue.buffering.max.messages", PRODUCER_QUEUE_MESSAGES.to_string())
        .set("queue.buffering.max.kbytes", "262144");
    config
}

/// Consumer settings for a group member that stores its own position.
pub fn consumer_config(kafka: &KafkaConfig, group_id: &str, client_id: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &kafka.brokers)
        .set("group.id", group_id)
        .set("client.id", client_id)
        // Incremental rebalances: members joining or leaving move only the partitions that
        // must move; the others keep running.
        .set("partition.assignment.strategy", "cooperative-sticky")
        // A new group starts from the beginning: no inbound command may be skipped.
        .set("auto.offset.reset", "earliest")
        // Offsets are stored only after the effect committed in PostgreSQL (at-least-once);
        // the background commit then sends what was stored.
        .set("enable.auto.offset.store", "false")
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        // Notice a dead member within 10 s instead of the default 45 s.
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        // Also the rebalance timeout: how long a rebalance waits for members to rejoin. The
        // receive loop polls continuously (backpressure waits are short), so 30 s is ample,
        // and a rebalance stalled by a vanished member ends sooner than the 300 s default.
        .set("max.poll.interval.ms", "30000")
        // Bound what librdkafka prefetches per partition.
        .set("queued.max.messages.kbytes", "16384")
        .set("fetch.wait.max.ms", kafka.fetch_wait_max_ms.to_string())
        // As for producers: no 40 ms Nagle/delayed-ack stalls on small requests.
        .set("socket.nagle.disable", "true");
    config
}

/// An admin client for topic management.
pub fn admin_client(kafka: &KafkaConfig) -> Result<AdminClient<DefaultClientContext>, KafkaError> {
    ClientConfig::new().set("bootstrap.servers", &kafka.brokers).create()
}

/// Creates the product's topics if they do not exist, through the Kafka admin API. Retries
/// for up to `wait` while the broker is not yet answering.
pub async fn ensure_topics(kafka: &KafkaConfig, wait: Duration) -> Result<(), KafkaError> {
    ensure_named_topics(kafka, &[&kafka.inbound_topic, &kafka.events_topic, &kafka.deadletter_topic], wait).await
}

/// Creates `names` (with the configured partitions and replication) if they do not exist,
/// retrying for up to `wait` while the broker is not yet answering.
pub async fn ensure_named_topics(kafka: &KafkaConfig, names: &[&str], wait: Duration) -> Result<(), KafkaError> {
    let admin = admin_client(kafka)?;
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|name| NewTopic::new(name, kafka.partitions, TopicReplication::Fixed(kafka.replication_factor)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match admin.create_topics(&topics, &options).await {
            Ok(results) => {
                let mut last_error = None;
                for result in results {
                    match result {
                        Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                        Err((topic, code)) => {
                            tracing::warn!(%topic, ?code, "topic creation failed");
                            last_error = Some(KafkaError::AdminOp(code));
                        }
                    }
                }
                match last_error {
                    None => return Ok(()),
                    Some(error) if tokio::time::Instant::now() >= deadline => return Err(error),
                    Some(_) => {}
                }
            }
            Err(error) if tokio::time::Instant::now() >= deadline => return Err(error),
            Err(error) => {
                tracing::debug!(%error, "broker not answering yet; retrying topic creation")
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
