//! What clients and vendors are shown of a license, and the claims signed into tokens.

use super::{App, Reply};
use crate::error::ApiError;
use crate::input::{HardwareId, LicenseKey, Nonce, Product};
use crate::model::{ConsumptionPeriod, CounterKey, Device, Feature, License, LicenseStatus, LicenseType};
use crate::rules::{self, CheckCode, Standing, TokenLease, DEFAULT_VALIDATION_INTERVAL_DAYS};
use crate::store::Store;
use crate::time::Timestamp;
use lambda_http::http::StatusCode;
use serde::Serialize;

/// The client-facing license fields of a check answer.
#[derive(Debug, Serialize)]
pub struct ClientLicense<'a> {
    pub license_key: &'a LicenseKey,
    pub product: &'a Product,
    pub license_type: LicenseType,
    pub status: LicenseStatus,
    pub license_active: bool,
    pub license_enabled: bool,
    pub is_expired: bool,
    pub is_trial: bool,
    pub validity_period: Option<Timestamp>,
    pub maintenance_period: Option<Timestamp>,
    pub allow_grace_period: bool,
    pub grace_period: u32,
    pub max_activations: u32,
    pub times_activated: u32,
    pub allow_unlimited_activations: bool,
    pub transfer_count: u32,
    pub max_transfers: Option<u32>,
    /// How many released devices may keep a valid credential at once, and how many do now.
    pub release_allowance: u32,
    pub releases_in_use: u32,
    pub is_floating: bool,
    pub floating_timeout: Option<u32>,
    /// Floating seats held: live leases, and lapsed ones no device has taken over yet (0 for a
    /// node-locked license). At least the live leases, never more than the seats.
    pub floating_in_use_devices: u32,
    pub can_borrow: bool,
    pub max_borrow_time: Option<u32>,
    pub prevent_vm: bool,
    pub product_features: &'a [Feature],
    /// The license's own consumption in the current period, and its terms.
    pub max_consumptions: Option<u64>,
    pub total_consumptions: u64,
    pub allow_overages: bool,
    pub max_overages: Option<u64>,
    pub consumption_period: Option<ConsumptionPeriod>,
    pub validation_interval_days: u32,
    pub work_if_validation_blocked: bool,
}

impl<'a> ClientLicense<'a> {
    pub fn of(license: &'a License, now: Timestamp) -> Self {
        let standing = rules::standing(license, now);
        Self {
            license_key: &license.license_key,
            product: &license.product,
            license_type: license.license_type,
            status: license.status,
            license_active: matches!(standing, Standing::Active | Standing::GracePeriod),
            license_enabled: license.status == LicenseStatus::Active,
            is_expired: matches!(standing, Standing::Expired | Standing::GracePeriod),
            is_trial: license.is_trial,
            validity_period: rules::expires_at(license),
            maintenance_period: license.maintenance_until,
            allow_grace_period: license.grace_period_days > 0,
            grace_period: license.grace_period_days,
            max_activations: license.max_activations,
            times_activated: license.times_activated,
            allow_unlimited_activations: license.allow_unlimited_activations,
            transfer_count: license.transfer_count,
            max_transfers: license.max_transfers,
            release_allowance: license.release_allowance,
            releases_in_use: rules::releases_in_use(license, now),
            is_floating: license.is_floating,
            floating_timeout: license.floating_timeout_minutes,
            floating_in_use_devices: rules::seats_held(license),
            can_borrow: license.can_borrow,
            max_borrow_time: license.max_borrow_hours,
            prevent_vm: license.prevent_vm,
            product_features: &license.features,
            max_consumptions: license.max_consumptions,
            total_consumptions: rules::used_now(
                &license.metering(),
                license.consumption.get(&CounterKey::License),
                now,
            ),
            allow_overages: license.allow_overages,
            max_overages: license.max_overages,
            consumption_period: license.consumption_period,
            validation_interval_days: license.validation_interval_days.unwrap_or(DEFAULT_VALIDATION_INTERVAL_DAYS),
            work_if_validation_blocked: license.work_if_validation_blocked,
        }
    }
}

