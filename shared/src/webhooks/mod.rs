//! Webhooks: the audit log's events delivered to the vendor's endpoints, signed per Standard
//! Webhooks, retried with growing pauses for more than a day, every attempt recorded, and
//! deliveries that never succeeded kept for a replay the vendor asks for.
//!
//! A delivery is made for each event and each enabled endpoint that wants its type, when the
//! event is recorded (`DynamoStore::record`). Delivering is separate from recording: a failing
//! endpoint delays nothing but its own deliveries.

pub mod address;
pub mod deliver;
pub mod sign;

use crate::events::EventType;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};

/// An endpoint as the vendor sees it (its secret is shown once, when made or rotated).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    pub id: String,
    pub url: String,
    /// The event types it receives; empty: every type.
    pub event_types: Vec<EventType>,
    pub enabled: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Endpoint {
    pub fn wants(&self, kind: EventType) -> bool {
        self.enabled && (self.event_types.is_empty() || self.event_types.contains(&kind))
    }
}

/// An endpoint with what signs its deliveries: the current secret, and after a rotation the
/// previous one until `previous_until`.
#[derive(Debug, Clone)]
pub struct Signing {
    pub endpoint: Endpoint,
    pub secret: sign::Secret,
    pub previous: Option<(sign::Secret, Timestamp)>,
    /// Counts the endpoint's saves: a change is saved only over the version it read, so two
    /// changes at once (a patch and a rotation) never undo each other.
    pub version: u64,
}

impl Signing {
    /// The secrets a delivery at `now` is signed with.
    pub fn secrets(&self, now: Timestamp) -> Vec<&sign::Secret> {
        let previous = self.previous.as_ref().filter(|(_, until)| *until > now).map(|(secret, _)| secret);
        std::iter::once(&self.secret).chain(previous).collect()
    }
}

/// How long a rotated-out secret still signs deliveries beside the new one.
pub const ROTATION_OVERLAP_SECONDS: i64 = 86_400;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting for its next attempt (`next_attempt_at`).
    Pending,
    Delivered,
    /// Every attempt failed: kept for a replay.
    Failed,
}

/// One attempt: the answer's status (none when no answer came) or why it failed, and how long
/// it took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub latency_ms: u64,
}

impl Attempt {
    /// A 2xx answer is a delivery; anything else is tried again.
    pub fn delivered(&self) -> bool {
        self.status.is_some_and(|status| (200..300).contains(&status))
    }
}

/// One event's delivery to one endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub endpoint_id: String,
    pub event_id: String,
    #[serde(rename = "event_type")]
    pub kind: EventType,
    pub status: DeliveryStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<Timestamp>,
    pub attempts: Vec<Attempt>,
    /// How many of `attempts` came before the last replay (the retry schedule starts again).
    #[serde(default)]
    pub attempts_before_replay: usize,
    /// Where it sorts among the endpoint's deliveries (its event's order key): not shown.
    #[serde(skip)]
    pub order: String,
    /// The payload delivered (the event as the audit log keeps it): not shown in listings.
    #[serde(skip)]
    pub body: String,
}

/// Attempts a replayed delivery keeps from before the replay.
pub const KEPT_ATTEMPTS: usize = 16;

/// The pause after the `made`-th failed attempt before the next, in seconds; `None` once the
/// attempts are spent. 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h: eight attempts over 27½ hours.
pub fn retry_after(made: usize) -> Option<i64> {
    const PAUSES: [i64; 7] = [5, 300, 1_800, 7_200, 18_000, 36_000, 36_000];
    PAUSES.get(made.checked_sub(1)?).copied()
}

impl Delivery {
    /// The delivery after `attempt`: delivered, pending its next attempt, or failed for good.
    pub fn after(mut self, attempt: Attempt) -> Self {
        let at = attempt.at;
        let delivered = attempt.delivered();
        self.attempts.push(attempt);
        let made = self.attempts.len().saturating_sub(self.attempts_before_replay);
        (self.status, self.next_attempt_at) = match (delivered, retry_after(made)) {
            (true, _) => (DeliveryStatus::Delivered, None),
            (false, Some(pause)) => (DeliveryStatus::Pending, Some(at.plus_seconds(pause))),
            (false, None) => (DeliveryStatus::Failed, None),
        };
        self
    }

