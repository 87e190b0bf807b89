//! The vendor API through HTTP against DynamoDB Local: listings, patches, releases, idempotency.

use keygate_tests::{device, join_all, TestApp};
use serde_json::{json, Value};
use std::collections::HashSet;

fn keys(answer: &Value) -> Vec<String> {
    answer["licenses"].as_array().unwrap().iter().map(|l| l["license_key"].as_str().unwrap().to_string()).collect()
}

/// Every license a listing pages through from `path` (which has a query string), following
/// `next_cursor`; the listing must end within `max_pages` pages.
async fn paged(t: &TestApp, path: &str, max_pages: usize) -> Vec<String> {
    let mut keys_seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..max_pages {
        let page_path = match &cursor {
            None => path.to_string(),
            Some(c) => format!("{path}&cursor={c}"),
        };
        let page = t.admin_get(&page_path).await;
        assert_eq!(page.status, 200, "{page_path}: {}", page.body);
        keys_seen.extend(keys(&page.body));
        cursor = page.body["next_cursor"].as_str().map(str::to_string);
        if cursor.is_none() {
            return keys_seen;
        }
    }
    panic!("{path}: still a cursor after {max_pages} pages");
}

#[tokio::test]
async fn listings_by_customer_and_order_page_with_a_cursor() {
    let t = TestApp::spawn().await;
    let batch = t
        .admin_post(
            "/v1/licenses",
            &json!({"product": "editor", "license_type": "perpetual", "max_activations": 1, "quantity": 5,
                    "customer": {"email": "Buyer@Example.com"}, "order_id": "ord-77"}),
        )
        .await;
    let issued: HashSet<String> = keys(&batch.body).into_iter().collect();
    t.issue(json!({"customer": {"email": "someone-else@example.com"}})).await;

    let seen: HashSet<String> =
        paged(&t, "/v1/licenses?customer_email=buyer%40example.com&limit=2", 5).await.into_iter().collect();
    assert_eq!(seen, issued);
    let by_order = t.admin_get("/v1/licenses?order_id=ord-77&limit=100").await;
    assert_eq!(keys(&by_order.body).into_iter().collect::<HashSet<_>>(), issued);

    for (path, field) in [
        ("/v1/licenses?customer_email=a%40b.c&order_id=x", "customer_email"),
        ("/v1/licenses?product=editor&order_id=x", "customer_email"),
        ("/v1/licenses?product=Not%20a%20product", "product"),
        ("/v1/licenses?cursor=bm90LWEtY3Vyc29y", "cursor"),
        ("/v1/licenses?order_id=x&limit=0", "limit"),
        ("/v1/licenses?order_id=x&cursor=bm90LWEtY3Vyc29y", "cursor"),
        ("/v1/licenses?order_id=x&colour=red", "colour"),
    ] {
        let answer = t.admin_get(path).await;
        assert_eq!(
            (answer.status, answer.body["error"]["field"].as_str()),
            (400, Some(field)),
            "{path}: {}",
            answer.body
        );
    }
}

