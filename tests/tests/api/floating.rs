//! Floating licenses through HTTP against DynamoDB Local: leases, heartbeats, lapses, borrowing,
//! and races on the seats. A lapse is made by moving the stored lease end into the past, as time
//! would, so no test waits for a timeout.

use crate::verify_by_hand;
use keygate_tests::{claims, device, join_all, stored_partition, TestApp};
use serde_json::{json, Value};

const MINUTE: i64 = 60;
const HOUR: i64 = 3_600;

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn unix(time: &Value) -> i64 {
    keygate::time::Timestamp::parse(time.as_str().expect("a timestamp")).unwrap().unix()
}

async fn floating(t: &TestApp, seats: u32, terms: Value) -> String {
    let mut body = json!({"is_floating": true, "max_activations": seats, "floating_timeout_minutes": 10});
    body.as_object_mut().unwrap().extend(terms.as_object().cloned().unwrap_or_default());
    t.issue(body).await
}

async fn check(t: &TestApp, key: &str, hwid: &str) -> Value {
    let answer = t.post("/v1/check", &device(key, hwid)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.body
}

/// The devices of a vendor view holding a lease of this kind: `live`, `borrowed` (live, and held
/// offline until the borrow ends) or `lapsed` (not taken over yet).
fn leases<'a>(stored: &'a Value, kind: &str) -> Vec<&'a str> {
    let now = now();
    let time = |d: &Value, field: &str| d.get(field).filter(|v| !v.is_null()).map(unix);
    let mut ids: Vec<&str> = stored["devices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| {
            let Some(end) = time(d, "lease_expires_at") else { return false };
            let borrowed = time(d, "borrowed_until").is_some_and(|until| until > now);
            match kind {
                "lapsed" => end <= now,
                "borrowed" => end > now && borrowed,
                _ => end > now && !borrowed,
            }
        })
        .map(|d| d["hardware_id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    ids
}

#[tokio::test]
async fn leases_are_taken_up_to_the_seats_then_refused() {
    let t = TestApp::spawn().await;
    let key = floating(&t, 2, json!({})).await;
    for hwid in ["pc-1", "pc-2"] {
        let before = now();
        let activated = t.post("/v1/activate", &device(&key, hwid)).await;
        assert_eq!(activated.status, 200, "{}", activated.body);
        let lease_end = unix(&activated.body["device"]["lease_expires_at"]);
        assert!((before + 10 * MINUTE..=now() + 10 * MINUTE).contains(&lease_end));
        let token = claims(activated.body["token"].as_str().unwrap());
        assert_eq!((token["lease_expires_at"].as_i64(), token["exp"].as_i64()), (Some(lease_end), Some(lease_end)));
    }
    let refused = t.post("/v1/activate", &device(&key, "pc-3")).await;
    assert_eq!((refused.status, refused.error_code()), (409, "ACTIVATION_LIMIT_REACHED"));
    let checked = check(&t, &key, "pc-1").await;
    assert_eq!((checked["valid"].clone(), checked["code"].clone()), (json!(true), json!("VALID")));
    assert_eq!(checked["license"]["floating_in_use_devices"], 2);
    let stored = t.stored(&key).await;
    assert_eq!(leases(&stored, "live"), ["pc-1", "pc-2"]);
    assert_eq!(stored["usage"]["seats_used"], 2);
    assert_eq!(stored["license"]["times_activated"], 0, "floating seats are leases, not counted devices");
}

#[tokio::test]
async fn a_check_is_a_heartbeat_that_moves_the_lease_end() {
    let t = TestApp::spawn().await;
    let key = floating(&t, 1, json!({})).await;
    assert_eq!(t.post("/v1/activate", &device(&key, "pc-1")).await.status, 200);
    t.set_lease_end(&key, "pc-1", now() + 30).await;
    let before = now();
    let checked = check(&t, &key, "pc-1").await;
    let token = claims(checked["token"].as_str().unwrap());
    let lease_end = token["lease_expires_at"].as_i64().unwrap();
    assert!(lease_end >= before + 10 * MINUTE, "renewed to a full timeout, not left at 30 s");
    let stored = t.stored(&key).await;
    assert_eq!(unix(&stored["devices"][0]["lease_expires_at"]), lease_end);
}

#[tokio::test]
async fn a_lapsed_lease_frees_its_seat_at_once_for_another_device() {
    let t = TestApp::spawn().await;
    let key = floating(&t, 1, json!({})).await;
    assert_eq!(t.post("/v1/activate", &device(&key, "pc-1")).await.status, 200);
    let refused = t.post("/v1/activate", &device(&key, "pc-2")).await;
    assert_eq!(refused.error_code(), "ACTIVATION_LIMIT_REACHED");

    t.set_lease_end(&key, "pc-1", now() - 1).await;
    let stored = t.stored(&key).await;
    assert_eq!(leases(&stored, "lapsed"), ["pc-1"]);
    assert_eq!(stored["floating"]["seats_held"], 1, "held until another device takes it over");

    let taken = t.post("/v1/activate", &device(&key, "pc-2")).await;
    assert_eq!(taken.status, 200, "the lapsed seat is taken over: {}", taken.body);

    // pc-1's renewal comes too late: its seat is pc-2's now, and no other is free.
    let late = check(&t, &key, "pc-1").await;
    assert_eq!((late["valid"].clone(), late["code"].clone()), (json!(false), json!("LEASE_EXPIRED")));
    assert_eq!(claims(late["token"].as_str().unwrap())["code"], "LEASE_EXPIRED", "the refusal is signed");
    assert_eq!(late["license"]["floating_in_use_devices"], 1);
    let stored = t.stored(&key).await;
    assert_eq!(leases(&stored, "live"), ["pc-2"]);
    assert_eq!(leases(&stored, "lapsed"), Vec::<&str>::new());
    assert_eq!(check(&t, &key, "pc-2").await["code"], "VALID");
}

#[tokio::test]
async fn a_lapsed_lease_is_re_acquired_by_a_check_when_a_seat_is_free() {
    let t = TestApp::spawn().await;
    let key = floating(&t, 2, json!({})).await;
    assert_eq!(t.post("/v1/activate", &device(&key, "pc-1")).await.status, 200);
    assert_eq!(t.post("/v1/activate", &device(&key, "pc-2")).await.status, 200);
    t.set_lease_end(&key, "pc-1", now() - 5 * MINUTE).await;
    // pc-2 deactivates while pc-1 is lapsed: pc-1 gets back in on its own seat.
    assert_eq!(t.post("/v1/deactivate", &device(&key, "pc-2")).await.status, 200);
    let before = now();
    let checked = check(&t, &key, "pc-1").await;
    assert_eq!((checked["valid"].clone(), checked["code"].clone()), (json!(true), json!("VALID")));
    assert!(claims(checked["token"].as_str().unwrap())["lease_expires_at"].as_i64().unwrap() >= before + 10 * MINUTE);

    // Lapsed, with the other seat taken by a live lease: the free seat is its own, so still in.
    assert_eq!(t.post("/v1/activate", &device(&key, "pc-3")).await.status, 200);
    t.set_lease_end(&key, "pc-1", now() - 1).await;
    assert_eq!(check(&t, &key, "pc-1").await["code"], "VALID");
    assert_eq!(t.stored(&key).await["floating"]["seats_held"], 2);
}

#[tokio::test]
async fn deactivation_returns_the_lease_at_once_and_is_not_a_transfer() {
    let t = TestApp::spawn().await;
    let key = floating(&t, 1, json!({})).await;
    assert_eq!(t.post("/v1/activate", &device(&key, "pc-1")).await.status, 200);
    let deactivated = t.post("/v1/deactivate", &device(&key, "pc-1")).await;
    assert_eq!(deactivated.status, 200, "{}", deactivated.body);
    assert_eq!(deactivated.body["license"]["transfer_count"], 0);
    assert_eq!(deactivated.body["license"]["floating_in_use_devices"], 0);
    assert_eq!(t.post("/v1/activate", &device(&key, "pc-2")).await.status, 200);
    assert_eq!(check(&t, &key, "pc-1").await["code"], "DEVICE_NOT_ACTIVATED");
    // The vendor's release frees a floating seat the same way.
    let released = t.admin_delete(&format!("/v1/licenses/{key}/devices/pc-2")).await;
    assert_eq!(released.status, 200, "{}", released.body);
    assert_eq!(t.stored(&key).await["floating"]["seats_held"], 0);
}

#[tokio::test]
async fn a_borrowed_seat_works_offline_until_the_borrow_ends_and_returns_early() {
    let t = TestApp::spawn().await;
    let key = floating(&t, 1, json!({"can_borrow": true, "max_borrow_hours": 72, "validation_interval_days": 1})).await;
    let jwks = t.get("/.well-known/jwks.json").await.body;
    let borrow = |hwid: &str, hours: u32| json!({"license_key": key, "product": "editor", "hardware_id": hwid, "hours": hours, "nonce": "b-1"});

    let not_activated = t.post("/v1/borrow", &borrow("pc-1", 24)).await;
    assert_eq!((not_activated.status, not_activated.error_code()), (404, "DEVICE_NOT_FOUND"));
    assert_eq!(t.post("/v1/activate", &device(&key, "pc-1")).await.status, 200);
    let too_long = t.post("/v1/borrow", &borrow("pc-1", 73)).await;
    assert_eq!((too_long.status, too_long.body["error"]["field"].clone()), (400, json!("hours")));

    let before = now();
    let borrowed = t.post("/v1/borrow", &borrow("pc-1", 48)).await;
    assert_eq!(borrowed.status, 200, "{}", borrowed.body);
    let until = unix(&borrowed.body["device"]["borrowed_until"]);
    assert!((before + 48 * HOUR..=now() + 48 * HOUR).contains(&until));
    let token = verify_by_hand(borrowed.body["token"].as_str().unwrap(), &jwks).unwrap();
    assert_eq!(token["exp"].as_i64(), Some(until), "offline until the borrow ends, past the 1-day interval");
    assert_eq!((token["borrowed_until"].as_i64(), token["lease_expires_at"].as_i64()), (Some(until), Some(until)));
    assert_eq!(token["nonce"], "b-1");

    // A heartbeat during the borrow neither shortens it nor writes anything.
    let before_check = t.round_trips();
    let checked = check(&t, &key, "pc-1").await;
    assert_eq!(t.round_trips() - before_check, 1);
    assert_eq!(claims(checked["token"].as_str().unwrap())["exp"].as_i64(), Some(until));

    let stored = t.stored(&key).await;
    assert_eq!(leases(&stored, "borrowed"), ["pc-1"]);
    assert_eq!(leases(&stored, "live"), Vec::<&str>::new());
    assert_eq!(t.post("/v1/activate", &device(&key, "pc-2")).await.error_code(), "ACTIVATION_LIMIT_REACHED");

    // Returned early: the seat is free at once.
    assert_eq!(t.post("/v1/deactivate", &device(&key, "pc-1")).await.status, 200);
    assert_eq!(t.post("/v1/activate", &device(&key, "pc-2")).await.status, 200);
}

#[tokio::test]
async fn borrowing_needs_a_floating_license_that_allows_it() {
    let t = TestApp::spawn().await;
    for terms in [json!({"is_floating": true, "max_activations": 2}), json!({})] {
        let key = t.issue(terms).await;
        assert_eq!(t.post("/v1/activate", &device(&key, "pc-1")).await.status, 200);
        let refused = t
            .post("/v1/borrow", &json!({"license_key": key, "product": "editor", "hardware_id": "pc-1", "hours": 1}))
            .await;
        assert_eq!((refused.status, refused.error_code()), (403, "BORROWING_NOT_ALLOWED"));
    }
    let refused = t
        .admin_post(
            "/v1/licenses",
            &json!({"product": "editor", "license_type": "perpetual", "max_activations": 1, "can_borrow": true, "max_borrow_hours": 5}),
        )
        .await;
    assert_eq!((refused.status, refused.body["error"]["field"].clone()), (400, json!("can_borrow")));
    let unlimited = t
        .admin_post(
            "/v1/licenses",
            &json!({"product": "editor", "license_type": "perpetual", "max_activations": 1, "is_floating": true, "allow_unlimited_activations": true}),
        )
        .await;
    assert_eq!(unlimited.status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_devices_racing_for_four_floating_seats_get_exactly_four_leases() {
    let t = TestApp::spawn().await;
    let key = floating(&t, 4, json!({})).await;
    let attempts = (0..30).map(|i| {
        let (t, key) = (&t, &key);
        async move { t.post("/v1/activate", &device(key, &format!("pc-{i}"))).await }
    });
    let answers = join_all(attempts).await;
    let winners: Vec<&str> =
        answers.iter().filter(|a| a.status == 200).map(|a| a.body["device"]["hardware_id"].as_str().unwrap()).collect();
    let refused: Vec<&str> = answers.iter().filter(|a| a.status != 200).map(|a| a.error_code()).collect();
    assert!(refused.iter().all(|c| matches!(*c, "ACTIVATION_LIMIT_REACHED" | "CONCURRENT_UPDATE")), "{refused:?}");
    assert_eq!(winners.len(), 4, "refusals: {refused:?}");
    let stored = t.stored(&key).await;
    let mut winners = winners;
    winners.sort_unstable();
    assert_eq!(leases(&stored, "live"), winners);
    assert_eq!(stored["devices"].as_array().unwrap().len(), 4, "only the winners were bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn late_renewals_racing_new_devices_for_lapsed_seats_never_share_a_seat() {
    let t = TestApp::spawn().await;
    let key = floating(&t, 2, json!({})).await;
    for hwid in ["old-1", "old-2"] {
        assert_eq!(t.post("/v1/activate", &device(&key, hwid)).await.status, 200);
        t.set_lease_end(&key, hwid, now() - 1).await;
    }
    let newcomers = (0..10).map(|i| device(&key, &format!("new-{i}")));
    let requests: Vec<(&str, Value)> = [("/v1/check", device(&key, "old-1")), ("/v1/check", device(&key, "old-2"))]
        .into_iter()
        .chain(newcomers.map(|body| ("/v1/activate", body)))
        .collect();
    let answers = join_all(requests.iter().map(|(path, body)| t.post(path, body))).await;
    let holders: Vec<&str> = answers
        .iter()
        .zip(&requests)
        .filter(|(a, _)| a.status == 200 && a.body["valid"] != json!(false))
        .map(|(_, (_, body))| body["hardware_id"].as_str().unwrap())
        .collect();
    let outcomes: Vec<String> =
        answers.iter().map(|a| format!("{} {}{}", a.status, a.body["code"], a.error_code())).collect();
    assert_eq!(holders.len(), 2, "{outcomes:?}");
    let stored = t.stored(&key).await;
    let mut holders = holders;
    holders.sort_unstable();
    assert_eq!(leases(&stored, "live"), holders);
    assert_eq!(stored["floating"]["seats_held"], 2);
}

#[tokio::test]
async fn floating_operations_make_the_expected_round_trips() {
    let t = TestApp::spawn().await;
    let key = floating(&t, 2, json!({})).await;
    let start = t.round_trips();
    assert_eq!(t.post("/v1/activate", &device(&key, "pc-1")).await.status, 200);
    // A heartbeat in the same second as the activation would have nothing to move.
    t.set_lease_end(&key, "pc-1", now() + MINUTE).await;
    let activated = t.round_trips();
    check(&t, &key, "pc-1").await;
    let checked = t.round_trips();
    assert_eq!(t.post("/v1/deactivate", &device(&key, "pc-1")).await.status, 200);
    assert_eq!(activated - start, 2, "activate: one BatchGetItem of license and device, one transaction");
    assert_eq!(checked - activated, 2, "check: one BatchGetItem, one conditional renewal");
    assert_eq!(t.round_trips() - checked, 2, "deactivate: one read, one transaction");
}

#[tokio::test]
async fn a_vendor_patch_keeps_the_leases_and_floating_limits_hold() {
    let t = TestApp::spawn().await;
    let key = floating(&t, 2, json!({})).await;
    assert_eq!(t.post("/v1/activate", &device(&key, "pc-1")).await.status, 200);
    let patched = t.admin_patch(&format!("/v1/licenses/{key}"), &json!({"metadata": {"seat": "x"}})).await;
    assert_eq!(patched.status, 200, "{}", patched.body);
    assert_eq!(leases(&t.stored(&key).await, "live"), ["pc-1"]);
    let unlimited = t.admin_patch(&format!("/v1/licenses/{key}"), &json!({"allow_unlimited_activations": true})).await;
    assert_eq!(
        (unlimited.status, unlimited.body["error"]["field"].clone()),
        (400, json!("allow_unlimited_activations"))
    );
    // Lowering the seats below the leases in use keeps the live ones and admits nobody new.
    assert_eq!(t.post("/v1/activate", &device(&key, "pc-2")).await.status, 200);
    assert_eq!(t.admin_patch(&format!("/v1/licenses/{key}"), &json!({"max_activations": 1})).await.status, 200);
    assert_eq!(check(&t, &key, "pc-2").await["code"], "VALID");
    assert_eq!(t.post("/v1/activate", &device(&key, "pc-3")).await.error_code(), "ACTIVATION_LIMIT_REACHED");
    t.set_lease_end(&key, "pc-1", now() - 1).await;
    t.set_lease_end(&key, "pc-2", now() - 1).await;
    assert_eq!(t.post("/v1/activate", &device(&key, "pc-3")).await.status, 200, "both lapsed entries make room");
    let partition = stored_partition(&t, &key).await;
    assert_eq!(partition.leases().keys().collect::<Vec<_>>(), ["pc-3"]);
    assert_eq!(partition.leases_held(), 1);
}

#[tokio::test]
async fn a_borrow_after_a_lapse_needs_a_free_seat_and_bad_terms_are_refused_at_issue() {
    let t = TestApp::spawn().await;
    let key = floating(&t, 1, json!({"can_borrow": true, "max_borrow_hours": 24})).await;
    let borrow =
        |hwid: &str, hours: u32| json!({"license_key": key, "product": "editor", "hardware_id": hwid, "hours": hours});
    assert_eq!(t.post("/v1/activate", &device(&key, "pc-1")).await.status, 200);
    let zero = t.post("/v1/borrow", &borrow("pc-1", 0)).await;
    assert_eq!((zero.status, zero.body["error"]["field"].clone()), (400, json!("hours")));
    t.set_lease_end(&key, "pc-1", now() - 1).await;
    assert_eq!(t.post("/v1/activate", &device(&key, "pc-2")).await.status, 200, "takes the lapsed seat");
    let refused = t.post("/v1/borrow", &borrow("pc-1", 2)).await;
    assert_eq!((refused.status, refused.error_code()), (409, "ACTIVATION_LIMIT_REACHED"));
    assert_eq!(leases(&t.stored(&key).await, "live"), ["pc-2"], "the refusal changed nothing");

    for (terms, field) in [
        (json!({"is_floating": true, "can_borrow": true}), "max_borrow_hours"),
        (json!({"is_floating": true, "max_activations": 100_001}), "max_activations"),
        (json!({"is_floating": true, "allow_unlimited_activations": true}), "allow_unlimited_activations"),
    ] {
        let mut body = json!({"product": "editor", "license_type": "perpetual", "max_activations": 1});
        body.as_object_mut().unwrap().extend(terms.as_object().cloned().unwrap());
        let refused = t.admin_post("/v1/licenses", &body).await;
        assert_eq!((refused.status, refused.body["error"]["field"].clone()), (400, json!(field)), "{terms}");
    }
}

#[tokio::test]
async fn a_floating_check_records_a_stale_sighting_too() {
    let t = TestApp::spawn().await;
    let key = floating(&t, 1, json!({})).await;
    assert_eq!(t.post("/v1/activate", &device(&key, "pc-1")).await.status, 200);
    t.set_last_seen(&key, "pc-1", now() - 2 * HOUR).await;
    check(&t, &key, "pc-1").await;
    let seen = t.stored(&key).await["devices"][0]["last_seen_at"].clone();
    assert!(unix(&seen) >= now() - 60, "last seen {seen}");
}
