//! The public keys a client trusts: embedded in the app at build time (the current key and the
//! next one, so a key rotation on the server never locks out installed copies), and, only where
//! the vendor opts in, keys fetched from the server's JWKS at run time.

use crate::error::{Error, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::DecodingKey;
use sha2::{Digest, Sha256};

/// One Ed25519 public key and its key id (derived from the key, as the server derives it).
#[derive(Clone)]
pub struct PublicKey {
    pub kid: String,
    /// The 32-byte key, base64url without padding (a JWK's `x`).
    pub x: String,
    pub(crate) decoding: DecodingKey,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKey").field("kid", &self.kid).field("x", &self.x).finish()
    }
}

impl PublicKey {
    /// A key as `keygate keys public` prints it (`<kid> <key>`, the kid then checked), or the key
    /// alone (base64url, a JWK's `x`).
    pub fn from_base64url(text: &str) -> Result<Self> {
        let mut fields = text.split_whitespace();
        let (given_kid, x) = match (fields.next(), fields.next(), fields.next()) {
            (Some(x), None, None) => (None, x),
            (Some(kid), Some(x), None) => (Some(kid), x),
            _ => return Err(Error::Config(format!("`{text}` is not a public key (or `<kid> <key>`)"))),
        };
        let bytes = URL_SAFE_NO_PAD
            .decode(x)
            .ok()
            .filter(|b| b.len() == 32)
            .ok_or_else(|| Error::Config(format!("`{x}` is not a 32-byte base64url Ed25519 public key")))?;
        let digest = Sha256::digest(&bytes);
        let kid = URL_SAFE_NO_PAD.encode(digest)[..16].to_string();
        if let Some(given) = given_kid.filter(|given| *given != kid) {
            return Err(Error::Config(format!("the key id {given} does not belong to key {x}")));
        }
        let decoding = DecodingKey::from_ed_components(x).map_err(|e| Error::Config(e.to_string()))?;
        Ok(Self { kid, x: x.to_string(), decoding })
    }
}

/// The keys a verdict may be signed with.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<PublicKey>,
}

impl KeySet {
    pub fn new(keys: Vec<PublicKey>) -> Self {
        Self { keys }
    }

    /// The Ed25519 keys of a JWKS document (`/.well-known/jwks.json`).
    pub fn from_jwks(jwks: &str) -> Result<Self> {
        #[derive(serde::Deserialize)]
        struct Jwks {
            keys: Vec<Jwk>,
        }
        #[derive(serde::Deserialize)]
        struct Jwk {
            kty: String,
            #[serde(default)]
            crv: String,
            #[serde(default)]
            x: String,
        }
        let jwks: Jwks = serde_json::from_str(jwks).map_err(|e| Error::Config(format!("not a JWKS: {e}")))?;
        let keys = jwks
            .keys
            .iter()
            .filter(|k| k.kty == "OKP" && k.crv == "Ed25519")
            .map(|k| PublicKey::from_base64url(&k.x))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { keys })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }

    /// The key with this id, if trusted.
    pub fn find(&self, kid: &str) -> Option<&PublicKey> {
        self.keys.iter().find(|k| k.kid == kid)
    }

    /// Adds keys not present yet.
    pub fn extend(&mut self, other: &KeySet) {
        for key in &other.keys {
            if self.find(&key.kid).is_none() {
                self.keys.push(key.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_read_alone_or_as_keygate_keys_public_prints_it() {
        let x = URL_SAFE_NO_PAD.encode([7u8; 32]);
        let alone = PublicKey::from_base64url(&x).unwrap();
        let printed = PublicKey::from_base64url(&format!("{} {x}\n", alone.kid)).unwrap();
        assert_eq!((printed.kid.clone(), printed.x.clone()), (alone.kid, x.clone()));
        assert!(PublicKey::from_base64url(&format!("wrongkid {x}")).is_err(), "the kid must match");
        assert!(PublicKey::from_base64url("short").is_err());
    }
}
