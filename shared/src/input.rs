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

/// Why a request value is refused. Its message follows the field's name in an error
/// (`` `hardware_id` must not be empty ``).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidValue {
    #[error("must not be empty")]
    Empty,
    #[error("must be at least {0} characters")]
    TooShort(usize),
    #[error("must be at most {max} characters (got {got})")]
    TooLong { max: usize, got: usize },
    #[error("may contain only {0}")]
    Characters(&'static str),
    #[error("must be an e-mail address")]
    NotEmail,
}

fn check_text(value: &str, min: usize, max: usize, charset: Charset) -> Result<(), InvalidValue> {
    let length = value.chars().count();
    if length < min {
        return Err(if min == 1 { InvalidValue::Empty } else { InvalidValue::TooShort(min) });
    }
    if length > max {
        return Err(InvalidValue::TooLong { max, got: length });
    }
    if !value.chars().all(|c| charset.allows(c)) {
        return Err(InvalidValue::Characters(charset.describe()));
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

            pub fn parse(value: impl Into<String>) -> Result<Self, InvalidValue> {
                let value = value.into();
                check_text(&value, $min, $max, $charset)?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidValue;
            fn try_from(value: String) -> Result<Self, InvalidValue> {
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
    pub fn parse(value: impl Into<String>) -> Result<Self, InvalidValue> {
        let value: String = value.into();
        check_text(&value, 3, 254, Charset::Token)?;
        match value.split_once('@') {
            Some((local, domain)) if !local.is_empty() && !domain.is_empty() && !domain.contains('@') => {
                Ok(Self(value.to_lowercase()))
            }
            _ => Err(InvalidValue::NotEmail),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Email {
    type Error = InvalidValue;
    fn try_from(value: String) -> Result<Self, InvalidValue> {
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

    pub fn parse(value: impl Into<String>) -> Result<Self, InvalidValue> {
        let value: String = value.into();
        let trimmed = value.trim();
        if trimmed.is_empty() {
            return Err(InvalidValue::Empty);
        }
        if trimmed.len() > 64 {
            return Err(InvalidValue::TooLong { max: 64, got: trimmed.chars().count() });
        }
        if !trimmed.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(InvalidValue::Characters("letters, digits and '-'"));
        }
        Ok(Self(trimmed.to_ascii_uppercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for LicenseKey {
    type Error = InvalidValue;
    fn try_from(value: String) -> Result<Self, InvalidValue> {
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

/// How deep vendor metadata may nest (DynamoDB allows 32 levels in an item; the license item
/// holds the metadata one level down).
pub const MAX_METADATA_DEPTH: usize = 16;

/// Vendor metadata as sent: kept as its JSON text until checked, because parsing it straight into
/// numbers would round some silently (JSON numbers become 64-bit floats), and DynamoDB refuses
/// others (outside 1e-130..1e126, empty map keys, deeper nesting than it allows).
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub struct MetadataInput(Box<serde_json::value::RawValue>);

impl MetadataInput {
    /// The metadata object, if DynamoDB stores every value in it exactly; otherwise where inside
    /// it (`.key`, `[index]`, empty for the object itself) and why not.
    pub fn parse(&self) -> Result<serde_json::Map<String, serde_json::Value>, (String, String)> {
        let raw = self.0.get();
        if !raw.trim_start().starts_with('{') {
            return Err((String::new(), "must be a JSON object".into()));
        }
        let mut walker = StorableJson { text: raw.as_bytes(), at: 0 };
        walker.value(&mut String::new(), 1)?;
        serde_json::from_str(raw).map_err(|e| (String::new(), e.to_string()))
    }
}

/// A walk over JSON text (already known to be valid) that checks what DynamoDB stores exactly.
struct StorableJson<'a> {
    text: &'a [u8],
    at: usize,
}

type Refusal = (String, String);

impl StorableJson<'_> {
    fn skip_space(&mut self) {
        while self.text.get(self.at).is_some_and(|b| b.is_ascii_whitespace()) {
            self.at += 1;
        }
    }

    fn value(&mut self, path: &mut String, depth: usize) -> Result<(), Refusal> {
        self.skip_space();
        match self.text.get(self.at) {
            Some(b'{') | Some(b'[') if depth > MAX_METADATA_DEPTH => {
                // Named by the member of the metadata that holds it, not the whole way down.
                let outer =
                    path.find(['.', '[']).and_then(|first| path[first + 1..].find(['.', '[']).map(|n| first + 1 + n));
                let at = outer.map_or(path.as_str(), |end| &path[..end]).to_string();
                Err((at, format!("nests deeper than {MAX_METADATA_DEPTH} levels")))
            }
            Some(b'{') => self.object(path, depth),
            Some(b'[') => self.array(path, depth),
            Some(b'"') => self.string().map(|_| ()),
            Some(b'-' | b'0'..=b'9') => {
                let start = self.at;
                while self
                    .text
                    .get(self.at)
                    .is_some_and(|b| matches!(b, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'))
                {
                    self.at += 1;
                }
                let literal = std::str::from_utf8(&self.text[start..self.at]).unwrap_or_default();
                exact_number(literal).map_err(|reason| (path.clone(), reason.to_string()))
            }
            _ => {
                while self.text.get(self.at).is_some_and(|b| b.is_ascii_alphabetic()) {
                    self.at += 1;
                }
                Ok(())
            }
        }
    }

    fn object(&mut self, path: &mut String, depth: usize) -> Result<(), Refusal> {
        self.at += 1;
        loop {
            self.skip_space();
            match self.text.get(self.at) {
                Some(b'}') | None => {
                    self.at += 1;
                    return Ok(());
                }
                Some(b',') => self.at += 1,
                _ => {
                    let key = self.string()?;
                    if key.is_empty() {
                        return Err((path.clone(), "has an empty key, which cannot be stored".into()));
                    }
                    self.skip_space();
                    self.at += 1; // the colon
                    let length = path.len();
                    path.push('.');
                    path.push_str(&key);
                    self.value(path, depth + 1)?;
                    path.truncate(length);
                }
            }
        }
    }

    fn array(&mut self, path: &mut String, depth: usize) -> Result<(), Refusal> {
        self.at += 1;
        let mut index = 0;
        loop {
            self.skip_space();
            match self.text.get(self.at) {
                Some(b']') | None => {
                    self.at += 1;
                    return Ok(());
                }
                Some(b',') => {
                    self.at += 1;
                    index += 1;
                }
                _ => {
                    let length = path.len();
                    path.push_str(&format!("[{index}]"));
                    self.value(path, depth + 1)?;
                    path.truncate(length);
                }
            }
        }
    }

    /// A string literal, unescaped.
    fn string(&mut self) -> Result<String, Refusal> {
        let start = self.at;
        self.at += 1;
        while let Some(byte) = self.text.get(self.at) {
            self.at += 1;
            match byte {
                b'\\' => self.at += 1,
                b'"' => break,
                _ => {}
            }
        }
        let literal = std::str::from_utf8(&self.text[start..self.at]).unwrap_or_default();
        serde_json::from_str(literal).map_err(|e| (String::new(), e.to_string()))
    }
}

/// Whether a JSON number literal is stored exactly: a 64-bit integer, or a float whose value is the
/// literal's (no digit lost) within DynamoDB's range.
fn exact_number(literal: &str) -> Result<(), Inexact> {
    let integral = !literal.contains(['.', 'e', 'E']);
    if integral && (literal.parse::<i64>().is_ok() || literal.parse::<u64>().is_ok()) {
        return Ok(());
    }
    let value: f64 = literal.parse().map_err(|_| Inexact::NotANumber(literal.into()))?;
    if !value.is_finite() || (value != 0.0 && !(1e-130..1e126).contains(&value.abs())) {
        return Err(Inexact::OutOfRange(literal.into()));
    }
    if decimal(literal) != decimal(&format!("{value:e}")) {
        return Err(Inexact::Rounded(literal.into()));
    }
    Ok(())
}

/// A metadata number that would not be stored as it was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum Inexact {
    #[error("`{0}` is not a number")]
    NotANumber(String),
    #[error("is {0}, outside what can be stored (magnitudes from 1e-130 to below 1e126)")]
    OutOfRange(String),
    #[error(
        "is {0}, which would be rounded: numbers are stored exactly as 64-bit integers or with up to 15 \
         significant digits"
    )]
    Rounded(String),
}

/// A decimal literal as (negative, significant digits, power of ten), so equal values compare equal.
fn decimal(literal: &str) -> (bool, String, i64) {
    let (negative, rest) = match literal.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, literal),
    };
    let (mantissa, exponent) = match rest.find(['e', 'E']) {
        Some(at) => (&rest[..at], rest[at + 1..].parse::<i64>().unwrap_or(0)),
        None => (rest, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{whole}{fraction}");
    let digits = digits.trim_start_matches('0');
    let trimmed = digits.trim_end_matches('0');
    if trimmed.is_empty() {
        return (false, String::new(), 0);
    }
    let power = exponent - fraction.len() as i64 + (digits.len() - trimmed.len()) as i64;
    (negative, trimmed.to_string(), power)
}

/// Random identifier with a readable prefix (`lic_…`), 128 bits from the OS CSPRNG.
impl Nonce {
    /// A fresh nonce from the OS CSPRNG (always within the type's bounds: prefix, `_`, 32 hex digits).
    pub fn generate(prefix: &str) -> Result<Self, getrandom::Error> {
        random_id(prefix).map(Self)
    }
}

pub fn random_id(prefix: &str) -> Result<String, getrandom::Error> {
    let mut random = [0u8; 16];
    getrandom::getrandom(&mut random)?;
    Ok(format!("{prefix}_{}", hex::encode(random)))
}

/// Nested objects of a request taken only from JSON objects: serde's derived structs would also
/// take an array of their fields' values (`"customer": [null, null]`), which no client means.
/// For `#[serde(deserialize_with = ...)]` on the fields that hold one.
pub mod object {
    use serde::de::value::MapAccessDeserializer;
    use serde::de::{Deserializer, MapAccess, Visitor};
    use serde::Deserialize;
    use std::marker::PhantomData;

    /// A `T` read from a JSON object, and from nothing else.
    pub struct Object<T>(pub T);

    impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct Fields<T>(PhantomData<T>);
            impl<'de, T: Deserialize<'de>> Visitor<'de> for Fields<T> {
                type Value = Object<T>;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Object<T>, A::Error> {
                    T::deserialize(MapAccessDeserializer::new(map)).map(Object)
                }
            }
            deserializer.deserialize_map(Fields(PhantomData))
        }
    }

    /// An optional object (`null` or left out: none).
    pub fn optional<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
        Ok(Option::<Object<T>>::deserialize(d)?.map(|o| o.0))
    }

    /// An object a patch may clear with `null` (`Some(None)`), distinct from leaving it out (`None`).
    pub fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
        optional(d).map(Some)
    }

    /// A list of objects.
    pub fn list<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
        Ok(Vec::<Object<T>>::deserialize(d)?.into_iter().map(|o| o.0).collect())
    }

    /// A list of objects, `Some` when given (`null` is refused: it is no list).
    pub fn present_list<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Vec<T>>, D::Error> {
        list(d).map(Some)
    }

    /// An optional list of objects.
    pub fn optional_list<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Vec<T>>, D::Error> {
        Ok(Option::<Vec<Object<T>>>::deserialize(d)?.map(|list| list.into_iter().map(|o| o.0).collect()))
    }
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
        assert!(Product::parse("").unwrap_err() == InvalidValue::Empty);
        assert!(Product::parse("a b").unwrap_err().to_string().contains("may contain only"));
        assert!(Product::parse("x".repeat(129)).unwrap_err() == InvalidValue::TooLong { max: 128, got: 129 });
        assert!(HardwareId::parse("9f:3a:00:11").is_ok());
        assert!(HardwareId::parse("tab\there").is_err());
        assert!(DeviceName::parse("Büro-PC").is_ok());
        assert!(DeviceName::parse("").is_ok());
        assert!(DeviceName::parse("line\nbreak").is_err());
    }

    #[test]
    fn metadata_numbers_pass_only_when_stored_exactly() {
        for exact in ["0", "-0.0", "0.1", "1e40", "-9223372036854775808", "18446744073709551615", "1.5e-7", "123.450"] {
            assert_eq!(exact_number(exact), Ok(()), "{exact}");
        }
        for rounded in [
            "1e126",
            "-3e-300",
            "100000000000000000001",
            "12345678901234567890123456789012345678901",
            "0.12345678901234567890",
        ] {
            assert!(exact_number(rounded).is_err(), "{rounded}");
        }
        assert_eq!(decimal("1200"), decimal("1.2e3"));
        assert_eq!(decimal("-0.00120"), (true, "12".into(), -4));
    }

    #[test]
    fn metadata_refusals_name_where_inside_it() {
        let parse =
            |text: &str| serde_json::from_str::<MetadataInput>(text).unwrap().parse().map(|_| ()).map_err(|e| e.0);
        assert_eq!(parse(r#"{"a": [1, {"b": 1e200}]}"#), Err(".a[1].b".into()));
        assert_eq!(parse(r#"{"a": {"": 1}}"#), Err(".a".into()));
        assert_eq!(parse(r#"{"k\"ey": "v", "s": ""}"#), Ok(()));
        assert_eq!(parse("[1]"), Err(String::new()));
        let deep = format!("{}1{}", r#"{"x":"#.repeat(20), "}".repeat(20));
        assert_eq!(parse(&format!(r#"{{"d": {deep}}}"#)), Err(".d".into()));
    }

    #[test]
    fn emails_need_one_at_sign_and_are_lower_cased() {
        assert_eq!(Email::parse("Ann@Example.COM").unwrap().as_str(), "ann@example.com");
        assert!(Email::parse("no-at-sign").is_err());
        assert!(Email::parse("a@b@c").is_err());
        assert!(Email::parse("@example.com").is_err());
    }
}
