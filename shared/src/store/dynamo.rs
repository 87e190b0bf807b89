//! The DynamoDB store. One table: a license and its devices share the partition `L#<key>`
//! (sort keys `L` and `D#<hardware_id>`), so a check reads both in one BatchGetItem and every
//! seat change is one TransactWriteItems guarded by condition expressions. Beside them: trial terms
//! and records (`T#...`), a vendor issue's idempotency record (`I#<key>`), and the answers of client
//! writes made with an `Idempotency-Key` (`R#<scope>#<key>`, written in the write's own transaction).

use super::{
    freeze_cutoff, reclaimed, tombstone_expires, ActivationWrite, DeactivationWrite, IdempotencyRecord, LeaseWrite,
    Lookup, Page, Receipt, SeatRelease, Sighting, Store, StoreError, WriteError,
};
use crate::input::{HardwareId, LicenseKey, Product};
use crate::model::{Device, License, ReleasedBy, TrialMarker, TrialTerms};
use crate::rules::{ConsumptionPlan, LeasePlan, Slot};
use crate::time::Timestamp;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, ConditionCheck, GlobalSecondaryIndex, KeySchemaElement, KeyType,
    KeysAndAttributes, Projection, ProjectionType, Put, ScalarAttributeType, TimeToLiveSpecification,
    TransactWriteItem, Update,
};
use aws_sdk_dynamodb::Client;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

type Item = HashMap<String, AttributeValue>;

const LICENSE_SK: &str = "L";
const DEVICE_PREFIX: &str = "D#";
pub const CUSTOMER_INDEX: &str = "GSI1";
pub const ORDER_INDEX: &str = "GSI2";
/// A released device: kept as a tombstone until TTL deletes it, read as absent everywhere.
const RELEASED: &str = "attribute_exists(released_at)";
const BOUND: &str = "attribute_not_exists(released_at)";
/// The license attribute holding a floating license's leases (hardware id -> lease end).
const LEASES: &str = "leases";
/// The license attribute holding the release allowance in use (hardware id -> credential end).
const RELEASES: &str = "releases";
/// The license attribute holding consumption counters (counter key -> {period, used}).
const CONSUMPTION: &str = "consumption";
/// Attributes only their own operations write; a patch keeps them as they are.
const OPERATION_OWNED: [&str; 3] = [LEASES, RELEASES, CONSUMPTION];

fn is_released(item: &Item) -> bool {
    item.contains_key("released_at")
}

/// TransactWriteItems takes at most 100 items.
const MAX_TRANSACTION_ITEMS: usize = 100;

/// SDK configuration for Keygate: rustls with ring (no second TLS stack), and timeouts short
/// enough that a slow store becomes a clean 503 well before a Lambda function's own timeout.
/// The endpoint comes from the SDK's standard `AWS_ENDPOINT_URL_DYNAMODB` / `AWS_ENDPOINT_URL`.
pub async fn sdk_config() -> SdkConfig {
    sdk_config_with(|name| std::env::var(name).ok()).await
}

/// [`sdk_config`] with the environment variables that pick the Lambda fast path read through `env`.
pub async fn sdk_config_with(env: impl Fn(&str) -> Option<String>) -> SdkConfig {
    let http_client = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .tls_context(tls_context())
        .build_https();
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_millis(1_000))
        .operation_attempt_timeout(Duration::from_millis(1_500))
        .operation_timeout(Duration::from_millis(4_000))
        .build();
    let loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client)
        .timeout_config(timeouts)
        .retry_config(RetryConfig::standard().with_max_attempts(3));
    let loader = match lambda_region(env) {
        // On Lambda the region and the role's credentials are always in the environment: skip
        // building the default provider chains (profile files, SSO, web identity, container,
        // IMDS), about 0.3 ms of every cold start (docs/benchmarks.md). Anywhere else, the chains.
        Some(region) => loader
            .region(aws_config::Region::new(region))
            .credentials_provider(aws_config::environment::EnvironmentVariableCredentialsProvider::new()),
        None => loader,
    };
    loader.load().await
}

/// The region, when running in Lambda with the role's credentials in the environment.
fn lambda_region(env: impl Fn(&str) -> Option<String>) -> Option<String> {
    let set = |name: &str| env(name).filter(|v| !v.is_empty());
    set("AWS_LAMBDA_FUNCTION_NAME")?;
    set("AWS_ACCESS_KEY_ID")?;
    set("AWS_REGION")
}

/// The roots of Amazon Trust Services, which sign every AWS service endpoint. Trusting only these,
/// instead of loading and parsing the system's ~140 roots, takes about 4 ms off every cold start
/// (docs/benchmarks.md). `KEYGATE_TLS_SYSTEM_ROOTS=1` trusts the system store instead (for a TLS proxy).
const AWS_ROOT_CAS: &str = include_str!("aws_root_cas.pem");
pub const TLS_SYSTEM_ROOTS: &str = "KEYGATE_TLS_SYSTEM_ROOTS";

fn tls_context() -> tls::TlsContext {
    let system = std::env::var(TLS_SYSTEM_ROOTS).is_ok_and(|v| v == "1");
    let store = if system {
        tls::TrustStore::default()
    } else {
        tls::TrustStore::empty().with_native_roots(false).with_pem_certificate(AWS_ROOT_CAS.as_bytes())
    };
    tls::TlsContext::builder().with_trust_store(store).build().unwrap_or_default()
}

pub struct DynamoStore {
    client: Client,
    table: String,
    round_trips: AtomicU64,
}

fn license_pk(key: &LicenseKey) -> AttributeValue {
    AttributeValue::S(format!("L#{key}"))
}

/// A product's trial terms: `P#<product>` / `TRIAL`.
fn trial_terms_pk(product: &Product) -> AttributeValue {
    AttributeValue::S(format!("P#{product}"))
}

/// A device's trial of a product: `T#<product>#<hardware_id>` / `TRIAL` (products have no `#`).
fn trial_marker_pk(product: &Product, hardware_id: &HardwareId) -> AttributeValue {
    AttributeValue::S(format!("T#{product}#{hardware_id}"))
}

const TRIAL_SK: &str = "TRIAL";

fn device_sk(hardware_id: &HardwareId) -> AttributeValue {
    AttributeValue::S(format!("{DEVICE_PREFIX}{hardware_id}"))
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_string())
}

fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// Maps an SDK failure: no answer, throttling or a server fault is `Unavailable` (503, retry later);
/// anything else is a bug or misconfiguration (500).
fn classify<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static, R: std::fmt::Debug>(
    err: SdkError<E, R>,
) -> StoreError {
    let detail = DisplayErrorContext(&err).to_string();
    match &err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            StoreError::Unavailable(detail)
        }
        _ => match err.code() {
            Some(
                "ProvisionedThroughputExceededException"
                | "ThrottlingException"
                | "RequestLimitExceeded"
                | "InternalServerError"
                | "ServiceUnavailable"
                | "LimitExceededException",
            ) => StoreError::Unavailable(detail),
            _ => StoreError::Internal(detail),
        },
    }
}

fn transaction_error<R: std::fmt::Debug>(err: SdkError<TransactWriteItemsError, R>) -> WriteError {
    if let SdkError::ServiceError(service) = &err {
        match service.err() {
            TransactWriteItemsError::TransactionCanceledException(cancelled) => {
                let reasons: Vec<(&str, &str)> = cancelled
                    .cancellation_reasons()
                    .iter()
                    .map(|r| (r.code().unwrap_or("None"), r.message().unwrap_or("")))
                    .collect();
                return cancellation(&reasons);
            }
            TransactWriteItemsError::TransactionInProgressException(_) => return WriteError::Conflict,
            _ => {}
        }
    }
    WriteError::Store(classify(err))
}

/// A cancelled transaction, by its items' reasons: a condition that no longer holds or a
/// concurrent transaction is a conflict (read again and re-decide); throttling is a passing
/// unavailability; anything else (a ValidationError, an item collection over its size limit) is a
/// fault of this code, with its cause, never a "retry later".
fn cancellation(reasons: &[(&str, &str)]) -> WriteError {
    let any = |codes: &[&str]| reasons.iter().any(|(code, _)| codes.contains(code));
    let described = || {
        let failed: Vec<String> = reasons
            .iter()
            .filter(|(code, _)| *code != "None")
            .map(|(code, message)| format!("{code}: {message}"))
            .collect();
        format!("transaction cancelled: {}", failed.join("; "))
    };
    if any(&["ConditionalCheckFailed", "TransactionConflict"]) {
        WriteError::Conflict
    } else if any(&["ThrottlingError", "ProvisionedThroughputExceeded", "RequestLimitExceeded"]) {
        WriteError::Store(StoreError::Unavailable(described()))
    } else {
        WriteError::Store(StoreError::Internal(described()))
    }
}

/// A single-item write whose condition failed is a conflict; anything else is classified as usual.
fn conditional_error<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static, R: std::fmt::Debug>(
    err: SdkError<E, R>,
) -> WriteError {
    if err.code() == Some("ConditionalCheckFailedException") {
        WriteError::Conflict
    } else {
        WriteError::Store(classify(err))
    }
}

const IDEMPOTENCY_SK: &str = "I";

fn idempotency_pk(idempotency_key: &str) -> AttributeValue {
    AttributeValue::S(format!("I#{idempotency_key}"))
}

const RECEIPT_SK: &str = "R";

/// A receipt's partition: its scope (which holds no `#` after its kind) and then the key.
fn receipt_pk(scope: &str, idempotency_key: &str) -> AttributeValue {
    AttributeValue::S(format!("R#{scope}#{idempotency_key}"))
}

/// The index, its partition-key attribute and value for a lookup.
fn lookup_index(lookup: &Lookup) -> (&'static str, &'static str, String) {
    match lookup {
        Lookup::CustomerEmail(email) => (CUSTOMER_INDEX, "GSI1PK", format!("C#{}", email.as_str())),
        Lookup::OrderId(order) => (ORDER_INDEX, "GSI2PK", format!("O#{order}")),
        Lookup::TrialEmail(email) => (CUSTOMER_INDEX, "GSI1PK", format!("{TRIAL_EMAIL_PREFIX}{}", email.as_str())),
    }
}

/// Trial e-mails share the customer index under their own prefix, so a customer lookup never
/// finds an address nobody verified.
const TRIAL_EMAIL_PREFIX: &str = "TE#";

/// A cursor is DynamoDB's LastEvaluatedKey (all strings) as base64url JSON.
fn encode_cursor(key: &Item) -> Option<String> {
    let object: serde_json::Map<String, serde_json::Value> = key
        .iter()
        .map(|(name, value)| value.as_s().ok().map(|s| (name.clone(), serde_json::Value::String(s.clone()))))
        .collect::<Option<_>>()?;
    Some(URL_SAFE_NO_PAD.encode(serde_json::Value::Object(object).to_string()))
}

/// Accepts only a cursor of the shape this lookup hands out, for this lookup's partition.
fn decode_cursor(cursor: &str, partition_attribute: &str, partition_value: &str) -> Result<Item, StoreError> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| StoreError::InvalidCursor)?;
    let object: HashMap<String, String> = serde_json::from_slice(&bytes).map_err(|_| StoreError::InvalidCursor)?;
    let mut names: Vec<&str> = object.keys().map(String::as_str).collect();
    names.sort_unstable();
    let mut expected = vec!["PK", "SK", "created_at", partition_attribute];
    expected.sort_unstable();
    if names != expected || object.get(partition_attribute).map(String::as_str) != Some(partition_value) {
        return Err(StoreError::InvalidCursor);
    }
    // The key of a license item: DynamoDB refuses a start key with empty or foreign values (a 500).
    let license_key = object["PK"].strip_prefix("L#").map(LicenseKey::parse);
    let created_at = crate::time::Timestamp::parse(&object["created_at"]).ok();
    if object["SK"] != LICENSE_SK || !matches!(license_key, Some(Ok(_))) || created_at.is_none() {
        return Err(StoreError::InvalidCursor);
    }
    Ok(object.into_iter().map(|(name, value)| (name, AttributeValue::S(value))).collect())
}

fn license_from(item: Item) -> Result<License, StoreError> {
    serde_dynamo::from_item(item).map_err(|e| StoreError::Internal(format!("unreadable license item: {e}")))
}

fn device_from(item: Item) -> Result<Device, StoreError> {
    serde_dynamo::from_item(item).map_err(|e| StoreError::Internal(format!("unreadable device item: {e}")))
}

fn license_item(license: &License) -> Result<Item, StoreError> {
    let mut item: Item =
        serde_dynamo::to_item(license).map_err(|e| StoreError::Internal(format!("license not storable: {e}")))?;
    item.insert("PK".into(), license_pk(&license.license_key));
    item.insert("SK".into(), s(LICENSE_SK));
    if let Some(email) = license.customer.as_ref().and_then(|c| c.email.as_ref()) {
        item.insert("GSI1PK".into(), AttributeValue::S(format!("C#{}", email.as_str())));
    }
    if let Some(email) = &license.trial_email {
        item.insert("GSI1PK".into(), AttributeValue::S(format!("{TRIAL_EMAIL_PREFIX}{}", email.as_str())));
    }
    if let Some(order) = &license.order_id {
        item.insert("GSI2PK".into(), AttributeValue::S(format!("O#{order}")));
    }
    Ok(item)
}

