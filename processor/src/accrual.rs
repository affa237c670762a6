//! Accrual: `paystream accrue` charges every overdue installment of a calendar its late fee
//! (once) and its late interest up to the business date, while the processor keeps applying
//! payments to the same installments.
//!
//! - **One run owns a calendar**: a session advisory lock, released by the server when the
//!   run's connection goes, so a run killed with -9 leaves nothing to clean up.
//! - **Optimistic concurrency**: chunks of candidates are read without locks and their charges
//!   computed (`credit::accrue`); the writing transaction locks the chunk in id order (the
//!   processor's order, so neither deadlocks the other), and writes only the rows whose
//!   version is the one read. A row a payment changed in between is read again and its
//!   charge recomputed from what it owes now: no lost update either way.
//! - **Exactly once per date**: `installment.accrued_through` moves in the same transaction
//!   as the charge rows, which are unique on (installment, business date, kind): a second run
//!   for the date, or a run restarted after a crash, finds nothing left to charge; missed days
//!   are one charge covering them all.
//! - **Workers** split the candidates: one reader walks them in id order and hands chunks to
//!   `workers` writers, each on its own connection.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use rust_decimal::Decimal;
use time::Date;
use tokio_postgres::Row;
use uuid::Uuid;

use paystream_common::now_ms;
use paystream_schemas::{EventType, PaymentEvent};

use crate::credit::{accrue, Overdue, Terms};
use crate::ledger::{interest_income, penalty_income, receivable, Journal, JournalRows};
use crate::lifecycle::{business_date, LifecycleError};
use crate::outbox::{event_id, OutboxRows};

macro_rules! sql {
    ($file:literal) => {
        include_str!(concat!("../sql/", $file))
    };
}

/// Names "paystream accrual" among advisory locks (the second key is the calendar's hash).
const LOCK_KEY: i32 = 0x7061_6363;

/// Attempts at a chunk whose rows keep changing before the run gives up on them.
const MAX_ATTEMPTS: usize = 20;

