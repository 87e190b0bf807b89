//! Faults between Keygate and DynamoDB Local, injected by the suite's own proxy in bursts longer
//! than the SDK's retries, with the SDK settings that are deployed. Under each: clients get 503
//! with `Retry-After` (never a 500, never an answer later than the function timeout); after every
//! acknowledged call the stored state holds exactly what was acknowledged; and retrying the
//! refused calls (with their `Idempotency-Key`) ends in the state of a fault-free run.

use keygate::store::DynamoStore;
use keygate_tests::fault::{Fault, Throttling};
use keygate_tests::{partition_in, Answer, TestApp};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The deployed function timeout (docs/deploy.md): no answer may take longer.
const FUNCTION_TIMEOUT: Duration = Duration::from_secs(6);

/// DynamoDB's write operations, for faults that only writes can show (an answer lost after a commit).
const WRITES: &[&str] = &["TransactWriteItems", "UpdateItem", "PutItem"];

/// One client call of the script, and what it does to the state when acknowledged.
struct Step {
    path: &'static str,
    body: Value,
    key: Option<&'static str>,
}

fn script(license: &str) -> Vec<Step> {
    let device = |hwid: &str| json!({"license_key": license, "product": "editor", "hardware_id": hwid});
    let consume =
        |amount: u64| json!({"license_key": license, "product": "editor", "hardware_id": "pc-1", "amount": amount});
    vec![
        Step { path: "/v1/activate", body: device("pc-1"), key: Some("a-1") },
        Step { path: "/v1/consume", body: consume(3), key: Some("c-1") },
        Step { path: "/v1/activate", body: device("pc-2"), key: Some("a-2") },
        Step { path: "/v1/check", body: device("pc-2"), key: None },
        Step { path: "/v1/consume", body: consume(4), key: Some("c-2") },
        Step { path: "/v1/deactivate", body: device("pc-2"), key: Some("d-1") },
        Step { path: "/v1/activate", body: device("pc-3"), key: Some("a-3") },
    ]
}

/// What the stored state must be once the first `done` steps of the script are acknowledged.
fn expected_after(done: usize) -> Value {
    let consumed = [0, 0, 3, 3, 3, 7, 7, 7][done];
    let bound: &[&str] = match done {
        0 => &[],
        1 | 2 => &["pc-1"],
        3..=5 => &["pc-1", "pc-2"],
        6 => &["pc-1"],
        _ => &["pc-1", "pc-3"],
    };
    let released: &[&str] = if done >= 6 { &["pc-2"] } else { &[] };
    json!({"times_activated": bound.len(), "bound": bound, "released": released, "used": consumed,
        "transfer_count": u32::from(done >= 6)})
}

/// The parts of a license's stored state the script changes.
async fn state(direct: &DynamoStore, license: &str) -> Value {
    let partition = partition_in(direct, license).await;
    let mut bound = partition.bound_devices();
    bound.sort();
    let mut released: Vec<String> =
        partition.released_devices().iter().map(|d| d["hardware_id"].as_str().unwrap().to_string()).collect();
    released.sort();
    let used = partition.license["consumption"]["*"]["used"].as_u64().unwrap_or(0);
    json!({"times_activated": partition.license["times_activated"], "bound": bound, "released": released,
        "used": used, "transfer_count": partition.license["transfer_count"]})
}

async fn send(t: &TestApp, step: &Step) -> (Answer, Duration) {
    let started = Instant::now();
    let headers: Vec<(&str, &str)> = step.key.map(|k| vec![("idempotency-key", k)]).unwrap_or_default();
    let answer = t.post_with_headers(step.path, &step.body, &headers).await;
    (answer, started.elapsed())
}

/// Runs the script with a burst of `fault` (`count` requests of `operations`, or any) before each call;
/// returns how many calls were refused with a 503.
async fn run(fault: Fault, count: u32, operations: &[&str]) -> usize {
    let (t, proxy, direct) = TestApp::spawn_behind_proxy().await;
    let license = t.issue(json!({"max_activations": 2, "max_consumptions": 100, "release_allowance": 2})).await;
    let mut refused = 0;
    for (index, step) in script(&license).iter().enumerate() {
        proxy.inject(fault, count, operations);
        let (mut answer, took) = send(&t, step).await;
        assert!(took < FUNCTION_TIMEOUT, "{fault:?} {}: answered after {took:?}", step.path);
        let mut tries = 0;
        while answer.status == 503 {
            let code = answer.error_code();
            assert!(
                matches!(code, "STORE_UNAVAILABLE" | "CONCURRENT_UPDATE"),
                "{fault:?} {}: {}",
                step.path,
                answer.body
            );
            assert!(answer.retry_after.is_some_and(|s| s >= 1), "{fault:?} {}: a 503 says when to retry", step.path);
            refused += 1;
            tries += 1;
            assert!(tries <= 3, "{fault:?} {}: still refused once the burst is over", step.path);
            proxy.clear();
            (answer, _) = send(&t, step).await;
        }
        proxy.clear();
        assert_eq!(answer.status / 100, 2, "{fault:?} {}: {}", step.path, answer.body);
        assert_eq!(state(&direct, &license).await, expected_after(index + 1), "{fault:?} after {}", step.path);
    }
    assert!(proxy.clear() > 0, "{fault:?}: the proxy faulted requests");
    refused
}

