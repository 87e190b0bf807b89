//! The table's keys and items: partition and sort keys of each kind of item, listing cursors, and
//! the mapping between items and the model.

use crate::input::{HardwareId, LicenseKey, Product};
use crate::model::{Device, License, LicenseStatus};
use crate::store::{Lookup, StoreError};
use crate::time::Timestamp;
use aws_sdk_dynamodb::types::AttributeValue;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use std::collections::HashMap;

pub(super) type Item = HashMap<String, AttributeValue>;

pub(super) const LICENSE_SK: &str = "L";
pub(super) const DEVICE_PREFIX: &str = "D#";
pub(super) const CUSTOMER_INDEX: &str = "GSI1";
pub(super) const ORDER_INDEX: &str = "GSI2";
/// License items by product, newest first (keys only: a license's creation writes it, its updates
/// do not).
pub(super) const PRODUCT_INDEX: &str = "ByProduct";
/// Every item with a `last_seen_at` (the devices, bound or tombstoned) by license, the least
/// recently seen first: what a rotation picks from without reading every device.
pub(super) const SEEN_INDEX: &str = "BySeen";
/// A released device: kept as a tombstone until TTL deletes it, read as absent everywhere.
pub(super) const RELEASED: &str = "attribute_exists(released_at)";
pub(super) const BOUND: &str = "attribute_not_exists(released_at)";
/// Where a floating license's leases are: before leases were items of their own, a map in the
/// license item (hardware id -> lease end); since, the string [`LEASES_ON_DEVICES`], which the
/// earlier versions' lease code can neither read nor write (its writes fail instead of keeping
/// leases where this version does not count them).
pub(super) const LEASES: &str = "leases";
pub(super) const LEASES_ON_DEVICES: &str = "on devices";
/// Leases of the earlier layout being moved to their devices (see `upgrade_leases`).
pub(super) const MOVING_LEASES: &str = "moving_leases";
/// The license's count of leases, which the seat limit's conditions hold.
pub(super) const LEASES_HELD: &str = "leases_held";
/// A device's lease end, on its item while it holds a lease.
pub(super) const LEASE_END: &str = "lease_expires_at";
/// Every device holding a lease by license, the earliest end first: where a takeover finds a
/// lapsed lease without reading the pool (sparse: only devices holding a lease are in it).
pub(super) const LEASE_INDEX: &str = "ByLeaseEnd";
/// The license attribute holding the release allowance in use (hardware id -> credential end).
pub(super) const RELEASES: &str = "releases";
/// The license attribute holding consumption counters (counter key -> {period, used}).
pub(super) const CONSUMPTION: &str = "consumption";
/// Attributes only their own operations write; a patch keeps them as they are.
pub(super) const OPERATION_OWNED: [&str; 5] = [LEASES, MOVING_LEASES, LEASES_HELD, RELEASES, CONSUMPTION];

pub(super) fn is_released(item: &Item) -> bool {
    item.contains_key("released_at")
}

/// TransactWriteItems takes at most 100 items.
pub(super) const MAX_TRANSACTION_ITEMS: usize = 100;

pub(super) fn license_pk(key: &LicenseKey) -> AttributeValue {
    AttributeValue::S(format!("L#{key}"))
}

/// A product's trial terms: `P#<product>` / `TRIAL`.
pub(super) fn trial_terms_pk(product: &Product) -> AttributeValue {
    AttributeValue::S(format!("P#{product}"))
}

/// A device's trial of a product: `T#<product>#<hardware_id>` / `TRIAL` (products have no `#`).
pub(super) fn trial_marker_pk(product: &Product, hardware_id: &HardwareId) -> AttributeValue {
    AttributeValue::S(format!("T#{product}#{hardware_id}"))
}

pub(super) const TRIAL_SK: &str = "TRIAL";

pub(super) fn device_sk(hardware_id: &HardwareId) -> AttributeValue {
    AttributeValue::S(format!("{DEVICE_PREFIX}{hardware_id}"))
}

pub(super) fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_string())
}

/// A license status as stored (its serde name), for conditions on it.
pub(super) fn status(status: LicenseStatus) -> AttributeValue {
    let name = serde_json::to_value(status).ok().and_then(|v| v.as_str().map(str::to_string));
    AttributeValue::S(name.unwrap_or_default())
}

