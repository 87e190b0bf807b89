//! Validated request values. Each type checks its own bounds when deserialized, so a bad field is
//! refused at the edge with an error that names it, and the rules only ever see sound values.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Which characters a text field accepts.
#[derive(Clone, Copy)]
enum Charset {
    /// Letters, digits, `.`, `_`, `-`: identifiers that end up in keys and URLs.
    Identifier,
    /// Printable ASCII without spaces.
    Token,
    /// Any text without control characters.
    Text,
}

impl Charset {
    fn allows(self, c: char) -> bool {
        match self {
            Charset::Identifier => c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'),
            Charset::Token => c.is_ascii_graphic(),
            Charset::Text => !c.is_control(),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Charset::Identifier => "letters, digits, '.', '_' and '-'",
            Charset::Token => "printable ASCII without spaces",
            Charset::Text => "text without control characters",
        }
    }
}

fn check_text(value: &str, min: usize, max: usize, charset: Charset) -> Result<(), String> {
    let length = value.chars().count();
    if length < min {
        return Err(if min == 1 { "must not be empty".into() } else { format!("must be at least {min} characters") });
    }
    if length > max {
        return Err(format!("must be at most {max} characters (got {length})"));
    }
    if !value.chars().all(|c| charset.allows(c)) {
        return Err(format!("may contain only {}", charset.describe()));
    }
    Ok(())
}