#[tokio::test]
async fn the_script_without_faults_ends_in_the_expected_state() {
    let (t, _proxy, direct) = TestApp::spawn_behind_proxy().await;
    let license = t.issue(json!({"max_activations": 2, "max_consumptions": 100, "release_allowance": 2})).await;
    assert_eq!(state(&direct, &license).await, expected_after(0));
    for (index, step) in script(&license).iter().enumerate() {
        let (answer, _) = send(&t, step).await;
        assert_eq!(answer.status / 100, 2, "{}: {}", step.path, answer.body);
        assert_eq!(state(&direct, &license).await, expected_after(index + 1), "after {}", step.path);
    }
}

#[tokio::test]
async fn connection_resets_before_the_store_acts_are_503s() {
    assert!(run(Fault::Reset, 4, &[]).await > 0);
}

#[tokio::test]
async fn connection_resets_after_a_write_committed_lose_nothing_and_repeat_nothing() {
    assert!(run(Fault::ResetAfterCommit, 4, WRITES).await > 0);
}

#[tokio::test]
async fn server_errors_are_503s() {
    assert!(run(Fault::ServerError, 4, &[]).await > 0);
}

#[tokio::test]
async fn server_errors_after_a_write_committed_lose_nothing_and_repeat_nothing() {
    assert!(run(Fault::ServerErrorAfterCommit, 4, WRITES).await > 0);
}

#[tokio::test]
async fn throttling_is_a_503() {
    for kind in [Throttling::ProvisionedThroughputExceeded, Throttling::Throttling, Throttling::RequestLimitExceeded] {
        assert!(run(Fault::Throttle(kind), 4, &[]).await > 0, "{kind:?}");
    }
}

#[tokio::test]
async fn transaction_conflicts_past_every_re_decision_are_503s() {
    assert!(run(Fault::TransactionConflict, 12, &[]).await > 0);
}

#[tokio::test]
async fn a_store_that_hangs_is_a_503_inside_the_function_timeout() {
    assert!(run(Fault::Hang, 3, &[]).await > 0);
}

#[tokio::test]
async fn a_slow_store_is_a_503_inside_the_function_timeout() {
    assert!(run(Fault::Latency(Duration::from_millis(2_000)), 3, &[]).await > 0);
}

/// The SDK retries a write whose answer was lost (DynamoDB's 500 may come after a commit): a retry
/// must never act again, with or without an `Idempotency-Key`, while the client gets one 200.
#[tokio::test]
async fn sdk_retries_of_a_write_whose_answer_was_lost_never_act_twice() {
    let (t, proxy, direct) = TestApp::spawn_behind_proxy().await;
    let license = t.issue(json!({"max_consumptions": 100})).await;
    let device = json!({"license_key": license, "product": "editor", "hardware_id": "pc-1"});
    assert_eq!(t.post("/v1/activate", &device).await.status, 200);
    let consume = json!({"license_key": license, "product": "editor", "hardware_id": "pc-1", "amount": 5});
    for (round, fault) in [Fault::ServerErrorAfterCommit, Fault::ResetAfterCommit].into_iter().enumerate() {
        // Two lost answers: the SDK's third attempt gets through, within one client call.
        proxy.inject(fault, 2, WRITES);
        let answer = t.post("/v1/consume", &consume).await;
        assert_eq!(proxy.remaining(), 0, "{fault:?}: both faults were used");
        proxy.clear();
        assert_eq!(answer.status, 200, "{fault:?}: {}", answer.body);
        let used = 5 * (round as u64 + 1);
        assert_eq!(answer.body["total_consumptions"], used, "{fault:?}: the answer counts it once");
        assert_eq!(state(&direct, &license).await["used"], used, "{fault:?}: stored once");
    }
}

/// DynamoDB answers TransactionInProgressException while the same call (the SDK's repeat, same
/// token) is still being applied; that original may still commit. Re-deciding then wrote a second
/// time: an unkeyed consume answered 200 and counted twice (found by review, fails on that code).
/// Now it is a 503 that may have acted, and the original commits once.
#[tokio::test]
async fn a_transaction_still_in_progress_is_a_503_and_never_written_twice() {
    let (t, proxy, direct) = TestApp::spawn_behind_proxy().await;
    let license = t.issue(json!({"max_consumptions": 100})).await;
    let device = json!({"license_key": license, "product": "editor", "hardware_id": "pc-1"});
    assert_eq!(t.post("/v1/activate", &device).await.status, 200);
    let consume = json!({"license_key": license, "product": "editor", "hardware_id": "pc-1", "amount": 10});
    let delay = Duration::from_millis(1_500);
    proxy.inject(Fault::InProgressThenCommit(delay), 6, &["TransactWriteItems"]);
    let answer = t.post("/v1/consume", &consume).await;
    proxy.clear();
    tokio::time::sleep(delay + Duration::from_millis(500)).await;
    let used = state(&direct, &license).await["used"].clone();
    assert_eq!((answer.status, answer.error_code(), used), (503, "STORE_UNAVAILABLE", json!(10)), "{}", answer.body);
    assert!(answer.retry_after.is_some());
}
