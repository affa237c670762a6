//! `paystream payments show PROVIDER PAYMENT_ID`: "did payment X arrive, and what became of
//! it?" in one place: the payment and its allocation, its journals and postings, its
//! reversals (applied, and held in `paystream.pending_reversal` for a payment not recorded
//! yet), its events (still in the outbox, or published: type, id, topic, partition, offset),
//! and where its command sat on the inbound topic.

use std::time::Duration;

use anyhow::Context as _;
use serde_json::{json, Value};
use uuid::Uuid;

use paystream_common::config::DbPart;
use paystream_common::outbox::Frames;
use paystream_common::{postgres, Config};
use paystream_schemas::{decode, PaymentEvent};

const PAYMENT: &str = include_str!("../sql/payment_select.sql");
const REVERSALS: &str = include_str!("../sql/reversal_select_by_payment.sql");
const PENDING: &str = include_str!("../sql/pending_reversal_select_by_payment.sql");
const JOURNALS: &str = include_str!("../sql/journal_select_by_ids.sql");
const POSTINGS: &str = include_str!("../sql/posting_select_by_journals.sql");
const OUTBOX: &str = include_str!("../sql/outbox_select_by_lane.sql");
const REDRIVEN_FROM: &str = include_str!("../sql/dead_letter_select_by_redrive.sql");

/// How long after a fact's commit its event is looked for on the events topic: the relay
/// publishes within milliseconds when it runs; the record's timestamp is the commit's, so a
/// relay that was down publishes late but still inside the window.
const EVENT_WINDOW_MS: i64 = 60_000;

/// `paystream payments` subcommands.
#[derive(clap::Subcommand)]
pub enum Payments {
    /// Everything about one payment, by the provider's name and the provider's payment id.
    Show {
        /// The configured provider name (e.g. demo-standard).
        provider: String,
        /// The provider's payment id (Stripe: the PaymentIntent `pi_...`; Pix: the endToEndId).
        payment_id: String,
        /// As one JSON object, for scripts.
        #[arg(long)]
        json: bool,
        /// Do not search the events topic (the database alone).
        #[arg(long)]
        no_kafka: bool,
    },
}

