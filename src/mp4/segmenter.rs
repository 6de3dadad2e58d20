//! Pure HLS cutting: frames in, CMAF parts and segment boundaries out. No I/O, no clocks; the
//! caller says which frames come from the GOP cache (`catching_up`).
//!
//! Rules:
//! - A segment starts at a video keyframe (any frame for audio-only streams) and ends at the
//!   first keyframe at or after the segment target; the first segment of each epoch ends at its
//!   second keyframe (one GOP), so a fresh stream has a complete segment quickly, and keyframes
//!   from the GOP cache each start a segment, so a stream joined late is listed at once.
//! - A part ends before the frame that would take it past the part target, and always at a
//!   segment boundary. Parts are the unit of LL-HLS; a segment is its parts back to back.
//! - A new epoch (reconnect, timestamp jump) or new codec parameters end the open segment; the
//!   next one is marked as a discontinuity (with a new init segment if the parameters changed).
//! - Timestamps are zero-based: `tfdt` counts from the first frame this segmenter saw.
//! - File mode (`Targets::files`, the archive's rules): no early cuts, every keyframe starts a
//!   part (so every random access point is the start of a fragment, which `mfra` can list),
//!   and `tfdt` restarts at zero in every segment, since each segment becomes a file of its own.
//! - Sample durations are exact (the next frame's decode time minus this one's), because a part
//!   is only written when the frame after it has arrived.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::media::{rescale, Frame, StreamParams, TrackKind, TIMESCALE_90K};
use crate::mp4::fmp4::{self, Sample, TrackRun};

/// A segment without a keyframe for this long is cut anyway, to bound memory.
const MAX_SEGMENT_90K: i64 = 60 * 90_000;

/// Targets, 90 kHz.
#[derive(Clone, Copy, Debug)]
pub struct Targets {
    pub segment_90k: i64,
    pub part_90k: i64,
    /// Archive files instead of HLS segments (see the module doc).
    pub files: bool,
}

impl Targets {
    /// HLS rules.
    pub fn hls(segment_90k: i64, part_90k: i64) -> Self {
        Targets {
            segment_90k,
            part_90k,
            files: false,
        }
    }

    /// Archive rules: segments are files, parts are their fragments.
    pub fn files(file_90k: i64, fragment_90k: i64) -> Self {
        Targets {
            segment_90k: file_90k,
            part_90k: fragment_90k,
            files: true,
        }
    }

    /// A segment without a keyframe for this long is cut anyway, to bound memory.
    fn max_segment_90k(&self) -> i64 {
        if self.files {
            self.segment_90k + MAX_SEGMENT_90K
        } else {
            MAX_SEGMENT_90K
        }
    }
}

/// One CMAF chunk (`moof` + `mdat`): its header and the frames' payloads, shared, not copied.
#[derive(Clone, Debug)]
pub struct Part {
    pub chunks: Vec<Bytes>,
    pub len: usize,
    pub duration_90k: i64,
    /// Starts with a keyframe.
    pub independent: bool,
}

/// What the segmenter produced.
#[derive(Clone, Debug)]
pub enum Event {
    /// New codec parameters: segments from now on use this init segment.
    Init {
        id: u32,
        bytes: Bytes,
        params: Arc<StreamParams>,
    },
    /// A segment begins; its parts follow.
    SegmentStart {
        discontinuity: bool,
        init_id: u32,
        /// Wall-clock time of its first frame, Unix ms.
        pdt_ms: i64,
    },
    Part(Part),
    /// The open segment is complete.
    SegmentEnd {
        duration_90k: i64,
        /// The stream's latest keyframe interval, if known.
        gop_90k: Option<i64>,
    },
}

#[derive(Debug)]
struct OpenSegment {
    start_90k: i64,
    /// The first segment of an epoch: ends at its second keyframe.
    first_of_epoch: bool,
}

