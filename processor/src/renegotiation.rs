//! `paystream renegotiate`: a contract's unpaid installments (open, partially paid, overdue,
//! with their charges) are replaced, in one transaction, by a new contract whose schedule
//! adds up to what they owed less a discount. The old installments and contract become
//! `renegotiated`; a journal moves the balance from the old receivable to the new one and
//! books the discount; `ContractRenegotiated` goes through the outbox.
//!
//! Locks are taken in the processor's order (the installments in id order, then the
//! contract), so a batch of payments to the same installments either commits first (and
//! what it paid is no longer owed) or waits and then finds them renegotiated, and keeps the
//! money as customer credit (`rules::pay`). Either way nothing is lost.

use deadpool_postgres::Pool;
use rust_decimal::Decimal;
use time::Date;
use uuid::Uuid;

use paystream_common::now_ms;
use paystream_schemas::{EventType, PaymentEvent};

use crate::credit::{renegotiated_total, schedule, Parts};
use crate::ledger::{receivable, renegotiation_discount, Journal, JournalRows};
use crate::lifecycle::LifecycleError;
use crate::outbox::{event_id, OutboxRows};

macro_rules! sql {
    ($file:literal) => {
        include_str!(concat!("../sql/", $file))
    };
}

/// Namespace of the new contracts' and installments' ids (UUID v5 of the old contract's id),
/// so that a renegotiation retried after a lost answer finds its own rows.
const NAMESPACE: Uuid = Uuid::from_u128(0x2b6e_51c4_97d3_4f0a_8c1e_6a5b_3d2f_9e70);

/// What was asked.
#[derive(Debug, Clone)]
pub struct Renegotiation {
    /// The contract.
    pub contract: Uuid,
    /// Installments of the new schedule.
    pub installments: u32,
    /// The first one's due date; the others monthly after it.
    pub first_due: Date,
    /// Taken off what is owed.
    pub discount: Decimal,
}

/// What a renegotiation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renegotiated {
    /// The new contract.
    pub new_contract: Uuid,
    /// Installments replaced.
    pub replaced: usize,
    /// What they owed (principal and charges).
    pub outstanding: Decimal,
    /// The new schedule's total.
    pub total: Decimal,
    /// Its installments.
    pub schedule: Vec<(Date, Decimal)>,
}

/// What refuses a renegotiation.
#[derive(Debug, thiserror::Error)]
pub enum RenegotiationError {
    /// A database or event failure.
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    /// No such contract.
    #[error("contract {0} does not exist")]
    Unknown(Uuid),
    /// Not active.
    #[error("contract {0} is {1}: only an active contract is renegotiated")]
    NotActive(Uuid, String),
    /// Nothing to renegotiate, or a discount of all of it.
    #[error("contract {contract} owes {outstanding}: a discount of {discount} leaves nothing to renegotiate")]
    Nothing {
        /// The contract.
        contract: Uuid,
        /// What it owes.
        outstanding: Decimal,
        /// The discount asked.
        discount: Decimal,
    },
    /// Limits of the schedule.
    #[error("a schedule has 1 to 480 installments (asked for {0})")]
    Count(u32),
}

impl From<tokio_postgres::Error> for RenegotiationError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Lifecycle(e.into())
    }
}

