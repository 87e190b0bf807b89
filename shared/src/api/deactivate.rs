//! `POST /v1/deactivate`: a client releases its device's seat, counting a transfer.

use super::activate::license_not_found;
use super::views::ClientLicense;
use super::{back_off, concurrent_update, store_error, App, Reply, MAX_WRITE_ATTEMPTS};
use crate::error::{ApiError, ErrorCode};
use crate::input::{HardwareId, LicenseKey, Product};
use crate::rules::{self, DeactivationRefusal};
use crate::store::{DeactivationWrite, Store, WriteError};
use crate::time::Timestamp;
use lambda_http::http::StatusCode;
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeactivateRequest {
    pub license_key: LicenseKey,
    pub product: Product,
    pub hardware_id: HardwareId,
}

#[derive(Serialize)]
struct Deactivated<'a> {
    deactivated: &'a HardwareId,
    license: ClientLicense<'a>,
}

fn refusal(refusal: DeactivationRefusal, hardware_id: &HardwareId) -> ApiError {
    match refusal {
        DeactivationRefusal::ProductMismatch => {
            ApiError::new(ErrorCode::ProductMismatch, "the license is for another product")
        }
        DeactivationRefusal::DeviceNotFound => {
            ApiError::new(ErrorCode::DeviceNotFound, format!("device {hardware_id} is not activated on this license"))
        }
        DeactivationRefusal::TransferLimitReached { max } => ApiError::new(
            ErrorCode::TransferLimitReached,
            format!("all {max} transfers of this license are used; ask the vendor to release the device"),
        ),
    }
}

pub(super) async fn deactivate<S: Store>(app: &App<S>, request: DeactivateRequest) -> Result<Reply, ApiError> {
    for attempt in 0..MAX_WRITE_ATTEMPTS {
        let (license, device) =
            app.store.license_and_device(&request.license_key, &request.hardware_id).await.map_err(store_error)?;
        let mut license = license.ok_or_else(|| license_not_found(&request.license_key))?;
        rules::plan_deactivation(&license, &request.product, device.as_ref())
            .map_err(|r| refusal(r, &request.hardware_id))?;
        let write = DeactivationWrite {
            license_key: &request.license_key,
            hardware_id: &request.hardware_id,
            count_transfer: true,
        };
        match app.store.deactivate(&write).await {
            Ok(()) => {
                license.times_activated = license.times_activated.saturating_sub(1);
                license.transfer_count += 1;
                license.version += 1;
                let now = Timestamp::now();
                return Reply::json(
                    StatusCode::OK,
                    &Deactivated { deactivated: &request.hardware_id, license: ClientLicense::of(&license, now) },
                );
            }
            Err(WriteError::Conflict) => back_off(attempt).await,
            Err(WriteError::Store(err)) => return Err(store_error(err)),
        }
    }
    Err(concurrent_update())
}
