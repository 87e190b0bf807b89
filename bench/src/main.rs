//! `make bench`: measures Keygate against baselines taken in the same run and rewrites
//! docs/benchmarks.md. Run by scripts/bench.sh, which builds the release binaries and starts
//! DynamoDB Local; nothing here is a timed test.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey, Verifier};
use keygate::api::{handle, App, Function};
use keygate::auth::hash_token;
use keygate::config::Config;
use keygate::store::{create_table, sdk_config, DynamoStore, MemoryStore, Store};
use keygate_tests::emulator::{Emulator, Outcome};
use keygate_tests::{insert_record, license_image};
use lambda_http::{Body, Request};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod scale;

const ADMIN: &str = "bench-admin-token";
const SEED: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";
const FUNCTIONS: [&str; 5] = ["issue", "activate", "check", "deactivate", "events"];

/// Percentiles of a sample, in microseconds.
#[derive(Clone, Copy)]
struct Summary {
    min: f64,
    p50: f64,
    p90: f64,
    p99: f64,
    n: usize,
}

fn summarize(samples: &mut [Duration]) -> Summary {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1e6;
    Summary { min: at(0.0), p50: at(0.5), p90: at(0.9), p99: at(0.99), n: samples.len() }
}

fn time_each<F: FnMut()>(warmup: usize, n: usize, mut f: F) -> Summary {
    for _ in 0..warmup {
        f();
    }
    let mut samples: Vec<Duration> = (0..n)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    summarize(&mut samples)
}

async fn time_each_async<F: FnMut(usize) -> Fut, Fut: std::future::Future<Output = ()>>(
    warmup: usize,
    n: usize,
    mut f: F,
) -> Summary {
    for i in 0..warmup {
        f(i).await;
    }
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let start = Instant::now();
        f(warmup + i).await;
        samples.push(start.elapsed());
    }
    summarize(&mut samples)
}

fn request(method: &str, path: &str, body: &Value, admin: bool) -> Request {
    let mut builder = lambda_http::http::Request::builder().method(method).uri(path);
    if admin {
        builder = builder.header("authorization", format!("Bearer {ADMIN}"));
    }
    let body = if body.is_null() { Body::Empty } else { Body::Text(body.to_string()) };
    builder.body(body).expect("a request")
}

fn config(table: &str) -> Config {
    let hash = hash_token(ADMIN);
    Config::from_lookup(|name| match name {
        keygate::config::SIGNING_KEY => Some(SEED.into()),
        keygate::config::ADMIN_TOKEN_SHA256 => Some(hash.clone()),
        keygate::config::TABLE => Some(table.into()),
        _ => None,
    })
    .expect("bench configuration")
}

async fn issue<S: Store>(app: &App<S>, terms: Value) -> String {
    let mut body = json!({"product": "bench", "license_type": "perpetual", "max_activations": 1});
    body.as_object_mut().unwrap().extend(terms.as_object().unwrap().clone());
    let response = handle(app, &Function::ALL, request("POST", "/v1/licenses", &body, true)).await;
    let answer: Value = serde_json::from_slice(response.body().as_ref()).unwrap();
    answer["licenses"][0]["license_key"].as_str().expect("issued").to_string()
}

async fn call<S: Store>(app: &App<S>, function: Function, path: &str, body: Value) -> u16 {
    handle(app, &[function], request("POST", path, &body, false)).await.status().as_u16()
}

fn device(key: &str, hwid: &str) -> Value {
    json!({"license_key": key, "product": "bench", "hardware_id": hwid})
}

struct Report {
    markdown: String,
    targets: Vec<(String, String, String, bool)>,
}

impl Report {
    fn section(&mut self, title: &str) {
        let _ = write!(self.markdown, "\n## {title}\n\n");
    }
    fn line(&mut self, text: impl AsRef<str>) {
        self.markdown.push_str(text.as_ref());
        self.markdown.push('\n');
    }
    fn row(&mut self, name: &str, s: Summary) {
        self.line(format!("| {name} | {:.1} | {:.1} | {:.1} | {:.1} | {} |", s.min, s.p50, s.p90, s.p99, s.n));
    }
    fn table_head(&mut self) {
        self.line("| what | min µs | p50 µs | p90 µs | p99 µs | n |");
        self.line("| --- | ---: | ---: | ---: | ---: | ---: |");
    }
    fn target(&mut self, target: &str, measured: String, limit: f64, ratio: f64) {
        self.targets.push((target.to_string(), measured, format!("{limit}x"), ratio <= limit));
    }
}

