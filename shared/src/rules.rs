//! The license rules, as pure functions of (license, devices, request, now). No I/O, no clock:
//! the handlers read the store, ask these functions what to do, and write the answer.

use crate::input::{HardwareId, Product};
use crate::model::{
    ConsumptionPeriod, Counter, CounterKey, Device, Expiration, Feature, License, LicenseStatus, Metering, Period,
};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How long a positive token stays usable offline when the license sets no validation interval.
/// It is also how long a released device may keep running on its last token, so it is kept short
/// (README, "Seat integrity").
pub const DEFAULT_VALIDATION_INTERVAL_DAYS: u32 = 7;

/// How fresh a device's `last_seen_at` is kept: a check writes it only when it is older than this,
/// so a steady stream of checks stays one read each.
pub const LAST_SEEN_RESOLUTION_SECONDS: i64 = 3_600;

/// The moment before which a device's `last_seen_at` is stale and a check records the new sighting.
pub fn last_seen_stale_before(now: Timestamp) -> Timestamp {
    now.plus_seconds(-LAST_SEEN_RESOLUTION_SECONDS)
}

pub fn last_seen_is_stale(device: &Device, now: Timestamp) -> bool {
    device.last_seen_at < last_seen_stale_before(now)
}

/// The verdict of a check, signed into every token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CheckCode {
    Valid,
    GracePeriod,
    Expired,
    Suspended,
    Revoked,
    ProductMismatch,
    DeviceNotActivated,
    LeaseExpired,
}

impl CheckCode {
    pub fn is_valid(self) -> bool {
        matches!(self, CheckCode::Valid | CheckCode::GracePeriod)
    }
}

/// Where a license stands at a moment, before any device is considered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Active,
    GracePeriod,
    Expired,
    Suspended,
    Revoked,
}

/// The moment the license expires, if it does and the moment is known yet
/// (`days_after_activation` starts at the first activation).
pub fn expires_at(license: &License) -> Option<Timestamp> {
    match license.expiration {
        Expiration::Never => None,
        Expiration::OnDate { date } => Some(date),
        Expiration::DaysAfterCreation { days } => Some(license.created_at.plus_days(days)),
        Expiration::DaysAfterActivation { days } => license.first_activated_at.map(|at| at.plus_days(days)),
    }
}

/// The end of the grace period: the last moment the license is still honoured.
pub fn grace_ends_at(license: &License) -> Option<Timestamp> {
    expires_at(license).map(|at| at.plus_days(license.grace_period_days))
}

pub fn standing(license: &License, now: Timestamp) -> Standing {
    match license.status {
        LicenseStatus::Revoked => return Standing::Revoked,
        LicenseStatus::Suspended => return Standing::Suspended,
        LicenseStatus::Active => {}
    }
    match (expires_at(license), grace_ends_at(license)) {
        (Some(expiry), _) if now < expiry => Standing::Active,
        (Some(_), Some(grace_end)) if now < grace_end => Standing::GracePeriod,
        (Some(_), _) => Standing::Expired,
        (None, _) => Standing::Active,
    }
}

/// The check verdict: an ordered chain of early returns, most fundamental first.
pub fn check(license: &License, product: &Product, device: Option<&Device>, now: Timestamp) -> CheckCode {
    if &license.product != product {
        return CheckCode::ProductMismatch;
    }
    let standing = standing(license, now);
    match standing {
        Standing::Revoked => return CheckCode::Revoked,
        Standing::Suspended => return CheckCode::Suspended,
        Standing::Expired => return CheckCode::Expired,
        Standing::Active | Standing::GracePeriod => {}
    }
    if device.is_none() {
        return CheckCode::DeviceNotActivated;
    }
    if standing == Standing::GracePeriod {
        CheckCode::GracePeriod
    } else {
        CheckCode::Valid
    }
}

/// What an activation request asks for, as the rules need it.
#[derive(Debug, Clone)]
pub struct ActivationRequest<'a> {
    pub product: &'a Product,
    pub hardware_id: &'a HardwareId,
    pub is_vm: bool,
}

/// What an allowed activation must write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActivationPlan {
    /// The device holds a seat already: succeed without consuming another.
    AlreadyActive,
    /// Take a free seat.
    NewSeat,
    /// All seats are taken and rotation is on: release this device and take its seat.
    Replace(Eviction),
}

/// The device a rotation releases, as read: its credential horizon is a condition of the write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eviction {
    pub hardware_id: HardwareId,
    pub credential_until: Option<Timestamp>,
    /// Set when the evicted device may still run on a valid credential: the release takes a place
    /// in the allowance and counts a transfer.
    pub allowance: Option<AllowanceEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActivationRefusal {
    ProductMismatch,
    Suspended,
    Revoked,
    Expired,
    VmNotAllowed,
    Frozen { until: Timestamp },
    LimitReached { max: u32 },
}

/// Whether the license may take on a device for `product` at all (right product, active, not expired).
pub fn usable(license: &License, product: &Product, now: Timestamp) -> Result<(), ActivationRefusal> {
    if &license.product != product {
        return Err(ActivationRefusal::ProductMismatch);
    }
    match standing(license, now) {
        Standing::Revoked => Err(ActivationRefusal::Revoked),
        Standing::Suspended => Err(ActivationRefusal::Suspended),
        Standing::Expired => Err(ActivationRefusal::Expired),
        Standing::Active | Standing::GracePeriod => Ok(()),
    }
}

pub fn plan_activation(
    license: &License,
    devices: &[Device],
    request: &ActivationRequest<'_>,
    now: Timestamp,
) -> Result<ActivationPlan, ActivationRefusal> {
    usable(license, request.product, now)?;
    if devices.iter().any(|d| &d.hardware_id == request.hardware_id) {
        return Ok(ActivationPlan::AlreadyActive);
    }
    if license.prevent_vm && request.is_vm {
        return Err(ActivationRefusal::VmNotAllowed);
    }
    if license.is_floating {
        // A floating seat is a lease, not a device: `plan_lease` decides whether one is free.
        return Ok(ActivationPlan::NewSeat);
    }
    if let Some(until) = frozen_until(license) {
        if now < until {
            return Err(ActivationRefusal::Frozen { until });
        }
    }
    if license.allow_unlimited_activations || license.times_activated < license.max_activations {
        return Ok(ActivationPlan::NewSeat);
    }
    // Over-deployed (the vendor lowered the seats): a rotation would swap one device for another
    // while more than the seats stay bound, raising what runs past what was sold.
    if license.device_rotation && license.times_activated <= license.max_activations {
        // A device coming back gives back its own place in the allowance in the same write.
        let mut after = license.clone();
        after.releases.retain(|holder, until| holder != request.hardware_id || *until <= now);
        if let Some(eviction) = plan_eviction(&after, devices, now) {
            return Ok(ActivationPlan::Replace(eviction));
        }
    }
    Err(ActivationRefusal::LimitReached { max: license.max_activations })
}

/// The order of "least recently seen": by last sighting, then by activation.
pub fn seen_order(device: &Device) -> (Timestamp, Timestamp) {
    (device.last_seen_at, device.activated_at)
}

/// How many of the least recently seen devices a rotation chooses from: it reads those, never
/// every device, so an activation costs the same on a license of any size.
pub const ROTATION_CANDIDATES: u32 = 25;

/// Whether a new device on `license` could only be seated by rotating another out, so that the
/// activation must read [`ROTATION_CANDIDATES`] devices to plan (`plan_activation`'s rotation branch).
pub fn may_rotate(license: &License) -> bool {
    !license.is_floating
        && !license.allow_unlimited_activations
        && license.device_rotation
        && license.times_activated == license.max_activations
}

