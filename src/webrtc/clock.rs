//! RTP times for one WebRTC viewer. Pure: frames' stream times in, RTP times out.
//!
//! A viewer starts (and restarts after a keyframe request or after falling behind) at the
//! newest cached keyframe, like an MSE viewer. The frames from the cache are old: sent with
//! their own times, the browser's jitter buffer would wait for them or count them as late. So
//! they are *caught up*: each goes out 1 ms after the previous one, and the first live frame
//! after them continues one frame duration later on the stream's own spacing (presentation
//! times, so B-frames keep their order on screen). Audio from the cache is not sent at all;
//! live audio shares the video's offset, which keeps lip sync.
//!
//! Belongs here: that arithmetic. Does not belong here: which frames are live (the session
//! decides by arrival time), clock rates of codecs (`peer`).

/// Spacing of caught-up frames, 90 kHz (1 ms).
pub const CATCH_UP_STEP_90K: i64 = 90;

/// The RTP timeline of one viewer, in 90 kHz ticks from its start.
#[derive(Debug, Default)]
pub struct RtpClock {
    /// The latest time handed out (presentation order may go back below it, B-frames).
    max_sent_90k: Option<i64>,
    /// Stream time to RTP time for live frames; unset until the first live frame after a
    /// catch-up.
    offset_90k: Option<i64>,
}

impl RtpClock {
    pub fn new() -> RtpClock {
        RtpClock::default()
    }

    /// The time of a frame from the cache: 1 ms after the latest one sent.
    pub fn catch_up(&mut self) -> i64 {
        let ts = self.max_sent_90k.map_or(0, |m| m + CATCH_UP_STEP_90K);
        self.max_sent_90k = Some(ts);
        self.offset_90k = None;
        ts
    }

    /// The time of a live frame: its presentation time (`dts + cto`) on this viewer's
    /// timeline. The first live frame after a catch-up comes one frame duration after it.
    pub fn live(&mut self, dts_90k: i64, cto_90k: i32, dur_90k: u32) -> i64 {
        let max = self.max_sent_90k;
        let offset = *self.offset_90k.get_or_insert_with(|| match max {
            Some(m) => m + i64::from(dur_90k.max(1)) - dts_90k,
            None => -dts_90k,
        });
        let ts = (dts_90k + i64::from(cto_90k) + offset).max(0);
        self.max_sent_90k = Some(max.map_or(ts, |m| m.max(ts)));
        ts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_frames_go_out_a_millisecond_apart_then_live_frames_keep_their_spacing() {
        let mut c = RtpClock::new();
        let burst: Vec<i64> = (0..3).map(|_| c.catch_up()).collect();
        assert_eq!(burst, [0, 90, 180]);
        // Live frames 40 ms apart: the first one 40 ms after the burst.
        assert_eq!(c.live(900_000, 0, 3600), 180 + 3600);
        assert_eq!(c.live(903_600, 0, 3600), 180 + 7200);
    }

    #[test]
    fn b_frames_keep_presentation_order_and_a_resync_never_goes_back() {
        let mut c = RtpClock::new();
        c.catch_up();
        // I P B B in decode order; presentation I B B P.
        let i = c.live(0, 3600, 3600);
        let p = c.live(3600, 10_800, 3600);
        let b1 = c.live(7200, 0, 3600);
        let b2 = c.live(10_800, 0, 3600);
        assert!(i < b1 && b1 < b2 && b2 < p, "{i} {b1} {b2} {p}");
        // A keyframe request: the cache again, after everything sent so far.
        let again = c.catch_up();
        assert_eq!(again, p + CATCH_UP_STEP_90K);
        assert!(c.live(14_400, 3600, 3600) > again);
    }

    #[test]
    fn audio_only_streams_start_at_zero_and_share_the_offset() {
        let mut c = RtpClock::new();
        assert_eq!(c.live(450_000, 0, 1800), 0);
        assert_eq!(c.live(451_800, 0, 1800), 1800);
    }
}
