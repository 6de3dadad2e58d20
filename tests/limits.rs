//! `[limits]` against the real binary: a connection over `max_connections` gets a 503 with a
//! JSON reason; viewers over `max_viewers` / `max_viewers_per_stream` get a 503 before the
//! upgrade, and their places come back when they leave; an oversized request head gets a 431 and
//! an oversized body a 413; a client that connects and sends nothing, or dribbles its headers,
//! is disconnected.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads what the server sends until it closes (or `within` passes); `None` on timeout.
async fn read_until_closed(tcp: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(out),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// The HTTP status of a websocket upgrade (101 when accepted) and the socket, if accepted.
async fn ws_try(url: &str) -> (u16, Option<Ws>, String) {
    match tokio_tungstenite::connect_async(url).await {
        Ok((ws, _)) => (101, Some(ws), String::new()),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            let body = r
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            (r.status().as_u16(), None, body)
        }
        Err(e) => panic!("websocket: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_over_the_cap_gets_503_and_a_place_frees_when_one_closes() {
    let gw = Gateway::start("[limits]\nmax_connections = 3\nheader_timeout_ms = 8000\n").await;
    // The open connections, the metrics request's own included: the start-up probes' may
    // still be open for a moment, and a place they hold would go to the fourth one below.
    let open = |want: u64| {
        let api = gw.api;
        async move {
            wait_for(Duration::from_secs(20), &format!("{want} open"), || async {
                let m = get(api, "/metrics").await.text();
                m.lines()
                    .any(|l| l == format!("video_server_connections_open {want}"))
                    .then_some(())
            })
            .await
        }
    };
    open(1).await;
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(TcpStream::connect(gw.video).await.expect("connect"));
    }
    open(4).await;
    let mut fourth = TcpStream::connect(gw.video).await.expect("connect");
    let answer = read_until_closed(&mut fourth, Duration::from_secs(5))
        .await
        .expect("answered and closed");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.contains("too many connections"), "{text}");
    // The API server has its own count.
    assert_eq!(get(gw.api, "/health").await.status, 200);
    idle.clear();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(r) = http(gw.video, "GET", "/health", &[], b"").await {
            if r.status == 200 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "no place came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = get(gw.api, "/metrics").await.text();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("video_server_connections_refused_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_over_the_caps_get_503_with_the_reason() {
    let gw = Gateway::start(&format!(
        "[limits]\nmax_viewers = 3\nmax_viewers_per_stream = 2\n\n{}{}",
        demo_stream("\"mse\"").replace(DEMO, STREAM_A),
        demo_stream("\"mse\"").replace(DEMO, STREAM_B),
    ))
    .await;
    gw.wait_online(STREAM_A, Duration::from_secs(20)).await;
    let (s1, a1, _) = ws_try(&gw.ws_url(STREAM_A, "")).await;
    let (s2, _a2, _) = ws_try(&gw.ws_url(STREAM_A, "")).await;
    assert_eq!((s1, s2), (101, 101));
    let (s3, _, body) = ws_try(&gw.ws_url(STREAM_A, "")).await;
    assert_eq!(s3, 503, "{body}");
    assert!(body.contains("too many viewers of this stream"), "{body}");
    let (s4, _b1, _) = ws_try(&gw.ws_url(STREAM_B, "")).await;
    assert_eq!(s4, 101);
    let (s5, _, body) = ws_try(&gw.ws_url(STREAM_B, "")).await;
    assert_eq!(s5, 503, "{body}");
    assert!(body.contains("too many viewers on this server"), "{body}");
    // A viewer that leaves gives its place back.
    drop(a1);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (s, ws, _) = ws_try(&gw.ws_url(STREAM_A, "")).await;
        if s == 101 {
            drop(ws);
            break;
        }
        assert!(Instant::now() < deadline, "the place was not given back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_and_bodies_are_refused() {
    let gw = Gateway::start("[limits]\nmax_header_bytes = 4096\nmax_body_bytes = 4096\n").await;
    let big = "x".repeat(32 * 1024);
    let r = http(gw.video, "GET", "/health", &[("X-Big", &big)], b"")
        .await
        .expect("answered");
    assert_eq!(r.status, 431, "{}", r.text());
    let body = format!(
        "{{\"guid\":\"{STREAM_A}\",\"url\":\"rtsp://x/{}\",\"output_types\":[\"mse\"]}}",
        "y".repeat(64 * 1024)
    );
    let r = http(
        gw.api,
        "POST",
        "/enable_camera",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
    .await
    .expect("answered");
    assert_eq!(r.status, 413, "{}", r.text());
    // Within the limits, the same routes answer.
    assert_eq!(get(gw.video, "/health").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_disconnected() {
    let gw = Gateway::start("[limits]\nheader_timeout_ms = 500\n").await;
    // Connects and sends nothing.
    let mut silent = TcpStream::connect(gw.video).await.expect("connect");
    let t = Instant::now();
    read_until_closed(&mut silent, Duration::from_secs(10))
        .await
        .expect("closed by the server");
    eprintln!("silent client closed after {:?}", t.elapsed());
    // Dribbles its headers, a byte every 100 ms.
    let mut slow = TcpStream::connect(gw.video).await.expect("connect");
    slow.write_all(b"GET /health HTTP/1.1\r\n")
        .await
        .expect("write");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut closed = false;
    while Instant::now() < deadline {
        if slow.write_all(b"X").await.is_err() {
            closed = true;
            break;
        }
        let mut b = [0u8; 512];
        match tokio::time::timeout(Duration::from_millis(100), slow.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            _ => {}
        }
    }
    assert!(closed, "a client dribbling its headers was kept for 10 s");
    // Everyone else is still served.
    assert_eq!(get(gw.video, "/health").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listeners_hold_a_thousand_players_reconnecting_at_once() {
    // With the usual backlog of 128 the kernel drops the SYNs of a herd of reconnecting
    // players (a restart behind a dashboard wall) and each one retries a second later. `ss`
    // shows a listening socket's backlog as its Send-Q.
    let gw = Gateway::start("").await;
    let somaxconn: u64 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .expect("somaxconn")
        .trim()
        .parse()
        .expect("number");
    for port in [gw.video.port(), gw.api.port()] {
        let out = std::process::Command::new("ss")
            .args(["-ltnH", &format!("sport = :{port}")])
            .output()
            .expect("ss (iproute2)");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let backlog: u64 = text
            .split_whitespace()
            .nth(2)
            .and_then(|q| q.parse().ok())
            .unwrap_or_else(|| panic!("no listener on {port}: {text}"));
        assert_eq!(backlog, somaxconn.min(4096), "port {port}: {text}");
    }
}
