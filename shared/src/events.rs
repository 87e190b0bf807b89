//! Domain events, derived from item changes: what a license, a device or a trial record was before
//! a write and what it became (the two images the table's change stream carries). Pure: no I/O,
//! no clock. The events a change yields, and their ids, depend only on the change, so a change
//! delivered twice yields the same events with the same ids (a consumer stores them idempotently).
//!
//! Not derivable from two images, and so left to what writes will record on the items: which
//! admin token acted, whether an activation was offline, and one cause for the several items a
//! transaction changes. A lapse writes nothing when it happens: `lease.lapsed` is emitted when the
//! lapsed lease is taken over, cleared or taken back.

use crate::input::{HardwareId, LicenseKey, Product};
use crate::model::{CounterKey, Device, License, LicenseStatus, Metering, ReleasedBy, TrialMarker};
use crate::rules;
use crate::time::Timestamp;
use serde::Serialize;
use serde_json::{json, Map, Value};

/// An item as one side of a change shows it.
#[derive(Debug, Clone)]
pub enum Image {
    License(Box<License>),
    /// A device item: bound, or a tombstone (`released`: by whom). `product` is its license's.
    Device {
        license_key: LicenseKey,
        product: Option<Product>,
        device: Device,
        released: Option<ReleasedBy>,
    },
    TrialMarker(TrialMarker),
}

/// One item's change. `before` absent: the item was created; `after` absent: it was deleted.
#[derive(Debug, Clone)]
pub struct Change {
    /// The change's own id (a stream record's `eventID`): each event's id derives from it.
    pub id: String,
    /// Its place in the order of changes to the same item collection (a stream record's
    /// `SequenceNumber`: increasing within a shard, and one license's items share a shard).
    pub sequence: String,
    /// When the write happened (to the second).
    pub at: Timestamp,
    /// The admin token that made it, when a vendor call did (the item's `changed_by`).
    pub vendor_token: Option<String>,
    /// The request whose write it was (the item's `request_id`): shared by the events of one request.
    pub request_id: Option<String>,
    /// The device item was written by an activation through a license file (`activated_via`).
    pub activated_offline: bool,
    /// The device item was released through a license file (`released_via`).
    pub released_offline: bool,
    /// The change moved a lease the earlier layout kept on the license onto its device
    /// (`lease_moved`): no acquisition.
    pub lease_moved: bool,
    pub before: Option<Image>,
    pub after: Option<Image>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
pub enum EventType {
    #[serde(rename = "license.created")]
    LicenseCreated,
    #[serde(rename = "license.updated")]
    LicenseUpdated,
    #[serde(rename = "license.suspended")]
    LicenseSuspended,
    #[serde(rename = "license.reinstated")]
    LicenseReinstated,
    #[serde(rename = "license.revoked")]
    LicenseRevoked,
    #[serde(rename = "device.activated")]
    DeviceActivated,
    #[serde(rename = "device.deactivated")]
    DeviceDeactivated,
    #[serde(rename = "device.released")]
    DeviceReleased,
    #[serde(rename = "device.rotated_out")]
    DeviceRotatedOut,
    #[serde(rename = "lease.acquired")]
    LeaseAcquired,
    #[serde(rename = "lease.released")]
    LeaseReleased,
    #[serde(rename = "lease.lapsed")]
    LeaseLapsed,
    #[serde(rename = "borrow.started")]
    BorrowStarted,
    #[serde(rename = "borrow.returned")]
    BorrowReturned,
    #[serde(rename = "consumption.recorded")]
    ConsumptionRecorded,
    #[serde(rename = "consumption.limit_reached")]
    ConsumptionLimitReached,
    #[serde(rename = "trial.started")]
    TrialStarted,
    #[serde(rename = "offline.activated")]
    OfflineActivated,
    #[serde(rename = "offline.deactivated")]
    OfflineDeactivated,
    #[serde(rename = "license.expiring")]
    LicenseExpiring,
}

/// Who made the change: a client's device, the vendor (by the admin token's name, which vendor
/// calls write on the items they change), or Keygate itself (a rotation, a takeover of a lapsed
/// lease, a counter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    Device(HardwareId),
    /// The token's name; `None` for an item written before writes named their token.
    Vendor(Option<String>),
    System,
}

