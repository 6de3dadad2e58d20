//! The corpus of bad cameras: each case is a camera that misbehaves the way real ones do, served
//! by the in-process fake camera or the GStreamer camera, and each test states what a viewer
//! (MSE), HLS and the archive get, read back with mp4-atom, ffprobe and ffmpeg.
//! B-frames are in tests/bframes.rs, timestamp jumps, SSRC changes and stalls in
//! tests/faults.rs.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::fake_camera::{FakeCamera, Quirks, UdpFaults};
use common::*;

/// What each output got from one camera.
struct Outcome {
    gw: Gateway,
    viewer: Capture,
    _archive: tempfile::TempDir,
    archive_dir: PathBuf,
}

/// A gateway with MSE, HLS (1 s segments) and recording (2 s files) on the camera at `url`,
/// and a viewer that collected `fragments` fragments.
async fn run(url: &str, extra: &str, fragments: usize, within: Duration) -> Outcome {
    let archive = tempfile::tempdir().expect("tempdir");
    let archive_dir = archive.path().to_owned();
    let gw = Gateway::start(&format!(
        "[hls]\nms_per_segment = 1000\nms_per_part = 200\nwindow_size = 4\n\n[archive]\nrecording = true\nserving = true\ndirectory = \"{dir}\"\nms_per_file = 2000\n\n{stream}",
        dir = archive_dir.display(),
        stream = rtsp_stream(
            STREAM_A,
            url,
            "\"mse\", \"hls\"",
            &format!(
                "{extra}\narchive = {{ recording = true, type = \"filesystem\", directory = \"{}\", ms_per_file = 2000 }}",
                archive_dir.display()
            )
        )
    ))
    .await;
    gw.wait_online(STREAM_A, within).await;
    // A viewer of a camera with video starts at a whole keyframe. On a lossy UDP link one
    // arrives whole only now and then (retina drops a frame with a lost or reordered packet,
    // and a keyframe is 30-odd packets), so the wait for the first is its own, longer bound;
    // from there the viewer starts at once from the cached GOP and `within` bounds the rest.
    // An audio-only camera has no keyframe to wait for.
    wait_for(Duration::from_secs(150), "a whole keyframe", || async {
        let st = get(gw.api, &format!("/streams/{STREAM_A}")).await.json();
        let has_video = st["codecs"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["type"] == "video"));
        (st["keyframes_in"].as_u64() > Some(0)
            || (st["frames_in"].as_u64() > Some(0) && !has_video))
            .then_some(())
    })
    .await;
    let mut ws = ws_connect(&gw.ws_url(STREAM_A, "&events=1")).await;
    let mut viewer = Capture::default();
    collect(&mut ws, &mut viewer, fragments, within).await;
    assert!(
        viewer.fragments() >= fragments,
        "{} of {fragments} fragments; log:\n{}",
        viewer.fragments(),
        gw.log()
    );
    Outcome {
        gw,
        viewer,
        _archive: archive,
        archive_dir,
    }
}

impl Outcome {
    /// ffmpeg decodes what the viewer got without an error.
    fn viewer_decodes(&self, name: &str) -> Probe {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(name);
        self.viewer.write(&path);
        let p = probe(&path);
        assert!(p.decode_errors.is_empty(), "{name}: {}", p.decode_errors);
        p
    }

    /// ffmpeg reads 2 s of the live HLS playlist without a complaint.
    async fn hls_decodes(&self) {
        ffmpeg_reads_live_hls(format!("http://{}/hls/{STREAM_A}.m3u8", self.gw.video), 2).await;
    }

    /// The first closed archive file, once there is one, probed by ffprobe.
    async fn archive_decodes(&self, within: Duration) -> Probe {
        let list = wait_archive_segments(&self.gw, STREAM_A, 1, false, within).await;
        let name = list["segments"][0]["file"]
            .as_str()
            .expect("file")
            .to_owned();
        let p = probe(&self.archive_dir.join(&name));
        assert!(p.decode_errors.is_empty(), "{name}: {}", p.decode_errors);
        p
    }

    /// The steps between the viewer's video decode times, the newest `n`.
    fn last_steps(&self, n: usize) -> Vec<u64> {
        let samples = video_samples(&self.viewer);
        let steps: Vec<u64> = samples.windows(2).map(|w| w[1].0 - w[0].0).collect();
        steps[steps.len().saturating_sub(n)..].to_vec()
    }

    async fn stream_status(&self) -> serde_json::Value {
        get(self.gw.api, &format!("/streams/{STREAM_A}"))
            .await
            .json()
    }
}

