//! Ingest: one supervised task per stream that turns a camera (or a looped file) into
//! [`Frame`]s on the hub.
//!
//! Belongs here: the supervisor loop (run one session, log why it ended, back off with jitter,
//! retry forever, stop for real on cancellation), the [`Emitter`] that maps source times onto the
//! stream timeline and publishes, and the source kinds (`rtsp` via retina, `file`). Only
//! `media` types leave this module. Does not belong here: what happens to frames afterwards.

pub mod clock;
pub mod file;
pub mod g711;
pub mod pace;
pub mod peer;
pub mod probe;
pub mod reorder;
pub mod rtsp;
pub mod sps;
pub mod timeline;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use crate::config::SourceSpec;
use crate::hub::StreamHub;
use crate::media::{Frame, StreamParams, TrackKind};
pub use timeline::Timeline;

/// Why a source session ended.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("bad URL {0}")]
    BadUrl(String),
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    #[error("RTSP: {0}")]
    Rtsp(#[source] rtsp::RtspError),
    #[error("no frame for {0:?}")]
    Stalled(Duration),
    #[error("the source ended the stream")]
    Ended,
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("file: {0}")]
    File(String),
    #[error("peer node: {0}")]
    Peer(String),
    #[error("the session panicked: {0}")]
    Panicked(String),
    #[error(
        "the camera still sends a dropped session's data (a bug of live555 servers before \
         2017.06.04); waiting for that session to expire before reconnecting"
    )]
    StaleSession,
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}

/// Capped exponential backoff with jitter. Pure: the caller supplies the randomness.
#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max,
            attempt: 0,
        }
    }

    /// The next delay: `base · 2^attempt` capped at `max`, then scaled by `0.5 + jitter/2`
    /// (`jitter` in 0..1) so that cameras behind one switch do not reconnect in lockstep.
    pub fn next_delay(&mut self, jitter: f64) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        exp.mul_f64(0.5 + jitter.clamp(0.0, 1.0) / 2.0)
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Publishes a session's frames: maps times, tracks parameters and the online state.
pub struct Emitter<'a> {
    hub: &'a StreamHub,
    timeline: &'a mut Timeline,
    params: Option<Arc<StreamParams>>,
    clock: Instant,
    online: bool,
    unsupported: &'a mut HashSet<String>,
    audio_dur_90k: u32,
    frames: u64,
    epoch: u32,
    /// Added to the timeline's epochs: where this source task's numbering starts in the hub.
    epoch_base: u32,
    drift: clock::DriftEstimator,
    jumps_this_session: u64,
}

impl<'a> Emitter<'a> {
    fn new(
        hub: &'a StreamHub,
        timeline: &'a mut Timeline,
        unsupported: &'a mut HashSet<String>,
        clock: Instant,
        epoch_base: u32,
    ) -> Self {
        Emitter {
            epoch_base,
            hub,
            timeline,
            params: None,
            clock,
            online: false,
            unsupported,
            audio_dur_90k: 1920,
            frames: 0,
            epoch: 0,
            drift: clock::DriftEstimator::default(),
            jumps_this_session: 0,
        }
    }

    /// The session's codec parameters (initial or changed).
    pub fn set_params(&mut self, params: Arc<StreamParams>) {
        if let Some(old) = &self.params {
            if **old == *params {
                return;
            }
            info!(codecs = %params.codec_list(), "codec parameters changed");
            self.timeline.parameters_changed();
        }
        if let Some(v) = &params.video {
            match sps::reorder_depth(v.codec, &v.sample_entry) {
                Some(depth) => {
                    if depth != sps::ReorderDepth::None {
                        info!(
                            ?depth,
                            "the camera's SPS allows reordered frames (B-frames)"
                        );
                    }
                    self.timeline.set_reorder_depth(depth);
                    self.publish_reorder_depth();
                }
                None => warn!(
                    "the camera's SPS could not be read; reordering is learnt from the stream"
                ),
            }
        }
        self.params = Some(Arc::clone(&params));
        if self.online {
            self.hub.set_online(params);
        }
    }

    /// Logs an unsupported track once per stream.
    pub fn note_unsupported(&mut self, what: String) {
        if self.unsupported.insert(what.clone()) {
            warn!(track = %what, "unsupported track ignored");
            self.hub.note_unsupported(&what);
        }
    }

    /// The camera's own time from an RTCP sender report (Unix ms), compared with ours now.
    pub fn camera_time(&mut self, camera_unix_ms: i64) {
        let offset = camera_unix_ms - crate::media::unix_ms_now();
        self.hub.stats.clock.set_offset_ms(offset);
    }

