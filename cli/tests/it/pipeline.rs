//! The skeleton's promises, end to end: a signed webhook becomes one balanced payment and one
//! Avro event; redeliveries change nothing; forgeries never reach Kafka; poison is kept.

use std::time::Duration;

use apache_avro::types::Value;
use rust_decimal::Decimal;

use crate::harness::Pipeline;

const WAIT: Duration = Duration::from_secs(30);

/// Decodes a single-object encoded event with nothing but the `.avsc` file and apache-avro,
/// as a downstream team would: marker, fingerprint of the file's canonical form, body.
fn decode_with_avsc(bytes: &[u8]) -> Vec<(String, Value)> {
    let avsc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../schemas/avro/PaymentEvent.avsc")).unwrap();
    let schema = apache_avro::Schema::parse_str(&avsc).unwrap();
    assert_eq!(&bytes[..2], &[0xC3, 0x01], "single-object marker");
    let canonical = paystream_schemas::parsing_canonical_form(&avsc).unwrap();
    let fingerprint = paystream_schemas::fingerprint64(canonical.as_bytes());
    assert_eq!(&bytes[2..10], &fingerprint.to_le_bytes(), "fingerprint of PaymentEvent.avsc");
    match apache_avro::from_avro_datum(&schema, &mut &bytes[10..], None).unwrap() {
        Value::Record(fields) => fields,
        other => panic!("not a record: {other:?}"),
    }
}

fn field<'a>(fields: &'a [(String, Value)], name: &str) -> &'a Value {
    &fields.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("field {name}")).1
}

/// A signed webhook is accepted (202), applied once with a balanced journal, and comes out of
/// the events topic as an Avro `PaymentApplied` keyed by installment, with the contract headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn signed_webhook_becomes_balanced_payment_and_avro_event() {
    let p = Pipeline::start().await;
    let (installment, due) = p.installments().await[0];
    let (headers, body) = p.payment("msg_e2e_1", "pay_e2e_1", installment, "40.00");
    let (status, text) = p.post("demo-standard", &headers, &body).await;
    assert_eq!(status, 202, "{text}");

    let events = p.read_topic(&p.config.kafka.events_topic, WAIT, |r| !r.is_empty()).await;
    assert_eq!(events.len(), 1, "one event for one payment");
    let e = &events[0];
    assert_eq!(e.key.as_deref(), Some(installment.to_string().as_str()));
    assert_eq!(e.headers["event_type"], "PaymentApplied");
    let fields = decode_with_avsc(&e.payload);
    assert_eq!(field(&fields, "event_type"), &Value::String("PaymentApplied".into()));
    assert_eq!(field(&fields, "payment_id"), &Value::String("pay_e2e_1".into()));
    assert_eq!(field(&fields, "event_id"), &Value::String(e.headers["event_id"].clone()));
    let schema_fp: String = e.payload[2..10].iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(e.headers["schema_fingerprint"], schema_fp);
    assert_eq!(schema_fp, "6d28e2682af74042", "PaymentEvent.avsc (v2) fingerprint as fastavro prints it");
    let decoded = paystream_schemas::decode::<paystream_schemas::PaymentEvent>(&e.payload).unwrap();
    assert_eq!(decoded.amount, "40.00".parse::<Decimal>().unwrap());

    let row =
        p.db.query_one("SELECT status, amount_paid FROM paystream.installments WHERE id = $1", &[&installment])
            .await
            .unwrap();
    assert_eq!(row.get::<_, String>(0), if due == "40.00".parse().unwrap() { "paid" } else { "partially_paid" });
    assert_eq!(row.get::<_, Decimal>(1), "40.00".parse::<Decimal>().unwrap());
    let unbalanced: i64 = p
        .db
        .query_one("SELECT count(*) FROM (SELECT journal_id FROM paystream.posting GROUP BY journal_id HAVING sum(amount) <> 0) j", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(unbalanced, 0);
    let tb =
        p.db.query_one("SELECT debits, credits FROM paystream.trial_balance WHERE currency = 'BRL'", &[])
            .await
            .unwrap();
    assert_eq!(tb.get::<_, Decimal>(0), tb.get::<_, Decimal>(1));
    let clearing: Decimal =
        p.db.query_one(
            "SELECT balance FROM paystream.account_balances WHERE account = 'provider_clearing:demo-standard'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(clearing, "40.00".parse::<Decimal>().unwrap());
    p.stop().await;
}

/// The same webhook delivered three times is accepted three times (a provider's retry is
/// always safe) and gives one payment, one journal and one event.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_webhook_three_times_is_one_payment_and_one_event() {
    let p = Pipeline::start().await;
    let (installment, _) = p.installments().await[1];
    let (headers, body) = p.payment("msg_dup_1", "pay_dup_1", installment, "10.00");
    for _ in 0..3 {
        assert_eq!(p.post("demo-standard", &headers, &body).await.0, 202);
    }
    // A second, distinct payment afterwards: when its event is out, the three deliveries
    // before it on the same partition have all been applied.
    let (headers, body) = p.payment("msg_dup_2", "pay_dup_2", installment, "1.00");
    assert_eq!(p.post("demo-standard", &headers, &body).await.0, 202);
    let events = p
        .read_topic(&p.config.kafka.events_topic, WAIT, |r| {
            r.iter().any(|e| {
                paystream_schemas::decode::<paystream_schemas::PaymentEvent>(&e.payload)
                    .is_ok_and(|e| e.payment_id == "pay_dup_2")
            })
        })
        .await;
    let decoded: Vec<_> = events
        .iter()
        .map(|e| paystream_schemas::decode::<paystream_schemas::PaymentEvent>(&e.payload).unwrap())
        .collect();
    assert_eq!(decoded.iter().filter(|e| e.payment_id == "pay_dup_1").count(), 1, "{decoded:?}");
    let payments: i64 =
        p.db.query_one("SELECT count(*) FROM paystream.payment WHERE provider_payment_id = 'pay_dup_1'", &[])
            .await
            .unwrap()
            .get(0);
    assert_eq!(payments, 1);
    let paid: Decimal =
        p.db.query_one("SELECT amount_paid FROM paystream.installments WHERE id = $1", &[&installment])
            .await
            .unwrap()
            .get(0);
    assert_eq!(paid, "11.00".parse::<Decimal>().unwrap());
    p.stop().await;
}

