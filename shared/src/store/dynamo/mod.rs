//! The DynamoDB store. One table: a license and its devices share the partition `L#<key>`
//! (sort keys `L` and `D#<hardware_id>`), so a check reads both in one BatchGetItem and every
//! seat change is one TransactWriteItems guarded by condition expressions. Beside them: trial terms
//! and records (`T#...`), a vendor issue's idempotency record (`I#<key>`), and the answers of client
//! writes made with an `Idempotency-Key` (`R#<scope>#<key>`, written in the write's own transaction).

mod audit;
mod errors;
mod expression;
mod hooks;
mod records;
mod reminders;
mod schema;
mod sdk;
mod stream;

pub use audit::{create_events_table, events_table_name};
pub use hooks::MAX_ENDPOINTS;
pub use schema::create_table;
pub use sdk::{sdk_config, sdk_config_with};
#[cfg(feature = "local-stream")]
pub use stream::StreamFollower;
pub use stream::{records_from_lambda, StreamRecord, Unrecorded};

use errors::{classify, conditional_error, transaction_error};
use expression::{releases, Expression, MAX_TAKE_OVER_PER_WRITE};
use records::{
    built, decode_cursor, decode_scan_cursor, device_from, device_item, device_sk, encode_cursor, hardware_id_of,
    idempotency_pk, is_released, license_from, license_item, license_pk, lookup_index, n, receipt_pk, s, status,
    trial_marker_pk, trial_terms_pk, Item, BOUND, CONSUMPTION, DEVICE_PREFIX, IDEMPOTENCY_SK, LEASES, LEASES_HELD,
    LEASES_ON_DEVICES, LEASE_END, LEASE_INDEX, LICENSE_SK, MAX_TRANSACTION_ITEMS, MOVING_LEASES, OPERATION_OWNED,
    PRODUCT_INDEX, RECEIPT_SK, RELEASED, RELEASES, SEEN_INDEX, TRIAL_SK,
};

use super::{
    freeze_cutoff, reclaimed, tombstone_expires, ActivationWrite, DeactivationWrite, IdempotencyRecord, LeaseWrite,
    Lookup, Page, Receipt, SeatRelease, Sighting, Store, StoreError, WriteError,
};
use crate::input::{HardwareId, LicenseKey, Product};
use crate::model::{Device, License, LicenseStatus, ReleasedBy, TrialMarker, TrialTerms};
use crate::rules::{horizon_on_acquire, ConsumptionPlan, HeldLease, LeasePlan, Slot};
use crate::time::Timestamp;
use aws_config::SdkConfig;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::types::{
    ConditionCheck, ConsumedCapacity, KeysAndAttributes, Put, ReturnConsumedCapacity, TransactWriteItem, Update,
};
use aws_sdk_dynamodb::Client;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// Requires a license to keep no lease the earlier way (a map in `leases`): none ever, or its
/// leases on their devices. Names `#leases`, values `:zero` and `:on_devices`.
fn leases_are_items(e: &mut Expression) {
    e.name("#leases", LEASES)
        .value(":zero", n(0))
        .value(":on_devices", s(LEASES_ON_DEVICES))
        .condition("(attribute_not_exists(#leases) OR size(#leases) = :zero OR #leases = :on_devices)");
}

/// `item` naming the request that writes it (see [`crate::actor::REQUEST_ATTRIBUTE`]).
fn with_request(mut item: Item) -> Item {
    if let Some(request) = crate::actor::request_id() {
        item.insert(crate::actor::REQUEST_ATTRIBUTE.into(), s(&request));
    }
    item
}

/// Items one scan of the table evaluates when listing every license, and at most how many scans,
/// for at most how long, one call makes (the rest is the next page's).
const SCAN_PAGE: i32 = 1_000;
const SCAN_ROUNDS: usize = 10;
const SCAN_BUDGET: std::time::Duration = std::time::Duration::from_secs(2);

/// Leases one transaction moves off an earlier version's map. Every operation on a license being
/// upgraded moves its leases side by side, and all their transactions write the license item, so
/// they queue behind one another: small transactions keep each wait short. (Chunks of 99 put
/// 100-item transactions in that queue, and under load DynamoDB Local answered some after the
/// SDK's 4 s operation timeout: a 503 for a plain heartbeat.)
const LEASES_MOVED_PER_WRITE: usize = 20;

pub struct DynamoStore {
    client: Client,
    table: String,
    /// The audit log's table.
    events_table: String,
    /// Days before a license's end that `license.expiring` is sent (none: no reminders).
    reminder_days: Vec<u32>,
    round_trips: AtomicU64,
    /// Capacity units consumed by reads and by writes, in thousandths (see [`CapacityUsed`]).
    read_milliunits: AtomicU64,
    write_milliunits: AtomicU64,
}

