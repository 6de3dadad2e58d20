//! Operations: `/metrics` parsed by an independent Prometheus text parser and moving with a
//! real camera's death and return, `/health`, `/streams/{id}`, and no secret in any of them.

mod common;

use std::time::{Duration, Instant};

use common::{collect, get, rtsp_stream, ws_connect, Auth, Camera, Capture, Gateway, STREAM_A};

/// One parsed sample: name, sorted labels, value.
type Sample = (String, Vec<(String, String)>, f64);

/// Scrapes `/metrics` and parses it; returns the text and every sample.
async fn scrape(gw: &Gateway) -> (String, Vec<Sample>) {
    let r = get(gw.api, "/metrics").await;
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/plain")));
    let text = r.text();
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text format");
    let samples = scrape
        .samples
        .iter()
        .map(|s| {
            let v = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            };
            let mut labels: Vec<(String, String)> = s
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            labels.sort();
            (s.metric.clone(), labels, v)
        })
        .collect();
    (text, samples)
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, _, v)| *v)
}

/// Scrapes until `cond` holds for the stream's samples (bounded).
async fn scrape_until(
    gw: &Gateway,
    within: Duration,
    what: &str,
    cond: impl Fn(&[Sample]) -> bool,
) -> Vec<Sample> {
    let deadline = Instant::now() + within;
    loop {
        let (text, samples) = scrape(gw).await;
        if cond(&samples) {
            return samples;
        }
        assert!(
            Instant::now() < deadline,
            "{what} not seen within {within:?}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_a_camera_that_dies_and_returns_and_leak_no_secret() {
    let mut cam = Camera::start(Auth::Basic("viewer", "s3cret-pa55"));
    let files = tempfile::tempdir().expect("tempdir");
    let gw = Gateway::start(&format!(
        "[archive]\nrecording = true\ndirectory = \"{}\"\nms_per_file = 2000\n{}",
        files.path().display(),
        rtsp_stream(
            STREAM_A,
            &cam.url("h264aac"),
            "\"mse\", \"hls\"",
            "archive = { recording = true, type = \"filesystem\", ms_per_file = 2000 }",
        )
    ))
    .await;
    gw.wait_online(STREAM_A, Duration::from_secs(20)).await;
    let mut ws = ws_connect(&gw.ws_url(STREAM_A, "")).await;
    let mut cap = Capture::default();
    collect(&mut ws, &mut cap, 10, Duration::from_secs(10)).await;

    // Two HLS clients (different User-Agents) polling the playlist count as two viewers.
    for agent in ["player-one", "player-two"] {
        let r = common::http(
            gw.video,
            "GET",
            &format!("/hls/{STREAM_A}.m3u8"),
            &[("User-Agent", agent)],
            b"",
        )
        .await
        .expect("playlist");
        assert_eq!(r.status, 200);
    }
    let stream = [("stream", STREAM_A)];
    let s = scrape_until(&gw, Duration::from_secs(20), "a closed archive file", |s| {
        value(s, "video_server_archive_files_written_total", &stream).unwrap_or(0.0) >= 1.0
    })
    .await;
    assert_eq!(value(&s, "video_server_stream_up", &stream), Some(1.0));
    assert!(value(&s, "video_server_stream_frames_total", &stream).unwrap_or(0.0) > 50.0);
    assert_eq!(
        value(
            &s,
            "video_server_viewers",
            &[("stream", STREAM_A), ("output", "mse")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &s,
            "video_server_viewers",
            &[("stream", STREAM_A), ("output", "hls")]
        ),
        Some(2.0)
    );
    let gop = value(&s, "video_server_stream_keyframe_interval_seconds", &stream).unwrap_or(0.0);
    assert!((gop - 2.0).abs() < 0.05, "keyframe interval {gop} s");
    assert_eq!(
        value(&s, "video_server_stream_gop_frames", &stream),
        Some(50.0)
    );
    assert!(value(&s, "process_resident_memory_bytes", &[]).unwrap_or(0.0) > 1e6);
    // A second scrape measures rates: about 25 video + 47 audio frames/s, ~2 Mbit/s.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, s) = scrape(&gw).await;
    let fps = value(&s, "video_server_stream_frames_per_second", &stream).unwrap_or(0.0);
    let bps = value(&s, "video_server_stream_bitrate_bps", &stream).unwrap_or(0.0);
    assert!((40.0..120.0).contains(&fps), "{fps} frames/s");
    assert!((5e5..8e6).contains(&bps), "{bps} bit/s");

    // The camera dies: up goes to 0; it returns: up is 1 again and a reconnect is counted.
    cam.kill();
    scrape_until(&gw, Duration::from_secs(30), "stream_up 0", |s| {
        value(s, "video_server_stream_up", &stream) == Some(0.0)
    })
    .await;
    cam.restart();
    let s = scrape_until(
        &gw,
        Duration::from_secs(30),
        "stream_up 1 after a reconnect",
        |s| {
            value(s, "video_server_stream_up", &stream) == Some(1.0)
                && value(s, "video_server_stream_reconnects_total", &stream).unwrap_or(0.0) >= 1.0
        },
    )
    .await;
    assert!(value(&s, "video_server_stream_discontinuities_total", &stream).unwrap_or(0.0) >= 1.0);

    // No secret anywhere an operator looks.
    let (text, _) = scrape(&gw).await;
    let status = get(gw.api, "/status").await.text();
    let details = get(gw.api, &format!("/streams/{STREAM_A}")).await.text();
    for (what, body) in [
        ("metrics", &text),
        ("status", &status),
        ("details", &details),
        ("log", &gw.log()),
    ] {
        assert!(
            !body.contains("s3cret-pa55"),
            "the camera password is in {what}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_stream_details_answer_for_load_balancers_and_operators() {
    let cam = Camera::start(Auth::None);
    let gw = Gateway::start(&rtsp_stream(STREAM_A, &cam.url("h264aac"), "\"mse\"", "")).await;
    gw.wait_online(STREAM_A, Duration::from_secs(20)).await;
    for addr in [gw.api, gw.video] {
        let h = get(addr, "/health").await;
        assert_eq!(h.status, 200);
        assert_eq!(h.json()["status"], "ok");
    }
    // Rates come from the GOP cache, so they are there once it holds a few seconds.
    let deadline = Instant::now() + Duration::from_secs(15);
    let d = loop {
        let d = get(gw.api, &format!("/streams/{STREAM_A}")).await.json();
        // GStreamer sends its first RTCP sender report within a few seconds.
        if d["fps_measured"].as_f64().is_some()
            && d["uptime_s"].as_i64().unwrap_or(0) >= 3
            && d["clock"]["camera_offset_ms"].is_number()
        {
            break d;
        }
        assert!(Instant::now() < deadline, "{d}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(d["stream_id"], STREAM_A);
    let fps = d["fps_measured"].as_f64().expect("fps");
    assert!((23.0..27.0).contains(&fps), "{d}");
    let bps = d["bitrate_bps"].as_f64().expect("bitrate");
    assert!((5e5..8e6).contains(&bps), "{d}");
    let gop = d["keyframe_interval_s"].as_f64().unwrap_or(0.0);
    assert!((gop - 2.0).abs() < 0.05, "{d}");
    assert_eq!(d["codecs"][0]["width"], 1280);
    // The camera runs on this machine's clock: its sender reports agree with ours.
    let offset = d["clock"]["camera_offset_ms"].as_i64().unwrap_or(i64::MAX);
    assert!(offset.abs() < 1_000, "{d}");
    // A camera set up well has nothing to be told.
    assert_eq!(d["diagnostics"], serde_json::json!([]), "{d}");
    let bad = get(gw.api, "/streams/not-a-uuid").await;
    assert_eq!(bad.status, 400);
    assert!(bad.json()["Error"].is_string());
    let missing = get(gw.api, "/streams/566bfe72-1f85-4e7d-9c0a-424e6c3b29f3").await;
    assert_eq!(missing.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn camera_diagnostics_name_a_smart_codec_and_h265_in_the_api_metrics_and_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clip = common::smart_codec_clip(dir.path());
    let cam = Camera::start(Auth::None);
    let gw = Gateway::start(&format!(
        "[[local_files]]\nguid = \"{STREAM_A}\"\nfile = \"{}\"\noutput_types = [\"mse\"]\nloop = true\n\n{}",
        clip.display(),
        rtsp_stream(common::STREAM_B, &cam.url("h265"), "\"mse\"", "")
    ))
    .await;
    gw.wait_online(common::STREAM_B, Duration::from_secs(20))
        .await;
    // The 5.5 s interval ends at the keyframe at 7.5 s.
    let deadline = Instant::now() + Duration::from_secs(30);
    let d = loop {
        let d = get(gw.api, &format!("/streams/{STREAM_A}")).await.json();
        if d["diagnostics"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["code"] == "irregular_keyframes"))
        {
            break d;
        }
        assert!(Instant::now() < deadline, "no finding: {d}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let found = &d["diagnostics"][0];
    assert_eq!(found["level"], "warning", "{d}");
    let message = found["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("smart") && message.contains("from 1.0 s to 5.5 s"),
        "{message}"
    );
    assert_eq!(d["diagnostics"].as_array().map(Vec::len), Some(1), "{d}");
    // The dashboard's list carries it too, and the H.265 camera gets its note.
    let list = get(gw.video, "/streams").await.json();
    let entry = |id: &str| {
        list["streams"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["stream_id"] == id).cloned())
            .unwrap_or_default()
    };
    assert_eq!(
        entry(STREAM_A)["diagnostics"][0]["code"],
        "irregular_keyframes"
    );
    let h265 = entry(common::STREAM_B);
    assert_eq!(h265["diagnostics"][0]["code"], "h265_browsers", "{h265}");
    assert_eq!(h265["diagnostics"][0]["level"], "info");
    // /metrics: 1 for the finding that holds, 0 for the others.
    let (_, samples) = scrape(&gw).await;
    let metric = |id: &str, code: &str| {
        value(
            &samples,
            "video_server_stream_diagnostic",
            &[("stream", id), ("code", code)],
        )
    };
    assert_eq!(metric(STREAM_A, "irregular_keyframes"), Some(1.0));
    assert_eq!(metric(STREAM_A, "long_gop"), Some(0.0));
    assert_eq!(metric(common::STREAM_B, "h265_browsers"), Some(1.0));
    assert_eq!(metric(common::STREAM_B, "irregular_keyframes"), Some(0.0));
    // The log says it once for the session, naming the stream.
    let log = gw.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("codec mode") && l.contains(STREAM_A))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
}

#[test]
fn the_deployment_files_agree_with_each_other() {
    use std::process::Command;
    // Both container configurations are valid for this binary.
    for conf in ["deploy/conf.docker.toml", "deploy/conf.compose.toml"] {
        let out = Command::new(env!("CARGO_BIN_EXE_video-server"))
            .args(["check", "--conf"])
            .arg(common::repo().join(conf))
            .output()
            .expect("run check");
        assert!(
            out.status.success(),
            "{conf}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The compose file: the gateway built from this repo, its config mounted, MinIO with the
    // credentials that config uses.
    let text =
        std::fs::read_to_string(common::repo().join("docker-compose.yaml")).expect("compose");
    let compose: serde_yaml::Value =
        serde_yaml::from_str(&text).expect("docker-compose.yaml is YAML");
    let gateway = &compose["services"]["gateway"];
    assert_eq!(gateway["build"].as_str(), Some("."));
    let mounts: Vec<&str> = gateway["volumes"]
        .as_sequence()
        .expect("volumes")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    let conf_mount = mounts
        .iter()
        .find(|m| m.ends_with(":/etc/video-server/conf.toml:ro"))
        .expect("the config is mounted");
    let host_conf = conf_mount.split(':').next().expect("host path");
    let conf_text = std::fs::read_to_string(common::repo().join(host_conf)).expect("mounted conf");
    let minio = &compose["services"]["minio"]["environment"];
    for key in ["MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"] {
        let v = minio[key].as_str().expect(key);
        assert!(
            conf_text.contains(&format!("\"{v}\"")),
            "{key} differs from {host_conf}"
        );
    }
    assert!(conf_text.contains("host = \"minio\"") && conf_text.contains("port = 29199"));
    // docker-compose (Debian's) accepts it.
    let out = Command::new("docker-compose")
        .args(["-f", "docker-compose.yaml", "config", "-q"])
        .current_dir(common::repo())
        .output()
        .expect("docker-compose (scripts/test installs Debian's)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The Dockerfile copies what the default config needs, and runs unprivileged.
    let docker = std::fs::read_to_string(common::repo().join("Dockerfile")).expect("Dockerfile");
    assert!(docker.contains("COPY deploy/conf.docker.toml /etc/video-server/conf.toml"));
    assert!(docker.contains("USER video-server"));
}
