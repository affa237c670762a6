//! Applying batches of one or several partitions' messages in one PostgreSQL transaction.
//!
//! Order of work inside the transaction, and why:
//! 1. lock the partitions' stored positions (in partition order), skip what is below them
//!    (redelivery after a crash or rebalance, a zombie worker of a revoked partition) and
//!    refuse a batch that starts past one (a gap: what lies between was never delivered);
//! 2. authenticate (the MAC ingest put on the record) and decode; what fails, is invalid, or
//!    is a webhook ingest could not normalise becomes a dead letter in the same batch;
//! 3. read which payments and reversals already exist (dedupe on the provider's ids);
//! 4. lock the installments in id order (no deadlocks between partitions), then the
//!    payments being reversed;
//! 5. apply each partition's commands in offset order against the locked state in memory,
//!    with the rules of `rules` (a reversal whose payment is not recorded yet is held);
//! 6. write everything with set-based inserts (`writes`), settle contracts whose
//!    installments are all paid, advance the positions, commit; then wake the relay (see
//!    [`wake_relay`]) and apply the reversals held for payments this batch recorded
//!    (`pending`).
//!
//! The effect and the positions commit together or not at all.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use deadpool_postgres::Transaction;
use rust_decimal::Decimal;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use paystream_common::command_auth::CommandAuth;
use paystream_common::now_ms;
use paystream_schemas::{decode_inbound, CommandKind, Inbound, PaymentCommand};

use crate::credit::Parts;
use crate::error::ApplyError;
use crate::rules::{self, ContractStatus, Installment, InstallmentStatus, Payment, ReversalEffect};
use crate::writes::{Locked, PaymentKey, Writes};

/// One message of a partition, as the worker holds it.
#[derive(Debug, Clone)]
pub struct Message {
    /// Kafka offset.
    pub offset: i64,
    /// The record's key.
    pub key: Option<Vec<u8>>,
    /// The value, when there is one.
    pub payload: Option<Vec<u8>>,
    /// The `paystream-mac` header, when there is one.
    pub mac: Option<Vec<u8>>,
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
    /// The keys that authenticate inbound records.
    pub auth: Arc<CommandAuth>,
}

/// What a batch did, for metrics and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Payments applied (including those kept as credit).
    pub applied: u64,
    /// Payments and reversals rejected with an event.
    pub rejected: u64,
    /// Reversals and reinstatements booked.
    pub reversed: u64,
    /// Reversals held until their payment is recorded.
    pub held: u64,
    /// Deliveries that had already been applied.
    pub duplicates: u64,
    /// Messages kept as dead letters.
    pub dead_lettered: u64,
    /// Messages below the stored position (already applied by an earlier transaction).
    pub skipped: u64,
    /// Events written to the outbox.
    pub events: u64,
    /// Payments whose held reversals can be applied now that this batch committed.
    pub pending_keys: Vec<PaymentKey>,
}

macro_rules! sql {
    ($file:literal) => {
        include_str!(concat!("../sql/", $file))
    };
}

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

/// What a message turned out to be.
enum Item {
    /// A valid command.
    Command(PaymentCommand),
    /// Not applicable: why.
    Dead(String),
}

/// Authenticates and decodes a message.
fn read(source: &Source, message: &Message) -> Item {
    let payload = message.payload.as_deref().unwrap_or_default();
    let key = message.key.as_deref().unwrap_or_default();
    if let Err(error) = source.auth.verify(key, payload, message.mac.as_deref()) {
        return Item::Dead(format!("{error}: not produced by ingest, so not applied"));
    }
    match decode_inbound(payload) {
        Ok(Inbound::Command(command)) => match command.validate() {
            Ok(()) => Item::Command(command),
            Err(invalid) => Item::Dead(format!("invalid command: {invalid}")),
        },
        Ok(Inbound::Unprocessable(kept)) => Item::Dead(format!(
            "unprocessable webhook from {} ({}): {}",
            kept.provider,
            kept.webhook_id.as_deref().unwrap_or("no webhook id"),
            kept.reason
        )),
        Err(error) => Item::Dead(format!("undecodable command: {error}")),
    }
}

