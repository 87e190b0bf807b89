//! Handler tests against the in-memory store: routing, refusals, and that bad input changes nothing.

use super::*;
use crate::auth::hash_token;
use crate::store::MemoryStore;
use lambda_http::http;
use serde_json::{json, Value};

const ADMIN: &str = "admin-secret";

fn app() -> App<MemoryStore> {
    App {
        store: MemoryStore::new(),
        signer: Some(TokenSigner::new([9; 32], &[]).unwrap()),
        admin_tokens: AdminTokens::parse(&hash_token(ADMIN)).unwrap(),
        issuer: "keygate-test".into(),
        cors: crate::cors::AllowedOrigins::parse("https://app.example.com").unwrap(),
        clock: crate::time::Timestamp::now,
        webhooks: PUBLIC_WEBHOOKS,
    }
}

const PUBLIC_WEBHOOKS: crate::webhooks::deliver::Policy =
    crate::webhooks::deliver::Policy { allow_private: false, timeout: std::time::Duration::from_secs(5) };

async fn call_raw<S: Store>(
    app: &App<S>,
    method: &str,
    path: &str,
    body: Vec<u8>,
    admin: Option<&str>,
) -> (u16, Value) {
    let mut builder = http::Request::builder().method(method).uri(path);
    if let Some(token) = admin {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    let request = builder.body(Body::from(body)).unwrap();
    let response = handle(app, &Function::ALL, request).await;
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = serde_json::from_slice(response.body().as_ref()).unwrap();
    (response.status().as_u16(), body)
}

async fn call<S: Store>(app: &App<S>, method: &str, path: &str, body: Value) -> (u16, Value) {
    let admin = path.starts_with("/v1/licenses").then_some(ADMIN);
    let bytes = if body.is_null() { vec![] } else { body.to_string().into_bytes() };
    call_raw(app, method, path, bytes, admin).await
}

async fn issue(app: &App<MemoryStore>, extra: Value) -> String {
    let mut body = json!({"product": "editor", "license_type": "perpetual", "max_activations": 2});
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    let (status, answer) = call(app, "POST", "/v1/licenses", body).await;
    assert_eq!(status, 201, "{answer}");
    answer["licenses"][0]["license_key"].as_str().unwrap().to_string()
}

fn device_body(key: &str, hwid: &str) -> Value {
    json!({"license_key": key, "product": "editor", "hardware_id": hwid})
}

fn error_code(answer: &Value) -> &str {
    answer["error"]["code"].as_str().unwrap_or_default()
}

async fn stored(app: &App<MemoryStore>, key: &str) -> Value {
    let (status, answer) = call(app, "GET", &format!("/v1/licenses/{key}"), Value::Null).await;
    assert_eq!(status, 200);
    answer
}

#[tokio::test]
async fn vendor_routes_need_a_configured_admin_token() {
    let app = app();
    let body = json!({"product": "editor", "license_type": "perpetual", "max_activations": 1}).to_string();
    for token in [None, Some("wrong")] {
        let (status, answer) = call_raw(&app, "POST", "/v1/licenses", body.clone().into_bytes(), token).await;
        assert_eq!((status, error_code(&answer)), (401, "UNAUTHORIZED"));
    }
    assert_eq!(app.store.round_trips(), 0, "a refused request must not touch the store");
}

/// Every vendor route refuses a missing or wrong admin token, served alone or beside the others,
/// before it touches the store; client and public routes ask for none.
#[tokio::test]
async fn every_vendor_route_refuses_a_missing_or_wrong_token_whichever_function_serves_it() {
    let app = app();
    let concrete = |path: &str| {
        path.replace("{license_key}", "AAAAA-BBBBB-CCCCC-DDDDD-EEEEE")
            .replace("{hardware_id}", "pc-1")
            .replace("{product}", "editor")
    };
    let vendor: Vec<&Route> = ROUTES.iter().filter(|r| r.auth == Auth::Vendor).collect();
    assert_eq!(vendor.len(), 16, "the vendor API");
    for route in &vendor {
        for functions in [&Function::ALL[..], std::slice::from_ref(&route.function)] {
            for token in [None, Some("wrong"), Some("")] {
                let mut request = http::Request::builder().method(route.method.clone()).uri(concrete(route.path));
                if let Some(token) = token {
                    request = request.header("authorization", format!("Bearer {token}"));
                }
                let response = handle(&app, functions, request.body(Body::from("{}")).unwrap()).await;
                assert_eq!(response.status(), 401, "{} {} with {token:?}", route.method, route.path);
            }
        }
    }
    assert_eq!(app.store.round_trips(), 0, "refused before the store");
    for route in ROUTES.iter().filter(|r| r.auth != Auth::Vendor) {
        let request = http::Request::builder().method(route.method.clone()).uri(concrete(route.path));
        let response = handle(&app, &Function::ALL, request.body(Body::from("{}")).unwrap()).await;
        assert_ne!(response.status(), 401, "{} {} needs no token", route.method, route.path);
    }
}

#[tokio::test]
async fn a_batch_issues_distinct_keys() {
    let app = app();
    let (status, answer) = call(
        &app,
        "POST",
        "/v1/licenses",
        json!({"product": "editor", "license_type": "subscription", "max_activations": 1, "quantity": 5}),
    )
    .await;
    assert_eq!(status, 201);
    let keys: std::collections::HashSet<&str> =
        answer["licenses"].as_array().unwrap().iter().map(|l| l["license_key"].as_str().unwrap()).collect();
    assert_eq!(keys.len(), 5);
}

#[tokio::test]
async fn activation_is_idempotent_per_device_and_refused_beyond_the_seat_limit() {
    let app = app();
    let key = issue(&app, json!({})).await;
    for hwid in ["pc-1", "pc-1", "pc-2"] {
        let (status, answer) = call(&app, "POST", "/v1/activate", device_body(&key, hwid)).await;
        assert_eq!(status, 200, "{answer}");
        assert!(answer["token"].as_str().unwrap().split('.').count() == 3);
    }
    let (status, answer) = call(&app, "POST", "/v1/activate", device_body(&key, "pc-3")).await;
    assert_eq!((status, error_code(&answer)), (409, "ACTIVATION_LIMIT_REACHED"));
    let detail = stored(&app, &key).await;
    assert_eq!(detail["license"]["times_activated"], 2);
    assert_eq!(detail["usage"]["seats_used"], 2);
    assert_eq!(detail["usage"]["seats_available"], 0);
}

#[tokio::test]
async fn check_answers_every_verdict_with_200_and_unknown_keys_with_404() {
    let app = app();
    let key = issue(&app, json!({})).await;
    call(&app, "POST", "/v1/activate", device_body(&key, "pc-1")).await;
    let (status, answer) = call(&app, "POST", "/v1/check", device_body(&key, "pc-1")).await;
    assert_eq!((status, answer["valid"].clone(), answer["code"].clone()), (200, json!(true), json!("VALID")));
    let (_, answer) = call(&app, "POST", "/v1/check", device_body(&key, "pc-9")).await;
    assert_eq!((answer["valid"].clone(), answer["code"].clone()), (json!(false), json!("DEVICE_NOT_ACTIVATED")));
    let (_, answer) =
        call(&app, "POST", "/v1/check", json!({"license_key": key, "product": "other", "hardware_id": "pc-1"})).await;
    assert_eq!(answer["code"], "PRODUCT_MISMATCH");
    let (status, answer) = call(&app, "POST", "/v1/check", device_body("NOPE0-NOPE0", "pc-1")).await;
    assert_eq!((status, error_code(&answer)), (404, "LICENSE_NOT_FOUND"));
    let (status, answer) = call(
        &app,
        "GET",
        &format!("/v1/check?license_key={key}&product=editor&hardware_id=pc-1&nonce=n1"),
        Value::Null,
    )
    .await;
    assert_eq!((status, answer["code"].clone()), (200, json!("VALID")));
}

#[tokio::test]
async fn deactivation_frees_the_seat_and_counts_a_transfer() {
    let app = app();
    let key = issue(&app, json!({"max_transfers": 1})).await;
    call(&app, "POST", "/v1/activate", device_body(&key, "pc-1")).await;
    let (status, answer) = call(&app, "POST", "/v1/deactivate", device_body(&key, "pc-1")).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (answer["license"]["times_activated"].clone(), answer["license"]["transfer_count"].clone()),
        (json!(0), json!(1))
    );
    let (status, answer) = call(&app, "POST", "/v1/deactivate", device_body(&key, "pc-1")).await;
    assert_eq!((status, error_code(&answer)), (404, "DEVICE_NOT_FOUND"));
    call(&app, "POST", "/v1/activate", device_body(&key, "pc-2")).await;
    let (status, answer) = call(&app, "POST", "/v1/deactivate", device_body(&key, "pc-2")).await;
    assert_eq!((status, error_code(&answer)), (409, "TRANSFER_LIMIT_REACHED"));
}

