//! The credit lifecycle against the real servers: the business date makes installments
//! overdue once; accrual charges late fees and interest once per date, catches up missed days,
//! survives kill -9 and races the processor without a lost update; payments pay charges first
//! and their reversals take back exactly their split. Each test asserts counts and sums, and
//! that the books, the charges and the installments agree.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use uuid::Uuid;

use paystream_schemas::{decode, EventType, PaymentEvent};

use crate::harness::{cli, Pipeline};

const WAIT: Duration = Duration::from_secs(120);

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

async fn scalar<T: for<'a> tokio_postgres::types::FromSql<'a>>(p: &Pipeline, sql: &str) -> T {
    p.db.query_one(sql, &[]).await.unwrap().get(0)
}

fn run(p: &Pipeline, args: &[&str]) -> String {
    let (ok, out, err) = cli(&p.config, args);
    assert!(ok, "paystream {args:?} failed: {out}\n{err}");
    out
}

/// A paystream-format webhook (`payment.succeeded` or `payment.refunded`), signed and posted.
async fn post(p: &Pipeline, kind: &str, webhook: &str, payment: &str, installment: Uuid, amount: &str) {
    let body = serde_json::to_vec(&serde_json::json!({
        "id": webhook, "type": kind, "created_at": "2026-11-25T10:00:00Z",
        "data": {"payment_id": payment, "installment_id": installment.to_string(), "amount": amount,
                 "currency": "BRL", "rail": "pix"}
    }))
    .unwrap();
    let (status, text) = p.post_signed("demo-standard", webhook, &body).await;
    assert_eq!(status, 202, "{text}");
}

/// The books and the lifecycle's state agree:
/// - the trial balance balances;
/// - each installment's charges equal its rows in `paystream.charge`, and the income accounts
///   hold exactly what was charged;
/// - per contract, what its installments say was paid (principal and charges) equals what
///   payment, reversal and reinstatement journals moved off its receivable, and what it was
///   charged equals what charge journals moved onto it.
async fn assert_books_agree(p: &Pipeline) {
    let unbalanced: i64 = scalar(p, "SELECT count(*) FROM paystream.trial_balance WHERE debits <> credits").await;
    assert_eq!(unbalanced, 0, "trial balance");
    let charges_disagree: i64 = scalar(
        p,
        "SELECT count(*) FROM paystream.installment i
         LEFT JOIN (SELECT installment_id,
                           sum(amount) FILTER (WHERE kind = 'late_fee') AS fee,
                           sum(amount) FILTER (WHERE kind = 'interest') AS interest
                    FROM paystream.charge GROUP BY installment_id) c ON c.installment_id = i.id
         WHERE i.late_fee <> coalesce(c.fee, 0) OR i.interest <> coalesce(c.interest, 0)",
    )
    .await;
    assert_eq!(charges_disagree, 0, "installments' charges equal their charge rows");
    let income: Decimal = scalar(
        p,
        "SELECT coalesce(-sum(balance), 0) FROM paystream.account_balances
         WHERE account LIKE 'penalty_income:%' OR account LIKE 'interest_income:%'",
    )
    .await;
    let charged: Decimal = scalar(p, "SELECT coalesce(sum(late_fee + interest), 0) FROM paystream.installment").await;
    assert_eq!(income, charged, "income accounts hold what was charged");
    let disagree: i64 = scalar(
        p,
        "WITH moved AS (
             SELECT po.account,
                    -sum(po.amount) FILTER (WHERE j.kind IN ('payment', 'reversal', 'reinstatement')) AS paid,
                    sum(po.amount) FILTER (WHERE j.kind IN ('late_fee', 'interest')) AS charged
             FROM paystream.posting po JOIN paystream.journal j ON j.id = po.journal_id
             WHERE po.account LIKE 'receivable:%' GROUP BY po.account)
         SELECT count(*) FROM (
             SELECT c.id, sum(i.amount_paid + i.late_fee_paid + i.interest_paid) AS paid,
                    sum(i.late_fee + i.interest) AS charged
             FROM paystream.contract c JOIN paystream.installment i ON i.contract_id = c.id GROUP BY c.id) x
         LEFT JOIN moved m ON m.account = 'receivable:' || x.id
         WHERE x.paid <> coalesce(m.paid, 0) OR x.charged <> coalesce(m.charged, 0)",
    )
    .await;
    assert_eq!(disagree, 0, "installments' paid and charged amounts equal what the journals moved");
}

