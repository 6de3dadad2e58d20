//! The str0m boundary: the only file that names str0m. One [`Peer`] is one browser's
//! RTCPeerConnection, answered from its WHEP offer, sans-IO: datagrams and times in,
//! datagrams, events and deadlines out.
//!
//! Belongs here: building the answer (ICE-lite, our candidates, the codecs we can send without
//! transcoding), picking payload types, writing frames as RTP, turning str0m's events into
//! ours. Does not belong here: sockets and tasks (`session`, `mod`), which frames to send and
//! their times (`session`, `clock`), media conversions (`audio`, `mp4::entry`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::SdpOffer;
use str0m::format::{Codec, PayloadParams};
use str0m::media::{Direction, MediaKind, MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive, TcpType};
use str0m::{Candidate, Event, IceConnectionState, IceCreds, Input, Output, Rtc, RtcConfig};

use super::{Proto, WebrtcError};
use crate::media::{VideoCodec, G711};

/// Video packets kept for retransmission on NACK (about 1.5 s of a 2 Mbit/s camera).
const SEND_BUFFER_VIDEO: usize = 300;
/// How often str0m reports per-media counters (PLI, NACK, bytes).
const STATS_INTERVAL: Duration = Duration::from_secs(1);

/// What the stream has, for choosing codecs in the answer.
#[derive(Clone, Copy, Debug)]
pub struct Want {
    pub video: Option<VideoCodec>,
    /// The stream's audio as G.711 (G.711 cameras); the camera's law first if known.
    pub g711: Option<Option<G711>>,
}

/// A negotiated sending track.
#[derive(Clone, Copy, Debug)]
struct Track {
    mid: Mid,
    pt: Pt,
    clock_hz: u32,
}

/// What the answer agreed to send.
#[derive(Clone, Debug)]
pub struct Agreed {
    pub video: bool,
    /// The law audio goes out in, if any.
    pub audio: Option<G711>,
}

/// One browser's connection.
pub struct Peer {
    rtc: Rtc,
    video: Option<Track>,
    audio: Option<(Track, G711)>,
}

/// What a peer wants done next.
pub enum Step {
    /// Send these bytes to that address, over UDP or the browser's ICE-TCP connection.
    Transmit(Proto, SocketAddr, Vec<u8>),
    /// Something happened.
    Event(PeerEvent),
    /// Nothing until this instant (or a datagram).
    Wait(Instant),
}

/// The events a session acts on.
#[derive(Debug)]
pub enum PeerEvent {
    /// ICE and DTLS are up: media may flow.
    Connected,
    /// ICE gave up (the browser left without DELETE) or the connection closed.
    Gone,
    /// The browser asked for a keyframe (PLI or FIR).
    KeyframeRequest,
    /// NACKs received for the video track since the start.
    VideoStats {
        nacks: u64,
    },
    Other,
}

/// The shared certificate and crypto (generating a certificate per viewer would cost a
/// key generation each).
#[derive(Clone)]
pub struct Identity {
    crypto: Arc<str0m::config::CryptoProvider>,
    cert: str0m::config::DtlsCert,
}

impl Identity {
    pub fn generate() -> Result<Identity, WebrtcError> {
        let crypto = str0m::crypto::from_feature_flags();
        let cert = crypto
            .dtls_provider
            .generate_certificate()
            .ok_or_else(|| WebrtcError::Unavailable("cannot make a DTLS certificate".into()))?;
        Ok(Identity {
            crypto: Arc::new(crypto),
            cert,
        })
    }
}

