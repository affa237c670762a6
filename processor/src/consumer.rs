//! The consumer-group member: one task receives from Kafka and hands each message to its
//! partition's worker (what is received and not yet committed is bounded for all partitions
//! together, `processor.queued_max`); each worker gathers its partition's batch and
//! hands it to the committers, a few tasks that each run one transaction at a time and put
//! every batch waiting when they start into it (group commit across partitions). A worker
//! waits for its batch's commit before it gathers the next, so a partition is applied in
//! order and never in two transactions at once; partitions run in parallel.
//!
//! Offsets are stored in Kafka only after the batch committed in PostgreSQL (and the stored
//! position in PostgreSQL is the truth): a crash replays at most the uncommitted tail, which
//! the position check skips.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol, StreamConsumer};
use rdkafka::message::{Headers as _, Message as _};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::ClientContext;
use tokio::sync::{mpsc, oneshot, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use paystream_common::config::Config;
use paystream_common::postgres::Disposition;
use paystream_common::Shutdown;

use crate::apply::{apply_batch, apply_parts, dead_letter_one, wake_relay, Message, Source};
use crate::error::{ApplyError, ProcessorError};
use crate::{pending, telemetry};
use paystream_common::command_auth::{self, CommandAuth};

/// Handles rebalances: a revoked partition's worker is told to abandon what it has queued (the
/// new owner reads it again from the committed offset), and, when configured, an assigned
/// partition starts at the position stored in PostgreSQL rather than at Kafka's committed
/// offset, which may trail it by up to one auto-commit interval. Either way the applying
/// transaction skips what is below the stored position, so the seek only saves re-reading,
/// and a partition's first message past it is refused (`Worker::check_position`).
pub struct GroupContext {
    pool: Pool,
    group: String,
    topic: String,
    runtime: tokio::runtime::Handle,
    live: Mutex<HashMap<i32, Arc<AtomicBool>>>,
    seek_on_assign: bool,
}

impl GroupContext {
    /// The liveness flag of the current assignment of `partition`.
    fn live_flag(&self, partition: i32) -> Arc<AtomicBool> {
        let mut live = self.live.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        live.entry(partition).or_insert_with(|| Arc::new(AtomicBool::new(true))).clone()
    }

    /// Sets each assigned partition's start offset to its stored position, or to the
    /// beginning of the log where there is none.
    /// Runs inside the rebalance callback, so it blocks briefly (bounded by a timeout); on
    /// failure the committed offsets apply, which is still correct because the applying
    /// transaction skips what is below the stored position.
    fn seek_to_stored(&self, tpl: &mut TopicPartitionList) {
        let partitions: Vec<i32> =
            tpl.elements().iter().filter(|e| e.topic() == self.topic).map(|e| e.partition()).collect();
        if partitions.is_empty() {
            return;
        }
        let query = stored_positions(&self.pool, &self.group, &self.topic, &partitions);
        let rows = tokio::task::block_in_place(|| {
            self.runtime.block_on(async { tokio::time::timeout(Duration::from_secs(5), query).await })
        });
        match rows {
            Ok(Ok(rows)) => {
                // A partition this database has no position for has had nothing applied to
                // it: it starts at the beginning of its log, whatever offset the group
                // committed (a database restored or replaced under the group).
                let starts = partitions.iter().map(|&partition| {
                    let stored = rows.iter().find(|(p, _)| *p == partition).map(|&(_, next)| next);
                    (partition, stored.map_or(Offset::Beginning, Offset::Offset))
                });
                for (partition, offset) in starts {
                    if let Err(error) = tpl.set_partition_offset(&self.topic, partition, offset) {
                        tracing::warn!(partition, %error, "cannot start at the stored position");
                    }
                }
            }
            Ok(Err(error)) => tracing::warn!(%error, "cannot read stored positions; starting at committed offsets"),
            Err(_) => tracing::warn!("reading stored positions timed out; starting at committed offsets"),
        }
    }
}

impl ClientContext for GroupContext {
    /// librdkafka's statistics (every `statistics.interval.ms`): the lag of each partition
    /// this member consumes, counted from the positions stored after PostgreSQL committed.
    fn stats(&self, statistics: rdkafka::Statistics) {
        if let Some(topic) = statistics.topics.get(&self.topic) {
            for (partition, p) in &topic.partitions {
                // -1 is librdkafka's internal UA partition. Until this member stores a position
                // on a partition, the committed one (the previous owner's) counts; a negative
                // lag means neither is known yet.
                let lag = if p.consumer_lag_stored >= 0 { p.consumer_lag_stored } else { p.consumer_lag };
                if *partition >= 0 && lag >= 0 {
                    telemetry::lag(*partition, lag);
                }
            }
        }
    }
}

impl ConsumerContext for GroupContext {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let cooperative = matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                telemetry::rebalance("assign", &partitions_of(tpl));
                if self.seek_on_assign {
                    self.seek_to_stored(tpl);
                }
                {
                    let mut live = self.live.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                    for e in tpl.elements() {
                        live.insert(e.partition(), Arc::new(AtomicBool::new(true)));
                    }
                }
                if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                telemetry::rebalance("revoke", &partitions_of(tpl));
                {
                    let mut live = self.live.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                    for e in tpl.elements() {
                        if let Some(flag) = live.remove(&e.partition()) {
                            flag.store(false, Ordering::Release);
                        }
                    }
                }
                if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                }
            }
            other => {
                tracing::warn!(error = ?other, "rebalance error; dropping the assignment");
                let mut live = self.live.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                for (_, flag) in live.drain() {
                    flag.store(false, Ordering::Release);
                }
                consumer.unassign()
            }
        };
        if let Err(error) = result {
            tracing::warn!(%error, "applying the rebalance failed");
        }
    }
}

