//! Applying batches of one or several partitions' messages in one PostgreSQL transaction.
//!
//! Order of work inside the transaction, and why:
//! 1. lock the partitions' stored positions (in partition order) and skip what is below them
//!    (redelivery after a crash or rebalance, a zombie worker of a revoked partition);
//! 2. decode; what cannot be decoded or is invalid becomes a dead letter in the same batch;
//! 3. read which payments and reversals already exist (dedupe on the provider's ids);
//! 4. lock the installments in id order (no deadlocks between partitions), then the
//!    payments being reversed;
//! 5. apply each partition's commands in offset order against the locked state in memory;
//! 6. write everything with set-based inserts, settle contracts whose installments are all
//!    paid, advance the positions, commit; then wake the relay (see [`wake_relay`]).
//!
//! The effect and the positions commit together or not at all.

use std::collections::{BTreeSet, HashMap, HashSet};

use deadpool_postgres::Transaction;
use rust_decimal::Decimal;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use paystream_schemas::{decode, CommandKind, DeadLetter, EventType, PaymentCommand, PaymentEvent};

use crate::error::ApplyError;
use crate::ledger::{customer_credit, provider_clearing, receivable, Journal, JournalRows};
use crate::outbox::{event_id, OutboxRows};

/// One message of a partition, as the worker holds it.
#[derive(Debug, Clone)]
pub struct Message {
    /// Kafka offset.
    pub offset: i64,
    /// The value, when there is one.
    pub payload: Option<Vec<u8>>,
}

/// Where the batch comes from and where its facts go.
#[derive(Debug, Clone)]
pub struct Source {
    /// Consumer group (key of the stored position).
    pub group: String,
    /// Inbound topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Topic for payment facts.
    pub events_topic: String,
    /// Topic for dead letters.
    pub deadletter_topic: String,
}

/// What a batch did, for metrics and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Payments applied (including those kept as credit).
    pub applied: u64,
    /// Payments and reversals rejected with an event.
    pub rejected: u64,
    /// Reversals applied.
    pub reversed: u64,
    /// Deliveries that had already been applied.
    pub duplicates: u64,
    /// Messages kept as dead letters.
    pub dead_lettered: u64,
    /// Messages below the stored position (already applied by an earlier transaction).
    pub skipped: u64,
    /// Events written to the outbox.
    pub events: u64,
}

macro_rules! sql {
    ($file:literal) => {
        include_str!(concat!("../sql/", $file))
    };
}

#[derive(Debug, Clone)]
struct Installment {
    contract_id: Uuid,
    customer_id: Uuid,
    contract_active: bool,
    currency: String,
    amount_due: Decimal,
    amount_paid: Decimal,
    status: String,
    dirty: bool,
}

impl Installment {
    fn settle_status(&mut self) {
        self.status = if self.amount_paid >= self.amount_due {
            "paid"
        } else if self.status == "overdue" {
            "overdue"
        } else if self.amount_paid > Decimal::ZERO {
            "partially_paid"
        } else {
            "open"
        }
        .to_owned();
        self.dirty = true;
    }
}

#[derive(Debug, Clone)]
struct PaymentState {
    installment_id: Uuid,
    status: String,
    amount: Decimal,
    currency: String,
    credited: Decimal,
    reversed: Decimal,
    dirty: bool,
}

#[derive(Default)]
struct Writes {
    pay_provider: Vec<String>,
    pay_id: Vec<String>,
    pay_installment: Vec<Uuid>,
    pay_rail: Vec<String>,
    pay_amount: Vec<Decimal>,
    pay_currency: Vec<String>,
    pay_status: Vec<String>,
    pay_reason: Vec<Option<String>>,
    pay_applied: Vec<Decimal>,
    pay_credited: Vec<Decimal>,
    pay_journal: Vec<Option<Uuid>>,
    pay_occurred: Vec<i64>,
    pay_partition: Vec<i32>,
    pay_offset: Vec<i64>,
    rev_provider: Vec<String>,
    rev_id: Vec<String>,
    rev_payment: Vec<String>,
    rev_kind: Vec<String>,
    rev_amount: Vec<Decimal>,
    rev_status: Vec<String>,
    rev_reason: Vec<Option<String>>,
    rev_journal: Vec<Option<Uuid>>,
    dead_partition: Vec<i32>,
    dead_offset: Vec<i64>,
    dead_reason: Vec<String>,
    dead_payload: Vec<Vec<u8>>,
    journals: JournalRows,
    outbox: OutboxRows,
    newly_paid_contracts: BTreeSet<Uuid>,
}

