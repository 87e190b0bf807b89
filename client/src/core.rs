//! The I/O-free core both flavours share: what each operation sends, what an answer means, the
//! cache and the clock. The blocking and async clients only move bytes over HTTP.

use crate::cache::{CacheFile, CacheStore, CACHE_FORMAT};
use crate::decide::{decide, Status, DEFAULT_CLOCK_TOLERANCE_SECONDS};
use crate::error::{Error, Result, TokenError};
use crate::keys::KeySet;
use crate::verdict::{verify, Claims, Expected};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The time, as the client sees it: injectable, so tests (and apps) can control it.
pub trait Clock: Send + Sync {
    /// Unix seconds.
    fn now(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
    }
}

/// How often the latest moment seen is written back to the cache as it moves on.
const HIGH_WATER_WRITE_SECONDS: i64 = 600;

/// Settings common to both flavours, from [`crate::ClientBuilder`].
pub(crate) struct Settings {
    pub base_url: String,
    pub product: String,
    pub issuer: String,
    pub keys: KeySet,
    pub fetch_keys: bool,
    pub cache_dir: Option<PathBuf>,
    pub hardware_id: Option<String>,
    pub is_vm: Option<bool>,
    pub device_name: Option<String>,
    pub platform: Option<String>,
    pub timeout: Duration,
    pub retries: u32,
    pub clock: Arc<dyn Clock>,
    pub clock_tolerance: i64,
    pub extra_root_certificates: Vec<Vec<u8>>,
}

impl Settings {
    pub fn new(base_url: &str, product: &str) -> Self {
        Settings {
            base_url: base_url.trim_end_matches('/').to_string(),
            product: product.to_string(),
            issuer: String::new(),
            keys: KeySet::default(),
            fetch_keys: false,
            cache_dir: None,
            hardware_id: None,
            is_vm: None,
            device_name: None,
            platform: None,
            timeout: Duration::from_secs(10),
            retries: DEFAULT_RETRIES,
            clock: Arc::new(SystemClock),
            clock_tolerance: DEFAULT_CLOCK_TOLERANCE_SECONDS,
            extra_root_certificates: Vec::new(),
        }
    }
}

/// A verified verdict held in memory, with the file it came from.
struct Held {
    file: CacheFile,
    claims: Claims,
    /// The verdict in the file on disk as this process last wrote or read it, and its `iat`.
    on_disk: (String, i64),
    written_high_water: i64,
    /// The high-water mark when it was last moved, and when (monotonic): within one process the
    /// mark moves on with the monotonic clock too, so a wall clock set back a little at a time
    /// does not stop time.
    anchor: (i64, std::time::Instant),
}

impl Held {
    fn new(file: CacheFile, claims: Claims) -> Self {
        let mark = file.high_water.max(claims.iat);
        let on_disk = (file.token.clone(), claims.iat);
        Held { written_high_water: file.high_water, on_disk, file, claims, anchor: (mark, std::time::Instant::now()) }
    }

    /// Whether `claims` says what the held verdict says (only its times differ).
    fn same_meaning(&self, claims: &Claims, license_key: &Option<String>) -> bool {
        let meaning = |c: &Claims| {
            (c.valid, c.code.clone(), c.features.clone(), c.feature.clone(), c.status.clone(), c.license_expires_at)
        };
        let more = |c: &Claims| (c.grace_ends_at, c.borrowed_until, c.offline, c.work_if_validation_blocked);
        meaning(&self.claims) == meaning(claims)
            && more(&self.claims) == more(claims)
            && &self.file.license_key == license_key
    }

    /// The latest moment known to have passed.
    fn high_water(&self) -> i64 {
        let (mark, at) = self.anchor;
        let elapsed = i64::try_from(at.elapsed().as_secs()).unwrap_or(i64::MAX);
        mark.saturating_add(elapsed).max(self.file.high_water).max(self.claims.iat)
    }
}

