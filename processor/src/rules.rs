//! The money rules, as pure functions over plain values: what a payment, a refund, a
//! chargeback or a reinstatement does to an installment, its contract, the payment it
//! concerns and the ledger. No I/O: `apply` loads the locked state, calls these, and writes
//! what they return. Every journal they return balances; no amount they leave is negative.
//!
//! Accounts (see `ledger`): a payment moves money from `provider_clearing` (what the provider
//! collected for us) to `receivable` (the customer's debt) and, past what is owed, to
//! `customer_credit`. A payment that cannot be applied (unknown installment, wrong
//! currency, closed contract) is still money the provider collected: it is booked to
//! `unapplied_cash` (a suspense account), so the books find it and a later refund returns it
//! from there. A reversal takes money back the way it came, credit first; a reinstatement (a
//! dispute won, a refund that failed) brings it back like a payment.
//!
//! Idempotency is not here: the transaction code dedupes on the provider's ids before it
//! calls these (a command applied twice is a command applied once).

use rust_decimal::Decimal;
use uuid::Uuid;

use paystream_schemas::{Allocation, CommandKind, EventType, PaymentCommand};

use crate::credit::{allocate, unallocate, AllocationOrder, Parts};
use crate::ledger::{customer_credit, provider_clearing, receivable, unapplied_cash, Journal};

/// An installment's status (the database's `installment.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstallmentStatus {
    /// Nothing paid.
    Open,
    /// Some paid, not all.
    PartiallyPaid,
    /// All paid.
    Paid,
    /// Past due and unpaid.
    Overdue,
    /// Replaced by a renegotiated schedule.
    Renegotiated,
}

impl InstallmentStatus {
    /// The database's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::PartiallyPaid => "partially_paid",
            Self::Paid => "paid",
            Self::Overdue => "overdue",
            Self::Renegotiated => "renegotiated",
        }
    }

    /// Reads the database's name; `None` for a name this code does not know.
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Open, Self::PartiallyPaid, Self::Paid, Self::Overdue, Self::Renegotiated]
            .into_iter()
            .find(|s| s.as_str() == name)
    }
}

/// A contract's status (the database's `contract.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContractStatus {
    /// Being paid.
    Active,
    /// Every installment paid.
    Settled,
    /// Closed: payments to it are not accepted.
    Closed,
    /// Replaced by a renegotiated contract.
    Renegotiated,
}

impl ContractStatus {
    /// The database's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Settled => "settled",
            Self::Closed => "closed",
            Self::Renegotiated => "renegotiated",
        }
    }

    /// Reads the database's name; `None` for a name this code does not know.
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Active, Self::Settled, Self::Closed, Self::Renegotiated].into_iter().find(|s| s.as_str() == name)
    }

    /// Whether payments are applied to it (a settled contract takes them as credit).
    pub fn takes_payments(self) -> bool {
        matches!(self, Self::Active | Self::Settled)
    }
}

/// An installment and what the rules need of its contract, as locked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installment {
    /// Its contract.
    pub contract_id: Uuid,
    /// The contract's customer.
    pub customer_id: Uuid,
    /// The contract's status.
    pub contract_status: ContractStatus,
    /// ISO 4217.
    pub currency: String,
    /// What is due of principal.
    pub amount_due: Decimal,
    /// What has been paid of principal.
    pub amount_paid: Decimal,
    /// The late fee charged (`credit::accrue`).
    pub late_fee: Decimal,
    /// What has been paid of it.
    pub late_fee_paid: Decimal,
    /// Late interest charged.
    pub interest: Decimal,
    /// What has been paid of it.
    pub interest_paid: Decimal,
    /// It passed its due date unpaid once (the business date made it overdue): unpaid
    /// again after a reversal, it is overdue again, not open.
    pub overdue: bool,
    /// The order its payments pay its parts in (the contract's).
    pub order: AllocationOrder,
    /// Its status.
    pub status: InstallmentStatus,
}

impl Installment {
    /// What is still owed, part by part.
    pub fn owed(&self) -> Parts {
        Parts {
            late_fee: (self.late_fee - self.late_fee_paid).max(Decimal::ZERO),
            interest: (self.interest - self.interest_paid).max(Decimal::ZERO),
            principal: (self.amount_due - self.amount_paid).max(Decimal::ZERO),
        }
    }

    /// What is still owed in all.
    pub fn open_amount(&self) -> Decimal {
        self.owed().total()
    }

