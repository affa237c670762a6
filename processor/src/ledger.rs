//! Double-entry journals. A journal is a set of postings in one currency whose signed
//! amounts (debits positive, credits negative) sum to zero; `check` refuses any other.
//!
//! Accounts: `provider_clearing:{provider}` (asset: money the provider owes us),
//! `receivable:{contract}` (asset: what the customer owes), `customer_credit:{customer}`
//! (liability: overpayments we hold), `disbursement:{currency}` (where principal went),
//! `penalty_income:{currency}` and `interest_income:{currency}` (what late fees and late
//! interest earn: charged against the contract's receivable).
//! No account has a balance row: balances are derived from the ledger (the
//! `account_balances` view), so no single row is updated by every payment.
//!
//! A journal is stored as transfers (migration 22): one row per amount moved from one
//! account to another, balanced by construction, each side naming its journal line. The
//! views `journal` and `posting` give the journals and their lines back.

use rust_decimal::Decimal;
use uuid::Uuid;

use crate::error::ApplyError;

/// Money the provider collected for us and has yet to settle.
pub fn provider_clearing(provider: &str) -> String {
    format!("provider_clearing:{provider}")
}

/// What the customer owes on a contract.
pub fn receivable(contract: Uuid) -> String {
    format!("receivable:{contract}")
}

/// What we owe the customer (overpayments, duplicate payments).
pub fn customer_credit(customer: Uuid) -> String {
    format!("customer_credit:{customer}")
}

/// Money a provider collected that could not be applied (unknown installment, wrong
/// currency, closed contract): a suspense liability, found by `account_balances`, returned
/// by a refund or applied by hand.
pub fn unapplied_cash(provider: &str) -> String {
    format!("unapplied_cash:{provider}")
}

/// Where a contract's principal went when it was disbursed.
pub fn disbursement(currency: &str) -> String {
    format!("disbursement:{currency}")
}

/// Late fees charged (income), per currency.
pub fn penalty_income(currency: &str) -> String {
    format!("penalty_income:{currency}")
}

/// Late interest charged (income), per currency.
pub fn interest_income(currency: &str) -> String {
    format!("interest_income:{currency}")
}

/// Discounts granted in renegotiations (an expense), per currency.
pub fn renegotiation_discount(currency: &str) -> String {
    format!("renegotiation_discount:{currency}")
}

/// One balanced journal in the making.
#[derive(Debug, Clone)]
pub struct Journal {
    /// Journal id.
    pub id: Uuid,
    /// `payment`, `reversal`, `origination`.
    pub kind: &'static str,
    /// What it is about (provider and payment id).
    pub reference: String,
    /// The one currency of its postings.
    pub currency: String,
    /// Postings: account and signed amount.
    pub postings: Vec<(String, Decimal)>,
}

impl Journal {
    /// An empty journal.
    pub fn new(kind: &'static str, reference: String, currency: &str) -> Self {
        // Time-ordered ids: journal and posting keys are then appended at the right edge of
        // their B-trees instead of scattered over them, which keeps the hot pages few as the
        // ledger grows.
        Self { id: Uuid::now_v7(), kind, reference, currency: currency.to_owned(), postings: Vec::with_capacity(3) }
    }

    /// Debits `account`; zero amounts are not posted.
    pub fn debit(&mut self, account: String, amount: Decimal) -> &mut Self {
        if !amount.is_zero() {
            self.postings.push((account, amount));
        }
        self
    }

    /// Credits `account`; zero amounts are not posted.
    pub fn credit(&mut self, account: String, amount: Decimal) -> &mut Self {
        if !amount.is_zero() {
            self.postings.push((account, -amount));
        }
        self
    }

    /// Refuses an empty or unbalanced journal, or one with a negative-direction mistake
    /// (every amount given to debit/credit must be positive).
    pub fn check(&self) -> Result<(), ApplyError> {
        let sum: Decimal = self.postings.iter().map(|(_, a)| *a).sum();
        let debits: Decimal = self.postings.iter().filter(|(_, a)| a.is_sign_positive()).map(|(_, a)| *a).sum();
        if self.postings.len() < 2 || !sum.is_zero() || debits.is_zero() {
            return Err(ApplyError::Unbalanced(format!("{} {} ({:?})", self.kind, self.reference, self.postings)));
        }
        Ok(())
    }
}