/// `{"kind": "device", "hardware_id": …}`, `{"kind": "vendor", "token": …}`, `{"kind": "system"}`.
impl Serialize for Actor {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let value = match self {
            Actor::Device(hardware_id) => json!({"kind": "device", "hardware_id": hardware_id}),
            Actor::Vendor(Some(token)) => json!({"kind": "vendor", "token": token}),
            Actor::Vendor(None) => json!({"kind": "vendor"}),
            Actor::System => json!({"kind": "system"}),
        };
        value.serialize(serializer)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// `<change id>.<n>`: stable across redeliveries of the change.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: EventType,
    pub at: Timestamp,
    pub license_key: LicenseKey,
    /// Absent only for a device item written before devices carried their product.
    pub product: Option<Product>,
    pub actor: Actor,
    /// What changed: the relevant values before and after.
    pub data: Value,
    /// The request that made the change (its log lines and any error answer carry the same id):
    /// the several events of one request share it. Absent for Keygate's own (reminders).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Where it sorts among its license's events: time, then the change's sequence, then its
    /// place in the change. Not part of the payload.
    #[serde(skip)]
    pub order: String,
}

impl EventType {
    pub const ALL: [EventType; 20] = [
        EventType::LicenseCreated,
        EventType::LicenseUpdated,
        EventType::LicenseSuspended,
        EventType::LicenseReinstated,
        EventType::LicenseRevoked,
        EventType::DeviceActivated,
        EventType::DeviceDeactivated,
        EventType::DeviceReleased,
        EventType::DeviceRotatedOut,
        EventType::LeaseAcquired,
        EventType::LeaseReleased,
        EventType::LeaseLapsed,
        EventType::BorrowStarted,
        EventType::BorrowReturned,
        EventType::ConsumptionRecorded,
        EventType::ConsumptionLimitReached,
        EventType::TrialStarted,
        EventType::OfflineActivated,
        EventType::OfflineDeactivated,
        EventType::LicenseExpiring,
    ];

