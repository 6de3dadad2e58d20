//! WebRTC (WHEP) with real parts: GStreamer's RTSP server as the camera, Debian's Chromium as
//! the viewer (its RTCPeerConnection, its getStats()), and a lossy UDP relay between them for
//! the NACK/PLI path. The WHEP handshake's refusals are checked with plain HTTP.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

/// `[webrtc]` on `port` of loopback, plus `extra` keys.
fn webrtc_section(port: u16, extra: &str) -> String {
    format!("[webrtc]\nlisten = \"127.0.0.1:{port}\"\n{extra}\n")
}

fn free_udp_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    s.local_addr().expect("addr").port()
}

/// Runs tests/browser/whep.mjs on the WebRTC player page and returns its report.
fn whep(url: &str, shot: &str, secs: u32) -> serde_json::Value {
    node_report("whep.mjs", url, shot, secs, &[])
}

/// A camera on `mount`, a gateway with it as a WebRTC stream and `section` as its `[webrtc]`,
/// and the WebRTC player in Chromium for `secs` (screenshot `shot`): the report.
async fn play(
    mount: &str,
    section: &str,
    shot: &'static str,
    secs: u32,
) -> (Camera, Gateway, serde_json::Value) {
    let cam = Camera::start(Auth::None);
    let gw = Gateway::start(&format!(
        "{}{section}",
        rtsp_stream(STREAM_A, &cam.url(mount), "\"webrtc\"", "")
    ))
    .await;
    gw.wait_online(STREAM_A, Duration::from_secs(20)).await;
    let url = format!("http://{}/players/webrtc/?stream_id={STREAM_A}", gw.video);
    let r = tokio::task::spawn_blocking(move || whep(&url, shot, secs))
        .await
        .expect("join");
    (cam, gw, r)
}

/// Frames Chromium decoded during the measured seconds.
fn decoded(r: &serde_json::Value) -> u64 {
    let n = |k: &str| r[k]["framesDecoded"].as_u64().unwrap_or(0);
    n("after").saturating_sub(n("before"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_plays_a_camera_over_whep_with_its_g711_audio_as_pcma() {
    let section = webrtc_section(free_udp_port(), "");
    let (_cam, gw, r) = play("h264pcma", &section, "webrtc-player-g711.png", 4).await;
    eprintln!("report {r}");
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["video"]["width"], 1280, "{r}");
    assert_eq!(r["after"]["videoCodec"], "video/H264", "{r}");
    // 25 fps for 4 s; a loaded machine may decode late, not lose most of them.
    assert!(
        decoded(&r) >= 60,
        "decoded only {} frames in 4 s: {r}",
        decoded(&r)
    );
    assert_eq!(r["audio"], "pcma", "{r}");
    assert_eq!(r["after"]["audioCodec"], "audio/PCMA", "{r}");
    // The camera's packets (GStreamer sends about 12 a second) arrived and decoded.
    assert!(
        r["after"]["audioPacketsReceived"].as_u64().unwrap_or(0) > 20,
        "{r}"
    );
    assert!(
        r["after"]["audioSamplesDecoded"].as_i64().unwrap_or(0) > 8_000,
        "{r}"
    );
    // The viewer started from the GOP cache: its first frame came with the connection, not
    // at the camera's next keyframe (the figure against the 200 ms target is in the report).
    let first = r["firstFrameAfterConnectedMs"].as_f64().unwrap_or(f64::MAX);
    assert!(
        first < 1000.0,
        "first frame {first} ms after connecting: {r}"
    );
    // The gateway counted the viewer while it played and its send delay.
    let st = get(gw.video, &format!("/streams/{STREAM_A}")).await.json();
    assert!(
        st["webrtc_send_delay"]["count"].as_u64().unwrap_or(0) > 0,
        "{st}"
    );
    let metrics = get(gw.api, "/metrics").await.text();
    assert!(
        metrics.contains("video_server_webrtc_sessions_total"),
        "{metrics}"
    );
    // The browser is gone: the session ends (ICE times out) and the count returns to 0.
    wait_for(
        Duration::from_secs(40),
        "the WebRTC viewer to be let go",
        || async {
            let st = get(gw.video, &format!("/streams/{STREAM_A}")).await.json();
            (st["webrtc_viewers"] == 0).then_some(())
        },
    )
    .await;
}

/// What the relay loses of the gateway's RTP/RTCP (STUN and DTLS always pass, so the
/// connection comes up).
#[derive(Clone, Copy)]
enum Loss {
    /// Every nth datagram.
    Every(u64),
    /// Everything from the `from`th datagram on, for `count` datagrams (an outage longer than
    /// the retransmission buffer: only a keyframe repairs it).
    Outage { from: u64, count: u64 },
}

/// Between the browser and the gateway: forwards both ways, losing the gateway's media as
/// `loss` says.
async fn lossy_relay(gateway: SocketAddr, loss: Loss) -> (SocketAddr, Arc<AtomicU64>) {
    let front = Arc::new(
        tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("udp"),
    );
    let back = Arc::new(
        tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("udp"),
    );
    let addr = front.local_addr().expect("addr");
    let dropped = Arc::new(AtomicU64::new(0));
    let browser: Arc<std::sync::Mutex<Option<SocketAddr>>> = Arc::default();
    let (f, b, who) = (Arc::clone(&front), Arc::clone(&back), Arc::clone(&browser));
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, from)) = f.recv_from(&mut buf).await {
            *who.lock().expect("lock") = Some(from);
            let _ = b.send_to(&buf[..n], gateway).await;
        }
    });
    let d = Arc::clone(&dropped);
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        let mut media = 0u64;
        while let Ok((n, _)) = back.recv_from(&mut buf).await {
            if (128..192).contains(&buf[0]) {
                media += 1;
                let lose = match loss {
                    Loss::Every(nth) => media % nth == 0,
                    Loss::Outage { from, count } => (from..from + count).contains(&media),
                };
                if lose {
                    d.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            }
            let to = *browser.lock().expect("lock");
            if let Some(to) = to {
                let _ = front.send_to(&buf[..n], to).await;
            }
        }
    });
    (addr, dropped)
}

