//! When a floating seat's heartbeat renews its lease: a third of the way to the lease's end (so two
//! more tries fit before it lapses), with jitter so many clients started together spread out.

use crate::decide::Status;
use std::time::Duration;

/// What a heartbeat reports.
#[derive(Debug, Clone)]
pub enum HeartbeatEvent {
    /// The lease was renewed.
    Renewed(Status),
    /// The seat is gone (another device took it after a lapse, or the license is no longer valid).
    SeatLost(Status),
    /// The server could not be reached; the lease runs on until it lapses.
    Unreachable(String),
}

pub(crate) const MIN_DELAY: Duration = Duration::from_secs(1);
pub(crate) const MAX_DELAY: Duration = Duration::from_secs(300);

/// How long to wait before the next renewal, from `status` at `now` and a random `jitter` in 0..1;
/// after `failures` renewals in a row that did not renew, backing off exponentially instead (and
/// never sooner than the server's `Retry-After`).
pub(crate) fn renewal_delay(
    status: &Status,
    now: i64,
    jitter: f64,
    failures: u32,
    retry_after: Option<u64>,
) -> Duration {
    let jitter = 0.9 + 0.2 * jitter.clamp(0.0, 1.0);
    if failures > 0 {
        let backoff = Duration::from_secs(1u64 << failures.min(9)).mul_f64(jitter);
        return backoff.max(Duration::from_secs(retry_after.unwrap_or(0))).clamp(MIN_DELAY, MAX_DELAY);
    }
    let until = status.lease_expires_at.or(status.works_offline_until).unwrap_or(now);
    // ±10 % around a third of the time left.
    let third = (until - now).max(0) as f64 / 3.0;
    Duration::from_secs_f64(third * jitter).clamp(MIN_DELAY, MAX_DELAY)
}

pub(crate) fn jitter() -> f64 {
    let mut byte = [0u8; 2];
    let _ = getrandom::getrandom(&mut byte);
    f64::from(u16::from_le_bytes(byte)) / f64::from(u16::MAX)
}

/// What a renewal's answer means: the server's verdict decides (the seat is held or not), not how
/// the local clock reads it.
pub(crate) fn event(result: crate::Result<Status>) -> HeartbeatEvent {
    use crate::Error;
    match result {
        Ok(status) if matches!(status.code.as_deref(), Some("VALID" | "GRACE_PERIOD")) => {
            HeartbeatEvent::Renewed(status)
        }
        Ok(status) => HeartbeatEvent::SeatLost(status),
        // No usable answer (or one that did not verify): the lease runs on until it lapses.
        Err(err @ (Error::Network(_) | Error::Unavailable { .. } | Error::InvalidToken(_))) => {
            HeartbeatEvent::Unreachable(err.to_string())
        }
        // The server refused outright, or there is no license here any more.
        Err(_) => HeartbeatEvent::SeatLost(Status::not_activated()),
    }
}

/// The server's `Retry-After` of a failed renewal, if it gave one.
pub(crate) fn retry_after(result: &crate::Result<Status>) -> Option<u64> {
    match result {
        Err(crate::Error::Unavailable { retry_after, .. }) => *retry_after,
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewals_come_a_third_of_the_way_to_the_lease_end_and_back_off_when_they_fail() {
        let mut status = Status::not_activated();
        status.lease_expires_at = Some(900);
        assert_eq!(renewal_delay(&status, 0, 0.5, 0, None), Duration::from_secs(300));
        assert_eq!(renewal_delay(&status, 0, 0.0, 0, None), Duration::from_secs(270));
        assert_eq!(renewal_delay(&status, 600, 1.0, 0, None), Duration::from_secs(110));
        status.lease_expires_at = Some(1);
        assert_eq!(renewal_delay(&status, 5, 0.5, 0, None), MIN_DELAY, "already lapsed: try at once");
        assert_eq!(renewal_delay(&status, 5, 0.5, 3, None), Duration::from_secs(8));
        assert_eq!(renewal_delay(&status, 5, 0.5, 20, None), MAX_DELAY);
        assert_eq!(renewal_delay(&status, 5, 0.5, 1, Some(30)), Duration::from_secs(30), "Retry-After");
    }
}
