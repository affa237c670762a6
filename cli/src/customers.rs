//! `paystream customers anonymise|reapply-anonymisations`: LGPD erasure after BACEN retention.
//!
//! A request is recorded at once and carried out only when five years have passed since the
//! customer's last contract closed, counted on the business date of the contract's currency
//! calendar. Carrying it out replaces the customer's name, CPF, email and phone by salted
//! SHA-256 hashes (in `paystream.anonymisation_execute`, a SECURITY DEFINER function: the jobs
//! role these commands run as can neither read nor write the personal columns itself), and
//! writes `CustomerAnonymised` through the outbox in the same transaction. The row, its
//! contracts, its ledger and its audit history survive unchanged otherwise.
//!
//! The salt of each request is kept in its row, so after a restore of an older backup
//! `reapply-anonymisations` brings every carried-out request back to the very same values
//! (and publishes nothing again: the fact was published when it happened).

use clap::Subcommand;
use time::{Date, Month};
use uuid::Uuid;

use paystream_common::config::DbPart;
use paystream_common::{now_ms, postgres, Config};
use paystream_processor::outbox::{self, event_id, OutboxRows};
use paystream_schemas::{EventType, PaymentEvent};

const INSERT_REQUEST: &str = include_str!("../sql/anonymisation_request_insert.sql");
const EXECUTE: &str = include_str!("../sql/anonymisation_execute.sql");
const RETENTION: &str = include_str!("../sql/anonymisation_retention_select.sql");
const PENDING: &str = include_str!("../sql/anonymisation_request_select_pending_eligible.sql");
const EXECUTED: &str = include_str!("../sql/anonymisation_request_select_executed.sql");

/// BACEN's retention of a credit relationship's records, in years after it closed.
pub const RETENTION_YEARS: i32 = 5;

/// Requests read per query by `--pending` and `reapply-anonymisations`; each request is
/// carried out in its own short transaction.
const BATCH: i64 = 1000;

/// `paystream customers` subcommands.
#[derive(Subcommand)]
pub enum Customers {
    /// Record an LGPD anonymisation request and carry it out if BACEN's retention has passed
    /// (else it is queued, and the reason printed); with --pending, carry out every queued
    /// request that has become eligible.
    Anonymise {
        /// The customer.
        #[arg(required_unless_present = "pending", conflicts_with = "pending")]
        id: Option<Uuid>,
        /// Carry out every queued request whose retention has passed.
        #[arg(long)]
        pending: bool,
        /// Who asked (a ticket, the data protection officer); by default the database role.
        #[arg(long)]
        requested_by: Option<String>,
    },
    /// Carry out every queued request whose retention has passed (same as `anonymise --pending`).
    ProcessAnonymisations,
    /// After a restore: re-apply every carried-out request with its stored salt.
    ReapplyAnonymisations,
}

/// What can go wrong carrying a request out.
#[derive(Debug, thiserror::Error)]
pub enum AnonymiseError {
    /// The id names no customer.
    #[error("no customer {0}")]
    UnknownCustomer(Uuid),
    /// The database refused or failed.
    #[error("database: {}", postgres::describe(.0))]
    Database(#[from] tokio_postgres::Error),
    /// The event could not be encoded.
    #[error("CustomerAnonymised event: {0}")]
    Event(#[from] paystream_processor::ApplyError),
    /// The function answered something this binary does not know (a newer migration).
    #[error("unexpected outcome {0:?} from paystream.anonymisation_execute")]
    Outcome(String),
}

/// A customer's retention, as `paystream.anonymisation_retention` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Contracts the customer has had.
    pub contracts: i64,
    /// Of them, not closed (or closed without a time).
    pub open_contracts: i64,
    /// The UTC date the last contract closed.
    pub last_closed_on: Option<Date>,
    /// The business date of the customer's calendars (the earliest, with several).
    pub business_date: Option<Date>,
    /// Contracts whose calendar has no business date yet.
    pub without_business_date: i64,
}

/// Whether a customer may be anonymised now, and if not, why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The retention has passed on the business date.
    Eligible,
    /// No contract, so no clock to count the retention on.
    NoContracts,
    /// Some contracts are still open.
    OpenContracts(i64),
    /// A calendar of the customer's contracts has no business date yet.
    NoBusinessDate,
    /// Closed, but the retention runs until `ends` and the business date is before it.
    Retained {
        /// The first business date on which the request can be carried out.
        ends: Date,
        /// The business date now.
        business_date: Date,
    },
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Eligible => write!(f, "BACEN retention has passed"),
            Verdict::NoContracts => write!(f, "the customer has no contract to count BACEN retention from"),
            Verdict::OpenContracts(n) => write!(f, "{n} contract(s) still open"),
            Verdict::NoBusinessDate => write!(f, "the contracts' calendar has no business date yet"),
            Verdict::Retained { ends, business_date } => write!(
                f,
                "BACEN retention runs until business date {ends} ({RETENTION_YEARS} years after the last contract \
                 closed; the business date is {business_date})"
            ),
        }
    }
}

