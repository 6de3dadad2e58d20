//! A lock-free latency histogram: fixed buckets, atomic counters, percentiles as bucket bounds.
//! Used for the gateway's own added latency (frame arrival to websocket send).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, microseconds; a last bucket catches everything above.
const BOUNDS_US: [u64; 14] = [
    100, 250, 500, 1_000, 2_000, 3_000, 5_000, 7_500, 10_000, 15_000, 20_000, 30_000, 50_000,
    100_000,
];

#[derive(Debug, Default)]
pub struct DelayHistogram {
    buckets: [AtomicU64; BOUNDS_US.len() + 1],
}

/// A summary for `/status`: percentiles are "at most this many ms" (a bucket's upper bound),
/// `None` above the last bound. `counts` are the buckets themselves (the last one is above
/// every bound), so that two readings can be subtracted to get the percentiles of an interval
/// (the benchmark's steady state).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct DelaySummary {
    pub count: u64,
    pub p50_ms_at_most: Option<f64>,
    pub p90_ms_at_most: Option<f64>,
    pub p99_ms_at_most: Option<f64>,
    pub bounds_ms: [f64; BOUNDS_US.len()],
    pub counts: [u64; BOUNDS_US.len() + 1],
}

impl DelayHistogram {
    pub fn record(&self, d: Duration) {
        let us = d.as_micros() as u64;
        let i = BOUNDS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(BOUNDS_US.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
    }

    pub fn summary(&self) -> DelaySummary {
        let counts: [u64; BOUNDS_US.len() + 1] =
            std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed));
        let count: u64 = counts.iter().sum();
        let at = |q: f64| -> Option<f64> {
            if count == 0 {
                return None;
            }
            let want = (count as f64 * q).ceil() as u64;
            let mut seen = 0;
            for (i, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= want {
                    return BOUNDS_US.get(i).map(|&b| b as f64 / 1000.0);
                }
            }
            None
        };
        DelaySummary {
            count,
            p50_ms_at_most: at(0.5),
            p90_ms_at_most: at(0.9),
            p99_ms_at_most: at(0.99),
            bounds_ms: BOUNDS_US.map(|b| b as f64 / 1000.0),
            counts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_bucket_bounds() {
        let h = DelayHistogram::default();
        assert_eq!(h.summary().p99_ms_at_most, None);
        for _ in 0..98 {
            h.record(Duration::from_micros(300));
        }
        h.record(Duration::from_millis(4));
        h.record(Duration::from_secs(1));
        let s = h.summary();
        assert_eq!(s.count, 100);
        assert_eq!(s.p50_ms_at_most, Some(0.5));
        assert_eq!(s.p90_ms_at_most, Some(0.5));
        assert_eq!(s.p99_ms_at_most, Some(5.0));
    }
}