impl Peer {
    /// Answers a WHEP offer. `candidates` are the addresses the browser may send to, all on
    /// the one socket: as an ICE-lite peer every one is a host candidate (an address behind
    /// NAT included, as ICE-lite allows no other kind), and the first is the one arriving
    /// datagrams are reported as sent to; with `tcp`, each is also a passive TCP candidate
    /// (ICE-TCP). Returns the peer, the answer and what it agreed to send.
    #[allow(clippy::too_many_arguments)]
    pub fn answer(
        offer: &str,
        identity: &Identity,
        creds: (String, String),
        candidates: &[SocketAddr],
        tcp: bool,
        want: Want,
        now: Instant,
    ) -> Result<(Peer, String, Agreed), WebrtcError> {
        let offer_text = offer;
        let offer = SdpOffer::from_sdp_string(offer).map_err(|e| {
            // The parser's message carries pointers; keep its words.
            let text = e.to_string();
            let words: Vec<&str> = text
                .lines()
                .filter(|l| !l.contains("PointerOffset") && !l.trim().is_empty())
                .collect();
            WebrtcError::BadOffer(format!("the offer is not SDP: {}", words.join("; ")))
        })?;
        let (ufrag, pass) = creds;
        let mut rtc = RtcConfig::new()
            .set_crypto_provider(Arc::clone(&identity.crypto))
            .set_dtls_cert(identity.cert.clone())
            .set_ice_lite(true)
            .set_local_ice_credentials(IceCreds { ufrag, pass })
            .clear_codecs()
            .enable_h264(true)
            .enable_h265(true)
            .enable_pcma(true, false)
            .enable_pcmu(true, false)
            .set_extension(6, str0m::rtp::Extension::PlayoutDelay)
            .set_send_buffer_video(SEND_BUFFER_VIDEO)
            .set_stats_interval(Some(STATS_INTERVAL))
            .build(now);
        for addr in candidates {
            let bad = |e| WebrtcError::Unavailable(format!("bad address {addr}: {e}"));
            rtc.add_local_candidate(Candidate::host(*addr, "udp").map_err(bad)?);
            if tcp {
                let c = Candidate::builder()
                    .tcp()
                    .host(*addr)
                    .tcptype(TcpType::Passive)
                    .build()
                    .map_err(bad)?;
                rtc.add_local_candidate(c);
            }
        }
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| WebrtcError::BadOffer(format!("cannot answer the offer: {e}")))?;
        let sdp = answer.to_sdp_string();
        let mut peer = Peer {
            rtc,
            video: None,
            audio: None,
        };
        let mut offered_video = Vec::new();
        for (mid, kind) in peer.sending_media(offer_text) {
            let Some(writer) = peer.rtc.writer(mid) else {
                continue;
            };
            let params: Vec<PayloadParams> = writer.payload_params().cloned().collect();
            match kind {
                MediaKind::Video if peer.video.is_none() => {
                    offered_video.extend(params.iter().map(|p| p.spec().codec));
                    if let Some(p) = want.video.and_then(|v| pick_video(&params, v)) {
                        peer.video = Some(Track {
                            mid,
                            pt: p.pt(),
                            clock_hz: p.spec().clock_rate.get(),
                        });
                    }
                }
                MediaKind::Audio if peer.audio.is_none() => {
                    if let Some(pref) = want.g711 {
                        if let Some((p, law)) = pick_g711(&params, pref) {
                            let track = Track {
                                mid,
                                pt: p.pt(),
                                clock_hz: p.spec().clock_rate.get(),
                            };
                            peer.audio = Some((track, law));
                        }
                    }
                }
                _ => {}
            }
        }
        if let (Some(v), None) = (want.video, &peer.video) {
            let name = match v {
                VideoCodec::H264 => "H.264 (packetization-mode 1)",
                VideoCodec::H265 => "H.265",
            };
            return Err(WebrtcError::NoCodec(format!(
                "the camera sends {name}; the offer has no receiving video track with it \
                 (offered: {offered_video:?})"
            )));
        }
        if want.video.is_none() && peer.audio.is_none() {
            return Err(WebrtcError::NoCodec(
                "the stream has no video, and its audio is not G.711 or the offer has no \
                 PCMA/PCMU track"
                    .into(),
            ));
        }
        let agreed = Agreed {
            video: peer.video.is_some(),
            audio: peer.audio.map(|(_, law)| law),
        };
        Ok((peer, sdp, agreed))
    }

    /// The offer's audio and video media lines that the answer lets us send on.
    fn sending_media(&self, offer: &str) -> Vec<(Mid, MediaKind)> {
        offer_mids(offer)
            .into_iter()
            .filter_map(|mid| {
                let m = self.rtc.media(Mid::from(mid.as_str()))?;
                let sends = matches!(m.direction(), Direction::SendOnly | Direction::SendRecv);
                (sends && !m.disabled()).then(|| (m.mid(), m.kind()))
            })
            .collect()
    }

    /// The next thing to do.
    pub fn step(&mut self) -> Result<Step, WebrtcError> {
        let out = self
            .rtc
            .poll_output()
            .map_err(|e| WebrtcError::Session(e.to_string()))?;
        Ok(match out {
            Output::Timeout(t) => Step::Wait(t),
            Output::Transmit(t) => {
                let proto = match t.proto {
                    Protocol::Udp => Proto::Udp,
                    _ => Proto::Tcp,
                };
                Step::Transmit(proto, t.destination, t.contents.to_vec())
            }
            Output::Event(e) => Step::Event(match e {
                Event::Connected => PeerEvent::Connected,
                Event::IceConnectionStateChange(IceConnectionState::Disconnected)
                | Event::Closed => PeerEvent::Gone,
                Event::KeyframeRequest(_) => PeerEvent::KeyframeRequest,
                Event::MediaEgressStats(s) if Some(s.mid) == self.video.map(|v| v.mid) => {
                    PeerEvent::VideoStats { nacks: s.nacks }
                }
                _ => PeerEvent::Other,
            }),
        })
    }

    /// A packet from the browser (`local` is the address it was sent to).
    pub fn receive(
        &mut self,
        now: Instant,
        proto: Proto,
        from: SocketAddr,
        local: SocketAddr,
        data: &[u8],
    ) -> Result<(), WebrtcError> {
        let contents = data
            .try_into()
            .map_err(|_| WebrtcError::Session("unparsable datagram".into()))?;
        self.rtc
            .handle_input(Input::Receive(
                now,
                Receive {
                    proto: match proto {
                        Proto::Udp => Protocol::Udp,
                        Proto::Tcp => Protocol::Tcp,
                    },
                    source: from,
                    destination: local,
                    contents,
                },
            ))
            .map_err(|e| WebrtcError::Session(e.to_string()))
    }

    /// Time passed: retransmissions, keep-alives, reports.
    pub fn tick(&mut self, now: Instant) -> Result<(), WebrtcError> {
        self.rtc
            .handle_input(Input::Timeout(now))
            .map_err(|e| WebrtcError::Session(e.to_string()))
    }

    /// One video access unit (Annex B) at `ts_90k` on this viewer's timeline; `wall` is the
    /// instant that time stands for (RTCP sender reports, lip sync).
    pub fn write_video(
        &mut self,
        ts_90k: i64,
        wall: Instant,
        annexb: Vec<u8>,
    ) -> Result<(), WebrtcError> {
        let Some(v) = self.video else {
            return Ok(());
        };
        let rtp = MediaTime::new(rescale(ts_90k, v.clock_hz), clock(v.clock_hz));
        let Some(w) = self.rtc.writer(v.mid) else {
            return Ok(());
        };
        w.playout_delay(MediaTime::ZERO, MediaTime::ZERO)
            .write(v.pt, wall, rtp, annexb)
            .map_err(|e| WebrtcError::Session(e.to_string()))
    }

    /// One audio packet (G.711 codes in the agreed law) at `ts_90k`.
    pub fn write_audio(
        &mut self,
        ts_90k: i64,
        wall: Instant,
        codes: Vec<u8>,
    ) -> Result<(), WebrtcError> {
        let Some((a, _)) = self.audio else {
            return Ok(());
        };
        let rtp = MediaTime::new(rescale(ts_90k, a.clock_hz), clock(a.clock_hz));
        let Some(w) = self.rtc.writer(a.mid) else {
            return Ok(());
        };
        w.write(a.pt, wall, rtp, codes)
            .map_err(|e| WebrtcError::Session(e.to_string()))
    }

    /// Ends the connection (DTLS close alert on the next steps).
    pub fn close(&mut self) {
        self.rtc.disconnect();
    }
}

