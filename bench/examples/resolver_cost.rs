//! What the DynamoDB client's first construction pays once per process: the SDK's default endpoint
//! resolver parses its partition table and compiles the partitions' region patterns (docs/benchmarks.md).
use std::time::Instant;

fn main() {
    let t = Instant::now();
    let first = aws_sdk_dynamodb::config::endpoint::DefaultResolver::new();
    let a = t.elapsed();
    let second = aws_sdk_dynamodb::config::endpoint::DefaultResolver::new();
    let b = t.elapsed();
    drop((first, second));
    eprintln!("first resolver {a:?}, second resolver {:?}", b - a);
}
