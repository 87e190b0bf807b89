//! SDK failures mapped to the store's errors: what is a conflict, what is a passing outage, what
//! is a bug.

use crate::store::{StoreError, WriteError};
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;

/// Maps an SDK failure: no answer, throttling or a server fault is `Unavailable` (503, retry later);
/// anything else is a bug or misconfiguration (500).
pub(super) fn classify<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static, R: std::fmt::Debug>(
    err: SdkError<E, R>,
) -> StoreError {
    let detail = DisplayErrorContext(&err).to_string();
    match &err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            StoreError::Unavailable(detail)
        }
        _ => match err.code() {
            Some(
                "ProvisionedThroughputExceededException"
                | "ThrottlingException"
                | "RequestLimitExceeded"
                | "InternalServerError"
                | "ServiceUnavailable"
                | "LimitExceededException",
            ) => StoreError::Unavailable(detail),
            _ => StoreError::Internal(detail),
        },
    }
}

pub(super) fn transaction_error<R: std::fmt::Debug>(err: SdkError<TransactWriteItemsError, R>) -> WriteError {
    if let SdkError::ServiceError(service) = &err {
        match service.err() {
            TransactWriteItemsError::TransactionCanceledException(cancelled) => {
                let reasons: Vec<(&str, &str)> = cancelled
                    .cancellation_reasons()
                    .iter()
                    .map(|r| (r.code().unwrap_or("None"), r.message().unwrap_or("")))
                    .collect();
                return cancellation(&reasons);
            }
            // The same call (our SDK's repeat, same token) is still being applied and may yet
            // commit: re-deciding would write a second time, so it is a passing outage (a 503 that
            // may have acted, which a retry with an Idempotency-Key resolves).
            TransactWriteItemsError::TransactionInProgressException(_) => {
                return WriteError::Store(StoreError::Unavailable("transaction still in progress".into()));
            }
            _ => {}
        }
    }
    WriteError::Store(classify(err))
}

/// A cancelled transaction, by its items' reasons: a condition that no longer holds or a
/// concurrent transaction is a conflict (read again and re-decide); throttling is a passing
/// unavailability; anything else (a ValidationError, an item collection over its size limit) is a
/// fault of this code, with its cause, never a "retry later".
pub(super) fn cancellation(reasons: &[(&str, &str)]) -> WriteError {
    let any = |codes: &[&str]| reasons.iter().any(|(code, _)| codes.contains(code));
    let described = || {
        let failed: Vec<String> = reasons
            .iter()
            .filter(|(code, _)| *code != "None")
            .map(|(code, message)| format!("{code}: {message}"))
            .collect();
        format!("transaction cancelled: {}", failed.join("; "))
    };
    if any(&["ConditionalCheckFailed", "TransactionConflict"]) {
        WriteError::Conflict
    } else if any(&["ThrottlingError", "ProvisionedThroughputExceeded", "RequestLimitExceeded"]) {
        WriteError::Store(StoreError::Unavailable(described()))
    } else {
        WriteError::Store(StoreError::Internal(described()))
    }
}

/// A single-item write whose condition failed is a conflict; anything else is classified as usual.
pub(super) fn conditional_error<
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
>(
    err: SdkError<E, R>,
) -> WriteError {
    if err.code() == Some("ConditionalCheckFailedException") {
        WriteError::Conflict
    } else {
        WriteError::Store(classify(err))
    }
}
