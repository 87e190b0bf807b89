//! Webhook endpoints and deliveries, in the audit log's table.
//!
//! - An endpoint: `PK` `H#endpoints`, `SK` its id; `endpoint` (JSON), `secret`, and after a
//!   rotation `previous_secret` / `previous_until`.
//! - A delivery: `PK` `H#<endpoint id>`, `SK` its event's order key and id; `delivery` (JSON:
//!   status, attempts), `body` (the payload), `next_at`, and while pending `due` = `due`, which
//!   puts it in the sparse `ByDue` index (`due`, `next_at`) that finds what is due.

use super::errors::{classify, conditional_error};
use super::records::{s, Item};
use super::DynamoStore;
use crate::events::Event;
use crate::store::{StoreError, WriteError};
use crate::time::Timestamp;
use crate::webhooks::deliver::{self, Policy};
use crate::webhooks::sign::{signature_header, Secret};
use crate::webhooks::{Attempt, Delivery, DeliveryStatus, Endpoint, Signing};
use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity, ReturnValue};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use std::collections::HashMap;

pub(super) const DUE_INDEX: &str = "ByDue";
const ENDPOINTS_PK: &str = "H#endpoints";
/// How many endpoints a deployment may have (each event is offered to each).
pub const MAX_ENDPOINTS: usize = 50;
/// How long a claimed delivery is left to its round before another may attempt it (more than an
/// attempt's timeout and its recording).
const CLAIM_SECONDS: i64 = 60;
/// How long a delivery is kept after its last attempt (delivered, or failed and replayable).
pub const DELIVERY_KEEP_DAYS: u32 = 30;

fn text<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name).and_then(|v| v.as_s().ok()).map(String::as_str)
}

fn unreadable(what: &str) -> StoreError {
    StoreError::Internal(format!("an unreadable {what} item"))
}

fn endpoint_item(signing: &Signing) -> Result<Item, StoreError> {
    let endpoint = serde_json::to_string(&signing.endpoint).map_err(|e| StoreError::Internal(e.to_string()))?;
    let mut item = HashMap::from([
        ("PK".to_string(), s(ENDPOINTS_PK)),
        ("SK".to_string(), s(&signing.endpoint.id)),
        ("endpoint".to_string(), s(&endpoint)),
        ("secret".to_string(), s(&signing.secret.as_text())),
        ("version".to_string(), AttributeValue::N(signing.version.to_string())),
    ]);
    if let Some((previous, until)) = &signing.previous {
        item.insert("previous_secret".into(), s(&previous.as_text()));
        item.insert("previous_until".into(), s(&until.to_string()));
    }
    Ok(item)
}

fn signing_from(item: &Item) -> Result<Signing, StoreError> {
    let endpoint: Endpoint = serde_json::from_str(text(item, "endpoint").ok_or_else(|| unreadable("endpoint"))?)
        .map_err(|_| unreadable("endpoint"))?;
    let secret = text(item, "secret").and_then(Secret::parse).ok_or_else(|| unreadable("endpoint"))?;
    let previous = match (text(item, "previous_secret").and_then(Secret::parse), text(item, "previous_until")) {
        (Some(previous), Some(until)) => Some((previous, Timestamp::parse(until).map_err(|_| unreadable("endpoint"))?)),
        _ => None,
    };
    let version = item.get("version").and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok()).unwrap_or(0);
    Ok(Signing { endpoint, secret, previous, version })
}

fn delivery_item(delivery: &Delivery) -> Result<Item, StoreError> {
    let json = serde_json::to_string(delivery).map_err(|e| StoreError::Internal(e.to_string()))?;
    let mut item = HashMap::from([
        ("PK".to_string(), s(&format!("H#{}", delivery.endpoint_id))),
        ("SK".to_string(), s(&format!("{}#{}", delivery.order, delivery.event_id))),
        ("delivery".to_string(), s(&json)),
        ("body".to_string(), s(&delivery.body)),
    ]);
    if let Some(next) = delivery.next_attempt_at {
        item.insert("next_at".into(), s(&next.to_string()));
    }
    if delivery.status == DeliveryStatus::Pending {
        item.insert("due".into(), s("due"));
    }
    item.insert("status".into(), s(status_name(delivery.status)));
    // Finished deliveries expire (TTL) a while after their last attempt; pending ones never.
    if delivery.status != DeliveryStatus::Pending {
        let last = delivery.attempts.last().map_or(Timestamp::now(), |a| a.at);
        item.insert("ttl".into(), AttributeValue::N(last.plus_days(DELIVERY_KEEP_DAYS).unix().to_string()));
    }
    Ok(item)
}

