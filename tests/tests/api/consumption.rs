//! Consumption metering and feature entitlements through HTTP against DynamoDB Local. A new period
//! is made by moving the stored counter's period back, as time would.

use keygate_tests::{claims, device, join_all, TestApp};
use serde_json::{json, Value};

fn consume(key: &str, hwid: &str, amount: u64) -> Value {
    json!({"license_key": key, "product": "editor", "hardware_id": hwid, "amount": amount})
}

fn consume_feature(key: &str, feature: &str, amount: u64) -> Value {
    json!({"license_key": key, "product": "editor", "hardware_id": "pc-1", "feature": feature, "amount": amount})
}

async fn activated(t: &TestApp, terms: Value) -> String {
    let key = t.issue(terms).await;
    assert_eq!(t.post("/v1/activate", &device(&key, "pc-1")).await.status, 200);
    key
}

async fn stored_counter(t: &TestApp, key: &str, counter: &str) -> Value {
    t.stored(key).await["license"]["consumption"][counter].clone()
}

#[tokio::test]
async fn consumption_is_refused_past_the_limit_and_its_overages() {
    let t = TestApp::spawn().await;
    let key = activated(
        &t,
        json!({"license_type": "consumption", "max_consumptions": 10, "allow_overages": true, "max_overages": 2}),
    )
    .await;
    let first = t.post("/v1/consume", &consume(&key, "pc-1", 8)).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(
        (first.body["total_consumptions"].clone(), first.body["limit"].clone(), first.body["remaining"].clone()),
        (json!(8), json!(12), json!(4))
    );
    assert_eq!(first.body["overage"], false);
    let over = t.post("/v1/consume", &consume(&key, "pc-1", 4)).await;
    assert_eq!((over.body["total_consumptions"].clone(), over.body["overage"].clone()), (json!(12), json!(true)));
    let refused = t.post("/v1/consume", &consume(&key, "pc-1", 1)).await;
    assert_eq!((refused.status, refused.error_code()), (409, "CONSUMPTION_LIMIT_REACHED"));
    assert_eq!(stored_counter(&t, &key, "*").await["used"], 12, "the refusal changed nothing");
    let checked = t.post("/v1/check", &device(&key, "pc-1")).await;
    assert_eq!(checked.body["license"]["total_consumptions"], 12);

    let strict = activated(&t, json!({"max_consumptions": 5})).await;
    assert_eq!(t.post("/v1/consume", &consume(&strict, "pc-1", 5)).await.status, 200);
    assert_eq!(t.post("/v1/consume", &consume(&strict, "pc-1", 1)).await.error_code(), "CONSUMPTION_LIMIT_REACHED");
}

