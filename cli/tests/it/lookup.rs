//! The operator's look-ups: `paystream payments show` and `paystream events tail`.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{cli, Pipeline};

const WAIT: Duration = Duration::from_secs(60);

fn refund(webhook_id: &str, payment_id: &str, installment: uuid::Uuid, amount: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "id": webhook_id, "type": "payment.refunded", "created_at": "2026-11-25T10:00:00Z",
        "data": {"payment_id": payment_id, "installment_id": installment.to_string(), "amount": amount, "currency": "BRL"}
    }))
    .unwrap()
}

fn show(pipeline: &Pipeline, payment_id: &str) -> (bool, Value) {
    let (ok, out, err) = cli(&pipeline.config, &["payments", "show", "demo-standard", payment_id, "--json"]);
    let report = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out} {err}"));
    (ok, report)
}

/// `payments show` tells a payment's story as the database and the events topic hold it: its
/// allocation, a balanced journal for the payment and for its refund, the applied refund, the
/// inbound position the payment row recorded, and exactly the events the topic carries for it
/// (compared by event id with a reader of the topic). A refund whose payment never came shows
/// as held; a payment applied while the relay is stopped shows its events in the outbox; an
/// unknown payment exits non-zero.
#[tokio::test(flavor = "multi_thread")]
async fn payments_show_tells_the_whole_story() {
    let mut pipeline = Pipeline::start().await;
    let installment = pipeline.installments().await[0].0;
    let (h, b) = pipeline.payment("evt_a", "pay_a", installment, "10.00");
    assert_eq!(pipeline.post("demo-standard", &h, &b).await.0, 202);
    let applied = "SELECT count(*) FROM paystream.payment WHERE provider_payment_id = 'pay_a'";
    assert_eq!(pipeline.wait_count(applied, 1, WAIT).await, 1);
    assert_eq!(
        pipeline
            .post_signed("demo-standard", "evt_a_refund", &refund("evt_a_refund", "pay_a", installment, "4.00"))
            .await
            .0,
        202
    );
    assert_eq!(
        pipeline
            .post_signed("demo-standard", "evt_m_refund", &refund("evt_m_refund", "pay_missing", installment, "1.00"))
            .await
            .0,
        202
    );
    let reversals =
        "SELECT (SELECT count(*) FROM paystream.reversal) + (SELECT count(*) FROM paystream.pending_reversal)";
    assert_eq!(pipeline.wait_count(reversals, 2, WAIT).await, 2);
    assert_eq!(pipeline.wait_count("SELECT count(*) FROM paystream.outbox", 0, WAIT).await, 0);

    let (ok, report) = show(&pipeline, "pay_a");
    assert!(ok, "{report}");
    let payment = &report["payment"];
    assert_eq!(payment["status"], "applied");
    assert_eq!(payment["amount"], "10.00");
    assert_eq!(payment["installment_id"], installment.to_string());
    let row = pipeline
        .db
        .query_one(
            "SELECT source_partition, source_offset FROM paystream.payment WHERE provider_payment_id = 'pay_a'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(report["inbound"]["partition"], row.get::<_, i32>(0));
    assert_eq!(report["inbound"]["offset"], row.get::<_, i64>(1));
    let journals = report["journals"].as_array().unwrap();
    assert_eq!(journals.len(), 2, "the payment's and the refund's: {journals:?}");
    for journal in journals {
        let sum: rust_decimal::Decimal = journal["postings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["amount"].as_str().unwrap().parse::<rust_decimal::Decimal>().unwrap())
            .sum();
        assert_eq!(sum, rust_decimal::Decimal::ZERO, "balanced: {journal}");
    }
    assert_eq!(report["reversals"].as_array().unwrap().len(), 1);
    assert_eq!(report["reversals"][0]["status"], "applied");
    let shown: BTreeSet<String> = report["events_published"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect();
    let types: BTreeSet<&str> =
        report["events_published"].as_array().unwrap().iter().map(|e| e["event_type"].as_str().unwrap()).collect();
    assert!(types.contains("PaymentApplied") && types.contains("PaymentReversed"), "{types:?}");
    let records = pipeline.read_topic(&pipeline.config.kafka.events_topic, WAIT, |r| !r.is_empty()).await;
    let on_topic: BTreeSet<String> = records
        .iter()
        .filter_map(|r| paystream_schemas::decode::<paystream_schemas::PaymentEvent>(&r.payload).ok())
        .filter(|e| e.payment_id == "pay_a")
        .map(|e| e.event_id.to_string())
        .collect();
    assert_eq!(shown, on_topic, "exactly the topic's events of pay_a");

    let (ok, missing) = show(&pipeline, "pay_missing");
    assert!(ok);
    assert!(missing["payment"].is_null());
    assert_eq!(missing["held_reversals"].as_array().unwrap().len(), 1, "{missing}");

    let (ok, unknown) = show(&pipeline, "pay_never");
    assert!(!ok, "an unknown payment exits non-zero");
    assert_eq!(unknown["found"], false);

    pipeline.stop_relay().await;
    let (h, b) = pipeline.payment("evt_c", "pay_c", installment, "1.00");
    assert_eq!(pipeline.post("demo-standard", &h, &b).await.0, 202);
    let applied_c = "SELECT count(*) FROM paystream.payment WHERE provider_payment_id = 'pay_c'";
    assert_eq!(pipeline.wait_count(applied_c, 1, WAIT).await, 1);
    let (ok, waiting) = show(&pipeline, "pay_c");
    assert!(ok);
    let in_outbox = waiting["events_in_outbox"].as_array().unwrap();
    assert!(in_outbox.iter().any(|e| e["event_type"] == "PaymentApplied"), "{waiting}");
    assert!(waiting["events_published"].as_array().unwrap().is_empty(), "{waiting}");
    pipeline.start_relay().await;
    pipeline.stop().await;
}

fn tail(pipeline: &Pipeline, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["events", "tail", "--exit-at-end"];
    all.extend_from_slice(args);
    let (ok, out, err) = cli(&pipeline.config, &all);
    assert!(ok, "{err}");
    out.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

/// `events tail` prints every event of the topic decoded, one JSON object per line, filters by
/// type and by key, and `--since` starts each partition at the first event committed at or
/// after the time (offsets for times), so that events committed before are not printed.
#[tokio::test(flavor = "multi_thread")]
async fn events_tail_decodes_filters_and_seeks_by_time() {
    let pipeline = Pipeline::start().await;
    let installments = pipeline.installments().await;
    for (n, (installment, _)) in installments.iter().enumerate().take(3) {
        let (h, b) = pipeline.payment(&format!("evt_early_{n}"), &format!("pay_early_{n}"), *installment, "2.00");
        assert_eq!(pipeline.post("demo-standard", &h, &b).await.0, 202);
    }
    let published = "SELECT count(*) FROM paystream.payment";
    assert_eq!(pipeline.wait_count(published, 3, WAIT).await, 3);
    assert_eq!(pipeline.wait_count("SELECT count(*) FROM paystream.outbox", 0, WAIT).await, 0);
    let early = tail(&pipeline, &["--from-beginning"]);
    assert!(early.len() >= 3, "{early:?}");
    assert!(early.iter().all(|e| e["error"].is_null() && e["event_id"].is_string()), "{early:?}");
    // The boundary: later than every early commit, in the database's own clock.
    let since: String = pipeline
        .db
        .query_one(
            "SELECT to_char((max(applied_at) + interval '1 second') AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') FROM paystream.payment",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    // Wait until the database's clock has passed the boundary, so the next commits fall after it.
    let passed = format!("SELECT count(*) FROM (SELECT 1 WHERE now() > '{since}'::timestamptz) t");
    assert_eq!(pipeline.wait_count(&passed, 1, Duration::from_secs(10)).await, 1);
    for (n, (installment, _)) in installments.iter().enumerate().take(2) {
        let (h, b) = pipeline.payment(&format!("evt_late_{n}"), &format!("pay_late_{n}"), *installment, "3.00");
        assert_eq!(pipeline.post("demo-standard", &h, &b).await.0, 202);
    }
    assert_eq!(pipeline.wait_count(published, 5, WAIT).await, 5);
    assert_eq!(pipeline.wait_count("SELECT count(*) FROM paystream.outbox", 0, WAIT).await, 0);

    let all = tail(&pipeline, &["--from-beginning"]);
    let payments = |events: &[Value]| -> BTreeSet<String> {
        events.iter().map(|e| e["payment_id"].as_str().unwrap_or_default().to_owned()).collect()
    };
    assert_eq!(payments(&all).len(), 5, "{all:?}");
    let late = tail(&pipeline, &["--since", &since]);
    assert_eq!(payments(&late), ["pay_late_0".to_owned(), "pay_late_1".to_owned()].into(), "{late:?}");
    let applied = tail(&pipeline, &["--from-beginning", "--type", "PaymentApplied"]);
    assert_eq!(applied.len(), 5);
    assert!(applied.iter().all(|e| e["event_type"] == "PaymentApplied"));
    let key = installments[2].0.to_string();
    let keyed = tail(&pipeline, &["--from-beginning", "--key", &key]);
    assert!(!keyed.is_empty() && keyed.iter().all(|e| e["key"] == key.as_str()), "{keyed:?}");
    assert_eq!(payments(&keyed), ["pay_early_2".to_owned()].into());
    pipeline.stop().await;
}