/// A camera, a gateway that offers only the lossy relay's address (every packet crosses it),
/// and the WebRTC player in Chromium for `secs`: the report and the datagrams the relay lost.
async fn play_through_relay(
    loss: Loss,
    shot: &'static str,
    secs: u32,
) -> (Camera, Gateway, serde_json::Value, u64) {
    let port = free_udp_port();
    let (relay, dropped) = lossy_relay(SocketAddr::from(([127, 0, 0, 1], port)), loss).await;
    let section = webrtc_section(
        port,
        &format!("host_candidates = false\nadvertise = [\"{relay}\"]"),
    );
    let (cam, gw, r) = play("h264", &section, shot, secs).await;
    let lost = dropped.load(Ordering::Relaxed);
    eprintln!("relay dropped {lost} datagrams; report {r}");
    (cam, gw, r, lost)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_that_loses_packets_is_repaired_by_nacks_and_keeps_playing() {
    let (_cam, gw, r, lost) =
        play_through_relay(Loss::Every(25), "webrtc-player-lossy.png", 6).await;
    assert_eq!(r["ok"], true, "{r}");
    assert!(lost > 20, "the relay dropped only {lost}");
    // Chromium asked for the lost packets, the gateway resent them: the video kept going.
    assert!(r["after"]["nackCount"].as_u64().unwrap_or(0) > 0, "{r}");
    assert!(
        decoded(&r) >= 90,
        "decoded only {} frames in 6 s: {r}",
        decoded(&r)
    );
    let st = get(gw.video, &format!("/streams/{STREAM_A}")).await.json();
    assert!(st["webrtc_nacks"].as_u64().unwrap_or(0) > 0, "{st}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_cut_off_for_six_seconds_asks_for_a_keyframe_and_gets_the_cached_gop() {
    // About 250 packets a second: lose 6 s of them once playing is under way, more than
    // the gateway keeps for retransmission and than Chromium will NACK (1000 packets).
    let loss = Loss::Outage {
        from: 1000,
        count: 1500,
    };
    let (_cam, gw, r, lost) = play_through_relay(loss, "webrtc-player-outage.png", 16).await;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(lost, 1500, "the outage did not happen: {r}");
    // Chromium could not repair 6 s with NACKs and asked for a keyframe; the gateway sent
    // the cached GOP at once and the picture moved on.
    assert!(r["after"]["pliCount"].as_u64().unwrap_or(0) > 0, "{r}");
    let st = get(gw.video, &format!("/streams/{STREAM_A}")).await.json();
    assert!(
        st["webrtc_keyframe_requests"].as_u64().unwrap_or(0) > 0,
        "{st}"
    );
    // 16 s at 25 fps, less the 6 s outage and what it took to recover.
    assert!(
        decoded(&r) >= 150,
        "decoded only {} frames in 16 s: {r}",
        decoded(&r)
    );
}

/// Forwards TCP connections from a free port to `to`, counting the bytes sent back.
async fn tcp_forwarder(to: SocketAddr) -> (SocketAddr, Arc<AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let back = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&back);
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let counted = Arc::clone(&counted);
            tokio::spawn(async move {
                let Ok(mut server) = tokio::net::TcpStream::connect(to).await else {
                    return;
                };
                let (mut cr, mut cw) = client.split();
                let (mut sr, mut sw) = server.split();
                let up = tokio::io::copy(&mut cr, &mut sw);
                let down = async {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        use tokio::io::{AsyncReadExt, AsyncWriteExt};
                        let n = match sr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        counted.fetch_add(n as u64, Ordering::Relaxed);
                        if cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                };
                let _ = tokio::join!(up, down);
            });
        }
    });
    (addr, back)
}