/// The stored positions (next offsets) of `partitions`, by partition, where there are any.
async fn stored_positions(
    pool: &Pool,
    group: &str,
    topic: &str,
    partitions: &[i32],
) -> Result<Vec<(i32, i64)>, String> {
    let client = pool.get().await.map_err(|e| e.to_string())?;
    let stmt =
        client.prepare_cached(include_str!("../sql/consumer_position_select.sql")).await.map_err(|e| e.to_string())?;
    let rows = client.query(&stmt, &[&group, &topic, &partitions]).await.map_err(|e| e.to_string())?;
    Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
}

/// The partition numbers of a rebalance's list, for the log.
fn partitions_of(tpl: &TopicPartitionList) -> Vec<i32> {
    tpl.elements().iter().map(|e| e.partition()).collect()
}

type GroupConsumer = StreamConsumer<GroupContext>;

/// Consumes until `shutdown`, applying every message.
pub async fn consume(config: &Config, pool: Pool, shutdown: Shutdown) -> Result<(), ProcessorError> {
    let consumer: Arc<GroupConsumer> = Arc::new(
        paystream_common::kafka::consumer_config(&config.kafka, &config.processor.group_id, "paystream-processor")
            // Lag per partition in /metrics (see `GroupContext::stats`).
            .set("statistics.interval.ms", "5000")
            .create_with_context(GroupContext {
                pool: pool.clone(),
                group: config.processor.group_id.clone(),
                topic: config.kafka.inbound_topic.clone(),
                runtime: tokio::runtime::Handle::current(),
                live: Mutex::default(),
                seek_on_assign: config.processor.seek_to_stored_position,
            })?,
    );
    consumer.subscribe(&[&config.kafka.inbound_topic])?;
    tracing::info!(topic = %config.kafka.inbound_topic, group = %config.processor.group_id, "processor consuming");

    let template = Source {
        group: config.processor.group_id.clone(),
        topic: config.kafka.inbound_topic.clone(),
        partition: -1,
        events_topic: config.kafka.events_topic.clone(),
        deadletter_topic: config.kafka.deadletter_topic.clone(),
        auth: Arc::new(CommandAuth::new(&config.kafka.command_keys)),
    };
    let mut workers: HashMap<i32, (mpsc::UnboundedSender<Queued>, Arc<AtomicBool>)> = HashMap::new();
    // The bound on what is received and not yet committed: each message holds a permit until
    // its batch committed or was abandoned.
    let queued = Arc::new(Semaphore::new(config.processor.queued_max));
    let mut tasks: JoinSet<Result<(), ProcessorError>> = JoinSet::new();
    let fatal = shutdown.child_token();
    // Each worker has at most one batch waiting, so the queue never holds more than the
    // partitions this member owns.
    let (commit, pending) = mpsc::channel::<Pending>(1024);
    let pending = Arc::new(tokio::sync::Mutex::new(pending));
    let in_flight = Arc::new(InFlight::default());
    for _ in 0..config.processor.transactions {
        let committer = Committer {
            pending: pending.clone(),
            in_flight: in_flight.clone(),
            pool: pool.clone(),
            transaction_max: config.processor.transaction_max,
            overlap_min: config.processor.overlap_min.min(config.processor.transaction_max),
            overlap_wait: Duration::from_millis(config.processor.overlap_wait_max_ms),
            stop: fatal.clone(),
            template: template.clone(),
        };
        tasks.spawn(committer.run());
    }
    // Held reversals whose payment arrived while a follow-up was missed (a crash).
    let sweep = tokio::spawn(pending::sweep(pool.clone(), template.clone(), fatal.clone()));
    // Only the committers hold the queue's receiving end: once the last of them stopped, a
    // batch still queued is dropped with it and its worker learns that nothing will commit
    // it. Held here as well, a batch handed over just as the committers stopped waited for
    // its outcome forever, and so did the shutdown (measured: one stop in a few hung until
    // it was killed, keeping its partitions from the rest of the group).
    drop(pending);
    let result = loop {
        tokio::select! {
            _ = fatal.cancelled() => break Ok(()),
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                match done {
                    Ok(Err(error)) => break Err(error),
                    Ok(Ok(())) => {}
                    // A panicked worker would strand its partition: stop, and let the restart
                    // resume from the stored positions.
                    Err(join) => break Err(ProcessorError::WorkerPanicked(join.to_string())),
                }
            }
            received = consumer.recv() => {
                let m = match received {
                    Ok(m) => m,
                    Err(error) => {
                        tracing::warn!(%error, "consumer error");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let partition = m.partition();
                let mac = m.headers().and_then(|headers| {
                    headers.iter().find(|h| h.key == command_auth::HEADER).and_then(|h| h.value.map(<[u8]>::to_vec))
                });
                let message = Message {
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    payload: m.payload().map(<[u8]>::to_vec),
                    mac,
                };
                drop(m);
                // Backpressure: wait until committed batches make room.
                let permit = tokio::select! {
                    _ = fatal.cancelled() => break Ok(()),
                    permit = queued.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break Ok(()), // closed: never, the semaphore lives here
                    },
                };
                // A worker of an earlier assignment of this partition was told to stop by the
                // revoke; messages of the new assignment go to a new worker.
                if workers.get(&partition).is_some_and(|(_, live)| !live.load(Ordering::Acquire)) {
                    workers.remove(&partition);
                }
                let (sender, _) = workers.entry(partition).or_insert_with(|| {
                    let (tx, rx) = mpsc::unbounded_channel();
                    let live = consumer.context().live_flag(partition);
                    let source = Source { partition, ..template.clone() };
                    let worker = Worker {
                        source,
                        commit: commit.clone(),
                        pool: pool.clone(),
                        consumer: consumer.clone(),
                        batch_max: config.processor.batch_max,
                        backoff_max: Duration::from_millis(config.processor.retry_backoff_max_ms),
                        stop: fatal.clone(),
                        live: live.clone(),
                    };
                    tasks.spawn(worker.run(message.offset, rx));
                    (tx, live)
                });
                if sender.send((message, permit)).is_err() {
                    tracing::warn!(partition, "partition worker is gone");
                }
            }
        }
    };
    // Close every queue; workers finish the batch in hand (or abandon it uncommitted on a
    // second signal) and exit, and the committers with them.
    drop(workers);
    drop(commit);
    fatal.cancel();
    while let Some(done) = tasks.join_next().await {
        if let Ok(Err(error)) = done {
            tracing::error!(%error, "partition worker stopped with an error");
        }
    }
    let _ = sweep.await;
    // Commit whatever offsets were stored, so that a restart replays as little as possible.
    let _ = consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync);
    result
}

