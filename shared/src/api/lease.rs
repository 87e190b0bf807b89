//! Floating leases beyond activation: the heartbeat a check makes, and `POST /v1/borrow`.

use super::idempotency::{read_keyed, receipt, Before, Idempotency};
use super::refusals::Refusal;
use super::views::granted;
use super::{redecided, store_error, App, Reply};
use crate::error::ApiError;
use crate::input::{HardwareId, LicenseKey, Nonce, Product};
use crate::model::{Device, License};
use crate::rules::{self, NoFreeSeat};
use crate::store::{LeaseWrite, Receipt, Store, WriteError};
use crate::time::Timestamp;
use lambda_http::http::StatusCode;
use serde::Deserialize;

pub(super) enum Held {
    /// The device holds its lease until `device.lease_expires_at`; `license` shows it.
    Yes,
    No(NoFreeSeat),
    /// A concurrent writer changed the leases first: read again and re-decide.
    Raced,
}

/// Makes the receipt of a write from the license and device as it will leave them.
pub(super) type MakeReceipt<'a> = dyn FnMut(&License, &Device) -> Result<Option<Receipt>, ApiError> + Send + 'a;

/// Takes or renews `device`'s lease until at least `until` (recording a borrow when `borrow`),
/// updating `license` and `device` to match what was stored. `receipt`, when given, is given the
/// license and device as a write will leave them, before it is made, and may return a receipt to
/// store with it.
pub(super) async fn hold_lease<S: Store>(
    app: &App<S>,
    license: &mut License,
    device: &mut Device,
    until: Timestamp,
    borrow: bool,
    now: Timestamp,
    receipt: Option<&mut MakeReceipt<'_>>,
) -> Result<Held, ApiError> {
    let hardware_id = device.hardware_id.clone();
    let plan = match rules::plan_lease(license, &hardware_id, until, now) {
        Ok(plan) => plan,
        Err(no_seat) => {
            device.lease_expires_at = license.leases.get(&hardware_id).copied();
            return Ok(Held::No(no_seat));
        }
    };
    let borrowed_until = borrow.then(|| plan.until());
    // The license and device as the write leaves them.
    let held = |license: &mut License, device: &mut Device| {
        plan.apply(license, &hardware_id);
        device.lease_expires_at = Some(plan.until());
        if borrowed_until.is_some() {
            device.borrowed_until = borrowed_until;
        }
    };
    if !plan.is_noop() || borrowed_until.is_some() {
        // Only a write with a receipt needs its outcome before it is made (a check's renewal does not).
        let receipt = match receipt {
            Some(make) => {
                let (mut license_after, mut device_after) = (license.clone(), device.clone());
                held(&mut license_after, &mut device_after);
                make(&license_after, &device_after)?
            }
            None => None,
        };
        let write = LeaseWrite {
            license,
            hardware_id: &hardware_id,
            plan: &plan,
            new_device: None,
            borrowed_until,
            now,
            receipt: receipt.as_ref(),
        };
        match app.store.lease(&write).await {
            Ok(()) => {}
            Err(WriteError::Conflict) => return Ok(Held::Raced),
            Err(WriteError::Store(err)) => return Err(store_error(err)),
        }
    }
    held(license, device);
    Ok(Held::Yes)
}

/// `POST /v1/borrow`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BorrowRequest {
    pub license_key: LicenseKey,
    pub product: Product,
    pub hardware_id: HardwareId,
    pub hours: u32,
    #[serde(default)]
    pub nonce: Option<Nonce>,
}

/// A floating device keeps its seat until the borrow ends, offline: the token lasts as long.
pub(super) async fn borrow<S: Store>(
    app: &App<S>,
    request: BorrowRequest,
    idempotency: Option<&Idempotency>,
) -> Result<Reply, ApiError> {
    let request = &request;
    redecided(|| async move {
        let now = app.now();
        let (license, device) = match read_keyed(app, &request.license_key, &request.hardware_id, idempotency).await? {
            Before::Answered(reply) => return Ok(Some(reply)),
            Before::Found(license, device) => (license, device),
        };
        let mut license = license.ok_or(Refusal::LicenseNotFound(&request.license_key))?;
        rules::usable(&license, &request.product, now)?;
        rules::plan_borrow(&license, request.hours)?;
        let mut device = device.ok_or(Refusal::DeviceNotFound(&request.hardware_id))?;
        let until = now.plus_seconds(i64::from(request.hours) * 3_600);
        let answer = |license: &License, device: &Device| {
            granted(app, StatusCode::OK, (license, device), &request.product, request.nonce.as_ref(), now)
        };
        // A borrow always writes (it is recorded on the device), so its answer is made before.
        let mut reply = None;
        let mut make_receipt = |license: &License, device: &Device| {
            let answer = answer(license, device)?;
            let stored = receipt(idempotency, &answer, now);
            reply = Some(answer);
            Ok(stored)
        };
        let held = hold_lease(app, &mut license, &mut device, until, true, now, Some(&mut make_receipt)).await?;
        match held {
            Held::Yes => reply.map_or_else(|| answer(&license, &device), Ok).map(Some),
            Held::No(no_seat) => Err(no_seat.into()),
            Held::Raced => Ok(None),
        }
    })
    .await
}
