//! Camera-configuration diagnostics: what the gateway can see about a camera's settings that
//! will hurt viewers, said in words an installer can act on.
//!
//! Pure: [`diagnose`] takes what the hub observed and the time, and returns findings. The API
//! shows them (`/streams`, `/streams/{id}`), `/metrics` counts them, the dashboard flags them;
//! the hub logs the keyframe ones once per session as they are seen. Nothing here changes how
//! media flows.

use serde::Serialize;

use crate::media::{StreamParams, VideoCodec};

/// A keyframe interval above this makes segments, files and resyncs coarse.
const LONG_GOP_90K: i64 = 4 * 90_000;
/// No keyframe for this long while frames flow.
const NO_KEYFRAME_MS: i64 = 12_000;

/// A finding's stable identifier, for alerting (`/metrics` label, log field) and tests; the
/// name is written once, here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    NoKeyframes,
    IrregularKeyframes,
    LongGop,
    ClockDrift,
    TrackNotForwarded,
    CameraClockOff,
    H265Browsers,
    PacketLoss,
    TimestampJumps,
}

impl Code {
    /// Every code, for metrics that show each one as 0 or 1.
    pub const ALL: [Code; 9] = [
        Code::NoKeyframes,
        Code::IrregularKeyframes,
        Code::LongGop,
        Code::ClockDrift,
        Code::TrackNotForwarded,
        Code::CameraClockOff,
        Code::H265Browsers,
        Code::PacketLoss,
        Code::TimestampJumps,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Code::NoKeyframes => "no_keyframes",
            Code::IrregularKeyframes => "irregular_keyframes",
            Code::LongGop => "long_gop",
            Code::ClockDrift => "clock_drift",
            Code::TrackNotForwarded => "track_not_forwarded",
            Code::CameraClockOff => "camera_clock_off",
            Code::H265Browsers => "h265_browsers",
            Code::PacketLoss => "packet_loss",
            Code::TimestampJumps => "timestamp_jumps",
        }
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// RTP packets lost before the loss is worth a finding (a few are noise).
const LOST_PACKETS: u64 = 10;

/// A media clock this far off real time makes players stall or fall behind.
const DRIFT_PPM: f64 = 1_000.0;
/// A camera clock this far off the server's shows a wrong time on screen.
const CLOCK_OFF_MS: i64 = 5_000;

/// "1 h 2 min", "3 min 4 s", "5.6 s".
fn human_ms(ms: i64) -> String {
    let s = ms.unsigned_abs() / 1000;
    if s >= 3600 {
        format!("{} h {} min", s / 3600, s % 3600 / 60)
    } else if s >= 60 {
        format!("{} min {} s", s / 60, s % 60)
    } else {
        format!("{:.1} s", ms.unsigned_abs() as f64 / 1000.0)
    }
}

/// How much a finding matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Viewers are worse off until the camera is reconfigured.
    Warning,
    /// Worth knowing; nothing is broken.
    Info,
}

/// One finding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// Stable identifier, for alerting (`/metrics` label) and for tests.
    pub code: Code,
    pub level: Level,
    pub message: String,
}

/// What the hub knows about a stream at one moment.
#[derive(Clone, Debug, Default)]
pub struct Observed<'a> {
    pub online: bool,
    pub params: Option<&'a StreamParams>,
    /// Unix ms the stream came online.
    pub since_ms: i64,
    /// Latest keyframe interval, and the shortest and longest of this session, 90 kHz (0 until
    /// known).
    pub keyframe_interval_90k: i64,
    pub keyframe_interval_min_90k: i64,
    pub keyframe_interval_max_90k: i64,
    /// Unix ms of the latest video keyframe (0: none this session).
    pub last_key_wall_ms: i64,
    /// Tracks the camera offers that are not forwarded (e.g. `audio g726-32`).
    pub unsupported: &'a [String],
    /// The camera's media clock against the server's, ppm (positive: fast).
    pub drift_ppm: Option<f64>,
    /// The camera's wall clock minus the server's, ms.
    pub camera_offset_ms: Option<i64>,
    /// RTP packets lost since the stream was added.
    pub rtp_packets_lost: u64,
    /// Camera clock jumps re-stamped since the stream was added.
    pub timestamp_jumps: u64,
}

fn secs(d_90k: i64) -> String {
    let s = d_90k as f64 / 90_000.0;
    if s >= 10.0 {
        format!("{s:.0} s")
    } else {
        format!("{s:.1} s")
    }
}

