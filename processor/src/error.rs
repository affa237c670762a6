//! Processor errors, each knowing its disposition: retry the batch, dead-letter a message,
//! or stop the service.

use paystream_common::postgres::{classify, Disposition};

/// A batch could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A statement failed; its SQLSTATE decides the disposition.
    #[error("database: {}", paystream_common::postgres::describe(.0))]
    Db(#[from] tokio_postgres::Error),
    /// No pooled connection in time.
    #[error("database pool: {}", paystream_common::postgres::describe_pool(.0))]
    Pool(#[from] deadpool_postgres::PoolError),
    /// A journal does not balance: a bug. Nothing was committed.
    #[error("unbalanced journal {0}: refusing to commit")]
    Unbalanced(String),
    /// A batch's offsets do not ascend: a bug in the consumer loop.
    #[error("batch offsets of partition {0} do not ascend")]
    OutOfOrder(i32),
    /// An event could not be encoded: the command that made it is dead-lettered (validation
    /// refuses what the wire cannot carry, so this is a bug or a schema problem).
    #[error("cannot encode event: {0}")]
    Encode(#[from] paystream_schemas::SchemaError),
    /// The batch starts past its partition's stored position: the messages in between were
    /// never delivered, and applying it would leave them out for good.
    #[error(
        "partition {partition}: the batch starts at offset {first} but the next offset to apply is {next}; the \
         messages in between were never delivered (a database restored under the group's committed offsets, or \
         retention ahead of the processor). Nothing was applied past the gap"
    )]
    Gap {
        /// The partition.
        partition: i32,
        /// The stored next offset.
        next: i64,
        /// The batch's first offset.
        first: i64,
    },
    /// A status in the database this code does not know: a newer schema or a hand edit.
    #[error("unknown status {0:?} in the database")]
    UnknownStatus(String),
}

impl ApplyError {
    /// What to do about it.
    pub fn disposition(&self) -> Disposition {
        match self {
            Self::Db(e) => classify(e),
            Self::Pool(_) => Disposition::Retry,
            // The message made an event the wire cannot carry: isolated and dead-lettered,
            // never a stop of every partition.
            Self::Encode(_) => Disposition::Reject,
            Self::Unbalanced(_) | Self::OutOfOrder(_) | Self::Gap { .. } | Self::UnknownStatus(_) => Disposition::Fatal,
        }
    }
}

/// Why the processor stopped.
#[derive(Debug, thiserror::Error)]
pub enum ProcessorError {
    /// Kafka client creation or subscription failed.
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The database pool could not be built.
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] paystream_common::postgres::PostgresError),
    /// A partition worker panicked (a bug); the processor stops rather than strand the partition.
    #[error("a partition worker panicked: {0}")]
    WorkerPanicked(String),
    /// A partition's stored position is beyond the end of its log: the topic was recreated
    /// (or truncated) since this group applied it, and its new messages would be skipped as
    /// already applied. Stopping is what keeps them.
    #[error(
        "partition {partition} of {topic}: this group's stored position {stored} is beyond the end of the log \
         ({end}); the topic was recreated or truncated since the group applied it, and its messages would be \
         skipped as applied. Nothing was skipped. Once the new log is known to be unapplied, remove the stale \
         positions: DELETE FROM paystream.consumer_position WHERE consumer_group = '{group}' AND topic = '{topic}'"
    )]
    PositionBeyondLog {
        /// Consumer group.
        group: String,
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// The stored next offset.
        stored: i64,
        /// The partition's high watermark.
        end: i64,
    },
    /// A partition's first message after assignment lies past the next one this database
    /// has applied: the messages in between were never delivered to this member (the
    /// database was restored from a backup or replaced under the group's committed offsets,
    /// retention removed them before they were applied, or the broker skipped them). Applying
    /// on would leave them out for good; stopping keeps them.
    #[error(
        "partition {partition} of {topic}: the first message delivered is at offset {first}, but the next one this \
         database has to apply is at offset {from} ({origin}); the messages in between were skipped (the database \
         restored or replaced under group {group}'s committed offsets, or the records removed by retention before \
         they were applied). Nothing was applied past the gap. To apply them, start the processor with \
         PAYSTREAM_PROCESSOR__SEEK_TO_STORED_POSITION=true (every partition then starts at its stored position, or at \
         the beginning of the log where it has none); records already removed by retention must be replayed from \
         their source"
    )]
    PositionBehindLog {
        /// Consumer group.
        group: String,
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// The next offset to apply: the stored position, or the start of the log.
        from: i64,
        /// Where `from` comes from, for the operator.
        origin: &'static str,
        /// The first offset delivered.
        first: i64,
    },
    /// A batch failed in a way retrying cannot fix; an operator must look.
    #[error("fatal apply error on partition {partition}: {source}")]
    Fatal {
        /// The partition whose batch failed.
        partition: i32,
        /// The error.
        source: ApplyError,
    },
}