#[tokio::test]
async fn each_operation_costs_the_spec_round_trips() {
    let app = app();
    let key = issue(&app, json!({})).await;
    let mut before = app.store.round_trips();
    let mut cost = |now: u64| {
        let spent = now - before;
        before = now;
        spent
    };
    call(&app, "POST", "/v1/activate", device_body(&key, "pc-1")).await;
    assert_eq!(cost(app.store.round_trips()), 2, "activate: one read, one transaction");
    call(&app, "POST", "/v1/check", device_body(&key, "pc-1")).await;
    assert_eq!(cost(app.store.round_trips()), 1, "check: one read");
    call(&app, "POST", "/v1/deactivate", device_body(&key, "pc-1")).await;
    assert_eq!(cost(app.store.round_trips()), 2, "deactivate: one read, one transaction");
}

#[allow(clippy::type_complexity)]
#[tokio::test]
async fn bad_input_is_refused_with_a_named_field_and_changes_nothing() {
    let app = app();
    let key = issue(&app, json!({})).await;
    let long = "x".repeat(300);
    let cases: Vec<(&str, Vec<u8>, u16, &str, Option<&str>)> = vec![
        ("/v1/activate", b"{not json".to_vec(), 400, "MALFORMED_JSON", None),
        ("/v1/activate", b"".to_vec(), 400, "MALFORMED_JSON", None),
        ("/v1/activate", b"[1,2]".to_vec(), 400, "MALFORMED_JSON", None),
        (
            "/v1/activate",
            json!({"license_key": key, "product": "editor"}).to_string().into_bytes(),
            400,
            "INVALID_FIELD",
            Some("hardware_id"),
        ),
        (
            "/v1/activate",
            json!({"license_key": key, "product": 5, "hardware_id": "a"}).to_string().into_bytes(),
            400,
            "INVALID_FIELD",
            Some("product"),
        ),
        (
            "/v1/activate",
            json!({"license_key": key, "product": "editor", "hardware_id": long}).to_string().into_bytes(),
            400,
            "INVALID_FIELD",
            Some("hardware_id"),
        ),
        (
            "/v1/activate",
            json!({"license_key": key, "product": "editor", "hardware_id": "a", "is_vm": "yes"})
                .to_string()
                .into_bytes(),
            400,
            "INVALID_FIELD",
            Some("is_vm"),
        ),
        (
            "/v1/activate",
            json!({"license_key": key, "product": "editor", "hardware_id": "a", "colour": 1}).to_string().into_bytes(),
            400,
            "INVALID_FIELD",
            Some("colour"),
        ),
        (
            "/v1/activate",
            format!(r#"{{"license_key":"{key}","product":"editor","hardware_id":"{}"}}"#, "y".repeat(70_000))
                .into_bytes(),
            413,
            "PAYLOAD_TOO_LARGE",
            None,
        ),
        (
            "/v1/check",
            json!({"license_key": key, "product": "editor", "hardware_id": "a", "nonce": long})
                .to_string()
                .into_bytes(),
            400,
            "INVALID_FIELD",
            Some("nonce"),
        ),
        (
            "/v1/deactivate",
            json!({"license_key": "bad key!", "product": "editor", "hardware_id": "a"}).to_string().into_bytes(),
            400,
            "INVALID_FIELD",
            Some("license_key"),
        ),
    ];
    let before = stored(&app, &key).await;
    for (path, body, status, code, field) in cases {
        let (got, answer) = call_raw(&app, "POST", path, body, None).await;
        assert_eq!((got, error_code(&answer)), (status, code), "{path}: {answer}");
        assert_eq!(answer["error"]["field"].as_str(), field, "{answer}");
        assert!(answer["error"]["request_id"].is_string());
    }
    assert_eq!(stored(&app, &key).await["license"], before["license"]);
}

#[tokio::test]
async fn issue_refusals_name_the_field() {
    let app = app();
    let base = json!({"product": "editor", "license_type": "perpetual", "max_activations": 1});
    let with = |extra: Value| {
        let mut body = base.clone();
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        body
    };
    let cases = [
        (with(json!({"quantity": 0})), "quantity"),
        (with(json!({"quantity": 1001})), "quantity"),
        (with(json!({"max_activations": 0})), "max_activations"),
        (with(json!({"max_activations": -1})), "max_activations"),
        (with(json!({"license_type": "forever"})), "license_type"),
        (with(json!({"expiration": {"type": "days_after_creation", "days": 0}})), "expiration.days"),
        (with(json!({"expiration": {"type": "on_date"}})), "expiration"),
        (with(json!({"expiration": {"type": "never", "days": 3}})), "expiration"),
        (with(json!({"expiration": {"type": "on_date", "date": "someday"}})), "expiration.date"),
        (with(json!({"customer": {"email": "nope"}})), "customer.email"),
        (with(json!({"features": [{"code": "a"}, {"code": "a"}]})), "features"),
        (with(json!({"metadata": {"blob": "z".repeat(3000)}})), "metadata"),
        (json!({"license_type": "perpetual", "max_activations": 1}), "product"),
    ];
    for (body, field) in cases {
        let (status, answer) = call(&app, "POST", "/v1/licenses", body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{body}: {answer}");
    }
    assert_eq!(app.store.round_trips(), 0);
}

async fn with_origin(app: &App<MemoryStore>, method: &str, path: &str, origin: &str) -> Response<Body> {
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .body(Body::Empty)
        .unwrap();
    handle(app, &Function::ALL, request).await
}

#[tokio::test]
async fn an_idempotency_key_that_is_not_text_is_refused_not_ignored() {
    let app = app();
    let body = json!({"product": "editor", "license_type": "perpetual", "max_activations": 1}).to_string();
    for _ in 0..2 {
        let request = http::Request::builder()
            .method("POST")
            .uri("/v1/licenses")
            .header("authorization", format!("Bearer {ADMIN}"))
            .header("idempotency-key", http::HeaderValue::from_bytes(b"caf\xe9-key").unwrap())
            .body(Body::from(body.clone()))
            .unwrap();
        let response = handle(&app, &Function::ALL, request).await;
        let answer: Value = serde_json::from_slice(response.body().as_ref()).unwrap();
        assert_eq!((response.status().as_u16(), answer["error"]["field"].as_str()), (400, Some("Idempotency-Key")));
    }
    assert_eq!(app.store.round_trips(), 0, "nothing was issued");
}

#[tokio::test]
async fn browsers_at_allowed_origins_may_call_client_routes_and_never_vendor_routes() {
    let app = app();
    let preflight = with_origin(&app, "OPTIONS", "/v1/check", "https://app.example.com").await;
    assert_eq!(preflight.status(), 204);
    let headers = preflight.headers();
    assert_eq!(headers["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(headers["access-control-allow-methods"], "POST, GET");
    assert_eq!(headers["access-control-allow-headers"], "content-type, idempotency-key", "safe retries from browsers");
    let answer = with_origin(&app, "POST", "/v1/check", "https://app.example.com").await;
    assert_eq!(answer.headers()["access-control-allow-origin"], "https://app.example.com", "a refusal too");
    for (method, path, origin) in [
        ("OPTIONS", "/v1/check", "https://evil.example.com"),
        ("OPTIONS", "/v1/licenses", "https://app.example.com"),
        ("GET", "/v1/licenses", "https://app.example.com"),
        ("OPTIONS", "/v1/nothing", "https://app.example.com"),
    ] {
        let response = with_origin(&app, method, path, origin).await;
        assert!(response.headers().get("access-control-allow-origin").is_none(), "{method} {path} from {origin}");
        assert_ne!(response.status(), 204, "{method} {path} from {origin}");
    }
    let vendor = with_origin(&app, "OPTIONS", "/v1/licenses", "https://app.example.com").await;
    assert_eq!((vendor.status().as_u16(), &vendor.headers()["allow"]), (405, &"POST, GET".parse().unwrap()));
}

#[tokio::test]
async fn unknown_routes_and_methods_are_json_errors() {
    let app = app();
    let (status, answer) = call(&app, "GET", "/v2/nothing", Value::Null).await;
    assert_eq!((status, error_code(&answer)), (404, "ROUTE_NOT_FOUND"));
    let (status, answer) = call(&app, "DELETE", "/v1/check", Value::Null).await;
    assert_eq!((status, error_code(&answer)), (405, "METHOD_NOT_ALLOWED"));
    let request = http::Request::builder().method("DELETE").uri("/v1/licenses").body(Body::Empty).unwrap();
    let response = handle(&app, &Function::ALL, request).await;
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "POST, GET", "a 405 says which methods the path allows");
}

#[tokio::test]
async fn a_function_serves_only_its_own_routes() {
    let app = app();
    let request = http::Request::builder().method("GET").uri("/.well-known/jwks.json").body(Body::Empty).unwrap();
    assert_eq!(handle(&app, &[Function::Check], request).await.status(), 200);
    let request = http::Request::builder().method("GET").uri("/.well-known/jwks.json").body(Body::Empty).unwrap();
    assert_eq!(handle(&app, &[Function::Activate], request).await.status(), 404);
}

#[test]
fn path_parameters_are_percent_decoded_and_every_route_is_routed() {
    let params = |path: &str| routes_at(path).map(|(_, params)| params);
    assert_eq!(params("/v1/licenses/AB%2DCD"), Some(vec!["AB-CD".to_string()]));
    assert_eq!(params("/v1/licenses/AB/devices/pc%201"), Some(vec!["AB".to_string(), "pc 1".to_string()]));
    assert_eq!(params("/v1/licenses/a/b"), None);
    assert_eq!(params("/v1/licenses/").unwrap_or_default(), Vec::<String>::new(), "no empty parameter");
    for route in ROUTES {
        let (routes, _) = routes_at(route.path).expect("every pattern is routed");
        assert!(
            routes.iter().any(|r| r.method == route.method && r.path == route.path),
            "{} {}",
            route.method,
            route.path
        );
    }
}

async fn patch(app: &App<MemoryStore>, key: &str, body: Value) -> (u16, Value) {
    call(app, "PATCH", &format!("/v1/licenses/{key}"), body).await
}

#[tokio::test]
async fn a_patch_changes_only_what_it_names_and_bumps_the_version() {
    let app = app();
    let key = issue(&app, json!({"grace_period_days": 3, "metadata": {"a": 1, "b": 2}})).await;
    let (status, answer) = patch(&app, &key, json!({"status": "suspended", "metadata": {"a": null, "c": 3}})).await;
    assert_eq!(status, 200, "{answer}");
    let license = &stored(&app, &key).await["license"];
    assert_eq!((license["status"].clone(), license["grace_period_days"].clone()), (json!("suspended"), json!(3)));
    assert_eq!(license["metadata"], json!({"b": 2, "c": 3}));
    assert_eq!(license["version"], 1);
    let (_, checked) = call(&app, "POST", "/v1/check", device_body(&key, "pc")).await;
    assert_eq!(checked["code"], "SUSPENDED");
}

#[tokio::test]
async fn patch_refusals_name_the_field_and_change_nothing() {
    let app = app();
    let key = issue(&app, json!({})).await;
    let before = stored(&app, &key).await;
    for (body, status, code) in [
        (json!({"max_activations": 0}), 400, "INVALID_FIELD"),
        (json!({"validation_interval_days": 0}), 400, "INVALID_FIELD"),
        (json!({"grace_period_days": "3"}), 400, "INVALID_FIELD"),
        (json!({"license_key": "X"}), 400, "INVALID_FIELD"),
        (json!({"status": "active", "version": 3}), 409, "VERSION_CONFLICT"),
        (json!({}), 400, "INVALID_FIELD"),
        (json!({"version": 0}), 400, "INVALID_FIELD"),
    ] {
        let (got, answer) = patch(&app, &key, body.clone()).await;
        assert_eq!((got, error_code(&answer)), (status, code), "{body}: {answer}");
    }
    assert_eq!(stored(&app, &key).await, before);
}

#[tokio::test]
async fn listings_page_newest_first_and_refuse_foreign_cursors() {
    let app = app();
    for _ in 0..3 {
        issue(&app, json!({"order_id": "o-1"})).await;
    }
    issue(&app, json!({"order_id": "o-2"})).await;
    let (status, first) = call(&app, "GET", "/v1/licenses?order_id=o-1&limit=2", Value::Null).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["licenses"].as_array().unwrap().len(), 2);
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, second) =
        call(&app, "GET", &format!("/v1/licenses?order_id=o-1&limit=2&cursor={cursor}"), Value::Null).await;
    assert_eq!(second["licenses"].as_array().unwrap().len(), 1);
    assert!(second["next_cursor"].is_null());
    let (status, answer) = call(&app, "GET", "/v1/licenses?order_id=o-1&cursor=ZZZZZ", Value::Null).await;
    assert_eq!((status, answer["error"]["field"].as_str()), (400, Some("cursor")));
}

#[tokio::test]
async fn idempotent_issues_replay_and_refuse_a_different_request() {
    let app = app();
    let body = json!({"product": "editor", "license_type": "perpetual", "max_activations": 1}).to_string();
    let send = |body: String| {
        let request = http::Request::builder()
            .method("POST")
            .uri("/v1/licenses")
            .header("authorization", format!("Bearer {ADMIN}"))
            .header("idempotency-key", "retry-me")
            .body(Body::from(body))
            .unwrap();
        handle(&app, &Function::ALL, request)
    };
    let first: Value = serde_json::from_slice(send(body.clone()).await.body().as_ref()).unwrap();
    let spaced = body.replace(':', ": ");
    let second = send(spaced).await;
    assert_eq!(second.status(), 201);
    let second: Value = serde_json::from_slice(second.body().as_ref()).unwrap();
    assert_eq!(first["licenses"][0]["license_key"], second["licenses"][0]["license_key"]);
    let other = send(body.replace("\"max_activations\":1", "\"max_activations\":2")).await;
    assert_eq!(other.status(), 409);
}

/// A route's operation in docs/openapi.yaml: its lines from `    post:` to the next line indented
/// as little.
fn spec_operation(route: &Route) -> String {
    let spec = include_str!("../../../docs/openapi.yaml");
    let lines: Vec<&str> = spec.lines().collect();
    let path = lines.iter().position(|l| *l == format!("  {}:", route.path)).expect("documented");
    let method = format!("    {}:", route.method.as_str().to_lowercase());
    let start = path + lines[path..].iter().position(|l| *l == method).expect("documented");
    let indent = |l: &str| l.len() - l.trim_start().len();
    let end = lines[start + 1..].iter().position(|l| !l.trim().is_empty() && indent(l) <= 4);
    lines[start..end.map_or(lines.len(), |n| start + 1 + n)].join("\n")
}

/// The routes that read an `Idempotency-Key` are those the spec gives one: each route is sent an
/// empty key, which only a route that reads it refuses (naming the header).
#[tokio::test]
async fn the_spec_documents_the_idempotency_key_of_exactly_the_routes_that_read_it() {
    let app = app();
    for route in ROUTES {
        let path =
            route.path.replace("{license_key}", "AAAAA-BBBBB").replace("{hardware_id}", "pc").replace("{product}", "p");
        let mut request = http::Request::builder().method(route.method.clone()).uri(path).header("idempotency-key", "");
        if route.auth == Auth::Vendor {
            request = request.header("authorization", format!("Bearer {ADMIN}"));
        }
        let response = handle(&app, &Function::ALL, request.body(Body::from("{}")).unwrap()).await;
        let answer: Value = serde_json::from_slice(response.body().as_ref()).unwrap();
        let reads_key = answer["error"]["field"] == "Idempotency-Key";
        let documented = spec_operation(route).contains("IdempotencyKey");
        assert_eq!(documented, reads_key, "{} {}: {answer}", route.method, route.path);
    }
}

/// docs/openapi.yaml must describe exactly the served routes, and every error and check code.
#[test]
fn openapi_describes_every_route_and_code() {
    let spec = include_str!("../../../docs/openapi.yaml");
    let mut documented = std::collections::BTreeSet::new();
    let mut in_paths = false;
    let mut path = "";
    for line in spec.lines() {
        if !line.starts_with(' ') {
            in_paths = line == "paths:";
            continue;
        }
        if !in_paths {
            continue;
        }
        if let Some(p) = line.strip_prefix("  /").and_then(|rest| rest.strip_suffix(':')) {
            path = &line[2..2 + p.len() + 1];
        } else if let Some(method) =
            ["get", "post", "patch", "delete", "put"].iter().find(|m| line == format!("    {m}:"))
        {
            documented.insert((method.to_uppercase(), path.to_string()));
        }
    }
    let served: std::collections::BTreeSet<(String, String)> =
        ROUTES.iter().map(|r| (r.method.to_string(), r.path.to_string())).collect();
    assert_eq!(documented, served, "docs/openapi.yaml and ROUTES differ");
    for route in ROUTES {
        let vendor = spec_operation(route).contains("security: [{ adminToken: [] }]");
        assert_eq!(vendor, route.auth == Auth::Vendor, "{} {}: security", route.method, route.path);
    }

    for code in ErrorCode::ALL {
        let name = serde_json::to_value(code).unwrap();
        assert!(
            spec.contains(&format!("- {}", name.as_str().unwrap())),
            "ErrorCode {name} is not in the ErrorCode enum"
        );
    }
    for code in [
        crate::rules::CheckCode::Valid,
        crate::rules::CheckCode::GracePeriod,
        crate::rules::CheckCode::Expired,
        crate::rules::CheckCode::Suspended,
        crate::rules::CheckCode::Revoked,
        crate::rules::CheckCode::ProductMismatch,
        crate::rules::CheckCode::DeviceNotActivated,
        crate::rules::CheckCode::LeaseExpired,
    ] {
        let name = serde_json::to_value(code).unwrap();
        assert!(spec.contains(name.as_str().unwrap()), "CheckCode {name} is not documented");
    }
}

/// The in-memory store with a fault a real one may have: seat writes that always lose the race (to
/// reach the bound on re-decisions), or an index of devices that still lists `stale` (as a
/// DynamoDB index may for a moment after a release).
struct Tweaked {
    inner: MemoryStore,
    always_raced: bool,
    stale: Option<crate::model::Device>,
}

impl Tweaked {
    fn raced() -> Self {
        Tweaked { inner: MemoryStore::new(), always_raced: true, stale: None }
    }

    /// `write` unless every write loses the race.
    async fn unless_raced(
        &self,
        write: impl Future<Output = Result<(), crate::store::WriteError>>,
    ) -> Result<(), crate::store::WriteError> {
        match self.always_raced {
            true => Err(crate::store::WriteError::Conflict),
            false => write.await,
        }
    }
}

impl Store for Tweaked {
    async fn create_licenses(
        &self,
        licenses: &[crate::model::License],
        record: Option<&crate::store::IdempotencyRecord>,
    ) -> Result<(), crate::store::WriteError> {
        self.inner.create_licenses(licenses, record).await
    }
    async fn idempotency_record(
        &self,
        key: &str,
    ) -> Result<Option<crate::store::IdempotencyRecord>, crate::store::StoreError> {
        self.inner.idempotency_record(key).await
    }
    async fn receipt(&self, scope: &str, key: &str) -> Result<Option<crate::store::Receipt>, crate::store::StoreError> {
        self.inner.receipt(scope, key).await
    }
    async fn licenses(
        &self,
        keys: &[crate::input::LicenseKey],
    ) -> Result<Vec<crate::model::License>, crate::store::StoreError> {
        self.inner.licenses(keys).await
    }
    async fn list_licenses(
        &self,
        lookup: &crate::store::Lookup,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<crate::store::Page, crate::store::StoreError> {
        self.inner.list_licenses(lookup, limit, cursor).await
    }
    async fn license_and_device(
        &self,
        key: &crate::input::LicenseKey,
        hardware_id: &crate::input::HardwareId,
    ) -> Result<(Option<crate::model::License>, Option<crate::model::Device>), crate::store::StoreError> {
        self.inner.license_and_device(key, hardware_id).await
    }
    async fn least_recently_seen(
        &self,
        key: &crate::input::LicenseKey,
        limit: u32,
    ) -> Result<Vec<crate::model::Device>, crate::store::StoreError> {
        let mut devices: Vec<_> = self.stale.iter().cloned().collect();
        devices.extend(self.inner.least_recently_seen(key, limit).await?);
        Ok(devices)
    }
    async fn devices_page(
        &self,
        key: &crate::input::LicenseKey,
        limit: u32,
        after: Option<&crate::input::HardwareId>,
    ) -> Result<(Vec<crate::model::Device>, bool), crate::store::StoreError> {
        self.inner.devices_page(key, limit, after).await
    }
    async fn devices(
        &self,
        key: &crate::input::LicenseKey,
        hardware_ids: &[crate::input::HardwareId],
    ) -> Result<Vec<crate::model::Device>, crate::store::StoreError> {
        self.inner.devices(key, hardware_ids).await
    }
    async fn activate(&self, write: &crate::store::ActivationWrite<'_>) -> Result<(), crate::store::WriteError> {
        self.unless_raced(self.inner.activate(write)).await
    }
    async fn deactivate(&self, write: &crate::store::DeactivationWrite<'_>) -> Result<(), crate::store::WriteError> {
        self.unless_raced(self.inner.deactivate(write)).await
    }
    async fn lease(&self, write: &crate::store::LeaseWrite<'_>) -> Result<(), crate::store::WriteError> {
        self.unless_raced(self.inner.lease(write)).await
    }
    async fn lapsed_leases(
        &self,
        key: &crate::input::LicenseKey,
        now: crate::time::Timestamp,
        limit: u32,
    ) -> Result<Vec<crate::rules::HeldLease>, crate::store::StoreError> {
        self.inner.lapsed_leases(key, now, limit).await
    }
    async fn clear_lapsed_leases(
        &self,
        key: &crate::input::LicenseKey,
        leases: &[crate::rules::HeldLease],
        now: crate::time::Timestamp,
    ) -> Result<(), crate::store::WriteError> {
        self.unless_raced(self.inner.clear_lapsed_leases(key, leases, now)).await
    }
    async fn upgrade_leases(&self, license: &crate::model::License) -> Result<(), crate::store::WriteError> {
        self.inner.upgrade_leases(license).await
    }
    async fn consume(
        &self,
        key: &crate::input::LicenseKey,
        plan: &crate::rules::ConsumptionPlan,
        holder: Option<(&crate::input::HardwareId, crate::time::Timestamp)>,
        receipt: Option<&crate::store::Receipt>,
    ) -> Result<(), crate::store::WriteError> {
        self.unless_raced(self.inner.consume(key, plan, holder, receipt)).await
    }
    async fn put_trial_terms(&self, terms: &crate::model::TrialTerms) -> Result<(), crate::store::StoreError> {
        self.inner.put_trial_terms(terms).await
    }
    async fn trial_terms(
        &self,
        product: &crate::input::Product,
    ) -> Result<Option<crate::model::TrialTerms>, crate::store::StoreError> {
        self.inner.trial_terms(product).await
    }
    async fn trial_marker(
        &self,
        product: &crate::input::Product,
        hardware_id: &crate::input::HardwareId,
    ) -> Result<Option<crate::model::TrialMarker>, crate::store::StoreError> {
        self.inner.trial_marker(product, hardware_id).await
    }
    async fn start_trial(
        &self,
        marker: &crate::model::TrialMarker,
        license: &crate::model::License,
        device: &crate::model::Device,
        receipt: Option<&crate::store::Receipt>,
    ) -> Result<(), crate::store::WriteError> {
        self.unless_raced(self.inner.start_trial(marker, license, device, receipt)).await
    }
    async fn replace_license(
        &self,
        previous: &crate::model::License,
        license: &crate::model::License,
    ) -> Result<(), crate::store::WriteError> {
        self.inner.replace_license(previous, license).await
    }
    async fn touch_device(
        &self,
        key: &crate::input::LicenseKey,
        hardware_id: &crate::input::HardwareId,
        sighting: &crate::store::Sighting,
    ) -> Result<(), crate::store::WriteError> {
        self.inner.touch_device(key, hardware_id, sighting).await
    }
    async fn append_events(
        &self,
        events: &[&crate::events::Event],
        keep_days: Option<u32>,
    ) -> Result<(), crate::store::StoreError> {
        self.inner.append_events(events, keep_days).await
    }

    async fn list_events(
        &self,
        query: &crate::store::EventQuery,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<crate::store::EventPage, crate::store::StoreError> {
        self.inner.list_events(query, limit, cursor).await
    }

    fn round_trips(&self) -> u64 {
        self.inner.round_trips()
    }
}

#[tokio::test]
async fn a_write_that_keeps_losing_races_gives_up_with_503_concurrent_update() {
    let app = App {
        cors: crate::cors::AllowedOrigins::None,
        store: Tweaked::raced(),
        signer: Some(TokenSigner::new([9; 32], &[]).unwrap()),
        admin_tokens: AdminTokens::parse(&hash_token(ADMIN)).unwrap(),
        issuer: "keygate-test".into(),
        clock: crate::time::Timestamp::now,
        webhooks: PUBLIC_WEBHOOKS,
    };
    let body = json!({"product": "editor", "license_type": "perpetual", "max_activations": 1}).to_string();
    let request = http::Request::builder()
        .method("POST")
        .uri("/v1/licenses")
        .header("authorization", format!("Bearer {ADMIN}"))
        .body(Body::from(body))
        .unwrap();
    let issued: Value = serde_json::from_slice(handle(&app, &Function::ALL, request).await.body().as_ref()).unwrap();
    let key = issued["licenses"][0]["license_key"].as_str().unwrap();
    let before = app.store.round_trips();
    let request = http::Request::builder()
        .method("POST")
        .uri("/v1/activate")
        .body(Body::from(device_body(key, "pc-1").to_string()))
        .unwrap();
    let response = handle(&app, &Function::ALL, request).await;
    let answer: Value = serde_json::from_slice(response.body().as_ref()).unwrap();
    assert_eq!((response.status().as_u16(), error_code(&answer)), (503, "CONCURRENT_UPDATE"));
    assert_eq!(app.store.round_trips() - before, u64::from(MAX_WRITE_ATTEMPTS), "one read per attempt, then it stops");
}

#[tokio::test]
async fn a_stale_index_listing_the_requesting_device_never_gets_it_a_token_without_a_seat() {
    use crate::input::{HardwareId, LicenseKey};
    // pc-2 was bound once (and released); the index of devices still lists it for a moment.
    let now = crate::time::Timestamp::now();
    let stale = crate::model::Device {
        hardware_id: HardwareId::parse("pc-2").unwrap(),
        name: None,
        platform: None,
        is_vm: false,
        activated_at: now.plus_seconds(-600),
        last_seen_at: now.plus_seconds(-600),
        lease_expires_at: None,
        borrowed_until: None,
        credential_until: Some(now.plus_days(30)),
    };
    let base = app();
    let app = App {
        store: Tweaked { inner: MemoryStore::new(), always_raced: false, stale: Some(stale) },
        signer: base.signer,
        admin_tokens: base.admin_tokens,
        issuer: base.issuer,
        cors: base.cors,
        clock: base.clock,
        webhooks: base.webhooks,
    };
    let (_, issued) = call(&app, "POST", "/v1/licenses", json!({"product": "editor", "license_type": "perpetual", "max_activations": 1, "device_rotation": true, "release_allowance": 5})).await;
    let key = issued["licenses"][0]["license_key"].as_str().unwrap().to_string();
    assert_eq!(call(&app, "POST", "/v1/activate", device_body(&key, "pc-1")).await.0, 200);
    let (status, answer) = call(&app, "POST", "/v1/activate", device_body(&key, "pc-2")).await;
    assert_eq!(status, 200, "{answer}");
    // Whatever the answer, the device it was given to holds the seat.
    let key = LicenseKey::parse(&key).unwrap();
    let (license, bound) = app.store.license_and_device(&key, &HardwareId::parse("pc-2").unwrap()).await.unwrap();
    assert!(bound.is_some(), "pc-2 was answered 200 with a token, so it must be bound");
    assert_eq!(license.unwrap().times_activated, 1, "pc-1 rotated out: one seat, one device");
}

#[tokio::test]
async fn the_memory_store_keeps_the_lease_conditions() {
    use crate::input::{HardwareId, LicenseKey};
    use crate::rules::LeasePlan;
    use crate::store::{LeaseWrite, WriteError};
    use crate::time::Timestamp;

    let app = app();
    let key = issue(&app, json!({"is_floating": true, "max_activations": 1})).await;
    assert_eq!(call(&app, "POST", "/v1/activate", device_body(&key, "pc-1")).await.0, 200);
    let (status, refused) = call(&app, "POST", "/v1/activate", device_body(&key, "pc-2")).await;
    assert_eq!((status, error_code(&refused)), (409, "ACTIVATION_LIMIT_REACHED"));

    let license_key = LicenseKey::parse(&key).unwrap();
    let now = Timestamp::now();
    let (pc1, pc2) = (HardwareId::parse("pc-1").unwrap(), HardwareId::parse("pc-2").unwrap());
    let (license, device) = app.store.license_and_device(&license_key, &pc1).await.unwrap();
    let (license, device) = (license.unwrap(), device.unwrap());
    let held = device.lease_expires_at.unwrap();
    let other = crate::model::Device { hardware_id: pc2.clone(), lease_expires_at: None, ..device.clone() };
    let write = |device, new_device, plan| LeaseWrite {
        license: &license,
        device,
        new_device,
        plan,
        borrowed_until: None,
        now,
        receipt: None,
    };
    // A second lease on one seat, a renewal of a changed lease, a take-over of a changed lease.
    let slot = |take_over| crate::rules::Slot { own: None, take_over };
    let extra = LeasePlan::Acquire { slot: slot(vec![]), until: now.plus_seconds(60) };
    let stale_renewal = LeasePlan::Renew { observed: held.plus_seconds(-1), until: now.plus_seconds(60) };
    let stale_take_over = LeasePlan::Acquire { slot: slot(vec![(pc1.clone(), held.plus_seconds(-1))]), until: now };
    for (device, plan) in [(&other, &extra), (&device, &stale_renewal), (&other, &stale_take_over)] {
        let refused = app.store.lease(&write(device, device.hardware_id == pc2, plan)).await;
        assert!(matches!(refused, Err(WriteError::Conflict)), "{plan:?}");
    }
    let renewal = LeasePlan::Renew { observed: held, until: held.plus_seconds(60) };
    app.store.lease(&write(&device, false, &renewal)).await.unwrap();
    let (after, device) = app.store.license_and_device(&license_key, &pc1).await.unwrap();
    assert_eq!(after.unwrap().leases_held, 1);
    assert_eq!(device.unwrap().lease_expires_at, Some(held.plus_seconds(60)));
    assert_eq!(app.store.license_and_device(&license_key, &pc2).await.unwrap().1, None);
}

#[tokio::test]
async fn the_memory_store_keeps_the_consumption_conditions() {
    let app = app();
    let key = issue(&app, json!({"max_consumptions": 5, "consumption_period": "day"})).await;
    assert_eq!(call(&app, "POST", "/v1/activate", device_body(&key, "pc-1")).await.0, 200);
    let consume =
        |amount: u64| json!({"license_key": key, "product": "editor", "hardware_id": "pc-1", "amount": amount});
    let (status, answer) = call(&app, "POST", "/v1/consume", consume(4)).await;
    assert_eq!((status, answer["remaining"].clone()), (200, json!(1)));
    let (status, refused) = call(&app, "POST", "/v1/consume", consume(2)).await;
    assert_eq!((status, error_code(&refused)), (409, "CONSUMPTION_LIMIT_REACHED"));

    // A plan made before another consumer's write no longer fits and is refused by the store.
    let license_key = crate::input::LicenseKey::parse(&key).unwrap();
    let mut license = app.store.licenses(std::slice::from_ref(&license_key)).await.unwrap().pop().unwrap();
    let now = crate::time::Timestamp::now();
    license.consumption.clear();
    let stale =
        crate::rules::plan_consumption(&license, &crate::model::CounterKey::License, &license.metering(), 5, now)
            .unwrap();
    assert!(matches!(
        app.store.consume(&license_key, &stale, None, None).await,
        Err(crate::store::WriteError::Conflict)
    ));
    assert_eq!(stored(&app, &key).await["license"]["consumption"]["*"]["used"], 4);
}

/// Suspending a suspended license used to write again and move the version although nothing
/// changed (a newcomer's finding); a patch that changes nothing now writes nothing.
#[tokio::test]
async fn a_patch_that_changes_nothing_writes_nothing() {
    let app = app();
    let key = issue(&app, json!({})).await;
    let (status, first) = patch(&app, &key, json!({"status": "suspended"})).await;
    assert_eq!((status, first["license"]["version"].clone()), (200, json!(1)));
    let writes = app.store.round_trips();
    let (status, again) = patch(&app, &key, json!({"status": "suspended", "version": 1})).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["license"], first["license"], "same version, same updated_at");
    assert_eq!(app.store.round_trips() - writes, 1, "one read, no write");
    let (_, changed) = patch(&app, &key, json!({"status": "active"})).await;
    assert_eq!(changed["license"]["version"], 2);
}

/// Clients and CDNs may cache the signing keys, and revalidate them for nothing (a newcomer's finding:
/// the JWKS came with no Cache-Control or ETag).
#[tokio::test]
async fn the_signing_keys_can_be_cached_and_revalidated() {
    let app = app();
    let get = |if_none_match: Option<&str>| {
        let mut request = http::Request::builder().method("GET").uri("/.well-known/jwks.json");
        if let Some(tags) = if_none_match {
            request = request.header("if-none-match", tags);
        }
        handle(&app, &Function::ALL, request.body(Body::Empty).unwrap())
    };
    let first = get(None).await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["cache-control"], "public, max-age=300");
    let etag = first.headers()["etag"].to_str().unwrap().to_string();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    let revalidated = get(Some(&format!("\"other\", W/{etag}"))).await;
    assert_eq!((revalidated.status().as_u16(), revalidated.body().as_ref().is_empty()), (304, true));
    assert_eq!(revalidated.headers()["etag"], etag.as_str());
    assert_eq!(get(Some("\"stale\"")).await.status(), 200);
}

/// The operations read the time from the app's clock, so time can pass in a test without touching
/// the store: a floating seat whose lease lapsed is taken by another device at once.
#[tokio::test]
async fn time_passes_by_the_apps_clock() {
    static LATER: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
    fn clock() -> crate::time::Timestamp {
        crate::time::Timestamp::now().plus_seconds(LATER.load(std::sync::atomic::Ordering::SeqCst))
    }
    let app = App { clock, ..app() };
    let key = issue(&app, json!({"is_floating": true, "max_activations": 1, "floating_timeout_minutes": 10})).await;
    assert_eq!(call(&app, "POST", "/v1/activate", device_body(&key, "pc-1")).await.0, 200);
    let (status, full) = call(&app, "POST", "/v1/activate", device_body(&key, "pc-2")).await;
    assert_eq!((status, error_code(&full)), (409, "ACTIVATION_LIMIT_REACHED"));
    LATER.store(11 * 60, std::sync::atomic::Ordering::SeqCst);
    let (status, taken) = call(&app, "POST", "/v1/activate", device_body(&key, "pc-2")).await;
    assert_eq!(status, 200, "the lapsed seat is free: {taken}");
}

#[tokio::test]
async fn two_idempotency_keys_are_refused() {
    let app = app();
    let body = json!({"license_key": "AAAAA-BBBBB", "product": "editor", "hardware_id": "pc-1", "amount": 1});
    let request = http::Request::builder()
        .method("POST")
        .uri("/v1/consume")
        .header("idempotency-key", "a")
        .header("idempotency-key", "b")
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = handle(&app, &Function::ALL, request).await;
    let answer: Value = serde_json::from_slice(response.body().as_ref()).unwrap();
    assert_eq!((response.status().as_u16(), answer["error"]["field"].as_str()), (400, Some("Idempotency-Key")));
}

#[tokio::test]
async fn the_memory_store_keeps_receipts_with_their_writes() {
    let app = app();
    let key = issue(&app, json!({"max_consumptions": 10})).await;
    assert_eq!(call(&app, "POST", "/v1/activate", device_body(&key, "pc-1")).await.0, 200);
    let body = json!({"license_key": key, "product": "editor", "hardware_id": "pc-1", "amount": 3}).to_string();
    let send = |key: &'static str| {
        let request = http::Request::builder()
            .method("POST")
            .uri("/v1/consume")
            .header("idempotency-key", key)
            .body(Body::from(body.clone()))
            .unwrap();
        handle(&app, &Function::ALL, request)
    };
    let first = send("k-1").await;
    let again = send("k-1").await;
    assert_eq!((first.status(), first.body()), (again.status(), again.body()));
    assert_eq!(stored(&app, &key).await["license"]["consumption"]["*"]["used"], 3, "counted once");
    assert_eq!(send("k-2").await.status(), 200);
    assert_eq!(stored(&app, &key).await["license"]["consumption"]["*"]["used"], 6, "another key is another request");
}