    /// The type's name, as events and filters spell it (`license.created`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::LicenseCreated => "license.created",
            EventType::LicenseUpdated => "license.updated",
            EventType::LicenseSuspended => "license.suspended",
            EventType::LicenseReinstated => "license.reinstated",
            EventType::LicenseRevoked => "license.revoked",
            EventType::DeviceActivated => "device.activated",
            EventType::DeviceDeactivated => "device.deactivated",
            EventType::DeviceReleased => "device.released",
            EventType::DeviceRotatedOut => "device.rotated_out",
            EventType::LeaseAcquired => "lease.acquired",
            EventType::LeaseReleased => "lease.released",
            EventType::LeaseLapsed => "lease.lapsed",
            EventType::BorrowStarted => "borrow.started",
            EventType::BorrowReturned => "borrow.returned",
            EventType::ConsumptionRecorded => "consumption.recorded",
            EventType::ConsumptionLimitReached => "consumption.limit_reached",
            EventType::TrialStarted => "trial.started",
            EventType::OfflineActivated => "offline.activated",
            EventType::OfflineDeactivated => "offline.deactivated",
            EventType::LicenseExpiring => "license.expiring",
        }
    }

    pub fn parse(name: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

/// The key events sort by: the time, then the change's sequence number (padded: sequence numbers
/// are decimal strings of up to 40 digits), then the event's place in the change.
pub fn order_key(at: Timestamp, sequence: &str, n: usize) -> String {
    format!("{at}#{sequence:0>40}#{n:03}")
}

/// The events `change` yields, in a fixed order.
pub fn derive(change: &Change) -> Vec<Event> {
    let mut found: Vec<(EventType, Actor, Value)> = Vec::new();
    let vendor = Actor::Vendor(change.vendor_token.clone());
    let (key, product) = match (&change.before, &change.after) {
        (_, Some(Image::License(after))) => {
            license_events(change.before.as_ref(), after, &vendor, &mut found);
            (after.license_key.clone(), Some(after.product.clone()))
        }
        (before, Some(Image::Device { license_key, product, device, released })) => {
            let before = match before {
                Some(Image::Device { device, released, .. }) => Some((device, *released)),
                _ => None,
            };
            device_events(before, (device, *released), change, &vendor, &mut found);
            (license_key.clone(), product.clone())
        }
        (None, Some(Image::TrialMarker(marker))) => {
            let data = json!({"hardware_id": marker.hardware_id, "product": marker.product});
            found.push((EventType::TrialStarted, Actor::Device(marker.hardware_id.clone()), data));
            (marker.license_key.clone(), Some(marker.product.clone()))
        }
        // A deletion (TTL removing a tombstone or a record; a failed batch issue undoing the
        // licenses it wrote) or a record rewritten: nothing a vendor follows.
        _ => return Vec::new(),
    };
    found
        .into_iter()
        .enumerate()
        .map(|(n, (kind, actor, data))| Event {
            id: format!("{}.{n}", change.id),
            kind,
            at: change.at,
            license_key: key.clone(),
            product: product.clone(),
            actor,
            data,
            request_id: change.request_id.clone(),
            order: order_key(change.at, &change.sequence, n),
        })
        .collect()
}

/// The license fields a vendor sets (what `license.updated` reports), as JSON by name.
fn terms(license: &License) -> Map<String, Value> {
    const NOT_TERMS: [&str; 12] = [
        "status",
        "version",
        "updated_at",
        "created_at",
        "first_activated_at",
        "last_activated_at",
        "times_activated",
        "transfer_count",
        "leases_held",
        "releases",
        "consumption",
        "id",
    ];
    match serde_json::to_value(license) {
        Ok(Value::Object(mut fields)) => {
            fields.retain(|name, _| !NOT_TERMS.contains(&name.as_str()));
            fields
        }
        _ => Map::new(),
    }
}

fn license_events(before: Option<&Image>, after: &License, vendor: &Actor, found: &mut Vec<(EventType, Actor, Value)>) {
    let before = match before {
        Some(Image::License(before)) => before,
        _ => {
            let data = json!({
                "license_type": after.license_type,
                "max_activations": after.max_activations,
                "is_floating": after.is_floating,
                "is_trial": after.is_trial,
                "expires_at": rules::expires_at(after),
            });
            // A trial a device started (no vendor call) says so in its own `trial.started`.
            let by = match vendor {
                Actor::Vendor(None) if after.is_trial => Actor::System,
                vendor => vendor.clone(),
            };
            found.push((EventType::LicenseCreated, by, data));
            return;
        }
    };
    if before.status != after.status {
        let kind = match after.status {
            LicenseStatus::Suspended => EventType::LicenseSuspended,
            LicenseStatus::Revoked => EventType::LicenseRevoked,
            LicenseStatus::Active => EventType::LicenseReinstated,
        };
        found.push((kind, vendor.clone(), json!({"before": before.status, "after": after.status})));
    }
    let (old, new) = (terms(before), terms(after));
    let mut changed = Map::new();
    for name in old.keys().chain(new.keys()) {
        let (was, is) = (old.get(name).unwrap_or(&Value::Null), new.get(name).unwrap_or(&Value::Null));
        if was != is && !changed.contains_key(name) {
            changed.insert(name.clone(), json!({"before": was, "after": is}));
        }
    }
    if !changed.is_empty() {
        found.push((EventType::LicenseUpdated, vendor.clone(), Value::Object(changed)));
    }
    for (key, counter) in &after.consumption {
        let metering = match key {
            CounterKey::License => Some(after.metering()),
            CounterKey::Feature(code) => after.feature(code.as_str()).map(|f| f.metering()),
        };
        let Some(metering) = metering else { continue };
        let was = before.consumption.get(key).filter(|c| c.period == counter.period).map_or(0, |c| c.used);
        if counter.used <= was {
            continue;
        }
        let data = json!({
            "counter": key.as_str(),
            "period": counter.period,
            "amount": counter.used.saturating_sub(was),
            "used": counter.used,
        });
        found.push((EventType::ConsumptionRecorded, Actor::System, data));
        if let Some(limit) = reached(&metering, was, counter.used) {
            let data = json!({"counter": key.as_str(), "period": counter.period, "limit": limit});
            found.push((EventType::ConsumptionLimitReached, Actor::System, data));
        }
    }
}

/// The limit a count from `was` to `used` reached (refusals write nothing, so the write reaching
/// it is the one that says so).
fn reached(metering: &Metering, was: u64, used: u64) -> Option<u64> {
    rules::consumption_limit(metering).filter(|limit| was < *limit && used >= *limit)
}

type DeviceSide<'a> = (&'a Device, Option<ReleasedBy>);