/// A received message and its share of `processor.queued_max`.
type Queued = (Message, OwnedSemaphorePermit);

/// A partition's batch waiting for a transaction.
struct Pending {
    source: Source,
    messages: Arc<Vec<Message>>,
    /// The outcome: `Err` carries the failure of the transaction, which may have been
    /// another partition's fault; the worker then retries its batch alone.
    done: oneshot::Sender<Result<(), String>>,
}

/// The committers' transactions in flight, and a signal each time one ends.
#[derive(Default)]
struct InFlight {
    count: AtomicUsize,
    ended: Notify,
}

/// Counts one transaction in flight for as long as it lives (a failed or cancelled
/// transaction ends too).
struct InFlightGuard<'a>(&'a InFlight);

impl<'a> InFlightGuard<'a> {
    fn new(in_flight: &'a InFlight) -> Self {
        in_flight.count.fetch_add(1, Ordering::AcqRel);
        Self(in_flight)
    }
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
        // Wakes only a committer waiting now: a stored permit would end a later wait at once.
        self.0.ended.notify_waiters();
    }
}

/// Runs transactions one at a time, each holding every batch that was waiting when it began
/// (up to `transaction_max` messages) and, when it waited for another committer's
/// transaction, every batch that arrived meanwhile.
struct Committer {
    pending: Arc<tokio::sync::Mutex<mpsc::Receiver<Pending>>>,
    in_flight: Arc<InFlight>,
    pool: Pool,
    transaction_max: usize,
    /// Messages a group needs to start beside a transaction in flight (`processor.overlap_min`).
    overlap_min: usize,
    /// The longest a smaller group waits for it (`processor.overlap_wait_max_ms`).
    overlap_wait: Duration,
    stop: Shutdown,
    /// Topics and keys for the follow-up of held reversals.
    template: Source,
}

