//! Floating licenses whose leases an earlier version kept in one map on the license item: the next
//! lease operation moves them to their devices, and the earlier version's lease writes fail on a
//! license so moved instead of keeping leases this version does not count.
//!
//! The earlier layout is written here by hand, item by item as that version wrote it, and its
//! write expressions are replayed verbatim against the moved license.

use keygate_tests::{device, device as device_body, join_all, stored_partition, TestApp};
use serde_json::json;

use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use std::collections::HashMap;

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn at(unix: i64) -> String {
    keygate::time::Timestamp::from_unix(unix).to_string()
}

fn now() -> i64 {
    keygate::time::Timestamp::now().unix()
}

/// A floating license of `seats` seats as the earlier version left it: `leases` (holder, end) in
/// a map on the license item, each holder bound as a device item without a lease of its own, and
/// the devices `idle` bound without a lease.
async fn earlier_layout(t: &TestApp, seats: u32, leases: &[(String, i64)], idle: &[&str]) -> String {
    let key = t.issue(json!({"is_floating": true, "max_activations": seats})).await;
    let (client, table) = (t.app.store.client(), t.app.store.table());
    let since = at(now() - 3_600);
    let items: Vec<WriteRequest> = leases
        .iter()
        .map(|(hardware_id, _)| hardware_id.clone())
        .chain(idle.iter().map(|id| id.to_string()))
        .map(|hardware_id| {
            let item = HashMap::from([
                ("PK".to_string(), s(format!("L#{key}"))),
                ("SK".to_string(), s(format!("D#{hardware_id}"))),
                ("hardware_id".to_string(), s(hardware_id)),
                ("is_vm".to_string(), AttributeValue::Bool(false)),
                ("activated_at".to_string(), s(since.clone())),
                ("last_seen_at".to_string(), s(since.clone())),
            ]);
            WriteRequest::builder().put_request(PutRequest::builder().set_item(Some(item)).build().unwrap()).build()
        })
        .collect();
    for chunk in items.chunks(25) {
        let written = client.batch_write_item().request_items(table, chunk.to_vec()).send().await.unwrap();
        assert!(written.unprocessed_items.unwrap_or_default().is_empty());
    }
    let map: HashMap<String, AttributeValue> = leases.iter().map(|(h, end)| (h.clone(), s(at(*end)))).collect();
    client
        .update_item()
        .table_name(table)
        .key("PK", s(format!("L#{key}")))
        .key("SK", s("L"))
        .update_expression("SET leases = :map")
        .expression_attribute_values(":map", AttributeValue::M(map))
        .send()
        .await
        .unwrap();
    key
}

/// The stored partition's leases agree with its count, and nothing of the earlier layout is left.
async fn assert_moved(t: &TestApp, key: &str) -> std::collections::BTreeMap<String, i64> {
    let partition = stored_partition(t, key).await;
    assert_eq!(partition.license["leases"], "on devices", "{}", partition.license);
    let moving = partition.license.get("moving_leases").and_then(|m| m.as_object()).map_or(0, |m| m.len());
    assert_eq!(moving, 0, "every lease moved");
    let leases = partition.leases();
    assert_eq!(partition.leases_held(), leases.len(), "the count is the leases on devices");
    leases
}

