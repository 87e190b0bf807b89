//! Events: the table's stream (DynamoDB Local's, read through the Streams API as `keygate serve`
//! reads it) becomes the audit log, read back through the vendor routes; and the events
//! function's batch handling (Lambda's record format, partial batch failures).

use aws_sdk_dynamodb::types::AttributeValue;
use keygate::store::{sdk_config, DynamoStore, StreamFollower};
use keygate_tests::{device, TestApp};
use serde_json::{json, Value};
use std::collections::HashMap;

/// Reads the test table's stream from its oldest record and records every event.
pub(crate) async fn record_stream(t: &TestApp, keep_days: Option<u32>) -> usize {
    let mut follower = StreamFollower::new(&sdk_config().await, &t.app.store, keep_days).await.unwrap();
    follower.catch_up(&t.app.store).await.unwrap()
}

/// Every page of a listing, following `next_cursor`.
async fn all_pages(t: &TestApp, path: &str) -> Vec<Value> {
    let mut events = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..50 {
        let separator = if path.contains('?') { '&' } else { '?' };
        let page = match &cursor {
            Some(cursor) => t.admin_get(&format!("{path}{separator}cursor={cursor}")).await,
            None => t.admin_get(path).await,
        };
        assert_eq!(page.status, 200, "{}", page.body);
        events.extend(page.body["events"].as_array().unwrap().iter().cloned());
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return events,
        }
    }
    panic!("{path} did not end within 50 pages");
}

fn types(events: &[Value]) -> Vec<String> {
    events.iter().map(|e| e["type"].as_str().unwrap().to_string()).collect()
}

/// A client and vendor session on one license: the events it must leave, oldest first.
pub(crate) async fn session(t: &TestApp) -> String {
    let key = t.issue(json!({"max_activations": 2})).await;
    assert_eq!(t.post("/v1/activate", &device(&key, "pc-1")).await.status, 200);
    assert_eq!(t.post("/v1/activate", &device(&key, "pc-2")).await.status, 200);
    let path = format!("/v1/licenses/{key}");
    assert_eq!(t.admin_patch(&path, &json!({"max_activations": 3})).await.status, 200);
    assert_eq!(t.admin_patch(&path, &json!({"status": "suspended"})).await.status, 200);
    assert_eq!(t.admin_patch(&path, &json!({"status": "active"})).await.status, 200);
    assert_eq!(t.post("/v1/deactivate", &device(&key, "pc-1")).await.status, 200);
    assert_eq!(t.admin_delete(&format!("{path}/devices/pc-2")).await.status, 200);
    key
}

pub(crate) const SESSION: [&str; 8] = [
    "license.created",
    "device.activated",
    "device.activated",
    "license.updated",
    "license.suspended",
    "license.reinstated",
    "device.deactivated",
    "device.released",
];