impl Committer {
    async fn run(self) -> Result<(), ProcessorError> {
        let mut group: Vec<Pending> = Vec::new();
        loop {
            group.clear();
            // Counted in flight before the queue is released, so that the next committer
            // already sees this transaction.
            let _in_flight = {
                let mut pending = self.pending.lock().await;
                let first = tokio::select! {
                    _ = self.stop.cancelled() => None,
                    p = pending.recv() => p,
                };
                let Some(first) = first else { return Ok(()) };
                let mut size = first.messages.len();
                group.push(first);
                take_waiting(&mut pending, &mut group, &mut size, self.transaction_max);
                // Beside a transaction in flight, a small group waits for it to end and takes
                // what arrives meanwhile: at moderate rates one transaction of several
                // payments costs PostgreSQL less CPU than small ones side by side, and that
                // CPU was the queueing delay of everything else on the machine (measured at
                // 600 payments/s: the processor's server CPU a quarter lower, end-to-end p99
                // 58-94 ms against 173-257). A backlog fills groups past the threshold, and
                // the transactions overlap as before. The wait lasts `overlap_wait` at most:
                // a transaction in flight that waits on a lock another session holds does not
                // hold up the other partitions' payments.
                let deadline = tokio::time::Instant::now() + self.overlap_wait;
                while size < self.overlap_min {
                    // Registered before the count is read, so that an end in between wakes it.
                    let ended = self.in_flight.ended.notified();
                    tokio::pin!(ended);
                    ended.as_mut().enable();
                    if self.in_flight.count.load(Ordering::Acquire) == 0 {
                        break;
                    }
                    tokio::select! {
                        _ = self.stop.cancelled() => break,
                        _ = &mut ended => break,
                        _ = tokio::time::sleep_until(deadline) => break,
                        next = pending.recv() => {
                            let Some(next) = next else { break };
                            size += next.messages.len();
                            group.push(next);
                            take_waiting(&mut pending, &mut group, &mut size, self.transaction_max);
                        }
                    }
                }
                InFlightGuard::new(&self.in_flight)
            };
            let started = Instant::now();
            let parts: Vec<(&Source, &[Message])> = group.iter().map(|p| (&p.source, &p.messages[..])).collect();
            let result = async {
                let mut client = self.pool.get().await?;
                let outcome = apply_parts(client.transaction().await?, &parts).await?;
                if outcome.events > 0 {
                    wake_relay(&client).await;
                }
                Ok::<_, ApplyError>(outcome)
            }
            .await;
            let size = parts.iter().map(|(_, m)| m.len()).sum();
            drop(parts);
            let reply = match result {
                Ok(outcome) => {
                    telemetry::BatchApplied {
                        partitions: group.len(),
                        size,
                        outcome: &outcome,
                        elapsed: started.elapsed(),
                    }
                    .emit();
                    pending::follow_up(&self.pool, &self.template, &outcome.pending_keys).await;
                    Ok(())
                }
                Err(error) => Err(error.to_string()),
            };
            for p in group.drain(..) {
                // A worker that stopped waiting (shutdown) has nothing left to do with it.
                let _ = p.done.send(reply.clone());
            }
        }
    }
}

