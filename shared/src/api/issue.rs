//! The vendor API: issue licenses, read one with its devices.

use super::deactivate::{release, Releaser};
use super::idempotency;
use super::refusals::Refusal;
use super::terms::{IssueRequest, LicensePatch};
use super::views::{FloatingLeases, Usage, VendorLicense};
use super::{committed, redecided, store_error, App, Reply};
use crate::error::{ApiError, ErrorCode};
use crate::input::{random_id, Email, HardwareId, IdempotencyKey, LicenseKey, MetadataInput, OrderId, Product};
use crate::model::{Expiration, Feature, License, LicenseType, Metadata, Metering, MAX_RELEASE_ALLOWANCE};
use crate::store::{IdempotencyRecord, Lookup, Store};
use crate::time::Timestamp;
use lambda_http::http::StatusCode;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

pub const MAX_QUANTITY: u32 = 1_000;
const MAX_SEATS: u32 = 1_000_000;
/// Each lease lives on its device's item and the seat limit in a counter, so a pool's size costs
/// nothing per operation (docs/scale.md); this bounds what a vendor can ask for by mistake.
pub const MAX_FLOATING_SEATS: u32 = 100_000;
const MAX_DAYS: u32 = 3_650;
const MAX_FEATURES: usize = 100;
const MAX_CONSUMPTIONS: u64 = 1_000_000_000_000;
/// Metadata is stored on every license of a batch and returned to the vendor; keep it small.
const MAX_METADATA_BYTES: usize = 2_048;

pub(super) fn within(field: &str, value: Option<u32>, min: u32, max: u32) -> Result<(), ApiError> {
    match value {
        Some(v) if v < min || v > max => {
            Err(ApiError::field(field, format!("must be between {min} and {max} (got {v})")))
        }
        _ => Ok(()),
    }
}

/// Consumption terms that make sense: overages only when allowed, and bounded counts.
fn validate_metering(prefix: &str, terms: &Metering) -> Result<(), ApiError> {
    for (name, value) in [("max_consumptions", terms.max_consumptions), ("max_overages", terms.max_overages)] {
        if value.is_some_and(|v| v > MAX_CONSUMPTIONS) {
            return Err(ApiError::field(format!("{prefix}{name}"), format!("must be at most {MAX_CONSUMPTIONS}")));
        }
    }
    if terms.max_overages.is_some() && !terms.allow_overages {
        return Err(ApiError::field(format!("{prefix}max_overages"), "needs `allow_overages`"));
    }
    Ok(())
}

pub(super) fn validate_features(features: &[Feature]) -> Result<(), ApiError> {
    if features.len() > MAX_FEATURES {
        return Err(ApiError::field("features", format!("may list at most {MAX_FEATURES} features")));
    }
    for (index, feature) in features.iter().enumerate() {
        validate_metering(&format!("features[{index}]."), &feature.metering())?;
    }
    let mut codes = HashSet::new();
    if let Some(duplicate) = features.iter().find(|f| !codes.insert(&f.code)) {
        return Err(ApiError::field("features", format!("lists `{}` more than once", duplicate.code)));
    }
    Ok(())
}

fn validate_floating(max_activations: u32, unlimited: bool) -> Result<(), ApiError> {
    if unlimited {
        return Err(ApiError::field(
            "allow_unlimited_activations",
            "cannot be true on a floating license (its seats are the leases it hands out)",
        ));
    }
    within("max_activations", Some(max_activations), 1, MAX_FLOATING_SEATS)
}

/// The metadata sent, if every value in it is stored exactly (the refusal names where it is not).
fn parse_metadata(metadata: &MetadataInput) -> Result<Metadata, ApiError> {
    let parsed = metadata.parse().map_err(|(path, reason)| ApiError::field(format!("metadata{path}"), reason))?;
    validate_metadata(&parsed)?;
    Ok(parsed)
}