/// The bytes a dead letter keeps: an unprocessable webhook's own body (what an operator
/// reads and the provider sent), any other message's value as it was.
fn dead_bytes(message: &Message) -> Vec<u8> {
    let payload = message.payload.as_deref().unwrap_or_default();
    match decode_inbound(payload) {
        Ok(Inbound::Unprocessable(kept)) => kept.body,
        _ => payload.to_vec(),
    }
}

/// Locks `ids` (ascending) and returns them as the rules see them.
pub(crate) async fn lock_installments(
    tx: &Transaction<'_>,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, Locked<Installment>>, ApplyError> {
    let stmt = tx.prepare_cached(sql!("installment_select_for_update.sql")).await?;
    let mut installments = HashMap::with_capacity(ids.len());
    for row in tx.query(&stmt, &[&ids]).await? {
        let contract_status: String = row.get(3);
        let status: String = row.get(7);
        let state = Installment {
            contract_id: row.get(1),
            customer_id: row.get(2),
            contract_status: ContractStatus::parse(&contract_status)
                .ok_or(ApplyError::UnknownStatus(contract_status))?,
            currency: row.get::<_, String>(4).trim().to_owned(),
            amount_due: row.get(5),
            amount_paid: row.get(6),
            late_fee: row.get(8),
            late_fee_paid: row.get(9),
            interest: row.get(10),
            interest_paid: row.get(11),
            overdue: row.get(12),
            order: {
                let order: String = row.get(13);
                order.parse().map_err(ApplyError::UnknownStatus)?
            },
            status: InstallmentStatus::parse(&status).ok_or(ApplyError::UnknownStatus(status))?,
        };
        installments.insert(row.get(0), Locked { state, dirty: false });
    }
    Ok(installments)
}

/// Locks the payments of `keys` and returns them as the rules see them.
pub(crate) async fn lock_payments(
    tx: &Transaction<'_>,
    keys: &[(&str, &str)],
) -> Result<HashMap<PaymentKey, Locked<Payment>>, ApplyError> {
    let mut payments = HashMap::new();
    if keys.is_empty() {
        return Ok(payments);
    }
    let (providers, ids): (Vec<&str>, Vec<&str>) = keys.iter().copied().unzip();
    let stmt = tx.prepare_cached(sql!("payment_select_for_update.sql")).await?;
    for row in tx.query(&stmt, &[&providers, &ids]).await? {
        let status: String = row.get(3);
        let amount: Decimal = row.get(4);
        let credited: Decimal = row.get(6);
        let reversed: Decimal = row.get(7);
        let late_fee: Decimal = row.get(9);
        let interest: Decimal = row.get(10);
        // Principal is what is applied and not charges: the columns keep the charges' parts
        // current (a payment recorded before charges existed has them at zero).
        let applied_total = if status == "rejected" { Decimal::ZERO } else { amount - credited - reversed };
        let state = Payment {
            installment_id: row.get(2),
            rejected: status == "rejected",
            amount,
            currency: row.get::<_, String>(5).trim().to_owned(),
            credited,
            reversed,
            refunded: row.get(8),
            applied: Parts { late_fee, interest, principal: (applied_total - late_fee - interest).max(Decimal::ZERO) },
        };
        payments.insert((row.get(0), row.get(1)), Locked { state, dirty: false });
    }
    Ok(payments)
}

