//! Cameras that send B-frames (reordered frames: presentation times step backwards in decode
//! order), from two RTSP stacks: GStreamer's payloaders (TCP and UDP, H.264 and H.265) and
//! ffmpeg's, relayed by `rtsp-server-perl` (UDP). What viewers, HLS and the archive get is read
//! back with mp4-atom, ffprobe and ffmpeg:
//! - every frame reaches the MSE viewer one frame duration after the last (full frame rate, no
//!   hole), with signed composition offsets that put presentation back in the camera's order;
//! - no discontinuity is counted, and the stated reorder depth is reported;
//! - ffmpeg decodes the fragments, the HLS playlist and every archive file without an error,
//!   and an archive file of 4 s holds exactly 100 frames.

mod common;

use std::time::Duration;

use common::relay::Relay;
use common::*;

/// Watches `n` fragments after the cached GOP (no catch-up: real spacing), checks the timeline
/// and decodes them. `lossy`: the camera's packets cross UDP, which may lose one now and then
/// on a busy machine; a lost frame is then a step of whole frames, never a stretched one.
async fn check_viewer(gw: &Gateway, n: usize, name: &str, lossy: bool) {
    let mut ws = ws_connect(&gw.ws_url(STREAM_A, "&catchup=0")).await;
    let mut cap = Capture::default();
    collect(&mut ws, &mut cap, n, Duration::from_secs(40)).await;
    assert!(
        cap.fragments() >= n,
        "{} fragments; log:\n{}",
        cap.fragments(),
        gw.log()
    );
    let samples = video_samples(&cap);
    // Decode order: one frame duration (3600 ticks at 25 fps) apart, every frame.
    let mut lost = 0;
    for w in samples.windows(2) {
        let step = w[1].0 - w[0].0;
        if lossy && step % 3600 == 0 && step > 0 {
            lost += step / 3600 - 1;
            continue;
        }
        assert_eq!(
            step,
            3600,
            "decode times {} then {}: a frame lost or stretched; log:\n{}",
            w[0].0,
            w[1].0,
            gw.log()
        );
    }
    // Presentation: the camera's reordered frames, whole frames apart once sorted.
    assert!(
        samples.iter().any(|s| s.1 > 0),
        "composition offsets carry the reordering"
    );
    assert!(samples.iter().all(|s| s.1 >= 0), "decode ≤ presentation");
    let first_key = samples.iter().position(|s| s.2).expect("a keyframe");
    let mut pts: Vec<i64> = samples[first_key..]
        .iter()
        .map(|s| s.0 as i64 + s.1)
        .collect();
    pts.sort_unstable();
    let steps: Vec<i64> = pts.windows(2).map(|w| w[1] - w[0]).collect();
    // The last few presentation times may fall after the capture's end.
    let bad = steps.iter().filter(|&&d| d != 3600).count();
    assert!(bad <= 4 + 2 * lost as usize, "presentation steps {steps:?}");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(name);
    cap.write(&path);
    let p = probe(&path);
    // A packet lost on UDP costs its frame, and the B-frames around it may then miss a
    // reference: only then may ffmpeg complain.
    let st = get(gw.api, &format!("/streams/{STREAM_A}")).await.json();
    let packets_lost = st["rtp_packets_lost"].as_u64().expect("rtp_packets_lost");
    // A frame may also go when the viewer (this test, on a loaded machine) falls behind: the
    // gateway counts that too. Anything else missing is a frame the gateway lost silently.
    let dropped = st["frames_dropped_for_slow_viewers"].as_u64().unwrap_or(0);
    assert!(
        lost == 0 || packets_lost > 0 || dropped > 0,
        "{lost} frames missing with no packet lost and none dropped for a slow viewer: {st}"
    );
    assert!(
        p.decode_errors.is_empty() || (lossy && packets_lost > 0),
        "{} packets lost; {}",
        packets_lost,
        p.decode_errors
    );
    assert!(p.video_frames as usize + lost as usize >= n, "{p:?}");
}

async fn check_status(gw: &Gateway, depth: u64) {
    let st = gw.status().await;
    let s = &st["streams"][STREAM_A];
    assert_eq!(s["discontinuities"], 0, "{s}");
    assert_eq!(s["timestamp_jumps"], 0, "{s}");
    assert_eq!(s["sessions"], 1, "{s}");
    let one = get(gw.api, &format!("/streams/{STREAM_A}")).await.json();
    assert_eq!(one["reorder_depth"].as_u64(), Some(depth), "{one}");
    let fps = one["fps_measured"].as_f64().unwrap_or(0.0);
    assert!((24.0..=26.0).contains(&fps), "measured {fps} fps: {one}");
}

