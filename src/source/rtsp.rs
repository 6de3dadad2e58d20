//! RTSP ingest through retina: the only file that imports `retina`.
//!
//! One call of [`run_session`] is one RTSP session: DESCRIBE, SETUP of the first H.264/H.265
//! video stream and the first audio stream we carry (AAC, else G.711 repackaged as FLAC by
//! [`super::g711`]), PLAY, then frames until an error, a stall or
//! cancellation. retina refuses URLs with credentials and has no connect timeout: credentials
//! are moved out of the URL into retina's `Credentials`, and every step is wrapped in a timeout.
//! Dropping the session (cancellation) closes the TCP connection after a TEARDOWN attempt.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use retina::client::{
    Credentials, InitialTimestampPolicy, PlayOptions, Session, SessionGroup, SessionOptions,
    SetupOptions, TcpTransportOptions, Transport as RetinaTransport, UdpTransportOptions,
};
use retina::codec::{CodecItem, FrameFormat, ParametersRef, VideoParametersCodec};

use tokio::time::Instant;

use super::g711::{FlacPacker, Law};
use super::{Emitter, SourceError};
use crate::config::{mask_url, Transport};
use crate::media::{AudioParams, StreamParams, TrackKind, VideoCodec, VideoParams};

/// Timeouts of one session.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// For each of DESCRIBE, SETUP and PLAY (including the TCP connect).
    pub request: Duration,
    /// No frame for this long ends the session.
    pub no_frame: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            request: Duration::from_secs(10),
            no_frame: Duration::from_secs(10),
        }
    }
}

/// retina's error, kept whole (not as text) as the source of [`SourceError::Rtsp`].
#[derive(Debug)]
pub struct RtspError(retina::Error);

impl std::fmt::Display for RtspError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for RtspError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// The RTSP sessions of one stream, so a reconnect can wait for the stale ones a live555
/// server still feeds (see [`await_stale_sessions`]).
#[derive(Clone, Default)]
pub struct Sessions(Arc<SessionGroup>);

