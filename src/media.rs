//! Our own media types: the only thing that leaves a source and enters the hub.
//!
//! Belongs here: [`Frame`] (one access unit with its time on the stream's 90 kHz timeline), codec
//! parameters ([`StreamParams`]) with their RFC 6381 strings and ready MP4 sample entries, and time
//! conversions. Does not belong here: anything from retina or mp4-atom (converted in
//! `source::rtsp` and `source::file`), muxing (`mp4::fmp4`), fan-out (`hub`).
//!
//! Time: every frame carries `dts_90k`, a decode time in 90 kHz ticks on the *stream timeline*,
//! which never goes backwards while the process runs, across reconnects and timestamp jumps.
//! A change of [`Frame::epoch`] tells consumers that a discontinuity happened just before this
//! frame (reconnect, timestamp jump, SSRC or parameter change).

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

/// 90 kHz: the clock of every timestamp in this crate unless a name says otherwise.
pub const TIMESCALE_90K: u32 = 90_000;

/// Which track of a stream a frame belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TrackKind {
    Video,
    Audio,
}

/// One access unit (a video picture or an audio frame) as received from a camera.
#[derive(Clone)]
pub struct Frame {
    pub track: TrackKind,
    /// Decode time on the stream timeline, 90 kHz.
    pub dts_90k: i64,
    /// Presentation minus decode time, 90 kHz (0 for cameras: RTP carries no DTS).
    pub cto_90k: i32,
    /// Best estimate of this frame's duration, 90 kHz (the previous delta of the same track).
    pub dur_90k: u32,
    /// Video: an IDR/IRAP picture. Audio: always true.
    pub is_key: bool,
    /// Increments on every discontinuity; consumers re-initialise when it changes.
    pub epoch: u32,
    /// Wall-clock time the frame was received, Unix milliseconds.
    pub wall_ms: i64,
    /// When the frame's last packet was read from the source (monotonic): where the
    /// gateway's added latency starts.
    pub received: std::time::Instant,
    /// Video: length-prefixed NAL units (4 bytes), no in-band parameter sets. Audio: raw AAC.
    pub data: Bytes,
    /// Codec parameters in force for this frame; a new `Arc` means new parameters.
    pub params: Arc<StreamParams>,
}

impl Frame {
    /// A video random access point: where a decoder (and a new viewer) can start.
    pub fn is_video_key(&self) -> bool {
        self.track == TrackKind::Video && self.is_key
    }
}

#[cfg(test)]
impl Frame {
    /// A video frame `n` of a 25 fps H.264 stream, for unit tests.
    pub fn test_video(n: i64, is_key: bool, data: Bytes) -> Frame {
        static PARAMS: std::sync::OnceLock<Arc<StreamParams>> = std::sync::OnceLock::new();
        let params = PARAMS.get_or_init(|| {
            Arc::new(StreamParams {
                video: Some(VideoParams {
                    codec: VideoCodec::H264,
                    rfc6381: "avc1.42C01E".into(),
                    width: 320,
                    height: 240,
                    frame_rate: Some((25, 1)),
                    sample_entry: Bytes::new(),
                }),
                audio: None,
            })
        });
        Frame {
            track: TrackKind::Video,
            dts_90k: n * 3600,
            cto_90k: 0,
            dur_90k: 3600,
            is_key,
            epoch: 0,
            wall_ms: 0,
            received: std::time::Instant::now(),
            data,
            params: Arc::clone(params),
        }
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frame")
            .field("track", &self.track)
            .field("dts_90k", &self.dts_90k)
            .field("dur_90k", &self.dur_90k)
            .field("is_key", &self.is_key)
            .field("epoch", &self.epoch)
            .field("len", &self.data.len())
            .finish_non_exhaustive()
    }
}

/// Video codecs we forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VideoCodec {
    H264,
    H265,
}

/// Parameters of a video track.
#[derive(Clone, PartialEq, Eq)]
pub struct VideoParams {
    pub codec: VideoCodec,
    /// e.g. `avc1.64001F` or `hvc1.1.6.L93.B0`.
    pub rfc6381: String,
    pub width: u32,
    pub height: u32,
    /// Frames per second as (numerator, denominator), if the stream says.
    pub frame_rate: Option<(u32, u32)>,
    /// A complete `avc1`/`hvc1` box (with `avcC`/`hvcC`), ready for `stsd`.
    pub sample_entry: Bytes,
}

