//! HLS and LL-HLS against the real binary: a GStreamer camera (720p25, 2 s GOP, AAC) or the
//! demo file in, and what players would do out: ffmpeg reading the live playlist, m3u8-rs
//! parsing it, ffprobe checking that each segment starts with a keyframe, blocking reloads,
//! preload hints, Range requests, junk names, a camera restart and the disk mirror.

mod common;

use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// 1 s segments (2 s with the camera's 2 s GOP), 200 ms parts.
const FAST_HLS: &str = "[hls]\nms_per_segment = 1000\nms_per_part = 200\nwindow_size = 4\n\n";

async fn get(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> Resp {
    http(gw.video, "GET", path, headers, b"")
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

fn parse(body: &[u8]) -> m3u8_rs::MediaPlaylist {
    m3u8_rs::parse_media_playlist_res(body).unwrap_or_else(|e| {
        panic!(
            "playlist does not parse ({e:?}):\n{}",
            String::from_utf8_lossy(body)
        )
    })
}

/// A URI from the playlist as a request path (the `?v=` token kept: the server ignores it).
fn path_of(uri: &str) -> String {
    format!("/hls/{uri}")
}

/// The playlist once it lists at least `segments` complete segments (bounded).
async fn playlist_with(
    gw: &Gateway,
    id: &str,
    segments: usize,
) -> (String, m3u8_rs::MediaPlaylist) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = get(gw, &format!("/hls/{id}.m3u8"), &[]).await;
        if r.status == 200 {
            let p = parse(&r.body);
            if p.segments.len() >= segments {
                return (r.text(), p);
            }
        }
        assert!(
            Instant::now() < deadline,
            "no playlist with {segments} segments: {} {}\n{}",
            r.status,
            r.text(),
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// ffmpeg reads 3 s of a live playlist (a file or a URL; it has no end, and `timeout` bounds
/// it all the same) and has nothing to complain about.
fn ffmpeg_reads_3s(input: impl AsRef<std::ffi::OsStr>) {
    let out = Command::new("timeout")
        .args(["30", "ffmpeg", "-v", "error", "-i"])
        .arg(input)
        .args(["-t", "3", "-f", "null", "-"])
        .output()
        .expect("ffmpeg");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether the first video frame of init+segment is a keyframe, by ffprobe.
fn starts_with_keyframe(init: &[u8], segment: &[u8], dir: &std::path::Path, n: usize) -> bool {
    let file = dir.join(format!("seg{n}.mp4"));
    std::fs::write(&file, [init, segment].concat()).expect("write segment");
    if std::env::var_os("KEEP_SEGMENTS").is_some() {
        let _ = std::fs::copy(&file, format!("/tmp/seg{n}.mp4"));
    }
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-read_intervals",
            "%+#1",
            "-show_entries",
            "frame=key_frame",
            "-of",
            "csv=p=0",
        ])
        .arg(&file)
        .output()
        .expect("ffprobe");
    // The first frame of a new camera session can carry side data, printed as extra fields.
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .map(|l| l.trim_end_matches(','))
        == Some("1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn camera_hls_reads_in_ffmpeg_and_every_segment_starts_with_a_keyframe() {
    let cam = Camera::start(Auth::None);
    let gw = Gateway::start(&format!(
        "{FAST_HLS}{}",
        rtsp_stream(STREAM_A, &cam.url("h264aac"), "\"hls\"", "")
    ))
    .await;
    gw.wait_online(STREAM_A, Duration::from_secs(20)).await;
    let (_, _) = playlist_with(&gw, STREAM_A, 1).await;
    let r = get(&gw, &format!("/hls/{STREAM_A}.m3u8"), &[]).await;
    assert_eq!(
        r.header("content-type"),
        Some("application/vnd.apple.mpegurl")
    );
    assert_eq!(r.header("cache-control"), Some("no-cache"));

    // ffmpeg reads the live playlist like any HLS client.
    let url = format!("http://{}/hls/{STREAM_A}.m3u8", gw.video);
    let out = gw.dir.path().join("hls.mp4");
    let out2 = out.clone();
    let st = tokio::task::spawn_blocking(move || {
        Command::new("timeout")
            .args(["60", "ffmpeg", "-v", "error", "-y", "-i"])
            .arg(&url)
            .args(["-t", "6", "-c", "copy"])
            .arg(&out2)
            .output()
            .expect("ffmpeg")
    })
    .await
    .expect("join");
    assert!(
        st.status.success(),
        "ffmpeg: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    let p = probe(&out);
    assert!(p.decode_errors.is_empty(), "{}", p.decode_errors);
    assert_eq!(p.video_codec.as_deref(), Some("h264"));
    assert!(p.video_frames >= 125, "{p:?}");
    assert_eq!(p.audio_codec.as_deref(), Some("aac"));
    assert!(p.audio_frames > 100, "{p:?}");

    // The playlist: honest target, segments within one GOP of the target, each from a keyframe.
    let (_, pl) = playlist_with(&gw, STREAM_A, 3).await;
    assert_eq!(
        pl.target_duration, 2,
        "1 s target rounded up to the camera's 2 s GOP"
    );
    let map = pl.segments[0]
        .map
        .as_ref()
        .expect("EXT-X-MAP on the first segment");
    let init = get(&gw, &path_of(&map.uri), &[]).await;
    assert_eq!(init.status, 200);
    assert_eq!(init.header("content-type"), Some("video/mp4"));
    for (i, s) in pl.segments.iter().enumerate() {
        assert!(s.duration > 0.0 && s.duration <= 1.0 + 2.0 + 0.01, "{s:?}");
        assert!(s.program_date_time.is_some(), "{s:?}");
        let seg = get(&gw, &path_of(&s.uri), &[]).await;
        assert_eq!(seg.status, 200, "{}", s.uri);
        assert_eq!(seg.header("content-type"), Some("video/iso.segment"));
        assert!(seg
            .header("cache-control")
            .is_some_and(|c| c.contains("max-age")));
        assert!(
            starts_with_keyframe(&init.body, &seg.body, gw.dir.path(), i),
            "segment {} does not start with a keyframe",
            s.uri
        );
    }

    // Byte ranges on segments.
    let uri = path_of(&pl.segments[0].uri);
    let full = get(&gw, &uri, &[]).await;
    let part = get(&gw, &uri, &[("Range", "bytes=100-299")]).await;
    assert_eq!(part.status, 206);
    assert_eq!(part.body, full.body[100..300]);
    assert_eq!(
        part.header("content-range"),
        Some(format!("bytes 100-299/{}", full.body.len()).as_str())
    );
    let tail = get(&gw, &uri, &[("Range", "bytes=-8")]).await;
    assert_eq!(tail.body, full.body[full.body.len() - 8..]);
    let past = get(
        &gw,
        &uri,
        &[("Range", &format!("bytes={}-", full.body.len()))],
    )
    .await;
    assert_eq!(past.status, 416);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ll_hls_blocks_reloads_and_answers_the_preload_hint_when_the_part_exists() {
    let gw = Gateway::start(&format!("{FAST_HLS}{}", demo_stream("\"hls\""))).await;
    let (text, pl) = playlist_with(&gw, DEMO, 1).await;
    assert!(
        text.contains("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK="),
        "{text}"
    );
    assert!(text.contains("#EXT-X-PART-INF:PART-TARGET=0.200"), "{text}");
    assert!(text.contains(",INDEPENDENT=YES"), "{text}");
    let parts: Vec<f64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("#EXT-X-PART:DURATION="))
        .filter_map(|l| l.split(',').next()?.parse().ok())
        .collect();
    assert!(
        !parts.is_empty() && parts.iter().all(|d| *d <= 0.2001),
        "{parts:?}"
    );

    // The preload hint names the next part: fetching it waits until it exists.
    let hint = text
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("preload hint")
        .to_owned();
    let r = get(&gw, &path_of(&hint), &[]).await;
    assert_eq!(r.status, 200, "{hint}: {}", r.text());
    assert!(is_box(&r.body, b"moof"), "a CMAF chunk");

    // Blocking reload: ask for the segment after the newest complete one.
    let next = pl.media_sequence + pl.segments.len() as u64;
    let r = get(&gw, &format!("/hls/{DEMO}.m3u8?_HLS_msn={next}"), &[]).await;
    assert_eq!(r.status, 200);
    let pl2 = parse(&r.body);
    assert!(
        pl2.media_sequence + pl2.segments.len() as u64 > next,
        "the reload returned before segment {next} was complete:\n{}",
        r.text()
    );
    let r = get(
        &gw,
        &format!("/hls/{DEMO}.m3u8?_HLS_msn={}&_HLS_part=0", next + 1),
        &[],
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(
        r.text().contains(&format!("{DEMO}{:04}.0.m4s", next + 1)),
        "{}",
        r.text()
    );
    // Too far ahead, or malformed: 400 with a reason.
    let r = get(
        &gw,
        &format!("/hls/{DEMO}.m3u8?_HLS_msn={}", next + 50),
        &[],
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r.json()["Error"]
        .as_str()
        .is_some_and(|e| e.contains("_HLS_msn")));
    let r = get(&gw, &format!("/hls/{DEMO}.m3u8?_HLS_part=1"), &[]).await;
    assert_eq!(r.status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_hls_for_old_clients_and_junk_names_get_4xx() {
    let gw = Gateway::start(&format!(
        "[hls]\nms_per_segment = 1000\nlow_latency = false\n\n{}{}",
        demo_stream("\"hls\""),
        rtsp_stream(STREAM_B, "rtsp://127.0.0.1:1/none", "\"mse\"", "")
    ))
    .await;
    let (text, pl) = playlist_with(&gw, DEMO, 2).await;
    assert!(!text.contains("#EXT-X-PART"), "{text}");
    assert!(!text.contains("PRELOAD-HINT"), "{text}");
    assert_eq!(pl.version, Some(7));
    let seg = get(&gw, &path_of(&pl.segments[0].uri), &[]).await;
    assert_eq!(seg.status, 200);
    let head = http(gw.video, "HEAD", &path_of(&pl.segments[0].uri), &[], b"")
        .await
        .expect("HEAD");
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length"),
        Some(seg.body.len().to_string().as_str())
    );

    for (path, want) in [
        ("/hls/../../etc/passwd".to_owned(), 404),
        ("/hls/%2e%2e%2f%2e%2e%2fetc%2fpasswd".to_owned(), 400),
        ("/hls/%2e%2e/x".to_owned(), 404),
        ("/hls/..%2f..%2fetc%2fpasswd".to_owned(), 400),
        (format!("/hls/{DEMO}9999999.m4s"), 404),
        (format!("/hls/{DEMO}0000.ts"), 404),
        (format!("/hls/{DEMO}/../../etc/passwd"), 404),
        (format!("/hls/{DEMO}_init99.mp4"), 404),
        (format!("/hls/{DEMO}0000.999.m4s"), 404),
        ("/hls/not-a-uuid.m3u8".to_owned(), 400),
        ("/hls/.m3u8".to_owned(), 400),
        // A stream that does not exist (a v1 UUID: any version is accepted) and one without HLS.
        (
            "/hls/00000000-0000-1000-8000-000000000000.m3u8".to_owned(),
            404,
        ),
        (format!("/hls/{STREAM_B}.m3u8"), 404),
    ] {
        let r = get(&gw, &path, &[]).await;
        assert_eq!(r.status, want, "{path}: {}", r.text());
        assert!(!r.text().contains("root:"), "{path} leaked a file");
        if want == 400 {
            assert!(r.json()["Error"].is_string(), "{path}: {}", r.text());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_restart_shows_a_discontinuity_and_numbers_go_on() {
    let mut cam = Camera::start(Auth::None);
    let gw = Gateway::start(&format!(
        "{FAST_HLS}{}",
        rtsp_stream(STREAM_A, &cam.url("h264"), "\"hls\"", "")
    ))
    .await;
    let (_, before) = playlist_with(&gw, STREAM_A, 2).await;
    let last_before = before.media_sequence + before.segments.len() as u64;
    cam.kill();
    tokio::time::sleep(Duration::from_secs(3)).await;
    cam.restart();
    let deadline = Instant::now() + Duration::from_secs(40);
    let after = loop {
        let (text, pl) = playlist_with(&gw, STREAM_A, 1).await;
        if pl.segments.iter().any(|s| s.discontinuity)
            && pl.segments.last().is_some_and(|s| !s.discontinuity)
        {
            break pl;
        }
        assert!(
            Instant::now() < deadline,
            "no discontinuity after the restart:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let first_new = after
        .segments
        .iter()
        .position(|s| s.discontinuity)
        .expect("tagged");
    assert!(
        after.media_sequence + first_new as u64 >= last_before,
        "media sequence went back: {} + {first_new} < {last_before}",
        after.media_sequence
    );
    assert!(
        after.segments[first_new].map.is_some(),
        "a discontinuity repeats the init"
    );
    // The new segments play.
    let init = get(
        &gw,
        &path_of(&after.segments[first_new].map.as_ref().expect("map").uri),
        &[],
    )
    .await;
    let seg = get(&gw, &path_of(&after.segments[first_new].uri), &[]).await;
    assert!(
        starts_with_keyframe(&init.body, &seg.body, gw.dir.path(), 0),
        "{} after the restart does not start with a keyframe\n{}",
        after.segments[first_new].uri,
        gw.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_on_demand_stream_answers_its_first_playlist_request() {
    let cam = Camera::start(Auth::None);
    let gw = Gateway::start(&format!(
        "{FAST_HLS}[on_demand]\nidle_ms = 2000\n\n{}",
        rtsp_stream(STREAM_A, &cam.url("h264"), "\"hls\"", "on_demand = true")
    ))
    .await;
    let st = gw.status().await;
    assert!(st.to_string().contains(STREAM_A));
    // No viewer yet: nothing streams. The first request starts the upstream and waits.
    let r = get(&gw, &format!("/hls/{STREAM_A}.m3u8"), &[]).await;
    assert_eq!(r.status, 200, "{}\n{}", r.text(), gw.log());
    let pl = parse(&r.body);
    assert!(!pl.segments.is_empty());
    assert!(
        gw.log().contains("on-demand upstream starting"),
        "{}",
        gw.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disk_mirror_holds_a_playable_plain_playlist() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Gateway::start(&format!(
        "[hls]\nms_per_segment = 1000\nwindow_size = 3\nmirror_to_disk = true\ndirectory = \"{}\"\n\n{}",
        dir.path().display(),
        demo_stream("\"hls\"")
    ))
    .await;
    let playlist = dir.path().join(format!("{DEMO}.m3u8"));
    let deadline = Instant::now() + Duration::from_secs(30);
    let pl = loop {
        if let Ok(b) = std::fs::read(&playlist) {
            let p = parse(&b);
            if p.segments.len() >= 3 {
                break p;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no mirrored playlist\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    for s in &pl.segments {
        assert!(!s.uri.contains('?'), "bare names on disk: {}", s.uri);
        assert!(dir.path().join(&s.uri).exists(), "{} missing", s.uri);
    }
    // Let the window slide past every segment listed above: they are deleted, at most window +
    // retained stay.
    let last = pl.media_sequence + pl.segments.len() as u64;
    wait_for(
        Duration::from_secs(30),
        "the mirrored window slides",
        || async {
            let b = std::fs::read(&playlist).ok()?;
            (parse(&b).media_sequence > last).then_some(())
        },
    )
    .await;
    let m4s = std::fs::read_dir(dir.path())
        .expect("dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".m4s"))
        .count();
    assert!(m4s <= 3 + 3, "{m4s} segment files on disk");
    ffmpeg_reads_3s(&playlist);
}

/// The spill files of a stream, by media sequence number.
fn spill_files(spill: &std::path::Path) -> Vec<u64> {
    std::fs::read_dir(spill)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .strip_suffix(".m4s")?
                        .parse()
                        .ok()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// With the original's 10 s segments, a watched window would hold 80 s of video; instead the
/// parts of the segment still being written go to its file as they age, and are served from
/// there byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_ten_second_segments_aging_parts_of_the_open_segment_are_served_from_its_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Gateway::start(&format!(
        "[hls]\nms_per_segment = 10000\nalways_remux = true\ndirectory = \"{}\"\n\n{}",
        dir.path().display(),
        demo_stream("\"hls\"")
    ))
    .await;
    let spill = dir.path().join("spill").join(DEMO);
    let found = wait_for(Duration::from_secs(20), "a part written out", || async {
        spill_files(&spill).into_iter().min()
    })
    .await;
    let file = std::fs::read(spill.join(format!("{found}.m4s"))).expect("spill file");
    // Its first parts, back to back, are the file's first bytes.
    let mut joined = Vec::new();
    for p in 0.. {
        let r = get(&gw, &format!("/hls/{DEMO}{found:04}.{p}.m4s"), &[]).await;
        assert_eq!(r.status, 200, "part {p}");
        joined.extend_from_slice(&r.body);
        if joined.len() >= file.len() {
            break;
        }
    }
    assert!(
        joined[..file.len()] == file[..],
        "parts served differ from the file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_older_segments_are_served_from_files_byte_for_byte_and_files_are_reused() {
    let dir = tempfile::tempdir().expect("tempdir");
    // No memory setting: the default keeps 2 s of parts in memory and writes the rest out.
    let gw = Gateway::start(&format!(
        "[hls]\nms_per_segment = 1000\nwindow_size = 3\nalways_remux = true\ndirectory = \"{}\"\n\n{}",
        dir.path().display(),
        demo_stream("\"hls\"")
    ))
    .await;
    let spill = dir.path().join("spill").join(DEMO);
    let files = || spill_files(&spill);
    // Wait until the oldest listed segment is one written out.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (pl, oldest) = loop {
        let (_, pl) = playlist_with(&gw, DEMO, 3).await;
        let oldest = pl.media_sequence;
        if files().contains(&oldest) {
            break (pl, oldest);
        }
        assert!(
            Instant::now() < deadline,
            "nothing written out: {:?}",
            files()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    // Older segments are in files, and are served as the very bytes of those files.
    let seg = get(&gw, &path_of(&pl.segments[0].uri), &[]).await;
    assert_eq!(seg.status, 200);
    let file = std::fs::read(spill.join(format!("{oldest}.m4s"))).expect("spill file");
    let inode = std::fs::metadata(spill.join(format!("{oldest}.m4s")))
        .expect("stat")
        .ino();
    assert!(
        seg.body[..] == file[..],
        "served bytes differ from the file"
    );
    // Its parts are byte ranges of that file: back to back they are the segment.
    let mut joined = Vec::new();
    for p in 0.. {
        let r = get(&gw, &format!("/hls/{DEMO}{oldest:04}.{p}.m4s"), &[]).await;
        if r.status != 200 {
            assert_eq!(r.status, 404);
            break;
        }
        joined.extend_from_slice(&r.body);
    }
    assert!(
        joined == file,
        "parts of a written-out segment are not its bytes"
    );
    // A byte range of it, too.
    let r = get(
        &gw,
        &path_of(&pl.segments[0].uri),
        &[("Range", "bytes=100-199")],
    )
    .await;
    assert_eq!(r.status, 206);
    assert!(r.body[..] == file[100..200]);
    // As the window slides (3 listed + 3 retained segments of 2 s), the files of segments that
    // left it leave their names (deleted, or kept to be written over).
    let deadline = Instant::now() + Duration::from_secs(30);
    while files().contains(&oldest) {
        assert!(
            Instant::now() < deadline,
            "{oldest} never deleted: {:?}",
            files()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let now = files();
    assert!(
        !now.is_empty() && now.len() <= 3 + 3,
        "{} files: {now:?}",
        now.len()
    );
    // Its file is written over by a newer segment (its pages reused), which, once complete,
    // is served as the very bytes of that file: nothing of the longer or shorter segment
    // before is left in it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, pl) = playlist_with(&gw, DEMO, 3).await;
        let reused = pl.segments.iter().enumerate().find_map(|(i, s)| {
            let msn = pl.media_sequence + i as u64;
            let meta = std::fs::metadata(spill.join(format!("{msn}.m4s"))).ok()?;
            (meta.ino() == inode).then_some((msn, s.uri.clone()))
        });
        if let Some((msn, uri)) = reused {
            let seg = get(&gw, &path_of(&uri), &[]).await;
            let file = std::fs::read(spill.join(format!("{msn}.m4s"))).unwrap_or_default();
            if seg.status == 200 && seg.body[..] == file[..] {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no segment served whole from the file of segment {oldest}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // And players read it as before.
    ffmpeg_reads_3s(format!("http://{}/hls/{DEMO}.m3u8", gw.video));
}
