//! The business date and overdue installments: `paystream business-date advance` moves a
//! calendar's business date and marks the installments it leaves unpaid past due as
//! `overdue`, each once, with an `InstallmentOverdue` event through the outbox.
//!
//! The date moves in its own transaction first, then installments are marked in batches
//! (`MARK_BATCH`, each its own transaction, locked in id order like the processor's): a crash
//! in between leaves a date whose overdue installments are not all marked yet, and the next
//! advance (or the same `--to` again) marks the rest, since marking selects every unpaid
//! installment due on or before the cutoff, whenever it became due.

use deadpool_postgres::Pool;
use rust_decimal::Decimal;
use time::Date;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use paystream_common::now_ms;
use paystream_schemas::{EventType, PaymentEvent};

use crate::credit::Calendar;
use crate::error::ApplyError;
use crate::outbox::{event_id, OutboxRows};

/// Installments marked overdue per transaction: bounded so that a date that makes hundreds
/// of thousands overdue holds no lock on them for long while payments keep arriving.
pub const MARK_BATCH: i64 = 5_000;

macro_rules! sql {
    ($file:literal) => {
        include_str!(concat!("../sql/", $file))
    };
}

/// What went wrong in a lifecycle command.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// A statement, the pool or an event failed.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// The calendar has no business date yet.
    #[error("calendar {0} has no business date yet: give the first one with --to YYYY-MM-DD")]
    NoBusinessDate(String),
    /// The date would move back.
    #[error("calendar {calendar} is at {current}; a business date never moves back (asked for {asked})")]
    Backwards {
        /// The calendar.
        calendar: String,
        /// Where it is.
        current: Date,
        /// What was asked.
        asked: Date,
    },
    /// Not a business day.
    #[error("{0} is not a business day of calendar {1} (a weekend or a holiday in paystream.holiday)")]
    NotBusinessDay(Date, String),
    /// Another run owns the calendar's accrual.
    #[error("another accrual run of calendar {0} is in progress (it holds the calendar's advisory lock)")]
    Busy(String),
    /// Accrual asked for a date the calendar has not reached.
    #[error("calendar {calendar} is at {current}: accrual for {asked} would charge days that have not happened")]
    Future {
        /// The calendar.
        calendar: String,
        /// Where it is.
        current: Date,
        /// What was asked.
        asked: Date,
    },
    /// An accrual writer stopped without an answer (it panicked): its chunk is not charged,
    /// and a run again charges it.
    #[error("an accrual writer failed: {0}; run accrual again")]
    Writer(String),
    /// Installments kept changing under accrual (a payment each time it tried).
    #[error("{0} installments changed under accrual {1} times in a row; run it again")]
    Contended(usize, usize),
}

impl From<tokio_postgres::Error> for LifecycleError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Apply(ApplyError::Db(e))
    }
}

impl From<deadpool_postgres::PoolError> for LifecycleError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Self::Apply(ApplyError::Pool(e))
    }
}

/// The calendar's holidays.
pub async fn calendar<C: GenericClient>(client: &C, calendar: &str) -> Result<Calendar, LifecycleError> {
    let rows = client.query(sql!("holiday_select.sql"), &[&calendar]).await?;
    Ok(Calendar::new(rows.iter().map(|r| r.get::<_, Date>(0))))
}

/// The calendar's business date, if it has one.
pub async fn business_date<C: GenericClient>(client: &C, calendar: &str) -> Result<Option<Date>, LifecycleError> {
    Ok(client.query_opt(sql!("business_date_select.sql"), &[&calendar]).await?.map(|r| r.get(0)))
}

/// What an advance did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advanced {
    /// The date before, if there was one.
    pub from: Option<Date>,
    /// The date now.
    pub to: Date,
    /// Installments due on or before this are overdue.
    pub cutoff: Date,
    /// Installments marked overdue now.
    pub marked: u64,
    /// Their principal due.
    pub principal: Decimal,
}

/// Moves `calendar`'s business date to `to` (by default the next business day) and marks
/// what that leaves unpaid past due as overdue. Moving to the date it is at marks what is
/// left to mark.
pub async fn advance(
    pool: &Pool,
    calendar_name: &str,
    to: Option<Date>,
    events_topic: &str,
) -> Result<Advanced, LifecycleError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let cal = calendar(&*tx, calendar_name).await?;
    let current: Option<Date> =
        tx.query_opt(sql!("business_date_select_for_update.sql"), &[&calendar_name]).await?.map(|r| r.get(0));
    let target = match (current, to) {
        (_, Some(to)) => to,
        (Some(current), None) => cal.next_business_day(current),
        (None, None) => return Err(LifecycleError::NoBusinessDate(calendar_name.to_owned())),
    };
    if let Some(current) = current.filter(|c| *c > target) {
        return Err(LifecycleError::Backwards { calendar: calendar_name.to_owned(), current, asked: target });
    }
    if !cal.is_business_day(target) {
        return Err(LifecycleError::NotBusinessDay(target, calendar_name.to_owned()));
    }
    tx.execute(sql!("business_date_upsert.sql"), &[&calendar_name, &target]).await?;
    tx.commit().await?;
    drop(client);

    let cutoff = cal.overdue_cutoff(target);
    let (marked, principal) = mark_overdue(pool, calendar_name, cutoff, target, events_topic).await?;
    Ok(Advanced { from: current, to: target, cutoff, marked, principal })
}

/// Marks unpaid installments due on or before `cutoff` overdue on `business_date`, in
/// batches, each with its events. Returns how many and their principal due.
pub async fn mark_overdue(
    pool: &Pool,
    calendar: &str,
    cutoff: Date,
    business_date: Date,
    events_topic: &str,
) -> Result<(u64, Decimal), LifecycleError> {
    let mut marked = 0u64;
    let mut principal = Decimal::ZERO;
    let day = business_date.to_string();
    loop {
        let mut client = pool.get().await?;
        let tx = client.transaction().await?;
        let rows =
            tx.query(sql!("installment_mark_overdue.sql"), &[&calendar, &cutoff, &business_date, &MARK_BATCH]).await?;
        if rows.is_empty() {
            return Ok((marked, principal));
        }
        let mut outbox = OutboxRows::default();
        let now = now_ms();
        for row in &rows {
            let id: Uuid = row.get(0);
            let due: Decimal = row.get(2);
            let due_date: Date = row.get(3);
            outbox.push_event(
                events_topic,
                &PaymentEvent {
                    event_id: event_id(EventType::InstallmentOverdue, &format!("{id}\u{0}{day}")),
                    event_type: EventType::InstallmentOverdue,
                    occurred_at_ms: now,
                    aggregate_id: id,
                    provider: String::new(),
                    payment_id: String::new(),
                    installment_id: Some(id),
                    contract_id: Some(row.get(1)),
                    amount: due,
                    currency: calendar.to_owned(),
                    reason: Some(format!("due {due_date}, unpaid")),
                    allocation: None,
                    business_date: Some(day.clone()),
                },
            )?;
            principal += due;
        }
        let insert = tx.prepare_cached(crate::outbox::INSERT).await?;
        outbox.insert(&*tx, &insert).await?;
        tx.commit().await?;
        crate::apply::wake_relay(&client).await;
        marked += rows.len() as u64;
    }
}
