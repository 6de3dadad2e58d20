//! How a camera's clocks compare with this server's: pure estimators, fed by the source.
//!
//! - **Media clock drift** ([`DriftEstimator`]): the rate of the camera's RTP clock against the
//!   server's monotonic clock, in ppm, from frames' media times and arrival times. A camera whose
//!   media clock runs slow starves players that play at real speed (they stall); a fast one
//!   makes latency grow. Arrival times jitter, so each 5 s window keeps only its earliest arrival
//!   (the least delayed frame), and the drift is the slope between the first window of the epoch
//!   and the latest, reported once they are 20 s apart.
//! - **Wall clock offset** ([`ntp_unix_ms`]): an RTCP sender report carries the camera's own
//!   time (NTP); its difference from the server's time on arrival says how far off the camera's
//!   clock (and its on-screen timestamp) is. The archive uses the server's clock either way.

/// A window of frames: the earliest arrival relative to media time.
#[derive(Clone, Copy, Debug)]
struct Window {
    /// Arrival time of the window's first frame, ms.
    start_ms: i64,
    /// Minimum of (arrival ms − media ms) in the window, and the arrival time it was seen at.
    min_lag_ms: f64,
    at_ms: i64,
}

/// Estimates a source's media-clock drift against the server's clock, within one epoch.
#[derive(Debug, Default)]
pub struct DriftEstimator {
    epoch: Option<u32>,
    first: Option<Window>,
    current: Option<Window>,
    latest: Option<Window>,
}

/// Window length.
const WINDOW_MS: i64 = 5_000;
/// The shortest span between windows a drift is reported over.
const BASELINE_MS: i64 = 20_000;

impl DriftEstimator {
    /// One frame: its media time (`dts_90k`, continuous within `epoch`) and when it arrived
    /// (`arrival_ms`, monotonic).
    pub fn push(&mut self, epoch: u32, dts_90k: i64, arrival_ms: i64) {
        if self.epoch != Some(epoch) {
            *self = DriftEstimator {
                epoch: Some(epoch),
                ..DriftEstimator::default()
            };
        }
        let lag = arrival_ms as f64 - dts_90k as f64 / 90.0;
        match &mut self.current {
            Some(w) if arrival_ms - w.start_ms < WINDOW_MS => {
                if lag < w.min_lag_ms {
                    w.min_lag_ms = lag;
                    w.at_ms = arrival_ms;
                }
            }
            _ => {
                if let Some(done) = self.current.take() {
                    if self.first.is_none() {
                        self.first = Some(done);
                    } else {
                        self.latest = Some(done);
                    }
                }
                self.current = Some(Window {
                    start_ms: arrival_ms,
                    min_lag_ms: lag,
                    at_ms: arrival_ms,
                });
            }
        }
    }

    /// Media clock rate minus server clock rate, parts per million (positive: the camera's clock
    /// runs fast). `None` until two windows 20 s apart are complete.
    pub fn ppm(&self) -> Option<f64> {
        let (a, b) = (self.first?, self.latest?);
        let span_ms = (b.at_ms - a.at_ms) as f64;
        if b.at_ms - a.at_ms < BASELINE_MS {
            return None;
        }
        // lag = arrival − media: it shrinks when media time runs ahead of the server's.
        Some(-(b.min_lag_ms - a.min_lag_ms) / span_ms * 1e6)
    }
}

/// Seconds between the NTP epoch (1900) and the Unix epoch (1970).
const NTP_UNIX_S: u64 = 2_208_988_800;

/// A 64-bit NTP timestamp (32.32 fixed point seconds since 1900) as Unix ms; `None` before 1970.
pub fn ntp_unix_ms(ntp: u64) -> Option<i64> {
    let secs = (ntp >> 32).checked_sub(NTP_UNIX_S)?;
    let frac_ms = ((ntp & 0xffff_ffff) * 1000) >> 32;
    i64::try_from(secs * 1000 + frac_ms).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames at 25 fps for `secs`, with media time running `ppm` fast and arrivals jittered
    /// by up to 40 ms (never early).
    fn feed(e: &mut DriftEstimator, ppm: f64, from_s: i64, to_s: i64) {
        for n in from_s * 25..to_s * 25 {
            let arrival = n * 40;
            let media_ms = arrival as f64 * (1.0 + ppm / 1e6);
            let jitter = n * 7919 % 41;
            e.push(0, (media_ms * 90.0) as i64, 1_000 + arrival + jitter);
        }
    }

    #[test]
    fn drift_is_measured_through_jitter() {
        for ppm in [0.0, 20_000.0, -1_500.0, 300.0] {
            let mut e = DriftEstimator::default();
            feed(&mut e, ppm, 0, 60);
            let got = e.ppm().expect("a minute is enough");
            assert!((got - ppm).abs() < 100.0, "{ppm} ppm measured as {got}");
        }
    }

    #[test]
    fn nothing_is_said_before_the_baseline_and_a_new_epoch_starts_over() {
        let mut e = DriftEstimator::default();
        feed(&mut e, 5_000.0, 0, 15);
        assert!(e.ppm().is_none());
        feed(&mut e, 5_000.0, 15, 40);
        assert!(e.ppm().is_some());
        e.push(1, 0, 100_000);
        assert!(e.ppm().is_none());
    }

    #[test]
    fn ntp_times_convert_to_unix_ms() {
        // 2026-01-01T00:00:00.5Z
        let unix_s: u64 = 1_767_225_600;
        let ntp = ((unix_s + NTP_UNIX_S) << 32) | (1 << 31);
        assert_eq!(ntp_unix_ms(ntp), Some(1_767_225_600_500));
        assert_eq!(ntp_unix_ms(0), None);
    }
}