#[tokio::test]
async fn patches_change_only_the_fields_given() {
    let t = TestApp::spawn().await;
    let key = t.issue(json!({"max_transfers": 2, "metadata": {"plan": "pro", "seats": 3}})).await;
    let path = format!("/v1/licenses/{key}");
    let answer = t
        .admin_patch(
            &path,
            &json!({"max_activations": 5, "max_transfers": null, "metadata": {"seats": null, "region": "eu"}}),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let license = &t.stored(&key).await["license"];
    assert_eq!(license["max_activations"], 5);
    assert_eq!(license.get("max_transfers"), None, "null clears the limit");
    assert_eq!(license["metadata"], json!({"plan": "pro", "region": "eu"}));
    assert_eq!(license["license_type"], "perpetual");
    assert_eq!(license["version"], 1);
}

#[tokio::test]
async fn patch_refusals() {
    let t = TestApp::spawn().await;
    let key = t.issue(json!({})).await;
    let path = format!("/v1/licenses/{key}");
    let stale = t.admin_patch(&path, &json!({"status": "suspended", "version": 7})).await;
    assert_eq!((stale.status, stale.error_code()), (409, "VERSION_CONFLICT"));
    let bad = t.admin_patch(&path, &json!({"status": "sleeping"})).await;
    assert_eq!((bad.status, bad.body["error"]["field"].as_str()), (400, Some("status")));
    let unknown = t.admin_patch("/v1/licenses/ZZZZZ-ZZZZZ", &json!({"status": "revoked"})).await;
    assert_eq!((unknown.status, unknown.error_code()), (404, "LICENSE_NOT_FOUND"));
    let current = t.admin_patch(&path, &json!({"status": "suspended", "version": 0})).await;
    assert_eq!(current.status, 200);
    assert_eq!(t.stored(&key).await["license"]["status"], "suspended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_patches_never_lose_one() {
    let t = TestApp::spawn().await;
    let key = t.issue(json!({})).await;
    let path = format!("/v1/licenses/{key}");
    let bodies: Vec<Value> = (0..10).map(|i| json!({"metadata": {format!("k{i}"): i}})).collect();
    let answers = join_all(bodies.iter().map(|b| t.admin_patch(&path, b))).await;
    // An acknowledged patch is never lost; one that kept losing the race is refused, never dropped.
    assert!(answers.iter().all(|a| a.status == 200 || a.error_code() == "CONCURRENT_UPDATE"));
    let applied: Vec<String> = (0..10).filter(|i| answers[*i].status == 200).map(|i| format!("k{i}")).collect();
    assert!(applied.len() >= 8, "almost all of ten patches get through: {}", applied.len());
    let license = &t.stored(&key).await["license"];
    let stored: Vec<String> = license["metadata"].as_object().unwrap().keys().cloned().collect();
    assert_eq!(stored, applied, "{}", license["metadata"]);
    assert_eq!(license["version"], applied.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn patches_and_activations_race_without_losing_either() {
    let t = TestApp::spawn().await;
    let key = t.issue(json!({"max_activations": 10})).await;
    let path = format!("/v1/licenses/{key}");
    let patches: Vec<Value> = (0..5).map(|i| json!({"metadata": {format!("k{i}"): i}})).collect();
    let devices: Vec<Value> = (0..5).map(|i| device(&key, &format!("pc-{i}"))).collect();
    let (patched, activated) = tokio::join!(
        join_all(patches.iter().map(|b| t.admin_patch(&path, b))),
        join_all(devices.iter().map(|b| t.post("/v1/activate", b)))
    );
    assert!(patched.iter().chain(activated.iter()).all(|a| a.status == 200 || a.error_code() == "CONCURRENT_UPDATE"));
    let ok = |answers: &[keygate_tests::Answer]| answers.iter().filter(|a| a.status == 200).count();
    let stored = t.stored(&key).await;
    assert_eq!(stored["license"]["times_activated"], ok(&activated));
    assert_eq!(stored["devices"].as_array().unwrap().len(), ok(&activated));
    assert_eq!(stored["license"]["metadata"].as_object().unwrap().len(), ok(&patched));
    assert!(ok(&activated) + ok(&patched) >= 8, "almost all get through");
}

#[tokio::test]
async fn a_vendor_release_frees_the_seat_without_counting_a_transfer() {
    let t = TestApp::spawn().await;
    let key = t.issue(json!({"max_transfers": 0})).await;
    t.post("/v1/activate", &device(&key, "pc/1")).await;
    let released = t.admin_delete(&format!("/v1/licenses/{key}/devices/pc%2F1")).await;
    assert_eq!(released.status, 200, "{}", released.body);
    let stored = t.stored(&key).await;
    assert_eq!(
        (stored["license"]["times_activated"].clone(), stored["license"]["transfer_count"].clone()),
        (json!(0), json!(0))
    );
    let again = t.admin_delete(&format!("/v1/licenses/{key}/devices/pc%2F1")).await;
    assert_eq!((again.status, again.error_code()), (404, "DEVICE_NOT_FOUND"));
}

#[tokio::test]
async fn a_retried_issue_with_the_same_idempotency_key_returns_the_first_answer() {
    let t = TestApp::spawn().await;
    let body = json!({"product": "editor", "license_type": "perpetual", "max_activations": 1, "quantity": 3, "order_id": "ord-idem"});
    let issue = |body: Value, key: &'static str| {
        let t = &t;
        async move {
            t.request_with_headers("POST", "/v1/licenses", body.to_string().into_bytes(), &[("idempotency-key", key)])
                .await
        }
    };
    let first = issue(body.clone(), "order-77-attempt").await;
    assert_eq!(first.status, 201);
    let answers = join_all((0..4).map(|_| issue(body.clone(), "order-77-attempt"))).await;
    for answer in &answers {
        assert_eq!(answer.status, 201, "{}", answer.body);
        assert_eq!(keys(&answer.body), keys(&first.body));
    }
    let listed = t.admin_get("/v1/licenses?order_id=ord-idem").await;
    assert_eq!(keys(&listed.body).len(), 3, "no new keys were issued");

    let mut other = body.clone();
    other["quantity"] = json!(2);
    let reused = issue(other, "order-77-attempt").await;
    assert_eq!((reused.status, reused.error_code()), (409, "IDEMPOTENCY_KEY_REUSED"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_requests_with_one_idempotency_key_issue_once() {
    let t = TestApp::spawn().await;
    let body = json!({"product": "editor", "license_type": "perpetual", "max_activations": 1, "order_id": "ord-race"});
    let answers = join_all((0..6).map(|_| {
        t.request_with_headers("POST", "/v1/licenses", body.to_string().into_bytes(), &[("idempotency-key", "race-1")])
    }))
    .await;
    let distinct: HashSet<Vec<String>> = answers.iter().map(|a| keys(&a.body)).collect();
    assert!(answers.iter().all(|a| a.status == 201));
    assert_eq!(distinct.len(), 1);
    assert_eq!(keys(&t.admin_get("/v1/licenses?order_id=ord-race").await.body).len(), 1);
}

#[tokio::test]
async fn a_forged_listing_cursor_is_a_400_not_a_500() {
    use base64::Engine;
    let t = TestApp::spawn().await;
    t.issue(json!({"customer": {"email": "ann@example.com"}})).await;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    for forged in [
        json!({"PK": "", "SK": "L", "created_at": "x", "GSI1PK": "C#ann@example.com"}),
        json!({"PK": "L#AAAAA", "SK": "", "created_at": "2026-11-25T00:00:00Z", "GSI1PK": "C#ann@example.com"}),
        json!({"PK": "L#AAAAA", "SK": "L", "created_at": "", "GSI1PK": "C#ann@example.com"}),
    ] {
        let cursor = engine.encode(forged.to_string());
        let answer = t.admin_get(&format!("/v1/licenses?customer_email=ann@example.com&cursor={cursor}")).await;
        assert_eq!((answer.status, answer.body["error"]["field"].clone()), (400, json!("cursor")), "{forged}");
    }
}

/// Against DynamoDB: a patch that changes nothing (suspending a suspended license) reads and does
/// not write, so the version and `updated_at` stay where the first patch left them.
#[tokio::test]
async fn a_patch_that_changes_nothing_writes_nothing_in_dynamodb() {
    let t = TestApp::spawn().await;
    let key = t.issue(json!({})).await;
    let first = t.admin_patch(&format!("/v1/licenses/{key}"), &json!({"status": "suspended"})).await;
    assert_eq!((first.status, first.body["license"]["version"].clone()), (200, json!(1)));
    let before = t.round_trips();
    let again = t.admin_patch(&format!("/v1/licenses/{key}"), &json!({"status": "suspended", "version": 1})).await;
    assert_eq!((again.status, &again.body["license"]), (200, &first.body["license"]));
    assert_eq!(t.round_trips() - before, 1, "one read, no write");
    assert_eq!(t.stored(&key).await["license"]["version"], 1);
}

#[tokio::test]
async fn a_products_licenses_list_newest_first_and_every_license_lists_once() {
    let t = TestApp::spawn().await;
    let mut designer = Vec::new();
    for _ in 0..3 {
        designer.push(t.issue(json!({"product": "designer"})).await);
        // Creation times are whole seconds; newest first needs them apart.
        tokio::time::sleep(std::time::Duration::from_millis(1_050)).await;
    }
    let editor = t.issue(json!({})).await;
    // A trial record of the product shares its index: it must not list as a license.
    let terms = json!({"days": 14, "max_activations": 1}).to_string().into_bytes();
    let trial = t.request("PUT", "/v1/products/designer/trial", terms, true).await;
    assert_eq!(trial.status, 200, "{}", trial.body);
    let started = t.post("/v1/trial", &json!({"product": "designer", "hardware_id": "pc-trial"})).await;
    assert_eq!(started.status, 201, "{}", started.body);
    let trial_key = started.body["license"]["license_key"].as_str().unwrap().to_string();
    tokio::time::sleep(std::time::Duration::from_millis(1_050)).await;
    let second = t.post("/v1/trial", &json!({"product": "designer", "hardware_id": "pc-trial-2"})).await;
    assert_eq!(second.status, 201, "{}", second.body);
    let second_key = second.body["license"]["license_key"].as_str().unwrap().to_string();

    let expected: Vec<&str> = [second_key.as_str(), trial_key.as_str()]
        .into_iter()
        .chain(designer.iter().rev().map(String::as_str))
        .collect();
    // Pages may stop at a trial record the index holds beside the licenses (the first page
    // evaluates the newer trial's record, its license and the older trial's record): their cursors
    // are accepted, and every license comes exactly once, newest first.
    let by_product = paged(&t, "/v1/licenses?product=designer&limit=2", 20).await;
    assert_eq!(by_product, expected, "newest first, each once");

    let mut seen = paged(&t, "/v1/licenses?limit=2", 20).await;
    seen.sort_unstable();
    let mut all: Vec<String> = designer.into_iter().chain([editor, trial_key, second_key]).collect();
    all.sort_unstable();
    assert_eq!(seen, all, "every license once, the table holding nothing else");
}