fn status_name(status: DeliveryStatus) -> &'static str {
    match status {
        DeliveryStatus::Pending => "pending",
        DeliveryStatus::Delivered => "delivered",
        DeliveryStatus::Failed => "failed",
    }
}

fn delivery_from(item: &Item) -> Result<Delivery, StoreError> {
    let mut delivery: Delivery = serde_json::from_str(text(item, "delivery").ok_or_else(|| unreadable("delivery"))?)
        .map_err(|_| unreadable("delivery"))?;
    let sk = text(item, "SK").ok_or_else(|| unreadable("delivery"))?;
    delivery.order = sk.strip_suffix(&format!("#{}", delivery.event_id)).unwrap_or(sk).to_string();
    delivery.body = text(item, "body").unwrap_or("{}").to_string();
    Ok(delivery)
}

impl DynamoStore {
    /// Saves a new endpoint (`new`: refused if the id exists), or a change of one over the
    /// version it read (refused if it changed or was deleted meanwhile); the saved version is
    /// one more.
    pub async fn put_endpoint(&self, signing: &Signing, new: bool) -> Result<(), WriteError> {
        let saved = Signing { version: if new { 0 } else { signing.version + 1 }, ..signing.clone() };
        let put = self.client.put_item().table_name(&self.events_table).set_item(Some(endpoint_item(&saved)?));
        let put = match new {
            true => put.condition_expression("attribute_not_exists(PK)"),
            false => put
                .condition_expression("version = :read")
                .expression_attribute_values(":read", AttributeValue::N(signing.version.to_string())),
        };
        self.count_round_trip();
        put.send().await.map_err(conditional_error)?;
        Ok(())
    }

    /// Every endpoint, oldest first (ids sort by creation).
    pub async fn endpoints(&self) -> Result<Vec<Signing>, StoreError> {
        self.count_round_trip();
        let output = self
            .client
            .query()
            .table_name(&self.events_table)
            .key_condition_expression("PK = :pk")
            .expression_attribute_values(":pk", s(ENDPOINTS_PK))
            .consistent_read(true)
            .limit(MAX_ENDPOINTS as i32 + 1)
            .send()
            .await
            .map_err(classify)?;
        output.items.unwrap_or_default().iter().map(signing_from).collect()
    }

    pub async fn endpoint(&self, id: &str) -> Result<Option<Signing>, StoreError> {
        self.count_round_trip();
        let output = self
            .client
            .get_item()
            .table_name(&self.events_table)
            .key("PK", s(ENDPOINTS_PK))
            .key("SK", s(id))
            .consistent_read(true)
            .send()
            .await
            .map_err(classify)?;
        output.item.as_ref().map(signing_from).transpose()
    }

    /// Deletes an endpoint: whether there was one. Its deliveries stay (the vendor can still read
    /// them) and no more are made.
    pub async fn delete_endpoint(&self, id: &str) -> Result<bool, StoreError> {
        self.count_round_trip();
        let output = self
            .client
            .delete_item()
            .table_name(&self.events_table)
            .key("PK", s(ENDPOINTS_PK))
            .key("SK", s(id))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(classify)?;
        Ok(output.attributes.is_some())
    }

    /// Makes deliveries, each once: a delivery already made (a redelivered event) is left as it is.
    pub async fn enqueue(&self, deliveries: &[Delivery]) -> Result<(), StoreError> {
        for delivery in deliveries {
            self.count_round_trip();
            let put = self
                .client
                .put_item()
                .table_name(&self.events_table)
                .set_item(Some(delivery_item(delivery)?))
                .condition_expression("attribute_not_exists(PK)")
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await;
            match put.map_err(conditional_error) {
                Ok(output) => self.count_writes(output.consumed_capacity()),
                Err(WriteError::Conflict) => {}
                Err(WriteError::Store(err)) => return Err(err),
            }
        }
        Ok(())
    }

    /// Deliveries due by `now`, soonest first, at most `limit`.
    pub async fn due_deliveries(&self, now: Timestamp, limit: u32) -> Result<Vec<Delivery>, StoreError> {
        self.count_round_trip();
        let output = self
            .client
            .query()
            .table_name(&self.events_table)
            .index_name(DUE_INDEX)
            .key_condition_expression("#due = :due AND next_at <= :now")
            .expression_attribute_names("#due", "due")
            .expression_attribute_values(":due", s("due"))
            .expression_attribute_values(":now", s(&now.to_string()))
            .limit(limit as i32)
            .send()
            .await
            .map_err(classify)?;
        output.items.unwrap_or_default().iter().map(delivery_from).collect()
    }

