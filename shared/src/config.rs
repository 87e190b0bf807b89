//! Configuration, only from the environment, read once at start-up. See the README's table.

use crate::auth::AdminTokens;
use crate::cors::AllowedOrigins;
use crate::signing::{decode_seed, TokenSigner};

pub const TABLE: &str = "KEYGATE_TABLE";
pub const SIGNING_KEY: &str = "KEYGATE_SIGNING_KEY";
/// Name of an SSM Parameter Store SecureString holding the seed (used when KEYGATE_SIGNING_KEY is unset).
pub const SIGNING_KEY_PARAMETER: &str = "KEYGATE_SIGNING_KEY_PARAMETER";
pub const RETIRED_PUBLIC_KEYS: &str = "KEYGATE_RETIRED_PUBLIC_KEYS";
pub const ADMIN_TOKEN_SHA256: &str = "KEYGATE_ADMIN_TOKEN_SHA256";
pub const ISSUER: &str = "KEYGATE_ISSUER";
/// Origins allowed to call the client routes from a browser: comma-separated, or `*` (default: none).
pub const CORS_ORIGINS: &str = "KEYGATE_CORS_ORIGINS";
/// The audit log's table (default: `<KEYGATE_TABLE>-events`).
pub const EVENTS_TABLE: &str = "KEYGATE_EVENTS_TABLE";
/// Days the audit log keeps an event (default: for good).
pub const EVENT_RETENTION_DAYS: &str = "KEYGATE_EVENT_RETENTION_DAYS";
/// Days before a license's end that `license.expiring` is sent, comma-separated (e.g. `14,3`;
/// default: none).
pub const EXPIRY_REMINDER_DAYS: &str = "KEYGATE_EXPIRY_REMINDER_DAYS";
/// `1`: webhooks may go to private, loopback and link-local addresses and over plain http (a
/// local receiver, as `make local` uses). Never in a deployment.
pub const WEBHOOK_ALLOW_PRIVATE: &str = "KEYGATE_WEBHOOK_ALLOW_PRIVATE";

pub const DEFAULT_TABLE: &str = "keygate";
pub const DEFAULT_ISSUER: &str = "keygate";

#[derive(Debug)]
pub struct Config {
    pub table: String,
    pub events_table: String,
    pub event_retention_days: Option<u32>,
    /// Days before a license's end that `license.expiring` is sent.
    pub expiry_reminder_days: Vec<u32>,
    /// Where webhooks may be delivered, and how long one attempt may take.
    pub webhooks: crate::webhooks::deliver::Policy,
    pub issuer: String,
    pub admin_tokens: AdminTokens,
    /// Present when the function signs tokens (every client function; not the vendor API).
    pub signer: Option<TokenSigner>,
    pub cors: AllowedOrigins,
}

/// Why the functions cannot start: each names the variable to fix.
#[derive(thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {ADMIN_TOKEN_SHA256}: {0}")]
    AdminTokens(#[from] crate::auth::NotAHash),
    #[error("configuration: {variable}: {source}")]
    Key { variable: &'static str, source: crate::signing::KeyError },
    #[error("configuration: {CORS_ORIGINS}: {0}")]
    Cors(#[from] crate::cors::NotAnOrigin),
    #[error("configuration: {EVENT_RETENTION_DAYS}: `{0}` is not a number of days from 1 to 36500")]
    Retention(String),
    #[error("configuration: {EXPIRY_REMINDER_DAYS}: `{0}` is not a comma-separated list of days from 1 to 365")]
    Reminders(String),
    #[error("configuration: {SIGNING_KEY} is not set (make one with `keygate keys new`)")]
    NoSigningKey,
    #[error("configuration: {SIGNING_KEY_PARAMETER}: cannot read SSM parameter {name}: {cause}")]
    Parameter { name: String, cause: String },
}

/// A function's `main` returns this error, and Rust prints its `Debug`: make that the sentence.
impl std::fmt::Debug for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
    }

    /// The Lambda functions' configuration: the environment, plus the signing key from SSM
    /// Parameter Store when `KEYGATE_SIGNING_KEY_PARAMETER` names it (read once, at cold start).
    pub async fn load(sdk: &aws_config::SdkConfig) -> Result<Self, ConfigError> {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        // Only the functions that sign build an SSM client, and only when the key is not in the env.
        if env(SIGNING_KEY).is_none() && env(SIGNING_KEY_PARAMETER).is_some() {
            Self::load_with(env, &aws_sdk_ssm::Client::new(sdk)).await
        } else {
            Self::from_lookup(env)
        }
    }

    pub async fn load_with(
        lookup: impl Fn(&str) -> Option<String>,
        ssm: &aws_sdk_ssm::Client,
    ) -> Result<Self, ConfigError> {
        let from_ssm = match (lookup(SIGNING_KEY), lookup(SIGNING_KEY_PARAMETER)) {
            (None, Some(name)) => Some(read_parameter(ssm, &name).await?),
            _ => None,
        };
        Self::from_lookup(|name| match (name, &from_ssm) {
            (SIGNING_KEY, Some(seed)) => Some(seed.clone()),
            _ => lookup(name),
        })
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let admin_tokens = AdminTokens::parse(&lookup(ADMIN_TOKEN_SHA256).unwrap_or_default())?;
        let signer = match lookup(SIGNING_KEY) {
            Some(text) => {
                let seed = decode_seed(&text).map_err(|source| ConfigError::Key { variable: SIGNING_KEY, source })?;
                let retired: Vec<String> =
                    lookup(RETIRED_PUBLIC_KEYS).unwrap_or_default().split(',').map(str::to_string).collect();
                let signer = TokenSigner::new(seed, &retired);
                Some(signer.map_err(|source| ConfigError::Key { variable: RETIRED_PUBLIC_KEYS, source })?)
            }
            None => None,
        };
        let cors = AllowedOrigins::parse(&lookup(CORS_ORIGINS).unwrap_or_default())?;
        let table = lookup(TABLE).unwrap_or_else(|| DEFAULT_TABLE.into());
        let event_retention_days = match lookup(EVENT_RETENTION_DAYS) {
            None => None,
            Some(text) => Some(
                text.trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|d| (1..=36_500).contains(d))
                    .ok_or(ConfigError::Retention(text))?,
            ),
        };
        let expiry_reminder_days = match lookup(EXPIRY_REMINDER_DAYS) {
            None => Vec::new(),
            Some(text) => {
                let days: Option<Vec<u32>> =
                    text.split(',').map(|d| d.trim().parse::<u32>().ok().filter(|d| (1..=365).contains(d))).collect();
                let mut days = days.ok_or_else(|| ConfigError::Reminders(text.clone()))?;
                days.sort_unstable_by(|a, b| b.cmp(a));
                days.dedup();
                days
            }
        };
        Ok(Self {
            expiry_reminder_days,
            events_table: lookup(EVENTS_TABLE).unwrap_or_else(|| crate::store::events_table_name(&table)),
            event_retention_days,
            webhooks: crate::webhooks::deliver::Policy {
                allow_private: lookup(WEBHOOK_ALLOW_PRIVATE).is_some_and(|v| v.trim() == "1"),
                timeout: std::time::Duration::from_secs(5),
            },
            table,
            issuer: lookup(ISSUER).unwrap_or_else(|| DEFAULT_ISSUER.into()),
            admin_tokens,
            signer,
            cors,
        })
    }

    /// For the client functions, which cannot answer without signing.
    pub fn require_signer(&self) -> Result<(), ConfigError> {
        match self.signer {
            Some(_) => Ok(()),
            None => Err(ConfigError::NoSigningKey),
        }
    }
}

