//! An in-memory store with the DynamoDB store's conditions, one lock around each whole operation.

use super::{
    freeze_cutoff, reclaimed, ActivationWrite, DeactivationWrite, IdempotencyRecord, LeaseWrite, Lookup, Page, Receipt,
    SeatRelease, Sighting, Store, StoreError, WriteError,
};
use crate::input::{HardwareId, LicenseKey, Product};
use crate::model::{Counter, Device, License, LicenseStatus, ReleasedBy, TrialMarker, TrialTerms};
use crate::rules::{horizon_on_acquire, ConsumptionPlan, HeldLease, LeasePlan, Slot};
use crate::time::Timestamp;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

#[derive(Default)]
pub struct MemoryStore {
    partitions: Mutex<HashMap<LicenseKey, Partition>>,
    idempotency: Mutex<HashMap<String, IdempotencyRecord>>,
    receipts: Mutex<HashMap<(String, String), Receipt>>,
    trials: Mutex<HashMap<Product, TrialTerms>>,
    trial_markers: Mutex<HashMap<(Product, HardwareId), TrialMarker>>,
    /// The audit log: by (order key, license key), each event's type and payload.
    events: Mutex<BTreeMap<(String, LicenseKey), (crate::events::EventType, serde_json::Value)>>,
    round_trips: AtomicU64,
}

struct Partition {
    license: License,
    devices: BTreeMap<HardwareId, Device>,
    /// Released devices, kept (as DynamoDB keeps tombstones) with who released them.
    released: BTreeMap<HardwareId, (Device, ReleasedBy)>,
}

impl Partition {
    fn new(license: License, devices: BTreeMap<HardwareId, Device>) -> Self {
        Self { license, devices, released: BTreeMap::new() }
    }

    /// Whether `hardware_id` is bound with the credential horizon `observed`.
    fn bound_as_read(&self, hardware_id: &HardwareId, observed: Option<Timestamp>) -> bool {
        self.devices.get(hardware_id).is_some_and(|d| d.credential_until == observed)
    }

    /// Releases a bound device into a tombstone saying until when it may run.
    fn release(&mut self, hardware_id: &HardwareId, credential_until: Option<Timestamp>, by: ReleasedBy) {
        if let Some(mut device) = self.devices.remove(hardware_id) {
            device.credential_until = credential_until;
            device.lease_expires_at = None;
            self.released.insert(hardware_id.clone(), (device, by));
        }
    }

    /// The lease `holder` holds, bound or released.
    fn lease_of(&self, holder: &HardwareId) -> Option<Timestamp> {
        let device = self.devices.get(holder).or_else(|| self.released.get(holder).map(|(device, _)| device));
        device.and_then(|d| d.lease_expires_at)
    }

    fn drop_lease(&mut self, holder: &HardwareId) {
        for device in self.devices.get_mut(holder).into_iter().chain(self.released.get_mut(holder).map(|(d, _)| d)) {
            device.lease_expires_at = None;
        }
    }

    fn bind(&mut self, device: &Device) {
        self.released.remove(&device.hardware_id);
        self.devices.insert(device.hardware_id.clone(), device.clone());
    }
}

/// Whether `slot` still fits the map `entries` (holding at most `max`), as the DynamoDB store's
/// conditions check it.
/// (`freed`: entries of the map the same write removes otherwise).
fn slot_holds(
    entries: &BTreeMap<HardwareId, Timestamp>,
    holder: &HardwareId,
    slot: &Slot,
    max: u32,
    freed: usize,
) -> bool {
    let entries_after = (entries.len() + usize::from(slot.own.is_none())).saturating_sub(slot.take_over.len() + freed);
    entries.get(holder).copied() == slot.own
        && slot.take_over.iter().all(|(other, end)| entries.get(other) == Some(end))
        && entries_after <= max as usize
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<LicenseKey, Partition>> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        // A panic while holding the lock leaves whole operations behind, never half of one.
        self.partitions.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs a write that stores `receipt` with it: refused (`Conflict`, nothing written) when the
    /// receipt exists, and the receipt kept only when the write succeeds. (Taken before the
    /// partitions' lock, as every operation that takes both does.)
    fn with_receipt(
        &self,
        receipt: Option<&Receipt>,
        write: impl FnOnce() -> Result<(), WriteError>,
    ) -> Result<(), WriteError> {
        let mut receipts = self.receipts.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let id = receipt.map(|r| (r.scope.clone(), r.idempotency_key.clone()));
        let live = |id: &(String, String)| {
            receipts.get(id).zip(receipt).is_some_and(|(old, new)| old.ttl > new.created_at.unix())
        };
        if id.as_ref().is_some_and(live) {
            return Err(WriteError::Conflict);
        }
        write()?;
        if let (Some(id), Some(receipt)) = (id, receipt) {
            receipts.insert(id, receipt.clone());
        }
        Ok(())
    }
}

