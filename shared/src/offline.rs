//! Offline (air-gapped) activation files: the request an offline machine writes, the signed license
//! file the server answers with, and the check an offline machine makes of that file with the
//! public key alone. docs/offline.md describes the formats.

use crate::input::{DeviceName, HardwareId, LicenseKey, Nonce, Platform, Product};
use crate::time::Timestamp;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};

pub const REQUEST_FORMAT: &str = "keygate-offline-request/1";
pub const LICENSE_FILE_FORMAT: &str = "keygate-license-file/1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OfflineKind {
    Activate,
    Deactivate,
}

/// What an offline machine asks for, carried to a connected machine as a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfflineRequest {
    pub format: String,
    pub kind: OfflineKind,
    pub license_key: LicenseKey,
    pub product: Product,
    pub hardware_id: HardwareId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_name: Option<DeviceName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Random, echoed in the license file's token, so the machine knows the answer is to its request.
    pub nonce: Nonce,
    pub created_at: Timestamp,
}

impl OfflineRequest {
    pub fn new(
        kind: OfflineKind,
        license_key: LicenseKey,
        product: Product,
        hardware_id: HardwareId,
        now: Timestamp,
    ) -> Result<Self, getrandom::Error> {
        let nonce = Nonce::generate("off")?;
        Ok(Self {
            format: REQUEST_FORMAT.into(),
            kind,
            license_key,
            product,
            hardware_id,
            device_name: None,
            platform: None,
            nonce,
            created_at: now,
        })
    }
}

/// The server's answer to an offline activation: the license, signed for one machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LicenseFile {
    pub format: String,
    pub license_key: LicenseKey,
    pub product: Product,
    pub hardware_id: HardwareId,
    /// When the file stops being valid (the token's `exp`), for people reading it.
    pub expires_at: Timestamp,
    /// A compact JWS (EdDSA): the verdict claims with `offline: true`. Only this is trusted.
    pub token: String,
}

/// Why a JWKS document or a public key cannot verify anything.
#[derive(Debug, thiserror::Error)]
pub enum PublicKeyError {
    #[error("the JWKS is not JSON: {0}")]
    NotJson(#[from] serde_json::Error),
    #[error("the JWKS has no `keys` list")]
    NoKeys,
    #[error("a JWKS key has no `{0}`")]
    Missing(&'static str),
    #[error("`{0}` is not a 32-byte base64url public key")]
    NotBytes(String),
    #[error("`{0}` is not an Ed25519 public key")]
    NotPoint(String),
}

/// The Ed25519 public keys of a JWKS document (`/.well-known/jwks.json`), by key id.
pub fn jwks_keys(jwks: &str) -> Result<Vec<(String, VerifyingKey)>, PublicKeyError> {
    #[derive(Deserialize)]
    struct Document {
        keys: Option<Vec<Jwk>>,
    }
    #[derive(Deserialize)]
    struct Jwk {
        kty: Option<String>,
        crv: Option<String>,
        kid: Option<String>,
        x: Option<String>,
    }
    let document: Document = serde_json::from_str(jwks)?;
    document
        .keys
        .ok_or(PublicKeyError::NoKeys)?
        .into_iter()
        .filter(|k| k.kty.as_deref() == Some("OKP") && k.crv.as_deref() == Some("Ed25519"))
        .map(|k| {
            let kid = k.kid.ok_or(PublicKeyError::Missing("kid"))?;
            let x = k.x.ok_or(PublicKeyError::Missing("x"))?;
            Ok((kid, public_key(&x)?))
        })
        .collect()
}

/// An Ed25519 public key from its base64url form (what `keygate keys public` prints after the key id).
pub fn public_key(text: &str) -> Result<VerifyingKey, PublicKeyError> {
    let bytes: [u8; 32] = URL_SAFE_NO_PAD
        .decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| PublicKeyError::NotBytes(text.into()))?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| PublicKeyError::NotPoint(text.into()))
}

/// The claims of a license file's token that the offline machine relies on, as signed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LicenseClaims {
    pub iss: String,
    /// The license id.
    pub sub: String,
    /// The product.
    pub aud: String,
    pub hwid: String,
    pub valid: bool,
    pub code: String,
    pub license_type: String,
    #[serde(default)]
    pub features: Vec<String>,
    #[serde(default)]
    pub offline: bool,
    #[serde(default)]
    pub nonce: Option<String>,
    pub iat: i64,
    pub exp: i64,
}