/// The options set on `license` that mean nothing for its kind (floating, node-locked,
/// unlimited), each with why; `allowance_given`: `release_allowance` was named.
fn meaningless_options(license: &License, allowance_given: bool) -> Vec<(&'static str, &'static str)> {
    let mut found = Vec::new();
    if license.is_floating {
        if license.max_transfers.is_some() {
            found.push((
                "max_transfers",
                "has no meaning on a floating license: returning a lease is never a transfer (returning one \
                 early counts against `release_allowance` instead)",
            ));
        }
        if license.freeze_days > 0 {
            found.push(("freeze_days", "has no meaning on a floating license (freezes apply to node-locked seats)"));
        }
        if license.device_rotation {
            found.push((
                "device_rotation",
                "has no meaning on a floating license (a lapsed lease frees its seat by itself)",
            ));
        }
    } else if license.floating_timeout_minutes.is_some() {
        found.push(("floating_timeout_minutes", "needs `is_floating`"));
    }
    if license.max_borrow_hours.is_some() && !license.can_borrow {
        found.push(("max_borrow_hours", "needs `can_borrow`"));
    }
    if license.allow_unlimited_activations {
        if license.device_rotation {
            found.push(("device_rotation", "has no meaning with `allow_unlimited_activations` (no seat is ever full)"));
        }
        if allowance_given {
            found.push((
                "release_allowance",
                "has no meaning with `allow_unlimited_activations` (there are no seats to multiply)",
            ));
        }
    }
    found
}

/// Refuses the first option of `after` that means nothing for its kind and was not so already.
fn refuse_meaningless(after: &License, before: Option<&License>, allowance_given: bool) -> Result<(), ApiError> {
    let known = before.map(|l| meaningless_options(l, false)).unwrap_or_default();
    match meaningless_options(after, allowance_given).into_iter().find(|option| !known.contains(option)) {
        Some((field, why)) => Err(ApiError::field(field, why)),
        None => Ok(()),
    }
}

fn validate_metadata(metadata: &Metadata) -> Result<(), ApiError> {
    let size = serde_json::to_string(metadata).map(|s| s.len()).unwrap_or(usize::MAX);
    if size > MAX_METADATA_BYTES {
        return Err(ApiError::field(
            "metadata",
            format!("must be at most {MAX_METADATA_BYTES} bytes of JSON (got {size})"),
        ));
    }
    Ok(())
}

impl IssueRequest {
    /// The bounds serde cannot express, each refusal naming its field; the metadata once checked.
    pub fn validate(&self) -> Result<Metadata, ApiError> {
        within("quantity", self.quantity, 1, MAX_QUANTITY)?;
        within("max_activations", Some(self.max_activations), 0, MAX_SEATS)?;
        let placeholder = LicenseKey::parse("PLACEHOLDER").map_err(ApiError::internal)?;
        let license = self.license(placeholder, String::new(), Timestamp::from_unix(0));
        if license.max_activations == 0 && !license.allow_unlimited_activations {
            return Err(ApiError::field(
                "max_activations",
                "must be at least 1 unless `allow_unlimited_activations` is true",
            ));
        }
        if let Some(Expiration::DaysAfterActivation { days } | Expiration::DaysAfterCreation { days }) = self.expiration
        {
            within("expiration.days", Some(days), 1, Expiration::MAX_DAYS)?;
        }
        within("grace_period_days", self.grace_period_days, 0, MAX_DAYS)?;
        within("freeze_days", self.freeze_days, 0, MAX_DAYS)?;
        within("validation_interval_days", self.validation_interval_days, 1, MAX_DAYS)?;
        within("floating_timeout_minutes", self.floating_timeout_minutes, 1, 7 * 24 * 60)?;
        within("max_borrow_hours", self.max_borrow_hours, 1, 24 * 365)?;
        within("max_transfers", self.max_transfers, 0, MAX_SEATS)?;
        within("release_allowance", self.release_allowance, 0, MAX_RELEASE_ALLOWANCE)?;
        if license.is_floating {
            validate_floating(license.max_activations, license.allow_unlimited_activations)?;
        }
        if license.can_borrow && !license.is_floating {
            return Err(ApiError::field("can_borrow", "needs `is_floating`: only a floating seat can be borrowed"));
        }
        if license.can_borrow && license.max_borrow_hours.is_none() {
            return Err(ApiError::field("max_borrow_hours", "is required when `can_borrow` is true"));
        }
        validate_metering("", &license.metering())?;
        validate_features(&license.features)?;
        let metadata = self.metadata.as_ref().map(parse_metadata).transpose()?.unwrap_or_default();
        refuse_meaningless(&license, None, self.release_allowance.is_some())?;
        Ok(metadata)
    }

    /// The license these terms make: every term left out at its default.
    fn license(&self, license_key: LicenseKey, id: String, now: Timestamp) -> License {
        let mut license =
            License::new(license_key, id, self.product.clone(), self.license_type, self.max_activations, now);
        self.set_terms(&mut license);
        // A license of type trial is a trial whatever the flag says.
        license.is_trial |= self.license_type == LicenseType::Trial;
        license
    }

