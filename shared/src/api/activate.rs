//! `POST /v1/activate`: bind a device to a license, consuming a seat atomically.

use super::idempotency::{read_keyed, receipt, Before, Idempotency};
use super::lease::{hold_lease, Held, Hold};
use super::refusals::Refusal;
use super::views::granted;
use super::{committed, redecided, store_error, App, Reply, Settled};
use crate::error::ApiError;
use crate::input::{DeviceName, HardwareId, LicenseKey, Nonce, Platform, Product};
use crate::model::{Device, License};
use crate::rules::{self, ActivationPlan, ActivationRequest, Eviction};
use crate::store::{reclaimed, ActivationWrite, Receipt, Sighting, Store};
use crate::time::Timestamp;
use lambda_http::http::StatusCode;
use serde::Deserialize;

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

/// The license as it stands once a new device is bound (`counted`: it took a node-locked seat).
fn after_activation(license: &License, counted: bool, now: Timestamp) -> License {
    let mut license = license.clone();
    if counted {
        license.times_activated += 1;
    }
    license.first_activated_at.get_or_insert(now);
    license.last_activated_at = Some(now);
    license.version += 1;
    license
}

impl ActivateRequest {
    pub(super) fn new_device(&self, now: Timestamp) -> Device {
        Device {
            hardware_id: self.hardware_id.clone(),
            name: self.device_name.clone(),
            platform: self.platform.clone(),
            is_vm: self.is_vm,
            activated_at: now,
            last_seen_at: now,
            lease_expires_at: None,
            borrowed_until: None,
            credential_until: None,
        }
    }
}

pub(super) async fn activate<S: Store>(
    app: &App<S>,
    request: ActivateRequest,
    idempotency: Option<&Idempotency>,
) -> Result<Reply, ApiError> {
    let answer = |license: &License, device: &Device, now: Timestamp| {
        granted(app, StatusCode::OK, (license, device), &request.product, request.nonce.as_ref(), now)
    };
    activate_device(app, &request, false, idempotency, &answer).await
}

/// How an activation answers, from the license and device as they stand after it and the moment
/// it was decided (made before the write, so it can be stored with it under an `Idempotency-Key`).
pub(super) type Answer<'a> = dyn Fn(&License, &Device, Timestamp) -> Result<Reply, ApiError> + Send + Sync + 'a;

/// Binds the device (or renews its floating lease) and answers. An `offline` activation refuses
/// floating licenses (a lease needs heartbeats an air-gapped machine cannot send).
pub(super) async fn activate_device<S: Store>(
    app: &App<S>,
    request: &ActivateRequest,
    offline: bool,
    idempotency: Option<&Idempotency>,
    answer: &Answer<'_>,
) -> Result<Reply, ApiError> {
    let rules_request =
        ActivationRequest { product: &request.product, hardware_id: &request.hardware_id, is_vm: request.is_vm };
    let rules_request = &rules_request;
    redecided(|| async move {
        let now = app.now();
        let (license, bound) = match read_keyed(app, &request.license_key, &request.hardware_id, idempotency).await? {
            Before::Answered(reply) => return Ok(Some(reply)),
            Before::Found(license, device) => (license, device),
        };
        let license = license.ok_or(Refusal::LicenseNotFound(&request.license_key))?;
        // The device itself, or when only a rotation could seat it, the devices it may replace.
        let devices = match bound {
            Some(device) => vec![device],
            None if rules::may_rotate(&license) => {
                let mut candidates = app
                    .store
                    .least_recently_seen(&license.license_key, rules::ROTATION_CANDIDATES)
                    .await
                    .map_err(store_error)?;
                // The consistent read says this device is not bound; an index lagging behind a
                // release may still list it, and must not make it "already active".
                candidates.retain(|d| d.hardware_id != request.hardware_id);
                candidates
            }
            None => Vec::new(),
        };
        let plan = rules::plan_activation(&license, &devices, rules_request, now)?;
        if offline && license.is_floating {
            return Err(Refusal::OfflineFloating.into());
        }
        let bound = devices.into_iter().find(|d| d.hardware_id == request.hardware_id);
        let written = Written { idempotency, answer, now };
        if license.is_floating {
            take_lease(app, request, license, bound, written).await
        } else {
            bind_device(app, request, license, bound, &plan, offline, written).await
        }
    })
    .await
}

/// How an activation's write is answered, and when it was decided.
#[derive(Clone, Copy)]
struct Written<'a> {
    idempotency: Option<&'a Idempotency>,
    answer: &'a Answer<'a>,
    now: Timestamp,
}

