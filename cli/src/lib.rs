//! `keygate serve`: every route of the four functions on one local port, through the very
//! handler the Lambda functions run. Only the HTTP framing differs: hyper here, API Gateway there.

pub mod admin;
pub mod error;
pub mod summary;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use keygate::api::{handle, App, Function};
use keygate::error::{ApiError, ErrorCode};
use keygate::store::Store;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

/// The most the local server reads of a body; the handler refuses anything over 64 KiB with 413,
/// this only keeps a runaway upload from filling memory first.
const READ_LIMIT: usize = 1024 * 1024;

type LocalResponse = hyper::Response<Full<Bytes>>;

async fn respond<S: Store>(app: &App<S>, request: hyper::Request<Incoming>) -> LocalResponse {
    let (parts, body) = request.into_parts();
    let response = match Limited::new(body, READ_LIMIT).collect().await {
        Ok(collected) => {
            let request =
                lambda_http::Request::from_parts(parts, lambda_http::Body::from(collected.to_bytes().to_vec()));
            handle(app, &Function::ALL, request).await
        }
        Err(_) => {
            let err = ApiError::new(ErrorCode::PayloadTooLarge, format!("the body exceeds {READ_LIMIT} bytes"));
            let body = lambda_http::Body::Text(err.body("local"));
            let mut response = lambda_http::Response::new(body);
            *response.status_mut() = hyper::StatusCode::PAYLOAD_TOO_LARGE;
            response
        }
    };
    let (parts, body) = response.into_parts();
    hyper::Response::from_parts(parts, Full::new(Bytes::from(body.to_vec())))
}

/// Serves `app` on `listener` until `shutdown` resolves.
pub async fn serve<S: Store>(
    listener: TcpListener,
    app: Arc<App<S>>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            () = &mut shutdown => return Ok(()),
        };
        let app = app.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let app = app.clone();
                async move { Ok::<_, Infallible>(respond(&app, request).await) }
            });
            if let Err(err) = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await {
                tracing::debug!(error = %err, "connection ended with an error");
            }
        });
    }
}

/// Reads the table's stream from its oldest record on and records every change's events in the
/// audit log, every `every`, for as long as the server runs: the events function's work, on its
/// code path (`DynamoStore::record`). A failure is reported and retried at the next round; the
/// records are read again from where the last round stopped.
pub async fn follow_events(
    sdk: aws_config::SdkConfig,
    app: std::sync::Arc<keygate::api::App<keygate::store::DynamoStore>>,
    keep_days: Option<u32>,
    every: std::time::Duration,
) {
    let mut follower = None;
    let mut last_error = String::new();
    loop {
        if follower.is_none() {
            match keygate::store::StreamFollower::new(&sdk, &app.store, keep_days).await {
                Ok(created) => follower = Some(created),
                Err(err) => report(&mut last_error, format!("events: cannot read the table's stream: {err}")),
            }
        }
        if let Some(follower) = follower.as_mut() {
            match follower.catch_up(&app.store).await {
                Ok(_) => last_error.clear(),
                Err(err) => report(&mut last_error, format!("events: not recorded yet (retrying): {err}")),
            }
        }
        // The events function's work on its schedule: expiry reminders and deliveries due.
        if let Err(err) = app.store.remind_due(keygate::time::Timestamp::now()).await {
            report(&mut last_error, format!("events: expiry reminders not sent yet (retrying): {err}"));
        }
        keygate::lambda::deliver_webhooks(&app.store, app.webhooks).await;
        tokio::time::sleep(every).await;
    }
}

/// Prints an error once, not every round it lasts.
fn report(last: &mut String, message: String) {
    if *last != message {
        eprintln!("{message}");
        *last = message;
    }
}