/// Which device a rotation replaces, from `devices`: the least recently seen ones (at most
/// [`ROTATION_CANDIDATES`]). A device whose credentials have all lapsed goes first (the least
/// recently seen of them): releasing it lets nothing more run. Otherwise the least recently seen
/// device, if the release allowance has room and a transfer is left, since it can run on until its
/// last credential lapses: rotation is a client's release too.
fn plan_eviction(license: &License, devices: &[Device], now: Timestamp) -> Option<Eviction> {
    let by_age = |d: &&Device| seen_order(d);
    let lapsed = devices.iter().filter(|d| !credential_is_live(credential_until(license, d), now)).min_by_key(by_age);
    if let Some(device) = lapsed {
        return Some(Eviction {
            hardware_id: device.hardware_id.clone(),
            credential_until: device.credential_until,
            allowance: None,
        });
    }
    if !transfer_left(license) {
        return None;
    }
    let device = devices.iter().min_by_key(by_age)?;
    let allowance = plan_release(license, &device.hardware_id, credential_until(license, device), now).ok()?;
    Some(Eviction { hardware_id: device.hardware_id.clone(), credential_until: device.credential_until, allowance })
}

fn transfer_left(license: &License) -> bool {
    license.max_transfers.is_none_or(|max| license.transfer_count < max)
}

/// After each new activation, further new activations wait `freeze_days`.
pub fn frozen_until(license: &License) -> Option<Timestamp> {
    match (license.freeze_days, license.last_activated_at) {
        (0, _) | (_, None) => None,
        (days, Some(at)) => Some(at.plus_days(days)),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeactivationRefusal {
    ProductMismatch,
    DeviceNotFound,
    TransferLimitReached { max: u32 },
    ReleaseLimitReached(AllowanceUsed),
}

/// A client's own deactivation frees the seat and counts as a transfer, except on a floating
/// license, whose seats are leases that come and go (returning one is never a transfer). Either
/// way, a device that may still run on a valid credential takes a place in the release allowance
/// until that credential lapses (`None`: it cannot run on, so nothing is owed).
pub fn plan_deactivation(
    license: &License,
    product: &Product,
    device: Option<&Device>,
    now: Timestamp,
) -> Result<Option<AllowanceEntry>, DeactivationRefusal> {
    if &license.product != product {
        return Err(DeactivationRefusal::ProductMismatch);
    }
    let device = device.ok_or(DeactivationRefusal::DeviceNotFound)?;
    if !license.is_floating && !transfer_left(license) {
        return Err(DeactivationRefusal::TransferLimitReached { max: license.max_transfers.unwrap_or(0) });
    }
    plan_release(license, &device.hardware_id, credential_until(license, device), now)
        .map_err(DeactivationRefusal::ReleaseLimitReached)
}

/// How long a credential horizon is recorded beyond the token being signed, so that a device
/// checking steadily writes a new horizon at most once an hour (with its `last_seen_at`).
pub const CREDENTIAL_SLACK_SECONDS: i64 = LAST_SEEN_RESOLUTION_SECONDS;

/// Until when `device` may hold a valid credential: its recorded horizon, and on a floating
/// license its lease (tokens never outlast it). A device recorded before horizons were kept is
/// assumed to hold a token from its last sighting.
pub fn credential_until(license: &License, device: &Device) -> Option<Timestamp> {
    let legacy = || {
        let interval = license.validation_interval_days.unwrap_or(DEFAULT_VALIDATION_INTERVAL_DAYS);
        device.last_seen_at.plus_seconds(CREDENTIAL_SLACK_SECONDS).plus_days(interval)
    };
    if license.is_floating {
        return device.lease_expires_at.max(device.credential_until);
    }
    Some(device.credential_until.unwrap_or_else(legacy))
}

pub fn credential_is_live(until: Option<Timestamp>, now: Timestamp) -> bool {
    until.is_some_and(|until| until > now)
}

/// Until when a valid credential signed at `now` for a node-locked device lasts: a verdict token,
/// or an `offline` license file. `None` when the verdict is negative (no credential) or the license
/// is floating (its lease bounds its tokens).
pub fn credential_exp(license: &License, code: CheckCode, offline: bool, now: Timestamp) -> Option<Timestamp> {
    if !code.is_valid() || license.is_floating {
        return None;
    }
    Some(if offline { offline_expires_at(license, now) } else { token_expires_at(license, code, None, now) })
}

/// The horizon to record before signing a credential that expires at `exp`, when the recorded
/// one (`recorded`) falls short of it; `None` when nothing needs writing.
pub fn horizon_to_record(recorded: Option<Timestamp>, exp: Timestamp) -> Option<Timestamp> {
    recorded.is_none_or(|recorded| recorded < exp).then(|| exp.plus_seconds(CREDENTIAL_SLACK_SECONDS))
}

/// A place in the release allowance: the released device's entry until its credential lapses,
/// with the lapsed entries it removes to make room (each provided it still reads as observed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowanceEntry {
    pub slot: Slot,
    pub until: Timestamp,
}

/// Every place in the release allowance is held by a device still able to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllowanceUsed {
    pub max: u32,
    /// When the first place frees up (absent when the allowance is 0).
    pub frees_at: Option<Timestamp>,
}

/// Whether releasing `hardware_id`, whose credentials may be valid until `credential_until`, is
/// owed to the allowance (an unlimited license has no seats to multiply, so owes nothing).
pub fn plan_release(
    license: &License,
    hardware_id: &HardwareId,
    credential_until: Option<Timestamp>,
    now: Timestamp,
) -> Result<Option<AllowanceEntry>, AllowanceUsed> {
    let Some(until) = credential_until.filter(|until| *until > now) else { return Ok(None) };
    if license.allow_unlimited_activations {
        return Ok(None);
    }
    let max = license.release_allowance;
    match plan_slot(&license.releases, hardware_id, max, now) {
        Some(slot) => {
            let until = slot.own.map_or(until, |own| own.max(until));
            Ok(Some(AllowanceEntry { slot, until }))
        }
        None => Err(AllowanceUsed { max, frees_at: allowance_frees_at(license, hardware_id, until, now) }),
    }
}

/// When a release refused for want of room could succeed: once enough places lapse to leave one
/// (after a vendor lowered the allowance, more than the first), and at the latest once the device's
/// own credential lapses (then it owes nothing).
fn allowance_frees_at(
    license: &License,
    hardware_id: &HardwareId,
    until: Timestamp,
    now: Timestamp,
) -> Option<Timestamp> {
    let mut live: Vec<Timestamp> = license
        .releases
        .iter()
        .filter(|(holder, end)| *holder != hardware_id && **end > now)
        .map(|(_, end)| *end)
        .collect();
    live.sort_unstable();
    // Room for one more entry: at most `max - 1` other live places may remain.
    let must_lapse = (live.len() + 1).checked_sub(license.release_allowance as usize).filter(|n| *n > 0);
    let room_at = match must_lapse {
        Some(n) if license.release_allowance > 0 => live.get(n - 1).copied(),
        Some(_) => None,
        None => Some(now),
    };
    Some(room_at.map_or(until, |at| at.min(until)))
}

/// The live releases: devices a client released that may still run.
pub fn releases_in_use(license: &License, now: Timestamp) -> u32 {
    license.releases.values().filter(|end| **end > now).count() as u32
}

