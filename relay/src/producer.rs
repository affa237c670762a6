//! Producing a batch of records and waiting for all their delivery reports, with one shared
//! count per batch.
//!
//! rdkafka's `FutureProducer` gives every record its own future: a boxed one-shot channel per
//! record, a wake-up per delivery report, and an ordered join over thousands of futures. For
//! a relay that only needs to know when a whole batch is acknowledged (or that one record of
//! it was not), that machinery was a good part of its CPU (profiled on a 1,000,000-event
//! drain). Here every record of a batch carries the same `Arc<Acks>` as its delivery opaque:
//! the delivery callback (on the producer's polling thread) counts down, keeps the first
//! failure, and wakes the batch's task once, when the count reaches zero.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Message as _, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use tokio::sync::Notify;
use uuid::Uuid;

use paystream_common::config::KafkaConfig;
use paystream_common::kafka;

/// A record the broker did not acknowledge. A topic the broker does not have shows up as a
/// timeout, so the topic is part of what the operator reads.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{error} (topic {topic})")]
pub struct Undelivered {
    error: String,
    topic: String,
    /// The client's or the broker's error code, when there is one.
    pub code: Option<RDKafkaErrorCode>,
    /// The `event_id` of the record, when known.
    pub event_id: Option<Uuid>,
}

impl Undelivered {
    pub(crate) fn new(error: impl std::fmt::Display, topic: &str) -> Self {
        Self { error: error.to_string(), topic: topic.to_owned(), code: None, event_id: None }
    }

    fn of(error: &KafkaError, topic: &str, event_id: Option<Uuid>) -> Self {
        Self { error: error.to_string(), topic: topic.to_owned(), code: error.rdkafka_error_code(), event_id }
    }

    /// Whether the broker (or the client, before sending) refuses this record for good:
    /// sending it again can only fail again. Such a record is parked, not retried forever.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self.code,
            Some(
                RDKafkaErrorCode::MessageSizeTooLarge
                    | RDKafkaErrorCode::InvalidRecord
                    | RDKafkaErrorCode::MessageBatchTooLarge
                    | RDKafkaErrorCode::InvalidTimestamp
                    | RDKafkaErrorCode::InvalidMessageSize
            )
        )
    }
}

/// The `event_id` header of a record, parsed.
fn event_id_of(headers: Option<&rdkafka::message::BorrowedHeaders>) -> Option<Uuid> {
    use rdkafka::message::Headers as _;
    let header = headers?.iter().find(|h| h.key == "event_id")?;
    std::str::from_utf8(header.value?).ok()?.parse().ok()
}

/// One record of a batch.
pub struct Record<'a> {
    /// Destination topic.
    pub topic: &'a str,
    /// Kafka key.
    pub key: &'a [u8],
    /// Value.
    pub payload: &'a [u8],
    /// Headers.
    pub headers: OwnedHeaders,
    /// Kafka timestamp (ms since the epoch); `None` lets the client stamp it.
    pub timestamp: Option<i64>,
    /// The event's id (also in its headers), to say which record failed.
    pub event_id: Uuid,
}

/// The delivery reports of one batch (opaque outside this module).
#[derive(Default)]
pub struct Acks {
    /// Records sent and not yet reported, plus one while the batch is still being sent.
    pending: AtomicUsize,
    /// The first failure reported.
    failure: Mutex<Option<Undelivered>>,
    /// The largest record that failed, by value size, with its event id: a broker refuses a
    /// whole request batch when one record in it is too large, so the failure of every
    /// record of the batch names the size error, and the largest is the one to park.
    largest_failed: Mutex<Option<(usize, Uuid)>>,
    /// Woken when `pending` reaches zero.
    done: Notify,
}

impl Acks {
    fn settle_one(&self) {
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.done.notify_one();
        }
    }
}

/// Routes each delivery report to its batch's count.
pub struct BatchContext;

impl ClientContext for BatchContext {}

impl ProducerContext for BatchContext {
    type DeliveryOpaque = Arc<Acks>;

    fn delivery(&self, result: &DeliveryResult<'_>, acks: Arc<Acks>) {
        if let Err((error, message)) = result {
            let event_id = event_id_of(message.headers());
            let mut failure = acks.failure.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            failure.get_or_insert_with(|| Undelivered::of(error, message.topic(), event_id));
            if let Some(event_id) = event_id {
                let size = message.payload_len();
                let mut largest = acks.largest_failed.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                if largest.is_none_or(|(biggest, _)| size > biggest) {
                    *largest = Some((size, event_id));
                }
            }
        }
        acks.settle_one();
    }
}

/// An idempotent producer (the settings of `paystream_common::kafka::producer_config`) that
/// sends batches. Cheap to clone: clones share one producer.
#[derive(Clone)]
pub struct Producer {
    inner: ThreadedProducer<BatchContext>,
    /// How long a batch may wait for its reports: the client's own delivery timeout, plus a
    /// margin for the report to arrive.
    wait: Duration,
}

impl Producer {
    /// Creates the producer.
    pub fn new(config: &KafkaConfig, client_id: &str) -> Result<Self, KafkaError> {
        let inner = kafka::producer_config(config, client_id).create_with_context(BatchContext)?;
        Ok(Self { inner, wait: Duration::from_millis(config.message_timeout_ms) + Duration::from_secs(5) })
    }

    /// Produces every record and waits until each one was acknowledged. Returns how many were
    /// sent, or the first that was not acknowledged. Records go out in the order given (per
    /// partition, the idempotent producer keeps that order on retries). When the client's
    /// queue is full, sending waits for room.
    pub async fn send_all<'a, I>(&self, records: I) -> Result<usize, Undelivered>
    where
        I: IntoIterator<Item = Record<'a>>,
        I::IntoIter: Send,
    {
        let acks = Arc::new(Acks::default());
        // The extra count keeps the batch open while it is being sent: reports that come
        // back meanwhile cannot bring it to zero early.
        acks.pending.store(1, Ordering::Release);
        let mut sent = 0;
        let mut refused = None;
        for record in records {
            let event_id = record.event_id;
            let mut base = BaseRecord::with_opaque_to(record.topic, acks.clone())
                .key(record.key)
                .payload(record.payload)
                .headers(record.headers);
            if let Some(timestamp) = record.timestamp {
                base = base.timestamp(timestamp);
            }
            // Counted before it is sent: its report may come back before send returns.
            acks.pending.fetch_add(1, Ordering::AcqRel);
            loop {
                match self.inner.send(base) {
                    Ok(()) => {
                        sent += 1;
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        base = back;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err((error, back)) => {
                        refused = Some(Undelivered::of(&error, back.topic, Some(event_id)));
                        acks.settle_one();
                        break;
                    }
                }
            }
            if refused.is_some() {
                break;
            }
        }
        acks.settle_one();
        // Every record sent gets a report within the client's delivery timeout (a failure is
        // a report too); the wait is bounded anyway.
        if tokio::time::timeout(self.wait, acks.done.notified()).await.is_err() {
            return Err(refused.unwrap_or_else(|| Undelivered::new("no delivery report in time", "unknown")));
        }
        if let Some(refused) = refused {
            return Err(refused);
        }
        let failure = acks.failure.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        let largest = acks.largest_failed.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        match failure {
            None => Ok(sent),
            Some(mut failure) => {
                if failure.is_permanent() {
                    failure.event_id = largest.map(|(_, id)| id).or(failure.event_id);
                }
                Err(failure)
            }
        }
    }
}
