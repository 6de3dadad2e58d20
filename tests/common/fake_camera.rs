//! An in-process RTSP camera for fault injection, in addition to the real GStreamer one.
//!
//! It serves one H.264 track over RTSP/TCP interleaved or RTP over UDP (with lost, duplicated
//! and reordered packets on request) (OPTIONS, DESCRIBE, SETUP, PLAY, GET_PARAMETER,
//! TEARDOWN), packetized by hand (single NAL units and FU-A, RFC 6184), from
//! MP4 clips demuxed by the crate's own file reader. Faults are commanded at any time:
//! timestamp jumps, SSRC changes, a switch to a clip with other parameters (new SPS/PPS sent
//! in-band), stalls with the socket open, and dropped connections.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use video_server::media::TrackKind;
use video_server::source::file::Movie;

/// One clip as NAL units per access unit.
struct Clip {
    sps: Vec<u8>,
    pps: Vec<u8>,
    profile_level: [u8; 3],
    /// (is_key, NAL units, composition offset in 90 kHz) in decode order.
    frames: Vec<(bool, Vec<Bytes>, i32)>,
}

fn load_clip(path: &Path) -> Clip {
    let data = std::fs::read(path).expect("read clip");
    let movie = Movie::parse(Bytes::from(data)).expect("parse clip");
    let v = movie.params.video.as_ref().expect("clip has video");
    let entry = &v.sample_entry;
    let at = entry
        .windows(4)
        .position(|w| w == b"avcC")
        .expect("avcC in sample entry")
        + 4;
    let c = &entry[at..];
    let sps_len = usize::from(u16::from_be_bytes([c[6], c[7]]));
    let sps = c[8..8 + sps_len].to_vec();
    let p = 8 + sps_len + 1;
    let pps_len = usize::from(u16::from_be_bytes([c[p], c[p + 1]]));
    let pps = c[p + 2..p + 2 + pps_len].to_vec();
    let frames = movie
        .samples
        .iter()
        .filter(|s| s.track == TrackKind::Video)
        .map(|s| {
            let avcc = movie.payload(s);
            let mut nals = Vec::new();
            let mut i = 0;
            while i + 4 <= avcc.len() {
                let n =
                    u32::from_be_bytes([avcc[i], avcc[i + 1], avcc[i + 2], avcc[i + 3]]) as usize;
                nals.push(avcc.slice(i + 4..(i + 4 + n).min(avcc.len())));
                i += 4 + n;
            }
            (s.is_key, nals, s.cto_90k)
        })
        .collect();
    Clip {
        profile_level: [c[1], c[2], c[3]],
        sps,
        pps,
        frames,
    }
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for ch in data.chunks(3) {
        let b = [ch[0], *ch.get(1).unwrap_or(&0), *ch.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= ch.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// How this camera misbehaves from the start (the corpus of bad cameras).
#[derive(Clone, Copy, Debug, Default)]
pub struct Quirks {
    /// No `sprop-parameter-sets` in the SDP: parameter sets only in-band, before every keyframe.
    pub no_sprop: bool,
    /// Frame interval, 90 kHz (default 3600: 25 fps); 90000 is 1 fps, 1500 is 60 fps.
    pub frame_90k: Option<u32>,
    /// Answers DESCRIBE and SETUP, never PLAY.
    pub never_play: bool,
    /// RTP timestamps are presentation times (the clip's composition offsets: B-frames).
    pub presentation_times: bool,
    /// What the network does to RTP over UDP.
    pub udp_faults: UdpFaults,
    /// An old live555 server (its SDP says so): for this long after a connection is dropped,
    /// the dropped session's RTP goes on arriving on the next connection (interleaved data on a
    /// channel the new session never set up).
    pub live555_stale: Option<Duration>,
}

/// Probabilities per RTP packet sent over UDP.
#[derive(Clone, Copy, Debug, Default)]
pub struct UdpFaults {
    pub loss: f64,
    pub duplicate: f64,
    pub reorder: f64,
}

/// Commands shared with the connections.
#[derive(Default)]
struct Control {
    quirks: Quirks,
    /// Send this clip's SPS/PPS in-band before the next frame that is *not* a keyframe.
    params_without_idr: Option<usize>,
    /// Until when a dropped session's data leaks into new connections (`live555_stale`).
    stale_until: Option<Instant>,
    ts_offset: u32,
    ssrc: u32,
    clip: usize,
    stall_until: Option<Instant>,
    generation: u64,
    /// The camera's wall clock minus the real one, ms (in its RTCP sender reports).
    clock_offset_ms: i64,
    /// How far its RTP clock runs off real time, ppm.
    rtp_drift_ppm: i64,
}

pub struct FakeCamera {
    pub port: u16,
    ctl: Arc<Mutex<Control>>,
    stop: Arc<AtomicBool>,
    /// Connections currently open.
    pub connections: Arc<AtomicUsize>,
}

impl FakeCamera {
    /// Serves `clips` (MP4 files); clip 0 plays first.
    pub fn start(clips: &[&Path]) -> FakeCamera {
        Self::start_with(clips, Quirks::default())
    }

    /// Serves `clips` with `quirks`.
    pub fn start_with(clips: &[&Path], quirks: Quirks) -> FakeCamera {
        let clips: Arc<Vec<Clip>> = Arc::new(clips.iter().map(|p| load_clip(p)).collect());
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let ctl = Arc::new(Mutex::new(Control {
            ssrc: 0x1234_5678,
            quirks,
            ..Control::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicUsize::new(0));
        {
            let (ctl, stop, connections) = (ctl.clone(), stop.clone(), connections.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((s, _)) => {
                            let (ctl, clips, stop, conns) = (
                                ctl.clone(),
                                clips.clone(),
                                stop.clone(),
                                connections.clone(),
                            );
                            thread::spawn(move || {
                                conns.fetch_add(1, Ordering::SeqCst);
                                serve(s, port, &ctl, &clips, &stop);
                                conns.fetch_sub(1, Ordering::SeqCst);
                            });
                        }
                        Err(_) => thread::sleep(Duration::from_millis(20)),
                    }
                }
            });
        }
        FakeCamera {
            port,
            ctl,
            stop,
            connections,
        }
    }

    pub fn url(&self) -> String {
        format!("rtsp://127.0.0.1:{}/live", self.port)
    }

    fn with(&self, f: impl FnOnce(&mut Control)) {
        f(&mut self.ctl.lock().expect("control"));
    }

    /// Moves RTP timestamps by `delta_90k` (negative: backwards, as a shared GStreamer media does).
    pub fn jump_timestamps(&self, delta_90k: i64) {
        self.with(|c| c.ts_offset = c.ts_offset.wrapping_add(delta_90k as u32));
    }

    pub fn change_ssrc(&self) {
        self.with(|c| c.ssrc = c.ssrc.wrapping_add(0x1111));
    }

    /// Switches to another clip at its first keyframe, sending the new SPS/PPS in-band.
    pub fn switch_clip(&self, i: usize) {
        self.with(|c| c.clip = i);
    }

    /// Sends clip `i`'s SPS/PPS in-band before the next non-keyframe of the current clip: a
    /// parameter change without an IDR (the frames that follow do not match them).
    pub fn params_without_idr(&self, i: usize) {
        self.with(|c| c.params_without_idr = Some(i));
    }

    /// Sends nothing for `d`, sockets open (a frozen camera); time jumps forward afterwards.
    pub fn stall(&self, d: Duration) {
        self.with(|c| c.stall_until = Some(Instant::now() + d));
    }

    /// Sets the camera's wall clock `offset_ms` off (what its RTCP sender reports say) and its
    /// RTP clock `drift_ppm` fast (negative: slow), from now on.
    pub fn set_clocks(&self, offset_ms: i64, drift_ppm: i64) {
        self.with(|c| {
            c.clock_offset_ms = offset_ms;
            c.rtp_drift_ppm = drift_ppm;
        });
    }

    /// Closes every open connection (power blip).
    pub fn drop_connections(&self) {
        self.with(|c| {
            c.generation += 1;
            if let Some(window) = c.quirks.live555_stale {
                c.stale_until = Some(Instant::now() + window);
            }
        });
    }
}

impl Drop for FakeCamera {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.drop_connections();
    }
}

/// Reads one RTSP request (skipping interleaved RTCP from the client): (method, CSeq,
/// Transport header).
fn read_request(r: &mut BufReader<TcpStream>) -> Option<(String, String, String)> {
    loop {
        let buf = r.fill_buf().ok()?;
        if buf.is_empty() {
            return None;
        }
        if buf[0] == b'$' {
            let mut h = [0u8; 4];
            r.read_exact(&mut h).ok()?;
            let mut skip = vec![0u8; usize::from(u16::from_be_bytes([h[2], h[3]]))];
            r.read_exact(&mut skip).ok()?;
            continue;
        }
        let mut method = String::new();
        let mut cseq = String::new();
        let mut transport = String::new();
        let mut content_len = 0usize;
        let mut first = true;
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).ok()? == 0 {
                return None;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if first {
                method = line.split_whitespace().next().unwrap_or("").to_owned();
                first = false;
            } else if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("cseq") {
                    cseq = v.trim().to_owned();
                } else if k.eq_ignore_ascii_case("transport") {
                    transport = v.trim().to_owned();
                } else if k.eq_ignore_ascii_case("content-length") {
                    content_len = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; content_len];
        r.read_exact(&mut body).ok()?;
        return Some((method, cseq, transport));
    }
}

fn serve(
    s: TcpStream,
    port: u16,
    ctl: &Arc<Mutex<Control>>,
    clips: &Arc<Vec<Clip>>,
    stop: &Arc<AtomicBool>,
) {
    let _ = s.set_nodelay(true);
    let generation = ctl.lock().expect("control").generation;
    let writer = Arc::new(Mutex::new(s.try_clone().expect("clone")));
    let mut reader = BufReader::new(s.try_clone().expect("clone"));
    let playing = Arc::new(AtomicBool::new(false));
    let base = format!("rtsp://127.0.0.1:{port}/live/");
    let send = |text: String| {
        let _ = writer.lock().expect("writer").write_all(text.as_bytes());
    };
    let mut sender: Option<thread::JoinHandle<()>> = None;
    // RTP over UDP, when the client asks for it: where to send, and from which sockets.
    let mut udp: Option<Udp> = None;
    while let Some((method, cseq, transport)) = read_request(&mut reader) {
        let (clip, quirks) = {
            let c = ctl.lock().expect("control");
            (&clips[c.clip], c.quirks)
        };
        match method.as_str() {
            "OPTIONS" => send(format!("RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nPublic: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER\r\n\r\n")),
            "DESCRIBE" => {
                let pl = clip.profile_level;
                let sprop = if quirks.no_sprop {
                    String::new()
                } else {
                    format!(";sprop-parameter-sets={},{}", base64(&clip.sps), base64(&clip.pps))
                };
                let tool = if quirks.live555_stale.is_some() {
                    "a=tool:LIVE555 Streaming Media v2016.10.11\r\n"
                } else {
                    ""
                };
                let sdp = format!(
                    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=fake camera\r\nt=0 0\r\n{tool}m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1;profile-level-id={:02X}{:02X}{:02X}{sprop}\r\na=control:trackID=0\r\n",
                    pl[0], pl[1], pl[2]
                );
                send(format!(
                    "RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nContent-Base: {base}\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
                    sdp.len()
                ));
                let stale = ctl
                    .lock()
                    .expect("control")
                    .stale_until
                    .is_some_and(|t| Instant::now() < t);
                if stale {
                    // The dropped session's next packet, on this connection.
                    let mut pkt = Vec::new();
                    packetize(&mut pkt, &[Bytes::from_static(&[0x41, 0x9a, 0x00])], &mut 7, 1, 0xdead_beef);
                    let _ = writer.lock().expect("writer").write_all(&pkt);
                }
            }
            "SETUP" => match client_ports(&transport) {
                Some((rtp, rtcp)) => {
                    let u = Udp::bind(rtp, rtcp);
                    let server = u.rtp.local_addr().expect("addr").port();
                    let server_rtcp = u.rtcp.local_addr().expect("addr").port();
                    udp = Some(u);
                    send(format!(
                        "RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nTransport: RTP/AVP;unicast;client_port={rtp}-{rtcp};server_port={server}-{server_rtcp}\r\nSession: 4242;timeout=60\r\n\r\n"
                    ))
                }
                None => send(format!(
                    "RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\nSession: 4242;timeout=60\r\n\r\n"
                )),
            },
            "PLAY" if quirks.never_play => {} // no answer, ever
            "PLAY" => {
                send(format!("RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nSession: 4242\r\nRange: npt=0.000-\r\n\r\n"));
                if !playing.swap(true, Ordering::SeqCst) {
                    let (w, ctl, clips, stop, playing) =
                        (writer.clone(), ctl.clone(), clips.clone(), stop.clone(), playing.clone());
                    let out = match udp.take() {
                        Some(u) => Out::Udp(u),
                        None => Out::Tcp(w),
                    };
                    sender = Some(thread::spawn(move || stream(out, &ctl, &clips, &stop, &playing, generation)));
                }
            }
            "GET_PARAMETER" | "SET_PARAMETER" => send(format!("RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nSession: 4242\r\n\r\n")),
            "TEARDOWN" => {
                send(format!("RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nSession: 4242\r\n\r\n"));
                break;
            }
            _ => send(format!("RTSP/1.0 501 Not Implemented\r\nCSeq: {cseq}\r\n\r\n")),
        }
    }
    playing.store(false, Ordering::SeqCst);
    let _ = writer
        .lock()
        .expect("writer")
        .shutdown(std::net::Shutdown::Both);
    if let Some(t) = sender {
        let _ = t.join();
    }
}

/// Appends an RTCP sender report (interleaved channel 1) with the camera's wall clock, off the
/// real one by `offset_ms`, and the RTP time `ts` it corresponds to.
fn sender_report(out: &mut Vec<u8>, ssrc: u32, ts: u32, offset_ms: i64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
        + offset_ms;
    let secs = (now / 1000) as u64 + 2_208_988_800;
    let frac = (((now % 1000) as u64) << 32) / 1000;
    out.extend_from_slice(&[b'$', 1, 0, 28]);
    out.extend_from_slice(&[0x80, 200, 0, 6]);
    out.extend_from_slice(&ssrc.to_be_bytes());
    out.extend_from_slice(&(secs as u32).to_be_bytes());
    out.extend_from_slice(&(frac as u32).to_be_bytes());
    out.extend_from_slice(&ts.to_be_bytes());
    out.extend_from_slice(&[0; 8]); // packet and octet counts
}

/// Appends RTP packets for one access unit (interleaved channel 0).
fn packetize(out: &mut Vec<u8>, nals: &[Bytes], seq: &mut u16, ts: u32, ssrc: u32) {
    const MAX: usize = 1400;
    let mut packets: Vec<Vec<u8>> = Vec::new();
    for nal in nals {
        if nal.is_empty() {
            continue;
        }
        if nal.len() <= MAX {
            packets.push(nal.to_vec());
        } else {
            let (hdr, body) = (nal[0], &nal[1..]);
            let chunks: Vec<&[u8]> = body.chunks(MAX).collect();
            for (i, c) in chunks.iter().enumerate() {
                let mut p = vec![(hdr & 0xe0) | 28, hdr & 0x1f];
                if i == 0 {
                    p[1] |= 0x80;
                }
                if i + 1 == chunks.len() {
                    p[1] |= 0x40;
                }
                p.extend_from_slice(c);
                packets.push(p);
            }
        }
    }
    let n = packets.len();
    for (i, p) in packets.into_iter().enumerate() {
        let len = (12 + p.len()) as u16;
        out.extend_from_slice(&[b'$', 0]);
        out.extend_from_slice(&len.to_be_bytes());
        out.push(0x80);
        out.push(if i + 1 == n { 0x80 | 96 } else { 96 });
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(&ts.to_be_bytes());
        out.extend_from_slice(&ssrc.to_be_bytes());
        out.extend_from_slice(&p);
        *seq = seq.wrapping_add(1);
    }
}

/// The client's RTP and RTCP ports of a UDP `Transport` header.
fn client_ports(transport: &str) -> Option<(u16, u16)> {
    if transport.contains("TCP") {
        return None;
    }
    let ports = transport
        .split(';')
        .find_map(|p| p.trim().strip_prefix("client_port="))?;
    let (a, b) = ports.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// RTP over UDP to the client, with the network's faults.
struct Udp {
    rtp: std::net::UdpSocket,
    rtcp: std::net::UdpSocket,
    to_rtp: u16,
    to_rtcp: u16,
    /// A packet held back to be sent after the next one (reordering).
    held: Option<Vec<u8>>,
}

impl Udp {
    /// Binds an even RTP port and the RTCP port after it (as RFC 3550 and retina want).
    fn bind(to_rtp: u16, to_rtcp: u16) -> Udp {
        for _ in 0..100 {
            let rtp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind rtp");
            let port = rtp.local_addr().expect("addr").port();
            if port % 2 != 0 {
                continue;
            }
            if let Ok(rtcp) = std::net::UdpSocket::bind(("127.0.0.1", port + 1)) {
                return Udp {
                    rtp,
                    rtcp,
                    to_rtp,
                    to_rtcp,
                    held: None,
                };
            }
        }
        panic!("no pair of UDP ports");
    }

    /// Sends the interleaved frames in `buf` as datagrams; RTP packets are lost, duplicated or
    /// reordered with the probabilities in `faults`.
    fn send(&mut self, buf: &[u8], faults: UdpFaults) -> bool {
        let mut at = 0;
        while at + 4 <= buf.len() {
            let channel = buf[at + 1];
            let len = usize::from(u16::from_be_bytes([buf[at + 2], buf[at + 3]]));
            let Some(pkt) = buf.get(at + 4..at + 4 + len) else {
                break;
            };
            at += 4 + len;
            if channel == 1 {
                let _ = self.rtcp.send_to(pkt, ("127.0.0.1", self.to_rtcp));
                continue;
            }
            let roll = || rand::random::<f64>();
            if roll() < faults.loss {
                continue;
            }
            if roll() < faults.reorder && self.held.is_none() {
                self.held = Some(pkt.to_vec());
                continue;
            }
            let copies = if roll() < faults.duplicate { 2 } else { 1 };
            for _ in 0..copies {
                if self.rtp.send_to(pkt, ("127.0.0.1", self.to_rtp)).is_err() {
                    return false;
                }
            }
            if let Some(h) = self.held.take() {
                let _ = self.rtp.send_to(&h, ("127.0.0.1", self.to_rtp));
            }
        }
        true
    }
}

/// Where a session's media goes.
enum Out {
    Tcp(Arc<Mutex<TcpStream>>),
    Udp(Udp),
}

fn stream(
    mut out: Out,
    ctl: &Arc<Mutex<Control>>,
    clips: &Arc<Vec<Clip>>,
    stop: &Arc<AtomicBool>,
    playing: &Arc<AtomicBool>,
    generation: u64,
) {
    let (mut clip_i, quirks) = {
        let c = ctl.lock().expect("control");
        (c.clip, c.quirks)
    };
    let frame_90k = quirks.frame_90k.unwrap_or(3600);
    let mut idx = 0usize;
    let mut send_params = false;
    let mut media_90k: u32 = 0;
    let mut start = Instant::now();
    let mut seq: u16 = 1000;
    let mut buf = Vec::with_capacity(256 * 1024);
    let mut last_report = Instant::now();
    while playing.load(Ordering::SeqCst) && !stop.load(Ordering::Relaxed) {
        let (ts_offset, ssrc, want_clip, stall_until, gen, clock_offset_ms, drift_ppm) = {
            let c = ctl.lock().expect("control");
            (
                c.ts_offset,
                c.ssrc,
                c.clip,
                c.stall_until,
                c.generation,
                c.clock_offset_ms,
                c.rtp_drift_ppm,
            )
        };
        if gen != generation {
            if let Out::Tcp(w) = &out {
                let _ = w.lock().expect("writer").shutdown(std::net::Shutdown::Both);
            }
            return;
        }
        if let Some(until) = stall_until {
            if Instant::now() < until {
                thread::sleep(Duration::from_millis(20));
                continue;
            }
            // Like a camera thawed after SIGSTOP: its clock ran on, so timestamps jump forward.
            let mut c = ctl.lock().expect("control");
            let frozen = start.elapsed().as_secs_f64() - f64::from(media_90k) / 90_000.0;
            c.stall_until = None;
            drop(c);
            media_90k = media_90k.wrapping_add((frozen.max(0.0) * 90_000.0) as u32);
            start = Instant::now() - Duration::from_secs_f64(f64::from(media_90k) / 90_000.0);
        }
        if want_clip != clip_i {
            clip_i = want_clip;
            idx = 0;
            send_params = true;
        }
        let clip = &clips[clip_i];
        let (is_key, nals, cto_90k) = &clip.frames[idx];
        let foreign = if *is_key {
            None
        } else {
            ctl.lock().expect("control").params_without_idr.take()
        };
        let due = start + Duration::from_secs_f64(f64::from(media_90k) / 90_000.0);
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            thread::sleep(d);
        }
        buf.clear();
        let rtp_media = (f64::from(media_90k) * (1.0 + drift_ppm as f64 / 1e6)) as u32;
        let mut ts = 0x4000_0000u32
            .wrapping_add(ts_offset)
            .wrapping_add(rtp_media);
        if quirks.presentation_times {
            // The clip's offsets at 25 fps, scaled to this camera's frame interval.
            let cto = i64::from(*cto_90k) * i64::from(frame_90k) / 3600;
            ts = ts.wrapping_add(cto as u32);
        }
        if let Some(other) = foreign {
            let o = &clips[other];
            let mut with = vec![Bytes::from(o.sps.clone()), Bytes::from(o.pps.clone())];
            with.extend(nals.iter().cloned());
            packetize(&mut buf, &with, &mut seq, ts, ssrc);
        } else if (send_params || quirks.no_sprop) && *is_key {
            let mut with = vec![Bytes::from(clip.sps.clone()), Bytes::from(clip.pps.clone())];
            with.extend(nals.iter().cloned());
            packetize(&mut buf, &with, &mut seq, ts, ssrc);
            send_params = false;
        } else {
            packetize(&mut buf, nals, &mut seq, ts, ssrc);
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            sender_report(&mut buf, ssrc, ts, clock_offset_ms);
        }
        let sent = match &mut out {
            Out::Tcp(w) => w.lock().expect("writer").write_all(&buf).is_ok(),
            Out::Udp(u) => u.send(&buf, quirks.udp_faults),
        };
        if !sent {
            return;
        }
        media_90k = media_90k.wrapping_add(frame_90k);
        idx = (idx + 1) % clip.frames.len();
    }
}
