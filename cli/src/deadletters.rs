//! `paystream deadletters list|show|redrive`: what the processor could not apply, and the way
//! back once the cause is fixed.
//!
//! A re-drive produces a dead letter's bytes, unchanged, to the inbound topic under the
//! contract's key (the command's installment, or its payment id), with the `paystream-mac`
//! header under the first command key (the processor applies nothing without it) and a
//! `paystream-redrive-of` header naming the dead letter, then marks the row. Applying stays
//! at most once: the processor dedupes on the provider's ids, so re-driving a command that
//! was applied meanwhile, or twice, changes nothing. Only commands are re-driven: the bytes
//! must decode and pass the contract's checks, or the processor would dead-letter them again.
//! Dead letters of unprocessable webhooks hold the provider's raw body, not a command (ingest
//! could not make one): they are refused, and the way back for them is the provider's resend
//! once ingest can normalise them.

use std::time::Duration;

use anyhow::Context as _;
use clap::Subcommand;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};

use paystream_common::command_auth::{self, CommandAuth};
use paystream_common::config::DbPart;
use paystream_common::{kafka, postgres, Config};
use paystream_schemas::{decode_inbound, Inbound, PaymentCommand};

/// The header of a re-driven record that names its dead letter (`paystream.dead_letter.id`).
pub const REDRIVE_HEADER: &str = "paystream-redrive-of";

const SELECT: &str = include_str!("../sql/dead_letter_select.sql");
const SELECT_FOR_UPDATE: &str = include_str!("../sql/dead_letter_select_for_update.sql");
const MARK_REDRIVEN: &str = include_str!("../sql/dead_letter_update_redriven.sql");

#[derive(Subcommand)]
pub enum DeadLetters {
    /// List dead letters, oldest first.
    List {
        #[command(flatten)]
        filter: Filter,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Show a dead letter whole: reason, source, re-drives, and its bytes (decoded when they
    /// are a command, as text when they are a webhook body).
    Show {
        /// Its id (`paystream.dead_letters.id`).
        id: i64,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Produce dead letters' commands to the inbound topic again, signed. A dry run unless
    /// `--apply`: it says what it would send and what it refuses.
    Redrive {
        #[command(flatten)]
        filter: Filter,
        /// Send, and mark the rows re-driven.
        #[arg(long)]
        apply: bool,
        /// Re-drive rows that were re-driven before too (the processor dedupes them).
        #[arg(long)]
        again: bool,
    },
}

/// Which dead letters.
#[derive(clap::Args)]
pub struct Filter {
    /// This id (repeat for several).
    #[arg(long = "id")]
    ids: Vec<i64>,
    /// Whose reason contains this text (case-insensitive).
    #[arg(long)]
    reason: Option<String>,
    /// Received at or after: RFC 3339, or a span before now (`90s`, `15m`, `2h`, `7d`).
    #[arg(long)]
    since: Option<String>,
    /// Received before: RFC 3339, or a span before now.
    #[arg(long)]
    until: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 1000)]
    limit: i64,
}

impl Filter {
    fn is_empty(&self) -> bool {
        self.ids.is_empty() && self.reason.is_none() && self.since.is_none() && self.until.is_none()
    }
}

/// A dead letter row as selected.
struct Row {
    id: i64,
    reason: String,
    payload: Option<Vec<u8>>,
    source: (String, i32, i64),
    received_at: String,
    redriven_at: Option<String>,
    redrive_count: i32,
    redriven_to: Option<(i32, i64)>,
}

impl Row {
    fn summary(&self) -> Value {
        json!({
            "id": self.id,
            "reason": self.reason,
            "source_topic": self.source.0,
            "source_partition": self.source.1,
            "source_offset": self.source.2,
            "received_at": self.received_at,
            "bytes": self.payload.as_ref().map_or(0, Vec::len),
            "redriven_at": self.redriven_at,
            "redrive_count": self.redrive_count,
            "redrive_partition": self.redriven_to.map(|t| t.0),
            "redrive_offset": self.redriven_to.map(|t| t.1),
        })
    }
}

/// What a re-drive would do with a dead letter's bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A valid command: produce it under this key.
    Redrive { key: String, command: String },
    /// Not a command the processor would apply: why.
    Refuse(String),
}

/// Judges a dead letter by its bytes and reason.
pub fn judge(payload: Option<&[u8]>, reason: &str) -> Verdict {
    let Some(payload) = payload else {
        return Verdict::Refuse("no bytes were kept".into());
    };
    if reason.starts_with("unprocessable webhook") {
        return Verdict::Refuse(
            "it holds the provider's webhook body, not a command: once ingest can normalise it, \
             have the provider resend it"
                .into(),
        );
    }
    match decode_inbound(payload) {
        Ok(Inbound::Command(command)) => match command.validate() {
            Ok(()) => Verdict::Redrive { key: command.key(), command: describe(&command) },
            Err(invalid) => {
                Verdict::Refuse(format!("the command is still invalid ({invalid}): it would be dead-lettered again"))
            }
        },
        Ok(Inbound::Unprocessable(_)) => Verdict::Refuse("it is an unprocessable webhook, not a command".into()),
        Err(error) => {
            Verdict::Refuse(format!("its bytes are not an inbound command ({error}): it would be dead-lettered again"))
        }
    }
}

