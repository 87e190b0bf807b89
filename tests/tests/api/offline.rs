//! Offline (air-gapped) activation through files, with the real `keygate` binary on both sides:
//! a request file, the API's signed license file, verified with the public key alone.

use crate::cli::keygate_command;
use crate::verify_by_hand;
use keygate_tests::TestApp;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

pub(crate) struct Scratch(PathBuf);

impl Scratch {
    pub(crate) fn new() -> Self {
        let dir = std::env::temp_dir().join(keygate::input::random_id("offline").unwrap());
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    pub(crate) fn path(&self, name: &str) -> String {
        self.0.join(name).to_string_lossy().into_owned()
    }

    fn read(&self, name: &str) -> Value {
        serde_json::from_str(&std::fs::read_to_string(self.0.join(name)).unwrap()).unwrap()
    }

    fn write(&self, name: &str, value: &Value) {
        std::fs::write(self.0.join(name), value.to_string()).unwrap();
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `keygate offline <args>`; Ok(stdout) or Err(stderr).
pub(crate) async fn offline(url: &str, args: &[&str]) -> Result<String, String> {
    let args: Vec<&str> = std::iter::once("offline").chain(args.iter().copied()).collect();
    let stdout = keygate_command(&args, &[("KEYGATE_URL", url)]).await?;
    Ok(String::from_utf8_lossy(&stdout).into_owned())
}

fn tampered(file: &Value) -> Value {
    let token = file["token"].as_str().unwrap();
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let mut claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
    claims["exp"] = json!(claims["exp"].as_i64().unwrap() + 365 * 86_400);
    parts[1] = URL_SAFE_NO_PAD.encode(claims.to_string());
    let mut file = file.clone();
    file["token"] = json!(parts.join("."));
    file
}

#[tokio::test]
async fn an_offline_activation_round_trips_through_files() {
    let t = TestApp::spawn().await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let ends = keygate::time::Timestamp::from_unix(now + 100 * 86_400).to_string();
    let key = t.issue(json!({"max_activations": 1, "expiration": {"type": "on_date", "date": ends}})).await;
    let dir = Scratch::new();
    let (url, request, license, jwks) =
        (&t.base_url, dir.path("request.json"), dir.path("license.json"), dir.path("jwks.json"));

    // The offline machine writes its request; a connected machine submits it.
    let args = ["request", "--license-key", &key, "--product", "editor", "--hardware-id", "air-1", "--out", &request];
    offline(url, &args).await.unwrap();
    assert_eq!(dir.read("request.json")["kind"], "activate");
    offline(url, &["submit", &request, "--out", &license]).await.unwrap();
    let file = dir.read("license.json");
    assert_eq!(
        (file["format"].clone(), file["hardware_id"].clone()),
        (json!("keygate-license-file/1"), json!("air-1"))
    );
    let stored = t.stored(&key).await;
    assert_eq!(stored["license"]["times_activated"], 1, "the offline activation took the seat");

    // The offline machine verifies it with the public keys alone (saved while online).
    let published = t.get("/.well-known/jwks.json").await.body;
    dir.write("jwks.json", &published);
    let verify = [
        "verify",
        &license,
        "--jwks",
        &jwks,
        "--hardware-id",
        "air-1",
        "--product",
        "editor",
        "--issuer",
        "keygate",
        "--request",
        &request,
    ];
    let granted: Value = serde_json::from_str(&offline(url, &verify).await.unwrap()).unwrap();
    assert_eq!(
        (granted["valid"].clone(), granted["expires_at"].clone()),
        (json!(true), json!(ends)),
        "the license's end"
    );

    // An independent verifier agrees, and sees the request's nonce answered.
    let claims = verify_by_hand(file["token"].as_str().unwrap(), &published).unwrap();
    assert_eq!((claims["offline"].clone(), claims["hwid"].clone()), (json!(true), json!("air-1")));
    assert_eq!(claims["nonce"], dir.read("request.json")["nonce"]);
    assert_eq!(claims["exp"], granted_exp(&granted));

    // What is printed is what was signed: the file's own fields are not trusted.
    assert_eq!(granted.get("license_key"), None);
    assert_eq!((granted["product"].clone(), granted["issuer"].clone()), (json!("editor"), json!("keygate")));
    assert_eq!(granted["license_id"], claims["sub"]);
    let mut relabelled = file.clone();
    relabelled["product"] = json!("other-product");
    relabelled["license_key"] = json!("AAAAA-AAAAA-AAAAA-AAAAA-AAAAA");
    dir.write("relabelled.json", &relabelled);
    let check = |path: String, hardware_id: &'static str, product: &'static str, issuer: &'static str, keys: String| {
        let url = url.clone();
        async move {
            let args = [
                "verify",
                &path,
                "--jwks",
                &keys,
                "--hardware-id",
                hardware_id,
                "--product",
                product,
                "--issuer",
                issuer,
            ];
            offline(&url, &args).await
        }
    };
    let relabelled_view: Value = serde_json::from_str(
        &check(dir.path("relabelled.json"), "air-1", "editor", "keygate", jwks.clone()).await.unwrap(),
    )
    .unwrap();
    assert_eq!(relabelled_view, granted, "the relabelled file still says what was signed");
    // A tampered file, another machine, product or issuer, another vendor's key: all refused.
    dir.write("tampered.json", &tampered(&file));
    let refused = check(dir.path("tampered.json"), "air-1", "editor", "keygate", jwks.clone()).await;
    assert!(refused.unwrap_err().contains("signature does not verify"));
    let refused = check(license.clone(), "air-2", "editor", "keygate", jwks.clone()).await;
    assert!(refused.unwrap_err().contains("another machine"));
    let refused = check(license.clone(), "air-1", "other-product", "keygate", jwks.clone()).await;
    assert!(refused.unwrap_err().contains("another product"));
    let refused = check(license.clone(), "air-1", "editor", "someone-else", jwks.clone()).await;
    assert!(refused.unwrap_err().contains("another issuer"));
    let other = TestApp::spawn().await;
    dir.write("foreign.json", &other.get("/.well-known/jwks.json").await.body);
    let refused = check(license.clone(), "air-1", "editor", "keygate", dir.path("foreign.json")).await;
    assert!(refused.unwrap_err().contains("signature does not verify"));
    // `--public-key=KEY` in one argument: a base64url key may begin with `-`, which would read as a flag.
    let public_key = format!("--public-key={}", published["keys"][0]["x"].as_str().unwrap());
    let args =
        ["verify", &license, &public_key, "--hardware-id", "air-1", "--product", "editor", "--issuer", "keygate"];
    offline(url, &args).await.expect("the license file verifies");

    // Offline deactivation: a request file from the license file, submitted the same way.
    let deactivation = dir.path("deactivate.json");
    offline(url, &["deactivation-request", "--license-file", &license, "--out", &deactivation]).await.unwrap();
    offline(url, &["submit", &deactivation, "--out", &dir.path("receipt.json")]).await.unwrap();
    assert_eq!(dir.read("receipt.json")["deactivated"], "air-1");
    assert_eq!(t.stored(&key).await["license"]["times_activated"], 0);
}

fn granted_exp(granted: &Value) -> Value {
    json!(keygate::time::Timestamp::parse(granted["expires_at"].as_str().unwrap()).unwrap().unix())
}

#[tokio::test]
async fn offline_request_files_are_checked() {
    let t = TestApp::spawn().await;
    let floating = t.issue(json!({"is_floating": true, "max_activations": 2})).await;
    let dir = Scratch::new();
    let request = dir.path("request.json");
    let args =
        ["request", "--license-key", &floating, "--product", "editor", "--hardware-id", "air-1", "--out", &request];
    offline(&t.base_url, &args).await.unwrap();
    let file = dir.read("request.json");
    let refused = t.post("/v1/activate/offline", &file).await;
    assert_eq!((refused.status, refused.error_code()), (403, "OFFLINE_NOT_ALLOWED"));
    let wrong_route = t.post("/v1/deactivate/offline", &file).await;
    assert_eq!((wrong_route.status, wrong_route.body["error"]["field"].clone()), (400, json!("kind")));
    let mut foreign = file.clone();
    foreign["format"] = json!("something-else/9");
    let refused = t.post("/v1/activate/offline", &foreign).await;
    assert_eq!((refused.status, refused.body["error"]["field"].clone()), (400, json!("format")));
    let perpetual = t.issue(json!({"validation_interval_days": 7})).await;
    let args =
        ["request", "--license-key", &perpetual, "--product", "editor", "--hardware-id", "air-1", "--out", &request];
    offline(&t.base_url, &args).await.unwrap();
    let answer = t.post("/v1/activate/offline", &dir.read("request.json")).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let expires = keygate::time::Timestamp::parse(answer.body["expires_at"].as_str().unwrap()).unwrap().unix();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!((expires - now - 365 * 86_400).abs() < 60, "a license without end: one year, not the 7-day interval");
    assert!(Path::new(&request).exists());
}