fn device_item(key: &LicenseKey, device: &Device) -> Result<Item, StoreError> {
    let mut item: Item =
        serde_dynamo::to_item(device).map_err(|e| StoreError::Internal(format!("device not storable: {e}")))?;
    item.insert("PK".into(), license_pk(key));
    item.insert("SK".into(), device_sk(&device.hardware_id));
    // A lease's end lives in the license's `leases` map; on a device it is only ever shown.
    item.remove("lease_expires_at");
    Ok(item)
}

fn built<T, E: std::fmt::Display>(result: Result<T, E>) -> Result<T, StoreError> {
    result.map_err(|e| StoreError::Internal(format!("request not buildable: {e}")))
}

/// The most lapsed entries one write removes: each adds a condition and a REMOVE to expressions
/// DynamoDB caps at 4 KB. More (after a vendor lowered the seats far) are trimmed first.
const MAX_TAKE_OVER_PER_WRITE: usize = 64;

/// A map attribute of the license item as read, and the prefix of its placeholders.
struct MapAttribute<'a> {
    prefix: &'static str,
    name: &'static str,
    read: &'a std::collections::BTreeMap<HardwareId, Timestamp>,
}

/// The parts of one update or condition expression, built up by the operations below.
#[derive(Default)]
struct Expression {
    sets: Vec<String>,
    removes: Vec<String>,
    conditions: Vec<String>,
    names: HashMap<String, String>,
    values: Item,
}

impl Expression {
    fn name(&mut self, placeholder: &str, name: &str) -> &mut Self {
        self.names.insert(placeholder.into(), name.into());
        self
    }

    fn value(&mut self, placeholder: &str, value: AttributeValue) -> &mut Self {
        self.values.insert(placeholder.into(), value);
        self
    }

    fn set(&mut self, clause: impl Into<String>) -> &mut Self {
        self.sets.push(clause.into());
        self
    }

    fn condition(&mut self, condition: impl Into<String>) -> &mut Self {
        self.conditions.push(condition.into());
        self
    }

    fn update_expression(&self) -> String {
        let mut expression = String::new();
        if !self.sets.is_empty() {
            expression = format!("SET {}", self.sets.join(", "));
        }
        if !self.removes.is_empty() {
            expression.push_str(&format!(" REMOVE {}", self.removes.join(", ")));
        }
        expression.trim_start().to_string()
    }

    fn condition_expression(&self) -> Option<String> {
        (!self.conditions.is_empty()).then(|| self.conditions.join(" AND "))
    }

    /// Puts `holder`'s entry `until` into `map`, as `slot` says: its own entry replaced if it
    /// still reads as observed (or added if still absent), the lapsed entries of `take_over`
    /// removed if they still read as observed, and at most `room` entries afterwards (counting
    /// before any entry another part of the same write removes).
    fn put_slot(&mut self, map: MapAttribute<'_>, holder: &HardwareId, slot: &Slot, until: Timestamp, room: u32) {
        let MapAttribute { prefix: p, name: map, read } = map;
        let map_name = format!("#{p}");
        self.name(&map_name, map);
        if read.is_empty() {
            // The map may not exist yet (a document path into it would be invalid): write it whole.
            let whole = HashMap::from([(holder.to_string(), s(&until.to_string()))]);
            self.set(format!("{map_name} = :{p}_whole")).value(&format!(":{p}_whole"), AttributeValue::M(whole));
            self.condition(format!("(attribute_not_exists({map_name}) OR size({map_name}) = :zero)"));
            self.value(":zero", n(0));
            return;
        }
        let own = format!("{map_name}.#{p}_h");
        self.name(&format!("#{p}_h"), holder.as_str());
        self.set(format!("{own} = :{p}_until")).value(&format!(":{p}_until"), s(&until.to_string()));
        match slot.own {
            Some(observed) => {
                self.condition(format!("{own} = :{p}_own")).value(&format!(":{p}_own"), s(&observed.to_string()));
            }
            None => {
                self.condition(format!("attribute_not_exists({own})"));
            }
        }
        for (index, (other, end)) in slot.take_over.iter().enumerate() {
            let path = format!("{map_name}.#{p}_t{index}");
            self.name(&format!("#{p}_t{index}"), other.as_str());
            self.value(&format!(":{p}_t{index}"), s(&end.to_string()));
            self.condition(format!("{path} = :{p}_t{index}"));
            self.removes.push(path);
        }
        let bound = i64::from(room) + slot.take_over.len() as i64 - i64::from(slot.own.is_none());
        self.condition(format!("size({map_name}) <= :{p}_bound")).value(&format!(":{p}_bound"), n(bound));
    }

    /// Removes `holder`'s entry from the map attribute `map` if it still reads `observed`, or
    /// requires it to be still absent.
    fn remove_entry(&mut self, p: &str, map: &str, holder: &HardwareId, observed: Option<Timestamp>) {
        let path = format!("#{p}.#{p}_h");
        self.name(&format!("#{p}"), map).name(&format!("#{p}_h"), holder.as_str());
        match observed {
            Some(observed) => {
                self.condition(format!("{path} = :{p}_own")).value(&format!(":{p}_own"), s(&observed.to_string()));
                self.removes.push(path);
            }
            None => {
                self.condition(format!("attribute_not_exists({path})"));
            }
        }
    }
}