    /// It was renegotiated away: it owes nothing, its debt moved to the new schedule, and
    /// no money moves to or from it any more (money for it is the customer's credit).
    pub fn renegotiated(&self) -> bool {
        self.status == InstallmentStatus::Renegotiated || self.contract_status == ContractStatus::Renegotiated
    }

    /// What has been paid in all, charges included.
    pub fn paid_total(&self) -> Decimal {
        self.amount_paid + self.late_fee_paid + self.interest_paid
    }

    fn add_paid(&mut self, split: Parts) {
        self.late_fee_paid += split.late_fee;
        self.interest_paid += split.interest;
        self.amount_paid += split.principal;
    }

    fn take_back(&mut self, back: Parts) {
        self.late_fee_paid = (self.late_fee_paid - back.late_fee).max(Decimal::ZERO);
        self.interest_paid = (self.interest_paid - back.interest).max(Decimal::ZERO);
        self.amount_paid = (self.amount_paid - back.principal).max(Decimal::ZERO);
    }

    /// The status that follows from the amounts: paid in full (charges included), or open /
    /// partially paid, an overdue installment staying overdue until paid.
    fn settle_status(&mut self) {
        self.status = if self.open_amount().is_zero() {
            InstallmentStatus::Paid
        } else if self.overdue || self.status == InstallmentStatus::Overdue {
            InstallmentStatus::Overdue
        } else if self.paid_total() > Decimal::ZERO {
            InstallmentStatus::PartiallyPaid
        } else {
            InstallmentStatus::Open
        };
    }
}

/// A recorded payment, as locked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    /// The installment it was for.
    pub installment_id: Uuid,
    /// Whether it was rejected (its money sits in `unapplied_cash`).
    pub rejected: bool,
    /// Its amount.
    pub amount: Decimal,
    /// ISO 4217.
    pub currency: String,
    /// The part of it now held as customer credit.
    pub credited: Decimal,
    /// The part of it now reversed (refunds and chargebacks, less reinstatements).
    pub reversed: Decimal,
    /// The part of it refunded (what a cumulative refund total is compared with).
    pub refunded: Decimal,
    /// How what is applied of it to its installment is split now (what a reversal takes
    /// back, part by part).
    pub applied: Parts,
}

impl Payment {
    /// What is left of it to reverse.
    pub fn remaining(&self) -> Decimal {
        self.amount - self.reversed
    }
}

/// A fact the rules report, to become an outbox event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fact {
    /// Its type.
    pub event_type: EventType,
    /// Its amount.
    pub amount: Decimal,
    /// Why, for rejections and suspected duplicates.
    pub reason: Option<&'static str>,
    /// How the money was split, for payments, reversals and reinstatements.
    pub allocation: Option<Allocation>,
}

fn fact(event_type: EventType, amount: Decimal, reason: Option<&'static str>) -> Fact {
    Fact { event_type, amount, reason, allocation: None }
}

fn split_fact(event_type: EventType, amount: Decimal, reason: Option<&'static str>, allocation: Allocation) -> Fact {
    Fact { event_type, amount, reason, allocation: Some(allocation) }
}

/// What a payment did.
#[derive(Debug, Clone)]
pub struct PaymentEffect {
    /// The payment as recorded.
    pub payment: Payment,
    /// Why it was rejected, when it was.
    pub rejection: Option<&'static str>,
    /// The part applied to the installment.
    pub applied: Decimal,
    /// Its journal (a rejected payment's books it to `unapplied_cash`).
    pub journal: Journal,
    /// Its facts, in order.
    pub facts: Vec<Fact>,
    /// The installment became paid in full (its contract may be settled now).
    pub installment_paid: bool,
}

