//! `POST /v1/activate`: bind a device to a license, consuming a seat atomically.

use super::views::{sign_verdict, ClientLicense};
use super::{back_off, concurrent_update, store_error, App, Reply, MAX_WRITE_ATTEMPTS};
use crate::error::{ApiError, ErrorCode};
use crate::input::{DeviceName, HardwareId, LicenseKey, Nonce, Platform, Product};
use crate::model::{Device, License};
use crate::rules::{self, ActivationPlan, ActivationRefusal, ActivationRequest};
use crate::store::{ActivationWrite, Store, WriteError};
use crate::time::Timestamp;
use lambda_http::http::StatusCode;
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivateRequest {
    pub license_key: LicenseKey,
    pub product: Product,
    pub hardware_id: HardwareId,
    #[serde(default)]
    pub device_name: Option<DeviceName>,
    #[serde(default)]
    pub platform: Option<Platform>,
    #[serde(default)]
    pub is_vm: bool,
    #[serde(default)]
    pub nonce: Option<Nonce>,
}

#[derive(Serialize)]
struct Activated<'a> {
    license: ClientLicense<'a>,
    device: &'a Device,
    token: String,
}

pub(crate) fn license_not_found(key: &LicenseKey) -> ApiError {
    ApiError::new(ErrorCode::LicenseNotFound, format!("no license with key {key}"))
}

fn refusal(refusal: ActivationRefusal) -> ApiError {
    use ActivationRefusal::*;
    match refusal {
        ProductMismatch => ApiError::new(ErrorCode::ProductMismatch, "the license is for another product"),
        Suspended => ApiError::new(ErrorCode::LicenseSuspended, "the license is suspended"),
        Revoked => ApiError::new(ErrorCode::LicenseRevoked, "the license is revoked"),
        Expired => ApiError::new(ErrorCode::LicenseExpired, "the license has expired"),
        VmNotAllowed => ApiError::new(ErrorCode::VmNotAllowed, "the license may not be activated on a virtual machine"),
        Frozen { until } => {
            ApiError::new(ErrorCode::LicenseFrozen, format!("new activations are frozen until {until}"))
        }
        LimitReached { max } => ApiError::new(
            ErrorCode::ActivationLimitReached,
            format!("all {max} activations are in use; deactivate a device first"),
        ),
    }
}

/// The license as it stands once `write` has been applied.
fn after_write(license: &License, plan: &ActivationPlan, now: Timestamp) -> License {
    let mut license = license.clone();
    if *plan == ActivationPlan::NewSeat {
        license.times_activated += 1;
    }
    license.first_activated_at.get_or_insert(now);
    license.last_activated_at = Some(now);
    license.version += 1;
    license
}

pub(super) async fn activate<S: Store>(app: &App<S>, request: ActivateRequest) -> Result<Reply, ApiError> {
    let rules_request =
        ActivationRequest { product: &request.product, hardware_id: &request.hardware_id, is_vm: request.is_vm };
    for attempt in 0..MAX_WRITE_ATTEMPTS {
        let now = Timestamp::now();
        let (license, devices) = app
            .store
            .license_with_devices(&request.license_key)
            .await
            .map_err(store_error)?
            .ok_or_else(|| license_not_found(&request.license_key))?;
        let plan = rules::plan_activation(&license, &devices, &rules_request, now).map_err(refusal)?;
        let (license, device) = match &plan {
            ActivationPlan::AlreadyActive => {
                let device = devices.into_iter().find(|d| d.hardware_id == request.hardware_id);
                (license, device.ok_or_else(|| ApiError::internal("planned device vanished"))?)
            }
            ActivationPlan::NewSeat | ActivationPlan::Replace { .. } => {
                let device = Device {
                    hardware_id: request.hardware_id.clone(),
                    name: request.device_name.clone(),
                    platform: request.platform.clone(),
                    is_vm: request.is_vm,
                    activated_at: now,
                    last_seen_at: now,
                    lease_expires_at: None,
                };
                let evict = match &plan {
                    ActivationPlan::Replace { evict } => Some(evict),
                    _ => None,
                };
                let write = ActivationWrite { license: &license, device: &device, evict, now };
                match app.store.activate(&write).await {
                    Ok(()) => (after_write(&license, &plan, now), device),
                    Err(WriteError::Conflict) => {
                        back_off(attempt).await;
                        continue;
                    }
                    Err(WriteError::Store(err)) => return Err(store_error(err)),
                }
            }
        };
        let code = rules::check(&license, &request.product, Some(&device), now);
        let token =
            sign_verdict(app, &license, &request.hardware_id, Some(&device), code, request.nonce.as_ref(), now)?;
        return Reply::json(
            StatusCode::OK,
            &Activated { license: ClientLicense::of(&license, now), device: &device, token },
        );
    }
    Err(concurrent_update())
}
