//! The storage port: the few reads and atomic writes the handlers need, with a DynamoDB
//! implementation and an in-memory one that keeps the same conditions (for fast unit tests).

pub mod contract;
mod dynamo;
mod memory;

#[cfg(feature = "local-stream")]
pub use dynamo::StreamFollower;
pub use dynamo::{
    create_events_table, create_table, events_table_name, records_from_lambda, sdk_config, sdk_config_with,
    CapacityUsed, DynamoStore, StreamRecord, Unrecorded, MAX_ENDPOINTS,
};
pub use memory::MemoryStore;

use crate::input::{Email, HardwareId, LicenseKey, OrderId, Product};
use crate::model::{Device, License, ReleasedBy, TrialMarker, TrialTerms};
use crate::rules::{AllowanceEntry, ConsumptionPlan, Eviction, HeldLease, LeasePlan};
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
    /// The license as read: its release entry for the device (if the device comes back while a
    /// credential of its earlier binding is still valid) is taken back, provided it still reads so.
    pub license: &'a License,
    /// The new binding, with the credential horizon recorded before its first token is signed.
    pub device: &'a Device,
    pub evict: Option<&'a Eviction>,
    pub now: Timestamp,
    /// Stored with the write; the write fails with `Conflict` if the receipt exists already.
    pub receipt: Option<&'a Receipt>,
}

/// Release a device and its seat. The device item stays as a tombstone (read as absent
/// everywhere) until its credentials lapse, saying who released it.
#[derive(Debug, Clone)]
pub struct DeactivationWrite<'a> {
    /// The license as read: the lease entry and the release entries the write removes are
    /// conditions of it.
    pub license: &'a License,
    /// The device as read: it must still be bound with the same credential horizon.
    pub device: &'a Device,
    pub seat: SeatRelease,
    /// The place the release takes in the allowance, when the device may still run.
    pub allowance: Option<&'a AllowanceEntry>,
    pub released_by: ReleasedBy,
    pub now: Timestamp,
    /// Stored with the write; the write fails with `Conflict` if the receipt exists already.
    pub receipt: Option<&'a Receipt>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeatRelease {
    /// A node-locked seat: `times_activated` goes down; a client's own release counts a transfer.
    Counted { count_transfer: bool },
    /// A floating device: its lease is removed (and `leases_held` counts one fewer) if it still
    /// reads `observed`, or must still be absent when it was (a check taking a seat for it
    /// meanwhile makes the release re-decide). Never a transfer.
    Lease { observed: Option<Timestamp> },
}

/// Take or renew a floating lease, as `plan` says, in one atomic write.
#[derive(Debug, Clone)]
pub struct LeaseWrite<'a> {
    /// The license as read: its key, seats and `leases_held` bound the count after the write.
    pub license: &'a License,
    /// The device as read (its lease and credential horizon are conditions of the write), or a
    /// device activated for the first time (`new_device`), bound in the same transaction, stamping
    /// the license's activation times as a node-locked activation does. Its place in the release
    /// allowance, if any, stays: a credential of its earlier binding may outlast its new lease.
    pub device: &'a Device,
    pub new_device: bool,
    pub plan: &'a LeasePlan,
    /// A borrow: recorded on the (bound) device in the same transaction.
    pub borrowed_until: Option<Timestamp>,
    pub now: Timestamp,
    /// Stored with the write; the write fails with `Conflict` if the receipt exists already.
    pub receipt: Option<&'a Receipt>,
}

/// A device seen by a check: `last_seen_at` moves to `now`, and when `credential_until` is given
/// the device's credential horizon moves up to it (a write the token that follows depends on).
#[derive(Debug, Clone, Copy)]
pub struct Sighting {
    pub now: Timestamp,
    /// Without a new horizon, the sighting is written only if the last one is older than this.
    pub stale_before: Timestamp,
    pub credential_until: Option<Timestamp>,
}

/// A vendor lookup over a secondary index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    CustomerEmail(Email),
    OrderId(OrderId),
    /// The unverified e-mails given when trials started.
    TrialEmail(Email),
    /// A product's licenses.
    Product(Product),
    /// Every license, in no particular order (a vendor's export): the only listing not by index.
    All,
}

/// One page of a listing, newest first (`Lookup::All`: in no particular order); `next_cursor` is
/// opaque and present while more remain.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub licenses: Vec<License>,
    pub next_cursor: Option<String>,
}

