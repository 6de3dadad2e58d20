//! One viewer's MSE muxing state: pure, no I/O. Frames in, protocol messages out.
//!
//! What it does, per viewer:
//! - sends `0x09`+codec list and an init segment first, and again when the codec parameters
//!   change (then waits for a keyframe);
//! - gives the viewer its own timeline starting at 0 (as the original does), so players that never
//!   seek start playing at once; after a lag or a discontinuity the timeline continues without
//!   a gap, because MSE would otherwise stall or drop frames until the next keyframe;
//! - catch-up: frames of the cached GOP that were already old when the viewer joined are given
//!   1-tick durations, so the picture reaches the live edge immediately instead of playing the
//!   GOP cache at normal speed and staying up to a GOP behind forever. The last of them keeps
//!   its real duration, which keeps the MSE discontinuity rule (a step over twice the previous
//!   duration) from firing. Audio older than that point is dropped.
//! - one `moof`+`mdat` per frame: the `moof` is written into a reused buffer (no allocation in
//!   steady state), the `mdat` payload is the frame's own buffer, never copied.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use crate::media::{rescale, Frame, StreamParams, TrackKind, TIMESCALE_90K};
use crate::mp4::fmp4::{self, Sample, TrackRun};

/// A message for the client, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Out {
    /// `0x09` followed by the codec list (binary).
    Codecs(Bytes),
    /// An init segment (binary).
    Init(Bytes),
    /// A `moof`+`mdat` fragment (binary): `head` is the `moof` and the `mdat` header, `data`
    /// the frame's own bytes (shared with every viewer, not copied).
    Fragment { head: Bytes, data: Bytes },
    /// The codec list changed after the first init (for the `codec_changed` event).
    CodecChanged(String),
}

#[derive(Debug)]
pub struct ViewerMux {
    params: Option<Arc<StreamParams>>,
    epoch: Option<u32>,
    need_key: bool,
    /// Mapping from the stream timeline to the viewer's: `out = dts - in_base + out_base`.
    mapping: Option<(i64, i64)>,
    /// End of the last video sample sent, viewer time, 90 kHz.
    end_90k: i64,
    /// Per track (video, audio), the earliest viewer time the next sample may start at, 90 kHz,
    /// so that MSE never overwrites what it has. Video: just after the last decode time (its
    /// durations are estimates and camera timestamps jitter). Audio: the end of the last frame
    /// (its durations are exact sample counts).
    track_floor_90k: [i64; 2],
    /// Frames received before this (Unix ms) are the GOP cache: played as catch-up.
    catchup_before_ms: Option<i64>,
    /// Catch-up video frames written so far.
    catchup_n: i64,
    sequence: u32,
    buf: BytesMut,
}

impl ViewerMux {
    /// `catchup_before_ms`: the wall time the viewer joined, or `None` to play the cache in
    /// real time.
    pub fn new(catchup_before_ms: Option<i64>) -> Self {
        ViewerMux {
            params: None,
            epoch: None,
            need_key: true,
            mapping: None,
            end_90k: 0,
            track_floor_90k: [i64::MIN; 2],
            catchup_before_ms,
            catchup_n: 0,
            sequence: 0,
            // Grows to the largest fragment sent (a keyframe) and is reused from then on.
            buf: BytesMut::new(),
        }
    }

    /// The next frame after a lag: continue the timeline at the next keyframe.
    pub fn resync(&mut self) {
        self.need_key = true;
        self.mapping = None;
    }

    fn take(&mut self) -> Bytes {
        self.buf.split().freeze()
    }

