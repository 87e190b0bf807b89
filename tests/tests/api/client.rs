//! keygate-client against the real local stack: `keygate serve`'s handler on DynamoDB Local. An
//! unreachable server is a client pointed at a closed port with the same cache; time is an
//! injected clock.

use keygate_client::{AsyncClient, Clock, Error, Reason, Status};
use keygate_tests::TestApp;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

const HOUR: i64 = 3_600;
const DAY: i64 = 86_400;

/// A clock the test moves.
#[derive(Default)]
struct TestClock(AtomicI64);

impl TestClock {
    fn real() -> Arc<Self> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        Arc::new(TestClock(AtomicI64::new(now)))
    }

    fn advance(&self, seconds: i64) {
        self.0.fetch_add(seconds, Ordering::SeqCst);
    }
}

impl Clock for TestClock {
    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

struct Setup {
    dir: std::path::PathBuf,
    clock: Arc<TestClock>,
    public_key: String,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Setup {
    async fn new(t: &TestApp) -> Self {
        let jwks = t.get("/.well-known/jwks.json").await.body;
        let dir = std::env::temp_dir().join(keygate::input::random_id("client").unwrap());
        Setup { dir, clock: TestClock::real(), public_key: jwks["keys"][0]["x"].as_str().unwrap().to_string() }
    }

    /// A client of this test's server and cache for `hardware_id`, on the test clock.
    fn builder(&self, url: &str, hardware_id: &str) -> keygate_client::ClientBuilder {
        AsyncClient::builder(url, "editor")
            .public_key(&self.public_key)
            .issuer("keygate")
            .cache_dir(&self.dir)
            .hardware_id(hardware_id)
            .clock(self.clock.clone())
    }

    fn client(&self, url: &str, hardware_id: &str) -> AsyncClient {
        self.builder(url, hardware_id).build_async().unwrap()
    }

    /// The same machine, with the server unreachable.
    fn offline(&self, hardware_id: &str) -> AsyncClient {
        // (No retries: a closed port answers at once, and the tests need no pauses.)
        self.builder("http://127.0.0.1:9", hardware_id).retries(0).build_async().unwrap()
    }
}

fn reason(status: &Status) -> &Reason {
    &status.reason
}

#[tokio::test]
async fn activate_then_check_then_answer_from_the_cache() {
    let t = TestApp::spawn().await;
    let key = t.issue(json!({"features": [{"code": "export"}]})).await;
    let setup = Setup::new(&t).await;
    let client = setup.client(&t.base_url, "pc-1");
    assert_eq!(reason(&client.status().unwrap()), &Reason::NotActivated);
    let activated = client.activate(&key).await.unwrap();
    assert!(activated.valid && activated.has_feature("export"), "{activated:?}");
    let checked = client.check().await.unwrap();
    assert_eq!(checked.reason, Reason::Valid);
    // A new process on the same machine reads the verdict back, without the network.
    let restarted = setup.offline("pc-1").status().unwrap();
    // (A verdict that says the same as the saved one is written back at most every ten minutes.)
    assert!(
        restarted.valid && restarted.checked_at >= activated.checked_at && restarted.checked_at <= checked.checked_at
    );
    let refused = setup.client(&t.base_url, "pc-2").activate("NOPE-NOPE").await.unwrap_err();
    assert!(matches!(&refused, Error::Refused { status: 404, code, .. } if code == "LICENSE_NOT_FOUND"), "{refused}");
}

#[tokio::test]
async fn with_the_server_unreachable_the_app_works_until_the_network_grace_ends() {
    let t = TestApp::spawn().await;
    for (blocked_ok, grace_end) in [(false, DAY), (true, 2 * DAY)] {
        let key = t.issue(json!({"validation_interval_days": 2, "work_if_validation_blocked": blocked_ok})).await;
        let setup = Setup::new(&t).await;
        setup.client(&t.base_url, "pc-1").activate(&key).await.unwrap();
        let offline = setup.offline("pc-1");
        let failed = offline.check().await.unwrap_err();
        assert!(matches!(failed, Error::Network(_)), "{failed}");
        setup.clock.advance(grace_end - HOUR);
        assert!(offline.status().unwrap().valid, "work_if_validation_blocked {blocked_ok}: still within grace");
        setup.clock.advance(HOUR + 1);
        let ended = offline.status().unwrap();
        let expected = if blocked_ok { Reason::OfflineTooLong } else { Reason::CheckRequired };
        assert_eq!((ended.valid, ended.reason), (false, expected), "work_if_validation_blocked {blocked_ok}");
    }
}

#[tokio::test]
async fn a_revoked_license_is_refused_at_the_next_online_check() {
    let t = TestApp::spawn().await;
    let key = t.issue(json!({})).await;
    let setup = Setup::new(&t).await;
    let client = setup.client(&t.base_url, "pc-1");
    client.activate(&key).await.unwrap();
    assert_eq!(t.admin_patch(&format!("/v1/licenses/{key}"), &json!({"status": "revoked"})).await.status, 200);
    assert!(client.status().unwrap().valid, "offline, the app cannot know yet");
    let checked = client.check().await.unwrap();
    assert_eq!((checked.valid, checked.reason.clone()), (false, Reason::Refused("REVOKED".into())));
    assert_eq!(setup.offline("pc-1").status().unwrap().reason, Reason::Refused("REVOKED".into()), "cached at once");
}

#[tokio::test]
async fn a_clock_turned_back_is_clock_tampered() {
    let t = TestApp::spawn().await;
    let key = t.issue(json!({})).await;
    let setup = Setup::new(&t).await;
    let client = setup.client(&t.base_url, "pc-1");
    client.activate(&key).await.unwrap();
    setup.clock.advance(3 * HOUR);
    assert!(client.status().unwrap().valid);
    setup.clock.advance(-2 * HOUR);
    let status = client.status().unwrap();
    assert_eq!((status.valid, status.reason), (false, Reason::ClockTampered));
    // Editing the saved high-water mark does not help: it never falls below the verdict's iat.
    let path = client_cache(&setup);
    let mut file: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    file["high_water"] = json!(0);
    std::fs::write(&path, file.to_string()).unwrap();
    setup.clock.advance(-2 * HOUR);
    assert_eq!(setup.offline("pc-1").status().unwrap().reason, Reason::ClockTampered);
}

fn client_cache(setup: &Setup) -> std::path::PathBuf {
    setup.dir.join("editor.license.json")
}

#[tokio::test]
async fn a_tampered_cache_is_discarded_never_trusted() {
    let t = TestApp::spawn().await;
    let key = t.issue(json!({})).await;
    let setup = Setup::new(&t).await;
    setup.client(&t.base_url, "pc-1").activate(&key).await.unwrap();
    let path = client_cache(&setup);
    let mut file: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let token = file["token"].as_str().unwrap().to_string();
    let parts: Vec<&str> = token.split('.').collect();
    use base64::Engine;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut claims: Value = serde_json::from_slice(&engine.decode(parts[1]).unwrap()).unwrap();
    claims["exp"] = json!(claims["exp"].as_i64().unwrap() + 365 * DAY);
    file["token"] = json!(format!("{}.{}.{}", parts[0], engine.encode(claims.to_string()), parts[2]));
    std::fs::write(&path, file.to_string()).unwrap();
    let offline = setup.offline("pc-1");
    assert!(matches!(offline.status(), Err(Error::CacheCorrupt(_))));
    assert!(!path.exists(), "discarded");
    assert_eq!(offline.status().unwrap().reason, Reason::NotActivated);
    std::fs::write(&path, "{not json").unwrap();
    assert!(matches!(setup.offline("pc-1").status(), Err(Error::CacheCorrupt(_))));
    // Another machine's verdict copied here does not verify for this machine.
    setup.client(&t.base_url, "pc-2").activate(&key).await.unwrap();
    assert!(matches!(setup.offline("pc-1").status(), Err(Error::CacheCorrupt(_))));
}

#[tokio::test]
async fn a_floating_heartbeat_keeps_the_seat_and_returns_it_when_stopped() {
    let t = TestApp::spawn().await;
    let key = t.issue(json!({"is_floating": true, "max_activations": 1, "floating_timeout_minutes": 1})).await;
    let setup = Setup::new(&t).await;
    let client = setup.client(&t.base_url, "pc-1");
    let first = client.activate(&key).await.unwrap();
    // As if the lease were about to lapse: the heartbeat renews within a second or so.
    setup.clock.advance(first.lease_expires_at.unwrap() - setup.clock.now() - 2);
    let mut heartbeat = client.heartbeat();
    let renewed = tokio::time::timeout(std::time::Duration::from_secs(10), heartbeat.events.recv()).await.unwrap();
    assert!(matches!(renewed, Some(keygate_client::HeartbeatEvent::Renewed(_))), "{renewed:?}");
    let other = setup.client(&t.base_url, "pc-2");
    let refused = other.activate(&key).await.unwrap_err();
    assert!(matches!(&refused, Error::Refused { code, .. } if code == "ACTIVATION_LIMIT_REACHED"), "{refused}");
    heartbeat.stop().await;
    // (The shared test clock runs ahead of the server's here, so judge the server's verdict.)
    let taken = other.activate(&key).await.unwrap();
    assert_eq!(taken.code.as_deref(), Some("VALID"), "the seat was returned");
}

#[tokio::test]
async fn a_borrowed_seat_works_with_the_server_unreachable() {
    let t = TestApp::spawn().await;
    let key =
        t.issue(json!({"is_floating": true, "max_activations": 1, "can_borrow": true, "max_borrow_hours": 48})).await;
    let setup = Setup::new(&t).await;
    let client = setup.client(&t.base_url, "laptop");
    client.activate(&key).await.unwrap();
    let borrowed = client.borrow(24).await.unwrap();
    assert!(borrowed.borrowed_until.is_some());
    let offline = setup.offline("laptop");
    setup.clock.advance(20 * HOUR);
    assert!(offline.status().unwrap().valid, "past the lease timeout, within the borrow");
    setup.clock.advance(5 * HOUR);
    assert_eq!(offline.status().unwrap().reason, Reason::OfflineTooLong);
}

#[tokio::test]
async fn a_trial_starts_once_and_consumption_is_counted() {
    let t = TestApp::spawn().await;
    let terms = json!({"days": 14, "features": [{"code": "export", "max_consumptions": 2}]}).to_string().into_bytes();
    assert_eq!(t.request("PUT", "/v1/products/editor/trial", terms, true).await.status, 200);
    let setup = Setup::new(&t).await;
    let client = setup.client(&t.base_url, "new-pc");
    let started = client.start_trial(Some("bo@example.com")).await.unwrap();
    assert_eq!((started.valid, started.license_type.as_deref()), (true, Some("trial")));
    assert!(client.check().await.unwrap().valid, "the trial's key was kept");
    let again = client.start_trial(None).await.unwrap_err();
    assert!(matches!(&again, Error::Refused { code, .. } if code == "TRIAL_ALREADY_USED"), "{again}");
    let counted = client.consume(2, Some("export")).await.unwrap();
    assert_eq!((counted.total_consumptions, counted.remaining), (2, Some(0)));
    let over = client.consume(1, Some("export")).await.unwrap_err();
    assert!(matches!(&over, Error::Refused { code, .. } if code == "CONSUMPTION_LIMIT_REACHED"), "{over}");
}

#[tokio::test]
async fn an_offline_machine_round_trips_through_files() {
    let t = TestApp::spawn().await;
    let key = t.issue(json!({})).await;
    let setup = Setup::new(&t).await;
    let air = setup.offline("air-1");
    let request = serde_json::to_value(air.offline_request(&key).unwrap()).unwrap();
    // A connected machine carries it to the API and back.
    let file = t.post("/v1/activate/offline", &request).await;
    assert_eq!(file.status, 200, "{}", file.body);
    let status = air.import_license_file(&file.body.to_string()).unwrap();
    assert_eq!((status.valid, status.offline), (true, true));
    setup.clock.advance(300 * DAY);
    assert!(air.status().unwrap().valid, "a license file works offline to its end");
    setup.clock.advance(-300 * DAY);
    // Another machine's file, or an answer to another request, is not imported.
    let other = setup.offline("air-2");
    let _ = other.offline_request(&key).unwrap();
    assert!(matches!(other.import_license_file(&file.body.to_string()), Err(Error::InvalidToken(_))));
    let deactivation = serde_json::to_value(air.offline_deactivation_request().unwrap()).unwrap();
    assert_eq!(air.status().unwrap().reason, Reason::NotActivated, "the machine gives its license up at once");
    let receipt = t.post("/v1/deactivate/offline", &deactivation).await;
    assert_eq!(receipt.status, 200, "{}", receipt.body);
}

#[tokio::test]
async fn the_blocking_client_does_the_same() {
    let t = TestApp::spawn().await;
    let key = t.issue(json!({})).await;
    let setup = Setup::new(&t).await;
    let builder = setup.builder(&t.base_url, "pc-1");
    let status = tokio::task::spawn_blocking(move || {
        let client = builder.build().unwrap();
        client.activate(&key).unwrap();
        client.check().unwrap();
        client.deactivate().unwrap();
        client.status().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(status.reason, Reason::NotActivated);
}

#[tokio::test]
async fn a_forged_server_cannot_mint_verdicts() {
    let t = TestApp::spawn().await;
    let forged = TestApp::spawn().await;
    let key = forged.issue(json!({})).await;
    let setup = Setup::new(&t).await;
    let refused = setup.client(&forged.base_url, "pc-1").activate(&key).await.unwrap_err();
    assert!(matches!(refused, Error::InvalidToken(keygate_client::TokenError::UnknownKey(_))), "{refused}");
    assert_eq!(setup.offline("pc-1").status().unwrap().reason, Reason::NotActivated, "nothing was kept");
}

/// Runs the example app (`client/examples/gate.rs`, built by `make test`) against the server.
fn gate(setup: &Setup, url: &str, args: &[&str]) -> Result<String, String> {
    let exe = std::env::current_exe().unwrap();
    let binary = exe.parent().and_then(|deps| deps.parent()).unwrap().join("examples").join("gate");
    assert!(
        binary.exists(),
        "{} is missing: build it with `cargo build -p keygate-client --examples`",
        binary.display()
    );
    let output = std::process::Command::new(binary)
        .args(args)
        .env("KEYGATE_URL", url)
        .env("KEYGATE_PRODUCT", "editor")
        .env("KEYGATE_ISSUER", "keygate")
        .env("KEYGATE_PUBLIC_KEYS", &setup.public_key)
        .env("KEYGATE_CACHE_DIR", &setup.dir)
        .env("KEYGATE_HARDWARE_ID", "desk-1")
        .output()
        .unwrap();
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    if output.status.success() {
        Ok(text(output.stdout))
    } else {
        Err(text(output.stderr))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_app_gates_its_feature_on_the_license() {
    let t = TestApp::spawn().await;
    let with_export = t.issue(json!({"features": [{"code": "export"}]})).await;
    let setup = Arc::new(Setup::new(&t).await);
    let out = setup.dir.join("out.txt").display().to_string();
    // The app blocks; the server under test shares this runtime, so run the app off it.
    let run = |url: &str, args: &[&str]| {
        let (url, setup) = (url.to_string(), setup.clone());
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            gate(&setup, &url, &args)
        })
    };
    let url = t.base_url.as_str();
    let refused = run(url, &["export", &out]).await.unwrap().unwrap_err();
    assert!(refused.contains("activate it first"), "{refused}");
    assert!(run(url, &["activate", &with_export]).await.unwrap().unwrap().contains("activated"));
    assert!(run(url, &["export", &out]).await.unwrap().unwrap().contains("exported"));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "exported\n");
    // With the server gone, the cached license still gates the feature.
    assert!(run("http://127.0.0.1:9", &["export", &out]).await.unwrap().is_ok());
    assert!(run(url, &["deactivate"]).await.unwrap().unwrap().contains("deactivated"));
    assert!(run(url, &["export", &out]).await.unwrap().unwrap_err().contains("activate it first"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_blocking_heartbeat_returns_the_seat() {
    let t = TestApp::spawn().await;
    let key = t.issue(json!({"is_floating": true, "max_activations": 1})).await;
    let setup = Setup::new(&t).await;
    let builder = setup.builder(&t.base_url, "pc-1");
    let activation_key = key.clone();
    tokio::task::spawn_blocking(move || {
        let client = builder.build().unwrap();
        client.activate(&activation_key).unwrap();
        let heartbeat = client.heartbeat(|_| {});
        drop(heartbeat);
        assert_eq!(client.status().unwrap().reason, Reason::NotActivated, "the seat was given back here");
    })
    .await
    .unwrap();
    let other = setup.client(&t.base_url, "pc-2");
    assert!(other.activate(&key).await.unwrap().valid, "and on the server");
}

#[tokio::test]
async fn a_license_file_given_up_is_not_imported_again() {
    let t = TestApp::spawn().await;
    let key = t.issue(json!({"release_allowance": 2})).await;
    let setup = Setup::new(&t).await;
    let air = setup.offline("air-1");
    let request = serde_json::to_value(air.offline_request(&key).unwrap()).unwrap();
    let file = t.post("/v1/activate/offline", &request).await.body.to_string();
    assert!(air.import_license_file(&file).unwrap().valid);
    let deactivation = serde_json::to_value(air.offline_deactivation_request().unwrap()).unwrap();
    assert_eq!(t.post("/v1/deactivate/offline", &deactivation).await.status, 200);
    let again = air.import_license_file(&file).unwrap_err();
    assert!(matches!(again, Error::InvalidToken(keygate_client::TokenError::NonceMismatch)), "{again}");
    assert_eq!(air.status().unwrap().reason, Reason::NotActivated);
}

#[tokio::test]
async fn a_process_holding_an_older_verdict_never_overwrites_a_newer_one() {
    let t = TestApp::spawn().await;
    let key = t.issue(json!({})).await;
    let setup = Setup::new(&t).await;
    let first = setup.client(&t.base_url, "pc-1");
    first.activate(&key).await.unwrap();
    assert!(first.status().unwrap().valid);
    // Another process on the machine learns the license was revoked.
    assert_eq!(t.admin_patch(&format!("/v1/licenses/{key}"), &json!({"status": "revoked"})).await.status, 200);
    let second = setup.client(&t.base_url, "pc-1");
    assert_eq!(second.check().await.unwrap().reason, Reason::Refused("REVOKED".into()));
    // The first, still holding VALID, moves its high-water mark on: it reads the newer verdict instead.
    setup.clock.advance(15 * 60);
    let _ = first.status().unwrap();
    assert_eq!(first.status().unwrap().reason, Reason::Refused("REVOKED".into()));
    assert_eq!(setup.offline("pc-1").status().unwrap().reason, Reason::Refused("REVOKED".into()), "on disk");
}

#[tokio::test]
async fn a_clock_once_ahead_recovers_at_the_next_check() {
    let t = TestApp::spawn().await;
    let key = t.issue(json!({})).await;
    let setup = Setup::new(&t).await;
    let client = setup.client(&t.base_url, "pc-1");
    client.activate(&key).await.unwrap();
    setup.clock.advance(2 * DAY);
    assert!(client.status().unwrap().valid);
    setup.clock.advance(-2 * DAY);
    assert_eq!(client.status().unwrap().reason, Reason::ClockTampered);
    assert!(client.check().await.unwrap().valid, "a fresh verdict resets the mark");
}

#[tokio::test]
async fn a_used_up_feature_is_not_usable_after_a_feature_check() {
    let t = TestApp::spawn().await;
    let key = t.issue(json!({"features": [{"code": "export", "max_consumptions": 1}]})).await;
    let setup = Setup::new(&t).await;
    let client = setup.client(&t.base_url, "pc-1");
    assert!(client.activate(&key).await.unwrap().has_feature("export"));
    client.consume(1, Some("export")).await.unwrap();
    let checked = client.check_feature("export").await.unwrap();
    assert!(checked.valid && !checked.has_feature("export"), "{checked:?}");
}

/// The server answers 503 after DynamoDB committed a consume (its own retries lost every answer):
/// the client sends it again with the same Idempotency-Key and gets the first answer, counted once.
#[tokio::test]
async fn a_write_the_server_could_not_confirm_is_retried_once_and_counted_once() {
    use keygate_tests::fault::Fault;
    let (t, proxy, _direct) = TestApp::spawn_behind_proxy().await;
    let key = t.issue(json!({"max_consumptions": 10})).await;
    let setup = Setup::new(&t).await;
    let client = setup.client(&t.base_url, "pc-1");
    client.activate(&key).await.unwrap();
    // Three lost answers: every attempt of the server's SDK, so the server says 503.
    proxy.inject(Fault::ServerErrorAfterCommit, 3, &["TransactWriteItems"]);
    let consumed = client.consume(4, None).await.unwrap();
    assert_eq!(proxy.remaining(), 0, "the server's first try was refused");
    assert_eq!((consumed.total_consumptions, consumed.remaining), (4, Some(6)), "the first answer");
    assert_eq!(t.stored(&key).await["license"]["consumption"]["*"]["used"], 4, "counted once");
    // Without retries, the caller sees the 503 (and may retry itself).
    proxy.inject(Fault::ServerError, 3, &[]);
    let once = setup.builder(&t.base_url, "pc-1").retries(0).build_async().unwrap();
    let failed = once.consume(1, None).await.unwrap_err();
    assert!(matches!(failed, Error::Unavailable { status: 503, retry_after: Some(_) }), "{failed}");
}
