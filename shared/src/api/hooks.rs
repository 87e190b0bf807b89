//! The webhook endpoints' vendor routes: make, list, show, change, delete an endpoint, rotate
//! its secret, read its deliveries (every attempt) and replay the ones that failed for good.

use super::issue::page_limit;
use super::refusals::store_error;
use super::{App, Reply};
use crate::error::{ApiError, ErrorCode};
use crate::events::EventType;
use crate::input::random_id;
use crate::store::{DynamoStore, Store, WriteError, MAX_ENDPOINTS};
use crate::webhooks::sign::Secret;
use crate::webhooks::{deliver, DeliveryStatus, Endpoint, Signing, ROTATION_OVERLAP_SECONDS};
use lambda_http::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// `POST /v1/webhooks`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewEndpoint {
    url: String,
    #[serde(default)]
    event_types: Option<Vec<String>>,
    #[serde(default)]
    enabled: Option<bool>,
}

/// `PATCH /v1/webhooks/{id}`: only the fields given change (`null` is not given; a patch that
/// gives none changes nothing).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointPatch {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    event_types: Option<Vec<String>>,
    #[serde(default)]
    enabled: Option<bool>,
}

/// `GET /v1/webhooks/{id}/deliveries`: `status`, `limit`, `cursor`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesQuery {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    limit: Option<String>,
    #[serde(default)]
    cursor: Option<String>,
}

fn hooks<S: Store>(app: &App<S>) -> Result<&DynamoStore, ApiError> {
    app.store.webhooks().ok_or_else(|| ApiError::internal("webhooks are kept only in DynamoDB"))
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(ErrorCode::WebhookNotFound, format!("no webhook endpoint with id {id}"))
}

fn checked_url<S: Store>(app: &App<S>, url: &str) -> Result<String, ApiError> {
    deliver::target(url, app.webhooks).map_err(|why| ApiError::field("url", why))?;
    Ok(url.to_string())
}

fn event_types(names: &[String]) -> Result<Vec<EventType>, ApiError> {
    let mut kinds = Vec::new();
    for name in names {
        let kind = EventType::parse(name)
            .ok_or_else(|| ApiError::field("event_types", format!("`{name}` is not an event type (docs/events.md)")))?;
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    Ok(kinds)
}

/// An id as this API hands them out, before it is used in a key.
fn checked_id(id: &str) -> Result<&str, ApiError> {
    let hex = id.strip_prefix("whk_").filter(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()));
    hex.map(|_| id).ok_or_else(|| not_found(id))
}

async fn signing<S: Store>(app: &App<S>, id: &str) -> Result<Signing, ApiError> {
    let id = checked_id(id)?;
    hooks(app)?.endpoint(id).await.map_err(store_error)?.ok_or_else(|| not_found(id))
}

#[derive(Serialize)]
struct Shown<'a> {
    webhook: &'a Endpoint,
}

pub(super) async fn create<S: Store>(app: &App<S>, new: NewEndpoint) -> Result<Reply, ApiError> {
    let url = checked_url(app, &new.url)?;
    let event_types = event_types(new.event_types.as_deref().unwrap_or_default())?;
    let store = hooks(app)?;
    if store.endpoints().await.map_err(store_error)?.len() >= MAX_ENDPOINTS {
        let message = format!("a deployment has at most {MAX_ENDPOINTS} webhook endpoints: delete one first");
        return Err(ApiError::new(ErrorCode::WebhookLimitReached, message));
    }
    let now = app.now();
    let id = random_id("whk").map_err(ApiError::internal)?;
    let enabled = new.enabled.unwrap_or(true);
    let endpoint = Endpoint { id, url, event_types, enabled, created_at: now, updated_at: now };
    let secret = Secret::generate().map_err(ApiError::internal)?;
    let signing = Signing { endpoint, secret, previous: None, version: 0 };
    match store.put_endpoint(&signing, true).await {
        Ok(()) => {}
        Err(WriteError::Conflict) => return Err(ApiError::internal("a fresh endpoint id was taken")),
        Err(WriteError::Store(err)) => return Err(store_error(err)),
    }
    // The secret is shown this once: the receiver verifies deliveries with it.
    Reply::json(StatusCode::CREATED, &json!({"webhook": signing.endpoint, "secret": signing.secret.as_text()}))
}

pub(super) async fn list<S: Store>(app: &App<S>) -> Result<Reply, ApiError> {
    let endpoints = hooks(app)?.endpoints().await.map_err(store_error)?;
    let webhooks: Vec<&Endpoint> = endpoints.iter().map(|s| &s.endpoint).collect();
    Reply::json(StatusCode::OK, &json!({ "webhooks": webhooks }))
}

