//! Samples the age of the outbox's oldest row for alerting (`docs/runbooks.md`,
//! PaystreamOutboxBacklogOld). The relay reports the backlog as well, from its drain loop;
//! this figure does not depend on the relay, whose failure it is there to show.

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

/// Samples every [`SAMPLE_INTERVAL`] until `shutdown`, the first time at once.
pub async fn sample(pool: Pool, shutdown: Shutdown) {
    loop {
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
