//! The audit log: every event, in a table of its own (`<table>-events`), so license partitions stay
//! small and the license table's stream carries only license changes.
//!
//! An event is one item: `PK` its license key, `SK` its order key (time, change sequence, place),
//! `day` its UTC date for the `ByDay` index (every license's events of a day, for `GET /v1/events`),
//! `type`, `event` (the payload as JSON) and, when a retention is set, `ttl`.

use super::errors::classify;
use super::records::{built, s, Item};
use super::schema::{attribute, index, key, with_ttl};
use super::DynamoStore;
use crate::events::Event;
use crate::input::LicenseKey;
use crate::store::{EventPage, EventQuery, StoreError};
use crate::time::Timestamp;
use aws_sdk_dynamodb::types::{
    AttributeValue, BillingMode, KeyType, ProjectionType, PutRequest, ReturnConsumedCapacity, WriteRequest,
};
use aws_sdk_dynamodb::Client;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use std::collections::HashMap;

pub(super) const DAY_INDEX: &str = "ByDay";
/// One BatchWriteItem's worth.
pub(super) const EVENTS_PER_WRITE: usize = 25;
/// Queries one listing call makes at most (a type filter can leave pages sparse).
const QUERIES_PER_CALL: usize = 40;

/// The audit log's table for a license table (`KEYGATE_EVENTS_TABLE` overrides it).
pub fn events_table_name(table: &str) -> String {
    format!("{table}-events")
}

/// Creates the audit log's table (on-demand, with its day index and TTL); `false` if it exists.
pub async fn create_events_table(client: &Client, table: &str) -> Result<bool, StoreError> {
    let created = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attribute("PK")?)
        .attribute_definitions(attribute("SK")?)
        .attribute_definitions(attribute("day")?)
        .attribute_definitions(attribute("due")?)
        .attribute_definitions(attribute("next_at")?)
        .key_schema(key("PK", KeyType::Hash)?)
        .key_schema(key("SK", KeyType::Range)?)
        .global_secondary_indexes(index(DAY_INDEX, "day", "SK", ProjectionType::All)?)
        // Webhook deliveries waiting for an attempt (sparse: only pending ones carry `due`).
        .global_secondary_indexes(index(super::hooks::DUE_INDEX, "due", "next_at", ProjectionType::All)?)
        .send()
        .await;
    with_ttl(client, table, created).await
}

/// The UTC date of `at`, as the day index (and the reminders' partitions) name it.
pub(super) fn day_of(at: Timestamp) -> String {
    at.to_string().chars().take(10).collect()
}

/// An event as the audit log stores it.
pub(super) fn event_item(event: &Event, keep_days: Option<u32>) -> Result<Item, StoreError> {
    let body = serde_json::to_string(event).map_err(|e| StoreError::Internal(format!("event not storable: {e}")))?;
    let mut item = HashMap::from([
        ("PK".to_string(), s(event.license_key.as_str())),
        ("SK".to_string(), s(&event.order)),
        ("day".to_string(), s(&day_of(event.at))),
        ("type".to_string(), s(event.kind.as_str())),
        ("event".to_string(), s(&body)),
    ]);
    if let Some(days) = keep_days {
        item.insert("ttl".into(), AttributeValue::N(event.at.plus_days(days).unix().to_string()));
    }
    Ok(item)
}

/// Where a listing goes on: after an event (its license and order key), or, for every license's
/// events, at the newest of a day (`d`) when a call ran out of queries between days.
#[derive(Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Cursor {
    #[serde(rename = "k", default, skip_serializing_if = "Option::is_none")]
    license_key: Option<String>,
    #[serde(rename = "o", default, skip_serializing_if = "Option::is_none")]
    order: Option<String>,
    #[serde(rename = "d", default, skip_serializing_if = "Option::is_none")]
    day: Option<String>,
}

impl Cursor {
    fn encoded(&self) -> Option<String> {
        Some(URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).ok()?))
    }

    fn after(item: &Item) -> Option<String> {
        let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
        Cursor { license_key: Some(text("PK")?), order: Some(text("SK")?), day: None }.encoded()
    }
}

/// The time of an order key as [`crate::events::order_key`] writes them (`<time>#<40 digits>#<3
/// digits>`); `None` for anything else.
fn order_time(order: &str) -> Option<Timestamp> {
    let (at, rest) = order.split_once('#')?;
    let (sequence, place) = rest.split_once('#')?;
    let digits = |text: &str, n: usize| text.len() == n && text.bytes().all(|b| b.is_ascii_digit());
    let time = Timestamp::parse(at).ok().filter(|t| t.to_string() == at)?;
    (digits(sequence, 40) && digits(place, 3)).then_some(time)
}

/// Where a listing resumes: the exclusive start key, and the day (every license's events).
struct Resume {
    start: Option<Item>,
    day: Timestamp,
}

