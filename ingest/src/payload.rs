//! Payload formats: each provider's JSON normalised into the one `PaymentCommand`.
//! Normalisation is strict: a missing or invalid field is an error that names the field, and
//! nothing of such a webhook becomes a command. Its signature verified, so it is a genuine
//! webhook that carries money paystream cannot apply: ingest keeps it whole as an
//! `UnprocessableWebhook` record (a dead letter in the processor) and answers 202 once that is
//! durable. Event types a format knows of but paystream does not act on are acknowledged and
//! counted, not enqueued.

use rust_decimal::Decimal;
use serde::Deserialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use uuid::Uuid;

use paystream_common::config::PayloadFormat;
use paystream_schemas::{CommandKind, PaymentCommand};

/// Commands one webhook may become, at most (a Pix webhook's payments and their refunds
/// together): each is a Kafka record produced before the 202.
pub const MAX_COMMANDS: usize = 1000;
/// Longest accepted provider id.
const MAX_ID_LEN: usize = paystream_schemas::MAX_ID_LEN;

/// A payload that cannot be normalised: answered 400 with this text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct PayloadError {
    /// The JSON path of the offending field.
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

fn bad(field: impl Into<String>, problem: impl Into<String>) -> PayloadError {
    PayloadError { field: field.into(), problem: problem.into() }
}

/// What a webhook amounts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Normalised {
    /// Commands to produce, in order.
    Commands(Vec<PaymentCommand>),
    /// A known event type paystream does not act on; acknowledged, not enqueued.
    Ignored(String),
}

/// Context the payload does not carry itself.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    /// The configured provider name.
    pub provider: &'a str,
    /// The webhook id from the signature headers, when the scheme has one.
    pub webhook_id: Option<&'a str>,
    /// When ingest received it (ms since the epoch).
    pub received_at_ms: i64,
    /// Stripe: the `livemode` events must have, when configured.
    pub livemode: Option<bool>,
}

/// Normalises `body` of the given format.
pub fn normalise(format: PayloadFormat, body: &[u8], envelope: Envelope<'_>) -> Result<Normalised, PayloadError> {
    let normalised = match format {
        PayloadFormat::Paystream => paystream(body, envelope),
        PayloadFormat::Stripe => stripe(body, envelope),
        PayloadFormat::Pix => pix(body, envelope),
    }?;
    // The contract's own rules, the same the processor applies to what it reads.
    if let Normalised::Commands(commands) = &normalised {
        for command in commands {
            command.validate().map_err(|invalid| bad(invalid.field, invalid.problem))?;
        }
    }
    Ok(normalised)
}

fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, PayloadError> {
    serde_json::from_slice(body).map_err(|e| {
        // serde_json names the path poorly; its message says what and where (line, column).
        bad("body", format!("not valid JSON of the expected shape: {}", without_values(&e.to_string())))
    })
}

/// serde_json's message without the offending value (`invalid type: string "Maria", expected
/// a decimal string` names a value of the body, which may be personal and would reach the
/// dead letter, its event and the logs): the value's kind and what was expected stay.
fn without_values(message: &str) -> String {
    for prefix in ["invalid type: ", "invalid value: ", "invalid length "] {
        if let Some(rest) = message.strip_prefix(prefix) {
            let (found, expected) = rest.split_once(", expected").unwrap_or((rest, ""));
            let kind = found.split(['"', '`']).next().unwrap_or("").trim_end();
            let sep = if expected.is_empty() { "" } else { ", expected" };
            return format!("{prefix}{kind}{sep}{expected}");
        }
    }
    message.to_owned()
}

fn check_id(field: &str, id: &str) -> Result<(), PayloadError> {
    if id.is_empty() || id.len() > MAX_ID_LEN || id.chars().any(|c| c.is_control()) {
        return Err(bad(field, format!("must be 1-{MAX_ID_LEN} printable characters")));
    }
    Ok(())
}

fn check_amount(field: &str, amount: Decimal) -> Result<Decimal, PayloadError> {
    if amount <= Decimal::ZERO {
        return Err(bad(field, "must be positive"));
    }
    if amount.normalize().scale() > 2 {
        return Err(bad(field, "at most 2 decimal places"));
    }
    if amount >= Decimal::from(1_000_000_000_000_000i64) {
        return Err(bad(field, "too large"));
    }
    let mut amount = amount;
    amount.rescale(2);
    Ok(amount)
}

