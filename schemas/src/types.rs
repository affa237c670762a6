//! The records of the contract. Ids travel as lowercase hyphenated UUID strings, amounts as
//! Avro decimals of scale 2 with an ISO 4217 currency, times as timestamp-millis.

use std::sync::LazyLock;

use apache_avro::types::Value;
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::binary::{self, Reader};
use crate::codec::{decimal_to_avro, opt_string, Fields, Record, SchemaError, WireSchema};

const AMOUNT_SCALE: u32 = 2;

static PAYMENT_COMMAND: LazyLock<WireSchema> =
    LazyLock::new(|| WireSchema::parse(include_str!("../avro/PaymentCommand.avsc")));
static PAYMENT_EVENT: LazyLock<WireSchema> =
    LazyLock::new(|| WireSchema::parse(include_str!("../avro/PaymentEvent.avsc")));
/// Earlier PaymentEvent schemas: v1 had neither `allocation` nor `business_date`.
static PAYMENT_EVENT_HISTORY: LazyLock<[WireSchema; 1]> =
    LazyLock::new(|| [WireSchema::parse(include_str!("../avro/history/PaymentEvent/v1.avsc"))]);
static DEAD_LETTER: LazyLock<WireSchema> = LazyLock::new(|| WireSchema::parse(include_str!("../avro/DeadLetter.avsc")));
static UNPROCESSABLE_WEBHOOK: LazyLock<WireSchema> =
    LazyLock::new(|| WireSchema::parse(include_str!("../avro/UnprocessableWebhook.avsc")));

/// The largest amount the wire carries: the schema's decimal has precision 20 and scale 2.
pub const MAX_AMOUNT_EXCLUSIVE: Decimal = Decimal::from_parts(0xA764_0000, 0x0DE0_B6B3, 0, false, 0); // 1e18

/// Longest id (webhook, payment, provider) a command may carry.
pub const MAX_ID_LEN: usize = 128;

/// What a payment command asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandKind {
    /// Money received for an installment.
    Payment,
    /// The provider returned part or all of a payment to the payer; `amount` is this
    /// refund's, and its `webhook_id` (a refund's own id) is what makes it happen once.
    Refund,
    /// The provider says how much of a payment has been refunded in all (Stripe's
    /// `charge.refunded` carries the charge's cumulative `amount_refunded`): the processor
    /// books the difference to what it has booked as refunded, so that each partial refund
    /// is booked once at its own amount whatever the deliveries.
    RefundTotal,
    /// The payer disputed a card payment.
    Chargeback,
    /// A refund that failed (or was canceled) after it was booked: the money came back.
    RefundFailed,
    /// A dispute won: the charged-back money came back.
    ChargebackWon,
}

impl CommandKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Payment => "payment",
            Self::Refund => "refund",
            Self::RefundTotal => "refund_total",
            Self::Chargeback => "chargeback",
            Self::RefundFailed => "refund_failed",
            Self::ChargebackWon => "chargeback_won",
        }
    }

    /// Every kind, for tests and documentation.
    pub const ALL: [Self; 6] =
        [Self::Payment, Self::Refund, Self::RefundTotal, Self::Chargeback, Self::RefundFailed, Self::ChargebackWon];

    fn parse(s: &str) -> Result<Self, SchemaError> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| SchemaError::Field { field: "kind", problem: format!("unknown kind {s:?}") })
    }

    /// Whether it takes money back from a payment (a refund or a chargeback).
    pub fn is_reversal(self) -> bool {
        matches!(self, Self::Refund | Self::RefundTotal | Self::Chargeback)
    }

    /// Whether it undoes a reversal (the money came back).
    pub fn is_reinstatement(self) -> bool {
        matches!(self, Self::RefundFailed | Self::ChargebackWon)
    }
}

/// Why a command breaks the contract's rules (the same whether ingest built it or a
/// producer wrote it to the topic).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct Invalid {
    /// The field.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: &'static str,
}

