//! The store contract: what every [`Store`] must do, as one generic suite. `cargo test` runs it
//! against [`super::MemoryStore`]; `make test` runs it against [`super::DynamoStore`] on DynamoDB
//! Local (tests/tests/api/store_contract.rs), so the in-memory store the handler tests rely on can
//! never drift from the real one. (Generic, so nothing of it is compiled into the functions.)
//!
//! Each case takes a fresh, empty store and panics on a breach; [`cases`] lists them all.

use super::{ActivationWrite, DeactivationWrite, IdempotencyRecord, Lookup, Receipt, SeatRelease, Sighting, Store};
use super::{StoreError, WriteError};
use crate::input::{Email, HardwareId, LicenseKey, Product};
use crate::model::{CounterKey, Customer, Device, License, LicenseType, ReleasedBy};
use crate::rules;
use crate::time::Timestamp;
use std::future::Future;
use std::pin::Pin;

type Case<S> = for<'a> fn(&'a S) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Every case, by name.
pub fn cases<S: Store>() -> Vec<(&'static str, Case<S>)> {
    vec![
        ("licenses are created all or none, and read back in the order asked", |s| Box::pin(created_all_or_none(s))),
        ("an idempotency record commits with its licenses", |s| Box::pin(idempotency_record_with_licenses(s))),
        ("a receipt is stored with its write, once", |s| Box::pin(receipt_once(s))),
        ("listings page newest first and refuse foreign cursors", |s| Box::pin(listing_pages(s))),
        ("activation holds the seat limit and binds once", |s| Box::pin(activation_seat_limit(s))),
        ("a release needs the device as it was read", |s| Box::pin(release_as_read(s))),
        ("consumption holds its limit against a stale plan", |s| Box::pin(consumption_limit(s))),
        ("a license is replaced only at the version read", |s| Box::pin(replace_at_version(s))),
        ("a sighting moves the horizon only forward", |s| Box::pin(sighting_forward(s))),
        ("the least recently seen bound devices come first", |s| Box::pin(least_recently_seen_first(s))),
        ("devices page in hardware id order, bound ones only", |s| Box::pin(devices_in_pages(s))),
        ("a product's licenses page newest first, and every license pages once", |s| {
            Box::pin(listing_by_product_and_all(s))
        }),
        ("leases count, lapse into takeovers, and never take a live one", |s| Box::pin(leases_as_items(s))),
    ]
}

fn now() -> Timestamp {
    Timestamp::now()
}

fn license(max_activations: u32, created_at: Timestamp) -> License {
    let key = LicenseKey::generate().expect("a key");
    let id = crate::input::random_id("lic").expect("an id");
    License::new(key, id, Product::parse("editor").unwrap(), LicenseType::Perpetual, max_activations, created_at)
}

fn hwid(id: &str) -> HardwareId {
    HardwareId::parse(id).unwrap()
}

fn device(id: &str, at: Timestamp) -> Device {
    Device {
        hardware_id: hwid(id),
        name: None,
        platform: None,
        is_vm: false,
        activated_at: at,
        last_seen_at: at,
        lease_expires_at: None,
        borrowed_until: None,
        credential_until: Some(at.plus_seconds(3_600)),
    }
}

fn conflict(result: Result<(), WriteError>, what: &str) {
    assert!(matches!(result, Err(WriteError::Conflict)), "{what}: expected a conflict, got {result:?}");
}

async fn stored<S: Store>(store: &S, key: &LicenseKey) -> License {
    store.licenses(std::slice::from_ref(key)).await.unwrap().pop().expect("the license is stored")
}

async fn created<S: Store>(store: &S, max_activations: u32) -> License {
    let license = license(max_activations, now());
    store.create_licenses(std::slice::from_ref(&license), None).await.unwrap();
    license
}

/// Binds `id` to `license` as read now (taking a seat); returns the device as stored.
async fn bound<S: Store>(store: &S, license: &License, id: &str) -> Device {
    let device = device(id, now());
    let write = ActivationWrite { license, device: &device, evict: None, now: now(), receipt: None };
    store.activate(&write).await.unwrap();
    device
}

/// Binds `id`, seen at `at`, to the license as stored now.
async fn bound_at<S: Store>(store: &S, key: &LicenseKey, id: &str, at: Timestamp) {
    let read = stored(store, key).await;
    let device = device(id, at);
    store
        .activate(&ActivationWrite { license: &read, device: &device, evict: None, now: now(), receipt: None })
        .await
        .unwrap();
}

