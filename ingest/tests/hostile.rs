//! Hostile input at the edge, generated: every header parser and every payload normaliser
//! answers arbitrary input with a value or a typed error, never a panic, and signatures only
//! verify for the bytes that were signed. The budget is fixed per property
//! (`PROPTEST_CASES` overrides it).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

use std::collections::HashMap;

use proptest::prelude::*;

use paystream_common::config::{PayloadFormat, ProviderConfig, SignatureScheme};
use paystream_ingest::payload::{normalise, Envelope};
use paystream_ingest::signature::{sign, HeaderLookup, Verifier};

const NOW: i64 = 1_767_323_045;
const STANDARD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

struct Headers(HashMap<String, String>);

impl HeaderLookup for Headers {
    fn header(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

fn verifier(scheme: SignatureScheme) -> Verifier {
    let secret = match scheme {
        SignatureScheme::StandardWebhooks => STANDARD_SECRET,
        _ => "secret",
    };
    let provider = ProviderConfig::new(scheme, PayloadFormat::Paystream, &[secret]);
    Verifier::new(&provider, 300).unwrap()
}

fn schemes() -> impl Strategy<Value = SignatureScheme> {
    prop_oneof![
        Just(SignatureScheme::StandardWebhooks),
        Just(SignatureScheme::Stripe),
        Just(SignatureScheme::HmacSha256)
    ]
}

/// Header values shaped like the real ones, and plain garbage.
fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "v1,[A-Za-z0-9+/=]{0,60}( v1,[A-Za-z0-9+/=]{0,60}){0,3}",
        "t=-?[0-9]{0,12}(,v1=[0-9a-f]{0,64}){0,3}(,v0=[0-9a-f]{0,8})?",
        "(sha256=)?[0-9a-fA-F]{0,70}",
        "-?[0-9]{0,20}",
    ]
}

fn formats() -> impl Strategy<Value = PayloadFormat> {
    prop_oneof![Just(PayloadFormat::Paystream), Just(PayloadFormat::Stripe), Just(PayloadFormat::Pix)]
}

/// JSON values of the shapes the normalisers read, with hostile leaves.
fn json_leaf() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::json!(f)),
        "[ -~]{0,40}".prop_map(serde_json::Value::from),
        "-?[0-9]{1,30}(\\.[0-9]{0,10})?".prop_map(serde_json::Value::from),
        Just(serde_json::Value::from("0b6f3c0e-8f43-4f4e-9a57-7d2f1b2d3c4e")),
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    let keys = prop_oneof![
        Just("id"),
        Just("type"),
        Just("created_at"),
        Just("created"),
        Just("data"),
        Just("object"),
        Just("payment_id"),
        Just("installment_id"),
        Just("amount"),
        Just("amount_received"),
        Just("amount_refunded"),
        Just("currency"),
        Just("payment_intent"),
        Just("metadata"),
        Just("pix"),
        Just("endToEndId"),
        Just("txid"),
        Just("valor"),
        Just("horario"),
        Just("devolucoes"),
    ];
    let json = json_leaf().prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::vec((keys.clone(), inner), 0..6).prop_map(|fields| {
                serde_json::Value::Object(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
            }),
        ]
    });
    prop_oneof![any::<Vec<u8>>(), json.prop_map(|v| serde_json::to_vec(&v).unwrap())]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Any headers, any body: a verdict, never a panic, and never a pass without the secret.
    #[test]
    fn header_parsers_never_panic_nor_accept_forgeries(
        scheme in schemes(),
        values in prop::collection::vec(header_value(), 5),
        body in any::<Vec<u8>>(),
    ) {
        let names = ["webhook-id", "webhook-timestamp", "webhook-signature", "stripe-signature", "x-signature"];
        let mut headers: HashMap<String, String> =
            names.iter().zip(values).map(|(n, v)| ((*n).to_owned(), v)).collect();
        headers.insert("x-timestamp".into(), NOW.to_string());
        prop_assert!(verifier(scheme).verify(&Headers(headers), &body, NOW).is_err());
    }

    /// What was signed verifies; one flipped byte of the body does not.
    #[test]
    fn signed_bodies_verify_and_altered_ones_do_not(scheme in schemes(), body in any::<Vec<u8>>(), flip in any::<usize>()) {
        let headers: HashMap<String, String> = match scheme {
            SignatureScheme::StandardWebhooks => sign::standard_webhooks(STANDARD_SECRET, "msg_1", NOW, &body),
            SignatureScheme::Stripe => vec![sign::stripe("secret", NOW, &body)],
            SignatureScheme::HmacSha256 => {
                vec![("x-signature", sign::hmac_sha256("secret", Some(NOW), &body)), ("x-timestamp", NOW.to_string())]
            }
        }
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let headers = Headers(headers);
        let v = verifier(scheme);
        prop_assert!(v.verify(&headers, &body, NOW).is_ok());
        if !body.is_empty() {
            let mut altered = body.clone();
            let i = flip % altered.len();
            altered[i] ^= 0x01;
            prop_assert!(v.verify(&headers, &altered, NOW).is_err());
        }
    }

    /// Any body to any normaliser: commands, "ignored", or a 400 naming a field; never a panic.
    #[test]
    fn normalisers_never_panic(format in formats(), body in body()) {
        let envelope = Envelope { provider: "p", webhook_id: Some("msg_1"), received_at_ms: NOW * 1000, livemode: None };
        let _ = normalise(format, &body, envelope);
    }
}