/// A normalised payment command (topic `paystream.payments.inbound.v1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentCommand {
    /// The provider's id of the webhook delivery.
    pub webhook_id: String,
    /// The configured provider name.
    pub provider: String,
    /// Payment, refund or chargeback.
    pub kind: CommandKind,
    /// pix, boleto, card or other.
    pub rail: String,
    /// The provider's payment id (for reversals, the payment reversed).
    pub payment_id: String,
    /// The installment paid, when the provider says it.
    pub installment_id: Option<Uuid>,
    /// The amount, positive, at most 2 decimal places.
    pub amount: Decimal,
    /// ISO 4217 code.
    pub currency: String,
    /// When the provider says it happened (ms since the epoch).
    pub occurred_at_ms: i64,
    /// When ingest accepted it (ms since the epoch).
    pub received_at_ms: i64,
}

impl PaymentCommand {
    /// Checks the contract's rules: ids of 1-128 printable characters, a positive amount of
    /// at most 2 decimal places that the wire can carry, an ISO 4217 code, an installment for
    /// a payment. Ingest checks what it builds, the processor what it reads: a command that
    /// fails is dead-lettered, never applied or half-applied.
    pub fn validate(&self) -> Result<(), Invalid> {
        let id = |field: &'static str, value: &str| {
            if value.is_empty() || value.len() > MAX_ID_LEN || value.chars().any(char::is_control) {
                Err(Invalid { field, problem: "must be 1-128 printable characters" })
            } else {
                Ok(())
            }
        };
        id("webhook_id", &self.webhook_id)?;
        id("provider", &self.provider)?;
        id("payment_id", &self.payment_id)?;
        if self.amount <= Decimal::ZERO {
            return Err(Invalid { field: "amount", problem: "must be positive" });
        }
        if self.amount.normalize().scale() > AMOUNT_SCALE {
            return Err(Invalid { field: "amount", problem: "at most 2 decimal places" });
        }
        if self.amount >= MAX_AMOUNT_EXCLUSIVE {
            return Err(Invalid { field: "amount", problem: "too large (at most 18 digits before the point)" });
        }
        if self.currency.len() != 3 || !self.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(Invalid { field: "currency", problem: "must be an ISO 4217 code" });
        }
        if self.kind == CommandKind::Payment && self.installment_id.is_none() {
            return Err(Invalid { field: "installment_id", problem: "a payment names its installment" });
        }
        Ok(())
    }

    /// The Kafka key: the installment id, or the payment id when the installment is not known
    /// at the edge (a dispute), so that all commands of one payment stay on one partition.
    pub fn key(&self) -> String {
        match self.installment_id {
            Some(id) => id.hyphenated().to_string(),
            None => self.payment_id.clone(),
        }
    }
}