type Key = (String, String);

/// Applies `messages` (one partition, ascending offsets) in the transaction `tx` and commits.
pub async fn apply_batch(tx: Transaction<'_>, source: &Source, messages: &[Message]) -> Result<Outcome, ApplyError> {
    apply_parts(tx, &[(source, messages)]).await
}

/// Locks the stored positions of `partitions` (ascending) and returns them by partition.
async fn lock_positions(
    tx: &Transaction<'_>,
    source: &Source,
    partitions: &[i32],
) -> Result<HashMap<i32, i64>, ApplyError> {
    let stmt = tx.prepare_cached(sql!("consumer_position_lock_batch.sql")).await?;
    let rows = tx.query(&stmt, &[&source.group, &source.topic, &partitions]).await?;
    Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
}

/// Applies the batches of several partitions (each ascending, at most one batch per
/// partition) in the transaction `tx` and commits. Partitions are independent, so one
/// transaction serves them all: at moderate rates this is what keeps the number of commits,
/// and the database's work per payment, down.
pub async fn apply_parts(tx: Transaction<'_>, parts: &[(&Source, &[Message])]) -> Result<Outcome, ApplyError> {
    let mut outcome = Outcome::default();
    let Some((first, _)) = parts.first() else {
        return Ok(outcome);
    };
    // Workers drop repeated offsets, so a batch ascends strictly; applying out of order
    // would break per-installment order, so this is checked, not assumed.
    for (source, messages) in parts {
        if !messages.windows(2).all(|w| w[0].offset < w[1].offset) {
            return Err(ApplyError::OutOfOrder(source.partition));
        }
    }
    let mut partitions: Vec<i32> = parts.iter().map(|(s, _)| s.partition).collect();
    partitions.sort_unstable();
    // A partition twice in one transaction would apply its offsets out of order too.
    if let Some(twice) = partitions.windows(2).find(|w| w[0] == w[1]) {
        return Err(ApplyError::OutOfOrder(twice[0]));
    }
    // Decoded before the positions are known, so that the dedupe reads can travel with the
    // position lock in one round trip; what turns out to be below a position is dropped.
    let decoded: Vec<(&Source, &Message, Result<PaymentCommand, String>)> = parts
        .iter()
        .flat_map(|(source, messages)| messages.iter().map(move |m| (*source, m)))
        .map(|(source, m)| {
            let command = decode::<PaymentCommand>(m.payload.as_deref().unwrap_or_default())
                .map_err(|e| e.to_string())
                .and_then(|c| validate(c).map_err(String::from));
            (source, m, command)
        })
        .collect();
    let valid = || decoded.iter().filter_map(|(_, _, c)| c.as_ref().ok());
    let (pk_provider, pk_id): (Vec<&str>, Vec<&str>) =
        valid().map(|c| (c.provider.as_str(), c.payment_id.as_str())).unzip();
    let (rk_provider, rk_id): (Vec<&str>, Vec<&str>) = valid()
        .filter(|c| c.kind != CommandKind::Payment)
        .map(|c| (c.provider.as_str(), c.webhook_id.as_str()))
        .unzip();

    // 1 and 3: lock the positions, read which payments and reversals exist (pipelined, in
    // this order).
    let lock = tx.prepare_cached(sql!("consumer_position_lock_batch.sql")).await?;
    let by_keys = tx.prepare_cached(sql!("payment_select_by_keys.sql")).await?;
    let reversals = tx.prepare_cached(sql!("reversal_select_by_keys.sql")).await?;
    let lock_params: [&(dyn ToSql + Sync); 3] = [&first.group, &first.topic, &partitions];
    let key_params: [&(dyn ToSql + Sync); 2] = [&pk_provider, &pk_id];
    let (position_rows, payment_rows, reversal_rows) =
        futures::try_join!(tx.query(&lock, &lock_params), tx.query(&by_keys, &key_params), async {
            if rk_provider.is_empty() {
                Ok(Vec::new())
            } else {
                tx.query(&reversals, &[&rk_provider, &rk_id]).await
            }
        },)?;
    let positions: HashMap<i32, i64> = position_rows.iter().map(|row| (row.get(0), row.get(1))).collect();
    let existing: HashMap<Key, Uuid> = payment_rows.iter().map(|row| ((row.get(0), row.get(1)), row.get(2))).collect();
    let mut seen_reversals: HashSet<Key> = reversal_rows.iter().map(|row| (row.get(0), row.get(1))).collect();

    let mut w = Writes::default();
    let now_ms = now_ms();
    let mut advance_partition: Vec<i32> = Vec::new();
    let mut advance_to: Vec<i64> = Vec::new();
    for (source, messages) in parts {
        let next = positions.get(&source.partition).copied().unwrap_or(0);
        if let Some(last) = messages.last().filter(|last| last.offset >= next) {
            advance_partition.push(source.partition);
            advance_to.push(last.offset + 1);
        }
    }
    // 2. what is new becomes a command, or a dead letter when it is not a valid one
    let mut commands: Vec<(&Source, i64, PaymentCommand)> = Vec::with_capacity(decoded.len());
    for (source, m, command) in decoded {
        if m.offset < positions.get(&source.partition).copied().unwrap_or(0) {
            outcome.skipped += 1;
            continue;
        }
        match command {
            Ok(c) => commands.push((source, m.offset, c)),
            Err(reason) => dead_letter(
                &mut w,
                source,
                m.offset,
                m.payload.as_deref().unwrap_or_default(),
                format!("undecodable or invalid command: {reason}"),
                now_ms,
            )?,
        }
    }
    if advance_partition.is_empty() {
        tx.rollback().await?;
        return Ok(outcome);
    }

    // 4. lock installments in id order, then the payments being reversed
    let mut installment_ids: Vec<Uuid> = commands
        .iter()
        .filter_map(|(_, _, c)| {
            c.installment_id.or_else(|| existing.get(&(c.provider.clone(), c.payment_id.clone())).copied())
        })
        .collect();
    installment_ids.sort_unstable();
    installment_ids.dedup();
    let stmt = tx.prepare_cached(sql!("installment_select_for_update.sql")).await?;
    let mut installments: HashMap<Uuid, Installment> = HashMap::with_capacity(installment_ids.len());
    for row in tx.query(&stmt, &[&installment_ids]).await? {
        let contract_status: String = row.get(3);
        installments.insert(
            row.get(0),
            Installment {
                contract_id: row.get(1),
                customer_id: row.get(2),
                contract_active: contract_status == "active",
                currency: row.get(4),
                amount_due: row.get(5),
                amount_paid: row.get(6),
                status: row.get(7),
                dirty: false,
            },
        );
    }
    let mut payments: HashMap<Key, PaymentState> = HashMap::new();
    let (vk_provider, vk_id): (Vec<&str>, Vec<&str>) = commands
        .iter()
        .filter(|(_, _, c)| c.kind != CommandKind::Payment)
        .map(|(_, _, c)| (c.provider.as_str(), c.payment_id.as_str()))
        .unzip();
    if !vk_provider.is_empty() {
        let stmt = tx.prepare_cached(sql!("payment_select_for_update.sql")).await?;
        for row in tx.query(&stmt, &[&vk_provider, &vk_id]).await? {
            payments.insert(
                (row.get(0), row.get(1)),
                PaymentState {
                    installment_id: row.get(2),
                    status: row.get(3),
                    amount: row.get(4),
                    currency: row.get(5),
                    credited: row.get(6),
                    reversed: row.get(7),
                    dirty: false,
                },
            );
        }
    }

    // 5. apply in offset order (within each partition; partitions are independent)
    let mut seen_payments: HashSet<Key> = existing.keys().cloned().collect();
    for (source, offset, c) in commands {
        match c.kind {
            CommandKind::Payment => {
                let key = (c.provider.clone(), c.payment_id.clone());
                if !seen_payments.insert(key.clone()) {
                    outcome.duplicates += 1;
                    continue;
                }
                apply_payment(&mut w, &mut outcome, source, &mut installments, &mut payments, key, offset, c, now_ms)?;
            }
            CommandKind::Refund | CommandKind::Chargeback => {
                if !seen_reversals.insert((c.provider.clone(), c.webhook_id.clone())) {
                    outcome.duplicates += 1;
                    continue;
                }
                apply_reversal(&mut w, &mut outcome, source, &mut installments, &mut payments, c, now_ms)?;
            }
        }
    }

    // 6. write
    write(&tx, first, &mut w, &installments, &payments, (&advance_partition, &advance_to), now_ms).await?;
    outcome.events = w.outbox.len() as u64;
    outcome.dead_lettered = w.dead_offset.len() as u64;
    tx.commit().await?;
    Ok(outcome)
}