/// In-process cost of the handlers (in-memory store) beside one signature and one verification
/// (returned, the baseline of the client library's figures).
async fn micro(report: &mut Report) -> Summary {
    let app = App::new(MemoryStore::new(), config("memory"));
    let key = issue(&app, json!({"allow_unlimited_activations": true, "max_activations": 0})).await;
    assert_eq!(call(&app, Function::Activate, "/v1/activate", device(&key, "pc-0")).await, 200);

    let signing = SigningKey::from_bytes(&[7; 32]);
    let message = vec![0x5a_u8; 420];
    let sign = time_each(200, 5_000, || {
        std::hint::black_box(signing.sign(std::hint::black_box(&message)));
    });
    let public = signing.verifying_key();
    let signature = signing.sign(&message);
    let token = {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"EdDSA","typ":"JWT","kid":"k"}"#);
        let payload = URL_SAFE_NO_PAD.encode(&message);
        let signed = format!("{header}.{payload}");
        let sig = signing.sign(signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
    };
    let verify = time_each(200, 5_000, || {
        let (signed, sig) = token.rsplit_once('.').unwrap();
        let sig = ed25519_dalek::Signature::from_slice(&URL_SAFE_NO_PAD.decode(sig).unwrap()).unwrap();
        std::hint::black_box(public.verify(signed.as_bytes(), &sig).is_ok());
    });
    let _ = signature;
    let body = device(&key, "pc-0");
    let check = time_each_async(200, 5_000, |_| {
        let app = &app;
        let body = &body;
        async move {
            std::hint::black_box(handle(app, &[Function::Check], request("POST", "/v1/check", body, false)).await);
        }
    })
    .await;
    let activate = time_each_async(200, 3_000, |i| {
        let (app, key) = (&app, &key);
        async move {
            let body = device(key, &format!("pc-{}", i + 1));
            std::hint::black_box(
                handle(app, &[Function::Activate], request("POST", "/v1/activate", &body, false)).await,
            );
        }
    })
    .await;

    report.section("Handler cost without I/O (in-process, in-memory store)");
    report.table_head();
    report.row("one Ed25519 signature (420-byte message)", sign);
    report.row("one JWS verification (parse, base64, Ed25519 verify)", verify);
    report.row("check handler: route, parse, read, verdict, sign, JSON", check);
    report.row("activate handler (new device each time)", activate);
    let ratio = check.p50 / sign.p50;
    report.line(format!(
        "\ncheck p50 / signature p50 = **{ratio:.2}x** (target ≤ 3x); activate p50 / signature p50 = {:.2}x; \
         verification p50 / signature p50 = {:.2}x.",
        activate.p50 / sign.p50,
        verify.p50 / sign.p50
    ));
    report.target("Handler cost: check p50 within 3x of one Ed25519 signature", format!("{ratio:.2}x"), 3.0, ratio);
    verify
}

/// Against DynamoDB Local with one SDK client: check beside a bare GetItem.
async fn against_dynamodb(report: &mut Report, table: &str) -> (Summary, Summary) {
    let store = DynamoStore::from_config(&sdk_config().await, table);
    let client = store.client().clone();
    let app = App::new(store, config(table));
    let key = issue(&app, json!({})).await;
    assert_eq!(call(&app, Function::Activate, "/v1/activate", device(&key, "pc-1")).await, 200);
    let get = time_each_async(50, 500, |_| {
        let (client, key) = (&client, &key);
        async move {
            let item = client
                .get_item()
                .table_name(table)
                .key("PK", aws_sdk_dynamodb::types::AttributeValue::S(format!("L#{key}")))
                .key("SK", aws_sdk_dynamodb::types::AttributeValue::S("L".into()))
                .consistent_read(true)
                .send()
                .await
                .expect("GetItem");
            std::hint::black_box(item);
        }
    })
    .await;
    let before = app.store.round_trips();
    let body = device(&key, "pc-1");
    let check = time_each_async(50, 500, |_| {
        let (app, body) = (&app, &body);
        async move {
            assert_eq!(handle(app, &[Function::Check], request("POST", "/v1/check", body, false)).await.status(), 200);
        }
    })
    .await;
    let trips = (app.store.round_trips() - before) as f64 / 550.0;
    report.section("Against DynamoDB Local (same SDK client)");
    report.table_head();
    report.row("bare GetItem of the license (consistent read)", get);
    report.row("check handler (BatchGetItem of license + device, verdict, signature)", check);
    let ratio = check.p50 / get.p50;
    report.line(format!(
        "\ncheck p50 / GetItem p50 = **{ratio:.2}x** (target ≤ 1.5x); p99 ratio {:.2}x; {trips:.2} round trips per check.",
        check.p99 / get.p99
    ));
    report.target(
        "Against DynamoDB Local: check p50 within 1.5x of a bare GetItem p50",
        format!("{ratio:.2}x"),
        1.5,
        ratio,
    );
    (get, check)
}

