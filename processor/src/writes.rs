//! What a transaction writes, gathered in memory as it applies (rows in column order for
//! the set-based inserts), and the one function that writes it all: every row of a batch in
//! one pipeline, then the contract settlements and the outbox.

use std::collections::{BTreeSet, HashMap};

use deadpool_postgres::Transaction;
use rust_decimal::Decimal;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use paystream_schemas::{DeadLetter, EventType, PaymentCommand, PaymentEvent};

use crate::apply::Source;
use crate::error::ApplyError;
use crate::ledger::{Journal, JournalRows};
use crate::outbox::{event_id, OutboxRows};
use crate::rules::{Fact, Installment, Payment};

macro_rules! sql {
    ($file:literal) => {
        include_str!(concat!("../sql/", $file))
    };
}

/// A payment's key: the provider's namespace and its payment id.
pub type PaymentKey = (String, String);

/// A locked installment and whether this transaction changed it.
#[derive(Debug, Clone)]
pub struct Locked<T> {
    /// The state, as changed in memory.
    pub state: T,
    /// Whether to write it back.
    pub dirty: bool,
}

/// The rows of one transaction.
#[derive(Default)]
pub struct Writes {
    pay_provider: Vec<String>,
    pay_id: Vec<String>,
    pay_installment: Vec<Uuid>,
    pay_rail: Vec<String>,
    pay_amount: Vec<Decimal>,
    pay_currency: Vec<String>,
    pay_status: Vec<&'static str>,
    pay_reason: Vec<Option<String>>,
    pay_applied: Vec<Decimal>,
    pay_applied_late_fee: Vec<Decimal>,
    pay_applied_interest: Vec<Decimal>,
    pay_credited: Vec<Decimal>,
    pay_journal: Vec<Option<Uuid>>,
    pay_occurred: Vec<i64>,
    pay_partition: Vec<i32>,
    pay_offset: Vec<i64>,
    rev_provider: Vec<String>,
    rev_id: Vec<String>,
    rev_payment: Vec<String>,
    rev_kind: Vec<&'static str>,
    rev_amount: Vec<Decimal>,
    rev_applied: Vec<Decimal>,
    rev_status: Vec<&'static str>,
    rev_reason: Vec<Option<String>>,
    rev_journal: Vec<Option<Uuid>>,
    pend_provider: Vec<String>,
    pend_id: Vec<String>,
    pend_payment: Vec<String>,
    pend_kind: Vec<&'static str>,
    pend_amount: Vec<Decimal>,
    pend_currency: Vec<String>,
    pend_command: Vec<Vec<u8>>,
    pend_partition: Vec<i32>,
    pend_offset: Vec<i64>,
    /// Pending reversals applied by this transaction, to delete.
    done_provider: Vec<String>,
    done_id: Vec<String>,
    dead_partition: Vec<i32>,
    dead_offset: Vec<i64>,
    dead_reason: Vec<String>,
    dead_payload: Vec<Vec<u8>>,
    journals: JournalRows,
    /// The outbox rows of the transaction.
    pub outbox: OutboxRows,
    newly_paid_contracts: BTreeSet<Uuid>,
    reopened_contracts: BTreeSet<Uuid>,
    /// Payment keys this transaction held reversals for (or recorded payments that have
    /// held reversals): checked again after the commit (see `pending`).
    pub pending_keys: BTreeSet<PaymentKey>,
}

/// A dead letter's `DeadLetter` event carries at most this much of the original bytes: a
/// record must stay under the broker's `message.max.bytes` (1 MiB by default) with its
/// other fields. The `dead_letter` row keeps all of them.
pub const DEAD_LETTER_EVENT_PAYLOAD_MAX: usize = 512 * 1024;

impl Writes {
    /// Events so far.
    pub fn events(&self) -> usize {
        self.outbox.len()
    }

    /// Dead letters so far.
    pub fn dead_letters(&self) -> usize {
        self.dead_offset.len()
    }