async fn read_parameter(ssm: &aws_sdk_ssm::Client, name: &str) -> Result<String, ConfigError> {
    let missing = |cause: String| ConfigError::Parameter { name: name.into(), cause };
    let output = ssm
        .get_parameter()
        .name(name)
        .with_decryption(true)
        .send()
        .await
        .map_err(|err| missing(aws_sdk_ssm::error::DisplayErrorContext(&err).to_string()))?;
    output.parameter.and_then(|p| p.value).ok_or_else(|| missing("it has no value".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn the_audit_log_sits_beside_the_table_and_keeps_events_unless_told() {
        let c = config(&[("KEYGATE_TABLE", "prod")]).unwrap();
        assert_eq!((c.events_table.as_str(), c.event_retention_days), ("prod-events", None));
        let c = config(&[("KEYGATE_EVENTS_TABLE", "audit"), ("KEYGATE_EVENT_RETENTION_DAYS", "90")]).unwrap();
        assert_eq!((c.events_table.as_str(), c.event_retention_days), ("audit", Some(90)));
        for bad in ["0", "ninety", "-3", "40000"] {
            let err = config(&[("KEYGATE_EVENT_RETENTION_DAYS", bad)]).unwrap_err().to_string();
            assert!(err.contains("KEYGATE_EVENT_RETENTION_DAYS") && err.contains(bad), "{err}");
        }
        assert_eq!(config(&[]).unwrap().expiry_reminder_days, Vec::<u32>::new());
        assert_eq!(config(&[("KEYGATE_EXPIRY_REMINDER_DAYS", "3, 14,3")]).unwrap().expiry_reminder_days, [14, 3]);
        for bad in ["0", "14,,3", "a", "400"] {
            let err = config(&[("KEYGATE_EXPIRY_REMINDER_DAYS", bad)]).unwrap_err().to_string();
            assert!(err.contains("KEYGATE_EXPIRY_REMINDER_DAYS"), "{err}");
        }
    }

    #[test]
    fn defaults_apply_when_unset() {
        let c = config(&[]).unwrap();
        assert_eq!(c.table, "keygate");
        assert!(c.signer.is_none() && c.admin_tokens.is_empty());
        assert!(c.require_signer().is_err());
    }

    #[test]
    fn a_bad_key_fails_at_start_up_naming_the_variable() {
        let err = config(&[(SIGNING_KEY, "too-short")]).unwrap_err();
        assert!(err.to_string().contains(SIGNING_KEY));
        let err = config(&[(ADMIN_TOKEN_SHA256, "nothex")]).unwrap_err();
        assert!(err.to_string().contains(ADMIN_TOKEN_SHA256));
    }

    #[test]
    fn a_good_key_gives_a_signer() {
        let seed = crate::signing::generate_seed().unwrap();
        let c = config(&[(SIGNING_KEY, &seed), (TABLE, "t1")]).unwrap();
        assert!(c.signer.is_some());
        assert_eq!(c.table, "t1");
    }
}
