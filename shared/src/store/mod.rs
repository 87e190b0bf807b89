//! The storage port: the few reads and atomic writes the handlers need, with a DynamoDB
//! implementation and an in-memory one that keeps the same conditions (for fast unit tests).

mod dynamo;
mod memory;

pub use dynamo::{create_table, sdk_config, DynamoStore};
pub use memory::MemoryStore;

use crate::input::{HardwareId, LicenseKey};
use crate::model::{Device, License};
use crate::time::Timestamp;
use std::future::Future;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store did not answer in time, refused the connection, or throttled us: retry later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store failure: {0}")]
    Internal(String),
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

/// Every method is one round trip to the store (a create of more than 100 licenses, one per 100).
/// The write methods hold their limits in the store itself: a write whose conditions no longer
/// hold fails with [`WriteError::Conflict`] and changes nothing.
pub trait Store: Send + Sync + 'static {
    /// Create new licenses; fails with `Conflict` (writing none) if any key exists already.
    fn create_licenses(
        &self,
        licenses: &[License],
    ) -> impl Future<Output = Result<(), WriteError>> + Send;

    fn license_and_device(
        &self,
        key: &LicenseKey,
        hardware_id: &HardwareId,
    ) -> impl Future<Output = Result<(Option<License>, Option<Device>), StoreError>> + Send;

    fn license_with_devices(
        &self,
        key: &LicenseKey,
    ) -> impl Future<Output = Result<Option<(License, Vec<Device>)>, StoreError>> + Send;

    /// Holds: license active; a seat free (or unlimited) unless evicting; not frozen; the device
    /// not bound yet; the evicted device still bound.
    fn activate(
        &self,
        write: &ActivationWrite<'_>,
    ) -> impl Future<Output = Result<(), WriteError>> + Send;

    /// Holds: the device is bound; when counting a transfer, `transfer_count < max_transfers`.
    fn deactivate(
        &self,
        write: &DeactivationWrite<'_>,
    ) -> impl Future<Output = Result<(), WriteError>> + Send;

    /// Round trips made so far (reads and writes), for asserting the cost of each operation.
    fn round_trips(&self) -> u64;
}

/// The moment before which the last activation must lie for a new one to be allowed.
pub(crate) fn freeze_cutoff(license: &License, now: Timestamp) -> Option<Timestamp> {
    (license.freeze_days > 0)
        .then(|| now.plus_seconds(-(license.freeze_days as i64) * crate::time::SECONDS_PER_DAY))
}
