//! The vendor API: issue licenses, read one with its devices.

use super::views::{Usage, VendorLicense};
use super::{back_off, concurrent_update, store_error, App, Reply, MAX_WRITE_ATTEMPTS};
use crate::error::{ApiError, ErrorCode};
use crate::input::{random_id, LicenseKey, OrderId, Product};
use crate::model::{Customer, Expiration, Feature, License, LicenseStatus, LicenseType, Metadata};
use crate::store::{Store, WriteError};
use crate::time::Timestamp;
use lambda_http::http::StatusCode;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

pub const MAX_QUANTITY: u32 = 1_000;
const MAX_SEATS: u32 = 1_000_000;
const MAX_DAYS: u32 = 3_650;
const MAX_FEATURES: usize = 100;
/// Metadata is stored on every license of a batch and returned to the vendor; keep it small.
const MAX_METADATA_BYTES: usize = 2_048;

/// `POST /v1/licenses`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssueRequest {
    pub product: Product,
    #[serde(default)]
    pub quantity: Option<u32>,
    #[serde(default)]
    pub customer: Option<Customer>,
    #[serde(default)]
    pub order_id: Option<OrderId>,
    pub license_type: LicenseType,
    pub max_activations: u32,
    #[serde(default)]
    pub allow_unlimited_activations: bool,
    #[serde(default)]
    pub expiration: Option<Expiration>,
    #[serde(default)]
    pub grace_period_days: Option<u32>,
    #[serde(default)]
    pub maintenance_until: Option<Timestamp>,
    #[serde(default)]
    pub is_floating: bool,
    #[serde(default)]
    pub floating_timeout_minutes: Option<u32>,
    #[serde(default)]
    pub can_borrow: bool,
    #[serde(default)]
    pub max_borrow_hours: Option<u32>,
    #[serde(default)]
    pub prevent_vm: bool,
    #[serde(default)]
    pub max_transfers: Option<u32>,
    #[serde(default)]
    pub freeze_days: Option<u32>,
    #[serde(default)]
    pub device_rotation: bool,
    #[serde(default)]
    pub validation_interval_days: Option<u32>,
    #[serde(default)]
    pub work_if_validation_blocked: bool,
    #[serde(default)]
    pub is_trial: bool,
    #[serde(default)]
    pub is_test: bool,
    #[serde(default)]
    pub features: Vec<Feature>,
    #[serde(default)]
    pub metadata: Option<Metadata>,
}

fn within(field: &str, value: Option<u32>, min: u32, max: u32) -> Result<(), ApiError> {
    match value {
        Some(v) if v < min || v > max => Err(ApiError::field(
            field,
            format!("must be between {min} and {max} (got {v})"),
        )),
        _ => Ok(()),
    }
}

impl IssueRequest {
    /// The bounds serde cannot express, each refusal naming its field.
    pub fn validate(&self) -> Result<(), ApiError> {
        within("quantity", self.quantity, 1, MAX_QUANTITY)?;
        within("max_activations", Some(self.max_activations), 0, MAX_SEATS)?;
        if self.max_activations == 0 && !self.allow_unlimited_activations {
            return Err(ApiError::field(
                "max_activations",
                "must be at least 1 unless `allow_unlimited_activations` is true",
            ));
        }
        if let Some(
            Expiration::DaysAfterActivation { days } | Expiration::DaysAfterCreation { days },
        ) = self.expiration
        {
            within("expiration.days", Some(days), 1, Expiration::MAX_DAYS)?;
        }
        within("grace_period_days", self.grace_period_days, 0, MAX_DAYS)?;
        within("freeze_days", self.freeze_days, 0, MAX_DAYS)?;
        within(
            "validation_interval_days",
            self.validation_interval_days,
            1,
            MAX_DAYS,
        )?;
        within(
            "floating_timeout_minutes",
            self.floating_timeout_minutes,
            1,
            7 * 24 * 60,
        )?;
        within("max_borrow_hours", self.max_borrow_hours, 1, 24 * 365)?;
        within("max_transfers", self.max_transfers, 0, MAX_SEATS)?;
        if self.features.len() > MAX_FEATURES {
            return Err(ApiError::field(
                "features",
                format!("may list at most {MAX_FEATURES} features"),
            ));
        }
        let mut codes = HashSet::new();
        if let Some(duplicate) = self.features.iter().find(|f| !codes.insert(&f.code)) {
            return Err(ApiError::field(
                "features",
                format!("lists `{}` more than once", duplicate.code),
            ));
        }
        if let Some(metadata) = &self.metadata {
            let size = serde_json::to_string(metadata)
                .map(|s| s.len())
                .unwrap_or(usize::MAX);
            if size > MAX_METADATA_BYTES {
                return Err(ApiError::field(
                    "metadata",
                    format!("must be at most {MAX_METADATA_BYTES} bytes of JSON (got {size})"),
                ));
            }
        }
        Ok(())
    }

