//! Seat integrity against hostile clients: each test replays one sequence of individually legal
//! calls that used to multiply seats, and asserts what the store and the issued credentials hold.

use keygate_tests::{claims, device, join_all, offline_request, stored_partition, TestApp};
use serde_json::{json, Value};

const DAY: i64 = 86_400;

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// The exp of a token when it carries a valid verdict that is still unexpired.
fn live_valid_exp(token: &str) -> Option<i64> {
    let claims = claims(token);
    (claims["valid"] == true).then(|| claims["exp"].as_i64().unwrap()).filter(|exp| *exp > now())
}

/// Bound devices and the license's seat counter, read from the table itself.
async fn bound_and_counted(t: &TestApp, key: &str) -> (usize, i64) {
    let partition = stored_partition(t, key).await;
    (partition.bound_devices().len(), partition.license["times_activated"].as_i64().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deactivation_racing_a_rotation_never_releases_a_seat_twice() {
    let t = TestApp::spawn().await;
    for round in 0..40 {
        let key = t.issue(json!({"max_activations": 1, "device_rotation": true})).await;
        assert_eq!(t.post("/v1/activate", &device(&key, "old")).await.status, 200);
        let (old, new) = (device(&key, "old"), device(&key, "new"));
        let vendor_release = format!("/v1/licenses/{key}/devices/old");
        let release = async {
            if round % 2 == 0 {
                t.post("/v1/deactivate", &old).await
            } else {
                t.admin_delete(&vendor_release).await
            }
        };
        let _ = tokio::join!(release, t.post("/v1/activate", &new));
        let (bound, counted) = bound_and_counted(&t, &key).await;
        assert_eq!(counted, bound as i64, "round {round}: the seat counter matches the bound devices");
        assert!(bound <= 1, "round {round}: {bound} devices on one seat");
    }
}

#[tokio::test]
async fn online_churn_yields_at_most_the_seats_plus_the_allowance_in_valid_tokens() {
    let t = TestApp::spawn().await;
    let key = t.issue(json!({"max_activations": 1})).await;
    let mut holders = 0;
    for i in 0..5 {
        let activated = t.post("/v1/activate", &device(&key, &format!("pc-{i}"))).await;
        if activated.status == 200 && live_valid_exp(activated.body["token"].as_str().unwrap()).is_some() {
            holders += 1;
        }
        t.post("/v1/deactivate", &device(&key, &format!("pc-{i}"))).await;
    }
    assert_eq!(holders, 2, "one seat plus the default allowance of one released device");
}

#[tokio::test]
async fn offline_activation_and_deactivation_cannot_mint_license_files() {
    let t = TestApp::spawn().await;
    let key = t.issue(json!({"max_activations": 1})).await;
    let mut files = 0;
    for i in 0..5 {
        let request = |kind: &str| offline_request(&key, &format!("air-{i}"), kind, &format!("n-{i}-{kind}"));
        let file = t.post("/v1/activate/offline", &request("activate")).await;
        if file.status == 200 && live_valid_exp(file.body["token"].as_str().unwrap()).is_some() {
            files += 1;
        }
        t.post("/v1/deactivate/offline", &request("deactivate")).await;
    }
    assert_eq!(files, 2, "one seat plus the default allowance");
}

#[tokio::test]
async fn borrowing_then_returning_early_cannot_mint_long_tokens() {
    let t = TestApp::spawn().await;
    let key =
        t.issue(json!({"is_floating": true, "max_activations": 1, "can_borrow": true, "max_borrow_hours": 8760})).await;
    let mut long_tokens = 0;
    for i in 0..4 {
        let hwid = format!("pc-{i}");
        t.post("/v1/activate", &device(&key, &hwid)).await;
        let borrow = json!({"license_key": key, "product": "editor", "hardware_id": hwid, "hours": 8760});
        let borrowed = t.post("/v1/borrow", &borrow).await;
        if borrowed.status == 200 {
            let exp = live_valid_exp(borrowed.body["token"].as_str().unwrap()).unwrap();
            long_tokens += usize::from(exp > now() + DAY);
        }
        t.post("/v1/deactivate", &device(&key, &hwid)).await;
    }
    assert_eq!(long_tokens, 2, "one seat plus the default allowance");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deactivation_racing_a_check_that_retakes_a_lease_leaves_no_orphan_lease() {
    let t = TestApp::spawn().await;
    for round in 0..30 {
        let key = t.issue(json!({"is_floating": true, "max_activations": 2})).await;
        assert_eq!(t.post("/v1/activate", &device(&key, "pc")).await.status, 200);
        // As if its lapsed lease had been taken over: bound, with no lease entry.
        t.remove_lease(&key, "pc").await;
        let body = device(&key, "pc");
        let (_, deactivated) = tokio::join!(t.post("/v1/check", &body), t.post("/v1/deactivate", &body));
        let partition = stored_partition(&t, &key).await;
        let bound = partition.bound_devices().contains(&"pc".to_string());
        let leased = partition.leases().contains_key("pc");
        assert!(bound || !leased, "round {round}: a lease outlives its device ({})", deactivated.body);
    }
}

#[tokio::test]
async fn a_device_whose_lease_lapsed_and_was_taken_cannot_consume() {
    let t = TestApp::spawn().await;
    let key = t.issue(json!({"is_floating": true, "max_activations": 1, "max_consumptions": 10})).await;
    assert_eq!(t.post("/v1/activate", &device(&key, "pc-1")).await.status, 200);
    t.set_lease_end(&key, "pc-1", now() - 1).await;
    assert_eq!(t.post("/v1/activate", &device(&key, "pc-2")).await.status, 200);
    let consume = json!({"license_key": key, "product": "editor", "hardware_id": "pc-1", "amount": 1});
    let refused = t.post("/v1/consume", &consume).await;
    assert_eq!((refused.status, refused.error_code()), (409, "LEASE_EXPIRED"), "{}", refused.body);
    let partition = stored_partition(&t, &key).await;
    assert!(partition.license.get("consumption").is_none(), "nothing was counted");
}

#[tokio::test]
async fn options_without_meaning_for_the_license_kind_are_refused() {
    let t = TestApp::spawn().await;
    let base = json!({"product": "editor", "license_type": "perpetual", "max_activations": 2});
    let cases = [
        (json!({"is_floating": true, "max_transfers": 3}), "max_transfers"),
        (json!({"is_floating": true, "freeze_days": 2}), "freeze_days"),
        (json!({"is_floating": true, "device_rotation": true}), "device_rotation"),
        (json!({"floating_timeout_minutes": 5}), "floating_timeout_minutes"),
        (json!({"max_borrow_hours": 5}), "max_borrow_hours"),
        (json!({"allow_unlimited_activations": true, "device_rotation": true}), "device_rotation"),
        (json!({"allow_unlimited_activations": true, "release_allowance": 2}), "release_allowance"),
    ];
    for (terms, field) in cases {
        let mut body = base.clone();
        body.as_object_mut().unwrap().extend(terms.as_object().unwrap().clone());
        let refused = t.admin_post("/v1/licenses", &body).await;
        assert_eq!((refused.status, refused.body["error"]["field"].clone()), (400, json!(field)), "{terms}");
    }
    let floating = t.issue(json!({"is_floating": true, "max_activations": 2})).await;
    let refused = t.admin_patch(&format!("/v1/licenses/{floating}"), &json!({"max_transfers": 1})).await;
    assert_eq!((refused.status, refused.body["error"]["field"].clone()), (400, json!("max_transfers")));
}

#[tokio::test]
async fn metadata_dynamodb_cannot_store_exactly_is_a_400_naming_the_field() {
    let t = TestApp::spawn().await;
    let key = t.issue(json!({})).await;
    let mut deep = json!("bottom");
    for _ in 0..40 {
        deep = json!({ "a": deep });
    }
    let cases: Vec<(String, &str)> = vec![
        (json!({"metadata": {"deep": deep}}).to_string(), "metadata.deep"),
        (r#"{"metadata": {"big": 1e126}}"#.into(), "metadata.big"),
        (r#"{"metadata": {"tiny": -3e-300}}"#.into(), "metadata.tiny"),
        (r#"{"metadata": {"": 1}}"#.into(), "metadata"),
        (r#"{"metadata": {"nested": {"": true}}}"#.into(), "metadata.nested"),
        (r#"{"metadata": {"long": 12345678901234567890123456789012345678901}}"#.into(), "metadata.long"),
        (r#"{"metadata": {"list": [1, 100000000000000000001]}}"#.into(), "metadata.list[1]"),
    ];
    for (metadata, field) in cases {
        let issue =
            format!(r#"{{"product": "editor", "license_type": "perpetual", "max_activations": 1, {}"#, &metadata[1..]);
        let refused = t.request("POST", "/v1/licenses", issue.into_bytes(), true).await;
        assert_eq!((refused.status, refused.body["error"]["field"].clone()), (400, json!(field)), "POST {metadata}");
        let refused = t.request("PATCH", &format!("/v1/licenses/{key}"), metadata.clone().into_bytes(), true).await;
        assert_eq!((refused.status, refused.body["error"]["field"].clone()), (400, json!(field)), "PATCH {metadata}");
    }
    // What DynamoDB stores exactly is kept exactly.
    let exact = r#"{"metadata": {"n": 0.1, "i": -9223372036854775808, "u": 18446744073709551615, "e": 1e40, "s": ""}}"#;
    let patched = t.request("PATCH", &format!("/v1/licenses/{key}"), exact.as_bytes().to_vec(), true).await;
    assert_eq!(patched.status, 200, "{}", patched.body);
    let stored = t.stored(&key).await;
    let metadata = &stored["license"]["metadata"];
    assert_eq!(metadata["u"].as_u64(), Some(u64::MAX));
    assert_eq!(metadata["i"].as_i64(), Some(i64::MIN));
    assert_eq!(
        (metadata["n"].as_f64(), metadata["e"].as_f64(), metadata["s"].as_str()),
        (Some(0.1), Some(1e40), Some(""))
    );
}

#[tokio::test]
async fn a_trial_email_is_never_taken_for_a_customers_purchase() {
    let t = TestApp::spawn().await;
    let terms = json!({"days": 14}).to_string().into_bytes();
    assert_eq!(t.request("PUT", "/v1/products/editor/trial", terms, true).await.status, 200);
    let started =
        t.post("/v1/trial", &json!({"product": "editor", "hardware_id": "pc-1", "email": "ann@example.com"})).await;
    assert_eq!(started.status, 201, "{}", started.body);
    let bought = t.issue(json!({"customer": {"email": "ann@example.com"}})).await;
    let listed = t.admin_get("/v1/licenses?customer_email=ann@example.com").await;
    let keys: Vec<&str> =
        listed.body["licenses"].as_array().unwrap().iter().map(|l| l["license_key"].as_str().unwrap()).collect();
    assert_eq!(keys, [bought.as_str()], "only the vendor's own licenses are the customer's");
    let trials = t.admin_get("/v1/licenses?trial_email=ann@example.com").await;
    assert_eq!(trials.status, 200, "{}", trials.body);
    let trial = &trials.body["licenses"][0];
    assert_eq!((trial["is_trial"].clone(), trial["trial_email"].clone()), (json!(true), json!("ann@example.com")));
    assert!(trial.get("customer").is_none(), "an unverified e-mail is not the customer's");
}

#[tokio::test]
async fn rotation_never_evicts_a_device_holding_a_valid_token_beyond_the_allowance() {
    let t = TestApp::spawn().await;
    let key = t.issue(json!({"max_activations": 1, "device_rotation": true, "release_allowance": 0})).await;
    assert_eq!(t.post("/v1/activate", &device(&key, "old")).await.status, 200);
    let refused = t.post("/v1/activate", &device(&key, "new")).await;
    assert_eq!((refused.status, refused.error_code()), (409, "ACTIVATION_LIMIT_REACHED"), "{}", refused.body);
    assert_eq!(t.post("/v1/check", &device(&key, "old")).await.body["code"], "VALID");
}

#[tokio::test]
async fn with_no_transfers_no_client_sequence_yields_a_second_valid_device() {
    let t = TestApp::spawn().await;
    let key = t.issue(json!({"max_activations": 1, "max_transfers": 0, "device_rotation": true})).await;
    let mut holders = std::collections::BTreeSet::new();
    for hwid in ["a", "b", "a", "c"] {
        let activated = t.post("/v1/activate", &device(&key, hwid)).await;
        if activated.status == 200 && live_valid_exp(activated.body["token"].as_str().unwrap()).is_some() {
            holders.insert(hwid);
        }
        t.post("/v1/deactivate", &device(&key, hwid)).await;
        t.post("/v1/deactivate/offline", &offline_request(&key, hwid, "deactivate", "n")).await;
    }
    assert_eq!(holders.len(), 1, "{holders:?}");
}

#[tokio::test]
async fn an_old_offline_request_file_is_refused() {
    let t = TestApp::spawn().await;
    let key = t.issue(json!({})).await;
    let mut request = offline_request(&key, "air-1", "activate", "n-1");
    request["created_at"] = json!(keygate::time::Timestamp::from_unix(now() - 10 * DAY).to_string());
    let refused = t.post("/v1/activate/offline", &request).await;
    assert_eq!(
        (refused.status, refused.body["error"]["field"].clone()),
        (400, json!("created_at")),
        "{}",
        refused.body
    );
    let (bound, _) = bound_and_counted(&t, &key).await;
    assert_eq!(bound, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_releases_never_exceed_the_allowance() {
    let t = TestApp::spawn().await;
    let key = t.issue(json!({"max_activations": 6, "release_allowance": 2})).await;
    let bodies: Vec<Value> = (0..6).map(|i| device(&key, &format!("pc-{i}"))).collect();
    for body in &bodies {
        assert_eq!(t.post("/v1/activate", body).await.status, 200);
    }
    let answers = join_all(bodies.iter().map(|b| t.post("/v1/deactivate", b))).await;
    let released = answers.iter().filter(|a| a.status == 200).count();
    let refused: Vec<&str> = answers.iter().filter(|a| a.status != 200).map(|a| a.error_code()).collect();
    assert_eq!(released, 2, "{refused:?}");
    assert!(refused.iter().all(|c| *c == "RELEASE_LIMIT_REACHED" || *c == "CONCURRENT_UPDATE"), "{refused:?}");
    let (bound, counted) = bound_and_counted(&t, &key).await;
    assert_eq!((bound, counted), (4, 4));
}

#[tokio::test]
async fn a_device_coming_back_cannot_shed_a_borrowed_credential_onto_a_lapsed_lease() {
    let t = TestApp::spawn().await;
    let key = t
        .issue(json!({"is_floating": true, "max_activations": 1, "floating_timeout_minutes": 1, "can_borrow": true,
            "max_borrow_hours": 2}))
        .await;
    let mut live: Vec<String> = Vec::new();
    for ghost in ["ghost-1", "ghost-2", "ghost-3"] {
        if t.post("/v1/activate", &device(&key, ghost)).await.status != 200 {
            continue;
        }
        let borrow = json!({"license_key": key, "product": "editor", "hardware_id": ghost, "hours": 2});
        let borrowed = t.post("/v1/borrow", &borrow).await;
        if borrowed.status == 200 && live_valid_exp(borrowed.body["token"].as_str().unwrap()).is_some() {
            live.push(ghost.to_string());
        }
        t.post("/v1/deactivate", &device(&key, ghost)).await;
        // It comes back, takes a short lease, and stops heartbeating: that lease lapses (a minute
        // passes; its borrowed token is still valid). A device whose release was refused still
        // holds its borrowed lease, which cannot lapse yet.
        let back = t.post("/v1/activate", &device(&key, ghost)).await;
        let lease_end = back.body["device"]["lease_expires_at"]
            .as_str()
            .map(|end| keygate::time::Timestamp::parse(end).unwrap().unix());
        if back.status == 200 && lease_end.is_some_and(|end| end <= now() + 120) {
            t.set_lease_end(&key, ghost, now() - 1).await;
        }
    }
    let holder = t.post("/v1/activate", &device(&key, "holder")).await;
    if holder.status == 200 && live_valid_exp(holder.body["token"].as_str().unwrap()).is_some() {
        live.push("holder".into());
    }
    assert!(live.len() <= 2, "one seat plus the allowance, yet {live:?} hold valid tokens");
}

#[tokio::test]
async fn a_vendor_lowering_floating_seats_far_leaves_acquisitions_working() {
    let t = TestApp::spawn().await;
    let key = t.issue(json!({"is_floating": true, "max_activations": 210})).await;
    let bodies: Vec<Value> = (0..200).map(|i| device(&key, &format!("pc-{i}"))).collect();
    for chunk in bodies.chunks(20) {
        let answers = join_all(chunk.iter().map(|b| t.post("/v1/activate", b))).await;
        assert!(answers.iter().all(|a| a.status == 200));
    }
    for i in 0..200 {
        t.set_lease_end(&key, &format!("pc-{i}"), now() - 1).await;
    }
    assert_eq!(t.admin_patch(&format!("/v1/licenses/{key}"), &json!({"max_activations": 1})).await.status, 200);
    let taken = t.post("/v1/activate", &device(&key, "newcomer")).await;
    assert_eq!(taken.status, 200, "{}", taken.body);
    let partition = stored_partition(&t, &key).await;
    assert_eq!((partition.leases().len(), partition.leases_held()), (1, 1));
}

#[tokio::test]
async fn rotation_does_not_run_on_an_over_deployed_license() {
    let t = TestApp::spawn().await;
    let key = t.issue(json!({"max_activations": 3, "device_rotation": true})).await;
    for hwid in ["a", "b", "c"] {
        assert_eq!(t.post("/v1/activate", &device(&key, hwid)).await.status, 200);
    }
    assert_eq!(t.admin_patch(&format!("/v1/licenses/{key}"), &json!({"max_activations": 2})).await.status, 200);
    let refused = t.post("/v1/activate", &device(&key, "d")).await;
    assert_eq!((refused.status, refused.error_code()), (409, "ACTIVATION_LIMIT_REACHED"), "{}", refused.body);
    let (bound, _) = bound_and_counted(&t, &key).await;
    assert_eq!(bound, 3, "the vendor's over-deployment stands; no client call adds to what runs");
}

#[tokio::test]
async fn a_refused_release_says_when_it_can_succeed() {
    let t = TestApp::spawn().await;
    let key = t.issue(json!({"max_activations": 3, "release_allowance": 2, "validation_interval_days": 3})).await;
    assert_eq!(t.post("/v1/activate", &device(&key, "a")).await.status, 200);
    // b and c hold license files: valid for a year.
    for hwid in ["b", "c"] {
        let request = offline_request(&key, hwid, "activate", &format!("n-{hwid}"));
        assert_eq!(t.post("/v1/activate/offline", &request).await.status, 200);
    }
    assert_eq!(t.post("/v1/deactivate", &device(&key, "a")).await.status, 200);
    assert_eq!(t.post("/v1/deactivate", &device(&key, "b")).await.status, 200);
    // The vendor lowers the allowance to 1: c may go only once both a's (3 days) and b's (a year)
    // places lapse, which is also when c's own file lapses: a year, not a's 3 days.
    assert_eq!(t.admin_patch(&format!("/v1/licenses/{key}"), &json!({"release_allowance": 1})).await.status, 200);
    let refused = t.post("/v1/deactivate", &device(&key, "c")).await;
    assert_eq!(refused.error_code(), "RELEASE_LIMIT_REACHED");
    let retry = refused.retry_after.expect("Retry-After") as i64;
    assert!(retry > 360 * DAY, "Retry-After {retry} s");
}
