//! The `keygate licenses ...` vendor commands, run as the real binary against the API.

use keygate_tests::{built_binary, device, TestApp};
use serde_json::{json, Value};
use std::process::Command;

/// Runs the `keygate` binary with `args` and `env` off the runtime (the server under test shares
/// it): Ok(stdout) on success, Err(stderr) otherwise.
pub(crate) async fn keygate_command(args: &[&str], env: &[(&str, &str)]) -> Result<Vec<u8>, String> {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(built_binary("keygate", "keygate-cli")).args(&args).envs(env).output()
    })
    .await
    .unwrap()
    .unwrap();
    if output.status.success() {
        Ok(output.stdout)
    } else {
        let code = output.status.code().map_or("none".into(), |code| code.to_string());
        Err(format!("exit {code}: {}", String::from_utf8_lossy(&output.stderr)))
    }
}

/// Runs `keygate licenses <args>` with the API's URL and admin token in the environment unless
/// `token` overrides the token.
async fn run(t: &TestApp, args: &[&str], token: Option<&str>) -> Result<Value, String> {
    let args: Vec<&str> = ["licenses", "--json"].into_iter().chain(args.iter().copied()).collect();
    let env = [("KEYGATE_URL", t.base_url.as_str()), ("KEYGATE_ADMIN_TOKEN", token.unwrap_or(&t.admin_token))];
    keygate_command(&args, &env).await.map(|stdout| serde_json::from_slice(&stdout).unwrap())
}

async fn keygate(t: &TestApp, args: &[&str]) -> Result<Value, String> {
    run(t, args, None).await
}

#[tokio::test]
async fn the_cli_issues_shows_lists_and_changes_status() {
    let t = TestApp::spawn().await;
    let issued = keygate(
        &t,
        &[
            "issue",
            "--product",
            "editor",
            "--max-activations",
            "2",
            "--quantity",
            "2",
            "--order-id",
            "cli-1",
            "--extra",
            r#"{"grace_period_days": 4}"#,
        ],
    )
    .await
    .unwrap();
    let key = issued["licenses"][0]["license_key"].as_str().unwrap().to_string();
    assert_eq!(issued["licenses"][0]["grace_period_days"], 4);

    let listed = keygate(&t, &["list", "--order-id", "cli-1"]).await.unwrap();
    assert_eq!(listed["licenses"].as_array().unwrap().len(), 2);
    let by_product = keygate(&t, &["list", "--product", "editor", "--limit", "1"]).await.unwrap();
    assert_eq!(by_product["licenses"].as_array().unwrap().len(), 1);
    assert!(by_product["next_cursor"].is_string(), "{by_product}");
    let everything = keygate(&t, &["list", "--all"]).await.unwrap();
    assert_eq!(everything["licenses"].as_array().unwrap().len(), 2, "the table holds these two");
    assert!(keygate(&t, &["list"]).await.is_err(), "a filter or --all is required");
    assert!(keygate(&t, &["list", "--all", "--product", "editor"]).await.is_err(), "one of them");

    for (command, status, code) in [
        ("suspend", "suspended", "SUSPENDED"),
        ("revoke", "revoked", "REVOKED"),
        ("reinstate", "active", "DEVICE_NOT_ACTIVATED"),
    ] {
        let changed = keygate(&t, &[command, &key]).await.unwrap();
        assert_eq!(changed["license"]["status"], status);
        assert_eq!(t.post("/v1/check", &device(&key, "pc-1")).await.body["code"], code);
    }
    let shown = keygate(&t, &["show", &key]).await.unwrap();
    assert_eq!(shown["license"]["version"], 3);
    assert_eq!(shown["usage"]["seats_available"], 2);
}