fn events(records: &[crate::harness::Record]) -> Vec<PaymentEvent> {
    records.iter().map(|r| decode::<PaymentEvent>(&r.payload).unwrap()).collect()
}

fn count(events: &[PaymentEvent], t: EventType) -> usize {
    events.iter().filter(|e| e.event_type == t).count()
}

/// Four installments fall due on 2026-02-10 (a Tuesday). On the 11th they are overdue and
/// accrual charges 2% and one day of interest; a second run for the date charges nothing; a
/// week later the missed days are one charge each. A payment then pays the late fee, the
/// interest and principal in that order and its event says so; its refund takes back exactly
/// that split; an installment paid in full with its charges is paid.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overdue_accrual_once_catch_up_and_payments_pay_charges_first() {
    let p = Pipeline::start().await;
    let first: Vec<(Uuid, Decimal)> =
        p.db.query("SELECT id, amount_due FROM paystream.installment WHERE seq = 1 ORDER BY id", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
    assert_eq!(first.len(), 4);

    // Due Tuesday the 10th: still payable that day, overdue on the 11th; nothing due later is.
    let out = run(&p, &["business-date", "advance", "--to", "2026-02-10"]);
    assert!(out.contains("0 installments marked overdue"), "{out}");
    let out = run(&p, &["business-date", "advance"]);
    assert!(out.contains("-> 2026-02-11") && out.contains("4 installments marked overdue"), "{out}");
    let out = run(&p, &["business-date", "advance", "--to", "2026-02-11"]);
    assert!(out.contains("0 installments marked overdue"), "the same date again marks nothing: {out}");
    let (ok, _, err) = cli(&p.config, &["business-date", "advance", "--to", "2026-02-09"]);
    assert!(!ok && err.contains("never moves back"), "{err}");
    let (ok, _, err) = cli(&p.config, &["business-date", "advance", "--to", "2026-02-14"]);
    assert!(!ok && err.contains("not a business day"), "{err}");

    run(&p, &["accrue", "--quiet"]);
    let fee: Decimal = scalar(&p, "SELECT sum(late_fee) FROM paystream.installment").await;
    let interest: Decimal = scalar(&p, "SELECT sum(interest) FROM paystream.installment").await;
    let expect_fee: Decimal = first.iter().map(|(_, due)| (due * d("0.02")).round_dp(2)).sum();
    let expect_day: Decimal = first.iter().map(|(_, due)| (due * d("0.01") / d("30")).round_dp(2)).sum();
    assert_eq!((fee, interest), (expect_fee, expect_day));
    // The same date again: nothing more.
    let out = run(&p, &["accrue", "--quiet"]);
    assert!(out.contains(": 0 installments charged"), "{out}");
    let again: Decimal = scalar(&p, "SELECT sum(late_fee + interest) FROM paystream.installment").await;
    assert_eq!(again, fee + interest);

    // Five business days and two weekend days go by without accrual (12th to 18th): one
    // charge each covers the 7 days, and the fee is not charged again.
    run(&p, &["business-date", "advance", "--to", "2026-02-18"]);
    run(&p, &["accrue", "--quiet"]);
    let week: Vec<(i32, Decimal)> =
        p.db.query(
            "SELECT days, amount FROM paystream.charge WHERE business_date = '2026-02-18' AND kind = 'interest'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(week.len(), 4);
    assert!(week.iter().all(|(days, _)| *days == 7), "{week:?}");
    let expect_week: Decimal = first.iter().map(|(_, due)| (due * d("0.01") * d("7") / d("30")).round_dp(2)).sum();
    assert_eq!(week.iter().map(|(_, a)| *a).sum::<Decimal>(), expect_week);
    let late_fees: i64 = scalar(&p, "SELECT count(*) FROM paystream.charge WHERE kind = 'late_fee'").await;
    assert_eq!(late_fees, 4, "the late fee once per installment");

    // A partial payment pays the fee, then the interest, then principal.
    let (a, due_a) = first[0];
    let row =
        p.db.query_one("SELECT late_fee, interest FROM paystream.installment WHERE id = $1", &[&a]).await.unwrap();
    let (fee_a, interest_a): (Decimal, Decimal) = (row.get(0), row.get(1));
    post(&p, "payment.succeeded", "w-part", "pay-part", a, "50.00").await;
    // The second installment is paid in full, charges included.
    let (b, due_b) = first[1];
    let owed_b: Decimal =
        p.db.query_one("SELECT amount_due + late_fee + interest FROM paystream.installment WHERE id = $1", &[&b])
            .await
            .unwrap()
            .get(0);
    post(&p, "payment.succeeded", "w-full", "pay-full", b, &owed_b.to_string()).await;
    assert_eq!(p.wait_count("SELECT count(*) FROM paystream.payment", 2, WAIT).await, 2);
    let row =
        p.db.query_one(
            "SELECT late_fee_paid, interest_paid, amount_paid, status FROM paystream.installment WHERE id = $1",
            &[&a],
        )
        .await
        .unwrap();
    let paid_a = (row.get::<_, Decimal>(0), row.get::<_, Decimal>(1), row.get::<_, Decimal>(2));
    assert_eq!(paid_a, (fee_a, interest_a, d("50.00") - fee_a - interest_a));
    assert_eq!(row.get::<_, String>(3), "overdue", "partly paid, still overdue");
    let status_b: String =
        p.db.query_one("SELECT status FROM paystream.installment WHERE id = $1", &[&b]).await.unwrap().get(0);
    assert_eq!(status_b, "paid");
    assert!(due_a > d("50.00") && due_b > Decimal::ZERO);

    // Its refund takes back exactly the split: the installment owes its charges again.
    post(&p, "payment.refunded", "w-refund", "pay-part", a, "50.00").await;
    assert_eq!(p.wait_count("SELECT count(*) FROM paystream.reversal WHERE status = 'applied'", 1, WAIT).await, 1);
    let row =
        p.db.query_one(
            "SELECT late_fee_paid + interest_paid + amount_paid, status FROM paystream.installment WHERE id = $1",
            &[&a],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, Decimal>(0), row.get::<_, String>(1)), (Decimal::ZERO, "overdue".to_owned()));
    assert_books_agree(&p).await;

    // The events: one InstallmentOverdue each, one LateFeeCharged each, one InterestAccrued
    // per installment and run; the payment's split on its PaymentApplied and PaymentReversed.
    let records = p
        .read_topic(&p.config.kafka.events_topic, WAIT, |r| {
            let e = events(r);
            count(&e, EventType::PaymentReversed) == 1 && count(&e, EventType::InterestAccrued) == 8
        })
        .await;
    let e = events(&records);
    assert_eq!(count(&e, EventType::InstallmentOverdue), 4);
    assert_eq!(count(&e, EventType::LateFeeCharged), 4);
    assert_eq!(count(&e, EventType::InterestAccrued), 8);
    let fees_on_topic: Decimal = e.iter().filter(|e| e.event_type == EventType::LateFeeCharged).map(|e| e.amount).sum();
    assert_eq!(fees_on_topic, expect_fee);
    assert!(e
        .iter()
        .filter(|e| e.event_type == EventType::InstallmentOverdue)
        .all(|e| e.business_date.as_deref() == Some("2026-02-11")));
    let applied = e.iter().find(|e| e.event_type == EventType::PaymentApplied && e.payment_id == "pay-part").unwrap();
    let split = applied.allocation.unwrap();
    assert_eq!((split.late_fee, split.interest, split.principal), paid_a);
    let reversed = e.iter().find(|e| e.event_type == EventType::PaymentReversed).unwrap();
    assert_eq!(reversed.allocation, Some(split), "the refund takes back exactly the payment's split");
    p.stop().await;
}