/// The vendor releases `id` from the license as stored now.
async fn released<S: Store>(store: &S, key: &LicenseKey, id: &str) {
    let (read, device) = store.license_and_device(key, &hwid(id)).await.unwrap();
    let (read, device) = (read.expect("the license"), device.expect("a bound device"));
    let release = DeactivationWrite {
        license: &read,
        device: &device,
        seat: SeatRelease::Counted { count_transfer: false },
        allowance: None,
        released_by: ReleasedBy::Vendor,
        now: now(),
        receipt: None,
    };
    store.deactivate(&release).await.unwrap();
}

async fn created_all_or_none<S: Store>(store: &S) {
    let (a, b, c) = (license(1, now()), license(1, now()), license(1, now()));
    store.create_licenses(&[a.clone(), b.clone()], None).await.unwrap();
    let missing = LicenseKey::generate().unwrap();
    let read = store.licenses(&[b.license_key.clone(), missing, a.license_key.clone()]).await.unwrap();
    assert_eq!(read, vec![b.clone(), a.clone()], "existing ones, in the order asked");
    conflict(store.create_licenses(&[c.clone(), a.clone()], None).await, "a batch with an existing key");
    assert!(store.licenses(std::slice::from_ref(&c.license_key)).await.unwrap().is_empty(), "none of it written");
}

async fn idempotency_record_with_licenses<S: Store>(store: &S) {
    let (a, b) = (license(1, now()), license(1, now()));
    let record = IdempotencyRecord {
        idempotency_key: crate::input::random_id("key").unwrap(),
        fingerprint: "f".into(),
        license_keys: vec![a.license_key.clone()],
        created_at: now(),
        ttl: now().unix() + 60,
    };
    store.create_licenses(std::slice::from_ref(&a), Some(&record)).await.unwrap();
    assert_eq!(store.idempotency_record(&record.idempotency_key).await.unwrap(), Some(record.clone()));
    conflict(store.create_licenses(std::slice::from_ref(&b), Some(&record)).await, "the record exists");
    assert!(store.licenses(std::slice::from_ref(&b.license_key)).await.unwrap().is_empty(), "no license without it");
    assert_eq!(store.idempotency_record("never-used").await.unwrap(), None);
}

async fn receipt_once<S: Store>(store: &S) {
    let license = created(store, 2).await;
    bound(store, &license, "pc-1").await;
    let read = stored(store, &license.license_key).await;
    let terms = read.metering();
    let plan = rules::plan_consumption(&read, &CounterKey::License, &terms, 2, now()).unwrap();
    let receipt = Receipt {
        scope: format!("L#{}", license.license_key),
        idempotency_key: "retry-1".into(),
        fingerprint: "f".into(),
        status: 200,
        body: "{\"consumed\":2}".into(),
        created_at: now(),
        ttl: now().unix() + 60,
    };
    store.consume(&license.license_key, &plan, None, Some(&receipt)).await.unwrap();
    assert_eq!(store.receipt(&receipt.scope, "retry-1").await.unwrap(), Some(receipt.clone()));
    let again =
        rules::plan_consumption(&stored(store, &license.license_key).await, &CounterKey::License, &terms, 2, now())
            .unwrap();
    conflict(store.consume(&license.license_key, &again, None, Some(&receipt)).await, "the receipt exists");
    assert_eq!(stored(store, &license.license_key).await.consumption[&CounterKey::License].used, 2, "counted once");
    assert_eq!(store.receipt(&receipt.scope, "retry-2").await.unwrap(), None);
    assert_eq!(store.receipt("L#OTHER", "retry-1").await.unwrap(), None, "scoped");
}

