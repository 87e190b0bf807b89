//! Webhooks against DynamoDB Local and a real HTTP receiver (tests/webhooks/receiver.py): every
//! delivery checked by an independent Standard Webhooks implementation (the `standardwebhooks`
//! package), retries through a failing receiver, failures kept for a replay, SSRF refusals.

use crate::events::{record_stream, session, SESSION};
use keygate::time::Timestamp;
use keygate_tests::TestApp;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::PathBuf;
use tokio::io::AsyncBufReadExt;

fn python() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv-contract/bin/python");
    assert!(venv.exists(), "{} is missing: `make test-contract` (or make test) installs it", venv.display());
    venv
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("webhooks").join(name)
}

/// The receiver process (killed when dropped) and the files it records to and reads its mode from.
struct Receiver {
    _process: tokio::process::Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Receiver {
    async fn start(mode: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("mode"), mode).unwrap();
        let mut process = tokio::process::Command::new(python())
            .arg(script("receiver.py"))
            .arg(dir.path().join("received.jsonl"))
            .arg(dir.path().join("mode"))
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = tokio::io::BufReader::new(process.stdout.take().unwrap()).lines();
        let port = lines.next_line().await.unwrap().unwrap().trim().parse().unwrap();
        Self { _process: process, port, dir }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/keygate", self.port)
    }

    fn set_mode(&self, mode: &str) {
        std::fs::write(self.dir.path().join("mode"), mode).unwrap();
    }

    /// What it received, as the independent verifier sees it with `secret`.
    async fn verified(&self, secret: &str) -> Value {
        let output = tokio::process::Command::new(python())
            .arg(script("verify.py"))
            .arg(secret)
            .arg(self.dir.path().join("received.jsonl"))
            .output()
            .await
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_slice(&output.stdout).unwrap()
    }
}

/// Delivery rounds as the schedule would run them, `step` seconds apart, from now.
async fn rounds(t: &TestApp, count: usize, step: i64) {
    let mut at = Timestamp::now();
    for _ in 0..count {
        t.app.store.deliver_due(at, t.app.webhooks, 50).await.unwrap();
        at = at.plus_seconds(step);
    }
}