impl Store for MemoryStore {
    async fn create_licenses(
        &self,
        licenses: &[License],
        record: Option<&IdempotencyRecord>,
    ) -> Result<(), WriteError> {
        let mut partitions = self.lock();
        let mut records = self.idempotency.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if licenses.iter().any(|l| partitions.contains_key(&l.license_key))
            || record.is_some_and(|r| records.contains_key(&r.idempotency_key))
        {
            return Err(WriteError::Conflict);
        }
        for license in licenses {
            partitions.insert(license.license_key.clone(), Partition::new(license.clone(), BTreeMap::new()));
        }
        if let Some(record) = record {
            records.insert(record.idempotency_key.clone(), record.clone());
        }
        Ok(())
    }

    async fn idempotency_record(&self, idempotency_key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        let _partitions = self.lock();
        let records = self.idempotency.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        Ok(records.get(idempotency_key).cloned())
    }

    async fn receipt(&self, scope: &str, idempotency_key: &str) -> Result<Option<Receipt>, StoreError> {
        let receipts = self.receipts.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        Ok(receipts.get(&(scope.to_string(), idempotency_key.to_string())).cloned())
    }

    async fn licenses(&self, keys: &[LicenseKey]) -> Result<Vec<License>, StoreError> {
        let partitions = self.lock();
        Ok(keys.iter().filter_map(|k| partitions.get(k).map(|p| p.license.clone())).collect())
    }