/// Which events a listing returns, newest first: one license's or every license's, of the given
/// types (none: every type), at or after `since` and at or before `until`.
#[derive(Debug, Clone, PartialEq)]
pub struct EventQuery {
    pub license: Option<LicenseKey>,
    pub types: Vec<crate::events::EventType>,
    pub since: Timestamp,
    pub until: Timestamp,
}

/// A page of events (their payloads), newest first, and where the next page starts.
#[derive(Debug, Clone, PartialEq)]
pub struct EventPage {
    pub events: Vec<serde_json::Value>,
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

/// The first answer to a client write made with an `Idempotency-Key`, committed in the same atomic
/// write as the effect it answers (never without it), so a retry gets it back instead of acting twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// What the key is scoped to: `L#<license key>`, or `T#<product>` for a trial.
    pub scope: String,
    pub idempotency_key: String,
    /// SHA-256 of the route and the request, so a reused key with another request is told apart.
    pub fingerprint: String,
    pub status: u16,
    pub body: String,
    pub created_at: Timestamp,
    /// When DynamoDB may delete the receipt (Unix seconds).
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

    /// The receipt of a client write made with this key in this scope, if there is one.
    fn receipt(
        &self,
        scope: &str,
        idempotency_key: &str,
    ) -> impl Future<Output = Result<Option<Receipt>, StoreError>> + Send;

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