fn releases(license: &License) -> MapAttribute<'_> {
    MapAttribute { prefix: "r", name: RELEASES, read: &license.releases }
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into(), round_trips: AtomicU64::new(0) }
    }

    pub fn from_config(config: &SdkConfig, table: impl Into<String>) -> Self {
        Self::new(Client::new(config), table)
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// A single item read with a strongly consistent GetItem.
    async fn get_one<T: serde::de::DeserializeOwned>(
        &self,
        pk: AttributeValue,
        sk: &str,
        what: &str,
    ) -> Result<Option<T>, StoreError> {
        self.count_round_trip();
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("PK", pk)
            .key("SK", s(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(classify)?;
        output
            .item
            .map(|item| {
                serde_dynamo::from_item(item).map_err(|e| StoreError::Internal(format!("unreadable {what}: {e}")))
            })
            .transpose()
    }

    /// One conditional UpdateItem of a license item (one round trip); a failed condition is a conflict.
    async fn update_license(&self, key: &LicenseKey, expression: Expression) -> Result<(), WriteError> {
        self.count_round_trip();
        self.client
            .update_item()
            .table_name(&self.table)
            .key("PK", license_pk(key))
            .key("SK", s(LICENSE_SK))
            .update_expression(expression.update_expression())
            .set_condition_expression(expression.condition_expression())
            .set_expression_attribute_names((!expression.names.is_empty()).then_some(expression.names))
            .set_expression_attribute_values((!expression.values.is_empty()).then_some(expression.values))
            .send()
            .await
            .map_err(conditional_error)?;
        Ok(())
    }

    /// The same update of a license item, as one item of a transaction (a condition check when it
    /// changes nothing: a transaction's Update needs an update expression).
    fn license_write(&self, key: &LicenseKey, expression: Expression) -> Result<TransactWriteItem, StoreError> {
        let update_expression = expression.update_expression();
        let condition = expression.condition_expression();
        let names = (!expression.names.is_empty()).then_some(expression.names);
        let values = (!expression.values.is_empty()).then_some(expression.values);
        if update_expression.is_empty() {
            let check = ConditionCheck::builder()
                .table_name(&self.table)
                .key("PK", license_pk(key))
                .key("SK", s(LICENSE_SK))
                .set_condition_expression(condition)
                .set_expression_attribute_names(names)
                .set_expression_attribute_values(values)
                .build();
            return Ok(TransactWriteItem::builder().condition_check(built(check)?).build());
        }
        let update = Update::builder()
            .table_name(&self.table)
            .key("PK", license_pk(key))
            .key("SK", s(LICENSE_SK))
            .update_expression(update_expression)
            .set_condition_expression(condition)
            .set_expression_attribute_names(names)
            .set_expression_attribute_values(values)
            .build();
        Ok(TransactWriteItem::builder().update(built(update)?).build())
    }

    /// Removes the lapsed entries of `slot` that one write cannot hold, in conditional writes of
    /// their own (each entry only if it still reads as observed: removing a lapsed entry frees
    /// nothing that runs), and returns the slot for the rest.
    async fn fit(&self, key: &LicenseKey, map: &'static str, slot: &Slot) -> Result<Slot, WriteError> {
        let excess = slot.take_over.len().saturating_sub(MAX_TAKE_OVER_PER_WRITE);
        for chunk in slot.take_over[..excess].chunks(MAX_TAKE_OVER_PER_WRITE) {
            let mut e = Expression::default();
            e.name("#m", map);
            for (index, (holder, end)) in chunk.iter().enumerate() {
                e.name(&format!("#m{index}"), holder.as_str()).value(&format!(":m{index}"), s(&end.to_string()));
                e.condition(format!("#m.#m{index} = :m{index}"));
                e.removes.push(format!("#m.#m{index}"));
            }
            self.update_license(key, e).await?;
        }
        Ok(Slot { own: slot.own, take_over: slot.take_over[excess..].to_vec() })
    }

    /// A condition that `hardware_id` is bound to the license, as one item of a transaction.
    fn device_bound(&self, key: &LicenseKey, hardware_id: &HardwareId) -> Result<TransactWriteItem, StoreError> {
        let check = ConditionCheck::builder()
            .table_name(&self.table)
            .key("PK", license_pk(key))
            .key("SK", device_sk(hardware_id))
            .condition_expression(format!("attribute_exists(SK) AND {BOUND}"))
            .build();
        Ok(TransactWriteItem::builder().condition_check(built(check)?).build())
    }

    /// Turns a bound device into a tombstone: who released it and until when its credentials may
    /// run, kept until TTL deletes it after that. Holds: still bound, with the horizon read.
    fn release_write(
        &self,
        key: &LicenseKey,
        device: &Device,
        credential_until: Option<Timestamp>,
        released_by: ReleasedBy,
        now: Timestamp,
    ) -> Result<TransactWriteItem, StoreError> {
        let released_by = match released_by {
            ReleasedBy::Client => "client",
            ReleasedBy::Vendor => "vendor",
            ReleasedBy::Rotation => "rotation",
        };
        let mut update = Update::builder()
            .table_name(&self.table)
            .key("PK", license_pk(key))
            .key("SK", device_sk(&device.hardware_id))
            .expression_attribute_names("#ttl", "ttl")
            .expression_attribute_values(":now", s(&now.to_string()))
            .expression_attribute_values(":by", s(released_by))
            .expression_attribute_values(":ttl", n(tombstone_expires(credential_until, now).unix()));
        let mut sets = "SET released_at = :now, released_by = :by, #ttl = :ttl".to_string();
        if let Some(until) = credential_until {
            sets.push_str(", credential_until = :until");
            update = update.expression_attribute_values(":until", s(&until.to_string()));
        }
        let horizon = match device.credential_until {
            Some(observed) => {
                update = update.expression_attribute_values(":observed", s(&observed.to_string()));
                "credential_until = :observed"
            }
            None => "attribute_not_exists(credential_until)",
        };
        let update = update
            .update_expression(sets)
            .condition_expression(format!("attribute_exists(SK) AND {BOUND} AND {horizon}"))
            .build();
        Ok(TransactWriteItem::builder().update(built(update)?).build())
    }

    fn count_round_trip(&self) {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
    }

    fn put_new_license(&self, license: &License) -> Result<TransactWriteItem, StoreError> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(license_item(license)?))
            .condition_expression("attribute_not_exists(PK)")
            .build();
        Ok(TransactWriteItem::builder().put(built(put)?).build())
    }

    /// A client write's receipt, as one item of its transaction: new, or the write fails.
    fn receipt_put(&self, receipt: &Receipt) -> Result<TransactWriteItem, StoreError> {
        let mut item: Item =
            serde_dynamo::to_item(receipt).map_err(|e| StoreError::Internal(format!("receipt not storable: {e}")))?;
        item.insert("PK".into(), receipt_pk(&receipt.scope, &receipt.idempotency_key));
        item.insert("SK".into(), s(RECEIPT_SK));
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(PK)")
            .build();
        Ok(TransactWriteItem::builder().put(built(put)?).build())
    }

    /// `items` with the receipt, if any, in one transaction.
    async fn transact_with(
        &self,
        mut items: Vec<TransactWriteItem>,
        receipt: Option<&Receipt>,
    ) -> Result<(), WriteError> {
        if let Some(receipt) = receipt {
            items.push(self.receipt_put(receipt)?);
        }
        self.transact(items).await
    }

    async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<(), WriteError> {
        self.count_round_trip();
        self.client.transact_write_items().set_transact_items(Some(items)).send().await.map_err(transaction_error)?;
        Ok(())
    }

    /// Undo the chunks of a batch that were written before a later chunk failed, sending again
    /// what DynamoDB left unprocessed (throttled) a few times before giving up with a log line.
    async fn delete_licenses(&self, licenses: &[License]) {
        for chunk in licenses.chunks(25) {
            let mut requests: Vec<aws_sdk_dynamodb::types::WriteRequest> = chunk
                .iter()
                .filter_map(|l| {
                    let delete = aws_sdk_dynamodb::types::DeleteRequest::builder()
                        .key("PK", license_pk(&l.license_key))
                        .key("SK", s(LICENSE_SK))
                        .build()
                        .ok()?;
                    Some(aws_sdk_dynamodb::types::WriteRequest::builder().delete_request(delete).build())
                })
                .collect();
            for attempt in 0..5u32 {
                if requests.is_empty() {
                    break;
                }
                if attempt > 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(50 << attempt)).await;
                }
                self.count_round_trip();
                match self.client.batch_write_item().request_items(&self.table, requests.clone()).send().await {
                    Ok(output) => {
                        requests = output.unprocessed_items.and_then(|mut m| m.remove(&self.table)).unwrap_or_default();
                    }
                    Err(err) => {
                        tracing::error!(error = %DisplayErrorContext(&err), "could not undo a partly written license batch");
                    }
                }
            }
            if !requests.is_empty() {
                tracing::error!(left = requests.len(), "licenses of a failed batch were left in place");
            }
        }
    }
}

