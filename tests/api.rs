//! The original's API and websocket contract, and bad input that must never crash anything.
//! These use the built-in demo file as the source (no camera needed).

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_status_enable_disable_match_the_original() {
    let gw = Gateway::start(&demo_stream("\"mse\", \"hls\"")).await;
    gw.wait_online(DEMO, Duration::from_secs(10)).await;

    let r = http(gw.api, "GET", "/list", &[], b"").await.expect("list");
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), serde_json::json!({"data": [{"stream_id": DEMO}]}));

    let st = gw.status().await;
    for key in ["api", "video", "streams", "hls", "on_demand"] {
        assert!(st.get(key).is_some(), "status has {key}: {st}");
    }
    assert_eq!(st["hls"]["hls_window_size"], 5);
    let s = &st["streams"][DEMO];
    assert_eq!(s["status"], true);
    assert_eq!(s["supported_output_types"], serde_json::json!([3, 2, 4]));
    assert_eq!(s["codecs"][0]["rfc6381"], "avc1.4D401E");
    assert_eq!(s["codecs"][1]["rfc6381"], "mp4a.40.2");
    assert_eq!(s["url"], "assets/demo.mp4");

    // Errors: the original's codes and texts.
    for (body, want) in [
        ("", "Bad JSON binding"),
        ("{not json", "Bad JSON binding"),
        (r#"{"guid":"not-a-uuid"}"#, "Bad JSON binding"),
        (
            r#"{"guid":"566bfe72-1f85-4e7d-9c0a-424e6c3b29f3","url":"rtsp://x/y","output_types":["dash"]}"#,
            "stream type does not exists. Type: 'dash'",
        ),
        (
            r#"{"guid":"566bfe72-1f85-4e7d-9c0a-424e6c3b29f3","url":"rtsp://x/y","output_types":["rtsp"]}"#,
            "stream type is not supported. Type: 'rtsp'",
        ),
    ] {
        let r = http(gw.api, "POST", "/enable_camera", &[], body.as_bytes())
            .await
            .expect("post");
        assert_eq!(r.status, 400, "{body}");
        assert_eq!(r.json(), serde_json::json!({ "Error": want }), "{body}");
    }

    // Enable a camera that does not exist: accepted, listed, offline, password masked.
    let body = format!(
        r#"{{"guid":"{STREAM_B}","url":"rtsp://admin:topsecret@127.0.0.1:{}/x","output_types":["mse"]}}"#,
        free_port()
    );
    let r = http(
        gw.api,
        "POST",
        "/enable_camera",
        &[("Content-Type", "text/plain")],
        body.as_bytes(),
    )
    .await
    .expect("enable");
    assert_eq!(r.status, 200);
    let st = r.json();
    assert_eq!(
        st["streams"][STREAM_B]["url"]
            .as_str()
            .map(|u| u.contains("***@")),
        Some(true)
    );
    assert!(!r.text().contains("topsecret"));
    // Enabling again is a no-op, still 200.
    let r = http(gw.api, "POST", "/enable_camera", &[], body.as_bytes())
        .await
        .expect("again");
    assert_eq!(r.status, 200);
    let list = http(gw.api, "GET", "/list", &[], b"")
        .await
        .expect("list")
        .json();
    assert_eq!(list["data"].as_array().map(Vec::len), Some(2));

    let r = http(
        gw.api,
        "POST",
        "/disable_camera",
        &[],
        format!(r#"{{"guid":"{STREAM_B}"}}"#).as_bytes(),
    )
    .await
    .expect("disable");
    assert_eq!(r.status, 200);
    assert!(r.json()["streams"].get(STREAM_B).is_none());
    // Unknown guid: no-op, 200.
    let r = http(
        gw.api,
        "POST",
        "/disable_camera",
        &[],
        br#"{"guid":"00000000-0000-0000-0000-000000000001"}"#,
    )
    .await
    .expect("disable unknown");
    assert_eq!(r.status, 200);
    assert!(!gw.log().contains("topsecret"), "password in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_cors_behave_like_gin() {
    let extra = format!(
        "{}\n[cors]\nenabled = true\nallow_origins = [\"http://allowed.example\"]\nallow_methods = [\"GET\", \"POST\"]\nexpose_headers = [\"Content-Length\"]\n",
        demo_stream("\"mse\"")
    );
    let gw = Gateway::start(&extra).await;
    let r = http(gw.api, "GET", "/nope", &[], b"").await.expect("404");
    assert_eq!((r.status, r.text().as_str()), (404, "404 page not found"));
    let r = http(gw.api, "DELETE", "/list", &[], b"")
        .await
        .expect("wrong method");
    assert_eq!(r.status, 404);

    let r = http(
        gw.api,
        "OPTIONS",
        "/status",
        &[
            ("Origin", "http://allowed.example"),
            ("Access-Control-Request-Method", "GET"),
        ],
        b"",
    )
    .await
    .expect("preflight");
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("http://allowed.example")
    );
    assert_eq!(r.header("access-control-allow-methods"), Some("GET,POST"));

    let r = http(
        gw.api,
        "GET",
        "/status",
        &[("Origin", "http://allowed.example")],
        b"",
    )
    .await
    .expect("get");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-expose-headers"),
        Some("Content-Length")
    );
    let r = http(
        gw.api,
        "GET",
        "/status",
        &[("Origin", "http://evil.example")],
        b"",
    )
    .await
    .expect("evil");
    assert_eq!(r.status, 403);
    // Same on the video server.
    let r = http(
        gw.video,
        "GET",
        "/streams",
        &[("Origin", "http://evil.example")],
        b"",
    )
    .await
    .expect("evil");
    assert_eq!(r.status, 403);
    let r = http(gw.video, "GET", "/streams", &[], b"")
        .await
        .expect("no origin");
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_errors_close_with_a_reason_and_garbage_is_harmless() {
    let gw = Gateway::start(&format!(
        "{}[[local_files]]\nguid = \"{STREAM_B}\"\nfile = \"assets/demo.mp4\"\noutput_types = [\"hls\"]\nloop = true\n",
        demo_stream("\"mse\"")
    ))
    .await;
    gw.wait_online(DEMO, Duration::from_secs(10)).await;

    let cases = [
        (
            format!("ws://{}/ws/live?stream_id=abc", gw.video),
            "Not valid UUID: 'abc'",
        ),
        (
            gw.ws_url("00000000-0000-0000-0000-0000000000ff", ""),
            "Stream not found",
        ),
        (
            gw.ws_url(STREAM_B, ""),
            "Stream does not have this output type",
        ),
    ];
    for (url, reason) in cases {
        let mut ws = ws_connect(&url).await;
        let mut cap = Capture::default();
        collect(&mut ws, &mut cap, 1, Duration::from_secs(5)).await;
        assert_eq!(cap.close, Some((1011, reason.to_owned())), "{url}");
    }

    // The id in the path works when the query is absent.
    let mut ws = ws_connect(&format!("ws://{}/ws/{DEMO}", gw.video)).await;
    let mut cap = Capture::default();
    collect(&mut ws, &mut cap, 3, Duration::from_secs(10)).await;
    assert_eq!(cap.codecs, vec!["avc1.4D401E,mp4a.40.2".to_owned()]);

    // Garbage from the client is ignored; ping gets pong; the stream keeps flowing.
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    ws.send(Message::binary(vec![0xff; 1000]))
        .await
        .expect("send garbage");
    ws.send(Message::text("{\"type\":\"seek\",\"t\":\"never\"}"))
        .await
        .expect("send json");
    ws_text(&mut ws, "ping").await;
    let before = cap.fragments();
    collect(&mut ws, &mut cap, before + 30, Duration::from_secs(10)).await;
    assert!(
        cap.texts.contains(&"pong".to_owned()),
        "texts {:?}",
        cap.texts
    );
    assert!(cap.fragments() >= before + 30);

    // The demo decodes, audio and video, from a viewer's capture.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("demo.mp4");
    cap.write(&path);
    let p = probe(&path);
    assert!(p.decode_errors.is_empty(), "{}", p.decode_errors);
    assert_eq!(p.audio_codec.as_deref(), Some("aac"));

    // Our websocket answers the client's pings, and a message over its cap (64 KiB) ends
    // the session with 1009 and the reason.
    ws.send(Message::Ping(b"hi".to_vec().into()))
        .await
        .expect("send ping");
    ws.send(Message::binary(vec![0u8; 100_000]))
        .await
        .expect("send oversized");
    let mut pong = false;
    let mut close = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while close.is_none() {
        use futures::StreamExt;
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Pong(p)))) => pong |= &p[..] == b"hi",
            Ok(Some(Ok(Message::Close(c)))) => {
                close = Some(c.map(|c| (u16::from(c.code), c.reason.to_string())))
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("no close: {other:?}"),
        }
    }
    assert!(pong, "the ping was answered");
    assert_eq!(
        close,
        Some(Some((1009, "message over 65536 bytes".to_owned())))
    );

    // A plain GET of a websocket route: 426 with a JSON reason; a broken handshake: 400.
    let r = http(
        gw.video,
        "GET",
        &format!("/ws/live?stream_id={DEMO}"),
        &[],
        b"",
    )
    .await
    .expect("plain GET");
    assert_eq!(r.status, 426, "{}", r.text());
    assert!(r.json()["error"]
        .as_str()
        .is_some_and(|e| e.contains("websocket")));
    let r = http(
        gw.video,
        "GET",
        "/ws/archive",
        &[
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Version", "8"),
        ],
        b"",
    )
    .await
    .expect("bad version");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.json()["Error"]
        .as_str()
        .is_some_and(|e| e.contains("Version")));

    // Still alive after all that.
    let r = http(gw.api, "GET", "/status", &[], b"")
        .await
        .expect("alive");
    assert_eq!(r.status, 200);
}