/// A forged signature (and a signed webhook whose id or timestamp was changed) gets 401 and
/// nothing reaches Kafka; the other refusals of the contract answer with their status and a
/// reason. (A signed webhook that cannot be normalised is not refused: see
/// `money::signed_webhooks_that_cannot_be_normalised_become_dead_letters`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_and_malformed_webhooks_never_reach_kafka() {
    let p = Pipeline::start().await;
    let (installment, _) = p.installments().await[2];
    let (mut headers, body) = p.payment("msg_bad_1", "pay_bad_1", installment, "5.00");
    let forged = headers.iter().find(|(k, _)| *k == "webhook-signature").unwrap().1.replace("v1,", "v1,AAAA");
    headers.retain(|(k, _)| *k != "webhook-signature");
    headers.push(("webhook-signature", forged));
    let (status, text) = p.post("demo-standard", &headers, &body).await;
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("signature"), "{text}");

    // Signed correctly, but stale: replay protection.
    let secret = p.config.providers["demo-standard"].secrets[0].expose().to_owned();
    let stale = paystream_ingest::signature::sign::standard_webhooks(
        &secret,
        "msg_bad_2",
        crate::harness::now_s() - 3600,
        &body,
    );
    assert_eq!(p.post("demo-standard", &stale, &body).await.0, 401);
    // Header fields tampered with after signing: another id, a moved timestamp.
    let (mut h, b) = p.payment("msg_bad_6", "pay_bad_6", installment, "5.00");
    h.iter_mut().filter(|(k, _)| *k == "webhook-id").for_each(|(_, v)| *v = "msg_other".into());
    assert_eq!(p.post("demo-standard", &h, &b).await.0, 401, "a changed webhook-id");
    let (mut h, b) = p.payment("msg_bad_7", "pay_bad_7", installment, "5.00");
    h.iter_mut()
        .filter(|(k, _)| *k == "webhook-timestamp")
        .for_each(|(_, v)| *v = (v.parse::<i64>().unwrap() - 1).to_string());
    assert_eq!(p.post("demo-standard", &h, &b).await.0, 401, "a changed webhook-timestamp");
    // Unknown provider, wrong content type.
    let (h, b) = p.payment("msg_bad_3", "pay_bad_3", installment, "5.00");
    assert_eq!(p.post("nobody", &h, &b).await.0, 404);
    let response = p
        .http
        .post(format!("http://{}/webhooks/demo-standard", p.ingest))
        .header("content-type", "text/plain")
        .body("hi")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 415);
    let big = vec![b' '; p.config.ingest.body_limit_bytes + 1];
    let signed =
        paystream_ingest::signature::sign::standard_webhooks(&secret, "msg_bad_5", crate::harness::now_s(), &big);
    assert_eq!(p.post("demo-standard", &signed, &big).await.0, 413);

    let inbound = p.read_topic(&p.config.kafka.inbound_topic, Duration::from_secs(3), |_| false).await;
    assert!(inbound.is_empty(), "nothing refused may reach Kafka: {inbound:?}");
    p.stop().await;
}

