//! The one place where an operation's refusal, or a failure of the store under it, becomes the API's
//! error: which code (and so which status, `ErrorCode::status`) and what the client is told. The
//! rules and the operations say *why* in their own terms (`ActivationRefusal`, `NoFreeSeat`, …, a
//! [`Refusal`] for what only an operation knows, a `StoreError`); nothing else builds an
//! `ApiError` for them. (The HTTP adapter in api/mod.rs maps what it refuses itself: routes,
//! bodies, headers.)

use crate::error::{ApiError, ErrorCode};
use crate::input::{HardwareId, LicenseKey, Product};
use crate::rules::{
    ActivationRefusal, AllowanceUsed, BorrowRefusal, ConsumptionLimitReached, DeactivationRefusal, FeatureRefusal,
    NoFreeSeat,
};
use crate::time::Timestamp;

/// A refusal an operation decides beyond the rules: what is missing, what was already done, and
/// what the request cannot have on this license.
#[derive(Debug)]
pub(crate) enum Refusal<'a> {
    LicenseNotFound(&'a LicenseKey),
    DeviceNotFound(&'a HardwareId),
    /// A floating device that no longer holds a seat (its lease lapsed).
    LeaseExpired(&'a HardwareId),
    /// A feature the license does not grant now (`code`: the feature asked for).
    Feature(FeatureRefusal, &'a str),
    ConsumptionLimit(ConsumptionLimitReached),
    /// A floating license asked for an offline activation.
    OfflineFloating,
    TrialNotAvailable(&'a Product),
    TrialAlreadyUsed(&'a Product),
    /// A vendor's patch of `expected`, when the license is at `current`.
    VersionConflict {
        current: u64,
        expected: u64,
    },
    IdempotencyKeyReused,
    /// Concurrent writers won every race: nothing was refused, the same request may succeed.
    ConcurrentUpdate,
    Deactivation {
        refusal: DeactivationRefusal,
        hardware_id: &'a HardwareId,
        now: Timestamp,
    },
}

impl From<Refusal<'_>> for ApiError {
    fn from(refusal: Refusal<'_>) -> Self {
        use Refusal::*;
        match refusal {
            LicenseNotFound(key) => ApiError::new(ErrorCode::LicenseNotFound, format!("no license with key {key}")),
            DeviceNotFound(hardware_id) => ApiError::new(
                ErrorCode::DeviceNotFound,
                format!("device {hardware_id} is not activated on this license"),
            ),
            LeaseExpired(hardware_id) => ApiError::new(
                ErrorCode::LeaseExpired,
                format!(
                    "device {hardware_id} holds no floating seat (its lease lapsed); check the license to take \
                     one again"
                ),
            ),
            Feature(FeatureRefusal::NotEntitled, code) => {
                ApiError::new(ErrorCode::FeatureNotEntitled, format!("the license does not include feature `{code}`"))
            }
            Feature(FeatureRefusal::FeatureExpired, code) => {
                ApiError::new(ErrorCode::FeatureExpired, format!("feature `{code}` has expired on this license"))
            }
            Feature(FeatureRefusal::ConsumptionLimitReached, code) => ApiError::new(
                ErrorCode::ConsumptionLimitReached,
                format!("feature `{code}` has used all it may in this period"),
            ),
            ConsumptionLimit(ConsumptionLimitReached { used, limit }) => ApiError::new(
                ErrorCode::ConsumptionLimitReached,
                format!("{used} of {limit} are used in this period; the amount does not fit"),
            ),
            OfflineFloating => ApiError::new(
                ErrorCode::OfflineNotAllowed,
                "a floating license cannot be activated offline (its leases need heartbeats); borrow a seat instead",
            ),
            TrialNotAvailable(product) => {
                ApiError::new(ErrorCode::TrialNotAvailable, format!("{product} offers no trial"))
            }
            TrialAlreadyUsed(product) => ApiError::new(
                ErrorCode::TrialAlreadyUsed,
                format!("this device has already had its trial of {product}"),
            ),
            VersionConflict { current, expected } => ApiError::new(
                ErrorCode::VersionConflict,
                format!("the license is at version {current}, not {expected}; read it again and retry"),
            ),
            IdempotencyKeyReused => ApiError::new(
                ErrorCode::IdempotencyKeyReused,
                "this Idempotency-Key was already used with a different request",
            ),
            ConcurrentUpdate => {
                ApiError::new(ErrorCode::ConcurrentUpdate, "the license kept changing concurrently; retry the request")
                    .retry_after(1)
            }
            Deactivation { refusal, hardware_id, now } => match refusal {
                DeactivationRefusal::ProductMismatch => ActivationRefusal::ProductMismatch.into(),
                DeactivationRefusal::DeviceNotFound => DeviceNotFound(hardware_id).into(),
                DeactivationRefusal::TransferLimitReached { max } => ApiError::new(
                    ErrorCode::TransferLimitReached,
                    format!("all {max} transfers of this license are used; ask the vendor to release the device"),
                ),
                DeactivationRefusal::ReleaseLimitReached(used) => release_limit(used, now),
            },
        }
    }
}

fn release_limit(used: AllowanceUsed, now: Timestamp) -> ApiError {
    let message = match used.frees_at {
        Some(at) => format!(
            "the license allows {} released device(s) to keep a valid credential at once, and that many still \
             do until {at}; retry then, or ask the vendor to release the device",
            used.max
        ),
        None => "the license allows no release of a device whose credential is still valid; ask the vendor".into(),
    };
    let error = ApiError::new(ErrorCode::ReleaseLimitReached, message);
    match used.frees_at {
        Some(at) => error.retry_after(u64::try_from(at.unix() - now.unix()).unwrap_or(0).max(1)),
        None => error,
    }
}

impl From<ActivationRefusal> for ApiError {
    fn from(refusal: ActivationRefusal) -> Self {
        use ActivationRefusal::*;
        match refusal {
            ProductMismatch => ApiError::new(ErrorCode::ProductMismatch, "the license is for another product"),
            Suspended => ApiError::new(ErrorCode::LicenseSuspended, "the license is suspended"),
            Revoked => ApiError::new(ErrorCode::LicenseRevoked, "the license is revoked"),
            Expired => ApiError::new(ErrorCode::LicenseExpired, "the license has expired"),
            VmNotAllowed => {
                ApiError::new(ErrorCode::VmNotAllowed, "the license may not be activated on a virtual machine")
            }
            Frozen { until } => {
                ApiError::new(ErrorCode::LicenseFrozen, format!("new activations are frozen until {until}"))
            }
            LimitReached { max } => ApiError::new(
                ErrorCode::ActivationLimitReached,
                format!("all {max} activations are in use; deactivate a device first"),
            ),
        }
    }
}

impl From<NoFreeSeat> for ApiError {
    fn from(NoFreeSeat { max }: NoFreeSeat) -> Self {
        ApiError::new(
            ErrorCode::ActivationLimitReached,
            format!("all {max} floating seats are held by live leases; retry when one is returned or lapses"),
        )
    }
}

impl From<BorrowRefusal> for ApiError {
    fn from(refusal: BorrowRefusal) -> Self {
        match refusal {
            BorrowRefusal::NotAllowed => ApiError::new(
                ErrorCode::BorrowingNotAllowed,
                "this license does not allow borrowing (it must be floating with can_borrow)",
            ),
            BorrowRefusal::TooLong { max } => ApiError::field("hours", format!("must be between 1 and {max}")),
        }
    }
}

/// A store failure: an outage is a 503 to retry; anything else a 500 whose cause is only logged.
pub(crate) fn store_error(err: crate::store::StoreError) -> ApiError {
    match err {
        crate::store::StoreError::Unavailable(cause) => ApiError {
            code: ErrorCode::StoreUnavailable,
            message: "the license store is unavailable; retry later (with the same Idempotency-Key, a retry never \
                      acts twice)"
                .into(),
            field: None,
            cause: Some(cause),
            retry_after: Some(1),
            allow: None,
        },
        crate::store::StoreError::Internal(cause) => ApiError::internal(cause),
        crate::store::StoreError::InvalidCursor => ApiError::field("cursor", "is not a cursor this listing handed out"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_release_limit_says_when_to_retry_and_never_less_than_a_second() {
        let now = Timestamp::from_unix(1_000);
        let hardware_id = HardwareId::parse("laptop-1").unwrap();
        let refused = |frees_at| {
            let refusal = DeactivationRefusal::ReleaseLimitReached(AllowanceUsed { max: 2, frees_at });
            ApiError::from(Refusal::Deactivation { refusal, hardware_id: &hardware_id, now })
        };
        let error = refused(Some(Timestamp::from_unix(1_090)));
        assert_eq!((error.code, error.retry_after), (ErrorCode::ReleaseLimitReached, Some(90)));
        assert_eq!(refused(Some(now)).retry_after, Some(1));
        assert_eq!(refused(None).retry_after, None, "an allowance of 0 never frees a place");
    }

    #[test]
    fn only_a_lost_race_is_retryable() {
        let error = ApiError::from(Refusal::ConcurrentUpdate);
        assert_eq!((error.status(), error.retry_after), (503, Some(1)));
        for refusal in [Refusal::IdempotencyKeyReused, Refusal::OfflineFloating] {
            assert_eq!(ApiError::from(refusal).retry_after, None);
        }
    }
}