fn rescale(ts_90k: i64, hz: u32) -> u64 {
    crate::media::rescale(ts_90k.max(0), crate::media::TIMESCALE_90K, hz) as u64
}

fn clock(hz: u32) -> str0m::media::Frequency {
    str0m::media::Frequency::new(hz).unwrap_or(str0m::media::Frequency::NINETY_KHZ)
}

/// The payload type for the camera's video codec: H.264 only in packetization mode 1 (mode 0
/// cannot carry NAL units bigger than a packet).
fn pick_video(params: &[PayloadParams], codec: VideoCodec) -> Option<&PayloadParams> {
    params.iter().find(|p| {
        let s = p.spec();
        match codec {
            VideoCodec::H264 => s.codec == Codec::H264 && s.format.packetization_mode == Some(1),
            VideoCodec::H265 => s.codec == Codec::H265,
        }
    })
}

/// PCMA or PCMU at 8 kHz, the camera's law first.
fn pick_g711(params: &[PayloadParams], camera: Option<G711>) -> Option<(&PayloadParams, G711)> {
    let order = match camera {
        Some(G711::Mu) => [G711::Mu, G711::A],
        _ => [G711::A, G711::Mu],
    };
    order.into_iter().find_map(|law| {
        let codec = match law {
            G711::A => Codec::PCMA,
            G711::Mu => Codec::PCMU,
        };
        params
            .iter()
            .find(|p| p.spec().codec == codec && p.spec().clock_rate.get() == 8_000)
            .map(|p| (p, law))
    })
}

/// The `a=mid:` of each audio or video media section of an SDP, in order.
fn offer_mids(sdp: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut media = false;
    for line in sdp.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("m=") {
            media = m.starts_with("audio ") || m.starts_with("video ");
        } else if let Some(mid) = line.strip_prefix("a=mid:").filter(|_| media) {
            out.push(mid.trim().to_owned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mids_of_audio_and_video_sections() {
        let sdp = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\n\
                   m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:dc\r\n\
                   m=audio 9 UDP/TLS/RTP/SAVPF 8\r\na=mid:a1\r\n";
        assert_eq!(offer_mids(sdp), ["0", "a1"]);
    }
}