    /// Saves a delivery after an attempt, if nobody else attempted it since it was read as due at
    /// `was_due` (two runners never both record the same attempt).
    pub async fn save_delivery(&self, delivery: &Delivery, was_due: Timestamp) -> Result<(), WriteError> {
        self.count_round_trip();
        self.client
            .put_item()
            .table_name(&self.events_table)
            .set_item(Some(delivery_item(delivery)?))
            .condition_expression("next_at = :was")
            .expression_attribute_values(":was", s(&was_due.to_string()))
            .send()
            .await
            .map_err(conditional_error)?;
        Ok(())
    }

    /// An endpoint's deliveries, newest first, optionally of one status.
    pub async fn deliveries(
        &self,
        endpoint_id: &str,
        status: Option<DeliveryStatus>,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<(Vec<Delivery>, Option<String>), StoreError> {
        self.deliveries_read(endpoint_id, status, limit, cursor, false).await
    }

    async fn deliveries_read(
        &self,
        endpoint_id: &str,
        status: Option<DeliveryStatus>,
        limit: u32,
        cursor: Option<&str>,
        consistent: bool,
    ) -> Result<(Vec<Delivery>, Option<String>), StoreError> {
        let pk = format!("H#{endpoint_id}");
        let start = match cursor {
            None => None,
            Some(cursor) => {
                let sk = URL_SAFE_NO_PAD.decode(cursor).ok().and_then(|b| String::from_utf8(b).ok());
                let sk = sk.filter(|sk| !sk.is_empty() && sk.len() <= 300).ok_or(StoreError::InvalidCursor)?;
                Some(HashMap::from([("PK".to_string(), s(&pk)), ("SK".to_string(), s(&sk))]))
            }
        };
        let mut found = Vec::new();
        let mut start = start;
        // A status filter can leave pages sparse: a few queries fill one.
        for _ in 0..10 {
            let mut query = self
                .client
                .query()
                .table_name(&self.events_table)
                .key_condition_expression("PK = :pk")
                .expression_attribute_values(":pk", s(&pk))
                .scan_index_forward(false)
                .consistent_read(consistent)
                .limit((limit as usize - found.len()) as i32)
                .set_exclusive_start_key(start.take());
            if let Some(status) = status {
                query = query
                    .filter_expression("#status = :status")
                    .expression_attribute_names("#status", "status")
                    .expression_attribute_values(":status", s(status_name(status)));
            }
            self.count_round_trip();
            let output = query.send().await.map_err(classify)?;
            for item in output.items.unwrap_or_default() {
                found.push(delivery_from(&item)?);
            }
            match output.last_evaluated_key {
                Some(last) if found.len() < limit as usize => start = Some(last),
                Some(last) => {
                    let sk = last.get("SK").and_then(|v| v.as_s().ok()).map(|sk| URL_SAFE_NO_PAD.encode(sk));
                    return Ok((found, sk));
                }
                None => return Ok((found, None)),
            }
        }
        let next = start.and_then(|key| key.get("SK").and_then(|v| v.as_s().ok()).map(|sk| URL_SAFE_NO_PAD.encode(sk)));
        Ok((found, next))
    }

    /// Sends an endpoint's failed deliveries again from `now` (at most `max`): how many.
    pub async fn replay_failed(&self, endpoint_id: &str, now: Timestamp, max: u32) -> Result<usize, StoreError> {
        let (failed, _) = self.deliveries_read(endpoint_id, Some(DeliveryStatus::Failed), max, None, true).await?;
        let mut replayed = 0;
        for delivery in failed {
            let mut item = delivery_item(&delivery.clone().replayed(now))?;
            item.insert("next_at".into(), s(&now.to_string()));
            self.count_round_trip();
            let put = self
                .client
                .put_item()
                .table_name(&self.events_table)
                .set_item(Some(item))
                // Still failed as read (a concurrent replay may have delivered it meanwhile).
                .condition_expression("#status = :failed")
                .expression_attribute_names("#status", "status")
                .expression_attribute_values(":failed", s(status_name(DeliveryStatus::Failed)))
                .send()
                .await;
            match put.map_err(conditional_error) {
                Ok(_) => replayed += 1,
                Err(WriteError::Conflict) => {}
                Err(WriteError::Store(err)) => return Err(err),
            }
        }
        Ok(replayed)
    }
}

impl DynamoStore {
    /// The deliveries `events` make: one per event and per enabled endpoint that wants its type.
    pub(super) async fn enqueue_events(&self, events: &[&Event]) -> Result<usize, StoreError> {
        if events.is_empty() {
            return Ok(0);
        }
        let endpoints = self.endpoints().await?;
        let mut deliveries = Vec::new();
        for event in events {
            let body = serde_json::to_string(event).map_err(|e| StoreError::Internal(e.to_string()))?;
            for signing in endpoints.iter().filter(|s| s.endpoint.wants(event.kind)) {
                deliveries.push(Delivery {
                    endpoint_id: signing.endpoint.id.clone(),
                    event_id: event.id.clone(),
                    kind: event.kind,
                    status: DeliveryStatus::Pending,
                    next_attempt_at: Some(event.at),
                    attempts: Vec::new(),
                    attempts_before_replay: 0,
                    order: event.order.clone(),
                    body: body.clone(),
                });
            }
        }
        self.enqueue(&deliveries).await?;
        Ok(deliveries.len())
    }

