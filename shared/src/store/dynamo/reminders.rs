//! `license.expiring`: reminders a vendor-set number of days before a license ends (e.g. 14 and 3;
//! `KEYGATE_EXPIRY_REMINDER_DAYS`), found without scanning anything.
//!
//! The events function sees every license change on the stream; when a change moves a license's
//! end (issued, patched, first activated, suspended, revoked), it deletes the reminders of the old
//! end and writes those of the new one, each an item in the audit log's table under the day it is
//! due: `PK` `X#<date>`, `SK` `<license key>#<days>`. The schedule's tick reads today's and
//! yesterday's partitions (one query each), records the event for each reminder and deletes it:
//! a reminder fires once, and its event's id is stable if a tick repeats it.

use super::audit::day_of as day;
use super::errors::classify;
use super::records::{s, Item};
use super::DynamoStore;
use crate::events::{order_key, Actor, Change, Event, EventType, Image};
use crate::input::{LicenseKey, Product};
use crate::model::{License, LicenseStatus};
use crate::store::StoreError;
use crate::time::Timestamp;
use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::json;
use std::collections::HashMap;

/// The end a reminder counts down to: only an active license's.
fn end(license: Option<&License>) -> Option<Timestamp> {
    license.filter(|l| l.status == LicenseStatus::Active).and_then(crate::rules::expires_at)
}

fn reminder_key(ends: Timestamp, days: u32, key: &LicenseKey) -> (String, String) {
    (format!("X#{}", day(ends.plus_seconds(-i64::from(days) * 86_400))), format!("{key}#{days}"))
}

impl DynamoStore {
    /// Moves a license's reminders when `change` moves its end.
    pub(super) async fn move_reminders(&self, change: &Change) -> Result<(), StoreError> {
        if self.reminder_days.is_empty() {
            return Ok(());
        }
        let license = |image: &Option<Image>| match image {
            Some(Image::License(license)) => Some(license.as_ref().clone()),
            _ => None,
        };
        let (before, after) = (license(&change.before), license(&change.after));
        let (old, new) = (end(before.as_ref()), end(after.as_ref()));
        let Some(key) = after.as_ref().or(before.as_ref()).map(|l| l.license_key.clone()) else { return Ok(()) };
        if old == new {
            return Ok(());
        }
        for days in self.reminder_days.clone() {
            if let Some(ends) = old {
                let (pk, sk) = reminder_key(ends, days, &key);
                self.count_round_trip();
                let delete =
                    self.client.delete_item().table_name(&self.events_table).key("PK", s(&pk)).key("SK", s(&sk));
                delete.send().await.map_err(classify)?;
            }
            let (Some(ends), Some(license)) = (new, after.as_ref()) else { continue };
            let due = ends.plus_seconds(-i64::from(days) * 86_400);
            // A reminder already past when the end was set is not sent (the license ends sooner).
            if due < change.at {
                continue;
            }
            let (pk, sk) = reminder_key(ends, days, &key);
            let item: Item = HashMap::from([
                ("PK".to_string(), s(&pk)),
                ("SK".to_string(), s(&sk)),
                ("license_key".to_string(), s(key.as_str())),
                ("product".to_string(), s(license.product.as_str())),
                ("ends".to_string(), s(&ends.to_string())),
                ("days".to_string(), AttributeValue::N(days.to_string())),
                ("ttl".to_string(), AttributeValue::N(due.plus_days(7).unix().to_string())),
            ]);
            self.count_round_trip();
            self.client
                .put_item()
                .table_name(&self.events_table)
                .set_item(Some(item))
                .send()
                .await
                .map_err(classify)?;
        }
        Ok(())
    }

    /// Sends the reminders due by `now` (today's and yesterday's, in case a day's ticks were
    /// missed): each becomes a `license.expiring` event (recorded, and delivered to the endpoints
    /// that want it), then is deleted. How many were sent.
    pub async fn remind_due(&self, now: Timestamp) -> Result<usize, StoreError> {
        // Reminders turned off: none sent (those written before stay until their TTL), and no
        // query made.
        if self.reminder_days.is_empty() {
            return Ok(0);
        }
        let mut sent = 0;
        for date in [now.plus_seconds(-86_400), now] {
            self.count_round_trip();
            let output = self
                .client
                .query()
                .table_name(&self.events_table)
                .key_condition_expression("PK = :pk")
                .expression_attribute_values(":pk", s(&format!("X#{}", day(date))))
                .limit(100)
                .send()
                .await
                .map_err(classify)?;
            for item in output.items.unwrap_or_default() {
                let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
                let days: u32 = item.get("days").and_then(|v| v.as_n().ok()).and_then(|d| d.parse().ok()).unwrap_or(0);
                let (Ok(key), Ok(ends)) = (LicenseKey::parse(text("license_key")), Timestamp::parse(&text("ends")))
                else {
                    continue;
                };
                let event = Event {
                    id: format!("expiring.{key}.{}.{days}", ends.unix()),
                    kind: EventType::LicenseExpiring,
                    at: now,
                    license_key: key,
                    product: Product::parse(text("product")).ok(),
                    actor: Actor::System,
                    data: json!({"expires_at": ends, "days_before": days}),
                    request_id: None,
                    order: order_key(now, "0", days as usize % 1000),
                };
                self.put_events(&[&event], None).await?;
                self.enqueue_events(&[&event]).await?;
                self.count_round_trip();
                let delete = self.client.delete_item().table_name(&self.events_table);
                delete.key("PK", s(&text("PK"))).key("SK", s(&text("SK"))).send().await.map_err(classify)?;
                sent += 1;
            }
        }
        Ok(sent)
    }
}