/// Seeds `customers` contracts of `installments` each on the pipeline's database.
async fn seed(p: &mut Pipeline, customers: i32, installments: i32) {
    let size = paystream_processor::seed::SeedSize {
        customers,
        contracts_per_customer: 1,
        installments_per_contract: installments,
    };
    paystream_processor::seed::seed(&mut p.db, size, "BRL").await.unwrap();
}

fn accrue_process(p: &Pipeline, workers: &str) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_paystream"))
        .args(["accrue", "--quiet", "--workers", workers])
        .env("PAYSTREAM_CONFIG", paystream_common::testing::DEV_CONFIG)
        .envs(p.config.data_env())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Per installment: exactly one late fee and one interest charge for the date, and what it
/// was charged is what its terms give on what it owed when it was charged (recomputed from
/// the charge rows' base).
async fn assert_charged_once(p: &Pipeline, overdue: i64, day: &str) {
    let sql = format!(
        "SELECT count(*) FILTER (WHERE kind = 'late_fee'), count(*) FILTER (WHERE kind = 'interest'),
                count(DISTINCT installment_id)
         FROM paystream.charge WHERE business_date = '{day}'"
    );
    let row = p.db.query_one(&sql, &[]).await.unwrap();
    let counts = (row.get::<_, i64>(0), row.get::<_, i64>(1), row.get::<_, i64>(2));
    assert_eq!(counts, (overdue, overdue, overdue), "one late fee and one interest charge per installment");
    let wrong: i64 = scalar(
        p,
        &format!(
            "SELECT count(*) FROM paystream.charge
             WHERE business_date = '{day}' AND amount <> CASE kind
                 WHEN 'late_fee' THEN round(base * 0.02, 2)
                 ELSE round(base * 0.01 * days / 30, 2) END
               AND abs(amount - CASE kind WHEN 'late_fee' THEN base * 0.02 ELSE base * 0.01 * days / 30 END) > 0.005"
        ),
    )
    .await;
    assert_eq!(wrong, 0, "every charge is its terms on its base, rounded to the cent");
}