fn device_events(
    before: Option<DeviceSide<'_>>,
    after: DeviceSide<'_>,
    change: &Change,
    vendor: &Actor,
    found: &mut Vec<(EventType, Actor, Value)>,
) {
    let at = change.at;
    let (device, released) = after;
    let hardware_id = &device.hardware_id;
    let client = || Actor::Device(hardware_id.clone());
    let was_bound = before.is_some_and(|(_, released)| released.is_none());
    let is_bound = released.is_none();
    let before_device = before.map(|(device, _)| device);
    if !was_bound && is_bound {
        let data = json!({
            "hardware_id": hardware_id,
            "name": device.name,
            "platform": device.platform,
            "is_vm": device.is_vm,
        });
        found.push((EventType::DeviceActivated, client(), data));
        if change.activated_offline {
            let data = json!({"hardware_id": hardware_id, "credential_until": device.credential_until});
            found.push((EventType::OfflineActivated, client(), data));
        }
    }
    let lease_before = before_device.and_then(|d| d.lease_expires_at);
    let lease_after = device.lease_expires_at;
    // Who released the device (and so returned its lease).
    let releaser = match released {
        Some(ReleasedBy::Vendor) => vendor.clone(),
        Some(ReleasedBy::Rotation) => Actor::System,
        _ => client(),
    };
    match (lease_before, lease_after) {
        // A lease that has ended already is no acquisition (the upgrade moving a lapsed lease
        // of the earlier layout onto its device).
        (None, Some(until)) if rules::lease_is_live(until, at) && !change.lease_moved => {
            found.push((
                EventType::LeaseAcquired,
                client(),
                json!({"hardware_id": hardware_id, "lease_expires_at": until}),
            ));
        }
        (None, Some(_)) => {}
        (Some(end), None) if was_bound && !is_bound && rules::lease_is_live(end, at) => {
            found.push((
                EventType::LeaseReleased,
                releaser,
                json!({"hardware_id": hardware_id, "lease_expires_at": end}),
            ));
        }
        (Some(end), None) => {
            found.push((EventType::LeaseLapsed, Actor::System, json!({"hardware_id": hardware_id, "lapsed_at": end})))
        }
        // Its own lapsed lease taken back: the lapse, then a new lease (a renewal says nothing).
        (Some(end), Some(until)) if !rules::lease_is_live(end, at) && until > end => {
            found.push((EventType::LeaseLapsed, Actor::System, json!({"hardware_id": hardware_id, "lapsed_at": end})));
            found.push((
                EventType::LeaseAcquired,
                client(),
                json!({"hardware_id": hardware_id, "lease_expires_at": until}),
            ));
        }
        _ => {}
    }
    let borrowed_before = before_device.and_then(|d| d.borrowed_until);
    // A borrow starts when none was running (extending a running one starts none).
    let running = borrowed_before.is_some_and(|until| until > at);
    if let Some(until) = device.borrowed_until.filter(|until| !running && borrowed_before < Some(*until) && *until > at)
    {
        found.push((EventType::BorrowStarted, client(), json!({"hardware_id": hardware_id, "borrowed_until": until})));
    }
    if let (true, Some(by)) = (was_bound, released) {
        if let Some(until) = borrowed_before.filter(|until| *until > at && by == ReleasedBy::Client) {
            found.push((
                EventType::BorrowReturned,
                client(),
                json!({"hardware_id": hardware_id, "borrowed_until": until}),
            ));
        }
        let (kind, actor) = match by {
            ReleasedBy::Client => (EventType::DeviceDeactivated, client()),
            ReleasedBy::Vendor => (EventType::DeviceReleased, vendor.clone()),
            ReleasedBy::Rotation => (EventType::DeviceRotatedOut, Actor::System),
        };
        let data = json!({"hardware_id": hardware_id, "credential_until": device.credential_until});
        found.push((kind, actor, data.clone()));
        if by == ReleasedBy::Client && change.released_offline {
            found.push((EventType::OfflineDeactivated, client(), data));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::tests::{device, license, NOW};

    fn hw(id: &str) -> HardwareId {
        HardwareId::parse(id).unwrap()
    }

    fn change(before: Option<Image>, after: Option<Image>) -> Change {
        Change {
            id: "rec-1".into(),
            sequence: "100".into(),
            at: NOW,
            vendor_token: None,
            request_id: None,
            activated_offline: false,
            released_offline: false,
            lease_moved: false,
            before,
            after,
        }
    }

    fn on_device(device: Device, released: Option<ReleasedBy>) -> Image {
        let license_key = license().license_key;
        Image::Device { license_key, product: Some(Product::parse("editor").unwrap()), device, released }
    }

    fn kinds(change: &Change) -> Vec<EventType> {
        derive(change).into_iter().map(|e| e.kind).collect()
    }

    #[test]
    fn a_license_is_created_changed_suspended_reinstated_and_revoked() {
        let created = change(None, Some(Image::License(Box::new(license()))));
        let events = derive(&created);
        assert_eq!(events.iter().map(|e| e.kind).collect::<Vec<_>>(), [EventType::LicenseCreated]);
        assert_eq!((events[0].id.as_str(), &events[0].actor), ("rec-1.0", &Actor::Vendor(None)));
        let by_ci = Change { vendor_token: Some("ci".into()), ..created.clone() };
        assert_eq!(derive(&by_ci)[0].actor, Actor::Vendor(Some("ci".into())));
        assert_eq!(serde_json::to_value(&derive(&by_ci)[0].actor).unwrap(), json!({"kind": "vendor", "token": "ci"}));
        let trial = License { is_trial: true, ..license() };
        let started = change(None, Some(Image::License(Box::new(trial))));
        assert_eq!(derive(&started)[0].actor, Actor::System, "a trial a device started was no vendor's call");
        assert_eq!(events[0].product.as_ref().map(Product::as_str), Some("editor"));

        let before = license();
        let patched = License { max_activations: 5, version: 1, updated_at: NOW, ..before.clone() };
        let events =
            derive(&change(Some(Image::License(Box::new(before.clone()))), Some(Image::License(Box::new(patched)))));
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, EventType::LicenseUpdated);
        assert_eq!(events[0].data, json!({"max_activations": {"before": 2, "after": 5}}), "only what changed");

        let suspended = License { status: LicenseStatus::Suspended, version: 1, ..before.clone() };
        let revoked = License { status: LicenseStatus::Revoked, ..suspended.clone() };
        let active = License { status: LicenseStatus::Active, ..suspended.clone() };
        let l = |l: &License| Some(Image::License(Box::new(l.clone())));
        assert_eq!(kinds(&change(l(&before), l(&suspended))), [EventType::LicenseSuspended]);
        assert_eq!(kinds(&change(l(&suspended), l(&revoked))), [EventType::LicenseRevoked]);
        assert_eq!(kinds(&change(l(&suspended), l(&active))), [EventType::LicenseReinstated]);
        // An activation's stamps and seat count are not a change of terms.
        let stamped = License { times_activated: 1, version: 1, last_activated_at: Some(NOW), ..before.clone() };
        assert_eq!(kinds(&change(l(&before), l(&stamped))), []);
    }

    #[test]
    fn devices_are_activated_and_released_by_whom_the_tombstone_says() {
        let bound = device("pc-1", 0);
        assert_eq!(kinds(&change(None, Some(on_device(bound.clone(), None)))), [EventType::DeviceActivated]);
        let cases = [
            (ReleasedBy::Client, EventType::DeviceDeactivated, Actor::Device(hw("pc-1"))),
            (ReleasedBy::Vendor, EventType::DeviceReleased, Actor::Vendor(None)),
            (ReleasedBy::Rotation, EventType::DeviceRotatedOut, Actor::System),
        ];
        for (by, kind, actor) in cases {
            let events =
                derive(&change(Some(on_device(bound.clone(), None)), Some(on_device(bound.clone(), Some(by)))));
            assert_eq!(events.iter().map(|e| (e.kind, e.actor.clone())).collect::<Vec<_>>(), [(kind, actor)]);
        }
        // Back after a release: activated again (the tombstone becomes a device).
        let again =
            change(Some(on_device(bound.clone(), Some(ReleasedBy::Client))), Some(on_device(bound.clone(), None)));
        assert_eq!(kinds(&again), [EventType::DeviceActivated]);
        // TTL deleting a tombstone, a sighting: nothing happened.
        assert_eq!(kinds(&change(Some(on_device(bound.clone(), Some(ReleasedBy::Client))), None)), []);
        let seen = Device { last_seen_at: NOW, ..bound.clone() };
        assert_eq!(kinds(&change(Some(on_device(bound, None)), Some(on_device(seen, None)))), []);
    }

    #[test]
    fn leases_are_acquired_released_and_lapse_when_taken_over_or_back() {
        let at = |s: i64| Some(NOW.plus_seconds(s));
        let with = |lease: Option<Timestamp>| Device { lease_expires_at: lease, ..device("pc-1", 0) };
        let step = |before: Option<Timestamp>, after: Option<Timestamp>, released| {
            kinds(&change(Some(on_device(with(before), None)), Some(on_device(with(after), released))))
        };
        assert_eq!(step(None, at(900), None), [EventType::LeaseAcquired]);
        assert_eq!(step(None, at(-60), None), [], "a lapsed lease moved onto its device is no acquisition");
        let moved = Change {
            lease_moved: true,
            ..change(Some(on_device(with(None), None)), Some(on_device(with(at(900)), None)))
        };
        assert_eq!(kinds(&moved), [], "nor a live one: it was acquired under the earlier layout");
        assert_eq!(
            step(at(-60), None, Some(ReleasedBy::Client)),
            [EventType::LeaseLapsed, EventType::DeviceDeactivated]
        );
        let by_vendor = derive(&change(
            Some(on_device(with(at(300)), None)),
            Some(on_device(with(None), Some(ReleasedBy::Vendor))),
        ));
        assert_eq!(
            by_vendor.iter().map(|e| (e.kind, e.actor.clone())).collect::<Vec<_>>(),
            [(EventType::LeaseReleased, Actor::Vendor(None)), (EventType::DeviceReleased, Actor::Vendor(None))]
        );
        assert_eq!(step(at(300), at(900), None), [], "a renewal");
        assert_eq!(step(at(-5), None, None), [EventType::LeaseLapsed], "taken over by another device");
        assert_eq!(step(at(-5), at(900), None), [EventType::LeaseLapsed, EventType::LeaseAcquired], "taken back");
        assert_eq!(
            step(at(300), None, Some(ReleasedBy::Client)),
            [EventType::LeaseReleased, EventType::DeviceDeactivated]
        );
        let new_device = change(None, Some(on_device(with(at(900)), None)));
        assert_eq!(kinds(&new_device), [EventType::DeviceActivated, EventType::LeaseAcquired]);
        let ids: Vec<String> = derive(&new_device).into_iter().map(|e| e.id).collect();
        assert_eq!(ids, ["rec-1.0", "rec-1.1"], "stable, one per event of the change");
    }

    #[test]
    fn a_license_file_activation_and_deactivation_say_so_beside_the_device_events() {
        let bound = device("pc-1", 0);
        let offline = |c: Change| Change { activated_offline: true, ..c };
        let activated = offline(change(None, Some(on_device(bound.clone(), None))));
        assert_eq!(kinds(&activated), [EventType::DeviceActivated, EventType::OfflineActivated]);
        let release =
            change(Some(on_device(bound.clone(), None)), Some(on_device(bound.clone(), Some(ReleasedBy::Client))));
        let released = Change { released_offline: true, ..release.clone() };
        assert_eq!(kinds(&released), [EventType::DeviceDeactivated, EventType::OfflineDeactivated]);
        // Activated through a file, released online: the release is no offline one.
        assert_eq!(kinds(&offline(release)), [EventType::DeviceDeactivated]);
        let seen = offline(change(Some(on_device(bound.clone(), None)), Some(on_device(bound, None))));
        assert_eq!(kinds(&seen), [], "a later sighting of a device activated offline");
    }

    #[test]
    fn a_borrow_starts_and_returns_early_only_when_released_before_its_end() {
        let borrowed = Device { borrowed_until: Some(NOW.plus_days(2)), ..device("pc-1", 0) };
        let plain = device("pc-1", 0);
        let started = change(Some(on_device(plain, None)), Some(on_device(borrowed.clone(), None)));
        assert_eq!(kinds(&started), [EventType::BorrowStarted]);
        let longer = Device { borrowed_until: Some(NOW.plus_days(3)), ..borrowed.clone() };
        let extended = change(Some(on_device(borrowed.clone(), None)), Some(on_device(longer, None)));
        assert_eq!(kinds(&extended), [], "extending a running borrow starts none");
        let returned = change(
            Some(on_device(borrowed.clone(), None)),
            Some(on_device(borrowed.clone(), Some(ReleasedBy::Client))),
        );
        assert_eq!(kinds(&returned), [EventType::BorrowReturned, EventType::DeviceDeactivated]);
        let ended = Device { borrowed_until: Some(NOW.plus_seconds(-1)), ..borrowed };
        let later = change(Some(on_device(ended.clone(), None)), Some(on_device(ended, Some(ReleasedBy::Client))));
        assert_eq!(kinds(&later), [EventType::DeviceDeactivated], "the borrow had ended");
    }

    #[test]
    fn consumption_is_recorded_and_the_write_reaching_the_limit_says_so() {
        use crate::model::{Counter, Period};
        let terms = License { max_consumptions: Some(10), ..license() };
        let counted = |used| License {
            consumption: [(CounterKey::License, Counter { period: Period::at(None, NOW), used })].into(),
            ..terms.clone()
        };
        let step = |before: &License, after: &License| {
            derive(&change(
                Some(Image::License(Box::new(before.clone()))),
                Some(Image::License(Box::new(after.clone()))),
            ))
        };
        let first = step(&terms, &counted(4));
        assert_eq!(first.iter().map(|e| e.kind).collect::<Vec<_>>(), [EventType::ConsumptionRecorded]);
        assert_eq!((first[0].data["amount"].clone(), first[0].data["used"].clone()), (json!(4), json!(4)));
        let kinds: Vec<EventType> = step(&counted(4), &counted(10)).into_iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [EventType::ConsumptionRecorded, EventType::ConsumptionLimitReached]);
        assert_eq!(step(&counted(10), &counted(10)), [], "no use, no event");
    }

    #[test]
    fn type_names_round_trip_and_events_sort_by_time_then_sequence_then_place() {
        for kind in EventType::ALL {
            assert_eq!(EventType::parse(kind.as_str()), Some(kind));
            assert_eq!(serde_json::to_value(kind).unwrap(), json!(kind.as_str()));
        }
        assert_eq!(EventType::parse("license.exploded"), None);
        let later = NOW.plus_seconds(1);
        let mut keys =
            [order_key(later, "5", 0), order_key(NOW, "100", 1), order_key(NOW, "99", 0), order_key(NOW, "100", 0)];
        keys.sort();
        assert_eq!(
            keys,
            [order_key(NOW, "99", 0), order_key(NOW, "100", 0), order_key(NOW, "100", 1), order_key(later, "5", 0)]
        );
    }

    #[test]
    fn a_trial_record_says_a_trial_started_on_a_device() {
        let marker = TrialMarker {
            product: Product::parse("editor").unwrap(),
            hardware_id: hw("pc-9"),
            license_key: license().license_key,
            created_at: NOW,
        };
        let events = derive(&change(None, Some(Image::TrialMarker(marker))));
        assert_eq!(events.len(), 1);
        assert_eq!((events[0].kind, events[0].actor.clone()), (EventType::TrialStarted, Actor::Device(hw("pc-9"))));
        let payload = serde_json::to_value(&events[0]).unwrap();
        assert_eq!(payload["type"], "trial.started");
        assert_eq!(payload["actor"], json!({"kind": "device", "hardware_id": "pc-9"}));
    }
}
