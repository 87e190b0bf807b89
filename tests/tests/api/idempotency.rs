//! Safe retries of client writes through HTTP against DynamoDB Local: with an `Idempotency-Key`,
//! a retry (after a timeout, a reset, a 503) returns the first answer and acts once, whatever
//! raced it; the key with another request is refused; keys of one license never meet another's.

use keygate_tests::{device, join_all, offline_request, stored_partition, Answer, TestApp};
use serde_json::{json, Value};

async fn keyed(t: &TestApp, path: &str, body: &Value, key: &str) -> Answer {
    t.post_with_headers(path, body, &[("idempotency-key", key)]).await
}

/// Everything stored for a license: the license item and its devices, bound and released.
async fn state(t: &TestApp, key: &str) -> Value {
    let partition = stored_partition(t, key).await;
    json!({"license": partition.license, "devices": partition.devices})
}

struct Case {
    name: &'static str,
    path: &'static str,
    body: Value,
    /// The same key with this request is another request.
    other: Value,
}

/// Each client write, on a license set up for it: (license key, the write).
async fn cases(t: &TestApp) -> Vec<(String, Case)> {
    let metered = t.issue(json!({"max_consumptions": 100})).await;
    assert_eq!(t.post("/v1/activate", &device(&metered, "pc-1")).await.status, 200);
    let consume =
        |amount: u64| json!({"license_key": metered, "product": "editor", "hardware_id": "pc-1", "amount": amount});

    let node_locked = t.issue(json!({"max_activations": 2})).await;
    assert_eq!(t.post("/v1/activate", &device(&node_locked, "pc-gone")).await.status, 200);

    let floating = t
        .issue(json!({"is_floating": true, "max_activations": 2, "floating_timeout_minutes": 10, "can_borrow": true,
            "max_borrow_hours": 48}))
        .await;
    assert_eq!(t.post("/v1/activate", &device(&floating, "pc-1")).await.status, 200);
    let borrow =
        |hours: u32| json!({"license_key": floating, "product": "editor", "hardware_id": "pc-1", "hours": hours});

    let offline = t.issue(json!({"max_activations": 2})).await;
    let offline_gone = t.issue(json!({"max_activations": 2})).await;
    let file = offline_request(&offline_gone, "air-1", "activate", "n-0");
    assert_eq!(t.post("/v1/activate/offline", &file).await.status, 200);

    vec![
        (metered.clone(), Case { name: "consume", path: "/v1/consume", body: consume(7), other: consume(8) }),
        (
            node_locked.clone(),
            Case {
                name: "activate",
                path: "/v1/activate",
                body: device(&node_locked, "pc-new"),
                other: device(&node_locked, "pc-other"),
            },
        ),
        (
            node_locked.clone(),
            Case {
                name: "deactivate",
                path: "/v1/deactivate",
                body: device(&node_locked, "pc-gone"),
                other: device(&node_locked, "pc-new"),
            },
        ),
        (floating.clone(), Case { name: "borrow", path: "/v1/borrow", body: borrow(24), other: borrow(25) }),
        (
            offline.clone(),
            Case {
                name: "offline activation",
                path: "/v1/activate/offline",
                body: offline_request(&offline, "air-2", "activate", "n-1"),
                other: offline_request(&offline, "air-3", "activate", "n-2"),
            },
        ),
        (
            offline_gone.clone(),
            Case {
                name: "offline deactivation",
                path: "/v1/deactivate/offline",
                body: offline_request(&offline_gone, "air-1", "deactivate", "n-3"),
                other: offline_request(&offline_gone, "air-9", "deactivate", "n-4"),
            },
        ),
    ]
}

/// Fails on the code before client writes took a key: a retried consume counted twice, a
/// retried deactivation answered 404, a retried borrow or activation answered anew.
#[tokio::test]
async fn a_retried_client_write_returns_the_first_answer_and_acts_once() {
    let t = TestApp::spawn().await;
    for (license, case) in cases(&t).await {
        let name = case.name;
        let retry_key = format!("retry-{}", name.replace(' ', "-"));
        let first = keyed(&t, case.path, &case.body, &retry_key).await;
        assert!(first.status < 300, "{name}: {}", first.body);
        let after_first = state(&t, &license).await;
        for _ in 0..2 {
            let retry = keyed(&t, case.path, &case.body, &retry_key).await;
            assert_eq!((retry.status, &retry.body), (first.status, &first.body), "{name}: the first answer again");
            assert_eq!(state(&t, &license).await, after_first, "{name}: a retry changes nothing");
        }
        let reused = keyed(&t, case.path, &case.other, &retry_key).await;
        assert_eq!((reused.status, reused.error_code()), (409, "IDEMPOTENCY_KEY_REUSED"), "{name}");
        assert_eq!(state(&t, &license).await, after_first, "{name}: a reused key changes nothing");
    }
    // One key on one license names one request, whichever route it was sent to.
    let key = t.issue(json!({})).await;
    assert_eq!(keyed(&t, "/v1/activate", &device(&key, "pc-1"), "one-key").await.status, 200);
    let elsewhere = keyed(&t, "/v1/deactivate", &device(&key, "pc-1"), "one-key").await;
    assert_eq!((elsewhere.status, elsewhere.error_code()), (409, "IDEMPOTENCY_KEY_REUSED"));
}