    /// A payment fact as an event on `topic`.
    pub fn push_fact(
        &mut self,
        topic: &str,
        c: &PaymentCommand,
        fact: &Fact,
        installment: Uuid,
        contract: Option<Uuid>,
        now_ms: i64,
    ) -> Result<(), ApplyError> {
        // A contract's own fact is about the contract; every other is the installment's.
        let aggregate = match (fact.event_type, contract) {
            (EventType::ContractReopened, Some(contract)) => contract,
            _ => installment,
        };
        let subject = format!("{}\u{0}{}\u{0}{}", c.provider, c.webhook_id, c.payment_id);
        let event = PaymentEvent {
            event_id: event_id(fact.event_type, &subject),
            event_type: fact.event_type,
            occurred_at_ms: now_ms,
            aggregate_id: aggregate,
            provider: c.provider.clone(),
            payment_id: c.payment_id.clone(),
            installment_id: Some(installment).filter(|id| !id.is_nil()),
            contract_id: contract,
            amount: fact.amount,
            currency: c.currency.clone(),
            reason: fact.reason.map(str::to_owned),
            allocation: fact.allocation,
            business_date: None,
        };
        self.outbox.push_event(topic, &event)
    }

    /// A journal, checked.
    pub fn push_journal(&mut self, journal: Journal) -> Result<Uuid, ApplyError> {
        self.journals.push(journal)
    }

    /// A new payment row.
    #[allow(clippy::too_many_arguments)]
    pub fn push_payment(
        &mut self,
        c: &PaymentCommand,
        payment: &Payment,
        rejection: Option<&'static str>,
        applied: Decimal,
        journal: Uuid,
        partition: i32,
        offset: i64,
    ) {
        self.pay_provider.push(c.provider.clone());
        self.pay_id.push(c.payment_id.clone());
        self.pay_installment.push(payment.installment_id);
        self.pay_rail.push(c.rail.clone());
        self.pay_amount.push(c.amount);
        self.pay_currency.push(c.currency.clone());
        self.pay_status.push(if rejection.is_some() { "rejected" } else { "applied" });
        self.pay_reason.push(rejection.map(str::to_owned));
        self.pay_applied.push(applied);
        self.pay_applied_late_fee.push(payment.applied.late_fee);
        self.pay_applied_interest.push(payment.applied.interest);
        self.pay_credited.push(payment.credited);
        self.pay_journal.push(Some(journal));
        self.pay_occurred.push(c.occurred_at_ms);
        self.pay_partition.push(partition);
        self.pay_offset.push(offset);
    }

    /// A reversal row (applied, rejected or unchanged).
    pub fn push_reversal(
        &mut self,
        c: &PaymentCommand,
        status: &'static str,
        applied: Decimal,
        reason: Option<&'static str>,
        journal: Option<Uuid>,
    ) {
        self.rev_provider.push(c.provider.clone());
        self.rev_id.push(c.webhook_id.clone());
        self.rev_payment.push(c.payment_id.clone());
        self.rev_kind.push(c.kind.as_str());
        self.rev_amount.push(c.amount);
        self.rev_applied.push(applied);
        self.rev_status.push(status);
        self.rev_reason.push(reason.map(str::to_owned));
        self.rev_journal.push(journal);
    }

    /// A reversal held until its payment is recorded, with the bytes it was read as.
    pub fn push_pending(&mut self, c: &PaymentCommand, command: &[u8], partition: i32, offset: i64) {
        self.pend_provider.push(c.provider.clone());
        self.pend_id.push(c.webhook_id.clone());
        self.pend_payment.push(c.payment_id.clone());
        self.pend_kind.push(c.kind.as_str());
        self.pend_amount.push(c.amount);
        self.pend_currency.push(c.currency.clone());
        self.pend_command.push(command.to_vec());
        self.pend_partition.push(partition);
        self.pend_offset.push(offset);
        self.pending_keys.insert((c.provider.clone(), c.payment_id.clone()));
    }

    /// A held reversal this transaction applied: its row goes.
    pub fn push_pending_done(&mut self, c: &PaymentCommand) {
        self.done_provider.push(c.provider.clone());
        self.done_id.push(c.webhook_id.clone());
    }

    /// An installment became paid: its contract may be settled.
    pub fn installment_paid(&mut self, contract: Uuid) {
        self.newly_paid_contracts.insert(contract);
    }

    /// A settled contract owes again.
    pub fn contract_reopened(&mut self, contract: Uuid) {
        self.reopened_contracts.insert(contract);
    }

