//! What a verified verdict means at a moment: the three clocks kept apart, and the clock check.
//!
//! - **License grace** (the server's): an expired license within `grace_period_days` is still
//!   valid; the verdict's code says so (`GRACE_PERIOD`) and `grace_ends_at` says until when.
//! - **Network grace** (the client's): how long the app keeps working on its last verdict without
//!   reaching the server. A verdict is good until its `exp` (the server puts it at most
//!   `validation_interval_days` ahead). The client revalidates from half-way (`check_due_at`).
//!   `work_if_validation_blocked` decides what happens when it cannot: `true`, the app keeps
//!   working until `exp`; `false`, it stops at `check_due_at` until a check succeeds. Neither ever
//!   goes past `exp`: that is what keeps a released machine from running on.
//! - **Floating borrow**: a borrowed seat (`borrowed_until`) and an offline license file are
//!   explicit grants to work offline, good until `exp` whatever `work_if_validation_blocked` says.
//!
//! A clock turned back behind the latest moment seen (the high-water mark, never below the
//! verdict's `iat`) by more than the tolerance is [`Reason::ClockTampered`], not a pass.

use crate::verdict::{Claims, FeatureClaim};
use serde::Serialize;

/// How far the clock may lag the latest moment seen before it counts as turned back (a machine's
/// clock drifts, and servers' clocks differ a little).
pub const DEFAULT_CLOCK_TOLERANCE_SECONDS: i64 = 600;

/// Why the license is, or is not, usable now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", content = "code", rename_all = "SCREAMING_SNAKE_CASE")]
#[non_exhaustive]
pub enum Reason {
    /// The server's verdict: valid.
    Valid,
    /// Valid, in the license's grace period after its expiry.
    GracePeriod,
    /// The server's signed refusal (`EXPIRED`, `SUSPENDED`, `REVOKED`, `DEVICE_NOT_ACTIVATED`,
    /// `LEASE_EXPIRED`, `PRODUCT_MISMATCH`).
    Refused(String),
    /// A revalidation is due and the license does not allow working while it is blocked.
    CheckRequired,
    /// The verdict expired: the app has been offline longer than the license allows.
    OfflineTooLong,
    /// The system clock is behind the latest moment this license was seen.
    ClockTampered,
    /// No license on this machine.
    NotActivated,
}

impl Reason {
    /// A sentence an app can show its user.
    pub fn message(&self) -> String {
        match self {
            Reason::Valid => "The license is valid.".into(),
            Reason::GracePeriod => "The license has expired but is within its grace period.".into(),
            Reason::Refused(code) => match code.as_str() {
                "EXPIRED" => "The license has expired.".into(),
                "SUSPENDED" => "The license is suspended; contact the vendor.".into(),
                "REVOKED" => "The license has been revoked; contact the vendor.".into(),
                "DEVICE_NOT_ACTIVATED" => "This machine is not activated on the license.".into(),
                "LEASE_EXPIRED" => "All seats of this license are in use; try again later.".into(),
                "PRODUCT_MISMATCH" => "The license is for another product.".into(),
                other => format!("The license is not valid ({other})."),
            },
            Reason::CheckRequired => "The license must be checked online; connect to the internet.".into(),
            Reason::OfflineTooLong => {
                "The license has not been checked online for too long; connect to the internet.".into()
            }
            Reason::ClockTampered => "The system clock is wrong; set the correct date and time.".into(),
            Reason::NotActivated => "This machine has no license; activate it first.".into(),
        }
    }
}

/// The license as the app should treat it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    pub valid: bool,
    pub reason: Reason,
    /// The server's code from the last verdict (absent without one).
    pub code: Option<String>,
    pub license_type: Option<String>,
    /// Features entitled and unexpired when the verdict was signed.
    pub features: Vec<String>,
    /// The feature a check asked about (`check_feature`), and whether it may be used now (a
    /// metered feature may be entitled but used up).
    pub feature: Option<FeatureClaim>,
    pub license_expires_at: Option<i64>,
    pub grace_ends_at: Option<i64>,
    pub lease_expires_at: Option<i64>,
    pub borrowed_until: Option<i64>,
    /// When the verdict was signed (the last successful online check, or the license file).
    pub checked_at: Option<i64>,
    /// From when the client should check online again.
    pub check_due_at: Option<i64>,
    /// Until when the app works without reaching the server (the network grace's end).
    pub works_offline_until: Option<i64>,
    /// The verdict came from an offline license file.
    pub offline: bool,
}

impl Status {
    pub fn not_activated() -> Self {
        Self::empty(Reason::NotActivated)
    }

    /// A saved license whose verdict no trusted key verifies yet: a check must verify it anew.
    pub fn unverified() -> Self {
        Self::empty(Reason::CheckRequired)
    }

    fn empty(reason: Reason) -> Self {
        Status {
            valid: false,
            reason,
            code: None,
            license_type: None,
            features: vec![],
            feature: None,
            license_expires_at: None,
            grace_ends_at: None,
            lease_expires_at: None,
            borrowed_until: None,
            checked_at: None,
            check_due_at: None,
            works_offline_until: None,
            offline: false,
        }
    }

