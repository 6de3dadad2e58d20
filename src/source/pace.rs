//! How fast the gateway opens camera sessions: a token bucket over every stream, so that 500
//! cameras configured (or a switch coming back with 500 cameras behind it) are connected at a
//! steady rate instead of in one storm of SYNs and DESCRIBEs that cameras, NVR switches and
//! the gateway's own first keyframes all pay for. Pure: the caller supplies the time (since any
//! fixed origin).
//!
//! Belongs here: the bucket. Does not belong here: waiting (`mod`, `supervise`).

use std::time::Duration;

/// Session attempts a second, over all streams, once the burst is spent.
pub const CONNECTS_PER_S: f64 = 200.0;
/// Attempts that may start at once.
pub const CONNECT_BURST: f64 = 20.0;

/// A token bucket that hands out start times.
#[derive(Debug)]
pub struct ConnectPacer {
    rate_per_s: f64,
    burst: f64,
    /// Tokens at `at`; negative when attempts are already booked ahead.
    tokens: f64,
    at: Duration,
}

impl ConnectPacer {
    pub fn new(rate_per_s: f64, burst: f64, now: Duration) -> ConnectPacer {
        ConnectPacer {
            rate_per_s,
            burst,
            tokens: burst,
            at: now,
        }
    }

    /// Books one attempt: how long it must wait from `now`.
    pub fn book(&mut self, now: Duration) -> Duration {
        let elapsed = now.saturating_sub(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate_per_s).min(self.burst);
        self.at = self.at.max(now);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate_per_s)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_goes_at_once_then_attempts_are_spread_at_the_rate() {
        let t0 = Duration::from_secs(7);
        let mut p = ConnectPacer::new(100.0, 10.0, t0);
        let waits: Vec<Duration> = (0..500).map(|_| p.book(t0)).collect();
        assert!(waits[..10].iter().all(|w| w.is_zero()));
        // The 11th waits one interval; the 500th about (500 - 10) / 100 s.
        assert_eq!(waits[10], Duration::from_millis(10));
        let last = waits[499].as_secs_f64();
        assert!((last - 4.9).abs() < 0.001, "{last}");
    }

    #[test]
    fn the_bucket_refills_while_idle_up_to_the_burst() {
        let t0 = Duration::from_secs(7);
        let mut p = ConnectPacer::new(100.0, 10.0, t0);
        for _ in 0..10 {
            p.book(t0);
        }
        let later = t0 + Duration::from_secs(60);
        let waits: Vec<Duration> = (0..11).map(|_| p.book(later)).collect();
        assert!(waits[..10].iter().all(|w| w.is_zero()));
        assert!(!waits[10].is_zero());
    }
}