#[test]
fn only_whole_number_literals_outside_strings_are_rewritten() {
    let rewrite = |text: &str| String::from_utf8(whole_numbers_as_integers(text.as_bytes()).into_owned()).unwrap();
    assert_eq!(
        rewrite(r#"{"a": 2.0, "b": 1e3, "c": -4.00e0, "d": 2.5, "e": 1e300}"#),
        r#"{"a": 2, "b": 1000, "c": -4, "d": 2.5, "e": 1e300}"#
    );
    assert_eq!(rewrite(r#"{"s": "2.0 \" 3.0", "t": [1.0]}"#), r#"{"s": "2.0 \" 3.0", "t": [1]}"#);
    for invalid in ["01.0", "1.", ".5", "1e", "1.0e+", "--1.0", "1.0.0"] {
        assert_eq!(rewrite(invalid), invalid, "invalid JSON stays as it is");
        assert!(!is_json_number(invalid), "{invalid}");
    }
    assert!(["0", "-0.0", "1.5e-7", "10E+2"].iter().all(|n| is_json_number(n)));
}

/// Found by schemathesis: JSON Schema's integers include `2.0` and `1e1`, which the server refused.
#[tokio::test]
async fn integers_written_with_a_fraction_or_an_exponent_are_integers() {
    let app = app();
    let terms = json!({"days": 84.0, "max_activations": 1e0}).to_string().replace("1.0", "1e0");
    let (status, answer) = call_raw(&app, "PUT", "/v1/products/editor/trial", terms.into_bytes(), Some(ADMIN)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!((answer["trial"]["days"].clone(), answer["trial"]["max_activations"].clone()), (json!(84), json!(1)));
    let body = br#"{"product": "editor", "license_type": "perpetual", "max_activations": 2.0, "quantity": 1e0,
        "metadata": {"seats": 3.0, "ratio": 2.5, "name": "2.0 stays text"}}"#;
    let (status, answer) = call_raw(&app, "POST", "/v1/licenses", body.to_vec(), Some(ADMIN)).await;
    assert_eq!(status, 201, "{answer}");
    let issued = &answer["licenses"][0];
    assert_eq!((issued["max_activations"].clone(), issued["metadata"]["ratio"].clone()), (json!(2), json!(2.5)));
    assert_eq!(issued["metadata"]["name"], "2.0 stays text");
    for (field, value) in [("max_activations", "2.5"), ("max_activations", "1e10"), ("max_activations", "-1.0")] {
        let body = format!(r#"{{"product": "editor", "license_type": "perpetual", "{field}": {value}}}"#);
        let (status, answer) = call_raw(&app, "POST", "/v1/licenses", body.into_bytes(), Some(ADMIN)).await;
        assert_eq!((status, answer["error"]["field"].as_str()), (400, Some(field)), "{value}: {answer}");
    }
}

/// Found by schemathesis: serde's derived structs also take an array of their fields' values.
#[tokio::test]
async fn a_nested_object_is_never_taken_from_an_array() {
    let app = app();
    let base = json!({"product": "editor", "license_type": "perpetual", "max_activations": 1});
    for (field, value) in
        [("customer", json!([null, null])), ("expiration", json!(["never"])), ("features", json!([["export"]]))]
    {
        let mut body = base.clone();
        body[field] = value.clone();
        let (status, answer) = call(&app, "POST", "/v1/licenses", body).await;
        assert_eq!(status, 400, "{field}: {value} → {answer}");
        assert!(answer["error"]["field"].as_str().unwrap().starts_with(field), "{answer}");
    }
    let key = issue(&app, json!({})).await;
    let (status, answer) = patch(&app, &key, json!({"customer": ["a@example.com"]})).await;
    assert_eq!(status, 400, "{answer}");
    let terms = json!({"days": 7, "features": [["export"]]}).to_string().into_bytes();
    assert_eq!(call_raw(&app, "PUT", "/v1/products/editor/trial", terms, Some(ADMIN)).await.0, 400);
    let (status, _) = call(
        &app,
        "POST",
        "/v1/licenses",
        json!({"product": "editor", "license_type": "perpetual",
        "max_activations": 1, "customer": {"email": "a@example.com"}, "expiration": null,
        "features": [{"code": "export"}]}),
    )
    .await;
    assert_eq!(status, 201, "objects (and null where allowed) still are");
}

/// Found by schemathesis: metadata numbers were parsed inexactly (1e-130 was stored below
/// DynamoDB's range: a 500 there; 3.0e-130 read back as 3.0000000000000003e-130).
#[tokio::test]
async fn metadata_numbers_are_kept_exactly_as_written() {
    let app = app();
    let key = issue(&app, json!({})).await;
    let body = br#"{"metadata": {"small": 3.0e-130, "smallest": 1e-130, "tiny": 1e-128}}"#.to_vec();
    let (status, answer) = call_raw(&app, "PATCH", &format!("/v1/licenses/{key}"), body, Some(ADMIN)).await;
    assert_eq!(status, 200, "{answer}");
    let metadata = &stored(&app, &key).await["license"]["metadata"];
    for (name, literal) in [("small", "3.0e-130"), ("smallest", "1e-130"), ("tiny", "1e-128")] {
        assert_eq!(metadata[name].as_f64(), literal.parse::<f64>().ok(), "{name}: {}", metadata[name]);
    }
}
