//! Double-entry journals. A journal is a set of postings in one currency whose signed
//! amounts (debits positive, credits negative) sum to zero; `check` refuses any other.
//!
//! Accounts: `provider_clearing:{provider}` (asset: money the provider owes us),
//! `receivable:{contract}` (asset: what the customer owes), `customer_credit:{customer}`
//! (liability: overpayments we hold), `disbursement:{currency}` (where principal went),
//! `penalty_income:{currency}` and `interest_income:{currency}` (what late fees and late
//! interest earn: charged against the contract's receivable).
//! No account has a balance row: balances are derived from postings (the
//! `account_balances` view), so no single row is updated by every payment.

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

/// Journal rows in the column order of the batch inserts.
#[derive(Debug, Default)]
pub struct JournalRows {
    /// journal.id
    pub ids: Vec<Uuid>,
    /// journal.kind
    pub kinds: Vec<String>,
    /// journal.reference
    pub references: Vec<String>,
    /// posting.journal_id
    pub posting_journal: Vec<Uuid>,
    /// posting.line
    pub posting_line: Vec<i16>,
    /// posting.account
    pub posting_account: Vec<String>,
    /// posting.currency
    pub posting_currency: Vec<String>,
    /// posting.amount
    pub posting_amount: Vec<Decimal>,
}

impl JournalRows {
    /// Adds a journal after checking it balances.
    pub fn push(&mut self, journal: Journal) -> Result<Uuid, ApplyError> {
        journal.check()?;
        self.ids.push(journal.id);
        self.kinds.push(journal.kind.to_owned());
        self.references.push(journal.reference);
        for (line, (account, amount)) in journal.postings.into_iter().enumerate() {
            self.posting_journal.push(journal.id);
            // A journal has a handful of lines; more than i16::MAX would fail `check` long before.
            self.posting_line.push(line as i16);
            self.posting_account.push(account);
            self.posting_currency.push(journal.currency.clone());
            self.posting_amount.push(amount);
        }
        Ok(journal.id)
    }

    /// Whether there is nothing to insert.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Inserts the journals, then their postings (one statement for all of a journal's
    /// postings: the per-statement balance check sees each journal whole).
    pub async fn insert<C: tokio_postgres::GenericClient>(&self, client: &C) -> Result<(), tokio_postgres::Error> {
        client
            .execute(include_str!("../sql/journal_insert_batch.sql"), &[&self.ids, &self.kinds, &self.references])
            .await?;
        client
            .execute(
                include_str!("../sql/posting_insert_batch.sql"),
                &[
                    &self.posting_journal,
                    &self.posting_line,
                    &self.posting_account,
                    &self.posting_currency,
                    &self.posting_amount,
                ],
            )
            .await?;
        Ok(())
    }
}

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
        assert_eq!(rows.posting_amount.iter().copied().sum::<Decimal>(), Decimal::ZERO);

        let mut j = Journal::new("payment", "p/2".into(), "BRL");
        j.debit("a".into(), d("10.00")).credit("b".into(), d("9.99"));
        assert!(matches!(j.check(), Err(ApplyError::Unbalanced(_))));
        let mut j = Journal::new("payment", "p/3".into(), "BRL");
        j.debit("a".into(), d("0"));
        assert!(j.check().is_err());
    }
}
