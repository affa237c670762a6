//! Outbox rows: the exact Avro bytes of each fact, written in the applying transaction and
//! published by the relay, a row per lane and topic of the transaction. Event ids are derived
//! from what the fact is about, so the same fact always has the same id.

use std::collections::HashMap;

use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, Statement};
use uuid::Uuid;

use paystream_common::outbox::{frame_len, push_frame};
use paystream_common::{outbox_lane, OUTBOX_EVENTS_PER_ROW, OUTBOX_ROW_BYTES};
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

/// The statement that inserts one outbox row, for [`OutboxRows::insert`]: prepared by the
/// caller on its own connection (the processor caches it per pooled connection).
pub const INSERT: &str = include_str!("../sql/outbox_insert.sql");

/// One outbox row: events of one lane and topic, in the order they happened, framed.
#[derive(Debug)]
struct Row {
    lane: i16,
    topic: String,
    events: usize,
    frames: Vec<u8>,
}

/// The outbox rows of one transaction: its events grouped by lane and topic (rows of up to
/// `OUTBOX_EVENTS_PER_ROW` events and `OUTBOX_ROW_BYTES`), rows in the order they were
/// opened.
#[derive(Debug, Default)]
pub struct OutboxRows {
    rows: Vec<Row>,
    /// The topics written (one or two), so that a row is found by a topic's index.
    topics: Vec<String>,
    /// The row still taking events, per lane and topic index.
    open: HashMap<(i16, usize), usize>,
    events: usize,
}

impl OutboxRows {
    /// Adds a payment fact keyed by its aggregate.
    pub fn push_event(&mut self, topic: &str, event: &PaymentEvent) -> Result<(), ApplyError> {
        let mut key = Uuid::encode_buffer();
        let key = event.aggregate_id.hyphenated().encode_lower(&mut key);
        self.push(topic, key, event.event_id, event.event_type.as_str(), &encode(event)?);
        Ok(())
    }

    /// Adds a dead letter keyed by its source position.
    pub fn push_dead_letter(&mut self, topic: &str, dead: &DeadLetter) -> Result<(), ApplyError> {
        let key = format!("{}/{}/{}", dead.source_topic, dead.source_partition, dead.source_offset);
        self.push(topic, &key, dead.event_id, "DeadLetter", &encode(dead)?);
        Ok(())
    }

    /// Adds an encoded event. Its row is the open row of its lane and topic, or a new one
    /// after it: a lane's rows are inserted in the order they were opened, so its events keep
    /// their order across rows too.
    pub fn push(&mut self, topic: &str, key: &str, event_id: Uuid, event_type: &str, payload: &[u8]) {
        let lane = outbox_lane(key);
        let topic_index = match self.topics.iter().position(|t| t == topic) {
            Some(index) => index,
            None => {
                self.topics.push(topic.to_owned());
                self.topics.len() - 1
            }
        };
        let bytes = frame_len(key, event_type, payload);
        let fits = |row: &Row| row.events < OUTBOX_EVENTS_PER_ROW && row.frames.len() + bytes <= OUTBOX_ROW_BYTES;
        let index = match self.open.get(&(lane, topic_index)) {
            Some(&index) if fits(&self.rows[index]) => index,
            _ => {
                self.rows.push(Row { lane, topic: topic.to_owned(), events: 0, frames: Vec::new() });
                self.open.insert((lane, topic_index), self.rows.len() - 1);
                self.rows.len() - 1
            }
        };
        let row = &mut self.rows[index];
        push_frame(&mut row.frames, key, &event_id, event_type, payload);
        row.events += 1;
        self.events += 1;
    }

    /// Whether there is nothing to insert.
    pub fn is_empty(&self) -> bool {
        self.events == 0
    }

    /// Events held.
    pub fn len(&self) -> usize {
        self.events
    }

    /// Rows the events make.
    pub fn rows(&self) -> usize {
        self.rows.len()
    }

    /// Inserts the rows with `insert` ([`INSERT`], prepared on this connection),
    /// pipelined: all are sent before the first answer is awaited and run in the order given,
    /// which is the order of their ids.
    pub async fn insert<C: GenericClient>(&self, client: &C, insert: &Statement) -> Result<(), tokio_postgres::Error> {
        // At most OUTBOX_EVENTS_PER_ROW events a row: the count fits.
        let counts: Vec<i16> = self.rows.iter().map(|r| r.events as i16).collect();
        let params: Vec<[&(dyn ToSql + Sync); 4]> = self
            .rows
            .iter()
            .zip(&counts)
            .map(|(r, count)| [&r.lane as _, &r.topic as _, count as _, &r.frames as _])
            .collect();
        futures::future::try_join_all(params.iter().map(|p| client.execute(insert, p))).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(rows: &mut OutboxRows, key: &str, payload_len: usize) {
        rows.push("t", key, Uuid::new_v4(), "PaymentApplied", &vec![0; payload_len]);
    }

    /// A lane's events fill rows up to the count and byte bounds, in order; each lane and
    /// topic has rows of its own; one event larger than a row's bytes gets a row alone.
    #[test]
    fn events_group_by_lane_within_bounds() {
        let mut rows = OutboxRows::default();
        for _ in 0..300 {
            push(&mut rows, "a", 10);
        }
        let sizes: Vec<usize> = rows.rows.iter().map(|r| r.events).collect();
        assert_eq!(sizes, [128, 128, 44]);

        let mut rows = OutboxRows::default();
        for _ in 0..130 {
            push(&mut rows, "a", 1_000);
        }
        let sizes: Vec<usize> = rows.rows.iter().map(|r| r.events).collect();
        assert_eq!(sizes, [62, 62, 6], "1,043 bytes an event, at most 65,536 a row");
        assert!(rows.rows.iter().all(|r| r.frames.len() <= OUTBOX_ROW_BYTES));

        let mut rows = OutboxRows::default();
        push(&mut rows, "a", 10);
        push(&mut rows, "a", 70_000);
        push(&mut rows, "a", 10);
        let sizes: Vec<usize> = rows.rows.iter().map(|r| r.events).collect();
        assert_eq!(sizes, [1, 1, 1], "the oversized event alone, and the next event after it");

        let (a, b) = ("3f1c1b7e-4c53-4a8e-9d5e-1f0a2b3c4d5e", "3f1c1b7e-4c53-4a8e-9d5e-1f0a2b3c4d5f");
        assert_ne!(outbox_lane(a), outbox_lane(b));
        let mut rows = OutboxRows::default();
        push(&mut rows, a, 10);
        push(&mut rows, b, 10);
        push(&mut rows, a, 10);
        rows.push("other", a, Uuid::new_v4(), "DeadLetter", &[1]);
        let shape: Vec<(i16, &str, usize)> = rows.rows.iter().map(|r| (r.lane, r.topic.as_str(), r.events)).collect();
        assert_eq!(shape, [(outbox_lane(a), "t", 2), (outbox_lane(b), "t", 1), (outbox_lane(a), "other", 1)]);
        assert_eq!((rows.len(), rows.rows()), (4, 3));
    }

    /// Event ids are stable per (type, subject) and differ across types.
    #[test]
    fn event_ids_are_deterministic() {
        let a = event_id(EventType::PaymentApplied, "p\u{0}pay_1");
        assert_eq!(a, event_id(EventType::PaymentApplied, "p\u{0}pay_1"));
        assert_ne!(a, event_id(EventType::InstallmentPaid, "p\u{0}pay_1"));
    }
}
