//! Maps a source's timestamps onto the stream timeline: monotonic, continuous across sessions,
//! with a new epoch only where a decoder must start again. Pure: callers pass times in.
//!
//! Sources give presentation times (RTP has no decode times); each track keeps a mapping
//! `out = in − in_base + out_base` of its presentation times, and video decode times are then
//! derived by [`Reorder`] (B-frames). Three kinds of event move the mapping:
//! - a **timestamp jump** within a session (a step forwards larger than `max_jump_90k`, or
//!   backwards further than any reordering can explain: a DVR after an NTP step, a GStreamer
//!   shared media restarting its clock): the track is re-stamped to continue right after its
//!   last frame. No frame is dropped and no epoch starts (the decoder does not care about the
//!   clock); it is counted in [`Timeline::jumps`].
//! - a **new session** (reconnect, new SSRC): every mapping is dropped and a new epoch starts;
//!   each track is re-anchored at the end of the stream timeline, offset by arrival time so that
//!   audio and video stay in step.
//! - **new codec parameters**: a new epoch, time continuous.
//!
//! Lost frames (a forward step up to `max_jump_90k`) keep real time: the gap is real.

use super::reorder::{Reorder, MAX_REORDER_FRAMES};
use super::sps::ReorderDepth;
use crate::media::TrackKind;

/// Result of mapping one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapped {
    pub dts_90k: i64,
    /// Presentation minus decode time.
    pub cto_90k: i32,
    pub dur_90k: u32,
    pub epoch: u32,
}

#[derive(Debug, Default)]
struct TrackState {
    /// (in_base, out_base) of presentation times while mapped.
    mapping: Option<(i64, i64)>,
    last_in_90k: i64,
    /// Latest presentation time out, and the end of the track's presented time.
    max_pts_90k: i64,
    last_dts_90k: i64,
    last_arrival_ms: i64,
    dur_90k: u32,
    seen: bool,
    reorder: Reorder,
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
    jumps: u64,
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
    /// `max_jump_90k`: a forward step larger than this is a timestamp jump.
    pub fn new(max_jump_90k: i64) -> Self {
        Timeline {
            epoch: 0,
            emitted: false,
            pending_epoch: false,
            end_90k: 0,
            tracks: Default::default(),
            max_jump_90k,
            discontinuities: 0,
            jumps: 0,
        }
    }

    /// Discontinuities seen so far (new sessions, parameter changes): new epochs.
    pub fn discontinuities(&self) -> u64 {
        self.discontinuities
    }

    /// Timestamp jumps re-stamped within a session (no epoch, no frame lost).
    pub fn jumps(&self) -> u64 {
        self.jumps
    }

    /// The video reorder depth in use (frames) and how often it had to grow.
    pub fn reorder(&self) -> (u32, u32) {
        let r = &self.tracks[0].reorder;
        (r.depth(), r.grown())
    }

    /// What the video track's SPS says about reordering.
    pub fn set_reorder_depth(&mut self, depth: ReorderDepth) {
        self.tracks[0].reorder.set_depth(depth);
    }

    /// A new source session begins: its timestamps are unrelated to the previous ones.
    pub fn new_session(&mut self) {
        for t in &mut self.tracks {
            t.mapping = None;
            t.reorder.reset();
        }
        if self.emitted {
            self.pending_epoch = true;
        }
    }

    /// Codec parameters changed: the next frame starts a new epoch (time stays continuous).
    pub fn parameters_changed(&mut self) {
        if self.emitted {
            self.pending_epoch = true;
        }
    }

    /// How far back a presentation time may step and still be reordering, not a jump.
    fn max_back_90k(t: &TrackState) -> i64 {
        (i64::from(MAX_REORDER_FRAMES + 1) * i64::from(t.dur_90k.max(1))).max(90_000)
    }

