//! Test harness: each test gets its own table on the DynamoDB Local that `make test` started
//! (`AWS_ENDPOINT_URL_DYNAMODB`), a fresh signing key and admin token, and `keygate serve`'s
//! server on a free loopback port, talked to over real HTTP.

pub mod emulator;
pub mod fault;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use keygate::api::App;
use keygate::auth::hash_token;
use keygate::config::Config;
use keygate::input::random_id;
use keygate::signing::generate_seed;
use keygate::store::{create_table, sdk_config, DynamoStore, Store};
use serde_json::Value;
use std::sync::Arc;
use tokio::sync::oneshot;

pub struct TestApp {
    pub base_url: String,
    pub admin_token: String,
    pub app: Arc<App<DynamoStore>>,
    client: Client<HttpConnector, Full<Bytes>>,
    _shutdown: oneshot::Sender<()>,
}

pub struct Answer {
    pub status: u16,
    pub body: Value,
    /// The `Retry-After` header, in seconds, when there is one.
    pub retry_after: Option<u64>,
}

impl Answer {
    pub fn error_code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }
}

/// `target/debug/<name>`, a binary of the workspace beside the test binary's `deps/` folder, which
/// `make test` builds first; `package` names what to build when it is missing.
pub fn built_binary(name: &str, package: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let binary = exe.parent().and_then(|deps| deps.parent()).unwrap().join(name);
    assert!(
        binary.exists(),
        "{} is missing: build it with `cargo build -p {package}` (make test does)",
        binary.display()
    );
    binary
}

fn require_dynamodb_local() {
    assert!(
        std::env::var("AWS_ENDPOINT_URL_DYNAMODB").is_ok(),
        "integration tests need DynamoDB Local: run them with `make test` (or scripts/with-dynamodb-local.sh cargo test -p keygate-tests)"
    );
}

