//! Timestamps as whole UTC seconds. Stored and sent as `YYYY-MM-DDTHH:MM:SSZ`, a fixed-width form
//! whose string order is time order, so DynamoDB condition expressions can compare them directly.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::OffsetDateTime;

pub const SECONDS_PER_DAY: i64 = 86_400;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const fn from_unix(seconds: i64) -> Self {
        Self(seconds)
    }

    pub fn now() -> Self {
        Self(OffsetDateTime::now_utc().unix_timestamp())
    }

    pub const fn unix(self) -> i64 {
        self.0
    }

    pub const fn plus_days(self, days: u32) -> Self {
        Self(self.0 + days as i64 * SECONDS_PER_DAY)
    }

    pub const fn plus_seconds(self, seconds: i64) -> Self {
        Self(self.0 + seconds)
    }

    /// The UTC calendar date of this moment.
    pub fn date(self) -> Option<time::Date> {
        OffsetDateTime::from_unix_timestamp(self.0).ok().map(|at| at.date())
    }

    /// Midnight UTC at the start of `date`.
    pub fn midnight(date: time::Date) -> Self {
        Self(date.midnight().assume_utc().unix_timestamp())
    }

    /// Accepts RFC 3339 (`2027-01-31T00:00:00Z`, any offset) or a bare date (`2027-01-31`, midnight UTC).
    pub fn parse(text: &str) -> Result<Self, NotATimestamp> {
        if let Ok(at) = OffsetDateTime::parse(text, &Rfc3339) {
            return Ok(Self(at.unix_timestamp()));
        }
        let date_only = format_description!("[year]-[month]-[day]");
        time::Date::parse(text, &date_only)
            .map(|date| Self(date.midnight().assume_utc().unix_timestamp()))
            .map_err(|_| NotATimestamp(text.to_string()))
    }
}

/// Text that is neither an RFC 3339 timestamp nor a date.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an RFC 3339 timestamp or a YYYY-MM-DD date")]
pub struct NotATimestamp(pub String);

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let format = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
        match OffsetDateTime::from_unix_timestamp(self.0) {
            Ok(at) => f.write_str(&at.format(&format).map_err(|_| fmt::Error)?),
            Err(_) => write!(f, "@{}", self.0),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.len() > 64 {
            return Err(serde::de::Error::custom("timestamp is too long"));
        }
        let parsed = Self::parse(&text).map_err(serde::de::Error::custom)?;
        // Years past 9999 would break the fixed-width ordering the store relies on.
        if !(0..=253_402_300_799).contains(&parsed.0) {
            return Err(serde::de::Error::custom("timestamp must be between year 1970 and 9999"));
        }
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_fixed_width_utc() {
        assert_eq!(Timestamp::from_unix(0).to_string(), "1970-01-01T00:00:00Z");
        assert_eq!(Timestamp::from_unix(1_800_000_000).to_string(), "2027-01-15T08:00:00Z");
    }

    #[test]
    fn parses_rfc3339_with_offset_and_bare_dates() {
        assert_eq!(Timestamp::parse("2027-01-15T09:00:00+01:00").unwrap(), Timestamp::from_unix(1_800_000_000));
        assert_eq!(Timestamp::parse("1970-01-02").unwrap(), Timestamp::from_unix(SECONDS_PER_DAY));
        assert!(Timestamp::parse("next tuesday").is_err());
    }

    #[test]
    fn string_order_is_time_order() {
        let a = Timestamp::from_unix(999_999_999);
        let b = Timestamp::from_unix(1_000_000_000);
        assert!(a < b && a.to_string() < b.to_string());
    }
}
