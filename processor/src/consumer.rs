//! The consumer-group member: one task receives from Kafka and hands each message to its
//! partition's worker over a bounded channel; each worker applies its partition in order, in
//! batches. Partitions run in parallel; a partition never does.
//!
//! Offsets are stored in Kafka only after the batch committed in PostgreSQL (and the stored
//! position in PostgreSQL is the truth): a crash replays at most the uncommitted tail, which
//! the position check skips.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use rdkafka::consumer::{Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::Message as _;
use rdkafka::ClientContext;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use paystream_common::config::Config;
use paystream_common::postgres::Disposition;
use paystream_common::Shutdown;

use crate::apply::{apply_batch, dead_letter_one, Message, Source};
use crate::error::{ApplyError, ProcessorError};
use crate::telemetry;

/// Logs and counts rebalances.
pub struct GroupContext;

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _consumer: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => telemetry::rebalance("assign", tpl.count()),
            Rebalance::Revoke(tpl) => telemetry::rebalance("revoke", tpl.count()),
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }
}

type GroupConsumer = StreamConsumer<GroupContext>;

/// Consumes until `shutdown`, applying every message.
pub async fn consume(config: &Config, pool: Pool, shutdown: Shutdown) -> Result<(), ProcessorError> {
    let consumer: Arc<GroupConsumer> = Arc::new(
        paystream_common::kafka::consumer_config(&config.kafka, &config.processor.group_id, "paystream-processor")
            .create_with_context(GroupContext)?,
    );
    consumer.subscribe(&[&config.kafka.inbound_topic])?;
    tracing::info!(topic = %config.kafka.inbound_topic, group = %config.processor.group_id, "processor consuming");

    let mut workers: HashMap<i32, mpsc::Sender<Message>> = HashMap::new();
    let mut tasks: JoinSet<Result<(), ProcessorError>> = JoinSet::new();
    let fatal = shutdown.child_token();
    let result = loop {
        tokio::select! {
            _ = fatal.cancelled() => break Ok(()),
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                match done {
                    Ok(Err(error)) => break Err(error),
                    Ok(Ok(())) => {}
                    Err(join) => tracing::error!(error = %join, "partition worker panicked"),
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
                let message = Message { offset: m.offset(), payload: m.payload().map(<[u8]>::to_vec) };
                drop(m);
                let sender = workers.entry(partition).or_insert_with(|| {
                    let (tx, rx) = mpsc::channel(config.processor.partition_queue);
                    let source = Source {
                        group: config.processor.group_id.clone(),
                        topic: config.kafka.inbound_topic.clone(),
                        partition,
                        events_topic: config.kafka.events_topic.clone(),
                        deadletter_topic: config.kafka.deadletter_topic.clone(),
                    };
                    let worker = Worker {
                        source,
                        pool: pool.clone(),
                        consumer: consumer.clone(),
                        batch_max: config.processor.batch_max,
                        backoff_max: Duration::from_millis(config.processor.retry_backoff_max_ms),
                        stop: fatal.clone(),
                    };
                    tasks.spawn(worker.run(rx));
                    tx
                });
                // A full queue is backpressure: the receive loop waits for that worker.
                tokio::select! {
                    _ = fatal.cancelled() => break Ok(()),
                    sent = sender.send(message) => if sent.is_err() {
                        tracing::warn!(partition, "partition worker is gone");
                    }
                }
            }
        }
    };
    // Close every queue; workers finish the batch in hand (or abandon it uncommitted on a
    // second signal) and exit.
    drop(workers);
    fatal.cancel();
    while let Some(done) = tasks.join_next().await {
        if let Ok(Err(error)) = done {
            tracing::error!(%error, "partition worker stopped with an error");
        }
    }
    // Commit whatever offsets were stored, so that a restart replays as little as possible.
    let _ = consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync);
    result
}

struct Worker {
    source: Source,
    pool: Pool,
    consumer: Arc<GroupConsumer>,
    batch_max: usize,
    backoff_max: Duration,
    stop: Shutdown,
}

impl Worker {
    async fn run(self, mut rx: mpsc::Receiver<Message>) -> Result<(), ProcessorError> {
        let mut batch: Vec<Message> = Vec::with_capacity(self.batch_max);
        loop {
            batch.clear();
            let first = tokio::select! {
                _ = self.stop.cancelled() => None,
                m = rx.recv() => m,
            };
            let Some(first) = first else { return Ok(()) };
            batch.push(first);
            while batch.len() < self.batch_max {
                match rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            self.apply_with_retry(&batch).await?;
            if let Some(last) = batch.last() {
                // Fails only when the partition was revoked meanwhile: the new owner starts
                // from the committed offset and the stored position skips what we applied.
                let _ = self.consumer.store_offset(&self.source.topic, self.source.partition, last.offset);
            }
        }
    }

    async fn apply_with_retry(&self, batch: &[Message]) -> Result<(), ProcessorError> {
        let started = Instant::now();
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let result = match self.pool.get().await {
                Ok(mut client) => match client.transaction().await {
                    Ok(tx) => apply_batch(tx, &self.source, batch).await,
                    Err(e) => Err(ApplyError::from(e)),
                },
                Err(e) => Err(ApplyError::from(e)),
            };
            let error = match result {
                Ok(outcome) => {
                    telemetry::BatchApplied {
                        partition: self.source.partition,
                        size: batch.len(),
                        outcome: &outcome,
                        elapsed: started.elapsed(),
                    }
                    .emit();
                    return Ok(());
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
                        _ = self.stop.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(backoff) => {}
                    }
                }
            }
        }
    }

    /// Applies a failing batch one message at a time so that only the guilty are dead-lettered.
    async fn isolate(&self, batch: &[Message]) -> Result<(), ProcessorError> {
        tracing::warn!(
            partition = self.source.partition,
            size = batch.len(),
            "batch failed; applying its messages one by one"
        );
        for m in batch {
            Box::pin(self.apply_with_retry(std::slice::from_ref(m))).await?;
        }
        Ok(())
    }

    async fn dead_letter(&self, message: &Message, reason: String) -> Result<(), ProcessorError> {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let result = match self.pool.get().await {
                Ok(mut client) => match client.transaction().await {
                    Ok(tx) => dead_letter_one(tx, &self.source, message, reason.clone()).await,
                    Err(e) => Err(ApplyError::from(e)),
                },
                Err(e) => Err(ApplyError::from(e)),
            };
            match result {
                Ok(()) => {
                    metrics::counter!("paystream_processor_messages_total", "outcome" => "dead_lettered").increment(1);
                    return Ok(());
                }
                Err(error) if error.disposition() == Disposition::Retry && attempt < 1000 => {
                    telemetry::BatchRetried { partition: self.source.partition, error: &error, attempt }.emit();
                    tokio::time::sleep(self.backoff_max.min(Duration::from_millis(100 * u64::from(attempt)))).await;
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
