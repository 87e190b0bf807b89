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
    let store = DynamoStore::from_config(&sdk, &config.table).with_events_table(&config.events_table);
    let app = &App::new(store, config);
    let functions = &[function];
    lambda_http::run(service_fn(move |request: Request| async move {
        Ok::<_, std::convert::Infallible>(handle(app, functions, request).await)
    }))
    .await
}

/// The events function: given a batch of the table's stream records, records their events in the
/// audit log. A failure reports the first record not recorded (Lambda's partial batch response):
/// Lambda delivers it and every later record again, and recording again stores the same events.
pub fn events_main() -> Result<(), Error> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(follow_stream())
}

async fn follow_stream() -> Result<(), Error> {
    use lambda_http::lambda_runtime::{self, LambdaEvent};
    lambda_http::tracing::init_default_subscriber();
    let sdk = sdk_config().await;
    let config = Config::load(&sdk).await?;
    let store = &DynamoStore::from_config(&sdk, &config.table)
        .with_events_table(&config.events_table)
        .with_expiry_reminders(&config.expiry_reminder_days);
    let (keep_days, policy) = (config.event_retention_days, config.webhooks);
    lambda_runtime::run(lambda_runtime::service_fn(move |event: LambdaEvent<serde_json::Value>| async move {
        // The schedule's tick (every minute): expiry reminders and webhook deliveries due.
        if event.payload.get("Records").is_none() {
            if let Err(err) = store.remind_due(crate::time::Timestamp::now()).await {
                tracing::warn!(error = %err, "expiry reminders not sent; the next tick retries");
            }
            deliver_webhooks(store, policy).await;
            return Ok::<_, Error>(serde_json::json!({}));
        }
        let answer = record_batch(store, &event.payload, keep_days).await;
        // One round of first attempts right away (at most one attempt's timeout); the rest, and
        // every retry, go out with the schedule's ticks, so endpoints never hold up the stream.
        if let Err(err) = store.deliver_due(crate::time::Timestamp::now(), policy, 50).await {
            tracing::warn!(error = %err, "webhook deliveries not attempted; the next tick retries");
        }
        Ok::<_, Error>(answer)
    }))
    .await
}

/// Webhook deliveries due now, a round of at most 50 at a time for at most 20 s; failures are
/// logged and retried at the next round.
pub async fn deliver_webhooks(store: &DynamoStore, policy: crate::webhooks::deliver::Policy) {
    let started = std::time::Instant::now();
    while started.elapsed() < std::time::Duration::from_secs(20) {
        match store.deliver_due(crate::time::Timestamp::now(), policy, 50).await {
            Ok(50) => continue,
            Ok(_) => return,
            Err(err) => {
                tracing::warn!(error = %err, "webhook deliveries not attempted; the next round retries");
                return;
            }
        }
    }
}

/// One batch's partial response: `batchItemFailures` names the first record not recorded.
pub async fn record_batch(store: &DynamoStore, event: &serde_json::Value, keep_days: Option<u32>) -> serde_json::Value {
    let failed = |sequence: &str| serde_json::json!({"batchItemFailures": [{"itemIdentifier": sequence}]});
    let records = match crate::store::records_from_lambda(event) {
        Ok(records) => records,
        // Not a stream batch this code reads: nothing to retry that would ever succeed.
        Err(err) => {
            tracing::error!(error = %err, "not a DynamoDB stream batch");
            return serde_json::json!({"batchItemFailures": []});
        }
    };
    match store.record(&records, keep_days).await {
        Ok(written) => {
            tracing::info!(records = records.len(), events = written, "recorded");
            serde_json::json!({"batchItemFailures": []})
        }
        Err(unrecorded) => {
            let record = &records[unrecorded.record];
            tracing::warn!(record = %record.event_id, error = %unrecorded.error, "not recorded; delivered again");
            failed(&record.sequence)
        }
    }
}
