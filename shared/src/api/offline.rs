//! `POST /v1/activate/offline` and `POST /v1/deactivate/offline`: request files from air-gapped
//! machines, carried over by a connected one; the activation answers with a signed license file.

use super::activate::{activate_device, ActivateRequest};
use super::deactivate::{deactivate, DeactivateRequest};
use super::idempotency::Idempotency;
use super::views::{capped_exp, verdict_claims};
use super::{App, Reply};
use crate::error::ApiError;
use crate::model::{Device, License};
use crate::offline::{LicenseFile, OfflineKind, OfflineRequest, LICENSE_FILE_FORMAT, REQUEST_FORMAT};
use crate::rules;
use crate::store::Store;
use crate::time::Timestamp;
use lambda_http::http::StatusCode;

fn expect(file: &OfflineRequest, kind: OfflineKind, now: Timestamp) -> Result<(), ApiError> {
    if file.format != REQUEST_FORMAT {
        return Err(ApiError::field("format", format!("must be `{REQUEST_FORMAT}`")));
    }
    // A request file is a one-off: replayed later it would mint fresh license files.
    if !rules::offline_request_is_fresh(file.created_at, now) {
        return Err(ApiError::field(
            "created_at",
            format!(
                "is {}: a request file may be submitted for {} days after it is written (and the offline \
                 machine's clock must be right); write a new one",
                file.created_at,
                rules::OFFLINE_REQUEST_MAX_AGE_DAYS
            ),
        ));
    }
    if file.kind != kind {
        let route = match file.kind {
            OfflineKind::Activate => "/v1/activate/offline",
            OfflineKind::Deactivate => "/v1/deactivate/offline",
        };
        return Err(ApiError::field("kind", format!("does not match this route; send this file to {route}")));
    }
    Ok(())
}

pub(super) async fn activate<S: Store>(
    app: &App<S>,
    file: OfflineRequest,
    idempotency: Option<&Idempotency>,
) -> Result<Reply, ApiError> {
    expect(&file, OfflineKind::Activate, app.now())?;
    let request = ActivateRequest {
        license_key: file.license_key,
        product: file.product,
        hardware_id: file.hardware_id,
        device_name: file.device_name,
        platform: file.platform,
        is_vm: false,
        nonce: Some(file.nonce),
    };
    let answer = |license: &License, device: &Device, now: Timestamp| {
        let code = rules::check(license, &request.product, Some(device), now);
        let expires_at = rules::offline_expires_at(license, now);
        let mut claims =
            verdict_claims(app, license, &request.hardware_id, Some(device), code, request.nonce.as_ref(), now);
        claims.offline = true;
        let expires_at = capped_exp(expires_at, license, Some(device), code);
        claims.exp = expires_at.unix();
        let token = app.signer()?.sign(&claims).map_err(ApiError::internal)?;
        let file = LicenseFile {
            format: LICENSE_FILE_FORMAT.into(),
            license_key: license.license_key.clone(),
            product: request.product.clone(),
            hardware_id: request.hardware_id.clone(),
            expires_at,
            token,
        };
        Reply::json(StatusCode::OK, &file)
    };
    activate_device(app, &request, true, idempotency, &answer).await
}

pub(super) async fn deactivate_file<S: Store>(
    app: &App<S>,
    file: OfflineRequest,
    idempotency: Option<&Idempotency>,
) -> Result<Reply, ApiError> {
    expect(&file, OfflineKind::Deactivate, app.now())?;
    let request =
        DeactivateRequest { license_key: file.license_key, product: file.product, hardware_id: file.hardware_id };
    deactivate(app, request, idempotency).await
}
