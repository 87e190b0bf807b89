//! A fault proxy of the test suite's own, between Keygate's store and DynamoDB Local: it forwards
//! every request unchanged, except the next `count` requests (of one DynamoDB operation, or any)
//! after a fault is injected, which it delays, drops, hangs, or answers with DynamoDB's own server
//! and throttling errors, before or after DynamoDB Local has acted on them. Bursts are counted in
//! requests, not drawn at random, so a burst longer than the SDK's attempts always gets past them.

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forwarded after this delay (past the SDK's attempt timeout, it is a timeout).
    Latency(Duration),
    /// The connection is closed without an answer; nothing reaches DynamoDB.
    Reset,
    /// Forwarded, acted on, then the connection is closed without the answer.
    ResetAfterCommit,
    /// Never answered (the client gives up on its own timeouts); nothing reaches DynamoDB.
    Hang,
    /// HTTP 500 `InternalServerError`; nothing reaches DynamoDB.
    ServerError,
    /// Forwarded and acted on, but answered with HTTP 500 `InternalServerError`.
    ServerErrorAfterCommit,
    /// HTTP 400 with one of DynamoDB's throttling errors; nothing reaches DynamoDB.
    Throttle(Throttling),
    /// A transaction cancelled for a conflicting concurrent transaction (other operations pass).
    TransactionConflict,
    /// DynamoDB still applying the same call (`TransactionInProgressException`): the first faulted
    /// request is applied this long later, as a slow original would be; none is answered.
    InProgressThenCommit(Duration),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttling {
    ProvisionedThroughputExceeded,
    Throttling,
    RequestLimitExceeded,
}

impl Throttling {
    fn error_type(self) -> &'static str {
        match self {
            Throttling::ProvisionedThroughputExceeded => "ProvisionedThroughputExceededException",
            Throttling::Throttling => "ThrottlingException",
            Throttling::RequestLimitExceeded => "RequestLimitExceeded",
        }
    }
}

#[derive(Default)]
struct Plan {
    fault: Option<Fault>,
    /// Only requests of these DynamoDB operations (e.g. `TransactWriteItems`) are faulted; all when empty.
    operations: Vec<String>,
    remaining: u32,
    injected: u32,
    /// Every operation forwarded to DynamoDB Local, in order.
    forwarded: Vec<String>,
    /// Whether the late request of an `InProgressThenCommit` burst has been sent on.
    late_sent: bool,
}