async fn listing_pages<S: Store>(store: &S) {
    let email = Email::parse(format!("{}@example.com", crate::input::random_id("c").unwrap())).unwrap();
    let base = now().plus_seconds(-1_000);
    let mut all: Vec<License> = (0..4)
        .map(|i| License {
            customer: Some(Customer { email: Some(email.clone()), ..Customer::default() }),
            ..license(1, base.plus_seconds(i * 10))
        })
        .collect();
    store.create_licenses(&all, None).await.unwrap();
    let outsider = license(1, base);
    store.create_licenses(std::slice::from_ref(&outsider), None).await.unwrap();
    all.reverse();
    let lookup = Lookup::CustomerEmail(email);
    let first = store.list_licenses(&lookup, 2, None).await.unwrap();
    assert_eq!(first.licenses, all[..2].to_vec(), "newest first");
    let cursor = first.next_cursor.expect("more remain");
    let second = store.list_licenses(&lookup, 2, Some(&cursor)).await.unwrap();
    assert_eq!(second.licenses, all[2..].to_vec());
    assert_eq!(second.next_cursor, None, "no cursor once none remain");
    let everything = store.list_licenses(&lookup, 10, None).await.unwrap();
    assert_eq!((everything.licenses.len(), everything.next_cursor), (4, None));
    for forged in ["garbage", "", &outsider.license_key.to_string()] {
        let refused = store.list_licenses(&lookup, 2, Some(forged)).await;
        assert!(matches!(refused, Err(StoreError::InvalidCursor)), "cursor {forged:?}: {refused:?}");
    }
    let other = Lookup::OrderId(crate::input::OrderId::parse("ord-none").unwrap());
    let foreign = store.list_licenses(&other, 2, Some(&cursor)).await;
    assert!(matches!(foreign, Err(StoreError::InvalidCursor)), "another listing's cursor: {foreign:?}");
}

async fn activation_seat_limit<S: Store>(store: &S) {
    let license = created(store, 1).await;
    let first = bound(store, &license, "pc-1").await;
    let second = device("pc-2", now());
    let write = ActivationWrite { license: &license, device: &second, evict: None, now: now(), receipt: None };
    conflict(store.activate(&write).await, "no seat left");
    let again = ActivationWrite { license: &license, device: &first, evict: None, now: now(), receipt: None };
    conflict(store.activate(&again).await, "already bound");
    let (devices, more) = store.devices_page(&license.license_key, 10, None).await.unwrap();
    assert_eq!((stored(store, &license.license_key).await.times_activated, devices, more), (1, vec![first], false));
}

async fn release_as_read<S: Store>(store: &S) {
    let license = created(store, 2).await;
    let device = bound(store, &license, "pc-1").await;
    let read = stored(store, &license.license_key).await;
    let moved = Device { credential_until: device.credential_until.map(|t| t.plus_seconds(1)), ..device.clone() };
    fn write<'a>(license: &'a License, device: &'a Device) -> DeactivationWrite<'a> {
        DeactivationWrite {
            license,
            device,
            seat: SeatRelease::Counted { count_transfer: true },
            allowance: None,
            released_by: ReleasedBy::Client,
            now: now(),
            receipt: None,
        }
    }
    conflict(store.deactivate(&write(&read, &moved)).await, "the horizon moved since it was read");
    store.deactivate(&write(&read, &device)).await.unwrap();
    let (after, gone) = store.license_and_device(&license.license_key, &device.hardware_id).await.unwrap();
    let after = after.unwrap();
    assert_eq!((after.times_activated, after.transfer_count, gone), (0, 1, None), "a tombstone reads as absent");
    conflict(store.deactivate(&write(&read, &device)).await, "released already");
}

async fn consumption_limit<S: Store>(store: &S) {
    let license = License { max_consumptions: Some(5), ..license(1, now()) };
    store.create_licenses(std::slice::from_ref(&license), None).await.unwrap();
    let read = stored(store, &license.license_key).await;
    let terms = read.metering();
    let four = rules::plan_consumption(&read, &CounterKey::License, &terms, 4, now()).unwrap();
    let stale = rules::plan_consumption(&read, &CounterKey::License, &terms, 2, now()).unwrap();
    store.consume(&license.license_key, &four, None, None).await.unwrap();
    conflict(store.consume(&license.license_key, &stale, None, None).await, "planned before the other write");
    assert_eq!(stored(store, &license.license_key).await.consumption[&CounterKey::License].used, 4);
}

async fn replace_at_version<S: Store>(store: &S) {
    let license = created(store, 1).await;
    let changed = License { max_activations: 3, version: license.version + 1, ..license.clone() };
    store.replace_license(&license, &changed).await.unwrap();
    let late = License { max_activations: 9, version: license.version + 1, ..license.clone() };
    conflict(store.replace_license(&license, &late).await, "a change made since the read");
    assert_eq!(stored(store, &license.license_key).await.max_activations, 3);
}

