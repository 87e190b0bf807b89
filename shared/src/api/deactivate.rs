//! `POST /v1/deactivate`, and the release every path shares: a client releasing its device (a
//! transfer on a node-locked license; returning a floating lease is not one), or the vendor
//! releasing any device. A client's release of a device that may still run on a valid credential
//! takes a place in the license's release allowance until that credential lapses.

use super::idempotency::{read_keyed, receipt, Before, Idempotency};
use super::lease::upgraded;
use super::refusals::Refusal;
use super::views::ClientLicense;
use super::{committed, redecided, App, Reply};
use crate::error::ApiError;
use crate::input::{HardwareId, LicenseKey, Product};
use crate::model::{License, ReleasedBy};
use crate::rules::{self, AllowanceEntry};
use crate::store::{DeactivationWrite, SeatRelease, Store};
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
    /// Until when the device's last credential may still be valid (absent: none is).
    credential_valid_until: Option<Timestamp>,
    license: ClientLicense<'a>,
}

/// Who asks for a release: a client (for its product, perhaps with an `Idempotency-Key`) or the vendor.
#[derive(Debug, Clone, Copy)]
pub(super) enum Releaser<'a> {
    Client { product: &'a Product, idempotency: Option<&'a Idempotency> },
    Vendor,
}

/// A device released: the license as it stands after it, and until when the device's last
/// credential may still be valid.
pub(super) struct Release {
    pub license: License,
    pub credential_valid_until: Option<Timestamp>,
}

/// Releases the device and answers with `answer` of the release (decided before the write, so a
/// client's answer is stored with it under its `Idempotency-Key`).
pub(super) async fn release<S: Store>(
    app: &App<S>,
    key: &LicenseKey,
    hardware_id: &HardwareId,
    releaser: Releaser<'_>,
    answer: impl Fn(&Release, Timestamp) -> Result<Reply, ApiError>,
) -> Result<Reply, ApiError> {
    let idempotency = match releaser {
        Releaser::Client { idempotency, .. } => idempotency,
        Releaser::Vendor => None,
    };
    let answer = &answer;
    redecided(|| async move {
        let now = app.now();
        let (license, device) = match read_keyed(app, key, hardware_id, idempotency).await? {
            Before::Answered(reply) => return Ok(Some(reply)),
            Before::Found(license, device) => (license, device),
        };
        let license = license.ok_or(Refusal::LicenseNotFound(key))?;
        // The device's lease must be on its item to leave with it.
        if license.is_floating && upgraded(app, &license).await? {
            return Ok(None);
        }
        let (allowance, released_by) = match releaser {
            Releaser::Client { product, .. } => {
                let allowance = rules::plan_deactivation(&license, product, device.as_ref(), now)
                    .map_err(|refusal| Refusal::Deactivation { refusal, hardware_id, now })?;
                (allowance, ReleasedBy::Client)
            }
            // The vendor's release is the vendor's decision: it owes nothing to the allowance.
            Releaser::Vendor => (None, ReleasedBy::Vendor),
        };
        let device = device.ok_or(Refusal::DeviceNotFound(hardware_id))?;
        let credential_until = rules::credential_until(&license, &device).filter(|until| *until > now);
        let seat = if license.is_floating {
            SeatRelease::Lease { observed: device.lease_expires_at }
        } else {
            SeatRelease::Counted { count_transfer: matches!(releaser, Releaser::Client { .. }) }
        };
        let released = Release {
            license: after_release(&license, hardware_id, seat, allowance.as_ref()),
            credential_valid_until: credential_until,
        };
        let reply = answer(&released, now)?;
        let receipt = receipt(idempotency, &reply, now);
        let write = DeactivationWrite {
            license: &license,
            device: &device,
            seat,
            allowance: allowance.as_ref(),
            released_by,
            now,
            receipt: receipt.as_ref(),
        };
        committed(app.store.deactivate(&write).await, reply)
    })
    .await
}

/// The license as it stands once the device is released.
fn after_release(
    license: &License,
    hardware_id: &HardwareId,
    seat: SeatRelease,
    allowance: Option<&AllowanceEntry>,
) -> License {
    let mut license = license.clone();
    match seat {
        SeatRelease::Lease { observed } => {
            license.leases_held = license.leases_held.saturating_sub(u32::from(observed.is_some()));
        }
        SeatRelease::Counted { count_transfer } => {
            license.times_activated = license.times_activated.saturating_sub(1);
            license.transfer_count += u32::from(count_transfer);
            license.version += 1;
        }
    }
    if let Some(entry) = allowance {
        entry.slot.apply(&mut license.releases, hardware_id, entry.until);
    }
    license
}

pub(super) async fn deactivate<S: Store>(
    app: &App<S>,
    request: DeactivateRequest,
    idempotency: Option<&Idempotency>,
) -> Result<Reply, ApiError> {
    let releaser = Releaser::Client { product: &request.product, idempotency };
    release(app, &request.license_key, &request.hardware_id, releaser, |released, now| {
        Reply::json(
            StatusCode::OK,
            &Deactivated {
                deactivated: &request.hardware_id,
                credential_valid_until: released.credential_valid_until,
                license: ClientLicense::of(&released.license, now),
            },
        )
    })
    .await
}
