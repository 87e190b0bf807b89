//! Trials through HTTP against DynamoDB Local: the vendor's terms, one trial per device.

use keygate_tests::{claims, device, join_all, TestApp};
use serde_json::{json, Value};

async fn set_terms(t: &TestApp, product: &str, terms: Value) -> u16 {
    let body = terms.to_string().into_bytes();
    let answer = t.request("PUT", &format!("/v1/products/{product}/trial"), body, true).await;
    answer.status
}

fn trial(hwid: &str) -> Value {
    json!({"product": "editor", "hardware_id": hwid, "email": "eve@example.com"})
}

#[tokio::test]
async fn a_trial_issues_an_activated_trial_license_on_the_vendors_terms() {
    let t = TestApp::spawn().await;
    let none = t.post("/v1/trial", &trial("pc-1")).await;
    assert_eq!((none.status, none.error_code()), (404, "TRIAL_NOT_AVAILABLE"));
    let terms = json!({"days": 14, "max_activations": 1, "features": [{"code": "export", "max_consumptions": 3}]});
    assert_eq!(set_terms(&t, "editor", terms).await, 200);

    let started = t.post("/v1/trial", &trial("pc-1")).await;
    assert_eq!(started.status, 201, "{}", started.body);
    let license = &started.body["license"];
    assert_eq!((license["license_type"].clone(), license["is_trial"].clone()), (json!("trial"), json!(true)));
    let token = claims(started.body["token"].as_str().unwrap());
    assert_eq!((token["valid"].clone(), token["features"].clone()), (json!(true), json!(["export"])));
    let expiry = token["license_expires_at"].as_i64().unwrap();
    assert_eq!(expiry - token["iat"].as_i64().unwrap(), 14 * 86_400, "14 days from its activation");

    let key = license["license_key"].as_str().unwrap();
    let checked = t.post("/v1/check", &device(key, "pc-1")).await;
    assert_eq!(checked.body["code"], "VALID");
    assert_eq!(t.post("/v1/activate", &device(key, "pc-2")).await.error_code(), "ACTIVATION_LIMIT_REACHED");
    let listed = t.admin_get("/v1/licenses?trial_email=eve@example.com").await;
    assert_eq!(listed.body["licenses"].as_array().unwrap().len(), 1, "the vendor finds it by its trial e-mail");

    let again = t.post("/v1/trial", &trial("pc-1")).await;
    assert_eq!((again.status, again.error_code()), (409, "TRIAL_ALREADY_USED"));
    assert_eq!(t.post("/v1/trial", &trial("pc-2")).await.status, 201, "another device has its own trial");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_concurrent_trial_requests_from_one_device_start_one_trial() {
    let t = TestApp::spawn().await;
    assert_eq!(set_terms(&t, "editor", json!({"days": 7})).await, 200);
    let body = trial("racer");
    let answers = join_all((0..10).map(|_| t.post("/v1/trial", &body))).await;
    let started = answers.iter().filter(|a| a.status == 201).count();
    let refused: Vec<&str> = answers.iter().filter(|a| a.status != 201).map(|a| a.error_code()).collect();
    assert_eq!(started, 1, "{refused:?}");
    assert!(refused.iter().all(|c| *c == "TRIAL_ALREADY_USED"), "{refused:?}");
    let listed = t.admin_get("/v1/licenses?trial_email=eve@example.com").await;
    assert_eq!(listed.body["licenses"].as_array().unwrap().len(), 1, "no orphan license was written");
}

#[tokio::test]
async fn trial_terms_are_vendor_only_and_validated() {
    let t = TestApp::spawn().await;
    let anonymous =
        t.request("PUT", "/v1/products/editor/trial", json!({"days": 7}).to_string().into_bytes(), false).await;
    assert_eq!(anonymous.status, 401);
    for (terms, field) in [
        (json!({"days": 0}), "days"),
        (json!({"days": 400}), "days"),
        (json!({"days": 7, "max_activations": 0}), "max_activations"),
        (json!({"days": 7, "extra": 1}), "extra"),
    ] {
        let answer = t.request("PUT", "/v1/products/editor/trial", terms.to_string().into_bytes(), true).await;
        assert_eq!((answer.status, answer.body["error"]["field"].clone()), (400, json!(field)), "{terms}");
    }
    assert_eq!(t.post("/v1/trial", &trial("pc-1")).await.error_code(), "TRIAL_NOT_AVAILABLE", "nothing was stored");
}