/// A release function binary started as Lambda starts it, with the bench's Keygate configuration.
fn lambda_command(emulator: &Emulator, binary: &Path, name: &str, table: &str) -> Command {
    let mut command = emulator.lambda_command(binary, name);
    command
        .env("KEYGATE_TABLE", table)
        .env("KEYGATE_SIGNING_KEY", SEED)
        .env("KEYGATE_ADMIN_TOKEN_SHA256", hash_token(ADMIN))
        .stderr(Stdio::null());
    command
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// One cold start: exec of a release binary to its first `GET .../invocation/next`, and the minor
/// page faults it took to get there (read from /proc while it waits for its first event).
async fn cold_start(emulator: &Emulator, binary: &Path, name: &str, table: &str) -> (Duration, Option<u64>) {
    let first_next = emulator.watch_first_next();
    let mut command = lambda_command(emulator, binary, name, table);
    let start = Instant::now();
    let child = command.spawn().expect("start the bootstrap binary");
    let at = tokio::time::timeout(Duration::from_secs(10), first_next).await.expect("init within 10 s").unwrap();
    let faults = minor_faults(child.id());
    stop(child);
    (at - start, faults)
}

fn minor_faults(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; minflt is field 10 of the whole line.
    stat.rsplit_once(')')?.1.split_whitespace().nth(7)?.parse().ok()
}

/// Cold starts of every binary, taken in interleaved rounds (one of each per round) so that the
/// shared machine's drift during the run falls on all of them alike.
async fn cold_starts(emulator: &Emulator, bins: &Path, names: &[&str], table: &str, rounds: usize) -> Vec<ColdStarts> {
    let mut samples = vec![(Vec::with_capacity(rounds), Vec::with_capacity(rounds)); names.len()];
    for _ in 0..rounds {
        for (name, (times, faults)) in names.iter().zip(samples.iter_mut()) {
            let (time, fault) = cold_start(emulator, &bins.join(name).join("bootstrap"), name, table).await;
            times.push(time);
            faults.extend(fault);
        }
    }
    names
        .iter()
        .zip(samples)
        .map(|(name, (mut times, mut faults))| {
            faults.sort();
            ColdStarts {
                name: name.to_string(),
                time: summarize(&mut times),
                faults: faults.get(faults.len() / 2).copied(),
            }
        })
        .collect()
}

struct ColdStarts {
    name: String,
    time: Summary,
    /// Median minor page faults from exec to the first `next`.
    faults: Option<u64>,
}

fn apigw_event(method: &str, path: &str, body: &Value, admin: bool) -> String {
    let mut headers = json!({"content-type": "application/json", "host": "bench.execute-api.us-east-1.amazonaws.com"});
    if admin {
        headers["authorization"] = json!(format!("Bearer {ADMIN}"));
    }
    json!({
        "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": "", "headers": headers,
        "requestContext": {"accountId": "123456789012", "apiId": "bench", "domainName": "bench.execute-api.us-east-1.amazonaws.com",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "bench"},
            "requestId": "bench", "routeKey": "$default", "stage": "$default", "time": "22/Nov/2026:00:00:00 +0000", "timeEpoch": 0},
        "body": if body.is_null() { Value::Null } else { json!(body.to_string()) },
        "isBase64Encoded": false
    })
    .to_string()
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()
}

/// Invocations of API Gateway v2 events through a running binary: event handed out → response back.
async fn invocations(
    emulator: &Emulator,
    binary: &Path,
    name: &str,
    table: &str,
    events: Vec<String>,
) -> (Summary, Option<u64>, usize) {
    let (events_tx, mut outcomes) = emulator.session().await;
    let mut command = lambda_command(emulator, binary, name, table);
    let child = command.spawn().expect("start the bootstrap binary");
    let mut samples = Vec::with_capacity(events.len());
    let mut failures = 0;
    let warmup = 20.min(events.len() / 5);
    for (i, event) in events.into_iter().enumerate() {
        let start = Instant::now();
        events_tx.send(event).await.expect("the emulator takes events");
        let outcome =
            tokio::time::timeout(Duration::from_secs(10), outcomes.recv()).await.expect("an answer within 10 s");
        let elapsed = start.elapsed();
        match outcome {
            Some(Outcome::Response(body)) => {
                let answer = serde_json::from_slice::<Value>(&body).unwrap_or_default();
                // An HTTP error, or a stream batch with a record it could not record.
                let refused = answer["statusCode"].as_u64().is_some_and(|s| s >= 400);
                let unrecorded = answer["batchItemFailures"].as_array().is_some_and(|f| !f.is_empty());
                if refused || unrecorded {
                    failures += 1;
                }
            }
            _ => failures += 1,
        }
        if i >= warmup {
            samples.push(elapsed);
        }
    }
    let rss = peak_rss_kib(child.id());
    stop(child);
    (summarize(&mut samples), rss, failures)
}