/// A store on a fresh, uniquely named table.
pub async fn fresh_store() -> DynamoStore {
    require_dynamodb_local();
    let table = random_id("kg").unwrap();
    let store = DynamoStore::from_config(&sdk_config().await, &table);
    assert!(create_table(store.client(), &table).await.unwrap());
    store
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(fresh_store().await).await
    }

    /// A server whose store reaches DynamoDB Local through a fault proxy (with the SDK settings
    /// that are deployed), and a store on the same table that reaches it directly.
    pub async fn spawn_behind_proxy() -> (Self, fault::FaultProxy, DynamoStore) {
        let direct = fresh_store().await;
        let upstream = std::env::var("AWS_ENDPOINT_URL_DYNAMODB").unwrap();
        let proxy = fault::FaultProxy::start(&upstream).await;
        let config = aws_sdk_dynamodb::config::Builder::from(&sdk_config().await).endpoint_url(&proxy.url).build();
        let store = DynamoStore::new(aws_sdk_dynamodb::Client::from_conf(config), direct.table());
        (Self::spawn_with(store).await, proxy, direct)
    }

    pub async fn spawn_with(store: DynamoStore) -> Self {
        Self::spawn_with_env(store, &[]).await
    }

    /// The server on a fresh table, with webhooks allowed to reach the local machine (a receiver
    /// the test runs).
    pub async fn spawn_with_local_webhooks() -> Self {
        Self::spawn_with_env(fresh_store().await, &[(keygate::config::WEBHOOK_ALLOW_PRIVATE, "1")]).await
    }

    pub async fn spawn_with_env(store: DynamoStore, env: &[(&str, &str)]) -> Self {
        let admin_token = generate_seed().unwrap();
        let seed = generate_seed().unwrap();
        let hash = hash_token(&admin_token);
        let config = Config::from_lookup(|name| match name {
            keygate::config::SIGNING_KEY => Some(seed.clone()),
            keygate::config::ADMIN_TOKEN_SHA256 => Some(hash.clone()),
            other => env.iter().find(|(n, _)| *n == other).map(|(_, v)| v.to_string()),
        })
        .unwrap();
        let app = Arc::new(App::new(store, config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let (shutdown, stop) = oneshot::channel::<()>();
        tokio::spawn(keygate_cli::serve(listener, app.clone(), async {
            let _ = stop.await;
        }));
        let client = Client::builder(TokioExecutor::new()).build_http();
        Self { base_url, admin_token, app, client, _shutdown: shutdown }
    }

    pub fn round_trips(&self) -> u64 {
        self.app.store.round_trips()
    }

    pub async fn request(&self, method: &str, path: &str, body: Vec<u8>, admin: bool) -> Answer {
        let token = format!("Bearer {}", self.admin_token);
        let headers: &[(&str, &str)] = if admin { &[("authorization", &token)] } else { &[] };
        self.send(method, path, body, headers).await
    }

    /// A vendor request with extra headers.
    pub async fn request_with_headers(
        &self,
        method: &str,
        path: &str,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let token = format!("Bearer {}", self.admin_token);
        let mut all = vec![("authorization", token.as_str())];
        all.extend_from_slice(headers);
        self.send(method, path, body, &all).await
    }

    async fn send(&self, method: &str, path: &str, body: Vec<u8>, headers: &[(&str, &str)]) -> Answer {
        let mut builder = hyper::Request::builder().method(method).uri(format!("{}{path}", self.base_url));
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let response = self.client.request(builder.body(Full::new(Bytes::from(body))).unwrap()).await.unwrap();
        let status = response.status().as_u16();
        let retry_after =
            response.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body =
            serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes)));
        Answer { status, body, retry_after }
    }

    /// A client request (no admin token) with extra headers.
    pub async fn post_with_headers(&self, path: &str, body: &Value, headers: &[(&str, &str)]) -> Answer {
        self.send("POST", path, body.to_string().into_bytes(), headers).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Answer {
        self.request("POST", path, body.to_string().into_bytes(), false).await
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.request("GET", path, vec![], false).await
    }

    pub async fn admin_post(&self, path: &str, body: &Value) -> Answer {
        self.request("POST", path, body.to_string().into_bytes(), true).await
    }

    pub async fn admin_get(&self, path: &str) -> Answer {
        self.request("GET", path, vec![], true).await
    }

    pub async fn admin_patch(&self, path: &str, body: &Value) -> Answer {
        self.request("PATCH", path, body.to_string().into_bytes(), true).await
    }

    pub async fn admin_delete(&self, path: &str) -> Answer {
        self.request("DELETE", path, vec![], true).await
    }

    /// Issues one license with `terms` added to a perpetual 'editor' license; returns its key.
    pub async fn issue(&self, terms: Value) -> String {
        let mut body = serde_json::json!({"product": "editor", "license_type": "perpetual", "max_activations": 3});
        body.as_object_mut().unwrap().extend(terms.as_object().cloned().unwrap_or_default());
        let answer = self.admin_post("/v1/licenses", &body).await;
        assert_eq!(answer.status, 201, "{}", answer.body);
        answer.body["licenses"][0]["license_key"].as_str().unwrap().to_string()
    }

    /// Moves a floating lease's end in the table itself, as the passing of time would: the
    /// server sees a lease that lapsed (or has time left) without the test waiting minutes.
    pub async fn set_lease_end(&self, key: &str, hardware_id: &str, unix: i64) {
        let end = keygate::time::Timestamp::from_unix(unix).to_string();
        let sort_key = format!("D#{hardware_id}");
        let holds = Some("attribute_exists(lease_expires_at)");
        self.update_stored(key, &sort_key, "SET lease_expires_at = :v", holds, &[], &[(":v", &end)]).await;
    }

    /// Moves a consumption counter into another period in the table itself, as the passing of
    /// time would (`counter` is `*` for the license's own, or a feature code).
    pub async fn set_counter_period(&self, key: &str, counter: &str, period: &str) {
        self.set_in_license(key, "consumption.#k.#p", &[("#k", counter), ("#p", "period")], period).await;
    }

    /// Removes a device's floating lease, as a take-over of its lapsed seat would (the license
    /// counts one lease fewer).
    pub async fn remove_lease(&self, key: &str, hardware_id: &str) {
        let sort_key = format!("D#{hardware_id}");
        let holds = Some("attribute_exists(lease_expires_at)");
        self.update_stored(key, &sort_key, "REMOVE lease_expires_at", holds, &[], &[]).await;
        self.update_stored(key, "L", "SET leases_held = leases_held - :n_one", None, &[], &[(":n_one", "1")]).await;
    }

    /// Moves a device's `last_seen_at` in the table itself, as the passing of time would.
    pub async fn set_last_seen(&self, key: &str, hardware_id: &str, unix: i64) {
        let seen = keygate::time::Timestamp::from_unix(unix).to_string();
        let sort_key = format!("D#{hardware_id}");
        self.update_stored(key, &sort_key, "SET last_seen_at = :v", None, &[], &[(":v", &seen)]).await;
    }

    /// Moves every record of `hardware_id`'s credentials on license `key` into the past, as the
    /// passing of time would: its device item's (or tombstone's) `credential_until`, its lease and
    /// its release entry. The caller treats the device's tokens as expired from then on.
    pub async fn expire_credentials(&self, key: &str, hardware_id: &str) {
        let past = keygate::time::Timestamp::now().plus_seconds(-1).to_string();
        let partition = stored_partition(self, key).await;
        let device = partition.devices.iter().find(|d| d["hardware_id"] == hardware_id);
        if device.is_some_and(|d| d.get("credential_until").is_some()) {
            let sort_key = format!("D#{hardware_id}");
            self.update_stored(key, &sort_key, "SET credential_until = :v", None, &[], &[(":v", &past)]).await;
        }
        if device.is_some_and(|d| d.get("lease_expires_at").is_some()) {
            let sort_key = format!("D#{hardware_id}");
            self.update_stored(key, &sort_key, "SET lease_expires_at = :v", None, &[], &[(":v", &past)]).await;
        }
        if partition.license["releases"].get(hardware_id).is_some() {
            self.set_in_license(key, "releases.#k", &[("#k", hardware_id)], &past).await;
        }
    }

    /// Sets the existing string at `path` (with its expression attribute `names`) in a license item.
    async fn set_in_license(&self, key: &str, path: &str, names: &[(&str, &str)], value: &str) {
        let (expression, condition) = (format!("SET {path} = :v"), format!("attribute_exists({path})"));
        self.update_stored(key, "L", &expression, Some(&condition), names, &[(":v", value)]).await;
    }

    /// One UpdateItem of an item of license `key`'s partition (`sort_key` `L`, or `D#<hardware id>`)
    /// straight in the table, past the API; string `values` only.
    async fn update_stored(
        &self,
        key: &str,
        sort_key: &str,
        expression: &str,
        condition: Option<&str>,
        names: &[(&str, &str)],
        values: &[(&str, &str)],
    ) {
        use aws_sdk_dynamodb::types::AttributeValue;
        let mut update = self
            .app
            .store
            .client()
            .update_item()
            .table_name(self.app.store.table())
            .key("PK", AttributeValue::S(format!("L#{key}")))
            .key("SK", AttributeValue::S(sort_key.into()))
            .update_expression(expression)
            .set_condition_expression(condition.map(str::to_string));
        for (placeholder, name) in names {
            update = update.expression_attribute_names(*placeholder, *name);
        }
        for (placeholder, value) in values {
            // Placeholders named `:n_...` are numbers, the others strings.
            let value = match placeholder.starts_with(":n_") {
                true => AttributeValue::N(value.to_string()),
                false => AttributeValue::S(value.to_string()),
            };
            update = update.expression_attribute_values(*placeholder, value);
        }
        update.send().await.unwrap_or_else(|e| panic!("{expression} on {sort_key} of {key}: {e:?}"));
    }

    /// The license as stored, with its devices and usage (the vendor view).
    pub async fn stored(&self, key: &str) -> Value {
        let answer = self.admin_get(&format!("/v1/licenses/{key}")).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        answer.body
    }
}