/// Splits `user:pass@` out of an RTSP URL.
fn split_credentials(raw: &str) -> Result<(url::Url, Option<Credentials>), SourceError> {
    let mut url =
        url::Url::parse(raw).map_err(|e| SourceError::BadUrl(format!("{}: {e}", mask_url(raw))))?;
    let creds = if url.username().is_empty() && url.password().is_none() {
        None
    } else {
        let decode = |s: &str| {
            url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        let c = Credentials {
            username: decode(url.username()),
            password: decode(url.password().unwrap_or("")),
        };
        let _ = url.set_username("");
        let _ = url.set_password(None);
        Some(c)
    };
    Ok((url, creds))
}

fn video_params(p: &retina::codec::VideoParameters) -> Result<VideoParams, SourceError> {
    let codec = match p.codec_params() {
        VideoParametersCodec::H264 { .. } => VideoCodec::H264,
        VideoParametersCodec::H265 { .. } => VideoCodec::H265,
        other => return Err(SourceError::Unsupported(format!("video codec {other:?}"))),
    };
    let (width, height) = p.pixel_dimensions();
    let entry = p
        .mp4_sample_entry()
        .build()
        .map_err(|e| SourceError::Unsupported(format!("video sample entry: {e}")))?;
    Ok(VideoParams {
        codec,
        rfc6381: p.rfc6381_codec().to_owned(),
        width,
        height,
        // retina gives the frame *duration* as (numerator, denominator) seconds.
        frame_rate: p.frame_rate().map(|(n, d)| (d, n)),
        sample_entry: Bytes::from(entry),
    })
}

fn audio_params(p: &retina::codec::AudioParameters) -> Option<AudioParams> {
    let rfc6381 = p.rfc6381_codec()?.to_owned();
    let entry = p.mp4_sample_entry().build().ok()?;
    Some(AudioParams {
        rfc6381,
        sample_rate: p.clock_rate(),
        channels: p.channels().get(),
        sample_entry: Bytes::from(entry),
        g711: None,
    })
}

/// Our error for one of retina's. Old live555 servers (before 2017.06.04) keep sending a dropped
/// session's data on a new connection; retina notices (data on a channel nobody set up), notes a
/// stale session in the stream's `SessionGroup` and fails the session: that is
/// [`SourceError::StaleSession`], and the supervisor waits the stale session out.
fn rtsp_error(e: retina::Error) -> SourceError {
    let text = e.to_string();
    if text.starts_with("Received interleaved data on unassigned channel") {
        SourceError::StaleSession
    } else {
        SourceError::Rtsp(RtspError(e))
    }
}

/// Waits until the stale sessions retina knows of in `group` have expired (live555's bug; up
/// to 65 s), or returns at once if there are none.
pub async fn await_stale_sessions(sessions: &Sessions) -> Option<Duration> {
    let group = &sessions.0;
    let status = group.stale_sessions();
    let until = status.max_expires?;
    let wait = until.saturating_duration_since(Instant::now());
    group.await_stale_sessions(&status).await;
    Some(wait)
}

/// A health probe: DESCRIBE within `timeout`; succeeds when the SDP offers video. No SETUP or
/// PLAY; the connection closes when the probe ends.
pub async fn probe(raw_url: &str, timeout: Duration) -> Result<(), SourceError> {
    let (url, creds) = split_credentials(raw_url)?;
    let opts = SessionOptions::default()
        .creds(creds)
        .user_agent("video-server-health-probe".into());
    let session = tokio::time::timeout(timeout, Session::describe(url, opts))
        .await
        .map_err(|_| SourceError::Timeout("DESCRIBE (health probe)"))?
        .map_err(rtsp_error)?;
    if session.streams().iter().any(|s| s.media() == "video") {
        Ok(())
    } else {
        Err(SourceError::Unsupported(
            "the camera offers no video".into(),
        ))
    }
}

/// Runs one RTSP session, publishing frames through `emit` until it fails.
pub async fn run_session(
    raw_url: &str,
    transport: Transport,
    timeouts: Timeouts,
    sessions: Sessions,
    emit: &mut Emitter<'_>,
) -> Result<(), SourceError> {
    let (url, creds) = split_credentials(raw_url)?;
    let opts = SessionOptions::default()
        .creds(creds)
        .user_agent(format!("video-server/{}", env!("CARGO_PKG_VERSION")))
        .session_group(sessions.0);
    let step = |what: &'static str| move |_| SourceError::Timeout(what);
    let mut session = tokio::time::timeout(timeouts.request, Session::describe(url, opts))
        .await
        .map_err(step("DESCRIBE"))?
        .map_err(rtsp_error)?;

    let mut video_i = None;
    let mut aac_i = None;
    let mut g711_i = None;
    for (i, s) in session.streams().iter().enumerate() {
        let enc = s.encoding_name().to_ascii_lowercase();
        match (s.media(), enc.as_str()) {
            ("video", "h264" | "h265") if video_i.is_none() => video_i = Some(i),
            ("audio", "mpeg4-generic") if aac_i.is_none() => aac_i = Some(i),
            ("audio", "pcma" | "pcmu") if g711_i.is_none() => g711_i = Some(i),
            (media, _) => emit.note_unsupported(format!("{media} {enc}")),
        }
    }
    // AAC when the camera offers both; G.711 is repackaged as FLAC.
    let audio_i = aac_i.or(g711_i);
    let mut g711 = match (aac_i, g711_i) {
        (None, Some(i)) => {
            let s = &session.streams()[i];
            let law = Law::from_encoding(s.encoding_name());
            let channels = s.channels().map_or(1, |c| c.get());
            law.and_then(|l| FlacPacker::new(l, s.clock_rate_hz(), channels))
        }
        _ => None,
    };
    if video_i.is_none() && audio_i.is_none() {
        return Err(SourceError::Unsupported(
            "the camera offers no H.264, H.265, AAC or G.711 stream".into(),
        ));
    }
    for i in [video_i, audio_i].into_iter().flatten() {
        let t = match transport {
            Transport::Tcp => RetinaTransport::Tcp(TcpTransportOptions::default()),
            Transport::Udp => RetinaTransport::Udp(UdpTransportOptions::default()),
        };
        let setup = SetupOptions::default()
            .transport(t)
            .frame_format(FrameFormat::MP4);
        tokio::time::timeout(timeouts.request, session.setup(i, setup))
            .await
            .map_err(step("SETUP"))?
            .map_err(rtsp_error)?;
    }
    // Permissive: use RTP-Info's rtptime when every stream has it. retina's default requires it
    // for multi-stream sessions, and many cameras omit it.
    let play = PlayOptions::default().initial_timestamp(InitialTimestampPolicy::Permissive);
    let playing = tokio::time::timeout(timeouts.request, session.play(play))
        .await
        .map_err(step("PLAY"))?
        .map_err(rtsp_error)?;
    let mut demuxed = playing.demuxed().map_err(rtsp_error)?;

    let flac_params = g711.as_ref().map(FlacPacker::params);
    let read_params = |d: &retina::client::Demuxed| -> Result<StreamParams, SourceError> {
        let video = match video_i.and_then(|i| d.streams()[i].parameters()) {
            Some(ParametersRef::Video(v)) => Some(video_params(v)?),
            _ => None,
        };
        let audio = match (
            &flac_params,
            audio_i.and_then(|i| d.streams()[i].parameters()),
        ) {
            (Some(flac), _) => Some(flac.clone()),
            (None, Some(ParametersRef::Audio(a))) => audio_params(a),
            _ => None,
        };
        Ok(StreamParams { video, audio })
    };
    let mut params = Arc::new(read_params(&demuxed)?);
    emit.set_params(Arc::clone(&params));

    // The watchdog: one timer, re-armed lazily (it fires at most once per `no_frame` while
    // frames flow, instead of being set up and torn down for every frame).
    let mut last_item = Instant::now();
    let watchdog = tokio::time::sleep_until(last_item + timeouts.no_frame);
    tokio::pin!(watchdog);
    loop {
        let next = tokio::select! {
            next = demuxed.next() => next,
            _ = &mut watchdog => {
                let due = last_item + timeouts.no_frame;
                if Instant::now() >= due {
                    return Err(SourceError::Stalled(timeouts.no_frame));
                }
                watchdog.as_mut().reset(due);
                continue;
            }
        };
        last_item = Instant::now();
        let item = match next {
            None => return Err(SourceError::Ended),
            Some(Err(e)) => return Err(rtsp_error(e)),
            Some(Ok(item)) => item,
        };
        match item {
            CodecItem::VideoFrame(f) => {
                if f.has_new_parameters() || params.video.is_none() {
                    let fresh = read_params(&demuxed)?;
                    if fresh != *params {
                        params = Arc::new(fresh);
                        emit.set_params(Arc::clone(&params));
                    }
                }
                if params.video.is_none() {
                    continue;
                }
                emit.packets_lost(f.loss().into());
                let ts = f.timestamp();
                let in_90k = crate::media::to_90k(ts.timestamp(), ts.clock_rate().get());
                let is_key = f.is_random_access_point();
                let received = f.end_ctx().received();
                emit.frame(
                    TrackKind::Video,
                    in_90k,
                    None,
                    is_key,
                    Bytes::from(f.into_data()),
                    received,
                );
            }
            CodecItem::AudioFrame(f) => {
                emit.packets_lost(f.loss().into());
                let Some(a) = params.audio.as_ref() else {
                    continue;
                };
                let ts = f.timestamp();
                let in_90k = crate::media::to_90k(ts.timestamp(), ts.clock_rate().get());
                let dur = crate::media::to_90k(i64::from(f.frame_length().get()), a.sample_rate);
                let data = match g711.as_mut() {
                    Some(packer) => match packer.frame(f.data()) {
                        Some(flac) => flac,
                        None => continue,
                    },
                    None => Bytes::copy_from_slice(f.data()),
                };
                emit.audio_frame_len(dur as u32);
                emit.frame(
                    TrackKind::Audio,
                    in_90k,
                    None,
                    true,
                    data,
                    f.ctx().received(),
                );
            }
            CodecItem::Rtcp(rtcp) => {
                let camera_ms = rtcp
                    .pkts()
                    .filter_map(|p| p.as_sender_report().ok().flatten())
                    .find_map(|sr| super::clock::ntp_unix_ms(sr.ntp_timestamp().0));
                if let Some(ms) = camera_ms {
                    emit.camera_time(ms);
                }
            }
            CodecItem::MessageFrame(_) => {}
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_leave_the_url() {
        let (u, c) =
            split_credentials("rtsp://admin:p%40ss@10.1.2.3:554/Streaming/101").expect("parses");
        assert_eq!(u.as_str(), "rtsp://10.1.2.3:554/Streaming/101");
        let c = c.expect("creds");
        assert_eq!(c.username, "admin");
        assert_eq!(c.password, "p@ss");
        let (u, c) = split_credentials("rtsp://10.1.2.3/x").expect("parses");
        assert!(c.is_none());
        assert_eq!(u.as_str(), "rtsp://10.1.2.3/x");
        let err = split_credentials("rtsp://user:secret@[bad").expect_err("bad url");
        assert!(!err.to_string().contains("secret"));
    }
}