impl Written<'_> {
    /// The answer to a write that binds or seats a device, and the receipt to store with it.
    fn reply(&self, license: &License, device: &Device) -> Result<(Reply, Option<Receipt>), ApiError> {
        let reply = (self.answer)(license, device, self.now)?;
        let receipt = receipt(self.idempotency, &reply, self.now);
        Ok((reply, receipt))
    }
}

/// A node-locked activation's answer, or `None` when a concurrent writer won and the activation
/// must be re-decided. The device's credential horizon covers the credential about to be signed
/// (a token, or an `offline` license file) before it is.
async fn bind_device<S: Store>(
    app: &App<S>,
    request: &ActivateRequest,
    license: License,
    bound: Option<Device>,
    plan: &ActivationPlan,
    offline: bool,
    written: Written<'_>,
) -> Settled<Reply> {
    let now = written.now;
    let evict = match plan {
        ActivationPlan::AlreadyActive => {
            let mut device = bound.ok_or_else(|| ApiError::internal("planned device vanished"))?;
            let code = rules::check(&license, &request.product, Some(&device), now);
            let exp = rules::credential_exp(&license, code, offline, now);
            if let Some(horizon) = exp.and_then(|exp| rules::horizon_to_record(device.credential_until, exp)) {
                let sighting = Sighting { now, stale_before: now, credential_until: Some(horizon) };
                let touched = app.store.touch_device(&license.license_key, &device.hardware_id, &sighting).await;
                if committed(touched, ())?.is_none() {
                    return Ok(None);
                }
                (device.credential_until, device.last_seen_at) = (Some(horizon), now);
            }
            // Nothing changed that a retry could repeat: no receipt.
            return (written.answer)(&license, &device, now).map(Some);
        }
        ActivationPlan::NewSeat => None,
        ActivationPlan::Replace(eviction) => Some(eviction),
    };
    let after = after_activation(&license, evict.is_none(), now);
    let mut device = request.new_device(now);
    let code = rules::check(&after, &request.product, Some(&device), now);
    let exp = rules::credential_exp(&after, code, offline, now);
    // Coming back while an earlier binding's release is owed: that credential is still this device's.
    device.credential_until =
        exp.and_then(|exp| rules::horizon_to_record(None, exp)).max(reclaimed(&license, &device.hardware_id, now));
    let (reply, receipt) = written.reply(&after_release(after, evict, &device.hardware_id, now), &device)?;
    let write = ActivationWrite { license: &license, device: &device, evict, now, receipt: receipt.as_ref() };
    committed(app.store.activate(&write).await, reply)
}

/// The license once the activation's release entries are written: the eviction's place taken, and
/// the device's own earlier one given back.
fn after_release(mut license: License, evict: Option<&Eviction>, hardware_id: &HardwareId, now: Timestamp) -> License {
    if reclaimed(&license, hardware_id, now).is_some() {
        license.releases.remove(hardware_id);
    }
    if let Some((evicted, entry)) = evict.and_then(|e| e.allowance.as_ref().map(|entry| (&e.hardware_id, entry))) {
        entry.slot.apply(&mut license.releases, evicted, entry.until);
        license.transfer_count += 1;
    }
    license
}

/// A floating activation: the device (bound now, if it was not) takes or renews a lease.
async fn take_lease<S: Store>(
    app: &App<S>,
    request: &ActivateRequest,
    license: License,
    bound: Option<Device>,
    written: Written<'_>,
) -> Settled<Reply> {
    let now = written.now;
    // A floating device coming back does not take back its place in the release allowance: a
    // credential of its earlier binding (a borrow) may outlast the short lease it takes now, and
    // once that lapses and another device takes the seat, only the allowance still counts it.
    let new_device = bound.is_none();
    let mut license = if new_device { after_activation(&license, false, now) } else { license };
    let mut device = bound.unwrap_or_else(|| request.new_device(now));
    let until = rules::lease_end(&license, now);
    let mut reply = None;
    let mut make_receipt = |license: &License, device: &Device| {
        let (answer, receipt) = written.reply(license, device)?;
        reply = Some(answer);
        Ok(receipt)
    };
    let hold = Hold { borrow: false, new_device };
    match hold_lease(app, &mut license, &mut device, until, hold, now, Some(&mut make_receipt)).await? {
        // Nothing written (the lease runs long enough): nothing a retry could repeat.
        Held::Yes => reply.map_or_else(|| (written.answer)(&license, &device, now), Ok).map(Some),
        Held::No(no_seat) => Err(no_seat.into()),
        Held::Raced => Ok(None),
    }
}
