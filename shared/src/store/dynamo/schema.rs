//! The table and its indexes, as `keygate table create` (and the tests) make them.

use crate::store::StoreError;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, StreamSpecification, StreamViewType, TimeToLiveSpecification,
};
use aws_sdk_dynamodb::Client;

use super::errors::classify;
use super::records::{built, CUSTOMER_INDEX, LEASE_END, LEASE_INDEX, ORDER_INDEX, PRODUCT_INDEX, SEEN_INDEX};

/// Create the table with its lookup indexes (customer e-mail, order id, devices by last sighting,
/// leases by end, licenses by product), TTL on `ttl`, and a stream of every change's old and new
/// image.
/// Returns false, changing nothing, when the table exists already.
pub async fn create_table(client: &Client, table: &str) -> Result<bool, StoreError> {
    let attribute =
        |name: &str| AttributeDefinition::builder().attribute_name(name).attribute_type(ScalarAttributeType::S).build();
    let key =
        |name: &str, key_type: KeyType| KeySchemaElement::builder().attribute_name(name).key_type(key_type).build();
    let index = |name: &str, partition: &str, sort: &str| {
        // A takeover needs only which device holds a lapsed lease and its end: the keys.
        let keys_only = [LEASE_INDEX, PRODUCT_INDEX].contains(&name);
        let projection = if keys_only { ProjectionType::KeysOnly } else { ProjectionType::All };
        GlobalSecondaryIndex::builder()
            .index_name(name)
            .key_schema(built(key(partition, KeyType::Hash))?)
            .key_schema(built(key(sort, KeyType::Range))?)
            .projection(Projection::builder().projection_type(projection).build())
            .build()
            .map_err(|e| StoreError::Internal(e.to_string()))
    };
    let created = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(built(attribute("PK"))?)
        .attribute_definitions(built(attribute("SK"))?)
        .attribute_definitions(built(attribute("GSI1PK"))?)
        .attribute_definitions(built(attribute("GSI2PK"))?)
        .attribute_definitions(built(attribute("created_at"))?)
        .attribute_definitions(built(attribute("last_seen_at"))?)
        .attribute_definitions(built(attribute(LEASE_END))?)
        .attribute_definitions(built(attribute("product"))?)
        .key_schema(built(key("PK", KeyType::Hash))?)
        .key_schema(built(key("SK", KeyType::Range))?)
        .global_secondary_indexes(index(CUSTOMER_INDEX, "GSI1PK", "created_at")?)
        .global_secondary_indexes(index(ORDER_INDEX, "GSI2PK", "created_at")?)
        .global_secondary_indexes(index(SEEN_INDEX, "PK", "last_seen_at")?)
        .global_secondary_indexes(index(LEASE_INDEX, "PK", LEASE_END)?)
        .global_secondary_indexes(index(PRODUCT_INDEX, "product", "created_at")?)
        // Every change with its before and after: what events are derived from.
        .stream_specification(built(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::NewAndOldImages)
                .build(),
        )?)
        .send()
        .await;
    // The audit log's table beside it (its default name; another is created by its own call).
    super::audit::create_events_table(client, &super::audit::events_table_name(table)).await?;
    match created {
        Err(err) if err.code() == Some("ResourceInUseException") => return Ok(false),
        other => other.map_err(classify)?,
    };
    let ttl = built(TimeToLiveSpecification::builder().attribute_name("ttl").enabled(true).build())?;
    client.update_time_to_live().table_name(table).time_to_live_specification(ttl).send().await.map_err(classify)?;
    Ok(true)
}