fn check(conf_text: &str, name: &str) -> std::process::Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(name);
    std::fs::write(&path, conf_text).expect("write");
    Command::new(env!("CARGO_BIN_EXE_video-server"))
        .args(["check", "-conf"])
        .arg(&path)
        .output()
        .expect("run check")
}

#[test]
fn check_subcommand_validates_and_masks() {
    let orig = std::fs::read_to_string(repo().join("tests/data/original-v0.6.toml")).expect("read");
    let out = check(&orig, "conf.v0.6.toml");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("configuration OK: 2 stream(s)"));
    assert!(!stdout.contains("minio_secret_password"), "{stdout}");

    let bad = "[api]\nenabled = true\n\n[hls]\nms_per_segment = \"ten\"\n";
    let out = check(bad, "bad.toml");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:5: key `hls.ms_per_segment`"),
        "{err}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_video-server"))
        .args(["--conf", "/nonexistent/conf.toml"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/conf.toml"));
}

#[test]
fn the_shipped_conf_is_valid() {
    let out = Command::new(env!("CARGO_BIN_EXE_video-server"))
        .args(["check", "--conf"])
        .arg(repo().join("conf.toml"))
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A socket with nothing to send gets a websocket ping after 10 s of silence (proxies close
/// idle connections); one that gets frames gets none, although its stream's writers, not its
/// session, write them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_viewer_is_pinged_and_a_watching_one_is_not() {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let gw = Gateway::start(&format!(
        "{}[[rtsp_streams]]\nguid = \"{STREAM_B}\"\nurl = \"rtsp://127.0.0.1:{}/nothing\"\noutput_types = [\"mse\"]\n",
        demo_stream("\"mse\""),
        free_port()
    ))
    .await;
    gw.wait_online(DEMO, Duration::from_secs(10)).await;
    let mut idle = ws_connect(&gw.ws_url(STREAM_B, "")).await;
    let mut watching = ws_connect(&gw.ws_url(DEMO, "")).await;
    let start = tokio::time::Instant::now();
    let deadline = start + Duration::from_secs(13);
    let (mut idle_pings, mut watched_pings, mut fragments) = (Vec::new(), 0, 0);
    loop {
        tokio::select! {
            m = idle.next() => match m {
                Some(Ok(Message::Ping(p))) => idle_pings.push((start.elapsed(), p.to_vec())),
                Some(Ok(_)) => {}
                other => panic!("the idle viewer's socket ended: {other:?}"),
            },
            m = watching.next() => match m {
                Some(Ok(Message::Ping(_))) => watched_pings += 1,
                Some(Ok(Message::Binary(_))) => fragments += 1,
                Some(Ok(_)) => {}
                other => panic!("the watching viewer's socket ended: {other:?}"),
            },
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    assert_eq!(
        idle_pings.len(),
        1,
        "pings of the idle viewer: {idle_pings:?}"
    );
    let (at, payload) = &idle_pings[0];
    assert!(
        *at >= Duration::from_secs(9) && *at <= Duration::from_secs(12),
        "pinged after {at:?}"
    );
    assert_eq!(payload, b"vs");
    assert_eq!(watched_pings, 0, "a viewer getting frames was pinged");
    assert!(fragments > 10 * 25, "{fragments} messages in 13 s");
}