/// Applies a payment command to its installment (locked, `None` when unknown).
pub fn pay(installment: Option<&mut Installment>, command: &PaymentCommand) -> PaymentEffect {
    let installment_id = command.installment_id.unwrap_or_default();
    let reference = format!("{}/{}", command.provider, command.payment_id);
    let rejection = match &installment {
        None => Some("unknown installment"),
        Some(i) if i.currency != command.currency => Some("currency does not match the installment"),
        Some(i) if !i.contract_status.takes_payments() => Some("contract is not active"),
        Some(_) => None,
    };
    let mut journal = Journal::new("payment", reference, &command.currency);
    let mut payment = Payment {
        installment_id,
        rejected: rejection.is_some(),
        amount: command.amount,
        currency: command.currency.clone(),
        credited: Decimal::ZERO,
        reversed: Decimal::ZERO,
        refunded: Decimal::ZERO,
        applied: Parts::default(),
    };
    // An installment renegotiated away owes nothing: its contract's debt moved to the new
    // schedule. The money is the customer's, kept as credit, and the event says so. The
    // installment's own status decides: the processor locks installments, not contracts, so
    // a payment that waited for a renegotiation's lock reads the installment as it committed
    // but the contract as it was before (PostgreSQL rechecks only the locked row), still
    // `active`.
    if let Some(inst) = &installment {
        if inst.renegotiated() && inst.currency == command.currency {
            journal
                .debit(provider_clearing(&command.provider), command.amount)
                .credit(customer_credit(inst.customer_id), command.amount);
            // Booked as credit, not rejected (a contract renegotiated away does not take
            // payments): its reversals come back from the credit, not from suspense.
            payment.rejected = false;
            payment.credited = command.amount;
            return PaymentEffect {
                payment,
                rejection: None,
                applied: Decimal::ZERO,
                journal,
                facts: vec![split_fact(
                    EventType::PaymentApplied,
                    command.amount,
                    Some("installment was renegotiated; amount kept as customer credit"),
                    Parts::default().allocation(command.amount),
                )],
                installment_paid: false,
            };
        }
    }
    let (Some(inst), None) = (installment, rejection) else {
        // Collected money that cannot be applied is kept in suspense, never off the books.
        journal
            .debit(provider_clearing(&command.provider), command.amount)
            .credit(unapplied_cash(&command.provider), command.amount);
        return PaymentEffect {
            payment,
            rejection,
            applied: Decimal::ZERO,
            journal,
            facts: vec![fact(EventType::PaymentRejected, command.amount, rejection)],
            installment_paid: false,
        };
    };
    let was_paid = inst.status == InstallmentStatus::Paid;
    // Charges first (in the contract's order), then principal; what is left is credit.
    let (split, credited) = allocate(command.amount, inst.owed(), inst.order);
    let applied = split.total();
    journal
        .debit(provider_clearing(&command.provider), command.amount)
        .credit(receivable(inst.contract_id), applied)
        .credit(customer_credit(inst.customer_id), credited);
    inst.add_paid(split);
    inst.settle_status();
    payment.credited = credited;
    payment.applied = split;
    let mut facts = vec![split_fact(EventType::PaymentApplied, command.amount, None, split.allocation(credited))];
    let installment_paid = !was_paid && inst.status == InstallmentStatus::Paid;
    if was_paid {
        facts.push(fact(
            EventType::SuspectedDuplicatePayment,
            command.amount,
            Some("installment was already paid; amount kept as customer credit"),
        ));
    } else if installment_paid {
        facts.push(fact(EventType::InstallmentPaid, inst.amount_due, None));
    }
    PaymentEffect { payment, rejection: None, applied, journal, facts, installment_paid }
}

fn add(a: Parts, b: Parts) -> Parts {
    Parts { late_fee: a.late_fee + b.late_fee, interest: a.interest + b.interest, principal: a.principal + b.principal }
}

fn sub(a: Parts, b: Parts) -> Parts {
    let minus = |x: Decimal, y: Decimal| (x - y).max(Decimal::ZERO);
    Parts {
        late_fee: minus(a.late_fee, b.late_fee),
        interest: minus(a.interest, b.interest),
        principal: minus(a.principal, b.principal),
    }
}