pub struct FaultProxy {
    pub url: String,
    plan: Arc<Mutex<Plan>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Upstream = Client<HttpConnector, Full<Bytes>>;

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `upstream` (DynamoDB Local's URL).
    pub async fn start(upstream: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let plan = Arc::new(Mutex::new(Plan::default()));
        let client: Upstream = Client::builder(TokioExecutor::new()).build_http();
        let (shared, upstream) = (plan.clone(), upstream.trim_end_matches('/').to_string());
        let task = tokio::spawn(async move {
            // Owned by this task, so stopping the proxy also ends the connections it holds (hung ones too).
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (plan, client, upstream) = (shared.clone(), client.clone(), upstream.clone());
                while connections.try_join_next().is_some() {}
                connections.spawn(async move {
                    let service = service_fn(move |request| {
                        let (plan, client, upstream) = (plan.clone(), client.clone(), upstream.clone());
                        async move { relay(&plan, &client, &upstream, request).await }
                    });
                    // A dropped connection is one of the faults: its error is expected.
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        Self { url, plan, task }
    }

    /// Faults the next `count` requests (of `operations` only, unless empty).
    pub fn inject(&self, fault: Fault, count: u32, operations: &[&str]) {
        let mut plan = self.plan.lock().unwrap();
        plan.fault = Some(fault);
        plan.operations = operations.iter().map(|o| o.to_string()).collect();
        plan.remaining = count;
        plan.late_sent = false;
    }

    /// Stops faulting; returns how many requests were faulted since the proxy started.
    pub fn clear(&self) -> u32 {
        let mut plan = self.plan.lock().unwrap();
        plan.fault = None;
        plan.remaining = 0;
        plan.injected
    }

    /// How many requests of the current burst are still to be faulted.
    pub fn remaining(&self) -> u32 {
        self.plan.lock().unwrap().remaining
    }

    /// The operations forwarded to DynamoDB Local so far.
    pub fn forwarded(&self) -> Vec<String> {
        self.plan.lock().unwrap().forwarded.clone()
    }
}

/// The DynamoDB operation a request names (`X-Amz-Target: DynamoDB_20120810.<Operation>`).
fn operation<B>(request: &Request<B>) -> String {
    let target = request.headers().get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or("");
    target.rsplit('.').next().unwrap_or("").to_string()
}

fn dynamodb_error(status: u16, error_type: &str, extra: serde_json::Value) -> Response<Full<Bytes>> {
    let mut body = serde_json::json!({
        "__type": format!("com.amazonaws.dynamodb.v20120810#{error_type}"),
        "message": format!("injected by the fault proxy: {error_type}"),
    });
    if let serde_json::Value::Object(extra) = extra {
        body.as_object_mut().unwrap().extend(extra);
    }
    Response::builder()
        .status(status)
        .header("content-type", "application/x-amz-json-1.0")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by the fault proxy")
    }
}

impl std::error::Error for Dropped {}

/// The request as DynamoDB Local is to receive it.
fn forwarded(upstream: &str, parts: &hyper::http::request::Parts, body: Bytes) -> Request<Full<Bytes>> {
    let mut forward = Request::builder().method(parts.method.clone()).uri(format!("{upstream}{}", parts.uri));
    for (name, value) in &parts.headers {
        forward = forward.header(name, value);
    }
    forward.body(Full::new(body)).unwrap()
}

async fn relay(
    plan: &Mutex<Plan>,
    client: &Upstream,
    upstream: &str,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Dropped> {
    let operation = operation(&request);
    let fault = {
        let mut plan = plan.lock().unwrap();
        let applies = plan.remaining > 0
            && (plan.operations.is_empty() || plan.operations.contains(&operation))
            && (plan.fault != Some(Fault::TransactionConflict) || operation == "TransactWriteItems");
        if applies {
            plan.remaining -= 1;
            plan.injected += 1;
        }
        applies.then_some(plan.fault).flatten()
    };
    let (parts, body) = request.into_parts();
    let body = body.collect().await.map_err(|_| Dropped)?.to_bytes();
    let before = match fault {
        Some(Fault::Latency(delay)) => {
            tokio::time::sleep(delay).await;
            None
        }
        Some(Fault::Reset) => return Err(Dropped),
        Some(Fault::Hang) => {
            tokio::time::sleep(Duration::from_secs(600)).await;
            return Err(Dropped);
        }
        Some(Fault::ServerError) => Some(dynamodb_error(500, "InternalServerError", serde_json::Value::Null)),
        Some(Fault::Throttle(kind)) => Some(dynamodb_error(400, kind.error_type(), serde_json::Value::Null)),
        Some(Fault::TransactionConflict) => {
            let items = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|b| b["TransactItems"].as_array().map(Vec::len))
                .unwrap_or(1);
            let reasons: Vec<_> = (0..items)
                .map(|i| match i {
                    0 => serde_json::json!({"Code": "TransactionConflict", "Message": "Transaction is ongoing for the item"}),
                    _ => serde_json::json!({"Code": "None"}),
                })
                .collect();
            Some(dynamodb_error(
                400,
                "TransactionCanceledException",
                serde_json::json!({"CancellationReasons": reasons}),
            ))
        }
        Some(Fault::InProgressThenCommit(delay)) => {
            if !std::mem::replace(&mut plan.lock().unwrap().late_sent, true) {
                let (client, late) = (client.clone(), forwarded(upstream, &parts, body.clone()));
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = client.request(late).await;
                });
            }
            Some(dynamodb_error(400, "TransactionInProgressException", serde_json::Value::Null))
        }
        _ => None,
    };
    if let Some(response) = before {
        return Ok(response);
    }
    plan.lock().unwrap().forwarded.push(operation);
    let response = client.request(forwarded(upstream, &parts, body)).await.map_err(|_| Dropped)?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map_err(|_| Dropped)?.to_bytes();
    match fault {
        Some(Fault::ResetAfterCommit) => Err(Dropped),
        Some(Fault::ServerErrorAfterCommit) => Ok(dynamodb_error(500, "InternalServerError", serde_json::Value::Null)),
        _ => Ok(Response::from_parts(parts, Full::new(body))),
    }
}