/// Every item of a license's partition as stored, read with a consistent query past the API.
pub struct Partition {
    pub license: Value,
    /// Device items, bound and released (tombstones carry `released_at`), by hardware id.
    pub devices: Vec<Value>,
}

impl Partition {
    pub fn bound_devices(&self) -> Vec<String> {
        self.devices
            .iter()
            .filter(|d| d.get("released_at").is_none())
            .map(|d| d["hardware_id"].as_str().unwrap().to_string())
            .collect()
    }

    /// The floating leases (live or lapsed), by holder: on device items, bound or released.
    pub fn leases(&self) -> std::collections::BTreeMap<String, i64> {
        let end =
            |d: &Value| d.get("lease_expires_at")?.as_str().map(|e| keygate::time::Timestamp::parse(e).unwrap().unix());
        self.devices.iter().filter_map(|d| Some((d["hardware_id"].as_str()?.to_string(), end(d)?))).collect()
    }

    /// The license's count of leases, as its seat limit's conditions see it.
    pub fn leases_held(&self) -> usize {
        self.license.get("leases_held").and_then(Value::as_u64).unwrap_or(0) as usize
    }

    pub fn released_devices(&self) -> Vec<&Value> {
        self.devices.iter().filter(|d| d.get("released_at").is_some()).collect()
    }
}

pub async fn stored_partition(t: &TestApp, key: &str) -> Partition {
    partition_in(&t.app.store, key).await
}