/// The claims of a signed verdict. Times are Unix seconds, as in every JWT.
#[derive(Debug, Serialize)]
pub struct TokenClaims<'a> {
    pub iss: &'a str,
    pub sub: &'a str,
    pub aud: &'a Product,
    pub hwid: &'a HardwareId,
    pub valid: bool,
    pub code: CheckCode,
    pub license_type: LicenseType,
    pub status: LicenseStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub license_expires_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grace_ends_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maintenance_until: Option<i64>,
    /// The features entitled and not expired at `iat`.
    pub features: Vec<&'a str>,
    /// The feature a check asked about, and whether it may be used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feature: Option<FeatureClaim<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_expires_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub borrowed_until: Option<i64>,
    pub work_if_validation_blocked: bool,
    /// An offline license file's token: valid without the server until `exp`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub offline: bool,
    pub iat: i64,
    pub exp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonce: Option<&'a Nonce>,
}

#[derive(Debug, Serialize)]
pub struct FeatureClaim<'a> {
    pub code: &'a str,
    pub usable: bool,
}

/// Signs the verdict `code` about `hardware_id` on `license`.
/// What a device is granted (by an activation, a borrow or a trial): the license, the device, and
/// the signed verdict for it.
#[derive(Serialize)]
struct Granted<'a> {
    license: ClientLicense<'a>,
    device: &'a Device,
    token: String,
}

/// The answer granting `device` the license for `product` at `now`, with its verdict signed.
pub(super) fn granted<S: Store>(
    app: &App<S>,
    status: StatusCode,
    (license, device): (&License, &Device),
    product: &Product,
    nonce: Option<&Nonce>,
    now: Timestamp,
) -> Result<Reply, ApiError> {
    let code = rules::check(license, product, Some(device), now);
    let token = sign_verdict(app, license, &device.hardware_id, Some(device), code, nonce, now)?;
    Reply::json(status, &Granted { license: ClientLicense::of(license, now), device, token })
}

pub(crate) fn sign_verdict<S: Store>(
    app: &App<S>,
    license: &License,
    hardware_id: &HardwareId,
    device: Option<&Device>,
    code: CheckCode,
    nonce: Option<&Nonce>,
    now: Timestamp,
) -> Result<String, ApiError> {
    let claims = verdict_claims(app, license, hardware_id, device, code, nonce, now);
    app.signer()?.sign(&claims).map_err(ApiError::internal)
}

/// The claims of a verdict, to be signed (possibly with more said, as a check about a feature does).
pub(crate) fn verdict_claims<'a, S: Store>(
    app: &'a App<S>,
    license: &'a License,
    hardware_id: &'a HardwareId,
    device: Option<&Device>,
    code: CheckCode,
    nonce: Option<&'a Nonce>,
    now: Timestamp,
) -> TokenClaims<'a> {
    let lease = device.and_then(|d| {
        let ends_at = d.lease_expires_at?;
        Some(TokenLease { ends_at, borrowed: d.borrowed_until.is_some_and(|until| until > now) })
    });
    TokenClaims {
        iss: &app.issuer,
        sub: &license.id,
        aud: &license.product,
        hwid: hardware_id,
        valid: code.is_valid(),
        code,
        license_type: license.license_type,
        status: license.status,
        license_expires_at: rules::expires_at(license).map(Timestamp::unix),
        grace_ends_at: rules::grace_ends_at(license).filter(|_| license.grace_period_days > 0).map(Timestamp::unix),
        maintenance_until: license.maintenance_until.map(Timestamp::unix),
        features: license
            .features
            .iter()
            .filter(|f| f.expiry_date.is_none_or(|expiry| expiry > now))
            .map(|f| f.code.as_str())
            .collect(),
        feature: None,
        lease_expires_at: lease.map(|l| l.ends_at.unix()),
        borrowed_until: device
            .and_then(|d| d.borrowed_until)
            .filter(|_| lease.is_some_and(|l| l.borrowed))
            .map(Timestamp::unix),
        work_if_validation_blocked: license.work_if_validation_blocked,
        offline: false,
        iat: now.unix(),
        exp: capped_exp(rules::token_expires_at(license, code, lease, now), license, device, code).unix(),
        nonce,
    }
}

