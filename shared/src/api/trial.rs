//! Trials: the vendor sets a product's trial terms; a device starts one trial per product.

use super::activate::ActivateRequest;
use super::idempotency::{receipt, replay, Idempotency};
use super::issue::{validate_features, within};
use super::refusals::Refusal;
use super::views::granted;
use super::{committed, redecided, store_error, App, Reply};
use crate::error::ApiError;
use crate::input::{random_id, DeviceName, Email, HardwareId, LicenseKey, Nonce, Platform, Product};
use crate::model::{Expiration, Feature, License, LicenseType, TrialMarker, TrialTerms};
use crate::rules;
use crate::store::Store;
use crate::time::Timestamp;
use lambda_http::http::StatusCode;
use serde::{Deserialize, Serialize};

pub const MAX_TRIAL_DAYS: u32 = 365;
pub const MAX_TRIAL_ACTIVATIONS: u32 = 100;

/// `PUT /v1/products/{product}/trial`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrialTermsRequest {
    pub days: u32,
    #[serde(default = "one")]
    pub max_activations: u32,
    #[serde(default, deserialize_with = "crate::input::object::list")]
    pub features: Vec<Feature>,
}

fn one() -> u32 {
    1
}

#[derive(Serialize)]
struct TermsSet<'a> {
    trial: &'a TrialTerms,
}

pub(super) async fn put_terms<S: Store>(
    app: &App<S>,
    raw_product: &str,
    request: TrialTermsRequest,
) -> Result<Reply, ApiError> {
    let product = Product::parse(raw_product).map_err(|e| ApiError::field("product", e))?;
    within("days", Some(request.days), 1, MAX_TRIAL_DAYS)?;
    within("max_activations", Some(request.max_activations), 1, MAX_TRIAL_ACTIVATIONS)?;
    validate_features(&request.features)?;
    let terms = TrialTerms {
        product,
        days: request.days,
        max_activations: request.max_activations,
        features: request.features,
        updated_at: app.now(),
    };
    app.store.put_trial_terms(&terms).await.map_err(store_error)?;
    Reply::json(StatusCode::OK, &TermsSet { trial: &terms })
}

/// `POST /v1/trial`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrialRequest {
    pub product: Product,
    pub hardware_id: HardwareId,
    #[serde(default)]
    pub email: Option<Email>,
    #[serde(default)]
    pub device_name: Option<DeviceName>,
    #[serde(default)]
    pub platform: Option<Platform>,
    #[serde(default)]
    pub is_vm: bool,
    #[serde(default)]
    pub nonce: Option<Nonce>,
}

/// The trial license `terms` give a device, activated on it from `now`.
fn trial_license(terms: &TrialTerms, email: Option<&Email>, now: Timestamp) -> Result<License, ApiError> {
    let key = LicenseKey::generate().map_err(ApiError::internal)?;
    let id = random_id("lic").map_err(ApiError::internal)?;
    let base = License::new(key, id, terms.product.clone(), LicenseType::Trial, terms.max_activations, now);
    Ok(License {
        // Anyone may start a trial with any address: it is kept apart from the customer's.
        trial_email: email.cloned(),
        expiration: Expiration::DaysAfterActivation { days: terms.days },
        features: terms.features.clone(),
        times_activated: 1,
        first_activated_at: Some(now),
        last_activated_at: Some(now),
        ..base
    })
}

/// Issues a trial license and activates the device, once per product and device: the trial's
/// record, the license and the device are written in one transaction that fails if the record exists.
pub(super) async fn start<S: Store>(
    app: &App<S>,
    request: TrialRequest,
    idempotency: Option<&Idempotency>,
) -> Result<Reply, ApiError> {
    if let Some(reply) = replay(app, idempotency).await? {
        return Ok(reply);
    }
    let terms = app
        .store
        .trial_terms(&request.product)
        .await
        .map_err(store_error)?
        .ok_or(Refusal::TrialNotAvailable(&request.product))?;
    let (request, terms) = (&request, &terms);
    redecided(|| async move {
        let now = app.now();
        let license = trial_license(terms, request.email.as_ref(), now)?;
        let activation = ActivateRequest {
            license_key: license.license_key.clone(),
            product: request.product.clone(),
            hardware_id: request.hardware_id.clone(),
            device_name: request.device_name.clone(),
            platform: request.platform.clone(),
            is_vm: request.is_vm,
            nonce: None,
        };
        let mut device = activation.new_device(now);
        let code = rules::check(&license, &request.product, Some(&device), now);
        device.credential_until =
            rules::credential_exp(&license, code, false, now).and_then(|exp| rules::horizon_to_record(None, exp));
        let marker = TrialMarker {
            product: request.product.clone(),
            hardware_id: request.hardware_id.clone(),
            license_key: license.license_key.clone(),
            created_at: now,
        };
        let reply =
            granted(app, StatusCode::CREATED, (&license, &device), &request.product, request.nonce.as_ref(), now)?;
        let receipt = receipt(idempotency, &reply, now);
        let started = committed(app.store.start_trial(&marker, &license, &device, receipt.as_ref()).await, reply)?;
        if started.is_none() {
            // A retry of this request that won answers as it did.
            if let Some(reply) = replay(app, idempotency).await? {
                return Ok(Some(reply));
            }
            // Another request for this device won (or, once in 2^125, the key existed).
            if app.store.trial_marker(&request.product, &request.hardware_id).await.map_err(store_error)?.is_some() {
                return Err(Refusal::TrialAlreadyUsed(&request.product).into());
            }
        }
        Ok(started)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::tests::NOW;
    use crate::rules::{expires_at, standing, Standing};

    #[test]
    fn a_trial_license_runs_its_days_from_the_moment_it_starts() {
        let terms = TrialTerms {
            product: Product::parse("editor").unwrap(),
            days: 14,
            max_activations: 2,
            features: vec![],
            updated_at: NOW,
        };
        let email = Email::parse("eve@example.com").unwrap();
        let license = trial_license(&terms, Some(&email), NOW).unwrap();
        assert_eq!((license.license_type, license.is_trial, license.times_activated), (LicenseType::Trial, true, 1));
        assert_eq!(expires_at(&license), Some(NOW.plus_days(14)));
        assert_eq!(standing(&license, NOW.plus_days(14).plus_seconds(-1)), Standing::Active);
        assert_eq!(standing(&license, NOW.plus_days(14)), Standing::Expired);
        assert_eq!(license.trial_email, Some(email), "kept apart from a customer's verified e-mail");
        assert_eq!(license.customer, None);
        assert_eq!(license.max_activations, 2);
        let other = trial_license(&terms, None, NOW).unwrap();
        assert_ne!(other.license_key, license.license_key, "every trial gets its own random key");
    }
}
