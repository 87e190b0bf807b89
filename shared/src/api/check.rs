//! `POST /v1/check` and `GET /v1/check`: one read, a signed verdict, always 200 for a known key.
//! On a floating license the check is also the heartbeat: it renews the device's lease (one write).

use super::consume::Consumption;
use super::lease::{hold_lease, Held, Hold};
use super::refusals::Refusal;
use super::views::{verdict_claims, ClientLicense, FeatureClaim};
use super::{redecided, store_error, App, Reply};
use crate::error::ApiError;
use crate::input::{FeatureCode, HardwareId, LicenseKey, Nonce, Product};
use crate::model::License;
use crate::rules::{self, CheckCode, FeatureRefusal};
use crate::store::{Sighting, Store, WriteError};
use crate::time::Timestamp;
use lambda_http::http::StatusCode;
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    pub license_key: LicenseKey,
    pub product: Product,
    pub hardware_id: HardwareId,
    /// Ask also whether this feature may be used now.
    #[serde(default)]
    pub feature: Option<FeatureCode>,
    #[serde(default)]
    pub nonce: Option<Nonce>,
}

#[derive(Serialize)]
struct Checked<'a> {
    valid: bool,
    code: CheckCode,
    license: ClientLicense<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    feature: Option<FeatureAnswer<'a>>,
    token: String,
}

/// Whether the feature asked about may be used, and its consumption.
#[derive(Serialize)]
struct FeatureAnswer<'a> {
    code: &'a FeatureCode,
    usable: bool,
    /// Why not, when the license itself is valid but the feature is not usable.
    reason: Option<FeatureRefusal>,
    expiry_date: Option<Timestamp>,
    #[serde(flatten)]
    usage: Option<Consumption>,
}

impl<'a> FeatureAnswer<'a> {
    fn of(license: &License, code: &'a FeatureCode, license_valid: bool, now: Timestamp) -> Self {
        let verdict = rules::feature_usable(license, code.as_str(), now);
        let feature = license.feature(code.as_str());
        let usage = feature.map(|f| {
            let terms = f.metering();
            Consumption::of(
                &terms,
                rules::used_now(&terms, license.consumption.get(&crate::model::CounterKey::Feature(code.clone())), now),
                now,
            )
        });
        Self {
            code,
            usable: license_valid && verdict.is_ok(),
            reason: verdict.err(),
            expiry_date: feature.and_then(|f| f.expiry_date),
            usage,
        }
    }
}

pub(super) async fn check<S: Store>(app: &App<S>, request: CheckRequest) -> Result<Reply, ApiError> {
    let request = &request;
    redecided(|| async move {
        let now = app.now();
        let (license, mut device) =
            app.store.license_and_device(&request.license_key, &request.hardware_id).await.map_err(store_error)?;
        let mut license = license.ok_or(Refusal::LicenseNotFound(&request.license_key))?;
        let mut code = rules::check(&license, &request.product, device.as_ref(), now);
        if let Some(device) = device.as_mut().filter(|_| code.is_valid() && license.is_floating) {
            let until = rules::lease_end(&license, now);
            match hold_lease(app, &mut license, device, until, Hold::default(), now, None).await? {
                Held::Yes => {}
                Held::No(_) => code = CheckCode::LeaseExpired,
                Held::Raced => return Ok(None),
            }
        }
        if let Some(device) = device.as_mut() {
            // A node-locked device's horizon (a floating device's tokens are bounded by its lease).
            let exp = rules::credential_exp(&license, code, false, now);
            let horizon = exp.and_then(|exp| rules::horizon_to_record(device.credential_until, exp));
            let stale_before = rules::last_seen_stale_before(now);
            let sighting = Sighting { now, stale_before, credential_until: horizon };
            if horizon.is_some() || rules::last_seen_is_stale(device, now) {
                match app.store.touch_device(&license.license_key, &device.hardware_id, &sighting).await {
                    Ok(()) => {
                        device.last_seen_at = now;
                        device.credential_until = horizon.or(device.credential_until);
                    }
                    // The token about to be signed depends on the new horizon: re-read and decide again
                    // (a concurrent check extended it, or a release made the device a tombstone).
                    Err(WriteError::Conflict) if horizon.is_some() => return Ok(None),
                    // A sighting alone is best effort: a concurrent check may have written it first.
                    Err(WriteError::Conflict) => {}
                    // The token is cut to the recorded horizon while that is ahead; else nothing valid can be signed.
                    Err(WriteError::Store(err))
                        if horizon.is_none() || rules::credential_is_live(device.credential_until, now) =>
                    {
                        tracing::warn!(error = %err, "could not record a sighting");
                    }
                    Err(WriteError::Store(err)) => return Err(store_error(err)),
                }
            }
        }
        let feature = request.feature.as_ref().map(|f| FeatureAnswer::of(&license, f, code.is_valid(), now));
        let mut claims =
            verdict_claims(app, &license, &request.hardware_id, device.as_ref(), code, request.nonce.as_ref(), now);
        claims.feature = feature.as_ref().map(|f| FeatureClaim { code: f.code.as_str(), usable: f.usable });
        let token = app.signer()?.sign(&claims).map_err(ApiError::internal)?;
        let checked =
            Checked { valid: code.is_valid(), code, license: ClientLicense::of(&license, now), feature, token };
        Reply::json(StatusCode::OK, &checked).map(Some)
    })
    .await
}
