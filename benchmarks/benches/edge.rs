//! Criterion benchmarks of the hot pure functions at the edge and on the wire: signature
//! verification per scheme, payload normalisation per format, and Avro single-object
//! encode/decode, and the in-memory part of a processor batch (journals checked and laid out
//! in columns, events encoded into outbox rows). Run with `cargo bench -p paystream-benchmarks`.

use std::collections::HashMap;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

use paystream_common::config::{PayloadFormat, ProviderConfig, SignatureScheme};
use paystream_ingest::payload::{normalise, Envelope};
use paystream_ingest::signature::{sign, HeaderLookup, Verifier};
use paystream_schemas::{decode, encode, EventType, PaymentCommand, PaymentEvent};

struct Headers(HashMap<String, String>);

impl HeaderLookup for Headers {
    fn header(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

fn provider(scheme: SignatureScheme, format: PayloadFormat, secret: &str) -> ProviderConfig {
    ProviderConfig::new(scheme, format, &[secret])
}

/// A paystream-format body padded to about 1 KiB with an ignored field, the size the
/// targets are stated for.
fn paystream_body() -> Vec<u8> {
    let padding = "x".repeat(700);
    format!(
        r#"{{"id":"evt_1","type":"payment.succeeded","created_at":"2026-01-02T03:04:05Z","data":{{"payment_id":"pay_123456789","installment_id":"0b6f3c0e-8f43-4f4e-9a57-7d2f1b2d3c4e","amount":"123.45","currency":"BRL","rail":"pix"}},"padding":"{padding}"}}"#
    )
    .into_bytes()
}

fn stripe_body() -> Vec<u8> {
    let padding = "x".repeat(600);
    format!(
        r#"{{"id":"evt_1","type":"payment_intent.succeeded","created":1767323045,"data":{{"object":{{"id":"pi_1","amount":12345,"amount_received":12345,"currency":"brl","metadata":{{"installment_id":"0b6f3c0e-8f43-4f4e-9a57-7d2f1b2d3c4e","note":"{padding}"}}}}}}}}"#
    )
    .into_bytes()
}

fn pix_body() -> Vec<u8> {
    let entry = r#"{"endToEndId":"E12345678202601020304abcdefghijk","txid":"0b6f3c0e8f434f4e9a577d2f1b2d3c4e","valor":"123.45","horario":"2026-01-02T03:04:05.123Z"}"#;
    format!(r#"{{"pix":[{}]}}"#, [entry; 6].join(",")).into_bytes()
}

fn edge(c: &mut Criterion) {
    let now = 1_767_323_045;
    let cases: Vec<(&str, ProviderConfig, Vec<u8>)> = vec![
        (
            "standard-webhooks+paystream",
            provider(
                SignatureScheme::StandardWebhooks,
                PayloadFormat::Paystream,
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            ),
            paystream_body(),
        ),
        ("stripe+stripe", provider(SignatureScheme::Stripe, PayloadFormat::Stripe, "whsec_bench"), stripe_body()),
        ("hmac-sha256+pix", provider(SignatureScheme::HmacSha256, PayloadFormat::Pix, "bench"), pix_body()),
    ];
    let mut group = c.benchmark_group("edge");
    for (name, p, body) in cases {
        let headers: Vec<(String, String)> = match p.scheme {
            SignatureScheme::StandardWebhooks => sign::standard_webhooks(p.secrets[0].expose(), "msg_1", now, &body)
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            SignatureScheme::Stripe => {
                let (k, v) = sign::stripe(p.secrets[0].expose(), now, &body);
                vec![(k.to_owned(), v)]
            }
            SignatureScheme::HmacSha256 => vec![
                ("x-signature".to_owned(), sign::hmac_sha256(p.secrets[0].expose(), Some(now), &body)),
                ("x-timestamp".to_owned(), now.to_string()),
            ],
        };
        let headers = Headers(headers.into_iter().collect());
        let verifier = Verifier::new(&p, 300).expect("valid provider");
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(format!("{name}/verify+normalise+encode ({} B)", body.len()), |b| {
            b.iter(|| {
                let verified = verifier.verify(&headers, &body, now).expect("valid signature");
                let env = Envelope {
                    provider: "bench",
                    webhook_id: verified.webhook_id.as_deref(),
                    received_at_ms: now * 1000,
                    livemode: None,
                };
                let commands = match normalise(p.format, &body, env).expect("valid payload") {
                    paystream_ingest::payload::Normalised::Commands(c) => c,
                    paystream_ingest::payload::Normalised::Ignored(_) => unreachable!(),
                };
                commands.iter().map(|c| encode(c).expect("encodes").len()).sum::<usize>()
            })
        });
    }
    group.finish();

    let command = PaymentCommand {
        webhook_id: "msg_1".into(),
        provider: "demo-standard".into(),
        kind: paystream_schemas::CommandKind::Payment,
        rail: "pix".into(),
        payment_id: "pay_123456789".into(),
        installment_id: Some(uuid::Uuid::from_u128(0x1234)),
        amount: "123.45".parse().expect("decimal"),
        currency: "BRL".into(),
        occurred_at_ms: 1_767_323_045_000,
        received_at_ms: 1_767_323_045_123,
    };
    let bytes = encode(&command).expect("encodes");
    let mut group = c.benchmark_group("avro");
    group.bench_function("PaymentCommand/encode", |b| b.iter(|| encode(&command).expect("encodes")));
    group.bench_function("PaymentCommand/decode", |b| {
        b.iter_batched(
            || bytes.clone(),
            |bytes| decode::<PaymentCommand>(&bytes).expect("decodes"),
            BatchSize::SmallInput,
        )
    });
    group.finish();

    // A processor batch of 500 payments between its reads and its writes: one balanced
    // journal and two events per payment, laid out as the columns of the batch inserts.
    let mut group = c.benchmark_group("processor");
    group.throughput(Throughput::Elements(500));
    group.bench_function("plan 500 payments (journals + outbox rows)", |b| {
        b.iter(|| {
            let mut journals = paystream_processor::ledger::JournalRows::default();
            let mut outbox = paystream_processor::outbox::OutboxRows::default();
            for i in 0..500u128 {
                let installment = uuid::Uuid::from_u128(i);
                let contract = uuid::Uuid::from_u128(i + 1_000_000);
                let amount: rust_decimal::Decimal = rust_decimal::Decimal::new(12_345, 2);
                let mut journal =
                    paystream_processor::ledger::Journal::new("payment", format!("demo-standard/pay_{i}"), "BRL");
                journal
                    .debit(paystream_processor::ledger::provider_clearing("demo-standard"), amount)
                    .credit(paystream_processor::ledger::receivable(contract), amount);
                journals.push(journal).expect("balanced");
                for event_type in [EventType::PaymentApplied, EventType::InstallmentPaid] {
                    let event = PaymentEvent {
                        event_id: paystream_processor::outbox::event_id(event_type, &format!("pay_{i}")),
                        event_type,
                        occurred_at_ms: 1_767_323_045_000,
                        aggregate_id: installment,
                        provider: "demo-standard".into(),
                        payment_id: format!("pay_{i}"),
                        installment_id: Some(installment),
                        contract_id: Some(contract),
                        amount,
                        currency: "BRL".into(),
                        reason: None,
                        allocation: None,
                        business_date: None,
                    };
                    outbox.push_event("paystream.payments.events.v1", &event).expect("encodes");
                }
            }
            (journals.journal.len(), outbox.len())
        })
    });
    group.finish();
}

#[allow(missing_docs)]
mod harness {
    use super::*;
    criterion_group!(benches, edge);
}
criterion_main!(harness::benches);
