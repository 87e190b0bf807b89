//! A Lambda Runtime API emulator: just enough of `/2018-06-01/runtime/...` to start a real
//! `bootstrap` binary, hand it events one at a time, and time what it does. Used by the
//! integration tests (the function binaries end to end) and by `make bench`.

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

/// What the driver sees.
pub enum Outcome {
    Response(Bytes),
    /// What the function posted to `/error`: an error type and message, as JSON.
    Error(Bytes),
}

#[derive(Default)]
struct State {
    /// Told (once) when a process first asks for an invocation: the end of its init.
    first_next: Mutex<Option<oneshot::Sender<Instant>>>,
    /// Events waiting for the function's next `next`.
    events: tokio::sync::Mutex<Option<mpsc::Receiver<String>>>,
    /// Where responses and errors go.
    outcomes: Mutex<Option<mpsc::UnboundedSender<Outcome>>>,
    request_ids: AtomicU64,
}

pub struct Emulator {
    pub address: String,
    state: Arc<State>,
}

impl Emulator {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the emulator");
        let address = listener.local_addr().expect("an address").to_string();
        let state = Arc::new(State::default());
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| serve(state.clone(), request));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { address, state }
    }

    /// A command that starts `binary` as Lambda starts a function on this emulator: nothing of this
    /// process's environment but `PATH`, the AWS credentials and the DynamoDB endpoint (DynamoDB
    /// Local, from scripts/with-dynamodb-local.sh), plus what Lambda sets. Stdout (the logs) is dropped.
    pub fn lambda_command(&self, binary: &Path, name: &str) -> Command {
        let from_env = |name: &str| std::env::var(name).unwrap_or_default();
        let mut command = Command::new(binary);
        command
            .env_clear()
            .env("PATH", from_env("PATH"))
            .env("AWS_LAMBDA_RUNTIME_API", &self.address)
            .env("AWS_LAMBDA_FUNCTION_NAME", name)
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}"))
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "emulator")
            .env("AWS_LAMBDA_LOG_LEVEL", "ERROR")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", from_env("AWS_ACCESS_KEY_ID"))
            .env("AWS_SECRET_ACCESS_KEY", from_env("AWS_SECRET_ACCESS_KEY"))
            .env("AWS_ENDPOINT_URL_DYNAMODB", from_env("AWS_ENDPOINT_URL_DYNAMODB"))
            .stdout(std::process::Stdio::null());
        command
    }

    /// The next process to ask for an invocation reports the moment it did.
    pub fn watch_first_next(&self) -> oneshot::Receiver<Instant> {
        let (tx, rx) = oneshot::channel();
        *self.state.first_next.lock().unwrap() = Some(tx);
        rx
    }

    /// Starts a session: events sent on the returned sender are handed out in order, and every
    /// response or error comes back on the receiver.
    pub async fn session(&self) -> (mpsc::Sender<String>, mpsc::UnboundedReceiver<Outcome>) {
        let (event_tx, event_rx) = mpsc::channel(1);
        let (outcome_tx, outcome_rx) = mpsc::unbounded_channel();
        *self.state.events.lock().await = Some(event_rx);
        *self.state.outcomes.lock().unwrap() = Some(outcome_tx);
        (event_tx, outcome_rx)
    }
}

async fn serve(
    state: Arc<State>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let path = request.uri().path().to_string();
    let method = request.method().clone();
    let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    if method == Method::GET && path == "/2018-06-01/runtime/invocation/next" {
        if let Some(tx) = state.first_next.lock().unwrap().take() {
            let _ = tx.send(Instant::now());
        }
        // Long-poll: wait for the driver's next event (forever, during a cold-start measurement).
        let event = {
            let mut events = state.events.lock().await;
            match events.as_mut() {
                Some(rx) => rx.recv().await,
                None => None,
            }
        };
        let Some(event) = event else { return Ok(std::future::pending().await) };
        let id = state.request_ids.fetch_add(1, Ordering::Relaxed);
        let deadline = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() + 6_000;
        let response = Response::builder()
            .header("lambda-runtime-aws-request-id", format!("bench-{id}"))
            .header("lambda-runtime-deadline-ms", deadline.to_string())
            .header("lambda-runtime-invoked-function-arn", "arn:aws:lambda:us-east-1:123456789012:function:bench")
            .header("lambda-runtime-trace-id", "Root=1-00000000-000000000000000000000000")
            .body(Full::new(Bytes::from(event)))
            .unwrap();
        return Ok(response);
    }
    let outcome = if path.ends_with("/response") {
        Some(Outcome::Response(body))
    } else if path.ends_with("/error") {
        Some(Outcome::Error(body))
    } else {
        None
    };
    if let (Some(outcome), Some(tx)) = (outcome, state.outcomes.lock().unwrap().as_ref()) {
        let _ = tx.send(outcome);
    }
    Ok(Response::builder().status(StatusCode::ACCEPTED).body(Full::new(Bytes::new())).unwrap())
}
