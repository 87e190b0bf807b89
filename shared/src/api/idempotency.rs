//! Safe retries: an `Idempotency-Key` on a write makes a retry of the same request return the
//! first answer instead of acting again. A client write's answer is stored as a receipt in the
//! same atomic write as its effect (so there is never an effect without its receipt, or the
//! reverse); a vendor's issue stores which licenses it created.

use super::refusals::Refusal;
use super::{App, Reply};
use crate::error::ApiError;
use crate::input::{HardwareId, IdempotencyKey, LicenseKey};
use crate::model::{Device, License};
use crate::store::{Receipt, Store};
use crate::time::Timestamp;
use lambda_http::http::StatusCode;

/// How long a retry with the same `Idempotency-Key` gets the first answer.
pub(super) const TTL_SECONDS: i64 = 24 * 3_600;

/// SHA-256 of `prefix` and the canonical JSON of a request body (object keys sorted), so the
/// same request matches whatever its whitespace or key order.
pub(super) fn fingerprint(prefix: &str, body: &[u8]) -> String {
    let canonical = serde_json::from_slice::<serde_json::Value>(body).map(|v| v.to_string()).unwrap_or_default();
    crate::auth::hash_token(&format!("{prefix}{canonical}"))
}

/// A client write made with an `Idempotency-Key`, scoped to the license it acts on (or, for a
/// trial, the product and device), so one customer's keys never meet another's.
#[derive(Debug, Clone)]
pub(super) struct Idempotency {
    scope: String,
    key: IdempotencyKey,
    fingerprint: String,
}

impl Idempotency {
    pub(super) fn new(scope: String, key: IdempotencyKey, route: &str, body: &[u8]) -> Self {
        Self { scope, key, fingerprint: fingerprint(&format!("{route}\n"), body) }
    }

    /// The receipt that stores `reply` as the answer to this request.
    pub(super) fn receipt(&self, reply: &Reply, now: Timestamp) -> Receipt {
        Receipt {
            scope: self.scope.clone(),
            idempotency_key: self.key.to_string(),
            fingerprint: self.fingerprint.clone(),
            status: reply.status.as_u16(),
            body: reply.body.clone(),
            created_at: now,
            ttl: now.unix() + TTL_SECONDS,
        }
    }
}

/// What a client write's key is scoped to: the license it acts on, or for a trial (which has no
/// license yet) the product and the device, so no other customer's keys meet this one's (the
/// hardware id hashed: it may hold `#`).
pub(super) trait Scoped {
    fn scope(&self) -> String;
}

/// Requests that act on the license they name: scoped to it.
macro_rules! license_scoped {
    ($($request:ty),*) => {
        $(impl Scoped for $request {
            fn scope(&self) -> String {
                format!("L#{}", self.license_key)
            }
        })*
    };
}

license_scoped!(
    super::activate::ActivateRequest,
    super::deactivate::DeactivateRequest,
    super::lease::BorrowRequest,
    super::consume::ConsumeRequest,
    crate::offline::OfflineRequest
);

impl Scoped for super::trial::TrialRequest {
    fn scope(&self) -> String {
        format!("T#{}#{}", self.product, crate::auth::hash_token(self.hardware_id.as_str()))
    }
}

/// The first answer when the request was already made with this key (a refusal when the key
/// came with another request); `None` when it was not, and the write is to be made.
pub(super) async fn replay<S: Store>(
    app: &App<S>,
    idempotency: Option<&Idempotency>,
) -> Result<Option<Reply>, ApiError> {
    let Some(idempotency) = idempotency else { return Ok(None) };
    let stored = app.store.receipt(&idempotency.scope, idempotency.key.as_str()).await.map_err(super::store_error)?;
    // Past its TTL a receipt is gone, whenever DynamoDB gets round to deleting it.
    let Some(receipt) = stored.filter(|r| r.ttl > app.now().unix()) else { return Ok(None) };
    if receipt.fingerprint != idempotency.fingerprint {
        return Err(Refusal::IdempotencyKeyReused.into());
    }
    let status = StatusCode::from_u16(receipt.status).map_err(ApiError::internal)?;
    Ok(Some(Reply { status, body: receipt.body, headers: Vec::new() }))
}

/// What a keyed write on one device of a license reads before it decides.
#[allow(clippy::large_enum_variant)] // one short-lived value per attempt: boxing would only add an allocation
pub(super) enum Before {
    /// The request was already made with this key: its first answer.
    Answered(Reply),
    /// The license and the device as they stand (either may be missing).
    Found(Option<License>, Option<Device>),
}

/// Reads the license and device, then the receipt: in that order, so a concurrent request with
/// the key that committed before the state was read answers as it did, never with a refusal of
/// its own effect.
pub(super) async fn read_keyed<S: Store>(
    app: &App<S>,
    license_key: &LicenseKey,
    hardware_id: &HardwareId,
    idempotency: Option<&Idempotency>,
) -> Result<Before, ApiError> {
    let (license, device) = app.store.license_and_device(license_key, hardware_id).await.map_err(super::store_error)?;
    Ok(match replay(app, idempotency).await? {
        Some(reply) => Before::Answered(reply),
        None => Before::Found(license, device),
    })
}

/// The receipt to store with a write whose answer is `reply`, if the request has a key.
pub(super) fn receipt(idempotency: Option<&Idempotency>, reply: &Reply, now: Timestamp) -> Option<Receipt> {
    idempotency.map(|i| i.receipt(reply, now))
}
