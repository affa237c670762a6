//! `paystream deadletters`: listing, showing and re-driving what the processor could not
//! apply.

use std::time::Duration;

use paystream_schemas::{decode, CommandKind, EventType, PaymentCommand, PaymentEvent};
use rust_decimal::Decimal;

use crate::harness::{cli, Pipeline};

const APPLIED: &str =
    "SELECT count(*) FROM paystream.payment WHERE provider_payment_id = 'pay_unsigned' AND status = 'applied'";

/// The scenario: a producer that bypassed ingest (or lost its command key) wrote a valid
/// payment command without the inbound MAC, so the processor dead-lettered it. It is the
/// dead letter a fixed cause makes applicable with its bytes unchanged: the others are
/// undecodable or invalid bytes (dead-lettered again whatever is fixed) and webhook bodies
/// ingest could not normalise; a payment for an unknown installment is no dead letter at all
/// (it is rejected and booked to suspense). A dry run sends nothing; `--apply` signs and sends
/// it, it is applied once and the row marked; a second re-drive is skipped, and one forced
/// with `--again` is a duplicate that changes nothing. A poison message is refused.
#[tokio::test(flavor = "multi_thread")]
async fn an_unsigned_command_is_redriven_once_the_cause_is_fixed() {
    let pipeline = Pipeline::start().await;
    let config = &pipeline.config;
    let installment = pipeline.installments().await[0].0;
    let command = PaymentCommand {
        webhook_id: "evt_unsigned".into(),
        provider: "demo-standard".into(),
        kind: CommandKind::Payment,
        rail: "pix".into(),
        payment_id: "pay_unsigned".into(),
        installment_id: Some(installment),
        amount: Decimal::new(1000, 2),
        currency: "BRL".into(),
        occurred_at_ms: 1_700_000_000_000,
        received_at_ms: 1_700_000_000_000,
    };
    let bytes = paystream_schemas::encode(&command).unwrap();
    pipeline.produce_raw(&command.key(), &bytes, false).await;
    pipeline.produce_raw(&command.key(), b"poison", false).await;
    let dead = pipeline.wait_count("SELECT count(*) FROM paystream.dead_letters", 2, Duration::from_secs(60)).await;
    assert_eq!(dead, 2);
    let id: i64 = pipeline.db.query_one("SELECT min(id) FROM paystream.dead_letters", &[]).await.unwrap().get(0);
    let poison: i64 = pipeline.db.query_one("SELECT max(id) FROM paystream.dead_letters", &[]).await.unwrap().get(0);
    let id_text = id.to_string();
    assert_eq!(pipeline.wait_count(APPLIED, 0, Duration::ZERO).await, 0);

    let (ok, listed, err) =
        cli(config, &["deadletters", "list", "--reason", "NOT AUTHENTICATED", "--since", "1h", "--json"]);
    assert!(ok, "{err}");
    assert_eq!(listed.lines().count(), 2, "both were unauthenticated: {listed}");
    let first: serde_json::Value = serde_json::from_str(listed.lines().next().unwrap()).unwrap();
    assert_eq!(first["id"], id);
    let (ok, shown, err) = cli(config, &["deadletters", "show", &id_text, "--json"]);
    assert!(ok, "{err}");
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["payload"]["command"]["payment_id"], "pay_unsigned");
    assert_eq!(shown["redrive"]["redrive"], "possible");

    let (ok, dry, err) = cli(config, &["deadletters", "redrive", "--id", &id_text]);
    assert!(ok, "{err}");
    assert!(dry.contains("1 would be re-driven"), "{dry}");
    let marked = "SELECT count(*) FROM paystream.dead_letters WHERE redriven_at IS NOT NULL";
    assert_eq!(pipeline.wait_count(marked, 0, Duration::ZERO).await, 0, "a dry run marks nothing");

    let (ok, out, err) =
        cli(config, &["deadletters", "redrive", "--id", &id_text, "--id", &poison.to_string(), "--apply"]);
    assert!(ok, "{err}");
    assert!(out.contains("1 re-driven, 1 refused"), "{out}");
    assert_eq!(pipeline.wait_count(APPLIED, 1, Duration::from_secs(60)).await, 1, "applied after the re-drive");
    assert_eq!(pipeline.wait_count(marked, 1, Duration::ZERO).await, 1, "only the command is marked");
    let inbound =
        pipeline.read_topic(&config.kafka.inbound_topic, Duration::from_secs(30), |records| records.len() >= 3).await;
    let redriven: Vec<_> = inbound.iter().filter(|r| r.headers.contains_key("paystream-redrive-of")).collect();
    assert_eq!(redriven.len(), 1);
    assert_eq!(redriven[0].headers["paystream-redrive-of"], id_text);
    assert!(redriven[0].headers["paystream-mac"].starts_with("v1="));
    assert_eq!(redriven[0].payload, bytes, "the original bytes");
    assert_eq!(redriven[0].key.as_deref(), Some(installment.to_string().as_str()));

    let (ok, out, err) = cli(config, &["deadletters", "redrive", "--id", &id_text, "--apply"]);
    assert!(ok, "{err}");
    assert!(out.contains("0 re-driven, 0 refused, 1 skipped"), "{out}");
    let (ok, out, err) = cli(config, &["deadletters", "redrive", "--id", &id_text, "--apply", "--again"]);
    assert!(ok, "{err}");
    assert!(out.contains("1 re-driven"), "{out}");
    let row = pipeline
        .db
        .query_one(
            "SELECT redrive_count, redrive_partition, redrive_offset FROM paystream.dead_letters WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 2);
    let (partition, offset): (i32, i64) = (row.get(1), row.get(2));
    // The processor has read past the second re-drive once its stored position is beyond it.
    let past = format!(
        "SELECT count(*) FROM paystream.consumer_position WHERE consumer_group = '{}' AND topic = '{}' AND partition = {partition} AND next_offset > {offset}",
        config.processor.group_id, config.kafka.inbound_topic
    );
    assert_eq!(pipeline.wait_count(&past, 1, Duration::from_secs(60)).await, 1);
    assert_eq!(pipeline.wait_count(APPLIED, 1, Duration::ZERO).await, 1, "applied once");
    let dead = pipeline.wait_count("SELECT count(*) FROM paystream.dead_letters", 2, Duration::ZERO).await;
    assert_eq!(dead, 2, "the duplicate is no new dead letter");
    let journals = "SELECT count(*) FROM paystream.journal WHERE reference LIKE '%pay_unsigned%'";
    let journals = pipeline.db.query_one(journals, &[]).await.unwrap().get::<_, i64>(0);
    assert_eq!(journals, 1, "one journal for the payment");
    assert_eq!(pipeline.wait_count("SELECT count(*) FROM paystream.outbox", 0, Duration::from_secs(30)).await, 0);
    let events = pipeline.read_topic(&config.kafka.events_topic, Duration::from_secs(30), |r| !r.is_empty()).await;
    let applied = events
        .iter()
        .filter_map(|r| decode::<PaymentEvent>(&r.payload).ok())
        .filter(|e| e.payment_id == "pay_unsigned" && e.event_type == EventType::PaymentApplied)
        .count();
    assert_eq!(applied, 1, "one PaymentApplied event");
    pipeline.stop().await;
}