#[tokio::test]
async fn the_next_heartbeat_moves_the_leases_to_their_devices_and_the_seats_still_hold() {
    let t = TestApp::spawn().await;
    let n = now();
    let leases = [("pc-1".to_string(), n + 600), ("pc-2".to_string(), n + 300), ("pc-3".to_string(), n - 60)];
    let key = earlier_layout(&t, 3, &leases, &[]).await;
    // Read before the move, the view shows the leases where they are.
    let stored = t.stored(&key).await;
    let shown: Vec<bool> =
        stored["devices"].as_array().unwrap().iter().map(|d| d["lease_expires_at"].is_string()).collect();
    assert_eq!(shown, [true, true, true]);

    let checked = t.post("/v1/check", &device(&key, "pc-1")).await;
    assert_eq!(checked.body["code"], "VALID", "{}", checked.body);
    let moved = assert_moved(&t, &key).await;
    assert_eq!(moved.keys().collect::<Vec<_>>(), ["pc-1", "pc-2", "pc-3"], "the lapsed one too: it is taken over");
    assert!(moved["pc-1"] >= n + 600 && moved["pc-2"] == n + 300 && moved["pc-3"] == n - 60);

    // pc-2 is live: no new device gets its seat; pc-3's lapsed seat goes to the first newcomer.
    assert_eq!(t.post("/v1/activate", &device(&key, "pc-4")).await.status, 200);
    let refused = t.post("/v1/activate", &device(&key, "pc-5")).await;
    assert_eq!(refused.error_code(), "ACTIVATION_LIMIT_REACHED", "{}", refused.body);
    assert_eq!(t.post("/v1/check", &device(&key, "pc-3")).await.body["code"], "LEASE_EXPIRED");
    let leases = assert_moved(&t, &key).await;
    assert_eq!(leases.keys().collect::<Vec<_>>(), ["pc-1", "pc-2", "pc-4"]);

    // The move itself is no acquisition: the events tell only what happened after it.
    crate::events::record_stream(&t, None).await;
    let listed = t.admin_get(&format!("/v1/licenses/{key}/events?type=lease.acquired,lease.lapsed")).await;
    let mut told: Vec<(String, String)> = listed.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["type"].as_str().unwrap().to_string(), e["data"]["hardware_id"].as_str().unwrap().to_string()))
        .collect();
    told.sort();
    let expected = [("lease.acquired", "pc-4"), ("lease.lapsed", "pc-3")].map(|(t, h)| (t.to_string(), h.to_string()));
    assert_eq!(told, expected, "{}", listed.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_large_pool_moves_in_several_writes_and_concurrent_operations_agree() {
    let t = TestApp::spawn().await;
    let n = now();
    // More leases than one transaction holds, every third one lapsed.
    let leases: Vec<(String, i64)> =
        (0..230).map(|i| (format!("pc-{i}"), if i % 3 == 0 { n - 60 } else { n + 600 })).collect();
    let key = earlier_layout(&t, 240, &leases, &[]).await;
    let calls = (0..8).map(|i| {
        let (t, key) = (&t, &key);
        async move {
            match i % 2 {
                0 => t.post("/v1/check", &device(key, &format!("pc-{}", i * 7 + 1))).await,
                _ => t.post("/v1/activate", &device(key, &format!("new-{i}"))).await,
            }
        }
    });
    let answers = join_all(calls).await;
    assert!(
        answers.iter().all(|a| a.status == 200),
        "{:?}",
        answers.iter().map(|a| (a.status, a.body.to_string())).collect::<Vec<_>>()
    );
    let moved = assert_moved(&t, &key).await;
    assert_eq!(moved.len(), 234, "230 moved, 4 new (10 seats were free)");
    let live = moved.values().filter(|end| **end > now()).count();
    assert!(live <= 240);
}

/// The earlier version's lease writes, verbatim, against a license whose leases moved: each must
/// fail and change nothing.
#[tokio::test]
async fn the_earlier_versions_lease_writes_fail_once_the_leases_moved() {
    let t = TestApp::spawn().await;
    let n = now();
    // Read by the earlier version before the move: pc-1 holds a lease, pc-2 is bound without one.
    let key = earlier_layout(&t, 3, &[("pc-1".to_string(), n + 600)], &["pc-2"]).await;
    let (client, table) = (t.app.store.client(), t.app.store.table());
    assert!(stored_partition(&t, &key).await.devices.iter().all(|d| d.get("credential_until").is_none()));
    // Then this version moves pc-1's lease, and pc-2 takes one.
    assert_eq!(t.post("/v1/check", &device(&key, "pc-1")).await.body["code"], "VALID");
    assert_eq!(t.post("/v1/check", &device(&key, "pc-2")).await.body["code"], "VALID");
    let before = stored_partition(&t, &key).await;

    let license_update = |expression: &str, condition: &str| {
        client
            .update_item()
            .table_name(table)
            .key("PK", s(format!("L#{key}")))
            .key("SK", s("L"))
            .update_expression(expression)
            .condition_expression(condition)
            .expression_attribute_names("#l", "leases")
    };
    let h = |b: aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder, holder: &str| {
        b.expression_attribute_names("#l_h", holder)
    };
    let attempts = vec![
        (
            "a renewal",
            h(license_update("SET #l.#l_h = :l_until", "#l.#l_h = :l_own"), "pc-1")
                .expression_attribute_values(":l_until", s(at(n + 900)))
                .expression_attribute_values(":l_own", s(at(n + 600))),
        ),
        (
            "a first lease, the map read empty",
            license_update("SET #l = :l_whole", "(attribute_not_exists(#l) OR size(#l) = :zero)")
                .expression_attribute_values(
                    ":l_whole",
                    AttributeValue::M(HashMap::from([("pc-9".into(), s(at(n + 900)))])),
                )
                .expression_attribute_values(":zero", AttributeValue::N("0".into())),
        ),
        (
            "a new lease beside others, with room",
            h(
                license_update("SET #l.#l_h = :l_until", "attribute_not_exists(#l.#l_h) AND size(#l) <= :l_bound"),
                "pc-9",
            )
            .expression_attribute_values(":l_until", s(at(n + 900)))
            .expression_attribute_values(":l_bound", AttributeValue::N("2".into())),
        ),
        (
            "a release of a lease",
            h(license_update("REMOVE #l.#l_h", "#l.#l_h = :l_own"), "pc-1")
                .expression_attribute_values(":l_own", s(at(n + 600))),
        ),
        (
            "a consumption while holding a lease",
            h(license_update("SET version = version", "#l.#l_h > :l_now"), "pc-1")
                .expression_attribute_values(":l_now", s(at(n))),
        ),
    ];
    for (what, attempt) in attempts {
        assert!(attempt.send().await.is_err(), "{what} by the earlier version succeeded");
    }
    // Its release of pc-2, decided before pc-2 took its lease: the horizon moved, so it fails too.
    let release = client
        .update_item()
        .table_name(table)
        .key("PK", s(format!("L#{key}")))
        .key("SK", s("D#pc-2"))
        .update_expression("SET released_at = :now, released_by = :by REMOVE last_seen_at")
        .condition_expression(
            "attribute_exists(SK) AND attribute_not_exists(released_at) AND attribute_not_exists(credential_until)",
        )
        .expression_attribute_values(":now", s(at(n)))
        .expression_attribute_values(":by", s("client"))
        .send()
        .await;
    assert!(release.is_err(), "the earlier version released a device that holds a lease it cannot see");
    let after = stored_partition(&t, &key).await;
    assert_eq!((after.license, after.devices), (before.license, before.devices), "nothing changed");
}

/// A release decided on a license whose (empty) map an earlier version then wrote a lease into
/// fails, instead of releasing the device while the map still holds its lease (which the move would
/// then drop, uncounted, while the device runs on). Fails without the release's layout condition.
#[tokio::test]
async fn a_release_racing_an_earlier_versions_new_lease_fails_and_the_retry_counts_it() {
    use keygate::store::{DeactivationWrite, SeatRelease, Store, WriteError};
    let t = TestApp::spawn().await;
    let key = earlier_layout(&t, 2, &[], &["pc-1"]).await;
    let license_key = keygate::input::LicenseKey::parse(&key).unwrap();
    let hardware_id = keygate::input::HardwareId::parse("pc-1").unwrap();
    let (license, device) = t.app.store.license_and_device(&license_key, &hardware_id).await.unwrap();
    let (license, device) = (license.unwrap(), device.unwrap());
    assert!(license.unmoved_leases.is_empty() && device.lease_expires_at.is_none(), "read: no lease anywhere");
    // The earlier version gives pc-1 a lease in the map (its first lease: the map read empty).
    let n = now();
    t.app
        .store
        .client()
        .update_item()
        .table_name(t.app.store.table())
        .key("PK", s(format!("L#{key}")))
        .key("SK", s("L"))
        .update_expression("SET leases = :whole")
        .condition_expression("attribute_not_exists(leases) OR size(leases) = :zero")
        .expression_attribute_values(":whole", AttributeValue::M(HashMap::from([("pc-1".into(), s(at(n + 600)))])))
        .expression_attribute_values(":zero", AttributeValue::N("0".into()))
        .send()
        .await
        .unwrap();
    let write = DeactivationWrite {
        license: &license,
        device: &device,
        seat: SeatRelease::Lease { observed: None },
        allowance: None,
        released_by: keygate::model::ReleasedBy::Client,
        now: keygate::time::Timestamp::now(),
        receipt: None,
    };
    assert!(matches!(t.app.store.deactivate(&write).await, Err(WriteError::Conflict)));
    assert_eq!(stored_partition(&t, &key).await.bound_devices(), ["pc-1"], "nothing released");
    // Through the API, the release reads again, moves the lease, and returns it with the device.
    let released = t.post("/v1/deactivate", &device_body(&key, "pc-1")).await;
    assert_eq!(released.status, 200, "{}", released.body);
    let leases = assert_moved(&t, &key).await;
    assert!(leases.is_empty(), "{leases:?}");
    let owed = released.body["credential_valid_until"]
        .as_str()
        .map(|end| keygate::time::Timestamp::parse(end).unwrap().unix());
    assert!(owed >= Some(n + 600), "the lease it could run on is owed to the allowance: {}", released.body);
}
