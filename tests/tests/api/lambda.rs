//! The five function binaries end to end: each started the way Lambda starts it, on the Runtime API
//! emulator, serving API Gateway v2 events against DynamoDB Local. What the handler tests cannot
//! show: each binary's init (configuration, SDK clients, the runtime), its routes, and the event and
//! response conversion of the real lambda_http loop.

use crate::{apigw_event_json, verify_by_hand};
use keygate::auth::hash_token;
use keygate::signing::generate_seed;
use keygate_tests::emulator::{Emulator, Outcome};
use keygate_tests::{built_binary, device, TestApp};
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::sync::mpsc;

const ADMIN_TOKEN: &str = "lambda-test-admin-token";

/// A function binary started as Lambda starts it, with Keygate's configuration; `signing_key` None
/// leaves the key out.
fn lambda_command(name: &str, emulator: &Emulator, table: &str, signing_key: Option<&str>) -> Command {
    let binary = built_binary(name, name);
    let mut command = emulator.lambda_command(&binary, name);
    command.env("KEYGATE_TABLE", table).env("KEYGATE_ADMIN_TOKEN_SHA256", hash_token(ADMIN_TOKEN));
    if let Some(key) = signing_key {
        command.env("KEYGATE_SIGNING_KEY", key);
    }
    command
}

/// A running function binary with its own emulator; killed when dropped, whatever the test did.
struct Function {
    child: Child,
    events: mpsc::Sender<String>,
    outcomes: mpsc::UnboundedReceiver<Outcome>,
    _emulator: Emulator,
}

impl Function {
    async fn start(name: &str, table: &str, signing_key: &str) -> Self {
        Self::start_with(name, table, signing_key, &[], Stdio::null()).await
    }

    /// Started with further (or overriding) environment variables, its output (the logs) going to
    /// `logs`.
    async fn start_with(name: &str, table: &str, signing_key: &str, env: &[(&str, &str)], logs: Stdio) -> Self {
        let emulator = Emulator::start().await;
        let (events, outcomes) = emulator.session().await;
        let mut command = lambda_command(name, &emulator, table, Some(signing_key));
        command.envs(env.iter().copied());
        let child = command.stdout(logs).stderr(Stdio::null()).spawn().unwrap();
        Self { child, events, outcomes, _emulator: emulator }
    }

    /// One invocation: the function's answer, as JSON.
    async fn invoke_raw(&mut self, event: String) -> Value {
        self.events.send(event).await.unwrap();
        let outcome = tokio::time::timeout(Duration::from_secs(30), self.outcomes.recv())
            .await
            .expect("the function answers within 30 s")
            .expect("the emulator is running");
        match outcome {
            Outcome::Response(body) => serde_json::from_slice(&body).unwrap(),
            Outcome::Error(body) => panic!("the function reported an error: {}", String::from_utf8_lossy(&body)),
        }
    }

    /// One invocation: the API Gateway response's status and JSON body.
    async fn invoke(&mut self, event: String) -> (u64, Value) {
        self.events.send(event).await.unwrap();
        let outcome = tokio::time::timeout(Duration::from_secs(30), self.outcomes.recv())
            .await
            .expect("the function answers within 30 s")
            .expect("the emulator is running");
        let response: Value = match outcome {
            Outcome::Response(body) => serde_json::from_slice(&body).unwrap(),
            Outcome::Error(body) => panic!("the function reported an error: {}", String::from_utf8_lossy(&body)),
        };
        let body = serde_json::from_str(response["body"].as_str().unwrap_or("null")).unwrap();
        (response["statusCode"].as_u64().unwrap(), body)
    }
}

impl Drop for Function {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn post(path: &str, body: &Value) -> String {
    apigw_event_json("POST", path, "", &body.to_string(), false)
}

fn get(path: &str) -> String {
    apigw_event_json("GET", path, "", "", false)
}

fn with_admin_token(event: String) -> String {
    let mut event: Value = serde_json::from_str(&event).unwrap();
    event["headers"]["authorization"] = json!(format!("Bearer {ADMIN_TOKEN}"));
    event.to_string()
}

#[tokio::test]
async fn the_function_binaries_serve_api_gateway_events_over_the_runtime_api() {
    let t = TestApp::spawn().await;
    let table = t.app.store.table().to_string();
    let key = t.issue(json!({"max_activations": 1})).await;
    let seed = generate_seed().unwrap();
    let (mut activate, mut check, mut deactivate, mut issue) = tokio::join!(
        Function::start("activate", &table, &seed),
        Function::start("check", &table, &seed),
        Function::start("deactivate", &table, &seed),
        Function::start("issue", &table, &seed),
    );

    let (status, activated) = activate.invoke(post("/v1/activate", &device(&key, "pc-1"))).await;
    assert_eq!(status, 200, "{activated}");
    let (status, refused) = activate.invoke(post("/v1/activate", &device(&key, "pc-2"))).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (409, Some("ACTIVATION_LIMIT_REACHED")), "{refused}");

    // The token the activate binary signed verifies against the keys the check binary publishes.
    let (status, jwks) = check.invoke(get("/.well-known/jwks.json")).await;
    assert_eq!(status, 200);
    let claims = verify_by_hand(activated["token"].as_str().unwrap(), &jwks).unwrap();
    assert_eq!((claims["hwid"].as_str(), claims["code"].as_str()), (Some("pc-1"), Some("VALID")), "{claims}");