/// The cutting state of one stream.
pub struct Segmenter {
    targets: Targets,
    params: Option<Arc<StreamParams>>,
    next_init_id: u32,
    epoch: Option<u32>,
    /// Stream-timeline time of zero (`tfdt` 0).
    base_90k: Option<i64>,
    segment: Option<OpenSegment>,
    part_start_90k: i64,
    /// Frames of the open part on the track that decides cuts (video, or audio without video).
    lead: Vec<Frame>,
    /// Audio frames while video leads.
    other: Vec<Frame>,
    discontinuity_next: bool,
    first_of_epoch: bool,
    /// (wall ms, stream 90k) of the epoch's first segment: program date-times are derived from
    /// it so they advance exactly with the media.
    anchor: Option<(i64, i64)>,
    last_key_90k: Option<i64>,
    gop_90k: Option<i64>,
    /// Per track: decode time the next sample must not precede.
    floor_90k: [i64; 2],
    sequence: u32,
    buf: BytesMut,
    /// A target for the next segment only (the archive staggers its first cut).
    next_target_90k: Option<i64>,
}

impl Segmenter {
    pub fn new(targets: Targets) -> Self {
        Segmenter {
            targets,
            params: None,
            next_init_id: 0,
            epoch: None,
            base_90k: None,
            segment: None,
            part_start_90k: 0,
            lead: Vec::new(),
            other: Vec::new(),
            discontinuity_next: false,
            first_of_epoch: true,
            anchor: None,
            last_key_90k: None,
            gop_90k: None,
            floor_90k: [i64::MIN; 2],
            sequence: 0,
            buf: BytesMut::new(),
            next_target_90k: None,
        }
    }

    /// Uses `target_90k` instead of the segment target for the next segment that ends at a
    /// keyframe (the archive shortens each stream's first file so cuts spread out).
    pub fn shorten_next_segment(&mut self, target_90k: i64) {
        self.next_target_90k = Some(target_90k);
    }

    /// The first frame that can end something, for a consumer that wants to wake only then:
    /// one of the lead track ending past the open part's target (a keyframe, which can end
    /// the segment, or new parameters or epoch, wake a consumer anyway). `None` before the
    /// first frame (every frame matters).
    pub fn next_cut(&self) -> Option<(TrackKind, i64)> {
        let lead = self.params.as_ref()?.lead();
        let end_90k = match &self.segment {
            Some(_) => self.part_start_90k.saturating_add(self.targets.part_90k),
            None => i64::MAX,
        };
        Some((lead, end_90k))
    }

    /// Feeds one frame. `catching_up`: the frame comes from the GOP cache, not live.
    pub fn push(&mut self, f: &Frame, catching_up: bool, out: &mut Vec<Event>) {
        let new_params = match &self.params {
            None => true,
            Some(p) if Arc::ptr_eq(p, &f.params) => false,
            Some(p) => **p != *f.params,
        };
        let new_epoch = self.epoch.is_some_and(|e| e != f.epoch);
        if new_params || new_epoch {
            self.break_here(out);
            if new_params {
                let id = self.next_init_id;
                self.next_init_id += 1;
                out.push(Event::Init {
                    id,
                    bytes: fmp4::init_segment(&f.params),
                    params: Arc::clone(&f.params),
                });
            }
        }
        match &self.params {
            Some(p) if Arc::ptr_eq(p, &f.params) => {}
            // New parameters, or the same ones in a new `Arc`: adopt it so the pointer check
            // hits next time.
            _ => self.params = Some(Arc::clone(&f.params)),
        }
        self.epoch = Some(f.epoch);
        let Some(params) = self.params.clone() else {
            return;
        };
        if params.track_id(f.track).is_none() {
            return;
        }
        let lead_kind = params.lead();
        let track_i = usize::from(f.track == TrackKind::Audio);
        if f.dts_90k < self.floor_90k[track_i] || self.base_90k.is_some_and(|b| f.dts_90k < b) {
            return; // would go back in time on its track
        }
        let is_lead = f.track == lead_kind;
        if is_lead && f.is_key && lead_kind == TrackKind::Video {
            if let Some(k) = self.last_key_90k {
                self.gop_90k = Some(f.dts_90k - k);
            }
            self.last_key_90k = Some(f.dts_90k);
        }

        let Some(seg) = &self.segment else {
            // Waiting for a point to start at.
            if is_lead && f.is_key {
                self.start_segment(f, out);
                self.lead.push(f.clone());
                self.floor_90k[track_i] = f.dts_90k + 1;
            }
            return;
        };
        if !is_lead {
            self.floor_90k[track_i] = f.dts_90k + 1;
            self.other.push(f.clone());
            return;
        }
        let elapsed = f.dts_90k - seg.start_90k;
        let early = lead_kind == TrackKind::Video
            && !self.targets.files
            && (catching_up || seg.first_of_epoch);
        let mut target = self.next_target_90k.unwrap_or(self.targets.segment_90k);
        if self.targets.files {
            // Camera clocks jitter: a keyframe half a frame early still ends the file, rather
            // than the file running a whole GOP longer.
            target -= i64::from(f.dur_90k) / 2;
        }
        let cut_segment =
            (f.is_key && (elapsed >= target || early)) || elapsed >= self.targets.max_segment_90k();
        let key_part = self.targets.files && f.is_key && lead_kind == TrackKind::Video;
        if cut_segment {
            self.next_target_90k = None;
            self.close_part(f.dts_90k, f.dts_90k, out);
            out.push(Event::SegmentEnd {
                duration_90k: elapsed,
                gop_90k: self.gop_90k,
            });
            self.segment = None;
            self.start_segment(f, out);
        } else if !self.lead.is_empty()
            && (key_part
                || f.dts_90k + i64::from(f.dur_90k) - self.part_start_90k > self.targets.part_90k)
        {
            self.close_part(f.dts_90k, f.dts_90k, out);
        }
        self.floor_90k[track_i] = f.dts_90k + 1;
        self.lead.push(f.clone());
    }

