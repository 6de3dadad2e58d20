//! In a real browser (Debian's Chromium driven by playwright-core): the built-in page and the
//! standalone MSE player show advancing video, from the demo file and from an RTSP camera with
//! audio. Screenshots are kept in target/test-artifacts/.

mod common;

use std::time::Duration;

use common::*;

/// Runs tests/browser/play.mjs and returns its report.
fn play(url: &str, shot: &str, secs: u32) -> serde_json::Value {
    play_with(url, shot, secs, &[])
}

/// Like [`play`], with play.mjs's environment (`VIDEO`, `WAIT_FOR`, `BEFORE`).
fn play_with(url: &str, shot: &str, secs: u32, env: &[(&str, &str)]) -> serde_json::Value {
    node_report("play.mjs", url, shot, secs, env)
}

fn assert_plays(r: &serde_json::Value, secs: f64, width: u64) {
    assert_eq!(r["ok"], true, "{r}");
    assert!(r["error"].is_null(), "{r}");
    assert_eq!(r["videoWidth"].as_u64(), Some(width), "{r}");
    let advanced = r["currentTime"].as_f64().unwrap_or(0.0) - r["before"].as_f64().unwrap_or(0.0);
    assert!(
        advanced > secs * 0.6,
        "video advanced only {advanced:.2} s in {secs} s: {r}"
    );
    eprintln!(
        "first frame {} ms after navigation; live latency {:.2} s; report {r}",
        r["firstFrameMs"],
        r["stats"]["latency"].as_f64().unwrap_or(f64::NAN)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_built_in_page_plays_the_demo_stream() {
    let gw = Gateway::start(&demo_stream("\"mse\", \"hls\"")).await;
    gw.wait_online(DEMO, Duration::from_secs(10)).await;
    let url = format!("http://{}/", gw.video);
    let r = tokio::task::spawn_blocking(move || play(&url, "dashboard-demo.png", 4))
        .await
        .expect("join");
    assert_plays(&r, 4.0, 640);
    // The table lists the stream with its live state and codec.
    let text = r["text"].as_str().unwrap_or_default();
    assert!(text.contains(DEMO), "{text}");
    assert!(text.contains("online"), "{text}");
    assert!(
        text.contains("h264 + aac") && text.contains("640×360"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_page_plays_webrtc_mse_and_ll_hls_side_by_side() {
    let gw = Gateway::start(&format!(
        "[hls]\nms_per_segment = 1000\n\n[webrtc]\nlisten = \"127.0.0.1:0\"\n\n{}",
        demo_stream("\"mse\", \"hls\", \"webrtc\"")
    ))
    .await;
    gw.wait_online(DEMO, Duration::from_secs(10)).await;
    let url = format!("http://{}/#/stream/{DEMO}", gw.video);
    let r = tokio::task::spawn_blocking(move || play(&url, "stream-page-demo.png", 4))
        .await
        .expect("join");
    // The first video is WebRTC, then MSE, then LL-HLS: each advances at its own latency.
    assert_plays(&r, 4.0, 640);
    let text = r["text"].as_str().unwrap_or_default();
    assert!(
        text.contains("HLS playlist")
            && text.contains("MSE websocket")
            && text.contains("WHEP endpoint"),
        "{text}"
    );
    assert!(
        text.contains("LL-HLS (hls.js)") && text.contains("WebRTC (WHEP)"),
        "{text}"
    );
    for (i, name) in [(1, "MSE"), (2, "HLS")] {
        let before = r["videosBefore"][i].as_f64().unwrap_or(f64::NAN);
        let after = r["videos"][i]["currentTime"].as_f64().unwrap_or(f64::NAN);
        assert!(after - before > 2.0, "{name} video did not advance: {r}");
        assert_eq!(r["videos"][i]["videoWidth"].as_u64(), Some(640), "{r}");
    }
    // The WebRTC panel reports its measured latency and the answer's word on the demo's AAC.
    assert!(text.contains("arrival to display"), "{text}");
    assert!(text.contains("AAC, which is not a WebRTC codec"), "{text}");
}

/// hls.js on the HLS player page, against a camera with 2 s GOPs and 1 s segment targets.
async fn hls_js_on_camera(mount: &str, low_latency: bool, shot: &'static str) -> serde_json::Value {
    let cam = Camera::start(Auth::None);
    let gw = Gateway::start(&format!(
        "[hls]\nms_per_segment = 1000\nlow_latency = {low_latency}\n\n{}",
        rtsp_stream(STREAM_A, &cam.url(mount), "\"hls\"", "")
    ))
    .await;
    gw.wait_online(STREAM_A, Duration::from_secs(20)).await;
    let url = format!(
        "http://{}/players/hls/?stream_id={STREAM_A}&ll={}",
        gw.video,
        u8::from(low_latency)
    );
    let r = tokio::task::spawn_blocking(move || play(&url, shot, 6))
        .await
        .expect("join");
    assert_plays(&r, 6.0, 1280);
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hls_js_plays_a_g711_camera_with_its_audio_as_flac() {
    let r = hls_js_on_camera("h264pcma", true, "hls-js-g711.png").await;
    assert!(r["audioDecodedBytes"].as_u64().unwrap_or(0) > 0, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hls_js_plays_a_camera_over_ll_hls() {
    let r = hls_js_on_camera("h264aac", true, "hls-ll-camera.png").await;
    assert_eq!(r["stats"]["mode"], "hls.js LL-HLS", "{r}");
    // hls.js measured its distance to the live edge (reported in docs, not asserted: it
    // depends on how fast this machine decodes).
    assert!(r["stats"]["latency"].as_f64().is_some(), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hls_js_plays_a_camera_over_plain_hls() {
    let r = hls_js_on_camera("h264aac", false, "hls-plain-camera.png").await;
    assert_eq!(r["stats"]["mode"], "hls.js", "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hls_js_keeps_playing_when_the_camera_restarts() {
    let mut cam = Camera::start(Auth::None);
    let gw = Gateway::start(&format!(
        "[hls]\nms_per_segment = 1000\n\n{}",
        rtsp_stream(STREAM_A, &cam.url("h264"), "\"hls\"", "")
    ))
    .await;
    gw.wait_online(STREAM_A, Duration::from_secs(20)).await;
    let url = format!("http://{}/players/hls/?stream_id={STREAM_A}", gw.video);
    let browser = tokio::task::spawn_blocking(move || play(&url, "hls-camera-restart.png", 22));
    tokio::time::sleep(Duration::from_secs(6)).await;
    cam.kill();
    tokio::time::sleep(Duration::from_secs(3)).await;
    cam.restart();
    let r = browser.await.expect("join");
    assert_eq!(r["ok"], true, "{r}");
    assert!(r["error"].is_null(), "{r}");
    // Playback resumed after the camera came back, without a reload: the last 5 s advanced.
    let s: Vec<f64> = r["samples"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_f64()).collect())
        .unwrap_or_default();
    assert!(s.len() >= 6, "{r}");
    let resumed = s[s.len() - 1] - s[s.len() - 6];
    assert!(
        resumed > 2.5,
        "video advanced only {resumed:.2} s in the last 5 s: {r}"
    );
    eprintln!("currentTime each second: {s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mse_player_plays_an_rtsp_camera_with_audio() {
    let cam = Camera::start(Auth::None);
    let gw = Gateway::start(&rtsp_stream(STREAM_A, &cam.url("h264aac"), "\"mse\"", "")).await;
    gw.wait_online(STREAM_A, Duration::from_secs(20)).await;
    let url = format!("http://{}/players/mse/?stream_id={STREAM_A}", gw.video);
    let r = tokio::task::spawn_blocking(move || play(&url, "mse-player-camera.png", 4))
        .await
        .expect("join");
    assert_plays(&r, 4.0, 1280);
    // The player jumps to live whenever it is more than 1 s behind (a busy CI machine decodes
    // slowly), so what the viewer is left with stays near the live edge.
    assert!(r["stats"]["latency"].as_f64().unwrap_or(9.0) < 1.5, "{r}");
}

/// Safari on iPhone has ManagedMediaSource and no MediaSource. Chromium has no
/// ManagedMediaSource, so the page gets a stand-in built on Chromium's MediaSource that keeps
/// Safari's rules: `MediaSource` is gone, a managed source opens only for a video with
/// `disableRemotePlayback`, and the browser says `endstreaming` (1.5 s after the start) and
/// `startstreaming` again (1 s later).
const MANAGED_ONLY: &str = r#"(() => {
  const Base = window.MediaSource;
  let made = 0;
  class ManagedMediaSource extends Base {
    constructor() {
      super();
      const n = ++made;
      this.addEventListener("sourceopen", () => {
        this.dispatchEvent(new Event("startstreaming"));
        if (n === 1) {
          setTimeout(() => this.dispatchEvent(new Event("endstreaming")), 1500);
          setTimeout(() => this.dispatchEvent(new Event("startstreaming")), 2500);
        }
      });
    }
  }
  const src = Object.getOwnPropertyDescriptor(HTMLMediaElement.prototype, "src");
  Object.defineProperty(HTMLMediaElement.prototype, "src", {
    configurable: true,
    get() { return src.get.call(this); },
    set(v) {
      if (String(v).startsWith("blob:") && !this.disableRemotePlayback) {
        window.refusedWithoutDisableRemotePlayback = true;
        return;
      }
      src.set.call(this, v);
    },
  });
  window.ManagedMediaSource = ManagedMediaSource;
  delete window.MediaSource;
})();"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mse_player_plays_over_managed_media_source_where_media_source_is_missing() {
    let cam = Camera::start(Auth::None);
    let gw = Gateway::start(&rtsp_stream(STREAM_A, &cam.url("h264"), "\"mse\"", "")).await;
    gw.wait_online(STREAM_A, Duration::from_secs(20)).await;
    let url = format!("http://{}/players/mse/?stream_id={STREAM_A}", gw.video);
    let r = tokio::task::spawn_blocking(move || {
        play_with(&url, "mse-player-managed.png", 6, &[("INIT", MANAGED_ONLY)])
    })
    .await
    .expect("join");
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["videoWidth"].as_u64(), Some(1280), "{r}");
    assert_eq!(r["stats"]["managed"], true, "{r}");
    // Suspended when asked, and playing again after startstreaming.
    assert_eq!(r["stats"]["suspensions"], 1, "{r}");
    assert_eq!(r["state"], "playing", "{r}");
    let samples: Vec<f64> = r["samples"]
        .as_array()
        .map(|a| a.iter().filter_map(serde_json::Value::as_f64).collect())
        .unwrap_or_default();
    let n = samples.len();
    assert!(
        n >= 3 && samples[n - 1] > samples[n - 3],
        "not advancing after the resume: {r}"
    );
    assert!(r["error"].is_null(), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mse_player_plays_a_g711_camera_with_its_audio_as_flac() {
    let cam = Camera::start(Auth::None);
    let gw = Gateway::start(&rtsp_stream(STREAM_A, &cam.url("h264pcma"), "\"mse\"", "")).await;
    gw.wait_online(STREAM_A, Duration::from_secs(20)).await;
    let url = format!("http://{}/players/mse/?stream_id={STREAM_A}", gw.video);
    let r = tokio::task::spawn_blocking(move || play(&url, "mse-player-g711.png", 4))
        .await
        .expect("join");
    assert_plays(&r, 4.0, 1280);
    assert!(
        r["text"]
            .as_str()
            .is_some_and(|t| t.contains("avc1.64001F,flac")),
        "{r}"
    );
    // Chromium decoded the audio track, not only the video.
    assert!(r["audioDecodedBytes"].as_u64().unwrap_or(0) > 0, "{r}");
}

/// A wall of 30 cameras: the grid shows a page of 24 snapshot tiles (every picture loaded, no
/// video decoding), and the tile under the pointer plays live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_a_wall_of_cameras_as_snapshots_and_plays_the_one_hovered() {
    let streams: String = (0..30)
        .map(|i| {
            format!(
                "[[local_files]]\nguid = \"00000000-0000-4000-8000-{:012x}\"\nfile = \"assets/demo.mp4\"\noutput_types = [\"mse\"]\nloop = true\n",
                0x100 + i
            )
        })
        .collect();
    let gw = Gateway::start(&streams).await;
    let first = "00000000-0000-4000-8000-000000000100";
    gw.wait_online(first, Duration::from_secs(20)).await;
    let url = format!("http://{}/", gw.video);
    // Every tile on screen has its picture (tiles below the fold load when scrolled to).
    let all_loaded = "(() => { const t = [...document.querySelectorAll('.tile')]; \
        const shown = t.filter((e) => e.getBoundingClientRect().top < innerHeight); \
        return t.length === 24 && shown.length >= 3 && \
          shown.every((e) => e.querySelector('img.snap').naturalWidth === 480); })()";
    let report = "({ loaded: [...document.querySelectorAll('.tile img.snap')].filter((i) => i.naturalWidth === 480).length, \
        beforeHover: window.beforeHover })";
    let hover =
        "window.beforeHover = document.querySelectorAll('.tile video:not([hidden])').length; \
        document.querySelector('.tile').dispatchEvent(new MouseEvent('mouseenter'))";
    let r = tokio::task::spawn_blocking(move || {
        play_with(
            &url,
            "dashboard-wall.png",
            3,
            &[
                ("WAIT_FOR", all_loaded),
                ("BEFORE", hover),
                ("VIDEO", ".tile video:not([hidden])"),
                ("REPORT", report),
            ],
        )
    })
    .await
    .expect("play");
    assert_plays(&r, 3.0, 640);
    let text = r["text"].as_str().unwrap_or_default();
    assert!(text.contains("page 1 of 2"), "{text}");
    // Only the hovered tile decodes video.
    let videos = r["videos"].as_array().map(Vec::len).unwrap_or(0);
    assert_eq!(videos, 24, "{r}");
    let playing = r["videos"]
        .as_array()
        .map(|v| {
            v.iter()
                .filter(|x| x["videoWidth"].as_u64().unwrap_or(0) > 0)
                .count()
        })
        .unwrap_or(0);
    assert_eq!(playing, 1, "{r}");
    assert_eq!(
        r["extra"]["beforeHover"], 0,
        "no tile played before the hover: {r}"
    );
    // Tiles off screen did not ask for pictures.
    let loaded = r["extra"]["loaded"].as_u64().unwrap_or(0);
    assert!((3..24).contains(&loaded), "{loaded} pictures loaded: {r}");
    // The gateway decoded one picture per tile shown, not one per request.
    let m = get(gw.api, "/metrics").await.text();
    let decodes = m
        .lines()
        .find(|l| l.starts_with("video_server_snapshot_decodes_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(
        decodes >= loaded as f64 - 1.0 && decodes <= 3.0 * loaded as f64 + 6.0,
        "{decodes} decodes for {loaded} tiles shown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_flags_a_camera_with_a_smart_codec() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clip = smart_codec_clip(dir.path());
    let gw = Gateway::start(&format!(
        "[[local_files]]\nguid = \"{STREAM_A}\"\nfile = \"{}\"\noutput_types = [\"mse\"]\nloop = true\n",
        clip.display()
    ))
    .await;
    // The finding needs the keyframe at 7.5 s.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while get(gw.api, &format!("/streams/{STREAM_A}")).await.json()["diagnostics"]
        .as_array()
        .is_none_or(Vec::is_empty)
    {
        assert!(std::time::Instant::now() < deadline, "no finding");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let url = format!("http://{}/#/stream/{STREAM_A}", gw.video);
    let r = tokio::task::spawn_blocking(move || {
        play_with(&url, "dashboard-diagnostics.png", 2, &[("VIDEO", "#mse")])
    })
    .await
    .expect("play");
    assert_eq!(r["ok"], true, "{r}");
    let text = r["text"].as_str().unwrap_or_default();
    assert!(text.contains("\"smart\" codec mode"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_page_plays_the_archive_from_a_click_on_its_timeline() {
    let cam = Camera::start(Auth::None);
    let files = tempfile::tempdir().expect("tempdir");
    let dir = files.path().display().to_string();
    let stream = rtsp_stream(
        STREAM_A,
        &cam.url("h264aac"),
        "\"mse\"",
        &format!("archive = {{ recording = true, type = \"filesystem\", directory = \"{dir}\", ms_per_file = 3000 }}"),
    );
    let gw = Gateway::start(&format!(
        "[archive]\nrecording = true\ndirectory = \"{dir}\"\nms_per_file = 3000\nthumbnail_interval_ms = 2000\n{stream}"
    ))
    .await;
    // Three closed files (about 9 s) to play.
    wait_archive_segments(&gw, STREAM_A, 3, false, Duration::from_secs(60)).await;
    // The thumbnail strip under the timeline shows pictures, and a hover over the timeline
    // shows the nearest one.
    let strip = "document.querySelectorAll('#tlthumbs img').length >= 2 && \
        [...document.querySelectorAll('#tlthumbs img')].every((i) => i.naturalWidth === 320)";
    let hover = "(() => { const tl = document.getElementById('tl'); const r = tl.getBoundingClientRect(); \
        tl.dispatchEvent(new MouseEvent('mousemove', { clientX: r.left + r.width / 2, clientY: r.top + 5 })); \
        window.archiveTimeline.play(window.archiveTimeline.t0 + 1500); })()";
    let report = "({ strip: document.querySelectorAll('#tlthumbs img').length, \
        peek: !document.getElementById('tlpeek').hidden && \
          document.querySelector('#tlpeek img').getAttribute('src').includes('/thumbnails/') })";
    let url = format!("http://{}/#/stream/{STREAM_A}", gw.video);
    let r = tokio::task::spawn_blocking(move || {
        play_with(
            &url,
            "archive-timeline.png",
            4,
            &[
                ("VIDEO", "#archvideo"),
                ("WAIT_FOR", strip),
                ("BEFORE", hover),
                ("REPORT", report),
                ("FULL_PAGE", "1"),
            ],
        )
    })
    .await
    .expect("play");
    assert_plays(&r, 4.0, 1280);
    let text = r["text"].as_str().unwrap_or_default();
    assert!(
        text.contains("file(s)") && text.contains("download MP4"),
        "{text}"
    );
    assert!(r["extra"]["strip"].as_u64() >= Some(2), "{r}");
    assert_eq!(r["extra"]["peek"], true, "{r}");
}

/// Frames Chromium decoded per second over the `secs` it watched. Decoded, not shown: a
/// loaded machine makes the renderer drop frames it decoded in time (20 of 125 once in CI),
/// which says nothing of what the gateway sent; the B-frame bug this guards against left
/// the decoder about 8 frames a second.
fn decoded_fps(r: &serde_json::Value, secs: f64) -> f64 {
    let total = r["totalFrames"].as_f64().unwrap_or(0.0);
    let before = r["decodedBefore"].as_f64().unwrap_or(0.0);
    (total - before) / secs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mse_player_plays_a_b_frame_camera_at_its_frame_rate() {
    let cam = Camera::start(Auth::None);
    let gw = Gateway::start(&rtsp_stream(STREAM_A, &cam.url("h264b"), "\"mse\"", "")).await;
    gw.wait_online(STREAM_A, Duration::from_secs(20)).await;
    let url = format!("http://{}/players/mse/?stream_id={STREAM_A}", gw.video);
    let r = tokio::task::spawn_blocking(move || play(&url, "mse-player-bframes.png", 5))
        .await
        .expect("join");
    assert_plays(&r, 5.0, 1280);
    // Before decode times were derived, Chromium got about 8 fps of this 25 fps camera.
    let fps = decoded_fps(&r, 5.0);
    assert!(fps > 18.0, "{fps:.1} frames decoded per second: {r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hls_js_plays_a_b_frame_camera_at_its_frame_rate() {
    let r = hls_js_on_camera("h264b", true, "hls-js-bframes.png").await;
    let fps = decoded_fps(&r, 6.0);
    assert!(fps > 18.0, "{fps:.1} frames decoded per second: {r}");
}