/// Adds the batches waiting now to `group`, until it holds `max` messages.
fn take_waiting(pending: &mut mpsc::Receiver<Pending>, group: &mut Vec<Pending>, size: &mut usize, max: usize) {
    while *size < max {
        let Ok(next) = pending.try_recv() else { break };
        *size += next.messages.len();
        group.push(next);
    }
}

struct Worker {
    source: Source,
    commit: mpsc::Sender<Pending>,
    pool: Pool,
    consumer: Arc<GroupConsumer>,
    batch_max: usize,
    backoff_max: Duration,
    stop: Shutdown,
    /// False once this partition was revoked from this member: queued messages are abandoned.
    live: Arc<AtomicBool>,
}

impl Worker {
    /// Checks a partition's stored position against its log, once per assignment, when its
    /// first message (at `first`) arrives:
    /// - a position beyond the end of the log is refused: positions only advance over
    ///   messages that were in the log, so a healthy log always reaches them; one that ends
    ///   before them was recreated or truncated, and the applying transaction would skip its
    ///   messages as applied;
    /// - a first message past the position (or, with none stored, past the start of the log)
    ///   is refused: the inbound topic's offsets have no gaps (ingest writes it without
    ///   transactions and it is not compacted), so the messages in between were never
    ///   delivered and would never be applied.
    ///
    /// The partition waits (and retries) until the database and the broker answer; `None`
    /// when the processor stops meanwhile. The applying transaction checks the position again
    /// for every batch (`ApplyError::Gap`).
    async fn check_position(&self, first: i64) -> Result<Option<()>, ProcessorError> {
        let source = &self.source;
        let partition = source.partition;
        // Fails closed: the partition waits until the database and the broker both answer,
        // rather than run unchecked (a restored database at a slow moment would otherwise
        // be skipped past).
        let mut attempt: u32 = 0;
        let (stored, (start, end)) = loop {
            let answer = async {
                let stored =
                    stored_positions(&self.pool, &source.group, &source.topic, std::slice::from_ref(&partition));
                let stored = tokio::time::timeout(Duration::from_secs(5), stored)
                    .await
                    .map_err(|_| "reading the stored position timed out".to_owned())??
                    .first()
                    .map(|&(_, stored)| stored);
                if stored == Some(first) {
                    // The usual case: resuming exactly where the database left off.
                    return Ok::<_, String>((stored, (first, first)));
                }
                let (consumer, topic) = (self.consumer.clone(), source.topic.clone());
                let watermarks = tokio::task::spawn_blocking(move || {
                    consumer.fetch_watermarks(&topic, partition, Duration::from_secs(5))
                })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
                Ok((stored, watermarks))
            }
            .await;
            match answer {
                Ok(answer) => break answer,
                Err(error) => {
                    attempt += 1;
                    telemetry::BatchRetried {
                        partition,
                        error: &format_args!("checking the stored position: {error}"),
                        attempt,
                    }
                    .emit();
                    let backoff =
                        self.backoff_max.min(Duration::from_millis(100u64.saturating_mul(u64::from(attempt))));
                    tokio::select! {
                        _ = self.stop.cancelled() => return Ok(None),
                        _ = tokio::time::sleep(backoff) => {}
                    }
                }
            }
        };
        if stored == Some(first) {
            return Ok(Some(()));
        }
        if let Some(stored) = stored.filter(|&stored| stored > end) {
            return Err(ProcessorError::PositionBeyondLog {
                group: source.group.clone(),
                topic: source.topic.clone(),
                partition,
                stored,
                end,
            });
        }
        // A stored position below the start of the log is a gap too: retention removed
        // messages this database never applied.
        let (from, origin) = match stored {
            Some(stored) => (stored, "its stored position"),
            None => (start, "none stored: the start of the log"),
        };
        if first > from {
            return Err(ProcessorError::PositionBehindLog {
                group: source.group.clone(),
                topic: source.topic.clone(),
                partition,
                from,
                origin,
                first,
            });
        }
        Ok(Some(()))
    }

