//! WebRTC output (WHEP): sub-second live view in any browser, G.711 audio as-is, H.265 where
//! the browser offers it.
//!
//! `POST /whep/{id}` (in `api::whep`) hands an SDP offer to [`Webrtc::answer`], which answers
//! as an ICE-lite peer (str0m, sans-IO) and starts a session task. Every session shares one
//! UDP socket (`[webrtc] listen`, port 8189 by default): a dispatcher task reads it and routes
//! each datagram by the session's ICE ufrag and then by its source address (`demux`). The
//! session reads the stream's hub like an MSE viewer: it starts at the newest cached keyframe
//! (instant start), catches up through the cache to the live edge (`clock`), answers a
//! PLI/FIR by sending the cached GOP again, NACKs from str0m's retransmission buffer, and
//! resyncs at a keyframe when it falls behind. Frames go out as RTP with no transcoding:
//! H.264 (packetization mode 1) or H.265, G.711 cameras' audio as PCMA/PCMU (`audio`). AAC is
//! not a WebRTC codec and is not sent; the answer says so.
//!
//! Files: `peer` (the str0m boundary), `session` (one viewer's task), `tcp` (ICE over TCP),
//! `clock` (RTP times), `audio` (FLAC back to G.711), `demux` (which session a datagram is
//! for); the last three are pure.
//!
//! Belongs here: the socket, the sessions and their media. Does not belong here: HTTP,
//! auth and viewer limits (`api::whep`), finding the stream (`app`).

mod audio;
mod clock;
mod demux;
mod peer;
mod session;
mod tcp;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::distr::{Alphanumeric, SampleString};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};
use uuid::Uuid;

use crate::config::webrtc::WebrtcConfig;
use crate::hub::StreamHub;
use crate::media::VideoCodec;

/// Datagrams queued for one session at most; more are dropped (UDP: the peer retransmits).
const INBOX: usize = 256;
/// Sessions at once, whatever `[limits]` allows websockets.
const MAX_SESSIONS: usize = 4096;
/// Largest datagram read (WebRTC keeps under ~1200 bytes).
const MAX_DATAGRAM: usize = 2048;

/// What can go wrong answering or running a session; mapped to HTTP in `api::error`.
#[derive(Debug, thiserror::Error)]
pub enum WebrtcError {
    /// Not an SDP offer str0m can answer: 400.
    #[error("{0}")]
    BadOffer(String),
    /// The offer cannot carry the stream's codecs: 406.
    #[error("{0}")]
    NoCodec(String),
    /// The UDP socket or the certificate is not available, or too many sessions: 503.
    #[error("{0}")]
    Unavailable(String),
    /// No such session (DELETE/PATCH): 404.
    #[error("no such WebRTC session")]
    NoSession,
    /// Inside a running session (logged, ends it).
    #[error("{0}")]
    Session(String),
}

/// An offer and where it arrived.
pub struct Offer<'a> {
    pub sdp: &'a str,
    /// The local address of the HTTP connection that carried it: the address the browser can
    /// reach us on (the host candidate when `[webrtc] listen` is a wildcard).
    pub local_ip: Option<IpAddr>,
}

/// The answer to an offer.
#[derive(Debug)]
pub struct Answer {
    pub sdp: String,
    /// Names the session for `DELETE`/`PATCH /whep/{id}/{session}`.
    pub session: String,
    /// `pcma`, `pcmu`, or `none: <why>` (e.g. AAC, which WebRTC cannot carry).
    pub audio: String,
}

/// How a packet came or goes: the shared UDP socket, or an ICE-TCP connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Proto {
    Udp,
    Tcp,
}

/// A packet for a session.
pub(crate) struct Inbound {
    pub from: SocketAddr,
    pub proto: Proto,
    pub data: Bytes,
}

/// Counters over every session.
#[derive(Debug, Default)]
pub struct WebrtcStats {
    pub sessions_total: AtomicU64,
    pub datagrams_in: AtomicU64,
    pub datagrams_out: AtomicU64,
    /// Datagrams for no known session, or for a session whose queue was full.
    pub datagrams_dropped: AtomicU64,
}

struct Handle {
    stream: Uuid,
    ufrag: String,
    cancel: CancellationToken,
}

/// What the dispatcher and the sessions share.
struct Shared {
    routes: Mutex<demux::Routes<mpsc::Sender<Inbound>>>,
    sessions: Mutex<HashMap<String, Handle>>,
    /// ICE-TCP connections' writers, by the browser's address.
    tcp_writers: tcp::Writers,
    stats: WebrtcStats,
}

