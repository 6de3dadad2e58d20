//! Decode times for cameras that send B-frames: RTP carries only presentation times, in decode
//! order, so a stream with reordered frames has presentation times that step backwards.
//!
//! The method (the one libavformat uses for streams without decode times): a decoder with a
//! reorder depth of `R` frames outputs, when it has decoded frame `i`, the frame that is
//! `i − R`-th in presentation order. So frame `i`'s decode time is the smallest presentation
//! time among the frames received and not yet "output": push every presentation time into a
//! small min-heap and, once it holds more than `R`, pop the smallest. That is known the moment
//! frame `i` arrives (no added latency), never decreases, and never exceeds frame `i`'s own
//! presentation time. The first `R` frames of a session get decode times extrapolated one frame
//! duration apart below the first presentation time.
//!
//! `R` comes from the SPS ([`super::sps`]). When the SPS does not say (H.264 without
//! `bitstream_restriction`), or a camera reorders deeper than it says, the first frame that would
//! be presented before the last decode time shows it: `R` grows by one and presentation times
//! from then on move later by whole frame durations (a one-off shift of a frame or two, counted;
//! decode times stay monotonic and no frame is dropped).
//!
//! Pure: no I/O, times in and out. Does not belong here: mapping source clocks onto the stream
//! timeline and timestamp jumps (`timeline`).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::sps::ReorderDepth;

/// Deepest reordering H.264/H.265 allow (the DPB holds at most 16 frames).
pub const MAX_REORDER_FRAMES: u32 = 16;

/// Decode-time derivation for one video track.
#[derive(Debug, Default)]
pub struct Reorder {
    depth: u32,
    pending: BinaryHeap<Reverse<i64>>,
    last_dts_90k: Option<i64>,
    grown: u32,
}

/// One frame's times after reordering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Derived {
    pub dts_90k: i64,
    /// Presentation time, moved later by `shift_90k` if the depth had to grow.
    pub pts_90k: i64,
    /// How much later this and every following frame is presented (0 almost always).
    pub shift_90k: i64,
}

impl Reorder {
    /// The reorder depth the parameters state; depth that was learnt is kept when it is larger.
    pub fn set_depth(&mut self, depth: ReorderDepth) {
        let d = match depth {
            ReorderDepth::Frames(n) => n.min(MAX_REORDER_FRAMES),
            ReorderDepth::None | ReorderDepth::Unknown => 0,
        };
        self.depth = self.depth.max(d);
    }

    /// The depth in use, frames.
    pub fn depth(&self) -> u32 {
        self.depth
    }

    /// How often the depth had to grow because frames came deeper out of order than stated.
    pub fn grown(&self) -> u32 {
        self.grown
    }

    /// A new session: frames of the old one will not be decoded with the new ones. Decode
    /// times stay above those already handed out.
    pub fn reset(&mut self) {
        self.pending.clear();
    }