/// What a run is asked to do.
#[derive(Debug, Clone)]
pub struct AccrualOptions {
    /// The calendar (a currency code).
    pub calendar: String,
    /// The date to charge through; by default the calendar's business date.
    pub business_date: Option<Date>,
    /// Writers, each with its own connection.
    pub workers: usize,
    /// Installments per transaction.
    pub chunk: i64,
    /// Terms for contracts that have none of their own.
    pub default_terms: Terms,
    /// The events topic.
    pub events_topic: String,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccrualSummary {
    /// The date charged through.
    pub business_date: Date,
    /// Installments charged by this run.
    pub installments: u64,
    /// Late fees charged by this run.
    pub late_fees: Decimal,
    /// Late interest charged by this run.
    pub interest: Decimal,
    /// Rows a payment changed between read and write (recomputed).
    pub conflicts: u64,
    /// For the date across every run of it (a restarted run adds to the one before).
    pub date_installments: i64,
    /// Late fees charged for the date across runs.
    pub date_late_fees: Decimal,
    /// Interest charged for the date across runs.
    pub date_interest: Decimal,
    /// How long it took.
    pub elapsed: Duration,
}

/// Progress, shared with the caller (a progress bar).
#[derive(Debug, Default)]
pub struct Progress {
    /// Candidates when the run began.
    pub total: AtomicU64,
    /// Installments charged so far.
    pub done: AtomicU64,
}

#[derive(Debug, Clone)]
struct Candidate {
    id: Uuid,
    version: i64,
    contract: Uuid,
    overdue: Overdue,
    terms: Terms,
}

fn candidate(row: &Row, defaults: &Terms) -> Candidate {
    Candidate {
        id: row.get(0),
        version: row.get(1),
        contract: row.get(2),
        overdue: Overdue {
            amount_due: row.get(3),
            amount_paid: row.get(4),
            due_date: row.get(5),
            accrued_through: row.get::<_, Option<Date>>(6),
        },
        terms: Terms {
            late_fee_rate: row.get::<_, Option<Decimal>>(7).unwrap_or(defaults.late_fee_rate),
            monthly_interest_rate: row.get::<_, Option<Decimal>>(8).unwrap_or(defaults.monthly_interest_rate),
        },
    }
}

#[derive(Debug, Default)]
struct Totals {
    installments: u64,
    late_fees: Decimal,
    interest: Decimal,
    conflicts: u64,
}

/// Runs accrual for `options.calendar` through its business date (or `options.business_date`).
pub async fn run(
    pool: &Pool,
    options: &AccrualOptions,
    progress: Arc<Progress>,
) -> Result<AccrualSummary, LifecycleError> {
    let started = Instant::now();
    let owner = pool.get().await?;
    let calendar = options.calendar.as_str();
    let locked: bool =
        owner.query_one("SELECT pg_try_advisory_lock($1, hashtext($2))", &[&LOCK_KEY, &calendar]).await?.get(0);
    if !locked {
        return Err(LifecycleError::Busy(calendar.to_owned()));
    }
    let current =
        business_date(&**owner, calendar).await?.ok_or_else(|| LifecycleError::NoBusinessDate(calendar.to_owned()))?;
    let day = options.business_date.unwrap_or(current);
    if day > current {
        return Err(LifecycleError::Future { calendar: calendar.to_owned(), current, asked: day });
    }
    owner.execute(sql!("accrual_run_start.sql"), &[&calendar, &day]).await?;
    let total: i64 = owner.query_one(sql!("accrual_count.sql"), &[&calendar, &day]).await?.get(0);
    progress.total.store(total.max(0) as u64, Ordering::Relaxed);

    let workers = options.workers.clamp(1, 64);
    let (send, receive) = tokio::sync::mpsc::channel::<Vec<Candidate>>(workers * 2);
    let receive = Arc::new(tokio::sync::Mutex::new(receive));
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (pool, options, receive, progress) = (pool.clone(), options.clone(), receive.clone(), progress.clone());
        writers.spawn(async move {
            let mut totals = Totals::default();
            loop {
                let chunk = receive.lock().await.recv().await;
                let Some(chunk) = chunk else { return Ok::<_, LifecycleError>(totals) };
                write_chunk(&pool, &options, day, chunk, &mut totals, &progress).await?;
            }
        });
    }
    // The reader: candidates in id order, a chunk at a time. A writer's failure closes the
    // channel and ends the reader too.
    let mut after = Uuid::nil();
    let read = async {
        loop {
            let rows = owner.query(sql!("accrual_candidates.sql"), &[&calendar, &day, &after, &options.chunk]).await?;
            let Some(last) = rows.last() else { break };
            after = last.get(0);
            let chunk: Vec<Candidate> = rows.iter().map(|r| candidate(r, &options.default_terms)).collect();
            if send.send(chunk).await.is_err() {
                break;
            }
        }
        Ok::<_, LifecycleError>(())
    }
    .await;
    drop(send);
    let mut totals = Totals::default();
    let mut failure = read.err();
    while let Some(joined) = writers.join_next().await {
        match joined {
            Ok(Ok(t)) => {
                totals.installments += t.installments;
                totals.late_fees += t.late_fees;
                totals.interest += t.interest;
                totals.conflicts += t.conflicts;
            }
            Ok(Err(e)) => failure = failure.or(Some(e)),
            Err(join) => failure = failure.or(Some(LifecycleError::Writer(join.to_string()))),
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let conflicts = i64::try_from(totals.conflicts).unwrap_or(i64::MAX);
    let row = owner.query_one(sql!("accrual_run_finish.sql"), &[&calendar, &day, &conflicts]).await?;
    owner.execute("SELECT pg_advisory_unlock($1, hashtext($2))", &[&LOCK_KEY, &calendar]).await?;
    Ok(AccrualSummary {
        business_date: day,
        installments: totals.installments,
        late_fees: totals.late_fees,
        interest: totals.interest,
        conflicts: totals.conflicts,
        date_installments: row.get(0),
        date_late_fees: row.get(1),
        date_interest: row.get(2),
        elapsed: started.elapsed(),
    })
}

/// Charges one chunk: computes, writes the rows whose version held, re-reads and recomputes
/// the rest, until none is left.
async fn write_chunk(
    pool: &Pool,
    options: &AccrualOptions,
    day: Date,
    mut chunk: Vec<Candidate>,
    totals: &mut Totals,
    progress: &Progress,
) -> Result<(), LifecycleError> {
    let day_text = day.to_string();
    for _attempt in 0..MAX_ATTEMPTS {
        if chunk.is_empty() {
            return Ok(());
        }
        let mut client = pool.get().await?;
        let tx = client.transaction().await?;
        let ids: Vec<Uuid> = chunk.iter().map(|c| c.id).collect();
        let current = tx.query(sql!("accrual_lock_versions.sql"), &[&ids]).await?;
        let versions: std::collections::HashMap<Uuid, i64> =
            current.iter().map(|r| (r.get::<_, Uuid>(0), r.get::<_, i64>(1))).collect();
        let (ready, moved): (Vec<Candidate>, Vec<Candidate>) =
            chunk.into_iter().partition(|c| versions.get(&c.id) == Some(&c.version));

        let mut journals = JournalRows::default();
        let mut outbox = OutboxRows::default();
        let (mut up_id, mut up_version, mut up_fee, mut up_interest) = (vec![], vec![], vec![], vec![]);
        let (mut ch_inst, mut ch_kind, mut ch_amount, mut ch_base, mut ch_days, mut ch_journal) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        let now = now_ms();
        for c in &ready {
            let charges = accrue(&c.overdue, &c.terms, day);
            let days = i32::try_from(charges.days).unwrap_or(i32::MAX);
            for (kind, amount, income, event_type) in [
                ("late_fee", charges.late_fee, penalty_income(&options.calendar), EventType::LateFeeCharged),
                ("interest", charges.interest, interest_income(&options.calendar), EventType::InterestAccrued),
            ] {
                if amount.is_zero() {
                    continue;
                }
                let mut journal = Journal::new(kind, format!("{}/{day_text}/{kind}", c.id), &options.calendar);
                journal.debit(receivable(c.contract), amount).credit(income, amount);
                let journal_id = journals.push(journal)?;
                ch_inst.push(c.id);
                ch_kind.push(kind);
                ch_amount.push(amount);
                ch_base.push(charges.base);
                ch_days.push(if kind == "interest" { days } else { 0 });
                ch_journal.push(journal_id);
                let reason = if kind == "interest" {
                    format!("{} days on {} at {} a month", charges.days, charges.base, c.terms.monthly_interest_rate)
                } else {
                    format!("{} of {} overdue", c.terms.late_fee_rate, charges.base)
                };
                outbox.push_event(
                    &options.events_topic,
                    &PaymentEvent {
                        event_id: event_id(event_type, &format!("{}\u{0}{day_text}", c.id)),
                        event_type,
                        occurred_at_ms: now,
                        aggregate_id: c.id,
                        provider: String::new(),
                        payment_id: String::new(),
                        installment_id: Some(c.id),
                        contract_id: Some(c.contract),
                        amount,
                        currency: options.calendar.clone(),
                        reason: Some(reason),
                        allocation: None,
                        business_date: Some(day_text.clone()),
                    },
                )?;
            }
            up_id.push(c.id);
            up_version.push(c.version);
            up_fee.push(charges.late_fee);
            up_interest.push(charges.interest);
            totals.late_fees += charges.late_fee;
            totals.interest += charges.interest;
        }
        if !up_id.is_empty() {
            let updated = tx
                .execute(sql!("accrual_update_installments.sql"), &[&up_id, &up_version, &up_fee, &up_interest, &day])
                .await?;
            // The rows are locked and their versions checked above: all of them are written.
            debug_assert_eq!(updated, up_id.len() as u64);
            if !journals.is_empty() {
                journals.insert(&*tx).await?;
                tx.execute(
                    sql!("charge_insert_batch.sql"),
                    &[&day, &ch_inst, &ch_kind, &ch_amount, &ch_base, &ch_days, &ch_journal],
                )
                .await?;
                let insert = tx.prepare_cached(crate::outbox::INSERT).await?;
                outbox.insert(&*tx, &insert).await?;
            }
        }
        tx.commit().await?;
        if !outbox.is_empty() {
            crate::apply::wake_relay(&client).await;
        }
        totals.installments += ready.len() as u64;
        progress.done.fetch_add(ready.len() as u64, Ordering::Relaxed);
        if moved.is_empty() {
            return Ok(());
        }
        // Changed since read (a payment, most often): read again, recompute. A row paid in
        // full meanwhile is no longer overdue and drops out here.
        totals.conflicts += moved.len() as u64;
        let ids: Vec<Uuid> = moved.iter().map(|c| c.id).collect();
        let rows = client.query(sql!("accrual_candidates_by_id.sql"), &[&ids, &day]).await?;
        chunk = rows.iter().map(|r| candidate(r, &options.default_terms)).collect();
    }
    Err(LifecycleError::Contended(chunk.len(), MAX_ATTEMPTS))
}