/// Cold-start rounds in `make bench`; `keygate-bench cold [rounds]` runs only this part.
const COLD_ROUNDS: usize = 40;

/// The baselines, then the functions.
fn cold_start_binaries() -> Vec<&'static str> {
    let mut names = vec!["hello", "hello-current-thread"];
    names.extend(FUNCTIONS);
    names
}

fn cold_start_report(report: &mut Report, cold: &[ColdStarts]) {
    report.section("Cold start: exec to the first `GET /2018-06-01/runtime/invocation/next`");
    report.line(format!(
        "Each release `bootstrap` is started {} times against the Runtime API emulator (tests/src/emulator.rs), \
         in interleaved rounds (the baselines, then each function, then again). Page faults: median minor faults from \
         exec to the first `next`.\n",
        cold[0].time.n
    ));
    report.line("| what | min µs | p50 µs | p90 µs | p99 µs | n | page faults |");
    report.line("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for c in cold {
        let s = c.time;
        let faults = c.faults.map(|f| f.to_string()).unwrap_or_else(|| "?".into());
        report.line(format!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {faults} |",
            c.name, s.min, s.p50, s.p90, s.p99, s.n
        ));
    }
    let worst_against = |baseline: &str| {
        let baseline = cold.iter().find(|c| c.name == baseline).expect("a baseline").time.p50;
        cold.iter()
            .filter(|c| FUNCTIONS.contains(&c.name.as_str()))
            .map(|c| (c.name.as_str(), c.time.p50 / baseline))
            .fold(("", 0.0), |a, b| if b.1 > a.1 { b } else { a })
    };
    let (worst, ratio) = worst_against("hello");
    let (worst_ct, ratio_ct) = worst_against("hello-current-thread");
    report.line(format!(
        "\nWorst function p50 / hello-world p50 = **{ratio:.2}x** ({worst}) (target ≤ 1.5x). The functions run on \
         tokio's current-thread runtime and hello on the multi-thread one of lambda_runtime's examples; against \
         hello-current-thread, the same hello on the functions' runtime: {ratio_ct:.2}x ({worst_ct})."
    ));
    report.target(
        "Cold start within 1.5x of a hello-world lambda_runtime binary",
        format!("{ratio:.2}x ({worst})"),
        1.5,
        ratio,
    );
}

