//! Kafka client settings and topic creation, shared by every service so that the delivery
//! guarantees are set in one place. Only standard Kafka APIs (the local stack runs Apache
//! Kafka itself): the same code runs against any Kafka service. The operator's
//! `kafka.client_properties` (TLS, SASL) go to every client; the settings the guarantees
//! rest on are paystream's and cannot be overridden (validated in `config`).

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use crate::config::KafkaConfig;

/// Records a producer queues at most (`queue.buffering.max.messages`).
pub const PRODUCER_QUEUE_MESSAGES: usize = 200_000;

/// A client configuration with the operator's properties (security) and the brokers.
fn base_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut config = ClientConfig::new();
    for (name, value) in kafka.client_properties.iter() {
        config.set(name, value);
    }
    // librdkafka resolves names to every address; the local stack listens on IPv4 only.
    config.set("bootstrap.servers", &kafka.brokers);
    config
}

/// Producer settings for durable, ordered, non-duplicating delivery.
pub fn producer_config(kafka: &KafkaConfig, client_id: &str) -> ClientConfig {
    let mut config = base_config(kafka);
    config
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
    let mut config = base_config(kafka);
    config
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
        .set("fetch.min.bytes", kafka.fetch_min_bytes.to_string())
        // As for producers: no 40 ms Nagle/delayed-ack stalls on small requests.
        .set("socket.nagle.disable", "true");
    config
}

/// An admin client for topic management.
pub fn admin_client(kafka: &KafkaConfig) -> Result<AdminClient<DefaultClientContext>, KafkaError> {
    base_config(kafka).create()
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
    let min_isr = kafka.min_insync_replicas.to_string();
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|name| {
            NewTopic::new(name, kafka.partitions, TopicReplication::Fixed(kafka.replication_factor))
                .set("min.insync.replicas", &min_isr)
        })
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

/// How a topic stands on the cluster, for the start-up check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicLayout {
    /// The topic.
    pub name: String,
    /// Its partitions.
    pub partitions: i32,
    /// The fewest replicas any of its partitions has.
    pub replicas: i32,
    /// Its `min.insync.replicas`, when the cluster says.
    pub min_insync_replicas: Option<i32>,
}

/// What is wrong with a topic as found, in words for the log; empty when nothing is.
/// `partitions` is what the configuration expects (the key-to-partition mapping).
pub fn topic_warnings(layout: &TopicLayout, partitions: i32) -> Vec<String> {
    let mut warnings = Vec::new();
    let min_isr = layout.min_insync_replicas.unwrap_or(1);
    if layout.replicas < 2 || min_isr < 2 {
        warnings.push(format!(
            "topic {}: {} replica(s), min.insync.replicas {}: an acknowledged record does not survive the loss of \
             a broker (production: replication factor 3, min.insync.replicas 2)",
            layout.name, layout.replicas, min_isr
        ));
    } else if min_isr >= layout.replicas {
        warnings.push(format!(
            "topic {}: min.insync.replicas {} of {} replicas: the loss of one broker stops every write \
             (production: replication factor 3, min.insync.replicas 2)",
            layout.name, min_isr, layout.replicas
        ));
    }
    if layout.partitions != partitions {
        warnings.push(format!(
            "topic {}: {} partitions where kafka.partitions is {}: keys map to partitions by the topic's own \
             count; changing it moves installments to other partitions while their commands are in flight",
            layout.name, layout.partitions, partitions
        ));
    }
    warnings
}

/// Reads the layout of `names` from the cluster: partitions, replicas, `min.insync.replicas`.
pub async fn describe_topics(kafka: &KafkaConfig, names: &[&str]) -> Result<Vec<TopicLayout>, KafkaError> {
    let admin = admin_client(kafka)?;
    let owned: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let client: BaseConsumer = base_config(kafka).create()?;
    let metadata = tokio::task::spawn_blocking(move || {
        owned
            .iter()
            .map(|name| client.fetch_metadata(Some(name), Duration::from_secs(10)))
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|_| KafkaError::Canceled)??;
    let specifiers: Vec<ResourceSpecifier<'_>> = names.iter().map(|n| ResourceSpecifier::Topic(n)).collect();
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let configs = admin.describe_configs(&specifiers, &options).await?;
    let mut layouts = Vec::with_capacity(names.len());
    for ((name, metadata), config) in names.iter().zip(metadata).zip(configs) {
        let Some(topic) = metadata.topics().iter().find(|t| t.name() == *name) else { continue };
        let min_insync_replicas = config
            .ok()
            .and_then(|c| c.get("min.insync.replicas").and_then(|e| e.value.as_deref()).and_then(|v| v.parse().ok()));
        layouts.push(TopicLayout {
            name: (*name).to_owned(),
            partitions: i32::try_from(topic.partitions().len()).unwrap_or(i32::MAX),
            replicas: topic
                .partitions()
                .iter()
                .map(|p| i32::try_from(p.replicas().len()).unwrap_or(i32::MAX))
                .min()
                .unwrap_or(0),
            min_insync_replicas,
        });
    }
    Ok(layouts)
}

/// Creates the product's topics if missing, then checks how they stand and warns about
/// what does not hold a 2xx through a broker loss or would re-key installments. The check
/// only warns: a single-node development cluster is legitimate.
pub async fn ensure_and_check_topics(kafka: &KafkaConfig, wait: Duration) -> Result<(), KafkaError> {
    ensure_topics(kafka, wait).await?;
    let names = [kafka.inbound_topic.as_str(), kafka.events_topic.as_str(), kafka.deadletter_topic.as_str()];
    match describe_topics(kafka, &names).await {
        Ok(layouts) => {
            for layout in &layouts {
                for warning in topic_warnings(layout, kafka.partitions) {
                    tracing::warn!(topic = %layout.name, "{warning}");
                }
            }
        }
        Err(error) => tracing::warn!(%error, "cannot describe the topics; their durability was not checked"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(partitions: i32, replicas: i32, min_isr: Option<i32>) -> TopicLayout {
        TopicLayout { name: "t".into(), partitions, replicas, min_insync_replicas: min_isr }
    }

    /// One copy, or min.insync.replicas 1, cannot hold an acknowledged record through a broker
    /// loss; 3 and 2 can. A partition count other than the configured one re-keys.
    #[test]
    fn topic_warnings_name_what_does_not_survive_a_broker_loss() {
        assert_eq!(topic_warnings(&layout(12, 1, Some(1)), 12).len(), 1);
        assert_eq!(topic_warnings(&layout(12, 3, Some(1)), 12).len(), 1);
        assert_eq!(topic_warnings(&layout(12, 3, None), 12).len(), 1);
        assert!(topic_warnings(&layout(12, 3, Some(2)), 12).is_empty());
        assert_eq!(topic_warnings(&layout(12, 2, Some(2)), 12).len(), 1, "min ISR = replicas stops on any loss");
        assert_eq!(topic_warnings(&layout(6, 3, Some(2)), 12).len(), 1);
    }
}
