//! The baseline again on tokio's current-thread runtime, the one the functions use: shown beside
//! the target's ratio so that the runtime's share of the difference is visible (docs/benchmarks.md).

use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::{json, Value};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    run(service_fn(|event: LambdaEvent<Value>| async move {
        Ok::<_, Error>(json!({"statusCode": 200, "body": event.payload["rawPath"]}))
    }))
    .await
}