/// Runs a `payments` subcommand; `Ok(false)` when the payment is not known.
pub async fn run(config: &Config, command: Payments) -> anyhow::Result<bool> {
    let Payments::Show { provider, payment_id, json, no_kafka } = command;
    let client = postgres::connect(&config.postgres.as_part(DbPart::Jobs), "paystream-cli", None).await?;
    let key: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&provider, &payment_id];
    let payment = client.query_opt(PAYMENT, &key).await?;
    let reversals = client.query(REVERSALS, &key).await?;
    let pending = client.query(PENDING, &key).await?;

    let mut report = json!({ "provider": provider, "payment_id": payment_id });
    let mut journal_ids: Vec<Uuid> = Vec::new();
    let mut times_ms: Vec<i64> = Vec::new();
    let mut installment: Option<Uuid> = None;
    if let Some(p) = &payment {
        installment = p.get(0);
        journal_ids.extend(p.get::<_, Option<Uuid>>(11));
        times_ms.push(p.get(14));
        let (partition, offset): (i32, i64) = (p.get(15), p.get(16));
        let redriven = client.query_opt(REDRIVEN_FROM, &[&partition, &offset]).await?;
        report["payment"] = json!({
            "installment_id": installment.map(|u| u.to_string()),
            "contract_id": p.get::<_, Option<Uuid>>(1).map(|u| u.to_string()),
            "rail": p.get::<_, String>(2),
            "amount": p.get::<_, String>(3),
            "currency": p.get::<_, String>(4).trim(),
            "status": p.get::<_, String>(5),
            "reason": p.get::<_, Option<String>>(6),
            "allocation": {
                "applied": p.get::<_, String>(7),
                "credited": p.get::<_, String>(8),
                "reversed": p.get::<_, String>(9),
                "refunded": p.get::<_, String>(10),
                // What is applied now to the installment's charges (principal is the rest).
                "to_late_fee": p.get::<_, String>(17),
                "to_interest": p.get::<_, String>(18),
            },
            "journal_id": p.get::<_, Option<Uuid>>(11).map(|u| u.to_string()),
            "occurred_at": p.get::<_, String>(12),
            "applied_at": p.get::<_, String>(13),
        });
        report["inbound"] = json!({
            "topic": config.kafka.inbound_topic,
            "partition": partition,
            "offset": offset,
            "redrive_of_dead_letter": redriven.map(|r| json!({ "id": r.get::<_, i64>(0), "reason": r.get::<_, String>(1) })),
        });
    }
    report["reversals"] = reversals
        .iter()
        .map(|r| {
            journal_ids.extend(r.get::<_, Option<Uuid>>(6));
            times_ms.push(r.get(8));
            json!({
                "reversal_id": r.get::<_, String>(0),
                "kind": r.get::<_, String>(1),
                "amount": r.get::<_, String>(2),
                "applied_amount": r.get::<_, String>(3),
                "status": r.get::<_, String>(4),
                "reason": r.get::<_, Option<String>>(5),
                "journal_id": r.get::<_, Option<Uuid>>(6).map(|u| u.to_string()),
                "reversed_at": r.get::<_, String>(7),
            })
        })
        .collect();
    report["held_reversals"] = pending
        .iter()
        .map(|r| {
            json!({
                "reversal_id": r.get::<_, String>(0),
                "kind": r.get::<_, String>(1),
                "amount": r.get::<_, String>(2),
                "currency": r.get::<_, String>(3).trim(),
                "inbound": { "partition": r.get::<_, i32>(4), "offset": r.get::<_, i64>(5) },
                "received_at": r.get::<_, String>(6),
            })
        })
        .collect();
    if payment.is_none() && reversals.is_empty() && pending.is_empty() {
        if json {
            report["found"] = json!(false);
            println!("{report}");
        } else {
            println!("no payment {payment_id} of {provider}: not received, or under another provider name or id");
        }
        return Ok(false);
    }
    report["found"] = json!(true);

    let postings = client.query(POSTINGS, &[&journal_ids]).await?;
    report["journals"] = client
        .query(JOURNALS, &[&journal_ids])
        .await?
        .iter()
        .map(|j| {
            let id: Uuid = j.get(0);
            json!({
                "id": id.to_string(),
                "kind": j.get::<_, String>(1),
                "reference": j.get::<_, String>(2),
                "created_at": j.get::<_, String>(3),
                "postings": postings.iter().filter(|p| p.get::<_, Uuid>(0) == id).map(|p| json!({
                    "line": p.get::<_, i16>(1),
                    "account": p.get::<_, String>(2),
                    "currency": p.get::<_, String>(3).trim(),
                    "amount": p.get::<_, String>(4),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();

    // Events still in the outbox: payment facts are keyed by the installment, so their rows
    // sit in that key's lane.
    let mut unpublished = Vec::new();
    if let Some(installment) = installment {
        let lane = paystream_common::outbox_lane(&installment.to_string());
        for row in client.query(OUTBOX, &[&lane]).await? {
            let frames: Vec<u8> = row.get(2);
            for frame in Frames::new(&frames).flatten() {
                let Ok(event) = decode::<PaymentEvent>(frame.payload) else { continue };
                if event.provider == provider && event.payment_id == payment_id {
                    unpublished.push(json!({
                        "event_id": frame.event_id.to_string(),
                        "event_type": frame.event_type,
                        "topic": row.get::<_, String>(1),
                        "outbox_id": row.get::<_, i64>(0),
                        "written_at": row.get::<_, String>(3),
                    }));
                }
            }
        }
    }
    report["events_in_outbox"] = Value::Array(unpublished);
    if !no_kafka {
        let config = config.clone();
        let (provider, payment_id) = (provider.clone(), payment_id.clone());
        let published = tokio::task::spawn_blocking(move || {
            crate::events::find(&config, &provider, &payment_id, &times_ms, EVENT_WINDOW_MS, Duration::from_secs(30))
        })
        .await?
        .context("searching the events topic")?;
        report["events_published"] = Value::Array(
            published
                .into_iter()
                .map(|e| {
                    json!({
                        "event_type": e["event_type"], "event_id": e["event_id"], "topic": e["topic"],
                        "partition": e["partition"], "offset": e["offset"], "amount": e["amount"], "reason": e["reason"],
                    })
                })
                .collect(),
        );
    }
    if json {
        println!("{report}");
    } else {
        print_text(&report);
    }
    Ok(true)
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn print_text(r: &Value) {
    println!("payment {} of {}", text(&r["payment_id"]), text(&r["provider"]));
    let p = &r["payment"];
    if p.is_null() {
        println!("  not recorded (only reversals name it)");
    } else {
        println!(
            "  {} {} {} by {}  installment {}  contract {}",
            text(&p["status"]),
            text(&p["amount"]),
            text(&p["currency"]),
            text(&p["rail"]),
            text(&p["installment_id"]),
            text(&p["contract_id"])
        );
        if !p["reason"].is_null() {
            println!("  reason: {}", text(&p["reason"]));
        }
        let a = &p["allocation"];
        println!(
            "  allocation: applied {} (late fee {}, interest {})  credited {}  reversed {}  refunded {}",
            text(&a["applied"]),
            text(&a["to_late_fee"]),
            text(&a["to_interest"]),
            text(&a["credited"]),
            text(&a["reversed"]),
            text(&a["refunded"])
        );
        println!("  occurred {}  applied {}", text(&p["occurred_at"]), text(&p["applied_at"]));
        let i = &r["inbound"];
        println!("  command: {} partition {} offset {}", text(&i["topic"]), text(&i["partition"]), text(&i["offset"]));
        if !i["redrive_of_dead_letter"].is_null() {
            println!("  re-driven from dead letter #{}", text(&i["redrive_of_dead_letter"]["id"]));
        }
    }
    for j in r["journals"].as_array().into_iter().flatten() {
        println!(
            "journal {} {} ({}) {}",
            text(&j["id"]),
            text(&j["kind"]),
            text(&j["reference"]),
            text(&j["created_at"])
        );
        for p in j["postings"].as_array().into_iter().flatten() {
            println!(
                "  {:>3} {:<48} {} {:>14}",
                text(&p["line"]),
                text(&p["account"]),
                text(&p["currency"]),
                text(&p["amount"])
            );
        }
    }
    for v in r["reversals"].as_array().into_iter().flatten() {
        println!(
            "reversal {} {} {} (booked {}) {}  {}",
            text(&v["reversal_id"]),
            text(&v["kind"]),
            text(&v["amount"]),
            text(&v["applied_amount"]),
            text(&v["status"]),
            text(&v["reversed_at"])
        );
    }
    for v in r["held_reversals"].as_array().into_iter().flatten() {
        println!(
            "held reversal {} {} {} {} since {} (waits for its payment)",
            text(&v["reversal_id"]),
            text(&v["kind"]),
            text(&v["amount"]),
            text(&v["currency"]),
            text(&v["received_at"])
        );
    }
    for e in r["events_in_outbox"].as_array().into_iter().flatten() {
        println!(
            "event {} {} in the outbox (row {}), not yet published",
            text(&e["event_type"]),
            text(&e["event_id"]),
            text(&e["outbox_id"])
        );
    }
    for e in r["events_published"].as_array().into_iter().flatten() {
        println!(
            "event {} {} on {} partition {} offset {}",
            text(&e["event_type"]),
            text(&e["event_id"]),
            text(&e["topic"]),
            text(&e["partition"]),
            text(&e["offset"])
        );
    }
}