async fn sighting_forward<S: Store>(store: &S) {
    let license = created(store, 1).await;
    let device = bound(store, &license, "pc-1").await;
    let horizon = device.credential_until.unwrap();
    let sighting = |until: Timestamp| Sighting { now: now(), stale_before: now(), credential_until: Some(until) };
    store.touch_device(&license.license_key, &device.hardware_id, &sighting(horizon.plus_seconds(60))).await.unwrap();
    let back = sighting(horizon.plus_seconds(30));
    conflict(store.touch_device(&license.license_key, &device.hardware_id, &back).await, "a horizon moved back");
    let (_, read) = store.license_and_device(&license.license_key, &device.hardware_id).await.unwrap();
    assert_eq!(read.unwrap().credential_until, Some(horizon.plus_seconds(60)));
    let unbound = sighting(horizon.plus_seconds(600));
    conflict(store.touch_device(&license.license_key, &hwid("pc-none"), &unbound).await, "a device never bound");
}

async fn least_recently_seen_first<S: Store>(store: &S) {
    let license = created(store, 4).await;
    let key = &license.license_key;
    let base = now().plus_seconds(-100);
    for (id, seen) in [("pc-new", 30), ("pc-old", 10), ("pc-mid", 20), ("pc-gone", 0)] {
        bound_at(store, key, id, base.plus_seconds(seen)).await;
    }
    released(store, key, "pc-gone").await;
    let ids = |devices: Vec<Device>| devices.into_iter().map(|d| d.hardware_id.to_string()).collect::<Vec<_>>();
    let oldest = store.least_recently_seen(key, 2).await.unwrap();
    assert_eq!(ids(oldest), ["pc-old", "pc-mid"], "oldest first, the released one left out");
    let all = store.least_recently_seen(key, 10).await.unwrap();
    assert_eq!(ids(all), ["pc-old", "pc-mid", "pc-new"]);
    let other = created(store, 1).await;
    assert!(store.least_recently_seen(&other.license_key, 5).await.unwrap().is_empty(), "another license's devices");
}

async fn devices_in_pages<S: Store>(store: &S) {
    let license = created(store, 10).await;
    let key = &license.license_key;
    for id in ["pc-3", "pc-1", "pc-5", "pc-2", "pc-4"] {
        bound_at(store, key, id, now()).await;
    }
    released(store, key, "pc-2").await;
    let ids = |devices: &[Device]| devices.iter().map(|d| d.hardware_id.to_string()).collect::<Vec<_>>();
    let (first, more) = store.devices_page(key, 2, None).await.unwrap();
    assert_eq!(
        (ids(&first), more),
        (vec!["pc-1".to_string(), "pc-3".to_string()], true),
        "the released pc-2 is skipped"
    );
    let (second, more) = store.devices_page(key, 2, Some(&hwid("pc-3"))).await.unwrap();
    assert_eq!((ids(&second), more), (vec!["pc-4".to_string(), "pc-5".to_string()], false));
    let (rest, more) = store.devices_page(key, 10, Some(&hwid("pc-5"))).await.unwrap();
    assert_eq!((rest.len(), more), (0, false));
    let some = store.devices(key, &[hwid("pc-5"), hwid("pc-2"), hwid("pc-9"), hwid("pc-1")]).await.unwrap();
    let mut some = ids(&some);
    some.sort();
    assert_eq!(some, ["pc-1", "pc-5"], "bound ones only");
}