fn check_currency(field: &str, currency: &str) -> Result<String, PayloadError> {
    let upper = currency.to_ascii_uppercase();
    if upper.len() != 3 || !upper.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(bad(field, "must be an ISO 4217 code"));
    }
    Ok(upper)
}

fn parse_uuid(field: &str, text: &str) -> Result<Uuid, PayloadError> {
    Uuid::parse_str(text).map_err(|_| bad(field, "must be a UUID"))
}

fn parse_time(field: &str, text: &str) -> Result<i64, PayloadError> {
    let t = OffsetDateTime::parse(text, &Rfc3339).map_err(|_| bad(field, "must be an RFC 3339 time"))?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).map_err(|_| bad(field, "out of range"))
}

// ---- paystream ----------------------------------------------------------------------------

#[derive(Deserialize)]
struct PaystreamBody {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    created_at: String,
    data: PaystreamData,
}

#[derive(Deserialize)]
struct PaystreamData {
    payment_id: String,
    installment_id: String,
    amount: String,
    currency: String,
    #[serde(default)]
    rail: Option<String>,
}

fn paystream(body: &[u8], env: Envelope<'_>) -> Result<Normalised, PayloadError> {
    let b: PaystreamBody = parse_json(body)?;
    let kind = match b.kind.as_str() {
        "payment.succeeded" => CommandKind::Payment,
        "payment.refunded" => CommandKind::Refund,
        "payment.chargeback" => CommandKind::Chargeback,
        other => return Ok(Normalised::Ignored(other.chars().take(64).collect())),
    };
    check_id("id", &b.id)?;
    check_id("data.payment_id", &b.data.payment_id)?;
    let amount: Decimal = b.data.amount.parse().map_err(|_| bad("data.amount", "must be a decimal string"))?;
    let rail = match b.data.rail.as_deref() {
        None => "other",
        Some(r @ ("pix" | "boleto" | "card" | "other")) => r,
        Some(_) => return Err(bad("data.rail", "must be pix, boleto, card or other")),
    };
    Ok(Normalised::Commands(vec![PaymentCommand {
        webhook_id: env.webhook_id.unwrap_or(&b.id).to_owned(),
        provider: env.provider.to_owned(),
        kind,
        rail: rail.to_owned(),
        payment_id: b.data.payment_id,
        installment_id: Some(parse_uuid("data.installment_id", &b.data.installment_id)?),
        amount: check_amount("data.amount", amount)?,
        currency: check_currency("data.currency", &b.data.currency)?,
        occurred_at_ms: parse_time("created_at", &b.created_at)?,
        received_at_ms: env.received_at_ms,
    }]))
}

// ---- stripe -------------------------------------------------------------------------------

#[derive(Deserialize)]
struct StripeEvent {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    created: i64,
    #[serde(default)]
    livemode: Option<bool>,
    data: StripeData,
}

#[derive(Deserialize)]
struct StripeData {
    object: StripeObject,
}

#[derive(Deserialize, Default)]
struct StripeObject {
    id: Option<String>,
    amount: Option<i64>,
    amount_received: Option<i64>,
    amount_refunded: Option<i64>,
    currency: Option<String>,
    payment_intent: Option<String>,
    status: Option<String>,
    #[serde(default)]
    metadata: std::collections::HashMap<String, String>,
}

/// Currencies whose minor unit is not 1/100 (Stripe's zero- and three-decimal lists). Their
/// amounts cannot be represented at scale 2 without a conversion paystream does not guess.
const NON_CENTESIMAL: &[&str] = &[
    "BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF",
    "BHD", "JOD", "KWD", "OMR", "TND",
];