impl Record for PaymentCommand {
    fn schema() -> &'static WireSchema {
        &PAYMENT_COMMAND
    }

    fn to_value(&self) -> Value {
        Value::Record(vec![
            ("webhook_id".into(), Value::String(self.webhook_id.clone())),
            ("provider".into(), Value::String(self.provider.clone())),
            ("kind".into(), Value::String(self.kind.as_str().into())),
            ("rail".into(), Value::String(self.rail.clone())),
            ("payment_id".into(), Value::String(self.payment_id.clone())),
            ("installment_id".into(), opt_string(self.installment_id.map(|u| u.hyphenated().to_string()).as_deref())),
            ("amount".into(), decimal_to_avro(&self.amount, AMOUNT_SCALE).unwrap_or(Value::Null)),
            ("currency".into(), Value::String(self.currency.clone())),
            ("occurred_at".into(), Value::TimestampMillis(self.occurred_at_ms)),
            ("received_at".into(), Value::TimestampMillis(self.received_at_ms)),
        ])
    }

    fn from_value(value: Value) -> Result<Self, SchemaError> {
        let mut f = Fields::new(value)?;
        Ok(Self {
            webhook_id: f.string("webhook_id")?,
            provider: f.string("provider")?,
            kind: CommandKind::parse(&f.string("kind")?)?,
            rail: f.string("rail")?,
            payment_id: f.string("payment_id")?,
            installment_id: f.opt_uuid("installment_id")?,
            amount: f.decimal("amount", AMOUNT_SCALE)?,
            currency: f.string("currency")?,
            occurred_at_ms: f.millis("occurred_at")?,
            received_at_ms: f.millis("received_at")?,
        })
    }

    fn write_body(&self, out: &mut Vec<u8>) -> Result<(), SchemaError> {
        binary::bytes(out, self.webhook_id.as_bytes());
        binary::bytes(out, self.provider.as_bytes());
        binary::bytes(out, self.kind.as_str().as_bytes());
        binary::bytes(out, self.rail.as_bytes());
        binary::bytes(out, self.payment_id.as_bytes());
        binary::opt_uuid(out, self.installment_id.as_ref());
        binary::bytes(out, &binary::decimal_bytes(&self.amount, AMOUNT_SCALE)?);
        binary::bytes(out, self.currency.as_bytes());
        binary::long(out, self.occurred_at_ms);
        binary::long(out, self.received_at_ms);
        Ok(())
    }

    fn read_body(r: &mut Reader<'_>) -> Result<Self, SchemaError> {
        Ok(Self {
            webhook_id: r.string("webhook_id")?,
            provider: r.string("provider")?,
            kind: CommandKind::parse(r.str("kind")?)?,
            rail: r.string("rail")?,
            payment_id: r.string("payment_id")?,
            installment_id: r.opt_uuid("installment_id")?,
            amount: r.decimal("amount", AMOUNT_SCALE)?,
            currency: r.string("currency")?,
            occurred_at_ms: r.long("occurred_at")?,
            received_at_ms: r.long("received_at")?,
        })
    }
}

/// The kinds of fact on `paystream.payments.events.v1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// A payment was applied to an installment.
    PaymentApplied,
    /// A payment could not be applied (unknown installment, wrong currency, closed contract).
    PaymentRejected,
    /// A refund or chargeback reversed a payment.
    PaymentReversed,
    /// An installment became fully paid.
    InstallmentPaid,
    /// Every installment of a contract is paid.
    ContractSettled,
    /// A second payment reached an installment already paid; the money is kept as credit.
    SuspectedDuplicatePayment,
    /// A reversal of a settled contract's payment made it owe again: it is active again.
    ContractReopened,
    /// A reversal was undone (a dispute won, a refund that failed): the money is back.
    PaymentReinstated,
    /// An unpaid installment passed its due date on the business date.
    InstallmentOverdue,
    /// The one-time late fee was charged on an overdue installment.
    LateFeeCharged,
    /// Late interest was charged on an overdue installment, for the days since the last
    /// charge (one event per installment and accrual run, not per day).
    InterestAccrued,
    /// A contract's unpaid installments were replaced by a new contract's schedule
    /// (`contract_id` names the new contract; the aggregate is the old one).
    ContractRenegotiated,
    /// A customer's personal data was replaced by salted hashes (LGPD, after BACEN's
    /// retention). The aggregate is the customer; the event carries no personal data.
    CustomerAnonymised,
}