    /// Applies the partition's messages from `rx`, the first of which is at offset `first`.
    async fn run(self, first: i64, mut rx: mpsc::UnboundedReceiver<Queued>) -> Result<(), ProcessorError> {
        if self.check_position(first).await?.is_none() {
            return Ok(()); // stopping
        }
        let mut batch: Vec<Message> = Vec::new();
        // Released (room for more messages) once the batch committed or was abandoned.
        let mut permits: Vec<OwnedSemaphorePermit> = Vec::new();
        // A consumer may be handed records it was handed already (librdkafka refetches after
        // a seek or a broker failover); an offset at or below the last one queued here is
        // such a repeat, and dropping it is right on any broker.
        let mut last_offset = i64::MIN;
        loop {
            batch.clear();
            permits.clear();
            let first = tokio::select! {
                _ = self.stop.cancelled() => None,
                m = rx.recv() => m,
            };
            let Some((first, permit)) = first else { return Ok(()) };
            permits.push(permit);
            if !self.live.load(Ordering::Acquire) {
                tracing::debug!(partition = self.source.partition, "partition revoked; abandoning queued messages");
                return Ok(());
            }
            if first.offset > last_offset {
                last_offset = first.offset;
                batch.push(first);
            }
            while batch.len() < self.batch_max {
                match rx.try_recv() {
                    Ok((m, permit)) => {
                        permits.push(permit);
                        if m.offset > last_offset {
                            last_offset = m.offset;
                            batch.push(m);
                        }
                    }
                    Err(_) => break,
                }
            }
            if batch.is_empty() {
                continue;
            }
            // Grown as needed: at low rates a batch holds a few messages, and a batch_max-sized
            // buffer in every partition's worker would be memory held for nothing.
            let messages = Arc::new(std::mem::take(&mut batch));
            match self.commit_shared(messages.clone()).await {
                Ok(true) => {}
                Ok(false) => return Ok(()), // shutting down: the batch stays uncommitted
                Err(error) => {
                    tracing::debug!(partition = self.source.partition, %error, "shared transaction failed; applying the batch alone");
                    if !self.apply_with_retry(&messages).await? {
                        return Ok(()); // shutting down: the batch stays uncommitted
                    }
                }
            }
            if let Some(last) = messages.last() {
                // Fails only when the partition was revoked meanwhile: the new owner starts
                // from the committed offset and the stored position skips what we applied.
                let _ = self.consumer.store_offset(&self.source.topic, self.source.partition, last.offset);
            }
        }
    }

    /// Hands the batch to the committers and waits for its transaction: `Ok(false)` when
    /// the processor is stopping, `Err` when the transaction failed (for any of its batches).
    async fn commit_shared(&self, messages: Arc<Vec<Message>>) -> Result<bool, String> {
        let (done, outcome) = oneshot::channel();
        let pending = Pending { source: self.source.clone(), messages, done };
        if self.commit.send(pending).await.is_err() {
            return Ok(false);
        }
        match outcome.await {
            Ok(Ok(())) => Ok(true),
            Ok(Err(error)) => Err(error),
            Err(_) => Ok(false),
        }
    }

