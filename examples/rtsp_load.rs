//! Camera load generator for benchmarks: an RTSP server that plays one real clip to any number
//! of clients, packetized into RTP once at start and sent from memory.
//!
//!   cargo run --release --example rtsp_load -- <port> <clip.mp4>
//!
//! Every path is a camera (`rtsp://127.0.0.1:<port>/cam17`); a path containing `noaudio` leaves
//! the clip's AAC track out. Each session starts at a random point of the clip (its keyframes
//! fall where an independent camera's would) and loops it with timestamps running on. RTP goes
//! over the RTSP connection (interleaved, `RTP/AVP/TCP`) or UDP (`client_port`), as the client
//! asks. Cheap by construction: packets are built once (H.264 as single NAL units and FU-A,
//! parameter sets before every keyframe; AAC as RFC 3640 AAC-hbr); a session wakes every
//! 20 ms and writes everything due in one call per TCP connection (UDP: one datagram per
//! packet); only the 12-byte RTP header is written per packet and session.
//!
//! Prints `READY <port>` when listening, then a JSON line of counters every 10 s on stderr.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use video_server::media::TrackKind;
use video_server::mp4::{entry, movie::Movie};

/// Largest RTP payload (FU-A fragments above it).
const MTU_PAYLOAD: usize = 1400;
/// How often a session wakes to send what is due.
const TICK: Duration = Duration::from_millis(20);

/// One RTP packet of the clip, without its header.
struct Packet {
    /// When it is due, from the clip's start, µs.
    at_us: u64,
    /// 0 video, 1 audio.
    track: usize,
    /// RTP timestamp from the clip's start, in the track's clock.
    ts: u32,
    marker: bool,
    payload: Bytes,
}

/// The clip as packets, and what DESCRIBE says of it.
struct Clip {
    packets: Vec<Packet>,
    duration_us: u64,
    /// (clock rate, payload type) per track; audio absent without AAC.
    clocks: Vec<(u32, u8)>,
    sdp_video: String,
    sdp_audio: Option<String>,
}

#[derive(Default)]
struct Counters {
    sessions: AtomicU64,
    playing: AtomicU64,
    packets: AtomicU64,
    bytes: AtomicU64,
}