pub(super) fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

pub(super) const IDEMPOTENCY_SK: &str = "I";

pub(super) fn idempotency_pk(idempotency_key: &str) -> AttributeValue {
    AttributeValue::S(format!("I#{idempotency_key}"))
}

pub(super) const RECEIPT_SK: &str = "R";

/// A receipt's partition: its scope (which holds no `#` after its kind) and then the key.
pub(super) fn receipt_pk(scope: &str, idempotency_key: &str) -> AttributeValue {
    AttributeValue::S(format!("R#{scope}#{idempotency_key}"))
}

/// The index, its partition-key attribute and value for a lookup (`None`: the listing of every
/// license, a scan).
pub(super) fn lookup_index(lookup: &Lookup) -> Option<(&'static str, &'static str, String)> {
    Some(match lookup {
        Lookup::CustomerEmail(email) => (CUSTOMER_INDEX, "GSI1PK", format!("C#{}", email.as_str())),
        Lookup::OrderId(order) => (ORDER_INDEX, "GSI2PK", format!("O#{order}")),
        Lookup::TrialEmail(email) => (CUSTOMER_INDEX, "GSI1PK", format!("{TRIAL_EMAIL_PREFIX}{}", email.as_str())),
        Lookup::Product(product) => (PRODUCT_INDEX, "product", product.to_string()),
        Lookup::All => return None,
    })
}

/// A scan's cursor: the key it resumes after (any item's: a scan may stop at a device), as
/// base64url JSON. Only well-formed keys are accepted (DynamoDB refuses empty or oversized ones).
pub(super) fn decode_scan_cursor(cursor: &str) -> Result<Item, StoreError> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| StoreError::InvalidCursor)?;
    let object: HashMap<String, String> = serde_json::from_slice(&bytes).map_err(|_| StoreError::InvalidCursor)?;
    let fits = |name: &str, max: usize| object.get(name).is_some_and(|v| !v.is_empty() && v.len() <= max);
    if object.len() != 2 || !fits("PK", 2_048) || !fits("SK", 1_024) {
        return Err(StoreError::InvalidCursor);
    }
    Ok(object.into_iter().map(|(name, value)| (name, AttributeValue::S(value))).collect())
}

/// Trial e-mails share the customer index under their own prefix, so a customer lookup never
/// finds an address nobody verified.
pub(super) const TRIAL_EMAIL_PREFIX: &str = "TE#";

/// A cursor is DynamoDB's LastEvaluatedKey (all strings) as base64url JSON.
pub(super) fn encode_cursor(key: &Item) -> Option<String> {
    let object: serde_json::Map<String, serde_json::Value> = key
        .iter()
        .map(|(name, value)| value.as_s().ok().map(|s| (name.clone(), serde_json::Value::String(s.clone()))))
        .collect::<Option<_>>()?;
    Some(URL_SAFE_NO_PAD.encode(serde_json::Value::Object(object).to_string()))
}

/// Accepts only a cursor of the shape this lookup hands out, for this lookup's partition.
pub(super) fn decode_cursor(
    cursor: &str,
    partition_attribute: &str,
    partition_value: &str,
) -> Result<Item, StoreError> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| StoreError::InvalidCursor)?;
    let object: HashMap<String, String> = serde_json::from_slice(&bytes).map_err(|_| StoreError::InvalidCursor)?;
    let mut names: Vec<&str> = object.keys().map(String::as_str).collect();
    names.sort_unstable();
    let mut expected = vec!["PK", "SK", "created_at", partition_attribute];
    expected.sort_unstable();
    if names != expected || object.get(partition_attribute).map(String::as_str) != Some(partition_value) {
        return Err(StoreError::InvalidCursor);
    }
    // The key of a license item: DynamoDB refuses a start key with empty or foreign values (a 500).
    let license_key = object["PK"].strip_prefix("L#").map(LicenseKey::parse);
    let created_at = crate::time::Timestamp::parse(&object["created_at"]).ok();
    let a_license = object["SK"] == LICENSE_SK && matches!(license_key, Some(Ok(_)));
    // A product's trial records share its index, so a page of its licenses may stop at one.
    let trial_record = |pk: &str| {
        pk.strip_prefix("T#")
            .and_then(|rest| rest.strip_prefix(partition_value))
            .and_then(|rest| rest.strip_prefix('#'))
            .is_some_and(|hardware_id| HardwareId::parse(hardware_id).is_ok())
    };
    let a_trial_record = partition_attribute == "product" && object["SK"] == TRIAL_SK && trial_record(&object["PK"]);
    if !(a_license || a_trial_record) || created_at.is_none() {
        return Err(StoreError::InvalidCursor);
    }
    Ok(object.into_iter().map(|(name, value)| (name, AttributeValue::S(value))).collect())
}