    /// Ends the open segment with what it has (the source went away, the consumer lagged, a
    /// new epoch begins); the next segment starts at a keyframe and is a discontinuity.
    pub fn break_here(&mut self, out: &mut Vec<Event>) {
        if let Some(seg) = self.segment.take() {
            let end = self
                .lead
                .last()
                .map(|f| f.dts_90k + i64::from(f.dur_90k))
                .unwrap_or(self.part_start_90k);
            self.close_part(end, i64::MAX, out);
            out.push(Event::SegmentEnd {
                duration_90k: end - seg.start_90k,
                gop_90k: self.gop_90k,
            });
        }
        self.lead.clear();
        self.other.clear();
        if self.epoch.is_some() {
            self.discontinuity_next = true;
        }
        self.first_of_epoch = true;
        self.anchor = None;
        self.last_key_90k = None;
    }

    fn start_segment(&mut self, f: &Frame, out: &mut Vec<Event>) {
        if self.targets.files {
            self.base_90k = Some(f.dts_90k);
        }
        self.base_90k.get_or_insert(f.dts_90k);
        let (wall, at) = *self.anchor.get_or_insert((f.wall_ms, f.dts_90k));
        out.push(Event::SegmentStart {
            discontinuity: std::mem::take(&mut self.discontinuity_next),
            init_id: self.next_init_id.saturating_sub(1),
            pdt_ms: wall + (f.dts_90k - at) / 90,
        });
        self.segment = Some(OpenSegment {
            start_90k: f.dts_90k,
            first_of_epoch: std::mem::take(&mut self.first_of_epoch),
        });
        self.part_start_90k = f.dts_90k;
    }

    /// Writes the open part: lead frames up to `lead_end_90k`, other-track frames before
    /// `other_before_90k`.
    fn close_part(&mut self, lead_end_90k: i64, other_before_90k: i64, out: &mut Vec<Event>) {
        let Some(params) = self.params.clone() else {
            return;
        };
        let lead = std::mem::take(&mut self.lead);
        let split = self
            .other
            .iter()
            .position(|f| f.dts_90k >= other_before_90k)
            .unwrap_or(self.other.len());
        let rest = self.other.split_off(split);
        let other = std::mem::replace(&mut self.other, rest);
        if lead.is_empty() && other.is_empty() {
            return;
        }
        let base = self.base_90k.unwrap_or(0);
        let lead_samples = samples(&params, &lead, Some(lead_end_90k));
        let other_samples = samples(&params, &other, None);
        let mut runs = Vec::with_capacity(2);
        for (frames, s) in [(&lead, &lead_samples), (&other, &other_samples)] {
            let Some(first) = frames.first() else {
                continue;
            };
            let Some(track_id) = params.track_id(first.track) else {
                continue;
            };
            let ts = params.timescale(first.track);
            runs.push(TrackRun {
                track_id,
                base_decode_time: rescale(first.dts_90k - base, TIMESCALE_90K, ts).max(0) as u64,
                samples: s,
            });
        }
        self.sequence = self.sequence.wrapping_add(1);
        let data_len = fmp4::write_fragment_header(&mut self.buf, self.sequence, &runs);
        let header = self.buf.split().freeze();
        let mut chunks = Vec::with_capacity(1 + lead.len() + other.len());
        let len = header.len() + data_len;
        chunks.push(header);
        // Payloads in the order the header's data offsets expect: run by run, lead first.
        chunks.extend(lead.iter().chain(other.iter()).map(|f| f.data.clone()));
        let independent = lead.first().is_some_and(|f| f.is_key);
        let duration_90k = (lead_end_90k - self.part_start_90k).max(0);
        self.part_start_90k = lead_end_90k;
        out.push(Event::Part(Part {
            chunks,
            len,
            duration_90k,
            independent,
        }));
    }
}

