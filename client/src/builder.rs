//! One builder for both flavours: the settings a vendor embeds in their app.

use crate::core::{Clock, Settings};
use crate::error::{Error, Result};
use crate::keys::{KeySet, PublicKey};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Builds a [`crate::Client`] (blocking) or [`crate::AsyncClient`] (async).
pub struct ClientBuilder {
    pub(crate) settings: Settings,
    error: Option<Error>,
}

impl ClientBuilder {
    /// `base_url`: the API (`https://...execute-api...amazonaws.com` or a custom domain);
    /// `product`: the product the licenses are for (the tokens' audience).
    pub fn new(base_url: &str, product: &str) -> Self {
        Self { settings: Settings::new(base_url, product), error: None }
    }

    fn keep(mut self, result: Result<KeySet>) -> Self {
        match result {
            Ok(keys) => self.settings.keys.extend(&keys),
            Err(err) => self.error = self.error.or(Some(err)),
        }
        self
    }

    /// Trusts a vendor public key (base64url, as `keygate keys public` prints it). Embed the
    /// current key and the next one, so a rotation on the server never locks installed copies out.
    pub fn public_key(self, base64url: &str) -> Self {
        let key = PublicKey::from_base64url(base64url).map(|k| KeySet::new(vec![k]));
        self.keep(key)
    }

    /// Trusts every Ed25519 key of a JWKS document embedded at build time.
    pub fn jwks(self, jwks: &str) -> Self {
        let keys = KeySet::from_jwks(jwks);
        self.keep(keys)
    }

    /// The issuer the server signs as (its `KEYGATE_ISSUER`; unique per deployment).
    pub fn issuer(mut self, issuer: &str) -> Self {
        self.settings.issuer = issuer.to_string();
        self
    }

    /// Also trust keys fetched from the server's JWKS when a verdict names an unknown key. This
    /// follows a rotation the app was not built with, but makes TLS the root of trust: whoever
    /// can answer for the API's host name can then mint verdicts. Off by default.
    pub fn fetch_keys_from_server(mut self, fetch: bool) -> Self {
        self.settings.fetch_keys = fetch;
        self
    }

    /// Where the license is saved (default: the OS's application data directory).
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.settings.cache_dir = Some(dir.into());
        self
    }

    /// The vendor's own hardware id (default: [`crate::hardware::derive`]).
    pub fn hardware_id(mut self, id: &str) -> Self {
        self.settings.hardware_id = Some(id.to_string());
        self
    }

    /// Whether this machine is virtual (default: as [`crate::hardware::derive`] found it).
    pub fn is_vm(mut self, is_vm: bool) -> Self {
        self.settings.is_vm = Some(is_vm);
        self
    }

    pub fn device_name(mut self, name: &str) -> Self {
        self.settings.device_name = Some(name.to_string());
        self
    }

    pub fn platform(mut self, platform: &str) -> Self {
        self.settings.platform = Some(platform.to_string());
        self
    }

    /// How long one request may take (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.settings.timeout = timeout;
        self
    }

    /// How many times a call is sent again after no answer, a 5xx or a 429 (default 2), pausing
    /// as the server's `Retry-After` says (up to 2 s; a longer wait is left to the caller). Writes
    /// carry one `Idempotency-Key` across their retries, so none acts twice.
    pub fn retries(mut self, retries: u32) -> Self {
        self.settings.retries = retries;
        self
    }

    /// The clock the client decides with (default: the system's).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.settings.clock = clock;
        self
    }

    /// How far the clock may be behind the latest moment seen (default 10 minutes).
    pub fn clock_tolerance(mut self, seconds: i64) -> Self {
        self.settings.clock_tolerance = seconds;
        self
    }

    /// Also trusts this CA (PEM) for HTTPS, e.g. a corporate TLS proxy's. The usual proxy
    /// variables (`HTTPS_PROXY`, `NO_PROXY`) are honoured without any setting.
    pub fn add_root_certificate_pem(mut self, pem: &[u8]) -> Self {
        self.settings.extra_root_certificates.push(pem.to_vec());
        self
    }

    pub(crate) fn into_settings(self) -> Result<Settings> {
        match self.error {
            Some(err) => Err(err),
            None => Ok(self.settings),
        }
    }
}

/// The HTTP client settings both flavours share, applied to a reqwest builder.
macro_rules! http_client {
    ($builder:expr, $settings:expr) => {{
        let mut builder = $builder.use_rustls_tls().timeout($settings.timeout);
        for pem in &$settings.extra_root_certificates {
            let certificate = reqwest::Certificate::from_pem(pem)
                .map_err(|e| crate::Error::Config(format!("not a PEM certificate: {e}")))?;
            builder = builder.add_root_certificate(certificate);
        }
        builder.build().map_err(|e| crate::Error::Config(e.to_string()))?
    }};
}
pub(crate) use http_client;

/// An answer's parts, from either flavour's response.
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<u64> {
    headers.get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok())
}

pub(crate) fn network_error(err: reqwest::Error) -> Error {
    Error::Network(err.to_string())
}
