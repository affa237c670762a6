//! The money paths beyond a partial payment, end to end through ingest, Kafka, the processor
//! and the relay: Stripe's cumulative partial refunds, a chargeback that arrives before its
//! payment on another partition, a settled contract refunded, rejected payments in suspense,
//! signed webhooks that cannot be normalised, and records that did not come from ingest.
//! Each asserts counts and sums, and that the books and the installments agree.

use std::time::Duration;

use rust_decimal::Decimal;
use uuid::Uuid;

use crate::harness::Pipeline;

const WAIT: Duration = Duration::from_secs(60);

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

/// A Stripe event with `object` as its `data.object`.
fn stripe_event(id: &str, kind: &str, object: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "id": id, "object": "event", "type": kind, "created": crate::harness::now_s(), "livemode": false,
        "data": {"object": object}
    }))
    .unwrap()
}

fn payment_intent(pi: &str, installment: Uuid, cents: i64) -> serde_json::Value {
    serde_json::json!({"id": pi, "object": "payment_intent", "amount": cents, "amount_received": cents,
        "currency": "brl", "metadata": {"installment_id": installment.to_string()}})
}

fn charge(pi: &str, installment: Uuid, cents: i64, refunded: i64) -> serde_json::Value {
    serde_json::json!({"id": format!("ch_{pi}"), "object": "charge", "payment_intent": pi, "amount": cents,
        "amount_refunded": refunded, "currency": "brl", "metadata": {"installment_id": installment.to_string()}})
}

async fn scalar<T: for<'a> tokio_postgres::types::FromSql<'a>>(p: &Pipeline, sql: &str) -> T {
    p.db.query_one(sql, &[]).await.unwrap().get(0)
}

async fn balance(p: &Pipeline, account: &str) -> Decimal {
    p.db.query_opt("SELECT balance FROM paystream.account_balances WHERE account = $1", &[&account])
        .await
        .unwrap()
        .map_or(Decimal::ZERO, |row| row.get(0))
}

/// Every journal balances, and what each installment's receivable moved equals what it
/// says it was paid (over the installments of the payments recorded).
async fn assert_books_agree(p: &Pipeline) {
    let unbalanced: i64 = scalar(p, "SELECT count(*) FROM paystream.trial_balance WHERE debits <> credits").await;
    assert_eq!(unbalanced, 0, "trial balance");
    let disagree: i64 = scalar(
        p,
        "SELECT count(*) FROM (SELECT c.id, sum(i.amount_paid) AS paid,
                coalesce((SELECT -sum(amount) FROM paystream.posting po JOIN paystream.journal j ON j.id = po.journal_id
                          WHERE po.account = 'receivable:' || c.id AND j.kind <> 'origination'), 0) AS moved
           FROM paystream.contract c JOIN paystream.installment i ON i.contract_id = c.id GROUP BY c.id) x
         WHERE paid <> moved",
    )
    .await;
    assert_eq!(disagree, 0, "installments' paid amounts equal what the journals moved to their receivables");
}

/// Stripe refunds a 100.00 charge in three parts (charge.refunded carries the total: 30,
/// 70, 100) and delivers the second twice: each refund is booked once at its own amount, the
/// payment ends fully reversed, the clearing account back at zero, the installment unpaid.
/// (Booked from the cumulative amount, the refunds came to 30 + 70 and then a rejection.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stripe_partial_refunds_are_each_booked_once_at_their_own_amount() {
    let p = Pipeline::start().await;
    let (installment, due) = p.installments().await[0];
    assert!(due >= d("100.00"));
    let pay = stripe_event("evt_pay", "payment_intent.succeeded", payment_intent("pi_r", installment, 10_000));
    assert_eq!(p.post_stripe(&pay).await.0, 202);
    for (id, total) in [("evt_r1", 3_000), ("evt_r2", 7_000), ("evt_r2", 7_000), ("evt_r3", 10_000)] {
        let refund = stripe_event(id, "charge.refunded", charge("pi_r", installment, 10_000, total));
        assert_eq!(p.post_stripe(&refund).await.0, 202);
    }
    let booked = p
        .wait_count(
            "SELECT count(*) FROM paystream.reversal WHERE provider_payment_id = 'pi_r' AND status = 'applied'",
            3,
            WAIT,
        )
        .await;
    assert_eq!(booked, 3);
    let amounts: Vec<Decimal> =
        p.db.query("SELECT applied_amount FROM paystream.reversal WHERE status = 'applied' ORDER BY reversal_id", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
    assert_eq!(amounts, [d("30.00"), d("40.00"), d("30.00")]);
    let reversed: Decimal =
        scalar(&p, "SELECT amount_reversed FROM paystream.payment WHERE provider_payment_id = 'pi_r'").await;
    assert_eq!(reversed, d("100.00"));
    assert_eq!(balance(&p, "provider_clearing:demo-stripe").await, Decimal::ZERO);
    let paid: Decimal =
        p.db.query_one("SELECT amount_paid FROM paystream.installment WHERE id = $1", &[&installment])
            .await
            .unwrap()
            .get(0);
    assert_eq!(paid, Decimal::ZERO);
    assert_books_agree(&p).await;
    let events = p
        .read_topic(&p.config.kafka.events_topic, WAIT, |r| {
            r.iter().filter(|r| r.headers.get("event_type").map(String::as_str) == Some("PaymentReversed")).count() >= 3
        })
        .await;
    let reversals = events.iter().filter(|r| r.headers["event_type"] == "PaymentReversed").count();
    assert_eq!(reversals, 3, "one PaymentReversed per refund, none for the repeated delivery");
    p.stop().await;
}