    /// Maps one frame presented at source time `pts_in_90k` (any origin), received at
    /// `arrival_ms` (any monotonic millisecond clock). `cto_90k` is the composition offset when
    /// the source knows it (files); `None` derives decode times for video (cameras).
    /// `default_dur_90k` is used until a delta is known.
    pub fn map(
        &mut self,
        kind: TrackKind,
        pts_in_90k: i64,
        cto_90k: Option<i32>,
        arrival_ms: i64,
        default_dur_90k: u32,
    ) -> Mapped {
        let i = idx(kind);
        let other_pos = {
            let o = &self.tracks[1 - i];
            o.mapping
                .map(|_| o.max_pts_90k + (arrival_ms - o.last_arrival_ms) * 90)
        };
        let end = self.end_90k;
        let t = &mut self.tracks[i];
        if let Some((in_base, out_base)) = t.mapping {
            let delta = pts_in_90k - t.last_in_90k;
            if delta > self.max_jump_90k || delta < -Self::max_back_90k(t) {
                // Re-stamp: continue right after the track's last frame.
                let next = t.max_pts_90k + i64::from(t.dur_90k);
                let was = t.last_in_90k - in_base + out_base;
                t.mapping = Some((pts_in_90k, next.max(was + 1)));
                self.jumps += 1;
            }
        }
        let est_dur = if t.seen { t.dur_90k } else { default_dur_90k };
        if t.mapping.is_none() {
            // Anchor at the other track's position now, if it is mapped; else at the end.
            let mut out = other_pos.unwrap_or(end);
            if t.seen {
                out = out.max(t.max_pts_90k + i64::from(t.dur_90k));
            }
            // That is where the first *decode* time goes: presentation comes later by the
            // frame's composition offset, or by the reorder depth.
            out += match (kind, cto_90k) {
                (_, Some(cto)) => i64::from(cto.max(0)),
                (TrackKind::Video, None) => {
                    i64::from(t.reorder.depth()) * i64::from(est_dur.max(1))
                }
                (TrackKind::Audio, None) => 0,
            };
            t.mapping = Some((pts_in_90k, out));
        }
        let (in_base, out_base) = t.mapping.unwrap_or((pts_in_90k, end));
        let mut pts = pts_in_90k - in_base + out_base;
        let dts = match (kind, cto_90k) {
            (_, Some(cto)) => pts - i64::from(cto),
            (TrackKind::Video, None) => {
                let d = t.reorder.push(pts, est_dur);
                if d.shift_90k != 0 {
                    t.mapping = Some((in_base, out_base + d.shift_90k));
                }
                pts = d.pts_90k;
                d.dts_90k
            }
            (TrackKind::Audio, None) => pts,
        };
        // Decode times rise per track whatever the source does (and presentation never
        // precedes decoding).
        let dts = if t.seen {
            dts.max(t.last_dts_90k + 1)
        } else {
            dts
        };
        let pts = pts.max(dts);
        let dur = if t.seen {
            u32::try_from(dts - t.last_dts_90k)
                .ok()
                .filter(|&d| d > 0)
                .unwrap_or(t.dur_90k)
        } else {
            default_dur_90k
        };
        if self.pending_epoch {
            self.pending_epoch = false;
            self.epoch += 1;
            self.discontinuities += 1;
        }
        self.emitted = true;
        t.last_in_90k = pts_in_90k;
        t.max_pts_90k = if t.seen { t.max_pts_90k.max(pts) } else { pts };
        t.last_dts_90k = dts;
        t.last_arrival_ms = arrival_ms;
        t.dur_90k = dur.max(1);
        t.seen = true;
        self.end_90k = self
            .end_90k
            .max(dts + i64::from(t.dur_90k))
            .max(pts + i64::from(t.dur_90k));
        Mapped {
            dts_90k: dts,
            cto_90k: i32::try_from(pts - dts).unwrap_or(i32::MAX),
            dur_90k: t.dur_90k,
            epoch: self.epoch,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TrackKind::{Audio, Video};

    fn v(tl: &mut Timeline, pts: i64, arrival_ms: i64) -> Mapped {
        tl.map(Video, pts, None, arrival_ms, 3600)
    }

    #[test]
    fn first_session_starts_at_zero_and_follows_source_deltas() {
        let mut tl = Timeline::default();
        let a = v(&mut tl, 1_000_000, 0);
        let want = Mapped {
            dts_90k: 0,
            cto_90k: 0,
            dur_90k: 3600,
            epoch: 0,
        };
        assert_eq!(a, want);
        let b = v(&mut tl, 1_003_000, 33);
        assert_eq!((b.dts_90k, b.dur_90k, b.epoch), (3000, 3000, 0));
    }

    #[test]
    fn backwards_jump_is_restamped_without_an_epoch() {
        let mut tl = Timeline::default();
        for n in 0..100 {
            v(&mut tl, 720_000 + n * 3600, n * 40);
        }
        // GStreamer's shared media restarted its timestamps.
        let m = v(&mut tl, 0, 4000);
        assert_eq!(
            (m.dts_90k, m.epoch),
            (100 * 3600, 0),
            "right after the last"
        );
        let m2 = v(&mut tl, 3600, 4040);
        assert_eq!((m2.dts_90k, m2.epoch), (101 * 3600, 0));
        assert_eq!((tl.jumps(), tl.discontinuities()), (1, 0));
    }

    #[test]
    fn jumps_of_ten_hours_either_way_every_three_seconds_lose_nothing() {
        let mut tl = Timeline::default();
        let ten_h = 10 * 3600 * 90_000i64;
        let mut offset = 0i64;
        let mut last: Option<Mapped> = None;
        for n in 0..25 * 30 {
            if n > 0 && n % 75 == 0 {
                offset += if (n / 75) % 2 == 1 { ten_h } else { -2 * ten_h };
            }
            let m = v(&mut tl, offset + n * 3600, n * 40);
            if let Some(l) = last {
                assert_eq!(m.dts_90k - l.dts_90k, 3600, "frame {n}: no gap, no overlap");
            }
            assert_eq!(m.epoch, 0);
            last = Some(m);
        }
        assert_eq!(tl.jumps(), 9);
    }

    #[test]
    fn lost_frames_keep_real_time() {
        let mut tl = Timeline::default();
        v(&mut tl, 0, 0);
        let small = v(&mut tl, 90_000, 1000); // 1 s of lost frames: keep real time
        assert_eq!((small.dts_90k, small.epoch), (90_000, 0));
        assert_eq!(tl.jumps(), 0);
    }

    #[test]
    fn new_session_continues_the_timeline_and_keeps_audio_in_step() {
        let mut tl = Timeline::default();
        for n in 0..25 {
            v(&mut tl, n * 3600, n * 40);
            tl.map(Audio, n * 1920, None, n * 40 + 5, 1920);
        }
        let end_v = 24 * 3600;
        tl.new_session();
        let m = v(&mut tl, 777, 5000);
        assert_eq!(m.epoch, 1);
        assert_eq!(m.dts_90k, end_v + 3600);
        // Audio arrives 20 ms after the video frame: anchored 20 ms later on the timeline.
        let a = tl.map(Audio, 123_456, None, 5020, 1920);
        assert_eq!(a.epoch, 1);
        assert_eq!(a.dts_90k, m.dts_90k + 20 * 90);
    }

    #[test]
    fn parameter_change_bumps_epoch_without_moving_time() {
        let mut tl = Timeline::default();
        v(&mut tl, 0, 0);
        tl.parameters_changed();
        let m = v(&mut tl, 3600, 40);
        assert_eq!((m.dts_90k, m.epoch), (3600, 1));
    }

    #[test]
    fn b_frames_get_decode_times_at_the_full_frame_rate() {
        let mut tl = Timeline::default();
        tl.set_reorder_depth(ReorderDepth::Frames(2));
        // x264 with b-pyramid, decode order, camera clock anywhere.
        let order = [0i64, 4, 2, 1, 3, 8, 6, 5, 7, 12, 10, 9, 11];
        let out: Vec<Mapped> = order
            .iter()
            .enumerate()
            .map(|(n, &p)| v(&mut tl, 5_000_000 + p * 3600, n as i64 * 40))
            .collect();
        for w in out.windows(2) {
            assert_eq!(w[1].dts_90k - w[0].dts_90k, 3600, "{out:?}");
            assert_eq!(w[1].dur_90k, 3600);
        }
        assert!(out.iter().all(|m| m.cto_90k >= 0 && m.epoch == 0));
        let mut pts: Vec<i64> = out
            .iter()
            .map(|m| m.dts_90k + i64::from(m.cto_90k))
            .collect();
        pts.sort();
        assert!(pts.windows(2).all(|w| w[1] - w[0] == 3600), "{pts:?}");
        assert_eq!((tl.jumps(), tl.discontinuities()), (0, 0));
    }

    #[test]
    fn files_pass_their_composition_offsets() {
        let mut tl = Timeline::default();
        let a = tl.map(Video, 7200, Some(7200), 0, 3600);
        let b = tl.map(Video, 10_800, Some(7200), 40, 3600);
        assert_eq!((a.dts_90k, a.cto_90k), (0, 7200));
        assert_eq!((b.dts_90k, b.cto_90k, b.dur_90k), (3600, 7200, 3600));
    }

    #[test]
    fn output_never_goes_backwards_per_track() {
        let mut tl = Timeline::new(90_000);
        let inputs = [
            0i64, 3600, 7200, -50_000, 10, 900_000, 900_100, 3, 4, 2_000_000,
        ];
        let mut last = i64::MIN;
        for (n, &x) in inputs.iter().enumerate() {
            let m = v(&mut tl, x, n as i64 * 40);
            assert!(m.dts_90k > last, "{x} mapped to {} after {last}", m.dts_90k);
            assert!(m.cto_90k >= 0);
            last = m.dts_90k;
        }
    }
}