/// What a reversal or reinstatement did.
#[derive(Debug, Clone)]
pub enum ReversalEffect {
    /// Its payment is not known yet: held until it is (a chargeback travels on another
    /// partition than its payment; a refund may overtake it).
    Pending,
    /// Refused: nothing booked; a `PaymentRejected` fact says why.
    Rejected(&'static str),
    /// Nothing to book: a refund total that the refunds booked already cover.
    Unchanged(&'static str),
    /// Booked.
    Booked {
        /// The amount booked.
        amount: Decimal,
        /// Its journal.
        journal: Journal,
        /// Its facts, in order.
        facts: Vec<Fact>,
        /// A settled contract owes again: it is active again.
        contract_reopened: bool,
        /// The installment became paid in full again (a reinstatement).
        installment_paid: bool,
    },
}

/// Applies a refund, refund total, chargeback or reinstatement to its payment (locked,
/// `None` when not recorded yet) and the payment's installment (locked, `None` when the
/// payment was for an unknown one).
pub fn reverse(
    payment: Option<&mut Payment>,
    installment: Option<&mut Installment>,
    command: &PaymentCommand,
) -> ReversalEffect {
    let Some(payment) = payment else { return ReversalEffect::Pending };
    if payment.currency != command.currency {
        return ReversalEffect::Rejected("currency does not match the payment");
    }
    let reference = format!("{}/{}/{}", command.provider, command.payment_id, command.webhook_id);
    let amount = match command.kind {
        CommandKind::RefundTotal => {
            let new = command.amount - payment.refunded;
            if new <= Decimal::ZERO {
                return ReversalEffect::Unchanged("the refunds booked already cover this total");
            }
            new
        }
        _ => command.amount,
    };
    let kind = if command.kind.is_reinstatement() { "reinstatement" } else { "reversal" };
    let mut journal = Journal::new(kind, reference, &command.currency);
    if command.kind.is_reinstatement() {
        // A failed refund undoes refunds; a won dispute, what was charged back.
        let undoable = match command.kind {
            CommandKind::RefundFailed => payment.refunded,
            _ => payment.reversed - payment.refunded,
        };
        if amount > undoable {
            return ReversalEffect::Rejected("reinstatement exceeds what was reversed of the payment that way");
        }
        payment.reversed -= amount;
        if command.kind == CommandKind::RefundFailed {
            payment.refunded -= amount;
        }
        return match (installment, payment.rejected) {
            // The installment's debt moved to a new schedule: the money is the customer's
            // again, as credit (the reversal took it from there).
            (Some(inst), false) if inst.renegotiated() => {
                journal
                    .debit(provider_clearing(&command.provider), amount)
                    .credit(customer_credit(inst.customer_id), amount);
                payment.credited += amount;
                let facts = vec![split_fact(
                    EventType::PaymentReinstated,
                    amount,
                    Some("installment was renegotiated; amount kept as customer credit"),
                    Parts::default().allocation(amount),
                )];
                ReversalEffect::Booked { amount, journal, facts, contract_reopened: false, installment_paid: false }
            }
            (Some(inst), false) => {
                let was_paid = inst.status == InstallmentStatus::Paid;
                // Money back is paid like a payment: what the installment owes now first.
                let (split, credited) = allocate(amount, inst.owed(), inst.order);
                let applied = split.total();
                journal
                    .debit(provider_clearing(&command.provider), amount)
                    .credit(receivable(inst.contract_id), applied)
                    .credit(customer_credit(inst.customer_id), credited);
                inst.add_paid(split);
                inst.settle_status();
                payment.credited += credited;
                payment.applied = add(payment.applied, split);
                let installment_paid = !was_paid && inst.status == InstallmentStatus::Paid;
                let mut facts = vec![split_fact(
                    EventType::PaymentReinstated,
                    amount,
                    Some(command.kind.as_str()),
                    split.allocation(credited),
                )];
                if installment_paid {
                    facts.push(fact(EventType::InstallmentPaid, inst.amount_due, None));
                }
                ReversalEffect::Booked { amount, journal, facts, contract_reopened: false, installment_paid }
            }
            // Back into suspense, where the rejected payment's money was.
            _ => {
                journal
                    .debit(provider_clearing(&command.provider), amount)
                    .credit(unapplied_cash(&command.provider), amount);
                let facts = vec![fact(EventType::PaymentReinstated, amount, Some(command.kind.as_str()))];
                ReversalEffect::Booked { amount, journal, facts, contract_reopened: false, installment_paid: false }
            }
        };
    }
    if amount > payment.remaining() {
        return ReversalEffect::Rejected("reversal exceeds what is left of the payment");
    }
    payment.reversed += amount;
    if matches!(command.kind, CommandKind::Refund | CommandKind::RefundTotal) {
        payment.refunded += amount;
    }
    let facts = vec![fact(EventType::PaymentReversed, amount, Some(command.kind.as_str()))];
    match (installment, payment.rejected) {
        // Paid before its installment was renegotiated: the renegotiation moved only what
        // was still owed to the new schedule, so the old installment and its receivable
        // stay as they are (renegotiated, nothing owed) and the money comes back from the
        // customer's credit, which goes below zero when the customer had none: what the
        // customer owes outside the schedule, on the books and on the event.
        (Some(inst), false) if inst.renegotiated() => {
            journal
                .credit(provider_clearing(&command.provider), amount)
                .debit(customer_credit(inst.customer_id), amount);
            let from_credit = amount.min(payment.credited);
            let back = unallocate(amount - from_credit, payment.applied, inst.order);
            payment.credited -= from_credit;
            payment.applied = sub(payment.applied, back);
            let facts = vec![split_fact(
                EventType::PaymentReversed,
                amount,
                Some("installment was renegotiated; amount taken from customer credit"),
                Parts::default().allocation(amount),
            )];
            ReversalEffect::Booked { amount, journal, facts, contract_reopened: false, installment_paid: false }
        }
        (Some(inst), false) => {
            // Credit kept for the customer is returned first, then the installment reopens,
            // part by part as the payment paid them.
            let from_credit = amount.min(payment.credited);
            let from_receivable = amount - from_credit;
            let back = unallocate(from_receivable, payment.applied, inst.order);
            journal
                .credit(provider_clearing(&command.provider), amount)
                .debit(customer_credit(inst.customer_id), from_credit)
                .debit(receivable(inst.contract_id), from_receivable);
            payment.credited -= from_credit;
            payment.applied = sub(payment.applied, back);
            let was_paid = inst.status == InstallmentStatus::Paid;
            inst.take_back(back);
            inst.settle_status();
            let facts = vec![split_fact(
                EventType::PaymentReversed,
                amount,
                Some(command.kind.as_str()),
                back.allocation(from_credit),
            )];
            let contract_reopened =
                was_paid && inst.status != InstallmentStatus::Paid && inst.contract_status == ContractStatus::Settled;
            let mut facts = facts;
            if contract_reopened {
                inst.contract_status = ContractStatus::Active;
                facts.push(fact(EventType::ContractReopened, amount, Some("a reversal made the contract owe again")));
            }
            ReversalEffect::Booked { amount, journal, facts, contract_reopened, installment_paid: false }
        }
        // A rejected payment's money sat in suspense: it goes back from there.
        _ => {
            journal
                .debit(unapplied_cash(&command.provider), amount)
                .credit(provider_clearing(&command.provider), amount);
            ReversalEffect::Booked { amount, journal, facts, contract_reopened: false, installment_paid: false }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    const INSTALLMENT: Uuid = Uuid::from_u128(7);

    fn installment(due: &str) -> Installment {
        Installment {
            contract_id: Uuid::from_u128(1),
            customer_id: Uuid::from_u128(2),
            contract_status: ContractStatus::Active,
            currency: "BRL".into(),
            amount_due: d(due),
            amount_paid: Decimal::ZERO,
            late_fee: Decimal::ZERO,
            late_fee_paid: Decimal::ZERO,
            interest: Decimal::ZERO,
            interest_paid: Decimal::ZERO,
            overdue: false,
            order: AllocationOrder::default(),
            status: InstallmentStatus::Open,
        }
    }

    fn command(kind: CommandKind, id: &str, amount: &str) -> PaymentCommand {
        PaymentCommand {
            webhook_id: id.into(),
            provider: "p".into(),
            kind,
            rail: "card".into(),
            payment_id: "pi_1".into(),
            installment_id: Some(INSTALLMENT),
            amount: d(amount),
            currency: "BRL".into(),
            occurred_at_ms: 0,
            received_at_ms: 0,
        }
    }

    fn balances(journal: &Journal) -> HashMap<String, Decimal> {
        let mut out = HashMap::new();
        for (account, amount) in &journal.postings {
            *out.entry(account.clone()).or_default() += *amount;
        }
        out
    }

    fn booked(effect: ReversalEffect) -> (Decimal, Journal, Vec<Fact>, bool) {
        match effect {
            ReversalEffect::Booked { amount, journal, facts, contract_reopened, .. } => {
                (amount, journal, facts, contract_reopened)
            }
            other => panic!("not booked: {other:?}"),
        }
    }

    /// A partial payment, the rest, then one more: partially paid, paid (InstallmentPaid),
    /// then all of the third kept as credit (SuspectedDuplicatePayment).
    #[test]
    fn payments_fill_the_installment_then_go_to_credit() {
        let mut inst = installment("100.00");
        let first = pay(Some(&mut inst), &command(CommandKind::Payment, "w1", "40.00"));
        assert_eq!((first.applied, inst.status), (d("40.00"), InstallmentStatus::PartiallyPaid));
        let second = pay(Some(&mut inst), &command(CommandKind::Payment, "w2", "70.00"));
        assert_eq!((second.applied, second.payment.credited), (d("60.00"), d("10.00")));
        assert!(second.installment_paid);
        assert_eq!(second.facts[1].event_type, EventType::InstallmentPaid);
        let third = pay(Some(&mut inst), &command(CommandKind::Payment, "w3", "5.00"));
        assert_eq!((third.applied, third.payment.credited), (Decimal::ZERO, d("5.00")));
        assert_eq!(third.facts[1].event_type, EventType::SuspectedDuplicatePayment);
    }

    /// A payment that cannot be applied is booked to suspense, never off the books; a
    /// refund of it returns it from there.
    #[test]
    fn rejected_payments_are_in_suspense_and_refunded_from_it() {
        let rejected = pay(None, &command(CommandKind::Payment, "w1", "25.00"));
        assert_eq!(rejected.rejection, Some("unknown installment"));
        assert_eq!(balances(&rejected.journal)["unapplied_cash:p"], d("-25.00"));
        let mut inst = installment("10.00");
        inst.contract_status = ContractStatus::Closed;
        assert_eq!(
            pay(Some(&mut inst), &command(CommandKind::Payment, "w", "1.00")).rejection,
            Some("contract is not active")
        );
        let mut payment = rejected.payment;
        let (amount, journal, ..) =
            booked(reverse(Some(&mut payment), None, &command(CommandKind::Refund, "r1", "25.00")));
        assert_eq!(amount, d("25.00"));
        assert_eq!(balances(&journal)["unapplied_cash:p"], d("25.00"));
    }

    /// Stripe's cumulative refunds: totals of 3, 7 and 10 book 3, 4 and 3; a total
    /// delivered again, or lower, books nothing.
    #[test]
    fn refund_totals_book_the_difference() {
        let mut inst = installment("10.00");
        let mut payment = pay(Some(&mut inst), &command(CommandKind::Payment, "w", "10.00")).payment;
        let mut booked_amounts = Vec::new();
        for (id, total) in [("e1", "3.00"), ("e2", "7.00"), ("e2-again", "7.00"), ("e3", "10.00"), ("e0", "3.00")] {
            match reverse(Some(&mut payment), Some(&mut inst), &command(CommandKind::RefundTotal, id, total)) {
                ReversalEffect::Booked { amount, .. } => booked_amounts.push(amount),
                ReversalEffect::Unchanged(_) => booked_amounts.push(Decimal::ZERO),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(booked_amounts, [d("3.00"), d("4.00"), d("0"), d("3.00"), d("0")]);
        assert_eq!((payment.reversed, payment.refunded, inst.amount_paid), (d("10.00"), d("10.00"), d("0")));
    }

    /// A refund of a paid installment of a settled contract reopens the contract; more
    /// than is left of the payment is refused; a won dispute pays it again.
    #[test]
    fn reversals_reopen_settled_contracts_and_reinstatements_pay_again() {
        let mut inst = installment("10.00");
        let mut payment = pay(Some(&mut inst), &command(CommandKind::Payment, "w", "10.00")).payment;
        inst.contract_status = ContractStatus::Settled;
        let (_, _, facts, reopened) =
            booked(reverse(Some(&mut payment), Some(&mut inst), &command(CommandKind::Chargeback, "c1", "4.00")));
        assert!(reopened);
        assert_eq!(facts[1].event_type, EventType::ContractReopened);
        assert_eq!((inst.status, inst.contract_status), (InstallmentStatus::PartiallyPaid, ContractStatus::Active));
        assert!(matches!(
            reverse(Some(&mut payment), Some(&mut inst), &command(CommandKind::Refund, "r1", "6.01")),
            ReversalEffect::Rejected(_)
        ));
        assert!(matches!(
            reverse(Some(&mut payment), Some(&mut inst), &command(CommandKind::RefundFailed, "no-refund", "1.00")),
            ReversalEffect::Rejected(_)
        ));
        let effect = reverse(Some(&mut payment), Some(&mut inst), &command(CommandKind::ChargebackWon, "won", "4.00"));
        let ReversalEffect::Booked { installment_paid, .. } = effect else { panic!("not booked") };
        assert!(installment_paid);
        assert_eq!((payment.reversed, inst.status), (Decimal::ZERO, InstallmentStatus::Paid));
        assert!(matches!(
            reverse(Some(&mut payment), Some(&mut inst), &command(CommandKind::ChargebackWon, "again", "0.01")),
            ReversalEffect::Rejected(_)
        ));
    }

    /// A payment to an overdue installment pays its late fee, then its interest, then
    /// principal, and says so; its chargeback takes back exactly that split and leaves the
    /// installment overdue again.
    #[test]
    fn payments_pay_charges_first_and_reversals_take_back_their_split() {
        let mut inst = installment("100.00");
        inst.late_fee = d("2.00");
        inst.interest = d("0.70");
        inst.overdue = true;
        inst.status = InstallmentStatus::Overdue;
        let effect = pay(Some(&mut inst), &command(CommandKind::Payment, "w", "50.00"));
        let split = effect.facts[0].allocation.expect("an applied payment says how it was split");
        assert_eq!(
            (split.late_fee, split.interest, split.principal, split.credit),
            (d("2.00"), d("0.70"), d("47.30"), Decimal::ZERO)
        );
        assert_eq!((inst.late_fee_paid, inst.interest_paid, inst.amount_paid), (d("2.00"), d("0.70"), d("47.30")));
        assert_eq!(inst.status, InstallmentStatus::Overdue);
        let mut payment = effect.payment;
        let (_, _, facts, _) =
            booked(reverse(Some(&mut payment), Some(&mut inst), &command(CommandKind::Chargeback, "c", "50.00")));
        assert_eq!(facts[0].allocation, Some(split));
        assert_eq!(inst.paid_total(), Decimal::ZERO);
        assert_eq!(inst.status, InstallmentStatus::Overdue, "unpaid again: overdue, not open");
        // Paying all of it, charges included, pays the installment.
        let effect = pay(Some(&mut inst), &command(CommandKind::Payment, "w2", "102.70"));
        assert!(effect.installment_paid);
        assert_eq!(inst.status, InstallmentStatus::Paid);
    }

    /// A payment for an installment renegotiated away is kept as customer credit, said so,
    /// whether or not the contract read beside it says so yet (a payment that waited for the
    /// renegotiation's lock reads the contract as it was before).
    #[test]
    fn payments_to_renegotiated_installments_become_credit() {
        for contract_status in [ContractStatus::Renegotiated, ContractStatus::Active] {
            let mut inst = installment("100.00");
            inst.status = InstallmentStatus::Renegotiated;
            inst.contract_status = contract_status;
            let effect = pay(Some(&mut inst), &command(CommandKind::Payment, "w", "30.00"));
            assert_eq!((effect.rejection, effect.applied, effect.payment.credited), (None, Decimal::ZERO, d("30.00")));
            assert_eq!(balances(&effect.journal)["customer_credit:00000000-0000-0000-0000-000000000002"], d("-30.00"));
            assert!(effect.facts[0].reason.is_some_and(|r| r.contains("renegotiated")));
            assert_eq!(inst.amount_paid, Decimal::ZERO);
        }
    }

    /// A payment applied before its installment was renegotiated, then charged back and the
    /// dispute won: the replaced installment stays renegotiated and its receivable untouched
    /// (the renegotiation moved only what was still owed); the money comes from the
    /// customer's credit and goes back to it, the events say so.
    #[test]
    fn reversals_of_payments_to_renegotiated_installments_go_through_customer_credit() {
        let credit = "customer_credit:00000000-0000-0000-0000-000000000002";
        let mut inst = installment("100.00");
        let mut payment = pay(Some(&mut inst), &command(CommandKind::Payment, "w", "40.00")).payment;
        inst.status = InstallmentStatus::Renegotiated;
        inst.contract_status = ContractStatus::Renegotiated;
        let before = inst.clone();
        let (amount, journal, facts, reopened) =
            booked(reverse(Some(&mut payment), Some(&mut inst), &command(CommandKind::Chargeback, "c", "40.00")));
        assert_eq!((amount, reopened), (d("40.00"), false));
        assert_eq!(inst, before, "the replaced installment is not touched");
        let moved = balances(&journal);
        assert_eq!(moved[credit], d("40.00"));
        assert!(!moved.contains_key(&receivable(inst.contract_id)), "{moved:?}");
        assert!(facts[0].reason.is_some_and(|r| r.contains("renegotiated")));
        assert_eq!(facts[0].allocation.map(|a| a.credit), Some(d("40.00")));
        assert_eq!((payment.reversed, payment.applied.total(), payment.credited), (d("40.00"), d("0"), d("0")));
        let effect = reverse(Some(&mut payment), Some(&mut inst), &command(CommandKind::ChargebackWon, "won", "40.00"));
        let (_, journal, facts, _) = booked(effect);
        assert_eq!(inst, before);
        assert_eq!(balances(&journal)[credit], d("-40.00"));
        assert_eq!(facts[0].event_type, EventType::PaymentReinstated);
        assert_eq!((payment.reversed, payment.credited), (d("0"), d("40.00")));
    }

    /// A reversal whose payment is unknown is held, not rejected.
    #[test]
    fn reversals_before_their_payment_are_pending() {
        assert!(matches!(reverse(None, None, &command(CommandKind::Chargeback, "c", "1.00")), ReversalEffect::Pending));
    }

    fn kinds() -> impl Strategy<Value = CommandKind> {
        prop_oneof![
            Just(CommandKind::Payment),
            Just(CommandKind::Refund),
            Just(CommandKind::RefundTotal),
            Just(CommandKind::Chargeback),
            Just(CommandKind::RefundFailed),
            Just(CommandKind::ChargebackWon),
        ]
    }

    proptest! {
        /// Any sequence of commands on one installment: every journal balances, no amount
        /// goes negative, and the installment's paid amount equals what the journals moved
        /// to its receivable (the books and the state agree).
        #[test]
        fn journals_balance_and_amounts_stay_non_negative(
            due in 1u32..100_000,
            steps in proptest::collection::vec((kinds(), 1u32..50_000), 1..30),
            renegotiate_at in 0usize..40,
        ) {
            let mut inst = installment(&format!("{}.00", due / 100));
            inst.amount_due = Decimal::new(i64::from(due), 2);
            // Charges of an overdue installment, paid before principal.
            inst.late_fee = Decimal::new(i64::from(due / 50), 2);
            inst.interest = Decimal::new(i64::from(due / 70), 2);
            inst.overdue = true;
            inst.status = InstallmentStatus::Overdue;
            let mut payment: Option<Payment> = None;
            let mut receivable_moved = Decimal::ZERO;
            for (i, (kind, cents)) in steps.into_iter().enumerate() {
                // A renegotiation replaces an installment that still owes: from then on
                // nothing moves to or from it.
                if i == renegotiate_at && inst.status != InstallmentStatus::Paid {
                    inst.status = InstallmentStatus::Renegotiated;
                    inst.contract_status = ContractStatus::Renegotiated;
                }
                let c = command(kind, &format!("w{i}"), "1.00");
                let c = PaymentCommand { amount: Decimal::new(i64::from(cents), 2), ..c };
                let journal = if kind == CommandKind::Payment {
                    if payment.is_some() { continue }
                    let effect = pay(Some(&mut inst), &c);
                    payment = Some(effect.payment);
                    Some(effect.journal)
                } else {
                    match reverse(payment.as_mut(), Some(&mut inst), &c) {
                        ReversalEffect::Booked { journal, .. } => Some(journal),
                        _ => None,
                    }
                };
                if let Some(journal) = journal {
                    prop_assert!(journal.check().is_ok(), "{journal:?}");
                    receivable_moved -= balances(&journal).get(&receivable(inst.contract_id)).copied().unwrap_or_default();
                }
                prop_assert!(inst.amount_paid >= Decimal::ZERO);
                prop_assert!(inst.late_fee_paid <= inst.late_fee && inst.interest_paid <= inst.interest);
                prop_assert!(inst.amount_paid <= inst.amount_due);
                prop_assert_eq!(inst.paid_total(), receivable_moved);
                // Principal is paid only once the charges are.
                prop_assert!(inst.amount_paid.is_zero() || inst.owed().late_fee.is_zero() && inst.owed().interest.is_zero());
                if inst.renegotiated() {
                    prop_assert_eq!(inst.status, InstallmentStatus::Renegotiated);
                } else {
                    prop_assert_eq!(inst.status == InstallmentStatus::Paid, inst.open_amount().is_zero());
                }
                if let Some(p) = &payment {
                    // What the payment holds applied is what it paid less what came back.
                    prop_assert_eq!(p.applied.total() + p.credited + p.reversed, p.amount);
                    prop_assert!(p.reversed >= Decimal::ZERO && p.reversed <= p.amount);
                    prop_assert!(p.credited >= Decimal::ZERO && p.refunded >= Decimal::ZERO);
                    prop_assert!(p.refunded <= p.reversed);
                }
            }
        }
    }
}