impl EventType {
    /// The wire name, also the `event_type` header.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PaymentApplied => "PaymentApplied",
            Self::PaymentRejected => "PaymentRejected",
            Self::PaymentReversed => "PaymentReversed",
            Self::InstallmentPaid => "InstallmentPaid",
            Self::ContractSettled => "ContractSettled",
            Self::SuspectedDuplicatePayment => "SuspectedDuplicatePayment",
            Self::ContractReopened => "ContractReopened",
            Self::PaymentReinstated => "PaymentReinstated",
            Self::InstallmentOverdue => "InstallmentOverdue",
            Self::LateFeeCharged => "LateFeeCharged",
            Self::InterestAccrued => "InterestAccrued",
            Self::ContractRenegotiated => "ContractRenegotiated",
            Self::CustomerAnonymised => "CustomerAnonymised",
        }
    }

    /// Every event type, for tests and documentation.
    pub const ALL: [Self; 13] = [
        Self::PaymentApplied,
        Self::PaymentRejected,
        Self::PaymentReversed,
        Self::InstallmentPaid,
        Self::ContractSettled,
        Self::SuspectedDuplicatePayment,
        Self::ContractReopened,
        Self::PaymentReinstated,
        Self::InstallmentOverdue,
        Self::LateFeeCharged,
        Self::InterestAccrued,
        Self::ContractRenegotiated,
        Self::CustomerAnonymised,
    ];

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// A fact (topic `paystream.payments.events.v1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentEvent {
    /// Unique per fact; consumers dedupe on it.
    pub event_id: Uuid,
    /// The kind of fact. Kept as text on the wire so that new kinds stay compatible.
    pub event_type: EventType,
    /// When the fact was committed (ms since the epoch).
    pub occurred_at_ms: i64,
    /// The aggregate the fact is about; also the record key.
    pub aggregate_id: Uuid,
    /// The provider of the payment.
    pub provider: String,
    /// The provider's payment id.
    pub payment_id: String,
    /// The installment, for payment facts.
    pub installment_id: Option<Uuid>,
    /// The contract, when known.
    pub contract_id: Option<Uuid>,
    /// The amount of the fact.
    pub amount: Decimal,
    /// ISO 4217 code.
    pub currency: String,
    /// Why, for rejections and suspected duplicates.
    pub reason: Option<String>,
    /// How a payment, reversal or reinstatement was split; `None` for other facts.
    pub allocation: Option<Allocation>,
    /// The business date of a lifecycle fact (ISO 8601).
    pub business_date: Option<String>,
}

/// How money paid to (or taken back from) an installment was split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Allocation {
    /// To the late fee.
    pub late_fee: Decimal,
    /// To late interest.
    pub interest: Decimal,
    /// To principal.
    pub principal: Decimal,
    /// Kept as customer credit.
    pub credit: Decimal,
}

impl Allocation {
    fn to_value(self) -> Value {
        let d = |v: &Decimal| decimal_to_avro(v, AMOUNT_SCALE).unwrap_or(Value::Null);
        Value::Record(vec![
            ("late_fee".into(), d(&self.late_fee)),
            ("interest".into(), d(&self.interest)),
            ("principal".into(), d(&self.principal)),
            ("credit".into(), d(&self.credit)),
        ])
    }

    fn from_value(value: Value) -> Result<Option<Self>, SchemaError> {
        let value = match value {
            Value::Union(_, inner) => *inner,
            other => other,
        };
        if value == Value::Null {
            return Ok(None);
        }
        let mut f = Fields::new(value)?;
        Ok(Some(Self {
            late_fee: f.decimal("late_fee", AMOUNT_SCALE)?,
            interest: f.decimal("interest", AMOUNT_SCALE)?,
            principal: f.decimal("principal", AMOUNT_SCALE)?,
            credit: f.decimal("credit", AMOUNT_SCALE)?,
        }))
    }

    fn write(self, out: &mut Vec<u8>) -> Result<(), SchemaError> {
        for v in [self.late_fee, self.interest, self.principal, self.credit] {
            binary::bytes(out, &binary::decimal_bytes(&v, AMOUNT_SCALE)?);
        }
        Ok(())
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, SchemaError> {
        Ok(Self {
            late_fee: r.decimal("allocation.late_fee", AMOUNT_SCALE)?,
            interest: r.decimal("allocation.interest", AMOUNT_SCALE)?,
            principal: r.decimal("allocation.principal", AMOUNT_SCALE)?,
            credit: r.decimal("allocation.credit", AMOUNT_SCALE)?,
        })
    }
}

impl Record for PaymentEvent {
    fn schema() -> &'static WireSchema {
        &PAYMENT_EVENT
    }