    fn new_licenses(&self, metadata: &Metadata, now: Timestamp) -> Result<Vec<License>, ApiError> {
        (0..self.quantity.unwrap_or(1))
            .map(|_| {
                let key = LicenseKey::generate().map_err(ApiError::internal)?;
                let id = random_id("lic").map_err(ApiError::internal)?;
                Ok(License { metadata: metadata.clone(), ..self.license(key, id, now) })
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
    idempotency_key: Option<IdempotencyKey>,
    body: &[u8],
) -> Result<Reply, ApiError> {
    let metadata = request.validate()?;
    // The request's fingerprint is only needed (and the body only parsed again) with a key.
    let idempotency = idempotency_key.map(|key| (key, idempotency::fingerprint("", body)));
    if let Some((key, fingerprint)) = &idempotency {
        if let Some(record) = app.store.idempotency_record(key.as_str()).await.map_err(store_error)? {
            return replay(app, &record, fingerprint).await;
        }
    }
    let now = app.now();
    let (request, metadata, idempotency) = (&request, &metadata, &idempotency);
    redecided(|| async move {
        // Keys are random; a clash with an existing key (2^-125 per pair) only means drawing again.
        let licenses = request.new_licenses(metadata, now)?;
        let record = idempotency.as_ref().map(|(key, fingerprint)| IdempotencyRecord {
            idempotency_key: key.to_string(),
            fingerprint: fingerprint.clone(),
            license_keys: licenses.iter().map(|l| l.license_key.clone()).collect(),
            created_at: now,
            ttl: now.unix() + idempotency::TTL_SECONDS,
        });
        if committed(app.store.create_licenses(&licenses, record.as_ref()).await, ())?.is_some() {
            return issued(&licenses).map(Some);
        }
        // A concurrent request with the same key may have won: answer as it did.
        if let Some((key, fingerprint)) = idempotency {
            if let Some(record) = app.store.idempotency_record(key.as_str()).await.map_err(store_error)? {
                return replay(app, &record, fingerprint).await.map(Some);
            }
        }
        Ok(None)
    })
    .await
}

fn issued(licenses: &[License]) -> Result<Reply, ApiError> {
    Reply::json(StatusCode::CREATED, &Issued { licenses: licenses.iter().map(VendorLicense::of).collect() })
}

/// The first answer again: the same licenses (as they stand now), no new keys.
async fn replay<S: Store>(app: &App<S>, record: &IdempotencyRecord, fingerprint: &str) -> Result<Reply, ApiError> {
    if record.fingerprint != fingerprint {
        return Err(Refusal::IdempotencyKeyReused.into());
    }
    let licenses = app.store.licenses(&record.license_keys).await.map_err(store_error)?;
    issued(&licenses)
}

pub(super) fn parse_key(raw: &str) -> Result<LicenseKey, ApiError> {
    LicenseKey::parse(raw).map_err(|e| ApiError::field("license_key", e))
}

/// `GET /v1/licenses?customer_email=...`, `?order_id=...`, `?trial_email=...`, `?product=...` or
/// every license, with `limit` and `cursor`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    customer_email: Option<Email>,
    #[serde(default)]
    order_id: Option<OrderId>,
    #[serde(default)]
    trial_email: Option<Email>,
    #[serde(default)]
    product: Option<Product>,
    #[serde(default)]
    limit: Option<String>,
    #[serde(default)]
    cursor: Option<String>,
}

const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 100;

#[derive(Serialize)]
struct Listed<'a> {
    licenses: Vec<VendorLicense<'a>>,
    next_cursor: Option<&'a str>,
}

pub(super) async fn list<S: Store>(app: &App<S>, query: ListQuery) -> Result<Reply, ApiError> {
    let lookup =
        match (query.customer_email, query.order_id, query.trial_email, query.product) {
            (Some(email), None, None, None) => Lookup::CustomerEmail(email),
            (None, Some(order), None, None) => Lookup::OrderId(order),
            (None, None, Some(email), None) => Lookup::TrialEmail(email),
            (None, None, None, Some(product)) => Lookup::Product(product),
            (None, None, None, None) => Lookup::All,
            _ => return Err(ApiError::field(
                "customer_email",
                "`customer_email`, `order_id`, `trial_email` and `product` filter one at a time (none: every license)",
            )),
        };
    let limit = page_limit(query.limit.as_deref(), DEFAULT_PAGE, MAX_PAGE)?;
    if query.cursor.as_ref().is_some_and(|c| c.len() > 2_048) {
        return Err(ApiError::field("cursor", "is not a cursor this listing handed out"));
    }
    let page = app.store.list_licenses(&lookup, limit, query.cursor.as_deref()).await.map_err(store_error)?;
    Reply::json(
        StatusCode::OK,
        &Listed {
            licenses: page.licenses.iter().map(VendorLicense::of).collect(),
            next_cursor: page.next_cursor.as_deref(),
        },
    )
}

impl LicensePatch {
    fn validate(&self) -> Result<(), ApiError> {
        if self.is_empty() {
            return Err(ApiError::new(ErrorCode::InvalidField, "the patch names no field to change"));
        }
        if let Some(max) = self.max_activations {
            within("max_activations", Some(max), 0, MAX_SEATS)?;
        }
        if let Some(Expiration::DaysAfterActivation { days } | Expiration::DaysAfterCreation { days }) = self.expiration
        {
            within("expiration.days", Some(days), 1, Expiration::MAX_DAYS)?;
        }
        within("grace_period_days", self.grace_period_days, 0, MAX_DAYS)?;
        within("freeze_days", self.freeze_days, 0, MAX_DAYS)?;
        within("validation_interval_days", self.validation_interval_days.flatten(), 1, MAX_DAYS)?;
        within("max_transfers", self.max_transfers.flatten(), 0, MAX_SEATS)?;
        within("release_allowance", self.release_allowance, 0, MAX_RELEASE_ALLOWANCE)?;
        if let Some(features) = &self.features {
            validate_features(features)?;
        }
        Ok(())
    }