    async fn list_licenses(&self, lookup: &Lookup, limit: u32, cursor: Option<&str>) -> Result<Page, StoreError> {
        let partitions = self.lock();
        let mut matching: Vec<&License> = partitions
            .values()
            .map(|p| &p.license)
            .filter(|l| match lookup {
                Lookup::CustomerEmail(email) => l.customer.as_ref().and_then(|c| c.email.as_ref()) == Some(email),
                Lookup::OrderId(order) => l.order_id.as_ref() == Some(order),
                Lookup::TrialEmail(email) => l.trial_email.as_ref() == Some(email),
                Lookup::Product(product) => &l.product == product,
                Lookup::All => true,
            })
            .collect();
        // Newest first; the key breaks ties so the order (and the cursor) is total.
        matching.sort_by(|a, b| (b.created_at, &b.license_key).cmp(&(a.created_at, &a.license_key)));
        let start = match cursor {
            None => 0,
            Some(cursor) => {
                let after = LicenseKey::parse(cursor).map_err(|_| StoreError::InvalidCursor)?;
                matching.iter().position(|l| l.license_key == after).ok_or(StoreError::InvalidCursor)? + 1
            }
        };
        let page: Vec<License> = matching.iter().skip(start).take(limit as usize).map(|l| (*l).clone()).collect();
        let next_cursor =
            (start + page.len() < matching.len()).then(|| page.last().map(|l| l.license_key.to_string())).flatten();
        Ok(Page { licenses: page, next_cursor })
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

    async fn devices_page(
        &self,
        key: &LicenseKey,
        limit: u32,
        after: Option<&HardwareId>,
    ) -> Result<(Vec<Device>, bool), StoreError> {
        let partitions = self.lock();
        let Some(partition) = partitions.get(key) else { return Ok((Vec::new(), false)) };
        let mut devices: Vec<Device> =
            partition.devices.values().filter(|d| after.is_none_or(|after| &d.hardware_id > after)).cloned().collect();
        let more = devices.len() > limit as usize;
        devices.truncate(limit as usize);
        Ok((devices, more))
    }

    async fn devices(&self, key: &LicenseKey, hardware_ids: &[HardwareId]) -> Result<Vec<Device>, StoreError> {
        let partitions = self.lock();
        let Some(partition) = partitions.get(key) else { return Ok(Vec::new()) };
        Ok(hardware_ids.iter().filter_map(|id| partition.devices.get(id).cloned()).collect())
    }

    async fn least_recently_seen(&self, key: &LicenseKey, limit: u32) -> Result<Vec<Device>, StoreError> {
        let partitions = self.lock();
        let mut devices: Vec<Device> =
            partitions.get(key).map(|p| p.devices.values().cloned().collect()).unwrap_or_default();
        devices.sort_by_key(crate::rules::seen_order);
        devices.truncate(limit as usize);
        Ok(devices)
    }

    async fn activate(&self, write: &ActivationWrite<'_>) -> Result<(), WriteError> {
        self.with_receipt(write.receipt, || {
            let mut partitions = self.lock();
            let partition = partitions.get_mut(&write.license.license_key).ok_or(WriteError::Conflict)?;
            let license = &partition.license;
            let seat_free = license.allow_unlimited_activations || license.times_activated < license.max_activations;
            let thawed = match (freeze_cutoff(write.license, write.now), license.last_activated_at) {
                (Some(cutoff), Some(last)) => last <= cutoff,
                _ => true,
            };
            let reclaim = reclaimed(write.license, &write.device.hardware_id, write.now);
            let evict_ok = write.evict.is_none_or(|eviction| {
                partition.bound_as_read(&eviction.hardware_id, eviction.credential_until)
                    && eviction.allowance.as_ref().is_none_or(|entry| {
                        let freed = usize::from(reclaim.is_some());
                        slot_holds(
                            &license.releases,
                            &eviction.hardware_id,
                            &entry.slot,
                            license.release_allowance,
                            freed,
                        ) && license.max_transfers.is_none_or(|max| license.transfer_count < max)
                    })
            });
            if license.status != LicenseStatus::Active
                || !thawed
                || partition.devices.contains_key(&write.device.hardware_id)
                || !evict_ok
                || (write.evict.is_none() && !seat_free)
                || reclaim.is_some_and(|observed| license.releases.get(&write.device.hardware_id) != Some(&observed))
            {
                return Err(WriteError::Conflict);
            }
            match write.evict {
                Some(eviction) => {
                    let mut until = eviction.credential_until;
                    if let Some(entry) = &eviction.allowance {
                        entry.slot.apply(&mut partition.license.releases, &eviction.hardware_id, entry.until);
                        partition.license.transfer_count += 1;
                        until = Some(entry.until);
                    }
                    partition.release(&eviction.hardware_id, until, ReleasedBy::Rotation);
                }
                None => partition.license.times_activated += 1,
            }
            if reclaim.is_some() {
                partition.license.releases.remove(&write.device.hardware_id);
            }
            let license = &mut partition.license;
            license.first_activated_at.get_or_insert(write.now);
            license.last_activated_at = Some(write.now);
            license.version += 1;
            partition.bind(write.device);
            Ok(())
        })
    }

    async fn deactivate(&self, write: &DeactivationWrite<'_>) -> Result<(), WriteError> {
        self.with_receipt(write.receipt, || {
            let mut partitions = self.lock();
            let partition = partitions.get_mut(&write.license.license_key).ok_or(WriteError::Conflict)?;
            let hardware_id = &write.device.hardware_id;
            if !partition.bound_as_read(hardware_id, write.device.credential_until) {
                return Err(WriteError::Conflict);
            }
            let license = &partition.license;
            let seat_ok = match write.seat {
                SeatRelease::Counted { count_transfer } => {
                    license.times_activated > 0
                        && (!count_transfer || license.max_transfers.is_none_or(|max| license.transfer_count < max))
                }
                SeatRelease::Lease { observed } => partition.lease_of(hardware_id) == observed,
            };
            let allowance_ok = write.allowance.is_none_or(|entry| {
                slot_holds(&license.releases, hardware_id, &entry.slot, license.release_allowance, 0)
            });
            if !seat_ok || !allowance_ok {
                return Err(WriteError::Conflict);
            }
            let license = &mut partition.license;
            match write.seat {
                SeatRelease::Counted { count_transfer } => {
                    license.times_activated -= 1;
                    license.transfer_count += u32::from(count_transfer);
                    license.version += 1;
                }
                SeatRelease::Lease { observed } => {
                    license.leases_held = license.leases_held.saturating_sub(u32::from(observed.is_some()));
                }
            }
            if let Some(entry) = write.allowance {
                entry.slot.apply(&mut license.releases, hardware_id, entry.until);
            }
            let credential_until = crate::rules::credential_until(write.license, write.device);
            let until = write.allowance.map(|entry| entry.until).max(credential_until);
            partition.release(hardware_id, until, write.released_by);
            Ok(())
        })
    }

    async fn lease(&self, write: &LeaseWrite<'_>) -> Result<(), WriteError> {
        self.with_receipt(write.receipt, || {
            let mut partitions = self.lock();
            let partition = partitions.get_mut(&write.license.license_key).ok_or(WriteError::Conflict)?;
            let license = &partition.license;
            let hardware_id = &write.device.hardware_id;
            let bound = partition.devices.get(hardware_id);
            let until = write.plan.until();
            let holds = match write.plan {
                LeasePlan::Renew { observed, .. } => bound.is_some_and(|d| d.lease_expires_at == Some(*observed)),
                LeasePlan::Acquire { slot, .. } => {
                    let change = write.plan.held_change();
                    let counted = change == 0
                        || i64::from(license.leases_held) <= i64::from(write.license.max_activations) - change;
                    let taken = slot
                        .take_over
                        .iter()
                        .all(|(other, end)| partition.lease_of(other) == Some(*end) && *end <= write.now);
                    let device = match write.new_device {
                        true => {
                            bound.is_none()
                                && partition.lease_of(hardware_id).is_none()
                                && license.status == LicenseStatus::Active
                        }
                        false => bound.is_some_and(|d| {
                            d.lease_expires_at == slot.own && d.credential_until == write.device.credential_until
                        }),
                    };
                    counted && taken && device
                }
            };
            if !holds {
                return Err(WriteError::Conflict);
            }
            let mut device = bound.cloned().unwrap_or_else(|| write.device.clone());
            if let LeasePlan::Acquire { slot, .. } = write.plan {
                for (other, _) in &slot.take_over {
                    partition.drop_lease(other);
                }
                let held = i64::from(partition.license.leases_held) + write.plan.held_change();
                partition.license.leases_held = held.max(0) as u32;
                device.credential_until = Some(horizon_on_acquire(device.credential_until, until));
            }
            device.lease_expires_at = Some(until);
            device.borrowed_until = write.borrowed_until.or(device.borrowed_until);
            if write.new_device {
                let license = &mut partition.license;
                license.first_activated_at.get_or_insert(write.now);
                license.last_activated_at = Some(write.now);
                license.version += 1;
            }
            partition.bind(&device);
            Ok(())
        })
    }

    async fn lapsed_leases(&self, key: &LicenseKey, now: Timestamp, limit: u32) -> Result<Vec<HeldLease>, StoreError> {
        let partitions = self.lock();
        let Some(partition) = partitions.get(key) else { return Ok(Vec::new()) };
        let holders = partition.devices.keys().chain(partition.released.keys());
        let mut lapsed: Vec<HeldLease> = holders
            .filter_map(|holder| partition.lease_of(holder).filter(|end| *end <= now).map(|end| (holder.clone(), end)))
            .collect();
        lapsed.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
        lapsed.truncate(limit as usize);
        Ok(lapsed)
    }

    async fn clear_lapsed_leases(
        &self,
        key: &LicenseKey,
        leases: &[HeldLease],
        now: Timestamp,
    ) -> Result<(), WriteError> {
        let mut partitions = self.lock();
        let partition = partitions.get_mut(key).ok_or(WriteError::Conflict)?;
        if !leases.iter().all(|(holder, end)| partition.lease_of(holder) == Some(*end) && *end <= now) {
            return Err(WriteError::Conflict);
        }
        for (holder, _) in leases {
            partition.drop_lease(holder);
        }
        partition.license.leases_held = partition.license.leases_held.saturating_sub(leases.len() as u32);
        Ok(())
    }

    /// This store never held leases the earlier way.
    async fn upgrade_leases(&self, _license: &License) -> Result<(), WriteError> {
        Ok(())
    }

    async fn consume(
        &self,
        key: &LicenseKey,
        plan: &ConsumptionPlan,
        lease_holder: Option<(&HardwareId, Timestamp)>,
        receipt: Option<&Receipt>,
    ) -> Result<(), WriteError> {
        self.with_receipt(receipt, || {
            let mut partitions = self.lock();
            let partition = partitions.get_mut(key).ok_or(WriteError::Conflict)?;
            let counter = partition.license.consumption.get(&plan.key);
            let same_period = counter.map(|c| &c.period) == plan.observed.as_ref().map(|c| &c.period);
            let used_after = match counter {
                Some(c) if plan.continues() => c.used + plan.amount,
                _ => plan.amount,
            };
            let seated = lease_holder.is_none_or(|(holder, now)| {
                partition.devices.get(holder).and_then(|d| d.lease_expires_at).is_some_and(|end| end > now)
            });
            if !same_period || !seated || plan.limit.is_some_and(|limit| used_after > limit) {
                return Err(WriteError::Conflict);
            }
            partition
                .license
                .consumption
                .insert(plan.key.clone(), Counter { period: plan.period.clone(), used: used_after });
            Ok(())
        })
    }

    async fn put_trial_terms(&self, terms: &TrialTerms) -> Result<(), StoreError> {
        let _partitions = self.lock();
        self.trials.lock().unwrap_or_else(|p| p.into_inner()).insert(terms.product.clone(), terms.clone());
        Ok(())
    }

    async fn trial_terms(&self, product: &Product) -> Result<Option<TrialTerms>, StoreError> {
        let _partitions = self.lock();
        Ok(self.trials.lock().unwrap_or_else(|p| p.into_inner()).get(product).cloned())
    }

    async fn trial_marker(
        &self,
        product: &Product,
        hardware_id: &HardwareId,
    ) -> Result<Option<TrialMarker>, StoreError> {
        let _partitions = self.lock();
        let markers = self.trial_markers.lock().unwrap_or_else(|p| p.into_inner());
        Ok(markers.get(&(product.clone(), hardware_id.clone())).cloned())
    }

    async fn start_trial(
        &self,
        marker: &TrialMarker,
        license: &License,
        device: &Device,
        receipt: Option<&Receipt>,
    ) -> Result<(), WriteError> {
        self.with_receipt(receipt, || {
            let mut partitions = self.lock();
            let mut markers = self.trial_markers.lock().unwrap_or_else(|p| p.into_inner());
            let marker_key = (marker.product.clone(), marker.hardware_id.clone());
            if markers.contains_key(&marker_key) || partitions.contains_key(&license.license_key) {
                return Err(WriteError::Conflict);
            }
            markers.insert(marker_key, marker.clone());
            let devices = BTreeMap::from([(device.hardware_id.clone(), device.clone())]);
            partitions.insert(license.license_key.clone(), Partition::new(license.clone(), devices));
            Ok(())
        })
    }

    async fn replace_license(&self, previous: &License, license: &License) -> Result<(), WriteError> {
        let mut partitions = self.lock();
        let partition = partitions.get_mut(&license.license_key).ok_or(WriteError::Conflict)?;
        if partition.license.version != previous.version {
            return Err(WriteError::Conflict);
        }
        let leases_held = partition.license.leases_held;
        let releases = std::mem::take(&mut partition.license.releases);
        let consumption = std::mem::take(&mut partition.license.consumption);
        partition.license = License { leases_held, releases, consumption, ..license.clone() };
        Ok(())
    }

    async fn touch_device(
        &self,
        key: &LicenseKey,
        hardware_id: &HardwareId,
        sighting: &Sighting,
    ) -> Result<(), WriteError> {
        let mut partitions = self.lock();
        let device =
            partitions.get_mut(key).and_then(|p| p.devices.get_mut(hardware_id)).ok_or(WriteError::Conflict)?;
        match sighting.credential_until {
            Some(until) if device.credential_until.is_none_or(|recorded| recorded < until) => {
                device.credential_until = Some(until);
            }
            None if device.last_seen_at < sighting.stale_before => {}
            _ => return Err(WriteError::Conflict),
        }
        device.last_seen_at = sighting.now;
        Ok(())
    }

    async fn append_events(&self, events: &[&crate::events::Event], _keep_days: Option<u32>) -> Result<(), StoreError> {
        let mut log = self.events.lock().unwrap_or_else(|e| e.into_inner());
        for event in events {
            let body = serde_json::to_value(event).map_err(|e| StoreError::Internal(e.to_string()))?;
            log.insert((event.order.clone(), event.license_key.clone()), (event.kind, body));
        }
        Ok(())
    }

    async fn list_events(
        &self,
        query: &super::EventQuery,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<super::EventPage, StoreError> {
        let log = self.events.lock().unwrap_or_else(|e| e.into_inner());
        let (from, to) = (query.since.to_string(), format!("{}#~", query.until));
        let after = match cursor {
            None => None,
            Some(cursor) => {
                let (order, key) = cursor.split_once('|').ok_or(StoreError::InvalidCursor)?;
                Some((order.to_string(), LicenseKey::parse(key).map_err(|_| StoreError::InvalidCursor)?))
            }
        };
        let selected = log.iter().rev().filter(|((order, key), (kind, _))| {
            query.license.as_ref().is_none_or(|l| l == key)
                && (query.types.is_empty() || query.types.contains(kind))
                && order.as_str() >= from.as_str()
                && order.as_str() <= to.as_str()
                && after.as_ref().is_none_or(|after| (order, key) < (&after.0, &after.1))
        });
        let page: Vec<_> = selected.take(limit as usize + 1).collect();
        let more = page.len() > limit as usize;
        let page = &page[..page.len().min(limit as usize)];
        let next_cursor = more.then(|| page.last().map(|((order, key), _)| format!("{order}|{key}"))).flatten();
        Ok(super::EventPage { events: page.iter().map(|(_, (_, body))| body.clone()).collect(), next_cursor })
    }

    fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }
}
