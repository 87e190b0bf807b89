//! The audit log's vendor routes: `GET /v1/licenses/{license_key}/events` and `GET /v1/events`.

use super::issue::{page_limit, parse_key};
use super::refusals::{store_error, Refusal};
use super::{App, Reply};
use crate::error::ApiError;
use crate::events::EventType;
use crate::input::LicenseKey;
use crate::store::{EventQuery, Store};
use crate::time::Timestamp;
use lambda_http::http::StatusCode;
use serde::{Deserialize, Serialize};

const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1_000;
/// How far back every license's events go when `since` is not given.
pub const DEFAULT_DAYS_BACK: u32 = 30;

/// `type` (comma-separated), `since`, `until`, `limit`, `cursor`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    #[serde(default, rename = "type")]
    types: Option<String>,
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    until: Option<String>,
    #[serde(default)]
    limit: Option<String>,
    #[serde(default)]
    cursor: Option<String>,
}

#[derive(Serialize)]
struct Listed<'a> {
    events: &'a [serde_json::Value],
    next_cursor: Option<&'a str>,
}

fn at(field: &str, text: Option<&str>) -> Result<Option<Timestamp>, ApiError> {
    text.map(|t| Timestamp::parse(t).map_err(|_| ApiError::field(field, "must be a time like 2026-11-26T09:30:00Z")))
        .transpose()
}

fn selection(license: Option<LicenseKey>, query: &EventsQuery, now: Timestamp) -> Result<EventQuery, ApiError> {
    let mut types = Vec::new();
    for name in query.types.as_deref().unwrap_or("").split(',').filter(|n| !n.is_empty()) {
        let kind = EventType::parse(name.trim())
            .ok_or_else(|| ApiError::field("type", format!("`{name}` is not an event type (docs/events.md)")))?;
        if !types.contains(&kind) {
            types.push(kind);
        }
    }
    let given_since = at("since", query.since.as_deref())?;
    // Until now, or (a `since` still to come) an empty range, not a refusal.
    let until = match at("until", query.until.as_deref())? {
        Some(until) => until,
        None => given_since.map_or(now, |since| since.max(now)),
    };
    // One license's events go back to its first; every license's, a bounded number of days.
    let since = given_since.unwrap_or(match license {
        Some(_) => Timestamp::from_unix(0),
        None => until.plus_seconds(-i64::from(DEFAULT_DAYS_BACK) * 86_400),
    });
    if since > until {
        return Err(ApiError::field("since", "is after `until`"));
    }
    if query.cursor.as_ref().is_some_and(|c| c.len() > 1_024) {
        return Err(ApiError::field("cursor", "is not a cursor this listing handed out"));
    }
    Ok(EventQuery { license, types, since, until })
}

/// `GET /v1/licenses/{license_key}/events`: the license's events, newest first.
pub(super) async fn license_events<S: Store>(
    app: &App<S>,
    raw_key: &str,
    query: EventsQuery,
) -> Result<Reply, ApiError> {
    let key = parse_key(raw_key)?;
    let selected = selection(Some(key.clone()), &query, app.now())?;
    let limit = page_limit(query.limit.as_deref(), DEFAULT_PAGE, MAX_PAGE)?;
    let page = app.store.list_events(&selected, limit, query.cursor.as_deref()).await.map_err(store_error)?;
    // No event at all: a license that never was is a 404, not an empty history.
    if page.events.is_empty() && query.cursor.is_none() {
        let license = app.store.licenses(std::slice::from_ref(&key)).await.map_err(store_error)?;
        if license.is_empty() {
            return Err(Refusal::LicenseNotFound(&key).into());
        }
    }
    Reply::json(StatusCode::OK, &Listed { events: &page.events, next_cursor: page.next_cursor.as_deref() })
}

/// `GET /v1/events`: every license's events, newest first.
pub(super) async fn events<S: Store>(app: &App<S>, query: EventsQuery) -> Result<Reply, ApiError> {
    let selected = selection(None, &query, app.now())?;
    let limit = page_limit(query.limit.as_deref(), DEFAULT_PAGE, MAX_PAGE)?;
    let page = app.store.list_events(&selected, limit, query.cursor.as_deref()).await.map_err(store_error)?;
    Reply::json(StatusCode::OK, &Listed { events: &page.events, next_cursor: page.next_cursor.as_deref() })
}
