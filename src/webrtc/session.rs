//! One WebRTC viewer: its peer, its place in the stream's ring, its socket I/O.
//!
//! The loop: let the peer send what it wants (packets, then its next deadline), then wait for
//! whichever comes first: a datagram from the dispatcher, frames from the hub (once connected),
//! the deadline, or the end. Frames from before the viewer's (re)start are the GOP cache and
//! are caught up (`clock`); a keyframe request or falling behind restarts at the newest cached
//! keyframe.
//!
//! Belongs here: that loop and the per-frame conversions it calls. Does not belong here:
//! str0m (`peer`), routing datagrams (`demux`, `mod`).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::clock::RtpClock;
use super::peer::{Peer, PeerEvent, Step};
use super::{audio, Proto, WebrtcStats};
use crate::hub::{RecvError, StreamHub, Subscription};
use crate::media::{Frame, TrackKind, VideoCodec, G711};
use crate::mp4::entry;

/// Frames read from the ring per wake-up at most.
const BATCH: usize = 64;
/// A peer that has not connected by then is given up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Keyframe requests closer together than this send the cache once.
const KEYFRAME_REQUEST_GAP: Duration = Duration::from_millis(1000);
/// A viewer about to be sent frames older than this is moved to the newest keyframe.
const MAX_BEHIND_MS: i64 = 3000;

/// The session's side of the shared socket.
pub(super) struct Io {
    pub socket: Arc<UdpSocket>,
    /// ICE-TCP connections' writers (browsers behind firewalls that drop UDP).
    pub tcp: super::tcp::Writers,
    pub inbox: mpsc::Receiver<super::Inbound>,
    /// The host candidate: where the browser's datagrams were sent.
    pub local: SocketAddr,
}

impl Io {
    /// Sends a packet to the browser; `false` if it could not go (a gone TCP connection, a full
    /// queue: dropped, as UDP would).
    async fn send(&self, proto: Proto, to: SocketAddr, data: &[u8]) -> bool {
        match proto {
            Proto::Udp => self.socket.send_to(data, to).await.is_ok(),
            Proto::Tcp => {
                let writer = super::lock(&self.tcp).get(&to).cloned();
                match (writer, super::tcp::frame(data)) {
                    (Some(w), Some(f)) => w.try_send(f).is_ok(),
                    _ => false,
                }
            }
        }
    }
}

/// What the session sends, fixed by the answer.
pub(super) struct Plan {
    pub audio: Option<G711>,
}

/// Per-viewer sending state.
struct Sender {
    clock: RtpClock,
    started: Instant,
    /// Frames that arrived before this are the cache (caught up, audio skipped).
    live_from: Instant,
    last_rewind: Option<Instant>,
    video_codec: Option<VideoCodec>,
    audio: Option<G711>,
    /// The oldest live frame written since the last flush: the gateway's added latency.
    pending_since: Option<Instant>,
}

impl Sender {
    fn restart(&mut self) {
        self.live_from = Instant::now();
    }

    fn wall(&self, ts_90k: i64) -> Instant {
        self.started + Duration::from_micros(ts_90k.max(0) as u64 * 100 / 9)
    }

    /// Writes one frame; `Err` ends the session with that reason.
    fn send(&mut self, peer: &mut Peer, f: &Frame) -> Result<(), String> {
        let live = f.received >= self.live_from;
        match f.track {
            TrackKind::Video => {
                let Some(v) = f.params.video.as_ref() else {
                    return Ok(());
                };
                match self.video_codec {
                    Some(c) if c != v.codec => {
                        return Err(format!("the camera changed its codec to {:?}", v.codec));
                    }
                    _ => self.video_codec = Some(v.codec),
                }
                let prefix = if f.is_key {
                    entry::parameter_sets(&v.sample_entry).unwrap_or_default()
                } else {
                    Vec::new()
                };
                let Some(au) = entry::annexb(&prefix, &f.data) else {
                    debug!("unparsable frame skipped");
                    return Ok(());
                };
                let ts = if live {
                    self.clock.live(f.dts_90k, f.cto_90k, f.dur_90k)
                } else {
                    self.clock.catch_up()
                };
                peer.write_video(ts, self.wall(ts), au)
                    .map_err(|e| e.to_string())?;
            }
            TrackKind::Audio => {
                let Some(law) = self.audio.filter(|_| live) else {
                    return Ok(());
                };
                let Some(codes) = audio::g711_from_flac(&f.data, law) else {
                    return Ok(());
                };
                let ts = self.clock.live(f.dts_90k, 0, f.dur_90k);
                peer.write_audio(ts, self.wall(ts), codes)
                    .map_err(|e| e.to_string())?;
            }
        }
        if live {
            self.pending_since = Some(self.pending_since.map_or(f.received, |p| p.min(f.received)));
        }
        Ok(())
    }
}