#[tokio::test]
async fn a_retried_trial_returns_the_first_trial_and_a_key_is_scoped_to_its_product() {
    let t = TestApp::spawn().await;
    let terms = json!({"days": 14, "max_activations": 1}).to_string().into_bytes();
    assert_eq!(t.request("PUT", "/v1/products/editor/trial", terms, true).await.status, 200);
    let body = json!({"product": "editor", "hardware_id": "pc-1"});
    let first = keyed(&t, "/v1/trial", &body, "trial-1").await;
    assert_eq!(first.status, 201, "{}", first.body);
    let retry = keyed(&t, "/v1/trial", &body, "trial-1").await;
    assert_eq!((retry.status, &retry.body), (201, &first.body), "the same trial, not TRIAL_ALREADY_USED");
    let unkeyed = t.post("/v1/trial", &body).await;
    assert_eq!((unkeyed.status, unkeyed.error_code()), (409, "TRIAL_ALREADY_USED"));
    let changed = json!({"product": "editor", "hardware_id": "pc-1", "email": "eve@example.com"});
    let reused = keyed(&t, "/v1/trial", &changed, "trial-1").await;
    assert_eq!((reused.status, reused.error_code()), (409, "IDEMPOTENCY_KEY_REUSED"));
    // Another device's key never meets this one's (a guessed key reveals and blocks nothing).
    let other = keyed(&t, "/v1/trial", &json!({"product": "editor", "hardware_id": "pc-2"}), "trial-1").await;
    assert_eq!(other.status, 201, "{}", other.body);
    assert_ne!(other.body["license"]["license_key"], first.body["license"]["license_key"]);
}

/// A receipt past its TTL is gone even before DynamoDB deletes it (TTL deletion may lag by days):
/// the key then names a new request. Found by review: the old receipt kept answering and refusing.
#[tokio::test]
async fn a_receipt_past_its_ttl_answers_nothing() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let t = TestApp::spawn().await;
    let key = t.issue(json!({"max_consumptions": 100})).await;
    assert_eq!(t.post("/v1/activate", &device(&key, "pc-1")).await.status, 200);
    let consume =
        |amount: u64| json!({"license_key": key, "product": "editor", "hardware_id": "pc-1", "amount": amount});
    assert_eq!(keyed(&t, "/v1/consume", &consume(2), "old-key").await.body["total_consumptions"], 2);
    t.app
        .store
        .client()
        .update_item()
        .table_name(t.app.store.table())
        .key("PK", AttributeValue::S(format!("R#L#{key}#old-key")))
        .key("SK", AttributeValue::S("R".into()))
        .update_expression("SET #ttl = :past")
        .expression_attribute_names("#ttl", "ttl")
        .expression_attribute_values(":past", AttributeValue::N("1000".into()))
        .send()
        .await
        .expect("the receipt is where the store keeps it");
    let again = keyed(&t, "/v1/consume", &consume(3), "old-key").await;
    assert_eq!((again.status, again.body["total_consumptions"].clone()), (200, json!(5)), "{}", again.body);
    let replayed = keyed(&t, "/v1/consume", &consume(3), "old-key").await;
    assert_eq!(replayed.body, again.body, "the new receipt answers retries of the new request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_retries_act_once_and_all_get_the_one_answer() {
    let t = TestApp::spawn().await;
    let key = t.issue(json!({"max_consumptions": 100, "max_activations": 3})).await;
    assert_eq!(t.post("/v1/activate", &device(&key, "pc-1")).await.status, 200);
    let consume = json!({"license_key": key, "product": "editor", "hardware_id": "pc-1", "amount": 5});
    let answers = join_all((0..12).map(|_| keyed(&t, "/v1/consume", &consume, "burst-1"))).await;
    assert!(answers.iter().all(|a| (a.status, &a.body) == (200, &answers[0].body)), "{:?}", answers[0].body);
    assert_eq!(t.stored(&key).await["license"]["consumption"]["*"]["used"], 5, "counted once");

    let release = device(&key, "pc-1");
    let answers = join_all((0..12).map(|_| keyed(&t, "/v1/deactivate", &release, "burst-2"))).await;
    assert!(answers.iter().all(|a| (a.status, &a.body) == (200, &answers[0].body)), "{:?}", answers[0].body);
    let stored = t.stored(&key).await["license"].clone();
    assert_eq!((stored["times_activated"].clone(), stored["transfer_count"].clone()), (json!(0), json!(1)));
}

#[tokio::test]
async fn keys_are_scoped_to_their_license_and_refusals_store_nothing() {
    let t = TestApp::spawn().await;
    let (one, two) = (t.issue(json!({"max_activations": 1})).await, t.issue(json!({"max_activations": 1})).await);
    for key in [&one, &two] {
        let answer = keyed(&t, "/v1/activate", &device(key, "pc-1"), "same-key").await;
        assert_eq!(answer.status, 200, "another license's key never meets this one: {}", answer.body);
    }
    // A refusal stores no answer: once a seat is free, the same request with the same key acts.
    let full = keyed(&t, "/v1/activate", &device(&one, "pc-2"), "seat-key").await;
    assert_eq!((full.status, full.error_code()), (409, "ACTIVATION_LIMIT_REACHED"));
    assert_eq!(t.admin_delete(&format!("/v1/licenses/{one}/devices/pc-1")).await.status, 200);
    let later = keyed(&t, "/v1/activate", &device(&one, "pc-2"), "seat-key").await;
    assert_eq!(later.status, 200, "{}", later.body);
    let bad = t.post_with_headers("/v1/consume", &json!({}), &[("idempotency-key", "")]).await;
    assert_eq!((bad.status, bad.body["error"]["field"].as_str()), (400, Some("Idempotency-Key")));
}