/// Dead-letters one message alone (a message that made its whole batch fail) and advances
/// the position past it, so that the partition moves on and nothing is lost.
pub async fn dead_letter_one(
    tx: Transaction<'_>,
    source: &Source,
    message: &Message,
    reason: String,
) -> Result<(), ApplyError> {
    let positions = lock_positions(&tx, source, &[source.partition]).await?;
    if message.offset < positions.get(&source.partition).copied().unwrap_or(0) {
        return Ok(tx.rollback().await?);
    }
    let mut w = Writes::default();
    let now = now_ms();
    dead_letter(&mut w, source, message.offset, message.payload.as_deref().unwrap_or_default(), reason, now)?;
    let advance = (&[source.partition][..], &[message.offset + 1][..]);
    write(&tx, source, &mut w, &HashMap::new(), &HashMap::new(), advance, now).await?;
    Ok(tx.commit().await?)
}

/// Wakes the relay after a commit that wrote outbox rows. Never inside the applying
/// transaction: PostgreSQL takes one database-wide lock for a notifying commit and holds it
/// through the commit record's flush, so concurrent notifying transactions commit one at a
/// time, each waiting for the others' fsync (measured: most of the processor's commit time).
/// Alone, the NOTIFY is a transaction without a commit record. A lost wake-up (a crash right
/// after the commit) costs the relay's poll interval, never an event.
pub async fn wake_relay(client: &tokio_postgres::Client) {
    if let Err(error) = client.batch_execute("NOTIFY paystream_outbox").await {
        tracing::debug!(error = %paystream_common::postgres::describe(&error), "relay wake-up not sent; it polls");
    }
}