/// What the keyframe intervals of a session say (latest, shortest, longest; 90 kHz, 0 until
/// known): irregular ones, or a long one, or nothing. The hub logs the same finding as it sees it.
pub fn keyframe_finding(latest_90k: i64, min_90k: i64, max_90k: i64) -> Option<Diagnostic> {
    if min_90k > 0 && max_90k >= LONG_GOP_90K && max_90k >= 2 * min_90k {
        Some(Diagnostic {
            code: Code::IrregularKeyframes,
            level: Level::Warning,
            message: format!(
                "the keyframe interval varies from {} to {}: this looks like a \"smart\" codec \
                 mode (H.264+/H.265+, Smart Codec, dynamic GOP) that stretches it when the \
                 scene is still. Turn it off for steady keyframes.",
                secs(min_90k),
                secs(max_90k)
            ),
        })
    } else if latest_90k > LONG_GOP_90K {
        Some(Diagnostic {
            code: Code::LongGop,
            level: Level::Warning,
            message: format!(
                "a keyframe every {}: HLS segments and archive files can only be cut at \
                 keyframes, the GOP cache grows, and a viewer that falls behind waits that \
                 long to resync. Set the camera's I-frame interval to 1-2 s (its frame rate, \
                 or twice it).",
                secs(latest_90k)
            ),
        })
    } else {
        None
    }
}