/// 100,000 installments overdue; accrual runs with two writers while 2,000 payments go
/// through ingest and the processor to the same installments. No lost update: every
/// installment is charged once for the date, on what it owed when charged; its paid amounts
/// equal its payments; the books agree; payments that raced the charge were recomputed, not
/// overwritten.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn accrual_racing_payments_loses_no_update() {
    let mut p = Pipeline::start().await;
    // 25,000 customers x 4 installments (due from February to May) and the pipeline's own
    // 4 x 3; on 2026-06-01 every one is overdue.
    seed(&mut p, 25_000, 4).await;
    let total: i64 = scalar(&p, "SELECT count(*) FROM paystream.installment").await;
    assert!(total >= 100_000);
    run(&p, &["business-date", "advance", "--to", "2026-06-01"]);
    let overdue: i64 = scalar(&p, "SELECT count(*) FROM paystream.installment WHERE status = 'overdue'").await;
    assert_eq!(overdue, total);

    // Payments to the installments accrual reaches first and last (it walks them in id
    // order), posted while it runs.
    let targets: Vec<Uuid> =
        p.db.query(
            "(SELECT id FROM paystream.installment ORDER BY id LIMIT 1000)
             UNION ALL (SELECT id FROM paystream.installment ORDER BY id DESC LIMIT 1000)",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut accrual = accrue_process(&p, "2");
    let started = Instant::now();
    for (k, id) in targets.iter().enumerate() {
        post(&p, "payment.succeeded", &format!("race-{k}"), &format!("race-pay-{k}"), *id, "10.00").await;
    }
    let status = accrual.wait().unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(accrual.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert!(status.success(), "accrual failed: {out}");
    eprintln!("accrual of {total} with 2,000 payments racing: {:?}; {out}", started.elapsed());
    assert_eq!(p.wait_count("SELECT count(*) FROM paystream.payment WHERE status = 'applied'", 2000, WAIT).await, 2000);

    assert_charged_once(&p, total, "2026-06-01").await;
    // Each payment of 10.00 is applied in full, all of it to charges first.
    let wrong: i64 = scalar(
        &p,
        "SELECT count(*) FROM paystream.installment i
         JOIN (SELECT installment_id, sum(amount_applied) AS applied FROM paystream.payment GROUP BY installment_id) x
           ON x.installment_id = i.id
         WHERE i.amount_paid + i.late_fee_paid + i.interest_paid <> x.applied",
    )
    .await;
    assert_eq!(wrong, 0, "every installment's paid amounts equal its payments");
    assert_books_agree(&p).await;
    p.stop().await;
}

/// Accrual killed with -9 in the middle of a run, then run again: the second run charges what
/// the first did not, nothing twice; its summary counts both runs. While the first runs, a
/// second is refused (one run owns a calendar).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn accrual_killed_mid_run_and_restarted_charges_nothing_twice() {
    let mut p = Pipeline::start().await;
    seed(&mut p, 10_000, 2).await;
    let total: i64 = scalar(&p, "SELECT count(*) FROM paystream.installment").await;
    run(&p, &["business-date", "advance", "--to", "2026-06-01"]);
    let overdue: i64 = scalar(&p, "SELECT count(*) FROM paystream.installment WHERE status = 'overdue'").await;
    assert_eq!(overdue, total);

    let accrual = accrue_process(&p, "2");
    let pid = accrual.id();
    let deadline = Instant::now() + WAIT;
    loop {
        let charged: i64 = scalar(&p, "SELECT count(DISTINCT installment_id) FROM paystream.charge").await;
        if charged > 0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // One run owns the calendar: a second one started now is refused, not run beside it.
    let (ok, _, err) = cli(&p.config, &["accrue", "--quiet"]);
    assert!(!ok && err.contains("in progress"), "a second run beside the first: {err}");
    let _ = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status();
    let mut accrual = accrual;
    let _ = accrual.wait();
    let partial: i64 = scalar(&p, "SELECT count(DISTINCT installment_id) FROM paystream.charge").await;
    assert!(partial > 0 && partial < total, "killed mid-run: {partial} of {total} charged");

    let out = run(&p, &["accrue", "--quiet"]);
    assert!(out.contains(&format!("the date in all: {total} installments")), "{out}");
    assert_charged_once(&p, total, "2026-06-01").await;
    assert_books_agree(&p).await;
    // One event per installment and kind, whichever run charged it.
    let records = p
        .read_topic(&p.config.kafka.events_topic, WAIT, |r| {
            r.iter().filter(|r| r.headers.get("event_type").map(String::as_str) == Some("InterestAccrued")).count()
                >= total as usize
        })
        .await;
    let mut per: HashMap<(EventType, Uuid), usize> = HashMap::new();
    for e in events(&records) {
        if matches!(e.event_type, EventType::InterestAccrued | EventType::LateFeeCharged) {
            *per.entry((e.event_type, e.aggregate_id)).or_default() += 1;
        }
    }
    assert_eq!(per.len(), 2 * total as usize);
    assert!(per.values().all(|n| *n == 1), "one event per installment and kind");
    p.stop().await;
}

async fn balance(p: &Pipeline, account: &str) -> Decimal {
    p.db.query_opt("SELECT balance FROM paystream.account_balances WHERE account = $1", &[&account])
        .await
        .unwrap()
        .map_or(Decimal::ZERO, |row| row.get(0))
}

/// A contract with an overdue installment and its charges is renegotiated into 6
/// installments with a discount while ten payments race to its installments. Each payment
/// is either applied before (and what it paid is no longer owed) or finds the installment
/// renegotiated and is kept as customer credit, said so on its event: nothing is lost. The
/// new schedule adds up to what was owed less the discount; the old receivable is emptied,
/// the new one holds the schedule, the discount is booked.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn renegotiation_racing_payments_moves_the_balance_and_loses_nothing() {
    let p = Pipeline::start().await;
    run(&p, &["business-date", "advance", "--to", "2026-02-11"]);
    run(&p, &["accrue", "--quiet"]);
    let contract: Uuid = scalar(&p, "SELECT contract_id FROM paystream.installment ORDER BY contract_id LIMIT 1").await;
    let installments: Vec<Uuid> =
        p.db.query("SELECT id FROM paystream.installment WHERE contract_id = $1 ORDER BY seq", &[&contract])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
    let owed_before: Decimal =
        p.db.query_one(
            "SELECT sum(amount_due - amount_paid + late_fee - late_fee_paid + interest - interest_paid)
             FROM paystream.installment WHERE contract_id = $1",
            &[&contract],
        )
        .await
        .unwrap()
        .get(0);

    let config = p.config.clone();
    let contract_arg = contract.to_string();
    let renegotiation = tokio::task::spawn_blocking(move || {
        cli(
            &config,
            &[
                "renegotiate",
                "--contract",
                &contract_arg,
                "--installments",
                "6",
                "--first-due",
                "2026-03-15",
                "--discount",
                "25.00",
            ],
        )
    });
    for k in 0..10 {
        let target = installments[k % installments.len()];
        post(&p, "payment.succeeded", &format!("rn-{k}"), &format!("rn-pay-{k}"), target, "5.00").await;
    }
    let (ok, out, err) = renegotiation.await.unwrap();
    assert!(ok, "{out}\n{err}");
    assert_eq!(p.wait_count("SELECT count(*) FROM paystream.payment", 10, WAIT).await, 10);

    let row =
        p.db.query_one(
            "SELECT coalesce(sum(amount_applied), 0), coalesce(sum(amount_credited), 0),
                    count(*) FILTER (WHERE amount_credited > 0)
             FROM paystream.payment WHERE status = 'applied'",
            &[],
        )
        .await
        .unwrap();
    let (applied, credited, credited_count) =
        (row.get::<_, Decimal>(0), row.get::<_, Decimal>(1), row.get::<_, i64>(2));
    assert_eq!(applied + credited, d("50.00"), "every payment applied or kept as credit");
    let new_contract: Uuid =
        p.db.query_one("SELECT id FROM paystream.contract WHERE renegotiated_from = $1", &[&contract])
            .await
            .unwrap()
            .get(0);
    let row =
        p.db.query_one(
            "SELECT count(*), sum(amount_due) FROM paystream.installment WHERE contract_id = $1",
            &[&new_contract],
        )
        .await
        .unwrap();
    let (count_new, total) = (row.get::<_, i64>(0), row.get::<_, Decimal>(1));
    assert_eq!(count_new, 6);
    assert_eq!(
        total,
        owed_before - applied - d("25.00"),
        "the schedule is what was owed, less payments before, less the discount"
    );
    let old: Vec<String> =
        p.db.query("SELECT status FROM paystream.installment WHERE contract_id = $1", &[&contract])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
    assert!(old.iter().all(|s| s == "renegotiated" || s == "paid"), "{old:?}");
    assert_eq!(balance(&p, &format!("receivable:{contract}")).await, Decimal::ZERO);
    assert_eq!(balance(&p, &format!("receivable:{new_contract}")).await, total);
    assert_eq!(balance(&p, "renegotiation_discount:BRL").await, d("25.00"));
    assert_books_agree(&p).await;

    let records = p
        .read_topic(&p.config.kafka.events_topic, WAIT, |r| {
            let e = events(r);
            count(&e, EventType::ContractRenegotiated) == 1 && count(&e, EventType::PaymentApplied) == 10
        })
        .await;
    let e = events(&records);
    assert_eq!(count(&e, EventType::ContractRenegotiated), 1);
    let said_credit = e
        .iter()
        .filter(|e| {
            e.event_type == EventType::PaymentApplied && e.reason.as_deref().is_some_and(|r| r.contains("renegotiated"))
        })
        .count();
    assert_eq!(said_credit as i64, credited_count, "each payment kept as credit says so");
    p.stop().await;
}

