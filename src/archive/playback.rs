//! Pure playback planning: which samples of which archive files to send for a wall-clock
//! window, on what output timeline. Shared by `/ws/archive` and `clip.mp4`.
//!
//! Frame-accurate starts without re-encoding: playback begins at the keyframe at or before
//! `start`, and every video frame presented before `start` is squeezed to one 90 kHz tick
//! (decode and presentation times alike, in order: [`Warp`]), so decoders still see the whole
//! GOP but the first frame shown for any real time is the one at `start`, with B-frames too.
//! Audio before `start` is dropped. Files are joined back to back:
//! a gap between files disappears from the output timeline (the original's behaviour), and is
//! reported so the caller can tell the client.

use std::sync::Arc;

use bytes::Bytes;

use crate::media::{StreamParams, TrackKind};
use crate::mp4::movie::Movie;

/// One sample on the output timeline.
#[derive(Clone, Debug)]
pub struct OutSample {
    pub track: TrackKind,
    /// Decode time on the output timeline, 90 kHz, from 0.
    pub dts_90k: i64,
    pub dur_90k: i64,
    pub cto_90k: i32,
    pub is_key: bool,
    /// Wall-clock time it was recorded at, Unix ms.
    pub wall_ms: i64,
    pub data: Bytes,
}

/// Turns files into one timeline. Feed files in order with [`Planner::file`].
#[derive(Debug)]
pub struct Planner {
    start_ms: i64,
    end_ms: i64,
    /// Where the next file's lead track starts on the output timeline, 90 kHz.
    next_90k: i64,
    /// End of the last audio frame sent, output timeline (when the lead track is video).
    audio_end_90k: i64,
    started: bool,
    /// End of the last file played, wall-clock ms.
    last_end_ms: Option<i64>,
}

/// What one file contributes.
#[derive(Debug, Default)]
pub struct FilePlan {
    pub samples: Vec<OutSample>,
    /// Wall-clock (from, to) of the hole between the previous file and this one.
    pub gap_before: Option<(i64, i64)>,
    pub params: Option<Arc<StreamParams>>,
}

impl Planner {
    pub fn new(start_ms: i64, end_ms: i64) -> Planner {
        Planner {
            start_ms,
            end_ms,
            next_90k: 0,
            audio_end_90k: 0,
            started: false,
            last_end_ms: None,
        }
    }

    /// The samples of `movie` (recorded from `file_start_ms`) inside the window.
    /// `gap_tolerance_ms`: a hole shorter than this is not a gap.
    pub fn file(&mut self, movie: &Movie, file_start_ms: i64, gap_tolerance_ms: i64) -> FilePlan {
        let mut plan = FilePlan {
            params: Some(Arc::clone(&movie.params)),
            ..FilePlan::default()
        };
        let lead = movie.params.lead();
        // The file's start time is its first lead-track frame's (the keyframe it starts with);
        // audio that begins a little before it must not shift the file's clock.
        let Some(first) = movie
            .samples
            .iter()
            .find(|s| s.track == lead)
            .or(movie.samples.first())
        else {
            return plan;
        };
        let base_90k = first.dts_90k;
        let wall = |dts_90k: i64| file_start_ms + (dts_90k - base_90k) / 90;
        let has_video = movie.params.video.is_some();
        // The first sample to play: for the first file, the keyframe at or before `start`.
        let mut from = 0;
        if !self.started {
            for (i, s) in movie.samples.iter().enumerate() {
                if wall(s.dts_90k) > self.start_ms {
                    break;
                }
                if !has_video || (s.track == TrackKind::Video && s.is_key) {
                    from = i;
                }
            }
        }
        // Files join on the lead track: its first frame here follows the last one before.
        // Audio keeps its offset to it, so it joins up too; a frame that would overlap the
        // previous file's last one (cameras' audio packets straddle the cut) is dropped.
        let first_dts = movie.samples[from..]
            .iter()
            .find(|s| s.track == lead)
            .map_or(movie.samples[from].dts_90k, |s| s.dts_90k);
        let pre_start =
            |s: &crate::mp4::movie::Sample| !self.started && wall(s.dts_90k) < self.start_ms;
        let warp = if self.started || !has_video {
            Warp::identity(first_dts)
        } else {
            let start_90k = base_90k + (self.start_ms - file_start_ms).saturating_mul(90);
            let video = movie.samples[from..]
                .iter()
                .filter(|s| s.track == TrackKind::Video && wall(s.dts_90k) < self.end_ms);
            Warp::lead_in(
                video.map(|s| (s.dts_90k, s.dts_90k + i64::from(s.cto_90k))),
                start_90k,
            )
        };
        let origin = warp.at(first_dts);
        for s in &movie.samples[from..] {
            let w = wall(s.dts_90k);
            if w >= self.end_ms {
                break;
            }
            if s.track == TrackKind::Audio && pre_start(s) {
                continue;
            }
            let dts_90k = self.next_90k + warp.at(s.dts_90k) - origin;
            let (dur_90k, cto_90k) = if s.track == TrackKind::Video {
                let end = self.next_90k + warp.at(s.dts_90k + i64::from(s.dur_90k)) - origin;
                let pts = self.next_90k + warp.at(s.dts_90k + i64::from(s.cto_90k)) - origin;
                (
                    (end - dts_90k).max(1),
                    i32::try_from(pts - dts_90k).unwrap_or(0),
                )
            } else {
                (i64::from(s.dur_90k), s.cto_90k)
            };
            if s.track != lead {
                if dts_90k < self.audio_end_90k || dts_90k < 0 {
                    continue;
                }
                self.audio_end_90k = dts_90k + dur_90k;
            }
            plan.samples.push(OutSample {
                track: s.track,
                dts_90k: dts_90k.max(0),
                dur_90k,
                cto_90k,
                is_key: s.is_key,
                wall_ms: w,
                data: movie.payload(s),
            });
        }
        if let Some(last_end) = self.last_end_ms {
            if file_start_ms > last_end + gap_tolerance_ms {
                plan.gap_before = Some((last_end, file_start_ms));
            }
        }
        if let Some(end) = plan
            .samples
            .iter()
            .filter(|s| s.track == lead)
            .map(|s| s.dts_90k + s.dur_90k)
            .max()
        {
            self.next_90k = end;
            self.started = true;
        }
        self.last_end_ms = Some(wall(base_90k + movie.duration_90k));
        plan
    }