/// Applies a reversal or reinstatement against the locked state: booked, rejected,
/// unchanged, or held (`raw` is what it was read as, kept with it).
#[allow(clippy::too_many_arguments)]
pub(crate) fn apply_reversal(
    w: &mut Writes,
    outcome: &mut Outcome,
    source: &Source,
    installments: &mut HashMap<Uuid, Locked<Installment>>,
    payments: &mut HashMap<PaymentKey, Locked<Payment>>,
    c: &PaymentCommand,
    raw: &[u8],
    position: (i32, i64),
    now_ms: i64,
) -> Result<(), ApplyError> {
    let key = (c.provider.clone(), c.payment_id.clone());
    let payment = payments.get_mut(&key);
    let installment_id = payment.as_ref().map(|p| p.state.installment_id);
    let installment = installment_id.and_then(|id| installments.get_mut(&id));
    let contract = installment.as_ref().map(|i| i.state.contract_id);
    let effect = rules::reverse(payment.map(|p| &mut p.state), installment.map(|i| &mut i.state), c);
    let aggregate = installment_id
        .or(c.installment_id)
        .unwrap_or_else(|| Uuid::new_v5(&Uuid::NAMESPACE_OID, c.payment_id.as_bytes()));
    match effect {
        ReversalEffect::Pending => {
            outcome.held += 1;
            w.push_pending(c, raw, position.0, position.1);
            tracing::info!(provider = %c.provider, payment = %c.payment_id, kind = c.kind.as_str(), "reversal held until its payment is recorded");
        }
        ReversalEffect::Rejected(reason) => {
            outcome.rejected += 1;
            let rejected = rules::Fact {
                event_type: paystream_schemas::EventType::PaymentRejected,
                amount: c.amount,
                reason: Some(reason),
                allocation: None,
            };
            w.push_fact(&source.events_topic, c, &rejected, aggregate, contract, now_ms)?;
            w.push_reversal(c, "rejected", Decimal::ZERO, Some(reason), None);
        }
        ReversalEffect::Unchanged(reason) => {
            outcome.duplicates += 1;
            w.push_reversal(c, "unchanged", Decimal::ZERO, Some(reason), None);
        }
        ReversalEffect::Booked { amount, journal, facts, contract_reopened, installment_paid } => {
            outcome.reversed += 1;
            let journal_id = w.push_journal(journal)?;
            for fact in &facts {
                w.push_fact(&source.events_topic, c, fact, aggregate, contract, now_ms)?;
            }
            w.push_reversal(c, "applied", amount, None, Some(journal_id));
            if let Some(p) = payments.get_mut(&key) {
                p.dirty = true;
            }
            if let Some(i) = installment_id.and_then(|id| installments.get_mut(&id)) {
                i.dirty = true;
                if contract_reopened {
                    w.contract_reopened(i.state.contract_id);
                }
                if installment_paid {
                    w.installment_paid(i.state.contract_id);
                }
            }
        }
    }
    Ok(())
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
    // Read before the positions are known, so that the dedupe reads can travel with the
    // position lock in one round trip; what turns out to be below a position is dropped.
    let items: Vec<(&Source, &Message, Item)> = parts
        .iter()
        .flat_map(|(source, messages)| messages.iter().map(move |m| (*source, m)))
        .map(|(source, m)| (source, m, read(source, m)))
        .collect();
    let commands = || {
        items.iter().filter_map(|(_, _, item)| match item {
            Item::Command(c) => Some(c),
            Item::Dead(_) => None,
        })
    };
    let (payment_providers, payment_ids): (Vec<&str>, Vec<&str>) =
        commands().map(|c| (c.provider.as_str(), c.payment_id.as_str())).unzip();
    let (reversal_providers, reversal_ids): (Vec<&str>, Vec<&str>) = commands()
        .filter(|c| c.kind != CommandKind::Payment)
        .map(|c| (c.provider.as_str(), c.webhook_id.as_str()))
        .unzip();

    // 1 and 3: lock the positions, read which payments and reversals exist and which of the
    // batch's payments have reversals held for them (pipelined, in this order).
    let lock = tx.prepare_cached(sql!("consumer_position_lock_batch.sql")).await?;
    let by_keys = tx.prepare_cached(sql!("payment_select_by_keys.sql")).await?;
    let reversals = tx.prepare_cached(sql!("reversal_select_by_keys.sql")).await?;
    let held = tx.prepare_cached(sql!("pending_reversal_select_by_payments.sql")).await?;
    let lock_params: [&(dyn ToSql + Sync); 3] = [&first.group, &first.topic, &partitions];
    let key_params: [&(dyn ToSql + Sync); 2] = [&payment_providers, &payment_ids];
    let (position_rows, payment_rows, reversal_rows, held_rows) = futures::try_join!(
        tx.query(&lock, &lock_params),
        tx.query(&by_keys, &key_params),
        async {
            if reversal_providers.is_empty() {
                Ok(Vec::new())
            } else {
                tx.query(&reversals, &[&reversal_providers, &reversal_ids]).await
            }
        },
        tx.query(&held, &key_params),
    )?;
    let positions: HashMap<i32, i64> = position_rows.iter().map(|row| (row.get(0), row.get(1))).collect();
    let existing: HashMap<PaymentKey, Uuid> =
        payment_rows.iter().map(|row| ((row.get(0), row.get(1)), row.get(2))).collect();
    let mut seen_reversals: HashSet<(String, String)> =
        reversal_rows.iter().map(|row| (row.get(0), row.get(1))).collect();

    // A batch that starts past its partition's position would leave the messages in between
    // unapplied for good: refused, here where the position is locked.
    let mut advance_partition: Vec<i32> = Vec::new();
    let mut advance_to: Vec<i64> = Vec::new();
    for (source, messages) in parts {
        let next = positions.get(&source.partition).copied().unwrap_or(0);
        if let Some(first_message) = messages.first().filter(|m| m.offset > next) {
            return Err(ApplyError::Gap { partition: source.partition, next, first: first_message.offset });
        }
        if let Some(last) = messages.last().filter(|last| last.offset >= next) {
            advance_partition.push(source.partition);
            advance_to.push(last.offset + 1);
        }
    }
    if advance_partition.is_empty() {
        outcome.skipped = items.len() as u64;
        tx.rollback().await?;
        return Ok(outcome);
    }

    let mut w = Writes::default();
    let now_ms = now_ms();
    // 2. what is new becomes a command, or a dead letter when it is not a valid one
    let mut batch: Vec<(&Source, &Message, &PaymentCommand)> = Vec::with_capacity(items.len());
    for (source, m, item) in &items {
        if m.offset < positions.get(&source.partition).copied().unwrap_or(0) {
            outcome.skipped += 1;
            continue;
        }
        match item {
            Item::Command(c) => batch.push((source, m, c)),
            Item::Dead(reason) => w.dead_letter(source, m.offset, &dead_bytes(m), reason.clone(), now_ms)?,
        }
    }

    // 4. lock installments in id order, then the payments being reversed
    let mut installment_ids: BTreeSet<Uuid> = BTreeSet::new();
    for (_, _, c) in &batch {
        let known = existing.get(&(c.provider.clone(), c.payment_id.clone())).copied();
        installment_ids.extend(c.installment_id.filter(|_| c.kind == CommandKind::Payment).or(known));
    }
    let installment_ids: Vec<Uuid> = installment_ids.into_iter().collect();
    let mut installments = lock_installments(&tx, &installment_ids).await?;
    let reversed_keys: Vec<(&str, &str)> = batch
        .iter()
        .filter(|(_, _, c)| c.kind != CommandKind::Payment)
        .map(|(_, _, c)| (c.provider.as_str(), c.payment_id.as_str()))
        .collect();
    let mut payments = lock_payments(&tx, &reversed_keys).await?;

    // 5. apply in offset order (within each partition; partitions are independent)
    let mut seen_payments: HashSet<PaymentKey> = existing.keys().cloned().collect();
    for (source, m, c) in batch {
        match c.kind {
            CommandKind::Payment => {
                let key = (c.provider.clone(), c.payment_id.clone());
                if !seen_payments.insert(key.clone()) {
                    outcome.duplicates += 1;
                    continue;
                }
                let installment_id = c.installment_id.unwrap_or_default();
                let installment = installments.get_mut(&installment_id);
                let contract = installment.as_ref().map(|i| i.state.contract_id);
                let effect = rules::pay(installment.map(|i| &mut i.state), c);
                if effect.rejection.is_some() {
                    outcome.rejected += 1;
                } else {
                    outcome.applied += 1;
                }
                let journal_id = w.push_journal(effect.journal)?;
                for fact in &effect.facts {
                    w.push_fact(&source.events_topic, c, fact, installment_id, contract, now_ms)?;
                }
                if let Some(i) = installments.get_mut(&installment_id) {
                    i.dirty |= effect.rejection.is_none();
                    if effect.installment_paid {
                        w.installment_paid(i.state.contract_id);
                    }
                }
                w.push_payment(
                    c,
                    &effect.payment,
                    effect.rejection,
                    effect.applied,
                    journal_id,
                    source.partition,
                    m.offset,
                );
                // A reversal later in the batch finds it; inserted below, not updated.
                payments.insert(key, Locked { state: effect.payment, dirty: false });
            }
            _ => {
                if !seen_reversals.insert((c.provider.clone(), c.webhook_id.clone())) {
                    outcome.duplicates += 1;
                    continue;
                }
                // A reversal of a payment recorded earlier in this batch: its installment is
                // locked already (the payment's own).
                let raw = m.payload.as_deref().unwrap_or_default();
                apply_reversal(
                    &mut w,
                    &mut outcome,
                    source,
                    &mut installments,
                    &mut payments,
                    c,
                    raw,
                    (source.partition, m.offset),
                    now_ms,
                )?;
            }
        }
    }

    // 6. write
    w.write(&tx, first, &installments, &payments, (&advance_partition, &advance_to), now_ms).await?;
    outcome.events = w.events() as u64;
    outcome.dead_lettered = w.dead_letters() as u64;
    let mut pending: BTreeSet<PaymentKey> = std::mem::take(&mut w.pending_keys);
    pending.extend(held_rows.iter().map(|row| (row.get(0), row.get(1))));
    outcome.pending_keys = pending.into_iter().collect();
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
    let next = positions.get(&source.partition).copied().unwrap_or(0);
    if message.offset < next {
        return Ok(tx.rollback().await?);
    }
    if message.offset > next {
        return Err(ApplyError::Gap { partition: source.partition, next, first: message.offset });
    }
    let mut w = Writes::default();
    let now = now_ms();
    w.dead_letter(source, message.offset, &dead_bytes(message), reason, now)?;
    let advance = (&[source.partition][..], &[message.offset + 1][..]);
    w.write(&tx, source, &HashMap::new(), &HashMap::new(), advance, now).await?;
    Ok(tx.commit().await?)
}

/// The channel the relay listens on.
pub const OUTBOX_CHANNEL: &str = paystream_common::outbox::CHANNEL;

/// Wakes the relay after a commit that wrote outbox rows. Never inside the applying
/// transaction: PostgreSQL takes one database-wide lock for a notifying commit and holds it
/// through the commit record's flush, so concurrent notifying transactions commit one at a
/// time, each waiting for the others' fsync (measured: most of the processor's commit time).
/// Alone, the NOTIFY is a transaction without a commit record. A lost wake-up (a crash right
/// after the commit) costs the relay's poll interval, never an event.
pub async fn wake_relay(client: &tokio_postgres::Client) {
    if let Err(error) = client.batch_execute(paystream_common::outbox::NOTIFY).await {
        tracing::debug!(error = %paystream_common::postgres::describe(&error), "relay wake-up not sent; it polls");
    }
}