/// A payment applied to an installment that is renegotiated afterwards, then refunded: the
/// renegotiation moved only what was still owed to the new schedule, so the refund leaves
/// the replaced installment renegotiated with its paid amount and its old receivable at
/// zero, and takes the money from the customer's credit (which now shows what the customer
/// owes outside the schedule); the event says so and the books agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refund_after_renegotiation_comes_from_customer_credit_not_the_replaced_installment() {
    let p = Pipeline::start().await;
    let row =
        p.db.query_one(
            "SELECT i.id, i.contract_id, c.customer_id FROM paystream.installment i
             JOIN paystream.contract c ON c.id = i.contract_id ORDER BY i.contract_id, i.seq LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    let (installment, contract, customer): (Uuid, Uuid, Uuid) = (row.get(0), row.get(1), row.get(2));
    post(&p, "payment.succeeded", "rr-pay", "rr-payment", installment, "30.00").await;
    assert_eq!(p.wait_count("SELECT count(*) FROM paystream.payment", 1, WAIT).await, 1);
    run(&p, &["renegotiate", "--contract", &contract.to_string(), "--installments", "3", "--first-due", "2026-03-15"]);
    post(&p, "payment.refunded", "rr-refund", "rr-payment", installment, "30.00").await;
    let booked = "SELECT count(*) FROM paystream.reversal WHERE status = 'applied'";
    assert_eq!(p.wait_count(booked, 1, WAIT).await, 1);

    let row =
        p.db.query_one("SELECT status, amount_paid FROM paystream.installment WHERE id = $1", &[&installment])
            .await
            .unwrap();
    let (status, paid): (String, Decimal) = (row.get(0), row.get(1));
    assert_eq!((status.as_str(), paid), ("renegotiated", d("30.00")), "the replaced installment is not touched");
    assert_eq!(balance(&p, &format!("receivable:{contract}")).await, Decimal::ZERO);
    assert_eq!(balance(&p, &format!("customer_credit:{customer}")).await, d("30.00"), "the customer owes it");
    assert_books_agree(&p).await;

    let records =
        p.read_topic(&p.config.kafka.events_topic, WAIT, |r| count(&events(r), EventType::PaymentReversed) == 1).await;
    let e = events(&records);
    let reversed = e.iter().find(|e| e.event_type == EventType::PaymentReversed).unwrap();
    assert!(reversed.reason.as_deref().is_some_and(|r| r.contains("renegotiated")), "{reversed:?}");
    p.stop().await;
}
