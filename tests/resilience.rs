//! Video that never gets stuck: camera power loss and reboot, a gateway started before its
//! camera, a viewer that stops reading, and a disabled camera whose session really ends.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use tokio_tungstenite::tungstenite::Message;

/// A websocket client with a 32 KiB receive buffer, like a viewer on a slow link.
async fn ws_connect_small_buffer(url: &str, addr: std::net::SocketAddr) -> Ws {
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.set_recv_buffer_size(32 * 1024).expect("SO_RCVBUF");
    let tcp = sock.connect(addr).await.expect("connect");
    let (ws, _) =
        tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(tcp))
            .await
            .expect("websocket handshake");
    ws
}

fn events(cap: &Capture) -> Vec<String> {
    cap.texts
        .iter()
        .filter_map(|t| serde_json::from_str::<serde_json::Value>(t).ok())
        .filter_map(|v| v["type"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_get_video_again_after_the_camera_reboots() {
    let mut cam = Camera::start(Auth::None);
    let gw = Gateway::start(&rtsp_stream(STREAM_A, &cam.url("h264aac"), "\"mse\"", "")).await;
    gw.wait_online(STREAM_A, Duration::from_secs(20)).await;
    let mut ws = ws_connect(&gw.ws_url(STREAM_A, "&events=1")).await;
    let mut cap = Capture::default();
    collect(&mut ws, &mut cap, 50, Duration::from_secs(20)).await;
    let before = cap.fragments();

    cam.kill();
    // The watchdog (10 s without frames) or the TCP close ends the session: offline.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !events(&cap).contains(&"offline".to_owned()) {
        assert!(
            Instant::now() < deadline,
            "no offline event: {:?}",
            cap.texts
        );
        collect(&mut ws, &mut cap, usize::MAX, Duration::from_millis(500)).await;
    }
    // Down for 10 s, as in the acceptance check; the recovery time is printed, not asserted.
    tokio::time::sleep(Duration::from_secs(10)).await;
    cam.restart();
    let back = Instant::now();
    let deadline = back + Duration::from_secs(20);
    while cap.fragments() < before + 50 {
        assert!(
            Instant::now() < deadline,
            "no video after the camera returned; log:\n{}",
            gw.log()
        );
        collect(&mut ws, &mut cap, before + 50, Duration::from_millis(500)).await;
    }
    eprintln!(
        "video again {:?} after the camera restarted",
        back.elapsed()
    );
    let ev = events(&cap);
    let off = ev.iter().position(|e| e == "offline").expect("offline");
    assert!(ev[off..].contains(&"online".to_owned()), "events {ev:?}");
    // The same socket carried both sessions; the whole capture still decodes and time never
    // goes back.
    let times: Vec<(u32, u64)> = cap
        .media
        .iter()
        .filter_map(|m| fragment_info(m))
        .map(|f| (f.0, f.1))
        .collect();
    for track in [1, 2] {
        let t: Vec<u64> = times.iter().filter(|x| x.0 == track).map(|x| x.1).collect();
        assert!(
            t.windows(2).all(|w| w[1] >= w[0]),
            "track {track} went back in time"
        );
    }
    let dir = tempfile::tempdir().expect("tempdir");
    cap.write(&dir.path().join("reboot.mp4"));
    let p = probe(&dir.path().join("reboot.mp4"));
    assert!(p.decode_errors.is_empty(), "{}", p.decode_errors);
    assert!(gw.status().await["streams"][STREAM_A]["sessions"].as_u64() >= Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_started_before_its_camera_gets_video_when_the_camera_appears() {
    let port = free_port();
    let url = format!("rtsp://127.0.0.1:{port}/h264");
    let gw = Gateway::start(&rtsp_stream(STREAM_A, &url, "\"mse\"", "")).await;
    // A viewer may connect while the camera is down; it waits instead of being dropped.
    let mut ws = ws_connect(&gw.ws_url(STREAM_A, "&events=1")).await;
    let mut cap = Capture::default();
    collect(&mut ws, &mut cap, 1, Duration::from_secs(6)).await;
    assert_eq!(cap.fragments(), 0);
    assert!(
        cap.close.is_none(),
        "viewer must not be dropped while the camera is down"
    );
    assert_eq!(events(&cap).first().map(String::as_str), Some("offline"));
    let st = gw.status().await;
    assert_eq!(st["streams"][STREAM_A]["online"], false);
    assert!(
        st["streams"][STREAM_A]["sessions"].as_u64() >= Some(2),
        "retrying: {st}"
    );

    let _cam = Camera::start_on(port, Auth::None);
    let t = Instant::now();
    collect(&mut ws, &mut cap, 25, Duration::from_secs(20)).await;
    assert!(
        cap.fragments() >= 25,
        "no video after the camera appeared; log:\n{}",
        gw.log()
    );
    eprintln!("video {:?} after the camera appeared", t.elapsed());
    assert!(events(&cap).contains(&"online".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_viewer_does_not_delay_others_and_resumes_at_a_keyframe() {
    let cam = Camera::start(Auth::None);
    let gw = Gateway::start(&rtsp_stream(STREAM_A, &cam.url("h264"), "\"mse\"", "")).await;
    gw.wait_online(STREAM_A, Duration::from_secs(20)).await;

    // The stalled viewer: connects, reads the first messages, then stops reading. A small
    // receive buffer makes the server's sends block quickly, as with a phone on a bad link.
    let mut stalled = ws_connect_small_buffer(&gw.ws_url(STREAM_A, "&events=1"), gw.video).await;
    let mut scap = Capture::default();
    collect(&mut stalled, &mut scap, 5, Duration::from_secs(10)).await;
    let rss_before = gw.rss_kb();

    let mut good = ws_connect(&gw.ws_url(STREAM_A, "")).await;
    let mut gcap = Capture::default();
    let t = Instant::now();
    // 750 fragments of a 25 fps camera: the 30 s the other viewer stays stalled. A healthy
    // viewer held back by the stalled one would fall short.
    collect(&mut good, &mut gcap, 750, Duration::from_secs(40)).await;
    let took = t.elapsed();
    assert!(
        gcap.fragments() >= 750,
        "healthy viewer got {} in {took:?}",
        gcap.fragments()
    );
    let rss_during = gw.rss_kb();
    eprintln!("healthy viewer: 750 fragments in {took:?}; RSS {rss_before} kB -> {rss_during} kB");
    assert!(
        rss_during < rss_before + 64 * 1024,
        "memory grew by {} kB while a viewer was stalled",
        rss_during - rss_before
    );

    // Resume: drain what the kernel buffered, then the server says how much it skipped and
    // continues at a keyframe.
    let mut dropped = None;
    let mut after_drop = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while after_drop.len() < 3 {
        let msg = match tokio::time::timeout_at(deadline, stalled.next()).await {
            Ok(Some(Ok(m))) => m,
            other => panic!("stalled viewer ended: {other:?} dropped={dropped:?}"),
        };
        match msg {
            Message::Text(t) => {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap_or_default();
                if v["type"] == "dropped" {
                    dropped = v["frames"].as_u64();
                }
            }
            Message::Binary(b) if dropped.is_some() && is_box(&b, b"moof") => {
                after_drop.push(b.to_vec())
            }
            _ => {}
        }
    }
    assert!(dropped.unwrap_or(0) > 0, "a dropped event with a count");
    let first = fragment_info(&after_drop[0]).expect("fragment");
    assert!(first.2, "resumes at a keyframe");
    let st = gw.status().await;
    assert!(st["streams"][STREAM_A]["frames_dropped_for_slow_viewers"].as_u64() > Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_camera_ends_the_rtsp_session_and_its_viewers() {
    let cam = Camera::start(Auth::None);
    let gw = Gateway::start(&rtsp_stream(STREAM_A, &cam.url("h264"), "\"mse\"", "")).await;
    gw.wait_online(STREAM_A, Duration::from_secs(20)).await;
    assert_eq!(
        connections_to(cam.port),
        1,
        "one RTSP connection from the gateway"
    );
    let mut ws = ws_connect(&gw.ws_url(STREAM_A, "")).await;
    let mut cap = Capture::default();
    collect(&mut ws, &mut cap, 5, Duration::from_secs(10)).await;

    let body = format!("{{\"guid\":\"{STREAM_A}\"}}");
    let r = http(gw.api, "POST", "/disable_camera", &[], body.as_bytes())
        .await
        .expect("disable");
    assert_eq!(r.status, 200);
    assert!(r.json()["streams"].get(STREAM_A).is_none());
    let deadline = Instant::now() + Duration::from_secs(10);
    while connections_to(cam.port) > 0 {
        assert!(
            Instant::now() < deadline,
            "the camera still has a connection from the gateway"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    collect(&mut ws, &mut cap, usize::MAX, Duration::from_secs(5)).await;
    assert!(cap.close.is_some(), "the viewer is told the stream is gone");
    // No reconnect attempt afterwards: the task really stopped.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(connections_to(cam.port), 0);

    // Enabled again through the API: it comes back.
    let body = format!(
        "{{\"guid\":\"{STREAM_A}\",\"url\":\"{}\",\"output_types\":[\"mse\"]}}",
        cam.url("h264")
    );
    let r = http(gw.api, "POST", "/enable_camera", &[], body.as_bytes())
        .await
        .expect("enable");
    assert_eq!(r.status, 200);
    gw.wait_online(STREAM_A, Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_down_gracefully_and_closes_viewers() {
    let cam = Camera::start(Auth::None);
    let mut gw = Gateway::start(&rtsp_stream(STREAM_A, &cam.url("h264"), "\"mse\"", "")).await;
    gw.wait_online(STREAM_A, Duration::from_secs(20)).await;
    let mut ws = ws_connect(&gw.ws_url(STREAM_A, "")).await;
    let mut cap = Capture::default();
    collect(&mut ws, &mut cap, 5, Duration::from_secs(10)).await;
    let status = tokio::task::spawn_blocking(move || {
        let s = gw.terminate();
        (s, gw)
    })
    .await
    .expect("join");
    let (exit, gw) = status;
    assert!(
        exit.is_some_and(|s| s.success()),
        "exit {exit:?}; log:\n{}",
        gw.log()
    );
    collect(&mut ws, &mut cap, usize::MAX, Duration::from_secs(5)).await;
    assert_eq!(
        cap.close.as_ref().map(|c| c.0),
        Some(1001),
        "{:?}",
        cap.close
    );
    assert_eq!(connections_to(cam.port), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_demand_streams_connect_for_viewers_and_idle_out() {
    let cam = Camera::start(Auth::None);
    let conf = format!(
        "[on_demand]\nenabled = false\nidle_ms = 1500\n\n{}",
        rtsp_stream(STREAM_A, &cam.url("h264"), "\"mse\"", "on_demand = true")
    );
    let gw = Gateway::start(&conf).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        connections_to(cam.port),
        0,
        "no camera session without viewers"
    );
    assert_eq!(gw.status().await["streams"][STREAM_A]["streaming"], false);

    for round in 0..2 {
        let mut ws = ws_connect(&gw.ws_url(STREAM_A, "")).await;
        let mut cap = Capture::default();
        let t = Instant::now();
        collect(&mut ws, &mut cap, 10, Duration::from_secs(20)).await;
        assert!(
            cap.fragments() >= 10,
            "round {round}: no video; log:\n{}",
            gw.log()
        );
        eprintln!(
            "round {round}: first fragment {:?} after connecting (cold start)",
            cap.first_fragment_after
        );
        let first = fragment_info(&cap.media[1]).expect("fragment");
        assert!(
            first.2 && first.1 == 0,
            "starts at a keyframe at time 0: {first:?}"
        );
        assert_eq!(connections_to(cam.port), 1);
        assert_eq!(gw.status().await["streams"][STREAM_A]["streaming"], true);
        drop(ws);
        let deadline = Instant::now() + Duration::from_secs(10);
        while connections_to(cam.port) > 0 {
            assert!(
                Instant::now() < deadline,
                "round {round}: the camera session outlived idle_ms"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!(
            "round {round}: camera released {:?} after the viewer connected",
            t.elapsed()
        );
        assert_eq!(gw.status().await["streams"][STREAM_A]["streaming"], false);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_on_demand_streams_are_health_probed_without_streaming() {
    let mut cam = Camera::start(Auth::Basic("probe", "probe-pass-1"));
    let conf = format!(
        "[on_demand]\nenabled = true\nidle_ms = 1000\nhealth_check = true\nhealth_interval_ms = 500\nhealth_timeout_ms = 2000\n\n{}",
        rtsp_stream(STREAM_A, &cam.url("h264"), "\"mse\"", "")
    );
    let gw = Gateway::start(&conf).await;
    // Reachable: online without any viewer, and no session is kept open.
    gw.wait_online(STREAM_A, Duration::from_secs(15)).await;
    let st = gw.status().await;
    let s = &st["streams"][STREAM_A];
    assert_eq!(s["streaming"], false, "{s}");
    assert_ne!(s["last_health_check"], "0001-01-01T00:00:00Z", "{s}");
    assert!(!st.to_string().contains("probe-pass-1"));
    // Gone: the next probes say so, with the reason.
    cam.kill();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let s = gw.status().await["streams"][STREAM_A].clone();
        if s["online"] == false {
            assert!(
                s["last_health_error"]
                    .as_str()
                    .is_some_and(|e| !e.is_empty()),
                "{s}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still online after the camera died: {s}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