fn describe(c: &PaymentCommand) -> String {
    format!(
        "{} {} {} {} of {} (webhook {})",
        c.provider,
        c.kind.as_str(),
        c.payment_id,
        c.amount,
        c.currency,
        c.webhook_id
    )
}

fn command_json(c: &PaymentCommand) -> Value {
    json!({
        "webhook_id": c.webhook_id,
        "provider": c.provider,
        "kind": c.kind.as_str(),
        "rail": c.rail,
        "payment_id": c.payment_id,
        "installment_id": c.installment_id.map(|u| u.to_string()),
        "amount": c.amount.to_string(),
        "currency": c.currency,
        "occurred_at_ms": c.occurred_at_ms,
        "received_at_ms": c.received_at_ms,
    })
}

async fn select(client: &tokio_postgres::Client, filter: &Filter) -> anyhow::Result<Vec<Row>> {
    let now = time::OffsetDateTime::now_utc();
    let since = filter.since.as_deref().map(|t| crate::when::parse(t, now).map(crate::when::format)).transpose()?;
    let until = filter.until.as_deref().map(|t| crate::when::parse(t, now).map(crate::when::format)).transpose()?;
    let statement = client.prepare(SELECT).await?;
    let rows = client.query(&statement, &[&filter.ids, &filter.reason, &since, &until, &filter.limit]).await?;
    Ok(rows
        .iter()
        .map(|r| Row {
            id: r.get(0),
            reason: r.get(1),
            payload: r.get(2),
            source: (r.get(3), r.get(4), r.get(5)),
            received_at: r.get(6),
            redriven_at: r.get(7),
            redrive_count: r.get(8),
            redriven_to: r.get::<_, Option<i32>>(9).zip(r.get::<_, Option<i64>>(10)),
        })
        .collect())
}