/// Waits for frames, or forever before the peer is connected.
async fn next_frames(
    sub: &mut Option<Subscription>,
    out: &mut Vec<Frame>,
) -> Result<usize, RecvError> {
    match sub {
        Some(s) => s.recv(out, BATCH).await,
        None => std::future::pending().await,
    }
}

/// Runs one viewer until it leaves, the stream goes away, DELETE or shutdown.
pub(super) async fn run(
    mut peer: Peer,
    hub: Arc<StreamHub>,
    mut io: Io,
    plan: Plan,
    cancel: CancellationToken,
    stats: &WebrtcStats,
) {
    let mut sender = Sender {
        clock: RtpClock::new(),
        started: Instant::now(),
        live_from: Instant::now(),
        last_rewind: None,
        video_codec: None,
        audio: plan.audio,
        pending_since: None,
    };
    let mut sub: Option<Subscription> = None;
    let mut frames = Vec::with_capacity(BATCH);
    let mut nacks_seen = 0u64;
    let reason: String = 'session: loop {
        // Everything the peer has to send, then its deadline.
        let deadline = loop {
            match peer.step() {
                Ok(Step::Transmit(proto, to, data)) => {
                    if io.send(proto, to, &data).await {
                        stats.datagrams_out.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(Step::Event(PeerEvent::Connected)) => {
                    info!(
                        after_ms = sender.started.elapsed().as_millis() as u64,
                        "connected"
                    );
                    sub = Some(hub.subscribe());
                    sender.restart();
                }
                Ok(Step::Event(PeerEvent::Gone)) => break 'session "the browser left".into(),
                Ok(Step::Event(PeerEvent::KeyframeRequest)) => {
                    hub.stats
                        .webrtc_keyframe_requests
                        .fetch_add(1, Ordering::Relaxed);
                    let due = sender
                        .last_rewind
                        .is_none_or(|t| t.elapsed() >= KEYFRAME_REQUEST_GAP);
                    if let Some(s) = sub.as_mut().filter(|_| due) {
                        if s.rewind_to_newest_key() {
                            debug!("keyframe request: sending the cached GOP again");
                            sender.last_rewind = Some(Instant::now());
                            sender.restart();
                        }
                    }
                }
                Ok(Step::Event(PeerEvent::VideoStats { nacks })) => {
                    let new = nacks.saturating_sub(nacks_seen);
                    nacks_seen = nacks_seen.max(nacks);
                    hub.stats.webrtc_nacks.fetch_add(new, Ordering::Relaxed);
                }
                Ok(Step::Event(PeerEvent::Other)) => {}
                Ok(Step::Wait(t)) => break t,
                Err(e) => break 'session format!("peer failed: {e}"),
            }
        };
        if let Some(since) = sender.pending_since.take() {
            hub.stats.webrtc_send_delay.record(since.elapsed());
        }
        if sub.is_none() && sender.started.elapsed() > CONNECT_TIMEOUT {
            break "never connected (ICE or DTLS did not complete)".into();
        }
        tokio::select! {
            _ = cancel.cancelled() => break "ended (DELETE or shutdown)".into(),
            d = io.inbox.recv() => match d {
                Some(p) => {
                    if let Err(e) = peer.receive(Instant::now(), p.proto, p.from, io.local, &p.data) {
                        debug!(error = %e, "datagram refused");
                    }
                }
                None => break "ended".into(),
            },
            r = next_frames(&mut sub, &mut frames) => {
                let behind_ms = frames.first().map_or(0, |f| crate::media::unix_ms_now() - f.wall_ms);
                let resync = match r {
                    Ok(_) if behind_ms > MAX_BEHIND_MS && frames.iter().any(|f| f.received >= sender.live_from) => {
                        sub.as_mut().is_some_and(|s| s.skip_to_newest_key() > 0)
                    }
                    Ok(_) => false,
                    Err(RecvError::Lagged { .. }) => true,
                    Err(RecvError::Closed) => break "the stream was removed".into(),
                };
                if resync {
                    debug!("behind; resyncing at the newest keyframe");
                    frames.clear();
                    sender.restart();
                    continue;
                }
                for f in frames.drain(..) {
                    if let Err(why) = sender.send(&mut peer, &f) {
                        break 'session why;
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline.into()) => {
                if let Err(e) = peer.tick(Instant::now()) {
                    break format!("peer failed: {e}");
                }
            }
        }
    };
    // A close alert, if the peer still has a path to send it on.
    peer.close();
    for _ in 0..8 {
        match peer.step() {
            Ok(Step::Transmit(proto, to, data)) => {
                io.send(proto, to, &data).await;
            }
            Ok(Step::Event(_)) => {}
            _ => break,
        }
    }
    info!(reason, "WebRTC viewer disconnected");
}
