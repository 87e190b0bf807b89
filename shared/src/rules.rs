//! The license rules, as pure functions of (license, devices, request, now). No I/O, no clock:
//! the handlers read the store, ask these functions what to do, and write the answer.

use crate::input::{HardwareId, Product};
use crate::model::{Device, Expiration, License, LicenseStatus};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};

/// How long a positive token stays usable offline when the license sets no validation interval.
pub const DEFAULT_VALIDATION_INTERVAL_DAYS: u32 = 30;

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
    Replace { evict: HardwareId },
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

pub fn plan_activation(
    license: &License,
    devices: &[Device],
    request: &ActivationRequest<'_>,
    now: Timestamp,
) -> Result<ActivationPlan, ActivationRefusal> {
    if &license.product != request.product {
        return Err(ActivationRefusal::ProductMismatch);
    }
    match standing(license, now) {
        Standing::Revoked => return Err(ActivationRefusal::Revoked),
        Standing::Suspended => return Err(ActivationRefusal::Suspended),
        Standing::Expired => return Err(ActivationRefusal::Expired),
        Standing::Active | Standing::GracePeriod => {}
    }
    if devices.iter().any(|d| &d.hardware_id == request.hardware_id) {
        return Ok(ActivationPlan::AlreadyActive);
    }
    if license.prevent_vm && request.is_vm {
        return Err(ActivationRefusal::VmNotAllowed);
    }
    if let Some(until) = frozen_until(license) {
        if now < until {
            return Err(ActivationRefusal::Frozen { until });
        }
    }
    if license.allow_unlimited_activations || license.times_activated < license.max_activations {
        return Ok(ActivationPlan::NewSeat);
    }
    if license.device_rotation {
        if let Some(least_recent) = devices.iter().min_by_key(|d| (d.last_seen_at, d.activated_at)) {
            return Ok(ActivationPlan::Replace { evict: least_recent.hardware_id.clone() });
        }
    }
    Err(ActivationRefusal::LimitReached { max: license.max_activations })
}

/// After each new activation, further new activations wait `freeze_days` (seed 002).
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
}

/// A client's own deactivation frees the seat and counts as a transfer.
pub fn plan_deactivation(
    license: &License,
    product: &Product,
    device: Option<&Device>,
) -> Result<(), DeactivationRefusal> {
    if &license.product != product {
        return Err(DeactivationRefusal::ProductMismatch);
    }
    if device.is_none() {
        return Err(DeactivationRefusal::DeviceNotFound);
    }
    match license.max_transfers {
        Some(max) if license.transfer_count >= max => Err(DeactivationRefusal::TransferLimitReached { max }),
        _ => Ok(()),
    }
}

/// How long a token stays usable offline.
///
/// A positive verdict lasts until the earliest of: the end of the grace period, the next required
/// validation, the device's lease end. A negative verdict cannot take the license's expiry (it has
/// passed, and a token whose `exp` precedes its `iat` fails every JOSE library, so the client could
/// not verify the refusal); it lasts one validation interval, which is harmless: it only says "no".
pub fn token_expires_at(license: &License, code: CheckCode, lease_end: Option<Timestamp>, now: Timestamp) -> Timestamp {
    let interval = license.validation_interval_days.unwrap_or(DEFAULT_VALIDATION_INTERVAL_DAYS);
    let next_validation = now.plus_days(interval);
    if !code.is_valid() {
        return next_validation;
    }
    [Some(next_validation), grace_ends_at(license), lease_end].into_iter().flatten().min().unwrap_or(next_validation)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::input::LicenseKey;
    use crate::model::LicenseType;

    pub const NOW: Timestamp = Timestamp::from_unix(1_800_000_000);
    const DAY: i64 = crate::time::SECONDS_PER_DAY;

    pub fn license() -> License {
        License {
            license_key: LicenseKey::parse("AAAAA-BBBBB").unwrap(),
            id: "lic_test".into(),
            product: Product::parse("editor").unwrap(),
            license_type: LicenseType::Perpetual,
            status: LicenseStatus::Active,
            customer: None,
            order_id: None,
            max_activations: 2,
            allow_unlimited_activations: false,
            times_activated: 0,
            transfer_count: 0,
            max_transfers: None,
            expiration: Expiration::Never,
            grace_period_days: 0,
            maintenance_until: None,
            is_floating: false,
            floating_timeout_minutes: None,
            can_borrow: false,
            max_borrow_hours: None,
            prevent_vm: false,
            freeze_days: 0,
            device_rotation: false,
            validation_interval_days: None,
            work_if_validation_blocked: false,
            is_trial: false,
            is_test: false,
            features: vec![],
            metadata: Default::default(),
            created_at: NOW.plus_seconds(-100 * DAY),
            updated_at: NOW.plus_seconds(-100 * DAY),
            first_activated_at: None,
            last_activated_at: None,
            version: 0,
        }
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
                Ok(ActivationPlan::Replace { evict: HardwareId::parse("old-pc").unwrap() }),
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
        let d = device("pc", 0);
        assert_eq!(plan_deactivation(&license(), &editor, Some(&d)), Ok(()));
        assert_eq!(plan_deactivation(&license(), &editor, None), Err(DeactivationRefusal::DeviceNotFound));
        assert_eq!(plan_deactivation(&license(), &product("x"), Some(&d)), Err(DeactivationRefusal::ProductMismatch));
        let capped = License { max_transfers: Some(2), transfer_count: 2, ..license() };
        assert_eq!(
            plan_deactivation(&capped, &editor, Some(&d)),
            Err(DeactivationRefusal::TransferLimitReached { max: 2 })
        );
        let room = License { transfer_count: 1, ..capped };
        assert_eq!(plan_deactivation(&room, &editor, Some(&d)), Ok(()));
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
        assert_eq!(token_expires_at(&l, CheckCode::Valid, None, NOW), NOW.plus_days(30));
        let weekly = License { validation_interval_days: Some(7), ..license() };
        assert_eq!(token_expires_at(&weekly, CheckCode::Valid, None, NOW), NOW.plus_days(7));
        let soon =
            License { expiration: Expiration::OnDate { date: NOW.plus_days(2) }, grace_period_days: 1, ..license() };
        assert_eq!(token_expires_at(&soon, CheckCode::Valid, None, NOW), NOW.plus_days(3));
        let lease = NOW.plus_seconds(600);
        assert_eq!(token_expires_at(&soon, CheckCode::Valid, Some(lease), NOW), lease);
        let expired = License { expiration: Expiration::OnDate { date: NOW.plus_seconds(-DAY) }, ..license() };
        assert_eq!(token_expires_at(&expired, CheckCode::Expired, None, NOW), NOW.plus_days(30));
    }
}
