//! The store contract (shared/src/store/contract.rs) against DynamoStore on DynamoDB Local: the
//! same cases `cargo test` runs against the in-memory store, each on a fresh table.

use keygate::store::contract;
use keygate_tests::fresh_store;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dynamodb_store_keeps_the_store_contract() {
    for (name, case) in contract::cases::<keygate::store::DynamoStore>() {
        let store = fresh_store().await;
        if let Err(err) = tokio::spawn(async move { case(&store).await }).await {
            panic!("{name}: {err}");
        }
    }
}
