//! Verifying a signed verdict: signature (with a trusted key, through `jsonwebtoken`), audience,
//! issuer, hardware id and nonce. Time is not checked here: an expired verdict still verifies, and
//! what it means at a given moment is decided by [`crate::decide`].

use crate::error::TokenError;
use crate::keys::KeySet;
use jsonwebtoken::{Algorithm, Validation};
use serde::{Deserialize, Serialize};

/// The claims of a Keygate verdict token (README, "Tokens"). Times are Unix seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// The license id.
    pub sub: String,
    /// The product.
    pub aud: String,
    pub hwid: String,
    pub valid: bool,
    /// `VALID`, `GRACE_PERIOD`, `EXPIRED`, `SUSPENDED`, `REVOKED`, `PRODUCT_MISMATCH`,
    /// `DEVICE_NOT_ACTIVATED` or `LEASE_EXPIRED`.
    pub code: String,
    pub license_type: String,
    pub status: String,
    #[serde(default)]
    pub license_expires_at: Option<i64>,
    #[serde(default)]
    pub grace_ends_at: Option<i64>,
    #[serde(default)]
    pub maintenance_until: Option<i64>,
    #[serde(default)]
    pub features: Vec<String>,
    #[serde(default)]
    pub feature: Option<FeatureClaim>,
    #[serde(default)]
    pub lease_expires_at: Option<i64>,
    #[serde(default)]
    pub borrowed_until: Option<i64>,
    #[serde(default)]
    pub work_if_validation_blocked: bool,
    #[serde(default)]
    pub offline: bool,
    pub iat: i64,
    pub exp: i64,
    #[serde(default)]
    pub nonce: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureClaim {
    pub code: String,
    pub usable: bool,
}

/// What a verdict must be for.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    pub product: &'a str,
    pub issuer: &'a str,
    pub hardware_id: &'a str,
    /// The nonce this request sent; `None` for a verdict read back from the cache.
    pub nonce: Option<&'a str>,
}

/// Verifies `token` with `keys` for `expected`; the claims as signed.
pub fn verify(token: &str, keys: &KeySet, expected: &Expected<'_>) -> Result<Claims, TokenError> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
    if header.alg != Algorithm::EdDSA {
        return Err(TokenError::Algorithm);
    }
    let key = header.kid.as_deref().and_then(|kid| keys.find(kid)).ok_or(TokenError::UnknownKey(header.kid.clone()))?;
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_audience(&[expected.product]);
    validation.set_issuer(&[expected.issuer]);
    validation.set_required_spec_claims(&["exp", "iat", "aud", "iss"]);
    // Time is decided with the app's clock (injectable), not the system's, by `decide`.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    let data = jsonwebtoken::decode::<Claims>(token, &key.decoding, &validation).map_err(|e| {
        use jsonwebtoken::errors::ErrorKind;
        match e.kind() {
            ErrorKind::InvalidSignature => TokenError::BadSignature,
            ErrorKind::InvalidAudience => TokenError::WrongAudience,
            ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
            ErrorKind::InvalidAlgorithm => TokenError::Algorithm,
            ErrorKind::Json(_) | ErrorKind::MissingRequiredClaim(_) => TokenError::Claims(e.to_string()),
            _ => TokenError::Malformed,
        }
    })?;
    let claims = data.claims;
    if claims.hwid != expected.hardware_id {
        return Err(TokenError::WrongHardwareId);
    }
    if let Some(nonce) = expected.nonce {
        if claims.nonce.as_deref() != Some(nonce) {
            return Err(TokenError::NonceMismatch);
        }
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::PublicKey;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use ed25519_dalek::{Signer, SigningKey};
    use serde_json::{json, Value};

    /// Signs claims as a server would, with ed25519-dalek directly (not Keygate's signing code).
    fn sign(seed: u8, header: Value, claims: &Value) -> String {
        let key = SigningKey::from_bytes(&[seed; 32]);
        let signed =
            format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
        let signature = key.sign(signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    }

    fn key(seed: u8) -> PublicKey {
        let public = SigningKey::from_bytes(&[seed; 32]).verifying_key();
        PublicKey::from_base64url(&URL_SAFE_NO_PAD.encode(public.as_bytes())).unwrap()
    }

    fn claims() -> Value {
        json!({"iss": "https://licenses.example", "sub": "lic_1", "aud": "editor", "hwid": "pc-1",
            "valid": true, "code": "VALID", "license_type": "perpetual", "status": "active",
            "features": [], "work_if_validation_blocked": false, "iat": 1_800_000_000, "exp": 1_800_604_800,
            "nonce": "n-1"})
    }

    #[test]
    fn only_a_verdict_for_this_product_issuer_machine_and_request_verifies() {
        let keys = KeySet::new(vec![key(1)]);
        let header = json!({"alg": "EdDSA", "typ": "JWT", "kid": key(1).kid});
        let expected =
            Expected { product: "editor", issuer: "https://licenses.example", hardware_id: "pc-1", nonce: Some("n-1") };
        let good = sign(1, header.clone(), &claims());
        assert_eq!(verify(&good, &keys, &expected).unwrap().code, "VALID");
        let changed = |field: &str, value: Value| {
            let mut c = claims();
            c[field] = value;
            sign(1, header.clone(), &c)
        };
        let cases = [
            (changed("aud", json!("other")), TokenError::WrongAudience),
            (changed("iss", json!("https://elsewhere.example")), TokenError::WrongIssuer),
            (changed("hwid", json!("pc-2")), TokenError::WrongHardwareId),
            (changed("nonce", json!("n-2")), TokenError::NonceMismatch),
            (sign(2, header.clone(), &claims()), TokenError::BadSignature),
            (sign(2, json!({"alg": "EdDSA", "kid": key(2).kid}), &claims()), TokenError::UnknownKey(Some(key(2).kid))),
            (sign(1, json!({"alg": "HS256", "kid": key(1).kid}), &claims()), TokenError::Algorithm),
        ];
        for (token, error) in cases {
            assert_eq!(verify(&token, &keys, &expected), Err(error.clone()), "{error}");
        }
        let (head, _) = good.rsplit_once('.').unwrap();
        let (_, other_signature) =
            sign(1, header, &json!({"a": 1})).rsplit_once('.').map(|(h, s)| (h.to_string(), s.to_string())).unwrap();
        assert_eq!(verify(&format!("{head}.{other_signature}"), &keys, &expected), Err(TokenError::BadSignature));
        assert_eq!(verify("not.a.token", &keys, &expected), Err(TokenError::Malformed));
        let cached = Expected { nonce: None, ..expected };
        assert!(verify(&good, &keys, &cached).is_ok(), "a cached verdict is checked without its nonce");
    }
}