/// A dispute is keyed by its payment id and travels on another partition than its payment,
/// which is keyed by installment; here it arrives first and is applied first. It is held,
/// not rejected, and once the payment lands it is applied, exactly once: the payment is
/// reversed, nothing is left held, one PaymentReversed is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chargeback_before_its_payment_is_held_then_reversed_once() {
    let p = Pipeline::start().await;
    let (installment, _) = p.installments().await[1];
    let dispute = stripe_event(
        "evt_dispute",
        "charge.dispute.created",
        serde_json::json!({"id": "dp_1", "object": "dispute", "payment_intent": "pi_cb", "amount": 2_500, "currency": "brl"}),
    );
    assert_eq!(p.post_stripe(&dispute).await.0, 202);
    assert_eq!(p.wait_count("SELECT count(*) FROM paystream.pending_reversals", 1, WAIT).await, 1, "held");
    let reversal_rows: i64 = scalar(&p, "SELECT count(*) FROM paystream.reversal").await;
    assert_eq!(reversal_rows, 0, "not rejected");
    // Delivered again while held: still one.
    assert_eq!(p.post_stripe(&dispute).await.0, 202);
    let pay = stripe_event("evt_pay_cb", "payment_intent.succeeded", payment_intent("pi_cb", installment, 2_500));
    assert_eq!(p.post_stripe(&pay).await.0, 202);
    let applied = p
        .wait_count("SELECT count(*) FROM paystream.reversal WHERE status = 'applied' AND kind = 'chargeback'", 1, WAIT)
        .await;
    assert_eq!(applied, 1);
    assert_eq!(p.wait_count("SELECT count(*) FROM paystream.pending_reversals", 0, WAIT).await, 0);
    let reversed: Decimal =
        scalar(&p, "SELECT amount_reversed FROM paystream.payment WHERE provider_payment_id = 'pi_cb'").await;
    assert_eq!(reversed, d("25.00"));
    assert_eq!(balance(&p, "provider_clearing:demo-stripe").await, Decimal::ZERO);
    assert_books_agree(&p).await;
    let events = p
        .read_topic(&p.config.kafka.events_topic, WAIT, |r| {
            r.iter().any(|r| r.headers.get("event_type").map(String::as_str) == Some("PaymentReversed"))
        })
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let reversed_events = events.iter().filter(|r| r.headers["event_type"] == "PaymentReversed").count();
    assert_eq!(reversed_events, 1);
    p.stop().await;
}