fn load(path: &str) -> Clip {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let movie = Movie::parse(Bytes::from(data)).unwrap_or_else(|e| panic!("{path}: {e}"));
    let video = movie.params.video.clone().expect("the clip has no video");
    let sets = entry::parameter_sets(&video.sample_entry).expect("avcC");
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let sps = sets.first().copied().unwrap_or_default();
    let profile = sps
        .get(1..4)
        .map(|p| p.iter().map(|b| format!("{b:02X}")).collect::<String>())
        .unwrap_or_else(|| "42E01F".into());
    let sprop: Vec<String> = sets.iter().map(|s| b64(s)).collect();
    let sdp_video = format!(
        "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1;\
         profile-level-id={profile};sprop-parameter-sets={}\r\na=control:trackID=0\r\n",
        sprop.join(",")
    );
    let audio = movie
        .params
        .audio
        .clone()
        .filter(|a| a.rfc6381.starts_with("mp4a"));
    let sdp_audio = audio.as_ref().map(|a| {
        // AAC-LC AudioSpecificConfig: object type 2, the rate's index, the channels.
        let rates = [
            96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000,
        ];
        let idx = rates.iter().position(|r| *r == a.sample_rate).unwrap_or(3) as u16;
        let asc = (2u16 << 11) | (idx << 7) | ((a.channels & 0xf) << 3);
        format!(
            "m=audio 0 RTP/AVP 97\r\na=rtpmap:97 MPEG4-GENERIC/{}/{}\r\na=fmtp:97 streamtype=5;\
             profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;indexdeltalength=3;\
             config={asc:04X}\r\na=control:trackID=1\r\n",
            a.sample_rate, a.channels
        )
    });
    let audio_rate = audio.as_ref().map_or(48_000, |a| a.sample_rate);
    let mut packets = Vec::new();
    for s in &movie.samples {
        let at_us = (s.dts_90k.max(0) as u64) * 100 / 9;
        let payload = movie.payload(s);
        match s.track {
            TrackKind::Video => {
                let ts = (s.dts_90k + i64::from(s.cto_90k)).max(0) as u32;
                let mut nals: Vec<Bytes> = Vec::new();
                if s.is_key {
                    nals.extend(sets.iter().map(|n| Bytes::copy_from_slice(n)));
                }
                let mut rest = payload.clone();
                while rest.len() >= 4 {
                    let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                    if 4 + len > rest.len() {
                        break;
                    }
                    nals.push(rest.slice(4..4 + len));
                    rest = rest.slice(4 + len..);
                }
                let last_nal = nals.len().saturating_sub(1);
                for (i, nal) in nals.iter().enumerate() {
                    let last = i == last_nal;
                    if nal.len() <= MTU_PAYLOAD {
                        packets.push(Packet {
                            at_us,
                            track: 0,
                            ts,
                            marker: last,
                            payload: nal.clone(),
                        });
                        continue;
                    }
                    // FU-A: indicator (F, NRI, type 28), header (S, E, type), a slice.
                    let (head, body) = (nal[0], nal.slice(1..));
                    let chunks: Vec<Bytes> = (0..body.len())
                        .step_by(MTU_PAYLOAD - 2)
                        .map(|o| body.slice(o..(o + MTU_PAYLOAD - 2).min(body.len())))
                        .collect();
                    for (j, c) in chunks.iter().enumerate() {
                        let end = j + 1 == chunks.len();
                        let mut p = BytesMut::with_capacity(c.len() + 2);
                        p.put_u8((head & 0xe0) | 28);
                        p.put_u8(
                            (if j == 0 { 0x80 } else { 0 })
                                | (if end { 0x40 } else { 0 })
                                | (head & 0x1f),
                        );
                        p.put_slice(c);
                        packets.push(Packet {
                            at_us,
                            track: 0,
                            ts,
                            marker: last && end,
                            payload: p.freeze(),
                        });
                    }
                }
            }
            TrackKind::Audio if sdp_audio.is_some() => {
                let ts = (s.dts_90k.max(0) as u64 * u64::from(audio_rate) / 90_000) as u32;
                let mut p = BytesMut::with_capacity(payload.len() + 4);
                p.put_u16(16); // AU-headers-length, bits
                p.put_u16(((payload.len() as u16) << 3) & 0xfff8);
                p.put_slice(&payload);
                packets.push(Packet {
                    at_us,
                    track: 1,
                    ts,
                    marker: true,
                    payload: p.freeze(),
                });
            }
            TrackKind::Audio => {}
        }
    }
    packets.sort_by_key(|p| p.at_us);
    let duration_us = (movie.duration_90k.max(1) as u64) * 100 / 9;
    let mut clocks = vec![(90_000, 96)];
    if sdp_audio.is_some() {
        clocks.push((audio_rate, 97));
    }
    Clip {
        packets,
        duration_us,
        clocks,
        sdp_video,
        sdp_audio,
    }
}

/// How a session's RTP leaves.
enum Transport {
    Interleaved,
    Udp(SocketAddr),
}

/// One RTSP request.
struct Request {
    method: String,
    url: String,
    headers: HashMap<String, String>,
}