/// Past its provider's rate limit a webhook gets 429 with `Retry-After` and a reason, and
/// only the accepted ones reach Kafka; other providers are not limited by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn over_the_provider_rate_limit_answers_429_with_retry_after() {
    let p = Pipeline::start_with(|c| {
        let limited = c.providers.get_mut("demo-standard").unwrap();
        limited.rate_per_second = 1;
        limited.burst = 2;
    })
    .await;
    let (installment, _) = p.installments().await[3];
    let mut accepted = 0;
    let mut limited = 0;
    for i in 0..5 {
        let (headers, body) = p.payment(&format!("msg_rl_{i}"), &format!("pay_rl_{i}"), installment, "1.00");
        let mut request = p
            .http
            .post(format!("http://{}/webhooks/demo-standard", p.ingest))
            .header("content-type", "application/json")
            .body(body);
        for (k, v) in &headers {
            request = request.header(*k, v);
        }
        let response = request.send().await.unwrap();
        match response.status().as_u16() {
            202 => accepted += 1,
            429 => {
                let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
                assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
                let text = response.text().await.unwrap();
                assert!(text.contains("rate"), "{text}");
                limited += 1;
            }
            other => panic!("unexpected {other}: {}", response.text().await.unwrap()),
        }
    }
    assert_eq!((accepted, limited), (2, 3), "burst 2, then limited");
    let inbound = p.read_topic(&p.config.kafka.inbound_topic, Duration::from_secs(5), |seen| seen.len() >= 3).await;
    assert_eq!(inbound.len(), 2, "only the accepted webhooks reach Kafka");
    p.stop().await;
}

/// Undecodable bytes on the inbound topic become a dead-letter row and a dead-letter event
/// with the original bytes, and the partition moves on to the next message.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poison_message_is_dead_lettered_and_the_partition_moves_on() {
    let p = Pipeline::start().await;
    let (installment, _) = p.installments().await[3];
    let key = installment.to_string();
    p.produce_raw(&key, b"not avro at all", true).await;
    let (headers, body) = p.payment("msg_after_poison", "pay_after_poison", installment, "2.00");
    assert_eq!(p.post("demo-standard", &headers, &body).await.0, 202);
    let n = p
        .wait_count("SELECT count(*) FROM paystream.payment WHERE provider_payment_id = 'pay_after_poison'", 1, WAIT)
        .await;
    assert_eq!(n, 1, "the message after the poison was applied");
    let row = p.db.query_one("SELECT reason, payload, source_topic FROM paystream.dead_letters", &[]).await.unwrap();
    assert!(row.get::<_, String>(0).contains("undecodable"));
    assert_eq!(row.get::<_, Vec<u8>>(1), b"not avro at all");
    assert_eq!(row.get::<_, String>(2), p.config.kafka.inbound_topic);
    let dead = p.read_topic(&p.config.kafka.deadletter_topic, WAIT, |r| !r.is_empty()).await;
    let letter = paystream_schemas::decode::<paystream_schemas::DeadLetter>(&dead[0].payload).unwrap();
    assert_eq!(letter.payload, b"not avro at all");
    p.stop().await;
}