    /// Output time reached so far, 90 kHz.
    pub fn position_90k(&self) -> i64 {
        self.next_90k
    }
}

/// The output clock of a plan's first file: every decode and presentation time before the
/// first frame shown at `start` is squeezed to one tick apart, in order; from that frame on,
/// real time. The map is monotonic, so decode order, presentation order and "decoded before
/// presented" all survive it, B-frames included (a frame decoded before `start` but shown
/// after it stays in real time; one decoded after it but shown before it is squeezed).
#[derive(Debug)]
struct Warp {
    /// First presentation time shown; real time from here.
    shown_90k: i64,
    /// Every distinct decode and presentation time before `shown_90k`, ascending.
    lead_in: Vec<i64>,
}

impl Warp {
    /// No squeeze: times relative to `origin_90k`.
    fn identity(origin_90k: i64) -> Warp {
        Warp {
            shown_90k: origin_90k,
            lead_in: Vec::new(),
        }
    }

    /// From the video samples' (decode, presentation) times, for a start at `start_90k`.
    fn lead_in(video: impl Iterator<Item = (i64, i64)> + Clone, start_90k: i64) -> Warp {
        let shown_90k = video
            .clone()
            .map(|(_, pts)| pts)
            .filter(|&pts| pts >= start_90k)
            .min()
            .unwrap_or(start_90k);
        let mut lead_in: Vec<i64> = video
            .flat_map(|(dts, pts)| [dts, pts])
            .filter(|&t| t < shown_90k)
            .collect();
        lead_in.sort_unstable();
        lead_in.dedup();
        Warp { shown_90k, lead_in }
    }

    fn at(&self, t_90k: i64) -> i64 {
        if t_90k < self.shown_90k {
            self.lead_in.partition_point(|&x| x < t_90k) as i64
        } else {
            self.lead_in.len() as i64 + (t_90k - self.shown_90k)
        }
    }
}

/// One `moof`+`mdat` of playback output: its header and the samples' payloads, not copied.
#[derive(Clone, Debug)]
pub struct OutFragment {
    pub chunks: Vec<Bytes>,
    pub len: usize,
    /// Output decode time of its first lead-track sample, 90 kHz.
    pub start_90k: i64,
    /// Starts with a video keyframe.
    pub key: bool,
    /// Media time it covers on the lead track, 90 kHz.
    pub duration_90k: i64,
}

/// Groups samples into fragments of at most `max_90k` of media, a new one at every video
/// keyframe; numbers them from `*sequence`.
pub fn fragments(
    samples: &[OutSample],
    params: &StreamParams,
    max_90k: i64,
    sequence: &mut u32,
) -> Vec<OutFragment> {
    let lead = params.lead();
    let mut out = Vec::new();
    let mut from = 0;
    while from < samples.len() {
        let start = samples[from].dts_90k;
        let mut to = from + 1;
        while to < samples.len() {
            let s = &samples[to];
            if s.track == lead
                && ((s.is_key && lead == TrackKind::Video) || s.dts_90k - start >= max_90k)
            {
                break;
            }
            to += 1;
        }
        out.push(fragment(&samples[from..to], params, lead, sequence));
        from = to;
    }
    out
}

