//! Maps a source's timestamps onto the stream timeline: monotonic, continuous across sessions,
//! with a new epoch at every discontinuity. Pure: callers pass times in.
//!
//! A camera's RTP clock starts anywhere, jumps backwards when a GStreamer shared media gets a
//! second client, jumps forwards after a network stall, and restarts on every reconnect. Each
//! track keeps a mapping `out = in - in_base + out_base`; a jump (backwards, or forwards by more
//! than `max_jump_90k`) or a new session drops every mapping and starts a new epoch, and each track
//! is re-anchored at the current end of the stream timeline, offset by arrival time so that audio
//! and video stay in step.

use crate::media::TrackKind;

/// Result of mapping one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapped {
    pub dts_90k: i64,
    pub dur_90k: u32,
    pub epoch: u32,
}

#[derive(Clone, Copy, Debug, Default)]
struct TrackState {
    /// (in_base, out_base) while mapped.
    mapping: Option<(i64, i64)>,
    last_in_90k: i64,
    last_out_90k: i64,
    last_arrival_ms: i64,
    dur_90k: u32,
    seen: bool,
}

#[derive(Debug)]
pub struct Timeline {
    epoch: u32,
    /// A frame has been emitted in the current epoch.
    emitted: bool,
    /// Start a new epoch at the next frame.
    pending_epoch: bool,
    end_90k: i64,
    tracks: [TrackState; 2],
    max_jump_90k: i64,
    discontinuities: u64,
}

impl Default for Timeline {
    fn default() -> Self {
        Self::new(5 * 90_000)
    }
}

fn idx(kind: TrackKind) -> usize {
    match kind {
        TrackKind::Video => 0,
        TrackKind::Audio => 1,
    }
}

impl Timeline {
    /// `max_jump_90k`: a forward step larger than this is a discontinuity.
    pub fn new(max_jump_90k: i64) -> Self {
        Timeline {
            epoch: 0,
            emitted: false,
            pending_epoch: false,
            end_90k: 0,
            tracks: [TrackState::default(); 2],
            max_jump_90k,
            discontinuities: 0,
        }
    }

    /// Discontinuities seen so far (jumps, new sessions, parameter changes).
    pub fn discontinuities(&self) -> u64 {
        self.discontinuities
    }

    /// A new source session begins: its timestamps are unrelated to the previous ones.
    pub fn new_session(&mut self) {
        self.break_mappings();
    }

    /// Codec parameters changed: the next frame starts a new epoch (time stays continuous).
    pub fn parameters_changed(&mut self) {
        if self.emitted {
            self.pending_epoch = true;
        }
    }

    fn break_mappings(&mut self) {
        for t in &mut self.tracks {
            t.mapping = None;
        }
        if self.emitted {
            self.pending_epoch = true;
        }
    }