fn validate(c: PaymentCommand) -> Result<PaymentCommand, &'static str> {
    if c.amount <= Decimal::ZERO {
        return Err("amount must be positive");
    }
    if c.currency.len() != 3 || !c.currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err("currency must be an ISO 4217 code");
    }
    if c.provider.is_empty() || c.payment_id.is_empty() || c.webhook_id.is_empty() {
        return Err("provider, payment_id and webhook_id are required");
    }
    if c.kind == CommandKind::Payment && c.installment_id.is_none() {
        return Err("a payment needs an installment_id");
    }
    Ok(c)
}

fn dead_letter(
    w: &mut Writes,
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
        payload: payload.to_vec(),
        occurred_at_ms: now_ms,
    };
    tracing::warn!(partition = source.partition, offset, %reason, "message dead-lettered");
    w.outbox.push_dead_letter(&source.deadletter_topic, &dead)?;
    w.dead_partition.push(source.partition);
    w.dead_offset.push(offset);
    w.dead_reason.push(reason);
    w.dead_payload.push(dead.payload);
    Ok(())
}

fn fact(
    event_type: EventType,
    c: &PaymentCommand,
    aggregate: Uuid,
    contract: Option<Uuid>,
    amount: Decimal,
    reason: Option<String>,
    now_ms: i64,
) -> PaymentEvent {
    PaymentEvent {
        event_id: event_id(event_type, &format!("{}\u{0}{}\u{0}{}", c.provider, c.webhook_id, c.payment_id)),
        event_type,
        occurred_at_ms: now_ms,
        aggregate_id: aggregate,
        provider: c.provider.clone(),
        payment_id: c.payment_id.clone(),
        installment_id: c.installment_id,
        contract_id: contract,
        amount,
        currency: c.currency.clone(),
        reason,
    }
}