fn stripe(body: &[u8], env: Envelope<'_>) -> Result<Normalised, PayloadError> {
    let e: StripeEvent = parse_json(body)?;
    let o = e.data.object;
    if let (Some(want), Some(got)) = (env.livemode, e.livemode) {
        if want != got {
            return Err(bad(
                "livemode",
                if want { "a test-mode event on a live endpoint" } else { "a live event on a test endpoint" },
            ));
        }
    }
    let payment_intent = || o.payment_intent.clone().ok_or_else(|| bad("data.object.payment_intent", "missing"));
    // Each kind with the id that makes it happen once: a payment by its PaymentIntent, a
    // charge's cumulative refund by the event (the processor books the difference to what it
    // booked already), a failed refund by its Refund object, a dispute by the event.
    let (kind, payment_id, webhook_id, minor) = match e.kind.as_str() {
        "payment_intent.succeeded" => (
            CommandKind::Payment,
            o.id.clone().ok_or_else(|| bad("data.object.id", "missing"))?,
            e.id.clone(),
            o.amount_received.or(o.amount).ok_or_else(|| bad("data.object.amount_received", "missing"))?,
        ),
        // The Charge's `amount_refunded` is every refund of it so far, not this one's.
        "charge.refunded" => (
            CommandKind::RefundTotal,
            payment_intent()?,
            e.id.clone(),
            o.amount_refunded.ok_or_else(|| bad("data.object.amount_refunded", "missing"))?,
        ),
        // A refund that failed (or was canceled) after `charge.refunded` booked it: the
        // money came back. Other updates of a Refund change nothing paystream books.
        "charge.refund.updated" => match o.status.as_deref() {
            Some("failed" | "canceled") => (
                CommandKind::RefundFailed,
                payment_intent()?,
                format!("{}/failed", o.id.clone().ok_or_else(|| bad("data.object.id", "missing"))?),
                o.amount.ok_or_else(|| bad("data.object.amount", "missing"))?,
            ),
            _ => return Ok(Normalised::Ignored(e.kind.chars().take(64).collect())),
        },
        "charge.dispute.created" => (
            CommandKind::Chargeback,
            payment_intent()?,
            e.id.clone(),
            o.amount.ok_or_else(|| bad("data.object.amount", "missing"))?,
        ),
        // The dispute was won: the disputed money is back.
        "charge.dispute.funds_reinstated" => (
            CommandKind::ChargebackWon,
            payment_intent()?,
            e.id.clone(),
            o.amount.ok_or_else(|| bad("data.object.amount", "missing"))?,
        ),
        other => return Ok(Normalised::Ignored(other.chars().take(64).collect())),
    };
    check_id("id", &e.id)?;
    check_id("data.object.payment_intent", &payment_id)?;
    let currency = check_currency("data.object.currency", o.currency.as_deref().unwrap_or(""))?;
    if NON_CENTESIMAL.contains(&currency.as_str()) {
        return Err(bad("data.object.currency", "only currencies with 2 decimal places are supported"));
    }
    // A dispute carries no installment of its own: the processor resolves it from the payment.
    let installment_id = match o.metadata.get("installment_id") {
        Some(id) => Some(parse_uuid("data.object.metadata.installment_id", id)?),
        None if kind != CommandKind::Payment => None,
        None => return Err(bad("data.object.metadata.installment_id", "missing")),
    };
    Ok(Normalised::Commands(vec![PaymentCommand {
        webhook_id,
        provider: env.provider.to_owned(),
        kind,
        rail: "card".to_owned(),
        payment_id,
        installment_id,
        amount: check_amount("data.object.amount", Decimal::new(minor, 2))?,
        currency,
        occurred_at_ms: e.created.saturating_mul(1000),
        received_at_ms: env.received_at_ms,
    }]))
}

// ---- pix ----------------------------------------------------------------------------------

#[derive(Deserialize)]
struct PixBody {
    pix: Vec<PixEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PixEntry {
    end_to_end_id: String,
    txid: Option<String>,
    valor: String,
    horario: String,
    #[serde(default)]
    devolucoes: Vec<PixDevolucao>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PixDevolucao {
    id: String,
    valor: String,
    horario: Option<PixHorario>,
}

#[derive(Deserialize)]
struct PixHorario {
    solicitacao: Option<String>,
    liquidacao: Option<String>,
}

/// A Pix txid carries the installment UUID's 32 hex digits without hyphens.
fn installment_from_txid(field: &str, txid: &str) -> Result<Uuid, PayloadError> {
    if txid.len() != 32 || !txid.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad(field, "must be the installment's 32 hex digits"));
    }
    parse_uuid(field, txid)
}