async fn endpoint(t: &TestApp, body: Value) -> (String, String) {
    let made = t.admin_post("/v1/webhooks", &body).await;
    assert_eq!(made.status, 201, "{}", made.body);
    (made.body["webhook"]["id"].as_str().unwrap().to_string(), made.body["secret"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn a_receiver_that_fails_then_recovers_gets_every_event_signed_with_stable_ids() {
    let t = TestApp::spawn_with_local_webhooks().await;
    let receiver = Receiver::start("fail 3").await;
    let (id, secret) = endpoint(&t, json!({"url": receiver.url()})).await;
    let key = session(&t).await;
    record_stream(&t, None).await;
    rounds(&t, 4, 400).await;

    let events = t.admin_get(&format!("/v1/licenses/{key}/events")).await.body["events"].clone();
    let event_ids: BTreeSet<String> =
        events.as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(event_ids.len(), SESSION.len());
    let report = receiver.verified(&secret).await;
    assert_eq!(report["refused"], 0, "every delivery verifies: {report}");
    let received = report["verified"].as_array().unwrap();
    let delivered: BTreeSet<String> =
        received.iter().filter(|d| d["answered"] == 204).map(|d| d["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(delivered, event_ids, "each event delivered, under its event's id");
    assert_eq!(received.iter().filter(|d| d["answered"] == 500).count(), 3, "three attempts failed");
    assert_eq!(received.len(), SESSION.len() + 3, "each failure retried once, nothing else twice");

    // The vendor sees every attempt: the three failed ones were retried and delivered.
    let listed = t.admin_get(&format!("/v1/webhooks/{id}/deliveries")).await;
    let deliveries = listed.body["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), SESSION.len());
    assert!(deliveries.iter().all(|d| d["status"] == "delivered"), "{}", listed.body);
    let retried: Vec<&Value> = deliveries.iter().filter(|d| d["attempts"].as_array().unwrap().len() == 2).collect();
    assert_eq!(retried.len(), 3);
    assert!(retried.iter().all(|d| d["attempts"][0]["status"] == 500 && d["attempts"][1]["status"] == 204));

    // The stream read again (a redelivery to the events function) makes no second delivery.
    record_stream(&t, None).await;
    rounds(&t, 1, 0).await;
    assert_eq!(receiver.verified(&secret).await["verified"].as_array().unwrap().len(), SESSION.len() + 3);
}

#[tokio::test]
async fn a_failing_endpoint_ends_in_failed_deliveries_that_a_replay_sends_again() {
    let t = TestApp::spawn_with_local_webhooks().await;
    let receiver = Receiver::start("fail").await;
    let (id, secret) = endpoint(&t, json!({"url": receiver.url(), "event_types": ["license.created"]})).await;
    t.issue(json!({})).await;
    record_stream(&t, None).await;
    // Eight attempts over 27½ hours; then none.
    rounds(&t, 12, 11 * 3_600).await;
    let failed = t.admin_get(&format!("/v1/webhooks/{id}/deliveries?status=failed")).await;
    let failed = failed.body["deliveries"].as_array().unwrap().clone();
    assert_eq!(failed.len(), 1, "only license.created was asked for");
    let attempts = failed[0]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 8);
    assert!(attempts.iter().all(|a| a["status"] == 500 && a["latency_ms"].is_u64()));
    assert_eq!(
        t.admin_get(&format!("/v1/webhooks/{id}/deliveries?status=pending")).await.body["deliveries"],
        json!([])
    );

    receiver.set_mode("ok");
    let replayed = t.admin_post(&format!("/v1/webhooks/{id}/replay"), &json!({})).await;
    assert_eq!((replayed.status, replayed.body["replayed"].clone()), (200, json!(1)), "{}", replayed.body);
    rounds(&t, 1, 0).await;
    let report = receiver.verified(&secret).await;
    let answers: Vec<&Value> = report["verified"].as_array().unwrap().iter().map(|d| &d["answered"]).collect();
    assert_eq!(answers.len(), 9);
    assert_eq!(answers.last(), Some(&&json!(204)));
    let delivered = t.admin_get(&format!("/v1/webhooks/{id}/deliveries?status=delivered")).await;
    assert_eq!(delivered.body["deliveries"][0]["attempts"].as_array().unwrap().len(), 9, "the history is kept");
}

#[tokio::test]
async fn rounds_running_at_once_send_each_delivery_once() {
    let t = TestApp::spawn_with_local_webhooks().await;
    let receiver = Receiver::start("ok").await;
    let (_, secret) = endpoint(&t, json!({"url": receiver.url()})).await;
    session(&t).await;
    record_stream(&t, None).await;
    // The batch's round, the schedule's tick and a stale re-read, all at once: each delivery is
    // claimed by one of them before it is sent.
    let (store, now) = (&t.app.store, Timestamp::now());
    let rounds = (0..4).map(|_| store.deliver_due(now, t.app.webhooks, 50));
    let claimed: usize = keygate_tests::join_all(rounds).await.into_iter().map(Result::unwrap).sum();
    assert_eq!(claimed, SESSION.len());
    let report = receiver.verified(&secret).await;
    assert_eq!(report["verified"].as_array().unwrap().len(), SESSION.len(), "no event sent twice: {report}");
}

#[tokio::test]
async fn a_change_saved_over_a_stale_read_is_refused_so_a_rotation_is_never_undone() {
    let t = TestApp::spawn_with_local_webhooks().await;
    let (id, _) = endpoint(&t, json!({"url": "https://hooks.example.com/k"})).await;
    let stale = t.app.store.endpoint(&id).await.unwrap().unwrap();
    let rotated = t.admin_post(&format!("/v1/webhooks/{id}/secret"), &json!({})).await;
    assert_eq!(rotated.status, 200);
    let overwrite = t.app.store.put_endpoint(&stale, false).await;
    assert!(matches!(overwrite, Err(keygate::store::WriteError::Conflict)), "{overwrite:?}");
    let stored = t.app.store.endpoint(&id).await.unwrap().unwrap();
    assert_eq!(stored.secret.as_text(), rotated.body["secret"].as_str().unwrap(), "the rotation stands");
}

#[tokio::test]
async fn a_rotated_secret_signs_beside_the_new_one_for_a_day() {
    let t = TestApp::spawn_with_local_webhooks().await;
    let receiver = Receiver::start("ok").await;
    let (id, old) = endpoint(&t, json!({"url": receiver.url()})).await;
    let rotated = t.admin_post(&format!("/v1/webhooks/{id}/secret"), &json!({})).await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    let new = rotated.body["secret"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    t.issue(json!({})).await;
    record_stream(&t, None).await;
    rounds(&t, 1, 0).await;
    for secret in [&old, &new] {
        let report = receiver.verified(secret).await;
        assert_eq!((report["verified"].as_array().unwrap().len(), report["refused"].clone()), (1, json!(0)));
    }
    let stranger = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    assert_eq!(receiver.verified(stranger).await["refused"], 1, "another secret does not verify");
}

#[tokio::test]
async fn endpoints_are_managed_and_private_or_plain_http_urls_are_refused_in_a_deployment() {
    let t = TestApp::spawn().await;
    for url in [
        "https://127.0.0.1/hook",
        "https://10.1.2.3/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/hook",
        "https://localhost:8443/hook",
        "http://hooks.example.com/hook",
        "https://user:pw@hooks.example.com/hook",
        "not a url",
    ] {
        let refused = t.admin_post("/v1/webhooks", &json!({"url": url})).await;
        assert_eq!(
            (refused.status, refused.body["error"]["field"].clone()),
            (400, json!("url")),
            "{url}: {}",
            refused.body
        );
    }
    let refused =
        t.admin_post("/v1/webhooks", &json!({"url": "https://hooks.example.com/k", "event_types": ["x"]})).await;
    assert_eq!(refused.body["error"]["field"], "event_types");
    assert_eq!(t.admin_get("/v1/webhooks").await.body["webhooks"], json!([]), "refusals save nothing");

    let (id, secret) = endpoint(&t, json!({"url": "https://hooks.example.com/k"})).await;
    assert!(secret.starts_with("whsec_"));
    let listed = t.admin_get("/v1/webhooks").await;
    assert_eq!(listed.body["webhooks"][0]["id"], id.as_str());
    assert!(!listed.body.to_string().contains(&secret), "a listing never shows the secret");
    let path = format!("/v1/webhooks/{id}");
    let private = t.admin_patch(&path, &json!({"url": "https://192.168.0.10/hook"})).await;
    assert_eq!((private.status, private.body["error"]["field"].clone()), (400, json!("url")));
    let patched = t.admin_patch(&path, &json!({"enabled": false, "event_types": ["device.activated"]})).await;
    assert_eq!((patched.status, patched.body["webhook"]["enabled"].clone()), (200, json!(false)), "{}", patched.body);
    assert_eq!(t.admin_get(&path).await.body["webhook"]["event_types"], json!(["device.activated"]));
    assert_eq!(t.admin_delete(&path).await.status, 200);
    for (method, answer) in [
        ("GET", t.admin_get(&path).await),
        ("DELETE", t.admin_delete(&path).await),
        ("PATCH", t.admin_patch(&path, &json!({"enabled": true})).await),
        ("GET", t.admin_get("/v1/webhooks/not-an-id").await),
    ] {
        assert_eq!((answer.status, answer.error_code()), (404, "WEBHOOK_NOT_FOUND"), "{method}: {}", answer.body);
    }
}

#[tokio::test]
async fn a_deployment_holds_fifty_endpoints_and_listings_refuse_what_they_cannot_answer() {
    let t = TestApp::spawn().await;
    let (id, _) = endpoint(&t, json!({"url": "https://hooks.example.com/0"})).await;
    for n in 1..keygate::store::MAX_ENDPOINTS {
        endpoint(&t, json!({"url": format!("https://hooks.example.com/{n}")})).await;
    }
    let one_more = t.admin_post("/v1/webhooks", &json!({"url": "https://hooks.example.com/51"})).await;
    assert_eq!((one_more.status, one_more.error_code()), (409, "WEBHOOK_LIMIT_REACHED"), "{}", one_more.body);
    assert_eq!(t.admin_get("/v1/webhooks").await.body["webhooks"].as_array().unwrap().len(), 50, "none was added");
    for (query, field) in
        [("status=lost", "status"), ("limit=0", "limit"), ("limit=101", "limit"), ("colour=red", "colour")]
    {
        let refused = t.admin_get(&format!("/v1/webhooks/{id}/deliveries?{query}")).await;
        assert_eq!(refused.status, 400, "{query}: {}", refused.body);
        assert!(refused.body.to_string().contains(field), "{query}: {}", refused.body);
    }
    let replay = t.admin_post("/v1/webhooks/whk_00000000000000000000000000000000/replay", &json!({})).await;
    assert_eq!((replay.status, replay.error_code()), (404, "WEBHOOK_NOT_FOUND"));
}
