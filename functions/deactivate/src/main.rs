//! The deactivate Lambda function: wiring only; the handler lives in the shared crate.

use keygate::api::{handle, App, Function};
use keygate::config::Config;
use keygate::store::{sdk_config, DynamoStore};
use lambda_http::{run, service_fn, Error, Request};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    let sdk = sdk_config().await;
    let config = Config::load(&sdk).await?;
    let store = DynamoStore::from_config(&sdk, &config.table);
    let app = &App::new(store, config);
    run(service_fn(move |request: Request| async move {
        Ok::<_, std::convert::Infallible>(handle(app, &[Function::Deactivate], request).await)
    }))
    .await
}