impl Store for DynamoStore {
    async fn create_licenses(
        &self,
        licenses: &[License],
        record: Option<&IdempotencyRecord>,
    ) -> Result<(), WriteError> {
        // One slot of the last transaction is kept for the idempotency record, which commits
        // with the last licenses: a replay never points at licenses that were not all written.
        let per_transaction = MAX_TRANSACTION_ITEMS - 1;
        let chunks: Vec<&[License]> = licenses.chunks(per_transaction).collect();
        for (index, chunk) in chunks.iter().enumerate() {
            let mut items = chunk.iter().map(|l| self.put_new_license(l)).collect::<Result<Vec<_>, _>>()?;
            if let (Some(record), true) = (record, index + 1 == chunks.len()) {
                let mut item: Item = serde_dynamo::to_item(record)
                    .map_err(|e| StoreError::Internal(format!("idempotency record not storable: {e}")))?;
                item.insert("PK".into(), idempotency_pk(&record.idempotency_key));
                item.insert("SK".into(), s(IDEMPOTENCY_SK));
                let put = Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(item))
                    .condition_expression("attribute_not_exists(PK)")
                    .build();
                items.push(TransactWriteItem::builder().put(built(put)?).build());
            }
            if let Err(err) = self.transact(items).await {
                self.delete_licenses(&licenses[..index * per_transaction]).await;
                return Err(err);
            }
        }
        Ok(())
    }

    async fn idempotency_record(&self, idempotency_key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.get_one(idempotency_pk(idempotency_key), IDEMPOTENCY_SK, "idempotency record").await
    }

    async fn receipt(&self, scope: &str, idempotency_key: &str) -> Result<Option<Receipt>, StoreError> {
        self.get_one(receipt_pk(scope, idempotency_key), RECEIPT_SK, "receipt").await
    }

    async fn licenses(&self, keys: &[LicenseKey]) -> Result<Vec<License>, StoreError> {
        let mut found: HashMap<LicenseKey, License> = HashMap::new();
        for chunk in keys.chunks(100) {
            let mut request = KeysAndAttributes::builder().consistent_read(true);
            for key in chunk {
                request = request
                    .keys(HashMap::from([("PK".to_string(), license_pk(key)), ("SK".to_string(), s(LICENSE_SK))]));
            }
            let mut pending = Some(built(request.build())?);
            while let Some(request) = pending.take() {
                self.count_round_trip();
                let output =
                    self.client.batch_get_item().request_items(&self.table, request).send().await.map_err(classify)?;
                for item in output.responses.and_then(|mut r| r.remove(&self.table)).unwrap_or_default() {
                    let license = license_from(item)?;
                    found.insert(license.license_key.clone(), license);
                }
                pending =
                    output.unprocessed_keys.and_then(|mut u| u.remove(&self.table)).filter(|k| !k.keys.is_empty());
            }
        }
        Ok(keys.iter().filter_map(|k| found.remove(k)).collect())
    }

    async fn list_licenses(&self, lookup: &Lookup, limit: u32, cursor: Option<&str>) -> Result<Page, StoreError> {
        let (index, attribute, value) = lookup_index(lookup);
        let start = cursor.map(|c| decode_cursor(c, attribute, &value)).transpose()?;
        self.count_round_trip();
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(index)
            .key_condition_expression("#pk = :pk")
            .expression_attribute_names("#pk", attribute)
            .expression_attribute_values(":pk", AttributeValue::S(value))
            .scan_index_forward(false)
            // One more than the page, so a cursor is handed out only while more remain (DynamoDB
            // returns a LastEvaluatedKey whenever the limit is reached, even at the very end).
            .limit(limit.saturating_add(1) as i32)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(classify)?;
        let mut items = output.items.unwrap_or_default();
        let next_cursor = if items.len() > limit as usize {
            items.truncate(limit as usize);
            let last = items.last().map(|item| {
                let names = [attribute, "created_at", "PK", "SK"];
                names.iter().filter_map(|n| item.get(*n).map(|v| (n.to_string(), v.clone()))).collect::<Item>()
            });
            last.as_ref().and_then(encode_cursor)
        } else {
            // Fewer than asked, yet a key: the query stopped at its 1 MB page, so more may remain.
            output.last_evaluated_key.as_ref().and_then(encode_cursor)
        };
        let licenses = items.into_iter().map(license_from).collect::<Result<Vec<_>, _>>()?;
        Ok(Page { licenses, next_cursor })
    }

    async fn license_and_device(
        &self,
        key: &LicenseKey,
        hardware_id: &HardwareId,
    ) -> Result<(Option<License>, Option<Device>), StoreError> {
        let pk = license_pk(key);
        let keys = KeysAndAttributes::builder()
            .keys(HashMap::from([("PK".to_string(), pk.clone()), ("SK".to_string(), s(LICENSE_SK))]))
            .keys(HashMap::from([("PK".to_string(), pk), ("SK".to_string(), device_sk(hardware_id))]))
            .consistent_read(true);
        let mut pending = Some(built(keys.build())?);
        let (mut license, mut device) = (None, None);
        while let Some(request) = pending.take() {
            self.count_round_trip();
            let output =
                self.client.batch_get_item().request_items(&self.table, request).send().await.map_err(classify)?;
            let items = output.responses.and_then(|mut r| r.remove(&self.table)).unwrap_or_default();
            for item in items {
                match item.get("SK") {
                    Some(AttributeValue::S(sk)) if sk == LICENSE_SK => license = Some(license_from(item)?),
                    _ if !is_released(&item) => device = Some(device_from(item)?),
                    _ => {}
                }
            }
            // DynamoDB may leave keys unprocessed under load; ask again for just those.
            pending = output.unprocessed_keys.and_then(|mut u| u.remove(&self.table)).filter(|k| !k.keys.is_empty());
        }
        Ok((license, device))
    }

    async fn license_with_devices(&self, key: &LicenseKey) -> Result<Option<(License, Vec<Device>)>, StoreError> {
        let mut license = None;
        let mut devices = Vec::new();
        let mut start = None;
        loop {
            self.count_round_trip();
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("PK = :pk")
                .expression_attribute_values(":pk", license_pk(key))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(classify)?;
            for item in output.items.unwrap_or_default() {
                match item.get("SK") {
                    Some(AttributeValue::S(sk)) if sk == LICENSE_SK => license = Some(license_from(item)?),
                    Some(AttributeValue::S(sk)) if sk.starts_with(DEVICE_PREFIX) && !is_released(&item) => {
                        devices.push(device_from(item)?)
                    }
                    _ => {}
                }
            }
            start = output.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        Ok(license.map(|l| (l, devices)))
    }

    async fn activate(&self, write: &ActivationWrite<'_>) -> Result<(), WriteError> {
        let license = write.license;
        let key = &license.license_key;
        let mut e = Expression::default();
        e.name("#status", "status")
            .value(":active", s("active"))
            .value(":now", s(&write.now.to_string()))
            .value(":one", n(1))
            .condition("attribute_exists(PK)")
            .condition("#status = :active")
            .set("last_activated_at = :now, first_activated_at = if_not_exists(first_activated_at, :now)")
            .set("version = version + :one");
        let mut items = Vec::new();
        let reclaim = reclaimed(license, &write.device.hardware_id, write.now);
        match write.evict {
            None => {
                e.set("times_activated = times_activated + :one")
                    .condition("(times_activated < max_activations OR allow_unlimited_activations = :true)")
                    .value(":true", AttributeValue::Bool(true));
            }
            Some(eviction) => {
                if let Some(entry) = &eviction.allowance {
                    let slot = self.fit(key, RELEASES, &entry.slot).await?;
                    // A device coming back frees its own place in the same write.
                    let room = license.release_allowance + u32::from(reclaim.is_some());
                    e.put_slot(releases(license), &eviction.hardware_id, &slot, entry.until, room);
                    e.set("transfer_count = transfer_count + :one")
                        .condition("(attribute_not_exists(max_transfers) OR transfer_count < max_transfers)");
                }
                let evicted = Device {
                    hardware_id: eviction.hardware_id.clone(),
                    credential_until: eviction.credential_until,
                    ..write.device.clone()
                };
                let until = eviction.allowance.as_ref().map(|entry| entry.until).or(eviction.credential_until);
                items.push(self.release_write(key, &evicted, until, ReleasedBy::Rotation, write.now)?);
            }
        }
        if let Some(cutoff) = freeze_cutoff(license, write.now) {
            e.condition("(attribute_not_exists(last_activated_at) OR last_activated_at <= :freeze_cutoff)")
                .value(":freeze_cutoff", s(&cutoff.to_string()));
        }
        // A device coming back while its earlier binding's release is still owed takes that place back.
        if let Some(observed) = reclaim {
            e.remove_entry("m", RELEASES, &write.device.hardware_id, Some(observed));
        }
        let device_put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(device_item(key, write.device)?))
            .condition_expression(format!("attribute_not_exists(SK) OR {RELEASED}"))
            .build();
        items.insert(0, self.license_write(key, e)?);
        items.insert(1, TransactWriteItem::builder().put(built(device_put)?).build());
        self.transact_with(items, write.receipt).await
    }

    async fn deactivate(&self, write: &DeactivationWrite<'_>) -> Result<(), WriteError> {
        let license = write.license;
        let key = &license.license_key;
        let hardware_id = &write.device.hardware_id;
        let mut e = Expression::default();
        e.condition("attribute_exists(PK)");
        match write.seat {
            SeatRelease::Counted { count_transfer } => {
                e.value(":one", n(1))
                    .value(":zero", n(0))
                    .set("times_activated = times_activated - :one, version = version + :one")
                    .condition("times_activated > :zero");
                if count_transfer {
                    e.set("transfer_count = transfer_count + :one")
                        .condition("(attribute_not_exists(max_transfers) OR transfer_count < max_transfers)");
                }
            }
            SeatRelease::Lease { observed } => e.remove_entry("l", LEASES, hardware_id, observed),
        }
        if let Some(entry) = write.allowance {
            let slot = self.fit(key, RELEASES, &entry.slot).await?;
            e.put_slot(releases(license), hardware_id, &slot, entry.until, license.release_allowance);
        }
        let credential_until = crate::rules::credential_until(license, write.device);
        let until = write.allowance.map(|entry| entry.until).max(credential_until);
        let items = vec![
            self.release_write(key, write.device, until, write.released_by, write.now)?,
            self.license_write(key, e)?,
        ];
        self.transact_with(items, write.receipt).await
    }

    async fn lease(&self, write: &LeaseWrite<'_>) -> Result<(), WriteError> {
        let license = write.license;
        let key = &license.license_key;
        let mut e = Expression::default();
        e.condition("attribute_exists(PK)");
        let mut new_entry = false;
        match write.plan {
            LeasePlan::Renew { observed, until } => {
                e.name("#l", LEASES)
                    .name("#l_h", write.hardware_id.as_str())
                    .set("#l.#l_h = :l_until")
                    .value(":l_until", s(&until.to_string()))
                    .condition("#l.#l_h = :l_own")
                    .value(":l_own", s(&observed.to_string()));
            }
            LeasePlan::Acquire { slot, until } => {
                new_entry = slot.own.is_none();
                let slot = self.fit(key, LEASES, slot).await?;
                let leases = MapAttribute { prefix: "l", name: LEASES, read: &license.leases };
                e.put_slot(leases, write.hardware_id, &slot, *until, license.max_activations);
            }
        }
        if write.new_device.is_some() {
            e.set("last_activated_at = :now, first_activated_at = if_not_exists(first_activated_at, :now)")
                .set("version = version + :one")
                .value(":now", s(&write.now.to_string()))
                .value(":one", n(1))
                .name("#status", "status")
                .condition("#status = :active")
                .value(":active", s("active"));
        }
        let device_write = match (write.new_device, write.borrowed_until) {
            (Some(device), _) => {
                let put = Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(device_item(key, device)?))
                    .condition_expression(format!("attribute_not_exists(SK) OR {RELEASED}"))
                    .build();
                Some(TransactWriteItem::builder().put(built(put)?).build())
            }
            (None, Some(until)) => {
                let update = Update::builder()
                    .table_name(&self.table)
                    .key("PK", license_pk(key))
                    .key("SK", device_sk(write.hardware_id))
                    .update_expression("SET borrowed_until = :until")
                    .condition_expression(format!("attribute_exists(SK) AND {BOUND}"))
                    .expression_attribute_values(":until", s(&until.to_string()))
                    .build();
                Some(TransactWriteItem::builder().update(built(update)?).build())
            }
            // A new entry for a device that holds none may race its deactivation: the device
            // must still be bound, or the lease would outlive it.
            (None, None) if new_entry => Some(self.device_bound(key, write.hardware_id)?),
            (None, None) => None,
        };
        match (device_write, write.receipt) {
            (None, None) => self.update_license(key, e).await,
            (device_write, receipt) => {
                let items = std::iter::once(self.license_write(key, e)).chain(device_write.map(Ok));
                self.transact_with(items.collect::<Result<_, _>>()?, receipt).await
            }
        }
    }

    async fn consume(
        &self,
        key: &LicenseKey,
        plan: &ConsumptionPlan,
        lease_holder: Option<(&HardwareId, Timestamp)>,
        receipt: Option<&Receipt>,
    ) -> Result<(), WriteError> {
        let mut e = Expression::default();
        e.name("#c", CONSUMPTION);
        let fresh = || {
            AttributeValue::M(HashMap::from([
                ("period".to_string(), s(&plan.period)),
                ("used".to_string(), n(plan.amount)),
            ]))
        };
        match &plan.observed {
            None if !plan.counters_exist => {
                e.value(":whole", AttributeValue::M(HashMap::from([(plan.key.clone(), fresh())])))
                    .set("#c = :whole")
                    .condition("attribute_exists(PK) AND attribute_not_exists(#c)");
            }
            None => {
                e.name("#k", &plan.key)
                    .value(":fresh", fresh())
                    .set("#c.#k = :fresh")
                    .condition("attribute_exists(#c) AND attribute_not_exists(#c.#k)");
            }
            Some(observed) if plan.continues() => {
                e.name("#k", &plan.key)
                    .name("#p", "period")
                    .name("#u", "used")
                    .value(":amount", n(plan.amount))
                    .value(":period", s(&observed.period))
                    .set("#c.#k.#u = #c.#k.#u + :amount")
                    .condition("#c.#k.#p = :period");
                if let Some(limit) = plan.limit {
                    // Room for the amount, whatever was added since the read.
                    e.condition("#c.#k.#u <= :ceiling").value(":ceiling", n(limit - plan.amount));
                }
            }
            Some(observed) => {
                e.name("#k", &plan.key)
                    .name("#p", "period")
                    .value(":fresh", fresh())
                    .value(":old", s(&observed.period))
                    .set("#c.#k = :fresh")
                    .condition("#c.#k.#p = :old");
            }
        }
        if let Some((hardware_id, now)) = lease_holder {
            // A floating device counts use only while it holds a seat.
            e.name("#l", LEASES)
                .name("#l_h", hardware_id.as_str())
                .condition("#l.#l_h > :l_now")
                .value(":l_now", s(&now.to_string()));
        }
        // A transaction even alone: the SDK retries a write whose answer was lost (a 500 may follow
        // a commit), and only a transaction's ClientRequestToken (which the SDK sets once per call)
        // makes that retry a no-op instead of a second count.
        self.transact_with(vec![self.license_write(key, e)?], receipt).await
    }

    async fn put_trial_terms(&self, terms: &TrialTerms) -> Result<(), StoreError> {
        let mut item: Item =
            serde_dynamo::to_item(terms).map_err(|e| StoreError::Internal(format!("trial terms not storable: {e}")))?;
        item.insert("PK".into(), trial_terms_pk(&terms.product));
        item.insert("SK".into(), s(TRIAL_SK));
        self.count_round_trip();
        self.client.put_item().table_name(&self.table).set_item(Some(item)).send().await.map_err(classify)?;
        Ok(())
    }

    async fn trial_terms(&self, product: &Product) -> Result<Option<TrialTerms>, StoreError> {
        self.get_one(trial_terms_pk(product), TRIAL_SK, "trial terms").await
    }

    async fn trial_marker(
        &self,
        product: &Product,
        hardware_id: &HardwareId,
    ) -> Result<Option<TrialMarker>, StoreError> {
        self.get_one(trial_marker_pk(product, hardware_id), TRIAL_SK, "trial marker").await
    }

    async fn start_trial(
        &self,
        marker: &TrialMarker,
        license: &License,
        device: &Device,
        receipt: Option<&Receipt>,
    ) -> Result<(), WriteError> {
        let mut marker_item: Item = serde_dynamo::to_item(marker)
            .map_err(|e| StoreError::Internal(format!("trial marker not storable: {e}")))?;
        marker_item.insert("PK".into(), trial_marker_pk(&marker.product, &marker.hardware_id));
        marker_item.insert("SK".into(), s(TRIAL_SK));
        let new_item = |item: Item| {
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(PK)")
                .build();
            built(put).map(|put| TransactWriteItem::builder().put(put).build())
        };
        let items = vec![
            new_item(marker_item)?,
            new_item(license_item(license)?)?,
            new_item(device_item(&license.license_key, device)?)?,
        ];
        self.transact_with(items, receipt).await
    }

    async fn replace_license(&self, previous: &License, license: &License) -> Result<(), WriteError> {
        // An update of every stored field but those only their own operations write, so a lease,
        // release or consumption written since `previous` was read (none moves `version`) is kept.
        let mut item = license_item(license)?;
        let before = license_item(previous)?;
        let kept = |name: &str| ["PK", "SK"].contains(&name) || OPERATION_OWNED.contains(&name);
        item.retain(|name, _| !kept(name));
        let mut e = Expression::default();
        e.value(":expected", n(previous.version)).condition("version = :expected");
        for (index, (name, value)) in item.iter().enumerate() {
            e.name(&format!("#s{index}"), name).value(&format!(":s{index}"), value.clone());
            e.set(format!("#s{index} = :s{index}"));
        }
        let gone = before.keys().filter(|name| !item.contains_key(*name) && !kept(name));
        for (index, name) in gone.enumerate() {
            e.name(&format!("#r{index}"), name);
            e.removes.push(format!("#r{index}"));
        }
        self.update_license(&license.license_key, e).await
    }

    async fn touch_device(
        &self,
        key: &LicenseKey,
        hardware_id: &HardwareId,
        sighting: &Sighting,
    ) -> Result<(), WriteError> {
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("PK", license_pk(key))
            .key("SK", device_sk(hardware_id))
            .expression_attribute_values(":now", s(&sighting.now.to_string()));
        update = match sighting.credential_until {
            Some(until) => update
                .update_expression("SET last_seen_at = :now, credential_until = :until")
                .condition_expression(format!(
                    "attribute_exists(SK) AND {BOUND} AND (attribute_not_exists(credential_until) OR credential_until < :until)"
                ))
                .expression_attribute_values(":until", s(&until.to_string())),
            None => update
                .update_expression("SET last_seen_at = :now")
                .condition_expression(format!("attribute_exists(SK) AND {BOUND} AND last_seen_at < :stale_before"))
                .expression_attribute_values(":stale_before", s(&sighting.stale_before.to_string())),
        };
        self.count_round_trip();
        update.send().await.map_err(conditional_error)?;
        Ok(())
    }

    fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }
}

