//! Running on a restored table. DynamoDB Local implements neither backups nor point-in-time
//! recovery, so a restore is played here as what it yields: the same items in a new table under
//! another name (with its indexes rebuilt from them). The stack then runs on it unchanged
//! (`ExistingTableName`, docs/deploy.md "Backups and restore").

use keygate_tests::{device, fresh_store, stored_partition, TestApp};
use serde_json::json;

use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};

/// Copies every item of `from`'s table into `to`'s, as a restore would.
async fn restore(from: &keygate::store::DynamoStore, to: &keygate::store::DynamoStore) -> usize {
    let mut start = None;
    let mut copied = 0;
    loop {
        let page = from
            .client()
            .scan()
            .table_name(from.table())
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap();
        let puts: Vec<WriteRequest> = page
            .items
            .unwrap_or_default()
            .into_iter()
            .map(|item| {
                WriteRequest::builder().put_request(PutRequest::builder().set_item(Some(item)).build().unwrap()).build()
            })
            .collect();
        for chunk in puts.chunks(25) {
            let written =
                to.client().batch_write_item().request_items(to.table(), chunk.to_vec()).send().await.unwrap();
            assert!(written.unprocessed_items.unwrap_or_default().is_empty());
            copied += chunk.len();
        }
        start = page.last_evaluated_key;
        if start.is_none() {
            return copied;
        }
    }
}

#[tokio::test]
async fn the_server_runs_on_a_restored_copy_of_its_table_with_every_limit_in_place() {
    let before = TestApp::spawn().await;
    let node = before.issue(json!({"max_activations": 1, "customer": {"email": "ann@example.com"}})).await;
    let pool = before.issue(json!({"is_floating": true, "max_activations": 1})).await;
    assert_eq!(before.post("/v1/activate", &device(&node, "pc-1")).await.status, 200);
    assert_eq!(before.post("/v1/activate", &device(&pool, "pc-1")).await.status, 200);

    let restored = fresh_store().await;
    assert!(restore(&before.app.store, &restored).await >= 4, "licenses and devices");
    let after = TestApp::spawn_with(restored).await;
    assert_eq!(stored_partition(&after, &node).await.bound_devices(), ["pc-1"]);

    // The devices, the seat counter and the lease came across: the limits hold.
    assert_eq!(after.post("/v1/check", &device(&node, "pc-1")).await.body["code"], "VALID");
    assert_eq!(after.post("/v1/check", &device(&pool, "pc-1")).await.body["code"], "VALID");
    for key in [&node, &pool] {
        let refused = after.post("/v1/activate", &device(key, "pc-2")).await;
        assert_eq!(refused.error_code(), "ACTIVATION_LIMIT_REACHED", "{}", refused.body);
    }
    // The indexes were rebuilt from the items: lookups find the same licenses.
    let by_email = after.admin_get("/v1/licenses?customer_email=ann%40example.com").await;
    assert_eq!(by_email.body["licenses"][0]["license_key"], node.as_str());
    let by_product = after.admin_get("/v1/licenses?product=editor").await;
    assert_eq!(by_product.body["licenses"].as_array().map(Vec::len), Some(2), "{}", by_product.body);
    // And it goes on: a release frees the seat for another device.
    assert_eq!(after.post("/v1/deactivate", &device(&node, "pc-1")).await.status, 200);
    assert_eq!(after.post("/v1/activate", &device(&node, "pc-2")).await.status, 200);
}