    /// A message that cannot be applied, with its bytes and why.
    pub fn dead_letter(
        &mut self,
        source: &Source,
        offset: i64,
        payload: &[u8],
        reason: String,
        now_ms: i64,
    ) -> Result<(), ApplyError> {
        let dead = DeadLetter {
            event_id: event_id(
                EventType::PaymentRejected,
                &format!("dead\u{0}{}\u{0}{}\u{0}{offset}", source.topic, source.partition),
            ),
            source_topic: source.topic.clone(),
            source_partition: source.partition,
            source_offset: offset,
            reason: reason.clone(),
            payload: payload[..payload.len().min(DEAD_LETTER_EVENT_PAYLOAD_MAX)].to_vec(),
            occurred_at_ms: now_ms,
        };
        tracing::warn!(partition = source.partition, offset, %reason, "message dead-lettered");
        self.outbox.push_dead_letter(&source.deadletter_topic, &dead)?;
        self.dead_partition.push(source.partition);
        self.dead_offset.push(offset);
        self.dead_reason.push(reason);
        self.dead_payload.push(payload.to_vec());
        Ok(())
    }

    /// Writes everything: one pipeline for what is known, then the contracts settled by it
    /// and the outbox. `advance` holds partitions and their next offsets (empty for the
    /// transactions that apply held reversals, which no partition position covers).
    pub async fn write(
        &mut self,
        tx: &Transaction<'_>,
        source: &Source,
        installments: &HashMap<Uuid, Locked<Installment>>,
        payments: &HashMap<PaymentKey, Locked<Payment>>,
        advance: (&[i32], &[i64]),
        now_ms: i64,
    ) -> Result<(), ApplyError> {
        let mut statements: Vec<Statement<'_>> = Vec::with_capacity(12);
        let transfers = self.journals.params();
        if !self.journals.is_empty() {
            statements.push((tx.prepare_cached(crate::ledger::INSERT).await?, transfers.to_vec()));
        }
        if !self.pay_provider.is_empty() {
            statements.push((
                tx.prepare_cached(sql!("payment_insert_batch.sql")).await?,
                vec![
                    &self.pay_provider,
                    &self.pay_id,
                    &self.pay_installment,
                    &self.pay_rail,
                    &self.pay_amount,
                    &self.pay_currency,
                    &self.pay_status,
                    &self.pay_reason,
                    &self.pay_applied,
                    &self.pay_credited,
                    &self.pay_journal,
                    &self.pay_occurred,
                    &self.pay_partition,
                    &self.pay_offset,
                    &self.pay_applied_late_fee,
                    &self.pay_applied_interest,
                ],
            ));
        }
        let mut changed_provider = Vec::new();
        let mut changed_id = Vec::new();
        let mut reversed = Vec::new();
        let mut credited = Vec::new();
        let mut refunded = Vec::new();
        let mut applied_late_fee = Vec::new();
        let mut applied_interest = Vec::new();
        for ((provider, id), payment) in payments.iter().filter(|(_, p)| p.dirty) {
            applied_late_fee.push(payment.state.applied.late_fee);
            applied_interest.push(payment.state.applied.interest);
            changed_provider.push(provider.as_str());
            changed_id.push(id.as_str());
            reversed.push(payment.state.reversed);
            credited.push(payment.state.credited);
            refunded.push(payment.state.refunded);
        }
        if !self.rev_provider.is_empty() {
            statements.push((
                tx.prepare_cached(sql!("reversal_insert_batch.sql")).await?,
                vec![
                    &self.rev_provider,
                    &self.rev_id,
                    &self.rev_payment,
                    &self.rev_kind,
                    &self.rev_amount,
                    &self.rev_applied,
                    &self.rev_status,
                    &self.rev_reason,
                    &self.rev_journal,
                ],
            ));
        }
        if !self.pend_provider.is_empty() {
            statements.push((
                tx.prepare_cached(sql!("pending_reversal_insert_batch.sql")).await?,
                vec![
                    &self.pend_provider,
                    &self.pend_id,
                    &self.pend_payment,
                    &self.pend_kind,
                    &self.pend_amount,
                    &self.pend_currency,
                    &self.pend_command,
                    &self.pend_partition,
                    &self.pend_offset,
                ],
            ));
        }
        if !self.done_provider.is_empty() {
            statements.push((
                tx.prepare_cached(sql!("pending_reversal_delete_batch.sql")).await?,
                vec![&self.done_provider, &self.done_id],
            ));
        }
        if !changed_provider.is_empty() {
            statements.push((
                tx.prepare_cached(sql!("payment_update_reversed.sql")).await?,
                vec![
                    &changed_provider,
                    &changed_id,
                    &reversed,
                    &credited,
                    &refunded,
                    &applied_late_fee,
                    &applied_interest,
                ],
            ));
        }
        let mut ids = Vec::new();
        let mut paid = Vec::new();
        let mut status = Vec::new();
        let mut late_fee_paid = Vec::new();
        let mut interest_paid = Vec::new();
        for (id, installment) in installments.iter().filter(|(_, i)| i.dirty) {
            ids.push(*id);
            paid.push(installment.state.amount_paid);
            status.push(installment.state.status.as_str());
            late_fee_paid.push(installment.state.late_fee_paid);
            interest_paid.push(installment.state.interest_paid);
        }
        if !ids.is_empty() {
            statements.push((
                tx.prepare_cached(sql!("installment_update_batch.sql")).await?,
                vec![&ids, &paid, &status, &late_fee_paid, &interest_paid],
            ));
        }
        let reopened: Vec<Uuid> = self.reopened_contracts.iter().copied().collect();
        if !reopened.is_empty() {
            statements.push((tx.prepare_cached(sql!("contract_reopen_batch.sql")).await?, vec![&reopened]));
        }
        if !self.dead_offset.is_empty() {
            statements.push((
                tx.prepare_cached(sql!("dead_letter_insert_batch.sql")).await?,
                vec![&source.topic, &self.dead_partition, &self.dead_offset, &self.dead_reason, &self.dead_payload],
            ));
        }
        let (advance_partition, advance_to) = advance;
        if !advance_partition.is_empty() {
            statements.push((
                tx.prepare_cached(sql!("consumer_position_advance_batch.sql")).await?,
                vec![&source.group, &source.topic, &advance_partition, &advance_to],
            ));
        }
        let contracts: Vec<Uuid> = self.newly_paid_contracts.iter().copied().collect();
        if contracts.is_empty() {
            pipeline(tx, &statements).await?;
        } else {
            // The contracts whose installments were all paid: locked (in id order), then
            // settled after the installment updates above, in the same pipeline.
            statements.push((tx.prepare_cached(sql!("contract_select_for_update.sql")).await?, vec![&contracts]));
            let settle = tx.prepare_cached(sql!("contract_settle_if_paid.sql")).await?;
            let (_, settled) = futures::try_join!(pipeline(tx, &statements), async {
                Ok::<_, ApplyError>(tx.query(&settle, &[&contracts]).await?)
            })?;
            drop(statements);
            for row in settled {
                let contract: Uuid = row.get(0);
                let currency: String = row.get(1);
                let principal: Decimal = row.get(2);
                let event = PaymentEvent {
                    event_id: event_id(EventType::ContractSettled, &format!("{contract}\u{0}{now_ms}")),
                    event_type: EventType::ContractSettled,
                    occurred_at_ms: now_ms,
                    aggregate_id: contract,
                    provider: String::new(),
                    payment_id: String::new(),
                    installment_id: None,
                    contract_id: Some(contract),
                    amount: principal,
                    currency: currency.trim().to_owned(),
                    reason: None,
                    allocation: None,
                    business_date: None,
                };
                self.outbox.push_event(&source.events_topic, &event)?;
            }
        }
        if !self.outbox.is_empty() {
            let stmt = tx.prepare_cached(crate::outbox::INSERT).await?;
            self.outbox.insert(&**tx, &stmt).await?;
        }
        Ok(())
    }
}

/// A statement with its parameters, to be sent in a pipeline.
type Statement<'a> = (tokio_postgres::Statement, Vec<&'a (dyn ToSql + Sync)>);

/// Runs `statements` pipelined: all are sent before the first answer is awaited, and the
/// server runs them in the order given (each was prepared beforehand, so each request is
/// queued on the connection at its first poll, in order). One round trip instead of one
/// per statement: on a busy machine every round trip also costs a wake-up of this task.
async fn pipeline(tx: &Transaction<'_>, statements: &[Statement<'_>]) -> Result<Vec<u64>, ApplyError> {
    let runs = statements.iter().map(|(stmt, params)| tx.execute(stmt, params));
    Ok(futures::future::try_join_all(runs).await?)
}