    let (status, checked) = check.invoke(post("/v1/check", &device(&key, "pc-1"))).await;
    assert_eq!((status, checked["code"].as_str()), (200, Some("VALID")), "{checked}");
    let (status, bad) = check.invoke(apigw_event_json("POST", "/v1/check", "", "{not json", false)).await;
    assert_eq!((status, bad["error"]["code"].as_str()), (400, Some("MALFORMED_JSON")), "{bad}");
    let (status, elsewhere) = check.invoke(post("/v1/activate", &device(&key, "pc-1"))).await;
    assert_eq!(status, 404, "the check function does not serve activate: {elsewhere}");

    let (status, shown) = issue.invoke(with_admin_token(get(&format!("/v1/licenses/{key}")))).await;
    assert_eq!((status, shown["devices"].as_array().map(Vec::len)), (200, Some(1)), "{shown}");
    let (status, _) = issue.invoke(get(&format!("/v1/licenses/{key}"))).await;
    assert_eq!(status, 401, "vendor routes need the admin token");

    let (status, released) = deactivate.invoke(post("/v1/deactivate", &device(&key, "pc-1"))).await;
    assert_eq!(status, 200, "{released}");
    let (status, activated) = activate.invoke(post("/v1/activate", &device(&key, "pc-2"))).await;
    assert_eq!(status, 200, "the released seat is free again: {activated}");
    let stored = t.stored(&key).await;
    let devices: Vec<&str> =
        stored["devices"].as_array().unwrap().iter().filter_map(|d| d["hardware_id"].as_str()).collect();
    assert_eq!((stored["license"]["times_activated"].as_u64(), devices), (Some(1), vec!["pc-2"]), "{stored}");
}

#[tokio::test]
async fn a_client_function_without_a_signing_key_refuses_to_start() {
    let emulator = Emulator::start().await;
    let mut first_next = emulator.watch_first_next();
    let mut command = lambda_command("check", &emulator, "unused", None);
    let output = tokio::task::spawn_blocking(move || command.stderr(Stdio::piped()).output().unwrap()).await.unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("KEYGATE_SIGNING_KEY is not set"), "{stderr}");
    assert!(first_next.try_recv().is_err(), "it never asked for an event");
}

#[tokio::test]
async fn a_vendor_change_is_logged_with_the_name_of_the_token_that_made_it_and_no_secret() {
    let t = TestApp::spawn().await;
    let table = t.app.store.table().to_string();
    let key = t.issue(json!({"max_activations": 1})).await;
    let logs = std::env::temp_dir().join(format!("{}.log", keygate::input::random_id("kg-logs").unwrap()));
    let named = format!("ci:{}", hash_token(ADMIN_TOKEN));
    let env = [
        ("KEYGATE_ADMIN_TOKEN_SHA256", named.as_str()),
        ("AWS_LAMBDA_LOG_FORMAT", "JSON"),
        ("AWS_LAMBDA_LOG_LEVEL", "INFO"),
    ];
    let stderr = Stdio::from(std::fs::File::create(&logs).unwrap());
    let mut issue = Function::start_with("issue", &table, &generate_seed().unwrap(), &env, stderr).await;
    let patch = apigw_event_json("PATCH", &format!("/v1/licenses/{key}"), "", r#"{"status":"suspended"}"#, false);
    let (status, answer) = issue.invoke(with_admin_token(patch)).await;
    assert_eq!(status, 200, "{answer}");
    let (status, _) = issue.invoke(with_admin_token(get(&format!("/v1/licenses/{key}")))).await;
    assert_eq!(status, 200);
    drop(issue);
    let logged = std::fs::read_to_string(&logs).unwrap();
    let _ = std::fs::remove_file(&logs);
    let calls: Vec<Value> = logged
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line.to_string().contains("vendor call"))
        .collect();
    assert_eq!(calls.len(), 1, "the change, not the read: {logged}");
    let call = calls[0].to_string();
    assert!(call.contains(r#""token":"ci""#) && call.contains("PATCH /v1/licenses/{license_key}"), "{call}");
    assert!(call.contains(r#""request_id":""#), "the answer's request id: {call}");
    assert!(!logged.contains(ADMIN_TOKEN) && !logged.contains(&key), "no token, no license key: {logged}");
}

/// The events binary as Lambda runs it: a stream batch (Lambda's record format) recorded in the
/// audit log with a partial-batch answer, and the schedule's tick answered without a batch.
#[tokio::test]
async fn the_events_binary_records_a_stream_batch_and_answers_the_schedules_tick() {
    let t = TestApp::spawn().await;
    let key = t.issue(json!({})).await;
    let store = &t.app.store;
    let image = keygate_tests::license_image(store, &key).await;
    let batch = json!({"Records": [keygate_tests::insert_record(&image, "binary-1", 7, 1_795_659_126.0)]});
    let seed = generate_seed().unwrap();
    let mut events = Function::start("events", store.table(), &seed).await;
    assert_eq!(events.invoke_raw(batch.to_string()).await, json!({"batchItemFailures": []}));
    let tick = json!({"version": "0", "source": "aws.events", "detail-type": "Scheduled Event", "detail": {}});
    assert_eq!(events.invoke_raw(tick.to_string()).await, json!({}));
    let listed = t.admin_get(&format!("/v1/licenses/{key}/events")).await;
    let ids: Vec<&str> = listed.body["events"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["binary-1.0"], "{}", listed.body);
}
