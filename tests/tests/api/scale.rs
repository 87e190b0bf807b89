//! Cost that does not grow with the license: what an operation reads and writes is the same on a
//! license with one device as on one with hundreds.

use crate::units_of;

use keygate_tests::{device, TestApp};
use serde_json::json;

/// Activates `count` devices `{prefix}-{i}` on `key`.
async fn bind(t: &TestApp, key: &str, prefix: &str, count: usize) {
    for i in 0..count {
        let answer = t.post("/v1/activate", &device(key, &format!("{prefix}-{i}"))).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
}

#[tokio::test]
async fn an_activation_costs_the_same_on_a_license_with_hundreds_of_devices() {
    let t = TestApp::spawn().await;
    let small = t.issue(json!({"allow_unlimited_activations": true, "max_activations": 0})).await;
    let large = t.issue(json!({"allow_unlimited_activations": true, "max_activations": 0})).await;
    bind(&t, &large, "pc", 300).await;
    let trips = t.round_trips();
    let on_small = units_of(&t, t.post("/v1/activate", &device(&small, "new"))).await;
    let between = t.round_trips();
    let on_large = units_of(&t, t.post("/v1/activate", &device(&large, "new"))).await;
    assert_eq!(on_large, on_small, "the same units with 300 devices as with none");
    assert_eq!((between - trips, t.round_trips() - between), (2, 2));
}

#[tokio::test]
async fn a_rotation_reads_a_bounded_number_of_devices_and_replaces_the_least_recently_seen() {
    let t = TestApp::spawn().await;
    let seats = 60;
    let key = t.issue(json!({"max_activations": seats, "device_rotation": true, "release_allowance": 0})).await;
    bind(&t, &key, "pc", seats as usize).await;
    // All were seen, pc-0 first; every credential has lapsed except pc-0's.
    let base = keygate::time::Timestamp::now().unix() - 86_400;
    for i in 0..seats {
        let hwid = format!("pc-{i}");
        t.set_last_seen(&key, &hwid, base + i64::from(i) * 60).await;
        if i > 0 {
            t.expire_credentials(&key, &hwid).await;
        }
    }
    let before = t.round_trips();
    let (reads, _) = units_of(&t, t.post("/v1/activate", &device(&key, "newcomer"))).await;
    assert_eq!(t.round_trips() - before, 3, "license and device, the rotation's candidates, one transaction");
    assert!(
        reads < 10.0,
        "read {reads} units: {} candidates, not {seats} devices",
        keygate::rules::ROTATION_CANDIDATES
    );
    let stored = t.stored(&key).await;
    let bound: Vec<&str> =
        stored["devices"].as_array().unwrap().iter().filter_map(|d| d["hardware_id"].as_str()).collect();
    assert!(bound.contains(&"newcomer") && bound.contains(&"pc-0"), "pc-0 can still run: kept");
    assert!(!bound.contains(&"pc-1"), "the least recently seen device whose credential lapsed is replaced");
    assert_eq!(bound.len(), seats as usize);
}

#[tokio::test]
async fn a_license_shows_its_devices_a_page_at_a_time_and_one_by_hardware_id() {
    let t = TestApp::spawn().await;
    let key = t.issue(json!({"allow_unlimited_activations": true, "max_activations": 0})).await;
    bind(&t, &key, "pc", 250).await;
    assert_eq!(t.post("/v1/deactivate", &device(&key, "pc-7")).await.status, 200);
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let query = cursor.as_ref().map(|c| format!("&cursor={c}")).unwrap_or_default();
        let page = t.admin_get(&format!("/v1/licenses/{key}?limit=100{query}")).await;
        assert_eq!(page.status, 200, "{}", page.body);
        pages += 1;
        let devices = page.body["devices"].as_array().unwrap();
        assert!(devices.len() <= 100);
        seen.extend(devices.iter().map(|d| d["hardware_id"].as_str().unwrap().to_string()));
        assert_eq!(page.body["usage"]["seats_used"], 249, "the whole license's usage on every page");
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    let mut expected: Vec<String> = (0..250).filter(|i| *i != 7).map(|i| format!("pc-{i}")).collect();
    expected.sort();
    assert_eq!((pages, seen), (3, expected), "every bound device once, in hardware id order; pc-7 was released");

    let default = t.admin_get(&format!("/v1/licenses/{key}")).await;
    assert_eq!(default.body["devices"].as_array().unwrap().len(), 100, "a page by default, never the whole list");
    let one = t.admin_get(&format!("/v1/licenses/{key}?hardware_id=pc-42")).await;
    let ids: Vec<&str> =
        one.body["devices"].as_array().unwrap().iter().filter_map(|d| d["hardware_id"].as_str()).collect();
    assert_eq!((ids, one.body["next_cursor"].clone()), (vec!["pc-42"], json!(null)));
    let gone = t.admin_get(&format!("/v1/licenses/{key}?hardware_id=pc-7")).await;
    assert_eq!(gone.body["devices"], json!([]), "a released device is not listed");
    for bad in ["cursor=%21%21", "limit=0", "limit=1001", "hardware_id=pc-1&limit=5"] {
        let refused = t.admin_get(&format!("/v1/licenses/{key}?{bad}")).await;
        assert_eq!(refused.status, 400, "{bad}: {}", refused.body);
    }
}

/// Activates `count` devices `{prefix}-{i}` on `key`, twenty at a time.
async fn bind_concurrently(t: &TestApp, key: &str, prefix: &str, count: usize) {
    let bodies: Vec<serde_json::Value> = (0..count).map(|i| device(key, &format!("{prefix}-{i}"))).collect();
    for chunk in bodies.chunks(20) {
        let answers = keygate_tests::join_all(chunk.iter().map(|b| t.post("/v1/activate", b))).await;
        assert!(answers.iter().all(|a| a.status == 200), "{:?}", answers.iter().map(|a| &a.body).collect::<Vec<_>>());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_heartbeat_costs_the_same_in_a_pool_of_hundreds_of_leases_as_alone() {
    let t = TestApp::spawn().await;
    let small = t.issue(json!({"is_floating": true, "max_activations": 400})).await;
    let large = t.issue(json!({"is_floating": true, "max_activations": 400})).await;
    bind_concurrently(&t, &small, "pc", 1).await;
    bind_concurrently(&t, &large, "pc", 300).await;
    let trips = t.round_trips();
    let on_small = units_of(&t, t.post("/v1/check", &device(&small, "pc-0"))).await;
    let between = t.round_trips();
    let on_large = units_of(&t, t.post("/v1/check", &device(&large, "pc-0"))).await;
    assert_eq!(on_large, on_small, "the same units with 300 leases as with one");
    assert_eq!((between - trips, t.round_trips() - between), (2, 2), "license and device, the lease's renewal");
    // A new device taking a free seat: the same too.
    let on_small = units_of(&t, t.post("/v1/activate", &device(&small, "new"))).await;
    let on_large = units_of(&t, t.post("/v1/activate", &device(&large, "new"))).await;
    assert_eq!(on_large, on_small, "an acquisition: the same units with 300 leases as with one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_takeover_in_a_full_pool_reads_a_bounded_number_of_leases() {
    let t = TestApp::spawn().await;
    let seats = 200;
    let key = t.issue(json!({"is_floating": true, "max_activations": seats})).await;
    bind_concurrently(&t, &key, "pc", seats).await;
    let lapsed = ["pc-7", "pc-70", "pc-170"];
    for hwid in lapsed {
        t.set_lease_end(&key, hwid, keygate::time::Timestamp::now().unix() - 60).await;
    }
    let before = t.round_trips();
    let (reads, _) = units_of(&t, t.post("/v1/activate", &device(&key, "newcomer"))).await;
    assert_eq!(t.round_trips() - before, 3, "license and device, the lapsed leases, one transaction");
    assert!(reads < 5.0, "read {reads} units: the lapsed leases' keys, not {seats} leases");
    let leases = keygate_tests::stored_partition(&t, &key).await.leases();
    assert_eq!(leases.len(), seats, "one lapsed lease was taken over");
    assert!(leases.contains_key("newcomer"));
    assert_eq!(lapsed.iter().filter(|h| leases.contains_key(**h)).count(), 2);
    assert_eq!(t.post("/v1/activate", &device(&key, "late")).await.status, 200, "another lapsed one");
    for hwid in ["more-1", "more-2"] {
        let refused = t.post("/v1/activate", &device(&key, hwid)).await;
        let allowed = refused.status == 200;
        assert!(allowed == (hwid == "more-1"), "{hwid}: {}", refused.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn newcomers_racing_in_a_large_pool_get_exactly_the_free_and_lapsed_seats() {
    let t = TestApp::spawn().await;
    let seats = 250;
    let key = t.issue(json!({"is_floating": true, "max_activations": seats})).await;
    bind_concurrently(&t, &key, "pc", seats - 5).await;
    let past = keygate::time::Timestamp::now().unix() - 60;
    for i in [3, 33, 133, 200, 244] {
        t.set_lease_end(&key, &format!("pc-{i}"), past).await;
    }
    let racers: Vec<serde_json::Value> = (0..40).map(|i| device(&key, &format!("new-{i}"))).collect();
    let answers = keygate_tests::join_all(racers.iter().map(|b| t.post("/v1/activate", b))).await;
    let refused: Vec<&str> = answers.iter().filter(|a| a.status != 200).map(|a| a.error_code()).collect();
    assert!(refused.iter().all(|c| matches!(*c, "ACTIVATION_LIMIT_REACHED" | "CONCURRENT_UPDATE")), "{refused:?}");
    assert_eq!(answers.len() - refused.len(), 10, "5 free seats and 5 lapsed: {refused:?}");
    let partition = keygate_tests::stored_partition(&t, &key).await;
    let leases = partition.leases();
    assert_eq!((leases.len(), partition.leases_held()), (seats, seats));
    let now = keygate::time::Timestamp::now().unix();
    assert_eq!(leases.values().filter(|end| **end > now).count(), seats, "no live lease was taken");
}
