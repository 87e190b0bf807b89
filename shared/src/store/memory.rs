//! An in-memory store with the DynamoDB store's conditions, one lock around each whole operation.

use super::{freeze_cutoff, ActivationWrite, DeactivationWrite, Store, StoreError, WriteError};
use crate::input::{HardwareId, LicenseKey};
use crate::model::{Device, License, LicenseStatus};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

#[derive(Default)]
pub struct MemoryStore {
    partitions: Mutex<HashMap<LicenseKey, Partition>>,
    round_trips: AtomicU64,
}

struct Partition {
    license: License,
    devices: BTreeMap<HardwareId, Device>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<LicenseKey, Partition>> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        // A panic while holding the lock leaves whole operations behind, never half of one.
        self.partitions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Store for MemoryStore {
    async fn create_licenses(&self, licenses: &[License]) -> Result<(), WriteError> {
        let mut partitions = self.lock();
        if licenses
            .iter()
            .any(|l| partitions.contains_key(&l.license_key))
        {
            return Err(WriteError::Conflict);
        }
        for license in licenses {
            partitions.insert(
                license.license_key.clone(),
                Partition {
                    license: license.clone(),
                    devices: BTreeMap::new(),
                },
            );
        }
        Ok(())
    }

    async fn license_and_device(
        &self,
        key: &LicenseKey,
        hardware_id: &HardwareId,
    ) -> Result<(Option<License>, Option<Device>), StoreError> {
        let partitions = self.lock();
        Ok(match partitions.get(key) {
            Some(p) => (Some(p.license.clone()), p.devices.get(hardware_id).cloned()),
            None => (None, None),
        })
    }

    async fn license_with_devices(
        &self,
        key: &LicenseKey,
    ) -> Result<Option<(License, Vec<Device>)>, StoreError> {
        let partitions = self.lock();
        Ok(partitions
            .get(key)
            .map(|p| (p.license.clone(), p.devices.values().cloned().collect())))
    }

    async fn activate(&self, write: &ActivationWrite<'_>) -> Result<(), WriteError> {
        let mut partitions = self.lock();
        let partition = partitions
            .get_mut(&write.license.license_key)
            .ok_or(WriteError::Conflict)?;
        let license = &mut partition.license;
        let seat_free = license.allow_unlimited_activations
            || license.times_activated < license.max_activations;
        let thawed = match (
            freeze_cutoff(write.license, write.now),
            license.last_activated_at,
        ) {
            (Some(cutoff), Some(last)) => last <= cutoff,
            _ => true,
        };
        let evict_ok = write
            .evict
            .is_none_or(|hw| partition.devices.contains_key(hw));
        if license.status != LicenseStatus::Active
            || !thawed
            || partition.devices.contains_key(&write.device.hardware_id)
            || !evict_ok
            || (write.evict.is_none() && !seat_free)
        {
            return Err(WriteError::Conflict);
        }
        match write.evict {
            Some(evicted) => {
                partition.devices.remove(evicted);
            }
            None => license.times_activated += 1,
        }
        license.first_activated_at.get_or_insert(write.now);
        license.last_activated_at = Some(write.now);
        license.version += 1;
        partition
            .devices
            .insert(write.device.hardware_id.clone(), write.device.clone());
        Ok(())
    }

    async fn deactivate(&self, write: &DeactivationWrite<'_>) -> Result<(), WriteError> {
        let mut partitions = self.lock();
        let partition = partitions
            .get_mut(write.license_key)
            .ok_or(WriteError::Conflict)?;
        let license = &mut partition.license;
        let transfer_ok = !write.count_transfer
            || license
                .max_transfers
                .is_none_or(|max| license.transfer_count < max);
        if !partition.devices.contains_key(write.hardware_id)
            || license.times_activated == 0
            || !transfer_ok
        {
            return Err(WriteError::Conflict);
        }
        partition.devices.remove(write.hardware_id);
        license.times_activated -= 1;
        if write.count_transfer {
            license.transfer_count += 1;
        }
        license.version += 1;
        Ok(())
    }

    fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }
}