    fn to_value(&self) -> Value {
        Value::Record(vec![
            ("event_id".into(), Value::String(self.event_id.hyphenated().to_string())),
            ("event_type".into(), Value::String(self.event_type.as_str().into())),
            ("occurred_at".into(), Value::TimestampMillis(self.occurred_at_ms)),
            ("aggregate_id".into(), Value::String(self.aggregate_id.hyphenated().to_string())),
            ("provider".into(), Value::String(self.provider.clone())),
            ("payment_id".into(), Value::String(self.payment_id.clone())),
            ("installment_id".into(), opt_string(self.installment_id.map(|u| u.hyphenated().to_string()).as_deref())),
            ("contract_id".into(), opt_string(self.contract_id.map(|u| u.hyphenated().to_string()).as_deref())),
            ("amount".into(), decimal_to_avro(&self.amount, AMOUNT_SCALE).unwrap_or(Value::Null)),
            ("currency".into(), Value::String(self.currency.clone())),
            ("reason".into(), opt_string(self.reason.as_deref())),
            (
                "allocation".into(),
                match self.allocation {
                    None => Value::Union(0, Box::new(Value::Null)),
                    Some(a) => Value::Union(1, Box::new(a.to_value())),
                },
            ),
            ("business_date".into(), opt_string(self.business_date.as_deref())),
        ])
    }

    fn history() -> &'static [WireSchema] {
        &*PAYMENT_EVENT_HISTORY
    }

    fn from_value(value: Value) -> Result<Self, SchemaError> {
        let mut f = Fields::new(value)?;
        let event_type = f.string("event_type")?;
        Ok(Self {
            event_id: f.uuid("event_id")?,
            event_type: EventType::parse(&event_type).ok_or(SchemaError::Field {
                field: "event_type",
                problem: format!("unknown event type {event_type:?}"),
            })?,
            occurred_at_ms: f.millis("occurred_at")?,
            aggregate_id: f.uuid("aggregate_id")?,
            provider: f.string("provider")?,
            payment_id: f.string("payment_id")?,
            installment_id: f.opt_uuid("installment_id")?,
            contract_id: f.opt_uuid("contract_id")?,
            amount: f.decimal("amount", AMOUNT_SCALE)?,
            currency: f.string("currency")?,
            reason: f.opt_string("reason")?,
            allocation: Allocation::from_value(f.take_value("allocation")?)?,
            business_date: f.opt_string("business_date")?,
        })
    }

    fn write_body(&self, out: &mut Vec<u8>) -> Result<(), SchemaError> {
        binary::uuid(out, &self.event_id);
        binary::bytes(out, self.event_type.as_str().as_bytes());
        binary::long(out, self.occurred_at_ms);
        binary::uuid(out, &self.aggregate_id);
        binary::bytes(out, self.provider.as_bytes());
        binary::bytes(out, self.payment_id.as_bytes());
        binary::opt_uuid(out, self.installment_id.as_ref());
        binary::opt_uuid(out, self.contract_id.as_ref());
        binary::bytes(out, &binary::decimal_bytes(&self.amount, AMOUNT_SCALE)?);
        binary::bytes(out, self.currency.as_bytes());
        binary::opt_string(out, self.reason.as_deref());
        match self.allocation {
            None => binary::long(out, 0),
            Some(a) => {
                binary::long(out, 1);
                a.write(out)?;
            }
        }
        binary::opt_string(out, self.business_date.as_deref());
        Ok(())
    }

    fn read_body(r: &mut Reader<'_>) -> Result<Self, SchemaError> {
        let event_id = r.uuid("event_id")?;
        let event_type = r.str("event_type")?;
        Ok(Self {
            event_id,
            event_type: EventType::parse(event_type).ok_or_else(|| SchemaError::Field {
                field: "event_type",
                problem: format!("unknown event type {event_type:?}"),
            })?,
            occurred_at_ms: r.long("occurred_at")?,
            aggregate_id: r.uuid("aggregate_id")?,
            provider: r.string("provider")?,
            payment_id: r.string("payment_id")?,
            installment_id: r.opt_uuid("installment_id")?,
            contract_id: r.opt_uuid("contract_id")?,
            amount: r.decimal("amount", AMOUNT_SCALE)?,
            currency: r.string("currency")?,
            reason: r.opt_string("reason")?,
            allocation: match r.long("allocation")? {
                0 => None,
                1 => Some(Allocation::read(r)?),
                other => {
                    return Err(SchemaError::Field { field: "allocation", problem: format!("union index {other}") })
                }
            },
            business_date: r.opt_string("business_date")?,
        })
    }
}

