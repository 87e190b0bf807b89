//! The HTTP API against DynamoDB Local through the real AWS SDK: the walk-through, the
//! refusals, races on seats, the store's round trips, and tokens checked by independent verifiers.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use keygate::api::{handle, Function};
use keygate::store::{DynamoStore, Store};
use keygate_tests::{device, fresh_store, join_all, TestApp};

mod cli;
mod client;
mod consumption;
mod events;
mod faults;
mod floating;
mod idempotency;
mod integrity;
mod lambda;
mod offline;
mod restore;
mod rules;
mod scale;
mod ssm;
mod stateful;
mod store_contract;
mod trial;
mod upgrade;
mod vendor;
mod webhooks;
use serde_json::{json, Value};
use std::collections::HashMap;

#[tokio::test]
async fn issue_activate_check_deactivate_walk_through() {
    let t = TestApp::spawn().await;
    let key = t.issue(json!({"customer": {"email": "ann@example.com"}, "order_id": "ord-1"})).await;
    assert_eq!(key.len(), 29);

    let activated = t
        .post(
            "/v1/activate",
            &json!({"license_key": key, "product": "editor", "hardware_id": "pc-1", "device_name": "Ann's laptop"}),
        )
        .await;
    assert_eq!(activated.status, 200, "{}", activated.body);
    assert_eq!(activated.body["device"]["name"], "Ann's laptop");
    assert_eq!(activated.body["license"]["times_activated"], 1);

    let checked = t.post("/v1/check", &device(&key, "pc-1")).await;
    assert_eq!(
        (checked.status, checked.body["valid"].clone(), checked.body["code"].clone()),
        (200, json!(true), json!("VALID"))
    );

    let stored = t.stored(&key).await;
    assert_eq!(stored["license"]["times_activated"], 1);
    assert_eq!(stored["devices"].as_array().unwrap().len(), 1);
    assert_eq!(stored["devices"][0]["hardware_id"], "pc-1");
    assert_eq!(stored["usage"], json!({"seats_used": 1, "seats_available": 2, "compliance": "under_utilized"}));

    let released = t.post("/v1/deactivate", &device(&key, "pc-1")).await;
    assert_eq!(released.status, 200, "{}", released.body);
    let stored = t.stored(&key).await;
    assert_eq!(
        (stored["license"]["times_activated"].clone(), stored["license"]["transfer_count"].clone()),
        (json!(0), json!(1))
    );
    assert!(stored["devices"].as_array().unwrap().is_empty());

    let checked = t.post("/v1/check", &device(&key, "pc-1")).await;
    assert_eq!((checked.status, checked.body["code"].clone()), (200, json!("DEVICE_NOT_ACTIVATED")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forty_concurrent_activations_on_three_seats_yield_exactly_three() {
    let t = TestApp::spawn().await;
    let key = t.issue(json!({"max_activations": 3})).await;
    let attempts = (0..40).map(|i| {
        let (t, key) = (&t, &key);
        async move { t.post("/v1/activate", &device(key, &format!("pc-{i}"))).await }
    });
    let answers = join_all(attempts).await;
    let ok = answers.iter().filter(|a| a.status == 200).count();
    let refused: Vec<&str> = answers.iter().filter(|a| a.status != 200).map(|a| a.error_code()).collect();
    assert_eq!(ok, 3, "refusals: {refused:?}");
    assert!(refused.iter().all(|c| *c == "ACTIVATION_LIMIT_REACHED"), "{refused:?}");
    let stored = t.stored(&key).await;
    assert_eq!(stored["license"]["times_activated"], 3);
    assert_eq!(stored["devices"].as_array().unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_activations_of_one_device_take_one_seat() {
    let t = TestApp::spawn().await;
    let key = t.issue(json!({"max_activations": 2})).await;
    let body = device(&key, "pc-same");
    let answers = join_all((0..10).map(|_| t.post("/v1/activate", &body))).await;
    assert!(answers.iter().all(|a| a.status == 200), "{:?}", answers.iter().map(|a| &a.body).collect::<Vec<_>>());
    let stored = t.stored(&key).await;
    assert_eq!(stored["license"]["times_activated"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_deactivations_free_the_seat_once() {
    let t = TestApp::spawn().await;
    let key = t.issue(json!({})).await;
    assert_eq!(t.post("/v1/activate", &device(&key, "pc-1")).await.status, 200);
    let body = device(&key, "pc-1");
    let answers = join_all((0..10).map(|_| t.post("/v1/deactivate", &body))).await;
    assert_eq!(answers.iter().filter(|a| a.status == 200).count(), 1);
    assert!(answers
        .iter()
        .filter(|a| a.status != 200)
        .all(|a| a.status == 404 && a.error_code() == "DEVICE_NOT_FOUND"));
    let stored = t.stored(&key).await;
    assert_eq!(
        (stored["license"]["times_activated"].clone(), stored["license"]["transfer_count"].clone()),
        (json!(0), json!(1))
    );
}

#[tokio::test]
async fn activation_refusals_are_the_spec_codes() {
    let t = TestApp::spawn().await;
    let key = t.issue(json!({"max_activations": 1, "prevent_vm": true})).await;
    let other_product =
        t.post("/v1/activate", &json!({"license_key": key, "product": "other", "hardware_id": "pc-1"})).await;
    assert_eq!((other_product.status, other_product.error_code()), (403, "PRODUCT_MISMATCH"));
    let vm = t
        .post("/v1/activate", &json!({"license_key": key, "product": "editor", "hardware_id": "vm-1", "is_vm": true}))
        .await;
    assert_eq!((vm.status, vm.error_code()), (403, "VM_NOT_ALLOWED"));
    let unknown = t.post("/v1/activate", &device("ZZZZZ-ZZZZZ-ZZZZZ-ZZZZZ-ZZZZZ", "pc-1")).await;
    assert_eq!((unknown.status, unknown.error_code()), (404, "LICENSE_NOT_FOUND"));
    assert_eq!(t.post("/v1/activate", &device(&key, "pc-1")).await.status, 200);
    let again = t.post("/v1/activate", &device(&key, "pc-1")).await;
    assert_eq!(again.status, 200, "the same device again is idempotent");
    let full = t.post("/v1/activate", &device(&key, "pc-2")).await;
    assert_eq!((full.status, full.error_code()), (409, "ACTIVATION_LIMIT_REACHED"));
    let stored = t.stored(&key).await;
    assert_eq!(stored["license"]["times_activated"], 1);
    assert_eq!(stored["devices"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn expired_licenses_are_refused_and_checked_as_expired() {
    let t = TestApp::spawn().await;
    let key = t.issue(json!({"expiration": {"type": "on_date", "date": "2020-01-01"}})).await;
    let refused = t.post("/v1/activate", &device(&key, "pc-1")).await;
    assert_eq!((refused.status, refused.error_code()), (403, "LICENSE_EXPIRED"));
    let checked = t.post("/v1/check", &device(&key, "pc-1")).await;
    assert_eq!(
        (checked.status, checked.body["valid"].clone(), checked.body["code"].clone()),
        (200, json!(false), json!("EXPIRED"))
    );
}

#[tokio::test]
async fn each_operation_makes_the_spec_round_trips_to_dynamodb() {
    let t = TestApp::spawn().await;
    let key = t.issue(json!({})).await;
    let before = t.round_trips();
    t.post("/v1/activate", &device(&key, "pc-1")).await;
    let after_activate = t.round_trips();
    t.post("/v1/check", &device(&key, "pc-1")).await;
    let after_check = t.round_trips();
    t.post("/v1/deactivate", &device(&key, "pc-1")).await;
    let after_deactivate = t.round_trips();
    assert_eq!(after_activate - before, 2, "activate: one BatchGetItem of license and device, one transaction");
    assert_eq!(after_check - after_activate, 1, "check: one BatchGetItem");
    assert_eq!(after_deactivate - after_check, 2, "deactivate: one read, one transaction");
}

/// What an operation costs in DynamoDB capacity units, as the store reports them.
pub(crate) async fn units_of<F: std::future::Future>(t: &TestApp, op: F) -> (f64, f64) {
    let before = t.app.store.capacity_used();
    op.await;
    let after = t.app.store.capacity_used();
    (after.read_units - before.read_units, after.write_units - before.write_units)
}

#[tokio::test]
async fn each_operation_consumes_the_capacity_units_of_the_items_it_touches() {
    let t = TestApp::spawn().await;
    let key = t.issue(json!({})).await;
    // A license item and a device item are each under 1 KB: a strongly consistent read of one
    // costs 1 read unit; a write in a transaction 2 write units, and 2 more for the device's copy
    // in the index of devices by last sighting (as DynamoDB Local reports them).
    let activate = units_of(&t, t.post("/v1/activate", &device(&key, "pc-1"))).await;
    let check = units_of(&t, t.post("/v1/check", &device(&key, "pc-1"))).await;
    let deactivate = units_of(&t, t.post("/v1/deactivate", &device(&key, "pc-1"))).await;
    assert_eq!(activate, (1.0, 6.0), "activate: license and device read together, then both written");
    assert_eq!(check, (2.0, 0.0), "check: the license and the device, read together; nothing to write");
    assert_eq!(deactivate, (2.0, 6.0), "deactivate: license and device read, then both written");
}

#[tokio::test]
async fn a_thousand_licenses_issue_in_one_request() {
    let t = TestApp::spawn().await;
    let answer = t
        .admin_post(
            "/v1/licenses",
            &json!({"product": "editor", "license_type": "subscription", "max_activations": 1, "quantity": 1000}),
        )
        .await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    let licenses = answer.body["licenses"].as_array().unwrap();
    assert_eq!(licenses.len(), 1000);
    let last = licenses[999]["license_key"].as_str().unwrap();
    assert_eq!(t.stored(last).await["license"]["license_type"], "subscription");
}

#[tokio::test]
async fn vendor_routes_refuse_missing_or_wrong_admin_tokens() {
    let t = TestApp::spawn().await;
    let body = json!({"product": "editor", "license_type": "perpetual", "max_activations": 1}).to_string().into_bytes();
    let anonymous = t.request("POST", "/v1/licenses", body, false).await;
    assert_eq!((anonymous.status, anonymous.error_code()), (401, "UNAUTHORIZED"));
    let key = t.issue(json!({})).await;
    let read = t.get(&format!("/v1/licenses/{key}")).await;
    assert_eq!((read.status, read.error_code()), (401, "UNAUTHORIZED"));
    let missing = t.admin_get("/v1/licenses/ZZZZZ-ZZZZZ").await;
    assert_eq!((missing.status, missing.error_code()), (404, "LICENSE_NOT_FOUND"));
}

#[tokio::test]
#[allow(clippy::type_complexity)]
async fn bad_input_on_every_route_is_a_json_400_or_413_and_changes_nothing() {
    let t = TestApp::spawn().await;
    let key = t.issue(json!({})).await;
    assert_eq!(t.post("/v1/activate", &device(&key, "pc-1")).await.status, 200);
    let before = t.stored(&key).await;
    let long = "x".repeat(5_000);
    let huge = format!(r#"{{"license_key":"{key}","product":"editor","hardware_id":"{}"}}"#, "h".repeat(70_000));
    let mut cases: Vec<(&str, &str, Vec<u8>, bool, u16, &str)> = vec![];
    for path in ["/v1/activate", "/v1/check", "/v1/deactivate"] {
        cases.push(("POST", path, b"{\"license_key\": ".to_vec(), false, 400, "MALFORMED_JSON"));
        cases.push((
            "POST",
            path,
            json!({"license_key": key, "product": "editor"}).to_string().into_bytes(),
            false,
            400,
            "INVALID_FIELD",
        ));
        cases.push((
            "POST",
            path,
            json!({"license_key": key, "product": ["editor"], "hardware_id": "pc-2"}).to_string().into_bytes(),
            false,
            400,
            "INVALID_FIELD",
        ));
        cases.push((
            "POST",
            path,
            json!({"license_key": key, "product": "editor", "hardware_id": long}).to_string().into_bytes(),
            false,
            400,
            "INVALID_FIELD",
        ));
        cases.push(("POST", path, huge.clone().into_bytes(), false, 413, "PAYLOAD_TOO_LARGE"));
    }
    cases.push(("GET", "/v1/check?license_key=K&product=editor", vec![], false, 400, "INVALID_FIELD"));
    cases.push(("POST", "/v1/licenses", b"not json".to_vec(), true, 400, "MALFORMED_JSON"));
    cases.push((
        "POST",
        "/v1/licenses",
        json!({"product": "editor", "license_type": "perpetual"}).to_string().into_bytes(),
        true,
        400,
        "INVALID_FIELD",
    ));
    cases.push((
        "POST",
        "/v1/licenses",
        json!({"product": "editor", "license_type": "perpetual", "max_activations": "3"}).to_string().into_bytes(),
        true,
        400,
        "INVALID_FIELD",
    ));
    cases.push((
        "POST",
        "/v1/licenses",
        json!({"product": long, "license_type": "perpetual", "max_activations": 3}).to_string().into_bytes(),
        true,
        400,
        "INVALID_FIELD",
    ));
    cases.push(("POST", "/v1/licenses", huge.clone().into_bytes(), true, 413, "PAYLOAD_TOO_LARGE"));
    cases.push(("GET", "/v1/licenses/not%20a%20key", vec![], true, 400, "INVALID_FIELD"));
    for (method, path, body, admin, status, code) in cases {
        let answer = t.request(method, path, body, admin).await;
        assert_eq!((answer.status, answer.error_code()), (status, code), "{method} {path}: {}", answer.body);
        let message = answer.body["error"]["message"].as_str().unwrap();
        assert!(!message.is_empty() && answer.body["error"]["request_id"].is_string());
        if code == "INVALID_FIELD" {
            let field = answer.body["error"]["field"].as_str().unwrap();
            assert!(message.contains(field), "the message names the field: {message}");
        }
    }
    assert_eq!(t.stored(&key).await, before);
}

#[tokio::test]
async fn a_store_outage_is_a_503_that_leaks_nothing() {
    // A port nothing listens on: every SDK call fails to connect.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let shared = keygate::store::sdk_config().await;
    let config =
        aws_sdk_dynamodb::config::Builder::from(&shared).endpoint_url(format!("http://127.0.0.1:{closed}")).build();
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::from_conf(config), "unreachable");
    let t = TestApp::spawn_with(store).await;
    let checked = t.post("/v1/check", &device("AAAAA-BBBBB", "pc-1")).await;
    assert_eq!((checked.status, checked.error_code()), (503, "STORE_UNAVAILABLE"));
    let text = checked.body.to_string();
    assert!(!text.contains("127.0.0.1") && !text.contains("dispatch"), "{text}");
    let issued = t
        .admin_post("/v1/licenses", &json!({"product": "editor", "license_type": "perpetual", "max_activations": 1}))
        .await;
    assert_eq!((issued.status, issued.error_code()), (503, "STORE_UNAVAILABLE"));
}

// ---- tokens, checked by verifiers that share no code with the signer ----

fn jwks_keys(jwks: &Value) -> HashMap<String, Vec<u8>> {
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            assert_eq!(
                (k["kty"].as_str(), k["crv"].as_str(), k["alg"].as_str(), k["use"].as_str()),
                (Some("OKP"), Some("Ed25519"), Some("EdDSA"), Some("sig"))
            );
            (k["kid"].as_str().unwrap().to_string(), URL_SAFE_NO_PAD.decode(k["x"].as_str().unwrap()).unwrap())
        })
        .collect()
}

/// Parses the compact JWS by hand and checks the signature with ring's Ed25519.
pub(crate) fn verify_by_hand(token: &str, jwks: &Value) -> Result<Value, String> {
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return Err("not three parts".into());
    }
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    if header["alg"] != "EdDSA" || header["typ"] != "JWT" {
        return Err(format!("unexpected header {header}"));
    }
    let keys = jwks_keys(jwks);
    let public = keys.get(header["kid"].as_str().ok_or("no kid")?).ok_or("kid not in the JWKS")?;
    let signature = URL_SAFE_NO_PAD.decode(parts[2]).map_err(|e| e.to_string())?;
    let signed = format!("{}.{}", parts[0], parts[1]);
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public)
        .verify(signed.as_bytes(), &signature)
        .map_err(|_| "bad signature".to_string())?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).map_err(|e| e.to_string())?).map_err(|e| e.to_string())
}

fn tamper(token: &str) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    claims["valid"] = json!(true);
    claims["code"] = json!("VALID");
    claims["exp"] = json!(4_102_444_800i64);
    format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(claims.to_string()), parts[2])
}

#[tokio::test]
async fn tokens_verify_against_the_jwks_by_hand_and_carry_the_verdict() {
    let t = TestApp::spawn().await;
    let key = t.issue(json!({"validation_interval_days": 7})).await;
    let jwks = t.get("/.well-known/jwks.json").await;
    assert_eq!(jwks.status, 200);

    let activated = t
        .post(
            "/v1/activate",
            &json!({"license_key": key, "product": "editor", "hardware_id": "pc-1", "nonce": "n-activate"}),
        )
        .await;
    let claims = verify_by_hand(activated.body["token"].as_str().unwrap(), &jwks.body).unwrap();
    assert_eq!(
        (claims["valid"].clone(), claims["code"].clone(), claims["nonce"].clone()),
        (json!(true), json!("VALID"), json!("n-activate"))
    );
    assert_eq!(
        (claims["aud"].clone(), claims["hwid"].clone(), claims["iss"].clone()),
        (json!("editor"), json!("pc-1"), json!("keygate"))
    );
    assert!(claims["sub"].as_str().unwrap().starts_with("lic_"));
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 7 * 86_400);

    let refused = t
        .post("/v1/check", &json!({"license_key": key, "product": "editor", "hardware_id": "pc-2", "nonce": "n-check"}))
        .await;
    let token = refused.body["token"].as_str().unwrap();
    let claims = verify_by_hand(token, &jwks.body).unwrap();
    assert_eq!(
        (claims["valid"].clone(), claims["code"].clone(), claims["nonce"].clone()),
        (json!(false), json!("DEVICE_NOT_ACTIVATED"), json!("n-check"))
    );
    assert!(claims["exp"].as_i64().unwrap() > claims["iat"].as_i64().unwrap());

    assert_eq!(verify_by_hand(&tamper(token), &jwks.body).unwrap_err(), "bad signature");
    let other = TestApp::spawn().await;
    let foreign = other.get("/.well-known/jwks.json").await;
    assert_eq!(verify_by_hand(token, &foreign.body).unwrap_err(), "kid not in the JWKS");
}

fn jose_verify(token: &str, jwks: &Value) -> Result<Value, String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/jose_verify.mjs");
    let output = std::process::Command::new("node")
        .args([script, &jwks.to_string(), token, "keygate", "editor"])
        .output()
        .expect("node runs (make test installs jose into node_modules/)");
    if output.status.success() {
        Ok(serde_json::from_slice(&output.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

#[tokio::test]
async fn tokens_verify_with_the_jose_library_and_tampered_ones_do_not() {
    let t = TestApp::spawn().await;
    let key = t.issue(json!({})).await;
    let jwks = t.get("/.well-known/jwks.json").await.body;
    let activated = t
        .post("/v1/activate", &json!({"license_key": key, "product": "editor", "hardware_id": "pc-1", "nonce": "abc"}))
        .await;
    let checked = t.get(&format!("/v1/check?license_key={key}&product=editor&hardware_id=pc-1&nonce=xyz")).await;
    for (token, nonce) in
        [(activated.body["token"].as_str().unwrap(), "abc"), (checked.body["token"].as_str().unwrap(), "xyz")]
    {
        let verified = jose_verify(token, &jwks).unwrap();
        assert_eq!(verified["header"]["alg"], "EdDSA");
        assert_eq!(verified["payload"]["code"], "VALID");
        assert_eq!(verified["payload"]["nonce"], nonce);
        let err = jose_verify(&tamper(token), &jwks).unwrap_err();
        assert!(err.contains("ERR_JWS_SIGNATURE_VERIFICATION_FAILED"), "{err}");
    }
}

// ---- the Lambda path: real API Gateway v2 events through lambda_http's own conversion ----

fn apigw_event(method: &str, path: &str, query: &str, body: &str, base64: bool) -> lambda_http::Request {
    lambda_http::request::from_str(&apigw_event_json(method, path, query, body, base64)).unwrap()
}

/// An API Gateway v2 (HTTP API) event, as the Lambda service hands it to a function.
pub(crate) fn apigw_event_json(method: &str, path: &str, query: &str, body: &str, base64: bool) -> String {
    let template = include_str!("../../fixtures/apigw_v2_request.json");
    let body = if base64 { STANDARD.encode(body) } else { body.to_string() };
    template
        .replace("__METHOD__", method)
        .replace("__PATH__", path)
        .replace("__QUERY__", query)
        .replace("\"__BODY__\"", &serde_json::to_string(&body).unwrap())
        .replace("__BASE64__", if base64 { "true" } else { "false" })
}

#[tokio::test]
async fn api_gateway_events_reach_the_same_handlers() {
    let t = TestApp::spawn().await;
    let key = t.issue(json!({})).await;
    let body = device(&key, "pc-lambda").to_string();
    let response = handle(&t.app, &[Function::Activate], apigw_event("POST", "/v1/activate", "", &body, true)).await;
    assert_eq!(response.status(), 200);
    let response = handle(
        &t.app,
        &[Function::Check],
        apigw_event("GET", "/v1/check", &format!("license_key={key}&product=editor&hardware_id=pc-lambda"), "", false),
    )
    .await;
    let answer: Value = serde_json::from_slice(response.body().as_ref()).unwrap();
    assert_eq!(answer["code"], "VALID");
    let response = handle(&t.app, &[Function::Check], apigw_event("POST", "/v1/deactivate", "", &body, false)).await;
    assert_eq!(response.status(), 404, "the check function does not serve deactivate");
    let answer: Value = serde_json::from_slice(response.body().as_ref()).unwrap();
    assert_eq!(answer["error"]["request_id"], "apigw-request-1", "errors carry API Gateway's request id");
}

#[tokio::test]
async fn table_creation_is_idempotent() {
    let store = fresh_store().await;
    assert!(!keygate::store::create_table(store.client(), store.table()).await.unwrap());
    assert_eq!(store.round_trips(), 0);
}

#[tokio::test]
async fn the_lambda_fast_path_configuration_still_reaches_the_configured_endpoint() {
    // In Lambda, sdk_config skips the default provider chains and takes the region and credentials
    // from the environment; the endpoint override (here DynamoDB Local) must still apply.
    let in_lambda = |name: &str| match name {
        "AWS_LAMBDA_FUNCTION_NAME" => Some("check".to_string()),
        _ => std::env::var(name).ok(),
    };
    assert!(std::env::var("AWS_ACCESS_KEY_ID").is_ok() && std::env::var("AWS_REGION").is_ok(), "as in Lambda");
    let sdk = keygate::store::sdk_config_with(in_lambda).await;
    assert_eq!(sdk.region().map(|r| r.to_string()), std::env::var("AWS_REGION").ok());
    let table = keygate::input::random_id("kg").unwrap();
    let store = DynamoStore::from_config(&sdk, &table);
    assert!(keygate::store::create_table(store.client(), &table).await.unwrap());
    let key = keygate::input::LicenseKey::generate().unwrap();
    assert!(store.licenses(&[key]).await.unwrap().is_empty(), "a read through the fast-path client");
}

/// What events will be derived from: the table streams both images of every change, and a device
/// item names its license's product (a change of the device alone then says which product it is for).
#[tokio::test]
async fn the_table_streams_both_images_and_device_items_name_their_product() {
    let t = TestApp::spawn().await;
    let described = t.app.store.client().describe_table().table_name(t.app.store.table()).send().await.unwrap();
    let stream = described.table.and_then(|table| table.stream_specification).expect("a stream");
    assert!(stream.stream_enabled);
    assert_eq!(stream.stream_view_type, Some(aws_sdk_dynamodb::types::StreamViewType::NewAndOldImages));

    let key = t.issue(json!({"product": "editor"})).await;
    let pool = t.issue(json!({"is_floating": true, "max_activations": 2})).await;
    assert_eq!(t.post("/v1/activate", &device(&key, "pc-1")).await.status, 200);
    assert_eq!(t.post("/v1/activate", &device(&pool, "pc-1")).await.status, 200);
    for license in [&key, &pool] {
        let partition = keygate_tests::stored_partition(&t, license).await;
        assert_eq!(partition.devices[0]["product"], "editor", "{license}: {:?}", partition.devices);
    }
}
