//! What the load generator sends: payments planned over open installments, each with its
//! body and (for the formats that have them) its refund, and the signature headers of each
//! request.

use rust_decimal::prelude::ToPrimitive as _;
use rust_decimal::Decimal;

use paystream_common::config::{Config, PayloadFormat, ProviderConfig, SignatureScheme};
use paystream_common::now_ms;
use paystream_ingest::signature::sign;

use super::{LoadgenError, Options};

/// One payment of the run: its webhook, and its refund as a webhook of its own.
pub(super) struct Planned {
    pub(super) body: Vec<u8>,
    pub(super) payment_id: String,
    pub(super) webhook_id: String,
    /// The full refund of this payment, as its own webhook.
    pub(super) refund: Option<(String, Vec<u8>)>,
}

/// Picks open installments and plans `count` payments over them: each installment gets a
/// share of the payments, and the last of its share pays what is left, so some installments
/// and contracts are paid in full.
pub(super) async fn plan(config: &Config, opts: &Options, format: PayloadFormat) -> Result<Vec<Planned>, LoadgenError> {
    let (client, conn) = config.postgres.url.parse::<tokio_postgres::Config>()?.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    let limit = i64::try_from(opts.count).unwrap_or(i64::MAX);
    let rows = client
        .query(
            // What is owed, charges included; overdue installments too (their payments pay
            // the charges first, then principal). Whole contracts' installments, sent
            // interleaved across the contracts (every contract's first, then every second):
            // sent contract by contract, a contract's installments arrived back to back, each
            // keyed to its own partition, and the transactions paying them queued on the
            // contract's lock, which payers spread over months never cause.
            "SELECT id, owed, currency FROM ( \
                 SELECT id, contract_id, seq, currency::text AS currency, \
                        amount_due - amount_paid + late_fee - late_fee_paid + interest - interest_paid AS owed \
                 FROM paystream.installments \
                 WHERE status IN ('open', 'partially_paid', 'overdue') ORDER BY contract_id, seq LIMIT $1 \
             ) picked ORDER BY seq, contract_id",
            &[&limit],
        )
        .await?;
    if rows.is_empty() {
        return Err(LoadgenError::NoInstallments);
    }
    let run = format!("{:08x}", opts.seed as u32 ^ (now_ms() as u32));
    let installments = rows.len() as u64;
    let per = opts.count.div_ceil(installments).max(1);
    let mut planned = Vec::with_capacity(opts.count as usize);
    for i in 0..opts.count {
        let row = &rows[(i % installments) as usize];
        let id: uuid::Uuid = row.get(0);
        let remaining: Decimal = row.get(1);
        let currency: String = row.get(2);
        let round = i / installments; // 0..per
        let share = (remaining / Decimal::from(per)).round_dp_with_strategy(2, rust_decimal::RoundingStrategy::ToZero);
        let paid_before = share * Decimal::from(round);
        let amount = if round + 1 == per { remaining - paid_before } else { share };
        let amount = if amount <= Decimal::ZERO { Decimal::new(1, 2) } else { amount };
        let payment_id = format!("pay_{run}_{i}");
        let webhook_id = format!("msg_{run}_{i}");
        let created = time_rfc3339(now_ms());
        let (body, refund) = match format {
            PayloadFormat::Paystream => {
                let event = |kind: &str, event_id: String| {
                    serde_json::json!({
                        "id": event_id,
                        "type": kind,
                        "created_at": created,
                        "data": { "payment_id": payment_id, "installment_id": id.to_string(), "amount": amount.to_string(), "currency": currency.trim(), "rail": "pix" }
                    })
                };
                let refund =
                    serde_json::to_vec(&event("payment.refunded", format!("evt_{run}_{i}_r"))).unwrap_or_default();
                (event("payment.succeeded", format!("evt_{run}_{i}")), Some((format!("msg_{run}_{i}_r"), refund)))
            }
            PayloadFormat::Pix => (
                serde_json::json!({
                    "pix": [{ "endToEndId": payment_id, "txid": id.simple().to_string(), "valor": amount.to_string(), "horario": created }]
                }),
                None,
            ),
            PayloadFormat::Stripe => {
                // Stripe amounts are integers in minor units.
                let minor = (amount * Decimal::from(100)).trunc().to_i64().unwrap_or(1);
                let currency = currency.trim().to_lowercase();
                let refund = serde_json::json!({
                    "id": format!("evt_{run}_{i}_r"),
                    "type": "charge.refunded",
                    "created": now_ms() / 1000,
                    "data": { "object": { "id": format!("ch_{run}_{i}"), "object": "charge", "payment_intent": payment_id, "amount": minor, "amount_refunded": minor, "currency": currency, "metadata": { "installment_id": id.to_string() } } }
                });
                (
                    serde_json::json!({
                        "id": format!("evt_{run}_{i}"),
                        "type": "payment_intent.succeeded",
                        "created": now_ms() / 1000,
                        "data": { "object": { "id": payment_id, "object": "payment_intent", "amount": minor, "amount_received": minor, "currency": currency, "metadata": { "installment_id": id.to_string() } } }
                    }),
                    Some((format!("evt_{run}_{i}_r"), serde_json::to_vec(&refund).unwrap_or_default())),
                )
            }
        };
        planned.push(Planned { body: serde_json::to_vec(&body).unwrap_or_default(), payment_id, webhook_id, refund });
    }
    Ok(planned)
}

pub(super) fn headers_for(p: &ProviderConfig, webhook_id: &str, body: &[u8], bad: bool) -> Vec<(&'static str, String)> {
    let now = now_ms() / 1000;
    let secret = p.secrets.first().map(|s| s.expose().to_owned()).unwrap_or_default();
    let secret = if bad { format!("{secret}-wrong") } else { secret };
    match p.scheme {
        SignatureScheme::StandardWebhooks => {
            let key = if bad { "whsec_d3Jvbmcta2V5".to_owned() } else { secret };
            sign::standard_webhooks(&key, webhook_id, now, body)
        }
        SignatureScheme::Stripe => vec![sign::stripe(&secret, now, body)],
        SignatureScheme::HmacSha256 => {
            let ts = p.timestamp_header.as_ref().map(|_| now);
            let mut h = vec![("x-signature", sign::hmac_sha256(&secret, ts, body))];
            if let Some(ts) = ts {
                h.push(("x-timestamp", ts.to_string()));
            }
            h
        }
    }
}

fn time_rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, (rem / 60) % 60, rem % 60, ms.rem_euclid(1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The RFC 3339 formatter agrees with known instants.
    #[test]
    fn rfc3339() {
        assert_eq!(time_rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(time_rfc3339(1_767_323_045_123), "2026-01-02T03:04:05.123Z");
        assert_eq!(time_rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
