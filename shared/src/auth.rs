//! Vendor authentication: admin tokens are configured only as SHA-256 hashes and compared in
//! constant time, so neither the configuration nor the timing reveals a token.

use sha2::{Digest, Sha256};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

#[derive(Clone, Default)]
pub struct AdminTokens {
    tokens: Vec<([u8; 32], TokenName)>,
}

impl std::fmt::Debug for AdminTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AdminTokens({} configured)", self.tokens.len())
    }
}

/// Which admin token made a vendor call: the name it was configured under (`name:hash`), or for a
/// bare hash `token-` and the hash's first 8 hex digits. What logs (and events) say acted; never
/// the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenName(String);

impl TokenName {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn parse(name: &str) -> Option<Self> {
        let valid = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
        (!name.is_empty() && name.len() <= 32 && name.chars().all(valid)).then(|| Self(name.to_string()))
    }
}

impl std::fmt::Display for TokenName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The hex SHA-256 of a token: what goes into `KEYGATE_ADMIN_TOKEN_SHA256`.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The least an admin token must carry (NIST's floor for security strength); `keygate admin-token
/// new` makes 256-bit ones.
pub const MIN_TOKEN_BITS: f64 = 112.0;
pub const MIN_TOKEN_LENGTH: usize = 32;

/// Refuses a token a person might have chosen: too short, or too repetitive for its length. The
/// estimate is the token's length times the Shannon entropy of its own characters, which a random
/// token over any alphabet of 16 or more symbols passes, and a phrase or a repeated pattern does not.
pub fn check_token_strength(token: &str) -> Result<(), WeakToken> {
    let length = token.chars().count();
    if length < MIN_TOKEN_LENGTH {
        return Err(WeakToken::TooShort { length });
    }
    let mut counts = std::collections::BTreeMap::new();
    for c in token.chars() {
        *counts.entry(c).or_insert(0usize) += 1;
    }
    let per_char: f64 = counts
        .values()
        .map(|&count| {
            let p = count as f64 / length as f64;
            -p * p.log2()
        })
        .sum();
    let bits = per_char * length as f64;
    if bits < MIN_TOKEN_BITS {
        return Err(WeakToken::TooGuessable { bits });
    }
    Ok(())
}

/// Why a token would be easy to guess (the text follows "the token").
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum WeakToken {
    #[error("is {length} characters; an admin token needs at least {MIN_TOKEN_LENGTH}")]
    TooShort { length: usize },
    #[error("carries about {bits:.0} bits; an admin token needs at least {MIN_TOKEN_BITS:.0}")]
    TooGuessable { bits: f64 },
}

/// Why the configured admin token hashes cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotAHash {
    #[error(
        "admin token hashes must be 64 hex characters (SHA-256), each optionally named as name:hash (a \
         name of 1 to 32 lowercase letters, digits, - or _), comma-separated"
    )]
    Malformed,
    #[error("the admin token name {0} is given to two different hashes; each name once")]
    NameTwice(String),
    #[error("one admin token hash is configured under two names ({0} and {1}); name it once")]
    HashTwice(String, String),
}

impl AdminTokens {
    /// Comma-separated hex SHA-256 hashes, each optionally `name:hash`; several allow rotating a
    /// token without downtime. The same entry twice is the same token.
    pub fn parse(list: &str) -> Result<Self, NotAHash> {
        let mut tokens: Vec<([u8; 32], TokenName)> = Vec::new();
        for entry in list.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (name, text) = match entry.split_once(':') {
                Some((name, text)) => (Some(TokenName::parse(name.trim()).ok_or(NotAHash::Malformed)?), text.trim()),
                None => (None, entry),
            };
            let mut hash = [0u8; 32];
            hex::decode_to_slice(text, &mut hash).map_err(|_| NotAHash::Malformed)?;
            let name = name.unwrap_or_else(|| TokenName(format!("token-{}", &text[..8].to_ascii_lowercase())));
            match tokens.iter().find(|(known, taken)| *known == hash || *taken == name) {
                Some((known, taken)) if *known == hash && *taken == name => continue,
                Some((known, taken)) if *known == hash => {
                    return Err(NotAHash::HashTwice(taken.to_string(), name.to_string()));
                }
                Some(_) => return Err(NotAHash::NameTwice(name.to_string())),
                None => tokens.push((hash, name)),
            }
        }
        Ok(Self { tokens })
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The name of the configured token `token` is, if any. Every hash is compared, match or not,
    /// and the match is picked without branching on it.
    pub fn identify(&self, token: &str) -> Option<&TokenName> {
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut matched = Choice::from(0);
        let mut index = 0u32;
        for (i, (hash, _)) in self.tokens.iter().enumerate() {
            let equal = hash.ct_eq(&presented);
            index.conditional_assign(&(i as u32), equal);
            matched |= equal;
        }
        bool::from(matched).then(|| &self.tokens[index as usize].1)
    }

