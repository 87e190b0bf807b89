//! Standard Webhooks signatures (standardwebhooks.com): the receiver checks
//! `webhook-signature` against HMAC-SHA256 over `{webhook-id}.{webhook-timestamp}.{body}`, keyed
//! with the endpoint's secret (`whsec_` and the key's base64), with any existing library.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::hmac;

/// An endpoint's signing secret: 32 bytes from the OS CSPRNG.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

const PREFIX: &str = "whsec_";

impl Secret {
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut key = vec![0u8; 32];
        getrandom::getrandom(&mut key)?;
        Ok(Self(key))
    }

    /// A secret as [`Secret::as_text`] writes it.
    pub fn parse(text: &str) -> Option<Self> {
        let key = STANDARD.decode(text.strip_prefix(PREFIX)?).ok()?;
        (key.len() >= 24).then_some(Self(key))
    }

    /// `whsec_` and the key in base64: what the vendor configures their receiver with.
    pub fn as_text(&self) -> String {
        format!("{PREFIX}{}", STANDARD.encode(&self.0))
    }

    /// One signature, `v1,<base64 HMAC-SHA256>`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &str) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.0);
        let tag = hmac::sign(&key, format!("{id}.{timestamp}.{body}").as_bytes());
        format!("v1,{}", STANDARD.encode(tag.as_ref()))
    }
}

/// Never printed: a secret in a log line or a panic message is a leaked secret.
impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// The `webhook-signature` header: one signature per secret (the current one, and the previous
/// one for a day after a rotation, so a receiver may switch keys at its own pace).
pub fn signature_header(secrets: &[&Secret], id: &str, timestamp: i64, body: &str) -> String {
    secrets.iter().map(|secret| secret.sign(id, timestamp, body)).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_standards_hmac_over_id_timestamp_and_body() {
        // The specification's own example: this secret, id, timestamp and body give this signature.
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn secrets_round_trip_as_text_and_never_print() {
        let secret = Secret::generate().unwrap();
        assert!(secret.as_text().starts_with("whsec_"));
        assert_eq!(Secret::parse(&secret.as_text()), Some(secret.clone()));
        assert_ne!(Secret::generate().unwrap(), secret);
        assert_eq!(format!("{secret:?}"), "Secret(…)");
        assert_eq!(Secret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), None, "the prefix is required");
        assert_eq!(Secret::parse("whsec_c2hvcnQ="), None, "too short a key");
        let two = signature_header(&[&secret, &secret], "id", 1, "{}");
        assert_eq!(two.split(' ').count(), 2);
    }
}