/// Runs a `deadletters` subcommand.
pub async fn run(config: &Config, command: DeadLetters) -> anyhow::Result<()> {
    let mut client = postgres::connect(&config.postgres.as_part(DbPart::Jobs), "paystream-cli", None).await?;
    match command {
        DeadLetters::List { filter, json } => {
            for row in select(&client, &filter).await? {
                if json {
                    println!("{}", row.summary());
                } else {
                    let redriven = match &row.redriven_at {
                        Some(at) => format!("re-driven {}x, last {at}", row.redrive_count),
                        None => "not re-driven".into(),
                    };
                    println!(
                        "{:>6}  {}  {}/{}@{}  {}  {}",
                        row.id, row.received_at, row.source.0, row.source.1, row.source.2, redriven, row.reason
                    );
                }
            }
        }
        DeadLetters::Show { id, json } => {
            let filter = Filter { ids: vec![id], reason: None, since: None, until: None, limit: 1 };
            let row = select(&client, &filter).await?.pop().with_context(|| format!("no dead letter {id}"))?;
            let payload = row.payload.as_deref().unwrap_or_default();
            let decoded = match decode_inbound(payload) {
                Ok(Inbound::Command(c)) => json!({ "command": command_json(&c) }),
                _ => match std::str::from_utf8(payload) {
                    Ok(text) => json!({ "text": text }),
                    Err(_) => json!({ "hex": hex_of(payload) }),
                },
            };
            let verdict = match judge(row.payload.as_deref(), &row.reason) {
                Verdict::Redrive { key, .. } => json!({ "redrive": "possible", "key": key }),
                Verdict::Refuse(why) => json!({ "redrive": "refused", "why": why }),
            };
            let mut all = row.summary();
            all["payload"] = decoded;
            all["redrive"] = verdict;
            if json {
                println!("{all}");
            } else {
                println!("{}", serde_json::to_string_pretty(&all)?);
            }
        }
        DeadLetters::Redrive { filter, apply, again } => {
            anyhow::ensure!(
                !filter.is_empty(),
                "name the dead letters to re-drive: --id, --reason, --since or --until"
            );
            redrive(config, &mut client, &filter, apply, again).await?;
        }
    }
    Ok(())
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn redrive(
    config: &Config,
    client: &mut tokio_postgres::Client,
    filter: &Filter,
    apply: bool,
    again: bool,
) -> anyhow::Result<()> {
    let auth = CommandAuth::new(&config.kafka.command_keys);
    anyhow::ensure!(
        auth.sign(b"", b"").is_some(),
        "kafka.command_keys is empty: a re-driven record must carry the MAC the processor checks"
    );
    let producer: Option<FutureProducer> =
        if apply { Some(kafka::producer_config(&config.kafka, "paystream-cli").create()?) } else { None };
    let timeout = Duration::from_millis(config.kafka.message_timeout_ms);
    let (mut sent, mut refused, mut skipped) = (0, 0, 0);
    for row in select(client, filter).await? {
        if row.redriven_at.is_some() && !again {
            println!("skip    #{}: re-driven already ({}); --again to send it once more", row.id, row.redrive_count);
            skipped += 1;
            continue;
        }
        let (key, what) = match judge(row.payload.as_deref(), &row.reason) {
            Verdict::Redrive { key, command } => (key, command),
            Verdict::Refuse(why) => {
                println!("refuse  #{}: {why}", row.id);
                refused += 1;
                continue;
            }
        };
        let Some(producer) = &producer else {
            println!("would   #{}: {what}, key {key}, to {}", row.id, config.kafka.inbound_topic);
            sent += 1;
            continue;
        };
        // The row stays locked from the check to the mark: two operators re-driving at once
        // send it once. A crash between the send and the commit leaves it unmarked; sending
        // it again then is a duplicate the processor ignores.
        let tx = client.transaction().await?;
        let locked = tx.query_one(&tx.prepare(SELECT_FOR_UPDATE).await?, &[&row.id]).await?;
        let payload: Vec<u8> = locked.get::<_, Option<Vec<u8>>>(0).unwrap_or_default();
        if locked.get::<_, bool>(2) && !again {
            println!("skip    #{}: re-driven meanwhile", row.id);
            skipped += 1;
            continue;
        }
        let mac = auth.sign(key.as_bytes(), &payload).unwrap_or_default();
        let id = row.id.to_string();
        let headers = OwnedHeaders::new_with_capacity(2)
            .insert(Header { key: command_auth::HEADER, value: Some(mac.as_bytes()) })
            .insert(Header { key: REDRIVE_HEADER, value: Some(id.as_bytes()) });
        let record = FutureRecord::to(&config.kafka.inbound_topic).key(&key).payload(&payload).headers(headers);
        let (partition, offset) =
            producer.send(record, timeout).await.map(|delivery| (delivery.partition, delivery.offset)).map_err(
                |(error, _)| anyhow::anyhow!("dead letter {}: the broker did not acknowledge: {error}", row.id),
            )?;
        tx.execute(&tx.prepare(MARK_REDRIVEN).await?, &[&row.id, &partition, &offset]).await?;
        tx.commit().await?;
        println!("sent    #{}: {what} -> {}/{partition}@{offset}", row.id, config.kafka.inbound_topic);
        sent += 1;
    }
    let verb = if apply { "re-driven" } else { "would be re-driven (dry run: --apply to send)" };
    println!("{sent} {verb}, {refused} refused, {skipped} skipped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use paystream_schemas::CommandKind;

    fn command(amount: &str) -> PaymentCommand {
        PaymentCommand {
            webhook_id: "evt_1".into(),
            provider: "demo-standard".into(),
            kind: CommandKind::Payment,
            rail: "pix".into(),
            payment_id: "pay_1".into(),
            installment_id: Some(uuid::Uuid::nil()),
            amount: amount.parse().unwrap(),
            currency: "BRL".into(),
            occurred_at_ms: 0,
            received_at_ms: 0,
        }
    }

    /// A valid command is re-driven under the contract's key; an invalid command, bytes that
    /// are no command, a webhook body and a row without bytes are refused, each saying why.
    #[test]
    fn only_valid_commands_are_redriven() {
        let bytes = paystream_schemas::encode(&command("10.00")).unwrap();
        match judge(Some(&bytes), "record not authenticated: no paystream-mac header") {
            Verdict::Redrive { key, command } => {
                assert_eq!(key, uuid::Uuid::nil().to_string());
                assert!(command.contains("pay_1"), "{command}");
            }
            other => panic!("{other:?}"),
        }
        let mut invalid = command("10.00");
        invalid.currency = "brl".into();
        let invalid = paystream_schemas::encode(&invalid).unwrap();
        assert!(matches!(judge(Some(&invalid), "x"), Verdict::Refuse(why) if why.contains("still invalid")));
        assert!(
            matches!(judge(Some(b"poison"), "undecodable command"), Verdict::Refuse(why) if why.contains("not an inbound command"))
        );
        assert!(matches!(
            judge(Some(br#"{"id":"evt"}"#), "unprocessable webhook from demo-pix (evt): no txid"),
            Verdict::Refuse(why) if why.contains("resend")
        ));
        assert!(matches!(judge(None, "x"), Verdict::Refuse(_)));
    }
}