/// Reads RTSP requests off the connection (skipping interleaved RTCP from the client) and
/// hands them on; ends when the client goes.
async fn read_requests(mut rd: tokio::net::tcp::OwnedReadHalf, tx: mpsc::Sender<Request>) {
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        // Interleaved frames from the client: `$`, channel, length.
        while buf.first() == Some(&b'$') && buf.len() >= 4 {
            let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
            if buf.len() < 4 + len {
                break;
            }
            let _ = buf.split_to(4 + len);
        }
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            if buf.first() != Some(&b'$') {
                let head = buf.split_to(end + 4);
                let text = String::from_utf8_lossy(&head).into_owned();
                let mut lines = text.split("\r\n");
                let first = lines.next().unwrap_or_default();
                let mut parts = first.split(' ');
                let method = parts.next().unwrap_or_default().to_owned();
                let url = parts.next().unwrap_or_default().to_owned();
                let headers: HashMap<String, String> = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                    .collect();
                let body = headers
                    .get("content-length")
                    .and_then(|v| v.parse::<usize>().ok());
                if let Some(n) = body {
                    while buf.len() < n {
                        if rd.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                            return;
                        }
                    }
                    let _ = buf.split_to(n);
                }
                if tx
                    .send(Request {
                        method,
                        url,
                        headers,
                    })
                    .await
                    .is_err()
                {
                    return;
                }
                continue;
            }
        }
        if buf.len() > 1 << 20 {
            return;
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// A session's RTP state per track.
struct Track {
    ssrc: u32,
    seq: u16,
    ts_base: u32,
    clock: u32,
    pt: u8,
    transport: Transport,
    channel: u8,
}

async fn session(stream: TcpStream, clip: Arc<Clip>, udp: Arc<UdpSocket>, counters: Arc<Counters>) {
    counters.sessions.fetch_add(1, Ordering::Relaxed);
    let _ = stream.set_nodelay(true);
    let (rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel(8);
    tokio::spawn(read_requests(rd, tx));
    let session_id = format!("{:016x}", rand::random::<u64>());
    let mut tracks: Vec<Option<Track>> = vec![None, None];
    let mut audio_wanted = true;
    let mut playing: Option<(Instant, u64, usize)> = None; // (start, offset µs, next packet)
    let mut loops = 0u64;
    let mut out = BytesMut::with_capacity(64 * 1024);
    let mut next_tick = tokio::time::Instant::now();
    loop {
        let wait = async {
            if playing.is_some() {
                tokio::time::sleep_until(next_tick).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            req = rx.recv() => {
                let Some(req) = req else { break };
                let cseq = req.headers.get("cseq").cloned().unwrap_or_default();
                let mut extra = String::new();
                let mut body = String::new();
                match req.method.as_str() {
                    "OPTIONS" => extra.push_str("Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER\r\n"),
                    "DESCRIBE" => {
                        audio_wanted = !req.url.contains("noaudio");
                        body = format!("v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=rtsp_load\r\nt=0 0\r\na=control:*\r\n{}", clip.sdp_video);
                        if let (true, Some(a)) = (audio_wanted, &clip.sdp_audio) {
                            body.push_str(a);
                        }
                        extra.push_str(&format!("Content-Base: {}/\r\nContent-Type: application/sdp\r\n", req.url.trim_end_matches('/')));
                    }
                    "SETUP" => {
                        let t = usize::from(req.url.contains("trackID=1"));
                        let spec = req.headers.get("transport").cloned().unwrap_or_default();
                        let (clock, pt) = clip.clocks.get(t).copied().unwrap_or((90_000, 96));
                        let transport = if spec.contains("TCP") {
                            let ch = spec.split("interleaved=").nth(1).and_then(|v| v.split(['-', ';']).next()).and_then(|v| v.parse().ok()).unwrap_or(2 * t as u8);
                            extra.push_str(&format!("Transport: RTP/AVP/TCP;unicast;interleaved={}-{}\r\n", ch, ch + 1));
                            (Transport::Interleaved, ch)
                        } else {
                            let port: u16 = spec.split("client_port=").nth(1).and_then(|v| v.split(['-', ';']).next()).and_then(|v| v.parse().ok()).unwrap_or(0);
                            let peer = wr.peer_addr().map(|a| SocketAddr::new(a.ip(), port)).unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], port)));
                            let sp = udp.local_addr().map(|a| a.port()).unwrap_or(0);
                            extra.push_str(&format!("Transport: RTP/AVP;unicast;client_port={}-{};server_port={}-{}\r\n", port, port + 1, sp, sp + 1));
                            (Transport::Udp(peer), 0)
                        };
                        tracks[t] = Some(Track { ssrc: rand::random(), seq: rand::random(), ts_base: rand::random(), clock, pt, transport: transport.0, channel: transport.1 });
                        extra.push_str(&format!("Session: {session_id};timeout=60\r\n"));
                    }
                    "PLAY" => {
                        let offset = rand::random::<u64>() % clip.duration_us.max(1);
                        let next = clip.packets.partition_point(|p| p.at_us < offset);
                        playing = Some((Instant::now(), offset, next));
                        next_tick = tokio::time::Instant::now();
                        counters.playing.fetch_add(1, Ordering::Relaxed);
                        let info: Vec<String> = tracks.iter().enumerate().filter_map(|(i, t)| {
                            let t = t.as_ref()?;
                            let ts0 = clip.packets.get(next).map_or(0, |p| (p.at_us * u64::from(t.clock) / 1_000_000) as u32);
                            Some(format!("url={}/trackID={i};seq={};rtptime={}", req.url.trim_end_matches('/'), t.seq, t.ts_base.wrapping_add(ts0)))
                        }).collect();
                        extra.push_str(&format!("Session: {session_id}\r\nRTP-Info: {}\r\n", info.join(",")));
                    }
                    "TEARDOWN" => {
                        let _ = wr.write_all(format!("RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\n\r\n").as_bytes()).await;
                        break;
                    }
                    _ => {} // GET_PARAMETER (keep-alive) and the rest: 200
                }
                let resp = format!("RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\n{extra}Content-Length: {}\r\n\r\n{body}", body.len());
                if wr.write_all(resp.as_bytes()).await.is_err() { break; }
            }
            _ = wait => {
                let Some((start, offset, next)) = playing.as_mut() else { continue };
                let now_us = start.elapsed().as_micros() as u64 + *offset;
                let mut sent = 0u64;
                let mut datagrams: Vec<(SocketAddr, Bytes)> = Vec::new();
                loop {
                    if *next >= clip.packets.len() {
                        *next = 0;
                        loops += 1;
                    }
                    let p = &clip.packets[*next];
                    let due = p.at_us + loops * clip.duration_us;
                    if due > now_us { break; }
                    *next += 1;
                    let Some(t) = tracks[p.track].as_mut().filter(|_| p.track == 0 || audio_wanted) else { continue };
                    let loop_ts = (loops * clip.duration_us * u64::from(t.clock) / 1_000_000) as u32;
                    let mut header = [0u8; 12];
                    header[0] = 0x80;
                    header[1] = t.pt | if p.marker { 0x80 } else { 0 };
                    header[2..4].copy_from_slice(&t.seq.to_be_bytes());
                    header[4..8].copy_from_slice(&t.ts_base.wrapping_add(p.ts).wrapping_add(loop_ts).to_be_bytes());
                    header[8..12].copy_from_slice(&t.ssrc.to_be_bytes());
                    t.seq = t.seq.wrapping_add(1);
                    sent += (12 + p.payload.len()) as u64;
                    counters.packets.fetch_add(1, Ordering::Relaxed);
                    match t.transport {
                        Transport::Interleaved => {
                            out.put_u8(b'$');
                            out.put_u8(t.channel);
                            out.put_u16((12 + p.payload.len()) as u16);
                            out.put_slice(&header);
                            out.put_slice(&p.payload);
                        }
                        Transport::Udp(to) => {
                            let mut d = BytesMut::with_capacity(12 + p.payload.len());
                            d.put_slice(&header);
                            d.put_slice(&p.payload);
                            datagrams.push((to, d.freeze()));
                        }
                    }
                }
                counters.bytes.fetch_add(sent, Ordering::Relaxed);
                if !out.is_empty() {
                    if wr.write_all(&out).await.is_err() { break; }
                    out.clear();
                }
                for (to, d) in datagrams {
                    let _ = udp.send_to(&d, to).await;
                }
                next_tick += TICK;
                let now = tokio::time::Instant::now();
                if next_tick < now { next_tick = now + TICK; }
            }
        }
    }
    if playing.is_some() {
        counters.playing.fetch_sub(1, Ordering::Relaxed);
    }
    counters.sessions.fetch_sub(1, Ordering::Relaxed);
}

fn main() {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().and_then(|p| p.parse().ok()).unwrap_or(8554);
    let path = args
        .next()
        .unwrap_or_else(|| "target/test-media/h264aac.mp4".into());
    let clip = Arc::new(load(&path));
    // One thread: the generator must cost as little as it can and stay off the gateway's cores'
    // scheduling as much as a process can.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
        let udp = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("udp"));
        let counters = Arc::new(Counters::default());
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(port);
        println!("READY {port}");
        eprintln!(
            "{{\"clip\":\"{path}\",\"packets\":{},\"duration_ms\":{}}}",
            clip.packets.len(),
            clip.duration_us / 1000
        );
        let c = Arc::clone(&counters);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(10));
            every.tick().await;
            loop {
                every.tick().await;
                eprintln!(
                    "{{\"sessions\":{},\"playing\":{},\"packets\":{},\"bytes\":{}}}",
                    c.sessions.load(Ordering::Relaxed),
                    c.playing.load(Ordering::Relaxed),
                    c.packets.load(Ordering::Relaxed),
                    c.bytes.load(Ordering::Relaxed)
                );
            }
        });
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(session(
                stream,
                Arc::clone(&clip),
                Arc::clone(&udp),
                Arc::clone(&counters),
            ));
        }
    });
}