    /// The delivery sent again from `now`, on a fresh schedule (after it failed for good),
    /// keeping its last [`KEPT_ATTEMPTS`] attempts (an item must stay small, however often it is
    /// replayed).
    pub fn replayed(mut self, now: Timestamp) -> Self {
        let dropped = self.attempts.len().saturating_sub(KEPT_ATTEMPTS);
        self.attempts.drain(..dropped);
        self.attempts_before_replay = self.attempts.len();
        self.status = DeliveryStatus::Pending;
        self.next_attempt_at = Some(now);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(at: Timestamp) -> Attempt {
        Attempt { at, status: Some(500), error: None, latency_ms: 3 }
    }

    #[test]
    fn retries_span_more_than_a_day_then_the_delivery_fails_for_good() {
        let start = Timestamp::from_unix(1_800_000_000);
        let mut delivery = Delivery {
            endpoint_id: "whk_1".into(),
            event_id: "e.0".into(),
            kind: EventType::LicenseCreated,
            status: DeliveryStatus::Pending,
            next_attempt_at: Some(start),
            attempts: Vec::new(),
            attempts_before_replay: 0,
            order: String::new(),
            body: "{}".into(),
        };
        let mut at = start;
        while let Some(next) = delivery.next_attempt_at {
            at = next;
            delivery = delivery.after(failed(at));
        }
        assert_eq!(delivery.status, DeliveryStatus::Failed);
        assert_eq!(delivery.attempts.len(), 8);
        assert!(at.unix() - start.unix() > 86_400, "the last attempt comes more than a day after the first");
        // A replay starts the schedule again, keeping the attempts made.
        let replayed = delivery.clone().replayed(at).after(failed(at));
        assert_eq!((replayed.status, replayed.attempts.len()), (DeliveryStatus::Pending, 9));
        assert_eq!(replayed.next_attempt_at, Some(at.plus_seconds(5)));
        // However often it is replayed, it keeps a bounded history.
        let mut many = delivery.clone();
        for _ in 0..10 {
            many = many.replayed(at);
            while many.status == DeliveryStatus::Pending {
                many = many.after(failed(at));
            }
        }
        assert_eq!(many.attempts.len(), KEPT_ATTEMPTS + 8);
        let pending = Delivery { status: DeliveryStatus::Pending, attempts: vec![], ..delivery.clone() };
        let ok = pending.after(Attempt { at, status: Some(204), error: None, latency_ms: 1 });
        assert_eq!((ok.status, ok.next_attempt_at), (DeliveryStatus::Delivered, None));
        let redirect = Attempt { at, status: Some(301), error: None, latency_ms: 1 };
        assert!(!redirect.delivered(), "redirects are not followed, nor taken for a delivery");
    }

    #[test]
    fn an_endpoint_wants_its_types_while_enabled_and_a_rotated_secret_signs_for_a_day() {
        let now = Timestamp::from_unix(1_800_000_000);
        let endpoint = Endpoint {
            id: "whk_1".into(),
            url: "https://example.com/hook".into(),
            event_types: vec![EventType::DeviceActivated],
            enabled: true,
            created_at: now,
            updated_at: now,
        };
        assert!(endpoint.wants(EventType::DeviceActivated) && !endpoint.wants(EventType::LicenseCreated));
        let every = Endpoint { event_types: vec![], ..endpoint.clone() };
        assert!(every.wants(EventType::LicenseCreated));
        assert!(!Endpoint { enabled: false, ..every }.wants(EventType::LicenseCreated));
        let (new, old) = (sign::Secret::generate().unwrap(), sign::Secret::generate().unwrap());
        let signing =
            Signing { endpoint, secret: new.clone(), previous: Some((old.clone(), now.plus_seconds(60))), version: 0 };
        assert_eq!(signing.secrets(now), [&new, &old]);
        assert_eq!(signing.secrets(now.plus_seconds(60)), [&new]);
    }
}