    /// A camera clock jump was re-stamped: counted always, logged on the first of a session
    /// and then once every 100 (DVRs that jump every few seconds would flood the log).
    fn note_jump(&mut self, track: TrackKind) {
        let n = self.timeline.jumps();
        self.hub
            .stats
            .timestamp_jumps
            .store(n, std::sync::atomic::Ordering::Relaxed);
        self.jumps_this_session += 1;
        if self.jumps_this_session == 1 || n % 100 == 0 {
            warn!(
                ?track,
                jumps_total = n,
                "the camera's clock jumped; re-stamped onto the stream timeline (no frame dropped)"
            );
        }
    }

    fn publish_reorder_depth(&self) {
        let (depth, _) = self.timeline.reorder();
        self.hub
            .stats
            .reorder_depth
            .store(u64::from(depth), std::sync::atomic::Ordering::Relaxed);
    }

    /// RTP packets lost before a frame (a sequence number gap).
    pub fn packets_lost(&mut self, n: u64) {
        if n > 0 {
            self.hub
                .stats
                .rtp_packets_lost
                .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// The duration of audio frames, 90 kHz.
    pub fn audio_frame_len(&mut self, dur_90k: u32) {
        self.audio_dur_90k = dur_90k;
    }

    /// Publishes one frame presented at source time `pts_in_90k`, whose last packet was read
    /// at `received`. `cto_90k` is its composition offset when the source knows it (files);
    /// cameras pass `None` and decode times are derived (B-frames).
    pub fn frame(
        &mut self,
        track: TrackKind,
        pts_in_90k: i64,
        cto_90k: Option<i32>,
        is_key: bool,
        data: Bytes,
        received: Instant,
    ) {
        let Some(params) = self.params.clone() else {
            return;
        };
        let default_dur = match track {
            TrackKind::Video => params
                .video
                .as_ref()
                .and_then(|v| v.frame_rate)
                .filter(|&(n, d)| n > 0 && d > 0)
                .map(|(n, d)| (90_000u64 * u64::from(d) / u64::from(n)).clamp(1, 90_000) as u32)
                .unwrap_or(3600),
            TrackKind::Audio => self.audio_dur_90k,
        };
        let arrival_ms = self.clock.elapsed().as_millis() as i64;
        let jumps_before = self.timeline.jumps();
        let reorder_before = self.timeline.reorder();
        let m = self
            .timeline
            .map(track, pts_in_90k, cto_90k, arrival_ms, default_dur);
        if m.epoch != self.epoch {
            self.epoch = m.epoch;
            self.hub.stats.discontinuities.store(
                self.timeline.discontinuities(),
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        if self.timeline.jumps() != jumps_before {
            self.note_jump(track);
        }
        let (depth, grown) = self.timeline.reorder();
        if (depth, grown) != reorder_before {
            self.publish_reorder_depth();
            if grown > reorder_before.1 {
                warn!(depth, "frames arrive further out of order than the camera's SPS says; reorder depth raised (presentation moved later once)");
            }
        }
        if params.lead() == track {
            self.drift.push(m.epoch, m.dts_90k, arrival_ms);
            if let Some(ppm) = self.drift.ppm() {
                self.hub.stats.clock.set_drift_ppm(ppm);
            }
        }
        if !self.online {
            self.online = true;
            info!(codecs = %params.codec_list(), "stream online");
            self.hub.set_online(Arc::clone(&params));
        }
        self.frames += 1;
        self.hub.publish(Frame {
            track,
            dts_90k: m.dts_90k,
            cto_90k: m.cto_90k,
            dur_90k: m.dur_90k,
            is_key,
            epoch: self.epoch_base.saturating_add(m.epoch),
            wall_ms: crate::media::unix_ms_now(),
            received,
            data,
            params,
        });
    }
}

/// Books a camera session start with the process's pacer: how long to wait first.
fn connect_slot() -> Duration {
    static PACER: std::sync::OnceLock<(Instant, std::sync::Mutex<pace::ConnectPacer>)> =
        std::sync::OnceLock::new();
    let (origin, pacer) = PACER.get_or_init(|| {
        let p = pace::ConnectPacer::new(pace::CONNECTS_PER_S, pace::CONNECT_BURST, Duration::ZERO);
        (Instant::now(), std::sync::Mutex::new(p))
    });
    pacer
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .book(origin.elapsed())
}

/// Runs a stream's source until `cancel` fires: sessions are retried forever with backoff,
/// including when the very first connection fails.
pub async fn supervise(spec: SourceSpec, hub: Arc<StreamHub>, cancel: CancellationToken) {
    let span = tracing::info_span!("source", stream = %hub.id);
    async move {
        let mut timeline = Timeline::default();
        let mut unsupported = HashSet::new();
        // Continue the hub's epochs: a new task's timeline is unrelated to the last one's.
        let epoch_base = hub.epoch_base();
        // Capped at 1 s: a camera that comes back is seen within about a second, and a refused
        // connection costs nothing. A camera that hangs costs its timeouts, not more attempts.
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_millis(1000));
        let mut last_logged: Option<(String, Instant)> = None;
        let mut failures_since_log = 0u64;
        let group = rtsp::Sessions::default();
        let clock = Instant::now();
        loop {
            // Camera sessions start at a paced rate over all streams (no connection storm at
            // start or after a network outage).
            if matches!(spec, SourceSpec::Rtsp { .. }) {
                let wait = connect_slot();
                if !wait.is_zero() {
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
            timeline.new_session();
            hub.stats
                .sessions
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let started = Instant::now();
            let mut emit = Emitter::new(&hub, &mut timeline, &mut unsupported, clock, epoch_base);
            // A panic inside a session (a library choking on a malformed stream) must not end
            // the stream for good: it is logged and retried like any other session error.
            let session = std::panic::AssertUnwindSafe(run_once(&spec, &group, &mut emit));
            let result = tokio::select! {
                _ = cancel.cancelled() => break,
                r = session.catch_unwind() => r.unwrap_or_else(|p| Err(SourceError::Panicked(panic_message(&p)))),
            };
            let had_frames = emit.frames > 0;
            if started.elapsed() > Duration::from_secs(30) && had_frames {
                backoff.reset();
            }
            let delay = backoff.next_delay(rand::random::<f64>());
            match result {
                Ok(()) => {
                    info!("source finished");
                    hub.set_offline(None);
                    if matches!(spec, SourceSpec::LocalFile { looped: false, .. }) {
                        break;
                    }
                }
                Err(e) => {
                    let msg = e.to_string();
                    // A dead camera is retried every second or so: say so when the reason
                    // changes and then once a minute, not on every attempt.
                    let repeat = last_logged
                        .as_ref()
                        .is_some_and(|(m, at)| *m == msg && at.elapsed() < Duration::from_secs(60));
                    if repeat {
                        failures_since_log += 1;
                        tracing::debug!(error = %msg, "source session ended");
                    } else {
                        warn!(error = %msg, retry_in_ms = delay.as_millis() as u64, failures_since_last_report = failures_since_log, "source session ended; retrying");
                        last_logged = Some((msg.clone(), Instant::now()));
                        failures_since_log = 0;
                    }
                    if had_frames {
                        last_logged = None;
                    }
                    hub.set_offline(Some(msg));
                    if matches!(e, SourceError::StaleSession) {
                        // Reconnecting now would meet the stale data again: wait it out.
                        let waited = tokio::select! {
                            _ = cancel.cancelled() => break,
                            w = rtsp::await_stale_sessions(&group) => w,
                        };
                        info!(waited_s = waited.map_or(0, |d| d.as_secs()), "stale camera session expired; reconnecting");
                    }
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        hub.set_offline(None);
        info!("source stopped");
    }
    .instrument(span)
    .await
}

async fn run_once(
    spec: &SourceSpec,
    group: &rtsp::Sessions,
    emit: &mut Emitter<'_>,
) -> Result<(), SourceError> {
    match spec {
        SourceSpec::Rtsp { url, transport } => {
            if url.is_empty() {
                // The original accepts an empty URL and never runs it; so do we, quietly.
                std::future::pending::<()>().await;
            }
            rtsp::run_session(
                url,
                *transport,
                rtsp::Timeouts::default(),
                group.clone(),
                emit,
            )
            .await
        }
        SourceSpec::LocalFile { file, looped } => {
            let movie = file::open(file).await?;
            file::play(&movie, *looped, emit).await
        }
        SourceSpec::Peer { url, .. } => {
            peer::run_session(url, rtsp::Timeouts::default().no_frame, emit).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_session_becomes_an_error_with_its_message() {
        let r = std::panic::AssertUnwindSafe(async { panic!("bad NAL at {}", 42) })
            .catch_unwind()
            .await;
        let msg = panic_message(&*r.expect_err("panicked"));
        assert_eq!(msg, "bad NAL at 42");
        let r = std::panic::AssertUnwindSafe(async { std::panic::panic_any(7u8) })
            .catch_unwind()
            .await;
        assert_eq!(panic_message(&*r.expect_err("panicked")), "unknown panic");
    }

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let mut b = Backoff::new(Duration::from_millis(250), Duration::from_millis(1000));
        let full: Vec<u128> = (0..6).map(|_| b.next_delay(1.0).as_millis()).collect();
        assert_eq!(full, vec![250, 500, 1000, 1000, 1000, 1000]);
        b.reset();
        assert_eq!(b.next_delay(0.0).as_millis(), 125);
        for _ in 0..100 {
            let d = b.next_delay(0.5);
            assert!(d <= Duration::from_secs(1), "never above the cap: {d:?}");
        }
    }
}