#[allow(clippy::too_many_arguments)]
fn apply_payment(
    w: &mut Writes,
    outcome: &mut Outcome,
    source: &Source,
    installments: &mut HashMap<Uuid, Installment>,
    payments: &mut HashMap<Key, PaymentState>,
    key: Key,
    offset: i64,
    c: PaymentCommand,
    now_ms: i64,
) -> Result<(), ApplyError> {
    // validate() guarantees a payment has an installment id.
    let installment_id = c.installment_id.unwrap_or_default();
    let rejection = match installments.get(&installment_id) {
        None => Some("unknown installment"),
        Some(i) if i.currency != c.currency => Some("currency does not match the installment"),
        Some(i) if !i.contract_active => Some("contract is not active"),
        Some(_) => None,
    };
    let topic = &source.events_topic;
    let (status, applied, credited, journal_id) = if let Some(reason) = rejection {
        outcome.rejected += 1;
        let contract = installments.get(&installment_id).map(|i| i.contract_id);
        w.outbox.push_event(
            topic,
            &fact(EventType::PaymentRejected, &c, installment_id, contract, c.amount, Some(reason.into()), now_ms),
        )?;
        ("rejected", Decimal::ZERO, Decimal::ZERO, None)
    } else {
        let Some(inst) = installments.get_mut(&installment_id) else {
            return Ok(()); // unreachable: rejection covers the missing installment
        };
        let was_paid = inst.status == "paid";
        let open = (inst.amount_due - inst.amount_paid).max(Decimal::ZERO);
        let applied = c.amount.min(open);
        let credited = c.amount - applied;
        let mut journal = Journal::new("payment", format!("{}/{}", c.provider, c.payment_id), &c.currency);
        journal
            .debit(provider_clearing(&c.provider), c.amount)
            .credit(receivable(inst.contract_id), applied)
            .credit(customer_credit(inst.customer_id), credited);
        let journal_id = w.journals.push(journal)?;
        inst.amount_paid += applied;
        inst.settle_status();
        outcome.applied += 1;
        let contract = Some(inst.contract_id);
        w.outbox.push_event(
            topic,
            &fact(EventType::PaymentApplied, &c, installment_id, contract, c.amount, None, now_ms),
        )?;
        if was_paid {
            let reason = "installment was already paid; amount kept as customer credit";
            w.outbox.push_event(
                topic,
                &fact(
                    EventType::SuspectedDuplicatePayment,
                    &c,
                    installment_id,
                    contract,
                    c.amount,
                    Some(reason.into()),
                    now_ms,
                ),
            )?;
        } else if inst.status == "paid" {
            w.outbox.push_event(
                topic,
                &fact(EventType::InstallmentPaid, &c, installment_id, contract, inst.amount_due, None, now_ms),
            )?;
            w.newly_paid_contracts.insert(inst.contract_id);
        }
        ("applied", applied, credited, Some(journal_id))
    };
    payments.insert(
        key,
        PaymentState {
            installment_id,
            status: status.to_owned(),
            amount: c.amount,
            currency: c.currency.clone(),
            credited,
            reversed: Decimal::ZERO,
            dirty: false, // inserted below, not updated
        },
    );
    w.pay_provider.push(c.provider);
    w.pay_id.push(c.payment_id);
    w.pay_installment.push(installment_id);
    w.pay_rail.push(c.rail);
    w.pay_amount.push(c.amount);
    w.pay_currency.push(c.currency);
    w.pay_status.push(status.to_owned());
    w.pay_reason.push(rejection.map(str::to_owned));
    w.pay_applied.push(applied);
    w.pay_credited.push(credited);
    w.pay_journal.push(journal_id);
    w.pay_occurred.push(c.occurred_at_ms);
    w.pay_partition.push(source.partition);
    w.pay_offset.push(offset);
    Ok(())
}

