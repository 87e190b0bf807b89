//! `POST /v1/check` and `GET /v1/check`: one read, a signed verdict, always 200 for a known key.
//! On a floating license the check is also the heartbeat: it renews the device's lease (one write).

use super::activate::license_not_found;
use super::lease::{hold_lease, Held};
use super::views::{sign_verdict, ClientLicense};
use super::{back_off, concurrent_update, store_error, App, Reply, MAX_WRITE_ATTEMPTS};
use crate::error::ApiError;
use crate::input::{HardwareId, LicenseKey, Nonce, Product};
use crate::rules::{self, CheckCode};
use crate::store::{Store, WriteError};
use crate::time::Timestamp;
use lambda_http::http::StatusCode;
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    pub license_key: LicenseKey,
    pub product: Product,
    pub hardware_id: HardwareId,
    #[serde(default)]
    pub nonce: Option<Nonce>,
}

#[derive(Serialize)]
struct Checked<'a> {
    valid: bool,
    code: CheckCode,
    license: ClientLicense<'a>,
    token: String,
}

pub(super) async fn check<S: Store>(app: &App<S>, request: CheckRequest) -> Result<Reply, ApiError> {
    for attempt in 0..MAX_WRITE_ATTEMPTS {
        let now = Timestamp::now();
        let (license, mut device) =
            app.store.license_and_device(&request.license_key, &request.hardware_id).await.map_err(store_error)?;
        let mut license = license.ok_or_else(|| license_not_found(&request.license_key))?;
        let mut code = rules::check(&license, &request.product, device.as_ref(), now);
        if let Some(device) = device.as_mut().filter(|_| code.is_valid() && license.is_floating) {
            let until = rules::lease_end(&license, now);
            match hold_lease(app, &mut license, device, until, false, now).await? {
                Held::Yes => {}
                Held::No(_) => code = CheckCode::LeaseExpired,
                Held::Raced => {
                    back_off(attempt).await;
                    continue;
                }
            }
        }
        if let Some(device) = device.as_ref().filter(|d| rules::last_seen_is_stale(d, now)) {
            // Best effort: the verdict stands without it, and a concurrent check may have written it first.
            let stale_before = rules::last_seen_stale_before(now);
            if let Err(WriteError::Store(err)) =
                app.store.touch_device(&license.license_key, &device.hardware_id, now, stale_before).await
            {
                tracing::warn!(error = %err, "could not record last_seen_at");
            }
        }
        let token =
            sign_verdict(app, &license, &request.hardware_id, device.as_ref(), code, request.nonce.as_ref(), now)?;
        return Reply::json(
            StatusCode::OK,
            &Checked { valid: code.is_valid(), code, license: ClientLicense::of(&license, now), token },
        );
    }
    Err(concurrent_update())
}