/// With the broker down, ingest answers 503 with `Retry-After` within its bounded produce
/// timeout and acknowledges nothing; once the broker is back it accepts again, and every
/// webhook that got a 202 is applied (a 503'd one may or may not have landed; the
/// provider's retry is a no-op either way).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_down_answers_503_and_recovers() {
    let mut broker = crate::harness::Broker::start().await;
    let addr = broker.addr.clone();
    let p = Pipeline::start_with(|c| {
        c.kafka.brokers = addr;
        c.kafka.message_timeout_ms = 2000;
        c.ingest.produce_timeout_ms = 2000;
    })
    .await;
    let installments = p.installments().await;
    let (headers, body) = p.payment("msg_up_1", "pay_up_1", installments[0].0, "1.00");
    assert_eq!(p.post("demo-standard", &headers, &body).await.0, 202);

    broker.kill();
    let (headers, body) = p.payment("msg_down_1", "pay_down_1", installments[1].0, "1.00");
    let response = p
        .http
        .post(format!("http://{}/webhooks/demo-standard", p.ingest))
        .header("content-type", "application/json")
        .headers(headers.iter().map(|(k, v)| (k.parse().unwrap(), v.parse().unwrap())).collect())
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 503);
    assert!(response.headers().contains_key("retry-after"));

    broker.restart().await;
    let mut accepted = false;
    for attempt in 0..60 {
        let (headers, body) = p.payment(&format!("msg_back_{attempt}"), "pay_back_1", installments[2].0, "1.00");
        if p.post("demo-standard", &headers, &body).await.0 == 202 {
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(accepted, "ingest accepts again once the broker is back");
    let n = p
        .wait_count(
            "SELECT count(*) FROM paystream.payment WHERE provider_payment_id IN ('pay_up_1', 'pay_back_1')",
            2,
            WAIT,
        )
        .await;
    assert_eq!(n, 2, "every 202 was applied");
    p.stop().await;
}

/// A command whose amount decodes (the wire's decimal holds up to 16 bytes) but is beyond
/// what an event can carry (precision 20): dead-lettered as invalid, and the partition moves
/// on. (Before, encoding its PaymentApplied failed with a fatal error that stopped every
/// partition, and after a restart the same message came first again.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_amount_too_large_for_the_wire_is_dead_lettered_not_fatal() {
    use paystream_schemas::{PaymentCommand, Record as _};
    let p = Pipeline::start().await;
    let (installment, _) = p.installments().await[1];
    let schema = &PaymentCommand::schema().schema;
    // 10^24 units at scale 2: a 10-byte big-endian decimal.
    let huge = (10u128.pow(26)).to_be_bytes().iter().copied().skip_while(|b| *b == 0).collect::<Vec<u8>>();
    let value = Value::Record(vec![
        ("webhook_id".into(), Value::String("msg_huge".into())),
        ("provider".into(), Value::String("demo-standard".into())),
        ("kind".into(), Value::String("payment".into())),
        ("rail".into(), Value::String("pix".into())),
        ("payment_id".into(), Value::String("pay_huge".into())),
        ("installment_id".into(), Value::Union(1, Box::new(Value::String(installment.to_string())))),
        ("amount".into(), Value::Decimal(apache_avro::Decimal::from(huge))),
        ("currency".into(), Value::String("BRL".into())),
        ("occurred_at".into(), Value::TimestampMillis(1)),
        ("received_at".into(), Value::TimestampMillis(1)),
    ]);
    let mut bytes = vec![0xC3, 0x01];
    bytes.extend_from_slice(&PaymentCommand::schema().fingerprint.to_le_bytes());
    bytes.extend_from_slice(&apache_avro::to_avro_datum(schema, value).unwrap());
    let decoded = paystream_schemas::decode::<PaymentCommand>(&bytes).unwrap();
    assert!(paystream_schemas::encode(&decoded).is_err(), "decodes, but the wire cannot carry it back");
    p.produce_raw(&installment.to_string(), &bytes, true).await;
    let (headers, body) = p.payment("msg_after_huge", "pay_after_huge", installment, "2.00");
    assert_eq!(p.post("demo-standard", &headers, &body).await.0, 202);
    let n = p
        .wait_count("SELECT count(*) FROM paystream.payment WHERE provider_payment_id = 'pay_after_huge'", 1, WAIT)
        .await;
    assert_eq!(n, 1, "the partition moved on");
    let reason: String = p.db.query_one("SELECT reason FROM paystream.dead_letters", &[]).await.unwrap().get(0);
    assert!(reason.contains("amount") && reason.contains("too large"), "{reason}");
    p.stop().await;
}