    /// Feeds one frame; appends what to send to `out`.
    pub fn push(&mut self, f: &Frame, out: &mut Vec<Out>) {
        let new_params = match &self.params {
            Some(p) => !Arc::ptr_eq(p, &f.params) && **p != *f.params,
            None => true,
        };
        if new_params {
            let had = self.params.is_some();
            self.params = Some(Arc::clone(&f.params));
            let list = f.params.codec_list();
            self.buf.put_u8(0x09);
            self.buf.put_slice(list.as_bytes());
            let codecs = self.take();
            if had {
                out.push(Out::CodecChanged(list));
            }
            out.push(Out::Codecs(codecs));
            out.push(Out::Init(fmp4::init_segment(&f.params)));
            self.need_key = f.params.video.is_some();
            self.mapping = None;
        } else if let Some(p) = &self.params {
            // Same parameters in a new Arc: adopt it so the cheap pointer check hits next time.
            if !Arc::ptr_eq(p, &f.params) {
                self.params = Some(Arc::clone(&f.params));
            }
        }
        if self.epoch != Some(f.epoch) {
            if self.epoch.is_some() && f.params.video.is_some() {
                self.need_key = true;
            }
            self.epoch = Some(f.epoch);
            self.mapping = None;
        }
        if self.need_key {
            if !f.is_video_key() {
                return;
            }
            self.need_key = false;
        }
        let Some(params) = self.params.clone() else {
            return;
        };
        let Some(track_id) = params.track_id(f.track) else {
            return;
        };

        if params.video.is_none() {
            // Catch-up squeezes a video GOP; an audio-only stream starts at once.
            self.catchup_before_ms = None;
        }
        let catching_up =
            f.track == TrackKind::Video && self.catchup_before_ms.is_some_and(|t| f.wall_ms < t);
        let (out_90k, dur_90k) = if catching_up {
            let t = self.catchup_n;
            self.catchup_n += 1;
            // Anchor live frames right after this one, at its real duration.
            self.mapping = Some((f.dts_90k, t));
            (t, 1)
        } else {
            if self.catchup_before_ms.is_some() && f.track == TrackKind::Video {
                self.catchup_before_ms = None;
            }
            let (in_base, out_base) = *self.mapping.get_or_insert((f.dts_90k, self.end_90k));
            let out_90k = f.dts_90k - in_base + out_base;
            if out_90k < 0 || (f.track == TrackKind::Audio && self.catchup_before_ms.is_some()) {
                return; // audio from before the viewer's start
            }
            (out_90k, f.dur_90k)
        };
        let track_i = usize::from(f.track == TrackKind::Audio);
        if out_90k < self.track_floor_90k[track_i] {
            // After a re-anchor (new epoch, lag) a track's first frames can map before what
            // was already sent: drop them rather than go back in time.
            return;
        }
        self.track_floor_90k[track_i] = match f.track {
            TrackKind::Video => out_90k + 1,
            TrackKind::Audio => out_90k + i64::from(dur_90k),
        };
        if f.track == TrackKind::Video {
            // The next frame's decode time is `out + real duration`; this sample's duration
            // ends there except during catch-up, where it is 1 tick.
            let real_end = out_90k + i64::from(f.dur_90k);
            self.end_90k = self.end_90k.max(real_end);
        }

        let timescale = params.timescale(f.track);
        let base = rescale(out_90k, TIMESCALE_90K, timescale).max(0) as u64;
        let duration = if catching_up {
            1
        } else {
            rescale(i64::from(dur_90k), TIMESCALE_90K, timescale).clamp(1, i64::from(u32::MAX))
                as u32
        };
        // Catch-up frames are squeezed 1 tick apart for the decoder's sake; their composition
        // offsets (B-frames) would scatter them over the live frames' presentation times, so
        // they are presented where they are decoded.
        let cto = if catching_up {
            0
        } else {
            rescale(i64::from(f.cto_90k), TIMESCALE_90K, timescale) as i32
        };
        self.sequence = self.sequence.wrapping_add(1);
        let sample = [Sample {
            duration,
            cto,
            is_sync: f.is_key,
            data: &f.data,
        }];
        fmp4::write_fragment_header(
            &mut self.buf,
            self.sequence,
            &[TrackRun {
                track_id,
                base_decode_time: base,
                samples: &sample,
            }],
        );
        out.push(Out::Fragment {
            head: self.take(),
            data: f.data.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::{AudioParams, VideoCodec, VideoParams};

    fn params(tag: &str) -> Arc<StreamParams> {
        Arc::new(StreamParams {
            video: Some(VideoParams {
                codec: VideoCodec::H264,
                rfc6381: tag.into(),
                width: 64,
                height: 48,
                frame_rate: None,
                sample_entry: Bytes::from_static(b"\0\0\0\x08avc1"),
            }),
            audio: Some(AudioParams {
                rfc6381: "mp4a.40.2".into(),
                sample_rate: 48_000,
                channels: 2,
                sample_entry: Bytes::from_static(b"\0\0\0\x08mp4a"),
                g711: None,
            }),
        })
    }

    fn video(p: &Arc<StreamParams>, n: i64, key: bool, wall_ms: i64) -> Frame {
        Frame {
            track: TrackKind::Video,
            dts_90k: 1_000_000 + n * 3600,
            cto_90k: 0,
            dur_90k: 3600,
            is_key: key,
            epoch: 0,
            wall_ms,
            received: std::time::Instant::now(),
            data: Bytes::from_static(b"\0\0\0\x01\x65"),
            params: Arc::clone(p),
        }
    }

    fn audio(p: &Arc<StreamParams>, dts_90k: i64, wall_ms: i64) -> Frame {
        Frame {
            track: TrackKind::Audio,
            dts_90k,
            cto_90k: 0,
            dur_90k: 1920,
            is_key: true,
            epoch: 0,
            wall_ms,
            received: std::time::Instant::now(),
            data: Bytes::from_static(b"\x21"),
            params: Arc::clone(p),
        }
    }

    /// (track id, tfdt, first sample duration, first sample flags) of a fragment.
    fn parse(b: &Bytes) -> (u32, u64, u32, u32) {
        use mp4_atom::Decode;
        let moof = mp4_atom::Moof::decode(&mut std::io::Cursor::new(b.as_ref())).expect("moof");
        let traf = &moof.traf[0];
        let e = traf.trun[0].samples.iter().next().expect("sample");
        (
            traf.tfhd.track_id,
            traf.tfdt.as_ref().expect("tfdt").base_media_decode_time,
            e.duration.expect("duration"),
            e.flags.expect("flags"),
        )
    }

    fn fragments(out: &[Out]) -> Vec<(u32, u64, u32, u32)> {
        out.iter()
            .filter_map(|o| match o {
                Out::Fragment { head, .. } => Some(parse(head)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn starts_with_codecs_then_init_then_zero_based_fragments() {
        let p = params("avc1.42C01E");
        let mut m = ViewerMux::new(None);
        let mut out = Vec::new();
        m.push(&video(&p, 0, false, 0), &mut out); // not a keyframe: skipped
        m.push(&video(&p, 1, true, 0), &mut out);
        m.push(&video(&p, 2, false, 0), &mut out);
        m.push(&audio(&p, 1_000_000 + 3600 + 900, 0), &mut out);
        assert_eq!(
            out[0],
            Out::Codecs(Bytes::from_static(b"\x09avc1.42C01E,mp4a.40.2"))
        );
        assert!(matches!(out[1], Out::Init(_)));
        let f = fragments(&out);
        assert_eq!(f[0], (1, 0, 3600, fmp4::FLAGS_SYNC));
        assert_eq!(f[1], (1, 3600, 3600, fmp4::FLAGS_NON_SYNC));
        assert_eq!(
            f[2],
            (2, 480, 1024, fmp4::FLAGS_SYNC),
            "audio at 900/90k = 480/48k"
        );
    }

    #[test]
    fn catchup_compresses_the_cached_gop_and_continues_at_real_pace() {
        let p = params("avc1.42C01E");
        let mut m = ViewerMux::new(Some(1000));
        let mut out = Vec::new();
        for n in 0..5 {
            m.push(&video(&p, n, n == 0, 900), &mut out); // cached
        }
        m.push(&audio(&p, 1_000_000 + 2 * 3600, 900), &mut out); // cached audio: dropped
        m.push(&video(&p, 5, false, 1001), &mut out); // live
        m.push(&audio(&p, 1_000_000 + 5 * 3600 + 90, 1002), &mut out);
        let f = fragments(&out);
        let times: Vec<u64> = f.iter().map(|x| x.1).collect();
        assert_eq!(
            times,
            vec![0, 1, 2, 3, 4, 4 + 3600, (4 + 3600 + 90) * 48_000 / 90_000]
        );
        assert_eq!(f[3].2, 1, "catch-up samples last one tick");
        assert_eq!(f[5].2, 3600);
    }

    #[test]
    fn resync_after_lag_continues_the_timeline_without_a_gap() {
        let p = params("avc1.42C01E");
        let mut m = ViewerMux::new(None);
        let mut out = Vec::new();
        m.push(&video(&p, 0, true, 0), &mut out);
        m.push(&video(&p, 1, false, 0), &mut out);
        m.resync();
        m.push(&video(&p, 70, false, 0), &mut out); // not a key: skipped
        m.push(&video(&p, 100, true, 0), &mut out);
        let f = fragments(&out);
        assert_eq!(
            f.iter().map(|x| x.1).collect::<Vec<_>>(),
            vec![0, 3600, 7200]
        );
    }

    #[test]
    fn codec_change_sends_new_codecs_and_init_and_waits_for_a_key() {
        let p1 = params("avc1.42C01E");
        let p2 = params("avc1.64001F");
        let mut m = ViewerMux::new(None);
        let mut out = Vec::new();
        m.push(&video(&p1, 0, true, 0), &mut out);
        let mut f = video(&p2, 1, false, 0);
        f.epoch = 1;
        m.push(&f, &mut out);
        let mut k = video(&p2, 2, true, 0);
        k.epoch = 1;
        m.push(&k, &mut out);
        let kinds: Vec<&str> = out
            .iter()
            .map(|o| match o {
                Out::Codecs(_) => "codecs",
                Out::Init(_) => "init",
                Out::Fragment { .. } => "frag",
                Out::CodecChanged(_) => "changed",
            })
            .collect();
        assert_eq!(
            kinds,
            vec!["codecs", "init", "frag", "changed", "codecs", "init", "frag"]
        );
        assert_eq!(fragments(&out)[1].1, 3600);
    }

    #[test]
    fn no_track_goes_back_in_time_across_a_new_epoch() {
        let p = params("avc1.42C01E");
        let mut m = ViewerMux::new(None);
        let mut out = Vec::new();
        for n in 0..10 {
            m.push(&video(&p, n, n == 0, 0), &mut out);
            m.push(&audio(&p, 1_000_000 + n * 3600 + 1000, 0), &mut out);
        }
        // The camera rebooted: a new epoch whose audio starts a little before its keyframe.
        let mut a = audio(&p, 2_000_000 - 1500, 0);
        a.epoch = 1;
        m.push(&a, &mut out);
        let mut k = video(&p, 0, true, 0);
        k.dts_90k = 2_000_000;
        k.epoch = 1;
        m.push(&k, &mut out);
        for (i, d) in [-900i64, 100, 2000].into_iter().enumerate() {
            let mut a = audio(&p, 2_000_000 + d, 0);
            a.epoch = 1;
            m.push(&a, &mut out);
            let mut v = video(&p, i as i64 + 1, false, 0);
            v.dts_90k = 2_000_000 + (i as i64 + 1) * 3600;
            v.epoch = 1;
            m.push(&v, &mut out);
        }
        for track in [1, 2] {
            let t: Vec<(u64, u32)> = fragments(&out)
                .iter()
                .filter(|f| f.0 == track)
                .map(|f| (f.1, f.2))
                .collect();
            for w in t.windows(2) {
                assert!(
                    w[1].0 >= w[0].0 + u64::from(w[0].1) - 1,
                    "track {track}: {t:?}"
                );
            }
        }
    }

    #[test]
    fn jittery_timestamps_lose_no_frame() {
        let p = params("avc1.42C01E");
        let mut m = ViewerMux::new(None);
        let mut out = Vec::new();
        let mut dts = 1_000_000;
        let mut prev_delta = 3600;
        for (n, delta) in [3621i64, 3579, 3650, 3550, 3600, 3400, 3800]
            .into_iter()
            .enumerate()
        {
            let mut f = video(&p, 0, n == 0, 0);
            f.dts_90k = dts;
            f.dur_90k = prev_delta as u32; // the estimate: the previous delta
            m.push(&f, &mut out);
            dts += delta;
            prev_delta = delta;
        }
        assert_eq!(fragments(&out).len(), 7, "every frame is sent");
    }

    #[test]
    fn equal_parameters_in_a_new_arc_do_not_reinit() {
        let mut m = ViewerMux::new(None);
        let mut out = Vec::new();
        m.push(&video(&params("avc1.42C01E"), 0, true, 0), &mut out);
        m.push(&video(&params("avc1.42C01E"), 1, false, 0), &mut out);
        assert_eq!(out.len(), 4);
    }

    #[test]
    fn catch_up_frames_are_presented_where_they_are_decoded_and_live_ones_keep_their_offset() {
        use mp4_atom::Decode;
        let p = params("avc1.64001F");
        let cto = |b: &Bytes| {
            let moof = mp4_atom::Moof::decode(&mut std::io::Cursor::new(b.as_ref())).expect("moof");
            let e = moof.traf[0].trun[0].samples.iter().next().expect("sample");
            e.cts.expect("cto")
        };
        let mut m = ViewerMux::new(Some(1000));
        let mut out = Vec::new();
        // A cached GOP with B-frames (offsets of two frames), then a live frame.
        for (n, wall) in [(0, 0), (1, 0), (2, 0), (3, 2000)] {
            let mut f = video(&p, n, n == 0, wall);
            f.cto_90k = 7200;
            m.push(&f, &mut out);
        }
        let ctos: Vec<i64> = out
            .iter()
            .filter_map(|o| match o {
                Out::Fragment { head, .. } => Some(cto(head)),
                _ => None,
            })
            .collect();
        assert_eq!(ctos, vec![0, 0, 0, 7200]);
    }

    #[test]
    fn an_audio_only_stream_is_sent_at_once_with_catch_up_on() {
        let mut p = (*params("mp4a.40.2")).clone();
        p.video = None;
        let p = Arc::new(p);
        let mut m = ViewerMux::new(Some(1000));
        let mut out = Vec::new();
        for n in 0..3 {
            m.push(&audio(&p, n * 1920, 0), &mut out);
        }
        assert_eq!(fragments(&out).len(), 3, "every audio frame sent");
    }
}
