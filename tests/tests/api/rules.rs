//! Every license rule, through HTTP against DynamoDB Local.

use keygate_tests::{claims, device, join_all, TestApp};
use serde_json::{json, Value};

const DAY: i64 = 86_400;

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

async fn check(t: &TestApp, key: &str, hwid: &str) -> Value {
    let answer = t.post("/v1/check", &device(key, hwid)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.body
}

#[tokio::test]
async fn suspended_and_revoked_licenses_are_refused_and_checked_so() {
    let t = TestApp::spawn().await;
    let key = t.issue(json!({})).await;
    assert_eq!(t.post("/v1/activate", &device(&key, "pc-1")).await.status, 200);
    for (status, activate_code, check_code) in
        [("suspended", "LICENSE_SUSPENDED", "SUSPENDED"), ("revoked", "LICENSE_REVOKED", "REVOKED")]
    {
        assert_eq!(t.admin_patch(&format!("/v1/licenses/{key}"), &json!({"status": status})).await.status, 200);
        let refused = t.post("/v1/activate", &device(&key, "pc-2")).await;
        assert_eq!((refused.status, refused.error_code()), (403, activate_code));
        let checked = check(&t, &key, "pc-1").await;
        assert_eq!((checked["valid"].clone(), checked["code"].clone()), (json!(false), json!(check_code)));
        assert_eq!(claims(checked["token"].as_str().unwrap())["code"], check_code, "the refusal is signed too");
    }
    assert_eq!(t.admin_patch(&format!("/v1/licenses/{key}"), &json!({"status": "active"})).await.status, 200);
    assert_eq!(check(&t, &key, "pc-1").await["code"], "VALID");
}

#[tokio::test]
async fn an_expired_license_within_its_grace_period_is_still_valid() {
    let t = TestApp::spawn().await;
    let yesterday = now() - DAY;
    let date = time_string(yesterday);
    let key = t.issue(json!({"expiration": {"type": "on_date", "date": date}, "grace_period_days": 5})).await;
    let activated = t.post("/v1/activate", &device(&key, "pc-1")).await;
    assert_eq!(activated.status, 200, "activation is allowed in the grace period: {}", activated.body);
    let checked = check(&t, &key, "pc-1").await;
    assert_eq!((checked["valid"].clone(), checked["code"].clone()), (json!(true), json!("GRACE_PERIOD")));
    assert_eq!(checked["license"]["is_expired"], true);
    let token = claims(checked["token"].as_str().unwrap());
    assert_eq!(token["exp"].as_i64().unwrap(), yesterday + 5 * DAY, "the token lasts until the grace period ends");
}

fn time_string(unix: i64) -> String {
    keygate::time::Timestamp::from_unix(unix).to_string()
}

#[tokio::test]
async fn days_after_activation_starts_at_the_first_activation() {
    let t = TestApp::spawn().await;
    let key = t.issue(json!({"expiration": {"type": "days_after_activation", "days": 10}})).await;
    assert_eq!(t.stored(&key).await["license"]["expires_at"], Value::Null);
    let before = now();
    let activated = t.post("/v1/activate", &device(&key, "pc-1")).await;
    let expiry = activated.body["license"]["validity_period"].as_str().unwrap().to_string();
    let expiry = keygate::time::Timestamp::parse(&expiry).unwrap().unix();
    assert!((before + 10 * DAY..=now() + 10 * DAY).contains(&expiry));
    // A second activation does not move it.
    let again = t.post("/v1/activate", &device(&key, "pc-2")).await;
    assert_eq!(
        keygate::time::Timestamp::parse(again.body["license"]["validity_period"].as_str().unwrap()).unwrap().unix(),
        expiry
    );
}

#[tokio::test]
async fn days_after_creation_and_maintenance_are_reported_to_clients() {
    let t = TestApp::spawn().await;
    let key = t
        .issue(json!({"expiration": {"type": "days_after_creation", "days": 30}, "maintenance_until": "2031-06-30"}))
        .await;
    let stored = t.stored(&key).await;
    let created = keygate::time::Timestamp::parse(stored["license"]["created_at"].as_str().unwrap()).unwrap().unix();
    let expires = keygate::time::Timestamp::parse(stored["license"]["expires_at"].as_str().unwrap()).unwrap().unix();
    assert_eq!(expires - created, 30 * DAY);
    t.post("/v1/activate", &device(&key, "pc-1")).await;
    let checked = check(&t, &key, "pc-1").await;
    assert_eq!(checked["license"]["maintenance_period"], "2031-06-30T00:00:00Z");
    let token = claims(checked["token"].as_str().unwrap());
    assert_eq!(token["maintenance_until"], keygate::time::Timestamp::parse("2031-06-30").unwrap().unix());
    assert_eq!(token["license_expires_at"], expires);
}

#[tokio::test]
async fn a_frozen_license_refuses_new_devices_but_not_known_ones() {
    let t = TestApp::spawn().await;
    let key = t.issue(json!({"freeze_days": 2})).await;
    assert_eq!(t.post("/v1/activate", &device(&key, "pc-1")).await.status, 200);
    let frozen = t.post("/v1/activate", &device(&key, "pc-2")).await;
    assert_eq!((frozen.status, frozen.error_code()), (409, "LICENSE_FROZEN"));
    assert_eq!(t.post("/v1/activate", &device(&key, "pc-1")).await.status, 200);
    assert_eq!(t.stored(&key).await["license"]["times_activated"], 1);
}

#[tokio::test]
async fn rotation_replaces_the_least_recently_seen_device() {
    let t = TestApp::spawn().await;
    let key = t.issue(json!({"max_activations": 1, "device_rotation": true})).await;
    assert_eq!(t.post("/v1/activate", &device(&key, "old-pc")).await.status, 200);
    let rotated = t.post("/v1/activate", &device(&key, "new-pc")).await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    assert_eq!(check(&t, &key, "old-pc").await["code"], "DEVICE_NOT_ACTIVATED");
    assert_eq!(check(&t, &key, "new-pc").await["code"], "VALID");
    let stored = t.stored(&key).await;
    // old-pc still holds a valid token: replacing it is a client's release, owed to the allowance.
    assert_eq!(
        (stored["license"]["times_activated"].clone(), stored["license"]["transfer_count"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(stored["license"]["releases"].as_object().unwrap().keys().collect::<Vec<_>>(), ["old-pc"]);
    assert_eq!(stored["devices"].as_array().unwrap().len(), 1, "the rotated-out device is not listed");
    // The rotated-out device can come back, rotating the other one out: it gives back its own
    // place in the allowance, which new-pc takes.
    assert_eq!(t.post("/v1/activate", &device(&key, "old-pc")).await.status, 200);
    let stored = t.stored(&key).await;
    assert_eq!(stored["license"]["releases"].as_object().unwrap().keys().collect::<Vec<_>>(), ["new-pc"]);
    assert_eq!(check(&t, &key, "old-pc").await["code"], "VALID");
    assert_eq!(check(&t, &key, "new-pc").await["code"], "DEVICE_NOT_ACTIVATED");
    let refused = t.post("/v1/deactivate", &device(&key, "new-pc")).await;
    assert_eq!((refused.status, refused.error_code()), (404, "DEVICE_NOT_FOUND"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_rotations_keep_exactly_the_seat_count() {
    let t = TestApp::spawn().await;
    let key = t.issue(json!({"max_activations": 2, "device_rotation": true, "release_allowance": 100})).await;
    let bodies: Vec<Value> = (0..10).map(|i| device(&key, &format!("pc-{i}"))).collect();
    let answers = join_all(bodies.iter().map(|b| t.post("/v1/activate", b))).await;
    // Every rotation evicts the same least-recently-seen device, so writers collide; one that keeps
    // losing is told to retry (503 CONCURRENT_UPDATE, with Retry-After) rather than waiting forever. The seats never
    // exceed the limit either way.
    let codes: Vec<&str> = answers.iter().filter(|a| a.status != 200).map(|a| a.error_code()).collect();
    assert!(codes.iter().all(|c| *c == "CONCURRENT_UPDATE"), "{codes:?}");
    assert!(answers.iter().filter(|a| a.status == 200).count() >= 2);
    let stored = t.stored(&key).await;
    assert_eq!(stored["license"]["times_activated"], 2);
    assert_eq!(stored["devices"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn transfers_stop_at_max_transfers() {
    let t = TestApp::spawn().await;
    let key = t.issue(json!({"max_transfers": 1})).await;
    t.post("/v1/activate", &device(&key, "pc-1")).await;
    assert_eq!(t.post("/v1/deactivate", &device(&key, "pc-1")).await.status, 200);
    t.post("/v1/activate", &device(&key, "pc-2")).await;
    let refused = t.post("/v1/deactivate", &device(&key, "pc-2")).await;
    assert_eq!((refused.status, refused.error_code()), (409, "TRANSFER_LIMIT_REACHED"));
    assert_eq!(check(&t, &key, "pc-2").await["code"], "VALID", "the refused transfer left the device bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_deactivations_never_exceed_max_transfers() {
    let t = TestApp::spawn().await;
    let key = t.issue(json!({"max_activations": 8, "max_transfers": 3, "release_allowance": 100})).await;
    let bodies: Vec<Value> = (0..8).map(|i| device(&key, &format!("pc-{i}"))).collect();
    for body in &bodies {
        assert_eq!(t.post("/v1/activate", body).await.status, 200);
    }
    let answers = join_all(bodies.iter().map(|b| t.post("/v1/deactivate", b))).await;
    assert_eq!(answers.iter().filter(|a| a.status == 200).count(), 3);
    assert!(answers.iter().filter(|a| a.status != 200).all(|a| a.error_code() == "TRANSFER_LIMIT_REACHED"));
    let stored = t.stored(&key).await;
    assert_eq!(
        (stored["license"]["transfer_count"].clone(), stored["license"]["times_activated"].clone()),
        (json!(3), json!(5))
    );
    assert_eq!(stored["devices"].as_array().unwrap().len(), 5);
}

#[tokio::test]
async fn unlimited_activations_ignore_the_seat_count() {
    let t = TestApp::spawn().await;
    let key = t.issue(json!({"max_activations": 0, "allow_unlimited_activations": true})).await;
    for i in 0..5 {
        assert_eq!(t.post("/v1/activate", &device(&key, &format!("pc-{i}"))).await.status, 200);
    }
    let stored = t.stored(&key).await;
    assert_eq!(stored["usage"], json!({"seats_used": 5, "seats_available": null, "compliance": "compliant"}));
}

#[tokio::test]
async fn validation_settings_travel_in_the_token() {
    let t = TestApp::spawn().await;
    let key = t.issue(json!({"validation_interval_days": 3, "work_if_validation_blocked": true})).await;
    let token = claims(t.post("/v1/activate", &device(&key, "pc-1")).await.body["token"].as_str().unwrap());
    assert_eq!(token["work_if_validation_blocked"], true);
    assert_eq!(token["exp"].as_i64().unwrap() - token["iat"].as_i64().unwrap(), 3 * DAY);
}

#[tokio::test]
async fn check_writes_last_seen_only_when_stale() {
    let t = TestApp::spawn().await;
    let key = t.issue(json!({})).await;
    t.post("/v1/activate", &device(&key, "pc-1")).await;
    let before = t.round_trips();
    check(&t, &key, "pc-1").await;
    assert_eq!(t.round_trips() - before, 1, "a fresh device: one read, no write");

    // Make the sighting two hours old, straight in the table.
    t.set_last_seen(&key, "pc-1", now() - 7_200).await;
    let before = t.round_trips();
    check(&t, &key, "pc-1").await;
    assert_eq!(t.round_trips() - before, 2, "a stale device: one read, one write");
    let seen = t.stored(&key).await["devices"][0]["last_seen_at"].as_str().unwrap().to_string();
    assert!(keygate::time::Timestamp::parse(&seen).unwrap().unix() >= now() - 60);
    let before = t.round_trips();
    check(&t, &key, "pc-1").await;
    assert_eq!(t.round_trips() - before, 1, "fresh again");
}
