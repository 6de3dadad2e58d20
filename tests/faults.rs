//! Fault injection with the in-process fake camera: timestamp jumps both ways (re-stamped, no
//! frame lost), SSRC change,
//! parameter (SPS) change, a frozen camera and a dropped connection. Viewers must keep getting
//! decodable video whose time never goes backwards and has no long holes.

mod common;

use std::time::{Duration, Instant};

use common::fake_camera::FakeCamera;
use common::*;

fn clips() -> (std::path::PathBuf, std::path::PathBuf) {
    let media = media_dir();
    (media.join("h264aac.mp4"), media.join("small.mp4"))
}

async fn setup(cam: &FakeCamera) -> (Gateway, Ws, Capture) {
    let gw = Gateway::start(&rtsp_stream(STREAM_A, &cam.url(), "\"mse\"", "")).await;
    gw.wait_online(STREAM_A, Duration::from_secs(20)).await;
    let mut ws = ws_connect(&gw.ws_url(STREAM_A, "&events=1")).await;
    let mut cap = Capture::default();
    collect(&mut ws, &mut cap, 25, Duration::from_secs(15)).await;
    assert!(cap.fragments() >= 25, "log:\n{}", gw.log());
    (gw, ws, cap)
}

/// Collects `more` fragments (bounded), failing with the log if they do not come.
async fn more(gw: &Gateway, ws: &mut Ws, cap: &mut Capture, more: usize, within: Duration) {
    let want = cap.fragments() + more;
    collect(ws, cap, want, within).await;
    assert!(
        cap.fragments() >= want,
        "video stopped; events {:?}\nlog:\n{}",
        cap.texts,
        gw.log()
    );
}

/// Video decode times: strictly increasing, and never a hole longer than `max_gap_90k`.
fn check_timeline(cap: &Capture, max_gap_90k: u64) {
    let t: Vec<u64> = cap
        .media
        .iter()
        .filter_map(|m| fragment_info(m))
        .filter(|f| f.0 == 1)
        .map(|f| f.1)
        .collect();
    for w in t.windows(2) {
        assert!(w[1] > w[0], "time went from {} to {}", w[0], w[1]);
        assert!(
            w[1] - w[0] <= max_gap_90k,
            "a hole of {} ticks in the viewer's timeline",
            w[1] - w[0]
        );
    }
}

fn decodes(cap: &Capture, name: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    cap.write(&dir.path().join(name));
    let p = probe(&dir.path().join(name));
    assert!(p.decode_errors.is_empty(), "{}", p.decode_errors);
    assert!(p.video_frames > 0);
}