    fn license(&self, license_key: LicenseKey, id: String, now: Timestamp) -> License {
        License {
            license_key,
            id,
            product: self.product.clone(),
            license_type: self.license_type,
            status: LicenseStatus::Active,
            customer: self.customer.clone(),
            order_id: self.order_id.clone(),
            max_activations: self.max_activations,
            allow_unlimited_activations: self.allow_unlimited_activations,
            times_activated: 0,
            transfer_count: 0,
            max_transfers: self.max_transfers,
            expiration: self.expiration.unwrap_or(Expiration::Never),
            grace_period_days: self.grace_period_days.unwrap_or(0),
            maintenance_until: self.maintenance_until,
            is_floating: self.is_floating,
            floating_timeout_minutes: self.floating_timeout_minutes,
            can_borrow: self.can_borrow,
            max_borrow_hours: self.max_borrow_hours,
            prevent_vm: self.prevent_vm,
            freeze_days: self.freeze_days.unwrap_or(0),
            device_rotation: self.device_rotation,
            validation_interval_days: self.validation_interval_days,
            work_if_validation_blocked: self.work_if_validation_blocked,
            is_trial: self.is_trial || self.license_type == LicenseType::Trial,
            is_test: self.is_test,
            features: self.features.clone(),
            metadata: self.metadata.clone().unwrap_or_default(),
            created_at: now,
            updated_at: now,
            first_activated_at: None,
            last_activated_at: None,
            version: 0,
        }
    }

    fn new_licenses(&self, now: Timestamp) -> Result<Vec<License>, ApiError> {
        (0..self.quantity.unwrap_or(1))
            .map(|_| {
                let key = LicenseKey::generate().map_err(ApiError::internal)?;
                let id = random_id("lic").map_err(ApiError::internal)?;
                Ok(self.license(key, id, now))
            })
            .collect()
    }
}

#[derive(Serialize)]
struct Issued<'a> {
    licenses: Vec<VendorLicense<'a>>,
}

pub(super) async fn create<S: Store>(
    app: &App<S>,
    request: IssueRequest,
) -> Result<Reply, ApiError> {
    request.validate()?;
    let now = Timestamp::now();
    // Keys are random; a clash with an existing key (2^-125 per pair) only means drawing again.
    for attempt in 0..MAX_WRITE_ATTEMPTS {
        let licenses = request.new_licenses(now)?;
        match app.store.create_licenses(&licenses).await {
            Ok(()) => {
                return Reply::json(
                    StatusCode::CREATED,
                    &Issued {
                        licenses: licenses.iter().map(VendorLicense::of).collect(),
                    },
                );
            }
            Err(WriteError::Conflict) => back_off(attempt).await,
            Err(WriteError::Store(err)) => return Err(store_error(err)),
        }
    }
    Err(concurrent_update())
}

#[derive(Serialize)]
struct LicenseDetail<'a> {
    license: VendorLicense<'a>,
    devices: &'a [crate::model::Device],
    usage: Usage,
}

pub(super) async fn show<S: Store>(app: &App<S>, raw_key: &str) -> Result<Reply, ApiError> {
    let key = LicenseKey::parse(raw_key).map_err(|e| ApiError::field("license_key", e))?;
    let (license, devices) = app
        .store
        .license_with_devices(&key)
        .await
        .map_err(store_error)?
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::LicenseNotFound,
                format!("no license with key {key}"),
            )
        })?;
    let usage = Usage::of(&license, &devices);
    Reply::json(
        StatusCode::OK,
        &LicenseDetail {
            license: VendorLicense::of(&license),
            devices: &devices,
            usage,
        },
    )
}