async fn functions(report: &mut Report, bins: &Path, table: &str, store_app: &App<DynamoStore>) -> Option<f64> {
    let emulator = Emulator::start().await;
    let binary = |name: &str| bins.join(name).join("bootstrap");
    let cold = cold_starts(&emulator, bins, &cold_start_binaries(), table, COLD_ROUNDS).await;
    cold_start_report(report, &cold);

    // Per-invocation latency, and peak RSS under that load.
    let key = issue(store_app, json!({"allow_unlimited_activations": true, "max_activations": 0})).await;
    assert_eq!(call(store_app, Function::Activate, "/v1/activate", device(&key, "steady")).await, 200);
    let n = 300;
    for i in 0..n {
        assert_eq!(
            call(store_app, Function::Activate, "/v1/activate", device(&key, &format!("leaving-{i}"))).await,
            200
        );
    }
    // The events function's work: batches of 100 stream records (licenses created, as Lambda hands
    // them over), each yielding one event, recorded in the audit log.
    let image = license_image(&store_app.store, &key).await;
    let workloads: Vec<(&str, Vec<String>)> = vec![
        ("hello", (0..n).map(|_| apigw_event("GET", "/hello", &Value::Null, false)).collect()),
        ("check", (0..n).map(|_| apigw_event("POST", "/v1/check", &device(&key, "steady"), false)).collect()),
        (
            "activate",
            (0..n).map(|i| apigw_event("POST", "/v1/activate", &device(&key, &format!("new-{i}")), false)).collect(),
        ),
        (
            "deactivate",
            (0..n)
                .map(|i| apigw_event("POST", "/v1/deactivate", &device(&key, &format!("leaving-{i}")), false))
                .collect(),
        ),
        ("issue", (0..n).map(|_| apigw_event("GET", &format!("/v1/licenses/{key}"), &Value::Null, true)).collect()),
        ("events", (0..n / 5).map(|i| stream_batch(&image, i)).collect()),
    ];
    let mut results = Vec::new();
    for (name, events) in workloads {
        results.push((name, invocations(&emulator, &binary(name), name, table, events).await));
    }
    report.section("Per invocation: API Gateway v2 events through the real binaries, against DynamoDB Local");
    report.line("Event handed to the waiting `next` → response posted back; the first 20 are warm-up.\n");
    report.line("| binary | p50 µs | p90 µs | p99 µs | n | failed | peak RSS |");
    report.line("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut check_p50_ms = None;
    for (name, (s, rss, failures)) in &results {
        report.line(format!(
            "| {name} | {:.1} | {:.1} | {:.1} | {} | {failures} | {} |",
            s.p50,
            s.p90,
            s.p99,
            s.n,
            rss.map(|k| format!("{:.1} MiB", k as f64 / 1024.0)).unwrap_or_else(|| "?".into())
        ));
        if *name == "check" {
            check_p50_ms = Some(s.p50 / 1000.0);
        }
    }
    let max_rss = results.iter().filter_map(|(_, (_, rss, _))| *rss).max().unwrap_or(0) as f64 / 1024.0;
    report.line(format!("\nLargest peak RSS: {max_rss:.1} MiB of a 128 MB Lambda."));
    report.targets.push((
        "Peak RSS of each function fits a 128 MB Lambda".into(),
        format!("{max_rss:.1} MiB"),
        "128 MB".into(),
        max_rss < 128.0,
    ));
    check_p50_ms
}

/// Records in one stream batch of the events function's workload (Lambda's default batch size).
const BATCH_RECORDS: usize = 100;

/// Batch `n` of the events workload: [`BATCH_RECORDS`] inserts of `image`, each its own change.
fn stream_batch(image: &Value, n: usize) -> String {
    let records: Vec<Value> = (0..BATCH_RECORDS)
        .map(|i| insert_record(image, &format!("bench-{n}-{i}"), n * BATCH_RECORDS + i + 1, 1_795_000_000.0 + n as f64))
        .collect();
    json!({ "Records": records }).to_string()
}

/// What recording one batch costs the audit log, counted by the store (deterministic).
async fn events_cost(report: &mut Report, app: &App<DynamoStore>, key: &str) {
    let image = license_image(&app.store, key).await;
    let batch: Value = serde_json::from_str(&stream_batch(&image, 999_999)).unwrap();
    let records = keygate::store::records_from_lambda(&batch).unwrap();
    let (trips, used) = (app.store.round_trips(), app.store.capacity_used());
    let written = app.store.record(&records, None).await.expect("recorded");
    let after = app.store.capacity_used();
    let (trips, units) = (app.store.round_trips() - trips, after.write_units - used.write_units);
    report.section("Events: the cost of recording a stream batch");
    report.line(format!(
        "One batch of {BATCH_RECORDS} stream records, each a license created (one event), recorded in the audit log \
         by the code the events function runs (no webhook endpoint): **{written} events, {trips} round trips, \
         {units:.0} write units** (the table and its `ByDay` index: {:.1} per event). On-demand at $1.25 per \
         million write units: **≈ ${:.2} per million events** written; the stream read by Lambda is free, and the \
         function runs once per batch (its p50 per batch is in the table above).",
        units / written.max(1) as f64,
        units / written.max(1) as f64 * 1.25,
    ));
}

/// A release `keygate serve` on a free loopback port, stopped when dropped, so a bench that fails
/// half-way leaves no server behind.
struct Served {
    child: Child,
    port: u16,
}

impl Served {
    async fn start(keygate: &Path, table: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        // The request path alone: the stream follower's rounds would share the machine with it.
        let child = Command::new(keygate)
            .args(["serve", "--no-events", "--port", &port.to_string()])
            .env("KEYGATE_TABLE", table)
            .env("KEYGATE_SIGNING_KEY", SEED)
            .env("AWS_LAMBDA_LOG_LEVEL", "ERROR")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start keygate serve");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Served { child, port }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `keygate serve` (release) under a fixed-concurrency load from this process, on loopback.
async fn throughput(report: &mut Report, keygate: &Path, table: &str, key: &str) {
    let server = Served::start(keygate, table).await;
    let port = server.port;
    let client: hyper_util::client::legacy::Client<_, http_body_util::Full<hyper::body::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let body = device(key, "steady").to_string();
    let concurrency = 16;
    let duration = Duration::from_secs(8);
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (client, body) = (client.clone(), body.clone());
        workers.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut errors = 0;
            while start.elapsed() < duration {
                let request = hyper::Request::post(format!("http://127.0.0.1:{port}/v1/check"))
                    .body(http_body_util::Full::new(hyper::body::Bytes::from(body.clone())))
                    .unwrap();
                let t = Instant::now();
                match client.request(request).await {
                    Ok(response) if response.status() == 200 => {
                        let _ = http_body_util::BodyExt::collect(response.into_body()).await;
                        samples.push(t.elapsed());
                    }
                    _ => errors += 1,
                }
            }
            (samples, errors)
        }));
    }
    let mut samples = Vec::new();
    let mut errors = 0;
    for worker in workers {
        let (s, e) = worker.await.unwrap();
        samples.extend(s);
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let rss = peak_rss_kib(server.child.id());
    drop(server);
    let s = summarize(&mut samples);
    report.section("Throughput: `keygate serve` on loopback");
    report.line(format!(
        "{concurrency} concurrent connections for {:.0} s from the bench process to a release `keygate serve`, \
         checks against DynamoDB Local (which is the bottleneck: a JVM on the same 2 cores).\n",
        duration.as_secs_f64()
    ));
    report.table_head();
    report.row("POST /v1/check", s);
    report.line(format!(
        "\n**{:.0} checks/s**, {errors} errors, server peak RSS {}.",
        s.n as f64 / elapsed,
        rss.map(|k| format!("{:.1} MiB", k as f64 / 1024.0)).unwrap_or_else(|| "?".into())
    ));
}