/// Every video frame the viewer got, in decode order, is exactly one frame (3600 ticks) after
/// the one before: nothing dropped, nothing stretched. (The cached GOP a viewer starts with is
/// sent 1 tick apart to catch up with live; the check starts after it.)
fn check_every_frame(cap: &Capture) {
    let samples = video_samples(cap);
    let live = samples
        .windows(2)
        .position(|w| w[1].0 - w[0].0 > 1)
        .unwrap_or(0);
    let samples = &samples[live..];
    assert!(samples.len() > 10);
    for w in samples.windows(2) {
        assert_eq!(
            w[1].0 - w[0].0,
            3600,
            "decode time {} then {}: a frame lost or a hole",
            w[0].0,
            w[1].0
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamp_jumps_of_an_hour_either_way_lose_no_frame() {
    let (a, b) = clips();
    let cam = FakeCamera::start(&[&a, &b]);
    let (gw, mut ws, mut cap) = setup(&cam).await;
    cam.jump_timestamps(-3600 * 90_000);
    more(&gw, &mut ws, &mut cap, 25, Duration::from_secs(10)).await;
    cam.jump_timestamps(2 * 3600 * 90_000);
    more(&gw, &mut ws, &mut cap, 25, Duration::from_secs(10)).await;
    check_every_frame(&cap);
    decodes(&cap, "jumps.mp4");
    let st = gw.status().await;
    let s = &st["streams"][STREAM_A];
    assert_eq!(s["timestamp_jumps"].as_u64(), Some(2), "{s}");
    assert_eq!(s["discontinuities"], 0, "re-stamped, no new epoch: {s}");
    assert_eq!(s["sessions"], 1, "handled without reconnecting");
    assert!(
        !cap.texts.iter().any(|t| t.contains("dropped")),
        "no frame dropped for the viewer: {:?}",
        cap.texts
    );
    let metrics = get(gw.api, "/metrics").await.text();
    assert!(
        metrics.lines().any(
            |l| l.starts_with("video_server_stream_timestamp_jumps_total{") && l.ends_with(" 2")
        ),
        "{metrics}"
    );
    // Logged once per session, not once per jump.
    assert_eq!(gw.log().matches("the camera's clock jumped").count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dvr_jumping_ten_hours_every_three_seconds_loses_no_frame() {
    let (a, b) = clips();
    let cam = FakeCamera::start(&[&a, &b]);
    let (gw, mut ws, mut cap) = setup(&cam).await;
    let ten_h = 10 * 3600 * 90_000i64;
    for i in 0..4 {
        cam.jump_timestamps(if i % 2 == 0 { ten_h } else { -ten_h });
        more(&gw, &mut ws, &mut cap, 75, Duration::from_secs(10)).await;
    }
    check_every_frame(&cap);
    decodes(&cap, "dvr.mp4");
    let st = gw.status().await;
    let s = &st["streams"][STREAM_A];
    assert_eq!(s["timestamp_jumps"].as_u64(), Some(4), "{s}");
    assert_eq!(s["discontinuities"], 0, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssrc_change_recovers() {
    let (a, b) = clips();
    let cam = FakeCamera::start(&[&a, &b]);
    let (gw, mut ws, mut cap) = setup(&cam).await;
    let t = Instant::now();
    cam.change_ssrc();
    more(&gw, &mut ws, &mut cap, 50, Duration::from_secs(15)).await;
    eprintln!("50 more fragments {:?} after the SSRC change", t.elapsed());
    check_timeline(&cap, 90_000);
    decodes(&cap, "ssrc.mp4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameter_change_sends_new_codecs_and_init() {
    let (a, b) = clips();
    let cam = FakeCamera::start(&[&a, &b]);
    let (gw, mut ws, mut cap) = setup(&cam).await;
    let media_before = cap.media.len();
    cam.switch_clip(1);
    let deadline = Instant::now() + Duration::from_secs(15);
    while cap.codecs.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "no second codec message; {:?}\nlog:\n{}",
            cap.codecs,
            gw.log()
        );
        collect(&mut ws, &mut cap, usize::MAX, Duration::from_millis(300)).await;
    }
    more(&gw, &mut ws, &mut cap, 25, Duration::from_secs(10)).await;
    assert!(
        cap.codecs[0].starts_with("avc1.64"),
        "High profile before the switch: {:?}",
        cap.codecs
    );
    assert!(
        cap.codecs[1].starts_with("avc1.42"),
        "baseline profile after the switch: {:?}",
        cap.codecs
    );
    assert!(
        cap.texts.iter().any(|t| t.contains("codec_changed")),
        "{:?}",
        cap.texts
    );
    // Split at the second init segment: each part decodes on its own with its own size.
    let second = cap
        .media
        .iter()
        .enumerate()
        .skip(1)
        .find(|(_, m)| is_box(m, b"ftyp"))
        .map(|(i, _)| i)
        .expect("second init");
    assert!(second > media_before);
    let after = Capture {
        media: cap.media[second..].to_vec(),
        ..Capture::default()
    };
    let first = fragment_info(&after.media[1]).expect("fragment");
    assert!(
        first.2,
        "the first fragment after the new init is a keyframe"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    after.write(&dir.path().join("after.mp4"));
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v",
            "-show_entries",
            "stream=width,height",
            "-of",
            "csv=p=0",
        ])
        .arg(dir.path().join("after.mp4"))
        .output()
        .expect("ffprobe");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "320,240");
    decodes(&after, "after.mp4");
    check_timeline(&cap, 90_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_camera_is_detected_and_video_returns() {
    let (a, b) = clips();
    let cam = FakeCamera::start(&[&a, &b]);
    let (gw, mut ws, mut cap) = setup(&cam).await;
    cam.stall(Duration::from_secs(12));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cap.texts.iter().any(|t| t.contains("offline")) {
        assert!(
            Instant::now() < deadline,
            "the stall was not noticed; log:\n{}",
            gw.log()
        );
        collect(&mut ws, &mut cap, usize::MAX, Duration::from_millis(300)).await;
    }
    let st = gw.status().await;
    assert!(
        st["streams"][STREAM_A]["last_health_error"]
            .as_str()
            .is_some_and(|e| e.contains("no frame")),
        "{st}"
    );
    more(&gw, &mut ws, &mut cap, 25, Duration::from_secs(20)).await;
    assert!(
        cap.texts.iter().filter(|t| t.contains("online")).count() >= 2,
        "{:?}",
        cap.texts
    );
    check_timeline(&cap, 90_000);
    decodes(&cap, "stall.mp4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_reconnects_within_seconds() {
    let (a, b) = clips();
    let cam = FakeCamera::start(&[&a, &b]);
    let (gw, mut ws, mut cap) = setup(&cam).await;
    let t = Instant::now();
    cam.drop_connections();
    more(&gw, &mut ws, &mut cap, 50, Duration::from_secs(15)).await;
    eprintln!(
        "50 more fragments {:?} after the connection dropped",
        t.elapsed()
    );
    assert!(gw.status().await["streams"][STREAM_A]["sessions"].as_u64() >= Some(2));
    check_timeline(&cap, 90_000);
    decodes(&cap, "drop.mp4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_clock_that_is_off_and_drifts_is_measured_and_reported() {
    let (a, _) = clips();
    let cam = FakeCamera::start(&[&a]);
    // Its clock says an hour and two minutes later than ours, and its RTP clock runs 2 % slow.
    cam.set_clocks(3_723_000, -20_000);
    let (gw, mut ws, mut cap) = setup(&cam).await;
    // The drift needs 20 s between measurement windows; video keeps coming meanwhile.
    let deadline = Instant::now() + Duration::from_secs(45);
    let d = loop {
        more(&gw, &mut ws, &mut cap, 10, Duration::from_secs(10)).await;
        let d = get(gw.api, &format!("/streams/{STREAM_A}")).await.json();
        if d["clock"]["media_clock_drift_ppm"].is_number() {
            break d;
        }
        assert!(Instant::now() < deadline, "no drift measured: {d}");
    };
    let offset = d["clock"]["camera_offset_ms"].as_i64().expect("offset");
    assert!((offset - 3_723_000).abs() < 1_000, "{d}");
    let ppm = d["clock"]["media_clock_drift_ppm"].as_f64().expect("drift");
    assert!((ppm + 20_000.0).abs() < 2_000.0, "{d}");
    let codes: Vec<&str> = d["diagnostics"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["code"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(codes, vec!["clock_drift", "camera_clock_off"], "{d}");
    let text = d["diagnostics"].to_string();
    assert!(
        text.contains("2.00 % slower") && text.contains("1 h 2 min ahead of"),
        "{text}"
    );
}