/// Capacity units consumed, as DynamoDB reports them for each successful call
/// (`ReturnConsumedCapacity: TOTAL`), split by the kind of call: what an operation costs.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct CapacityUsed {
    pub read_units: f64,
    pub write_units: f64,
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        let table = table.into();
        Self {
            client,
            events_table: audit::events_table_name(&table),
            reminder_days: Vec::new(),
            table,
            round_trips: AtomicU64::new(0),
            read_milliunits: AtomicU64::new(0),
            write_milliunits: AtomicU64::new(0),
        }
    }

    pub fn from_config(config: &SdkConfig, table: impl Into<String>) -> Self {
        Self::new(Client::new(config), table)
    }

    /// `license.expiring` sent these many days before a license ends.
    pub fn with_expiry_reminders(mut self, days: &[u32]) -> Self {
        self.reminder_days = days.to_vec();
        self
    }

    /// The audit log in another table than `<table>-events`.
    pub fn with_events_table(mut self, events_table: impl Into<String>) -> Self {
        self.events_table = events_table.into();
        self
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// A single item read with a strongly consistent GetItem.
    async fn get_one<T: serde::de::DeserializeOwned>(
        &self,
        pk: AttributeValue,
        sk: &str,
        what: &str,
    ) -> Result<Option<T>, StoreError> {
        self.count_round_trip();
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("PK", pk)
            .key("SK", s(sk))
            .consistent_read(true)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(classify)?;
        self.count_reads(output.consumed_capacity());
        output
            .item
            .map(|item| {
                serde_dynamo::from_item(item).map_err(|e| StoreError::Internal(format!("unreadable {what}: {e}")))
            })
            .transpose()
    }

    /// One conditional UpdateItem of a license item (one round trip); a failed condition is a conflict.
    async fn update_license(&self, key: &LicenseKey, expression: Expression) -> Result<(), WriteError> {
        match self.license_write(key, expression)?.update {
            Some(update) => self.update_item(update).await,
            None => Err(StoreError::Internal("a license update that changes nothing".into()).into()),
        }
    }

    /// The same update of a license item, as one item of a transaction (a condition check when it
    /// changes nothing: a transaction's Update needs an update expression).
    fn license_write(&self, key: &LicenseKey, mut expression: Expression) -> Result<TransactWriteItem, StoreError> {
        // A vendor call's change names its token (the events of the change say who acted); any
        // other change names none, so no later change is credited to an earlier call's token.
        if !expression.update_expression().is_empty() {
            if let Some(request) = crate::actor::request_id() {
                expression.name("#request", crate::actor::REQUEST_ATTRIBUTE).value(":request", s(&request));
                expression.set("#request = :request");
            }
            expression.name("#changed_by", crate::actor::CHANGED_BY);
            match crate::actor::changed_by() {
                Some(by) => {
                    expression.value(":changed_by", s(&by)).set("#changed_by = :changed_by");
                }
                None => expression.removes.push("#changed_by".into()),
            }
        }
        let update_expression = expression.update_expression();
        let condition = expression.condition_expression();
        let names = (!expression.names.is_empty()).then_some(expression.names);
        let values = (!expression.values.is_empty()).then_some(expression.values);
        if update_expression.is_empty() {
            let check = ConditionCheck::builder()
                .table_name(&self.table)
                .key("PK", license_pk(key))
                .key("SK", s(LICENSE_SK))
                .set_condition_expression(condition)
                .set_expression_attribute_names(names)
                .set_expression_attribute_values(values)
                .build();
            return Ok(TransactWriteItem::builder().condition_check(built(check)?).build());
        }
        let update = Update::builder()
            .table_name(&self.table)
            .key("PK", license_pk(key))
            .key("SK", s(LICENSE_SK))
            .update_expression(update_expression)
            .set_condition_expression(condition)
            .set_expression_attribute_names(names)
            .set_expression_attribute_values(values)
            .build();
        Ok(TransactWriteItem::builder().update(built(update)?).build())
    }

    /// Removes the lapsed entries of `slot` that one write cannot hold, in conditional writes of
    /// their own (each entry only if it still reads as observed: removing a lapsed entry frees
    /// nothing that runs), and returns the slot for the rest.
    async fn fit(&self, key: &LicenseKey, map: &'static str, slot: &Slot) -> Result<Slot, WriteError> {
        let excess = slot.take_over.len().saturating_sub(MAX_TAKE_OVER_PER_WRITE);
        for chunk in slot.take_over[..excess].chunks(MAX_TAKE_OVER_PER_WRITE) {
            let mut e = Expression::default();
            e.name("#m", map);
            for (index, (holder, end)) in chunk.iter().enumerate() {
                e.name(&format!("#m{index}"), holder.as_str()).value(&format!(":m{index}"), s(&end.to_string()));
                e.condition(format!("#m.#m{index} = :m{index}"));
                e.removes.push(format!("#m.#m{index}"));
            }
            self.update_license(key, e).await?;
        }
        Ok(Slot { own: slot.own, take_over: slot.take_over[excess..].to_vec() })
    }

    /// A transaction's Update sent alone, as one UpdateItem; a failed condition is a conflict.
    async fn update_item(&self, update: Update) -> Result<(), WriteError> {
        self.count_round_trip();
        let output = self
            .client
            .update_item()
            .table_name(update.table_name())
            .set_key(Some(update.key().clone()))
            .update_expression(update.update_expression())
            .set_condition_expression(update.condition_expression().map(str::to_string))
            .set_expression_attribute_names(update.expression_attribute_names().cloned())
            .set_expression_attribute_values(update.expression_attribute_values().cloned())
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(conditional_error)?;
        self.count_writes(output.consumed_capacity());
        Ok(())
    }

    /// Removes `holder`'s lease, provided it still ends at `end` and that is not after `now` (a
    /// lapsed lease: taking it frees nothing that runs), as one item of a transaction. Bound or
    /// released, the device keeps its item.
    fn lease_removal(
        &self,
        key: &LicenseKey,
        holder: &HardwareId,
        end: Timestamp,
        now: Timestamp,
    ) -> Result<TransactWriteItem, StoreError> {
        let mut update = Update::builder();
        let mut removal = "REMOVE #end".to_string();
        if let Some(request) = crate::actor::request_id() {
            removal = format!("SET request_id = :request {removal}");
            update = update.expression_attribute_values(":request", s(&request));
        }
        let update = update
            .table_name(&self.table)
            .key("PK", license_pk(key))
            .key("SK", device_sk(holder))
            .update_expression(removal)
            .condition_expression("#end = :end AND #end <= :now")
            .expression_attribute_names("#end", LEASE_END)
            .expression_attribute_values(":end", s(&end.to_string()))
            .expression_attribute_values(":now", s(&now.to_string()))
            .build();
        Ok(TransactWriteItem::builder().update(built(update)?).build())
    }

    /// Puts a lease moved from the earlier layout on its device, as read (bound, holding none), as
    /// one item of a transaction; the horizon moves as on any acquisition.
    fn moved_lease(&self, key: &LicenseKey, device: &Device, end: Timestamp) -> Result<TransactWriteItem, StoreError> {
        let horizon = horizon_on_acquire(device.credential_until, end);
        let mut update = Update::builder()
            .table_name(&self.table)
            .key("PK", license_pk(key))
            .key("SK", device_sk(&device.hardware_id))
            // `lease_moved`: the events of this change are no acquisition (the lease was taken
            // under the earlier layout); any later lease write removes it.
            .update_expression(match crate::actor::request_id() {
                Some(_) => "SET #end = :end, credential_until = :horizon, lease_moved = :moved, request_id = :request",
                None => "SET #end = :end, credential_until = :horizon, lease_moved = :moved",
            })
            .expression_attribute_values(":moved", AttributeValue::Bool(true))
            .expression_attribute_names("#end", LEASE_END)
            .expression_attribute_values(":end", s(&end.to_string()))
            .expression_attribute_values(":horizon", s(&horizon.to_string()));
        if let Some(request) = crate::actor::request_id() {
            update = update.expression_attribute_values(":request", s(&request));
        }
        let recorded = match device.credential_until {
            Some(recorded) => {
                update = update.expression_attribute_values(":recorded", s(&recorded.to_string()));
                "credential_until = :recorded"
            }
            None => "attribute_not_exists(credential_until)",
        };
        let update = update
            .condition_expression(format!(
                "attribute_exists(SK) AND {BOUND} AND attribute_not_exists(#end) AND {recorded}"
            ))
            .build();
        Ok(TransactWriteItem::builder().update(built(update)?).build())
    }

    /// Takes over the lapsed leases of `slot` that one write cannot hold first, in writes of their
    /// own (see `clear_lapsed_leases`), and returns the slot for the rest.
    async fn fit_leases(&self, key: &LicenseKey, slot: &Slot, now: Timestamp) -> Result<Slot, WriteError> {
        let excess = slot.take_over.len().saturating_sub(MAX_TAKE_OVER_PER_WRITE);
        self.clear_lapsed_leases(key, &slot.take_over[..excess], now).await?;
        Ok(Slot { own: slot.own, take_over: slot.take_over[excess..].to_vec() })
    }

    /// Turns a bound device into a tombstone: who released it and until when its credentials may
    /// run, kept until TTL deletes it after that. Holds: still bound, with the horizon read.
    fn release_write(
        &self,
        key: &LicenseKey,
        device: &Device,
        credential_until: Option<Timestamp>,
        released_by: ReleasedBy,
        now: Timestamp,
    ) -> Result<TransactWriteItem, StoreError> {
        let released_by = match released_by {
            ReleasedBy::Client => "client",
            ReleasedBy::Vendor => "vendor",
            ReleasedBy::Rotation => "rotation",
        };
        let mut update = Update::builder()
            .table_name(&self.table)
            .key("PK", license_pk(key))
            .key("SK", device_sk(&device.hardware_id))
            .expression_attribute_names("#ttl", "ttl")
            .expression_attribute_values(":now", s(&now.to_string()))
            .expression_attribute_values(":by", s(released_by))
            .expression_attribute_values(":ttl", n(tombstone_expires(credential_until, now).unix()));
        let mut sets = "SET released_at = :now, released_by = :by, #ttl = :ttl".to_string();
        if let Some(request) = crate::actor::request_id() {
            sets.push_str(", request_id = :request");
            update = update.expression_attribute_values(":request", s(&request));
        }
        if let Some(by) = crate::actor::changed_by() {
            sets.push_str(", changed_by = :changed_by");
            update = update.expression_attribute_values(":changed_by", s(&by));
        }
        if let Some(until) = credential_until {
            sets.push_str(", credential_until = :until");
            update = update.expression_attribute_values(":until", s(&until.to_string()));
        }
        // Through a license file, or not (a device activated offline may be released online).
        if crate::actor::offline() {
            sets.push_str(", released_via = :via");
            update = update.expression_attribute_values(":via", s(crate::actor::VIA_OFFLINE));
        }
        // Out of the index of devices by sighting: a rotation's candidates are bound devices, and
        // tombstones left in it would be read past on every rotation.
        sets.push_str(" REMOVE last_seen_at");
        if !crate::actor::offline() {
            sets.push_str(", released_via");
        }
        let horizon = match device.credential_until {
            Some(observed) => {
                update = update.expression_attribute_values(":observed", s(&observed.to_string()));
                "credential_until = :observed"
            }
            None => "attribute_not_exists(credential_until)",
        };
        // A floating device's lease goes with it, as read (the license counts one fewer).
        let lease = match device.lease_expires_at {
            Some(observed) => {
                sets.push_str(", #end");
                update = update.expression_attribute_values(":lease", s(&observed.to_string()));
                "#end = :lease"
            }
            None => "attribute_not_exists(#end)",
        };
        let update = update
            .update_expression(sets)
            .expression_attribute_names("#end", LEASE_END)
            .condition_expression(format!("attribute_exists(SK) AND {BOUND} AND {horizon} AND {lease}"))
            .build();
        Ok(TransactWriteItem::builder().update(built(update)?).build())
    }

    /// Every license, a page at a time in table order: scans of up to [`SCAN_PAGE`] items, at most
    /// [`SCAN_ROUNDS`] per call and no new one after [`SCAN_BUDGET`] (a table of mostly devices
    /// yields few licenses per scan), resuming after the last license returned or the last item
    /// scanned.
    async fn scan_licenses(&self, limit: u32, cursor: Option<&str>) -> Result<Page, StoreError> {
        let mut start = cursor.map(decode_scan_cursor).transpose()?;
        let mut licenses = Vec::new();
        let started = std::time::Instant::now();
        for round in 0..SCAN_ROUNDS {
            // Within the function's time: a short page and a cursor rather than a timeout.
            if round > 0 && started.elapsed() > SCAN_BUDGET {
                break;
            }
            self.count_round_trip();
            let output = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("SK = :license")
                .expression_attribute_values(":license", s(LICENSE_SK))
                .limit(SCAN_PAGE)
                .set_exclusive_start_key(start)
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
                .map_err(classify)?;
            self.count_reads(output.consumed_capacity());
            for item in output.items.unwrap_or_default() {
                licenses.push(license_from(item)?);
                if licenses.len() > limit as usize {
                    licenses.truncate(limit as usize);
                    let last = licenses.last().map(|l| {
                        Item::from([("PK".to_string(), license_pk(&l.license_key)), ("SK".to_string(), s(LICENSE_SK))])
                    });
                    return Ok(Page { next_cursor: last.as_ref().and_then(encode_cursor), licenses });
                }
            }
            start = output.last_evaluated_key;
            if start.is_none() {
                return Ok(Page { licenses, next_cursor: None });
            }
        }
        Ok(Page { next_cursor: start.as_ref().and_then(encode_cursor), licenses })
    }

    fn count_round_trip(&self) {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
    }

    /// The bound devices `query` (of device items) finds, `page` items a round trip with the
    /// tombstones filtered out, until at least `wanted` are found or the query ends.
    async fn bound_devices(
        &self,
        query: QueryFluentBuilder,
        page: u32,
        wanted: usize,
    ) -> Result<Vec<Device>, StoreError> {
        let mut devices = Vec::new();
        let mut start = None;
        loop {
            self.count_round_trip();
            let output = query
                .clone()
                .filter_expression(BOUND)
                .limit(page as i32)
                .set_exclusive_start_key(start)
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
                .map_err(classify)?;
            self.count_reads(output.consumed_capacity());
            for item in output.items.unwrap_or_default() {
                devices.push(device_from(item)?);
            }
            start = output.last_evaluated_key;
            if devices.len() >= wanted || start.is_none() {
                return Ok(devices);
            }
        }
    }

    /// The items at `keys` (PK and SK each), read consistently with BatchGetItem: one round trip
    /// per 100 keys, and again for any DynamoDB left unprocessed under load.
    async fn batch_get(
        &self,
        keys: impl IntoIterator<Item = (AttributeValue, AttributeValue)>,
    ) -> Result<Vec<Item>, StoreError> {
        let keys: Vec<Item> =
            keys.into_iter().map(|(pk, sk)| HashMap::from([("PK".to_string(), pk), ("SK".to_string(), sk)])).collect();
        let mut items = Vec::new();
        for chunk in keys.chunks(100) {
            let request = KeysAndAttributes::builder().consistent_read(true).set_keys(Some(chunk.to_vec()));
            let mut pending = Some(built(request.build())?);
            while let Some(request) = pending.take() {
                self.count_round_trip();
                let batch = self.client.batch_get_item().request_items(&self.table, request);
                let output =
                    batch.return_consumed_capacity(ReturnConsumedCapacity::Total).send().await.map_err(classify)?;
                self.count_reads(output.consumed_capacity());
                items.extend(output.responses.and_then(|mut r| r.remove(&self.table)).unwrap_or_default());
                pending =
                    output.unprocessed_keys.and_then(|mut u| u.remove(&self.table)).filter(|k| !k.keys.is_empty());
            }
        }
        Ok(items)
    }

    /// The capacity units consumed so far.
    pub fn capacity_used(&self) -> CapacityUsed {
        let units = |milli: &AtomicU64| milli.load(Ordering::Relaxed) as f64 / 1000.0;
        CapacityUsed { read_units: units(&self.read_milliunits), write_units: units(&self.write_milliunits) }
    }

    fn count_reads<'a>(&self, consumed: impl IntoIterator<Item = &'a ConsumedCapacity>) {
        Self::add_units(&self.read_milliunits, consumed);
    }

    fn count_writes<'a>(&self, consumed: impl IntoIterator<Item = &'a ConsumedCapacity>) {
        Self::add_units(&self.write_milliunits, consumed);
    }

    fn add_units<'a>(milliunits: &AtomicU64, consumed: impl IntoIterator<Item = &'a ConsumedCapacity>) {
        let units: f64 = consumed.into_iter().filter_map(|c| c.capacity_units).sum();
        milliunits.fetch_add((units * 1000.0).round() as u64, Ordering::Relaxed);
    }

    fn put_new_license(&self, license: &License) -> Result<TransactWriteItem, StoreError> {
        let mut item = with_request(license_item(license)?);
        if let Some(by) = crate::actor::changed_by() {
            item.insert(crate::actor::CHANGED_BY.into(), s(&by));
        }
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(PK)")
            .build();
        Ok(TransactWriteItem::builder().put(built(put)?).build())
    }

    /// A client write's receipt, as one item of its transaction: new, or the write fails.
    fn receipt_put(&self, receipt: &Receipt) -> Result<TransactWriteItem, StoreError> {
        let mut item: Item =
            serde_dynamo::to_item(receipt).map_err(|e| StoreError::Internal(format!("receipt not storable: {e}")))?;
        item.insert("PK".into(), receipt_pk(&receipt.scope, &receipt.idempotency_key));
        item.insert("SK".into(), s(RECEIPT_SK));
        // A receipt past its TTL is gone, even before DynamoDB deletes it.
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(PK) OR #ttl <= :now")
            .expression_attribute_names("#ttl", "ttl")
            .expression_attribute_values(":now", n(receipt.created_at.unix()))
            .build();
        Ok(TransactWriteItem::builder().put(built(put)?).build())
    }

    /// `items` with the receipt, if any, in one transaction.
    async fn transact_with(
        &self,
        mut items: Vec<TransactWriteItem>,
        receipt: Option<&Receipt>,
    ) -> Result<(), WriteError> {
        if let Some(receipt) = receipt {
            items.push(self.receipt_put(receipt)?);
        }
        self.transact(items).await
    }

    async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<(), WriteError> {
        self.count_round_trip();
        let output = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(transaction_error)?;
        self.count_writes(output.consumed_capacity());
        Ok(())
    }

    /// Undo the chunks of a batch that were written before a later chunk failed, sending again
    /// what DynamoDB left unprocessed (throttled) a few times before giving up with a log line.
    async fn delete_licenses(&self, licenses: &[License]) {
        for chunk in licenses.chunks(25) {
            let mut requests: Vec<aws_sdk_dynamodb::types::WriteRequest> = chunk
                .iter()
                .filter_map(|l| {
                    let delete = aws_sdk_dynamodb::types::DeleteRequest::builder()
                        .key("PK", license_pk(&l.license_key))
                        .key("SK", s(LICENSE_SK))
                        .build()
                        .ok()?;
                    Some(aws_sdk_dynamodb::types::WriteRequest::builder().delete_request(delete).build())
                })
                .collect();
            for attempt in 0..5u32 {
                if requests.is_empty() {
                    break;
                }
                if attempt > 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(50 << attempt)).await;
                }
                self.count_round_trip();
                let batch = self.client.batch_write_item().request_items(&self.table, requests.clone());
                match batch.return_consumed_capacity(ReturnConsumedCapacity::Total).send().await {
                    Ok(output) => {
                        self.count_writes(output.consumed_capacity());
                        requests = output.unprocessed_items.and_then(|mut m| m.remove(&self.table)).unwrap_or_default();
                    }
                    Err(err) => {
                        tracing::error!(error = %DisplayErrorContext(&err), "could not undo a partly written license batch");
                    }
                }
            }
            if !requests.is_empty() {
                tracing::error!(left = requests.len(), "licenses of a failed batch were left in place");
            }
        }
    }
}