/// The load test's results (bench/load/run.sh, locust): a mixed workload at saturation and at a fixed
/// rate, with the unexpected answers and the invariant violations it counted.
fn load_test(report: &mut Report, path: &Path) {
    let Ok(text) = std::fs::read_to_string(path) else {
        eprintln!("bench: no load test results at {} (bench/load/run.sh writes them)", path.display());
        return;
    };
    let load: Value = serde_json::from_str(&text).expect("the load test's JSON");
    report.section("Load test: a mixed client workload (locust) on `keygate serve`");
    report.line(format!(
        "{} simulated customers for {} s per run against a release `keygate serve` on DynamoDB Local, from locust \
         (bench/load/locustfile.py) on the same 2 cores: per customer 70% checks, 15% floating heartbeats on a shared \
         pool with a seat each, 8% consumes and 5% machines coming or going (activate or deactivate), writes with an \
         `Idempotency-Key`. Saturation: no pause between calls; fixed rate: {} calls/s per customer. Any 4xx or 5xx \
         is unexpected; after each run the stored seats, devices and counters are compared with what the customers \
         were told. Hot license: {} devices heartbeating with no pause on one floating pool of {} seats \
         (bench/load/hot_pool.py); afterwards no more leases than seats, the pool's count of leases is the leases \
         its devices hold, and every device told VALID still holds its lease. Latencies are locust's (ms, rounded), including the Python client's own time.\n",
        load["users"], load["seconds"], load["rate_per_user"], load["hot"]["devices"], load["hot"]["seats"]
    ));
    report.line("| run | operation | requests | req/s | p50 ms | p99 ms | failed | invariant violations |");
    report.line("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut bad = 0u64;
    for mode in ["saturation", "fixed", "hot"] {
        let run = &load["runs"][mode];
        if run.is_null() {
            continue;
        }
        let unexpected: u64 = run["unexpected"].as_object().map_or(0, |m| m.values().filter_map(Value::as_u64).sum());
        let violations = run["violations"].as_array().map_or(0, Vec::len) as u64;
        bad += unexpected + violations;
        let mut rows: Vec<(String, &Value)> =
            run["operations"].as_object().map(|m| m.iter().map(|(k, v)| (k.clone(), v)).collect()).unwrap_or_default();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, f) in &rows {
            report.line(format!(
                "| {mode} | {name} | {} | {:.0} | {} | {} | {} | |",
                f["requests"],
                f["rps"].as_f64().unwrap_or(0.0),
                f["p50"],
                f["p99"],
                f["failures"]
            ));
        }
        let f = &run["total"];
        report.line(format!(
            "| {mode} | **all** | {} | **{:.0}** | {} | {} | {unexpected} | {violations} |",
            f["requests"],
            f["rps"].as_f64().unwrap_or(0.0),
            f["p50"],
            f["p99"]
        ));
        for violation in run["violations"].as_array().into_iter().flatten() {
            report.line(format!("\nviolation ({mode}): {violation}"));
        }
    }
    report.targets.push((
        "Load test: unexpected answers and invariant violations, at saturation, at a fixed rate and on a hot license"
            .into(),
        bad.to_string(),
        "0".into(),
        bad == 0,
    ));
}