    /// Whether the verdict names this feature as entitled (and, when the last check asked about
    /// it, as usable now).
    pub fn has_feature(&self, code: &str) -> bool {
        let usable = self.feature.as_ref().filter(|f| f.code == code).is_none_or(|f| f.usable);
        self.valid && usable && self.features.iter().any(|f| f == code)
    }
}

/// The status of a verified verdict at `now`, given the latest moment seen before (`high_water`).
pub fn decide(claims: &Claims, high_water: i64, now: i64, tolerance: i64) -> Status {
    let explicit_grant = claims.offline || claims.borrowed_until.is_some();
    let check_due_at = if explicit_grant { claims.exp } else { claims.iat + (claims.exp - claims.iat) / 2 };
    let works_offline_until =
        if explicit_grant || claims.work_if_validation_blocked { claims.exp } else { check_due_at };
    let reason = if now + tolerance < high_water.max(claims.iat) {
        Reason::ClockTampered
    } else if !claims.valid {
        Reason::Refused(claims.code.clone())
    } else if now >= claims.exp {
        Reason::OfflineTooLong
    } else if now >= works_offline_until {
        Reason::CheckRequired
    } else if claims.code == "GRACE_PERIOD" {
        Reason::GracePeriod
    } else {
        Reason::Valid
    };
    Status {
        valid: matches!(reason, Reason::Valid | Reason::GracePeriod),
        reason,
        code: Some(claims.code.clone()),
        license_type: Some(claims.license_type.clone()),
        features: claims.features.clone(),
        feature: claims.feature.clone(),
        license_expires_at: claims.license_expires_at,
        grace_ends_at: claims.grace_ends_at,
        lease_expires_at: claims.lease_expires_at,
        borrowed_until: claims.borrowed_until,
        checked_at: Some(claims.iat),
        check_due_at: Some(check_due_at),
        works_offline_until: Some(works_offline_until),
        offline: claims.offline,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_800_000_000;
    const DAY: i64 = 86_400;

    fn claims(change: impl FnOnce(&mut Claims)) -> Claims {
        let mut c = Claims {
            iss: "https://licenses.example".into(),
            sub: "lic_1".into(),
            aud: "editor".into(),
            hwid: "pc-1".into(),
            valid: true,
            code: "VALID".into(),
            license_type: "perpetual".into(),
            status: "active".into(),
            license_expires_at: None,
            grace_ends_at: None,
            maintenance_until: None,
            features: vec!["export".into()],
            feature: None,
            lease_expires_at: None,
            borrowed_until: None,
            work_if_validation_blocked: false,
            offline: false,
            iat: T,
            exp: T + 8 * DAY,
            nonce: None,
        };
        change(&mut c);
        c
    }

    #[test]
    fn network_grace_ends_half_way_unless_work_if_validation_blocked() {
        let strict = claims(|_| {});
        assert_eq!(decide(&strict, T, T + 3 * DAY, 600).reason, Reason::Valid);
        assert_eq!(decide(&strict, T, T + 4 * DAY, 600).reason, Reason::CheckRequired);
        let lenient = claims(|c| c.work_if_validation_blocked = true);
        let status = decide(&lenient, T, T + 7 * DAY, 600);
        assert_eq!(
            (status.valid, status.check_due_at, status.works_offline_until),
            (true, Some(T + 4 * DAY), Some(T + 8 * DAY))
        );
        assert_eq!(decide(&lenient, T, T + 8 * DAY, 600).reason, Reason::OfflineTooLong, "never past exp");
    }

    #[test]
    fn borrowed_seats_and_license_files_work_offline_to_their_end() {
        for grant in [claims(|c| c.borrowed_until = Some(T + 8 * DAY)), claims(|c| c.offline = true)] {
            assert_eq!(decide(&grant, T, T + 8 * DAY - 1, 600).reason, Reason::Valid);
            assert_eq!(decide(&grant, T, T + 8 * DAY, 600).reason, Reason::OfflineTooLong);
        }
    }

    #[test]
    fn a_clock_behind_the_latest_moment_seen_is_tampering() {
        let c = claims(|_| {});
        assert_eq!(decide(&c, T + DAY, T + DAY - 600, 600).reason, Reason::Valid, "within tolerance");
        assert_eq!(decide(&c, T + DAY, T + DAY - 601, 600).reason, Reason::ClockTampered);
        assert_eq!(decide(&c, 0, T - 601, 600).reason, Reason::ClockTampered, "behind the verdict's iat");
    }

    #[test]
    fn signed_refusals_and_grace_are_reported_as_such() {
        let revoked = decide(&claims(|c| (c.valid, c.code) = (false, "REVOKED".into())), T, T, 600);
        assert_eq!((revoked.valid, revoked.reason.clone()), (false, Reason::Refused("REVOKED".into())));
        assert!(revoked.reason.message().contains("revoked"));
        let grace = decide(&claims(|c| c.code = "GRACE_PERIOD".into()), T, T, 600);
        assert_eq!((grace.valid, grace.reason), (true, Reason::GracePeriod));
        assert!(decide(&claims(|_| {}), T, T, 600).has_feature("export"));
        let used_up = claims(|c| c.feature = Some(FeatureClaim { code: "export".into(), usable: false }));
        assert!(!decide(&used_up, T, T, 600).has_feature("export"), "entitled but used up");
    }
}
