//! `POST /v1/deactivate`: a client releases its device's seat, counting a transfer (returning a
//! floating lease, borrowed or not, is not a transfer).

use super::activate::license_not_found;
use super::views::ClientLicense;
use super::{back_off, concurrent_update, store_error, App, Reply, MAX_WRITE_ATTEMPTS};
use crate::error::{ApiError, ErrorCode};
use crate::input::{HardwareId, LicenseKey, Product};
use crate::model::License;
use crate::rules::{self, DeactivationRefusal};
use crate::store::{DeactivationWrite, SeatRelease, Store, WriteError};
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
        let seat = seat_release(&license, &request.hardware_id, true);
        let write = DeactivationWrite { license_key: &request.license_key, hardware_id: &request.hardware_id, seat };
        match app.store.deactivate(&write).await {
            Ok(()) => {
                released(&mut license, &request.hardware_id, seat);
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

/// How a device's seat is released: a floating lease (as read), or a counted seat.
pub(super) fn seat_release(license: &License, hardware_id: &HardwareId, count_transfer: bool) -> SeatRelease {
    if license.is_floating {
        SeatRelease::Lease { observed: license.leases.get(hardware_id).copied() }
    } else {
        SeatRelease::Counted { count_transfer }
    }
}

/// The license as it stands once `seat` was released.
pub(super) fn released(license: &mut License, hardware_id: &HardwareId, seat: SeatRelease) {
    match seat {
        SeatRelease::Lease { .. } => {
            license.leases.remove(hardware_id);
        }
        SeatRelease::Counted { count_transfer } => {
            license.times_activated = license.times_activated.saturating_sub(1);
            license.transfer_count += u32::from(count_transfer);
            license.version += 1;
        }
    }
}