/// keygate-client: `status()` from the cache beside one JWS verification, and an online check through
/// the client beside the same request from a bare HTTP client, against a release `keygate serve`.
async fn client_library(report: &mut Report, keygate: &Path, table: &str, key: &str, verify: Summary) {
    let server = Served::start(keygate, table).await;
    let port = server.port;
    let url = format!("http://127.0.0.1:{port}");
    let public_key =
        keygate::signing::TokenSigner::new(keygate::signing::decode_seed(SEED).unwrap(), &[]).unwrap().public_key_b64();
    let dir = std::env::temp_dir().join(format!("keygate-bench-client-{}", std::process::id()));
    let client = keygate_client::AsyncClient::builder(&url, "bench")
        .public_key(&public_key)
        .issuer("keygate")
        .hardware_id("client-bench")
        .cache_dir(&dir)
        .build_async()
        .expect("a client");
    client.activate(key).await.expect("the client activates");
    let status = time_each(200, 5_000, || {
        std::hint::black_box(client.status().unwrap());
    });
    let through_client = time_each_async(20, 300, |_| {
        let client = &client;
        async move {
            std::hint::black_box(client.check().await.unwrap());
        }
    })
    .await;
    let bare: hyper_util::client::legacy::Client<_, http_body_util::Full<hyper::body::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let bare_check = time_each_async(20, 300, |i| {
        let (bare, url) = (&bare, &url);
        async move {
            let mut body = device(key, "client-bench");
            body["nonce"] = json!(format!("n-{i}"));
            let request = hyper::Request::post(format!("{url}/v1/check"))
                .header("content-type", "application/json")
                .body(http_body_util::Full::new(hyper::body::Bytes::from(body.to_string())))
                .unwrap();
            let response = bare.request(request).await.unwrap();
            std::hint::black_box(http_body_util::BodyExt::collect(response.into_body()).await.unwrap());
        }
    })
    .await;
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);

    report.section("Client library (keygate-client)");
    report.table_head();
    report.row("one JWS verification (as above)", verify);
    report.row("client.status(): from the cache, clock check, decision", status);
    report.row("POST /v1/check from a bare HTTP client (hyper)", bare_check);
    report.row("client.check(): nonce, request, verify, atomic cache write", through_client);
    let cached = status.p50 / verify.p50;
    let online = through_client.p50 / bare_check.p50;
    report.line(format!(
        "\nstatus() p50 / one verification p50 = **{cached:.3}x** (target ≤ 2x): the verdict is verified once \
         when loaded and kept in memory. client.check() p50 / bare request p50 = **{online:.2}x** (target ≤ 1.2x): \
         the client adds a nonce, a verification and, when the verdict's meaning changed or the saved one is \
         ten minutes old, an atomic write of the cache."
    ));
    report.target(
        "Client: status() from the cache within 2x of one JWS verification",
        format!("{cached:.3}x"),
        2.0,
        cached,
    );
    report.target(
        "Client: an online check within 1.2x of the same request from a bare HTTP client",
        format!("{online:.2}x"),
        1.2,
        online,
    );
}

fn sizes(report: &mut Report, bins: &Path) {
    report.section("Binary sizes (stripped release `bootstrap`)");
    report.line("| binary | x86_64 | arm64 |");
    report.line("| --- | ---: | ---: |");
    let arm = std::env::var("BENCH_ARM64_DIR").ok().map(PathBuf::from);
    for name in cold_start_binaries() {
        let size = |dir: &Path| {
            std::fs::metadata(dir.join(name).join("bootstrap"))
                .map(|m| format!("{:.2} MiB", m.len() as f64 / 1048576.0))
                .unwrap_or_else(|_| "not built".into())
        };
        let arm = arm.as_deref().map(size).unwrap_or_else(|| "not built".into());
        report.line(format!("| {name} | {} | {arm} |", size(bins)));
    }
    let bytes = |name: &str| std::fs::metadata(bins.join(name).join("bootstrap")).map(|m| m.len()).ok();
    if let (Some(plain), Some(client)) = (bytes("plain-hello"), bytes("client-hello")) {
        report.line(format!(
            "\nkeygate-client (blocking, TLS, JOSE, cache) adds **{:.2} MiB** to a hello-world binary \
             (`plain-hello` {:.2} MiB, `client-hello` {:.2} MiB, x86_64).",
            (client.saturating_sub(plain)) as f64 / 1048576.0,
            plain as f64 / 1048576.0,
            client as f64 / 1048576.0
        ));
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().and_then(|l| l.split_whitespace().nth(1)).and_then(|k| k.parse::<u64>().ok()))
        .map(|k| format!("{:.0} GiB", k as f64 / 1048576.0))
        .unwrap_or_default();
    format!("{cpu}, {cores} cores, {memory}")
}

