//! The cold-start and invocation baseline: the smallest useful lambda_runtime function.

use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::{json, Value};

#[tokio::main]
async fn main() -> Result<(), Error> {
    run(service_fn(|event: LambdaEvent<Value>| async move {
        Ok::<_, Error>(json!({"statusCode": 200, "body": event.payload["rawPath"]}))
    }))
    .await
}
