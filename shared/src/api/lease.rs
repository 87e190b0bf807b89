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

/// How many lapsed leases a takeover reads beyond those it needs, to pick among at random: devices
/// taking seats of one pool at once then rarely race for the same lapsed lease.
const TAKEOVER_CANDIDATES: usize = 25;

/// The most lapsed leases one decision reads (after a vendor lowered a pool's seats far below its
/// leases; more are cleared a read's worth at a time).
const MAX_TAKEOVER_READ: usize = 1_000;

/// What kind of hold: a borrow is recorded on the device; a new device is bound by the same write.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Hold {
    pub borrow: bool,
    pub new_device: bool,
}

/// Moves leases an earlier version kept in the license item to their devices. `true`: it did,
/// and the caller reads again and decides on the moved leases.
pub(super) async fn upgraded<S: Store>(app: &App<S>, license: &License) -> Result<bool, ApiError> {
    if license.unmoved_leases.is_empty() {
        return Ok(false);
    }
    let mut license = license.clone();
    for _ in 0..MAX_UPGRADE_ROUNDS {
        match app.store.upgrade_leases(&license).await {
            Ok(()) => return Ok(true),
            Err(WriteError::Conflict) => {}
            Err(WriteError::Store(err)) => return Err(store_error(err)),
        }
        // Operations racing on the same license move its leases side by side: one that lost a
        // move reads what is left and goes on, rather than spend its decision's attempts waiting.
        let key = std::slice::from_ref(&license.license_key);
        match app.store.licenses(key).await.map_err(store_error)?.pop() {
            Some(read) if !read.unmoved_leases.is_empty() => license = read,
            _ => return Ok(true),
        }
    }
    Ok(true)
}

/// How many times one operation goes on moving a license's leases after losing a move to another.
const MAX_UPGRADE_ROUNDS: usize = 20;

/// Takes or renews `device`'s lease until at least `until` (`device` as read, or new), updating
/// `license` and `device` to match what was stored. `receipt`, when given, is given the license
/// and device as a write will leave them, before it is made, and may return a receipt to store
/// with it.
pub(super) async fn hold_lease<S: Store>(
    app: &App<S>,
    license: &mut License,
    device: &mut Device,
    until: Timestamp,
    hold: Hold,
    now: Timestamp,
    receipt: Option<&mut MakeReceipt<'_>>,
) -> Result<Held, ApiError> {
    if upgraded(app, license).await? {
        return Ok(Held::Raced);
    }
    let own = device.lease_expires_at;
    let needed = rules::leases_to_take_over(license, own, now);
    let limit = needed.min(MAX_TAKEOVER_READ) + TAKEOVER_CANDIDATES;
    let mut lapsed = Vec::new();
    if needed > 0 {
        lapsed = app.store.lapsed_leases(&license.license_key, now, limit as u32).await.map_err(store_error)?;
        spread(&mut lapsed);
    }
    let plan = match rules::plan_lease(license, &device.hardware_id, own, &lapsed, until, now) {
        Ok(plan) => plan,
        // More lapsed leases to clear than one read holds: clear these, and decide again.
        Err(_) if lapsed.len() == limit => {
            lapsed.retain(|(holder, end)| holder != &device.hardware_id && !rules::lease_is_live(*end, now));
            return match app.store.clear_lapsed_leases(&license.license_key, &lapsed, now).await {
                Ok(()) | Err(WriteError::Conflict) => Ok(Held::Raced),
                Err(WriteError::Store(err)) => Err(store_error(err)),
            };
        }
        Err(no_seat) => return Ok(Held::No(no_seat)),
    };
    let borrowed_until = hold.borrow.then(|| plan.until());
    // The license and device as the write leaves them.
    let held = |license: &mut License, device: &mut Device| {
        plan.apply(license, device);
        if borrowed_until.is_some() {
            device.borrowed_until = borrowed_until;
        }
    };
    if !plan.is_noop() || borrowed_until.is_some() || hold.new_device {
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
            device,
            new_device: hold.new_device,
            plan: &plan,
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

/// Starts the list at a random place (wrapping around), so concurrent takeovers spread over the
/// lapsed leases instead of all racing for the first.
fn spread<T>(items: &mut [T]) {
    let mut random = [0u8; 4];
    if items.len() > 1 && getrandom::getrandom(&mut random).is_ok() {
        items.rotate_left(u32::from_le_bytes(random) as usize % items.len());
    }
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
        let hold = Hold { borrow: true, new_device: false };
        let held = hold_lease(app, &mut license, &mut device, until, hold, now, Some(&mut make_receipt)).await?;
        match held {
            Held::Yes => reply.map_or_else(|| answer(&license, &device), Ok).map(Some),
            Held::No(no_seat) => Err(no_seat.into()),
            Held::Raced => Ok(None),
        }
    })
    .await
}
