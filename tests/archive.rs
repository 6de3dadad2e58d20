//! The archive against real parts: a GStreamer camera, the real binary, a real S3 server
//! (s3s-fs) and ffprobe/ffmpeg as independent checkers of every file, object, clip, playlist
//! and websocket playback.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::s3_server::S3Server;
use common::{
    archive_segments as segments, collect, get, http, probe, rtsp_stream,
    wait_archive_segments as wait_segments, wait_for, ws_connect, Auth, Camera, Capture, Gateway,
    STREAM_A, STREAM_B,
};

const BUCKET: &str = "archive-bucket";

/// `[archive]` with recording on, `ms_per_file` as given, optionally S3 settings.
fn archive_section(dir: &Path, ms_per_file: u64, s3: Option<&S3Server>) -> String {
    let minio = s3
        .map(|s| s.minio_settings(BUCKET, "/var/archive_data"))
        .unwrap_or_default();
    format!(
        "[archive]\nrecording = true\nserving = true\ndirectory = \"{}\"\nms_per_file = {ms_per_file}\n{minio}\n",
        dir.display()
    )
}

fn stream_with_archive(id: &str, url: &str, kind: &str, dir: &Path, ms_per_file: u64) -> String {
    rtsp_stream(
        id,
        url,
        "\"mse\"",
        &format!(
            "archive = {{ recording = true, type = \"{kind}\", directory = \"{}\", ms_per_file = {ms_per_file} }}",
            dir.display()
        ),
    )
}

fn seconds(ms: i64) -> String {
    format!("{:.3}", ms as f64 / 1000.0)
}

/// Duration in seconds and frame count of the video in `path`, by ffprobe.
fn video_duration(path: &Path) -> (f64, u64) {
    let out = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args([
            "-show_entries",
            "stream=duration,nb_read_frames",
            "-of",
            "json",
        ])
        .arg(path)
        .output()
        .expect("ffprobe");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ffprobe json");
    let s = &v["streams"][0];
    (
        s["duration"]
            .as_str()
            .and_then(|d| d.parse().ok())
            .unwrap_or(0.0),
        s["nb_read_frames"]
            .as_str()
            .and_then(|d| d.parse().ok())
            .unwrap_or(0),
    )
}

