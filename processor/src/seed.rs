//! Deterministic demo and load-test data: customers, their credit contracts, the contracts'
//! installments, and the origination journal of each contract. Idempotent: seeding twice
//! with the same sizes changes nothing.

use crate::error::ApplyError;

/// How much to seed.
#[derive(Debug, Clone, Copy)]
pub struct SeedSize {
    /// Customers.
    pub customers: i32,
    /// Contracts per customer.
    pub contracts_per_customer: i32,
    /// Installments per contract.
    pub installments_per_contract: i32,
}

impl SeedSize {
    /// Installments in all.
    pub fn installments(&self) -> i64 {
        i64::from(self.customers) * i64::from(self.contracts_per_customer) * i64::from(self.installments_per_contract)
    }
}

/// The seed's own bound on each of its statements.
const SEED_STATEMENT_TIMEOUT: &str = "SET LOCAL statement_timeout = '1h'";

/// Seeds `size` in `currency` in one transaction.
pub async fn seed(client: &mut tokio_postgres::Client, size: SeedSize, currency: &str) -> Result<(), ApplyError> {
    let tx = client.transaction().await?;
    // The session's statement_timeout bounds the services' statements (30 s by default); a
    // seed is a bulk load the operator sized, and 720,000 installments took 53 s here. It is
    // bounded by its size, and by an hour.
    tx.batch_execute(SEED_STATEMENT_TIMEOUT).await?;
    let (c, k, n) = (size.customers, size.contracts_per_customer, size.installments_per_contract);
    tx.execute(include_str!("../sql/seed_customers.sql"), &[&c]).await?;
    tx.execute(include_str!("../sql/seed_contracts.sql"), &[&c, &k, &n, &currency]).await?;
    tx.execute(include_str!("../sql/seed_installments.sql"), &[&c, &k, &n, &currency]).await?;
    tx.execute(include_str!("../sql/seed_origination_journals.sql"), &[&c, &k]).await?;
    tx.commit().await?;
    Ok(())
}