/// How a balanced journal's lines pair into transfers: debit lines and credit lines each in
/// line order, each covering an interval of its side's running total; every overlap of a
/// debit line's interval with a credit line's is one transfer of the overlap's length, as
/// (debit line, credit line, amount). A journal of two lines is one transfer. Migration 22
/// split the journals written before it the same way, so the two agree on old and new
/// journals. `postings` must balance (`Journal::check`).
pub fn pair_lines(postings: &[(String, Decimal)]) -> Vec<(usize, usize, Decimal)> {
    // Each line with what is left of it to pair.
    let mut debits: Vec<(usize, Decimal)> =
        postings.iter().enumerate().filter(|(_, (_, a))| a.is_sign_positive()).map(|(i, (_, a))| (i, *a)).collect();
    let mut credits: Vec<(usize, Decimal)> =
        postings.iter().enumerate().filter(|(_, (_, a))| a.is_sign_negative()).map(|(i, (_, a))| (i, -*a)).collect();
    let mut pairs = Vec::with_capacity(debits.len().max(credits.len()));
    let (mut d, mut c) = (0, 0);
    while d < debits.len() && c < credits.len() {
        let amount = debits[d].1.min(credits[c].1);
        pairs.push((debits[d].0, credits[c].0, amount));
        debits[d].1 -= amount;
        credits[c].1 -= amount;
        if debits[d].1.is_zero() {
            d += 1;
        }
        if credits[c].1.is_zero() {
            c += 1;
        }
    }
    pairs
}

/// Transfer rows in the column order of the batch insert (`transfer_insert_batch.sql`).
#[derive(Debug, Default)]
pub struct JournalRows {
    /// transfer.journal_id
    pub journal: Vec<Uuid>,
    /// transfer.seq: the transfer's number within its journal.
    pub seq: Vec<i16>,
    /// transfer.kind
    pub kind: Vec<&'static str>,
    /// transfer.reference
    pub reference: Vec<String>,
    /// transfer.debit_line
    pub debit_line: Vec<i16>,
    /// transfer.debit_account
    pub debit_account: Vec<String>,
    /// transfer.credit_line
    pub credit_line: Vec<i16>,
    /// transfer.credit_account
    pub credit_account: Vec<String>,
    /// transfer.currency
    pub currency: Vec<String>,
    /// transfer.amount
    pub amount: Vec<Decimal>,
}

impl JournalRows {
    /// Adds a journal, as its transfers, after checking it balances.
    pub fn push(&mut self, journal: Journal) -> Result<Uuid, ApplyError> {
        journal.check()?;
        for (seq, (debit, credit, amount)) in pair_lines(&journal.postings).into_iter().enumerate() {
            // A journal has a handful of lines; more than i16::MAX would be refused long before.
            self.journal.push(journal.id);
            self.seq.push(seq as i16);
            self.kind.push(journal.kind);
            self.reference.push(journal.reference.clone());
            self.debit_line.push(debit as i16);
            self.debit_account.push(journal.postings[debit].0.clone());
            self.credit_line.push(credit as i16);
            self.credit_account.push(journal.postings[credit].0.clone());
            self.currency.push(journal.currency.clone());
            self.amount.push(amount);
        }
        Ok(journal.id)
    }

    /// Whether there is nothing to insert.
    pub fn is_empty(&self) -> bool {
        self.journal.is_empty()
    }

    /// The parameters of `transfer_insert_batch.sql`, in its order.
    pub fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 10] {
        [
            &self.journal,
            &self.seq,
            &self.kind,
            &self.reference,
            &self.debit_line,
            &self.debit_account,
            &self.credit_line,
            &self.credit_account,
            &self.currency,
            &self.amount,
        ]
    }

    /// Inserts the transfers, in one statement.
    pub async fn insert<C: tokio_postgres::GenericClient>(&self, client: &C) -> Result<(), tokio_postgres::Error> {
        client.execute(INSERT, &self.params()).await?;
        Ok(())
    }
}

