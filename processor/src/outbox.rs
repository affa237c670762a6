//! Outbox rows: the exact Avro bytes of each fact, written in the applying transaction and
//! published by the relay. Event ids are derived from what the fact is about, so the same
//! fact always has the same id.

use uuid::Uuid;

use paystream_common::outbox_lane;
use paystream_schemas::{encode, DeadLetter, EventType, PaymentEvent};

use crate::error::ApplyError;

/// Namespace for event ids (UUID v5).
const EVENT_NAMESPACE: Uuid = Uuid::from_u128(0x8c1d_4a57_2f9e_4b1a_9f0e_5d6c_7b8a_9e01);

/// The id of a fact: stable for the same (kind, subject).
pub fn event_id(event_type: EventType, subject: &str) -> Uuid {
    let mut name = String::with_capacity(subject.len() + 32);
    name.push_str(event_type.as_str());
    name.push('\u{0}');
    name.push_str(subject);
    Uuid::new_v5(&EVENT_NAMESPACE, name.as_bytes())
}

/// Outbox rows in the column order of the batch insert.
#[derive(Debug, Default)]
pub struct OutboxRows {
    /// outbox.lane
    pub lanes: Vec<i16>,
    /// outbox.topic
    pub topics: Vec<String>,
    /// outbox.key
    pub keys: Vec<String>,
    /// outbox.event_id
    pub event_ids: Vec<Uuid>,
    /// outbox.event_type
    pub event_types: Vec<String>,
    /// outbox.payload
    pub payloads: Vec<Vec<u8>>,
}

impl OutboxRows {
    /// Adds a payment fact keyed by its aggregate.
    pub fn push_event(&mut self, topic: &str, event: &PaymentEvent) -> Result<(), ApplyError> {
        let key = event.aggregate_id.hyphenated().to_string();
        self.push(topic, key, event.event_id, event.event_type.as_str(), encode(event)?);
        Ok(())
    }

    /// Adds a dead letter keyed by its source position.
    pub fn push_dead_letter(&mut self, topic: &str, dead: &DeadLetter) -> Result<(), ApplyError> {
        let key = format!("{}/{}/{}", dead.source_topic, dead.source_partition, dead.source_offset);
        self.push(topic, key, dead.event_id, "DeadLetter", encode(dead)?);
        Ok(())
    }

    fn push(&mut self, topic: &str, key: String, event_id: Uuid, event_type: &str, payload: Vec<u8>) {
        self.lanes.push(outbox_lane(&key));
        self.topics.push(topic.to_owned());
        self.keys.push(key);
        self.event_ids.push(event_id);
        self.event_types.push(event_type.to_owned());
        self.payloads.push(payload);
    }

    /// Whether there is nothing to insert.
    pub fn is_empty(&self) -> bool {
        self.lanes.is_empty()
    }

    /// Rows held.
    pub fn len(&self) -> usize {
        self.lanes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Event ids are stable per (type, subject) and differ across types.
    #[test]
    fn event_ids_are_deterministic() {
        let a = event_id(EventType::PaymentApplied, "p\u{0}pay_1");
        assert_eq!(a, event_id(EventType::PaymentApplied, "p\u{0}pay_1"));
        assert_ne!(a, event_id(EventType::InstallmentPaid, "p\u{0}pay_1"));
    }
}