pub(crate) struct Core {
    pub base_url: String,
    pub product: String,
    issuer: String,
    keys: Mutex<KeySet>,
    pub fetch_keys: bool,
    retries: u32,
    store: CacheStore,
    hardware_id: String,
    is_vm: bool,
    device_name: Option<String>,
    platform: Option<String>,
    clock: Arc<dyn Clock>,
    tolerance: i64,
    held: Mutex<Option<Held>>,
    loaded: Mutex<bool>,
    /// The license key of a saved verdict signed by a key not trusted at start (one learned from
    /// the server's JWKS in an earlier run): kept so a check can verify anew, never trusted.
    unverified_key: Mutex<Option<String>>,
}

/// A request about to be sent: where, what, the nonce its verdict must echo, and (for a write) the
/// `Idempotency-Key` every retry of it carries, so the server acts on it at most once.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    pub path: &'static str,
    pub body: Value,
    pub nonce: Option<String>,
    pub license_key: Option<String>,
    pub idempotency_key: Option<String>,
}

/// How many times a request is sent again after no answer or a "retry later" (default).
pub const DEFAULT_RETRIES: u32 = 2;
/// The longest pause before a retry within one call; a server asking for more is not waited for.
pub const MAX_RETRY_WAIT: Duration = Duration::from_secs(2);

/// An answer as received.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub status: u16,
    pub body: Option<Value>,
    pub retry_after: Option<u64>,
}

/// A client-side record of a device released (`deactivate`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Deactivated {
    /// Until when this machine's last credential may still be valid (the server's word).
    pub credential_valid_until: Option<String>,
}

/// The counter after a consumption.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Consumption {
    pub consumed: u64,
    pub total_consumptions: u64,
    pub limit: Option<u64>,
    pub remaining: Option<u64>,
    pub resets_at: Option<String>,
}

/// An offline request file (docs/offline.md), to carry to a connected machine.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct OfflineRequest {
    pub format: String,
    pub kind: String,
    pub license_key: String,
    pub product: String,
    pub hardware_id: String,
    pub nonce: String,
    pub created_at: String,
}

#[derive(Deserialize)]
struct LicenseFile {
    format: String,
    license_key: String,
    token: String,
}

