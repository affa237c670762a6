//! `paystream business-date` and `paystream accrue`: the credit lifecycle's commands.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use time::Date;

use paystream_common::config::DbPart;
use paystream_common::{postgres, Config};
use paystream_processor::accrual::{self, AccrualOptions, Progress};
use paystream_processor::credit::Terms;
use paystream_processor::lifecycle;

/// `paystream business-date` subcommands.
#[derive(Subcommand)]
pub enum BusinessDate {
    /// Move the business date (by default to the next business day) and mark what it leaves
    /// unpaid past due as overdue, each installment once.
    Advance {
        /// The calendar (a currency code).
        #[arg(long, default_value = "BRL")]
        calendar: String,
        /// The new business date (YYYY-MM-DD); required the first time.
        #[arg(long, value_parser = parse_date)]
        to: Option<Date>,
    },
    /// Print the business date and the delinquency buckets.
    Show {
        /// The calendar (a currency code).
        #[arg(long, default_value = "BRL")]
        calendar: String,
    },
}

/// `paystream accrue`.
#[derive(Args)]
pub struct AccrueArgs {
    /// The calendar (a currency code).
    #[arg(long, default_value = "BRL")]
    calendar: String,
    /// Charge through this date (YYYY-MM-DD); by default the calendar's business date.
    #[arg(long, value_parser = parse_date)]
    business_date: Option<Date>,
    /// Writers, each on its own connection (default: credit.accrual_workers).
    #[arg(long)]
    workers: Option<usize>,
    /// No progress bar (for logs and scripts).
    #[arg(long)]
    quiet: bool,
}

/// `paystream renegotiate`.
#[derive(Args)]
pub struct RenegotiateArgs {
    /// The contract whose unpaid installments are replaced.
    #[arg(long)]
    contract: uuid::Uuid,
    /// Installments of the new schedule (1 to 480).
    #[arg(long)]
    installments: u32,
    /// The first new installment's due date (YYYY-MM-DD); the others monthly after it.
    #[arg(long, value_parser = parse_date)]
    first_due: Date,
    /// Taken off what is owed (principal and charges), e.g. 150.00.
    #[arg(long, default_value = "0")]
    discount: rust_decimal::Decimal,
}

/// Runs `renegotiate`.
pub async fn renegotiate(config: &Config, args: RenegotiateArgs) -> anyhow::Result<()> {
    let pool = postgres::pool(&config.postgres.as_part(DbPart::Jobs))?;
    let ask = paystream_processor::renegotiation::Renegotiation {
        contract: args.contract,
        installments: args.installments,
        first_due: args.first_due,
        discount: args.discount,
    };
    let done = paystream_processor::renegotiation::renegotiate(&pool, &ask, &config.kafka.events_topic).await?;
    println!(
        "contract {} renegotiated into {}: {} installments owing {} replaced by {} installments totalling {} \
         (discount {})",
        args.contract,
        done.new_contract,
        done.replaced,
        done.outstanding,
        done.schedule.len(),
        done.total,
        args.discount
    );
    for (due, amount) in &done.schedule {
        println!("  {due}  {amount}");
    }
    Ok(())
}

pub(crate) fn parse_date(s: &str) -> Result<Date, String> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    Date::parse(s, &format).map_err(|e| format!("{s:?} is not a date (YYYY-MM-DD): {e}"))
}

/// Runs a `business-date` subcommand.
pub async fn business_date(config: &Config, command: BusinessDate) -> anyhow::Result<()> {
    let pool = postgres::pool(&config.postgres.as_part(DbPart::Jobs))?;
    match command {
        BusinessDate::Advance { calendar, to } => {
            let done = lifecycle::advance(&pool, &calendar, to, &config.kafka.events_topic).await?;
            let from = done.from.map_or_else(|| "none".to_owned(), |d| d.to_string());
            println!(
                "business date {calendar}: {from} -> {}; due on or before {} is overdue: {} installments marked \
                 overdue ({} principal)",
                done.to, done.cutoff, done.marked, done.principal
            );
        }
        BusinessDate::Show { calendar } => {
            let client = pool.get().await?;
            let Some(day) = lifecycle::business_date(&**client, &calendar).await? else {
                println!("calendar {calendar}: no business date yet");
                return Ok(());
            };
            println!("business date {calendar}: {day}");
            let rows = client
                .query(
                    "SELECT bucket, count(*), sum(principal_due), sum(late_fee_due), sum(interest_due), sum(total_due)
                     FROM paystream.delinquency WHERE currency = $1 GROUP BY bucket ORDER BY min(days_past_due)",
                    &[&calendar],
                )
                .await?;
            println!(
                "{:<6} {:>10} {:>16} {:>14} {:>14} {:>16}",
                "bucket", "overdue", "principal", "late fees", "interest", "total"
            );
            for r in rows {
                let d = |i: usize| r.get::<_, rust_decimal::Decimal>(i);
                println!(
                    "{:<6} {:>10} {:>16} {:>14} {:>14} {:>16}",
                    r.get::<_, String>(0),
                    r.get::<_, i64>(1),
                    d(2),
                    d(3),
                    d(4),
                    d(5)
                );
            }
        }
    }
    Ok(())
}

/// Runs `accrue`.
pub async fn accrue(config: &Config, args: AccrueArgs) -> anyhow::Result<()> {
    let workers = args.workers.unwrap_or(config.credit.accrual_workers);
    let mut pg = config.postgres.as_part(DbPart::Jobs);
    // The reader's connection and the writers' each.
    pg.pool_size = pg.pool_size.max(workers + 1);
    let pool = postgres::pool(&pg)?;
    let options = AccrualOptions {
        calendar: args.calendar,
        business_date: args.business_date,
        workers,
        chunk: config.credit.accrual_chunk,
        default_terms: Terms {
            late_fee_rate: config.credit.late_fee_rate,
            monthly_interest_rate: config.credit.monthly_interest_rate,
        },
        events_topic: config.kafka.events_topic.clone(),
    };
    let progress = Arc::new(Progress::default());
    let bar = (!args.quiet).then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("accrual {bar:40} {pos}/{len} installments {per_sec} {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let ticker = bar.clone().map(|bar| {
        let progress = progress.clone();
        tokio::spawn(async move {
            loop {
                bar.set_length(progress.total.load(Ordering::Relaxed));
                bar.set_position(progress.done.load(Ordering::Relaxed));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    });
    let result = accrual::run(&pool, &options, progress).await;
    if let Some(ticker) = ticker {
        ticker.abort();
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let s = result?;
    let secs = s.elapsed.as_secs_f64().max(1e-9);
    println!(
        "accrual {} through {}: {} installments charged in {:.1} s ({:.0}/s), late fees {}, interest {}, {} \
         recomputed after a concurrent payment; the date in all: {} installments, late fees {}, interest {}",
        options.calendar,
        s.business_date,
        s.installments,
        secs,
        s.installments as f64 / secs,
        s.late_fees,
        s.interest,
        s.conflicts,
        s.date_installments,
        s.date_late_fees,
        s.date_interest
    );
    Ok(())
}
