//! Personal data out of what ingest keeps of a webhook it could not normalise.
//!
//! Such a webhook is kept (an `UnprocessableWebhook` record on the inbound topic, then a dead
//! letter row and a `DeadLetter` event) so that money a provider was told is durable is never
//! lost. Its body may carry the payer's personal data (a Pix `pagador` / `devedor` with `nome`
//! and `cpf`, `infoPagador` free text, a card's billing details), which LGPD keeps in
//! `customer` only. What is kept is therefore the body with every personal field's value
//! replaced by `"[redacted]"` (the field stays, so an operator sees its shape), and everything
//! else as it was: ids, txids, amounts, times, what the reason names.
//!
//! A body with nothing to redact is kept byte for byte. A redacted one is JSON written again
//! (keys in sorted order, no insignificant whitespace), so its bytes differ from the
//! provider's: the SHA-256 of the original body goes with it (in the reason), so that an
//! operator can prove which body it was and match the provider's resend, the way back for a
//! webhook ingest could not normalise (such dead letters are not re-driven). A body that is
//! not JSON cannot be searched for personal fields, so none of it is kept: only its length and
//! hash.

use sha2::{Digest, Sha256};

/// Replaces a personal field's value.
pub const REDACTED: &str = "[redacted]";

/// Keys whose value is personal data, compared lower-case without `_` and `-` (`birth_date`,
/// `birthDate` and `birth-date` are `birthdate`). A whole object under one of them (a Pix
/// `pagador`) goes at once.
const PERSONAL_KEYS: &[&str] = &[
    "name",
    "nome",
    "fullname",
    "firstname",
    "lastname",
    "nomecompleto",
    "customername",
    "taxid",
    "rg",
    "dob",
    "cep",
    "zip",
    "zipcode",
    "postalcode",
    "line1",
    "line2",
    "pagador",
    "devedor",
    "payer",
    "infopagador",
    "chave",
    "shipping",
    "billingdetails",
    "customerdetails",
];

/// Parts of keys whose value is personal data wherever they appear (`receipt_email`,
/// `phone_number`, `cpf_pagador`, `data_nascimento`, `billing_address`).
const PERSONAL_PARTS: &[&str] = &[
    "email",
    "phone",
    "telefone",
    "celular",
    "cpf",
    "cnpj",
    "birth",
    "nascimento",
    "address",
    "endereco",
    "logradouro",
    "document",
];

/// What ingest keeps of a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    /// The body to keep: the original when nothing was personal, else redacted.
    pub body: Vec<u8>,
    /// Fields whose values were replaced (JSON paths), in document order.
    pub redacted: Vec<String>,
    /// The body was not JSON and none of it is kept.
    pub dropped: bool,
    /// SHA-256 of the original body, lower-case hex.
    pub sha256: String,
}

impl Kept {
    /// A note for the dead letter's reason: what was taken out and the original's hash;
    /// empty when the body is kept as received.
    pub fn note(&self) -> String {
        if self.dropped {
            format!("; body not JSON, not kept (personal data cannot be ruled out), original sha256 {}", self.sha256)
        } else if self.redacted.is_empty() {
            String::new()
        } else {
            format!("; personal fields redacted: {}; original sha256 {}", self.redacted.join(", "), self.sha256)
        }
    }
}

/// Whether `key` names personal data.
pub fn is_personal(key: &str) -> bool {
    let k: String = key.chars().filter(|c| *c != '_' && *c != '-').flat_map(char::to_lowercase).collect();
    PERSONAL_KEYS.contains(&k.as_str()) || PERSONAL_PARTS.iter().any(|part| k.contains(part))
}

/// What to keep of `body`.
pub fn redact(body: &[u8]) -> Kept {
    let sha256 = hex::encode(Sha256::digest(body));
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(body) else {
        let note = serde_json::json!({
            "redacted": "the body was not JSON and is not kept",
            "length": body.len(),
            "sha256": sha256,
        });
        return Kept { body: note.to_string().into_bytes(), redacted: Vec::new(), dropped: true, sha256 };
    };
    let mut redacted = Vec::new();
    walk(&mut value, "", &mut redacted);
    let body = if redacted.is_empty() { body.to_vec() } else { value.to_string().into_bytes() };
    Kept { body, redacted, dropped: false, sha256 }
}

fn walk(value: &mut serde_json::Value, path: &str, redacted: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                let here = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                if is_personal(key) {
                    if !v.is_null() {
                        *v = serde_json::Value::String(REDACTED.to_owned());
                        redacted.push(here);
                    }
                } else {
                    walk(v, &here, redacted);
                }
            }
        }
        serde_json::Value::Array(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                walk(v, &format!("{path}[{i}]"), redacted);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Pix webhook's payer (name and CPF in `pagador`, free text in `infoPagador`) is
    /// replaced; its ids, amount and time stay; the original's hash goes with it.
    #[test]
    fn pix_payer_fields_are_redacted_and_the_rest_kept() {
        let body = br#"{"pix":[{"endToEndId":"E123","valor":"10.00","horario":"2026-11-25T10:00:00Z",
            "pagador":{"nome":"Maria da Silva","cpf":"12345678909"},"infoPagador":"pago por Maria, tel 11 91234-5678",
            "devolucoes":[{"id":"D1","valor":"1.00","devedor":{"cnpj":"12345678000195","nome":"ACME"}}]}]}"#;
        let kept = redact(body);
        let text = String::from_utf8(kept.body.clone()).unwrap();
        for value in ["Maria", "12345678909", "91234-5678", "12345678000195", "ACME"] {
            assert!(!text.contains(value), "{value} in {text}");
        }
        for value in ["E123", "10.00", "2026-11-25T10:00:00Z", "D1", "1.00"] {
            assert!(text.contains(value), "{value} kept: {text}");
        }
        assert_eq!(kept.redacted, ["pix[0].devolucoes[0].devedor", "pix[0].infoPagador", "pix[0].pagador"]);
        assert_eq!(kept.sha256, hex::encode(Sha256::digest(body)));
        assert!(kept.note().contains(&kept.sha256) && kept.note().contains("pix[0].pagador"), "{}", kept.note());
    }

    /// A body without personal fields is kept byte for byte, with no note.
    #[test]
    fn a_body_without_personal_fields_is_kept_as_received() {
        let body = br#"{"pix": [{"endToEndId": "E1", "valor": "1.00"}]}"#;
        let kept = redact(body);
        assert_eq!(kept.body, body.to_vec());
        assert!(kept.redacted.is_empty() && !kept.dropped && kept.note().is_empty());
    }

    /// A body that is not JSON is not kept: only its length and hash.
    #[test]
    fn a_body_that_is_not_json_is_not_kept() {
        let kept = redact(b"nome=Maria&cpf=12345678909");
        let text = String::from_utf8(kept.body.clone()).unwrap();
        assert!(kept.dropped && !text.contains("Maria") && !text.contains("12345678909"), "{text}");
        assert!(text.contains(&kept.sha256) && kept.note().contains("not kept"), "{text}");
    }

    /// Keys are recognised whatever their case and separators.
    #[test]
    fn personal_keys_in_any_spelling() {
        for key in
            ["birth_date", "birthDate", "Data_Nascimento", "receipt_email", "phoneNumber", "CPF", "tax_id", "Nome"]
        {
            assert!(is_personal(key), "{key}");
        }
        for key in ["endToEndId", "txid", "valor", "horario", "amount", "currency", "installment_id", "id"] {
            assert!(!is_personal(key), "{key}");
        }
    }
}