fn pix(body: &[u8], env: Envelope<'_>) -> Result<Normalised, PayloadError> {
    let b: PixBody = parse_json(body)?;
    if b.pix.is_empty() {
        return Err(bad("pix", "must hold at least one payment"));
    }
    let commands_in = b.pix.len() + b.pix.iter().map(|e| e.devolucoes.len()).sum::<usize>();
    if commands_in > MAX_COMMANDS {
        return Err(bad("pix", format!("at most {MAX_COMMANDS} payments and refunds per webhook")));
    }
    let mut commands = Vec::with_capacity(b.pix.len());
    for (i, entry) in b.pix.into_iter().enumerate() {
        let field = |name: &str| format!("pix[{i}].{name}");
        check_id(&field("endToEndId"), &entry.end_to_end_id)?;
        let txid = entry.txid.as_deref().ok_or_else(|| bad(field("txid"), "missing"))?;
        let installment = installment_from_txid(&field("txid"), txid)?;
        let valor: Decimal = entry.valor.parse().map_err(|_| bad(field("valor"), "must be a decimal string"))?;
        let occurred = parse_time(&field("horario"), &entry.horario)?;
        commands.push(PaymentCommand {
            webhook_id: entry.end_to_end_id.clone(),
            provider: env.provider.to_owned(),
            kind: CommandKind::Payment,
            rail: "pix".to_owned(),
            payment_id: entry.end_to_end_id.clone(),
            installment_id: Some(installment),
            amount: check_amount(&field("valor"), valor)?,
            currency: "BRL".to_owned(),
            occurred_at_ms: occurred,
            received_at_ms: env.received_at_ms,
        });
        for (j, dev) in entry.devolucoes.into_iter().enumerate() {
            let dfield = |name: &str| format!("pix[{i}].devolucoes[{j}].{name}");
            check_id(&dfield("id"), &dev.id)?;
            let valor: Decimal = dev.valor.parse().map_err(|_| bad(dfield("valor"), "must be a decimal string"))?;
            let when = dev.horario.as_ref().and_then(|h| h.liquidacao.as_deref().or(h.solicitacao.as_deref()));
            commands.push(PaymentCommand {
                webhook_id: dev.id,
                provider: env.provider.to_owned(),
                kind: CommandKind::Refund,
                rail: "pix".to_owned(),
                payment_id: entry.end_to_end_id.clone(),
                installment_id: Some(installment),
                amount: check_amount(&dfield("valor"), valor)?,
                currency: "BRL".to_owned(),
                occurred_at_ms: match when {
                    Some(t) => parse_time(&dfield("horario"), t)?,
                    None => occurred,
                },
                received_at_ms: env.received_at_ms,
            });
        }
    }
    Ok(Normalised::Commands(commands))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENV: Envelope<'static> =
        Envelope { provider: "p", webhook_id: Some("msg_1"), received_at_ms: 7, livemode: None };

    fn commands(n: Normalised) -> Vec<PaymentCommand> {
        match n {
            Normalised::Commands(c) => c,
            Normalised::Ignored(t) => panic!("ignored {t}"),
        }
    }

    /// A value of the body never reaches the reason: serde_json's message keeps the kind of
    /// what it found and what it expected, not the value.
    #[test]
    fn parse_errors_name_no_value_of_the_body() {
        let body = br#"{"pix":[{"endToEndId":"E1","txid":"0b6f3c0e8f434f4e9a577d2f1b2d3c4e","valor":12345678909,"horario":"2026-01-02T03:04:05Z"}]}"#;
        let error = pix(body, ENV).unwrap_err();
        assert!(!error.problem.contains("12345678909"), "{error}");
        assert!(error.problem.contains("invalid type: integer, expected a string"), "{error}");
        let body = br#"{"pix":[{"endToEndId":"E1","txid":"0b6f3c0e8f434f4e9a577d2f1b2d3c4e","valor":"1.00","horario":"2026-01-02T03:04:05Z","devolucoes":"Maria"}]}"#;
        let error = pix(body, ENV).unwrap_err();
        assert!(!error.problem.contains("Maria"), "{error}");
    }

    /// The paystream format normalises every field, amounts at scale 2.
    #[test]
    fn paystream_payment() {
        let body = br#"{"id":"evt_1","type":"payment.succeeded","created_at":"2026-01-02T03:04:05Z",
            "data":{"payment_id":"pay_1","installment_id":"0b6f3c0e-8f43-4f4e-9a57-7d2f1b2d3c4e","amount":"10.5","currency":"brl","rail":"pix"}}"#;
        let c = commands(normalise(PayloadFormat::Paystream, body, ENV).unwrap());
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].amount.to_string(), "10.50");
        assert_eq!(c[0].currency, "BRL");
        assert_eq!(c[0].webhook_id, "msg_1");
        assert_eq!(c[0].occurred_at_ms, 1_767_323_045_000);
    }

    /// Each bad field is named in the error.
    #[test]
    fn paystream_bad_fields_are_named() {
        let cases = [
            (r#""amount":"-1""#, "data.amount"),
            (r#""amount":"1.001""#, "data.amount"),
            (r#""amount":"abc""#, "data.amount"),
        ];
        for (amount, field) in cases {
            let body = format!(
                r#"{{"id":"e","type":"payment.succeeded","created_at":"2026-01-02T03:04:05Z","data":{{"payment_id":"p","installment_id":"0b6f3c0e-8f43-4f4e-9a57-7d2f1b2d3c4e",{amount},"currency":"BRL"}}}}"#
            );
            let err = normalise(PayloadFormat::Paystream, body.as_bytes(), ENV).unwrap_err();
            assert_eq!(err.field, field, "{amount}");
        }
        let err = normalise(PayloadFormat::Paystream, b"{\"id\":1}", ENV).unwrap_err();
        assert_eq!(err.field, "body");
        let body = br#"{"id":"e","type":"payment.succeeded","created_at":"yesterday","data":{"payment_id":"p","installment_id":"0b6f3c0e-8f43-4f4e-9a57-7d2f1b2d3c4e","amount":"1","currency":"BRL"}}"#;
        assert_eq!(normalise(PayloadFormat::Paystream, body, ENV).unwrap_err().field, "created_at");
    }

    /// Unknown event types of a known format are acknowledged, not enqueued.
    #[test]
    fn unknown_types_are_ignored() {
        let body = br#"{"id":"e","type":"customer.created","created_at":"x","data":{"payment_id":"p","installment_id":"x","amount":"1","currency":"BRL"}}"#;
        assert_eq!(
            normalise(PayloadFormat::Paystream, body, ENV).unwrap(),
            Normalised::Ignored("customer.created".into())
        );
        let body = br#"{"id":"evt_1","type":"invoice.paid","created":1,"data":{"object":{}}}"#;
        assert_eq!(normalise(PayloadFormat::Stripe, body, ENV).unwrap(), Normalised::Ignored("invoice.paid".into()));
    }

    /// Stripe: minor units, the PaymentIntent id in all three types, disputes without metadata.
    #[test]
    fn stripe_types() {
        let inst = "0b6f3c0e-8f43-4f4e-9a57-7d2f1b2d3c4e";
        let pi = format!(
            r#"{{"id":"evt_1","type":"payment_intent.succeeded","created":1700000000,"data":{{"object":{{"id":"pi_1","amount":1050,"amount_received":1050,"currency":"brl","metadata":{{"installment_id":"{inst}"}}}}}}}}"#
        );
        let c = commands(normalise(PayloadFormat::Stripe, pi.as_bytes(), ENV).unwrap());
        assert_eq!(
            (c[0].payment_id.as_str(), c[0].amount.to_string().as_str(), c[0].kind),
            ("pi_1", "10.50", CommandKind::Payment)
        );
        assert_eq!(c[0].webhook_id, "evt_1");
        let refund = format!(
            r#"{{"id":"evt_2","type":"charge.refunded","created":1700000000,"data":{{"object":{{"id":"ch_1","payment_intent":"pi_1","amount":1050,"amount_refunded":500,"currency":"brl","metadata":{{"installment_id":"{inst}"}}}}}}}}"#
        );
        let c = commands(normalise(PayloadFormat::Stripe, refund.as_bytes(), ENV).unwrap());
        assert_eq!(
            (c[0].payment_id.as_str(), c[0].amount.to_string().as_str(), c[0].kind),
            ("pi_1", "5.00", CommandKind::RefundTotal),
            "the charge's cumulative refunded amount, booked as a difference by the processor"
        );
        let dispute = r#"{"id":"evt_3","type":"charge.dispute.created","created":1700000000,"data":{"object":{"id":"dp_1","charge":"ch_1","payment_intent":"pi_1","amount":1050,"currency":"brl"}}}"#;
        let c = commands(normalise(PayloadFormat::Stripe, dispute.as_bytes(), ENV).unwrap());
        assert_eq!((c[0].installment_id, c[0].kind, c[0].key()), (None, CommandKind::Chargeback, "pi_1".to_owned()));
        let yen = pi.replace("brl", "jpy");
        assert_eq!(normalise(PayloadFormat::Stripe, yen.as_bytes(), ENV).unwrap_err().field, "data.object.currency");
    }

    /// Stripe: a failed refund and a won dispute give the money back (reinstatements, each
    /// with its own id); other refund updates are ignored; a test-mode event on a live
    /// endpoint is refused when livemode is configured.
    #[test]
    fn stripe_reinstatements_and_livemode() {
        let failed = r#"{"id":"evt_4","type":"charge.refund.updated","created":1700000000,"data":{"object":{"id":"re_1","object":"refund","payment_intent":"pi_1","amount":500,"currency":"brl","status":"failed"}}}"#;
        let c = commands(normalise(PayloadFormat::Stripe, failed.as_bytes(), ENV).unwrap());
        assert_eq!(
            (c[0].kind, c[0].webhook_id.as_str(), c[0].key()),
            (CommandKind::RefundFailed, "re_1/failed", "pi_1".into())
        );
        let pending = failed.replace("\"failed\"", "\"pending\"");
        assert_eq!(
            normalise(PayloadFormat::Stripe, pending.as_bytes(), ENV).unwrap(),
            Normalised::Ignored("charge.refund.updated".into())
        );
        let won = r#"{"id":"evt_5","type":"charge.dispute.funds_reinstated","created":1700000000,"data":{"object":{"id":"dp_1","payment_intent":"pi_1","amount":1050,"currency":"brl"}}}"#;
        let c = commands(normalise(PayloadFormat::Stripe, won.as_bytes(), ENV).unwrap());
        assert_eq!((c[0].kind, c[0].amount.to_string().as_str()), (CommandKind::ChargebackWon, "10.50"));
        let test_mode = won.replace("\"created\"", "\"livemode\":false,\"created\"");
        let live = Envelope { livemode: Some(true), ..ENV };
        assert_eq!(normalise(PayloadFormat::Stripe, test_mode.as_bytes(), live).unwrap_err().field, "livemode");
        assert!(normalise(PayloadFormat::Stripe, test_mode.as_bytes(), ENV).is_ok());
    }

    /// A Pix webhook carries at most MAX_COMMANDS payments and refunds together: one entry
    /// with too many refunds is refused like too many entries.
    #[test]
    fn pix_commands_are_bounded_refunds_included() {
        let refunds: Vec<String> = (0..MAX_COMMANDS)
            .map(|j| format!(r#"{{"id":"D{j}","valor":"0.01","horario":{{"solicitacao":"2026-01-03T00:00:00Z"}}}}"#))
            .collect();
        let body = format!(
            r#"{{"pix":[{{"endToEndId":"E1","txid":"0b6f3c0e8f434f4e9a577d2f1b2d3c4e","valor":"100.00","horario":"2026-01-02T03:04:05Z","devolucoes":[{}]}}]}}"#,
            refunds.join(",")
        );
        assert_eq!(normalise(PayloadFormat::Pix, body.as_bytes(), ENV).unwrap_err().field, "pix");
    }

    /// Pix: several payments and their refunds from one webhook, txid = installment hex.
    #[test]
    fn pix_many() {
        let body = br#"{"pix":[
            {"endToEndId":"E1","txid":"0b6f3c0e8f434f4e9a577d2f1b2d3c4e","valor":"100.00","horario":"2026-01-02T03:04:05.123Z"},
            {"endToEndId":"E2","txid":"0b6f3c0e8f434f4e9a577d2f1b2d3c4f","valor":"1.99","horario":"2026-01-02T03:04:05Z",
             "devolucoes":[{"id":"D1","rtrId":"R1","valor":"0.99","horario":{"solicitacao":"2026-01-03T00:00:00Z"},"status":"DEVOLVIDO"}]}]}"#;
        let c = commands(normalise(PayloadFormat::Pix, body, ENV).unwrap());
        assert_eq!(c.len(), 3);
        assert_eq!(c[0].installment_id.unwrap().to_string(), "0b6f3c0e-8f43-4f4e-9a57-7d2f1b2d3c4e");
        assert_eq!(
            (c[2].kind, c[2].payment_id.as_str(), c[2].amount.to_string().as_str()),
            (CommandKind::Refund, "E2", "0.99")
        );
        let bad_txid = br#"{"pix":[{"endToEndId":"E1","txid":"abc","valor":"1.00","horario":"2026-01-02T03:04:05Z"}]}"#;
        assert_eq!(normalise(PayloadFormat::Pix, bad_txid, ENV).unwrap_err().field, "pix[0].txid");
    }
}
