//! Lane ownership and the drain loop.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::message::{Header, OwnedHeaders};
use uuid::Uuid;

use paystream_common::config::{Config, DbPart};
use paystream_common::outbox::{Frame, Frames};
use paystream_common::postgres::{self, classify, Disposition, PostgresError};
use paystream_common::telemetry::Readiness;
use paystream_common::{Shutdown, OUTBOX_EVENTS_PER_ROW, OUTBOX_LANES};

use crate::producer::{Producer, Record, Undelivered};
use crate::telemetry;

/// Advisory-lock namespace of outbox lanes (first key of the two-key form).
const LANE_LOCK_NAMESPACE: i32 = 0x5053_4c4e; // "PSLN"

/// Advisory-lock namespace of relay sessions' presence locks (one per session, keyed by its
/// backend pid): what the relays count to share the lanes.
const PRESENCE_LOCK_NAMESPACE: i32 = 0x5053_5250; // "PSRP"

/// Claim intervals a lane may stay without an owner before any relay takes it, whatever
/// its share: shares are computed from counts that can be a moment stale.
const FREE_LANE_GRACE_CLAIMS: u32 = 2;

/// Why draining stopped.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Database error; transient ones are retried with a new connection.
    #[error("database: {}", postgres::describe(.0))]
    Db(#[from] tokio_postgres::Error),
    /// Connecting failed.
    #[error("connect: {0}")]
    Connect(#[from] PostgresError),
    /// The producer could not be created or topics not ensured.
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
}

impl RelayError {
    /// Whether a new connection may fix it.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Db(e) => classify(e) == Disposition::Retry,
            Self::Connect(_) => true,
            Self::Kafka(_) => false,
        }
    }
}

/// One outbox row as taken: up to `OUTBOX_EVENTS_PER_ROW` events of one lane and topic,
/// framed, borrowed from the database's answer when produced.
struct Row {
    id: i64,
    lane: i16,
    row: tokio_postgres::Row,
    created_ms: i64,
}

impl From<tokio_postgres::Row> for Row {
    fn from(row: tokio_postgres::Row) -> Self {
        Self {
            id: row.get(0),
            lane: row.get(5),
            created_ms: row
                .get::<_, SystemTime>(4)
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            row,
        }
    }
}

/// One event of a batch, read in place from its row: the row's topic, its commit time, and
/// the frame.
type Event<'a> = (&'a str, i64, Frame<'a>);

/// Why a batch was not published. Either way nothing of the transaction is deleted.
#[derive(Debug, thiserror::Error)]
enum Unpublished {
    /// A row cannot be read (only a row written by hand can be: the processor frames every
    /// row it writes). Its lane is held back; the other lanes go on.
    #[error("outbox row {id} of lane {lane} unreadable, nothing of its batch sent: {why}")]
    Unreadable { id: i64, lane: i16, why: String },
    /// The broker did not acknowledge a record.
    #[error(transparent)]
    Undelivered(#[from] Undelivered),
}

/// How long a lane with an unreadable row is left alone before it is tried again (an
/// operator repairing or removing the row is then picked up).
const UNREADABLE_LANE_HOLD: Duration = Duration::from_secs(5);

/// The events of a batch, in order (rows in id order, each row's frames in order). Every
/// row's frames are read before anything is sent: a row whose frames are broken or do not add
/// up to its `events` count is refused, and with it the batch (it is not sent and stays),
/// never published in part.
fn events_of(rows: &[Row]) -> Result<Vec<Event<'_>>, Unpublished> {
    let mut events = Vec::with_capacity(rows.len() * OUTBOX_EVENTS_PER_ROW);
    for row in rows {
        let refused =
            |why: &dyn std::fmt::Display| Unpublished::Unreadable { id: row.id, lane: row.lane, why: why.to_string() };
        let topic: &str = row.row.try_get(1).map_err(|e| refused(&e))?;
        let count: i16 = row.row.try_get(2).map_err(|e| refused(&e))?;
        let frames: &[u8] = row.row.try_get(3).map_err(|e| refused(&e))?;
        let before = events.len();
        for frame in Frames::new(frames) {
            events.push((topic, row.created_ms, frame.map_err(|e| refused(&e))?));
        }
        let read = events.len() - before;
        if i16::try_from(read).ok() != Some(count) {
            return Err(refused(&format_args!("{read} frames where the row counts {count}")));
        }
    }
    Ok(events)
}