#[tokio::test]
async fn counters_start_again_in_a_new_period() {
    let t = TestApp::spawn().await;
    let key = activated(&t, json!({"max_consumptions": 3, "consumption_period": "month"})).await;
    let used = t.post("/v1/consume", &consume(&key, "pc-1", 3)).await;
    assert_eq!(used.status, 200, "{}", used.body);
    assert!(used.body["resets_at"].as_str().unwrap().ends_with("-01T00:00:00Z"));
    assert_eq!(t.post("/v1/consume", &consume(&key, "pc-1", 1)).await.error_code(), "CONSUMPTION_LIMIT_REACHED");
    t.set_counter_period(&key, "*", "2000-01").await;
    let next_month = t.post("/v1/consume", &consume(&key, "pc-1", 2)).await;
    assert_eq!(next_month.status, 200, "{}", next_month.body);
    assert_eq!(next_month.body["total_consumptions"], 2);
    let counter = stored_counter(&t, &key, "*").await;
    assert_ne!(counter["period"], "2000-01");
    assert_eq!(counter["used"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_consumers_never_overshoot() {
    let t = TestApp::spawn().await;
    let key = activated(&t, json!({"max_consumptions": 50})).await;
    let body = consume(&key, "pc-1", 3);
    let answers = join_all((0..20).map(|_| t.post("/v1/consume", &body))).await;
    let ok = answers.iter().filter(|a| a.status == 200).count() as u64;
    let refused: Vec<&str> = answers.iter().filter(|a| a.status != 200).map(|a| a.error_code()).collect();
    assert!(refused.iter().all(|c| matches!(*c, "CONSUMPTION_LIMIT_REACHED" | "CONCURRENT_UPDATE")), "{refused:?}");
    let used = stored_counter(&t, &key, "*").await["used"].as_u64().unwrap();
    assert_eq!(used, 3 * ok, "every acknowledged consumption is counted, and nothing else");
    assert!(used <= 50, "overshot: {used}");
    assert_eq!(ok, 16, "all that fit were taken: {refused:?}");
}

#[tokio::test]
async fn features_have_their_own_expiry_and_consumption() {
    let t = TestApp::spawn().await;
    let features = json!([
        {"code": "export", "max_consumptions": 2},
        {"code": "beta", "expiry_date": "2001-01-01"},
        {"code": "sync"}
    ]);
    let key = activated(&t, json!({"features": features})).await;
    let ask =
        |feature: &str| json!({"license_key": key, "product": "editor", "hardware_id": "pc-1", "feature": feature});
    let usable = t.post("/v1/check", &ask("export")).await;
    assert_eq!(
        (usable.body["feature"]["usable"].clone(), usable.body["feature"]["remaining"].clone()),
        (json!(true), json!(2))
    );
    let consumed = t.post("/v1/consume", &consume_feature(&key, "export", 2)).await;
    assert_eq!((consumed.status, consumed.body["feature"].clone()), (200, json!("export")));
    assert_eq!(
        t.post("/v1/consume", &consume_feature(&key, "export", 1)).await.error_code(),
        "CONSUMPTION_LIMIT_REACHED"
    );
    assert_eq!(t.post("/v1/consume", &consume_feature(&key, "beta", 1)).await.error_code(), "FEATURE_EXPIRED");
    assert_eq!(t.post("/v1/consume", &consume_feature(&key, "print", 1)).await.error_code(), "FEATURE_NOT_ENTITLED");

    for (feature, reason) in
        [("export", "CONSUMPTION_LIMIT_REACHED"), ("beta", "FEATURE_EXPIRED"), ("print", "NOT_ENTITLED")]
    {
        let checked = t.post("/v1/check", &ask(feature)).await;
        assert_eq!(checked.status, 200, "{}", checked.body);
        assert_eq!(checked.body["valid"], true, "the license itself stays valid");
        assert_eq!(
            (checked.body["feature"]["usable"].clone(), checked.body["feature"]["reason"].clone()),
            (json!(false), json!(reason)),
            "{feature}"
        );
        let token = claims(checked.body["token"].as_str().unwrap());
        assert_eq!(token["feature"], json!({"code": feature, "usable": false}));
    }
    let checked = t.get(&format!("/v1/check?license_key={key}&product=editor&hardware_id=pc-1&feature=sync")).await;
    let token = claims(checked.body["token"].as_str().unwrap());
    assert_eq!(token["feature"], json!({"code": "sync", "usable": true}));
    assert_eq!(token["features"], json!(["export", "sync"]), "an expired feature is not listed");
    // The license's own counter is apart from the features'.
    assert_eq!(checked.body["license"]["total_consumptions"], 0);
}

#[tokio::test]
async fn consumption_needs_an_activated_device_and_a_sound_amount() {
    let t = TestApp::spawn().await;
    let key = activated(&t, json!({"max_consumptions": 5})).await;
    let unknown = t.post("/v1/consume", &consume(&key, "pc-9", 1)).await;
    assert_eq!((unknown.status, unknown.error_code()), (404, "DEVICE_NOT_FOUND"));
    for amount in [json!(0), json!(-1), json!("3"), json!(1.5)] {
        let body = json!({"license_key": key, "product": "editor", "hardware_id": "pc-1", "amount": amount});
        let refused = t.post("/v1/consume", &body).await;
        assert_eq!((refused.status, refused.body["error"]["field"].clone()), (400, json!("amount")), "{amount}");
    }
    let bad_terms = t
        .admin_post(
            "/v1/licenses",
            &json!({"product": "editor", "license_type": "consumption", "max_activations": 1, "max_consumptions": 5, "max_overages": 2}),
        )
        .await;
    assert_eq!((bad_terms.status, bad_terms.body["error"]["field"].clone()), (400, json!("max_overages")));
}

#[tokio::test]
async fn a_vendor_patch_keeps_the_counters() {
    let t = TestApp::spawn().await;
    let key = activated(&t, json!({"max_consumptions": 5})).await;
    assert_eq!(t.post("/v1/consume", &consume(&key, "pc-1", 4)).await.status, 200);
    let patched = t.admin_patch(&format!("/v1/licenses/{key}"), &json!({"max_consumptions": 6})).await;
    assert_eq!(patched.status, 200, "{}", patched.body);
    assert_eq!(stored_counter(&t, &key, "*").await["used"], 4);
    assert_eq!(t.post("/v1/consume", &consume(&key, "pc-1", 2)).await.body["remaining"], 0);
}

#[tokio::test]
async fn consumption_refusals_at_issue_patch_and_use() {
    let t = TestApp::spawn().await;
    let base = json!({"product": "editor", "license_type": "consumption", "max_activations": 1});
    for (terms, field) in [
        (json!({"features": [{"code": "x", "max_consumptions": 3, "max_overages": 1}]}), "features[0].max_overages"),
        (json!({"max_consumptions": 1_000_000_000_001u64}), "max_consumptions"),
    ] {
        let mut body = base.clone();
        body.as_object_mut().unwrap().extend(terms.as_object().cloned().unwrap());
        let refused = t.admin_post("/v1/licenses", &body).await;
        assert_eq!((refused.status, refused.body["error"]["field"].clone()), (400, json!(field)), "{terms}");
    }
    let key = activated(&t, json!({"max_consumptions": 5})).await;
    let patch = t.admin_patch(&format!("/v1/licenses/{key}"), &json!({"max_overages": 2})).await;
    assert_eq!((patch.status, patch.body["error"]["field"].clone()), (400, json!("max_overages")));
    assert_eq!(t.stored(&key).await["license"].get("max_overages"), None, "the refused patch changed nothing");

    let other_product = json!({"license_key": key, "product": "other", "hardware_id": "pc-1", "amount": 1});
    assert_eq!(t.post("/v1/consume", &other_product).await.error_code(), "PRODUCT_MISMATCH");
    assert_eq!(t.admin_patch(&format!("/v1/licenses/{key}"), &json!({"status": "suspended"})).await.status, 200);
    let suspended = t.post("/v1/consume", &consume(&key, "pc-1", 1)).await;
    assert_eq!((suspended.status, suspended.error_code()), (403, "LICENSE_SUSPENDED"));
    assert_eq!(t.stored(&key).await["license"].get("consumption"), None, "nothing was counted");
}