/// What a license file must be for: this product, from this issuer, for this machine (and, when
/// given, in answer to this request).
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    pub product: &'a Product,
    pub issuer: &'a str,
    pub hardware_id: &'a HardwareId,
    pub nonce: Option<&'a Nonce>,
}

/// What the offline machine holds once a license file verified: only what was signed.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    pub claims: LicenseClaims,
    pub expires_at: Timestamp,
}

/// Why a license file does not verify (each says what is wrong, for the person holding the file).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileRefusal {
    #[error("not a license file of format {LICENSE_FILE_FORMAT}")]
    Format,
    #[error("the token is not a compact JWS")]
    NotCompactJws,
    #[error("the token is not {0}")]
    Undecodable(&'static str),
    #[error("the token is not signed with EdDSA")]
    NotEdDsa,
    #[error("the token's signature is malformed")]
    MalformedSignature,
    #[error("the signature does not verify with the given public key(s)")]
    BadSignature,
    #[error("the token's claims are not a license's: {0}")]
    NotLicenseClaims(String),
    #[error("the token is not an offline license")]
    NotOffline,
    #[error("the license file is from another issuer ({found}, not {expected})")]
    OtherIssuer { found: String, expected: String },
    #[error("the license file is for another product ({found}, not {expected})")]
    OtherProduct { found: String, expected: String },
    #[error("the license file is for another machine ({0})")]
    OtherMachine(String),
    #[error("the license file does not answer this request (nonce)")]
    OtherRequest,
    #[error("the license is not valid: {0}")]
    NotValid(String),
    #[error("the license file expired at {0}")]
    Expired(Timestamp),
}

/// A JWS header: only its algorithm matters here.
#[derive(Deserialize)]
struct Header {
    alg: String,
}

/// Verifies a license file on the offline machine: the token's EdDSA signature with one of `keys`,
/// that it is an offline grant from `expected.issuer` for `expected.product` (its audience) on
/// `expected.hardware_id` (and for the request's nonce, when given), that its verdict is valid, and
/// that it has not expired at `now`. The file's other fields are not signed and are ignored.
pub fn verify_license_file(
    file: &LicenseFile,
    keys: &[VerifyingKey],
    expected: &Expected<'_>,
    now: Timestamp,
) -> Result<Verified, FileRefusal> {
    if file.format != LICENSE_FILE_FORMAT {
        return Err(FileRefusal::Format);
    }
    let mut parts = file.token.split('.');
    let (Some(header_b64), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(FileRefusal::NotCompactJws);
    };
    let header: Header = serde_json::from_slice(&decode(header_b64)?).map_err(|_| FileRefusal::Undecodable("JSON"))?;
    if header.alg != "EdDSA" {
        return Err(FileRefusal::NotEdDsa);
    }
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .ok()
        .and_then(|bytes| Signature::from_slice(&bytes).ok())
        .ok_or(FileRefusal::MalformedSignature)?;
    let signed = format!("{header_b64}.{payload}");
    if !keys.iter().any(|key| key.verify_strict(signed.as_bytes(), &signature).is_ok()) {
        return Err(FileRefusal::BadSignature);
    }
    let claims: LicenseClaims =
        serde_json::from_slice(&decode(payload)?).map_err(|e| FileRefusal::NotLicenseClaims(e.to_string()))?;
    if !claims.offline {
        return Err(FileRefusal::NotOffline);
    }
    if claims.iss != expected.issuer {
        return Err(FileRefusal::OtherIssuer { found: claims.iss, expected: expected.issuer.to_string() });
    }
    if claims.aud != expected.product.as_str() {
        return Err(FileRefusal::OtherProduct { found: claims.aud, expected: expected.product.to_string() });
    }
    if claims.hwid != expected.hardware_id.as_str() {
        return Err(FileRefusal::OtherMachine(claims.hwid));
    }
    if expected.nonce.is_some_and(|nonce| claims.nonce.as_deref() != Some(nonce.as_str())) {
        return Err(FileRefusal::OtherRequest);
    }
    if !claims.valid {
        return Err(FileRefusal::NotValid(claims.code));
    }
    if claims.exp <= now.unix() {
        return Err(FileRefusal::Expired(Timestamp::from_unix(claims.exp)));
    }
    Ok(Verified { expires_at: Timestamp::from_unix(claims.exp), claims })
}

