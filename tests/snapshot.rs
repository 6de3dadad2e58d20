//! `/snapshot/{id}.jpg` against real cameras (GStreamer's RTSP server): a JPEG that ffprobe
//! decodes, of the camera's size or the width asked for, for H.264 (decoded in-process) and
//! H.265 (by ffmpeg); a hundred
//! requests at once cost one decode; an offline camera gives its last picture with its time;
//! an idle on-demand camera is woken for it; bad requests get a JSON reason.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

/// (codec, width, height) of a picture, read by ffprobe.
fn picture(path: &Path) -> (String, u64, u64) {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,width,height",
        ])
        .args(["-of", "json"])
        .arg(path)
        .output()
        .expect("ffprobe");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let s = &v["streams"][0];
    (
        s["codec_name"].as_str().unwrap_or_default().to_owned(),
        s["width"].as_u64().unwrap_or(0),
        s["height"].as_u64().unwrap_or(0),
    )
}

/// A picture decoded by ffmpeg as RGB, scaled to 320×180 (averaging) if it is larger.
fn rgb_at_320(path: &Path) -> Vec<u8> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args([
            "-vf",
            "scale=320:180:flags=area",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-",
        ])
        .output()
        .expect("ffmpeg");
    assert!(
        out.status.success(),
        "ffmpeg: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

async fn decodes(gw: &Gateway) -> f64 {
    metric(
        &get(gw.api, "/metrics").await.text(),
        "video_server_snapshot_decodes_total",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_of_h264_and_h265_cameras_decode_at_their_size_and_scaled() {
    let cam = Camera::start(Auth::None);
    let gw = Gateway::start(&format!(
        "{}\n{}",
        rtsp_stream(STREAM_A, &cam.url("h264"), "\"mse\"", ""),
        rtsp_stream(STREAM_B, &cam.url("h265"), "\"mse\"", "")
    ))
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ffmpeg_decodes = || async {
        metric(
            &get(gw.api, "/metrics").await.text(),
            "video_server_snapshot_decodes_ffmpeg_total",
        )
    };
    for (id, codec) in [(STREAM_A, "h264"), (STREAM_B, "h265")] {
        let ffmpeg_before = ffmpeg_decodes().await;
        gw.wait_online(id, Duration::from_secs(20)).await;
        let before_ms = chrono::Utc::now().timestamp_millis();
        let r = get(gw.video, &format!("/snapshot/{id}.jpg")).await;
        assert_eq!(r.status, 200, "{codec}: {}", r.text());
        assert_eq!(r.header("content-type"), Some("image/jpeg"));
        assert_eq!(r.header("x-snapshot-live"), Some("true"));
        // The picture is of the keyframe held now: at most a GOP (2 s) and a bit old.
        let taken: i64 = r
            .header("x-snapshot-time")
            .and_then(|v| v.parse().ok())
            .expect("X-Snapshot-Time");
        assert!(
            before_ms - taken < 5_000,
            "{codec}: taken {taken}, asked {before_ms}"
        );
        assert!(r.header("last-modified").is_some());
        let path = dir.path().join(format!("{codec}.jpg"));
        std::fs::write(&path, &r.body).expect("write");
        assert_eq!(picture(&path), ("mjpeg".to_owned(), 1280, 720), "{codec}");

        let r = get(gw.video, &format!("/snapshot/{id}.jpg?width=321")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let small = dir.path().join(format!("{codec}-320.jpg"));
        std::fs::write(&small, &r.body).expect("write");
        assert_eq!(picture(&small), ("mjpeg".to_owned(), 320, 180), "{codec}");
        // The scaled picture is the full one, scaled: compared, pixel by pixel, with the
        // full-size picture of the same keyframe scaled by ffmpeg (same colours, same place).
        // Asked again in turn until both are of one keyframe (a new one every 2 s).
        let mut pair = None;
        for _ in 0..5 {
            let small_r = get(gw.video, &format!("/snapshot/{id}.jpg?width=321")).await;
            let full_r = get(gw.video, &format!("/snapshot/{id}.jpg")).await;
            let time = |r: &Resp| r.header("x-snapshot-time").map(str::to_owned);
            if time(&small_r).is_some() && time(&small_r) == time(&full_r) {
                pair = Some((small_r.body, full_r.body));
                break;
            }
        }
        let (small_body, full) = pair.expect("a scaled and a full picture of one keyframe");
        std::fs::write(&small, &small_body).expect("write");
        std::fs::write(&path, &full).expect("write");
        let (a, b) = (rgb_at_320(&path), rgb_at_320(&small));
        assert_eq!(a.len(), 320 * 180 * 3, "{codec}");
        assert_eq!(a.len(), b.len(), "{codec}");
        let diff = a
            .iter()
            .zip(&b)
            .map(|(x, y)| f64::from(x.abs_diff(*y)))
            .sum::<f64>()
            / a.len() as f64;
        eprintln!("{codec}: scaled against full size, mean difference {diff:.2} per value");
        assert!(diff < 6.0, "{codec}: mean difference {diff} per value");
        // H.264 is decoded in-process (OpenH264), H.265 by ffmpeg.
        let by_ffmpeg = ffmpeg_decodes().await - ffmpeg_before;
        let right = if codec == "h264" {
            by_ffmpeg == 0.0
        } else {
            by_ffmpeg >= 2.0
        };
        assert!(right, "{codec}: {by_ffmpeg} decodes by ffmpeg");
    }
    // Kept for a look: target/test-artifacts/snapshot-h264.jpg.
    let artifacts = repo().join("target/test-artifacts");
    let _ = std::fs::create_dir_all(&artifacts);
    let _ = std::fs::copy(
        dir.path().join("h264.jpg"),
        artifacts.join("snapshot-h264.jpg"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_requests_at_once_cost_one_decode() {
    let cam = Camera::start(Auth::None);
    let gw = Gateway::start(&rtsp_stream(STREAM_A, &cam.url("h264"), "\"mse\"", "")).await;
    gw.wait_online(STREAM_A, Duration::from_secs(20)).await;
    let before = decodes(&gw).await;
    let url = format!("http://{}/snapshot/{STREAM_A}.jpg", gw.video);
    let client = reqwest::Client::new();
    let answers = futures::future::join_all((0..100).map(|_| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let r = client.get(&url).send().await.expect("request");
            let status = r.status().as_u16();
            let time = r
                .headers()
                .get("x-snapshot-time")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            (status, time, r.bytes().await.expect("body"))
        }
    }))
    .await;
    assert!(answers.iter().all(|(s, _, _)| *s == 200));
    let after = decodes(&gw).await;
    // One keyframe, one decode; a second keyframe arriving meanwhile may cost one more.
    let keyframes: std::collections::BTreeSet<_> =
        answers.iter().filter_map(|(_, t, _)| t.clone()).collect();
    assert!(after - before >= 1.0, "no decode counted");
    assert!(
        after - before <= keyframes.len() as f64,
        "{} decodes for {} keyframes",
        after - before,
        keyframes.len()
    );
    assert!(keyframes.len() <= 2, "{keyframes:?}");
    // Answers for one keyframe are the same picture.
    for t in &keyframes {
        let mut bodies = answers
            .iter()
            .filter(|(_, tt, _)| tt.as_ref() == Some(t))
            .map(|(_, _, b)| b);
        let first = bodies.next().expect("one");
        assert!(bodies.all(|b| b == first));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_camera_gives_its_last_picture_and_a_camera_never_seen_a_503() {
    let mut cam = Camera::start(Auth::None);
    let never = format!("rtsp://127.0.0.1:{}/nobody", free_port());
    let gw = Gateway::start(&format!(
        "{}\n{}",
        rtsp_stream(STREAM_A, &cam.url("h264"), "\"mse\"", ""),
        rtsp_stream(STREAM_B, &never, "\"mse\"", "")
    ))
    .await;
    gw.wait_online(STREAM_A, Duration::from_secs(20)).await;
    let live = get(gw.video, &format!("/snapshot/{STREAM_A}.jpg")).await;
    assert_eq!(live.status, 200);
    cam.kill();
    wait_for(Duration::from_secs(30), "the camera offline", || async {
        (gw.status().await["streams"][STREAM_A]["online"] == false).then_some(())
    })
    .await;
    let last = get(gw.video, &format!("/snapshot/{STREAM_A}.jpg")).await;
    assert_eq!(last.status, 200, "{}", last.text());
    assert_eq!(last.header("x-snapshot-live"), Some("false"));
    let (t_live, t_last) = (
        live.header("x-snapshot-time").unwrap_or("a"),
        last.header("x-snapshot-time").unwrap_or("b"),
    );
    assert!(t_last >= t_live, "{t_last} < {t_live}");
    // A size never made while it was online: nothing to show.
    let r = get(gw.video, &format!("/snapshot/{STREAM_A}.jpg?width=200")).await;
    assert_eq!(r.status, 503);

    let r = get(gw.video, &format!("/snapshot/{STREAM_B}.jpg")).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.json()["error"]
        .as_str()
        .unwrap_or_default()
        .contains("no picture yet"));
    assert!(r.header("retry-after").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_on_demand_camera_is_woken_and_bad_requests_get_a_reason() {
    let cam = Camera::start(Auth::None);
    let gw = Gateway::start(&format!(
        "[on_demand]\nidle_ms = 5000\n\n{}\n{}",
        rtsp_stream(STREAM_A, &cam.url("h264"), "\"mse\"", "on_demand = true"),
        rtsp_stream(STREAM_B, &cam.url("aac"), "\"mse\"", "")
    ))
    .await;
    assert_eq!(gw.status().await["streams"][STREAM_A]["online"], false);
    let r = get(gw.video, &format!("/snapshot/{STREAM_A}.jpg")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("image/jpeg"));

    for (path, status) in [
        (format!("/snapshot/{STREAM_A}.jpg?width=5"), 400),
        (format!("/snapshot/{STREAM_A}.jpg?width=wide"), 400),
        (format!("/snapshot/{STREAM_A}.png"), 404),
        (
            "/snapshot/00000000-0000-4000-8000-000000000000.jpg".to_owned(),
            404,
        ),
    ] {
        let r = get(gw.video, &path).await;
        assert_eq!(r.status, status, "{path}: {}", r.text());
        assert!(r.json().is_object(), "{path}: a JSON reason");
    }
    // An audio-only camera has no picture to give, and says so.
    gw.wait_online(STREAM_B, Duration::from_secs(20)).await;
    let r = get(gw.video, &format!("/snapshot/{STREAM_B}.jpg")).await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.json()["error"]
        .as_str()
        .unwrap_or_default()
        .contains("no video"));
}
