//! The table and its indexes, as `keygate table create` (and the tests) make them.

use crate::store::StoreError;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::create_table::{CreateTableError, CreateTableOutput};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, StreamSpecification, StreamViewType, TimeToLiveSpecification,
};
use aws_sdk_dynamodb::Client;
use aws_smithy_runtime_api::http::Response as HttpResponse;

use super::errors::classify;
use super::records::{built, CUSTOMER_INDEX, LEASE_END, LEASE_INDEX, ORDER_INDEX, PRODUCT_INDEX, SEEN_INDEX};

/// Create the table with its lookup indexes (customer e-mail, order id, devices by last sighting,
/// leases by end, licenses by product), TTL on `ttl`, and a stream of every change's old and new
/// image.
/// Returns false, changing nothing, when the table exists already.
pub async fn create_table(client: &Client, table: &str) -> Result<bool, StoreError> {
    // A takeover needs only which device holds a lapsed lease and its end: the keys.
    let index = |name: &str, partition: &str, sort: &str| {
        let keys_only = [LEASE_INDEX, PRODUCT_INDEX].contains(&name);
        index(name, partition, sort, if keys_only { ProjectionType::KeysOnly } else { ProjectionType::All })
    };
    let created = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attribute("PK")?)
        .attribute_definitions(attribute("SK")?)
        .attribute_definitions(attribute("GSI1PK")?)
        .attribute_definitions(attribute("GSI2PK")?)
        .attribute_definitions(attribute("created_at")?)
        .attribute_definitions(attribute("last_seen_at")?)
        .attribute_definitions(attribute(LEASE_END)?)
        .attribute_definitions(attribute("product")?)
        .key_schema(key("PK", KeyType::Hash)?)
        .key_schema(key("SK", KeyType::Range)?)
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
    with_ttl(client, table, created).await
}

/// A string attribute of a key.
pub(super) fn attribute(name: &str) -> Result<AttributeDefinition, StoreError> {
    built(AttributeDefinition::builder().attribute_name(name).attribute_type(ScalarAttributeType::S).build())
}

pub(super) fn key(name: &str, key_type: KeyType) -> Result<KeySchemaElement, StoreError> {
    built(KeySchemaElement::builder().attribute_name(name).key_type(key_type).build())
}

/// A global secondary index on `partition` and `sort`.
pub(super) fn index(
    name: &str,
    partition: &str,
    sort: &str,
    projection: ProjectionType,
) -> Result<GlobalSecondaryIndex, StoreError> {
    GlobalSecondaryIndex::builder()
        .index_name(name)
        .key_schema(key(partition, KeyType::Hash)?)
        .key_schema(key(sort, KeyType::Range)?)
        .projection(Projection::builder().projection_type(projection).build())
        .build()
        .map_err(|e| StoreError::Internal(e.to_string()))
}

/// The outcome of a CreateTable: `false` when the table existed already (nothing changed);
/// otherwise TTL is turned on for `ttl`, and `true`.
pub(super) async fn with_ttl(
    client: &Client,
    table: &str,
    created: Result<CreateTableOutput, SdkError<CreateTableError, HttpResponse>>,
) -> Result<bool, StoreError> {
    match created {
        Err(err) if err.code() == Some("ResourceInUseException") => return Ok(false),
        other => other.map_err(classify)?,
    };
    let ttl = built(TimeToLiveSpecification::builder().attribute_name("ttl").enabled(true).build())?;
    client.update_time_to_live().table_name(table).time_to_live_specification(ttl).send().await.map_err(classify)?;
    Ok(true)
}
