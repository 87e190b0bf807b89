//! Where a function's init time goes, stage by stage: run it with a cold start's environment.
//! `KEYGATE_TLS_SYSTEM_ROOTS=1` shows the cost of the system's root store for comparison.
use std::time::Instant;

#[tokio::main]
async fn main() {
    let t = Instant::now();
    lambda_http::tracing::init_default_subscriber();
    let logging = t.elapsed();
    let sdk = keygate::store::sdk_config().await;
    let a = t.elapsed();
    let config = keygate::config::Config::load(&sdk).await.unwrap();
    let b = t.elapsed();
    let store = keygate::store::DynamoStore::from_config(&sdk, &config.table);
    let c = t.elapsed();
    drop((store, config));
    eprintln!("logging {logging:?}, sdk_config {:?}, Config::load {:?}, DynamoStore {:?}", a - logging, b - a, c - b);
}