/// The batch insert of transfers.
pub const INSERT: &str = include_str!("../sql/transfer_insert_batch.sql");

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    /// A payment with overpayment balances; an unbalanced or one-sided journal is refused.
    #[test]
    fn journals_must_balance() {
        let mut j = Journal::new("payment", "p/1".into(), "BRL");
        j.debit("a".into(), d("10.00")).credit("b".into(), d("7.00")).credit("c".into(), d("3.00"));
        assert!(j.check().is_ok());
        let mut rows = JournalRows::default();
        rows.push(j).unwrap();
        assert_eq!(rows.amount.iter().copied().sum::<Decimal>(), d("10.00"));

        let mut j = Journal::new("payment", "p/2".into(), "BRL");
        j.debit("a".into(), d("10.00")).credit("b".into(), d("9.99"));
        assert!(matches!(j.check(), Err(ApplyError::Unbalanced(_))));
        let mut j = Journal::new("payment", "p/3".into(), "BRL");
        j.debit("a".into(), d("0"));
        assert!(j.check().is_err());
    }

    /// A journal's transfers give back each of its lines: a line's amount is the sum of the
    /// transfers naming it on its side, and a two-line journal is one transfer.
    #[test]
    fn journals_split_into_transfers_that_give_back_every_line() {
        let lines = |amounts: &[&str]| -> Vec<(String, Decimal)> {
            amounts.iter().enumerate().map(|(i, a)| (format!("acct{i}"), d(a))).collect()
        };
        assert_eq!(pair_lines(&lines(&["-25.00", "25.00"])), vec![(1, 0, d("25.00"))]);
        // A payment partly kept as credit: clearing debited, receivable and credit credited.
        assert_eq!(pair_lines(&lines(&["100.00", "-70.00", "-30.00"])), vec![(0, 1, d("70.00")), (0, 2, d("30.00"))]);
        // Overlapping intervals on both sides.
        assert_eq!(
            pair_lines(&lines(&["60.00", "-50.00", "40.00", "-50.00"])),
            vec![(0, 1, d("50.00")), (0, 3, d("10.00")), (2, 3, d("40.00"))]
        );
    }

    proptest::proptest! {
        #[test]
        fn every_balanced_journal_splits_into_its_lines(
            debits in proptest::collection::vec(1i64..1_000_000, 1..6),
            cuts in proptest::collection::vec(0u64..1_000, 0..5),
        ) {
            // Credits: the debits' total cut at random points, so both sides have the same total.
            let total: i64 = debits.iter().sum();
            let mut points: Vec<i64> = cuts.iter().map(|c| (*c as i64 * total) / 1_000).filter(|p| *p > 0 && *p < total).collect();
            points.sort_unstable();
            points.dedup();
            points.push(total);
            let mut journal = Journal::new("payment", "p".into(), "BRL");
            let mut last = 0;
            for (i, p) in points.iter().enumerate() {
                journal.credit(format!("c{i}"), Decimal::new(p - last, 2));
                last = *p;
            }
            for (i, a) in debits.iter().enumerate() {
                journal.debit(format!("d{i}"), Decimal::new(*a, 2));
            }
            journal.check().unwrap();
            let pairs = pair_lines(&journal.postings);
            let mut back = vec![Decimal::ZERO; journal.postings.len()];
            for (debit, credit, amount) in &pairs {
                proptest::prop_assert!(amount.is_sign_positive() && !amount.is_zero());
                back[*debit] += *amount;
                back[*credit] -= *amount;
            }
            let lines: Vec<Decimal> = journal.postings.iter().map(|(_, a)| *a).collect();
            proptest::prop_assert_eq!(back, lines);
            // In (debit line, credit line) order, as migration 22 numbers them.
            proptest::prop_assert!(pairs.windows(2).all(|w| (w[0].0, w[0].1) < (w[1].0, w[1].1)));
        }
    }
}