/// Every installment of a contract paid: the contract is settled. A refund of one payment
/// makes it owe again: the contract is active again (ContractReopened), and a later payment
/// to it is applied, not rejected and not lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refunded_settled_contract_reopens_and_takes_payments_again() {
    let p = Pipeline::start().await;
    let contract: Uuid =
        scalar(&p, "SELECT contract_id FROM paystream.installments ORDER BY contract_id, seq LIMIT 1").await;
    let installments: Vec<(Uuid, Decimal)> = p
        .db
        .query("SELECT id, amount_due FROM paystream.installment WHERE contract_id = $1 ORDER BY seq", &[&contract])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for (i, (installment, due)) in installments.iter().enumerate() {
        let (h, b) = p.payment(&format!("msg_settle_{i}"), &format!("pay_settle_{i}"), *installment, &due.to_string());
        assert_eq!(p.post("demo-standard", &h, &b).await.0, 202);
    }
    let settled = "SELECT count(*) FROM paystream.contract WHERE id = '{c}' AND status = 'settled'"
        .replace("{c}", &contract.to_string());
    assert_eq!(p.wait_count(&settled, 1, WAIT).await, 1, "settled");
    let (installment, due) = installments[0];
    let refund = serde_json::to_vec(&serde_json::json!({
        "id": "evt_refund_settled", "type": "payment.refunded", "created_at": "2026-11-25T10:00:00Z",
        "data": {"payment_id": "pay_settle_0", "installment_id": installment.to_string(), "amount": "10.00", "currency": "BRL"}
    }))
    .unwrap();
    assert_eq!(p.post_signed("demo-standard", "evt_refund_settled", &refund).await.0, 202);
    let active = settled.replace("'settled'", "'active'");
    assert_eq!(p.wait_count(&active, 1, WAIT).await, 1, "active again");
    let (h, b) = p.payment("msg_after_reopen", "pay_after_reopen", installment, "10.00");
    assert_eq!(p.post("demo-standard", &h, &b).await.0, 202);
    let applied = p
        .wait_count(
            "SELECT count(*) FROM paystream.payment WHERE provider_payment_id = 'pay_after_reopen' AND status = 'applied'",
            1,
            WAIT,
        )
        .await;
    assert_eq!(applied, 1);
    let paid: Decimal =
        p.db.query_one("SELECT amount_paid FROM paystream.installment WHERE id = $1", &[&installment])
            .await
            .unwrap()
            .get(0);
    assert_eq!(paid, due);
    assert_eq!(p.wait_count(&settled, 1, WAIT).await, 1, "settled again");
    assert_books_agree(&p).await;
    let events = p
        .read_topic(&p.config.kafka.events_topic, WAIT, |r| {
            r.iter().filter(|r| r.headers.get("event_type").map(String::as_str) == Some("ContractSettled")).count() >= 2
        })
        .await;
    let count = |t: &str| events.iter().filter(|r| r.headers["event_type"] == t).count();
    assert_eq!((count("ContractSettled"), count("ContractReopened")), (2, 1));
    p.stop().await;
}

/// A payment for an unknown installment is rejected but its money is booked to suspense
/// (`unapplied_cash`), never off the books; the provider's refund of it returns it from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rejected_payments_are_booked_to_suspense_and_refunded_from_it() {
    let p = Pipeline::start().await;
    let unknown = Uuid::new_v4();
    let (h, b) = p.payment("msg_unknown", "pay_unknown", unknown, "12.34");
    assert_eq!(p.post("demo-standard", &h, &b).await.0, 202);
    let rejected = p
        .wait_count(
            "SELECT count(*) FROM paystream.payment WHERE status = 'rejected' AND journal_id IS NOT NULL",
            1,
            WAIT,
        )
        .await;
    assert_eq!(rejected, 1);
    assert_eq!(balance(&p, "unapplied_cash:demo-standard").await, d("-12.34"));
    assert_eq!(balance(&p, "provider_clearing:demo-standard").await, d("12.34"));
    let refund = serde_json::to_vec(&serde_json::json!({
        "id": "evt_refund_unknown", "type": "payment.refunded", "created_at": "2026-11-25T10:00:00Z",
        "data": {"payment_id": "pay_unknown", "installment_id": unknown.to_string(), "amount": "12.34", "currency": "BRL"}
    }))
    .unwrap();
    assert_eq!(p.post_signed("demo-standard", "evt_refund_unknown", &refund).await.0, 202);
    assert_eq!(p.wait_count("SELECT count(*) FROM paystream.reversal WHERE status = 'applied'", 1, WAIT).await, 1);
    assert_eq!(balance(&p, "unapplied_cash:demo-standard").await, Decimal::ZERO);
    assert_eq!(balance(&p, "provider_clearing:demo-standard").await, Decimal::ZERO);
    assert_books_agree(&p).await;
    p.stop().await;
}