/// The records of a batch's events. A named iterator rather than a chain of closures: the
/// producer holds it across its waits for queue room, and the compiler proves a named type
/// `Send` where it cannot prove it for the closures.
struct BatchRecords<'a> {
    events: std::slice::Iter<'a, Event<'a>>,
}

impl<'a> Iterator for BatchRecords<'a> {
    type Item = Record<'a>;

    fn next(&mut self) -> Option<Record<'a>> {
        let (topic, created_ms, frame) = self.events.next()?;
        Some(Record {
            topic,
            key: frame.key.as_bytes(),
            payload: frame.payload,
            headers: event_headers(&frame.event_id, frame.event_type, frame.payload),
            timestamp: Some(*created_ms),
            event_id: frame.event_id,
        })
    }
}

/// Drains until `shutdown` or a connection error.
pub async fn drain(
    config: &Config,
    worker: usize,
    producer: &mut Producer,
    readiness: &Readiness,
    shutdown: &Shutdown,
) -> Result<(), RelayError> {
    let (notify_tx, mut notify_rx) = tokio::sync::mpsc::channel(1);
    let mut client =
        postgres::connect(&config.postgres.as_part(DbPart::Relay), "paystream-relay", Some(notify_tx)).await?;
    // The outbox is a queue table: its statistics are usually those of an empty table, and a
    // planner that believes them sorts every pending row of a lane to return the oldest few.
    // Without sorts the only plan left is the primary key in id order, stopping at the limit.
    client.batch_execute(&format!("{}; SET enable_sort = off", paystream_common::outbox::LISTEN)).await?;
    let presence = client.prepare(include_str!("../sql/relay_presence_lock.sql")).await?;
    client.query_one(&presence, &[&PRESENCE_LOCK_NAMESPACE]).await?;
    readiness.set(true);
    let take = client.prepare(include_str!("../sql/outbox_take_batch.sql")).await?;
    let try_lock = client.prepare(include_str!("../sql/outbox_lane_try_lock.sql")).await?;
    let backlog = client.prepare(include_str!("../sql/outbox_backlog_select.sql")).await?;
    let count_live = client.prepare(include_str!("../sql/relay_count_live.sql")).await?;
    let unlock = client.prepare(include_str!("../sql/outbox_lane_unlock.sql")).await?;
    let lanes_held = client.prepare(include_str!("../sql/outbox_lanes_held.sql")).await?;
    let batch_rows = i64::try_from(config.relay.batch_rows).unwrap_or(i64::MAX);
    let poll = Duration::from_millis(config.relay.poll_interval_ms);
    let claim_every = Duration::from_millis(config.relay.lane_claim_interval_ms);

    let mut owned: BTreeSet<i16> = BTreeSet::new();
    // Claim rounds each lane has been seen without an owner.
    let mut free_rounds: BTreeMap<i16, u32> = BTreeMap::new();
    // Lanes with an unreadable row, and when to try each again.
    let mut held: BTreeMap<i16, Instant> = BTreeMap::new();
    let mut next_claim = Instant::now();
    let mut next_backlog = Instant::now();
    while !shutdown.is_cancelled() {
        if Instant::now() >= next_claim {
            // Fair share: each of the live relay sessions (counted by their presence locks)
            // owns at most ceil(lanes / sessions). Extra lanes are released between
            // transactions (never while one of their rows is in flight), and free lanes are
            // taken up to the share, so N relays split the work and a dead relay's lanes are
            // taken over within one claim interval. A lane nobody has owned for a few rounds
            // is taken whatever the share, so that a stale count never leaves one undrained.
            // This process's own workers count even before all of them connected, so that the
            // first to connect does not take every lane only to give half back later.
            let live: i32 = client.query_one(&count_live, &[&PRESENCE_LOCK_NAMESPACE]).await?.get(0);
            let live = usize::try_from(live).unwrap_or(1).max(config.relay.workers);
            let share = (OUTBOX_LANES as usize).div_ceil(live);
            while owned.len() > share {
                let Some(lane) = owned.pop_last() else { break };
                client.query_one(&unlock, &[&LANE_LOCK_NAMESPACE, &i32::from(lane)]).await?;
            }
            let held_now: BTreeSet<i32> =
                client.query(&lanes_held, &[&LANE_LOCK_NAMESPACE]).await?.iter().map(|r| r.get(0)).collect();
            for lane in 0..OUTBOX_LANES {
                if held_now.contains(&i32::from(lane)) {
                    free_rounds.remove(&lane);
                } else {
                    *free_rounds.entry(lane).or_default() += 1;
                }
            }
            // Start at a different lane per relay and worker so that they do not all race for
            // lane 0.
            let lanes = OUTBOX_LANES as usize;
            let start = ((std::process::id() as usize + worker * lanes / config.relay.workers) % lanes) as i16;
            for i in 0..OUTBOX_LANES {
                let lane = (start + i) % OUTBOX_LANES;
                let abandoned = free_rounds.get(&lane).is_some_and(|&rounds| rounds > FREE_LANE_GRACE_CLAIMS);
                if owned.contains(&lane) || held_now.contains(&i32::from(lane)) || (owned.len() >= share && !abandoned)
                {
                    continue;
                }
                if client.query_one(&try_lock, &[&LANE_LOCK_NAMESPACE, &i32::from(lane)]).await?.get::<_, bool>(0) {
                    owned.insert(lane);
                    free_rounds.remove(&lane);
                }
            }
            telemetry::lanes_owned(worker, owned.len());
            next_claim = Instant::now() + claim_every;
        }
        if Instant::now() >= next_backlog {
            let row = client.query_one(&backlog, &[]).await?;
            telemetry::backlog(row.get(0), row.get(1));
            next_backlog = Instant::now() + Duration::from_secs(5);
        }
        held.retain(|lane, until| owned.contains(lane) && Instant::now() < *until);
        let lanes: Vec<i16> = owned.iter().copied().filter(|lane| !held.contains_key(lane)).collect();
        let mut last_full = false;
        if !lanes.is_empty() {
            let tx = client.transaction().await?;
            let take_batch = |after: i64| {
                let (tx, take, lanes) = (&tx, &take, &lanes);
                async move {
                    let mut rows: Vec<Row> =
                        tx.query(take, &[lanes, &batch_rows, &after]).await?.into_iter().map(Row::from).collect();
                    rows.sort_unstable_by_key(|r| r.id);
                    Ok::<_, tokio_postgres::Error>(rows)
                }
            };
            let mut rows = take_batch(0).await?;
            let mut batches = 0usize;
            let mut failed = None;
            // Batch k+1 is produced only after every ack of batch k, so that a failure can
            // never put a later event of an aggregate on Kafka before an earlier one: on
            // failure the whole transaction rolls back and the lanes start again from their
            // oldest row (what was acked is sent again; consumers drop it by event id).
            while !rows.is_empty() {
                let started = Instant::now();
                batches += 1;
                let full = rows.len() == config.relay.batch_rows;
                let chain = full && batches < config.relay.batches_per_transaction;
                let after = rows.last().map_or(0, |r| r.id);
                let next = async {
                    if chain {
                        take_batch(after).await
                    } else {
                        Ok(Vec::new())
                    }
                };
                let (sent, next) = tokio::join!(publish(producer, &rows), next);
                match sent {
                    Ok((events, max_lag)) => {
                        telemetry::BatchPublished { rows: rows.len(), events, elapsed: started.elapsed(), max_lag }
                            .emit();
                        last_full = full;
                        rows = next?;
                    }
                    Err(error) => {
                        failed = Some(error);
                        break;
                    }
                }
            }
            match failed {
                None => tx.commit().await?,
                Some(error @ Unpublished::Unreadable { lane, .. }) => {
                    // Held back alone: the lane's later rows wait behind the unreadable one,
                    // which keeps its aggregates in order, and the other lanes go on at once.
                    tx.rollback().await?;
                    telemetry::lane_held(lane, &error);
                    held.insert(lane, Instant::now() + UNREADABLE_LANE_HOLD);
                    continue;
                }
                Some(Unpublished::Undelivered(error)) if error.is_permanent() && error.event_id.is_some() => {
                    // Refused for good: the event is parked with the broker's answer, its row
                    // keeps the others, and the lane goes on at once.
                    tx.rollback().await?;
                    park(&mut client, &lanes, &error).await?;
                    continue;
                }
                Some(error) => {
                    tx.rollback().await?;
                    telemetry::batch_failed(&error);
                    // An idempotent producer can stay wedged after its broker restarted
                    // without the producer-id state; a fresh one gets a new producer id.
                    // The rows are still in the outbox, so nothing is lost by dropping
                    // what the old one had queued.
                    match Producer::new(&config.kafka, "paystream-relay") {
                        Ok(fresh) => *producer = fresh,
                        Err(error) => tracing::error!(%error, "cannot create a Kafka producer"),
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                    continue;
                }
            }
        }
        // A full batch means more is waiting: go again at once. Otherwise sleep until a
        // notification, the poll interval, or the next lane claim.
        if !last_full {
            let wait = if owned.len() < OUTBOX_LANES as usize { poll.min(claim_every) } else { poll };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = notify_rx.recv() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
    Ok(())
}
/// Moves the event `error` names out of its row into `outbox_parked`: the row is found
/// among the oldest rows of `lanes` (the failed batch's), rewritten without the event, or
/// deleted when it was the only one. One transaction; the lane owner is the only writer of
/// its rows, so nothing races it.
async fn park(client: &mut tokio_postgres::Client, lanes: &[i16], error: &Undelivered) -> Result<(), RelayError> {
    let Some(event_id) = error.event_id else { return Ok(()) };
    let tx = client.transaction().await?;
    let find = tx.prepare(include_str!("../sql/outbox_select_lane_rows.sql")).await?;
    for row in tx.query(&find, &[&lanes]).await? {
        let frames: &[u8] = row.get(3);
        let parsed: Vec<Frame<'_>> = Frames::new(frames).filter_map(Result::ok).collect();
        let Some(bad) = parsed.iter().find(|f| f.event_id == event_id) else { continue };
        let id: i64 = row.get(0);
        let park = tx.prepare(include_str!("../sql/outbox_park_event.sql")).await?;
        let reason = error.to_string();
        tx.execute(&park, &[&id, &bad.key, &bad.event_id, &bad.event_type, &bad.payload, &reason]).await?;
        let mut rest = Vec::with_capacity(frames.len());
        let mut kept: i16 = 0;
        for frame in parsed.iter().filter(|f| f.event_id != event_id) {
            paystream_common::outbox::push_frame(
                &mut rest,
                frame.key,
                &frame.event_id,
                frame.event_type,
                frame.payload,
            );
            kept += 1;
        }
        if kept == 0 {
            let delete = tx.prepare(include_str!("../sql/outbox_delete_row.sql")).await?;
            tx.execute(&delete, &[&id]).await?;
        } else {
            let update = tx.prepare(include_str!("../sql/outbox_update_frames.sql")).await?;
            tx.execute(&update, &[&id, &rest, &kept]).await?;
        }
        tx.commit().await?;
        telemetry::event_parked(id, &event_id, error);
        return Ok(());
    }
    // Not among the lanes' oldest rows: left as it is; the batch is retried.
    tx.rollback().await?;
    Ok(())
}

/// The headers of an event record: `event_id`, `event_type`, and `schema_fingerprint`, the
/// writer schema's 8 fingerprint bytes as they stand in the single-object value
/// (little-endian), in hex: what fastavro's and Java's fingerprint functions print.
pub fn event_headers(event_id: &Uuid, event_type: &str, payload: &[u8]) -> OwnedHeaders {
    let fingerprint = payload.get(2..10).map(hex::encode).unwrap_or_default();
    let mut id = Uuid::encode_buffer();
    let id = event_id.hyphenated().encode_lower(&mut id);
    OwnedHeaders::new_with_capacity(3)
        .insert(Header { key: "event_id", value: Some(id.as_bytes()) })
        .insert(Header { key: "event_type", value: Some(event_type.as_bytes()) })
        .insert(Header { key: "schema_fingerprint", value: Some(fingerprint.as_bytes()) })
}

/// Produces every event of `rows` and waits for every delivery report. Returns the events
/// and the largest delay from a fact's commit to its ack.
async fn publish(producer: &Producer, rows: &[Row]) -> Result<(usize, Duration), Unpublished> {
    let events = events_of(rows)?;
    let records = BatchRecords { events: events.iter() };
    let published = producer.send_all(records).await?;
    let acked_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    let oldest = rows.iter().map(|r| r.created_ms).min().unwrap_or(acked_ms);
    Ok((published, Duration::from_millis(u64::try_from(acked_ms - oldest).unwrap_or(0))))
}