/// How an entry for `holder` fits in a map of expiring entries (leases, releases) that may hold at
/// most `max` entries: `holder`'s own entry (as read) is replaced, and entries that have ended are
/// removed, the oldest first, as many as needed. `None`: the live entries leave no room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub own: Option<Timestamp>,
    pub take_over: Vec<(HardwareId, Timestamp)>,
}

impl Slot {
    /// How the number of entries changes when the slot is written: one more for a new entry, one
    /// fewer per entry taken over.
    pub fn count_change(&self) -> i64 {
        i64::from(self.own.is_none()) - self.take_over.len() as i64
    }

    /// The map once the slot is written: the entries taken over removed, `holder`'s set to `until`.
    pub fn apply(&self, entries: &mut BTreeMap<HardwareId, Timestamp>, holder: &HardwareId, until: Timestamp) {
        for (taken, _) in &self.take_over {
            entries.remove(taken);
        }
        entries.insert(holder.clone(), until);
    }
}

pub fn plan_slot(
    entries: &BTreeMap<HardwareId, Timestamp>,
    holder: &HardwareId,
    max: u32,
    now: Timestamp,
) -> Option<Slot> {
    let own = entries.get(holder).copied();
    let entries_after = entries.len() + usize::from(own.is_none());
    let excess = entries_after.saturating_sub(max as usize);
    let mut lapsed: Vec<(HardwareId, Timestamp)> = entries
        .iter()
        .filter(|(other, end)| *other != holder && !lease_is_live(**end, now))
        .map(|(other, end)| (other.clone(), *end))
        .collect();
    if lapsed.len() < excess {
        return None;
    }
    lapsed.sort_by_key(|(other, end)| (*end, other.clone()));
    lapsed.truncate(excess);
    Some(Slot { own, take_over: lapsed })
}

/// How old an offline request file may be when it is submitted, and how far ahead of the
/// server's clock its `created_at` may lie (an air-gapped machine's clock drifts).
pub const OFFLINE_REQUEST_MAX_AGE_DAYS: u32 = 7;
pub const OFFLINE_REQUEST_MAX_SKEW_SECONDS: i64 = 86_400;

/// Whether an offline request written at `created_at` may still be submitted at `now`.
pub fn offline_request_is_fresh(created_at: Timestamp, now: Timestamp) -> bool {
    created_at.plus_days(OFFLINE_REQUEST_MAX_AGE_DAYS) >= now
        && created_at <= now.plus_seconds(OFFLINE_REQUEST_MAX_SKEW_SECONDS)
}

/// How long a floating lease lasts when the license sets no `floating_timeout_minutes`.
pub const DEFAULT_FLOATING_TIMEOUT_MINUTES: u32 = 15;

/// The end of a lease taken or renewed at `now`.
pub fn lease_end(license: &License, now: Timestamp) -> Timestamp {
    let minutes = license.floating_timeout_minutes.unwrap_or(DEFAULT_FLOATING_TIMEOUT_MINUTES);
    now.plus_seconds(i64::from(minutes) * 60)
}

/// A lease is live until its end; at its end the seat is free for anyone.
pub fn lease_is_live(end: Timestamp, now: Timestamp) -> bool {
    end > now
}

/// The floating seats held: the leases, live or lapsed but not taken over yet (those still kept
/// the earlier way included). It bounds the live leases from above (counting them would read every
/// lease); a lapsed lease's seat is taken over by the next device that needs it.
pub fn seats_held(license: &License) -> u32 {
    license.leases_held.saturating_add(license.unmoved_leases.len() as u32)
}

/// A lease another device holds (lapsed, when a takeover is planned), as read: it is taken over
/// only if it still reads so.
pub type HeldLease = (HardwareId, Timestamp);

/// What a lease write must do, with the stored values it depends on (its conditions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeasePlan {
    /// The device's lease is live: move its end to `until` (never earlier), provided it still
    /// reads `observed`. The number of leases does not change.
    Renew { observed: Timestamp, until: Timestamp },
    /// Take a seat until `until`: the device's own lapsed lease (`slot.own`, provided it still
    /// reads so), or a new one counted by `leases_held`, taking over the lapsed leases in
    /// `slot.take_over` (each provided it still reads as observed) so that the leases never
    /// outnumber the seats.
    Acquire { slot: Slot, until: Timestamp },
}

impl LeasePlan {
    pub fn until(&self) -> Timestamp {
        match self {
            LeasePlan::Renew { until, .. } | LeasePlan::Acquire { until, .. } => *until,
        }
    }

    /// Whether storing the plan would change nothing (a live lease that already lasts long enough).
    pub fn is_noop(&self) -> bool {
        matches!(self, LeasePlan::Renew { observed, until } if observed == until)
    }

    /// How the number of leases changes: one more for a new lease, one fewer per lease taken over.
    pub fn held_change(&self) -> i64 {
        match self {
            LeasePlan::Renew { .. } => 0,
            LeasePlan::Acquire { slot, .. } => slot.count_change(),
        }
    }

    /// The license and device once the plan is written.
    pub fn apply(&self, license: &mut License, device: &mut Device) {
        license.leases_held = (i64::from(license.leases_held) + self.held_change()).max(0) as u32;
        device.lease_expires_at = Some(self.until());
        if let LeasePlan::Acquire { .. } = self {
            device.credential_until = Some(horizon_on_acquire(device.credential_until, self.until()));
        }
    }
}

/// The credential horizon a device records when it takes a lease until `until`: at least the
/// lease's end, and never the horizon it had. (So that a release decided on the device as it was
/// before the lease, by a function version still running from before leases were items, fails its
/// condition on the horizon instead of releasing the device without its lease.)
pub fn horizon_on_acquire(recorded: Option<Timestamp>, until: Timestamp) -> Timestamp {
    match recorded {
        Some(recorded) if recorded >= until => recorded.plus_seconds(1),
        _ => until,
    }
}

/// Every floating seat is held by a live lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoFreeSeat {
    pub max: u32,
}

/// How many lapsed leases of other devices a device holding `own` (its lease as read, if any) must
/// take over to hold a seat: as many as keep the leases within the seats. One when the seats are
/// all held, more only after the vendor lowered them; none while there is room, or for a live lease.
pub fn leases_to_take_over(license: &License, own: Option<Timestamp>, now: Timestamp) -> usize {
    if own.is_some_and(|end| lease_is_live(end, now)) {
        return 0;
    }
    let after = license.leases_held as usize + usize::from(own.is_none());
    after.saturating_sub(license.max_activations as usize)
}

/// How `hardware_id`, holding `own` (its lease as read, if any), gets (or keeps) a floating seat
/// until at least `until`, given `lapsed`: lapsed leases of the license, in the order to take
/// them over.
///
/// A live lease is renewed; it is never cut short (a borrow outlasts heartbeats). Otherwise a seat
/// is taken: the device's own lapsed lease or a new one, taking over as many lapsed leases as
/// [`leases_to_take_over`] says. A live lease is never taken over, so a heartbeat never culls a
/// machine that is still running.
pub fn plan_lease(
    license: &License,
    hardware_id: &HardwareId,
    own: Option<Timestamp>,
    lapsed: &[HeldLease],
    until: Timestamp,
    now: Timestamp,
) -> Result<LeasePlan, NoFreeSeat> {
    if let Some(observed) = own.filter(|end| lease_is_live(*end, now)) {
        return Ok(LeasePlan::Renew { observed, until: observed.max(until) });
    }
    let needed = leases_to_take_over(license, own, now);
    let take_over: Vec<HeldLease> = lapsed
        .iter()
        .filter(|(other, end)| other != hardware_id && !lease_is_live(*end, now))
        .take(needed)
        .cloned()
        .collect();
    if take_over.len() < needed {
        return Err(NoFreeSeat { max: license.max_activations });
    }
    Ok(LeasePlan::Acquire { slot: Slot { own, take_over }, until })
}