/// A genuine (signed) webhook ingest cannot normalise is kept, not refused: an unsupported
/// currency, a Stripe payment without installment metadata, a Pix credit without `txid`,
/// a Pix webhook of too many entries, a body that is not the expected shape. Each is
/// answered 202 once durable (a provider stops retrying), and becomes a dead letter holding
/// the body exactly as sent, with a reason naming the field. (Before, each got 400 and was
/// kept nowhere.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn signed_webhooks_that_cannot_be_normalised_become_dead_letters() {
    let p = Pipeline::start().await;
    let (installment, _) = p.installments().await[2];
    let txid = installment.simple().to_string();
    let yen = stripe_event("evt_jpy", "payment_intent.succeeded", {
        let mut pi = payment_intent("pi_jpy", installment, 500);
        pi["currency"] = "jpy".into();
        pi
    });
    let no_metadata = stripe_event(
        "evt_nometa",
        "payment_intent.succeeded",
        serde_json::json!({"id": "pi_nometa", "amount": 500, "amount_received": 500, "currency": "brl"}),
    );
    let no_txid =
        br#"{"pix":[{"endToEndId":"E00000000202611251000abcdefgh","valor":"10.00","horario":"2026-11-25T10:00:00Z"}]}"#
            .to_vec();
    let entries: Vec<String> = (0..1001)
        .map(|i| {
            format!(r#"{{"endToEndId":"E{i:031}","txid":"{txid}","valor":"0.01","horario":"2026-11-25T10:00:00Z"}}"#)
        })
        .collect();
    let too_many = format!(r#"{{"pix":[{}]}}"#, entries.join(",")).into_bytes();
    assert!(too_many.len() < p.config.ingest.body_limit_bytes);
    let garbage = br#"{"id":"x","type":"payment.succeeded"}"#.to_vec();

    let mut held = Vec::new();
    for (provider, body, field) in [
        ("demo-stripe", &yen, "data.object.currency"),
        ("demo-stripe", &no_metadata, "data.object.metadata.installment_id"),
        ("demo-pix", &no_txid, "pix[0].txid"),
        ("demo-pix", &too_many, "pix"),
        ("demo-standard", &garbage, "body"),
    ] {
        let (status, text) = match provider {
            "demo-stripe" => p.post_stripe(body).await,
            "demo-pix" => p.post_pix(body).await,
            _ => p.post_signed(provider, "msg_garbage", body).await,
        };
        assert_eq!(status, 202, "{provider} {field}: {text}");
        assert!(text.contains("held") && text.contains(field), "{text}");
        held.push((body.clone(), field));
    }
    assert_eq!(p.wait_count("SELECT count(*) FROM paystream.dead_letters", 5, WAIT).await, 5);
    for (body, field) in &held {
        let row =
            p.db.query_one("SELECT reason FROM paystream.dead_letters WHERE payload = $1", &[body])
                .await
                .unwrap_or_else(|e| panic!("no dead letter holds the {field} webhook's body: {e}"));
        let reason: String = row.get(0);
        assert!(reason.starts_with("unprocessable webhook") && reason.contains(field), "{reason}");
    }
    let payments: i64 = scalar(&p, "SELECT count(*) FROM paystream.payment").await;
    assert_eq!(payments, 0, "nothing applied");
    p.stop().await;
}

/// A well-formed payment command written to the inbound topic by anyone but ingest (no MAC,
/// or a MAC under another key) is dead-lettered, not applied: the topic is not a way around
/// the webhooks' signatures. The same command signed with the command key is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn records_not_produced_by_ingest_are_not_applied() {
    let p = Pipeline::start().await;
    let (installment, _) = p.installments().await[3];
    let command = |id: &str| paystream_schemas::PaymentCommand {
        webhook_id: id.into(),
        provider: "demo-standard".into(),
        kind: paystream_schemas::CommandKind::Payment,
        rail: "pix".into(),
        payment_id: id.into(),
        installment_id: Some(installment),
        amount: d("50.00"),
        currency: "BRL".into(),
        occurred_at_ms: 1,
        received_at_ms: 1,
    };
    let key = installment.to_string();
    p.produce_raw(&key, &paystream_schemas::encode(&command("injected")).unwrap(), false).await;
    p.produce_raw(&key, &paystream_schemas::encode(&command("signed")).unwrap(), true).await;
    assert_eq!(p.wait_count("SELECT count(*) FROM paystream.payment", 1, WAIT).await, 1);
    assert_eq!(p.wait_count("SELECT count(*) FROM paystream.dead_letters", 1, WAIT).await, 1);
    let who: String = scalar(&p, "SELECT provider_payment_id FROM paystream.payment").await;
    assert_eq!(who, "signed");
    let reason: String = scalar(&p, "SELECT reason FROM paystream.dead_letters").await;
    assert!(reason.contains("not authenticated"), "{reason}");
    p.stop().await;
}