/// A message the processor could not apply (topic `paystream.payments.deadletter.v1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Unique per dead letter.
    pub event_id: Uuid,
    /// Where the message came from.
    pub source_topic: String,
    /// Its partition.
    pub source_partition: i32,
    /// Its offset.
    pub source_offset: i64,
    /// Why it was not applied.
    pub reason: String,
    /// The original value, byte for byte.
    pub payload: Vec<u8>,
    /// When it was dead-lettered (ms since the epoch).
    pub occurred_at_ms: i64,
}

impl Record for DeadLetter {
    fn schema() -> &'static WireSchema {
        &DEAD_LETTER
    }

    fn to_value(&self) -> Value {
        Value::Record(vec![
            ("event_id".into(), Value::String(self.event_id.hyphenated().to_string())),
            ("source_topic".into(), Value::String(self.source_topic.clone())),
            ("source_partition".into(), Value::Int(self.source_partition)),
            ("source_offset".into(), Value::Long(self.source_offset)),
            ("reason".into(), Value::String(self.reason.clone())),
            ("payload".into(), Value::Bytes(self.payload.clone())),
            ("occurred_at".into(), Value::TimestampMillis(self.occurred_at_ms)),
        ])
    }

    fn from_value(value: Value) -> Result<Self, SchemaError> {
        let mut f = Fields::new(value)?;
        Ok(Self {
            event_id: f.uuid("event_id")?,
            source_topic: f.string("source_topic")?,
            source_partition: f.int("source_partition")?,
            source_offset: f.long("source_offset")?,
            reason: f.string("reason")?,
            payload: f.bytes("payload")?,
            occurred_at_ms: f.millis("occurred_at")?,
        })
    }

    fn write_body(&self, out: &mut Vec<u8>) -> Result<(), SchemaError> {
        binary::uuid(out, &self.event_id);
        binary::bytes(out, self.source_topic.as_bytes());
        binary::long(out, i64::from(self.source_partition));
        binary::long(out, self.source_offset);
        binary::bytes(out, self.reason.as_bytes());
        binary::bytes(out, &self.payload);
        binary::long(out, self.occurred_at_ms);
        Ok(())
    }

    fn read_body(r: &mut Reader<'_>) -> Result<Self, SchemaError> {
        Ok(Self {
            event_id: r.uuid("event_id")?,
            source_topic: r.string("source_topic")?,
            source_partition: r.int("source_partition")?,
            source_offset: r.long("source_offset")?,
            reason: r.string("reason")?,
            payload: r.bytes("payload")?.to_vec(),
            occurred_at_ms: r.long("occurred_at")?,
        })
    }
}

/// A signed webhook ingest could not normalise, kept (topic
/// `paystream.payments.inbound.v1`, beside the commands): the processor records it as a dead
/// letter with its body (less personal data), so that what a provider was told is durable is
/// never lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnprocessableWebhook {
    /// The provider's namespace.
    pub provider: String,
    /// The webhook's id, when its scheme carries one.
    pub webhook_id: Option<String>,
    /// What could not be normalised.
    pub reason: String,
    /// The body as received, less personal data (ingest's `redaction`: a payer's fields
    /// hold `"[redacted]"`, the reason gives the original's SHA-256).
    pub body: Vec<u8>,
    /// When ingest accepted it (ms since the epoch).
    pub received_at_ms: i64,
}

impl UnprocessableWebhook {
    /// The Kafka key: where it lands does not matter to order, only that it lands.
    pub fn key(&self) -> String {
        format!("{}/{}", self.provider, self.webhook_id.as_deref().unwrap_or(""))
    }
}