fn clip(name: &str) -> PathBuf {
    media_dir().join(name)
}

/// The fake camera playing `name` with `quirks`.
fn fake(name: &str, quirks: Quirks) -> FakeCamera {
    FakeCamera::start_with(&[&clip(name)], quirks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameter_sets_only_in_band_and_an_sdp_without_them() {
    let cam = fake(
        "h264aac.mp4",
        Quirks {
            no_sprop: true,
            ..Quirks::default()
        },
    );
    let o = run(&cam.url(), "", 50, Duration::from_secs(20)).await;
    // The viewer: the codec string from the in-band SPS, then video that decodes.
    assert!(
        o.viewer.codecs[0].starts_with("avc1.64"),
        "{:?}",
        o.viewer.codecs
    );
    assert!(o.viewer_decodes("inband.mp4").video_frames >= 50);
    o.hls_decodes().await;
    assert_eq!(
        o.archive_decodes(Duration::from_secs(20))
            .await
            .video_frames,
        50,
        "2 s at 25 fps"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_fps_camera_is_timed_and_cut_at_its_own_pace() {
    let cam = fake(
        "gop5.mp4",
        Quirks {
            frame_90k: Some(90_000),
            ..Quirks::default()
        },
    );
    let o = run(&cam.url(), "", 8, Duration::from_secs(30)).await;
    // The viewer: frames a second apart after the cached ones.
    let live = o.last_steps(3);
    assert!(live.iter().all(|&d| d == 90_000), "{live:?}");
    o.viewer_decodes("1fps.mp4");
    // The archive cuts at keyframes (every 5 s): a 2 s file target yields 5 s files.
    let p = o.archive_decodes(Duration::from_secs(30)).await;
    assert_eq!(p.video_frames, 5, "{p:?}");
    let st = o.stream_status().await;
    assert_eq!(st["discontinuities"], 0, "{st}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sixty_fps_camera_reaches_viewers_at_sixty() {
    let cam = fake(
        "h264aac.mp4",
        Quirks {
            frame_90k: Some(1500),
            ..Quirks::default()
        },
    );
    let o = run(&cam.url(), "", 150, Duration::from_secs(20)).await;
    let steps = o.last_steps(100);
    assert!(steps.iter().all(|&d| d == 1500), "1/60 s apart: {steps:?}");
    o.viewer_decodes("60fps.mp4");
    o.hls_decodes().await;
    // Keyframes every 50 frames (0.83 s): 2 s files of 100 or 150 frames.
    let p = o.archive_decodes(Duration::from_secs(20)).await;
    assert!(p.video_frames % 50 == 0 && p.video_frames >= 100, "{p:?}");
    let st = o.stream_status().await;
    let fps = st["fps_measured"].as_f64().unwrap_or(0.0);
    assert!((55.0..=65.0).contains(&fps), "{st}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parameter_change_without_an_idr_waits_for_the_next_keyframe() {
    let cam = FakeCamera::start_with(
        &[&clip("h264aac.mp4"), &clip("small.mp4")],
        Quirks {
            no_sprop: true,
            ..Quirks::default()
        },
    );
    let mut o = run(&cam.url(), "", 25, Duration::from_secs(20)).await;
    cam.params_without_idr(1);
    let mut ws = ws_connect(&o.gw.ws_url(STREAM_A, "")).await;
    let mut after = Capture::default();
    collect(&mut ws, &mut after, 75, Duration::from_secs(20)).await;
    assert!(
        after.fragments() >= 75,
        "video went on; log:\n{}",
        o.gw.log()
    );
    o.viewer = after;
    // What is sent decodes: frames under the foreign parameters are held back until the
    // camera's next keyframe with its own.
    o.viewer_decodes("sps-without-idr.mp4");
    o.hls_decodes().await;
    o.archive_decodes(Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_that_never_answers_play_is_diagnosed_and_retried() {
    let cam = fake(
        "h264aac.mp4",
        Quirks {
            never_play: true,
            ..Quirks::default()
        },
    );
    let gw = Gateway::start(&rtsp_stream(STREAM_A, &cam.url(), "\"mse\"", "")).await;
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let st = gw.status().await;
        let s = &st["streams"][STREAM_A];
        if s["last_health_error"]
            .as_str()
            .is_some_and(|e| e.contains("PLAY"))
        {
            assert_eq!(s["online"], false, "{s}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no diagnosis of the missing PLAY answer: {s}\nlog:\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        gw.log().contains("timed out waiting for PLAY"),
        "{}",
        gw.log()
    );
    // A viewer meanwhile is told the stream is offline, and is not dropped.
    let mut ws = ws_connect(&gw.ws_url(STREAM_A, "&events=1")).await;
    let mut cap = Capture::default();
    collect(&mut ws, &mut cap, 1, Duration::from_secs(2)).await;
    assert!(cap.close.is_none(), "{:?}", cap.close);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audio_only_camera_is_served_recorded_and_played_back() {
    let cam = Camera::start(Auth::None);
    let o = run(&cam.url("aac"), "", 50, Duration::from_secs(20)).await;
    assert_eq!(o.viewer.codecs[0], "mp4a.40.2");
    let p = o.viewer_decodes("audio-only.mp4");
    assert_eq!(p.audio_codec.as_deref(), Some("aac"));
    assert_eq!(p.video_codec, None);
    o.hls_decodes().await;
    let p = o.archive_decodes(Duration::from_secs(20)).await;
    assert!(p.audio_frames > 40, "a file of about 2 s: {p:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_that_starts_five_seconds_after_video_joins_without_breaking_video() {
    let cam = Camera::start(Auth::None);
    let o = run(&cam.url("h264late"), "", 25, Duration::from_secs(20)).await;
    // The SDP announces the audio track from the start, so the codec list names it at once;
    // that it joined shows only in the fragments. The camera starts the audio 5 s after the
    // video, later on a loaded machine: read on until a fragment of the audio track (2)
    // arrives (bounded), then check the whole capture with ffprobe.
    let mut ws = ws_connect(&o.gw.ws_url(STREAM_A, "")).await;
    let mut cap = Capture::default();
    let has_audio = |cap: &Capture| {
        cap.media
            .iter()
            .filter_map(|m| fragment_info(m))
            .any(|(track, _, _)| track == 2)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut want = 100;
    while !has_audio(&cap) && cap.close.is_none() && Instant::now() < deadline {
        collect(&mut ws, &mut cap, want, Duration::from_secs(10)).await;
        want = cap.fragments() + 25;
    }
    // 25 fragments more: the stream goes on with both tracks.
    let more = cap.fragments() + 25;
    collect(&mut ws, &mut cap, more, Duration::from_secs(10)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("late.mp4");
    cap.write(&file);
    let p = probe(&file);
    assert!(cap.codecs[0].contains("mp4a.40.2"), "{:?}", cap.codecs);
    assert!(p.decode_errors.is_empty(), "{}", p.decode_errors);
    assert!(p.audio_frames > 0 && p.video_frames > 0, "{p:?}");
    o.viewer_decodes("before-audio.mp4");
    o.hls_decodes().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_4k_camera_with_2_mb_keyframes_is_served_whole() {
    let cam = Camera::start(Auth::None);
    let o = run(&cam.url("h264big"), "", 50, Duration::from_secs(30)).await;
    let biggest = o
        .viewer
        .media
        .iter()
        .filter(|m| m.len() > 8 && &m[4..8] == b"moof")
        .map(Vec::len)
        .max()
        .unwrap_or(0);
    assert!(biggest > 2_000_000, "largest fragment {biggest} bytes");
    let p = o.viewer_decodes("4k.mp4");
    assert!(p.video_frames >= 50, "{p:?}");
    o.archive_decodes(Duration::from_secs(30)).await;
}

/// A camera over UDP whose network loses, duplicates and reorders RTP packets.
async fn lossy_udp(loss: f64) {
    let cam = fake(
        "h264aac.mp4",
        Quirks {
            udp_faults: UdpFaults {
                loss,
                duplicate: loss,
                reorder: loss,
            },
            ..Quirks::default()
        },
    );
    let o = run(
        &cam.url(),
        "transport = \"udp\"",
        25,
        Duration::from_secs(40),
    )
    .await;
    // The viewer: frames keep coming in one session, in decode order; a frame whose packets
    // were lost is missing (a step of whole frames), nothing is stretched or reversed.
    let samples = video_samples(&o.viewer);
    let live = samples
        .windows(2)
        .position(|w| w[1].0 - w[0].0 > 1)
        .unwrap_or(0);
    for w in samples[live..].windows(2) {
        let step = w[1].0 - w[0].0;
        assert!(step > 0 && step % 3600 == 0, "step {step}");
    }
    // 25 frames are about 200 packets: at 1 % none may be lost yet, so the count is awaited
    // (bounded) rather than read once.
    let st = wait_for(Duration::from_secs(20), "lost packets counted", || async {
        let st = o.stream_status().await;
        (st["rtp_packets_lost"].as_u64() > Some(0)).then_some(st)
    })
    .await;
    eprintln!(
        "{}% faults: {} frames in, {} packets lost, {} fps measured",
        loss * 100.0,
        st["frames_in"],
        st["rtp_packets_lost"],
        st["fps_measured"]
    );
    assert_eq!(st["sessions"], 1, "no reconnect: {st}");
    assert!(
        st["rtp_packets_lost"].as_u64() > Some(0),
        "loss is counted: {st}"
    );
    if st["rtp_packets_lost"].as_u64() >= Some(10) {
        assert!(
            st["diagnostics"]
                .as_array()
                .is_some_and(|d| d.iter().any(|d| d["code"] == "packet_loss")),
            "the loss is diagnosed: {st}"
        );
    }
    // The archive goes on recording. A file is cut at a keyframe, and at 5 % loss a keyframe of
    // 30-odd packets arrives whole about one time in five: two of them may take a while.
    o.archive_decodes_or_reports_loss(Duration::from_secs(60))
        .await;
    assert!(!o.gw.log().contains("panicked"), "{}", o.gw.log());
}

impl Outcome {
    /// The first archive file exists and ffprobe reads its frames (a lost packet may leave a
    /// frame the decoder complains about; the file itself is whole).
    async fn archive_decodes_or_reports_loss(&self, within: Duration) {
        let list = wait_archive_segments(&self.gw, STREAM_A, 1, false, within).await;
        let name = list["segments"][0]["file"]
            .as_str()
            .expect("file")
            .to_owned();
        let p = probe(&self.archive_dir.join(&name));
        assert!(p.video_frames > 5, "{name}: {p:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_losing_duplicating_and_reordering_one_percent_of_packets() {
    lossy_udp(0.01).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_losing_duplicating_and_reordering_five_percent_of_packets() {
    lossy_udp(0.05).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_gop_h265_camera_starts_at_a_cra_and_decodes() {
    let cam = Camera::start(Auth::None);
    let o = run(&cam.url("h265open"), "", 75, Duration::from_secs(30)).await;
    assert!(
        o.viewer.codecs[0].starts_with("hvc1."),
        "{:?}",
        o.viewer.codecs
    );
    // The viewer starts at a CRA keyframe; the leading frames that refer to the GOP before it
    // cannot be shown and the decoder skips them: at most one GOP's few, no error.
    let p = o.viewer_decodes("open-gop.mp4");
    assert!(p.video_frames >= 70, "{p:?}");
    o.hls_decodes().await;
    let p = o.archive_decodes(Duration::from_secs(30)).await;
    assert!(p.video_frames >= 45, "a 2 s file from a CRA: {p:?}");
    let st = o.stream_status().await;
    assert_eq!(st["discontinuities"], 0, "{st}");
    assert!(st["reorder_depth"].as_u64() >= Some(1), "{st}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_live555_camera_that_leaks_a_dropped_session_is_waited_out() {
    let cam = fake(
        "h264aac.mp4",
        Quirks {
            live555_stale: Some(Duration::from_secs(3)),
            ..Quirks::default()
        },
    );
    let gw = Gateway::start(&rtsp_stream(STREAM_A, &cam.url(), "\"mse\"", "")).await;
    gw.wait_online(STREAM_A, Duration::from_secs(20)).await;
    cam.drop_connections();
    // The next connection gets the dropped session's data: the gateway says why it waits,
    // does not hammer the camera, and plays again once the stale session has expired (retina
    // assumes live555's 65 s).
    let t = Instant::now();
    let deadline = t + Duration::from_secs(20);
    loop {
        let st = gw.status().await;
        let err = st["streams"][STREAM_A]["last_health_error"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        if err.contains("dropped session") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not diagnosed: {st}\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    gw.wait_online(STREAM_A, Duration::from_secs(90)).await;
    eprintln!("back {:?} after the drop", t.elapsed());
    let st = gw.status().await;
    let sessions = st["streams"][STREAM_A]["sessions"].as_u64().unwrap_or(0);
    assert!(sessions <= 4, "{sessions} sessions: reconnected in a loop");
    let mut ws = ws_connect(&gw.ws_url(STREAM_A, "")).await;
    let mut cap = Capture::default();
    collect(&mut ws, &mut cap, 25, Duration::from_secs(10)).await;
    assert!(cap.fragments() >= 25, "{}", gw.log());
}