    /// The decode time of the next frame in decode order, presented at `pts_90k`; `dur_90k` is
    /// the frame duration used to extrapolate at a session's start and to round a shift.
    pub fn push(&mut self, pts_90k: i64, dur_90k: u32) -> Derived {
        let dur = i64::from(dur_90k.max(1));
        let mut pts = pts_90k;
        let mut shift = 0;
        if let Some(last) = self.last_dts_90k {
            if pts <= last {
                // Presented before a frame already decoded: deeper reordering than assumed.
                // Move it (and the caller's later frames) to at least that decode time.
                let need = last - pts;
                shift = need.div_euclid(dur) * dur + if need % dur == 0 { 0 } else { dur };
                pts += shift;
                self.depth = (self.depth + 1).min(MAX_REORDER_FRAMES);
                self.grown += 1;
            }
        }
        self.pending.push(Reverse(pts));
        let mut dts = if self.pending.len() as u32 > self.depth {
            self.pending.pop().map_or(pts, |Reverse(p)| p)
        } else {
            let min = self.pending.peek().map_or(pts, |Reverse(p)| *p);
            let ahead = i64::from(self.depth + 1) - self.pending.len() as i64;
            min - ahead * dur
        };
        // Bounded: the heap never holds more than depth + 1 frames.
        while self.pending.len() as u32 > self.depth {
            self.pending.pop();
        }
        if let Some(last) = self.last_dts_90k {
            dts = dts.max(last + 1);
        }
        // Only when a shift landed exactly on the last decode time: one tick later.
        let pts = pts.max(dts);
        self.last_dts_90k = Some(dts);
        Derived {
            dts_90k: dts,
            pts_90k: pts,
            shift_90k: shift,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: i64 = 3600;

    /// Runs presentation times given in frame units and returns (dts, cto) in frame units.
    fn run(r: &mut Reorder, pts_frames: &[i64]) -> Vec<(i64, i64)> {
        pts_frames
            .iter()
            .map(|&p| {
                let d = r.push(p * F, F as u32);
                assert_eq!(d.dts_90k % F, 0, "whole frames");
                (d.dts_90k / F, (d.pts_90k - d.dts_90k) / F)
            })
            .collect()
    }

    fn check_decodable(out: &[(i64, i64)]) {
        for w in out.windows(2) {
            assert!(w[1].0 > w[0].0, "decode times increase: {out:?}");
        }
        assert!(out.iter().all(|&(_, cto)| cto >= 0), "dts ≤ pts: {out:?}");
    }

    #[test]
    fn no_reordering_keeps_pts_as_dts() {
        let mut r = Reorder::default();
        r.set_depth(ReorderDepth::None);
        let out = run(&mut r, &[0, 1, 2, 3, 4]);
        assert_eq!(out, vec![(0, 0), (1, 0), (2, 0), (3, 0), (4, 0)]);
    }

    #[test]
    fn one_b_frame_between_references() {
        // Decode order I0 P2 B1 P4 B3 (one B-frame, depth 1).
        let mut r = Reorder::default();
        r.set_depth(ReorderDepth::Frames(1));
        let out = run(&mut r, &[0, 2, 1, 4, 3, 6, 5]);
        assert_eq!(
            out,
            vec![(-1, 1), (0, 2), (1, 0), (2, 2), (3, 0), (4, 2), (5, 0)]
        );
        assert_eq!(r.grown(), 0);
    }

    #[test]
    fn pyramid_b_frames_depth_two() {
        // x264's default: I0 P4 B2 b1 b3 P8 B6 b5 b7 (b-pyramid, depth 2).
        let mut r = Reorder::default();
        r.set_depth(ReorderDepth::Frames(2));
        let pts = [0, 4, 2, 1, 3, 8, 6, 5, 7, 12, 10, 9, 11];
        let out = run(&mut r, &pts);
        check_decodable(&out);
        // One frame duration apart from the start: the full frame rate.
        let dts: Vec<i64> = out.iter().map(|o| o.0).collect();
        assert_eq!(dts, (-2..11).collect::<Vec<_>>());
        assert_eq!(r.grown(), 0);
    }

    #[test]
    fn unknown_depth_is_learnt_with_one_shift() {
        let mut r = Reorder::default();
        r.set_depth(ReorderDepth::Unknown);
        let pts = [0, 3, 1, 2, 6, 4, 5, 9, 7, 8, 12, 10, 11];
        // The caller moves its mapping by each shift, so later frames arrive shifted too.
        let mut shifts = 0;
        let out: Vec<(i64, i64)> = pts
            .iter()
            .map(|&p| {
                let d = r.push(p * F + shifts, F as u32);
                shifts += d.shift_90k;
                (d.dts_90k, d.pts_90k - d.dts_90k)
            })
            .collect();
        for w in out.windows(2) {
            assert!(w[1].0 > w[0].0, "{out:?}");
        }
        assert!(out.iter().all(|o| o.1 >= 0), "{out:?}");
        assert!(r.depth() >= 1 && r.grown() >= 1);
        assert_eq!(shifts, 2 * F, "a one-off shift of two frames");
        // After learning, presentation order is the camera's again.
        let tail: Vec<i64> = out[7..].iter().map(|o| o.0 + o.1).collect();
        let mut sorted = tail.clone();
        sorted.sort();
        assert_eq!(sorted.windows(2).filter(|w| w[0] == w[1]).count(), 0);
    }

    #[test]
    fn a_new_session_keeps_decode_times_increasing() {
        let mut r = Reorder::default();
        r.set_depth(ReorderDepth::Frames(2));
        let a = run(&mut r, &[0, 4, 2, 1, 3]);
        r.reset();
        // The new session is anchored right after the old one.
        let b = run(&mut r, &[5, 9, 7, 6, 8]);
        let mut all = a.clone();
        all.extend(b);
        check_decodable(&all);
    }

    #[test]
    fn stated_depth_only_grows() {
        let mut r = Reorder::default();
        r.set_depth(ReorderDepth::Frames(3));
        r.set_depth(ReorderDepth::None);
        assert_eq!(r.depth(), 3);
        r.set_depth(ReorderDepth::Frames(99));
        assert_eq!(r.depth(), MAX_REORDER_FRAMES);
    }
}