/// The samples of consecutive frames of one track, durations from decode-time differences;
/// the last one ends at `exact_end` if given, else lasts its estimated duration.
fn samples<'a>(
    params: &StreamParams,
    frames: &'a [Frame],
    exact_end: Option<i64>,
) -> Vec<Sample<'a>> {
    let Some(first) = frames.first() else {
        return Vec::new();
    };
    let ts = params.timescale(first.track);
    frames
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let dur_90k = match (frames.get(i + 1), exact_end) {
                (Some(next), _) => next.dts_90k - f.dts_90k,
                (None, Some(end)) => end - f.dts_90k,
                (None, None) => i64::from(f.dur_90k),
            };
            Sample {
                duration: rescale(dur_90k, TIMESCALE_90K, ts).clamp(1, i64::from(u32::MAX)) as u32,
                cto: rescale(i64::from(f.cto_90k), TIMESCALE_90K, ts) as i32,
                is_sync: f.is_key,
                data: &f.data,
            }
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::media::{AudioParams, VideoCodec, VideoParams};

    /// Tiny H.264 (64×48, 25 fps) and/or AAC (48 kHz mono) parameters, shared with the store's
    /// tests.
    pub(crate) fn params(video: bool, audio: bool) -> Arc<StreamParams> {
        Arc::new(StreamParams {
            video: video.then(|| VideoParams {
                codec: VideoCodec::H264,
                rfc6381: "avc1.64001f".into(),
                width: 64,
                height: 48,
                frame_rate: Some((25, 1)),
                sample_entry: Bytes::from_static(b"\0\0\0\x08avc1"),
            }),
            audio: audio.then(|| AudioParams {
                rfc6381: "mp4a.40.2".into(),
                sample_rate: 48_000,
                channels: 1,
                sample_entry: Bytes::from_static(b"\0\0\0\x08mp4a"),
                g711: None,
            }),
        })
    }

    /// 25 fps video with a keyframe every `gop` frames; frame n at n × 3600.
    fn video(p: &Arc<StreamParams>, n: i64, gop: i64) -> Frame {
        let mut f = Frame::test_video(n, n % gop == 0, Bytes::from(vec![n as u8; 10]));
        f.params = Arc::clone(p);
        f.wall_ms = 1_000_000 + n * 40;
        f
    }

    fn audio(p: &Arc<StreamParams>, n: i64) -> Frame {
        let mut f = Frame::test_video(0, true, Bytes::from(vec![0xAA; 4]));
        f.track = TrackKind::Audio;
        f.dts_90k = n * 1920;
        f.dur_90k = 1920;
        f.params = Arc::clone(p);
        f
    }

    fn targets(seg_ms: i64, part_ms: i64) -> Targets {
        Targets::hls(seg_ms * 90, part_ms * 90)
    }

    /// Summarises events as text: `I0`, `S`/`S!` (discontinuity), `p<ms>`/`P<ms>` (independent),
    /// `E<ms>`.
    fn trace(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                Event::Init { id, .. } => format!("I{id}"),
                Event::SegmentStart { discontinuity, .. } => {
                    if *discontinuity { "S!" } else { "S" }.to_string()
                }
                Event::Part(p) => format!(
                    "{}{}",
                    if p.independent { "P" } else { "p" },
                    p.duration_90k / 90
                ),
                Event::SegmentEnd { duration_90k, .. } => format!("E{}", duration_90k / 90),
            })
            .collect()
    }

    /// Whether a consumer told `next_cut` before `f` would wake for it (what `hub::lazy`
    /// decides, keyframes and new parameters included).
    fn wakes(seg: &Segmenter, f: &Frame) -> bool {
        match (seg.next_cut(), &seg.params) {
            (Some((lead, end_90k)), Some(p)) => {
                f.is_video_key()
                    || !Arc::ptr_eq(p, &f.params)
                    || (f.track == lead && f.dts_90k + i64::from(f.dur_90k) > end_90k)
            }
            _ => true,
        }
    }

    #[test]
    fn next_cut_names_every_frame_that_ends_a_part_or_segment_and_few_others() {
        for (targets, gop) in [
            (targets(1000, 200), 50),
            (targets(10_000, 1000), 25),
            (Targets::files(30_000 * 90, 1000 * 90), 50),
            (targets(2000, 333), 7),
        ] {
            let p = params(true, true);
            let mut seg = Segmenter::new(targets);
            let (mut woken, mut out) = (0, Vec::new());
            for n in 0..1000 {
                for f in [video(&p, n, gop), audio(&p, n * 3600 / 1920)] {
                    let wake = wakes(&seg, &f);
                    woken += usize::from(wake);
                    out.clear();
                    seg.push(&f, false, &mut out);
                    let cuts = out.iter().any(|e| !matches!(e, Event::SegmentStart { .. }));
                    assert!(
                        wake || !cuts,
                        "frame {n} {:?} cut unannounced: {}",
                        f.track,
                        trace(&out).join(" ")
                    );
                }
            }
            let parts = targets.part_90k / 3600;
            assert!(
                woken <= 2 + 1000 / parts as usize + 1000 / gop as usize,
                "woken {woken} times"
            );
        }
    }

    fn run(seg: &mut Segmenter, frames: &[Frame]) -> Vec<Event> {
        let mut out = Vec::new();
        for f in frames {
            seg.push(f, false, &mut out);
        }
        out
    }

    #[test]
    fn segments_cut_at_the_first_keyframe_after_the_target_and_parts_stay_within_theirs() {
        let p = params(true, false);
        let mut s = Segmenter::new(targets(1000, 200));
        // GOP 50 frames = 2 s; segment target 1 s → segments of one GOP each.
        let frames: Vec<Frame> = (0..151).map(|n| video(&p, n, 50)).collect();
        let t = trace(&run(&mut s, &frames));
        assert_eq!(t[0], "I0");
        assert_eq!(t[1], "S");
        // Ten 200 ms parts per 2 s segment, the first independent.
        let first: Vec<&str> = t[2..13].iter().map(String::as_str).collect();
        assert_eq!(
            first,
            [
                "P200", "p200", "p200", "p200", "p200", "p200", "p200", "p200", "p200", "p200",
                "E2000"
            ]
        );
        assert_eq!(t.iter().filter(|e| e.starts_with('E')).count(), 3);
        assert!(t.iter().filter(|e| e.starts_with('S')).all(|e| e == "S"));
    }

    #[test]
    fn the_first_segment_is_one_gop_then_segments_reach_the_target() {
        let p = params(true, false);
        let mut s = Segmenter::new(targets(5000, 500));
        let frames: Vec<Frame> = (0..401).map(|n| video(&p, n, 50)).collect();
        let ends: Vec<String> = trace(&run(&mut s, &frames))
            .into_iter()
            .filter(|e| e.starts_with('E'))
            .collect();
        // 2 s (first GOP), then 6 s: the first keyframe at or after 5 s.
        assert_eq!(ends, ["E2000", "E6000", "E6000"]);
    }

    #[test]
    fn cached_keyframes_each_start_a_segment() {
        let p = params(true, false);
        let mut s = Segmenter::new(targets(10_000, 500));
        let mut out = Vec::new();
        // The ring held keyframes 0, 50 and 100 when the segmenter started.
        for n in 0..150 {
            s.push(&video(&p, n, 50), n <= 100, &mut out);
        }
        let ends: Vec<String> = trace(&out)
            .into_iter()
            .filter(|e| e.starts_with('E'))
            .collect();
        assert_eq!(ends, ["E2000", "E2000"]);
    }

    #[test]
    fn a_new_epoch_ends_the_segment_and_marks_a_discontinuity() {
        let p = params(true, false);
        let mut s = Segmenter::new(targets(1000, 200));
        let mut frames: Vec<Frame> = (0..30).map(|n| video(&p, n, 25)).collect();
        for n in 30..80 {
            let mut f = video(&p, n + 1000, 25);
            f.epoch = 1;
            frames.push(f);
        }
        let t = trace(&run(&mut s, &frames));
        let s_pos = t.iter().position(|e| e == "S!").expect("discontinuity");
        // The old segment ended right before (frames 25..29 = 200 ms after its cut at 25).
        assert_eq!(t[s_pos - 1], "E200");
        assert_eq!(
            t.iter().filter(|e| e.starts_with('I')).count(),
            1,
            "same params: same init"
        );
    }

    #[test]
    fn new_parameters_bring_a_new_init() {
        let p = params(true, false);
        let q = params(true, true);
        let mut s = Segmenter::new(targets(1000, 200));
        let mut frames: Vec<Frame> = (0..30).map(|n| video(&p, n, 25)).collect();
        frames.extend((30..60).map(|n| video(&q, n + 20, 25)));
        let t = trace(&run(&mut s, &frames));
        let i1 = t.iter().position(|e| e == "I1").expect("second init");
        assert_eq!(t[i1 + 1], "S!");
    }

    #[test]
    fn frames_before_the_first_keyframe_are_dropped_and_tfdt_is_zero_based() {
        let p = params(true, true);
        let mut s = Segmenter::new(targets(1000, 200));
        let mut out = Vec::new();
        // Starts mid-GOP at frame 10; keyframes every 25.
        for n in 10..80 {
            s.push(&video(&p, n, 25), false, &mut out);
            s.push(&audio(&p, n * 3600 / 1920), false, &mut out);
        }
        let Some(Event::Part(first)) = out.iter().find(|e| matches!(e, Event::Part(_))) else {
            panic!("no part");
        };
        assert!(first.independent);
        // The first part's video run starts at tfdt 0: frame 25 is the zero.
        let moof = &first.chunks[0];
        let tfdt = moof
            .windows(4)
            .position(|w| w == b"tfdt")
            .expect("tfdt box");
        let v = u64::from_be_bytes(moof[tfdt + 8..tfdt + 16].try_into().expect("8 bytes"));
        assert_eq!(v, 0);
        // Chunks add up to the declared length.
        for e in &out {
            if let Event::Part(p) = e {
                assert_eq!(p.chunks.iter().map(Bytes::len).sum::<usize>(), p.len);
            }
        }
    }

    #[test]
    fn audio_only_streams_cut_on_audio_time() {
        let p = params(false, true);
        let mut s = Segmenter::new(targets(1000, 200));
        let frames: Vec<Frame> = (0..200).map(|n| audio(&p, n)).collect();
        let t = trace(&run(&mut s, &frames));
        let ends: Vec<&String> = t.iter().filter(|e| e.starts_with('E')).collect();
        assert!(ends.len() >= 3, "{t:?}");
        assert!(
            ends.iter()
                .all(|e| e.as_str() == "E1002" || e.as_str() == "E1000"),
            "{t:?}"
        );
    }

    #[test]
    fn break_here_flushes_what_is_open() {
        let p = params(true, false);
        let mut s = Segmenter::new(targets(1000, 200));
        let mut out = run(
            &mut s,
            &(0..12).map(|n| video(&p, n, 25)).collect::<Vec<_>>(),
        );
        s.break_here(&mut out);
        let t = trace(&out);
        assert_eq!(t.last().map(String::as_str), Some("E480"));
        let parts: i64 = out
            .iter()
            .filter_map(|e| match e {
                Event::Part(p) => Some(p.duration_90k),
                _ => None,
            })
            .sum();
        assert_eq!(parts, 480 * 90);
    }
}