fn decode(part: &str) -> Result<Vec<u8>, FileRefusal> {
    URL_SAFE_NO_PAD.decode(part).map_err(|_| FileRefusal::Undecodable("base64url"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::TokenSigner;
    use serde_json::json;
    use serde_json::Value;

    const NOW: Timestamp = Timestamp::from_unix(1_800_000_000);

    fn file(signer: &TokenSigner, claims: Value) -> LicenseFile {
        LicenseFile {
            format: LICENSE_FILE_FORMAT.into(),
            license_key: LicenseKey::parse("AAAAA-BBBBB").unwrap(),
            product: Product::parse("editor").unwrap(),
            hardware_id: HardwareId::parse("air-1").unwrap(),
            expires_at: NOW,
            token: signer.sign(&claims).unwrap(),
        }
    }

    fn claims(change: impl FnOnce(&mut Value)) -> Value {
        let mut claims = json!({"iss": "https://licenses.example", "sub": "lic_1", "aud": "editor", "hwid": "air-1",
            "valid": true, "code": "VALID", "license_type": "perpetual", "offline": true,
            "nonce": "n-1", "iat": NOW.unix(), "exp": NOW.unix() + 60});
        change(&mut claims);
        claims
    }

    #[test]
    fn a_license_file_verifies_only_for_its_machine_request_key_and_time() {
        let signer = TokenSigner::new([3; 32], &[]).unwrap();
        let keys = [public_key(&signer.public_key_b64()).unwrap()];
        let (air1, nonce) = (HardwareId::parse("air-1").unwrap(), Nonce::parse("n-1").unwrap());
        let editor = Product::parse("editor").unwrap();
        let expected =
            Expected { product: &editor, issuer: "https://licenses.example", hardware_id: &air1, nonce: Some(&nonce) };
        let verify =
            |file: &LicenseFile, keys: &[VerifyingKey], now: Timestamp| verify_license_file(file, keys, &expected, now);
        let good = file(&signer, claims(|_| {}));
        assert_eq!(verify(&good, &keys, NOW).unwrap().expires_at, NOW.plus_seconds(60));
        assert!(matches!(verify(&good, &keys, NOW.plus_seconds(60)), Err(FileRefusal::Expired(_))));
        let other_key = [public_key(&TokenSigner::new([4; 32], &[]).unwrap().public_key_b64()).unwrap()];
        assert_eq!(verify(&good, &other_key, NOW).unwrap_err(), FileRefusal::BadSignature);
        let cases: [(&str, Value); 6] = [
            ("another product", claims(|c| c["aud"] = json!("other-product"))),
            ("another issuer", claims(|c| c["iss"] = json!("https://other.example"))),
            ("another machine", claims(|c| c["hwid"] = json!("air-2"))),
            ("nonce", claims(|c| c["nonce"] = json!("n-2"))),
            ("not valid", claims(|c| c["valid"] = json!(false))),
            ("not an offline", claims(|c| c["offline"] = json!(false))),
        ];
        for (expected, claims) in cases {
            let err = verify(&file(&signer, claims), &keys, NOW).unwrap_err().to_string();
            assert!(err.contains(expected), "{expected}: {err}");
        }
        let mut swapped = good.clone();
        let other = file(&signer, claims(|c| c["exp"] = json!(NOW.unix() + 9_999)));
        let ((other_head, _), (_, good_signature)) =
            (other.token.rsplit_once('.').unwrap(), good.token.rsplit_once('.').unwrap());
        swapped.token = format!("{other_head}.{good_signature}");
        assert_eq!(
            verify(&swapped, &keys, NOW).unwrap_err(),
            FileRefusal::BadSignature,
            "payload swapped under a signature"
        );
        let jwks = signer.jwks_json();
        assert_eq!(jwks_keys(jwks).unwrap()[0].1, keys[0]);
    }
}