/// Whether a borrow of `hours` is allowed: only on floating licenses that allow it, up to their limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BorrowRefusal {
    NotAllowed,
    TooLong { max: u32 },
}

pub fn plan_borrow(license: &License, hours: u32) -> Result<(), BorrowRefusal> {
    if !license.is_floating || !license.can_borrow {
        return Err(BorrowRefusal::NotAllowed);
    }
    let max = license.max_borrow_hours.unwrap_or(0);
    if hours == 0 || hours > max {
        return Err(BorrowRefusal::TooLong { max });
    }
    Ok(())
}

/// When the period counting at `now` ends (midnight UTC; weeks start on Monday).
pub fn period_ends_at(period: Option<ConsumptionPeriod>, now: Timestamp) -> Option<Timestamp> {
    let date = now.date()?;
    let next = match period? {
        ConsumptionPeriod::Day => date.next_day()?,
        ConsumptionPeriod::Week => {
            date.checked_add(time::Duration::days(7 - i64::from(date.weekday().number_days_from_monday())))?
        }
        ConsumptionPeriod::Month => {
            let (year, month) = if date.month() == time::Month::December {
                (date.year() + 1, time::Month::January)
            } else {
                (date.year(), date.month().next())
            };
            time::Date::from_calendar_date(year, month, 1).ok()?
        }
        ConsumptionPeriod::Year => time::Date::from_calendar_date(date.year() + 1, time::Month::January, 1).ok()?,
    };
    Some(Timestamp::midnight(next))
}

/// The most that may be used in a period: `max_consumptions`, plus `max_overages` when overages are
/// allowed. `None`: no limit (no maximum, or overages without end).
pub fn consumption_limit(terms: &Metering) -> Option<u64> {
    let max = terms.max_consumptions?;
    match (terms.allow_overages, terms.max_overages) {
        (false, _) => Some(max),
        (true, Some(overages)) => Some(max.saturating_add(overages)),
        (true, None) => None,
    }
}

/// What has been used in the period counting at `now` (a counter of an earlier period counts 0).
pub fn used_now(terms: &Metering, counter: Option<&Counter>, now: Timestamp) -> u64 {
    let period = Period::at(terms.consumption_period, now);
    counter.filter(|c| c.period == period).map_or(0, |c| c.used)
}

/// A consumption to store: add `amount` to counter `key` in `period`, provided the counter still
/// reads `observed` as to its period (and, with a limit, has room for `amount`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumptionPlan {
    pub key: CounterKey,
    pub period: Period,
    pub amount: u64,
    /// The counter as read; a different period than `period` (or none) means it starts again.
    pub observed: Option<Counter>,
    pub limit: Option<u64>,
    pub used_after: u64,
    /// Whether the license had any counter when read (else the counters are written whole).
    pub counters_exist: bool,
}

impl ConsumptionPlan {
    /// Whether the stored counter is of this period already (then it is added to, else replaced).
    pub fn continues(&self) -> bool {
        self.observed.as_ref().is_some_and(|c| c.period == self.period)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumptionLimitReached {
    pub used: u64,
    pub limit: u64,
}

/// How to add `amount` to the counter `key` (the license's, or a feature's) of `license`.
pub fn plan_consumption(
    license: &License,
    key: &CounterKey,
    terms: &Metering,
    amount: u64,
    now: Timestamp,
) -> Result<ConsumptionPlan, ConsumptionLimitReached> {
    let counter = license.consumption.get(key);
    let used = used_now(terms, counter, now);
    let limit = consumption_limit(terms);
    let used_after = used.checked_add(amount).ok_or(ConsumptionLimitReached { used, limit: u64::MAX })?;
    if let Some(limit) = limit.filter(|limit| used_after > *limit) {
        return Err(ConsumptionLimitReached { used, limit });
    }
    Ok(ConsumptionPlan {
        key: key.clone(),
        period: Period::at(terms.consumption_period, now),
        amount,
        observed: counter.cloned(),
        limit,
        used_after,
        counters_exist: !license.consumption.is_empty(),
    })
}

/// Why a feature cannot be used now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FeatureRefusal {
    NotEntitled,
    FeatureExpired,
    ConsumptionLimitReached,
}

/// The license's feature `code`, if the license includes it and it has not expired at `now`.
pub fn feature_entitled<'a>(license: &'a License, code: &str, now: Timestamp) -> Result<&'a Feature, FeatureRefusal> {
    let feature = license.feature(code).ok_or(FeatureRefusal::NotEntitled)?;
    if feature.expiry_date.is_some_and(|expiry| expiry <= now) {
        return Err(FeatureRefusal::FeatureExpired);
    }
    Ok(feature)
}

/// Whether the license's feature `code` may be used at `now` (entitled, not expired, not used up).
pub fn feature_usable<'a>(license: &'a License, code: &str, now: Timestamp) -> Result<&'a Feature, FeatureRefusal> {
    let feature = feature_entitled(license, code, now)?;
    let terms = feature.metering();
    let used = used_now(&terms, license.consumption.get(&CounterKey::Feature(feature.code.clone())), now);
    if consumption_limit(&terms).is_some_and(|limit| used >= limit) {
        return Err(FeatureRefusal::ConsumptionLimitReached);
    }
    Ok(feature)
}

/// How long an offline license file lasts at most before the machine needs a new one.
pub const OFFLINE_VALIDITY_DAYS: u32 = 365;

/// An offline (air-gapped) license file lasts until the license's grace period ends, and at most
/// [`OFFLINE_VALIDITY_DAYS`]: the validation interval does not apply (the machine cannot revalidate).
pub fn offline_expires_at(license: &License, now: Timestamp) -> Timestamp {
    let cap = now.plus_days(OFFLINE_VALIDITY_DAYS);
    grace_ends_at(license).map_or(cap, |end| end.min(cap))
}

/// How long a token stays usable offline.
///
/// A positive verdict lasts until the earliest of: the end of the grace period, the next required
/// validation, the device's lease end. A negative verdict cannot take the license's expiry (it has
/// passed, and a token whose `exp` precedes its `iat` fails every JOSE library, so the client could
/// not verify the refusal); it lasts one validation interval, which is harmless: it only says "no".
///
/// A borrowed lease is the exception: the client was granted the seat offline until the borrow
/// ends, so the validation interval does not cut it short (the license's end still does).
pub fn token_expires_at(license: &License, code: CheckCode, lease: Option<TokenLease>, now: Timestamp) -> Timestamp {
    let interval = license.validation_interval_days.unwrap_or(DEFAULT_VALIDATION_INTERVAL_DAYS);
    let next_validation = now.plus_days(interval);
    if !code.is_valid() {
        return next_validation;
    }
    let revalidate = match lease {
        Some(TokenLease { borrowed: true, .. }) => None,
        _ => Some(next_validation),
    };
    let lease_end = lease.map(|l| l.ends_at);
    [revalidate, grace_ends_at(license), lease_end].into_iter().flatten().min().unwrap_or(next_validation)
}

