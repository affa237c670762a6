//! The credit lifecycle's speed: accrual of installments/s over a book of
//! `Sizes::lifecycle_installments` installments of which a tenth is overdue, alone and while
//! the processor applies payments at its full rate, and the processor's rate during the
//! accrual as a share of its rate alone (both measured here, one after the other).
//!
//! Each run seeds its books under two calendars of its own (three-letter codes drawn at
//! random among those no contract uses yet), one accrued alone and one while the processor
//! runs, so that a run's accrual charges a first late fee and interest on every overdue
//! installment, as the daily run after a due date does. The processor's payments go to
//! installments of their own: what is measured is the two sharing the machine and the
//! database, not row contention (the tests race them on the same rows for correctness).

use std::sync::Arc;
use std::time::Instant;

use rand::Rng as _;
use serde::{Deserialize, Serialize};
use time::macros::date;

use paystream_common::{postgres, Config};
use paystream_processor::accrual::{self, AccrualOptions, Progress};
use paystream_processor::credit::Terms;

use super::error::BenchError;
use super::processor::processor;
use super::services::{db, unique};

/// Installments per contract: the first is overdue on the business date, the rest not.
const PER_CONTRACT: i32 = 10;

/// What the lifecycle part measured.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct LifecycleRun {
    /// Installments in each calendar's book.
    pub installments: u64,
    /// Of which overdue (accrued).
    pub overdue: u64,
    /// Installments/s marked overdue by `business-date advance`.
    pub mark_per_s: f64,
    /// Accrual installments/s alone.
    pub accrual_alone_per_s: f64,
    /// Accrual installments/s while the processor ran.
    pub accrual_during_per_s: f64,
    /// Processor payments/s alone, just before.
    pub processor_alone_per_s: f64,
    /// Processor payments/s while accrual ran.
    pub processor_during_per_s: f64,
}

async fn book(config: &Config, calendar: &str, contracts: i32) -> Result<(), BenchError> {
    let client = db(config).await?;
    let namespace = format!("bench-lifecycle-{calendar}-{}", uuid::Uuid::new_v4().simple());
    client.execute(include_str!("../../sql/bench_lifecycle_customers.sql"), &[&contracts, &namespace]).await?;
    client
        .execute(
            include_str!("../../sql/bench_lifecycle_contracts.sql"),
            &[&contracts, &namespace, &calendar, &PER_CONTRACT],
        )
        .await?;
    client
        .execute(
            include_str!("../../sql/bench_lifecycle_installments.sql"),
            &[&contracts, &namespace, &calendar, &PER_CONTRACT],
        )
        .await?;
    client.execute("ANALYZE paystream.installment", &[]).await?;
    Ok(())
}

/// Two calendar codes no contract in the database uses yet: a code drawn again in a later
/// run on the same database would add its book to an earlier run's (measured: a reused code
/// held 2,000,000 installments where the part seeds 1,000,000).
async fn fresh_calendars(config: &Config) -> Result<(String, String), BenchError> {
    let client = db(config).await?;
    let taken = client.prepare(include_str!("../../sql/bench_calendar_taken.sql")).await?;
    let mut codes: Vec<String> = Vec::with_capacity(2);
    // 676 codes: a few thousand draws find two free ones unless nearly all are taken.
    for _ in 0..4096 {
        let code = {
            let mut rng = rand::rng();
            let letter = |rng: &mut rand::rngs::ThreadRng| char::from(b'A' + rng.random_range(0..26u8));
            format!("Q{}{}", letter(&mut rng), letter(&mut rng))
        };
        if !codes.contains(&code) && !client.query_one(&taken, &[&code]).await?.get::<_, bool>(0) {
            codes.push(code);
        }
        if let [alone, during] = &codes[..] {
            return Ok((alone.clone(), during.clone()));
        }
    }
    Err(BenchError::Incomplete(
        "no two free calendar codes Q?? for the lifecycle part: the database holds earlier runs' books under nearly all of them".into(),
    ))
}

/// Runs the part: `installments` per calendar, `payments` for each processor run.
pub async fn lifecycle(
    config: &Config,
    installments: u64,
    payments: u64,
    spread: i32,
) -> Result<LifecycleRun, BenchError> {
    let step = |s: &str| eprintln!("[bench] {s}");
    let config = unique(config, "lifecycle");
    paystream_common::kafka::ensure_topics(&config.kafka, std::time::Duration::from_secs(30)).await?;
    let contracts = i32::try_from(installments / PER_CONTRACT as u64).unwrap_or(i32::MAX).max(1);
    let (alone, during) = fresh_calendars(&config).await?;
    step(&format!("lifecycle: seeding {} installments in calendars {alone} and {during}", contracts * PER_CONTRACT));
    book(&config, &alone, contracts).await?;
    book(&config, &during, contracts).await?;
    let mut pg = config.postgres.clone();
    pg.pool_size = pg.pool_size.max(8);
    let pool = postgres::pool(&pg)?;
    // 2026-02-20: the first installment of each contract (due 2026-02-10) is overdue.
    let day = date!(2026 - 02 - 20);
    let started = Instant::now();
    let marked = paystream_processor::lifecycle::advance(&pool, &alone, Some(day), &config.kafka.events_topic).await?;
    let mark_per_s = marked.marked as f64 / started.elapsed().as_secs_f64().max(1e-9);
    paystream_processor::lifecycle::advance(&pool, &during, Some(day), &config.kafka.events_topic).await?;
    let options = |calendar: &str| AccrualOptions {
        calendar: calendar.to_owned(),
        business_date: None,
        workers: config.credit.accrual_workers,
        chunk: config.credit.accrual_chunk,
        default_terms: Terms {
            late_fee_rate: config.credit.late_fee_rate,
            monthly_interest_rate: config.credit.monthly_interest_rate,
        },
        events_topic: config.kafka.events_topic.clone(),
    };

    step("lifecycle: accrual alone");
    let run = accrual::run(&pool, &options(&alone), Arc::new(Progress::default())).await?;
    let accrual_alone_per_s = run.installments as f64 / run.elapsed.as_secs_f64().max(1e-9);
    step("lifecycle: processor alone");
    let processor_alone = processor(&config, payments, spread, config.processor.batch_max).await?;
    step("lifecycle: accrual and processor together");
    let during_options = options(&during);
    let (accrued, applied) = tokio::join!(
        accrual::run(&pool, &during_options, Arc::new(Progress::default())),
        processor(&config, payments, spread, config.processor.batch_max)
    );
    let (accrued, applied) = (accrued?, applied?);
    let accrual_during_per_s = accrued.installments as f64 / accrued.elapsed.as_secs_f64().max(1e-9);
    let client = db(&config).await?;
    client.execute(include_str!("../../sql/bench_outbox_delete_topic.sql"), &[&config.kafka.events_topic]).await?;
    Ok(LifecycleRun {
        installments: (contracts * PER_CONTRACT) as u64,
        overdue: run.installments,
        mark_per_s,
        accrual_alone_per_s,
        accrual_during_per_s,
        processor_alone_per_s: processor_alone.payments_per_s,
        processor_during_per_s: applied.payments_per_s,
    })
}