async fn gateway_on(url: &str, extra: &str) -> Gateway {
    let gw = Gateway::start(&rtsp_stream(STREAM_A, url, "\"mse\"", extra)).await;
    gw.wait_online(STREAM_A, Duration::from_secs(30)).await;
    gw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h264_b_frames_from_gstreamer_over_tcp_play_at_full_rate() {
    let cam = Camera::start(Auth::None);
    let gw = gateway_on(&cam.url("h264b"), "").await;
    check_viewer(&gw, 100, "h264b.mp4", false).await;
    check_status(&gw, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h264_b_frames_from_gstreamer_over_udp_play_at_full_rate() {
    let cam = Camera::start(Auth::None);
    let gw = gateway_on(&cam.url("h264b"), "transport = \"udp\"").await;
    check_viewer(&gw, 100, "h264b-udp.mp4", true).await;
    check_status(&gw, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h265_b_frames_from_gstreamer_play_at_full_rate() {
    let cam = Camera::start(Auth::None);
    let gw = gateway_on(&cam.url("h265b"), "").await;
    check_viewer(&gw, 100, "h265b.mp4", false).await;
    let one = get(gw.api, &format!("/streams/{STREAM_A}")).await.json();
    assert!(one["reorder_depth"].as_u64() >= Some(1), "{one}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h264_b_frames_relayed_by_a_second_rtsp_stack_play_at_full_rate() {
    let relay = Relay::start(&media_dir().join("h264b.mp4"), "bframes");
    let gw = gateway_on(&relay.url(), "transport = \"udp\"").await;
    check_viewer(&gw, 100, "relay.mp4", true).await;
    let st = gw.status().await;
    assert_eq!(st["streams"][STREAM_A]["discontinuities"], 0, "{st}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h265_b_frames_relayed_by_a_second_rtsp_stack_play_at_full_rate() {
    let relay = Relay::start(&media_dir().join("h265b.mp4"), "bframes");
    let gw = gateway_on(&relay.url(), "transport = \"udp\"").await;
    check_viewer(&gw, 100, "relay265.mp4", true).await;
    let st = gw.status().await;
    assert_eq!(st["streams"][STREAM_A]["discontinuities"], 0, "{st}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b_frame_archive_files_and_hls_decode_frame_exact() {
    let cam = Camera::start(Auth::None);
    let rec = tempfile::tempdir().expect("tempdir");
    let dir = rec.path();
    let gw = Gateway::start(&format!(
        "[archive]\nrecording = true\nserving = true\ndirectory = \"{}\"\nms_per_file = 4000\n\n[hls]\nms_per_segment = 2000\nms_per_part = 200\nwindow_size = 4\n\n{}",
        dir.display(),
        rtsp_stream(
            STREAM_A,
            &cam.url("h264b"),
            "\"mse\", \"hls\"",
            &format!(
                "archive = {{ recording = true, type = \"filesystem\", directory = \"{}\", ms_per_file = 4000 }}",
                dir.display()
            )
        )
    ))
    .await;
    gw.wait_online(STREAM_A, Duration::from_secs(30)).await;
    let list = wait_archive_segments(&gw, STREAM_A, 2, false, Duration::from_secs(40)).await;
    let list = list["segments"].as_array().cloned().unwrap_or_default();
    let mut checked = 0;
    for seg in list.iter().take(2) {
        let name = seg["file"].as_str().expect("file");
        let p = probe(&dir.join(name));
        assert!(p.decode_errors.is_empty(), "{name}: {}", p.decode_errors);
        assert_eq!(p.video_frames, 100, "{name}: 4 s at 25 fps");
        checked += 1;
    }
    assert_eq!(checked, 2);
    // A clip starting inside a GOP: the lead-in is squeezed, B-frames and all, and ffmpeg
    // decodes it without a complaint.
    let first = list[0]["start_ms"].as_i64().expect("start");
    let (start, end) = (first + 1_500, first + 5_500);
    let r = get(
        gw.video,
        &format!(
            "/archive/{STREAM_A}/clip.mp4?start={:.3}&end={:.3}",
            start as f64 / 1000.0,
            end as f64 / 1000.0
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let clip = dir.join("clip.mp4");
    std::fs::write(&clip, &r.body).expect("write clip");
    let p = probe(&clip);
    assert!(p.decode_errors.is_empty(), "clip: {}", p.decode_errors);
    assert!(p.video_frames >= 100, "{p:?}");
    // HLS: ffmpeg reads the live playlist with B-frames without a complaint.
    ffmpeg_reads_live_hls(format!("http://{}/hls/{STREAM_A}.m3u8", gw.video), 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_file_with_b_frames_plays_at_full_rate() {
    let file = media_dir().join("h264b.mp4");
    let gw = Gateway::start(&format!(
        "[[local_files]]\nguid = \"{STREAM_A}\"\nfile = \"{}\"\noutput_types = [\"mse\"]\nloop = true\n",
        file.display()
    ))
    .await;
    gw.wait_online(STREAM_A, Duration::from_secs(20)).await;
    check_viewer(&gw, 100, "file-b.mp4", false).await;
    let st = gw.status().await;
    assert_eq!(st["streams"][STREAM_A]["discontinuities"], 0, "{st}");
}