async fn listing_by_product_and_all<S: Store>(store: &S) {
    let product = Product::parse(crate::input::random_id("p").unwrap().to_lowercase()).unwrap();
    let base = now().plus_seconds(-1_000);
    let mut ours: Vec<License> =
        (0..3).map(|i| License { product: product.clone(), ..license(1, base.plus_seconds(i * 10)) }).collect();
    store.create_licenses(&ours, None).await.unwrap();
    let other = created(store, 1).await;
    ours.reverse();
    let lookup = Lookup::Product(product);
    let first = store.list_licenses(&lookup, 2, None).await.unwrap();
    assert_eq!(first.licenses, ours[..2].to_vec(), "newest first, only the product's");
    let cursor = first.next_cursor.expect("more remain");
    let second = store.list_licenses(&lookup, 2, Some(&cursor)).await.unwrap();
    assert_eq!((second.licenses, second.next_cursor), (ours[2..].to_vec(), None));
    // Every license, a page at a time: each of ours exactly once (the table may hold others).
    let mut seen = Vec::new();
    let mut cursor = None;
    for _ in 0..10_000 {
        let page = store.list_licenses(&Lookup::All, 2, cursor.as_deref()).await.unwrap();
        assert!(page.licenses.len() <= 2);
        seen.extend(page.licenses.into_iter().map(|l| l.license_key));
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    assert!(cursor.is_none(), "the listing ends");
    for key in ours.iter().map(|l| &l.license_key).chain([&other.license_key]) {
        assert_eq!(seen.iter().filter(|k| *k == key).count(), 1, "{key} listed once");
    }
    for forged in ["garbage", ""] {
        let refused = store.list_licenses(&Lookup::All, 2, Some(forged)).await;
        assert!(matches!(refused, Err(StoreError::InvalidCursor)), "cursor {forged:?}: {refused:?}");
    }
}

async fn leases_as_items<S: Store>(store: &S) {
    use crate::rules::{LeasePlan, Slot};
    use crate::store::LeaseWrite;
    let license = License { is_floating: true, ..created(store, 2).await };
    let t0 = now();
    let take = |_: &License, id: &str, take_over: Vec<(HardwareId, Timestamp)>, until: Timestamp| {
        let plan = LeasePlan::Acquire { slot: Slot { own: None, take_over }, until };
        (device(id, t0), plan)
    };
    // Two new devices take the two seats; a third finds none free.
    for (id, until) in [("a", t0.plus_seconds(-30)), ("b", t0.plus_seconds(600))] {
        let read = stored(store, &license.license_key).await;
        let read = License { is_floating: true, ..read };
        let (device, plan) = take(&read, id, vec![], until);
        let write = LeaseWrite {
            license: &read,
            device: &device,
            new_device: true,
            plan: &plan,
            borrowed_until: None,
            now: t0,
            receipt: None,
        };
        store.lease(&write).await.unwrap();
    }
    let read = License { is_floating: true, ..stored(store, &license.license_key).await };
    assert_eq!(read.leases_held, 2);
    let (c, extra) = take(&read, "c", vec![], t0.plus_seconds(600));
    let write = LeaseWrite {
        license: &read,
        device: &c,
        new_device: true,
        plan: &extra,
        borrowed_until: None,
        now: t0,
        receipt: None,
    };
    conflict(store.lease(&write).await, "a third lease on two seats");
    // Only the lapsed lease is listed, and only it may be taken over, as read.
    let lapsed = store.lapsed_leases(&license.license_key, t0, 10).await.unwrap();
    assert_eq!(lapsed, vec![(hwid("a"), t0.plus_seconds(-30))]);
    let (_, live_taken) = take(&read, "c", vec![(hwid("b"), t0.plus_seconds(600))], t0.plus_seconds(600));
    let write = LeaseWrite {
        license: &read,
        device: &c,
        new_device: true,
        plan: &live_taken,
        borrowed_until: None,
        now: t0,
        receipt: None,
    };
    conflict(store.lease(&write).await, "a live lease listed as lapsed");
    let (_, takeover) = take(&read, "c", lapsed.clone(), t0.plus_seconds(600));
    let write = LeaseWrite {
        license: &read,
        device: &c,
        new_device: true,
        plan: &takeover,
        borrowed_until: None,
        now: t0,
        receipt: None,
    };
    store.lease(&write).await.unwrap();
    let after = stored(store, &license.license_key).await;
    assert_eq!(after.leases_held, 2, "a takeover keeps the count");
    let (_, a) = store.license_and_device(&license.license_key, &hwid("a")).await.unwrap();
    assert_eq!(a.unwrap().lease_expires_at, None, "a's lease went to c");
    conflict(store.clear_lapsed_leases(&license.license_key, &lapsed, t0).await, "a lease already taken over");
    assert!(store.lapsed_leases(&license.license_key, t0, 10).await.unwrap().is_empty());
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn the_memory_store_keeps_the_store_contract() {
        for (name, case) in super::cases::<crate::store::MemoryStore>() {
            let store = crate::store::MemoryStore::new();
            let outcome = tokio::spawn(async move { case(&store).await });
            if let Err(err) = outcome.await {
                panic!("{name}: {err}");
            }
        }
    }
}