    /// Maps one frame's source time (`in_90k`, any origin) received at `arrival_ms` (any
    /// monotonic millisecond clock). `default_dur_90k` is used until a delta is known.
    pub fn map(
        &mut self,
        kind: TrackKind,
        in_90k: i64,
        arrival_ms: i64,
        default_dur_90k: u32,
    ) -> Mapped {
        let i = idx(kind);
        if self.tracks[i].mapping.is_some() {
            let delta = in_90k - self.tracks[i].last_in_90k;
            if delta < 0 || delta > self.max_jump_90k {
                self.break_mappings();
            }
        }
        let t = self.tracks[i];
        let (dts, dur) = match t.mapping {
            Some((in_base, out_base)) => {
                let out = in_90k - in_base + out_base;
                let delta = out - t.last_out_90k;
                let dur = if delta > 0 {
                    u32::try_from(delta).unwrap_or(t.dur_90k)
                } else {
                    t.dur_90k
                };
                (out, dur)
            }
            None => {
                let dur = if t.seen { t.dur_90k } else { default_dur_90k };
                // Anchor at the other track's position now, if it is mapped; else at the end.
                let other = self.tracks[1 - i];
                let mut out = match other.mapping {
                    Some(_) => other.last_out_90k + (arrival_ms - other.last_arrival_ms) * 90,
                    None => self.end_90k,
                };
                if t.seen {
                    out = out.max(t.last_out_90k + i64::from(t.dur_90k));
                }
                self.tracks[i].mapping = Some((in_90k, out));
                (out, dur)
            }
        };
        if self.pending_epoch {
            self.pending_epoch = false;
            self.epoch += 1;
            self.discontinuities += 1;
        }
        self.emitted = true;
        let t = &mut self.tracks[i];
        t.last_in_90k = in_90k;
        t.last_out_90k = dts;
        t.last_arrival_ms = arrival_ms;
        t.dur_90k = dur.max(1);
        t.seen = true;
        self.end_90k = self.end_90k.max(dts + i64::from(t.dur_90k));
        Mapped {
            dts_90k: dts,
            dur_90k: t.dur_90k,
            epoch: self.epoch,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TrackKind::{Audio, Video};

    #[test]
    fn first_session_starts_at_zero_and_follows_source_deltas() {
        let mut tl = Timeline::default();
        let a = tl.map(Video, 1_000_000, 0, 3600);
        assert_eq!(
            a,
            Mapped {
                dts_90k: 0,
                dur_90k: 3600,
                epoch: 0
            }
        );
        let b = tl.map(Video, 1_003_000, 33, 3600);
        assert_eq!(
            b,
            Mapped {
                dts_90k: 3000,
                dur_90k: 3000,
                epoch: 0
            }
        );
    }

    #[test]
    fn backwards_jump_starts_a_new_epoch_and_time_keeps_going_forward() {
        let mut tl = Timeline::default();
        for n in 0..100 {
            tl.map(Video, 720_000 + n * 3600, n * 40, 3600);
        }
        // GStreamer's shared media restarted its timestamps.
        let m = tl.map(Video, 0, 4000, 3600);
        assert_eq!(m.epoch, 1);
        assert_eq!(
            m.dts_90k,
            100 * 3600,
            "continues right after the last frame"
        );
        let m2 = tl.map(Video, 3600, 4040, 3600);
        assert_eq!(m2.dts_90k, 101 * 3600);
        assert_eq!(m2.epoch, 1);
        assert_eq!(tl.discontinuities(), 1);
    }

    #[test]
    fn large_forward_jump_is_a_discontinuity_small_gaps_are_not() {
        let mut tl = Timeline::default();
        tl.map(Video, 0, 0, 3600);
        let small = tl.map(Video, 90_000, 1000, 3600); // 1 s of lost frames: keep real time
        assert_eq!((small.dts_90k, small.epoch), (90_000, 0));
        let big = tl.map(Video, 90_000 + 60 * 90_000, 61_000, 3600); // SIGSTOP'd for a minute
        assert_eq!(big.epoch, 1);
        assert_eq!(big.dts_90k, 90_000 + 90_000);
    }

    #[test]
    fn new_session_continues_the_timeline_and_keeps_audio_in_step() {
        let mut tl = Timeline::default();
        for n in 0..25 {
            tl.map(Video, n * 3600, n * 40, 3600);
            tl.map(Audio, n * 1920, n * 40 + 5, 1920);
        }
        let end_v = 24 * 3600;
        tl.new_session();
        let v = tl.map(Video, 777, 5000, 3600);
        assert_eq!(v.epoch, 1);
        assert_eq!(v.dts_90k, end_v + 3600);
        // Audio arrives 20 ms after the video frame: anchored 20 ms later on the timeline.
        let a = tl.map(Audio, 123_456, 5020, 1920);
        assert_eq!(a.epoch, 1);
        assert_eq!(a.dts_90k, v.dts_90k + 20 * 90);
    }

    #[test]
    fn parameter_change_bumps_epoch_without_moving_time() {
        let mut tl = Timeline::default();
        tl.map(Video, 0, 0, 3600);
        tl.parameters_changed();
        let m = tl.map(Video, 3600, 40, 3600);
        assert_eq!((m.dts_90k, m.epoch), (3600, 1));
    }

    #[test]
    fn output_never_goes_backwards_per_track() {
        let mut tl = Timeline::new(90_000);
        let inputs = [
            0i64, 3600, 7200, -50_000, 10, 900_000, 900_100, 3, 4, 2_000_000,
        ];
        let mut last = i64::MIN;
        for (n, &x) in inputs.iter().enumerate() {
            let m = tl.map(Video, x, n as i64 * 40, 3600);
            assert!(m.dts_90k > last, "{x} mapped to {} after {last}", m.dts_90k);
            last = m.dts_90k;
        }
    }
}