/// A valid verdict's `exp`, never past the credential horizon recorded for a node-locked device:
/// what the store knows of the credentials out there is never less than what was signed.
pub(crate) fn capped_exp(exp: Timestamp, license: &License, device: Option<&Device>, code: CheckCode) -> Timestamp {
    match device.and_then(|d| d.credential_until) {
        Some(horizon) if code.is_valid() && !license.is_floating => exp.min(horizon),
        _ => exp,
    }
}

/// How the seats in use compare with the seats bought.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Compliance {
    Compliant,
    OverDeployed,
    UnderUtilized,
}

/// Over-deployed: more devices than seats (a vendor lowered the limit). Under-utilized: fewer than
/// half of the seats in use. Unlimited licenses are always compliant.
pub fn compliance(license: &License, seats_used: u32) -> Compliance {
    if license.allow_unlimited_activations {
        Compliance::Compliant
    } else if seats_used > license.max_activations {
        Compliance::OverDeployed
    } else if seats_used * 2 < license.max_activations {
        Compliance::UnderUtilized
    } else {
        Compliance::Compliant
    }
}

#[derive(Debug, Serialize)]
pub struct Usage {
    pub seats_used: u32,
    /// Absent for unlimited licenses.
    pub seats_available: Option<u32>,
    pub compliance: Compliance,
}

impl Usage {
    /// Seats used: the bound devices (the license's seat count), or on a floating license the
    /// seats its leases hold.
    pub fn of(license: &License) -> Self {
        let seats_used = if license.is_floating { rules::seats_held(license) } else { license.times_activated };
        Self {
            seats_used,
            seats_available: (!license.allow_unlimited_activations)
                .then(|| license.max_activations.saturating_sub(seats_used)),
            compliance: compliance(license, seats_used),
        }
    }
}

/// A floating license's leases as the vendor sees them: the seats held (live leases, and lapsed
/// ones no device has taken over yet: each is free for the next device). Each device shows its
/// own lease (`lease_expires_at`, `borrowed_until`): the page of devices is the list of leases.
#[derive(Debug, Default, Serialize)]
pub struct FloatingLeases {
    pub seats_held: u32,
}

/// A license as the vendor sees it: every stored field, plus the derived expiry.
#[derive(Debug, Serialize)]
pub struct VendorLicense<'a> {
    #[serde(flatten)]
    pub license: &'a License,
    pub expires_at: Option<Timestamp>,
}

impl<'a> VendorLicense<'a> {
    pub fn of(license: &'a License) -> Self {
        Self { license, expires_at: rules::expires_at(license) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::tests::license;

    #[test]
    fn compliance_compares_seats_used_with_seats_bought() {
        let four = License { max_activations: 4, ..license() };
        assert_eq!(compliance(&four, 1), Compliance::UnderUtilized);
        assert_eq!(compliance(&four, 2), Compliance::Compliant);
        assert_eq!(compliance(&four, 4), Compliance::Compliant);
        assert_eq!(compliance(&four, 5), Compliance::OverDeployed);
        let unlimited = License { allow_unlimited_activations: true, ..four };
        assert_eq!(compliance(&unlimited, 0), Compliance::Compliant);
    }

    #[test]
    fn usage_counts_the_seats_taken() {
        let l = License { max_activations: 3, times_activated: 2, ..license() };
        let usage = Usage::of(&l);
        assert_eq!((usage.seats_used, usage.seats_available), (2, Some(1)));
    }
}