pub(super) fn license_from(mut item: Item) -> Result<License, StoreError> {
    // Leases kept as earlier versions kept them, in the map or being moved, are not moved yet.
    let unmoved = [LEASES, MOVING_LEASES].into_iter().filter_map(|name| match item.remove(name) {
        Some(AttributeValue::M(entries)) => Some(entries),
        _ => None,
    });
    let mut unmoved_leases = std::collections::BTreeMap::new();
    for (holder, end) in unmoved.flatten() {
        let unreadable = || StoreError::Internal(format!("unreadable lease of {holder}"));
        let end = end.as_s().ok().and_then(|end| Timestamp::parse(end).ok()).ok_or_else(unreadable)?;
        unmoved_leases.insert(HardwareId::parse(&holder).map_err(|_| unreadable())?, end);
    }
    let mut license: License =
        serde_dynamo::from_item(item).map_err(|e| StoreError::Internal(format!("unreadable license item: {e}")))?;
    license.unmoved_leases = unmoved_leases;
    Ok(license)
}

/// The hardware id of a device item's sort key.
pub(super) fn hardware_id_of(item: &Item) -> Result<HardwareId, StoreError> {
    let sk = item.get("SK").and_then(|sk| sk.as_s().ok());
    sk.and_then(|sk| sk.strip_prefix(DEVICE_PREFIX))
        .and_then(|id| HardwareId::parse(id).ok())
        .ok_or_else(|| StoreError::Internal("a device item without a device key".into()))
}

pub(super) fn device_from(item: Item) -> Result<Device, StoreError> {
    serde_dynamo::from_item(item).map_err(|e| StoreError::Internal(format!("unreadable device item: {e}")))
}

pub(super) fn license_item(license: &License) -> Result<Item, StoreError> {
    let mut item: Item =
        serde_dynamo::to_item(license).map_err(|e| StoreError::Internal(format!("license not storable: {e}")))?;
    item.insert("PK".into(), license_pk(&license.license_key));
    item.insert("SK".into(), s(LICENSE_SK));
    if let Some(email) = license.customer.as_ref().and_then(|c| c.email.as_ref()) {
        item.insert("GSI1PK".into(), AttributeValue::S(format!("C#{}", email.as_str())));
    }
    if let Some(email) = &license.trial_email {
        item.insert("GSI1PK".into(), AttributeValue::S(format!("{TRIAL_EMAIL_PREFIX}{}", email.as_str())));
    }
    if let Some(order) = &license.order_id {
        item.insert("GSI2PK".into(), AttributeValue::S(format!("O#{order}")));
    }
    Ok(item)
}

/// A device bound to `license`. The item also carries the license's product: a change of the
/// device alone (in the table's stream) then says which product it is for.
pub(super) fn device_item(license: &License, device: &Device) -> Result<Item, StoreError> {
    let mut item: Item =
        serde_dynamo::to_item(device).map_err(|e| StoreError::Internal(format!("device not storable: {e}")))?;
    item.insert("PK".into(), license_pk(&license.license_key));
    item.insert("SK".into(), device_sk(&device.hardware_id));
    item.insert("product".into(), s(license.product.as_str()));
    if crate::actor::offline() {
        item.insert(crate::actor::ACTIVATED_VIA.into(), s(crate::actor::VIA_OFFLINE));
    }
    if let Some(request) = crate::actor::request_id() {
        item.insert(crate::actor::REQUEST_ATTRIBUTE.into(), s(&request));
    }
    Ok(item)
}

pub(super) fn built<T, E: std::fmt::Display>(result: Result<T, E>) -> Result<T, StoreError> {
    result.map_err(|e| StoreError::Internal(format!("request not buildable: {e}")))
}
