//! The one mapping from every failure to the API's JSON error and status code.

use serde::Serialize;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    MalformedJson,
    InvalidField,
    PayloadTooLarge,
    Unauthorized,
    LicenseNotFound,
    DeviceNotFound,
    RouteNotFound,
    WebhookNotFound,
    MethodNotAllowed,
    ProductMismatch,
    LicenseSuspended,
    LicenseRevoked,
    LicenseExpired,
    VmNotAllowed,
    BorrowingNotAllowed,
    FeatureNotEntitled,
    FeatureExpired,
    OfflineNotAllowed,
    TrialNotAvailable,
    ActivationLimitReached,
    ConsumptionLimitReached,
    TrialAlreadyUsed,
    LicenseFrozen,
    TransferLimitReached,
    ReleaseLimitReached,
    LeaseExpired,
    ConcurrentUpdate,
    VersionConflict,
    IdempotencyKeyReused,
    WebhookLimitReached,
    StoreUnavailable,
    InternalError,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 32] = [
        ErrorCode::MalformedJson,
        ErrorCode::InvalidField,
        ErrorCode::PayloadTooLarge,
        ErrorCode::Unauthorized,
        ErrorCode::LicenseNotFound,
        ErrorCode::DeviceNotFound,
        ErrorCode::RouteNotFound,
        ErrorCode::WebhookNotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::ProductMismatch,
        ErrorCode::LicenseSuspended,
        ErrorCode::LicenseRevoked,
        ErrorCode::LicenseExpired,
        ErrorCode::VmNotAllowed,
        ErrorCode::BorrowingNotAllowed,
        ErrorCode::FeatureNotEntitled,
        ErrorCode::FeatureExpired,
        ErrorCode::OfflineNotAllowed,
        ErrorCode::TrialNotAvailable,
        ErrorCode::ActivationLimitReached,
        ErrorCode::ConsumptionLimitReached,
        ErrorCode::TrialAlreadyUsed,
        ErrorCode::LicenseFrozen,
        ErrorCode::TransferLimitReached,
        ErrorCode::ReleaseLimitReached,
        ErrorCode::LeaseExpired,
        ErrorCode::ConcurrentUpdate,
        ErrorCode::VersionConflict,
        ErrorCode::IdempotencyKeyReused,
        ErrorCode::WebhookLimitReached,
        ErrorCode::StoreUnavailable,
        ErrorCode::InternalError,
    ];

    pub fn status(self) -> u16 {
        use ErrorCode::*;
        match self {
            MalformedJson | InvalidField => 400,
            Unauthorized => 401,
            ProductMismatch | LicenseSuspended | LicenseRevoked | LicenseExpired | VmNotAllowed
            | BorrowingNotAllowed | FeatureNotEntitled | FeatureExpired | OfflineNotAllowed => 403,
            LicenseNotFound | DeviceNotFound | RouteNotFound | WebhookNotFound | TrialNotAvailable => 404,
            MethodNotAllowed => 405,
            ActivationLimitReached
            | ConsumptionLimitReached
            | TrialAlreadyUsed
            | LicenseFrozen
            | TransferLimitReached
            | ReleaseLimitReached
            | LeaseExpired
            | VersionConflict
            | IdempotencyKeyReused
            | WebhookLimitReached => 409,
            PayloadTooLarge => 413,
            InternalError => 500,
            // Nothing was refused: the same request may succeed after `Retry-After`.
            StoreUnavailable | ConcurrentUpdate => 503,
        }
    }
}

/// An API failure: what the client is told, and (kept out of the response) what went wrong inside.
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// The request field at fault, when there is one.
    pub field: Option<String>,
    /// The inner cause of a 5xx, logged with the request id and never sent.
    pub cause: Option<String>,
    /// Seconds after which the same request may succeed (sent as `Retry-After`).
    pub retry_after: Option<u64>,
    /// The methods a path allows, for a 405 (sent as `Allow`).
    pub allow: Option<String>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), field: None, cause: None, retry_after: None, allow: None }
    }

    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn field(field: impl Into<String>, message: impl std::fmt::Display) -> Self {
        let field = field.into();
        let message = format!("`{field}` {message}");
        Self { code: ErrorCode::InvalidField, message, field: Some(field), cause: None, retry_after: None, allow: None }
    }

    pub fn internal(cause: impl fmt::Display) -> Self {
        Self {
            code: ErrorCode::InternalError,
            message: "internal error; the request id identifies it in the logs".into(),
            field: None,
            cause: Some(cause.to_string()),
            retry_after: None,
            allow: None,
        }
    }

    pub fn status(&self) -> u16 {
        self.code.status()
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: ErrorCode,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
    request_id: &'a str,
}

impl ApiError {
    /// `{"error": {"code", "message", "field"?, "request_id"}}`
    pub fn body(&self, request_id: &str) -> String {
        let body = ErrorBody {
            error: ErrorDetail { code: self.code, message: &self.message, field: self.field.as_deref(), request_id },
        };
        serde_json::to_string(&body)
            .unwrap_or_else(|_| r#"{"error":{"code":"INTERNAL_ERROR","message":"internal error"}}"#.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_fitting_status_and_upper_snake_name() {
        for code in ErrorCode::ALL {
            let status = code.status();
            assert!((400..600).contains(&status));
            let name = serde_json::to_value(code).unwrap();
            let name = name.as_str().unwrap();
            assert!(name.chars().all(|c| c.is_ascii_uppercase() || c == '_'), "{name}");
        }
        assert_eq!(ErrorCode::ActivationLimitReached.status(), 409);
        assert_eq!(ErrorCode::StoreUnavailable.status(), 503);
    }

    #[test]
    fn body_has_the_spec_shape_and_hides_the_cause() {
        let err = ApiError::internal("dynamodb said: secret table arn");
        let body: serde_json::Value = serde_json::from_str(&err.body("req_1")).unwrap();
        assert_eq!(body["error"]["code"], "INTERNAL_ERROR");
        assert_eq!(body["error"]["request_id"], "req_1");
        assert!(!body.to_string().contains("secret"));
        let field = ApiError::field("product", "must not be empty");
        let body: serde_json::Value = serde_json::from_str(&field.body("r")).unwrap();
        assert_eq!(body["error"]["field"], "product");
        assert_eq!(body["error"]["message"], "`product` must not be empty");
    }
}
