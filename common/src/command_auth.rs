//! Authentication of the inbound topic's records: ingest puts an HMAC-SHA256 of each record's
//! key and value, under an internal key (`kafka.command_keys`), into the record's
//! `paystream-mac` header; the processor applies only records whose MAC verifies with one of
//! the keys and dead-letters the others.
//!
//! Why a MAC and not only the cluster's ACLs: an ACL that lets only ingest write the topic
//! is the first line (docs/operations.md), but it depends on every cluster the topic lives
//! on being configured so, for ever (a mirrored copy, a shared cluster, a principal with
//! wildcard rights); the MAC makes the processor's trust independent of the broker: whoever
//! can produce to the topic without the key cannot inject a payment. It costs one HMAC over
//! ~200 bytes per command on each side.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::config::Secret;

/// The header that carries the MAC.
pub const HEADER: &str = "paystream-mac";

/// The MAC's text form: a version tag, then hex.
const PREFIX: &str = "v1=";

/// Separates the MAC's inputs from any other use of the same key.
const DOMAIN: &[u8] = b"paystream inbound record v1\0";

/// Signs with the first key, verifies with any (rotation: add the new key first on every
/// processor, then make it first on ingest, then remove the old one).
#[derive(Clone)]
pub struct CommandAuth {
    keys: Vec<Vec<u8>>,
}

impl std::fmt::Debug for CommandAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandAuth").field("keys", &self.keys.len()).finish()
    }
}

/// Why a record was not accepted as ingest's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CommandAuthError {
    /// No `paystream-mac` header.
    #[error("record not authenticated: no paystream-mac header")]
    Missing,
    /// A header that matches no key.
    #[error("record not authenticated: its paystream-mac matches no command key")]
    Mismatch,
}

impl CommandAuth {
    /// The keys as configured.
    pub fn new(keys: &[Secret]) -> Self {
        Self { keys: keys.iter().map(|k| k.expose().as_bytes().to_vec()).collect() }
    }

    fn mac(key: &[u8], record_key: &[u8], value: &[u8]) -> [u8; 32] {
        // HMAC takes keys of any length: new_from_slice cannot fail.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else { return [0; 32] };
        mac.update(DOMAIN);
        // Length-prefixed, so that no key/value split can be moved.
        mac.update(&u64::try_from(record_key.len()).unwrap_or(u64::MAX).to_be_bytes());
        mac.update(record_key);
        mac.update(value);
        mac.finalize().into_bytes().into()
    }

    /// The header value for a record: `None` when no key is configured.
    pub fn sign(&self, record_key: &[u8], value: &[u8]) -> Option<String> {
        let key = self.keys.first()?;
        Some(format!("{PREFIX}{}", hex::encode(Self::mac(key, record_key, value))))
    }

    /// Whether `header` is a MAC of the record under one of the keys; every key is tried.
    pub fn verify(&self, record_key: &[u8], value: &[u8], header: Option<&[u8]>) -> Result<(), CommandAuthError> {
        let header = header.ok_or(CommandAuthError::Missing)?;
        let candidate = header
            .strip_prefix(PREFIX.as_bytes())
            .and_then(|hex_text| hex::decode(hex_text).ok())
            .ok_or(CommandAuthError::Mismatch)?;
        let mut matched = subtle::Choice::from(0u8);
        for key in &self.keys {
            matched |= Self::mac(key, record_key, value).as_slice().ct_eq(&candidate);
        }
        if bool::from(matched) {
            Ok(())
        } else {
            Err(CommandAuthError::Mismatch)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A signed record verifies under the same key and under a rotation list holding it; a
    /// changed value, a key moved into the value, another key or no header does not.
    #[test]
    fn records_verify_only_as_signed() {
        let old = Secret::new("old-key-of-at-least-thirty-two-bytes!!");
        let new = Secret::new("new-key-of-at-least-thirty-two-bytes!!");
        let signer = CommandAuth::new(std::slice::from_ref(&old));
        let mac = signer.sign(b"k", b"value").unwrap();
        assert!(mac.starts_with("v1=") && mac.len() == 3 + 64);
        assert_eq!(signer.verify(b"k", b"value", Some(mac.as_bytes())), Ok(()));
        let rotating = CommandAuth::new(&[new.clone(), old]);
        assert_eq!(rotating.verify(b"k", b"value", Some(mac.as_bytes())), Ok(()));
        assert_eq!(signer.verify(b"k", b"valuf", Some(mac.as_bytes())), Err(CommandAuthError::Mismatch));
        assert_eq!(signer.verify(b"", b"kvalue", Some(mac.as_bytes())), Err(CommandAuthError::Mismatch));
        assert_eq!(
            CommandAuth::new(&[new]).verify(b"k", b"value", Some(mac.as_bytes())),
            Err(CommandAuthError::Mismatch)
        );
        assert_eq!(signer.verify(b"k", b"value", None), Err(CommandAuthError::Missing));
        assert_eq!(signer.verify(b"k", b"value", Some(b"v1=zz")), Err(CommandAuthError::Mismatch));
        assert_eq!(CommandAuth::new(&[]).sign(b"k", b"v"), None);
    }
}