#[tokio::test]
async fn a_session_leaves_exactly_its_events_in_order_and_redelivery_changes_nothing() {
    let t = TestApp::spawn().await;
    let key = session(&t).await;
    let recorded = record_stream(&t, None).await;

    let listed = all_pages(&t, &format!("/v1/licenses/{key}/events")).await;
    let mut oldest_first = listed.clone();
    oldest_first.reverse();
    assert_eq!(types(&oldest_first), SESSION, "{oldest_first:#?}");
    assert_eq!(recorded, SESSION.len());
    for event in &listed {
        assert_eq!((event["license_key"].as_str(), event["product"].as_str()), (Some(key.as_str()), Some("editor")));
        assert!(event["id"].as_str().unwrap().rsplit_once('.').is_some(), "{event}");
    }
    let actors: Vec<&Value> = oldest_first.iter().map(|e| &e["actor"]).collect();
    assert_eq!(actors[1], &json!({"kind": "device", "hardware_id": "pc-1"}));
    // Vendor calls name their admin token (by its configured name: a bare hash is `token-` and
    // its first 8 hex digits), on the license and on the device the vendor released.
    let hash = keygate::auth::hash_token(&t.admin_token);
    let vendor = json!({"kind": "vendor", "token": format!("token-{}", &hash[..8])});
    for index in [0, 3, 4, 5, 7] {
        assert_eq!(actors[index], &vendor, "{}", oldest_first[index]);
    }
    assert_eq!(actors[6], &json!({"kind": "device", "hardware_id": "pc-1"}), "the client's deactivation");
    assert_eq!(oldest_first[3]["data"], json!({"max_activations": {"before": 2, "after": 3}}));
    assert_eq!(oldest_first[7]["data"]["hardware_id"], "pc-2");
    let mut ids: Vec<&str> = listed.iter().map(|e| e["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), SESSION.len(), "ids are unique");

    // The stream delivered again from its start: the same events, with the same ids.
    assert_eq!(record_stream(&t, None).await, SESSION.len());
    assert_eq!(all_pages(&t, &format!("/v1/licenses/{key}/events")).await, listed);

    // Pages of three walk the same events; every license's events list them too, by type.
    assert_eq!(all_pages(&t, &format!("/v1/licenses/{key}/events?limit=3")).await, listed);
    let activated = all_pages(&t, "/v1/events?type=device.activated,device.deactivated").await;
    assert_eq!(types(&activated), ["device.deactivated", "device.activated", "device.activated"]);
    assert_eq!(all_pages(&t, "/v1/events?limit=2").await, listed);
    let one_page = t.admin_get(&format!("/v1/licenses/{key}/events?type=license.updated")).await;
    assert_eq!(types(one_page.body["events"].as_array().unwrap()), ["license.updated"]);
}

/// A cursor as the listings hand them out, with the given key and order key.
fn cursor(key: &str, order: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json!({"k": key, "o": order}).to_string())
}

#[tokio::test]
async fn listings_refuse_what_they_cannot_answer() {
    let t = TestApp::spawn().await;
    let key = t.issue(json!({})).await;
    let refusals = [
        (format!("/v1/licenses/{key}/events?type=license.exploded"), "type"),
        (format!("/v1/licenses/{key}/events?since=yesterday"), "since"),
        ("/v1/events?since=2026-11-02T00:00:00Z&until=2026-11-01T00:00:00Z".to_string(), "since"),
        ("/v1/events?limit=0".to_string(), "limit"),
        ("/v1/events?cursor=bm90IGEgY3Vyc29y".to_string(), "cursor"),
        (
            format!("/v1/licenses/{key}/events?cursor=eyJrIjoiQUFBQUEtQUFBQUEtQUFBQUEtQUFBQUEtQUFBQUEiLCJvIjoieCJ9"),
            "cursor",
        ),
        ("/v1/events?colour=red".to_string(), "colour"),
        // Cursors DynamoDB would refuse as start keys (a 500): another spelling of the key, an
        // order key past the listing's end.
        (format!("/v1/licenses/{key}/events?cursor={}", cursor(&key.to_lowercase(), "2026-11-26T00:00:00Z")), "cursor"),
        (
            format!(
                "/v1/licenses/{key}/events?until=2026-11-26T00:00:00Z&cursor={}",
                cursor(&key, "2026-11-26T00:00:00Z#~~")
            ),
            "cursor",
        ),
    ];
    for (path, field) in refusals {
        let answer = t.admin_get(&path).await;
        assert_eq!(answer.status, 400, "{path}: {}", answer.body);
        assert!(answer.body.to_string().contains(field), "{path}: {}", answer.body);
    }
    // A license that never was has no history: 404, not an empty list.
    let missing = t.admin_get("/v1/licenses/AAAAA-AAAAA-AAAAA-AAAAA-AAAAA/events").await;
    assert_eq!(missing.status, 404, "{}", missing.body);
    // A license with no event recorded yet: an empty list.
    let empty = t.admin_get(&format!("/v1/licenses/{key}/events")).await;
    assert_eq!((empty.status, empty.body["events"].clone()), (200, json!([])));
    assert_eq!(t.get("/v1/events").await.status, 401, "a vendor route");
}

#[tokio::test]
async fn a_retention_sets_each_events_expiry() {
    let t = TestApp::spawn().await;
    t.issue(json!({})).await;
    record_stream(&t, None).await;
    let items = events_items(&t.app.store).await;
    assert_eq!(items.len(), 1);
    assert!(!items[0].contains_key("ttl"), "kept for good unless told");
    // DynamoDB Local does not expire items: what can be checked is the attribute TTL reads.
    record_stream(&t, Some(30)).await;
    let items = events_items(&t.app.store).await;
    let event: Value = serde_json::from_str(items[0]["event"].as_s().unwrap()).unwrap();
    let at = keygate::time::Timestamp::parse(event["at"].as_str().unwrap()).unwrap();
    assert_eq!(items[0]["ttl"], AttributeValue::N(at.plus_days(30).unix().to_string()));
    let ttl = t.app.store.client().describe_time_to_live().table_name(t.app.store.events_table()).send().await;
    let ttl = ttl.unwrap().time_to_live_description.unwrap();
    assert_eq!(ttl.attribute_name(), Some("ttl"));
}

async fn events_items(store: &DynamoStore) -> Vec<HashMap<String, AttributeValue>> {
    let scanned = store.client().scan().table_name(store.events_table()).send().await.unwrap();
    scanned.items.unwrap_or_default()
}

#[tokio::test]
async fn the_events_function_records_a_lambda_batch_and_names_the_first_record_it_could_not() {
    let t = TestApp::spawn().await;
    let key = t.issue(json!({})).await;
    let store = &t.app.store;
    let image = keygate_tests::license_image(store, &key).await;
    let batch = json!({"Records": [keygate_tests::insert_record(&image, "lambda-1", 111, 1_795_659_126.0)]});
    let answer = keygate::lambda::record_batch(store, &batch, None).await;
    assert_eq!(answer, json!({"batchItemFailures": []}));
    let listed = t.admin_get(&format!("/v1/licenses/{key}/events?since=2026-01-01T00:00:00Z")).await;
    let events = listed.body["events"].as_array().unwrap();
    assert_eq!(
        (events.len(), events[0]["id"].as_str(), events[0]["type"].as_str()),
        (1, Some("lambda-1.0"), Some("license.created"))
    );

    // The audit log unwritable: the batch reports its first record, for Lambda to deliver again.
    let broken = DynamoStore::new(store.client().clone(), store.table()).with_events_table("no-such-table");
    let answer = keygate::lambda::record_batch(&broken, &batch, None).await;
    assert_eq!(answer, json!({"batchItemFailures": [{"itemIdentifier": "111"}]}));
}

#[tokio::test]
async fn the_cli_lists_a_licenses_events_and_every_licenses_by_type() {
    let t = TestApp::spawn().await;
    let key = session(&t).await;
    record_stream(&t, None).await;
    let env = [("KEYGATE_URL", t.base_url.as_str()), ("KEYGATE_ADMIN_TOKEN", t.admin_token.as_str())];
    let run = |args: Vec<&'static str>| async move {
        let args: Vec<&str> = ["licenses", "--json", "events"].into_iter().chain(args).collect();
        let stdout = crate::cli::keygate_command(&args, &env).await.unwrap();
        serde_json::from_slice::<Value>(&stdout).unwrap()
    };
    let key: &'static str = Box::leak(key.into_boxed_str());
    let newest = run(vec![key, "--limit", "3"]).await;
    assert_eq!(
        types(newest["events"].as_array().unwrap()),
        ["device.released", "device.deactivated", "license.reinstated"]
    );
    assert!(newest["next_cursor"].is_string());
    let activations = run(vec!["--type", "device.activated"]).await;
    assert_eq!(types(activations["events"].as_array().unwrap()), ["device.activated", "device.activated"]);
}