macro_rules! text_type {
    ($(#[$doc:meta])* $name:ident, $min:expr, $max:expr, $charset:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub const MAX_LEN: usize = $max;

            pub fn parse(value: impl Into<String>) -> Result<Self, String> {
                let value = value.into();
                check_text(&value, $min, $max, $charset)?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(value: String) -> Result<Self, String> {
                Self::parse(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

text_type!(
    /// The product a license is for, as the vendor names it (`acme-editor`).
    Product, 1, 128, Charset::Identifier
);
text_type!(
    /// The client's stable identifier of a machine.
    HardwareId, 1, 256, Charset::Token
);
text_type!(
    /// A client-chosen value echoed in the signed token so an old answer cannot be replayed.
    Nonce, 1, 256, Charset::Token
);
text_type!(DeviceName, 0, 256, Charset::Text);
text_type!(Platform, 0, 64, Charset::Text);
text_type!(OrderId, 1, 128, Charset::Token);
text_type!(CustomerName, 0, 256, Charset::Text);
text_type!(FeatureCode, 1, 64, Charset::Identifier);
text_type!(
    /// The vendor's `Idempotency-Key` header: a retried issue with the same key returns the first answer.
    IdempotencyKey, 1, 255, Charset::Token
);

/// A customer's e-mail address, kept as given but compared lower-cased.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

impl Email {
    pub fn parse(value: impl Into<String>) -> Result<Self, String> {
        let value: String = value.into();
        check_text(&value, 3, 254, Charset::Token)?;
        match value.split_once('@') {
            Some((local, domain)) if !local.is_empty() && !domain.is_empty() && !domain.contains('@') => {
                Ok(Self(value.to_lowercase()))
            }
            _ => Err("must be an e-mail address".into()),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Email {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        Self::parse(value)
    }
}

impl From<Email> for String {
    fn from(value: Email) -> String {
        value.0
    }
}

/// Crockford's base-32 alphabet: no I, L, O or U, so keys survive being read aloud or retyped.
const KEY_ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const KEY_GROUPS: usize = 5;
const KEY_GROUP_LEN: usize = 5;

/// A license key: 25 base-32 symbols (125 bits from the OS CSPRNG) in five groups of five.
/// Keys are matched case-insensitively; anything of up to 64 letters, digits and dashes parses,
/// so a mistyped key is "not found" rather than a format error.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LicenseKey(String);

// The spec's floor for key entropy, checked when compiling.
const _: () = assert!(LicenseKey::BITS >= 120);

impl LicenseKey {
    pub const BITS: usize = KEY_GROUPS * KEY_GROUP_LEN * 5;

    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut random = [0u8; KEY_GROUPS * KEY_GROUP_LEN];
        getrandom::getrandom(&mut random)?;
        let mut key = String::with_capacity(KEY_GROUPS * (KEY_GROUP_LEN + 1));
        for (i, byte) in random.iter().enumerate() {
            if i > 0 && i % KEY_GROUP_LEN == 0 {
                key.push('-');
            }
            // 256 is a multiple of 32, so taking the low five bits is unbiased.
            key.push(KEY_ALPHABET[(byte & 0x1f) as usize] as char);
        }
        Ok(Self(key))
    }

    pub fn parse(value: impl Into<String>) -> Result<Self, String> {
        let value: String = value.into();
        let trimmed = value.trim();
        if trimmed.is_empty() {
            return Err("must not be empty".into());
        }
        if trimmed.len() > 64 {
            return Err(format!("must be at most 64 characters (got {})", trimmed.chars().count()));
        }
        if !trimmed.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err("may contain only letters, digits and '-'".into());
        }
        Ok(Self(trimmed.to_ascii_uppercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for LicenseKey {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        Self::parse(value)
    }
}

impl From<LicenseKey> for String {
    fn from(value: LicenseKey) -> String {
        value.0
    }
}

impl fmt::Display for LicenseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Random identifier with a readable prefix (`lic_…`), 128 bits from the OS CSPRNG.
pub fn random_id(prefix: &str) -> Result<String, getrandom::Error> {
    let mut random = [0u8; 16];
    getrandom::getrandom(&mut random)?;
    let mut id = String::with_capacity(prefix.len() + 33);
    id.push_str(prefix);
    id.push('_');
    for byte in random {
        id.push_str(&format!("{byte:02x}"));
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn generated_keys_are_grouped_and_carry_at_least_120_bits() {
        let key = LicenseKey::generate().unwrap();
        let groups: Vec<&str> = key.as_str().split('-').collect();
        assert_eq!(groups.len(), 5);
        assert!(groups.iter().all(|g| g.len() == 5));
        assert!(key.as_str().chars().filter(|c| *c != '-').all(|c| KEY_ALPHABET.contains(&(c as u8))));
    }

    #[test]
    fn generated_keys_do_not_repeat() {
        let keys: HashSet<LicenseKey> = (0..10_000).map(|_| LicenseKey::generate().unwrap()).collect();
        assert_eq!(keys.len(), 10_000);
    }

    #[test]
    fn license_keys_match_case_insensitively_and_refuse_junk() {
        assert_eq!(LicenseKey::parse(" abcde-12345 ").unwrap().as_str(), "ABCDE-12345");
        assert!(LicenseKey::parse("").is_err());
        assert!(LicenseKey::parse("ab cd").is_err());
        assert!(LicenseKey::parse("A".repeat(65)).is_err());
    }

    #[test]
    fn text_fields_enforce_length_and_charset() {
        assert!(Product::parse("acme-editor_2.0").is_ok());
        assert!(Product::parse("").unwrap_err().contains("empty"));
        assert!(Product::parse("a b").unwrap_err().contains("may contain only"));
        assert!(Product::parse("x".repeat(129)).unwrap_err().contains("at most 128"));
        assert!(HardwareId::parse("9f:3a:00:11").is_ok());
        assert!(HardwareId::parse("tab\there").is_err());
        assert!(DeviceName::parse("Büro-PC").is_ok());
        assert!(DeviceName::parse("").is_ok());
        assert!(DeviceName::parse("line\nbreak").is_err());
    }

    #[test]
    fn emails_need_one_at_sign_and_are_lower_cased() {
        assert_eq!(Email::parse("Ann@Example.COM").unwrap().as_str(), "ann@example.com");
        assert!(Email::parse("no-at-sign").is_err());
        assert!(Email::parse("a@b@c").is_err());
        assert!(Email::parse("@example.com").is_err());
    }
}