pub(super) async fn show<S: Store>(app: &App<S>, id: &str) -> Result<Reply, ApiError> {
    let signing = signing(app, id).await?;
    Reply::json(StatusCode::OK, &Shown { webhook: &signing.endpoint })
}

pub(super) async fn update<S: Store>(app: &App<S>, id: &str, patch: EndpointPatch) -> Result<Reply, ApiError> {
    let url = patch.url.as_deref().map(|url| checked_url(app, url)).transpose()?;
    let kinds = patch.event_types.as_deref().map(event_types).transpose()?;
    let mut signing = signing(app, id).await?;
    let before = signing.endpoint.clone();
    let endpoint = &mut signing.endpoint;
    endpoint.url = url.unwrap_or(endpoint.url.clone());
    endpoint.event_types = kinds.unwrap_or(endpoint.event_types.clone());
    endpoint.enabled = patch.enabled.unwrap_or(endpoint.enabled);
    // A patch that changes nothing writes nothing.
    if *endpoint != before {
        endpoint.updated_at = app.now();
        save(app, &signing).await?;
    }
    Reply::json(StatusCode::OK, &Shown { webhook: &signing.endpoint })
}

/// Saves a change over the version read: a concurrent change (or deletion) first makes it a 503
/// to retry (or a 404), never a silent undoing of the other.
async fn save<S: Store>(app: &App<S>, signing: &Signing) -> Result<(), ApiError> {
    match hooks(app)?.put_endpoint(signing, false).await {
        Ok(()) => Ok(()),
        Err(WriteError::Conflict) => {
            self::signing(app, &signing.endpoint.id).await?;
            Err(super::refusals::Refusal::ConcurrentUpdate.into())
        }
        Err(WriteError::Store(err)) => Err(store_error(err)),
    }
}

pub(super) async fn delete<S: Store>(app: &App<S>, id: &str) -> Result<Reply, ApiError> {
    let id = checked_id(id)?;
    if !hooks(app)?.delete_endpoint(id).await.map_err(store_error)? {
        return Err(not_found(id));
    }
    Reply::json(StatusCode::OK, &json!({ "deleted": id }))
}

/// A new secret; the previous one still signs deliveries (beside the new) for a day, so the
/// receiver can switch at its own pace.
pub(super) async fn rotate<S: Store>(app: &App<S>, id: &str) -> Result<Reply, ApiError> {
    let mut signing = signing(app, id).await?;
    let now = app.now();
    let until = now.plus_seconds(ROTATION_OVERLAP_SECONDS);
    let secret = Secret::generate().map_err(ApiError::internal)?;
    signing.previous = Some((std::mem::replace(&mut signing.secret, secret), until));
    signing.endpoint.updated_at = now;
    save(app, &signing).await?;
    Reply::json(StatusCode::OK, &json!({"secret": signing.secret.as_text(), "previous_secret_valid_until": until}))
}

pub(super) async fn deliveries<S: Store>(app: &App<S>, id: &str, query: DeliveriesQuery) -> Result<Reply, ApiError> {
    let status = match query.status.as_deref() {
        None => None,
        Some("pending") => Some(DeliveryStatus::Pending),
        Some("delivered") => Some(DeliveryStatus::Delivered),
        Some("failed") => Some(DeliveryStatus::Failed),
        Some(_) => return Err(ApiError::field("status", "is one of pending, delivered, failed")),
    };
    let limit = page_limit(query.limit.as_deref(), 50, 100)?;
    if query.cursor.as_ref().is_some_and(|c| c.len() > 512) {
        return Err(ApiError::field("cursor", "is not a cursor this listing handed out"));
    }
    let signing = signing(app, id).await?;
    let listed = hooks(app)?.deliveries(&signing.endpoint.id, status, limit, query.cursor.as_deref()).await;
    let (deliveries, next_cursor) = listed.map_err(store_error)?;
    Reply::json(StatusCode::OK, &json!({"deliveries": deliveries, "next_cursor": next_cursor}))
}

/// The deliveries that failed for good, sent again (from the next delivery round) on a fresh
/// schedule: at most 100 a call.
pub(super) async fn replay<S: Store>(app: &App<S>, id: &str) -> Result<Reply, ApiError> {
    let signing = signing(app, id).await?;
    let replayed = hooks(app)?.replay_failed(&signing.endpoint.id, app.now(), 100).await.map_err(store_error)?;
    Reply::json(StatusCode::OK, &json!({ "replayed": replayed }))
}
