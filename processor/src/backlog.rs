//! Samples the age of the outbox's oldest row for alerting (`docs/runbooks.md`,
//! PaystreamOutboxBacklogOld) and how long each calendar's business date has gone unaccrued
//! (PaystreamAccrualNotRun), and, less often, the rows sitting in the monthly partitions'
//! DEFAULT partitions (PaystreamPartitionDefaultRows). The relay reports the backlog as well,
//! from its drain loop; this figure does not depend on the relay, whose failure it is there
//! to show.

use std::time::Duration;

use deadpool_postgres::Pool;

use paystream_common::Shutdown;

use crate::telemetry;

/// How often the age is sampled: well under a scrape interval's multiple that alerts wait.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(5);

/// The oldest row by id, which the primary key finds at once whatever the backlog, where
/// `paystream.outbox_backlog` counts every row. A row taken by a relay batch that has not
/// committed yet still counts: it is not published until the batch commits.
const OLDEST_AGE: &str = include_str!("../sql/outbox_select_oldest_age.sql");

/// Rows in each DEFAULT partition (`paystream.partition_default_rows`).
const DEFAULT_ROWS: &str = include_str!("../sql/partition_default_rows_select.sql");

/// How long each calendar's business date has gone without a finished accrual run
/// (`paystream.accrual_pending`, a row per calendar).
const ACCRUAL_PENDING: &str = include_str!("../sql/accrual_pending_select.sql");

/// DEFAULT partitions are counted once every this many samples (a minute): a missing month
/// is a matter of hours, and the count reads the DEFAULT partitions, empty when all is well.
const DEFAULT_ROWS_EVERY: u32 = 12;

/// Samples every [`SAMPLE_INTERVAL`] until `shutdown`, the first time at once.
pub async fn sample(pool: Pool, shutdown: Shutdown) {
    let mut round = 0u32;
    loop {
        if round % DEFAULT_ROWS_EVERY == 0 {
            sample_default_rows(&pool).await;
        }
        // A row per calendar: cheap enough for every sample, and an operator who ran the
        // missed accrual sees the alert resolve at once.
        sample_accrual_pending(&pool).await;
        round = round.wrapping_add(1);
        let sampled = async {
            let client = pool.get().await.map_err(|e| e.to_string())?;
            let statement = client.prepare_cached(OLDEST_AGE).await.map_err(|e| e.to_string())?;
            client.query_one(&statement, &[]).await.map(|row| row.get::<_, f64>(0)).map_err(|e| e.to_string())
        }
        .await;
        match sampled {
            Ok(age) => telemetry::outbox_oldest(age),
            Err(error) => paystream_common::warn_limited!(
                paystream_common::telemetry::RETRY_LOG_INTERVAL,
                %error,
                "cannot sample the outbox backlog; will sample again"
            ),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(SAMPLE_INTERVAL) => {}
        }
    }
}

/// Runs one of the sampling queries on a pooled connection.
async fn sample_rows(pool: &Pool, sql: &str) -> Result<Vec<tokio_postgres::Row>, String> {
    let client = pool.get().await.map_err(|e| e.to_string())?;
    client.query(sql, &[]).await.map_err(|e| e.to_string())
}

async fn sample_default_rows(pool: &Pool) {
    match sample_rows(pool, DEFAULT_ROWS).await {
        Ok(rows) => {
            for row in rows {
                telemetry::partition_default_rows(&row.get::<_, String>(0), row.get(1));
            }
        }
        Err(error) => paystream_common::warn_limited!(
            paystream_common::telemetry::RETRY_LOG_INTERVAL,
            %error,
            "cannot count the rows in DEFAULT partitions; will count again"
        ),
    }
}

async fn sample_accrual_pending(pool: &Pool) {
    match sample_rows(pool, ACCRUAL_PENDING).await {
        Ok(rows) => {
            for row in rows {
                telemetry::accrual_pending(&row.get::<_, String>(0), row.get(1));
            }
        }
        Err(error) => paystream_common::warn_limited!(
            paystream_common::telemetry::RETRY_LOG_INTERVAL,
            %error,
            "cannot read whether the business date was accrued; will read again"
        ),
    }
}