/// The first date on which records of a relationship closed on `closed_on` may be
/// pseudonymised: `RETENTION_YEARS` years later, a 29 February falling to the 28th (as
/// PostgreSQL's `date + interval '5 years'` in `paystream.anonymisation_retention` does).
pub fn retention_ends(closed_on: Date) -> Date {
    let year = closed_on.year() + RETENTION_YEARS;
    closed_on.replace_year(year).unwrap_or_else(|_| {
        // Only 29 February has no counterpart in a year that is not a leap year; 28
        // February exists in every year, so the fallback cannot fail.
        debug_assert!(closed_on.month() == Month::February && closed_on.day() == 29);
        Date::from_calendar_date(year, Month::February, 28).unwrap_or(closed_on)
    })
}

/// The rule: every contract closed, a business date on the calendar, and the business date
/// on or after [`retention_ends`] of the last close.
pub fn verdict(r: &Retention) -> Verdict {
    if r.contracts == 0 {
        return Verdict::NoContracts;
    }
    if r.open_contracts > 0 {
        return Verdict::OpenContracts(r.open_contracts);
    }
    let (Some(closed), Some(business_date)) = (r.last_closed_on, r.business_date) else {
        return Verdict::NoBusinessDate;
    };
    if r.without_business_date > 0 {
        return Verdict::NoBusinessDate;
    }
    let ends = retention_ends(closed);
    if business_date >= ends {
        Verdict::Eligible
    } else {
        Verdict::Retained { ends, business_date }
    }
}

/// What became of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Carried out now; its event is in the outbox.
    Executed,
    /// Waiting for the retention to pass.
    Queued,
    /// Carried out before; the row held personal data again and was replaced as then.
    Reapplied,
    /// Carried out before and still anonymised.
    Unchanged,
}

impl Outcome {
    fn parse(s: &str) -> Result<Self, AnonymiseError> {
        Ok(match s {
            "executed" => Outcome::Executed,
            "queued" => Outcome::Queued,
            "reapplied" => Outcome::Reapplied,
            "unchanged" => Outcome::Unchanged,
            other => return Err(AnonymiseError::Outcome(other.to_owned())),
        })
    }
}

async fn retention(
    client: &impl tokio_postgres::GenericClient,
    customer: Uuid,
) -> Result<Option<(Retention, Option<String>)>, AnonymiseError> {
    let Some(row) = client.query_opt(RETENTION, &[&customer]).await? else {
        return Ok(None);
    };
    let r = Retention {
        contracts: row.get(0),
        open_contracts: row.get(1),
        last_closed_on: row.get(2),
        business_date: row.get(3),
        without_business_date: row.get(4),
    };
    Ok(Some((r, row.get(5))))
}

/// Carries one recorded request out (or re-applies it) in one transaction; on execution, its
/// `CustomerAnonymised` event goes into the outbox in the same transaction.
async fn execute(
    client: &mut tokio_postgres::Client,
    customer: Uuid,
    events_topic: &str,
) -> Result<Outcome, AnonymiseError> {
    let tx = client.transaction().await?;
    let outcome: String = tx.query_one(EXECUTE, &[&customer]).await?.get(0);
    let outcome = Outcome::parse(&outcome)?;
    if outcome == Outcome::Executed {
        let (r, currency) = retention(&tx, customer).await?.ok_or(AnonymiseError::UnknownCustomer(customer))?;
        let mut rows = OutboxRows::default();
        rows.push_event(
            events_topic,
            &PaymentEvent {
                event_id: event_id(EventType::CustomerAnonymised, &customer.to_string()),
                event_type: EventType::CustomerAnonymised,
                occurred_at_ms: now_ms(),
                aggregate_id: customer,
                provider: String::new(),
                payment_id: String::new(),
                installment_id: None,
                contract_id: None,
                amount: rust_decimal::Decimal::ZERO,
                // An eligible customer has contracts, so a currency; the fallback is the
                // calendar paystream runs on.
                currency: currency.unwrap_or_else(|| "BRL".to_owned()),
                reason: Some("LGPD request carried out after BACEN retention".to_owned()),
                allocation: None,
                business_date: r.business_date.map(|d| d.to_string()),
            },
        )?;
        let insert = tx.prepare(outbox::INSERT).await?;
        rows.insert(&tx, &insert).await?;
    }
    tx.commit().await?;
    if outcome == Outcome::Executed {
        paystream_processor::apply::wake_relay(client).await;
    }
    Ok(outcome)
}

/// Carries out every queued request that has become eligible; how many.
async fn process_pending(client: &mut tokio_postgres::Client, events_topic: &str) -> Result<usize, AnonymiseError> {
    let mut done = 0;
    loop {
        let ids: Vec<Uuid> = client.query(PENDING, &[&BATCH]).await?.iter().map(|r| r.get(0)).collect();
        let mut progress = false;
        for id in &ids {
            if execute(client, *id, events_topic).await? == Outcome::Executed {
                println!("customer {id}: anonymised");
                done += 1;
                progress = true;
            }
        }
        // A short batch was the last; no progress means what is left is not eligible after
        // all (a contract reopened meanwhile), and asking again would loop.
        if (ids.len() as i64) < BATCH || !progress {
            return Ok(done);
        }
    }
}

