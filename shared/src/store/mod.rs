//! The storage port: the few reads and atomic writes the handlers need, with a DynamoDB
//! implementation and an in-memory one that keeps the same conditions (for fast unit tests).

mod dynamo;
mod memory;

pub use dynamo::{create_table, sdk_config, DynamoStore};
pub use memory::MemoryStore;

use crate::input::{Email, HardwareId, LicenseKey, OrderId};
use crate::model::{Device, License};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::future::Future;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store did not answer in time, refused the connection, or throttled us: retry later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store failure: {0}")]
    Internal(String),
    /// A listing cursor that this store did not hand out.
    #[error("invalid cursor")]
    InvalidCursor,
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// A condition did not hold any more (someone else wrote first): read again and re-decide.
    #[error("the stored state changed since it was read")]
    Conflict,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Bind a device to a license, consuming a seat unless it replaces `evict`.
#[derive(Debug, Clone)]
pub struct ActivationWrite<'a> {
    pub license: &'a License,
    pub device: &'a Device,
    pub evict: Option<&'a HardwareId>,
    pub now: Timestamp,
}

/// Release a device's seat; a client's own release counts as a transfer, a vendor's does not.
#[derive(Debug, Clone)]
pub struct DeactivationWrite<'a> {
    pub license_key: &'a LicenseKey,
    pub hardware_id: &'a HardwareId,
    pub count_transfer: bool,
}

/// A vendor lookup over a secondary index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    CustomerEmail(Email),
    OrderId(OrderId),
}

/// One page of a listing, newest first; `next_cursor` is opaque and present while more remain.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub licenses: Vec<License>,
    pub next_cursor: Option<String>,
}

/// The remembered outcome of an `Idempotency-Key`: which request it was and which keys it issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    pub idempotency_key: String,
    /// SHA-256 of the request body, so a reused key with another request is told apart.
    pub fingerprint: String,
    pub license_keys: Vec<LicenseKey>,
    pub created_at: Timestamp,
    /// When DynamoDB may delete the record (Unix seconds).
    pub ttl: i64,
}

/// Every method is one round trip to the store, except where its comment says otherwise.
/// The write methods hold their limits in the store itself: a write whose conditions no longer
/// hold fails with [`WriteError::Conflict`] and changes nothing.
pub trait Store: Send + Sync + 'static {
    /// Create new licenses, and with them the idempotency record if given; fails with `Conflict`
    /// (writing none) if any key or the record exists already. One transaction per 100 items.
    fn create_licenses(
        &self,
        licenses: &[License],
        record: Option<&IdempotencyRecord>,
    ) -> impl Future<Output = Result<(), WriteError>> + Send;

    fn idempotency_record(
        &self,
        idempotency_key: &str,
    ) -> impl Future<Output = Result<Option<IdempotencyRecord>, StoreError>> + Send;

    /// The licenses with these keys that exist, in the order given (one round trip per 100 keys).
    fn licenses(&self, keys: &[LicenseKey]) -> impl Future<Output = Result<Vec<License>, StoreError>> + Send;

    fn list_licenses(
        &self,
        lookup: &Lookup,
        limit: u32,
        cursor: Option<&str>,
    ) -> impl Future<Output = Result<Page, StoreError>> + Send;

    fn license_and_device(
        &self,
        key: &LicenseKey,
        hardware_id: &HardwareId,
    ) -> impl Future<Output = Result<(Option<License>, Option<Device>), StoreError>> + Send;

    /// The license and all its devices (one query; more only past 1 MB of devices).
    fn license_with_devices(
        &self,
        key: &LicenseKey,
    ) -> impl Future<Output = Result<Option<(License, Vec<Device>)>, StoreError>> + Send;

    /// Holds: license active; a seat free (or unlimited) unless evicting; not frozen; the device
    /// not bound yet; the evicted device still bound.
    fn activate(&self, write: &ActivationWrite<'_>) -> impl Future<Output = Result<(), WriteError>> + Send;

    /// Holds: the device is bound; when counting a transfer, `transfer_count < max_transfers`.
    fn deactivate(&self, write: &DeactivationWrite<'_>) -> impl Future<Output = Result<(), WriteError>> + Send;

    /// Replace a license's stored fields with `license`; holds: its `version` is still
    /// `license.version - 1` (the caller bumps it), so a concurrent change is never overwritten.
    fn replace_license(&self, license: &License) -> impl Future<Output = Result<(), WriteError>> + Send;

    /// Record that a device was seen; holds: the device is bound and was last seen before `stale_before`.
    fn touch_device(
        &self,
        key: &LicenseKey,
        hardware_id: &HardwareId,
        now: Timestamp,
        stale_before: Timestamp,
    ) -> impl Future<Output = Result<(), WriteError>> + Send;

    /// Round trips made so far (reads and writes), for asserting the cost of each operation.
    fn round_trips(&self) -> u64;
}

/// The moment before which the last activation must lie for a new one to be allowed.
pub(crate) fn freeze_cutoff(license: &License, now: Timestamp) -> Option<Timestamp> {
    (license.freeze_days > 0).then(|| now.plus_seconds(-(license.freeze_days as i64) * crate::time::SECONDS_PER_DAY))
}