    /// The metadata changes, checked: `null` alone is refused (a `null` value inside removes a key).
    fn metadata_changes(&self) -> Result<Option<Metadata>, ApiError> {
        match &self.metadata {
            None => Ok(None),
            Some(None) => Err(ApiError::field(
                "metadata",
                "must be an object of changes (a `null` value inside it removes that key)",
            )),
            Some(Some(metadata)) => parse_metadata(metadata).map(Some),
        }
    }

    /// The license with this patch applied, one version on.
    fn apply(&self, license: &License, metadata: Option<&Metadata>, now: Timestamp) -> Result<License, ApiError> {
        let mut l = license.clone();
        self.set_fields(&mut l);
        refuse_meaningless(&l, Some(license), self.release_allowance.is_some())?;
        if let Some(changes) = metadata {
            for (name, value) in changes {
                match value {
                    serde_json::Value::Null => l.metadata.remove(name),
                    value => l.metadata.insert(name.clone(), value.clone()),
                };
            }
            validate_metadata(&l.metadata)?;
        }
        if l.is_floating {
            validate_floating(l.max_activations, l.allow_unlimited_activations)?;
        }
        validate_metering("", &l.metering())?;
        if l.max_activations == 0 && !l.allow_unlimited_activations {
            return Err(ApiError::field(
                "max_activations",
                "must be at least 1 unless `allow_unlimited_activations` is true",
            ));
        }
        l.updated_at = now;
        l.version += 1;
        Ok(l)
    }
}

#[derive(Serialize)]
struct Updated<'a> {
    license: VendorLicense<'a>,
}

pub(super) async fn update<S: Store>(app: &App<S>, raw_key: &str, patch: LicensePatch) -> Result<Reply, ApiError> {
    let key = parse_key(raw_key)?;
    patch.validate()?;
    let metadata = patch.metadata_changes()?;
    let (key, patch, metadata) = (&key, &patch, &metadata);
    redecided(|| async move {
        let license = app.store.licenses(std::slice::from_ref(key)).await.map_err(store_error)?.pop();
        let license = license.ok_or(Refusal::LicenseNotFound(key))?;
        if let Some(expected) = patch.version.filter(|v| *v != license.version) {
            return Err(Refusal::VersionConflict { current: license.version, expected }.into());
        }
        let updated = patch.apply(&license, metadata.as_ref(), app.now())?;
        // A patch that changes nothing (suspending a suspended license) writes nothing: the version
        // and `updated_at` stay, and no change is reported where none happened.
        let unchanged = License { version: license.version, updated_at: license.updated_at, ..updated.clone() };
        if unchanged == license {
            return Reply::json(StatusCode::OK, &Updated { license: VendorLicense::of(&license) }).map(Some);
        }
        if committed(app.store.replace_license(&license, &updated).await, ())?.is_none() {
            return Ok(None);
        }
        Reply::json(StatusCode::OK, &Updated { license: VendorLicense::of(&updated) }).map(Some)
    })
    .await
}

#[derive(Serialize)]
struct Released<'a> {
    released: &'a HardwareId,
    /// Until when the device's last credential may still be valid: it may run offline until then.
    credential_valid_until: Option<Timestamp>,
    license: VendorLicense<'a>,
}