#[tokio::test]
async fn license_files_say_so_beside_the_device_events() {
    use crate::offline::{offline, Scratch};
    let t = TestApp::spawn().await;
    // Two released devices may keep their (offline, long-lived) license files at once.
    let key = t.issue(json!({"max_activations": 2, "release_allowance": 2})).await;
    let dir = Scratch::new();
    let url = t.base_url.as_str();
    for device in ["air-1", "air-2"] {
        let (request, license) = (dir.path(&format!("{device}.request")), dir.path(&format!("{device}.license")));
        let args =
            ["request", "--license-key", &key, "--product", "editor", "--hardware-id", device, "--out", &request];
        offline(url, &args).await.unwrap();
        offline(url, &["submit", &request, "--out", &license]).await.unwrap();
    }
    // air-1 leaves through a deactivation file; air-2, activated through a file, leaves online.
    let deactivation = dir.path("air-1.deactivate");
    offline(url, &["deactivation-request", "--license-file", &dir.path("air-1.license"), "--out", &deactivation])
        .await
        .unwrap();
    offline(url, &["submit", &deactivation, "--out", &dir.path("receipt")]).await.unwrap();
    assert_eq!(t.post("/v1/deactivate", &device(&key, "air-2")).await.status, 200);
    record_stream(&t, None).await;

    let mut events = all_pages(&t, &format!("/v1/licenses/{key}/events")).await;
    events.reverse();
    let of = |id: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| e["data"]["hardware_id"] == id)
            .map(|e| e["type"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(of("air-1"), ["device.activated", "offline.activated", "device.deactivated", "offline.deactivated"]);
    assert_eq!(of("air-2"), ["device.activated", "offline.activated", "device.deactivated"]);
}

#[tokio::test]
async fn a_license_nearing_its_end_is_announced_once_per_reminder_and_a_new_end_moves_them() {
    use keygate::time::Timestamp;
    let t = TestApp::spawn().await;
    let reminding = DynamoStore::new(t.app.store.client().clone(), t.app.store.table()).with_expiry_reminders(&[14, 3]);
    let now = Timestamp::now();
    let ends = Timestamp::midnight(now.plus_days(20).date().unwrap());
    let key = t.issue(json!({"expiration": {"type": "on_date", "date": ends.to_string()}})).await;
    let mut follower = StreamFollower::new(&sdk_config().await, &reminding, None).await.unwrap();
    follower.catch_up(&reminding).await.unwrap();
    let day = |at: Timestamp, days_before: i64| at.plus_seconds(-days_before * 86_400 + 3_600);

    assert_eq!(reminding.remind_due(now).await.unwrap(), 0, "nothing due yet");
    assert_eq!(reminding.remind_due(day(ends, 14)).await.unwrap(), 1);
    assert_eq!(reminding.remind_due(day(ends, 14)).await.unwrap(), 0, "a reminder is sent once");
    // The vendor extends the license by 30 days: the remaining reminder moves with its end.
    let later = ends.plus_days(30);
    let new_end = json!({"expiration": {"type": "on_date", "date": later.to_string()}});
    assert_eq!(t.admin_patch(&format!("/v1/licenses/{key}"), &new_end).await.status, 200);
    follower.catch_up(&reminding).await.unwrap();
    assert_eq!(reminding.remind_due(day(ends, 3)).await.unwrap(), 0, "the old end's reminder is gone");
    assert_eq!(reminding.remind_due(day(later, 14)).await.unwrap(), 1);
    assert_eq!(reminding.remind_due(day(later, 3)).await.unwrap(), 1);

    // Sent at the (simulated) times above, ahead of the clock: listed up to then.
    let path = format!("/v1/licenses/{key}/events?type=license.expiring&until=2100-01-01T00:00:00Z");
    let events = all_pages(&t, &path).await;
    let told: Vec<(Value, Value)> =
        events.iter().rev().map(|e| (e["data"]["expires_at"].clone(), e["data"]["days_before"].clone())).collect();
    let (ends, later) = (json!(ends.to_string()), json!(later.to_string()));
    assert_eq!(told, [(ends, json!(14)), (later.clone(), json!(14)), (later, json!(3))]);
    assert!(events.iter().all(|e| e["actor"] == json!({"kind": "system"}) && e["product"] == "editor"));
}

#[tokio::test]
async fn the_events_of_one_request_share_its_request_id() {
    let t = TestApp::spawn().await;
    let key = t.issue(json!({"max_activations": 1, "device_rotation": true})).await;
    assert_eq!(t.post("/v1/activate", &device(&key, "pc-1")).await.status, 200);
    // pc-2 takes the only seat: pc-1 is rotated out by the same request.
    assert_eq!(t.post("/v1/activate", &device(&key, "pc-2")).await.status, 200);
    record_stream(&t, None).await;
    let events = all_pages(&t, &format!("/v1/licenses/{key}/events?type=device.activated,device.rotated_out")).await;
    let request = |kind: &str, id: &str| -> String {
        let event = events.iter().find(|e| e["type"] == kind && e["data"]["hardware_id"] == id).unwrap();
        event["request_id"].as_str().unwrap().to_string()
    };
    let (first, second) = (request("device.activated", "pc-1"), request("device.activated", "pc-2"));
    assert!(first.starts_with("req_") && second.starts_with("req_"), "{first} {second}");
    assert_ne!(first, second);
    assert_eq!(request("device.rotated_out", "pc-1"), second, "the rotation was the second activation's doing");
}