impl Store for DynamoStore {
    async fn create_licenses(
        &self,
        licenses: &[License],
        record: Option<&IdempotencyRecord>,
    ) -> Result<(), WriteError> {
        // One slot of the last transaction is kept for the idempotency record, which commits
        // with the last licenses: a replay never points at licenses that were not all written.
        let per_transaction = MAX_TRANSACTION_ITEMS - 1;
        let chunks: Vec<&[License]> = licenses.chunks(per_transaction).collect();
        for (index, chunk) in chunks.iter().enumerate() {
            let mut items = chunk.iter().map(|l| self.put_new_license(l)).collect::<Result<Vec<_>, _>>()?;
            if let (Some(record), true) = (record, index + 1 == chunks.len()) {
                let mut item: Item = serde_dynamo::to_item(record)
                    .map_err(|e| StoreError::Internal(format!("idempotency record not storable: {e}")))?;
                item.insert("PK".into(), idempotency_pk(&record.idempotency_key));
                item.insert("SK".into(), s(IDEMPOTENCY_SK));
                let put = Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(item))
                    .condition_expression("attribute_not_exists(PK)")
                    .build();
                items.push(TransactWriteItem::builder().put(built(put)?).build());
            }
            if let Err(err) = self.transact(items).await {
                self.delete_licenses(&licenses[..index * per_transaction]).await;
                return Err(err);
            }
        }
        Ok(())
    }

    async fn idempotency_record(&self, idempotency_key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.get_one(idempotency_pk(idempotency_key), IDEMPOTENCY_SK, "idempotency record").await
    }

    async fn receipt(&self, scope: &str, idempotency_key: &str) -> Result<Option<Receipt>, StoreError> {
        self.get_one(receipt_pk(scope, idempotency_key), RECEIPT_SK, "receipt").await
    }

    async fn licenses(&self, keys: &[LicenseKey]) -> Result<Vec<License>, StoreError> {
        let items = self.batch_get(keys.iter().map(|key| (license_pk(key), s(LICENSE_SK)))).await?;
        let mut found: HashMap<LicenseKey, License> = HashMap::new();
        for item in items {
            let license = license_from(item)?;
            found.insert(license.license_key.clone(), license);
        }
        Ok(keys.iter().filter_map(|k| found.remove(k)).collect())
    }

    async fn list_licenses(&self, lookup: &Lookup, limit: u32, cursor: Option<&str>) -> Result<Page, StoreError> {
        let Some((index, attribute, value)) = lookup_index(lookup) else {
            return self.scan_licenses(limit, cursor).await;
        };
        let start = cursor.map(|c| decode_cursor(c, attribute, &value)).transpose()?;
        // The product index holds keys only (and a product's trial records too: not licenses).
        let keys_only = index == PRODUCT_INDEX;
        self.count_round_trip();
        let mut query = self.client.query();
        if keys_only {
            query = query.filter_expression("SK = :license").expression_attribute_values(":license", s(LICENSE_SK));
        }
        let output = query
            .table_name(&self.table)
            .index_name(index)
            .key_condition_expression("#pk = :pk")
            .expression_attribute_names("#pk", attribute)
            .expression_attribute_values(":pk", AttributeValue::S(value))
            .scan_index_forward(false)
            // One more than the page, so a cursor is handed out only while more remain (DynamoDB
            // returns a LastEvaluatedKey whenever the limit is reached, even at the very end).
            .limit(limit.saturating_add(1) as i32)
            .set_exclusive_start_key(start)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(classify)?;
        self.count_reads(output.consumed_capacity());
        let mut items = output.items.unwrap_or_default();
        let next_cursor = if items.len() > limit as usize {
            items.truncate(limit as usize);
            let last = items.last().map(|item| {
                let names = [attribute, "created_at", "PK", "SK"];
                names.iter().filter_map(|n| item.get(*n).map(|v| (n.to_string(), v.clone()))).collect::<Item>()
            });
            last.as_ref().and_then(encode_cursor)
        } else {
            // Fewer than asked, yet a key: the query stopped at its 1 MB page, so more may remain.
            output.last_evaluated_key.as_ref().and_then(encode_cursor)
        };
        let licenses = match keys_only {
            true => {
                let keys = items.iter().map(|item| item.get("PK").and_then(|pk| pk.as_s().ok()));
                let keys: Vec<LicenseKey> = keys
                    .map(|pk| pk.and_then(|pk| pk.strip_prefix("L#")).and_then(|key| LicenseKey::parse(key).ok()))
                    .collect::<Option<_>>()
                    .ok_or_else(|| StoreError::Internal("a product index entry without a license key".into()))?;
                self.licenses(&keys).await?
            }
            false => items.into_iter().map(license_from).collect::<Result<Vec<_>, _>>()?,
        };
        Ok(Page { licenses, next_cursor })
    }

    async fn license_and_device(
        &self,
        key: &LicenseKey,
        hardware_id: &HardwareId,
    ) -> Result<(Option<License>, Option<Device>), StoreError> {
        let items =
            self.batch_get([(license_pk(key), s(LICENSE_SK)), (license_pk(key), device_sk(hardware_id))]).await?;
        let (mut license, mut device) = (None, None);
        for item in items {
            match item.get("SK") {
                Some(AttributeValue::S(sk)) if sk == LICENSE_SK => license = Some(license_from(item)?),
                _ if !is_released(&item) => device = Some(device_from(item)?),
                _ => {}
            }
        }
        Ok((license, device))
    }

    async fn least_recently_seen(&self, key: &LicenseKey, limit: u32) -> Result<Vec<Device>, StoreError> {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(SEEN_INDEX)
            .key_condition_expression("PK = :pk")
            .expression_attribute_values(":pk", license_pk(key));
        let mut devices = self.bound_devices(query, limit, limit as usize).await?;
        // Sightings in the same second tie in the index; the rule's order breaks the tie.
        devices.sort_by_key(crate::rules::seen_order);
        devices.truncate(limit as usize);
        Ok(devices)
    }

    async fn devices_page(
        &self,
        key: &LicenseKey,
        limit: u32,
        after: Option<&HardwareId>,
    ) -> Result<(Vec<Device>, bool), StoreError> {
        // Device items sort by hardware id after their prefix, up to the prefix's end ('$' follows
        // '#'). Past `after`: from its key plus a space, which sorts after it and before any longer
        // id it begins (hardware ids are printable ASCII without spaces).
        let from = after.map_or_else(|| DEVICE_PREFIX.to_string(), |after| format!("{DEVICE_PREFIX}{after} "));
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("PK = :pk AND SK BETWEEN :from AND :to")
            .expression_attribute_values(":pk", license_pk(key))
            .expression_attribute_values(":from", s(&from))
            .expression_attribute_values(":to", s("D$"))
            .consistent_read(true);
        // One more than the page, to know whether more follow; at least 100 at a time, so a run of
        // tombstones costs few round trips.
        let wanted = limit as usize + 1;
        let mut devices = self.bound_devices(query, limit.saturating_add(1).max(100), wanted).await?;
        let more = devices.len() > limit as usize;
        devices.truncate(limit as usize);
        Ok((devices, more))
    }

    async fn devices(&self, key: &LicenseKey, hardware_ids: &[HardwareId]) -> Result<Vec<Device>, StoreError> {
        let items = self.batch_get(hardware_ids.iter().map(|id| (license_pk(key), device_sk(id)))).await?;
        items.into_iter().filter(|item| !is_released(item)).map(device_from).collect()
    }

    async fn activate(&self, write: &ActivationWrite<'_>) -> Result<(), WriteError> {
        let license = write.license;
        let key = &license.license_key;
        let mut e = Expression::default();
        e.name("#status", "status")
            .value(":active", status(LicenseStatus::Active))
            .value(":now", s(&write.now.to_string()))
            .value(":one", n(1))
            .condition("attribute_exists(PK)")
            .condition("#status = :active")
            .set("last_activated_at = :now, first_activated_at = if_not_exists(first_activated_at, :now)")
            .set("version = version + :one");
        let mut items = Vec::new();
        let reclaim = reclaimed(license, &write.device.hardware_id, write.now);
        match write.evict {
            None => {
                e.set("times_activated = times_activated + :one")
                    .condition("(times_activated < max_activations OR allow_unlimited_activations = :true)")
                    .value(":true", AttributeValue::Bool(true));
            }
            Some(eviction) => {
                if let Some(entry) = &eviction.allowance {
                    let slot = self.fit(key, RELEASES, &entry.slot).await?;
                    // A device coming back frees its own place in the same write.
                    let room = license.release_allowance + u32::from(reclaim.is_some());
                    e.put_slot(releases(license), &eviction.hardware_id, &slot, entry.until, room);
                    e.set("transfer_count = transfer_count + :one")
                        .condition("(attribute_not_exists(max_transfers) OR transfer_count < max_transfers)");
                }
                let evicted = Device {
                    hardware_id: eviction.hardware_id.clone(),
                    credential_until: eviction.credential_until,
                    ..write.device.clone()
                };
                let until = eviction.allowance.as_ref().map(|entry| entry.until).or(eviction.credential_until);
                items.push(self.release_write(key, &evicted, until, ReleasedBy::Rotation, write.now)?);
            }
        }
        if let Some(cutoff) = freeze_cutoff(license, write.now) {
            e.condition("(attribute_not_exists(last_activated_at) OR last_activated_at <= :freeze_cutoff)")
                .value(":freeze_cutoff", s(&cutoff.to_string()));
        }
        // A device coming back while its earlier binding's release is still owed takes that place back.
        if let Some(observed) = reclaim {
            e.remove_entry("m", RELEASES, &write.device.hardware_id, Some(observed));
        }
        let device_put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(device_item(license, write.device)?))
            .condition_expression(format!("attribute_not_exists(SK) OR {RELEASED}"))
            .build();
        items.insert(0, self.license_write(key, e)?);
        items.insert(1, TransactWriteItem::builder().put(built(device_put)?).build());
        self.transact_with(items, write.receipt).await
    }

    async fn deactivate(&self, write: &DeactivationWrite<'_>) -> Result<(), WriteError> {
        let license = write.license;
        let key = &license.license_key;
        let hardware_id = &write.device.hardware_id;
        let mut e = Expression::default();
        e.condition("attribute_exists(PK)");
        match write.seat {
            SeatRelease::Counted { count_transfer } => {
                e.value(":one", n(1))
                    .value(":zero", n(0))
                    .set("times_activated = times_activated - :one, version = version + :one")
                    .condition("times_activated > :zero");
                if count_transfer {
                    e.set("transfer_count = transfer_count + :one")
                        .condition("(attribute_not_exists(max_transfers) OR transfer_count < max_transfers)");
                }
            }
            // The lease itself leaves with the device (`release_write`, conditioned on it as read).
            // The license must hold no lease the earlier way either (one written by an earlier
            // version since the read would be dropped, uncounted, once moved).
            SeatRelease::Lease { observed } => {
                leases_are_items(&mut e);
                if observed.is_some() {
                    e.name("#held", LEASES_HELD)
                        .value(":one", n(1))
                        .set("#held = #held - :one")
                        .condition("#held >= :one");
                }
            }
        }
        if let Some(entry) = write.allowance {
            let slot = self.fit(key, RELEASES, &entry.slot).await?;
            e.put_slot(releases(license), hardware_id, &slot, entry.until, license.release_allowance);
        }
        let credential_until = crate::rules::credential_until(license, write.device);
        let until = write.allowance.map(|entry| entry.until).max(credential_until);
        let items = vec![
            self.release_write(key, write.device, until, write.released_by, write.now)?,
            self.license_write(key, e)?,
        ];
        self.transact_with(items, write.receipt).await
    }

    async fn lease(&self, write: &LeaseWrite<'_>) -> Result<(), WriteError> {
        let license = write.license;
        let key = &license.license_key;
        let device = write.device;
        let until = write.plan.until();
        let mut update = Update::builder()
            .table_name(&self.table)
            .key("PK", license_pk(key))
            .key("SK", device_sk(&device.hardware_id))
            .expression_attribute_names("#end", LEASE_END)
            .expression_attribute_values(":until", s(&until.to_string()));
        let mut sets = vec!["#end = :until"];
        if let Some(request) = crate::actor::request_id() {
            sets.push("request_id = :request");
            update = update.expression_attribute_values(":request", s(&request));
        }
        let mut conditions = vec![format!("attribute_exists(SK) AND {BOUND}")];
        if let Some(borrowed) = write.borrowed_until {
            sets.push("borrowed_until = :borrowed");
            update = update.expression_attribute_values(":borrowed", s(&borrowed.to_string()));
        }
        let mut items = Vec::new();
        let slot = match write.plan {
            LeasePlan::Renew { observed, .. } => {
                conditions.push("#end = :own".into());
                update = update.expression_attribute_values(":own", s(&observed.to_string()));
                None
            }
            LeasePlan::Acquire { slot, .. } => Some(self.fit_leases(key, slot, write.now).await?),
        };
        if let Some(slot) = &slot {
            // The horizon moves on every acquisition (see `rules::horizon_on_acquire`).
            let horizon = horizon_on_acquire(device.credential_until, until);
            if write.new_device {
                let mut item =
                    Device { lease_expires_at: Some(until), credential_until: Some(horizon), ..device.clone() };
                item.borrowed_until = write.borrowed_until.or(item.borrowed_until);
                let put = Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(device_item(license, &item)?))
                    .condition_expression(format!(
                        "attribute_not_exists(SK) OR ({RELEASED} AND attribute_not_exists(#end))"
                    ))
                    .expression_attribute_names("#end", LEASE_END)
                    .build();
                items.push(TransactWriteItem::builder().put(built(put)?).build());
            } else {
                sets.push("credential_until = :horizon");
                update = update.expression_attribute_values(":horizon", s(&horizon.to_string()));
                conditions.push(match slot.own {
                    Some(observed) => {
                        update = update.expression_attribute_values(":own", s(&observed.to_string()));
                        "#end = :own".into()
                    }
                    None => "attribute_not_exists(#end)".into(),
                });
                conditions.push(match device.credential_until {
                    Some(observed) => {
                        update = update.expression_attribute_values(":recorded", s(&observed.to_string()));
                        "credential_until = :recorded".into()
                    }
                    None => "attribute_not_exists(credential_until)".into(),
                });
            }
            for (other, end) in &slot.take_over {
                items.push(self.lease_removal(key, other, *end, write.now)?);
            }
        }
        if !(write.new_device && slot.is_some()) {
            let update = update
                .update_expression(format!("SET {} REMOVE lease_moved", sets.join(", ")))
                .condition_expression(conditions.join(" AND "))
                .build();
            items.insert(0, TransactWriteItem::builder().update(built(update)?).build());
        }
        let change = slot.as_ref().map_or(0, Slot::count_change);
        if change != 0 || write.new_device {
            let mut e = Expression::default();
            e.condition("attribute_exists(PK)");
            if change != 0 {
                // The count stays within the seats as read; the layout says leases are items.
                let bound = i64::from(license.max_activations) - change;
                leases_are_items(&mut e);
                e.name("#held", LEASES_HELD)
                    .value(":change", n(change))
                    .value(":bound", n(bound))
                    .set("#leases = :on_devices, #held = if_not_exists(#held, :zero) + :change")
                    .condition("(attribute_not_exists(#held) OR #held <= :bound)");
            }
            if write.new_device {
                e.set("last_activated_at = :now, first_activated_at = if_not_exists(first_activated_at, :now)")
                    .set("version = version + :one")
                    .value(":now", s(&write.now.to_string()))
                    .value(":one", n(1))
                    .name("#status", "status")
                    .condition("#status = :active")
                    .value(":active", status(LicenseStatus::Active));
            }
            items.insert(0, self.license_write(key, e)?);
        }
        match items.as_mut_slice() {
            // A lone write of the device (a heartbeat's renewal): one UpdateItem, half the units.
            [TransactWriteItem { update: update @ Some(_), .. }] if write.receipt.is_none() => {
                let update = update.take().ok_or_else(|| StoreError::Internal("no update".into()))?;
                self.update_item(update).await
            }
            _ => self.transact_with(items, write.receipt).await,
        }
    }

    async fn lapsed_leases(&self, key: &LicenseKey, now: Timestamp, limit: u32) -> Result<Vec<HeldLease>, StoreError> {
        self.count_round_trip();
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(LEASE_INDEX)
            .key_condition_expression("PK = :pk AND #end <= :now")
            .expression_attribute_names("#end", LEASE_END)
            .expression_attribute_values(":pk", license_pk(key))
            .expression_attribute_values(":now", s(&now.to_string()))
            .limit(limit as i32)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(classify)?;
        self.count_reads(output.consumed_capacity());
        let mut leases = Vec::new();
        for item in output.items.unwrap_or_default() {
            let end = item.get(LEASE_END).and_then(|end| end.as_s().ok()).and_then(|end| Timestamp::parse(end).ok());
            let end = end.ok_or_else(|| StoreError::Internal("a lease without a readable end".into()))?;
            leases.push((hardware_id_of(&item)?, end));
        }
        Ok(leases)
    }

    async fn clear_lapsed_leases(
        &self,
        key: &LicenseKey,
        leases: &[HeldLease],
        now: Timestamp,
    ) -> Result<(), WriteError> {
        for chunk in leases.chunks(MAX_TRANSACTION_ITEMS - 1) {
            let mut e = Expression::default();
            e.name("#held", LEASES_HELD).value(":cleared", n(chunk.len())).set("#held = #held - :cleared");
            e.condition("#held >= :cleared");
            let mut items = vec![self.license_write(key, e)?];
            for (holder, end) in chunk {
                items.push(self.lease_removal(key, holder, *end, now)?);
            }
            self.transact(items).await?;
        }
        Ok(())
    }

    async fn upgrade_leases(&self, license: &License) -> Result<(), WriteError> {
        let key = &license.license_key;
        // First the license leaves the earlier layout: the map moves aside and `leases` becomes a
        // string, so an earlier version's lease write fails from now on. (Done already when the
        // map is being moved: then this finds no map and goes on with the moves.)
        let mut e = Expression::default();
        e.name("#leases", LEASES)
            .name("#moving", MOVING_LEASES)
            .name("#held", LEASES_HELD)
            .value(":map", s("M"))
            .value(":on_devices", s(LEASES_ON_DEVICES))
            .value(":zero", n(0))
            .set("#moving = #leases, #leases = :on_devices, #held = if_not_exists(#held, :zero)")
            .condition("attribute_type(#leases, :map)");
        match self.update_license(key, e).await {
            Ok(()) | Err(WriteError::Conflict) => {}
            Err(err) => return Err(err),
        }
        // Then each lease moves to its device, counted (a lapsed one too: it is taken over as any
        // lapsed lease). A lease of a device no longer bound is dropped. A device whose horizon
        // moved, or that was released meanwhile, fails its move's condition, and the caller reads
        // again and upgrades what is left.
        let entries: Vec<(&HardwareId, &Timestamp)> = license.unmoved_leases.iter().collect();
        for chunk in entries.chunks(LEASES_MOVED_PER_WRITE) {
            let holders: Vec<HardwareId> = chunk.iter().map(|(holder, _)| (*holder).clone()).collect();
            let devices = self.devices(key, &holders).await?;
            let mut e = Expression::default();
            e.name("#moving", MOVING_LEASES).name("#held", LEASES_HELD);
            let mut items = Vec::new();
            for (index, (holder, end)) in chunk.iter().enumerate() {
                e.name(&format!("#h{index}"), holder.as_str()).value(&format!(":h{index}"), s(&end.to_string()));
                e.condition(format!("#moving.#h{index} = :h{index}"));
                e.removes.push(format!("#moving.#h{index}"));
                let device = devices.iter().find(|d| &d.hardware_id == *holder);
                if let Some(device) = device {
                    items.push(self.moved_lease(key, device, **end)?);
                }
            }
            e.value(":moved", n(items.len())).set("#held = #held + :moved");
            items.insert(0, self.license_write(key, e)?);
            self.transact(items).await?;
        }
        Ok(())
    }

    async fn consume(
        &self,
        key: &LicenseKey,
        plan: &ConsumptionPlan,
        lease_holder: Option<(&HardwareId, Timestamp)>,
        receipt: Option<&Receipt>,
    ) -> Result<(), WriteError> {
        let mut e = Expression::default();
        e.name("#c", CONSUMPTION);
        let fresh = || {
            AttributeValue::M(HashMap::from([
                ("period".to_string(), s(plan.period.as_str())),
                ("used".to_string(), n(plan.amount)),
            ]))
        };
        match &plan.observed {
            None if !plan.counters_exist => {
                e.value(":whole", AttributeValue::M(HashMap::from([(plan.key.as_str().to_string(), fresh())])))
                    .set("#c = :whole")
                    .condition("attribute_exists(PK) AND attribute_not_exists(#c)");
            }
            None => {
                e.name("#k", plan.key.as_str())
                    .value(":fresh", fresh())
                    .set("#c.#k = :fresh")
                    .condition("attribute_exists(#c) AND attribute_not_exists(#c.#k)");
            }
            Some(observed) if plan.continues() => {
                e.name("#k", plan.key.as_str())
                    .name("#p", "period")
                    .name("#u", "used")
                    .value(":amount", n(plan.amount))
                    .value(":period", s(observed.period.as_str()))
                    .set("#c.#k.#u = #c.#k.#u + :amount")
                    .condition("#c.#k.#p = :period");
                if let Some(limit) = plan.limit {
                    // Room for the amount, whatever was added since the read.
                    e.condition("#c.#k.#u <= :ceiling").value(":ceiling", n(limit - plan.amount));
                }
            }
            Some(observed) => {
                e.name("#k", plan.key.as_str())
                    .name("#p", "period")
                    .value(":fresh", fresh())
                    .value(":old", s(observed.period.as_str()))
                    .set("#c.#k = :fresh")
                    .condition("#c.#k.#p = :old");
            }
        }
        let mut items = vec![self.license_write(key, e)?];
        if let Some((hardware_id, now)) = lease_holder {
            // A floating device counts use only while it holds a seat.
            let check = ConditionCheck::builder()
                .table_name(&self.table)
                .key("PK", license_pk(key))
                .key("SK", device_sk(hardware_id))
                .condition_expression(format!("attribute_exists(SK) AND {BOUND} AND #end > :now"))
                .expression_attribute_names("#end", LEASE_END)
                .expression_attribute_values(":now", s(&now.to_string()))
                .build();
            items.push(TransactWriteItem::builder().condition_check(built(check)?).build());
        }
        // A transaction even alone: the SDK retries a write whose answer was lost (a 500 may follow
        // a commit), and only a transaction's ClientRequestToken (which the SDK sets once per call)
        // makes that retry a no-op instead of a second count.
        self.transact_with(items, receipt).await
    }

    async fn put_trial_terms(&self, terms: &TrialTerms) -> Result<(), StoreError> {
        let mut item: Item =
            serde_dynamo::to_item(terms).map_err(|e| StoreError::Internal(format!("trial terms not storable: {e}")))?;
        item.insert("PK".into(), trial_terms_pk(&terms.product));
        item.insert("SK".into(), s(TRIAL_SK));
        self.count_round_trip();
        let put = self.client.put_item().table_name(&self.table).set_item(Some(item));
        let output = put.return_consumed_capacity(ReturnConsumedCapacity::Total).send().await.map_err(classify)?;
        self.count_writes(output.consumed_capacity());
        Ok(())
    }

    async fn trial_terms(&self, product: &Product) -> Result<Option<TrialTerms>, StoreError> {
        self.get_one(trial_terms_pk(product), TRIAL_SK, "trial terms").await
    }

    async fn trial_marker(
        &self,
        product: &Product,
        hardware_id: &HardwareId,
    ) -> Result<Option<TrialMarker>, StoreError> {
        self.get_one(trial_marker_pk(product, hardware_id), TRIAL_SK, "trial marker").await
    }

    async fn start_trial(
        &self,
        marker: &TrialMarker,
        license: &License,
        device: &Device,
        receipt: Option<&Receipt>,
    ) -> Result<(), WriteError> {
        let mut marker_item: Item = serde_dynamo::to_item(marker)
            .map_err(|e| StoreError::Internal(format!("trial marker not storable: {e}")))?;
        marker_item.insert("PK".into(), trial_marker_pk(&marker.product, &marker.hardware_id));
        marker_item.insert("SK".into(), s(TRIAL_SK));
        let new_item = |item: Item| {
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(PK)")
                .build();
            built(put).map(|put| TransactWriteItem::builder().put(put).build())
        };
        let items = vec![
            new_item(with_request(marker_item))?,
            new_item(with_request(license_item(license)?))?,
            new_item(device_item(license, device)?)?,
        ];
        self.transact_with(items, receipt).await
    }

    async fn replace_license(&self, previous: &License, license: &License) -> Result<(), WriteError> {
        // An update of every stored field but those only their own operations write, so a lease,
        // release or consumption written since `previous` was read (none moves `version`) is kept.
        let mut item = license_item(license)?;
        let before = license_item(previous)?;
        let kept = |name: &str| ["PK", "SK"].contains(&name) || OPERATION_OWNED.contains(&name);
        item.retain(|name, _| !kept(name));
        let mut e = Expression::default();
        e.value(":expected", n(previous.version)).condition("version = :expected");
        for (index, (name, value)) in item.iter().enumerate() {
            e.name(&format!("#s{index}"), name).value(&format!(":s{index}"), value.clone());
            e.set(format!("#s{index} = :s{index}"));
        }
        let gone = before.keys().filter(|name| !item.contains_key(*name) && !kept(name));
        for (index, name) in gone.enumerate() {
            e.name(&format!("#r{index}"), name);
            e.removes.push(format!("#r{index}"));
        }
        // A transaction, so the SDK's repeat of a patch whose answer was lost is a no-op (its token),
        // not a version conflict on the patch it made itself.
        self.transact(vec![self.license_write(&license.license_key, e)?]).await
    }

    async fn touch_device(
        &self,
        key: &LicenseKey,
        hardware_id: &HardwareId,
        sighting: &Sighting,
    ) -> Result<(), WriteError> {
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("PK", license_pk(key))
            .key("SK", device_sk(hardware_id))
            .expression_attribute_values(":now", s(&sighting.now.to_string()));
        update = match sighting.credential_until {
            Some(until) => update
                .update_expression("SET last_seen_at = :now, credential_until = :until")
                .condition_expression(format!(
                    "attribute_exists(SK) AND {BOUND} AND (attribute_not_exists(credential_until) OR credential_until < :until)"
                ))
                .expression_attribute_values(":until", s(&until.to_string())),
            None => update
                .update_expression("SET last_seen_at = :now")
                .condition_expression(format!("attribute_exists(SK) AND {BOUND} AND last_seen_at < :stale_before"))
                .expression_attribute_values(":stale_before", s(&sighting.stale_before.to_string())),
        };
        self.count_round_trip();
        let output =
            update.return_consumed_capacity(ReturnConsumedCapacity::Total).send().await.map_err(conditional_error)?;
        self.count_writes(output.consumed_capacity());
        Ok(())
    }

    fn webhooks(&self) -> Option<&DynamoStore> {
        Some(self)
    }

    async fn append_events(&self, events: &[&crate::events::Event], keep_days: Option<u32>) -> Result<(), StoreError> {
        for chunk in events.chunks(audit::EVENTS_PER_WRITE) {
            self.put_events(chunk, keep_days).await?;
        }
        Ok(())
    }

    async fn list_events(
        &self,
        query: &super::EventQuery,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<super::EventPage, StoreError> {
        self.query_events(query, limit, cursor).await
    }

    fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::errors::cancellation;
    use super::records::{decode_cursor, encode_cursor};
    use super::sdk::{lambda_region, AWS_ROOT_CAS};
    use super::{AttributeValue, StoreError, WriteError};

    #[test]
    fn a_cancelled_transaction_is_mapped_by_its_reasons() {
        let kind = |reasons: &[(&str, &str)]| match cancellation(reasons) {
            WriteError::Conflict => "conflict",
            WriteError::Store(StoreError::Unavailable(_)) => "unavailable",
            WriteError::Store(StoreError::Internal(cause)) => {
                assert!(cause.contains("ValidationError: bad") || cause.contains("ItemCollection"), "{cause}");
                "internal"
            }
            WriteError::Store(_) => "other",
        };
        assert_eq!(kind(&[("None", ""), ("ConditionalCheckFailed", "")]), "conflict");
        assert_eq!(kind(&[("TransactionConflict", ""), ("None", "")]), "conflict");
        assert_eq!(kind(&[("ThrottlingError", ""), ("None", "")]), "unavailable");
        assert_eq!(kind(&[("ProvisionedThroughputExceeded", "")]), "unavailable");
        assert_eq!(kind(&[("None", ""), ("ValidationError", "bad")]), "internal", "a bug, not a retry later");
        assert_eq!(kind(&[("ItemCollectionSizeLimitExceeded", "")]), "internal");
    }

    #[test]
    fn only_cursors_of_license_items_in_this_listing_are_accepted() {
        let cursor = |pk: &str, sk: &str, created: &str| {
            let item = [("PK", pk), ("SK", sk), ("created_at", created), ("GSI1PK", "C#ann@example.com")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), AttributeValue::S(v.to_string())))
                .collect();
            encode_cursor(&item).unwrap()
        };
        let decode = |c: &str| decode_cursor(c, "GSI1PK", "C#ann@example.com");
        assert!(decode(&cursor("L#AAAAA-BBBBB", "L", "2026-11-25T00:00:00Z")).is_ok());
        for (pk, sk, created) in [
            ("", "L", "2026-11-25T00:00:00Z"),
            ("L#AAAAA-BBBBB", "", "2026-11-25T00:00:00Z"),
            ("L#AAAAA-BBBBB", "L", ""),
            ("L#AAAAA-BBBBB", "D#pc", "2026-11-25T00:00:00Z"),
            ("T#editor#pc", "L", "2026-11-25T00:00:00Z"),
            ("L#", "L", "2026-11-25T00:00:00Z"),
        ] {
            assert!(decode(&cursor(pk, sk, created)).is_err(), "{pk} {sk} {created}");
        }
        // A product's listing may stop at a trial record of that product; no other listing may.
        let at_record = |pk: &str, product: &str| {
            let item = [("PK", pk), ("SK", "TRIAL"), ("created_at", "2026-11-25T00:00:00Z"), ("product", product)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), AttributeValue::S(v.to_string())))
                .collect();
            encode_cursor(&item).unwrap()
        };
        assert!(decode_cursor(&at_record("T#editor#pc-1", "editor"), "product", "editor").is_ok());
        for (pk, product) in [("T#other#pc-1", "other"), ("T#editor#", "editor"), ("P#editor", "editor")] {
            assert!(decode_cursor(&at_record(pk, product), "product", "editor").is_err(), "{pk}");
        }
    }

    #[test]
    fn the_fast_path_is_taken_only_in_lambda_with_credentials_and_region_in_the_environment() {
        fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
            move |name| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string())
        }
        let lambda =
            [("AWS_LAMBDA_FUNCTION_NAME", "check"), ("AWS_ACCESS_KEY_ID", "AKIA"), ("AWS_REGION", "eu-west-1")];
        assert_eq!(lambda_region(env(&lambda)), Some("eu-west-1".into()));
        assert_eq!(lambda_region(env(&lambda[1..])), None, "not in Lambda: the default chains");
        assert_eq!(lambda_region(env(&[lambda[0], lambda[2]])), None, "no key in the environment");
        assert_eq!(lambda_region(env(&lambda[..2])), None, "no region");
    }
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;

    /// The SDK's TLS code panics on an unparsable trust store, and tests reach DynamoDB Local over
    /// plain HTTP, so check the embedded roots here: five PEM certificates, each DER.
    #[test]
    fn the_embedded_aws_roots_are_five_pem_certificates() {
        let bodies: Vec<Vec<u8>> = AWS_ROOT_CAS
            .split("-----BEGIN CERTIFICATE-----")
            .skip(1)
            .map(|rest| {
                let body = rest.split("-----END CERTIFICATE-----").next().unwrap();
                STANDARD.decode(body.split_whitespace().collect::<String>()).unwrap()
            })
            .collect();
        assert_eq!(bodies.len(), 5);
        assert!(bodies.iter().all(|der| der.len() > 300 && der[0] == 0x30), "DER sequences");
        assert!(AWS_ROOT_CAS.contains("# Amazon_Root_CA_1"));
    }
}