/// Create the table with its two lookup indexes (customer e-mail, order id) and TTL on `ttl`.
/// Returns false, changing nothing, when the table exists already.
pub async fn create_table(client: &Client, table: &str) -> Result<bool, StoreError> {
    let attribute =
        |name: &str| AttributeDefinition::builder().attribute_name(name).attribute_type(ScalarAttributeType::S).build();
    let key =
        |name: &str, key_type: KeyType| KeySchemaElement::builder().attribute_name(name).key_type(key_type).build();
    let index = |name: &str, partition: &str| {
        GlobalSecondaryIndex::builder()
            .index_name(name)
            .key_schema(built(key(partition, KeyType::Hash))?)
            .key_schema(built(key("created_at", KeyType::Range))?)
            .projection(Projection::builder().projection_type(ProjectionType::All).build())
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
        .key_schema(built(key("PK", KeyType::Hash))?)
        .key_schema(built(key("SK", KeyType::Range))?)
        .global_secondary_indexes(index(CUSTOMER_INDEX, "GSI1PK")?)
        .global_secondary_indexes(index(ORDER_INDEX, "GSI2PK")?)
        .send()
        .await;
    match created {
        Err(err) if err.code() == Some("ResourceInUseException") => return Ok(false),
        other => other.map_err(classify)?,
    };
    let ttl = built(TimeToLiveSpecification::builder().attribute_name("ttl").enabled(true).build())?;
    client.update_time_to_live().table_name(table).time_to_live_specification(ttl).send().await.map_err(classify)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::{
        cancellation, decode_cursor, encode_cursor, lambda_region, AttributeValue, StoreError, WriteError, AWS_ROOT_CAS,
    };

    #[test]
    fn a_cancelled_transaction_is_mapped_by_its_reasons() {
        let kind = |reasons: &[(&str, &str)]| match cancellation(reasons) {
            WriteError::Conflict => "conflict",
            WriteError::Store(StoreError::Unavailable(_)) => "unavailable",
            WriteError::Store(StoreError::Internal(cause)) => {
                assert!(cause.contains("ValidationError: bad") || cause.contains("ItemCollection"), "{cause}");
                "internal"
            }
            WriteError::Store(_) => "other",
        };
        assert_eq!(kind(&[("None", ""), ("ConditionalCheckFailed", "")]), "conflict");
        assert_eq!(kind(&[("TransactionConflict", ""), ("None", "")]), "conflict");
        assert_eq!(kind(&[("ThrottlingError", ""), ("None", "")]), "unavailable");
        assert_eq!(kind(&[("ProvisionedThroughputExceeded", "")]), "unavailable");
        assert_eq!(kind(&[("None", ""), ("ValidationError", "bad")]), "internal", "a bug, not a retry later");
        assert_eq!(kind(&[("ItemCollectionSizeLimitExceeded", "")]), "internal");
    }

    #[test]
    fn only_cursors_of_license_items_in_this_listing_are_accepted() {
        let cursor = |pk: &str, sk: &str, created: &str| {
            let item = [("PK", pk), ("SK", sk), ("created_at", created), ("GSI1PK", "C#ann@example.com")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), AttributeValue::S(v.to_string())))
                .collect();
            encode_cursor(&item).unwrap()
        };
        let decode = |c: &str| decode_cursor(c, "GSI1PK", "C#ann@example.com");
        assert!(decode(&cursor("L#AAAAA-BBBBB", "L", "2026-11-25T00:00:00Z")).is_ok());
        for (pk, sk, created) in [
            ("", "L", "2026-11-25T00:00:00Z"),
            ("L#AAAAA-BBBBB", "", "2026-11-25T00:00:00Z"),
            ("L#AAAAA-BBBBB", "L", ""),
            ("L#AAAAA-BBBBB", "D#pc", "2026-11-25T00:00:00Z"),
            ("T#editor#pc", "L", "2026-11-25T00:00:00Z"),
            ("L#", "L", "2026-11-25T00:00:00Z"),
        ] {
            assert!(decode(&cursor(pk, sk, created)).is_err(), "{pk} {sk} {created}");
        }
    }

    #[test]
    fn the_fast_path_is_taken_only_in_lambda_with_credentials_and_region_in_the_environment() {
        fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
            move |name| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string())
        }
        let lambda =
            [("AWS_LAMBDA_FUNCTION_NAME", "check"), ("AWS_ACCESS_KEY_ID", "AKIA"), ("AWS_REGION", "eu-west-1")];
        assert_eq!(lambda_region(env(&lambda)), Some("eu-west-1".into()));
        assert_eq!(lambda_region(env(&lambda[1..])), None, "not in Lambda: the default chains");
        assert_eq!(lambda_region(env(&[lambda[0], lambda[2]])), None, "no key in the environment");
        assert_eq!(lambda_region(env(&lambda[..2])), None, "no region");
    }
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;

    /// The SDK's TLS code panics on an unparsable trust store, and tests reach DynamoDB Local over
    /// plain HTTP, so check the embedded roots here: five PEM certificates, each DER.
    #[test]
    fn the_embedded_aws_roots_are_five_pem_certificates() {
        let bodies: Vec<Vec<u8>> = AWS_ROOT_CAS
            .split("-----BEGIN CERTIFICATE-----")
            .skip(1)
            .map(|rest| {
                let body = rest.split("-----END CERTIFICATE-----").next().unwrap();
                STANDARD.decode(body.split_whitespace().collect::<String>()).unwrap()
            })
            .collect();
        assert_eq!(bodies.len(), 5);
        assert!(bodies.iter().all(|der| der.len() > 300 && der[0] == 0x30), "DER sequences");
        assert!(AWS_ROOT_CAS.contains("# Amazon_Root_CA_1"));
    }
}