fn apply_reversal(
    w: &mut Writes,
    outcome: &mut Outcome,
    source: &Source,
    installments: &mut HashMap<Uuid, Installment>,
    payments: &mut HashMap<Key, PaymentState>,
    c: PaymentCommand,
    now_ms: i64,
) -> Result<(), ApplyError> {
    let topic = &source.events_topic;
    let key = (c.provider.clone(), c.payment_id.clone());
    let rejection = match payments.get(&key) {
        None => Some("unknown payment"),
        Some(p) if p.status == "rejected" => Some("payment was rejected; nothing to reverse"),
        Some(p) if p.currency != c.currency => Some("currency does not match the payment"),
        Some(p) if p.reversed + c.amount > p.amount => Some("reversal exceeds what is left of the payment"),
        Some(p) if !installments.contains_key(&p.installment_id) => Some("installment of the payment not found"),
        Some(_) => None,
    };
    let journal_id = match (rejection, payments.get_mut(&key)) {
        (None, Some(p)) => {
            let Some(inst) = installments.get_mut(&p.installment_id) else {
                return Ok(());
            };
            // Credit kept for the customer is returned first, then the installment reopens.
            let from_credit = c.amount.min(p.credited);
            let from_receivable = c.amount - from_credit;
            let mut journal =
                Journal::new("reversal", format!("{}/{}/{}", c.provider, c.payment_id, c.webhook_id), &c.currency);
            journal
                .credit(provider_clearing(&c.provider), c.amount)
                .debit(customer_credit(inst.customer_id), from_credit)
                .debit(receivable(inst.contract_id), from_receivable);
            let id = w.journals.push(journal)?;
            p.credited -= from_credit;
            p.reversed += c.amount;
            p.dirty = true;
            inst.amount_paid = (inst.amount_paid - from_receivable).max(Decimal::ZERO);
            inst.settle_status();
            outcome.reversed += 1;
            let mut event = fact(
                EventType::PaymentReversed,
                &c,
                p.installment_id,
                Some(inst.contract_id),
                c.amount,
                Some(c.kind.as_str().into()),
                now_ms,
            );
            event.installment_id = Some(p.installment_id);
            w.outbox.push_event(topic, &event)?;
            Some(id)
        }
        (reason, _) => {
            outcome.rejected += 1;
            let aggregate = c
                .installment_id
                .or_else(|| payments.get(&key).map(|p| p.installment_id))
                .unwrap_or_else(|| Uuid::new_v5(&Uuid::NAMESPACE_OID, c.payment_id.as_bytes()));
            let reason = reason.unwrap_or("reversal could not be applied");
            w.outbox.push_event(
                topic,
                &fact(EventType::PaymentRejected, &c, aggregate, None, c.amount, Some(reason.into()), now_ms),
            )?;
            None
        }
    };
    w.rev_provider.push(c.provider);
    w.rev_id.push(c.webhook_id);
    w.rev_payment.push(c.payment_id);
    w.rev_kind.push(c.kind.as_str().to_owned());
    w.rev_amount.push(c.amount);
    w.rev_status.push(if journal_id.is_some() { "applied" } else { "rejected" }.to_owned());
    w.rev_reason.push(rejection.map(str::to_owned));
    w.rev_journal.push(journal_id);
    Ok(())
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

/// Writes the batch's effects and advances the positions (`advance`: partitions and their
/// next offsets): one pipeline for everything whose values are known, then the outbox, which
/// also carries the contract settlements the first pipeline found.
async fn write(
    tx: &Transaction<'_>,
    source: &Source,
    w: &mut Writes,
    installments: &HashMap<Uuid, Installment>,
    payments: &HashMap<Key, PaymentState>,
    advance: (&[i32], &[i64]),
    now_ms: i64,
) -> Result<(), ApplyError> {
    let mut statements: Vec<Statement<'_>> = Vec::with_capacity(10);
    if !w.journals.is_empty() {
        let j = &w.journals;
        statements
            .push((tx.prepare_cached(sql!("journal_insert_batch.sql")).await?, vec![&j.ids, &j.kinds, &j.references]));
        statements.push((
            tx.prepare_cached(sql!("posting_insert_batch.sql")).await?,
            vec![&j.posting_journal, &j.posting_line, &j.posting_account, &j.posting_currency, &j.posting_amount],
        ));
    }
    if !w.pay_provider.is_empty() {
        statements.push((
            tx.prepare_cached(sql!("payment_insert_batch.sql")).await?,
            vec![
                &w.pay_provider,
                &w.pay_id,
                &w.pay_installment,
                &w.pay_rail,
                &w.pay_amount,
                &w.pay_currency,
                &w.pay_status,
                &w.pay_reason,
                &w.pay_applied,
                &w.pay_credited,
                &w.pay_journal,
                &w.pay_occurred,
                &w.pay_partition,
                &w.pay_offset,
            ],
        ));
    }
    let mut reversed_provider = Vec::new();
    let mut reversed_id = Vec::new();
    let mut reversed = Vec::new();
    let mut credited = Vec::new();
    for ((p, i), state) in payments.iter().filter(|(_, s)| s.dirty) {
        reversed_provider.push(p.as_str());
        reversed_id.push(i.as_str());
        reversed.push(state.reversed);
        credited.push(state.credited);
    }
    if !w.rev_provider.is_empty() {
        statements.push((
            tx.prepare_cached(sql!("reversal_insert_batch.sql")).await?,
            vec![
                &w.rev_provider,
                &w.rev_id,
                &w.rev_payment,
                &w.rev_kind,
                &w.rev_amount,
                &w.rev_status,
                &w.rev_reason,
                &w.rev_journal,
            ],
        ));
    }
    if !reversed_provider.is_empty() {
        statements.push((
            tx.prepare_cached(sql!("payment_update_reversed.sql")).await?,
            vec![&reversed_provider, &reversed_id, &reversed, &credited],
        ));
    }
    let mut ids = Vec::new();
    let mut paid = Vec::new();
    let mut status = Vec::new();
    for (id, i) in installments.iter().filter(|(_, i)| i.dirty) {
        ids.push(*id);
        paid.push(i.amount_paid);
        status.push(i.status.as_str());
    }
    if !ids.is_empty() {
        statements.push((tx.prepare_cached(sql!("installment_update_batch.sql")).await?, vec![&ids, &paid, &status]));
    }
    if !w.dead_offset.is_empty() {
        statements.push((
            tx.prepare_cached(sql!("dead_letter_insert_batch.sql")).await?,
            vec![&source.topic, &w.dead_partition, &w.dead_offset, &w.dead_reason, &w.dead_payload],
        ));
    }
    let (advance_partition, advance_to) = advance;
    statements.push((
        tx.prepare_cached(sql!("consumer_position_advance_batch.sql")).await?,
        vec![&source.group, &source.topic, &advance_partition, &advance_to],
    ));
    let contracts: Vec<Uuid> = w.newly_paid_contracts.iter().copied().collect();
    if contracts.is_empty() {
        pipeline(tx, &statements).await?;
    } else {
        // The contracts whose installments were all paid: locked (in id order), then settled
        // after the installment updates above, in the same pipeline.
        statements.push((tx.prepare_cached(sql!("contract_select_for_update.sql")).await?, vec![&contracts]));
        let settle = tx.prepare_cached(sql!("contract_settle_if_paid.sql")).await?;
        let (_, settled) = futures::try_join!(pipeline(tx, &statements), async {
            Ok::<_, ApplyError>(tx.query(&settle, &[&contracts]).await?)
        })?;
        for row in settled {
            let contract: Uuid = row.get(0);
            let currency: String = row.get(1);
            let principal: Decimal = row.get(2);
            let event = PaymentEvent {
                event_id: event_id(EventType::ContractSettled, &contract.to_string()),
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
            };
            w.outbox.push_event(&source.events_topic, &event)?;
        }
    }
    if !w.outbox.is_empty() {
        let stmt = tx.prepare_cached(crate::outbox::INSERT).await?;
        w.outbox.insert(&**tx, &stmt).await?;
    }
    Ok(())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