/// A G.711 law: A-law (`PCMA`) or µ-law (`PCMU`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum G711 {
    A,
    Mu,
}

impl G711 {
    /// From an RTP encoding name (`pcma`, `pcmu`, any case).
    pub fn from_encoding(name: &str) -> Option<G711> {
        match name.to_ascii_lowercase().as_str() {
            "pcma" => Some(G711::A),
            "pcmu" => Some(G711::Mu),
            _ => None,
        }
    }

    /// The linear 16-bit sample a G.711 code stands for (ITU-T G.711 tables).
    pub fn decode(self, code: u8) -> i16 {
        match self {
            G711::A => {
                let a = code ^ 0x55;
                let seg = (a & 0x70) >> 4;
                let mut t = i16::from(a & 0x0f) << 4;
                t += if seg == 0 { 8 } else { 0x108 };
                if seg > 1 {
                    t <<= seg - 1;
                }
                if a & 0x80 != 0 {
                    t
                } else {
                    -t
                }
            }
            G711::Mu => {
                let u = !code;
                let t = ((i16::from(u & 0x0f) << 3) + 0x84) << ((u & 0x70) >> 4);
                if u & 0x80 != 0 {
                    0x84 - t
                } else {
                    t - 0x84
                }
            }
        }
    }

    /// The G.711 code for a linear 16-bit sample (the inverse of [`G711::decode`] on every
    /// value it yields).
    pub fn encode(self, sample: i16) -> u8 {
        let negative = sample < 0;
        let magnitude = i32::from(sample).unsigned_abs().min(32_767) as i32;
        match self {
            G711::A => {
                // Decoded values are odd multiples of 8 in the 13-bit domain's scale.
                let v = magnitude >> 3;
                let (seg, mant) = if v < 32 {
                    (0, v >> 1)
                } else {
                    let seg = (31 - v.leading_zeros() as i32) - 4;
                    (seg, (v >> seg) & 0x0f)
                };
                let sign = if negative { 0 } else { 0x80 };
                (sign | (seg << 4) as u8 as i32 | mant) as u8 ^ 0x55
            }
            G711::Mu => {
                let biased = magnitude.min(32_635) + 0x84;
                let exp = (31 - biased.leading_zeros() as i32 - 7).clamp(0, 7);
                let mant = (biased >> (exp + 3)) & 0x0f;
                let sign = if negative { 0x80 } else { 0 };
                !((sign | (exp << 4) | mant) as u8)
            }
        }
    }
}

/// Parameters of an audio track: AAC, or FLAC (what G.711 cameras become at ingest).
#[derive(Clone, PartialEq, Eq)]
pub struct AudioParams {
    /// e.g. `mp4a.40.2`.
    pub rfc6381: String,
    pub sample_rate: u32,
    pub channels: u16,
    /// A complete `mp4a` box (with `esds`) or `fLaC` box (with `dfLa`), ready for `stsd`.
    pub sample_entry: Bytes,
    /// The camera's G.711 law when the FLAC track carries its samples (verbatim, 16 bits):
    /// what WebRTC sends as `PCMA`/`PCMU` again.
    pub g711: Option<G711>,
}

/// The codec parameters of a whole stream at one moment.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct StreamParams {
    pub video: Option<VideoParams>,
    pub audio: Option<AudioParams>,
}

impl StreamParams {
    /// Whether the two need the same init segment (same sample entries); measured things such
    /// as the frame rate may differ.
    pub fn same_codecs(&self, other: &StreamParams) -> bool {
        self.video.as_ref().map(|v| &v.sample_entry)
            == other.video.as_ref().map(|v| &v.sample_entry)
            && self.audio.as_ref().map(|a| &a.sample_entry)
                == other.audio.as_ref().map(|a| &a.sample_entry)
    }

    /// The `codecs=` list the MSE protocol sends after `0x09`: video first, then audio.
    pub fn codec_list(&self) -> String {
        let mut out = String::new();
        if let Some(v) = &self.video {
            out.push_str(&v.rfc6381);
        }
        if let Some(a) = &self.audio {
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(&a.rfc6381);
        }
        out
    }

    /// MP4 track id of a track in init segments and fragments made from these parameters:
    /// video is 1, audio follows it.
    pub fn track_id(&self, kind: TrackKind) -> Option<u32> {
        match kind {
            TrackKind::Video => self.video.as_ref().map(|_| 1),
            TrackKind::Audio => self
                .audio
                .as_ref()
                .map(|_| if self.video.is_some() { 2 } else { 1 }),
        }
    }