/// A fresh random nonce: 128 bits from the OS.
pub(crate) fn nonce() -> Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes).map_err(|e| Error::Config(format!("no randomness: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn rfc3339(unix: i64) -> String {
    // Days since 1970 to a civil date (Howard Hinnant's algorithm), for the request file's `created_at`.
    let (days, seconds) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", seconds / 3_600, seconds % 3_600 / 60, seconds % 60)
}

impl Core {
    pub fn new(settings: Settings) -> Result<Self> {
        if settings.keys.is_empty() {
            return Err(Error::Config("no public key: embed the vendor's keys with public_key or jwks".into()));
        }
        if settings.issuer.is_empty() {
            return Err(Error::Config("no issuer: set the issuer the server signs as (its KEYGATE_ISSUER)".into()));
        }
        let dir = match settings.cache_dir {
            Some(dir) => dir,
            None => CacheStore::default_dir()?,
        };
        let derived = crate::hardware::derive(&settings.product);
        let hardware_id = match (settings.hardware_id, &derived) {
            (Some(id), _) => id,
            (None, Some(derived)) => derived.id.clone(),
            (None, None) => {
                return Err(Error::Config("this OS gives no hardware component; set a hardware id".into()));
            }
        };
        let is_vm = settings.is_vm.unwrap_or_else(|| derived.as_ref().is_some_and(|d| d.is_vm()));
        Ok(Core {
            store: CacheStore::new(&dir, &settings.product),
            base_url: settings.base_url,
            product: settings.product,
            issuer: settings.issuer,
            keys: Mutex::new(settings.keys),
            fetch_keys: settings.fetch_keys,
            retries: settings.retries,
            hardware_id,
            is_vm,
            device_name: settings.device_name,
            platform: settings.platform,
            clock: settings.clock,
            tolerance: settings.clock_tolerance,
            held: Mutex::new(None),
            loaded: Mutex::new(false),
            unverified_key: Mutex::new(None),
        })
    }

    pub fn hardware_id(&self) -> &str {
        &self.hardware_id
    }

    pub fn cache_path(&self) -> PathBuf {
        self.store.path().to_path_buf()
    }

    fn now(&self) -> i64 {
        self.clock.now()
    }

    pub fn now_for_heartbeat(&self) -> i64 {
        self.now()
    }

    fn expected<'a>(&'a self, nonce: Option<&'a str>) -> Expected<'a> {
        Expected { product: &self.product, issuer: &self.issuer, hardware_id: &self.hardware_id, nonce }
    }

    fn verify(&self, token: &str, nonce: Option<&str>) -> std::result::Result<Claims, TokenError> {
        let keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        verify(token, &keys, &self.expected(nonce))
    }

    /// Reads the cache once per process; a file whose verdict does not verify is discarded (one
    /// signed by a key learned from the server, when the app opted in, is kept for a new check).
    fn ensure_loaded(&self) -> Result<()> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if *loaded {
            return Ok(());
        }
        let file = self.store.load();
        // Not loaded until the read gave an answer: a transient error is tried again next time.
        *loaded = !matches!(file, Err(Error::Storage { .. }));
        let Some(file) = file? else { return Ok(()) };
        let claims = match self.verify(&file.token, None) {
            Ok(claims) if file.product == self.product && file.hardware_id == self.hardware_id => claims,
            Ok(_) => return self.store.discard("the saved license is for another product or machine".into()),
            Err(TokenError::UnknownKey(_)) if self.fetch_keys && file.hardware_id == self.hardware_id => {
                *self.unverified_key.lock().unwrap_or_else(|p| p.into_inner()) = file.license_key;
                return Ok(());
            }
            Err(err) => return self.store.discard(format!("the saved verdict {err}")),
        };
        *self.held.lock().unwrap_or_else(|p| p.into_inner()) = Some(Held::new(file, claims));
        Ok(())
    }

    /// The license from the cache, without the network.
    pub fn status(&self) -> Result<Status> {
        self.ensure_loaded()?;
        let now = self.now();
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let Some(current) = held.as_mut() else {
            let unverified = self.unverified_key.lock().unwrap_or_else(|p| p.into_inner()).is_some();
            return Ok(if unverified { Status::unverified() } else { Status::not_activated() });
        };
        let high_water = current.high_water();
        let status = decide(&current.claims, high_water, now, self.tolerance);
        let seen = now.max(high_water);
        if seen > current.file.high_water {
            current.file.high_water = seen;
            current.anchor = (seen, std::time::Instant::now());
            if seen.saturating_sub(current.written_high_water) >= HIGH_WATER_WRITE_SECONDS {
                // Only the mark is written back, and only over the verdict this process holds: another
                // process may have saved a newer one (a refusal), which is then read instead.
                match self.store.load() {
                    Ok(Some(on_disk)) if on_disk.token == current.on_disk.0 => {
                        let file = CacheFile { high_water: on_disk.high_water.max(seen), ..current.file.clone() };
                        self.store.save(&file)?;
                        current.on_disk = (file.token.clone(), current.claims.iat);
                        current.written_high_water = seen;
                    }
                    _ => {
                        *held = None;
                        *self.loaded.lock().unwrap_or_else(|p| p.into_inner()) = false;
                    }
                }
            }
        }
        Ok(status)
    }

    fn license_key(&self) -> Result<String> {
        self.ensure_loaded()?;
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let key = held.as_ref().and_then(|h| h.file.license_key.clone());
        key.or_else(|| self.unverified_key.lock().unwrap_or_else(|p| p.into_inner()).clone()).ok_or(Error::NotActivated)
    }

    fn device_body(&self, license_key: &str) -> Value {
        json!({"license_key": license_key, "product": self.product, "hardware_id": self.hardware_id})
    }

    fn with_nonce(&self, path: &'static str, mut body: Value, license_key: Option<String>) -> Result<Prepared> {
        let nonce = nonce()?;
        body["nonce"] = json!(nonce);
        Ok(Prepared { path, body, nonce: Some(nonce), license_key, idempotency_key: None })
    }

    /// A write: its retries carry one fresh `Idempotency-Key`.
    fn write(prepared: Result<Prepared>) -> Result<Prepared> {
        Ok(Prepared { idempotency_key: Some(nonce()?), ..prepared? })
    }

    /// The pause before sending a request again after `attempt` tries (0 = the first) ended in
    /// `result`, or `None` when the result stands: an answer, a refusal, the retries used up, or a
    /// server asking to wait longer than [`MAX_RETRY_WAIT`].
    pub fn retry_delay(&self, attempt: u32, result: &Result<Value>) -> Option<Duration> {
        if attempt >= self.retries {
            return None;
        }
        let backoff = Duration::from_millis(250 << attempt.min(3));
        let wait = match result {
            Err(Error::Network(_)) => backoff,
            Err(Error::Unavailable { retry_after, .. }) => retry_after.map_or(backoff, Duration::from_secs),
            _ => return None,
        };
        (wait <= MAX_RETRY_WAIT).then_some(wait)
    }

    pub fn activate_request(&self, license_key: &str) -> Result<Prepared> {
        let mut body = self.device_body(license_key);
        body["is_vm"] = json!(self.is_vm);
        if let Some(name) = &self.device_name {
            body["device_name"] = json!(name);
        }
        if let Some(platform) = &self.platform {
            body["platform"] = json!(platform);
        }
        Self::write(self.with_nonce("/v1/activate", body, Some(license_key.to_string())))
    }

    pub fn check_request(&self, feature: Option<&str>) -> Result<Prepared> {
        let key = self.license_key()?;
        let mut body = self.device_body(&key);
        if let Some(feature) = feature {
            body["feature"] = json!(feature);
        }
        self.with_nonce("/v1/check", body, Some(key))
    }

    pub fn borrow_request(&self, hours: u32) -> Result<Prepared> {
        let key = self.license_key()?;
        let mut body = self.device_body(&key);
        body["hours"] = json!(hours);
        Self::write(self.with_nonce("/v1/borrow", body, Some(key)))
    }

    pub fn trial_request(&self, email: Option<&str>) -> Result<Prepared> {
        let mut body = json!({"product": self.product, "hardware_id": self.hardware_id, "is_vm": self.is_vm});
        if let Some(email) = email {
            body["email"] = json!(email);
        }
        Self::write(self.with_nonce("/v1/trial", body, None))
    }

    pub fn deactivate_request(&self) -> Result<Prepared> {
        let key = self.license_key()?;
        let prepared = Prepared {
            path: "/v1/deactivate",
            body: self.device_body(&key),
            nonce: None,
            license_key: Some(key),
            idempotency_key: None,
        };
        Self::write(Ok(prepared))
    }

    pub fn consume_request(&self, amount: u64, feature: Option<&str>) -> Result<Prepared> {
        let key = self.license_key()?;
        let mut body = self.device_body(&key);
        body["amount"] = json!(amount);
        if let Some(feature) = feature {
            body["feature"] = json!(feature);
        }
        Self::write(Ok(Prepared {
            path: "/v1/consume",
            body,
            nonce: None,
            license_key: Some(key),
            idempotency_key: None,
        }))
    }

    /// What an answer says, or why it is an error: a Keygate refusal, or no usable answer at all.
    pub fn body(&self, answer: Answer) -> Result<Value> {
        let code = answer.body.as_ref().and_then(|b| b["error"]["code"].as_str()).map(str::to_string);
        // A write that kept losing races: nothing was refused, the same request may succeed.
        let transient = code.as_deref() == Some("CONCURRENT_UPDATE");
        match (answer.status, answer.body) {
            (200..=299, Some(body)) => Ok(body),
            (status, Some(body)) if code.is_some() && !transient && status < 500 && status != 429 => {
                Err(Error::Refused {
                    status,
                    code: body["error"]["code"].as_str().unwrap_or_default().to_string(),
                    message: body["error"]["message"].as_str().unwrap_or_default().to_string(),
                })
            }
            // A 5xx, throttling (Keygate's or API Gateway's `{"message": ...}`), or anything that is
            // not Keygate's JSON (a proxy's page): the server is not usable right now.
            (status, _) => Err(Error::Unavailable { status, retry_after: answer.retry_after }),
        }
    }

    /// Verifies the verdict of an answer to `prepared` and makes it the license of this machine.
    pub fn accept_verdict(&self, prepared: &Prepared, body: &Value) -> Result<Status> {
        let token = body["token"].as_str().ok_or(Error::InvalidToken(TokenError::Malformed))?;
        let claims = self.verify(token, prepared.nonce.as_deref())?;
        let license_key =
            prepared.license_key.clone().or_else(|| body["license"]["license_key"].as_str().map(str::to_string));
        self.keep(token, claims, license_key, true)
    }

    /// Keeps a verified verdict. A fresh answer (`online`: it echoed this request's nonce) also
    /// resets the high-water mark to its own time, so a clock once wrongly ahead recovers.
    fn keep(&self, token: &str, claims: Claims, license_key: Option<String>, online: bool) -> Result<Status> {
        let now = self.now();
        let key_ids =
            self.keys.lock().unwrap_or_else(|p| p.into_inner()).keys().iter().map(|k| k.kid.clone()).collect();
        let previous = match online {
            true => 0,
            false => self.held.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map_or(0, |h| h.high_water()),
        };
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        // A fresh verdict that says what the saved one says, saved recently, is kept in memory
        // only: a check is then a round trip and a verification, no file write. Any change of
        // meaning (a refusal above all) is written at once.
        let on_disk = held
            .as_ref()
            .filter(|h| online && h.same_meaning(&claims, &license_key))
            .filter(|h| claims.iat.saturating_sub(h.on_disk.1) < HIGH_WATER_WRITE_SECONDS)
            .map(|h| h.on_disk.clone());
        let file = CacheFile {
            format: CACHE_FORMAT.into(),
            product: self.product.clone(),
            license_key,
            hardware_id: self.hardware_id.clone(),
            token: token.to_string(),
            key_ids,
            high_water: previous.max(now).max(claims.iat),
        };
        if on_disk.is_none() {
            self.store.save(&file)?;
        }
        let status = decide(&claims, file.high_water, now, self.tolerance);
        *self.loaded.lock().unwrap_or_else(|p| p.into_inner()) = true;
        *self.unverified_key.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let mut fresh = Held::new(file, claims);
        if let Some(on_disk) = on_disk {
            fresh.on_disk = on_disk;
        }
        *held = Some(fresh);
        Ok(status)
    }

    /// This machine gave up its license: forget it.
    pub fn forget(&self) -> Result<()> {
        self.store.remove()?;
        *self.held.lock().unwrap_or_else(|p| p.into_inner()) = None;
        *self.unverified_key.lock().unwrap_or_else(|p| p.into_inner()) = None;
        *self.loaded.lock().unwrap_or_else(|p| p.into_inner()) = true;
        Ok(())
    }

    /// Adds keys fetched from the server's JWKS (only when the vendor opted in): they are trusted
    /// for this process, never written as trusted.
    pub fn learn_keys(&self, jwks: &str) -> Result<()> {
        let fetched = KeySet::from_jwks(jwks).map_err(|e| Error::Network(format!("the server's key set: {e}")))?;
        self.keys.lock().unwrap_or_else(|p| p.into_inner()).extend(&fetched);
        Ok(())
    }

    fn pending_path(&self) -> PathBuf {
        self.store.path().with_extension("offline-request.json")
    }

    /// An offline activation request, remembered (its nonce) until the license file comes back.
    pub fn offline_request(&self, license_key: &str) -> Result<OfflineRequest> {
        let request = self.offline_file("activate", license_key)?;
        let path = self.pending_path();
        let text = serde_json::to_string(&request).map_err(|e| Error::Config(e.to_string()))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::Storage { path: dir.display().to_string(), source: e })?;
        }
        std::fs::write(&path, text).map_err(|e| Error::Storage { path: path.display().to_string(), source: e })?;
        Ok(request)
    }

    fn offline_file(&self, kind: &str, license_key: &str) -> Result<OfflineRequest> {
        Ok(OfflineRequest {
            format: "keygate-offline-request/1".into(),
            kind: kind.into(),
            license_key: license_key.to_string(),
            product: self.product.clone(),
            hardware_id: self.hardware_id.clone(),
            nonce: nonce()?,
            created_at: rfc3339(self.now()),
        })
    }

    /// Imports the license file answering the pending offline request.
    pub fn import_license_file(&self, text: &str) -> Result<Status> {
        let file: LicenseFile = serde_json::from_str(text).map_err(|_| Error::InvalidToken(TokenError::Malformed))?;
        if file.format != "keygate-license-file/1" {
            return Err(Error::InvalidToken(TokenError::Malformed));
        }
        // Only the answer to this machine's pending request: an older file (say, one given up with an
        // offline deactivation) is refused. (Whoever controls the machine can restore old files; the
        // server still counts such a file against the license until it expires.)
        let pending: OfflineRequest = std::fs::read_to_string(self.pending_path())
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .ok_or(Error::InvalidToken(TokenError::NonceMismatch))?;
        let claims = self.verify(&file.token, Some(&pending.nonce))?;
        if !claims.offline {
            return Err(Error::InvalidToken(TokenError::NotOffline));
        }
        let status = self.keep(&file.token, claims, Some(file.license_key), false)?;
        let _ = std::fs::remove_file(self.pending_path());
        Ok(status)
    }

    /// An offline deactivation request for this machine's license, which it gives up at once.
    pub fn offline_deactivation_request(&self) -> Result<OfflineRequest> {
        let request = self.offline_file("deactivate", &self.license_key()?)?;
        self.forget()?;
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_no_answer_and_retry_later_are_retried_and_never_for_long() {
        let mut settings = Settings::new("https://api.example.com", "editor");
        settings.keys = KeySet::new(vec![crate::keys::PublicKey::from_base64url(&"A".repeat(43)).unwrap()]);
        settings.issuer = "keygate".into();
        settings.hardware_id = Some("pc-1".into());
        settings.cache_dir = Some(std::env::temp_dir());
        let core = Core::new(settings).unwrap();
        let unavailable = |retry_after| Err(Error::Unavailable { status: 503, retry_after });
        assert_eq!(core.retry_delay(0, &Err(Error::Network("reset".into()))), Some(Duration::from_millis(250)));
        assert_eq!(core.retry_delay(1, &unavailable(None)), Some(Duration::from_millis(500)));
        assert_eq!(core.retry_delay(0, &unavailable(Some(1))), Some(Duration::from_secs(1)), "Retry-After");
        assert_eq!(core.retry_delay(0, &unavailable(Some(30))), None, "too long to wait inside a call");
        assert_eq!(core.retry_delay(DEFAULT_RETRIES, &unavailable(None)), None, "retries used up");
        let refused = Err(Error::Refused { status: 409, code: "X".into(), message: String::new() });
        assert_eq!(core.retry_delay(0, &refused), None);
        assert_eq!(core.retry_delay(0, &Ok(json!({}))), None);
        let writes = [core.consume_request(1, None), core.deactivate_request()];
        assert!(writes.iter().all(|w| w.as_ref().is_err()), "no license held yet");
        let activation = core.activate_request("KEY").unwrap();
        let trial = core.trial_request(None).unwrap();
        assert!(activation.idempotency_key.is_some() && trial.idempotency_key.is_some());
        assert_ne!(activation.idempotency_key, trial.idempotency_key, "one key per call");
    }

    #[test]
    fn request_files_carry_an_rfc3339_utc_time() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_800_000_000), "2027-01-15T08:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
