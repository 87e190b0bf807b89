//! The whole of each Lambda function binary: init once per cold start, then serve events.

use crate::api::{handle, App, Function};
use crate::config::Config;
use crate::store::{sdk_config, DynamoStore};
use lambda_http::{service_fn, Error, Request};

/// Runs `function` on the Lambda Runtime API until the sandbox is shut down.
///
/// The runtime is tokio's current-thread one: Lambda hands a sandbox one event at a time, so the
/// multi-thread runtime's workers (one per core) would only add threads, their stacks and malloc
/// arenas to every cold start and to memory (measured in docs/benchmarks.md).
pub fn main(function: Function) -> Result<(), Error> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(serve(function))
}

async fn serve(function: Function) -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    let sdk = sdk_config().await;
    let config = Config::load(&sdk).await?;
    // The client functions cannot answer without signing: refuse to start rather than fail each call.
    if matches!(function, Function::Activate | Function::Check) {
        config.require_signer()?;
    }
    let store = DynamoStore::from_config(&sdk, &config.table);
    let app = &App::new(store, config);
    let functions = &[function];
    lambda_http::run(service_fn(move |request: Request| async move {
        Ok::<_, std::convert::Infallible>(handle(app, functions, request).await)
    }))
    .await
}