impl Shared {
    /// Takes a session out of the list and its ufrag out of the routes.
    fn forget(&self, session: &str) -> Option<Handle> {
        let handle = lock(&self.sessions).remove(session)?;
        lock(&self.routes).remove(&handle.ufrag);
        Some(handle)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The WebRTC output of one gateway.
pub struct Webrtc {
    config: WebrtcConfig,
    shared: Arc<Shared>,
    socket: tokio::sync::OnceCell<(Arc<UdpSocket>, peer::Identity)>,
    shutdown: CancellationToken,
}

impl Webrtc {
    pub fn new(config: WebrtcConfig, shutdown: CancellationToken) -> Webrtc {
        Webrtc {
            config,
            shared: Arc::new(Shared {
                routes: Mutex::default(),
                sessions: Mutex::default(),
                tcp_writers: Arc::default(),
                stats: WebrtcStats::default(),
            }),
            socket: tokio::sync::OnceCell::new(),
            shutdown,
        }
    }

    pub fn stats(&self) -> &WebrtcStats {
        &self.shared.stats
    }

    /// Sessions now.
    pub fn sessions(&self) -> usize {
        lock(&self.shared.sessions).len()
    }

    /// Binds the UDP socket and starts the dispatcher (once; later calls return the same).
    /// `app` calls it at start when a stream has the output, so a taken port is reported then.
    pub async fn start(&self) -> Result<SocketAddr, WebrtcError> {
        let (socket, _) = self.bound().await?;
        socket
            .local_addr()
            .map_err(|e| WebrtcError::Unavailable(e.to_string()))
    }

    async fn bound(&self) -> Result<&(Arc<UdpSocket>, peer::Identity), WebrtcError> {
        self.socket
            .get_or_try_init(|| async {
                let listen = self.config.listen;
                let socket = UdpSocket::bind(listen).await.map_err(|e| {
                    WebrtcError::Unavailable(format!(
                        "cannot bind [webrtc] listen = \"{listen}\": {e}"
                    ))
                })?;
                let socket = Arc::new(socket);
                let identity = peer::Identity::generate()?;
                let bound = socket.local_addr().unwrap_or(listen);
                info!(udp = %bound, "WebRTC: listening");
                let shared = Arc::clone(&self.shared);
                let s = Arc::clone(&socket);
                let stop = self.shutdown.clone();
                tokio::spawn(
                    dispatch(s, shared, stop).instrument(tracing::info_span!("webrtc_udp")),
                );
                if self.config.ice_tcp {
                    let at = SocketAddr::new(listen.ip(), bound.port());
                    match tokio::net::TcpListener::bind(at).await {
                        Ok(l) => {
                            info!(tcp = %at, "WebRTC: ICE-TCP listening");
                            let shared = Arc::clone(&self.shared);
                            let stop = self.shutdown.clone();
                            tokio::spawn(
                                tcp::listen(l, shared, stop)
                                    .instrument(tracing::info_span!("webrtc_tcp")),
                            );
                        }
                        Err(e) => {
                            return Err(WebrtcError::Unavailable(format!(
                                "cannot bind ICE-TCP on {at} ([webrtc] ice_tcp): {e}"
                            )))
                        }
                    }
                }
                Ok((socket, identity))
            })
            .await
    }

    /// Answers a viewer's offer for `hub` and starts its session; `hold` (its place under
    /// `[limits]`, its demand on the upstream) lives as long as the session.
    pub async fn answer(
        &self,
        hub: Arc<StreamHub>,
        hold: impl Send + 'static,
        offer: Offer<'_>,
    ) -> Result<Answer, WebrtcError> {
        if self.sessions() >= MAX_SESSIONS {
            return Err(WebrtcError::Unavailable("too many WebRTC sessions".into()));
        }
        let (socket, identity) = self.bound().await?;
        let port = socket
            .local_addr()
            .map_err(|e| WebrtcError::Unavailable(e.to_string()))?
            .port();
        // The address the browser reached us on, then the advertised ones (NAT, forwards).
        let mut candidates = Vec::new();
        if self.config.host_candidates {
            candidates.push(SocketAddr::new(self.host_ip(offer.local_ip), port));
        }
        candidates.extend(self.advertised(port).await);
        let Some(&local) = candidates.first() else {
            return Err(WebrtcError::Unavailable(
                "no address to offer: [webrtc] advertise did not resolve".into(),
            ));
        };
        let health = hub.health();
        let params = health.params.as_deref();
        let video = params.and_then(|p| p.video.as_ref()).map(|v| v.codec);
        let audio_params = params.and_then(|p| p.audio.as_ref());
        let g711 = audio_params
            .filter(|a| a.rfc6381 == "flac" && a.sample_rate == 8_000)
            .map(|a| a.g711);
        let want = peer::Want {
            // Before the camera's first session the codec is unknown: offer H.264.
            video: if params.is_none() {
                Some(VideoCodec::H264)
            } else {
                video
            },
            g711,
        };
        let ufrag = Alphanumeric.sample_string(&mut rand::rng(), 8);
        let pass = Alphanumeric.sample_string(&mut rand::rng(), 24);
        let (peer, sdp, agreed) = peer::Peer::answer(
            offer.sdp,
            identity,
            (ufrag.clone(), pass),
            &candidates,
            self.config.ice_tcp,
            want,
            Instant::now(),
        )?;
        let audio = match (agreed.audio, audio_params) {
            (Some(crate::media::G711::A), _) => "pcma".to_owned(),
            (Some(crate::media::G711::Mu), _) => "pcmu".to_owned(),
            (None, None) => "none: the stream has no audio".to_owned(),
            (None, Some(a)) if a.rfc6381.starts_with("mp4a") => {
                "none: the camera sends AAC, which is not a WebRTC codec".to_owned()
            }
            (None, Some(_)) if g711.is_some() => {
                "none: the offer has no PCMA/PCMU audio track".to_owned()
            }
            (None, Some(a)) => format!("none: {} is not a WebRTC codec", a.rfc6381),
        };
        let session = Alphanumeric.sample_string(&mut rand::rng(), 16);
        let (tx, rx) = mpsc::channel(INBOX);
        let cancel = self.shutdown.child_token();
        lock(&self.shared.routes).insert(ufrag.clone(), tx);
        lock(&self.shared.sessions).insert(
            session.clone(),
            Handle {
                stream: hub.id,
                ufrag,
                cancel: cancel.clone(),
            },
        );
        self.shared
            .stats
            .sessions_total
            .fetch_add(1, Ordering::Relaxed);
        info!(session, stream = %hub.id, %audio, video = agreed.video, "WebRTC viewer answered");
        let io = session::Io {
            socket: Arc::clone(socket),
            tcp: Arc::clone(&self.shared.tcp_writers),
            inbox: rx,
            local,
        };
        let shared = Arc::clone(&self.shared);
        let id = session.clone();
        let span = tracing::info_span!("webrtc", stream = %hub.id, session = %id);
        tokio::spawn(
            async move {
                let _hold = hold;
                let plan = session::Plan {
                    audio: agreed.audio,
                };
                session::run(peer, hub, io, plan, cancel, &shared.stats).await;
                // Gone already if it ended by DELETE.
                shared.forget(&id);
            }
            .instrument(span),
        );
        Ok(Answer {
            sdp,
            session,
            audio,
        })
    }

    /// Ends a session (`DELETE`); it must be of `stream`.
    /// The session is gone from the list at once (a second `DELETE` is a 404); its task ends
    /// at its next step.
    pub fn end(&self, stream: &Uuid, session: &str) -> Result<(), WebrtcError> {
        if !self.exists(stream, session) {
            return Err(WebrtcError::NoSession);
        }
        if let Some(h) = self.shared.forget(session) {
            h.cancel.cancel();
        }
        Ok(())
    }

    /// Whether a session of `stream` exists (`PATCH`).
    pub fn exists(&self, stream: &Uuid, session: &str) -> bool {
        lock(&self.shared.sessions)
            .get(session)
            .is_some_and(|h| h.stream == *stream)
    }

    /// STUN and TURN servers for players (the WHEP answer's `Link` headers).
    pub fn ice_servers(&self) -> &[crate::config::webrtc::IceServer] {
        &self.config.ice_servers
    }

    /// The host candidate's address: the listening address when it names one, else the one
    /// the browser's request arrived on.
    fn host_ip(&self, local: Option<IpAddr>) -> IpAddr {
        let listen = self.config.listen.ip();
        if !listen.is_unspecified() {
            return listen;
        }
        match local.map(|ip| ip.to_canonical()) {
            Some(ip) if ip.is_ipv4() == listen.is_ipv4() => ip,
            _ if listen.is_ipv4() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            _ => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        }
    }

    /// `[webrtc] advertise`, resolved now (host names may move).
    async fn advertised(&self, port: u16) -> Vec<SocketAddr> {
        let mut out = Vec::new();
        for a in &self.config.advertise {
            let p = a.port.unwrap_or(port);
            if let Ok(ip) = a.host.parse::<IpAddr>() {
                out.push(SocketAddr::new(ip, p));
                continue;
            }
            let lookup = tokio::net::lookup_host((a.host.as_str(), p));
            match tokio::time::timeout(Duration::from_secs(2), lookup).await {
                Ok(Ok(addrs)) => out.extend(addrs.filter(|s| s.is_ipv4())),
                Ok(Err(e)) => {
                    warn!(host = %a.host, error = %e, "[webrtc] advertise: lookup failed")
                }
                Err(_) => warn!(host = %a.host, "[webrtc] advertise: lookup timed out"),
            }
        }
        out
    }
}

/// Reads the shared socket and hands each datagram to its session.
async fn dispatch(socket: Arc<UdpSocket>, shared: Arc<Shared>, stop: CancellationToken) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, from) = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok(v) => v,
                Err(e) => {
                    // ICMP port unreachable from a gone browser and the like: keep reading.
                    tracing::debug!(error = %e, "recv failed");
                    continue;
                }
            },
            _ = stop.cancelled() => return,
        };
        let stats = &shared.stats;
        stats.datagrams_in.fetch_add(1, Ordering::Relaxed);
        let packet = &buf[..n];
        let delivered = {
            let mut routes = lock(&shared.routes);
            routes.route(from, packet).is_some_and(|tx| {
                tx.try_send(Inbound {
                    from,
                    proto: Proto::Udp,
                    data: Bytes::copy_from_slice(packet),
                })
                .is_ok()
            })
        };
        if !delivered {
            stats.datagrams_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}