#[tokio::test]
async fn cli_errors_carry_the_api_error_and_an_exit_code_per_kind() {
    let t = TestApp::spawn().await;
    let err = keygate(&t, &["show", "ZZZZZ-ZZZZZ"]).await.unwrap_err();
    assert!(err.starts_with("exit 3:") && err.contains("LICENSE_NOT_FOUND"), "{err}");
    let err = run(&t, &["show", "ZZZZZ-ZZZZZ"], Some("wrong")).await.unwrap_err();
    assert!(err.starts_with("exit 5:") && err.contains("UNAUTHORIZED"), "{err}");
    assert!(err.contains("KEYGATE_ADMIN_TOKEN"), "says what to set: {err}");
    let err = keygate(&t, &["issue", "--product", "editor", "--max-activations", "0"]).await.unwrap_err();
    assert!(err.starts_with("exit 2:") && err.contains("max_activations"), "{err}");
    let issued = keygate(&t, &["issue", "--product", "editor", "--extra", r#"{"version": 1}"#]).await;
    assert!(issued.unwrap_err().starts_with("exit 2:"), "an unknown field is the command's mistake");

    // Nothing listening: the outage exit code, and where to look.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let env = [("KEYGATE_URL", url.as_str()), ("KEYGATE_ADMIN_TOKEN", t.admin_token.as_str())];
    let err = keygate_command(&["licenses", "show", "ZZZZZ-ZZZZZ"], &env).await.unwrap_err();
    assert!(err.starts_with("exit 6:") && err.contains("make local") && err.contains("KEYGATE_URL"), "{err}");
}

#[tokio::test]
async fn the_cli_changes_terms_releases_devices_sets_trials_and_sums_up_for_people() {
    let t = TestApp::spawn().await;
    let key = keygate(&t, &["issue", "--product", "editor", "--max-activations", "2"]).await.unwrap()["licenses"][0]
        ["license_key"]
        .as_str()
        .unwrap()
        .to_string();
    let updated = keygate(
        &t,
        &[
            "update",
            &key,
            "--set",
            "max_activations=5",
            "--set",
            "order_id=ord-9",
            "--patch",
            r#"{"metadata": {"plan": "pro"}}"#,
        ],
    )
    .await
    .unwrap();
    let license = &updated["license"];
    assert_eq!((license["max_activations"].clone(), license["order_id"].clone()), (json!(5), json!("ord-9")));
    assert_eq!(license["metadata"]["plan"], "pro");
    for (args, why) in [
        (vec!["update", key.as_str()], "nothing to change"),
        (vec!["update", key.as_str(), "--set", "max_activations"], "expected NAME=VALUE"),
        (vec!["update", key.as_str(), "--patch", "[1]"], "must be a JSON object"),
    ] {
        let refused = keygate(&t, &args).await.unwrap_err();
        assert!(refused.starts_with("exit 2:") && refused.contains(why), "{args:?}: {refused}");
    }
    assert_eq!(t.stored(&key).await["license"]["version"], 1, "a refused command changes nothing");
    let stale = keygate(&t, &["update", &key, "--set", "max_activations=6", "--version", "0"]).await.unwrap_err();
    assert!(stale.starts_with("exit 4:") && stale.contains("VERSION_CONFLICT"), "{stale}");

    assert_eq!(t.post("/v1/activate", &device(&key, "pc-1")).await.status, 200);
    let released = keygate(&t, &["release", &key, "pc-1"]).await.unwrap();
    assert_eq!(
        (released["released"].clone(), released["license"]["times_activated"].clone()),
        (json!("pc-1"), json!(0))
    );

    let env = [("KEYGATE_URL", t.base_url.as_str()), ("KEYGATE_ADMIN_TOKEN", t.admin_token.as_str())];
    let trial =
        keygate_command(&["trial", "--json", "set", "editor", "--days", "14", "--features", "export,render"], &env)
            .await
            .unwrap();
    let trial: Value = serde_json::from_slice(&trial).unwrap();
    assert_eq!(
        (trial["trial"]["days"].clone(), trial["trial"]["features"][1]["code"].clone()),
        (json!(14), json!("render"))
    );

    // Without --json: a summary for people.
    let shown = keygate_command(&["licenses", "show", &key], &env).await.unwrap();
    let shown = String::from_utf8(shown).unwrap();
    assert!(shown.contains(&format!("{key}  editor  active")) && shown.contains("0 used, 5 available"), "{shown}");
    assert!(serde_json::from_str::<Value>(&shown).is_err(), "not JSON by default");
}

/// Runs `keygate admin-token hash` with `token` on stdin: Ok(stdout) or Err(stderr).
fn hash_admin_token(token: &str) -> Result<String, String> {
    use std::io::Write;
    let mut child = Command::new(built_binary("keygate", "keygate-cli"))
        .args(["admin-token", "hash"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(format!("{token}\n").as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).trim().to_string();
    if output.status.success() {
        Ok(text(output.stdout))
    } else {
        Err(text(output.stderr))
    }
}

#[test]
fn admin_token_hash_refuses_weak_tokens() {
    let weak = hash_admin_token("hunter2hunter2hunter2hunter2hunter2").unwrap_err();
    assert!(weak.contains("bits") && weak.contains("keygate admin-token new"), "{weak}");
    assert!(hash_admin_token("short").unwrap_err().contains("at least 32"));
    let token = keygate::signing::generate_seed().unwrap();
    assert_eq!(hash_admin_token(&token), Ok(keygate::auth::hash_token(&token)));
}

#[test]
fn admin_token_new_names_the_hash_it_prints_and_refuses_a_bad_name() {
    let run = |name: &str| {
        Command::new(built_binary("keygate", "keygate-cli"))
            .args(["admin-token", "new", "--name", name])
            .output()
            .unwrap()
    };
    let named = run("ci");
    assert!(named.status.success());
    let token = String::from_utf8(named.stdout).unwrap().trim().to_string();
    let configured = String::from_utf8(named.stderr).unwrap().trim().to_string();
    assert_eq!(configured, format!("KEYGATE_ADMIN_TOKEN_SHA256=ci:{}", keygate::auth::hash_token(&token)));
    let refused = run("Not A Name");
    assert_eq!(refused.status.code(), Some(2), "a usage error");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--name"));
}