#[tokio::main]
async fn main() {
    let bins = PathBuf::from(std::env::var("BENCH_BIN_DIR").unwrap_or_else(|_| "target/lambda".into()));
    let out = PathBuf::from(std::env::var("BENCH_OUT").unwrap_or_else(|_| "docs/benchmarks.md".into()));
    let date = std::env::var("BENCH_DATE").unwrap_or_default();
    let table = format!("bench-{}", std::process::id());
    let sdk = sdk_config().await;
    create_table(&aws_sdk_dynamodb::Client::new(&sdk), &table).await.expect("create the bench table");
    let store_app = App::new(DynamoStore::from_config(&sdk, &table), config(&table));

    let mut report = Report { markdown: String::new(), targets: Vec::new() };
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "cold") {
        // Only the cold starts, printed instead of written: for working on init time.
        let rounds = args.get(1).and_then(|r| r.parse().ok()).unwrap_or(COLD_ROUNDS);
        let cold = cold_starts(&Emulator::start().await, &bins, &cold_start_binaries(), &table, rounds).await;
        cold_start_report(&mut report, &cold);
        println!("{}", report.markdown);
        return;
    }
    if args.first().is_some_and(|a| a == "scale") {
        // Only the growth with the license, printed (its plots are written to target/).
        scale::scale(&mut report, &store_app, Path::new("target"), scale::DEVICES, scale::SEATS).await;
        println!("{}", report.markdown);
        return;
    }
    eprintln!("bench: handlers in process");
    let verify = micro(&mut report).await;
    eprintln!("bench: against DynamoDB Local");
    against_dynamodb(&mut report, &table).await;
    eprintln!("bench: cold starts and invocations of the release binaries");
    let check_ms = functions(&mut report, &bins, &table, &store_app).await;
    events_cost(&mut report, &store_app, &issue(&store_app, json!({})).await).await;
    eprintln!("bench: throughput of keygate serve");
    let key = issue(&store_app, json!({})).await;
    assert_eq!(call(&store_app, Function::Activate, "/v1/activate", device(&key, "steady")).await, 200);
    throughput(&mut report, &bins.join("keygate").join("bootstrap"), &table, &key).await;
    eprintln!("bench: the client library");
    let client_key = issue(&store_app, json!({"max_activations": 2})).await;
    client_library(&mut report, &bins.join("keygate").join("bootstrap"), &table, &client_key, verify).await;
    if let Ok(load) = std::env::var("BENCH_LOAD") {
        load_test(&mut report, Path::new(&load));
    }
    sizes(&mut report, &bins);
    eprintln!("bench: cost as the license grows");
    let out_dir = out.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
    scale::scale(&mut report, &store_app, &out_dir, scale::DEVICES, scale::SEATS).await;

    report.section("Cost per million checks");
    if let Some(ms) = check_ms {
        // 512 MB, arm64 list prices of docs/deploy.md; billed duration rounds up to 1 ms.
        let billed = ms.ceil().max(1.0);
        let lambda = 0.20 + billed / 1000.0 * 0.5 * 1e6 * 0.0000133334;
        let total = lambda + 1.00 + 0.25;
        report.line(format!(
            "At the measured check p50 of {ms:.2} ms (billed {billed:.0} ms) and 512 MB on arm64: Lambda ${lambda:.3} \
             (requests + duration), API Gateway $1.00, DynamoDB 2 RRU $0.25: **≈ ${total:.2} per million checks**. \
             The model and prices are in [deploy.md](deploy.md#cost-model-per-million-checks). The duration is measured \
             against DynamoDB Local on loopback; in AWS the DynamoDB round trip (a few ms) adds to it."
        ));
    }

    let mut doc = String::new();
    let _ = writeln!(doc, "# Benchmarks\n\nWritten by `make bench` on {date}. Machine: {}.", machine());
    doc.push_str(
        "Every figure is a ratio to a baseline measured in the same run, on the same machine, so the ratios \
         carry over where the absolute numbers do not. Round trips per operation are asserted by tests instead.\n",
    );
    doc.push_str("\n## Targets\n\n| target (docs/DESIGN) | measured | limit | met |\n| --- | --- | --- | --- |\n");
    doc.push_str("| DynamoDB round trips: check 1, activate 2, deactivate 2 | asserted in tests (tests/tests/api) | exact | yes |\n");
    for (target, measured, limit, met) in &report.targets {
        let _ = writeln!(doc, "| {target} | {measured} | {limit} | {} |", if *met { "yes" } else { "**no**" });
    }
    doc.push_str(&report.markdown);
    if let Ok(notes) = std::fs::read_to_string("docs/benchmarks-notes.md") {
        doc.push('\n');
        doc.push_str(&notes);
    }
    std::fs::write(&out, doc).expect("write docs/benchmarks.md");
    eprintln!("bench: wrote {}", out.display());
}