    /// True when `token` hashes to a configured hash.
    pub fn allows(&self, token: &str) -> bool {
        self.identify(token).is_some()
    }

    /// The token an `Authorization: Bearer <token>` header value carries, if it is a configured one.
    pub fn identify_header(&self, header: Option<&str>) -> Option<&TokenName> {
        let value = header?;
        let mut parts = value.trim().splitn(2, ' ');
        match (parts.next(), parts.next()) {
            (Some(scheme), Some(token)) if scheme.eq_ignore_ascii_case("bearer") => self.identify(token.trim()),
            _ => None,
        }
    }

    /// Checks an `Authorization: Bearer <token>` header value.
    pub fn allows_header(&self, header: Option<&str>) -> bool {
        self.identify_header(header).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_configured_tokens_pass() {
        let tokens = AdminTokens::parse(&format!("{}, {}", hash_token("first"), hash_token("second"))).unwrap();
        assert!(tokens.allows("first") && tokens.allows("second"));
        assert!(!tokens.allows("third") && !tokens.allows(""));
        assert!(tokens.allows_header(Some("Bearer second")));
        assert!(tokens.allows_header(Some("bearer first")));
        assert!(!tokens.allows_header(Some("Basic first")));
        assert!(!tokens.allows_header(Some("Bearer")));
        assert!(!tokens.allows_header(None));
    }

    #[test]
    fn a_token_is_known_by_its_configured_name() {
        let (first, second) = (hash_token("first"), hash_token("second"));
        let tokens = AdminTokens::parse(&format!("ci:{first}, {second}")).unwrap();
        assert_eq!(tokens.identify("first").map(TokenName::as_str), Some("ci"));
        let unnamed = format!("token-{}", &second[..8]);
        assert_eq!(tokens.identify("second").map(TokenName::as_str), Some(unnamed.as_str()));
        assert_eq!(tokens.identify_header(Some("Bearer first")).map(TokenName::as_str), Some("ci"));
        assert_eq!(tokens.identify("third"), None);
        for bad in [
            format!("CI:{first}"),
            format!("a b:{first}"),
            format!(":{first}"),
            format!("{}:{first}", "n".repeat(33)),
            format!("ci:{first}:x"),
        ] {
            assert_eq!(AdminTokens::parse(&bad).unwrap_err(), NotAHash::Malformed, "{bad}");
        }
        let twice = AdminTokens::parse(&format!("ci:{first},ci:{second}")).unwrap_err();
        assert_eq!(twice, NotAHash::NameTwice("ci".into()));
        let renamed = AdminTokens::parse(&format!("ci:{first},ops:{first}")).unwrap_err();
        assert_eq!(renamed, NotAHash::HashTwice("ci".into(), "ops".into()));
        // The same entry twice (as a config edited by hand may have it), spaces, upper-case hex.
        let same = AdminTokens::parse(&format!("{first}, {} , ci : {second}, ci:{second}", first.to_uppercase()));
        let same = same.unwrap();
        assert_eq!((same.tokens.len(), same.identify("second").map(TokenName::as_str)), (2, Some("ci")));
    }

    #[test]
    fn no_configured_hash_means_no_access() {
        let none = AdminTokens::parse("").unwrap();
        assert!(none.is_empty() && !none.allows(""));
    }

    #[test]
    fn weak_tokens_are_refused_and_generated_ones_pass() {
        for _ in 0..200 {
            let generated = crate::signing::generate_seed().unwrap();
            assert_eq!(check_token_strength(&generated), Ok(()), "{generated}");
        }
        assert_eq!(
            check_token_strength("5f0c3a9e21b47d8c6e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d"),
            Ok(()),
            "hex"
        );
        assert_eq!(check_token_strength("correct-horse"), Err(WeakToken::TooShort { length: 13 }));
        assert!(matches!(check_token_strength(&"a".repeat(64)), Err(WeakToken::TooGuessable { .. })));
        assert!(matches!(check_token_strength(&"ab".repeat(40)), Err(WeakToken::TooGuessable { .. })));
        assert!(check_token_strength("passwordpasswordpasswordpassword").is_err());
    }

    #[test]
    fn malformed_hashes_are_refused() {
        assert!(AdminTokens::parse("abc").is_err());
        assert!(AdminTokens::parse(&"z".repeat(64)).is_err());
    }
}