/// The floating lease a token speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenLease {
    pub ends_at: Timestamp,
    pub borrowed: bool,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::input::LicenseKey;
    use crate::model::LicenseType;

    pub const NOW: Timestamp = Timestamp::from_unix(1_800_000_000);
    const DAY: i64 = crate::time::SECONDS_PER_DAY;

    pub fn license() -> License {
        let key = LicenseKey::parse("AAAAA-BBBBB").unwrap();
        let created = NOW.plus_seconds(-100 * DAY);
        License::new(key, "lic_test".into(), Product::parse("editor").unwrap(), LicenseType::Perpetual, 2, created)
    }

    pub fn device(hwid: &str, last_seen_days_ago: i64) -> Device {
        Device {
            hardware_id: HardwareId::parse(hwid).unwrap(),
            name: None,
            platform: None,
            is_vm: false,
            activated_at: NOW.plus_seconds(-200 * DAY),
            last_seen_at: NOW.plus_seconds(-last_seen_days_ago * DAY),
            lease_expires_at: None,
            borrowed_until: None,
            credential_until: None,
        }
    }

    fn product(name: &str) -> Product {
        Product::parse(name).unwrap()
    }

    #[test]
    fn expiry_follows_the_expiration_type() {
        let cases: Vec<(Expiration, Option<Timestamp>, Option<Timestamp>)> = vec![
            (Expiration::Never, Some(NOW), None),
            (Expiration::OnDate { date: NOW.plus_days(3) }, None, Some(NOW.plus_days(3))),
            (Expiration::DaysAfterCreation { days: 10 }, None, Some(NOW.plus_seconds(-90 * DAY))),
            (Expiration::DaysAfterActivation { days: 10 }, None, None),
            (Expiration::DaysAfterActivation { days: 10 }, Some(NOW), Some(NOW.plus_days(10))),
        ];
        for (expiration, first_activated_at, expected) in cases {
            let l = License { expiration, first_activated_at, ..license() };
            assert_eq!(expires_at(&l), expected, "{expiration:?} first activated {first_activated_at:?}");
        }
    }

    #[test]
    fn standing_follows_status_expiry_and_grace() {
        let on = |days_from_now: i64| Expiration::OnDate { date: NOW.plus_seconds(days_from_now * DAY) };
        let cases = [
            (LicenseStatus::Active, Expiration::Never, 0, Standing::Active),
            (LicenseStatus::Active, on(1), 0, Standing::Active),
            (LicenseStatus::Active, on(0), 0, Standing::Expired),
            (LicenseStatus::Active, on(-1), 0, Standing::Expired),
            (LicenseStatus::Active, on(-1), 3, Standing::GracePeriod),
            (LicenseStatus::Active, on(-3), 3, Standing::Expired),
            (LicenseStatus::Suspended, Expiration::Never, 0, Standing::Suspended),
            (LicenseStatus::Revoked, on(-10), 0, Standing::Revoked),
        ];
        for (status, expiration, grace_period_days, expected) in cases {
            let l = License { status, expiration, grace_period_days, ..license() };
            assert_eq!(standing(&l, NOW), expected, "{status:?} {expiration:?} grace {grace_period_days}");
        }
    }

    #[test]
    fn check_verdicts() {
        let expired = License { expiration: Expiration::OnDate { date: NOW.plus_seconds(-DAY) }, ..license() };
        let in_grace = License { grace_period_days: 5, ..expired.clone() };
        let suspended = License { status: LicenseStatus::Suspended, ..license() };
        let revoked = License { status: LicenseStatus::Revoked, ..license() };
        let d = device("pc-1", 0);
        let cases = [
            (license(), "editor", Some(&d), CheckCode::Valid),
            (license(), "other", Some(&d), CheckCode::ProductMismatch),
            (license(), "editor", None, CheckCode::DeviceNotActivated),
            (expired.clone(), "editor", Some(&d), CheckCode::Expired),
            (expired, "editor", None, CheckCode::Expired),
            (in_grace, "editor", Some(&d), CheckCode::GracePeriod),
            (suspended, "editor", Some(&d), CheckCode::Suspended),
            (revoked, "editor", Some(&d), CheckCode::Revoked),
        ];
        for (l, p, dev, expected) in cases {
            assert_eq!(check(&l, &product(p), dev, NOW), expected, "{:?} {p} {:?}", l.status, dev.is_some());
        }
        assert!(CheckCode::GracePeriod.is_valid() && !CheckCode::DeviceNotActivated.is_valid());
    }

    #[allow(clippy::type_complexity)]
    #[test]
    fn activation_plans_and_refusals() {
        let hw = HardwareId::parse("new-pc").unwrap();
        let editor = product("editor");
        let request = ActivationRequest { product: &editor, hardware_id: &hw, is_vm: false };
        let vm_request = ActivationRequest { is_vm: true, ..request.clone() };
        let full = License { times_activated: 2, ..license() };
        let two = vec![device("old-pc", 9), device("recent-pc", 1)];
        let cases: Vec<(&str, License, Vec<Device>, &ActivationRequest, Result<ActivationPlan, ActivationRefusal>)> = vec![
            ("free seat", license(), vec![], &request, Ok(ActivationPlan::NewSeat)),
            (
                "same device again",
                full.clone(),
                vec![device("new-pc", 0), device("x", 0)],
                &request,
                Ok(ActivationPlan::AlreadyActive),
            ),
            ("limit reached", full.clone(), two.clone(), &request, Err(ActivationRefusal::LimitReached { max: 2 })),
            (
                "unlimited",
                License { allow_unlimited_activations: true, ..full.clone() },
                two.clone(),
                &request,
                Ok(ActivationPlan::NewSeat),
            ),
            (
                "rotation evicts least recently seen",
                License { device_rotation: true, ..full.clone() },
                two.clone(),
                &request,
                Ok(ActivationPlan::Replace(Eviction {
                    hardware_id: HardwareId::parse("old-pc").unwrap(),
                    credential_until: None,
                    allowance: None,
                })),
            ),
            (
                "wrong product",
                License { product: product("other"), ..license() },
                vec![],
                &request,
                Err(ActivationRefusal::ProductMismatch),
            ),
            (
                "suspended",
                License { status: LicenseStatus::Suspended, ..license() },
                vec![],
                &request,
                Err(ActivationRefusal::Suspended),
            ),
            (
                "revoked",
                License { status: LicenseStatus::Revoked, ..license() },
                vec![],
                &request,
                Err(ActivationRefusal::Revoked),
            ),
            (
                "expired",
                License { expiration: Expiration::OnDate { date: NOW }, ..license() },
                vec![],
                &request,
                Err(ActivationRefusal::Expired),
            ),
            (
                "vm refused",
                License { prevent_vm: true, ..license() },
                vec![],
                &vm_request,
                Err(ActivationRefusal::VmNotAllowed),
            ),
            ("vm allowed", license(), vec![], &vm_request, Ok(ActivationPlan::NewSeat)),
            (
                "frozen after last activation",
                License { freeze_days: 3, last_activated_at: Some(NOW.plus_seconds(-DAY)), ..license() },
                vec![],
                &request,
                Err(ActivationRefusal::Frozen { until: NOW.plus_days(2) }),
            ),
            (
                "freeze over",
                License { freeze_days: 3, last_activated_at: Some(NOW.plus_seconds(-3 * DAY)), ..license() },
                vec![],
                &request,
                Ok(ActivationPlan::NewSeat),
            ),
        ];
        for (name, l, devices, req, expected) in cases {
            assert_eq!(plan_activation(&l, &devices, req, NOW), expected, "{name}");
        }
    }

    #[test]
    fn deactivation_rules() {
        let editor = product("editor");
        let lapsed = device("pc", 30);
        assert_eq!(plan_deactivation(&license(), &editor, Some(&lapsed), NOW), Ok(None), "nothing left to run on");
        assert_eq!(plan_deactivation(&license(), &editor, None, NOW), Err(DeactivationRefusal::DeviceNotFound));
        assert_eq!(
            plan_deactivation(&license(), &product("x"), Some(&lapsed), NOW),
            Err(DeactivationRefusal::ProductMismatch)
        );
        let capped = License { max_transfers: Some(2), transfer_count: 2, ..license() };
        assert_eq!(
            plan_deactivation(&capped, &editor, Some(&lapsed), NOW),
            Err(DeactivationRefusal::TransferLimitReached { max: 2 })
        );
        let room = License { transfer_count: 1, ..capped.clone() };
        assert_eq!(plan_deactivation(&room, &editor, Some(&lapsed), NOW), Ok(None));
        let floating = License { is_floating: true, ..capped };
        assert_eq!(
            plan_deactivation(&floating, &editor, Some(&lapsed), NOW),
            Ok(None),
            "returning a lease is not a transfer"
        );
    }

    #[test]
    fn releasing_a_device_that_can_still_run_takes_a_place_in_the_allowance() {
        let editor = product("editor");
        let live = Device { credential_until: Some(NOW.plus_days(5)), ..device("pc", 0) };
        let planned = plan_deactivation(&license(), &editor, Some(&live), NOW).unwrap().unwrap();
        assert_eq!(planned, AllowanceEntry { slot: Slot { own: None, take_over: vec![] }, until: NOW.plus_days(5) });
        let full = License { releases: [(hw("other"), NOW.plus_days(2))].into_iter().collect(), ..license() };
        assert_eq!(
            plan_deactivation(&full, &editor, Some(&live), NOW),
            Err(DeactivationRefusal::ReleaseLimitReached(AllowanceUsed { max: 1, frees_at: Some(NOW.plus_days(2)) }))
        );
        let soon = Device { credential_until: Some(NOW.plus_days(1)), ..device("pc", 0) };
        assert_eq!(
            plan_deactivation(&full, &editor, Some(&soon), NOW),
            Err(DeactivationRefusal::ReleaseLimitReached(AllowanceUsed { max: 1, frees_at: Some(NOW.plus_days(1)) })),
            "its own credential lapses first: then it owes nothing"
        );
        let lowered = License {
            release_allowance: 1,
            releases: [(hw("a"), NOW.plus_days(2)), (hw("b"), NOW.plus_days(3))].into_iter().collect(),
            ..license()
        };
        assert_eq!(
            plan_deactivation(&lowered, &editor, Some(&live), NOW),
            Err(DeactivationRefusal::ReleaseLimitReached(AllowanceUsed { max: 1, frees_at: Some(NOW.plus_days(3)) })),
            "after the vendor lowered the allowance, both places must lapse (or the device's own credential)"
        );
        let lapsed_entry =
            License { releases: [(hw("other"), NOW.plus_seconds(-1))].into_iter().collect(), ..license() };
        let planned = plan_deactivation(&lapsed_entry, &editor, Some(&live), NOW).unwrap().unwrap();
        assert_eq!(planned.slot.take_over, vec![(hw("other"), NOW.plus_seconds(-1))], "a lapsed place is reused");
        let none = License { release_allowance: 0, ..license() };
        assert!(matches!(
            plan_deactivation(&none, &editor, Some(&live), NOW),
            Err(DeactivationRefusal::ReleaseLimitReached(_))
        ));
        let unlimited = License { allow_unlimited_activations: true, ..none };
        assert_eq!(plan_deactivation(&unlimited, &editor, Some(&live), NOW), Ok(None), "no seats to multiply");
        let legacy = device("pc", 1);
        assert_eq!(credential_until(&license(), &legacy), Some(legacy.last_seen_at.plus_seconds(3_600).plus_days(7)));
        let leased = floating(1, &[("pc", 60)]);
        let holder = Device { lease_expires_at: Some(NOW.plus_seconds(60)), ..device("pc", 0) };
        assert_eq!(credential_until(&leased, &holder), Some(NOW.plus_seconds(60)), "a lease bounds its tokens");
    }

    #[test]
    fn rotation_evicts_a_lapsed_device_first_and_a_running_one_only_within_the_allowance() {
        let editor = product("editor");
        let request = ActivationRequest { product: &editor, hardware_id: &hw("new"), is_vm: false };
        let running = |name: &str, seen: i64| Device { credential_until: Some(NOW.plus_days(3)), ..device(name, seen) };
        let rotating = License { device_rotation: true, times_activated: 2, ..license() };
        let lapsed_second = vec![running("old", 5), device("quiet", 9)];
        let plan = plan_activation(&rotating, &lapsed_second, &request, NOW).unwrap();
        assert!(
            matches!(plan, ActivationPlan::Replace(Eviction { ref hardware_id, allowance: None, .. }) if hardware_id.as_str() == "quiet")
        );
        let both_running = vec![running("old", 5), running("recent", 1)];
        let plan = plan_activation(&rotating, &both_running, &request, NOW).unwrap();
        assert!(
            matches!(plan, ActivationPlan::Replace(Eviction { ref hardware_id, allowance: Some(_), .. }) if hardware_id.as_str() == "old")
        );
        for tight in
            [License { release_allowance: 0, ..rotating.clone() }, License { max_transfers: Some(0), ..rotating }]
        {
            assert_eq!(
                plan_activation(&tight, &both_running, &request, NOW),
                Err(ActivationRefusal::LimitReached { max: 2 })
            );
        }
    }

    #[test]
    fn a_recorded_horizon_is_extended_only_when_the_token_would_outlast_it() {
        assert_eq!(horizon_to_record(None, NOW), Some(NOW.plus_seconds(3_600)));
        assert_eq!(horizon_to_record(Some(NOW.plus_seconds(10)), NOW), None);
        assert_eq!(horizon_to_record(Some(NOW.plus_seconds(-1)), NOW), Some(NOW.plus_seconds(3_600)));
        let l = license();
        assert_eq!(credential_exp(&l, CheckCode::Valid, false, NOW), Some(NOW.plus_days(7)));
        assert_eq!(credential_exp(&l, CheckCode::Valid, true, NOW), Some(NOW.plus_days(365)));
        assert_eq!(credential_exp(&l, CheckCode::Expired, false, NOW), None);
        assert_eq!(credential_exp(&floating(1, &[]), CheckCode::Valid, false, NOW), None);
    }

    #[test]
    fn offline_requests_are_fresh_for_a_week() {
        assert!(offline_request_is_fresh(NOW.plus_days(0), NOW.plus_days(7)));
        assert!(!offline_request_is_fresh(NOW, NOW.plus_days(7).plus_seconds(1)));
        assert!(offline_request_is_fresh(NOW.plus_seconds(86_400), NOW), "a day of clock skew");
        assert!(!offline_request_is_fresh(NOW.plus_seconds(86_401), NOW));
    }

    #[test]
    fn last_seen_is_rewritten_only_when_an_hour_old() {
        let fresh = Device { last_seen_at: NOW.plus_seconds(-3_599), ..device("a", 0) };
        let stale = Device { last_seen_at: NOW.plus_seconds(-3_601), ..device("a", 0) };
        assert!(!last_seen_is_stale(&fresh, NOW));
        assert!(last_seen_is_stale(&stale, NOW));
    }

    #[test]
    fn token_expiry_is_the_earliest_bound() {
        let l = license();
        assert_eq!(token_expires_at(&l, CheckCode::Valid, None, NOW), NOW.plus_days(7));
        let weekly = License { validation_interval_days: Some(7), ..license() };
        assert_eq!(token_expires_at(&weekly, CheckCode::Valid, None, NOW), NOW.plus_days(7));
        let soon =
            License { expiration: Expiration::OnDate { date: NOW.plus_days(2) }, grace_period_days: 1, ..license() };
        assert_eq!(token_expires_at(&soon, CheckCode::Valid, None, NOW), NOW.plus_days(3));
        let lease = TokenLease { ends_at: NOW.plus_seconds(600), borrowed: false };
        assert_eq!(token_expires_at(&soon, CheckCode::Valid, Some(lease), NOW), lease.ends_at);
        let borrow = TokenLease { ends_at: NOW.plus_days(20), borrowed: true };
        assert_eq!(token_expires_at(&weekly, CheckCode::Valid, Some(borrow), NOW), borrow.ends_at, "not cut to 7 days");
        assert_eq!(token_expires_at(&soon, CheckCode::Valid, Some(borrow), NOW), NOW.plus_days(3), "license end wins");
        let unborrowed = TokenLease { borrowed: false, ..borrow };
        assert_eq!(token_expires_at(&weekly, CheckCode::Valid, Some(unborrowed), NOW), NOW.plus_days(7));
        let expired = License { expiration: Expiration::OnDate { date: NOW.plus_seconds(-DAY) }, ..license() };
        assert_eq!(token_expires_at(&expired, CheckCode::Expired, None, NOW), NOW.plus_days(7));
    }

    fn hw(name: &str) -> HardwareId {
        HardwareId::parse(name).unwrap()
    }

    /// A floating license with `max` seats and these leases (holder, end in seconds from NOW),
    /// counted by `leases_held` (the leases themselves live on the devices).
    fn floating(max: u32, leases: &[(&str, i64)]) -> License {
        License { is_floating: true, max_activations: max, leases_held: leases.len() as u32, ..license() }
    }

    /// Plans `a`'s lease on `floating(max, leases)`: its own lease from the list, and the lapsed
    /// leases as the index lists them (the earliest end first).
    fn plan_for_a(max: u32, leases: &[(&str, i64)], until: Timestamp) -> Result<LeasePlan, NoFreeSeat> {
        let own = leases.iter().find(|(h, _)| *h == "a").map(|(_, s)| NOW.plus_seconds(*s));
        let mut lapsed: Vec<HeldLease> = leases
            .iter()
            .map(|(h, s)| (hw(h), NOW.plus_seconds(*s)))
            .filter(|(_, end)| !lease_is_live(*end, NOW))
            .collect();
        lapsed.sort_by_key(|(_, end)| *end);
        plan_lease(&floating(max, leases), &hw("a"), own, &lapsed, until, NOW)
    }

    #[test]
    fn lease_end_follows_the_timeout() {
        assert_eq!(lease_end(&floating(1, &[]), NOW), NOW.plus_seconds(15 * 60));
        let l = License { floating_timeout_minutes: Some(2), ..floating(1, &[]) };
        assert_eq!(lease_end(&l, NOW), NOW.plus_seconds(120));
    }

    #[test]
    fn takeovers_are_needed_only_when_the_seats_are_all_held() {
        let cases = [
            ("room", floating(2, &[("b", 60)]), None, 0),
            ("full", floating(2, &[("b", 60), ("c", -1)]), None, 1),
            ("own live lease", floating(1, &[("a", 60)]), Some(60), 0),
            ("own lapsed lease, nobody waiting", floating(1, &[("a", -1)]), Some(-1), 0),
            ("lowered from 3 to 1 seat", floating(1, &[("a", -1), ("b", -2), ("c", -3)]), Some(-1), 2),
        ];
        for (name, l, own, expected) in cases {
            let own = own.map(|s| NOW.plus_seconds(s));
            assert_eq!(leases_to_take_over(&l, own, NOW), expected, "{name}");
        }
    }

    #[allow(clippy::type_complexity)]
    #[test]
    fn lease_plans() {
        let until = NOW.plus_seconds(900);
        let ts = |s: i64| NOW.plus_seconds(s);
        let acquire = |own, take_over| LeasePlan::Acquire { slot: Slot { own, take_over }, until };
        let cases: Vec<(&str, u32, Vec<(&str, i64)>, Result<LeasePlan, NoFreeSeat>)> = vec![
            ("first lease", 2, vec![], Ok(acquire(None, vec![]))),
            ("a free seat beside a live lease", 2, vec![("b", 60)], Ok(acquire(None, vec![]))),
            ("all seats live", 2, vec![("b", 60), ("c", 60)], Err(NoFreeSeat { max: 2 })),
            (
                "a lapsed lease is taken over at once",
                2,
                vec![("b", 60), ("c", -1)],
                Ok(acquire(None, vec![(hw("c"), ts(-1))])),
            ),
            (
                "the first lapsed lease listed goes, only as many as needed",
                2,
                vec![("b", -5), ("c", -50)],
                Ok(acquire(None, vec![(hw("c"), ts(-50))])),
            ),
            ("a live lease is renewed", 1, vec![("a", 10)], Ok(LeasePlan::Renew { observed: ts(10), until })),
            (
                "a renewal never shortens a borrow",
                1,
                vec![("a", 7_200)],
                Ok(LeasePlan::Renew { observed: ts(7_200), until: ts(7_200) }),
            ),
            (
                "a lapsed lease nobody took is re-acquired",
                2,
                vec![("a", -10), ("b", 60)],
                Ok(acquire(Some(ts(-10)), vec![])),
            ),
            (
                "a lapsed lease whose seat went to another device is refused",
                1,
                vec![("b", 60)],
                Err(NoFreeSeat { max: 1 }),
            ),
            (
                "after the vendor lowered the seats, lapsed leases make room",
                1,
                vec![("a", -10), ("b", -20), ("c", -30)],
                Ok(acquire(Some(ts(-10)), vec![(hw("c"), ts(-30)), (hw("b"), ts(-20))])),
            ),
            ("lowered seats, all live", 1, vec![("a", -10), ("b", 20)], Err(NoFreeSeat { max: 1 })),
        ];
        for (name, max, leases, expected) in cases {
            assert_eq!(plan_for_a(max, &leases, until), expected, "{name}");
        }
        // The index lags: a lease it lists as lapsed that reads live is never taken over.
        let stale = [(hw("b"), ts(-5))];
        let l = floating(1, &[("b", 60)]);
        assert_eq!(plan_lease(&l, &hw("a"), None, &[(hw("a"), ts(-9))], until, NOW), Err(NoFreeSeat { max: 1 }));
        assert!(plan_lease(&l, &hw("a"), None, &stale, until, NOW).is_ok(), "its condition decides");
    }

    #[test]
    fn applying_a_plan_counts_the_leases_and_raises_the_horizon() {
        let mut l = floating(2, &[("b", 60), ("c", -1)]);
        let mut a = device("a", 0);
        let until = NOW.plus_seconds(900);
        let plan = plan_for_a(2, &[("b", 60), ("c", -1)], until).unwrap();
        plan.apply(&mut l, &mut a);
        assert_eq!((l.leases_held, a.lease_expires_at, a.credential_until), (2, Some(until), Some(until)));
        assert!(!plan.is_noop());
        assert!(LeasePlan::Renew { observed: NOW, until: NOW }.is_noop());
        let mut fresh = floating(2, &[]);
        plan_for_a(2, &[], until).unwrap().apply(&mut fresh, &mut a);
        assert_eq!(fresh.leases_held, 1);
        assert_eq!(a.credential_until, Some(until.plus_seconds(1)), "the horizon always moves on an acquisition");
        assert_eq!(horizon_on_acquire(Some(NOW), until), until);
        assert_eq!(horizon_on_acquire(Some(until.plus_seconds(60)), until), until.plus_seconds(61));
    }

    #[test]
    fn floating_activation_leaves_the_seat_to_the_lease() {
        let editor = product("editor");
        let request = ActivationRequest { product: &editor, hardware_id: &hw("new"), is_vm: false };
        let frozen =
            License { freeze_days: 3, last_activated_at: Some(NOW), times_activated: 9, ..floating(1, &[("b", 60)]) };
        assert_eq!(plan_activation(&frozen, &[], &request, NOW), Ok(ActivationPlan::NewSeat));
    }

    #[test]
    fn borrowing_rules() {
        let borrowable = License { can_borrow: true, max_borrow_hours: Some(72), ..floating(2, &[]) };
        assert_eq!(plan_borrow(&borrowable, 72), Ok(()));
        assert_eq!(plan_borrow(&borrowable, 73), Err(BorrowRefusal::TooLong { max: 72 }));
        assert_eq!(plan_borrow(&borrowable, 0), Err(BorrowRefusal::TooLong { max: 72 }));
        let not_floating = License { is_floating: false, ..borrowable.clone() };
        assert_eq!(plan_borrow(&not_floating, 1), Err(BorrowRefusal::NotAllowed));
        let no_borrow = License { can_borrow: false, ..borrowable };
        assert_eq!(plan_borrow(&no_borrow, 1), Err(BorrowRefusal::NotAllowed));
    }

    /// 2027-03-31T23:59:59Z, a Wednesday in ISO week 13.
    const END_OF_MARCH: Timestamp = Timestamp::from_unix(1_806_537_599);

    #[test]
    fn periods_are_named_and_end_at_utc_midnight() {
        let at = END_OF_MARCH;
        assert_eq!(at.to_string(), "2027-03-31T23:59:59Z");
        let cases = [
            (None, "all", None),
            (Some(ConsumptionPeriod::Day), "2027-03-31", Some("2027-04-01T00:00:00Z")),
            (Some(ConsumptionPeriod::Week), "2027-W13", Some("2027-04-05T00:00:00Z")),
            (Some(ConsumptionPeriod::Month), "2027-03", Some("2027-04-01T00:00:00Z")),
            (Some(ConsumptionPeriod::Year), "2027", Some("2028-01-01T00:00:00Z")),
        ];
        for (period, key, end) in cases {
            assert_eq!(Period::at(period, at).as_str(), key, "{period:?}");
            assert_eq!(period_ends_at(period, at).map(|t| t.to_string()).as_deref(), end, "{period:?}");
        }
        // One second later every period but `all` is a new one.
        let next = at.plus_seconds(1);
        assert_eq!(Period::at(Some(ConsumptionPeriod::Month), next).as_str(), "2027-04");
        assert_eq!(Period::at(Some(ConsumptionPeriod::Day), next).as_str(), "2027-04-01");
        assert_eq!(
            Period::at(Some(ConsumptionPeriod::Week), next).as_str(),
            "2027-W13",
            "Thursday is the same ISO week"
        );
        let december = Timestamp::parse("2027-12-15").unwrap();
        assert_eq!(
            period_ends_at(Some(ConsumptionPeriod::Month), december).unwrap().to_string(),
            "2028-01-01T00:00:00Z"
        );
    }

    #[test]
    fn the_consumption_limit_adds_allowed_overages() {
        let terms = |max, allow, overages| Metering {
            max_consumptions: max,
            allow_overages: allow,
            max_overages: overages,
            consumption_period: None,
        };
        assert_eq!(consumption_limit(&terms(None, false, None)), None);
        assert_eq!(consumption_limit(&terms(Some(10), false, None)), Some(10));
        assert_eq!(consumption_limit(&terms(Some(10), false, Some(5))), Some(10), "overages not allowed");
        assert_eq!(consumption_limit(&terms(Some(10), true, Some(5))), Some(15));
        assert_eq!(consumption_limit(&terms(Some(10), true, None)), None, "overages without end");
    }

    #[test]
    fn consumption_plans_count_within_the_period_and_start_again_in_a_new_one() {
        let monthly = Metering {
            max_consumptions: Some(10),
            allow_overages: true,
            max_overages: Some(2),
            consumption_period: Some(ConsumptionPeriod::Month),
        };
        let with = |period: &str, used: u64| License {
            consumption: [(CounterKey::License, Counter { period: Period::named(period), used })].into_iter().collect(),
            ..license()
        };
        let at = END_OF_MARCH;
        let plan = plan_consumption(&with("2027-03", 9), &CounterKey::License, &monthly, 3, at).unwrap();
        assert_eq!((plan.used_after, plan.limit, plan.continues()), (12, Some(12), true), "into the overages");
        assert_eq!(
            plan_consumption(&with("2027-03", 10), &CounterKey::License, &monthly, 3, at),
            Err(ConsumptionLimitReached { used: 10, limit: 12 })
        );
        let reset = plan_consumption(&with("2027-02", 12), &CounterKey::License, &monthly, 3, at).unwrap();
        assert_eq!((reset.used_after, reset.continues(), reset.period.as_str()), (3, false, "2027-03"));
        let first = plan_consumption(&license(), &CounterKey::License, &monthly, 12, at).unwrap();
        assert_eq!((first.used_after, first.counters_exist, first.observed), (12, false, None));
        assert!(plan_consumption(&license(), &CounterKey::License, &monthly, 13, at).is_err());
        let unlimited =
            plan_consumption(&with("all", u64::MAX - 1), &CounterKey::License, &Metering::default(), 1, at).unwrap();
        assert_eq!(unlimited.limit, None);
        assert!(
            plan_consumption(&with("all", u64::MAX), &CounterKey::License, &Metering::default(), 1, at).is_err(),
            "no overflow"
        );
    }

    #[test]
    fn features_are_usable_while_entitled_unexpired_and_not_used_up() {
        let feature = |code: &str, expiry: Option<Timestamp>, max: Option<u64>| Feature {
            code: crate::input::FeatureCode::parse(code).unwrap(),
            expiry_date: expiry,
            max_consumptions: max,
            allow_overages: false,
            max_overages: None,
            consumption_period: None,
        };
        let l = License {
            features: vec![
                feature("export", None, None),
                feature("old", Some(NOW), None),
                feature("credits", None, Some(5)),
            ],
            consumption: [(CounterKey::parse("credits").unwrap(), Counter { period: Period::named("all"), used: 5 })]
                .into_iter()
                .collect(),
            ..license()
        };
        assert!(feature_usable(&l, "export", NOW).is_ok());
        assert_eq!(feature_usable(&l, "print", NOW).unwrap_err(), FeatureRefusal::NotEntitled);
        assert_eq!(feature_usable(&l, "old", NOW).unwrap_err(), FeatureRefusal::FeatureExpired);
        assert!(feature_usable(&l, "old", NOW.plus_seconds(-1)).is_ok());
        assert_eq!(feature_usable(&l, "credits", NOW).unwrap_err(), FeatureRefusal::ConsumptionLimitReached);
    }

    #[test]
    fn an_offline_file_lasts_to_the_license_end_and_at_most_a_year() {
        assert_eq!(offline_expires_at(&license(), NOW), NOW.plus_days(365));
        let soon =
            License { expiration: Expiration::OnDate { date: NOW.plus_days(30) }, grace_period_days: 5, ..license() };
        assert_eq!(offline_expires_at(&soon, NOW), NOW.plus_days(35));
        let weekly = License { validation_interval_days: Some(7), ..license() };
        assert_eq!(offline_expires_at(&weekly, NOW), NOW.plus_days(365), "no revalidation offline");
    }
}