/// The findings for a stream, most important first.
pub fn diagnose(o: &Observed<'_>, now_ms: i64) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let video = o.params.and_then(|p| p.video.as_ref());
    if o.online && video.is_some() {
        let since_key_ms = now_ms - o.last_key_wall_ms.max(o.since_ms);
        if since_key_ms > NO_KEYFRAME_MS {
            out.push(Diagnostic {
                code: Code::NoKeyframes,
                level: Level::Warning,
                message: format!(
                    "no keyframe for {} s while frames arrive: new HLS segments, archive files and \
                     viewers that fell behind wait for one. Check the camera's I-frame interval.",
                    since_key_ms / 1000
                ),
            });
        }
        out.extend(keyframe_finding(
            o.keyframe_interval_90k,
            o.keyframe_interval_min_90k,
            o.keyframe_interval_max_90k,
        ));
    }
    if let Some(ppm) = o.drift_ppm.filter(|p| p.abs() > DRIFT_PPM && o.online) {
        out.push(Diagnostic {
            code: Code::ClockDrift,
            level: Level::Warning,
            message: format!(
                "the camera's media clock runs {:.2} % {} than real time ({:+.0} ppm): players that \
                 play at real speed {} (the MSE player jumps back to live). Check the camera's \
                 time settings and firmware.",
                ppm.abs() / 1e4,
                if ppm > 0.0 { "faster" } else { "slower" },
                ppm,
                if ppm > 0.0 {
                    "fall further behind live"
                } else {
                    "run out of video and stall now and then"
                }
            ),
        });
    }
    // Audio only: a second video track or an ONVIF metadata track is nothing to fix.
    for track in o.unsupported.iter().filter(|t| t.starts_with("audio")) {
        out.push(Diagnostic {
            code: Code::TrackNotForwarded,
            level: Level::Warning,
            message: format!(
                "the camera's {track} is not forwarded (audio: AAC as it is, G.711 as FLAC). \
                 Switch the camera's audio to AAC or G.711 to hear it."
            ),
        });
    }
    if let Some(off) = o.camera_offset_ms.filter(|o| o.abs() > CLOCK_OFF_MS) {
        out.push(Diagnostic {
            code: Code::CameraClockOff,
            level: Level::Info,
            message: format!(
                "the camera's clock is {} {} this server's: the time it shows on screen will not \
                 match the archive's (which uses the server's clock). Set the camera to use NTP.",
                human_ms(off),
                if off > 0 { "ahead of" } else { "behind" }
            ),
        });
    }
    if o.rtp_packets_lost >= LOST_PACKETS {
        out.push(Diagnostic {
            code: Code::PacketLoss,
            level: Level::Warning,
            message: format!(
                "{} RTP packets from the camera were lost: a frame with a lost packet is dropped,                  and a lost keyframe costs viewers its whole GOP. Over UDP, set transport = \"tcp\"                  for this camera; otherwise check the network between it and this server.",
                o.rtp_packets_lost
            ),
        });
    }
    if o.timestamp_jumps > 0 {
        out.push(Diagnostic {
            code: Code::TimestampJumps,
            level: Level::Info,
            message: format!(
                "the camera's clock jumped {} time(s); each jump was re-stamped onto the stream's                  timeline and no frame was lost. A camera that keeps jumping has an unsteady                  time source: check its NTP settings.",
                o.timestamp_jumps
            ),
        });
    }
    if video.is_some_and(|v| v.codec == VideoCodec::H265) {
        out.push(Diagnostic {
            code: Code::H265Browsers,
            level: Level::Info,
            message: "H.265 plays only in browsers with a hardware decoder for it (Safari; Chrome \
                      and Edge on most GPUs); Firefox cannot. H.264 plays everywhere."
                .into(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_names_match_their_serde_form() {
        for c in Code::ALL {
            assert_eq!(
                serde_json::to_value(c).ok(),
                Some(serde_json::json!(c.name()))
            );
        }
    }
    use crate::media::{VideoCodec, VideoParams};
    use bytes::Bytes;

    fn params(codec: VideoCodec) -> StreamParams {
        StreamParams {
            video: Some(VideoParams {
                codec,
                rfc6381: "x".into(),
                width: 1280,
                height: 720,
                frame_rate: None,
                sample_entry: Bytes::new(),
            }),
            audio: None,
        }
    }

    fn codes(d: &[Diagnostic]) -> Vec<&'static str> {
        d.iter().map(|d| d.code.name()).collect()
    }

    fn steady<'a>(p: &'a StreamParams, gop_90k: i64) -> Observed<'a> {
        Observed {
            online: true,
            params: Some(p),
            since_ms: 1_000,
            keyframe_interval_90k: gop_90k,
            keyframe_interval_min_90k: gop_90k,
            keyframe_interval_max_90k: gop_90k,
            last_key_wall_ms: 100_000,
            unsupported: &[],
            drift_ppm: Some(12.0),
            camera_offset_ms: Some(-40),
            rtp_packets_lost: 3,
            timestamp_jumps: 0,
        }
    }

    #[test]
    fn a_well_set_camera_has_nothing_to_report() {
        let p = params(VideoCodec::H264);
        assert!(diagnose(&steady(&p, 2 * 90_000), 101_000).is_empty());
        // Offline: nothing about keyframes.
        let mut o = steady(&p, 2 * 90_000);
        o.online = false;
        assert!(diagnose(&o, 900_000).is_empty());
    }

    #[test]
    fn long_irregular_and_missing_keyframes_are_told_apart() {
        let p = params(VideoCodec::H264);
        let long = diagnose(&steady(&p, 8 * 90_000), 101_000);
        assert_eq!(codes(&long), vec!["long_gop"]);
        assert!(
            long[0].message.contains("every 8.0 s"),
            "{}",
            long[0].message
        );
        let mut smart = steady(&p, 2 * 90_000);
        smart.keyframe_interval_max_90k = 10 * 90_000;
        let d = diagnose(&smart, 101_000);
        assert_eq!(codes(&d), vec!["irregular_keyframes"]);
        assert!(
            d[0].message.contains("from 2.0 s to 10 s"),
            "{}",
            d[0].message
        );
        // Variation among short intervals is not worth a word.
        let mut jitter = steady(&p, 90_000);
        jitter.keyframe_interval_max_90k = 3 * 90_000;
        assert!(diagnose(&jitter, 101_000).is_empty());
        assert_eq!(
            codes(&diagnose(&steady(&p, 2 * 90_000), 120_000)),
            vec!["no_keyframes"]
        );
    }

    #[test]
    fn unsupported_tracks_and_h265_are_reported() {
        let p = params(VideoCodec::H265);
        let tracks = [
            "audio g726-32".to_owned(),
            "application vnd.onvif.metadata".to_owned(),
        ];
        let mut o = steady(&p, 2 * 90_000);
        o.unsupported = &tracks;
        let d = diagnose(&o, 101_000);
        assert_eq!(codes(&d), vec!["track_not_forwarded", "h265_browsers"]);
        assert!(d[0].message.contains("audio g726-32"));
        assert_eq!(d[1].level, Level::Info);
    }

    #[test]
    fn clocks_that_drift_or_are_off_are_reported() {
        let p = params(VideoCodec::H264);
        let mut o = steady(&p, 2 * 90_000);
        o.drift_ppm = Some(-2_500.0);
        o.camera_offset_ms = Some(3_723_000);
        let d = diagnose(&o, 101_000);
        assert_eq!(codes(&d), vec!["clock_drift", "camera_clock_off"]);
        assert!(d[0].message.contains("0.25 % slower"), "{}", d[0].message);
        assert!(d[0].message.contains("stall"), "{}", d[0].message);
        assert!(
            d[1].message.contains("1 h 2 min ahead of"),
            "{}",
            d[1].message
        );
    }

    #[test]
    fn lost_packets_and_clock_jumps_are_reported() {
        let p = params(VideoCodec::H264);
        let mut o = steady(&p, 2 * 90_000);
        o.rtp_packets_lost = 250;
        o.timestamp_jumps = 2;
        let d = diagnose(&o, 101_000);
        assert_eq!(codes(&d), vec!["packet_loss", "timestamp_jumps"]);
        assert!(d[0].message.contains("250 RTP packets") && d[0].message.contains("tcp"));
        assert!(d[1].message.contains("2 time(s)") && d[1].message.contains("no frame was lost"));
    }
}
