//! In a real browser (Debian's Chromium driven by playwright-core): the built-in page and the
//! standalone MSE player show advancing video, from the demo file and from an RTSP camera with
//! audio. Screenshots are kept in target/test-artifacts/.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

const DEMO: &str = "13bf3e5c-d537-4f10-98e8-9d0afca8b070";

/// Runs tests/browser/play.mjs and returns its report.
fn play(url: &str, shot: &str, secs: u32) -> serde_json::Value {
    let artifacts = repo().join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).expect("artifacts dir");
    let out = Command::new("node")
        .arg(repo().join("tests/browser/play.mjs"))
        .arg(url)
        .arg(artifacts.join(shot))
        .arg(secs.to_string())
        .output()
        .expect("node (scripts/test installs it with playwright-core)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|_| {
        panic!(
            "no report from play.mjs: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
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
    let gw = Gateway::start(&format!(
        "[[local_files]]\nguid = \"{DEMO}\"\nfile = \"assets/demo.mp4\"\noutput_types = [\"mse\", \"hls\"]\nloop = true\n"
    ))
    .await;
    gw.wait_online(DEMO, Duration::from_secs(10)).await;
    let url = format!("http://{}/", gw.video);
    let r = tokio::task::spawn_blocking(move || play(&url, "dashboard-demo.png", 4))
        .await
        .expect("join");
    assert_plays(&r, 4.0, 640);
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