/// A cursor this listing handed out: after an event of the listed license (or of any, listing
/// every license's) inside the listing's time range, or a day inside it. Anything else is refused
/// before DynamoDB sees it (it refuses a start key outside the query, which would be a 500).
fn decode(cursor: &str, query: &EventQuery) -> Result<Resume, StoreError> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| StoreError::InvalidCursor)?;
    let cursor: Cursor = serde_json::from_slice(&bytes).map_err(|_| StoreError::InvalidCursor)?;
    let in_range = |at: Timestamp| at >= query.since && at <= query.until.plus_seconds(86_399);
    match (cursor.license_key, cursor.order, cursor.day, &query.license) {
        (Some(key), Some(order), None, listed) => {
            // Exactly the key and an order key as written (`LicenseKey::parse` would also take a
            // spelling DynamoDB does not store), between the query's bounds as DynamoDB compares.
            let parsed = LicenseKey::parse(key.as_str()).ok().filter(|k| k.as_str() == key);
            let parsed = parsed.ok_or(StoreError::InvalidCursor)?;
            let at = order_time(&order).ok_or(StoreError::InvalidCursor)?;
            let ours = listed.as_ref().is_none_or(|listed| *listed == parsed);
            let (from, to) = (query.since.to_string(), format!("{}#~", query.until));
            if !ours || order.as_str() < from.as_str() || order.as_str() > to.as_str() {
                return Err(StoreError::InvalidCursor);
            }
            let mut start = HashMap::from([("PK".to_string(), s(&key)), ("SK".to_string(), s(&order))]);
            if listed.is_none() {
                start.insert("day".into(), s(&day_of(at)));
            }
            Ok(Resume { start: Some(start), day: at })
        }
        (None, None, Some(day), None) => {
            let at = Timestamp::parse(&format!("{day}T00:00:00Z")).map_err(|_| StoreError::InvalidCursor)?;
            if day_of(at) != day || !in_range(at.plus_seconds(86_399)) || at > query.until {
                return Err(StoreError::InvalidCursor);
            }
            Ok(Resume { start: None, day: at })
        }
        _ => Err(StoreError::InvalidCursor),
    }
}

impl DynamoStore {
    pub fn events_table(&self) -> &str {
        &self.events_table
    }

    /// Writes `events` to the audit log (at most 25 per call): a put per event, so writing
    /// one again (a redelivered change) stores the same item.
    pub(super) async fn put_events(&self, events: &[&Event], keep_days: Option<u32>) -> Result<(), StoreError> {
        let mut requests = Vec::new();
        for event in events {
            let put = built(PutRequest::builder().set_item(Some(event_item(event, keep_days)?)).build())?;
            requests.push(WriteRequest::builder().put_request(put).build());
        }
        for attempt in 0..6u32 {
            if requests.is_empty() {
                return Ok(());
            }
            if attempt > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(25 << attempt)).await;
            }
            self.count_round_trip();
            let output = self
                .client
                .batch_write_item()
                .request_items(&self.events_table, requests.clone())
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
                .map_err(classify)?;
            self.count_writes(output.consumed_capacity());
            // Throttled puts come back unprocessed: sent again after a pause.
            requests = output.unprocessed_items.and_then(|mut u| u.remove(&self.events_table)).unwrap_or_default();
        }
        Err(StoreError::Unavailable("the audit log kept throttling a write".into()))
    }

    /// Events newest first: one license's (its partition), or every license's (the day index,
    /// day by day back from `until`).
    pub(super) async fn query_events(
        &self,
        query: &EventQuery,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<EventPage, StoreError> {
        let Resume { mut start, mut day } = match cursor {
            Some(cursor) => decode(cursor, query)?,
            None => Resume { start: None, day: query.until },
        };
        let (from, to) = (query.since.to_string(), format!("{}#~", query.until));
        let mut events = Vec::new();
        for _ in 0..QUERIES_PER_CALL {
            let mut request = self
                .client
                .query()
                .table_name(&self.events_table)
                .scan_index_forward(false)
                .limit((limit as usize - events.len()) as i32)
                .set_exclusive_start_key(start.take())
                .expression_attribute_names("#sk", "SK")
                .expression_attribute_values(":from", s(&from))
                .expression_attribute_values(":to", s(&to))
                .return_consumed_capacity(ReturnConsumedCapacity::Total);
            request = match &query.license {
                Some(key) => request
                    .key_condition_expression("PK = :pk AND #sk BETWEEN :from AND :to")
                    .expression_attribute_values(":pk", s(key.as_str())),
                None => request
                    .index_name(DAY_INDEX)
                    .key_condition_expression("#day = :day AND #sk BETWEEN :from AND :to")
                    .expression_attribute_names("#day", "day")
                    .expression_attribute_values(":day", s(&day_of(day))),
            };
            if !query.types.is_empty() {
                let names: Vec<String> = (0..query.types.len()).map(|i| format!(":t{i}")).collect();
                request = request
                    .filter_expression(format!("#type IN ({})", names.join(", ")))
                    .expression_attribute_names("#type", "type");
                for (name, kind) in names.iter().zip(&query.types) {
                    request = request.expression_attribute_values(name, s(kind.as_str()));
                }
            }
            self.count_round_trip();
            let output = request.send().await.map_err(classify)?;
            self.count_reads(output.consumed_capacity());
            for item in output.items.unwrap_or_default() {
                let body = item.get("event").and_then(|v| v.as_s().ok());
                let event = body.and_then(|b| serde_json::from_str(b).ok());
                events.push(event.ok_or_else(|| StoreError::Internal("an unreadable event".into()))?);
            }
            let earlier_day = query.license.is_none() && day_of(day) > day_of(query.since);
            let previous_day = || Cursor { day: Some(day_of(day.plus_seconds(-86_400))), ..Cursor::default() };
            match output.last_evaluated_key {
                Some(last) if events.len() >= limit as usize => {
                    return Ok(EventPage { events, next_cursor: Cursor::after(&last) })
                }
                None if events.len() >= limit as usize => {
                    let next = earlier_day.then(|| previous_day().encoded()).flatten();
                    return Ok(EventPage { events, next_cursor: next });
                }
                Some(last) => start = Some(last),
                None if earlier_day => day = day.plus_seconds(-86_400),
                None => return Ok(EventPage { events, next_cursor: None }),
            }
        }
        // Out of queries for this call: the next goes on from here.
        let next = match start {
            Some(key) => Cursor::after(&key),
            None => Cursor { day: Some(day_of(day)), ..Cursor::default() }.encoded(),
        };
        Ok(EventPage { events, next_cursor: next })
    }
}