    /// Attempts the deliveries due by `now` (at most `limit`, concurrently) and records each
    /// attempt: how many were claimed and attempted. Each is claimed first (its next attempt
    /// moved past this one's timeout, on the condition that it is still as read), so rounds
    /// running at once (a batch's, the schedule's, a stale index read again) never both send it.
    /// A deleted endpoint's deliveries fail at once; a disabled one's wait an hour, unattempted.
    pub async fn deliver_due(&self, now: Timestamp, policy: Policy, limit: u32) -> Result<usize, StoreError> {
        let due = self.due_deliveries(now, limit).await?;
        if due.is_empty() {
            return Ok(0);
        }
        let endpoints: HashMap<String, Signing> =
            self.endpoints().await?.into_iter().map(|s| (s.endpoint.id.clone(), s)).collect();
        // Signed at the time it is sent (receivers refuse a timestamp minutes off their clock),
        // whatever `now` the schedule is read at.
        let sent_at = Timestamp::now();
        let claim_until = now.plus_seconds(CLAIM_SECONDS);
        let mut sending = tokio::task::JoinSet::new();
        let mut claimed = Vec::new();
        for delivery in due {
            let was_due = delivery.next_attempt_at.unwrap_or(now);
            let signing = match endpoints.get(&delivery.endpoint_id) {
                Some(signing) if signing.endpoint.enabled => signing,
                Some(_) => {
                    let paused = Delivery { next_attempt_at: Some(now.plus_seconds(3_600)), ..delivery };
                    self.save_logged(&paused, was_due).await;
                    continue;
                }
                None => {
                    let orphan = Delivery { status: DeliveryStatus::Failed, next_attempt_at: None, ..delivery };
                    self.save_logged(&orphan, was_due).await;
                    continue;
                }
            };
            let claim = Delivery { next_attempt_at: Some(claim_until), ..delivery.clone() };
            match self.save_delivery(&claim, was_due).await {
                Ok(()) => {}
                Err(WriteError::Conflict) => continue,
                Err(WriteError::Store(err)) => {
                    tracing::warn!(event = %delivery.event_id, error = %err, "a delivery not claimed; the next round tries");
                    continue;
                }
            }
            let target = deliver::target(&signing.endpoint.url, policy).map_err(|e| format!("the endpoint's URL {e}"));
            let headers: Vec<(&'static str, String)> = vec![
                ("webhook-id", delivery.event_id.clone()),
                ("webhook-timestamp", sent_at.unix().to_string()),
                (
                    "webhook-signature",
                    signature_header(&signing.secrets(now), &delivery.event_id, sent_at.unix(), &delivery.body),
                ),
            ];
            let body = delivery.body.clone();
            let index = claimed.len();
            claimed.push(delivery);
            sending.spawn(async move {
                let (outcome, took) = match target {
                    Ok(target) => deliver::post(&target, &headers, &body, policy).await,
                    Err(why) => (Err(why), std::time::Duration::ZERO),
                };
                (index, outcome, took)
            });
        }
        while let Some(joined) = sending.join_next().await {
            let Ok((index, outcome, took)) = joined else { continue };
            let attempt = Attempt {
                at: now,
                status: outcome.as_ref().ok().copied(),
                error: outcome.err(),
                latency_ms: took.as_millis() as u64,
            };
            let claimed_delivery = Delivery { next_attempt_at: Some(claim_until), ..claimed[index].clone() };
            self.save_logged(&claimed_delivery.after(attempt), claim_until).await;
        }
        Ok(claimed.len())
    }

    /// Saves a delivery, logging (not returning) a failure: one delivery's save failing must not
    /// throw away the round's other outcomes. An attempt not recorded is made again when its
    /// claim runs out.
    async fn save_logged(&self, delivery: &Delivery, was_due: Timestamp) {
        match self.save_delivery(delivery, was_due).await {
            Ok(()) | Err(WriteError::Conflict) => {}
            Err(WriteError::Store(err)) => {
                tracing::warn!(event = %delivery.event_id, error = %err, "a delivery's attempt not recorded")
            }
        }
    }
}