impl Record for UnprocessableWebhook {
    fn schema() -> &'static WireSchema {
        &UNPROCESSABLE_WEBHOOK
    }

    fn to_value(&self) -> Value {
        Value::Record(vec![
            ("provider".into(), Value::String(self.provider.clone())),
            ("webhook_id".into(), opt_string(self.webhook_id.as_deref())),
            ("reason".into(), Value::String(self.reason.clone())),
            ("body".into(), Value::Bytes(self.body.clone())),
            ("received_at".into(), Value::TimestampMillis(self.received_at_ms)),
        ])
    }

    fn from_value(value: Value) -> Result<Self, SchemaError> {
        let mut f = Fields::new(value)?;
        Ok(Self {
            provider: f.string("provider")?,
            webhook_id: f.opt_string("webhook_id")?,
            reason: f.string("reason")?,
            body: f.bytes("body")?,
            received_at_ms: f.millis("received_at")?,
        })
    }

    fn write_body(&self, out: &mut Vec<u8>) -> Result<(), SchemaError> {
        binary::bytes(out, self.provider.as_bytes());
        binary::opt_string(out, self.webhook_id.as_deref());
        binary::bytes(out, self.reason.as_bytes());
        binary::bytes(out, &self.body);
        binary::long(out, self.received_at_ms);
        Ok(())
    }

    fn read_body(r: &mut Reader<'_>) -> Result<Self, SchemaError> {
        Ok(Self {
            provider: r.string("provider")?,
            webhook_id: r.opt_string("webhook_id")?,
            reason: r.string("reason")?,
            body: r.bytes("body")?.to_vec(),
            received_at_ms: r.long("received_at")?,
        })
    }
}

/// A record of the inbound topic: a command, or a webhook kept because it could not be one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// A normalised command.
    Command(PaymentCommand),
    /// A signed webhook ingest could not normalise.
    Unprocessable(UnprocessableWebhook),
}

