//! Reversals held until their payment is recorded (`paystream.pending_reversal`), applied.
//!
//! A reversal and its payment may be applied by two transactions at once (a chargeback is
//! keyed by its payment id and travels on another partition; a refund may overtake its
//! payment): the reversal's transaction finds no payment and holds the reversal, the
//! payment's finds nothing held yet. So both sides look again after they commit: the
//! payment's transaction for the payments it recorded, the reversal's for the payments it
//! held reversals of. Whichever commits second sees the other's rows. A crash between a
//! commit and its look is covered by the periodic sweep, which also reports how many wait
//! and for how long (`paystream_processor_pending_reversals`).
//!
//! The applying transaction locks in the processor's order (installments in id order, then
//! payments, then the held rows, skipping rows another transaction is applying), so it can
//! neither deadlock with a batch nor apply a held reversal twice.

use std::collections::BTreeSet;
use std::time::Duration;

use deadpool_postgres::Pool;
use uuid::Uuid;

use paystream_common::{now_ms, Shutdown};
use paystream_schemas::{decode_inbound, Inbound};

use crate::apply::{apply_reversal, lock_installments, lock_payments, wake_relay, Outcome, Source};
use crate::error::ApplyError;
use crate::telemetry;
use crate::writes::{PaymentKey, Writes};

macro_rules! sql {
    ($file:literal) => {
        include_str!(concat!("../sql/", $file))
    };
}

/// Held reversals applied per transaction, at most.
const PER_TRANSACTION: i64 = 500;

/// How often the sweep looks.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// Applies the held reversals of `keys` whose payment is recorded, in one transaction;
/// returns what it did. `source` gives the topics (its partition is not used: no position
/// covers these).
pub async fn apply_ready(pool: &Pool, source: &Source, keys: &[PaymentKey]) -> Result<Outcome, ApplyError> {
    let mut outcome = Outcome::default();
    if keys.is_empty() {
        return Ok(outcome);
    }
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let (providers, ids): (Vec<&str>, Vec<&str>) = keys.iter().map(|(p, i)| (p.as_str(), i.as_str())).unzip();
    let ready = tx.prepare_cached(sql!("pending_reversal_select_ready.sql")).await?;
    let rows = tx.query(&ready, &[&providers, &ids]).await?;
    if rows.is_empty() {
        tx.rollback().await?;
        return Ok(outcome);
    }
    let rows: Vec<_> = rows.into_iter().take(usize::try_from(PER_TRANSACTION).unwrap_or(usize::MAX)).collect();
    let installment_ids: BTreeSet<Uuid> = rows.iter().map(|row| row.get(3)).collect();
    let installment_ids: Vec<Uuid> = installment_ids.into_iter().collect();
    let mut installments = lock_installments(&tx, &installment_ids).await?;
    let payment_keys: BTreeSet<(String, String)> = rows.iter().map(|row| (row.get(0), row.get(2))).collect();
    let payment_refs: Vec<(&str, &str)> = payment_keys.iter().map(|(p, i)| (p.as_str(), i.as_str())).collect();
    let mut payments = lock_payments(&tx, &payment_refs).await?;
    let (held_providers, held_ids): (Vec<String>, Vec<String>) =
        rows.iter().map(|row| (row.get(0), row.get(1))).unzip();
    let lock = tx.prepare_cached(sql!("pending_reversal_lock.sql")).await?;
    let locked = tx.query(&lock, &[&held_providers, &held_ids]).await?;
    let mut w = Writes::default();
    let now = now_ms();
    for row in &locked {
        let raw: Vec<u8> = row.get(2);
        let position: (i32, i64) = (row.get(3), row.get(4));
        // It was a valid command when it was held; it is read as it was.
        let Ok(Inbound::Command(command)) = decode_inbound(&raw) else {
            tracing::error!(provider = %row.get::<_, String>(0), reversal = %row.get::<_, String>(1), "a held reversal no longer decodes; left held");
            continue;
        };
        apply_reversal(&mut w, &mut outcome, source, &mut installments, &mut payments, &command, &raw, position, now)?;
        w.push_pending_done(&command);
    }
    w.write(&tx, source, &installments, &payments, (&[], &[]), now).await?;
    outcome.events = w.events() as u64;
    tx.commit().await?;
    if outcome.events > 0 {
        wake_relay(&client).await;
    }
    Ok(outcome)
}

/// Applies what is held for `keys` after a commit, logging rather than failing: the sweep
/// retries what this could not do.
pub async fn follow_up(pool: &Pool, source: &Source, keys: &[PaymentKey]) {
    if keys.is_empty() {
        return;
    }
    match apply_ready(pool, source, keys).await {
        Ok(outcome) if outcome.reversed + outcome.rejected > 0 => {
            tracing::info!(reversals = outcome.reversed, rejected = outcome.rejected, "held reversals applied");
            telemetry::HeldApplied { outcome: &outcome }.emit();
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "held reversals not applied now; the sweep will retry"),
    }
}

/// Every `SWEEP_INTERVAL` until `shutdown`: applies held reversals whose payment is recorded
/// (what a crash between a commit and its follow-up left) and reports how many wait.
pub async fn sweep(pool: Pool, source: Source, shutdown: Shutdown) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(SWEEP_INTERVAL) => {}
        }
        let matched = async {
            let client = pool.get().await?;
            let stats = client.prepare_cached(sql!("pending_reversal_stats.sql")).await?;
            let row = client.query_one(&stats, &[]).await?;
            telemetry::pending_reversals(row.get(0), row.get(1));
            let select = client.prepare_cached(sql!("pending_reversal_select_matched.sql")).await?;
            let keys: Vec<PaymentKey> =
                client.query(&select, &[&PER_TRANSACTION]).await?.iter().map(|r| (r.get(0), r.get(1))).collect();
            Ok::<_, ApplyError>(keys)
        }
        .await;
        match matched {
            Ok(keys) => follow_up(&pool, &source, &keys).await,
            Err(error) => tracing::warn!(%error, "cannot look at held reversals; will look again"),
        }
    }
}