/// A license's partition as `store`'s table holds it (read past the API, with `store`'s client).
pub async fn partition_in(store: &DynamoStore, key: &str) -> Partition {
    use aws_sdk_dynamodb::types::AttributeValue;
    let mut license = Value::Null;
    let mut devices = Vec::new();
    let mut start = None;
    loop {
        let output = store
            .client()
            .query()
            .table_name(store.table())
            .key_condition_expression("PK = :pk")
            .expression_attribute_values(":pk", AttributeValue::S(format!("L#{key}")))
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("the partition is readable");
        for item in output.items.unwrap_or_default() {
            let sk = item["SK"].as_s().unwrap().clone();
            let value: Value = serde_dynamo::from_item(item).unwrap();
            if sk == "L" {
                license = value;
            } else if sk.starts_with("D#") {
                devices.push(value);
            }
        }
        start = output.last_evaluated_key;
        if start.is_none() {
            break;
        }
    }
    assert!(!license.is_null(), "license {key} is stored");
    Partition { license, devices }
}

/// An offline request file (docs/offline.md) written now, for product `editor`.
pub fn offline_request(key: &str, hardware_id: &str, kind: &str, nonce: &str) -> Value {
    serde_json::json!({"format": "keygate-offline-request/1", "kind": kind, "license_key": key, "product": "editor",
        "hardware_id": hardware_id, "nonce": nonce, "created_at": keygate::time::Timestamp::now().to_string()})
}

pub fn device(key: &str, hardware_id: &str) -> Value {
    serde_json::json!({"license_key": key, "product": "editor", "hardware_id": hardware_id})
}

/// Runs futures concurrently on the current task and collects their outputs in order.
pub async fn join_all<F: std::future::Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut pending: Vec<_> = futures.into_iter().map(|f| Some(Box::pin(f))).collect();
    let mut outputs: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        for (slot, output) in pending.iter_mut().zip(outputs.iter_mut()) {
            if let Some(future) = slot {
                if let std::task::Poll::Ready(value) = future.as_mut().poll(cx) {
                    *output = Some(value);
                    *slot = None;
                }
            }
        }
        if pending.iter().all(Option::is_none) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    outputs.into_iter().map(|o| o.expect("every future finished")).collect()
}

/// The claims of a compact JWS, decoded by hand (signatures are verified in the token tests).
pub fn claims(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("a compact JWS");
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// A stored value in DynamoDB's JSON form (`{"S": …}`), as Lambda hands stream images to a function.
pub fn dynamodb_json(value: &aws_sdk_dynamodb::types::AttributeValue) -> serde_json::Value {
    use aws_sdk_dynamodb::types::AttributeValue;
    use serde_json::json;
    match value {
        AttributeValue::S(s) => json!({"S": s}),
        AttributeValue::N(n) => json!({"N": n}),
        AttributeValue::Bool(b) => json!({"BOOL": b}),
        AttributeValue::Null(_) => json!({"NULL": true}),
        AttributeValue::L(l) => json!({"L": l.iter().map(dynamodb_json).collect::<Vec<_>>()}),
        AttributeValue::M(m) => {
            json!({"M": m.iter().map(|(k, v)| (k.clone(), dynamodb_json(v))).collect::<serde_json::Map<_, _>>()})
        }
        AttributeValue::Ss(s) => json!({"SS": s}),
        other => panic!("not used by Keygate's items: {other:?}"),
    }
}

/// A license item as stored, in DynamoDB's JSON form (as stream records carry images).
pub async fn license_image(store: &DynamoStore, key: &str) -> serde_json::Value {
    use aws_sdk_dynamodb::types::AttributeValue;
    let got = store.client().get_item().table_name(store.table()).key("PK", AttributeValue::S(format!("L#{key}")));
    let item = got.key("SK", AttributeValue::S("L".into())).send().await.unwrap().item.expect("the license is stored");
    serde_json::Value::Object(item.iter().map(|(name, value)| (name.clone(), dynamodb_json(value))).collect())
}

/// A stream record of an insert of `image`, as Lambda hands records to the events function.
pub fn insert_record(image: &serde_json::Value, event_id: &str, sequence: usize, at: f64) -> serde_json::Value {
    serde_json::json!({
        "eventID": event_id,
        "eventName": "INSERT",
        "eventSource": "aws:dynamodb",
        "dynamodb": {
            "ApproximateCreationDateTime": at,
            "Keys": {"PK": image["PK"], "SK": image["SK"]},
            "NewImage": image,
            "SequenceNumber": sequence.to_string(),
            "SizeBytes": 600,
            "StreamViewType": "NEW_AND_OLD_IMAGES"
        }
    })
}
