//! Compact JWS (RFC 7515) with `alg: EdDSA` (RFC 8037) over Ed25519, and the JWKS that verifies it.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Why a signing key or a retired public key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the signing key is not base64")]
    NotBase64,
    #[error("the signing key must be 32 bytes, got {0}")]
    SeedLength(usize),
    #[error("retired public key `{0}` is not 32 base64url bytes")]
    RetiredNotBytes(String),
    #[error("retired public key `{0}` is not an Ed25519 point")]
    RetiredNotPoint(String),
    #[error("the key set cannot be written as JSON")]
    Jwks(#[from] serde_json::Error),
}

/// A 32-byte Ed25519 seed, as text: unpadded base64url (what `keygate keys new` prints) or standard base64.
pub fn decode_seed(text: &str) -> Result<[u8; 32], KeyError> {
    let text = text.trim();
    let bytes = URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .or_else(|_| STANDARD.decode(text))
        .map_err(|_| KeyError::NotBase64)?;
    bytes.try_into().map_err(|b: Vec<u8>| KeyError::SeedLength(b.len()))
}

/// A fresh 32-byte seed from the OS CSPRNG, base64url-encoded.
pub fn generate_seed() -> Result<String, getrandom::Error> {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed)?;
    Ok(URL_SAFE_NO_PAD.encode(seed))
}

/// The key id of a public key: the first 16 characters of the base64url SHA-256 of its bytes.
/// Derived, so every rotated key gets a new id without anyone choosing one.
pub fn key_id(public: &VerifyingKey) -> String {
    let digest = Sha256::digest(public.as_bytes());
    URL_SAFE_NO_PAD.encode(digest)[..16].to_string()
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Jwk {
    pub kty: &'static str,
    pub crv: &'static str,
    pub alg: &'static str,
    #[serde(rename = "use")]
    pub use_: &'static str,
    pub kid: String,
    pub x: String,
}

impl Jwk {
    fn of(public: &VerifyingKey) -> Self {
        Jwk {
            kty: "OKP",
            crv: "Ed25519",
            alg: "EdDSA",
            use_: "sig",
            kid: key_id(public),
            x: URL_SAFE_NO_PAD.encode(public.as_bytes()),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

/// Signs tokens with the current key; publishes it and the retired keys clients may still hold tokens from.
pub struct TokenSigner {
    key: SigningKey,
    kid: String,
    header_b64: String,
    jwks_json: String,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl TokenSigner {
    /// `retired` are base64url public keys of earlier signing keys, kept in the JWKS for verification.
    pub fn new(seed: [u8; 32], retired: &[String]) -> Result<Self, KeyError> {
        let key = SigningKey::from_bytes(&seed);
        let public = key.verifying_key();
        let kid = key_id(&public);
        let header = serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": kid});
        let header_b64 = URL_SAFE_NO_PAD.encode(header.to_string());
        let mut keys = vec![Jwk::of(&public)];
        for text in retired.iter().map(|t| t.trim()).filter(|t| !t.is_empty()) {
            let bytes: [u8; 32] = URL_SAFE_NO_PAD
                .decode(text)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| KeyError::RetiredNotBytes(text.into()))?;
            let retired_key = VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::RetiredNotPoint(text.into()))?;
            if retired_key != public {
                keys.push(Jwk::of(&retired_key));
            }
        }
        let jwks_json = serde_json::to_string(&Jwks { keys })?;
        Ok(Self { key, kid, header_b64, jwks_json })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn public_key_b64(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.key.verifying_key().as_bytes())
    }

    /// The JWKS document, rendered once at start-up.
    pub fn jwks_json(&self) -> &str {
        &self.jwks_json
    }

    pub fn sign<C: Serialize>(&self, claims: &C) -> Result<String, serde_json::Error> {
        let payload = serde_json::to_vec(claims)?;
        let mut token = String::with_capacity(self.header_b64.len() + payload.len() * 4 / 3 + 90);
        token.push_str(&self.header_b64);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&payload, &mut token);
        let signature = self.key.sign(token.as_bytes());
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.to_bytes(), &mut token);
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signature, Verifier};

    #[test]
    fn seeds_round_trip_through_both_base64_forms() {
        let text = generate_seed().unwrap();
        let seed = decode_seed(&text).unwrap();
        assert_eq!(decode_seed(&STANDARD.encode(seed)).unwrap(), seed);
        assert!(matches!(decode_seed("c2hvcnQ"), Err(KeyError::SeedLength(5))));
        assert!(matches!(decode_seed("!!!"), Err(KeyError::NotBase64)));
    }

    #[test]
    fn token_header_names_the_key_and_signature_covers_header_and_payload() {
        let signer = TokenSigner::new([7; 32], &[]).unwrap();
        let token = signer.sign(&serde_json::json!({"sub": "lic_1"})).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header, serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": signer.kid()}));
        let signature = Signature::from_slice(&URL_SAFE_NO_PAD.decode(parts[2]).unwrap()).unwrap();
        let public = SigningKey::from_bytes(&[7; 32]).verifying_key();
        let signed = format!("{}.{}", parts[0], parts[1]);
        assert!(public.verify(signed.as_bytes(), &signature).is_ok());
        assert!(public.verify(format!("{signed}x").as_bytes(), &signature).is_err());
    }

    #[test]
    fn jwks_lists_current_then_retired_keys() {
        let old = TokenSigner::new([1; 32], &[]).unwrap();
        let signer = TokenSigner::new([2; 32], &[old.public_key_b64(), signer_pub([2; 32])]).unwrap();
        let jwks: serde_json::Value = serde_json::from_str(signer.jwks_json()).unwrap();
        let kids: Vec<&str> = jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap()).collect();
        assert_eq!(kids, vec![signer.kid(), old.kid()]);
        assert_eq!(jwks["keys"][0]["kty"], "OKP");
        assert_eq!(jwks["keys"][0]["crv"], "Ed25519");
        assert_eq!(jwks["keys"][0]["use"], "sig");
        assert!(TokenSigner::new([2; 32], &["nope".into()]).is_err());
    }

    fn signer_pub(seed: [u8; 32]) -> String {
        URL_SAFE_NO_PAD.encode(SigningKey::from_bytes(&seed).verifying_key().as_bytes())
    }
}
