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

/// How long to wait before the next renewal, from `status` at `now` and a random `jitter` in 0..1.
pub(crate) fn renewal_delay(status: &Status, now: i64, jitter: f64) -> Duration {
    let until = status.lease_expires_at.or(status.works_offline_until).unwrap_or(now);
    let third = (until - now).max(0) as f64 / 3.0;
    // ±10 % around a third of the time left.
    let seconds = third * (0.9 + 0.2 * jitter.clamp(0.0, 1.0));
    Duration::from_secs_f64(seconds).clamp(MIN_DELAY, MAX_DELAY)
}

pub(crate) fn jitter() -> f64 {
    let mut byte = [0u8; 2];
    let _ = getrandom::getrandom(&mut byte);
    f64::from(u16::from_le_bytes(byte)) / f64::from(u16::MAX)
}

/// What a renewal's answer means: the server's verdict decides (the seat is held or not), not how
/// the local clock reads it.
pub(crate) fn event(result: crate::Result<Status>) -> HeartbeatEvent {
    match result {
        Ok(status) if matches!(status.code.as_deref(), Some("VALID" | "GRACE_PERIOD")) => {
            HeartbeatEvent::Renewed(status)
        }
        Ok(status) => HeartbeatEvent::SeatLost(status),
        Err(err) => HeartbeatEvent::Unreachable(err.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewals_come_a_third_of_the_way_to_the_lease_end() {
        let mut status = Status::not_activated();
        status.lease_expires_at = Some(900);
        assert_eq!(renewal_delay(&status, 0, 0.5), Duration::from_secs(300));
        assert_eq!(renewal_delay(&status, 0, 0.0), Duration::from_secs(270));
        assert_eq!(renewal_delay(&status, 600, 1.0), Duration::from_secs(110));
        status.lease_expires_at = Some(1);
        assert_eq!(renewal_delay(&status, 5, 0.5), MIN_DELAY, "already lapsed: try at once");
    }
}