/// Decodes an inbound record, telling the two record types apart by their fingerprint.
pub fn decode_inbound(bytes: &[u8]) -> Result<Inbound, SchemaError> {
    let unprocessable = UnprocessableWebhook::schema().fingerprint.to_le_bytes();
    if bytes.len() >= 10 && bytes[2..10] == unprocessable {
        return crate::decode::<UnprocessableWebhook>(bytes).map(Inbound::Unprocessable);
    }
    crate::decode::<PaymentCommand>(bytes).map(Inbound::Command)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode, encode};

    fn command() -> PaymentCommand {
        PaymentCommand {
            webhook_id: "msg_1".into(),
            provider: "demo-standard".into(),
            kind: CommandKind::Payment,
            rail: "pix".into(),
            payment_id: "pay_1".into(),
            installment_id: Some(Uuid::from_u128(0x1234)),
            amount: "123.45".parse().unwrap(),
            currency: "BRL".into(),
            occurred_at_ms: 1_700_000_000_000,
            received_at_ms: 1_700_000_000_123,
        }
    }

    /// A command survives encode/decode unchanged and carries the single-object header.
    #[test]
    fn command_round_trip() {
        let bytes = encode(&command()).unwrap();
        assert_eq!(&bytes[..2], &[0xC3, 0x01]);
        assert_eq!(&bytes[2..10], &PaymentCommand::schema().fingerprint.to_le_bytes());
        assert_eq!(decode::<PaymentCommand>(&bytes).unwrap(), command());
    }

    /// Events round-trip with and without the optional fields.
    #[test]
    fn event_round_trip() {
        let mut event = PaymentEvent {
            event_id: Uuid::from_u128(1),
            event_type: EventType::PaymentRejected,
            occurred_at_ms: 5,
            aggregate_id: Uuid::from_u128(2),
            provider: "p".into(),
            payment_id: "x".into(),
            installment_id: None,
            contract_id: Some(Uuid::from_u128(3)),
            amount: "-10.00".parse().unwrap(),
            currency: "BRL".into(),
            reason: Some("unknown installment".into()),
            allocation: None,
            business_date: None,
        };
        assert_eq!(decode::<PaymentEvent>(&encode(&event).unwrap()).unwrap(), event);
        event.reason = None;
        assert_eq!(decode::<PaymentEvent>(&encode(&event).unwrap()).unwrap(), event);
    }

    /// Garbage, truncated values and foreign fingerprints are errors, never panics.
    #[test]
    fn bad_bytes_are_errors() {
        assert!(matches!(decode::<PaymentCommand>(b"{\"json\":1}"), Err(SchemaError::NotSingleObject)));
        let mut bytes = encode(&command()).unwrap();
        bytes[3] ^= 0xFF;
        assert!(matches!(decode::<PaymentCommand>(&bytes), Err(SchemaError::UnknownSchema(_))));
        let bytes = encode(&command()).unwrap();
        for cut in 10..bytes.len() {
            assert!(decode::<PaymentCommand>(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    /// The inbound topic's two record types decode to what was written.
    #[test]
    fn inbound_records_are_told_apart() {
        let kept = UnprocessableWebhook {
            provider: "p".into(),
            webhook_id: Some("evt_9".into()),
            reason: "data.object.currency: only currencies with 2 decimal places are supported".into(),
            body: b"{\"id\":\"evt_9\"}".to_vec(),
            received_at_ms: 9,
        };
        assert_eq!(decode_inbound(&encode(&kept).unwrap()).unwrap(), Inbound::Unprocessable(kept));
        assert_eq!(decode_inbound(&encode(&command()).unwrap()).unwrap(), Inbound::Command(command()));
        assert!(decode_inbound(b"\x00poison").is_err());
    }

    /// The rules every command must meet, case by case; the largest amount the wire
    /// carries is valid and encodes, one cent more is refused before anything is encoded.
    #[test]
    fn validation_rules() {
        assert_eq!(command().validate(), Ok(()));
        let largest: Decimal = "999999999999999999.99".parse().unwrap();
        let mut c = command();
        c.amount = largest;
        assert_eq!(c.validate(), Ok(()));
        assert!(encode(&c).is_ok());
        c.amount = MAX_AMOUNT_EXCLUSIVE;
        assert_eq!(c.validate().unwrap_err().field, "amount");
        assert!(encode(&c).is_err(), "the encoder refuses what validation refuses");
        type Breaks = fn(&mut PaymentCommand);
        let cases: [(Breaks, &str); 8] = [
            (|c| c.amount = Decimal::ZERO, "amount"),
            (|c| c.amount = "-1".parse().unwrap(), "amount"),
            (|c| c.amount = "1.001".parse().unwrap(), "amount"),
            (|c| c.currency = "brl".into(), "currency"),
            (|c| c.webhook_id = String::new(), "webhook_id"),
            (|c| c.payment_id = "x".repeat(129), "payment_id"),
            (|c| c.provider = "a\nb".into(), "provider"),
            (|c| c.installment_id = None, "installment_id"),
        ];
        for (break_it, field) in cases {
            let mut c = command();
            break_it(&mut c);
            assert_eq!(c.validate().unwrap_err().field, field);
        }
        let mut chargeback = command();
        chargeback.kind = CommandKind::Chargeback;
        chargeback.installment_id = None;
        assert_eq!(chargeback.validate(), Ok(()), "a dispute may not know its installment");
    }

    /// Every kind and event type reads back from its wire name.
    #[test]
    fn wire_names_round_trip() {
        for kind in CommandKind::ALL {
            assert_eq!(CommandKind::parse(kind.as_str()).unwrap(), kind);
        }
        for event_type in EventType::ALL {
            assert_eq!(EventType::parse(event_type.as_str()), Some(event_type));
        }
    }

    /// The golden bytes of a command: any change to the schema or encoding shows here.
    #[test]
    fn command_golden_bytes() {
        let bytes = encode(&command()).unwrap();
        let body = &bytes[10..];
        // webhook_id "msg_1": zig-zag length 5 -> 0x0a, then the bytes.
        assert_eq!(&body[..6], b"\x0amsg_1");
    }
}
