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