    /// Up to `limit` of the license's bound devices, the least recently seen first (by
    /// `last_seen_at`, then `activated_at`). One query of an index, which may lag a write by a
    /// moment: what a rotation picks from, never what a condition relies on.
    fn least_recently_seen(
        &self,
        key: &LicenseKey,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<Device>, StoreError>> + Send;

    /// Up to `limit` of the license's bound devices in hardware id order, those after `after`
    /// when given, and whether more follow. One query (more only when tombstones fill a page).
    fn devices_page(
        &self,
        key: &LicenseKey,
        limit: u32,
        after: Option<&HardwareId>,
    ) -> impl Future<Output = Result<(Vec<Device>, bool), StoreError>> + Send;

    /// The devices among `hardware_ids` that are bound to the license (one round trip per 100).
    fn devices(
        &self,
        key: &LicenseKey,
        hardware_ids: &[HardwareId],
    ) -> impl Future<Output = Result<Vec<Device>, StoreError>> + Send;

    /// Holds: license active; a seat free (or unlimited) unless evicting; not frozen; the device
    /// not bound yet; the evicted device still bound with the horizon read, and when it is owed to
    /// the allowance, the allowance's room (and a transfer left) as planned.
    fn activate(&self, write: &ActivationWrite<'_>) -> impl Future<Output = Result<(), WriteError>> + Send;

    /// Holds: the device is bound with the horizon read; when counting a transfer,
    /// `transfer_count < max_transfers`; a released lease still reads as observed (or is still
    /// absent); the allowance's room as planned.
    fn deactivate(&self, write: &DeactivationWrite<'_>) -> impl Future<Output = Result<(), WriteError>> + Send;

    /// Holds: the device's own lease and every lease taken over still read as observed (those taken
    /// over ended by `now`); a new
    /// lease keeps `leases_held` within the seats as read (a lease taken over frees one); the
    /// device is bound (a new device: not bound yet, and the license active), and on an
    /// acquisition its credential horizon still reads as it was. A renewal writes the device item
    /// alone: a heartbeat costs the same whatever the pool's size. (A vendor's concurrent change of
    /// status or seats simply orders after the lease write: lowering the seats never evicts live
    /// leases either.)
    fn lease(&self, write: &LeaseWrite<'_>) -> impl Future<Output = Result<(), WriteError>> + Send;

    /// Up to `limit` of the license's leases that have lapsed at `now`, the earliest end first.
    /// One query of an index, which may lag a write by a moment: what a takeover picks from, never
    /// what a condition relies on.
    fn lapsed_leases(
        &self,
        key: &LicenseKey,
        now: Timestamp,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<HeldLease>, StoreError>> + Send;

    /// Removes lapsed leases (each if it still reads as listed and has ended by `now`), counting as
    /// many fewer: what makes room after a vendor lowered a pool's seats far below its leases.
    /// Several round trips for many leases.
    fn clear_lapsed_leases(
        &self,
        key: &LicenseKey,
        leases: &[HeldLease],
        now: Timestamp,
    ) -> impl Future<Output = Result<(), WriteError>> + Send;

    /// Moves the leases an earlier version kept in the license item (`license.unmoved_leases`)
    /// to their devices, first making the license unwritable to that version's lease code. Several
    /// round trips for a large pool; safe to repeat and to race (each move is conditional).
    fn upgrade_leases(&self, license: &License) -> impl Future<Output = Result<(), WriteError>> + Send;

    /// Add to a consumption counter, as `plan` says; holds: the counter is still of the period read
    /// (or still absent), with a limit the sum stays within it, and with `lease_holder` that
    /// device's floating lease is live at `now`; the receipt, if given, is new.
    fn consume(
        &self,
        key: &LicenseKey,
        plan: &ConsumptionPlan,
        lease_holder: Option<(&HardwareId, Timestamp)>,
        receipt: Option<&Receipt>,
    ) -> impl Future<Output = Result<(), WriteError>> + Send;

    /// Store (or replace) a product's trial terms.
    fn put_trial_terms(&self, terms: &TrialTerms) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn trial_terms(&self, product: &Product) -> impl Future<Output = Result<Option<TrialTerms>, StoreError>> + Send;

    /// The record of a device's trial of a product, if it had one.
    fn trial_marker(
        &self,
        product: &Product,
        hardware_id: &HardwareId,
    ) -> impl Future<Output = Result<Option<TrialMarker>, StoreError>> + Send;

    /// Record the trial, create its license and bind the device, all or nothing; holds: the device
    /// had no trial of the product yet, the key is new, and so is the receipt if given.
    fn start_trial(
        &self,
        marker: &TrialMarker,
        license: &License,
        device: &Device,
        receipt: Option<&Receipt>,
    ) -> impl Future<Output = Result<(), WriteError>> + Send;

    /// Replace the stored fields of `previous` with those of `license`, except the lease count, the
    /// releases and the consumption counters (their writes do not move `version`, and are kept); holds: the stored `version` is still
    /// `previous.version` (the caller bumps it), so a concurrent change is never overwritten.
    fn replace_license(
        &self,
        previous: &License,
        license: &License,
    ) -> impl Future<Output = Result<(), WriteError>> + Send;

    /// Record that a device was seen; holds: the device is bound, and either its horizon is still
    /// below the new one, or (without one) it was last seen before `stale_before`.
    fn touch_device(
        &self,
        key: &LicenseKey,
        hardware_id: &HardwareId,
        sighting: &Sighting,
    ) -> impl Future<Output = Result<(), WriteError>> + Send;

    /// Round trips made so far (reads and writes), for asserting the cost of each operation.
    /// Appends events to the audit log, kept `keep_days` when set (else for good). Writing an
    /// event again (same id and order) stores the same entry.
    fn append_events(
        &self,
        events: &[&crate::events::Event],
        keep_days: Option<u32>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The audit log's events `query` selects, newest first, `limit` a page.
    fn list_events(
        &self,
        query: &EventQuery,
        limit: u32,
        cursor: Option<&str>,
    ) -> impl Future<Output = Result<EventPage, StoreError>> + Send;

    /// The store that keeps webhook endpoints and deliveries: DynamoDB's (the in-memory store
    /// keeps none, and its webhook routes answer 500).
    fn webhooks(&self) -> Option<&DynamoStore> {
        None
    }

    fn round_trips(&self) -> u64;
}

/// How long a tombstone is kept after its device's credentials lapse (DynamoDB's TTL deletes it).
pub(crate) const TOMBSTONE_GRACE_SECONDS: i64 = 86_400;

/// When a device released at `now` may be forgotten: once its credentials lapsed.
pub(crate) fn tombstone_expires(credential_until: Option<Timestamp>, now: Timestamp) -> Timestamp {
    credential_until.map_or(now, |until| until.max(now)).plus_seconds(TOMBSTONE_GRACE_SECONDS)
}

/// The live release entry a device coming back takes back (a lapsed one is left to be taken over).
pub fn reclaimed(license: &License, hardware_id: &HardwareId, now: Timestamp) -> Option<Timestamp> {
    license.releases.get(hardware_id).copied().filter(|until| *until > now)
}

/// The moment before which the last activation must lie for a new one to be allowed.
pub(crate) fn freeze_cutoff(license: &License, now: Timestamp) -> Option<Timestamp> {
    (license.freeze_days > 0).then(|| now.plus_seconds(-(license.freeze_days as i64) * crate::time::SECONDS_PER_DAY))
}