/// A browser whose UDP is blocked: the only address offered answers TCP alone (a forwarder to
/// the gateway's ICE-TCP port; nothing listens for UDP there), and the video still plays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_udp_blocked_the_browser_plays_over_ice_tcp() {
    let port = free_udp_port();
    let (forward, bytes_back) = tcp_forwarder(SocketAddr::from(([127, 0, 0, 1], port))).await;
    let section = webrtc_section(
        port,
        &format!("ice_tcp = true\nhost_candidates = false\nadvertise = [\"{forward}\"]"),
    );
    let (_cam, _gw, r) = play("h264", &section, "webrtc-player-ice-tcp.png", 4).await;
    let over_tcp = bytes_back.load(Ordering::Relaxed);
    eprintln!("{over_tcp} bytes came back over TCP; report {r}");
    assert_eq!(r["ok"], true, "{r}");
    assert!(
        decoded(&r) >= 60,
        "decoded only {} frames in 4 s: {r}",
        decoded(&r)
    );
    // Four seconds of a 2 Mbit/s camera, and then some: the video went over the connection.
    assert!(over_tcp > 500_000, "only {over_tcp} bytes over TCP");
}

/// A minimal browser-like offer: one receive-only video section with `video` rtpmap lines.
fn offer(video_rtpmaps: &str) -> String {
    [
        "v=0",
        "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0",
        "a=msid-semantic: WMS",
        "m=video 9 UDP/TLS/RTP/SAVPF 96",
        "c=IN IP4 0.0.0.0",
        "a=rtcp:9 IN IP4 0.0.0.0",
        "a=ice-ufrag:abcd",
        "a=ice-pwd:abcdefghijklmnopqrstuvwx",
        "a=ice-options:trickle",
        "a=fingerprint:sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08",
        "a=setup:actpass",
        "a=mid:0",
        "a=recvonly",
        "a=rtcp-mux",
        video_rtpmaps,
        "",
    ]
    .join("\r\n")
}

const VP8_ONLY: &str = "a=rtpmap:96 VP8/90000";
const H265: &str = "a=rtpmap:96 H265/90000";
const H264_PM1: &str = "a=rtpmap:96 H264/90000\r\na=fmtp:96 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";