    /// Applies `batch` alone, retrying what may pass later and dead-lettering what never
    /// will: `Ok(true)` once every message took effect (applied or dead-lettered),
    /// `Ok(false)` when the processor stopped first. Then nothing after the unapplied message
    /// may be applied or its offset stored: the partition's position would pass it by.
    async fn apply_with_retry(&self, batch: &[Message]) -> Result<bool, ProcessorError> {
        let started = Instant::now();
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let result = async {
                let mut client = self.pool.get().await?;
                let outcome = apply_batch(client.transaction().await?, &self.source, batch).await?;
                if outcome.events > 0 {
                    wake_relay(&client).await;
                }
                Ok::<_, ApplyError>(outcome)
            }
            .await;
            let error = match result {
                Ok(outcome) => {
                    telemetry::BatchApplied {
                        partitions: 1,
                        size: batch.len(),
                        outcome: &outcome,
                        elapsed: started.elapsed(),
                    }
                    .emit();
                    pending::follow_up(&self.pool, &self.source, &outcome.pending_keys).await;
                    return Ok(true);
                }
                Err(error) => error,
            };
            match error.disposition() {
                Disposition::Fatal => {
                    tracing::error!(partition = self.source.partition, %error, "batch cannot be applied; stopping the processor");
                    self.stop.cancel();
                    return Err(ProcessorError::Fatal { partition: self.source.partition, source: error });
                }
                // The input violates a constraint: find the message(s) and dead-letter them.
                Disposition::Reject if batch.len() > 1 => return self.isolate(batch).await,
                Disposition::Reject => {
                    return self.dead_letter(&batch[0], format!("rejected by the database: {error}")).await
                }
                Disposition::Retry => {
                    telemetry::BatchRetried { partition: self.source.partition, error: &error, attempt }.emit();
                    // A persistent unique violation is the input's fault, not contention.
                    if attempt >= 5 && batch.len() > 1 {
                        return Box::pin(self.isolate(batch)).await;
                    }
                    if attempt >= 5 && is_unique_violation(&error) {
                        return self.dead_letter(&batch[0], format!("rejected by the database: {error}")).await;
                    }
                    let backoff =
                        Duration::from_millis(50u64.saturating_mul(1 << attempt.min(10))).min(self.backoff_max);
                    tokio::select! {
                        _ = self.stop.cancelled() => return Ok(false),
                        _ = tokio::time::sleep(backoff) => {}
                    }
                }
            }
        }
    }

    /// Applies a failing batch one message at a time so that only the guilty are dead-lettered.
    async fn isolate(&self, batch: &[Message]) -> Result<bool, ProcessorError> {
        tracing::warn!(
            partition = self.source.partition,
            size = batch.len(),
            "batch failed; applying its messages one by one"
        );
        for m in batch {
            if !Box::pin(self.apply_with_retry(std::slice::from_ref(m))).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    async fn dead_letter(&self, message: &Message, reason: String) -> Result<bool, ProcessorError> {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let result = async {
                let mut client = self.pool.get().await?;
                dead_letter_one(client.transaction().await?, &self.source, message, reason.clone()).await?;
                wake_relay(&client).await;
                Ok::<_, ApplyError>(())
            }
            .await;
            match result {
                Ok(()) => {
                    telemetry::DeadLettered.emit();
                    return Ok(true);
                }
                Err(error) if error.disposition() == Disposition::Retry && attempt < 1000 => {
                    telemetry::BatchRetried { partition: self.source.partition, error: &error, attempt }.emit();
                    let backoff = self.backoff_max.min(Duration::from_millis(100 * u64::from(attempt)));
                    tokio::select! {
                        _ = self.stop.cancelled() => return Ok(false),
                        _ = tokio::time::sleep(backoff) => {}
                    }
                }
                Err(error) => {
                    tracing::error!(partition = self.source.partition, offset = message.offset, %error, "cannot even dead-letter a message; stopping");
                    self.stop.cancel();
                    return Err(ProcessorError::Fatal { partition: self.source.partition, source: error });
                }
            }
        }
    }
}

fn is_unique_violation(error: &ApplyError) -> bool {
    matches!(error, ApplyError::Db(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION))
}