/// Presentation times of the video packets in `path`, seconds, by ffprobe.
fn video_pts(path: &Path) -> Vec<f64> {
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "packet=pts_time",
        ])
        .args(["-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("ffprobe");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse().ok())
        .collect()
}

/// Plays `/ws/archive` to the end and returns what arrived.
async fn ws_archive(gw: &Gateway, query: &str) -> Capture {
    let mut ws = ws_connect(&format!("ws://{}/ws/archive?{query}", gw.video)).await;
    let mut cap = Capture::default();
    collect(&mut ws, &mut cap, usize::MAX, Duration::from_secs(60)).await;
    cap
}

/// Stream A (AAC audio) recorded to `files` and stream B (G.711 audio, recorded as FLAC) to
/// the bucket through `spool`, 4 s files; returns once each has `n` closed files (B's
/// uploaded), with both listings.
async fn recording(
    cam: &Camera,
    s3: &S3Server,
    files: &Path,
    spool: &Path,
    n: usize,
) -> (Gateway, serde_json::Value, serde_json::Value) {
    let gw = Gateway::start(&format!(
        "{}\n{}\n{}",
        archive_section(files, 4000, Some(s3)),
        stream_with_archive(STREAM_A, &cam.url("h264aac"), "filesystem", files, 4000),
        stream_with_archive(STREAM_B, &cam.url("h264pcma"), "minio", spool, 4000),
    ))
    .await;
    let a = wait_segments(&gw, STREAM_A, n, false, Duration::from_secs(60)).await;
    let b = wait_segments(&gw, STREAM_B, n, true, Duration::from_secs(60)).await;
    (gw, a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_files_have_the_originals_names_real_durations_and_no_gaps() {
    let cam = Camera::start(Auth::None);
    let s3 = S3Server::start();
    let (files, spool) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let (gw, a, _) = recording(&cam, &s3, files.path(), spool.path(), 3).await;
    // Files: the original's names, each one decodes, and the index's duration is the real one.
    let segs = a["segments"].as_array().expect("segments").clone();
    for s in &segs {
        let name = s["file"].as_str().expect("file");
        let (id, secs) = name
            .strip_suffix(".mp4")
            .and_then(|n| n.rsplit_once('_'))
            .expect("<uuid>_<unix>.mp4");
        assert_eq!(id, STREAM_A);
        assert_eq!(
            secs.parse::<i64>().expect("unix seconds"),
            s["start_ms"].as_i64().expect("start") / 1000
        );
        let path = files.path().join(name);
        let p = probe(&path);
        assert!(p.decode_errors.is_empty(), "{name}: {}", p.decode_errors);
        assert_eq!(p.video_codec.as_deref(), Some("h264"));
        assert_eq!(p.audio_codec.as_deref(), Some("aac"));
        let (dur, frames) = video_duration(&path);
        let indexed = s["duration_ms"].as_f64().expect("duration") / 1000.0;
        assert!(
            (dur - indexed).abs() <= 0.041,
            "{name}: ffprobe {dur} s, index {indexed} s"
        );
        assert!(frames >= 25, "{name}: {frames} frames");
    }
    // Consecutive files follow each other without a gap.
    for w in segs.windows(2) {
        let end =
            w[0]["start_ms"].as_i64().expect("start") + w[0]["duration_ms"].as_i64().expect("d");
        assert!(
            (w[1]["start_ms"].as_i64().expect("start") - end).abs() <= 40,
            "{w:?}"
        );
    }
    assert_eq!(a["gaps"].as_array().map(Vec::len), Some(0), "{a}");

    // Ranges: the original's shape, one range covering the files.
    for id in [STREAM_A] {
        let r = get(gw.api, &format!("/archive/{id}/ranges")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        assert_eq!(v["stream_id"], id);
        assert_eq!(v["ranges"].as_array().map(Vec::len), Some(1), "{v}");
    }

    drop(gw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_files_are_uploaded_whole_and_play_back_with_their_flac_audio() {
    let cam = Camera::start(Auth::None);
    let s3 = S3Server::start();
    let (files, spool) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let (gw, _, b) = recording(&cam, &s3, files.path(), spool.path(), 3).await;
    // S3: every segment is an object under the prefix (no leading slash), as big as indexed,
    // decodable, and the spool is empty of closed files.
    let objects = s3.objects(BUCKET, "var/archive_data");
    for s in b["segments"].as_array().expect("segments") {
        let name = s["file"].as_str().expect("file");
        let size = s["bytes"].as_u64().expect("bytes");
        assert!(
            objects.contains(&(name.to_owned(), size)),
            "{name} ({size} B) not in {objects:?}"
        );
        let p = probe(&s3.object_path(BUCKET, &format!("var/archive_data/{name}")));
        assert!(p.decode_errors.is_empty(), "{name}: {}", p.decode_errors);
        assert_eq!(p.audio_codec.as_deref(), Some("flac"), "{name}");
        assert!(p.audio_frames > 0, "{name}");
        assert!(
            !spool.path().join(name).exists(),
            "{name} still in the spool"
        );
    }

    // Ranges: the original's shape, one range covering the files.
    for id in [STREAM_B] {
        let r = get(gw.api, &format!("/archive/{id}/ranges")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        assert_eq!(v["stream_id"], id);
        assert_eq!(v["ranges"].as_array().map(Vec::len), Some(1), "{v}");
    }

    // The same from S3.
    let b_first = b["segments"][0]["start_ms"].as_i64().expect("start");
    let s3_clip = get(
        gw.video,
        &format!(
            "/archive/{STREAM_B}/clip.mp4?start={}&end={}",
            seconds(b_first + 1_500),
            seconds(b_first + 7_500)
        ),
    )
    .await;
    assert_eq!(s3_clip.status, 200, "{}", s3_clip.text());
    let s3_path = files.path().join("s3-clip.mp4");
    std::fs::write(&s3_path, &s3_clip.body).expect("write clip");
    let p = probe(&s3_path);
    assert!(p.decode_errors.is_empty(), "S3 clip: {}", p.decode_errors);
    assert_eq!(p.audio_codec.as_deref(), Some("flac"));
    let (dur, _) = video_duration(&s3_path);
    assert!((dur - 6.0).abs() <= 0.045, "S3 clip lasts {dur} s, not 6 s");

    // /metrics counts the S3 calls: a put and a head per uploaded file at least, and the
    // gets the clip needed.
    let m = get(gw.api, "/metrics").await.text();
    let calls = |op: &str| -> f64 {
        m.lines()
            .find(|l| l.starts_with(&format!("video_server_archive_s3_calls_total{{op=\"{op}\"")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let uploaded = b["segments"].as_array().map_or(0, Vec::len) as f64;
    assert!(calls("put") >= uploaded && calls("head") >= uploaded, "{m}");
    assert!(calls("get") >= 1.0 && calls("list") >= 1.0, "{m}");
}

/// Thumbnails every 2 s of recording, on disk and in the bucket: listed in time order, each a
/// 320-wide JPEG that ffprobe reads, stored beside the files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thumbnails_of_the_recording_are_listed_and_served_from_disk_and_s3() {
    let cam = Camera::start(Auth::None);
    let s3 = S3Server::start();
    let (files, spool) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let gw = Gateway::start(&format!(
        "{}thumbnail_interval_ms = 2000\n\n{}\n{}",
        archive_section(files.path(), 4000, Some(&s3)),
        stream_with_archive(STREAM_A, &cam.url("h264"), "filesystem", files.path(), 4000),
        stream_with_archive(STREAM_B, &cam.url("h265"), "minio", spool.path(), 4000),
    ))
    .await;
    for id in [STREAM_A, STREAM_B] {
        let list = wait_for(Duration::from_secs(40), "three thumbnails", || async {
            let v = get(gw.api, &format!("/archive/{id}/thumbnails"))
                .await
                .json();
            let l = v["thumbnails"].as_array().cloned().unwrap_or_default();
            (l.len() >= 3).then_some(l)
        })
        .await;
        let times: Vec<i64> = list.iter().filter_map(|t| t["time_ms"].as_i64()).collect();
        // The second comes after half to all of the interval (streams spread their
        // decodes), every later one a whole interval after the one before.
        assert!(
            times
                .windows(2)
                .enumerate()
                .all(|(i, w)| w[1] - w[0] >= if i == 0 { 1000 } else { 2000 }),
            "the second 1 s after the first at the soonest, then one every 2 s at most: {times:?}"
        );
        for t in &list[..3] {
            let url = t["url"].as_str().expect("url");
            let r = get(gw.video, url).await;
            assert_eq!(r.status, 200, "{url}: {}", r.text());
            assert_eq!(r.header("content-type"), Some("image/jpeg"));
            let path = files.path().join("probe.jpg");
            std::fs::write(&path, &r.body).expect("write");
            let out = std::process::Command::new("ffprobe")
                .args([
                    "-v",
                    "error",
                    "-show_entries",
                    "stream=codec_name,width,height",
                ])
                .args(["-of", "csv=p=0"])
                .arg(&path)
                .output()
                .expect("ffprobe");
            assert_eq!(
                String::from_utf8_lossy(&out.stdout).trim(),
                "mjpeg,320,180",
                "{url}"
            );
        }
        // A window picks some of them.
        let from = seconds(times[1]);
        let v = get(gw.api, &format!("/archive/{id}/thumbnails?start={from}"))
            .await
            .json();
        assert_eq!(
            v["thumbnails"][0]["time_ms"].as_i64(),
            Some(times[1]),
            "{v}"
        );
    }
    // Stored beside the files: on disk, and under the bucket prefix.
    let on_disk = std::fs::read_dir(files.path().join("thumbs"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(STREAM_A))
                .count()
        })
        .unwrap_or(0);
    assert!(on_disk >= 3, "{on_disk} thumbnails on disk");
    let in_bucket = s3
        .objects(BUCKET, "var/archive_data/thumbs")
        .iter()
        .filter(|(name, _)| name.starts_with(STREAM_B))
        .count();
    assert!(in_bucket >= 3, "{in_bucket} thumbnails in the bucket");
    let r = get(gw.video, &format!("/archive/{STREAM_A}/thumbnails/1.jpg")).await;
    assert_eq!(r.status, 404);
    assert!(r.json()["error"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_being_written_is_listed_as_growing_and_playable_so_far() {
    let cam = Camera::start(Auth::None);
    let s3 = S3Server::start();
    let (files, spool) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let (gw, _, _) = recording(&cam, &s3, files.path(), spool.path(), 1).await;
    // The file being written is listed as growing, and playable as far as it is written.
    // (Right after a cut the new file has no whole fragment yet and is not listed: retry.)
    let deadline = Instant::now() + Duration::from_secs(10);
    let growing = loop {
        let all = get(gw.api, &format!("/archive/{STREAM_A}/segments"))
            .await
            .json();
        if let Some(g) = all["segments"]
            .as_array()
            .and_then(|v| v.iter().find(|s| s["growing"] == true))
        {
            break g.clone();
        }
        assert!(Instant::now() < deadline, "no growing segment in {all}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let g_name = growing["file"].as_str().expect("file").to_owned();
    let r = get(gw.video, &format!("/archive/{STREAM_A}/files/{g_name}")).await;
    assert_eq!(r.status, 200);
    let g_path = files.path().join("growing.mp4");
    std::fs::write(&g_path, &r.body).expect("write");
    let p = probe(&g_path);
    assert!(p.decode_errors.is_empty(), "{g_name}: {}", p.decode_errors);
    assert!(p.video_frames > 0, "{g_name}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clip_starts_at_start_serves_any_byte_range_and_seeks() {
    let cam = Camera::start(Auth::None);
    let s3 = S3Server::start();
    let (files, spool) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let (gw, a, _) = recording(&cam, &s3, files.path(), spool.path(), 2).await;
    let segs = a["segments"].as_array().expect("segments").clone();
    // A clip across two files, starting between keyframes: its length is the window's.
    let first = segs[0]["start_ms"].as_i64().expect("start");
    let (start, end) = (first + 1_500, first + 7_500);
    let clip_path = format!(
        "/archive/{STREAM_A}/clip.mp4?start={}&end={}",
        seconds(start),
        seconds(end)
    );
    let r = get(gw.video, &clip_path).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("video/mp4"));
    assert!(r
        .header("content-disposition")
        .is_some_and(|d| d.contains("attachment")));
    let etag = r.header("etag").expect("etag").to_owned();
    let clip = files.path().join("clip.mp4");
    std::fs::write(&clip, &r.body).expect("write clip");
    let p = probe(&clip);
    assert!(p.decode_errors.is_empty(), "clip: {}", p.decode_errors);
    let (dur, _) = video_duration(&clip);
    // The first frame shown is the one at `start`: the 1.5 s of the GOP before it (37 or 38
    // frames at 25 fps) are there for the decoder but squeezed into the first millisecond.
    let lead_in = video_pts(&clip).iter().filter(|&&t| t < 0.02).count();
    assert!(
        (37..=39).contains(&lead_in),
        "{lead_in} frames before the first shown"
    );
    // 6 s, plus the lead-in frames squeezed to one tick each (under a millisecond).
    assert!((dur - 6.0).abs() <= 0.045, "clip lasts {dur} s, not 6 s");
    // Seekable: a range gets 206, and the same ETag means 304.
    let part = http(
        gw.video,
        "GET",
        &clip_path,
        &[("Range", "bytes=100-1099")],
        b"",
    )
    .await
    .expect("range");
    assert_eq!(part.status, 206);
    assert_eq!(part.body.len(), 1000);
    assert_eq!(&part.body[..], &r.body[100..1100]);
    let again = http(
        gw.video,
        "GET",
        &clip_path,
        &[("If-None-Match", &etag)],
        b"",
    )
    .await
    .expect("304");
    assert_eq!(again.status, 304);
    // The clip is sent in pieces read from the archive files as the range reaches them: any
    // range, including one across the two files, is the same bytes as the whole clip.
    let n = r.body.len();
    assert_eq!(r.header("content-length"), Some(n.to_string().as_str()));
    for (spec, from, to) in [
        (
            format!("bytes={}-{}", n / 3, 2 * n / 3),
            n / 3,
            2 * n / 3 + 1,
        ),
        (format!("bytes={}-", n - 5000), n - 5000, n),
        ("bytes=-700".to_owned(), n - 700, n),
    ] {
        let part = http(gw.video, "GET", &clip_path, &[("Range", &spec)], b"")
            .await
            .expect("range");
        assert_eq!(part.status, 206, "{spec}");
        assert!(part.body[..] == r.body[from..to], "{spec}: other bytes");
    }
    let seek = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-ss", "4", "-i"])
        .arg(&clip)
        .args(["-frames:v", "1", "-f", "null", "-"])
        .output()
        .expect("ffmpeg");
    assert!(
        seek.status.success() && seek.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&seek.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vod_playlists_and_ws_archive_play_from_disk_and_from_s3() {
    let cam = Camera::start(Auth::None);
    let s3 = S3Server::start();
    let (files, spool) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let (gw, a, b) = recording(&cam, &s3, files.path(), spool.path(), 3).await;
    // The VOD playlist plays in ffmpeg, from disk and from S3.
    for id in [STREAM_A, STREAM_B] {
        let out = files.path().join(format!("vod-{id}.mp4"));
        let status = std::process::Command::new("timeout")
            .arg("60")
            .arg("ffmpeg")
            .args(["-v", "error", "-i"])
            .arg(format!("http://{}/archive/{id}/playlist.m3u8", gw.video))
            // B's audio is FLAC, which Debian's ffmpeg 5.1 only writes into MP4 when told
            // that experimental is fine (reading it needs nothing).
            .args(["-c", "copy", "-strict", "-2", "-y"])
            .arg(&out)
            .status()
            .expect("ffmpeg");
        assert!(status.success(), "playlist of {id} did not play");
        let (dur, _) = video_duration(&out);
        assert!(dur >= 8.0, "{id}: VOD lasts {dur} s");
    }

    // /ws/archive from disk and from S3: 0x09 + codecs, init, fragments ffprobe decodes, eos.
    for (id, listing) in [(STREAM_A, &a), (STREAM_B, &b)] {
        let first = listing["segments"][0]["start_ms"].as_i64().expect("start");
        let cap = ws_archive(
            &gw,
            &format!("stream_id={id}&start={}&duration=6", seconds(first + 1000)),
        )
        .await;
        assert_eq!(cap.codecs.len(), 1, "{:?}", cap.texts);
        let audio = if id == STREAM_A { "mp4a.40.2" } else { "flac" };
        assert!(
            cap.codecs[0].starts_with("avc1.") && cap.codecs[0].ends_with(audio),
            "{:?}",
            cap.codecs
        );
        assert!(
            cap.texts.iter().any(|t| t == "eos"),
            "no eos: {:?} {:?}",
            cap.texts,
            cap.close
        );
        let out = files.path().join(format!("ws-{id}.mp4"));
        cap.write(&out);
        let p = probe(&out);
        assert!(p.decode_errors.is_empty(), "{id}: {}", p.decode_errors);
        let (dur, _) = video_duration(&out);
        assert!(
            (dur - 6.0).abs() <= 0.045,
            "{id}: playback lasts {dur} s, not 6 s"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_gateway_loses_at_most_a_fragment_and_every_file_stays_playable() {
    let cam = Camera::start(Auth::None);
    let files = tempfile::tempdir().expect("tempdir");
    let conf = format!(
        "{}\n{}",
        archive_section(files.path(), 4000, None),
        stream_with_archive(STREAM_A, &cam.url("h264"), "filesystem", files.path(), 4000),
    );
    let mut gw = Gateway::start(&conf).await;
    wait_segments(&gw, STREAM_A, 1, false, Duration::from_secs(60)).await;
    // Kill 2.5 s into a file (files are cut every 4 s).
    let deadline = Instant::now() + Duration::from_secs(30);
    let kill_ms = loop {
        let s = segments(&gw, STREAM_A).await;
        let last = s["segments"]
            .as_array()
            .and_then(|v| v.last())
            .cloned()
            .expect("segment");
        let open_since =
            last["start_ms"].as_i64().expect("start") + last["duration_ms"].as_i64().expect("d");
        let now = common::unix_ms();
        if now - open_since >= 2_500 && now - open_since < 3_500 {
            gw.kill();
            break now;
        }
        assert!(Instant::now() < deadline, "no point to kill at");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let parts: Vec<String> = std::fs::read_dir(files.path())
        .expect("dir")
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(".part"))
        .collect();
    assert_eq!(parts.len(), 1, "one file was being written: {parts:?}");

    // Restart on the same directory: the file is repaired and indexed.
    drop(gw);
    let gw2 = Gateway::start(&conf).await;
    // The repaired file, and a first file of the new run (so the gap between them shows).
    let s = wait_segments(&gw2, STREAM_A, 3, false, Duration::from_secs(30)).await;
    let crashed = s["segments"]
        .as_array()
        .expect("segments")
        .iter()
        .find(|g| g["end_reason"] == "server_crashed")
        .cloned()
        .unwrap_or_else(|| panic!("no repaired segment in {s}\n{}", gw2.log()));
    let end =
        crashed["start_ms"].as_i64().expect("start") + crashed["duration_ms"].as_i64().expect("d");
    // At most the fragment being built (1 s) plus the frames in flight are lost.
    assert!(kill_ms - end <= 1_500, "lost {} ms", kill_ms - end);
    for entry in std::fs::read_dir(files.path()).expect("dir").flatten() {
        let name = entry.file_name().into_string().expect("utf-8");
        if name.ends_with(".mp4") && name.starts_with(STREAM_A) {
            let p = probe(&entry.path());
            assert!(p.decode_errors.is_empty(), "{name}: {}", p.decode_errors);
            assert!(p.video_frames > 0, "{name}");
        }
    }
    // The gap between the runs is there, with its cause.
    let gaps = s["gaps"].as_array().expect("gaps");
    assert!(gaps.iter().any(|g| g["cause"] == "server_crashed"), "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_outage_and_a_camera_outage_lose_nothing_and_show_as_they_happened() {
    let mut cam = Camera::start(Auth::None);
    let mut s3 = S3Server::start();
    let spool = tempfile::tempdir().expect("tempdir");
    let conf = format!(
        "{}\n{}",
        archive_section(spool.path(), 3000, Some(&s3)),
        stream_with_archive(STREAM_B, &cam.url("h264"), "minio", spool.path(), 3000),
    );
    let gw = Gateway::start(&conf).await;
    wait_segments(&gw, STREAM_B, 1, true, Duration::from_secs(60)).await;

    // S3 down: files pile up in the spool; the camera stops for a while too.
    s3.stop();
    let before = segments(&gw, STREAM_B).await["segments"]
        .as_array()
        .map_or(0, Vec::len);
    wait_segments(&gw, STREAM_B, before + 2, false, Duration::from_secs(30)).await;
    cam.kill();
    tokio::time::sleep(Duration::from_secs(8)).await;
    cam.restart();
    s3.restart();
    let s = wait_segments(&gw, STREAM_B, before + 4, true, Duration::from_secs(90)).await;

    // Every indexed segment is in the bucket with its size; the spool holds no closed file.
    let objects = s3.objects(BUCKET, "var/archive_data");
    for seg in s["segments"].as_array().expect("segments") {
        let name = seg["file"].as_str().expect("file");
        assert!(
            objects.contains(&(name.to_owned(), seg["bytes"].as_u64().expect("bytes"))),
            "{name} missing from {objects:?}"
        );
    }
    let leftover: Vec<String> = std::fs::read_dir(spool.path())
        .expect("spool")
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(".mp4"))
        .collect();
    assert!(
        leftover.is_empty(),
        "closed files left in the spool: {leftover:?}"
    );

    // The camera's outage is a real gap (not bridged), with its cause; ranges say two runs.
    let gap = s["gaps"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["cause"] == "camera_offline"))
        .cloned()
        .unwrap_or_else(|| panic!("no camera gap in {s}"));
    let gap_ms = gap["duration_ms"].as_i64().expect("duration");
    assert!(
        (6_000..30_000).contains(&gap_ms),
        "gap of {gap_ms} ms for an 8 s outage"
    );
    let r = get(gw.api, &format!("/archive/{STREAM_B}/ranges"))
        .await
        .json();
    assert_eq!(r["ranges"].as_array().map(Vec::len), Some(2), "{r}");

    // Playback from S3 across the gap: collapsed by default, announced with events=1.
    let first = s["segments"][0]["start_ms"].as_i64().expect("start");
    let cap = ws_archive(
        &gw,
        &format!("stream_id={STREAM_B}&start={}&events=1", seconds(first)),
    )
    .await;
    assert!(
        cap.texts.iter().any(|t| t.contains("\"gap\"")),
        "{:?}",
        cap.texts
    );
    assert_eq!(cap.texts.last().map(String::as_str), Some("eos"));

    // S3 down again and the gateway killed with files in the spool: the next run uploads them.
    s3.stop();
    let before = s["segments"].as_array().map_or(0, Vec::len);
    wait_segments(&gw, STREAM_B, before + 2, false, Duration::from_secs(30)).await;
    let _ = std::process::Command::new("kill")
        .args(["-9", &gw.pid().to_string()])
        .status();
    drop(gw);
    let spooled = std::fs::read_dir(spool.path())
        .expect("spool")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".mp4"))
        .count();
    assert!(spooled >= 2, "{spooled} files waiting in the spool");
    s3.restart();
    let gw = Gateway::start(&conf).await;
    let s = wait_segments(&gw, STREAM_B, before + 3, true, Duration::from_secs(60)).await;
    let objects = s3.objects(BUCKET, "var/archive_data");
    for seg in s["segments"].as_array().expect("segments") {
        let name = seg["file"].as_str().expect("file");
        assert!(
            objects.iter().any(|(n, _)| n == name),
            "{name} never uploaded"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_archive_requests_get_the_originals_errors() {
    let files = tempfile::tempdir().expect("tempdir");
    // Serving off, nothing recorded: the original's 404 reason.
    let gw = Gateway::start("").await;
    let r = get(gw.api, &format!("/archive/{STREAM_A}/ranges")).await;
    assert_eq!(r.status, 404);
    assert_eq!(
        r.json()["error"],
        "archive not available: archive serving not enabled globally"
    );
    drop(gw);

    let gw = Gateway::start(&format!(
        "[archive]\nserving = true\ndirectory = \"{}\"\n",
        files.path().display()
    ))
    .await;
    let get = |path: String| {
        let addr = gw.api;
        async move { get(addr, &path).await }
    };
    let r = get("/archive/not-a-uuid/ranges".into()).await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (400, "invalid stream_id".into())
    );
    let r = get(format!("/archive/{STREAM_A}/ranges")).await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (404, "no archive segments found".into())
    );
    let r = get(format!("/archive/{STREAM_A}/clip.mp4")).await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]
        .as_str()
        .is_some_and(|e| e.contains("start")));
    let r = get(format!("/archive/{STREAM_A}/clip.mp4?start=10&end=5")).await;
    assert_eq!(r.status, 400);
    let r = get(format!("/archive/{STREAM_A}/clip.mp4?start=10&end=20")).await;
    assert_eq!(r.status, 404);
    let r = get(format!("/archive/{STREAM_A}/files/..%2Fconf.toml")).await;
    assert_eq!(r.status, 404);
    // Absurd times are refused, not overflowed.
    let r = get(format!(
        "/archive/{STREAM_A}/clip.mp4?start=-1e300&end=1e300"
    ))
    .await;
    assert_eq!(r.status, 400);
    let r = get(format!(
        "/archive/{STREAM_A}/segments?start=-1e300&end=1e300"
    ))
    .await;
    assert!(r.status == 200 || r.status == 404, "{}", r.status);

    for (query, reason) in [
        ("stream_id=nope&start=1".to_owned(), "Invalid stream_id"),
        (
            format!("stream_id={STREAM_A}&start=yesterday"),
            "Invalid start time (use Unix timestamp)",
        ),
        (
            format!("stream_id={STREAM_A}&start=1"),
            "No segments found for this time range",
        ),
        (
            format!("stream_id={STREAM_A}&start=1e300&duration=1e300"),
            "No segments found for this time range",
        ),
    ] {
        let cap = ws_archive(&gw, &query).await;
        assert_eq!(cap.close, Some((1011, reason.to_owned())), "{query}");
    }
}

/// A progressive MP4 (moov at the end, as the original's muxer writes) of `secs` seconds,
/// named as the original names archive files, in `dir`; returns its start, Unix seconds.
fn original_archive_file(dir: &Path, id: &str, start_s: i64, secs: u32) -> i64 {
    let out = dir.join(format!("{id}_{start_s}.mp4"));
    let status = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-stream_loop", "-1", "-i"])
        .arg(common::media_dir().join("small.mp4"))
        .args(["-t", &secs.to_string(), "-c", "copy", "-f", "mp4"])
        .arg(&out)
        .status()
        .expect("ffmpeg");
    assert!(status.success(), "ffmpeg could not write {}", out.display());
    start_s
}

/// Reads messages until a text one arrives (or `within` passes); counts binary fragments.
async fn until_text(ws: &mut common::Ws, within: Duration) -> (Option<String>, usize) {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let deadline = tokio::time::Instant::now() + within;
    let mut fragments = 0;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return (Some(t.to_string()), fragments),
            Ok(Some(Ok(Message::Binary(b)))) if common::is_box(&b, b"moof") => fragments += 1,
            Ok(Some(Ok(_))) => {}
            _ => return (None, fragments),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_originals_files_are_listed_and_played_with_pause_more_and_seek() {
    let dir = tempfile::tempdir().expect("tempdir");
    let start = original_archive_file(dir.path(), STREAM_A, 1_700_000_000, 330);
    // The original assumes every file lasts `ms_per_file`; so do we for files we did not write.
    let gw = Gateway::start(&format!(
        "[archive]\nserving = true\ndirectory = \"{}\"\nms_per_file = 330000\n",
        dir.path().display()
    ))
    .await;
    let r = get(gw.api, &format!("/archive/{STREAM_A}/ranges")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let ranges = r.json()["ranges"].clone();
    assert_eq!(ranges.as_array().map(Vec::len), Some(1), "{ranges}");

    // 330 s of media: `pause` after 5 minutes, nothing more until `more`, then `eos`.
    let mut ws = ws_connect(&format!(
        "ws://{}/ws/archive?stream_id={STREAM_A}&start={start}",
        gw.video
    ))
    .await;
    let (text, before_pause) = until_text(&mut ws, Duration::from_secs(60)).await;
    assert_eq!(
        text.as_deref(),
        Some("pause"),
        "after {before_pause} fragments"
    );
    let (quiet, sent_while_paused) = until_text(&mut ws, Duration::from_millis(1500)).await;
    assert_eq!((quiet, sent_while_paused), (None, 0), "sent while paused");
    common::ws_text(&mut ws, "ping").await;
    let (pong, _) = until_text(&mut ws, Duration::from_secs(5)).await;
    assert_eq!(pong.as_deref(), Some("pong"));
    common::ws_text(&mut ws, "more").await;
    let (end, after_pause) = until_text(&mut ws, Duration::from_secs(60)).await;
    assert_eq!(end.as_deref(), Some("eos"));
    // 2 fragments per second of media: 300 s before the pause, 30 s after.
    assert!(
        (590..=610).contains(&before_pause),
        "{before_pause} fragments before the pause"
    );
    assert!(
        (55..=65).contains(&after_pause),
        "{after_pause} fragments after it"
    );

    // Seek (paced at recording speed, so there is time to): the media timeline continues,
    // and the next fragment starts at a keyframe.
    let mut ws = ws_connect(&format!(
        "ws://{}/ws/archive?stream_id={STREAM_A}&start={}&duration=20&events=1&realtime=1",
        gw.video,
        start + 10
    ))
    .await;
    let mut cap = Capture::default();
    collect(&mut ws, &mut cap, 6, Duration::from_secs(20)).await;
    let last_before = cap
        .media
        .iter()
        .filter_map(|m| common::fragment_info(m))
        .map(|(_, t, _)| t)
        .max()
        .expect("fragments");
    common::ws_text(
        &mut ws,
        &format!("{{\"type\":\"seek\",\"t\":{}}}", start + 200),
    )
    .await;
    let (seeked, _) = until_text(&mut ws, Duration::from_secs(10)).await;
    assert!(
        seeked.as_deref().is_some_and(|t| t.contains("seeked")),
        "{seeked:?}"
    );
    let mut after = Capture::default();
    collect(&mut ws, &mut after, 2, Duration::from_secs(10)).await;
    let (_, t, key) = after
        .media
        .iter()
        .find_map(|m| common::fragment_info(m))
        .expect("a fragment after the seek");
    assert!(key, "the first fragment after a seek starts at a keyframe");
    assert!(
        t > last_before,
        "the timeline went back: {t} <= {last_before}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_the_oldest_files_and_live_viewers_do_not_notice() {
    let cam = Camera::start(Auth::None);
    let files = tempfile::tempdir().expect("tempdir");
    // Files of about 2 s at ~2 Mbit/s are ~500 kB: keep at most ~3 of them.
    let stream = rtsp_stream(
        STREAM_A,
        &cam.url("h264"),
        "\"mse\"",
        &format!(
            "archive = {{ recording = true, type = \"filesystem\", directory = \"{}\", ms_per_file = 2000, max_bytes = \"1.6MB\" }}",
            files.path().display()
        ),
    );
    let gw = Gateway::start(&format!(
        "{}thumbnail_interval_ms = 1000\n\n{stream}",
        archive_section(files.path(), 2000, None)
    ))
    .await;
    let mut ws = ws_connect(&gw.ws_url(STREAM_A, "")).await;
    let mut cap = Capture::default();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let want = cap.fragments() + 25;
        collect(&mut ws, &mut cap, want, Duration::from_secs(5)).await;
        let s = segments(&gw, STREAM_A).await;
        if s["recorder"]["deleted_files"].as_u64().unwrap_or(0) >= 2 {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "nothing deleted: {s}\n{}",
            gw.log()
        );
    };
    let kept: u64 = status["segments"]
        .as_array()
        .expect("segments")
        .iter()
        .map(|s| s["bytes"].as_u64().unwrap_or(0))
        .sum();
    assert!(kept <= 1_600_000, "{kept} bytes kept");
    // What the index lists is what is on disk, and the deleted files are gone from both.
    let on_disk: Vec<String> = std::fs::read_dir(files.path())
        .expect("dir")
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(".mp4"))
        .collect();
    for s in status["segments"].as_array().expect("segments") {
        assert!(
            on_disk
                .iter()
                .any(|n| n == s["file"].as_str().unwrap_or("")),
            "{s} not on disk"
        );
    }
    assert!(
        gw.log().contains("deleted (retention limit)"),
        "deletions are logged"
    );
    // Thumbnails went with the files they were taken from: none older than the oldest file
    // kept, in the listing or on disk.
    let oldest = status["segments"][0]["start_ms"]
        .as_i64()
        .expect("start_ms");
    wait_for(
        Duration::from_secs(10),
        "old thumbnails deleted",
        || async {
            let v = get(gw.api, &format!("/archive/{STREAM_A}/thumbnails"))
                .await
                .json();
            let times: Vec<i64> = v["thumbnails"]
                .as_array()?
                .iter()
                .filter_map(|t| t["time_ms"].as_i64())
                .collect();
            let on_disk: Vec<i64> = std::fs::read_dir(files.path().join("thumbs"))
                .ok()?
                .flatten()
                .filter_map(|e| {
                    let n = e.file_name().into_string().ok()?;
                    n.strip_prefix(&format!("{STREAM_A}_"))?
                        .strip_suffix(".jpg")?
                        .parse()
                        .ok()
                })
                .collect();
            let fresh = |t: &i64| *t >= oldest - 1000;
            (!times.is_empty() && times.iter().all(fresh) && on_disk.iter().all(fresh))
                .then_some(())
        },
    )
    .await;
    // The live viewer got every second of video meanwhile (25 fps, one fragment per frame).
    let before = cap.fragments();
    collect(&mut ws, &mut cap, before + 50, Duration::from_secs(10)).await;
    assert!(cap.fragments() >= before + 50, "live stalled");
}

/// A small tmpfs, unmounted on drop: a disk that really fills up.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(bytes: u64) -> SmallDisk {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}")])
            .arg("tmpfs")
            .arg(dir.path())
            .output()
            .expect("mount");
        assert!(
            out.status.success(),
            "mounting a tmpfs needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_only_the_recorder_and_min_free_bytes_keeps_it_recording() {
    let cam = Camera::start(Auth::None);
    let recording = |dir: &Path, extra: &str| {
        format!(
            "{}{extra}\n{}",
            archive_section(dir, 2000, None),
            rtsp_stream(
                STREAM_A,
                &cam.url("h264"),
                "\"mse\"",
                &format!(
                    "archive = {{ recording = true, type = \"filesystem\", directory = \"{}\", ms_per_file = 2000 }}",
                    dir.display()
                ),
            )
        )
    };

    // 3 MB fill up in about 12 s at 2 Mbit/s.
    let disk = SmallDisk::mount(3 << 20);
    let gw = Gateway::start(&recording(disk.path(), "")).await;
    let mut ws = ws_connect(&gw.ws_url(STREAM_A, "")).await;
    let mut cap = Capture::default();
    let deadline = Instant::now() + Duration::from_secs(60);
    let full = loop {
        let want = cap.fragments() + 25;
        collect(&mut ws, &mut cap, want, Duration::from_secs(5)).await;
        let s = segments(&gw, STREAM_A).await;
        if s["recorder"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("No space left"))
        {
            break s;
        }
        assert!(Instant::now() < deadline, "the disk never filled: {s}");
    };
    // Live goes on: another 2 s of frames arrive after the recorder failed.
    let before = cap.fragments();
    collect(&mut ws, &mut cap, before + 50, Duration::from_secs(10)).await;
    assert!(
        cap.fragments() >= before + 50,
        "live stalled when the disk filled"
    );
    // What was recorded before is intact, including the file that hit the wall.
    let listed = full["segments"].as_array().expect("segments");
    assert!(listed.len() >= 2, "{full}");
    for s in listed {
        let name = s["file"].as_str().expect("file");
        let p = probe(&disk.path().join(name));
        assert!(p.decode_errors.is_empty(), "{name}: {}", p.decode_errors);
    }
    drop(ws);
    drop(gw);
    drop(disk);

    // With min_free_bytes the oldest files make room and recording never stops.
    let disk = SmallDisk::mount(3 << 20);
    let gw = Gateway::start(&recording(disk.path(), "min_free_bytes = \"1.2MB\"")).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let s = loop {
        let s = segments(&gw, STREAM_A).await;
        // 12 files of ~0.5 MB would not fit on 3 MB.
        if s["recorder"]["files_written"].as_u64().unwrap_or(0) >= 12 {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "recording stopped: {s}\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(s["recorder"]["last_error"].is_null(), "{s}");
    assert!(
        s["recorder"]["deleted_files"].as_u64().unwrap_or(0) >= 4,
        "{s}"
    );
    assert!(gw.log().contains("deleted (disk low)"));
}