fn fragment(
    group: &[OutSample],
    params: &StreamParams,
    lead: TrackKind,
    sequence: &mut u32,
) -> OutFragment {
    use crate::media::rescale;
    use crate::mp4::fmp4::{write_fragment_header, Sample, TrackRun};
    let mut runs_data: Vec<(TrackKind, Vec<&OutSample>)> = Vec::new();
    for kind in [TrackKind::Video, TrackKind::Audio] {
        let v: Vec<&OutSample> = group.iter().filter(|s| s.track == kind).collect();
        if !v.is_empty() && params.track_id(kind).is_some() {
            runs_data.push((kind, v));
        }
    }
    let samples: Vec<Vec<Sample<'_>>> = runs_data
        .iter()
        .map(|(kind, v)| {
            let ts = params.timescale(*kind);
            v.iter()
                .map(|s| Sample {
                    duration: rescale(s.dur_90k, 90_000, ts).clamp(1, i64::from(u32::MAX)) as u32,
                    cto: rescale(i64::from(s.cto_90k), 90_000, ts) as i32,
                    is_sync: s.is_key,
                    data: &s.data,
                })
                .collect()
        })
        .collect();
    let runs: Vec<TrackRun<'_>> = runs_data
        .iter()
        .zip(&samples)
        .filter_map(|((kind, v), s)| {
            Some(TrackRun {
                track_id: params.track_id(*kind)?,
                base_decode_time: rescale(v[0].dts_90k, 90_000, params.timescale(*kind)).max(0)
                    as u64,
                samples: s,
            })
        })
        .collect();
    *sequence = sequence.wrapping_add(1);
    let mut buf = bytes::BytesMut::new();
    let data_len = write_fragment_header(&mut buf, *sequence, &runs);
    let header = buf.freeze();
    let len = header.len() + data_len;
    let mut chunks = Vec::with_capacity(1 + group.len());
    chunks.push(header);
    for (_, v) in &runs_data {
        chunks.extend(v.iter().map(|s| s.data.clone()));
    }
    let lead_samples: Vec<&OutSample> = group.iter().filter(|s| s.track == lead).collect();
    // Times on the lead track: an audio frame ahead of the keyframe (and G.711 cameras send
    // long ones) must not stretch the fragment.
    let start_90k = lead_samples
        .first()
        .map(|s| s.dts_90k)
        .or(group.first().map(|s| s.dts_90k))
        .unwrap_or(0);
    let duration_90k = lead_samples
        .last()
        .map_or(0, |s| s.dts_90k + s.dur_90k - start_90k);
    OutFragment {
        chunks,
        len,
        start_90k,
        key: lead_samples
            .first()
            .is_some_and(|s| s.is_key && lead == TrackKind::Video),
        duration_90k,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::media::Frame;
    use crate::mp4::fmp4;
    use crate::mp4::fmp4::tests::real_params;
    use crate::mp4::segmenter::{Event, Segmenter, Targets};

    /// A fragmented file of `secs` seconds (25 fps, a keyframe every 50 frames, AAC), as the
    /// recorder writes it.
    pub(crate) fn file(secs: i64) -> Movie {
        file_with(secs, |_| 0)
    }

    /// Like [`file`], with a composition offset per frame (B-frames).
    fn file_with(secs: i64, cto_90k: impl Fn(i64) -> i32) -> Movie {
        Movie::parse(file_bytes_with(secs, cto_90k)).expect("parse")
    }

    /// The bytes of [`file`]: an init segment and one fragment per second.
    pub(crate) fn file_bytes(secs: i64) -> Bytes {
        file_bytes_with(secs, |_| 0)
    }

    fn file_bytes_with(secs: i64, cto_90k: impl Fn(i64) -> i32) -> Bytes {
        let p = real_params(true);
        let mut seg = Segmenter::new(Targets::files(3_600 * 90_000, 90_000));
        let mut events = Vec::new();
        for n in 0..secs * 25 {
            let mut f = Frame::test_video(n, n % 50 == 0, Bytes::from(vec![n as u8; 20]));
            f.params = Arc::clone(&p);
            f.cto_90k = cto_90k(n);
            seg.push(&f, false, &mut events);
            if n % 2 == 0 {
                let mut a = f.clone();
                a.track = TrackKind::Audio;
                a.is_key = true;
                a.dts_90k = n / 2 * 7200 + 1;
                a.data = Bytes::from_static(&[1, 2, 3]);
                seg.push(&a, false, &mut events);
            }
        }
        seg.break_here(&mut events);
        let mut bytes = fmp4::file_init_segment(&p, 0).0.to_vec();
        for e in events {
            if let Event::Part(part) = e {
                for c in part.chunks {
                    bytes.extend_from_slice(&c);
                }
            }
        }
        Bytes::from(bytes)
    }

    #[test]
    fn start_between_keyframes_squeezes_the_lead_in_and_drops_early_audio() {
        let m = file(10);
        // Keyframes every 2 s; start at 3.0 s: the GOP from 2.0 s is sent, squeezed.
        let mut planner = Planner::new(1_003_000, 1_008_000);
        let plan = planner.file(&m, 1_000_000, 500);
        let first = &plan.samples[0];
        assert!(first.is_key && first.track == TrackKind::Video);
        assert_eq!(first.wall_ms, 1_002_000);
        // 25 frames before 3.0 s, one tick each; the frame at 3.0 s is at 25 ticks.
        let at_start = plan
            .samples
            .iter()
            .find(|s| s.wall_ms == 1_003_000 && s.track == TrackKind::Video)
            .expect("frame at start");
        assert_eq!(at_start.dts_90k, 25);
        assert!(plan
            .samples
            .iter()
            .filter(|s| s.track == TrackKind::Audio)
            .all(|s| s.wall_ms >= 1_003_000 && s.dts_90k >= 25));
        // Ends before 8 s; 5 s of video after the start.
        let last = plan
            .samples
            .iter()
            .filter(|s| s.track == TrackKind::Video)
            .last()
            .expect("video");
        assert_eq!(last.wall_ms, 1_007_960);
        assert_eq!(planner.position_90k(), 25 + 5 * 90_000);
    }

    #[test]
    fn files_join_back_to_back_and_gaps_are_reported() {
        let m = file(4);
        let mut planner = Planner::new(0, i64::MAX);
        let a = planner.file(&m, 0, 500);
        assert!(a.gap_before.is_none());
        assert_eq!(planner.position_90k(), 4 * 90_000);
        let b = planner.file(&m, 64_000, 500);
        assert_eq!(b.gap_before, Some((4_000, 64_000)));
        assert_eq!(b.samples[0].dts_90k, 4 * 90_000);
        let frags = fragments(&b.samples, &m.params, 90_000, &mut 0);
        assert!(frags[0].key);
        assert!(frags.iter().all(|f| f.duration_90k <= 90_000));
        let total: usize = frags.iter().map(|f| f.len).sum();
        let chunks: usize = frags
            .iter()
            .flat_map(|f| f.chunks.iter())
            .map(|c| c.len())
            .sum();
        assert_eq!(total, chunks);
    }

    #[test]
    fn a_start_inside_a_b_frame_gop_keeps_decode_and_presentation_order() {
        // Decode order I P B P B …: a P is shown one frame later, the B after it one earlier;
        // every presentation time is one frame after the camera's order (offsets stay >= 0).
        let shown_as = |n: i64| -> i64 {
            let k = n % 50;
            match k {
                0 | 49 => n,
                k if k % 2 == 1 => n + 1,
                _ => n - 1,
            }
        };
        let m = file_with(10, |n| ((shown_as(n) + 1 - n) * 3600) as i32);
        let mut planner = Planner::new(1_003_000, 1_008_000);
        let plan = planner.file(&m, 1_000_000, 500);
        let video: Vec<&OutSample> = plan
            .samples
            .iter()
            .filter(|s| s.track == TrackKind::Video)
            .collect();
        assert!(video[0].is_key && video[0].wall_ms == 1_002_000);
        for w in video.windows(2) {
            assert!(w[1].dts_90k > w[0].dts_90k, "decode order");
        }
        assert!(video.iter().all(|s| s.cto_90k >= 0), "decoded before shown");
        // Presentation, sorted: the lead-in squeezed below the first frame shown, then real
        // frame spacing to the end.
        let mut pts: Vec<(i64, i64)> = video
            .iter()
            .map(|s| (s.dts_90k + i64::from(s.cto_90k), s.wall_ms))
            .collect();
        pts.sort_unstable();
        let first_shown = pts
            .windows(2)
            .position(|w| w[1].0 - w[0].0 >= 3600)
            .expect("frames shown");
        // The frames presented before 3.0 s (about 25) take a few ticks in all.
        assert!((23..=27).contains(&first_shown), "lead-in: {first_shown}");
        assert!(pts[first_shown].0 < 100, "{:?}", &pts[..first_shown + 1]);
        let steps: Vec<i64> = pts[first_shown..]
            .windows(2)
            .map(|w| w[1].0 - w[0].0)
            .collect();
        assert!(
            steps.iter().all(|&d| d == 3600),
            "shown frames one frame apart: {steps:?}"
        );
        assert!(pts[..first_shown].windows(2).all(|w| w[1].0 > w[0].0));
    }
}