/// `DELETE /v1/licenses/{license_key}/devices/{hardware_id}`: the vendor frees a seat; not a
/// transfer, and owed nothing by the release allowance (the vendor decides).
pub(super) async fn release_device<S: Store>(
    app: &App<S>,
    raw_key: &str,
    raw_hardware_id: &str,
) -> Result<Reply, ApiError> {
    let key = parse_key(raw_key)?;
    let hardware_id = HardwareId::parse(raw_hardware_id).map_err(|e| ApiError::field("hardware_id", e))?;
    release(app, &key, &hardware_id, Releaser::Vendor, |released, _| {
        Reply::json(
            StatusCode::OK,
            &Released {
                released: &hardware_id,
                credential_valid_until: released.credential_valid_until,
                license: VendorLicense::of(&released.license),
            },
        )
    })
    .await
}

#[derive(Serialize)]
struct LicenseDetail<'a> {
    license: VendorLicense<'a>,
    /// One page of the bound devices, in hardware id order (or the one asked for).
    devices: &'a [crate::model::Device],
    /// Present while more devices follow: pass it as `cursor` for the next page.
    next_cursor: Option<String>,
    usage: Usage,
    #[serde(skip_serializing_if = "Option::is_none")]
    floating: Option<FloatingLeases>,
}

/// `GET /v1/licenses/{license_key}?limit=&cursor=` or `?hardware_id=`: the license with one page
/// of its devices, or with the one device asked for.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShowQuery {
    #[serde(default)]
    limit: Option<String>,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    hardware_id: Option<String>,
}

const DEFAULT_DEVICE_PAGE: u32 = 100;
const MAX_DEVICE_PAGE: u32 = 1_000;

/// A page limit given as query text, within `1..=max`.
pub(super) fn page_limit(text: Option<&str>, default: u32, max: u32) -> Result<u32, ApiError> {
    match text {
        None => Ok(default),
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| ApiError::field("limit", format!("must be a whole number from 1 to {max}"))),
    }
}

/// A device page's cursor: the last hardware id of the page before, as base64url.
fn device_cursor(hardware_id: &HardwareId) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hardware_id.as_str())
}

fn parse_device_cursor(cursor: &str) -> Result<HardwareId, ApiError> {
    use base64::Engine;
    let refused = || ApiError::field("cursor", "is not a cursor this listing handed out");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor).map_err(|_| refused())?;
    let text = String::from_utf8(bytes).map_err(|_| refused())?;
    HardwareId::parse(text).map_err(|_| refused())
}

pub(super) async fn show<S: Store>(app: &App<S>, raw_key: &str, query: ShowQuery) -> Result<Reply, ApiError> {
    let key = parse_key(raw_key)?;
    let limit = page_limit(query.limit.as_deref(), DEFAULT_DEVICE_PAGE, MAX_DEVICE_PAGE)?;
    let after = query.cursor.as_deref().map(parse_device_cursor).transpose()?;
    let one = query.hardware_id.map(HardwareId::parse).transpose().map_err(|e| ApiError::field("hardware_id", e))?;
    if one.is_some() && (after.is_some() || query.limit.is_some()) {
        return Err(ApiError::field("hardware_id", "asks for one device: it takes no `limit` or `cursor`"));
    }
    let (license, mut devices, next_cursor) = match &one {
        Some(hardware_id) => {
            let (license, device) = app.store.license_and_device(&key, hardware_id).await.map_err(store_error)?;
            (license, device.into_iter().collect(), None)
        }
        None => {
            let license = app.store.licenses(std::slice::from_ref(&key)).await.map_err(store_error)?.pop();
            let (devices, more) = match &license {
                Some(_) => app.store.devices_page(&key, limit, after.as_ref()).await.map_err(store_error)?,
                None => (Vec::new(), false),
            };
            let next = more.then(|| devices.last().map(|d| device_cursor(&d.hardware_id))).flatten();
            (license, devices, next)
        }
    };
    let license = license.ok_or(Refusal::LicenseNotFound(&key))?;
    // Leases an earlier version kept in the license item, until the next lease operation moves them.
    for device in &mut devices {
        device.lease_expires_at = device.lease_expires_at.or(license.unmoved_leases.get(&device.hardware_id).copied());
    }
    let usage = Usage::of(&license);
    let floating = license.is_floating.then(|| FloatingLeases { seats_held: crate::rules::seats_held(&license) });
    Reply::json(
        StatusCode::OK,
        &LicenseDetail { license: VendorLicense::of(&license), devices: &devices, next_cursor, usage, floating },
    )
}