    /// The track that decides cuts and random access points: video, or audio without video.
    pub fn lead(&self) -> TrackKind {
        if self.video.is_some() {
            TrackKind::Video
        } else {
            TrackKind::Audio
        }
    }

    /// Media timescale of a track: 90 kHz for video, the sample rate for audio.
    pub fn timescale(&self, kind: TrackKind) -> u32 {
        match (kind, &self.audio) {
            (TrackKind::Audio, Some(a)) => a.sample_rate,
            _ => TIMESCALE_90K,
        }
    }
}

impl fmt::Debug for StreamParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamParams({})", self.codec_list())
    }
}

/// Converts a time in `ticks` at `rate` Hz to 90 kHz, rounding to nearest.
pub fn to_90k(ticks: i64, rate: u32) -> i64 {
    rescale(ticks, rate, TIMESCALE_90K)
}

/// Converts between timescales without overflow, rounding to nearest.
pub fn rescale(ticks: i64, from_hz: u32, to_hz: u32) -> i64 {
    if from_hz == to_hz || from_hz == 0 {
        return ticks;
    }
    let num = i128::from(ticks) * i128::from(to_hz);
    let den = i128::from(from_hz);
    let half = den / 2;
    let q = if num >= 0 {
        (num + half) / den
    } else {
        (num - half) / den
    };
    q as i64
}

/// RFC 6381 string of an H.264 stream from its `avcC` record (profile, compatibility, level).
pub fn avc1_codec_string(avcc: &[u8]) -> Option<String> {
    if avcc.len() < 4 {
        return None;
    }
    Some(format!(
        "avc1.{:02X}{:02X}{:02X}",
        avcc[1], avcc[2], avcc[3]
    ))
}

/// RFC 6381 string of an AAC stream from its AudioSpecificConfig (`mp4a.40.<object type>`).
pub fn aac_codec_string(asc: &[u8]) -> String {
    let aot = asc.first().map(|b| b >> 3).unwrap_or(2);
    let aot = if aot == 0 { 2 } else { aot };
    format!("mp4a.40.{aot}")
}

/// Unix time now in milliseconds.
pub fn unix_ms_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn g711_codes_survive_decode_and_encode() {
        for code in 0..=255u8 {
            assert_eq!(
                G711::A.encode(G711::A.decode(code)),
                code,
                "A-law {code:#x}"
            );
            // µ-law has two zeros (0x7f and 0xff); encoding 0 gives 0xff.
            if code != 0x7f {
                assert_eq!(
                    G711::Mu.encode(G711::Mu.decode(code)),
                    code,
                    "µ-law {code:#x}"
                );
            }
        }
        // Extremes clip instead of wrapping.
        assert_eq!(G711::Mu.encode(i16::MIN), G711::Mu.encode(-32_767));
        assert_eq!(G711::A.decode(G711::A.encode(i16::MAX)), 32_256);
    }

    #[test]
    fn rescale_rounds_and_handles_negatives() {
        assert_eq!(to_90k(1024, 48_000), 1920);
        assert_eq!(to_90k(1024, 44_100), 2090);
        assert_eq!(to_90k(-1024, 48_000), -1920);
        assert_eq!(rescale(1920, 90_000, 48_000), 1024);
        assert_eq!(to_90k(i64::MAX / 2, 90_000), i64::MAX / 2);
    }

    #[test]
    fn codec_strings() {
        assert_eq!(
            avc1_codec_string(&[1, 0x64, 0x00, 0x1f, 0xff]).as_deref(),
            Some("avc1.64001F")
        );
        assert_eq!(avc1_codec_string(&[1]), None);
        assert_eq!(aac_codec_string(&[0x12, 0x10]), "mp4a.40.2");
        assert_eq!(aac_codec_string(&[0x2b, 0x92]), "mp4a.40.5");
    }

    #[test]
    fn track_ids_follow_presence() {
        let a = AudioParams {
            rfc6381: "mp4a.40.2".into(),
            sample_rate: 48_000,
            channels: 2,
            sample_entry: Bytes::new(),
            g711: None,
        };
        let p = StreamParams {
            video: None,
            audio: Some(a),
        };
        assert_eq!(p.track_id(TrackKind::Audio), Some(1));
        assert_eq!(p.track_id(TrackKind::Video), None);
        assert_eq!(p.timescale(TrackKind::Audio), 48_000);
        assert_eq!(p.codec_list(), "mp4a.40.2");
    }
}