async fn post_offer(gw: &Gateway, id: &str, ctype: &str, body: &str) -> Resp {
    http(
        gw.video,
        "POST",
        &format!("/whep/{id}"),
        &[("content-type", ctype)],
        body.as_bytes(),
    )
    .await
    .expect("POST /whep")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whep_answers_and_refuses_with_reasons() {
    const H265_STREAM: &str = "3f1c2b7e-0d7a-4c55-9e0b-6a1f2d3c4b5a";
    let cam = Camera::start(Auth::None);
    let section = webrtc_section(free_udp_port(), "");
    let gw = Gateway::start(&format!(
        "{}{}{}{section}",
        rtsp_stream(STREAM_A, &cam.url("h264"), "\"webrtc\"", ""),
        rtsp_stream(STREAM_B, &cam.url("h264"), "\"mse\"", ""),
        rtsp_stream(H265_STREAM, &cam.url("h265"), "\"webrtc\"", ""),
    ))
    .await;
    gw.wait_online(STREAM_A, Duration::from_secs(20)).await;
    gw.wait_online(H265_STREAM, Duration::from_secs(20)).await;

    // An H.265 camera: answered where the offer has H.265 (Safari, Chrome 136+ with hardware
    // decoding), refused with the reason where it has only H.264.
    let r = post_offer(&gw, H265_STREAM, "application/sdp", &offer(H265)).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(r.text().contains("H265/90000"), "{}", r.text());
    let r = post_offer(&gw, H265_STREAM, "application/sdp", &offer(H264_PM1)).await;
    assert_eq!(r.status, 406, "{}", r.text());
    assert!(r.text().contains("H.265"), "{}", r.text());

    // An offer with H.264 in packetization mode 1: 201, an SDP answer, a session to DELETE.
    let r = post_offer(&gw, STREAM_A, "application/sdp", &offer(H264_PM1)).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/sdp"));
    let answer = r.text();
    assert!(answer.contains("a=ice-lite"), "{answer}");
    assert!(answer.contains("H264/90000"), "{answer}");
    assert!(answer.contains(" typ host"), "{answer}");
    assert_eq!(
        r.header("x-webrtc-audio"),
        Some("none: the stream has no audio")
    );
    let location = r.header("location").expect("Location").to_owned();
    assert!(
        location.starts_with(&format!("/whep/{STREAM_A}/")),
        "{location}"
    );
    let trickle = http(
        gw.video,
        "PATCH",
        &location,
        &[("content-type", "application/trickle-ice-sdpfrag")],
        b"a=candidate:1 1 udp 1 127.0.0.1 9 typ host\r\n",
    )
    .await
    .expect("PATCH");
    assert_eq!(trickle.status, 204);
    let del = http(gw.video, "DELETE", &location, &[], b"")
        .await
        .expect("DELETE");
    assert_eq!(del.status, 200);
    let again = http(gw.video, "DELETE", &location, &[], b"")
        .await
        .expect("DELETE");
    assert_eq!(again.status, 404, "{}", again.text());

    // Refusals, each a 4xx with a JSON reason.
    let cases = [
        (
            STREAM_A,
            "text/plain",
            offer(H264_PM1),
            415,
            "application/sdp",
        ),
        (
            STREAM_A,
            "application/sdp",
            "hello".to_owned(),
            400,
            "not SDP",
        ),
        (STREAM_A, "application/sdp", offer(VP8_ONLY), 406, "H.264"),
        (STREAM_B, "application/sdp", offer(H264_PM1), 404, "webrtc"),
        (DEMO, "application/sdp", offer(H264_PM1), 404, "not found"),
        (
            "not-a-uuid",
            "application/sdp",
            offer(H264_PM1),
            400,
            "UUID",
        ),
    ];
    for (id, ctype, body, status, says) in cases {
        let r = post_offer(&gw, id, ctype, &body).await;
        let j = r.json();
        let reason = j["error"]
            .as_str()
            .or(j["Error"].as_str())
            .unwrap_or_default();
        assert_eq!(r.status, status, "{id} {ctype}: {j}");
        assert!(
            reason.to_lowercase().contains(&says.to_lowercase()),
            "{id} {ctype}: {reason}"
        );
    }
    // Nothing was left running by the refusals and the DELETE.
    let st = get(gw.video, &format!("/streams/{STREAM_A}")).await.json();
    assert_eq!(st["webrtc_viewers"], 0, "{st}");
}