/// Runs a `customers` subcommand.
pub async fn run(config: &Config, command: Customers) -> anyhow::Result<()> {
    let mut client = postgres::connect(&config.postgres.as_part(DbPart::Jobs), "paystream-cli", None).await?;
    let topic = &config.kafka.events_topic;
    match command {
        Customers::Anonymise { id: Some(id), requested_by, .. } => {
            let Some((r, _)) = retention(&client, id).await? else {
                return Err(AnonymiseError::UnknownCustomer(id).into());
            };
            let recorded = client.execute(INSERT_REQUEST, &[&id, &requested_by]).await?;
            if recorded == 0 {
                println!("customer {id}: a request was recorded before");
            }
            match execute(&mut client, id, topic).await? {
                Outcome::Executed => println!("customer {id}: anonymised ({})", verdict(&r)),
                Outcome::Queued => println!("customer {id}: request queued, not carried out: {}", verdict(&r)),
                Outcome::Reapplied => println!("customer {id}: anonymised before; re-applied"),
                Outcome::Unchanged => println!("customer {id}: anonymised before"),
            }
        }
        Customers::Anonymise { id: None, .. } | Customers::ProcessAnonymisations => {
            let done = process_pending(&mut client, topic).await?;
            println!("{done} queued request(s) carried out");
        }
        Customers::ReapplyAnonymisations => {
            let (mut reapplied, mut unchanged) = (0usize, 0usize);
            let mut after = Uuid::nil();
            loop {
                let ids: Vec<Uuid> =
                    client.query(EXECUTED, &[&after, &BATCH]).await?.iter().map(|r| r.get(0)).collect();
                for id in &ids {
                    match execute(&mut client, *id, topic).await? {
                        Outcome::Reapplied => {
                            println!("customer {id}: re-applied");
                            reapplied += 1;
                        }
                        Outcome::Unchanged => unchanged += 1,
                        other => {
                            return Err(AnonymiseError::Outcome(format!("{other:?} for a carried-out request")).into())
                        }
                    }
                }
                match ids.last() {
                    Some(last) if ids.len() as i64 == BATCH => after = *last,
                    _ => break,
                }
            }
            println!("{reapplied} request(s) re-applied, {unchanged} already in place");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    fn closed(on: Date, business_date: Date) -> Retention {
        Retention {
            contracts: 2,
            open_contracts: 0,
            last_closed_on: Some(on),
            business_date: Some(business_date),
            without_business_date: 0,
        }
    }

    /// Five calendar years after the close, a 29 February falling to the 28th.
    #[test]
    fn retention_ends_five_years_after_the_close() {
        assert_eq!(retention_ends(date!(2020 - 06 - 15)), date!(2025 - 06 - 15));
        assert_eq!(retention_ends(date!(2020 - 02 - 29)), date!(2025 - 02 - 28));
        assert_eq!(retention_ends(date!(2019 - 02 - 28)), date!(2024 - 02 - 28));
        assert_eq!(retention_ends(date!(2023 - 12 - 31)), date!(2028 - 12 - 31));
    }

    /// Eligible from the retention's last day on the business date, not a day before; open
    /// contracts, no contracts or no business date are never eligible.
    #[test]
    fn eligible_only_on_or_after_the_end_of_retention() {
        let on = date!(2020 - 06 - 15);
        assert_eq!(
            verdict(&closed(on, date!(2025 - 06 - 14))),
            Verdict::Retained { ends: date!(2025 - 06 - 15), business_date: date!(2025 - 06 - 14) }
        );
        assert_eq!(verdict(&closed(on, date!(2025 - 06 - 15))), Verdict::Eligible);
        assert_eq!(verdict(&closed(on, date!(2031 - 01 - 01))), Verdict::Eligible);

        let open = Retention { open_contracts: 1, ..closed(on, date!(2031 - 01 - 01)) };
        assert_eq!(verdict(&open), Verdict::OpenContracts(1));
        let none = Retention {
            contracts: 0,
            open_contracts: 0,
            last_closed_on: None,
            business_date: None,
            without_business_date: 0,
        };
        assert_eq!(verdict(&none), Verdict::NoContracts);
        let no_date = Retention { business_date: None, ..closed(on, date!(2031 - 01 - 01)) };
        assert_eq!(verdict(&no_date), Verdict::NoBusinessDate);
        let one_calendar_missing = Retention { without_business_date: 1, ..closed(on, date!(2031 - 01 - 01)) };
        assert_eq!(verdict(&one_calendar_missing), Verdict::NoBusinessDate);
        assert!(verdict(&closed(on, date!(2025 - 06 - 14))).to_string().contains("2025-06-15"));
    }
}