/// Renegotiates `ask.contract`.
pub async fn renegotiate(
    pool: &Pool,
    ask: &Renegotiation,
    events_topic: &str,
) -> Result<Renegotiated, RenegotiationError> {
    if !(1..=480).contains(&ask.installments) {
        return Err(RenegotiationError::Count(ask.installments));
    }
    let mut client = pool.get().await.map_err(LifecycleError::from)?;
    let tx = client.transaction().await?;
    let rows = tx.query(sql!("renegotiation_lock_installments.sql"), &[&ask.contract]).await?;
    let contract = tx
        .query_opt(sql!("renegotiation_lock_contract.sql"), &[&ask.contract])
        .await?
        .ok_or(RenegotiationError::Unknown(ask.contract))?;
    let customer: Uuid = contract.get(0);
    let currency = contract.get::<_, String>(1).trim().to_owned();
    let status: String = contract.get(2);
    if status != "active" {
        return Err(RenegotiationError::NotActive(ask.contract, status));
    }
    let ids: Vec<Uuid> = rows.iter().map(|r| r.get(0)).collect();
    let owed: Vec<Parts> = rows
        .iter()
        .map(|r| {
            let open =
                |due: usize, paid: usize| (r.get::<_, Decimal>(due) - r.get::<_, Decimal>(paid)).max(Decimal::ZERO);
            Parts { principal: open(1, 2), late_fee: open(3, 4), interest: open(5, 6) }
        })
        .collect();
    let outstanding: Decimal = owed.iter().map(Parts::total).sum();
    let Some((outstanding, total)) = renegotiated_total(&owed, ask.discount) else {
        return Err(RenegotiationError::Nothing { contract: ask.contract, outstanding, discount: ask.discount });
    };
    let new_contract = Uuid::new_v5(&NAMESPACE, ask.contract.as_bytes());
    let plan = schedule(total, ask.installments, ask.first_due);

    tx.execute(
        sql!("renegotiation_insert_contract.sql"),
        &[
            &new_contract,
            &customer,
            &currency,
            &total,
            &contract.get::<_, Option<Decimal>>(3),
            &contract.get::<_, Option<Decimal>>(4),
            &contract.get::<_, Option<String>>(5),
            &ask.contract,
        ],
    )
    .await?;
    let new_ids: Vec<Uuid> =
        (1..=plan.len()).map(|seq| Uuid::new_v5(&NAMESPACE, format!("{new_contract}/{seq}").as_bytes())).collect();
    let seqs: Vec<i32> = (1..=plan.len() as i32).collect();
    let dues: Vec<Date> = plan.iter().map(|(d, _)| *d).collect();
    let amounts: Vec<Decimal> = plan.iter().map(|(_, a)| *a).collect();
    tx.execute(
        sql!("renegotiation_insert_installments.sql"),
        &[&new_contract, &currency, &new_ids, &seqs, &dues, &amounts],
    )
    .await?;
    tx.execute(sql!("renegotiation_close_old.sql"), &[&ask.contract, &ids]).await?;

    let mut journal = Journal::new("renegotiation", format!("{}/{new_contract}", ask.contract), &currency);
    journal
        .debit(receivable(new_contract), total)
        .debit(renegotiation_discount(&currency), ask.discount)
        .credit(receivable(ask.contract), outstanding);
    let mut journals = JournalRows::default();
    journals.push(journal).map_err(LifecycleError::from)?;
    journals.insert(&*tx).await?;

    let mut outbox = OutboxRows::default();
    outbox
        .push_event(
            events_topic,
            &PaymentEvent {
                event_id: event_id(EventType::ContractRenegotiated, &ask.contract.to_string()),
                event_type: EventType::ContractRenegotiated,
                occurred_at_ms: now_ms(),
                aggregate_id: ask.contract,
                provider: String::new(),
                payment_id: String::new(),
                installment_id: None,
                contract_id: Some(new_contract),
                amount: total,
                currency: currency.clone(),
                reason: Some(format!(
                    "{} installments owing {outstanding} replaced by {} from {}, discount {}",
                    ids.len(),
                    plan.len(),
                    ask.first_due,
                    ask.discount
                )),
                allocation: None,
                business_date: None,
            },
        )
        .map_err(LifecycleError::from)?;
    let insert = tx.prepare_cached(crate::outbox::INSERT).await?;
    outbox.insert(&*tx, &insert).await?;
    tx.commit().await?;
    crate::apply::wake_relay(&client).await;
    Ok(Renegotiated { new_contract, replaced: ids.len(), outstanding, total, schedule: plan })
}
