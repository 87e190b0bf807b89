//! Where the DynamoDB client's construction time goes at a cold start: the service config, the first
//! client, and a second client (what the first pays once for the whole process). Run it with a cold
//! start's environment (docs/benchmarks.md).
use std::time::Instant;

#[tokio::main]
async fn main() {
    let sdk = keygate::store::sdk_config().await;
    let t = Instant::now();
    let conf = aws_sdk_dynamodb::Config::from(&sdk);
    let a = t.elapsed();
    let client = aws_sdk_dynamodb::Client::from_conf(conf);
    let b = t.elapsed();
    let second = aws_sdk_dynamodb::Client::new(&sdk);
    let c = t.elapsed();
    drop((client, second));
    eprintln!("config {a:?}, first client {:?}, second client {:?}", b - a, c - b);
}
