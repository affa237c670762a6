//! The direct encoder and decoder against apache-avro, the reference: for generated values
//! of every record, the bytes are identical, and each side reads what the other wrote.

use apache_avro::{from_avro_datum, to_avro_datum};
use proptest::prelude::*;
use rust_decimal::Decimal;
use uuid::Uuid;

use paystream_schemas::{
    decode, encode, Allocation, CommandKind, DeadLetter, EventType, PaymentCommand, PaymentEvent, Record,
};

fn amount() -> impl Strategy<Value = Decimal> {
    // Every value the schema's precision 20, scale 2 allows, and the edges.
    prop_oneof![
        (-(10i128.pow(20) - 1)..10i128.pow(20)).prop_map(|u| Decimal::from_i128_with_scale(u, 2)),
        Just(Decimal::ZERO),
        Just(Decimal::new(1, 2)),
        Just(Decimal::new(-1, 2)),
        Just(Decimal::new(12_800, 2)),
    ]
}

fn uuid() -> impl Strategy<Value = Uuid> {
    any::<u128>().prop_map(Uuid::from_u128)
}

fn command() -> impl Strategy<Value = PaymentCommand> {
    (
        ".{0,40}",
        "[a-z-]{0,20}",
        prop_oneof![Just(CommandKind::Payment), Just(CommandKind::Refund), Just(CommandKind::Chargeback)],
        ".{0,8}",
        ".{0,64}",
        proptest::option::of(uuid()),
        amount(),
        "[A-Z]{3}",
        any::<i64>(),
        any::<i64>(),
    )
        .prop_map(
            |(webhook_id, provider, kind, rail, payment_id, installment_id, amount, currency, occurred, received)| {
                PaymentCommand {
                    webhook_id,
                    provider,
                    kind,
                    rail,
                    payment_id,
                    installment_id,
                    amount,
                    currency,
                    occurred_at_ms: occurred,
                    received_at_ms: received,
                }
            },
        )
}

fn event() -> impl Strategy<Value = PaymentEvent> {
    (
        uuid(),
        prop_oneof![
            Just(EventType::PaymentApplied),
            Just(EventType::PaymentRejected),
            Just(EventType::PaymentReversed),
            Just(EventType::InstallmentPaid),
            Just(EventType::ContractSettled),
            Just(EventType::SuspectedDuplicatePayment),
        ],
        any::<i64>(),
        uuid(),
        (".{0,20}", ".{0,64}"),
        proptest::option::of(uuid()),
        proptest::option::of(uuid()),
        amount(),
        "[A-Z]{3}",
        proptest::option::of(".{0,80}"),
    )
        .prop_map(
            |(
                event_id,
                event_type,
                occurred,
                aggregate_id,
                (provider, payment_id),
                inst,
                contract,
                amount,
                cur,
                reason,
            )| {
                PaymentEvent {
                    event_id,
                    event_type,
                    occurred_at_ms: occurred,
                    aggregate_id,
                    provider,
                    payment_id,
                    installment_id: inst,
                    contract_id: contract,
                    amount,
                    currency: cur,
                    // Both branches of the new unions, from what is drawn already.
                    allocation: inst.map(|_| Allocation {
                        late_fee: amount,
                        interest: Decimal::ZERO,
                        principal: amount,
                        credit: Decimal::new(1, 2),
                    }),
                    business_date: reason.clone(),
                    reason,
                }
            },
        )
}

fn dead_letter() -> impl Strategy<Value = DeadLetter> {
    (
        uuid(),
        ".{0,40}",
        any::<i32>(),
        any::<i64>(),
        ".{0,80}",
        proptest::collection::vec(any::<u8>(), 0..300),
        any::<i64>(),
    )
        .prop_map(|(event_id, source_topic, source_partition, source_offset, reason, payload, occurred_at_ms)| {
            DeadLetter { event_id, source_topic, source_partition, source_offset, reason, payload, occurred_at_ms }
        })
}

/// The direct body equals apache-avro's, and both readers agree on it.
fn same_as_reference<T: Record + PartialEq + std::fmt::Debug>(value: &T) -> Result<(), TestCaseError> {
    let schema = &T::schema().schema;
    let reference = to_avro_datum(schema, value.to_value()).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let ours = encode(value).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&ours[10..], &reference[..]);
    let mut body = &reference[..];
    let generic = from_avro_datum(schema, &mut body, None).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&T::from_value(generic).map_err(|e| TestCaseError::fail(e.to_string()))?, value);
    prop_assert_eq!(&decode::<T>(&ours).map_err(|e| TestCaseError::fail(e.to_string()))?, value);
    // Any shorter body is an error, never a panic or a wrong value.
    for cut in 10..ours.len() {
        prop_assert!(decode::<T>(&ours[..cut]).is_err());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn command_bytes_match_apache_avro(c in command()) {
        same_as_reference(&c)?;
    }

    #[test]
    fn event_bytes_match_apache_avro(e in event()) {
        same_as_reference(&e)?;
    }

    #[test]
    fn dead_letter_bytes_match_apache_avro(d in dead_letter()) {
        same_as_reference(&d)?;
    }

    /// Arbitrary bytes after a valid header never panic the direct decoder.
    #[test]
    fn arbitrary_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..200)) {
        for fingerprint in [PaymentCommand::schema().fingerprint, PaymentEvent::schema().fingerprint] {
            let mut bytes = vec![0xC3, 0x01];
            bytes.extend_from_slice(&fingerprint.to_le_bytes());
            bytes.extend_from_slice(&body);
            let _ = decode::<PaymentCommand>(&bytes);
            let _ = decode::<PaymentEvent>(&bytes);
        }
    }
}
